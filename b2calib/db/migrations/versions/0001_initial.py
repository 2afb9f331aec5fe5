"""Initial schema: payloads, global tags, IoVs, history, calibration checkpoints; guard triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATES = ("OPEN", "TESTING", "VALIDATED", "PUBLISHED", "INVALID", "RUNNING")
TYPES = ("DEV", "RELEASE")
MOVES = (
    "OPEN>TESTING",
    "OPEN>RUNNING",
    "TESTING>VALIDATED",
    "TESTING>OPEN",
    "VALIDATED>PUBLISHED",
    "VALIDATED>OPEN",
    "PUBLISHED>INVALID",
)
FROZEN = ("PUBLISHED", "INVALID")
IOVS_FROZEN = "'b2calib: the global tag is PUBLISHED or INVALID, its IoVs are immutable'"
TAG_FROZEN = "'b2calib: the global tag is PUBLISHED or INVALID, it is immutable'"
TAG_UNDELETABLE = "'b2calib: the global tag is PUBLISHED or INVALID, it cannot be deleted'"
BAD_MOVE = "'b2calib: this global tag state change is not allowed'"
PAYLOAD_FROZEN = "'b2calib: stored payloads are immutable'"
BORN_OPEN = "'b2calib: a new global tag starts OPEN'"


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _sql_list(items: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{i}'" for i in items) + ")"


# The messages start with "b2calib:" so that the library recognises them and reports them as
# rule violations (ConditionsError), on both backends.
SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER iovs_frozen_insert BEFORE INSERT ON iovs
    WHEN (SELECT state FROM globaltags WHERE id = NEW.globaltag_id) IN {_sql_list(FROZEN)}
    BEGIN SELECT RAISE(ABORT, {IOVS_FROZEN}); END""",
    f"""CREATE TRIGGER iovs_frozen_update BEFORE UPDATE ON iovs
    WHEN (SELECT state FROM globaltags WHERE id = OLD.globaltag_id) IN {_sql_list(FROZEN)}
      OR (SELECT state FROM globaltags WHERE id = NEW.globaltag_id) IN {_sql_list(FROZEN)}
    BEGIN SELECT RAISE(ABORT, {IOVS_FROZEN}); END""",
    f"""CREATE TRIGGER iovs_frozen_delete BEFORE DELETE ON iovs
    WHEN (SELECT state FROM globaltags WHERE id = OLD.globaltag_id) IN {_sql_list(FROZEN)}
    BEGIN SELECT RAISE(ABORT, {IOVS_FROZEN}); END""",
    f"""CREATE TRIGGER globaltags_frozen_update BEFORE UPDATE ON globaltags
    WHEN OLD.state IN {_sql_list(FROZEN)} AND (
      NEW.name IS NOT OLD.name OR NEW.type IS NOT OLD.type
      OR NEW.description IS NOT OLD.description OR NEW.author IS NOT OLD.author
      OR NEW.created IS NOT OLD.created)
    BEGIN SELECT RAISE(ABORT, {TAG_FROZEN}); END""",
    f"""CREATE TRIGGER globaltags_state_move BEFORE UPDATE OF state ON globaltags
    WHEN NEW.state IS NOT OLD.state AND (OLD.state || '>' || NEW.state) NOT IN {_sql_list(MOVES)}
    BEGIN SELECT RAISE(ABORT, {BAD_MOVE}); END""",
    f"""CREATE TRIGGER globaltags_frozen_delete BEFORE DELETE ON globaltags
    WHEN OLD.state IN {_sql_list(FROZEN)}
    BEGIN SELECT RAISE(ABORT, {TAG_UNDELETABLE}); END""",
    f"""CREATE TRIGGER payloads_immutable BEFORE UPDATE ON payloads
    BEGIN SELECT RAISE(ABORT, {PAYLOAD_FROZEN}); END""",
    f"""CREATE TRIGGER payloads_undeletable BEFORE DELETE ON payloads
    BEGIN SELECT RAISE(ABORT, {PAYLOAD_FROZEN}); END""",
    f"""CREATE TRIGGER payload_files_immutable BEFORE UPDATE ON payload_files
    BEGIN SELECT RAISE(ABORT, {PAYLOAD_FROZEN}); END""",
    f"""CREATE TRIGGER payload_files_undeletable BEFORE DELETE ON payload_files
    BEGIN SELECT RAISE(ABORT, {PAYLOAD_FROZEN}); END""",
    f"""CREATE TRIGGER globaltags_born_open BEFORE INSERT ON globaltags
    WHEN NEW.state IS NOT 'OPEN'
    BEGIN SELECT RAISE(ABORT, {BORN_OPEN}); END""",
]

