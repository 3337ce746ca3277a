"""Constants and the harness shared by the HTTP tests (fixtures are in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp.test_utils import TestClient

from callgate.http.api import AmiStatus
from callgate.metrics import Metrics
from callgate.registry import PolicyRegistry
from callgate.store import Store

ADMIN_TOKEN = "admin-secret-for-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLIENT = "acme"
POLICY_URL = f"/client/{CLIENT}/call_control_group/"

REFERENCE_DOCUMENT: dict[str, object] = {
    "allow_all": False,
    "pickup_all": True,
    "groups": {"support": ["100", "101"], "sales": ["102", "101"], "hr": ["100", "101", "103"]},
    "pickup_share_groups": ["support", "sales"],
    "phone_replace_groups": ["support"],
    "eavesdrop_100": ["support"],
    "whisper_101": ["sales", "hr"],
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Harness:
    client: TestClient[object, object]
    registry: PolicyRegistry
    store: Store
    metrics: Metrics
    ami: list[AmiStatus] = field(default_factory=lambda: [AmiStatus.NOT_CONFIGURED])
    ready: list[bool] = field(default_factory=lambda: [True])
