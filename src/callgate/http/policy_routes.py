"""``/client/{client_id}/call_control_group/``: the policy, its history, and the check.

The handlers call ``callgate.services.PolicyService``: a write is answered once it is durable and
in force here (the next FastAGI request, and the next ``check``, decide by it); the revocations
it causes follow from the store's change feed, without the answer waiting for them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from callgate.config import Settings
from callgate.domain import HistoryPage, VersionConflictError
from callgate.http.api import POLICIES, Api, principal
from callgate.http.auth import Access
from callgate.http.body import is_json_media_type, unsupported_media_type
from callgate.http.errors import ApiError
from callgate.http.openapi import JsonObject, error_response, json_response, ref
from callgate.http.policy_worker import WRAPPER_KEY, document_from_body
from callgate.http.policy_writes import Preparer, WriteConfig, WriteLimiter
from callgate.http.query import MAX_INTEGER, query_int
from callgate.policy import Action, PolicyDocument
from callgate.services.policies import DEFAULT_JSON, PolicyService

__all__ = [
    "BASE",
    "POLICY_CONFIG",
    "PolicyConfig",
    "document_from_body",
    "policy_config",
    "register",
]

BASE = "/client/{client_id}/call_control_group/"

HISTORY_DEFAULT_LIMIT = 20
HISTORY_MAX_LIMIT = 100


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The policy routes' settings (set by daemon.py as ``app[POLICY_CONFIG]``)."""

    writes: WriteConfig = field(default_factory=WriteConfig)
    history_page_bytes: int = 4 * 1024 * 1024
    start_workers: bool = False
    """Start the validator processes with the listener rather than on the first large write."""


def policy_config(settings: Settings) -> PolicyConfig:
    return PolicyConfig(
        writes=WriteConfig(
            rate=settings.policy_write_rate,
            burst=settings.policy_write_burst,
            concurrency=settings.policy_write_concurrency,
            offload_bytes=settings.policy_offload_bytes,
            workers=settings.policy_workers,
        ),
        history_page_bytes=settings.policy_history_page_bytes,
        start_workers=True,
    )


class PolicyWrites:
    """The per-client write limits and the document preparer, configured at start-up."""

    def __init__(self) -> None:
        self.config = PolicyConfig()
        self.limiter = WriteLimiter(self.config.writes)
        self.preparer = Preparer(self.config.writes)

    def configure(self, config: PolicyConfig) -> None:
        self.config = config
        self.limiter = WriteLimiter(config.writes)
        self.preparer = Preparer(config.writes)


POLICY_CONFIG = web.AppKey("policy_config", PolicyConfig)
POLICY_WRITES = web.AppKey("policy_writes", PolicyWrites)


async def _writes_lifecycle(app: web.Application) -> AsyncIterator[None]:
    writes = app[POLICY_WRITES]
    writes.configure(app.get(POLICY_CONFIG, PolicyConfig()))
    if writes.config.start_workers:
        writes.preparer.start()
    yield
    await writes.preparer.close()


# --- reading a request -------------------------------------------------------------------------


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


def _document_response(document_json: str, version: int) -> web.Response:
    # The stored text as it is: encoding a 2 MiB document again would hold the loop (see
    # docs/performance.md, "Large policy documents").
    return web.Response(
        body=document_json.encode(),
        content_type="application/json",
        headers={"ETag": etag(version)},
    )


async def _write(
    request: web.Request,
    write: Callable[[PolicyService, str, Collection[int] | None], Awaitable[tuple[int, str]]],
) -> web.Response:
    """One policy write, within the client's write limits (checked before the body is read)."""
    client_id = request.match_info["client_id"]
    if_version = parse_if_match(request.headers.get("If-Match"))
    limiter = request.app[POLICY_WRITES].limiter
    limiter.acquire(client_id)
    try:
        version, encoded = await write(request.app[POLICIES], client_id, if_version)
    except VersionConflictError as exc:
        raise ApiError(
            412,
            "precondition_failed",
            f"If-Match does not match: the current version is {exc.current}.",
            headers=[("ETag", etag(exc.current))],
        ) from None
    finally:
        limiter.release(client_id)
    return _document_response(encoded, version)


async def put_policy(request: web.Request) -> web.Response:
    async def write(
        policies: PolicyService, client_id: str, if_version: Collection[int] | None
    ) -> tuple[int, str]:
        header = request.headers.get("Content-Type")
        if not is_json_media_type(header):
            raise unsupported_media_type(header)
        preparer = request.app[POLICY_WRITES].preparer
        document, encoded = await preparer.prepare(await request.read())
        stored = await policies.write(
            client_id,
            document,
            principal(request).name,
            if_version=if_version,
            encoded=encoded,
        )
        return stored.version, encoded

    return await _write(request, write)


async def delete_policy(request: web.Request) -> web.Response:
    async def write(
        policies: PolicyService, client_id: str, if_version: Collection[int] | None
    ) -> tuple[int, str]:
        stored = await policies.reset(client_id, principal(request).name, if_version=if_version)
        return stored.version, DEFAULT_JSON

    return await _write(request, write)


async def get_policy(request: web.Request) -> web.Response:
    stored = await request.app[POLICIES].current_json(request.match_info["client_id"])
    if stored is None:
        return _document_response(DEFAULT_JSON, 0)
    return _document_response(stored.document_json, stored.version)


