"""Fixtures of the console's browser tests: the daemon with the fake Manager (from
``daemon_support``), and headless Chromium's path and flags (the system's, never downloaded)."""

from __future__ import annotations

import shutil

from .daemon_support import CLIENT, daemon

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "CLIENT", "daemon"]

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
