"""AstDB over the Asterisk Manager connection (``DBPut`` / ``DBDel``), for what happens outside a
call: a restore over HTTP, and the revocation of replacements by a policy change.

The Manager user needs ``write = system`` for these two actions (see ``asterisk-conf/``). Each
adapter is one PBX's AstDB (the PBX of its Manager connection, ``pbx``): a key written or deleted
here is on that Asterisk server only; ``manager_astdbs`` hands ``ReplaceService`` the one of the
PBX a replacement was recorded on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from callgate.ami.client import ManagerClient, ManagerError
from callgate.pbx import DEFAULT_PBX, ManagerState, PbxName
from callgate.replace.service import AstDb, AstDbError, LiveAstDb

_NOT_FOUND: Final = "database entry not found"
"""``DBGet``'s (and ``DBDelTree``'s) answer for a key that is not there."""


class ManagerAstDb:
    def __init__(self, client: ManagerClient) -> None:
        self.client = client

    @property
    def pbx(self) -> PbxName:
        """The PBX whose AstDB this is."""
        return self.client.pbx

    async def put(self, family: str, key: str, value: str) -> None:
        # DBPut's value header is ``Val``, not ``Value`` (manager.c: action_dbput())
        refused = await self._send("DBPut", (("Family", family), ("Key", key), ("Val", value)))
        if refused is not None:
            raise AstDbError(f"DBPut refused by Asterisk: {refused}")

    async def delete(self, family: str, key: str) -> None:
        """Delete the key; a key that is not there (any more) counts as deleted.

        Asterisk 22's ``DBDel`` answers ``Database entry could not be deleted`` both for a key
        that does not exist and for a failed SQLite write (``ast_db_del2()``), so a refusal is
        checked with ``DBGet``: ``Database entry not found`` there means the goal is reached.
        """
        key_headers = (("Family", family), ("Key", key))
        refused = await self._send("DBDel", key_headers)
        if refused is None or refused.lower() == _NOT_FOUND:
            return
        lookup = await self._send("DBGet", key_headers, list_complete="DBGetComplete")
        if lookup is not None and lookup.lower() == _NOT_FOUND:
            return
        raise AstDbError(f"DBDel refused by Asterisk: {refused}")

    async def _send(
        self,
        action: str,
        headers: tuple[tuple[str, str], ...],
        *,
        list_complete: str | None = None,
    ) -> str | None:
        """``None`` when Asterisk answered Success, else its refusal's ``Message``."""
        try:
            response, *_ = await self.client.send_action(
                action, headers, list_complete=list_complete
            )
        except ManagerError as exc:
            raise AstDbError(f"{action}: {exc}") from exc
        return None if response.is_success else response.get("Message")


def manager_astdb(client: ManagerClient | None) -> LiveAstDb:
    """``live_astdb`` for ``ReplaceService`` with one Manager connection (or none)."""
    return manager_astdbs({} if client is None else {client.pbx: client})


def manager_astdbs(clients: Mapping[PbxName, ManagerClient]) -> LiveAstDb:
    """``live_astdb`` for ``ReplaceService``: each PBX's AstDB over that PBX's Manager connection
    while it is logged in; ``None`` for a PBX without one here (not configured, or enforced by
    another instance: then its holder deletes what is left pending)."""
    astdbs = {pbx: ManagerAstDb(client) for pbx, client in clients.items()}

    def live(pbx: PbxName = DEFAULT_PBX, /) -> AstDb | None:
        astdb = astdbs.get(pbx)
        if astdb is None or astdb.client.state is not ManagerState.CONNECTED:
            return None
        return astdb

    return live
