"""FastAGI load: callgate against the Python floor and panoramisk, measured from outside.

    .venv/bin/python bench/agi_bench.py [--seconds 3] [--quick] [--servers a,b] [--loops l]
                                        [--db sqlite|postgresql]

``--db postgresql`` runs the ``callgate`` server on a private PostgreSQL cluster
(``tests/pg_cluster.py``, a free loopback port, removed afterwards) instead of SQLite: the store
is not on the decision path, so its cost per session should not change.

``--servers raw,bare`` compares the floor of callgate's raw-socket approach with asyncio's streams.

Five servers, each in its own process, under asyncio's default loop and under uvloop:

- callgate: the real daemon (``callgate.daemon.run``: SQLite store, audit log, HTTP API, one log
  line per decision to a file), with a realistic policy stored through the HTTP API (1,000
  extensions in 50 teams of 20, every team a pickup share group, 50 supervisors with eavesdrop
  and whisper grants). Each session is a group pickup by 105: a real decision whose answer names
  19 targets and their Pickup() argument, all five CALLGATE_* variables in one EXEC MSet.
- callgate-agi: callgate's FastAGI server alone, same decision and answer, the decision log line
  to a file, audit events kept in memory (no store): what the FastAGI side itself costs.
- callgate-floor: callgate's FastAGI server answering one SET VARIABLE without a decision, like
  bare (on the quick path the policy routes take): the server and protocol layer (limits,
  deadlines, parsing, metrics) against the floor.
- bare: a minimal asyncio-streams FastAGI server (read the environment, send one SET VARIABLE,
  read its reply, close), with no limits, no timeouts, no decision: the Python floor.
- panoramisk: ``panoramisk.fast_agi.Application`` with one route sending one SET VARIABLE.

The load generator is this process (always on uvloop, so the client is the same for every
server). It speaks like Asterisk: the recorded environment block (commands-and-replies.txt with
the URL and arguments of a pickup), one reply per command, ``HANGUP`` when the server closes.
Two loads: 50 sessions in flight back to back (throughput), and a fixed 1,000 sessions/s (latency
at a realistic rate). Latency is connect to close, seen by the client. Server CPU is measured the
same way for every server: the server process's user+system time, all its threads
(``/proc/<pid>/stat``), read 0.3 s before the measured window opens and 0.3 s after it closes (so
work deferred past the window, such as callgate's batched audit writes, is counted), divided by
the sessions completed. Last, for each server, the CPU it burns in the second after one client
connected and closed without sending anything. Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
TRANSCRIPT = ROOT / "tests" / "transcripts" / "agi" / "commands-and-replies.txt"
TOKEN = "bench-admin-token"  # noqa: S105 (a throwaway token for a loopback daemon)
CLIENT, EXT = "acme", "105"
CONCURRENCY = 50
RATE = 1000
SERVERS = ("callgate", "callgate-agi", "callgate-floor", "bare", "panoramisk")
EXTRA_SERVERS = ("raw",)
"""Run only when named with --servers: ``raw`` is the floor of the raw-socket approach callgate's
server takes (read to the empty line, write one SET VARIABLE, read one line, close; no parsing,
no limits), to say how much of callgate's cost is that approach and how much its own work."""
SETTLE = 0.3
"""Seconds of quiet before and after each measured window, inside the CPU reading: work a server
defers (callgate writes audit events in batches every 0.1 s) is charged to the sessions that
caused it, and none from the previous load leaks in. An idle server costs nothing here (the
last table shows it)."""


# --------------------------------------------------------------------------- what is sent


def environment(port: int) -> bytes:
    """The recorded environment, asking agi://127.0.0.1:<port>/pickup with acme,105 (group)."""
    lines: list[bytes] = []
    for raw in TRANSCRIPT.read_bytes().splitlines():
        if not raw.startswith(b"< ") or raw == b"< ":
            if lines and raw.startswith(b"> "):
                break
            continue
        key = raw[2:].partition(b": ")[0]
        if key.startswith(b"agi_arg_"):
            continue
        if key == b"agi_network_script":
            raw = b"< agi_network_script: pickup"
        elif key == b"agi_request":
            raw = f"< agi_request: agi://127.0.0.1:{port}/pickup".encode()
        lines.append(raw[2:] + b"\n")
    lines += [f"agi_arg_1: {CLIENT}\n".encode(), f"agi_arg_2: {EXT}\n".encode(), b"agi_arg_3: \n"]
    return b"".join(lines) + b"\n"


