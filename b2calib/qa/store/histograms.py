"""QA histograms per run and detector, the reference run of each per experiment, class of runs
and QA period, and the comparisons of a run's histograms with their references.

Histograms are stored as compressed UHI JSON (exact: storage type, axes, flow bins and
variances come back as they were). A comparison is evidence for the automatic status
(:mod:`b2calib.qa.store.status`); storing a run's histograms again drops its comparisons.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import hist
import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from uhi.io import json as uhi_json

from b2calib.db import Database, now
from b2calib.exceptions import ConfigError, QAError
from b2calib.qa.compare import Comparison, Method, QAStatus, Thresholds, compare
from b2calib.qa.store.periods import FIRST_PERIOD, period_of, period_starts
from b2calib.qa.store.runs import Runs
from b2calib.qa.store.tables import (
    qa_comparisons,
    qa_histograms,
    qa_references,
    qa_runs,
    run_range,
)

if TYPE_CHECKING:
    from b2calib.qa.monitoring import RunQA

__all__ = ["Histograms", "Reference", "ReferenceKey", "RunClass", "StoredComparison"]


#: The class of a run a reference is chosen for: (run type, beam energy).
RunClass = tuple[str, str]
#: What a reference is chosen for within an experiment: (run type, beam energy, first run of
#: the QA period; 0 for the experiment's first period).
ReferenceKey = tuple[str, str, int]


@dataclass(frozen=True)
class Reference:
    """The reference run of a QA histogram for one class of runs (run type and beam energy:
    4S physics runs are compared with a 4S physics run, Continuum with Continuum, cosmics with
    a cosmic run) of one QA period of its experiment (``period``, the period's first run: 0
    for the experiment's first period; see :mod:`b2calib.qa.store.periods`) and how it is
    compared."""

    detector: str
    name: str
    exp: int
    run: int
    method: str
    options: str
    thresholds: Thresholds
    run_type: str = "physics"
    beam_energy: str = "4S"
    period: int = FIRST_PERIOD

    @property
    def run_class(self) -> RunClass:
        """(run type, beam energy) of the runs this reference is for."""
        return (self.run_type, self.beam_energy)


@dataclass(frozen=True)
class StoredComparison:
    """A histogram's comparison with its reference, as last evaluated."""

    exp: int
    run: int
    detector: str
    name: str
    reference_exp: int
    reference_run: int
    comparison: Comparison

    @property
    def status(self) -> str:
        """The comparison's status name."""
        return self.comparison.status.name


def _the_reference(h: hist.Hist, ref: Reference) -> Comparison:
    """The comparison stored for the reference run itself: GOOD (it was chosen as the good
    run), no test statistic (a run compared with itself says nothing: statistic 0, p = 1), and
    a message saying it is the reference."""
    n = float(np.asarray(h.values()).sum())
    return Comparison(
        ref.method, ref.options, math.nan, None, math.nan, QAStatus.GOOD, n, n,
        f"run ({ref.exp}, {ref.run}) is the reference of this histogram: not compared with itself",
    )  # fmt: skip


def _method(method: str) -> Method:
    if method not in ("chi2", "ks", "ad"):
        raise QAError(f"unknown comparison method {method!r}; known: chi2, ks, ad")
    return method  # type: ignore[return-value]


def _hist_bytes(h: hist.Hist) -> bytes:
    from hist.serialization import to_uhi

    text = json.dumps(to_uhi(h), default=uhi_json.default, sort_keys=True)
    return zlib.compress(text.encode(), 6)


def _hist_from_bytes(data: bytes, where: str) -> hist.Hist:
    from hist.serialization import from_uhi

    try:
        d = json.loads(zlib.decompress(data), object_hook=uhi_json.object_hook)
        return hist.Hist(from_uhi(d))
    except (zlib.error, ValueError, KeyError, TypeError) as err:
        raise QAError(f"{where}: stored histogram is unreadable ({err})") from err


class Histograms:
    """The QA histograms of a QA database with their references and comparisons
    (``QADatabase.histograms``).

    Parameters
    ----------
    db
        The database; its author is recorded for references.
    runs
        The runs' part, which keeps the monitoring variables stored with the histograms.
    """

    def __init__(self, db: Database, runs: Runs) -> None:
        self.db = db
        self.runs = runs

    def store_run(self, qa: RunQA) -> None:
        """Store one run's QA: its QA histograms and, through :attr:`runs`, its monitoring
        variables, replacing the ones that run had, in one transaction (its earlier
        comparisons are dropped: evaluate it again)."""
        when = now()
        histograms = [
            dict(
                exp=qa.exp,
                run=qa.run,
                detector=det,
                name=name,
                entries=float(np.sum(h.values(flow=True))),
                content=_hist_bytes(h),
                computed=when,
            )
            for (det, name), h in qa.histograms.items()
        ]
        with self.db.write() as conn:
            self.runs.require(conn, qa.exp, qa.run)
            self.runs.replace_variables(conn, qa.exp, qa.run, qa.variables, computed=when)
            for t in (qa_histograms, qa_comparisons):
                conn.execute(t.delete().where(t.c.exp == qa.exp, t.c.run == qa.run))
            if histograms:
                conn.execute(qa_histograms.insert(), histograms)
            # every write to a run's QA is in the audit log: its newest entry is the stamp the
            # automatic status and the trends are kept by (b2calib.qa.store.runs.data_stamp)
            self.db.log(
                conn,
                "store_qa",
                None,
                exp=qa.exp,
                run=qa.run,
                variables=len(qa.variables),
                histograms=len(histograms),
            )

    def keys(self, exp: int, run: int) -> list[tuple[str, str]]:
        """(detector, name) of one run's QA histograms."""
        t = qa_histograms
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(t.c.detector, t.c.name)
                .where(t.c.exp == exp, t.c.run == run)
                .order_by(t.c.detector, t.c.name)
            ).all()
        return [(r.detector, r.name) for r in rows]

    def stored_runs(
        self, *, exp: int | None = None, first: int | None = None, last: int | None = None
    ) -> list[tuple[int, int]]:
        """(exp, run) of the runs selected that have QA histograms, in order."""
        t = qa_histograms
        with self.db.read() as conn:
            keys = conn.execute(
                sa.select(t.c.exp, t.c.run)
                .where(*run_range(t, exp, first, last))
                .distinct()
                .order_by(t.c.exp, t.c.run)
            ).all()
        return [(k.exp, k.run) for k in keys]

    def get(self, exp: int, run: int, detector: str, name: str) -> hist.Hist:
        """One run's QA histogram."""
        with self.db.read() as conn:
            return self._histogram(conn, exp, run, detector, name)

    def _histogram(self, conn: Connection, exp: int, run: int, det: str, name: str) -> hist.Hist:
        t = qa_histograms
        data = conn.execute(
            sa.select(t.c.content).where(
                t.c.exp == exp, t.c.run == run, t.c.detector == det, t.c.name == name
            )
        ).scalar()
        where = f"QA histogram {det}/{name} of run ({exp}, {run})"
        if data is None:
            raise QAError(f"{where} is not stored")
        return _hist_from_bytes(data, where)

    # -- references --------------------------------------------------------------------------

    def set_reference(
        self,
        detector: str,
        name: str,
        exp: int,
        run: int,
        *,
        method: str | None = None,
        options: str | None = None,
        thresholds: Thresholds | None = None,
    ) -> Reference:
        """Make run (exp, run) the reference of QA histogram ``detector/name`` for the runs of
        its experiment, class (its run type and beam energy) and QA period, replacing the
        reference of that experiment, class and period (the other experiments and periods keep
        theirs).

        ``method``, ``options`` and the minimum entry count default to the histogram's
        definition (see :data:`b2calib.qa.monitoring.QA_HISTOGRAMS`), else chi2 UU and
        :class:`~b2calib.qa.Thresholds`' defaults.
        """
        default_method, default_options, default_thresholds = self.reference_defaults(
            detector, name
        )
        method = method or default_method
        options = options or default_options
        thresholds = thresholds or default_thresholds
        t = qa_references
        row = dict(
            exp=exp,
            run=run,
            method=method,
            options=options,
            min_entries=thresholds.min_entries,
            p_warning=thresholds.p_warning,
            p_error=thresholds.p_error,
            author=self.db.author,
            time=now(),
        )
        with self.db.write() as conn:
            run_type, beam_energy = self.runs.run_class(conn, exp, run)
            period = period_of(period_starts(conn, exp), run)
            h = self._histogram(conn, exp, run, detector, name)
            compare(h, h, _method(method), options, thresholds)  # refuses bad options now
            key = (
                (t.c.detector == detector)
                & (t.c.name == name)
                & (t.c.exp == exp)
                & (t.c.run_type == run_type)
                & (t.c.beam_energy == beam_energy)
                & (t.c.period == period)
            )
            if conn.execute(sa.select(t.c.name).where(key)).first():
                conn.execute(t.update().where(key).values(**row))
            else:
                conn.execute(
                    t.insert().values(
                        detector=detector,
                        name=name,
                        run_type=run_type,
                        beam_energy=beam_energy,
                        period=period,
                        **row,
                    )
                )
            self.db.log(
                conn,
                "set_reference",
                None,
                histogram=f"{detector}/{name}",
                run_class=f"{run_type} {beam_energy}",
                period=period,
                reference=row,
            )
        return Reference(
            detector, name, exp, run, method, options, thresholds, run_type, beam_energy, period
        )

    def choose_references(
        self, exp: int, *, min_entries: float | None = None
    ) -> dict[ReferenceKey, int]:
        """A reference run for each class of runs (run type, beam energy) and QA period of
        experiment ``exp`` that has QA histograms, {(run type, beam energy, period's first
        run): run}: the first run of the class in the period, in run order, whose every QA
        histogram (of those the class's runs in the period have) has at least its minimum
        entry count and with no detector flagged BAD; else the first with the most histograms
        above their minimum (``min_entries`` when given, else each histogram's own). The
        choice is a proposal for the demo, a new experiment's or period's first shift:
        look at the run before relying on it."""
        h = qa_histograms
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(h.c.run, h.c.detector, h.c.name, h.c.entries, qa_runs.c.run_type,
                          qa_runs.c.beam_energy)
                .join(qa_runs, (qa_runs.c.exp == h.c.exp) & (qa_runs.c.run == h.c.run))
                .where(h.c.exp == exp)
                .order_by(h.c.run)
            ).all()  # fmt: skip
            starts = period_starts(conn, exp)
        bad = {r.run for r in self.runs.select(exp=exp) if "BAD" in r.dq.values()}
        per_class: dict[ReferenceKey, dict[int, dict[tuple[str, str], float]]] = {}
        for r in rows:
            key = (r.run_type, r.beam_energy, period_of(starts, r.run))
            runs = per_class.setdefault(key, {})
            runs.setdefault(r.run, {})[(r.detector, r.name)] = r.entries
        floors: dict[tuple[str, str], float] = {}
        chosen: dict[ReferenceKey, int] = {}
        for run_class, runs in per_class.items():
            keys = sorted({k for hs in runs.values() for k in hs})
            for k in keys:
                if k not in floors:
                    floors[k] = (
                        self.reference_defaults(*k)[2].min_entries
                        if min_entries is None
                        else min_entries
                    )

            above = {
                run: sum(hs.get(k, 0.0) >= floors[k] for k in keys) for run, hs in runs.items()
            }
            full = [run for run, n in above.items() if n == len(keys) and run not in bad]
            chosen[run_class] = full[0] if full else max(above, key=lambda run: (above[run], -run))
        return chosen

    @staticmethod
    def reference_defaults(detector: str, name: str) -> tuple[str, str, Thresholds]:
        """Method, options and thresholds of QA histogram ``detector/name`` as defined in
        :data:`b2calib.qa.monitoring.QA_HISTOGRAMS` (its minimum entry count), else chi2 UU
        and :class:`~b2calib.qa.Thresholds`' defaults."""
        from b2calib.qa.monitoring import QA_HISTOGRAMS

        d = QA_HISTOGRAMS.get((detector, name))
        if d is None:
            return "chi2", "UU", Thresholds()
        return d.method, d.options, Thresholds(min_entries=d.min_entries)

    def reference(
        self,
        detector: str,
        name: str,
        run_class: RunClass = ("physics", "4S"),
        exp: int | None = None,
        period: int | None = None,
    ) -> Reference | None:
        """The reference of QA histogram ``detector/name`` for the runs of ``run_class``
        (run type, beam energy) of experiment ``exp`` (None: the newest experiment that has
        one) and the QA period starting at run ``period`` (None: the latest period that has
        one), if one is set."""
        found = [
            r
            for r in self.references(exp).values()
            if (r.detector, r.name, r.run_class) == (detector, name, tuple(run_class))
            and (period is None or r.period == period)
        ]
        return max(found, key=lambda r: (r.exp, r.period)) if found else None

    def reference_of(self, exp: int, run: int, detector: str, name: str) -> Reference | None:
        """The reference run (exp, run)'s histogram ``detector/name`` is compared with: the
        one of the run's experiment, class and QA period, if one is set."""
        with self.db.read() as conn:
            run_class = self.runs.run_class(conn, exp, run)
            period = period_of(period_starts(conn, exp), run)
        return self.reference(detector, name, run_class, exp, period)

    def references(
        self, exp: int | None = None
    ) -> dict[tuple[str, str, int, str, str, int], Reference]:
        """The QA histograms' references of experiment ``exp`` (all when None): {(detector,
        name, exp, run type, beam energy, period): ...} (period: the first run of the QA
        period, 0 for the experiment's first)."""
        t = qa_references
        with self.db.read() as conn:
            rows = conn.execute(sa.select(t).where(*run_range(t, exp, None, None))).all()
        return {
            (r.detector, r.name, r.exp, r.run_type, r.beam_energy, r.period): _reference(r)
            for r in rows
        }

    # -- comparisons -------------------------------------------------------------------------

    def compare(self, keys: Sequence[tuple[int, int]]) -> None:
        """Compare the QA histograms of runs ``keys`` (exp, run) with the references of their
        experiment, class and QA period (each reference decoded once) and replace each run's
        stored comparisons, one transaction per run. A histogram with no reference for its
        run's experiment, class and period is not compared (:meth:`AutoStatus.evidence
        <b2calib.qa.store.status.AutoStatus.evidence>` says so)."""
        refs = self.references()
        ref_hists: dict[tuple[int, int, str, str], hist.Hist] = {}
        starts: dict[int, list[int]] = {}
        t = qa_comparisons
        for exp, run in keys:
            results = []
            with self.db.read() as conn:
                run_class = self.runs.run_class(conn, exp, run)
                if exp not in starts:
                    starts[exp] = period_starts(conn, exp)
                period = period_of(starts[exp], run)
                for det, name in self.keys(exp, run):
                    ref = refs.get((det, name, exp, *run_class, period))
                    if ref is None:
                        continue
                    h = self._histogram(conn, exp, run, det, name)
                    where = (ref.exp, ref.run, det, name)
                    if where not in ref_hists:
                        ref_hists[where] = self._histogram(conn, ref.exp, ref.run, det, name)
                    try:
                        if (exp, run) == (ref.exp, ref.run):
                            c = _the_reference(h, ref)
                        else:
                            c = compare(
                                h,
                                ref_hists[where],
                                _method(ref.method),
                                ref.options,
                                ref.thresholds,
                            )
                    except ConfigError as err:
                        raise QAError(
                            f"QA histogram {det}/{name} of run ({exp}, {run}) cannot be "
                            f"compared with its reference run ({ref.exp}, {ref.run}): {err}"
                        ) from err
                    results.append(
                        dict(
                            exp=exp,
                            run=run,
                            detector=det,
                            name=name,
                            reference_exp=ref.exp,
                            reference_run=ref.run,
                            result=json.dumps(c.as_dict(), sort_keys=True),
                            status=c.status.name,
                            evaluated=now(),
                        )
                    )
            with self.db.write() as conn:
                conn.execute(t.delete().where(t.c.exp == exp, t.c.run == run))
                if results:
                    conn.execute(t.insert(), results)
                self.db.log(conn, "compare_qa", None, exp=exp, run=run, comparisons=len(results))

    def comparisons(self, exp: int, run: int) -> list[StoredComparison]:
        """One run's stored comparisons, by detector and histogram."""
        t = qa_comparisons
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(t).where(t.c.exp == exp, t.c.run == run).order_by(t.c.detector, t.c.name)
            ).all()
        return [
            StoredComparison(
                r.exp,
                r.run,
                r.detector,
                r.name,
                r.reference_exp,
                r.reference_run,
                Comparison.from_dict(json.loads(r.result)),
            )
            for r in rows
        ]

    def comparison_statuses(
        self, *, exp: int | None = None, first: int | None = None, last: int | None = None
    ) -> list[tuple[int, int, str, str]]:
        """(exp, run, detector, status name) of every stored comparison of the runs
        selected."""
        c = qa_comparisons
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(c.c.exp, c.c.run, c.c.detector, c.c.status).where(
                    *run_range(c, exp, first, last)
                )
            ).all()
        return [(r.exp, r.run, r.detector, r.status) for r in rows]

    def worst_comparisons(
        self, *, exp: int | None = None, first: int | None = None, last: int | None = None
    ) -> list[tuple[int, int, str, str]]:
        """(exp, run, detector, worst status name) of each (run, detector) selected that has
        stored comparisons, aggregated in the database (one row per run and detector)."""
        c = qa_comparisons
        rank = sa.case({s.name: int(s) for s in QAStatus}, value=c.c.status, else_=-1)
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(c.c.exp, c.c.run, c.c.detector, sa.func.max(rank))
                .where(*run_range(c, exp, first, last))
                .group_by(c.c.exp, c.c.run, c.c.detector)
            ).all()
        names = {int(s): s.name for s in QAStatus}
        return [(r[0], r[1], r[2], names[r[3]]) for r in rows if r[3] in names]


def _reference(row: Any) -> Reference:
    return Reference(
        row.detector,
        row.name,
        row.exp,
        row.run,
        row.method,
        row.options,
        Thresholds(row.min_entries, row.p_warning, row.p_error),
        row.run_type,
        row.beam_energy,
        row.period,
    )


def __dir__() -> list[str]:
    return __all__
