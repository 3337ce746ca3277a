"""Phone replace inside a whole daemon (``daemon.start``): PIN over HTTP, replace over FastAGI,
the list over HTTP, revocation by a policy PUT, and the lockout surviving a restart."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import aiohttp

from callgate.config import Settings
from callgate.daemon import Services, start
from fake_asterisk import FakeChannel, call, request_environment
from reference_policy import REFERENCE_DOCUMENT
from support import free_port

ADMIN = {"Authorization": "Bearer daemon-admin-token"}
PIN = "246810"


def settings_for(data_dir: Path) -> Settings:
    return Settings(
        agi=f"127.0.0.1:{free_port()}",
        http=f"127.0.0.1:{free_port()}",
        data_dir=data_dir,
        admin_token="daemon-admin-token",  # type: ignore[arg-type]
    )


async def replace(
    services: Services, digits: str, astdb: dict[tuple[str, str], str]
) -> Mapping[str, str]:
    assert services.agi is not None
    channel = FakeChannel(variables={"CALLGATE_EXT": "100"}, astdb=astdb, dtmf=[digits])
    env = request_environment("replace", "acme", "100", "101", name="get-data-pin.txt")
    await call(services.agi.port, env, channel)
    return channel.variables


async def test_replace_through_the_whole_daemon(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    base = f"http://{settings.http}"
    services = await start(settings)
    astdb: dict[tuple[str, str], str] = {}
    try:
        async with aiohttp.ClientSession(base, headers=ADMIN) as http:
            resp = await http.put("/client/acme/call_control_group/", json=REFERENCE_DOCUMENT)
            assert resp.status == 200
            resp = await http.put("/client/acme/extension/101/replace_pin", json={"pin": PIN})
            assert resp.status == 204

            answer = await replace(services, PIN, astdb)
            assert answer["CALLGATE_DECISION"] == "ALLOW"
            assert astdb == {
                ("callgate/acme/acting", "100"): "101",
                ("callgate/acme/device", "101"): "100",
            }
            listed = await (await http.get("/client/acme/replacements")).json()
            assert [(r["phone"], r["to_ext"]) for r in listed["replacements"]] == [("100", "101")]

            # a policy that no longer lets 100 replace 101 ends the replacement at once
            document = {**REFERENCE_DOCUMENT, "phone_replace_groups": []}
            resp = await http.put("/client/acme/call_control_group/", json=document)
            assert resp.status == 200
            listed = await (await http.get("/client/acme/replacements")).json()
            assert listed == {"replacements": []}
    finally:
        await services.stop()


async def test_lockout_survives_a_daemon_restart(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    services = await start(settings)
    astdb: dict[tuple[str, str], str] = {}
    try:
        async with aiohttp.ClientSession(f"http://{settings.http}", headers=ADMIN) as http:
            await http.put("/client/acme/call_control_group/", json=REFERENCE_DOCUMENT)
            await http.put("/client/acme/extension/101/replace_pin", json={"pin": PIN})
        for wrong in ("1111", "2222", "3333", "4444", "5555"):
            assert (await replace(services, wrong, astdb))["CALLGATE_REASON"] == "bad_pin"
    finally:
        await services.stop()

    services = await start(settings_for(tmp_path))
    try:
        answer = await replace(services, PIN, astdb)
        assert (answer["CALLGATE_DECISION"], answer["CALLGATE_REASON"]) == ("DENY", "locked_out")
    finally:
        await services.stop()
    assert astdb == {}
