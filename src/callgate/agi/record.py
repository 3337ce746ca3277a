"""The one record of every decision callgate makes over FastAGI: a log line, an audit event and a
count in ``callgate_decisions_total``, all three made by ``DecisionRecorder.record``.

The policy routes (``handlers``) and the phone-replace flow (``replace.service``) both record
through it, so a decision has one line format, one escaper (``logs.printable``) and one place
that counts it. The line::

    decision client=<id> action=<action> ext=<ext> target=<target|-> decision=<allow|deny>
    reason=<code> targets=<a&b|-> version=<n> uniqueid=<id|->[ <fact>=<value> ...]

The facts after ``uniqueid`` are the audit event's extra ones (a replace: ``phone``, and for a
PIN that was asked for, ``entered``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Final, NamedTuple, Protocol

from callgate.agi.pbx import pbx_of
from callgate.agi.protocol import AgiEnvironment
from callgate.audit import AuditEvent, AuditSink
from callgate.logs import DecisionLog, printable
from callgate.metrics import LoopCount, Metrics
from callgate.pbx import DEFAULT_PBX, PbxName
from callgate.policy import Action, Decision, is_valid_client_id

# The logger README.md names for the decision lines (operators filter on it): the policy routes'
# module, whichever part of callgate decided.
log = logging.getLogger("callgate.agi.handlers")

DECISION_LOG_HOLD: Final = 0.01
"""Seconds a decision line may wait for others to share its write: at 1,000 sessions/s a write
per line (and the event-loop iteration that made it) was a measurable share of each session's
CPU (``bench/agi_bench.py``; figures in ``docs/performance.md``); the date in each line is still
the decision's."""

_SPY_ACTIONS: Final = frozenset({Action.EAVESDROP.value, Action.WHISPER.value})
_KNOWN_ACTIONS: Final = frozenset(action.value for action in Action)


class AgiRequest(NamedTuple):
    """What the dialplan asked: ``AGI(agi://host/<action>,<client>,<ext>[,<target>[,<pbx>]])``."""

    action: str
    client_id: str
    ext: str
    target: str | None
    """``None`` for the group forms (``agi_arg_3`` empty or absent)."""
    uniqueid: str | None
    channel: str | None
    pbx: PbxName = DEFAULT_PBX
    """The Asterisk server that asks (``agi_arg_4``, ``callgate.agi.pbx``)."""

    @classmethod
    def from_environment(cls, env: AgiEnvironment) -> AgiRequest:
        return cls(  # positional: this runs for every session
            env.action,
            env.arg(1),
            env.arg(2),
            env.arg(3) or None,
            env.uniqueid or None,
            env.channel or None,
            pbx_of(env),
        )


def joined_targets(targets: tuple[str, ...]) -> str:
    """``CALLGATE_TARGETS``: the targets joined by ``&``."""
    return "&".join(targets)


def decision_fields(decision: Decision, version: int) -> str:
    """The decision's part of its log line (the same for every request answered alike)."""
    line = (
        f" decision={decision.verdict} reason={decision.reason.value}"
        f" targets={joined_targets(decision.targets) or '-'} version={version:d}"
    )
    return f"{line} grant={joined_targets(decision.grant_ids)}" if decision.grant_ids else line


class GrantSink(Protocol):
    """Where allowed decisions go for live enforcement (``ami.tracker.SpyGrants``); it ignores
    what opens no listen/whisper session, never blocks and never raises."""

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
    ) -> None: ...


class DecisionRecorder:
    """One log line, one audit event and one count per decision (and, for an allowed one, a
    note to live enforcement's ``grants``, which match it with the ChanSpy it opens).

    Nothing here grows with what callers send: the metric's ``client`` label is bounded by
    ``Metrics.decisions`` (``OTHER_CLIENT`` for a client without a stored policy), and every
    caller-supplied value in the line is ``printable`` (escaped, at most ``FIELD_LIMIT``
    characters); the audit store bounds the event's values the same way."""

    def __init__(
        self,
        audit: AuditSink,
        metrics: Metrics,
        decision_log: DecisionLog | None = None,
        *,
        grants: GrantSink | None = None,
    ) -> None:
        self._audit = audit
        self._grants = grants
        self._decisions = metrics.decisions
        # The labelled series of the stored clients, looked up once: a client never loses its
        # stored policy (a deletion stores the default document), so an entry never goes stale.
        self._children: dict[tuple[str, str, str], LoopCount] = {}
        self.log = (
            DecisionLog(log, hold=DECISION_LOG_HOLD) if decision_log is None else decision_log
        )
        """The decision lines (``callgate.agi.handlers`` at INFO), written together at most
        ``DECISION_LOG_HOLD`` after the first of them; ``daemon.py`` flushes it on stop."""

    @property
    def audit(self) -> AuditSink:
        """Where the audit events go (the replace flow's other events too: replacements' ends)."""
        return self._audit

    def record(
        self,
        request: AgiRequest,
        decision: Decision,
        version: int,
        fields: str | None = None,
        attributed: bool | None = None,
        extra: tuple[tuple[str, str], ...] = (),
        when: datetime | None = None,
    ) -> None:
        """Record one decision made under policy ``version``.

        ``fields``: ``decision_fields(decision, version)``, when the caller has it already (a
        remembered answer). ``attributed``: whether the decision belongs to the request's client
        (its line shows the id as is, it counts under it, it has an audit event): by default
        when the id is well-formed; the replace flow says no for a request it refused as
        malformed. ``extra``: facts for the audit event and the end of the line; ``when``: the
        event's time (default now)."""
        if attributed is None:
            attributed = is_valid_client_id(request.client_id)
        action = request.action if request.action in _KNOWN_ACTIONS else "invalid"
        if self.log.enabled():
            client = request.client_id if attributed else printable(request.client_id)
            facts = (
                "".join([f" {name}={printable(value)}" for name, value in extra]) if extra else ""
            )
            self.log.info(
                f"decision client={client}"
                f" action={action if action != 'invalid' else printable(request.action)}"
                f" ext={printable(request.ext)} target={printable(request.target)}"
                f"{fields or decision_fields(decision, version)}"
                f" uniqueid={printable(request.uniqueid)}{facts}"
            )
        key = (request.client_id if attributed else "-", action, decision.verdict)
        child = self._children.get(key)
        if child is None:
            child = self._decisions.labels(*key)
            if self._decisions.labelled(key[0]):
                self._children[key] = child
        child.inc()
        grants = self._grants
        if (
            grants is not None
            and action in _SPY_ACTIONS  # only a listen or a whisper opens a session to track
            and decision.allowed
            and request.uniqueid
            and request.channel
        ):
            grants.note_allowed(
                request.client_id,
                action,
                request.ext,
                request.target,
                request.uniqueid,
                request.channel,
                version,
                decision.reason.value,
                pbx=request.pbx,
                grant_id=decision.grant_id,  # which grant's end would end the session
            )
        if attributed:  # an audit log is per client: there is none for a malformed id
            self._audit.record(
                AuditEvent(
                    time=when or datetime.now(UTC),
                    client_id=request.client_id,
                    action=action,
                    ext=request.ext,
                    target=request.target,
                    decision=decision.verdict,
                    reason=decision.reason.value,
                    policy_version=version,
                    uniqueid=request.uniqueid,
                    channel=request.channel,
                    extra=(*extra, ("grant_id", joined_targets(decision.grant_ids)))
                    if decision.grant_ids
                    else extra,
                )
            )