def realistic_policy() -> dict[str, object]:
    teams = {f"team-{t:02}": [str(100 + t * 20 + n) for n in range(20)] for t in range(50)}
    names = list(teams)
    document: dict[str, object] = {
        "allow_all": False,
        "pickup_all": True,
        "groups": teams,
        "pickup_share_groups": names,
        "phone_replace_groups": names[:10],
    }
    for index, name in enumerate(names):
        supervisor = teams[name][0]
        document[f"eavesdrop_{supervisor}"] = [name, names[(index + 1) % len(names)]]
        document[f"whisper_{supervisor}"] = [name]
    return document


# --------------------------------------------------------------------------- servers


def serve(kind: str, loop: str, port: int, http_port: int, data_dir: str, db: str | None) -> None:
    """Run one server in this (child) process until SIGTERM."""
    if kind == "callgate":
        from callgate.config import load_settings
        from callgate.daemon import configure_logging, run

        values: dict[str, object] = {
            "agi": f"127.0.0.1:{port}",
            "http": f"127.0.0.1:{http_port}",
            "data_dir": Path(data_dir),
        }
        if db is not None:
            values["db"] = db
        settings = load_settings(values)
        # As `callgate serve` configures it, to a file instead of stderr.
        configure_logging(settings.log_level, Path(data_dir) / "callgate.log")
        main = run(settings)
    elif kind in ("callgate-agi", "callgate-floor"):
        main = _serve_callgate_agi(port, data_dir, decide=kind == "callgate-agi")
    elif kind == "bare":
        main = _serve_bare(port)
    elif kind == "raw":
        main = _serve_raw(port)
    else:
        main = _serve_panoramisk(port)
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


async def _serve_callgate_agi(port: int, data_dir: str, *, decide: bool) -> None:
    """callgate's FastAGI server alone: the decision, its log line and audit event (kept in
    memory, no store), or with ``decide=False`` one SET VARIABLE like ``bare``."""
    from callgate.agi.handlers import AgiDispatcher, DecisionRecorder, policy_routes
    from callgate.agi.server import AgiConfig, AgiServer, SessionHandler
    from callgate.audit import AuditEvent
    from callgate.metrics import Metrics
    from callgate.policy import compile_policy, parse_document
    from callgate.registry import ClientPolicy, PolicyRegistry

    class MemoryAudit:
        def __init__(self) -> None:
            self.events: list[AuditEvent] = []

        def record(self, event: AuditEvent) -> None:
            self.events.append(event)
            if len(self.events) > 10_000:
                self.events.clear()

    metrics = Metrics()
    handler: SessionHandler
    if decide:
        from callgate.daemon import configure_logging

        configure_logging("INFO", Path(data_dir) / "callgate.log")
        registry = PolicyRegistry()
        document = parse_document(realistic_policy())
        registry.load(ClientPolicy(CLIENT, 1, document, compile_policy(document)))
        recorder = DecisionRecorder(MemoryAudit(), metrics)
        handler = AgiDispatcher(policy_routes(registry, recorder), recorder)
    else:
        handler = _SetOne()
    server = AgiServer(AgiConfig(host="127.0.0.1", port=port), handler, metrics)
    await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


class _SetOne:
    """callgate-floor's handler: one SET VARIABLE from the environment alone (the quick path
    the policy routes take), no decision, log line or audit event."""

    line = b"SET VARIABLE CALLGATE_DECISION ALLOW\n"
    more = ()

    def prepare(self, environment: object) -> _SetOne:
        return self

    def finish(self) -> None:
        pass

    async def __call__(self, session: object) -> None:
        raise AssertionError("every session takes the quick path")


async def _serve_bare(port: int) -> None:
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\n\n")
        writer.write(b"SET VARIABLE CALLGATE_DECISION ALLOW\n")
        await reader.readline()
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    await server.serve_forever()


async def _serve_raw(port: int) -> None:
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    listener.setblocking(False)

    class Connection:
        def __init__(self, sock: socket.socket) -> None:
            self.sock, self.buffer, self.answered = sock, b"", False
            loop.add_reader(sock.fileno(), self.readable)

        def readable(self) -> None:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            self.buffer += data
            if data and not self.answered and b"\n\n" in self.buffer:
                self.sock.send(b"SET VARIABLE CALLGATE_DECISION ALLOW\n")
                self.answered, self.buffer = True, b""
            elif not data or (self.answered and b"\n" in self.buffer):
                loop.remove_reader(self.sock.fileno())
                self.sock.close()

    def accept() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            Connection(sock)

    loop.add_reader(listener.fileno(), accept)
    print("ready", flush=True)
    await asyncio.Event().wait()


