"""Ending what a policy no longer allows: the spier of a withdrawn session is hung up.

On every policy change (``PolicyRegistry.subscribe``) each tracked session of that client is
decided again with ``decide(new.compiled, action, ext, target)`` (the session's own action: a
whisper session needs the whisper grant, a listen session either grant, as rule 6 says). Each one
now denied gets an AMI ``Hangup`` of exactly its spier's channel, written before the listener
returns; the answers are awaited in the background so a slow or absent Manager never holds up the
HTTP request that changed the policy. The same check runs when a session starts (the policy may
have changed between the FastAGI decision and ChanSpyStart) and after every reconciliation with
``CoreShowChannels`` (a change made while the Manager connection was down).

One enforcer per PBX, holding that PBX's Manager connection and tracker: a session is only ever
hung up over the connection of the PBX it runs on.

Protection and grants (``ClientPolicy.supervision``) take part in every re-decision, at the
current time (``now``, injectable): a change of the settings or the grants is a registry change
like a policy change, so adding a protected extension ends the sessions on it at once. Grants
also change with the time alone: whenever a client's live session was decided under a
supervision, a timer wakes at ``Supervision.next_change_after(now)`` (the next ``from`` or
``until`` of any of its grants) and re-decides that client's sessions, so a session allowed only
by a grant that ends is hung up right at its ``until`` (the Manager's round trip is the only
delay). The timer is set again after each wake-up while sessions remain, and dropped when none
does.

Why a grant-allowed session ended. Each session knows the grant that allowed it at its last
decision (``SpySession.allowed_by``: the FastAGI decision's ``grant_id``, then each re-decision's;
a session allowed by two grants is held by the one that lasts longest, the one ``decide`` names).
When a re-decision denies it and that grant is no longer in force, the end is audited ``revoked``
with ``revoked_cause`` ``grant_expired`` (its ``until`` passed) or ``grant_ended`` (ended early:
its stored record has ``ended_at``), and ``revoked_grant_id``. The cause is read from the grant
records of the policy in force (``ClientPolicy.grants``, the stored supervision record that every
instance re-reads from the store), not from which change woke the enforcer: another instance
applying the same change comes to the same cause, and so does an end that only happens later (a
Hangup retried after the Manager reconnected, a session adopted by the instance taking over).
A session denied while its grant is still in force (a document change moved the target out of the
grant's group, protection added) has no cause: ``revoked_by_version`` names that change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Final

from callgate.ami.client import ManagerClient, ManagerError
from callgate.ami.protocol import Message
from callgate.ami.tracker import Revocation, SessionTracker, SpySession
from callgate.audit import EndReason
from callgate.metrics import Metrics
from callgate.policy import decide
from callgate.policy.types import Decision
from callgate.registry import ClientPolicy

log = logging.getLogger(__name__)

GRANT_EXPIRED: Final = "grant_expired"
"""``revoked_cause`` of a session ended because the time ended the grant that allowed it."""
GRANT_ENDED: Final = "grant_ended"
"""``revoked_cause`` of a session ended because the grant that allowed it was ended early."""
_TIMER_SLACK: Final = 0.001
"""Seconds past a grant's instant the timer wakes, so the wall clock has certainly passed it
(a timer woken early decides the same as before and is set again, for the same instant)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class Enforcer:
    """Hangs up the withdrawn sessions of one PBX (``tracker.pbx``) over its ``client``."""

    def __init__(
        self,
        client: ManagerClient,
        tracker: SessionTracker,
        policies: Callable[[str], ClientPolicy],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.perf_counter,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        if client.pbx != tracker.pbx:
            raise ValueError(
                f"the Manager of PBX {client.pbx!r} cannot end {tracker.pbx!r}'s calls"
            )
        self._client = client
        self._tracker = tracker
        self._policies = policies
        self._metrics = metrics
        self._clock = clock
        self._now = now
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        """client -> the wake-up at its grants' next change, while it has sessions"""

    async def on_policy_change(self, old: ClientPolicy, new: ClientPolicy) -> None:
        """A policy change (or a change of its settings and grants): re-decide this PBX's
        sessions of that client."""
        self.enforce(self._tracker.sessions_of(new.client_id), new)

    def enforce(
        self,
        sessions: Iterable[SpySession],
        policy: ClientPolicy | None = None,
        *,
        cause: str | None = None,
    ) -> int:
        """Hang up every session of ``sessions`` that ``policy`` (default: the current) denies
        now; ``cause``: why they are decided again, when the time did it (for the audit of a
        session whose allowing grant is not known)."""
        started = self._clock()
        now = self._now()
        ended = 0
        timed: dict[str, ClientPolicy] = {}
        for session in sessions:
            if session.revocation is not None:
                continue
            current = policy or self._policies(session.client_id)
            grant = session.grant
            decision = decide(
                current.compiled,
                grant.action,
                grant.ext,
                grant.target,
                now=now,
                supervision=current.supervision,
            )
            if not decision.allowed:
                ended += self._revoke(
                    session, _revocation(session, current, decision, now, cause), started
                )
                continue
            if decision.grant_id != session.allowed_by:
                self._tracker.note_allowed_by(session.ref, decision.grant_id)
            if current.supervision is not None:
                timed[current.client_id] = current
        for client_id, current in timed.items():
            self._wake_at_next_change(client_id, current, now)
        return ended

    def _wake_at_next_change(self, client_id: str, policy: ClientPolicy, now: datetime) -> None:
        """(Re)set the client's timer to its grants' next change after ``now``, if any."""
        supervision = policy.supervision
        at = supervision.next_change_after(now) if supervision is not None else None
        timer = self._timers.pop(client_id, None)
        if timer is not None:
            timer.cancel()
        if at is None:
            return
        delay = max(0.0, (at - now).total_seconds()) + _TIMER_SLACK
        loop = asyncio.get_running_loop()
        self._timers[client_id] = loop.call_later(delay, self._on_time, client_id)

    def _on_time(self, client_id: str) -> None:
        self._timers.pop(client_id, None)
        sessions = self._tracker.sessions_of(client_id)
        if sessions:
            self.enforce(sessions, cause=GRANT_EXPIRED)

    def _revoke(self, session: SpySession, revocation: Revocation, started: float) -> int:
        channel = session.spyer_channel
        if session.pbx != self._client.pbx:
            # A channel name means nothing on another Asterisk: it could be someone else's call.
            log.error("not hanging up %s: it runs on PBX %r", channel, session.pbx)
            return 0
        if not channel or channel.startswith("/"):
            # `/.../` would be read by Asterisk as a regex over every channel: never send that.
            log.error("not hanging up %r: not a single channel name", channel)
            return 0
        grant = session.grant
        try:
            future = self._client.submit("Hangup", [("Channel", channel)])
        except ManagerError as exc:
            log.warning(
                "cannot end %s session %s -> %s of client %s (%s): %s; retried after reconnect",
                grant.action,
                grant.ext,
                grant.target,
                grant.client_id,
                channel,
                exc,
            )
            return 0
        self._metrics.revocation_seconds.observe(self._clock() - started)
        self._metrics.revocations.labels(grant.client_id, grant.action).inc()
        self._tracker.mark_revoking(session.ref, revocation)
        log.info(
            "policy v%s of client %s withdraws %s %s -> %s (%s%s%s): hanging up %s",
            revocation.policy_version,
            grant.client_id,
            grant.action,
            grant.ext,
            grant.target,
            revocation.reason,
            f", {revocation.cause}" if revocation.cause else "",
            f" {revocation.grant_id}" if revocation.grant_id else "",
            channel,
        )
        task = asyncio.create_task(self._confirm(session, future))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return 1

    async def _confirm(
        self,
        session: SpySession,
        future: asyncio.Future[tuple[Message, ...]],
    ) -> None:
        try:
            (response,) = await self._client.wait(future, "Hangup")
        except ManagerError as exc:
            log.warning("Hangup of %s: %s; retried later", session.spyer_channel, exc)
            self._tracker.mark_revoking(session.ref, None)
            return
        if response.is_success or response.get("Message") == "No such channel":
            # Hung up now, or gone already: either way it has ended under a withdrawn right.
            self._tracker.close(session.ref, EndReason.REVOKED)
        else:
            log.error("Hangup of %s refused: %s", session.spyer_channel, response.get("Message"))
            self._tracker.mark_revoking(session.ref, None)

    async def end_by_operator(self, session: SpySession, by: str) -> bool:
        """Hang up ``session``'s spier because operator ``by`` asked; True once it has ended.

        Raises ``ManagerError`` when the Manager is not connected or does not answer.
        """
        channel = session.spyer_channel
        if session.pbx != self._client.pbx or not channel or channel.startswith("/"):
            log.error("not hanging up %r on PBX %r: not one of its channels", channel, session.pbx)
            return False
        self._tracker.mark_operator_end(session.ref, by)
        try:
            (response,) = await self._client.send_action("Hangup", [("Channel", channel)])
        except ManagerError:
            self._tracker.mark_operator_end(session.ref, None)
            raise
        if response.is_success or response.get("Message") == "No such channel":
            self._tracker.close(session.ref, EndReason.OPERATOR)
            log.info("operator %s ended %s session %s", by, session.grant.action, channel)
            return True
        self._tracker.mark_operator_end(session.ref, None)
        raise ManagerError(f"Hangup of {channel} refused: {response.get('Message')}")

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _revocation(
    session: SpySession,
    policy: ClientPolicy,
    decision: Decision,
    now: datetime,
    cause: str | None,
) -> Revocation:
    """What withdrew ``session``'s right, as ``decision`` (by ``policy`` at ``now``) denies it:
    the end of the grant that allowed it, when that grant is no longer in force (see the module
    doc); else ``cause``, the time's, only for a session whose grant is not known."""
    grant_id = session.allowed_by
    record = None
    if grant_id is not None:
        record = next((r for r in policy.grants if r.id == grant_id), None)
    if record is not None:
        if record.ended_at is not None and record.ended_at < record.grant.until:
            return Revocation(policy.version, str(decision.reason), GRANT_ENDED, grant_id)
        if record.grant.until <= now:
            return Revocation(policy.version, str(decision.reason), GRANT_EXPIRED, grant_id)
        return Revocation(policy.version, str(decision.reason))
    return Revocation(policy.version, str(decision.reason), cause)
