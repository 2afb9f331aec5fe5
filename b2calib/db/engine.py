"""Engines, the writers' lock and the schema upgrade of the b2calib database.

The database is an embedded SQLite file by default (WAL journal, a busy timeout and
``BEGIN IMMEDIATE`` write transactions, so several processes can write at once), or PostgreSQL
for a shared server (``postgresql+psycopg://user@host/db``; writes take a transaction-scoped
advisory lock). The schema is created and upgraded by the Alembic migrations in
``migrations/``, inside the writers' lock.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from b2calib._extras import require

__all__ = ["DB_ENV", "MIGRATIONS", "default_url", "make_engine", "upgrade", "writing"]

#: The environment variable naming the database used when none is given.
DB_ENV = "B2CALIB_DB"
#: The Alembic script folder (the frozen history of the schema).
MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK = 0x6232_6361_6C69  # "b2cali": one advisory lock serialises writers


def default_url() -> str:
    """The database used when none is given: ``$B2CALIB_DB``, else an SQLite file in the
    user's data directory (``~/.local/share/b2calib/conditions.sqlite`` on Linux)."""
    url = os.environ.get(DB_ENV)
    if url:
        return url
    import platformdirs

    folder = Path(platformdirs.user_data_dir("b2calib", appauthor=False))
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'conditions.sqlite'}"


def upgrade(engine: Engine) -> None:
    """Create or upgrade the schema to the newest Alembic revision (safe to call concurrently:
    it runs inside the writers' lock)."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return
    with writing(engine) as conn:
        if MigrationContext.configure(conn).get_current_revision() != head:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction holding the writers' lock: ``BEGIN IMMEDIATE`` on SQLite (with an
    engine of :func:`make_engine`), a transaction-scoped advisory lock on PostgreSQL. It
    commits when the block ends and rolls back when it raises."""
    with engine.connect().execution_options(b2calib_write=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        yield conn


def make_engine(url: str) -> Engine:
    """An engine for ``url``: on SQLite with WAL, a 120 s busy timeout, foreign keys on, and
    transactions begun by b2calib (``BEGIN IMMEDIATE`` for :func:`writing`, ``BEGIN`` for
    reads); on PostgreSQL with connections checked before use."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 120})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # transactions are begun below, not by pysqlite
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout = 120000")
            _wal(cur)
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("b2calib_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    if sa.engine.make_url(url).get_driver_name() == "psycopg":
        require("psycopg", "a PostgreSQL database")  # the postgres extra
    return sa.create_engine(url, pool_pre_ping=True)


def _wal(cursor: Any, timeout: float = 120) -> None:
    """Switch an SQLite database to WAL. SQLite answers "database is locked" at once, without
    waiting for the busy timeout, while another process is creating or switching the same new
    file, so retry until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def __dir__() -> list[str]:
    return __all__
