"""psycopg 3 (+ psycopg-pool) against asyncpg on the statements the PostgreSQL store runs.

    .venv/bin/pip install 'psycopg[binary]' psycopg-pool asyncpg
    .venv/bin/python bench/pg_driver_bench.py [--dsn postgresql://...] [--rounds 400]

Without ``--dsn`` it starts a private cluster (``tests/pg_cluster.py``: initdb + pg_ctl on a free
loopback port, removed afterwards). Each driver runs, through a pool of 4 connections:

- ``save``: a policy save transaction (read the current version, insert the next, prune beyond
  the newest 100, NOTIFY), sequential and at 8 in flight;
- ``reserve``: a PIN reservation transaction (two lock-row upserts, delete old attempts, read
  the failures of target and phone, insert the attempt);
- ``read``: the current version of one client;
- ``notify``: a NOTIFY committed on one connection until it arrives on a listening one;
- ``dead listen``: how long until the driver tells a listening connection that
  ``pg_terminate_backend`` ended it, with no query of ours in flight.

Figures are medians and 99th percentiles in milliseconds (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_versions (
    client_id text NOT NULL, version bigint NOT NULL, document text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (client_id, version));
CREATE TABLE IF NOT EXISTS bench_locks (
    client_id text NOT NULL, kind text NOT NULL, key text NOT NULL,
    reservations bigint NOT NULL DEFAULT 0, PRIMARY KEY (client_id, kind, key));
CREATE TABLE IF NOT EXISTS bench_failures (
    id bigserial PRIMARY KEY, client_id text NOT NULL, target text NOT NULL,
    phone text NOT NULL, at double precision NOT NULL);
CREATE INDEX IF NOT EXISTS bench_failures_target ON bench_failures (client_id, target, at);
CREATE INDEX IF NOT EXISTS bench_failures_phone ON bench_failures (client_id, phone, at);
TRUNCATE bench_versions, bench_locks, bench_failures;
"""
DOC = '{"version":1,"groups":[],"rules":[]}' + " " * 900  # about a typical policy's size

Op = Callable[[int], Awaitable[None]]


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms"


async def timed(name: str, op: Op, rounds: int, in_flight: int = 1) -> None:
    samples: list[float] = []
    next_round = iter(range(rounds))

    async def worker() -> None:
        for i in next_round:
            started = time.perf_counter()
            await op(i)
            samples.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    print(f"  {name:<22} {percentiles(samples)}  {rounds / elapsed:7.0f}/s")


# ------------------------------------------------------------------------------- psycopg


async def bench_psycopg(dsn: str, rounds: int) -> None:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    print("psycopg", psycopg.__version__)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(SCHEMA)
    pool = AsyncConnectionPool(dsn, min_size=4, max_size=4, open=False)
    await pool.open(wait=True)

    async def save(i: int, client: str = "c") -> None:
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM bench_versions WHERE client_id = %s",
                (client,),
            )
            row = await cur.fetchone()
            version = int(row[0]) + 1 if row else 1
            await conn.execute(
                "INSERT INTO bench_versions (client_id, version, document) VALUES (%s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (client, version, DOC),
            )
            await conn.execute(
                "DELETE FROM bench_versions WHERE client_id = %s AND version <= %s",
                (client, version - 100),
            )
            await conn.execute("SELECT pg_notify('bench', %s)", (f"{client}:{version}",))

    async def save_many(i: int) -> None:
        await save(i, f"c{i % 8}")

    async def reserve(i: int) -> None:
        now = time.time()
        async with pool.connection() as conn, conn.transaction():
            for kind, key in (("target", "200"), ("phone", f"1{i % 10}")):
                await conn.execute(
                    "INSERT INTO bench_locks (client_id, kind, key, reservations)"
                    " VALUES ('c', %s, %s, 1) ON CONFLICT (client_id, kind, key)"
                    " DO UPDATE SET reservations = bench_locks.reservations + 1",
                    (kind, key),
                )
            await conn.execute("DELETE FROM bench_failures WHERE at <= %s", (now - 900,))
            for column, key in (("target", "200"), ("phone", f"1{i % 10}")):
                cur = await conn.execute(
                    f"SELECT at FROM bench_failures WHERE client_id = 'c' AND {column} = %s"  # noqa: S608
                    " AND at > %s ORDER BY at",
                    (key, now - 900),
                )
                await cur.fetchall()
            await conn.execute(
                "INSERT INTO bench_failures (client_id, target, phone, at)"
                " VALUES ('c', '200', %s, %s) RETURNING id",
                (f"1{i % 10}", now),
            )

    async def read(i: int) -> None:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT version, document FROM bench_versions WHERE client_id = %s"
                " ORDER BY version DESC LIMIT 1",
                ("c",),
            )
            await cur.fetchone()

    listener = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await listener.execute("LISTEN bench_rt")
    notifies = listener.notifies()

    async def round_trip(i: int) -> None:
        async with pool.connection() as conn:
            await conn.execute("SELECT pg_notify('bench_rt', %s)", (str(i),))
        async for note in notifies:
            if note.payload == str(i):
                return

    await timed("save", save, rounds)
    await timed("save, 8 in flight", save_many, rounds, 8)
    await timed("reserve", reserve, rounds)
    await timed("read", read, rounds)
    await timed("notify round trip", round_trip, rounds)
    await notifies.aclose()

    # A dead listen connection: the notifies() generator raises as soon as the socket closes.
    cur = await listener.execute("SELECT pg_backend_pid()")
    row = await cur.fetchone()
    assert row is not None
    pid = int(row[0])

    async def wait_dead() -> str:
        try:
            async for _ in listener.notifies():
                pass
        except psycopg.OperationalError as exc:
            return f"OperationalError: {str(exc).splitlines()[0]}"
        return "generator ended"

    waiter = asyncio.create_task(wait_dead())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    async with pool.connection() as conn:
        await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    how = await asyncio.wait_for(waiter, 10)
    print(f"  dead listen detected   {(time.perf_counter() - started) * 1000:6.2f} ms  ({how})")
    await listener.close()
    await pool.close()


