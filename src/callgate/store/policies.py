"""Every version of every client's policy document, as many as the retention keeps.

A client's current policy is its newest version. Versions count up from 1 per client; version 0
means "nothing stored" and is never written. Resetting a client to the default (HTTP ``DELETE``)
is a new version that holds the default document, so the history shows who reset it and when.

Versions are unique by the table's key ``(client_id, version)``, and that key alone decides who
gets a version: a save reads the current version, checks it against ``if_version`` (HTTP
``If-Match``), and inserts the next one; if another save inserted it first, the insert fails on
the key, nothing is written, and the save reads again — a conflict if the version it expected is
gone, another try otherwise. Nothing rests on SQLite's single writer, so a backend with
concurrent writers (PostgreSQL at READ COMMITTED) keeps the same guarantee with the same key.
A committed save is published on the store's change feed (``PolicyChange``), from the writer
thread right after COMMIT, so the feed sees the versions in commit order.

Retention (``Retention``): each save prunes, in its own transaction, the client's versions beyond
the newest ``keep`` and those older than ``max_age``; the version just written is never pruned,
and since the current version is always kept, version numbers keep counting up after a prune.
A database written before retention existed is pruned to the limits on its client's next save.

Documents are stored as their canonical JSON text (``canonical_json``: compact, every field
explicit, ``PolicyDocument.to_json`` order), which readers that only pass it on (the history, the
HTTP answers) send as it is, without decoding and encoding megabytes again.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Collection
from datetime import UTC, datetime

from callgate.domain import (
    HistoryPage,
    PolicyChange,
    Retention,
    RetentionSettings,
    StoredJson,
    StoredPolicy,
    VersionConflictError,
    canonical_json,
    retention,
)
from callgate.policy import PolicyDocument, PolicyValidationError, parse_document
from callgate.ports import ChangeFeed
from callgate.store.db import Database, StoreError

__all__ = [  # the domain names are re-exported for the callers that imported them from here
    "HistoryPage",
    "PolicyChange",
    "PolicyRepository",
    "Retention",
    "RetentionSettings",
    "StoredJson",
    "StoredPolicy",
    "VersionConflictError",
    "canonical_json",
    "retention",
]

_SAVE_ATTEMPTS = 100
"""Saves without ``if_version`` that lose the race for the next version retry this often: each
loss means another save got through, so only a storm of concurrent writers to one client gets
this far (then ``StoreError``)."""


class _VersionTakenError(Exception):
    """Another save inserted the version this one meant to write (the unique key said so)."""


def _decode(row: sqlite3.Row) -> StoredPolicy:
    client_id = str(row["client_id"])
    version = int(row["version"])
    try:
        document = parse_document(json.loads(row["document"]))
    except (ValueError, PolicyValidationError) as exc:
        # Only a document that passed validation is ever written; this means outside damage.
        raise StoreError(f"stored policy {client_id!r} v{version} is unreadable: {exc}") from exc
    return StoredPolicy(
        client_id=client_id,
        version=version,
        document=document,
        changed_at=datetime.fromisoformat(row["changed_at"]),
        changed_by=str(row["changed_by"]),
    )


_NO_BOUND = 2**63 - 1
"""Above every version (SQLite's largest integer)."""


def _stored_json(row: sqlite3.Row) -> StoredJson:
    return StoredJson(
        version=int(row["version"]),
        changed_at=str(row["changed_at"]),
        changed_by=str(row["changed_by"]),
        document_json=str(row["document"]),
    )


def prune_versions(
    conn: sqlite3.Connection,
    table: str,
    client_id: str,
    newest: int,
    now: datetime,
    retention: Retention,
) -> None:
    """Drop from ``table`` (a versions table of this schema) what ``retention`` no longer keeps;
    ``newest``, just written, always stays."""
    conn.execute(
        f"DELETE FROM {table} WHERE client_id = ? AND version <= ?",  # noqa: S608 - our tables
        (client_id, newest - retention.keep),
    )
    if retention.max_age is not None:
        # changed_at is always datetime.isoformat() in UTC, so text order is time order.
        cutoff = (now - retention.max_age).isoformat()
        conn.execute(
            f"DELETE FROM {table}"  # noqa: S608 - our tables
            " WHERE client_id = ? AND version < ? AND changed_at < ?",
            (client_id, newest, cutoff),
        )


def _current_version(conn: sqlite3.Connection, client_id: str) -> int:
    row = conn.execute(
        "SELECT MAX(version) FROM policy_versions WHERE client_id = ?", (client_id,)
    ).fetchone()
    return int(row[0] or 0)


class PolicyRepository:
    """``ports.PolicyStore`` on SQLite."""

    def __init__(self, db: Database, changes: ChangeFeed) -> None:
        self._db = db
        self._changes = changes
        self.retention = Retention()
        """Applied by every save; the daemon sets it from the settings."""

    async def current(self, client_id: str) -> StoredPolicy | None:
        """The newest version for ``client_id``, or None when nothing was ever stored."""

        def read(conn: sqlite3.Connection) -> StoredPolicy | None:
            row = conn.execute(
                "SELECT * FROM policy_versions WHERE client_id = ? ORDER BY version DESC LIMIT 1",
                (client_id,),
            ).fetchone()
            return None if row is None else _decode(row)

        return await self._db.read(read)

    async def all_current(self) -> list[StoredPolicy]:
        """The newest version of every client that has one (start-up loads these)."""

        def read(conn: sqlite3.Connection) -> list[StoredPolicy]:
            rows = conn.execute(
                "SELECT p.* FROM policy_versions AS p"
                " JOIN (SELECT client_id, MAX(version) AS version FROM policy_versions"
                "       GROUP BY client_id) AS newest USING (client_id, version)"
                " ORDER BY p.client_id"
            ).fetchall()
            return [_decode(row) for row in rows]

        return await self._db.read(read)

    async def all_current_json(self) -> list[tuple[str, StoredJson]]:
        """The newest version of every client as stored text, by client id (no decoding)."""

        def read(conn: sqlite3.Connection) -> list[tuple[str, StoredJson]]:
            rows = conn.execute(
                "SELECT p.client_id, p.version, p.changed_at, p.changed_by, p.document"
                " FROM policy_versions AS p"
                " JOIN (SELECT client_id, MAX(version) AS version FROM policy_versions"
                "       GROUP BY client_id) AS newest USING (client_id, version)"
                " ORDER BY p.client_id"
            ).fetchall()
            return [(str(row["client_id"]), _stored_json(row)) for row in rows]

        return await self._db.read(read)

    async def current_json(self, client_id: str) -> StoredJson | None:
        """The newest version as stored text: what an answer sends, with no decoding."""

        def read(conn: sqlite3.Connection) -> StoredJson | None:
            row = conn.execute(
                "SELECT version, changed_at, changed_by, document FROM policy_versions"
                " WHERE client_id = ? ORDER BY version DESC LIMIT 1",
                (client_id,),
            ).fetchone()
            return None if row is None else _stored_json(row)

        return await self._db.read(read)

    async def history_page(
        self, client_id: str, *, limit: int, before: int | None = None, max_bytes: int
    ) -> HistoryPage:
        """Up to ``limit`` versions older than ``before`` (all when None), newest first.

        The page stops early once its documents would pass ``max_bytes`` of JSON text, but
        always holds one version when one remains, however large: the bound on an answer is
        then the larger of ``max_bytes`` and one document.
        """

        def read(conn: sqlite3.Connection) -> HistoryPage:
            below = before if before is not None else _NO_BOUND
            rows = conn.execute(
                "SELECT version, changed_at, changed_by, document FROM policy_versions"
                " WHERE client_id = ? AND version < ? ORDER BY version DESC LIMIT ?",
                (client_id, below, limit),
            )
            page: list[StoredJson] = []
            size = 0
            # Row by row, so that the rows past the byte budget are never read into memory.
            for row in rows:
                entry = _stored_json(row)
                size += len(entry.document_json)
                if page and size > max_bytes:
                    break
                page.append(entry)
            rows.close()
            if not page:
                return HistoryPage((), None)
            oldest = page[-1].version
            more = conn.execute(
                "SELECT 1 FROM policy_versions WHERE client_id = ? AND version < ? LIMIT 1",
                (client_id, oldest),
            ).fetchone()
            return HistoryPage(tuple(page), oldest if more is not None else None)

        return await self._db.read(read)

    async def history(self, client_id: str) -> list[StoredPolicy]:
        """Every stored version for ``client_id``, newest first."""

        def read(conn: sqlite3.Connection) -> list[StoredPolicy]:
            rows = conn.execute(
                "SELECT * FROM policy_versions WHERE client_id = ? ORDER BY version DESC",
                (client_id,),
            ).fetchall()
            return [_decode(row) for row in rows]

        return await self._db.read(read)

    async def save(
        self,
        client_id: str,
        document: PolicyDocument,
        changed_by: str,
        *,
        if_version: Collection[int] | None = None,
        encoded: str | None = None,
    ) -> StoredPolicy:
        """Store ``document`` as the client's next version; durable when this returns.

        ``if_version``: the versions the caller accepts as current (from ``If-Match``); when the
        current version is not among them, raise ``VersionConflictError`` and write nothing.
        ``encoded``: ``canonical_json(document)`` when the caller already made it (off the
        event loop, for a large document). The same transaction applies the retention.
        """
        if encoded is None:
            encoded = canonical_json(document)
        for _ in range(_SAVE_ATTEMPTS):
            current = await self._db.read(lambda conn: _current_version(conn, client_id))
            if if_version is not None and current not in if_version:
                raise VersionConflictError(client_id, current)
            try:
                return await self._insert(client_id, current + 1, document, encoded, changed_by)
            except _VersionTakenError:
                continue  # read again: a conflict if ``if_version`` no longer holds
        raise StoreError(f"client {client_id!r}: too many concurrent saves, none of this one's won")

    async def _insert(
        self, client_id: str, version: int, document: PolicyDocument, encoded: str, by: str
    ) -> StoredPolicy:
        """Insert ``version`` (the unique key refuses it if taken) and apply the retention."""
        retention = self.retention
        loop = asyncio.get_running_loop()

        def write(conn: sqlite3.Connection) -> StoredPolicy:
            changed_at = datetime.now(UTC)
            try:
                conn.execute(
                    "INSERT INTO policy_versions (client_id, version, document, changed_at,"
                    " changed_by) VALUES (?, ?, ?, ?, ?)",
                    (client_id, version, encoded, changed_at.isoformat(), by),
                )
            except sqlite3.IntegrityError as exc:
                raise _VersionTakenError from exc
            prune_versions(conn, "policy_versions", client_id, version, changed_at, retention)
            return StoredPolicy(client_id, version, document, changed_at, by)

        def publish(saved: StoredPolicy) -> None:
            change = PolicyChange(saved.client_id, saved.version)
            loop.call_soon_threadsafe(self._changes.publish, change)

        return await self._db.write(write, on_commit=publish)
