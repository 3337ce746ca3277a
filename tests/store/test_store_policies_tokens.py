"""The store's policy history and tokens, and ``open_store``; run against every backend.

Only SQLite exists today: ``BACKENDS`` is where a PostgreSQL target (from the environment) joins,
and every test here then runs against it too.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callgate.policy import PolicyDocument, parse_document
from callgate.policy.syntax import is_valid_token_name
from callgate.store import (
    Store,
    StoreError,
    TokenExistsError,
    VersionConflictError,
    open_store,
)
from callgate.store.tokens import hash_token

BACKENDS = ["sqlite"]

DOC_A = parse_document({"allow_all": True})
DOC_B = parse_document({"groups": {"support": ["100", "101"]}, "pickup_share_groups": ["support"]})


def target_for(backend: str, tmp_path: Path) -> str:
    match backend:
        case "sqlite":
            return str(tmp_path / "data" / "callgate.sqlite3")
    raise AssertionError(backend)


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return target_for(request.param, tmp_path)


@pytest.fixture
async def store(target: str) -> AsyncIterator[Store]:
    store = await open_store(target)
    yield store
    await store.close()


async def test_nothing_stored_means_no_current_and_empty_history(store: Store) -> None:
    assert await store.policies.current("acme") is None
    assert await store.policies.history("acme") == []
    assert await store.policies.all_current() == []


async def test_versions_count_up_per_client_and_all_are_kept(store: Store) -> None:
    first = await store.policies.save("acme", DOC_A, "admin")
    second = await store.policies.save("acme", DOC_B, "ops")
    other = await store.policies.save("globex", DOC_B, "admin")
    assert (first.version, second.version, other.version) == (1, 2, 1)
    current = await store.policies.current("acme")
    assert current is not None
    assert current.version == 2
    assert current.document == DOC_B
    assert current.changed_by == "ops"
    history = await store.policies.history("acme")
    assert [(h.version, h.document, h.changed_by) for h in history] == [
        (2, DOC_B, "ops"),
        (1, DOC_A, "admin"),
    ]
    assert history[0].changed_at >= history[1].changed_at
    assert history[0].changed_at.tzinfo is not None


async def test_all_current_holds_the_newest_version_of_each_client(store: Store) -> None:
    await store.policies.save("acme", DOC_A, "admin")
    await store.policies.save("acme", DOC_B, "admin")
    await store.policies.save("globex", DOC_A, "admin")
    newest = [(p.client_id, p.version, p.document) for p in await store.policies.all_current()]
    assert newest == [("acme", 2, DOC_B), ("globex", 1, DOC_A)]


async def test_all_current_json_is_the_newest_text_of_each_client_undecoded(store: Store) -> None:
    await store.policies.save("acme", DOC_A, "admin")
    await store.policies.save("acme", DOC_B, "admin")
    await store.policies.save("globex", DOC_A, "ops")
    texts = await store.policies.all_current_json()
    assert [(c, t.version, t.changed_by) for c, t in texts] == [
        ("acme", 2, "admin"),
        ("globex", 1, "ops"),
    ]
    assert texts[0][1] == await store.policies.current_json("acme")
    assert texts[1][1] == await store.policies.current_json("globex")


async def test_the_default_document_is_a_version_like_any_other(store: Store) -> None:
    await store.policies.save("acme", DOC_A, "admin")
    reset = await store.policies.save("acme", PolicyDocument(), "admin")
    assert reset.version == 2
    current = await store.policies.current("acme")
    assert current is not None
    assert current.document == PolicyDocument()


async def test_if_version_guards_the_write_inside_the_transaction(store: Store) -> None:
    await store.policies.save("acme", DOC_A, "admin", if_version={0})
    with pytest.raises(VersionConflictError) as raised:
        await store.policies.save("acme", DOC_B, "admin", if_version={0})
    assert raised.value.current == 1
    saved = await store.policies.save("acme", DOC_B, "admin", if_version={1, 5})
    assert saved.version == 2
    assert len(await store.policies.history("acme")) == 2


async def test_racing_writers_with_the_same_if_version_only_one_wins(store: Store) -> None:
    await store.policies.save("acme", DOC_A, "admin")
    results = await asyncio.gather(
        *(store.policies.save("acme", DOC_B, f"w{i}", if_version={1}) for i in range(10)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert sum(isinstance(r, VersionConflictError) for r in results) == 9


async def test_a_write_is_there_after_reopening(target: str) -> None:
    store = await open_store(target)
    await store.policies.save("acme", DOC_B, "admin")
    await store.close()
    reopened = await open_store(target)
    try:
        current = await reopened.policies.current("acme")
        assert current is not None
        assert (current.version, current.document) == (1, DOC_B)
    finally:
        await reopened.close()


async def test_a_damaged_stored_document_is_a_store_error_not_a_default(
    store: Store,
) -> None:
    await store.policies.save("acme", DOC_A, "admin")

    def damage(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE policy_versions SET document = '{\"allow_al\": 1}'")

    await store.db.write(damage)
    with pytest.raises(StoreError):
        await store.policies.current("acme")
    with pytest.raises(StoreError):
        await store.policies.all_current()


async def test_a_closed_store_raises_store_error(target: str) -> None:
    store = await open_store(target)
    await store.close()
    with pytest.raises(StoreError):
        await store.policies.current("acme")
    await store.close()  # twice is fine


async def test_open_store_refuses_postgresql_for_now(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="PostgreSQL"):
        await open_store("postgresql://localhost/callgate")


async def test_open_store_creates_every_repository_schema(store: Store) -> None:
    def tables(conn: sqlite3.Connection) -> set[str]:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {row[0] for row in rows}

    names = await store.db.read(tables)
    assert {"policy_versions", "api_tokens"} <= names


# --- tokens ------------------------------------------------------------------------------------


async def test_a_token_is_found_by_its_value_and_stored_as_a_hash(store: Store) -> None:
    info, token = await store.tokens.create("ops", "acme")
    assert token.startswith("cg_")
    assert len(token) > 40
    found = await store.tokens.find(token)
    assert found == info
    assert await store.tokens.find(token + "x") is None
    assert await store.tokens.find("") is None

    def raw(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
        return [tuple(row) for row in conn.execute("SELECT * FROM api_tokens")]

    rows = await store.db.read(raw)
    assert token not in repr(rows)
    assert hash_token(token) in repr(rows)


async def test_tokens_are_unique_by_name_listed_and_deleted(store: Store) -> None:
    _, first = await store.tokens.create("ops", "acme")
    _, second = await store.tokens.create("audit", "globex")
    assert first != second
    with pytest.raises(TokenExistsError):
        await store.tokens.create("ops", "globex")
    assert [(t.name, t.client_id) for t in await store.tokens.list()] == [
        ("audit", "globex"),
        ("ops", "acme"),
    ]
    assert await store.tokens.delete("ops") is True
    assert await store.tokens.delete("ops") is False
    assert await store.tokens.find(first) is None
    assert await store.tokens.find(second) is not None


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("ops", True),
        ("a.b-c_d", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("a b", False),
        ("admin", False),
        ("ops\n", False),
    ],
)
def test_token_names(name: str, valid: bool) -> None:
    assert is_valid_token_name(name) is valid
