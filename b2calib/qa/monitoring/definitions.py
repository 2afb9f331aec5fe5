"""What the monitoring numbers and QA histograms are: their definitions and one run's results.

* A :class:`VariableDef` names a monitoring variable, the detector (or system) it belongs to, its
  unit and meaning; a :class:`MonitoringValue` is its value in one run, with its error.
* A :class:`HistogramDef` fixes a QA histogram's binning (so that runs compare with each other),
  the skim whose output holds it and how it is compared with its reference.
* A :class:`RunQA` holds one run's values and QA histograms, the files left out and why numbers
  are missing.

Detector names are those of :data:`b2calib.geometry.DETECTORS`, plus the two systems of
:data:`SYSTEMS`. Variable names are dotted, the skim's short name (:data:`SKIM_PREFIX`) first:
``mumu.cdc_hits_per_track``; a variable of several skims has none (``hadron_bhabha_ratio``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import hist
import numpy as np
import numpy.typing as npt

from b2calib.engine import SkippedFile
from b2calib.engine.fill import fill_1d
from b2calib.exceptions import QAError

__all__ = [
    "SKIM_PREFIX",
    "SYSTEMS",
    "HistogramDef",
    "MonitoringValue",
    "RunQA",
    "VariableDef",
]

#: Systems that are not detectors: the beams (energy, luminosity) and the tracking.
SYSTEMS: tuple[str, ...] = ("BEAM", "TRACKING")
#: The short name of each skim that starts the names of its variables.
SKIM_PREFIX: dict[str, str] = {
    "hlt_mumu_2trk": "mumu",
    "hlt_bhabha": "bhabha",
    "hlt_gamma_gamma": "gamma_gamma",
    "hlt_hadron": "hadron",
    "cosmic": "cosmic",
}


@dataclass(frozen=True)
class VariableDef:
    """One monitoring variable's definition.

    Attributes
    ----------
    name
        Dotted name, the skim first (``mumu.cdc_hits_per_track``); ``hadron_bhabha_ratio``.
    detector
        A name of :data:`b2calib.geometry.DETECTORS` or of :data:`SYSTEMS`.
    reference
        The expected value where one is known, else None.
    judged
        Whether the variable is judged against the trend of its class (a GOOD band, a
        status, part of its detector's automatic status). False for a number that is shown,
        plotted and used, but whose run-to-run spread says nothing about the run's quality:
        the integrated luminosity of a run (``bhabha.lumi_pb``) depends on how long the run
        was; what is judged is its agreement with the recorded luminosity
        (``bhabha.lumi_recorded_ratio``). A variable not judged has no band, the status NONE,
        and no part in the automatic status or its evidence.
    """

    name: str
    detector: str
    unit: str
    description: str
    reference: float | None = None
    judged: bool = True


@dataclass(frozen=True)
class MonitoringValue:
    """The value of a monitoring variable in one run, with its error."""

    name: str
    detector: str
    value: float
    error: float
    unit: str = ""


@dataclass(frozen=True)
class HistogramDef:
    """A QA histogram's definition: fixed binning (``bins``: number, low, high) so that runs
    compare with each other; ``method``/``options`` for :func:`b2calib.qa.compare`;
    ``min_entries``: the minimum entry count for a verdict (the database's default threshold
    when a reference is set). Its collector fills it as ``"<detector>/<name>"`` in the output
    of ``skim``."""

    detector: str
    name: str
    title: str
    method: str = "chi2"
    options: str = "UU"
    bins: tuple[int, float, float] = (1, 0.0, 1.0)
    skim: str = "hlt_mumu_2trk"
    #: Fewer entries than this (in the run or in its reference) give no verdict (TOO_FEW).
    min_entries: float = 100.0

    @property
    def output_name(self) -> str:
        """The histogram's name in its skim's output: ``"<detector>/<name>"``."""
        return f"{self.detector}/{self.name}"

    def empty(self) -> hist.Hist:
        """An empty histogram of this definition (Int64 storage)."""
        n, lo, hi = self.bins
        return hist.Hist(
            hist.axis.Regular(n, lo, hi, name="x", label=self.title),
            storage=hist.storage.Int64(),
            name=self.output_name,
        )

    def filled(self, values: npt.ArrayLike) -> hist.Hist:
        """A histogram of this definition filled with ``values`` (one entry each)."""
        h = self.empty()
        fill_1d(np.asarray(h.view(flow=True)), np.asarray(values, dtype=np.float64), self.bins)
        return h


@dataclass
class RunQA:
    """Monitoring variables and QA histograms of one run.

    Attributes
    ----------
    histograms
        Key (detector, name) of :data:`~b2calib.qa.monitoring.QA_HISTOGRAMS`; unweighted (Int64
        storage).
    skipped
        Files of this run left out of the event loop (unreadable), with why.
    notes
        Numbers that could not be computed, and why (a fit that did not converge ...).
    """

    exp: int
    run: int
    variables: list[MonitoringValue]
    histograms: dict[tuple[str, str], hist.Hist]
    skipped: list[SkippedFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def variable(self, name: str) -> MonitoringValue:
        """The value of the variable ``name`` (:class:`QAError` when not computed)."""
        for v in self.variables:
            if v.name == name:
                return v
        raise QAError(
            f"run ({self.exp}, {self.run}): no monitoring variable {name!r}; "
            f"computed: {', '.join(v.name for v in self.variables) or 'none'}"
        )


def __dir__() -> list[str]:
    return __all__
