"""QA periods: "from run N of experiment E on, the detector configuration changed (reason)".

Belle II's data-quality monitoring changes its references after an intervention (boards
replaced, a high-voltage trip, a firmware update): the runs after it are compared with a run
after it, and their monitoring variables judged against a band of the runs after it. A period
runs from its first run until the next period's first run; an experiment's first period starts
with the experiment (first run :data:`FIRST_PERIOD`), so an experiment without a QA period is
one period. A QA histogram has one reference per experiment, class of runs and period
(:meth:`Histograms.set_reference <b2calib.qa.store.histograms.Histograms.set_reference>`), a
monitoring variable one trend band per experiment, class and period
(:meth:`Runs.judged <b2calib.qa.store.runs.Runs.judged>`).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from b2calib.db import Database, now
from b2calib.exceptions import QAError
from b2calib.qa.store.tables import qa_periods, qa_references, qa_runs

__all__ = ["FIRST_PERIOD", "Period", "Periods", "period_of", "period_starts", "runs_label"]

#: The first run of an experiment's first period: it starts with the experiment.
FIRST_PERIOD = 0


@dataclass(frozen=True)
class Period:
    """One QA period of an experiment: runs ``first_run`` to ``last_run`` (None: open, until a
    later period is added). The experiment's first period (``first_run`` 0) has no reason,
    author or time: it is the experiment's start, not a change."""

    exp: int
    first_run: int
    last_run: int | None
    reason: str
    author: str
    time: datetime | None

    @property
    def label(self) -> str:
        """The runs of the period as messages write them: ``"runs 7-"``, ``"runs before 7"``,
        ``"runs 7-11"``, or ``"runs"`` when it is the experiment's only period."""
        nxt = None if self.last_run is None else self.last_run + 1
        return runs_label(self.first_run, nxt)


def runs_label(first_run: int, next_first_run: int | None) -> str:
    """The runs of a period starting at ``first_run``, the next one at ``next_first_run`` (None:
    no later period): ``"runs"`` (the experiment's only period), ``"runs before 7"``, ``"runs
    7-11"``, ``"runs 7-"``."""
    if first_run == FIRST_PERIOD:
        return "runs" if next_first_run is None else f"runs before {next_first_run}"
    if next_first_run is None:
        return f"runs {first_run}-"
    return f"runs {first_run}-{next_first_run - 1}"


def period_starts(conn: Connection, exp: int) -> list[int]:
    """Inside a transaction: the first run of each period of experiment ``exp``, in order,
    beginning with :data:`FIRST_PERIOD`."""
    t = qa_periods
    stored = conn.execute(sa.select(t.c.first_run).where(t.c.exp == exp).order_by(t.c.first_run))
    return [FIRST_PERIOD, *stored.scalars()]


def period_of(starts: Sequence[int], run: int) -> int:
    """The first run of the period (of ``starts``, see :func:`period_starts`) run ``run`` is
    in."""
    return starts[max(bisect.bisect_right(starts, run) - 1, 0)]


def _label(starts: Sequence[int], first_run: int) -> str:
    i = bisect.bisect_left(starts, first_run)
    return runs_label(first_run, starts[i + 1] if i + 1 < len(starts) else None)


