"""The HTTP listener: aiohttp's server with the bounds it lacks, so a slow or broken client costs
the daemon one descriptor for a bounded time and never a secret in the log.

What aiohttp (3.11 to 3.14) leaves open, and what this module adds:

- **Unfinished request headers are never timed out** (only idle keep-alive time is, and only
  from 3.12 on from the first byte). Here: a connection that has not sent complete request
  headers within ``header_timeout`` seconds of opening, or of its first byte after a response,
  is closed; one that had sent part of them is answered ``408 request_timeout`` first.
- **No cap on connections.** Here: at most ``max_connections``. A connection over the cap closes
  the longest-idle one (no request in progress: silent, part-way through its headers, or kept
  alive between requests), so idle clients can never lock a monitoring scrape of ``/healthz``
  or ``/metrics`` out; when every connection has a request in progress, the new one is closed
  at once, before a byte is read (a 503 would need its request read first, which is what the
  cap is there to avoid paying for).
- **A malformed request line or header is logged raw** (the bearer token with it) in an ERROR
  traceback, and answered in text/plain with the raw line echoed. Here: ``400 bad_request`` in
  the API's JSON error shape, and one short WARNING naming the peer and the kind of error, at
  most one per ``report_interval`` seconds (the ones held back are counted in the next).

How: ``start_http`` runs the application on ``GuardedRunner``, whose server hands every
connection to ``GuardedHandler``. What they rely on from aiohttp, all present from 3.11 to 3.14
(tests/http/test_http_listener.py checks the behaviour on whichever version is installed):
``BaseRunner._make_server`` (the runners' own extension point), ``web.Server``'s public
``request_handler``/``request_factory``/``handler_cancellation`` and its ``connection_made``/
``connection_lost`` calls from the handler, and ``web.RequestHandler``'s ``connection_made``,
``connection_lost``, ``data_received``, ``finish_response``, ``handle_error`` and
``force_close``. The request factory is called once a request's headers are parsed (or found
malformed), which is what ends the header timer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import RawRequestMessage
from aiohttp.streams import StreamReader

from callgate.http.errors import error_response

log = logging.getLogger(__name__)

MIN_HTTP_CONNECTIONS: Final = 8
"""The cap never goes below this, however few descriptors there are: the API stays reachable."""


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    max_connections: int = 1000
    report_interval: float = 60.0
    """Seconds between two WARNINGs of one kind (malformed requests, cap reached, ...)."""


def http_connection_cap(
    nofile: int, agi_max_sessions: int, fd_reserve: int, configured: int
) -> int:
    """The HTTP connection cap that leaves FastAGI its descriptors: ``configured`` at most,
    and at most what ``nofile`` leaves after ``agi_max_sessions`` and ``fd_reserve``."""
    return max(MIN_HTTP_CONNECTIONS, min(configured, nofile - agi_max_sessions - fd_reserve))


class RateLimitedWarning:
    """One WARNING per ``interval`` seconds at most; the ones held back are counted in the next.

    A flood of bad requests must not become a flood of log lines (nor a disk-filling attack)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: float | None = None
        self._held = 0

    def __call__(self, message: str, *args: object) -> None:
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            self._held += 1
            return
        self._last = now
        held, self._held = self._held, 0
        if held:
            log.warning(message + " (and %d more since the last report)", *args, held)
        else:
            log.warning(message, *args)


