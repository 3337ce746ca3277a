"""FastAGI handlers: read the request from the environment, decide once, answer with variables.

The dispatcher routes by the URL path (``agi://host/pickup`` -> ``pickup``) through a table built
in ``daemon.py``: ``pickup``, ``eavesdrop`` and ``whisper`` go to ``PolicyRoute`` (a pure decision
on the compiled policy the registry holds — no store, no other network call while the phone
waits); ``replace`` and ``restore`` to the phone-replace flow. A route owns its session: it reads,
decides and sets the ``CALLGATE_*`` variables. An action without a route is denied
``invalid_request``; a route that raises is denied ``internal_error``: never an open door.

Names, one meaning each: an ``Answer`` is what callgate answers one request (the decision, the
version that decided, the commands setting the variables); ``PolicyRoute.answer(environment)``
makes it, once per session, for both of the server's paths (the quick path sends its commands
from the read callback, the task path through an ``AgiSession``); an ``AnsweredRequest`` is that
answer with its request, recorded when the session ends; ``variable_pairs`` are the variables
and their values; ``send_decision`` sets them for a decision made elsewhere (the replace flow).

Variables are set with one ``EXEC MSet`` (one round trip instead of five ``SET VARIABLE``s), and
all of them every time, a denial included, so a previous AGI's values never survive. An answer too
long for one command is sent as several ``EXEC MSet`` (``variable_commands``); one whose single
value no command can carry is a denial ``internal_error``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, NamedTuple

from callgate.agi import variables
from callgate.agi.protocol import AgiEnvironment, AgiProtocolError
from callgate.agi.record import (
    DECISION_LOG_HOLD,
    AgiRequest,
    DecisionRecorder,
    decision_fields,
    joined_targets,
)
from callgate.agi.session import AgiSession, AgiSessionError, variable_commands
from callgate.domain import StoreError
from callgate.logs import printable
from callgate.policy import (
    ALL_TARGETS,
    Action,
    CompiledPolicy,
    Decision,
    Reason,
    decide,
    is_valid_client_id,
)
from callgate.policy.settings import CallControlSettings, Notice
from callgate.registry import ClientPolicy, PolicyRegistry

__all__ = [
    "DECISION_LOG_HOLD",
    "POLICY_ACTIONS",
    "REMEMBERED_ANSWERS",
    "AgiDispatcher",
    "AgiRequest",
    "AgiRoute",
    "Answer",
    "AnsweredRequest",
    "DecisionRecorder",
    "PolicyRoute",
    "answer_of",
    "notice_argument",
    "pickup_argument",
    "policy_routes",
    "send_decision",
    "variable_pairs",
]

log = logging.getLogger(__name__)

AgiRoute = Callable[[AgiSession], Awaitable[object]]
"""Handles one session completely (variables included); its return value is ignored."""

POLICY_ACTIONS: Final = (Action.PICKUP, Action.EAVESDROP, Action.WHISPER)

_INVALID: Final = Decision.deny(Reason.INVALID_REQUEST)
_INTERNAL_ERROR: Final = Decision.deny(Reason.INTERNAL_ERROR)
_INVALID_REASON: Final = Reason.INVALID_REQUEST
_MONITORING: Final[frozenset[str]] = frozenset({Action.EAVESDROP, Action.WHISPER})


def pickup_argument(client_id: str, decision: Decision, target: str | None) -> str:
    """``CALLGATE_PICKUP``: ``Pickup()``'s argument naming exactly the allowed ringing legs."""
    if not decision.allowed:
        return ""
    if target:
        return f"{client_id}/{target}@{variables.PICKUPMARK}"
    if decision.targets == (ALL_TARGETS,):
        return ""  # plain Pickup() within the client's own named pickup group
    return "&".join(f"{client_id}/{ext}@{variables.PICKUPMARK}" for ext in decision.targets)


def notice_argument(notice: Notice, action: str, decision: Decision) -> str:
    """``CALLGATE_NOTICE``: what the monitored call's parties must hear before an allowed listen
    or whisper starts (``tone``, ``tone,30``, ``tone,,custom/monitored``); empty otherwise."""
    if not notice.required or not decision.allowed or action not in _MONITORING:
        return ""
    items = ["tone", "" if notice.repeat_seconds is None else str(notice.repeat_seconds)]
    if notice.sound is not None:
        items.append(notice.sound)
    return ",".join(items).rstrip(",")


