"""Login sessions of the dashboards, kept in the database so that they end at once everywhere.

A login opens a :class:`Session`: the browser gets a random token (in a signed cookie), the
database keeps the token's SHA-256, which is the session's :attr:`~Session.id` (a name for the
session in logs and pages, never a credential: presenting it finds nothing). Every request of a
served page looks its session up (:meth:`Sessions.find`), so a session ends for every server
process sharing the database as soon as

* it is closed (logout: :meth:`Sessions.close`),
* it expires (``lifetime`` seconds after the login),
* its user is removed, or their password, role or detectors change: a session records a digest
  of these (its *stamp*) when it begins and is only valid while the user's row still gives the
  same digest, however the row was changed (:class:`~b2calib.qa.store.Users`, or SQL behind
  the library's back). :meth:`~b2calib.qa.store.Users.remove` and
  :meth:`~b2calib.qa.store.Users.set_password` also delete the user's sessions.

Nothing is cached: the database is the only state, so several server processes behind one
address see the same sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from b2calib.db import Database, now
from b2calib.db.clock import as_utc
from b2calib.exceptions import QAError
from b2calib.qa.store.tables import qa_sessions, qa_users
from b2calib.qa.store.users import User, _user

__all__ = ["DEFAULT_LIFETIME", "Session", "Sessions", "session_id"]

#: Seconds a session lasts when nothing ends it earlier (a day).
DEFAULT_LIFETIME = 86400.0

# what a session reads of its user: the columns whose change ends it
_COLUMNS = (
    qa_sessions.c.id,
    qa_sessions.c.stamp,
    qa_sessions.c.created,
    qa_sessions.c.expires,
    qa_users.c.name,
    qa_users.c.role,
    qa_users.c.detectors,
    qa_users.c.password,
)
# ids looked up per query by Sessions.alive
_CHUNK = 500


def session_id(token: str) -> str:
    """The id of the session whose token is ``token`` (its SHA-256, hex)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _stamp(row: Any) -> str:
    """A digest of what a session depends on in its user's row: role, detectors, password."""
    text = "\x00".join((row.role, row.detectors, row.password))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Session:
    """A live login.

    Attributes
    ----------
    id
        SHA-256 (hex) of the browser's token: names the session, grants nothing.
    user
        Whose login it is, as the database knows them now.
    created, expires
        When it began and when it ends at the latest (timezone-aware UTC).
    """

    id: str
    user: User
    created: datetime
    expires: datetime


class Sessions:
    """The login sessions of a QA database (``QADatabase.sessions``).

    Parameters
    ----------
    db
        The database holding the ``qa_sessions`` table.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def open(self, name: str, *, lifetime: float = DEFAULT_LIFETIME) -> tuple[str, Session]:
        """Begin a session of user ``name``, lasting at most ``lifetime`` seconds.

        Returns the token to give the browser (shown once, stored nowhere) and the session.
        Expired sessions of every user are dropped on the way.
        """
        if not (math.isfinite(lifetime) and lifetime > 0):
            raise QAError(f"a session lifetime must be positive seconds, not {lifetime}")
        token = secrets.token_urlsafe(32)
        created = now()
        expires = created + timedelta(seconds=lifetime)
        with self.db.write() as conn:
            row = conn.execute(sa.select(qa_users).where(qa_users.c.name == name)).first()
            if row is None:
                raise QAError(f"no user {name!r}")
            conn.execute(qa_sessions.delete().where(qa_sessions.c.expires <= created))
            conn.execute(
                qa_sessions.insert().values(
                    id=session_id(token),
                    user_name=name,
                    stamp=_stamp(row),
                    created=created,
                    expires=expires,
                )
            )
        return token, Session(session_id(token), _user(row), created, expires)

    def find(self, token: str) -> Session | None:
        """The live session whose token is ``token`` (from the browser), or None."""
        return self.get(session_id(token)) if token else None

    def get(self, sid: str) -> Session | None:
        """The live session with id ``sid``, or None (closed, expired, or its user changed)."""
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(*_COLUMNS)
                .join_from(qa_sessions, qa_users, qa_users.c.name == qa_sessions.c.user_name)
                .where(qa_sessions.c.id == sid)
            ).first()
        return None if row is None else _live(row, now())

    def alive(self, ids: Iterable[str]) -> set[str]:
        """Which of the session ids ``ids`` name live sessions."""
        wanted = sorted(set(ids))
        found: set[str] = set()
        t = now()
        with self.db.read() as conn:
            for i in range(0, len(wanted), _CHUNK):
                rows = conn.execute(
                    sa.select(*_COLUMNS)
                    .join_from(qa_sessions, qa_users, qa_users.c.name == qa_sessions.c.user_name)
                    .where(qa_sessions.c.id.in_(wanted[i : i + _CHUNK]))
                ).all()
                found.update(r.id for r in rows if _live(r, t) is not None)
        return found

    def close(self, sid: str) -> bool:
        """End the session ``sid`` (logout); whether there was one."""
        with self.db.write() as conn:
            done: int = conn.execute(qa_sessions.delete().where(qa_sessions.c.id == sid)).rowcount
        return done > 0

    def close_all(self, name: str) -> int:
        """End every session of user ``name``; how many there were."""
        with self.db.write() as conn:
            done: int = conn.execute(
                qa_sessions.delete().where(qa_sessions.c.user_name == name)
            ).rowcount
        return done

    def purge(self) -> int:
        """Drop the expired sessions; how many there were."""
        with self.db.write() as conn:
            done: int = conn.execute(
                qa_sessions.delete().where(qa_sessions.c.expires <= now())
            ).rowcount
        return done


def _live(row: Any, t: datetime) -> Session | None:
    """The session of a row of :data:`_COLUMNS` if it is live at ``t``."""
    if as_utc(row.expires) <= t or not hmac.compare_digest(row.stamp, _stamp(row)):
        return None
    return Session(row.id, _user(row), as_utc(row.created), as_utc(row.expires))


def __dir__() -> list[str]:
    return __all__
