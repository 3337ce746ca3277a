"""Fixtures of the real-Asterisk suite: one PBX and one callgate for the module, a Manager
connection and an HTTP client per test, and a clean slate (no calls, default policies, no phone
replaced) before every test."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from support import free_port, wait_until

from .harness import (
    AMI_TESTER,
    Ami,
    Api,
    Asterisk,
    Callgate,
    Pbx,
    PbxPorts,
    admin_api,
    event,
    find_asterisk,
    find_data_dir,
    find_module_dir,
    free_udp_range,
)

CLIENTS = ("acme", "globex")


def new_asterisk(
    root: Path, *, agi: Callable[[PbxPorts], str] | None = None, pbx_name: str | None = None
) -> Asterisk:
    """An Asterisk configured in ``root`` on free loopback ports, not started yet; ``agi`` makes
    its CALLGATE_AGI from the ports (default: the one-address shorthand), ``pbx_name`` is its
    CALLGATE_PBX (default: the shipped dialplan's)."""
    binary = find_asterisk()
    assert binary is not None, "the test module skips itself when there is no Asterisk"
    module_dir = find_module_dir(binary)
    if module_dir is None:
        pytest.skip(f"{binary}: no module directory with chan_pjsip.so (set ASTERISK_MODDIR)")
    ports = PbxPorts(
        ami=free_port(),
        sip_pbx=free_port(socket.SOCK_DGRAM),
        sip_phones=free_port(socket.SOCK_DGRAM),
        rtp_start=free_udp_range(100),
        agi=free_port(),
    )
    asterisk = Asterisk(binary, root, ports, agi(ports) if agi else None, pbx_name)
    asterisk.write_config(module_dir, find_data_dir(binary))
    return asterisk


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pbx]:
    root = tmp_path_factory.mktemp("pbx")
    asterisk = new_asterisk(root / "asterisk")
    callgate = Callgate(root / "callgate", asterisk.ports.agi, free_port(), asterisk.ports.ami)
    (root / "callgate").mkdir()
    asterisk.start()
    try:
        callgate.start()
        yield Pbx(asterisk, callgate)
    finally:
        callgate.stop()
        asterisk.stop()


@pytest.fixture
async def api(pbx: Pbx) -> AsyncIterator[Api]:
    async with admin_api(pbx.callgate) as admin:
        yield admin


@pytest.fixture
async def ami(pbx: Pbx, api: Api) -> AsyncIterator[Ami]:
    """The tester's Manager connection (read/write all), after a reset of the PBX and callgate."""
    if pbx.callgate.process is None:  # a test stopped it and could not start it again
        await asyncio.to_thread(pbx.callgate.start)
    manager = await Ami.connect(pbx.asterisk.ports.ami, *AMI_TESTER)
    try:
        await manager.wait_event(event("FullyBooted"), since=0, within=30)
        await hang_up_everything(manager)
        for client in CLIENTS:
            await api.reset(client)
        for family in ("sim", "callgate"):
            await manager.action_any("DBDelTree", Family=family)
        yield manager
    finally:
        if not manager.connected:  # Asterisk was restarted by the test
            await manager.close()
            manager = await Ami.connect(pbx.asterisk.ports.ami, *AMI_TESTER)
        await hang_up_everything(manager)
        await manager.close()


async def hang_up_everything(manager: Ami) -> None:
    await manager.action_any("Hangup", Channel="/^(PJSIP|Local)/")

    async def no_channels() -> bool:
        return not await manager.list_action("CoreShowChannels", "CoreShowChannelsComplete")

    # The state polled is Asterisk's, seen over the Manager: no asyncio.Event to wait on.
    await wait_until(no_channels, within=10, interval=0.1)
