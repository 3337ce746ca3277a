"""One client's PIN writes never slow another client's calls: PIN checks hash on threads of their
own, PIN writes take turns between clients, and a client over its PIN write limits gets 429.

The flood runs over real HTTP against the real application, the replace session over real
FastAGI against the fake Asterisk, on one SQLite store; what is asserted is order (client B's
session ends while client A's writes are still queued), never a duration."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from callgate.agi.record import DecisionRecorder
from callgate.agi.server import AgiServer
from callgate.http.app import HttpDeps, build_app
from callgate.metrics import Metrics
from callgate.registry import PolicyRegistry
from callgate.replace.limits import PinLimit, PinWriteLimiter, PinWriteLimits, PinWritesRefused
from callgate.replace.pins import (
    WRITE_THREAD_NICE,
    FairSlots,
    PinHasher,
    ScryptParams,
    hash_pin,
)
from callgate.replace.service import ReplaceService
from callgate.store import Store, open_store
from fake_asterisk import FakeChannel, call, request_environment
from reference_policy import REFERENCE_DOCUMENT
from wiring import app_services

from .conftest import FAST_SCRYPT, FakeAudit, agi_server
from .conftest import client_policy as make_policy

ADMIN_TOKEN = "admin-token-pin-fairness"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
A, B = "acme", "beta"
B_PIN = "97531"
FLOOD = 150


# --------------------------------------------------------------------------- FairSlots


async def test_fair_slots_let_clients_in_by_turns() -> None:
    slots = FairSlots(1)
    order: list[str] = []

    async def job(name: str) -> None:
        await slots.acquire(name[0])
        order.append(name)
        await asyncio.sleep(0)
        slots.release()

    await slots.acquire("x")  # the slot is busy: everything below waits
    jobs = [asyncio.create_task(job(f"a{i}")) for i in range(5)]
    jobs.append(asyncio.create_task(job("b0")))
    jobs.append(asyncio.create_task(job("c0")))
    await asyncio.sleep(0)
    assert (slots.waiting(), slots.waiting("a"), slots.waiting("b")) == (7, 5, 1)
    slots.release()
    await asyncio.gather(*jobs)
    # b and c, who came after a's five, waited for one of a's jobs each, not for all five
    assert order == ["a0", "b0", "c0", "a1", "a2", "a3", "a4"]
    assert slots.waiting() == 0


async def test_a_cancelled_waiter_leaves_its_turn_and_passes_a_handed_slot_on() -> None:
    slots = FairSlots(1)
    await slots.acquire("a")
    gone = asyncio.create_task(slots.acquire("b"))
    stays = asyncio.create_task(slots.acquire("c"))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert slots.waiting() == 1
    slots.release()
    await stays  # c got the slot b no longer waited for
    # handed over, then cancelled before it ran: the slot goes on to the next waiter
    late = asyncio.create_task(slots.acquire("d"))
    after = asyncio.create_task(slots.acquire("e"))
    await asyncio.sleep(0)
    slots.release()  # to d
    late.cancel()
    await asyncio.gather(late, return_exceptions=True)
    await asyncio.wait_for(after, 5)


# --------------------------------------------------------------------------- the limiter


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_is_a_token_bucket_per_client() -> None:
    ticks = Ticks()
    limiter = PinWriteLimiter(PinWriteLimits(rate=0.5, burst=3, concurrency=10), ticks)
    for _ in range(3):
        with limiter.admit(A):
            pass
    with pytest.raises(PinWritesRefused) as refused:
        limiter.admit(A).__enter__()
    assert (refused.value.limit, refused.value.retry_after) == (PinLimit.RATE, 2)
    with limiter.admit(B):  # another client's bucket is full
        pass
    ticks.now += 1.5  # 0.75 of a token: not yet
    with pytest.raises(PinWritesRefused) as refused:
        limiter.admit(A).__enter__()
    assert refused.value.retry_after == 1
    ticks.now += 0.5
    with limiter.admit(A):
        pass


def test_writes_in_progress_are_bounded_per_client_without_using_up_the_rate() -> None:
    limiter = PinWriteLimiter(PinWriteLimits(rate=1, burst=3, concurrency=2), Ticks())
    with limiter.admit(A), limiter.admit(A):
        assert limiter.in_flight(A) == 2
        for _ in range(5):
            with pytest.raises(PinWritesRefused) as refused:
                limiter.admit(A).__enter__()
            assert (refused.value.limit, refused.value.retry_after) == (PinLimit.CONCURRENCY, 1)
        with limiter.admit(B):
            pass
    assert limiter.in_flight(A) == 0
    with limiter.admit(A):  # the refusals took no token: one of the three is left
        pass


# --------------------------------------------------------------------------- HTTP + FastAGI


@dataclass
class Rig:
    http: TestClient[object, object]
    agi: AgiServer
    service: ReplaceService
    hasher: PinHasher
    limiter: PinWriteLimiter
    audit: FakeAudit


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(str(tmp_path / "callgate.sqlite3"))
    yield store
    await store.close()


async def start_rig(store: Store, hasher: PinHasher, limits: PinWriteLimits) -> Rig:
    registry = PolicyRegistry()
    for client in (A, B):
        registry.load(make_policy(REFERENCE_DOCUMENT, 1, client))
    audit, metrics, limiter = FakeAudit(), Metrics(), PinWriteLimiter(limits)
    recorder = DecisionRecorder(audit, metrics)
    service = ReplaceService(store.replace, registry, recorder, hasher=hasher, pin_writes=limiter)
    app = build_app(HttpDeps(app_services(store, registry, service), metrics, ADMIN_TOKEN))
    # no connection limit on the client side: the whole flood is in flight at once
    connector = aiohttp.TCPConnector(limit=0)
    http: TestClient[object, object] = TestClient(
        TestServer(app, host="127.0.0.1"), connector=connector
    )
    await http.start_server()
    agi = agi_server(service, registry, audit, metrics)
    await agi.start()
    return Rig(http, agi, service, hasher, limiter, audit)


async def stop_rig(rig: Rig) -> None:
    await rig.agi.stop()
    await rig.http.close()
    rig.service.close()


async def put_pin(rig: Rig, client: str, ext: str, pin: str) -> aiohttp.ClientResponse:
    url = f"/client/{client}/extension/{ext}/replace_pin"
    resp = await rig.http.put(url, json={"pin": pin}, headers=ADMIN)
    await resp.read()
    return resp


async def replace_session(rig: Rig, client: str, digits: str) -> dict[str, str]:
    channel = FakeChannel(variables={"CALLGATE_EXT": "100"}, dtmf=[digits])
    env = request_environment("replace", client, "100", "101", name="get-data-pin.txt")
    await call(rig.agi.port, env, channel)
    return channel.variables


async def test_a_flood_of_pin_writes_does_not_hold_up_another_clients_call(store: Store) -> None:
    # Every write of A's flood is admitted (limits out of the way) and queues for the one write
    # thread; B's PIN is cheap to check, A's writes cost more: if B's check queued behind them
    # (as it did when checks and writes shared one queue), it would end after the last.
    hasher = PinHasher(ScryptParams(log2_n=12), verify_threads=1, write_threads=1)
    limits = PinWriteLimits(rate=1000, burst=10 * FLOOD, concurrency=10 * FLOOD)
    rig = await start_rig(store, hasher, limits)
    now = datetime.now(UTC)
    await store.replace.set_pin(B, "101", hash_pin(B_PIN, FAST_SCRYPT), now)
    try:
        flood = [
            asyncio.create_task(put_pin(rig, A, str(200 + i), f"{i:04d}")) for i in range(FLOOD)
        ]
        for _ in range(3000):  # until every write of the flood is admitted or answered
            answered = sum(task.done() for task in flood)
            if rig.limiter.in_flight(A) + answered == FLOOD:
                break
            await asyncio.sleep(0.005)
        assert rig.limiter.in_flight(A) + sum(t.done() for t in flood) == FLOOD
        assert rig.hasher.writes_waiting(A) > 0  # the flood is queued
        assert rig.hasher.writes_waiting() == rig.hasher.writes_waiting(A)

        answer = await replace_session(rig, B, B_PIN)

        assert (answer["CALLGATE_DECISION"], answer["CALLGATE_REASON"]) == (
            "ALLOW",
            "phone_replace_group",
        )
        # B's check did not wait for A's queue to drain: A's writes are still in progress
        assert rig.limiter.in_flight(A) > 1
        # B's own PIN write waits for one of A's at most, not for A's queue
        assert (await put_pin(rig, B, "102", "2468")).status == 204
        assert rig.limiter.in_flight(A) > 1

        statuses = [(await task).status for task in flood]
        assert statuses == [204] * FLOOD
        assert await store.replace.pin_hash(A, str(200 + FLOOD - 1)) is not None
    finally:
        await stop_rig(rig)


async def test_over_the_rate_is_429_with_retry_after_and_other_clients_still_write(
    store: Store,
) -> None:
    hasher = PinHasher(FAST_SCRYPT)
    rig = await start_rig(store, hasher, PinWriteLimits(rate=0.01, burst=3, concurrency=10))
    try:
        for ext in ("101", "102", "103"):
            assert (await put_pin(rig, A, ext, "1234")).status == 204
        resp = await put_pin(rig, A, "104", "1234")
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "100"
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert body["error"] == "rate_limited"
        assert body["message"]
        assert body["details"] == [{"limit": "pin_write_rate", "retry_after": 100}]
        assert "1234" not in await resp.text()
        assert await store.replace.pin_hash(A, "104") is None  # nothing was written

        assert (await put_pin(rig, B, "101", "1234")).status == 204
        # a malformed PIN is a 422 and does not count against the limits
        assert (await put_pin(rig, B, "102", "12")).status == 422
        # a right PIN still works for A's phones: calls are not PIN writes
        answer = await replace_session(rig, A, "1234")
        assert answer["CALLGATE_DECISION"] == "ALLOW"
    finally:
        await stop_rig(rig)


async def test_too_many_writes_in_progress_is_429(store: Store) -> None:
    # One write thread and a costly hash: two writes of A stay in progress long enough.
    hasher = PinHasher(ScryptParams(log2_n=16), write_threads=1)
    rig = await start_rig(store, hasher, PinWriteLimits(rate=100, burst=100, concurrency=2))
    try:
        busy = [asyncio.create_task(rig.service.set_pin(A, ext, "1234")) for ext in ("1", "2")]
        for _ in range(100):
            if rig.limiter.in_flight(A) == 2:
                break
            await asyncio.sleep(0)
        resp = await put_pin(rig, A, "3", "1234")
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"
        body = await resp.json()
        assert (body["error"], body["details"][0]["limit"]) == (
            "rate_limited",
            "pin_write_concurrency",
        )
        await asyncio.gather(*busy)
        assert (await put_pin(rig, A, "3", "1234")).status == 204
    finally:
        await stop_rig(rig)


async def test_the_openapi_document_describes_the_429(store: Store) -> None:
    rig = await start_rig(store, PinHasher(FAST_SCRYPT), PinWriteLimits())
    try:
        resp = await rig.http.get("/openapi.json")
        document = await resp.json()
        put = document["paths"]["/client/{client_id}/extension/{ext}/replace_pin"]["put"]
        assert "Retry-After" in put["responses"]["429"]["headers"]
    finally:
        await stop_rig(rig)


@pytest.mark.skipif(sys.platform != "linux", reason="a nice value per thread is Linux's")
async def test_pin_writes_run_at_a_lower_priority_than_pin_checks() -> None:
    hasher = PinHasher(FAST_SCRYPT, verify_threads=1, write_threads=1)
    try:
        encoded = await hasher.hash("2468", A)
        assert await hasher.verify("2468", encoded, B)
        nice = {
            thread.name.rsplit("_", 1)[0]: os.getpriority(os.PRIO_PROCESS, thread.native_id)
            for thread in threading.enumerate()
            if thread.native_id is not None
            and thread.name.startswith("callgate-pin-")
            and thread.name.endswith("_0")
        }
        base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert nice["callgate-pin-verify"] == base
        assert nice["callgate-pin-write"] == min(19, base + WRITE_THREAD_NICE)
    finally:
        hasher.close()
