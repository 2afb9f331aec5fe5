"""The reviews of staging tags (:data:`tag_reviews`, created by the migration ``0007``):
append-only, enforced by the database's triggers."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, Index, Integer, String, Table, Text

from b2calib.db import UTC_TIME, metadata

__all__ = ["tag_reviews"]

#: One approval or rejection of a staging tag: the tag, ``approve`` or ``reject``, the user
#: with their role and detectors (comma-separated, empty for a manager), the comment, when,
#: and the move of the tag's state it made.
tag_reviews = Table(
    "tag_reviews",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tag", String(200), nullable=False),
    Column("action", String(10), nullable=False),
    Column("user", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("detectors", Text, nullable=False),
    Column("comment", Text, nullable=False),
    Column("created", UTC_TIME, nullable=False),
    Column("state_from", String(16), nullable=False),
    Column("state_to", String(16), nullable=False),
    CheckConstraint("action IN ('approve', 'reject')", name="ck_review_action"),
    Index("ix_tag_reviews_tag", "tag", "id"),
)


def __dir__() -> list[str]:
    return __all__
