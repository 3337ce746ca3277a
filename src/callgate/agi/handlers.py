"""FastAGI handlers: read the request from the environment, decide once, answer with variables.

The dispatcher routes by the URL path (``agi://host/pickup`` -> ``pickup``) through a table built
in ``daemon.py``: ``pickup``, ``eavesdrop`` and ``whisper`` go to ``PolicyRoute`` (a pure decision
on the compiled policy the registry holds — no store, no other network call while the phone
waits); ``replace`` and ``restore`` to the phone-replace flow. A route owns its session: it reads,
decides and sets the ``CALLGATE_*`` variables (``answer()``). An action without a route is denied
``invalid_request``; a route that raises is denied ``internal_error``: never an open door.

Variables are set with one ``EXEC MSet`` (one round trip instead of five ``SET VARIABLE``s), and
all of them every time, a denial included, so a previous AGI's values never survive.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Final, NamedTuple, Protocol

from callgate.agi import variables
from callgate.agi.pbx import pbx_of
from callgate.agi.protocol import AgiEnvironment, AgiProtocolError
from callgate.agi.session import AgiSession, AgiSessionError, mset_command
from callgate.audit import AuditEvent, AuditSink
from callgate.logs import DecisionLog, printable
from callgate.metrics import LoopCount, Metrics
from callgate.pbx import DEFAULT_PBX, PbxName
from callgate.policy import (
    ALL_TARGETS,
    Action,
    CompiledPolicy,
    Decision,
    Reason,
    decide,
    is_valid_client_id,
)
from callgate.registry import ClientPolicy, PolicyRegistry

log = logging.getLogger(__name__)

AgiRoute = Callable[[AgiSession], Awaitable[object]]
"""Handles one session completely (variables included); its return value is ignored."""

POLICY_ACTIONS: Final = (Action.PICKUP, Action.EAVESDROP, Action.WHISPER)

_INVALID: Final = Decision.deny(Reason.INVALID_REQUEST)
_INTERNAL_ERROR: Final = Decision.deny(Reason.INTERNAL_ERROR)
_INVALID_REASON: Final = Reason.INVALID_REQUEST


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


def pickup_argument(client_id: str, decision: Decision, target: str | None) -> str:
    """``CALLGATE_PICKUP``: ``Pickup()``'s argument naming exactly the allowed ringing legs."""
    if not decision.allowed:
        return ""
    if target:
        return f"{client_id}/{target}@{variables.PICKUPMARK}"
    if decision.targets == (ALL_TARGETS,):
        return ""  # plain Pickup() within the client's own named pickup group
    return _group_pickup_argument(client_id, decision.targets)


# The same group answers again and again (a policy's memo tables hand out the same tuples):
# joining tens of targets per session is worth remembering. Bounded: old entries fall out.
@lru_cache(maxsize=4096)
def _group_pickup_argument(client_id: str, targets: tuple[str, ...]) -> str:
    return "&".join(f"{client_id}/{ext}@{variables.PICKUPMARK}" for ext in targets)


@lru_cache(maxsize=4096)
def _joined(targets: tuple[str, ...]) -> str:
    """``CALLGATE_TARGETS``: the targets joined by ``&``."""
    return "&".join(targets)


def answer_pairs(decision: Decision, version: int, pickup: str = "") -> tuple[tuple[str, str], ...]:
    """Every ``CALLGATE_*`` variable and its value; the decision is the last pair."""
    return (
        (variables.REASON, decision.reason.value),
        (variables.TARGETS, _joined(decision.targets)),
        (variables.VERSION, str(version)),
        (variables.PICKUP, pickup),
        (variables.DECISION, variables.ALLOW if decision.allowed else variables.DENY),
    )


async def answer(session: AgiSession, decision: Decision, version: int, pickup: str = "") -> None:
    """Set every ``CALLGATE_*`` variable in one command (``answer_pairs``)."""
    await session.set_variables(answer_pairs(decision, version, pickup))


