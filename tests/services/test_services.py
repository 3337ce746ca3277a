"""The application services on the real SQLite store: a write is durable and in force when it
returns, and only then; a slow revocation never holds it up; tokens and the audit query."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callgate.audit import AuditEvent
from callgate.domain import TokenExistsError, VersionConflictError
from callgate.policy import parse_document
from callgate.registry import ClientPolicy, PolicyRegistry
from callgate.services import PolicyFollower, PolicyService, TokenService
from callgate.store import Store, open_store

CLIENT = "acme"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(str(tmp_path / "callgate.sqlite3"))
    yield store
    await store.close()


@pytest.fixture
async def registry(store: Store) -> AsyncIterator[PolicyRegistry]:
    registry = PolicyRegistry()
    yield registry
    await registry.close()


def policies(store: Store, registry: PolicyRegistry) -> PolicyService:
    follower = PolicyFollower(store.policies, registry)
    store.changes.subscribe(follower.on_change)
    return PolicyService(store.policies, registry, follower)


async def test_a_write_is_in_force_when_it_returns(store: Store, registry: PolicyRegistry) -> None:
    service = policies(store, registry)
    stored = await service.write(CLIENT, parse_document({"allow_all": True}), "ops")
    policy = registry.get(CLIENT)
    assert (policy.version, policy.changed_by, policy.document) == (1, "ops", stored.document)
    decision, version = service.check(CLIENT, "whisper", "100", "101")
    assert (decision.allowed, version) == (True, 1)
    reset = await service.reset(CLIENT, "ops", if_version={1})
    assert (reset.version, registry.get(CLIENT).document.allow_all) == (2, False)
    current = await service.current_json(CLIENT)
    assert current is not None
    assert current.version == 2


async def test_a_conflicting_write_changes_nothing(store: Store, registry: PolicyRegistry) -> None:
    service = policies(store, registry)
    await service.write(CLIENT, parse_document({"allow_all": True}), "ops")
    with pytest.raises(VersionConflictError) as conflict:
        await service.write(CLIENT, parse_document({}), "ops", if_version={0})
    assert conflict.value.current == 1
    assert registry.get(CLIENT).version == 1
    page = await service.history_page(CLIENT, limit=10, before=None, max_bytes=1 << 20)
    assert [v.version for v in page.versions] == [1]


async def test_a_stalled_revocation_holds_up_no_write(
    store: Store, registry: PolicyRegistry
) -> None:
    service = policies(store, registry)
    release = asyncio.Event()
    told: list[int] = []

    async def stalled(old: ClientPolicy, new: ClientPolicy) -> None:
        await release.wait()
        told.append(new.version)

    registry.subscribe(stalled)
    for n in range(3):
        stored = await asyncio.wait_for(
            service.write(CLIENT, parse_document({"allow_all": n % 2 == 0}), "ops"), 5.0
        )
        assert registry.get(CLIENT).version == stored.version
    release.set()
    await registry.idle()
    assert told[-1] == 3


async def test_tokens(store: Store) -> None:
    tokens = TokenService(store.tokens)
    info, token = await tokens.create("night-ops", CLIENT)
    with pytest.raises(TokenExistsError):
        await tokens.create("night-ops", "globex")
    assert await tokens.find(token) == info
    assert [t.name for t in await tokens.list()] == ["night-ops"]
    assert await tokens.revoke("night-ops")
    assert await tokens.find(token) is None
    assert not await tokens.revoke("night-ops")


async def test_audit_query(store: Store) -> None:
    now = datetime.now(UTC)
    for n, action in enumerate(("pickup", "eavesdrop")):
        store.audit.record(
            AuditEvent(now, CLIENT, action, "100", "101", "allow", "pickup_all", 1, f"u{n}")
        )
    await store.audit.flush()
    events = await store.audit.list(CLIENT, action="eavesdrop")
    assert [e.uniqueid for e in events] == ["u1"]
