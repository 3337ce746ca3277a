"""The only module that wires callgate together: store, services, FastAGI, HTTP, Manager.

``build`` makes every part from the settings and the opened store and hands each one what it
needs, in one place: nothing is bound late, nothing subscribes itself, no entry point is built
before what it serves. ``Services.components`` is the one list where order matters: ``start``
starts them in that order and the daemon is ready once all have; ``stop`` stops them in the
reverse order (as does a failed start, for the ones that had started):

1. ``store``: opened first (everything is built on it); pruning of the audit log starts. It
   closes last: the audit events still queued are written, then the database closes.
2. ``policies``: every stored policy is compiled into the registry, and the registry follows the
   store's change feed from then on (its only source: a write made here and a write made by
   another instance reach it the same way). The revocations of listens (live enforcement) and of
   replacements listen to the registry, each in its own task.
3. ``replace``: the task that settles AstDB deletions owed while the Manager was unreachable.
4. ``agi``: the FastAGI listener, opened once the policies are loaded, so the first session
   already decides by them. Stopped: no new sessions, those in flight finish within
   ``shutdown_grace`` seconds, then the last decision lines are written.
5. ``http``: the HTTP API (same grace for requests in flight).
6. ``ami``: the Manager connections (``--ami``, or one per ``[pbx.<name>]`` table): from then on
   a withdrawn right ends the session it allowed. With PostgreSQL each PBX is enforced by the
   one instance holding its lock (``callgate.ami.leases``); the others stand by.

Readiness (``/readyz``): ready once every component has started, and, with PostgreSQL, while the
change feed is connected and caught up (``store_unreachable`` otherwise: FastAGI keeps
answering from the policies it holds, writes answer 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from callgate.agi.handlers import AgiDispatcher, DecisionRecorder, policy_routes
from callgate.agi.pbx_gate import PbxGate
from callgate.agi.server import AgiConfig, AgiServer
from callgate.ami.client import ManagerConfig
from callgate.ami.leases import PgLeases
from callgate.ami.service import LiveEnforcement
from callgate.ami.tracker import SpyGrants
from callgate.config import Settings
from callgate.domain import AuditRetention, retention
from callgate.http.app import HttpDeps, build_app, start_http
from callgate.http.insight_routes import insight_config
from callgate.http.listener import MIN_HTTP_CONNECTIONS, ListenerLimits, http_connection_cap
from callgate.http.policy_routes import policy_config
from callgate.logs import LOG_FORMAT, LogFormatter
from callgate.metrics import Metrics
from callgate.pbx import DEFAULT_PBX, ManagerState, PbxName
from callgate.registry import PolicyRegistry
from callgate.replace.agi_flow import ReplaceFlow
from callgate.replace.limits import PinWriteLimiter, PinWriteLimits
from callgate.replace.lockout import LockoutRules
from callgate.replace.manager_astdb import manager_astdbs
from callgate.replace.pins import PinHasher
from callgate.replace.service import ReplaceService
from callgate.services import (
    AppServices,
    GrantLimits,
    PolicyFollower,
    PolicyService,
    SupervisionService,
    TokenService,
)
from callgate.store import AnyStore as Store
from callgate.store import Store as SqliteStore
from callgate.store import open_store

__all__ = [
    "LOG_FORMAT",
    "Component",
    "LogFormatter",
    "Services",
    "build",
    "configure_logging",
    "http_limits",
    "raise_nofile_limit",
    "run",
    "start",
]

log = logging.getLogger(__name__)


async def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Component:
    """A part of the daemon with a lifecycle. ``start`` either succeeds or leaves nothing
    running; ``stop`` is called once, and only after ``start`` succeeded."""

    name: str
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]


@dataclass
class Services:
    """What the running daemon is made of (tests and benches drive a whole daemon through it)."""

    settings: Settings
    store: Store
    registry: PolicyRegistry
    metrics: Metrics
    spy_grants: SpyGrants
    """Allowed listen/whisper decisions, from the FastAGI decision recorder to live enforcement."""
    app: AppServices
    agi: AgiServer
    live: LiveEnforcement | None
    components: list[Component] = field(default_factory=list)
    """Start order; stopped in the reverse order."""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    started: list[Component] = field(default_factory=list)

    def ami_status(self) -> ManagerState:
        """Live enforcement over the Manager, as ``/readyz`` reports it."""
        return ManagerState.NOT_CONFIGURED if self.live is None else self.live.status()

    def pbx_states(self) -> dict[PbxName, ManagerState]:
        """Each PBX's Manager state here, as ``/readyz`` reports it (``standby``: another
        instance enforces on it)."""
        if self.live is None:
            return dict.fromkeys(known_pbxes(self.settings), ManagerState.NOT_CONFIGURED)
        return self.live.states()

    def store_reachable(self) -> bool:
        """SQLite: always. PostgreSQL: the change feed is connected and caught up."""
        return store_reachable(self.store)

    async def start(self) -> None:
        """Start every component in order; if one fails, stop those started, and raise."""
        try:
            for component in self.components:
                await component.start()
                self.started.append(component)
                log.debug("started %s", component.name)
        except BaseException:
            await self.stop()
            raise
        self.ready.set()

    async def stop(self) -> None:
        """Stop every started component, last started first."""
        self.ready.clear()
        while self.started:
            component = self.started.pop()
            try:
                await component.stop()
            except Exception:
                log.exception("error while stopping %s", component.name)
            else:
                log.debug("stopped %s", component.name)


def configure_logging(level: str, filename: Path | None = None) -> None:
    """Log to stderr (or ``filename``), one line a record, written out at once."""
    # Nothing in LOG_FORMAT needs the thread or the process: skip collecting them (the logging
    # HOWTO's "Optimization" switches). The decision lines, the only ones by the thousand, never
    # look up the caller's frame (``DecisionLog`` makes its records with ``makeRecord``).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler() if filename is None else logging.FileHandler(filename)
    handler.setFormatter(LogFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def raise_nofile_limit() -> int:
    """Raise the soft descriptor limit to the hard one; return the soft limit now in force.

    Distributions start services at a soft limit of 1024 under a far higher hard one: every
    descriptor the hard limit allows is one more FastAGI session or HTTP connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or (soft != resource.RLIM_INFINITY and soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            # macOS refuses an unlimited soft limit (above OPEN_MAX): keep the one we have.
            log.info("kept the descriptor limit at %s (raising it failed: %s)", soft, exc)
        else:
            soft = hard
    return _UNLIMITED_FDS if soft == resource.RLIM_INFINITY else soft


_UNLIMITED_FDS = 1 << 20
"""The budget taken for an unlimited descriptor limit: far beyond any sane connection cap."""


def http_limits(settings: Settings, nofile: int | None = None) -> ListenerLimits:
    """The HTTP listener's bounds; its connection cap leaves FastAGI's descriptors free.

    FastAGI takes one descriptor a session, at most ``agi_max_sessions``; the store, the
    listeners, the Manager and logs fit in ``fd_reserve``; HTTP gets what is left, up to
    ``http_max_connections``. So however many clients hold HTTP connections open, FastAGI can
    still accept its sessions."""
    nofile = nofile if nofile is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile == resource.RLIM_INFINITY:
        nofile = _UNLIMITED_FDS
    cap = http_connection_cap(
        nofile, settings.agi_max_sessions, settings.fd_reserve, settings.http_max_connections
    )
    needed = settings.agi_max_sessions + settings.fd_reserve + MIN_HTTP_CONNECTIONS
    if nofile < needed:
        log.warning(
            "the descriptor limit (%d) is below agi_max_sessions (%d) + fd_reserve (%d) + %d"
            " HTTP connections: FastAGI can run out of descriptors before its session cap."
            " Raise the limit (systemd LimitNOFILE=, ulimit -n) or lower agi_max_sessions.",
            nofile,
            settings.agi_max_sessions,
            settings.fd_reserve,
            MIN_HTTP_CONNECTIONS,
        )
    elif cap < settings.http_max_connections:
        log.info(
            "HTTP connections capped at %d (not %d): the descriptor limit is %d, FastAGI may"
            " need %d and %d are reserved",
            cap,
            settings.http_max_connections,
            nofile,
            settings.agi_max_sessions,
            settings.fd_reserve,
        )
    return ListenerLimits(
        header_timeout=settings.http_header_timeout,
        keepalive_timeout=settings.http_keepalive_timeout,
        max_connections=cap,
    )


def _manager_configs(settings: Settings) -> list[ManagerConfig]:
    return [
        ManagerConfig(
            manager.host,
            manager.port,
            manager.user,
            manager.secret.get_secret_value(),
            action_timeout=settings.ami_action_timeout,
            ping_interval=settings.ami_ping_interval,
            ping_timeout=settings.ami_ping_timeout,
            backoff_max=settings.ami_backoff_max,
            auth_retry=settings.ami_auth_retry,
            pbx=PbxName(manager.name),
        )
        for manager in settings.pbx_managers
    ]


def known_pbxes(settings: Settings) -> list[PbxName]:
    """The PBXes FastAGI sessions may come from: those configured, else ``DEFAULT_PBX`` (the
    name the shipped dialplan sends until ``CALLGATE_PBX`` is set)."""
    return [PbxName(m.name) for m in settings.pbx_managers] or [DEFAULT_PBX]


def store_reachable(store: Store) -> bool:
    return isinstance(store, SqliteStore) or store.changes.healthy


def _leases(settings: Settings, store: Store, managers: list[ManagerConfig]) -> PgLeases | None:
    """Several instances may share a PostgreSQL store: one enforces on each PBX (``leases``).
    SQLite has one instance: it enforces on every PBX."""
    if isinstance(store, SqliteStore) or not managers:
        return None
    return PgLeases(
        store.db.conninfo,
        [config.pbx for config in managers],
        interval=settings.enforce_lock_interval,
    )


def _follow_store_health(store: Store, metrics: Metrics) -> None:
    metrics.store_reachable.set(1 if store_reachable(store) else 0)
    if isinstance(store, SqliteStore):
        return

    def changed(healthy: bool) -> None:
        metrics.store_reachable.set(1 if healthy else 0)
        if healthy:
            log.info("store reachable again: caught up with every change; /readyz ready")
        else:
            log.warning(
                "store unreachable: FastAGI answers from the policies held here, writes answer"
                " 503, /readyz says store_unreachable until the change feed has caught up"
            )

    store.changes.on_health = changed


def build(settings: Settings, store: Store) -> Services:
    """Make every part on the opened ``store`` and wire them; start nothing (no task, no I/O)."""
    store.policies.retention = retention(settings)
    store.supervision.retention = retention(settings)
    registry = PolicyRegistry()
    metrics = Metrics()
    metrics.decisions.label_clients(registry.has_policy)
    metrics.audit_lost.read_from(store.audit.lost_counts)
    grants = SpyGrants()

    _follow_store_health(store, metrics)
    managers = _manager_configs(settings)
    live = None
    if managers:
        live = LiveEnforcement(
            managers,
            registry.get,
            store.audit,
            metrics,
            grants=grants,
            reconcile_interval=settings.ami_reconcile_interval,
            leases=_leases(settings, store, managers),
        )
    # One record of every FastAGI decision, the policy routes' and phone replace's alike.
    recorder = DecisionRecorder(store.audit, metrics, grants=grants)
    replace = ReplaceService(
        store.replace,
        registry,
        recorder,
        hasher=PinHasher(
            verify_threads=settings.replace_pin_verify_threads,
            write_threads=settings.replace_pin_write_threads,
        ),
        pin_writes=PinWriteLimiter(PinWriteLimits.from_settings(settings)),
        rules=LockoutRules.from_settings(settings),
        live_astdb=manager_astdbs(
            {pbx: link.client for pbx, link in live.links.items()} if live is not None else {}
        ),
    )
    # The revocations follow the registry, each in its own task (a Hangup never waits behind
    # a replacement's store round trips, nor a write's answer behind either).
    if live is not None:
        registry.subscribe(live.on_policy_change)
    # The store half of revoking replacements is promised by the write's answer (GET
    # .../replacements right after it no longer lists them); its AstDB half runs after.
    registry.subscribe(replace.on_policy_change, before_answer=True)
    follower = PolicyFollower(store.policies, registry, store.supervision)
    app = AppServices(
        policies=PolicyService(store.policies, registry, follower),
        tokens=TokenService(store.tokens),
        replace=replace,
        audit=store.audit,
        supervision=SupervisionService(
            store.supervision, registry, limits=GrantLimits.from_settings(settings)
        ),
    )

    routes = policy_routes(registry, recorder, settings.agi_answer_cache_size)
    flow = ReplaceFlow(replace, recorder)
    routes.update(replace=flow.replace, restore=flow.restore)
    dispatcher = PbxGate(AgiDispatcher(routes, recorder), known_pbxes(settings), recorder)
    agi = AgiServer(AgiConfig.from_settings(settings), dispatcher, metrics)

    services = Services(settings, store, registry, metrics, grants, app, agi, live)
    token = settings.admin_token
    http = build_app(
        HttpDeps(
            services=app,
            metrics=metrics,
            admin_token=token.get_secret_value() if token is not None else None,
            policy=policy_config(settings),
            ready=services.ready.is_set,
            ami_status=services.ami_status,
            insight=insight_config(settings),
            live=live,
            pbx_states=services.pbx_states,
            store_reachable=services.store_reachable,
        )
    )
    services.components = [
        _store_component(settings, store),
        _policies_component(store, registry, follower),
        _replace_component(settings, replace),
        _agi_component(agi, recorder),
        _http_component(settings, http),
        _ami_component(settings, live),
    ]
    return services


def _store_component(settings: Settings, store: Store) -> Component:
    async def start() -> None:
        store.audit.start_pruning(AuditRetention.from_settings(settings))  # closing stops it

    return Component("store", start, store.close)


def _policies_component(
    store: Store, registry: PolicyRegistry, follower: PolicyFollower
) -> Component:
    unsubscribe: list[Callable[[], None]] = []

    async def start() -> None:
        # Following first: a change committed while the rest loads is not missed (the
        # follower ignores what the registry already holds).
        unsubscribe.append(store.changes.subscribe(follower.on_change))
        loaded = await follower.load_all()
        log.info("loaded %d stored policies from %s", loaded, store.db.path)

    async def stop() -> None:
        for stop_following in unsubscribe:
            stop_following()
        await registry.close()

    return Component("policies", start, stop)


def _replace_component(settings: Settings, service: ReplaceService) -> Component:
    cleaner: list[asyncio.Task[None]] = []

    async def start() -> None:
        cleaner.append(
            asyncio.create_task(service.keep_astdb_clean(), name="replace-astdb-cleanup")
        )

    async def stop() -> None:
        for task in cleaner:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(service.idle(), settings.shutdown_grace)
        service.close()

    return Component("replace", start, stop)


def _agi_component(server: AgiServer, recorder: DecisionRecorder) -> Component:
    async def stop() -> None:
        await server.stop()
        await recorder.log.close()  # after the sessions: their last lines too

    return Component("agi", server.start, stop)


def _http_component(settings: Settings, app: web.Application) -> Component:
    runner: list[web.AppRunner] = []

    async def start() -> None:
        host, port = settings.http_address
        runner.append(
            await start_http(
                app,
                host,
                port,
                shutdown_grace=settings.shutdown_grace,
                limits=http_limits(settings),
            )
        )

    async def stop() -> None:
        for each in runner:
            await each.cleanup()

    return Component("http", start, stop)


def _ami_component(settings: Settings, live: LiveEnforcement | None) -> Component:
    async def start() -> None:
        if live is None:
            log.warning(
                "live enforcement is off (no --ami): decisions are made, but a policy change"
                " cannot end a listen/whisper session already in progress"
            )
            return
        live.start()
        for manager in settings.pbx_managers:
            log.info(
                "live enforcement on PBX %s: the Asterisk Manager at %s:%s%s",
                manager.name,
                manager.host,
                manager.port,
                " (once this instance holds its enforcement lock)" if live.leases else "",
            )

    async def stop() -> None:
        if live is not None:
            await live.stop()

    return Component("ami", start, stop)


async def start(settings: Settings) -> Services:
    """Open the store, build everything on it, start the components; the caller owns
    ``services.stop()``."""
    raise_nofile_limit()
    store = await open_store(settings.db_target)
    try:
        services = build(settings, store)
    except BaseException:
        await store.close()
        raise
    await services.start()  # the store is its first component: a failure closes it too
    return services


async def run(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    services = await start(settings)
    try:
        await stop.wait()
        log.info("stopping: no new sessions; waiting up to %ss", settings.shutdown_grace)
    finally:
        await services.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    log.info("stopped")
