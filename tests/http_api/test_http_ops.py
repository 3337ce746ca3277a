"""``/healthz``, ``/readyz``, ``/metrics`` and ``/openapi.json``."""

from __future__ import annotations

import re

import pytest

from callgate.pbx import ManagerState

from .http_support import ADMIN, POLICY_URL, Harness


async def test_healthz_needs_no_token(api: Harness) -> None:
    response = await api.client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("ami", "shown"),
    [
        (ManagerState.CONNECTED, "up"),
        (ManagerState.DISCONNECTED, "down"),
        (ManagerState.AUTH_FAILED, "auth_failed"),
        (ManagerState.NOT_CONFIGURED, "not_configured"),
    ],
)
async def test_readyz_says_whether_live_enforcement_is_up(
    api: Harness, ami: ManagerState, shown: str
) -> None:
    api.ami[0] = ami
    response = await api.client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {
        "status": "ready",
        "policies_loaded": True,
        "ami": shown,
        "store": "reachable",
        "pbx": {},
    }


async def test_readyz_is_503_until_ready(api: Harness) -> None:
    api.ready[0] = False
    response = await api.client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["status"] == "starting"
    api.ready[0] = True
    assert (await api.client.get("/readyz")).status == 200


async def test_metrics_count_requests_by_route_template(api: Harness) -> None:
    await api.client.get(POLICY_URL, headers=ADMIN)
    await api.client.get("/client/globex/call_control_group/", headers=ADMIN)
    await api.client.get(POLICY_URL)  # 401
    await api.client.get("/no/such/route/42")
    response = await api.client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    text = await response.text()
    route = "/client/{client_id}/call_control_group/"

    def count(method: str, route: str, status: int) -> float:
        pattern = (
            rf'callgate_http_requests_total\{{method="{method}",route="{re.escape(route)}",'
            rf'status="{status}"\}} ([0-9.]+)'
        )
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0

    assert count("GET", route, 200) == 2
    assert count("GET", route, 401) == 1
    assert count("GET", "unmatched", 404) == 1
    assert "globex" not in text  # client ids never become label values


async def test_openapi_describes_every_documented_route(api: Harness) -> None:
    response = await api.client.get("/openapi.json")
    assert response.status == 200
    spec = await response.json()
    assert spec["openapi"].startswith("3.1")
    paths = spec["paths"]
    base = "/client/{client_id}/call_control_group/"
    assert set(paths[base]) == {"get", "put", "delete"}
    assert "get" in paths[base + "check"]
    assert "get" in paths[base + "history"]
    assert set(paths["/tokens"]) == {"get", "post"}
    assert "delete" in paths["/tokens/{name}"]
    for public in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert paths[public]["get"]["security"] == []
    put = paths[base]["put"]
    assert put["security"] == [{"bearer": []}]
    assert {"200", "400", "401", "403", "412", "413", "422"} <= set(put["responses"])
    ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(ids) == len(set(ids))
    # each documented path parameter exists in its path
    for path, item in paths.items():
        for op in item.values():
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    assert "{" + param["name"] + "}" in path


async def test_every_routed_path_answers_json_errors_without_a_token(api: Harness) -> None:
    spec = await (await api.client.get("/openapi.json")).json()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if op["security"] == []:
                continue
            url = path.replace("{client_id}", "acme")
            url = re.sub(r"\{\w+\}", "100", url)
            response = await api.client.request(method.upper(), url, json={})
            assert response.status == 401, (method, path)
            assert (await response.json())["error"] == "unauthorized"
