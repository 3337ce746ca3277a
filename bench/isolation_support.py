"""What isolation_bench.py runs on: a `callgate serve` subprocess, a FastAGI client, the victim
probe (its own process) and the figures.

The probe runs in a process of its own, so the attacks this bench's main process generates
(2 MiB JSON bodies, thousands of garbage sessions) do not delay the victim's measurements on the
client side: what the probe sees is the server's doing (and the machine's, on a shared one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Literal, TypeVar, cast

from agi_bench import free_port

ROOT = Path(__file__).resolve().parent.parent
TRANSCRIPT = ROOT / "tests" / "transcripts" / "agi" / "commands-and-replies.txt"
TOKEN = "bench-isolation-admin-token"  # noqa: S105 (a throwaway token for a loopback daemon)

Outcome = Literal["allow", "deny", "unanswered", "refused", "timeout"]
"""How a FastAGI session ended, seen from the client: ``unanswered`` = the server closed without
setting CALLGATE_DECISION; ``refused`` = the connection failed or was reset."""


# --------------------------------------------------------------------------- the server


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    agi_port: int
    http_port: int
    data_dir: Path
    log_path: Path
    _log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def memory_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in KiB."""
        return read_memory_kb(self.pid)

    def db_bytes(self) -> int:
        """The SQLite store on disk: the database and its write-ahead log."""
        total = 0
        for path in self.data_dir.glob("callgate.sqlite3*"):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_bytes().decode("utf-8", "replace").splitlines()
        return "\n".join(text[-lines:])


def read_memory_kb(pid: int) -> tuple[int, int]:
    rss = hwm = 0
    with Path(f"/proc/{pid}/status").open() as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def start_server(
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    config_file: Path | None = None,
    nofile: int | None = None,
) -> Server:
    """`callgate serve` on free loopback ports; returns once /readyz answers 200.

    ``env`` adds CALLGATE_* settings (a scenario raising a limit), ``config_file`` is passed as
    ``--config``; ``nofile`` lowers the child's RLIMIT_NOFILE (soft and hard) before it starts.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    agi_port, http_port = free_port(), free_port()
    child_env = {
        **os.environ,
        "CALLGATE_ADMIN_TOKEN": TOKEN,
        "PYTHONPATH": str(ROOT / "src"),
        **(env or {}),
    }
    command = [sys.executable, "-m", "callgate", "serve", "--data-dir", str(data_dir)]
    command += ["--agi", f"127.0.0.1:{agi_port}", "--http", f"127.0.0.1:{http_port}"]
    if config_file is not None:
        command += ["--config", str(config_file)]
    log_path = data_dir / "server.log"
    log = log_path.open("wb")

    def limit_files() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    # preexec_fn (slow-http only) calls setrlimit alone, which takes no lock another thread of
    # this process could hold across the fork.
    process = subprocess.Popen(
        command,
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=limit_files if nofile is not None else None,
    )
    server = Server(process, agi_port, http_port, data_dir, log_path, log)
    try:
        wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def wait_ready(server: Server, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"callgate exited ({server.process.returncode}):\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"{server.base_url}/readyz", timeout=1) as answer:  # noqa: S310 (loopback)
                if answer.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"callgate not ready within {seconds:g} s:\n{server.log_tail()}")


# --------------------------------------------------------------------------- FastAGI client


class Environments:
    """AGI environments as Asterisk 22 sends them (the recorded one), for any action and args."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._lines: list[tuple[bytes, bytes]] = []
        for raw in TRANSCRIPT.read_bytes().splitlines():
            if not raw.startswith(b"< ") or raw == b"< ":
                if self._lines and raw.startswith(b"> "):
                    break
                continue
            key, _, value = raw[2:].partition(b": ")
            if not key.startswith(b"agi_arg_"):
                self._lines.append((key, value))

    def build(self, action: str | bytes, args: Sequence[bytes], uniqueid: str) -> bytes:
        action_bytes = action if isinstance(action, bytes) else action.encode()
        replaced = {
            b"agi_network_script": action_bytes,
            b"agi_request": b"agi://127.0.0.1:%d/%s" % (self._port, action_bytes),
            b"agi_uniqueid": uniqueid.encode(),
        }
        out = [b"%s: %s\n" % (key, replaced.get(key, value)) for key, value in self._lines]
        out += [b"agi_arg_%d: %s\n" % (n, arg) for n, arg in enumerate(args, 1)]
        return b"".join(out) + b"\n"


