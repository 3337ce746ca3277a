"""PIN fairness: one client's flood of PIN writes against another client's replace calls.

    .venv/bin/python bench/pin_fairness_bench.py [--flood 150] [--idle 10] [--callgate PATH]

Starts ``callgate serve`` (``--callgate``: this checkout's by default; ``../other/.venv/bin/
callgate`` measures another checkout) on loopback ports with a temporary data directory, stores
the reference policy for clients ``acme`` and ``beta`` and a PIN for beta's extension 101, then:

1. GIL: ``hashlib.scrypt`` at the default cost in this process, one thread then two threads at
   once — two threads doing twice the work in about the same time means scrypt releases the GIL
   (if it did not, threads would not help and the PIN checks would need processes).
2. idle: ``--idle`` replace sessions of beta one after another, right PIN, through a FastAGI peer
   speaking like Asterisk (``tests/fake_asterisk.py``): environment to close, as Asterisk sees it.
3. flood: ``--flood`` concurrent ``PUT /client/acme/extension/<n>/replace_pin`` (one connection
   each) while beta's sessions run one after another until the flood is answered (at least 3, at
   most 50), twice: with the default PIN write limits (most of the flood is answered 429 at once)
   and with the limits raised out of the way (``CALLGATE_REPLACE_PIN_WRITE_*``: every write is
   hashed; an older callgate without these settings ignores them).

Prints p50 / max of beta's sessions and how acme's flood was answered; asserts nothing but that
each session completed with ALLOW.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_asterisk import FakeChannel, call, request_environment
from reference_policy import REFERENCE_DOCUMENT

TOKEN = "pin-fairness-bench-token"  # noqa: S105 - a throwaway server's admin token
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
B_PIN = "97531"
RAISED = {
    "CALLGATE_REPLACE_PIN_WRITE_RATE": "100000",
    "CALLGATE_REPLACE_PIN_WRITE_BURST": "100000",
    "CALLGATE_REPLACE_PIN_WRITE_CONCURRENCY": "100000",
}
MAX_SESSIONS_IN_FLOOD = 50


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrypt(log2_n: int = 15) -> None:
    maxmem = (256 << log2_n) * 8 + (1 << 20)
    hashlib.scrypt(b"1234", salt=b"s" * 16, n=1 << log2_n, r=8, p=1, maxmem=maxmem, dklen=32)


def measure_gil(rounds: int = 4) -> None:
    """Does scrypt release the GIL? Two ways, the second one robust to a busy machine."""
    started = time.perf_counter()
    for _ in range(rounds):
        scrypt()
    one = time.perf_counter() - started
    threads = [threading.Thread(target=lambda: [scrypt() for _ in range(rounds)]) for _ in "ab"]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    two = time.perf_counter() - started
    print(
        f"scrypt n=2^15: {rounds} on 1 thread {one:.2f} s, {2 * rounds} on 2 threads {two:.2f} s"
        f" (x{2 * one / two:.2f} the work per second; {os.cpu_count()} CPUs, shared)"
    )
    # While one long scrypt runs in a thread, this thread sleeps 1 ms at a time: a GIL held by
    # scrypt would keep it from waking up until the hash is done.
    worker = threading.Thread(target=scrypt, args=(17,))
    gaps: list[float] = []
    started = last = time.perf_counter()
    worker.start()
    for _ in range(100_000):  # bounded; a hash of n=2^17 takes well under a minute
        if not worker.is_alive():
            break
        time.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    worker.join()
    took = time.perf_counter() - started
    print(
        f"scrypt n=2^17 in a thread took {took * 1000:.0f} ms; meanwhile this thread woke"
        f" {len(gaps)} times, longest gap {max(gaps, default=took) * 1000:.1f} ms"
        " (a held GIL would make that gap the whole hash)"
    )


@contextlib.contextmanager
def callgate(executable: str, extra_env: Mapping[str, str]) -> Iterator[tuple[int, int]]:
    """A ``callgate serve`` process on loopback; yields its (AGI, HTTP) ports."""
    agi, http = free_port(), free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "CALLGATE_ADMIN_TOKEN": TOKEN, **extra_env}
        env.pop("CALLGATE_CONFIG", None)
        args = [executable, "serve", "--agi", f"127.0.0.1:{agi}", "--http", f"127.0.0.1:{http}"]
        args += ["--data-dir", data_dir, "--log-level", "WARNING"]
        log = Path(data_dir) / "serve.log"
        with log.open("wb") as out:
            process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                yield agi, http
            finally:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)


async def wait_ready(base: str) -> None:
    async with aiohttp.ClientSession(base) as http:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get("/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError("callgate serve did not become ready")


async def prepare(base: str) -> None:
    async with aiohttp.ClientSession(base, headers=HEADERS) as http:
        for client in ("acme", "beta"):
            url = f"/client/{client}/call_control_group/"
            async with http.put(url, json=REFERENCE_DOCUMENT) as resp:
                assert resp.status == 200, resp.status
        async with http.put("/client/beta/extension/101/replace_pin", json={"pin": B_PIN}) as r:
            assert r.status == 204, r.status


async def session(agi_port: int) -> float:
    channel = FakeChannel(variables={"CALLGATE_EXT": "100"}, dtmf=[B_PIN])
    env = request_environment("replace", "beta", "100", "101", name="get-data-pin.txt")
    started = time.perf_counter()
    await call(agi_port, env, channel, read_within=30)
    elapsed = time.perf_counter() - started
    assert channel.variables.get("CALLGATE_DECISION") == "ALLOW", channel.variables
    return elapsed


def summary(samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"p50 {statistics.median(ms):8.1f} ms   max {max(ms):8.1f} ms   n={len(ms)}"


async def flood(base: str, agi_port: int, count: int) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base, headers=HEADERS, connector=connector) as http:

        async def put(n: int) -> int:
            url = f"/client/acme/extension/{1000 + n}/replace_pin"
            async with http.put(url, json={"pin": f"{n:06d}"}) as resp:
                await resp.read()
                return resp.status

        started = time.perf_counter()
        writes = [asyncio.create_task(put(n)) for n in range(count)]
        await asyncio.sleep(0.05)  # the flood is on its way before the first call
        samples: list[float] = []
        while len(samples) < MAX_SESSIONS_IN_FLOOD and (
            len(samples) < 3 or not all(w.done() for w in writes)
        ):
            samples.append(await session(agi_port))
        statuses = collections.Counter(await asyncio.gather(*writes))
        drained = time.perf_counter() - started
    answered = ", ".join(f"{n} x {status}" for status, n in sorted(statuses.items()))
    print(f"  beta's replace calls during the flood  {summary(samples)}")
    print(f"  acme's {count} PIN writes answered in {drained:.2f} s: {answered}")


async def scenario(executable: str, name: str, extra_env: Mapping[str, str], args: object) -> None:
    assert isinstance(args, argparse.Namespace)
    with callgate(executable, extra_env) as (agi_port, http_port):
        base = f"http://127.0.0.1:{http_port}"
        await wait_ready(base)
        await prepare(base)
        idle = [await session(agi_port) for _ in range(args.idle)]
        print(f"{name}:")
        print(f"  beta's replace calls, idle             {summary(idle)}")
        await flood(base, agi_port, args.flood)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=150, help="concurrent PIN writes (<= 1000)")
    parser.add_argument("--idle", type=int, default=10, help="idle sessions (<= 100)")
    default = str(Path(sys.executable).with_name("callgate"))
    parser.add_argument("--callgate", default=default, help="the callgate executable to serve")
    args = parser.parse_args()
    args.flood = max(1, min(args.flood, 1000))
    args.idle = max(1, min(args.idle, 100))
    measure_gil()
    print(f"callgate: {args.callgate}")
    asyncio.run(scenario(args.callgate, "default PIN write limits", {}, args))
    asyncio.run(scenario(args.callgate, "PIN write limits raised out of the way", RAISED, args))


if __name__ == "__main__":
    main()