def _timeout_answer(header_timeout: float) -> bytes:
    """The 408, written by hand: no request object exists before the headers are in."""
    body = json.dumps(
        {
            "error": "request_timeout",
            "message": f"The request headers did not arrive within {header_timeout:g} seconds.",
            "details": [],
        }
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedHandler(web.RequestHandler):
    """One HTTP connection: aiohttp's, plus the header timer and JSON answers to bad requests."""

    __slots__ = ("_awaiting_headers", "_guard", "_header_timer", "_partial")

    def __init__(self, guard: GuardedServer, **kwargs: Any) -> None:
        super().__init__(guard, **kwargs)
        self._guard = guard
        self._header_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True
        """No request in progress: the next bytes are a request line and headers."""
        self._partial = False
        """Bytes of the next request arrived, but not all its headers."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._guard.admit(self):
            self.force_close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_timer()
        self._guard.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self._awaiting_headers:
            self._partial = True
            # After a response the connection idles under keepalive_timeout; the header
            # deadline starts again with the next request's first byte.
            if self._header_timer is None:
                self._arm_header_timer()
        super().data_received(data)

    def headers_received(self) -> None:
        """Called by the server's request factory: a request (or a parse error) is in."""
        self._disarm_header_timer()
        self._awaiting_headers = False
        self._partial = False
        self._guard.mark_busy(self)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        result = await super().finish_response(request, resp, start_time)
        self._awaiting_headers = True
        self._guard.mark_idle(self)
        return result

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse or serve, as JSON, logged safely.

        ``exc`` and ``message`` of a parse error quote the raw line, so neither is logged nor
        sent back: only the peer and the exception's type."""
        if request.writer.output_size > 0:
            # As aiohttp: part of a response is out, another cannot follow on this connection.
            raise ConnectionError("a response is already under way; cannot send an error")
        if status < 500:
            self._guard.report_malformed(request.remote, type(exc).__name__ if exc else "?")
            response = error_response(
                status,
                "bad_request",
                "The request could not be read: a malformed request line or header, or one"
                " longer than 8190 bytes.",
            )
        else:
            self.log_exception("error handling a request from %s", request.remote, exc_info=exc)
            code = "timeout" if status == 504 else "internal_error"
            response = error_response(status, code, "The request could not be answered.")
        response.force_close()
        return response

    def _arm_header_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._header_timer = loop.call_later(self._guard.limits.header_timeout, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        transport = self.transport
        if not self._awaiting_headers or transport is None:
            return
        if self._partial:
            peer = self.peername
            self._guard.report_slow(peer[0] if isinstance(peer, tuple) else peer)
            transport.write(_timeout_answer(self._guard.limits.header_timeout))
        # close() sends what is buffered (the 408) before the FIN.
        self.force_close()


class GuardedServer(web.Server):
    """aiohttp's connection manager, plus the connection cap and who is idle."""

    def __init__(
        self, plain: web.Server, limits: ListenerLimits, *, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(
            plain.request_handler,
            request_factory=self._start_request,
            handler_cancellation=plain.handler_cancellation,
            loop=loop,
        )
        self.limits = limits
        self._plain_factory = plain.request_factory
        self._handler_loop = loop
        self._live: set[GuardedHandler] = set()
        self._idle: dict[GuardedHandler, None] = {}
        """Connections without a request in progress, longest idle first (insertion order)."""
        self._warn_malformed = RateLimitedWarning(limits.report_interval)
        self._warn_slow = RateLimitedWarning(limits.report_interval)
        self._warn_cap = RateLimitedWarning(limits.report_interval)

    def __call__(self) -> GuardedHandler:
        return GuardedHandler(
            self,
            loop=self._handler_loop,
            keepalive_timeout=self.limits.keepalive_timeout,
            access_log=None,
        )

    @property
    def open_connections(self) -> int:
        return len(self._live)

    def admit(self, handler: GuardedHandler) -> bool:
        """Take a new connection in, making room by closing the longest-idle one if needed."""
        if len(self._live) >= self.limits.max_connections:
            victim = next(iter(self._idle), None)
            if victim is None:
                self._warn_cap(
                    "HTTP connection cap (%d) reached with a request in progress on each:"
                    " closed a new connection",
                    self.limits.max_connections,
                )
                return False
            self.forget(victim)
            victim.force_close()
            self._warn_cap(
                "HTTP connection cap (%d) reached: closed the longest-idle connection",
                self.limits.max_connections,
            )
        self._live.add(handler)
        self._idle[handler] = None
        return True

    def forget(self, handler: GuardedHandler) -> None:
        self._live.discard(handler)
        self._idle.pop(handler, None)

    def mark_busy(self, handler: GuardedHandler) -> None:
        self._idle.pop(handler, None)

    def mark_idle(self, handler: GuardedHandler) -> None:
        if handler in self._live:
            self._idle.pop(handler, None)
            self._idle[handler] = None

    def report_malformed(self, peer: str | None, kind: str) -> None:
        self._warn_malformed("answered 400 to a malformed HTTP request from %s (%s)", peer, kind)

    def report_slow(self, peer: str | None) -> None:
        self._warn_slow(
            "closed an HTTP connection from %s: its request headers took over %gs",
            peer,
            self.limits.header_timeout,
        )

    def _start_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if isinstance(protocol, GuardedHandler):
            protocol.headers_received()
        return self._plain_factory(message, payload, protocol, writer, task)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` serving through ``GuardedServer``."""

    def __init__(self, app: web.Application, limits: ListenerLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        # The plain server runs the application's start-up and holds its request handler
        # and factory; the guarded one serves with them.
        plain = await super()._make_server()
        return GuardedServer(plain, self.limits, loop=asyncio.get_running_loop())
