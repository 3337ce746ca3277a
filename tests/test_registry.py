"""The registry's promise to a write: the swap, then what the answer promises, then the rest."""

from __future__ import annotations

import asyncio

from callgate.policy import PolicyDocument, compile_policy
from callgate.registry import ClientPolicy, PolicyRegistry


def version(n: int) -> ClientPolicy:
    document = PolicyDocument(allow_all=n % 2 == 1)
    return ClientPolicy("acme", n, document, compile_policy(document))


async def test_applied_waits_for_a_before_answer_listener_but_not_for_the_others() -> None:
    registry = PolicyRegistry()
    slow_release = asyncio.Event()
    seen: list[str] = []

    async def settle(old: ClientPolicy, new: ClientPolicy) -> None:
        assert registry.get("acme") is new  # it runs after the swap
        await asyncio.sleep(0.05)
        seen.append(f"settled {new.version}")

    async def slow(old: ClientPolicy, new: ClientPolicy) -> None:
        await slow_release.wait()
        seen.append(f"slow {new.version}")

    registry.subscribe(settle, before_answer=True)
    registry.subscribe(slow)
    registry.install(version(1))
    assert registry.get("acme").version == 1  # FastAGI decides by it at once
    await asyncio.wait_for(registry.applied("acme", 1), 5)
    assert seen == ["settled 1"]  # the answer waited for the promised work, not for ``slow``
    slow_release.set()
    await registry.idle()
    assert seen == ["settled 1", "slow 1"]
    await registry.close()


async def test_a_failing_before_answer_listener_still_lets_the_change_apply() -> None:
    registry = PolicyRegistry()

    async def broken(old: ClientPolicy, new: ClientPolicy) -> None:
        raise RuntimeError("listener bug")

    registry.subscribe(broken, before_answer=True)
    registry.install(version(1))
    await asyncio.wait_for(registry.applied("acme", 1), 5)
    assert registry.get("acme").version == 1
    await registry.close()
