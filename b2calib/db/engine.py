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
from b2calib.exceptions import B2CalibError

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
    it runs inside the writers' lock).

    On PostgreSQL, a role that may not migrate (an application role, which owns nothing) gets
    a :class:`~b2calib.exceptions.B2CalibError` saying the owner must migrate, and one that
    may not read the tables (an application role not granted yet) one saying the owner must
    grant; a schema newer than this b2calib knows one saying so.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    postgres = engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        user = str(conn.execute(sa.text("SELECT current_user")).scalar()) if postgres else ""
        try:
            current = MigrationContext.configure(conn).get_current_revision()
        except sa.exc.ProgrammingError as err:
            if postgres and _insufficient_privilege(err):
                raise B2CalibError(_must_grant(user)) from err
            raise
        if current == head:
            if postgres and not _readable(conn):
                raise B2CalibError(_must_grant(user))
            return
        _require_known(script, current, head)
        if postgres and not _may_migrate(conn):
            raise B2CalibError(_must_migrate(user, current, head))
    with writing(engine) as conn:
        if MigrationContext.configure(conn).get_current_revision() != head:
            cfg.attributes["connection"] = conn
            try:
                command.upgrade(cfg, "head")
            except sa.exc.ProgrammingError as err:
                if postgres and _insufficient_privilege(err):
                    raise B2CalibError(_must_migrate(user, current, head)) from err
                raise


_OWNER_URL = "--db <the owner's URL>"


def _insufficient_privilege(err: sa.exc.DBAPIError) -> bool:
    return getattr(err.orig, "sqlstate", None) == "42501"


def _must_grant(user: str) -> str:
    return (
        f"role {user} may not read the b2calib tables: the owner role must grant it what the "
        f"application needs: b2calib db grant {user} {_OWNER_URL}"
    )


def _must_migrate(user: str, current: str | None, head: str | None) -> str:
    if current is None:
        return (
            f"the database has no b2calib schema yet and role {user} may not create it (an "
            "application role owns nothing): the owner role must migrate it first: "
            f"b2calib db upgrade {_OWNER_URL}"
        )
    return (
        f"the database schema is at revision {current}, this b2calib needs {head}, and role "
        f"{user} may not migrate it (an application role owns nothing): the owner role must "
        f"migrate it: b2calib db upgrade {_OWNER_URL}"
    )


def _may_migrate(conn: Connection) -> bool:
    """Whether the connected PostgreSQL role may migrate: it may create in the schema and owns
    the schema's b2calib tables (if there are any yet)."""
    row = conn.execute(
        sa.text(
            "SELECT coalesce(has_schema_privilege(current_schema(), 'CREATE'), false), "
            "(SELECT pg_has_role(tableowner, 'USAGE') FROM pg_tables "
            " WHERE schemaname = current_schema() AND tablename = 'alembic_version')"
        )
    ).one()
    return bool(row[0]) and row[1] is not False


def _readable(conn: Connection) -> bool:
    """Whether the connected PostgreSQL role may read every table of the b2calib schema (not
    when a later migration added a table the owner has not granted yet)."""
    unreadable = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind = 'r' "
            "AND c.relowner = "
            "(SELECT relowner FROM pg_class WHERE oid = 'alembic_version'::regclass) "
            "AND NOT has_table_privilege(c.oid, 'SELECT')"
        )
    ).first()
    return unreadable is None


def _require_known(script: Any, current: str | None, head: str | None) -> None:
    """Refuse a schema newer than this b2calib's migrations."""
    from alembic.util import CommandError

    if current is None:
        return
    try:
        script.get_revision(current)
    except CommandError:
        raise B2CalibError(
            f"the database schema is at revision {current}, which this b2calib does not know "
            f"(its newest is {head}): upgrade b2calib"
        ) from None


@contextmanager
def writing(engine: Engine, *, rollback: bool = False) -> Iterator[Connection]:
    """A write transaction holding the writers' lock: ``BEGIN IMMEDIATE`` on SQLite (with an
    engine of :func:`make_engine`), a transaction-scoped advisory lock on PostgreSQL. It
    commits when the block ends and rolls back when it raises; with ``rollback`` it rolls back
    in both cases (a dry run: every statement runs, under the same lock, and nothing is kept)."""
    with engine.connect().execution_options(b2calib_write=True) as conn, conn.begin() as trans:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        yield conn
        if rollback:
            trans.rollback()


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
