"""The PostgreSQL schema and its history, applied when the store opens.

The schema version is the one row of ``callgate_schema``. Its numbers mean the same schema as the
SQLite store's ``PRAGMA user_version`` (``callgate.store.schema``): version 1 is the first one
with the ``pbx`` of replacements and pending deletions and the PIN attempt lock rows, version 2
adds the settings and grants beside the policy (``supervision_versions``); a change to
the stored model appends a migration to both backends under the same number.
``MIGRATIONS[n]`` takes a database from version ``n`` to ``n + 1``.

``migrate`` runs in one transaction that first takes a transaction-level advisory lock, so two
instances starting at once take turns: the second waits, then finds the schema current and does
nothing. DDL is transactional in PostgreSQL, so a failure leaves the old version whole. A
database whose version is newer than ``LATEST`` was written by a newer callgate: it is refused
with ``StoreError``, never read or changed.
"""

from __future__ import annotations

from typing import Final

from callgate.domain import DEFAULT_PBX, StoreError
from callgate.store.postgresql.db import Connection

__all__ = ["LATEST", "MIGRATIONS", "SCHEMA_LOCK", "migrate"]

SCHEMA_LOCK: Final = 0x63616C6C67617465
"""The advisory lock key the migrations run under ("callgate" in ASCII)."""

_PBX = f"'{DEFAULT_PBX}'"
# Every text column is COLLATE "C": compared and sorted by code point, as SQLite does, whatever
# the locale the database was created with (the orders "by client id", "by name" of the ports).

_TO_1: Final = (
    """CREATE TABLE policy_versions (
        client_id  text COLLATE "C"        NOT NULL,
        version    bigint      NOT NULL CHECK (version > 0),
        document   text COLLATE "C"        NOT NULL,
        changed_at timestamptz NOT NULL,
        changed_by text COLLATE "C"        NOT NULL,
        PRIMARY KEY (client_id, version)
    )""",
    # The current version of each client, written by the save that wrote it: what the start-up
    # load and the change feed's catch-up read, one row per client instead of every version.
    """CREATE TABLE policy_heads (
        client_id text COLLATE "C"   PRIMARY KEY,
        version   bigint NOT NULL
    )""",
    """CREATE TABLE api_tokens (
        name       text COLLATE "C"        PRIMARY KEY,
        client_id  text COLLATE "C"        NOT NULL,
        token_hash text COLLATE "C"        NOT NULL UNIQUE,
        created_at timestamptz NOT NULL
    )""",
    """CREATE TABLE replace_pins (
        client_id text COLLATE "C"        NOT NULL,
        ext       text COLLATE "C"        NOT NULL,
        pin_hash  text COLLATE "C"        NOT NULL,
        set_at    timestamptz NOT NULL,
        PRIMARY KEY (client_id, ext)
    )""",
    # One row per PIN attempt not (yet) found right: written before the PIN is checked, removed
    # only when it was right, so a crash in between counts as a failure.
    """CREATE TABLE replace_failures (
        id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        client_id text COLLATE "C"        NOT NULL,
        target    text COLLATE "C"        NOT NULL,
        phone     text COLLATE "C"        NOT NULL,
        at        timestamptz NOT NULL
    )""",
    "CREATE INDEX replace_failures_target ON replace_failures (client_id, target, at)",
    "CREATE INDEX replace_failures_phone ON replace_failures (client_id, phone, at)",
    "CREATE INDEX replace_failures_at ON replace_failures (at)",
    # The rows a reservation upserts, target then phone, before it counts: row locks held to the
    # commit, so reservations of one target (or one phone) take turns across instances.
    """CREATE TABLE replace_attempt_locks (
        client_id    text COLLATE "C"   NOT NULL,
        kind         text COLLATE "C"   NOT NULL CHECK (kind IN ('target', 'phone')),
        key          text COLLATE "C"   NOT NULL,
        reservations bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (client_id, kind, key)
    )""",
    f"""CREATE TABLE replacements (
        client_id text COLLATE "C"        NOT NULL,
        phone     text COLLATE "C"        NOT NULL,
        from_ext  text COLLATE "C"        NOT NULL,
        to_ext    text COLLATE "C"        NOT NULL,
        since     timestamptz NOT NULL,
        pbx       text COLLATE "C"        NOT NULL DEFAULT {_PBX},
        PRIMARY KEY (client_id, phone)
    )""",
    # Unique, unlike SQLite's index (whose single writer serialises replacements anyway): two
    # instances taking over one extension at once cannot both insert; the later one retries and
    # displaces the first.
    "CREATE UNIQUE INDEX replacements_to ON replacements (client_id, to_ext)",
    f"""CREATE TABLE replace_astdb_pending (
        pbx       text COLLATE "C" NOT NULL DEFAULT {_PBX},
        client_id text COLLATE "C" NOT NULL,
        family    text COLLATE "C" NOT NULL,
        key       text COLLATE "C" NOT NULL,
        PRIMARY KEY (pbx, client_id, family, key)
    )""",
    """CREATE TABLE audit_events (
        id             bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time_us        bigint  NOT NULL,
        client_id      text COLLATE "C"    NOT NULL,
        action         text COLLATE "C"    NOT NULL,
        ext            text COLLATE "C"    NOT NULL,
        target         text,
        decision       text COLLATE "C"    NOT NULL,
        reason         text COLLATE "C"    NOT NULL,
        policy_version bigint  NOT NULL,
        uniqueid       text,
        channel        text,
        extra          text COLLATE "C"    NOT NULL DEFAULT '{}',
        started_us     bigint,
        ended_us       bigint,
        end_reason     text COLLATE "C"
    )""",
    "CREATE INDEX audit_events_by_time ON audit_events (client_id, time_us)",
    "CREATE INDEX audit_events_by_uniqueid ON audit_events (client_id, uniqueid)",
)

