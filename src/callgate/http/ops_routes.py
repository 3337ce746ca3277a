"""``/healthz``, ``/readyz`` and ``/metrics``: open to monitoring, no token."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from callgate.http.api import AMI_STATUS, METRICS, PBX_STATES, READY, STORE_REACHABLE, Api
from callgate.http.auth import Access
from callgate.http.openapi import JsonObject, json_response
from callgate.pbx import ManagerState


async def healthz(request: web.Request) -> web.Response:
    """The process answers; says nothing of its dependencies (that is /readyz)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: started (every stored policy loaded, both listeners open) and the store reachable.

    While the store is unreachable FastAGI still answers from the policies held here, but writes
    answer 503 and changes made elsewhere may not be applied yet: 503 ``store_unreachable`` until
    the change feed is back and has caught up with everything newer than what is held."""
    app = request.app
    started = app[READY]()
    reachable = app[STORE_REACHABLE]()
    if not started:
        status = "starting"
    elif not reachable:
        status = "store_unreachable"
    else:
        status = "ready"
    body = {
        "status": status,
        "policies_loaded": started,
        "ami": app[AMI_STATUS]().value,
        "store": "reachable" if reachable else "unreachable",
        "pbx": {name: state.value for name, state in sorted(app[PBX_STATES]().items())},
    }
    return web.json_response(body, status=200 if status == "ready" else 503)


async def metrics(request: web.Request) -> web.Response:
    payload = generate_latest(request.app[METRICS].registry)
    response = web.Response(body=payload)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


_MANAGER_STATE: JsonObject = {
    "type": "string",
    "enum": [state.value for state in ManagerState],
}

_READINESS: JsonObject = {
    "type": "object",
    "required": ["status", "policies_loaded", "ami", "store", "pbx"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "starting", "store_unreachable"]},
        "policies_loaded": {"type": "boolean"},
        "ami": {
            **_MANAGER_STATE,
            "description": (
                "live enforcement over the Asterisk Manager, of every PBX together (the worst"
                " state shows): up, down (reconnecting), auth_failed (Asterisk refused the"
                " credentials), standby (another instance enforces), not configured"
            ),
        },
        "store": {
            "type": "string",
            "enum": ["reachable", "unreachable"],
            "description": "whether the store (and, with PostgreSQL, its change feed) answers",
        },
        "pbx": {
            "type": "object",
            "description": (
                "per Asterisk server (by its name in the settings), this instance's Manager"
                " connection: up (live enforcement on), down, auth_failed, standby (another"
                " instance holds the PBX's enforcement lock), not_configured"
            ),
            "additionalProperties": _MANAGER_STATE,
        },
    },
}


def register(api: Api) -> None:
    api.openapi.add_tag("operations", "Health, readiness and metrics (no token)")
    api.openapi.add_schema("Readiness", _READINESS)
    api.route(
        "GET",
        "/healthz",
        healthz,
        access=Access.PUBLIC,
        operation={
            "operationId": "healthz",
            "tags": ["operations"],
            "summary": "Liveness",
            "responses": {
                "200": json_response(
                    "Alive",
                    {
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"const": "ok"}},
                    },
                )
            },
        },
    )
    api.route(
        "GET",
        "/readyz",
        readyz,
        access=Access.PUBLIC,
        operation={
            "operationId": "readyz",
            "tags": ["operations"],
            "summary": (
                "Ready: policies loaded, both listeners open, the store reachable; says per PBX"
                " whether the Manager is up"
            ),
            "responses": {
                "200": json_response("Ready", {"$ref": "#/components/schemas/Readiness"}),
                "503": json_response(
                    "Starting, or the store unreachable", {"$ref": "#/components/schemas/Readiness"}
                ),
            },
        },
    )
    api.route(
        "GET",
        "/metrics",
        metrics,
        access=Access.PUBLIC,
        operation={
            "operationId": "metrics",
            "tags": ["operations"],
            "summary": "Prometheus metrics",
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        },
    )
