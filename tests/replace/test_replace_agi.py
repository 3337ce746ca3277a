"""Phone replace end to end over FastAGI: the real AGI server on loopback, a fake Asterisk
channel (``fake_phone``) that answers as the recorded transcripts do, the real store on disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from callgate.agi.server import AgiConfig, AgiServer
from callgate.agi.session import AgiSession
from callgate.metrics import Metrics
from callgate.registry import PolicyRegistry
from callgate.replace.agi_flow import ReplaceFlow
from callgate.replace.lockout import LockoutRules
from callgate.replace.pins import PinHasher
from callgate.replace.service import ReplaceService
from callgate.store.db import Database
from callgate.store.replace import SCHEMA, ReplaceRepository

from .conftest import CLIENT, FAST_SCRYPT, REFERENCE_DOCUMENT, Clock, FakeAstDb, FakeAudit
from .conftest import client_policy as make_policy
from .fake_phone import HANGUP, TIMEOUT, TIMEOUT_MARKED, Asterisk, Call, place

PIN = "4321"
ACTING = "callgate/acme/acting"
DEVICE = "callgate/acme/device"


@dataclass
class Rig:
    """One callgate (service + AGI server) and the Asterisk it serves."""

    asterisk: Asterisk
    service: ReplaceService
    repo: ReplaceRepository
    registry: PolicyRegistry
    audit: FakeAudit
    clock: Clock
    server: AgiServer
    db: Database
    manager: FakeAstDb

    async def call(
        self,
        action: str,
        acting: str,
        target: str | None = None,
        *,
        phone: str | None = "100",
        keypad: tuple[str, ...] = (),
    ) -> Call:
        args = (CLIENT, acting) if target is None else (CLIENT, acting, target)
        variables = {} if phone is None else {"CALLGATE_EXT": phone}
        call = Call(action, args, variables, list(keypad))
        return await place(self.asterisk, self.server.port, call)

    async def replacements(self) -> list[tuple[str, str, str]]:
        return [(r.phone, r.from_ext, r.to_ext) for r in await self.repo.replacements(CLIENT)]


async def start_rig(
    db_path: Path, asterisk: Asterisk, clock: Clock, registry: PolicyRegistry | None = None
) -> Rig:
    db = await Database.open(db_path, SCHEMA)
    repo = ReplaceRepository(db)
    if registry is None:
        registry = PolicyRegistry()
        registry.load(make_policy(REFERENCE_DOCUMENT, 1))
    audit = FakeAudit()
    manager = FakeAstDb(data=asterisk.astdb)
    service = ReplaceService(
        repo,
        registry,
        audit,
        hasher=PinHasher(FAST_SCRYPT),
        rules=LockoutRules(),
        live_astdb=lambda: manager,
        clock=clock,
    )
    registry.subscribe(service.on_policy_change)
    flow = ReplaceFlow(service)

    async def handler(session: AgiSession) -> None:
        match session.environment.action:
            case "replace":
                await flow.replace(session)
            case "restore":
                await flow.restore(session)

    server = AgiServer(AgiConfig(host="127.0.0.1", port=0), handler, Metrics())
    await server.start()
    return Rig(asterisk, service, repo, registry, audit, clock, server, db, manager)


async def stop_rig(rig: Rig) -> None:
    await rig.server.stop()
    await rig.db.close()


@pytest.fixture
async def rig(db_path: Path, clock: Clock) -> AsyncIterator[Rig]:
    rig = await start_rig(db_path, Asterisk(), clock)
    await rig.service.set_pin(CLIENT, "101", PIN)
    yield rig
    await stop_rig(rig)


def prompted(call: Call) -> bool:
    return any(line.startswith("GET DATA") for line in call.commands)


async def test_right_pin_replaces_the_phone(rig: Rig) -> None:
    call = await rig.call("replace", "100", "101", keypad=(PIN,))

    assert call.variables == {
        "CALLGATE_EXT": "100",
        "CALLGATE_DECISION": "ALLOW",
        "CALLGATE_REASON": "phone_replace_group",
        "CALLGATE_TARGETS": "",
        "CALLGATE_VERSION": "1",
        "CALLGATE_PICKUP": "",
    }
    assert call.commands[:3] == [
        "GET VARIABLE CALLGATE_EXT",
        "ANSWER",
        "GET DATA agent-pass 6000 12",
    ]
    # AstDB written inside the same AGI session, before the verdict
    assert f"DATABASE PUT {ACTING} 100 101" in call.commands
    assert f"DATABASE PUT {DEVICE} 101 100" in call.commands
    assert rig.asterisk.astdb == {f"{ACTING}/100": "101", f"{DEVICE}/101": "100"}
    assert await rig.replacements() == [("100", "100", "101")]
    # the PIN went from the keypad to callgate in a reply only, never in a command line
    assert not any(PIN in line for line in rig.asterisk.lines)
    (event,) = rig.audit.events
    assert (event.action, event.ext, event.target, event.decision, event.reason) == (
        "replace",
        "100",
        "101",
        "allow",
        "phone_replace_group",
    )
    assert rig.audit.facts(event)["phone"] == "100"
    assert event.uniqueid == call.uniqueid


async def test_wrong_pin_is_denied_and_counted(rig: Rig) -> None:
    call = await rig.call("replace", "100", "101", keypad=("1111",))
    assert call.decision == ("DENY", "bad_pin")
    assert not any(line.startswith("DATABASE PUT") for line in call.commands)
    assert rig.asterisk.astdb == {}
    assert await rig.replacements() == []
    (event,) = rig.audit.events
    assert (event.decision, event.reason) == ("deny", "bad_pin")


async def test_no_pin_set_denies_without_prompting(rig: Rig) -> None:
    await rig.service.delete_pin(CLIENT, "101")
    call = await rig.call("replace", "100", "101", keypad=(PIN,))
    assert call.decision == ("DENY", "no_replace_pin")
    assert not prompted(call)
    assert "ANSWER" not in call.commands


async def test_policy_denial_comes_before_any_prompt(rig: Rig) -> None:
    await rig.service.set_pin(CLIENT, "102", PIN)
    call = await rig.call("replace", "100", "102", keypad=(PIN,))  # 102 is not in support
    assert call.decision == ("DENY", "replace_not_permitted")
    assert not prompted(call)
    assert [e.reason for e in rig.audit.events] == ["replace_not_permitted"]


@pytest.mark.parametrize(
    ("args", "phone", "reason"),
    [
        (("100", "100"), "100", "self_target"),
        (("100", ""), "100", "invalid_request"),
        (("100", "101"), None, "invalid_request"),  # the endpoint sets no CALLGATE_EXT
        (("100", "101"), "bad ext!", "invalid_request"),
        (("103", "100"), "100", "self_target"),  # the phone's own extension: that is restore
    ],
)
async def test_malformed_requests_are_denied(
    rig: Rig, args: tuple[str, str], phone: str | None, reason: str
) -> None:
    call = await rig.call("replace", *args, phone=phone, keypad=(PIN,))
    assert call.decision == ("DENY", reason)
    assert not prompted(call)


@pytest.mark.parametrize("entry", [TIMEOUT, TIMEOUT_MARKED])
async def test_no_digits_is_bad_pin_and_not_counted(rig: Rig, entry: str) -> None:
    for _ in range(7):
        call = await rig.call("replace", "100", "101", keypad=(entry,))
        assert call.decision == ("DENY", "bad_pin")
        assert prompted(call)
    # seven timeouts, more than the limit: nothing is locked, the right PIN still works
    call = await rig.call("replace", "100", "101", keypad=(PIN,))
    assert call.decision == ("ALLOW", "phone_replace_group")


async def test_hangup_during_get_data(rig: Rig) -> None:
    for _ in range(6):
        call = await rig.call("replace", "100", "101", keypad=(HANGUP,))
        # the verdict is still set (SET VARIABLE / EXEC work on a dead channel)
        assert call.decision == ("DENY", "bad_pin")
        assert call.dead
    assert rig.asterisk.astdb == {}
    assert [e.reason for e in rig.audit.events] == ["bad_pin"] * 6
    # not counted: the right PIN is still accepted afterwards
    call = await rig.call("replace", "100", "101", keypad=(PIN,))
    assert call.decision == ("ALLOW", "phone_replace_group")


async def test_sixth_attempt_is_locked_out_across_sessions_and_restart(
    rig: Rig, db_path: Path, clock: Clock
) -> None:
    for attempt in range(5):
        call = await rig.call("replace", "100", "101", keypad=(f"000{attempt}",))
        assert call.decision == ("DENY", "bad_pin")
        clock.advance(10)
    # sixth attempt, a new session, the right PIN: locked out, and never prompted
    call = await rig.call("replace", "100", "101", keypad=(PIN,))
    assert call.decision == ("DENY", "locked_out")
    assert not prompted(call)
    # the target is locked for every phone
    call = await rig.call("replace", "100", "101", phone="103", keypad=(PIN,))
    assert call.decision == ("DENY", "locked_out")

    # restart: a new service and AGI server on the same store file
    await stop_rig(rig)
    again = await start_rig(db_path, rig.asterisk, clock)
    try:
        call = await again.call("replace", "100", "101", keypad=(PIN,))
        assert call.decision == ("DENY", "locked_out")
        assert not prompted(call)
        # 15 minutes after the fifth failure the lock is over
        clock.advance(900 - 10)
        call = await again.call("replace", "100", "101", keypad=(PIN,))
        assert call.decision == ("ALLOW", "phone_replace_group")
    finally:
        await stop_rig(again)
    reasons = [e.reason for e in rig.audit.events + again.audit.events]
    assert reasons == ["bad_pin"] * 5 + ["locked_out"] * 3 + ["phone_replace_group"]


async def test_the_dialing_phone_is_locked_for_every_target(db_path: Path, clock: Clock) -> None:
    registry = PolicyRegistry()
    registry.load(make_policy({"allow_all": True}, 3))
    rig = await start_rig(db_path, Asterisk(), clock, registry)
    try:
        await rig.service.set_pin(CLIENT, "101", PIN)
        await rig.service.set_pin(CLIENT, "102", PIN)
        for target in ("101", "102", "101", "102", "101"):
            call = await rig.call("replace", "100", target, keypad=("9999",))
            assert call.decision == ("DENY", "bad_pin")
        call = await rig.call("replace", "100", "102", keypad=(PIN,))
        assert call.decision == ("DENY", "locked_out")
        # 102 itself is not locked (two failures only): another phone may still take it
        call = await rig.call("replace", "103", "102", phone="103", keypad=(PIN,))
        assert call.decision == ("ALLOW", "allow_all")
    finally:
        await stop_rig(rig)


async def test_restore(rig: Rig) -> None:
    await rig.call("replace", "100", "101", keypad=(PIN,))
    # the dialplan now passes the acting extension, 101, as agi_arg_2
    call = await rig.call("restore", "101")
    assert call.decision == ("ALLOW", "restored")
    assert f"DATABASE DEL {ACTING} 100" in call.commands
    assert f"DATABASE DEL {DEVICE} 101" in call.commands
    assert rig.asterisk.astdb == {}
    assert await rig.replacements() == []

    call = await rig.call("restore", "100")
    assert call.decision == ("DENY", "not_replaced")
    assert [(e.action, e.reason) for e in rig.audit.events] == [
        ("replace", "phone_replace_group"),
        ("restore", "restored"),
        ("restore", "not_replaced"),
    ]


async def test_replacing_again_moves_the_mapping(db_path: Path, clock: Clock) -> None:
    registry = PolicyRegistry()
    registry.load(make_policy({"allow_all": True}, 2))
    rig = await start_rig(db_path, Asterisk(), clock, registry)
    try:
        for ext in ("101", "103"):
            await rig.service.set_pin(CLIENT, ext, PIN)
        await rig.call("replace", "100", "101", keypad=(PIN,))
        # phone 100, acting as 101, takes 103: it no longer answers for 101
        call = await rig.call("replace", "101", "103", keypad=(PIN,))
        assert call.decision == ("ALLOW", "allow_all")
        assert rig.asterisk.astdb == {f"{ACTING}/100": "103", f"{DEVICE}/103": "100"}
        assert await rig.replacements() == [("100", "101", "103")]
        # phone 102 takes 103 over from phone 100: 100 is sent home
        call = await rig.call("replace", "102", "103", phone="102", keypad=(PIN,))
        assert call.decision == ("ALLOW", "allow_all")
        assert rig.asterisk.astdb == {f"{ACTING}/102": "103", f"{DEVICE}/103": "102"}
        assert await rig.replacements() == [("102", "102", "103")]
        ended = [e for e in rig.audit.events if rig.audit.facts(e).get("end_reason")]
        assert [rig.audit.facts(e)["end_reason"] for e in ended] == ["displaced"]
    finally:
        await stop_rig(rig)


async def test_revocation_by_a_policy_change(rig: Rig) -> None:
    await rig.call("replace", "100", "101", keypad=(PIN,))
    assert rig.asterisk.astdb

    # support no longer replaces: the replacement ends at once, in the store and in AstDB
    document = {**REFERENCE_DOCUMENT, "phone_replace_groups": ["hr"]}
    await rig.registry.publish(make_policy(document, 2))
    assert await rig.replacements() == [("100", "100", "101")]  # 100 and 101 are both in hr

    await rig.registry.publish(make_policy({**REFERENCE_DOCUMENT, "phone_replace_groups": []}, 3))
    assert await rig.replacements() == []
    assert rig.asterisk.astdb == {}
    assert rig.manager.ops == [("del", f"{ACTING}/100"), ("del", f"{DEVICE}/101")]
    event = rig.audit.events[-1]
    assert (event.action, event.policy_version) == ("restore", 3)
    assert rig.audit.facts(event)["end_reason"] == "revoked"
    assert rig.audit.facts(event)["phone"] == "100"
