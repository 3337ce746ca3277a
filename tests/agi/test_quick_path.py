"""The quick path: a handler that answers from the environment alone with one command gets no
task; the answer's ``finish()`` runs exactly once however the session ends. And the policy
route's remembered answers never outlive the policy that gave them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from callgate.agi import variables
from callgate.agi.handlers import AgiDispatcher, DecisionRecorder, PolicyRoute
from callgate.agi.protocol import AgiEnvironment, encode_command
from callgate.agi.server import AgiServer, QuickAnswer
from callgate.agi.session import AgiSession
from callgate.metrics import Metrics
from callgate.registry import PolicyRegistry
from fake_asterisk import FakeChannel, call, request_environment
from reference_policy import REFERENCE_DOCUMENT
from support import wait_until

from .conftest import TEST_CONFIG, FakeAuditSink, StartServer, client_policy, sample

ASK = request_environment("pickup", "acme", "100", "103")
LINE = encode_command("SET VARIABLE", variables.DECISION, "QUICK")


@dataclass
class Answer:
    line: bytes
    more: tuple[bytes, ...] = ()
    finished: list[str] = field(default_factory=list)

    def finish(self) -> None:
        self.finished.append("finished")


@dataclass
class QuickOrSlow:
    """A ``QuickHandler``: quick unless the environment asks for ``slow``."""

    answers: list[Answer] = field(default_factory=list)
    called: int = 0
    fail_prepare: bool = False

    def prepare(self, environment: AgiEnvironment) -> QuickAnswer | None:
        if self.fail_prepare:
            raise RuntimeError("prepare broke")
        if environment.action == "slow":
            return None
        answer = Answer(LINE)
        self.answers.append(answer)
        return answer

    async def __call__(self, session: AgiSession) -> None:
        self.called += 1
        await session.set_variable(variables.DECISION, "SLOW")


async def ended_once(
    server: AgiServer, handler: QuickOrSlow, metrics: Metrics, outcome: str
) -> None:
    """The one session ended, its answer finished exactly once, counted under ``outcome``."""
    await wait_until(lambda: server.active == 0)
    assert [a.finished for a in handler.answers] == [["finished"]]
    assert sample(metrics, "callgate_agi_sessions_total", outcome=outcome) == 1


async def test_a_quick_answer_runs_no_handler_and_finishes_once(
    start_server: StartServer, metrics: Metrics
) -> None:
    handler = QuickOrSlow()
    server = await start_server(handler)
    channel = await call(server.port, ASK)
    assert channel.variables[variables.DECISION] == "QUICK"
    assert channel.commands == [LINE.removesuffix(b"\n")]
    await ended_once(server, handler, metrics, "completed")
    assert handler.called == 0


async def test_without_a_quick_answer_the_handler_runs(start_server: StartServer) -> None:
    handler = QuickOrSlow()
    server = await start_server(handler)
    channel = await call(server.port, request_environment("slow", "acme", "100"))
    assert channel.variables[variables.DECISION] == "SLOW"
    assert handler.called == 1


async def test_a_failing_prepare_falls_back_to_the_handler(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    handler = QuickOrSlow(fail_prepare=True)
    server = await start_server(handler)
    channel = await call(server.port, ASK)
    assert channel.variables[variables.DECISION] == "SLOW"
    assert any("preparing the answer failed" in r.getMessage() for r in caplog.records)


async def test_a_quick_session_whose_reply_never_comes_times_out_and_finishes_once(
    start_server: StartServer, metrics: Metrics
) -> None:
    handler = QuickOrSlow()
    server = await start_server(handler, reply_timeout=0.2)
    await call(server.port, ASK, FakeChannel(silent_after=0))  # a wedged Asterisk
    await ended_once(server, handler, metrics, "timeout")


async def test_a_peer_that_closes_before_the_reply_finishes_the_session_once(
    start_server: StartServer, metrics: Metrics
) -> None:
    handler = QuickOrSlow()
    server = await start_server(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(ASK)
    assert await reader.readline() == LINE
    writer.close()
    await writer.wait_closed()
    await ended_once(server, handler, metrics, "disconnected")


async def test_a_reply_sent_with_the_environment_is_refused_not_taken(
    start_server: StartServer, metrics: Metrics
) -> None:
    """A line that arrives before the command went out cannot be its reply."""
    handler = QuickOrSlow()
    server = await start_server(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(ASK + b"200 result=1\n")
    assert await asyncio.wait_for(reader.read(), 2) == b""  # no command was sent
    writer.close()
    await ended_once(server, handler, metrics, "protocol_error")


async def test_shutdown_finishes_a_quick_session_that_outlives_the_grace(
    metrics: Metrics,
) -> None:
    handler = QuickOrSlow()
    server = AgiServer(replace(TEST_CONFIG, shutdown_grace=0.1), handler, metrics)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(ASK)
    assert await reader.readline() == LINE  # and never answer it
    await server.stop()
    assert [a.finished for a in handler.answers] == [["finished"]]
    assert sample(metrics, "callgate_agi_sessions_total", outcome="cancelled") == 1
    writer.close()


# --------------------------------------------------------------------------- remembered answers


async def test_a_remembered_answer_never_outlives_its_policy(
    start_server: StartServer,
    registry: PolicyRegistry,
    dispatcher: Callable[..., AgiDispatcher],
    audit: FakeAuditSink,
) -> None:
    server = await start_server(dispatcher())
    ask = request_environment("eavesdrop", "acme", "100", "101")
    first = await call(server.port, ask)
    again = await call(server.port, ask)
    assert first.variables == again.variables
    old = registry.get("acme")
    withdrawn = {k: v for k, v in REFERENCE_DOCUMENT.items() if k != "eavesdrop_100"}
    await registry.publish(client_policy("acme", withdrawn, old.version + 1))
    after = await call(server.port, ask)
    assert after.variables[variables.VERSION] == str(old.version + 1)
    assert (first.variables[variables.DECISION], after.variables[variables.DECISION]) == (
        "ALLOW",
        "DENY",
    )
    assert [e.policy_version for e in audit.events] == [old.version] * 2 + [old.version + 1]


async def test_the_same_version_reloaded_is_decided_afresh(
    registry: PolicyRegistry, audit: FakeAuditSink, metrics: Metrics
) -> None:
    """Identity, not the version number alone, says an answer is current."""
    route = PolicyRoute(registry, DecisionRecorder(audit, metrics))
    environment = AgiEnvironment(
        {"agi_arg_1": "open", "agi_arg_2": "1", "agi_arg_3": "2"}, ("open", "1", "2"), "eavesdrop"
    )
    first = route.prepare(environment)
    assert first is not None
    assert b"CALLGATE_DECISION=ALLOW" in first.line
    registry.load(client_policy("open", {"groups": {"g": ["1", "2"]}}, 2))  # same version
    second = route.prepare(environment)
    assert second is not None
    assert b"CALLGATE_DECISION=DENY" in second.line


def environment_of(client: str, action: str, ext: str, target: str) -> AgiEnvironment:
    values = {"agi_arg_1": client, "agi_arg_2": ext, "agi_arg_3": target}
    return AgiEnvironment(values, (client, ext, target), action)


def test_remembered_answers_are_bounded_and_dropped_with_their_policy(
    registry: PolicyRegistry,
    audit: FakeAuditSink,
    metrics: Metrics,
) -> None:
    route = PolicyRoute(registry, DecisionRecorder(audit, metrics), remembered=2)
    asks = [("acme", "eavesdrop", "100", t) for t in ("101", "103", "102")]
    asks += [("open", "eavesdrop", "1", "2"), ("nobody", "pickup", "1", "2")]

    def fresh(ask: tuple[str, str, str, str]) -> bytes:
        answer = PolicyRoute(registry, DecisionRecorder(audit, metrics)).prepare(
            environment_of(*ask)
        )
        assert answer is not None
        return answer.line

    for _ in range(2):  # the second round from what is remembered, or not
        lines = [route.prepare(environment_of(*ask)) for ask in asks]
        assert [a.line if a else None for a in lines] == [fresh(ask) for ask in asks]
        assert sum(len(a.by_request) for a in route._answers.values()) <= 2
        assert "nobody" not in route._answers  # no stored policy: nothing remembered
    registry.load(client_policy("open", {"groups": {"g": ["1", "2"]}}, 3))
    route.prepare(environment_of("open", "eavesdrop", "1", "2"))
    assert route._answers["open"].compiled is registry.get("open").compiled
