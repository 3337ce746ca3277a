"""The whole daemon in-process: a PUT over HTTP decides the very next FastAGI session.

``daemon.start`` opens the store, loads the policies, opens the FastAGI and HTTP listeners; a fake
Asterisk (``tests/fake_asterisk.py``) then asks over a real FastAGI session, right after each PUT
is answered, with no sleep and no polling.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from callgate.config import Settings
from callgate.daemon import Services, start
from support import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: the shared fakes
from fake_asterisk import call, request_environment

TOKEN = "live-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
URL = "/client/acme/call_control_group/"


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[Services, str]]:
    settings = Settings(
        agi=f"127.0.0.1:{free_port()}",
        http=f"127.0.0.1:{free_port()}",
        data_dir=tmp_path,
        admin_token=SecretStr(TOKEN),
    )
    services = await start(settings)
    host, port = settings.http_address
    try:
        yield services, f"http://{host}:{port}"
    finally:
        await services.stop()


async def agi_decision(services: Services, action: str, *args: str) -> dict[str, str]:
    _, port = services.settings.agi_address
    channel = await call(port, request_environment(action, *args))
    return {k: v for k, v in channel.variables.items() if k.startswith("CALLGATE_")}


async def test_each_put_decides_the_very_next_fastagi_session(
    daemon: tuple[Services, str],
) -> None:
    services, base = daemon
    async with aiohttp.ClientSession(base) as http:
        async with http.get("/readyz") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ready"
        for round_ in range(1, 11):
            allow = round_ % 2 == 1
            document = (
                {"groups": {"support": ["100", "101"]}, "eavesdrop_100": ["support"]}
                if allow
                else {"groups": {"support": ["100", "101"]}}
            )
            async with http.put(URL, json=document, headers=AUTH) as response:
                assert response.status == 200
                assert response.headers["ETag"] == f'"{round_}"'
            answer = await agi_decision(services, "eavesdrop", "acme", "100", "101")
            assert answer["CALLGATE_DECISION"] == ("ALLOW" if allow else "DENY")
            assert answer["CALLGATE_REASON"] == (
                "eavesdrop_group" if allow else "eavesdrop_not_permitted"
            )
            assert answer["CALLGATE_VERSION"] == str(round_)

        async with http.delete(URL, headers=AUTH) as response:
            assert response.status == 200
        answer = await agi_decision(services, "eavesdrop", "acme", "100", "101")
        assert answer["CALLGATE_DECISION"] == "DENY"
        assert answer["CALLGATE_VERSION"] == "11"


async def test_a_restart_decides_by_the_stored_policy(tmp_path: Path) -> None:
    settings = Settings(
        agi=f"127.0.0.1:{free_port()}",
        http=f"127.0.0.1:{free_port()}",
        data_dir=tmp_path,
        admin_token=SecretStr(TOKEN),
    )
    host, port = settings.http_address
    services = await start(settings)
    try:
        async with (
            aiohttp.ClientSession(f"http://{host}:{port}") as http,
            http.put(URL, json={"allow_all": True}, headers=AUTH) as response,
        ):
            assert response.status == 200
    finally:
        await services.stop()

    services = await start(settings)
    try:
        assert services.registry.get("acme").version == 1
        answer = await agi_decision(services, "whisper", "acme", "100", "555")
        assert answer["CALLGATE_DECISION"] == "ALLOW"
        assert answer["CALLGATE_REASON"] == "allow_all"
    finally:
        await services.stop()
