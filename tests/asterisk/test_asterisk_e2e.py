"""The shipped dialplan against a real Asterisk and a real callgate: every feature code allowed
and denied, fail-closed, and a listen ended live by a policy change.

Runs when an Asterisk binary is found (``ASTERISK_BIN`` or ``asterisk`` on PATH)::

    ASTERISK_BIN=/usr/sbin/asterisk .venv/bin/pytest tests/asterisk -ra

What each test looks at: the Manager events of the tester's AMI connection (``VarSet`` of
``CALLGATE_DECISION`` shows callgate's answer on the dialing phone's channel; ``Pickup`` and
``ChanSpyStart`` show what Asterisk then did), and for the negative cases that the dialing
phone's channel ended without them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from .harness import Ami, Api, Message, Pbx, event, skip_without_asterisk

skip_without_asterisk()

pytestmark = pytest.mark.asterisk

POLICY: dict[str, Any] = {
    "pickup_all": False,
    "groups": {"support": ["100", "101", "10"], "sales": ["102"], "floor": ["103"]},
    "pickup_share_groups": ["support"],
    "phone_replace_groups": ["support"],
    "eavesdrop_100": ["support"],
    "whisper_100": ["sales"],
}


# ------------------------------------------------------------------------------ helpers


async def ring(
    ami: Ami, client: str, ext: str, *, phone: str | None = None, answer: bool = False
) -> str:
    """An outside call to ``ext``; the channel of the phone that rings (or answers) for it."""
    phone = phone or f"{client}_{ext}"
    if answer:
        await ami.action("DBPut", Family="sim", Key=phone, Val="answer")
    mark = ami.mark()
    await ami.action(
        "Originate",
        Channel=f"Local/{ext}@callgate-{client}",
        Application="Wait",
        Data="120",
        Async="true",
        Timeout="60000",
    )
    state = "6" if answer else "5"
    found = await ami.wait_event(
        event("Newstate", Channel=f"PJSIP/{phone}-*", ChannelState=state), since=mark
    )
    return found["Channel"]


async def dial(ami: Ami, phone: str, code: str, *, digits: str | None = None) -> int:
    """The handset of ``phone`` dials ``code`` (and, once answered, types ``digits``)."""
    mark = ami.mark()
    then = (
        {"Context": "sim-keypad", "Exten": "s", "Priority": "1", "Variable": f"SIM_DIGITS={digits}"}
        if digits
        else {"Application": "Wait", "Data": "30"}
    )
    await ami.action(
        "Originate", Channel=f"PJSIP/{code}@sim_{phone}", Async="true", Timeout="15000", **then
    )
    return mark


def varset(phone: str, variable: str, value: str | None = None) -> Callable[[Message], bool]:
    """A VarSet of ``variable`` on the channel of ``phone``: to ``value``, or to anything set."""

    def matches(message: Message) -> bool:
        return (
            message.get("Event") == "VarSet"
            and message.get("Variable") == variable
            and message.get("Channel", "").startswith(f"PJSIP/{phone}-")
            and (message.get("Value", "") != "" if value is None else message.get("Value") == value)
        )

    return matches


async def answer_of(ami: Ami, phone: str, since: int) -> tuple[str, str]:
    """callgate's (CALLGATE_DECISION, CALLGATE_REASON) on the channel of ``phone``."""
    decision = await ami.wait_event(varset(phone, "CALLGATE_DECISION"), since, within=20)
    reason = await ami.wait_event(varset(phone, "CALLGATE_REASON"), since, within=5)
    return decision["Value"], reason["Value"]


async def ended(ami: Ami, phone: str, since: int) -> None:
    """The dialing phone's PBX-side channel has hung up: nothing more can happen on it."""
    await ami.wait_event(event("Hangup", Channel=f"PJSIP/{phone}-*"), since, within=15)


async def channels(ami: Ami) -> dict[str, Message]:
    listed = await ami.list_action("CoreShowChannels", "CoreShowChannelsComplete")
    return {c["Channel"]: c for c in listed}


async def astdb(ami: Ami, family: str, key: str) -> str | None:
    found = await ami.list_action("DBGet", "DBGetComplete", Family=family, Key=key)
    return found[0]["Val"] if found else None


# ------------------------------------------------------------------------------ pickup


async def test_directed_pickup_allowed_takes_exactly_that_call(ami: Ami, api: Api) -> None:
    await api.put_policy("acme", POLICY)
    await ring(ami, "acme", "102")
    target = await ring(ami, "acme", "101")
    mark = await dial(ami, "acme_100", "**101")

    assert await answer_of(ami, "acme_100", mark) == ("ALLOW", "pickup_share_group")
    picked = await ami.wait_event(event("Pickup", Channel="PJSIP/acme_100-*"), mark)
    assert picked["TargetChannel"] == target


