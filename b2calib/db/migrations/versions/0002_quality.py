"""Quality assurance: run registry, monitoring variables, QA histograms, references and
comparisons, certification flags and run states (append-only), good-run lists, users.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DQ_FLAGS = ("GOOD", "BAD", "RECOVERABLE", "NOTSET", "EXCLUDED")
RUN_STATES = ("OPEN", "SIGNOFF", "COMPLETED")
ROLES = ("viewer", "expert", "manager")
APPEND_ONLY = ("qa_flags", "qa_run_states", "qa_grls")
# starts with "b2calib:" so that the library reports it as a rule violation
APPEND_ONLY_MESSAGE = "'b2calib: quality-assurance history is append-only'"


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "qa_runs",
        sa.Column("exp", sa.Integer, primary_key=True),
        sa.Column("run", sa.Integer, primary_key=True),
        sa.Column("run_type", sa.String(20), nullable=False),
        sa.Column("beam_energy", sa.String(20), nullable=False),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("stop", sa.Float, nullable=False),
        sa.Column("lumi_pb", sa.Float, nullable=False),
        sa.Column("l1_triggers", sa.BigInteger, nullable=False),
        sa.Column("detectors", sa.String(200), nullable=False),
        sa.Column("magnet_on", sa.Boolean, nullable=False),
        sa.Column("ecms_nominal_gev", sa.Float, nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
    )
    op.create_table(
        "qa_variables",
        sa.Column("exp", sa.Integer, primary_key=True),
        sa.Column("run", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("detector", sa.String(20), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("error", sa.Float, nullable=False),
        sa.Column("unit", sa.String(40), nullable=False),
        sa.Column("computed", _when(), nullable=False),
    )
    op.create_index("ix_qa_variable_name", "qa_variables", ["name", "exp", "run"])
    op.create_table(
        "qa_histograms",
        sa.Column("exp", sa.Integer, primary_key=True),
        sa.Column("run", sa.Integer, primary_key=True),
        sa.Column("detector", sa.String(20), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("entries", sa.Float, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("computed", _when(), nullable=False),
    )
    op.create_table(
        "qa_references",
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
        sa.Column("time", _when(), nullable=False),
    )
    op.create_table(
        "qa_comparisons",
        sa.Column("exp", sa.Integer, primary_key=True),
        sa.Column("run", sa.Integer, primary_key=True),
        sa.Column("detector", sa.String(20), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("reference_exp", sa.Integer, nullable=False),
        sa.Column("reference_run", sa.Integer, nullable=False),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("evaluated", _when(), nullable=False),
    )
    op.create_table(
        "qa_flags",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("exp", sa.Integer, nullable=False),
        sa.Column("run", sa.Integer, nullable=False),
        sa.Column("detector", sa.String(20), nullable=False),
        sa.Column("flag", sa.String(12), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("time", _when(), nullable=False),
        sa.CheckConstraint(f"flag IN {DQ_FLAGS!r}", name="ck_qa_flag"),
    )
    op.create_index("ix_qa_flags_run", "qa_flags", ["exp", "run", "detector"])
    op.create_table(
        "qa_run_states",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("exp", sa.Integer, nullable=False),
        sa.Column("run", sa.Integer, nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("time", _when(), nullable=False),
        sa.CheckConstraint(f"state IN {RUN_STATES!r}", name="ck_qa_run_state"),
    )
    op.create_index("ix_qa_run_states_run", "qa_run_states", ["exp", "run"])
    op.create_table(
        "qa_grls",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("expression", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("created", _when(), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_qa_grl_version"),
    )
    op.create_table(
        "qa_users",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("role", sa.String(12), nullable=False),
        sa.Column("detectors", sa.String(200), nullable=False),
        sa.Column("password", sa.String(300), nullable=False),
        sa.Column("created", _when(), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.CheckConstraint(f"role IN {ROLES!r}", name="ck_qa_user_role"),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in APPEND_ONLY:
            for what in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_append_only_{what.lower()} BEFORE {what} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, {APPEND_ONLY_MESSAGE}); END"
                )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION b2calib_append_only() RETURNS trigger AS $$ "
            f"BEGIN RAISE EXCEPTION {APPEND_ONLY_MESSAGE}; END $$ LANGUAGE plpgsql"
        )
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION b2calib_append_only()"
            )
    else:
        raise RuntimeError(f"b2calib conditions database: unsupported backend {dialect!r}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION b2calib_append_only() CASCADE")
    for table in (
        "qa_users",
        "qa_grls",
        "qa_run_states",
        "qa_flags",
        "qa_comparisons",
        "qa_references",
        "qa_histograms",
        "qa_variables",
        "qa_runs",
    ):
        op.drop_table(table)
