"""Fixtures of the console's browser tests: the daemon with the fake Manager, and headless
Chromium (the system's, driven by Playwright; never a downloaded browser)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callgate.daemon import Services
from fake_ami import FakeAmi
from reference_policy import REFERENCE_DOCUMENT

from .daemon_support import put_policy, running_daemon

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
CLIENT = "acme"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    fake = FakeAmi()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def daemon(tmp_path: Path, fake: FakeAmi) -> AsyncIterator[Services]:
    async with running_daemon(tmp_path, fake) as services:
        await put_policy(services, CLIENT, REFERENCE_DOCUMENT)
        yield services
