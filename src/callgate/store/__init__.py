"""The SQLite implementation of the store ports (``callgate.ports``): one embedded database, one
repository per port, and the change feed of what they commit.

``open_store`` opens (creating and migrating, ``store.schema``) the database and builds on it
``PolicyRepository`` (``PolicyStore``), ``TokenRepository`` (``TokenStore``),
``ReplaceRepository`` (``ReplaceStore``), ``AuditRepository`` (``AuditStore``) with the
``AuditLog`` that batches into it, ``SupervisionRepository`` (``SupervisionStore``: the settings
and grants beside each policy), and the ``InProcessChangeFeed`` both kinds of saves publish on.
Every error is a ``StoreError`` (``callgate.domain``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from callgate.audit import AuditLog
from callgate.domain import (
    StoredPolicy,
    StoreError,
    TokenExistsError,
    TokenInfo,
    VersionConflictError,
)
from callgate.store.audit import AuditRepository
from callgate.store.changes import InProcessChangeFeed
from callgate.store.db import Database
from callgate.store.policies import PolicyRepository
from callgate.store.replace import ReplaceRepository
from callgate.store.supervision import SupervisionRepository
from callgate.store.tokens import TokenRepository

if TYPE_CHECKING:
    from callgate.store.postgresql import PostgresStore

__all__ = [
    "AnyStore",
    "AuditRepository",
    "Database",
    "InProcessChangeFeed",
    "PolicyRepository",
    "ReplaceRepository",
    "Store",
    "StoreError",
    "StoredPolicy",
    "SupervisionRepository",
    "TokenExistsError",
    "TokenInfo",
    "TokenRepository",
    "VersionConflictError",
    "open_store",
]


@dataclass(frozen=True, slots=True)
class Store:
    """``ports.Storage`` on SQLite, with ``audit``: the batching log that writes ``audit_log``."""

    db: Database
    policies: PolicyRepository
    supervision: SupervisionRepository
    tokens: TokenRepository
    replace: ReplaceRepository
    audit_log: AuditRepository
    audit: AuditLog
    changes: InProcessChangeFeed

    async def close(self) -> None:
        await self.audit.close()  # writes the audit events still queued
        await self.changes.close()
        await self.db.close()


AnyStore: TypeAlias = "Store | PostgresStore"
"""What ``open_store`` opens (for annotations only: PostgreSQL's module is imported on use)."""


async def open_store(target: str) -> AnyStore:
    """Open (creating if needed) the store at ``target``: a SQLite path, ``:memory:``, or a
    ``postgresql://`` URL (``store.postgresql``).

    ``StoreError`` when the database has a newer schema version than this code knows."""
    if target.startswith(("postgresql://", "postgres://")):
        # Imported here: psycopg is loaded only by those who use PostgreSQL.
        from callgate.store.postgresql import open_postgresql

        return await open_postgresql(target)
    path = target.removeprefix("sqlite:///") if target.startswith("sqlite:///") else target
    db = await Database.open(path)
    changes = InProcessChangeFeed()
    audit_log = AuditRepository(db)
    return Store(
        db=db,
        policies=PolicyRepository(db, changes),
        supervision=SupervisionRepository(db, changes),
        tokens=TokenRepository(db),
        replace=ReplaceRepository(db),
        audit_log=audit_log,
        audit=AuditLog(audit_log),
        changes=changes,
    )
