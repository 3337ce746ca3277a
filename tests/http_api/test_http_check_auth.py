"""The check route, authentication and scoping, tokens, and the very-next-request guarantee."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from callgate.policy import decide
from callgate.registry import ClientPolicy
from callgate.store.tokens import hash_token
from reference_policy import REFERENCE_DOCUMENT

from .http_support import ADMIN, ADMIN_TOKEN, CLIENT, POLICY_URL, Harness, bearer

JSON = {"Content-Type": "application/json"}  # every body must say it is JSON (415)

CHECK_URL = POLICY_URL + "check"


async def check(api: Harness, **params: str) -> dict[str, object]:
    response = await api.client.get(CHECK_URL, params=params, headers=ADMIN)
    assert response.status == 200
    body: dict[str, object] = await response.json()
    return body


# The worked example of policy.md, through HTTP.
WORKED_EXAMPLE = [
    ("pickup", "100", "103", "allow", "pickup_all", []),
    ("pickup", "100", None, "allow", "pickup_share_group", ["101"]),
    ("pickup", "101", None, "allow", "pickup_share_group", ["100", "102"]),
    ("pickup", "103", None, "deny", "no_pickup_group", []),
    ("eavesdrop", "100", "101", "allow", "eavesdrop_group", []),
    ("eavesdrop", "100", "102", "deny", "eavesdrop_not_permitted", []),
    ("whisper", "100", "101", "deny", "whisper_not_permitted", []),
    ("whisper", "101", "103", "allow", "whisper_group", []),
    ("eavesdrop", "101", "103", "allow", "whisper_group", []),
    ("eavesdrop", "101", "101", "deny", "self_target", []),
    ("replace", "100", "102", "deny", "replace_not_permitted", []),
]


@pytest.mark.parametrize(
    ("action", "ext", "target", "decision", "reason", "targets"), WORKED_EXAMPLE
)
async def test_check_answers_the_worked_example(
    api: Harness,
    action: str,
    ext: str,
    target: str | None,
    decision: str,
    reason: str,
    targets: list[str],
) -> None:
    await api.client.put(POLICY_URL, json=REFERENCE_DOCUMENT, headers=ADMIN)
    params = {"action": action, "ext": ext} | ({"target": target} if target else {})
    body = await check(api, **params)
    assert body == {"decision": decision, "reason": reason, "targets": targets, "policy_version": 1}


async def test_check_of_an_allowed_replace_says_a_pin_is_required(api: Harness) -> None:
    await api.client.put(POLICY_URL, json=REFERENCE_DOCUMENT, headers=ADMIN)
    body = await check(api, action="replace", ext="100", target="101")
    assert body["decision"] == "allow"
    assert body["reason"] == "phone_replace_group"
    assert body["pin_required"] is True


@pytest.mark.parametrize(
    "params",
    [
        {"action": "barge", "ext": "100", "target": "101"},
        {"action": "pickup", "ext": "1 00", "target": "101"},
        {"action": "pickup", "ext": "100", "target": "x" * 33},
        {"action": "pickup"},
        {"ext": "100"},
        {},
    ],
)
async def test_check_of_an_invalid_request_is_a_200_deny(
    api: Harness, params: dict[str, str]
) -> None:
    body = await check(api, **params)
    assert body["decision"] == "deny"
    assert body["reason"] == "invalid_request"
    assert "pin_required" not in body


async def test_check_for_a_client_with_no_policy_uses_the_default(api: Harness) -> None:
    assert await check(api, action="pickup", ext="100", target="200") == {
        "decision": "allow",
        "reason": "pickup_all",
        "targets": [],
        "policy_version": 0,
    }
    body = await check(api, action="eavesdrop", ext="100", target="200")
    assert body["reason"] == "eavesdrop_not_permitted"


async def test_the_next_decision_after_a_put_obeys_it_with_no_wait(api: Harness) -> None:
    """Durable, published, then answered: no polling, no sleep, the very next decision."""
    for round_ in range(20):
        allow = round_ % 2 == 0
        response = await api.client.put(POLICY_URL, json={"allow_all": allow}, headers=ADMIN)
        assert response.status == 200
        # straight from the registry the FastAGI handlers read
        policy = api.registry.get(CLIENT)
        assert policy.version == round_ + 1
        decision = decide(policy.compiled, "eavesdrop", "100", "101")
        assert decision.allowed is allow
        # and through the check route
        body = await check(api, action="eavesdrop", ext="100", target="101")
        assert body["decision"] == ("allow" if allow else "deny")


async def test_registry_listeners_are_told_of_every_write_without_holding_its_answer(
    api: Harness,
) -> None:
    """A listener (a revocation) hears of each write after the swap, in its own task: a stalled
    one holds up no answer, and it is told of every change once it carries on."""
    release = asyncio.Event()
    seen: list[tuple[int, int]] = []

    async def listener(old: ClientPolicy, new: ClientPolicy) -> None:
        await release.wait()
        seen.append((old.version, new.version))

    api.registry.subscribe(listener)
    assert (await api.client.put(POLICY_URL, json={}, headers=ADMIN)).status == 200
    assert (await api.client.delete(POLICY_URL, headers=ADMIN)).status == 200
    assert api.registry.get(CLIENT).version == 2
    assert seen == []
    release.set()
    await api.registry.idle()
    assert seen == [(0, 1), (1, 2)]


# --- authentication ----------------------------------------------------------------------------

PROTECTED = [
    ("GET", POLICY_URL),
    ("PUT", POLICY_URL),
    ("DELETE", POLICY_URL),
    ("GET", POLICY_URL + "history"),
    ("GET", CHECK_URL + "?action=pickup&ext=1"),
    ("POST", "/tokens"),
    ("GET", "/tokens"),
    ("DELETE", "/tokens/x"),
]


@pytest.mark.parametrize(("method", "url"), PROTECTED)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
    ],
    ids=["none", "wrong", "basic", "empty", "longer", "shorter"],
)
async def test_protected_routes_need_a_valid_bearer_token(
    api: Harness, method: str, url: str, headers: dict[str, str]
) -> None:
    response = await api.client.request(method, url, json={}, headers=headers)
    assert response.status == 401
    body = await response.json()
    assert body["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await api.client.get(POLICY_URL, headers=ADMIN)).headers["ETag"] == '"0"'


@pytest.mark.parametrize(("method", "url"), PROTECTED)
async def test_without_an_admin_token_every_authenticated_route_is_401(
    make_api: Callable[[str | None], Awaitable[Harness]], method: str, url: str
) -> None:
    api = await make_api(None)
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
        response = await api.client.request(method, url, json={}, headers=headers)
        assert response.status == 401
        assert "CALLGATE_ADMIN_TOKEN" in (await response.json())["message"]
    assert (await api.client.get("/healthz")).status == 200


async def test_without_an_admin_token_the_log_says_how_to_set_it(
    make_api: Callable[[str | None], Awaitable[Harness]], caplog: pytest.LogCaptureFixture
) -> None:
    await make_api(None)
    assert "CALLGATE_ADMIN_TOKEN" in caplog.text


async def create_token(api: Harness, name: str, client_id: str) -> str:
    response = await api.client.post(
        "/tokens", json={"name": name, "client_id": client_id}, headers=ADMIN
    )
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["name"] == name
    assert body["client_id"] == client_id
    token: str = body["token"]
    return token


async def test_a_client_token_acts_on_its_own_client_only(api: Harness) -> None:
    token = await create_token(api, "acme-ops", CLIENT)
    mine = await api.client.put(POLICY_URL, json={"allow_all": True}, headers=bearer(token))
    assert mine.status == 200
    for method, url in [
        ("GET", "/client/globex/call_control_group/"),
        ("PUT", "/client/globex/call_control_group/"),
        ("DELETE", "/client/globex/call_control_group/"),
        ("GET", "/client/globex/call_control_group/history"),
        ("GET", "/client/globex/call_control_group/check?action=pickup&ext=1"),
    ]:
        response = await api.client.request(method, url, json={}, headers=bearer(token))
        assert response.status == 403
        assert (await response.json())["error"] == "forbidden"
    other = await api.client.get("/client/globex/call_control_group/", headers=ADMIN)
    assert other.headers["ETag"] == '"0"'


async def test_a_client_token_cannot_manage_tokens(api: Harness) -> None:
    token = await create_token(api, "acme-ops", CLIENT)
    for method, url in [("POST", "/tokens"), ("GET", "/tokens"), ("DELETE", "/tokens/acme-ops")]:
        response = await api.client.request(
            method, url, json={"name": "x", "client_id": CLIENT}, headers=bearer(token)
        )
        assert response.status == 403


async def test_tokens_are_listed_without_their_value_and_stored_hashed(api: Harness) -> None:
    token = await create_token(api, "acme-ops", CLIENT)
    await create_token(api, "globex-ops", "globex")
    response = await api.client.get("/tokens", headers=ADMIN)
    listed = (await response.json())["tokens"]
    assert [(t["name"], t["client_id"]) for t in listed] == [
        ("acme-ops", CLIENT),
        ("globex-ops", "globex"),
    ]
    assert all(set(t) == {"name", "client_id", "created_at"} for t in listed)

    def stored(conn: object) -> list[tuple[str, ...]]:
        return [tuple(row) for row in conn.execute("SELECT * FROM api_tokens")]  # type: ignore[attr-defined]

    rows = await api.store.db.read(stored)
    assert token not in repr(rows)
    assert hash_token(token) in repr(rows)


async def test_a_deleted_token_is_refused_at_once(api: Harness) -> None:
    token = await create_token(api, "acme-ops", CLIENT)
    assert (await api.client.get(POLICY_URL, headers=bearer(token))).status == 200
    deleted = await api.client.delete("/tokens/acme-ops", headers=ADMIN)
    assert deleted.status == 204
    assert (await api.client.get(POLICY_URL, headers=bearer(token))).status == 401
    again = await api.client.delete("/tokens/acme-ops", headers=ADMIN)
    assert again.status == 404
    assert (await again.json())["error"] == "token_not_found"


async def test_a_token_name_is_unique(api: Harness) -> None:
    await create_token(api, "ops", CLIENT)
    response = await api.client.post(
        "/tokens", json={"name": "ops", "client_id": "globex"}, headers=ADMIN
    )
    assert response.status == 409
    assert (await response.json())["error"] == "token_exists"


@pytest.mark.parametrize(
    ("body", "locs"),
    [
        ({"name": "admin", "client_id": CLIENT}, [["name"]]),
        ({"name": "", "client_id": CLIENT}, [["name"]]),
        ({"name": "a b", "client_id": "bad id"}, [["name"], ["client_id"]]),
        ({"client_id": CLIENT}, [["name"]]),
        ({"name": "x", "client_id": CLIENT, "scope": "all"}, [["scope"]]),
        ([], [[]]),
    ],
)
async def test_an_invalid_token_request_is_422(
    api: Harness, body: object, locs: list[list[str]]
) -> None:
    response = await api.client.post("/tokens", json=body, headers=ADMIN)
    assert response.status == 422
    error = await response.json()
    assert error["error"] == "invalid_token_request"
    assert [d["loc"] for d in error["details"]] == locs


async def test_token_request_malformed_json_is_400(api: Harness) -> None:
    response = await api.client.post("/tokens", data=b"{nope", headers={**ADMIN, **JSON})
    assert response.status == 400


async def test_a_short_admin_token_is_warned_about(
    make_api: Callable[[str | None], Awaitable[Harness]], caplog: pytest.LogCaptureFixture
) -> None:
    await make_api("short")
    assert "shorter than 16 characters" in caplog.text
    caplog.clear()
    await make_api("x" * 32)
    assert "shorter" not in caplog.text


async def test_each_policy_change_is_logged_with_its_author(
    api: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="callgate.services.policies")
    token = await create_token(api, "night-ops", CLIENT)
    await api.client.put(POLICY_URL, json={}, headers=bearer(token))
    assert "client acme: policy version 1 by night-ops" in caplog.text
