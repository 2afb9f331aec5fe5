"""Certification: a flag per (run, detector) and the run's sign-off workflow
(OPEN -> SIGNOFF -> COMPLETED).

Both are append-only: a flag or run-state change is a new row, the database refuses to update
or delete one (triggers), and the current value is the newest row. Writes take the
authenticated :class:`~b2calib.qa.store.users.User` and check what that user may do; the
user's name is recorded as the author.

Three changes need an explicit confirmation (:class:`Confirmation`): overriding a flag another
person set (a current flag other than NOTSET, by another author, changed to another flag),
GOOD over an automatic ERROR (:class:`~b2calib.qa.store.status.AutoStatus`), and completing a
run with NOTSET detectors (of those it included). A write that needs any raises
:class:`~b2calib.exceptions.ConfirmationNeeded` listing every one and writes nothing; with
``force=True`` it is written and each row records what was confirmed (``confirmed``, ``""``
when nothing). :meth:`Certification.confirmations` and
:meth:`Certification.state_confirmations` say beforehand what a write would need confirmed
(a page's dialog).
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
from b2calib.exceptions import ConfirmationNeeded, PermissionDenied, QAError, RunNotFoundError
from b2calib.geometry import DETECTORS
from b2calib.qa.store.runs import Runs
from b2calib.qa.store.status import AutoStatus
from b2calib.qa.store.tables import RUN_STATES, qa_flags, qa_run_states, qa_runs, run_range
from b2calib.qa.store.users import User, Users, check_detector
from b2calib.runs import Run

__all__ = ["RUN_MOVES", "Certification", "Confirmation", "FlagEntry", "RunState"]

#: Allowed run-state moves and the roles allowed to make them.
RUN_MOVES: dict[tuple[str, str], tuple[str, ...]] = {
    ("OPEN", "SIGNOFF"): ("expert", "manager"),
    ("SIGNOFF", "OPEN"): ("expert", "manager"),
    ("SIGNOFF", "COMPLETED"): ("manager",),
    ("COMPLETED", "OPEN"): ("manager",),
}


#: The :attr:`Confirmation.reason` of GOOD set over an automatic ERROR (as kept in the
#: history's ``confirmed``; a good-run list warns of the runs it selected with one).
GOOD_OVER_ERROR = "GOOD over automatic status ERROR"


@dataclass(frozen=True)
class Confirmation:
    """A change that needs an explicit confirmation, and why.

    ``detector`` is ``None`` for a run-state move. ``reason`` is one of
    ``"overrides BAD set by alice"``, ``"GOOD over automatic status ERROR"``,
    ``"completes with PXD, SVD NOTSET"``; ``str()`` gives ``"run (14, 15) CDC: <reason>"``.
    """

    exp: int
    run: int
    detector: str | None
    reason: str

    def __str__(self) -> str:
        where = f"run ({self.exp}, {self.run})"
        return (
            f"{where} {self.detector}: {self.reason}"
            if self.detector
            else f"{where}: {self.reason}"
        )


@dataclass(frozen=True)
class FlagEntry:
    """One certification flag as set (a row of the append-only history); ``confirmed`` is
    what its author confirmed (the reasons of its :class:`Confirmation`, ``"; "``-joined),
    ``""`` when nothing needed confirming."""

    exp: int
    run: int
    detector: str
    flag: str
    comment: str
    author: str
    time: datetime
    confirmed: str = ""


@dataclass(frozen=True)
class RunState:
    """A run's sign-off state as set (a row of the append-only history); ``confirmed`` as for
    :class:`FlagEntry`."""

    exp: int
    run: int
    state: str
    comment: str
    author: str
    time: datetime | None
    confirmed: str = ""


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
    status
        The automatic status (GOOD over an automatic ERROR needs a confirmation).
    """

    def __init__(self, db: Database, users: Users, runs: Runs, status: AutoStatus) -> None:
        self.db = db
        self.users = users
        self.runs = runs
        self.status = status

    # -- flags -------------------------------------------------------------------------------

    def set_flag(
        self,
        exp: int,
        run: int,
        detector: str,
        flag: str,
        *,
        user: User,
        comment: str,
        force: bool = False,
    ) -> FlagEntry:
        """Certify one detector of a run (see :meth:`set_flags`).

        Raises
        ------
        PermissionDenied
            The user is a viewer, an expert of other detectors, or the run is COMPLETED.
        ConfirmationNeeded
            Without ``force``, when the change needs a confirmation (nothing written).
        """
        return self.set_flags(
            [(exp, run, detector, flag)], user=user, comment=comment, force=force
        )[0]

    def set_flags(
        self,
        changes: Iterable[tuple[int, int, str, str]],
        *,
        user: User,
        comment: str,
        force: bool = False,
    ) -> list[FlagEntry]:
        """Certify several (exp, run, detector, flag) at once, with one comment: all are
        recorded or, if any is refused, none.

        Every flag but GOOD needs a comment saying why; a detector the run did not include can
        only be EXCLUDED. Overriding another person's flag and GOOD over an automatic ERROR
        need ``force=True`` and a comment saying why; each entry then records what it confirmed
        in :attr:`FlagEntry.confirmed`.

        Raises
        ------
        QAError
            An unknown detector or flag, a missing comment, a detector the run did not include.
        PermissionDenied
            The user may not flag a detector, or a run is COMPLETED.
        RunNotFoundError
            A run is not registered.
        ConfirmationNeeded
            Without ``force``, listing every change that needs a confirmation; nothing written.
        """
        wanted = self._check_changes(changes, user=user, comment=comment)
        auto = self._auto_status(wanted)
        when = now()
        with self.db.write() as conn:
            needed = self._flag_confirmations(conn, wanted, user, auto)
            if needed and not force:
                raise ConfirmationNeeded(needed)
            if needed and not comment.strip():
                raise QAError(_why(needed))
            reasons: dict[tuple[int, int, str], list[str]] = {}
            for c in needed:
                reasons.setdefault((c.exp, c.run, str(c.detector)), []).append(c.reason)
            entries = [
                FlagEntry(
                    exp,
                    run,
                    det,
                    flag,
                    comment.strip(),
                    user.name,
                    when,
                    "; ".join(reasons.get((exp, run, det), [])),
                )
                for exp, run, det, flag in wanted
            ]
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
                            confirmed=e.confirmed,
                        )
                        for e in entries
                    ],
                )
        return entries

    def confirmations(
        self, changes: Iterable[tuple[int, int, str, str]], *, user: User
    ) -> list[Confirmation]:
        """What :meth:`set_flags` of these (exp, run, detector, flag) changes by ``user`` would
        need confirmed, in the order of the changes (empty: nothing); writes nothing.

        A dry run: it refuses what the write would refuse (same errors; the comment is not
        checked), so a page asks for confirmation only of a write that can happen.
        """
        wanted = self._check_changes(changes, user=user, comment=None)
        auto = self._auto_status(wanted)
        with self.db.read() as conn:
            return self._flag_confirmations(conn, wanted, user, auto)

    def _check_changes(
        self, changes: Iterable[tuple[int, int, str, str]], *, user: User, comment: str | None
    ) -> list[tuple[int, int, str, str]]:
        """The changes as a list, each checked alone (detector, flag, comment, permission)."""
        wanted = list(changes)
        for exp, run, detector, flag in wanted:
            check_detector(detector)
            if flag not in DQ_FLAGS:
                raise QAError(f"unknown flag {flag!r}; known: {', '.join(DQ_FLAGS)}")
            if comment is not None and flag != "GOOD" and not comment.strip():
                raise QAError(
                    f"say why {detector} of run ({exp}, {run}) is {flag}: a comment is required "
                    "for every flag but GOOD"
                )
            if not user.can_flag(detector):
                raise PermissionDenied(
                    f"{user} may not set the {detector} flag of run ({exp}, {run})"
                )
        return wanted

    def _auto_status(
        self, wanted: list[tuple[int, int, str, str]]
    ) -> dict[tuple[int, int], dict[str, str]]:
        """The automatic status of the runs whose changes set GOOD (read before the write:
        it is evidence, not certification)."""
        good: dict[int, list[int]] = {}
        for exp, run, _, flag in wanted:
            if flag == "GOOD":
                good.setdefault(exp, []).append(run)
        out: dict[tuple[int, int], dict[str, str]] = {}
        for exp, runs in good.items():
            out.update(self.status.grid(exp=exp, first=min(runs), last=max(runs)))
        return out

    def _flag_confirmations(
        self,
        conn: Connection,
        wanted: list[tuple[int, int, str, str]],
        user: User,
        auto: dict[tuple[int, int], dict[str, str]],
    ) -> list[Confirmation]:
        """Inside a transaction: check the runs of the changes (registered, not COMPLETED,
        detector included) and the user, and return the confirmations they need."""
        self.users.require(conn, user)
        detectors, states = self._runs_of(conn, [(exp, run) for exp, run, _, _ in wanted])
        checked: set[tuple[int, int]] = set()  # each run checked once
        for exp, run, det, flag in wanted:
            key = (exp, run)
            if key not in checked:
                if key not in detectors:
                    raise RunNotFoundError(exp, run)
                if states.get(key) == "COMPLETED":
                    raise PermissionDenied(
                        f"run ({exp}, {run}) is COMPLETED: a manager must reopen it "
                        f"before its {det} flag changes"
                    )
                checked.add(key)
            if det not in detectors[key] and flag != "EXCLUDED":
                raise QAError(
                    f"{det} did not take data in run ({exp}, {run}): it can only be EXCLUDED"
                )
        current = self._current(conn, checked)
        needed = []
        for exp, run, det, flag in wanted:
            now_set = current.get((exp, run, det))
            if (
                now_set is not None
                and now_set.flag not in ("NOTSET", flag)
                and now_set.author != user.name
            ):
                needed.append(
                    Confirmation(exp, run, det, f"overrides {now_set.flag} set by {now_set.author}")
                )
            if flag == "GOOD" and auto.get((exp, run), {}).get(det) == "ERROR":
                needed.append(Confirmation(exp, run, det, GOOD_OVER_ERROR))
        return needed

    def _runs_of(
        self, conn: Connection, keys: Iterable[tuple[int, int]]
    ) -> tuple[dict[tuple[int, int], tuple[str, ...]], dict[tuple[int, int], str]]:
        """Inside a transaction: the detectors of each registered run of ``keys`` and the
        state of those whose sign-off state ever changed (one query of each per experiment,
        not per run: a bulk sign-off of 3000 runs)."""
        by_exp: dict[int, set[int]] = {}
        for exp, run in keys:
            by_exp.setdefault(exp, set()).add(run)
        r, t = qa_runs, qa_run_states
        detectors: dict[tuple[int, int], tuple[str, ...]] = {}
        states: dict[tuple[int, int], str] = {}
        for exp, numbers in by_exp.items():
            lo, hi = min(numbers), max(numbers)
            for row in conn.execute(
                sa.select(r.c.run, r.c.detectors).where(*run_range(r, exp, lo, hi))
            ):
                if row.run in numbers:
                    detectors[(exp, row.run)] = tuple(d for d in row.detectors.split(",") if d)
            newest = (
                sa.select(sa.func.max(t.c.id))
                .where(*run_range(t, exp, lo, hi))
                .group_by(t.c.exp, t.c.run)
            )
            for row in conn.execute(sa.select(t.c.run, t.c.state).where(t.c.id.in_(newest))):
                if row.run in numbers:
                    states[(exp, row.run)] = row.state
        return detectors, states

    def _current(
        self, conn: Connection, runs: Iterable[tuple[int, int]]
    ) -> dict[tuple[int, int, str], FlagEntry]:
        """Inside a transaction: the current flag of each certified (run, detector) of
        ``runs``."""
        by_exp: dict[int, list[int]] = {}
        for exp, run in runs:
            by_exp.setdefault(exp, []).append(run)
        t = qa_flags
        out: dict[tuple[int, int, str], FlagEntry] = {}
        for exp, numbers in by_exp.items():
            wanted = set(numbers)
            rows = conn.execute(
                sa.select(t).where(*run_range(t, exp, min(numbers), max(numbers))).order_by(t.c.id)
            )
            for r in rows:
                if r.run in wanted:
                    out[(r.exp, r.run, r.detector)] = _flag(r)  # the newest wins
        return out

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
        self,
        *,
        exp: int | None = None,
        first: int | None = None,
        last: int | None = None,
        runs: Iterable[Run] | None = None,
    ) -> dict[tuple[int, int], str]:
        """Current sign-off state of every run selected (of ``runs`` when given: the runs
        the caller has already read, not read again)."""
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
        if runs is None:
            runs = self.runs.select(exp=exp, first=first, last=last)
        return {r.key: changed.get(r.key, "OPEN") for r in runs}

    def _state(self, conn: Connection, exp: int, run: int) -> RunState:
        t = qa_run_states
        row = conn.execute(
            sa.select(t).where(t.c.exp == exp, t.c.run == run).order_by(t.c.id.desc()).limit(1)
        ).first()
        if row is None:
            return RunState(exp, run, "OPEN", "", "", None)
        return _state(row)

    def set_state(
        self,
        exp: int,
        run: int,
        state: str,
        *,
        user: User,
        comment: str = "",
        force: bool = False,
    ) -> RunState:
        """Move a run along OPEN -> SIGNOFF -> COMPLETED (a manager completes and reopens).

        Completing a run with NOTSET detectors (of those it included) needs ``force=True`` and a
        comment saying why, recorded in :attr:`RunState.confirmed`.

        Raises
        ------
        QAError
            An unknown state, or a move not allowed from the run's current state.
        PermissionDenied
            The user's role may not make this move.
        ConfirmationNeeded
            Without ``force``, when the move needs a confirmation (nothing written).
        """
        with self.db.write() as conn:
            needed = self._state_confirmations(conn, exp, run, state, user)
            if needed and not force:
                raise ConfirmationNeeded(needed)
            if needed and not comment.strip():
                raise QAError(_why(needed))
            entry = RunState(
                exp,
                run,
                state,
                comment.strip(),
                user.name,
                now(),
                "; ".join(c.reason for c in needed),
            )
            conn.execute(
                qa_run_states.insert().values(
                    exp=exp,
                    run=run,
                    state=state,
                    comment=entry.comment,
                    author=user.name,
                    time=entry.time,
                    confirmed=entry.confirmed,
                )
            )
        return entry

    def state_confirmations(
        self, exp: int, run: int, state: str, *, user: User
    ) -> list[Confirmation]:
        """What :meth:`set_state` of this move by ``user`` would need confirmed (empty:
        nothing); writes nothing, refuses what the move would refuse."""
        with self.db.read() as conn:
            return self._state_confirmations(conn, exp, run, state, user)

    def _state_confirmations(
        self, conn: Connection, exp: int, run: int, state: str, user: User
    ) -> list[Confirmation]:
        if state not in RUN_STATES:
            raise QAError(f"unknown run state {state!r}; known: {', '.join(RUN_STATES)}")
        detectors = self.runs.require(conn, exp, run)
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
        if state != "COMPLETED":
            return []
        flags = self._current(conn, [(exp, run)])
        notset = [
            d
            for d in sorted(detectors, key=_detector_order)
            if (f := flags.get((exp, run, d))) is None or f.flag == "NOTSET"
        ]
        if not notset:
            return []
        return [Confirmation(exp, run, None, f"completes with {', '.join(notset)} NOTSET")]

    def state_history(self, exp: int, run: int) -> list[RunState]:
        """Every sign-off state change of a run, oldest first."""
        t = qa_run_states
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(t).where(t.c.exp == exp, t.c.run == run).order_by(t.c.id)
            ).all()
        return [_state(r) for r in rows]


