"""Dashboard users and roles: who may read, certify detectors, complete runs and publish
good-run lists, with salted scrypt hashes of their passwords (never the passwords).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from b2calib.db import Database, now
from b2calib.exceptions import ConfigError, PermissionDenied, QAError
from b2calib.geometry import DETECTORS
from b2calib.qa.store.tables import ROLES, qa_sessions, qa_users

__all__ = ["User", "Users", "check_detector", "hash_password", "verify_password"]

# scrypt parameters (RFC 7914's interactive setting: ~16 MB, tens of ms per check)
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
#: The longest user name (well within the 200 characters of the name and author columns).
_NAME_LENGTH = 64


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password``, as stored: ``scrypt$n$r$p$salt$hash`` (hex)."""
    if not password:
        raise ConfigError("a password must not be empty")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash made by :func:`hash_password` (constant-time)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = bytes.fromhex(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


@functools.cache
def _dummy_hash() -> str:
    """A hash to check against when the user does not exist, so the answer takes as long."""
    return hash_password("b2calib: no such user")


def check_detector(detector: str) -> str:
    """``detector`` if it is one of :data:`b2calib.geometry.DETECTORS`, else :class:`QAError`."""
    if detector not in DETECTORS:
        raise QAError(f"unknown detector {detector!r}; known: {', '.join(DETECTORS)}")
    return detector


@dataclass(frozen=True)
class User:
    """A dashboard user and what it may do.

    ``viewer`` reads; ``expert`` flags the detectors in ``detectors`` and moves runs to sign-off;
    ``manager`` flags every detector, completes and reopens runs and makes good-run lists.
    """

    name: str
    role: str
    detectors: tuple[str, ...] = ()

    @property
    def is_manager(self) -> bool:
        """Whether the user is a data-quality manager."""
        return self.role == "manager"

    def can_flag(self, detector: str) -> bool:
        """Whether the user may set ``detector``'s flag."""
        return self.role == "manager" or (self.role == "expert" and detector in self.detectors)

    def __str__(self) -> str:
        dets = f" of {', '.join(self.detectors)}" if self.role == "expert" else ""
        return f"{self.name} ({self.role}{dets})"


class Users:
    """The users of a QA database (``QADatabase.users``).

    Parameters
    ----------
    db
        The database; its author is recorded for changes to users.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, name: str, password: str, role: str, detectors: Sequence[str] = ()) -> User:
        """Add a user with a hashed password; ``detectors`` are an expert's detectors."""
        user = _new_user(name, role, detectors)
        with self.db.write() as conn:
            if conn.execute(sa.select(qa_users.c.name).where(qa_users.c.name == name)).first():
                raise QAError(f"user {name!r} exists already")
            conn.execute(
                qa_users.insert().values(
                    name=name,
                    role=role,
                    detectors=",".join(user.detectors),
                    password=hash_password(password),
                    created=now(),
                    author=self.db.author,
                )
            )
            self.db.log(conn, "add_user", None, user=name, role=role, detectors=user.detectors)
        return user

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password; their login sessions end."""
        if not _known_name(name):
            raise QAError(f"no user {_shown(name)}")
        with self.db.write() as conn:
            done = conn.execute(
                qa_users.update()
                .where(qa_users.c.name == name)
                .values(password=hash_password(password))
            ).rowcount
            if not done:
                raise QAError(f"no user {name!r}")
            conn.execute(qa_sessions.delete().where(qa_sessions.c.user_name == name))
            self.db.log(conn, "set_password", None, user=name)

    def remove(self, name: str) -> None:
        """Remove a user (what they certified stays, under their name); their login sessions
        end."""
        if not _known_name(name):
            raise QAError(f"no user {_shown(name)}")
        with self.db.write() as conn:
            conn.execute(qa_sessions.delete().where(qa_sessions.c.user_name == name))
            if not conn.execute(qa_users.delete().where(qa_users.c.name == name)).rowcount:
                raise QAError(f"no user {name!r}")
            self.db.log(conn, "remove_user", None, user=name)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else ``None`` (same work for unknown names)."""
        row = None
        if _known_name(name):
            with self.db.read() as conn:
                row = conn.execute(sa.select(qa_users).where(qa_users.c.name == name)).first()
        if row is None:
            verify_password(password, _dummy_hash())
            return None
        return _user(row) if verify_password(password, row.password) else None

    def get(self, name: str) -> User:
        """The user called ``name``."""
        if not _known_name(name):
            raise QAError(f"no user {_shown(name)}")
        with self.db.read() as conn:
            row = conn.execute(sa.select(qa_users).where(qa_users.c.name == name)).first()
        if row is None:
            raise QAError(f"no user {name!r}")
        return _user(row)

    def all(self) -> list[User]:
        """Every user, by name."""
        with self.db.read() as conn:
            rows = conn.execute(sa.select(qa_users).order_by(qa_users.c.name)).all()
        return [_user(r) for r in rows]

    def require(self, conn: Connection, user: User) -> None:
        """Inside a transaction of this database: refuse (:class:`PermissionDenied`) unless
        ``user`` is a current user with the role and detectors claimed, so that a stale
        session whose user was removed or demoted writes nothing."""
        row = conn.execute(sa.select(qa_users).where(qa_users.c.name == user.name)).first()
        if row is None or _user(row) != user:
            raise PermissionDenied(f"{user} is not a current user with these rights")


def _name_fault(name: str) -> str | None:
    """Why ``name`` cannot be a user name, or ``None``: at most 64 characters, no spaces around
    it, no ':', nothing but printable characters and plain spaces (no control, format or
    line-separator character: a name is shown in pages, logs and one-line messages)."""
    if not name.strip():
        return "empty"
    if name != name.strip():
        return "no spaces around it"
    if len(name) > _NAME_LENGTH:
        return f"{len(name)} characters; at most {_NAME_LENGTH}"
    if ":" in name:
        return "no ':'"
    for c in name:
        if c != " " and (c.isspace() or unicodedata.category(c)[0] in "CZ"):
            return f"no control or separator character such as U+{ord(c):04X}"
    return None


def _shown(name: str) -> str:
    return repr(name) if len(name) <= 40 else f"{name[:40]!r}... ({len(name)} characters)"


def _known_name(name: str) -> bool:
    """Whether ``name`` can be a user's name (else no query is made for it: PostgreSQL refuses
    a NUL character in a parameter)."""
    return isinstance(name, str) and _name_fault(name) is None


def _new_user(name: str, role: str, detectors: Sequence[str]) -> User:
    fault = _name_fault(name)
    if fault is not None:
        raise QAError(f"bad user name {_shown(name)} ({fault})")
    if role not in ROLES:
        raise QAError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    dets = tuple(check_detector(d) for d in detectors)
    if role == "expert" and not dets:
        raise QAError(f"expert {name!r} needs the detectors they certify")
    if role != "expert" and dets:
        raise QAError(f"only experts have detectors ({name!r} is a {role})")
    return User(name, role, dets)


def _user(row: Any) -> User:
    return User(row.name, row.role, tuple(d for d in row.detectors.split(",") if d))


def __dir__() -> list[str]:
    return __all__
