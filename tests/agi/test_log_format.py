"""The daemon's log formatter writes exactly what ``logging.Formatter(LOG_FORMAT)`` writes."""

from __future__ import annotations

import logging
import sys

from callgate.daemon import LOG_FORMAT, LogFormatter


def test_the_cached_date_formats_every_record_as_the_stdlib_does() -> None:
    ours, stdlib = LogFormatter(LOG_FORMAT), logging.Formatter(LOG_FORMAT)
    # Within one second, across a second boundary, back again, and across a day.
    for created in (1795723202.117, 1795723202.999, 1795723203.0005, 1795723202.5, 1795809602.04):
        record = logging.LogRecord(
            "callgate.agi.handlers", logging.INFO, "", 0, "decision client=%s", ("acme",), None
        )
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        assert ours.format(record) == stdlib.format(record)


def test_a_traceback_is_still_appended() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "callgate", logging.ERROR, "", 0, "failed", (), exc_info=sys.exc_info()
        )
    assert LogFormatter(LOG_FORMAT).format(record).endswith("ValueError: boom")
