"""``ports.ReplaceStore`` on PostgreSQL: PIN hashes, counted PIN attempts, replacements in force,
and the AstDB deletions owed to a PBX.

Means, at READ COMMITTED, across instances:

- A reservation upserts its target's lock row, then its phone's (that order always: two
  reservations can wait on each other's phone row but never in a cycle), and holds both row
  locks to its commit. Only then does it read the failures: each later statement takes a fresh
  snapshot, so it sees every attempt the previous holder of either lock committed. Old attempts
  are deleted ``FOR UPDATE SKIP LOCKED``, so a reservation never waits on another's cleanup
  (which could otherwise close a cycle through rows of other targets).
- Replacements: the key ``(client_id, phone)`` and a unique index on ``(client_id, to_ext)``.
  Two takeovers of one phone or one extension at once cannot both insert: the second waits for
  the first's commit, fails on the key, and runs again, then displacing the first.
- ``end_replacement`` locks the phone's row (``FOR UPDATE``) before it compares with ``only``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from psycopg import errors

from callgate.domain import (
    DEFAULT_PBX,
    AstDbKey,
    Attempt,
    FailureTimes,
    PendingDeletion,
    Replacement,
    Reservation,
    StoreError,
    Takeover,
)
from callgate.store.postgresql.db import Connection, PgDatabase

__all__ = ["PgReplaceRepository"]

_TAKEOVER_ATTEMPTS: Final = 20
"""Concurrent takeovers of one phone or extension retry this often (each loss: one got in)."""

_CLEANUP_BATCH: Final = 1000
"""Old attempts one reservation deletes at most (the reads filter by time anyway)."""

_TAKE_LOCK: Final = (
    "INSERT INTO replace_attempt_locks (client_id, kind, key, reservations)"
    " VALUES (%s, %s, %s, 1) ON CONFLICT (client_id, kind, key)"
    " DO UPDATE SET reservations = replace_attempt_locks.reservations + 1"
)

_REPLACEMENT: Final = "client_id, phone, from_ext, to_ext, since, pbx"


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("naive datetime: callgate stores aware UTC times only")
    return at


def _replacement(row: tuple[Any, ...]) -> Replacement:
    client_id, phone, from_ext, to_ext, since, pbx = row
    return Replacement(client_id, phone, from_ext, to_ext, since.astimezone(UTC), pbx)


async def _times(conn: Connection, client_id: str, column: str, key: str, since: datetime) -> Any:
    # ``column`` is one of two literals chosen below, never user input.
    cur = await conn.execute(
        f"SELECT at FROM replace_failures WHERE client_id = %s AND {column} = %s AND at > %s"  # noqa: S608
        " ORDER BY at",
        (client_id, key, since),
    )
    return tuple(row[0].astimezone(UTC) for row in await cur.fetchall())


async def _failures(
    conn: Connection, client_id: str, target: str, phone: str, since: datetime
) -> FailureTimes:
    return FailureTimes(
        await _times(conn, client_id, "target", target, since),
        await _times(conn, client_id, "phone", phone, since),
    )


class PgReplaceRepository:
    """``ports.ReplaceStore`` on PostgreSQL."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    # -- PINs ------------------------------------------------------------------------------

    async def set_pin(self, client_id: str, ext: str, pin_hash: str, now: datetime) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO replace_pins (client_id, ext, pin_hash, set_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (client_id, ext) DO UPDATE"
                " SET pin_hash = EXCLUDED.pin_hash, set_at = EXCLUDED.set_at",
                (client_id, ext, pin_hash, _aware(now)),
            )

    async def delete_pin(self, client_id: str, ext: str) -> bool:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM replace_pins WHERE client_id = %s AND ext = %s", (client_id, ext)
            )
            return cur.rowcount > 0

    async def pin_hash(self, client_id: str, ext: str) -> str | None:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT pin_hash FROM replace_pins WHERE client_id = %s AND ext = %s",
                (client_id, ext),
            )
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    # -- PIN attempts ------------------------------------------------------------------------

    async def failure_times(
        self, client_id: str, target: str, phone: str, since: datetime
    ) -> FailureTimes:
        since = _aware(since)
        async with self._db.connection() as conn:
            return await _failures(conn, client_id, target, phone, since)

    async def reserve_attempt(
        self, client_id: str, target: str, phone: str, now: datetime, since: datetime
    ) -> Reservation:
        now, since = _aware(now), _aware(since)
        async with self._db.transaction() as conn:
            await conn.execute(_TAKE_LOCK, (client_id, "target", target))
            await conn.execute(_TAKE_LOCK, (client_id, "phone", phone))
            await conn.execute(
                "DELETE FROM replace_failures WHERE id IN (SELECT id FROM replace_failures"
                " WHERE at <= %s LIMIT %s FOR UPDATE SKIP LOCKED)",
                (since, _CLEANUP_BATCH),
            )
            before = await _failures(conn, client_id, target, phone, since)
            cur = await conn.execute(
                "INSERT INTO replace_failures (client_id, target, phone, at)"
                " VALUES (%s, %s, %s, %s) RETURNING id",
                (client_id, target, phone, now),
            )
            row = await cur.fetchone()
        assert row is not None
        return Reservation(Attempt(int(row[0])), before)

    async def forget_attempt(self, attempt: Attempt) -> None:
        async with self._db.connection() as conn:
            await conn.execute("DELETE FROM replace_failures WHERE id = %s", (attempt.id,))

    # -- replacements ----------------------------------------------------------------------

    async def start_replacement(
        self, new: Replacement, writes: Sequence[AstDbKey] = ()
    ) -> Takeover:
        since = _aware(new.since)
        for _ in range(_TAKEOVER_ATTEMPTS):
            try:
                return await self._take_over(new, since, writes)
            except _TakenError:
                continue
        raise StoreError(f"phone {new.phone!r}: too many concurrent replacements, none won")

    async def _take_over(
        self, new: Replacement, since: datetime, writes: Sequence[AstDbKey]
    ) -> Takeover:
        async with self._db.transaction() as conn:
            try:
                return await _take_over(conn, new, since, writes)
            except (errors.UniqueViolation, errors.DeadlockDetected) as exc:
                raise _TakenError from exc

    async def end_replacement(
        self, client_id: str, phone: str, only: Replacement | None = None
    ) -> Replacement | None:
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                f"SELECT {_REPLACEMENT} FROM replacements"  # noqa: S608 - a constant
                " WHERE client_id = %s AND phone = %s FOR UPDATE",
                (client_id, phone),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            current = _replacement(row)
            if only is not None and current != only:
                return None
            await conn.execute(
                "DELETE FROM replacements WHERE client_id = %s AND phone = %s", (client_id, phone)
            )
        return current

    async def replacement(self, client_id: str, phone: str) -> Replacement | None:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_REPLACEMENT} FROM replacements"  # noqa: S608 - a constant
                " WHERE client_id = %s AND phone = %s",
                (client_id, phone),
            )
            row = await cur.fetchone()
        return None if row is None else _replacement(row)

    async def replacements(self, client_id: str) -> Sequence[Replacement]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_REPLACEMENT} FROM replacements"  # noqa: S608 - a constant
                " WHERE client_id = %s ORDER BY phone",
                (client_id,),
            )
            rows = await cur.fetchall()
        return [_replacement(row) for row in rows]

    # -- AstDB deletions waiting for Asterisk -----------------------------------------------

    async def add_pending(
        self, client_id: str, keys: Sequence[AstDbKey], *, pbx: str = DEFAULT_PBX
    ) -> None:
        if not keys:
            return
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO replace_astdb_pending (pbx, client_id, family, key)"
                " SELECT %s, %s, f, k FROM unnest(%s::text[], %s::text[]) AS u (f, k)"
                " ON CONFLICT DO NOTHING",
                (pbx, client_id, [family for family, _ in keys], [key for _, key in keys]),
            )

    async def pending(
        self, client_id: str | None = None, *, pbx: str | None = None
    ) -> Sequence[PendingDeletion]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT pbx, client_id, family, key FROM replace_astdb_pending"
                " WHERE (%s::text IS NULL OR pbx = %s) AND (%s::text IS NULL OR client_id = %s)"
                " ORDER BY pbx, client_id, family, key",
                (pbx, pbx, client_id, client_id),
            )
            rows = await cur.fetchall()
        return [PendingDeletion(row[0], row[1], (row[2], row[3])) for row in rows]

    async def forget_pending(
        self, client_id: str, key: AstDbKey, *, pbx: str = DEFAULT_PBX
    ) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "DELETE FROM replace_astdb_pending"
                " WHERE pbx = %s AND client_id = %s AND family = %s AND key = %s",
                (pbx, client_id, *key),
            )


