"""The database's clock: every time b2calib records is timezone-aware UTC.

SQLite gives stored times back without their timezone; :func:`as_utc` restores it, so that a
time read back compares equal to the one written, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["as_utc", "now"]


def now() -> datetime:
    """The current time, timezone-aware UTC (what b2calib records)."""
    return datetime.now(UTC)


def as_utc(t: datetime) -> datetime:
    """A time read from the database as timezone-aware UTC (a naive time is taken as UTC)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def __dir__() -> list[str]:
    return __all__
