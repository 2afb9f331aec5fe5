"""Certification: a flag per (run, detector) and the run's sign-off workflow
(OPEN -> SIGNOFF -> COMPLETED).

Both are append-only: a flag or run-state change is a new row, the database refuses to update
or delete one (triggers), and the current value is the newest row. Writes take the
authenticated :class:`~b2calib.qa.store.users.User` and check what that user may do; the
user's name is recorded as the author.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from b2calib.db import Database, as_utc, now
from b2calib.dq import DQ_FLAGS
from b2calib.exceptions import PermissionDenied, QAError
from b2calib.qa.store.runs import Runs
from b2calib.qa.store.tables import RUN_STATES, qa_flags, qa_run_states, run_range
from b2calib.qa.store.users import User, Users, check_detector

__all__ = ["RUN_MOVES", "Certification", "FlagEntry", "RunState"]

#: Allowed run-state moves and the roles allowed to make them.
RUN_MOVES: dict[tuple[str, str], tuple[str, ...]] = {
    ("OPEN", "SIGNOFF"): ("expert", "manager"),
    ("SIGNOFF", "OPEN"): ("expert", "manager"),
    ("SIGNOFF", "COMPLETED"): ("manager",),
    ("COMPLETED", "OPEN"): ("manager",),
}


@dataclass(frozen=True)
class FlagEntry:
    """One certification flag as set (a row of the append-only history)."""

    exp: int
    run: int
    detector: str
    flag: str
    comment: str
    author: str
    time: datetime


@dataclass(frozen=True)
class RunState:
    """A run's sign-off state as set (a row of the append-only history)."""

    exp: int
    run: int
    state: str
    comment: str
    author: str
    time: datetime | None


