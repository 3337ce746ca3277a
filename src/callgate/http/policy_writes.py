"""What keeps one client's policy writes from slowing everyone else.

- ``WriteLimiter``: per client, a token bucket (``rate`` writes a second, ``burst`` at once) and
  at most ``concurrency`` writes in flight; past either, the write is refused with 429 and a
  ``Retry-After`` before its body is even read.
- ``Preparer``: a body of ``offload_bytes`` or more is decoded, validated and encoded in a worker
  process (see ``policy_worker``); a smaller one inline, where a process round trip would cost
  more than the work (``bench/put_offload_bench.py`` has the figures behind the default).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from callgate.domain import canonical_json
from callgate.http.body import parse_json
from callgate.http.errors import ApiError
from callgate.http.policy_worker import Rejected, document_from_body, prepare, rebuild
from callgate.policy import PolicyDocument


@dataclass(frozen=True, slots=True)
class WriteConfig:
    """The policy write limits (``Settings.policy_write_*`` and ``policy_offload_*``)."""

    rate: float = 5.0
    burst: int = 20
    concurrency: int = 1
    offload_bytes: int = 65536
    workers: int = 1


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    in_flight: int = 0


def rate_limited(message: str, retry_after: float) -> ApiError:
    seconds = max(1, math.ceil(retry_after))
    return ApiError(429, "rate_limited", message, headers=[("Retry-After", str(seconds))])


@dataclass
class WriteLimiter:
    config: WriteConfig
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    MAX_IDLE_BUCKETS = 10_000
    """Past this many clients, buckets back at full and idle are dropped (they are the default)."""

    def acquire(self, client_id: str) -> None:
        """Take a token and an in-flight slot for ``client_id``, or raise a 429 ``ApiError``."""
        now = self.clock()
        bucket = self._buckets.get(client_id)
        if bucket is None:
            self._forget_idle(now)
            bucket = self._buckets[client_id] = _Bucket(float(self.config.burst), now)
        else:
            bucket.tokens = min(
                float(self.config.burst), bucket.tokens + (now - bucket.stamp) * self.config.rate
            )
            bucket.stamp = now
        if bucket.in_flight >= self.config.concurrency:
            raise rate_limited(
                f"At most {self.config.concurrency} policy write(s) of one client at a time;"
                " wait for the one in flight.",
                1,
            )
        if bucket.tokens < 1:
            raise rate_limited(
                f"At most {self.config.rate:g} policy writes a second per client"
                f" (bursts of {self.config.burst}).",
                (1 - bucket.tokens) / self.config.rate,
            )
        bucket.tokens -= 1
        bucket.in_flight += 1

    def release(self, client_id: str) -> None:
        bucket = self._buckets.get(client_id)
        if bucket is not None:
            bucket.in_flight -= 1

    def _forget_idle(self, now: float) -> None:
        if len(self._buckets) < self.MAX_IDLE_BUCKETS:
            return
        full = float(self.config.burst)
        for client_id, bucket in list(self._buckets.items()):
            refilled = bucket.tokens + (now - bucket.stamp) * self.config.rate
            if bucket.in_flight == 0 and refilled >= full:
                del self._buckets[client_id]


WORKER_NICENESS = 10
"""How much lower a validator worker runs than the daemon: on a machine short of cores, the
event loop (every client's FastAGI answers) goes first and only the writing client waits."""


def start_worker(parent: int) -> None:
    """In a worker: run at a lower priority, and exit once the daemon is gone."""
    with contextlib.suppress(OSError):  # a platform without nice() keeps the same priority
        os.nice(WORKER_NICENESS)
    watch_parent(parent)


def watch_parent(parent: int) -> None:
    """In a worker: exit once the daemon is gone (killed, it cannot shut its workers down)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="callgate-parent-watch", daemon=True).start()


class Preparer:
    """Runs ``policy_worker.prepare`` inline or in the worker processes, by body size."""

    def __init__(self, config: WriteConfig) -> None:
        self._config = config
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the daemon has threads (SQLite, asyncio's executor) by then.
            self._pool = ProcessPoolExecutor(
                max_workers=self._config.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=start_worker,
                initargs=(os.getpid(),),
            )
        return self._pool

    def start(self) -> None:
        """Start the workers now rather than on the first large write (a second or so)."""
        self._executor().submit(int)

    async def prepare(self, raw: bytes) -> tuple[PolicyDocument, str]:
        """The validated document and its canonical JSON, or the ``ApiError`` the body earned."""
        if len(raw) < self._config.offload_bytes:
            document = document_from_body(parse_json(raw, "request body"))
            return document, canonical_json(document)
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor(), prepare, raw)
        except BrokenProcessPool:
            self._pool = None  # a worker died (killed, out of memory): start afresh next time
            raise ApiError(
                503, "unavailable", "The policy validator restarted; try again."
            ) from None
        if isinstance(result, Rejected):
            raise result.error()
        return await rebuild(result), result.canonical

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: pool.shutdown(wait=True, cancel_futures=True)
            )
