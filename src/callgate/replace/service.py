"""The phone-replace flow (policy rule 8): authorize, check the PIN, record, route, audit.

The flow is split where the phone is asked for its PIN, so that the FastAGI handler
(``agi_flow``) owns the conversation with Asterisk and this module owns every rule:

1. ``begin_replace``: the policy half (``decide``), then "is a PIN set?" and "is the target or
   the phone locked out?" — any denial here is given without prompting;
2. the handler collects the digits (``GET DATA``);
3. ``finish_replace``: count the attempt, check the PIN, re-check the policy (it may have changed
   while the caller typed), record the replacement, write AstDB, audit.

AstDB is written through an ``AstDb``: inside the replace session it is the AGI session itself
(``DATABASE PUT``/``DEL``); for restores made over HTTP and for revocations it is the Manager
connection (``DBPut``/``DBDel``), when there is one. Every AstDB key callgate writes is spelled in
``acting_key``/``device_key`` and nowhere else.

Each Asterisk server has its own AstDB: a replacement records the PBX the phone dialed it on
(``ReplaceRequest.pbx``, from the dialplan), and its keys are deleted there and nowhere else —
through the session when the session is on that PBX, else through that PBX's Manager
(``live_astdb(pbx)``), else kept pending for that PBX until it is reachable.

PIN writes are limited per client (``limits.PinWriteLimiter``: ``PinWritesRefused`` past a rate
or a number in progress); PIN checks during calls hash on threads of their own (``PinHasher``).

Fails closed: any error on the way is a deny ``internal_error`` (``unavailable`` when the store
is down), logged with its traceback. The PIN is never logged, audited or returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from callgate.agi.record import AgiRequest, DecisionRecorder
from callgate.audit import AuditEvent
from callgate.domain import AstDbKey, Attempt, Replacement, StoreError
from callgate.inbox import settle
from callgate.logs import printable
from callgate.pbx import DEFAULT_PBX, PbxName
from callgate.policy import Action, Decision, Reason, decide, is_valid_extension
from callgate.ports import ReplaceStore
from callgate.registry import ClientPolicy, PolicyRegistry
from callgate.replace.limits import PinWriteLimiter
from callgate.replace.lockout import LockoutRules, LockState, current_lock, reserve_guess
from callgate.replace.pins import PinHasher, check_pin

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class AstDbError(Exception):
    """An AstDB write did not happen (Asterisk answered a failure, or the link is gone)."""


class AstDb(Protocol):
    """Asterisk's database, as the replace flow writes it (AGI session or Manager connection)."""

    async def put(self, family: str, key: str, value: str) -> None: ...

    async def delete(self, family: str, key: str) -> None:
        """Remove the key; a key that was not there is not an error."""
        ...


class LiveAstDb(Protocol):
    """A PBX's AstDB over its Manager connection while that is logged in, else ``None``."""

    def __call__(self, pbx: PbxName = DEFAULT_PBX, /) -> AstDb | None: ...


def no_live_astdb(pbx: PbxName = DEFAULT_PBX, /) -> AstDb | None:
    """No Manager connection at all: every deletion outside a call waits for the phone."""
    return None


def acting_key(client_id: str, phone: str) -> AstDbKey:
    """``callgate/<client>/acting/<phone>`` = the extension that phone acts as."""
    return f"callgate/{client_id}/acting", phone


def device_key(client_id: str, ext: str) -> AstDbKey:
    """``callgate/<client>/device/<ext>`` = the own extension of the phone answering for it."""
    return f"callgate/{client_id}/device", ext


@dataclass(frozen=True, slots=True)
class ReplaceRequest:
    """One ``replace`` or ``restore`` session's inputs.

    ``phone`` is the physical phone's own extension, from the endpoint's configuration
    (``CALLGATE_EXT``), never from caller ID; ``acting`` is the extension it acts as now.
    """

    client_id: str
    phone: str
    acting: str
    target: str | None
    uniqueid: str | None = None
    channel: str | None = None
    pbx: PbxName = DEFAULT_PBX
    """The Asterisk server the phone dialed from: its AstDB is the one this session writes."""


