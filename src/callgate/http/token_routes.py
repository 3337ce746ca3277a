"""``/tokens``: client-scoped API tokens, managed by the admin only.

The token value is returned once, by ``POST``; only its hash is stored.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from callgate.domain import TokenExistsError, TokenInfo
from callgate.http.api import TOKENS, Api
from callgate.http.auth import Access
from callgate.http.body import read_json
from callgate.http.errors import ApiError, JsonDetail, not_found, unprocessable
from callgate.http.openapi import JsonObject, error_response, json_response, ref, type_schema
from callgate.policy import is_valid_client_id
from callgate.policy.syntax import (
    CLIENT_ID_PATTERN,
    CLIENT_ID_RULE,
    TOKEN_NAME_PATTERN,
    TOKEN_NAME_RULE,
    is_valid_token_name,
)


def _token_json(info: TokenInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "client_id": info.client_id,
        "created_at": info.created_at.isoformat(),
    }


def _parse_new_token(data: object) -> tuple[str, str]:
    if not isinstance(data, dict):
        raise unprocessable(
            "invalid_token_request",
            'Send {"name": "...", "client_id": "..."}.',
            [{"loc": [], "message": "expected a JSON object"}],
        )
    errors: list[JsonDetail] = [
        {"loc": [key], "message": f"unknown field {key!r}"}
        for key in data
        if key not in ("name", "client_id")
    ]
    name, client_id = data.get("name"), data.get("client_id")
    if not isinstance(name, str) or not is_valid_token_name(name):
        errors.append({"loc": ["name"], "message": f"a token name is {TOKEN_NAME_RULE}"})
    if not isinstance(client_id, str) or not is_valid_client_id(client_id):
        errors.append({"loc": ["client_id"], "message": f"a client id is {CLIENT_ID_RULE}"})
    if errors:
        raise unprocessable("invalid_token_request", "The token request is not valid.", errors)
    assert isinstance(name, str)
    assert isinstance(client_id, str)
    return name, client_id


async def create_token(request: web.Request) -> web.Response:
    name, client_id = _parse_new_token(await read_json(request))
    try:
        info, token = await request.app[TOKENS].create(name, client_id)
    except TokenExistsError:
        message = f"A token named {name!r} exists: delete it first."
        raise ApiError(409, "token_exists", message) from None
    return web.json_response({**_token_json(info), "token": token}, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    tokens = await request.app[TOKENS].list()
    return web.json_response({"tokens": [_token_json(t) for t in tokens]})


async def delete_token(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not await request.app[TOKENS].revoke(name):
        raise not_found("token_not_found", f"No token is named {name!r}.")
    return web.Response(status=204)


# The published schema of the body, which _parse_new_token reads (naming each field's mistake).
class TokenRequest(BaseModel):
    """A new token's name and the one client it may act on."""

    # The name's pattern refuses the reserved names with a look-ahead: Python's engine has it.
    model_config = ConfigDict(extra="forbid", title="TokenRequest", regex_engine="python-re")

    name: Annotated[str, Field(pattern=TOKEN_NAME_PATTERN, description=TOKEN_NAME_RULE)]
    client_id: Annotated[str, Field(pattern=CLIENT_ID_PATTERN, description=CLIENT_ID_RULE)]


def _new_token_schema(info: JsonObject) -> JsonObject:
    """``TokenInfo`` and the token itself, as ``create_token`` answers."""
    properties = info["properties"]
    required = info["required"]
    assert isinstance(properties, dict)
    assert isinstance(required, list)
    token = {"type": "string", "description": "shown once; only its hash is stored"}
    return {
        **info,
        "title": "NewToken",
        "required": [*required, "token"],
        "properties": {**properties, "token": token},
    }


def register(api: Api) -> None:
    spec = api.openapi
    spec.add_tag("tokens", "Client-scoped API tokens (admin only)")
    token_info, _ = type_schema(TokenInfo, "serialization")
    spec.add_schema("TokenInfo", token_info)
    spec.add_schema("NewToken", _new_token_schema(token_info))
    spec.add_type("TokenRequest", TokenRequest)
    api.route(
        "POST",
        "/tokens",
        create_token,
        access=Access.ADMIN,
        operation={
            "operationId": "createToken",
            "tags": ["tokens"],
            "summary": "Create a token for one client; the token is shown once",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("TokenRequest")}},
            },
            "responses": {
                "201": json_response("Created", ref("NewToken")),
                "400": error_response(400),
                "409": error_response(409, "A token with that name exists"),
                "413": error_response(413),
                "422": error_response(422),
            },
        },
    )
    api.route(
        "GET",
        "/tokens",
        list_tokens,
        access=Access.ADMIN,
        operation={
            "operationId": "listTokens",
            "tags": ["tokens"],
            "summary": "Every token's name and client (never the token)",
            "responses": {
                "200": json_response(
                    "The tokens",
                    {
                        "type": "object",
                        "required": ["tokens"],
                        "properties": {"tokens": {"type": "array", "items": ref("TokenInfo")}},
                    },
                )
            },
        },
    )
    api.route(
        "DELETE",
        "/tokens/{name}",
        delete_token,
        access=Access.ADMIN,
        operation={
            "operationId": "deleteToken",
            "tags": ["tokens"],
            "summary": "Revoke a token (effective on the next request)",
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "204": {"description": "Deleted"},
                "404": error_response(404, "No token by that name"),
            },
        },
    )
