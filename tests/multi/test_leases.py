"""The enforcement locks on a real PostgreSQL: of the instances on one database exactly one holds
a PBX's lock; when it lets go, dies, or loses its connection, another takes over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from callgate.ami.leases import APPLICATION_NAME, PgLeases, lock_key
from callgate.pbx import PbxName
from callgate.store.postgresql.db import conninfo
from callgate.store.postgresql.schema import SCHEMA_LOCK
from support import wait_until

EAST, WEST = PbxName("east"), PbxName("west")


class Instance:
    """One instance's leases, and what it was told."""

    def __init__(self, dsn: str, pbxes: tuple[PbxName, ...] = (EAST, WEST)) -> None:
        self.leases = PgLeases(conninfo(dsn), pbxes, interval=0.1)
        self.told: list[tuple[str, bool]] = []

    async def on_change(self, pbx: PbxName, held: bool) -> None:
        self.told.append((pbx, held))

    def start(self) -> Instance:
        self.leases.start(self.on_change)
        return self


@pytest.fixture
async def two(pg_dsn: str) -> AsyncIterator[tuple[Instance, Instance]]:
    first = Instance(pg_dsn).start()
    await wait_until(lambda: first.leases.held() == {EAST, WEST})
    second = Instance(pg_dsn).start()
    yield first, second
    await first.leases.stop()
    await second.leases.stop()


async def backend_pids(dsn: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            (APPLICATION_NAME,),
        )
        return [int(row[0]) for row in await cur.fetchall()]


def test_each_pbx_has_its_own_key_and_none_is_the_migrations() -> None:
    keys = {lock_key(PbxName(name)) for name in ("default", "east", "west")}
    assert len(keys) == 3
    assert SCHEMA_LOCK not in keys
    assert all(-(2**63) <= key < 2**63 for key in keys)


async def test_one_instance_holds_each_lock_and_another_takes_over_when_it_stops(
    two: tuple[Instance, Instance],
) -> None:
    first, second = two
    await asyncio.sleep(0.5)  # several tries of the second instance
    assert first.leases.held() == {EAST, WEST}
    assert second.leases.held() == frozenset()
    assert second.told == []

    await first.leases.stop()
    assert sorted(first.told) == [("east", False), ("east", True), ("west", False), ("west", True)]
    await wait_until(lambda: second.leases.held() == {EAST, WEST}, within=5)
    assert sorted(second.told) == [("east", True), ("west", True)]


async def test_a_holder_whose_connection_is_cut_stops_and_the_lock_moves(
    two: tuple[Instance, Instance], pg_dsn: str
) -> None:
    first, second = two

    async def connected() -> bool:
        return len(await backend_pids(pg_dsn)) == 2  # one lock connection each

    await wait_until(connected)
    # the holder's connection: the one that holds advisory locks
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        (holder,) = [int(row[0]) for row in await cur.fetchall()]
        await conn.execute("SELECT pg_terminate_backend(%s)", (holder,))
    # Whichever instance reconnects first may take them: exactly one holds each, and the first
    # was told it lost them.
    await wait_until(lambda: ("east", False) in first.told and ("west", False) in first.told)
    await wait_until(lambda: len(first.leases.held() | second.leases.held()) == 2, within=5)
    assert not first.leases.held() & second.leases.held()
