"""The PostgreSQL store as several callgate instances use it: two stores (two instances) on one
database of a real private cluster (``tests/pg_cluster.py``), the change feed across them and
through a dropped listen connection, the migrations racing, and PostgreSQL going away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest

from callgate.domain import (
    Attempt,
    ChangeKind,
    PolicyChange,
    Replacement,
    StoreError,
    StoreUnavailableError,
    SupervisionEdit,
    VersionConflictError,
)
from callgate.policy import PolicyDocument, parse_document
from callgate.policy.settings import CallControlSettings
from callgate.replace.lockout import LockoutRules, reserve_guess
from callgate.store import open_store
from callgate.store.postgresql import PostgresStore, open_postgresql
from callgate.store.postgresql.changes import PgChangeFeed
from callgate.store.postgresql.db import conninfo
from callgate.store.postgresql.policies import change_payload, parse_payload
from callgate.store.postgresql.schema import LATEST
from pg_cluster import PgCluster, find_bindir
from support import free_port, wait_until

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CONCURRENT = 20


def doc(n: int) -> PolicyDocument:
    return parse_document({"groups": {f"g{n}": [str(100 + n)]}})


@pytest.fixture
async def pair(pg_dsn: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database: what two callgate instances have."""
    first = await open_postgresql(pg_dsn)
    second = await open_postgresql(pg_dsn)
    yield first, second
    await first.close()
    await second.close()


async def sql(dsn: str, statement: str, *args: object) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(statement, args)  # type: ignore[arg-type]
        return await cur.fetchall() if cur.description else []


def recorder(seen: list[PolicyChange]):  # type: ignore[no-untyped-def]
    async def handle(change: PolicyChange) -> None:
        seen.append(change)

    return handle


# ------------------------------------------------------------------------- two instances


