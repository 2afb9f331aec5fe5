"""The automatic status of a (run, detector): evidence for the shifter, never a flag.

It is the worst of the run's histogram comparisons with the references of its experiment,
class and QA period and of its monitoring variables' deviations from the trend of its class
and period (see
:meth:`b2calib.qa.store.runs.Runs.trend`); :data:`~b2calib.qa.store.runs.NO_STATUS` when there
is no evidence. The columns are the detectors and the two systems, BEAM and TRACKING
(:data:`STATUS_COLUMNS`). :meth:`AutoStatus.evidence` lists every item that feeds a run's
status, worst first, each with what was measured against what was expected.

An experiment's grid is computed once and kept while what it is made of is unchanged: the run
registry, the references and periods, the runs' stored QA and comparisons, each of whose writes
is logged in the audit log: its newest entry is checked by one indexed read each time. Every
grid is as fresh as the database, also after a write by another process, and a page pays for
the computation only after a change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from b2calib.db import Database
from b2calib.geometry import DETECTORS
from b2calib.qa.compare import QAStatus
from b2calib.qa.store.histograms import Histograms, Reference, StoredComparison
from b2calib.qa.store.periods import period_of, period_starts, runs_label
from b2calib.qa.store.runs import (
    NO_STATUS,
    JudgedRun,
    Runs,
    class_label,
    data_stamp,
)

__all__ = ["STATUS_COLUMNS", "AutoStatus", "Evidence"]

#: The systems that are not detectors, :data:`b2calib.qa.monitoring.SYSTEMS` (written out here:
#: the store does not import the monitoring and its array stack; a test keeps them equal).
_SYSTEMS: tuple[str, ...] = ("BEAM", "TRACKING")
#: The columns of the automatic status, in the order every page shows them: the detectors
#: (:data:`b2calib.geometry.DETECTORS`), then the systems BEAM and TRACKING.
STATUS_COLUMNS: tuple[str, ...] = (*DETECTORS, *_SYSTEMS)

#: How bad a status is, for sorting evidence worst first: a missing verdict (NONE: no
#: reference, no trend) ranks between TOO_FEW and GOOD.
_RANK = {"ERROR": 4, "WARNING": 3, "TOO_FEW": 2, NO_STATUS: 1, "GOOD": 0}


@dataclass(frozen=True)
class Evidence:
    """One item that feeds the automatic status of a (run, detector).

    Attributes
    ----------
    kind
        ``"histogram"`` (a QA histogram compared with its reference), ``"variable"`` (a
        monitoring variable against the trend of its class) or ``"reference"`` (a histogram
        with no reference for the run's experiment and class: not compared).
    name
        The histogram (``DETECTOR/NAME``) or variable name.
    status
        A :class:`~b2calib.qa.compare.QAStatus` name, or ``"NONE"`` (no verdict).
    message
        One line a shifter reads: what was measured against what was expected.
    value
        The variable's value, or the comparison's p-value; None when there is none.
    expected
        The variable's GOOD limits for this run, or the comparison's GOOD p-value range
        (p-warning .. 1); None when unknown.
    """

    exp: int
    run: int
    detector: str
    kind: str
    name: str
    status: str
    message: str
    value: float | None = None
    expected: tuple[float, float] | None = None


def _g(x: float) -> str:
    return f"{x:.4g}"


def _variable_evidence(j: JudgedRun, runs: str) -> Evidence:
    """``runs``: the runs of ``j``'s period (:func:`~b2calib.qa.store.periods.runs_label`)."""
    where = f"{j.run_class} {runs} of exp {j.exp}"
    measured = f"{j.name} = {_g(j.value)} +- {j.error:.2g}"
    if j.status == NO_STATUS:
        if not (math.isfinite(j.value) and math.isfinite(j.error)):
            why = "no value measured"
        else:
            n = j.class_runs
            why = f"only {n} {'run' if n == 1 else 'runs'} among the {where}: no trend to judge"
        value = j.value if math.isfinite(j.value) else None
        message = f"{measured}: {why}"
        return Evidence(j.exp, j.run, j.detector, "variable", j.name, NO_STATUS, message, value)
    expected = f"expected {_g(j.low)} .. {_g(j.high)} ({where})"
    if j.status == "GOOD":
        verdict = f"within ({abs(j.pull):.1f} sigma)"
    else:
        verdict = f"{abs(j.pull):.1f} sigma {'above' if j.pull > 0 else 'below'}"
    return Evidence(
        j.exp,
        j.run,
        j.detector,
        "variable",
        j.name,
        j.status,
        f"{measured}, {expected}: {verdict}",
        j.value,
        (j.low, j.high),
    )


class AutoStatus:
    """The automatic status of the runs of a QA database (``QADatabase.status``).

    Parameters
    ----------
    db
        The database.
    runs
        The runs' part (runs selected, monitoring variables' trend statuses).
    histograms
        The histograms' part (comparisons with the references).
    """

    def __init__(self, db: Database, runs: Runs, histograms: Histograms) -> None:
        self.db = db
        self.runs = runs
        self.histograms = histograms
        #: {exp: (its stamp, the grid of the whole experiment)}
        self._grids: dict[int, tuple[int | None, dict[tuple[int, int], dict[str, str]]]] = {}

    def evaluate(self, exp: int, run: int) -> dict[str, str]:
        """Compare each QA histogram of a run with its reference, store the results and
        return the run's automatic status per column (see :meth:`get`)."""
        with self.db.read() as conn:
            self.runs.require(conn, exp, run)
        self.histograms.compare([(exp, run)])
        return self.get(exp, run)

    def evaluate_all(
        self, *, exp: int | None = None, first: int | None = None, last: int | None = None
    ) -> dict[tuple[int, int], dict[str, str]]:
        """:meth:`evaluate` every run selected that has QA histograms; returns the automatic
        status grid of the runs selected."""
        self.histograms.compare(self.histograms.stored_runs(exp=exp, first=first, last=last))
        return self.grid(exp=exp, first=first, last=last)

    def get(self, exp: int, run: int) -> dict[str, str]:
        """The automatic status of each detector and system (:data:`STATUS_COLUMNS`) of a run:
        the worst of its histograms' comparisons and of its monitoring variables' trend
        statuses (the trend is taken over the runs of its experiment, run type and beam
        energy). :data:`NO_STATUS` when there is no evidence."""
        return self.grid(exp=exp, first=run, last=run).get(
            (exp, run), dict.fromkeys(STATUS_COLUMNS, NO_STATUS)
        )

    def grid(
        self,
        *,
        exp: int | None = None,
        first: int | None = None,
        last: int | None = None,
    ) -> dict[tuple[int, int], dict[str, str]]:
        """Automatic status per detector and system (:data:`STATUS_COLUMNS`, in that order) of
        every run selected (see :meth:`get`).

        A variable is judged against its trend over the runs of the same experiment, run
        type and beam energy (physics 4S runs with physics 4S runs, Continuum with Continuum,
        cosmics with cosmics), so a run's status does not depend on the range selected. A
        detector the run did not include has no evidence (NONE).

        The grid of a whole experiment is kept while what it is made of is unchanged (see the
        module's docstring); a range of it is then taken from that grid.
        """
        if not isinstance(exp, int):
            return self._grid(exp=exp, first=first, last=last)
        with self.db.read() as conn:  # before the read: a write meanwhile makes the next one read
            stamp = data_stamp(conn)
        held = self._grids.get(exp)
        if held is None or held[0] != stamp:
            if first is not None or last is not None:  # a few runs: not the whole experiment
                return self._grid(exp=exp, first=first, last=last)
            held = (stamp, self._grid(exp=exp))
            self._grids[exp] = held
        return {
            key: dict(per)
            for key, per in held[1].items()
            if (first is None or key[1] >= first) and (last is None or key[1] <= last)
        }

    def _grid(
        self,
        *,
        exp: int | None = None,
        first: int | None = None,
        last: int | None = None,
    ) -> dict[tuple[int, int], dict[str, str]]:
        """:meth:`grid`, read and computed now."""
        runs = self.runs.select(exp=exp, first=first, last=last)
        columns = {c: j for j, c in enumerate(STATUS_COLUMNS)}
        # the worst status rank of each (run, column): -1 (no evidence) up to ERROR
        worst = np.full((len(runs), len(STATUS_COLUMNS)), -1, dtype=np.int8)
        included = np.zeros(worst.shape, dtype=bool)
        included[:, len(DETECTORS) :] = True  # the systems
        for i, r in enumerate(runs):
            for d in r.detectors:
                if d in columns:
                    included[i, columns[d]] = True
        row_of = {r.key: i for i, r in enumerate(runs)}
        ranks = {s.name: int(s) for s in QAStatus}
        hits = [
            (ri, cj, ranks[st])
            for e, run, det, st in self.histograms.worst_comparisons(
                exp=exp, first=first, last=last
            )
            if (ri := row_of.get((e, run))) is not None and (cj := columns.get(det)) is not None
        ]
        if hits:
            ii, jj, rr = (np.array(x, dtype=np.int64) for x in zip(*hits, strict=True))
            np.maximum.at(worst, (ii, jj), rr.astype(np.int8))
        if runs:
            t = self.runs.judged(exp=sorted({r.exp for r in runs}))
            keys = np.array([r.exp * 10**7 + r.run for r in runs], dtype=np.int64)
            pos = np.searchsorted(keys, t.exp * 10**7 + t.run).clip(0, len(keys) - 1)
            dets, det_idx = np.unique(t.detector, return_inverse=True)
            det_col = np.array([columns.get(str(d), -1) for d in dets], dtype=np.int64)[det_idx]
            sts, st_idx = np.unique(t.status, return_inverse=True)
            rank = np.array([ranks.get(str(x), -1) for x in sts], dtype=np.int8)[st_idx]
            ok = (keys[pos] == t.exp * 10**7 + t.run) & (det_col >= 0) & (rank >= 0)
            np.maximum.at(worst, (pos[ok], det_col[ok]), rank[ok])
        worst[~included] = -1
        names = [s.name for s in sorted(QAStatus)]  # by rank
        return {
            r.key: {
                c: names[k] if k >= 0 else NO_STATUS
                for c, k in zip(STATUS_COLUMNS, worst[i].tolist(), strict=True)
            }
            for i, r in enumerate(runs)
        }

    def evidence(self, exp: int, run: int, detector: str | None = None) -> list[Evidence]:
        """Every item that feeds the automatic status of run (exp, run) (of ``detector`` only,
        a name of :data:`STATUS_COLUMNS`, when given), worst first: each histogram's
        comparison with its reference, each monitoring variable against the trend of the
        run's class, and each histogram that has no reference for the run's experiment and
        class (status NONE, saying how to set one). A variable declared not judged
        (:attr:`b2calib.qa.monitoring.VariableDef.judged`) is no evidence. The worst item of a
        column is its status in :meth:`grid`. With QA periods the messages name the runs of the
        run's period ("physics 4S runs 7- of exp 16").

        Raises
        ------
        RunNotFoundError
            When the run is not registered.
        QAError
            When ``detector`` is not a name of :data:`STATUS_COLUMNS`.
        """
        from b2calib.exceptions import QAError

        if detector is not None and detector not in STATUS_COLUMNS:
            raise QAError(
                f"{detector!r} is not a detector or system; known: {', '.join(STATUS_COLUMNS)}"
            )
        with self.db.read() as conn:
            included = set(self.runs.require(conn, exp, run)) | set(_SYSTEMS)
            run_type, beam_energy = self.runs.run_class(conn, exp, run)
            starts = period_starts(conn, exp)
        period = period_of(starts, run)
        i = starts.index(period)
        runs = runs_label(period, starts[i + 1] if i + 1 < len(starts) else None)
        where = f"{class_label(run_type, beam_energy)} {runs}"
        wanted = included if detector is None else {detector} & included
        items: list[Evidence] = []
        # -- histograms: compared, not yet compared, or without a reference of the class
        refs = self.histograms.references(exp)
        compared = {(c.detector, c.name): c for c in self.histograms.comparisons(exp, run)}
        for det, name in self.histograms.keys(exp, run):
            if det not in wanted:
                continue
            hname = f"{det}/{name}"
            ref = refs.get((det, name, exp, run_type, beam_energy, period))
            c = compared.get((det, name))
            if c is not None:
                items.append(self._histogram_evidence(c, ref, where, hname))
            elif ref is None:
                items.append(
                    Evidence(
                        exp,
                        run,
                        det,
                        "reference",
                        hname,
                        NO_STATUS,
                        f"{hname}: no reference for {where} of exp {exp}: set one with "
                        f"`b2calib qa reference set {exp} RUN --all` (RUN one of those "
                        "runs) or `b2calib qa reference set --exp "
                        f"{exp} --auto`",
                    )
                )
            else:
                items.append(
                    Evidence(
                        exp,
                        run,
                        det,
                        "histogram",
                        hname,
                        NO_STATUS,
                        f"{hname}: not compared yet with reference run {ref.exp}/{ref.run} "
                        f"({where}): run `b2calib qa evaluate --exp {exp}`",
                    )
                )
        # -- monitoring variables against the trend of the run's class (those not judged, a
        # run's integrated luminosity, feed nothing)
        t = self.runs.judged(exp=exp, run_class=(run_type, beam_energy))
        for j in t.rows((t.run == run) & t.judged):
            if j.detector in wanted:
                items.append(_variable_evidence(j, runs))
        order = {c: i for i, c in enumerate(STATUS_COLUMNS)}
        items.sort(key=lambda x: (-_RANK.get(x.status, 0), order.get(x.detector, 99), x.name))
        return items

    @staticmethod
    def _histogram_evidence(
        c: StoredComparison, ref: Reference | None, where: str, hname: str
    ) -> Evidence:
        cmp = c.comparison
        status = cmp.status.name
        p = cmp.p_value
        expected = None
        if ref is not None and (ref.exp, ref.run) == (c.reference_exp, c.reference_run):
            expected = (ref.thresholds.p_warning, 1.0)
        against = f"reference run {c.reference_exp}/{c.reference_run} ({where})"
        if (c.exp, c.run) == (c.reference_exp, c.reference_run) and expected is not None:
            message = (
                f"{hname}: this run is the reference of the {where} (not compared with itself)"
            )
            return Evidence(c.exp, c.run, c.detector, "histogram", hname, status, message)
        numbers = f"{cmp.method} p = {p:.2g}" if math.isfinite(p) else f"{cmp.method} p = n/a"
        message = f"{hname}: {numbers} ({cmp.entries:.0f} entries) vs {against}"
        if status == "TOO_FEW":
            need = ref.thresholds.min_entries if ref is not None else None
            floor = f", fewer than the {need:.0f} needed" if need is not None else ""
            message += (
                f": too few entries for a verdict{floor} (reference {cmp.reference_entries:.0f})"
            )
        elif expected is not None:
            message += f", expected p >= {expected[0]:.2g}"
        if cmp.message and status in ("ERROR", "TOO_FEW"):
            message += f" ({cmp.message})"
        if ref is not None and expected is None:
            message += (
                f"; the reference is now run {ref.exp}/{ref.run}: evaluate again "
                f"(`b2calib qa evaluate --exp {c.exp}`)"
            )
        elif ref is None:  # compared before a QA period began at or before this run
            message += (
                f"; the {where} of exp {c.exp} have no reference now: set one (`b2calib qa "
                f"reference set --exp {c.exp} --auto`) and evaluate again"
            )
        return Evidence(
            c.exp,
            c.run,
            c.detector,
            "histogram",
            hname,
            status,
            message,
            p if math.isfinite(p) else None,
            expected,
        )

    def worst_variables(
        self,
        exp: int,
        run_type: str | None = None,
        first: int | None = None,
        last: int | None = None,
    ) -> list[str]:
        """The monitoring variables of experiment ``exp`` (runs of ``run_type``, ``first`` to
        ``last``), worst first: most ERROR runs, then most WARNING runs, then by name. The
        QA monitor opens on the first."""
        t = self.runs.judged(exp=exp)
        keep = np.ones(len(t), dtype=bool)
        if first is not None:
            keep &= t.run >= first
        if last is not None:
            keep &= t.run <= last
        if run_type is not None:
            keep &= np.char.startswith(t.run_class, f"{run_type} ")
        names, status = t.name[keep], t.status[keep]
        if not len(names):
            return []
        if (names[1:] < names[:-1]).any():  # (judged() gives them in (name, run) order)
            by_name = np.argsort(names, kind="stable")
            names, status = names[by_name], status[by_name]
        # each name's rows are one block
        starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
        errors = np.add.reduceat((status == "ERROR").astype(np.int64), starts).tolist()
        warnings = np.add.reduceat((status == "WARNING").astype(np.int64), starts).tolist()
        order = sorted(
            zip(names[starts].tolist(), errors, warnings, strict=True),
            key=lambda x: (-x[1], -x[2], x[0]),
        )
        return [str(n) for n, _, _ in order]


def __dir__() -> list[str]:
    return __all__
