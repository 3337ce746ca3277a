"""How many PIN writes a client may make: a rate (token bucket) and a number in progress at once.

A PIN write costs one scrypt hash (slow on purpose, and 32 MiB at the default cost; its time is
``bench/replace_bench.py``'s first figure). The hashes already take turns between clients
(``pins.FairSlots``), so one client's writes do not queue another's behind them; these limits keep
one client from owning the write threads at all and answer the excess at once (HTTP 429 with
``Retry-After``) instead of queueing it without end.

Per client, in memory: a restart gives every client a full bucket, which is what an idle client
has anyway.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from callgate.config import Settings

_KEPT_IDLE = 1024
"""Idle clients whose bucket is kept; past that, full buckets are dropped (a full one is what a
new client gets, so dropping it changes nothing)."""


@dataclass(frozen=True, slots=True)
class PinWriteLimits:
    rate: float = 2.0
    """PIN writes a client may make per second, on average."""
    burst: int = 20
    """PIN writes a client may make at once after being idle (the bucket's size)."""
    concurrency: int = 4
    """PIN writes of one client in progress at once (waiting for a hash or being hashed)."""

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.burst >= 1 and self.concurrency >= 1):
            raise ValueError("PIN write limits must be positive")

    @classmethod
    def from_settings(cls, settings: Settings) -> PinWriteLimits:
        return cls(
            settings.replace_pin_write_rate,
            settings.replace_pin_write_burst,
            settings.replace_pin_write_concurrency,
        )


class PinLimit(StrEnum):
    RATE = "rate"
    CONCURRENCY = "concurrency"


class PinWritesRefused(Exception):  # noqa: N818 - a refusal the caller answers, not a fault
    """The client is over a PIN write limit; it may try again after ``retry_after`` seconds."""

    def __init__(self, client_id: str, limit: PinLimit, retry_after: int) -> None:
        super().__init__(f"client {client_id} is over its PIN write {limit} limit")
        self.client_id = client_id
        self.limit = limit
        self.retry_after = retry_after


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    in_flight: int = 0


class PinWriteLimiter:
    def __init__(
        self, limits: PinWriteLimits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or PinWriteLimits()
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def in_flight(self, client_id: str) -> int:
        """``client_id``'s PIN writes admitted and not finished."""
        bucket = self._buckets.get(client_id)
        return bucket.in_flight if bucket is not None else 0

    @contextmanager
    def admit(self, client_id: str) -> Iterator[None]:
        """Hold one of ``client_id``'s write places for the block; ``PinWritesRefused`` when the
        client has none. A write refused for concurrency does not use up the rate."""
        bucket = self._refill(client_id)
        limits = self.limits
        if bucket.in_flight >= limits.concurrency:
            # A place frees when one of its hashes ends, well within a second at the default cost.
            raise PinWritesRefused(client_id, PinLimit.CONCURRENCY, 1)
        if bucket.tokens < 1:
            wait = (1 - bucket.tokens) / limits.rate
            raise PinWritesRefused(client_id, PinLimit.RATE, max(1, math.ceil(wait)))
        bucket.tokens -= 1
        bucket.in_flight += 1
        try:
            yield
        finally:
            bucket.in_flight -= 1

    def _refill(self, client_id: str) -> _Bucket:
        now = self._clock()
        burst = self.limits.burst
        bucket = self._buckets.get(client_id)
        if bucket is None:
            if len(self._buckets) >= _KEPT_IDLE:
                self._prune(now)
            bucket = self._buckets[client_id] = _Bucket(float(burst), now)
            return bucket
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * self.limits.rate)
        bucket.stamp = now
        return bucket

    def _prune(self, now: float) -> None:
        rate, burst = self.limits.rate, self.limits.burst
        for client_id, bucket in list(self._buckets.items()):
            if bucket.in_flight == 0 and bucket.tokens + (now - bucket.stamp) * rate >= burst:
                del self._buckets[client_id]
