"""PostgreSQL goes away under a running daemon: FastAGI keeps answering from the policies it
holds, every write answers 503 ``unavailable`` (JSON, never a 500), ``/readyz`` says
``store_unreachable`` (503) until the change feed is back and caught up."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callgate.daemon import start
from fake_ami import FakeAmi
from pg_cluster import PgCluster, find_bindir
from reference_policy import REFERENCE_DOCUMENT
from support import wait_until

from .conftest import AUTH, CLIENT, POLICY, ask, base, put, settings, spy_environment

WRITES: list[tuple[str, str, Any]] = [
    ("PUT", POLICY, REFERENCE_DOCUMENT),
    ("DELETE", POLICY, None),
    ("PUT", f"/client/{CLIENT}/extension/101/replace_pin", {"pin": "246810"}),
    ("DELETE", f"/client/{CLIENT}/extension/101/replace_pin", None),
    ("DELETE", f"/client/{CLIENT}/replacements/100", None),
    ("POST", "/tokens", {"name": "ops", "client_id": CLIENT}),
    ("DELETE", "/tokens/ops", None),
]


@pytest.fixture
def own_cluster(pg_cluster: PgCluster) -> Iterator[PgCluster]:
    """A cluster of its own, to halt and start again (the session's one stays up)."""
    bindir = find_bindir()
    assert bindir is not None
    cluster = PgCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def test_while_postgresql_is_down_fastagi_answers_and_writes_are_503(
    tmp_path: Path, own_cluster: PgCluster, fake: FakeAmi
) -> None:
    config = settings(
        tmp_path,
        db=own_cluster.dsn(),
        policy_write_concurrency=2,  # two policy writes at once: both reach the store, no 429
        ami=f"127.0.0.1:{fake.port}",
        ami_user=fake.username,
        ami_secret=fake.secret,
        enforce_lock_interval=0.2,
    )
    daemon = await start(config)
    assert daemon.store.changes.healthy
    _, agi_port = daemon.settings.agi_address
    listen = spy_environment("eavesdrop", "1.1", "PJSIP/acme_100-00000001")
    try:
        async with aiohttp.ClientSession(base(daemon)) as http:
            await put(http, POLICY, REFERENCE_DOCUMENT)
            await wait_until(lambda: daemon.pbx_states() == {"default": "up"})
            async with http.get("/readyz") as response:
                assert response.status == 200
                assert (await response.json())["store"] == "reachable"

            own_cluster.halt()
            await wait_until(lambda: not daemon.store_reachable(), within=15)
            async with http.get("/readyz") as response:
                assert response.status == 503
                body = await response.json()
            assert (body["status"], body["store"], body["policies_loaded"]) == (
                "store_unreachable",
                "unreachable",
                True,
            )
            # nobody can tell who holds the PBX's lock now: this instance stops enforcing
            await wait_until(lambda: daemon.pbx_states() == {"default": "standby"}, within=10)
            assert fake.sessions == 0
            assert daemon.metrics.registry.get_sample_value("callgate_store_reachable") == 0
            # the policies acknowledged before are still the ones FastAGI decides by
            assert await ask(agi_port, listen) == ("ALLOW", "eavesdrop_group")

            async def write(method: str, url: str, body: Any) -> tuple[int, str, str]:
                async with http.request(method, url, json=body, headers=AUTH) as response:
                    error = await response.json()
                    return response.status, response.content_type, error["error"]

            answers = await asyncio.gather(*(write(*each) for each in WRITES))
            assert answers == [(503, "application/json", "unavailable")] * len(WRITES)

            own_cluster.start()
            await wait_until(daemon.store_reachable, within=30)
            await wait_until(lambda: daemon.pbx_states() == {"default": "up"}, within=10)
            async with http.get("/readyz") as response:
                assert response.status == 200
                assert (await response.json())["status"] == "ready"
            await put(http, POLICY, {"groups": {}})  # writes again
            assert await ask(agi_port, listen) == ("DENY", "eavesdrop_not_permitted")
    finally:
        await daemon.stop()
