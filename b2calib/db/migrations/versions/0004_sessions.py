"""Dashboard sessions: one row per login, ended by logout, expiry, or a change of its user.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qa_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "user_name",
            sa.String(200),
            sa.ForeignKey("qa_users.name", name="fk_qa_sessions_user", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("stamp", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_qa_sessions_user", "qa_sessions", ["user_name"])


def downgrade() -> None:
    op.drop_index("ix_qa_sessions_user", table_name="qa_sessions")
    op.drop_table("qa_sessions")
