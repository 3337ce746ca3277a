"""HTTP routes of phone replace: an extension's replace PIN, and the replacements in force.

- ``PUT    /client/{client_id}/extension/{ext}/replace_pin``  ``{"pin": "<4-12 digits>"}`` -> 204
  (429 ``rate_limited`` with ``Retry-After`` when the client is over its PIN write limits)
- ``DELETE /client/{client_id}/extension/{ext}/replace_pin``  -> 204 (404 when none was set)
- ``GET    /client/{client_id}/replacements``                 -> ``{"replacements": [...]}``
- ``DELETE /client/{client_id}/replacements/{phone}``         -> 204 restored (404 when none)

The PIN goes one way only: it is hashed on arrival and never appears in a response, an error
message or a log line (an error names the field, never its value).
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from callgate.domain import Replacement
from callgate.http.api import REPLACE, Api
from callgate.http.auth import Access
from callgate.http.body import read_json
from callgate.http.errors import ApiError, JsonDetail, not_found, unprocessable
from callgate.http.openapi import EXTENSION_SCHEMA, JsonObject, error_response, json_response, ref
from callgate.policy import is_valid_extension
from callgate.policy.syntax import EXTENSION_RULE, PIN_PATTERN, PIN_RULE
from callgate.replace.limits import PinLimit, PinWritesRefused
from callgate.replace.pins import PinFormatError, check_pin

_PIN_MESSAGE = f'The body must be {{"pin": "<{PIN_RULE}>"}} and nothing else.'
_TAG = "phone replace"


# The published schema of the body, which _read_pin reads (never naming a value back).
class ReplacePin(BaseModel):
    """An extension's new replace PIN (write-only: it is never returned)."""

    model_config = ConfigDict(extra="forbid", title="ReplacePin")

    pin: Annotated[
        str,
        Field(
            pattern=PIN_PATTERN,
            description=f"{PIN_RULE} (a JSON number would lose leading zeros)",
            json_schema_extra={"writeOnly": True},
        ),
    ]


_REPLACEMENT: JsonObject = {
    "type": "object",
    "required": ["phone", "from_ext", "to_ext", "since"],
    "properties": {
        "phone": {"type": "string", "description": "the phone's own extension"},
        "from_ext": {"type": "string", "description": "the extension it acted as when it asked"},
        "to_ext": {"type": "string", "description": "the extension it acts as now"},
        "since": {"type": "string", "format": "date-time"},
    },
}
_REPLACEMENTS: JsonObject = {
    "type": "object",
    "required": ["replacements"],
    "properties": {"replacements": {"type": "array", "items": ref("Replacement")}},
}


def replacement_json(replacement: Replacement) -> dict[str, str]:
    """A replacement as the API shows it (the ``Replacement`` schema)."""
    return {
        "phone": replacement.phone,
        "from_ext": replacement.from_ext,
        "to_ext": replacement.to_ext,
        "since": replacement.since.isoformat(),
    }


def _extension(request: web.Request, name: str) -> str:
    ext = request.match_info[name]
    if not is_valid_extension(ext):
        raise unprocessable(
            "invalid_extension",
            f"An extension is {EXTENSION_RULE}",
            [{"loc": ["path", name], "message": "not a valid extension"}],
        )
    return ext


async def _read_pin(request: web.Request) -> str:
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) != {"pin"}:
        # Other keys are not named back: a PIN typed in the wrong place must not be echoed.
        details: list[JsonDetail] = []
        if isinstance(body, dict) and set(body) - {"pin"}:
            details.append({"loc": ["body"], "message": 'no field other than "pin" is allowed'})
        if not isinstance(body, dict) or "pin" not in body:
            details.append({"loc": ["body", "pin"], "message": "required"})
        raise unprocessable("invalid_pin", _PIN_MESSAGE, details)
    try:
        return check_pin(body["pin"])
    except PinFormatError as exc:
        # the message describes the format; the value itself is never echoed
        raise unprocessable(
            "invalid_pin", _PIN_MESSAGE, [{"loc": ["body", "pin"], "message": str(exc)}]
        ) from None


async def put_pin(request: web.Request) -> web.StreamResponse:
    client_id = request.match_info["client_id"]
    ext = _extension(request, "ext")
    pin = await _read_pin(request)
    try:
        await request.app[REPLACE].set_pin(client_id, ext, pin)
    except PinWritesRefused as exc:
        raise _too_many(exc) from None
    return web.Response(status=204)


