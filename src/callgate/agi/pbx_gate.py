"""A gate in front of the FastAGI dispatcher: sessions of a PBX the settings do not name are
denied ``invalid_request`` (and warned about, once per name).

A listen allowed there could never be ended live (no Manager connection by that name), and a
replacement's AstDB keys would be recorded for a server callgate cannot reach: fail closed, as
everywhere. Without any Manager configured the one known name is ``DEFAULT_PBX``, which is what
the shipped dialplan sends by default (``callgate.agi.pbx``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable
from typing import Final, Protocol

from callgate.agi.handlers import AnsweredRequest, answer_of, send_decision
from callgate.agi.pbx import pbx_of
from callgate.agi.protocol import AgiEnvironment
from callgate.agi.record import AgiRequest, DecisionRecorder
from callgate.agi.session import AgiSession
from callgate.logs import printable
from callgate.pbx import PbxName
from callgate.policy import Decision, Reason

log = logging.getLogger(__name__)

_REFUSED: Final = Decision.deny(Reason.INVALID_REQUEST)
_REFUSED_ANSWER: Final = answer_of(_REFUSED, 0)
_WARNED_LIMIT: Final = 64
"""Unknown names warned about, at most (callers cannot grow the set past it)."""


class SessionHandler(Protocol):
    """What ``AgiServer`` runs: the dispatcher (``AgiDispatcher``), with its quick path."""

    def prepare(self, environment: AgiEnvironment) -> AnsweredRequest | None: ...

    def __call__(self, session: AgiSession) -> Awaitable[None]: ...


class PbxGate:
    """The session handler in front of ``inner``: sessions of a PBX outside ``known`` are
    denied; the others go to ``inner`` untouched."""

    def __init__(
        self, inner: SessionHandler, known: Iterable[PbxName], recorder: DecisionRecorder
    ) -> None:
        self._inner = inner
        self.known: frozenset[PbxName] = frozenset(known)
        self._recorder = recorder
        self._warned: set[str] = set()

    def prepare(self, environment: AgiEnvironment) -> AnsweredRequest | None:
        if pbx_of(environment) in self.known:
            return self._inner.prepare(environment)
        self._warn(environment)
        request = AgiRequest.from_environment(environment)
        return AnsweredRequest(self._recorder, request, _REFUSED_ANSWER)

    async def __call__(self, session: AgiSession) -> None:
        if pbx_of(session.environment) in self.known:
            await self._inner(session)
            return
        self._warn(session.environment)
        self._recorder.record(AgiRequest.from_environment(session.environment), _REFUSED, 0)
        await send_decision(session, _REFUSED, 0)

    def _warn(self, environment: AgiEnvironment) -> None:
        name = pbx_of(environment)
        if name in self._warned or len(self._warned) >= _WARNED_LIMIT:
            return
        self._warned.add(name)
        log.warning(
            "FastAGI request from PBX %s, which the settings do not name (known: %s): denied"
            " invalid_request. Set CALLGATE_PBX in the dialplan's [globals] to this server's"
            " name in callgate's [pbx.<name>] tables (or add the table).",
            printable(name),
            ", ".join(sorted(self.known)),
        )