def variable_pairs(
    decision: Decision, version: int, pickup: str = "", notice: str = ""
) -> tuple[tuple[str, str], ...]:
    """Every ``CALLGATE_*`` variable and its value; the decision is the last pair."""
    return (
        (variables.REASON, decision.reason.value),
        (variables.TARGETS, joined_targets(decision.targets)),
        (variables.VERSION, str(version)),
        (variables.PICKUP, pickup),
        (variables.NOTICE, notice),
        (variables.DECISION, variables.ALLOW if decision.allowed else variables.DENY),
    )


class Answer(NamedTuple):
    """What callgate answers one request."""

    decision: Decision
    version: int
    """The version of the policy that decided (0: none, or the default document)."""
    commands: tuple[bytes, ...]
    """The encoded commands setting every ``CALLGATE_*`` variable, in order (one, nearly
    always)."""
    fields: str
    """``decision_fields(decision, version)``: the decision's part of the log line."""


def answer_of(
    decision: Decision,
    version: int,
    pickup: str = "",
    uniqueid: str | None = None,
    notice: str = "",
) -> Answer:
    """The answer giving ``decision``; a denial ``internal_error`` when a value is too long for
    any command (decided here, once, for both paths)."""
    try:
        commands = variable_commands(variable_pairs(decision, version, pickup, notice))
    except AgiProtocolError:
        log.exception("the answer for %s does not fit in an AGI command", printable(uniqueid))
        decision = _INTERNAL_ERROR
        commands = variable_commands(variable_pairs(decision, version))
    return Answer(decision, version, commands, decision_fields(decision, version))


_INVALID_ANSWER: Final = answer_of(_INVALID, 0)


async def send_decision(session: AgiSession, decision: Decision, version: int) -> None:
    """Set every ``CALLGATE_*`` variable for a decision made elsewhere (the replace flow)."""
    await session.send_variables(answer_of(decision, version).commands)


class AnsweredRequest:
    """A ``QuickAnswer``: a request's answer, recorded when the session ends."""

    __slots__ = ("_answer", "_attributed", "_recorder", "_request", "line", "more")

    def __init__(
        self,
        recorder: DecisionRecorder,
        request: AgiRequest,
        answer: Answer,
        attributed: bool | None = None,
    ) -> None:
        self.line = answer.commands[0]
        self.more = answer.commands[1:]
        self._recorder = recorder
        self._request = request
        self._answer = answer
        self._attributed = attributed

    @property
    def answer(self) -> Answer:
        return self._answer

    def finish(self) -> None:
        """Recorded once, as answered (or as decided, if the caller went away first)."""
        answer = self._answer
        self._recorder.record(
            self._request, answer.decision, answer.version, answer.fields, self._attributed
        )


