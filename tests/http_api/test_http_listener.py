"""The HTTP listener's bounds, over raw loopback sockets: malformed requests are answered 400 in
JSON without the token reaching the log, unfinished headers and idle keep-alive connections are
closed, and the connection cap closes idle connections before it refuses anyone."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from callgate.config import Settings
from callgate.daemon import http_limits
from callgate.http.app import HttpDeps, build_app, start_http
from callgate.http.listener import (
    MIN_HTTP_CONNECTIONS,
    ListenerLimits,
    RateLimitedWarning,
    http_connection_cap,
)
from callgate.metrics import Metrics
from callgate.registry import PolicyRegistry
from callgate.store import Store
from wiring import app_services

TOKEN = "token-that-must-never-be-logged-4f1c"
HEAD = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
MALFORMED = {
    "nul": f"{HEAD}Authorization: Bearer {TOKEN}\x00\r\n\r\n",
    "space_before_colon": f"{HEAD}Authorization : Bearer {TOKEN}\r\n\r\n",
    "folded": f"{HEAD}Authorization: Bearer\r\n {TOKEN}\r\n\r\n",
    "over_8190_bytes": f"{HEAD}Authorization: Bearer {TOKEN}{'x' * 8200}\r\n\r\n",
}
WITHIN = 10.0
"""Upper bound on any wait here; the limits under test are far shorter."""


def real_app(store: Store) -> web.Application:
    return build_app(HttpDeps(app_services(store, PolicyRegistry()), Metrics(), admin_token=TOKEN))


@asynccontextmanager
async def serving(app: web.Application, limits: ListenerLimits) -> AsyncIterator[int]:
    runner = await start_http(app, "127.0.0.1", 0, shutdown_grace=1.0, limits=limits)
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


OPENED: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    """Every client socket is closed, whatever an assertion interrupted."""
    yield
    while OPENED:
        OPENED.pop().close()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    OPENED.append(writer)
    return reader, writer


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, read until the server closes."""
    reader, writer = await connect(port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), WITHIN)
    finally:
        writer.close()


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WITHIN)
    status, headers, _ = parse(head)
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), WITHIN)
    return status, body


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before closing; fails if it does not close within WITHIN."""
    return await asyncio.wait_for(reader.read(), WITHIN)


@pytest.mark.parametrize("form", sorted(MALFORMED))
async def test_malformed_header_is_answered_400_json_and_the_token_stays_out_of_the_log(
    store: Store, caplog: pytest.LogCaptureFixture, form: str
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(real_app(store), ListenerLimits()) as port:
        raw = await exchange(port, MALFORMED[form].encode("latin-1"))
    status, headers, body = parse(raw)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    answer = json.loads(body)
    assert answer["error"] == "bad_request"
    assert set(answer) == {"error", "message", "details"}
    assert TOKEN.encode() not in raw
    assert TOKEN not in caplog.text
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].levelno == logging.WARNING
    assert warnings[0].exc_info is None
    assert "\n" not in warnings[0].getMessage()


async def test_a_burst_of_malformed_requests_logs_one_warning(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(real_app(store), ListenerLimits()) as port:
        for _ in range(3):
            for data in MALFORMED.values():
                status, _, _ = parse(await exchange(port, data.encode("latin-1")))
                assert status == 400
        # the listener still serves well-formed requests
        status, _, _ = parse(await exchange(port, f"{HEAD}Connection: close\r\n\r\n".encode()))
        assert status == 200
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert TOKEN not in caplog.text


def test_held_back_warnings_are_counted_in_the_next(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    warn = RateLimitedWarning(60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        warn("bad request from %s", "a")
        for _ in range(4):
            now[0] += 10
            warn("bad request from %s", "b")
        now[0] += 30
        warn("bad request from %s", "c")
    assert [r.getMessage() for r in caplog.records] == [
        "bad request from a",
        "bad request from c (and 4 more since the last report)",
    ]


async def test_silent_connections_are_closed_after_the_header_timeout(store: Store) -> None:
    async with serving(real_app(store), ListenerLimits(header_timeout=0.5)) as port:
        connections = [await connect(port) for _ in range(50)]
        sent = await asyncio.gather(*(closed_by_server(reader) for reader, _ in connections))
        for _, writer in connections:
            writer.close()
    assert sent == [b""] * 50


async def test_headers_trickled_past_the_timeout_get_408_then_close(store: Store) -> None:
    async with serving(real_app(store), ListenerLimits(header_timeout=0.5)) as port:
        reader, writer = await connect(port)
        closing = asyncio.create_task(closed_by_server(reader))
        # one byte at a time: data keeps arriving, the headers never complete
        for byte in HEAD.encode() * 10:
            if closing.done():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
        raw = await closing
        writer.close()
    status, headers, body = parse(raw)
    assert status == 408
    assert headers["connection"] == "close"
    assert json.loads(body)["error"] == "request_timeout"


async def test_next_request_on_a_kept_alive_connection_has_the_header_timeout(
    store: Store,
) -> None:
    limits = ListenerLimits(header_timeout=0.5, keepalive_timeout=60.0)
    async with serving(real_app(store), limits) as port:
        reader, writer = await connect(port)
        writer.write(f"{HEAD}\r\n".encode())
        status, _ = await read_response(reader)
        assert status == 200
        writer.write(HEAD.encode())  # the next request's headers, never finished
        status, _, _ = parse(await closed_by_server(reader))
        writer.close()
    assert status == 408


async def test_an_idle_kept_alive_connection_is_closed(store: Store) -> None:
    limits = ListenerLimits(header_timeout=60.0, keepalive_timeout=0.5)
    async with serving(real_app(store), limits) as port:
        reader, writer = await connect(port)
        for _ in range(3):  # kept alive between requests in quick succession
            writer.write(f"{HEAD}\r\n".encode())
            status, _ = await read_response(reader)
            assert status == 200
        rest = await closed_by_server(reader)
        writer.close()
    assert rest == b""


async def test_the_api_works_through_the_listener(store: Store) -> None:
    async with (
        serving(real_app(store), ListenerLimits()) as port,
        aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http,
    ):
        for _ in range(3):  # one pooled keep-alive connection
            async with http.get("/healthz") as response:
                assert response.status == 200
        url = "/client/acme/call_control_group/"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with http.put(url, json={"allow_all": True}, headers=auth) as response:
            assert response.status == 200
        async with http.get("/nowhere") as response:
            assert response.status == 404
            assert (await response.json())["error"] == "not_found"


async def test_idle_connections_never_lock_monitoring_out(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    limits = ListenerLimits(max_connections=MIN_HTTP_CONNECTIONS, header_timeout=60.0)
    async with serving(real_app(store), limits) as port:
        idle = [await connect(port) for _ in range(3 * MIN_HTTP_CONNECTIONS)]
        for path in ("/healthz", "/readyz", "/metrics"):
            raw = await exchange(
                port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            assert parse(raw)[0] in {200, 503}, raw[:200]  # /readyz: 503 = not ready, answered
        # the oldest idle connections made room; the newest are still open
        for reader, _ in idle[: 2 * MIN_HTTP_CONNECTIONS]:
            assert await closed_by_server(reader) == b""
        for _, writer in idle:
            writer.close()
    assert any("connection cap" in r.getMessage() for r in caplog.records)


async def test_over_the_cap_with_every_connection_busy_a_new_one_is_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()
    arrived = asyncio.Semaphore(0)

    async def slow(request: web.Request) -> web.Response:
        arrived.release()
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/slow", slow)
    limits = ListenerLimits(max_connections=MIN_HTTP_CONNECTIONS)
    async with serving(app, limits) as port:
        busy = [await connect(port) for _ in range(MIN_HTTP_CONNECTIONS)]
        for _, writer in busy:
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in busy:
            await asyncio.wait_for(arrived.acquire(), WITHIN)
        reader, writer = await connect(port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            rest = await closed_by_server(reader)
        except ConnectionResetError:  # closed with the request unread: a reset, never an answer
            rest = b""
        assert rest == b""
        writer.close()
        release.set()
        for reader, writer in busy:
            status, _ = await read_response(reader)
            assert status == 200
            writer.close()
    assert any("a request in progress on each" in r.getMessage() for r in caplog.records)


async def test_an_error_outside_the_middlewares_is_json_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app = web.Application()  # no error middleware: aiohttp's own error path answers
    app.router.add_get("/broken", broken)
    async with serving(app, ListenerLimits()) as port:
        raw = await exchange(port, b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = parse(raw)
    assert status == 500
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"] == "internal_error"
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)


@pytest.mark.parametrize(
    ("nofile", "agi", "reserve", "configured", "cap"),
    [
        (1 << 20, 2000, 64, 1000, 1000),  # plenty: the setting decides
        (400, 100, 64, 1000, 236),  # the limit decides: FastAGI's 100 and the reserve stay free
        (1024, 2000, 64, 1000, MIN_HTTP_CONNECTIONS),  # too low for FastAGI: HTTP keeps a minimum
        (400, 100, 64, 50, 50),
    ],
)
def test_connection_cap_leaves_fastagi_its_descriptors(
    nofile: int, agi: int, reserve: int, configured: int, cap: int
) -> None:
    assert http_connection_cap(nofile, agi, reserve, configured) == cap
    settings = Settings(agi_max_sessions=agi, fd_reserve=reserve, http_max_connections=configured)
    assert http_limits(settings, nofile).max_connections == cap
