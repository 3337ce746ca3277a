"""Fixtures every test folder shares: the private PostgreSQL cluster (``tests/pg_cluster.py``)."""

from pg_cluster import pg_cluster, pg_dsn

__all__ = ["pg_cluster", "pg_dsn"]