async def _serve_panoramisk(port: int) -> None:
    from panoramisk.fast_agi import Application, Request

    async def pickup(request: Request) -> None:
        await request.send_command("SET VARIABLE CALLGATE_DECISION ALLOW")

    app = Application(loop=asyncio.get_running_loop())
    app.add_route("pickup", pickup)
    server = await asyncio.start_server(app.handler, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    await server.serve_forever()


@dataclass
class Server:
    kind: str
    loop: str
    process: subprocess.Popen[bytes]
    port: int
    http_port: int
    data_dir: Path

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(kind: str, loop: str, data_dir: Path, db: str | None = None) -> Server:
    port, http_port = free_port(), free_port()
    env = {**os.environ, "CALLGATE_ADMIN_TOKEN": TOKEN, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, __file__, "--serve", kind, "--loop", loop]
    command += ["--port", str(port), "--http-port", str(http_port), "--data-dir", str(data_dir)]
    if db is not None:
        command += ["--db-url", db]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    server = Server(kind, loop, process, port, http_port, data_dir)
    try:
        if kind == "callgate":
            # Probe the HTTP port, which opens after FastAGI, not the FastAGI port itself: a
            # connect-and-close probe sends panoramisk's reader into an endless loop.
            wait_for_port(process, http_port)
            request = urllib.request.Request(
                f"http://127.0.0.1:{http_port}/client/{CLIENT}/call_control_group/",
                data=json.dumps(realistic_policy()).encode(),
                method="PUT",
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
                response.read()
        else:
            assert process.stdout is not None
            if process.stdout.readline() != b"ready\n":
                raise RuntimeError(f"{kind} server did not start")
    except BaseException:
        server.stop()
        raise
    return server


def wait_for_port(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}") from None
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


# --------------------------------------------------------------------------- the client


class _Call(asyncio.Protocol):
    """One AGI() as Asterisk runs it: environment, one reply per command, HANGUP at the end."""

    def __init__(self, env: bytes, done: asyncio.Future[bool]) -> None:
        self._env = env
        self._done = done
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self.allowed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._transport.write(self._env)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if b"ALLOW" in line:
                self.allowed = True
            reply = b"200 result=1\n" if line.startswith(b"SET VARIABLE") else b"200 result=0\n"
            self._transport.write(reply)

    def eof_received(self) -> bool | None:
        assert self._transport is not None
        self._transport.write(b"HANGUP\n")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(self.allowed)


@dataclass
class Result:
    sessions: int
    errors: int
    seconds: float
    cpu: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.sessions / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.sessions * 1e6 if self.sessions else float("nan")

    def percentile(self, q: float) -> float:
        if len(self.latencies) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies, n=1000)[int(q * 1000) - 1] * 1000


async def one_session(port: int, env: bytes, latencies: list[float]) -> bool:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()  # uvloop's loop.time() ticks in whole milliseconds
    done: asyncio.Future[bool] = loop.create_future()
    try:
        await loop.create_connection(lambda: _Call(env, done), "127.0.0.1", port)
        allowed = await asyncio.wait_for(done, 10)
    except (OSError, TimeoutError):
        return False
    latencies.append(time.perf_counter() - started)
    return allowed


async def closed_loop(server: Server, env: bytes, seconds: float) -> Result:
    """``CONCURRENCY`` sessions in flight, each followed at once by the next."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    counts = [0, 0]

    async def worker(until: float) -> None:
        while loop.time() < until:
            ok = await one_session(server.port, env, latencies)
            counts[0 if ok else 1] += 1

    warm = loop.time() + min(0.5, seconds / 4)
    await asyncio.gather(*(worker(warm) for _ in range(CONCURRENCY)))
    await asyncio.sleep(SETTLE)
    latencies.clear()
    counts[:] = [0, 0]
    cpu, started = server.cpu_seconds(), loop.time()
    await asyncio.gather(*(worker(started + seconds) for _ in range(CONCURRENCY)))
    elapsed = loop.time() - started
    await asyncio.sleep(SETTLE)
    return Result(counts[0], counts[1], elapsed, server.cpu_seconds() - cpu, latencies)


async def fixed_rate(server: Server, env: bytes, seconds: float) -> Result:
    """A new session every 1/RATE s whatever the server does (an open loop)."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    total = int(RATE * seconds)
    await asyncio.sleep(SETTLE)
    cpu, started = server.cpu_seconds(), loop.time()
    tasks: list[asyncio.Task[bool]] = []
    for index in range(total):
        delay = started + index / RATE - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one_session(server.port, env, latencies)))
    results = await asyncio.gather(*tasks)
    elapsed = loop.time() - started
    await asyncio.sleep(SETTLE)
    ok = sum(results)
    return Result(ok, total - ok, elapsed, server.cpu_seconds() - cpu, latencies)


def cpu_after_connect_and_close(server: Server) -> float:
    """What a peer that connects and closes at once leaves behind, in CPU seconds per second."""
    time.sleep(0.2)  # let the load's last sessions finish
    socket.create_connection(("127.0.0.1", server.port)).close()
    time.sleep(0.1)
    before = server.cpu_seconds()
    time.sleep(1.0)
    return server.cpu_seconds() - before


