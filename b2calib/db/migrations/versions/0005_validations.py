"""Validations of calibration jobs: one row per validation of a job's staged payloads (verdict,
reason, per-payload summary, diagnostics file), append-only.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

The table is protected like the other records (0002, 0003): a row is never updated, deleted or
replaced (SQLite: ``BEFORE UPDATE`` / ``BEFORE DELETE`` triggers and a ``BEFORE INSERT`` one
refusing an existing id, which ``INSERT OR REPLACE`` would otherwise delete unseen; PostgreSQL:
a row trigger and a ``BEFORE TRUNCATE`` statement trigger). A job validated again gets a new
row; the latest is its validation.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLE = "calibration_validations"
MESSAGE = "'b2calib: calibration validations are append-only'"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("calibration_jobs.id"), nullable=False),
        sa.Column("verdict", sa.String(10), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("diagnostics", sa.LargeBinary),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("verdict IN ('GOOD', 'WARNING', 'ERROR')", name="ck_validation_verdict"),
    )
    op.create_index("ix_calibration_validations_job", TABLE, ["job_id", "id"])
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
            "CREATE FUNCTION b2calib_validations_append_only() RETURNS trigger AS $$ "
            f"BEGIN RAISE EXCEPTION {MESSAGE}; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "DO $$ BEGIN EXECUTE format('ALTER FUNCTION b2calib_validations_append_only() "
            "SET search_path = %I, pg_temp', current_schema()); END $$"
        )
        op.execute(
            f"CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
            "FOR EACH ROW EXECUTE FUNCTION b2calib_validations_append_only()"
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
        op.execute("DROP FUNCTION b2calib_validations_append_only() CASCADE")
    op.drop_index("ix_calibration_validations_job", table_name=TABLE)
    op.drop_table(TABLE)
