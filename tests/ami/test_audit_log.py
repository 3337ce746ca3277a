"""The audit log on the real store, and ``GET /client/{id}/audit`` showing listen/whisper
sessions with how they ended, after a real revocation through the fake Manager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from callgate.ami.service import LiveEnforcement
from callgate.audit import AuditEvent, EndReason
from callgate.http.app import HttpDeps, build_app
from callgate.http.audit_routes import event_json
from callgate.metrics import Metrics
from callgate.pbx import DEFAULT_PBX
from callgate.policy import Action
from callgate.registry import PolicyRegistry
from callgate.store import Store, open_store
from fake_ami import FakeAmi
from support import wait_until
from wiring import app_services

from .conftest import CLIENT, REFERENCE, fast_config, policy

T0 = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)
TOKEN = "admin-token-for-tests"


def decision(
    minute: int, action: str, ext: str, target: str | None, uniqueid: str, **kw: object
) -> AuditEvent:
    values: dict[str, object] = {
        "time": T0 + timedelta(minutes=minute),
        "client_id": CLIENT,
        "action": action,
        "ext": ext,
        "target": target,
        "decision": "allow",
        "reason": "eavesdrop_group",
        "policy_version": 1,
        "uniqueid": uniqueid,
        "channel": f"PJSIP/acme_{ext}-00000001",
    }
    values.update(kw)
    return AuditEvent(**values)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(str(tmp_path / "callgate.sqlite3"))
    yield store
    await store.close()


async def test_session_start_and_end_complete_the_allowing_decisions_row(store: Store) -> None:
    audit = store.audit
    audit.record(decision(0, "eavesdrop", "100", "101", "u1"))
    audit.record(decision(1, "pickup", "102", "103", "u2", reason="pickup_all"))
    audit.record(decision(2, "eavesdrop", "100", "101", "u1", started=T0 + timedelta(minutes=2)))
    audit.record(
        decision(
            5,
            "eavesdrop",
            "100",
            "101",
            "u1",
            ended=T0 + timedelta(minutes=5),
            end_reason=EndReason.REVOKED,
            extra=(("revoked_by_version", "2"),),
        )
    )
    await audit.flush()
    pickup, listen = await audit.list(CLIENT)  # newest first
    assert event_json(pickup)["action"] == "pickup"
    assert "end_reason" not in event_json(pickup)
    body = event_json(listen)
    assert body["time"] == T0.isoformat()  # the decision's own time; newest first by it
    assert body["started"] == (T0 + timedelta(minutes=2)).isoformat()
    assert body["ended"] == (T0 + timedelta(minutes=5)).isoformat()
    assert body["end_reason"] == "revoked"
    assert body["revoked_by_version"] == "2"


async def test_filters_since_until_ext_action(store: Store) -> None:
    for minute, action, ext, target in [
        (0, "pickup", "100", "101"),
        (1, "eavesdrop", "102", "100"),
        (2, "whisper", "103", "104"),
        (3, "pickup", "105", None),
    ]:
        store.audit.record(decision(minute, action, ext, target, f"u{minute}"))
    await store.audit.flush()

    async def uids(**filters: object) -> list[str | None]:
        return [r.uniqueid for r in await store.audit.list(CLIENT, **filters)]  # type: ignore[arg-type]

    assert await uids() == ["u3", "u2", "u1", "u0"]
    assert await uids(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=2)) == [
        "u2",
        "u1",
    ]
    assert await uids(ext="100") == ["u1", "u0"]  # as the acting extension or the target
    assert await uids(action="pickup") == ["u3", "u0"]
    assert await uids(limit=1) == ["u3"]
    assert await store.audit.list("other") == ()


async def test_record_never_blocks_nor_raises_and_close_writes_what_is_queued(
    tmp_path: Path,
) -> None:
    store = await open_store(str(tmp_path / "a.sqlite3"))
    for n in range(300):
        store.audit.record(decision(n % 60, "pickup", "100", "101", f"u{n}"))
    await store.close()  # flushes first
    store = await open_store(str(tmp_path / "a.sqlite3"))
    try:
        assert len(await store.audit.list(CLIENT, limit=10_000)) == 300
    finally:
        await store.close()
    store.audit.record(decision(0, "pickup", "100", "101", "late"))  # closed: dropped, no raise
    assert store.audit.lost == 1


async def test_the_audit_route_shows_sessions_with_their_ends_and_reasons(
    store: Store, fake: FakeAmi
) -> None:
    registry = PolicyRegistry()
    registry.load(policy(1, REFERENCE))
    metrics = Metrics()
    live = LiveEnforcement(
        [fast_config(fake.port)], registry.get, store.audit, metrics, stop_grace=0.3
    )
    registry.subscribe(live.on_policy_change)
    live.start()
    services = app_services(store, registry)
    app = build_app(HttpDeps(services=services, metrics=metrics, admin_token=TOKEN))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        await wait_until(lambda: bool(fake.received("CoreShowChannels")))
        # Two allowed sessions, as the FastAGI handler records and reports them.
        for n, (action, ext, target) in enumerate(
            [(Action.EAVESDROP, "100", "101"), (Action.WHISPER, "101", "103")], start=1
        ):
            uid, channel = f"1795723209.{n}", f"PJSIP/acme_{ext}-0000000{n}"
            store.audit.record(
                AuditEvent(
                    datetime.now(UTC),
                    CLIENT,
                    action,
                    ext,
                    target,
                    "allow",
                    "eavesdrop_group" if n == 1 else "whisper_group",
                    1,
                    uid,
                    channel,
                )
            )
            live.grants.note_allowed(
                CLIENT, action, ext, target, uid, channel, 1, "eavesdrop_group", pbx=DEFAULT_PBX
            )
            await fake.start_spy(channel, uid, f"PJSIP/acme_{target}-0000010{n}", f"1795723206.{n}")
        await wait_until(lambda: len(live.sessions()) == 2)
        await fake.hang_up("1795723209.2")  # the whisperer hangs up
        changed = {k: v for k, v in REFERENCE.items() if k != "eavesdrop_100"}
        await registry.publish(policy(2, changed))
        await wait_until(lambda: not live.sessions())
        await store.audit.flush()

        response = await client.get(
            f"/client/{CLIENT}/audit", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status == 200
        events = (await response.json())["events"]
        by_uid = {e["uniqueid"]: e for e in events}
        assert len(events) == 2
        listen, whisper = by_uid["1795723209.1"], by_uid["1795723209.2"]
        assert (listen["action"], listen["ext"], listen["target"]) == ("eavesdrop", "100", "101")
        assert listen["end_reason"] == "revoked"
        assert listen["revoked_by_version"] == "2"
        assert listen["started"] <= listen["ended"]
        assert (whisper["action"], whisper["end_reason"]) == ("whisper", "listener_hangup")
        for key in ("time", "decision", "reason", "policy_version", "started", "ended"):
            assert key in listen

        filtered = await client.get(
            f"/client/{CLIENT}/audit?action=whisper&since=2000-01-01T00:00:00",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert [e["uniqueid"] for e in (await filtered.json())["events"]] == ["1795723209.2"]
        bad = await client.get(
            f"/client/{CLIENT}/audit?since=yesterday",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert bad.status == 400
        assert (await bad.json())["details"][0]["loc"] == ["query", "since"]
        assert (await client.get(f"/client/{CLIENT}/audit")).status == 401
    finally:
        await client.close()
        await live.stop()
