"""The server and the session API against a fake Asterisk over loopback: the recorded sessions
replayed byte for byte, then decisions end to end with the variables callgate sets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from callgate.agi import variables
from callgate.agi.handlers import (
    DECISION_LOG_HOLD,
    AgiDispatcher,
    DecisionRecorder,
    policy_routes,
)
from callgate.agi.protocol import AgiEnvironment, Reply
from callgate.agi.server import AgiServer
from callgate.agi.session import AgiChannelDead, AgiCommandFailed, AgiSession
from callgate.domain import StoredJson
from callgate.metrics import Metrics
from callgate.registry import PolicyRegistry, StoredText
from fake_asterisk import (
    FakeChannel,
    call,
    environment_with,
    load_transcript,
    replay,
    request_environment,
)

from .conftest import TEST_CONFIG, FakeAuditSink, StartServer, client_policy, sample

CALLER_NAME = 'Ünïcode "Name" \\, with comma'

Script = Callable[[AgiSession, dict[str, Any]], Awaitable[None]]


async def run_replay(start_server: StartServer, name: str, script: Script) -> dict[str, Any]:
    """Replay transcript ``name`` against a server running ``script``; check the bytes sent."""
    seen: dict[str, Any] = {}

    async def handler(session: AgiSession) -> None:
        try:
            await script(session, seen)
        except Exception as exc:
            seen["error"] = exc
            raise

    server = await start_server(handler)
    transcript = load_transcript(name)
    sent = await replay(server.port, transcript)
    assert "error" not in seen, seen.get("error")
    assert sent == [command for command, _ in transcript.exchanges]
    return seen


async def test_replay_commands_and_replies(start_server: StartServer) -> None:
    async def script(session: AgiSession, seen: dict[str, Any]) -> None:
        seen["env"] = session.environment
        seen["num"] = await session.get_variable("CALLERID(num)")
        seen["name"] = await session.get_full_variable("${CALLERID(name)}")
        seen["unset"] = await session.get_variable("NO_SUCH_VAR")
        await session.set_variable("CALLGATE_DECISION", "ALLOW")
        await session.set_variable("CALLGATE_REASON", "pickup share group")
        with pytest.raises(AgiCommandFailed) as usage:
            await session.run("SET VARIABLE")
        seen["usage"] = usage.value.reply
        seen["unknown"] = await session.command(b"NOT A COMMAND\n")
        seen["put"] = await session.database_put("callgate/acme/device/100", "ext", "101")
        seen["get"] = await session.database_get("callgate/acme/device/100", "ext")
        seen["del"] = await session.database_del("callgate/acme/device/100", "ext")
        seen["exec"] = await session.exec("Verbose", "1,hello from agi")
        await session.verbose("verbose line", 1)
        seen["status"] = await session.run("CHANNEL STATUS")
        seen["noop"] = await session.run("NOOP")

    seen = await run_replay(start_server, "commands-and-replies.txt", script)
    env: AgiEnvironment = seen["env"]
    assert env.calleridname == CALLER_NAME
    assert env.action == "pickup"
    assert env.args == ("acme", "100", "", "arg with space", "quoted")
    assert (seen["num"], seen["name"], seen["unset"]) == ("100", CALLER_NAME, None)
    usage: Reply = seen["usage"]
    assert usage.code == 520
    assert usage.usage == ("Sets a variable to the current channel.",)
    assert seen["unknown"].code == 510
    assert (seen["put"], seen["get"], seen["del"]) == (True, "101", True)
    assert seen["exec"].result == "0"
    assert seen["status"].result_int == 4
    assert seen["noop"].result == "0"


async def test_replay_get_data_pin(start_server: StartServer) -> None:
    async def script(session: AgiSession, seen: dict[str, Any]) -> None:
        seen["answered"] = await session.answer()
        seen["pin"] = await session.get_data("callgate-silence", 4000, 4)
        seen["none"] = await session.get_data("callgate-silence", 2000, 4)
        # recorded with the value quoted, which our encoder does not need to do
        await session.command(b'SET VARIABLE CALLGATE_DECISION "ALLOW"\n')

    seen = await run_replay(start_server, "get-data-pin.txt", script)
    assert (seen["answered"], seen["pin"], seen["none"]) == (True, "1234", "")


async def test_replay_hangup_mid_session(start_server: StartServer) -> None:
    async def script(session: AgiSession, seen: dict[str, Any]) -> None:
        seen["wait"] = await session.exec("Wait", "1")
        seen["alive"] = not session.dead
        with pytest.raises(AgiChannelDead):
            await session.run("HANGUP")
        seen["dead"] = (session.dead, session.hangup_seen)
        with pytest.raises(AgiChannelDead):  # refused here, not sent: Asterisk would say 511
            await session.answer()
        seen["num"] = await session.get_variable("CALLERID(num)")
        await session.set_variable("X", "1")
        seen["wait2"] = await session.exec("Wait", "1")

    seen = await run_replay(start_server, "hangup-mid-session.txt", script)
    assert seen["wait"].result == "-1"
    assert seen["alive"]
    assert seen["dead"] == (True, True)
    assert seen["num"] == ""
    assert seen["wait2"].result == "0"


async def test_replay_h_extension_dead_from_the_start(start_server: StartServer) -> None:
    async def script(session: AgiSession, seen: dict[str, Any]) -> None:
        seen["extension"] = session.environment.extension
        seen["num"] = await session.get_variable("CALLERID(num)")
        await session.set_variable("X", "1")
        await session.exec("Verbose", "1,dead")
        with pytest.raises(AgiChannelDead):
            await session.answer()
        seen["dead"] = (session.dead, session.hangup_seen)

    seen = await run_replay(start_server, "h-extension-dead-channel.txt", script)
    assert (seen["extension"], seen["num"]) == ("h", "100")
    assert seen["dead"] == (True, False)  # 511 without any HANGUP line


# --------------------------------------------------------------------------- decisions


async def decision_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The decision lines, once written: the recorder holds them up to DECISION_LOG_HOLD."""
    await asyncio.sleep(DECISION_LOG_HOLD * 2)
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("decision ")]


