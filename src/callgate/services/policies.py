"""Use cases of a client's policy: write it, read it, page its history, check a decision.

A write only writes: it compiles the document (a stored version must compile), saves it with
the caller's expected versions (``If-Match``) and attribution, and waits until the registry has
that version in force before it returns, so the next FastAGI request decides by it. It does not
install the version itself: the store's change feed tells the registry's follower, on this
instance as on any other, and the follower offers the revocation listeners the change after the
swap, in their own tasks, so a slow Manager never delays the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Collection
from datetime import UTC, datetime
from typing import Final

from callgate.domain import HistoryPage, StoredJson, StoredPolicy, StoreError, canonical_json
from callgate.policy import Decision, PolicyDocument, compile_policy, decide
from callgate.ports import PolicyStore
from callgate.registry import ClientPolicy, PolicyRegistry
from callgate.services.follower import PolicyFollower

__all__ = ["DEFAULT_JSON", "IN_FORCE_TIMEOUT", "PolicyService"]

log = logging.getLogger(__name__)

DEFAULT_JSON: Final = canonical_json(PolicyDocument())
"""The stored text of the default document (what a reset stores, what a client without a
stored policy reads)."""

IN_FORCE_TIMEOUT: Final = 10.0
"""Seconds a write waits for its version to be in force here after its commit. Only a store
that commits and then cannot be read reaches it: the write is durable, yet the answer is a
``StoreError`` (HTTP 503), since it could not say that the next request decides by it."""


async def in_force(applied: Awaitable[None], what: str) -> None:
    """Wait for ``applied`` (the registry has the version a write stored) for at most
    ``IN_FORCE_TIMEOUT``; past it, a ``StoreError`` saying ``what`` is stored but not in force."""
    try:
        await asyncio.wait_for(applied, IN_FORCE_TIMEOUT)
    except TimeoutError:
        raise StoreError(f"{what} is stored but not in force") from None


class PolicyService:
    def __init__(
        self, store: PolicyStore, registry: PolicyRegistry, follower: PolicyFollower
    ) -> None:
        self._store = store
        self._registry = registry
        self._follower = follower

    async def write(
        self,
        client_id: str,
        document: PolicyDocument,
        changed_by: str,
        *,
        if_version: Collection[int] | None = None,
        encoded: str | None = None,
    ) -> StoredPolicy:
        """Store ``document`` as the client's next version; return once it is in force here.

        Raises ``VersionConflictError`` (nothing written) when the current version is not in
        ``if_version``. ``encoded``: ``canonical_json(document)`` when the caller made it."""
        if encoded is None:
            encoded = canonical_json(document)
        compiled = compile_policy(document)
        with self._follower.offer(client_id, encoded, document, compiled):
            stored = await self._store.save(
                client_id, document, changed_by, if_version=if_version, encoded=encoded
            )
            log.info("client %s: policy version %d by %s", client_id, stored.version, changed_by)
            await in_force(
                self._registry.applied(client_id, stored.version),
                f"client {client_id!r} version {stored.version}",
            )
        return stored

    async def reset(
        self, client_id: str, changed_by: str, *, if_version: Collection[int] | None = None
    ) -> StoredPolicy:
        """Back to the default document, stored as a new version (the history shows who)."""
        return await self.write(
            client_id, PolicyDocument(), changed_by, if_version=if_version, encoded=DEFAULT_JSON
        )

    async def current_json(self, client_id: str) -> StoredJson | None:
        """The current version as stored text; None when nothing is stored."""
        return await self._store.current_json(client_id)

    async def history_page(
        self, client_id: str, *, limit: int, before: int | None, max_bytes: int
    ) -> HistoryPage:
        return await self._store.history_page(
            client_id, limit=limit, before=before, max_bytes=max_bytes
        )

    def in_force(self, client_id: str) -> ClientPolicy:
        """The client's policy that decides now (the registry's: what FastAGI reads)."""
        return self._registry.get(client_id)

    def check(
        self,
        client_id: str,
        action: str,
        ext: str,
        target: str | None,
        *,
        now: datetime | None = None,
    ) -> tuple[Decision, int]:
        """The decision FastAGI would give at ``now`` (default: the current time), from the same
        registry (the document, the protected extensions and the grants), and its version."""
        policy = self._registry.get(client_id)
        if policy.supervision is None:
            return decide(policy.compiled, action, ext, target), policy.version
        when = now if now is not None else datetime.now(UTC)
        decision = decide(
            policy.compiled, action, ext, target, now=when, supervision=policy.supervision
        )
        return decision, policy.version
