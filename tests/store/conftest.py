"""The store backends every contract test runs against.

``storage`` is one store of the backend named by the ``backend`` param, opened on a fresh
database and closed after the test. A new backend (PostgreSQL) is one more entry of
``BACKENDS`` and one more branch of ``open_backend``; no test changes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from callgate.ports import Storage
from callgate.store import open_store
from callgate.store.db import Database

T = TypeVar("T")

BACKENDS = ("sqlite", "postgresql")


async def open_backend(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Storage:
    if backend == "sqlite":
        return await open_store(str(tmp_path / "callgate.sqlite3"))
    if backend == "postgresql":
        # A fresh database of the session's private cluster (skips without PostgreSQL).
        return await open_store(request.getfixturevalue("pg_dsn"))
    raise AssertionError(f"no such backend: {backend}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def storage(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Storage]:
    store = await open_backend(backend, tmp_path, request)
    yield store
    await store.close()


class CountingDatabase(Database):
    """The real database, counting its write transactions (the audit tests: how many a batch
    or a pruning takes)."""

    writes = 0

    async def write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        on_commit: Callable[[T], None] | None = None,
    ) -> T:
        self.writes += 1
        return await super().write(fn, on_commit=on_commit)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[CountingDatabase]:
    db = await CountingDatabase.open(tmp_path / "audit.sqlite3")
    assert isinstance(db, CountingDatabase)
    yield db
    await db.close()