class Answered:
    """A ``QuickAnswer``: the decision's one ``EXEC MSet``, recorded when the session ends."""

    __slots__ = ("_decision", "_outcome", "_recorder", "_request", "_valid", "_version", "line")

    def __init__(
        self,
        line: bytes,
        recorder: DecisionRecorder,
        request: AgiRequest,
        decision: Decision,
        version: int,
        outcome: str | None = None,
        valid_client: bool | None = None,
    ) -> None:
        self.line = line
        self._recorder = recorder
        self._request = request
        self._decision = decision
        self._version = version
        self._outcome = outcome
        self._valid = valid_client

    def finish(self) -> None:
        """Recorded once, as answered (or as decided, if the caller went away first)."""
        self._recorder.record(
            self._request, self._decision, self._version, self._outcome, self._valid
        )

    @classmethod
    def of(
        cls,
        recorder: DecisionRecorder,
        request: AgiRequest,
        decision: Decision,
        version: int,
        pickup: str = "",
    ) -> Answered | None:
        """The quick answer, or ``None`` when it takes more than one ``EXEC MSet`` (a value
        needing ``SET VARIABLE``, or too long for one command): the task path handles those."""
        try:
            line = mset_command(answer_pairs(decision, version, pickup))
        except AgiProtocolError:
            return None
        return None if line is None else cls(line, recorder, request, decision, version)


DECISION_LOG_HOLD: Final = 0.01
"""Seconds a decision line may wait for others to share its write. At 1,000 sessions/s a write
per line (and the event-loop iteration that made it) cost 13 µs of each session's CPU
(``bench/agi_bench.py``); the date in each line is still the decision's."""


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
    ) -> None: ...


class DecisionRecorder:
    """One log line, one audit event and one metric per decision.

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
        """Told of every allowed decision (live enforcement's ``SpyGrants``: a listen/whisper
        allowed here is matched with its ChanSpyStart, and ended if a change withdraws it)."""
        self._decisions = metrics.decisions
        # The labelled series of the stored clients, looked up once: a client never loses its
        # stored policy (a deletion stores the default document), so an entry never goes stale.
        self._children: dict[tuple[str, str, str], LoopCount] = {}
        self.log = (
            DecisionLog(log, hold=DECISION_LOG_HOLD) if decision_log is None else decision_log
        )
        """The decision lines (``callgate.agi.handlers`` at INFO), written together at most
        ``DECISION_LOG_HOLD`` after the first of them; ``daemon.py`` flushes it on stop."""

    def record(
        self,
        request: AgiRequest,
        decision: Decision,
        version: int,
        outcome: str | None = None,
        valid_client: bool | None = None,
    ) -> None:
        """``outcome``: ``log_outcome(decision, version)`` and ``valid_client``: whether the client
        id is well-formed, when the caller knows them already (the quick path does)."""
        if valid_client is None:
            valid_client = is_valid_client_id(request.client_id)
        action = request.action if request.action in _KNOWN_ACTIONS else "invalid"
        if self.log.enabled():
            client = request.client_id if valid_client else printable(request.client_id)
            self.log.info(
                f"decision client={client}"
                f" action={action if action != 'invalid' else printable(request.action)}"
                f" ext={printable(request.ext)} target={printable(request.target)}"
                f"{outcome or log_outcome(decision, version)}"
                f" uniqueid={printable(request.uniqueid)}"
            )
        key = (request.client_id if valid_client else "-", action, decision.verdict)
        child = self._children.get(key)
        if child is None:
            child = self._decisions.labels(*key)
            if self._decisions.labelled(key[0]):
                self._children[key] = child
        child.inc()
        grants = self._grants
        if grants is not None and decision.allowed and request.uniqueid and request.channel:
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
            )
        if valid_client:  # an audit log is per client: there is none for a malformed id
            self._audit.record(
                AuditEvent(
                    time=datetime.now(UTC),
                    client_id=request.client_id,
                    action=action,
                    ext=request.ext,
                    target=request.target,
                    decision=decision.verdict,
                    reason=decision.reason.value,
                    policy_version=version,
                    uniqueid=request.uniqueid,
                    channel=request.channel,
                )
            )


_KNOWN_ACTIONS: Final = frozenset(action.value for action in Action)


def log_outcome(decision: Decision, version: int) -> str:
    """The decision's part of its log line (the same for every request answered alike)."""
    return (
        f" decision={decision.verdict} reason={decision.reason.value}"
        f" targets={_joined(decision.targets) or '-'} version={version:d}"
    )


