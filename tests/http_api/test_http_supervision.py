"""``/client/{id}/call_control_settings`` and ``/client/{id}/grants`` over real HTTP on a real
store: versions and If-Match, located errors, scoping of client tokens, the check route deciding
with protection and grants, and the reference policy API left exactly as it was."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from reference_policy import REFERENCE_DOCUMENT

from .http_support import ADMIN, CLIENT, POLICY_URL, Harness, bearer

JSON = {"Content-Type": "application/json"}
SETTINGS_URL = f"/client/{CLIENT}/call_control_settings"
GRANTS_URL = f"/client/{CLIENT}/grants"
DEFAULT_SETTINGS = {
    "notice": {"mode": "off", "repeat_seconds": None, "sound": None},
    "protected_extensions": [],
}


def grant_body(**fields: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "ext": "100",
        "action": "eavesdrop",
        "extensions": ["102"],
        "from": (now - timedelta(minutes=1)).isoformat(),
        "until": (now + timedelta(hours=1)).isoformat(),
        "note": "coaching sales, ticket HR-123",
    }
    body.update(fields)
    return body


async def check(api: Harness, action: str, ext: str, target: str) -> dict[str, Any]:
    response = await api.client.get(
        POLICY_URL + "check",
        params={"action": action, "ext": ext, "target": target},
        headers=ADMIN,
    )
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def client_token(api: Harness, name: str, client_id: str) -> dict[str, str]:
    response = await api.client.post(
        "/tokens", json={"name": name, "client_id": client_id}, headers=ADMIN
    )
    assert response.status == 201
    return bearer((await response.json())["token"])


async def test_settings_are_versioned_with_etag_and_if_match(api: Harness) -> None:
    response = await api.client.get(SETTINGS_URL, headers=ADMIN)
    assert (response.status, response.headers["ETag"]) == (200, '"0"')
    assert await response.json() == DEFAULT_SETTINGS

    body = {"protected_extensions": ["101"], "notice": {"mode": "tone", "repeat_seconds": 30}}
    put = await api.client.put(SETTINGS_URL, json=body, headers={**ADMIN, "If-Match": '"0"'})
    assert (put.status, put.headers["ETag"]) == (200, '"1"')
    stored = await put.json()
    assert stored["notice"] == {"mode": "tone", "repeat_seconds": 30, "sound": None}
    assert stored["protected_extensions"] == ["101"]

    stale = await api.client.put(SETTINGS_URL, json={}, headers={**ADMIN, "If-Match": '"0"'})
    assert (stale.status, stale.headers["ETag"]) == (412, '"1"')
    assert (await stale.json())["error"] == "precondition_failed"
    again = await api.client.get(SETTINGS_URL, headers=ADMIN)
    assert (await again.json())["protected_extensions"] == ["101"]


async def test_a_protected_target_is_denied_even_under_allow_all(api: Harness) -> None:
    await api.client.put(POLICY_URL, json={"allow_all": True}, headers=ADMIN)
    assert (await check(api, "eavesdrop", "100", "101"))["reason"] == "allow_all"
    await api.client.put(SETTINGS_URL, json={"protected_extensions": ["101"]}, headers=ADMIN)
    denied = await check(api, "eavesdrop", "100", "101")
    assert (denied["decision"], denied["reason"]) == ("deny", "protected")
    assert (await check(api, "pickup", "100", "101"))["decision"] == "allow"


async def test_bad_settings_are_422_located_and_change_nothing(api: Harness) -> None:
    bad = {
        "protected_extensions": ["101", "bad ext", "101"],
        "notice": {"mode": "off", "sound": "x"},
    }
    response = await api.client.put(SETTINGS_URL, json=bad, headers=ADMIN)
    assert response.status == 422
    body = await response.json()
    assert body["error"] == "invalid_settings"
    assert sorted(tuple(d["loc"]) for d in body["details"]) == [
        ("notice", "sound"),
        ("protected_extensions", 1),
    ]
    twice = await api.client.put(
        SETTINGS_URL, json={"protected_extensions": ["101", "101"]}, headers=ADMIN
    )
    assert [d["loc"] for d in (await twice.json())["details"]] == [["protected_extensions", 1]]
    repeated = await api.client.put(
        SETTINGS_URL,
        data=b'{"protected_extensions": [], "protected_extensions": []}',
        headers={**ADMIN, **JSON},
    )
    assert (repeated.status, (await repeated.json())["error"]) == (422, "duplicate_key")
    form = await api.client.put(SETTINGS_URL, data=b"{}", headers=ADMIN)
    assert form.status == 415
    assert (await api.client.get(SETTINGS_URL, headers=ADMIN)).headers["ETag"] == '"0"'


async def test_a_grant_is_created_listed_checked_and_ended(api: Harness) -> None:
    await api.client.put(POLICY_URL, json=REFERENCE_DOCUMENT, headers=ADMIN)
    assert (await check(api, "eavesdrop", "100", "102"))["decision"] == "deny"

    created = await api.client.post(GRANTS_URL, json=grant_body(), headers=ADMIN)
    assert created.status == 201
    grant = await created.json()
    assert (grant["created_by"], grant["state"], grant["ended_at"]) == ("admin", "active", None)
    assert created.headers["Location"] == f"{GRANTS_URL}/{grant['id']}"
    allowed = await check(api, "eavesdrop", "100", "102")
    assert (allowed["reason"], allowed["grant_ids"]) == ("temporary_grant", [grant["id"]])

    listed = await (await api.client.get(GRANTS_URL, headers=ADMIN)).json()
    assert [g["id"] for g in listed["grants"]] == [grant["id"]]
    one = await api.client.get(created.headers["Location"], headers=ADMIN)
    assert (await one.json())["note"] == "coaching sales, ticket HR-123"

    ended = await api.client.delete(f"{GRANTS_URL}/{grant['id']}", headers=ADMIN)
    assert ended.status == 204
    assert (await check(api, "eavesdrop", "100", "102"))["decision"] == "deny"
    after = await (await api.client.get(f"{GRANTS_URL}/{grant['id']}", headers=ADMIN)).json()
    assert (after["state"], after["ended_by"]) == ("ended", "admin")
    assert (await api.client.delete(f"{GRANTS_URL}/nosuch", headers=ADMIN)).status == 404
    assert (await api.client.delete(f"{GRANTS_URL}/no%20such", headers=ADMIN)).status == 404

    history = await (await api.client.get(SETTINGS_URL + "/history", headers=ADMIN)).json()
    assert [(v["version"], v["change"], v["grant_id"]) for v in history["versions"]] == [
        (2, "grant_ended", grant["id"]),
        (1, "grant_added", grant["id"]),
    ]
    # the reference API is untouched: grants never move the policy's version
    policy = await api.client.get(POLICY_URL, headers=ADMIN)
    assert policy.headers["ETag"] == '"1"'


async def test_bad_grants_are_422_located(api: Harness) -> None:
    await api.client.put(POLICY_URL, json=REFERENCE_DOCUMENT, headers=ADMIN)
    cases = [
        (grant_body(action="replace"), ["action"]),
        (grant_body(groups=["nope"], extensions=[]), ["groups", 0]),
        (grant_body(until=(datetime.now(UTC) - timedelta(seconds=1)).isoformat()), ["until"]),
        (grant_body(until=(datetime.now(UTC) + timedelta(days=40)).isoformat()), ["until"]),
        (grant_body(**{"from": "yesterday"}), ["from"]),
    ]
    for body, loc in cases:
        response = await api.client.post(GRANTS_URL, json=body, headers=ADMIN)
        assert response.status == 422, body
        answer = await response.json()
        assert answer["error"] == "invalid_grant"
        assert [d["loc"] for d in answer["details"]] == [loc], answer
    listed = await (await api.client.get(GRANTS_URL, headers=ADMIN)).json()
    assert listed["grants"] == []


async def test_a_client_token_cannot_touch_another_clients_settings_or_grants(
    api: Harness,
) -> None:
    await api.client.put(POLICY_URL, json=REFERENCE_DOCUMENT, headers=ADMIN)
    created = await api.client.post(GRANTS_URL, json=grant_body(), headers=ADMIN)
    grant_id = (await created.json())["id"]
    other = await client_token(api, "globex-ops", "globex")
    attempts = [
        ("GET", SETTINGS_URL, None),
        ("PUT", SETTINGS_URL, {"protected_extensions": []}),
        ("GET", SETTINGS_URL + "/history", None),
        ("GET", GRANTS_URL, None),
        ("POST", GRANTS_URL, grant_body()),
        ("GET", f"{GRANTS_URL}/{grant_id}", None),
        ("DELETE", f"{GRANTS_URL}/{grant_id}", None),
    ]
    for method, url, body in attempts:
        response = await api.client.request(method, url, json=body, headers=other)
        assert response.status == 403, (method, url)
    assert (await api.client.get(f"{GRANTS_URL}/{grant_id}", headers=ADMIN)).status == 200
    own = await client_token(api, "acme-sup", CLIENT)
    mine = await api.client.post(GRANTS_URL, json=grant_body(ext="101"), headers=own)
    assert (mine.status, (await mine.json())["created_by"]) == (201, "acme-sup")


async def test_the_routes_are_in_the_openapi_document(api: Harness) -> None:
    spec = await (await api.client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths[SETTINGS_URL.replace(CLIENT, "{client_id}")]) == {"get", "put"}
    assert set(paths["/client/{client_id}/grants"]) == {"get", "post"}
    assert set(paths["/client/{client_id}/grants/{grant_id}"]) == {"get", "delete"}
    schemas = spec["components"]["schemas"]
    assert {"CallControlSettings", "StoredSettings", "GrantRequest", "Grant"} <= set(schemas)
    assert "from" in schemas["GrantRequest"]["properties"]
