"""The application services on a real store, wired as ``daemon.build`` wires them, for the
tests that build an HTTP application by hand (``from wiring import app_services``)."""

from __future__ import annotations

from callgate.agi.record import DecisionRecorder
from callgate.metrics import Metrics
from callgate.registry import PolicyRegistry
from callgate.replace.service import ReplaceService
from callgate.services import (
    AppServices,
    PolicyFollower,
    PolicyService,
    SupervisionService,
    TokenService,
)
from callgate.store import Store


def app_services(
    store: Store, registry: PolicyRegistry, replace: ReplaceService | None = None
) -> AppServices:
    """The use cases on ``store``; the registry follows the store's change feed (until the
    store closes). ``replace``: the phone-replace service, when the test needs its own."""
    follower = PolicyFollower(store.policies, registry, store.supervision)
    store.changes.subscribe(follower.on_change)
    return AppServices(
        policies=PolicyService(store.policies, registry, follower),
        tokens=TokenService(store.tokens),
        replace=replace
        or ReplaceService(store.replace, registry, DecisionRecorder(store.audit, Metrics())),
        audit=store.audit,
        supervision=SupervisionService(store.supervision, registry),
    )
