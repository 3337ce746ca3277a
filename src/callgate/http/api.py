"""What route modules build on: the typed application state and ``Api`` (see app.py).

Route modules import from here, never from ``callgate.http.app`` (which imports them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from callgate.audit import AuditLog
from callgate.http.auth import Access, Authenticator, Principal, forbidden
from callgate.http.errors import ApiError
from callgate.http.openapi import OpenApi
from callgate.metrics import Metrics
from callgate.pbx import ManagerState, PbxName
from callgate.policy import is_valid_client_id
from callgate.policy.syntax import CLIENT_ID_RULE
from callgate.replace.service import ReplaceService
from callgate.services import PolicyService, SupervisionService, TokenService

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def ami_not_configured() -> ManagerState:
    return ManagerState.NOT_CONFIGURED


def never_ready() -> bool:
    return False


def no_pbx() -> Mapping[PbxName, ManagerState]:
    return {}


def always() -> bool:
    return True


POLICIES = web.AppKey("policies", PolicyService)
TOKENS = web.AppKey("tokens", TokenService)
REPLACE = web.AppKey("replace", ReplaceService)
AUDIT = web.AppKey("audit", AuditLog)
SUPERVISION = web.AppKey("supervision", SupervisionService)
METRICS = web.AppKey("metrics", Metrics)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
READY: web.AppKey[Callable[[], bool]] = web.AppKey("ready")
AMI_STATUS: web.AppKey[Callable[[], ManagerState]] = web.AppKey("ami_status")
PBX_STATES: web.AppKey[Callable[[], Mapping[PbxName, ManagerState]]] = web.AppKey("pbx_states")
STORE_REACHABLE: web.AppKey[Callable[[], bool]] = web.AppKey("store_reachable")
OPENAPI = web.AppKey("openapi", dict[str, object])
PRINCIPAL = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


class Api:
    """What a route module registers its routes and OpenAPI fragments into."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.openapi = OpenApi()

    def route(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        access: Access,
        operation: Mapping[str, object] | None = None,
    ) -> None:
        """Add a route guarded by ``access``; document it unless ``operation`` is None."""
        self.app.router.add_route(method, path, _guard(handler, access))
        if operation is not None:
            self.openapi.add_operation(method, path, access, operation)


def invalid_client_id(client_id: str) -> ApiError:
    return ApiError(
        422,
        "invalid_client_id",
        f"A client id is {CLIENT_ID_RULE}.",
        [{"loc": ["path", "client_id"], "message": f"{client_id!r} is not a valid client id"}],
    )


def _guard(handler: Handler, access: Access) -> Handler:
    if access is Access.PUBLIC:
        return handler

    async def guarded(request: web.Request) -> web.StreamResponse:
        auth = request.app[AUTHENTICATOR]
        caller = await auth.authenticate(request.headers.get("Authorization"))
        if access is Access.ADMIN and not caller.is_admin:
            raise forbidden("Only the admin token may do this.")
        if access is Access.CLIENT:
            client_id = request.match_info["client_id"]
            if not is_valid_client_id(client_id):
                raise invalid_client_id(client_id)
            if not caller.may_act_on(client_id):
                raise forbidden(f"This token may act on client {caller.client_id!r} only.")
        request[PRINCIPAL] = caller
        return await handler(request)

    return guarded
