"""The whole daemon with the fake Manager, for the console's route and browser tests: start it,
make client tokens, and start a real listen session (a FastAGI decision, then ChanSpy)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from callgate.config import Settings
from callgate.daemon import Services, start
from fake_ami import FakeAmi
from fake_asterisk import call, environment_with, load_transcript
from reference_policy import REFERENCE_DOCUMENT
from support import free_port, wait_until

ADMIN_TOKEN = "console-admin-token-for-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLIENT = "acme"


def base_url(services: Services) -> str:
    host, port = services.settings.http_address
    return f"http://{host}:{port}"


@asynccontextmanager
async def running_daemon(tmp_path: Path, fake: FakeAmi | None) -> AsyncIterator[Services]:
    ami: dict[str, object] = {}
    if fake is not None:
        ami = {"ami": f"127.0.0.1:{fake.port}", "ami_user": "callgate", "ami_secret": "s3cret"}
    settings = Settings(
        agi=f"127.0.0.1:{free_port()}",
        http=f"127.0.0.1:{free_port()}",
        data_dir=tmp_path,
        admin_token=SecretStr(ADMIN_TOKEN),
        ami_reconcile_interval=3600,
        **ami,  # type: ignore[arg-type]
    )
    services = await start(settings)
    try:
        if fake is not None:
            await wait_until(lambda: services.ami_status() == "up")
        yield services
    finally:
        await services.stop()


async def client_token(services: Services, client_id: str, name: str) -> str:
    async with (
        aiohttp.ClientSession(base_url(services)) as http,
        http.post("/tokens", json={"name": name, "client_id": client_id}, headers=ADMIN) as r,
    ):
        assert r.status == 201, await r.text()
        return str((await r.json())["token"])


async def put_policy(services: Services, client_id: str, document: dict[str, object]) -> None:
    async with (
        aiohttp.ClientSession(base_url(services)) as http,
        http.put(f"/client/{client_id}/call_control_group/", json=document, headers=ADMIN) as r,
    ):
        assert r.status == 200, await r.text()


async def start_listen(
    services: Services,
    fake: FakeAmi,
    client_id: str,
    ext: str,
    target: str,
    uniqueid: str,
    *,
    action: str = "eavesdrop",
) -> str:
    """A FastAGI ``action`` decision for ``ext`` -> ``target`` (allowed), then its ChanSpy runs
    on that channel; returns the listener's channel once callgate tracks the session."""
    channel = f"PJSIP/{client_id}_{ext}-{uniqueid.replace('.', '')}"
    _, agi_port = services.settings.agi_address
    environment = environment_with(
        load_transcript("commands-and-replies.txt"),
        agi_network_script=action,
        agi_request=f"agi://127.0.0.1:4573/{action}",
        agi_uniqueid=uniqueid,
        agi_channel=channel,
        args=(client_id, ext, target),  # type: ignore[arg-type]
    )
    answer = await call(agi_port, environment)
    assert answer.variables["CALLGATE_DECISION"] == "ALLOW", answer.variables
    await fake.start_spy(channel, uniqueid, f"PJSIP/{client_id}_{target}-1", uniqueid + "9")
    return channel


# Fixtures, imported by the test modules that use them (``from console.daemon_support import``).


@pytest.fixture
async def daemon(tmp_path: Path, fake: FakeAmi) -> AsyncIterator[Services]:
    """The whole daemon, its Manager the fake, client ``acme`` on the reference policy."""
    async with running_daemon(tmp_path, fake) as services:
        await put_policy(services, CLIENT, REFERENCE_DOCUMENT)
        yield services
