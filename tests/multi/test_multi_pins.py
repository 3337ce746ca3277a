"""The PIN lockout across instances: 20 concurrent wrong PINs for one extension, split across two
real ``callgate serve`` processes on one PostgreSQL database, are exactly ``max_failures`` (5)
``bad_pin`` — the rest are refused as locked out — whichever instance took each guess."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp

from fake_asterisk import FakeChannel, call, request_environment
from reference_policy import REFERENCE_DOCUMENT
from serve_support import AUTH, Instance

CLIENT = "acme"
GUESSES = 20


async def wrong_guess(instance: Instance) -> str:
    """One phone replace by phone 100 for 101 (the reference policy allows it), typing a wrong
    PIN; the reason the instance answered."""
    channel = FakeChannel(variables={"CALLGATE_EXT": "100"}, dtmf=["9999"])
    environment = request_environment("replace", CLIENT, "100", "101", name="get-data-pin.txt")
    channel = await asyncio.wait_for(call(instance.agi_port, environment, channel), 30)
    assert channel.variables.get("CALLGATE_DECISION") == "DENY", channel.variables
    return channel.variables["CALLGATE_REASON"]


async def test_twenty_wrong_pins_across_two_instances_are_exactly_five_bad_pin(
    pair: list[Instance],
) -> None:
    first, second = pair
    async with aiohttp.ClientSession() as http:
        url = f"{first.base}/client/{CLIENT}/call_control_group/"
        async with http.put(url, json=REFERENCE_DOCUMENT, headers=AUTH) as response:
            assert response.status == 200, await response.text()
        pin = f"{second.base}/client/{CLIENT}/extension/101/replace_pin"
        async with http.put(pin, json={"pin": "1234"}, headers=AUTH) as response:
            assert response.status == 204, await response.text()
        # both instances decide by the policy before the guesses start
        for instance in pair:
            check = f"{instance.base}/client/{CLIENT}/call_control_group/check"
            for _ in range(100):  # bounded: the change feed brings it within milliseconds
                async with http.get(
                    check,
                    params={"action": "replace", "ext": "100", "target": "101"},
                    headers=AUTH,
                ) as response:
                    if (await response.json())["decision"] == "allow":
                        break
                await asyncio.sleep(0.05)
    reasons = Counter(await asyncio.gather(*(wrong_guess(pair[n % 2]) for n in range(GUESSES))))
    assert reasons["bad_pin"] == 5, reasons
    assert sum(reasons.values()) == GUESSES
    assert set(reasons) <= {"bad_pin", "locked_out"}, reasons
