"""Who enforces, with two real ``callgate serve`` processes on one PostgreSQL database and one
Asterisk (a fake Manager): one instance holds the PBX's enforcement lock and hangs up each
revoked listen once, whichever instance allowed it; killed with SIGKILL, the other takes the lock
over, adopts the listens still running and ends the next one a change revokes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fake_ami import FakeAmi
from reference_policy import REFERENCE_DOCUMENT
from store.test_pg_serve import TOKEN, log_of, serve, wait_ready
from support import free_port, wait_until

from .conftest import POLICY, WITHOUT_LISTEN, ask, left_on_channel, spy_environment

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
TAKEOVER_WITHIN = 20.0
"""Seconds allowed from SIGKILL to the survivor enforcing (lock retry 0.2 s, then login)."""


@dataclass
class Instance:
    proc: asyncio.subprocess.Process
    base: str
    agi_port: int
    data_dir: Path

    async def readyz(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.get(f"{self.base}/readyz") as response:
            return dict(await response.json())

    async def pbx_state(self, http: aiohttp.ClientSession) -> str:
        return str((await self.readyz(http))["pbx"]["default"])

    async def listening(self, http: aiohttp.ClientSession) -> float:
        """``callgate_spy_sessions_active`` of acme's listens on this instance."""
        async with http.get(f"{self.base}/metrics") as response:
            text = await response.text()
        found = re.search(
            r'^callgate_spy_sessions_active\{client="acme",mode="eavesdrop"\} (\S+)$', text, re.M
        )
        return float(found.group(1)) if found else 0.0


async def start_instance(dsn: str, data_dir: Path, fake: FakeAmi) -> Instance:
    agi_port = free_port()
    proc, base = await serve(
        dsn,
        data_dir,
        "--ami",
        f"127.0.0.1:{fake.port}",
        "--ami-user",
        fake.username,
        more_env={
            "CALLGATE_AMI_SECRET": fake.secret,
            "CALLGATE_ENFORCE_LOCK_INTERVAL": "0.2",
            "CALLGATE_AMI_BACKOFF_MAX": "0.2",
            "CALLGATE_LOG_LEVEL": "INFO",
        },
        agi_port=agi_port,
    )
    return Instance(proc, base, agi_port, data_dir)


@pytest.fixture
def data_dirs(tmp_path: Path) -> tuple[Path, Path]:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    return tmp_path / "a", tmp_path / "b"


@pytest.fixture
async def pair(
    pg_dsn: str, data_dirs: tuple[Path, Path], fake: FakeAmi
) -> AsyncIterator[tuple[Instance, Instance]]:
    started: list[Instance] = []
    try:
        async with aiohttp.ClientSession() as http:
            first = await start_instance(pg_dsn, data_dirs[0], fake)
            started.append(first)
            await wait_ready(http, first.base, first.proc, first.data_dir)
            await wait_until(lambda: _is(first.pbx_state(http), "up"), within=10)
            second = await start_instance(pg_dsn, data_dirs[1], fake)
            started.append(second)
            await wait_ready(http, second.base, second.proc, second.data_dir)
        yield first, second
    finally:
        for each in started:
            if each.proc.returncode is None:
                each.proc.terminate()
        for each in started:
            try:
                await asyncio.wait_for(each.proc.wait(), 10)
            except TimeoutError:
                each.proc.kill()
                await each.proc.wait()


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)


async def put(http: aiohttp.ClientSession, instance: Instance, document: object) -> None:
    async with http.put(f"{instance.base}{POLICY}", json=document, headers=AUTH) as response:
        assert response.status == 200, await response.text()


async def allowed_listen(instance: Instance, fake: FakeAmi, n: int, version: int) -> str:
    """100 listens to 101 on a call: ``instance`` allows it over FastAGI, then the shipped
    dialplan's ``[callgate]`` ``listen`` runs ChanSpy on that channel. Its channel name."""
    channel, uniqueid = f"PJSIP/acme_100-{n:08x}", f"1795723209.{n}"
    environment = spy_environment("eavesdrop", uniqueid, channel, "default")
    assert await ask(instance.agi_port, environment) == ("ALLOW", "eavesdrop_group")
    await fake.start_spy(
        channel,
        uniqueid,
        f"PJSIP/acme_101-{n + 1000:08x}",
        f"1795723206.{n}",
        options="qESu",
        context="callgate",
        exten="listen",
        variables=left_on_channel(version),
    )
    return channel


def hangups(fake: FakeAmi, channel: str) -> int:
    return sum(1 for action in fake.received("Hangup") if action.get("Channel") == channel)


async def answers(instance: Instance, expected: str) -> bool:
    environment = spy_environment("eavesdrop", "1.0", "PJSIP/acme_100-00000000", "default")
    return (await ask(instance.agi_port, environment))[0] == expected


async def test_one_hangup_per_revoked_listen_and_a_takeover_after_sigkill(
    pair: tuple[Instance, Instance], fake: FakeAmi
) -> None:
    first, second = pair
    async with aiohttp.ClientSession() as http:
        # the first instance started first: it enforces; the second stands by, not connected
        assert await first.pbx_state(http) == "up"
        body = await second.readyz(http)
        assert (body["status"], body["pbx"], body["store"]) == (
            "ready",
            {"default": "standby"},
            "reachable",
        )
        assert fake.sessions == 1

        await put(http, second, REFERENCE_DOCUMENT)
        await wait_until(lambda: answers(first, "ALLOW"))
        # one listen allowed by each instance; the enforcing one follows both
        by_second = await allowed_listen(second, fake, 1, version=1)
        by_first = await allowed_listen(first, fake, 2, version=1)
        await wait_until(lambda: _equals(first.listening(http), 2.0))

        await put(http, second, WITHOUT_LISTEN)
        await wait_until(lambda: hangups(fake, by_second) and hangups(fake, by_first))
        await asyncio.sleep(0.5)  # time for any second Hangup to arrive
        assert (hangups(fake, by_second), hangups(fake, by_first)) == (1, 1), log_of(first.data_dir)

        # a listen running when the enforcing instance dies
        await put(http, second, REFERENCE_DOCUMENT)
        await wait_until(lambda: answers(first, "ALLOW"))
        running = await allowed_listen(first, fake, 3, version=3)
        await wait_until(lambda: _equals(first.listening(http), 1.0))
        first.proc.kill()
        await first.proc.wait()
        await wait_until(lambda: _is(second.pbx_state(http), "up"), within=TAKEOVER_WITHIN)
        await wait_until(lambda: _equals(second.listening(http), 1.0), within=10)

        await put(http, second, WITHOUT_LISTEN)
        await wait_until(lambda: hangups(fake, running), within=10)
        await asyncio.sleep(0.5)
        assert hangups(fake, running) == 1, log_of(second.data_dir)


async def _equals(value: Any, expected: float) -> bool:
    return bool(await value == expected)
