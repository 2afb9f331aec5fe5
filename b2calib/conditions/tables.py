"""Tables of the conditions database (SQLAlchemy Core): payloads, their files, global tags and
IoVs, on the shared :data:`b2calib.db.metadata` (the audit log, ``history``, is
:data:`b2calib.db.history`).

The schema is created and evolved by the Alembic migrations in ``b2calib/db/migrations/``;
this module is what the code queries. ``tests/test_conditions_db.py`` checks that the two agree.

Rules the database enforces itself, whatever client writes to it (triggers created by the
migrations, for SQLite and PostgreSQL alike):

* a PUBLISHED or INVALID global tag is immutable: no IoV of it can be inserted, updated or
  deleted, and the tag itself changes only by the move from PUBLISHED to INVALID (which
  records its time in ``modified``);
* a global tag changes state only by the allowed moves (:data:`ALLOWED_MOVES`) and never
  changes its id or name;
* a stored payload (its record and its file) is never updated or deleted;
* no row of these tables is ever replaced (SQLite's ``INSERT OR REPLACE`` is refused) and,
  on PostgreSQL, none of them can be truncated (revision 0003).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from b2calib.conditions.names import NAME_LENGTH
from b2calib.db import UTC_TIME, metadata

__all__ = [
    "ALLOWED_MOVES",
    "FROZEN_STATES",
    "STATES",
    "TYPES",
    "globaltags",
    "iovs",
    "payload_files",
    "payloads",
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


payloads = Table(
    "payloads",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(NAME_LENGTH), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("checksum", String(32), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created", UTC_TIME, nullable=False),
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
    Column("name", String(NAME_LENGTH), nullable=False, unique=True),
    Column("type", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("description", Text, nullable=False),
    Column("created", UTC_TIME, nullable=False),
    Column("modified", UTC_TIME, nullable=False),
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
    Column("created", UTC_TIME, nullable=False),
    Column("author", String(200), nullable=False),
    Index("ix_iov_tag", "globaltag_id", "payload_id"),
)


def __dir__() -> list[str]:
    return __all__
