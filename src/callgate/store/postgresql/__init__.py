"""The PostgreSQL implementation of the store ports (``callgate.ports``), for several callgate
instances sharing one database: ``callgate serve --db postgresql://user:pass@host/dbname``.

``open_postgresql`` opens a connection pool (``db``), brings the schema to this code's version
under an advisory lock (``schema``), starts the change feed's listen connection (``changes``),
and builds ``PgPolicyRepository``, ``PgSupervisionRepository``, ``PgTokenRepository``,
``PgReplaceRepository`` and ``PgAuditRepository`` on the pool, with the ``AuditLog`` that
batches into the audit store.
Isolation: READ COMMITTED, PostgreSQL's default; each repository's docstring names the key or
row lock each contract rests on. ``docs/postgresql.md`` has the driver choice and the operator's
notes (pgbouncer, LISTEN).
"""

from __future__ import annotations

from dataclasses import dataclass

from callgate.audit import AuditLog
from callgate.domain import StoreError
from callgate.store.postgresql.audit import PgAuditRepository
from callgate.store.postgresql.changes import PgChangeFeed
from callgate.store.postgresql.db import PgDatabase, translate
from callgate.store.postgresql.policies import PgPolicyRepository
from callgate.store.postgresql.replace import PgReplaceRepository
from callgate.store.postgresql.schema import migrate
from callgate.store.postgresql.supervision import PgSupervisionRepository
from callgate.store.postgresql.tokens import PgTokenRepository

__all__ = [
    "PgAuditRepository",
    "PgChangeFeed",
    "PgDatabase",
    "PgPolicyRepository",
    "PgReplaceRepository",
    "PgSupervisionRepository",
    "PgTokenRepository",
    "PostgresStore",
    "open_postgresql",
]

URL_PREFIXES = ("postgresql://", "postgres://")


@dataclass(frozen=True, slots=True)
class PostgresStore:
    """``ports.Storage`` on PostgreSQL, with ``audit``: the batching log that writes
    ``audit_log``."""

    db: PgDatabase
    policies: PgPolicyRepository
    supervision: PgSupervisionRepository
    tokens: PgTokenRepository
    replace: PgReplaceRepository
    audit_log: PgAuditRepository
    audit: AuditLog
    changes: PgChangeFeed

    async def close(self) -> None:
        await self.audit.close()  # writes the audit events still queued
        await self.changes.close()
        await self.db.close()


async def open_postgresql(url: str, *, pool_timeout: float = 5.0) -> PostgresStore:
    """Open the store in the database at ``url`` (created by the operator; the tables are
    created and migrated here). ``StoreUnavailableError`` when PostgreSQL cannot be reached,
    ``StoreError`` for a schema newer than this code's.

    ``pool_timeout``: seconds a statement waits for a pooled connection before it fails with
    ``StoreUnavailableError`` (while PostgreSQL is down, how long a write takes to answer 503)."""
    db = PgDatabase(url, timeout=pool_timeout)
    await db.open()
    changes = PgChangeFeed(db.conninfo)
    changes.on_reconnect = db.revive
    try:
        async with db.connection() as conn:
            try:
                await migrate(conn)
            except StoreError:
                raise
            except Exception as exc:
                raise translate(exc) from exc
        await changes.start()
    except BaseException:
        await changes.close()
        await db.close()
        raise
    audit_log = PgAuditRepository(db)
    return PostgresStore(
        db=db,
        policies=PgPolicyRepository(db, changes),
        supervision=PgSupervisionRepository(db, changes),
        tokens=PgTokenRepository(db),
        replace=PgReplaceRepository(db),
        audit_log=audit_log,
        audit=AuditLog(audit_log),
        changes=changes,
    )
