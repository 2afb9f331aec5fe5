"""The prompt loop: its invocations (prompt_runs) and their calibration tasks (prompt_tasks).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "prompt_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("bucket", sa.Integer),
        sa.Column("exp", sa.Integer, nullable=False),
        sa.Column("runs", sa.Text, nullable=False),
        sa.Column("staging_tag", sa.String(200), nullable=False),
        sa.Column("input_tags", sa.Text, nullable=False),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("started", _when(), nullable=False),
        sa.Column("finished", _when()),
        sa.Column("author", sa.String(200), nullable=False),
    )
    op.create_index("ix_prompt_runs_staging", "prompt_runs", ["staging_tag"])
    op.create_table(
        "prompt_tasks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("prompt_runs.id"), nullable=False),
        sa.Column("calibration", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("job_key", sa.String(64), nullable=False),
        sa.Column("started", _when(), nullable=False),
        sa.Column("finished", _when(), nullable=False),
    )
    op.create_index("ix_prompt_tasks_run", "prompt_tasks", ["run_id", "calibration"], unique=True)
    op.create_index("ix_prompt_tasks_job", "prompt_tasks", ["job_key"])


def downgrade() -> None:
    op.drop_index("ix_prompt_tasks_job", table_name="prompt_tasks")
    op.drop_index("ix_prompt_tasks_run", table_name="prompt_tasks")
    op.drop_table("prompt_tasks")
    op.drop_index("ix_prompt_runs_staging", table_name="prompt_runs")
    op.drop_table("prompt_runs")
