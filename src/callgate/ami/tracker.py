"""Which listen/whisper sessions are going on, and which decision allowed each one.

The picture is built from three sources:

- ``SpyGrants.note_allowed``: the FastAGI handler reports every allowed ``eavesdrop``/``whisper``
  right after deciding it. The grant waits here (``grant_ttl`` seconds) for its ChanSpy to start.
- Manager events: ``ChanSpyStart`` whose ``SpyerUniqueid`` is a grant's ``agi_uniqueid`` starts a
  session (the dialplan runs ChanSpy on the AGI's own channel); ``ChanSpyStop`` marks it stopped;
  the spier's ``Hangup`` ends it (authoritative: Asterisk may publish Start without Stop). A
  stopped session whose spier stays up ends ``stop_grace`` seconds later.
- ``CoreShowChannels`` after every (re)connect and periodically: sessions whose spier no longer
  runs ChanSpy are closed, ChanSpy channels that match a grant but were missed (their Start came
  while the connection was down) are adopted.

Why a session ended: ``revoked`` when callgate hung it up, ``call_ended`` when the spied-on channel
hung up first, else ``listener_hangup``. Each start and end is recorded in the audit log and in
the ``spy_sessions`` gauge. ChanSpy runs that callgate did not allow (an operator's own dialplan)
are not tracked.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from callgate.ami.protocol import Message
from callgate.audit import AuditEvent, AuditSink, EndReason
from callgate.metrics import Metrics
from callgate.policy.types import Action, Reason

log = logging.getLogger(__name__)

SPY_ACTIONS = frozenset({Action.EAVESDROP, Action.WHISPER})
ENDED_MEMORY = 10_000


@dataclass(frozen=True, slots=True)
class SpyGrant:
    """An allowed ``eavesdrop``/``whisper`` decision, as the FastAGI handler reported it."""

    client_id: str
    action: Action
    ext: str
    target: str
    uniqueid: str
    """``agi_uniqueid``: the channel that will run ChanSpy (ChanSpyStart's ``SpyerUniqueid``)."""
    channel: str
    """``agi_channel``: the same channel's name."""
    policy_version: int
    reason: Reason
    noted_at: float
    """``time.monotonic()`` when noted."""


@dataclass(frozen=True, slots=True)
class Revocation:
    """The policy change that withdrew a session's right (recorded with its end)."""

    policy_version: int
    reason: str
    """The new decision's reason (``eavesdrop_not_permitted``, ...)."""

    def audit_extra(self) -> tuple[tuple[str, str], ...]:
        return (("revoked_by_version", str(self.policy_version)), ("revoked_reason", self.reason))


@dataclass(frozen=True, slots=True)
class SpySession:
    grant: SpyGrant
    spyer_channel: str
    spyee_channel: str | None
    spyee_uniqueid: str | None
    started: datetime
    started_at: float
    """``time.monotonic()`` when the session began (or was adopted)."""
    stopped_at: float | None = None
    revocation: Revocation | None = None
    """Set once a Hangup of the spier was sent because a policy change withdrew the right."""

    @property
    def uniqueid(self) -> str:
        return self.grant.uniqueid

    @property
    def client_id(self) -> str:
        return self.grant.client_id


class SpyGrants:
    """Allowed listen/whisper decisions waiting for their ChanSpy to start.

    Fed by the FastAGI side: the daemon hands this object to the decision recorder
    (``DecisionRecorder(..., grants=...)``), which, after ``decide()`` allowed a request,
    calls::

        grants.note_allowed(client_id, action, ext, target, agi_uniqueid, agi_channel,
                            policy_version, reason)

    ``action`` is ``Action.EAVESDROP`` or ``Action.WHISPER``; ``ext`` the acting extension
    (``agi_arg_2``), ``target`` the target extension (``agi_arg_3``), ``reason`` the decision's
    reason. It never blocks, never does I/O and never raises for ordinary input (other actions
    and group forms are ignored), so it is safe on the FastAGI hot path. Without ``--ami`` the
    daemon still hands one in; grants then simply expire.
    """

    def __init__(self, *, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._grants: OrderedDict[str, SpyGrant] = OrderedDict()

    def note_allowed(
        self,
        client_id: str,
        action: str,
        ext: str,
        target: str | None,
        uniqueid: str,
        channel: str,
        policy_version: int,
        reason: str = "",
    ) -> None:
        if action not in SPY_ACTIONS or not target or not uniqueid:
            return
        now = self._clock()
        self._expire(now)
        try:
            why = Reason(reason)
        except ValueError:
            why = Reason.WHISPER_GROUP if action == Action.WHISPER else Reason.EAVESDROP_GROUP
        grant = SpyGrant(
            client_id, Action(action), ext, target, uniqueid, channel, policy_version, why, now
        )
        self._grants.pop(uniqueid, None)
        self._grants[uniqueid] = grant

    def take(self, uniqueid: str) -> SpyGrant | None:
        """The grant for a spier channel, removed (a grant starts one session), or ``None``."""
        self._expire(self._clock())
        return self._grants.pop(uniqueid, None)

    def __len__(self) -> int:
        return len(self._grants)

    def __contains__(self, uniqueid: object) -> bool:
        return uniqueid in self._grants

    def _expire(self, now: float) -> None:
        grants = self._grants
        while grants:
            oldest = next(iter(grants.values()))
            if now - oldest.noted_at < self._ttl:
                break
            grants.popitem(last=False)


class SessionTracker:
    """Sessions in progress, keyed by the spier's uniqueid; fed with Manager events."""

    def __init__(
        self,
        grants: SpyGrants,
        *,
        audit: AuditSink,
        metrics: Metrics,
        stop_grace: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.grants = grants
        self._audit = audit
        self._metrics = metrics
        self._stop_grace = stop_grace
        self._clock = clock
        self._now = now
        self._sessions: dict[str, SpySession] = {}
        self._by_client: dict[str, set[str]] = {}
        self._by_spyee: dict[str, set[str]] = {}
        self._gone: OrderedDict[str, float] = OrderedDict()
        """Uniqueids whose Hangup we saw lately (to tell ``call_ended`` and to not adopt them)."""
        self._ended: OrderedDict[str, None] = OrderedDict()
        """Spiers whose session ended (the last ``ENDED_MEMORY``): never adopted again, even if
        the channel is still in ChanSpy (a revoked listener on a call without media)."""

    # ---------------------------------------------------------------- queries

    def get(self, uniqueid: str) -> SpySession | None:
        return self._sessions.get(uniqueid)

    def sessions(self) -> list[SpySession]:
        return list(self._sessions.values())

    def sessions_of(self, client_id: str) -> list[SpySession]:
        return [self._sessions[u] for u in self._by_client.get(client_id, ())]

    def __len__(self) -> int:
        return len(self._sessions)

    def ended(self, uniqueid: str) -> bool:
        """A session of this spier was tracked and has ended."""
        return uniqueid in self._ended

    # ---------------------------------------------------------------- events

    def handle_event(self, message: Message) -> SpySession | None:
        """Apply one Manager event; returns the session it started, if it started one."""
        match message.event:
            case "ChanSpyStart":
                return self._on_start(message)
            case "ChanSpyStop":
                self._on_stop(message.get("SpyerUniqueid"))
            case "Hangup":
                self._on_hangup(message.get("Uniqueid"))
            case "HangupRequest" | "SoftHangupRequest":
                # Comes before the Hangup itself: enough to tell a call that is ending.
                if uniqueid := message.get("Uniqueid"):
                    self._gone.setdefault(uniqueid, self._clock())
        return None

    def _on_start(self, message: Message) -> SpySession | None:
        spyer = message.get("SpyerUniqueid")
        spyee_uniqueid = message.get("SpyeeUniqueid") or None
        spyee_channel = message.get("SpyeeChannel") or None
        current = self._sessions.get(spyer)
        if current is not None:
            # The same ChanSpy moved on to another channel (only without the `u` option).
            self._replace(
                dataclasses.replace(
                    current,
                    spyee_channel=spyee_channel,
                    spyee_uniqueid=spyee_uniqueid,
                    stopped_at=None,
                )
            )
            return None
        grant = self.grants.take(spyer)
        if grant is None:
            log.debug("ChanSpy on %s was not allowed by callgate: not tracked", spyer)
            return None
        channel = message.get("SpyerChannel") or grant.channel
        return self._open(grant, channel, spyee_channel, spyee_uniqueid, self._now())

    def _on_stop(self, spyer: str) -> None:
        session = self._sessions.get(spyer)
        if session is None:
            return
        if session.spyee_uniqueid is not None and session.spyee_uniqueid in self._gone:
            self.close(spyer)
        else:
            self._replace(dataclasses.replace(session, stopped_at=self._clock()))

    def _on_hangup(self, uniqueid: str) -> None:
        if not uniqueid:
            return
        self._gone[uniqueid] = self._clock()
        if uniqueid in self._sessions:
            self.close(uniqueid)
        for spyer in list(self._by_spyee.get(uniqueid, ())):
            session = self._sessions[spyer]
            if session.stopped_at is not None:
                self.close(spyer)
            else:
                # ChanSpyStop may never come: the grace period ends it if the spier stays up.
                self._replace(dataclasses.replace(session, stopped_at=self._clock()))

    # ---------------------------------------------------------------- changes

    def mark_revoking(self, uniqueid: str, revocation: Revocation | None) -> None:
        """The spier is being hung up for ``revocation`` (``None``: that attempt failed)."""
        session = self._sessions.get(uniqueid)
        if session is not None:
            self._replace(dataclasses.replace(session, revocation=revocation))

    def close(self, uniqueid: str, reason: EndReason | None = None) -> SpySession | None:
        """End a session; ``reason`` defaults to what the events tell (see the module doc)."""
        session = self._sessions.pop(uniqueid, None)
        if session is None:
            return None
        self._ended[uniqueid] = None
        if len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)
        self._by_client[session.client_id].discard(uniqueid)
        if not self._by_client[session.client_id]:
            del self._by_client[session.client_id]
        if session.spyee_uniqueid is not None:
            spyers = self._by_spyee.get(session.spyee_uniqueid, set())
            spyers.discard(uniqueid)
            if not spyers:
                self._by_spyee.pop(session.spyee_uniqueid, None)
        if reason is None:
            reason = self._end_reason(session)
        grant = session.grant
        self._metrics.spy_sessions.labels(grant.client_id, grant.action).dec()
        log.info(
            "%s session ended: client %s, %s -> %s, channel %s, %s",
            grant.action,
            grant.client_id,
            grant.ext,
            grant.target,
            session.spyer_channel,
            reason,
        )
        extra = session.revocation.audit_extra() if session.revocation is not None else ()
        self._audit.record(
            self._audit_event(session, ended=self._now(), end_reason=reason, extra=extra)
        )
        return session

    def _end_reason(self, session: SpySession) -> EndReason:
        if session.revocation is not None:
            return EndReason.REVOKED
        if session.spyee_uniqueid is not None and session.spyee_uniqueid in self._gone:
            return EndReason.CALL_ENDED
        return EndReason.LISTENER_HANGUP

    def expire(self) -> None:
        """Housekeeping: end stopped sessions whose spier stayed up; forget old hangups."""
        now = self._clock()
        for session in list(self._sessions.values()):
            if session.stopped_at is not None and now - session.stopped_at >= self._stop_grace:
                self.close(session.uniqueid)
        while self._gone and now - next(iter(self._gone.values())) > 60.0:
            self._gone.popitem(last=False)

    def rebuild(self, rows: Iterable[Message], *, asked_at: float) -> list[SpySession]:
        """Reconcile with a ``CoreShowChannels`` list asked for at ``asked_at`` (monotonic).

        Returns the sessions adopted from rows (their ChanSpyStart was missed).
        """
        rows = list(rows)
        by_uniqueid = {row.get("Uniqueid"): row for row in rows}
        by_channel = {row.get("Channel"): row for row in rows}
        spying = {u for u, row in by_uniqueid.items() if row.get("Application") == "ChanSpy"}
        for session in list(self._sessions.values()):
            if session.uniqueid in spying or session.started_at > asked_at:
                continue  # still spying, or started after the snapshot was taken
            if session.spyee_uniqueid is not None and session.spyee_uniqueid not in by_uniqueid:
                self._gone.setdefault(session.spyee_uniqueid, self._clock())
            self.close(session.uniqueid)
        adopted = []
        for uniqueid in spying - self._sessions.keys() - self._gone.keys() - self._ended.keys():
            grant = self.grants.take(uniqueid)
            if grant is None:
                continue
            row = by_uniqueid[uniqueid]
            spyee_channel = row.get("ApplicationData").split(",", 1)[0] or None
            spyee_row = by_channel.get(spyee_channel) if spyee_channel else None
            spyee_uniqueid = spyee_row.get("Uniqueid") if spyee_row is not None else None
            started = self._now() - _duration(row.get("Duration"))
            session = self._open(grant, row.get("Channel"), spyee_channel, spyee_uniqueid, started)
            adopted.append(session)
        return adopted

    # ---------------------------------------------------------------- internals

    def _open(
        self,
        grant: SpyGrant,
        channel: str,
        spyee_channel: str | None,
        spyee_uniqueid: str | None,
        started: datetime,
    ) -> SpySession:
        session = SpySession(
            grant, channel, spyee_channel, spyee_uniqueid, started, started_at=self._clock()
        )
        self._replace(session)
        self._by_client.setdefault(grant.client_id, set()).add(grant.uniqueid)
        self._metrics.spy_sessions.labels(grant.client_id, grant.action).inc()
        log.info(
            "%s session started: client %s, %s -> %s, channel %s, spying on %s",
            grant.action,
            grant.client_id,
            grant.ext,
            grant.target,
            channel,
            spyee_channel,
        )
        self._audit.record(self._audit_event(session, started=started))
        return session

    def _replace(self, session: SpySession) -> None:
        old = self._sessions.get(session.uniqueid)
        if old is not None and old.spyee_uniqueid not in (None, session.spyee_uniqueid):
            self._by_spyee.get(old.spyee_uniqueid or "", set()).discard(session.uniqueid)
        self._sessions[session.uniqueid] = session
        if session.spyee_uniqueid is not None:
            self._by_spyee.setdefault(session.spyee_uniqueid, set()).add(session.uniqueid)

    def _audit_event(
        self,
        session: SpySession,
        *,
        started: datetime | None = None,
        ended: datetime | None = None,
        end_reason: EndReason | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> AuditEvent:
        grant = session.grant
        return AuditEvent(
            time=ended or started or self._now(),
            client_id=grant.client_id,
            action=grant.action,
            ext=grant.ext,
            target=grant.target,
            decision="allow",
            reason=grant.reason,
            policy_version=grant.policy_version,
            uniqueid=grant.uniqueid,
            channel=session.spyer_channel,
            extra=(("spyee_channel", session.spyee_channel or ""), *extra),
            started=started,
            ended=ended,
            end_reason=end_reason,
        )


def _duration(text: str) -> timedelta:
    """CoreShowChannel's ``Duration: HH:MM:SS`` (zero when absent or malformed)."""
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return timedelta()
    hours, minutes, seconds = (int(p) for p in parts)
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)
