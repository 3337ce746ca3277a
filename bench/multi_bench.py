"""Several instances on one PostgreSQL: propagation, failover, PUTs on PostgreSQL vs SQLite.

    .venv/bin/python bench/multi_bench.py [--changes 1000] [--puts 2000] [--skip failover,...]

Real ``callgate serve`` processes (``tests/serve_support.py``) on a private PostgreSQL cluster
(``tests/pg_cluster.py``, a free loopback port, removed afterwards); everything on loopback.

- **propagation**: ``--changes`` PUTs on instance A, one at a time; after each is acknowledged
  (200), instance B is polled over FastAGI (a pickup, one session after the other, no pause)
  until its answer's ``CALLGATE_VERSION`` is the new version: the time from the acknowledgement
  to that answer. Each poll is a whole session, so the figure includes up to one session's time.
- **failover**: 8 sessions in flight back to back, alternately sent to A and B; after 2 s A is
  killed with SIGKILL. A session A cannot take (refused) or ends without an answer is sent to B,
  as the shipped dialplan does. Counted: sessions lost in flight on A, refused by A (then
  answered by B), unanswered even by B; and the time from the kill until the last session that
  A lost in flight ended (after it, every new session is answered).
- **PUTs**: ``--puts`` PUTs, 8 in flight, each in-flight slot on its own client (8 clients), a
  typical document (10 groups, 50 extensions), on one instance with SQLite, one with
  PostgreSQL, and two with PostgreSQL (the PUTs alternately to A and B). The per-client write
  limits are raised (``CALLGATE_POLICY_WRITE_RATE``/``_BURST``/``_CONCURRENCY``).

Prints Markdown tables; asserts nothing. Every loop is bounded (a count, or a deadline).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' cluster, daemons and fake Asterisk

import aiohttp  # noqa: E402

from fake_asterisk import call, request_environment  # noqa: E402
from pg_cluster import PgCluster, find_bindir  # noqa: E402
from serve_support import AUTH, Instance, serving  # noqa: E402

CLIENT = "acme"
SESSION_WITHIN = 5.0
POLL_LIMIT = 10_000
"""Polls of B per change at most (far more than the goal's 50 ms takes)."""
IN_FLIGHT = 8


def document(n: int) -> dict[str, object]:
    """A typical client's document (10 groups of 5, 50 extensions), different for each ``n``."""
    groups = {f"team-{g}": [str(1000 + g * 5 + e) for e in range(5)] for g in range(10)}
    groups["sales"] = ["100", "101"]
    names = list(groups)
    body: dict[str, object] = {
        "groups": groups,
        "pickup_share_groups": names,
        "phone_replace_groups": names[:2],
        f"eavesdrop_{n % 1000 + 1000}": names[:2],
    }
    return body


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100)[q - 1]


async def session_on(instance: Instance) -> dict[str, str] | None:
    """One pickup session; the variables it set (None: no answer at all)."""
    answer, _ = await attempt_on(instance)
    return answer


async def attempt_on(instance: Instance) -> tuple[dict[str, str] | None, bool]:
    """One pickup session: (the variables it set or None, whether it was refused at connect)."""
    try:
        channel = await asyncio.wait_for(
            call(instance.agi_port, request_environment("pickup", CLIENT, "100", "101")),
            SESSION_WITHIN,
        )
    except ConnectionRefusedError:
        return None, True
    except (OSError, TimeoutError):
        return None, False
    return (channel.variables if channel.variables.get("CALLGATE_DECISION") else None), False


async def put(
    http: aiohttp.ClientSession, instance: Instance, client: str, n: int
) -> tuple[int, float]:
    started = time.perf_counter()
    url = f"{instance.base}/client/{client}/call_control_group/"
    async with http.put(url, json=document(n), headers=AUTH) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"PUT {url}: {response.status}")
        return int(response.headers["ETag"].strip('"')), time.perf_counter() - started


@contextlib.asynccontextmanager
async def cluster() -> AsyncIterator[PgCluster]:
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL binaries: apt-get install postgresql")
    pg = PgCluster(bindir)
    await asyncio.to_thread(pg.start)
    try:
        yield pg
    finally:
        await asyncio.to_thread(pg.stop)


async def propagation(pg: PgCluster, root: Path, changes: int) -> list[float]:
    dsn = pg.dsn(await asyncio.to_thread(pg.create_database))
    took: list[float] = []
    async with serving(dsn, root / "propagation") as (a, b), aiohttp.ClientSession() as http:
        for n in range(changes):
            version, _ = await put(http, a, CLIENT, n)
            acknowledged = time.perf_counter()
            for _ in range(POLL_LIMIT):
                answer = await session_on(b)
                if answer is not None and int(answer["CALLGATE_VERSION"]) >= version:
                    took.append(time.perf_counter() - acknowledged)
                    break
            else:
                raise RuntimeError(f"B never answered with version {version}")
    return took


