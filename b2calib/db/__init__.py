"""The database layer: engines, the writers' lock, transactions, the clock, the shared schema,
the audit log and the migrations, for every domain above it.

============  ====================================================================================
``engine``    :func:`default_url` (``$B2CALIB_DB``), :func:`make_engine` (SQLite: WAL, busy
              timeout, ``BEGIN IMMEDIATE``; PostgreSQL), the writers' lock (:func:`writing`),
              :func:`upgrade` (Alembic, inside the lock)
``database``  :class:`Database`: opened by URL or SQLite path, ``write()`` transactions (a
              refusal raises the owner's error) and ``read()`` ones, ``log()`` to the audit log
``clock``     :func:`now` and :func:`as_utc`: recorded times are timezone-aware UTC
``tables``    :data:`metadata`, the one MetaData each domain adds its tables to, and the audit
              log table :data:`history`
``roles``     PostgreSQL: :func:`~b2calib.db.roles.grant` gives the application role (which owns
              nothing) what the application needs, run by the owner role that migrates
============  ====================================================================================

``migrations/`` holds the Alembic revisions: frozen history, which never imports the domains'
table modules. b2calib migrates a database when it opens it (on PostgreSQL only the owner role
may; an application role is told that the owner must migrate). A developer writes a schema change
in the domain's table module, then generates the revision from the repository's root (the
``[tool.alembic]`` section of ``pyproject.toml``), naming the table modules to compare with::

    alembic -x url=sqlite:///dev.sqlite upgrade head
    TABLES=b2calib.conditions.tables,b2calib.calibration.jobs,b2calib.qa.store.tables
    TABLES=$TABLES,b2calib.prompt.tables,b2calib.review.tables
    alembic -x url=sqlite:///dev.sqlite -x tables=$TABLES \
        revision --autogenerate -m "..."
"""

from __future__ import annotations

from b2calib.db.clock import as_utc, now
from b2calib.db.database import Database
from b2calib.db.engine import DB_ENV, MIGRATIONS, default_url, make_engine, upgrade, writing
from b2calib.db.tables import UTC_TIME, history, metadata

__all__ = [
    "DB_ENV",
    "MIGRATIONS",
    "UTC_TIME",
    "Database",
    "as_utc",
    "default_url",
    "history",
    "make_engine",
    "metadata",
    "now",
    "upgrade",
    "writing",
]


def __dir__() -> list[str]:
    return __all__
