"""The schema version: a store written by the releases before it (``fixtures/v0_store.sqlite3``,
made by ``fixtures/make_v0_store.py`` with the code of 2c12cd9) is migrated at open with every
row intact; a store of a newer version is refused, untouched."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callgate.domain import DEFAULT_PBX, PendingDeletion, Replacement, StoreError
from callgate.store import open_store
from callgate.store.schema import LATEST
from support import sqlite_file

FIXTURE = Path(__file__).parent / "fixtures" / "v0_store.sqlite3"
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
RELEASED_TABLES = (
    "policy_versions",
    "api_tokens",
    "replace_pins",
    "replace_failures",
    "replacements",
    "replace_astdb_pending",
    "audit_events",
)


Rows = dict[str, list[tuple[object, ...]]]


def rows(path: Path, columns_of: dict[str, list[str]] | None = None) -> Rows:
    """Every row of every released table, with the released columns only (in their order)."""
    with sqlite_file(path) as conn:
        found: Rows = {}
        for table in RELEASED_TABLES:
            columns = (columns_of or {}).get(table) or [
                row[1] for row in conn.execute(f"PRAGMA table_info({table})")
            ]
            sql = f"SELECT {', '.join(columns)} FROM {table} ORDER BY {', '.join(columns)}"  # noqa: S608
            found[table] = conn.execute(sql).fetchall()
    return found


def columns(path: Path) -> dict[str, list[str]]:
    with sqlite_file(path) as conn:
        return {
            table: [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            for table in RELEASED_TABLES
        }


def contents(path: Path) -> bytes:
    return path.read_bytes()


@pytest.fixture
def released(tmp_path: Path) -> Path:
    copy = tmp_path / "callgate.sqlite3"
    shutil.copyfile(FIXTURE, copy)
    return copy


async def test_a_released_store_is_migrated_with_every_row_intact(released: Path) -> None:
    released_columns = columns(released)
    before = rows(released)
    assert all(before[table] for table in RELEASED_TABLES)  # the fixture has rows of each kind

    store = await open_store(str(released))
    try:
        acme = await store.policies.current("acme")
        assert acme is not None
        assert (acme.version, acme.changed_by) == (2, "ops")
        assert acme.document.groups == {"sales": ("100", "101")}
        assert [p.version for p in await store.policies.history("acme")] == [2, 1]
        assert [p.client_id for p in await store.policies.all_current()] == ["acme", "globex"]
        (token,) = await store.tokens.list()
        assert (token.name, token.client_id) == ("acme-ops", "acme")
        assert await store.replace.pin_hash("acme", "101") == "scrypt$10$8$1$c2FsdA$a2V5"
        failures = await store.replace.failure_times(
            "acme", "101", "100", datetime(2026, 1, 1, tzinfo=UTC)
        )
        assert failures.target == (T0, T0)
        assert failures.phone == (T0,)
        assert await store.replace.replacements("acme") == [
            Replacement("acme", "100", "100", "101", T0, DEFAULT_PBX)
        ]
        assert await store.replace.pending() == [
            PendingDeletion(DEFAULT_PBX, "acme", ("callgate/acme/acting", "102"))
        ]
        listen, pickup = sorted(await store.audit.list("acme"), key=lambda e: e.action)
        assert (listen.started, listen.ended, str(listen.end_reason)) == (T0, T0, "call_ended")
        assert (pickup.decision, pickup.channel) == ("deny", "SIP/102-1")
    finally:
        await store.close()

    assert rows(released, released_columns) == before
    with sqlite_file(released) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (LATEST,)


async def test_a_migrated_store_takes_new_writes(released: Path) -> None:
    store = await open_store(str(released))
    try:
        acme = await store.policies.current("acme")
        assert acme is not None
        saved = await store.policies.save("acme", acme.document, "admin", if_version=[2])
        assert saved.version == 3
        # the same key is owed once per PBX
        await store.replace.add_pending("acme", [("callgate/acme/acting", "102")], pbx="b")
        assert [p.pbx for p in await store.replace.pending()] == ["b", DEFAULT_PBX]
    finally:
        await store.close()


async def test_opening_a_migrated_store_again_changes_nothing(released: Path) -> None:
    await (await open_store(str(released))).close()
    once = rows(released)
    await (await open_store(str(released))).close()
    assert rows(released) == once


async def test_a_store_of_a_newer_schema_version_is_refused_untouched(released: Path) -> None:
    with sqlite_file(released) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    before = contents(released)
    with pytest.raises(StoreError, match=rf"schema version {LATEST + 1}, newer than .* {LATEST}"):
        await open_store(str(released))
    assert contents(released) == before


async def test_a_new_store_has_the_latest_schema_and_the_migrated_one_the_same(
    released: Path, tmp_path: Path
) -> None:
    fresh = tmp_path / "fresh.sqlite3"
    await (await open_store(str(fresh))).close()
    await (await open_store(str(released))).close()

    def schema(path: Path) -> dict[str, list[tuple[object, ...]]]:
        with sqlite_file(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (LATEST,)
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master"
                    " WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            return {t: sorted(conn.execute(f"PRAGMA table_info({t})").fetchall()) for t in tables}

    assert schema(fresh) == schema(released)
