"""The API browser page loads in headless Chromium with no network and runs a GET.

Chromium opens ``/docs?op=getPolicy&client_id=acme&run=1#token=...``: the page reads
``/openapi.json``, selects the operation, fills its parameter, runs it, and writes the answer into
the DOM, which ``--dump-dom`` prints once the page is idle. The test checks both sides: the DOM
shows the stored document, and the server counted the GET. A screenshot is kept in
``tests/artifacts/`` as the artifact.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from pathlib import Path

import pytest

from support import CHROMIUM, CHROMIUM_ARGS

from .http_support import ADMIN, ADMIN_TOKEN, POLICY_URL, Harness

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)"
)


async def run_chromium(profile: Path, *args: str) -> str:
    assert CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        *CHROMIUM_ARGS,
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout.decode()


def requests_seen(api: Harness, method: str, route: str) -> float:
    value = api.metrics.registry.get_sample_value(
        "callgate_http_requests_total", {"method": method, "route": route, "status": "200"}
    )
    return value or 0.0


async def test_the_api_browser_runs_a_get_in_headless_chromium(
    api: Harness, tmp_path: Path
) -> None:
    put = await api.client.put(
        POLICY_URL, json={"allow_all": True, "groups": {"night-shift": ["100"]}}, headers=ADMIN
    )
    assert put.status == 200
    route = "/client/{client_id}/call_control_group/"
    before = requests_seen(api, "GET", route)
    port = api.client.server.port
    url = f"http://127.0.0.1:{port}/docs?op=getPolicy&client_id=acme&run=1#token={ADMIN_TOKEN}"

    dom = await run_chromium(tmp_path / "profile", "--dump-dom", url)

    # the server saw the page, its script, the description and the GET the page ran
    assert requests_seen(api, "GET", "/docs") == 1
    assert requests_seen(api, "GET", "/openapi.json") == 1
    assert requests_seen(api, "GET", "/docs/{asset}") >= 2
    assert requests_seen(api, "GET", route) == before + 1
    # and the page shows the answer
    assert 'data-state="done"' in dom
    assert 'data-status="200"' in dom
    body = re.search(r'<pre id="result-body">(.*?)</pre>', dom, re.S)
    assert body is not None
    shown = html.unescape(body.group(1))
    assert '"allow_all": true' in shown
    assert '"night-shift"' in shown
    assert 'etag: "1"' in dom
    assert "putPolicy" in dom  # every operation is listed

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "api-browser.png"
    screenshot.unlink(missing_ok=True)
    await run_chromium(
        tmp_path / "profile-shot",
        f"--screenshot={screenshot}",
        "--window-size=1280,900",
        "--hide-scrollbars",
        url,
    )
    assert screenshot.stat().st_size > 10_000
    assert requests_seen(api, "GET", route) == before + 2


async def test_the_page_and_its_assets_are_served_from_the_package(api: Harness) -> None:
    page = await api.client.get("/docs")
    assert page.status == 200
    assert page.content_type == "text/html"
    text = await page.text()
    assert "/docs/browser.js" in text
    assert "http://" not in text
    assert "https://" not in text  # nothing from a CDN
    for asset, kind in (("browser.js", "text/javascript"), ("browser.css", "text/css")):
        response = await api.client.get(f"/docs/{asset}")
        assert response.status == 200
        assert response.content_type == kind
        assert "https://" not in await response.text()
    for missing in ("nope.js", "..%2Fapp.py", "%2e%2e%2Fapi.py", "app.py"):
        response = await api.client.get(f"/docs/{missing}")
        assert response.status == 404
    root = await api.client.get("/", allow_redirects=False)
    assert root.status == 302
    assert root.headers["Location"] == "/docs"


async def test_the_browser_fills_a_put_with_the_published_example(
    api: Harness, tmp_path: Path
) -> None:
    """The body field starts as the PolicyDocument schema's example (2020-12 ``examples``,
    reached through the body's ``anyOf``), and that example is a document the service stores."""
    port = api.client.server.port
    url = f"http://127.0.0.1:{port}/docs?op=putPolicy&client_id=acme&run=1#token={ADMIN_TOKEN}"

    dom = await run_chromium(tmp_path / "profile", "--dump-dom", url)

    assert 'data-state="done"' in dom
    assert 'data-status="200"' in dom
    stored = await api.store.policies.current_json("acme")
    assert stored is not None
    document = await (await api.client.get("/openapi.json")).json()
    [example] = document["components"]["schemas"]["PolicyDocument"]["examples"]
    assert json.loads(stored.document_json) == example
