"""The link's lifecycle: one ``LinkState``, every end through ``_finish`` — exactly once, whatever
ended the session (driven with bytes over real loopback sockets)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import pytest

from callgate.agi.protocol import AgiEnvironment
from callgate.agi.server import AgiServer, LinkState, QuickAnswer, SessionOutcome, _Link
from callgate.agi.session import AgiSession, AgiSessionError
from callgate.metrics import Metrics
from fake_asterisk import request_environment
from support import wait_until

from .conftest import TEST_CONFIG, StartServer, sample

FIRST = b"EXEC MSet A=1\n"
SECOND = b"EXEC MSet B=2\n"
OK = b"200 result=0\n"


@dataclass
class Answer:
    line: bytes
    more: tuple[bytes, ...]
    finished: list[int]

    def finish(self) -> None:
        self.finished.append(1)


@dataclass
class Handler:
    """Quick for ``pickup`` (two commands for ``acme,two``), a task for ``slow``: the task
    answers, raises (``slow,raise``) or goes on after its command failed (``slow,outlive``)."""

    finished: list[int] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    active_after_error: list[int] = field(default_factory=list)
    server: AgiServer | None = None

    def prepare(self, environment: AgiEnvironment) -> QuickAnswer | None:
        if environment.action == "slow":
            return None
        more = (SECOND,) if environment.arg(2) == "two" else ()
        return Answer(FIRST, more, self.finished)

    async def __call__(self, session: AgiSession) -> None:
        mode = session.environment.arg(1)
        self.ran.append(mode)
        if mode == "raise":
            raise RuntimeError("the handler broke")
        try:
            await session.set_variable("X", "1")
        except AgiSessionError:
            if mode != "outlive":
                raise
            await asyncio.sleep(0.05)  # still counted: shutdown would wait for this
            assert self.server is not None
            self.active_after_error.append(self.server.active)


Peer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(b"510 Invalid or unknown command\n" if b"refuse" in line else OK)


def sends(environment: bytes, then: Peer | None = None) -> Peer:
    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(environment)
        await writer.drain()
        if then is not None:
            await then(reader, writer)

    return peer


async def read_one_and_leave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readline()


async def refuse_the_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readline()
    writer.write(b"510 Invalid or unknown command\n")
    await reader.read()


async def stay_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.wait_for(reader.read(), 5)  # until the server gives up


async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    return


QUICK = request_environment("pickup", "acme", "100")
SCENARIOS: dict[str, tuple[Peer, SessionOutcome, int]] = {
    # name: what the peer does, how the session ended, answers finished (quick path)
    "quick: the reply": (sends(QUICK, answer_each), SessionOutcome.COMPLETED, 1),
    "quick: two commands": (
        sends(request_environment("pickup", "acme", "two"), answer_each),
        SessionOutcome.COMPLETED,
        1,
    ),
    "quick: the reply refuses": (sends(QUICK, refuse_the_reply), SessionOutcome.DISCONNECTED, 1),
    "quick: the peer leaves": (sends(QUICK, read_one_and_leave), SessionOutcome.DISCONNECTED, 1),
    "quick: no reply in time": (sends(QUICK, stay_silent), SessionOutcome.TIMEOUT, 1),
    "no environment": (nothing, SessionOutcome.DISCONNECTED, 0),
    "no environment in time": (stay_silent, SessionOutcome.TIMEOUT, 0),
    "a protocol error": (sends(b"GET / HTTP/1.0\n", stay_silent), SessionOutcome.PROTOCOL_ERROR, 0),
    "task: the reply": (
        sends(request_environment("slow", "answer"), answer_each),
        SessionOutcome.COMPLETED,
        0,
    ),
    "task: the handler raises": (
        sends(request_environment("slow", "raise"), answer_each),
        SessionOutcome.ERROR,
        0,
    ),
    "task: the handler outlives the deadline": (
        sends(request_environment("slow", "outlive"), stay_silent),
        SessionOutcome.TIMEOUT,
        0,
    ),
}


def counted(metrics: Metrics) -> dict[str, float]:
    counts = {
        outcome.value: sample(metrics, "callgate_agi_sessions_total", outcome=outcome.value)
        for outcome in SessionOutcome
    }
    return {outcome: count for outcome, count in counts.items() if count}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_every_end_finishes_the_session_exactly_once(
    start_server: StartServer, metrics: Metrics, scenario: str
) -> None:
    peer, outcome, finished = SCENARIOS[scenario]
    handler = Handler()
    server = handler.server = await start_server(handler, env_timeout=0.2, reply_timeout=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        await asyncio.wait_for(peer(reader, writer), 5)
    finally:
        writer.close()
    await wait_until(lambda: server.active == 0)
    await asyncio.sleep(0.05)  # anything that would end it a second time has had its chance
    assert counted(metrics) == {outcome.value: 1}
    assert handler.finished == [1] * finished
    assert [link.state for link in server._links] == []
    if scenario.endswith("outlives the deadline"):
        assert handler.active_after_error == [1]  # abandoned, not finished, while it ran


async def test_two_commands_go_out_one_reply_at_a_time(start_server: StartServer) -> None:
    server = await start_server(Handler())
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request_environment("pickup", "acme", "two"))
    assert await reader.readline() == FIRST
    with pytest.raises(TimeoutError):  # the second waits for the first one's reply
        await asyncio.wait_for(reader.readline(), 0.1)
    writer.write(OK)
    assert await reader.readline() == SECOND
    writer.write(OK)
    assert await asyncio.wait_for(reader.read(), 2) == b""  # then the server closes
    writer.close()


async def test_a_refused_connection_is_counted_once_as_overload(
    start_server: StartServer, metrics: Metrics
) -> None:
    server = await start_server(Handler(), max_sessions=1, env_timeout=0.3)
    _, holder = await asyncio.open_connection("127.0.0.1", server.port)  # takes the only place
    await wait_until(lambda: server.active == 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await asyncio.wait_for(reader.readline(), 2) == b"failure\n"
    writer.close()
    await wait_until(lambda: server.active == 0)  # the holder's environment never came
    holder.close()
    await asyncio.sleep(0.05)
    assert counted(metrics) == {"overload": 1, "timeout": 1}


async def test_shutdown_cancels_a_running_handler_and_counts_it_once(metrics: Metrics) -> None:
    handler = Handler()
    server = handler.server = AgiServer(replace(TEST_CONFIG, shutdown_grace=0.1), handler, metrics)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request_environment("slow", "answer"))
    await reader.readline()  # its command, never answered
    await server.stop()
    assert counted(metrics) == {"cancelled": 1}
    writer.close()


async def test_a_transition_outside_the_table_is_refused(metrics: Metrics) -> None:
    server = AgiServer(TEST_CONFIG, Handler(), metrics)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        link = _Link(server, asyncio.get_running_loop(), ours, ("test", 0))
        assert link.state is LinkState.AWAITING_ENVIRONMENT
        with pytest.raises(RuntimeError, match="AWAITING_ENVIRONMENT to ABANDONED"):
            link._move(LinkState.ABANDONED)
        link._move(LinkState.RUNNING)
        link._finish(SessionOutcome.ERROR)
        link._finish(SessionOutcome.COMPLETED)  # a second end: nothing
        assert link.state is LinkState.FINISHED
        assert counted(server._metrics) == {"error": 1}
        with pytest.raises(RuntimeError, match="FINISHED to RUNNING"):
            link._move(LinkState.RUNNING)
    finally:
        ours.close()
        theirs.close()
