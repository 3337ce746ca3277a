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
from callgate.policy import Action, is_valid_client_id, is_valid_extension
from callgate.registry import PolicyRegistry

log = logging.getLogger(__name__)

_SPY_CONTEXT = "callgate"
"""The shipped dialplan's subroutines (``asterisk-conf/extensions_callgate.conf``)."""
_SPY_EXTENS = {"listen": Action.EAVESDROP, "whisper": Action.WHISPER}
_GRANT_VARIABLES = (
    "CALLGATE_DECISION",
    "CALLGATE_VERSION",
    "CALLGATE_REASON",
    "CG_CLIENT",
    "CG_ACTING",
    "ARG2",
)


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
        recovered = await self._recover_grants(rows)
        if recovered:
            log.info(
                "recovered %d grant(s) of spy sessions allowed before callgate (re)started",
                recovered,
            )
        adopted = self.tracker.rebuild(rows, asked_at=asked_at)
        if adopted:
            log.info("adopted %d spy session(s) found running after (re)connecting", len(adopted))
        self.enforcer.enforce(self.tracker.sessions())

    async def _recover_grants(self, rows: list[Message]) -> int:
        """Grants for the shipped dialplan's ChanSpy runs that callgate allowed but no longer
        remembers (it restarted while they ran): otherwise no policy change could end them.

        A spier of ``[callgate]`` ``listen``/``whisper`` carries the answer callgate set on it
        (``CALLGATE_DECISION=ALLOW``, ``CALLGATE_VERSION``, ``CALLGATE_REASON``), the client and
        acting extension the dialplan took from the endpoint and AstDB (``CG_CLIENT``,
        ``CG_ACTING``) and the target (the subroutine's ``ARG2``): read back with ``Getvar``
        (``write = call``), they rebuild the grant; ``rebuild`` then adopts the session and it is
        decided again against the policy in force. ChanSpy anywhere else is not callgate's.
        """
        recovered = 0
        for row in rows:
            uniqueid, channel = row.get("Uniqueid"), row.get("Channel")
            action = _SPY_EXTENS.get(row.get("Exten"))
            if (
                row.get("Application") != "ChanSpy"
                or row.get("Context") != _SPY_CONTEXT
                or action is None
                or not uniqueid
                or self.tracker.get(uniqueid) is not None
                or self.tracker.ended(uniqueid)
                or uniqueid in self.grants
            ):
                continue
            values = {}
            for name in _GRANT_VARIABLES:
                response, *_ = await self.client.send_action(
                    "Getvar", (("Channel", channel), ("Variable", name))
                )
                if not response.is_success:
                    break  # gone meanwhile
                values[name] = response.get("Value")
            else:
                version = values["CALLGATE_VERSION"]
                if (
                    values["CALLGATE_DECISION"] != "ALLOW"
                    or not version.isdigit()
                    or not is_valid_client_id(values["CG_CLIENT"])
                    or not is_valid_extension(values["CG_ACTING"])
                    or not is_valid_extension(values["ARG2"])
                ):
                    continue
                self.grants.note_allowed(
                    values["CG_CLIENT"],
                    action,
                    values["CG_ACTING"],
                    values["ARG2"],
                    uniqueid,
                    channel,
                    int(version),
                    values["CALLGATE_REASON"],
                )
                recovered += uniqueid in self.grants
        return recovered

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
