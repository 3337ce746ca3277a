"""Console timings: the picture routes, and the console's first usable paint in Chromium.

    .venv/bin/python bench/console_bench.py [--runs N]

- matrix: ``GET .../matrix`` for a 200-extension client (10 groups of 20, mixed grants);
- summary: ``GET .../matrix/summary`` for the largest document policy.md allows (100 groups x
  200 extensions, bench/policy_bench.py's ``largest_document``);
- each route: "cold", the first request after the policy was stored (computed), and "warm", the
  median of the next ones (the same version's encoded picture is kept);
- loop lag: the longest the event loop was late to wake a 1 ms sleeper while a cold summary was
  being made (the pictures are made on a worker thread; a FastAGI answer waits at most that);
- write -> summary: a policy write (a new version of the largest document) answered, then the
  time until its summary is answered (cold: made for the new version);
- with grants: the matrix, the summary and an extension view again with 0, 100 and 1,000
  active grants in each client (each held by another extension, reaching one group; one in two
  of the 200-extension client's also lists an extension; 5 extensions protected), cold (made
  for a new supervision version: the protected list switched between two of the same size
  before each round) and warm, after the pages below (drawn without grants); ``--grants-only``
  measures only these;
- preview, with grants: ``POST .../preview`` of the largest client at each of those counts, cold
  (never cached: each request compares the two policies again), a candidate that swaps 10
  extensions between two groups grants name, keeps listen to each extension's own group
  for one group's members and shares pickup in half the groups (``candidate``);
  ``--preview-only`` measures only these;
- first paint: headless Chromium (the system's, /usr/bin/chromium) from navigation to the view
  shown (the matrix, or the summary table, visible) and to usable (a click on a cell answered:
  the matrix's explanation, the summary's note), signed in through sessionStorage.

The daemon runs in this process on loopback (no Manager). Route figures are wall time of a
whole HTTP request from a client on the same loop (the server's work plus loopback). Prints a
table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from policy_bench import largest_document
from pydantic import SecretStr

from callgate.config import Settings
from callgate.daemon import start

TOKEN = "console-bench-admin-token"  # noqa: S105 (a loopback bench)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def two_hundred() -> dict[str, Any]:
    groups = {f"team-{g}": [str(2000 + g * 20 + n) for n in range(20)] for g in range(10)}
    names = list(groups)
    document: dict[str, Any] = {
        "pickup_all": False,
        "groups": groups,
        "pickup_share_groups": names[:5],
        "phone_replace_groups": names[3:7],
    }
    for g, name in enumerate(names):
        for n, ext in enumerate(groups[name]):
            if n % 3 == 0:
                document[f"eavesdrop_{ext}"] = [name, names[(g + 1) % 10]]
            if n % 5 == 0:
                document[f"whisper_{ext}"] = [names[(g + 2) % 10]]
    return document


async def timed(http: aiohttp.ClientSession, path: str, runs: int) -> tuple[list[float], int]:
    times, size = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        async with http.get(path, headers=AUTH) as response:
            body = await response.read()
            assert response.status == 200, body[:300]
        times.append((time.perf_counter() - started) * 1000)
        size = len(body)
    return times, size


async def lag_while(work: asyncio.Task[Any]) -> float:
    """The longest a 1 ms sleep overslept, in ms, until ``work`` is done."""
    worst = 0.0
    for _ in range(100_000):  # bounded; ends with the work
        if work.done():
            break
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        worst = max(worst, time.perf_counter() - started - 0.001)
    return worst * 1000


async def cold_summaries(
    http: aiohttp.ClientSession, writes: int
) -> tuple[list[float], list[float]]:
    """After each of ``writes`` policy writes: the summary's answer time, and the loop's lag."""
    path = "/client/largest/call_control_group/matrix/summary"
    document = largest_document()
    times, lags = [], []
    for n in range(writes):
        document["allow_all"] = False
        document["pickup_all"] = n % 2 == 1  # a new version each time
        async with http.put(
            "/client/largest/call_control_group/", json=document, headers=AUTH
        ) as r:
            assert r.status == 200, await r.text()
        started = time.perf_counter()
        request = asyncio.ensure_future(timed(http, path, 1))
        lags.append(await lag_while(request))
        await request
        times.append((time.perf_counter() - started) * 1000)
    return times, lags


async def first_paint(
    base: str, client: str, selector: str, answer: str, runs: int
) -> tuple[list[float], list[float]]:
    from playwright.async_api import async_playwright

    assert CHROMIUM is not None
    shown, usable = [], []
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            for _ in range(runs):
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                state = json.dumps({"token": TOKEN, "client": client, "admin": True})
                await page.add_init_script(
                    f"sessionStorage.setItem('callgate.console', {json.dumps(state)})"
                )
                started = time.perf_counter()
                await page.goto(f"{base}/console#/{client}/picture")
                await page.locator(selector).wait_for()
                shown.append((time.perf_counter() - started) * 1000)
                await page.locator(f"{selector} td").nth(3).click()
                await page.locator(answer).wait_for()
                usable.append((time.perf_counter() - started) * 1000)
                await page.close()
        finally:
            await browser.close()
    return shown, usable


GRANT_COUNTS = (0, 100, 1000)
PICTURES = {
    "two-hundred": ("matrix", "matrix/extension/2000"),
    "largest": ("matrix/summary", "matrix/extension/1000"),
}
"""Per client, the routes measured with grants (the extension: a holder in both clients)."""


def members_of(document: dict[str, Any]) -> tuple[list[str], list[str]]:
    groups: dict[str, list[str]] = document["groups"]
    return list(groups), [ext for members in groups.values() for ext in members]


async def add_grants(
    http: aiohttp.ClientSession, client: str, document: dict[str, Any], have: int, want: int
) -> None:
    """Grants ``have`` to ``want`` of ``client`` (through the API), active for two hours."""
    names, exts = members_of(document)
    now = datetime.now(UTC)
    for n in range(have, want):
        body: dict[str, Any] = {
            "ext": exts[n * 7 % len(exts)],
            "action": ("eavesdrop", "whisper", "pickup")[n % 3],
            "groups": [names[n % len(names)]],
            "from": (now - timedelta(minutes=1)).isoformat(),
            "until": (now + timedelta(hours=2)).isoformat(),
            "note": "console bench",
        }
        if client == "two-hundred" and n % 2:
            listed = exts[(n * 13 + 1) % len(exts)]
            if listed != body["ext"]:
                body["extensions"] = [listed]
        async with http.post(f"/client/{client}/grants", json=body, headers=AUTH) as r:
            assert r.status == 201, await r.text()


async def protect(
    http: aiohttp.ClientSession, client: str, document: dict[str, Any], turn: int
) -> None:
    """A new supervision version (so every picture is cold), 5 extensions protected."""
    _, exts = members_of(document)
    protected = exts[5:10] if turn % 2 else exts[10:15]
    async with http.put(
        f"/client/{client}/call_control_settings",
        json={"protected_extensions": protected},
        headers=AUTH,
    ) as r:
        assert r.status == 200, await r.text()


def candidate(document: dict[str, Any]) -> dict[str, Any]:
    """The preview's candidate: the groups grants name change (10 members swap), and so do the
    listen and pickup rules of many extensions."""
    changed = json.loads(json.dumps(document))
    groups: dict[str, list[str]] = changed["groups"]
    names = list(groups)
    first, second = groups[names[1]], groups[names[2]]
    groups[names[1]], groups[names[2]] = [*second[:10], *first[10:]], [*first[:10], *second[10:]]
    for ext in groups[names[0]]:
        changed[f"eavesdrop_{ext}"] = [names[0]]
    changed["pickup_share_groups"] = names[: len(names) // 2]
    return changed


async def timed_preview(http: aiohttp.ClientSession, client: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    async with http.post(
        f"/client/{client}/call_control_group/preview", json=body, headers=AUTH
    ) as response:
        answer = await response.read()
        assert response.status == 200, answer[:300]
    return (time.perf_counter() - started) * 1000


async def with_grants(
    http: aiohttp.ClientSession, documents: dict[str, Any], runs: int, preview_only: bool = False
) -> None:
    """The picture routes cold and warm at each of ``GRANT_COUNTS``, and the preview."""
    have = 0
    rounds = max(3, runs // 3)
    for count in GRANT_COUNTS:
        for client, document in documents.items():
            await add_grants(http, client, document, have, count)
        have = count
        body = candidate(documents["largest"])
        times = []
        for turn in range(rounds):
            await protect(http, "largest", documents["largest"], turn)
            times.append(await timed_preview(http, "largest", body))
        print(
            f"{count:>5} grants  {'largest':<12} {'preview':<24}"
            f" cold median {statistics.median(times):6.1f} ms"
            f" (best {min(times):6.1f}, worst {max(times):6.1f})"
        )
        if preview_only:
            continue
        for client, document in documents.items():
            for route in PICTURES[client]:
                cold, warm = [], []
                for turn in range(rounds):
                    await protect(http, client, document, turn)
                    path = f"/client/{client}/call_control_group/{route}"
                    times, size = await timed(http, path, 3)
                    cold.append(times[0])
                    warm.extend(times[1:])
                print(
                    f"{count:>5} grants  {client:<12} {route:<24}"
                    f" cold median {statistics.median(cold):6.1f} ms"
                    f" (best {min(cold):6.1f}, worst {max(cold):6.1f})"
                    f"  warm median {statistics.median(warm):5.1f} ms  {size / 1024:.0f} KiB"
                )


def route_line(name: str, times: list[float], extra: str) -> str:
    """The first request computes the picture (cold); later ones of the same version are cached."""
    return (
        f"{name:<44} cold {times[0]:7.1f} ms  warm median {statistics.median(times[1:]):5.1f} ms"
        f"  {extra}"
    )


def line(name: str, times: list[float], extra: str = "") -> str:
    return (
        f"{name:<44} median {statistics.median(times):7.1f} ms  best {min(times):7.1f} ms"
        f"  worst {max(times):7.1f} ms  {extra}"
    )


async def first_paints(base: str, runs: int) -> None:
    rounds = max(3, runs // 3)
    shown, usable = await first_paint(base, "two-hundred", "#matrix", "#explanation", rounds)
    print(line("matrix view shown", shown))
    print(line("matrix view usable (a cell's click answered)", usable))
    shown, usable = await first_paint(
        base, "largest", "#summary", "#summary-cell:not(:empty)", rounds
    )
    print(line("summary view shown (large client)", shown))
    print(line("summary view usable (a cell's click answered)", usable))


async def main(runs: int, grants_only: bool, preview_only: bool) -> None:
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(
            agi=f"127.0.0.1:{free_port()}",
            http=f"127.0.0.1:{free_port()}",
            data_dir=Path(data),
            admin_token=SecretStr(TOKEN),
            grants_max_per_client=max(GRANT_COUNTS),
            policy_write_rate=10_000.0,  # the grants' POSTs: a bench, not a flood
            policy_write_burst=10_000,
        )
        services = await start(settings)
        host, port = settings.http_address
        base = f"http://{host}:{port}"
        try:
            async with aiohttp.ClientSession(base) as http:
                documents = {"two-hundred": two_hundred(), "largest": largest_document()}
                for client, document in documents.items():
                    async with http.put(
                        f"/client/{client}/call_control_group/", json=document, headers=AUTH
                    ) as r:
                        assert r.status == 200, await r.text()
                if grants_only or preview_only:
                    await with_grants(http, documents, runs, preview_only)
                    return
                matrix, size = await timed(
                    http, "/client/two-hundred/call_control_group/matrix", runs
                )
                print(
                    route_line(
                        "matrix, 200 extensions (40,000 pairs x 5)",
                        matrix,
                        f"{size / 1024:.0f} KiB",
                    )
                )
                summary, size = await timed(
                    http, "/client/largest/call_control_group/matrix/summary", runs
                )
                print(
                    route_line(
                        "summary, 20,000 extensions (100 x 100 groups)",
                        summary,
                        f"{size / 1024:.0f} KiB",
                    )
                )
                after, lags = await cold_summaries(http, 3)
                print(line("write answered -> its summary answered", after))
                print(line("loop lag while a summary is made", lags))
            if CHROMIUM is None:
                print("first paint: skipped (no chromium)")
            else:
                await first_paints(base, runs)
            # Last: the grants stay in both clients (the pages above are drawn without any).
            async with aiohttp.ClientSession(base) as http:
                await with_grants(http, documents, runs)
        finally:
            await services.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--grants-only", action="store_true", help="only the grants' figures")
    parser.add_argument("--preview-only", action="store_true", help="only the preview's figures")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.grants_only, arguments.preview_only))
