"""The policies in force: one compiled policy per client, swapped whole on every change.

The FastAGI hot path reads from here and nothing else (no store access while a phone waits). A
change is published by replacing a client's entry with a new immutable ``ClientPolicy``; readers
that already hold the old one finish with it, the next reader gets the new one. Subscribers (live
enforcement over AMI) are told of every change after the swap.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from callgate.policy import CompiledPolicy, PolicyDocument, compile_policy

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


ChangeListener = Callable[[ClientPolicy, ClientPolicy], Awaitable[None]]
"""Called as ``listener(old, new)`` after a client's policy was swapped."""


_DEFAULT_DOCUMENT = PolicyDocument()
_DEFAULT_COMPILED = compile_policy(_DEFAULT_DOCUMENT)


def default_policy(client_id: str) -> ClientPolicy:
    return ClientPolicy(client_id, 0, _DEFAULT_DOCUMENT, _DEFAULT_COMPILED)


class PolicyRegistry:
    def __init__(self) -> None:
        self._policies: dict[str, ClientPolicy] = {}
        self._listeners: list[ChangeListener] = []

    def get(self, client_id: str) -> ClientPolicy:
        policy = self._policies.get(client_id)
        return policy if policy is not None else default_policy(client_id)

    def has_policy(self, client_id: str) -> bool:
        """Whether a policy is stored for the client (a deleted one is stored as the default
        document): only such clients are remembered or get metric series of their own."""
        return client_id in self._policies

    def load(self, policy: ClientPolicy) -> None:
        """Install a policy at start-up, without telling the listeners."""
        self._policies[policy.client_id] = policy

    def subscribe(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def publish(self, policy: ClientPolicy) -> None:
        """Swap in ``policy`` unless a newer version is already installed, then notify."""
        old = self.get(policy.client_id)
        if policy.version and old.version > policy.version:
            return
        self._policies[policy.client_id] = policy
        for listener in list(self._listeners):
            try:
                await listener(old, policy)
            except Exception:
                log.exception("policy change listener failed for client %s", policy.client_id)