async def failover(pg: PgCluster, root: Path) -> dict[str, float]:
    dsn = pg.dsn(await asyncio.to_thread(pg.create_database))
    counts = {"answered": 0, "lost_in_flight_on_a": 0, "refused_by_a": 0, "unanswered": 0}
    last_loss = 0.0
    killed_at = 0.0
    async with serving(dsn, root / "failover") as (a, b), aiohttp.ClientSession() as http:
        await put(http, a, CLIENT, 0)
        stop_at = time.perf_counter() + 4.0

        async def worker(index: int) -> None:
            nonlocal last_loss
            turn = index
            while time.perf_counter() < stop_at:
                turn += 1
                first = (a, b)[turn % 2]
                answer = None
                # Asterisk does not know A died: it keeps trying A's address first.
                for attempt, instance in enumerate((first, b if first is a else a)):
                    answer, refused = await attempt_on(instance)
                    if answer is not None:
                        break
                    if instance is a and attempt == 0:
                        counts["refused_by_a" if refused else "lost_in_flight_on_a"] += 1
                        if not refused:
                            last_loss = time.perf_counter()
                counts["answered" if answer is not None else "unanswered"] += 1

        load = asyncio.gather(*(worker(i) for i in range(IN_FLIGHT)))
        await asyncio.sleep(2.0)
        a.process.kill()
        killed_at = time.perf_counter()
        await load
    result: dict[str, float] = {**counts}
    result["until_all_answered_ms"] = max(0.0, last_loss - killed_at) * 1000
    return result


async def puts(root: Path, db: str, name: str, total: int, instances: int) -> dict[str, float]:
    names = ("a", "b")[:instances]
    took: list[float] = []
    async with serving(db, root / name, names) as running, aiohttp.ClientSession() as http:
        remaining = iter(range(total))

        async def worker(slot: int) -> None:
            for n in remaining:  # shared: ``total`` PUTs in all
                instance = running[n % len(running)]
                _, seconds = await put(http, instance, f"client-{slot}", n)
                took.append(seconds)

        started = time.perf_counter()
        await asyncio.gather(*(worker(slot) for slot in range(IN_FLIGHT)))
        elapsed = time.perf_counter() - started
    ms = [t * 1000 for t in took]
    return {"rate": total / elapsed, "p50": pct(ms, 50), "p99": pct(ms, 99)}


async def main_async(args: argparse.Namespace) -> None:
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    with tempfile.TemporaryDirectory(prefix="multi-bench-") as tmp:
        root = Path(tmp)
        async with cluster() as pg:
            if "propagation" not in skip:
                took = [t * 1000 for t in await propagation(pg, root, args.changes)]
                print("\nPropagation: PUT acknowledged by A -> B's FastAGI answer names the new")
                print(
                    f"version ({len(took)} changes; B polled over FastAGI, session after session)"
                )
                print("\n| p50 ms | p90 ms | p99 ms | max ms |")
                print("|---:|---:|---:|---:|")
                print(
                    f"| {pct(took, 50):.2f} | {pct(took, 90):.2f} | {pct(took, 99):.2f} |"
                    f" {max(took):.2f} |",
                    flush=True,
                )
            if "failover" not in skip:
                f = await failover(pg, root)
                print(
                    f"\nFailover: {IN_FLIGHT} sessions in flight over A and B, A killed (SIGKILL)"
                )
                print(
                    "\n| answered | lost in flight on A (then answered by B) | refused by A"
                    " (then answered by B) | unanswered by both | kill -> last loss ms |"
                )
                print("|---:|---:|---:|---:|---:|")
                print(
                    f"| {f['answered']:.0f} | {f['lost_in_flight_on_a']:.0f} |"
                    f" {f['refused_by_a']:.0f} | {f['unanswered']:.0f} |"
                    f" {f['until_all_answered_ms']:.1f} |",
                    flush=True,
                )
            if "puts" not in skip:
                rows = [
                    ("SQLite, 1 instance", str(root / "sqlite.db"), 1),
                    ("PostgreSQL, 1 instance", pg.dsn(pg.create_database()), 1),
                    ("PostgreSQL, 2 instances", pg.dsn(pg.create_database()), 2),
                ]
                print(f"\nPUTs: {args.puts} PUTs, {IN_FLIGHT} in flight on {IN_FLIGHT} clients")
                print("\n| store | PUTs/s | p50 ms | p99 ms |")
                print("|---|---:|---:|---:|")
                for index, (label, db, count) in enumerate(rows):
                    r = await puts(root, db, f"puts-{index}", args.puts, count)
                    print(
                        f"| {label} | {r['rate']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} |",
                        flush=True,
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=1000, help="propagation changes")
    parser.add_argument("--puts", type=int, default=2000, help="PUTs per store")
    parser.add_argument("--skip", default="", help="comma-separated: propagation,failover,puts")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