# --------------------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 s per measurement")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated servers to run (default: all but raw; the ratio table needs bare"
        " and panoramisk)",
    )
    parser.add_argument("--loops", default="asyncio,uvloop", help="comma-separated (default both)")
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the callgate server's store (default sqlite)",
    )
    parser.add_argument("--db-url", help=argparse.SUPPRESS)
    parser.add_argument("--serve", choices=SERVERS + EXTRA_SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--http-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.loop, args.port, args.http_port, args.data_dir, args.db_url)
        return
    import uvloop

    cluster = _pg_cluster() if args.db == "postgresql" else None
    try:
        run_all(args, uvloop.run, cluster)
    finally:
        if cluster is not None:
            cluster.stop()


def _pg_cluster() -> Any:
    """The tests' private PostgreSQL cluster (``tests/pg_cluster.py``), started."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pg_cluster import PgCluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL binaries: apt-get install postgresql")
    cluster = PgCluster(bindir)
    cluster.start()
    return cluster


def run_all(
    args: argparse.Namespace, run: Callable[[Coroutine[Any, Any, Result]], Result], cluster: Any
) -> None:

    seconds = 1.0 if args.quick else args.seconds
    rows: list[tuple[str, str, str, Result]] = []
    idle: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="agi-bench-") as tmp:
        for loop_name in _choices(args.loops, ("asyncio", "uvloop")):
            for kind in _choices(args.servers, SERVERS + EXTRA_SERVERS):
                data_dir = Path(tmp) / f"{kind}-{loop_name}"
                data_dir.mkdir()
                db = None
                if cluster is not None and kind == "callgate":
                    db = cluster.dsn(cluster.create_database())
                server = start_server(kind, loop_name, data_dir, db)
                try:
                    env = environment(server.port)
                    for load, measure in (
                        (f"{CONCURRENCY} in flight", closed_loop),
                        (f"{RATE}/s", fixed_rate),
                    ):
                        result = run(measure(server, env, seconds))
                        rows.append((kind, loop_name, load, result))
                        print(
                            f"  {kind:10} {loop_name:7} {load:12} {result.rate:8.0f}/s"
                            f" {result.cpu_us:6.0f} us CPU  p99 {result.percentile(0.99):6.2f} ms",
                            file=sys.stderr,
                        )
                    idle[(kind, loop_name)] = cpu_after_connect_and_close(server)
                finally:
                    server.stop()
                if kind in ("callgate", "callgate-agi"):
                    log = data_dir / "callgate.log"
                    lines = sum(1 for line in log.open() if " decision client=" in line)
                    print(f"  callgate logged {lines} decision lines", file=sys.stderr)
    print_table(rows, seconds, args.db)
    print("\nServer CPU in the second after one client connected and closed without a word")
    print("\n| server | loop | CPU seconds per second |")
    print("|---|---|---:|")
    for (kind, loop_name), busy in idle.items():
        print(f"| {kind} | {loop_name} | {busy:.2f} |")


def _choices(text: str, allowed: tuple[str, ...]) -> list[str]:
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in allowed]
    if unknown or not chosen:
        raise SystemExit(f"choose from {', '.join(allowed)} (got {text!r})")
    return chosen


def print_table(rows: list[tuple[str, str, str, Result]], seconds: float, db: str) -> None:
    print(
        f"\nFastAGI sessions, {seconds:g} s per measurement, server CPU per completed session"
        f" (callgate's store: {db})"
    )
    print(
        "\n| server | loop | load | sessions/s | server CPU µs/session | p50 ms | p99 ms | errors |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for kind, loop_name, load, r in rows:
        print(
            f"| {kind} | {loop_name} | {load} | {r.rate:,.0f} | {r.cpu_us:,.0f} |"
            f" {r.percentile(0.50):.2f} | {r.percentile(0.99):.2f} | {r.errors} |"
        )
    cpu = {(k, lp, ld): r.cpu_us for k, lp, ld, r in rows}
    nan = float("nan")
    print("\nCPU per session: relative to bare (lower is better), panoramisk's relative to it")
    print("\n| server | loop | load | / bare | panoramisk / server |")
    print("|---|---|---|---:|---:|")
    for kind, loop_name, load, _ in rows:
        if not kind.startswith("callgate"):
            continue
        ours = cpu[(kind, loop_name, load)]
        bare = cpu.get(("bare", loop_name, load), nan)
        panoramisk = cpu.get(("panoramisk", loop_name, load), nan)
        print(f"| {kind} | {loop_name} | {load} | {ours / bare:.2f}x | {panoramisk / ours:.2f}x |")


if __name__ == "__main__":
    main()
