"""Tables of the conditions database (SQLAlchemy Core).

The schema is created and evolved by the Alembic migrations in ``migrations/``; this module is
what the code queries. ``tests/test_conditions_db.py`` checks that the two agree.

Rules the database enforces itself, whatever client writes to it (triggers created by the
migrations, for SQLite and PostgreSQL alike):

* a PUBLISHED or INVALID global tag is immutable: no IoV of it can be inserted, updated or
  deleted, and the tag itself can only move from PUBLISHED to INVALID;
* a global tag changes state only by the allowed moves (:data:`ALLOWED_MOVES`);
* a stored payload (its record and its file) is never updated.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
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

__all__ = [
    "ALLOWED_MOVES",
    "FROZEN_STATES",
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
