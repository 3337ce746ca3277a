"""One tenant, or one malformed FastAGI session, cannot erase, starve or outgrow another's: real
sessions over loopback against a whole daemon (real store) or the policy route."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

from prometheus_client import generate_latest

from callgate.agi import variables
from callgate.agi.handlers import DecisionRecorder, PolicyRoute
from callgate.agi.protocol import AgiEnvironment
from callgate.config import Settings
from callgate.daemon import start
from callgate.metrics import OTHER_CLIENT, Metrics
from callgate.registry import PolicyRegistry
from fake_asterisk import call, request_environment

from .conftest import FakeAuditSink, client_policy

DOCUMENT = {"groups": {"g": ["100", "101", "102"]}, "eavesdrop_100": ["g"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings(tmp_path: Path) -> Settings:
    return Settings(
        agi=f"127.0.0.1:{free_port()}", http=f"127.0.0.1:{free_port()}", data_dir=tmp_path
    )


def with_bytes(environment: bytes, key: bytes, value: bytes) -> bytes:
    """``environment`` with the line of ``key`` replaced by raw bytes (not UTF-8 at all)."""
    return re.sub(rb"(?m)^" + key + rb": .*$", key + b": " + value, environment)


async def test_a_session_with_bytes_not_utf8_does_not_take_other_events_down(
    tmp_path: Path,
) -> None:
    services = await start(settings(tmp_path))
    try:
        assert services.agi is not None
        assert services.store is not None
        for client in ("acme", "globex"):
            await services.registry.publish(client_policy(client, DOCUMENT, 1))
        port = services.agi.port
        good = [
            request_environment("eavesdrop", client, "100", "101")
            for client in ("acme", "globex")
            for _ in range(10)
        ]
        bad = request_environment("eavesdrop", "acme", "100", "101")
        bad = with_bytes(bad, b"agi_arg_2", b"1\xff0")
        bad = with_bytes(bad, b"agi_arg_3", b"\xc3(")
        bad = with_bytes(bad, b"agi_uniqueid", b"u\xfe1")
        sessions = [call(port, env) for env in good[:10]] + [call(port, bad)]
        channels = await asyncio.gather(*sessions, *(call(port, env) for env in good[10:]))
        assert channels[10].variables[variables.REASON] == "invalid_request"
        good_channels = channels[:10] + channels[11:]
        assert all(c.variables[variables.DECISION] == "ALLOW" for c in good_channels)
        audit = services.store.audit
        await audit.flush()
        acme = await audit.list("acme")
        globex = await audit.list("globex")
        assert len(globex) == 10
        assert all(e.decision == "allow" for e in globex)
        assert len(acme) == 11
        (stored_bad,) = [e for e in acme if e.reason == "invalid_request"]
        assert (stored_bad.ext, stored_bad.target) == ("'1\\udcff0'", "'\\udcc3('")
        assert stored_bad.uniqueid == "'u\\udcfe1'"
        assert audit.lost == 0
    finally:
        await services.stop()


async def test_metric_series_only_for_clients_with_a_stored_policy(tmp_path: Path) -> None:
    services = await start(settings(tmp_path))
    try:
        assert services.agi is not None
        await services.registry.publish(client_policy("acme", DOCUMENT, 1))
        port = services.agi.port
        await call(port, request_environment("eavesdrop", "acme", "100", "101"))
        made_up = [f"tenant{n:03d}" for n in range(30)] + ["not a client", "\u00e9t\u00e9"]
        for client in made_up:  # well-formed or not: no series of their own
            await call(port, request_environment("pickup", client, "100", "101"))
        exposition = generate_latest(services.metrics.registry).decode()
        series = [line for line in exposition.splitlines() if line.startswith("callgate_dec")]
        clients = {re.search(r'client="([^"]*)"', line)[1] for line in series}  # type: ignore[index]
        assert clients == {"acme", OTHER_CLIENT}
        value = services.metrics.registry.get_sample_value(
            "callgate_decisions_total",
            {"client": OTHER_CLIENT, "action": "pickup", "decision": "allow"},
        )
        assert value == 30  # the well-formed ones: the default policy allows directed pickup
        assert "callgate_audit_events_lost_total" in exposition
    finally:
        await services.stop()


def environment(client: str, action: str, ext: str, target: str) -> AgiEnvironment:
    values = {"agi_arg_1": client, "agi_arg_2": ext, "agi_arg_3": target}
    return AgiEnvironment(values, (client, ext, target), action)


def remembered(route: PolicyRoute) -> dict[str, int]:
    return {client: len(a.by_request) for client, a in route._answers.items() if a.by_request}


def test_one_budget_for_every_client_and_a_flood_forgets_only_its_own() -> None:
    registry = PolicyRegistry()
    registry.load(client_policy("acme", DOCUMENT, 1))
    registry.load(client_policy("flood", {"allow_all": True}, 1))
    metrics = Metrics()
    route = PolicyRoute(registry, DecisionRecorder(FakeAuditSink(), metrics), remembered=8)
    for target in ("101", "102"):
        route.prepare(environment("acme", "eavesdrop", "100", target))
    assert remembered(route) == {"acme": 2}
    for n in range(100):  # well-formed, all different: the budget holds, acme keeps its answers
        route.prepare(environment("flood", "pickup", "100", f"{n}"))
        assert sum(remembered(route).values()) <= 8
        assert remembered(route)["acme"] == 2
    # Not remembered at all: malformed requests, clients without a stored policy.
    before = remembered(route)
    route.prepare(environment("acme", "eavesdrop", "1 00", "101"))
    route.prepare(environment("acme", "eavesdrop", "100", "\udcff"))
    route.prepare(environment("acme", "dance", "100", "101"))
    route.prepare(environment("nobody", "pickup", "100", "101"))
    assert remembered(route) == before


def test_a_budget_of_zero_remembers_nothing_and_still_answers() -> None:
    registry = PolicyRegistry()
    registry.load(client_policy("acme", DOCUMENT, 1))
    route = PolicyRoute(registry, DecisionRecorder(FakeAuditSink(), Metrics()), remembered=0)
    answer = route.prepare(environment("acme", "eavesdrop", "100", "101"))
    assert answer is not None
    assert b"ALLOW" in answer.line
    assert remembered(route) == {}