def good_over_error(
    conn: Connection, exp: int | None, first: int | None, last: int | None
) -> dict[tuple[int, int], dict[str, str]]:
    """Inside a transaction: the current flags of the runs selected that are GOOD set over an
    automatic ERROR (confirmed), with the history's reason: ``{(exp, run): {detector: "GOOD
    over automatic status ERROR, confirmed by carl at 2026-12-04 19:10 UTC: 'a calibration
    artefact'"}}`` (what the history's ``confirmed`` says, who, when and their comment)."""
    t = qa_flags
    newest = (
        sa.select(sa.func.max(t.c.id))
        .where(*run_range(t, exp, first, last))
        .group_by(t.c.exp, t.c.run, t.c.detector)
    )
    rows = conn.execute(
        sa.select(t).where(
            t.c.id.in_(newest), t.c.flag == "GOOD", t.c.confirmed.contains(GOOD_OVER_ERROR)
        )
    ).all()
    out: dict[tuple[int, int], dict[str, str]] = {}
    for row in rows:
        e = _flag(row)
        out.setdefault((e.exp, e.run), {})[e.detector] = (
            f"{e.confirmed}, confirmed by {e.author} at {e.time:%Y-%m-%d %H:%M} UTC: {e.comment!r}"
        )
    return out


def _detector_order(detector: str) -> int:
    return DETECTORS.index(detector) if detector in DETECTORS else len(DETECTORS)


def _why(needed: list[Confirmation]) -> str:
    """The refusal of a confirmed write without a comment: what it overrides needs a reason."""
    first = needed[0]
    where = f"run ({first.exp}, {first.run})" + (f" {first.detector}" if first.detector else "")
    more = f" and {len(needed) - 1} more" if len(needed) > 1 else ""
    return (
        f"say why: {where} {first.reason}{more}; a write that needs a confirmation needs a "
        "comment, kept in the history with what it confirmed"
    )


def _flag(row: Any) -> FlagEntry:
    return FlagEntry(
        row.exp,
        row.run,
        row.detector,
        row.flag,
        row.comment,
        row.author,
        as_utc(row.time),
        row.confirmed,
    )


def _state(row: Any) -> RunState:
    return RunState(
        row.exp, row.run, row.state, row.comment, row.author, as_utc(row.time), row.confirmed
    )


def __dir__() -> list[str]:
    return __all__
