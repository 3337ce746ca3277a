"""Fixtures of the phone-replace tests: a store on disk, a policy, a clock, fakes for AstDB and
the audit sink (fakes, not mocks: they keep what they were given and tests read it back)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callgate.agi.handlers import AgiDispatcher, DecisionRecorder, policy_routes
from callgate.agi.record import log as decision_logger
from callgate.agi.server import AgiConfig, AgiServer
from callgate.audit import AuditEvent
from callgate.logs import DecisionLog
from callgate.metrics import Metrics
from callgate.policy import compile_policy, parse_document
from callgate.registry import ClientPolicy, PolicyRegistry
from callgate.replace.agi_flow import ReplaceFlow
from callgate.replace.lockout import LockoutRules
from callgate.replace.pins import PinHasher, ScryptParams
from callgate.replace.service import LiveAstDb, ReplaceService, no_live_astdb, utc_now
from callgate.store.db import Database
from callgate.store.replace import ReplaceRepository

CLIENT = "acme"
# Cheap scrypt for the flow tests (the default cost is tested in test_pins.py).
FAST_SCRYPT = ScryptParams(log2_n=10, r=8, p=1)


def client_policy(document: dict[str, object], version: int, client: str = CLIENT) -> ClientPolicy:
    doc = parse_document(document)
    return ClientPolicy(client, version, doc, compile_policy(doc))


class Clock:
    """A settable clock: lockouts expire without sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeAudit:
    events: list[AuditEvent] = field(default_factory=list)

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)

    def facts(self, event: AuditEvent) -> dict[str, str]:
        return dict(event.extra)


@dataclass
class FakeAstDb:
    """Asterisk's database as the Manager connection would change it."""

    data: dict[str, str] = field(default_factory=dict)
    ops: list[tuple[str, str]] = field(default_factory=list)

    async def put(self, family: str, key: str, value: str) -> None:
        self.data[f"{family}/{key}"] = value
        self.ops.append(("put", f"{family}/{key}"))

    async def delete(self, family: str, key: str) -> None:
        self.data.pop(f"{family}/{key}", None)
        self.ops.append(("del", f"{family}/{key}"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "callgate.sqlite3"


@pytest.fixture
async def repo(db_path: Path) -> AsyncIterator[ReplaceRepository]:
    db = await Database.open(db_path)
    yield ReplaceRepository(db)
    await db.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit() -> FakeAudit:
    return FakeAudit()


def decision_recorder(audit: FakeAudit, metrics: Metrics) -> DecisionRecorder:
    """The daemon's recorder, its lines written at the end of each event-loop iteration rather
    than held 10 ms: a test reads them right after the session."""
    return DecisionRecorder(audit, metrics, DecisionLog(decision_logger))


def make_service(
    repo: ReplaceRepository,
    registry: PolicyRegistry,
    audit: FakeAudit,
    live_astdb: LiveAstDb = no_live_astdb,
    clock: Callable[[], datetime] = utc_now,
    metrics: Metrics | None = None,
) -> ReplaceService:
    """The service as the daemon builds it (cheap scrypt), listening to ``registry``; its
    decisions counted in ``metrics``."""
    service = ReplaceService(
        repo,
        registry,
        decision_recorder(audit, metrics or Metrics()),
        hasher=PinHasher(FAST_SCRYPT),
        rules=LockoutRules(),
        live_astdb=live_astdb,
        clock=clock,
    )
    registry.subscribe(service.on_policy_change, before_answer=True)  # as daemon.build wires it
    return service


def agi_server(
    service: ReplaceService, registry: PolicyRegistry, audit: FakeAudit, metrics: Metrics
) -> AgiServer:
    """A FastAGI server on a free loopback port with the handler table as daemon.py builds it."""
    metrics.decisions.label_clients(registry.has_policy)
    recorder = decision_recorder(audit, metrics)
    flow = ReplaceFlow(service, recorder)
    routes = {**policy_routes(registry, recorder), "replace": flow.replace, "restore": flow.restore}
    return AgiServer(AgiConfig(host="127.0.0.1", port=0), AgiDispatcher(routes, recorder), metrics)
