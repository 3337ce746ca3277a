"""Several instances on one PostgreSQL database: what one acknowledges, the other answers over
FastAGI; one killed with SIGKILL under load costs only the sessions in flight on it; the change
feed's connection killed while changes are made loses none of them.

The FastAGI client is ``tests/fake_asterisk.py``'s ``call`` (one AGI() as Asterisk runs it). A
session sent to an instance that cannot be reached, or that ends it without an answer, is sent
to the other one, as the shipped dialplan's failover does. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import itertools

import aiohttp

from fake_asterisk import FakeChannel, call, request_environment
from pg_cluster import PgCluster
from serve_support import AUTH, Instance, is_ready
from support import wait_until

CLIENT = "acme"
URL = f"/client/{CLIENT}/call_control_group/"
SESSION_WITHIN = 5.0
"""Seconds a FastAGI session may take before it counts as unanswered."""


def document(n: int) -> dict[str, object]:
    """Version ``n``'s document: 100 may pick up 101 in every one of them."""
    return {
        "groups": {"sales": ["100", "101"], f"team-{n}": ["1"]},
        "pickup_share_groups": ["sales"],
    }


async def put(session: aiohttp.ClientSession, instance: Instance, n: int) -> int:
    async with session.put(instance.base + URL, json=document(n), headers=AUTH) as response:
        assert response.status == 200, await response.text()
        return int(response.headers["ETag"].strip('"'))


async def agi_version(instance: Instance) -> int | None:
    """The policy version an instance's FastAGI answer names (None: no answer)."""
    try:
        channel = await asyncio.wait_for(
            call(instance.agi_port, request_environment("pickup", CLIENT, "100", "101")),
            SESSION_WITHIN,
        )
    except (OSError, TimeoutError):
        return None
    version = channel.variables.get("CALLGATE_VERSION")
    return None if version is None else int(version)


async def check_version(session: aiohttp.ClientSession, instance: Instance) -> int:
    query = "check?action=pickup&ext=100&target=101"
    async with session.get(instance.base + URL + query, headers=AUTH) as response:
        assert response.status == 200, await response.text()
        return int((await response.json())["policy_version"])


async def test_a_put_acknowledged_by_one_instance_is_answered_by_the_other(
    pair: list[Instance],
) -> None:
    a, b = pair
    async with aiohttp.ClientSession() as session:
        assert await agi_version(b) == 0  # nothing stored yet: the default document
        for n in range(1, 6):
            version = await put(session, a, n)
            assert version == n
            # Acknowledged by A: B follows through the feed (LISTEN/NOTIFY), not at once.
            await wait_until(lambda v=version: _is(agi_version(b), v), within=10)
            assert await check_version(session, b) == version


async def _is(answer: object, version: int) -> bool:
    return await answer == version  # type: ignore[misc]


async def test_one_instance_killed_under_load_costs_only_its_sessions_in_flight(
    pair: list[Instance],
) -> None:
    a, b = pair
    async with aiohttp.ClientSession() as session:
        await put(session, a, 1)
        await wait_until(lambda: _is(agi_version(b), 1), within=10)

    counts = {"answered": 0, "failed_on_a": 0, "refused_by_a": 0, "unanswered": 0}
    killed = asyncio.Event()
    after_kill: list[bool] = []

    async def one(first: Instance) -> None:
        """One session: ``first``, then the other one when ``first`` gave no answer."""
        started_after_kill = killed.is_set()
        for attempt, instance in enumerate((first, b if first is a else a)):
            try:
                channel = await asyncio.wait_for(
                    call(instance.agi_port, request_environment("pickup", CLIENT, "100", "101")),
                    SESSION_WITHIN,
                )
            except (OSError, TimeoutError):
                channel = FakeChannel()
                if instance is a and attempt == 0:
                    counts["refused_by_a"] += 1
                    continue
            if channel.variables.get("CALLGATE_DECISION"):
                counts["answered"] += 1
                if started_after_kill:
                    after_kill.append(True)
                return
            if instance is a and attempt == 0:
                counts["failed_on_a"] += 1  # connected, then lost without an answer
        counts["unanswered"] += 1
        if started_after_kill:
            after_kill.append(False)

    async def worker(index: int, sessions: int) -> None:
        targets = itertools.cycle((a, b) if index % 2 else (b, a))
        for _ in range(sessions):
            await one(next(targets))

    workers = 8
    load = asyncio.gather(*(worker(i, 60) for i in range(workers)))
    await wait_until(lambda: counts["answered"] >= 80, within=30)
    a.process.kill()  # SIGKILL: no shutdown, its sessions in flight are cut
    await a.process.wait()
    killed.set()
    await load

    assert counts["unanswered"] == 0, counts
    # Only the sessions in flight on A when it died were lost there (each then answered by B).
    assert counts["failed_on_a"] <= workers, counts
    assert counts["refused_by_a"] > 0, counts  # A's address kept being tried, and B answered
    assert after_kill, counts
    assert all(after_kill), counts
    assert counts["answered"] == workers * 60


async def test_changes_made_while_the_feed_connection_is_killed_all_reach_the_other_instance(
    pair: list[Instance], pg_cluster: PgCluster, pg_dsn: str
) -> None:
    a, b = pair
    database = pg_dsn.rpartition("/")[2]
    kill_feeds = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"  # noqa: S608 (ours)
        f" WHERE application_name = 'callgate-feed' AND datname = '{database}'"
    )
    async with aiohttp.ClientSession() as session:
        await put(session, a, 1)
        await wait_until(lambda: _is(agi_version(b), 1), within=10)
        version = 1
        for round_ in range(3):
            terminated = await asyncio.to_thread(pg_cluster.psql, kill_feeds)
            if round_ == 0:
                assert int(terminated) >= 2  # both instances' feeds were cut
            for _ in range(5):  # made while the feeds reconnect: their NOTIFYs are lost
                version = await put(session, a, version + 1)
        assert version == 16
        await wait_until(lambda: is_ready(session, b), within=30)
        await wait_until(lambda: _is(agi_version(b), version), within=30)
        assert await check_version(session, b) == version
        assert await check_version(session, a) == version
