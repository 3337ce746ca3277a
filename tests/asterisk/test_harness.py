"""The real-Asterisk suite's own parts, checked where no Asterisk is needed (so always, in CI):
the PBX configuration it generates, its AMI client against the fake Manager, and the callgate
process it starts with the HTTP calls it makes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from callgate import asterisk_conf as check
from fake_ami import FakeAmi, FakeChannel
from support import free_port

from .harness import (
    ADMIN_TOKEN,
    AMI_CALLGATE_SECRET,
    PHONES,
    SHIPPED,
    Ami,
    Api,
    Asterisk,
    Callgate,
    PbxPorts,
    event,
)

PORTS = PbxPorts(ami=5999, sip_pbx=5998, sip_phones=5997, rtp_start=40000, agi=5996)


def generated(tmp_path: Path) -> Path:
    asterisk = Asterisk(Path("/usr/sbin/asterisk"), tmp_path, PORTS)
    asterisk.write_config(tmp_path / "modules", None)
    return tmp_path / "etc"


def test_generated_dialplan_is_the_shipped_one_plus_handsets(tmp_path: Path) -> None:
    etc = generated(tmp_path)
    plan = check.read_dialplan(check.read_conf(etc / "extensions.conf"))
    assert {"callgate", "callgate-acme", "callgate-globex", "sim-phone", "sim-keypad"} <= (
        plan.contexts
    )
    assert plan.globals["CALLGATE_AGI"] == f"127.0.0.1:{PORTS.agi}"
    shipped = check.read_dialplan(check.read_conf(SHIPPED / "extensions.conf"))
    for ext in shipped.extensions:
        (copy,) = [e for e in plan.extensions if (e.context, e.name) == (ext.context, ext.name)]
        assert [s.text for s in copy.steps] == [s.text for s in ext.steps]


def test_generated_dialplan_can_list_several_callgate_instances(tmp_path: Path) -> None:
    listed = "agi://127.0.0.1:5996&agi://127.0.0.1:5995"
    Asterisk(Path("/usr/sbin/asterisk"), tmp_path, PORTS, listed).write_config(
        tmp_path / "modules", None
    )
    plan = check.read_dialplan(check.read_conf(tmp_path / "etc" / "extensions.conf"))
    assert plan.globals["CALLGATE_AGI"] == listed
    assert check.check_dialplan(plan) == []


def test_generated_phones_follow_the_shipped_conventions(tmp_path: Path) -> None:
    etc = generated(tmp_path)
    plan = check.read_dialplan(check.read_conf(etc / "extensions.conf"))
    sections = check.read_conf(etc / "pjsip.conf")
    phones = {f"{client}_{ext}" for client, ext in PHONES}
    assert phones <= {s.name for s in sections if check.value(s, "type") == "endpoint"}
    findings = check.check_endpoints([s for s in sections if s.name in phones], plan)
    assert findings == []


def test_generated_manager_keeps_the_shipped_callgate_user(tmp_path: Path) -> None:
    etc = generated(tmp_path)
    users = {s.name: s for s in check.read_conf(etc / "manager.conf")}
    shipped = {s.name: s for s in check.read_conf(SHIPPED / "manager.conf")}
    for key in ("read", "write", "deny", "permit"):
        assert check.values(users["callgate"], key) == check.values(shipped["callgate"], key)
    assert check.value(users["callgate"], "secret") == AMI_CALLGATE_SECRET
    assert check.check_manager([users["general"], users["callgate"]]) == []


async def test_ami_client_actions_lists_and_events() -> None:
    fake = FakeAmi(username="tester", secret="pw")
    port = await fake.start()
    fake.channels["1.1"] = FakeChannel("PJSIP/acme_100-00000001", "1.1")
    ami = await Ami.connect(port, "tester", "pw")
    try:
        listed = await ami.list_action("CoreShowChannels", "CoreShowChannelsComplete")
        assert [c["Channel"] for c in listed] == ["PJSIP/acme_100-00000001"]
        mark = ami.mark()
        await fake.event([("Event", "Pickup"), ("Channel", "PJSIP/acme_100-00000001")])
        found = await ami.wait_event(event("Pickup", Channel="PJSIP/acme_100-*"), mark)
        assert found["Channel"] == "PJSIP/acme_100-00000001"
        assert ami.events_since(mark, event("ChanSpyStart")) == []
        refused = await ami.action_any("Originate", Channel="PJSIP/x")
        assert refused["Response"] == "Error"
    finally:
        await ami.close()
        await fake.close()


async def test_callgate_process_and_the_admin_calls_the_suite_makes(tmp_path: Path) -> None:
    callgate = Callgate(tmp_path, free_port(), free_port(), free_port())
    await asyncio.to_thread(callgate.start, require_ami=False)
    try:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            api = Api(http, callgate.base_url)
            await api.put_policy("acme", {"pickup_all": False})
            await api.set_pin("acme", "101", "2468")
            await api.reset("acme")
            url = f"{callgate.base_url}/client/acme/call_control_group/"
            async with http.get(url) as response:
                assert (await response.json())["pickup_all"] is True
    finally:
        await asyncio.to_thread(callgate.stop)
