"""Two real ``callgate serve`` processes on one PostgreSQL database (``--db postgresql://``):
what one acknowledges the other answers, and concurrent ``If-Match`` PUTs split across the two
have exactly one winner."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pytest

from support import free_port

TOKEN = "pg-serve-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
CONCURRENT = 20


def log_of(data_dir: Path) -> str:
    return (data_dir / "serve.log").read_text(errors="replace")


async def serve(
    dsn: str,
    data_dir: Path,
    *extra: str,
    more_env: Mapping[str, str] | None = None,
    agi_port: int | None = None,
) -> tuple[asyncio.subprocess.Process, str]:
    """``callgate serve`` on ``dsn``, with ``extra`` flags and ``more_env`` (tests/multi)."""
    http_port = free_port()
    env = {
        **os.environ,
        "CALLGATE_ADMIN_TOKEN": TOKEN,
        "CALLGATE_LOG_LEVEL": "WARNING",
        "CALLGATE_POLICY_WRITE_RATE": "10000",
        "CALLGATE_POLICY_WRITE_BURST": "10000",
        # every PUT of the race reaches the store at once: the per-client queue is not under test
        "CALLGATE_POLICY_WRITE_CONCURRENCY": "64",
        **(more_env or {}),
    }
    with (data_dir / "serve.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "callgate",
            "serve",
            "--db",
            dsn,
            "--data-dir",
            str(data_dir),
            "--http",
            f"127.0.0.1:{http_port}",
            "--agi",
            f"127.0.0.1:{agi_port or free_port()}",
            *extra,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    return proc, f"http://127.0.0.1:{http_port}"


async def wait_ready(
    session: aiohttp.ClientSession, base: str, proc: asyncio.subprocess.Process, data_dir: Path
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.returncode is None, log_of(data_dir)
        try:
            async with session.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.02)
    raise AssertionError(f"not ready within 30 s: {log_of(data_dir)}")


@pytest.fixture
async def instances(pg_dsn: str, tmp_path: Path) -> AsyncIterator[list[str]]:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    procs = [await serve(pg_dsn, tmp_path / name) for name in ("a", "b")]
    try:
        async with aiohttp.ClientSession() as session:
            for (proc, base), name in zip(procs, ("a", "b"), strict=True):
                await wait_ready(session, base, proc, tmp_path / name)
        yield [base for _, base in procs]
    finally:
        for proc, _ in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc, _ in procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_two_serve_processes_share_one_database(instances: list[str]) -> None:
    a, b = instances
    url = "/client/acme/call_control_group/"
    body = {"groups": {"sales": ["100", "101"]}}
    async with aiohttp.ClientSession() as session:
        async with session.put(a + url, json=body, headers=AUTH) as response:
            assert response.status == 200, await response.text()
            assert response.headers["ETag"] == '"1"'
        async with session.get(b + url, headers=AUTH) as response:
            assert response.status == 200
            assert response.headers["ETag"] == '"1"'

        async def put(n: int) -> int:
            headers = {**AUTH, "If-Match": '"1"'}
            target = (a, b)[n % 2] + url
            async with session.put(target, json={"groups": {f"g{n}": ["1"]}}, headers=headers) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(put(n) for n in range(CONCURRENT)))
        assert sorted(statuses) == [200] + [412] * (CONCURRENT - 1)
        async with session.get(a + url, headers=AUTH) as response:
            assert response.headers["ETag"] == '"2"'