def verdict(channel: FakeChannel) -> dict[str, str]:
    return {name: channel.variables[name] for name in variables.ALL}


def expected(
    decision: str, reason: str, targets: str = "", version: str = "7", pickup: str = ""
) -> dict[str, str]:
    return {
        variables.DECISION: decision,
        variables.REASON: reason,
        variables.TARGETS: targets,
        variables.VERSION: version,
        variables.PICKUP: pickup,
        variables.NOTICE: "",  # no notice asked: the settings are the default
    }


DECISIONS = [
    # action, args, variables
    (
        "pickup",
        ("acme", "100", "103"),
        expected("ALLOW", "pickup_all", pickup="acme/103@PICKUPMARK"),
    ),
    (
        "pickup",
        ("acme", "100"),
        expected("ALLOW", "pickup_share_group", "101", pickup="acme/101@PICKUPMARK"),
    ),
    (
        "pickup",
        ("acme", "101", ""),
        expected(
            "ALLOW",
            "pickup_share_group",
            "100&102",
            pickup="acme/100@PICKUPMARK&acme/102@PICKUPMARK",
        ),
    ),
    ("pickup", ("acme", "103"), expected("DENY", "no_pickup_group")),
    ("eavesdrop", ("acme", "100", "101"), expected("ALLOW", "eavesdrop_group")),
    ("eavesdrop", ("acme", "100", "102"), expected("DENY", "eavesdrop_not_permitted")),
    ("eavesdrop", ("acme", "101", "103"), expected("ALLOW", "whisper_group")),
    ("eavesdrop", ("acme", "101", "101"), expected("DENY", "self_target")),
    ("whisper", ("acme", "100", "101"), expected("DENY", "whisper_not_permitted")),
    ("whisper", ("acme", "101", "103"), expected("ALLOW", "whisper_group")),
    ("whisper", ("acme", "101"), expected("ALLOW", "whisper_group", "100&102&103")),
    ("pickup", ("open", "1"), expected("ALLOW", "allow_all", "*", version="2")),
    (
        "pickup",
        ("nobody", "1", "2"),
        expected("ALLOW", "pickup_all", version="0", pickup="nobody/2@PICKUPMARK"),
    ),
    ("eavesdrop", ("nobody", "1", "2"), expected("DENY", "eavesdrop_not_permitted", version="0")),
    ("pickup", ("acme", "10 0", "101"), expected("DENY", "invalid_request")),
    ("pickup", ("acme",), expected("DENY", "invalid_request")),
    ("pickup", ("ac me", "100", "101"), expected("DENY", "invalid_request", version="0")),
    ("pickup", (), expected("DENY", "invalid_request", version="0")),
    ("replace", ("acme", "100", "101"), expected("DENY", "invalid_request", version="0")),
    ("nosuch", ("acme", "100", "101"), expected("DENY", "invalid_request", version="0")),
    ("", ("acme", "100", "101"), expected("DENY", "invalid_request", version="0")),
]