def _too_many(exc: PinWritesRefused) -> ApiError:
    what = {
        PinLimit.RATE: "too many PIN writes per second",
        PinLimit.CONCURRENCY: "too many PIN writes in progress at once",
    }[exc.limit]
    return ApiError(
        429,
        "rate_limited",
        f"Client {exc.client_id} made {what}; retry after {exc.retry_after} s.",
        [{"limit": f"pin_write_{exc.limit}", "retry_after": exc.retry_after}],
        headers=[("Retry-After", str(exc.retry_after))],
    )


async def delete_pin(request: web.Request) -> web.StreamResponse:
    client_id = request.match_info["client_id"]
    ext = _extension(request, "ext")
    if not await request.app[REPLACE].delete_pin(client_id, ext):
        raise not_found("no_replace_pin", f"Extension {ext} has no replace PIN.")
    return web.Response(status=204)


async def list_replacements(request: web.Request) -> web.StreamResponse:
    client_id = request.match_info["client_id"]
    current = await request.app[REPLACE].replacements(client_id)
    return web.json_response({"replacements": [replacement_json(r) for r in current]})


async def restore_replacement(request: web.Request) -> web.StreamResponse:
    client_id = request.match_info["client_id"]
    phone = _extension(request, "phone")
    if await request.app[REPLACE].restore_phone(client_id, phone) is None:
        raise not_found("not_replaced", f"Phone {phone} is not acting as another extension.")
    return web.Response(status=204)


def _not_found(description: str) -> JsonObject:
    return error_response(404, description)


def register(api: Api) -> None:
    api.openapi.add_tag(_TAG, "Replace PINs and the phones acting as another extension")
    api.openapi.add_path_param("ext", EXTENSION_SCHEMA)
    api.openapi.add_path_param("phone", {**EXTENSION_SCHEMA, "description": "own extension"})
    api.openapi.add_type("ReplacePin", ReplacePin)
    api.openapi.add_schema("Replacement", _REPLACEMENT)
    api.openapi.add_schema("Replacements", _REPLACEMENTS)
    pin_path = "/client/{client_id}/extension/{ext}/replace_pin"
    api.route(
        "PUT",
        pin_path,
        put_pin,
        access=Access.CLIENT,
        operation={
            "operationId": "setReplacePin",
            "summary": "Set an extension's replace PIN (stored hashed, never returned)",
            "tags": [_TAG],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("ReplacePin")}},
            },
            "responses": {
                "204": {"description": "PIN set"},
                "400": error_response(400, "The body is not JSON"),
                "413": error_response(413),
                "422": error_response(422, f'Not {{"pin": "<{PIN_RULE}>"}}, or a bad ext'),
                "429": {
                    **error_response(
                        429,
                        "The client is over its PIN write limits (a rate, and a number in"
                        " progress at once): try again after Retry-After seconds",
                    ),
                    "headers": {
                        "Retry-After": {
                            "description": "seconds to wait before the next PIN write",
                            "schema": {"type": "integer", "minimum": 1},
                        }
                    },
                },
            },
        },
    )
    api.route(
        "DELETE",
        pin_path,
        delete_pin,
        access=Access.CLIENT,
        operation={
            "operationId": "deleteReplacePin",
            "summary": "Remove an extension's replace PIN (nobody can replace it then)",
            "tags": [_TAG],
            "responses": {
                "204": {"description": "PIN removed"},
                "404": _not_found("The extension has no replace PIN"),
            },
        },
    )
    api.route(
        "GET",
        "/client/{client_id}/replacements",
        list_replacements,
        access=Access.CLIENT,
        operation={
            "operationId": "listReplacements",
            "summary": "Phones acting as another extension",
            "tags": [_TAG],
            "responses": {"200": json_response("The replacements in force", ref("Replacements"))},
        },
    )
    api.route(
        "DELETE",
        "/client/{client_id}/replacements/{phone}",
        restore_replacement,
        access=Access.CLIENT,
        operation={
            "operationId": "restoreReplacement",
            "summary": "Send a phone back to its own extension (store and AstDB)",
            "tags": [_TAG],
            "responses": {
                "204": {"description": "Restored"},
                "404": _not_found("The phone is not acting as another extension"),
            },
        },
    )
