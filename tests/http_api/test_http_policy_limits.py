"""The paged policy history over HTTP, the per-client write limits, and large PUTs off the loop."""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from callgate.http.app import HttpDeps, build_app
from callgate.http.policy_routes import (
    HISTORY_DEFAULT_LIMIT,
    HISTORY_MAX_LIMIT,
    PolicyConfig,
)
from callgate.http.policy_writes import WORKER_NICENESS, Preparer, WriteConfig
from callgate.metrics import Metrics
from callgate.policy import parse_document
from callgate.registry import PolicyRegistry
from callgate.store import Store
from wiring import app_services

from .http_support import ADMIN, CLIENT, POLICY_URL

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from policy_bench import largest_document

HISTORY_URL = POLICY_URL + "history"
Client = TestClient[object, object]
MakeClient = Callable[[PolicyConfig], Awaitable[tuple[Client, PolicyRegistry]]]


@pytest.fixture
async def make_client(store: Store) -> AsyncIterator[MakeClient]:
    made: list[Client] = []

    async def make(config: PolicyConfig) -> tuple[Client, PolicyRegistry]:
        registry = PolicyRegistry()
        services = app_services(store, registry)
        app = build_app(HttpDeps(services, Metrics(), "admin-secret-for-tests", policy=config))
        client: Client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        made.append(client)
        return client, registry

    yield make
    for client in made:
        await client.close()


async def store_versions(store: Store, count: int) -> None:
    for n in range(count):
        await store.policies.save(CLIENT, parse_document({"allow_all": n % 2 == 0}), "admin")


async def test_history_default_and_maximum_limit(store: Store, make_client: MakeClient) -> None:
    await store_versions(store, HISTORY_MAX_LIMIT + 5)
    client, _ = await make_client(PolicyConfig())
    response = await client.get(HISTORY_URL, headers=ADMIN)
    assert response.status == 200
    page = await response.json()
    assert len(page["versions"]) == HISTORY_DEFAULT_LIMIT
    assert page["versions"][0]["version"] == HISTORY_MAX_LIMIT + 5
    assert page["next_before"] == HISTORY_MAX_LIMIT + 5 - HISTORY_DEFAULT_LIMIT + 1
    response = await client.get(HISTORY_URL, params={"limit": HISTORY_MAX_LIMIT}, headers=ADMIN)
    assert len((await response.json())["versions"]) == HISTORY_MAX_LIMIT


async def test_the_before_cursor_walks_every_version_exactly_once(
    store: Store, make_client: MakeClient
) -> None:
    await store_versions(store, 23)
    client, _ = await make_client(PolicyConfig())
    seen: list[int] = []
    params: dict[str, int] = {"limit": 5}
    for _ in range(10):
        response = await client.get(HISTORY_URL, params=params, headers=ADMIN)
        page = await response.json()
        seen += [v["version"] for v in page["versions"]]
        if "next_before" not in page:
            break
        params = {"limit": 5, "before": page["next_before"]}
    assert seen == list(range(23, 0, -1))
    assert page["versions"][-1]["document"] == parse_document({"allow_all": True}).to_json()


async def test_a_history_page_is_bounded_in_bytes(store: Store, make_client: MakeClient) -> None:
    big = {"groups": {f"g{i}": [str(1000 + i * 10 + j) for j in range(10)] for i in range(60)}}
    for _ in range(6):
        await store.policies.save(CLIENT, parse_document(big), "admin")
    size = len(json.dumps(parse_document(big).to_json(), separators=(",", ":")))
    client, _ = await make_client(PolicyConfig(history_page_bytes=3 * size))
    response = await client.get(HISTORY_URL, params={"limit": 100}, headers=ADMIN)
    page = await response.json()
    assert [v["version"] for v in page["versions"]] == [6, 5, 4]
    assert page["next_before"] == 4
    assert len(await response.read()) < 3 * size + 1000
    tiny, _ = await make_client(PolicyConfig(history_page_bytes=10))
    page = await (await tiny.get(HISTORY_URL, headers=ADMIN)).json()
    assert [v["version"] for v in page["versions"]] == [6]  # always one


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "abc"},
        {"limit": "²"},
        {"limit": "٣"},
        {"limit": "5" * 5000},
        {"limit": "0"},
        {"limit": str(HISTORY_MAX_LIMIT + 1)},
        {"limit": "-1"},
        {"limit": "+1"},
        {"limit": " 1"},
        {"limit": "1_0"},
        {"limit": ""},
        {"before": "0"},
        {"before": "x"},
        {"before": "9" * 5000},
        {"before": "1e3"},
    ],
)
async def test_a_bad_limit_or_before_is_a_json_400(
    store: Store, make_client: MakeClient, params: dict[str, str]
) -> None:
    await store_versions(store, 1)
    client, _ = await make_client(PolicyConfig())
    response = await client.get(HISTORY_URL, params=params, headers=ADMIN)
    assert response.status == 400
    body = await response.json()
    assert body["error"] == "invalid_query"
    assert body["details"][0]["loc"] == ["query", next(iter(params))]