class _AgiCall(asyncio.Protocol):
    """One AGI() as Asterisk runs it: the environment, one reply per command, HANGUP when the
    server closes. Answers what a live channel would for the commands a decision uses."""

    def __init__(self, env: bytes, done: asyncio.Future[Outcome], phone: bytes, pin: bytes) -> None:
        self._env, self._done, self._phone, self._pin = env, done, phone, pin
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self.outcome: Outcome = "unanswered"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._transport.write(self._env)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._transport.write(self._reply(line))

    def _reply(self, line: bytes) -> bytes:
        if b"CALLGATE_DECISION" in line:
            rest = line.partition(b"CALLGATE_DECISION")[2]
            self.outcome = "allow" if b"ALLOW" in rest[:12] else "deny"
        word = line.split(b" ", 2)[:2]
        if word[:1] == [b"EXEC"] or word == [b"ANSWER"]:
            return b"200 result=0\n"
        if word == [b"GET", b"VARIABLE"]:
            return b"200 result=1 (%s)\n" % self._phone if self._phone else b"200 result=0\n"
        if word == [b"GET", b"DATA"]:
            return b"200 result=%s\n" % self._pin
        return b"200 result=1\n"

    def eof_received(self) -> bool | None:
        assert self._transport is not None
        self._transport.write(b"HANGUP\n")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(self.outcome if exc is None else "refused")


async def agi_session(
    port: int, env: bytes, within: float, *, phone: bytes = b"", pin: bytes = b""
) -> tuple[float, Outcome]:
    """(seconds from connect to close, how it ended)."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    done: asyncio.Future[Outcome] = loop.create_future()
    transport: asyncio.Transport | None = None
    try:
        async with asyncio.timeout(within):
            transport, _ = await loop.create_connection(
                lambda: _AgiCall(env, done, phone, pin), "127.0.0.1", port
            )
            outcome = await done
    except TimeoutError:
        outcome = "timeout"
    except OSError:
        outcome = "refused"
    finally:
        if transport is not None and not done.done():
            transport.abort()
    return time.perf_counter() - started, outcome


async def healthz(port: int, within: float) -> tuple[float, bool]:
    """One GET /healthz on a new connection, as a monitor sends it: (seconds, answered 200)."""
    started = time.perf_counter()
    writer: asyncio.StreamWriter | None = None
    ok = False
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = await reader.read(65536)
            ok = answer.startswith(b"HTTP/1.1 200")
    except (TimeoutError, OSError):
        ok = False
    finally:
        if writer is not None:
            writer.close()
    return time.perf_counter() - started, ok


# --------------------------------------------------------------------------- the victim probe


@dataclass(frozen=True)
class ProbeConfig:
    agi_port: int
    http_port: int
    server_pid: int
    agi_rate: float = 200.0
    healthz_rate: float = 20.0
    rss_interval: float = 0.05
    max_seconds: float = 900.0
    session_timeout: float = 10.0
    max_in_flight: int = 3000
    """Above what 200 + 20 requests/s timing out at 10 s keep in flight: none is skipped."""
    client: str = "globex"


@dataclass
class ProbeData:
    """Each sample: (monotonic start, seconds, ok). RSS: (monotonic, VmRSS KiB, VmHWM KiB)."""

    agi: list[tuple[float, float, bool]] = field(default_factory=list)
    healthz: list[tuple[float, float, bool]] = field(default_factory=list)
    memory: list[tuple[float, int, int]] = field(default_factory=list)


class Probe:
    """The victim: globex's FastAGI sessions and /healthz at steady rates, RSS samples."""

    def __init__(self, config: ProbeConfig) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=probe_main, args=(config, child), daemon=True)
        self._process.start()
        child.close()
        if not self._conn.poll(30) or self._conn.recv() != "ready":
            self._process.kill()
            raise RuntimeError("the probe did not start")
        self.data: ProbeData | None = None

    def stop(self) -> ProbeData:
        if self.data is None:
            self._conn.send("stop")
            if not self._conn.poll(60):
                self._process.kill()
                raise RuntimeError("the probe did not report")
            self.data = cast(ProbeData, self._conn.recv())
            self._process.join(10)
        return self.data


