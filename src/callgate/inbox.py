"""One handler's own queue and task, for the change feed's subscribers and the registry's
listeners: what one of them does never delays another, nor whoever handed the item in.

Items are keyed (by client): an item put while another of the same key still waits is merged
into it, in its place (``merge(waiting, new)``). So the queue holds at most one item per key, and
a handler that stalls holds on to the number of clients, never to the number of changes; items
of one key are still handled in the order they were put.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


async def settle(tasks: set[asyncio.Task[None]]) -> None:
    """Return once every task in ``tasks`` is done, those added meanwhile included, for a set
    whose tasks remove themselves when done (``add_done_callback(tasks.discard)``).

    The finished ones are taken out here, not left to their callbacks: from Python 3.12,
    ``gather`` of tasks already done is done at once, and awaiting it does not yield to the loop,
    so a ``while tasks: await gather(*tasks)`` would spin forever before those callbacks run."""
    while tasks:
        batch = tuple(tasks)
        await asyncio.gather(*batch, return_exceptions=True)
        tasks.difference_update(batch)


class KeyedInbox(Generic[T]):
    def __init__(
        self,
        handler: Callable[[T], Awaitable[None]],
        merge: Callable[[T, T], T],
        *,
        name: str,
    ) -> None:
        self._handler = handler
        self._merge = merge
        self._name = name
        self._waiting: dict[str, T] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def put(self, key: str, item: T) -> None:
        """Queue ``item`` (never blocks; on the event loop's thread). Ignored once closed."""
        if self._closed:
            return
        waiting = self._waiting.get(key)
        self._waiting[key] = item if waiting is None else self._merge(waiting, item)
        self._idle.clear()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def idle(self) -> None:
        """Return once every item put before the call has been handled."""
        await self._idle.wait()

    def stop(self) -> asyncio.Task[None] | None:
        """Stop handling: what still waits is dropped, an item being handled is cancelled.
        Returns the task, ending, for a caller that awaits its end (``close``)."""
        self._closed = True
        self._waiting.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self._idle.set()
        return task

    async def close(self) -> None:
        task = self.stop()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                key = next(iter(self._waiting))
                item = self._waiting.pop(key)
                try:
                    await self._handler(item)
                except Exception:
                    log.exception("%s failed on %s", self._name, key)
            self._idle.set()


class FanOut(Generic[T]):
    """Every item to every subscriber, each through its own ``KeyedInbox``."""

    def __init__(self, merge: Callable[[T, T], T], *, name: str) -> None:
        self._merge = merge
        self._name = name
        self._inboxes: dict[int, KeyedInbox[T]] = {}
        self._next_id = 0

    def subscribe(self, handler: Callable[[T], Awaitable[None]]) -> Callable[[], None]:
        """Hand every later item to ``handler``; the returned function stops that."""
        key = self._next_id
        self._next_id += 1
        name = f"{self._name}-{getattr(handler, '__qualname__', key)}"
        self._inboxes[key] = KeyedInbox(handler, self._merge, name=name)

        def unsubscribe() -> None:
            inbox = self._inboxes.pop(key, None)
            if inbox is not None:
                inbox.stop()

        return unsubscribe

    def put(self, key: str, item: T) -> None:
        for inbox in list(self._inboxes.values()):
            inbox.put(key, item)

    async def idle(self) -> None:
        """Return once every subscriber has handled every item put before the call."""
        for inbox in list(self._inboxes.values()):
            await inbox.idle()

    async def close(self) -> None:
        inboxes = list(self._inboxes.values())
        self._inboxes.clear()
        for inbox in inboxes:
            await inbox.close()
