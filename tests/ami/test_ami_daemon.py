"""The whole daemon with and without ``--ami``: /readyz says whether live enforcement is on, and
a policy PUT over HTTP hangs up a listener whose right it withdraws."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr, ValidationError

from callgate.config import Settings
from callgate.daemon import Services, start
from fake_ami import FakeAmi
from fake_asterisk import call, environment_with, load_transcript
from support import free_port, wait_until

from .conftest import CLIENT, REFERENCE

TOKEN = "ami-daemon-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLICY = f"/client/{CLIENT}/call_control_group/"


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(
        agi=f"127.0.0.1:{free_port()}",
        http=f"127.0.0.1:{free_port()}",
        data_dir=tmp_path,
        admin_token=SecretStr(TOKEN),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
async def daemon(tmp_path: Path, fake: FakeAmi) -> AsyncIterator[Services]:
    services = await start(
        settings(tmp_path, ami=f"127.0.0.1:{fake.port}", ami_user="callgate", ami_secret="s3cret")
    )
    try:
        yield services
    finally:
        await services.stop()


def base(services: Services) -> str:
    host, port = services.settings.http_address
    return f"http://{host}:{port}"


async def readyz_ami(services: Services) -> str:
    """What ``/readyz`` (which must answer 200) says about live enforcement."""
    async with (
        aiohttp.ClientSession(base(services)) as http,
        http.get("/readyz") as response,
    ):
        assert response.status == 200
        return str((await response.json())["ami"])


async def test_without_ami_it_decides_and_says_live_enforcement_is_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="callgate.daemon")
    services = await start(settings(tmp_path))
    try:
        assert await readyz_ami(services) == "not_configured"
    finally:
        await services.stop()
    assert "live enforcement is off (no --ami)" in caplog.text


async def test_refused_credentials_show_on_readyz_as_auth_failed(
    tmp_path: Path, fake: FakeAmi
) -> None:
    services = await start(
        settings(tmp_path, ami=f"127.0.0.1:{fake.port}", ami_user="callgate", ami_secret="wrong")
    )
    try:
        await wait_until(lambda: services.ami_status() == "auth_failed")
        assert await readyz_ami(services) == "auth_failed"
    finally:
        await services.stop()


def test_ami_without_credentials_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="--ami needs --ami-user"):
        settings(tmp_path, ami="127.0.0.1:5038")


async def test_a_policy_put_over_http_hangs_up_the_listener_it_withdraws(
    daemon: Services, fake: FakeAmi
) -> None:
    async with aiohttp.ClientSession(base(daemon)) as http:
        async with http.put(
            f"/client/{CLIENT}/call_control_group/", json=REFERENCE, headers=AUTH
        ) as r:
            assert r.status == 200
        await wait_until(lambda: bool(fake.received("CoreShowChannels")))
        async with http.get("/readyz") as response:
            assert (await response.json())["ami"] == "up"

        # A real FastAGI session asks for eavesdrop 100 -> 101 and is allowed; then the dialplan
        # runs ChanSpy on that same channel, and Asterisk announces it.
        _, agi_port = daemon.settings.agi_address
        environment = environment_with(
            load_transcript("commands-and-replies.txt"),
            agi_network_script="eavesdrop",
            agi_request="agi://127.0.0.1:4573/eavesdrop",
            agi_uniqueid="1795723209.17",
            agi_channel="PJSIP/acme_100-00000011",
            args=(CLIENT, "100", "101"),  # type: ignore[arg-type]
        )
        channel = await call(agi_port, environment)
        assert channel.variables["CALLGATE_DECISION"] == "ALLOW"
        await fake.start_spy("PJSIP/acme_100-00000011", "1795723209.17", "PJSIP/acme_101-1", "1.1")
        withdrawn = {k: v for k, v in REFERENCE.items() if k != "eavesdrop_100"}
        await wait_until(
            lambda: bool(
                daemon.metrics.registry.get_sample_value(
                    "callgate_spy_sessions_active", {"client": CLIENT, "mode": "eavesdrop"}
                )
            )
        )
        async with http.put(
            f"/client/{CLIENT}/call_control_group/", json=withdrawn, headers=AUTH
        ) as r:
            assert r.status == 200
        hangup = await fake.wait_for(lambda a: a.name == "Hangup")
        assert hangup.get("Channel") == "PJSIP/acme_100-00000011"
        assert len(fake.received("Hangup")) == 1

        # One audit row: the FastAGI decision, completed with the session's start and end.
        await wait_until(
            lambda: (
                not daemon.metrics.registry.get_sample_value(
                    "callgate_spy_sessions_active", {"client": CLIENT, "mode": "eavesdrop"}
                )
            )
        )
        assert daemon.store is not None
        await daemon.store.audit.flush()
        async with http.get(f"/client/{CLIENT}/audit?action=eavesdrop", headers=AUTH) as r:
            (row,) = (await r.json())["events"]
        assert (row["ext"], row["target"], row["decision"]) == ("100", "101", "allow")
        assert (row["uniqueid"], row["policy_version"]) == ("1795723209.17", 1)
        assert row["started"] is not None
        assert (row["end_reason"], row["revoked_by_version"]) == ("revoked", "2")

        await fake.drop()
        await fake.close()
        await wait_until(lambda: daemon.ami_status() != "up")
        async with http.get("/readyz") as response:
            assert response.status == 200
            assert (await response.json())["ami"] == "down"
