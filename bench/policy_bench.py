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

Supervision (protected extensions and grants that expire, ``policy/supervision.py``): for the
largest and the typical document, the same requests decided without supervision and with 1,000
grants active at ``now`` (spread over the document's extensions: each grant to a random
extension, for eavesdrop, whisper or pickup, reaching one group or three extensions) and 20
protected extensions; "grantees" draws every request from an extension holding grants, so that
the document's denials all go to the grant index (the worst case; in the typical document every
extension holds about 20 grants, so its "mixed" is that worst case too). Both are timed in
turns, request by request, together with a third variant, the 20 protected extensions alone (no
grant): "grants/protected" is the cost of the grants themselves, the issue's goal; "grants/none"
that of supervision as a whole. Also the time to compile the supervision.
Prints tables; asserts nothing.
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
from datetime import UTC, datetime, timedelta
from typing import Any

from callgate.policy import CompiledPolicy, compile_policy, decide, parse_document
from callgate.policy.grants import Grant, parse_grant
from callgate.policy.settings import parse_settings
from callgate.policy.supervision import Supervision, compile_supervision

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


def time_interleaved(
    policy: CompiledPolicy,
    variants: tuple[Supervision | None, ...],
    now: datetime,
    drawn: list[tuple[str, ...]],
    overhead: int,
) -> list[list[int]]:
    """Each request decided once per variant, back to back, each variant first in turn: load
    that comes and goes on the machine then weighs on every variant alike."""
    clock = time.perf_counter_ns
    samples: list[list[int]] = [[] for _ in variants]
    turns = list(zip(variants, samples, strict=True))
    for index, (action, ext, target) in enumerate(drawn):
        # Untimed first: whichever variant came first would pay for the request's cache misses.
        decide(policy, action, ext, target, now=now, supervision=variants[-1])
        at = index % len(turns)
        for supervision, kept in turns[at:] + turns[:at]:
            start = clock()
            decide(policy, action, ext, target, now=now, supervision=supervision)
            kept.append(max(clock() - start - overhead, 0))
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


NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def some_grants(document: dict[str, Any], count: int, rng: random.Random) -> list[Grant]:
    exts = sorted({ext for members in document["groups"].values() for ext in members})
    names = list(document["groups"])
    grants = []
    for n in range(count):
        ext = rng.choice(exts)
        reach: dict[str, list[str]] = (
            {"groups": [rng.choice(names)]}
            if n % 2
            else {"extensions": [e for e in rng.sample(exts, 4) if e != ext][:3]}
        )
        body = {
            "id": f"g{n:05}",
            "ext": ext,
            "action": rng.choice(("eavesdrop", "whisper", "pickup")),
            **reach,
            "from": (NOW - timedelta(hours=1)).isoformat(),
            "until": (NOW + timedelta(hours=1, seconds=n)).isoformat(),
            "note": "bench",
            "created_by": "bench",
        }
        grants.append(parse_grant(body))
    return grants


def supervision_report(name: str, document: dict[str, Any], decisions: int) -> list[str]:
    rng = random.Random(2027)
    parsed = parse_document(document)
    policy = compile_policy(parsed)
    grants = some_grants(document, 1000, rng)
    exts = sorted({ext for members in document["groups"].values() for ext in members})
    settings = parse_settings({"protected_extensions": rng.sample(exts, 20)})
    protected_only = compile_supervision(settings, [], parsed)
    supervision = compile_supervision(settings, grants, parsed)
    compile_ns = time_calls(lambda: compile_supervision(settings, grants, parsed), 5)
    grantees = sorted({grant.ext for grant in grants})
    drawn = requests(document, decisions, rng)
    worst = [
        (action, rng.choice(grantees), target)
        for action, _, target in requests(document, decisions, rng)
    ]
    overhead = timer_overhead_ns()
    variants = (None, protected_only, supervision)
    rows = []
    for label, batch in (("mixed", drawn), ("grantees", worst)):
        time_interleaved(policy, variants, NOW, batch, overhead)  # fill the memos first
        none, protected, granted = (
            statistics.median(samples)
            for samples in time_interleaved(policy, variants, NOW, batch, overhead)
        )
        rows.append(
            f"{name:<9} {label:<9} {none / 1e3:>7.3f} {protected / 1e3:>9.3f}"
            f" {granted / 1e3:>9.3f} {granted / protected:>9.2f} {granted / none:>7.2f}"
            f" {statistics.median(compile_ns) / 1e6:>9.2f}"
        )
    return rows


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
    print(
        "\nsupervision: 1,000 active grants and 20 protected extensions (warm decisions, us)\n"
        "document  requests     none protected    grants    grants/   grants/   compile\n"
        "                                  only             protected   none       (ms)"
    )
    for name, build in (("largest", largest_document), ("typical", typical_document)):
        gc.collect()
        for row in supervision_report(name, build(), decisions // 2):
            print(row)


if __name__ == "__main__":
    main()
