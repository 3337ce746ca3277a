"""The only module that wires callgate together: store, policies, FastAGI, HTTP, Manager.

Start order: open the store, load and compile every stored policy, then open the listeners (so the
first FastAGI session already decides by the stored policies), then connect to the Manager.
Stop order (SIGTERM or SIGINT): stop accepting, let sessions in flight finish within
``shutdown_grace`` seconds, close the Manager connection, close the store.
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

from callgate.agi.handlers import AgiDispatcher, DecisionRecorder, policy_routes
from callgate.agi.server import AgiConfig, AgiServer
from callgate.ami.client import ManagerConfig
from callgate.ami.service import LiveEnforcement
from callgate.ami.tracker import SpyGrants
from callgate.audit import AuditFanOut
from callgate.config import Settings
from callgate.domain import AuditRetention, retention
from callgate.http.api import ami_not_configured
from callgate.http.app import HttpDeps, build_app, start_http
from callgate.http.insight_routes import INSIGHT_CONFIG, LIVE_ENFORCEMENT, insight_config
from callgate.http.listener import MIN_HTTP_CONNECTIONS, ListenerLimits, http_connection_cap
from callgate.http.policy_routes import POLICY_CONFIG, policy_config
from callgate.http.replace_routes import REPLACE_SERVICE
from callgate.logs import LOG_FORMAT, LogFormatter
from callgate.metrics import Metrics
from callgate.pbx import DEFAULT_PBX, ManagerState
from callgate.policy import compile_policy
from callgate.registry import ClientPolicy, PolicyRegistry
from callgate.replace.agi_flow import ReplaceFlow
from callgate.replace.limits import PinWriteLimiter, PinWriteLimits
from callgate.replace.lockout import LockoutRules
from callgate.replace.manager_astdb import manager_astdb
from callgate.replace.pins import PinHasher
from callgate.replace.service import LiveAstDb, ReplaceService
from callgate.store import Store, open_store

log = logging.getLogger(__name__)

Stopper = Callable[[], Awaitable[None]]


@dataclass
class Services:
    """What the running daemon is made of, for tests that drive a whole daemon in-process."""

    settings: Settings
    registry: PolicyRegistry = field(default_factory=PolicyRegistry)
    stoppers: list[Stopper] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    metrics: Metrics = field(default_factory=Metrics)
    store: Store | None = None
    agi: AgiServer | None = None
    ami_status: Callable[[], ManagerState] = ami_not_configured
    """Set by the Manager component; ``/readyz`` reports it."""
    replace: ReplaceService | None = None
    manager_astdb: LiveAstDb = lambda: None
    """Set by the Manager component (``replace.manager_astdb.manager_astdb(client)``): AstDB
    over the Manager for restores made over HTTP and revocations of phone replacements."""
    spy_grants: SpyGrants = field(default_factory=SpyGrants)
    """Allowed listen/whisper decisions, for live enforcement: the FastAGI handler calls
    ``spy_grants.note_allowed(...)`` on each (see ``ami/tracker.py``)."""

    async def stop(self) -> None:
        """Stop every component, last started first."""
        while self.stoppers:
            stopper = self.stoppers.pop()
            try:
                await stopper()
            except Exception:
                log.exception("error while stopping")


def configure_logging(level: str, filename: Path | None = None) -> None:
    """Log to stderr (or ``filename``), one line a record, written out at once."""
    # Nothing in LOG_FORMAT needs the caller's file and line (a stack walk per record), the
    # thread or the process: skip collecting them (the logging HOWTO's "Optimization" switches).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler() if filename is None else logging.FileHandler(filename)
    handler.setFormatter(LogFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])


async def load_policies(store: Store, registry: PolicyRegistry) -> None:
    """Compile every client's newest stored policy into the registry."""
    stored = await store.policies.all_current()
    for policy in stored:
        registry.load(
            ClientPolicy(
                client_id=policy.client_id,
                version=policy.version,
                document=policy.document,
                compiled=compile_policy(policy.document),
                changed_at=policy.changed_at,
                changed_by=policy.changed_by,
            )
        )
    log.info("loaded %d stored policies from %s", len(stored), store.db.path)


async def _start_agi(services: Services, store: Store) -> None:
    """The FastAGI listener; its handler table routes each action (unknown ones are denied)."""
    # Every allowed eavesdrop/whisper decision also becomes a grant that live enforcement
    # matches with its ChanSpyStart (SpyerUniqueid = agi_uniqueid).
    audit = AuditFanOut(store.audit, services.spy_grants)
    recorder = DecisionRecorder(audit, services.metrics)
    routes = policy_routes(services.registry, recorder, services.settings.agi_answer_cache_size)
    if services.replace is not None:
        flow = ReplaceFlow(services.replace, services.metrics)
        routes.update(replace=flow.replace, restore=flow.restore)
    server = AgiServer(
        AgiConfig.from_settings(services.settings),
        AgiDispatcher(routes, recorder),
        services.metrics,
    )
    await server.start()
    services.agi = server
    services.stoppers.append(recorder.log.close)  # runs after server.stop: the last lines too
    services.stoppers.append(server.stop)


