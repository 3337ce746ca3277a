"""HTTP clients cannot take the descriptors FastAGI needs.

A real ``callgate serve`` runs with a descriptor limit of 400 (soft and hard, set before it
starts, as ``ulimit -n 400`` would) and ``agi_max_sessions`` 100. Hundreds of idle HTTP
connections never stop a FastAGI session from being answered, nor ``/healthz``; silent HTTP
connections are closed after the header timeout and their descriptors come back."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from callgate.agi import variables
from fake_asterisk import call, request_environment

NOFILE = 400
AGI_MAX_SESSIONS = 100
WITHIN = 30.0
"""Upper bound on any wait here (a loaded machine); nothing is timed."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    http_port: int
    agi_port: int
    log_path: Path

    def open_descriptors(self) -> int:
        return sum(1 for _ in Path(f"/proc/{self.process.pid}/fd").iterdir())

    def log(self) -> str:
        return self.log_path.read_text()


@contextmanager
def daemon(tmp_path: Path, *, soft: int = NOFILE, header_timeout: float = 60.0) -> Iterator[Daemon]:
    def lower_limit() -> None:  # in the child, before exec: what `ulimit -n` does
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, NOFILE))

    http_port, agi_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "CALLGATE_ADMIN_TOKEN": "fd-budget-admin-token",
        "CALLGATE_AGI_MAX_SESSIONS": str(AGI_MAX_SESSIONS),
        "CALLGATE_HTTP_HEADER_TIMEOUT": str(header_timeout),
        "CALLGATE_LOG_LEVEL": "INFO",
    }
    command = [sys.executable, "-m", "callgate", "serve", "--data-dir", str(tmp_path)]
    command += ["--http", f"127.0.0.1:{http_port}", "--agi", f"127.0.0.1:{agi_port}"]
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=lower_limit,
        )
    running = Daemon(process, http_port, agi_port, log_path)
    try:
        wait_ready(running)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(WITHIN)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def http_get(port: int, path: str) -> int:
    """One request on a new connection; the status."""
    with socket.create_connection(("127.0.0.1", port), timeout=WITHIN) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def wait_ready(running: Daemon) -> None:
    deadline = time.monotonic() + WITHIN
    while time.monotonic() < deadline:
        assert running.process.poll() is None, running.log()
        with suppress(OSError):
            if http_get(running.http_port, "/readyz") == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"not ready within {WITHIN}s:\n{running.log()}")


def idle_connections(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=WITHIN) for _ in range(count)]


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed ``sock`` (waits up to WITHIN)."""
    sock.settimeout(WITHIN)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def answer_sessions(port: int, count: int) -> list[str]:
    async def sessions() -> list[str]:
        ask = request_environment("pickup", "acme", "100", "103")
        decisions = []
        for _ in range(count):
            channel = await asyncio.wait_for(call(port, ask), 10)
            decisions.append(channel.variables.get(variables.DECISION, "unanswered"))
        return decisions

    return asyncio.run(sessions())


def test_idle_http_connections_never_starve_fastagi(tmp_path: Path) -> None:
    with daemon(tmp_path) as running:
        idle = idle_connections(running.http_port, NOFILE - 5)
        try:
            assert http_get(running.http_port, "/healthz") == 200
            # every connection above was accepted before that one: HTTP holds all it may
            assert running.open_descriptors() <= NOFILE - AGI_MAX_SESSIONS
            assert answer_sessions(running.agi_port, 10) == ["ALLOW"] * 10
            assert http_get(running.http_port, "/metrics") == 200
            assert running.process.poll() is None
        finally:
            for sock in idle:
                sock.close()
        log = running.log()
    assert "cannot accept" not in log
    assert "Too many open files" not in log
    assert "HTTP connections capped at 236" in log


def test_silent_http_connections_are_closed_after_the_header_timeout(tmp_path: Path) -> None:
    with daemon(tmp_path, header_timeout=1.0) as running:
        before = running.open_descriptors()
        silent = idle_connections(running.http_port, 50)
        try:
            assert all(closed_by_server(sock) for sock in silent)
        finally:
            for sock in silent:
                sock.close()
        deadline = time.monotonic() + WITHIN
        while running.open_descriptors() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running.open_descriptors() <= before
        assert answer_sessions(running.agi_port, 3) == ["ALLOW"] * 3


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    with daemon(tmp_path, soft=256) as running:
        limits = Path(f"/proc/{running.process.pid}/limits").read_text()
    [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
    assert line.split()[3:5] == [str(NOFILE), str(NOFILE)]
