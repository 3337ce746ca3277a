"""The PostgreSQL connection pool every repository of the PostgreSQL store shares.

psycopg 3 with psycopg-pool (``docs/postgresql.md`` says why not asyncpg). The pool's connections
are in autocommit: a read is one statement and no transaction, and a write is an explicit
``transaction()`` that returns only after its COMMIT, which is durable on the server
(``synchronous_commit`` as the operator set it; the default, ``on``, waits for the WAL flush).
Isolation is PostgreSQL's default, READ COMMITTED: each contract of ``callgate.ports`` names the
key or row lock it rests on, and every statement sees what the transactions before it committed.

A connection is checked before it is lent (``check_connection``), so a connection the server
dropped (a restart, ``pg_terminate_backend``) is replaced instead of failing the next write.
While the server is down, psycopg-pool retries a lost connection with a doubling delay (1, 2, 4 …
up to 300 s apart): after an outage of a minute, writes would keep failing for up to another
minute after the server is back. ``revive()`` — called when the change feed's own connection
(which retries every ``backoff_max`` seconds at most) is made again — replaces a pool that still
cannot lend a connection with a fresh one, so writes come back with the feed.

Errors: a server that cannot be reached, or no connection within ``timeout`` seconds, is a
``StoreUnavailableError`` (HTTP 503); any other psycopg error a ``StoreError``. Nothing of
psycopg escapes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from callgate.domain import StoreError, StoreUnavailableError

__all__ = ["PgDatabase", "translate"]

log = logging.getLogger(__name__)

Connection = AsyncConnection[TupleRow]

CONNECT_TIMEOUT: Final = 5
"""Seconds a new connection may take (libpq ``connect_timeout``)."""

_KEEPALIVES: Final = {
    # A peer that vanished without a FIN (a partition, a crashed host) is noticed in about
    # 10 s instead of the kernel's two hours: what lets the feed's listen connection reconnect.
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
}

_UNAVAILABLE = (
    psycopg.OperationalError,  # connection refused or lost, server shutting down
    PoolTimeout,
    errors.AdminShutdown,
    errors.CannotConnectNow,
)


def conninfo(url: str) -> str:
    """``url`` with the connection options callgate relies on (the URL's own values win)."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StoreError(f"not a PostgreSQL address: {exc}") from exc
    options = {
        "connect_timeout": str(CONNECT_TIMEOUT),
        **_KEEPALIVES,
        "application_name": "callgate",
    }
    options.update({k: str(v) for k, v in given.items() if v is not None})
    return make_conninfo(**options)


def redacted(url: str) -> str:
    """``url`` without its password, for logs and ``/readyz``."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://?"
    host, port, dbname = parts.get("host", ""), parts.get("port", ""), parts.get("dbname", "")
    user = parts.get("user")
    return f"postgresql://{f'{user}@' if user else ''}{host}{f':{port}' if port else ''}/{dbname}"


def translate(exc: BaseException) -> StoreError:
    """The ``StoreError`` that says what went wrong (unavailable, or refused by the server)."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailableError(f"PostgreSQL is unavailable: {_first_line(exc)}")
    return StoreError(f"database error: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PgDatabase:
    """A pool of autocommit connections to one database."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 5.0):
        self.url = url
        self.path = redacted(url)
        """What the logs name the store by (no password)."""
        self.conninfo = conninfo(url)
        self._sizes = (min_size, max_size)
        self._timeout = timeout
        self._pool = self._new_pool()
        self._closed = False
        self.revivals = 0
        """Times ``revive()`` replaced a pool that was waiting out its reconnection delay."""

    def _new_pool(self) -> AsyncConnectionPool[Connection]:
        return AsyncConnectionPool(
            self.conninfo,
            min_size=self._sizes[0],
            max_size=self._sizes[1],
            timeout=self._timeout,
            open=False,
            kwargs={"autocommit": True},
            check=AsyncConnectionPool.check_connection,
            name="callgate",
        )

    async def open(self) -> None:
        """Open the pool; ``StoreUnavailableError`` when no first connection can be made."""
        try:
            # One direct connection first: a refused one fails at once, where the pool would
            # keep retrying until its timeout.
            probe = await AsyncConnection.connect(self.conninfo)
            await probe.close()
            await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT + 1)
        except BaseException as exc:
            await self._pool.close()
            if isinstance(exc, Exception):
                raise translate(exc) from exc
            raise

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection in autocommit (each statement its own transaction)."""
        if self._closed:
            raise StoreError("the database is closed")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except StoreError:
            raise
        except (psycopg.Error, PoolTimeout) as exc:
            raise translate(exc) from exc

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A pooled connection inside one transaction, committed when the block ends (rolled
        back if it raises: the exception then propagates, translated if it is psycopg's)."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    def stats(self) -> dict[str, int]:
        """psycopg-pool's measures and counters of the current pool (``connections_errors`` …)."""
        return self._pool.get_stats()

    async def revive(self, probe_timeout: float = 0.5) -> bool:
        """The server answers again: if the pool cannot lend a connection within
        ``probe_timeout`` seconds (it is waiting out its reconnection delay), open a fresh pool
        in its place. True when it was replaced. The old pool is closed; a connection still
        lent from it is closed when it is given back."""
        if self._closed:
            return False
        try:
            async with self._pool.connection(timeout=probe_timeout):
                return False
        except (psycopg.Error, PoolTimeout):
            pass
        fresh = self._new_pool()
        try:
            await fresh.open(wait=True, timeout=CONNECT_TIMEOUT + 1)
        except Exception as exc:  # noqa: BLE001 - still down: the old pool keeps retrying
            log.info("store: PostgreSQL pool not renewed (%s)", _first_line(exc))
            await fresh.close()
            return False
        if self._closed:
            await fresh.close()
            return False
        old, self._pool = self._pool, fresh
        self.revivals += 1
        log.info("store: PostgreSQL pool renewed after the server came back")
        await old.close(timeout=1.0)
        return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._pool.close()
