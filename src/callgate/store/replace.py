"""The phone-replace repository: PIN hashes, wrong-PIN attempts, and replacements in force.

Everything here survives a restart and is shared by every instance that uses the same store:
that is what makes the lockout hold ("5 wrong PINs in 15 minutes", policy rule 8) and what lets
``GET /client/{id}/replacements`` and the revocation of replacements work after a restart.

Times are stored as UNIX seconds (REAL, UTC) and handed out as aware ``datetime``s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from callgate.domain import AstDbKey, Attempt, Replacement, Takeover
from callgate.replace.lockout import LockoutRules, LockState
from callgate.store.db import Database

__all__ = ["SCHEMA", "AstDbKey", "Attempt", "ReplaceRepository", "Replacement", "Takeover"]

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS replace_pins (
        client_id TEXT NOT NULL,
        ext TEXT NOT NULL,
        pin_hash TEXT NOT NULL,
        set_at REAL NOT NULL,
        PRIMARY KEY (client_id, ext)
    )""",
    # One row per PIN attempt that was not (yet) found right: a row is written before the PIN is
    # checked and removed only when it was right, so concurrent guesses cannot outrun the count
    # and a crash in the middle counts as a failure.
    """CREATE TABLE IF NOT EXISTS replace_failures (
        id INTEGER PRIMARY KEY,
        client_id TEXT NOT NULL,
        target TEXT NOT NULL,
        phone TEXT NOT NULL,
        at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS replace_failures_target"
    " ON replace_failures (client_id, target, at)",
    "CREATE INDEX IF NOT EXISTS replace_failures_phone ON replace_failures (client_id, phone, at)",
    "CREATE INDEX IF NOT EXISTS replace_failures_at ON replace_failures (at)",
    """CREATE TABLE IF NOT EXISTS replacements (
        client_id TEXT NOT NULL,
        phone TEXT NOT NULL,
        from_ext TEXT NOT NULL,
        to_ext TEXT NOT NULL,
        since REAL NOT NULL,
        PRIMARY KEY (client_id, phone)
    )""",
    "CREATE INDEX IF NOT EXISTS replacements_to ON replacements (client_id, to_ext)",
    # AstDB keys that must go but could not be deleted yet (no Manager connection when a
    # replacement was revoked or restored over HTTP): deleted as soon as Asterisk is reachable.
    """CREATE TABLE IF NOT EXISTS replace_astdb_pending (
        client_id TEXT NOT NULL,
        family TEXT NOT NULL,
        key TEXT NOT NULL,
        PRIMARY KEY (client_id, family, key)
    )""",
)


def _ts(at: datetime) -> float:
    if at.tzinfo is None:
        raise ValueError("naive datetime: callgate stores aware UTC times only")
    return at.timestamp()


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _replacement(row: sqlite3.Row) -> Replacement:
    return Replacement(
        row["client_id"], row["phone"], row["from_ext"], row["to_ext"], _dt(row["since"])
    )


def _failure_times(
    conn: sqlite3.Connection, client_id: str, column: str, key: str, since: float
) -> list[datetime]:
    # ``column`` is one of two literals chosen below, never user input.
    rows = conn.execute(
        f"SELECT at FROM replace_failures WHERE client_id = ? AND {column} = ? AND at > ?",  # noqa: S608
        (client_id, key, since),
    ).fetchall()
    return [_dt(row["at"]) for row in rows]


def _lock_state(
    conn: sqlite3.Connection,
    client_id: str,
    target: str,
    phone: str,
    now: datetime,
    rules: LockoutRules,
) -> LockState:
    since = _ts(now - rules.horizon)
    return LockState(
        rules.locked_until(_failure_times(conn, client_id, "target", target, since), now),
        rules.locked_until(_failure_times(conn, client_id, "phone", phone, since), now),
    )


class ReplaceRepository:
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

    # -- wrong-PIN attempts ----------------------------------------------------------------

    async def lock_state(
        self, client_id: str, target: str, phone: str, now: datetime, rules: LockoutRules
    ) -> LockState:
        return await self._db.read(
            lambda conn: _lock_state(conn, client_id, target, phone, now, rules)
        )

    async def reserve_attempt(
        self, client_id: str, target: str, phone: str, now: datetime, rules: LockoutRules
    ) -> Attempt | LockState:
        """Count one attempt at ``target``'s PIN from ``phone``, unless either is locked out.

        Check and count are one transaction, so two sessions guessing at once cannot both slip
        under the limit. Returns the lock state instead when a lock is in force.
        """

        def run(conn: sqlite3.Connection) -> Attempt | LockState:
            conn.execute(
                "DELETE FROM replace_failures WHERE at <= ?",
                (_ts(now - rules.horizon),),
            )
            state = _lock_state(conn, client_id, target, phone, now, rules)
            if state.locked:
                return state
            cur = conn.execute(
                "INSERT INTO replace_failures (client_id, target, phone, at) VALUES (?, ?, ?, ?)",
                (client_id, target, phone, _ts(now)),
            )
            assert cur.lastrowid is not None
            return Attempt(cur.lastrowid)

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
                "DELETE FROM replace_astdb_pending WHERE client_id = ? AND family = ? AND key = ?",
                [(new.client_id, family, key) for family, key in writes],
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
                "INSERT INTO replacements (client_id, phone, from_ext, to_ext, since)"
                " VALUES (?, ?, ?, ?, ?)",
                (new.client_id, new.phone, new.from_ext, new.to_ext, _ts(new.since)),
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

    async def add_pending(self, client_id: str, keys: Sequence[AstDbKey]) -> None:
        await self._db.write(
            lambda conn: conn.executemany(
                "INSERT OR IGNORE INTO replace_astdb_pending (client_id, family, key)"
                " VALUES (?, ?, ?)",
                [(client_id, family, key) for family, key in keys],
            )
        )

    async def pending(self, client_id: str | None = None) -> Sequence[tuple[str, AstDbKey]]:
        """``(client_id, (family, key))`` of every deletion still owed to AstDB."""

        def run(conn: sqlite3.Connection) -> list[tuple[str, AstDbKey]]:
            sql = "SELECT client_id, family, key FROM replace_astdb_pending"
            args: tuple[str, ...] = ()
            if client_id is not None:
                sql += " WHERE client_id = ?"
                args = (client_id,)
            rows = conn.execute(sql + " ORDER BY client_id, family, key", args).fetchall()
            return [(row["client_id"], (row["family"], row["key"])) for row in rows]

        return await self._db.read(run)

    async def forget_pending(self, client_id: str, key: AstDbKey) -> None:
        await self._db.write(
            lambda conn: conn.execute(
                "DELETE FROM replace_astdb_pending WHERE client_id = ? AND family = ? AND key = ?",
                (client_id, *key),
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
