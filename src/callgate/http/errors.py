"""HTTP errors: one exception type, one JSON body, translated once in a middleware.

Every error answer is ``{"error": "<stable code>", "message": "<sentence>", "details": [...]}``.
Handlers raise ``ApiError``; aiohttp's own errors (unknown route, wrong method, body too large)
and anything unexpected are turned into the same shape here, so no caller ever sees an HTML page
or a bare 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from callgate.domain import StoreError

log = logging.getLogger(__name__)

JsonDetail = dict[str, object]
"""One item of ``details``: for a document error ``{"loc": [...], "message": "..."}``."""


class ApiError(Exception):
    """An answer other than success, with its status, stable code and located details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Sequence[JsonDetail] = (),
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = tuple(details)
        self.headers = tuple(headers)

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.details, self.headers)


def error_response(
    status: int,
    code: str,
    message: str,
    details: Sequence[JsonDetail] = (),
    headers: Sequence[tuple[str, str]] = (),
) -> web.Response:
    body = {"error": code, "message": message, "details": list(details)}
    response = web.json_response(body, status=status)
    for name, value in headers:
        response.headers[name] = value
    return response


def bad_request(message: str) -> ApiError:
    return ApiError(400, "malformed_json", message)


def unprocessable(code: str, message: str, details: Sequence[JsonDetail] = ()) -> ApiError:
    return ApiError(422, code, message, details)


def not_found(code: str, message: str) -> ApiError:
    return ApiError(404, code, message)


_AIOHTTP_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request could not be read."),
    404: ("not_found", "No such route: see /openapi.json for the API."),
    405: ("method_not_allowed", "This route does not answer that method."),
    413: ("payload_too_large", "The request body is larger than 2 MiB."),
}


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    code, message = _AIOHTTP_ERRORS.get(exc.status, ("http_error", exc.reason))
    headers = [("Allow", exc.headers["Allow"])] if "Allow" in exc.headers else []
    return error_response(exc.status, code, message, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except asyncio.CancelledError:
        raise
    except StoreError:
        log.exception("store failure on %s %s", request.method, request.path)
        return error_response(503, "unavailable", "The store is unavailable; try again.")
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "An unexpected error happened; it is logged.")