async def test_directed_pickup_denied_leaves_the_call_ringing(ami: Ami, api: Api) -> None:
    await api.put_policy("acme", POLICY)
    target = await ring(ami, "acme", "102")
    mark = await dial(ami, "acme_100", "**102")

    assert await answer_of(ami, "acme_100", mark) == ("DENY", "pickup_not_permitted")
    await ended(ami, "acme_100", mark)
    assert ami.events_since(mark, event("Pickup")) == []
    assert (await channels(ami))[target]["ChannelState"] == "5"


async def test_group_pickup_takes_a_call_of_the_share_group(ami: Ami, api: Api) -> None:
    await api.put_policy("acme", POLICY)
    target = await ring(ami, "acme", "101")
    mark = await dial(ami, "acme_100", "*8")

    assert await answer_of(ami, "acme_100", mark) == ("ALLOW", "pickup_share_group")
    picked = await ami.wait_event(event("Pickup", Channel="PJSIP/acme_100-*"), mark)
    assert picked["TargetChannel"] == target


async def test_group_pickup_never_takes_a_call_outside_its_targets(ami: Ami, api: Api) -> None:
    # 100 may pick up 101 (and 10), not 102; 102 rings in the same Asterisk pickup group.
    await api.put_policy("acme", POLICY)
    outside = await ring(ami, "acme", "102")
    mark = await dial(ami, "acme_100", "*8")

    assert await answer_of(ami, "acme_100", mark) == ("ALLOW", "pickup_share_group")
    await ended(ami, "acme_100", mark)
    assert ami.events_since(mark, event("Pickup")) == []
    assert (await channels(ami))[outside]["ChannelState"] == "5"


async def test_group_pickup_denied_and_no_builtin_pickupexten_bypass(ami: Ami, api: Api) -> None:
    # With Asterisk's default pickupexten (*8), PJSIP would pick this call up before the
    # dialplan ran: 102 and 101 share the named pickup group "acme".
    await api.put_policy("acme", POLICY)
    target = await ring(ami, "acme", "101")
    mark = await dial(ami, "acme_102", "*8")

    assert await answer_of(ami, "acme_102", mark) == ("DENY", "no_pickup_group")
    await ended(ami, "acme_102", mark)
    assert ami.events_since(mark, event("Pickup")) == []
    assert (await channels(ami))[target]["ChannelState"] == "5"


async def test_pickup_never_crosses_clients(ami: Ami, api: Api) -> None:
    # globex's default policy allows directed pickup of globex's 101; acme's 101 is not it.
    target = await ring(ami, "acme", "101")
    mark = await dial(ami, "globex_200", "**101")

    assert await answer_of(ami, "globex_200", mark) == ("ALLOW", "pickup_all")
    await ended(ami, "globex_200", mark)
    assert ami.events_since(mark, event("Pickup")) == []
    assert (await channels(ami))[target]["ChannelState"] == "5"


# ------------------------------------------------------------------------------ listen, whisper


async def test_listen_allowed_spies_on_the_exact_channel_without_talking(
    ami: Ami, api: Api
) -> None:
    await api.put_policy("acme", POLICY)
    spyee = await ring(ami, "acme", "101", answer=True)
    mark = await dial(ami, "acme_100", "*51101")

    assert await answer_of(ami, "acme_100", mark) == ("ALLOW", "eavesdrop_group")
    start = await ami.wait_event(event("ChanSpyStart", SpyerChannel="PJSIP/acme_100-*"), mark)
    assert start["SpyeeChannel"] == spyee
    spier = (await channels(ami))[start["SpyerChannel"]]
    assert spier["Application"] == "ChanSpy"
    assert spier["ApplicationData"] == f"{spyee},qESu"


async def test_listen_denied(ami: Ami, api: Api) -> None:
    await api.put_policy("acme", POLICY)
    await ring(ami, "acme", "103", answer=True)
    mark = await dial(ami, "acme_100", "*51103")

    assert await answer_of(ami, "acme_100", mark) == ("DENY", "eavesdrop_not_permitted")
    await ended(ami, "acme_100", mark)
    assert ami.events_since(mark, event("ChanSpyStart")) == []


async def test_listen_never_matches_a_longer_extension(ami: Ami, api: Api) -> None:
    # 100 may listen to "10"; PJSIP/acme_10 is a prefix of PJSIP/acme_101-... (on a call).
    await api.put_policy("acme", POLICY)
    await ring(ami, "acme", "101", answer=True)
    mark = await dial(ami, "acme_100", "*5110")

    assert await answer_of(ami, "acme_100", mark) == ("ALLOW", "eavesdrop_group")
    await ended(ami, "acme_100", mark)
    assert ami.events_since(mark, event("ChanSpyStart")) == []


async def test_whisper_allowed_talks_to_the_exact_channel(ami: Ami, api: Api) -> None:
    await api.put_policy("acme", POLICY)
    spyee = await ring(ami, "acme", "102", answer=True)
    mark = await dial(ami, "acme_100", "*52102")

    assert await answer_of(ami, "acme_100", mark) == ("ALLOW", "whisper_group")
    start = await ami.wait_event(event("ChanSpyStart", SpyerChannel="PJSIP/acme_100-*"), mark)
    assert start["SpyeeChannel"] == spyee
    spier = (await channels(ami))[start["SpyerChannel"]]
    assert spier["ApplicationData"] == f"{spyee},qESuw"


