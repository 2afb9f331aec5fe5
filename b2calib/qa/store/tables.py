"""Tables of the quality-assurance records (prefix ``qa_``), on the shared
:data:`b2calib.db.metadata`: the run registry, the monitoring variables and QA histograms per
run, the QA periods of each experiment (a detector change from a run on), the reference of each
histogram per class of runs and period, the comparisons' results, the certification flags and run
states with their history, the good-run lists, the dashboard users and their login sessions.

The schema is created and evolved by the Alembic migrations of :mod:`b2calib.db`. The
certification records (flags, run states, good-run lists) are append-only: every change is a
new row, and the database itself refuses to update or delete one (triggers).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from b2calib.db import UTC_TIME, metadata
from b2calib.dq import DQ_FLAGS

__all__ = [
    "ROLES",
    "RUN_STATES",
    "qa_comparisons",
    "qa_flags",
    "qa_grls",
    "qa_histograms",
    "qa_periods",
    "qa_references",
    "qa_run_states",
    "qa_runs",
    "qa_sessions",
    "qa_users",
    "qa_variables",
    "run_range",
]

#: Sign-off states of a run.
RUN_STATES = ("OPEN", "SIGNOFF", "COMPLETED")
#: Roles of the dashboard users.
ROLES = ("viewer", "expert", "manager")

qa_runs = Table(
    "qa_runs",
    metadata,
    Column("exp", Integer, primary_key=True),
    Column("run", Integer, primary_key=True),
    Column("run_type", String(20), nullable=False),
    Column("beam_energy", String(20), nullable=False),
    Column("start", Float, nullable=False),
    Column("stop", Float, nullable=False),
    Column("lumi_pb", Float, nullable=False),
    Column("l1_triggers", BigInteger, nullable=False),
    Column("detectors", String(200), nullable=False),
    Column("magnet_on", Boolean, nullable=False),
    Column("ecms_nominal_gev", Float, nullable=False),
    Column("notes", Text, nullable=False),
)

qa_variables = Table(
    "qa_variables",
    metadata,
    Column("exp", Integer, primary_key=True),
    Column("run", Integer, primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("detector", String(20), nullable=False),
    Column("value", Float, nullable=False),
    Column("error", Float, nullable=False),
    Column("unit", String(40), nullable=False),
    Column("computed", UTC_TIME, nullable=False),
    Index("ix_qa_variable_name", "name", "exp", "run"),
)

qa_histograms = Table(
    "qa_histograms",
    metadata,
    Column("exp", Integer, primary_key=True),
    Column("run", Integer, primary_key=True),
    Column("detector", String(20), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("entries", Float, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("computed", UTC_TIME, nullable=False),
)

#: A QA period: from run ``first_run`` of experiment ``exp`` on (until the next period's first
#: run), the detector configuration changed (``reason``); references and trend bands are per
#: period (:mod:`b2calib.qa.store.periods`). An experiment without a row here is one period.
qa_periods = Table(
    "qa_periods",
    metadata,
    Column("exp", Integer, primary_key=True),
    Column("first_run", Integer, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("author", String(200), nullable=False),
    Column("time", UTC_TIME, nullable=False),
)

#: One reference per histogram, experiment, class of runs and period (``period``: the first run
#: of the period, 0 for the experiment's first period).
qa_references = Table(
    "qa_references",
    metadata,
    Column("detector", String(20), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("exp", Integer, primary_key=True),
    Column("run_type", String(20), primary_key=True),
    Column("beam_energy", String(20), primary_key=True),
    Column("period", Integer, primary_key=True, server_default="0"),
    Column("run", Integer, nullable=False),
    Column("method", String(8), nullable=False),
    Column("options", String(20), nullable=False),
    Column("min_entries", Float, nullable=False),
    Column("p_warning", Float, nullable=False),
    Column("p_error", Float, nullable=False),
    Column("author", String(200), nullable=False),
    Column("time", UTC_TIME, nullable=False),
)

qa_comparisons = Table(
    "qa_comparisons",
    metadata,
    Column("exp", Integer, primary_key=True),
    Column("run", Integer, primary_key=True),
    Column("detector", String(20), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("reference_exp", Integer, nullable=False),
    Column("reference_run", Integer, nullable=False),
    Column("result", Text, nullable=False),
    Column("status", String(10), nullable=False),
    Column("evaluated", UTC_TIME, nullable=False),
)

qa_flags = Table(
    "qa_flags",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("exp", Integer, nullable=False),
    Column("run", Integer, nullable=False),
    Column("detector", String(20), nullable=False),
    Column("flag", String(12), nullable=False),
    Column("comment", Text, nullable=False),
    Column("author", String(200), nullable=False),
    Column("time", UTC_TIME, nullable=False),
    Column("confirmed", Text, nullable=False, server_default=""),
    CheckConstraint(f"flag IN {DQ_FLAGS!r}", name="ck_qa_flag"),
    Index("ix_qa_flags_run", "exp", "run", "detector"),
)

qa_run_states = Table(
    "qa_run_states",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("exp", Integer, nullable=False),
    Column("run", Integer, nullable=False),
    Column("state", String(12), nullable=False),
    Column("comment", Text, nullable=False),
    Column("author", String(200), nullable=False),
    Column("time", UTC_TIME, nullable=False),
    Column("confirmed", Text, nullable=False, server_default=""),
    CheckConstraint(f"state IN {RUN_STATES!r}", name="ck_qa_run_state"),
    Index("ix_qa_run_states_run", "exp", "run"),
)

qa_grls = Table(
    "qa_grls",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("expression", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("author", String(200), nullable=False),
    Column("created", UTC_TIME, nullable=False),
    UniqueConstraint("name", "version", name="uq_qa_grl_version"),
)

qa_users = Table(
    "qa_users",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("role", String(12), nullable=False),
    Column("detectors", String(200), nullable=False),
    Column("password", String(300), nullable=False),
    Column("created", UTC_TIME, nullable=False),
    Column("author", String(200), nullable=False),
    CheckConstraint(f"role IN {ROLES!r}", name="ck_qa_user_role"),
)

#: One row per dashboard login (see :mod:`b2calib.qa.store.sessions`): ``id`` is the SHA-256 of
#: the token the browser holds (never the token), ``stamp`` a digest of the user's role,
#: detectors and password hash when the session began (a change of any ends the session).
qa_sessions = Table(
    "qa_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "user_name",
        String(200),
        ForeignKey("qa_users.name", name="fk_qa_sessions_user", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("stamp", String(64), nullable=False),
    Column("created", UTC_TIME, nullable=False),
    Column("expires", UTC_TIME, nullable=False),
    Index("ix_qa_sessions_user", "user_name"),
)


def run_range(
    table: sa.Table, exp: int | None, first: int | None, last: int | None
) -> list[sa.ColumnElement[bool]]:
    """The conditions selecting the rows of a ``qa_`` table (one with ``exp`` and ``run``
    columns) of experiment ``exp`` and runs ``first`` to ``last`` (``None``: no limit)."""
    where: list[sa.ColumnElement[bool]] = []
    if exp is not None:
        where.append(table.c.exp == exp)
    if first is not None:
        where.append(table.c.run >= first)
    if last is not None:
        where.append(table.c.run <= last)
    return where


def __dir__() -> list[str]:
    return __all__
