"""The aiohttp application: typed state, middlewares, route modules, and the listener.

Route modules
-------------
Each route module exposes ``register(api: Api) -> None``. It calls ``api.route(method, path,
handler, access=..., operation={...})`` once per route (``operation`` is that route's OpenAPI
fragment: operationId, summary, tags, parameters, requestBody, its own responses; the bearer
security, 401/403/503 and the path parameters are added from ``access`` and the path), and
``api.openapi.add_schema(name, schema)`` for the component schemas it references. ``api.route``
enforces ``access`` before the handler runs and puts the caller in ``request[PRINCIPAL]``.

To add a module: write ``callgate/http/<name>_routes.py`` with ``register``, append it to
``ROUTE_MODULES`` below (one line). Handlers call the use cases (``callgate.services``, reached
through the AppKeys of ``callgate.http.api``), never a store: ``HttpDeps`` carries everything the
application needs, built by ``daemon.py`` before the application, so no route finds a piece
missing. Route modules import what they build on from ``callgate.http.api`` (``Api``, the
AppKeys, ``principal``), never from this module, which imports them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from callgate.ami.service import LiveEnforcement
from callgate.http import (
    audit_routes,
    console_routes,
    docs_routes,
    insight_routes,
    ops_routes,
    policy_routes,
    replace_routes,
    supervision_routes,
    token_routes,
)
from callgate.http.api import (
    AMI_STATUS,
    AUDIT,
    AUTHENTICATOR,
    METRICS,
    OPENAPI,
    PBX_STATES,
    POLICIES,
    READY,
    REPLACE,
    STORE_REACHABLE,
    SUPERVISION,
    TOKENS,
    Api,
    Handler,
    always,
    ami_not_configured,
    never_ready,
    no_pbx,
)
from callgate.http.auth import Authenticator
from callgate.http.errors import error_middleware
from callgate.http.insight_routes import INSIGHT_CONFIG, LIVE_ENFORCEMENT, InsightConfig
from callgate.http.listener import GuardedRunner, ListenerLimits
from callgate.http.policy_routes import POLICY_CONFIG, PolicyConfig
from callgate.metrics import Metrics
from callgate.pbx import ManagerState, PbxName
from callgate.services import AppServices

log = logging.getLogger(__name__)

MAX_BODY = 2 * 1024 * 1024
MIN_ADMIN_TOKEN = 16

RouteModule = Callable[[Api], None]


@dataclass(frozen=True, slots=True)
class HttpDeps:
    """What the HTTP API needs from the rest of the daemon (wired in daemon.py)."""

    services: AppServices
    metrics: Metrics
    admin_token: str | None
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The policy routes' write limits and history page size (``policy_config(settings)``)."""
    ready: Callable[[], bool] = field(default=never_ready)
    """True once every stored policy is loaded and both listeners are open."""
    ami_status: Callable[[], ManagerState] = field(default=ami_not_configured)
    insight: InsightConfig = field(default_factory=InsightConfig)
    """The console routes' bounds (``insight_config(settings)``)."""
    live: LiveEnforcement | None = None
    """Live enforcement, for the console's live view and its End button; None without --ami."""
    pbx_states: Callable[[], Mapping[PbxName, ManagerState]] = field(default=no_pbx)
    """Each PBX's Manager state on this instance (``standby``: another one enforces on it)."""
    store_reachable: Callable[[], bool] = field(default=always)
    """False while the store cannot be reached (PostgreSQL: its change feed is down)."""


def _route_template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    counter = request.app[METRICS].http_requests
    route = _route_template(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        counter.labels(request.method, route, str(exc.status)).inc()
        raise
    counter.labels(request.method, route, str(response.status)).inc()
    return response


ROUTE_MODULES: tuple[RouteModule, ...] = (
    policy_routes.register,
    token_routes.register,
    ops_routes.register,
    docs_routes.register,
    replace_routes.register,
    audit_routes.register,
    insight_routes.register,
    console_routes.register,
    supervision_routes.register,
)


def build_app(deps: HttpDeps) -> web.Application:
    app = web.Application(
        client_max_size=MAX_BODY, middlewares=[metrics_middleware, error_middleware]
    )
    services = deps.services
    app[POLICIES] = services.policies
    app[TOKENS] = services.tokens
    app[REPLACE] = services.replace
    app[AUDIT] = services.audit
    app[SUPERVISION] = services.supervision
    app[POLICY_CONFIG] = deps.policy
    app[METRICS] = deps.metrics
    app[AUTHENTICATOR] = Authenticator(deps.admin_token, services.tokens)
    app[READY] = deps.ready
    app[AMI_STATUS] = deps.ami_status
    app[INSIGHT_CONFIG] = deps.insight
    if deps.live is not None:
        app[LIVE_ENFORCEMENT] = deps.live
    app[PBX_STATES] = deps.pbx_states
    app[STORE_REACHABLE] = deps.store_reachable
    api = Api(app)
    for register in ROUTE_MODULES:
        register(api)
    app[OPENAPI] = api.openapi.document()
    if deps.admin_token is not None and len(deps.admin_token) < MIN_ADMIN_TOKEN:
        log.warning(
            "the admin token is shorter than %d characters: anyone who can reach the HTTP"
            " listener may guess it. Use CALLGATE_ADMIN_TOKEN=$(openssl rand -hex 32).",
            MIN_ADMIN_TOKEN,
        )
    if deps.admin_token is None:
        log.warning(
            "no admin token configured: every authenticated HTTP route answers 401."
            " Set CALLGATE_ADMIN_TOKEN in the environment (for example"
            " CALLGATE_ADMIN_TOKEN=$(openssl rand -hex 32)) and restart."
        )
    return app


async def start_http(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_grace: float = 10.0,
    limits: ListenerLimits | None = None,
) -> web.AppRunner:
    """Open the listener; the caller owns ``runner.cleanup()``.

    The listener bounds what each connection may cost (``limits``: header and keep-alive
    timeouts, a connection cap; see ``callgate.http.listener``). ``cleanup`` stops accepting,
    then lets requests in flight finish for ``shutdown_grace`` seconds at most.
    """
    limits = limits or ListenerLimits()
    runner = GuardedRunner(app, limits, handle_signals=False, shutdown_timeout=shutdown_grace)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log.info(
        "HTTP API listening on %s:%s (at most %d connections)",
        host,
        port,
        limits.max_connections,
    )
    return runner
