"""Reading the audit log (writing it is the ``AuditLog`` sink's, off every caller's path)."""

from __future__ import annotations

from datetime import datetime

from callgate.audit import AuditEvent, AuditLog

__all__ = ["AuditQueries"]


class AuditQueries:
    def __init__(self, log: AuditLog) -> None:
        self._log = log

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
        return await self._log.list(
            client_id, since=since, until=until, ext=ext, action=action, limit=limit
        )
