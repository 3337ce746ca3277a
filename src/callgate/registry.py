"""The policies in force: one compiled policy per client, swapped whole on every change.

The FastAGI hot path reads from here and nothing else (no store access while a phone waits). A
change is installed by replacing a client's entry with a new immutable ``ClientPolicy``; readers
that already hold the old one finish with it, the next reader gets the new one. Only the change
feed's follower (``services.follower``) installs changes in a running daemon. Listeners (the
revocations of listens and of replacements) are told of every change after the swap, each in its
own task: a write that awaits ``applied`` is answered once the swap is done, never after them —
except the few listeners subscribed ``before_answer`` (the store half of revoking replacements:
local and quick), which run right after the swap and before ``applied`` returns.

A client's entry also carries its settings and grants beside the document (``supervision``,
compiled against that document by the follower) with their own version: a change of either the
document or the supervision record is a new entry, and the listeners are told of both alike.

Loaded at start-up, a client is held as its stored text alone (``StoredText``: what the store
returned, the JSON document undecoded) and is decoded and compiled by the first ``get`` that
needs it (its first decision, check, or change), then held compiled: 100,000 clients start in
seconds and in a fraction of the memory their compiled forms would take, and a compiled client's
``get`` is the one dict look-up it always was. A document too large to compile on the event loop
in a moment (``LAZY_MAX_CHARS``), and a client with settings or grants stored (few have), are
compiled at start-up instead, off the loop: a cold client has no supervision record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from callgate.domain import GrantRecord, StoredJson, StoreError
from callgate.inbox import FanOut, settle
from callgate.policy import (
    CompiledPolicy,
    PolicyDocument,
    PolicyValidationError,
    compile_policy,
    parse_document,
)
from callgate.policy.settings import CallControlSettings
from callgate.policy.supervision import Supervision

DEFAULT_SETTINGS = CallControlSettings()

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    client_id: str
    version: int
    """0 while no document is stored for the client (the default document applies)."""
    document: PolicyDocument
    compiled: CompiledPolicy
    changed_at: datetime | None = None
    changed_by: str | None = None
    supervision: Supervision | None = None
    """Protection and grants compiled for ``decide()``; None when neither is set (then the
    document alone decides, and no decision depends on the time)."""
    supervision_version: int = 0
    """The version of the settings and grants in force (0: none stored)."""
    settings: CallControlSettings = DEFAULT_SETTINGS
    grants: tuple[GrantRecord, ...] = ()
    """The stored grant records (``supervision`` compiles those not ended early)."""


LAZY_MAX_CHARS: Final = 32_768
"""Stored documents up to this many characters are compiled on first use (about 1 ms for the
largest, on the event loop); larger ones at start-up, in a thread."""


@dataclass(frozen=True, slots=True)
class StoredText:
    """A client's stored version not decoded yet: the compact form held until first use."""

    version: int
    document_json: str
    changed_at: str
    """RFC 3339, as stored"""
    changed_by: str

    @classmethod
    def of(cls, stored: StoredJson) -> StoredText:
        # The writers' names repeat across clients (a token name, "admin"): held once.
        return cls(
            stored.version, stored.document_json, stored.changed_at, sys.intern(stored.changed_by)
        )

    def compile(self, client_id: str) -> ClientPolicy:
        """Decode and compile, with no settings or grants (``StoreError``: the text is not a
        valid document, which only outside damage to the database can make)."""
        try:
            document = parse_document(json.loads(self.document_json))
        except (ValueError, PolicyValidationError) as exc:
            raise StoreError(
                f"stored policy {client_id!r} v{self.version} is unreadable: {exc}"
            ) from exc
        return self.policy(client_id, document, compile_policy(document))

    def policy(
        self, client_id: str, document: PolicyDocument, compiled: CompiledPolicy
    ) -> ClientPolicy:
        """This version as ``document`` compiled (decoded from this text, or the same text's),
        with no settings or grants."""
        return ClientPolicy(
            client_id=client_id,
            version=self.version,
            document=document,
            compiled=compiled,
            changed_at=datetime.fromisoformat(self.changed_at),
            changed_by=self.changed_by,
        )


