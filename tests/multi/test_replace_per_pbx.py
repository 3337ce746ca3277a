"""A phone replace's AstDB keys live on the Asterisk server the phone dialed it on: recorded with
the replacement, and deleted over that server's Manager (revocation, restore over HTTP) or kept
pending for that server until it is reachable; never sent to another server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callgate.daemon import Services
from fake_asterisk import FakeChannel, call, request_environment
from reference_policy import REFERENCE_DOCUMENT
from replace.test_replace_manager import AstDbAmi
from support import wait_until

from .conftest import AUTH, CLIENT, POLICY, base, pbx_tables, put, settings

Make = Callable[..., Any]
PIN = "246810"
ACTING, DEVICE = f"callgate/{CLIENT}/acting", f"callgate/{CLIENT}/device"
NO_REPLACE = {**REFERENCE_DOCUMENT, "phone_replace_groups": []}


@pytest.fixture
async def astdb_fakes() -> Any:
    made = {"east": AstDbAmi(), "west": AstDbAmi()}
    for fake in made.values():
        await fake.start()
    yield made
    for fake in made.values():
        await fake.close()


async def replace_on(services: Services, pbx: str, phone: str, target: str) -> FakeChannel:
    """Phone ``phone`` dials replace ``target`` on server ``pbx`` and types the PIN."""
    channel = FakeChannel(variables={"CALLGATE_EXT": phone}, dtmf=[PIN])
    env = request_environment("replace", CLIENT, phone, target, pbx, name="get-data-pin.txt")
    await call(services.agi.port, env, channel)
    assert channel.variables["CALLGATE_DECISION"] == "ALLOW", channel.variables
    return channel


async def ready_to_replace(daemon: Services, http: aiohttp.ClientSession) -> None:
    """Both Managers up, the reference policy in force, 101's PIN set."""
    await wait_until(lambda: daemon.ami_status() == "up")
    await put(http, POLICY, REFERENCE_DOCUMENT)
    pin_url = f"/client/{CLIENT}/extension/101/replace_pin"
    async with http.put(pin_url, json={"pin": PIN}, headers=AUTH) as response:
        assert response.status == 204


def deleted(fake: AstDbAmi) -> list[tuple[str, str]]:
    return [(a.get("Family"), a.get("Key")) for a in fake.received("DBDel")]


async def test_replacements_are_cleared_on_the_server_they_were_made_on(
    tmp_path: Path, astdb_fakes: dict[str, AstDbAmi], make_daemon: Make
) -> None:
    east, west = astdb_fakes["east"], astdb_fakes["west"]
    daemon = await make_daemon(settings(tmp_path, pbx=pbx_tables(astdb_fakes)))
    async with aiohttp.ClientSession(base(daemon)) as http:
        await ready_to_replace(daemon, http)

        # 100 replaces 101 from west: the session itself writes west's AstDB
        channel = await replace_on(daemon, "west", "100", "101")
        assert channel.astdb == {(ACTING, "100"): "101", (DEVICE, "101"): "100"}
        (replacement,) = await daemon.store.replace.replacements(CLIENT)
        assert replacement.pbx == "west"

        # a policy change revokes it: the keys go from west, over west's Manager
        await put(http, POLICY, NO_REPLACE)
        await daemon.app.replace.idle()
        await wait_until(lambda: len(deleted(west)) == 2)
        assert sorted(deleted(west)) == [(ACTING, "100"), (DEVICE, "101")]
        assert deleted(east) == []

        # 100 replaces 101 from east; restored over HTTP: east's keys, east's Manager
        await put(http, POLICY, REFERENCE_DOCUMENT)
        await replace_on(daemon, "east", "100", "101")
        async with http.delete(f"/client/{CLIENT}/replacements/100", headers=AUTH) as response:
            assert response.status in (200, 204), await response.text()
        assert sorted(deleted(east)) == [(ACTING, "100"), (DEVICE, "101")]
        assert len(deleted(west)) == 2


async def test_keys_owed_to_an_unreachable_server_wait_for_that_server(
    tmp_path: Path, astdb_fakes: dict[str, AstDbAmi], make_daemon: Make
) -> None:
    east, west = astdb_fakes["east"], astdb_fakes["west"]
    daemon = await make_daemon(settings(tmp_path, pbx=pbx_tables(astdb_fakes)))
    async with aiohttp.ClientSession(base(daemon)) as http:
        await ready_to_replace(daemon, http)
        await replace_on(daemon, "west", "100", "101")

        port = west.port
        await west.close()  # west's Manager is unreachable while the change revokes
        await wait_until(lambda: daemon.pbx_states()["west"] == "down")  # type: ignore[index]
        await put(http, POLICY, NO_REPLACE)
        await wait_until(lambda: daemon.store.replace.pending())  # the revocation runs after
        await daemon.app.replace.idle()
        pending = await daemon.store.replace.pending()
        assert sorted((p.pbx, p.key) for p in pending) == [
            ("west", (ACTING, "100")),
            ("west", (DEVICE, "101")),
        ]
        assert await daemon.app.replace.flush_pending() == ()  # east is up, but not theirs
        assert deleted(east) == []

        await west.start(port)  # back: its own connection settles what it is owed
        await wait_until(lambda: daemon.pbx_states()["west"] == "up")  # type: ignore[index]
        flushed = await daemon.app.replace.flush_pending()
        assert sorted(flushed) == [(ACTING, "100"), (DEVICE, "101")]
        assert sorted(deleted(west)) == [(ACTING, "100"), (DEVICE, "101")]
        assert await daemon.store.replace.pending() == []
        assert deleted(east) == []
