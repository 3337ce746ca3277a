"""Fixtures of the FastAGI tests: a server on a loopback port with short limits, the reference
policy in a registry, and fakes for the audit sink (a fake, not a mock: it keeps what it got)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace

import pytest

from callgate.agi.handlers import AgiDispatcher, AgiRoute, DecisionRecorder, policy_routes
from callgate.agi.server import AgiConfig, AgiServer, SessionHandler
from callgate.audit import AuditEvent
from callgate.metrics import Metrics
from callgate.policy import compile_policy, parse_document
from callgate.registry import ClientPolicy, PolicyRegistry
from reference_policy import REFERENCE_DOCUMENT

TEST_CONFIG = AgiConfig(
    host="127.0.0.1",
    port=0,
    max_sessions=2000,
    env_timeout=0.3,
    reply_timeout=0.5,
    shutdown_grace=1.0,
)


@dataclass
class FakeAuditSink:
    events: list[AuditEvent] = field(default_factory=list)

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)


def client_policy(client_id: str, document: Mapping[str, object], version: int) -> ClientPolicy:
    parsed = parse_document(document)
    return ClientPolicy(client_id, version, parsed, compile_policy(parsed))


@pytest.fixture
def registry() -> PolicyRegistry:
    registry = PolicyRegistry()
    registry.load(client_policy("acme", REFERENCE_DOCUMENT, 7))
    registry.load(client_policy("open", {"allow_all": True, "groups": {"g": ["1", "2"]}}, 2))
    return registry


@pytest.fixture
def audit() -> FakeAuditSink:
    return FakeAuditSink()


@pytest.fixture
def metrics(registry: PolicyRegistry) -> Metrics:
    metrics = Metrics()
    metrics.decisions.label_clients(registry.has_policy)  # as daemon.py wires it
    return metrics


StartServer = Callable[..., Awaitable[AgiServer]]


@pytest.fixture
async def start_server(metrics: Metrics) -> AsyncIterator[StartServer]:
    """``await start_server(handler, **config_changes)``: a listening server, stopped afterwards."""
    servers: list[AgiServer] = []

    async def start(handler: SessionHandler, **changes: object) -> AgiServer:
        server = AgiServer(replace(TEST_CONFIG, **changes), handler, metrics)  # type: ignore[arg-type]
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
def dispatcher(
    registry: PolicyRegistry, audit: FakeAuditSink, metrics: Metrics
) -> Callable[..., AgiDispatcher]:
    """``dispatcher(extra_routes)``: the daemon's dispatcher over the reference registry."""

    def build(extra: Mapping[str, AgiRoute] | None = None) -> AgiDispatcher:
        recorder = DecisionRecorder(audit, metrics)
        return AgiDispatcher({**policy_routes(registry, recorder), **(extra or {})}, recorder)

    return build


class Heartbeat:
    """Ticks every 5 ms on the event loop; ``max_gap`` says how long the loop was ever held."""

    def __init__(self) -> None:
        self.ticks = 0
        self.max_gap = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.005)
            now = loop.time()
            self.max_gap = max(self.max_gap, now - last)
            self.ticks += 1
            last = now

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


@pytest.fixture
async def heartbeat() -> AsyncIterator[Heartbeat]:
    beat = Heartbeat()
    beat.start()
    yield beat
    await beat.stop()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0
