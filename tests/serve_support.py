"""Real ``callgate serve`` processes for the tests that need more than one daemon (the
PostgreSQL store's, ``tests/store/test_pg_serve.py``, and the several-instance ones,
``tests/multi/``): spawned with ``python -m callgate serve`` on free loopback ports, their output
in ``<data_dir>/serve.log``, ready once ``/readyz`` answers 200.

Importable as ``from serve_support import serving, TOKEN, AUTH`` (pytest's ``pythonpath``
holds ``tests/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from support import free_port

TOKEN = "serve-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
READY_WITHIN = 30.0

BASE_ENV: Mapping[str, str] = {
    "CALLGATE_ADMIN_TOKEN": TOKEN,
    "CALLGATE_LOG_LEVEL": "WARNING",
    "CALLGATE_POLICY_WRITE_RATE": "10000",
    "CALLGATE_POLICY_WRITE_BURST": "10000",
    # a test's PUTs reach the store at once: the per-client write queue is not under test
    "CALLGATE_POLICY_WRITE_CONCURRENCY": "64",
}


@dataclass
class Instance:
    """One running ``callgate serve``."""

    process: asyncio.subprocess.Process
    base: str
    """``http://127.0.0.1:<port>``"""
    agi_port: int
    data_dir: Path

    def log(self) -> str:
        return (self.data_dir / "serve.log").read_text(errors="replace")


async def serve(db: str, data_dir: Path, env: Mapping[str, str] | None = None) -> Instance:
    """Spawn ``callgate serve --db db`` (not waiting for it to be ready)."""
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (a moment, before any load)
    http_port, agi_port = free_port(), free_port()
    with (data_dir / "serve.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "callgate",
            "serve",
            "--db",
            db,
            "--data-dir",
            str(data_dir),
            "--http",
            f"127.0.0.1:{http_port}",
            "--agi",
            f"127.0.0.1:{agi_port}",
            env={**os.environ, **BASE_ENV, **(env or {})},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    return Instance(process, f"http://127.0.0.1:{http_port}", agi_port, data_dir)


async def is_ready(session: aiohttp.ClientSession, instance: Instance) -> bool:
    try:
        async with session.get(f"{instance.base}/readyz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def wait_ready(session: aiohttp.ClientSession, instance: Instance) -> None:
    """Return once ``/readyz`` answers 200; fail with the log if the process exits first."""
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        assert instance.process.returncode is None, instance.log()
        if await is_ready(session, instance):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not ready within {READY_WITHIN:g} s: {instance.log()}")


async def stop(instance: Instance) -> None:
    """SIGTERM, then SIGKILL after 10 s; nothing if it has exited already."""
    if instance.process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            instance.process.terminate()
    try:
        await asyncio.wait_for(instance.process.wait(), 10)
    except TimeoutError:
        instance.process.kill()
        await instance.process.wait()


@contextlib.asynccontextmanager
async def serving(
    db: str, root: Path, names: Sequence[str] = ("a", "b"), env: Mapping[str, str] | None = None
) -> AsyncIterator[list[Instance]]:
    """One ``callgate serve`` per name on the one database ``db``, each in ``root/<name>``,
    all ready; stopped afterwards."""
    instances: list[Instance] = []
    try:
        for name in names:
            instances.append(await serve(db, root / name, env))
        async with aiohttp.ClientSession() as session:
            for instance in instances:
                await wait_ready(session, instance)
        yield instances
    finally:
        await asyncio.gather(*(stop(instance) for instance in instances))
