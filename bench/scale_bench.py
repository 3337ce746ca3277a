"""Clients at scale: how much memory and how long ``callgate serve`` takes for N stored clients.

    .venv/bin/python bench/scale_bench.py [--clients 10000,100000] [--stores sqlite,postgresql]

For each store and each N: a fresh database is filled with N typical clients (10 groups of 5
extensions, 50 in all, every group a pickup share group, two phone replace groups, one
supervisor per group with an eavesdrop and a whisper grant) directly through the store's
database handle, in batches (the rows a ``save`` writes). Then a real
``callgate serve --db …`` is started and timed from the spawn to its first ``/readyz`` 200; its
``VmRSS`` (resident now) and ``VmHWM`` (the peak) are read from ``/proc/<pid>/status`` once it
is ready, and again after one ``check`` per client on 1,000 clients (each of them compiled by its
first decision: what a cold client's first decision costs, seen from HTTP). PostgreSQL is a
private cluster (``tests/pg_cluster.py``, on a free loopback port), removed afterwards. Prints
a Markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the private PostgreSQL cluster of the tests

from callgate.domain import canonical_json  # noqa: E402
from callgate.policy import parse_document  # noqa: E402
from callgate.store import AnyStore, open_store  # noqa: E402
from callgate.store.db import Database  # noqa: E402
from pg_cluster import PgCluster, find_bindir  # noqa: E402
from support import free_port  # noqa: E402

TOKEN = "scale-bench-admin-token"  # noqa: S105 (a throwaway token for a loopback daemon)
BATCH = 5000
"""Clients written per transaction while filling."""
READY_WITHIN = 300.0
CHECKED = 1000


def typical_document(n: int) -> dict[str, object]:
    """Client ``n``'s policy: 10 groups of 5 extensions (the extensions differ per client)."""
    base = 100 + n % 800
    groups = {f"team-{g}": [str(base * 100 + g * 5 + e) for e in range(5)] for g in range(10)}
    names = list(groups)
    document: dict[str, object] = {
        "groups": groups,
        "pickup_share_groups": names,
        "phone_replace_groups": names[:2],
    }
    for index, name in enumerate(names):
        supervisor = groups[name][0]
        document[f"eavesdrop_{supervisor}"] = [name, names[(index + 1) % len(names)]]
        document[f"whisper_{supervisor}"] = [name]
    return document


def client_id(n: int) -> str:
    return f"client-{n:06}"


async def fill(target: str, clients: int) -> float:
    """Store ``clients`` typical clients in ``target`` (version 1 each); the seconds it took.

    Through the store's own database handle, ``BATCH`` clients a transaction, with the rows a
    ``save`` writes (the document as ``canonical_json``): one save per client would time the
    bench's fill (minutes for 100,000), not what is measured."""
    store = await open_store(target)
    started = time.perf_counter()
    now = datetime.now(UTC)
    texts = [canonical_json(parse_document(typical_document(n))) for n in range(800)]
    try:
        for first in range(0, clients, BATCH):
            rows = [
                (client_id(n), 1, texts[n % 800], now, "scale-bench")
                for n in range(first, min(first + BATCH, clients))
            ]
            await _insert(store, rows)
    finally:
        await store.close()
    return time.perf_counter() - started


_INSERT = (
    "INSERT INTO policy_versions (client_id, version, document, changed_at, changed_by)"
    " VALUES ({0}, {0}, {0}, {0}, {0})"
)


async def _insert(store: AnyStore, rows: list[tuple[str, int, str, datetime, str]]) -> None:
    db = store.db
    if isinstance(db, Database):
        text_rows = [(c, v, d, at.isoformat(), by) for c, v, d, at, by in rows]
        await db.write(lambda conn: conn.executemany(_INSERT.format("?"), text_rows))
        return
    async with db.transaction() as conn, conn.cursor() as cur:
        await cur.executemany(_INSERT.format("%s"), rows)
        await cur.executemany(
            "INSERT INTO policy_heads (client_id, version) VALUES (%s, %s)",
            [(c, v) for c, v, *_ in rows],
        )


def memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


@dataclass
class Row:
    store: str
    clients: int
    fill_s: float
    ready_s: float
    rss_mb: float
    hwm_mb: float
    after_rss_mb: float
    first_check_ms: tuple[float, float]
    again_check_ms: tuple[float, float]


def get(url: str) -> int:
    request = urllib.request.Request(  # noqa: S310 (loopback)
        url, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
            response.read()
            return int(response.status)
    except OSError:
        return 0


def checks(base: str, clients: int) -> tuple[float, float]:
    """One ``check`` on each of ``CHECKED`` clients spread over all: (p50, p99) in ms."""
    step = max(1, clients // CHECKED)
    took: list[float] = []
    for n in range(0, step * CHECKED, step):
        document = typical_document(n)
        ext = next(iter(document["groups"].values()))[1]  # type: ignore[attr-defined]
        url = f"{base}/client/{client_id(n)}/call_control_group/check?action=pickup&ext={ext}"
        started = time.perf_counter()
        if get(url) != 200:
            raise RuntimeError(f"check failed: {url}")
        took.append((time.perf_counter() - started) * 1000)
    cut = statistics.quantiles(took, n=100)
    return cut[49], cut[98]


def measure(store_name: str, target: str, clients: int, data_dir: Path, fill_s: float) -> Row:
    http_port = free_port()
    env = {**os.environ, "CALLGATE_ADMIN_TOKEN": TOKEN, "CALLGATE_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "callgate", "serve", "--db", target]
    command += ["--data-dir", str(data_dir), "--http", f"127.0.0.1:{http_port}"]
    command += ["--agi", f"127.0.0.1:{free_port()}"]
    base = f"http://127.0.0.1:{http_port}"
    with (data_dir / "serve.log").open("ab") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        deadline = started + READY_WITHIN
        while get(f"{base}/readyz") != 200:
            if process.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"serve did not get ready: see {data_dir / 'serve.log'}")
            time.sleep(0.02)
        ready_s = time.perf_counter() - started
        rss, hwm = memory(process.pid)
        first = checks(base, clients)
        again = checks(base, clients)
        after_rss, _ = memory(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return Row(store_name, clients, fill_s, ready_s, rss, hwm, after_rss, first, again)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="10000,100000", help="comma-separated counts")
    parser.add_argument("--stores", default="sqlite,postgresql", help="comma-separated")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",") if c.strip()]
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    cluster: PgCluster | None = None
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        try:
            for store_name in stores:
                if store_name == "postgresql" and cluster is None:
                    bindir = find_bindir()
                    if bindir is None:
                        raise SystemExit("no PostgreSQL binaries: apt-get install postgresql")
                    cluster = PgCluster(bindir)
                    cluster.start()
                for clients in counts:
                    data_dir = Path(tmp) / f"{store_name}-{clients}"
                    data_dir.mkdir()
                    if cluster is not None and store_name == "postgresql":
                        target = cluster.dsn(cluster.create_database())
                    else:
                        target = str(data_dir / "callgate.sqlite3")
                    fill_s = asyncio.run(fill(target, clients))
                    row = measure(store_name, target, clients, data_dir, fill_s)
                    rows.append(row)
                    print(f"  {row}", file=sys.stderr)
        finally:
            if cluster is not None:
                cluster.stop()
    print(f"\n`callgate serve` with N typical clients (10 groups, 50 extensions); {CHECKED} checks")
    print(
        "\n| store | clients | fill s | ready s | VmRSS MB at ready | VmHWM MB |"
        " VmRSS MB after checks | first check p50/p99 ms | again p50/p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.store} | {r.clients:,} | {r.fill_s:.1f} | {r.ready_s:.2f} | {r.rss_mb:.0f} |"
            f" {r.hwm_mb:.0f} | {r.after_rss_mb:.0f} |"
            f" {r.first_check_ms[0]:.2f} / {r.first_check_ms[1]:.2f} |"
            f" {r.again_check_ms[0]:.2f} / {r.again_check_ms[1]:.2f} |"
        )


if __name__ == "__main__":
    main()
