"""The run registry of the QA database and the runs' monitoring variables with their trends.

A run carries its current certification flags (:attr:`b2calib.runs.Run.dq`: the newest flag
of each detector), read here from the certification records, so that the calibrations' input
filters and the good-run lists select by what was certified.

A monitoring variable is judged against its trend: the runs of the same experiment and run
type, with a band from their median and scatter (:class:`Trend`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from b2calib.db import Database
from b2calib.exceptions import QAError, RunNotFoundError
from b2calib.qa.compare import QAStatus
from b2calib.qa.store.tables import qa_flags, qa_runs, qa_variables, run_range
from b2calib.runs import Run, RunRegistry

if TYPE_CHECKING:
    from b2calib.qa.monitoring import MonitoringValue

__all__ = [
    "NO_STATUS",
    "VARIABLE_ERROR_SIGMA",
    "VARIABLE_WARNING_SIGMA",
    "Runs",
    "Trend",
    "VariableStatuses",
]

#: Status of a detector with neither comparisons nor variables.
NO_STATUS = "NONE"
#: A monitoring variable this many combined sigma from its trend's centre is a WARNING / ERROR.
VARIABLE_WARNING_SIGMA = 3.0
VARIABLE_ERROR_SIGMA = 5.0

#: Trend statuses per (variable name, experiment, run type): (detector, run keys, statuses).
VariableStatuses = dict[
    tuple[str, int, str], tuple[str, list[tuple[int, int]], npt.NDArray[np.str_]]
]


@dataclass(frozen=True)
class Trend:
    """A monitoring variable against run, with its band and each run's status.

    ``centre`` is the variable's known reference value when it has one, else the median over
    the runs shown; ``width`` is the expected scatter of one run around it (its median error
    combined with the run-to-run spread the errors do not explain, from the median absolute
    deviation). A run is WARNING beyond 3 and ERROR beyond 5 of its own combined sigma.
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

    def __len__(self) -> int:
        return len(self.run)

    @property
    def band(self) -> tuple[float, float]:
        """The GOOD band, centre +- 3 widths."""
        return (
            self.centre - VARIABLE_WARNING_SIGMA * self.width,
            self.centre + VARIABLE_WARNING_SIGMA * self.width,
        )

    def status_of(self, exp: int, run: int) -> str:
        """The status of one run (:data:`NO_STATUS` when the run has no value)."""
        hit = np.flatnonzero((self.exp == exp) & (self.run == run))
        return str(self.status[hit[0]]) if len(hit) else NO_STATUS


def _trend_status(
    value: npt.NDArray[np.float64], error: npt.NDArray[np.float64], reference: float | None
) -> tuple[npt.NDArray[np.str_], float, float]:
    finite = np.isfinite(value) & np.isfinite(error)
    if not finite.any():
        return np.full(len(value), NO_STATUS), float("nan"), float("nan")
    v, e = value[finite], error[finite]
    centre = float(np.median(v)) if reference is None else float(reference)
    spread = 1.4826 * float(np.median(np.abs(v - np.median(v)))) if len(v) >= 5 else 0.0
    typical = float(np.median(e))
    extra = np.sqrt(max(spread**2 - typical**2, 0.0))
    sigma = np.sqrt(error**2 + extra**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        # a value quoted without error: exactly on the centre is GOOD, off it ERROR
        z = np.where(
            sigma > 0, np.abs(value - centre) / sigma, np.where(value == centre, 0, np.inf)
        )
    status = np.where(
        ~(np.isfinite(value) & np.isfinite(error)),
        NO_STATUS,
        np.where(
            z > VARIABLE_ERROR_SIGMA,
            QAStatus.ERROR.name,
            np.where(z > VARIABLE_WARNING_SIGMA, QAStatus.WARNING.name, QAStatus.GOOD.name),
        ),
    )
    return status, centre, float(np.sqrt(typical**2 + extra**2))


class Runs:
    """The runs of a QA database and their monitoring variables (``QADatabase.runs``).

    Parameters
    ----------
    db
        The database; its author is recorded for imports.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

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
        """A monitoring variable against run, one point per run, with band and statuses.

        The band is computed from the runs selected (by default the physics runs).
        """
        from b2calib.qa.monitoring import VARIABLES

        v, r = qa_variables, qa_runs
        where = [*run_range(v, exp, first, last), v.c.name == name]
        if run_type is not None:
            where.append(r.c.run_type == run_type)
        query = (
            sa.select(v.c.exp, v.c.run, v.c.value, v.c.error, v.c.detector, v.c.unit)
            .join(r, (r.c.exp == v.c.exp) & (r.c.run == v.c.run))
            .where(*where)
            .order_by(v.c.exp, v.c.run)
        )
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        if not rows and name not in VARIABLES:
            raise QAError(f"no monitoring variable {name!r} is stored")
        definition = VARIABLES.get(name)
        reference = definition.reference if definition is not None else None
        value = np.array([x.value for x in rows], dtype=np.float64)
        error = np.array([x.error for x in rows], dtype=np.float64)
        status, centre, width = _trend_status(value, error, reference)
        return Trend(
            name=name,
            detector=rows[0].detector if rows else (definition.detector if definition else ""),
            unit=rows[0].unit if rows else (definition.unit if definition else ""),
            exp=np.array([x.exp for x in rows], dtype=np.int64),
            run=np.array([x.run for x in rows], dtype=np.int64),
            value=value,
            error=error,
            status=status,
            centre=centre,
            width=width,
            reference=reference,
        )

    def variable_statuses(self, exps: Sequence[int]) -> VariableStatuses:
        """Each variable's trend statuses per (name, exp, run type) of the experiments given,
        read in one query: {(name, exp, run_type): (detector, run keys, statuses)}."""
        from b2calib.qa.monitoring import VARIABLES

        if not exps:
            return {}
        v, r = qa_variables, qa_runs
        query = (
            sa.select(v.c.name, v.c.detector, v.c.exp, v.c.run, v.c.value, v.c.error, r.c.run_type)
            .join(r, (r.c.exp == v.c.exp) & (r.c.run == v.c.run))
            .where(v.c.exp.in_(list(exps)))
            .order_by(v.c.name, v.c.exp, r.c.run_type, v.c.run)
        )
        groups: dict[tuple[str, int, str], list[Any]] = {}
        with self.db.read() as conn:
            for row in conn.execute(query):
                groups.setdefault((row.name, row.exp, row.run_type), []).append(row)
        out = {}
        for (name, e, run_type), rows in groups.items():
            definition = VARIABLES.get(name)
            status, _, _ = _trend_status(
                np.array([x.value for x in rows], dtype=np.float64),
                np.array([x.error for x in rows], dtype=np.float64),
                definition.reference if definition is not None else None,
            )
            out[(name, e, run_type)] = (rows[0].detector, [(e, x.run) for x in rows], status)
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
    return Run(
        exp=row.exp,
        run=row.run,
        run_type=row.run_type,
        beam_energy=row.beam_energy,
        start=row.start,
        stop=row.stop,
        lumi_pb=row.lumi_pb,
        l1_triggers=row.l1_triggers,
        detectors=tuple(d for d in row.detectors.split(",") if d),
        magnet_on=bool(row.magnet_on),
        ecms_nominal_gev=row.ecms_nominal_gev,
        notes=row.notes,
        dq=dq,
    )


def __dir__() -> list[str]:
    return __all__
