"""The FastAGI listener: limits, deadlines and lifecycle around the sans-IO protocol.

One ``AgiServer`` owns the listening sockets and every connection. Each connection (``_Link``) is a
non-blocking socket watched with ``loop.add_reader``: what it reads goes to ``AgiConnection``, and
it acts on the events. No asyncio transport or protocol objects: a FastAGI session is a few
hundred bytes in lock-step, and asyncio's transport machinery (a task per accepted connection,
``TCP_NODELAY`` and two address lookups per socket, three scheduled callbacks per connection) cost
more CPU than the whole session otherwise (``bench/agi_bench.py --servers raw,bare`` compares the
two; the figures are in ``docs/performance.md``). ``TCP_NODELAY`` is not needed: the
server writes one command and waits for its reply, so Nagle never holds a write back. Linux (and
any Unix) event loops, asyncio's own and uvloop, offer ``add_reader``; Windows' proactor does not.

Once the environment is complete, a session takes one of two paths:

- **Quick**: a handler that offers ``prepare()`` (``QuickHandler``) may answer from the
  environment alone with a fixed list of commands (one, nearly always); the link writes the
  first at once, in the read callback, each next one on the reply to the one before, and after
  the last reply calls the answer's ``finish()`` and closes. No task, no coroutine, no future:
  the policy routes (a decision from memory, answered by one ``EXEC MSet``) cost the event loop
  nothing beyond the connection's own callbacks.
- **Task**: otherwise (``prepare()`` returns ``None``, or the handler has none), one task runs the
  session handler with an ``AgiSession`` for as many commands as it needs.

What a misbehaving peer can cost is bounded: at most ``max_sessions`` connections (more are
answered ``failure`` and closed at once, so the dialplan sees ``AGISTATUS=FAILURE``), the
environment must arrive within ``env_timeout`` and each reply within ``reply_timeout``, lines and
the environment are size-capped by the parser. Any breach closes that one connection with one
log line; nothing else waits on it. Shutdown: stop accepting, let the connections in flight finish
within ``shutdown_grace`` seconds, then cancel the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum, auto
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from callgate.agi.protocol import (
    CLOSED,
    NEED_DATA,
    AgiConnection,
    AgiEnvironment,
    AgiProtocolError,
    Reply,
)
from callgate.agi.session import AgiConnectionLost, AgiSession, AgiSessionError, AgiTimeout
from callgate.metrics import Metrics

if TYPE_CHECKING:
    from callgate.config import Settings

log = logging.getLogger(__name__)

SessionHandler = Callable[[AgiSession], Awaitable[None]]


class QuickAnswer(Protocol):
    """A session answered by one command decided from the environment alone."""

    @property
    def line(self) -> bytes:
        """The encoded command (``encode_command``), written as soon as the environment is in."""
        ...

    @property
    def more(self) -> tuple[bytes, ...]:
        """Commands sent after it, each on the reply to the one before (usually none)."""
        ...

    def finish(self) -> None:
        """Called exactly once when the session ends: after the reply, or when the connection
        failed, timed out or was shut down before it. Must not raise."""
        ...


@runtime_checkable
class QuickHandler(Protocol):
    """A session handler that can also answer some sessions without a task."""

    def __call__(self, session: AgiSession) -> Awaitable[None]: ...

    def prepare(self, environment: AgiEnvironment) -> QuickAnswer | None:
        """The one-command answer for ``environment``, or ``None`` to run ``__call__`` instead."""
        ...


OVERLOAD_REPLY: Final = b"failure\n"
"""Asterisk ends the AGI with AGISTATUS=FAILURE on a line starting ``failure``."""
_OVERLOAD_LINGER: Final = 1.0
"""Seconds a refused connection may stay half-closed while Asterisk reads ``failure``."""
_READ_SIZE: Final = 65536
_ACCEPTS_PER_CALL: Final = 100
"""Connections taken from the kernel's queue per readiness callback (asyncio takes the backlog)."""
_ACCEPT_PAUSE: Final = 1.0
"""Seconds accepting pauses when the process is out of file descriptors (as asyncio does)."""
_RESOURCE_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_now: Final = time.monotonic
"""The links' clock for deadlines and durations: ``loop.time()`` is this on asyncio's loops,
called through a Python method (uvloop's ticks in whole milliseconds)."""