class _Answer(NamedTuple):
    """What a policy route answers one request."""

    decision: Decision
    version: int
    line: bytes
    """The encoded ``EXEC MSet``."""
    outcome: str
    """``log_outcome(decision, version)``."""


@dataclass(slots=True)
class _Answers:
    """One client's remembered answers, all given by one compiled policy."""

    compiled: CompiledPolicy
    version: int
    by_request: dict[tuple[str, str, str | None], _Answer]
    """(action, ext, target) -> the answer."""


REMEMBERED_ANSWERS: Final = 8192
"""Answers a policy route remembers, all clients together (``agi_answer_cache_size``)."""


class PolicyRoute:
    """``pickup``, ``eavesdrop``, ``whisper``: decided by the compiled policy alone."""

    def __init__(
        self,
        registry: PolicyRegistry,
        recorder: DecisionRecorder,
        remembered: int = REMEMBERED_ANSWERS,
    ) -> None:
        self._registry = registry
        self._recorder = recorder
        # client -> its answers under the policy that gave them. A phone asks the same few
        # questions again and again: the decision, the Pickup() argument and the encoded command
        # are then a lookup. A client's answers count only while the registry still holds that
        # very compiled policy and version: a policy change drops them, old policy and all.
        # Only well-formed requests of clients with a stored policy are remembered, and at most
        # ``remembered`` answers in all: made-up clients, extensions or targets cannot grow it.
        self._answers: dict[str, _Answers] = {}
        self._remembered = 0
        self._budget = remembered

    def _decide(
        self, request: AgiRequest, environment: AgiEnvironment, policy: ClientPolicy | None
    ) -> tuple[Decision, int, str]:
        """The decision, the deciding policy's version and the pickup argument."""
        version = 0
        try:
            if policy is None or environment.duplicate_keys:
                decision = _INVALID
            else:
                version = policy.version
                decision = decide(policy.compiled, request.action, request.ext, request.target)
            pickup = ""
            if request.action == Action.PICKUP:
                pickup = pickup_argument(request.client_id, decision, request.target)
        except Exception:
            log.exception("decision failed for %s", printable(request.uniqueid))
            decision, pickup = _INTERNAL_ERROR, ""
        return decision, version, pickup

    def _policy(self, request: AgiRequest) -> ClientPolicy | None:
        """The client's policy in force, ``None`` for a malformed client id."""
        if not is_valid_client_id(request.client_id):
            return None
        return self._registry.get(request.client_id)

    def prepare(self, environment: AgiEnvironment) -> Answered | None:
        """The whole session as one command (the server's quick path), or ``None``."""
        request = AgiRequest.from_environment(environment)
        policy = self._policy(request)
        if (
            policy is None
            or environment.duplicate_keys
            or policy.version == 0  # no stored policy: nothing worth remembering for it
            or not self._budget
        ):
            decision, version, pickup = self._decide(request, environment, policy)
            return Answered.of(self._recorder, request, decision, version, pickup)
        answers = self._answers.get(request.client_id)
        if (
            answers is None
            or answers.compiled is not policy.compiled
            or answers.version != (policy.version)
        ):
            if answers is not None:
                self._remembered -= len(answers.by_request)
            answers = _Answers(policy.compiled, policy.version, {})
            self._answers[request.client_id] = answers
        key = (request.action, request.ext, request.target)
        answer = answers.by_request.get(key)
        if answer is None:
            decision, version, pickup = self._decide(request, environment, policy)
            try:
                line = mset_command(answer_pairs(decision, version, pickup))
            except AgiProtocolError:
                line = None
            if line is None or decision is _INTERNAL_ERROR or decision.reason is _INVALID_REASON:
                return Answered.of(self._recorder, request, decision, version, pickup)
            answer = _Answer(decision, version, line, log_outcome(decision, version))
            if self._remembered >= self._budget:
                self._make_room()
                answers = self._answers.setdefault(
                    request.client_id, _Answers(policy.compiled, policy.version, {})
                )
            answers.by_request[key] = answer
            self._remembered += 1
        return Answered(
            answer.line,
            self._recorder,
            request,
            answer.decision,
            answer.version,
            answer.outcome,
            valid_client=True,  # a policy was found for it
        )

    def _make_room(self) -> None:
        """Forget the answers of the client that has the most (the one asking made-up
        questions, most likely), so that the others keep theirs; everything if that frees less
        than a quarter of the budget (many clients with a few each: rare, and cheap to refill)."""
        if not self._answers:
            self._remembered = 0
            return
        client, most = max(self._answers.items(), key=lambda item: len(item[1].by_request))
        if len(most.by_request) * 4 >= self._budget:
            del self._answers[client]
            self._remembered -= len(most.by_request)
        else:
            self._answers.clear()
            self._remembered = 0

    async def __call__(self, session: AgiSession) -> Decision:
        request = AgiRequest.from_environment(session.environment)
        policy = self._policy(request)
        decision, version, pickup = self._decide(request, session.environment, policy)
        try:
            try:
                await answer(session, decision, version, pickup)
            except AgiProtocolError:
                uniqueid = printable(request.uniqueid)
                log.exception("the answer for %s does not fit in one AGI command", uniqueid)
                decision = _INTERNAL_ERROR
                await answer(session, decision, version)
        finally:  # recorded once, as answered (or as decided, if the caller went away)
            self._recorder.record(request, decision, version)
        return decision


