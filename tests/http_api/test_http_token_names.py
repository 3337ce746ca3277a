"""Token names that read as ``admin`` are reserved in any case, in the API, its OpenAPI
description and the store itself."""

from __future__ import annotations

import re

import pytest

from callgate.store import Store

from .http_support import ADMIN, Harness

# Non-ASCII look-alikes (dotted capital I, dotless i, fullwidth a) fail the ASCII name rule.
RESERVED = ["admin", "Admin", "ADMIN", "aDmIn", "ADM\u0130N", "adm\u0131n", "\uff41dmin"]
ALLOWED = ["admin2", "administrator", "my-admin", "ops"]


@pytest.mark.parametrize("name", RESERVED)
async def test_admin_in_any_case_is_refused(api: Harness, name: str) -> None:
    response = await api.client.post(
        "/tokens", json={"name": name, "client_id": "acme"}, headers=ADMIN
    )
    assert response.status == 422
    error = await response.json()
    assert error["error"] == "invalid_token_request"
    assert [d["loc"] for d in error["details"]] == [["name"]]
    assert "not 'admin' in any case" in error["details"][0]["message"]
    assert (await (await api.client.get("/tokens", headers=ADMIN)).json())["tokens"] == []


@pytest.mark.parametrize("name", ALLOWED)
async def test_names_that_only_contain_admin_are_allowed(api: Harness, name: str) -> None:
    response = await api.client.post(
        "/tokens", json={"name": name, "client_id": "acme"}, headers=ADMIN
    )
    assert response.status == 201


@pytest.mark.parametrize("name", ["Admin", "ADMIN", "admin", "a b"])
async def test_the_store_refuses_them_too(store: Store, name: str) -> None:
    with pytest.raises(ValueError, match="not a valid token name"):
        await store.tokens.create(name, "acme")
    assert await store.tokens.list() == []


async def test_the_published_pattern_says_the_same(api: Harness) -> None:
    document = await (await api.client.get("/openapi.json")).json()
    pattern = document["components"]["schemas"]["TokenRequest"]["properties"]["name"]["pattern"]
    for name in RESERVED:
        assert re.search(pattern, name) is None, name
    for name in ALLOWED:
        assert re.search(pattern, name) is not None, name
