"""The replace service's rules that the FastAGI tests cannot reach easily: failing closed,
the policy changing while the caller types, and concurrent guesses."""

from __future__ import annotations

import asyncio
from pathlib import Path

from callgate.registry import PolicyRegistry
from callgate.replace.service import AstDbError, PinChallenge, ReplaceRequest, Ruling
from callgate.store.db import Database
from callgate.store.replace import ReplaceRepository
from reference_policy import REFERENCE_DOCUMENT
from support import sqlite_file

from .conftest import CLIENT, Clock, FakeAstDb, FakeAudit, make_service
from .conftest import client_policy as make_policy

PIN = "13579"


def request(phone: str = "100", target: str = "101") -> ReplaceRequest:
    return ReplaceRequest(CLIENT, phone, phone, target, uniqueid="1.1")


def registry_with(document: dict[str, object]) -> PolicyRegistry:
    registry = PolicyRegistry()
    registry.load(make_policy(document, 1))
    return registry


async def challenge(outcome: Ruling | PinChallenge) -> PinChallenge:
    assert isinstance(outcome, PinChallenge), outcome
    return outcome


class FailingAstDb(FakeAstDb):
    async def put(self, family: str, key: str, value: str) -> None:
        raise AstDbError("DATABASE PUT failed")


async def test_astdb_refusing_the_write_denies_and_undoes(
    repo: ReplaceRepository, clock: Clock
) -> None:
    service = make_service(repo, registry_with(REFERENCE_DOCUMENT), FakeAudit(), clock=clock)
    await service.set_pin(CLIENT, "101", PIN)
    begun = await challenge(await service.begin_replace(request()))
    outcome = await service.finish_replace(request(), begun, PIN, FailingAstDb())
    assert (outcome.decision.allowed, outcome.decision.reason) == (False, "internal_error")
    assert list(await repo.replacements(CLIENT)) == []


async def test_store_unavailable_is_a_denial(db_path: Path, clock: Clock) -> None:
    db = await Database.open(db_path)
    repo = ReplaceRepository(db)
    audit = FakeAudit()
    service = make_service(repo, registry_with(REFERENCE_DOCUMENT), audit, clock=clock)
    await service.set_pin(CLIENT, "101", PIN)
    await db.close()
    outcome = await service.begin_replace(request())
    assert isinstance(outcome, Ruling)
    assert (outcome.decision.allowed, outcome.decision.reason) == (False, "unavailable")
    assert audit.events[-1].reason == "unavailable"


async def test_a_damaged_pin_hash_fails_closed(
    repo: ReplaceRepository, db_path: Path, clock: Clock
) -> None:
    service = make_service(repo, registry_with(REFERENCE_DOCUMENT), FakeAudit(), clock=clock)
    await service.set_pin(CLIENT, "101", PIN)
    with sqlite_file(db_path) as conn:
        conn.execute("UPDATE replace_pins SET pin_hash = 'scrypt$99$1$1$AAAA$AAAA'")
    begun = await challenge(await service.begin_replace(request()))
    outcome = await service.finish_replace(request(), begun, PIN, FakeAstDb())
    assert (outcome.decision.allowed, outcome.decision.reason) == (False, "internal_error")


async def test_policy_withdrawn_while_the_caller_types(
    repo: ReplaceRepository, clock: Clock
) -> None:
    registry = registry_with(REFERENCE_DOCUMENT)
    service = make_service(repo, registry, FakeAudit(), clock=clock)
    await service.set_pin(CLIENT, "101", PIN)
    begun = await challenge(await service.begin_replace(request()))
    await registry.publish(make_policy({**REFERENCE_DOCUMENT, "phone_replace_groups": []}, 2))
    astdb = FakeAstDb()
    outcome = await service.finish_replace(request(), begun, PIN, astdb)
    assert (outcome.decision.reason, outcome.version) == ("replace_not_permitted", 2)
    assert astdb.data == {}
    assert list(await repo.replacements(CLIENT)) == []


async def test_concurrent_guesses_cannot_outrun_the_limit(
    repo: ReplaceRepository, clock: Clock
) -> None:
    """Ten phones all past the pre-prompt check type a wrong PIN at the same moment: five are
    judged (and counted), the rest are locked out without their digits being checked."""
    service = make_service(repo, registry_with({"allow_all": True}), FakeAudit(), clock=clock)
    await service.set_pin(CLIENT, "101", PIN)
    phones = [str(200 + n) for n in range(10)]
    begun = [await challenge(await service.begin_replace(request(p))) for p in phones]
    outcomes = await asyncio.gather(
        *(
            service.finish_replace(request(p), b, "00000", FakeAstDb())
            for p, b in zip(phones, begun, strict=True)
        )
    )
    reasons = sorted(o.decision.reason.value for o in outcomes)
    assert reasons == ["bad_pin"] * 5 + ["locked_out"] * 5
