"""The policy history read a page at a time, and the retention a save applies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callgate.policy import parse_document
from callgate.store import Store, open_store
from callgate.store.policies import Retention, canonical_json


def doc(n: int) -> dict[str, object]:
    return {"groups": {f"g{n}": [str(100 + n)]}, "pickup_share_groups": [f"g{n}"]}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(str(tmp_path / "callgate.sqlite3"))
    yield store
    await store.close()


async def save_many(store: Store, count: int, client: str = "acme") -> None:
    for n in range(count):
        await store.policies.save(client, parse_document(doc(n)), "admin")


async def versions(store: Store, client: str = "acme") -> list[int]:
    return [p.version for p in await store.policies.history(client)]


async def test_pages_walk_every_version_once_newest_first(store: Store) -> None:
    await save_many(store, 7)
    await save_many(store, 2, client="globex")
    seen: list[int] = []
    before: int | None = None
    for _ in range(10):
        page = await store.policies.history_page("acme", limit=3, before=before, max_bytes=1 << 20)
        seen += [v.version for v in page.versions]
        if page.next_before is None:
            break
        assert page.next_before == page.versions[-1].version
        before = page.next_before
    assert seen == [7, 6, 5, 4, 3, 2, 1]


async def test_a_page_holds_the_stored_text_and_metadata(store: Store) -> None:
    saved = await store.policies.save("acme", parse_document(doc(1)), "ops")
    page = await store.policies.history_page("acme", limit=10, max_bytes=1 << 20)
    (entry,) = page.versions
    assert page.next_before is None
    assert entry.document_json == canonical_json(saved.document)
    assert json.loads(entry.document_json) == saved.document.to_json()
    assert datetime.fromisoformat(entry.changed_at) == saved.changed_at
    assert entry.changed_by == "ops"


async def test_a_page_stops_at_its_byte_budget_but_holds_one_version(store: Store) -> None:
    await save_many(store, 5)
    one = len(canonical_json(parse_document(doc(0))))
    page = await store.policies.history_page("acme", limit=10, max_bytes=2 * one + 1)
    assert [v.version for v in page.versions] == [5, 4]
    assert page.next_before == 4
    tiny = await store.policies.history_page("acme", limit=10, max_bytes=1)
    assert [v.version for v in tiny.versions] == [5]
    assert tiny.next_before == 5


async def test_an_empty_history_and_a_cursor_past_the_end(store: Store) -> None:
    empty = await store.policies.history_page("acme", limit=5, max_bytes=1 << 20)
    assert empty.versions == ()
    assert empty.next_before is None
    await save_many(store, 2)
    past = await store.policies.history_page("acme", limit=5, before=1, max_bytes=1 << 20)
    assert past.versions == ()
    assert past.next_before is None


async def test_retention_keeps_the_newest_n_and_versions_keep_counting(store: Store) -> None:
    store.policies.retention = Retention(keep=3)
    await save_many(store, 5)
    assert await versions(store) == [5, 4, 3]
    saved = await store.policies.save("acme", parse_document(doc(9)), "admin")
    assert saved.version == 6
    assert await versions(store) == [6, 5, 4]
    current = await store.policies.current("acme")
    assert current is not None
    assert current.version == 6


async def test_keep_one_keeps_only_the_current_version(store: Store) -> None:
    store.policies.retention = Retention(keep=1)
    await save_many(store, 3)
    assert await versions(store) == [3]
    assert [p.version for p in await store.policies.all_current()] == [3]


async def test_an_old_database_is_pruned_on_its_first_save(store: Store) -> None:
    await save_many(store, 12)  # written under the default retention (100)
    await save_many(store, 1, client="globex")
    store.policies.retention = Retention(keep=4)
    assert len(await versions(store)) == 12  # nothing happens before a save
    await save_many(store, 1)
    assert await versions(store) == [13, 12, 11, 10]
    assert await versions(store, "globex") == [1]  # another client's history is its own


async def age(store: Store, version: int, days: float) -> None:
    when = (datetime.now(UTC) - timedelta(days=days)).isoformat()
    await store.db.write(
        lambda conn: conn.execute(
            "UPDATE policy_versions SET changed_at = ? WHERE client_id = 'acme' AND version = ?",
            (when, version),
        )
    )


async def test_retention_by_age_never_prunes_the_current_version(store: Store) -> None:
    await save_many(store, 4)
    for version, days in ((1, 40), (2, 35), (3, 20), (4, 31)):
        await age(store, version, days)
    store.policies.retention = Retention(keep=100, max_age=timedelta(days=30))
    await save_many(store, 1)
    assert await versions(store) == [5, 3]  # 1, 2 and 4 were older than 30 days


async def test_an_old_current_version_survives_until_a_newer_one_is_saved(store: Store) -> None:
    store.policies.retention = Retention(keep=100, max_age=timedelta(days=1))
    await save_many(store, 2)
    await age(store, 1, 10)
    await age(store, 2, 10)
    await store.policies.save("globex", parse_document(doc(0)), "admin")  # another client
    assert await versions(store) == [2, 1]
    current = await store.policies.current("acme")
    assert current is not None
    assert current.version == 2
    await save_many(store, 1)
    assert await versions(store) == [3]


def test_retention_must_keep_the_current_version() -> None:
    with pytest.raises(ValueError, match="at least"):
        Retention(keep=0)
