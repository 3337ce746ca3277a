"""Protection and grants ended live against the fake Manager: a target made protected loses its
listeners at once, and a grant's ``until`` ends the session it alone allowed, by the injected
wall clock, within the 1 s the issue asks (never before it), and nothing else. The audit tells a
grant's end (``revoked_cause`` ``grant_expired`` / ``grant_ended``, ``revoked_grant_id``: the grant
that held the session then) from a change of the document."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from callgate.audit import EndReason
from callgate.domain import GrantRecord
from callgate.pbx import ManagerState
from callgate.policy import Action
from callgate.policy.grants import parse_grant_request
from callgate.policy.settings import CallControlSettings
from callgate.registry import ClientPolicy
from callgate.services.follower import supervised
from support import wait_until

from .conftest import REFERENCE, Live, policy

UNTIL = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
HANGUP_BOUND = timedelta(seconds=1)


def grant(
    grant_id: str, ext: str, targets: list[str], until: datetime, *, groups: list[str] = ()
) -> GrantRecord:
    reach: dict[str, list[str]] = {"groups": list(groups)} if groups else {}
    if targets:
        reach["extensions"] = targets
    request = parse_grant_request(
        {
            "ext": ext,
            "action": "eavesdrop",
            **reach,
            "from": "2029-12-31T09:00:00Z",
            "until": until.isoformat(),
            "note": "coaching",
        }
    )
    return GrantRecord(request.to_grant(grant_id=grant_id, created_by="ops"), created_at=UNTIL)


def with_supervision(
    version: int,
    supervision_version: int,
    *,
    protected: tuple[str, ...] = (),
    grants: tuple[GrantRecord, ...] = (),
    document: dict[str, Any] = REFERENCE,
) -> ClientPolicy:
    """The registry entry the follower makes of a document and a supervision record."""
    base = policy(version, document)
    return supervised(
        ClientPolicy(
            base.client_id,
            base.version,
            base.document,
            base.compiled,
            supervision_version=supervision_version,
            settings=CallControlSettings(protected_extensions=protected),
            grants=grants,
        ),
        None,
    )


def sessions(live: Live) -> set[str]:
    return {s.spyer_channel for s in live.service.sessions()}


def end_extra(live: Live, uniqueid: str) -> dict[str, str]:
    (end,) = [e for e in live.audit.events if e.ended is not None and e.uniqueid == uniqueid]
    assert end.end_reason is EndReason.REVOKED
    return dict(end.extra)


async def test_protecting_a_target_ends_the_listens_on_it_at_once(live: Live) -> None:
    on_101, uniqueid = await live.spy(Action.EAVESDROP, "100", "101", 1)  # eavesdrop_group
    on_103, _ = await live.spy(Action.WHISPER, "101", "103", 2)  # whisper_group
    await wait_until(lambda: sessions(live) == {on_101, on_103})

    await live.registry.publish(with_supervision(1, 1, protected=("101",)))

    await live.fake.wait_for(lambda a: a.name == "Hangup")
    await wait_until(lambda: sessions(live) == {on_103})
    await asyncio.sleep(0.1)  # room for a wrong extra Hangup
    assert live.hangups() == [on_101]
    assert end_extra(live, uniqueid)["revoked_reason"] == "protected"


async def test_a_grant_ending_hangs_up_the_listen_it_alone_allowed_within_a_second(
    live: Live,
) -> None:
    live.wall.offset = UNTIL - timedelta(seconds=0.6) - datetime.now(UTC)
    # 100 may listen to 102 by the grant only; to 101 by the document (and the grant).
    await live.registry.publish(
        with_supervision(1, 1, grants=(grant("g-coach", "100", ["101", "102"], UNTIL),))
    )
    by_grant, uniqueid = await live.spy(Action.EAVESDROP, "100", "102", 1)
    by_document, _ = await live.spy(Action.EAVESDROP, "100", "101", 2)
    await wait_until(lambda: sessions(live) == {by_grant, by_document})
    assert live.hangups() == []

    await live.fake.wait_for(lambda a: a.name == "Hangup", within=5)
    heard_at = live.wall()
    assert UNTIL <= heard_at <= UNTIL + HANGUP_BOUND
    await wait_until(lambda: sessions(live) == {by_document})
    await asyncio.sleep(0.1)
    assert live.hangups() == [by_grant]
    extra = end_extra(live, uniqueid)
    assert (extra["revoked_cause"], extra["revoked_reason"], extra["revoked_grant_id"]) == (
        "grant_expired",
        "eavesdrop_not_permitted",
        "g-coach",
    )


async def test_a_session_another_grant_still_allows_outlives_the_first(live: Live) -> None:
    live.wall.offset = UNTIL - timedelta(seconds=0.3) - datetime.now(UTC)
    grants = (
        grant("g-short", "100", ["102"], UNTIL),
        grant("g-long", "100", ["102"], UNTIL + timedelta(hours=1)),
    )
    await live.registry.publish(with_supervision(1, 1, grants=grants))
    listener, _ = await live.spy(Action.EAVESDROP, "100", "102", 1)
    await wait_until(lambda: sessions(live) == {listener})
    await wait_until(lambda: live.wall() > UNTIL + timedelta(seconds=0.3), within=3)
    assert live.hangups() == []
    assert sessions(live) == {listener}


def ended_early(record: GrantRecord, at: datetime) -> GrantRecord:
    """``record`` as ``DELETE`` leaves it."""
    return GrantRecord(record.grant, record.created_at, ended_at=at, ended_by="boss")


async def test_ending_the_allowing_grant_early_is_audited_grant_ended_with_its_id(
    live: Live,
) -> None:
    live.wall.offset = UNTIL - timedelta(hours=1) - datetime.now(UTC)
    record = grant("g-coach", "100", ["102"], UNTIL)
    await live.registry.publish(with_supervision(1, 1, grants=(record,)))
    listener, uniqueid = await live.spy(Action.EAVESDROP, "100", "102", 1, grant_id="g-coach")
    await wait_until(lambda: sessions(live) == {listener})

    await live.registry.publish(with_supervision(1, 2, grants=(ended_early(record, live.wall()),)))

    await live.fake.wait_for(lambda a: a.name == "Hangup")
    await wait_until(lambda: not sessions(live))
    assert live.hangups() == [listener]
    extra = end_extra(live, uniqueid)
    assert (extra["revoked_cause"], extra["revoked_reason"], extra["revoked_grant_id"]) == (
        "grant_ended",
        "eavesdrop_not_permitted",
        "g-coach",
    )
    # the session's own rows name the grant, for a store without the decision's row
    assert {dict(e.extra).get("grant_id") for e in live.audit.events} == {"g-coach"}


async def test_a_session_noted_without_its_grant_learns_it_from_its_first_re_decision(
    live: Live,
) -> None:
    """As a session adopted from another instance's FastAGI answer (read back from the
    channel, which carries no grant id): the re-decision at its start names the grant."""
    live.wall.offset = UNTIL - timedelta(hours=1) - datetime.now(UTC)
    record = grant("g-coach", "100", ["102"], UNTIL)
    await live.registry.publish(with_supervision(1, 1, grants=(record,)))
    listener, uniqueid = await live.spy(Action.EAVESDROP, "100", "102", 1)  # no grant id
    await wait_until(lambda: sessions(live) == {listener})
    session = live.session(uniqueid)
    assert session is not None
    assert session.allowed_by == "g-coach"

    await live.registry.publish(with_supervision(1, 2, grants=(ended_early(record, live.wall()),)))

    await live.fake.wait_for(lambda a: a.name == "Hangup")
    await wait_until(lambda: not sessions(live))
    extra = end_extra(live, uniqueid)
    assert (extra["revoked_cause"], extra["revoked_grant_id"]) == ("grant_ended", "g-coach")


async def test_the_cause_names_the_grant_that_held_the_session_when_it_ended(live: Live) -> None:
    """Allowed by g-first; g-later (lasting longer) comes and takes over; g-first ending early
    ends nothing; g-later ending early ends the session, and the audit names g-later."""
    live.wall.offset = UNTIL - timedelta(hours=2) - datetime.now(UTC)
    first = grant("g-first", "100", ["102"], UNTIL)
    later = grant("g-later", "100", ["102"], UNTIL + timedelta(hours=1))
    await live.registry.publish(with_supervision(1, 1, grants=(first,)))
    listener, uniqueid = await live.spy(Action.EAVESDROP, "100", "102", 1, grant_id="g-first")
    await wait_until(lambda: sessions(live) == {listener})

    await live.registry.publish(with_supervision(1, 2, grants=(first, later)))
    first = ended_early(first, live.wall())
    await live.registry.publish(with_supervision(1, 3, grants=(first, later)))
    await asyncio.sleep(0.1)  # room for a wrong Hangup
    assert live.hangups() == []
    session = live.session(uniqueid)
    assert session is not None
    assert session.allowed_by == "g-later"

    await live.registry.publish(
        with_supervision(1, 4, grants=(first, ended_early(later, live.wall())))
    )

    await live.fake.wait_for(lambda a: a.name == "Hangup")
    await wait_until(lambda: not sessions(live))
    extra = end_extra(live, uniqueid)
    assert (extra["revoked_cause"], extra["revoked_grant_id"]) == ("grant_ended", "g-later")


async def test_a_document_change_ending_a_grant_allowed_session_is_no_grant_end(
    live: Live,
) -> None:
    """The grant reaches group sales; the document takes 102 out of sales: the grant is still in
    force (it reaches the group's other members), so no grant cause — the new version did it."""
    live.wall.offset = UNTIL - timedelta(hours=1) - datetime.now(UTC)
    record = grant("g-sales", "100", [], UNTIL, groups=["sales"])
    await live.registry.publish(with_supervision(1, 1, grants=(record,)))
    listener, uniqueid = await live.spy(Action.EAVESDROP, "100", "102", 1, grant_id="g-sales")
    await wait_until(lambda: sessions(live) == {listener})

    moved = {**REFERENCE, "groups": {**REFERENCE["groups"], "sales": ["101"]}}
    await live.registry.publish(with_supervision(2, 1, grants=(record,), document=moved))

    await live.fake.wait_for(lambda a: a.name == "Hangup")
    await wait_until(lambda: not sessions(live))
    extra = end_extra(live, uniqueid)
    assert (extra["revoked_by_version"], extra["revoked_reason"]) == (
        "2",
        "eavesdrop_not_permitted",
    )
    assert "revoked_cause" not in extra
    assert "revoked_grant_id" not in extra


async def test_a_grant_ended_while_the_manager_is_down_is_still_the_cause_after_reconnect(
    live: Live,
) -> None:
    """The cause comes from the grant records in force, not from the change that woke the
    enforcer: here the Hangup can only be sent at the reconnect, after a later settings change."""
    live.wall.offset = UNTIL - timedelta(hours=1) - datetime.now(UTC)
    record = grant("g-coach", "100", ["102"], UNTIL)
    await live.registry.publish(with_supervision(1, 1, grants=(record,)))
    listener, uniqueid = await live.spy(Action.EAVESDROP, "100", "102", 1, grant_id="g-coach")
    await wait_until(lambda: sessions(live) == {listener})

    await live.fake.drop()
    await wait_until(lambda: live.service.status() is not ManagerState.CONNECTED)
    ended = (ended_early(record, live.wall()),)
    await live.registry.publish(with_supervision(1, 2, grants=ended))
    await live.registry.publish(with_supervision(1, 3, grants=ended, protected=("103",)))
    assert live.hangups() == []  # nothing can be sent while down

    await live.connected()
    await live.fake.wait_for(lambda a: a.name == "Hangup")
    await wait_until(lambda: not sessions(live))
    assert live.hangups() == [listener]
    extra = end_extra(live, uniqueid)
    assert (extra["revoked_cause"], extra["revoked_grant_id"]) == ("grant_ended", "g-coach")