@dataclass(slots=True)
class _RememberedAnswers:
    """One client's remembered answers, all given by one compiled policy."""

    compiled: CompiledPolicy
    version: int
    settings: CallControlSettings
    """The settings the answers were given under: the notice is part of an answer."""
    by_request: dict[tuple[str, str, str | None], Answer]
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
        self._answers: dict[str, _RememberedAnswers] = {}
        self._remembered = 0
        self._budget = remembered

    def _decide(
        self, request: AgiRequest, environment: AgiEnvironment, policy: ClientPolicy | None
    ) -> Answer:
        version = 0
        try:
            if policy is None or environment.duplicate_keys:
                decision = _INVALID
            else:
                version = policy.version
                supervision = policy.supervision  # protection and grants: judged at now
                decision = decide(
                    policy.compiled,
                    request.action,
                    request.ext,
                    request.target,
                    now=None if supervision is None else datetime.now(UTC),
                    supervision=supervision,
                )
            pickup = notice = ""
            if request.action == Action.PICKUP:
                pickup = pickup_argument(request.client_id, decision, request.target)
            elif policy is not None:
                notice = notice_argument(policy.settings.notice, request.action, decision)
        except Exception:
            log.exception("decision failed for %s", printable(request.uniqueid))
            decision, pickup, notice = _INTERNAL_ERROR, "", ""
        return answer_of(decision, version, pickup, request.uniqueid, notice)

    def _policy(self, request: AgiRequest) -> ClientPolicy | None:
        """The client's policy in force, ``None`` for a malformed client id."""
        if not is_valid_client_id(request.client_id):
            return None
        return self._registry.get(request.client_id)

    def answer(self, environment: AgiEnvironment) -> AnsweredRequest:
        """The request's answer, decided (or remembered) once: both paths send its commands."""
        request = AgiRequest.from_environment(environment)
        try:
            policy = self._policy(request)
        except StoreError:  # its stored document, compiled on first use, is damaged: denied
            log.exception("no policy for %s", printable(request.uniqueid))
            denied = answer_of(_INTERNAL_ERROR, 0, "", request.uniqueid)
            return AnsweredRequest(self._recorder, request, denied)
        if (
            policy is None
            or environment.duplicate_keys
            or policy.version == 0  # no stored policy: nothing worth remembering for it
            # With protection or grants an answer can change with the time or the settings
            # alone (the compiled document stays): never remembered, always decided.
            or policy.supervision is not None
            or not self._budget
        ):
            return AnsweredRequest(
                self._recorder, request, self._decide(request, environment, policy)
            )
        answers = self._answers.get(request.client_id)
        if (
            answers is None
            or answers.compiled is not policy.compiled
            or answers.version != (policy.version)
            # New settings (a notice switched on) with the same document: answers of before
            # would start listens without the notice now asked for.
            or answers.settings is not policy.settings
        ):
            if answers is not None:
                self._remembered -= len(answers.by_request)
            answers = _RememberedAnswers(policy.compiled, policy.version, policy.settings, {})
            self._answers[request.client_id] = answers
        key = (request.action, request.ext, request.target)
        answer = answers.by_request.get(key)
        if answer is None:
            answer = self._decide(request, environment, policy)
            decision = answer.decision
            if decision is _INTERNAL_ERROR or decision.reason is _INVALID_REASON:
                return AnsweredRequest(self._recorder, request, answer)
            if self._remembered >= self._budget:
                self._make_room()
                answers = self._answers.setdefault(
                    request.client_id,
                    _RememberedAnswers(policy.compiled, policy.version, policy.settings, {}),
                )
            answers.by_request[key] = answer
            self._remembered += 1
        # attributed: a policy was found for the client, so its id is well-formed
        return AnsweredRequest(self._recorder, request, answer, attributed=True)

    prepare = answer
    """``QuickHandler``: every policy request is answered on the server's quick path."""

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
        """The task path (the quick path's ``prepare`` failed): the same answer, sent through
        ``session``."""
        answered = self.answer(session.environment)
        try:
            await session.send_variables(answered.answer.commands)
        finally:  # recorded once, as answered (or as decided, if the caller went away)
            answered.finish()
        return answered.answer.decision


class AgiDispatcher:
    """The session handler the server runs: the route for the action, or a denial."""

    def __init__(self, routes: Mapping[str, AgiRoute], recorder: DecisionRecorder) -> None:
        self._routes = dict(routes)
        self._recorder = recorder
        self._quick = {
            name: route for name, route in self._routes.items() if isinstance(route, PolicyRoute)
        }

    def prepare(self, environment: AgiEnvironment) -> AnsweredRequest | None:
        """``QuickHandler``: a policy route's answer, or a denial for an action without a
        route; ``None`` for the other routes (the server then runs ``__call__``)."""
        action = environment.action
        route = self._quick.get(action)
        if route is not None:
            return route.answer(environment)
        if action in self._routes:
            return None
        request = AgiRequest.from_environment(environment)
        return AnsweredRequest(self._recorder, request, _INVALID_ANSWER)

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
        await send_decision(session, decision, 0)


def policy_routes(
    registry: PolicyRegistry, recorder: DecisionRecorder, remembered: int = REMEMBERED_ANSWERS
) -> dict[str, AgiRoute]:
    """The routes decided by the policy alone; ``daemon.py`` adds ``replace`` and ``restore``.
    ``remembered``: answers remembered in all (``agi_answer_cache_size``)."""
    route = PolicyRoute(registry, recorder, remembered)
    return {action.value: route for action in POLICY_ACTIONS}
