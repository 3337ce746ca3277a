"""The only module that wires callgate together: store, policies, FastAGI, HTTP, Manager.

Start order: open the store, load and compile every stored policy, then open the listeners (so the
first FastAGI session already decides by the stored policies), then connect to the Manager.
Stop order (SIGTERM or SIGINT): stop accepting, let sessions in flight finish within
``shutdown_grace`` seconds, close the Manager connection, close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from callgate.config import Settings
from callgate.registry import PolicyRegistry

log = logging.getLogger(__name__)

Stopper = Callable[[], Awaitable[None]]


@dataclass
class Services:
    """What the running daemon is made of, for tests that drive a whole daemon in-process."""

    settings: Settings
    registry: PolicyRegistry = field(default_factory=PolicyRegistry)
    stoppers: list[Stopper] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def stop(self) -> None:
        """Stop every component, last started first."""
        while self.stoppers:
            stopper = self.stoppers.pop()
            try:
                await stopper()
            except Exception:
                log.exception("error while stopping")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


async def start(settings: Settings) -> Services:
    """Start every component; the caller owns ``services.stop()``."""
    services = Services(settings)
    try:
        # Components are added here in start order; each appends its own stopper.
        pass
    except BaseException:
        await services.stop()
        raise
    services.ready.set()
    return services


async def run(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    services = await start(settings)
    try:
        await stop.wait()
        log.info("stopping: no new sessions; waiting up to %ss", settings.shutdown_grace)
    finally:
        await services.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    log.info("stopped")
