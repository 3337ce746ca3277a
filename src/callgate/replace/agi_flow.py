"""The FastAGI ``replace`` and ``restore`` handlers: the conversation with Asterisk, no rules.

``replace`` (``agi_arg_1`` client, ``agi_arg_2`` the extension the phone acts as now,
``agi_arg_3`` the target):

1. read the phone's own extension with ``GET VARIABLE CALLGATE_EXT`` (``variables.OWN_EXTENSION``)
   — set on the PJSIP endpoint (``set_var``), so it names the physical phone; caller ID is never
   used;
2. ``ReplaceService.begin_replace`` — a denial here (``replace_not_permitted``,
   ``no_replace_pin``, ``locked_out``, ...) is answered without prompting;
3. ``ANSWER`` and ``GET DATA <prompt> <timeout> 12``: the PIN travels from the caller's keypad
   to callgate as DTMF and in the *reply*; it is never in a command line (Asterisk copies every
   command line into AMI ``AGIExecStart`` events), never in a dialplan argument, never logged;
4. ``ReplaceService.finish_replace`` — on the right PIN it writes AstDB in this same session
   (``DATABASE PUT callgate/<client>/acting/<phone> <target>`` and ``.../device/<target>
   <phone>``);
5. the ``CALLGATE_*`` variables, a denial included (``handlers.send_decision``).

Every decision is recorded once, by the ``DecisionRecorder`` (``agi.record``: its log line, its
audit event with the phone, its count): the service records those it makes, this module the
requests it refuses as malformed before the service sees them.

A prompt Asterisk cannot play (no sound file) is answered ``200 result=-1`` like a hangup, but
without the ``HANGUP`` line: the PIN is then asked again without a prompt (``GET DATA ""``), which a
hung-up channel answers 511. A hangup while the caller types (``200 result=-1``, a ``HANGUP`` line)
is a denial that does not count towards the lockout; the variables are still set (``SET VARIABLE``
works on a dead channel) and the session ends normally.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from callgate.agi import variables
from callgate.agi.handlers import send_decision
from callgate.agi.pbx import pbx_of
from callgate.agi.record import AgiRequest, DecisionRecorder
from callgate.agi.session import AgiChannelDead, AgiSession, AgiSessionError
from callgate.logs import printable
from callgate.policy import Decision, Reason, is_valid_client_id
from callgate.replace.pins import MAX_PIN_DIGITS
from callgate.replace.service import (
    AstDbError,
    PinChallenge,
    ReplaceRequest,
    ReplaceService,
    Ruling,
)

log = logging.getLogger(__name__)

_MALFORMED: Final = Ruling(Decision.deny(Reason.INVALID_REQUEST), 0)


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
        self,
        service: ReplaceService,
        recorder: DecisionRecorder,
        prompt: PinPrompt | None = None,
    ) -> None:
        self._service = service
        self._recorder = recorder
        self._prompt = prompt or PinPrompt()

    async def replace(self, session: AgiSession) -> Ruling:
        request = await self._request(session, target=session.environment.arg(3))
        if request is None:
            return await self._answer(session, _MALFORMED)
        begun = await self._service.begin_replace(request)
        if isinstance(begun, PinChallenge):
            digits = await self._collect_pin(session)
            ruling = await self._service.finish_replace(
                request, begun, digits, SessionAstDb(session)
            )
        else:
            ruling = begun
        return await self._answer(session, ruling)

    async def restore(self, session: AgiSession) -> Ruling:
        request = await self._request(session, target=None)
        if request is None:
            return await self._answer(session, _MALFORMED)
        ruling = await self._service.restore(request, SessionAstDb(session))
        return await self._answer(session, ruling)

    async def _answer(self, session: AgiSession, ruling: Ruling) -> Ruling:
        """Set every ``CALLGATE_*`` variable (a denial included)."""
        await send_decision(session, ruling.decision, ruling.version)
        return ruling

    async def _request(self, session: AgiSession, target: str | None) -> ReplaceRequest | None:
        """The request, or ``None`` (recorded as denied) when it is malformed."""
        env = session.environment
        client_id = env.arg(1)
        if env.duplicate_keys or not is_valid_client_id(client_id):
            # Not the client's decision (its id may be made up): counted, logged, not audited.
            self._recorder.record(
                AgiRequest.from_environment(env), _MALFORMED.decision, 0, attributed=False
            )
            return None
        phone = await session.get_variable(variables.OWN_EXTENSION)
        if not phone:
            log.warning(
                "%s is not set on channel %s: the endpoint needs set_var=%s=<its extension>",
                variables.OWN_EXTENSION,
                printable(env.channel),
                variables.OWN_EXTENSION,
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
                "PIN prompt %r could not be played on %s (is the sound file installed?):"
                " collecting the PIN without it",
                self._prompt.file,
                printable(session.environment.channel),
            )
            return await self._get_pin(session, "")
        except AgiChannelDead:
            uniqueid = printable(session.environment.uniqueid)
            log.info("caller hung up before entering a PIN (%s)", uniqueid)
            return ""
        except AgiSessionError as exc:
            log.warning("no PIN collected: %s", exc)
            return ""

    async def _get_pin(self, session: AgiSession, prompt: str) -> str:
        """``GET DATA <prompt>`` (``""``: no prompt, digits only)."""
        return await session.get_data(prompt, self._prompt.digit_timeout_ms, MAX_PIN_DIGITS)
