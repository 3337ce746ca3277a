"""``inbox.settle``: waiting for background tasks that remove themselves when done."""

from __future__ import annotations

import asyncio

from callgate.inbox import settle


async def test_settle_waits_for_tasks_added_meanwhile_and_empties_the_set() -> None:
    tasks: set[asyncio.Task[None]] = set()
    finished: list[str] = []

    def spawn(name: str, then: str | None = None) -> None:
        async def work() -> None:
            await asyncio.sleep(0.01)
            finished.append(name)
            if then is not None:
                spawn(then)  # more background work, added while settle() waits

        task = asyncio.create_task(work())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    spawn("first", then="second")
    spawn("other")
    await asyncio.wait_for(settle(tasks), 5)
    assert sorted(finished) == ["first", "other", "second"]
    assert tasks == set()


async def test_settle_returns_for_tasks_already_done_before_their_callbacks_ran() -> None:
    """From Python 3.12 ``gather`` of done tasks does not yield: settle must not spin on them."""
    tasks: set[asyncio.Task[None]] = set()

    async def fails() -> None:
        raise RuntimeError("a background failure is the task's own to log")

    done = [asyncio.ensure_future(work) for work in (asyncio.sleep(0), fails())]
    await asyncio.gather(*done, return_exceptions=True)
    for task in done:
        tasks.add(task)
        task.add_done_callback(tasks.discard)  # done already: the discard is only queued
    # The old ``while tasks: await gather(*tasks)`` spun here without end (pytest's timeout).
    await asyncio.wait_for(settle(tasks), 5)
    assert tasks == set()
