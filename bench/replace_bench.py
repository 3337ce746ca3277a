"""Phone-replace timings: the scrypt cost of a PIN, and whole replace sessions over FastAGI.

    .venv/bin/python bench/replace_bench.py [--sessions N]

- hash / verify: ``hash_pin`` and ``verify_pin`` at the default cost (n=2^15, r=8, p=1), in the
  calling thread: what one PIN write (HTTP) or one PIN check (a replace session) costs in CPU.
- sessions: the real FastAGI server and replace flow on loopback, on a SQLite store in a
  temporary directory, driven by the tests' fake Asterisk (``tests/fake_asterisk.py``) that
  answers each command at once, so the time is callgate's: environment to close, for a right
  PIN (scrypt + store writes + DATABASE PUT x2), a wrong PIN (scrypt + one counted failure) and a
  denial before any prompt (``replace_not_permitted``). Sessions run one after another.
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from callgate.agi.handlers import AgiDispatcher, DecisionRecorder, policy_routes
from callgate.agi.server import AgiConfig, AgiServer
from callgate.audit import AuditEvent
from callgate.metrics import Metrics
from callgate.policy import compile_policy, parse_document
from callgate.registry import ClientPolicy, PolicyRegistry
from callgate.replace.agi_flow import ReplaceFlow
from callgate.replace.lockout import LockoutRules
from callgate.replace.pins import hash_pin, verify_pin
from callgate.replace.service import ReplaceService
from callgate.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_asterisk import FakeChannel, call, request_environment

PIN = "24681357"
DOCUMENT = {"groups": {"desk": ["100", "101"]}, "phone_replace_groups": ["desk"]}


class NullAudit:
    def record(self, event: AuditEvent) -> None:
        pass


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"median {statistics.median(ms):7.2f} ms   p95 {p95:7.2f} ms   n={len(ms)}"


def time_pins(rounds: int) -> None:
    hashes, checks = [], []
    encoded = hash_pin(PIN)
    for _ in range(rounds):
        started = time.perf_counter()
        encoded = hash_pin(PIN)
        hashes.append(time.perf_counter() - started)
        started = time.perf_counter()
        verify_pin(PIN, encoded)
        checks.append(time.perf_counter() - started)
    print(f"hash_pin   (default cost)   {percentiles(hashes)}")
    print(f"verify_pin (default cost)   {percentiles(checks)}")


async def time_sessions(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(str(Path(tmp) / "bench.sqlite3"))
        registry = PolicyRegistry()
        document = parse_document(DOCUMENT)
        registry.load(ClientPolicy("acme", 1, document, compile_policy(document)))
        metrics, audit = Metrics(), NullAudit()
        # A lockout that never triggers: every wrong PIN is judged, none is locked out.
        rules = LockoutRules(max_failures=10**9)
        recorder = DecisionRecorder(audit, metrics)
        service = ReplaceService(store.replace, registry, recorder, rules=rules)
        await service.set_pin("acme", "101", PIN)
        flow = ReplaceFlow(service, recorder)
        routes = {**policy_routes(registry, recorder), "replace": flow.replace}
        server = AgiServer(AgiConfig(port=0), AgiDispatcher(routes, recorder), metrics)
        await server.start()
        try:
            cases: dict[str, Callable[[], Awaitable[FakeChannel]]] = {
                "right PIN": lambda: session(server.port, "101", PIN),
                "wrong PIN": lambda: session(server.port, "101", "11111111"),
                "not permitted": lambda: session(server.port, "102", PIN),
            }
            for name, run in cases.items():
                samples = []
                for _ in range(count):
                    started = time.perf_counter()
                    channel = await run()
                    samples.append(time.perf_counter() - started)
                    assert "CALLGATE_DECISION" in channel.variables  # the session completed
                print(f"session: {name:14}  {percentiles(samples)}")
        finally:
            await server.stop()
            await store.close()


async def session(port: int, target: str, digits: str) -> FakeChannel:
    channel = FakeChannel(variables={"CALLGATE_EXT": "100"}, dtmf=[digits])
    env = request_environment("replace", "acme", "100", target, name="get-data-pin.txt")
    return await call(port, env, channel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30)
    args = parser.parse_args()
    time_pins(max(5, args.sessions // 3))
    asyncio.run(time_sessions(args.sessions))


if __name__ == "__main__":
    main()
