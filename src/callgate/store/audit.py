"""``ports.AuditStore`` on SQLite: the audit log's rows, written a batch (or a row) at a time.

The queue, the batching timer and the row-by-row retry are ``callgate.audit.AuditLog``'s; this
module only writes what it is handed. ``write_batch`` is one transaction with multi-row INSERTs;
``write_each`` puts each row in a savepoint of one transaction, so only the rows the store
refuses are lost.

Retention (``prune``): events older than ``max_age`` and beyond the newest ``max_rows`` are
deleted ``PRUNE_BATCH`` rows a transaction, so a pruning never holds the writer for long (audit
writes and policy changes take their turn between two batches).

Listen/whisper sessions: the Manager side records a session's start and end as events with
``started`` / ``ended`` + ``end_reason`` set. They do not become rows of their own: they complete
the row of the decision that allowed the session (same client, action and uniqueid), so one row
tells the whole story. If that row is not there (another instance decided), the event is stored
as a row of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import Final

from callgate.audit import SESSION_ACTIONS, AuditEvent, EndReason
from callgate.domain import AuditRetention
from callgate.store.db import Database

__all__ = ["PRUNE_BATCH", "SESSION_ACTIONS", "AuditRepository", "AuditRetention"]

log = logging.getLogger(__name__)


def _us(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return round(value.timestamp() * 1_000_000)


def _dt(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1_000_000, UTC)


def _event(row: sqlite3.Row) -> AuditEvent:
    """A row read back as the event it records (session start and end included)."""
    extra = json.loads(row["extra"])
    return AuditEvent(
        time=_dt(row["time_us"]) or datetime.fromtimestamp(0, UTC),
        client_id=row["client_id"],
        action=row["action"],
        ext=row["ext"],
        target=row["target"],
        decision=row["decision"],
        reason=row["reason"],
        policy_version=row["policy_version"],
        uniqueid=row["uniqueid"],
        channel=row["channel"],
        extra=tuple((str(k), str(v)) for k, v in extra.items()),
        started=_dt(row["started_us"]),
        ended=_dt(row["ended_us"]),
        end_reason=EndReason(row["end_reason"]) if row["end_reason"] else None,
    )


PRUNE_BATCH: Final = 500
"""Rows one pruning transaction deletes at most (a few milliseconds of the writer)."""


class AuditRepository:
    """``ports.AuditStore`` on SQLite: the rows only (``callgate.audit.AuditLog`` batches)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def write_batch(self, events: Sequence[AuditEvent]) -> None:
        """Every event in one transaction, or none."""
        await self._db.write(partial(_insert, events=events))

    async def write_each(self, events: Sequence[AuditEvent]) -> list[tuple[AuditEvent, str]]:
        """Each event in a savepoint of one transaction; the refused ones with their reason."""
        return await self._db.write(partial(_insert_each, events=events))

    async def prune(self, retention: AuditRetention, now: datetime | None = None) -> int:
        """Delete what ``retention`` does not keep, ``PRUNE_BATCH`` rows a transaction; the
        number of rows deleted."""
        deleted = 0
        if retention.max_age is not None:
            cutoff = _us((now or datetime.now(UTC)) - retention.max_age)
            deleted += await self._prune_batches(partial(_delete_older, cutoff=cutoff))
        if retention.max_rows is not None:
            deleted += await self._prune_batches(partial(_delete_beyond, keep=retention.max_rows))
        if deleted:
            log.info("audit: %d event(s) pruned", deleted)
        return deleted

    async def _prune_batches(self, delete: partial[int]) -> int:
        deleted = 0
        while True:
            count = await self._db.write(delete)
            deleted += count
            if count == 0:
                return deleted
            await asyncio.sleep(0)  # what waits for the writer goes before the next batch

    # ---------------------------------------------------------------- reading

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
        """Newest first. ``ext`` matches the acting extension or the target."""
        where, args = audit_filter("?", client_id, since=since, until=until, ext=ext, action=action)
        sql = (
            f"SELECT * FROM audit_events WHERE {where}"  # noqa: S608 - fixed clauses
            " ORDER BY time_us DESC, id DESC LIMIT ?"
        )
        args.append(limit)
        rows = await self._db.read(lambda conn: conn.execute(sql, args).fetchall())
        return tuple(_event(row) for row in rows)


def audit_filter(
    mark: str,
    client_id: str,
    *,
    since: datetime | None,
    until: datetime | None,
    ext: str | None,
    action: str | None,
) -> tuple[str, list[object]]:
    """The WHERE clause of an audit query and its arguments, with ``mark`` as the placeholder
    (``?`` for SQLite, ``%s`` for psycopg): one filter for both stores."""
    where = [f"client_id = {mark}"]
    args: list[object] = [client_id]
    if since is not None:
        where.append(f"time_us >= {mark}")
        args.append(_us(since))
    if until is not None:
        where.append(f"time_us <= {mark}")
        args.append(_us(until))
    if ext is not None:
        where.append(f"(ext = {mark} OR target = {mark})")
        args += [ext, ext]
    if action is not None:
        where.append(f"action = {mark}")
        args.append(action)
    return " AND ".join(where), args


