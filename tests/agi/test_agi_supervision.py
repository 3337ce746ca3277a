"""FastAGI decides with the client's protection and grants at the current time: a protected
target is denied even where an answer was remembered, a grant allows with its id in the log line
and the audit, and a grant that has ended no longer does."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from callgate.agi import variables
from callgate.agi.handlers import AgiDispatcher
from callgate.agi.record import decision_fields
from callgate.domain import GrantRecord
from callgate.policy import Decision, Reason
from callgate.policy.grants import parse_grant_request
from callgate.policy.settings import CallControlSettings
from callgate.registry import PolicyRegistry
from callgate.services.follower import supervised
from fake_asterisk import call, request_environment

from .conftest import FakeAuditSink, StartServer


def grant(grant_id: str, start: datetime, end: datetime) -> GrantRecord:
    request = parse_grant_request(
        {
            "ext": "100",
            "action": "eavesdrop",
            "extensions": ["102"],
            "from": start.isoformat(),
            "until": end.isoformat(),
            "note": "coaching",
        }
    )
    return GrantRecord(request.to_grant(grant_id=grant_id, created_by="ops"), created_at=start)


async def install(
    registry: PolicyRegistry,
    *,
    protected: tuple[str, ...] = (),
    grants: tuple[GrantRecord, ...] = (),
) -> None:
    current = registry.get("acme")
    entry = dataclasses.replace(
        current,
        supervision_version=current.supervision_version + 1,
        settings=CallControlSettings(protected_extensions=protected),
        grants=grants,
    )
    await registry.publish(supervised(entry, None))


async def test_protection_added_denies_what_was_remembered_allowed(
    start_server: StartServer,
    registry: PolicyRegistry,
    dispatcher: Callable[..., AgiDispatcher],
) -> None:
    server = await start_server(dispatcher())
    ask = request_environment("eavesdrop", "acme", "100", "101")
    for _ in range(2):  # asked twice: the second answer is the remembered one
        assert (await call(server.port, ask)).variables[variables.DECISION] == "ALLOW"
    await install(registry, protected=("101",))
    for _ in range(2):
        denied = await call(server.port, ask)
        assert (denied.variables[variables.DECISION], denied.variables[variables.REASON]) == (
            "DENY",
            "protected",
        )
    await install(registry)  # protection lifted: the document decides again
    assert (await call(server.port, ask)).variables[variables.DECISION] == "ALLOW"


async def test_a_grant_allows_now_and_names_itself_in_the_audit(
    start_server: StartServer,
    registry: PolicyRegistry,
    dispatcher: Callable[..., AgiDispatcher],
    audit: FakeAuditSink,
) -> None:
    server = await start_server(dispatcher())
    ask = request_environment("eavesdrop", "acme", "100", "102")
    assert (await call(server.port, ask)).variables[variables.DECISION] == "DENY"
    now = datetime.now(UTC)
    await install(
        registry,
        grants=(
            grant("g-now", now - timedelta(minutes=1), now + timedelta(hours=1)),
            grant("g-over", now - timedelta(hours=2), now - timedelta(hours=1)),
        ),
    )
    allowed = await call(server.port, ask)
    assert (allowed.variables[variables.DECISION], allowed.variables[variables.REASON]) == (
        "ALLOW",
        "temporary_grant",
    )
    assert [dict(e.extra).get("grant_id") for e in audit.events] == [None, "g-now"]

    await install(
        registry, grants=(grant("g-over", now - timedelta(hours=2), now - timedelta(hours=1)),)
    )
    assert (await call(server.port, ask)).variables[variables.DECISION] == "DENY"


def test_the_decision_line_names_the_grants() -> None:
    by_grant = Decision(True, Reason.TEMPORARY_GRANT, grant_ids=("g1",))
    assert decision_fields(by_grant, 3).endswith(" version=3 grant=g1")
    assert "grant=" not in decision_fields(Decision(True, Reason.EAVESDROP_GROUP), 3)
