"""``ports.SupervisionStore`` on PostgreSQL: every kept version of each client's settings and
grants, shared by every instance.

As in SQLite (``callgate.store.supervision``), one row a version holds the whole state after one
change, unique by ``(client_id, version)``. A save is a compare-and-set in one READ COMMITTED
transaction: it reads the client's ``supervision_heads`` row, refuses anything but
``if_version``, and inserts ``if_version + 1``; a concurrent save that inserted that version
first makes this insert wait for its commit and fail with a unique violation, a conflict. The
same transaction moves the head and ``NOTIFY``s ``[client_id, version, "supervision"]`` on the
policies' channel (delivered to every instance at the commit); after the commit the change is
published on this instance's feed at once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from psycopg import errors

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
from callgate.store.postgresql.db import Connection, PgDatabase
from callgate.store.postgresql.policies import CHANNEL, change_payload

__all__ = ["PgSupervisionRepository"]

_NO_BOUND: Final = 2**63 - 1
_COLUMNS: Final = (
    "v.client_id, v.version, v.settings, v.settings_version, v.grants, v.changed_at,"
    " v.changed_by, v.change, v.grant_id"
)


def _decode(row: tuple[Any, ...]) -> StoredSupervision:
    client_id, version, settings, settings_version, grants, changed_at, by, change, grant_id = row
    try:
        decoded = StoredSupervision(
            client_id=str(client_id),
            version=int(version),
            settings=decode_settings(settings),
            settings_version=int(settings_version),
            grants=decode_grants(grants),
            changed_at=changed_at.astimezone(UTC),
            changed_by=str(by),
            change=SupervisionEdit(change),
            grant_id=None if grant_id is None else str(grant_id),
        )
    except ValueError as exc:
        # Only validated settings and grants are ever written; this means outside damage.
        raise StoreError(f"stored supervision {client_id!r} v{version} is unreadable") from exc
    return decoded


async def _current(conn: Connection, client_id: str) -> tuple[int, int]:
    """The client's (current version, its settings_version); (0, 0) when none is stored."""
    cur = await conn.execute(
        "SELECT v.version, v.settings_version FROM supervision_heads AS h"
        " JOIN supervision_versions AS v USING (client_id, version) WHERE h.client_id = %s",
        (client_id,),
    )
    row = await cur.fetchone()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


class PgSupervisionRepository:
    """``ports.SupervisionStore`` on PostgreSQL."""

    def __init__(self, db: PgDatabase, changes: ChangeFeed) -> None:
        self._db = db
        self._changes = changes
        self.retention = Retention()
        """Applied by every save; the composition root sets it from the settings."""

    async def current(self, client_id: str) -> StoredSupervision | None:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM supervision_heads AS h"  # noqa: S608 - constants
                " JOIN supervision_versions AS v USING (client_id, version)"
                " WHERE h.client_id = %s",
                (client_id,),
            )
            row = await cur.fetchone()
        return None if row is None else _decode(row)

    async def all_current(self) -> list[StoredSupervision]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM supervision_heads AS h"  # noqa: S608 - constants
                " JOIN supervision_versions AS v USING (client_id, version)"
                " ORDER BY h.client_id"
            )
            rows = await cur.fetchall()
        return [_decode(row) for row in rows]

    async def history_page(
        self, client_id: str, *, limit: int, before: int | None = None
    ) -> SupervisionPage:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM supervision_versions AS v"  # noqa: S608 - constants
                " WHERE v.client_id = %s AND v.version < %s ORDER BY v.version DESC LIMIT %s",
                (client_id, before if before is not None else _NO_BOUND, limit + 1),
            )
            rows = await cur.fetchall()
        page = tuple(_decode(row) for row in rows[:limit])
        more = len(rows) > limit
        return SupervisionPage(page, page[-1].version if more and page else None)

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
        async with self._db.transaction() as conn:
            current, settings_version = await _current(conn, client_id)
            if current != if_version:
                raise VersionConflictError(client_id, current)
            version = current + 1
            if change is SupervisionEdit.SETTINGS:
                settings_version = version
            changed_at = datetime.now(UTC)
            try:
                await conn.execute(
                    "INSERT INTO supervision_versions (client_id, version, settings,"
                    " settings_version, grants, changed_at, changed_by, change, grant_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        client_id,
                        version,
                        encoded_settings,
                        settings_version,
                        encoded_grants,
                        changed_at,
                        changed_by,
                        str(change),
                        grant_id,
                    ),
                )
            except errors.UniqueViolation:
                raise VersionConflictError(client_id, version) from None
            await conn.execute(
                "INSERT INTO supervision_heads (client_id, version) VALUES (%s, %s)"
                " ON CONFLICT (client_id) DO UPDATE SET version = EXCLUDED.version",
                (client_id, version),
            )
            await conn.execute(
                "DELETE FROM supervision_versions WHERE client_id = %s AND version <= %s",
                (client_id, version - retention.keep),
            )
            if retention.max_age is not None:
                await conn.execute(
                    "DELETE FROM supervision_versions"
                    " WHERE client_id = %s AND version < %s AND changed_at < %s",
                    (client_id, version, changed_at - retention.max_age),
                )
            event = PolicyChange(client_id, version, ChangeKind.SUPERVISION)
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, change_payload(event)))
        self._changes.publish(event)
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
