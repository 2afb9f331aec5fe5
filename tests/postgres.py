"""A throw-away PostgreSQL server for the tests, started from Debian's binaries.

The server lives in a fresh temporary folder under ``/tmp``: its data directory, its log and
its Unix socket (no TCP port is opened, so parallel sessions cannot collide). ``initdb`` refuses
to run as root, so when the tests run as root every server command runs as the ``postgres``
system user (``runuser -u postgres --``) and the folder is handed to that user. Durability is
switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``): the data is thrown away.

The binaries are looked up in Debian's layout, ``/usr/lib/postgresql/<major>/bin`` (newest major
first), not on ``PATH``. When they are missing, :class:`PostgresMissing` says to install the
Debian package ``postgresql`` (which ``make test`` does).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "PG_ROOT",
    "PostgresMissing",
    "PostgresServer",
    "find_pg_bin",
    "postgres_server",
    "postgres_url",
]

PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
_SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "32MB",
}


class PostgresMissing(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def find_pg_bin(root: Path = PG_ROOT) -> Path:
    """The ``bin`` folder of the newest PostgreSQL under ``root`` that has initdb, pg_ctl and
    postgres (Debian's ``/usr/lib/postgresql/<major>/bin``)."""

    def major(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    found = sorted(
        (
            b
            for b in root.glob("*/bin")
            if all(os.access(b / x, os.X_OK) for x in ("initdb", "pg_ctl", "postgres"))
        ),
        key=major,
        reverse=True,
    )
    if not found:
        raise PostgresMissing(
            f"the PostgreSQL tests need a PostgreSQL server, but no {root}/<version>/bin with "
            "initdb, pg_ctl and postgres was found: install Debian's package `postgresql` "
            "(`apt-get install postgresql`; `make test` installs it)"
        )
    return found[0]


class PostgresServer:
    """A private PostgreSQL server on a Unix socket in a temporary folder.

    Parameters
    ----------
    bindir
        Folder of ``initdb``, ``pg_ctl`` and ``postgres`` (default :func:`find_pg_bin`).
    """

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir if bindir is not None else find_pg_bin()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                pw = pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise PostgresMissing(
                    "running as root, the PostgreSQL tests need the `postgres` system user "
                    "(created by Debian's package `postgresql`) to run the server"
                ) from None
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
        # /tmp and not $TMPDIR: the postgres user must reach the folder, and a socket path has
        # at most 107 characters
        self.base = Path(tempfile.mkdtemp(prefix="b2calib-pg-", dir="/tmp"))
        self.data = self.base / "data"
        self.socket_dir = self.base
        self.log = self.base / "server.log"
        self.port = 5432  # only names the socket file: no TCP listener
        self.running = False
        self._names = itertools.count(1)
        if self.as_root:
            os.chown(self.base, self._uid, self._gid)

    # -- server ----------------------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", SUPERUSER, "--", *cmd]
        # a cwd the postgres user can enter; LC_ALL=C: no dependence on installed locales
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        proc = subprocess.run(
            cmd, cwd=self.base, env=env, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                f"server log:\n{log}"
            )
        return proc

    def start(self) -> PostgresServer:
        """initdb and start the server; waits until it accepts connections."""
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        opts = " ".join(f"-c {k}={v}" for k, v in _SETTINGS.items())
        opts += f" -k {self.socket_dir} -p {self.port}"
        self.running = True
        atexit.register(self.stop)  # also when the session is interrupted
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-o", opts)
        return self

    def stop(self) -> None:
        """Stop the server at once (``pg_ctl stop -m immediate``) and delete its folder."""
        if self.running:
            self.running = False
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        shutil.rmtree(self.base, ignore_errors=True)

    # -- databases -------------------------------------------------------------------------

    def conninfo(self, dbname: str = "postgres") -> dict[str, Any]:
        """Keyword arguments of ``psycopg.connect`` for database ``dbname``."""
        return {
            "host": str(self.socket_dir),
            "port": self.port,
            "user": SUPERUSER,
            "dbname": dbname,
        }

    def url(self, dbname: str) -> str:
        """SQLAlchemy URL (psycopg 3) of database ``dbname``."""
        return f"postgresql+psycopg://{SUPERUSER}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(**self.conninfo(), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, prefix: str = "t") -> str:
        """Create an empty database with a new name and return the name."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected."""
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- fixtures (registered in tests/conftest.py) ------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, stopped at the end whatever happened.

    Missing binaries are a test failure, not a skip: the suite's PostgreSQL tests are part of
    the acceptance of the conditions database.
    """
    missing = None
    try:
        server = PostgresServer()
    except PostgresMissing as err:
        missing = str(err)
    if missing is not None:
        pytest.fail(missing, pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a new, empty database on the session's server, dropped after the test."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)