async def _take_over(
    conn: Connection, new: Replacement, since: datetime, writes: Sequence[AstDbKey]
) -> Takeover:
    """One try of ``start_replacement`` in the caller's transaction."""
    if writes:
        await conn.execute(
            "DELETE FROM replace_astdb_pending WHERE pbx = %s AND client_id = %s"
            " AND (family, key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            (new.pbx, new.client_id, [f for f, _ in writes], [k for _, k in writes]),
        )
    # Locked in phone order first: two takeovers touching the same rows lock them in one order.
    cur = await conn.execute(
        f"SELECT {_REPLACEMENT} FROM replacements"  # noqa: S608 - a constant
        " WHERE client_id = %s AND (phone = %s OR to_ext = %s) ORDER BY phone FOR UPDATE",
        (new.client_id, new.phone, new.to_ext),
    )
    gone = [_replacement(row) for row in await cur.fetchall()]
    await conn.execute(
        "DELETE FROM replacements WHERE client_id = %s AND (phone = %s OR to_ext = %s)",
        (new.client_id, new.phone, new.to_ext),
    )
    await conn.execute(
        f"INSERT INTO replacements ({_REPLACEMENT})"  # noqa: S608 - a constant
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (new.client_id, new.phone, new.from_ext, new.to_ext, since, new.pbx),
    )
    previous = next((r for r in gone if r.phone == new.phone), None)
    return Takeover(previous, tuple(r for r in gone if r.phone != new.phone))


class _TakenError(Exception):
    """A concurrent takeover inserted the phone or the extension first (the unique key said
    so); the transaction was rolled back and is run again."""
