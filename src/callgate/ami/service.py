"""Live enforcement as one component: per PBX a Manager client, tracker and enforcer; housekeeping.

``daemon.py`` builds one ``LiveEnforcement`` when a Manager is configured (``--ami``: one PBX,
``DEFAULT_PBX``; or a ``[pbx.<name>]`` table each), hands its ``grants`` to the FastAGI handlers,
its ``on_policy_change`` to the policy changes and its ``states`` to ``/readyz``. Without a
Manager there is no connection: decisions are still made, but nothing already running can be
ended (``/readyz`` then says ``not_configured``).

Each PBX is a ``PbxLink``: its own connection (and watchdog), its own tracker and enforcer, so a
session is followed through, and hung up over, the Manager of the PBX it runs on. What they
share: the grants the FastAGI side notes (keyed by PBX and uniqueid), the audit sink, the
metrics and one housekeeping task.

With ``leases`` (several instances on PostgreSQL, ``callgate.ami.leases``) a link is active only
while this instance holds its PBX's enforcement lock; otherwise it is on standby: not connected,
tracking nothing. Without, every link is active (one instance).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from callgate.agi import variables
from callgate.ami.client import ManagerClient, ManagerConfig, ManagerError
from callgate.ami.enforcer import Enforcer, utc_now
from callgate.ami.leases import Leases
from callgate.ami.protocol import Message
from callgate.ami.tracker import SessionTracker, SpyGrants, SpySession
from callgate.audit import AuditSink
from callgate.metrics import Metrics
from callgate.pbx import ChannelRef, ManagerState, PbxName
from callgate.policy import Action, is_valid_client_id, is_valid_extension
from callgate.registry import ClientPolicy

log = logging.getLogger(__name__)

_SPY_CONTEXT = "callgate"
"""The shipped dialplan's subroutines (``asterisk-conf/extensions_callgate.conf``)."""
_SPY_EXTENS = {"listen": Action.EAVESDROP, "whisper": Action.WHISPER}
_TARGET_ARGUMENT = "ARG2"
"""The ``listen``/``whisper`` subroutine's second argument: the target extension."""
_GRANT_VARIABLES = (
    variables.DECISION,
    variables.VERSION,
    variables.REASON,
    variables.DIALPLAN_CLIENT,
    variables.DIALPLAN_ACTING,
    _TARGET_ARGUMENT,
)
_WORST_FIRST = (
    ManagerState.AUTH_FAILED,
    ManagerState.DISCONNECTED,
    ManagerState.CONNECTED,
    ManagerState.STANDBY,
    ManagerState.NOT_CONFIGURED,
)
"""How the states of several PBXes sum up for ``/readyz``: the worst one shows."""

Policies = Callable[[str], ClientPolicy]


