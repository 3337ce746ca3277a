"""Fixtures of the HTTP API tests: the real application on a real store, on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from callgate.http.app import HttpDeps, build_app
from callgate.metrics import Metrics
from callgate.pbx import ManagerState
from callgate.registry import PolicyRegistry
from callgate.store import Store, open_store
from wiring import app_services

from .http_support import ADMIN_TOKEN, Harness


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(str(tmp_path / "callgate.sqlite3"))
    yield store
    await store.close()


async def _harness(store: Store, admin_token: str | None) -> Harness:
    registry = PolicyRegistry()
    metrics = Metrics()
    ami: list[ManagerState] = [ManagerState.NOT_CONFIGURED]
    ready = [True]
    app = build_app(
        HttpDeps(
            services=app_services(store, registry),
            metrics=metrics,
            admin_token=admin_token,
            ready=lambda: ready[0],
            ami_status=lambda: ami[0],
        )
    )
    client: TestClient[object, object] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return Harness(client, registry, store, metrics, ami, ready)


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Harness]:
    harness = await _harness(store, ADMIN_TOKEN)
    yield harness
    await harness.client.close()


@pytest.fixture
async def make_api(store: Store) -> AsyncIterator[Callable[[str | None], Awaitable[Harness]]]:
    """Build a harness with another admin token (or none)."""
    made: list[Harness] = []

    async def make(admin_token: str | None) -> Harness:
        harness = await _harness(store, admin_token)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        await harness.client.close()
