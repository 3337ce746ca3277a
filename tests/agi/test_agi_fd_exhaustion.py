"""Out of file descriptors, the listener pauses instead of spinning, and serves again afterwards.

The server runs in its own process with a descriptor limit a few above what it has open; this
test opens more connections than it can accept and watches it from outside."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from callgate.agi import variables
from fake_asterisk import call, request_environment

SERVER = """
import asyncio, logging, os, resource, sys
from callgate.agi.server import AgiConfig, AgiServer
from callgate.metrics import Metrics

async def handler(session):
    await session.set_variable("CALLGATE_DECISION", "ALLOW")

async def main():
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    server = AgiServer(AgiConfig(port=0, env_timeout=30), handler, Metrics())
    await server.start()
    used = len(os.listdir("/proc/self/fd"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 3, hard))
    print(server.port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_pauses_accepting_then_serves_again(tmp_path: Path) -> None:
    stderr = (tmp_path / "stderr.txt").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
        time.sleep(0.3)  # the server takes the few it can, then runs out
        before = cpu_seconds(process.pid)
        time.sleep(1.0)
        busy = cpu_seconds(process.pid) - before
        for client in clients:
            client.close()
        assert busy < 0.3, f"the server spun on its listener: {busy:.2f} CPU s in 1 s"
        ask = request_environment("pickup", "acme", "100", "103")
        channel = asyncio.run(asyncio.wait_for(call(port, ask), 10))
        assert channel.variables[variables.DECISION] == "ALLOW"
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
        stderr.seek(0)
        log = stderr.read()
        stderr.close()
    assert "cannot accept" in log
