"""The change feed of the SQLite store: in process, after commit (``ports.ChangeFeed``).

The store's save publishes once its transaction has committed, on the event loop, in commit
order. Each subscriber has its own ``KeyedInbox``: a slow subscriber delays nobody, and while it
is busy the changes of one client that pile up are merged into the newest (the contract allows
it: a subscriber re-reads what changed). A PostgreSQL store will meet the same port with
``NOTIFY`` in the writing transaction and one ``LISTEN`` per instance.
"""

from __future__ import annotations

from callgate.domain import PolicyChange
from callgate.inbox import FanOut
from callgate.ports import ChangeHandler, Unsubscribe

__all__ = ["LocalChangeFeed"]


def _newer(waiting: PolicyChange, new: PolicyChange) -> PolicyChange:
    return new if new.version >= waiting.version else waiting


class LocalChangeFeed:
    def __init__(self) -> None:
        self._subscribers = FanOut(_newer, name="change-feed")

    def subscribe(self, handler: ChangeHandler) -> Unsubscribe:
        return self._subscribers.subscribe(handler)

    def publish(self, change: PolicyChange) -> None:
        # Merged per client and kind: a policy version and a supervision version never compare.
        self._subscribers.put(f"{change.kind}:{change.client_id}", change)

    async def idle(self) -> None:
        await self._subscribers.idle()

    async def close(self) -> None:
        await self._subscribers.close()
