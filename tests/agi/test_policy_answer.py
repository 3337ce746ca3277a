"""One answer per policy request: ``PolicyRoute.answer(env)`` gives the quick path and the task
path the same bytes, and an answer too long for one ``EXEC MSet`` is split over several, decided
once, instead of being decided again on a task."""

from __future__ import annotations

import pytest

from callgate.agi import variables
from callgate.agi.handlers import AgiDispatcher, DecisionRecorder, PolicyRoute, variable_pairs
from callgate.agi.protocol import (
    MAX_COMMAND_BYTES,
    AgiConnection,
    AgiEnvironment,
    AgiProtocolError,
    encode_command,
)
from callgate.agi.session import AgiSession, variable_commands
from callgate.metrics import Metrics
from callgate.policy import Decision, Reason
from callgate.registry import ClientPolicy, PolicyRegistry
from fake_asterisk import call, request_environment

from .conftest import FakeAuditSink, StartServer, client_policy, sample

ASKS = [
    ("pickup", "acme", "101"),  # a group pickup: targets and the Pickup() argument
    ("pickup", "acme", "100", "103"),
    ("eavesdrop", "acme", "100", "101"),
    ("whisper", "acme", "100", "102"),
    ("pickup", "nobody", "100"),  # no stored policy
    ("pickup", "ac me", "100"),  # malformed
]


@pytest.mark.parametrize("ask", ASKS, ids=lambda ask: ",".join(ask))
async def test_the_quick_path_and_the_task_path_send_the_same_bytes(
    start_server: StartServer,
    registry: PolicyRegistry,
    audit: FakeAuditSink,
    metrics: Metrics,
    ask: tuple[str, ...],
) -> None:
    recorder = DecisionRecorder(audit, metrics)
    route = PolicyRoute(registry, recorder)
    quick = await start_server(AgiDispatcher({ask[0]: route}, recorder))

    async def task_path(session: AgiSession) -> None:  # no prepare(): the server runs a task
        await route(session)

    task = await start_server(task_path)
    environment = request_environment(*ask)
    by_quick = await call(quick.port, environment)
    by_task = await call(task.port, environment)
    assert by_quick.commands == by_task.commands
    assert len(by_quick.commands) == 1
    assert [c + b"\n" for c in by_quick.commands] == list(
        PolicyRoute(registry, recorder).answer(parsed(environment)).answer.commands
    )
    assert len(audit.events) == (0 if ask[1] == "ac me" else 2)  # each session recorded once


def parsed(environment: bytes) -> AgiEnvironment:
    connection = AgiConnection()
    connection.receive_data(environment)
    event = connection.next_event()
    assert isinstance(event, AgiEnvironment)
    return event


class CountingRegistry(PolicyRegistry):
    """The registry, counting the lookups a decision makes (one per decision)."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def get(self, client_id: str) -> ClientPolicy:
        self.lookups += 1
        return super().get(client_id)


MEMBERS = [f"{n:032d}" for n in range(110)]
"""110 targets of 32 characters: CALLGATE_TARGETS and CALLGATE_PICKUP each fit one command,
both together do not."""


async def test_a_long_answer_is_split_over_several_msets_and_decided_once(
    start_server: StartServer, audit: FakeAuditSink, metrics: Metrics
) -> None:
    registry = CountingRegistry()
    registry.load(
        client_policy("big", {"groups": {"big": MEMBERS}, "pickup_share_groups": ["big"]}, 3)
    )
    recorder = DecisionRecorder(audit, metrics)
    server = await start_server(
        AgiDispatcher({"pickup": PolicyRoute(registry, recorder)}, recorder)
    )
    channel = await call(server.port, request_environment("pickup", "big", MEMBERS[0]))
    targets = MEMBERS[1:]
    assert channel.variables == {
        variables.REASON: "pickup_share_group",
        variables.TARGETS: "&".join(targets),
        variables.VERSION: "3",
        variables.PICKUP: "&".join(f"big/{t}@PICKUPMARK" for t in targets),
        variables.NOTICE: "",
        variables.DECISION: "ALLOW",
    }
    assert len(channel.commands) == 2
    assert all(c.startswith(b"EXEC MSet ") for c in channel.commands)
    # A session cut between the two leaves CALLGATE_DECISION empty, never a stale ALLOW.
    assert channel.commands[0].startswith(b"EXEC MSet CALLGATE_DECISION=,")
    assert registry.lookups == 1  # decided once
    assert len(audit.events) == 1
    assert sample(metrics, "callgate_agi_sessions_total", outcome="completed") == 1


def test_variable_commands_split_in_order_within_the_limit() -> None:
    pairs = (("A", "a" * 5000), ("B", "b" * 5000), ("C", "c" * 10), ("D", "ALLOW"))
    commands = variable_commands(pairs)
    assert len(commands) == 2
    assert all(len(c) <= MAX_COMMAND_BYTES + 1 for c in commands)
    assert commands[0] == encode_command("EXEC", "MSet", f"D=,A={'a' * 5000}")
    assert commands[1] == encode_command("EXEC", "MSet", f"B={'b' * 5000},C={'c' * 10},D=ALLOW")
    assert variable_commands(pairs[2:]) == (encode_command("EXEC", "MSet", "C=cccccccccc,D=ALLOW"),)


def test_variable_commands_refuse_a_value_no_command_can_carry() -> None:
    with pytest.raises(AgiProtocolError):
        variable_commands((("A", "a" * 9000), ("B", "b")))
    with pytest.raises(AgiProtocolError):
        variable_commands((("A", "a" * 9000),))


def test_values_msets_cannot_carry_are_set_one_by_one() -> None:
    assert variable_commands((("A", "x,y"), ("B", "z"))) == (
        encode_command("SET VARIABLE", "A", "x,y"),
        encode_command("SET VARIABLE", "B", "z"),
    )


def test_a_decision_answers_every_variable_with_the_decision_last() -> None:
    pairs = variable_pairs(Decision.deny(Reason.INVALID_REQUEST), 0)
    assert [name for name, _ in pairs] == [
        variables.REASON,
        variables.TARGETS,
        variables.VERSION,
        variables.PICKUP,
        variables.NOTICE,
        variables.DECISION,
    ]