ChangeListener = Callable[[ClientPolicy, ClientPolicy], Awaitable[None]]
"""Called as ``listener(old, new)`` after a client's policy was swapped."""


_DEFAULT_DOCUMENT = PolicyDocument()
_DEFAULT_COMPILED = compile_policy(_DEFAULT_DOCUMENT)


SETTLE_TIMEOUT = 5.0
"""Seconds a ``before_answer`` listener may take over one change before the change is applied
without it (it goes on; its failure is logged)."""


def default_policy(client_id: str) -> ClientPolicy:
    return ClientPolicy(client_id, 0, _DEFAULT_DOCUMENT, _DEFAULT_COMPILED)


Change = tuple[ClientPolicy, ClientPolicy]
_Waiters = dict[str, list[tuple[int, asyncio.Future[None]]]]


def _span(waiting: Change, new: Change) -> Change:
    """Two changes a listener has not been told of yet, told as one: from the first's old to
    the second's new (listeners judge what ``new`` allows)."""
    return waiting[0], new[1]


class PolicyRegistry:
    def __init__(self) -> None:
        self._policies: dict[str, ClientPolicy] = {}
        self._cold: dict[str, StoredText] = {}
        """Clients loaded at start-up and not used since; never also in ``_policies``, never
        with settings or grants, never in ``_applied``."""
        self._listeners: FanOut[Change] = FanOut(_span, name="policy-listener")
        self._waiters: _Waiters = {}
        self._supervision_waiters: _Waiters = {}
        self._before_answer: list[ChangeListener] = []
        self._applied: dict[str, tuple[int, int]] = {}
        """Per client, the newest (document, supervision) versions applied: installed and
        settled by the ``before_answer`` listeners."""
        self._settling: set[asyncio.Task[None]] = set()

    def get(self, client_id: str) -> ClientPolicy:
        """The client's policy in force, compiled (a cold client is compiled now, once:
        ``StoreError`` if its stored text cannot be decoded)."""
        policy = self._policies.get(client_id)
        if policy is not None:
            return policy
        cold = self._cold.get(client_id)
        if cold is None:
            return default_policy(client_id)
        policy = cold.compile(client_id)
        del self._cold[client_id]
        self.load(policy)
        return policy

    def peek(self, client_id: str) -> ClientPolicy | None:
        """The client's compiled policy, None while it is cold or has none (compiling nothing)."""
        return self._policies.get(client_id)

    def versions(self, client_id: str) -> tuple[int, int]:
        """The installed (document, supervision) versions (0: none), compiling nothing."""
        policy = self._policies.get(client_id)
        if policy is not None:
            return policy.version, policy.supervision_version
        cold = self._cold.get(client_id)
        return (0, 0) if cold is None else (cold.version, 0)

    def has_policy(self, client_id: str) -> bool:
        """Whether a policy is stored for the client (a deleted one is stored as the default
        document): only such clients are remembered or get metric series of their own."""
        return client_id in self._policies or client_id in self._cold

    def load(self, policy: ClientPolicy) -> None:
        """Install a policy at start-up, without telling the listeners."""
        self._cold.pop(policy.client_id, None)
        self._policies[policy.client_id] = policy
        self._applied[policy.client_id] = (policy.version, policy.supervision_version)

    def load_stored(self, client_id: str, stored: StoredText) -> None:
        """Hold a stored version at start-up, to be compiled on first use (no listener is
        told); kept only if nothing as new is installed."""
        if self.versions(client_id)[0] < stored.version:
            self._policies.pop(client_id, None)
            self._applied.pop(client_id, None)
            self._cold[client_id] = stored

    def subscribe(
        self, listener: ChangeListener, *, before_answer: bool = False
    ) -> Callable[[], None]:
        """Tell ``listener`` of every later change, in its own task (a slow listener delays
        neither the swap nor the other listeners); the returned function stops that.

        ``before_answer``: the change is applied (``applied`` returns, a write is answered)
        only once ``listener`` is done with it — for work the answer promises, which must be
        quick (it is bounded by ``SETTLE_TIMEOUT``)."""
        if before_answer:
            self._before_answer.append(listener)

            def stop() -> None:
                if listener in self._before_answer:
                    self._before_answer.remove(listener)

            return stop

        async def tell(change: Change) -> None:
            await listener(*change)

        tell.__qualname__ = getattr(listener, "__qualname__", "listener")
        return self._listeners.subscribe(tell)

    def install(self, policy: ClientPolicy) -> bool:
        """Swap in ``policy`` unless a newer version (of the document or of the supervision
        record) is installed; then wake whoever awaits those versions (``applied``,
        ``applied_supervision``) and hand the change to each listener, without waiting for
        them. False: not installed."""
        version, supervision_version = self.versions(policy.client_id)
        if (policy.version and version > policy.version) or (
            supervision_version > policy.supervision_version
        ):
            return False
        try:
            old = self.get(policy.client_id)  # the listeners are told old and new, compiled
        except StoreError:
            log.exception("client %s: the policy replaced was unreadable", policy.client_id)
            old = default_policy(policy.client_id)
            self._applied[policy.client_id] = (version, 0)
        self._cold.pop(policy.client_id, None)
        self._policies[policy.client_id] = policy
        if self._before_answer:
            task = asyncio.get_running_loop().create_task(
                self._settle(old, policy), name="policy-settle"
            )
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
        else:
            self._apply(policy)
        self._listeners.put(policy.client_id, (old, policy))
        return True

    async def _settle(self, old: ClientPolicy, new: ClientPolicy) -> None:
        try:
            for listener in list(self._before_answer):
                try:
                    await asyncio.wait_for(listener(old, new), SETTLE_TIMEOUT)
                except Exception:  # the change is in force all the same; say what did not follow
                    log.exception(
                        "client %s v%d: a change listener failed", new.client_id, new.version
                    )
        finally:
            self._apply(new)

    def _apply(self, policy: ClientPolicy) -> None:
        client_id = policy.client_id
        document, supervision = self._applied.get(client_id, (0, 0))
        self._applied[client_id] = (
            max(document, policy.version),
            max(supervision, policy.supervision_version),
        )
        self._wake(self._waiters, client_id, policy.version)
        self._wake(self._supervision_waiters, client_id, policy.supervision_version)

    async def publish(self, policy: ClientPolicy) -> None:
        """``install``, then wait until every listener was told (tests, benches)."""
        self.install(policy)
        await self.idle()

    async def applied(self, client_id: str, version: int) -> None:
        """Return once the client's applied version is ``version`` or newer: installed, and
        settled by the ``before_answer`` listeners."""
        if self._applied_of(client_id)[0] >= version:
            return
        await self._wait(self._waiters, client_id, version)

    async def applied_supervision(self, client_id: str, version: int) -> None:
        """Return once the client's applied supervision version is ``version`` or newer."""
        if self._applied_of(client_id)[1] >= version:
            return
        await self._wait(self._supervision_waiters, client_id, version)

    def _applied_of(self, client_id: str) -> tuple[int, int]:
        applied = self._applied.get(client_id)
        if applied is not None:
            return applied
        cold = self._cold.get(client_id)  # loaded at start-up: applied as it was loaded
        return (0, 0) if cold is None else (cold.version, 0)

    @staticmethod
    async def _wait(waiters: _Waiters, client_id: str, version: int) -> None:
        future = asyncio.get_running_loop().create_future()
        waiters.setdefault(client_id, []).append((version, future))
        await future

    async def idle(self) -> None:
        """Return once every listener has been told of every change installed so far."""
        await settle(self._settling)
        await self._listeners.idle()

    async def close(self) -> None:
        """Stop telling the listeners (at shutdown, after the writers have stopped)."""
        for task in list(self._settling):
            task.cancel()
        await asyncio.gather(*self._settling, return_exceptions=True)
        await self._listeners.close()
        for table in (self._waiters, self._supervision_waiters):
            for waiters in table.values():
                for _, future in waiters:
                    future.cancel()
            table.clear()

    @staticmethod
    def _wake(table: _Waiters, client_id: str, version: int) -> None:
        waiters = table.get(client_id)
        if not waiters:
            return
        still = [(v, f) for v, f in waiters if v > version and not f.done()]
        for v, future in waiters:
            if v <= version and not future.done():
                future.set_result(None)
        if still:
            table[client_id] = still
        else:
            del table[client_id]