async def test_a_repeated_limit_is_a_400(store: Store, make_client: MakeClient) -> None:
    client, _ = await make_client(PolicyConfig())
    response = await client.get(HISTORY_URL + "?limit=1&limit=2", headers=ADMIN)
    assert response.status == 400


class SlowBody:
    """A request body sent in two parts: the second once ``go`` is set."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.go = asyncio.Event()
        self.started = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.payload[:1]
        self.started.set()
        await self.go.wait()
        yield self.payload[1:]


async def test_writes_over_the_concurrency_limit_get_429_while_another_client_writes(
    make_client: MakeClient,
) -> None:
    client, registry = await make_client(PolicyConfig(writes=WriteConfig(concurrency=1)))
    slow = SlowBody(b'{"allow_all": true}')
    first = asyncio.create_task(
        client.put(POLICY_URL, data=slow, headers={**ADMIN, "Content-Type": "application/json"})
    )
    await asyncio.wait_for(slow.started.wait(), 10)
    for _ in range(100):  # until the server holds the first write (bounded)
        second = await client.put(POLICY_URL, json={"pickup_all": False}, headers=ADMIN)
        if second.status == 429:
            break
        await asyncio.sleep(0.01)
    assert second.status == 429
    assert int(second.headers["Retry-After"]) >= 1
    assert (await second.json())["error"] == "rate_limited"
    other = await client.put(
        "/client/globex/call_control_group/", json={"allow_all": True}, headers=ADMIN
    )
    assert other.status == 200
    assert not first.done()
    slow.go.set()
    response = await asyncio.wait_for(first, 10)
    assert response.status == 200
    assert registry.get(CLIENT).document.allow_all is True
    assert registry.get(CLIENT).version == 1  # the refused writes stored nothing


async def test_writes_over_the_rate_get_429_with_retry_after(make_client: MakeClient) -> None:
    client, _ = await make_client(PolicyConfig(writes=WriteConfig(rate=0.01, burst=2)))
    for _ in range(2):
        assert (await client.delete(POLICY_URL, headers=ADMIN)).status == 200
    refused = await client.put(POLICY_URL, json={"allow_all": True}, headers=ADMIN)
    assert refused.status == 429
    assert 90 <= int(refused.headers["Retry-After"]) <= 100  # one token at 0.01/s
    assert (await refused.json())["error"] == "rate_limited"
    other = await client.delete("/client/globex/call_control_group/", headers=ADMIN)
    assert other.status == 200


def worker_processes() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.is_alive()]


async def test_a_maximum_size_put_is_validated_in_a_worker_while_the_loop_serves(
    make_client: MakeClient,
) -> None:
    client, registry = await make_client(PolicyConfig())
    document = largest_document()
    body = json.dumps(document).encode()
    assert len(body) > WriteConfig().offload_bytes
    before = set(worker_processes())
    put = asyncio.create_task(
        client.put(
            POLICY_URL, data=io.BytesIO(body), headers={**ADMIN, "Content-Type": "application/json"}
        )
    )
    check_url = POLICY_URL + "check?action=pickup&ext=100&target=101"
    served = 0
    for _ in range(2000):  # bounded: the PUT needs a worker started, about a second
        if put.done():
            break
        check = await client.get(check_url, headers=ADMIN)
        assert check.status == 200
        served += 1
    response = await asyncio.wait_for(put, 60)
    assert response.status == 200, await response.text()
    assert served >= 1  # the loop answered others while the document was being validated
    assert set(worker_processes()) - before  # ... in a worker process
    assert await response.json() == parse_document(document).to_json()
    assert registry.get(CLIENT).document == parse_document(document)
    assert registry.get(CLIENT).version == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"groups": {"a": ["1 00"]}}', 422, "invalid_policy"),
        (b"[1, 2]", 422, "not_an_object"),
        (b'{"allow_all": tru', 400, "malformed_json"),
    ],
)
async def test_errors_found_in_the_worker_are_the_usual_answers(
    make_client: MakeClient, body: bytes, status: int, code: str
) -> None:
    client, registry = await make_client(PolicyConfig(writes=WriteConfig(offload_bytes=1)))
    response = await client.put(
        POLICY_URL, data=body, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert response.status == status
    assert (await response.json())["error"] == code
    assert registry.get(CLIENT).version == 0


async def test_the_validator_worker_runs_below_the_daemons_priority() -> None:
    preparer = Preparer(WriteConfig())
    try:
        loop = asyncio.get_running_loop()
        # os.nice(0) answers the calling process's niceness without changing it
        worker = await loop.run_in_executor(preparer._executor(), os.nice, 0)
    finally:
        await preparer.close()
    assert worker == min(19, os.nice(0) + WORKER_NICENESS)