_INSERT = """
    INSERT INTO audit_events (time_us, client_id, action, ext, target, decision, reason,
        policy_version, uniqueid, channel, extra, started_us, ended_us, end_reason)
    VALUES """
_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _insert(conn: sqlite3.Connection, events: Sequence[AuditEvent]) -> None:
    """Insert ``events`` in order: plain decisions many rows to one statement, session starts and
    ends (which complete an earlier row) one by one where they come."""
    rows: list[AuditEvent] = []
    for event in events:
        if event.started is not None or event.ended is not None:
            _insert_rows(conn, rows)
            rows.clear()
            if _complete_session(conn, event):
                continue
        rows.append(event)
    _insert_rows(conn, rows)


_ROWS_PER_STATEMENT = 100


def _insert_rows(conn: sqlite3.Connection, events: list[AuditEvent]) -> None:
    # One multi-row INSERT instead of executemany: sqlite3 then releases and takes back the GIL
    # once per statement rather than once per row, which under load made the event loop thread
    # hand the GIL over hundreds of times per batch.
    for first in range(0, len(events), _ROWS_PER_STATEMENT):
        chunk = events[first : first + _ROWS_PER_STATEMENT]
        conn.execute(_insert_statement(len(chunk)), [v for e in chunk for v in _row(e)])


@lru_cache(maxsize=_ROWS_PER_STATEMENT)
def _insert_statement(rows: int) -> str:
    return _INSERT + ",".join([_VALUES] * rows)


def _row(event: AuditEvent) -> tuple[object, ...]:
    return (
        _us(event.time),
        event.client_id,
        str(event.action),
        event.ext,
        event.target,
        event.decision,
        str(event.reason),
        event.policy_version,
        event.uniqueid,
        event.channel,
        json.dumps(dict(event.extra)) if event.extra else "{}",
        _us(event.started),
        _us(event.ended),
        event.end_reason.value if event.end_reason else None,
    )


def _insert_each(
    conn: sqlite3.Connection, events: Sequence[AuditEvent]
) -> list[tuple[AuditEvent, str]]:
    """Insert ``events`` one by one, each in a savepoint; the refused ones with their reason."""
    refused: list[tuple[AuditEvent, str]] = []
    for event in events:
        conn.execute("SAVEPOINT audit_row")
        try:
            _insert(conn, [event])
        except Exception as exc:  # noqa: BLE001 - the reason is kept and reported per row
            conn.execute("ROLLBACK TO audit_row")
            refused.append((event, f"{type(exc).__name__}: {exc}"))
        conn.execute("RELEASE audit_row")
    return refused


def _delete_older(conn: sqlite3.Connection, cutoff: int | None) -> int:
    # Looks at the oldest PRUNE_BATCH rows by id only (ids grow with time): a pruning never
    # scans the table, and stops at the first batch with nothing old enough.
    return conn.execute(
        "DELETE FROM audit_events WHERE id IN (SELECT id FROM (SELECT id, time_us FROM"
        " audit_events ORDER BY id LIMIT ?) WHERE time_us < ?)",
        (PRUNE_BATCH, cutoff),
    ).rowcount


def _delete_beyond(conn: sqlite3.Connection, keep: int) -> int:
    # Ids are never reused and only the oldest rows are deleted, so every row below
    # MAX(id) - keep is beyond the newest ``keep``.
    (newest,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM audit_events").fetchone()
    return conn.execute(
        "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE id <= ?"
        " ORDER BY id LIMIT ?)",
        (newest - keep, PRUNE_BATCH),
    ).rowcount


def _complete_session(conn: sqlite3.Connection, event: AuditEvent) -> bool:
    """Add a session's start or end to its allowing decision's row; False if there is none."""
    row = conn.execute(
        "SELECT id, extra FROM audit_events WHERE client_id = ? AND uniqueid = ? AND action = ?"
        " AND decision = 'allow' ORDER BY id DESC LIMIT 1",
        (event.client_id, event.uniqueid, str(event.action)),
    ).fetchone()
    if row is None:
        return False
    extra = json.loads(row["extra"])
    extra.update(event.extra)
    conn.execute(
        "UPDATE audit_events SET started_us = COALESCE(?, started_us),"
        " ended_us = COALESCE(?, ended_us), end_reason = COALESCE(?, end_reason),"
        " channel = COALESCE(channel, ?), extra = ? WHERE id = ?",
        (
            _us(event.started),
            _us(event.ended),
            event.end_reason.value if event.end_reason else None,
            event.channel,
            json.dumps(extra),
            row["id"],
        ),
    )
    return True
