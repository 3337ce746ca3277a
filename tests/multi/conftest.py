"""Fixtures of the several-servers tests: two fake Managers (``east``, ``west``), a whole daemon
naming both (``[pbx.east]``, ``[pbx.west]``), and FastAGI sessions that say which server asks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from callgate.agi import variables
from callgate.config import Settings
from callgate.daemon import Services, start
from fake_ami import FakeAmi
from fake_asterisk import FakeChannel, call, environment_with, load_transcript
from reference_policy import REFERENCE_DOCUMENT
from serve_support import Instance, serving
from support import free_port

TOKEN = "multi-pbx-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
CLIENT = "acme"
POLICY = f"/client/{CLIENT}/call_control_group/"
WITHOUT_LISTEN = {k: v for k, v in REFERENCE_DOCUMENT.items() if k != "eavesdrop_100"}
"""The reference policy without the grant that lets 100 listen to 101."""


def settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(
        agi=f"127.0.0.1:{free_port()}",
        http=f"127.0.0.1:{free_port()}",
        data_dir=tmp_path,
        admin_token=SecretStr(TOKEN),
        ami_ping_interval=0.5,
        ami_backoff_max=0.2,
        **kw,
    )


def pbx_tables(fakes: Mapping[str, FakeAmi]) -> dict[str, dict[str, str]]:
    return {
        name: {
            "ami": f"127.0.0.1:{fake.port}",
            "ami_user": fake.username,
            "ami_secret": fake.secret,
        }
        for name, fake in fakes.items()
    }


def base(services: Services) -> str:
    host, port = services.settings.http_address
    return f"http://{host}:{port}"


def spy_environment(
    action: str, uniqueid: str, channel: str, *args: str, acting: str = "100"
) -> bytes:
    """An ``eavesdrop``/``whisper`` FastAGI request of ``acting`` for 101; ``args`` after the
    target (the shipped dialplan: the PBX name)."""
    return environment_with(
        load_transcript("commands-and-replies.txt"),
        agi_network_script=action,
        agi_request=f"agi://127.0.0.1:4573/{action}",
        agi_uniqueid=uniqueid,
        agi_channel=channel,
        args=(CLIENT, acting, "101", *args),  # type: ignore[arg-type]
    )


async def ask(port: int, environment: bytes) -> tuple[str, str]:
    channel = await call(port, environment, FakeChannel())
    return channel.variables["CALLGATE_DECISION"], channel.variables["CALLGATE_REASON"]


def left_on_channel(version: int = 1) -> dict[str, str]:
    """The variables a listen of 100 on 101 carries once callgate allowed it (what ``Getvar``
    reads back): the answer, the client and acting extension, the subroutine's target."""
    return {
        variables.DECISION: variables.ALLOW,
        variables.VERSION: str(version),
        variables.REASON: "eavesdrop_group",
        variables.DIALPLAN_CLIENT: CLIENT,
        variables.DIALPLAN_ACTING: "100",
        "ARG2": "101",
    }


async def put(http: aiohttp.ClientSession, url: str, document: object) -> None:
    async with http.put(url, json=document, headers=AUTH) as response:
        assert response.status == 200, await response.text()


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeAmi]]:
    made = {"east": FakeAmi(), "west": FakeAmi()}
    for fake in made.values():
        await fake.start()
    yield made
    for fake in made.values():
        await fake.close()


@pytest.fixture
async def make_daemon() -> AsyncIterator[Callable[[Settings], Any]]:
    running: list[Services] = []

    async def make(config: Settings) -> Services:
        services = await start(config)
        running.append(services)
        return services

    yield make
    for services in running:
        await services.stop()


@pytest.fixture
async def pair(pg_dsn: str, tmp_path: Path) -> AsyncIterator[list[Instance]]:
    """Two real ``callgate serve`` processes on one PostgreSQL database."""
    async with serving(pg_dsn, tmp_path) as running:
        yield running
