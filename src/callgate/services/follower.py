"""The registry follows the store's change feed, and nothing else.

Every change reaches the registry the same way, whichever instance wrote it: the feed says
"client X is at version N", the follower re-reads X's current version from the store (so a lost,
repeated or merged notification loses nothing), ignores it when the registry already holds it
or a newer one, compiles it and installs it; the registry then tells its listeners (the
revocations of listens and of replacements).

A write made on this instance has compiled its document already: while its save is in flight it
``offers`` the compiled policy, and the follower takes it when the stored text is the offered
text (byte for byte), instead of decoding and compiling megabytes again.

The settings and grants beside the document (``ChangeKind.SUPERVISION``) come the same way, with
versions of their own: the follower re-reads the client's current supervision record and
installs the client's entry with it. Either change compiles the supervision again
(``compile_supervision``) against the document then in force, since a grant's groups are the
document's: a policy change that empties a group also narrows the grants naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from callgate.domain import (
    ChangeKind,
    PolicyChange,
    StoredJson,
    StoredSupervision,
    live_grants,
)
from callgate.policy import CompiledPolicy, PolicyDocument
from callgate.policy.supervision import compile_supervision
from callgate.ports import PolicyStore, SupervisionStore
from callgate.registry import (
    LAZY_MAX_CHARS,
    ClientPolicy,
    PolicyRegistry,
    StoredText,
    default_policy,
)

__all__ = ["PolicyFollower"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Offer:
    encoded: str
    document: PolicyDocument
    compiled: CompiledPolicy


def supervised(policy: ClientPolicy, stored: StoredSupervision | None) -> ClientPolicy:
    """``policy`` with ``stored`` settings and grants (None: those ``policy`` has), compiled
    against ``policy``'s document."""
    if stored is None:
        settings, grants, version = policy.settings, policy.grants, policy.supervision_version
    else:
        settings, grants, version = stored.settings, stored.grants, stored.version
    return dataclasses.replace(
        policy,
        supervision=compile_supervision(settings, live_grants(grants), policy.document),
        supervision_version=version,
        settings=settings,
        grants=grants,
    )


class PolicyFollower:
    """The change feed's subscriber that keeps the registry at each client's current version."""

    def __init__(
        self,
        store: PolicyStore,
        registry: PolicyRegistry,
        supervision: SupervisionStore | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._supervision = supervision
        """Where the settings and grants are read (None: this follower follows policies only)."""
        self._offers: dict[str, list[_Offer]] = {}

    async def load_all(self) -> int:
        """Load every client's current stored policy (and its settings and grants) into the
        registry (start-up, before the listeners open); return how many policies. Each is held
        as its stored text and compiled on first use, but for the large documents and the
        clients with settings or grants, compiled now in a thread (``LAZY_MAX_CHARS``): nothing
        is decoded on the event loop here."""
        records: dict[str, StoredSupervision] = {}
        if self._supervision is not None:
            records = {r.client_id: r for r in await self._supervision.all_current()}
        stored = await self._store.all_current_json()
        count = len(stored)
        now: list[tuple[str, StoredText]] = []
        for client_id, stored_json in stored:
            text = StoredText.of(stored_json)
            if client_id in records or len(text.document_json) > LAZY_MAX_CHARS:
                now.append((client_id, text))
            else:
                self._registry.load_stored(client_id, text)
        del stored  # the texts the registry holds stay; the rest of the rows go now

        def compile_now() -> list[ClientPolicy]:
            compiled = {c: t.compile(c) for c, t in now}
            # A record without a stored document goes with the default document.
            return [
                *(p for c, p in compiled.items() if c not in records),
                *(supervised(compiled.get(c) or default_policy(c), r) for c, r in records.items()),
            ]

        if now or records:
            for policy in await asyncio.to_thread(compile_now):
                self._registry.load(policy)
        return count

    @contextlib.contextmanager
    def offer(
        self, client_id: str, encoded: str, document: PolicyDocument, compiled: CompiledPolicy
    ) -> Iterator[None]:
        """While the block runs (a save of ``encoded`` for ``client_id``), a change whose
        stored text is ``encoded`` installs ``compiled`` rather than a fresh compilation."""
        offers = self._offers.setdefault(client_id, [])
        offer = _Offer(encoded, document, compiled)
        offers.append(offer)
        try:
            yield
        finally:
            offers.remove(offer)
            if not offers:
                del self._offers[client_id]

    async def on_change(self, change: PolicyChange) -> None:
        """The feed's handler: install the client's current version if it is newer."""
        if change.kind is ChangeKind.SUPERVISION:
            await self._on_supervision(change)
            return
        client_id = change.client_id
        if change.version <= self._registry.versions(client_id)[0]:
            return  # seen already (a repeat, or merged into a newer one we read)
        stored = await self._store.current_json(client_id)
        if stored is None or stored.version <= self._registry.versions(client_id)[0]:
            return
        text = StoredText.of(stored)
        offered = self._offered(client_id, stored)
        if offered is None:  # written elsewhere: decode and compile off the event loop
            new = await asyncio.to_thread(text.compile, client_id)
        else:
            new = text.policy(client_id, *offered)
        # Read after the awaits: the settings and grants in force now go with the new document
        # (a cold client has none: it need not be compiled for them).
        current = self._registry.peek(client_id)
        if current is not None and current.supervision_version:
            new = dataclasses.replace(
                new,
                supervision_version=current.supervision_version,
                settings=current.settings,
                grants=current.grants,
            )
            new = supervised(new, None)
        installed = self._registry.install(new)
        if installed:
            log.info(
                "client %s: policy version %d by %s in force",
                client_id,
                stored.version,
                stored.changed_by,
            )

    async def _on_supervision(self, change: PolicyChange) -> None:
        client_id = change.client_id
        if self._supervision is None:
            return
        if change.version <= self._registry.versions(client_id)[1]:
            return  # seen already
        stored = await self._supervision.current(client_id)
        current = self._registry.get(client_id)
        if stored is None or stored.version <= current.supervision_version:
            return
        if self._registry.install(supervised(current, stored)):
            log.info(
                "client %s: settings and grants version %d by %s in force (%s%s)",
                client_id,
                stored.version,
                stored.changed_by,
                stored.change,
                f" {stored.grant_id}" if stored.grant_id else "",
            )

    def _offered(
        self, client_id: str, stored: StoredJson
    ) -> tuple[PolicyDocument, CompiledPolicy] | None:
        for offer in self._offers.get(client_id, ()):
            if offer.encoded == stored.document_json:
                return offer.document, offer.compiled
        return None
