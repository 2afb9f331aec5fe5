"""The automatic status of a (run, detector): evidence for the shifter, never a flag.

It is the worst of the run's histogram comparisons with their references and of its monitoring
variables' deviations from their trend (see :meth:`b2calib.qa.store.runs.Runs.trend`);
:data:`~b2calib.qa.store.runs.NO_STATUS` when there is no evidence.
"""

from __future__ import annotations

from collections.abc import Iterable

from b2calib.db import Database
from b2calib.geometry import DETECTORS
from b2calib.qa.compare import QAStatus
from b2calib.qa.store.histograms import Histograms
from b2calib.qa.store.runs import NO_STATUS, Runs

__all__ = ["AutoStatus"]


def _worst(statuses: Iterable[str]) -> str:
    ranked = [QAStatus[x] for x in statuses if x != NO_STATUS]
    return max(ranked).name if ranked else NO_STATUS


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

    def evaluate(self, exp: int, run: int) -> dict[str, str]:
        """Compare each QA histogram of a run with its reference, store the results and
        return the run's automatic status per detector (see :meth:`get`)."""
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
        """The automatic status of each detector of a run: the worst of its histograms'
        comparisons and of its monitoring variables' trend statuses (the trend is taken over
        the runs of its experiment and run type). :data:`NO_STATUS` when there is no evidence."""
        return self.grid(exp=exp, first=run, last=run).get(
            (exp, run), dict.fromkeys(DETECTORS, NO_STATUS)
        )

    def grid(
        self,
        *,
        exp: int | None = None,
        first: int | None = None,
        last: int | None = None,
    ) -> dict[tuple[int, int], dict[str, str]]:
        """Automatic status per detector of every run selected (see :meth:`get`).

        A variable is judged against its trend over the runs of the same experiment and run
        type (physics runs with physics runs, cosmics with cosmics), so a run's status does not
        depend on the range selected.
        """
        evidence: dict[tuple[int, int], dict[str, list[str]]] = {}
        runs = self.runs.select(exp=exp, first=first, last=last)
        for r in runs:
            evidence[r.key] = {d: [] for d in DETECTORS}
        for e, run, det, compared in self.histograms.comparison_statuses(
            exp=exp, first=first, last=last
        ):
            if (e, run) in evidence and det in DETECTORS:
                evidence[(e, run)][det].append(compared)
        for det, keys, status in self.runs.variable_statuses(
            sorted({r.exp for r in runs})
        ).values():
            if det not in DETECTORS:
                continue
            for key, st in zip(keys, status, strict=True):
                if key in evidence:
                    evidence[key][det].append(str(st))
        return {k: {d: _worst(v) for d, v in per.items()} for k, per in evidence.items()}


def __dir__() -> list[str]:
    return __all__
