"""The embedded SQLite database every repository of the store shares.

One connection, owned by one worker thread: SQLite serialises writers anyway, and a single thread
keeps every statement off the event loop without a pool. ``write`` runs its function inside one
transaction and returns only after COMMIT, with ``synchronous=FULL`` in WAL mode, so a write that
was acknowledged survives a crash of the process or of the machine.

Each repository brings its own schema as a list of idempotent DDL statements (``CREATE TABLE IF
NOT EXISTS ...``) and registers it with ``Database.open(schemas=...)``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from callgate.domain import StoreError

__all__ = ["Database", "StoreError"]

T = TypeVar("T")


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
    async def open(cls, path: Path | str, schemas: Iterable[str] = ()) -> Database:
        db = cls(path)
        statements = list(schemas)
        await db._run(lambda: db._connect(statements))
        return db

    def _connect(self, statements: list[str]) -> None:
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
            for statement in statements:
                conn.execute(statement)
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

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one IMMEDIATE transaction; return after a durable COMMIT.

        If ``fn`` raises, the transaction is rolled back and the exception propagates unchanged.
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