@dataclass(frozen=True, slots=True)
class AgiConfig:
    host: str = "127.0.0.1"
    port: int = 4573
    max_sessions: int = 2000
    env_timeout: float = 5.0
    reply_timeout: float = 10.0
    max_line: int = 8192
    max_env: int = 65536
    shutdown_grace: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> AgiConfig:
        host, port = settings.agi_address
        return cls(
            host=host,
            port=port,
            max_sessions=settings.agi_max_sessions,
            env_timeout=settings.agi_env_timeout,
            reply_timeout=settings.agi_reply_timeout,
            max_line=settings.agi_max_line,
            max_env=settings.agi_max_env,
            shutdown_grace=settings.shutdown_grace,
        )


class SessionOutcome(StrEnum):
    """How a FastAGI session ended: the ``callgate_agi_sessions{outcome}`` counter's values."""

    COMPLETED = "completed"
    OVERLOAD = "overload"
    PROTOCOL_ERROR = "protocol_error"
    TIMEOUT = "timeout"
    DISCONNECTED = "disconnected"
    ERROR = "error"
    CANCELLED = "cancelled"


_PEER_ENDS: Final = frozenset({SessionOutcome.COMPLETED, SessionOutcome.DISCONNECTED})
"""A handler's own ends that, on an ``ABANDONED`` link, give way to what ended the connection."""


