"""Reading the audit log (writing it is the ``AuditLog`` sink's, off every caller's path)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from callgate.audit import AuditEvent

__all__ = ["AuditQueries", "AuditReader"]


class AuditReader(Protocol):
    """The reading half of ``ports.AuditStore``: all a query needs."""

    async def list(
        self,
        client_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        ext: str | None = None,
        action: str | None = None,
        limit: int = 1000,
    ) -> tuple[AuditEvent, ...]: ...


class AuditQueries:
    def __init__(self, store: AuditReader) -> None:
        self._store = store

    async def events(
        self,
        client_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        ext: str | None = None,
        action: str | None = None,
        limit: int = 1000,
    ) -> tuple[AuditEvent, ...]:
        """Newest first; ``ext`` matches the acting extension or the target."""
        return await self._store.list(
            client_id, since=since, until=until, ext=ext, action=action, limit=limit
        )
