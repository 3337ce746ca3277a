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
hung up first, else ``listener_hangup``. A session allowed by a grant (reason ``temporary_grant``)
knows which one (``SpySession.allowed_by``, from the decision and from every re-decision since):
its start and end are audited with that ``grant_id``, and a revocation because that grant ended
names it (``revoked_grant_id``). Each start and end is recorded in the audit log and in
the ``spy_sessions`` gauge. ChanSpy runs that callgate did not allow (an operator's own dialplan)
are not tracked.

Every key here is a ``ChannelRef`` (PBX and uniqueid): a tracker follows one PBX's Manager
connection, but the grants it takes from are shared by every PBX, and a uniqueid is unique on
one Asterisk server only.
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
from callgate.pbx import ChannelRef, PbxName
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
    spyer: ChannelRef
    """``agi_uniqueid`` on the PBX the FastAGI session came from: the channel that will run
    ChanSpy (ChanSpyStart's ``SpyerUniqueid`` on that PBX's Manager)."""
    channel: str
    """``agi_channel``: the same channel's name."""
    policy_version: int
    reason: Reason
    noted_at: float
    """``time.monotonic()`` when noted."""
    grant_id: str | None = None
    """The grant that allowed it (reason ``temporary_grant``; ``Decision.grant_id``): None when
    the document did, and for a grant read back from a channel (the answer carries no grant id)."""

    @property
    def uniqueid(self) -> str:
        return self.spyer.uniqueid


@dataclass(frozen=True, slots=True)
class Revocation:
    """The policy change that withdrew a session's right (recorded with its end)."""

    policy_version: int
    reason: str
    """The new decision's reason (``eavesdrop_not_permitted``, ``protected``, ...)."""
    cause: str | None = None
    """Set when the grant that allowed the session ended: ``grant_expired`` (its ``until``
    passed) or ``grant_ended`` (ended early, ``DELETE``); None when a change of the document or
    the settings withdrew the right."""
    grant_id: str | None = None
    """With ``cause``: that grant's id."""

    def audit_extra(self) -> tuple[tuple[str, str], ...]:
        extra: tuple[tuple[str, str], ...] = (
            ("revoked_by_version", str(self.policy_version)),
            ("revoked_reason", self.reason),
        )
        if self.cause:
            extra = (*extra, ("revoked_cause", self.cause))
        return (*extra, ("revoked_grant_id", self.grant_id)) if self.grant_id else extra


@dataclass(frozen=True, slots=True)
class SpySession:
    grant: SpyGrant
    spyer_channel: str
    spyee_channel: str | None
    spyee: ChannelRef | None
    started: datetime
    started_at: float
    """``time.monotonic()`` when the session began (or was adopted)."""
    stopped_at: float | None = None
    revocation: Revocation | None = None
    """Set once a Hangup of the spier was sent because a policy change withdrew the right."""
    ended_by: str | None = None
    """Set once a Hangup of the spier was sent because this operator asked for it."""
    allowed_by: str | None = None
    """The grant that allows the session as of its last decision (the allowing one, then each
    re-decision: another grant may take over from one that ends); None while the document does."""

    @property
    def ref(self) -> ChannelRef:
        """The spier: the key of the session."""
        return self.grant.spyer

    @property
    def pbx(self) -> PbxName:
        return self.grant.spyer.pbx

    @property
    def uniqueid(self) -> str:
        return self.grant.spyer.uniqueid

    @property
    def spyee_uniqueid(self) -> str | None:
        return self.spyee.uniqueid if self.spyee is not None else None

    @property
    def client_id(self) -> str:
        return self.grant.client_id


class SpyGrants:
    """Allowed listen/whisper decisions waiting for their ChanSpy to start.

    Fed by the FastAGI side: the daemon hands this object to the decision recorder
    (``DecisionRecorder(..., grants=...)``), which, after ``decide()`` allowed a request,
    calls::

        grants.note_allowed(client_id, action, ext, target, agi_uniqueid, agi_channel,
                            policy_version, reason, pbx=pbx, grant_id=decision.grant_id)

    ``pbx`` is the PBX the FastAGI session came from (``DEFAULT_PBX`` today): the grant is
    matched with a ChanSpyStart on that PBX's Manager only. ``action`` is ``Action.EAVESDROP`` or
    ``Action.WHISPER``; ``ext`` the acting extension (``agi_arg_2``), ``target`` the target
    extension (``agi_arg_3``), ``reason`` the decision's reason, ``grant_id`` the grant that
    allowed it (reason ``temporary_grant``).
    It never blocks, never does I/O and never raises for ordinary input (other actions and
    group forms are ignored), so it is safe on the FastAGI hot path. Without ``--ami`` the
    daemon still hands one in; grants then simply expire.
    """

    def __init__(self, *, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._grants: OrderedDict[ChannelRef, SpyGrant] = OrderedDict()

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
        *,
        pbx: PbxName,
        grant_id: str | None = None,
    ) -> None:
        if action not in SPY_ACTIONS or not target or not uniqueid:
            return
        now = self._clock()
        self._expire(now)
        try:
            why = Reason(reason)
        except ValueError:
            why = Reason.WHISPER_GROUP if action == Action.WHISPER else Reason.EAVESDROP_GROUP
        spyer = ChannelRef(pbx, uniqueid)
        grant = SpyGrant(
            client_id,
            Action(action),
            ext,
            target,
            spyer,
            channel,
            policy_version,
            why,
            now,
            grant_id or None,
        )
        self._grants.pop(spyer, None)
        self._grants[spyer] = grant

    def take(self, spyer: ChannelRef) -> SpyGrant | None:
        """The grant for a spier channel, removed (a grant starts one session), or ``None``."""
        self._expire(self._clock())
        return self._grants.pop(spyer, None)

    def __len__(self) -> int:
        return len(self._grants)

    def __contains__(self, spyer: object) -> bool:
        return spyer in self._grants

    def _expire(self, now: float) -> None:
        grants = self._grants
        while grants:
            oldest = next(iter(grants.values()))
            if now - oldest.noted_at < self._ttl:
                break
            grants.popitem(last=False)


class SessionTracker:
    """Sessions in progress on one PBX, keyed by the spier's ``ChannelRef``; fed with that PBX's
    Manager events (which name bare uniqueids: the tracker adds its PBX)."""

    def __init__(
        self,
        pbx: PbxName,
        grants: SpyGrants,
        *,
        audit: AuditSink,
        metrics: Metrics,
        stop_grace: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.pbx = pbx
        self.grants = grants
        self._audit = audit
        self._metrics = metrics
        self._stop_grace = stop_grace
        self._clock = clock
        self._now = now
        self._sessions: dict[ChannelRef, SpySession] = {}
        self._by_client: dict[str, set[ChannelRef]] = {}
        self._by_spyee: dict[ChannelRef, set[ChannelRef]] = {}
        self._gone: OrderedDict[ChannelRef, float] = OrderedDict()
        """Channels whose Hangup we saw lately (to tell ``call_ended`` and to not adopt them)."""
        self._ended: OrderedDict[ChannelRef, None] = OrderedDict()
        """Spiers whose session ended (the last ``ENDED_MEMORY``): never adopted again, even if
        the channel is still in ChanSpy (a revoked listener on a call without media)."""

    def ref(self, uniqueid: str) -> ChannelRef:
        """A uniqueid this PBX's Manager named, as a key."""
        return ChannelRef(self.pbx, uniqueid)

    # ---------------------------------------------------------------- queries

    def get(self, spyer: ChannelRef) -> SpySession | None:
        return self._sessions.get(spyer)

    def sessions(self) -> list[SpySession]:
        return list(self._sessions.values())

    def sessions_of(self, client_id: str) -> list[SpySession]:
        return [self._sessions[s] for s in self._by_client.get(client_id, ())]

    def __len__(self) -> int:
        return len(self._sessions)

    def ended(self, spyer: ChannelRef) -> bool:
        """A session of this spier was tracked and has ended."""
        return spyer in self._ended

    def gone(self, channel: ChannelRef) -> bool:
        """The channel's hangup (or hangup request) was seen lately."""
        return channel in self._gone

    # ---------------------------------------------------------------- events

    def handle_event(self, message: Message) -> SpySession | None:
        """Apply one Manager event; returns the session it started, if it started one."""
        match message.event:
            case "ChanSpyStart":
                return self._on_start(message)
            case "ChanSpyStop":
                self._on_stop(self.ref(message.get("SpyerUniqueid")))
            case "Hangup":
                if uniqueid := message.get("Uniqueid"):
                    self._on_hangup(self.ref(uniqueid))
            case "HangupRequest" | "SoftHangupRequest":
                # Comes before the Hangup itself: enough to tell a call that is ending.
                if uniqueid := message.get("Uniqueid"):
                    self._gone.setdefault(self.ref(uniqueid), self._clock())
        return None

    def _on_start(self, message: Message) -> SpySession | None:
        spyer = self.ref(message.get("SpyerUniqueid"))
        spyee_uniqueid = message.get("SpyeeUniqueid")
        spyee = self.ref(spyee_uniqueid) if spyee_uniqueid else None
        spyee_channel = message.get("SpyeeChannel") or None
        current = self._sessions.get(spyer)
        if current is not None:
            # The same ChanSpy moved on to another channel (only without the `u` option).
            self._replace(
                dataclasses.replace(
                    current, spyee_channel=spyee_channel, spyee=spyee, stopped_at=None
                )
            )
            return None
        grant = self.grants.take(spyer)
        if grant is None:
            log.debug("ChanSpy on %s was not allowed by callgate: not tracked", spyer)
            return None
        channel = message.get("SpyerChannel") or grant.channel
        return self._open(grant, channel, spyee_channel, spyee, self._now())

    def _on_stop(self, spyer: ChannelRef) -> None:
        session = self._sessions.get(spyer)
        if session is None:
            return
        if session.spyee is not None and session.spyee in self._gone:
            self.close(spyer)
        else:
            self._replace(dataclasses.replace(session, stopped_at=self._clock()))

    def _on_hangup(self, channel: ChannelRef) -> None:
        self._gone[channel] = self._clock()
        if channel in self._sessions:
            self.close(channel)
        for spyer in list(self._by_spyee.get(channel, ())):
            session = self._sessions[spyer]
            if session.stopped_at is not None:
                self.close(spyer)
            else:
                # ChanSpyStop may never come: the grace period ends it if the spier stays up.
                self._replace(dataclasses.replace(session, stopped_at=self._clock()))

    # ---------------------------------------------------------------- changes

    def mark_revoking(self, spyer: ChannelRef, revocation: Revocation | None) -> None:
        """The spier is being hung up for ``revocation`` (``None``: that attempt failed)."""
        session = self._sessions.get(spyer)
        if session is not None:
            self._replace(dataclasses.replace(session, revocation=revocation))

    def note_allowed_by(self, spyer: ChannelRef, grant_id: str | None) -> None:
        """A re-decision still allows the session, by grant ``grant_id`` (None: the document)."""
        session = self._sessions.get(spyer)
        if session is not None and session.allowed_by != grant_id:
            self._replace(dataclasses.replace(session, allowed_by=grant_id))

    def mark_operator_end(self, spyer: ChannelRef, by: str | None) -> None:
        """The spier is being hung up because operator ``by`` asked (``None``: that failed)."""
        session = self._sessions.get(spyer)
        if session is not None:
            self._replace(dataclasses.replace(session, ended_by=by))

    def close(self, spyer: ChannelRef, reason: EndReason | None = None) -> SpySession | None:
        """End a session; ``reason`` defaults to what the events tell (see the module doc)."""
        session = self._sessions.pop(spyer, None)
        if session is None:
            return None
        self._ended[spyer] = None
        if len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)
        self._by_client[session.client_id].discard(spyer)
        if not self._by_client[session.client_id]:
            del self._by_client[session.client_id]
        if session.spyee is not None:
            spyers = self._by_spyee.get(session.spyee, set())
            spyers.discard(spyer)
            if not spyers:
                self._by_spyee.pop(session.spyee, None)
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
        if session.ended_by is not None:
            extra = (*extra, ("ended_by", session.ended_by))
        self._audit.record(
            self._audit_event(session, ended=self._now(), end_reason=reason, extra=extra)
        )
        return session

    def _end_reason(self, session: SpySession) -> EndReason:
        if session.ended_by is not None:
            return EndReason.OPERATOR
        if session.revocation is not None:
            return EndReason.REVOKED
        if session.spyee is not None and session.spyee in self._gone:
            return EndReason.CALL_ENDED
        return EndReason.LISTENER_HANGUP

    def release(self) -> int:
        """Forget every session without ending it (this instance stops enforcing on the PBX:
        the instance that takes over adopts them from ``CoreShowChannels``). Returns how many."""
        released = list(self._sessions.values())
        for session in released:
            grant = session.grant
            self._metrics.spy_sessions.labels(grant.client_id, grant.action).dec()
        self._sessions.clear()
        self._by_client.clear()
        self._by_spyee.clear()
        return len(released)

    def expire(self) -> None:
        """Housekeeping: end stopped sessions whose spier stayed up; forget old hangups."""
        now = self._clock()
        for session in list(self._sessions.values()):
            if session.stopped_at is not None and now - session.stopped_at >= self._stop_grace:
                self.close(session.ref)
        while self._gone and now - next(iter(self._gone.values())) > 60.0:
            self._gone.popitem(last=False)

    def rebuild(self, rows: Iterable[Message], *, asked_at: float) -> list[SpySession]:
        """Reconcile with this PBX's ``CoreShowChannels`` list asked for at ``asked_at``
        (monotonic). Returns the sessions adopted from rows (their ChanSpyStart was missed).
        """
        rows = list(rows)
        by_channel_ref = {self.ref(row.get("Uniqueid")): row for row in rows}
        by_channel = {row.get("Channel"): row for row in rows}
        spying = {c for c, row in by_channel_ref.items() if row.get("Application") == "ChanSpy"}
        for session in list(self._sessions.values()):
            if session.ref in spying or session.started_at > asked_at:
                continue  # still spying, or started after the snapshot was taken
            if session.spyee is not None and session.spyee not in by_channel_ref:
                self._gone.setdefault(session.spyee, self._clock())
            self.close(session.ref)
        adopted = []
        for spyer in spying - self._sessions.keys() - self._gone.keys() - self._ended.keys():
            grant = self.grants.take(spyer)
            if grant is None:
                continue
            row = by_channel_ref[spyer]
            spyee_channel = row.get("ApplicationData").split(",", 1)[0] or None
            spyee_row = by_channel.get(spyee_channel) if spyee_channel else None
            spyee = self.ref(spyee_row.get("Uniqueid")) if spyee_row is not None else None
            started = self._now() - _duration(row.get("Duration"))
            session = self._open(grant, row.get("Channel"), spyee_channel, spyee, started)
            adopted.append(session)
        return adopted

    # ---------------------------------------------------------------- internals

    def _open(
        self,
        grant: SpyGrant,
        channel: str,
        spyee_channel: str | None,
        spyee: ChannelRef | None,
        started: datetime,
    ) -> SpySession:
        session = SpySession(
            grant,
            channel,
            spyee_channel,
            spyee,
            started,
            started_at=self._clock(),
            allowed_by=grant.grant_id,
        )
        self._replace(session)
        self._by_client.setdefault(grant.client_id, set()).add(grant.spyer)
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
        old = self._sessions.get(session.ref)
        if old is not None and old.spyee is not None and old.spyee != session.spyee:
            self._by_spyee.get(old.spyee, set()).discard(session.ref)
        self._sessions[session.ref] = session
        if session.spyee is not None:
            self._by_spyee.setdefault(session.spyee, set()).add(session.ref)

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
        if grant.grant_id is not None:  # as on the decision's row, for a row of its own
            extra = (("grant_id", grant.grant_id), *extra)
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
