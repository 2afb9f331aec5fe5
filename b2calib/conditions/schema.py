"""Tables of the conditions database (SQLAlchemy Core).

The schema is created and evolved by the Alembic migrations in ``migrations/``; this module is
what the code queries. ``tests/test_conditions_db.py`` checks that the two agree.

Rules the database enforces itself, whatever client writes to it (triggers created by the
migrations, for SQLite and PostgreSQL alike):

* a PUBLISHED or INVALID global tag is immutable: no IoV of it can be inserted, updated or
  deleted, and the tag itself can only move from PUBLISHED to INVALID;
* a global tag changes state only by the allowed moves (:data:`ALLOWED_MOVES`);
* a stored payload (its record and its file) is never updated;
* the quality-assurance records (certification flags, run states, good-run lists) are
  append-only: every change is a new row, no row is ever updated or deleted.

The QA tables (prefix ``qa_``) hold the run registry, the monitoring variables and QA
histograms per run, the reference of each histogram, the comparisons' results, the flags and
run states with their history, the good-run lists and the dashboard users.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from b2calib.dq import DQ_FLAGS

__all__ = [
    "ALLOWED_MOVES",
    "FROZEN_STATES",
    "ROLES",
    "RUN_STATES",
    "STATES",
    "TYPES",
    "calibration_jobs",
    "calibration_steps",
    "diagnostics",
    "globaltags",
    "history",
    "iovs",
    "metadata",
    "payload_files",
    "payloads",
    "qa_comparisons",
    "qa_flags",
    "qa_grls",
    "qa_histograms",
    "qa_references",
    "qa_run_states",
    "qa_runs",
    "qa_users",
    "qa_variables",
    "step_payloads",
]

STATES = ("OPEN", "TESTING", "VALIDATED", "PUBLISHED", "INVALID", "RUNNING")
TYPES = ("DEV", "RELEASE")
ALLOWED_MOVES: dict[str, tuple[str, ...]] = {
    "OPEN": ("TESTING", "RUNNING"),
    "TESTING": ("VALIDATED", "OPEN"),
    "VALIDATED": ("PUBLISHED", "OPEN"),
    "PUBLISHED": ("INVALID",),
    "INVALID": (),
    "RUNNING": (),
}
FROZEN_STATES = ("PUBLISHED", "INVALID")
RUN_STATES = ("OPEN", "SIGNOFF", "COMPLETED")
ROLES = ("viewer", "expert", "manager")

metadata = MetaData()

_when = DateTime(timezone=True)

payloads = Table(
    "payloads",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("checksum", String(32), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created", _when, nullable=False),
    Column("author", String(200), nullable=False),
    Column("provenance", Text, nullable=False),
    UniqueConstraint("name", "revision", name="uq_payload_revision"),
    Index("ix_payload_content", "name", "content_hash"),
)

payload_files = Table(
    "payload_files",
    metadata,
    Column("payload_id", Integer, ForeignKey("payloads.id"), primary_key=True),
    Column("content", LargeBinary, nullable=False),
)

globaltags = Table(
    "globaltags",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("type", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("description", Text, nullable=False),
    Column("created", _when, nullable=False),
    Column("modified", _when, nullable=False),
    Column("author", String(200), nullable=False),
    CheckConstraint(f"type IN {TYPES!r}", name="ck_globaltag_type"),
    CheckConstraint(f"state IN {STATES!r}", name="ck_globaltag_state"),
)

iovs = Table(
    "iovs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("globaltag_id", Integer, ForeignKey("globaltags.id"), nullable=False),
    Column("payload_id", Integer, ForeignKey("payloads.id"), nullable=False),
    Column("first_exp", Integer, nullable=False),
    Column("first_run", Integer, nullable=False),
    Column("final_exp", Integer, nullable=False),
    Column("final_run", Integer, nullable=False),
    Column("created", _when, nullable=False),
    Column("author", String(200), nullable=False),
    Index("ix_iov_tag", "globaltag_id", "payload_id"),
)

history = Table(
    "history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("time", _when, nullable=False),
    Column("author", String(200), nullable=False),
    Column("action", String(40), nullable=False),
    Column("globaltag", String(200)),
    Column("details", Text, nullable=False),
    Index("ix_history_tag", "globaltag"),
)

calibration_jobs = Table(
    "calibration_jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("calibration", String(200), nullable=False),
    Column("staging_tag", String(200), nullable=False),
    Column("state", String(20), nullable=False),
    Column("created", _when, nullable=False),
    Column("updated", _when, nullable=False),
    Column("inputs", Text, nullable=False),
    Column("summary", Text, nullable=False),
)

calibration_steps = Table(
    "calibration_steps",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("calibration_jobs.id"), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("algorithm", String(200), nullable=False),
    Column("runs", Text, nullable=False),
    Column("first_exp", Integer, nullable=False),
    Column("first_run", Integer, nullable=False),
    Column("final_exp", Integer, nullable=False),
    Column("final_run", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("message", Text, nullable=False),
    Column("created", _when, nullable=False),
    UniqueConstraint("job_id", "iteration", "algorithm", "runs", name="uq_step"),
)

step_payloads = Table(
    "step_payloads",
    metadata,
    Column("step_id", Integer, ForeignKey("calibration_steps.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("checksum", String(32), nullable=False),
    Column("content", LargeBinary, nullable=False),
)

diagnostics = Table(
    "diagnostics",
    metadata,
    Column("step_id", Integer, ForeignKey("calibration_steps.id"), primary_key=True),
    Column("content", LargeBinary, nullable=False),
)


# -- quality assurance -------------------------------------------------------------------------

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
    Column("computed", _when, nullable=False),
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
    Column("computed", _when, nullable=False),
)

qa_references = Table(
    "qa_references",
    metadata,
    Column("detector", String(20), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("exp", Integer, nullable=False),
    Column("run", Integer, nullable=False),
    Column("method", String(8), nullable=False),
    Column("options", String(20), nullable=False),
    Column("min_entries", Float, nullable=False),
    Column("p_warning", Float, nullable=False),
    Column("p_error", Float, nullable=False),
    Column("author", String(200), nullable=False),
    Column("time", _when, nullable=False),
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
    Column("evaluated", _when, nullable=False),
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
    Column("time", _when, nullable=False),
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
    Column("time", _when, nullable=False),
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
    Column("created", _when, nullable=False),
    UniqueConstraint("name", "version", name="uq_qa_grl_version"),
)

qa_users = Table(
    "qa_users",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("role", String(12), nullable=False),
    Column("detectors", String(200), nullable=False),
    Column("password", String(300), nullable=False),
    Column("created", _when, nullable=False),
    Column("author", String(200), nullable=False),
    CheckConstraint(f"role IN {ROLES!r}", name="ck_qa_user_role"),
)
