"""The log format, the decision log (one line per FastAGI decision, cheaply), and ``printable``:
the one way a caller-supplied value goes into a log line or an audit row (escaped, bounded).

Every FastAGI decision is an INFO line. Through ``logging.info`` it was a large share of a
session's CPU in the daemon (the caller's frame looked up, filters, locks, ``%`` formatting, one
write and one flush per line; ``bench/agi_bench.py``, figures in ``docs/performance.md``).
``DecisionLog`` keeps what that line is — a ``LogRecord`` of the same level and logger (so the
same handlers, formatting and destination as every other line), written promptly — and does less:
the message is an f-string, the date is formatted once a second (``LogFormatter``), and the lines
are written together, in one write: those of one event-loop iteration by a ``loop.call_soon``
callback at its end, or with ``hold`` (the FastAGI recorder holds 10 ms), all those logged within
``hold`` seconds of the first by one ``loop.call_later`` callback. A line is never held longer
than that, and keeps the time it was logged at.

Only the logging module's public API is used: ``Logger.makeRecord``, the handlers' ``format``,
``acquire``, ``flush`` and ``handle``, and the attributes ``Logger.handle`` itself follows
(``handlers``, ``propagate``, ``parent``, levels, ``lastResort``). A plain ``StreamHandler`` or
``FileHandler`` without filters (what ``callgate serve`` configures) gets the pending lines in one
write; any other handler (pytest's capture, a handler with filters) each record through its
``handle()``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Final

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

FIELD_LIMIT: Final = 128
"""Characters ``printable`` makes of one caller-supplied value at most (an Asterisk channel name
is at most 80; an extension 32)."""

_plain = re.compile(r"[!#-&(-\[\]-~]*").fullmatch


def is_plain(value: str) -> bool:
    """Printable ASCII but space, quotes and backslash: ``printable`` keeps such a value as is
    (up to its limit), so an escaped value (which starts with a quote) is never mistaken for
    one."""
    return _plain(value) is not None


def printable(value: str | None, limit: int = FIELD_LIMIT) -> str:
    """A caller-supplied value as a log line or an audit row may hold it: as is when it is short
    plain ASCII, else between quotes and escaped (``'\\udcff'`` for a byte that was not UTF-8,
    ``\\'`` for a quote), cut to at most ``limit`` characters (``...`` after the closing quote
    when cut). Always storable (no surrogates) and bounded; ``"-"`` for ``None``."""
    if value is None:
        return "-"
    if len(value) <= limit and _plain(value) is not None:
        return value
    room = limit - 2  # the quotes
    text = _escaped(value[:room])
    if len(text) <= room and len(value) <= room:
        return f"'{text}'"
    room -= 3  # "..."
    # The longest prefix whose escape fits: each character escapes to 1 to 10 of them.
    low, high = 0, min(len(value), room)
    while low < high:
        middle = (low + high + 1) // 2
        if len(_escaped(value[:middle])) <= room:
            low = middle
        else:
            high = middle - 1
    return f"'{_escaped(value[:low])}'..."


def _escaped(value: str) -> str:
    # unicode_escape writes a lone surrogate (a byte surrogateescape kept) as \udcXX, control
    # and non-ASCII characters as \x, \u or \U escapes, a backslash as two.
    text = value.encode("unicode_escape").decode("ascii")
    return text.replace("'", "\\'")


class LogFormatter(logging.Formatter):
    """``LOG_FORMAT`` as ``logging.Formatter`` writes it, the date computed once a second: every
    FastAGI decision is a log line, and ``strftime`` was a tenth of its cost."""

    _second = -1
    _date = ""

    def __init__(self, fmt: str = LOG_FORMAT) -> None:
        super().__init__(fmt)
        self._plain = fmt == LOG_FORMAT

    def format(self, record: logging.LogRecord) -> str:
        # LOG_FORMAT without a traceback or stack: the f-string is what Formatter.format makes
        # of it (test_log_format), at a third of the cost.
        if not self._plain or record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        return f"{self.formatTime(record)} {record.levelname} {record.name}: {record.message}"

    def formatTime(  # noqa: N802 - the stdlib's name
        self, record: logging.LogRecord, datefmt: str | None = None
    ) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._date = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        msec_format = self.default_msec_format
        return msec_format % (self._date, record.msecs) if msec_format else self._date


class DecisionLog:
    """INFO lines of one logger, written at the end of the event-loop iteration that made them, or
    ``hold`` seconds after the first of them.

    Each line is a ``LogRecord`` made when it is logged (``Logger.makeRecord``: its time and
    milliseconds are the logging module's own). A handler that is a plain ``StreamHandler`` or
    ``FileHandler`` gets the pending lines formatted by its own formatter and written in one
    write and one flush; any other handler gets each record through its ``handle()``."""

    def __init__(
        self,
        logger: logging.Logger,
        clock: Callable[[], float] | None = None,
        hold: float = 0.0,
    ) -> None:
        """``clock``: the lines' time, for tests (default: the time ``makeRecord`` takes)."""
        self._logger = logger
        self._clock = clock
        self._hold = hold
        self._pending: list[logging.LogRecord] = []

    def enabled(self) -> bool:
        """Whether a line would be written at all (the caller may then skip building it)."""
        return self._logger.isEnabledFor(logging.INFO)

    def info(self, message: str) -> None:
        """Log ``message`` (taken as is, no ``%`` formatting) at INFO; never raises."""
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        record = logger.makeRecord(
            logger.name, logging.INFO, "(unknown file)", 0, message, (), None
        )
        if self._clock is not None:
            _set_time(record, self._clock())
        pending = self._pending
        pending.append(record)
        if len(pending) > 1:
            return  # a flush is already scheduled (end of iteration, or the hold)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no running loop: nothing would call the flush later
            self.flush()
            return
        if self._hold:
            loop.call_later(self._hold, self.flush)
        else:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every pending line now."""
        records, self._pending = self._pending, []
        if not records:
            return
        try:
            self._write(records)
        except Exception:
            logging.getLogger(__name__).exception(
                "decision log: %d lines not written", len(records)
            )

    async def close(self) -> None:
        """Write what is pending (the daemon's stopper, after the FastAGI server stopped)."""
        self.flush()

    def _write(self, records: list[logging.LogRecord]) -> None:
        logger = self._logger
        if logger.filters:  # a logger filter sees every record: no shortcut
            for record in records:
                logger.handle(record)
            return
        for handler in _handlers(logger):
            stream = getattr(handler, "stream", None)
            if type(handler) not in _PLAIN_HANDLERS or handler.filters or stream is None:
                for record in records:
                    handler.handle(record)
                continue
            terminator: str = getattr(handler, "terminator", "\n")
            handler.acquire()
            try:
                text = terminator.join(handler.format(record) for record in records)
                stream.write(text + terminator)
                handler.flush()
            except Exception:  # noqa: BLE001 - as StreamHandler.emit: handleError reports it
                for record in records:
                    handler.handleError(record)
            finally:
                handler.release()


_PLAIN_HANDLERS: Final = (logging.StreamHandler, logging.FileHandler)
"""Handlers whose ``emit`` is "format, write, flush": the lines of a batch can share one write."""


def _handlers(logger: logging.Logger) -> list[logging.Handler]:
    """The handlers an INFO record of ``logger`` reaches (``propagate``, each handler's level,
    ``logging.lastResort`` when there is none), in the order ``Logger.handle`` calls them."""
    found: list[logging.Handler] = []
    seen_any = False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            seen_any = True
            if handler.level <= logging.INFO:
                found.append(handler)
        if not current.propagate:
            break
        current = current.parent
    if not seen_any and logging.lastResort is not None and logging.lastResort.level <= logging.INFO:
        found.append(logging.lastResort)
    return found


def _set_time(record: logging.LogRecord, created: float) -> None:
    """A record made now, dated ``created`` instead (``DecisionLog``'s own clock)."""
    record.relativeCreated -= (record.created - created) * 1000
    record.created = created
    record.msecs = float(int((created - int(created)) * 1000))
