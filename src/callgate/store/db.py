"""The embedded SQLite database every repository of the store shares.

One connection, owned by one worker thread: SQLite serialises writers anyway, and a single thread
keeps every statement off the event loop without a pool. ``write`` runs its function inside one
transaction and returns only after COMMIT, with ``synchronous=FULL`` in WAL mode, so a write that
was acknowledged survives a crash of the process or of the machine.

``Database.open`` brings the schema to the version this code writes (``store.schema``: the
migrations, in one transaction), and refuses a database of a newer version.

Contracts of ``callgate.ports`` that rest on this module: a write is durable before it returns
(COMMIT with ``synchronous=FULL``); ``write(..., on_commit=...)`` runs its hook on the writer
thread right after COMMIT, so what a hook hands to the event loop arrives in commit order (the
change feed's per-client version order rests on it).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from callgate.domain import StoreError
from callgate.store.schema import migrate

__all__ = ["Database", "StoreError"]

T = TypeVar("T")

log = logging.getLogger(__name__)


class Database:
    def __init__(self, path: Path | str) -> None:
        self._path = str(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callgate-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    @classmethod
    async def open(cls, path: Path | str) -> Database:
        """Open (creating if needed) the database, migrated to ``schema.LATEST``; ``StoreError``
        for a database of a newer schema version."""
        db = cls(path)
        try:
            await db._run(db._connect)
        except BaseException:
            db._executor.shutdown(wait=False)
            raise
        return db

    def _connect(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.row_factory = sqlite3.Row
        conn.execute("BEGIN IMMEDIATE")
        try:
            migrate(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
        conn.execute("COMMIT")
        self._conn = conn

    async def _run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise StoreError("the database is closed")
        try:
            return await loop.run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the database is closed")
        return self._conn

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the connection (no transaction is opened for a plain read)."""
        return await self._run(lambda: fn(self._connection()))

    async def write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        on_commit: Callable[[T], None] | None = None,
    ) -> T:
        """Run ``fn`` in one IMMEDIATE transaction; return after a durable COMMIT.

        If ``fn`` raises, the transaction is rolled back and the exception propagates unchanged.
        ``on_commit(result)`` runs on the writer thread right after the COMMIT (never after a
        rollback); it must not block.
        """

        def run() -> T:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            if on_commit is not None:
                try:
                    on_commit(result)
                except Exception:  # committed: the write stands, whatever its hook does
                    log.exception("database: a hook after commit failed")
            return result

        return await self._run(run)

    async def close(self) -> None:
        if self._closed:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._closed = True
        self._executor.shutdown(wait=True)
