"""Fixtures every test folder shares: the private PostgreSQL cluster (``tests/pg_cluster.py``),
and a started fake Manager (``fake``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fake_ami import FakeAmi
from pg_cluster import pg_cluster, pg_dsn

__all__ = ["fake", "pg_cluster", "pg_dsn"]


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    """One Asterisk's fake Manager, listening on a free loopback port."""
    fake = FakeAmi()
    await fake.start()
    yield fake
    await fake.close()
