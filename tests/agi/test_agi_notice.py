"""``CALLGATE_NOTICE`` in the FastAGI answer: what the shipped dialplan must make the monitored
call's parties hear before a listen or whisper starts (``[callgate]`` ``notice``).

Over a real FastAGI session on 127.0.0.1 (``fake_asterisk``), against a registry holding the
reference document with settings beside it, as the follower installs them.
"""

from __future__ import annotations

import dataclasses

import pytest

from callgate.agi import variables
from callgate.agi.handlers import AgiDispatcher, DecisionRecorder, notice_argument, policy_routes
from callgate.metrics import Metrics
from callgate.policy import Action, Decision, Reason
from callgate.policy.settings import CallControlSettings, Notice, NoticeMode
from callgate.registry import PolicyRegistry
from fake_asterisk import call, request_environment

from .conftest import FakeAuditSink, StartServer

TONE = Notice(mode=NoticeMode.TONE)


def with_notice(registry: PolicyRegistry, notice: Notice, version: int = 1) -> None:
    """acme's entry with ``notice`` in its settings (a new supervision version, as stored)."""
    current = registry.get("acme")
    registry.install(
        dataclasses.replace(
            current, settings=CallControlSettings(notice=notice), supervision_version=version
        )
    )


async def notice_of(
    start_server: StartServer, dispatcher: AgiDispatcher, action: str, *args: str
) -> tuple[str, str]:
    server = await start_server(dispatcher)
    channel = await call(server.port, request_environment(action, *args))
    return channel.variables[variables.DECISION], channel.variables[variables.NOTICE]


@pytest.fixture
def route(registry: PolicyRegistry, audit: FakeAuditSink, metrics: Metrics) -> AgiDispatcher:
    recorder = DecisionRecorder(audit, metrics)
    return AgiDispatcher(policy_routes(registry, recorder), recorder)


@pytest.mark.parametrize(
    ("notice", "expected"),
    [
        pytest.param(Notice(), "", id="off"),
        pytest.param(TONE, "tone", id="once"),
        pytest.param(Notice(mode=NoticeMode.TONE, repeat_seconds=30), "tone,30", id="repeat"),
        pytest.param(
            Notice(mode=NoticeMode.TONE, sound="custom/monitored"),
            "tone,,custom/monitored",
            id="sound",
        ),
        pytest.param(
            Notice(mode=NoticeMode.TONE, repeat_seconds=5, sound="custom/monitored"),
            "tone,5,custom/monitored",
            id="repeated-sound",
        ),
    ],
)
@pytest.mark.parametrize(
    ("action", "args"),
    [("eavesdrop", ("acme", "100", "101")), ("whisper", ("acme", "101", "103"))],
)
async def test_an_allowed_listen_or_whisper_carries_the_notice_of_the_settings(
    start_server: StartServer,
    registry: PolicyRegistry,
    route: AgiDispatcher,
    notice: Notice,
    expected: str,
    action: str,
    args: tuple[str, ...],
) -> None:
    with_notice(registry, notice)
    assert await notice_of(start_server, route, action, *args) == ("ALLOW", expected)


@pytest.mark.parametrize(
    ("action", "args"),
    [
        ("eavesdrop", ("acme", "100", "102")),  # denied: nobody is monitored
        ("whisper", ("acme", "100", "101")),
        ("pickup", ("acme", "100", "103")),  # allowed, but a pickup monitors nobody
    ],
)
async def test_no_notice_in_denials_and_pickups(
    start_server: StartServer,
    registry: PolicyRegistry,
    route: AgiDispatcher,
    action: str,
    args: tuple[str, ...],
) -> None:
    with_notice(registry, Notice(mode=NoticeMode.TONE, repeat_seconds=30))
    assert (await notice_of(start_server, route, action, *args))[1] == ""


async def test_a_notice_switched_on_reaches_answers_remembered_before(
    start_server: StartServer, registry: PolicyRegistry, route: AgiDispatcher
) -> None:
    # acme has no protection and no grants: its answers are remembered. The settings change
    # leaves the document and its version as they are.
    server = await start_server(route)
    listen = request_environment("eavesdrop", "acme", "100", "101")
    assert (await call(server.port, listen)).variables[variables.NOTICE] == ""
    assert registry.get("acme").supervision is None

    with_notice(registry, TONE)
    assert (await call(server.port, listen)).variables[variables.NOTICE] == "tone"

    with_notice(registry, Notice(), version=2)  # and off again
    assert (await call(server.port, listen)).variables[variables.NOTICE] == ""


def test_notice_argument_only_for_allowed_monitoring() -> None:
    allowed = Decision(True, Reason.EAVESDROP_GROUP, ())
    assert notice_argument(TONE, Action.EAVESDROP, allowed) == "tone"
    assert notice_argument(TONE, Action.PICKUP, allowed) == ""
    assert notice_argument(TONE, Action.EAVESDROP, Decision.deny(Reason.INVALID_REQUEST)) == ""
    assert notice_argument(Notice(), Action.WHISPER, allowed) == ""
