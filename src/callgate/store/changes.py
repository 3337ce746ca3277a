"""The change feed within one process: what the SQLite store commits, handed to its subscribers.

Meets ``ports.ChangeFeed``: ``publish`` appends the change to each subscriber's own queue and
returns; one task per subscriber hands its changes to the handler one at a time, in the order
they were published, so a slow or failing subscriber holds up nobody else, least of all the
write that published. The store publishes from the event loop in commit order (``Database.write``
hands the change over from the writer thread right after COMMIT), which gives each subscriber
every client's versions in increasing order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from callgate.domain import PolicyChange
from callgate.ports import ChangeHandler, Unsubscribe

log = logging.getLogger(__name__)


class _Subscriber:
    def __init__(self, handler: ChangeHandler) -> None:
        self.handler = handler
        self.queue: deque[PolicyChange] = deque()
        self.task: asyncio.Task[None] | None = None

    def put(self, change: PolicyChange) -> None:
        self.queue.append(change)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(
                self._deliver(), name="change-feed-subscriber"
            )

    async def _deliver(self) -> None:
        try:
            while self.queue:
                change = self.queue.popleft()
                try:
                    await self.handler(change)
                except Exception:  # the next change is delivered all the same
                    log.exception(
                        "change feed: a subscriber failed on %s v%d",
                        change.client_id,
                        change.version,
                    )
        finally:
            self.task = None

    async def idle(self) -> None:
        while self.task is not None:
            await asyncio.shield(self.task)

    async def close(self) -> None:
        self.queue.clear()
        task = self.task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class InProcessChangeFeed:
    """``ports.ChangeFeed`` for the subscribers of one process (the SQLite store's feed)."""

    def __init__(self) -> None:
        self._subscribers: list[_Subscriber] = []
        self._closed = False

    def subscribe(self, handler: ChangeHandler) -> Unsubscribe:
        subscriber = _Subscriber(handler)
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, change: PolicyChange) -> None:
        """Queue ``change`` for every subscriber (call on the event loop); never blocks."""
        if self._closed:
            log.warning(
                "change feed closed: %s v%d not delivered", change.client_id, change.version
            )
            return
        for subscriber in self._subscribers:
            subscriber.put(change)

    async def idle(self) -> None:
        """Return once every change published so far has been handled by every subscriber."""
        for subscriber in list(self._subscribers):
            await subscriber.idle()

    async def close(self) -> None:
        """Stop delivering: what is still queued is dropped (``idle()`` first to drain)."""
        self._closed = True
        subscribers, self._subscribers = self._subscribers, []
        for subscriber in subscribers:
            await subscriber.close()
