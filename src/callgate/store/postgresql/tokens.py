"""``ports.TokenStore`` on PostgreSQL: client-scoped API tokens, kept as SHA-256 digests only.

Names are unique by the table's key: of two instances creating one name at once, the second
insert waits for the first's commit and then fails on the key (``TokenExistsError``).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from psycopg import errors

from callgate.domain import TokenExistsError, TokenInfo
from callgate.policy.syntax import TOKEN_NAME_RULE, is_valid_token_name
from callgate.store.postgresql.db import PgDatabase
from callgate.store.tokens import hash_token

__all__ = ["PgTokenRepository"]


def _info(row: tuple[Any, ...]) -> TokenInfo:
    name, client_id, created_at = row
    return TokenInfo(str(name), str(client_id), created_at.astimezone(UTC))


class PgTokenRepository:
    """``ports.TokenStore`` on PostgreSQL."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def create(self, name: str, client_id: str) -> tuple[TokenInfo, str]:
        if not is_valid_token_name(name):
            raise ValueError(f"{name!r} is not a valid token name ({TOKEN_NAME_RULE})")
        token = "cg_" + secrets.token_urlsafe(32)
        info = TokenInfo(name, client_id, datetime.now(UTC))
        async with self._db.connection() as conn:
            try:
                await conn.execute(
                    "INSERT INTO api_tokens (name, client_id, token_hash, created_at)"
                    " VALUES (%s, %s, %s, %s)",
                    (name, client_id, hash_token(token), info.created_at),
                )
            except errors.UniqueViolation as exc:
                raise TokenExistsError(f"a token named {name!r} already exists") from exc
        return info, token

    async def find(self, token: str) -> TokenInfo | None:
        digest = hash_token(token)
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT name, client_id, created_at FROM api_tokens WHERE token_hash = %s",
                (digest,),
            )
            row = await cur.fetchone()
        return None if row is None else _info(row)

    async def list(self) -> list[TokenInfo]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT name, client_id, created_at FROM api_tokens ORDER BY name"
            )
            rows = await cur.fetchall()
        return [_info(row) for row in rows]

    async def delete(self, name: str) -> bool:
        async with self._db.connection() as conn:
            cur = await conn.execute("DELETE FROM api_tokens WHERE name = %s", (name,))
            return cur.rowcount > 0
