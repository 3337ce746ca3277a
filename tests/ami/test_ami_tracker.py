"""The session tracker alone, fed with Manager events as values (no sockets): grants, starts,
ends and their reasons, and the reconciliation with a CoreShowChannels list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from callgate.ami.protocol import Message
from callgate.ami.tracker import SessionTracker, SpyGrants
from callgate.audit import EndReason
from callgate.metrics import Metrics
from callgate.pbx import DEFAULT_PBX
from callgate.policy import Action

from .conftest import RecordingAudit

NOW = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit() -> RecordingAudit:
    return RecordingAudit()


@pytest.fixture
def tracker(clock: Clock, audit: RecordingAudit) -> SessionTracker:
    grants = SpyGrants(ttl=60, clock=clock)
    return SessionTracker(
        DEFAULT_PBX,
        grants,
        audit=audit,
        metrics=Metrics(),
        stop_grace=3,
        clock=clock,
        now=lambda: NOW,
    )


def start(spyer: str, spyee: str = "9.1") -> Message:
    return Message.of(
        ("Event", "ChanSpyStart"),
        ("SpyerChannel", f"PJSIP/acme_100-{spyer}"),
        ("SpyerUniqueid", spyer),
        ("SpyeeChannel", "PJSIP/acme_101-00000001"),
        ("SpyeeUniqueid", spyee),
    )


def event(name: str, uniqueid: str) -> Message:
    key = "SpyerUniqueid" if name.startswith("ChanSpy") else "Uniqueid"
    return Message.of(("Event", name), (key, uniqueid))


def grant(tracker: SessionTracker, uniqueid: str, action: str = Action.EAVESDROP) -> None:
    tracker.grants.note_allowed(
        "acme",
        action,
        "100",
        "101",
        uniqueid,
        f"PJSIP/acme_100-{uniqueid}",
        3,
        "eavesdrop_group",
        pbx=tracker.pbx,
    )


def row(channel: str, uniqueid: str, application: str = "Dial", data: str = "") -> Message:
    return Message.of(
        ("Event", "CoreShowChannel"),
        ("Channel", channel),
        ("Uniqueid", uniqueid),
        ("Application", application),
        ("ApplicationData", data),
        ("Duration", "00:01:05"),
    )


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        # the listener hangs up: Stop, then the spier's Hangup
        ([event("ChanSpyStop", "1.1"), event("Hangup", "1.1")], EndReason.LISTENER_HANGUP),
        # the spied-on call ends: its Hangup, then Stop (ChanSpy's E)
        ([event("Hangup", "9.1"), event("ChanSpyStop", "1.1")], EndReason.CALL_ENDED),
        # ... or Stop first, then the spied-on channel's Hangup
        ([event("ChanSpyStop", "1.1"), event("Hangup", "9.1")], EndReason.CALL_ENDED),
        # Start without Stop: the spier's Hangup is the authority
        ([event("Hangup", "1.1")], EndReason.LISTENER_HANGUP),
        # a hangup request on the spied-on call comes before its Hangup
        (
            [event("SoftHangupRequest", "9.1"), event("ChanSpyStop", "1.1")],
            EndReason.CALL_ENDED,
        ),
    ],
)
def test_why_a_session_ended(
    tracker: SessionTracker, audit: RecordingAudit, events: list[Message], reason: EndReason
) -> None:
    grant(tracker, "1.1")
    assert tracker.handle_event(start("1.1")) is not None
    for message in events:
        tracker.handle_event(message)
    assert len(tracker) == 0
    assert audit.ends() == [("1.1", reason)]


def test_a_grant_starts_one_session_only_and_expires(tracker: SessionTracker, clock: Clock) -> None:
    grant(tracker, "1.1")
    grant(tracker, "1.2", "pickup")  # not a spy action: ignored
    assert tracker.handle_event(start("1.2")) is None
    assert tracker.handle_event(start("1.1")) is not None
    tracker.handle_event(event("Hangup", "1.1"))
    assert tracker.handle_event(start("1.1")) is None  # used up
    grant(tracker, "1.3")
    clock.now += 61
    assert tracker.handle_event(start("1.3")) is None  # expired


def test_a_stopped_session_whose_spier_stays_up_ends_after_the_grace(
    tracker: SessionTracker, clock: Clock, audit: RecordingAudit
) -> None:
    grant(tracker, "1.1")
    tracker.handle_event(start("1.1"))
    tracker.handle_event(event("ChanSpyStop", "1.1"))
    clock.now += 2
    tracker.expire()
    assert len(tracker) == 1
    clock.now += 1
    tracker.expire()
    assert audit.ends() == [("1.1", EndReason.LISTENER_HANGUP)]


def test_rebuild_closes_the_vanished_adopts_the_missed_and_keeps_the_newer(
    tracker: SessionTracker, clock: Clock, audit: RecordingAudit
) -> None:
    for uid in ("1.1", "1.2", "1.3", "1.4"):
        grant(tracker, uid)
    tracker.handle_event(start("1.1", spyee="9.1"))  # its spier is gone by the snapshot
    tracker.handle_event(start("1.2", spyee="9.2"))  # still spying
    asked_at = clock.now
    clock.now += 0.01
    tracker.handle_event(start("1.4", spyee="9.4"))  # started after the snapshot was taken
    adopted = tracker.rebuild(
        [
            row("PJSIP/acme_101-00000001", "9.1"),
            row("PJSIP/acme_100-1.2", "1.2", "ChanSpy", "PJSIP/acme_101-00000002,qESu"),
            row("PJSIP/acme_101-00000002", "9.2"),
            # 1.3's ChanSpyStart was missed while the connection was down
            row("PJSIP/acme_100-1.3", "1.3", "ChanSpy", "PJSIP/acme_101-00000003,qESu"),
            row("PJSIP/acme_101-00000003", "9.3"),
            # a ChanSpy callgate never allowed
            row("PJSIP/acme_100-1.9", "1.9", "ChanSpy", "PJSIP/acme_101-00000002,qESu"),
        ],
        asked_at=asked_at,
    )
    assert [s.uniqueid for s in adopted] == ["1.3"]
    (session,) = adopted
    assert (session.spyee_channel, session.spyee_uniqueid) == ("PJSIP/acme_101-00000003", "9.3")
    assert session.started == NOW - timedelta(minutes=1, seconds=5)
    assert {s.uniqueid for s in tracker.sessions()} == {"1.2", "1.3", "1.4"}
    assert audit.ends() == [("1.1", EndReason.LISTENER_HANGUP)]
