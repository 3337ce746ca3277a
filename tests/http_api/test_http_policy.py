"""PUT/GET/DELETE of a client's policy, its history, ETags and every error the routes answer."""

from __future__ import annotations

import io
import json

import pytest

from callgate.policy import PolicyDocument, decide
from reference_policy import REFERENCE_DOCUMENT

from .http_support import ADMIN, CLIENT, POLICY_URL, Harness

JSON = {"Content-Type": "application/json"}  # every body must say it is JSON (415)

DEFAULT_JSON = PolicyDocument().to_json()


def explicit(document: dict[str, object]) -> dict[str, object]:
    """The document as the API answers it: every field present."""
    return {**DEFAULT_JSON, **document}


async def test_get_without_a_stored_policy_answers_the_default_document(api: Harness) -> None:
    response = await api.client.get(POLICY_URL, headers=ADMIN)
    assert response.status == 200
    assert response.headers["ETag"] == '"0"'
    body = await response.json()
    assert body == {
        "allow_all": False,
        "pickup_all": True,
        "groups": {},
        "pickup_share_groups": [],
        "phone_replace_groups": [],
    }


@pytest.mark.parametrize(
    "body",
    [
        REFERENCE_DOCUMENT,
        {"call_control_groups": REFERENCE_DOCUMENT},
        {"call_control_groups": json.dumps(REFERENCE_DOCUMENT)},
    ],
    ids=["document", "wrapped-object", "wrapped-string"],
)
async def test_each_body_form_stores_the_same_document(api: Harness, body: object) -> None:
    response = await api.client.put(POLICY_URL, json=body, headers=ADMIN)
    assert response.status == 200, await response.text()
    assert response.headers["ETag"] == '"1"'
    assert await response.json() == explicit(REFERENCE_DOCUMENT)

    again = await api.client.get(POLICY_URL, headers=ADMIN)
    assert again.headers["ETag"] == '"1"'
    assert await again.json() == explicit(REFERENCE_DOCUMENT)


async def test_the_route_without_its_trailing_slash_is_the_same_resource(api: Harness) -> None:
    response = await api.client.put(POLICY_URL.rstrip("/"), json={"allow_all": True}, headers=ADMIN)
    assert response.status == 200
    assert (await (await api.client.get(POLICY_URL, headers=ADMIN)).json())["allow_all"] is True


async def test_every_write_is_a_new_version(api: Harness) -> None:
    for expected in (1, 2, 3):
        response = await api.client.put(POLICY_URL, json={"pickup_all": False}, headers=ADMIN)
        assert response.headers["ETag"] == f'"{expected}"'
    response = await api.client.delete(POLICY_URL, headers=ADMIN)
    assert response.headers["ETag"] == '"4"'


async def test_delete_goes_back_to_the_default_document(api: Harness) -> None:
    await api.client.put(POLICY_URL, json=REFERENCE_DOCUMENT, headers=ADMIN)
    response = await api.client.delete(POLICY_URL, headers=ADMIN)
    assert response.status == 200
    assert await response.json() == DEFAULT_JSON
    again = await api.client.get(POLICY_URL, headers=ADMIN)
    assert await again.json() == DEFAULT_JSON
    assert again.headers["ETag"] == '"2"'
    # and the registry decides by the default again: only directed pickup
    compiled = api.registry.get(CLIENT).compiled
    assert decide(compiled, "eavesdrop", "100", "101").reason == "eavesdrop_not_permitted"
    assert decide(compiled, "pickup", "100", "103").reason == "pickup_all"


async def test_history_lists_every_version_newest_first(api: Harness, make_api: object) -> None:
    token = await (
        await api.client.post("/tokens", json={"name": "ops", "client_id": CLIENT}, headers=ADMIN)
    ).json()
    await api.client.put(POLICY_URL, json={"allow_all": True}, headers=ADMIN)
    await api.client.put(
        POLICY_URL,
        json=REFERENCE_DOCUMENT,
        headers={"Authorization": f"Bearer {token['token']}"},
    )
    await api.client.delete(POLICY_URL, headers=ADMIN)

    response = await api.client.get(POLICY_URL + "history", headers=ADMIN)
    assert response.status == 200
    versions = (await response.json())["versions"]
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert [v["changed_by"] for v in versions] == ["admin", "ops", "admin"]
    assert versions[0]["document"] == DEFAULT_JSON
    assert versions[1]["document"] == explicit(REFERENCE_DOCUMENT)
    assert versions[2]["document"] == explicit({"allow_all": True})
    assert all(v["changed_at"].endswith("+00:00") for v in versions)
    assert versions[0]["changed_at"] >= versions[2]["changed_at"]


