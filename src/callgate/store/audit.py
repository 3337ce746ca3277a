"""The audit log: what was decided and what happened, kept in the shared database.

``AuditRepository`` is the daemon's ``AuditSink``: ``record()`` only appends the event to a
bounded in-memory list (it never blocks a phone and never raises). The events are written in
batches, one transaction (``executemany``) per batch: a write starts ``flush_interval`` seconds
after the first unwritten event, or at once when ``batch_size`` are waiting, so under load one
durable COMMIT carries many decisions instead of one each. ``flush()`` and ``close()`` write
everything recorded so far; a clean stop loses nothing, a crash at most the last
``flush_interval`` seconds. If the list is full or the store fails, events are dropped and
counted (``lost``) with a log line: the decision itself has already been answered.

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
from datetime import UTC, datetime
from functools import lru_cache, partial

from callgate.audit import AuditEvent, EndReason
from callgate.store.db import Database

log = logging.getLogger(__name__)

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS audit_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time_us INTEGER NOT NULL,
        client_id TEXT NOT NULL,
        action TEXT NOT NULL,
        ext TEXT NOT NULL,
        target TEXT,
        decision TEXT NOT NULL,
        reason TEXT NOT NULL,
        policy_version INTEGER NOT NULL,
        uniqueid TEXT,
        channel TEXT,
        extra TEXT NOT NULL DEFAULT '{}',
        started_us INTEGER,
        ended_us INTEGER,
        end_reason TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS audit_events_by_time ON audit_events (client_id, time_us)",
    "CREATE INDEX IF NOT EXISTS audit_events_by_uniqueid ON audit_events (client_id, uniqueid)",
)

SESSION_ACTIONS = frozenset({"eavesdrop", "whisper"})


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


class AuditRepository:
    """The audit log on the shared database; also the daemon's ``AuditSink``."""

    def __init__(
        self,
        db: Database,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.1,
    ) -> None:
        self._db = db
        self._pending: list[AuditEvent] = []
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self.lost = 0
        """Events dropped (list full, store error, or recorded after close)."""

    # ---------------------------------------------------------------- AuditSink

    def record(self, event: AuditEvent) -> None:
        """Keep ``event`` for the next batch; never blocks, never raises."""
        if self._closed:
            self.lost += 1
            log.warning("audit event recorded after close, dropped: %s", event)
            return
        pending = self._pending
        if len(pending) >= self._queue_size:
            self.lost += 1
            log.error("audit queue full, event dropped (%d lost so far): %s", self.lost, event)
            return
        pending.append(event)
        if self._writer is not None:
            return  # the running write schedules the next one
        try:
            self._schedule()
        except Exception:  # no running loop: flush() or close() will write it
            log.exception("audit: could not schedule a write")

    async def flush(self) -> None:
        """Return once every event recorded so far is written (or counted as lost)."""
        while self._pending or self._writer is not None:
            if self._writer is None:
                self._start_writer()
            assert self._writer is not None
            # Shielded: a cancelled caller must not cancel a batch half-way to the store.
            await asyncio.shield(self._writer)

    async def close(self) -> None:
        """Write what is pending; later events are dropped."""
        self._closed = True
        await self.flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _start_writer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writer is None and self._pending:
            loop = asyncio.get_running_loop()
            self._writer = loop.create_task(self._write_pending(), name="audit-writer")

    async def _write_pending(self) -> None:
        try:
            batch, self._pending = self._pending, []
            for first in range(0, len(batch), self._batch_size):
                events = batch[first : first + self._batch_size]
                try:
                    await self._db.write(partial(_insert, events=events))
                except Exception:
                    self.lost += len(events)
                    log.exception("audit: %d event(s) could not be written", len(events))
        finally:
            self._writer = None
            if self._pending and not self._closed:
                self._schedule()  # what arrived during the write

    def _schedule(self) -> None:
        """Write now if a batch is full, else in ``flush_interval`` seconds."""
        if len(self._pending) >= self._batch_size:
            self._start_writer()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._flush_interval, self._start_writer)

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
        where = ["client_id = ?"]
        args: list[object] = [client_id]
        if since is not None:
            where.append("time_us >= ?")
            args.append(_us(since))
        if until is not None:
            where.append("time_us <= ?")
            args.append(_us(until))
        if ext is not None:
            where.append("(ext = ? OR target = ?)")
            args += [ext, ext]
        if action is not None:
            where.append("action = ?")
            args.append(action)
        sql = (
            f"SELECT * FROM audit_events WHERE {' AND '.join(where)}"  # noqa: S608 - fixed clauses
            " ORDER BY time_us DESC, id DESC LIMIT ?"
        )
        args.append(limit)
        rows = await self._db.read(lambda conn: conn.execute(sql, args).fetchall())
        return tuple(_event(row) for row in rows)


_INSERT = """
    INSERT INTO audit_events (time_us, client_id, action, ext, target, decision, reason,
        policy_version, uniqueid, channel, extra, started_us, ended_us, end_reason)
    VALUES """
_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _insert(conn: sqlite3.Connection, events: list[AuditEvent]) -> None:
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
