"""QA references per experiment.

``qa_references`` is keyed by the experiment too: a QA histogram has one reference per
experiment and class of runs (run type, beam energy), a run of that experiment from that
class. An experiment's detector conditions (masks, calibrations, beam backgrounds, the beam
energy itself) differ from the last one's, so its runs are compared with one of its own runs;
setting the references of a new experiment no longer replaces those of the earlier ones. The
references set before keep their reference run's experiment.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_COLUMNS = (
    "detector, name, run_type, beam_energy, exp, run, method, options, min_entries, "
    "p_warning, p_error, author, time"
)


def _references(name: str, *, per_experiment: bool) -> None:
    op.create_table(
        name,
        sa.Column("detector", sa.String(20), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("exp", sa.Integer, primary_key=per_experiment, nullable=False),
        sa.Column("run_type", sa.String(20), primary_key=True),
        sa.Column("beam_energy", sa.String(20), primary_key=True),
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
    _references("qa_references_per_exp", per_experiment=True)
    op.execute(
        f"INSERT INTO qa_references_per_exp ({_COLUMNS}) SELECT {_COLUMNS} FROM qa_references"
    )
    op.drop_table("qa_references")
    op.rename_table("qa_references_per_exp", "qa_references")


def downgrade() -> None:
    _references("qa_references_per_class", per_experiment=False)
    # one reference per histogram and class again: the newest experiment's
    op.execute(
        f"INSERT INTO qa_references_per_class ({_COLUMNS}) SELECT {_COLUMNS} FROM qa_references q "
        "WHERE NOT EXISTS (SELECT 1 FROM qa_references o WHERE o.detector = q.detector AND "
        "o.name = q.name AND o.run_type = q.run_type AND o.beam_energy = q.beam_energy AND "
        "o.exp > q.exp)"
    )
    op.drop_table("qa_references")
    op.rename_table("qa_references_per_class", "qa_references")
