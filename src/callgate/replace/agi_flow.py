"""The FastAGI ``replace`` and ``restore`` handlers: the conversation with Asterisk, no rules.

``replace`` (``agi_arg_1`` client, ``agi_arg_2`` the extension the phone acts as now,
``agi_arg_3`` the target):

1. read the phone's own extension with ``GET VARIABLE CALLGATE_EXT`` — set on the PJSIP endpoint
   (``set_var``), so it names the physical phone; caller ID is never used;
2. ``ReplaceService.begin_replace`` — a denial here (``replace_not_permitted``,
   ``no_replace_pin``, ``locked_out``, ...) is answered without prompting;
3. ``ANSWER`` and ``GET DATA <prompt> <timeout> 12``: the PIN travels from the caller's keypad
   to callgate as DTMF and in the *reply*; it is never in a command line (Asterisk copies every
   command line into AMI ``AGIExecStart`` events), never in a dialplan argument, never logged;
4. ``ReplaceService.finish_replace`` — on the right PIN it writes AstDB in this same session
   (``DATABASE PUT callgate/<client>/acting/<phone> <target>`` and ``.../device/<target>
   <phone>``);
5. the ``CALLGATE_*`` variables, a denial included (``handlers.answer``).

The service writes the decision's log line and audit event (with the phone, which the generic
``DecisionRecorder`` does not know); this module counts it in ``callgate_decisions``.

A prompt Asterisk cannot play (no sound file) is answered ``200 result=-1`` like a hangup, but
without the ``HANGUP`` line: the PIN is then asked again without a prompt (``GET DATA ""``), which a
hung-up channel answers 511. A hangup while the caller types (``200 result=-1``, a ``HANGUP`` line)
is a denial that does not count towards the lockout; the variables are still set (``SET VARIABLE``
works on a dead channel) and the session ends normally.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from callgate.agi.handlers import answer
from callgate.agi.pbx import pbx_of
from callgate.agi.session import AgiChannelDead, AgiSession, AgiSessionError
from callgate.metrics import Metrics
from callgate.policy import Action, Decision, Reason, is_valid_client_id
from callgate.replace.pins import MAX_PIN_DIGITS
from callgate.replace.service import (
    AstDbError,
    Outcome,
    PinChallenge,
    ReplaceRequest,
    ReplaceService,
)

log = logging.getLogger(__name__)

OWN_EXTENSION_VARIABLE = "CALLGATE_EXT"
"""Set by the PJSIP endpoint (``set_var=CALLGATE_EXT=<ext>``): the physical phone's extension."""


@dataclass(frozen=True, slots=True)
class PinPrompt:
    file: str = "agent-pass"
    """A sound file (without extension) of Asterisk's core sounds: "please enter your password
    followed by the pound key"."""
    digit_timeout_ms: int = 6000
    """How long ``GET DATA`` waits for the first digit and between digits."""


class SessionAstDb:
    """AstDB through the AGI session's ``DATABASE`` commands (allowed on a dead channel too)."""

    def __init__(self, session: AgiSession) -> None:
        self._session = session

    async def put(self, family: str, key: str, value: str) -> None:
        if not await self._session.database_put(family, key, value):
            raise AstDbError(f"DATABASE PUT {family} {key} failed")

    async def delete(self, family: str, key: str) -> None:
        # result=0 also means "there was no such key", which is what we want
        await self._session.database_del(family, key)


class ReplaceFlow:
    """The two handlers; the AGI handler table calls ``replace`` and ``restore``."""

    def __init__(
        self, service: ReplaceService, metrics: Metrics, prompt: PinPrompt | None = None
    ) -> None:
        self._service = service
        self._decisions = metrics.decisions
        self._prompt = prompt or PinPrompt()

    async def replace(self, session: AgiSession) -> Outcome:
        request = await self._request(session, target=session.environment.arg(3))
        if isinstance(request, Outcome):
            return await self._answer(session, Action.REPLACE, request)
        begun = await self._service.begin_replace(request)
        if isinstance(begun, PinChallenge):
            digits = await self._collect_pin(session)
            outcome = await self._service.finish_replace(
                request, begun, digits, SessionAstDb(session)
            )
        else:
            outcome = begun
        return await self._answer(session, Action.REPLACE, outcome, request.client_id)

    async def restore(self, session: AgiSession) -> Outcome:
        request = await self._request(session, target=None)
        if isinstance(request, Outcome):
            return await self._answer(session, Action.RESTORE, request)
        outcome = await self._service.restore(request, SessionAstDb(session))
        return await self._answer(session, Action.RESTORE, outcome, request.client_id)

    async def _answer(
        self, session: AgiSession, action: Action, outcome: Outcome, client_id: str = "-"
    ) -> Outcome:
        """Count the decision, then set every ``CALLGATE_*`` variable (a denial included)."""
        self._decisions.labels(client_id, action.value, outcome.decision.verdict).inc()
        await answer(session, outcome.decision, outcome.version)
        return outcome

    async def _request(self, session: AgiSession, target: str | None) -> ReplaceRequest | Outcome:
        env = session.environment
        client_id = env.arg(1)
        if env.duplicate_keys or not is_valid_client_id(client_id):
            log.info("replace/restore request refused: malformed (uniqueid %r)", env.uniqueid)
            return Outcome(Decision.deny(Reason.INVALID_REQUEST), 0)
        phone = await session.get_variable(OWN_EXTENSION_VARIABLE)
        if not phone:
            log.warning(
                "%s is not set on channel %r: the endpoint needs set_var=%s=<its extension>",
                OWN_EXTENSION_VARIABLE,
                env.channel,
                OWN_EXTENSION_VARIABLE,
            )
        return ReplaceRequest(
            client_id=client_id,
            phone=phone or "",
            acting=env.arg(2),
            target=target,
            uniqueid=env.uniqueid or None,
            channel=env.channel or None,
            pbx=pbx_of(env),
        )

    async def _collect_pin(self, session: AgiSession) -> str:
        """The digits entered; ``""`` for none, a timeout, or a hangup."""
        try:
            if not session.dead:
                await session.answer()
            try:
                return await self._get_pin(session, self._prompt.file)
            except AgiChannelDead:
                if session.dead:
                    raise
            # ``200 result=-1`` without a HANGUP line: Asterisk answers so, at once, when the
            # prompt cannot be played (``ast_app_getdata_full()`` returns before reading a digit
            # when ``ast_streamfile()`` fails: no core sounds installed, another language). A
            # caller who hung up answers the same way and Asterisk then sends HANGUP, so asking
            # again tells the two apart: a dead channel answers 511 (AgiChannelDead).
            log.warning(
                "PIN prompt %r could not be played on %r (is the sound file installed?):"
                " collecting the PIN without it",
                self._prompt.file,
                session.environment.channel,
            )
            return await self._get_pin(session, "")
        except AgiChannelDead:
            log.info("caller hung up before entering a PIN (%s)", session.environment.uniqueid)
            return ""
        except AgiSessionError as exc:
            log.warning("no PIN collected: %s", exc)
            return ""

    async def _get_pin(self, session: AgiSession, prompt: str) -> str:
        """``GET DATA <prompt>`` (``""``: no prompt, digits only)."""
        return await session.get_data(prompt, self._prompt.digit_timeout_ms, MAX_PIN_DIGITS)
