"""Policy core timings: one decision (a mix of actions) and one compile, for two documents.

    .venv/bin/python bench/policy_bench.py [--quick]

- largest: the biggest document policy.md allows, 100 groups x 200 extensions (20,000 distinct
  extensions), every group a pickup share and phone replace group, every extension with an
  eavesdrop grant (its own group and the next) and a whisper grant (its own group);
- distinct: the same, but nearly every extension granted a list of groups of its own (the worst
  case for compiling: nothing to share);
- typical: 10 groups, 50 extensions (5 each), a few grants.

A decision is timed call by call (perf_counter_ns, the timer's own cost subtracted), on requests
drawn at random from the document's extensions: directed and group forms of pickup, eavesdrop and
whisper, replace and restore. "cold" is the first pass over the requests right after compiling
(the tables built on first use are filled then), "warm" a second pass over the same requests.
Compile: median and fastest of several runs (other load on the machine shows in the median).
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from callgate.policy import CompiledPolicy, compile_policy, decide, parse_document

ACTIONS = ("pickup", "eavesdrop", "whisper")


def largest_document() -> dict[str, Any]:
    groups = {f"group-{g:03}": [f"{1000 + g * 200 + n}" for n in range(200)] for g in range(100)}
    names = list(groups)
    document: dict[str, Any] = {
        "allow_all": False,
        "pickup_all": False,
        "groups": groups,
        "pickup_share_groups": names,
        "phone_replace_groups": names,
    }
    for index, name in enumerate(names):
        following = names[(index + 1) % len(names)]
        for ext in groups[name]:
            document[f"eavesdrop_{ext}"] = [name, following]
            document[f"whisper_{ext}"] = [name]
    return document


def distinct_grants_document() -> dict[str, Any]:
    """The largest document again, but (nearly) every extension granted its own list of groups."""
    document = largest_document()
    names = list(document["groups"])
    for g, name in enumerate(names):
        for n, ext in enumerate(document["groups"][name]):
            document[f"eavesdrop_{ext}"] = [name, names[(g + 1 + n) % 100]]
            document[f"whisper_{ext}"] = [names[(g + n) % 100], names[(g + 3 * n + 7) % 100]]
    return document


def typical_document() -> dict[str, Any]:
    groups = {f"team-{g}": [f"{100 + g * 5 + n}" for n in range(5)] for g in range(10)}
    names = list(groups)
    return {
        "pickup_all": True,
        "groups": groups,
        "pickup_share_groups": names[:6],
        "phone_replace_groups": names[:3],
        "eavesdrop_100": names[:4],
        "eavesdrop_101": [names[0]],
        "whisper_100": names[:2],
        "whisper_105": [names[1], names[2]],
    }


def requests(document: dict[str, Any], count: int, rng: random.Random) -> list[tuple[str, ...]]:
    exts = sorted({ext for members in document["groups"].values() for ext in members})
    drawn: list[tuple[str, ...]] = []
    for _ in range(count):
        ext = rng.choice(exts)
        match rng.randrange(8):
            case 0 | 1 | 2:
                drawn.append((rng.choice(ACTIONS), ext, rng.choice(exts)))
            case 3 | 4:
                drawn.append((rng.choice(ACTIONS), ext, ""))
            case 5 | 6:
                drawn.append(("replace", ext, rng.choice(exts)))
            case _:
                drawn.append(("restore", ext, ""))
    return drawn


def timer_overhead_ns(samples: int = 100_000) -> int:
    clock = time.perf_counter_ns
    costs = []
    for _ in range(samples):
        start = clock()
        costs.append(clock() - start)
    return int(statistics.median(costs))


def time_decisions(
    policy: CompiledPolicy, drawn: list[tuple[str, ...]], overhead: int
) -> list[int]:
    clock = time.perf_counter_ns
    samples = []
    for action, ext, target in drawn:
        start = clock()
        decide(policy, action, ext, target)
        samples.append(max(clock() - start - overhead, 0))
    return samples


def time_calls(call: Callable[[], object], runs: int) -> list[int]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - start)
    return samples


def percentile(samples: list[int], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def grants(document: dict[str, Any]) -> int:
    return sum(key.startswith(("eavesdrop_", "whisper_")) for key in document)


def report(name: str, document: dict[str, Any], decisions: int, runs: int) -> str:
    rng = random.Random(2026)
    parsed = parse_document(document)
    parse_ns = time_calls(lambda: parse_document(document), max(runs // 5, 3))
    compile_ns = time_calls(lambda: compile_policy(parsed), runs)
    drawn = requests(document, decisions, rng)
    overhead = timer_overhead_ns()
    policy = compile_policy(parsed)
    cold = time_decisions(policy, drawn, overhead)
    warm = time_decisions(policy, drawn, overhead)
    us, ms = 1e3, 1e6
    return (
        f"{name:<9} {len(document['groups']):>6} {grants(document):>7}"
        f" {statistics.median(warm) / us:>8.2f} {percentile(warm, 0.99) / us:>7.2f}"
        f" {statistics.median(cold) / us:>8.2f} {percentile(cold, 0.99) / us:>7.2f}"
        f" {statistics.median(compile_ns) / ms:>8.2f} {min(compile_ns) / ms:>7.2f}"
        f" {statistics.median(parse_ns) / ms:>8.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    args = parser.parse_args()
    decisions, runs = (20_000, 5) if args.quick else (200_000, 30)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average {load}")
    print(
        "                          warm decision    cold decision      compile       parse\n"
        "document  groups  grants   median     p99   median     p99   median     min   median\n"
        "                            (us)     (us)    (us)     (us)    (ms)     (ms)    (ms)"
    )
    documents = (
        ("largest", largest_document),
        ("distinct", distinct_grants_document),
        ("typical", typical_document),
    )
    for name, build in documents:
        gc.collect()
        print(report(name, build(), decisions, runs))


if __name__ == "__main__":
    main()
