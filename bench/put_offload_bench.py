"""Where to validate a large PUT body: on the loop, in a thread, or in a worker process.

    .venv/bin/python bench/put_offload_bench.py [--docs 20] [--streams 1,4]

A loop-lag probe stands in for another client's FastAGI sessions: it sleeps 1 ms on the event
loop, again and again, and records how late each wake-up is. Meanwhile ``streams`` tasks each
prepare ``docs`` maximum-size documents (policy_bench.largest_document, ~1.7 MB of JSON) the way a
PUT does: decode, validate, canonical JSON, compile. Three ways:

- inline: all of it on the loop;
- thread: decode/validate/encode in ``asyncio.to_thread``, compile on the loop (pydantic-core and
  json hold the GIL for the whole call, so the loop waits for them anyway);
- process: ``policy_writes.Preparer`` (a spawned worker; the loop unpickles the result in chunks
  and compiles).

Also the cost of one small (200-byte) body inline and through the worker, which sets the size
threshold (``policy_offload_bytes``). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

from policy_bench import largest_document

from callgate.http.body import parse_json
from callgate.http.policy_worker import document_from_body
from callgate.http.policy_writes import Preparer, WriteConfig
from callgate.policy import PolicyDocument, compile_policy
from callgate.store.policies import canonical_json

Prepare = Callable[[bytes], Awaitable[tuple[PolicyDocument, str]]]


def prepare_here(raw: bytes) -> tuple[PolicyDocument, str]:
    document = document_from_body(parse_json(raw, "request body"))
    return document, canonical_json(document)


async def inline(raw: bytes) -> tuple[PolicyDocument, str]:
    return prepare_here(raw)


async def threaded(raw: bytes) -> tuple[PolicyDocument, str]:
    return await asyncio.to_thread(prepare_here, raw)


async def probe(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append((time.perf_counter() - start - 0.001) * 1000)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(name: str, prepare: Prepare, raw: bytes, docs: int, streams: int) -> None:
    lags: list[float] = []
    stop = asyncio.Event()
    prober = asyncio.create_task(probe(lags, stop))
    await asyncio.sleep(0.05)
    lags.clear()

    async def stream() -> None:
        for _ in range(docs):
            document, _ = await prepare(raw)
            compile_policy(document)

    start = time.perf_counter()
    await asyncio.gather(*(stream() for _ in range(streams)))
    elapsed = time.perf_counter() - start
    stop.set()
    await prober
    per_doc = elapsed * 1000 / (docs * streams)
    print(
        f"{name:8} {streams:7} {per_doc:9.1f} {statistics.median(lags):8.2f}"
        f" {pct(lags, 0.99):8.2f} {max(lags):8.2f}"
    )


async def small_latency(prepare: Prepare, raw: bytes, runs: int = 200) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await prepare(raw)
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20, help="documents per stream")
    parser.add_argument("--streams", default="1,4", help="concurrent streams, comma-separated")
    args = parser.parse_args()
    raw = json.dumps(largest_document()).encode()
    small = json.dumps({"groups": {"support": ["100", "101"]}, "eavesdrop_100": ["support"]})
    preparer = Preparer(WriteConfig(offload_bytes=0, workers=1))
    await preparer.prepare(raw)  # start the worker outside the measurements
    print(f"document: {len(raw):,} bytes; lag = how late a 1 ms sleep on the loop wakes (ms)")
    print(f"{'mode':8} {'streams':>7} {'ms/doc':>9} {'lag p50':>8} {'lag p99':>8} {'lag max':>8}")
    try:
        for streams in (int(s) for s in args.streams.split(",")):
            for name, prepare in (
                ("inline", inline),
                ("thread", threaded),
                ("process", preparer.prepare),
            ):
                await run(name, prepare, raw, args.docs, streams)
        small_raw = small.encode()
        print(f"small body ({len(small_raw)} bytes), median of 200:")
        print(f"  inline  {await small_latency(inline, small_raw):8.0f} us")
        print(f"  process {await small_latency(preparer.prepare, small_raw):8.0f} us")
        for size in (16_384, 65_536, 262_144):
            groups = {f"g{i}": [str(1000 + i * 10 + j) for j in range(10)] for i in range(100)}
            doc: dict[str, object] = {"groups": groups}
            n = 0
            while len(json.dumps(doc)) < size:
                doc[f"eavesdrop_{2000 + n}"] = [f"g{n % 100}"]
                n += 1
            body = json.dumps(doc).encode()
            here = await small_latency(inline, body, 50)
            there = await small_latency(preparer.prepare, body, 50)
            print(f"  {len(body):>7} bytes: inline {here:8.0f} us, process {there:8.0f} us")
    finally:
        await preparer.close()


if __name__ == "__main__":
    asyncio.run(main())