async def test_whisper_denied(ami: Ami, api: Api) -> None:
    await api.put_policy("acme", POLICY)
    await ring(ami, "acme", "101", answer=True)
    mark = await dial(ami, "acme_100", "*52101")

    assert await answer_of(ami, "acme_100", mark) == ("DENY", "whisper_not_permitted")
    await ended(ami, "acme_100", mark)
    assert ami.events_since(mark, event("ChanSpyStart")) == []


async def test_listen_is_ended_live_by_a_policy_change(ami: Ami, api: Api) -> None:
    await api.put_policy("acme", POLICY)
    spyee = await ring(ami, "acme", "101", answer=True)
    mark = await dial(ami, "acme_100", "*51101")
    start = await ami.wait_event(event("ChanSpyStart", SpyerChannel="PJSIP/acme_100-*"), mark)
    spier = start["SpyerChannel"]

    withdrawn = {k: v for k, v in POLICY.items() if k != "eavesdrop_100"}
    changed = ami.mark()
    await api.put_policy("acme", withdrawn)
    acknowledged = time.monotonic()
    await ami.wait_event(event("Hangup", Channel=spier), changed, within=5)
    elapsed = time.monotonic() - acknowledged
    print(f"listener hung up {elapsed * 1000:.0f} ms after the policy change was acknowledged")

    assert elapsed < 2.0  # the contract says 250 ms; this bound only catches "never"
    assert spyee in await channels(ami), "the listened-to call goes on"


# ------------------------------------------------------------------------------ phone replace


async def test_replace_with_the_pin_then_restore(ami: Ami, api: Api) -> None:
    await api.put_policy("acme", POLICY)
    await api.set_pin("acme", "101", "2468")

    mark = await dial(ami, "acme_100", "*41101", digits="2468#")
    assert await answer_of(ami, "acme_100", mark) == ("ALLOW", "phone_replace_group")
    assert await astdb(ami, "callgate/acme/acting", "100") == "101"
    assert await astdb(ami, "callgate/acme/device", "101") == "100"

    # Calls to 101 now ring the phone of 100.
    await ring(ami, "acme", "101", phone="acme_100")
    await ami.action_any("Hangup", Channel="/^(PJSIP|Local)/")

    mark = await dial(ami, "acme_100", "*40")
    assert await answer_of(ami, "acme_100", mark) == ("ALLOW", "restored")
    assert await astdb(ami, "callgate/acme/acting", "100") is None


async def test_replace_with_a_wrong_pin_is_denied(ami: Ami, api: Api) -> None:
    await api.put_policy("acme", POLICY)
    await api.set_pin("acme", "101", "2468")

    mark = await dial(ami, "acme_100", "*41101", digits="1111#")
    assert await answer_of(ami, "acme_100", mark) == ("DENY", "bad_pin")
    assert await astdb(ami, "callgate/acme/acting", "100") is None


async def test_restore_of_a_phone_that_replaced_nothing_is_denied(ami: Ami) -> None:
    mark = await dial(ami, "acme_100", "*40")
    assert await answer_of(ami, "acme_100", mark) == ("DENY", "not_replaced")
    await ended(ami, "acme_100", mark)


# ------------------------------------------------------------------------------ fail closed


async def test_fail_closed_when_callgate_is_stopped(ami: Ami, api: Api, pbx: Pbx) -> None:
    await api.put_policy("acme", POLICY)
    target = await ring(ami, "acme", "101")
    await asyncio.to_thread(pbx.callgate.stop)
    try:
        mark = await dial(ami, "acme_100", "**101")
        await ami.wait_event(varset("acme_100", "AGISTATUS", "FAILURE"), mark)
        await ended(ami, "acme_100", mark)
        assert ami.events_since(mark, event("Pickup")) == []
        assert (await channels(ami))[target]["ChannelState"] == "5"
    finally:
        await asyncio.to_thread(pbx.callgate.start)


async def test_fail_closed_when_the_agi_server_answers_nothing(ami: Ami, pbx: Pbx) -> None:
    # A FastAGI server that accepts and closes at once leaves AGISTATUS=SUCCESS and no verdict.
    async def hang_up_at_once(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await ami.action("Setvar", Variable="CALLGATE_AGI", Value=f"127.0.0.1:{port}")
    try:
        target = await ring(ami, "acme", "101")
        mark = await dial(ami, "acme_100", "**101")
        await ami.wait_event(varset("acme_100", "AGISTATUS", "SUCCESS"), mark)
        await ended(ami, "acme_100", mark)
        assert ami.events_since(mark, event("Pickup")) == []
        assert ami.events_since(mark, varset("acme_100", "CALLGATE_DECISION")) == []
        assert (await channels(ami))[target]["ChannelState"] == "5"
    finally:
        await ami.action(
            "Setvar", Variable="CALLGATE_AGI", Value=f"127.0.0.1:{pbx.callgate.agi_port}"
        )
        server.close()
        await server.wait_closed()
