"""Isolation: one client's load against another client's decisions, on a real `callgate serve`.

    .venv/bin/python bench/isolation_bench.py [--quick] [--scenario NAME ...] [--json FILE]
        [--server-env CALLGATE_NAME=VALUE ...] [--config FILE] [--ignore-retry-after]

Each scenario starts its own `callgate serve` subprocess (temporary data directory, free loopback
ports, admin token from CALLGATE_ADMIN_TOKEN; --server-env and --config pass settings, so a run
can raise or lower limits) and a probe process that, from the scenario's start to its end, plays
the victim: client "globex" asks eavesdrop 100 -> 101 over real FastAGI at a steady 200
sessions/s (the recorded Asterisk 22 environment, one reply per command, HANGUP at the close),
GET /healthz at 20/s (a new connection each), and reads the server's VmRSS/VmHWM from
/proc/<pid>/status every 50 ms. Meanwhile this process attacks as client "acme" (its own
client token) or as an anonymous FastAGI peer. Each phase of a scenario is one table row: the
victim's latency over the sessions started in it (a failed session counts at the time it took,
a timeout at its 10 s), the /healthz latency, the server's RSS and the scenario's own figures.

Scenarios (the full sizes; --quick runs smaller ones):

- idle: the victim alone, 5 s: the reference row.
- history: 139 PUTs of one max-size policy (100 groups x 200 extensions of 32 characters, group
  names of 64, every group shared and replaceable, eavesdrop_/whisper_ keys up to just under
  2 MiB; valid under every documented limit), then GET .../call_control_group/history,
  following the next page (``next_before``, ``next_cursor``, ``cursor``, a ``next`` path or a
  Link header) up to 10 pages, counting the answer's bytes.
- large-puts: 1, then 4, concurrent streams of max-size PUTs from acme for 20 s each; a 429 is
  retried after its Retry-After (at most 2 s; --ignore-retry-after: at once).
- garbage-sessions: 150,000 FastAGI sessions, 50 in flight, each with new values: client ids
  that have no policy (a tenth malformed), 32-character extensions and targets (a tenth
  invalid: 256 characters), a few unknown actions; then the /metrics size and scrape time,
  the SQLite growth.
- slow-http: the server with RLIMIT_NOFILE 400; 395 HTTP connections that send half a header
  line and then nothing; 10 FastAGI sessions (how many are answered), and how many of the idle
  connections the server still holds 40 s after they opened.
- pin-flood: globex's right-PIN phone replace session (100 takes over 101) alone, then while
  acme sends 150 PIN writes at once (PUT .../extension/{ext}/replace_pin).
- malformed-sessions: 2,000 good FastAGI sessions (client initech) interleaved with 2,000 whose
  agi_arg_2 is not UTF-8; then how many of the good ones GET /client/initech/audit lists.

Prints one Markdown table (for the README) and, with --json FILE, the same figures as JSON.
Asserts nothing. On a shared machine the figures are noisy: compare runs made side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from isolation_support import (
    TOKEN,
    Environments,
    Latency,
    Memory,
    Probe,
    ProbeConfig,
    ProbeData,
    Server,
    agi_session,
    run_loop,
    start_server,
    window,
)

MIB = 1024 * 1024
MAX_BODY = 2 * MIB
"""The documented body limit (413 above it): the attack documents stay just under it."""
PIN = "24681357"
VICTIM = "globex"
ATTACKER = "acme"
SETTLE = 0.5
"""Seconds after a phase's work before its window closes: deferred work (audit batches, the
decision log) is charged to the phase that caused it."""


@dataclass(frozen=True)
class Sizes:
    idle_seconds: float = 5.0
    history_puts: int = 139
    history_pages: int = 10
    history_seconds: float = 240.0
    """Bound on the PUT phase (429s waited out included)."""
    put_seconds: float = 20.0
    garbage_sessions: int = 150_000
    garbage_in_flight: int = 50
    garbage_seconds: float = 360.0
    nofile: int = 400
    idle_connections: int = 395
    idle_hold_seconds: float = 40.0
    pin_writes: int = 150
    malformed_sessions: int = 2000


FULL = Sizes()
QUICK = Sizes(
    idle_seconds=3.0,
    history_puts=20,
    history_pages=5,
    history_seconds=90.0,
    put_seconds=6.0,
    garbage_sessions=20_000,
    garbage_seconds=90.0,
    idle_hold_seconds=20.0,
    malformed_sessions=400,
)


# --------------------------------------------------------------------------- what is sent


def max_size_document(variant: int) -> bytes:
    """A valid document just under 2 MiB as compact JSON; ``variant`` flips ``pickup_all``, so
    each PUT stores a new document of the same size."""
    names = [f"group-{g:03}-".ljust(64, "n") for g in range(100)]
    groups = {
        n: [f"e{g:03}-{i:03}-".ljust(32, "x") for i in range(200)] for g, n in enumerate(names)
    }
    document: dict[str, object] = {
        "allow_all": False,
        "pickup_all": variant % 2 == 0,
        "groups": groups,
        "pickup_share_groups": names,
        "phone_replace_groups": names,
    }
    size = len(json.dumps(document, separators=(",", ":")))
    extensions = [ext for members in groups.values() for ext in members]
    limit = MAX_BODY - 8 * 1024
    for index, ext in enumerate(extensions * 2):
        key = f"{'eavesdrop' if index < len(extensions) else 'whisper'}_{ext}"
        value = [names[(index + j) % len(names)] for j in range(10)]
        grows = len(json.dumps({key: value}, separators=(",", ":")))  # braces ~ the comma
        if size + grows > limit:
            break
        document[key] = value
        size += grows
    body = json.dumps(document, separators=(",", ":")).encode()
    assert len(body) < MAX_BODY
    return body


VICTIM_POLICY = {
    "groups": {"desk": [str(n) for n in range(100, 110)]},
    "phone_replace_groups": ["desk"],
    "eavesdrop_100": ["desk"],
}


# --------------------------------------------------------------------------- a scenario's run


@dataclass
class Phase:
    name: str
    start: float
    end: float
    memory_before: tuple[int, int]
    rss_after: int
    figures: dict[str, object]


@dataclass
class Row:
    scenario: str
    phase: str
    victim: Latency
    healthz: Latency
    memory: Memory
    figures: dict[str, object] = field(default_factory=dict)


class Run:
    """One scenario: its server, the HTTP clients, and the phases it measured."""

    def __init__(self, name: str, server: Server, sizes: Sizes, args: argparse.Namespace) -> None:
        self.name, self.server, self.sizes, self.args = name, server, sizes, args
        self.phases: list[Phase] = []
        self.admin = {"Authorization": f"Bearer {TOKEN}"}
        self.acme = self.admin
        self.envs = Environments(server.agi_port)
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None
        return self._http

    async def open(self) -> None:
        self._http = aiohttp.ClientSession(
            self.server.base_url,
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=300),
        )
        status, _ = await self.send(
            "PUT", f"/client/{VICTIM}/call_control_group/", self.admin, json.dumps(VICTIM_POLICY)
        )
        assert status == 200, f"victim policy: {status}"
        status, _ = await self.send(
            "PUT",
            f"/client/{VICTIM}/extension/101/replace_pin",
            self.admin,
            json.dumps({"pin": PIN}),
        )
        assert status == 204, f"victim PIN: {status}"
        status, body = await self.send(
            "POST", "/tokens", self.admin, json.dumps({"name": "bench-acme", "client_id": ATTACKER})
        )
        if status == 201:
            self.acme = {"Authorization": f"Bearer {json.loads(body)['token']}"}
        else:
            print(f"  no client token ({status}): acme uses the admin token", file=sys.stderr)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def send(
        self, method: str, path: str, headers: dict[str, str], body: bytes | str | None = None
    ) -> tuple[int, bytes]:
        """One request: (status, body); a connection that failed is status 0."""
        headers = {**headers, "Content-Type": "application/json"} if body is not None else headers
        try:
            async with self.http.request(method, path, headers=headers, data=body) as answer:
                return answer.status, await answer.read()
        except (aiohttp.ClientError, TimeoutError):
            return 0, b""

    async def put_obeying(
        self, path: str, body: bytes, deadline: float
    ) -> tuple[int, float, float]:
        """One PUT by acme: (status, seconds, Retry-After seconds or 0)."""
        started = time.perf_counter()
        headers = {**self.acme, "Content-Type": "application/json"}
        try:
            async with self.http.put(path, headers=headers, data=body) as answer:
                await answer.read()
                status, retry = answer.status, answer.headers.get("Retry-After", "1")
        except (aiohttp.ClientError, TimeoutError):
            # A connection the server cut (a limit refusing early, say): a short pause, so a
            # dead server does not turn this loop into a busy one.
            return 0, time.perf_counter() - started, 0.1
        took = time.perf_counter() - started
        wait = 0.0
        if status == 429 and not self.args.ignore_retry_after:
            with contextlib.suppress(ValueError):
                wait = float(retry)
            wait = max(0.0, min(wait, 2.0, deadline - time.monotonic()))
        return status, took, wait

    async def phase(self, name: str, work: Coroutine[Any, Any, dict[str, object]]) -> None:
        print(f"  {self.name}: {name} ...", file=sys.stderr, flush=True)
        before = self.server.memory_kb()
        start = time.monotonic()
        figures = await work
        await asyncio.sleep(SETTLE)
        end = time.monotonic()
        rss_after = self.server.memory_kb()[0] if self.server.process.poll() is None else 0
        self.phases.append(Phase(name, start, end, before, rss_after, figures))
        shown = "; ".join(f"{k} {v}" for k, v in figures.items())
        print(f"  {self.name}: {name}: {shown}", file=sys.stderr, flush=True)

    def rows(self, data: ProbeData) -> list[Row]:
        return [
            Row(
                self.name,
                p.name,
                Latency.of(window(data.agi, p.start, p.end)),
                Latency.of(window(data.healthz, p.start, p.end)),
                Memory.of(window(data.memory, p.start, p.end), p.memory_before, p.rss_after),
                p.figures,
            )
            for p in self.phases
        ]


Scenario = Callable[[Run], Awaitable[None]]


async def run_scenario(
    name: str, scenario: Scenario, sizes: Sizes, args: argparse.Namespace, tmp: Path
) -> list[Row]:
    env = dict(item.split("=", 1) for item in args.server_env)
    nofile = sizes.nofile if name == "slow-http" else None
    server = start_server(tmp / name, env=env, config_file=args.config, nofile=nofile)
    run = Run(name, server, sizes, args)
    probe: Probe | None = None
    try:
        await run.open()
        probe = Probe(ProbeConfig(server.agi_port, server.http_port, server.pid, client=VICTIM))
        await asyncio.sleep(1.0)  # the probe's first sessions are not measured
        await scenario(run)
    finally:
        try:
            data = probe.stop() if probe is not None else ProbeData()
        finally:
            await run.close()
            alive = server.process.poll() is None
            server.stop()
            if not alive:
                print(f"  callgate died during {name}:\n{server.log_tail()}", file=sys.stderr)
    return run.rows(data)


# --------------------------------------------------------------------------- the scenarios


async def idle(run: Run) -> None:
    async def alone() -> dict[str, object]:
        await asyncio.sleep(run.sizes.idle_seconds)
        return {}

    await run.phase("victim alone", alone())


async def history(run: Run) -> None:
    bodies = [max_size_document(0), max_size_document(1)]
    path = f"/client/{ATTACKER}/call_control_group/"

    async def puts() -> dict[str, object]:
        statuses: Counter[int] = Counter()
        times: list[float] = []
        deadline = time.monotonic() + run.sizes.history_seconds
        for index in range(run.sizes.history_puts):
            for _attempt in range(20):  # a 429 is waited out, a bounded number of times
                if time.monotonic() >= deadline:
                    break
                status, took, wait = await run.put_obeying(path, bodies[index % 2], deadline)
                statuses[status] += 1
                times.append(took)
                if status != 429:
                    break
                await asyncio.sleep(wait)
        times.sort()
        return {
            "body bytes": len(bodies[0]),
            "PUT answers": _statuses(statuses),
            "PUT p50 ms": round(times[len(times) // 2] * 1000) if times else None,
            "SQLite MB": round(run.server.db_bytes() / MIB),
        }

    async def get() -> dict[str, object]:
        url: str = f"{path}history"
        params: dict[str, str] = {}
        pages: list[dict[str, object]] = []
        started = time.perf_counter()
        for _page in range(run.sizes.history_pages):
            page = await _read_page(run, url, params)
            pages.append(page)
            cursor = page.pop("next")
            if page["status"] != 200 or cursor is None:
                break
            if isinstance(cursor, str):
                url, params = cursor, {}
            else:
                params = {"before": str(cursor)}
        return {
            "pages": len(pages),
            "statuses": _statuses(Counter(int(str(p["status"])) for p in pages)),
            "answer MB": round(sum(int(str(p["bytes"])) for p in pages) / MIB, 1),
            "versions read": (
                "unread (not paged)"
                if any(p["versions"] == -1 for p in pages)
                else sum(int(str(p["versions"])) for p in pages)
            ),
            "first page s": pages[0]["seconds"],
            "all pages s": round(time.perf_counter() - started, 2),
        }

    await run.phase(f"{run.sizes.history_puts} max-size PUTs", puts())
    await run.phase("GET history", get())


CURSOR_KEYS = ("next_before", "next_cursor", "cursor")
"""Where a paged history answer may name its next page (a ``before`` value); ``next`` (a path)
and a Link header are followed too."""


async def _read_page(run: Run, url: str, params: dict[str, str]) -> dict[str, object]:
    """One history page: its size and time; the next page (``before`` value or a path)."""
    started = time.perf_counter()
    kept, total, status = bytearray(), 0, 0
    link = ""
    try:
        async with run.http.get(url, params=params, headers=run.acme) as answer:
            status, link = answer.status, answer.headers.get("Link", "")
            async for chunk in answer.content.iter_chunked(MIB):
                total += len(chunk)
                if len(kept) < 32 * MIB:  # a paged answer is small; an unpaged one is not read
                    kept += chunk
    except (aiohttp.ClientError, TimeoutError):
        status = 0
    seconds = round(time.perf_counter() - started, 2)
    versions, cursor = 0, None
    if status == 200 and total == len(kept):
        body = json.loads(kept)
        versions = len(body.get("versions", []))
        cursor = next((body[k] for k in CURSOR_KEYS if body.get(k) is not None), None)
        if cursor is None and isinstance(body.get("next"), str):
            cursor = body["next"]
    elif status == 200:
        versions = -1  # not parsed: the whole answer is far over a page (shown "unread")
    if cursor is None and 'rel="next"' in link:
        cursor = link.split(">", 1)[0].lstrip("<").strip()
    return {
        "status": status,
        "bytes": total,
        "seconds": seconds,
        "versions": versions,
        "next": cursor,
    }


async def large_puts(run: Run) -> None:
    bodies = [max_size_document(0), max_size_document(1)]
    path = f"/client/{ATTACKER}/call_control_group/"

    async def streams(count: int) -> dict[str, object]:
        statuses: Counter[int] = Counter()
        times: list[float] = []
        deadline = time.monotonic() + run.sizes.put_seconds

        async def stream(offset: int) -> None:
            for index in range(offset, offset + 100_000):
                if time.monotonic() >= deadline:
                    return
                status, took, wait = await run.put_obeying(path, bodies[index % 2], deadline)
                statuses[status] += 1
                times.append(took)
                if wait:
                    await asyncio.sleep(wait)

        started = time.monotonic()
        await asyncio.gather(*(stream(n) for n in range(count)))
        elapsed = time.monotonic() - started
        times.sort()
        return {
            "PUT answers": _statuses(statuses),
            "PUTs/s": round(sum(statuses.values()) / elapsed, 1),
            "PUT p50 ms": round(times[len(times) // 2] * 1000) if times else None,
            "PUT max ms": round(times[-1] * 1000) if times else None,
        }

    for count in (1, 4):
        await run.phase(f"{count} PUT stream{'s' if count > 1 else ''}", streams(count))


def garbage_environment(run: Run, rng: random.Random, index: int) -> bytes:
    """A session no one configured: new values every time, some malformed."""
    client = f"tenant-{rng.getrandbits(96):024x}"
    if index % 10 == 1:
        client = f"bad client!{rng.getrandbits(64):016x}"
    action = rng.choice(("pickup", "eavesdrop", "whisper"))
    if index % 50 == 7:
        action = f"act{rng.getrandbits(32):08x}"
    ext = f"{rng.getrandbits(128):032x}"
    target = "" if index % 7 == 0 else f"{rng.getrandbits(128):032x}"
    if index % 10 == 3:  # not extensions: too long (and well within a FastAGI line)
        ext, target = ext * 8, target * 8
    args = [client.encode(), ext.encode(), target.encode()]
    return run.envs.build(action, args, f"garbage.{index}.{rng.getrandbits(32)}")


async def garbage_sessions(run: Run) -> None:
    before: dict[str, int] = {}

    async def flood() -> dict[str, object]:
        before["metrics"], _ = await _scrape_metrics(run)
        before["db"], before["rss"] = run.server.db_bytes(), run.server.memory_kb()[0]
        rng = random.Random(20)
        outcomes: Counter[str] = Counter()
        deadline = time.monotonic() + run.sizes.garbage_seconds
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < run.sizes.garbage_sessions and time.monotonic() < deadline:
                env = garbage_environment(run, rng, next_index)
                next_index += 1
                _, outcome = await agi_session(run.server.agi_port, env, 10.0)
                outcomes[outcome] += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(run.sizes.garbage_in_flight)))
        elapsed = time.monotonic() - started
        return {
            "sessions": sum(outcomes.values()),
            "sessions/s": round(sum(outcomes.values()) / elapsed),
            "outcomes": dict(outcomes),
        }

    async def afterwards() -> dict[str, object]:
        await asyncio.sleep(1.0)  # the audit batches reach the store
        size, slowest = await _scrape_metrics(run)
        return {
            "RSS growth MB": round((run.server.memory_kb()[0] - before["rss"]) / 1024),
            "/metrics KB": f"{before['metrics'] // 1024} -> {size // 1024}",
            "/metrics slowest of 3 ms": slowest,
            "SQLite growth MB": round((run.server.db_bytes() - before["db"]) / MIB, 1),
        }

    await run.phase(f"{run.sizes.garbage_sessions:,} garbage sessions", flood())
    await run.phase("then 3 /metrics scrapes", afterwards())


async def _scrape_metrics(run: Run) -> tuple[int, int]:
    """(bytes, slowest of three scrapes in ms)."""
    size, slowest = 0, 0.0
    for _ in range(3):
        started = time.perf_counter()
        status, body = await run.send("GET", "/metrics", {})
        slowest = max(slowest, time.perf_counter() - started)
        size = len(body) if status == 200 else -1
    return size, round(slowest * 1000)


async def slow_http(run: Run) -> None:
    sizes = run.sizes
    sockets: list[socket.socket] = []

    def open_idle() -> int:
        failures = 0
        for _ in range(sizes.idle_connections):
            try:
                sock = socket.create_connection(("127.0.0.1", run.server.http_port), timeout=1.0)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            except OSError:
                failures += 1
                if failures >= 3:  # the backlog is full: the rest would each wait 1 s
                    break
                continue
            sock.setblocking(False)
            sockets.append(sock)
        return failures

    async def hold() -> dict[str, object]:
        opened_at = time.monotonic()
        failures = await asyncio.to_thread(open_idle)
        first_closed: list[float] = []

        async def watch() -> int:
            """Polls the idle connections until ``idle_hold_seconds`` after they opened."""
            still_open = _open_count(sockets)
            while time.monotonic() < opened_at + sizes.idle_hold_seconds:
                await asyncio.sleep(0.5)
                still_open = _open_count(sockets)
                if not first_closed and still_open < len(sockets):
                    first_closed.append(round(time.monotonic() - opened_at, 1))
            return still_open

        watching = asyncio.create_task(watch())
        await asyncio.sleep(1.0)
        envs = [
            run.envs.build("eavesdrop", [VICTIM.encode(), b"100", b"101"], f"slow.{n}")
            for n in range(10)
        ]
        answers = await asyncio.gather(
            *(agi_session(run.server.agi_port, env, 10.0) for env in envs)
        )
        answered = sum(1 for _, outcome in answers if outcome in ("allow", "deny"))
        still_open = await watching
        for sock in sockets:
            sock.close()
        return {
            "idle connections": f"{len(sockets)} opened, {failures} refused",
            "FastAGI answered": f"{answered} of {len(answers)}",
            "FastAGI slowest s": round(max(seconds for seconds, _ in answers), 2),
            f"idle still open after {sizes.idle_hold_seconds:g} s": still_open,
            "first closed after s": first_closed[0] if first_closed else None,
        }

    await run.phase(f"{sizes.idle_connections} idle HTTP, nofile {sizes.nofile}", hold())


def _open_count(sockets: list[socket.socket]) -> int:
    """The idle connections the server has not closed (EOF or reset) yet."""
    still = 0
    for sock in sockets:
        if sock.fileno() < 0:
            continue
        try:
            for _ in range(16):  # drain what the server sent (a 408, say) and see if it closed
                if not sock.recv(65536):
                    sock.close()
                    break
            else:
                still += 1
        except BlockingIOError:
            still += 1
        except OSError:
            sock.close()
    return still


async def pin_flood(run: Run) -> None:
    async def replace_session() -> tuple[float, str]:
        env = run.envs.build("replace", [VICTIM.encode(), b"100", b"101"], "pin.replace")
        return await agi_session(run.server.agi_port, env, 60.0, phone=b"100", pin=PIN.encode())

    async def alone() -> dict[str, object]:
        results = [await replace_session() for _ in range(3)]
        return {
            "replace session s": round(max(s for s, _ in results), 3),
            "decisions": dict(Counter(o for _, o in results)),
        }

    async def flood() -> dict[str, object]:
        body = json.dumps({"pin": "1234"})
        started = time.monotonic()
        writes = [
            asyncio.create_task(
                run.send(
                    "PUT", f"/client/{ATTACKER}/extension/{7000 + n}/replace_pin", run.acme, body
                )
            )
            for n in range(run.sizes.pin_writes)
        ]
        await asyncio.sleep(0.3)  # every write has arrived
        seconds, outcome = await replace_session()
        done, pending = await asyncio.wait(writes, timeout=180)
        for task in pending:
            task.cancel()
        statuses = Counter(task.result()[0] for task in done)
        return {
            "replace session s": round(seconds, 3),
            "decision": outcome,
            "PIN writes": _statuses(statuses) + (f", {len(pending)} unfinished" if pending else ""),
            "all writes s": round(time.monotonic() - started, 1),
        }

    await run.phase("replace alone x3", alone())
    await run.phase(f"replace during {run.sizes.pin_writes} PIN writes", flood())


async def malformed_sessions(run: Run) -> None:
    client = "initech"

    async def mixed() -> dict[str, object]:
        count = run.sizes.malformed_sessions
        outcomes: Counter[str] = Counter()
        good = set()
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < 2 * count:
                index = next_index
                next_index += 1
                if index % 2:
                    uniqueid, ext = f"bad.{index}", b"10\xff\xfe\x80"
                else:
                    uniqueid, ext = f"good.{index}", b"100"
                    good.add(uniqueid)
                env = run.envs.build("pickup", [client.encode(), ext, b"101"], uniqueid)
                _, outcome = await agi_session(run.server.agi_port, env, 10.0)
                outcomes[f"{uniqueid.split('.')[0]} {outcome}"] += 1

        await asyncio.gather(*(worker() for _ in range(20)))
        await asyncio.sleep(1.5)  # the audit batches reach the store
        status, body = await run.send("GET", f"/client/{client}/audit?limit=10000", run.admin)
        events = json.loads(body).get("events", []) if status == 200 else []
        found = sum(1 for event in events if event.get("uniqueid") in good)
        return {
            "outcomes": dict(outcomes),
            "audit status": status,
            "good sessions in the audit": f"{found} of {len(good)}",
        }

    await run.phase(
        f"{run.sizes.malformed_sessions} good + {run.sizes.malformed_sessions} non-UTF-8", mixed()
    )


def _statuses(counts: Counter[int]) -> str:
    return ", ".join(
        f"{count}x{status or 'conn-error'}" for status, count in sorted(counts.items())
    )


SCENARIOS: dict[str, Scenario] = {
    "idle": idle,
    "history": history,
    "large-puts": large_puts,
    "garbage-sessions": garbage_sessions,
    "slow-http": slow_http,
    "pin-flood": pin_flood,
    "malformed-sessions": malformed_sessions,
}


# --------------------------------------------------------------------------- the report


def markdown(rows: list[Row], header: str) -> str:
    lines = [
        header,
        "",
        "| scenario | phase | victim FastAGI p50 / p99 / max ms | victim failed |"
        " /healthz p50 / p99 / max ms | RSS before → after MB | RSS peak Δ MB | figures |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        figures = "; ".join(f"{k}: {_shown(v)}" for k, v in row.figures.items())
        lines.append(
            f"| {row.scenario} | {row.phase} | {row.victim.text()} |"
            f" {row.victim.failed} of {row.victim.count} | {row.healthz.text()}"
            f" ({row.healthz.failed} failed) |"
            f" {row.memory.before_mb:.0f} → {row.memory.after_mb:.0f} |"
            f" {row.memory.peak_delta_mb:+.0f} | {figures} |"
        )
    return "\n".join(lines)


def _shown(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value).replace("|", "/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="run this scenario (repeatable; default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="CALLGATE_NAME=VALUE",
        help="a setting for every server started (repeatable)",
    )
    parser.add_argument("--config", type=Path, help="a TOML config file for every server")
    parser.add_argument(
        "--ignore-retry-after", action="store_true", help="retry a 429 at once, as an abuser would"
    )
    parser.add_argument("--history-puts", type=int, help="override the history scenario's N")
    parser.add_argument("--garbage-sessions", type=int, help="override the garbage session count")
    args = parser.parse_args()
    for item in args.server_env:
        if "=" not in item or not item.startswith("CALLGATE_"):
            parser.error(f"--server-env {item!r}: expected CALLGATE_NAME=VALUE")
    sizes = QUICK if args.quick else FULL
    if args.history_puts is not None:
        sizes = replace(sizes, history_puts=args.history_puts)
    if args.garbage_sessions is not None:
        sizes = replace(sizes, garbage_sessions=args.garbage_sessions)
    names = args.scenario or list(SCENARIOS)
    started = time.monotonic()
    rows: list[Row] = []

    async def everything() -> None:
        with tempfile.TemporaryDirectory(prefix="isolation-bench-") as tmp:
            for name in names:
                rows.extend(await run_scenario(name, SCENARIOS[name], sizes, args, Path(tmp)))

    run_loop(everything())
    load = os.getloadavg()
    header = (
        f"Isolation bench (`{' '.join(['bench/isolation_bench.py', *sys.argv[1:]])}`),"
        f" {time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, {os.cpu_count()} CPUs"
        f" (load average {load[0]:.1f} at the end), {time.monotonic() - started:.0f} s."
        f" Victim: {VICTIM} eavesdrop over FastAGI at 200/s, /healthz at 20/s; RSS of the server."
    )
    print(markdown(rows, header))
    if args.json is not None:
        payload = {"header": header, "sizes": asdict(sizes), "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
