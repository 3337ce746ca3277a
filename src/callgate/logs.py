"""The log format, the decision log (one line per FastAGI decision, cheaply), and ``printable``:
the one way a caller-supplied value goes into a log line or an audit row (escaped, bounded).

Every FastAGI decision is an INFO line. Through ``logging.info`` it was a large share of a session's
CPU in the daemon (a ``LogRecord`` built, filters, locks, ``%`` formatting, one write and one flush
per line; ``bench/agi_bench.py``, figures in ``docs/performance.md``). ``DecisionLog`` keeps what
that line is — the same text, the same level and logger (so the same handlers, formatting and
destination as every other line), written promptly — and does less: the message is an f-string, the
date is formatted once a second, and the lines are written together, in one write: those of one
event-loop iteration by a ``loop.call_soon`` callback at its end, or with ``hold`` (the FastAGI
recorder holds 10 ms), all those logged within ``hold`` seconds of the first by one
``loop.call_later`` callback. A line is never held longer than that, and keeps the time it was
logged at.

Handlers it knows to be plain (a ``StreamHandler`` or ``FileHandler`` with
``LogFormatter(LOG_FORMAT)`` and no filters: what ``callgate serve`` configures) get the lines
written to their stream directly; any other handler (pytest's capture, a handler with filters) gets
an ordinary ``LogRecord`` per line, created at the decision's time.
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

    def formatTime(  # noqa: N802 - the stdlib's name
        self, record: logging.LogRecord, datefmt: str | None = None
    ) -> str:
        return self.asctime(record.created, record.msecs)

    def asctime(self, created: float, msecs: float) -> str:
        """``%(asctime)s`` of a record created at ``created`` (``msecs`` as the record has it)."""
        second = int(created)
        if second != self._second:
            self._date = time.strftime(self.default_time_format, self.converter(created))
            self._second = second
        return f"{self._date},{int(msecs):03d}"

    def plain_line(self, created: float, level: str, name: str, message: str) -> str | None:
        """What ``format()`` makes of a record without traceback, or None for another format."""
        if self._fmt != LOG_FORMAT:
            return None
        return f"{self.asctime(created, _msecs(created))} {level} {name}: {message}"


def _msecs(created: float) -> float:
    """``LogRecord.msecs`` as Python 3.11 computes it from ``created``."""
    return int((created - int(created)) * 1000) + 0.0


class DecisionLog:
    """INFO lines of one logger, written at the end of the event-loop iteration that made them, or
    ``hold`` seconds after the first of them."""

    def __init__(
        self,
        logger: logging.Logger,
        clock: Callable[[], float] = time.time,
        hold: float = 0.0,
    ) -> None:
        self._logger = logger
        self._clock = clock
        self._hold = hold
        self._pending: list[tuple[float, str]] = []

    def enabled(self) -> bool:
        """Whether a line would be written at all (the caller may then skip building it)."""
        return self._logger.isEnabledFor(logging.INFO)

    def info(self, message: str) -> None:
        """Log ``message`` (taken as is, no ``%`` formatting) at INFO; never raises."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        pending = self._pending
        pending.append((self._clock(), message))
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
        lines, self._pending = self._pending, []
        if not lines:
            return
        try:
            self._write(lines)
        except Exception:
            logging.getLogger(__name__).exception("decision log: %d lines not written", len(lines))

    async def close(self) -> None:
        """Write what is pending (the daemon's stopper, after the FastAGI server stopped)."""
        self.flush()

    def _write(self, lines: list[tuple[float, str]]) -> None:
        logger = self._logger
        name, level = logger.name, logging.getLevelName(logging.INFO)
        if logger.filters:  # a logger filter sees every record: no shortcut
            for created, message in lines:
                logger.handle(_record(logger, created, message))
            return
        handlers = _handlers(logger)
        for handler in handlers:
            formatter = handler.formatter
            stream = getattr(handler, "stream", None)
            if (
                type(handler) in (logging.StreamHandler, logging.FileHandler)
                and isinstance(formatter, LogFormatter)
                and not handler.filters
                and stream is not None
            ):
                text = [formatter.plain_line(created, level, name, m) for created, m in lines]
                if None not in text:
                    terminator: str = getattr(handler, "terminator", "\n")
                    handler.acquire()
                    try:
                        stream.write(terminator.join(text) + terminator)  # type: ignore[arg-type]
                        handler.flush()
                    except Exception:  # noqa: BLE001 - as StreamHandler.emit: handleError reports it
                        for created, message in lines:
                            handler.handleError(_record(logger, created, message))
                    finally:
                        handler.release()
                    continue
            for created, message in lines:
                handler.handle(_record(logger, created, message))


def _handlers(logger: logging.Logger) -> list[logging.Handler]:
    """The handlers an INFO record of ``logger`` reaches, as ``Logger.callHandlers`` finds them."""
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


def _record(logger: logging.Logger, created: float, message: str) -> logging.LogRecord:
    record = logger.makeRecord(logger.name, logging.INFO, "(unknown file)", 0, message, (), None)
    record.relativeCreated -= (record.created - created) * 1000
    record.created = created
    record.msecs = _msecs(created)
    return record
