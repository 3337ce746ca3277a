"""Peers that misbehave cost one closed connection and one log line: the loop keeps ticking, the
other sessions complete, the server stays up. Then overload, and the bounded shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from callgate.agi import variables
from callgate.agi.handlers import AgiDispatcher
from callgate.agi.server import AgiServer
from callgate.agi.session import AgiSession, AgiSessionError
from callgate.metrics import Metrics
from fake_asterisk import FakeChannel, call, load_transcript, request_environment
from support import wait_until

from .conftest import Heartbeat, StartServer, sample

ENVIRONMENT = load_transcript("commands-and-replies.txt").environment_bytes
ALLOWING = request_environment("pickup", "acme", "100", "103")


async def bad_peer(port: int, payload: bytes, *, then_close: bool = True) -> bytes:
    """Connect, send ``payload``, optionally close; return what the server sent back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(payload)
            await writer.drain()
            if then_close:
                writer.write_eof()
            return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return b""


async def assert_still_serving(server: AgiServer) -> None:
    channel = await call(server.port, ALLOWING)
    assert channel.variables[variables.DECISION] == "ALLOW"


MISBEHAVIOURS = {
    "half an environment then disconnect": (ENVIRONMENT[:300], True, "closed after 300 bytes"),
    "garbage": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True, "not an environment line"),
    "binary garbage": (bytes(range(256)) * 4, False, "not an environment line"),
    "a 1 MB line": (b"agi_network: " + b"y" * 1_000_000, False, "longer than 8192"),
    "connect and say nothing": (b"", False, "no environment within 0.3s"),
    "connect and close": (b"", True, "closed without an environment"),
    "a reply nobody asked for": (ENVIRONMENT + b"200 result=1\n", False, "unsolicited line"),
}


