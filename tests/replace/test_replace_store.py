"""The replace repository on a real SQLite file: PINs, counted attempts (judged by the lockout
rule of ``replace.lockout``), replacements, restart."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from callgate.http.replace_routes import replacement_json
from callgate.replace.lockout import LockoutRules, LockState, current_lock, reserve_guess
from callgate.store.db import Database
from callgate.store.replace import Attempt, Replacement, ReplaceRepository
from support import sqlite_file

from .conftest import CLIENT, Clock

RULES = LockoutRules()


async def test_pins_are_per_client_and_extension(repo: ReplaceRepository, clock: Clock) -> None:
    await repo.set_pin(CLIENT, "101", "hash-a", clock())
    await repo.set_pin("other", "101", "hash-b", clock())
    assert await repo.pin_hash(CLIENT, "101") == "hash-a"
    await repo.set_pin(CLIENT, "101", "hash-c", clock())
    assert await repo.pin_hash(CLIENT, "101") == "hash-c"
    assert await repo.delete_pin(CLIENT, "101")
    assert not await repo.delete_pin(CLIENT, "101")
    assert await repo.pin_hash(CLIENT, "101") is None
    assert await repo.pin_hash("other", "101") == "hash-b"


async def test_attempts_lock_target_and_phone(repo: ReplaceRepository, clock: Clock) -> None:
    for _ in range(5):
        attempt = await reserve_guess(repo, RULES, CLIENT, "101", "100", clock())
        assert isinstance(attempt, Attempt)
        clock.advance(1)
    # the target is locked for every phone, and the phone for every target
    other_phone = await reserve_guess(repo, RULES, CLIENT, "101", "103", clock())
    assert isinstance(other_phone, LockState)
    assert other_phone.target_locked_until is not None
    assert other_phone.phone_locked_until is None
    other_target = await reserve_guess(repo, RULES, CLIENT, "103", "100", clock())
    assert isinstance(other_target, LockState)
    assert other_target.phone_locked_until is not None
    # another client's extension of the same name is untouched
    assert isinstance(await reserve_guess(repo, RULES, "other", "101", "100", clock()), Attempt)


async def test_a_right_pin_takes_its_attempt_back(repo: ReplaceRepository, clock: Clock) -> None:
    for _ in range(10):
        attempt = await reserve_guess(repo, RULES, CLIENT, "101", "100", clock())
        assert isinstance(attempt, Attempt)
        await repo.forget_attempt(attempt)
    state = await current_lock(repo, RULES, CLIENT, "101", "100", clock())
    assert not state.locked


async def test_old_attempts_are_pruned(
    repo: ReplaceRepository, db_path: Path, clock: Clock
) -> None:
    for _ in range(3):
        await reserve_guess(repo, RULES, CLIENT, "101", "100", clock())
    clock.advance((RULES.horizon + timedelta(seconds=1)).total_seconds())
    await reserve_guess(repo, RULES, CLIENT, "102", "100", clock())
    with sqlite_file(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM replace_failures").fetchone() == (1,)


async def test_lockout_survives_reopening_the_file(db_path: Path, clock: Clock) -> None:
    db = await Database.open(db_path)
    repo = ReplaceRepository(db)
    for _ in range(5):
        await reserve_guess(repo, RULES, CLIENT, "101", "100", clock())
    await db.close()

    db = await Database.open(db_path)
    try:
        state = await current_lock(ReplaceRepository(db), RULES, CLIENT, "101", "100", clock())
        assert state.locked
    finally:
        await db.close()


def _replacement(phone: str, to_ext: str, clock: Clock, from_ext: str | None = None) -> Replacement:
    return Replacement(CLIENT, phone, from_ext or phone, to_ext, clock())


async def test_one_phone_per_extension_and_one_extension_per_phone(
    repo: ReplaceRepository, clock: Clock
) -> None:
    first = _replacement("100", "101", clock)
    takeover = await repo.start_replacement(first)
    assert takeover.previous is None
    assert takeover.displaced == ()

    clock.advance(5)
    moved = _replacement("100", "103", clock, from_ext="101")
    takeover = await repo.start_replacement(moved)
    assert takeover.previous == first

    clock.advance(5)
    rival = _replacement("102", "103", clock)
    takeover = await repo.start_replacement(rival)
    assert takeover.previous is None
    assert takeover.displaced == (moved,)
    assert list(await repo.replacements(CLIENT)) == [rival]
    assert await repo.replacement(CLIENT, "100") is None


async def test_end_replacement_only_ends_the_one_it_saw(
    repo: ReplaceRepository, clock: Clock
) -> None:
    old = _replacement("100", "101", clock)
    await repo.start_replacement(old)
    clock.advance(1)
    newer = _replacement("100", "103", clock)
    await repo.start_replacement(newer)
    assert await repo.end_replacement(CLIENT, "100", only=old) is None
    assert await repo.end_replacement(CLIENT, "100", only=newer) == newer
    assert await repo.end_replacement(CLIENT, "100") is None


async def test_replacement_json_shape(repo: ReplaceRepository, clock: Clock) -> None:
    await repo.start_replacement(_replacement("100", "101", clock))
    (only,) = await repo.replacements(CLIENT)
    assert replacement_json(only) == {
        "phone": "100",
        "from_ext": "100",
        "to_ext": "101",
        "since": "2026-11-26T12:00:00+00:00",
    }
