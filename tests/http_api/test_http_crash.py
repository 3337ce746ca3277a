"""A write acknowledged by the HTTP API survives SIGKILL of the process, and no policy is torn.

A real ``python -m callgate serve`` (temporary data dir, free loopback ports) takes a stream of
PUTs from several writers at once and is SIGKILLed at a random moment in the middle of it, 100
times. After each restart, for every client: the version is the last acknowledged one, or the
one after it when that PUT was in flight at the kill (it may have committed without its answer
getting out); the document is exactly the one sent for that version; the history has every
version once; and the registry loaded at start-up (what FastAGI decides by) holds that version.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import aiohttp
import pytest

from callgate.config import Settings
from support import free_port, sqlite_file

ITERATIONS = 100
CLIENTS = ("alpha", "bravo", "charlie")
TOKEN = "crash-test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def document_for(seq: int) -> dict[str, object]:
    """A document whose every part depends on ``seq``: a torn write could not match any."""
    groups = {f"g{seq}_{i}": [str(seq * 10 + j) for j in range(i + 1)] for i in range(5)}
    return {
        "allow_all": False,
        "pickup_all": seq % 2 == 0,
        "groups": groups,
        "pickup_share_groups": sorted(groups)[:3],
        "phone_replace_groups": sorted(groups)[3:],
        f"eavesdrop_{seq}": sorted(groups)[:2],
    }


@dataclass
class ClientState:
    acked_version: int = 0
    version_seq: dict[int, int] = field(default_factory=dict)
    """The seq of the document stored as each version we know of."""
    in_flight: int | None = None
    """The seq of the PUT whose answer has not arrived yet."""


async def start_daemon(data_dir: Path, http_port: int, agi_port: int) -> asyncio.subprocess.Process:
    """Start ``callgate serve``; its log is appended to ``<data_dir>/serve.log``."""
    env = {
        **os.environ,
        "CALLGATE_ADMIN_TOKEN": TOKEN,
        "CALLGATE_LOG_LEVEL": "WARNING",
        # writes as fast as the loop can send them: the per-client write limit is not under test
        "CALLGATE_POLICY_WRITE_RATE": "10000",
        "CALLGATE_POLICY_WRITE_BURST": "10000",
    }
    with (data_dir / "serve.log").open("ab") as log:
        return await _spawn(data_dir, http_port, agi_port, env, log)


async def _spawn(
    data_dir: Path, http_port: int, agi_port: int, env: dict[str, str], log: BinaryIO
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callgate",
        "serve",
        "--data-dir",
        str(data_dir),
        "--http",
        f"127.0.0.1:{http_port}",
        "--agi",
        f"127.0.0.1:{agi_port}",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )


async def wait_ready(
    session: aiohttp.ClientSession, base: str, proc: asyncio.subprocess.Process
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.returncode is None, "the daemon exited during start-up"
        try:
            async with session.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.005)
    raise AssertionError("the daemon did not become ready within 30 s")


async def write_stream(
    session: aiohttp.ClientSession, base: str, client: str, state: ClientState, seqs: list[int]
) -> None:
    """PUT one document after another until the connection dies."""
    url = f"{base}/client/{client}/call_control_group/"
    while True:
        seqs[0] += 1
        seq = seqs[0]
        state.in_flight = seq
        try:
            async with session.put(url, json=document_for(seq), headers=AUTH) as response:
                assert response.status == 200, await response.text()
                version = int(response.headers["ETag"].strip('"'))
                assert await response.json() is not None
        except (TimeoutError, aiohttp.ClientError):
            return
        # acknowledged: from now on this version must survive anything
        assert version == state.acked_version + 1
        state.version_seq[version] = seq
        state.acked_version = version
        state.in_flight = None


async def verify_after_restart(
    session: aiohttp.ClientSession, base: str, client: str, state: ClientState
) -> None:
    url = f"{base}/client/{client}/call_control_group/"
    async with session.get(url, headers=AUTH) as response:
        assert response.status == 200
        version = int(response.headers["ETag"].strip('"'))
        document = await response.json()
    if version == state.acked_version + 1 and state.in_flight is not None:
        # the in-flight PUT committed; its answer was lost with the process
        state.version_seq[version] = state.in_flight
        state.acked_version = version
    assert version == state.acked_version, (
        f"{client}: stored version {version}, acknowledged {state.acked_version}"
    )
    state.in_flight = None
    if version == 0:
        return
    expected = document_for(state.version_seq[version])
    assert document == {**expected}, f"{client} v{version} is not the document sent for it"

    versions: list[dict[str, object]] = []
    cursor: dict[str, int] = {}
    for _ in range(version + 1):  # the history is paged: walk it to its end
        async with session.get(url + "history", params=cursor, headers=AUTH) as response:
            page = await response.json()
        versions += page["versions"]
        if "next_before" not in page:
            break
        cursor = {"before": page["next_before"]}
    kept = Settings.model_fields["policy_history_keep"].default  # the daemon runs on defaults
    assert [v["version"] for v in versions] == list(range(version, max(version - kept, 0), -1))
    for item in versions[:3]:
        assert item["document"] == document_for(state.version_seq[item["version"]])

    params = {"action": "pickup", "ext": "1", "target": "2"}
    async with session.get(url + "check", params=params, headers=AUTH) as response:
        assert (await response.json())["policy_version"] == version


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    rng = random.Random(4)
    http_port, agi_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    states = {client: ClientState() for client in CLIENTS}
    seqs = [0]
    acknowledged_total = 0
    in_flight_committed = 0
    timeout = aiohttp.ClientTimeout(total=10)
    started = time.monotonic()
    for _ in range(ITERATIONS):
        proc = await start_daemon(tmp_path, http_port, agi_port)
        try:
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                await wait_ready(session, base, proc)
                for client, state in states.items():
                    before = state.acked_version
                    had_in_flight = state.in_flight is not None
                    await verify_after_restart(session, base, client, state)
                    if had_in_flight and state.acked_version > before:
                        in_flight_committed += 1
                acked_before = sum(s.acked_version for s in states.values())
                writers = [
                    asyncio.create_task(write_stream(session, base, client, state, seqs))
                    for client, state in states.items()
                ]
                await asyncio.sleep(rng.uniform(0.005, 0.06))
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                await asyncio.gather(*writers)
                acknowledged_total += sum(s.acked_version for s in states.values()) - acked_before
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    # one last start: everything acknowledged in the last round is there too
    proc = await start_daemon(tmp_path, http_port, agi_port)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await wait_ready(session, base, proc)
            for client, state in states.items():
                await verify_after_restart(session, base, client, state)
    finally:
        proc.kill()
        await proc.wait()
    elapsed = time.monotonic() - started
    with sqlite_file(tmp_path / "callgate.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    server_log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in server_log, server_log[-4000:]
    print(
        f"\n{ITERATIONS} kills in {elapsed:.1f}s: {acknowledged_total} acknowledged writes kept,"
        f" {in_flight_committed} in-flight writes found committed after the kill"
    )
    assert acknowledged_total > ITERATIONS  # the kills really landed in a stream of writes


async def test_sigterm_exits_0_and_closes_the_store_cleanly(tmp_path: Path) -> None:
    http_port, agi_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    url = f"{base}/client/alpha/call_control_group/"
    proc = await start_daemon(tmp_path, http_port, agi_port)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, base, proc)
            async with session.put(url, json=document_for(7), headers=AUTH) as response:
                assert response.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # a clean close checkpoints the write-ahead log into the database file
    wal = tmp_path / "callgate.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    with sqlite_file(tmp_path / "callgate.sqlite3") as db:
        rows = db.execute("SELECT client_id, version FROM policy_versions").fetchall()
    db.close()
    assert rows == [("alpha", 1)]
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
