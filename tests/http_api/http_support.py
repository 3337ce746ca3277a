"""Constants and the harness shared by the HTTP tests (fixtures are in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp.test_utils import TestClient

from callgate.metrics import Metrics
from callgate.pbx import ManagerState
from callgate.registry import PolicyRegistry
from callgate.store import Store

ADMIN_TOKEN = "admin-secret-for-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLIENT = "acme"
POLICY_URL = f"/client/{CLIENT}/call_control_group/"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Harness:
    client: TestClient[object, object]
    registry: PolicyRegistry
    store: Store
    metrics: Metrics
    ami: list[ManagerState] = field(default_factory=lambda: [ManagerState.NOT_CONFIGURED])
    ready: list[bool] = field(default_factory=lambda: [True])