@pytest.mark.parametrize("case", MISBEHAVIOURS)
async def test_a_misbehaving_peer_costs_one_connection_and_one_log_line(
    start_server: StartServer,
    dispatcher: Callable[..., AgiDispatcher],
    heartbeat: Heartbeat,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    payload, close, message = MISBEHAVIOURS[case]
    server = await start_server(dispatcher())
    # a good session runs while the bad peer does its thing
    bad, good = await asyncio.gather(
        bad_peer(server.port, payload, then_close=close), call(server.port, ALLOWING)
    )
    assert good.variables[variables.DECISION] == "ALLOW"
    assert b"ALLOW" not in bad
    await wait_until(lambda: server.active == 0)
    rejected = [r for r in caplog.records if r.name == "callgate.agi.server"]
    assert len(rejected) == 1, [r.getMessage() for r in rejected]
    assert message in rejected[0].getMessage()
    assert heartbeat.max_gap < 0.25
    await assert_still_serving(server)
    failed = sum(
        sample(metrics, "callgate_agi_sessions_total", outcome=outcome)
        for outcome in ("protocol_error", "timeout", "disconnected")
    )
    assert failed == 1


async def test_asterisk_that_stops_answering_hits_the_reply_deadline(
    start_server: StartServer,
    dispatcher: Callable[..., AgiDispatcher],
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await start_server(dispatcher(), reply_timeout=0.2)
    channel = await call(server.port, ALLOWING, FakeChannel(silent_after=0))
    assert variables.DECISION not in channel.variables  # the dialplan sees no ALLOW
    assert any("no reply within" in r.getMessage() for r in caplog.records)
    assert sample(metrics, "callgate_agi_sessions_total", outcome="timeout") == 1
    await assert_still_serving(server)


async def test_a_flood_of_bad_clients_while_real_sessions_complete(
    start_server: StartServer,
    dispatcher: Callable[..., AgiDispatcher],
    heartbeat: Heartbeat,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await start_server(dispatcher())
    kinds = [payload for payload, _, _ in MISBEHAVIOURS.values() if len(payload) < 100_000]
    flood = [
        bad_peer(server.port, kinds[i % len(kinds)], then_close=i % 2 == 0) for i in range(300)
    ]
    good = [call(server.port, ALLOWING) for _ in range(100)]
    results = await asyncio.gather(*flood, *good)
    for channel in results[300:]:
        assert isinstance(channel, FakeChannel)
        assert channel.variables[variables.DECISION] == "ALLOW"
    await wait_until(lambda: server.active == 0)
    assert heartbeat.max_gap < 0.5
    bad = [r for r in caplog.records if r.name == "callgate.agi.server"]
    assert 250 <= len(bad) <= 300  # one line each (a peer that closed early may get its answer)
    assert sample(metrics, "callgate_agi_sessions_total", outcome="completed") >= 100
    assert sample(metrics, "callgate_agi_active_sessions") == 0
    await assert_still_serving(server)


async def test_overload_answers_failure_at_once_and_recovers(
    start_server: StartServer,
    dispatcher: Callable[..., AgiDispatcher],
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await start_server(dispatcher(), max_sessions=3, env_timeout=0.5)
    silent = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
    await wait_until(lambda: server.active == 3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    refused = await call(server.port, ALLOWING)
    assert loop.time() - started < 0.2
    assert refused.agistatus == "FAILURE"  # the dialplan denies: not SUCCESS + ALLOW
    assert refused.variables == {}
    assert sample(metrics, "callgate_agi_sessions_total", outcome="overload") == 1
    assert any("refused (3 sessions open, limit 3)" in r.getMessage() for r in caplog.records)
    await wait_until(lambda: server.active == 0)  # the silent ones hit the environment deadline
    await assert_still_serving(server)
    for _, writer in silent:
        writer.close()


def test_the_default_limits_take_a_busy_pbx() -> None:
    from callgate.agi.server import AgiConfig
    from callgate.config import Settings

    config = AgiConfig.from_settings(Settings())
    assert config.max_sessions >= 1000
    assert (config.host, config.port) == ("127.0.0.1", 4573)


# --------------------------------------------------------------------------- shutdown


def slow_session(release: asyncio.Event) -> Callable[[AgiSession], Awaitable[None]]:
    async def handler(session: AgiSession) -> None:
        await release.wait()
        await session.set_variables([(variables.DECISION, "DENY"), (variables.REASON, "late")])

    return handler


async def test_graceful_shutdown_finishes_sessions_in_flight(start_server: StartServer) -> None:
    release = asyncio.Event()
    server = await start_server(slow_session(release), shutdown_grace=5.0)
    port = server.port
    in_flight = asyncio.create_task(call(port, ALLOWING))
    await wait_until(lambda: server.active == 1)
    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectionRefusedError):  # no longer accepting
        await asyncio.open_connection("127.0.0.1", port)
    assert not stopping.done()
    release.set()
    channel = await in_flight
    assert channel.variables == {variables.DECISION: "DENY", variables.REASON: "late"}
    async with asyncio.timeout(1):
        await stopping


async def test_shutdown_cancels_what_outlives_the_grace(
    start_server: StartServer, metrics: Metrics
) -> None:
    server = await start_server(slow_session(asyncio.Event()), shutdown_grace=0.2)
    in_flight = asyncio.create_task(call(server.port, ALLOWING))
    await wait_until(lambda: server.active == 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.stop()
    assert loop.time() - started < 1.0
    channel = await in_flight
    assert channel.variables == {}
    assert sample(metrics, "callgate_agi_sessions_total", outcome="cancelled") == 1
    assert server.active == 0


async def test_a_handler_that_swallows_the_failure_is_still_counted_as_one(
    start_server: StartServer, metrics: Metrics
) -> None:
    async def stubborn(session: AgiSession) -> None:
        with contextlib.suppress(AgiSessionError):
            await session.set_variable("X", "1")

    server = await start_server(stubborn, reply_timeout=0.1)
    await call(server.port, ALLOWING, FakeChannel(silent_after=0))
    await wait_until(lambda: server.active == 0)
    assert sample(metrics, "callgate_agi_sessions_total", outcome="timeout") == 1
    assert sample(metrics, "callgate_agi_sessions_total", outcome="completed") == 0