class PbxLink:
    """One PBX's live enforcement: its Manager connection, the sessions seen over it, and the
    enforcer that hangs them up over it."""

    def __init__(
        self,
        config: ManagerConfig,
        grants: SpyGrants,
        policies: Policies,
        audit: AuditSink,
        metrics: Metrics,
        *,
        stop_grace: float,
        on_state: Callable[[PbxLink], None],
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.pbx: PbxName = config.pbx
        self.grants = grants
        self.tracker = SessionTracker(
            config.pbx, grants, audit=audit, metrics=metrics, stop_grace=stop_grace
        )
        self.client = ManagerClient(
            config,
            on_event=self._on_event,
            on_connected=self.reconcile,
            on_state=lambda _: on_state(self),
        )
        self.enforcer = Enforcer(self.client, self.tracker, policies, metrics, now=now)
        self.active = False
        """Connected (or connecting) and enforcing; ``False``: on standby."""
        self._on_state = on_state
        self._adopting: dict[ChannelRef, asyncio.Task[None]] = {}
        """Spiers whose grant is being read back from their channel (``_adopt``)."""

    @property
    def state(self) -> ManagerState:
        """This PBX as ``/readyz`` shows it: the Manager connection's state, or standby."""
        return self.client.state if self.active else ManagerState.STANDBY

    def activate(self) -> None:
        """Connect and enforce (once logged in, ``reconcile`` adopts what runs)."""
        if not self.active:
            self.active = True
            self.client.start()
            self._on_state(self)

    async def deactivate(self) -> None:
        """Stop enforcing: disconnect, and forget the sessions (their new enforcer adopts them)."""
        if not self.active:
            return
        self.active = False
        for task in list(self._adopting.values()):
            task.cancel()
        await asyncio.gather(*self._adopting.values(), return_exceptions=True)
        await self.enforcer.stop()
        await self.client.stop()
        released = self.tracker.release()
        if released:
            log.info("PBX %s: %d session(s) left to the instance taking over", self.pbx, released)
        self._on_state(self)

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
            if row.get("Application") != "ChanSpy":
                continue
            uniqueid, channel = row.get("Uniqueid"), row.get("Channel")
            action = self._callgate_spy(row.get("Context"), row.get("Exten"), uniqueid)
            if action is not None:
                recovered += await self._recover_grant(uniqueid, channel, action)
        return recovered

    def _callgate_spy(self, context: str, exten: str, uniqueid: str) -> Action | None:
        """The action of a ChanSpy run of the shipped dialplan's ``[callgate]`` ``listen`` or
        ``whisper`` that is neither tracked, nor ended, nor granted here; else ``None``."""
        spyer = self.tracker.ref(uniqueid)
        action = _SPY_EXTENS.get(exten)
        if (
            context != _SPY_CONTEXT
            or action is None
            or not uniqueid
            or self.tracker.get(spyer) is not None
            or self.tracker.ended(spyer)
            or spyer in self.grants
        ):
            return None
        return action

    async def _recover_grant(self, uniqueid: str, channel: str, action: Action) -> bool:
        """Read the spier's grant back from its channel variables; whether one was noted."""
        values = {}
        for name in _GRANT_VARIABLES:
            response, *_ = await self.client.send_action(
                "Getvar", (("Channel", channel), ("Variable", name))
            )
            if not response.is_success:
                return False  # gone meanwhile
            values[name] = response.get("Value")
        version = values[variables.VERSION]
        client_id = values[variables.DIALPLAN_CLIENT]
        acting = values[variables.DIALPLAN_ACTING]
        target = values[_TARGET_ARGUMENT]
        if (
            values[variables.DECISION] != variables.ALLOW
            or not version.isdigit()
            or not is_valid_client_id(client_id)
            or not is_valid_extension(acting)
            or not is_valid_extension(target)
        ):
            return False
        self.grants.note_allowed(
            client_id,
            action,
            acting,
            target,
            uniqueid,
            channel,
            int(version),
            values[variables.REASON],
            pbx=self.pbx,
        )
        return self.tracker.ref(uniqueid) in self.grants

    def _on_event(self, message: Message) -> None:
        session = self.tracker.handle_event(message)
        if session is not None:
            self.enforcer.enforce([session])
        elif message.event == "ChanSpyStart":
            self._maybe_adopt(message)

    def _maybe_adopt(self, start: Message) -> None:
        """A ChanSpyStart without a grant here: if it is the shipped dialplan's listen/whisper,
        another instance allowed it (several instances: the one enforcing on this PBX is not
        always the one that answered the FastAGI session). Its grant is on its channel."""
        uniqueid = start.get("SpyerUniqueid")
        action = self._callgate_spy(start.get("SpyerContext"), start.get("SpyerExten"), uniqueid)
        spyer = self.tracker.ref(uniqueid)
        if action is None or spyer in self._adopting:
            return
        task = asyncio.create_task(self._adopt(start, action), name=f"ami-adopt[{spyer}]")
        self._adopting[spyer] = task
        task.add_done_callback(lambda _: self._adopting.pop(spyer, None))

    async def _adopt(self, start: Message, action: Action) -> None:
        uniqueid, channel = start.get("SpyerUniqueid"), start.get("SpyerChannel")
        try:
            recovered = await self._recover_grant(uniqueid, channel, action)
        except ManagerError as exc:
            log.warning("grant of %s not read (%s): adopted at the next check", channel, exc)
            return
        spyer = self.tracker.ref(uniqueid)
        if not recovered or self.tracker.gone(spyer):
            return
        session = self.tracker.handle_event(start)  # now with its grant
        if session is not None:
            self.enforcer.enforce([session])


class LiveEnforcement:
    """Every PBX's ``PbxLink`` (one per ``ManagerConfig.pbx``), started and stopped together."""

    def __init__(
        self,
        managers: Iterable[ManagerConfig],
        policies: Policies,
        audit: AuditSink,
        metrics: Metrics,
        *,
        grants: SpyGrants | None = None,
        stop_grace: float = 3.0,
        reconcile_interval: float = 60.0,
        now: Callable[[], datetime] = utc_now,
        leases: Leases | None = None,
    ) -> None:
        """``now``: the wall clock grants are judged by (a test injects its own)."""
        self.grants = grants if grants is not None else SpyGrants()
        links: dict[PbxName, PbxLink] = {}
        for config in managers:
            if config.pbx in links:
                raise ValueError(f"two Manager connections for PBX {config.pbx!r}")
            links[config.pbx] = PbxLink(
                config,
                self.grants,
                policies,
                audit,
                metrics,
                stop_grace=stop_grace,
                on_state=self._on_state,
                now=now,
            )
        if not links:
            raise ValueError("live enforcement needs at least one Manager connection")
        self.links: Mapping[PbxName, PbxLink] = links
        self.leases = leases
        """``None``: this instance enforces on every PBX (one instance, SQLite)."""
        self._metrics = metrics
        self._reconcile_interval = reconcile_interval
        self._housekeeping: asyncio.Task[None] | None = None
        self._stopping = False

    def status(self) -> ManagerState:
        """``/readyz``'s one ``ami`` value: the PBX's state (of several, the worst one)."""
        states = {link.state for link in self.links.values()}
        return next(state for state in _WORST_FIRST if state in states)

    def states(self) -> dict[PbxName, ManagerState]:
        """Each PBX's state here (``standby``: another instance enforces on it)."""
        return {pbx: link.state for pbx, link in self.links.items()}

    def session(self, spyer: ChannelRef) -> SpySession | None:
        """The session of that spier, on the PBX it runs on."""
        link = self.links.get(spyer.pbx)
        return link.tracker.get(spyer) if link is not None else None

    def sessions(self) -> list[SpySession]:
        return [s for link in self.links.values() for s in link.tracker.sessions()]

    async def end_session(self, spyer: ChannelRef, by: str) -> bool | None:
        """Hang up that listener because operator ``by`` asked (audited ``operator``).

        ``None``: no such session; False: not a channel callgate may hang up; raises
        ``ManagerError`` when its PBX's Manager cannot do it now.
        """
        link = self.links.get(spyer.pbx)
        session = link.tracker.get(spyer) if link is not None else None
        if link is None or session is None:
            return None
        return await link.enforcer.end_by_operator(session, by)

    def start(self) -> None:
        self._stopping = False
        if self.leases is None:
            for link in self.links.values():
                link.activate()
        else:
            for link in self.links.values():
                self._on_state(link)  # standby until the lease comes
            self.leases.start(self._on_lease)
        if self._housekeeping is None:
            self._housekeeping = asyncio.create_task(self._housekeep(), name="ami-housekeeping")

    async def stop(self) -> None:
        self._stopping = True
        task, self._housekeeping = self._housekeeping, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for link in self.links.values():
            # Disconnected first, then the locks released: never two instances at once.
            await link.enforcer.stop()
            await link.client.stop()
        if self.leases is not None:
            await self.leases.stop()
        self._metrics.ami_connected.set(0)

    async def _on_lease(self, pbx: PbxName, held: bool) -> None:
        link = self.links[pbx]
        if held and not self._stopping:
            link.activate()
        elif not held:
            await link.deactivate()

    async def on_policy_change(self, old: ClientPolicy, new: ClientPolicy) -> None:
        """The policy-change listener (the document, the settings or the grants): each PBX's
        sessions of that client are decided again, at the current time (a PBX on standby tracks
        none: the instance enforcing on it decides them)."""
        for link in self.links.values():
            await link.enforcer.on_policy_change(old, new)

    async def reconcile(self) -> None:
        """Reconcile every PBX (see ``PbxLink.reconcile``)."""
        for link in self.links.values():
            await link.reconcile()

    def _on_state(self, link: PbxLink) -> None:
        state = self.status()
        metrics = self._metrics
        metrics.ami_connected.set(1 if state is ManagerState.CONNECTED else 0)
        for each in ManagerState:
            if each is not ManagerState.NOT_CONFIGURED:
                metrics.ami_state.labels(each.metric_label).set(1 if each is state else 0)
                shown = 1 if each is link.state else 0
                metrics.ami_pbx_state.labels(link.pbx, each.metric_label).set(shown)
        metrics.ami_enforcing.labels(link.pbx).set(1 if link.active else 0)

    async def _housekeep(self) -> None:
        last_reconcile = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            for link in self.links.values():
                link.tracker.expire()
            now = time.monotonic()
            if now - last_reconcile >= self._reconcile_interval:
                last_reconcile = now
                for link in self.links.values():
                    if link.active and link.client.state is ManagerState.CONNECTED:
                        try:
                            await link.reconcile()
                        except ManagerError as exc:
                            log.warning(
                                "periodic reconciliation with the Manager of PBX %s failed: %s",
                                link.pbx,
                                exc,
                            )