@dataclass(frozen=True, slots=True)
class PinChallenge:
    """The policy (of ``version``) allowed the request and a PIN is set: ask for it."""

    version: int


@dataclass(frozen=True, slots=True)
class Ruling:
    """What the service decided for a replace or restore session, and the policy version it
    was made under."""

    decision: Decision
    version: int


class ReplacementEnd(StrEnum):
    """Why a replacement ended other than by the phone's own restore (audit ``end_reason``)."""

    API = "api"
    """``DELETE /client/{id}/replacements/{phone}``."""
    REVOKED = "revoked"
    """A policy change no longer allows it."""
    DISPLACED = "displaced"
    """Another phone took over the same extension."""


class ReplaceService:
    def __init__(
        self,
        repo: ReplaceStore,
        registry: PolicyRegistry,
        recorder: DecisionRecorder,
        *,
        hasher: PinHasher | None = None,
        pin_writes: PinWriteLimiter | None = None,
        rules: LockoutRules | None = None,
        live_astdb: LiveAstDb = no_live_astdb,
        clock: Clock = utc_now,
    ) -> None:
        self._repo = repo
        self._registry = registry
        self._recorder = recorder
        """Records each decision (log line, audit event, count); its audit sink also gets the
        ends of replacements."""
        self._hasher = hasher or PinHasher()
        self._pin_writes = pin_writes or PinWriteLimiter()
        self._rules = rules or LockoutRules()
        self._live_astdb = live_astdb
        self._clock = clock
        self._background: set[asyncio.Task[None]] = set()

    # -- PINs (HTTP) -----------------------------------------------------------------------

    async def set_pin(self, client_id: str, ext: str, pin: str) -> None:
        """Store ``ext``'s replace PIN (hashed). Raises ``PinFormatError`` for a bad PIN and
        ``PinWritesRefused`` when the client is over its PIN write limits."""
        check_pin(pin)  # a malformed PIN is refused before it counts towards the limits
        with self._pin_writes.admit(client_id):
            encoded = await self._hasher.hash(pin, client_id)
            await self._repo.set_pin(client_id, ext, encoded, self._clock())

    async def delete_pin(self, client_id: str, ext: str) -> bool:
        return await self._repo.delete_pin(client_id, ext)

    async def replacements(self, client_id: str) -> Sequence[Replacement]:
        return await self._repo.replacements(client_id)

    # -- replace (FastAGI) -----------------------------------------------------------------

    async def begin_replace(self, req: ReplaceRequest) -> Ruling | PinChallenge:
        """Everything that can deny before the caller is asked for a PIN."""
        policy = self._registry.get(req.client_id)
        try:
            decision = self._authorize(policy, req)
            if decision.allowed:
                denial = await self._pin_gate(req)
                if denial is None:
                    return PinChallenge(policy.version)
                decision = denial
        except Exception as exc:  # noqa: BLE001 (fail closed: any error is a logged deny)
            decision = _failure(exc, req)
        self._record(Action.REPLACE, req, decision, policy.version)
        return Ruling(decision, policy.version)

    async def finish_replace(
        self, req: ReplaceRequest, challenge: PinChallenge, digits: str, astdb: AstDb
    ) -> Ruling:
        """Judge the digits the caller entered (``""``: none, a timeout or a hangup)."""
        version = challenge.version
        try:
            decision, version = await self._judge_pin(req, challenge, digits, astdb)
        except Exception as exc:  # noqa: BLE001 (fail closed: any error is a logged deny)
            decision = _failure(exc, req)
        self._record(Action.REPLACE, req, decision, version, entered="yes" if digits else "no")
        return Ruling(decision, version)

    def _authorize(self, policy: ClientPolicy, req: ReplaceRequest) -> Decision:
        if not is_valid_extension(req.phone):
            return Decision.deny(Reason.INVALID_REQUEST)
        if req.target == req.phone:
            # the phone's own extension: that is what ``restore`` is for
            return Decision.deny(Reason.SELF_TARGET)
        return decide(policy.compiled, Action.REPLACE, req.acting, req.target)

    async def _pin_gate(self, req: ReplaceRequest) -> Decision | None:
        assert req.target is not None  # decide() denied the group form
        if await self._repo.pin_hash(req.client_id, req.target) is None:
            return Decision.deny(Reason.NO_REPLACE_PIN)
        state = await current_lock(
            self._repo, self._rules, req.client_id, req.target, req.phone, self._clock()
        )
        return _locked_out(state, req) if state.locked else None

    async def _judge_pin(
        self, req: ReplaceRequest, challenge: PinChallenge, digits: str, astdb: AstDb
    ) -> tuple[Decision, int]:
        assert req.target is not None
        if not digits:
            # nothing entered: not a guess, so not counted towards the lockout
            return Decision.deny(Reason.BAD_PIN), challenge.version
        attempt = await reserve_guess(
            self._repo, self._rules, req.client_id, req.target, req.phone, self._clock()
        )
        if isinstance(attempt, LockState):
            # other attempts reached the limit while this caller was typing
            return _locked_out(attempt, req), challenge.version
        encoded = await self._repo.pin_hash(req.client_id, req.target)
        if encoded is None:
            await self._repo.forget_attempt(attempt)
            return Decision.deny(Reason.NO_REPLACE_PIN), challenge.version
        if not await self._hasher.verify(digits, encoded, req.client_id):
            return Decision.deny(Reason.BAD_PIN), challenge.version
        return await self._take_over(req, attempt, astdb)

    async def _take_over(
        self, req: ReplaceRequest, attempt: Attempt, astdb: AstDb
    ) -> tuple[Decision, int]:
        assert req.target is not None
        await self._repo.forget_attempt(attempt)
        # The policy may have changed while the caller typed; a revocation that ran meanwhile
        # could not see this replacement yet. Decide again on the policy in force now. No await
        # between this and the store write: a change published after it is revoked by its
        # listener, which reads the store after this write.
        policy = self._registry.get(req.client_id)
        decision = self._authorize(policy, req)
        if not decision.allowed:
            return decision, policy.version
        new = Replacement(
            req.client_id, req.phone, req.acting, req.target, self._clock(), pbx=req.pbx
        )
        writes = (acting_key(req.client_id, req.phone), device_key(req.client_id, req.target))
        takeover = await self._repo.start_replacement(new, writes)
        try:
            previous = takeover.previous
            if previous is not None and previous.pbx != new.pbx:
                # the phone replaced from another server before: its keys there go too
                await self._delete_on(previous.pbx, previous.client_id, _keys_of(previous))
            elif previous is not None and previous.to_ext != new.to_ext:
                await astdb.delete(*device_key(req.client_id, previous.to_ext))
            for other in takeover.displaced:
                if other.pbx == new.pbx:
                    await astdb.delete(*acting_key(req.client_id, other.phone))
                else:
                    await self._delete_on(other.pbx, other.client_id, _keys_of(other))
                self._record_end(other, ReplacementEnd.DISPLACED, policy.version)
            await astdb.put(*acting_key(req.client_id, req.phone), req.target)
            await astdb.put(*device_key(req.client_id, req.target), req.phone)
        except BaseException:
            # Asterisk would not route the phone as the target: undo, and deny (the caller's
            # previous replacement, if any, is gone either way — it was being replaced).
            await self._repo.end_replacement(req.client_id, req.phone, only=new)
            raise
        return decision, policy.version

    # -- restore -----------------------------------------------------------------------------

    async def restore(self, req: ReplaceRequest, astdb: AstDb) -> Ruling:
        """The phone goes back to its own extension (FastAGI ``restore``)."""
        policy = self._registry.get(req.client_id)
        try:
            decision = await self._restore(req, policy, astdb)
        except Exception as exc:  # noqa: BLE001 (fail closed: any error is a logged deny)
            decision = _failure(exc, req)
        self._record(Action.RESTORE, req, decision, policy.version)
        return Ruling(decision, policy.version)

    async def _restore(self, req: ReplaceRequest, policy: ClientPolicy, astdb: AstDb) -> Decision:
        if not is_valid_extension(req.phone):
            return Decision.deny(Reason.INVALID_REQUEST)
        decision = decide(policy.compiled, Action.RESTORE, req.acting, None)
        if not decision.allowed:
            return decision
        ended = await self._repo.end_replacement(req.client_id, req.phone)
        # This session reaches its Asterisk: settle what revocations could not delete there
        # without a Manager connection (this phone's keys among them, perhaps).
        flushed = await self.flush_pending(astdb, req.client_id, pbx=req.pbx)
        if ended is not None:
            if ended.pbx == req.pbx:
                await _clear_astdb(astdb, ended)
            else:
                # recorded on another server (the phone moved): its keys are there
                await self._delete_on(ended.pbx, ended.client_id, _keys_of(ended))
            return decision
        own = acting_key(req.client_id, req.phone)
        if own in flushed:
            return decision  # the store had ended it, but Asterisk still routed it until now
        await astdb.delete(*own)  # a key nobody should have left: gone either way
        return Decision.deny(Reason.NOT_REPLACED)

    async def restore_phone(self, client_id: str, phone: str) -> Replacement | None:
        """End a phone's replacement from outside a call (HTTP). ``None``: it had none."""
        ended = await self._repo.end_replacement(client_id, phone)
        if ended is not None:
            await self._clear_live(ended)
            self._record_end(ended, ReplacementEnd.API, self._registry.get(client_id).version)
        return ended

    # -- revocation --------------------------------------------------------------------------

    async def on_policy_change(self, old: ClientPolicy, new: ClientPolicy) -> None:
        """Registry listener: restore every replacement that ``new`` no longer authorizes.

        The store is updated before this returns; the AstDB deletions over the Manager run in
        the background, so that the listeners after this one (hanging up revoked listeners
        within 250 ms) never wait on Manager round trips.
        """
        del old  # only what the new policy allows matters
        for replacement in await self._repo.replacements(new.client_id):
            decision = decide(
                new.compiled, Action.REPLACE, replacement.from_ext, replacement.to_ext
            )
            if decision.allowed:
                continue
            ended = await self._repo.end_replacement(
                new.client_id, replacement.phone, only=replacement
            )
            if ended is None:
                continue  # restored or replaced meanwhile
            log.info(
                "replacement revoked: client %s phone %s acted as %s (%s)",
                ended.client_id,
                ended.phone,
                ended.to_ext,
                decision.reason,
            )
            self._spawn(self._clear_live(ended))
            self._record_end(ended, ReplacementEnd.REVOKED, new.version)

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def close(self) -> None:
        """Stop the hashing threads (shutdown, after the servers have stopped)."""
        self._hasher.close()

    async def idle(self) -> None:
        """Wait for the AstDB updates running in the background (shutdown, tests)."""
        await settle(self._background)

    async def _clear_live(self, ended: Replacement) -> None:
        """Delete ``ended``'s AstDB keys over its PBX's Manager, else keep them pending there.
        Never raises."""
        try:
            await self._delete_on(ended.pbx, ended.client_id, _keys_of(ended))
        except Exception:
            log.exception("could not keep AstDB deletions for phone %s", ended.phone)

    async def _delete_on(
        self, pbx: PbxName | str, client_id: str, keys: Sequence[AstDbKey]
    ) -> None:
        """Delete ``keys`` from ``pbx``'s AstDB over its Manager, else keep them pending for it
        (deleted once that PBX is reachable). Raises only when the store fails."""
        astdb = self._live_astdb(PbxName(pbx))
        if astdb is not None:
            try:
                for key in keys:
                    await astdb.delete(*key)
            except Exception:  # kept as pending below
                log.exception("could not delete AstDB keys of client %s on PBX %s", client_id, pbx)
            else:
                return
        await self._repo.add_pending(client_id, keys, pbx=pbx)
        log.warning(
            "no Manager connection to PBX %s here: AstDB there still holds %s (client %s) until"
            " it is reachable (the Manager connection of the instance enforcing on it, or the"
            " phone dials restore)",
            pbx,
            " ".join("/".join(key) for key in keys),
            client_id,
        )

    async def flush_pending(
        self,
        astdb: AstDb | None = None,
        client_id: str | None = None,
        *,
        pbx: PbxName = DEFAULT_PBX,
    ) -> tuple[AstDbKey, ...]:
        """Delete the AstDB keys owed since Asterisk was unreachable; return those deleted.

        With ``astdb`` (an AGI session on ``pbx``): that PBX's keys. Without: every PBX's, over
        the Manager connections that are up here (the others wait)."""
        owed_keys = await self._repo.pending(client_id, pbx=pbx if astdb is not None else None)
        done: list[AstDbKey] = []
        reachable: dict[str, AstDb | None] = {}
        for owed in owed_keys:
            if astdb is not None:
                via: AstDb | None = astdb
            else:
                if owed.pbx not in reachable:
                    reachable[owed.pbx] = self._live_astdb(PbxName(owed.pbx))
                via = reachable[owed.pbx]
            if via is None:
                continue
            await via.delete(*owed.key)
            await self._repo.forget_pending(owed.client_id, owed.key, pbx=owed.pbx)
            done.append(owed.key)
        if done:
            log.info("deleted %d AstDB key(s) left by earlier restores", len(done))
        return tuple(done)

    async def keep_astdb_clean(self, interval: float = 5.0) -> None:
        """Background task: settle pending AstDB deletions on every PBX whose Manager is
        connected here. It asks the store every time: with a shared store, another instance
        (one not connected to that PBX) may have left them."""
        while True:
            try:
                await self.flush_pending()
            except StoreError as exc:  # the store's outage shows on /readyz and in its own log
                log.debug("pending AstDB deletions not read (%s); will retry", exc)
            except Exception:  # retried at the next tick
                log.exception("pending AstDB deletions failed; will retry")
            await asyncio.sleep(interval)

    # -- audit -------------------------------------------------------------------------------

    def _record(
        self, action: Action, req: ReplaceRequest, decision: Decision, version: int, **facts: str
    ) -> None:
        request = AgiRequest(
            action.value, req.client_id, req.acting, req.target, req.uniqueid, req.channel
        )
        extra = (("phone", req.phone), *sorted(facts.items()))
        self._recorder.record(
            request, decision, version, attributed=True, extra=extra, when=self._clock()
        )

    def _record_end(self, ended: Replacement, end: ReplacementEnd, version: int) -> None:
        self._recorder.audit.record(
            AuditEvent(
                time=self._clock(),
                client_id=ended.client_id,
                action=str(Action.RESTORE),
                ext=ended.to_ext,
                target=None,
                decision="allow",
                reason=str(Reason.RESTORED),
                policy_version=version,
                extra=(
                    ("phone", ended.phone),
                    ("from_ext", ended.from_ext),
                    ("started", ended.since.isoformat()),
                    ("end_reason", end.value),
                ),
            )
        )


def _keys_of(ended: Replacement) -> tuple[AstDbKey, AstDbKey]:
    return acting_key(ended.client_id, ended.phone), device_key(ended.client_id, ended.to_ext)


async def _clear_astdb(astdb: AstDb, ended: Replacement) -> None:
    for key in _keys_of(ended):
        await astdb.delete(*key)


def _locked_out(state: LockState, req: ReplaceRequest) -> Decision:
    log.warning(
        "replace locked out: client %s target %s until %s, phone %s until %s",
        req.client_id,
        printable(req.target),
        state.target_locked_until,
        printable(req.phone),
        state.phone_locked_until,
    )
    return Decision.deny(Reason.LOCKED_OUT)


def _failure(exc: Exception, req: ReplaceRequest) -> Decision:
    reason = Reason.UNAVAILABLE if isinstance(exc, StoreError) else Reason.INTERNAL_ERROR
    log.error(
        "replace/restore failed closed (%s): client %s phone %s",
        reason,
        req.client_id,
        printable(req.phone),
        exc_info=exc,
    )
    return Decision.deny(reason)
