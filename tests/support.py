"""Helpers every test folder shares: a free loopback port, waiting for a condition, a plain
connection to a SQLite file, and the system's headless Chromium.

Importable from any test as ``from support import free_port, wait_until`` (pytest's
``pythonpath`` holds ``tests/``). The benches in ``bench/`` keep their own copies: they run
without the test suite installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import shutil
import socket
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
"""The system's Chromium (Debian's ``chromium``), never a downloaded one; ``None``: not there."""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
"""Flags for a headless run as root in a container, with nothing reaching out."""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing used a moment ago (TCP by default, ``SOCK_DGRAM`` for UDP).

    The port is released before it is returned, so another process could take it first: fine
    for tests, where the only other binders are the test's own services.
    """
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(
    condition: Callable[[], object],
    within: float = 5.0,
    *,
    interval: float = 0.01,
) -> None:
    """Poll ``condition`` every ``interval`` seconds until it is true; ``TimeoutError`` after
    ``within`` seconds.

    For state the code under test offers no event for (a server's session counter, a row in
    the store, Asterisk's channels seen over the Manager): where an event exists, wait on it
    instead. What ``condition`` returns counts by its truth value (a count, a list, a flag); an
    awaitable is awaited first, for a check that itself does I/O (``lambda: store.list(...)``).
    """
    async with asyncio.timeout(within):
        while True:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(interval)


@contextlib.contextmanager
def sqlite_file(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A plain ``sqlite3`` connection to ``path``, committed and closed when the block ends.

    ``with sqlite3.connect(path) as conn`` only commits: the connection stays open until the
    garbage collector finds it (from Python 3.13 a ``ResourceWarning``, an error here)."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            yield conn
    finally:
        conn.close()
