"""``/openapi.json`` and the API browser page (``/docs``), served from the package: no CDN.

The page (``static/index.html`` + ``browser.js`` + ``browser.css``) reads ``/openapi.json``, lists
the operations, and lets a user fill parameters, body and bearer token and run a request.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from callgate.http.api import OPENAPI, Api
from callgate.http.auth import Access
from callgate.http.errors import not_found

STATIC_DIR = Path(__file__).parent / "static"
_CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


def _asset(name: str) -> web.Response:
    path = STATIC_DIR / name
    content_type = _CONTENT_TYPES.get(path.suffix)
    # Only plain file names of the shipped kinds: no path can leave the static folder.
    if "/" in name or "\\" in name or content_type is None or not path.is_file():
        raise not_found("not_found", f"No asset named {name!r}.")
    return web.Response(
        body=path.read_bytes(),
        content_type=content_type,
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


async def browser_page(request: web.Request) -> web.Response:
    return _asset("index.html")


async def browser_asset(request: web.Request) -> web.Response:
    return _asset(request.match_info["asset"])


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/docs")


def register(api: Api) -> None:
    api.openapi.add_tag("documentation", "This description and the API browser")
    api.route(
        "GET",
        "/openapi.json",
        openapi_json,
        access=Access.PUBLIC,
        operation={
            "operationId": "openapi",
            "tags": ["documentation"],
            "summary": "This OpenAPI description",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        },
    )
    api.route(
        "GET",
        "/docs",
        browser_page,
        access=Access.PUBLIC,
        operation={
            "operationId": "apiBrowser",
            "tags": ["documentation"],
            "summary": "Interactive API browser (works offline)",
            "responses": {
                "200": {
                    "description": "HTML page",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        },
    )
    api.route("GET", "/docs/{asset}", browser_asset, access=Access.PUBLIC)
    api.route("GET", "/", root, access=Access.PUBLIC)