class AgiServer:
    def __init__(self, config: AgiConfig, handler: SessionHandler, metrics: Metrics) -> None:
        self.config = config
        self.handler = handler
        self.prepare = handler.prepare if isinstance(handler, QuickHandler) else None
        self._metrics = metrics
        # Resolved once: a labelled child per outcome, not a lookup per session.
        self._outcomes = {
            outcome: metrics.agi_sessions.labels(outcome) for outcome in SessionOutcome
        }
        self._links: set[_Link] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._listeners: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._resume: asyncio.TimerHandle | None = None
        # Deadlines are checked by one periodic sweep rather than a timer per read: a timer
        # armed and cancelled twice per session costs more than the session's own parsing.
        self._tick = min(max(min(config.env_timeout, config.reply_timeout) / 10, 0.01), 0.5)
        # Read when scraped, instead of an inc() and a dec() on every session.
        metrics.agi_active.set_function(lambda: len(self._links))

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._listeners
        return int(self._listeners[0].getsockname()[1])

    @property
    def active(self) -> int:
        return len(self._links)

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        # A burst of AGI() calls connects at once; let the kernel queue them.
        backlog = max(128, self.config.max_sessions)
        self._listeners = await _listen(loop, self.config.host, self.config.port, backlog)
        for listener in self._listeners:
            loop.add_reader(listener.fileno(), self._accept, listener)
        self._accepting = True
        self._sweeper = loop.call_later(self._tick, self._sweep)
        log.info(
            "FastAGI listening on %s:%d (at most %d sessions)",
            self.config.host,
            self.port,
            self.config.max_sessions,
        )

    async def stop(self) -> None:
        """Stop accepting, wait for the sessions in flight (bounded), then cancel the rest."""
        self._accepting = False
        self._close_listeners()
        if self._links:
            log.info("FastAGI: waiting for %d sessions in flight", len(self._links))
            try:
                await asyncio.wait_for(self._idle.wait(), self.config.shutdown_grace)
            except TimeoutError:
                log.warning(
                    "FastAGI: cancelling %d sessions after the grace period", len(self._links)
                )
        tasks = [task for link in list(self._links) if (task := link.abort()) is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _close_listeners(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        for listener in self._listeners:
            if self._loop is not None and listener.fileno() >= 0:
                self._loop.remove_reader(listener.fileno())
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        assert self._loop is not None
        # socket.accept() is this call plus a socket built from the listener's family and type
        # read through IntEnum conversions: a tenth of a session's CPU at 1,000 sessions/s.
        accept = listener._accept  # type: ignore[attr-defined]
        family, kind = int(listener.family), int(listener.type)
        for _ in range(_ACCEPTS_PER_CALL):
            try:
                fd, address = accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # nothing more queued, or a peer that gave up while queued
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    raise
                # Out of descriptors: the listener stays readable, so stop watching it for a
                # while instead of spinning on it (as asyncio's own accept loop does).
                log.error(  # noqa: TRY400 - a known condition: its message says it all
                    "FastAGI: cannot accept (%s); pausing for %gs", exc, _ACCEPT_PAUSE
                )
                for each in self._listeners:
                    self._loop.remove_reader(each.fileno())
                self._resume = self._loop.call_later(_ACCEPT_PAUSE, self._resume_accepting)
                return
            sock = socket.socket(family, kind, 0, fd)
            sock.setblocking(False)
            _Link(self, self._loop, sock, address).start()

    def _resume_accepting(self) -> None:
        self._resume = None
        if self._accepting and self._loop is not None:
            for listener in self._listeners:
                self._loop.add_reader(listener.fileno(), self._accept, listener)

    # -- called by the links

    def admit(self, link: _Link) -> bool:
        if not self._accepting or len(self._links) >= self.config.max_sessions:
            return False
        self._links.add(link)
        self._idle.clear()
        return True

    def forget(self, link: _Link, outcome: SessionOutcome) -> None:
        self._outcomes[outcome].inc()
        if link in self._links:
            self._links.discard(link)
            if not self._links:
                self._idle.set()

    def observe(self, seconds: float) -> None:
        self._metrics.agi_session_seconds.observe(seconds)

    def _sweep(self) -> None:
        assert self._loop is not None
        now = _now()
        for link in [link for link in self._links if 0 < link.deadline <= now]:
            link.expire()
        self._sweeper = self._loop.call_later(self._tick, self._sweep)


async def _listen(
    loop: asyncio.AbstractEventLoop, host: str, port: int, backlog: int
) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to, as ``loop.create_server``
    makes them (``SO_REUSEADDR``, IPv6 sockets IPv6-only), non-blocking."""
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {address!r}: {exc.strerror}") from exc
            sock.listen(backlog)
            sock.setblocking(False)
            if port == 0:  # an ephemeral port (tests): the first address only
                break
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    if not listeners:
        raise OSError(f"{host!r} resolves to no address to listen on")
    return listeners


class LinkState(IntEnum):
    """Where one FastAGI connection's session is (``_Link.state``); the rules are ``_Link``'s.

    An ``IntEnum``: its members hash as ints do, in C (an ``Enum`` member's ``__hash__`` is a
    Python call, several per session on the quick path)."""

    AWAITING_ENVIRONMENT = auto()
    ANSWERING = auto()
    RUNNING = auto()
    ABANDONED = auto()
    FINISHED = auto()


_NEXT_STATES: Final = {
    LinkState.AWAITING_ENVIRONMENT: frozenset(
        {LinkState.ANSWERING, LinkState.RUNNING, LinkState.FINISHED}
    ),
    LinkState.ANSWERING: frozenset({LinkState.FINISHED}),
    LinkState.RUNNING: frozenset({LinkState.ABANDONED, LinkState.FINISHED}),
    LinkState.ABANDONED: frozenset({LinkState.FINISHED}),
    LinkState.FINISHED: frozenset(),
}
"""Every transition a link may make (``_Link._move`` refuses any other)."""

_ENDED: Final = frozenset({LinkState.ABANDONED, LinkState.FINISHED})
"""States in which nothing the peer sends matters any more."""


class _Link:
    """One connection: bytes in -> ``AgiConnection`` -> environment / replies; commands out.

    Its session is in one ``LinkState``; the transitions (``_NEXT_STATES``), as h11 states its
    rules:

    - ``AWAITING_ENVIRONMENT``: from the accept, until the environment is complete (deadline
      ``env_timeout``). Then ``ANSWERING`` when the handler's ``prepare()`` answered it, else
      ``RUNNING``.
    - ``ANSWERING`` (quick path): the answer's commands go out one by one, each on the reply to
      the one before (deadline ``reply_timeout`` each). After the last reply: ``FINISHED``.
    - ``RUNNING`` (task path): the handler's task runs; its end finishes the session. When the
      connection ends under it (a deadline, a protocol error) it is ``ABANDONED``: the outcome
      is known, the waiting command woken with the error, and the task's end finishes the
      session with that outcome (the server still counts the link until then, so shutdown waits
      for the handler).
    - ``FINISHED``: ``_finish(outcome)`` ran — the one place a session ends, whatever ended it
      (the last reply, the peer leaving, a deadline, a protocol error, shutdown, overload, the
      handler's end or failure): the answer's ``finish()`` called, the outcome counted, the
      duration observed, the link forgotten by the server. It runs once; every later end is a
      no-op. The socket closes separately: at once, or once its last bytes have left.

    Every transition goes through ``_move``, every end through ``_finish``.
    """

    __slots__ = (
        "_address",
        "_agi",
        "_closed",
        "_fd",
        "_linger",
        "_loop",
        "_outcome",
        "_outgoing",
        "_pending",
        "_quick",
        "_server",
        "_sock",
        "_started",
        "_task",
        "_unsent",
        "_waiter",
        "deadline",
        "state",
    )

    def __init__(
        self,
        server: AgiServer,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        address: object,
    ) -> None:
        self._server = server
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._address = address
        config = server.config
        self._agi = AgiConnection(max_line=config.max_line, max_env=config.max_env)
        self.state = LinkState.AWAITING_ENVIRONMENT
        self._closed = False
        """The socket is closed (the session may still be running: its task finds out)."""
        self._unsent = b""
        """Bytes the kernel did not take yet (written when the socket is writable again)."""
        self._linger: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[Reply] | None = None
        """``RUNNING``: the command awaiting its reply."""
        self._task: asyncio.Task[None] | None = None
        self._quick: QuickAnswer | None = None
        """``ANSWERING``: the answer, finished by ``_finish``."""
        self._pending: tuple[bytes, ...] = ()
        """``ANSWERING``: its commands not sent yet."""
        self._outgoing: bytes | None = None
        """``ANSWERING``: the next command, until the bytes received so far are all read."""
        self._outcome = SessionOutcome.COMPLETED
        """``ABANDONED``: what ended the connection."""
        self._started = 0.0
        self.deadline = 0.0
        """``_now()`` by which the awaited bytes must arrive; 0 while none are awaited."""

    def start(self) -> None:
        if not self._server.admit(self):
            self._finish(SessionOutcome.OVERLOAD)
            # Half-close and drain until Asterisk closes: closing with its environment unread
            # would send a reset, which can destroy the `failure` line before Asterisk reads it.
            self._write(OVERLOAD_REPLY)
            if not self._closed:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_WR)
                self._loop.add_reader(self._fd, self._drain)
                self._linger = self._loop.call_later(_OVERLOAD_LINGER, self._release)
            log.warning(
                "FastAGI %s: refused (%d sessions open, limit %d); answered failure",
                self._peer(),
                self._server.active,
                self._server.config.max_sessions,
            )
            return
        self.deadline = _now() + self._server.config.env_timeout
        self._loop.add_reader(self._fd, self._readable)

    # -- the state

    def _move(self, state: LinkState) -> None:
        if state not in _NEXT_STATES[self.state]:
            raise RuntimeError(f"FastAGI link: no way from {self.state.name} to {state.name}")
        self.state = state

    def _finish(self, outcome: SessionOutcome) -> None:
        """End the session (see the class docstring); once, whatever calls it."""
        was = self.state
        if was is LinkState.FINISHED:
            return
        self._move(LinkState.FINISHED)
        self.deadline = 0.0
        quick, self._quick, self._outgoing, self._pending = self._quick, None, None, ()
        if quick is not None:
            try:
                quick.finish()
            except Exception:
                log.exception("FastAGI %s: finishing the session failed", self._peer())
        self._server.forget(self, outcome)
        if was is not LinkState.AWAITING_ENVIRONMENT:
            self._server.observe(_now() - self._started)

    # -- CommandLink, for the session

    @property
    def dead(self) -> bool:
        return self._agi.dead

    @property
    def hangup_seen(self) -> bool:
        return self._agi.hangup_seen

    @property
    def reply_timeout(self) -> float:
        return self._server.config.reply_timeout

    async def roundtrip(self, line: bytes, reply_within: float) -> Reply:
        if self.state is not LinkState.RUNNING or self._closed:
            raise AgiConnectionLost("the connection is closed")
        try:
            self._write(self._agi.send(line))
        except AgiProtocolError as exc:
            raise AgiSessionError(str(exc)) from exc
        if self._closed:
            raise AgiConnectionLost("the connection was closed")
        waiter = self._waiter = self._loop.create_future()
        self.deadline = _now() + reply_within
        try:
            reply: Reply = await waiter
            return reply
        finally:
            self.deadline = 0.0
            self._waiter = None

    # -- the socket

    def _readable(self) -> None:
        try:
            data = self._sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # a reset: the peer is gone
            self._release()
            self._lost(f"the connection failed: {exc.strerror or exc}")
            return
        if data:
            self.data_received(data)
        else:
            self.eof_received()

    def _write(self, data: bytes) -> None:
        """Write ``data`` now, or as soon as the kernel takes it (never blocks)."""
        if self._closed:
            return
        if self._unsent:
            self._unsent += data
            return
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._release()
            self._lost(f"the connection failed: {exc.strerror or exc}")
            return
        if sent < len(data):
            self._unsent = data[sent:]
            self._loop.add_writer(self._fd, self._writable)

    def _writable(self) -> None:
        try:
            sent = self._sock.send(self._unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._release()
            self._lost(f"the connection failed: {exc.strerror or exc}")
            return
        self._unsent = self._unsent[sent:]
        if not self._unsent:
            self._loop.remove_writer(self._fd)
            if self.state is LinkState.FINISHED:  # its last bytes were queued
                self._release()

    def _drain(self) -> None:
        """A refused connection: read and drop until Asterisk closes (or the linger ends)."""
        try:
            data = self._sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._release()

    def _close(self) -> None:
        """End the connection once what is written has left (at once, nearly always)."""
        if not self._unsent:
            self._release()
        elif self._linger is None:  # _writable releases it; a peer that never reads, this
            self._loop.remove_reader(self._fd)
            timeout = self._server.config.reply_timeout
            self._linger = self._loop.call_later(timeout, self._release)

    def _release(self) -> None:
        """Close the socket now, dropping anything unsent."""
        if self._closed:
            return
        self._closed = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._loop.remove_reader(self._fd)
        if self._unsent:
            self._loop.remove_writer(self._fd)
            self._unsent = b""
        self._sock.close()

    # -- what the peer did

    def data_received(self, data: bytes) -> None:
        if self.state in _ENDED:
            return
        try:
            self._agi.receive_data(data)
            self._pump()
        except AgiProtocolError as exc:
            self._fail(SessionOutcome.PROTOCOL_ERROR, str(exc))

    def eof_received(self) -> None:
        if self.state not in _ENDED:
            try:
                self._agi.receive_data(b"")
                self._pump()
            except AgiProtocolError as exc:
                self._fail(SessionOutcome.PROTOCOL_ERROR, str(exc))
        self._release()  # the peer has closed its side: close ours too
        self._lost("the connection was closed")

    def _lost(
        self, reason: str, unstarted: str = "closed before the environment was complete"
    ) -> None:
        """The peer is gone: wake the waiting command; finish unless a handler runs (its
        command fails, and its end finishes the session)."""
        self._wake(AgiConnectionLost(reason))
        if self.state is LinkState.ANSWERING:
            log.warning("FastAGI %s: session ended early: %s", self._peer(), reason)
            self._finish(SessionOutcome.DISCONNECTED)
        elif self.state is LinkState.AWAITING_ENVIRONMENT:
            self._finish(SessionOutcome.DISCONNECTED)
            log.warning("FastAGI %s: %s", self._peer(), unstarted)

    def _fail(self, outcome: SessionOutcome, reason: str) -> None:
        """Close this connection because of the peer (a deadline, a protocol error)."""
        if self.state in _ENDED:
            return
        log.warning("FastAGI %s: %s; connection closed", self._peer(), reason)
        if self.state is LinkState.RUNNING:
            self._outcome = outcome
            self._move(LinkState.ABANDONED)
        else:
            self._finish(outcome)
        error: AgiSessionError = (
            AgiTimeout(reason) if outcome == SessionOutcome.TIMEOUT else AgiConnectionLost(reason)
        )
        self._wake(error)
        self._release()

    # -- internals

    def _pump(self) -> None:
        while True:
            event = self._agi.next_event()
            if event is NEED_DATA:
                if self._outgoing is not None:
                    self._send_next()
                return
            if isinstance(event, Reply):
                if self.state is LinkState.ANSWERING:
                    if self._answer_replied(event):
                        return
                    continue
                waiter = self._waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(event)
            elif isinstance(event, AgiEnvironment):
                self._start_session(event)
            elif event is CLOSED:
                if self.state is not LinkState.RUNNING:
                    self._close()
                self._lost("Asterisk closed the connection", "closed without an environment")
                return
            # HANGUP: recorded in the protocol state (dead), nothing to wake

    def _start_session(self, environment: AgiEnvironment) -> None:
        self.deadline = 0.0
        self._started = _now()
        prepare = self._server.prepare
        if prepare is not None:
            try:
                quick = prepare(environment)
            except Exception:
                log.exception("FastAGI %s: preparing the answer failed", self._peer())
                quick = None  # the handler's __call__ still answers (and denies)
            if quick is not None:
                self._move(LinkState.ANSWERING)
                self._quick = quick
                self._pending = quick.more
                # Written once what was received with the environment is read: a line that came
                # before the command is unsolicited (the protocol refuses it), not its reply.
                self._outgoing = quick.line
                return
        self._move(LinkState.RUNNING)
        self._task = self._loop.create_task(self._run(AgiSession(self, environment)))

    def _send_next(self) -> None:
        line, self._outgoing = self._outgoing, None
        if line is None or self._closed or self.state is not LinkState.ANSWERING:
            return
        self._write(self._agi.send(line))
        if not self._closed:
            self.deadline = _now() + self._server.config.reply_timeout

    def _answer_replied(self, reply: Reply) -> bool:
        """A reply to the quick answer's command: the next one, or the end (returns True)."""
        self.deadline = 0.0
        if reply.code != 200 or reply.result == "-2":  # as AgiSession's checks would raise
            log.warning(
                "FastAGI %s: session ended early: the answer got %d %s",
                self._peer(),
                reply.code,
                reply.text,
            )
            outcome = SessionOutcome.DISCONNECTED
        elif self._pending:
            # Sent once what was received with this reply is read, as the first command.
            self._outgoing, self._pending = self._pending[0], self._pending[1:]
            return False
        else:
            outcome = SessionOutcome.COMPLETED
        self._finish(outcome)
        self._close()
        return True

    async def _run(self, session: AgiSession) -> None:
        outcome = SessionOutcome.COMPLETED
        try:
            await self._server.handler(session)
        except AgiSessionError as exc:
            outcome = SessionOutcome.DISCONNECTED
            if self.state is not LinkState.ABANDONED:  # else _fail() has logged it
                log.warning("FastAGI %s: session ended early: %s", self._peer(), exc)
        except asyncio.CancelledError:
            outcome = SessionOutcome.CANCELLED
            raise
        except Exception:
            outcome = SessionOutcome.ERROR
            log.exception("FastAGI %s: session handler failed", self._peer())
        finally:
            if self.state is LinkState.ABANDONED and outcome in _PEER_ENDS:
                outcome = self._outcome  # what ended the connection, not what the handler saw
            self._finish(outcome)
            self._close()

    def expire(self) -> None:
        """Called by the server's sweep once ``deadline`` has passed."""
        self.deadline = 0.0
        if self.state is LinkState.AWAITING_ENVIRONMENT:
            timeout = self._server.config.env_timeout
            self._fail(SessionOutcome.TIMEOUT, f"no environment within {timeout}s")
        else:
            self._fail(SessionOutcome.TIMEOUT, "no reply within the deadline")

    def _wake(self, error: AgiSessionError) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def abort(self) -> asyncio.Task[None] | None:
        """Shutdown after the grace period: drop the connection, cancel its session."""
        if self._task is not None and not self._task.done():
            self._task.cancel()  # its end finishes the session, cancelled
        else:
            self._finish(SessionOutcome.CANCELLED)
        self._release()
        return self._task

    def _peer(self) -> str:
        address = self._address
        if isinstance(address, tuple) and len(address) >= 2:
            return f"{address[0]}:{address[1]}"
        return str(address)