async def test_history_of_a_client_with_nothing_stored_is_empty(api: Harness) -> None:
    response = await api.client.get("/client/other/call_control_group/history", headers=ADMIN)
    assert response.status == 200
    assert await response.json() == {"versions": []}


# --- If-Match --------------------------------------------------------------------------------


async def test_if_match_with_the_current_etag_writes(api: Harness) -> None:
    first = await api.client.put(POLICY_URL, json={}, headers={**ADMIN, "If-Match": '"0"'})
    assert first.status == 200
    second = await api.client.put(
        POLICY_URL, json={"allow_all": True}, headers={**ADMIN, "If-Match": first.headers["ETag"]}
    )
    assert second.status == 200
    assert second.headers["ETag"] == '"2"'


@pytest.mark.parametrize("if_match", ['"0"', '"7"', "1", 'W/"1"', "garbage", '""'])
async def test_a_stale_if_match_gets_412_and_changes_nothing(api: Harness, if_match: str) -> None:
    await api.client.put(POLICY_URL, json=REFERENCE_DOCUMENT, headers=ADMIN)
    for method in ("PUT", "DELETE"):
        response = await api.client.request(
            method, POLICY_URL, json={"allow_all": True}, headers={**ADMIN, "If-Match": if_match}
        )
        assert response.status == 412
        body = await response.json()
        assert body["error"] == "precondition_failed"
        assert response.headers["ETag"] == '"1"'
    current = await api.client.get(POLICY_URL, headers=ADMIN)
    assert current.headers["ETag"] == '"1"'
    assert await current.json() == explicit(REFERENCE_DOCUMENT)
    assert api.registry.get(CLIENT).version == 1


async def test_if_match_star_and_lists(api: Harness) -> None:
    star = await api.client.put(POLICY_URL, json={}, headers={**ADMIN, "If-Match": "*"})
    assert star.status == 200
    listed = await api.client.delete(POLICY_URL, headers={**ADMIN, "If-Match": '"5", "1"'})
    assert listed.status == 200
    assert listed.headers["ETag"] == '"2"'


# --- errors ------------------------------------------------------------------------------------


async def error_of(response: object) -> dict[str, object]:
    from aiohttp import ClientResponse

    assert isinstance(response, ClientResponse)
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error", "message", "details"}
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"",
        b'{"allow_all": tru}',
        b"\xff\xfe\x00garbage",
        b'{"allow_all": NaN}',
        b"[" * 100_000,
        json.dumps({"call_control_groups": "{not json"}).encode(),
        json.dumps({"call_control_groups": ""}).encode(),
    ],
    ids=["open", "empty", "typo", "binary", "nan", "deep", "bad-string", "empty-string"],
)
async def test_malformed_json_is_400(api: Harness, raw: bytes) -> None:
    response = await api.client.put(POLICY_URL, data=raw, headers={**ADMIN, **JSON})
    assert response.status == 400
    assert (await error_of(response))["error"] == "malformed_json"
    assert (await api.client.get(POLICY_URL, headers=ADMIN)).headers["ETag"] == '"0"'


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ([1, 2], []),
        ("a string", []),
        (None, []),
        (42, []),
        ({"call_control_groups": 5}, ["call_control_groups"]),
        ({"call_control_groups": "[1]"}, ["call_control_groups"]),
        ({"call_control_groups": "null"}, ["call_control_groups"]),
    ],
)
async def test_a_json_value_that_is_not_an_object_is_422(
    api: Harness, body: object, loc: list[object]
) -> None:
    response = await api.client.put(POLICY_URL, data=json.dumps(body), headers={**ADMIN, **JSON})
    assert response.status == 422
    error = await error_of(response)
    assert error["error"] == "not_an_object"
    details = error["details"]
    assert isinstance(details, list)
    assert [d["loc"] for d in details] == [loc]


