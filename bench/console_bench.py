"""Console timings: the picture routes, and the console's first usable paint in Chromium.

    .venv/bin/python bench/console_bench.py [--runs N]

- matrix: ``GET .../matrix`` for a 200-extension client (10 groups of 20, mixed grants);
- summary: ``GET .../matrix/summary`` for the largest document policy.md allows (100 groups x
  200 extensions, bench/policy_bench.py's ``largest_document``);
- each route: "cold", the first request after the policy was stored (computed), and "warm", the
  median of the next ones (the same version's encoded picture is kept);
- first paint: headless Chromium (the system's, /usr/bin/chromium) from navigation to a usable
  view (the matrix table, or the summary table, in the DOM), signed in through sessionStorage.

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


async def first_paint(base: str, client: str, selector: str, runs: int) -> list[float]:
    from playwright.async_api import async_playwright

    assert CHROMIUM is not None
    times = []
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
                times.append((time.perf_counter() - started) * 1000)
                await page.close()
        finally:
            await browser.close()
    return times


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


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(
            agi=f"127.0.0.1:{free_port()}",
            http=f"127.0.0.1:{free_port()}",
            data_dir=Path(data),
            admin_token=SecretStr(TOKEN),
        )
        services = await start(settings)
        host, port = settings.http_address
        base = f"http://{host}:{port}"
        try:
            async with aiohttp.ClientSession(base) as http:
                for client, document in (
                    ("two-hundred", two_hundred()),
                    ("largest", largest_document()),
                ):
                    async with http.put(
                        f"/client/{client}/call_control_group/", json=document, headers=AUTH
                    ) as r:
                        assert r.status == 200, await r.text()
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
            if CHROMIUM is None:
                print("first paint: skipped (no chromium)")
                return
            paint = await first_paint(base, "two-hundred", "#matrix", max(3, runs // 3))
            print(line("first usable paint, matrix view", paint))
            paint = await first_paint(base, "largest", "#summary", max(3, runs // 3))
            print(line("first usable paint, summary view (large client)", paint))
        finally:
            await services.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    asyncio.run(main(parser.parse_args().runs))
