"""``GET /client/{client_id}/audit``: what was decided and what happened, newest first.

Filters (query string, all optional, each at most once): ``since`` and ``until`` (ISO 8601
date-times, inclusive; without a zone they are UTC), ``ext`` (the acting extension or the
target), ``action``, and ``limit`` (1 to 10000, default 1000). A bad one is a 400
``invalid_query`` naming it (``callgate.http.query``).

Listen and whisper sessions carry ``started``, ``ended`` and ``end_reason`` (``listener_hangup``,
``call_ended``, ``revoked``) on the row of the decision that allowed them; a revoked one also says
which policy version withdrew it (``revoked_by_version``) and why (``revoked_reason``), and, when
the grant that allowed it ended, how (``revoked_cause``: ``grant_expired``, ``grant_ended``) and
which grant (``revoked_grant_id``).
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from callgate.audit import SESSION_ACTIONS, AuditEvent
from callgate.http.api import AUDIT, Api
from callgate.http.auth import Access
from callgate.http.openapi import EXTENSION_PATTERN, JsonObject, error_response, json_response, ref
from callgate.http.query import TIME_SCHEMA, QueryReader, integer_schema
from callgate.policy import Action, is_valid_extension
from callgate.policy.syntax import EXTENSION_RULE

_TAG = "audit"
DEFAULT_LIMIT = 1000
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


async def list_audit(request: web.Request) -> web.Response:
    query = QueryReader(request.query)
    since = query.time("since")
    until = query.time("until")
    limit = query.integer("limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    ext = query.text("ext")
    if ext is not None and not is_valid_extension(ext):
        query.add_error("ext", f"{ext[:40]!r} is not a valid extension ({EXTENSION_RULE}).")
    action = query.text("action")
    if action is not None and action not in set(Action):
        query.add_error("action", f"{action[:40]!r} is not an action.")
    query.raise_if_invalid("The audit filters are not valid.")
    events = await request.app[AUDIT].list(
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
            "enum": ["listener_hangup", "call_ended", "revoked", "operator", None],
        },
        "revoked_by_version": {"type": "string", "description": "the version that withdrew it"},
        "revoked_reason": {"type": "string", "description": "the new decision's reason"},
        "revoked_cause": {
            "type": "string",
            "enum": ["grant_expired", "grant_ended"],
            "description": "set when the grant that allowed the session ended: its `until`"
            " passed (`grant_expired`) or it was ended early (`grant_ended`, `DELETE`); absent"
            " when a change of the document or the settings withdrew the right",
        },
        "revoked_grant_id": {
            "type": "string",
            "description": "with `revoked_cause`: the grant that ended",
        },
        "grant_id": {
            "type": "string",
            "description": "the grants the decision names (`&`-joined): for a listen or"
            " whisper allowed `temporary_grant`, the one grant that allowed it",
        },
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
                _param("since", "from this time on (ISO 8601; no zone: UTC)", TIME_SCHEMA),
                _param("until", "up to this time (ISO 8601; no zone: UTC)", TIME_SCHEMA),
                _param(
                    "ext",
                    "acting or target extension",
                    {"type": "string", "pattern": EXTENSION_PATTERN},
                ),
                _param(
                    "action", "one action", {"type": "string", "enum": [a.value for a in Action]}
                ),
                _param(
                    "limit",
                    f"at most this many (default {DEFAULT_LIMIT})",
                    integer_schema(1, MAX_LIMIT, DEFAULT_LIMIT),
                ),
            ],
            "responses": {
                "200": json_response("The events", ref("AuditEvents")),
                "400": error_response(
                    400, "invalid_query: a filter is not valid, or given twice; details name it"
                ),
            },
        },
    )