@pytest.mark.parametrize(
    ("document", "loc", "named"),
    [
        ({"eavesdrp_100": ["support"]}, ["eavesdrp_100"], "eavesdrp_100"),
        ({"groups": {"sales": ["100", "101", "1 02"]}}, ["groups", "sales", 2], "1 02"),
        ({"pickup_share_groups": ["nope"]}, ["pickup_share_groups", 0], "nope"),
        (
            {"groups": {"support": ["100"]}, "whisper_101": ["support", "hr"]},
            ["whisper_101", 1],
            "hr",
        ),
        ({"allow_all": "yes"}, ["allow_all"], "allow_all"),
        ({"eavesdrop_1 00": []}, ["eavesdrop_1 00"], "eavesdrop_1 00"),
        ({"groups": {f"g{i}": [] for i in range(101)}}, ["groups"], "100"),
        ({"groups": {"big": [str(i) for i in range(201)]}}, ["groups", "big"], "200"),
    ],
    ids=[
        "typo-key",
        "bad-ext",
        "missing-share",
        "missing-whisper",
        "not-bool",
        "bad-key-ext",
        "too-many-groups",
        "too-big-group",
    ],
)
async def test_an_invalid_document_is_422_with_located_details(
    api: Harness, document: dict[str, object], loc: list[object], named: str
) -> None:
    for body in (document, {"call_control_groups": json.dumps(document)}):
        response = await api.client.put(POLICY_URL, json=body, headers=ADMIN)
        assert response.status == 422
        error = await error_of(response)
        assert error["error"] == "invalid_policy"
        details = error["details"]
        assert isinstance(details, list)
        assert loc in [d["loc"] for d in details]
        assert any(named in d["message"] for d in details)
    assert (await api.client.get(POLICY_URL, headers=ADMIN)).headers["ETag"] == '"0"'


async def test_several_errors_are_all_reported(api: Harness) -> None:
    document = {"allow_all": 1, "groups": {"a": ["ok", "not ok"]}, "phone_replace_groups": ["b"]}
    response = await api.client.put(POLICY_URL, json=document, headers=ADMIN)
    details = (await error_of(response))["details"]
    assert isinstance(details, list)
    locs = [d["loc"] for d in details]
    assert ["allow_all"] in locs
    assert ["groups", "a", 1] in locs


async def test_a_body_over_2_mib_is_413(api: Harness) -> None:
    big = {"groups": {"g": ["1" * 32] * 70_000}}  # about 2.5 MB of JSON
    data = io.BytesIO(json.dumps(big).encode())
    response = await api.client.put(POLICY_URL, data=data, headers={**ADMIN, **JSON})
    assert response.status == 413
    assert (await error_of(response))["error"] == "payload_too_large"


async def test_a_body_just_under_2_mib_is_read(api: Harness) -> None:
    padding = " " * (2 * 1024 * 1024 - 100)
    data = io.BytesIO((padding + "{}").encode())
    response = await api.client.put(POLICY_URL, data=data, headers={**ADMIN, **JSON})
    assert response.status == 200


async def test_unknown_routes_are_json_404(api: Harness) -> None:
    for path in ("/nope", "/client/acme/call_control_groups/", "/client/acme"):
        response = await api.client.get(path, headers=ADMIN)
        assert response.status == 404
        assert (await error_of(response))["error"] == "not_found"


async def test_a_wrong_method_is_json_405(api: Harness) -> None:
    response = await api.client.post(POLICY_URL, json={}, headers=ADMIN)
    assert response.status == 405
    assert (await error_of(response))["error"] == "method_not_allowed"
    assert "PUT" in response.headers["Allow"]


@pytest.mark.parametrize("client_id", ["bad id", "a" * 65, "é", "a:b"])
async def test_an_invalid_client_id_is_422(api: Harness, client_id: str) -> None:
    from urllib.parse import quote

    url = f"/client/{quote(client_id)}/call_control_group/"
    for method in ("GET", "PUT", "DELETE"):
        response = await api.client.request(method, url, json={}, headers=ADMIN)
        assert response.status == 422
        error = await error_of(response)
        assert error["error"] == "invalid_client_id"
        assert error["details"] == [
            {"loc": ["path", "client_id"], "message": f"{client_id!r} is not a valid client id"}
        ]


async def test_clients_are_independent(api: Harness) -> None:
    await api.client.put(POLICY_URL, json={"allow_all": True}, headers=ADMIN)
    other = await api.client.get("/client/globex/call_control_group/", headers=ADMIN)
    assert other.headers["ETag"] == '"0"'
    assert (await other.json())["allow_all"] is False


async def test_unexpected_errors_are_a_json_500_and_logged(
    api: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(client_id: str) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(api.store.policies, "current_json", explode)
    response = await api.client.get(POLICY_URL, headers=ADMIN)
    assert response.status == 500
    assert (await error_of(response))["error"] == "internal_error"
    assert "boom" in caplog.text
    assert "Traceback" in caplog.text


async def test_a_store_failure_is_a_json_503(api: Harness) -> None:
    await api.store.db.close()
    response = await api.client.put(POLICY_URL, json={}, headers=ADMIN)
    assert response.status == 503
    assert (await error_of(response))["error"] == "unavailable"
