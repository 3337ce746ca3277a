"""The change feed drives the registry and both revocations, whoever wrote the change.

A second store on the same SQLite file plays another instance: it commits a policy version, and
the notification reaches this instance's feed as a PostgreSQL ``LISTEN`` would deliver it. No
HTTP write happens here, yet the registry takes the new version (re-read from this instance's
store), the listen it no longer allows is hung up on the fake Manager, and the replacement it no
longer allows is ended. A grant ended early on the other instance ends the listen it allowed here,
audited with the same cause the other instance would give it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from callgate.agi.record import AgiRequest, DecisionRecorder
from callgate.ami.client import ManagerConfig, ManagerState
from callgate.ami.service import LiveEnforcement
from callgate.audit import AuditEvent, EndReason
from callgate.domain import ChangeKind, PolicyChange, Replacement
from callgate.logs import DecisionLog
from callgate.metrics import Metrics
from callgate.pbx import DEFAULT_PBX
from callgate.policy import Action, Reason, decide, parse_document
from callgate.policy.grants import parse_grant_request
from callgate.registry import ClientPolicy, PolicyRegistry
from callgate.replace.manager_astdb import manager_astdb
from callgate.replace.service import ReplaceService
from callgate.services import PolicyFollower, SupervisionService
from callgate.store import Store, open_store
from fake_ami import FakeAmi
from support import wait_until

CLIENT = "acme"
REFERENCE: dict[str, Any] = {
    "groups": {"support": ["100", "101"], "sales": ["102", "101"]},
    "eavesdrop_100": ["support"],
}
REPLACING = {**REFERENCE, "phone_replace_groups": ["support"]}
WITHDRAWN = {k: v for k, v in REFERENCE.items() if k != "eavesdrop_100"}


class RecordingAudit:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)


def fast_config(port: int) -> ManagerConfig:
    return ManagerConfig(
        "127.0.0.1", port, "callgate", "s3cret", backoff_initial=0.05, backoff_max=0.2
    )


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """This instance's store, and another instance's on the same database."""
    path = str(tmp_path / "callgate.sqlite3")
    here, there = await open_store(path), await open_store(path)
    yield here, there
    await there.close()
    await here.close()


async def test_another_instances_change_updates_the_registry_and_ends_a_listen_and_a_replacement(
    stores: tuple[Store, Store], fake: FakeAmi
) -> None:
    here, there = stores
    await here.policies.save(CLIENT, parse_document(REPLACING), "admin")
    registry = PolicyRegistry()
    follower = PolicyFollower(here.policies, registry)
    assert await follower.load_all() == 1
    audit, metrics = RecordingAudit(), Metrics()
    live = LiveEnforcement([fast_config(fake.port)], registry.get, audit, metrics, stop_grace=0.3)
    client = live.links[DEFAULT_PBX].client
    replace = ReplaceService(here.replace, registry, audit, live_astdb=manager_astdb(client))
    # wired as daemon.build wires them
    registry.subscribe(live.on_policy_change)
    registry.subscribe(replace.on_policy_change, before_answer=True)
    here.changes.subscribe(follower.on_change)
    live.start()
    try:
        await wait_until(lambda: live.status() is ManagerState.CONNECTED)
        await wait_until(lambda: bool(fake.received("CoreShowChannels")))
        spier, uniqueid = "PJSIP/acme_100-00000001", "1795723209.1"
        live.grants.note_allowed(
            CLIENT, Action.EAVESDROP, "100", "101", uniqueid, spier, 1, pbx=DEFAULT_PBX
        )
        await fake.start_spy(spier, uniqueid, "PJSIP/acme_101-00000002", "1795723206.1")
        await wait_until(lambda: len(live.links[DEFAULT_PBX].tracker) == 1)
        now = datetime.now(UTC)
        await here.replace.start_replacement(Replacement(CLIENT, "100", "100", "101", now))

        stored = await there.policies.save(CLIENT, parse_document(WITHDRAWN), "other-instance")
        assert registry.get(CLIENT).version == 1  # nothing reached this instance yet
        here.changes.publish(PolicyChange(CLIENT, stored.version))  # as LISTEN delivers it

        await fake.wait_for(lambda a: a.name == "Hangup")
        assert [a.get("Channel") for a in fake.received("Hangup")] == [spier]
        policy = registry.get(CLIENT)
        assert (policy.version, policy.changed_by) == (2, "other-instance")
        await registry.idle()
        assert list(await here.replace.replacements(CLIENT)) == []
        await replace.idle()
    finally:
        await live.stop()
        await registry.close()
        replace.close()


async def test_a_lost_or_repeated_notification_loses_nothing(
    stores: tuple[Store, Store],
) -> None:
    """The follower re-reads the current version: a notification of an older version still
    brings the newest, and one of a version it holds already changes nothing."""
    here, there = stores
    registry = PolicyRegistry()
    follower = PolicyFollower(here.policies, registry)
    told: list[tuple[int, int]] = []

    async def listener(old: ClientPolicy, new: ClientPolicy) -> None:
        told.append((old.version, new.version))

    registry.subscribe(listener)
    here.changes.subscribe(follower.on_change)
    for allow in (True, False, True):  # three versions; only the first is announced
        await there.policies.save(CLIENT, parse_document({"allow_all": allow}), "other")
    here.changes.publish(PolicyChange(CLIENT, 1))
    await here.changes.idle()
    assert registry.get(CLIENT).version == 3
    here.changes.publish(PolicyChange(CLIENT, 2))  # late, and older than what is held
    here.changes.publish(PolicyChange(CLIENT, 3))  # a repeat
    await here.changes.idle()
    await registry.idle()
    assert told == [(0, 3)]
    await registry.close()


async def test_a_stalled_subscriber_delays_no_other_and_misses_no_change(
    stores: tuple[Store, Store],
) -> None:
    here, _ = stores
    release = asyncio.Event()
    slow: list[int] = []
    fast: list[int] = []

    async def stalled(change: PolicyChange) -> None:
        await release.wait()
        slow.append(change.version)

    async def quick(change: PolicyChange) -> None:
        fast.append(change.version)

    here.changes.subscribe(stalled)
    here.changes.subscribe(quick)
    for n in range(3):
        await here.policies.save(CLIENT, parse_document({"allow_all": n % 2 == 0}), "admin")
    await wait_until(lambda: fast == [1, 2, 3])
    assert slow == []
    release.set()
    await here.changes.idle()
    # the stalled one missed nothing: 2 and 3 waited in its own queue while it was busy with 1
    assert slow == [1, 2, 3]


async def test_a_grant_ended_on_another_instance_ends_its_listen_here_as_grant_ended(
    stores: tuple[Store, Store], fake: FakeAmi
) -> None:
    """The other instance adds a grant and ends it early (``SupervisionService``, as its
    ``DELETE`` does); only the feed's versions reach this instance, which decided the listen
    (``DecisionRecorder``, as FastAGI records it) and hangs it up: ``revoked_cause``
    ``grant_ended``, read from the stored record, with the grant's id."""
    here, there = stores
    await here.policies.save(CLIENT, parse_document(REFERENCE), "admin")
    registry = PolicyRegistry()
    follower = PolicyFollower(here.policies, registry, here.supervision)
    await follower.load_all()
    here.changes.subscribe(follower.on_change)
    audit, metrics = RecordingAudit(), Metrics()
    live = LiveEnforcement([fast_config(fake.port)], registry.get, audit, metrics, stop_grace=0.3)
    registry.subscribe(live.on_policy_change)
    recorder = DecisionRecorder(
        audit, metrics, DecisionLog(logging.getLogger(__name__)), grants=live.grants
    )
    other = PolicyRegistry()  # the other instance's, following its own feed
    other_follower = PolicyFollower(there.policies, other, there.supervision)
    await other_follower.load_all()
    there.changes.subscribe(other_follower.on_change)
    grants_there = SupervisionService(there.supervision, other)
    live.start()
    try:
        await wait_until(lambda: live.status() is ManagerState.CONNECTED)
        await wait_until(lambda: bool(fake.received("CoreShowChannels")))
        now = datetime.now(UTC)
        added = await grants_there.add_grant(
            CLIENT,
            parse_grant_request(
                {
                    "ext": "100",
                    "action": "eavesdrop",
                    "extensions": ["102"],  # the document does not let 100 hear 102
                    "from": (now - timedelta(minutes=1)).isoformat(),
                    "until": (now + timedelta(hours=1)).isoformat(),
                    "note": "coaching",
                }
            ),
            "supervisor",
        )
        here.changes.publish(PolicyChange(CLIENT, 1, ChangeKind.SUPERVISION))
        await registry.applied_supervision(CLIENT, 1)
        policy = registry.get(CLIENT)
        decision = decide(
            policy.compiled,
            Action.EAVESDROP,
            "100",
            "102",
            now=datetime.now(UTC),
            supervision=policy.supervision,
        )
        assert (decision.reason, decision.grant_id) == (Reason.TEMPORARY_GRANT, added.id)
        spier, uniqueid = "PJSIP/acme_100-00000001", "1795723209.1"
        request = AgiRequest(Action.EAVESDROP, CLIENT, "100", "102", uniqueid, spier)
        recorder.record(request, decision, policy.version)
        await fake.start_spy(spier, uniqueid, "PJSIP/acme_102-00000002", "1795723206.1")
        await wait_until(lambda: len(live.links[DEFAULT_PBX].tracker) == 1)

        ended = await grants_there.end_grant(CLIENT, added.id, "compliance")
        assert ended.ended_by == "compliance"
        here.changes.publish(PolicyChange(CLIENT, 2, ChangeKind.SUPERVISION))  # as LISTEN does

        await fake.wait_for(lambda a: a.name == "Hangup")
        assert [a.get("Channel") for a in fake.received("Hangup")] == [spier]
        await wait_until(lambda: any(e.ended is not None for e in audit.events))
        (end,) = [e for e in audit.events if e.ended is not None]
        extra = dict(end.extra)
        assert end.end_reason is EndReason.REVOKED
        assert (extra["revoked_cause"], extra["revoked_grant_id"], extra["grant_id"]) == (
            "grant_ended",
            added.id,
            added.id,
        )
    finally:
        await live.stop()
        recorder.log.flush()
        await registry.close()
        await other.close()
