"""The phone-replace HTTP routes on the real application and store, over loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from callgate.http.app import HttpDeps, build_app
from callgate.metrics import Metrics
from callgate.registry import PolicyRegistry
from callgate.replace.service import ReplaceService
from callgate.store import Store, open_store
from callgate.store.replace import Replacement
from reference_policy import REFERENCE_DOCUMENT
from support import sqlite_file
from wiring import app_services

from .conftest import (
    CLIENT,
    Clock,
    FakeAstDb,
    FakeAudit,
    make_service,
)
from .conftest import client_policy as make_policy

JSON = {"Content-Type": "application/json"}  # every body must say it is JSON (415)

ADMIN_TOKEN = "admin-token-for-replace-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PIN_URL = f"/client/{CLIENT}/extension/101/replace_pin"
LIST_URL = f"/client/{CLIENT}/replacements"


@dataclass
class Http:
    client: TestClient[object, object]
    store: Store
    service: ReplaceService
    manager: FakeAstDb
    audit: FakeAudit


def build(store: Store, registry: PolicyRegistry, service: ReplaceService) -> TestServer:
    app = build_app(HttpDeps(app_services(store, registry, service), Metrics(), ADMIN_TOKEN))
    return TestServer(app, host="127.0.0.1")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(str(tmp_path / "callgate.sqlite3"))
    yield store
    await store.close()


@pytest.fixture
async def http(store: Store, clock: Clock) -> AsyncIterator[Http]:
    registry = PolicyRegistry()
    registry.load(make_policy(REFERENCE_DOCUMENT, 1))
    manager, audit = FakeAstDb(), FakeAudit()
    service = make_service(store.replace, registry, audit, lambda _pbx=None: manager, clock)
    client: TestClient[object, object] = TestClient(build(store, registry, service))
    await client.start_server()
    yield Http(client, store, service, manager, audit)
    await client.close()


async def client_token(http: Http, client_id: str) -> dict[str, str]:
    resp = await http.client.post(
        "/tokens", json={"name": f"t-{client_id}", "client_id": client_id}, headers=ADMIN
    )
    assert resp.status == 201
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def test_put_pin_stores_a_hash_only(http: Http, tmp_path: Path) -> None:
    resp = await http.client.put(PIN_URL, json={"pin": "0042"}, headers=ADMIN)
    assert resp.status == 204
    assert await resp.read() == b""
    encoded = await http.store.replace.pin_hash(CLIENT, "101")
    assert encoded is not None
    assert encoded.startswith("scrypt$")
    with sqlite_file(tmp_path / "callgate.sqlite3") as conn:
        dump = "\n".join(conn.iterdump())
    assert "0042" not in dump.replace(encoded, "")
    # replacing the PIN works the same way
    assert (
        await http.client.put(PIN_URL, json={"pin": "123456789012"}, headers=ADMIN)
    ).status == 204


@pytest.mark.parametrize(
    "body",
    [
        {"pin": 1234},  # not a string
        {"pin": "123"},  # 3 digits
        {"pin": "1234567890123"},  # 13 digits
        {"pin": "12ab"},  # letters
        {"pin": "abcd"},
        {"pin": "12 34"},
        {"pin": None},
        {"pin": ["1234"]},
        {"pin": "1234", "ext": "101"},  # nothing else in the body
        {},
        [],
        "1234",
        1234,
        None,
    ],
)
async def test_anything_but_a_pin_is_422(http: Http, body: object) -> None:
    resp = await http.client.put(PIN_URL, data=json.dumps(body), headers={**ADMIN, **JSON})
    assert resp.status == 422
    error = await resp.json()
    assert error["error"] == "invalid_pin"
    assert "1234" not in await resp.text()
    assert await http.store.replace.pin_hash(CLIENT, "101") is None


async def test_malformed_json_is_400_and_a_bad_extension_422(http: Http) -> None:
    resp = await http.client.put(PIN_URL, data=b'{"pin": "1234"', headers={**ADMIN, **JSON})
    assert resp.status == 400
    url = f"/client/{CLIENT}/extension/{'9' * 33}/replace_pin"
    resp = await http.client.put(url, json={"pin": "1234"}, headers=ADMIN)
    assert resp.status == 422
    assert (await resp.json())["error"] == "invalid_extension"


async def test_delete_pin(http: Http) -> None:
    assert (await http.client.put(PIN_URL, json={"pin": "1234"}, headers=ADMIN)).status == 204
    assert (await http.client.delete(PIN_URL, headers=ADMIN)).status == 204
    assert await http.store.replace.pin_hash(CLIENT, "101") is None
    resp = await http.client.delete(PIN_URL, headers=ADMIN)
    assert resp.status == 404
    assert (await resp.json())["error"] == "no_replace_pin"


async def test_list_and_restore_replacements(http: Http, clock: Clock) -> None:
    resp = await http.client.get(LIST_URL, headers=ADMIN)
    assert resp.status == 200
    assert await resp.json() == {"replacements": []}

    await http.store.replace.start_replacement(Replacement(CLIENT, "100", "100", "101", clock()))
    resp = await http.client.get(LIST_URL, headers=ADMIN)
    assert await resp.json() == {
        "replacements": [
            {"phone": "100", "from_ext": "100", "to_ext": "101", "since": clock().isoformat()}
        ]
    }

    resp = await http.client.delete(f"{LIST_URL}/100", headers=ADMIN)
    assert resp.status == 204
    assert list(await http.store.replace.replacements(CLIENT)) == []
    # restored in Asterisk too, through the Manager connection
    assert http.manager.ops == [
        ("del", "callgate/acme/acting/100"),
        ("del", "callgate/acme/device/101"),
    ]
    (event,) = http.audit.events
    assert http.audit.facts(event)["end_reason"] == "api"

    resp = await http.client.delete(f"{LIST_URL}/100", headers=ADMIN)
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_replaced"


async def test_auth(http: Http) -> None:
    acme = await client_token(http, CLIENT)
    other = await client_token(http, "globex")
    body = {"pin": "1234"}
    assert (await http.client.put(PIN_URL, json=body)).status == 401
    assert (
        await http.client.put(PIN_URL, json=body, headers={"Authorization": "Bearer x"})
    ).status == 401
    assert (await http.client.put(PIN_URL, json=body, headers=acme)).status == 204
    assert (await http.client.put(PIN_URL, json=body, headers=other)).status == 403
    assert (await http.client.delete(PIN_URL, headers=other)).status == 403
    assert (await http.client.get(LIST_URL, headers=other)).status == 403
    assert (await http.client.delete(f"{LIST_URL}/100", headers=other)).status == 403
    assert (await http.client.get(LIST_URL)).status == 401
    assert (await http.client.get(LIST_URL, headers=acme)).status == 200
    assert (await http.client.delete(PIN_URL, headers=acme)).status == 204
    # the globex token is fine on globex
    url = "/client/globex/extension/101/replace_pin"
    assert (await http.client.put(url, json=body, headers=other)).status == 204


async def test_openapi_describes_the_routes(http: Http) -> None:
    spec = await (await http.client.get("/openapi.json")).json()
    pin = spec["paths"]["/client/{client_id}/extension/{ext}/replace_pin"]
    assert set(pin) == {"put", "delete"}
    assert set(pin["put"]["responses"]) >= {"204", "400", "401", "403", "422"}
    assert spec["components"]["schemas"]["ReplacePin"]["properties"]["pin"]["pattern"] == (
        "^[0-9]{4,12}$"
    )
    assert "get" in spec["paths"]["/client/{client_id}/replacements"]
    assert "delete" in spec["paths"]["/client/{client_id}/replacements/{phone}"]
