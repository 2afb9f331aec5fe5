"""Reviews of staging tags: one row per approval (TESTING -> VALIDATED) or rejection
(TESTING -> OPEN) of a tag, with the user, role, detectors, comment, time and the move;
append-only.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

The table is protected like the validations (0005): a row is never updated, deleted or replaced
(SQLite: ``BEFORE UPDATE`` / ``BEFORE DELETE`` triggers and a ``BEFORE INSERT`` one refusing an
existing id, which ``INSERT OR REPLACE`` would otherwise delete unseen; PostgreSQL: a row
trigger and a ``BEFORE TRUNCATE`` statement trigger).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLE = "tag_reviews"
MESSAGE = "'b2calib: tag reviews are append-only'"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tag", sa.String(200), nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("detectors", sa.Text, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state_from", sa.String(16), nullable=False),
        sa.Column("state_to", sa.String(16), nullable=False),
        sa.CheckConstraint("action IN ('approve', 'reject')", name="ck_review_action"),
    )
    op.create_index("ix_tag_reviews_tag", TABLE, ["tag", "id"])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for what in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {TABLE}_append_only_{what.lower()} BEFORE {what} ON {TABLE} "
                f"BEGIN SELECT RAISE(ABORT, {MESSAGE}); END"
            )
        op.execute(
            f"CREATE TRIGGER {TABLE}_never_replaced BEFORE INSERT ON {TABLE} "
            f"WHEN EXISTS (SELECT 1 FROM {TABLE} WHERE id = NEW.id AND NEW.id <> -1) "
            f"BEGIN SELECT RAISE(ABORT, {MESSAGE}); END"
        )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION b2calib_reviews_append_only() RETURNS trigger AS $$ "
            f"BEGIN RAISE EXCEPTION {MESSAGE}; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "DO $$ BEGIN EXECUTE format('ALTER FUNCTION b2calib_reviews_append_only() "
            "SET search_path = %I, pg_temp', current_schema()); END $$"
        )
        op.execute(
            f"CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
            "FOR EACH ROW EXECUTE FUNCTION b2calib_reviews_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
            "FOR EACH STATEMENT EXECUTE FUNCTION b2calib_no_truncate()"
        )
    else:
        raise RuntimeError(f"b2calib conditions database: unsupported backend {dialect!r}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER {TABLE}_no_truncate ON {TABLE}")
        op.execute("DROP FUNCTION b2calib_reviews_append_only() CASCADE")
    op.drop_index("ix_tag_reviews_tag", table_name=TABLE)
    op.drop_table(TABLE)
