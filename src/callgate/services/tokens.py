"""Use cases of the client-scoped API tokens (admin only), and finding the caller's token."""

from __future__ import annotations

from callgate.domain import TokenInfo
from callgate.ports import TokenStore

__all__ = ["TokenService"]


class TokenService:
    def __init__(self, store: TokenStore) -> None:
        self._store = store

    async def create(self, name: str, client_id: str) -> tuple[TokenInfo, str]:
        """A new token (shown once); ``TokenExistsError`` when the name is taken."""
        return await self._store.create(name, client_id)

    async def list(self) -> list[TokenInfo]:
        return await self._store.list()

    async def revoke(self, name: str) -> bool:
        """False when no token has that name; effective on the next request."""
        return await self._store.delete(name)

    async def find(self, token: str) -> TokenInfo | None:
        """The record of a presented token, or None (unknown, or revoked)."""
        return await self._store.find(token)
