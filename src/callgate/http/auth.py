"""Who is asking: the admin token, a client-scoped token, or nobody.

The admin token comes from ``CALLGATE_ADMIN_TOKEN`` and is compared in constant time. Client
tokens are looked up by their SHA-256 in the store (``TokenService.find``), so deleting one takes
effect on the next request. Without an admin token configured every authenticated route answers
401: the service never serves a write it cannot attribute.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum

from callgate.http.errors import ApiError
from callgate.services.tokens import TokenService

ADMIN_NAME = "admin"


class Access(StrEnum):
    """Who may call a route."""

    PUBLIC = "public"
    CLIENT = "client"
    """The admin, or a token of the ``{client_id}`` in the path."""
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    """``admin`` or the token's name; recorded as ``changed_by``."""
    client_id: str | None
    """None for the admin, who may act on every client."""

    @property
    def is_admin(self) -> bool:
        return self.client_id is None

    def may_act_on(self, client_id: str) -> bool:
        return self.client_id is None or self.client_id == client_id


ADMIN = Principal(ADMIN_NAME, None)

_CHALLENGE = (("WWW-Authenticate", 'Bearer realm="callgate"'),)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers=_CHALLENGE)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _encode(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


class Authenticator:
    def __init__(self, admin_token: str | None, tokens: TokenService) -> None:
        self._admin = _encode(admin_token) if admin_token else None
        self._tokens = tokens

    @property
    def configured(self) -> bool:
        return self._admin is not None

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller, or ApiError 401."""
        if self._admin is None:
            raise unauthorized(
                "No admin token is configured: set CALLGATE_ADMIN_TOKEN and restart callgate."
            )
        token = bearer_token(authorization)
        if token is None:
            raise unauthorized("Send 'Authorization: Bearer <token>'.")
        if hmac.compare_digest(_encode(token), self._admin):
            return ADMIN
        info = await self._tokens.find(token)
        if info is None:
            raise unauthorized("The token is not valid.")
        return Principal(info.name, info.client_id)
