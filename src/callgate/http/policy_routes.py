"""``/client/{client_id}/call_control_group/``: the policy, its history, and the check.

A write is stored durably first (the store commits before returning), then published to the
registry, and only then answered: the next FastAGI request, and the next ``check``, decide by it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from aiohttp import web

from callgate.http.api import REGISTRY, STORE, Api, principal
from callgate.http.auth import Access
from callgate.http.body import parse_json, read_json
from callgate.http.errors import ApiError, JsonDetail, unprocessable
from callgate.http.openapi import (
    EXTENSION_PATTERN,
    JsonObject,
    error_response,
    json_response,
    ref,
)
from callgate.policy import (
    Action,
    PolicyDocument,
    PolicyValidationError,
    compile_policy,
    decide,
    parse_document,
)
from callgate.registry import ClientPolicy
from callgate.store import StoredPolicy, VersionConflictError

log = logging.getLogger(__name__)

BASE = "/client/{client_id}/call_control_group/"
WRAPPER_KEY = "call_control_groups"


# --- reading a request -------------------------------------------------------------------------


def _not_object(loc: list[str | int], value: object) -> ApiError:
    kind = type(value).__name__ if value is not None else "null"
    return unprocessable(
        "not_an_object",
        "The policy document must be a JSON object.",
        [{"loc": loc, "message": f"expected a JSON object, got {kind}"}],
    )


def document_from_body(data: object) -> PolicyDocument:
    """Accept the document itself, ``{"call_control_groups": <doc>}`` or its string form."""
    if not isinstance(data, dict):
        raise _not_object([], data)
    if data.keys() == {WRAPPER_KEY}:
        inner = data[WRAPPER_KEY]
        if isinstance(inner, str):
            inner = parse_json(inner, f"{WRAPPER_KEY} string", at=(WRAPPER_KEY,))
        if not isinstance(inner, dict):
            raise _not_object([WRAPPER_KEY], inner)
        data = inner
    try:
        return parse_document(data)
    except PolicyValidationError as exc:
        details: list[JsonDetail] = [dict(issue.to_json()) for issue in exc.errors]
        raise unprocessable(
            "invalid_policy",
            f"The policy document breaks {len(details)} rule(s) of policy.md; nothing was stored.",
            details,
        ) from None


def parse_if_match(header: str | None) -> frozenset[int] | None:
    """The versions an ``If-Match`` accepts; None when any is fine (absent or ``*``).

    Strong comparison (RFC 9110): a weak tag never matches, nor does anything but a quoted
    decimal version, so a malformed header gets 412 rather than a blind write.
    """
    if header is None:
        return None
    tags = [tag.strip() for tag in header.split(",")]
    if "*" in tags:
        return None
    versions = set()
    for tag in tags:
        inner = tag[1:-1] if len(tag) >= 2 and tag[0] == tag[-1] == '"' else ""
        if inner.isascii() and inner.isdigit() and len(inner) < 19:
            versions.add(int(inner))
    return frozenset(versions)


def etag(version: int) -> str:
    return f'"{version}"'


# --- handlers ----------------------------------------------------------------------------------


def _document_response(document: PolicyDocument, version: int) -> web.Response:
    return web.json_response(document.to_json(), headers={"ETag": etag(version)})


async def _store_and_publish(
    request: web.Request, document: PolicyDocument, if_version: Collection[int] | None
) -> StoredPolicy:
    client_id = request.match_info["client_id"]
    compiled = compile_policy(document)  # before storing: a stored version must compile
    try:
        stored = await request.app[STORE].policies.save(
            client_id, document, principal(request).name, if_version=if_version
        )
    except VersionConflictError as exc:
        raise ApiError(
            412,
            "precondition_failed",
            f"If-Match does not match: the current version is {exc.current}.",
            headers=[("ETag", etag(exc.current))],
        ) from None
    log.info("client %s: policy version %d by %s", client_id, stored.version, stored.changed_by)
    await request.app[REGISTRY].publish(
        ClientPolicy(
            client_id=client_id,
            version=stored.version,
            document=stored.document,
            compiled=compiled,
            changed_at=stored.changed_at,
            changed_by=stored.changed_by,
        )
    )
    return stored


async def put_policy(request: web.Request) -> web.Response:
    if_version = parse_if_match(request.headers.get("If-Match"))
    document = document_from_body(await read_json(request))
    stored = await _store_and_publish(request, document, if_version)
    return _document_response(stored.document, stored.version)


async def delete_policy(request: web.Request) -> web.Response:
    if_version = parse_if_match(request.headers.get("If-Match"))
    stored = await _store_and_publish(request, PolicyDocument(), if_version)
    return _document_response(stored.document, stored.version)


async def get_policy(request: web.Request) -> web.Response:
    stored = await request.app[STORE].policies.current(request.match_info["client_id"])
    if stored is None:
        return _document_response(PolicyDocument(), 0)
    return _document_response(stored.document, stored.version)


async def get_history(request: web.Request) -> web.Response:
    versions = await request.app[STORE].policies.history(request.match_info["client_id"])
    return web.json_response(
        {
            "versions": [
                {
                    "version": v.version,
                    "changed_at": v.changed_at.isoformat(),
                    "changed_by": v.changed_by,
                    "document": v.document.to_json(),
                }
                for v in versions
            ]
        }
    )


async def check(request: web.Request) -> web.Response:
    """What the FastAGI service would answer now, from the same registry it reads."""
    policy = request.app[REGISTRY].get(request.match_info["client_id"])
    action = request.query.get("action", "")
    decision = decide(
        policy.compiled,
        action,
        request.query.get("ext", ""),
        request.query.get("target") or None,
    )
    body: dict[str, object] = {**decision.to_json(), "policy_version": policy.version}
    if action == Action.REPLACE and decision.allowed:
        body["pin_required"] = True
    return web.json_response(body)


# --- OpenAPI -----------------------------------------------------------------------------------

_STRINGS: JsonObject = {"type": "array", "items": {"type": "string"}}
_GROUP_NAMES: JsonObject = {"type": "array", "items": {"type": "string", "minLength": 1}}

POLICY_DOCUMENT: JsonObject = {
    "type": "object",
    "description": "A call control group policy (see policy.md). Unknown keys are rejected.",
    "properties": {
        "allow_all": {"type": "boolean", "default": False},
        "pickup_all": {"type": "boolean", "default": True},
        "groups": {
            "type": "object",
            "maxProperties": 100,
            "additionalProperties": {
                "type": "array",
                "maxItems": 200,
                "items": {"type": "string", "pattern": EXTENSION_PATTERN},
            },
        },
        "pickup_share_groups": _GROUP_NAMES,
        "phone_replace_groups": _GROUP_NAMES,
    },
    "patternProperties": {
        r"^eavesdrop_[A-Za-z0-9_.+-]{1,32}$": _GROUP_NAMES,
        r"^whisper_[A-Za-z0-9_.+-]{1,32}$": _GROUP_NAMES,
    },
    "additionalProperties": False,
    "example": {
        "allow_all": False,
        "pickup_all": True,
        "groups": {"support": ["100", "101"], "sales": ["102", "101"]},
        "pickup_share_groups": ["support", "sales"],
        "phone_replace_groups": ["support"],
        "eavesdrop_100": ["support"],
        "whisper_101": ["sales"],
    },
}

STORED_DOCUMENT: JsonObject = {
    "type": "object",
    "required": [
        "allow_all",
        "pickup_all",
        "groups",
        "pickup_share_groups",
        "phone_replace_groups",
    ],
    "properties": {
        "allow_all": {"type": "boolean"},
        "pickup_all": {"type": "boolean"},
        "groups": {"type": "object", "additionalProperties": _STRINGS},
        "pickup_share_groups": _STRINGS,
        "phone_replace_groups": _STRINGS,
    },
    "additionalProperties": _STRINGS,
    "description": "The stored document with every field explicit.",
}

POLICY_BODY: JsonObject = {
    "oneOf": [
        ref("PolicyDocument"),
        {
            "type": "object",
            "required": [WRAPPER_KEY],
            "additionalProperties": False,
            "properties": {
                WRAPPER_KEY: {
                    "oneOf": [
                        ref("PolicyDocument"),
                        {"type": "string", "description": "the document as a JSON string"},
                    ]
                }
            },
        },
    ]
}

CHECK_RESULT: JsonObject = {
    "type": "object",
    "required": ["decision", "reason", "targets", "policy_version"],
    "properties": {
        "decision": {"type": "string", "enum": ["allow", "deny"]},
        "reason": {"type": "string"},
        "targets": _STRINGS,
        "policy_version": {"type": "integer", "minimum": 0},
        "pin_required": {"type": "boolean", "const": True},
    },
}

HISTORY: JsonObject = {
    "type": "object",
    "required": ["versions"],
    "properties": {
        "versions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["version", "changed_at", "changed_by", "document"],
                "properties": {
                    "version": {"type": "integer", "minimum": 1},
                    "changed_at": {"type": "string", "format": "date-time"},
                    "changed_by": {"type": "string"},
                    "document": ref("StoredDocument"),
                },
            },
        }
    },
}

_ETAG_HEADER: JsonObject = {
    "ETag": {"description": 'the policy version, quoted ("0": none stored)', "schema": {}}
}
_IF_MATCH: JsonObject = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'the ETag you read; on mismatch 412 and nothing changes ("*": any)',
    "schema": {"type": "string"},
}


def _document_answer(description: str) -> JsonObject:
    return json_response(description, ref("StoredDocument"), headers=_ETAG_HEADER)


def register(api: Api) -> None:
    spec = api.openapi
    spec.add_tag("policy", "A client's call control group policy")
    spec.add_schema("PolicyDocument", POLICY_DOCUMENT)
    spec.add_schema("StoredDocument", STORED_DOCUMENT)
    spec.add_schema("PolicyBody", POLICY_BODY)
    spec.add_schema("CheckResult", CHECK_RESULT)
    spec.add_schema("History", HISTORY)

    api.route(
        "GET",
        BASE,
        get_policy,
        access=Access.CLIENT,
        operation={
            "operationId": "getPolicy",
            "tags": ["policy"],
            "summary": "The stored policy, or the default document when none is stored",
            "responses": {"200": _document_answer("The policy in force")},
        },
    )
    api.route(
        "PUT",
        BASE,
        put_policy,
        access=Access.CLIENT,
        operation={
            "operationId": "putPolicy",
            "tags": ["policy"],
            "summary": "Replace the client's policy (a new version, durable before the answer)",
            "parameters": [_IF_MATCH],
            "requestBody": {
                "required": True,
                "description": (
                    'The document itself, {"call_control_groups": <document>}, or'
                    ' {"call_control_groups": "<the document as a JSON string>"}'
                ),
                "content": {"application/json": {"schema": ref("PolicyBody")}},
            },
            "responses": {
                "200": _document_answer("Stored; the next request decides by it"),
                "400": error_response(400),
                "412": error_response(412),
                "413": error_response(413),
                "422": error_response(
                    422, "Not a valid client id, not an object, or a document breaking policy.md"
                ),
            },
        },
    )
    api.route(
        "DELETE",
        BASE,
        delete_policy,
        access=Access.CLIENT,
        operation={
            "operationId": "deletePolicy",
            "tags": ["policy"],
            "summary": "Back to the default document (stored as a new version)",
            "parameters": [_IF_MATCH],
            "responses": {
                "200": _document_answer("The default document, now in force"),
                "412": error_response(412),
            },
        },
    )
    # The same resource without its trailing slash, for hand-typed URLs (not documented).
    for method, handler in (("GET", get_policy), ("PUT", put_policy), ("DELETE", delete_policy)):
        api.route(method, BASE.rstrip("/"), handler, access=Access.CLIENT)
    api.route(
        "GET",
        BASE + "history",
        get_history,
        access=Access.CLIENT,
        operation={
            "operationId": "getPolicyHistory",
            "tags": ["policy"],
            "summary": "Every stored version, newest first",
            "responses": {"200": json_response("The versions", ref("History"))},
        },
    )
    api.route(
        "GET",
        BASE + "check",
        check,
        access=Access.CLIENT,
        operation={
            "operationId": "checkDecision",
            "tags": ["policy"],
            "summary": "The decision the FastAGI service would give now",
            "description": (
                "An invalid extension or action is a 200 deny invalid_request, as on FastAGI."
                " For replace this is the policy half; pin_required is true when it allows."
            ),
            "parameters": [
                {
                    "name": "action",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "enum": [str(a) for a in Action]},
                },
                {
                    "name": "ext",
                    "in": "query",
                    "required": True,
                    "description": "the acting extension",
                    "schema": {"type": "string"},
                },
                {
                    "name": "target",
                    "in": "query",
                    "required": False,
                    "description": "the target extension; absent for the group forms",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {"200": json_response("The decision", ref("CheckResult"))},
        },
    )
