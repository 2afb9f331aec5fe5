"""Quality assurance per run class, and confirmed overrides.

* ``qa_references`` is keyed by the run class too: a QA histogram has one reference per
  (run type, beam energy) - physics runs at the 4S are compared with a 4S run, Continuum runs
  with a Continuum run, cosmics with a cosmic run. The references set before take the class of
  their reference run.
* ``qa_flags`` and ``qa_run_states`` record what their author confirmed (``confirmed``: empty,
  or what the write overrode - another person's flag, GOOD over an automatic ERROR, a run
  completed with detectors NOTSET). Added as a column with a default, so the append-only rows
  are not rewritten.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_COLUMNS = (
    "detector, name, exp, run, method, options, min_entries, p_warning, p_error, author, time"
)


def _references(name: str) -> None:
    op.create_table(
        name,
        sa.Column("detector", sa.String(20), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("run_type", sa.String(20), primary_key=True),
        sa.Column("beam_energy", sa.String(20), primary_key=True),
        sa.Column("exp", sa.Integer, nullable=False),
        sa.Column("run", sa.Integer, nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("options", sa.String(20), nullable=False),
        sa.Column("min_entries", sa.Float, nullable=False),
        sa.Column("p_warning", sa.Float, nullable=False),
        sa.Column("p_error", sa.Float, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    )


def upgrade() -> None:
    _references("qa_references_by_class")
    # a reference set before keeps its histogram and takes its reference run's class
    op.execute(
        f"INSERT INTO qa_references_by_class (run_type, beam_energy, {_COLUMNS}) "
        "SELECT COALESCE(r.run_type, 'physics'), COALESCE(r.beam_energy, '4S'), "
        + ", ".join(f"q.{c.strip()}" for c in _COLUMNS.split(","))
        + " FROM qa_references q LEFT JOIN qa_runs r ON r.exp = q.exp AND r.run = q.run"
    )
    op.drop_table("qa_references")
    op.rename_table("qa_references_by_class", "qa_references")
    for table in ("qa_flags", "qa_run_states"):
        op.add_column(table, sa.Column("confirmed", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    for table in ("qa_run_states", "qa_flags"):
        op.drop_column(table, "confirmed")
    op.create_table(
        "qa_references_one",
        sa.Column("detector", sa.String(20), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("exp", sa.Integer, nullable=False),
        sa.Column("run", sa.Integer, nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("options", sa.String(20), nullable=False),
        sa.Column("min_entries", sa.Float, nullable=False),
        sa.Column("p_warning", sa.Float, nullable=False),
        sa.Column("p_error", sa.Float, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    )
    # one reference per histogram again: the physics 4S one where there is one
    op.execute(
        f"INSERT INTO qa_references_one ({_COLUMNS}) SELECT {_COLUMNS} FROM qa_references q "
        "WHERE NOT EXISTS (SELECT 1 FROM qa_references o WHERE o.detector = q.detector "
        "AND o.name = q.name AND (o.run_type || '/' || o.beam_energy) < "
        "(q.run_type || '/' || q.beam_energy) AND NOT (q.run_type = 'physics' AND "
        "q.beam_energy = '4S')) AND NOT EXISTS (SELECT 1 FROM qa_references p WHERE "
        "p.detector = q.detector AND p.name = q.name AND p.run_type = 'physics' AND "
        "p.beam_energy = '4S' AND NOT (q.run_type = 'physics' AND q.beam_energy = '4S'))"
    )
    op.drop_table("qa_references")
    op.rename_table("qa_references_one", "qa_references")