class Certification:
    """The certification flags and run sign-off of a QA database
    (``QADatabase.certification``).

    Parameters
    ----------
    db
        The database.
    users
        The users' part (each write checks its user is current).
    runs
        The runs' part (registered runs, their detectors and current flags).
    """

    def __init__(self, db: Database, users: Users, runs: Runs) -> None:
        self.db = db
        self.users = users
        self.runs = runs

    # -- flags -------------------------------------------------------------------------------

    def set_flag(
        self, exp: int, run: int, detector: str, flag: str, *, user: User, comment: str
    ) -> FlagEntry:
        """Certify one detector of a run.

        Raises
        ------
        PermissionDenied
            The user is a viewer, an expert of other detectors, or the run is COMPLETED.
        """
        return self.set_flags([(exp, run, detector, flag)], user=user, comment=comment)[0]

    def set_flags(
        self, changes: Iterable[tuple[int, int, str, str]], *, user: User, comment: str
    ) -> list[FlagEntry]:
        """Certify several (exp, run, detector, flag) at once, with one comment: all are
        recorded or, if any is refused, none.

        Every flag but GOOD needs a comment saying why; a detector the run did not include can
        only be EXCLUDED.
        """
        wanted = list(changes)
        for exp, run, detector, flag in wanted:
            check_detector(detector)
            if flag not in DQ_FLAGS:
                raise QAError(f"unknown flag {flag!r}; known: {', '.join(DQ_FLAGS)}")
            if flag != "GOOD" and not comment.strip():
                raise QAError(
                    f"say why {detector} of run ({exp}, {run}) is {flag}: a comment is required "
                    "for every flag but GOOD"
                )
            if not user.can_flag(detector):
                raise PermissionDenied(
                    f"{user} may not set the {detector} flag of run ({exp}, {run})"
                )
        when = now()
        entries = [
            FlagEntry(exp, run, det, flag, comment.strip(), user.name, when)
            for exp, run, det, flag in wanted
        ]
        with self.db.write() as conn:
            self.users.require(conn, user)
            included: dict[tuple[int, int], tuple[str, ...]] = {}  # each run checked once
            for e in entries:
                key = (e.exp, e.run)
                if key not in included:
                    detectors = self.runs.require(conn, e.exp, e.run)
                    if self._state(conn, e.exp, e.run).state == "COMPLETED":
                        raise PermissionDenied(
                            f"run ({e.exp}, {e.run}) is COMPLETED: a manager must reopen it "
                            f"before its {e.detector} flag changes"
                        )
                    included[key] = detectors
                if e.detector not in included[key] and e.flag != "EXCLUDED":
                    raise QAError(
                        f"{e.detector} did not take data in run ({e.exp}, {e.run}): it can only "
                        "be EXCLUDED"
                    )
            if entries:
                conn.execute(
                    qa_flags.insert(),
                    [
                        dict(
                            exp=e.exp,
                            run=e.run,
                            detector=e.detector,
                            flag=e.flag,
                            comment=e.comment,
                            author=e.author,
                            time=e.time,
                        )
                        for e in entries
                    ],
                )
        return entries

    def flags(self, exp: int, run: int) -> dict[str, FlagEntry]:
        """Current flag of each certified detector of a run (absent: NOTSET)."""
        return {e.detector: e for e in self.flag_history(exp, run)}  # the newest wins

    def flag_history(self, exp: int, run: int, detector: str | None = None) -> list[FlagEntry]:
        """Every flag set for a run (or one detector of it), oldest first."""
        t = qa_flags
        where = [t.c.exp == exp, t.c.run == run]
        if detector is not None:
            where.append(t.c.detector == detector)
        with self.db.read() as conn:
            rows = conn.execute(sa.select(t).where(*where).order_by(t.c.id)).all()
        return [_flag(r) for r in rows]

    def flag_grid(
        self, *, exp: int | None = None, first: int | None = None, last: int | None = None
    ) -> dict[tuple[int, int], dict[str, str]]:
        """Current flags of every run selected: {(exp, run): {detector: flag}}, each included
        detector present (NOTSET when never certified)."""
        runs = self.runs.select(exp=exp, first=first, last=last)
        return {r.key: {d: r.flag(d) for d in r.detectors} for r in runs}

    # -- run sign-off ------------------------------------------------------------------------

    def state(self, exp: int, run: int) -> RunState:
        """A run's current sign-off state (OPEN when never changed)."""
        with self.db.read() as conn:
            self.runs.require(conn, exp, run)
            return self._state(conn, exp, run)

    def states(
        self, *, exp: int | None = None, first: int | None = None, last: int | None = None
    ) -> dict[tuple[int, int], str]:
        """Current sign-off state of every run selected."""
        t = qa_run_states
        newest = (
            sa.select(sa.func.max(t.c.id))
            .where(*run_range(t, exp, first, last))
            .group_by(t.c.exp, t.c.run)
        )
        with self.db.read() as conn:
            changed = {
                (r.exp, r.run): r.state
                for r in conn.execute(sa.select(t).where(t.c.id.in_(newest)))
            }
        return {
            r.key: changed.get(r.key, "OPEN")
            for r in self.runs.select(exp=exp, first=first, last=last)
        }

    def _state(self, conn: Connection, exp: int, run: int) -> RunState:
        t = qa_run_states
        row = conn.execute(
            sa.select(t).where(t.c.exp == exp, t.c.run == run).order_by(t.c.id.desc()).limit(1)
        ).first()
        if row is None:
            return RunState(exp, run, "OPEN", "", "", None)
        return _state(row)

    def set_state(
        self, exp: int, run: int, state: str, *, user: User, comment: str = ""
    ) -> RunState:
        """Move a run along OPEN -> SIGNOFF -> COMPLETED (a manager completes and reopens)."""
        if state not in RUN_STATES:
            raise QAError(f"unknown run state {state!r}; known: {', '.join(RUN_STATES)}")
        with self.db.write() as conn:
            self.runs.require(conn, exp, run)
            self.users.require(conn, user)
            current = self._state(conn, exp, run).state
            allowed = RUN_MOVES.get((current, state))
            if allowed is None:
                raise QAError(f"run ({exp}, {run}) cannot move from {current} to {state}")
            if user.role not in allowed:
                raise PermissionDenied(
                    f"{user} may not move run ({exp}, {run}) from {current} to {state} "
                    f"(allowed: {', '.join(allowed)})"
                )
            entry = RunState(exp, run, state, comment.strip(), user.name, now())
            conn.execute(
                qa_run_states.insert().values(
                    exp=exp,
                    run=run,
                    state=state,
                    comment=entry.comment,
                    author=user.name,
                    time=entry.time,
                )
            )
        return entry

    def state_history(self, exp: int, run: int) -> list[RunState]:
        """Every sign-off state change of a run, oldest first."""
        t = qa_run_states
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(t).where(t.c.exp == exp, t.c.run == run).order_by(t.c.id)
            ).all()
        return [_state(r) for r in rows]


def _flag(row: Any) -> FlagEntry:
    return FlagEntry(
        row.exp, row.run, row.detector, row.flag, row.comment, row.author, as_utc(row.time)
    )


def _state(row: Any) -> RunState:
    return RunState(row.exp, row.run, row.state, row.comment, row.author, as_utc(row.time))


def __dir__() -> list[str]:
    return __all__
