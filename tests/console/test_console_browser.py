"""The operator console in a real browser: headless Chromium (the system's) driven by Playwright,
against the whole daemon on loopback with the fake Manager.

Each test signs in as a person would (a client token typed into the form) and reads the page
the way a person would see it; what the server did is checked on the server's side (the store,
the fake Manager's received actions).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from callgate.daemon import Services
from fake_ami import FakeAmi
from reference_policy import REFERENCE_DOCUMENT

from .conftest import CHROMIUM, CHROMIUM_ARGS, CLIENT
from .daemon_support import ADMIN, base_url, client_token, put_policy, start_listen

playwright_api = pytest.importorskip("playwright.async_api", reason="pip install playwright")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)"
)

Page = Any


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def open_console(
    browser: Any, services: Services, token: str, client: str, *, signed_in: bool = True
) -> Page:
    """Sign in as a person does; ``signed_in``: then wait for the picture, as a person would."""
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    outside: list[str] = []
    base = base_url(services)
    page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))
    page.outside = outside
    await page.goto(base + "/console")
    await page.get_by_label("API token").fill(token)
    await page.get_by_label("Client id").fill(client)
    await page.get_by_role("button", name="Open client").click()
    if signed_in:
        await page.locator("#matrix").wait_for()
    return page


async def stored_version(services: Services) -> str:
    async with (
        aiohttp.ClientSession(base_url(services)) as http,
        http.get(f"/client/{CLIENT}/call_control_group/", headers=ADMIN) as r,
    ):
        return r.headers["ETag"]


async def allowed_cells(page: Page, action: str) -> set[tuple[str, str]]:
    await page.get_by_label("Action", exact=True).select_option(action)
    cells = await page.locator("#matrix td[data-allowed]").evaluate_all(
        "tds => tds.filter(td => td.dataset.allowed).map(td => [td.dataset.row, td.dataset.col])"
    )
    return {(row, col) for row, col in cells}


async def test_a_client_token_sees_exactly_the_reference_policys_picture(
    daemon: Services, browser: Any
) -> None:
    token = await client_token(daemon, CLIENT, "ops")
    page = await open_console(browser, daemon, token, CLIENT)
    await page.locator("#matrix").wait_for()
    assert await allowed_cells(page, "eavesdrop") == {
        ("100", "101"),
        ("101", "100"),
        ("101", "102"),
        ("101", "103"),
    }
    assert await allowed_cells(page, "whisper") == {("101", "100"), ("101", "102"), ("101", "103")}
    assert await allowed_cells(page, "replace") == {("100", "101"), ("101", "100")}
    # A cell explains every action with its reason code and the group that granted it.
    await page.get_by_label("Action", exact=True).select_option("eavesdrop")
    await page.locator('#matrix td[data-row="100"][data-col="101"]').click()
    listen = page.locator('#explanation dd[data-action="eavesdrop"]')
    assert "eavesdrop_group" in await listen.inner_text()
    assert "support" in await listen.inner_text()
    await page.locator('#matrix td[data-row="100"][data-col="102"]').click()
    assert "eavesdrop_not_permitted" in await listen.inner_text()
    assert await listen.get_attribute("data-allowed") == "false"
    # the keyboard: arrow to the next cell, Enter explains it
    await page.keyboard.press("ArrowRight")
    await page.keyboard.press("Enter")
    assert "100 → 103" in await page.locator("#explain h3").inner_text()
    assert page.outside == []


async def test_an_invalid_edit_shows_each_error_at_its_field_and_stores_nothing(
    daemon: Services, browser: Any
) -> None:
    token = await client_token(daemon, CLIENT, "ops")
    page = await open_console(browser, daemon, token, CLIENT)
    await page.get_by_role("link", name="Edit policy").click()
    bad = {**REFERENCE_DOCUMENT, "groups": {"support": ["100", "not an ext"]}}
    bad["eavesdrop_100"] = ["nowhere"]
    await page.get_by_label("Policy document (JSON)").fill(json.dumps(bad, indent=2))
    await page.get_by_role("button", name="Check and preview").click()
    items = page.locator("#error-list li")
    await items.first.wait_for()
    locs = [json.loads(loc) for loc in await items.evaluate_all("l => l.map(i => i.dataset.loc)")]
    assert ["groups", "support", 1] in locs
    assert any(loc[0] == "eavesdrop_100" for loc in locs)
    text = await page.locator("#error-list").inner_text()
    assert "groups \u203a support \u203a 1" in text
    assert await page.locator("#save-btn").is_hidden()
    assert await stored_version(daemon) == '"1"'


async def test_a_valid_edit_shows_its_impact_saves_and_changes_the_picture(
    daemon: Services, browser: Any
) -> None:
    token = await client_token(daemon, CLIENT, "ops")
    page = await open_console(browser, daemon, token, CLIENT)
    await page.get_by_role("link", name="Edit policy").click()
    edited = {k: v for k, v in REFERENCE_DOCUMENT.items() if k != "eavesdrop_100"}
    await page.get_by_label("Policy document (JSON)").fill(json.dumps(edited, indent=2))
    await page.get_by_role("button", name="Check and preview").click()
    summary = page.locator("#impact-summary")
    await summary.wait_for()
    assert "0 decision(s) become allowed, 1 become denied" in await summary.inner_text()
    change = page.locator('#impact-changes li[data-ext="100"][data-target="101"]')
    assert "becomes denied" in await change.inner_text()
    assert "eavesdrop_100" in await page.locator("#diff").inner_text()
    assert await stored_version(daemon) == '"1"'  # a preview stores nothing
    await page.get_by_role("button", name="Save as version 2…").click()
    await page.get_by_role("button", name="Confirm").click()
    await page.get_by_text("Saved: version 2 is in force.").wait_for()
    assert await stored_version(daemon) == '"2"'
    await page.get_by_role("link", name="Permissions").click()
    await page.locator("#matrix").wait_for()
    assert ("100", "101") not in await allowed_cells(page, "eavesdrop")


async def test_a_stale_edit_is_refused_and_shows_what_changed(
    daemon: Services, browser: Any
) -> None:
    token = await client_token(daemon, CLIENT, "ops")
    page = await open_console(browser, daemon, token, CLIENT)
    await page.get_by_role("link", name="Edit policy").click()
    mine = {**REFERENCE_DOCUMENT, "pickup_all": False}
    await page.get_by_label("Policy document (JSON)").fill(json.dumps(mine, indent=2))
    await page.get_by_role("button", name="Check and preview").click()
    await page.locator("#impact-summary").wait_for()
    # someone else saves meanwhile
    await put_policy(daemon, CLIENT, {**REFERENCE_DOCUMENT, "whisper_103": ["support"]})
    await page.get_by_role("button", name="Save as version 2…").click()
    await page.get_by_role("button", name="Confirm").click()
    stale = page.locator("#stale")
    await stale.wait_for()
    assert "someone else saved version 2" in await stale.inner_text()
    await page.get_by_role("button", name="See what changed meanwhile").click()
    await page.locator("#stale-diff pre").wait_for()
    assert '+   "whisper_103"' in await page.locator("#stale-diff").inner_text()
    assert await stored_version(daemon) == '"2"'  # the other one's, not mine


async def test_a_listen_session_appears_live_and_end_hangs_up_exactly_it(
    daemon: Services, fake: FakeAmi, browser: Any
) -> None:
    token = await client_token(daemon, CLIENT, "night-shift")
    page = await open_console(browser, daemon, token, CLIENT)
    await page.get_by_role("link", name="Live").click()
    await page.get_by_text("Nobody is listening or whispering now.").wait_for()
    started = time.monotonic()
    channel = await start_listen(daemon, fake, CLIENT, "100", "101", "1700000001.5")
    row = page.locator('#sessions-table tr[data-uniqueid="1700000001.5"]')
    await row.wait_for(timeout=1000)
    print(f"session shown {time.monotonic() - started:.3f} s after ChanSpyStart was sent")
    assert "PJSIP/acme_100" in await row.inner_text()
    await row.get_by_role("button", name="End 100 listening to 101").click()
    await page.get_by_role("button", name="Confirm").click()
    await page.get_by_text("Nobody is listening or whispering now.").wait_for(timeout=2000)
    (hangup,) = fake.received("Hangup")
    assert hangup.get("Channel") == channel


async def test_a_client_token_cannot_open_another_client(daemon: Services, browser: Any) -> None:
    await put_policy(daemon, "rival", REFERENCE_DOCUMENT)
    token = await client_token(daemon, CLIENT, "ops")
    page = await open_console(browser, daemon, token, "rival", signed_in=False)
    error = page.locator("#signin-error")
    await error.get_by_text("may act on client").wait_for()
    assert await page.locator("#view").is_hidden()
    # nor by typing the other client into the address
    await page.get_by_label("Client id").fill(CLIENT)
    await page.get_by_role("button", name="Open client").click()
    await page.locator("#matrix").wait_for()
    await page.goto(base_url(daemon) + "/console#/rival/picture")
    await page.locator("#view-error").wait_for()
    assert "403" in await page.locator("#view-error").inner_text()
    assert await page.locator("#matrix").count() == 0


async def test_the_picture_shows_protection_and_grants_and_marks_their_cells(
    daemon: Services, browser: Any
) -> None:
    now = datetime.now(UTC)
    grant = {
        "ext": "100",
        "action": "eavesdrop",
        "extensions": ["102"],
        "from": (now - timedelta(minutes=5)).isoformat(),
        "until": (now + timedelta(hours=2)).isoformat(),
        "note": "coaching sales, ticket HR-123",
    }
    async with aiohttp.ClientSession(base_url(daemon)) as http:
        settings = {"protected_extensions": ["103"]}
        async with http.put(
            f"/client/{CLIENT}/call_control_settings", json=settings, headers=ADMIN
        ) as r:
            assert r.status == 200, await r.text()
        async with http.post(f"/client/{CLIENT}/grants", json=grant, headers=ADMIN) as r:
            assert r.status == 201, await r.text()
            grant_id = (await r.json())["id"]
    token = await client_token(daemon, CLIENT, "ops")
    page = await open_console(browser, daemon, token, CLIENT)
    assert await page.locator('#protected [data-ext="103"]').count() == 1
    row = page.locator(f'#grants-table tr[data-grant-id="{grant_id}"]')
    text = await row.inner_text()
    for shown in ("100", "Listen", "102", "coaching sales, ticket HR-123", "admin", grant_id):
        assert shown in text
    assert await row.get_attribute("data-state") == "active"
    legend = page.locator("#legend")
    assert "temporary_grant" in await legend.locator('[data-mark="grant"]').inner_text()
    assert "protected" in await legend.locator('[data-mark="protected"]').inner_text()

    await page.get_by_label("Action", exact=True).select_option("eavesdrop")
    by_grant = page.locator('#matrix td[data-row="100"][data-col="102"]')
    assert "grant" in (await by_grant.get_attribute("class") or "").split()
    assert await by_grant.get_attribute("data-allowed") == "eavesdrop"
    protected = page.locator('#matrix td[data-row="101"][data-col="103"]')
    assert "protected" in (await protected.get_attribute("class") or "").split()
    assert await protected.inner_text() == "⊘"
    await by_grant.click()
    listen = page.locator('#explanation dd[data-action="eavesdrop"]')
    said = await listen.inner_text()
    assert "temporary_grant" in said
    assert grant_id in said
    assert "only a temporary grant allows it" in said
    await protected.click()
    said = await listen.inner_text()
    assert "protected" in said
    assert "nobody may listen or whisper to it" in said
    assert page.outside == []
