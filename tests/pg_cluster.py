"""A private PostgreSQL cluster for the tests (and the benches): ``initdb`` + ``pg_ctl`` in a
temporary directory, listening on a free loopback port, removed afterwards.

``PgCluster.start()`` finds the server binaries (``pg_ctl`` on PATH, else the newest
``/usr/lib/postgresql/<version>/bin``), creates the cluster with ``fsync=off`` (a test cluster
needs no durability across a power cut, and it starts and creates databases far faster), and
starts it on ``127.0.0.1`` only, with no Unix socket. ``synchronous_commit`` stays on: a
commit is written to the WAL (the kernel's cache) before it returns, so what was committed
survives ``halt()``, the server's crash. ``initdb`` refuses to run as root: as root
the cluster belongs to the ``postgres`` user (``runuser -u postgres --``), which owns the
directory. ``stop()`` ends the server at once (``-m immediate``) and removes the directory.

Fixtures (``tests/conftest.py`` imports them): ``pg_cluster``, one cluster for the session;
``pg_dsn``, the address of a fresh empty database per test, dropped after it. Without the
binaries the PostgreSQL tests skip with a reason that says how to install them, unless
``CALLGATE_REQUIRE_POSTGRESQL=1`` (CI sets it): then they fail.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import free_port

REQUIRE_ENV = "CALLGATE_REQUIRE_POSTGRESQL"
INSTALL_HINT = (
    "PostgreSQL server binaries not found (initdb, pg_ctl): install them with"
    " `apt-get install postgresql` (Debian/Ubuntu), or put pg_ctl on PATH"
)


def find_bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: PATH first, else the newest Debian one."""
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        bindir = Path(on_path).resolve().parent
        if (bindir / "initdb").exists():
            return bindir
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for bindir in reversed(candidates):
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    return None


class PgCluster:
    """One private cluster; ``dsn(database)`` addresses it as the superuser ``postgres``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="callgate-pg-"))
        self.data = self.root / "data"
        self._as_user: list[str] = []
        self._names = itertools.count(1)
        self.started = False

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        result = subprocess.run(
            [*self._as_user, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.strip()}"
            )

    def start(self) -> None:
        """Create the cluster (the first time) and start its server."""
        if not self.data.exists():
            self._init()
        self._start_server()

    def _init(self) -> None:
        if os.geteuid() == 0:
            # initdb refuses root; the cluster is the postgres user's, and so is its directory.
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )

    def _start_server(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories=''"
            " -c fsync=off -c full_page_writes=off"
            " -c max_connections=200 -c shared_buffers=32MB"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self.started = True

    def halt(self) -> None:
        """Stop the server at once, as a crash would (``start()`` brings it back)."""
        if self.started:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"
                )
            self.started = False

    def stop(self) -> None:
        """Stop the server and remove the cluster."""
        try:
            self.halt()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql (autocommit); its output."""
        psql = self.bindir / "psql"
        command = [str(psql if psql.exists() else "psql"), "-XAtq", "-v", "ON_ERROR_STOP=1"]
        result = subprocess.run(
            [*command, "-d", self.dsn(database), "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def create_database(self) -> str:
        name = f"callgate_test_{next(self._names)}"
        # FILE_COPY: a copy of the (tiny) template's files, faster than WAL_LOG for it.
        self.psql(f"CREATE DATABASE {name} TEMPLATE template0 STRATEGY FILE_COPY")
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bindir = find_bindir()
    if bindir is None:
        if required():
            pytest.fail(f"{REQUIRE_ENV}=1 but {INSTALL_HINT}")
        pytest.skip(INSTALL_HINT)
    cluster = PgCluster(bindir)
    try:
        cluster.start()
    except (RuntimeError, OSError, KeyError, subprocess.TimeoutExpired) as exc:
        cluster.stop()
        message = f"could not start a private PostgreSQL cluster: {exc}"
        if required():
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh empty database of the session's cluster, dropped after the test."""
    name = pg_cluster.create_database()
    try:
        yield pg_cluster.dsn(name)
    finally:
        pg_cluster.drop_database(name)
