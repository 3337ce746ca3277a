"""Who enforces on which PBX: with several instances on one PostgreSQL, exactly one per PBX.

Each PBX has one enforcement lock, a PostgreSQL session-level advisory lock
(``pg_try_advisory_lock(lock_key(pbx))``) taken on a connection of its own
(``application_name = callgate-enforce``). The instance holding a PBX's lock is the only one
connected to that PBX's Manager: it tracks that PBX's listen/whisper sessions and hangs up those a
policy change withdraws, whichever instance allowed them (a session allowed elsewhere is
recognised by the variables the shipped dialplan left on its channel, ``PbxLink``). So a revoked
session gets one Hangup, not one per instance. The other instances are on standby for that PBX
(``/readyz``: ``standby``) and try to take its lock every ``interval`` seconds.

When the holder dies its connection closes and PostgreSQL releases its locks at once (``kill -9``
closes the socket; a host that vanishes is noticed by the TCP keepalives set below, in about
11 s); a standby instance takes the lock at its next try, connects to the Manager and reconciles
(``CoreShowChannels``: every session running is adopted and decided again). The holder checks
its lock connection every ``interval`` seconds (a query bounded by ``interval``): if it fails, the
holder stops enforcing at once, before PostgreSQL can hand the lock to another instance. While
PostgreSQL is unreachable no instance enforces; none is needed, since no policy can change then
(writes answer 503), and the first to reconnect takes the locks back and reconciles.

With SQLite there is one instance: ``LiveEnforcement`` then enforces on every PBX without leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, Protocol

import psycopg
from psycopg.rows import TupleRow

from callgate.pbx import PbxName

log = logging.getLogger(__name__)

APPLICATION_NAME: Final = "callgate-enforce"
"""How the lock connection shows in ``pg_stat_activity``."""

_SERVER_KEEPALIVES: Final = (
    # The server's side of the connection: a holder whose host vanished without closing it
    # loses its locks in about 5 + 2 * 3 s instead of the kernel's two hours.
    "SET tcp_keepalives_idle = 5",
    "SET tcp_keepalives_interval = 2",
    "SET tcp_keepalives_count = 3",
)

LeaseChange = Callable[[PbxName, bool], Awaitable[None]]
"""Called with ``True`` when this instance takes a PBX's lock, ``False`` when it loses it."""


def lock_key(pbx: PbxName) -> int:
    """The advisory lock key (a signed 64-bit integer) of ``pbx``'s enforcement lock: the first
    8 bytes of BLAKE2b of ``callgate-enforce:<pbx>``; never the migrations' key."""
    digest = hashlib.blake2b(f"callgate-enforce:{pbx}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Leases(Protocol):
    """Tells ``LiveEnforcement`` which PBXes this instance enforces on."""

    def start(self, on_change: LeaseChange) -> None: ...

    async def stop(self) -> None:
        """Stop trying, and release every lock held (after ``on_change(pbx, False)``)."""
        ...

    def held(self) -> frozenset[PbxName]: ...


class PgLeases:
    """``Leases`` over PostgreSQL advisory locks, one per PBX, on one dedicated connection."""

    def __init__(self, conninfo: str, pbxes: Iterable[PbxName], *, interval: float = 2.0) -> None:
        self._conninfo = conninfo
        self._pbxes = tuple(dict.fromkeys(pbxes))
        self.interval = interval
        self._held: set[PbxName] = set()
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self._task: asyncio.Task[None] | None = None
        self._on_change: LeaseChange | None = None
        self._unreachable_logged = False

    def held(self) -> frozenset[PbxName]:
        return frozenset(self._held)

    def start(self, on_change: LeaseChange) -> None:
        if self._task is None:
            self._on_change = on_change
            self._task = asyncio.create_task(self._run(), name="enforcement-leases")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._lose_all("stopping")
        await self._close()  # releases the locks: another instance takes over at its next try

    async def _run(self) -> None:
        while True:
            try:
                await self._round()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                if self._held or not self._unreachable_logged:
                    log.warning("enforcement locks: PostgreSQL unreachable (%s)", reason)
                    self._unreachable_logged = True
                await self._lose_all(f"the lock connection failed: {reason}")
                await self._close()
            await asyncio.sleep(self.interval)

    async def _round(self) -> None:
        """One try: connect if needed, prove the connection alive, take the free locks."""
        async with asyncio.timeout(self.interval + 5):
            if self._conn is None:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name=APPLICATION_NAME
                )
                self._conn = conn
                for statement in _SERVER_KEEPALIVES:
                    await conn.execute(statement)
                self._unreachable_logged = False
        conn = self._conn
        async with asyncio.timeout(self.interval):
            # A holder whose connection is gone must stop before another instance can start.
            await conn.execute("SELECT 1")
        for pbx in self._pbxes:
            if pbx in self._held:
                continue
            async with asyncio.timeout(self.interval):
                cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(pbx),))
                row = await cur.fetchone()
            if row is not None and row[0] is True:
                self._held.add(pbx)
                log.info("enforcing on PBX %s: this instance holds its lock", pbx)
                await self._tell(pbx, held=True)

    async def _lose_all(self, why: str) -> None:
        for pbx in sorted(self._held):
            self._held.discard(pbx)
            log.warning("no longer enforcing on PBX %s (%s)", pbx, why)
            await self._tell(pbx, held=False)

    async def _tell(self, pbx: PbxName, *, held: bool) -> None:
        if self._on_change is None:
            return
        try:
            await self._on_change(pbx, held)
        except Exception:
            log.exception("enforcement on PBX %s: switching to held=%s failed", pbx, held)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()
