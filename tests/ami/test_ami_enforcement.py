"""Live enforcement end to end against the fake Manager: sessions tied to the decisions that
allowed them, ended by a policy change that withdraws them, and nothing else ended."""

from __future__ import annotations

import asyncio
import copy

from callgate.agi import variables
from callgate.audit import EndReason
from callgate.pbx import ManagerState
from callgate.policy import Action
from support import wait_until

from .conftest import CLIENT, REFERENCE, Live, policy


def without(document: dict[str, object], key: str) -> dict[str, object]:
    changed = copy.deepcopy(document)
    del changed[key]
    return changed


def sessions(live: Live) -> set[str]:
    return {s.spyer_channel for s in live.service.sessions()}


def active(live: Live, mode: str) -> float:
    value = live.metrics.registry.get_sample_value(
        "callgate_spy_sessions_active", {"client": CLIENT, "mode": mode}
    )
    return value or 0.0


async def test_a_listen_session_is_tracked_from_its_allowing_decision(live: Live) -> None:
    channel, uniqueid = await live.spy(Action.EAVESDROP, "100", "101", 1)
    await wait_until(lambda: sessions(live) == {channel})
    session = live.session(uniqueid)
    assert session is not None
    assert (session.grant.ext, session.grant.target, session.grant.policy_version) == (
        "100",
        "101",
        1,
    )
    assert active(live, "eavesdrop") == 1
    (started,) = live.audit.events
    assert (started.action, started.uniqueid, started.started is not None) == (
        "eavesdrop",
        uniqueid,
        True,
    )


async def test_revoking_a_listen_right_hangs_up_exactly_that_listener(live: Live) -> None:
    listener, uniqueid = await live.spy(Action.EAVESDROP, "100", "101", 1)
    whisperer, _ = await live.spy(Action.WHISPER, "101", "103", 2)
    other_client_spier = "PJSIP/other_100-00000003"
    await live.fake.start_spy(other_client_spier, "1795723209.3", "PJSIP/other_101-1", "7.7")
    await wait_until(lambda: sessions(live) == {listener, whisperer})

    await live.registry.publish(policy(2, without(REFERENCE, "eavesdrop_100")))

    await live.fake.wait_for(lambda a: a.name == "Hangup")
    await wait_until(lambda: sessions(live) == {whisperer})
    await asyncio.sleep(0.1)  # room for any wrong extra Hangup to arrive
    assert live.hangups() == [listener]
    assert live.audit.ends() == [(uniqueid, EndReason.REVOKED)]
    (end,) = [e for e in live.audit.events if e.ended is not None]
    assert ("revoked_by_version", "2") in end.extra
    assert ("revoked_reason", "eavesdrop_not_permitted") in end.extra
    assert active(live, "eavesdrop") == 0
    assert active(live, "whisper") == 1
    revoked = live.metrics.registry.get_sample_value(
        "callgate_revocations_total", {"client": CLIENT, "mode": "eavesdrop"}
    )
    assert revoked == 1


async def test_a_whisper_session_survives_an_eavesdrop_change_but_not_a_whisper_change(
    live: Live,
) -> None:
    whisperer, uniqueid = await live.spy(Action.WHISPER, "101", "103", 1)
    await wait_until(lambda: sessions(live) == {whisperer})
    listen_only = copy.deepcopy(REFERENCE)
    listen_only["eavesdrop_101"] = ["hr"]  # 101 may now also listen to 103 by an eavesdrop grant
    await live.registry.publish(policy(2, listen_only))
    await live.registry.publish(policy(3, without(REFERENCE, "eavesdrop_100")))
    await asyncio.sleep(0.15)
    assert live.hangups() == []
    assert sessions(live) == {whisperer}

    # Whisper needs the whisper grant: listening rights do not keep a whisper going (rule 6).
    changed = copy.deepcopy(listen_only)
    changed["whisper_101"] = ["sales"]  # 103 is not in sales
    await live.registry.publish(policy(4, changed))
    await live.fake.wait_for(lambda a: a.name == "Hangup")
    assert live.hangups() == [whisperer]
    await wait_until(lambda: live.audit.ends() == [(uniqueid, EndReason.REVOKED)])


async def test_a_listen_session_allowed_by_a_whisper_grant_ends_when_that_grant_goes(
    live: Live,
) -> None:
    listener, _ = await live.spy(Action.EAVESDROP, "101", "103", 1)  # whisper_101 covers listen
    await wait_until(lambda: sessions(live) == {listener})
    await live.registry.publish(policy(2, without(REFERENCE, "whisper_101")))
    await live.fake.wait_for(lambda a: a.name == "Hangup")
    assert live.hangups() == [listener]


