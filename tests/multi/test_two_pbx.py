"""One daemon, two Asterisk servers (``east`` and ``west``, each a fake Manager): ``/readyz`` and
the metrics per server, a listen revoked on the server it runs on and nowhere else, and FastAGI
sessions of a server the settings do not name denied."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from callgate.daemon import Services
from callgate.pbx import ChannelRef, PbxName
from fake_ami import FakeAmi
from reference_policy import REFERENCE_DOCUMENT
from support import wait_until

from .conftest import (
    POLICY,
    WITHOUT_LISTEN,
    ask,
    base,
    pbx_tables,
    put,
    settings,
    spy_environment,
)

Make = Callable[..., Any]


async def readyz(services: Services) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{base(services)}/readyz") as r:
        return r.status, await r.json()


def sample(services: Services, name: str, **labels: str) -> float | None:
    return services.metrics.registry.get_sample_value(name, labels)


async def test_readyz_and_the_metrics_say_each_servers_manager_state(
    tmp_path: Path, fakes: dict[str, FakeAmi], make_daemon: Make
) -> None:
    daemon = await make_daemon(settings(tmp_path, pbx=pbx_tables(fakes)))
    await wait_until(lambda: daemon.ami_status() == "up")
    assert await readyz(daemon) == (
        200,
        {
            "status": "ready",
            "policies_loaded": True,
            "ami": "up",
            "store": "reachable",
            "pbx": {"east": "up", "west": "up"},
        },
    )
    assert sample(daemon, "callgate_ami_pbx_state", pbx="west", state="connected") == 1
    assert sample(daemon, "callgate_ami_enforcing", pbx="east") == 1
    assert sample(daemon, "callgate_store_reachable") == 1

    await fakes["west"].close()  # that Asterisk goes away; east stays
    await wait_until(lambda: daemon.pbx_states()[PbxName("west")] == "down")
    status, body = await readyz(daemon)
    assert status == 200  # FastAGI still decides for both
    assert (body["ami"], body["pbx"]) == ("down", {"east": "up", "west": "down"})
    assert sample(daemon, "callgate_ami_pbx_state", pbx="west", state="disconnected") == 1
    assert sample(daemon, "callgate_ami_pbx_state", pbx="west", state="connected") == 0
    assert sample(daemon, "callgate_ami_pbx_state", pbx="east", state="connected") == 1


async def test_a_listen_is_revoked_on_the_server_it_runs_on_only(
    tmp_path: Path, fakes: dict[str, FakeAmi], make_daemon: Make
) -> None:
    daemon = await make_daemon(settings(tmp_path, pbx=pbx_tables(fakes)))
    await wait_until(lambda: all(fake.received("CoreShowChannels") for fake in fakes.values()))
    east, west = fakes["east"], fakes["west"]
    async with aiohttp.ClientSession(base(daemon)) as http:
        await put(http, POLICY, REFERENCE_DOCUMENT)
        # A uniqueid (and even a channel name) is unique on one server only: west has the same.
        channel, uniqueid = "PJSIP/acme_100-00000011", "1795723209.17"
        _, agi_port = daemon.settings.agi_address
        environment = spy_environment("eavesdrop", uniqueid, channel, "east")
        assert await ask(agi_port, environment) == ("ALLOW", "eavesdrop_group")
        await east.start_spy(channel, uniqueid, "PJSIP/acme_101-1", "1.1")
        await west.start_spy(channel, uniqueid, "PJSIP/acme_101-2", "2.2")
        assert daemon.live is not None
        await wait_until(lambda: daemon.live.session(ChannelRef(PbxName("east"), uniqueid)))
        assert daemon.live.session(ChannelRef(PbxName("west"), uniqueid)) is None

        await put(http, POLICY, WITHOUT_LISTEN)
        hangup = await east.wait_for(lambda a: a.name == "Hangup")
        assert hangup.get("Channel") == channel
        await asyncio.sleep(0.2)  # a wrong Hangup on west would have been sent by now
        assert west.received("Hangup") == []
        assert len(east.received("Hangup")) == 1


async def test_a_server_the_settings_do_not_name_is_denied(
    tmp_path: Path, fakes: dict[str, FakeAmi], make_daemon: Make
) -> None:
    daemon = await make_daemon(settings(tmp_path, pbx=pbx_tables(fakes)))
    _, agi_port = daemon.settings.agi_address
    async with aiohttp.ClientSession(base(daemon)) as http:
        await put(http, POLICY, REFERENCE_DOCUMENT)
    asking = ("PJSIP/acme_100-00000001", "1.1")
    for pbx, expected in [
        (("east",), ("ALLOW", "eavesdrop_group")),
        (("west",), ("ALLOW", "eavesdrop_group")),
        (("north",), ("DENY", "invalid_request")),  # a typo in [globals]: fail closed
        ((), ("DENY", "invalid_request")),  # a dialplan that names no server: "default"
    ]:
        environment = spy_environment("eavesdrop", asking[1], asking[0], *pbx)
        assert await ask(agi_port, environment) == expected, pbx
    assert daemon.spy_grants.take(ChannelRef(PbxName("north"), "1.1")) is None


async def test_without_a_manager_the_one_server_is_default(
    tmp_path: Path, make_daemon: Make
) -> None:
    daemon = await make_daemon(settings(tmp_path))
    status, body = await readyz(daemon)
    assert (status, body["ami"], body["pbx"]) == (
        200,
        "not_configured",
        {"default": "not_configured"},
    )
    _, agi_port = daemon.settings.agi_address
    async with aiohttp.ClientSession(base(daemon)) as http:
        await put(http, POLICY, REFERENCE_DOCUMENT)
    for pbx, expected in [
        ((), "ALLOW"),  # a dialplan from before several servers
        (("default",), "ALLOW"),  # the shipped [globals] value
        (("east",), "DENY"),
    ]:
        environment = spy_environment("eavesdrop", "1.1", "PJSIP/acme_100-00000001", *pbx)
        assert (await ask(agi_port, environment))[0] == expected, pbx