def history_body(page: HistoryPage) -> bytes:
    """The page as JSON, the stored documents spliced in as they are (no decode, no encode)."""
    parts = ['{"versions":[']
    for index, entry in enumerate(page.versions):
        if index:
            parts.append(",")
        parts.append(
            f'{{"version":{entry.version},"changed_at":{json.dumps(entry.changed_at)},'
            f'"changed_by":{json.dumps(entry.changed_by)},"document":'
        )
        parts.append(entry.document_json)
        parts.append("}")
    parts.append("]")
    if page.next_before is not None:
        parts.append(f',"next_before":{page.next_before}')
    parts.append("}")
    return "".join(parts).encode()


async def get_history(request: web.Request) -> web.Response:
    limit = query_int(
        request.query, "limit", default=HISTORY_DEFAULT_LIMIT, minimum=1, maximum=HISTORY_MAX_LIMIT
    )
    before = query_int(request.query, "before", default=None, minimum=1)
    page = await request.app[POLICIES].history_page(
        request.match_info["client_id"],
        limit=limit,
        before=before,
        max_bytes=request.app[POLICY_WRITES].config.history_page_bytes,
    )
    return web.Response(body=history_body(page), content_type="application/json")


async def check(request: web.Request) -> web.Response:
    """What the FastAGI service would answer now, from the same registry it reads."""
    action = request.query.get("action", "")
    decision, version = request.app[POLICIES].check(
        request.match_info["client_id"],
        action,
        request.query.get("ext", ""),
        request.query.get("target") or None,
    )
    body: dict[str, object] = {**decision.to_json(), "policy_version": version}
    if action == Action.REPLACE and decision.allowed:
        body["pin_required"] = True
    return web.json_response(body)


# --- OpenAPI -----------------------------------------------------------------------------------

_STRINGS: JsonObject = {"type": "array", "items": {"type": "string"}}


# The published schema of the wrapped forms, which document_from_body reads.
class WrappedPolicy(BaseModel):
    """The document under call_control_groups, as itself or as a JSON string."""

    model_config = ConfigDict(extra="forbid", title="WrappedPolicy")

    document: (
        PolicyDocument
        | Annotated[
            str,
            WithJsonSchema(
                {
                    "type": "string",
                    "description": "the document (a PolicyDocument) as a JSON string",
                    "contentMediaType": "application/json",
                }
            ),
        ]
    ) = Field(alias=WRAPPER_KEY)


PolicyBody = PolicyDocument | WrappedPolicy
"""The PUT body: the document itself, or wrapped (``WrappedPolicy``)."""

CHECK_RESULT: JsonObject = {
    "type": "object",
    "required": ["decision", "reason", "targets", "policy_version"],
    "properties": {
        "decision": {"type": "string", "enum": ["allow", "deny"]},
        "reason": {"type": "string"},
        "targets": _STRINGS,
        "policy_version": {"type": "integer", "minimum": 0},
        "pin_required": {"type": "boolean", "const": True},
        "grant_ids": {
            **_STRINGS,
            "description": "the grants that allowed it (reason temporary_grant), or that added"
            " targets to a group form; only when there are any",
        },
        "excluded": {
            **_STRINGS,
            "description": "with targets ['*']: the protected extensions * does not cover",
        },
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
        },
        "next_before": {
            "type": "integer",
            "minimum": 1,
            "description": "present when older versions remain: pass it as before= for them",
        },
    },
}

HISTORY_PARAMS: list[JsonObject] = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": (
            "at most this many versions (a page also stops before its documents pass a byte"
            " budget, policy_history_page_bytes, but always holds one)"
        ),
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": HISTORY_MAX_LIMIT,
            "default": HISTORY_DEFAULT_LIMIT,
        },
    },
    {
        "name": "before",
        "in": "query",
        "required": False,
        "description": "only versions older than this one (the next_before of the last page)",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_INTEGER},
    },
]


def rate_limited_response(description: str) -> JsonObject:
    """The documented 429 of a write over the client's write limits, with ``Retry-After``."""
    return {
        **error_response(429, description),
        "headers": {
            "Retry-After": {
                "description": "whole seconds to wait before trying again",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    }


_RATE_LIMITED = rate_limited_response(
    "Over the client's policy write limits (policy_write_rate, policy_write_burst,"
    " policy_write_concurrency); nothing changed"
)

_ETAG_HEADER: JsonObject = {
    "ETag": {"description": 'the policy version, quoted ("0": none stored)', "schema": {}}
}
IF_MATCH: JsonObject = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'the ETag you read; on mismatch 412 and nothing changes ("*": any)',
    "schema": {"type": "string"},
}


def _document_answer(description: str) -> JsonObject:
    return json_response(description, ref("StoredDocument"), headers=_ETAG_HEADER)


def register(api: Api) -> None:
    api.app[POLICY_WRITES] = PolicyWrites()
    api.app.cleanup_ctx.append(_writes_lifecycle)
    spec = api.openapi
    spec.add_tag("policy", "A client's call control group policy")
    spec.add_type("PolicyDocument", PolicyDocument)
    spec.add_type(
        "StoredDocument",
        PolicyDocument,
        mode="serialization",
        title="StoredDocument",
        description="The stored document with every field explicit.",
    )
    spec.add_type("PolicyBody", PolicyBody)
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
            "parameters": [IF_MATCH],
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
                "429": _RATE_LIMITED,
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
            "parameters": [IF_MATCH],
            "responses": {
                "200": _document_answer("The default document, now in force"),
                "412": error_response(412),
                "429": _RATE_LIMITED,
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
            "summary": "The stored versions, newest first, a page at a time",
            "description": (
                "How many versions are kept is a setting (policy_history_keep,"
                " policy_history_max_age_days); the current version is always kept."
            ),
            "parameters": HISTORY_PARAMS,
            "responses": {
                "200": json_response("A page of versions", ref("History")),
                "400": error_response(400, "limit or before is not a whole number in range"),
            },
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
