"""The audit writer's batching: one transaction carries many events, a quiet period still writes
what was recorded, and nothing recorded before a clean stop is lost."""

from __future__ import annotations

from datetime import UTC, datetime

from callgate.audit import AuditEvent, AuditLog
from callgate.store.audit import AuditRepository
from support import wait_until

from .conftest import CountingDatabase


def event(n: int) -> AuditEvent:
    return AuditEvent(
        datetime.now(UTC), "acme", "pickup", "105", None, "allow", "pickup_all", 1, f"u{n}"
    )


async def test_one_transaction_carries_every_event_recorded_before_it(
    db: CountingDatabase,
) -> None:
    audit = AuditLog(AuditRepository(db), flush_interval=60)
    for n in range(250):
        audit.record(event(n))
    assert db.writes == 0  # nothing written per event
    await audit.flush()
    assert db.writes == 1
    assert len(await audit.list("acme", limit=1000)) == 250


async def test_a_quiet_period_writes_what_was_recorded_without_a_flush(
    db: CountingDatabase,
) -> None:
    audit = AuditLog(AuditRepository(db), flush_interval=0.02)
    audit.record(event(1))
    await wait_until(lambda: audit.list("acme"))  # polls the store under test
    assert db.writes == 1
    await audit.close()


async def test_a_full_batch_is_written_at_once_and_close_writes_the_rest(
    db: CountingDatabase,
) -> None:
    audit = AuditLog(AuditRepository(db), batch_size=10, flush_interval=60)
    for n in range(25):
        audit.record(event(n))
    # The tenth event started a write, no timer needed.
    await wait_until(lambda: db.writes != 0)
    await audit.close()
    assert len(await audit.list("acme", limit=1000)) == 25
    assert audit.lost == 0
    audit.record(event(99))  # after close: dropped and counted, never raised
    assert audit.lost == 1
