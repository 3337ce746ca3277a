"""Reading a JSON request body: malformed JSON is a 400, never a 500."""

from __future__ import annotations

import json

from aiohttp import web

from callgate.http.errors import bad_request


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes | str, what: str) -> object:
    """Decode JSON, or ApiError 400 naming ``what`` was malformed."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise bad_request(f"The {what} is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"The {what} is not valid JSON: {exc}") from None


async def read_json(request: web.Request) -> object:
    """The request body as JSON; aiohttp answers 413 past the 2 MiB limit."""
    return parse_json(await request.read(), "request body")