class Periods:
    """The QA periods of a QA database (``QADatabase.periods``).

    Adding or removing a period is an administrative change like setting a reference (the
    database's writers may; its author is recorded), logged in the history; the automatic
    status's trend bands follow at once, the histograms' comparisons when the runs are
    evaluated again (``b2calib qa evaluate``) with references of the new period.

    Parameters
    ----------
    db
        The database; its author is recorded for the periods it adds.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, exp: int, first_run: int, reason: str) -> Period:
        """From run ``first_run`` of experiment ``exp`` on, the detector configuration changed
        (``reason``): a new period, until the next period's first run. A reference of the
        period it splits whose run is in the new period moves with its run (a reference is
        always one of its period's runs): the runs before then have none of that class.

        Raises
        ------
        QAError
            When ``first_run`` is below 1 (the first period starts with the experiment), the
            reason is empty, the experiment has no registered run, or a period of that
            experiment already starts at that run.
        """
        reason = reason.strip()
        where = f"QA period from run {first_run} of experiment {exp}"
        if first_run <= FIRST_PERIOD:
            raise QAError(
                f"{where}: a period starts at run {FIRST_PERIOD + 1} or later (the experiment's "
                "first period starts with the experiment)"
            )
        if not reason:
            raise QAError(f"{where}: give the reason (what changed in the detector)")
        t = qa_periods
        when = now()
        with self.db.write() as conn:
            registered = conn.execute(
                sa.select(sa.func.count()).select_from(qa_runs).where(qa_runs.c.exp == exp)
            ).scalar()
            if not registered:
                raise QAError(f"{where}: experiment {exp} has no registered run")
            old = conn.execute(
                sa.select(t.c.reason).where(t.c.exp == exp, t.c.first_run == first_run)
            ).scalar()
            if old is not None:
                raise QAError(f"{where} exists already ({old})")
            conn.execute(
                t.insert().values(
                    exp=exp, first_run=first_run, reason=reason, author=self.db.author, time=when
                )
            )
            starts = period_starts(conn, exp)
            i = starts.index(first_run)
            r = qa_references
            inside = (r.c.exp == exp) & (r.c.period == starts[i - 1]) & (r.c.run >= first_run)
            if i + 1 < len(starts):
                inside &= r.c.run < starts[i + 1]
            moved = conn.execute(r.update().where(inside).values(period=first_run)).rowcount
            self.db.log(
                conn,
                "add_qa_period",
                None,
                exp=exp,
                first_run=first_run,
                reason=reason,
                references_moved=moved,
            )
        last = starts[i + 1] - 1 if i + 1 < len(starts) else None
        return Period(exp, first_run, last, reason, self.db.author, when)

    def remove(self, exp: int, first_run: int) -> int:
        """Remove the period of experiment ``exp`` that starts at run ``first_run``: its runs
        join the period before. The references of the removed period are removed with it, in
        the same transaction (its runs are compared with the earlier period's references once
        evaluated again); returns how many.

        Raises
        ------
        QAError
            When experiment ``exp`` has no period starting at run ``first_run``.
        """
        t, r = qa_periods, qa_references
        with self.db.write() as conn:
            reason = conn.execute(
                sa.select(t.c.reason).where(t.c.exp == exp, t.c.first_run == first_run)
            ).scalar()
            if reason is None:
                starts = period_starts(conn, exp)[1:]
                known = ", ".join(map(str, starts)) or "none"
                raise QAError(
                    f"experiment {exp} has no QA period from run {first_run} (its periods start "
                    f"at runs: {known})"
                )
            refs = r.delete().where(r.c.exp == exp, r.c.period == first_run)
            dropped = conn.execute(refs).rowcount
            conn.execute(t.delete().where(t.c.exp == exp, t.c.first_run == first_run))
            self.db.log(
                conn,
                "remove_qa_period",
                None,
                exp=exp,
                first_run=first_run,
                reason=reason,
                references_removed=dropped,
            )
        return int(dropped)

    def all(self, exp: int | None = None) -> list[Period]:
        """The periods of experiment ``exp`` (every experiment with registered runs or
        periods when None), in (exp, first run) order, each experiment's first period
        included."""
        t = qa_periods
        with self.db.read() as conn:
            query = sa.select(t).order_by(t.c.exp, t.c.first_run)
            if exp is not None:
                query = query.where(t.c.exp == exp)
            rows = conn.execute(query).all()
            if exp is None:
                exps = set(conn.execute(sa.select(qa_runs.c.exp).distinct()).scalars())
            else:
                exps = {exp}
        exps |= {row.exp for row in rows}
        out: list[Period] = []
        for e in sorted(exps):
            mine = [row for row in rows if row.exp == e]
            starts = [FIRST_PERIOD, *(row.first_run for row in mine)]
            ends: list[int | None] = [s - 1 for s in starts[1:]]
            ends.append(None)
            out.append(Period(e, FIRST_PERIOD, ends[0], "", "", None))
            out += [
                Period(e, row.first_run, end, row.reason, row.author, row.time)
                for row, end in zip(mine, ends[1:], strict=True)
            ]
        return out

    def starts(self, exp: int) -> list[int]:
        """The first run of each period of experiment ``exp``, in order, beginning with
        :data:`FIRST_PERIOD`."""
        with self.db.read() as conn:
            return period_starts(conn, exp)

    def of(self, exp: int, run: int) -> Period:
        """The period run ``run`` of experiment ``exp`` is in."""
        first = period_of(self.starts(exp), run)
        return next(p for p in self.all(exp) if p.first_run == first)

    def label(self, exp: int, first_run: int) -> str:
        """The runs of the period of experiment ``exp`` starting at ``first_run`` as messages
        write them (see :attr:`Period.label`)."""
        return _label(self.starts(exp), first_run)


def __dir__() -> list[str]:
    return __all__