# The settings and grants beside each client's policy (``SupervisionStore``), as in SQLite's
# migration 2; ``supervision_heads`` is each client's current version, as ``policy_heads`` is.
_TO_2: Final = (
    """CREATE TABLE supervision_versions (
        client_id        text COLLATE "C" NOT NULL,
        version          bigint      NOT NULL CHECK (version > 0),
        settings         text COLLATE "C" NOT NULL,
        settings_version bigint      NOT NULL CHECK (settings_version >= 0),
        grants           text COLLATE "C" NOT NULL,
        changed_at       timestamptz NOT NULL,
        changed_by       text COLLATE "C" NOT NULL,
        change           text COLLATE "C" NOT NULL,
        grant_id         text COLLATE "C",
        PRIMARY KEY (client_id, version)
    )""",
    """CREATE TABLE supervision_heads (
        client_id text COLLATE "C" PRIMARY KEY,
        version   bigint NOT NULL
    )""",
)

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (_TO_1, _TO_2)
LATEST: Final = len(MIGRATIONS)
"""The schema version this code writes."""


async def migrate(conn: Connection) -> int:
    """Bring the database to ``LATEST`` in one transaction under ``SCHEMA_LOCK``; the version
    it had. ``conn`` is in autocommit; the transaction is this function's."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS callgate_schema ("
            " one boolean PRIMARY KEY DEFAULT true CHECK (one),"
            " version integer NOT NULL)"
        )
        cur = await conn.execute("SELECT version FROM callgate_schema")
        row = await cur.fetchone()
        found = 0 if row is None else int(row[0])
        if found > LATEST:
            raise StoreError(
                f"the database has schema version {found}, newer than this callgate's {LATEST}:"
                " it was written by a newer release; run that release (or a newer one)"
            )
        for statements in MIGRATIONS[found:]:
            for statement in statements:
                await conn.execute(statement)
        if found != LATEST:
            await conn.execute(
                "INSERT INTO callgate_schema (one, version) VALUES (true, %s)"
                " ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
                (LATEST,),
            )
    return found
