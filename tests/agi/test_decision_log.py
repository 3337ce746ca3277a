"""The decision log writes what ``log.info`` wrote before, once per loop iteration, never later."""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
from collections.abc import Iterator

import pytest

from callgate.agi.handlers import AgiRequest, DecisionRecorder
from callgate.audit import AuditEvent
from callgate.logs import LOG_FORMAT, DecisionLog, LogFormatter
from callgate.metrics import Metrics
from callgate.policy import Decision, Reason

# The format string and arguments handlers.py gave ``log.info`` before the decision log existed.
OLD_FORMAT = (
    "decision client=%s action=%s ext=%s target=%s decision=%s reason=%s targets=%s"
    " version=%d uniqueid=%s"
)
CREATED = (1795723202.117, 1795723202.999, 1795723203.0005, 1795809602.04)


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Audit:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger(f"callgate.test_decision_log.{id(object())}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger
    logger.handlers.clear()


def stream_handler(logger: logging.Logger) -> CountingStream:
    stream = CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogFormatter(LOG_FORMAT))
    logger.addHandler(handler)
    return stream


REQUESTS = [
    (
        AgiRequest("pickup", "acme", "101", None, "1795723247.21", "PJSIP/acme_101-0001"),
        Decision(allowed=True, reason=Reason.PICKUP_SHARE_GROUP, targets=("100", "102")),
        7,
    ),
    (
        AgiRequest("eavesdrop", "acme", "200", "101", None, None),
        Decision.deny(Reason.EAVESDROP_NOT_PERMITTED),
        3,
    ),
    (  # untrusted values escaped, an unknown action, a malformed client id
        AgiRequest("pi ckup", "ac me\u00e9", "1\n01", "x" * 80, "id with space", None),
        Decision.deny(Reason.INVALID_REQUEST),
        0,
    ),
]


def old_line(request: AgiRequest, decision: Decision, version: int, created: float) -> str:
    """What ``logging.Formatter(LOG_FORMAT)`` wrote for the old ``log.info`` call."""
    from callgate.agi.record import joined_targets as _joined  # what the old call used
    from callgate.logs import printable as _printable

    valid = request.client_id == "acme"
    known = request.action in ("pickup", "eavesdrop", "whisper", "replace", "restore")
    record = logging.LogRecord(
        "callgate.agi.handlers",
        logging.INFO,
        "",
        0,
        OLD_FORMAT,
        (
            request.client_id if valid else _printable(request.client_id),
            request.action if known else _printable(request.action),
            _printable(request.ext),
            _printable(request.target or "-"),
            decision.verdict,
            decision.reason.value,
            _joined(decision.targets) or "-",
            version,
            _printable(request.uniqueid or "-"),
        ),
        None,
    )
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    return logging.Formatter(LOG_FORMAT).format(record)


def test_each_line_is_what_the_stdlib_formatter_wrote_for_the_old_call(
    logger: logging.Logger,
) -> None:
    logger.name = "callgate.agi.handlers"  # the name is part of the line
    stream = stream_handler(logger)
    clock = itertools.cycle(CREATED)
    recorder = DecisionRecorder(Audit(), Metrics(), DecisionLog(logger, lambda: next(clock)))
    expected = []
    for created, (request, decision, version) in zip(
        itertools.cycle(CREATED), REQUESTS * 2, strict=False
    ):
        recorder.record(request, decision, version)  # no running loop: written at once
        expected.append(old_line(request, decision, version, created))
    assert stream.getvalue() == "".join(line + "\n" for line in expected)
    assert "decision client=acme action=pickup ext=101 target=- decision=allow" in expected[0]


def test_another_handler_gets_a_record_with_the_same_message_and_time(
    logger: logging.Logger,
) -> None:
    records = Records()
    logger.addHandler(records)
    recorder = DecisionRecorder(Audit(), Metrics(), DecisionLog(logger, lambda: CREATED[2]))
    request, decision, version = REQUESTS[0]
    recorder.record(request, decision, version)
    (record,) = records.records
    assert (record.levelno, record.name) == (logging.INFO, logger.name)
    assert record.created == CREATED[2]
    expected = old_line(request, decision, version, CREATED[2])
    assert expected.endswith(" " + record.getMessage())


async def test_lines_of_one_iteration_are_written_together_at_its_end(
    logger: logging.Logger,
) -> None:
    stream = stream_handler(logger)
    decisions = DecisionLog(logger)
    for n in range(5):
        decisions.info(f"decision n={n}")
    assert stream.writes == 0  # held until the loop runs the callbacks of this iteration
    await asyncio.sleep(0)
    assert stream.writes == 1
    assert [line.rsplit(": ", 1)[1] for line in stream.getvalue().splitlines()] == [
        f"decision n={n}" for n in range(5)
    ]
    decisions.info("decision n=5")  # the next iteration: its own write
    await asyncio.sleep(0)
    assert stream.writes == 2
    assert stream.getvalue().endswith(": decision n=5\n")


async def test_with_a_hold_the_lines_of_several_iterations_share_one_write(
    logger: logging.Logger,
) -> None:
    stream = stream_handler(logger)
    decisions = DecisionLog(logger, hold=0.05)
    decisions.info("decision n=0")
    await asyncio.sleep(0)
    decisions.info("decision n=1")  # a later iteration, within the hold
    await asyncio.sleep(0.01)
    assert stream.writes == 0
    await asyncio.sleep(0.06)
    assert stream.writes == 1
    assert stream.getvalue().count("decision n=") == 2


def test_the_fastagi_recorder_holds_its_lines_briefly() -> None:
    """The daemon's recorder batches (the 1,000/s bench's 13 µs) but never for long."""
    recorder = DecisionRecorder(Audit(), Metrics())
    assert 0 < recorder.log._hold <= 0.05


async def test_the_level_is_honored(logger: logging.Logger) -> None:
    stream = stream_handler(logger)
    quiet = Records()
    quiet.setLevel(logging.WARNING)
    logger.addHandler(quiet)
    decisions = DecisionLog(logger)
    logger.setLevel(logging.WARNING)
    assert not decisions.enabled()
    decisions.info("decision n=1")
    await asyncio.sleep(0)
    assert stream.getvalue() == ""
    logger.setLevel(logging.INFO)
    decisions.info("decision n=2")
    await asyncio.sleep(0)
    assert stream.getvalue().endswith("INFO " + logger.name + ": decision n=2\n")
    assert quiet.records == []  # a handler at WARNING gets no decision line


async def test_a_logger_that_propagates_reaches_its_parents_handlers(
    logger: logging.Logger,
) -> None:
    parent_stream = stream_handler(logger)
    child = logger.getChild("child")
    decisions = DecisionLog(child)
    decisions.info("decision n=1")
    await asyncio.sleep(0)
    assert parent_stream.getvalue().endswith(f"INFO {child.name}: decision n=1\n")


async def test_close_writes_what_is_pending(logger: logging.Logger) -> None:
    stream = stream_handler(logger)
    decisions = DecisionLog(logger)
    decisions.info("decision n=1")
    decisions.info("decision n=2")
    await decisions.close()
    assert stream.getvalue().count("decision n=") == 2
    await asyncio.sleep(0)  # the scheduled flush then finds nothing left to write
    assert stream.getvalue().count("decision n=") == 2
    assert stream.writes == 1
