"""Request bodies: 415 unless sent as JSON, 422 ``duplicate_key`` for a key given twice, in every
JSON body of the API and every form of the policy body; nothing is stored after either."""

from __future__ import annotations

import io
import json

import pytest
from aiohttp import ClientResponse

from callgate.http.body import is_json_media_type, parse_json
from callgate.http.errors import ApiError

from .http_support import ADMIN, POLICY_URL, Harness

PIN_URL = "/client/acme/extension/101/replace_pin"
TOKEN_BODY = b'{"name": "ops", "client_id": "acme"}'
BODY_ROUTES = [
    ("PUT", POLICY_URL, b'{"allow_all": true}'),
    ("POST", "/tokens", TOKEN_BODY),
    ("PUT", PIN_URL, b'{"pin": "1234"}'),
]
NOT_JSON = [
    None,
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "application/octet-stream",
    "multipart/form-data; boundary=x",
    "text/json",
    "application/jsonx",
    "application/json+xml",
    "application/+json",
    "json",
    "",
    "application/json; charset=iso-8859-1",
    "application/json; charset=utf-16",
]
JSON_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    'application/json;charset="UTF-8"',
    "Application/JSON; Charset=UTF-8",
    "application/merge-patch+json",
    "application/vnd.callgate.policy+json; charset=utf-8",
]


def headers(content_type: str | None) -> dict[str, str]:
    return {**ADMIN, **({} if content_type is None else {"Content-Type": content_type})}


async def send(
    api: Harness, method: str, url: str, body: bytes | io.BytesIO, content_type: str | None
) -> ClientResponse:
    # No Content-Type at all needs aiohttp's own default (octet-stream for bytes) switched off.
    skip = ["Content-Type"] if content_type is None else []
    return await api.client.request(
        method, url, data=body, headers=headers(content_type), skip_auto_headers=skip
    )


async def nothing_stored(api: Harness) -> None:
    assert (await api.client.get(POLICY_URL, headers=ADMIN)).headers["ETag"] == '"0"'
    assert (await (await api.client.get("/tokens", headers=ADMIN)).json())["tokens"] == []


# -- 415 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", NOT_JSON)
@pytest.mark.parametrize(("method", "url", "body"), BODY_ROUTES, ids=["policy", "token", "pin"])
async def test_a_body_not_sent_as_json_is_415(
    api: Harness, method: str, url: str, body: bytes, content_type: str | None
) -> None:
    response = await send(api, method, url, body, content_type)
    assert response.status == 415
    error = await response.json()
    assert error["error"] == "unsupported_media_type"
    assert "Content-Type: application/json" in error["message"]
    assert error["details"] == [
        {
            "loc": ["header", "Content-Type"],
            "message": "expected application/json or application/<type>+json",
        }
    ]
    await nothing_stored(api)


@pytest.mark.parametrize("content_type", JSON_TYPES)
async def test_json_media_types_with_parameters_are_read(api: Harness, content_type: str) -> None:
    response = await send(api, "PUT", POLICY_URL, b'{"allow_all": true}', content_type)
    assert response.status == 200
    assert (await response.json())["allow_all"] is True
    response = await send(api, "PUT", PIN_URL, b'{"pin": "12"}', content_type)
    assert response.status == 422  # read as JSON, judged as a PIN


@pytest.mark.parametrize("content_type", NOT_JSON)
def test_is_json_media_type_refuses(content_type: str | None) -> None:
    assert not is_json_media_type(content_type)


async def test_the_media_type_is_checked_before_the_body_is_read(api: Harness) -> None:
    big = io.BytesIO(b"x" * (3 * 1024 * 1024))  # over 2 MiB: reading it would answer 413
    response = await send(api, "PUT", POLICY_URL, big, "text/plain")
    assert response.status == 415


async def test_an_unauthenticated_body_is_401_before_its_type_is_judged(api: Harness) -> None:
    response = await api.client.put(POLICY_URL, data=b"{}", headers={"Content-Type": "text/plain"})
    assert response.status == 401


# -- duplicate keys --------------------------------------------------------------------------------

DUP = '{"allow_all": false, "allow_all": true}'
DUP_GROUP = '{"groups": {"a": ["100"], "b": ["101"], "a": ["102"]}}'
DUP_GRANT = '{"groups": {"a": ["100"]}, "eavesdrop_1": ["a"], "eavesdrop_1": []}'
DUP_TWO = '{"pickup_all": true, "allow_all": false, "pickup_all": false, "allow_all": true}'


def string_form(document: str) -> str:
    return json.dumps({"call_control_groups": document})


