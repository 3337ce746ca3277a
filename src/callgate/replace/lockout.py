"""When wrong PINs lock a target extension or a phone out of replacing (policy rule 8).

The rules are pure: the store keeps the failure times (so a restart, or another instance sharing
the store, sees the same counts) and ``LockoutRules`` says what they mean. ``reserve_guess``
applies them to the store: the store's reservation of an attempt hands back the failures counted
before it, atomically (``ports.ReplaceStore``), and the attempt is taken back when a lock is in
force, so of concurrent guesses only those the rule allows go ahead.

The rule: a key (a target extension, or a dialing phone) is locked out once it has had
``max_failures`` wrong PINs within ``window`` seconds, for ``lock`` seconds counted from the
failure that reached the limit. Failures older than ``window + lock`` can no longer lock
anything, which bounds what the store has to read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from callgate.domain import Attempt, FailureTimes

if TYPE_CHECKING:
    from callgate.ports import ReplaceStore

if TYPE_CHECKING:
    from callgate.config import Settings


@dataclass(frozen=True, slots=True)
class LockoutRules:
    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    lock: timedelta = timedelta(minutes=15)

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if self.window <= timedelta(0) or self.lock <= timedelta(0):
            raise ValueError("the window and the lock duration must be positive")

    @classmethod
    def from_settings(cls, settings: Settings) -> LockoutRules:
        return cls(
            settings.replace_max_failures,
            timedelta(seconds=settings.replace_window_seconds),
            timedelta(seconds=settings.replace_lock_seconds),
        )

    @property
    def horizon(self) -> timedelta:
        """How far back a failure can still matter."""
        return self.window + self.lock

    def locked_until(self, failures: Iterable[datetime], now: datetime) -> datetime | None:
        """The end of the lock in force at ``now`` for one key's failure times, or ``None``."""
        times = sorted(failures)
        until: datetime | None = None
        first_of_run = 0
        for last, at in enumerate(times):
            # the oldest failure that still lies within the window ending at this one
            while at - times[first_of_run] > self.window:
                first_of_run += 1
            if last - first_of_run + 1 >= self.max_failures:
                end = at + self.lock
                until = end if until is None else max(until, end)
        return until if until is not None and now < until else None

    def state(self, failures: FailureTimes, now: datetime) -> LockState:
        """What the failures of a target and of a phone say at ``now``."""
        return LockState(
            self.locked_until(failures.target, now), self.locked_until(failures.phone, now)
        )


@dataclass(frozen=True, slots=True)
class LockState:
    """What the stored failures say about one replace attempt (target and phone together)."""

    target_locked_until: datetime | None
    phone_locked_until: datetime | None

    @property
    def locked(self) -> bool:
        return self.target_locked_until is not None or self.phone_locked_until is not None


async def current_lock(
    store: ReplaceStore, rules: LockoutRules, client_id: str, target: str, phone: str, now: datetime
) -> LockState:
    """The lock in force for ``target`` and ``phone`` (a read: to deny before prompting)."""
    failures = await store.failure_times(client_id, target, phone, now - rules.horizon)
    return rules.state(failures, now)


async def reserve_guess(
    store: ReplaceStore, rules: LockoutRules, client_id: str, target: str, phone: str, now: datetime
) -> Attempt | LockState:
    """Count one guess at ``target``'s PIN from ``phone``, unless either is locked out.

    The store counts it and returns the guesses counted before it in one linearizable step;
    judged locked, the guess is taken back and the lock state returned instead."""
    reservation = await store.reserve_attempt(client_id, target, phone, now, now - rules.horizon)
    state = rules.state(reservation.before, now)
    if state.locked:
        await store.forget_attempt(reservation.attempt)
        return state
    return reservation.attempt