async def test_if_match_across_two_instances_has_exactly_one_winner(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = pair
    await a.policies.save("acme", doc(0), "admin")
    results = await asyncio.gather(
        *(
            (a if n % 2 else b).policies.save("acme", doc(n), f"op{n}", if_version=[1])
            for n in range(CONCURRENT)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, VersionConflictError)]
    assert len(won) == 1
    assert len(lost) == CONCURRENT - 1
    assert {c.current for c in lost} == {2}
    assert [p.version for p in await b.policies.history("acme")] == [2, 1]


async def test_saves_across_two_instances_get_unique_increasing_versions(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = pair
    saved = await asyncio.gather(
        *((a if n % 2 else b).policies.save("acme", doc(n), "admin") for n in range(CONCURRENT))
    )
    assert sorted(s.version for s in saved) == list(range(1, CONCURRENT + 1))
    current = await a.policies.current("acme")
    assert current is not None
    assert current.version == CONCURRENT


async def test_wrong_pins_across_two_instances_lock_out_after_max_failures(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = pair
    rules = LockoutRules(max_failures=5)
    results = await asyncio.gather(
        *(
            reserve_guess((a if n % 2 else b).replace, rules, "acme", "101", f"2{n:02}", T0)
            for n in range(CONCURRENT)
        )
    )
    assert sum(isinstance(r, Attempt) for r in results) == rules.max_failures


async def test_one_extension_taken_over_from_two_instances_has_one_phone(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = pair
    takeovers = [
        (a if n % 2 else b).replace.start_replacement(
            Replacement("acme", f"3{n:02}", f"3{n:02}", "101", T0)
        )
        for n in range(10)
    ]
    await asyncio.gather(*takeovers)
    assert len(await a.replace.replacements("acme")) == 1


async def test_a_change_saved_on_one_instance_reaches_the_other(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = pair
    seen: list[PolicyChange] = []
    a.changes.subscribe(recorder(seen))
    for n in range(3):
        await b.policies.save("acme", doc(n), "admin")
    await wait_until(lambda: len(seen) == 3)
    assert seen == [PolicyChange("acme", v) for v in (1, 2, 3)]


async def test_a_local_save_is_delivered_once_despite_its_notify_echo(pg_dsn: str) -> None:
    store = await open_postgresql(pg_dsn)
    try:
        seen: list[PolicyChange] = []
        store.changes.subscribe(recorder(seen))
        await store.policies.save("acme", doc(1), "admin")
        await store.changes.idle()
        assert seen == [PolicyChange("acme", 1)]  # before the echo could arrive: at once
        await asyncio.sleep(0.2)  # the echo arrives and is dropped
        await store.changes.idle()
        assert seen == [PolicyChange("acme", 1)]
    finally:
        await store.close()


# ------------------------------------------------------------------ the listen connection


async def listen_pid(dsn: str) -> int:
    rows = await sql(
        dsn,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'callgate-feed'",
    )
    assert len(rows) == 1, rows
    return int(str(rows[0][0]))


async def test_after_the_listen_connection_is_killed_every_change_is_delivered(
    pg_dsn: str,
) -> None:
    writer = await open_postgresql(pg_dsn)
    await writer.changes.close()  # only the feed under test listens
    feed = PgChangeFeed(conninfo(pg_dsn), backoff_initial=0.5, backoff_max=0.5)
    await writer.policies.save("before", doc(0), "admin")  # noted at start, not delivered
    await feed.start()
    seen: list[PolicyChange] = []
    feed.subscribe(recorder(seen))
    health: list[bool] = []
    feed.on_health = health.append
    try:
        await writer.policies.save("acme", doc(1), "admin")
        await wait_until(lambda: PolicyChange("acme", 1) in seen)
        pid = await listen_pid(pg_dsn)
        await sql(pg_dsn, "SELECT pg_terminate_backend(%s)", pid)
        await wait_until(lambda: not feed.connected)
        assert not feed.healthy
        # Changes while no instance listens: a NOTIFY to nobody, lost.
        for n in range(2, 5):
            await writer.policies.save("acme", doc(n), "admin")
        for client in ("globex", "initech"):
            await writer.policies.save(client, doc(9), "admin")
        await asyncio.wait_for(feed.wait_healthy(), 10)
        assert feed.reconnects == 1
        assert health == [False, True]
        await feed.idle()
        assert sorted(seen, key=lambda c: (c.client_id, c.version)) == [
            PolicyChange("acme", 1),
            PolicyChange("acme", 4),  # the client's current version: 2 and 3 are superseded
            PolicyChange("globex", 1),
            PolicyChange("initech", 1),
        ]
        # and the feed listens again
        await writer.policies.save("acme", doc(5), "admin")
        await wait_until(lambda: PolicyChange("acme", 5) in seen)
        assert PolicyChange("before", 1) not in seen
    finally:
        await feed.close()
        await writer.close()


async def save_settings(store: PostgresStore, client_id: str, if_version: int) -> None:
    await store.supervision.save(
        client_id,
        settings=CallControlSettings(protected_extensions=("911",)),
        grants=(),
        changed_by="admin",
        change=SupervisionEdit.SETTINGS,
        if_version=if_version,
    )


async def test_supervision_changes_cross_instances_and_are_caught_up_apart(pg_dsn: str) -> None:
    """A client's settings versions are followed apart from its policy versions: a policy at
    version 5 does not hide settings at version 1, live or after a reconnection."""
    writer = await open_postgresql(pg_dsn)
    await writer.changes.close()
    feed = PgChangeFeed(conninfo(pg_dsn), backoff_initial=0.2, backoff_max=0.2)
    for n in range(5):
        await writer.policies.save("acme", doc(n), "admin")
    await feed.start()
    seen: list[PolicyChange] = []
    feed.subscribe(recorder(seen))
    try:
        await save_settings(writer, "acme", 0)
        await wait_until(lambda: PolicyChange("acme", 1, ChangeKind.SUPERVISION) in seen)
        await sql(pg_dsn, "SELECT pg_terminate_backend(%s)", await listen_pid(pg_dsn))
        await wait_until(lambda: not feed.connected)
        await save_settings(writer, "acme", 1)
        await save_settings(writer, "globex", 0)
        await asyncio.wait_for(feed.wait_healthy(), 10)
        await feed.idle()
        assert seen[0] == PolicyChange("acme", 1, ChangeKind.SUPERVISION)
        assert sorted(seen[1:], key=lambda c: c.client_id) == [  # caught up, in no set order
            PolicyChange("acme", 2, ChangeKind.SUPERVISION),
            PolicyChange("globex", 1, ChangeKind.SUPERVISION),
        ]
    finally:
        await feed.close()
        await writer.close()


def test_notify_payloads_name_the_kind_and_old_ones_still_read() -> None:
    for change in (PolicyChange("a", 3), PolicyChange("a", 3, ChangeKind.SUPERVISION)):
        assert parse_payload(change_payload(change)) == change
    assert change_payload(PolicyChange("a", 3)) == '["a", 3]'  # what older instances send
    for junk in ('["a", 3, "nope"]', '["a", 3, "policy", 1]', '{"a": 3}', "7", '["a", 0]'):
        assert parse_payload(junk) is None


async def test_killed_repeatedly_while_changes_are_made_every_change_arrives(
    pair: tuple[PostgresStore, PostgresStore],
    pg_dsn: str,
) -> None:
    a, b = pair
    await b.changes.close()
    latest: dict[str, int] = {}

    async def handle(change: PolicyChange) -> None:
        assert change.version > latest.get(change.client_id, 0)  # increasing per client
        latest[change.client_id] = change.version

    a.changes.subscribe(handle)

    async def writes() -> None:
        for n in range(60):
            await b.policies.save(f"c{n % 6}", doc(n), "admin")
            await asyncio.sleep(0.005)

    async def kills() -> None:
        for _ in range(3):
            await asyncio.sleep(0.08)
            await wait_until(lambda: a.changes.healthy)
            await sql(pg_dsn, "SELECT pg_terminate_backend(%s)", await listen_pid(pg_dsn))

    await asyncio.gather(writes(), kills())
    await asyncio.wait_for(a.changes.wait_healthy(), 10)
    await wait_until(lambda: latest == {f"c{k}": 10 for k in range(6)})
    assert a.changes.reconnects >= 1


# ------------------------------------------------------------------------- migrations


async def test_two_instances_starting_at_once_migrate_once(pg_dsn: str) -> None:
    first, second = await asyncio.gather(open_postgresql(pg_dsn), open_postgresql(pg_dsn))
    try:
        assert await sql(pg_dsn, "SELECT version FROM callgate_schema") == [(LATEST,)]
        await first.policies.save("acme", doc(1), "admin")
        assert (await second.policies.current("acme")) is not None
    finally:
        await first.close()
        await second.close()


async def test_a_newer_schema_version_is_refused_untouched(pg_dsn: str) -> None:
    store = await open_postgresql(pg_dsn)
    await store.policies.save("acme", doc(1), "admin")
    await store.close()
    await sql(pg_dsn, "UPDATE callgate_schema SET version = %s", LATEST + 1)
    with pytest.raises(StoreError, match="newer than this callgate's"):
        await open_store(pg_dsn)
    assert await sql(pg_dsn, "SELECT version FROM callgate_schema") == [(LATEST + 1,)]
    assert await sql(pg_dsn, "SELECT count(*) FROM policy_versions") == [(1,)]


# ------------------------------------------------------------------- PostgreSQL away


async def test_an_unreachable_server_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailableError):
        await open_store(f"postgresql://postgres@127.0.0.1:{free_port()}/callgate")


async def test_writes_fail_unavailable_while_the_server_is_down_then_recover(
    pg_cluster: PgCluster,
) -> None:
    bindir = find_bindir()
    assert bindir is not None
    own = PgCluster(bindir)  # a cluster of its own, to stop and start again
    try:
        own.start()
        store = await open_postgresql(own.dsn(), pool_timeout=1.0)
        store.changes.backoff_max = 0.2  # come back quickly
        try:
            await store.policies.save("acme", doc(1), "admin")
            own.halt()
            with pytest.raises(StoreUnavailableError):
                await store.policies.save("acme", doc(2), "admin")
            with pytest.raises(StoreUnavailableError):
                await store.replace.reserve_attempt("acme", "101", "200", T0, T0)
            await wait_until(lambda: not store.changes.healthy)
            # Down long enough that psycopg-pool's own retry is 4 s or more away (it doubles:
            # attempts at about 0, 1 and 3 s): without the renewal the save below times out.
            await wait_until(lambda: store.db.stats().get("connections_errors", 0) >= 3, 15)
            own.start()
            await asyncio.wait_for(store.changes.wait_healthy(), 20)
            saved = await store.policies.save("acme", doc(2), "admin", if_version=[1])
            assert saved.version == 2
            assert store.db.revivals == 1
        finally:
            await store.close()
    finally:
        own.stop()
