"""What refusing duplicate keys costs when a JSON body is decoded (``callgate.http.body``).

    .venv/bin/python bench/json_body_bench.py [--quick]

Three bodies just under the 2 MiB limit, each decoded with plain ``json.loads`` and with
``parse_json`` (the same decoder plus the ``object_pairs_hook`` that finds repeated keys):

- policy: the largest policy document the rules allow (100 groups x 200 extensions, an
  ``eavesdrop_`` and a ``whisper_`` key per extension), padded with more grant keys to ~2 MiB;
  40,001 objects, mostly arrays of strings, as real bodies are;
- objects: the worst case for the hook, ~2 MiB of one-key objects (one Python call each);
- strings: one array of strings (no object at all, so no hook call: the floor).

Median and fastest of several runs (the two run alternately), in milliseconds. Prints a table;
asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

from callgate.http.body import parse_json

LIMIT = 2 * 1024 * 1024


def policy_body() -> bytes:
    groups = {f"group-{g:03}": [f"{1000 + g * 200 + n}" for n in range(200)] for g in range(100)}
    document: dict[str, object] = {"groups": groups}
    for g, name in enumerate(groups):
        for ext in groups[name]:
            document[f"eavesdrop_{ext}"] = [name, f"group-{(g + 1) % 100:03}"]
            document[f"whisper_{ext}"] = [name]
    raw = json.dumps(document).encode()
    assert len(raw) < LIMIT
    return raw


def objects_body() -> bytes:
    one = b'{"k": 1},'
    count = (LIMIT - 2) // len(one)
    return b"[" + one * (count - 1) + b'{"k": 1}]'


def strings_body() -> bytes:
    one = b'"1234567890",'
    count = (LIMIT - 2) // len(one)
    return b"[" + one * (count - 1) + b'"1234567890"]'


def time_pair(first: Callable[[], object], second: Callable[[], object], runs: int) -> list[float]:
    """Median and fastest of each, in ms; run alternately, after a collection each, so that
    other load on the machine and the garbage collector weigh on both alike."""
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for call, into in ((first, samples[0]), (second, samples[1])):
            gc.collect()
            start = time.perf_counter_ns()
            call()
            into.append((time.perf_counter_ns() - start) / 1e6)
    return [f(s) for s in samples for f in (statistics.median, min)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke run)")
    runs = 3 if parser.parse_args().quick else 21
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average {load}")
    print(
        "body      size (KiB)  json.loads median/min (ms)  parse_json median/min (ms)  ratio of min"
    )
    bodies = (("policy", policy_body), ("objects", objects_body), ("strings", strings_body))
    for name, build in bodies:
        raw = build()
        plain, plain_min, checked, checked_min = time_pair(
            lambda raw=raw: json.loads(raw), lambda raw=raw: parse_json(raw, "body"), runs
        )
        print(
            f"{name:<9} {len(raw) // 1024:>10}  {plain:>15.1f} / {plain_min:<8.1f}"
            f"  {checked:>15.1f} / {checked_min:<8.1f}  {checked_min / plain_min:>5.2f}"
        )


if __name__ == "__main__":
    main()