async def test_the_listener_hanging_up_and_the_call_ending_are_told_apart(live: Live) -> None:
    _, listener = await live.spy(Action.EAVESDROP, "100", "101", 1)
    _, whisperer = await live.spy(Action.WHISPER, "101", "103", 2)
    await wait_until(lambda: len(sessions(live)) == 2)
    await live.fake.hang_up(listener)  # the listener puts the phone down
    await live.fake.hang_up("1795723206.2")  # the call being whispered to ends
    await wait_until(lambda: not sessions(live))
    assert sorted(live.audit.ends()) == [
        (listener, EndReason.LISTENER_HANGUP),
        (whisperer, EndReason.CALL_ENDED),
    ]
    assert live.hangups() == []


async def test_a_start_without_stop_or_hangup_still_ends_after_the_grace(live: Live) -> None:
    channel, uniqueid = await live.spy(Action.EAVESDROP, "100", "101", 1)
    await wait_until(lambda: sessions(live) == {channel})
    # Only the spied-on call's Hangup arrives: no ChanSpyStop, the spier's Hangup is lost.
    live.fake.channels[uniqueid].spying_on = None
    await live.fake.hang_up("1795723206.1")
    await wait_until(lambda: not sessions(live), within=3)
    assert live.audit.ends() == [(uniqueid, EndReason.CALL_ENDED)]


async def test_chanspy_not_allowed_by_callgate_is_not_tracked_nor_hung_up(live: Live) -> None:
    await live.fake.start_spy("PJSIP/acme_100-00000001", "1.1", "PJSIP/acme_101-00000002", "1.2")
    await live.registry.publish(policy(2, without(REFERENCE, "eavesdrop_100")))
    await asyncio.sleep(0.1)
    assert sessions(live) == set()
    assert live.hangups() == []


async def test_a_right_withdrawn_before_chanspy_starts_is_ended_as_soon_as_it_starts(
    live: Live,
) -> None:
    channel, uniqueid = "PJSIP/acme_100-00000001", "1795723209.1"
    live.allow(Action.EAVESDROP, "100", "101", uniqueid, channel)
    await live.registry.publish(policy(2, without(REFERENCE, "eavesdrop_100")))
    await live.fake.start_spy(channel, uniqueid, "PJSIP/acme_101-00000002", "1.2")
    await live.fake.wait_for(lambda a: a.name == "Hangup")
    assert live.hangups() == [channel]


async def test_after_a_reconnect_the_picture_is_rebuilt_and_revocation_still_works(
    live: Live,
) -> None:
    first, first_uid = await live.spy(Action.EAVESDROP, "100", "101", 1)
    whisperer, _ = await live.spy(Action.WHISPER, "101", "103", 2)
    await wait_until(lambda: sessions(live) == {first, whisperer})

    await live.fake.drop()
    await wait_until(lambda: live.service.status() is not ManagerState.CONNECTED)
    # While the connection is down: a listen starts (its ChanSpyStart is lost), the whisper
    # session ends unseen, and the first listener's right is withdrawn.
    missed, missed_uid = await live.spy(Action.EAVESDROP, "101", "102", 3, announce=False)
    del live.fake.channels["1795723209.2"]
    await live.registry.publish(policy(2, without(REFERENCE, "eavesdrop_100")))
    assert live.hangups() == []  # nothing can be sent while down

    await live.connected()
    await live.fake.wait_for(lambda a: a.name == "Hangup")
    await wait_until(lambda: sessions(live) == {missed})
    assert live.hangups() == [first]
    assert live.session(missed_uid) is not None
    assert (first_uid, EndReason.REVOKED) in live.audit.ends()

    # Revocation works on the rebuilt picture: the adopted session ends with its grant.
    await live.registry.publish(policy(3, without(REFERENCE, "whisper_101")))
    await wait_until(lambda: live.hangups() == [first, missed])
    await wait_until(lambda: not sessions(live))


def ami_state(live: Live) -> dict[str, float | None]:
    """``callgate_ami_state`` by its label values (the names dashboards have always used)."""
    return {
        state: live.metrics.registry.get_sample_value("callgate_ami_state", {"state": state})
        for state in ("connected", "disconnected", "auth_failed")
    }