def probe_main(config: ProbeConfig, conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and stops us
    run_loop(_probe(config, conn))


def run_loop(main: Coroutine[object, object, None]) -> None:
    """Run on uvloop when it is installed (as `callgate serve` does), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _probe(config: ProbeConfig, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    data = ProbeData()
    stop = asyncio.Event()

    def stop_word() -> None:
        loop.remove_reader(conn.fileno())  # once: a readable pipe would call this in a loop
        stop.set()

    loop.add_reader(conn.fileno(), stop_word)
    envs = Environments(config.agi_port)
    deadline = loop.time() + config.max_seconds
    in_flight: set[asyncio.Task[None]] = set()
    counter = 0

    async def one_agi() -> None:
        nonlocal counter
        counter += 1
        env = envs.build("eavesdrop", [config.client.encode(), b"100", b"101"], f"probe.{counter}")
        at = time.monotonic()
        seconds, outcome = await agi_session(config.agi_port, env, config.session_timeout)
        data.agi.append((at, seconds, outcome == "allow"))

    async def one_healthz() -> None:
        at = time.monotonic()
        seconds, ok = await healthz(config.http_port, config.session_timeout)
        data.healthz.append((at, seconds, ok))

    async def ticker(
        rate: float,
        fire: Callable[[], asyncio.Task[None]],
        samples: list[tuple[float, float, bool]],
    ) -> None:
        interval, due = 1.0 / rate, loop.time()
        while not stop.is_set() and loop.time() < deadline:
            if len(in_flight) < config.max_in_flight:
                task = fire()
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            else:  # not sent: a failure, at the time a timeout takes
                samples.append((time.monotonic(), config.session_timeout, False))
            due += interval
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                due = loop.time()  # a stalled client loop: no burst to catch up

    async def sample_memory() -> None:
        while not stop.is_set() and loop.time() < deadline:
            with contextlib.suppress(OSError):
                rss, hwm = read_memory_kb(config.server_pid)
                data.memory.append((time.monotonic(), rss, hwm))
            await asyncio.sleep(config.rss_interval)

    conn.send("ready")
    await asyncio.gather(
        ticker(config.agi_rate, lambda: loop.create_task(one_agi()), data.agi),
        ticker(config.healthz_rate, lambda: loop.create_task(one_healthz()), data.healthz),
        sample_memory(),
    )
    if in_flight:
        await asyncio.wait(in_flight, timeout=config.session_timeout + 2)
    loop.remove_reader(conn.fileno())
    os.set_blocking(conn.fileno(), True)  # the loop made it non-blocking; the data is large
    with contextlib.suppress(OSError):
        conn.recv()  # the stop word (waited for, after max_seconds)
    conn.send(data)


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Latency:
    count: int
    failed: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, samples: Sequence[tuple[float, float, bool]]) -> Latency:
        """Over every sample, failed ones at the time they took (a timeout counts as its
        timeout): a server that stalls must not look fast because its sessions failed."""
        times = sorted(seconds * 1000 for _, seconds, _ in samples)
        failed = sum(1 for *_, ok in samples if not ok)
        return cls(
            len(times), failed, quantile(times, 0.50), quantile(times, 0.99), max(times, default=0)
        )

    def text(self) -> str:
        if not self.count:
            return "-"
        return f"{self.p50_ms:.1f} / {self.p99_ms:.1f} / {self.max_ms:.0f}"


def quantile(ordered: Sequence[float], q: float) -> float:
    """Nearest rank on sorted values (NaN when empty)."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


@dataclass(frozen=True)
class Memory:
    before_mb: float
    after_mb: float
    peak_delta_mb: float

    @classmethod
    def of(
        cls, samples: Sequence[tuple[float, int, int]], before: tuple[int, int], after: int
    ) -> Memory:
        """``before`` (VmRSS, VmHWM) when the phase began; the peak is the larger of the
        sampled VmRSS and a VmHWM that rose during the phase (a spike between samples)."""
        peak = max([before[0], after, *(rss for _, rss, _ in samples)])
        hwm = max((h for *_, h in samples), default=before[1])
        if hwm > before[1]:
            peak = max(peak, hwm)
        return cls(before[0] / 1024, after / 1024, (peak - before[0]) / 1024)


Sample = TypeVar("Sample", tuple[float, float, bool], tuple[float, int, int])


def window(samples: Sequence[Sample], start: float, end: float) -> list[Sample]:
    return [sample for sample in samples if start <= sample[0] < end]


def dumps(value: object) -> str:
    return json.dumps(value, indent=2, default=str)
