"""``ports.ReplaceStore`` on SQLite: PIN hashes, counted PIN attempts, replacements in force, and
the AstDB deletions owed to a PBX.

Everything here survives a restart and is shared by every instance that uses the same store:
that is what makes the lockout hold ("5 wrong PINs in 15 minutes", policy rule 8) and what lets
``GET /client/{id}/replacements`` and the revocation of replacements work after a restart. The
store only persists and counts; ``replace.lockout`` says what the counts mean.

A PIN attempt reservation is linearizable per target and per phone by its lock rows
(``replace_attempt_locks``): it upserts the target's row, then the phone's (that order always,
so two reservations never wait on each other in a cycle), and only then reads the failures and
inserts its own. In SQLite the whole transaction holds the writer; in PostgreSQL the two upserts
are row locks held to the commit, so the same statements serialise the reservations of one target
or one phone and nothing else, at READ COMMITTED.

Times are stored as UNIX seconds (REAL, UTC) and handed out as aware ``datetime``s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from callgate.domain import (
    DEFAULT_PBX,
    AstDbKey,
    Attempt,
    FailureTimes,
    PendingDeletion,
    Replacement,
    Reservation,
    Takeover,
)
from callgate.store.db import Database

__all__ = ["AstDbKey", "Attempt", "ReplaceRepository", "Replacement", "Takeover"]


def _ts(at: datetime) -> float:
    if at.tzinfo is None:
        raise ValueError("naive datetime: callgate stores aware UTC times only")
    return at.timestamp()


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _replacement(row: sqlite3.Row) -> Replacement:
    return Replacement(
        row["client_id"],
        row["phone"],
        row["from_ext"],
        row["to_ext"],
        _dt(row["since"]),
        row["pbx"],
    )


def _failure_times(
    conn: sqlite3.Connection, client_id: str, column: str, key: str, since: float
) -> tuple[datetime, ...]:
    # ``column`` is one of two literals chosen below, never user input.
    rows = conn.execute(
        f"SELECT at FROM replace_failures WHERE client_id = ? AND {column} = ? AND at > ?"  # noqa: S608
        " ORDER BY at",
        (client_id, key, since),
    ).fetchall()
    return tuple(_dt(row["at"]) for row in rows)


def _failures(
    conn: sqlite3.Connection, client_id: str, target: str, phone: str, since: float
) -> FailureTimes:
    return FailureTimes(
        _failure_times(conn, client_id, "target", target, since),
        _failure_times(conn, client_id, "phone", phone, since),
    )


_TAKE_LOCK = (
    "INSERT INTO replace_attempt_locks (client_id, kind, key, reservations) VALUES (?, ?, ?, 1)"
    " ON CONFLICT (client_id, kind, key) DO UPDATE SET reservations = reservations + 1"
)


class ReplaceRepository:
    """``ports.ReplaceStore`` on SQLite."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- PINs ------------------------------------------------------------------------------

    async def set_pin(self, client_id: str, ext: str, pin_hash: str, now: datetime) -> None:
        await self._db.write(
            lambda conn: conn.execute(
                "INSERT INTO replace_pins (client_id, ext, pin_hash, set_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (client_id, ext) DO UPDATE"
                " SET pin_hash = excluded.pin_hash, set_at = excluded.set_at",
                (client_id, ext, pin_hash, _ts(now)),
            )
        )

    async def delete_pin(self, client_id: str, ext: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM replace_pins WHERE client_id = ? AND ext = ?", (client_id, ext)
            )
            return cur.rowcount > 0

        return await self._db.write(run)

    async def pin_hash(self, client_id: str, ext: str) -> str | None:
        def run(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT pin_hash FROM replace_pins WHERE client_id = ? AND ext = ?",
                (client_id, ext),
            ).fetchone()
            return None if row is None else str(row["pin_hash"])

        return await self._db.read(run)

    # -- PIN attempts ------------------------------------------------------------------------

    async def failure_times(
        self, client_id: str, target: str, phone: str, since: datetime
    ) -> FailureTimes:
        after = _ts(since)
        return await self._db.read(lambda conn: _failures(conn, client_id, target, phone, after))

    async def reserve_attempt(
        self, client_id: str, target: str, phone: str, now: datetime, since: datetime
    ) -> Reservation:
        """Count one attempt, with the attempts counted before it (see the module docstring)."""
        at, after = _ts(now), _ts(since)

        def run(conn: sqlite3.Connection) -> Reservation:
            conn.execute(_TAKE_LOCK, (client_id, "target", target))
            conn.execute(_TAKE_LOCK, (client_id, "phone", phone))
            conn.execute("DELETE FROM replace_failures WHERE at <= ?", (after,))
            before = _failures(conn, client_id, target, phone, after)
            cur = conn.execute(
                "INSERT INTO replace_failures (client_id, target, phone, at) VALUES (?, ?, ?, ?)",
                (client_id, target, phone, at),
            )
            assert cur.lastrowid is not None
            return Reservation(Attempt(cur.lastrowid), before)

        return await self._db.write(run)

    async def forget_attempt(self, attempt: Attempt) -> None:
        await self._db.write(
            lambda conn: conn.execute("DELETE FROM replace_failures WHERE id = ?", (attempt.id,))
        )

    # -- replacements ----------------------------------------------------------------------

    async def start_replacement(
        self, new: Replacement, writes: Sequence[AstDbKey] = ()
    ) -> Takeover:
        """Record that ``new.phone`` acts as ``new.to_ext`` from now on.

        One extension is answered by one phone: any other phone acting as ``new.to_ext`` is
        restored in the same transaction, and returned so its AstDB keys can be removed too.
        ``writes``: the AstDB keys about to be written for it, no longer pending deletion.
        """

        def run(conn: sqlite3.Connection) -> Takeover:
            conn.executemany(
                "DELETE FROM replace_astdb_pending"
                " WHERE pbx = ? AND client_id = ? AND family = ? AND key = ?",
                [(new.pbx, new.client_id, family, key) for family, key in writes],
            )
            previous = conn.execute(
                "SELECT * FROM replacements WHERE client_id = ? AND phone = ?",
                (new.client_id, new.phone),
            ).fetchone()
            others = conn.execute(
                "SELECT * FROM replacements WHERE client_id = ? AND to_ext = ? AND phone != ?",
                (new.client_id, new.to_ext, new.phone),
            ).fetchall()
            conn.execute(
                "DELETE FROM replacements WHERE client_id = ? AND (phone = ? OR to_ext = ?)",
                (new.client_id, new.phone, new.to_ext),
            )
            conn.execute(
                "INSERT INTO replacements (client_id, phone, from_ext, to_ext, since, pbx)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (new.client_id, new.phone, new.from_ext, new.to_ext, _ts(new.since), new.pbx),
            )
            return Takeover(
                None if previous is None else _replacement(previous),
                tuple(_replacement(row) for row in others),
            )

        return await self._db.write(run)

    async def end_replacement(
        self, client_id: str, phone: str, only: Replacement | None = None
    ) -> Replacement | None:
        """Remove the phone's replacement and return it (``None`` when it had none).

        With ``only``, remove it only if it is still that very replacement: a revocation must
        not end a newer replacement that was made while it was deciding.
        """

        def run(conn: sqlite3.Connection) -> Replacement | None:
            row = conn.execute(
                "SELECT * FROM replacements WHERE client_id = ? AND phone = ?",
                (client_id, phone),
            ).fetchone()
            if row is None:
                return None
            current = _replacement(row)
            if only is not None and current != only:
                return None
            conn.execute(
                "DELETE FROM replacements WHERE client_id = ? AND phone = ?", (client_id, phone)
            )
            return current

        return await self._db.write(run)

    # -- AstDB deletions waiting for Asterisk -----------------------------------------------

    async def add_pending(
        self, client_id: str, keys: Sequence[AstDbKey], *, pbx: str = DEFAULT_PBX
    ) -> None:
        await self._db.write(
            lambda conn: conn.executemany(
                "INSERT OR IGNORE INTO replace_astdb_pending (pbx, client_id, family, key)"
                " VALUES (?, ?, ?, ?)",
                [(pbx, client_id, family, key) for family, key in keys],
            )
        )

    async def pending(
        self, client_id: str | None = None, *, pbx: str | None = None
    ) -> Sequence[PendingDeletion]:
        """Every deletion still owed to AstDB, of ``client_id`` and ``pbx`` when given."""

        def run(conn: sqlite3.Connection) -> list[PendingDeletion]:
            where: list[str] = []
            args: list[str] = []
            if pbx is not None:
                where.append("pbx = ?")
                args.append(pbx)
            if client_id is not None:
                where.append("client_id = ?")
                args.append(client_id)
            sql = "SELECT pbx, client_id, family, key FROM replace_astdb_pending"
            if where:
                sql += " WHERE " + " AND ".join(where)
            rows = conn.execute(sql + " ORDER BY pbx, client_id, family, key", args).fetchall()
            return [
                PendingDeletion(row["pbx"], row["client_id"], (row["family"], row["key"]))
                for row in rows
            ]

        return await self._db.read(run)

    async def forget_pending(
        self, client_id: str, key: AstDbKey, *, pbx: str = DEFAULT_PBX
    ) -> None:
        await self._db.write(
            lambda conn: conn.execute(
                "DELETE FROM replace_astdb_pending"
                " WHERE pbx = ? AND client_id = ? AND family = ? AND key = ?",
                (pbx, client_id, *key),
            )
        )

    async def replacement(self, client_id: str, phone: str) -> Replacement | None:
        def run(conn: sqlite3.Connection) -> Replacement | None:
            row = conn.execute(
                "SELECT * FROM replacements WHERE client_id = ? AND phone = ?",
                (client_id, phone),
            ).fetchone()
            return None if row is None else _replacement(row)

        return await self._db.read(run)

    async def replacements(self, client_id: str) -> Sequence[Replacement]:
        def run(conn: sqlite3.Connection) -> list[Replacement]:
            rows = conn.execute(
                "SELECT * FROM replacements WHERE client_id = ? ORDER BY phone", (client_id,)
            ).fetchall()
            return [_replacement(row) for row in rows]

        return await self._db.read(run)
