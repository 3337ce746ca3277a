"""Our Manager client: one connection to Asterisk's AMI, kept up, with actions routed by ActionID.

Why not panoramisk: it decodes every TCP read on its own (``bytes.decode(encoding, "ignore")``), so
a UTF-8 character split across two reads silently disappears; its actions have no timeout, its
Ping never checks for an answer (a silent half-dead connection is never noticed), it reconnects
every 2 s forever with no backoff (bad credentials included), and after a reconnect it replays
actions that were in flight (a Hangup among them). ``tests/ami/test_panoramisk_defects.py`` shows
the first defect against panoramisk itself.

Conduct, one ``ManagerClient`` per PBX (``ManagerConfig.pbx``):
- one reader task per connection; it feeds ``protocol.ManagerParser`` and routes each message:
  a known ``ActionID`` to the action waiting for it, any other event to ``on_event``;
- ``Login`` with ``Events: call`` (ChanSpyStart/Stop and Hangup are all class ``call``);
- a watchdog sends ``Ping`` every ``ping_interval`` s; no answer within ``ping_timeout`` s and the
  connection is dropped and replaced, even though TCP still looks open;
- a lost connection is retried with exponential backoff and full jitter up to ``backoff_max``;
  refused credentials are logged once as an error, reported as ``auth_failed`` and retried only
  every ``auth_retry`` s (Asterisk sleeps 1 s per failure and logs each: never hammer it);
- actions written while disconnected fail at once with ``ManagerUnavailableError`` (never queued and
  replayed later: a late Hangup is worse than none).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from callgate.ami.protocol import Banner, ManagerParser, Message, ProtocolError, format_action
from callgate.pbx import DEFAULT_PBX, PbxName
from callgate.pbx import ManagerState as ManagerState  # what ``ManagerClient.state`` returns

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class ManagerError(Exception):
    """An action could not be carried out over the Manager connection."""


class ManagerUnavailableError(ManagerError):
    """Not logged in to the Manager (or the connection dropped while the action waited)."""


class ActionTimeoutError(ManagerError):
    """Asterisk did not answer an action in time."""


class _AuthFailedError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    host: str
    port: int
    username: str
    secret: str = field(repr=False)
    events: str = "call"
    connect_timeout: float = 5.0
    login_timeout: float = 10.0
    action_timeout: float = 5.0
    ping_interval: float = 5.0
    ping_timeout: float = 3.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    auth_retry: float = 60.0
    max_line: int = 8192
    pbx: PbxName = DEFAULT_PBX
    """The PBX this Manager belongs to: the connection, its watchdog and the sessions tracked
    over it are that PBX's."""


EventHandler = Callable[[Message], None]
ConnectedHandler = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[tuple[Message, ...]]
    list_complete: str | None
    """For list actions: the event that ends the list (``CoreShowChannelsComplete``)."""
    messages: list[Message] = field(default_factory=list)


