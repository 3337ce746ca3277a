"""``/healthz``, ``/readyz`` and ``/metrics``: open to monitoring, no token."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from callgate.http.api import AMI_STATUS, METRICS, READY, Api
from callgate.http.auth import Access
from callgate.http.openapi import JsonObject, json_response
from callgate.pbx import ManagerState


async def healthz(request: web.Request) -> web.Response:
    """The process answers; says nothing of its dependencies (that is /readyz)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready = request.app[READY]()
    body = {
        "status": "ready" if ready else "starting",
        "policies_loaded": ready,
        "ami": request.app[AMI_STATUS]().value,
    }
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    payload = generate_latest(request.app[METRICS].registry)
    response = web.Response(body=payload)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


_READINESS: JsonObject = {
    "type": "object",
    "required": ["status", "policies_loaded", "ami"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "starting"]},
        "policies_loaded": {"type": "boolean"},
        "ami": {
            "type": "string",
            "enum": [state.value for state in ManagerState],
            "description": (
                "live enforcement over the Asterisk Manager: up, down (reconnecting),"
                " auth_failed (Asterisk refused the credentials), not configured"
            ),
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
            "summary": "Ready: policies loaded and both listeners open; says whether AMI is up",
            "responses": {
                "200": json_response("Ready", {"$ref": "#/components/schemas/Readiness"}),
                "503": json_response("Starting", {"$ref": "#/components/schemas/Readiness"}),
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
