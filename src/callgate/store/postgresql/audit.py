"""``ports.AuditStore`` on PostgreSQL: the audit log's rows, a batch (or a row) at a time.

The same rows as the SQLite store's (times in microseconds, ``extra`` as JSON text), so the two
read back alike. ``write_batch`` is one transaction of multi-row INSERTs; ``write_each`` puts
each row in a savepoint of one transaction. A session start or end completes its allowing row
under ``FOR UPDATE``, so two instances completing one row both land. Pruning deletes
``PRUNE_BATCH`` rows a transaction and skips rows another instance's pruning holds (``SKIP
LOCKED``): two prunings never wait on each other.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import psycopg

from callgate.audit import AuditEvent, EndReason
from callgate.domain import AuditRetention
from callgate.store.audit import _dt, _row, _us, audit_filter  # the same rows as SQLite's
from callgate.store.postgresql.db import Connection, PgDatabase, translate

__all__ = ["PRUNE_BATCH", "PgAuditRepository"]

log = logging.getLogger(__name__)

PRUNE_BATCH: Final = 500
"""Rows one pruning transaction deletes at most."""

_ROWS_PER_STATEMENT: Final = 500

_COLUMNS: Final = (
    "time_us, client_id, action, ext, target, decision, reason, policy_version, uniqueid,"
    " channel, extra, started_us, ended_us, end_reason"
)


def _event(row: tuple[Any, ...]) -> AuditEvent:
    (time_us, client_id, action, ext, target, decision, reason, policy_version, uniqueid) = row[:9]
    channel, extra, started_us, ended_us, end_reason = row[9:]
    facts = json.loads(extra)
    return AuditEvent(
        time=_dt(time_us) or datetime.fromtimestamp(0, UTC),
        client_id=client_id,
        action=action,
        ext=ext,
        target=target,
        decision=decision,
        reason=reason,
        policy_version=int(policy_version),
        uniqueid=uniqueid,
        channel=channel,
        extra=tuple((str(k), str(v)) for k, v in facts.items()),
        started=_dt(started_us),
        ended=_dt(ended_us),
        end_reason=EndReason(end_reason) if end_reason else None,
    )


_INSERT_ROWS: Final = (
    f"INSERT INTO audit_events ({_COLUMNS})"  # noqa: S608 - constants
    " SELECT (r->>0)::bigint, r->>1, r->>2, r->>3, r->>4, r->>5, r->>6, (r->>7)::bigint,"
    " r->>8, r->>9, r->>10, (r->>11)::bigint, (r->>12)::bigint, r->>13"
    " FROM json_array_elements(%s::json) WITH ORDINALITY AS rows(r, n) ORDER BY n"
)
"""Many rows in one parameter: the rows as one JSON array (encoded by ``json.dumps``, in C) that
PostgreSQL unpacks. Adapting 14 parameters a row in Python, on the event loop, cost more CPU per
FastAGI session than the whole decision (``bench/agi_bench.py --db postgresql``)."""


async def _insert_rows(conn: Connection, events: list[AuditEvent]) -> None:
    for first in range(0, len(events), _ROWS_PER_STATEMENT):
        chunk = events[first : first + _ROWS_PER_STATEMENT]
        await conn.execute(_INSERT_ROWS, (json.dumps([_row(event) for event in chunk]),))


async def _insert(conn: Connection, events: Sequence[AuditEvent]) -> None:
    """Insert ``events`` in order: plain decisions many rows to a statement, session starts and
    ends (which complete an earlier row) one by one where they come."""
    rows: list[AuditEvent] = []
    for event in events:
        if event.started is not None or event.ended is not None:
            await _insert_rows(conn, rows)
            rows.clear()
            if await _complete_session(conn, event):
                continue
        rows.append(event)
    await _insert_rows(conn, rows)


async def _complete_session(conn: Connection, event: AuditEvent) -> bool:
    """Add a session's start or end to its allowing decision's row; False if there is none."""
    cur = await conn.execute(
        "SELECT id, extra FROM audit_events WHERE client_id = %s AND uniqueid = %s"
        " AND action = %s AND decision = 'allow' ORDER BY id DESC LIMIT 1 FOR UPDATE",
        (event.client_id, event.uniqueid, str(event.action)),
    )
    row = await cur.fetchone()
    if row is None:
        return False
    extra = json.loads(row[1])
    extra.update(event.extra)
    await conn.execute(
        "UPDATE audit_events SET started_us = COALESCE(%s, started_us),"
        " ended_us = COALESCE(%s, ended_us), end_reason = COALESCE(%s, end_reason),"
        " channel = COALESCE(channel, %s), extra = %s WHERE id = %s",
        (
            _us(event.started),
            _us(event.ended),
            event.end_reason.value if event.end_reason else None,
            event.channel,
            json.dumps(extra),
            row[0],
        ),
    )
    return True


class PgAuditRepository:
    """``ports.AuditStore`` on PostgreSQL."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def write_batch(self, events: Sequence[AuditEvent]) -> None:
        async with self._db.transaction() as conn:
            await _insert(conn, events)

    async def write_each(self, events: Sequence[AuditEvent]) -> list[tuple[AuditEvent, str]]:
        refused: list[tuple[AuditEvent, str]] = []
        async with self._db.transaction() as conn:
            for event in events:
                try:
                    async with conn.transaction():  # a savepoint
                        await _insert(conn, [event])
                except psycopg.OperationalError:
                    raise  # the connection is gone: no row can be written
                except (psycopg.Error, ValueError, TypeError) as exc:
                    reason = translate(exc) if isinstance(exc, psycopg.Error) else exc
                    refused.append((event, f"{type(exc).__name__}: {reason}"))
        return refused

    async def prune(self, retention: AuditRetention, now: datetime | None = None) -> int:
        deleted = 0
        if retention.max_age is not None:
            cutoff = _us((now or datetime.now(UTC)) - retention.max_age)
            deleted += await self._prune_batches(
                "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE id IN"
                " (SELECT id FROM audit_events ORDER BY id LIMIT %s) AND time_us < %s"
                " FOR UPDATE SKIP LOCKED)",
                (PRUNE_BATCH, cutoff),
            )
        if retention.max_rows is not None:
            async with self._db.connection() as conn:
                cur = await conn.execute("SELECT COALESCE(MAX(id), 0) FROM audit_events")
                row = await cur.fetchone()
            newest = int(row[0]) if row else 0
            # Ids only grow and only the oldest rows go, so every id <= newest - keep is beyond.
            deleted += await self._prune_batches(
                "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events"
                " WHERE id <= %s ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)",
                (newest - retention.max_rows, PRUNE_BATCH),
            )
        if deleted:
            log.info("audit: %d event(s) pruned", deleted)
        return deleted

    async def _prune_batches(self, sql: str, args: tuple[object, ...]) -> int:
        deleted = 0
        while True:
            async with self._db.connection() as conn:
                cur = await conn.execute(sql, args)
                count = cur.rowcount
            deleted += count
            if count <= 0:
                return deleted
            await asyncio.sleep(0)

    async def list(
        self,
        client_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        ext: str | None = None,
        action: str | None = None,
        limit: int = 1000,
    ) -> tuple[AuditEvent, ...]:
        where, args = audit_filter(
            "%s", client_id, since=since, until=until, ext=ext, action=action
        )
        sql = (
            f"SELECT {_COLUMNS} FROM audit_events WHERE {where}"  # noqa: S608
            " ORDER BY time_us DESC, id DESC LIMIT %s"
        )
        args.append(limit)
        async with self._db.connection() as conn:
            cur = await conn.execute(sql, args)
            rows = await cur.fetchall()
        return tuple(_event(row) for row in rows)
