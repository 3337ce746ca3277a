"""Fixtures of the live-enforcement tests: the fake Manager on loopback, a policy registry, an
audit sink that keeps what it is given, and the real client/tracker/enforcer wired as the daemon
wires them, with timings shortened."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from callgate.ami.client import ManagerConfig
from callgate.ami.service import LiveEnforcement
from callgate.ami.tracker import SpySession
from callgate.audit import AuditEvent
from callgate.metrics import Metrics
from callgate.pbx import DEFAULT_PBX, ChannelRef, ManagerState
from callgate.policy import compile_policy, parse_document
from callgate.registry import ClientPolicy, PolicyRegistry
from fake_ami import FakeAmi
from support import wait_until

CLIENT = "acme"
REFERENCE: dict[str, Any] = {
    "groups": {"support": ["100", "101"], "sales": ["102", "101"], "hr": ["100", "101", "103"]},
    "pickup_share_groups": ["support", "sales"],
    "eavesdrop_100": ["support"],
    "whisper_101": ["sales", "hr"],
}


def fast_config(port: int, **overrides: Any) -> ManagerConfig:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "username": "callgate",
        "secret": "s3cret",
        "connect_timeout": 1.0,
        "login_timeout": 1.0,
        "action_timeout": 1.0,
        "ping_interval": 0.5,
        "ping_timeout": 2.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "auth_retry": 30.0,
    }
    values.update(overrides)
    return ManagerConfig(**values)


def policy(version: int, document: dict[str, Any], client: str = CLIENT) -> ClientPolicy:
    doc = parse_document(document)
    return ClientPolicy(client, version, doc, compile_policy(doc))


@dataclass
class RecordingAudit:
    events: list[AuditEvent] = field(default_factory=list)

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)

    def ends(self) -> list[tuple[str | None, str | None]]:
        return [(e.uniqueid, e.end_reason) for e in self.events if e.ended is not None]


@dataclass
class WallClock:
    """The wall clock live enforcement judges grants by: the real one, moved by ``offset``
    (it runs at the real pace, so the expiry timer's real sleep meets it)."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Live:
    fake: FakeAmi
    registry: PolicyRegistry
    audit: RecordingAudit
    metrics: Metrics
    service: LiveEnforcement
    wall: WallClock = field(default_factory=WallClock)

    def allow(
        self,
        action: str,
        ext: str,
        target: str,
        uniqueid: str,
        channel: str,
        grant_id: str | None = None,
    ) -> None:
        """What the FastAGI handler does after an allowed eavesdrop/whisper decision (by the
        grant ``grant_id``, when given)."""
        current = self.registry.get(CLIENT)
        self.service.grants.note_allowed(
            CLIENT,
            action,
            ext,
            target,
            uniqueid,
            channel,
            current.version,
            "temporary_grant" if grant_id else "eavesdrop_group",
            pbx=DEFAULT_PBX,
            grant_id=grant_id,
        )

    async def spy(
        self,
        action: str,
        ext: str,
        target: str,
        n: int,
        *,
        announce: bool = True,
        grant_id: str | None = None,
    ) -> tuple[str, str]:
        """An allowed session: FastAGI allow, then ChanSpy on the AGI channel. (channel, uid)"""
        channel, uniqueid = f"PJSIP/acme_{ext}-{n:08x}", f"1795723209.{n}"
        self.allow(action, ext, target, uniqueid, channel, grant_id)
        await self.fake.start_spy(
            channel,
            uniqueid,
            f"PJSIP/acme_{target}-{n + 1000:08x}",
            f"1795723206.{n}",
            announce=announce,
        )
        return channel, uniqueid

    def session(self, uniqueid: str) -> SpySession | None:
        return self.service.session(ChannelRef(DEFAULT_PBX, uniqueid))

    def hangups(self) -> list[str]:
        return [a.get("Channel") for a in self.fake.received("Hangup")]

    async def connected(self) -> None:
        await wait_until(lambda: self.service.status() is ManagerState.CONNECTED)


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


@pytest.fixture
async def live(fake: FakeAmi, wall: WallClock) -> AsyncIterator[Live]:
    registry = PolicyRegistry()
    registry.load(policy(1, REFERENCE))
    audit = RecordingAudit()
    metrics = Metrics()
    service = LiveEnforcement(
        [fast_config(fake.port)],
        registry.get,
        audit,
        metrics,
        stop_grace=0.3,
        reconcile_interval=3600,
        now=wall,
    )
    registry.subscribe(service.on_policy_change)  # as daemon.build wires it
    service.start()
    live = Live(fake, registry, audit, metrics, service, wall)
    await live.connected()
    await wait_until(lambda: bool(fake.received("CoreShowChannels")))
    yield live
    await service.stop()
    await registry.close()
