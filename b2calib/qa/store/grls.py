"""Good-run lists: an expression over the runs' current flags and properties, evaluated and
stored as the next version of a named list (managers only); every version is kept, with the
warnings it was made with (runs selected with uncertified detectors, or with detectors
certified GOOD over an automatic ERROR: a confirmed override, named with the reason the flag
history keeps), and any two versions
compare (:meth:`GoodRunLists.diff`). A list sums the recorded luminosity (run registry).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from b2calib.db import Database, now
from b2calib.exceptions import PermissionDenied, QAError
from b2calib.qa.store.certification import good_over_error
from b2calib.qa.store.runs import Runs
from b2calib.qa.store.tables import qa_grls
from b2calib.qa.store.users import User, Users

if TYPE_CHECKING:
    from b2calib.qa.grl import GoodRunList, GRLDiff

__all__ = ["GoodRunLists"]


class GoodRunLists:
    """The versioned good-run lists of a QA database (``QADatabase.grls``).

    Parameters
    ----------
    db
        The database.
    users
        The users' part (making a list checks its manager is current).
    runs
        The runs' part (the runs and their current flags a list is made from).
    """

    def __init__(self, db: Database, users: Users, runs: Runs) -> None:
        self.db = db
        self.users = users
        self.runs = runs

    def make(
        self,
        name: str,
        expression: str,
        *,
        user: User,
        description: str = "",
        exp: int | None = None,
        first: int | None = None,
        last: int | None = None,
    ) -> GoodRunList:
        """Evaluate ``expression`` over the runs selected with their current flags and store
        the result as the next version of good-run list ``name`` (managers only).

        Its ``warnings`` name each run selected with detectors NOTSET, or certified GOOD over
        an automatic ERROR (the detector and the reason from the flag history), among the
        detectors the expression vouches for (:func:`b2calib.qa.grl.evaluate`)."""
        from b2calib.qa import grl as g

        if not user.is_manager:
            raise PermissionDenied(f"{user} may not publish good-run lists (managers only)")
        if not name or any(c.isspace() for c in name):
            raise QAError(f"bad good-run-list name {name!r}")
        expr = g.parse(expression)
        with self.db.write() as conn:
            self.users.require(conn, user)
            runs = self.runs.fetch(conn, exp=exp, first=first, last=last)
            t = qa_grls
            version = (
                conn.execute(sa.select(sa.func.max(t.c.version)).where(t.c.name == name)).scalar()
                or 0
            ) + 1
            made = g.evaluate(expr, runs, overrides=good_over_error(conn, exp, first, last))
            result = g.GoodRunList(
                name=name,
                expression=str(expr),
                runs=made.runs,
                version=version,
                created=now(),
                author=user.name,
                description=description,
                warnings=made.warnings,
            )
            conn.execute(
                t.insert().values(
                    name=name,
                    version=version,
                    expression=result.expression,
                    description=description,
                    content=json.dumps(result.to_json(), sort_keys=True),
                    author=user.name,
                    created=result.created,
                )
            )
        return result

    def get(self, name: str, version: int | None = None) -> GoodRunList:
        """Good-run list ``name`` (its newest version by default)."""
        from b2calib.qa.grl import GoodRunList

        t = qa_grls
        query = sa.select(t).where(t.c.name == name)
        query = (
            query.where(t.c.version == version)
            if version is not None
            else query.order_by(t.c.version.desc()).limit(1)
        )
        with self.db.read() as conn:
            row = conn.execute(query).first()
            known = [] if row is not None else _versions(conn, name)
        if row is None:
            if version is None or not known:
                raise QAError(f"no good-run list {name!r}")
            raise QAError(
                f"no version {version} of good-run list {name!r} (its versions: "
                f"{', '.join(map(str, known))})"
            )
        return GoodRunList.from_json(json.loads(row.content))

    def latest(self) -> list[GoodRunList]:
        """The newest version of every good-run list, by name."""
        from b2calib.qa.grl import GoodRunList

        t = qa_grls
        newest = sa.select(sa.func.max(t.c.id)).group_by(t.c.name)
        with self.db.read() as conn:
            rows = conn.execute(sa.select(t).where(t.c.id.in_(newest)).order_by(t.c.name)).all()
        return [GoodRunList.from_json(json.loads(r.content)) for r in rows]

    def versions(self, name: str) -> list[GoodRunList]:
        """Every version of good-run list ``name``, oldest first."""
        from b2calib.qa.grl import GoodRunList

        t = qa_grls
        with self.db.read() as conn:
            rows = conn.execute(sa.select(t).where(t.c.name == name).order_by(t.c.version)).all()
        if not rows:
            raise QAError(f"no good-run list {name!r}")
        return [GoodRunList.from_json(json.loads(r.content)) for r in rows]

    def diff(self, name: str, old: int, new: int) -> GRLDiff:
        """What changed from version ``old`` to version ``new`` of good-run list ``name``:
        runs added, removed, and the recorded luminosity's change (:class:`GRLDiff`).

        Raises
        ------
        QAError
            No such list, or no such version of it.
        """
        from b2calib.qa.grl import diff

        return diff(self.get(name, old), self.get(name, new))


def _versions(conn: Connection, name: str) -> list[int]:
    t = qa_grls
    query = sa.select(t.c.version).where(t.c.name == name).order_by(t.c.version)
    return list(conn.execute(query).scalars())


def __dir__() -> list[str]:
    return __all__
