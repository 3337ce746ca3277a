"""AstDB over the Asterisk Manager connection (``DBPut`` / ``DBDel``), for what happens outside a
call: a restore over HTTP, and the revocation of replacements by a policy change.

The Manager user needs ``write = system`` for these two actions (see ``asterisk-conf/``).
"""

from __future__ import annotations

from typing import Final

from callgate.ami.client import ManagerClient, ManagerError, ManagerState
from callgate.replace.service import AstDb, AstDbError, LiveAstDb

_NOT_FOUND: Final = "database entry not found"
"""``DBDel``'s answer for a key that is not there: for a delete, the goal is reached."""


class ManagerAstDb:
    def __init__(self, client: ManagerClient) -> None:
        self._client = client

    async def put(self, family: str, key: str, value: str) -> None:
        # DBPut's value header is ``Val``, not ``Value`` (manager.c: action_dbput())
        await self._send("DBPut", (("Family", family), ("Key", key), ("Val", value)))

    async def delete(self, family: str, key: str) -> None:
        await self._send("DBDel", (("Family", family), ("Key", key)), missing_ok=True)

    async def _send(
        self, action: str, headers: tuple[tuple[str, str], ...], *, missing_ok: bool = False
    ) -> None:
        try:
            response, *_ = await self._client.send_action(action, headers)
        except ManagerError as exc:
            raise AstDbError(f"{action}: {exc}") from exc
        if response.is_success:
            return
        message = response.get("Message")
        if missing_ok and message.lower() == _NOT_FOUND:
            return
        raise AstDbError(f"{action} refused by Asterisk: {message}")


def manager_astdb(client: ManagerClient | None) -> LiveAstDb:
    """``live_astdb`` for ``ReplaceService``: the Manager's AstDB while it is logged in."""
    if client is None:
        return lambda: None
    astdb = ManagerAstDb(client)

    def live() -> AstDb | None:
        return astdb if client.state is ManagerState.CONNECTED else None

    return live