class AgiDispatcher:
    """The session handler the server runs: the route for the action, or a denial."""

    def __init__(self, routes: Mapping[str, AgiRoute], recorder: DecisionRecorder) -> None:
        self._routes = dict(routes)
        self._recorder = recorder
        self._quick = {
            name: route for name, route in self._routes.items() if isinstance(route, PolicyRoute)
        }

    def prepare(self, environment: AgiEnvironment) -> Answered | None:
        """``QuickHandler``: a policy route's one-command answer, or a denial for an action
        without a route; ``None`` for the other routes (the server then runs ``__call__``)."""
        action = environment.action
        route = self._quick.get(action)
        if route is not None:
            return route.prepare(environment)
        if action in self._routes:
            return None
        return Answered.of(self._recorder, AgiRequest.from_environment(environment), _INVALID, 0)

    async def __call__(self, session: AgiSession) -> None:
        route = self._routes.get(session.environment.action)
        if route is None:
            await self._deny(session, _INVALID)
            return
        try:
            await route(session)
        except AgiSessionError:
            raise  # the connection is gone or broken: nobody left to answer
        except Exception:
            log.exception(
                "FastAGI route %s failed (uniqueid %s)",
                printable(session.environment.action),
                printable(session.environment.uniqueid),
            )
            await self._deny(session, _INTERNAL_ERROR)

    async def _deny(self, session: AgiSession, decision: Decision) -> None:
        self._recorder.record(AgiRequest.from_environment(session.environment), decision, 0)
        await answer(session, decision, 0)


def policy_routes(
    registry: PolicyRegistry, recorder: DecisionRecorder, remembered: int = REMEMBERED_ANSWERS
) -> dict[str, AgiRoute]:
    """The routes decided by the policy alone; ``daemon.py`` adds ``replace`` and ``restore``.
    ``remembered``: answers remembered in all (``agi_answer_cache_size``)."""
    route = PolicyRoute(registry, recorder, remembered)
    return {action.value: route for action in POLICY_ACTIONS}
