"""The change feed across instances: ``LISTEN``/``NOTIFY`` on one dedicated connection per
instance, with a catch-up after every reconnection.

Meets ``ports.ChangeFeed``. A save NOTIFYs ``(client_id, version)`` in its own transaction, so
PostgreSQL delivers it to every listening instance at the commit, in commit order. On this
instance the save also publishes the change right after its commit (``publish``), without
waiting for the echo. Every change, whichever way it comes, passes one filter: it is handed to the
subscribers (``InProcessChangeFeed``: one queue and task each) only when its version is above
the last one handed out for that client. That drops the echo of a local save and the
duplicates a reconnection brings, and keeps each client's versions increasing for a subscriber
even when a NOTIFY of another instance's older version arrives after a newer local publish.

The listen connection can drop (a PostgreSQL restart, ``pg_terminate_backend``, a network cut:
the TCP keepalives of ``db.conninfo`` and a heartbeat query every ``heartbeat`` seconds without
traffic notice a silent one). The feed then reports itself not ``connected`` and not
``healthy``, reconnects with exponential backoff (jittered, up to ``backoff_max``), LISTENs again,
and only then catches up: it reads every client's current version of each kind (``policy_heads``
and ``supervision_heads``, one row per client) and hands out a change for each that is above what
was handed out before. Versions are compared per kind and client: the settings and grants of a
client count their own versions. Only
after that is it ``healthy`` again. LISTEN comes before the read, so a change committed in
between is seen by one or the other (or both: the filter drops the second).

Why per-client versions and not a global high-water mark: a sequence number taken by a saving
transaction is not in commit order (a save can take number 10, commit after number 11 did,
and its NOTIFY be lost in the drop), so "everything above the highest number seen" could skip
a change; comparing each client's current version with the one handed out cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final

import psycopg

from callgate.domain import ChangeKind, PolicyChange, StoreError, StoreUnavailableError
from callgate.ports import ChangeHandler, Unsubscribe
from callgate.store.changes import InProcessChangeFeed
from callgate.store.postgresql.db import CONNECT_TIMEOUT, Connection, translate
from callgate.store.postgresql.policies import CHANNEL, parse_payload

__all__ = ["PgChangeFeed"]

log = logging.getLogger(__name__)

APPLICATION_NAME: Final = "callgate-feed"
"""How the listen connection shows in ``pg_stat_activity``."""

_HEADS: Final = (
    (ChangeKind.POLICY, "policy_heads"),
    (ChangeKind.SUPERVISION, "supervision_heads"),
)
"""Each kind's table of every client's current version (our table names: constants)."""

HEARTBEAT: Final = 5.0
"""Seconds without a notification after which the listen connection is probed."""


class PgChangeFeed:
    """``ports.ChangeFeed`` over PostgreSQL ``LISTEN``/``NOTIFY``; ``start()`` before use."""

    def __init__(
        self,
        conninfo: str,
        *,
        heartbeat: float = HEARTBEAT,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
    ) -> None:
        self._conninfo = conninfo
        self._heartbeat = heartbeat
        self._backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        """The longest wait between two reconnection attempts (seconds)."""
        self._local = InProcessChangeFeed()
        self._delivered: dict[tuple[ChangeKind, str], int] = {}
        """The last version handed to the subscribers, per kind and client."""
        self._conn: Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._connected = False
        self._healthy = asyncio.Event()
        self.reconnects = 0
        """Times the listen connection was made again after a drop."""
        self.last_error: str | None = None
        """Why the listen connection last dropped (None: it never did)."""
        self.on_health: Callable[[bool], None] | None = None
        """Called with the new ``healthy`` on every change of it (for ``/readyz``, metrics)."""
        self.on_reconnect: Callable[[], Awaitable[object]] | None = None
        """Awaited after the listen connection is made again, before it is ``healthy`` (the
        store renews its pool there)."""

    # ------------------------------------------------------------------------ health

    @property
    def connected(self) -> bool:
        """The listen connection is up (LISTEN done); the catch-up may still be running."""
        return self._connected

    @property
    def healthy(self) -> bool:
        """Connected and caught up: every committed change has been handed out."""
        return self._healthy.is_set()

    async def wait_healthy(self) -> None:
        await self._healthy.wait()

    def _set_health(self, healthy: bool) -> None:
        if healthy == self.healthy:
            return
        if healthy:
            self._healthy.set()
        else:
            self._healthy.clear()
        if self.on_health is not None:
            try:
                self.on_health(healthy)
            except Exception:
                log.exception("change feed: the health callback failed")

    # ------------------------------------------------------------------------ ChangeFeed

    def subscribe(self, handler: ChangeHandler) -> Unsubscribe:
        return self._local.subscribe(handler)

    def publish(self, change: PolicyChange) -> None:
        """A change this instance committed (the store calls it after the commit)."""
        self._offer(change)

    async def idle(self) -> None:
        await self._local.idle()

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_connection()
        self._set_health(False)
        await self._local.close()

    def _offer(self, change: PolicyChange) -> None:
        key = (change.kind, change.client_id)
        if change.version <= self._delivered.get(key, 0):
            return  # already handed out (an echo, a duplicate), or older than what was
        self._delivered[key] = change.version
        self._local.publish(change)

    # ------------------------------------------------------------------------ listening

    async def start(self) -> None:
        """Connect, LISTEN and note every client's current version (the subscribers load the
        current policies themselves), then keep listening in the background.

        ``StoreUnavailableError`` when the first connection cannot be made."""
        if self._task is not None:
            return
        try:
            await self._connect(initial=True)
        except StoreError:
            await self._drop_connection()
            raise
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pg-change-feed")

    async def _connect(self, *, initial: bool) -> None:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, application_name=APPLICATION_NAME
            )
        except (psycopg.Error, OSError) as exc:
            raise StoreUnavailableError(f"PostgreSQL is unavailable: {exc}") from exc
        self._conn = conn
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
            self._connected = True
            await self._catch_up(conn, deliver=not initial)
        except psycopg.Error as exc:
            raise translate(exc) from exc
        if not initial and self.on_reconnect is not None:
            try:
                await self.on_reconnect()  # before healthy: writes work again when it says so
            except Exception:  # the feed keeps listening whatever the hook does
                log.exception("change feed: the reconnect hook failed")
        self._set_health(True)

    async def _catch_up(self, conn: Connection, *, deliver: bool) -> None:
        """Hand out each client whose current version (of each kind) is above the last handed
        out (or, on the first connection, only note the versions)."""
        heads: list[tuple[ChangeKind, str, int]] = []
        for kind, table in _HEADS:
            cur = await conn.execute(f"SELECT client_id, version FROM {table}")  # noqa: S608
            heads.extend(
                (kind, str(client_id), int(version)) for client_id, version in await cur.fetchall()
            )
        caught = 0
        for kind, client_id, version in heads:
            change = PolicyChange(client_id, version, kind)
            key = (kind, client_id)
            if not deliver:
                self._delivered[key] = max(change.version, self._delivered.get(key, 0))
            elif change.version > self._delivered.get(key, 0):
                caught += 1
                self._offer(change)
        if deliver:
            log.info("change feed: caught up, %d client(s) changed while disconnected", caught)

    async def _run(self) -> None:
        backoff = self._backoff_initial
        while not self._closed:
            try:
                if self._conn is None:
                    await self._connect(initial=False)
                    self.reconnects += 1
                    backoff = self._backoff_initial
                    log.info("change feed: listening again (%d reconnects)", self.reconnects)
                await self._listen(self._conn)
            except asyncio.CancelledError:
                raise
            except (StoreError, psycopg.Error, OSError, TimeoutError) as exc:
                self.last_error = str(translate(exc)) if not isinstance(exc, OSError) else str(exc)
                was_healthy = self.healthy
                self._set_health(False)
                await self._drop_connection()
                delay = backoff * random.uniform(0.5, 1.0)
                backoff = min(backoff * 2, self.backoff_max)
                (log.warning if was_healthy else log.info)(
                    "change feed: listen connection lost (%s); retrying in %.2f s",
                    self.last_error,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _listen(self, conn: Connection | None) -> None:
        """Hand out notifications until ``heartbeat`` seconds pass without one, then probe."""
        assert conn is not None
        async for notify in conn.notifies(timeout=self._heartbeat):
            change = parse_payload(notify.payload)
            if change is None:
                log.warning("change feed: a notification that is not ours: %r", notify.payload)
                continue
            self._offer(change)
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await conn.execute("SELECT 1")

    async def _drop_connection(self) -> None:
        self._connected = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()
