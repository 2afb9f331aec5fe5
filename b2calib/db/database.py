"""The database a domain's records live in: its connection, schema upgrade, transactions and
audit log.

Each domain's entry point is a :class:`Database` (``ConditionsDB``, ``QADatabase``) that says
which error it raises (:attr:`Database.error`); its writes happen in :meth:`Database.write`
transactions, which commit completely or not at all.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from b2calib.db.clock import now
from b2calib.db.engine import default_url, make_engine, upgrade, writing
from b2calib.db.tables import history
from b2calib.exceptions import B2CalibError

__all__ = ["Database"]

# a rule the database enforces itself (a trigger of the migrations) refuses with this prefix
_RULE = re.compile(r"b2calib: ([^\n\"']+)")


class Database:
    """A b2calib database: opened (and its schema upgraded) on construction.

    Parameters
    ----------
    url
        SQLAlchemy URL (``sqlite:///path.sqlite``, ``postgresql+psycopg://...``) or a path to an
        SQLite file; default :func:`~b2calib.db.default_url`.
    author
        Recorded as the author of every change made through this object (default: the
        ``B2CALIB_USER`` environment variable, else the login name).

    Raises
    ------
    B2CalibError
        As :attr:`error`, when the database cannot be opened or upgraded.
    """

    #: The error this database raises (each domain sets its own).
    error: ClassVar[type[B2CalibError]] = B2CalibError
    #: How messages name this database.
    label: ClassVar[str] = "database"

    def __init__(self, url: str | os.PathLike[str] | None = None, *, author: str | None = None):
        if url is None:
            url = default_url()
        url = str(url)
        if "://" not in url:
            url = f"sqlite:///{Path(url).expanduser().resolve()}"
        self.url = url
        self.author = author or os.environ.get("B2CALIB_USER") or getpass.getuser()
        try:
            self.engine = make_engine(url)
            try:
                upgrade(self.engine)
            except B2CalibError as err:  # the schema: who must migrate or grant
                self.engine.dispose()
                raise self.error(f"{self.safe_url}: {err}") from err
        except sa.exc.SQLAlchemyError as err:
            raise self.error(
                f"{self.safe_url}: cannot open the {self.label} ({_one_line(err)})"
            ) from err

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.safe_url!r})"

    @property
    def safe_url(self) -> str:
        """The URL with its password hidden, as messages show it."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def revision(self) -> str | None:
        """The Alembic revision the database's schema is at (the newest, once opened)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    @contextmanager
    def write(self, *, rollback: bool = False) -> Iterator[Connection]:
        """A write transaction holding the writers' lock (see :func:`~b2calib.db.writing`).

        A rule the database enforces itself (a ``b2calib: ...`` refusal of a trigger) and any
        other database error raise :attr:`error`; nothing of the transaction is kept. With
        ``rollback`` the transaction is rolled back when the block ends, even without an error:
        a dry run that sees its own writes (and the database's refusals) and keeps none.
        """
        try:
            with writing(self.engine, rollback=rollback) as conn:
                yield conn
        except sa.exc.DBAPIError as err:
            m = _RULE.search(str(err.orig))
            if m:
                raise self.error(f"refused by the database: {m.group(1).strip()}") from err
            raise self.error(
                f"{self.safe_url}: write failed, nothing was changed ({_one_line(err)})"
            ) from err

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (one consistent view of the database)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def log(
        self, conn: Connection, action: str, subject: str | None = None, /, **details: Any
    ) -> None:
        """Record a change in the audit log, inside a :meth:`write` transaction: ``action``
        by :attr:`author`, now, on ``subject`` (a global tag, or ``None``), with ``details``
        (stored as JSON)."""
        conn.execute(
            history.insert().values(
                time=now(),
                author=self.author,
                action=action,
                globaltag=subject,
                details=json.dumps(details, sort_keys=True, default=str),
            )
        )


def _one_line(err: BaseException) -> str:
    """The driver's message of a database error, on one line."""
    text = str(getattr(err, "orig", None) or err).split("(Background on this error")[0]
    return " ".join(text.split())


def __dir__() -> list[str]:
    return __all__
