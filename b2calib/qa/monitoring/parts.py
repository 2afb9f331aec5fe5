"""Declaring a detector's QA: the :class:`QAPart` and the toolkit its methods use.

The monitoring of a skim is composed of parts. A part belongs to one detector (or system),
declares

* ``detector``; ``skim``, the skim whose collector runs its :meth:`~QAPart.fill` (None: the
  part only computes, from what the skims' collectors and other parts fill); where its variables
  are listed, ``order``, has a default (:attr:`~QAPart.order`);
* ``variables`` and ``histograms``: its :class:`~b2calib.qa.monitoring.VariableDef` and
  :class:`~b2calib.qa.monitoring.HistogramDef` (QA histograms are filled under their
  :attr:`~b2calib.qa.monitoring.HistogramDef.output_name` in the output of their skim);

and implements

* :meth:`~QAPart.branches`: what it reads of the skim's files beyond what the skim's collector
  reads anyway (the event number; for ``hlt_mumu_2trk`` the helix parameters, charges and hit
  counts of the tracks);
* :meth:`~QAPart.fill`: histograms of one chunk of the skim's selected events, mergeable with
  ``+`` (counts; ``Mean`` storage for means, see :func:`mean_histogram`);
* :meth:`~QAPart.compute`: its variables' values in one run, from the histograms of every skim
  of the run (:class:`RunHistograms`; a missing histogram gives no value, never a made-up one).

A part is a frozen dataclass, so that the collectors, which carry their parts, pickle to worker
processes; its class, ``version`` and fields are part of the collectors' cache key: bump
``version`` when its logic changes. A part is used when the files have its detector's data
(:attr:`~QAPart.requires`); the systems' parts always are.

Parts are registered with :func:`b2calib.qa.monitoring.register` in a process, or by a package
through the ``b2calib.qa`` entry-point group (b2calib's own come from the ``qa.py`` of each
package of :mod:`b2calib.detectors`). Two parts may not declare the same variable or QA
histogram, nor fill the same histogram name in one skim.

Listing order
-------------
Variables are listed (:data:`~b2calib.qa.monitoring.VARIABLES`,
:attr:`~b2calib.qa.monitoring.RunQA.variables`, the QAM) by the ``order`` of their parts, parts
of equal order in the order they were registered (a package's in the order of its list), and a
part's variables as it declares them. The listing is cut into blocks (:data:`LISTING_BLOCKS`):
one per skim, and ``"run"`` for variables of several skims after the dimuon block; within a
block the parts go in detector order (:data:`LISTING`): ``listing_order(block, detector)``;
``listing_order(block)`` comes after every detector's part of the block (the PXD hot pixels
follow the occupancies of every detector).

Example
-------
The share of the SVD clusters of dimuon events that are on a track, as
``b2calib/detectors/svd/qa.py`` would declare it (and list it in its ``qa_parts()``)::

    @dataclass(frozen=True)
    class SVDOnTrackFraction(QAPart[DimuonEvents]):
        detector = "SVD"
        skim = "hlt_mumu_2trk"
        variables = (VariableDef("mumu.svd_on_track_fraction", "SVD", "", "on-track clusters"),)

        def branches(self) -> dict[str, str]:
            return {"SVDClusters_m_trackIndex": "var * int16"}

        def fill(self, events: DimuonEvents) -> Histograms:
            on = flat(events.events, "SVDClusters_m_trackIndex", np.int64) >= 0
            return {"mean/svd_on_track": mean_histogram(on)}

        def compute(self, run: RunHistograms) -> list[MonitoringValue]:
            name = "mumu.svd_on_track_fraction"
            return self.mean_value(run, self.skim, "mean/svd_on_track", name)
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

import awkward as ak
import hist
import numpy as np
import numpy.typing as npt

from b2calib.engine.fill import fill_1d
from b2calib.exceptions import ConfigError
from b2calib.fit.histstats import mean_of
from b2calib.geometry import B_FIELD_T, DETECTORS
from b2calib.qa.monitoring.definitions import (
    SKIM_PREFIX,
    HistogramDef,
    MonitoringValue,
    VariableDef,
)

__all__ = [
    "B_FACTOR",
    "EXT_HIT_BRANCHES",
    "LISTING",
    "LISTING_BLOCKS",
    "OCCUPANCY_SKIMS",
    "DimuonEvents",
    "ExtHits",
    "Histograms",
    "Occupancy",
    "QAPart",
    "RunHistograms",
    "SkimEvents",
    "TrackHits",
    "count_histogram",
    "event_index",
    "flat",
    "listing_order",
    "mean_histogram",
    "occupancy",
]

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
#: Histograms by name: what a part fills.
Histograms = dict[str, hist.Hist]

#: ``1 / R[cm] = B_FACTOR / pt[GeV]`` in the solenoid's field: ``pt = |B_FACTOR / omega|``.
B_FACTOR = 0.0029979246 * B_FIELD_T
#: The extrapolation hits of the tracks, read by the parts of the detectors the tracks cross.
EXT_HIT_BRANCHES: dict[str, str] = {
    "ExtHits_m_detectorID": "var * int8",
    "ExtHits_m_copyID": "var * int32",
    "ExtHits_m_trackIndex": "var * int16",
}
#: Detectors and systems in the order of their parts within a block of the listing.
LISTING: tuple[str, ...] = (*DETECTORS, "TRACKING", "BEAM")
#: The blocks of the listing, in order: a skim's, or ``"run"``: variables of several skims.
LISTING_BLOCKS: tuple[str, ...] = (
    "hlt_mumu_2trk",
    "run",
    "hlt_bhabha",
    "hlt_gamma_gamma",
    "hlt_hadron",
    "cosmic",
)
#: The skims whose occupancies (objects per event) are monitored.
OCCUPANCY_SKIMS: tuple[str, ...] = ("hlt_hadron", "cosmic")


def listing_order(block: str, detector: str | None = None) -> int:
    """The ``order`` of a detector's (or system's) part in a block of :data:`LISTING_BLOCKS`:
    ``10 (1 + block index) + position in`` :data:`LISTING`; without a detector, after every
    detector's part of the block."""
    if block not in LISTING_BLOCKS:
        raise ConfigError(f"unknown listing block {block!r}; known: {', '.join(LISTING_BLOCKS)}")
    if detector is not None and detector not in LISTING:
        raise ConfigError(f"unknown detector {detector!r}; known: {', '.join(LISTING)}")
    position = len(LISTING) if detector is None else LISTING.index(detector)
    return 10 * (1 + LISTING_BLOCKS.index(block)) + position


