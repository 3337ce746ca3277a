"""Phone replace end to end over FastAGI: the real AGI server and handler table on loopback, the
shared fake Asterisk (``tests/fake_asterisk.py``, which answers as the recorded transcripts do),
the real store on disk.

The caller's keypad, as ``get-data-pin.txt`` and ``hangup-mid-session.txt`` recorded it: digits
(``200 result=1234``), nothing (``200 result=`` and ``200 result= (timeout)``), or a hangup while
the prompt plays (``200 result=-1``, then the asynchronous ``HANGUP`` line, then dead mode)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from callgate.agi.server import AgiServer
from callgate.metrics import Metrics
from callgate.pbx import DEFAULT_PBX
from callgate.registry import PolicyRegistry
from callgate.replace.service import ReplaceService
from callgate.store.db import Database
from callgate.store.replace import ReplaceRepository
from fake_asterisk import FakeChannel, call, request_environment
from reference_policy import REFERENCE_DOCUMENT
from support import wait_until

from .conftest import (
    CLIENT,
    Clock,
    FakeAstDb,
    FakeAudit,
    agi_server,
    make_service,
)
from .conftest import client_policy as make_policy

PIN = "4321"
ACTING = "callgate/acme/acting"
DEVICE = "callgate/acme/device"
TIMEOUT = ""
TIMEOUT_MARKED = " (timeout)"
HANGUP = "-1"
"""GET DATA's result when the caller hangs up; the call below then sends the HANGUP line."""
COMMANDS_BEFORE_GET_DATA = 2
"""GET VARIABLE CALLGATE_EXT, ANSWER."""


class Asterisk:
    """What outlives one call: AstDB, and every command line any call received."""

    def __init__(self) -> None:
        self.db: dict[tuple[str, str], str] = {}
        self.lines: list[str] = []

    @property
    def astdb(self) -> dict[str, str]:
        return {f"{family}/{key}": value for (family, key), value in self.db.items()}


class Call:
    def __init__(self, channel: FakeChannel, uniqueid: str) -> None:
        self.channel = channel
        self.uniqueid = uniqueid
        self.commands = [line.decode() for line in channel.commands]
        self.variables = channel.variables

    @property
    def decision(self) -> tuple[str | None, str | None]:
        return self.variables.get("CALLGATE_DECISION"), self.variables.get("CALLGATE_REASON")

    @property
    def dead(self) -> bool:
        return self.channel.dead


class ManagerDb(FakeAstDb):
    """The Manager connection's DBDel/DBPut, landing in the same fake AstDB."""

    def __init__(self, asterisk: Asterisk) -> None:
        super().__init__()
        self._asterisk = asterisk
        self.connected = True

    def live(self, pbx: str = DEFAULT_PBX, /) -> ManagerDb | None:
        """``live_astdb``: this Manager (of the one PBX) while ``connected``."""
        return self if self.connected else None

    async def put(self, family: str, key: str, value: str) -> None:
        await super().put(family, key, value)
        self._asterisk.db[(family, key)] = value

    async def delete(self, family: str, key: str) -> None:
        await super().delete(family, key)
        self._asterisk.db.pop((family, key), None)


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
    manager: ManagerDb
    metrics: Metrics

    def sessions(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "callgate_agi_sessions_total", {"outcome": outcome}
        )
        return value or 0.0

    def decisions(self, action: str, decision: str) -> float:
        labels = {"client": CLIENT, "action": action, "decision": decision}
        value = self.metrics.registry.get_sample_value("callgate_decisions_total", labels)
        return value or 0.0

    async def call(
        self,
        action: str,
        acting: str,
        target: str | None = None,
        *,
        phone: str | None = "100",
        keypad: tuple[str, ...] = (),
        sounds: frozenset[str] | None = None,
    ) -> Call:
        args = (CLIENT, acting) if target is None else (CLIENT, acting, target)
        channel = FakeChannel(
            variables={} if phone is None else {"CALLGATE_EXT": phone},
            astdb=self.asterisk.db,
            dtmf=list(keypad),
            sounds=sounds,
        )
        if HANGUP in keypad:
            channel.hangup_after = COMMANDS_BEFORE_GET_DATA + 1
        environment = request_environment(action, *args, name="get-data-pin.txt")
        await call(self.server.port, environment, channel)
        self.asterisk.lines += [line.decode() for line in channel.commands]
        return Call(channel, "1795723250.23")

    async def counted_failures(self) -> int:
        row = await self.db.read(
            lambda conn: conn.execute("SELECT count(*) FROM replace_failures").fetchone()
        )
        return int(row[0])

    async def replacements(self) -> list[tuple[str, str, str]]:
        return [(r.phone, r.from_ext, r.to_ext) for r in await self.repo.replacements(CLIENT)]


