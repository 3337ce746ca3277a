"""The FastAGI listener inside a whole daemon: started after the policies are loaded, decides by
them, and stops with the daemon."""

from __future__ import annotations

from pathlib import Path

from callgate.agi import variables
from callgate.config import Settings
from callgate.daemon import start
from fake_asterisk import call, request_environment
from support import free_port

from .conftest import client_policy


async def test_daemon_serves_fastagi_on_the_configured_address(tmp_path: Path) -> None:
    agi_port = free_port()
    settings = Settings(
        agi=f"127.0.0.1:{agi_port}", http=f"127.0.0.1:{free_port()}", data_dir=tmp_path
    )
    services = await start(settings)
    try:
        assert services.agi is not None
        assert services.agi.port == agi_port
        channel = await call(agi_port, request_environment("pickup", "acme", "100", "101"))
        # nothing stored: the default document allows directed pickup, version 0
        assert channel.variables[variables.DECISION] == "ALLOW"
        assert channel.variables[variables.REASON] == "pickup_all"
        assert channel.variables[variables.VERSION] == "0"
        whisper = request_environment("whisper", "acme", "100", "101")
        denied = await call(agi_port, whisper)
        assert denied.variables[variables.DECISION] == "DENY"
        # a published change decides the very next session
        document = {"groups": {"g": ["100", "101"]}, "whisper_100": ["g"]}
        await services.registry.publish(client_policy("acme", document, 1))
        allowed = await call(agi_port, whisper)
        assert allowed.variables[variables.DECISION] == "ALLOW"
        assert allowed.variables[variables.VERSION] == "1"
    finally:
        await services.stop()
    assert services.agi.active == 0
