"""Every version of every client's policy document, kept forever.

A client's current policy is its newest version. Versions count up from 1 per client; version 0
means "nothing stored" and is never written. Resetting a client to the default (HTTP ``DELETE``)
is a new version that holds the default document, so the history shows who reset it and when.

The optimistic-concurrency check (HTTP ``If-Match``) happens inside the write transaction, so two
operators racing cannot both win against the same version.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from callgate.policy import PolicyDocument, PolicyValidationError, parse_document
from callgate.store.db import Database, StoreError

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS policy_versions (
        client_id  TEXT    NOT NULL,
        version    INTEGER NOT NULL CHECK (version > 0),
        document   TEXT    NOT NULL,
        changed_at TEXT    NOT NULL,
        changed_by TEXT    NOT NULL,
        PRIMARY KEY (client_id, version)
    ) WITHOUT ROWID""",
)


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    client_id: str
    version: int
    document: PolicyDocument
    changed_at: datetime
    changed_by: str


class VersionConflictError(StoreError):
    """The write expected another current version (HTTP 412); nothing was written."""

    def __init__(self, client_id: str, current: int) -> None:
        super().__init__(f"client {client_id!r} is at version {current}")
        self.client_id = client_id
        self.current = current


def _encode(document: PolicyDocument) -> str:
    return json.dumps(document.to_json(), separators=(",", ":"), sort_keys=True)


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


def _current_version(conn: sqlite3.Connection, client_id: str) -> int:
    row = conn.execute(
        "SELECT MAX(version) FROM policy_versions WHERE client_id = ?", (client_id,)
    ).fetchone()
    return int(row[0] or 0)


class PolicyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

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
    ) -> StoredPolicy:
        """Store ``document`` as the client's next version; durable when this returns.

        ``if_version``: the versions the caller accepts as current (from ``If-Match``); when the
        current version is not among them, raise ``VersionConflictError`` and write nothing.
        """
        encoded = _encode(document)

        def write(conn: sqlite3.Connection) -> StoredPolicy:
            current = _current_version(conn, client_id)
            if if_version is not None and current not in if_version:
                raise VersionConflictError(client_id, current)
            changed_at = datetime.now(UTC)
            conn.execute(
                "INSERT INTO policy_versions (client_id, version, document, changed_at,"
                " changed_by) VALUES (?, ?, ?, ?, ?)",
                (client_id, current + 1, encoded, changed_at.isoformat(), changed_by),
            )
            return StoredPolicy(client_id, current + 1, document, changed_at, changed_by)

        return await self._db.write(write)
