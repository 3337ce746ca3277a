"""``GET /client/{client_id}/audit``: what was decided and what happened, newest first.

Filters (query string, all optional): ``since`` and ``until`` (ISO 8601 date-times, inclusive;
without a zone they are UTC), ``ext`` (the acting extension or the target), ``action``, and
``limit`` (1 to 10000, default 1000). Listen and whisper sessions carry ``started``, ``ended`` and
``end_reason`` (``listener_hangup``, ``call_ended``, ``revoked``) on the row of the decision that
allowed them; a revoked one also says which policy version withdrew it (``revoked_by_version``)
and why (``revoked_reason``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from callgate.audit import AuditEvent
from callgate.http.api import STORE, Api
from callgate.http.auth import Access
from callgate.http.errors import JsonDetail, unprocessable
from callgate.http.openapi import EXTENSION_PATTERN, JsonObject, error_response, json_response, ref
from callgate.policy import Action, is_valid_extension
from callgate.store.audit import SESSION_ACTIONS

_TAG = "audit"
MAX_LIMIT = 10_000


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def event_json(event: AuditEvent) -> dict[str, object]:
    """One event as the API shows it: its ``extra`` facts flattened in; listen/whisper sessions
    with ``started``, ``ended`` and ``end_reason``."""
    body: dict[str, object] = dict(event.extra)
    body.update(
        time=_iso(event.time),
        action=event.action,
        ext=event.ext,
        target=event.target,
        decision=event.decision,
        reason=event.reason,
        policy_version=event.policy_version,
        uniqueid=event.uniqueid,
        channel=event.channel,
    )
    if event.action in SESSION_ACTIONS and event.decision == "allow":
        body.update(
            started=_iso(event.started),
            ended=_iso(event.ended),
            end_reason=event.end_reason.value if event.end_reason else None,
        )
    return body


def _when(name: str, value: str | None, errors: list[JsonDetail]) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        errors.append({"loc": ["query", name], "message": f"{value!r} is not an ISO 8601 time"})
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _limit(value: str | None, errors: list[JsonDetail]) -> int:
    if value is None:
        return 1000
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        errors.append({"loc": ["query", "limit"], "message": f"a number from 1 to {MAX_LIMIT}"})
        return 1000
    return int(value)


async def list_audit(request: web.Request) -> web.Response:
    query = request.query
    errors: list[JsonDetail] = []
    since = _when("since", query.get("since"), errors)
    until = _when("until", query.get("until"), errors)
    limit = _limit(query.get("limit"), errors)
    ext = query.get("ext")
    if ext is not None and not is_valid_extension(ext):
        errors.append({"loc": ["query", "ext"], "message": f"{ext!r} is not a valid extension"})
    action = query.get("action")
    if action is not None and action not in set(Action):
        errors.append({"loc": ["query", "action"], "message": f"{action!r} is not an action"})
    if errors:
        raise unprocessable("invalid_query", "The audit filters are not valid.", errors)
    events = await request.app[STORE].audit.list(
        request.match_info["client_id"],
        since=since,
        until=until,
        ext=ext,
        action=action,
        limit=limit,
    )
    return web.json_response({"events": [event_json(event) for event in events]})


_TIME: JsonObject = {"type": ["string", "null"], "format": "date-time"}
_EVENT: JsonObject = {
    "type": "object",
    "required": [
        "time",
        "action",
        "ext",
        "target",
        "decision",
        "reason",
        "policy_version",
        "uniqueid",
    ],
    "properties": {
        "time": {"type": "string", "format": "date-time"},
        "action": {"type": "string", "enum": [a.value for a in Action]},
        "ext": {"type": "string"},
        "target": {"type": ["string", "null"]},
        "decision": {"type": "string", "enum": ["allow", "deny"]},
        "reason": {"type": "string"},
        "policy_version": {"type": "integer"},
        "uniqueid": {"type": ["string", "null"], "description": "Asterisk's channel uniqueid"},
        "channel": {"type": ["string", "null"]},
        "started": {**_TIME, "description": "listen/whisper: ChanSpy began"},
        "ended": {**_TIME, "description": "listen/whisper: the session ended"},
        "end_reason": {
            "type": ["string", "null"],
            "enum": ["listener_hangup", "call_ended", "revoked", None],
        },
        "revoked_by_version": {"type": "string", "description": "the version that withdrew it"},
        "revoked_reason": {"type": "string", "description": "the new decision's reason"},
    },
    "additionalProperties": {"type": "string"},
}
_EVENTS: JsonObject = {
    "type": "object",
    "required": ["events"],
    "properties": {"events": {"type": "array", "items": ref("AuditEvent")}},
}


def _param(name: str, description: str, schema: JsonObject) -> JsonObject:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def register(api: Api) -> None:
    api.openapi.add_tag(_TAG, "What was decided and what happened")
    api.openapi.add_schema("AuditEvent", _EVENT)
    api.openapi.add_schema("AuditEvents", _EVENTS)
    api.route(
        "GET",
        "/client/{client_id}/audit",
        list_audit,
        access=Access.CLIENT,
        operation={
            "operationId": "listAudit",
            "summary": "Decisions and listen/whisper sessions, newest first",
            "tags": [_TAG],
            "parameters": [
                _param("since", "from this time on (ISO 8601)", {"type": "string"}),
                _param("until", "up to this time (ISO 8601)", {"type": "string"}),
                _param(
                    "ext",
                    "acting or target extension",
                    {"type": "string", "pattern": EXTENSION_PATTERN},
                ),
                _param(
                    "action", "one action", {"type": "string", "enum": [a.value for a in Action]}
                ),
                _param("limit", "at most this many (default 1000)", {"type": "integer"}),
            ],
            "responses": {
                "200": json_response("The events", ref("AuditEvents")),
                "422": error_response(422, "A filter is not valid"),
            },
        },
    )