# ------------------------------------------------------------------------------- filling
def mean_histogram(values: npt.ArrayLike) -> hist.Hist:
    """Count, mean and variance of ``values`` (Mean storage: exact and mergeable)."""
    h = hist.Hist(hist.axis.Integer(0, 1, name="x"), storage=hist.storage.Mean())
    v = np.asarray(values, dtype=np.float64)
    if len(v):
        h.fill(np.zeros(len(v), dtype=np.int64), sample=v)
    return h


def count_histogram(bins: tuple[int, float, float], values: npt.ArrayLike) -> hist.Hist:
    """A regular count histogram (``bins``: number, low, high) of ``values``."""
    n, lo, hi = bins
    h = hist.Hist(hist.axis.Regular(n, lo, hi, name="x"), storage=hist.storage.Int64())
    fill_1d(h.view(flow=True), np.asarray(values, dtype=np.float64), bins)
    return h


def flat(events: ak.Array, branch: str, dtype: Any = np.float64) -> npt.NDArray[Any]:
    """The objects of a jagged branch of all events, flattened, as ``dtype``."""
    return np.asarray(ak.to_numpy(ak.flatten(events[branch])), dtype=dtype)


def event_index(events: ak.Array, branch: str) -> I64:
    """The event (row) of every object of a jagged branch, as :func:`flat` orders them."""
    counts = np.asarray(ak.to_numpy(ak.num(events[branch])), dtype=np.int64)
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


class ExtHits(NamedTuple):
    """The extrapolation hits of the selected tracks, flat: event, detector id
    (:data:`b2calib.geometry.DETECTOR_ID`), copy (module, strip ...) and track of each."""

    event: I64
    detector: I64
    copy: I64
    track: I64


class SkimEvents:
    """A chunk of a skim's events as the parts see them: ``events``, the selected events (every
    event of the chunk, but in the dimuon skim), with the branches the parts asked for."""

    def __init__(self, events: ak.Array) -> None:
        self.events = events

    def __len__(self) -> int:
        return len(self.events)


