"""``ports.PolicyStore`` on PostgreSQL: every kept version of every client's policy document.

Versions are unique by the key ``(client_id, version)``, and that key alone decides who gets a
version, across any number of instances: a save reads the client's current version, checks it
against ``if_version`` (HTTP ``If-Match``) and inserts the next one, in one READ COMMITTED
transaction. A concurrent save that inserted the same version first makes this insert wait for
its commit and then fail with a unique violation: nothing of this save is written, and it reads
again — a ``VersionConflictError`` if the version it expected is gone, another try otherwise.

``policy_heads`` holds each client's current version, written by the same transaction, so
``current``/``all_current`` and the change feed's catch-up read one row per client. The save
also ``NOTIFY``s ``(client_id, version)`` on ``CHANNEL``: PostgreSQL delivers it to every
listening instance at the commit, in commit order; after the commit the change is published on
this instance's feed at once (the echo of the NOTIFY is then a duplicate the feed drops).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, Final

from psycopg import errors

from callgate.domain import (
    ChangeKind,
    HistoryPage,
    PolicyChange,
    Retention,
    StoredJson,
    StoredPolicy,
    StoreError,
    VersionConflictError,
    canonical_json,
)
from callgate.policy import PolicyDocument, PolicyValidationError, parse_document
from callgate.ports import ChangeFeed
from callgate.store.postgresql.db import Connection, PgDatabase

__all__ = ["CHANNEL", "PgPolicyRepository", "change_payload", "parse_payload"]

CHANNEL: Final = "callgate_policy_changes"
"""The NOTIFY channel of committed policy changes."""

_SAVE_ATTEMPTS: Final = 100
"""Saves without ``if_version`` that lose the race for the next version retry this often: each
loss means another save got through, so only a storm of concurrent writers to one client gets
this far (then ``StoreError``)."""

_NO_BOUND: Final = 2**63 - 1

_COLUMNS: Final = "v.client_id, v.version, v.document, v.changed_at, v.changed_by"


def change_payload(change: PolicyChange) -> str:
    """The NOTIFY payload of ``change``: a JSON array, whatever the client id holds. A policy
    change is ``[client_id, version]`` (as before supervision existed), a change of the settings
    and grants ``[client_id, version, "supervision"]``."""
    if change.kind is ChangeKind.POLICY:
        return json.dumps([change.client_id, change.version])
    return json.dumps([change.client_id, change.version, str(change.kind)])


def parse_payload(payload: str) -> PolicyChange | None:
    """The change a NOTIFY payload names; None for one that is not ours."""
    try:
        client_id, version, *kind = json.loads(payload)
        parsed = ChangeKind(kind[0]) if kind else ChangeKind.POLICY
    except (ValueError, TypeError):
        return None
    if (
        not isinstance(client_id, str)
        or not isinstance(version, int)
        or version < 1
        or len(kind) > 1
    ):
        return None
    return PolicyChange(client_id, version, parsed)


class _VersionTakenError(Exception):
    """Another save inserted the version this one meant to write (the unique key said so)."""


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _decode(row: tuple[Any, ...]) -> StoredPolicy:
    client_id, version, document, changed_at, changed_by = row
    try:
        parsed = parse_document(json.loads(document))
    except (ValueError, PolicyValidationError) as exc:
        # Only a document that passed validation is ever written; this means outside damage.
        raise StoreError(f"stored policy {client_id!r} v{version} is unreadable: {exc}") from exc
    return StoredPolicy(str(client_id), int(version), parsed, _utc(changed_at), str(changed_by))


def _stored_json(row: tuple[Any, ...]) -> StoredJson:
    version, changed_at, changed_by, document = row
    return StoredJson(int(version), _utc(changed_at).isoformat(), str(changed_by), str(document))


async def _current_version(conn: Connection, client_id: str) -> int:
    cur = await conn.execute("SELECT version FROM policy_heads WHERE client_id = %s", (client_id,))
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


class PgPolicyRepository:
    """``ports.PolicyStore`` on PostgreSQL."""

    def __init__(self, db: PgDatabase, changes: ChangeFeed) -> None:
        self._db = db
        self._changes = changes
        self.retention = Retention()
        """Applied by every save; the composition root sets it from the settings."""

    async def current(self, client_id: str) -> StoredPolicy | None:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM policy_heads AS h"  # noqa: S608 - a constant
                " JOIN policy_versions AS v USING (client_id, version) WHERE h.client_id = %s",
                (client_id,),
            )
            row = await cur.fetchone()
        return None if row is None else _decode(row)

    async def all_current(self) -> list[StoredPolicy]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM policy_heads AS h"  # noqa: S608 - a constant
                " JOIN policy_versions AS v USING (client_id, version) ORDER BY h.client_id"
            )
            rows = await cur.fetchall()
        return [_decode(row) for row in rows]

    async def all_current_json(self) -> list[tuple[str, StoredJson]]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT v.client_id, v.version, v.changed_at, v.changed_by, v.document"
                " FROM policy_heads AS h JOIN policy_versions AS v USING (client_id, version)"
                " ORDER BY h.client_id"
            )
            rows = await cur.fetchall()
        return [(str(row[0]), _stored_json(row[1:])) for row in rows]

    async def current_json(self, client_id: str) -> StoredJson | None:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT v.version, v.changed_at, v.changed_by, v.document FROM policy_heads AS h"
                " JOIN policy_versions AS v USING (client_id, version) WHERE h.client_id = %s",
                (client_id,),
            )
            row = await cur.fetchone()
        return None if row is None else _stored_json(row)

    async def history_page(
        self, client_id: str, *, limit: int, before: int | None = None, max_bytes: int
    ) -> HistoryPage:
        """See ``ports.PolicyStore``: the sizes are read first, then only the documents that
        fit the page, so the versions past the budget are never fetched."""
        below = before if before is not None else _NO_BOUND
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT version, char_length(document) FROM policy_versions"
                " WHERE client_id = %s AND version < %s ORDER BY version DESC LIMIT %s",
                (client_id, below, limit + 1),
            )
            sizes = await cur.fetchall()
            page: list[int] = []
            size = 0
            for version, length in sizes[:limit]:
                size += int(length)
                if page and size > max_bytes:
                    break
                page.append(int(version))
            if not page:
                return HistoryPage((), None)
            more = len(sizes) > len(page)
            cur = await conn.execute(
                "SELECT version, changed_at, changed_by, document FROM policy_versions"
                " WHERE client_id = %s AND version = ANY(%s) ORDER BY version DESC",
                (client_id, page),
            )
            rows = await cur.fetchall()
        entries = tuple(_stored_json(row) for row in rows)
        if not entries:  # pruned in between: what remains is older
            return HistoryPage((), None)
        return HistoryPage(entries, entries[-1].version if more else None)

    async def history(self, client_id: str) -> list[StoredPolicy]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM policy_versions AS v"  # noqa: S608 - a constant
                " WHERE v.client_id = %s ORDER BY v.version DESC",
                (client_id,),
            )
            rows = await cur.fetchall()
        return [_decode(row) for row in rows]

    async def save(
        self,
        client_id: str,
        document: PolicyDocument,
        changed_by: str,
        *,
        if_version: Collection[int] | None = None,
        encoded: str | None = None,
    ) -> StoredPolicy:
        """Store ``document`` as the client's next version (see the module docstring); durable
        when this returns, then published on the feed."""
        if encoded is None:
            encoded = canonical_json(document)
        for _ in range(_SAVE_ATTEMPTS):
            try:
                saved = await self._insert(client_id, document, encoded, changed_by, if_version)
            except _VersionTakenError:
                continue  # read again: a conflict if ``if_version`` no longer holds
            self._changes.publish(PolicyChange(saved.client_id, saved.version))
            return saved
        raise StoreError(f"client {client_id!r}: too many concurrent saves, none of this one's won")

    async def _insert(
        self,
        client_id: str,
        document: PolicyDocument,
        encoded: str,
        by: str,
        if_version: Collection[int] | None,
    ) -> StoredPolicy:
        retention = self.retention
        async with self._db.transaction() as conn:
            current = await _current_version(conn, client_id)
            if if_version is not None and current not in if_version:
                raise VersionConflictError(client_id, current)
            version = current + 1
            changed_at = datetime.now(UTC)
            try:
                await conn.execute(
                    "INSERT INTO policy_versions (client_id, version, document, changed_at,"
                    " changed_by) VALUES (%s, %s, %s, %s, %s)",
                    (client_id, version, encoded, changed_at, by),
                )
            except errors.UniqueViolation as exc:
                raise _VersionTakenError from exc
            await conn.execute(
                "INSERT INTO policy_heads (client_id, version) VALUES (%s, %s)"
                " ON CONFLICT (client_id) DO UPDATE SET version = EXCLUDED.version",
                (client_id, version),
            )
            await conn.execute(
                "DELETE FROM policy_versions WHERE client_id = %s AND version <= %s",
                (client_id, version - retention.keep),
            )
            if retention.max_age is not None:
                await conn.execute(
                    "DELETE FROM policy_versions"
                    " WHERE client_id = %s AND version < %s AND changed_at < %s",
                    (client_id, version, changed_at - retention.max_age),
                )
            await conn.execute(
                "SELECT pg_notify(%s, %s)",
                (CHANNEL, change_payload(PolicyChange(client_id, version))),
            )
        return StoredPolicy(client_id, version, document, changed_at, by)
