"""Several PBXes: the same uniqueid (and channel name) on two Asterisk servers are two channels.

The daemon serves one PBX today; these tests build the pieces with two names, so the keys and
the routing are ready for more: grants and sessions keyed by ``(pbx, uniqueid)``, events of one
PBX's Manager never touching another's sessions, and a revocation hung up over the Manager of the
PBX where the session runs."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from callgate.ami.client import ManagerClient
from callgate.ami.enforcer import Enforcer
from callgate.ami.protocol import Message
from callgate.ami.service import LiveEnforcement
from callgate.ami.tracker import SessionTracker, SpyGrants
from callgate.audit import EndReason
from callgate.metrics import Metrics
from callgate.pbx import ChannelRef, ManagerState, PbxName
from callgate.policy import Action
from callgate.registry import PolicyRegistry
from callgate.replace.manager_astdb import ManagerAstDb
from fake_ami import FakeAmi
from support import wait_until

from .conftest import CLIENT, REFERENCE, RecordingAudit, fast_config, policy

EAST, WEST = PbxName("east"), PbxName("west")
NOW = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)


def note(grants: SpyGrants, pbx: PbxName, uniqueid: str, action: str = Action.EAVESDROP) -> None:
    ext, target = ("100", "101") if action == Action.EAVESDROP else ("101", "103")
    channel = f"PJSIP/acme_{ext}-00000001"
    grants.note_allowed(CLIENT, action, ext, target, uniqueid, channel, 1, "", pbx=pbx)


def chanspy_start(spyer: str, spyee: str) -> Message:
    return Message.of(
        ("Event", "ChanSpyStart"),
        ("SpyerChannel", "PJSIP/acme_100-00000001"),
        ("SpyerUniqueid", spyer),
        ("SpyeeChannel", "PJSIP/acme_101-00000002"),
        ("SpyeeUniqueid", spyee),
    )


def hangup(uniqueid: str) -> Message:
    return Message.of(("Event", "Hangup"), ("Uniqueid", uniqueid))


def test_the_same_uniqueid_on_two_pbxes_is_two_grants_and_two_sessions() -> None:
    grants, audit, metrics = SpyGrants(), RecordingAudit(), Metrics()
    east, west = (
        SessionTracker(pbx, grants, audit=audit, metrics=metrics, now=lambda: NOW)
        for pbx in (EAST, WEST)
    )
    note(grants, EAST, "1.1")
    note(grants, WEST, "1.1", Action.WHISPER)
    assert len(grants) == 2  # neither overwrote the other
    assert ChannelRef(EAST, "1.1") in grants
    assert "1.1" not in grants  # a bare uniqueid names no channel

    started_east = east.handle_event(chanspy_start("1.1", "9.1"))
    started_west = west.handle_event(chanspy_start("1.1", "9.1"))
    assert started_east is not None
    assert started_west is not None
    assert (started_east.ref, started_east.grant.action) == (ChannelRef(EAST, "1.1"), "eavesdrop")
    assert (started_west.ref, started_west.grant.action) == (ChannelRef(WEST, "1.1"), "whisper")
    assert started_west.spyee == ChannelRef(WEST, "9.1")
    assert east.get(ChannelRef(WEST, "1.1")) is None
    assert len(grants) == 0

    # The spied-on call ends on east only: west's session with the same uniqueids goes on.
    east.handle_event(hangup("9.1"))
    east.handle_event(Message.of(("Event", "ChanSpyStop"), ("SpyerUniqueid", "1.1")))
    assert len(east) == 0
    assert east.ended(ChannelRef(EAST, "1.1"))
    assert not west.ended(ChannelRef(WEST, "1.1"))
    assert [s.ref for s in west.sessions()] == [ChannelRef(WEST, "1.1")]
    west.handle_event(hangup("1.1"))
    # The audit rows keep the bare uniqueid they always had.
    assert audit.ends() == [("1.1", EndReason.CALL_ENDED), ("1.1", EndReason.LISTENER_HANGUP)]


def test_a_tracker_does_not_adopt_a_grant_of_another_pbx() -> None:
    grants = SpyGrants()
    west = SessionTracker(WEST, grants, audit=RecordingAudit(), metrics=Metrics())
    note(grants, EAST, "1.1")
    assert west.handle_event(chanspy_start("1.1", "9.1")) is None
    row = Message.of(
        ("Event", "CoreShowChannel"),
        ("Channel", "PJSIP/acme_100-00000001"),
        ("Uniqueid", "1.1"),
        ("Application", "ChanSpy"),
        ("ApplicationData", "PJSIP/acme_101-00000002,qESu"),
        ("Duration", "00:00:05"),
    )
    assert west.rebuild([row], asked_at=0.0) == []
    assert ChannelRef(EAST, "1.1") in grants  # still waiting for east's ChanSpyStart


async def test_an_enforcer_only_takes_the_manager_of_its_own_pbx() -> None:
    client = ManagerClient(fast_config(9, pbx=EAST), on_event=lambda _: None)
    tracker = SessionTracker(WEST, SpyGrants(), audit=RecordingAudit(), metrics=Metrics())
    with pytest.raises(ValueError, match="cannot end"):
        Enforcer(client, tracker, PolicyRegistry().get, Metrics())


def test_one_manager_connection_per_pbx() -> None:
    registry = PolicyRegistry()
    configs = [fast_config(9, pbx=EAST), fast_config(10, pbx=EAST)]
    with pytest.raises(ValueError, match="two Manager connections for PBX 'east'"):
        LiveEnforcement(configs, registry.get, RecordingAudit(), Metrics())
    with pytest.raises(ValueError, match="at least one"):
        LiveEnforcement([], registry.get, RecordingAudit(), Metrics())


def test_the_manager_astdb_is_its_connections_pbx() -> None:
    client = ManagerClient(fast_config(9, pbx=WEST), on_event=lambda _: None)
    assert ManagerAstDb(client).pbx == WEST


@dataclass
class TwoPbxes:
    east: FakeAmi
    west: FakeAmi
    registry: PolicyRegistry
    audit: RecordingAudit
    live: LiveEnforcement


@pytest.fixture
async def two() -> AsyncIterator[TwoPbxes]:
    east, west = FakeAmi(), FakeAmi()
    await east.start()
    await west.start()
    registry = PolicyRegistry()
    registry.load(policy(1, REFERENCE))
    audit = RecordingAudit()
    live = LiveEnforcement(
        [fast_config(east.port, pbx=EAST), fast_config(west.port, pbx=WEST)],
        registry.get,
        audit,
        Metrics(),
        stop_grace=0.3,
        reconcile_interval=3600,
    )
    registry.subscribe(live.on_policy_change)
    live.start()
    try:
        await wait_until(lambda: live.status() is ManagerState.CONNECTED)
        await wait_until(lambda: bool(east.received("CoreShowChannels")))
        await wait_until(lambda: bool(west.received("CoreShowChannels")))
        yield TwoPbxes(east, west, registry, audit, live)
    finally:
        await live.stop()
        await east.close()
        await west.close()


async def test_a_revocation_hangs_up_over_the_manager_of_the_pbx_the_session_runs_on(
    two: TwoPbxes,
) -> None:
    # The same uniqueid and the same channel name on both servers: a listen on east, a
    # whisper on west. Withdrawing the whisper right must end west's channel, never east's.
    channel, uniqueid = "PJSIP/acme_101-00000001", "1795723209.1"
    for fake, pbx, action, target in (
        (two.east, EAST, Action.EAVESDROP, "102"),  # 101 listens to 102 by whisper_101 (sales)
        (two.west, WEST, Action.WHISPER, "103"),
    ):
        two.live.grants.note_allowed(
            CLIENT, action, "101", target, uniqueid, channel, 1, "", pbx=pbx
        )
        await fake.start_spy(channel, uniqueid, f"PJSIP/acme_{target}-1", "1795723206.1")
    await wait_until(lambda: len(two.live.sessions()) == 2)
    assert {s.ref for s in two.live.sessions()} == {
        ChannelRef(EAST, uniqueid),
        ChannelRef(WEST, uniqueid),
    }

    changed = copy.deepcopy(REFERENCE)
    changed["whisper_101"] = ["sales"]  # 103 is not in sales; 102 still is
    await two.registry.publish(policy(2, changed))

    hung_up = await two.west.wait_for(lambda a: a.name == "Hangup")
    assert hung_up.get("Channel") == channel
    await wait_until(lambda: two.live.session(ChannelRef(WEST, uniqueid)) is None)
    await asyncio.sleep(0.1)  # room for a wrong Hangup to reach east
    assert two.east.received("Hangup") == []
    survivor = two.live.session(ChannelRef(EAST, uniqueid))
    assert survivor is not None
    assert survivor.grant.action == Action.EAVESDROP
    assert two.audit.ends() == [(uniqueid, EndReason.REVOKED)]


async def test_each_pbx_has_its_own_connection_state(two: TwoPbxes) -> None:
    assert two.live.states() == {EAST: ManagerState.CONNECTED, WEST: ManagerState.CONNECTED}
    await two.west.close()
    await wait_until(lambda: two.live.states()[WEST] is ManagerState.DISCONNECTED)
    assert two.live.states()[EAST] is ManagerState.CONNECTED
    assert two.live.status() is ManagerState.DISCONNECTED  # /readyz shows the worst