class DimuonEvents(SkimEvents):
    """Dimuon events (``hlt_mumu_2trk``): events with exactly two opposite-charge tracks.

    ``tracks`` holds the helix parameters (``d0``, ``phi0``, ``omega``, ``z0``, ``tanLambda``)
    of both tracks of each event, flat, two per event in event order; :attr:`ext_hits` their
    extrapolation hits (computed once, for the parts that read :data:`EXT_HIT_BRANCHES`).
    """

    def __init__(self, events: ak.Array, tracks: Mapping[str, F]) -> None:
        super().__init__(events)
        self.tracks = tracks

    @functools.cached_property
    def ext_hits(self) -> ExtHits:
        """The extrapolation hits of the selected events' tracks."""
        ev = self.events
        return ExtHits(
            event_index(ev, "ExtHits_m_detectorID"),
            flat(ev, "ExtHits_m_detectorID", np.int64),
            flat(ev, "ExtHits_m_copyID", np.int64),
            flat(ev, "ExtHits_m_trackIndex", np.int64),
        )


# ----------------------------------------------------------------------------- computing
@dataclass
class RunHistograms:
    """One run's histograms as the parts compute their variables from them.

    Attributes
    ----------
    outputs
        Histograms per skim, as the collectors fill them (a skim without data is missing).
    ecms_nominal_gev
        The run's nominal collision energy (None: unknown).
    prescales
        Per process (``hadron``, ``bhabha``, ...), from the files' metadata; missing: 1.
    notes
        Why numbers are missing (:meth:`note`).
    recorded_lumi_pb
        The integrated luminosity the run registry recorded for the run (pb^-1,
        :attr:`b2calib.runs.Run.lumi_pb`); None: unknown.
    """

    exp: int
    run: int
    outputs: Mapping[str, Mapping[str, hist.Hist]]
    ecms_nominal_gev: float | None = None
    prescales: Mapping[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    recorded_lumi_pb: float | None = None

    @property
    def key(self) -> str:
        """``"run (exp, run)"``, how the notes name the run."""
        return f"run ({self.exp}, {self.run})"

    def get(self, skim: str, name: str) -> hist.Hist | None:
        """The histogram ``name`` of ``skim``, None when not filled."""
        return self.outputs.get(skim, {}).get(name)

    def prescale(self, process: str) -> float:
        """The prescale (fraction of the events kept) of a process; 1 when not known."""
        return self.prescales.get(process, 1.0)

    def note(self, text: str) -> None:
        """Say why a number is missing (prefixed with the run)."""
        self.notes.append(f"{self.key}: {text}")


# ---------------------------------------------------------------------------------- parts
EventsT = TypeVar("EventsT", bound=SkimEvents)


class QAPart(abc.ABC, Generic[EventsT]):
    """What a detector (or system) contributes to the monitoring: subclass it as a frozen
    dataclass (see the module documentation).

    Attributes
    ----------
    detector
        A name of :data:`b2calib.geometry.DETECTORS` or of
        :data:`~b2calib.qa.monitoring.SYSTEMS`.
    skim
        The skim whose collector runs :meth:`fill`; None: the part only computes.
    version
        Bump it when the part's logic changes (the collectors' cache key).
    """

    detector: str
    skim: str | None = None
    version: ClassVar[int] = 1

    @property
    def order(self) -> float:
        """Where the part's variables are listed: by default in the block of its skim (the
        ``"run"`` block without a skim) at its detector's place (:func:`listing_order`); a part
        of a skim without a block of its own declares it."""
        return listing_order(self.skim or "run", self.detector)

    @property
    def variables(self) -> tuple[VariableDef, ...]:
        """The variables :meth:`compute` gives, in their listing order."""
        return ()

    @property
    def histograms(self) -> tuple[HistogramDef, ...]:
        """The QA histograms :meth:`fill` fills (compared with references)."""
        return ()

    @property
    def requires(self) -> tuple[str, ...]:
        """Detectors whose data the part reads: it is left out when the files lack one.
        Default: its detector, nothing for a system."""
        return (self.detector,) if self.detector in DETECTORS else ()

    def branches(self) -> dict[str, str]:
        """Branches to read, with their types, beyond those of the skim's collector."""
        return {}

    def fill(self, events: EventsT) -> Histograms:
        """Histograms of one chunk of the skim's selected events."""
        return {}

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        """The values of the part's variables in one run (none when their histograms are
        missing or too empty; say why with :meth:`RunHistograms.note`)."""
        return []

    def identity(self) -> dict[str, Any]:
        """What identifies the part's output: class, version and configuration."""
        cls = type(self)
        cfg: dict[str, Any] = dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}
        return {
            "part": f"{cls.__module__}.{cls.__qualname__}",
            "version": cls.version,
            "config": cfg,
        }

    def describe(self) -> str:
        """The part in messages: its class, detector and skim."""
        return f"QA part {type(self).__qualname__} ({self.detector}, {self.skim or 'no skim'})"

    def value(self, name: str, value: float, error: float) -> MonitoringValue:
        """The value of the declared variable ``name`` (its detector and unit attached)."""
        for d in self.variables:
            if d.name == name:
                return MonitoringValue(name, d.detector, float(value), float(error), d.unit)
        raise ConfigError(f"{self.describe()} computes {name!r}, which it does not declare")

    def mean_value(
        self, run: RunHistograms, skim: str, name: str, variable: str
    ) -> list[MonitoringValue]:
        """The variable as the mean of the one-bin ``Mean`` histogram ``name`` of ``skim`` with
        the error ``std / sqrt(n)``; nothing below two entries."""
        h = run.get(skim, name)
        if h is None:
            return []
        m, e, n = mean_of(h)
        return [self.value(variable, m, e)] if n > 1 else []


