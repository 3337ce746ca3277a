"""``/console``: the operator console, static files shipped in the package (no CDN, no build).

The page is plain HTML, CSS and JavaScript modules under ``static/console/``; it signs in with a
token kept in the tab's ``sessionStorage`` and uses only the public API routes. The answers
carry a Content-Security-Policy that lets the page load nothing from anywhere but callgate.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from callgate.http.api import Api
from callgate.http.auth import Access
from callgate.http.errors import not_found

CONSOLE_DIR = Path(__file__).parent / "static" / "console"
_CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


def _asset(name: str) -> web.Response:
    path = CONSOLE_DIR / name
    content_type = _CONTENT_TYPES.get(path.suffix)
    # Only plain file names of the shipped kinds: no path can leave the console folder.
    if "/" in name or "\\" in name or content_type is None or not path.is_file():
        raise not_found("not_found", f"No console file named {name!r}.")
    return web.Response(
        body=path.read_bytes(), content_type=content_type, charset="utf-8", headers=_HEADERS
    )


async def console_page(request: web.Request) -> web.Response:
    return _asset("index.html")


async def console_asset(request: web.Request) -> web.Response:
    return _asset(request.match_info["asset"])


def register(api: Api) -> None:
    api.route(
        "GET",
        "/console",
        console_page,
        access=Access.PUBLIC,
        operation={
            "operationId": "console",
            "tags": ["documentation"],
            "summary": "The operator console (works offline; signs in with a token)",
            "responses": {
                "200": {
                    "description": "HTML page",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        },
    )
    api.route("GET", "/console/{asset}", console_asset, access=Access.PUBLIC)
