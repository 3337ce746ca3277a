"""No audit event takes another down, and the audit log does not grow without end: values made
storable before they are queued, a failed batch written again row by row, retention by age and
by row count, pruned in small transactions."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

from callgate.audit import AuditEvent, AuditLog
from callgate.config import Settings
from callgate.logs import FIELD_LIMIT
from callgate.store.audit import PRUNE_BATCH, AuditRepository, AuditRetention
from callgate.store.db import Database

from .conftest import CountingDatabase

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def event(n: int, client: str = "acme", *, time: datetime = NOW, **changes: object) -> AuditEvent:
    base = AuditEvent(time, client, "pickup", "105", None, "allow", "pickup_all", 1, f"u{n}")
    return base._replace(**changes)


def rows(db: Database) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db.path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM audit_events ORDER BY id").fetchall()
    finally:
        conn.close()


async def test_a_row_the_store_refuses_is_lost_alone_and_counted(db: CountingDatabase) -> None:
    audit = AuditLog(AuditRepository(db), flush_interval=60)
    for n in range(20):
        audit.record(event(n, "acme" if n % 2 else "globex"))
        if n == 10:  # sqlite3 cannot bind an integer this large: a real refusal, mid-batch
            audit.record(event(99, policy_version=2**63, uniqueid="refused"))
    await audit.flush()
    stored = rows(db)
    assert len(stored) == 20
    assert "refused" not in {row["uniqueid"] for row in stored}
    assert [row["uniqueid"] for row in stored] == [f"u{n}" for n in range(20)]  # order kept
    assert audit.lost == 1
    assert audit.lost_counts() == {"rejected": 1}
    assert db.writes == 2  # the failed batch, then one transaction for its rows one by one


async def test_values_that_were_not_utf8_are_stored_escaped_and_bounded(
    db: CountingDatabase,
) -> None:
    audit = AuditLog(AuditRepository(db), flush_interval=60)
    bad = b"1\xff0".decode("utf-8", "surrogateescape")
    audit.record(
        event(
            1,
            ext=bad,
            target=bad * 5000,
            uniqueid="17\xfe".encode("latin-1").decode("utf-8", "surrogateescape"),
            channel="PJSIP/x " + "\U0001f600" * 100,
            extra=(("phone", bad),),
        )
    )
    audit.record(event(2))
    await audit.flush()
    assert audit.lost == 0
    first, second = rows(db)
    assert first["ext"] == "'1\\udcff0'"
    assert first["uniqueid"] == "'17\\udcfe'"
    assert first["target"].startswith("'1\\udcff01\\udcff0")
    assert first["target"].endswith("'...")
    assert len(first["target"]) <= FIELD_LIMIT
    assert first["channel"].startswith("'PJSIP/x \\U0001f600")
    assert len(first["channel"]) <= FIELD_LIMIT
    assert first["extra"] == '{"phone": "\'1\\\\udcff0\'"}'
    assert (second["ext"], second["uniqueid"]) == ("105", "u2")  # plain values stay as they are
    (read,) = await audit.list("acme", ext="'1\\udcff0'")  # and can be searched for escaped
    assert read.uniqueid == "'17\\udcfe'"


async def test_max_rows_keeps_the_newest_and_deletes_in_small_transactions(
    db: CountingDatabase,
) -> None:
    audit = AuditLog(AuditRepository(db), batch_size=1000, flush_interval=60)
    total = 2 * PRUNE_BATCH + 200
    for n in range(total):
        audit.record(event(n))
    await audit.flush()
    writes = db.writes
    deleted = await audit.prune(AuditRetention(max_rows=100), now=NOW)
    assert deleted == total - 100
    assert [row["uniqueid"] for row in rows(db)] == [f"u{n}" for n in range(total - 100, total)]
    assert db.writes - writes == 4  # 500 + 500 + 100 rows, then one that found nothing
    assert await audit.prune(AuditRetention(max_rows=100), now=NOW) == 0


async def test_max_age_deletes_the_old_events_only(db: CountingDatabase) -> None:
    audit = AuditLog(AuditRepository(db), flush_interval=60)
    for n in range(30):
        audit.record(event(n, time=NOW - timedelta(days=40 - n)))  # 40 to 11 days old
    await audit.flush()
    retention = AuditRetention(max_age=timedelta(days=20))
    assert await audit.prune(retention, now=NOW) == 20
    assert {row["uniqueid"] for row in rows(db)} == {f"u{n}" for n in range(20, 30)}


async def test_pruning_runs_in_the_background_until_close(db: CountingDatabase) -> None:
    audit = AuditLog(AuditRepository(db), flush_interval=60)
    for n in range(10):
        audit.record(event(n))
    await audit.flush()
    audit.start_pruning(AuditRetention(max_rows=3, interval=0.01))
    for _ in range(200):  # bounded: the pruner runs at once
        if len(rows(db)) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(rows(db)) == 3
    await audit.close()
    assert audit._pruner is None


def test_retention_from_settings_zero_means_no_bound() -> None:
    assert AuditRetention.from_settings(Settings(audit_max_age_days=0, audit_max_rows=0)) == (
        AuditRetention(None, None, 60.0)
    )
    retention = AuditRetention.from_settings(
        Settings(audit_max_age_days=7, audit_max_rows=10, audit_prune_interval=5)
    )
    assert retention == AuditRetention(timedelta(days=7), 10, 5.0)
