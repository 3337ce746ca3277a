"""The registry holds clients loaded at start-up as their stored text and compiles each on first
use: what it answers is what a compiled load answers, a version read compiles nothing, a change
replaces a cold client like a compiled one (``applied`` and the ``before_answer`` listeners as
for any client), a damaged text is a ``StoreError`` at first use, never the default document,
and a client with settings or grants is compiled with them at start-up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callgate.domain import StoredJson, StoreError, SupervisionEdit, canonical_json
from callgate.policy import Action, decide, parse_document
from callgate.policy.settings import parse_settings
from callgate.registry import LAZY_MAX_CHARS, ClientPolicy, PolicyRegistry, StoredText
from callgate.services import PolicyFollower
from callgate.store import open_store

DOCUMENT = {
    "groups": {"sales": ["100", "101"]},
    "pickup_share_groups": ["sales"],
    "eavesdrop_100": ["sales"],
}


def stored(version: int, text: str | None = None) -> StoredText:
    text = text if text is not None else canonical_json(parse_document(DOCUMENT))
    return StoredText.of(StoredJson(version, "2024-05-01T10:00:00+00:00", "admin", text))


def test_a_cold_client_is_compiled_on_first_get_and_kept() -> None:
    registry = PolicyRegistry()
    registry.load_stored("acme", stored(3))
    assert registry.has_policy("acme")
    assert registry.versions("acme") == (3, 0)
    assert registry.peek("acme") is None  # a version read compiled nothing
    policy = registry.get("acme")
    assert (policy.version, policy.changed_by, policy.supervision) == (3, "admin", None)
    assert policy.document == parse_document(DOCUMENT)
    assert decide(policy.compiled, Action.PICKUP, "100", "101").allowed
    assert registry.get("acme") is policy  # compiled once, then held
    assert registry.peek("acme") is policy


def test_a_damaged_text_is_a_store_error_at_first_use_not_the_default() -> None:
    registry = PolicyRegistry()
    registry.load_stored("acme", stored(2, '{"allow_al": 1}'))
    assert registry.versions("acme") == (2, 0)
    with pytest.raises(StoreError):
        registry.get("acme")
    with pytest.raises(StoreError):
        registry.get("acme")  # still not the default document (which allows pickup_all)
    assert registry.has_policy("acme")


async def test_a_change_replaces_a_cold_client_and_an_older_one_does_not() -> None:
    registry = PolicyRegistry()
    registry.load_stored("acme", stored(2))
    told: list[tuple[int, int]] = []

    async def listener(old: ClientPolicy, new: ClientPolicy) -> None:
        told.append((old.version, new.version))

    registry.subscribe(listener)
    await asyncio.wait_for(registry.applied("acme", 2), 1)  # loaded: applied as loaded
    older = stored(1).compile("acme")
    assert not registry.install(older)
    assert registry.versions("acme") == (2, 0)
    newer = stored(3).compile("acme")
    await registry.publish(newer)
    assert registry.get("acme") is newer
    assert told == [(2, 3)]  # the old one compiled for the listeners
    await registry.applied("acme", 3)
    registry.load_stored("acme", stored(2))  # a late start-up row is older: ignored
    assert registry.get("acme") is newer
    await registry.close()


async def test_a_change_over_a_cold_client_waits_for_the_before_answer_listeners() -> None:
    registry = PolicyRegistry()
    registry.load_stored("acme", stored(2))
    release = asyncio.Event()
    told: list[tuple[int, int]] = []

    async def store_half(old: ClientPolicy, new: ClientPolicy) -> None:
        told.append((old.version, new.version))
        await release.wait()

    registry.subscribe(store_half, before_answer=True)
    assert registry.install(stored(3).compile("acme"))
    await asyncio.wait_for(registry.applied("acme", 2), 1)  # the cold version stays applied
    waiting = asyncio.ensure_future(registry.applied("acme", 3))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # installed, not yet settled
    assert told == [(2, 3)]
    release.set()
    await asyncio.wait_for(waiting, 1)
    await registry.close()


async def test_a_change_over_a_damaged_cold_client_is_installed() -> None:
    registry = PolicyRegistry()
    registry.load_stored("acme", stored(2, "not json"))
    newer = stored(3).compile("acme")
    with pytest.raises(StoreError):
        registry.get("acme")
    await registry.publish(newer)  # the fix for the damage: the listeners get the default as old
    assert registry.get("acme") is newer
    await asyncio.wait_for(registry.applied("acme", 3), 1)
    await registry.close()


async def test_load_all_holds_small_documents_cold_and_compiles_the_others(
    tmp_path: Path,
) -> None:
    store = await open_store(str(tmp_path / "callgate.sqlite3"))
    try:
        large = {
            "groups": {f"g{g}": [str(10000 + g * 100 + e) for e in range(60)] for g in range(90)}
        }
        assert len(canonical_json(parse_document(large))) > LAZY_MAX_CHARS
        await store.policies.save("acme", parse_document(DOCUMENT), "admin")
        await store.policies.save("globex", parse_document(large), "admin")
        await store.policies.save("initech", parse_document(DOCUMENT), "admin")
        settings = parse_settings({"protected_extensions": ["101"]})
        for client in ("initech", "nodoc"):  # "nodoc": settings but no document stored
            await store.supervision.save(
                client,
                settings=settings,
                grants=(),
                changed_by="ops",
                change=SupervisionEdit.SETTINGS,
                if_version=0,
            )
        registry = PolicyRegistry()
        follower = PolicyFollower(store.policies, registry, store.supervision)
        assert await follower.load_all() == 3
        assert registry.versions("acme") == (1, 0)
        assert registry.peek("acme") is None  # cold
        assert registry.peek("globex") is not None  # large: compiled at start-up
        assert registry.get("globex").document == parse_document(large)
        for client in ("initech", "nodoc"):  # with settings: compiled with them at start-up
            policy = registry.peek(client)
            assert policy is not None
            assert (policy.supervision_version, policy.settings) == (1, settings)
            assert policy.supervision is not None
            await asyncio.wait_for(registry.applied_supervision(client, 1), 1)
        assert registry.versions("nodoc") == (0, 1)
        protected = registry.get("initech")
        now = datetime.now(UTC)
        listen = (Action.EAVESDROP, "100", "101")
        assert not decide(
            protected.compiled, *listen, now=now, supervision=protected.supervision
        ).allowed
        assert decide(registry.get("acme").compiled, *listen).allowed
    finally:
        await store.close()
