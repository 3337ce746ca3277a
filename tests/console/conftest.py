"""Fixtures of the console's browser tests: the daemon with the fake Manager (from
``daemon_support``), and headless Chromium's path and flags (the system's, never downloaded)."""

from __future__ import annotations

from support import CHROMIUM, CHROMIUM_ARGS

from .daemon_support import CLIENT, daemon

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "CLIENT", "daemon"]
