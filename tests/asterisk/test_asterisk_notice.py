"""The notice to the monitored on a real Asterisk: the monitored handset hears the tone when the
client's settings ask for it, hears nothing when they do not, and a notice that cannot be given
means no listen at all.

What the handset hears is measured by Asterisk itself: the simulated phone's channel runs
``TONE_DETECT(1400,300,r)`` on what it receives (``harness.py``, ``[sim-phone]``), read here with
the Manager's ``Getvar``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from support import wait_until

from .harness import Ami, Api, event, skip_without_asterisk
from .test_asterisk_e2e import POLICY, astdb, channels, dial

skip_without_asterisk()

pytestmark = pytest.mark.asterisk

OFF = {"notice": {"mode": "off"}}


@pytest.fixture
async def settings(api: Api) -> AsyncIterator[Api]:
    """``api``, with acme's settings back to no notice afterwards (the reset keeps settings)."""
    try:
        yield api
    finally:
        await api.put_settings("acme", OFF)


async def tones_heard(ami: Ami, phone: str) -> int:
    """How often the handset of ``phone`` has received the notice tone on its current call."""
    channel = await astdb(ami, "simchan", phone)
    assert channel is not None, f"{phone} answered no call"
    reply = await ami.action("Getvar", Channel=channel, Variable="TONE_DETECT(rx)")
    return int(reply.get("Value") or 0)


async def call_101(ami: Ami) -> str:
    """An outside caller that sends audio (``[sim-caller]``) talking to 101; 101's channel."""
    await ami.action("DBPut", Family="sim", Key="acme_101", Val="answer")
    mark = ami.mark()
    await ami.action(
        "Originate",
        Channel="Local/101@callgate-acme",
        Context="sim-caller",
        Exten="s",
        Priority="1",
        Async="true",
        Timeout="60000",
    )
    found = await ami.wait_event(
        event("Newstate", Channel="PJSIP/acme_101-*", ChannelState="6"), since=mark
    )
    return found["Channel"]


async def listen_to_101(ami: Ami, api: Api, notice: dict[str, object]) -> str:
    await api.put_policy("acme", POLICY)  # 100 may listen to 101 (support)
    await api.put_settings("acme", {"notice": notice})
    await call_101(ami)
    mark = await dial(ami, "acme_100", "*51101")
    start = await ami.wait_event(
        event("ChanSpyStart", SpyerChannel="PJSIP/acme_100-*"), mark, within=15
    )
    return start["SpyerChannel"]


async def test_the_monitored_handset_hears_the_notice_tone_and_again_while_it_lasts(
    ami: Ami, settings: Api
) -> None:
    await listen_to_101(ami, settings, {"mode": "tone", "repeat_seconds": 5})

    async def heard(beeps: int) -> bool:
        return await tones_heard(ami, "acme_101") >= beeps

    await wait_until(lambda: heard(1), within=5, interval=0.1)
    await wait_until(lambda: heard(3), within=20, interval=0.25)  # two beeps a notice


async def test_no_tone_when_the_notice_is_off(ami: Ami, settings: Api) -> None:
    spier = await listen_to_101(ami, settings, {"mode": "off"})
    await asyncio.sleep(3)  # a notice comes within 2 s of the start
    assert spier in await channels(ami), "the listen goes on"
    assert await tones_heard(ami, "acme_101") == 0


async def test_a_notice_that_cannot_be_given_means_no_listen(ami: Ami, settings: Api) -> None:
    await settings.put_policy("acme", POLICY)
    # Asked for, but its sound file is missing: the notice channel cannot play it.
    await settings.put_settings("acme", {"notice": {"mode": "tone", "sound": "callgate/absent"}})
    spyee = await call_101(ami)
    mark = await dial(ami, "acme_100", "*51101")
    listener = await ami.wait_event(event("Newchannel", Channel="PJSIP/acme_100-*"), mark)
    await ami.wait_event(event("Hangup", Channel=listener["Channel"]), mark, within=15)
    assert ami.events_since(mark, event("ChanSpyStart", SpyerChannel="PJSIP/acme_100-*")) == []
    assert spyee in await channels(ami), "the call goes on, unheard"
    assert await tones_heard(ami, "acme_101") == 0
