"""The audit log: what was decided and what happened, kept in the shared database.

``AuditRepository`` is the daemon's ``AuditSink``: ``record()`` only appends the event to a
bounded in-memory list (it never blocks a phone and never raises). The events are written in
batches, one transaction (``executemany``) per batch: a write starts ``flush_interval`` seconds
after the first unwritten event, or at once when ``batch_size`` are waiting, so under load one
durable COMMIT carries many decisions instead of one each. ``flush()`` and ``close()`` write
everything recorded so far; a clean stop loses nothing, a crash at most the last
``flush_interval`` seconds. If the list is full or the store fails, events are dropped and
counted (``lost``, ``lost_counts()`` by reason) with a log line: the decision itself has
already been answered.

No event takes another down: every caller-supplied value (client, extension, target, uniqueid,
channel, extra facts) is made storable before it is queued (``logs.printable``: escaped, so a
byte that was not UTF-8 is no surrogate SQLite refuses, and at most ``FIELD_LIMIT`` characters),
and a batch that fails anyway is written again row by row, each row in a savepoint of one
transaction: only the rows that still fail are lost, each logged with its reason and counted as
``rejected``.

Retention (``start_pruning``): events older than ``max_age`` and beyond the newest ``max_rows``
are deleted periodically, ``PRUNE_BATCH`` rows a transaction, so a pruning never holds the
writer for long (audit writes and policy changes take their turn between two batches).

Listen/whisper sessions: the Manager side records a session's start and end as events with
``started`` / ``ended`` + ``end_reason`` set. They do not become rows of their own: they complete
the row of the decision that allowed the session (same client, action and uniqueid), so one row
tells the whole story. If that row is not there (another instance decided), the event is stored
as a row of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import Final

from callgate.audit import SESSION_ACTIONS, AuditEvent, EndReason
from callgate.domain import AuditRetention
from callgate.logs import FIELD_LIMIT, is_plain, printable
from callgate.store.db import Database

__all__ = ["PRUNE_BATCH", "SCHEMA", "SESSION_ACTIONS", "AuditRepository", "AuditRetention"]

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


def storable(event: AuditEvent) -> AuditEvent:
    """``event`` with every caller-supplied text as ``printable`` makes it (the same event when
    they all are already: the usual case, one regex match for them all)."""
    target, uniqueid, channel = event.target, event.uniqueid, event.channel
    together = f"{event.client_id}{event.ext}{target or ''}{uniqueid or ''}{channel or ''}"
    if not event.extra and len(together) <= FIELD_LIMIT and is_plain(together):
        return event  # each value is plain and shorter than the limit: what printable keeps
    p = printable
    client_id, ext, extra = p(event.client_id), p(event.ext), event.extra
    if target is not None:
        target = p(target)
    if uniqueid is not None:
        uniqueid = p(uniqueid)
    if channel is not None:
        channel = p(channel)
    if extra:
        extra = tuple((p(key), p(value)) for key, value in extra)
    if (
        client_id is event.client_id
        and ext is event.ext
        and target is event.target
        and uniqueid is event.uniqueid
        and channel is event.channel
        and extra == event.extra
    ):
        return event
    return event._replace(
        client_id=client_id,
        ext=ext,
        target=target,
        uniqueid=uniqueid,
        channel=channel,
        extra=extra,
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
        self._pruner: asyncio.Task[None] | None = None
        self.lost = 0
        """Events dropped (list full, store error, rejected by the store, recorded after close)."""
        self._lost: dict[str, int] = {}

    def lost_counts(self) -> Mapping[str, int]:
        """Events lost so far by reason: ``queue_full``, ``closed``, ``store_error`` (the store
        failed the whole batch), ``rejected`` (the store refused that very row)."""
        return dict(self._lost)

    def _count_lost(self, reason: str, count: int = 1) -> None:
        self.lost += count
        self._lost[reason] = self._lost.get(reason, 0) + count

    # ---------------------------------------------------------------- AuditSink

    def record(self, event: AuditEvent) -> None:
        """Keep ``event`` for the next batch; never blocks, never raises."""
        try:
            event = storable(event)
        except Exception:  # not text at all: queued as is, the row-by-row retry has the last word
            log.exception("audit: event values not checked: %r", event)
        if self._closed:
            self._count_lost("closed")
            log.warning("audit event recorded after close, dropped: %s", event)
            return
        pending = self._pending
        if len(pending) >= self._queue_size:
            self._count_lost("queue_full")
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
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
            self._pruner = None
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
                    log.warning("audit: a batch failed, writing it row by row", exc_info=True)
                    await self._write_each(events)
        finally:
            self._writer = None
            if self._pending and not self._closed:
                self._schedule()  # what arrived during the write

    async def _write_each(self, events: list[AuditEvent]) -> None:
        """``events`` one row a savepoint, in one transaction: a row the store refuses is lost
        alone (logged with its reason, counted ``rejected``), the others are written."""
        try:
            refused = await self._db.write(partial(_insert_each, events=events))
        except Exception:
            self._count_lost("store_error", len(events))
            log.exception("audit: %d event(s) could not be written", len(events))
            return
        for event, reason in refused:
            self._count_lost("rejected")
            log.error("audit: event refused by the store (%s): %r", reason, event)

    def _schedule(self) -> None:
        """Write now if a batch is full, else in ``flush_interval`` seconds."""
        if len(self._pending) >= self._batch_size:
            self._start_writer()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._flush_interval, self._start_writer)

    # ---------------------------------------------------------------- retention

    def start_pruning(self, retention: AuditRetention) -> None:
        """Prune now and every ``retention.interval`` seconds until ``close()``."""
        if retention.max_age is None and retention.max_rows is None:
            return
        if self._pruner is None:
            self._pruner = asyncio.get_running_loop().create_task(
                self._keep_pruning(retention), name="audit-pruner"
            )

    async def _keep_pruning(self, retention: AuditRetention) -> None:
        while True:
            try:
                await self.prune(retention)
            except Exception:
                log.exception("audit: pruning failed; trying again later")
            await asyncio.sleep(retention.interval)

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


def _insert_each(
    conn: sqlite3.Connection, events: list[AuditEvent]
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
