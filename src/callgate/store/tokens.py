"""Client-scoped API tokens, stored as hashes.

A token is 32 random bytes (URL-safe base64, prefixed ``cg_``), shown once when it is created.
Only its SHA-256 is stored: the token is high-entropy, so a fast hash is enough (no salt or
slow KDF needed, unlike a PIN), and it lets a request find its token by an indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from datetime import UTC, datetime

from callgate.domain import (
    NAME_PATTERN,
    NAME_RULE,
    RESERVED_NAMES,
    TokenExistsError,
    TokenInfo,
    is_reserved_token_name,
    is_valid_token_name,
)
from callgate.store.db import Database

__all__ = [  # the domain names are re-exported for the callers that imported them from here
    "NAME_PATTERN",
    "NAME_RULE",
    "RESERVED_NAMES",
    "TokenExistsError",
    "TokenInfo",
    "TokenRepository",
    "hash_token",
    "is_reserved_token_name",
    "is_valid_token_name",
]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _info(row: sqlite3.Row) -> TokenInfo:
    return TokenInfo(
        name=str(row["name"]),
        client_id=str(row["client_id"]),
        created_at=datetime.fromisoformat(row["created_at"]),
    )


class TokenRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, client_id: str) -> tuple[TokenInfo, str]:
        """Make a new token for ``client_id``; returns its record and the token itself.

        ValueError for a name that ``is_valid_token_name`` refuses (callers check it first, to
        answer the user): no path may store a token that passes for the admin."""
        if not is_valid_token_name(name):
            raise ValueError(f"{name!r} is not a valid token name ({NAME_RULE})")
        token = "cg_" + secrets.token_urlsafe(32)
        info = TokenInfo(name, client_id, datetime.now(UTC))

        def write(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO api_tokens (name, client_id, token_hash, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (name, client_id, hash_token(token), info.created_at.isoformat()),
                )
            except sqlite3.IntegrityError as exc:
                raise TokenExistsError(f"a token named {name!r} already exists") from exc

        await self._db.write(write)
        return info, token

    async def find(self, token: str) -> TokenInfo | None:
        """The token's record, or None when no stored token has that value."""
        digest = hash_token(token)

        def read(conn: sqlite3.Connection) -> TokenInfo | None:
            row = conn.execute(
                "SELECT name, client_id, created_at FROM api_tokens WHERE token_hash = ?",
                (digest,),
            ).fetchone()
            return None if row is None else _info(row)

        return await self._db.read(read)

    async def list(self) -> list[TokenInfo]:
        def read(conn: sqlite3.Connection) -> list[TokenInfo]:
            rows = conn.execute(
                "SELECT name, client_id, created_at FROM api_tokens ORDER BY name"
            ).fetchall()
            return [_info(row) for row in rows]

        return await self._db.read(read)

    async def delete(self, name: str) -> bool:
        """Revoke the token; False when there was none by that name."""

        def write(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM api_tokens WHERE name = ?", (name,)).rowcount > 0

        return await self._db.write(write)