@dataclass(frozen=True)
class Occupancy(QAPart[SkimEvents]):
    """Objects per event of one detector in an all-events skim of :data:`OCCUPANCY_SKIMS`: the
    mean of a per-event counter branch, ``<skim prefix>.<name>_per_event`` (the occupancy
    summaries; the only numbers of cosmic runs).

    Parameters
    ----------
    detector
        The detector.
    counter
        Its per-event object count (an ``int32`` branch such as ``nPXDDigits``).
    name, what
        The objects, in the variable's name (``pxd_digits``) and for humans (``PXD digits``).
    skim
        ``hlt_hadron`` or ``cosmic``.
    """

    detector: str
    counter: str
    name: str
    what: str
    skim: str = "hlt_hadron"

    def __post_init__(self) -> None:
        if self.skim not in OCCUPANCY_SKIMS:
            raise ConfigError(
                f"occupancy of {self.detector}: skim {self.skim!r} is not one of "
                f"{', '.join(OCCUPANCY_SKIMS)}"
            )

    @property
    def variables(self) -> tuple[VariableDef, ...]:
        prefix = SKIM_PREFIX[self.skim]
        return (
            VariableDef(
                f"{prefix}.{self.name}_per_event",
                self.detector,
                "",
                f"{self.what} per {prefix} event",
            ),
        )

    def branches(self) -> dict[str, str]:
        return {self.counter: "int32"}

    def fill(self, events: SkimEvents) -> Histograms:
        counts = ak.to_numpy(events.events[self.counter])
        return {f"occupancy/{self.detector}": mean_histogram(counts)}

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        name = f"occupancy/{self.detector}"
        return self.mean_value(run, self.skim, name, self.variables[0].name)


def occupancy(detector: str, counter: str, name: str, what: str) -> tuple[Occupancy, ...]:
    """The :class:`Occupancy` parts of a detector in every skim of :data:`OCCUPANCY_SKIMS`."""
    return tuple(Occupancy(detector, counter, name, what, skim) for skim in OCCUPANCY_SKIMS)


@dataclass(frozen=True)
class TrackHits(QAPart[DimuonEvents]):
    """Hits of one detector per dimuon track, from the track's hit count: the variable
    ``mumu.<detector>_hits_per_track`` (mean) and the QA histogram ``hits_per_track``.

    Parameters
    ----------
    detector
        The detector.
    counter
        The tracks' hit count of the detector (``nCDCHits``: ``TrackFitResults_m_nCDCHits``).
    title
        Of the QA histogram (``CDC hits per dimuon track``).
    bins
        Of the QA histogram.
    description
        Of the variable (default: ``title``).
    """

    detector: str
    counter: str
    title: str
    bins: tuple[int, float, float]
    description: str = ""
    skim = "hlt_mumu_2trk"

    @property
    def variables(self) -> tuple[VariableDef, ...]:
        name = f"mumu.{self.detector.lower()}_hits_per_track"
        return (VariableDef(name, self.detector, "", self.description or self.title),)

    @property
    def histograms(self) -> tuple[HistogramDef, ...]:
        return (HistogramDef(self.detector, "hits_per_track", self.title, bins=self.bins),)

    def branches(self) -> dict[str, str]:
        return {f"TrackFitResults_m_{self.counter}": "var * int16"}

    def fill(self, events: DimuonEvents) -> Histograms:
        n = flat(events.events, f"TrackFitResults_m_{self.counter}")
        (h,) = self.histograms
        return {h.output_name: h.filled(n), f"mean/{self.detector.lower()}_hits": mean_histogram(n)}

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        name = f"mean/{self.detector.lower()}_hits"
        return self.mean_value(run, "hlt_mumu_2trk", name, self.variables[0].name)


def __dir__() -> list[str]:
    return __all__