async def start_rig(
    db_path: Path, asterisk: Asterisk, clock: Clock, registry: PolicyRegistry | None = None
) -> Rig:
    db = await Database.open(db_path)
    repo = ReplaceRepository(db)
    if registry is None:
        registry = PolicyRegistry()
        registry.load(make_policy(REFERENCE_DOCUMENT, 1))
    audit = FakeAudit()
    manager = ManagerDb(asterisk)
    metrics = Metrics()
    service = make_service(repo, registry, audit, manager.live, clock, metrics)
    server = agi_server(service, registry, audit, metrics)
    await server.start()
    return Rig(asterisk, service, repo, registry, audit, clock, server, db, manager, metrics)


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
        "CALLGATE_NOTICE": "",  # a replace monitors nobody
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
    assert await rig.counted_failures() == 1
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
    # seven timeouts, more than the limit: nothing counted, the right PIN still works
    assert await rig.counted_failures() == 0
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
    # each session ended normally: no crash, no error outcome
    assert rig.sessions("completed") == 6
    assert rig.sessions("error") == 0
    assert rig.decisions("replace", "deny") == 6
    # not counted: the right PIN is still accepted afterwards
    assert await rig.counted_failures() == 0
    call = await rig.call("replace", "100", "101", keypad=(PIN,))
    assert call.decision == ("ALLOW", "phone_replace_group")


async def test_a_prompt_that_cannot_be_played_still_collects_the_pin(rig: Rig) -> None:
    # Asterisk without core sounds answers GET DATA agent-pass with 200 result=-1 at once and no
    # HANGUP line (seen on a real Asterisk 22.10.1): that is not a hangup, the PIN is asked again
    # without a prompt.
    no_sounds: frozenset[str] = frozenset()
    call = await rig.call("replace", "100", "101", keypad=(PIN,), sounds=no_sounds)
    assert call.decision == ("ALLOW", "phone_replace_group")
    assert [c for c in call.commands if c.startswith("GET DATA")] == [
        "GET DATA agent-pass 6000 12",
        'GET DATA "" 6000 12',
    ]
    assert not call.dead
    assert rig.asterisk.astdb == {f"{ACTING}/100": "101", f"{DEVICE}/101": "100"}

    # a wrong PIN typed without the prompt is a wrong PIN: denied and counted
    call = await rig.call("replace", "100", "101", keypad=("0000",), sounds=no_sounds)
    assert call.decision == ("DENY", "bad_pin")
    assert await rig.counted_failures() == 1


async def test_hangup_during_an_unplayable_prompt_is_a_hangup(rig: Rig) -> None:
    # -1 and then HANGUP: no second prompt is answered (the channel is dead), nothing is counted.
    call = await rig.call("replace", "100", "101", keypad=(HANGUP,), sounds=frozenset())
    assert call.decision == ("DENY", "bad_pin")
    assert call.dead
    assert await rig.counted_failures() == 0
    assert rig.sessions("completed") == 1


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
    assert await rig.replacements() == []  # the store: before publish() returns
    await rig.service.idle()  # AstDB over the Manager: in the background
    assert rig.asterisk.astdb == {}
    assert rig.manager.ops == [("del", f"{ACTING}/100"), ("del", f"{DEVICE}/101")]
    event = rig.audit.events[-1]
    assert (event.action, event.policy_version) == ("restore", 3)
    assert rig.audit.facts(event)["end_reason"] == "revoked"
    assert rig.audit.facts(event)["phone"] == "100"


async def test_hangup_with_agiexitonhangup_closes_mid_flow(rig: Rig) -> None:
    """The shipped dialplan sets AGIEXITONHANGUP=yes: Asterisk sends HANGUP and closes at once,
    so callgate cannot even set the variables. The attempt is audited, not counted, no error."""
    env = request_environment("replace", CLIENT, "100", "101", name="get-data-pin.txt")
    replies = {
        b"GET VARIABLE CALLGATE_EXT\n": b"200 result=1 (100)\n",
        b"ANSWER\n": b"200 result=0\n",
        b"GET DATA agent-pass 6000 12\n": b"200 result=-1\nHANGUP\n",
    }
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.server.port)
    writer.write(env)
    while (line := await asyncio.wait_for(reader.readline(), 5)) in replies:
        writer.write(replies[line])
        if line.startswith(b"GET DATA"):
            break
    writer.close()
    await writer.wait_closed()
    await wait_until(lambda: rig.sessions("disconnected"), within=1)
    assert rig.sessions("disconnected") == 1
    assert rig.sessions("error") == 0
    assert [(e.decision, e.reason) for e in rig.audit.events] == [("deny", "bad_pin")]
    assert await rig.counted_failures() == 0
    call = await rig.call("replace", "100", "101", keypad=(PIN,))
    assert call.decision == ("ALLOW", "phone_replace_group")


