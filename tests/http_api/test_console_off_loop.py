"""The console's pictures and previews are computed on their worker thread, never on the event
loop: while the worker is held, the loop goes on answering (decisions, other routes) and the
picture waits; released, it is the right picture. No timing is asserted."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callgate.http.insight_routes import PICTURE_WORKER
from callgate.policy import compile_policy, parse_document
from callgate.policy.matrix import impact
from callgate.registry import ClientPolicy
from reference_policy import REFERENCE_DOCUMENT

from .http_support import ADMIN, CLIENT, POLICY_URL, Harness

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from policy_bench import largest_document

JSON = {**ADMIN, "Content-Type": "application/json"}
CHECK_URL = POLICY_URL + "check?action=pickup&ext=1000&target=1001"


@pytest.fixture(scope="module")
def largest() -> ClientPolicy:
    document = parse_document(largest_document())
    return ClientPolicy(CLIENT, 1, document, compile_policy(document))


class HeldWorker:
    """The worker thread kept busy until ``release()``: what waits for it cannot finish."""

    def __init__(self, api: Harness) -> None:
        self.gate = threading.Event()
        self.running = threading.Event()
        worker = api.client.app[PICTURE_WORKER]  # type: ignore[index]
        worker.submit(self.hold)

    def hold(self) -> None:
        self.running.set()
        self.gate.wait(30)  # bounded: a failing test must not hang the run

    def release(self) -> None:
        self.gate.set()


@pytest.fixture
def held(api: Harness) -> Iterator[HeldWorker]:
    worker = HeldWorker(api)
    assert worker.running.wait(5)
    yield worker
    worker.release()


async def serve_meanwhile(api: Harness, waiting: list[asyncio.Task[Any]]) -> None:
    """The loop answers other requests while ``waiting`` cannot finish (the worker is held)."""
    for _ in range(5):
        check = await api.client.get(CHECK_URL, headers=ADMIN)
        assert check.status == 200
        assert (await check.json())[
            "decision"
        ] == "allow"  # 1000 and 1001 share a pickup share group
        assert not any(task.done() for task in waiting)


async def test_the_largest_documents_summary_is_made_on_the_worker_while_the_loop_serves(
    api: Harness, largest: ClientPolicy, held: HeldWorker
) -> None:
    api.registry.install(largest)

    async def summary() -> dict[str, Any]:
        response = await api.client.get(POLICY_URL + "matrix/summary", headers=ADMIN)
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body

    # Two tabs at once: both wait for the one making of the picture.
    waiting = [asyncio.create_task(summary()), asyncio.create_task(summary())]
    await serve_meanwhile(api, waiting)
    held.release()
    first, second = await asyncio.wait_for(asyncio.gather(*waiting), 60)
    assert first == second
    assert first["policy_version"] == 1
    assert len(first["groups"]) == 100
    assert first["pairs"][0][0] == 200 * 199
    assert first["pairs"][0][1] == 200 * 200
    # eavesdrop_<ext of group-000> = [group-000, group-001]; whisper_<ext> = [group-000]
    assert first["allowed"]["eavesdrop"][0][:3] == [200 * 199, 200 * 200, 0]
    assert first["allowed"]["whisper"][0][:2] == [200 * 199, 0]
    assert first["allowed"]["replace"][5][5] == 200 * 199
    assert first["allowed"]["pickup"][5][6] == 0
    # Kept: the same version's summary again is the same bytes, with the worker free.
    again = await api.client.get(POLICY_URL + "matrix/summary", headers=ADMIN)
    assert await again.json() == first


async def test_one_extensions_view_of_the_largest_document_is_made_on_the_worker(
    api: Harness, largest: ClientPolicy, held: HeldWorker
) -> None:
    api.registry.install(largest)
    view = asyncio.create_task(api.client.get(POLICY_URL + "matrix/extension/1000", headers=ADMIN))
    await serve_meanwhile(api, [view])
    held.release()
    response = await asyncio.wait_for(view, 60)
    assert response.status == 200
    body = await response.json()
    assert len(body["others"]) == 20_000 - 1


async def test_a_preview_is_made_on_the_worker_while_the_loop_serves(
    api: Harness, largest: ClientPolicy, held: HeldWorker
) -> None:
    api.registry.install(largest)
    # A small candidate: read on the loop at once, so only the comparison has to wait.
    preview = asyncio.create_task(
        api.client.post(POLICY_URL + "preview", json=REFERENCE_DOCUMENT, headers=JSON)
    )
    await serve_meanwhile(api, [preview])
    held.release()
    response = await asyncio.wait_for(preview, 60)
    assert response.status == 200, await response.text()
    body = await response.json()
    candidate = parse_document(REFERENCE_DOCUMENT)
    expected = impact(largest.document, largest.compiled, candidate, compile_policy(candidate))
    assert body["base_version"] == 1
    assert body["became_denied"] == expected.became_denied
    assert body["became_allowed"] == expected.became_allowed
    assert body["became_denied"]["eavesdrop"] > 0


async def test_a_matrix_too_large_is_answered_from_the_worker_too(
    api: Harness, largest: ClientPolicy, held: HeldWorker
) -> None:
    api.registry.install(largest)
    matrix = asyncio.create_task(api.client.get(POLICY_URL + "matrix", headers=ADMIN))
    await serve_meanwhile(api, [matrix])
    held.release()
    response = await asyncio.wait_for(matrix, 60)
    assert response.status == 409
    assert (await response.json())["error"] == "matrix_too_large"
