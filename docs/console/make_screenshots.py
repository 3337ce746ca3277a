"""Screenshots of every console view, at 1280x800, into docs/console/*.png.

    .venv/bin/python docs/console/make_screenshots.py

Runs the daemon in this process on loopback with the fake Manager of the test suite and a small
demo client (the reference policy plus a few extensions, one protected extension and one grant),
starts one listen session, then drives the system's headless Chromium (/usr/bin/chromium)
through Playwright.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))

from console.daemon_support import (  # noqa: E402
    ADMIN,
    base_url,
    client_token,
    put_policy,
    running_daemon,
    start_listen,
)
from fake_ami import FakeAmi  # noqa: E402

CLIENT = "acme"
DEMO = {
    "pickup_all": False,
    "groups": {
        "support": ["100", "101", "104", "105"],
        "sales": ["102", "101", "106"],
        "hr": ["100", "101", "103"],
        "night": ["104", "105", "106", "107"],
    },
    "pickup_share_groups": ["support", "sales", "night"],
    "phone_replace_groups": ["support"],
    "eavesdrop_100": ["support", "night"],
    "whisper_101": ["sales", "hr"],
    "eavesdrop_107": ["night"],
}
SETTINGS = {"protected_extensions": ["103"]}
GRANT = {
    "ext": "102",
    "action": "eavesdrop",
    "extensions": ["105"],
    "note": "coaching the night shift, ticket HR-123",
}
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


async def main() -> None:
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "needs the system's chromium"
    fake = FakeAmi()
    await fake.start()
    with tempfile.TemporaryDirectory() as data:
        async with running_daemon(Path(data), fake) as services:
            await put_policy(
                services, CLIENT, {k: v for k, v in DEMO.items() if k != "eavesdrop_107"}
            )
            await put_policy(services, CLIENT, DEMO)
            now = datetime.now(UTC).replace(microsecond=0)
            grant = {
                **GRANT,
                "from": (now - timedelta(hours=1)).isoformat(),
                "until": (now + timedelta(hours=8)).isoformat(),
            }
            async with aiohttp.ClientSession(base_url(services)) as http:
                url = f"/client/{CLIENT}/"
                async with http.put(url + "call_control_settings", json=SETTINGS, headers=ADMIN):
                    pass
                async with http.post(url + "grants", json=grant, headers=ADMIN):
                    pass
            token = await client_token(services, CLIENT, "ops-console")
            await start_listen(services, fake, CLIENT, "100", "104", "1700000100.1")
            base = base_url(services)
            async with async_playwright() as driver:
                browser = await driver.chromium.launch(executable_path=chromium, args=ARGS)
                page = await browser.new_page(viewport={"width": 1280, "height": 800})

                async def shot(name: str) -> None:
                    await page.wait_for_timeout(300)
                    await page.screenshot(path=str(HERE / f"{name}.png"))
                    print("wrote", HERE / f"{name}.png")

                await page.goto(base + "/console")
                await page.get_by_label("API token").fill(token)
                await page.get_by_label("Client id").fill(CLIENT)
                await shot("signin")
                await page.get_by_role("button", name="Open client").click()
                await page.locator("#matrix").wait_for()
                await page.locator('#matrix td[data-row="100"][data-col="104"]').click()
                await shot("picture")
                await page.locator('#matrix td[data-row="102"][data-col="105"]').click()
                await page.locator("#supervision").scroll_into_view_if_needed()
                await shot("supervision")
                await page.get_by_label("Action", exact=True).select_option("eavesdrop")
                await page.get_by_label("Find extension").fill("104")
                await page.get_by_role("button", name="Show row and column").click()
                await page.locator("#ext-row").wait_for()
                await page.locator("#ext-title").scroll_into_view_if_needed()
                await shot("extension")
                await page.get_by_role("link", name="Edit policy").click()
                edited = {k: v for k, v in DEMO.items() if k != "eavesdrop_100"}
                await page.get_by_label("Policy document (JSON)").fill(json.dumps(edited, indent=2))
                await page.get_by_role("button", name="Check and preview").click()
                await page.locator("#impact").scroll_into_view_if_needed()
                await shot("editor")
                await page.get_by_role("link", name="History").click()
                await page.locator("#history").wait_for()
                await shot("history")
                await page.get_by_role("link", name="Live").click()
                await page.locator("#sessions-table").wait_for()
                await shot("live")
                await page.get_by_role("link", name="Audit").click()
                await page.locator("#audit-table").wait_for()
                await shot("audit")
                await page.set_viewport_size({"width": 420, "height": 800})
                await page.get_by_role("link", name="Permissions").click()
                await page.locator("#matrix").wait_for()
                await shot("narrow")
                await browser.close()
    await fake.close()


if __name__ == "__main__":
    asyncio.run(main())
