"""The SQLite implementation of the store ports (``callgate.ports``): one embedded database, one
repository per port, and the change feed of what they commit.

``open_store`` opens (creating and migrating, ``store.schema``) the database and builds on it
``PolicyRepository`` (``PolicyStore``), ``TokenRepository`` (``TokenStore``),
``ReplaceRepository`` (``ReplaceStore``), ``AuditRepository`` (``AuditStore``) with the
``AuditLog`` that batches into it, and the ``InProcessChangeFeed`` the policy saves publish on.
Every error is a ``StoreError`` (``callgate.domain``).
"""

from __future__ import annotations

from dataclasses import dataclass

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
from callgate.store.tokens import TokenRepository

__all__ = [
    "AuditRepository",
    "Database",
    "InProcessChangeFeed",
    "PolicyRepository",
    "ReplaceRepository",
    "Store",
    "StoreError",
    "StoredPolicy",
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
    tokens: TokenRepository
    replace: ReplaceRepository
    audit_log: AuditRepository
    audit: AuditLog
    changes: InProcessChangeFeed

    async def close(self) -> None:
        await self.audit.close()  # writes the audit events still queued
        await self.changes.close()
        await self.db.close()


async def open_store(target: str) -> Store:
    """Open (creating if needed) the store at ``target``: a SQLite path or ``:memory:``.

    ``StoreError`` when the database has a newer schema version than this code knows."""
    if target.startswith(("postgresql://", "postgres://")):
        raise StoreError("a PostgreSQL store is not supported yet: use a SQLite path")
    path = target.removeprefix("sqlite:///") if target.startswith("sqlite:///") else target
    db = await Database.open(path)
    changes = InProcessChangeFeed()
    audit_log = AuditRepository(db)
    return Store(
        db=db,
        policies=PolicyRepository(db, changes),
        tokens=TokenRepository(db),
        replace=ReplaceRepository(db),
        audit_log=audit_log,
        audit=AuditLog(audit_log),
        changes=changes,
    )