async def _start_replace(services: Services, store: Store) -> None:
    """Phone replace: PINs, lockout, replacements; revoked by policy changes."""
    settings = services.settings
    service = ReplaceService(
        store.replace,
        services.registry,
        store.audit,
        hasher=PinHasher(
            verify_threads=settings.replace_pin_verify_threads,
            write_threads=settings.replace_pin_write_threads,
        ),
        pin_writes=PinWriteLimiter(PinWriteLimits.from_settings(settings)),
        rules=LockoutRules.from_settings(settings),
        live_astdb=lambda: services.manager_astdb(),
    )
    services.registry.subscribe(service.on_policy_change)
    services.replace = service
    cleaner = asyncio.create_task(service.keep_astdb_clean(), name="replace-astdb-cleanup")

    async def stop() -> None:
        cleaner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cleaner
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(service.idle(), services.settings.shutdown_grace)
        service.close()  # started before the servers, so stopped after them

    services.stoppers.append(stop)


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


async def _start_http(services: Services, store: Store, live: LiveEnforcement | None) -> None:
    token = services.settings.admin_token
    app = build_app(
        HttpDeps(
            store=store,
            registry=services.registry,
            metrics=services.metrics,
            admin_token=token.get_secret_value() if token is not None else None,
            ready=services.ready.is_set,
            ami_status=lambda: services.ami_status(),
        )
    )
    if services.replace is not None:
        app[REPLACE_SERVICE] = services.replace
    app[POLICY_CONFIG] = policy_config(services.settings)
    app[INSIGHT_CONFIG] = insight_config(services.settings)
    if live is not None:
        app[LIVE_ENFORCEMENT] = live
    settings = services.settings
    host, port = settings.http_address
    runner = await start_http(
        app, host, port, shutdown_grace=settings.shutdown_grace, limits=http_limits(settings)
    )
    services.stoppers.append(runner.cleanup)


def _build_ami(services: Services, store: Store) -> LiveEnforcement | None:
    """Live enforcement, built (and subscribed to policy changes) before the other listeners:
    the registry calls its listeners one after the other, and a Hangup must not wait behind
    another listener's store round trip. It connects later, in ``_start_ami``."""
    settings = services.settings
    if settings.ami_address is None:
        return None
    host, port = settings.ami_address
    # Settings refuses `ami` without a user and a secret.
    assert settings.ami_user is not None
    assert settings.ami_secret is not None
    config = ManagerConfig(
        host,
        port,
        settings.ami_user,
        settings.ami_secret.get_secret_value(),
        action_timeout=settings.ami_action_timeout,
        ping_interval=settings.ami_ping_interval,
        ping_timeout=settings.ami_ping_timeout,
        backoff_max=settings.ami_backoff_max,
        auth_retry=settings.ami_auth_retry,
        pbx=DEFAULT_PBX,
    )
    live = LiveEnforcement(
        [config],
        services.registry.get,
        store.audit,
        services.metrics,
        grants=services.spy_grants,
        reconcile_interval=settings.ami_reconcile_interval,
    )
    services.registry.subscribe(live.on_policy_change)
    services.ami_status = live.status
    services.manager_astdb = manager_astdb(live.links[DEFAULT_PBX].client)
    return live


async def _start_ami(services: Services, live: LiveEnforcement | None) -> None:
    """Connect to the Manager: from then on a withdrawn right ends the session it allowed."""
    if live is None:
        log.warning(
            "live enforcement is off (no --ami): decisions are made, but a policy change"
            " cannot end a listen/whisper session already in progress"
        )
        return
    live.start()
    host, port = services.settings.ami_address or ("?", 0)
    log.info("live enforcement: connecting to the Asterisk Manager at %s:%s", host, port)
    services.stoppers.append(live.stop)


async def start(settings: Settings) -> Services:
    """Start every component; the caller owns ``services.stop()``."""
    services = Services(settings)
    try:
        raise_nofile_limit()
        # Components are added here in start order; each appends its own stopper.
        store = services.store = await open_store(settings.db_target)
        services.stoppers.append(store.close)
        store.policies.retention = retention(settings)
        services.metrics.decisions.label_clients(services.registry.has_policy)
        services.metrics.audit_lost.read_from(store.audit.lost_counts)
        store.audit.start_pruning(AuditRetention.from_settings(settings))  # store.close stops it
        await load_policies(store, services.registry)
        live = _build_ami(services, store)
        await _start_replace(services, store)
        await _start_agi(services, store)
        await _start_http(services, store, live)
        await _start_ami(services, live)
    except BaseException:
        await services.stop()
        raise
    services.ready.set()
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