# ------------------------------------------------------------------------------- asyncpg


async def bench_asyncpg(dsn: str, rounds: int) -> None:
    import asyncpg

    print("asyncpg", asyncpg.__version__)
    conn0 = await asyncpg.connect(dsn)
    await conn0.execute(SCHEMA)
    await conn0.close()
    pool: Any = await asyncpg.create_pool(dsn, min_size=4, max_size=4)

    async def save(i: int, client: str = "c") -> None:
        async with pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval(
                "SELECT COALESCE(MAX(version), 0) FROM bench_versions WHERE client_id = $1",
                client,
            )
            version = int(current) + 1
            await conn.execute(
                "INSERT INTO bench_versions (client_id, version, document) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                client,
                version,
                DOC,
            )
            await conn.execute(
                "DELETE FROM bench_versions WHERE client_id = $1 AND version <= $2",
                client,
                version - 100,
            )
            await conn.execute("SELECT pg_notify('bench', $1)", f"{client}:{version}")

    async def save_many(i: int) -> None:
        await save(i, f"c{i % 8}")

    async def reserve(i: int) -> None:
        now = time.time()
        async with pool.acquire() as conn, conn.transaction():
            for kind, key in (("target", "200"), ("phone", f"1{i % 10}")):
                await conn.execute(
                    "INSERT INTO bench_locks (client_id, kind, key, reservations)"
                    " VALUES ('c', $1, $2, 1) ON CONFLICT (client_id, kind, key)"
                    " DO UPDATE SET reservations = bench_locks.reservations + 1",
                    kind,
                    key,
                )
            await conn.execute("DELETE FROM bench_failures WHERE at <= $1", now - 900)
            for column, key in (("target", "200"), ("phone", f"1{i % 10}")):
                await conn.fetch(
                    f"SELECT at FROM bench_failures WHERE client_id = 'c' AND {column} = $1"  # noqa: S608
                    " AND at > $2 ORDER BY at",
                    key,
                    now - 900,
                )
            await conn.fetchval(
                "INSERT INTO bench_failures (client_id, target, phone, at)"
                " VALUES ('c', '200', $1, $2) RETURNING id",
                f"1{i % 10}",
                now,
            )

    async def read(i: int) -> None:
        async with pool.acquire() as conn:
            await conn.fetchrow(
                "SELECT version, document FROM bench_versions WHERE client_id = $1"
                " ORDER BY version DESC LIMIT 1",
                "c",
            )

    listener = await asyncpg.connect(dsn)
    arrived: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("bench_rt", lambda *args: arrived.put_nowait(args[3]))

    async def round_trip(i: int) -> None:
        async with pool.acquire() as conn:
            await conn.execute("SELECT pg_notify('bench_rt', $1)", str(i))
        while await arrived.get() != str(i):
            pass

    await timed("save", save, rounds)
    await timed("save, 8 in flight", save_many, rounds, 8)
    await timed("reserve", reserve, rounds)
    await timed("read", read, rounds)
    await timed("notify round trip", round_trip, rounds)

    # A dead listen connection: only the termination listener tells (no exception anywhere
    # until a query is made on it); is_closed() turns true at the same moment.
    pid = listener.get_server_pid()
    terminated = asyncio.Event()
    listener.add_termination_listener(lambda _conn: terminated.set())
    started = time.perf_counter()
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    await asyncio.wait_for(terminated.wait(), 10)
    print(
        f"  dead listen detected   {(time.perf_counter() - started) * 1000:6.2f} ms"
        " (add_termination_listener callback)"
    )
    await listener.close()
    await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="a database to use (default: a private cluster)")
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    cluster = None
    dsn = args.dsn
    if dsn is None:
        from pg_cluster import PgCluster, find_bindir

        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("no PostgreSQL binaries: apt-get install postgresql")
        cluster = PgCluster(bindir)
        cluster.start()
        dsn = cluster.dsn()
    try:
        for bench in (bench_psycopg, bench_asyncpg):
            await bench(dsn, args.rounds)
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    asyncio.run(main())