class ManagerClient:
    def __init__(
        self,
        config: ManagerConfig,
        *,
        on_event: EventHandler,
        on_connected: ConnectedHandler | None = None,
        on_state: Callable[[ManagerState], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._on_event = on_event
        self._on_connected = on_connected
        self._on_state = on_state
        self._rng = rng or random.Random()
        self._state = ManagerState.DISCONNECTED
        self._writer: asyncio.StreamWriter | None = None
        self._logged_in = False
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._session_started = False

    @property
    def state(self) -> ManagerState:
        return self._state

    @property
    def pbx(self) -> PbxName:
        return self._config.pbx

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"ami-client[{self.pbx}]")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._set_state(ManagerState.DISCONNECTED)  # started again, it logs in anew

    # ---------------------------------------------------------------- actions

    def submit(
        self,
        action: str,
        headers: Iterable[tuple[str, str]] = (),
        *,
        list_complete: str | None = None,
    ) -> asyncio.Future[tuple[Message, ...]]:
        """Write an action now; the future gets its response (then the list items, if any).

        Raises ``ManagerUnavailableError`` when not logged in: nothing is queued for later.
        """
        if not self._logged_in:
            raise ManagerUnavailableError(f"{action}: not connected to the Asterisk Manager")
        try:
            return self._write(action, headers, list_complete)
        except ProtocolError as exc:
            raise ManagerError(str(exc)) from exc

    async def send_action(
        self,
        action: str,
        headers: Iterable[tuple[str, str]] = (),
        *,
        list_complete: str | None = None,
        within: float | None = None,
    ) -> tuple[Message, ...]:
        """Send an action and wait for its response (and list items): ``(response, *items)``."""
        future = self.submit(action, headers, list_complete=list_complete)
        return await self.wait(future, action, within)

    async def wait(
        self,
        future: asyncio.Future[tuple[Message, ...]],
        action: str,
        within: float | None = None,
    ) -> tuple[Message, ...]:
        limit = self._config.action_timeout if within is None else within
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
        try:
            async with asyncio.timeout(limit):
                return await asyncio.shield(future)
        except TimeoutError:
            future.cancel()
            raise ActionTimeoutError(f"{action}: no answer from Asterisk in {limit}s") from None

    def _write(
        self, action: str, headers: Iterable[tuple[str, str]], list_complete: str | None
    ) -> asyncio.Future[tuple[Message, ...]]:
        if self._writer is None:
            raise ManagerUnavailableError(f"{action}: the Manager connection is closed")
        action_id = f"cg-{next(self._ids)}"
        data = format_action(action, action_id, headers)
        future: asyncio.Future[tuple[Message, ...]] = asyncio.get_running_loop().create_future()
        pending = _Pending(future, list_complete)
        self._pending[action_id] = pending
        future.add_done_callback(lambda _: self._pending.pop(action_id, None))
        self._writer.write(data)
        return future

    def _route(self, message: Message) -> None:
        action_id = message.action_id
        pending = self._pending.get(action_id) if action_id is not None else None
        if pending is None:
            if message.event is not None:
                try:
                    self._on_event(message)
                except Exception:
                    # A handler's bug must not cost the connection (and a reconnect storm).
                    log.exception("handling Manager event %s failed", message.event)
            return
        if pending.future.done():
            return
        pending.messages.append(message)
        first = pending.messages[0]
        if pending.list_complete is None or not first.is_success:
            pending.future.set_result((first,))
        elif message.event == pending.list_complete:
            pending.future.set_result(tuple(pending.messages[:-1]))

    # ---------------------------------------------------------------- connection

    def _set_state(self, state: ManagerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_state is not None:
                self._on_state(state)

    async def _run(self) -> None:
        cfg = self._config
        failures = 0
        while True:
            self._session_started = False
            try:
                await self._connect_once()
            except _AuthFailedError as exc:
                self._report_auth_failure(str(exc))
                await asyncio.sleep(cfg.auth_retry)
                continue
            except (OSError, TimeoutError, ProtocolError, ManagerError) as exc:
                if self._session_started:
                    failures = 0  # it worked for a while: start the backoff again from the bottom
                self._set_state(ManagerState.DISCONNECTED)
                delay = self._backoff(failures)
                failures += 1
                log.warning(
                    "Asterisk Manager at %s:%s: %s; reconnecting in %.1fs",
                    cfg.host,
                    cfg.port,
                    str(exc) or type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
            except Exception:
                # A bug must not end live enforcement for good: log it and connect again.
                self._set_state(ManagerState.DISCONNECTED)
                log.exception("Asterisk Manager connection failed unexpectedly")
                await asyncio.sleep(self._backoff(failures))
                failures += 1

    def _report_auth_failure(self, message: str) -> None:
        cfg = self._config
        self._set_state(ManagerState.AUTH_FAILED)
        log.error(
            "Asterisk Manager at %s:%s refused the login of user %r (%s): check ami_user and"
            " ami_secret against manager.conf; live enforcement is off; next try in %.0fs",
            cfg.host,
            cfg.port,
            cfg.username,
            message or "no reason given",
            cfg.auth_retry,
        )

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with jitter: uniform in [initial/2, min(max, initial * 2^n)]."""
        cfg = self._config
        ceiling = min(cfg.backoff_max, cfg.backoff_initial * 2 ** min(failures, 32))
        return self._rng.uniform(cfg.backoff_initial / 2, max(ceiling, cfg.backoff_initial / 2))

    async def _connect_once(self) -> None:
        """One connection, from TCP connect to its end; always ends by raising why it ended."""
        cfg = self._config
        async with asyncio.timeout(cfg.connect_timeout):
            reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
        self._writer = writer
        banner: asyncio.Future[Banner] = asyncio.get_running_loop().create_future()
        reader_task = asyncio.create_task(
            self._read(reader, writer, banner), name=f"ami-reader[{self.pbx}]"
        )
        tasks: list[asyncio.Task[None]] = [reader_task]
        try:
            await self._until(banner, reader_task, cfg.login_timeout, "no banner")
            login = self._write("Login", self._login_headers(), None)
            (response,) = await self._until(login, reader_task, cfg.login_timeout, "no reply")
            if not response.is_success:
                raise _AuthFailedError(response.get("Message"))
            self._logged_in = True
            self._session_started = True
            self._set_state(ManagerState.CONNECTED)
            log.info("Asterisk Manager at %s:%s: logged in as %r", cfg.host, cfg.port, cfg.username)
            watchdog = asyncio.create_task(self._watchdog(), name=f"ami-watchdog[{self.pbx}]")
            tasks.append(watchdog)
            if self._on_connected is not None:
                tasks.append(
                    asyncio.create_task(self._after_login(), name=f"ami-after-login[{self.pbx}]")
                )
            done, _ = await asyncio.wait({reader_task, watchdog}, return_when="FIRST_COMPLETED")
            for task in done:
                task.result()  # raises what ended the session
            raise ManagerUnavailableError("connection closed by Asterisk")
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _login_headers(self) -> list[tuple[str, str]]:
        cfg = self._config
        return [("Username", cfg.username), ("Secret", cfg.secret), ("Events", cfg.events)]

    @staticmethod
    async def _until(
        step: asyncio.Future[_T], reader_task: asyncio.Task[None], within: float, what: str
    ) -> _T:
        """Wait for ``step``, but not past ``within`` seconds nor past the connection's end."""
        waiting: set[asyncio.Future[Any]] = {step, reader_task}
        done, _ = await asyncio.wait(waiting, timeout=within, return_when="FIRST_COMPLETED")
        if step in done:
            return step.result()
        if reader_task in done:
            reader_task.result()
            raise ManagerUnavailableError(f"connection closed by Asterisk ({what})")
        raise ManagerError(what)

    async def _after_login(self) -> None:
        assert self._on_connected is not None
        try:
            await self._on_connected()
        except ManagerError as exc:
            log.warning("after Manager login: %s", exc)
        except Exception:
            log.exception("after Manager login")

    async def _read(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        banner: asyncio.Future[Banner],
    ) -> None:
        parser = ManagerParser(max_line=self._config.max_line)
        try:
            while data := await reader.read(65536):
                for item in parser.feed(data):
                    if isinstance(item, Banner):
                        if not banner.done():
                            banner.set_result(item)
                    else:
                        self._route(item)
        finally:
            # The connection is over for everyone at once: no action may wait on it any more.
            if self._writer is writer:
                self._writer = None
                self._logged_in = False
            self._fail_pending()

    async def _watchdog(self) -> None:
        cfg = self._config
        while True:
            await asyncio.sleep(cfg.ping_interval)
            future = self._write("Ping", (), None)
            try:
                async with asyncio.timeout(cfg.ping_timeout):
                    await future
            except TimeoutError:
                future.cancel()
                raise ManagerError(
                    f"no answer to Ping in {cfg.ping_timeout}s: connection presumed dead"
                ) from None

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for item in pending.values():
            if not item.future.done():
                item.future.set_exception(ManagerUnavailableError("Manager connection lost"))
