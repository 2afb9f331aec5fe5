"""QA periods: references and trend bands from a detector change on.

* ``qa_periods`` (exp, first_run, reason, author, time): from run ``first_run`` of experiment
  ``exp`` on, until the next period's first run, the detector configuration changed (a crate's
  boards replaced, a high-voltage trip, a firmware update). An experiment without a period is
  one period, as before.
* ``qa_references`` is keyed by the period too (``period``: its first run; 0 is the
  experiment's first period, which starts with the experiment): the runs after a change are
  compared with a run after it. The references set before are those of the experiment's first
  period. Down again, each experiment and class keeps its first period's reference.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_COLUMNS = (
    "detector, name, run_type, beam_energy, exp, run, method, options, min_entries, "
    "p_warning, p_error, author, time"
)


def _references(name: str, *, per_period: bool) -> None:
    period = (
        [sa.Column("period", sa.Integer, primary_key=True, server_default="0")]
        if per_period
        else []
    )
    op.create_table(
        name,
        sa.Column("detector", sa.String(20), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("exp", sa.Integer, primary_key=True),
        sa.Column("run_type", sa.String(20), primary_key=True),
        sa.Column("beam_energy", sa.String(20), primary_key=True),
        *period,
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
    op.create_table(
        "qa_periods",
        sa.Column("exp", sa.Integer, primary_key=True),
        sa.Column("first_run", sa.Integer, primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    )
    _references("qa_references_per_period", per_period=True)
    op.execute(
        f"INSERT INTO qa_references_per_period (period, {_COLUMNS}) "
        f"SELECT 0, {_COLUMNS} FROM qa_references"
    )
    op.drop_table("qa_references")
    op.rename_table("qa_references_per_period", "qa_references")


def downgrade() -> None:
    _references("qa_references_per_exp", per_period=False)
    # one reference per experiment and class again: its first period's
    op.execute(
        f"INSERT INTO qa_references_per_exp ({_COLUMNS}) SELECT {_COLUMNS} FROM qa_references q "
        "WHERE NOT EXISTS (SELECT 1 FROM qa_references o WHERE o.detector = q.detector AND "
        "o.name = q.name AND o.exp = q.exp AND o.run_type = q.run_type AND "
        "o.beam_energy = q.beam_energy AND o.period < q.period)"
    )
    op.drop_table("qa_references")
    op.rename_table("qa_references_per_exp", "qa_references")
    op.drop_table("qa_periods")
