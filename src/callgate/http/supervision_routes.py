"""The settings and grants beside a client's policy (``policy.md``, "Beside the document").

- ``GET    /client/{client_id}/call_control_settings``          -> the settings, every field
  explicit; ``ETag``: the version that last wrote them (``"0"``: the default)
- ``PUT    /client/{client_id}/call_control_settings``          -> 200 the stored settings;
  ``If-Match`` as for the policy (412 and nothing changes on a mismatch), 422 ``invalid_settings``
- ``GET    /client/{client_id}/call_control_settings/history``  -> every kept version of the
  settings and grants, newest first (``limit``, ``before``), with who changed what
- ``POST   /client/{client_id}/grants``                         -> 201 the grant with its ``id``
  (``Location``); 422 ``invalid_grant`` (a body that breaks the rules, a group missing from the
  document, ``until`` past, too long, too many grants)
- ``GET    /client/{client_id}/grants``                         -> active, scheduled and recently
  ended grants, each with its ``state``
- ``GET    /client/{client_id}/grants/{grant_id}``              -> one grant; 404 ``unknown_grant``
- ``DELETE /client/{client_id}/grants/{grant_id}``              -> 204 ended now (what it alone
  allowed ends live); 404 ``unknown_grant``

Writes are attributed to the caller (``changed_by``, a grant's ``created_by`` and ``ended_by``:
the token's name) and kept in the history; they count against per-client write limits like the
policy's (the same settings, ``policy_write_*``, counted apart from policy writes): 429 with
``Retry-After`` past them. The handlers call ``SupervisionService``, never a store.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

from aiohttp import web

from callgate.domain import GrantRecord, StoredSupervision, VersionConflictError
from callgate.http.api import SUPERVISION, Api, principal
from callgate.http.auth import Access
from callgate.http.body import read_json
from callgate.http.errors import ApiError, JsonDetail, not_found, unprocessable
from callgate.http.openapi import JsonObject, error_response, json_response, ref
from callgate.http.policy_routes import (
    HISTORY_DEFAULT_LIMIT,
    HISTORY_MAX_LIMIT,
    HISTORY_PARAMS,
    IF_MATCH,
    POLICY_CONFIG,
    PolicyConfig,
    etag,
    parse_if_match,
    rate_limited_response,
)
from callgate.http.policy_writes import WriteLimiter
from callgate.http.query import query_int
from callgate.policy import PolicyValidationError
from callgate.policy.grants import (
    GRANT_ID_PATTERN,
    GRANT_ID_RULE,
    Grant,
    GrantRequest,
    parse_grant_request,
)
from callgate.policy.settings import CallControlSettings, parse_settings
from callgate.services.supervision import UnknownGrantError

__all__ = ["GRANTS", "SETTINGS", "register"]

SETTINGS = "/client/{client_id}/call_control_settings"
GRANTS = "/client/{client_id}/grants"
_GRANT_ID = re.compile(GRANT_ID_PATTERN)
_TAG = "supervision"

SUPERVISION_WRITES = web.AppKey("supervision_writes", WriteLimiter)


async def _writes_lifecycle(app: web.Application) -> AsyncIterator[None]:
    app[SUPERVISION_WRITES] = WriteLimiter(app.get(POLICY_CONFIG, PolicyConfig()).writes)
    yield


def _invalid(code: str, what: str, error: PolicyValidationError) -> ApiError:
    details: list[JsonDetail] = [dict(issue.to_json()) for issue in error.errors]
    return unprocessable(
        code, f"The {what} breaks {len(details)} rule(s); nothing was stored.", details
    )


async def _limited(
    request: web.Request, write: Callable[[], Awaitable[web.Response]]
) -> web.Response:
    client_id = request.match_info["client_id"]
    limiter = request.app[SUPERVISION_WRITES]
    limiter.acquire(client_id)
    try:
        return await write()
    finally:
        limiter.release(client_id)


# --- settings ------------------------------------------------------------------------------------


def _settings_response(settings: CallControlSettings, version: int) -> web.Response:
    return web.json_response(settings.to_json(), headers={"ETag": etag(version)})


async def get_settings(request: web.Request) -> web.Response:
    settings, version = await request.app[SUPERVISION].settings(request.match_info["client_id"])
    return _settings_response(settings, version)


async def put_settings(request: web.Request) -> web.Response:
    if_version = parse_if_match(request.headers.get("If-Match"))

    async def write() -> web.Response:
        body = await read_json(request)
        try:
            settings = parse_settings(body)
        except PolicyValidationError as exc:
            raise _invalid("invalid_settings", "call control settings", exc) from None
        try:
            stored = await request.app[SUPERVISION].write_settings(
                request.match_info["client_id"],
                settings,
                principal(request).name,
                if_version=if_version,
            )
        except VersionConflictError as exc:
            raise ApiError(
                412,
                "precondition_failed",
                f"If-Match does not match: the settings are at version {exc.current}.",
                headers=[("ETag", etag(exc.current))],
            ) from None
        return _settings_response(stored.settings, stored.settings_version)

    return await _limited(request, write)


def _version_json(stored: StoredSupervision, now: datetime) -> dict[str, object]:
    return {
        "version": stored.version,
        "changed_at": stored.changed_at.isoformat(),
        "changed_by": stored.changed_by,
        "change": str(stored.change),
        "grant_id": stored.grant_id,
        "settings": stored.settings.to_json(),
        "grants": [grant_json(record, now) for record in stored.grants],
    }


async def get_history(request: web.Request) -> web.Response:
    limit = query_int(
        request.query, "limit", default=HISTORY_DEFAULT_LIMIT, minimum=1, maximum=HISTORY_MAX_LIMIT
    )
    before = query_int(request.query, "before", default=None, minimum=1)
    service = request.app[SUPERVISION]
    page = await service.history_page(request.match_info["client_id"], limit=limit, before=before)
    now = service.now()
    body: dict[str, object] = {"versions": [_version_json(v, now) for v in page.versions]}
    if page.next_before is not None:
        body["next_before"] = page.next_before
    return web.json_response(body)


# --- grants --------------------------------------------------------------------------------------


def grant_json(record: GrantRecord, now: datetime) -> dict[str, object]:
    """A grant as the API shows it (the ``GrantRecord`` schema), its ``state`` at ``now``."""
    return {**record.to_json(), "state": str(record.state(now))}


def _grant_id(request: web.Request) -> str:
    grant_id = request.match_info["grant_id"]
    if _GRANT_ID.fullmatch(grant_id) is None:
        raise _unknown_grant(grant_id)
    return grant_id


def _unknown_grant(grant_id: str) -> ApiError:
    return not_found("unknown_grant", f"The client has no grant {grant_id[:64]!r}.")


async def post_grant(request: web.Request) -> web.Response:
    async def write() -> web.Response:
        body = await read_json(request)
        try:
            grant = parse_grant_request(body)
            service = request.app[SUPERVISION]
            record = await service.add_grant(client_id, grant, principal(request).name)
        except PolicyValidationError as exc:
            raise _invalid("invalid_grant", "grant", exc) from None
        return web.json_response(
            grant_json(record, service.now()),
            status=201,
            headers={"Location": f"/client/{client_id}/grants/{record.id}"},
        )

    client_id = request.match_info["client_id"]
    return await _limited(request, write)


async def list_grants(request: web.Request) -> web.Response:
    grants, now = await request.app[SUPERVISION].grants(request.match_info["client_id"])
    return web.json_response(
        {"grants": [grant_json(record, now) for record in grants], "now": now.isoformat()}
    )


async def get_grant(request: web.Request) -> web.Response:
    grant_id = _grant_id(request)
    grants, now = await request.app[SUPERVISION].grants(request.match_info["client_id"])
    for record in grants:
        if record.id == grant_id:
            return web.json_response(grant_json(record, now))
    raise _unknown_grant(grant_id)


async def delete_grant(request: web.Request) -> web.Response:
    grant_id = _grant_id(request)

    async def write() -> web.Response:
        try:
            await request.app[SUPERVISION].end_grant(
                request.match_info["client_id"], grant_id, principal(request).name
            )
        except UnknownGrantError:
            raise _unknown_grant(grant_id) from None
        return web.Response(status=204)

    return await _limited(request, write)


# --- OpenAPI -------------------------------------------------------------------------------------

_ETAG_HEADER: JsonObject = {
    "ETag": {
        "description": 'the version that last wrote the settings, quoted ("0": the default)',
        "schema": {"type": "string"},
    }
}
_RATE_LIMITED = rate_limited_response(
    "Over the client's write limits (policy_write_rate, policy_write_burst,"
    " policy_write_concurrency, counted apart from policy writes); nothing changed"
)
_NULLABLE_TIME: JsonObject = {"type": ["string", "null"], "format": "date-time"}
_RECORD: JsonObject = {
    "allOf": [
        ref("Grant"),
        {
            "type": "object",
            "required": ["created_at", "ended_at", "ended_by", "state"],
            "properties": {
                "created_at": {"type": "string", "format": "date-time"},
                "ended_at": {
                    **_NULLABLE_TIME,
                    "description": "when it was ended early (DELETE); null otherwise",
                },
                "ended_by": {"type": ["string", "null"]},
                "state": {"type": "string", "enum": ["scheduled", "active", "ended"]},
            },
        },
    ]
}
_GRANT_LIST: JsonObject = {
    "type": "object",
    "required": ["grants", "now"],
    "properties": {
        "grants": {"type": "array", "items": ref("GrantRecord")},
        "now": {"type": "string", "format": "date-time", "description": "states judged at"},
    },
}
_HISTORY: JsonObject = {
    "type": "object",
    "required": ["versions"],
    "properties": {
        "versions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "version",
                    "changed_at",
                    "changed_by",
                    "change",
                    "grant_id",
                    "settings",
                    "grants",
                ],
                "properties": {
                    "version": {"type": "integer", "minimum": 1},
                    "changed_at": {"type": "string", "format": "date-time"},
                    "changed_by": {"type": "string"},
                    "change": {
                        "type": "string",
                        "enum": ["settings", "grant_added", "grant_ended"],
                    },
                    "grant_id": {"type": ["string", "null"]},
                    "settings": ref("StoredSettings"),
                    "grants": {"type": "array", "items": ref("GrantRecord")},
                },
            },
        },
        "next_before": {"type": "integer", "minimum": 1},
    },
}
_HISTORY_PARAMS: list[JsonObject] = [
    {**HISTORY_PARAMS[0], "description": "at most this many versions"},
    HISTORY_PARAMS[1],
]


def _settings_answer(description: str) -> JsonObject:
    return json_response(description, ref("StoredSettings"), headers=_ETAG_HEADER)


def register(api: Api) -> None:
    api.app.cleanup_ctx.append(_writes_lifecycle)
    spec = api.openapi
    spec.add_tag(_TAG, "Protected extensions, the notice to the monitored, grants that expire")
    spec.add_type("CallControlSettings", CallControlSettings)
    spec.add_type(
        "StoredSettings",
        CallControlSettings,
        mode="serialization",
        title="StoredSettings",
        description="The stored settings with every field explicit.",
    )
    spec.add_type("GrantRequest", GrantRequest)
    spec.add_type("Grant", Grant, mode="serialization", title="Grant")
    spec.add_schema("GrantRecord", _RECORD)
    spec.add_path_param(
        "grant_id",
        {"type": "string", "pattern": GRANT_ID_PATTERN, "description": GRANT_ID_RULE},
    )
    _register_settings(api)
    _register_grants(api)


def _register_settings(api: Api) -> None:
    api.route(
        "GET",
        SETTINGS,
        get_settings,
        access=Access.CLIENT,
        operation={
            "operationId": "getCallControlSettings",
            "tags": [_TAG],
            "summary": "The client's settings beside its policy (the default when none)",
            "responses": {"200": _settings_answer("The settings in force")},
        },
    )
    api.route(
        "PUT",
        SETTINGS,
        put_settings,
        access=Access.CLIENT,
        operation={
            "operationId": "putCallControlSettings",
            "tags": [_TAG],
            "summary": "Replace the client's settings (a new version, in force when answered)",
            "description": (
                "Adding an extension to protected_extensions ends the listen and whisper"
                " sessions on it at once. A field left out takes its default."
            ),
            "parameters": [IF_MATCH],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("CallControlSettings")}},
            },
            "responses": {
                "200": _settings_answer("Stored; the next request decides by it"),
                "412": error_response(412),
                "422": error_response(422, "Settings that break the rules (invalid_settings)"),
                "429": _RATE_LIMITED,
            },
        },
    )
    api.route(
        "GET",
        SETTINGS + "/history",
        get_history,
        access=Access.CLIENT,
        operation={
            "operationId": "getCallControlSettingsHistory",
            "tags": [_TAG],
            "summary": "Every kept version of the settings and grants, newest first",
            "description": (
                "One version per change (settings written, grant added, grant ended), with who"
                " made it; kept like the policy's (policy_history_keep,"
                " policy_history_max_age_days)."
            ),
            "parameters": _HISTORY_PARAMS,
            "responses": {
                "200": json_response("A page of versions", _HISTORY),
                "400": error_response(400, "limit or before is not a whole number in range"),
            },
        },
    )


def _register_grants(api: Api) -> None:
    record = json_response("The grant", ref("GrantRecord"))
    unknown = error_response(404, "No grant by that id in the client's list (unknown_grant)")
    api.route(
        "POST",
        GRANTS,
        post_grant,
        access=Access.CLIENT,
        operation={
            "operationId": "postGrant",
            "tags": [_TAG],
            "summary": "Grant an extension a right for a while (in force when answered)",
            "description": (
                "Allows what the document denies, never what protection forbids. Limits per"
                " client: grants_max_per_client, grants_max_duration_hours."
            ),
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("GrantRequest")}},
            },
            "responses": {
                "201": {
                    **json_response("Stored, with its id", ref("GrantRecord")),
                    "headers": {
                        "Location": {"description": "the grant's URL", "schema": {}},
                    },
                },
                "422": error_response(
                    422, "A grant that breaks the rules or the client's limits (invalid_grant)"
                ),
                "429": _RATE_LIMITED,
            },
        },
    )
    api.route(
        "GET",
        GRANTS,
        list_grants,
        access=Access.CLIENT,
        operation={
            "operationId": "listGrants",
            "tags": [_TAG],
            "summary": "The client's grants: active, scheduled, and recently ended",
            "description": "Ended grants stay listed for grants_keep_ended_days.",
            "responses": {"200": json_response("The grants, by from", _GRANT_LIST)},
        },
    )
    api.route(
        "GET",
        GRANTS + "/{grant_id}",
        get_grant,
        access=Access.CLIENT,
        operation={
            "operationId": "getGrant",
            "tags": [_TAG],
            "summary": "One grant",
            "responses": {"200": record, "404": unknown},
        },
    )
    api.route(
        "DELETE",
        GRANTS + "/{grant_id}",
        delete_grant,
        access=Access.CLIENT,
        operation={
            "operationId": "deleteGrant",
            "tags": [_TAG],
            "summary": "End a grant now (a session only it allowed ends live)",
            "description": "A grant that has ended already is answered 204 and left as it is.",
            "responses": {
                "204": {"description": "Ended; the next request decides without it"},
                "404": unknown,
                "429": _RATE_LIMITED,
            },
        },
    )
