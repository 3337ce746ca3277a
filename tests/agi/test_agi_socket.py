"""The links write through non-blocking sockets themselves: a kernel that takes a few bytes at a
time, or none, must still deliver every command whole and in order, on asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from callgate.agi.server import AgiServer, _Link
from callgate.agi.session import AgiSession
from callgate.metrics import Metrics
from fake_asterisk import call, request_environment

from .conftest import TEST_CONFIG, StartServer, sample

ASK = request_environment("pickup", "acme", "100", "103")
VALUES = ("a" * 3000, "b" * 5000, "c")


class Trickle:
    """A socket whose ``send`` takes at most 7 bytes, and every other call nothing at all."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._calls = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, data: bytes) -> int:
        self._calls += 1
        if self._calls % 2 == 0:
            raise BlockingIOError
        return self._sock.send(data[:7])

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()


async def three_commands(session: AgiSession) -> None:
    for number, value in enumerate(VALUES):
        await session.set_variable(f"V{number}", value)


async def asterisk_side(peer: socket.socket) -> list[bytes]:
    """Send the environment, answer each command once it is whole; the commands received."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(peer, ASK)
    commands, buffer = [], b""
    while True:
        data = await asyncio.wait_for(loop.sock_recv(peer, 65536), 5)
        if not data:
            return commands
        buffer += data
        while b"\n" in buffer:
            line, _, buffer = buffer.partition(b"\n")
            commands.append(line)
            await loop.sock_sendall(peer, b"200 result=1\n")


async def trickled_session() -> tuple[list[bytes], float, int]:
    metrics = Metrics()
    server = AgiServer(TEST_CONFIG, three_commands, metrics)
    await server.start()  # accepting; the link below is handed its socket directly
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.setblocking(False)
    trickle = Trickle(ours)
    try:
        link = _Link(server, asyncio.get_running_loop(), trickle, ("test", 0))  # type: ignore[arg-type]
        link.start()
        commands = await asterisk_side(peer)
        await asyncio.wait_for(server.stop(), 5)
    finally:
        peer.close()
    completed = sample(metrics, "callgate_agi_sessions_total", outcome="completed")
    return commands, completed, trickle._calls


Result = tuple[list[bytes], float, int]
Runner = Callable[[Coroutine[Any, Any, Result]], Result]


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_every_command_arrives_whole_through_a_trickling_socket(run: Runner) -> None:
    commands, completed, sends = run(trickled_session())
    assert sends > 2 * 8000 // 7  # the writes really went a few bytes at a time
    assert commands == [
        f"SET VARIABLE V{number} {value}".encode() for number, value in enumerate(VALUES)
    ]
    assert completed == 1


async def test_a_host_name_is_resolved_and_served(start_server: StartServer) -> None:
    server = await start_server(three_commands, host="localhost")
    channel = await call(server.port, ASK)
    assert channel.variables["V2"] == "c"


async def test_a_port_in_use_is_refused_with_the_address(start_server: StartServer) -> None:
    first = await start_server(three_commands)
    with pytest.raises(OSError, match=rf"cannot listen on \('127.0.0.1', {first.port}\)"):
        await start_server(three_commands, port=first.port)