POLICY_DUPLICATES = [
    # (body as sent, the locations of the repeated keys)
    (DUP, [["allow_all"]]),
    (f'{{"call_control_groups": {DUP}}}', [["call_control_groups", "allow_all"]]),
    (string_form(DUP), [["call_control_groups", "allow_all"]]),
    (DUP_GROUP, [["groups", "a"]]),
    (f'{{"call_control_groups": {DUP_GROUP}}}', [["call_control_groups", "groups", "a"]]),
    (string_form(DUP_GROUP), [["call_control_groups", "groups", "a"]]),
    (DUP_GRANT, [["eavesdrop_1"]]),
    (string_form(DUP_GRANT), [["call_control_groups", "eavesdrop_1"]]),
    (DUP_TWO, [["pickup_all"], ["allow_all"]]),
    (
        '{"call_control_groups": {}, "call_control_groups": {"allow_all": true}}',
        [["call_control_groups"]],
    ),
    ('{"call_control_groups": "{}", "call_control_groups": "{}"}', [["call_control_groups"]]),
    # an inner repeat inside a value that is itself repeated: the outer key is the one to fix
    ('{"groups": {"a": [], "a": []}, "groups": {}}', [["groups"]]),
]


@pytest.mark.parametrize(("body", "locs"), POLICY_DUPLICATES)
async def test_a_repeated_key_in_any_policy_body_form_is_422(
    api: Harness, body: str, locs: list[list[object]]
) -> None:
    response = await send(api, "PUT", POLICY_URL, body.encode(), "application/json")
    assert response.status == 422
    error = await response.json()
    assert error["error"] == "duplicate_key"
    assert [d["loc"] for d in error["details"]] == locs
    for detail, loc in zip(error["details"], locs, strict=True):
        assert f"Key {loc[-1]!r} is given more than once" in detail["message"]
    await nothing_stored(api)


@pytest.mark.parametrize(
    ("method", "url", "body", "loc"),
    [
        ("POST", "/tokens", '{"name": "a", "client_id": "acme", "name": "admin"}', ["name"]),
        ("POST", "/tokens", '{"name": "a", "client_id": "x", "client_id": "acme"}', ["client_id"]),
        ("PUT", PIN_URL, '{"pin": "1234", "pin": "5678"}', ["pin"]),
    ],
    ids=["token-name", "token-client", "pin"],
)
async def test_a_repeated_key_in_the_other_bodies_is_422(
    api: Harness, method: str, url: str, body: str, loc: list[object]
) -> None:
    response = await send(api, method, url, body.encode(), "application/json")
    assert response.status == 422
    error = await response.json()
    assert error["error"] == "duplicate_key"
    assert [d["loc"] for d in error["details"]] == [loc]
    assert "5678" not in await response.text()  # values are never echoed (a PIN may be one)
    await nothing_stored(api)


async def test_malformed_json_is_still_400_when_it_also_repeats_a_key(api: Harness) -> None:
    body = b'{"allow_all": true, "allow_all": tru}'
    response = await send(api, "PUT", POLICY_URL, body, "application/json")
    assert response.status == 400
    assert (await response.json())["error"] == "malformed_json"


@pytest.mark.parametrize(
    ("raw", "locs"),
    [
        ('[{"a": 1}, {"b": [{"c": 1, "c": 2}]}]', [[1, "b", 0, "c"]]),
        ('{"a": {"x": 1, "x": 2}, "b": {"y": 1, "y": 2}}', [["a", "x"], ["b", "y"]]),
        ('{"": 1, "": 2}', [[""]]),
        ('{"a": 1, "a": 2, "a": 3}', [["a"]]),
    ],
)
def test_parse_json_locates_every_repeated_key_in_document_order(
    raw: str, locs: list[list[object]]
) -> None:
    with pytest.raises(ApiError) as caught:
        parse_json(raw, "request body")
    assert (caught.value.status, caught.value.code) == (422, "duplicate_key")
    assert [d["loc"] for d in caught.value.details] == locs


def test_parse_json_keeps_equal_keys_in_different_objects() -> None:
    assert parse_json('[{"a": 1}, {"a": 2}, {"a": {"a": 3}}]', "body") == [
        {"a": 1},
        {"a": 2},
        {"a": {"a": 3}},
    ]


async def test_openapi_documents_415_and_422_on_every_body(api: Harness) -> None:
    document = await (await api.client.get("/openapi.json")).json()
    with_body = [
        (path, method, op)
        for path, methods in document["paths"].items()
        for method, op in methods.items()
        if "requestBody" in op
    ]
    assert len(with_body) >= 3
    for path, method, op in with_body:
        for status in ("400", "413", "415", "422"):
            assert status in op["responses"], (method, path, status)
    assert "Content-Type: application/json" in document["info"]["description"]
