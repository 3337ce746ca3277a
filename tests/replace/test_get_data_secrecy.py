"""What the caller typed never reaches a log line, whatever shape Asterisk's reply to ``GET DATA``
takes: well-formed, malformed (``200 result=975310 (timeout`` with no closing parenthesis), a
5xx, a stray line after it, a reply cut short and then silence. Each runs a real FastAGI replace
session on loopback, with every logger at DEBUG; the PIN on file *is* the typed digits, so a
session that took a malformed reply at its word would replace the phone — it must not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from callgate.agi.handlers import AgiDispatcher, DecisionRecorder, policy_routes
from callgate.agi.server import AgiConfig, AgiServer
from callgate.metrics import Metrics
from callgate.registry import PolicyRegistry
from callgate.replace.agi_flow import PinPrompt, ReplaceFlow
from callgate.replace.service import ReplaceService
from callgate.store.db import Database
from callgate.store.replace import ReplaceRepository
from fake_asterisk import FakeChannel, call, request_environment
from reference_policy import REFERENCE_DOCUMENT

from .conftest import CLIENT, FakeAudit, make_service
from .conftest import client_policy as make_policy

TYPED = "975310"
"""The caller's digits, and the PIN on file: any trace of them in the log is a leak."""


@dataclass
class Rig:
    server: AgiServer
    service: ReplaceService
    repo: ReplaceRepository
    audit: FakeAudit


@pytest.fixture
async def rig(db_path: Path) -> AsyncIterator[Rig]:
    db = await Database.open(db_path)
    repo = ReplaceRepository(db)
    registry = PolicyRegistry()
    registry.load(make_policy(REFERENCE_DOCUMENT, 1))
    audit, metrics = FakeAudit(), Metrics()
    service = make_service(repo, registry, audit)
    await service.set_pin(CLIENT, "101", TYPED)
    recorder = DecisionRecorder(audit, metrics)
    # Short digit timeout and reply timeout: the "cut short, then silence" case ends quickly.
    flow = ReplaceFlow(service, recorder, PinPrompt(digit_timeout_ms=10))
    routes = {**policy_routes(registry, recorder), "replace": flow.replace}
    config = AgiConfig(host="127.0.0.1", port=0, reply_timeout=0.3)
    server = AgiServer(config, AgiDispatcher(routes, recorder), metrics)
    await server.start()
    yield Rig(server, service, repo, audit)
    await server.stop()
    await db.close()


def environment() -> bytes:
    return request_environment("replace", CLIENT, "100", "101", name="get-data-pin.txt")


async def scripted_call(port: int, get_data_reply: bytes) -> list[bytes]:
    """A replace call whose ``GET DATA`` gets ``get_data_reply`` as is (any bytes, even none
    with an LF); every other command is answered as the fake Asterisk would. Returns the
    command lines received, until callgate closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    commands: list[bytes] = []
    try:
        writer.write(environment())
        for _ in range(20):  # a replace session sends fewer than ten commands
            line = await asyncio.wait_for(reader.readline(), 5)
            if not line:
                break
            commands.append(line)
            if line.startswith(b"GET VARIABLE"):
                writer.write(b"200 result=1 (100)\n")
            elif line.startswith(b"GET DATA"):
                writer.write(get_data_reply)
            else:  # ANSWER, EXEC MSet, SET VARIABLE
                writer.write(b"200 result=0\n")
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()
    return commands


async def settled(rig: Rig) -> None:
    """Wait until the session's decision is audited (the server may close before it is)."""
    for _ in range(300):
        if rig.audit.events:
            return
        await asyncio.sleep(0.01)


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the log holds: formatted lines with tracebacks, and each record's raw parts."""
    parts = [caplog.text]
    for record in caplog.records:
        parts += [record.getMessage(), repr(record.args), record.exc_text or ""]
        if record.exc_info and record.exc_info[1] is not None:
            exc: BaseException | None = record.exc_info[1]
            while exc is not None:  # the whole chain, suppressed context included
                parts.append(repr(exc))
                exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


async def assert_failed_closed(rig: Rig) -> None:
    await settled(rig)
    assert [(e.action, e.decision) for e in rig.audit.events[-1:]] == [("replace", "deny")]
    assert await rig.repo.replacements(CLIENT) == []


# Malformed ``200 result=`` replies the fake Asterisk sends as they are (the digits it is given
# become the reply's result text).
@pytest.mark.parametrize(
    "keypad",
    [
        pytest.param(f"{TYPED} (timeout", id="unterminated-data"),
        pytest.param(f"{TYPED[:3]}\n{TYPED[3:]})", id="split-over-two-lines"),
        pytest.param(f"{TYPED} (timeout)\n{TYPED}", id="stray-line-after"),
    ],
)
async def test_malformed_replies_through_the_fake_asterisk(
    rig: Rig, caplog: pytest.LogCaptureFixture, keypad: str
) -> None:
    caplog.set_level(logging.DEBUG)
    channel = FakeChannel(variables={"CALLGATE_EXT": "100"}, dtmf=[keypad])
    await call(rig.server.port, environment(), channel)
    await assert_failed_closed(rig)
    assert channel.variables.get("CALLGATE_DECISION") != "ALLOW"
    assert not any(line.startswith(b"DATABASE PUT") for line in channel.commands)
    assert any("GET DATA" in r.getMessage() for r in caplog.records)  # it was logged, redacted
    assert TYPED not in logged_text(caplog)
    assert TYPED[:4] not in logged_text(caplog)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(f"{TYPED}\n".encode(), id="no-code"),
        pytest.param(f"200 {TYPED}\n".encode(), id="no-result"),
        pytest.param(f"20 result={TYPED}\n".encode(), id="short-code"),
        pytest.param(f"{TYPED} result={TYPED}\n".encode(), id="digits-as-code"),
        pytest.param(f"510 {TYPED}\n".encode(), id="510"),
        pytest.param(f"520 {TYPED}\n".encode(), id="520"),
        pytest.param(f"520-{TYPED}\n{TYPED}\n520 {TYPED}\n".encode(), id="520-block"),
        pytest.param(f"511 {TYPED}\n".encode(), id="511"),
        pytest.param(f"200 result={TYPED} (timeout".encode(), id="cut-short-then-silence"),
        pytest.param(f"200 result={TYPED} (timeout\n".encode(), id="unterminated-data"),
    ],
)
async def test_any_reply_shape(rig: Rig, caplog: pytest.LogCaptureFixture, reply: bytes) -> None:
    caplog.set_level(logging.DEBUG)
    commands = await scripted_call(rig.server.port, reply)
    await assert_failed_closed(rig)
    assert any(line.startswith(b"GET DATA") for line in commands)
    assert not any(line.startswith(b"DATABASE PUT") for line in commands)
    assert TYPED not in logged_text(caplog)
    assert TYPED[:4] not in logged_text(caplog)


async def test_well_formed_replies_are_used_and_not_logged(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for keypad, decision in ((f"{TYPED} (timeout)", "ALLOW"), ("12345678", "DENY")):
        channel = FakeChannel(variables={"CALLGATE_EXT": "100"}, dtmf=[keypad])
        await call(rig.server.port, environment(), channel)
        assert channel.variables["CALLGATE_DECISION"] == decision
        if decision == "ALLOW":
            await rig.service.restore_phone(CLIENT, "100")
    text = logged_text(caplog)
    assert TYPED not in text
    assert "12345678" not in text