async def test_connection_state_is_a_metric(live: Live) -> None:
    assert live.metrics.registry.get_sample_value("callgate_ami_connected") == 1
    assert ami_state(live) == {"connected": 1, "disconnected": 0, "auth_failed": 0}
    await live.fake.drop()
    await wait_until(lambda: live.metrics.registry.get_sample_value("callgate_ami_connected") == 0)
    assert ami_state(live) == {"connected": 0, "disconnected": 1, "auth_failed": 0}


async def test_a_revoked_listener_on_a_silent_call_is_hung_up_once_and_ended_once(
    live: Live,
) -> None:
    # A real Asterisk accepts the Hangup of a spier at once and stops feeding it audio, but
    # ChanSpy finishes only when a frame crosses the spied-on channel: on a call with no media
    # the spier's channel stays in ChanSpy (and in CoreShowChannels) until that call ends.
    live.fake.media = False
    listener, uniqueid = await live.spy(Action.EAVESDROP, "100", "101", 1)
    await wait_until(lambda: sessions(live) == {listener})

    await live.registry.publish(policy(2, without(REFERENCE, "eavesdrop_100")))
    await wait_until(lambda: live.audit.ends() == [(uniqueid, EndReason.REVOKED)])
    assert live.fake.channels[uniqueid].application == "ChanSpy"

    # Reconciling sees it still spying: not adopted again, not hung up again.
    await live.service.reconcile()
    assert sessions(live) == set()
    assert live.hangups() == [listener]

    # The call ends; ChanSpyStop, SoftHangupRequest and Hangup of the spier follow.
    await live.fake.hang_up("1795723206.1")
    await wait_until(lambda: uniqueid not in live.fake.channels)
    await asyncio.sleep(0.05)
    assert live.audit.ends() == [(uniqueid, EndReason.REVOKED)]
    assert live.hangups() == [listener]
    assert active(live, "eavesdrop") == 0


def allowed_listener(live: Live, uniqueid: str, **overrides: str) -> str:
    """A spier of the shipped dialplan's ``listen`` that callgate allowed before it restarted:
    in ChanSpy, with the variables callgate and the dialplan left on it, and no grant here."""
    channel = f"PJSIP/acme_100-{int(uniqueid.rsplit('.', 1)[1]):08x}"
    spyee = live.fake.add_channel("PJSIP/acme_101-000000ff", "1795723100.9", application="Dial")
    spier = live.fake.add_channel(
        channel,
        uniqueid,
        application="ChanSpy",
        application_data=f"{spyee.channel},qESu",
        spying_on=spyee.uniqueid,
    )
    spier.context, spier.exten = "callgate", "listen"
    spier.variables = {
        variables.DECISION: variables.ALLOW,
        variables.VERSION: "1",
        variables.REASON: "eavesdrop_group",
        variables.DIALPLAN_CLIENT: CLIENT,
        variables.DIALPLAN_ACTING: "100",
        "ARG2": "101",
        **overrides,
    }
    return channel


async def test_a_listen_allowed_before_callgate_restarted_is_recovered_and_revocable(
    live: Live,
) -> None:
    # Seen on Asterisk 22.10.1: callgate restarted while 100 listened to 101; the grant was only
    # in memory, so the session went untracked and a policy change did not end it.
    channel = allowed_listener(live, "1795723300.1")
    await live.service.reconcile()
    session = live.session("1795723300.1")
    assert session is not None
    assert (session.grant.action, session.grant.ext, session.grant.target) == (
        Action.EAVESDROP,
        "100",
        "101",
    )
    assert live.hangups() == []

    await live.registry.publish(policy(2, without(REFERENCE, "eavesdrop_100")))
    await live.fake.wait_for(lambda a: a.name == "Hangup")
    assert live.hangups() == [channel]


async def test_only_chanspy_that_callgate_allowed_is_recovered(live: Live) -> None:
    allowed_listener(live, "1795723300.1", **{variables.DECISION: variables.DENY})  # cannot be
    allowed_listener(live, "1795723300.2", **{variables.DIALPLAN_CLIENT: ""})  # no proof of ours
    other = allowed_listener(live, "1795723300.3")
    live.fake.channels["1795723300.3"].context = "operators"  # an operator's own ChanSpy
    await live.service.reconcile()
    assert sessions(live) == set()
    getvars = {a.get("Channel") for a in live.fake.actions if a.name == "Getvar"}
    assert other not in getvars

    await live.registry.publish(policy(2, {"groups": {}}))
    await asyncio.sleep(0.1)
    assert live.hangups() == []
