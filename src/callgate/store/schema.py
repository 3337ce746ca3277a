"""The SQLite schema and its history: every migration since the first release, applied at open.

The schema version is SQLite's ``PRAGMA user_version``. Version 0 is what the releases before
versions were recorded created (or an empty file): migration 1 creates that first schema where it
is missing (``IF NOT EXISTS``, so a released database is left as it is) and then changes it.
``MIGRATIONS[n]`` takes a database from version ``n`` to ``n + 1``; all of them run in one
transaction with the new ``user_version``, so a crash leaves the old version whole. A database
whose version is newer than ``LATEST`` was written by a newer callgate: it is refused (``open``
raises ``StoreError``), never read or changed.

Adding a change: append one tuple of statements to ``MIGRATIONS``; never edit a released one.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from callgate.domain import DEFAULT_PBX, StoreError

_RELEASED: Final = (
    """CREATE TABLE IF NOT EXISTS policy_versions (
        client_id  TEXT    NOT NULL,
        version    INTEGER NOT NULL CHECK (version > 0),
        document   TEXT    NOT NULL,
        changed_at TEXT    NOT NULL,
        changed_by TEXT    NOT NULL,
        PRIMARY KEY (client_id, version)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS api_tokens (
        name       TEXT PRIMARY KEY,
        client_id  TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    )""",
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
    """CREATE TABLE IF NOT EXISTS audit_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time_us INTEGER NOT NULL,
        client_id TEXT NOT NULL,
        action TEXT NOT NULL,
        ext TEXT NOT NULL,
        target TEXT,
        decision TEXT NOT NULL,
        reason TEXT NOT NULL,
        policy_version INTEGER NOT NULL,
        uniqueid TEXT,
        channel TEXT,
        extra TEXT NOT NULL DEFAULT '{}',
        started_us INTEGER,
        ended_us INTEGER,
        end_reason TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS audit_events_by_time ON audit_events (client_id, time_us)",
    "CREATE INDEX IF NOT EXISTS audit_events_by_uniqueid ON audit_events (client_id, uniqueid)",
)
"""The schema of the releases before ``user_version`` was set (schema version 0)."""

_PBX_DEFAULT = f"'{DEFAULT_PBX}'"

_TO_1: Final = (
    *_RELEASED,
    # Records that live on an Asterisk server say which one (several PBXes to come).
    f"ALTER TABLE replacements ADD COLUMN pbx TEXT NOT NULL DEFAULT {_PBX_DEFAULT}",
    f"""CREATE TABLE replace_astdb_pending_1 (
        pbx TEXT NOT NULL DEFAULT {_PBX_DEFAULT},
        client_id TEXT NOT NULL,
        family TEXT NOT NULL,
        key TEXT NOT NULL,
        PRIMARY KEY (pbx, client_id, family, key)
    )""",
    "INSERT INTO replace_astdb_pending_1 (client_id, family, key)"
    " SELECT client_id, family, key FROM replace_astdb_pending",
    "DROP TABLE replace_astdb_pending",
    "ALTER TABLE replace_astdb_pending_1 RENAME TO replace_astdb_pending",
    # One row per target and per phone that a PIN attempt was ever reserved for: a reservation
    # writes its two rows first, which serialises reservations for the same key on any backend
    # (row locks held to the commit), and only then reads and counts the failures.
    """CREATE TABLE replace_attempt_locks (
        client_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('target', 'phone')),
        key TEXT NOT NULL,
        reservations INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (client_id, kind, key)
    ) WITHOUT ROWID""",
)

# The settings and grants beside each client's policy (``SupervisionStore``): one row a version,
# each holding the whole state after one change, so the history is every state the client was in.
_TO_2: Final = (
    """CREATE TABLE supervision_versions (
        client_id        TEXT    NOT NULL,
        version          INTEGER NOT NULL CHECK (version > 0),
        settings         TEXT    NOT NULL,
        settings_version INTEGER NOT NULL CHECK (settings_version >= 0),
        grants           TEXT    NOT NULL,
        changed_at       TEXT    NOT NULL,
        changed_by       TEXT    NOT NULL,
        change           TEXT    NOT NULL,
        grant_id         TEXT,
        PRIMARY KEY (client_id, version)
    ) WITHOUT ROWID""",
)

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (_TO_1, _TO_2)
LATEST: Final = len(MIGRATIONS)
"""The schema version this code writes."""


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to ``LATEST`` inside the caller's transaction; the version it had."""
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    if found > LATEST:
        raise StoreError(
            f"the database has schema version {found}, newer than this callgate's {LATEST}:"
            " it was written by a newer release; run that release (or a newer one)"
        )
    for statements in MIGRATIONS[found:]:
        for statement in statements:
            conn.execute(statement)
    if found != LATEST:
        # PRAGMA takes no parameters; LATEST is an int of this module.
        conn.execute(f"PRAGMA user_version = {LATEST:d}")
    return int(found)
