"""What was decided and what happened, as values handed to the audit log, and the log itself.

The FastAGI handlers and the replace flow produce ``AuditEvent``s; the Manager side adds the start
and end of each listen/whisper session. ``AuditSink.record`` never blocks and never raises into a
caller: an audit write must not delay a phone, so events are queued and persisted in the
background.

``AuditLog`` is that sink on an ``AuditStore`` (``callgate.ports``): ``record()`` only appends the
event to a bounded in-memory list. The events are written in batches, one transaction per batch:
a write starts ``flush_interval`` seconds after the first unwritten event, or at once when
``batch_size`` are waiting, so under load one durable COMMIT carries many decisions instead of one
each. ``flush()`` and ``close()`` write everything recorded so far; a clean stop loses nothing, a
crash at most the last ``flush_interval`` seconds. If the list is full or the store fails, events
are dropped and counted (``lost``, ``lost_counts()`` by reason) with a log line: the decision
itself has already been answered.

No event takes another down: every caller-supplied value (client, extension, target, uniqueid,
channel, extra facts) is made storable before it is queued (``logs.printable``: escaped, so a
byte that was not UTF-8 is no surrogate a store refuses, and at most ``FIELD_LIMIT``
characters), and a batch that fails anyway is written again row by row
(``AuditStore.write_each``): only the rows that still fail are lost, each logged with its reason
and counted as ``rejected``.

Retention (``start_pruning``): the store's ``prune`` runs now and every ``interval`` seconds
until ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple, Protocol

from callgate.logs import FIELD_LIMIT, is_plain, printable

if TYPE_CHECKING:
    from callgate.domain import AuditRetention
    from callgate.ports import AuditStore

log = logging.getLogger(__name__)

SESSION_ACTIONS = frozenset({"eavesdrop", "whisper"})
"""The actions whose allowing decision opens a listen/whisper session with a start and an end."""


class EndReason(StrEnum):
    """Why a listen/whisper session ended (the audit API's ``end_reason``)."""

    LISTENER_HANGUP = "listener_hangup"
    CALL_ENDED = "call_ended"
    REVOKED = "revoked"
    OPERATOR = "operator"
    """An operator pressed End (the console's ``POST .../live/{pbx}/{uniqueid}/end``)."""


class AuditEvent(NamedTuple):
    """One audit record: immutable, and a tuple because one is built for every FastAGI decision
    (a frozen dataclass sets each of its fields through ``object.__setattr__``)."""

    time: datetime
    client_id: str
    action: str
    ext: str
    target: str | None
    decision: str
    """``"allow"`` or ``"deny"``."""
    reason: str
    policy_version: int
    uniqueid: str | None = None
    """Asterisk's uniqueid of the channel that asked (the listener's channel for a spy session)."""
    channel: str | None = None
    extra: tuple[tuple[str, str], ...] = ()
    """More facts worth keeping (for example ``("phone", "100")`` for a replace)."""
    started: datetime | None = None
    ended: datetime | None = None
    end_reason: EndReason | None = None
    """Set only on the events the Manager side records for a listen/whisper session: one with
    ``started`` when ChanSpy began, one with ``ended`` and ``end_reason`` when it ended. They
    complete the allowing decision's record (same client, action and ``uniqueid``)."""


class AuditSink(Protocol):
    def record(self, event: AuditEvent) -> None: ...


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


class AuditLog:
    """The audit log on an ``AuditStore``: the daemon's ``AuditSink``, batching its writes."""

    def __init__(
        self,
        store: AuditStore,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.1,
    ) -> None:
        self._store = store
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
                    await self._store.write_batch(events)
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
            refused = await self._store.write_each(events)
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
        """Delete now what ``retention`` does not keep; the number of events deleted."""
        return await self._store.prune(retention, now)

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
        """The written events, newest first (``AuditStore.list``)."""
        return await self._store.list(
            client_id, since=since, until=until, ext=ext, action=action, limit=limit
        )