POSTGRES_TRIGGERS = [
    f"""CREATE FUNCTION b2calib_guard_iovs() RETURNS trigger AS $$
    BEGIN
      IF TG_OP IN ('UPDATE', 'DELETE') AND (SELECT state FROM globaltags
          WHERE id = OLD.globaltag_id) IN {_sql_list(FROZEN)} THEN
        RAISE EXCEPTION {IOVS_FROZEN};
      END IF;
      IF TG_OP IN ('UPDATE', 'INSERT') THEN
        IF (SELECT state FROM globaltags WHERE id = NEW.globaltag_id) IN {_sql_list(FROZEN)} THEN
          RAISE EXCEPTION {IOVS_FROZEN};
        END IF;
        RETURN NEW;
      END IF;
      RETURN OLD;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER iovs_guard BEFORE INSERT OR UPDATE OR DELETE ON iovs
    FOR EACH ROW EXECUTE FUNCTION b2calib_guard_iovs()""",
    f"""CREATE FUNCTION b2calib_guard_globaltags() RETURNS trigger AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        IF OLD.state IN {_sql_list(FROZEN)} THEN
          RAISE EXCEPTION {TAG_UNDELETABLE};
        END IF;
        RETURN OLD;
      END IF;
      IF OLD.state IN {_sql_list(FROZEN)} AND (NEW.name IS DISTINCT FROM OLD.name
          OR NEW.type IS DISTINCT FROM OLD.type OR NEW.description IS DISTINCT FROM OLD.description
          OR NEW.author IS DISTINCT FROM OLD.author
          OR NEW.created IS DISTINCT FROM OLD.created) THEN
        RAISE EXCEPTION {TAG_FROZEN};
      END IF;
      IF NEW.state IS DISTINCT FROM OLD.state
          AND (OLD.state || '>' || NEW.state) NOT IN {_sql_list(MOVES)} THEN
        RAISE EXCEPTION {BAD_MOVE};
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER globaltags_guard BEFORE UPDATE OR DELETE ON globaltags
    FOR EACH ROW EXECUTE FUNCTION b2calib_guard_globaltags()""",
    f"""CREATE FUNCTION b2calib_immutable() RETURNS trigger AS $$
    BEGIN RAISE EXCEPTION {PAYLOAD_FROZEN}; END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER payloads_immutable BEFORE UPDATE OR DELETE ON payloads
    FOR EACH ROW EXECUTE FUNCTION b2calib_immutable()""",
    """CREATE TRIGGER payload_files_immutable BEFORE UPDATE OR DELETE ON payload_files
    FOR EACH ROW EXECUTE FUNCTION b2calib_immutable()""",
    f"""CREATE FUNCTION b2calib_born_open() RETURNS trigger AS $$
    BEGIN
      IF NEW.state IS DISTINCT FROM 'OPEN' THEN RAISE EXCEPTION {BORN_OPEN}; END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER globaltags_born_open BEFORE INSERT ON globaltags
    FOR EACH ROW EXECUTE FUNCTION b2calib_born_open()""",
]


def upgrade() -> None:
    op.create_table(
        "payloads",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("checksum", sa.String(32), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created", _when(), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("provenance", sa.Text, nullable=False),
        sa.UniqueConstraint("name", "revision", name="uq_payload_revision"),
    )
    op.create_index("ix_payload_content", "payloads", ["name", "content_hash"])
    op.create_table(
        "payload_files",
        sa.Column("payload_id", sa.Integer, sa.ForeignKey("payloads.id"), primary_key=True),
        sa.Column("content", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "globaltags",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created", _when(), nullable=False),
        sa.Column("modified", _when(), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.CheckConstraint(f"type IN {TYPES!r}", name="ck_globaltag_type"),
        sa.CheckConstraint(f"state IN {STATES!r}", name="ck_globaltag_state"),
    )
    op.create_table(
        "iovs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("globaltag_id", sa.Integer, sa.ForeignKey("globaltags.id"), nullable=False),
        sa.Column("payload_id", sa.Integer, sa.ForeignKey("payloads.id"), nullable=False),
        sa.Column("first_exp", sa.Integer, nullable=False),
        sa.Column("first_run", sa.Integer, nullable=False),
        sa.Column("final_exp", sa.Integer, nullable=False),
        sa.Column("final_run", sa.Integer, nullable=False),
        sa.Column("created", _when(), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
    )
    op.create_index("ix_iov_tag", "iovs", ["globaltag_id", "payload_id"])
    op.create_table(
        "history",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("time", _when(), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("globaltag", sa.String(200)),
        sa.Column("details", sa.Text, nullable=False),
    )
    op.create_index("ix_history_tag", "history", ["globaltag"])
    op.create_table(
        "calibration_jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(64), nullable=False, unique=True),
        sa.Column("calibration", sa.String(200), nullable=False),
        sa.Column("staging_tag", sa.String(200), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created", _when(), nullable=False),
        sa.Column("updated", _when(), nullable=False),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
    )
    op.create_table(
        "calibration_steps",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("calibration_jobs.id"), nullable=False),
        sa.Column("iteration", sa.Integer, nullable=False),
        sa.Column("algorithm", sa.String(200), nullable=False),
        sa.Column("runs", sa.Text, nullable=False),
        sa.Column("first_exp", sa.Integer, nullable=False),
        sa.Column("first_run", sa.Integer, nullable=False),
        sa.Column("final_exp", sa.Integer, nullable=False),
        sa.Column("final_run", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created", _when(), nullable=False),
        sa.UniqueConstraint("job_id", "iteration", "algorithm", "runs", name="uq_step"),
    )
    op.create_table(
        "step_payloads",
        sa.Column("step_id", sa.Integer, sa.ForeignKey("calibration_steps.id"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("checksum", sa.String(32), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "diagnostics",
        sa.Column("step_id", sa.Integer, sa.ForeignKey("calibration_steps.id"), primary_key=True),
        sa.Column("content", sa.LargeBinary, nullable=False),
    )
    dialect = op.get_bind().dialect.name
    triggers = {"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRES_TRIGGERS}.get(dialect)
    if triggers is None:
        raise RuntimeError(f"b2calib conditions database: unsupported backend {dialect!r}")
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for fn in (
            "b2calib_guard_iovs",
            "b2calib_guard_globaltags",
            "b2calib_immutable",
            "b2calib_born_open",
        ):
            op.execute(f"DROP FUNCTION {fn}() CASCADE")
    for table in (
        "diagnostics",
        "step_payloads",
        "calibration_steps",
        "calibration_jobs",
        "history",
        "iovs",
        "globaltags",
        "payload_files",
        "payloads",
    ):
        op.drop_table(table)
