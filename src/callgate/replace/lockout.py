"""When wrong PINs lock a target extension or a phone out of replacing (policy rule 8).

Pure rules, no I/O: the store keeps the failure times (so a restart, or another instance sharing
the store, sees the same counts) and this module says what they mean.

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


@dataclass(frozen=True, slots=True)
class LockState:
    """What the stored failures say about one replace attempt (target and phone together)."""

    target_locked_until: datetime | None
    phone_locked_until: datetime | None

    @property
    def locked(self) -> bool:
        return self.target_locked_until is not None or self.phone_locked_until is not None