@pytest.mark.parametrize(("action", "args", "expected_variables"), DECISIONS)
async def test_decisions_end_to_end(
    start_server: StartServer,
    dispatcher: Callable[..., AgiDispatcher],
    action: str,
    args: tuple[str, ...],
    expected_variables: dict[str, str],
) -> None:
    server = await start_server(dispatcher())
    channel = await call(server.port, request_environment(action, *args))
    assert verdict(channel) == expected_variables
    assert channel.agistatus == "SUCCESS"
    # one round trip: every variable in one EXEC MSet, the decision last
    (command,) = channel.commands
    assert command.startswith(b"EXEC MSet ")
    assert command.rstrip(b'"').endswith(
        b"CALLGATE_DECISION=" + expected_variables[variables.DECISION].encode()
    )


async def test_recorded_environment_decides_and_is_audited(
    start_server: StartServer,
    dispatcher: Callable[..., AgiDispatcher],
    audit: FakeAuditSink,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The recorded pickup request as is: group pickup by 100 (agi_arg_3 empty), UTF-8 name."""
    caplog.set_level("INFO", logger="callgate.agi.handlers")
    server = await start_server(dispatcher())
    transcript = load_transcript("commands-and-replies.txt")
    channel = await call(server.port, transcript.environment_bytes)
    assert verdict(channel) == expected(
        "ALLOW", "pickup_share_group", "101", pickup="acme/101@PICKUPMARK"
    )
    (event,) = audit.events
    assert (event.client_id, event.action, event.ext, event.target) == (
        "acme",
        "pickup",
        "100",
        None,
    )
    assert (event.decision, event.reason, event.policy_version) == (
        "allow",
        "pickup_share_group",
        7,
    )
    assert (event.uniqueid, event.channel) == ("1795723247.21", "Local/env@agitest-0000000a;2")
    (line,) = await decision_lines(caplog)
    assert line == (
        "decision client=acme action=pickup ext=100 target=- decision=allow"
        " reason=pickup_share_group targets=101 version=7 uniqueid=1795723247.21"
    )
    assert (
        sample(
            metrics, "callgate_decisions_total", client="acme", action="pickup", decision="allow"
        )
        == 1
    )
    assert sample(metrics, "callgate_agi_sessions_total", outcome="completed") == 1
    assert sample(metrics, "callgate_agi_session_seconds_count") == 1


async def test_dead_channel_from_the_h_extension_still_gets_every_variable(
    start_server: StartServer, dispatcher: Callable[..., AgiDispatcher]
) -> None:
    server = await start_server(dispatcher())
    transcript = load_transcript("h-extension-dead-channel.txt")
    dead_request = environment_with(
        transcript, agi_network_script="eavesdrop", args=("acme", "100", "101")
    )
    channel = await call(server.port, dead_request, FakeChannel(dead=True))
    assert verdict(channel) == expected("ALLOW", "eavesdrop_group")
    unknown = await call(server.port, transcript.environment_bytes, FakeChannel(dead=True))
    assert verdict(unknown) == expected("DENY", "invalid_request", version="0")


async def test_hangup_before_the_first_command(
    start_server: StartServer, dispatcher: Callable[..., AgiDispatcher]
) -> None:
    """The caller hangs up while callgate decides: HANGUP arrives first, MSet still works."""
    server = await start_server(dispatcher())
    transcript = load_transcript("hangup-mid-session.txt")
    env = environment_with(transcript, agi_network_script="pickup", args=("acme", "101"))
    channel = await call(server.port, env, FakeChannel(hangup_after=0))
    assert verdict(channel)[variables.DECISION] == "ALLOW"


async def test_injected_environment_line_is_denied(
    start_server: StartServer, dispatcher: Callable[..., AgiDispatcher]
) -> None:
    """A caller name carrying an LF and a fake agi_arg_2 line: refuse to decide on it."""
    server = await start_server(dispatcher())
    transcript = load_transcript("commands-and-replies.txt")
    env = environment_with(
        transcript,
        agi_calleridname="x\nagi_arg_2: 999",
        agi_network_script="eavesdrop",
        args=("acme", "100", "101"),
    )
    channel = await call(server.port, env)
    assert verdict(channel) == expected("DENY", "invalid_request", version="0")


async def test_routes_are_injected_and_a_failing_route_denies(
    start_server: StartServer, dispatcher: Callable[..., AgiDispatcher]
) -> None:
    calls: list[str] = []

    async def restore(session: AgiSession) -> None:
        calls.append(session.environment.arg(2))
        await session.set_variables([(variables.DECISION, "ALLOW"), (variables.REASON, "restored")])

    async def replace(session: AgiSession) -> None:
        raise RuntimeError("the replace service is broken")

    server = await start_server(dispatcher({"restore": restore, "replace": replace}))
    restored = await call(server.port, request_environment("restore", "acme", "100"))
    assert restored.variables == {variables.DECISION: "ALLOW", variables.REASON: "restored"}
    assert calls == ["100"]
    broken = await call(server.port, request_environment("replace", "acme", "100", "101"))
    assert verdict(broken) == expected("DENY", "internal_error", version="0")


async def test_values_needing_escapes_fall_back_to_set_variable(start_server: StartServer) -> None:
    async def handler(session: AgiSession) -> None:
        await session.set_variables([("A", "x,y"), ("B", 'say "hi"'), ("C", "plain")])

    server = await start_server(handler)
    channel = await call(server.port, request_environment("pickup", "acme", "100"))
    assert channel.variables == {"A": "x,y", "B": 'say "hi"', "C": "plain"}
    assert channel.commands == [
        b"SET VARIABLE A x,y",
        b'SET VARIABLE B "say \\"hi\\""',
        b"SET VARIABLE C plain",
    ]


def test_the_server_runs_on_uvloop(registry: PolicyRegistry, audit: FakeAuditSink) -> None:
    """``callgate serve`` prefers uvloop, whose transports are no asyncio.Transport subclass."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> dict[str, str]:
        recorder = DecisionRecorder(audit, Metrics())
        handler = AgiDispatcher(policy_routes(registry, recorder), recorder)
        server = AgiServer(TEST_CONFIG, handler, Metrics())
        await server.start()
        try:
            channel = await call(server.port, request_environment("pickup", "acme", "101"))
        finally:
            await server.stop()
        return verdict(channel)

    assert uvloop.run(scenario()) == expected(
        "ALLOW", "pickup_share_group", "100&102", pickup="acme/100@PICKUPMARK&acme/102@PICKUPMARK"
    )


async def test_an_answer_too_long_for_one_command_is_a_denial(
    start_server: StartServer,
    dispatcher: Callable[..., AgiDispatcher],
    registry: PolicyRegistry,
    audit: FakeAuditSink,
) -> None:
    """200 targets of 32 characters: Pickup()'s argument cannot fit in 8,190 bytes."""
    members = [f"{n:032d}" for n in range(200)]
    document = {"groups": {"big": members}, "pickup_share_groups": ["big"]}
    registry.load(client_policy("big", document, 3))
    server = await start_server(dispatcher())
    channel = await call(server.port, request_environment("pickup", "big", members[0]))
    assert verdict(channel) == expected("DENY", "internal_error", version="3")
    (event,) = audit.events  # recorded once, as answered
    assert (event.decision, event.reason) == ("deny", "internal_error")


async def test_a_damaged_stored_document_is_denied_at_its_first_use(
    start_server: StartServer,
    dispatcher: Callable[..., AgiDispatcher],
    registry: PolicyRegistry,
    audit: FakeAuditSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Loaded cold and compiled on first use, a document damaged in the database fails closed
    at the first call: a denial on the quick path, never the default document's pickup of
    everyone."""
    damaged = StoredJson(4, "2024-05-01T10:00:00+00:00", "admin", '{"allow_al": 1}')
    registry.load_stored("broken", StoredText.of(damaged))
    server = await start_server(dispatcher())
    for _ in range(2):  # and again: not compiled into the default by the first failure
        channel = await call(server.port, request_environment("pickup", "broken", "100"))
        assert verdict(channel) == expected("DENY", "internal_error", version="0")
    assert [(e.decision, e.reason) for e in audit.events] == [("deny", "internal_error")] * 2
    assert not [r for r in caplog.records if "preparing the answer failed" in r.getMessage()]


async def test_untrusted_values_are_escaped_in_the_log_line(
    start_server: StartServer,
    dispatcher: Callable[..., AgiDispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="callgate.agi.handlers")
    server = await start_server(dispatcher())
    await call(server.port, request_environment("pickup", "acme", "1 0\x1b[2J", "é"))
    (line,) = await decision_lines(caplog)
    assert "ext='1 0\\x1b[2J' target='\\xe9'" in line
    assert "reason=invalid_request" in line
