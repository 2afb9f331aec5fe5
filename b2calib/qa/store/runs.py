"""The run registry of the QA database and the runs' monitoring variables with their trends.

A run carries its current certification flags (:attr:`b2calib.runs.Run.dq`: the newest flag
of each detector), read here from the certification records, so that the calibrations' input
filters and the good-run lists select by what was certified.

A monitoring variable is judged against its trend: the runs of the same experiment, class (run
type and beam energy) and QA period (:mod:`b2calib.qa.store.periods`), with a band from their
median and scatter (:class:`Trend`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from b2calib.db import Database
from b2calib.db.tables import history
from b2calib.exceptions import QAError, RunNotFoundError
from b2calib.geometry import DETECTORS
from b2calib.qa.compare import QAStatus
from b2calib.qa.store.periods import period_starts
from b2calib.qa.store.tables import qa_flags, qa_runs, qa_variables, run_range
from b2calib.runs import Run, RunRegistry

if TYPE_CHECKING:
    from b2calib.qa.monitoring import MonitoringValue

__all__ = [
    "MIN_TREND_RUNS",
    "NO_STATUS",
    "VARIABLE_ERROR_SIGMA",
    "VARIABLE_WARNING_SIGMA",
    "JudgedRun",
    "JudgedTable",
    "Runs",
    "Trend",
    "VariableStatuses",
    "class_label",
    "data_stamp",
]

#: Status of a detector with neither comparisons nor variables.
NO_STATUS = "NONE"
#: A monitoring variable this many combined sigma from its trend's centre is a WARNING / ERROR.
VARIABLE_WARNING_SIGMA = 3.0
VARIABLE_ERROR_SIGMA = 5.0

#: Trend statuses per (variable name, experiment, run type, beam energy): (detector, run keys,
#: statuses).
VariableStatuses = dict[
    tuple[str, int, str, str], tuple[str, list[tuple[int, int]], npt.NDArray[np.str_]]
]
#: A class of runs with fewer runs than this, and no known value for the variable, has no
#: trend to judge a run against (its median would be the run itself): its runs are NONE.
MIN_TREND_RUNS = 3


def class_label(run_type: str, beam_energy: str) -> str:
    """A run class as the pages and messages write it: ``"physics 4S"``, ``"cosmic No Beam"``."""
    return f"{run_type} {beam_energy}"


@dataclass(frozen=True)
class Trend:
    """A monitoring variable against run, with each run's GOOD limits and status.

    Each run is judged within its class and period, the runs of the same experiment, run type
    and beam energy (a Continuum run against the Continuum runs, never against a 4S band) and
    QA period (after a detector change, against the runs after it: ``period[i]`` is the first
    run of run ``i``'s period, 0 for the experiment's first; the limits step where it changes),
    over the whole period whatever range is shown, so a run's status does not depend on the
    selection. The class's centre is the variable's known reference value when it has one,
    else the median of the class; the expected scatter of one run around it is the run's own
    error combined with the run-to-run spread the errors do not explain (from the median
    absolute deviation). ``low[i] .. high[i]`` is the centre +- 3 of run ``i``'s combined
    sigma: ``status[i]`` is GOOD exactly when ``low[i] <= value[i] <= high[i]``, WARNING up to
    5 sigma, ERROR beyond; NONE without a finite value and error, or in a class too small to
    have a trend (fewer than :data:`MIN_TREND_RUNS` runs and no known value). A variable
    declared not judged (:attr:`b2calib.qa.monitoring.VariableDef.judged` False: a run's
    integrated luminosity) has no limits and every run NONE.

    ``centre`` and ``width`` (one run's typical sigma) are those of the class with the most runs
    shown, in the period of its last run shown; :attr:`band` is that band for a typical run (a
    run with a larger error has wider limits: draw ``low``/``high``).
    """

    name: str
    detector: str
    unit: str
    exp: npt.NDArray[np.int64]
    run: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    error: npt.NDArray[np.float64]
    status: npt.NDArray[np.str_]
    centre: float
    width: float
    reference: float | None
    low: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    run_class: npt.NDArray[np.str_]
    #: How many of its combined sigma each run is from its class's centre (signed, NaN when
    #: the run is not judged).
    pull: npt.NDArray[np.float64]
    #: The first run of each run's QA period (0: the experiment's first period).
    period: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.run)

    @property
    def band(self) -> tuple[float, float]:
        """The GOOD band of a typical run of the main class, centre +- 3 widths."""
        return (
            self.centre - VARIABLE_WARNING_SIGMA * self.width,
            self.centre + VARIABLE_WARNING_SIGMA * self.width,
        )

    def status_of(self, exp: int, run: int) -> str:
        """The status of one run (:data:`NO_STATUS` when the run has no value)."""
        hit = np.flatnonzero((self.exp == exp) & (self.run == run))
        return str(self.status[hit[0]]) if len(hit) else NO_STATUS


@dataclass(frozen=True)
class _Judged:
    """One class's runs of one variable, judged (see :class:`Trend`)."""

    centre: float
    width: float
    low: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    pull: npt.NDArray[np.float64]
    status: npt.NDArray[np.str_]


def _judge(
    value: npt.NDArray[np.float64], error: npt.NDArray[np.float64], reference: float | None
) -> _Judged:
    """Judge the runs of one class of one variable: limits, pulls and statuses, the status
    coming from the same limits that are returned (drawn)."""
    n = len(value)
    nan = np.full(n, np.nan)
    finite = np.isfinite(value) & np.isfinite(error)
    if not finite.any() or (reference is None and int(finite.sum()) < MIN_TREND_RUNS):
        return _Judged(np.nan, np.nan, nan, nan, nan, np.full(n, NO_STATUS))
    v, e = value[finite], error[finite]
    centre = float(np.median(v)) if reference is None else float(reference)
    spread = 1.4826 * float(np.median(np.abs(v - np.median(v)))) if len(v) >= 5 else 0.0
    typical = float(np.median(e))
    extra = float(np.sqrt(max(spread**2 - typical**2, 0.0)))
    sigma = np.where(finite, np.sqrt(np.where(finite, error, 0.0) ** 2 + extra**2), np.nan)
    low = centre - VARIABLE_WARNING_SIGMA * sigma
    high = centre + VARIABLE_WARNING_SIGMA * sigma
    low_error = centre - VARIABLE_ERROR_SIGMA * sigma
    high_error = centre + VARIABLE_ERROR_SIGMA * sigma
    with np.errstate(divide="ignore", invalid="ignore"):
        # a value quoted without error: exactly on the centre is GOOD (pull 0), off it ERROR
        pull = np.where(sigma > 0, (value - centre) / sigma, np.where(value == centre, 0.0, np.inf))
    pull = np.where(finite, np.sign(value - centre) * np.abs(pull), np.nan)
    status = np.where(
        ~finite,
        NO_STATUS,
        np.where(
            (low <= value) & (value <= high),
            QAStatus.GOOD.name,
            np.where(
                (low_error <= value) & (value <= high_error),
                QAStatus.WARNING.name,
                QAStatus.ERROR.name,
            ),
        ),
    )
    return _Judged(centre, float(np.sqrt(typical**2 + extra**2)), low, high, pull, status)


@dataclass(frozen=True)
class JudgedRun:
    """One run's value of a monitoring variable judged against its class's trend."""

    name: str
    detector: str
    unit: str
    exp: int
    run: int
    run_class: str
    value: float
    error: float
    low: float
    high: float
    pull: float
    status: str
    #: runs in the class (and period) the trend was taken over
    class_runs: int
    #: the first run of the run's QA period (0: the experiment's first period)
    period: int = 0
    #: False for a variable declared not judged
    #: (:attr:`b2calib.qa.monitoring.VariableDef.judged`): no limits, NONE, no evidence
    judged: bool = True


@dataclass(frozen=True)
class JudgedTable:
    """Monitoring variables' values judged against their class's trend, one row per (variable,
    run), as columns (see :meth:`Runs.judged`); :meth:`rows` gives :class:`JudgedRun`."""

    name: npt.NDArray[np.str_]
    detector: npt.NDArray[np.str_]
    unit: npt.NDArray[np.str_]
    exp: npt.NDArray[np.int64]
    run: npt.NDArray[np.int64]
    run_class: npt.NDArray[np.str_]
    value: npt.NDArray[np.float64]
    error: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    pull: npt.NDArray[np.float64]
    status: npt.NDArray[np.str_]
    class_runs: npt.NDArray[np.int64]
    period: npt.NDArray[np.int64]
    judged: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.run)

    def take(self, which: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> JudgedTable:
        """The rows selected by a mask or indices, as a table."""
        return JudgedTable(
            **{f.name: getattr(self, f.name)[which] for f in dataclasses.fields(self)}
        )

    @staticmethod
    def concat(tables: Sequence[JudgedTable]) -> JudgedTable:
        """The tables' rows one after the other."""
        if len(tables) == 1:
            return tables[0]
        fields = [f.name for f in dataclasses.fields(JudgedTable)]
        if not tables:
            return JudgedTable(**{f: np.array([]) for f in fields})
        return JudgedTable(**{f: np.concatenate([getattr(t, f) for t in tables]) for f in fields})

    def rows(self, mask: npt.NDArray[np.bool_] | None = None) -> list[JudgedRun]:
        """The rows selected by ``mask`` (all when None) as :class:`JudgedRun`."""
        idx = np.arange(len(self)) if mask is None else np.flatnonzero(mask)
        return [
            JudgedRun(
                str(self.name[i]),
                str(self.detector[i]),
                str(self.unit[i]),
                int(self.exp[i]),
                int(self.run[i]),
                str(self.run_class[i]),
                float(self.value[i]),
                float(self.error[i]),
                float(self.low[i]),
                float(self.high[i]),
                float(self.pull[i]),
                str(self.status[i]),
                int(self.class_runs[i]),
                int(self.period[i]),
                bool(self.judged[i]),
            )
            for i in idx
        ]


def data_stamp(conn: Connection) -> int | None:
    """Inside a transaction: the audit log's newest entry. Every write the QA data is made of
    logs one in its own transaction (the run registry, a run's QA stored, its comparisons,
    references, periods), so an equal stamp means equal data: what is computed from it (the
    judged trends, the automatic-status grid) is kept by it, checked by one indexed read."""
    return conn.execute(sa.select(sa.func.max(history.c.id))).scalar()


class Runs:
    """The runs of a QA database and their monitoring variables (``QADatabase.runs``).

    Parameters
    ----------
    db
        The database; its author is recorded for imports.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        #: {exp: (the data stamp it was judged at, its judged table)}
        self._judged_cache: dict[int, tuple[int | None, JudgedTable]] = {}

    # -- the run registry --------------------------------------------------------------------

    def import_runs(self, registry: Iterable[Run]) -> int:
        """Add or update runs' metadata (flags are certified here, not imported); returns the
        number of runs written."""
        rows = [
            dict(
                exp=r.exp,
                run=r.run,
                run_type=r.run_type,
                beam_energy=r.beam_energy,
                start=r.start,
                stop=r.stop,
                lumi_pb=r.lumi_pb,
                l1_triggers=r.l1_triggers,
                detectors=",".join(r.detectors),
                magnet_on=r.magnet_on,
                ecms_nominal_gev=r.ecms_nominal_gev,
                notes=r.notes,
            )
            for r in registry
        ]
        t = qa_runs
        with self.db.write() as conn:
            for row in rows:
                key = (t.c.exp == row["exp"]) & (t.c.run == row["run"])
                if conn.execute(sa.select(t.c.run).where(key)).first():
                    conn.execute(t.update().where(key).values(**row))
                else:
                    conn.execute(t.insert().values(**row))
            self.db.log(conn, "import_runs", None, runs=len(rows))
        return len(rows)

    def select(
        self,
        *,
        exp: int | None = None,
        first: int | None = None,
        last: int | None = None,
        run_type: str | None = None,
    ) -> list[Run]:
        """Runs in (exp, run) order, each with its current flags in ``Run.dq``."""
        with self.db.read() as conn:
            return self.fetch(conn, exp=exp, first=first, last=last, run_type=run_type)

    def fetch(
        self,
        conn: Connection,
        *,
        exp: int | None = None,
        first: int | None = None,
        last: int | None = None,
        run_type: str | None = None,
    ) -> list[Run]:
        """:meth:`select` inside a transaction of this database (a write that decides by the
        runs' flags reads them in its own transaction)."""
        t = qa_runs
        where = run_range(t, exp, first, last)
        if run_type is not None:
            where.append(t.c.run_type == run_type)
        rows = conn.execute(sa.select(t).where(*where).order_by(t.c.exp, t.c.run)).all()
        flags = _current_flags(conn, exp, first, last)
        return [_run(r, flags.get((r.exp, r.run), {})) for r in rows]

    def get(self, exp: int, run: int) -> Run:
        """One run with its current flags."""
        found = self.select(exp=exp, first=run, last=run)
        if not found:
            raise RunNotFoundError(exp, run)
        return found[0]

    def registry(
        self,
        *,
        exp: int | None = None,
        first: int | None = None,
        last: int | None = None,
        run_type: str | None = None,
    ) -> RunRegistry:
        """The run registry with the certified flags: what calibration input filters read
        (``RunRegistry.select(dq="Good")``)."""
        return RunRegistry(self.select(exp=exp, first=first, last=last, run_type=run_type))

    def with_certified_flags(self, registry: Iterable[Run]) -> RunRegistry:
        """``registry`` with each run's flags replaced by those certified here, for the runs
        this database knows (the others keep theirs): what calibration input filters
        (``dq="Good"``) should read."""
        certified = {r.key: r.dq for r in self.select()}
        return RunRegistry(replace(r, dq=certified.get(r.key, r.dq)) for r in registry)

    def experiments(self) -> list[int]:
        """The experiments with registered runs, in order."""
        t = qa_runs
        with self.db.read() as conn:
            return list(conn.execute(sa.select(t.c.exp).distinct().order_by(t.c.exp)).scalars())

    def require(self, conn: Connection, exp: int, run: int) -> tuple[str, ...]:
        """Inside a transaction of this database: the detectors run (exp, run) included, or
        :class:`~b2calib.exceptions.RunNotFoundError` when the run is not registered."""
        t = qa_runs
        row = conn.execute(sa.select(t.c.detectors).where(t.c.exp == exp, t.c.run == run)).first()
        if row is None:
            raise RunNotFoundError(exp, run)
        return tuple(d for d in row.detectors.split(",") if d)

    def run_class(self, conn: Connection, exp: int, run: int) -> tuple[str, str]:
        """Inside a transaction of this database: (run type, beam energy) of run (exp, run),
        the class its QA is judged in; :class:`~b2calib.exceptions.RunNotFoundError` when the
        run is not registered."""
        t = qa_runs
        row = conn.execute(
            sa.select(t.c.run_type, t.c.beam_energy).where(t.c.exp == exp, t.c.run == run)
        ).first()
        if row is None:
            raise RunNotFoundError(exp, run)
        return (row.run_type, row.beam_energy)

    # -- monitoring variables ----------------------------------------------------------------

    def replace_variables(
        self,
        conn: Connection,
        exp: int,
        run: int,
        values: Sequence[MonitoringValue],
        *,
        computed: datetime,
    ) -> None:
        """Inside a :meth:`~b2calib.db.Database.write` transaction of this database: make
        ``values`` the monitoring variables of run (exp, run), computed at ``computed``."""
        t = qa_variables
        conn.execute(t.delete().where(t.c.exp == exp, t.c.run == run))
        if values:
            conn.execute(
                t.insert(),
                [
                    dict(
                        exp=exp,
                        run=run,
                        name=v.name,
                        detector=v.detector,
                        value=float(v.value),
                        error=float(v.error),
                        unit=v.unit,
                        computed=computed,
                    )
                    for v in values
                ],
            )

    def variable_names(self) -> list[str]:
        """Names of the stored monitoring variables."""
        t = qa_variables
        with self.db.read() as conn:
            return list(conn.execute(sa.select(t.c.name).distinct().order_by(t.c.name)).scalars())

    def variables(self, exp: int, run: int) -> list[MonitoringValue]:
        """One run's monitoring variables."""
        from b2calib.qa.monitoring import MonitoringValue

        t = qa_variables
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(t).where(t.c.exp == exp, t.c.run == run).order_by(t.c.name)
            ).all()
        return [MonitoringValue(r.name, r.detector, r.value, r.error, r.unit) for r in rows]

    def trend(
        self,
        name: str,
        *,
        exp: int | None = None,
        first: int | None = None,
        last: int | None = None,
        run_type: str | None = "physics",
    ) -> Trend:
        """A monitoring variable against run, one point per run selected (by default the
        physics runs), each with its GOOD limits and status.

        Each run is judged within its class (experiment, run type, beam energy) and QA period
        over the whole period, whatever ``first``/``last`` select: the same judgement as the
        automatic status (:meth:`variable_statuses`), see :class:`Trend`.
        """
        from b2calib.qa.monitoring import VARIABLES

        table = self.judged(name=name, exp=exp)
        keep = np.ones(len(table), dtype=bool)
        if first is not None:
            keep &= table.run >= first
        if last is not None:
            keep &= table.run <= last
        if run_type is not None:
            keep &= np.char.startswith(table.run_class, f"{run_type} ")
        t = table if keep.all() else table.take(keep)  # columns: no object per run
        definition = VARIABLES.get(name)
        if not len(t) and definition is None and name not in self.variable_names():
            raise QAError(f"no monitoring variable {name!r} is stored")
        reference = definition.reference if definition is not None else None
        classes, counts = np.unique(t.run_class, return_counts=True)
        by_count = zip(counts.tolist(), classes.tolist(), strict=True)
        main = max(by_count)[1] if len(classes) else ""
        main_judged = np.flatnonzero((t.run_class == main) & np.isfinite(t.low))
        if len(main_judged):  # the band of the main class now: in the period of its last run
            main_judged = main_judged[t.period[main_judged] == t.period[main_judged[-1]]]
            sigma = (t.high - t.low)[main_judged] / (2 * VARIABLE_WARNING_SIGMA)
            first_run = main_judged[0]
            centre = float((t.high[first_run] + t.low[first_run]) / 2)
            width = float(np.sqrt(np.median(sigma**2)))
        else:
            centre = width = float("nan")
        return Trend(
            name=name,
            detector=str(t.detector[0]) if len(t) else (definition.detector if definition else ""),
            unit=str(t.unit[0]) if len(t) else (definition.unit if definition else ""),
            exp=t.exp.astype(np.int64),
            run=t.run.astype(np.int64),
            value=t.value.astype(np.float64),
            error=t.error.astype(np.float64),
            status=t.status.astype(np.str_),
            centre=centre,
            width=width,
            reference=reference,
            low=t.low.astype(np.float64),
            high=t.high.astype(np.float64),
            run_class=t.run_class.astype(np.str_),
            pull=t.pull.astype(np.float64),
            period=t.period.astype(np.int64),
        )

    def judged(
        self,
        *,
        name: str | None = None,
        exp: int | Sequence[int] | None = None,
        run_class: tuple[str, str] | None = None,
    ) -> JudgedTable:
        """Every stored value of monitoring variable ``name`` (all variables when None) in
        experiment(s) ``exp`` (all when None) and runs of ``run_class`` (run type, beam energy;
        all when None), each judged against the trend of its class (experiment, run type, beam
        energy) and QA period (see :class:`Trend`), in (name, exp, run) order. A value of a
        detector the run did not include is left out (it has no value).

        An experiment's judgement is computed once and kept while its stored values, the run
        registry and its periods are unchanged (checked by one short query: every import and
        period change is in the history), so that the pages' grid,
        trends and evidence do not read every value of the experiment each time.
        """
        with self.db.read() as conn:
            if isinstance(exp, int):
                exps = [exp]
            elif exp is not None:
                exps = sorted(set(exp))
            else:
                exps = list(conn.execute(sa.select(qa_variables.c.exp).distinct()).scalars())
            tables = [self._judged_exp(conn, e) for e in exps]
        t = JudgedTable.concat(tables)
        keep = np.ones(len(t), dtype=bool)
        if name is not None:
            keep &= t.name == name
        if run_class is not None:
            keep &= t.run_class == class_label(*run_class)
        return t if keep.all() else t.take(keep)

    def _judged_exp(self, conn: Connection, exp: int) -> JudgedTable:
        """:meth:`judged` of one whole experiment, from the cache while it is up to date."""
        stamp = data_stamp(conn)
        cached = self._judged_cache.get(exp)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        table = self._judge_exp(conn, exp)
        self._judged_cache[exp] = (stamp, table)
        return table

    def _judge_exp(self, conn: Connection, exp: int) -> JudgedTable:
        from b2calib.qa.monitoring import VARIABLES

        v, r = qa_variables, qa_runs
        query = (
            sa.select(
                v.c.name,
                v.c.detector,
                v.c.unit,
                v.c.run,
                v.c.value,
                v.c.error,
                r.c.run_type,
                r.c.beam_energy,
                r.c.detectors,
            )
            .join(r, (r.c.exp == v.c.exp) & (r.c.run == v.c.run))
            .where(v.c.exp == exp)
            .order_by(v.c.name, r.c.run_type, r.c.beam_energy, v.c.run)
        )
        included: dict[str, frozenset[str]] = {}
        labels: dict[tuple[str, str], str] = {}
        starts = period_starts(conn, exp)
        rows = []
        for x in conn.execute(query):
            dets = included.get(x[8])
            if dets is None:
                dets = included[x[8]] = frozenset(x[8].split(","))
            if x[1] in DETECTORS and x[1] not in dets:
                continue  # the run did not include that detector: no value
            label = labels.get((x[6], x[7]))
            if label is None:
                label = labels[(x[6], x[7])] = class_label(x[6], x[7])
            rows.append((x[0], x[1], x[2], x[3], x[4], x[5], label))
        n = len(rows)
        cols: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [()] * 7
        names = np.array(cols[0], dtype=np.str_)
        classes = np.array(cols[6], dtype=np.str_)
        value = np.array(cols[4], dtype=np.float64)
        error = np.array(cols[5], dtype=np.float64)
        low, high, pull = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        status = np.full(n, NO_STATUS, dtype="<U8")
        class_runs = np.zeros(n, dtype=np.int64)
        judged = np.ones(n, dtype=bool)
        runs = np.array(cols[3], dtype=np.int64)
        starts_a = np.array(starts, dtype=np.int64)
        period = starts_a[(np.searchsorted(starts_a, runs, side="right") - 1).clip(0)]
        # the rows come grouped by (name, class) in run order: judge each period of each group
        start = 0
        for i in range(1, n + 1):
            if (
                i < n
                and cols[0][i] == cols[0][start]
                and cols[6][i] == cols[6][start]
                and period[i] == period[start]
            ):
                continue
            idx = slice(start, i)
            definition = VARIABLES.get(cols[0][start])
            class_runs[idx] = i - start
            start = i
            if definition is not None and not definition.judged:
                judged[idx] = False  # shown, never judged: no limits, NONE, no evidence
                continue
            j = _judge(value[idx], error[idx], definition.reference if definition else None)
            low[idx], high[idx], pull[idx], status[idx] = j.low, j.high, j.pull, j.status
        table = JudgedTable(
            name=names,
            detector=np.array(cols[1], dtype=np.str_),
            unit=np.array(cols[2], dtype=np.str_),
            exp=np.full(n, exp, dtype=np.int64),
            run=runs,
            run_class=classes,
            value=value,
            error=error,
            low=low,
            high=high,
            pull=pull,
            status=status.astype(np.str_),
            class_runs=class_runs,
            period=period,
            judged=judged,
        )
        order = np.lexsort((runs, names))
        return table.take(order)

    def variable_statuses(self, exps: Sequence[int]) -> VariableStatuses:
        """Each variable's trend statuses per (name, exp, run type, beam energy) of the
        experiments given, read in one query: {(name, exp, run_type, beam_energy): (detector,
        run keys, statuses)} (the same judgement as :meth:`trend`)."""
        if not exps:
            return {}
        t = self.judged(exp=exps)
        out: VariableStatuses = {}
        if not len(t):
            return out
        keys = np.char.add(np.char.add(t.name, "|"), np.char.add(t.exp.astype(str), t.run_class))
        _, group = np.unique(keys, return_inverse=True)
        order = np.argsort(group, kind="stable")
        for idx in np.split(order, np.flatnonzero(np.diff(group[order])) + 1):
            i = idx[0]
            run_type, beam_energy = str(t.run_class[i]).split(" ", 1)
            out[(str(t.name[i]), int(t.exp[i]), run_type, beam_energy)] = (
                str(t.detector[i]),
                list(zip(t.exp[idx].tolist(), t.run[idx].tolist(), strict=True)),
                t.status[idx],
            )
        return out


def _current_flags(
    conn: Connection, exp: int | None, first: int | None, last: int | None
) -> dict[tuple[int, int], dict[str, str]]:
    """The newest flag of each certified (run, detector) selected: {(exp, run): {det: flag}}."""
    t = qa_flags
    newest = (
        sa.select(sa.func.max(t.c.id))
        .where(*run_range(t, exp, first, last))
        .group_by(t.c.exp, t.c.run, t.c.detector)
    )
    rows = conn.execute(sa.select(t).where(t.c.id.in_(newest))).all()
    out: dict[tuple[int, int], dict[str, str]] = {}
    for r in rows:
        out.setdefault((r.exp, r.run), {})[r.detector] = r.flag
    return out


def _run(row: Any, dq: dict[str, str]) -> Run:
    r = dict(zip(row._fields, row, strict=True))  # (a row's attributes are slow: runs by 1000s)
    return Run(
        exp=r["exp"],
        run=r["run"],
        run_type=r["run_type"],
        beam_energy=r["beam_energy"],
        start=r["start"],
        stop=r["stop"],
        lumi_pb=r["lumi_pb"],
        l1_triggers=r["l1_triggers"],
        detectors=tuple(d for d in r["detectors"].split(",") if d),
        magnet_on=bool(r["magnet_on"]),
        ecms_nominal_gev=r["ecms_nominal_gev"],
        notes=r["notes"],
        dq=dq,
    )


def __dir__() -> list[str]:
    return __all__
