"""``ports.SupervisionStore`` on SQLite: every kept version of each client's settings and grants.

One row a version (``supervision_versions``), holding the whole state after one change: the
settings as their canonical JSON, the grant set as a JSON array of grant records. Versions are
unique by the key ``(client_id, version)``; a save is a compare-and-set on the version the caller
read: in one transaction it reads the current version, refuses anything but ``if_version``, and
inserts ``if_version + 1`` (a save that took that version first makes the insert fail on the key,
which is a conflict too: nothing rests on SQLite's single writer). A committed save is published
on the change feed (``ChangeKind.SUPERVISION``) from the writer thread right after COMMIT, as
the policy saves are. Retention prunes like the policies' (the version written is never pruned).
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from typing import Final

from callgate.domain import (
    ChangeKind,
    GrantRecord,
    PolicyChange,
    Retention,
    StoredSupervision,
    StoreError,
    SupervisionEdit,
    SupervisionPage,
    VersionConflictError,
    decode_grants,
    decode_settings,
    grants_json,
    settings_json,
)
from callgate.policy.settings import CallControlSettings
from callgate.ports import ChangeFeed
from callgate.store.db import Database
from callgate.store.policies import prune_versions

__all__ = ["SupervisionRepository"]

_NO_BOUND: Final = 2**63 - 1
_COLUMNS: Final = (
    "client_id, version, settings, settings_version, grants, changed_at, changed_by, change,"
    " grant_id"
)


def _decode(row: sqlite3.Row) -> StoredSupervision:
    client_id, version = str(row["client_id"]), int(row["version"])
    try:
        settings = decode_settings(row["settings"])
        grants = decode_grants(row["grants"])
        change = SupervisionEdit(row["change"])
    except ValueError as exc:
        # Only validated settings and grants are ever written; this means outside damage.
        raise StoreError(f"stored supervision {client_id!r} v{version} is unreadable") from exc
    return StoredSupervision(
        client_id=client_id,
        version=version,
        settings=settings,
        settings_version=int(row["settings_version"]),
        grants=grants,
        changed_at=datetime.fromisoformat(row["changed_at"]),
        changed_by=str(row["changed_by"]),
        change=change,
        grant_id=None if row["grant_id"] is None else str(row["grant_id"]),
    )


def _current(conn: sqlite3.Connection, client_id: str) -> tuple[int, int]:
    """The client's (current version, its settings_version); (0, 0) when none is stored."""
    row = conn.execute(
        "SELECT version, settings_version FROM supervision_versions WHERE client_id = ?"
        " ORDER BY version DESC LIMIT 1",
        (client_id,),
    ).fetchone()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


class SupervisionRepository:
    """``ports.SupervisionStore`` on SQLite."""

    def __init__(self, db: Database, changes: ChangeFeed) -> None:
        self._db = db
        self._changes = changes
        self.retention = Retention()
        """Applied by every save; the daemon sets it from the settings."""

    async def current(self, client_id: str) -> StoredSupervision | None:
        def read(conn: sqlite3.Connection) -> StoredSupervision | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM supervision_versions"  # noqa: S608 - constants
                " WHERE client_id = ? ORDER BY version DESC LIMIT 1",
                (client_id,),
            ).fetchone()
            return None if row is None else _decode(row)

        return await self._db.read(read)

    async def all_current(self) -> list[StoredSupervision]:
        def read(conn: sqlite3.Connection) -> list[StoredSupervision]:
            rows = conn.execute(
                "SELECT s.* FROM supervision_versions AS s"
                " JOIN (SELECT client_id, MAX(version) AS version FROM supervision_versions"
                "       GROUP BY client_id) AS newest USING (client_id, version)"
                " ORDER BY s.client_id"
            ).fetchall()
            return [_decode(row) for row in rows]

        return await self._db.read(read)

    async def history_page(
        self, client_id: str, *, limit: int, before: int | None = None
    ) -> SupervisionPage:
        def read(conn: sqlite3.Connection) -> SupervisionPage:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM supervision_versions"  # noqa: S608 - constants
                " WHERE client_id = ? AND version < ? ORDER BY version DESC LIMIT ?",
                (client_id, before if before is not None else _NO_BOUND, limit + 1),
            ).fetchall()
            page = tuple(_decode(row) for row in rows[:limit])
            more = len(rows) > limit
            return SupervisionPage(page, page[-1].version if more and page else None)

        return await self._db.read(read)

    async def save(
        self,
        client_id: str,
        *,
        settings: CallControlSettings,
        grants: tuple[GrantRecord, ...],
        changed_by: str,
        change: SupervisionEdit,
        grant_id: str | None = None,
        if_version: int,
    ) -> StoredSupervision:
        encoded_settings, encoded_grants = settings_json(settings), grants_json(grants)
        retention = self.retention
        loop = asyncio.get_running_loop()

        def write(conn: sqlite3.Connection) -> StoredSupervision:
            current, settings_version = _current(conn, client_id)
            if current != if_version:
                raise VersionConflictError(client_id, current)
            version = current + 1
            if change is SupervisionEdit.SETTINGS:
                settings_version = version
            changed_at = datetime.now(UTC)
            try:
                conn.execute(
                    f"INSERT INTO supervision_versions ({_COLUMNS})"  # noqa: S608 - constants
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        client_id,
                        version,
                        encoded_settings,
                        settings_version,
                        encoded_grants,
                        changed_at.isoformat(),
                        changed_by,
                        str(change),
                        grant_id,
                    ),
                )
            except sqlite3.IntegrityError:
                raise VersionConflictError(client_id, version) from None
            prune_versions(conn, "supervision_versions", client_id, version, changed_at, retention)
            return StoredSupervision(
                client_id,
                version,
                settings,
                settings_version,
                grants,
                changed_at,
                changed_by,
                change,
                grant_id,
            )

        def publish(saved: StoredSupervision) -> None:
            event = PolicyChange(saved.client_id, saved.version, ChangeKind.SUPERVISION)
            loop.call_soon_threadsafe(self._changes.publish, event)

        return await self._db.write(write, on_commit=publish)