NO_REPLACE = {**REFERENCE_DOCUMENT, "phone_replace_groups": []}


async def test_revocation_without_a_manager_is_finished_when_it_connects(rig: Rig) -> None:
    await rig.call("replace", "100", "101", keypad=(PIN,))
    rig.manager.connected = False
    await rig.registry.publish(make_policy(NO_REPLACE, 2))
    await rig.service.idle()
    # the store says restored at once; AstDB still routes until Asterisk is reachable
    assert await rig.replacements() == []
    assert rig.asterisk.astdb == {f"{ACTING}/100": "101", f"{DEVICE}/101": "100"}
    assert len(await rig.repo.pending()) == 2

    rig.manager.connected = True
    task = asyncio.create_task(rig.service.keep_astdb_clean(interval=0.01))
    try:
        await wait_until(lambda: not rig.asterisk.astdb, within=3)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert rig.asterisk.astdb == {}
    assert await rig.repo.pending() == []


async def test_revocation_without_a_manager_is_finished_by_restore(rig: Rig) -> None:
    await rig.call("replace", "100", "101", keypad=(PIN,))
    rig.manager.connected = False
    await rig.registry.publish(make_policy(NO_REPLACE, 2))
    await rig.service.idle()
    # the phone still acts as 101 in Asterisk; dialing restore sends it home for good
    call = await rig.call("restore", "101")
    assert call.decision == ("ALLOW", "restored")
    assert rig.asterisk.astdb == {}
    assert await rig.repo.pending() == []
    call = await rig.call("restore", "100")
    assert call.decision == ("DENY", "not_replaced")


async def test_a_new_replacement_is_not_undone_by_an_old_pending_deletion(rig: Rig) -> None:
    await rig.call("replace", "100", "101", keypad=(PIN,))
    rig.manager.connected = False
    await rig.registry.publish(make_policy(NO_REPLACE, 2))
    await rig.service.idle()
    await rig.registry.publish(make_policy(REFERENCE_DOCUMENT, 3))
    call = await rig.call("replace", "100", "101", keypad=(PIN,))
    assert call.decision == ("ALLOW", "phone_replace_group")
    assert await rig.repo.pending() == []
    rig.manager.connected = True
    assert await rig.service.flush_pending() == ()
    assert rig.asterisk.astdb == {f"{ACTING}/100": "101", f"{DEVICE}/101": "100"}


# --------------------------------------------------------------------------- the decision record


def decision_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "callgate.agi.handlers" and r.getMessage().startswith("decision ")
    ]


async def test_a_replace_has_the_policy_routes_line_counted_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """One format for every decision: the policy routes' fields, then the replace's own facts."""
    caplog.set_level("INFO", logger="callgate.agi.handlers")
    await rig.call("replace", "100", "101", keypad=(PIN,))
    await rig.call("pickup", "101")
    await wait_until(lambda: len(decision_lines(caplog)) == 2)
    replace_line, pickup_line = decision_lines(caplog)
    assert replace_line == (
        "decision client=acme action=replace ext=100 target=101 decision=allow"
        " reason=phone_replace_group targets=- version=1 uniqueid=1795723250.23"
        " phone=100 entered=yes"
    )
    assert pickup_line.startswith("decision client=acme action=pickup ext=101 target=- ")
    assert rig.decisions("replace", "allow") == 1  # counted by the recorder, once


async def test_a_phone_name_from_the_endpoint_is_escaped_in_the_line(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="callgate.agi.handlers")
    call = await rig.call("replace", "100", "101", phone="10 0\x1b[2J", keypad=(PIN,))
    assert call.decision == ("DENY", "invalid_request")
    await wait_until(lambda: len(decision_lines(caplog)) == 1)
    (line,) = decision_lines(caplog)
    assert line.endswith(" phone='10 0\\x1b[2J'")
    assert rig.audit.facts(rig.audit.events[-1])["phone"] == "10 0\x1b[2J"


async def test_a_malformed_replace_is_logged_and_counted_but_not_audited(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="callgate.agi.handlers")
    channel = FakeChannel(variables={"CALLGATE_EXT": "100"}, astdb=rig.asterisk.db)
    await call(rig.server.port, request_environment("replace", "ac me", "100", "101"), channel)
    assert channel.variables["CALLGATE_REASON"] == "invalid_request"
    await wait_until(lambda: len(decision_lines(caplog)) == 1)
    (line,) = decision_lines(caplog)
    assert line.startswith(
        "decision client='ac me' action=replace ext=100 target=101 decision=deny"
    )
    assert rig.audit.events == []
    labels = {"client": "(other)", "action": "replace", "decision": "deny"}
    assert rig.metrics.registry.get_sample_value("callgate_decisions_total", labels) == 1
