"""The settings and grants service on the real SQLite store, with the registry following the
change feed as the daemon wires it: each change is in force when it returns, the limits hold,
the settings' If-Match ignores grant changes, and a policy change recompiles the grants."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from callgate.domain import GrantState, SupervisionEdit, VersionConflictError
from callgate.policy import PolicyValidationError, parse_document
from callgate.policy.grants import GrantRequest, parse_grant_request
from callgate.policy.settings import parse_settings
from callgate.registry import PolicyRegistry
from callgate.services import GrantLimits, PolicyFollower, PolicyService, SupervisionService
from callgate.services.supervision import UnknownGrantError
from callgate.store import Store, open_store

CLIENT = "acme"
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DOCUMENT = {"groups": {"support": ["100", "101"], "sales": ["102"]}, "eavesdrop_100": ["support"]}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def grant(**fields: Any) -> GrantRequest:
    body: dict[str, Any] = {
        "ext": "100",
        "action": "eavesdrop",
        "extensions": ["102"],
        "from": "2026-11-26T11:00:00Z",
        "until": "2026-11-26T13:00:00Z",
        "note": "coaching sales",
    }
    body.update(fields)
    return parse_grant_request(body)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(str(tmp_path / "callgate.sqlite3"))
    yield store
    await store.close()


@pytest.fixture
async def registry() -> AsyncIterator[PolicyRegistry]:
    registry = PolicyRegistry()
    yield registry
    await registry.close()


@pytest.fixture
async def services(
    store: Store, registry: PolicyRegistry, clock: Clock
) -> tuple[PolicyService, SupervisionService]:
    follower = PolicyFollower(store.policies, registry, store.supervision)
    store.changes.subscribe(follower.on_change)
    policies = PolicyService(store.policies, registry, follower)
    await policies.write(CLIENT, parse_document(DOCUMENT), "ops")
    limits = GrantLimits(max_per_client=2, max_duration=timedelta(hours=8))
    return policies, SupervisionService(store.supervision, registry, limits=limits, clock=clock)


async def test_protection_is_in_force_when_the_write_returns(
    services: tuple[PolicyService, SupervisionService], registry: PolicyRegistry
) -> None:
    policies, supervision = services
    assert policies.check(CLIENT, "eavesdrop", "100", "101")[0].reason == "eavesdrop_group"
    stored = await supervision.write_settings(
        CLIENT, parse_settings({"protected_extensions": ["101"]}), "compliance"
    )
    assert (stored.version, stored.settings_version, stored.changed_by) == (1, 1, "compliance")
    assert registry.get(CLIENT).supervision_version == 1
    decision, version = policies.check(CLIENT, "eavesdrop", "100", "101")
    assert (decision.allowed, decision.reason, version) == (False, "protected", 1)
    assert await supervision.settings(CLIENT) == (stored.settings, 1)


async def test_a_grant_allows_until_its_end_and_the_check_names_it(
    services: tuple[PolicyService, SupervisionService], clock: Clock
) -> None:
    policies, supervision = services
    assert not policies.check(CLIENT, "eavesdrop", "100", "102")[0].allowed
    record = await supervision.add_grant(CLIENT, grant(), "supervisor")
    assert (record.grant.created_by, record.created_at, record.state(clock.now)) == (
        "supervisor",
        T0,
        GrantState.ACTIVE,
    )
    decision, _ = policies.check(CLIENT, "eavesdrop", "100", "102", now=clock.now)
    assert (decision.reason, decision.grant_id) == ("temporary_grant", record.id)
    after = policies.check(CLIENT, "eavesdrop", "100", "102", now=record.grant.until)[0]
    assert (after.allowed, after.reason) == (False, "eavesdrop_not_permitted")


async def test_the_settings_if_match_is_the_settings_version_not_the_grants(
    services: tuple[PolicyService, SupervisionService],
) -> None:
    _, supervision = services
    settings = parse_settings({"protected_extensions": ["911"]})
    first = await supervision.write_settings(CLIENT, settings, "ops", if_version={0})
    await supervision.add_grant(CLIENT, grant(), "ops")  # version 2, settings still at 1
    again = await supervision.write_settings(CLIENT, settings, "ops", if_version={first.version})
    assert (again.version, again.settings_version) == (3, 3)
    with pytest.raises(VersionConflictError) as stale:
        await supervision.write_settings(CLIENT, settings, "ops", if_version={1})
    assert stale.value.current == 3


async def test_the_limits_and_the_document_are_checked_and_nothing_is_stored(
    services: tuple[PolicyService, SupervisionService], store: Store
) -> None:
    _, supervision = services
    cases = [
        (grant(groups=["nope"], extensions=[]), ["groups", 0]),
        (grant(until="2026-11-26T11:30:00Z"), ["until"]),  # already past at T0
        (grant(**{"from": "2026-11-26T12:00:00Z", "until": "2026-11-26T20:00:01Z"}), ["until"]),
    ]
    for request, loc in cases:
        with pytest.raises(PolicyValidationError) as refused:
            await supervision.add_grant(CLIENT, request, "ops")
        assert [list(issue.loc) for issue in refused.value.errors] == [loc]
    assert await store.supervision.current(CLIENT) is None
    await supervision.add_grant(CLIENT, grant(), "ops")
    await supervision.add_grant(CLIENT, grant(ext="101"), "ops")
    with pytest.raises(PolicyValidationError, match="at most 2"):
        await supervision.add_grant(CLIENT, grant(ext="102", extensions=["100"]), "ops")


async def test_ending_a_grant_early_frees_its_place_and_keeps_its_record(
    services: tuple[PolicyService, SupervisionService], clock: Clock
) -> None:
    policies, supervision = services
    record = await supervision.add_grant(CLIENT, grant(), "ops")
    await supervision.add_grant(CLIENT, grant(ext="101"), "ops")
    clock.now = T0 + timedelta(minutes=1)
    ended = await supervision.end_grant(CLIENT, record.id, "boss")
    assert (ended.ended_at, ended.ended_by, ended.state(clock.now)) == (
        clock.now,
        "boss",
        GrantState.ENDED,
    )
    assert not policies.check(CLIENT, "eavesdrop", "100", "102", now=clock.now)[0].allowed
    again = await supervision.end_grant(CLIENT, record.id, "boss")  # already ended: unchanged
    assert again == ended
    await supervision.add_grant(CLIENT, grant(ext="102", extensions=["100"]), "ops")
    listed, _ = await supervision.grants(CLIENT)
    assert sorted(r.grant.ext for r in listed) == ["100", "101", "102"]  # the ended one too
    with pytest.raises(UnknownGrantError):
        await supervision.end_grant(CLIENT, "nosuchgrant", "boss")
    page = await supervision.history_page(CLIENT, limit=10, before=None)
    assert [v.change for v in page.versions] == [
        SupervisionEdit.GRANT_ADDED,
        SupervisionEdit.GRANT_ENDED,
        SupervisionEdit.GRANT_ADDED,
        SupervisionEdit.GRANT_ADDED,
    ]


async def test_ended_grants_leave_the_list_after_the_kept_period(
    services: tuple[PolicyService, SupervisionService], clock: Clock
) -> None:
    _, supervision = services
    await supervision.add_grant(CLIENT, grant(), "ops")
    clock.now = T0 + timedelta(days=7)  # until was T0 + 1 h: within the 7 days kept
    assert [r.state(clock.now) for r in (await supervision.grants(CLIENT))[0]] == ["ended"]
    clock.now = T0 + timedelta(days=7, hours=1, seconds=1)
    assert (await supervision.grants(CLIENT))[0] == ()


async def test_a_policy_change_narrows_the_grants_that_name_its_groups(
    services: tuple[PolicyService, SupervisionService], clock: Clock
) -> None:
    policies, supervision = services
    await supervision.add_grant(CLIENT, grant(ext="102", groups=["support"], extensions=[]), "ops")
    assert policies.check(CLIENT, "eavesdrop", "102", "101", now=clock.now)[0].allowed
    narrowed = {**DOCUMENT, "groups": {"support": ["100"], "sales": ["102"]}}
    await policies.write(CLIENT, parse_document(narrowed), "ops")
    decision = policies.check(CLIENT, "eavesdrop", "102", "101", now=clock.now)[0]
    assert (decision.allowed, decision.reason) == (False, "eavesdrop_not_permitted")
    assert policies.check(CLIENT, "eavesdrop", "102", "100", now=clock.now)[0].allowed


async def test_a_restart_loads_the_settings_and_grants_with_the_policies(
    services: tuple[PolicyService, SupervisionService], store: Store, clock: Clock
) -> None:
    _, supervision = services
    await supervision.write_settings(
        CLIENT, parse_settings({"protected_extensions": ["101"]}), "ops"
    )
    record = await supervision.add_grant(CLIENT, grant(), "ops")
    fresh = PolicyRegistry()
    try:
        await PolicyFollower(store.policies, fresh, store.supervision).load_all()
        loaded = fresh.get(CLIENT)
        assert (loaded.version, loaded.supervision_version) == (1, 2)
        assert loaded.supervision is not None
        assert loaded.supervision.protected == {"101"}
        assert [r.id for r in loaded.grants] == [record.id]
    finally:
        await fresh.close()
