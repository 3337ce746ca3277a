"""The composition root: ``daemon.start`` starts the components in the order of one list and is
ready once all have; ``stop`` stops them in the reverse order; a start that fails halfway stops
what had started; either way no task is left running."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest
from aiohttp import ClientSession

from callgate.config import Settings
from callgate.daemon import start
from fake_asterisk import call, request_environment
from support import free_port

ORDER = ["store", "policies", "replace", "agi", "http", "ami"]
ADMIN = {"Authorization": "Bearer admin-token-of-the-composition-test"}


def settings_for(tmp_path: Path, http_port: int | None = None) -> Settings:
    return Settings(
        agi=f"127.0.0.1:{free_port()}",
        http=f"127.0.0.1:{http_port or free_port()}",
        data_dir=tmp_path,
        admin_token="admin-token-of-the-composition-test",
        shutdown_grace=1.0,
    )


def lifecycle(caplog: pytest.LogCaptureFixture, verb: str) -> list[str]:
    prefix = f"{verb} "
    return [
        r.getMessage().removeprefix(prefix)
        for r in caplog.records
        if r.name == "callgate.daemon" and r.getMessage().startswith(prefix)
    ]


def others() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[arg-type]


async def test_start_ready_stop_in_the_order_of_the_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="callgate.daemon")
    before = others()
    services = await start(settings_for(tmp_path))
    try:
        assert [c.name for c in services.components] == ORDER
        assert lifecycle(caplog, "started") == ORDER
        assert services.ready.is_set()
        # A write over HTTP decides the very next FastAGI session: the wiring end to end.
        _, http_port = services.settings.http_address
        url = f"http://127.0.0.1:{http_port}/client/acme/call_control_group/"
        async with (
            ClientSession() as http,
            http.put(url, json={"allow_all": True}, headers=ADMIN) as response,
        ):
            assert response.status == 200
        channel = await call(services.agi.port, request_environment("whisper", "acme", "1", "2"))
        assert channel.variables["CALLGATE_DECISION"] == "ALLOW"
    finally:
        await services.stop()
    assert not services.ready.is_set()
    assert lifecycle(caplog, "stopped") == ORDER[::-1]
    assert others() == before


async def test_a_failed_start_stops_what_had_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="callgate.daemon")
    before = others()
    with socket.socket() as taken:  # the HTTP port is in use: the fifth component fails
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = settings_for(tmp_path, taken.getsockname()[1])
        with pytest.raises(OSError):
            await start(settings)
    assert lifecycle(caplog, "started") == ORDER[:4]
    assert lifecycle(caplog, "stopped") == ORDER[:4][::-1]
    assert others() == before
    _, agi_port = settings.agi_address
    with pytest.raises(OSError):  # the FastAGI listener that had opened is closed again
        await asyncio.open_connection("127.0.0.1", agi_port)
