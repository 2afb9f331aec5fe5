"""The shared schema: the one :class:`~sqlalchemy.MetaData` every domain adds its tables to, the
column type of recorded times, and the audit log.

Each domain defines its own tables on :data:`metadata` (``b2calib.conditions.tables``,
``b2calib.calibration.jobs``, ``b2calib.qa.store.tables``, ``b2calib.prompt.tables``,
``b2calib.review.tables``); the
Alembic migrations in ``migrations/`` create and evolve them all. The migrations are frozen
history and never import these modules; ``tests/test_conditions_db.py`` checks that the tables
and the migrations agree.

The audit log (:data:`history`) records who changed what and when, for every domain: written
through :meth:`b2calib.db.Database.log`, read by the conditions database's history (its
``globaltag`` column is the subject of an entry: a global tag, or none). It is append-only: the
database refuses to update, delete, replace or truncate an entry (it keeps the manifest of each
published global tag, which ``b2calib db verify`` checks).
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, Text

__all__ = ["UTC_TIME", "history", "metadata"]

#: The tables of every domain (their schema is the migrations').
metadata = MetaData()

#: Column type of every recorded time (timezone-aware; see :mod:`b2calib.db.clock`).
UTC_TIME = DateTime(timezone=True)

history = Table(
    "history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("time", UTC_TIME, nullable=False),
    Column("author", String(200), nullable=False),
    Column("action", String(40), nullable=False),
    Column("globaltag", String(200)),
    Column("details", Text, nullable=False),
    Index("ix_history_tag", "globaltag"),
)


def __dir__() -> list[str]:
    return __all__
