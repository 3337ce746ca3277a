"""``callgate serve`` picks its event loop outside any ``except``: without uvloop, a traceback the
running daemon logs carries no chained ``ModuleNotFoundError: No module named 'uvloop'``."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from callgate.cli import run_event_loop

log = logging.getLogger("callgate.test")


async def log_a_failure(loops: list[type[asyncio.AbstractEventLoop]]) -> None:
    loops.append(type(asyncio.get_running_loop()))
    try:
        raise ValueError("a failure the daemon logs")
    except ValueError:
        log.exception("logged by the daemon")


def test_without_uvloop_a_logged_traceback_has_no_chained_import_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    loops: list[type[asyncio.AbstractEventLoop]] = []
    with caplog.at_level(logging.ERROR):
        run_event_loop(log_a_failure(loops))
    [record] = caplog.records
    assert record.exc_info is not None
    assert record.exc_info[1] is not None
    assert record.exc_info[1].__context__ is None
    assert "ValueError: a failure the daemon logs" in caplog.text
    assert "uvloop" not in caplog.text
    assert "During handling" not in caplog.text
    assert loops[0].__module__.startswith("asyncio")


def test_with_uvloop_the_daemon_runs_on_it() -> None:
    uvloop = pytest.importorskip("uvloop")
    loops: list[type[asyncio.AbstractEventLoop]] = []
    run_event_loop(log_a_failure(loops))
    assert loops == [uvloop.Loop]
