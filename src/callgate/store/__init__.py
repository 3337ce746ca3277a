"""The durable store: one embedded database, one repository per kind of record.

Adding a repository (audit, replace, ...) is a two-line edit of this module:

1. import its class here;
2. add a field to ``Store`` annotated with that class.

The class must take the ``Database`` as its only constructor argument and carry its DDL as a
class attribute or module constant named ``SCHEMA`` (a tuple of idempotent statements, ``CREATE
TABLE IF NOT EXISTS ...``). ``open_store`` reads the fields of ``Store``, creates every
repository's schema in one transaction, and builds each repository on the shared database.
Repositories' own errors subclass ``StoreError``.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Protocol

from callgate.store.audit import AuditRepository
from callgate.store.db import Database, StoreError
from callgate.store.feed import LocalChangeFeed
from callgate.store.policies import PolicyRepository, StoredPolicy, VersionConflictError
from callgate.store.replace import ReplaceRepository
from callgate.store.tokens import TokenExistsError, TokenInfo, TokenRepository

__all__ = [
    "AuditRepository",
    "Database",
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


class Repository(Protocol):
    def __init__(self, db: Database) -> None: ...


@dataclass(frozen=True, slots=True)
class Store:
    db: Database
    policies: PolicyRepository
    tokens: TokenRepository
    replace: ReplaceRepository
    audit: AuditRepository

    @property
    def changes(self) -> LocalChangeFeed:
        return self.policies.changes

    async def close(self) -> None:
        await self.policies.changes.close()
        await self.audit.close()  # writes the audit events still queued
        await self.db.close()


def _repository_types() -> dict[str, type[Repository]]:
    hints = typing.get_type_hints(Store)
    return {f.name: hints[f.name] for f in fields(Store) if f.name != "db"}


def schema_of(repository: type[Repository]) -> tuple[str, ...]:
    """The repository's DDL: its ``SCHEMA`` attribute, else its module's ``SCHEMA``."""
    schema: Iterable[str] | None = getattr(repository, "SCHEMA", None)
    if schema is None:
        schema = getattr(sys.modules[repository.__module__], "SCHEMA", ())
    return tuple(schema)


async def open_store(target: str) -> Store:
    """Open (creating if needed) the store at ``target``: a SQLite path or ``:memory:``."""
    if target.startswith(("postgresql://", "postgres://")):
        raise StoreError("a PostgreSQL store is not supported yet: use a SQLite path")
    path = target.removeprefix("sqlite:///") if target.startswith("sqlite:///") else target
    types = _repository_types()
    schemas = [statement for cls in types.values() for statement in schema_of(cls)]
    db = await Database.open(path, schemas)
    repositories = {name: cls(db) for name, cls in types.items()}
    return Store(db=db, **repositories)  # type: ignore[arg-type]
