"""Live enforcement as one component: Manager client, session tracker, enforcer, housekeeping.

``daemon.py`` builds one ``LiveEnforcement`` when ``--ami`` is given, hands its ``grants`` to the
FastAGI handlers and its ``status`` to ``/readyz``. Without ``--ami`` there is no Manager
connection: decisions are still made, but nothing already running can be ended
(``status()`` is then ``not_configured``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from callgate.ami.client import ManagerClient, ManagerConfig, ManagerError, ManagerState
from callgate.ami.enforcer import Enforcer
from callgate.ami.protocol import Message
from callgate.ami.tracker import SessionTracker, SpyGrants
from callgate.audit import AuditSink
from callgate.metrics import Metrics
from callgate.registry import PolicyRegistry

log = logging.getLogger(__name__)


class LiveEnforcement:
    def __init__(
        self,
        config: ManagerConfig,
        registry: PolicyRegistry,
        audit: AuditSink,
        metrics: Metrics,
        *,
        grants: SpyGrants | None = None,
        stop_grace: float = 3.0,
        reconcile_interval: float = 60.0,
    ) -> None:
        self.grants = grants if grants is not None else SpyGrants()
        self.tracker = SessionTracker(
            self.grants, audit=audit, metrics=metrics, stop_grace=stop_grace
        )
        self.client = ManagerClient(
            config,
            on_event=self._on_event,
            on_connected=self.reconcile,
            on_state=self._on_state,
        )
        self.enforcer = Enforcer(self.client, self.tracker, registry.get, metrics)
        self._metrics = metrics
        self._reconcile_interval = reconcile_interval
        self._housekeeping: asyncio.Task[None] | None = None
        registry.subscribe(self.enforcer.on_policy_change)

    def status(self) -> ManagerState:
        return self.client.state

    def start(self) -> None:
        self.client.start()
        if self._housekeeping is None:
            self._housekeeping = asyncio.create_task(self._housekeep(), name="ami-housekeeping")

    async def stop(self) -> None:
        task, self._housekeeping = self._housekeeping, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.enforcer.stop()
        await self.client.stop()
        self._metrics.ami_connected.set(0)

    async def reconcile(self) -> None:
        """Trust nothing tracked until it matches Asterisk's channels; then re-decide it all."""
        asked_at = time.monotonic()
        response, *rows = await self.client.send_action(
            "CoreShowChannels", list_complete="CoreShowChannelsComplete"
        )
        if not response.is_success:
            raise ManagerError(
                f"CoreShowChannels refused ({response.get('Message')}): the Manager user needs"
                " write=reporting to rebuild the sessions after a reconnect"
            )
        adopted = self.tracker.rebuild(rows, asked_at=asked_at)
        if adopted:
            log.info("adopted %d spy session(s) found running after (re)connecting", len(adopted))
        self.enforcer.enforce(self.tracker.sessions())

    def _on_event(self, message: Message) -> None:
        session = self.tracker.handle_event(message)
        if session is not None:
            self.enforcer.enforce([session])

    def _on_state(self, state: ManagerState) -> None:
        self._metrics.ami_connected.set(1 if state is ManagerState.CONNECTED else 0)
        for each in ManagerState:
            if each is not ManagerState.NOT_CONFIGURED:
                self._metrics.ami_state.labels(each.value).set(1 if each is state else 0)

    async def _housekeep(self) -> None:
        last_reconcile = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            self.tracker.expire()
            now = time.monotonic()
            if now - last_reconcile >= self._reconcile_interval:
                last_reconcile = now
                if self.client.state is ManagerState.CONNECTED:
                    try:
                        await self.reconcile()
                    except ManagerError as exc:
                        log.warning("periodic reconciliation with Asterisk failed: %s", exc)
