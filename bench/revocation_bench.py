"""Revocation latency: a policy change withdraws a listener's right -> the Hangup reaches Asterisk.

    .venv/bin/python bench/revocation_bench.py [--clients 100] [--sessions 10] [--rounds 250]
                                               [--via http|publish]

The whole daemon runs in-process (store, FastAGI, HTTP, live enforcement) against the fake
Manager of the tests (tests/fake_ami.py) on loopback. 100 clients x 10 listen sessions = 1,000
tracked sessions, each one allowed the way the FastAGI handler reports it (``note_allowed``) and
started by a ChanSpyStart from the fake. Each round picks a client at random and withdraws one
listener's ``eavesdrop_<ext>`` grant, then gives it back and starts a new session for it (so the
tracked count stays at 1,000; that second change revokes nothing and is not timed).

--via http (default): the change is a real ``PUT /client/{id}/call_control_group/`` (durable
write, then publish, then 200). Two figures per revocation:
  - request -> Hangup: from just before the PUT is sent to the fake reading the Hangup action
    (an upper bound: it includes the HTTP round trip and the SQLite fsync);
  - ack -> Hangup: from the 200 being received to the fake reading the Hangup (negative when the
    Hangup arrived before the acknowledgement, which is the normal case: it is written inside
    the publish, before the answer).
--via publish: ``registry.publish()`` directly (no HTTP, no store): publish call -> Hangup.

Prints p50/p90/p99/max; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from callgate.config import Settings
from callgate.daemon import Services, start
from callgate.pbx import DEFAULT_PBX
from callgate.policy import Action, compile_policy, parse_document
from callgate.registry import ClientPolicy
from fake_ami import FakeAmi

TOKEN = "bench-admin-token"  # noqa: S105 - a throwaway token for a loopback daemon


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listeners(sessions: int) -> list[str]:
    return [str(100 + n) for n in range(sessions)]


def document(sessions: int, withdrawn: str | None = None) -> dict[str, Any]:
    exts = [str(100 + n) for n in range(2 * sessions)]
    doc: dict[str, Any] = {"groups": {"all": exts}}
    for ext in listeners(sessions):
        if ext != withdrawn:
            doc[f"eavesdrop_{ext}"] = ["all"]
    return doc


class Bench:
    def __init__(self, services: Services, fake: FakeAmi, sessions: int) -> None:
        self.services = services
        self.fake = fake
        self.sessions = sessions
        self.counter = 0
        self.channel: dict[tuple[str, str], str] = {}

    async def start_session(self, client: str, ext: str) -> None:
        self.counter += 1
        n = self.counter
        uniqueid, channel = f"1795800000.{n}", f"PJSIP/{client}_{ext}-{n:08x}"
        target = str(int(ext) + self.sessions)
        version = self.services.registry.get(client).version
        self.services.spy_grants.note_allowed(
            client,
            Action.EAVESDROP,
            ext,
            target,
            uniqueid,
            channel,
            version,
            "eavesdrop_group",
            pbx=DEFAULT_PBX,
        )
        await self.fake.start_spy(channel, uniqueid, f"PJSIP/{client}_{target}-1", f"1.{n}")
        self.channel[client, ext] = channel

    async def tracked(self, count: int) -> None:
        tracker = self.services.metrics.registry
        while True:
            total = sum(
                s.value
                for m in tracker.collect()
                if m.name == "callgate_spy_sessions_active"
                for s in m.samples
            )
            if total >= count:
                return
            await asyncio.sleep(0.01)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, values: list[float]) -> None:
    ms = [v * 1000 for v in values]
    print(
        f"{name:<22} n={len(ms):<4} p50={percentile(ms, 0.5):7.2f} ms"
        f"  p90={percentile(ms, 0.9):7.2f} ms  p99={percentile(ms, 0.99):7.2f} ms"
        f"  max={max(ms):7.2f} ms"
        f"  mean={statistics.fmean(ms):7.2f} ms"
    )


async def run(args: argparse.Namespace) -> None:
    fake = FakeAmi()
    await fake.start()
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            agi=f"127.0.0.1:{free_port()}",
            http=f"127.0.0.1:{free_port()}",
            data_dir=Path(data_dir),
            admin_token=SecretStr(TOKEN),
            ami=f"127.0.0.1:{fake.port}",
            ami_user=fake.username,
            ami_secret=SecretStr(fake.secret),
            log_level="WARNING",
        )
        services = await start(settings)
        host, port = settings.http_address
        http = aiohttp.ClientSession(
            f"http://{host}:{port}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        try:
            await measure(args, services, fake, http)
        finally:
            await http.close()
            await services.stop()
            await fake.close()


async def change(
    args: argparse.Namespace,
    services: Services,
    http: aiohttp.ClientSession,
    client: str,
    doc: dict[str, Any],
) -> float:
    """Apply a policy change; returns when it was acknowledged (perf_counter)."""
    if args.via == "http":
        async with http.put(f"/client/{client}/call_control_group/", json=doc) as response:
            assert response.status == 200, await response.text()
        return time.perf_counter()
    parsed = parse_document(doc)
    current = services.registry.get(client)
    await services.registry.publish(
        ClientPolicy(client, current.version + 1, parsed, compile_policy(parsed))
    )
    return time.perf_counter()


async def measure(
    args: argparse.Namespace, services: Services, fake: FakeAmi, http: aiohttp.ClientSession
) -> None:
    await fake.wait_for(lambda a: a.name == "CoreShowChannels")
    clients = [f"c{n:03}" for n in range(args.clients)]
    full = document(args.sessions)
    for client in clients:
        await change(args, services, http, client, full)
    bench = Bench(services, fake, args.sessions)
    for client in clients:
        for ext in listeners(args.sessions):
            await bench.start_session(client, ext)
    total = args.clients * args.sessions
    await bench.tracked(total)
    print(
        f"{total} tracked sessions across {args.clients} clients; {args.rounds} revocations"
        f" via {args.via}; Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )

    rng = random.Random(7)
    from_request: list[float] = []
    from_ack: list[float] = []
    for _ in range(args.rounds):
        client, ext = rng.choice(clients), rng.choice(listeners(args.sessions))
        channel = bench.channel[client, ext]
        seen = len(fake.actions)
        sent = time.perf_counter()
        acked = await change(args, services, http, client, document(args.sessions, ext))
        hangup = await fake.wait_for(
            lambda a, seen=seen, channel=channel: (
                a.name == "Hangup" and a.get("Channel") == channel and fake.actions.index(a) >= seen
            )
        )
        from_request.append(hangup.at - sent)
        from_ack.append(hangup.at - acked)
        await change(args, services, http, client, full)  # give it back, untimed
        await bench.start_session(client, ext)
        await bench.tracked(total)
    hangups = fake.received("Hangup")
    assert len(hangups) == args.rounds, f"{len(hangups)} Hangup actions for {args.rounds}"
    report("request -> Hangup" if args.via == "http" else "publish -> Hangup", from_request)
    if args.via == "http":
        report("ack -> Hangup", from_ack)
        early = sum(1 for v in from_ack if v <= 0)
        print(f"Hangup read by the fake before the 200 arrived: {early} of {len(from_ack)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=10, help="listen sessions per client")
    parser.add_argument("--rounds", type=int, default=250, help="revocations to time")
    parser.add_argument("--via", choices=("http", "publish"), default="http")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
