"""Run-level monitoring variables and QA histograms (the Belle II "MiraBelle" idea).

Collectors run over the calibration skims on the engine (:func:`b2calib.engine.collect`, in
process, in a process pool or on Dask) and fill histograms per run, mergeable with ``+``; every
monitoring number is then computed from those histograms, never from arrays kept in memory:

===================  ======================================================================
``hlt_mumu_2trk``    :class:`MuMuCollector`: hits per track (PXD, SVD, CDC), TOP digits and
                     ARICH photons per track, impact-parameter resolutions, good-muon
                     fraction (KLM), dimuon mass; QA histograms of those and of digit
                     charges, times and layers
``hlt_bhabha``       :class:`BhabhaCollector`: event count (Bhabha luminosity,
                     hadron/Bhabha ratio), ECL E/p and cluster energy of the Bhabha
                     electrons
``hlt_gamma_gamma``  :class:`GammaGammaCollector`: events with the ``GG`` flag
                     (gamma-gamma luminosity)
``hlt_hadron``,      :class:`OccupancyCollector`: event count and objects per event of every
``cosmic``           detector (the occupancy summaries; the only numbers of cosmic runs)
===================  ======================================================================

:func:`run_qa_from_outputs` turns one run's histograms into a :class:`RunQA`;
:func:`collect_qa` does it all for a folder of skims or a :class:`~b2calib.engine.Dataset`.

Definitions (what the numbers mean)
-----------------------------------
* Detector names are those of :data:`b2calib.geometry.DETECTORS`, plus two systems
  (:data:`SYSTEMS`): ``BEAM`` (collision energy and luminosity: dimuon mass, hadron/Bhabha
  ratio) and ``TRACKING`` (impact-parameter resolutions).
* Means per track or event carry the error ``std / sqrt(n)``; they come from ``Mean``-storage
  histograms (count, mean, variance: exact, mergeable).
* ``mumu.d0_resolution``: sigma68 of ``(d0_1 + d0_2 - b.(n_1 + n_2)) / sqrt(2)`` over dimuon
  pairs, where ``n_i = (sin phi0_i, -cos phi0_i)`` and ``b`` is the transverse beam-spot
  position fitted (least squares of ``d0 = b.n``) to all dimuon tracks of the same work item;
  the two tracks come from one vertex, so the vertex spread cancels in the sum. Work items with
  fewer than :data:`MIN_BEAMSPOT_TRACKS` tracks do not contribute. ``mumu.z0_resolution``:
  sigma68 of ``(z0_1 - z0_2) / sqrt(2)``. Both in micrometres.
* sigma68 is half the width of the central 68.27 % interval (sigma for a Gaussian), from the
  quantiles of the histogram (linear within a bin). Its error is the asymptotic (Bahadur)
  variance of the two sample quantiles, ``[p1 q1 / f1^2 + p2 q2 / f2^2 - 2 p1 (1 - p2) /
  (f1 f2)] / (4 n)`` with ``q = 1 - p``, the densities ``f`` at the quantiles taken from the
  slope of the histogram's quantile function between ``p - 0.05`` and ``p + 0.05``.
* ``mumu.good_muon_fraction``: among dimuon tracks extrapolated through at least
  :data:`MIN_KLM_CROSSINGS` KLM strips (KLM ExtHits), the fraction whose crossed strips have a
  KLM digit in at least :data:`GOOD_MUON_MATCH` of the cases; error: the standard deviation of
  the fraction's posterior with a flat prior, ``sqrt((k+1)(n-k+1) / ((n+2)^2 (n+3)))`` (never
  zero, also when every muon is good).
* ``mumu.top_digits_per_track``: TOP digits in the module the track crosses (its TOP ExtHit),
  noise included; ``mumu.arich_photons_per_track``: ARICH digits of the event divided by the
  number of tracks with an ARICH ExtHit, for each such track.
* ``mumu.invariant_mass``: the collision energy fitted (iminuit ``BinnedNLL``) to the dimuon
  mass in ``[E - 0.30, E + 0.15]`` GeV around the run's nominal collision energy ``E`` (the
  histogram's mode when unknown). The model is the mass of a pair after initial-state
  radiation, ``sqrt(s) sqrt(1 - x)`` with the photon's energy fraction ``x`` of density
  ``beta x^(beta - 1)`` (``beta = 2 alpha / pi (2 ln(sqrt(s) / m_e) - 1)``, fixed), folded with
  a Gaussian resolution whose width (``mumu.invariant_mass_width``: tracking and beam-energy
  spread) is fitted too. A Crystal Ball peak position, tried first, sat 9 MeV (5 sigma) below
  the true energy: the radiative tail skews the core. ``mumu.invariant_mass_pull``:
  ``(mass - E) / error``.
* ``hadron_bhabha_ratio``: events of the ``hlt_hadron`` skim over events of ``hlt_bhabha``,
  each divided by its process's prescale from the files' metadata, with the error of a ratio
  of two independent Poisson counts. It has no reference value: it depends on the skims'
  efficiencies (Belle II quotes 0.193 for its own selections; the simulator gives ~0.31).
* ``<skim>.pxd_hot_pixels``: PXD pixels that fire in more than :data:`HOT_PIXEL_OCCUPANCY` of
  the run's events of the skim (and at least 3 times; from :data:`MIN_HOT_PIXEL_EVENTS`
  events on), counted on a sparse, mergeable axis of the fired pixels, with a Poisson error
  (conservative); ``<skim>.pxd_hot_pixel_fraction``: the share of the PXD digits they make,
  with a binomial error.
* ``bhabha.lumi_pb``, ``gamma_gamma.lumi_pb`` (system ``BEAM``, pb^-1): the run's integrated
  luminosity ``N / sum_p(prescale_p sigma_vis,p)`` (:func:`lumi_from_count`) from the events
  ``N`` of the selection of :data:`b2calib.skims.LUMI_SELECTIONS`: every ``hlt_bhabha`` event
  (``Bhabha2Trk``), and the ``hlt_gamma_gamma`` events with the ``GG`` flag. The simulator's
  prescales (files' metadata) are fractions of the produced events kept, so ``N`` is divided by
  them; the sum runs over every process that passes the selection (tau pairs make 0.2 % of the
  Bhabha count). The visible cross sections ``sigma_vis,p`` (cross section x selection
  efficiency) are *not* taken from the run's simulation truth: they were measured once on an
  independent simulated sample (:mod:`b2calib.sim.luminosity`, seed
  20190) at the Y(4S) energy and are committed as
  :data:`VISIBLE_CROSS_SECTIONS_NB`; other nominal energies (continuum) scale them with the
  generator's ``cross_section_nb(p, E) / cross_section_nb(p, E_4S)`` (the selections cut on
  energies relative to the beam energy: the efficiency does not depend on it). The error is
  the Poisson error of ``N`` combined in quadrature with the visible cross sections' error
  (< 0.1 %, negligible). No selected event: no value (and a note), never 0 +- 0.
* QA histograms have one entry per independent object (track, event, cluster): the photons of
  one track share its time, so TOP timing is monitored by the mean digit time per track.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import awkward as ak
import hist
import numpy as np
import numpy.typing as npt
import uproot
from iminuit import Minuit, cost
from scipy import special

from b2calib.engine import Collector, Dataset, SkippedFile, collect
from b2calib.engine.fill import fill_1d
from b2calib.exceptions import ConfigError, FileFormatError, QAError
from b2calib.fit.histstats import mean_of, sigma68
from b2calib.geometry import B_FIELD_T, DETECTOR_ID, DETECTORS, klm, vxd
from b2calib.io import METADATA_KEY, FileMetadata
from b2calib.physics import Y4S_ECMS_GEV
from b2calib.runs import RunRegistry
from b2calib.skims import LUMI_SELECTIONS

__all__ = [
    "GOOD_MUON_MATCH",
    "HOT_PIXEL_OCCUPANCY",
    "MIN_BEAMSPOT_TRACKS",
    "MIN_HOT_PIXEL_EVENTS",
    "MIN_KLM_CROSSINGS",
    "QA_HISTOGRAMS",
    "SYSTEMS",
    "VARIABLES",
    "VISIBLE_CROSS_SECTIONS_NB",
    "VISIBLE_CROSS_SECTION_ECMS",
    "BhabhaCollector",
    "GammaGammaCollector",
    "HistogramDef",
    "MonitoringValue",
    "MuMuCollector",
    "OccupancyCollector",
    "RunQA",
    "VariableDef",
    "collect_qa",
    "lumi_from_count",
    "run_qa_from_outputs",
    "sigma68",
]

log = logging.getLogger(__name__)

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Histograms = dict[str, hist.Hist]
RunKey = tuple[int, int]

#: Systems that are not detectors: the beams (energy, luminosity) and the tracking.
SYSTEMS: tuple[str, ...] = ("BEAM", "TRACKING")
#: Work items with fewer dimuon tracks do not measure the d0 resolution (beam-spot fit).
MIN_BEAMSPOT_TRACKS = 20
#: A track counts for the good-muon fraction when it crosses at least this many KLM strips.
MIN_KLM_CROSSINGS = 4
#: A good muon has a KLM digit in at least this fraction of the strips it crosses.
GOOD_MUON_MATCH = 0.8
#: A PXD pixel is hot when it fires in more than this fraction of the events (and 3 times).
HOT_PIXEL_OCCUPANCY = 0.01
#: Fewer events than this (per run and skim) do not look for hot pixels.
MIN_HOT_PIXEL_EVENTS = 200
_BFACTOR = 0.0029979246 * B_FIELD_T  # 1/R[cm] = factor / pt[GeV]
_MUON_MASS = 0.1056583755
_NOMINAL_4S = 10.5794


# ---------------------------------------------------------------------------- definitions
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
    """

    name: str
    detector: str
    unit: str
    description: str
    reference: float | None = None


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
    when a reference is set)."""

    detector: str
    name: str
    title: str
    method: str = "chi2"
    options: str = "UU"
    bins: tuple[int, float, float] = (1, 0.0, 1.0)
    skim: str = "hlt_mumu_2trk"
    #: Fewer entries than this (in the run or in its reference) give no verdict (TOO_FEW).
    min_entries: float = 100.0

    def empty(self) -> hist.Hist:
        """An empty histogram of this definition (Int64 storage)."""
        n, lo, hi = self.bins
        return hist.Hist(
            hist.axis.Regular(n, lo, hi, name="x", label=self.title),
            storage=hist.storage.Int64(),
            name=f"{self.detector}/{self.name}",
        )


def _v(name: str, det: str, unit: str, desc: str, ref: float | None = None) -> VariableDef:
    return VariableDef(name, det, unit, desc, ref)


_OCCUPANCY = {  # detector -> (collection counter branch, what)
    "PXD": ("nPXDDigits", "PXD digits"),
    "SVD": ("nSVDClusters", "SVD clusters"),
    "CDC": ("nCDCHits", "CDC hits"),
    "TOP": ("nTOPDigits", "TOP digits"),
    "ARICH": ("nARICHDigits", "ARICH digits"),
    "ECL": ("nECLClusters", "ECL clusters"),
    "KLM": ("nKLMDigits", "KLM digits"),
}
_OCC_NAME = {
    "PXD": "pxd_digits",
    "SVD": "svd_clusters",
    "CDC": "cdc_hits",
    "TOP": "top_digits",
    "ARICH": "arich_digits",
    "ECL": "ecl_clusters",
    "KLM": "klm_digits",
}

#: Every monitoring variable, by name.
VARIABLES: dict[str, VariableDef] = {
    v.name: v
    for v in (
        _v("mumu.pxd_hits_per_track", "PXD", "", "PXD hits per dimuon track"),
        _v("mumu.svd_hits_per_track", "SVD", "", "SVD clusters per dimuon track (u and v)"),
        _v("mumu.cdc_hits_per_track", "CDC", "", "CDC hits per dimuon track"),
        _v("mumu.top_digits_per_track", "TOP", "", "TOP digits in the module of the track"),
        _v("mumu.arich_photons_per_track", "ARICH", "", "ARICH digits per forward track"),
        _v(
            "mumu.good_muon_fraction",
            "KLM",
            "",
            "dimuon tracks with KLM hits on >= 80 % of their crossed strips",
        ),
        _v("mumu.d0_resolution", "TRACKING", "um", "sigma68 of d0, from dimuon pairs"),
        _v("mumu.z0_resolution", "TRACKING", "um", "sigma68 of z0, from dimuon pairs"),
        _v(
            "mumu.invariant_mass",
            "BEAM",
            "GeV",
            "collision energy fitted to the dimuon mass; the reference is the nominal Y(4S) energy",
            _NOMINAL_4S,
        ),
        _v(
            "mumu.invariant_mass_pull",
            "BEAM",
            "",
            "(fitted dimuon mass - nominal collision energy of the run) / error",
            0.0,
        ),
        _v("mumu.invariant_mass_width", "BEAM", "GeV", "Gaussian width of the dimuon mass peak"),
        _v("hadron_bhabha_ratio", "BEAM", "", "hlt_hadron / hlt_bhabha events, prescales removed"),
        _v("bhabha.lumi_pb", "BEAM", "pb^-1", "integrated luminosity from hlt_bhabha events"),
        _v(
            "gamma_gamma.lumi_pb",
            "BEAM",
            "pb^-1",
            "integrated luminosity from hlt_gamma_gamma events with the GG flag",
        ),
        _v("bhabha.ecl_e_over_p", "ECL", "", "mean E/p of Bhabha tracks with 0.5 < E/p < 1.5"),
        *(
            v
            for skim in ("hadron", "cosmic")
            for v in (
                *(
                    _v(f"{skim}.{_OCC_NAME[d]}_per_event", d, "", f"{what} per {skim} event")
                    for d, (_, what) in _OCCUPANCY.items()
                ),
                _v(
                    f"{skim}.pxd_hot_pixels",
                    "PXD",
                    "",
                    f"PXD pixels firing in > 1 % of {skim} events",
                ),
                _v(
                    f"{skim}.pxd_hot_pixel_fraction",
                    "PXD",
                    "",
                    f"PXD digits on hot pixels ({skim})",
                ),
            )
        ),
    )
}


def _h(
    det: str,
    name: str,
    title: str,
    bins: tuple[int, float, float],
    skim: str = "hlt_mumu_2trk",
    min_entries: float = 100.0,
) -> HistogramDef:
    return HistogramDef(det, name, title, bins=bins, skim=skim, min_entries=min_entries)


#: Every QA histogram, by (detector, name).
QA_HISTOGRAMS: dict[tuple[str, str], HistogramDef] = {
    (d.detector, d.name): d
    for d in (
        _h("PXD", "hits_per_track", "PXD hits per dimuon track", (6, -0.5, 5.5)),
        _h("PXD", "digit_charge", "PXD digit charge in dimuon events (ADU)", (64, 0.0, 256.0)),
        _h("SVD", "hits_per_track", "SVD clusters per dimuon track", (17, -0.5, 16.5)),
        _h("SVD", "cluster_charge", "SVD cluster charge on dimuon tracks (e)", (60, 0, 60000)),
        _h("CDC", "hits_per_track", "CDC hits per dimuon track", (71, -0.5, 70.5)),
        _h("TOP", "digits_per_track", "TOP digits per dimuon track", (80, -0.5, 79.5)),
        _h(
            "TOP",
            "track_time",
            "mean TOP digit time in the track's module - event T0 (ns)",
            (30, 0.0, 30.0),
        ),
        # one entry per dimuon track in the ARICH (forward endcap): ~6 per 100 dimuon events,
        # 90-290 (median 190) per run at events_per_run=3000 (the others: >= 390), so half
        # of the default's 100 entries
        _h(
            "ARICH",
            "photons_per_track",
            "ARICH photons per dimuon track",
            (50, -0.25, 49.75),
            min_entries=50.0,
        ),
        _h("ECL", "e_over_p", "E/p of Bhabha tracks", (75, 0.0, 1.5), "hlt_bhabha"),
        _h(
            "ECL",
            "cluster_energy",
            "ECL cluster energy in Bhabha events (GeV)",
            (40, 0.0, 8.0),
            "hlt_bhabha",
        ),
        _h("KLM", "digit_layer", "KLM digit layer in dimuon events", (16, -0.5, 15.5)),
        _h("KLM", "digits_per_event", "KLM digits per dimuon event", (50, 0.0, 150.0)),
        _h(
            "KLM",
            "matched_fraction",
            "fraction of crossed KLM strips with a digit, per muon",
            (20, 0.0, 1.0),
        ),
        _h("BEAM", "dimuon_mass", "dimuon invariant mass (GeV)", (100, 10.0, 11.0)),
    )
}
_MASS_RANGE = (-0.30, 0.15)
_D0_BINS = (400, -400.0, 400.0)  # um
_Z0_BINS = (400, -800.0, 800.0)  # um


@dataclass
class RunQA:
    """Monitoring variables and QA histograms of one run.

    Attributes
    ----------
    histograms
        Key (detector, name) of :data:`QA_HISTOGRAMS`; unweighted (Int64 storage).
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


# ------------------------------------------------------------------------- histogram helpers
def _qa_hist(det: str, name: str, values: npt.ArrayLike) -> hist.Hist:
    d = QA_HISTOGRAMS[(det, name)]
    h = d.empty()
    fill_1d(np.asarray(h.view(flow=True)), np.asarray(values, dtype=np.float64), d.bins)
    return h


def _mean_hist(values: npt.ArrayLike) -> hist.Hist:
    """Count, mean and variance of ``values`` (Mean storage: exact and mergeable)."""
    h = hist.Hist(hist.axis.Integer(0, 1, name="x"), storage=hist.storage.Mean())
    v = np.asarray(values, dtype=np.float64)
    if len(v):
        h.fill(np.zeros(len(v), dtype=np.int64), sample=v)
    return h


def _regular(bins: tuple[int, float, float], values: npt.ArrayLike) -> hist.Hist:
    n, lo, hi = bins
    h = hist.Hist(hist.axis.Regular(n, lo, hi, name="x"), storage=hist.storage.Int64())
    fill_1d(h.view(flow=True), np.asarray(values, dtype=np.float64), bins)
    return h


def _flat(events: ak.Array, branch: str, dtype: Any = np.float64) -> npt.NDArray[Any]:
    return np.asarray(ak.to_numpy(ak.flatten(events[branch])), dtype=dtype)


def _event_index(events: ak.Array, branch: str) -> I64:
    counts = np.asarray(ak.to_numpy(ak.num(events[branch])), dtype=np.int64)
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


# -------------------------------------------------------------------------------- collectors
def _check_detectors(detectors: Iterable[str]) -> None:
    bad = set(detectors) - set(DETECTORS)
    if bad:
        raise ConfigError(f"unknown detectors {sorted(bad)}; known: {', '.join(DETECTORS)}")


@dataclasses.dataclass(frozen=True)
class MuMuCollector(Collector):
    """Dimuon (``hlt_mumu_2trk``) monitoring: events with exactly two opposite-charge tracks.

    ``detectors``: whose branches to read (those the files have); the tracks are always read.
    """

    detectors: tuple[str, ...] = DETECTORS
    version: ClassVar[int] = 1

    def __post_init__(self) -> None:
        _check_detectors(self.detectors)

    @property
    def branches(self) -> dict[str, str]:
        b = {
            f"TrackFitResults_m_{k}": f"var * {t}"
            for k, t in (
                ("d0", "float32"),
                ("phi0", "float32"),
                ("omega", "float32"),
                ("z0", "float32"),
                ("tanLambda", "float32"),
                ("charge", "int8"),
                ("nCDCHits", "int16"),
                ("nSVDHits", "int16"),
                ("nPXDHits", "int16"),
            )
        }
        dets = set(self.detectors)
        if dets & {"TOP", "ARICH", "KLM"}:
            b |= {
                "ExtHits_m_detectorID": "var * int8",
                "ExtHits_m_copyID": "var * int32",
                "ExtHits_m_trackIndex": "var * int16",
            }
        if "PXD" in dets:
            b["PXDDigits_m_charge"] = "var * int16"
        if "SVD" in dets:
            b |= {
                "SVDClusters_m_clsCharge": "var * float32",
                "SVDClusters_m_trackIndex": "var * int16",
            }
        if "TOP" in dets:
            b |= {
                "TOPDigits_m_moduleID": "var * int8",
                "TOPDigits_m_time": "var * float32",
                "EventT0_m_eventT0": "float32",
            }
        if "ARICH" in dets:
            b["ARICHDigits_m_modID"] = "var * int16"
        if "KLM" in dets:
            b |= {
                f"KLMDigits_m_{k}": f"var * {t}"
                for k, t in (
                    ("subdetector", "int8"),
                    ("section", "int8"),
                    ("sector", "int8"),
                    ("layer", "int8"),
                    ("plane", "int8"),
                    ("strip", "int16"),
                )
            }
        return b

    def collect(self, events: ak.Array) -> Histograms:
        dets = set(self.detectors)
        ntrk = np.asarray(ak.to_numpy(ak.num(events["TrackFitResults_m_d0"])), dtype=np.int64)
        q = ak.to_numpy(
            ak.fill_none(ak.pad_none(events["TrackFitResults_m_charge"], 2, clip=True), 0)
        )
        use = (ntrk == 2) & (q[:, 0] * q[:, 1] < 0) if len(events) else np.zeros(0, bool)
        ev = events[use]
        out: Histograms = {"events": _mean_hist(np.ones(int(use.sum())))}
        # tracks of the selected events: two per event, in event order
        t = {
            k: _flat(ev, f"TrackFitResults_m_{k}")
            for k in ("d0", "phi0", "omega", "z0", "tanLambda")
        }
        for det, key in (("PXD", "nPXDHits"), ("SVD", "nSVDHits"), ("CDC", "nCDCHits")):
            if det in dets:
                n = _flat(ev, f"TrackFitResults_m_{key}")
                out[f"{det}/hits_per_track"] = _qa_hist(det, "hits_per_track", n)
                out[f"mean/{det.lower()}_hits"] = _mean_hist(n)
        out |= self._vertex(t)
        out |= self._mass(t)
        if dets & {"TOP", "ARICH", "KLM"}:
            ext_evt = _event_index(ev, "ExtHits_m_detectorID")
            ext_det = _flat(ev, "ExtHits_m_detectorID", np.int64)
            ext_copy = _flat(ev, "ExtHits_m_copyID", np.int64)
            ext_trk = _flat(ev, "ExtHits_m_trackIndex", np.int64)
        if "PXD" in dets:
            out["PXD/digit_charge"] = _qa_hist(
                "PXD", "digit_charge", _flat(ev, "PXDDigits_m_charge")
            )
        if "SVD" in dets:
            on_track = _flat(ev, "SVDClusters_m_trackIndex", np.int64) >= 0
            charge = _flat(ev, "SVDClusters_m_clsCharge")[on_track]
            out["SVD/cluster_charge"] = _qa_hist("SVD", "cluster_charge", charge)
        if "TOP" in dets:
            mod = _flat(ev, "TOPDigits_m_moduleID", np.int64)
            d_evt = _event_index(ev, "TOPDigits_m_moduleID")
            counts = np.bincount(d_evt * 17 + mod, minlength=17 * len(ev))
            t_sum = np.bincount(
                d_evt * 17 + mod, weights=_flat(ev, "TOPDigits_m_time"), minlength=17 * len(ev)
            )
            sel = ext_det == DETECTOR_ID["TOP"]
            slot = ext_evt[sel] * 17 + ext_copy[sel]
            per_track = counts[slot]
            out["TOP/digits_per_track"] = _qa_hist("TOP", "digits_per_track", per_track)
            out["mean/top_digits"] = _mean_hist(per_track)
            # one entry per track (the photons of a track share its time: not independent)
            has = per_track > 0
            t0 = np.asarray(ak.to_numpy(ev["EventT0_m_eventT0"]), dtype=np.float64)
            t_trk = t_sum[slot[has]] / per_track[has] - t0[ext_evt[sel][has]]
            out["TOP/track_time"] = _qa_hist("TOP", "track_time", t_trk)
        if "ARICH" in dets:
            n_dig = np.asarray(ak.to_numpy(ak.num(ev["ARICHDigits_m_modID"])), dtype=np.float64)
            sel = ext_det == DETECTOR_ID["ARICH"]
            k = np.bincount(ext_evt[sel], minlength=len(ev))
            per_track = (n_dig / np.maximum(k, 1))[ext_evt[sel]]
            out["ARICH/photons_per_track"] = _qa_hist("ARICH", "photons_per_track", per_track)
            out["mean/arich_photons"] = _mean_hist(per_track)
        if "KLM" in dets:
            out |= self._klm(ev, ext_evt, ext_det, ext_copy, ext_trk)
        return out

    @staticmethod
    def _vertex(t: Mapping[str, F]) -> Histograms:
        """Pair residuals of d0 (beam spot of the work item removed) and z0, in um."""
        d0, phi, z0 = t["d0"], t["phi0"], t["z0"]
        nvec = np.column_stack([np.sin(phi), -np.cos(phi)])
        d0h = _regular(_D0_BINS, [])
        if len(d0) >= MIN_BEAMSPOT_TRACKS:
            bs, *_ = np.linalg.lstsq(nvec, d0, rcond=None)
            r = d0 - nvec @ bs
            d0h = _regular(_D0_BINS, (r[0::2] + r[1::2]) / math.sqrt(2.0) * 1e4)
        z = (z0[0::2] - z0[1::2]) / math.sqrt(2.0) * 1e4
        return {"d0_pair": d0h, "z0_pair": _regular(_Z0_BINS, z)}

    @staticmethod
    def _mass(t: Mapping[str, F]) -> Histograms:
        """Dimuon mass (GeV); pairs with a straight track (no field) are left out."""
        with np.errstate(divide="ignore", invalid="ignore"):
            pt = np.abs(_BFACTOR / t["omega"])
            ok = np.isfinite(pt)
            px, py, pz = pt * np.cos(t["phi0"]), pt * np.sin(t["phi0"]), pt * t["tanLambda"]
            e = np.sqrt(px**2 + py**2 + pz**2 + _MUON_MASS**2)
            s = [a[0::2] + a[1::2] for a in (e, px, py, pz)]
            m2 = s[0] ** 2 - s[1] ** 2 - s[2] ** 2 - s[3] ** 2
            good = ok[0::2] & ok[1::2] & (m2 > 0)
        return {"BEAM/dimuon_mass": _qa_hist("BEAM", "dimuon_mass", np.sqrt(m2[good]))}

    @staticmethod
    def _klm(ev: ak.Array, ext_evt: I64, ext_det: I64, ext_copy: I64, ext_trk: I64) -> Histograms:
        cols = [
            _flat(ev, f"KLMDigits_m_{k}", np.int64)
            for k in ("subdetector", "section", "sector", "layer", "plane", "strip")
        ]
        d_evt = _event_index(ev, "KLMDigits_m_layer")
        stride = klm.N_CHANNELS + 1
        fired = np.unique(d_evt * stride + klm.channel(*cols)) if len(d_evt) else d_evt
        sel = ext_det == DETECTOR_ID["KLM"]
        key = ext_evt[sel] * stride + ext_copy[sel]
        matched = np.isin(key, fired)
        trk = ext_evt[sel] * 64 + ext_trk[sel]
        ids, inverse = np.unique(trk, return_inverse=True)
        crossed = np.bincount(inverse, minlength=len(ids))
        hit = np.bincount(inverse, weights=matched, minlength=len(ids))
        counted = crossed >= MIN_KLM_CROSSINGS
        frac = hit[counted] / crossed[counted]
        good = (frac >= GOOD_MUON_MATCH).astype(np.float64)
        return {
            "KLM/digit_layer": _qa_hist("KLM", "digit_layer", cols[3]),
            "KLM/digits_per_event": _qa_hist(
                "KLM", "digits_per_event", ak.to_numpy(ak.num(ev["KLMDigits_m_layer"]))
            ),
            "KLM/matched_fraction": _qa_hist("KLM", "matched_fraction", np.minimum(frac, 0.999)),
            "mean/good_muon": _mean_hist(good),
        }


@dataclasses.dataclass(frozen=True)
class BhabhaCollector(Collector):
    """Bhabha (``hlt_bhabha``): the event count, and E/p and cluster energies when the ECL is
    among ``detectors``."""

    detectors: tuple[str, ...] = DETECTORS
    version: ClassVar[int] = 1

    def __post_init__(self) -> None:
        _check_detectors(self.detectors)

    @property
    def branches(self) -> dict[str, str]:
        b = {"EventMetaData_m_event": "uint32"}
        if "ECL" in self.detectors:
            b |= {
                "TrackFitResults_m_omega": "var * float32",
                "TrackFitResults_m_tanLambda": "var * float32",
                "ECLClusters_m_energy": "var * float32",
                "ECLClusters_m_trackIndex": "var * int16",
            }
        return b

    def collect(self, events: ak.Array) -> Histograms:
        out: Histograms = {"events": _mean_hist(np.ones(len(events)))}
        if "ECL" not in self.detectors:
            return out
        energy = _flat(events, "ECLClusters_m_energy")
        ti = _flat(events, "ECLClusters_m_trackIndex", np.int64)
        c_evt = _event_index(events, "ECLClusters_m_energy")
        omega = _flat(events, "TrackFitResults_m_omega")
        tanl = _flat(events, "TrackFitResults_m_tanLambda")
        ntrk = np.asarray(ak.to_numpy(ak.num(events["TrackFitResults_m_omega"])), dtype=np.int64)
        first = np.concatenate([[0], np.cumsum(ntrk)[:-1]]).astype(np.int64)
        with np.errstate(divide="ignore"):
            p = np.abs(_BFACTOR / omega) * np.sqrt(1.0 + tanl**2)
        on = (ti >= 0) & (ti < ntrk[c_evt]) if len(ti) else np.zeros(0, bool)
        ep = energy[on] / p[first[c_evt[on]] + ti[on]]
        ep = ep[np.isfinite(ep)]
        core = ep[(ep > 0.5) & (ep < 1.5)]
        out["ECL/e_over_p"] = _qa_hist("ECL", "e_over_p", ep)
        out["ECL/cluster_energy"] = _qa_hist("ECL", "cluster_energy", energy)
        out["mean/e_over_p"] = _mean_hist(core)
        return out


@dataclasses.dataclass(frozen=True)
class OccupancyCollector(Collector):
    """Events, and objects per event of each of ``detectors`` (``hlt_hadron``, ``cosmic``)."""

    detectors: tuple[str, ...] = DETECTORS
    version: ClassVar[int] = 1

    def __post_init__(self) -> None:
        _check_detectors(self.detectors)

    @property
    def branches(self) -> dict[str, str]:
        b = {"EventMetaData_m_event": "uint32"} | {
            _OCCUPANCY[d][0]: "int32" for d in self.detectors
        }
        if "PXD" in self.detectors:
            b |= {
                "PXDDigits_m_sensorID": "var * int32",
                "PXDDigits_m_uCellID": "var * int16",
                "PXDDigits_m_vCellID": "var * int16",
            }
        return b

    def collect(self, events: ak.Array) -> Histograms:
        out: Histograms = {"events": _mean_hist(np.ones(len(events)))}
        for d in self.detectors:
            out[f"occupancy/{d}"] = _mean_hist(ak.to_numpy(events[_OCCUPANCY[d][0]]))
        if "PXD" in self.detectors:
            # digits per fired pixel: a sparse (growing) axis of the pixels seen
            sensor = vxd.sensor_index(_flat(events, "PXDDigits_m_sensorID", np.int64), "PXD")
            u = _flat(events, "PXDDigits_m_uCellID", np.int64)
            v = _flat(events, "PXDDigits_m_vCellID", np.int64)
            h = hist.Hist(
                hist.axis.IntCategory([], growth=True, name="pixel"), storage=hist.storage.Int64()
            )
            if len(u):
                h.fill((sensor * vxd.PXD_NU + u) * vxd.PXD_NV + v)
            out["pxd_pixels"] = h
        return out


@dataclasses.dataclass(frozen=True)
class GammaGammaCollector(Collector):
    """Gamma-gamma (``hlt_gamma_gamma``): the events of the skim and those that also have the
    ``GG`` flag (no track, two clusters above 2 GeV back to back), the luminosity count.

    ``detectors`` is accepted like the other collectors' (the count needs the trigger
    variables only).
    """

    detectors: tuple[str, ...] = DETECTORS
    version: ClassVar[int] = 1

    def __post_init__(self) -> None:
        _check_detectors(self.detectors)

    @property
    def branches(self) -> dict[str, str]:
        return {"EventMetaData_m_event": "uint32", "SoftwareTriggerVariables_GG": "float32"}

    def collect(self, events: ak.Array) -> Histograms:
        gg = np.asarray(ak.to_numpy(events["SoftwareTriggerVariables_GG"]), dtype=np.float64)
        return {
            "events": _mean_hist(np.ones(len(events))),
            "lumi_events": _mean_hist(np.ones(int(np.sum(gg == 1.0)))),
        }


# ----------------------------------------------------------------------------- the numbers
def _value(name: str, value: float, error: float) -> MonitoringValue:
    d = VARIABLES[name]
    return MonitoringValue(name, d.detector, float(value), float(error), d.unit)


def _hot_pixels(
    h: hist.Hist, n_events: float, prefix: str, notes: list[str], key: str
) -> list[MonitoringValue]:
    """Hot PXD pixels (firing in more than :data:`HOT_PIXEL_OCCUPANCY` of the events) and the
    fraction of the digits they make (binomial error; the count has a Poisson error)."""
    if n_events < MIN_HOT_PIXEL_EVENTS:
        notes.append(
            f"{key}: {n_events:.0f} {prefix} events, {MIN_HOT_PIXEL_EVENTS} needed for hot pixels"
        )
        return []
    counts = np.asarray(h.values(), dtype=np.float64)
    total = float(counts.sum())
    if total <= 0:
        return []
    hot = (counts > HOT_PIXEL_OCCUPANCY * n_events) & (counts >= 3)
    n_hot = float(hot.sum())
    frac = float(counts[hot].sum()) / total
    return [
        _value(f"{prefix}.pxd_hot_pixels", n_hot, math.sqrt(max(n_hot, 1.0))),
        _value(
            f"{prefix}.pxd_hot_pixel_fraction",
            frac,
            math.sqrt(max(frac * (1 - frac), 1.0 / total) / total),
        ),
    ]


def _isr_beta(ecms: float) -> float:
    """Exponent of the ISR energy-fraction density ``beta x^(beta - 1)``."""
    return 2.0 / (137.035999 * math.pi) * (2.0 * math.log(ecms / 0.51099895e-3) - 1.0)


# ISR photon energy fractions: the density beta x^(beta-1) on (0, 0.25) cut into log-spaced
# slices; each slice is a Gaussian at E sqrt(1 - x) with the slice's probability
_X_EDGES = np.concatenate([[0.0], np.logspace(-12.0, math.log10(0.25), 240)])
_X_MID = np.concatenate([[0.0], np.sqrt(_X_EDGES[1:-1] * _X_EDGES[2:])])


def _isr_cdf(m: F, ecms: float, sigma: float, beta: float) -> F:
    """CDF of the dimuon mass: ``ecms sqrt(1 - x)`` with the ISR fraction ``x`` (density
    ``beta x^(beta-1)`` on (0, 0.25)), folded with a Gaussian of width ``sigma``."""
    w = np.diff((_X_EDGES / 0.25) ** beta)
    centre = ecms * np.sqrt(1.0 - _X_MID)
    z = (np.asarray(m, dtype=np.float64)[:, None] - centre[None, :]) / sigma
    return np.asarray(special.ndtr(z) @ w, dtype=np.float64)


def _mass_fit(
    h: hist.Hist, nominal: float | None, notes: list[str], key: str
) -> list[MonitoringValue]:
    """Fit the collision energy and the mass resolution to the dimuon mass histogram."""
    c = np.asarray(h.values(), dtype=np.float64)
    if c.sum() < 50:
        notes.append(f"{key}: {c.sum():.0f} dimuon candidates, at least 50 needed for the mass fit")
        return []
    centre = nominal if nominal else float(h.axes[0].centers[int(np.argmax(c))])
    edges = h.axes[0].edges
    i0 = int(np.searchsorted(edges, centre + _MASS_RANGE[0]))
    i1 = int(np.searchsorted(edges, centre + _MASS_RANGE[1]))
    xe, n = edges[i0 : i1 + 1], c[i0:i1]
    if n.sum() < 50:
        notes.append(f"{key}: {n.sum():.0f} dimuon candidates in the fit window, 50 needed")
        return []
    beta = _isr_beta(centre)

    def cdf(x: F, ecms: float, sigma: float) -> F:
        f = _isr_cdf(x, ecms, sigma, beta)
        return (f - f[0]) / (f[-1] - f[0])

    m = Minuit(cost.BinnedNLL(n, xe, cdf), ecms=centre, sigma=0.04)
    m.limits["ecms"] = (xe[0], xe[-1])
    m.limits["sigma"] = (0.003, 0.3)
    m.migrad()
    m.hesse()
    if not (m.valid and m.accurate):
        notes.append(
            f"{key}: dimuon mass fit did not converge (valid={m.valid}, "
            f"accurate covariance={m.accurate})"
        )
        return []
    mu, err = float(m.values["ecms"]), float(m.errors["ecms"])
    out = [
        _value("mumu.invariant_mass", mu, err),
        _value("mumu.invariant_mass_width", m.values["sigma"], m.errors["sigma"]),
    ]
    if nominal:
        out.append(_value("mumu.invariant_mass_pull", (mu - nominal) / err, 1.0))
    return out


# ------------------------------------------------------------------------------ luminosity
#: Collision energy (GeV) at which :data:`VISIBLE_CROSS_SECTIONS_NB` were measured.
VISIBLE_CROSS_SECTION_ECMS = Y4S_ECMS_GEV
#: Visible cross sections (nb) of each luminosity method (:data:`b2calib.skims.LUMI_SELECTIONS`)
#: for each process that passes its selection: (value, binomial error of the efficiency times
#: the cross section), at :data:`VISIBLE_CROSS_SECTION_ECMS`, as measured by
#: :func:`b2calib.sim.luminosity.measure_visible_cross_sections` on its default sample (seed
#: 20190; bhabha 1M, gamma_gamma 500k, tautau 400k, mumu 100k, hadron 100k events). Regenerate
#: with ``python -m b2calib.sim.luminosity`` (~1 minute), which prints this table.
#: Processes without a selected event are left out: mumu and hadron pass neither selection,
#: tautau and bhabha not the gamma-gamma one (0 of 400k / 1M).
VISIBLE_CROSS_SECTIONS_NB: dict[str, dict[str, tuple[float, float]]] = {
    # efficiency 0.9640 of 14.753 nb; tau pairs: 0.88 % of 0.667 nb
    "bhabha": {"bhabha": (14.2223, 0.0027), "tautau": (0.00584, 0.00010)},
    # efficiency 0.9171 of 1.935 nb
    "gamma_gamma": {"gamma_gamma": (1.77458, 0.00075)},
}


def lumi_from_count(
    method: str,
    n_selected: float,
    *,
    prescales: Mapping[str, float] | None = None,
    ecms_gev: float = _NOMINAL_4S,
    cross_sections: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> tuple[float, float] | None:
    """Integrated luminosity (pb^-1) and its error from the events a luminosity method counted.

    ``L = N / sum_p(prescale_p sigma_vis,p(E))``: the simulator keeps the fraction
    ``prescale_p`` of the produced events of process ``p`` (a keep fraction, not "1 in n"), so
    ``N`` is divided by it. ``sigma_vis,p(E)`` is the visible cross section of
    :data:`VISIBLE_CROSS_SECTIONS_NB` (or ``cross_sections``) scaled to the collision energy
    ``E`` by the ratio ``cross_section_nb(p, E) / cross_section_nb(p, E0)`` of the generator's
    cross sections (the efficiency is taken as independent of the energy: the selections cut on
    energies relative to the beam energy). The error combines, in quadrature, the Poisson error
    of ``N`` with the error of the visible cross sections (relative 0.02 % for Bhabha, 0.04 %
    for gamma-gamma: negligible next to the counting). None when ``N`` is 0 (no measurement).
    Prescales missing from ``prescales`` (or None) are 1.
    """
    from b2calib.physics import cross_section_nb

    if method not in LUMI_SELECTIONS:
        raise QAError(f"unknown luminosity method {method!r}; known: {', '.join(LUMI_SELECTIONS)}")
    if n_selected <= 0:
        return None
    table = (cross_sections if cross_sections is not None else VISIBLE_CROSS_SECTIONS_NB)[method]
    ps = prescales or {}
    denom, var = 0.0, 0.0
    for process, (sigma, err) in table.items():
        scale = cross_section_nb(process, ecms_gev) / cross_section_nb(
            process, VISIBLE_CROSS_SECTION_ECMS
        )
        w = ps.get(process, 1.0) * scale * 1000.0  # nb -> pb
        denom += w * sigma
        var += (w * err) ** 2
    if denom <= 0:
        return None
    lumi = n_selected / denom
    return lumi, lumi * math.sqrt(1.0 / n_selected + var / denom**2)


def run_qa_from_outputs(
    exp: int,
    run: int,
    outputs: Mapping[str, Mapping[str, hist.Hist]],
    *,
    ecms_nominal_gev: float | None = None,
    prescales: Mapping[str, float] | None = None,
    skipped: Sequence[SkippedFile] = (),
) -> RunQA:
    """Monitoring variables and QA histograms of one run from its collectors' histograms.

    Parameters
    ----------
    outputs
        Histograms per skim (``hlt_mumu_2trk``, ``hlt_bhabha``, ``hlt_gamma_gamma``,
        ``hlt_hadron``, ``cosmic``),
        as the collectors of this module fill them; missing skims give no variables.
    ecms_nominal_gev
        The run's nominal collision energy (the pull's reference, the mass-fit window and the
        energy of the luminosity's visible cross sections; None: no luminosity).
    prescales
        Per process (``hadron``, ``bhabha``, ...), from the files' metadata; None or missing: 1.
    """
    key = f"run ({exp}, {run})"
    values: list[MonitoringValue] = []
    notes: list[str] = []
    hists: dict[tuple[str, str], hist.Hist] = {}
    for skim in ("hlt_mumu_2trk", "hlt_bhabha"):
        for name, h in outputs.get(skim, {}).items():
            det, _, hname = name.partition("/")
            if (det, hname) in QA_HISTOGRAMS:
                hists[(det, hname)] = h
    mumu = outputs.get("hlt_mumu_2trk", {})
    for det, var in (
        ("pxd_hits", "mumu.pxd_hits_per_track"),
        ("svd_hits", "mumu.svd_hits_per_track"),
        ("cdc_hits", "mumu.cdc_hits_per_track"),
        ("top_digits", "mumu.top_digits_per_track"),
        ("arich_photons", "mumu.arich_photons_per_track"),
    ):
        mh = mumu.get(f"mean/{det}")
        if mh is not None:
            m, e, n = mean_of(mh)
            if n > 1:
                values.append(_value(var, m, e))
    if "mean/good_muon" in mumu:
        v = mumu["mean/good_muon"].view()[0]
        n, k = float(v["count"]), float(v["count"]) * float(v["value"])
        if n > 0:
            err = math.sqrt((k + 1) * (n - k + 1) / ((n + 2) ** 2 * (n + 3)))
            values.append(_value("mumu.good_muon_fraction", k / n, err))
    for hname, var in (("d0_pair", "mumu.d0_resolution"), ("z0_pair", "mumu.z0_resolution")):
        if hname in mumu:
            s, e = sigma68(mumu[hname])
            if math.isfinite(s):
                values.append(_value(var, s, e))
            else:
                notes.append(f"{key}: too few dimuon pairs for {var}")
    if "BEAM/dimuon_mass" in mumu:
        values += _mass_fit(mumu["BEAM/dimuon_mass"], ecms_nominal_gev, notes, key)
    bhabha, hadron = outputs.get("hlt_bhabha", {}), outputs.get("hlt_hadron", {})
    if "mean/e_over_p" in bhabha:
        m, e, n = mean_of(bhabha["mean/e_over_p"])
        if n > 1:
            values.append(_value("bhabha.ecl_e_over_p", m, e))
    if "events" in bhabha and "events" in hadron:
        nb, nh = mean_of(bhabha["events"])[2], mean_of(hadron["events"])[2]
        ps = prescales or {}
        if nb > 0 and nh > 0:
            r = (nh / ps.get("hadron", 1.0)) / (nb / ps.get("bhabha", 1.0))
            values.append(_value("hadron_bhabha_ratio", r, r * math.sqrt(1 / nh + 1 / nb)))
        else:
            notes.append(f"{key}: {nh:.0f} hadron and {nb:.0f} Bhabha events: no ratio")
    for method, (skim, count) in (
        ("bhabha", ("hlt_bhabha", "events")),
        ("gamma_gamma", ("hlt_gamma_gamma", "lumi_events")),
    ):
        ch = outputs.get(skim, {}).get(count)
        if ch is None:
            continue
        if not ecms_nominal_gev:
            notes.append(f"{key}: no nominal collision energy: no {method} luminosity")
            continue
        lumi = lumi_from_count(
            method, mean_of(ch)[2], prescales=prescales, ecms_gev=ecms_nominal_gev
        )
        if lumi is None:
            notes.append(f"{key}: no {method} luminosity events")
        else:
            values.append(_value(f"{method}.lumi_pb", *lumi))
    for skim, prefix in (("hlt_hadron", "hadron"), ("cosmic", "cosmic")):
        pixels = outputs.get(skim, {}).get("pxd_pixels")
        if pixels is not None and "events" in outputs[skim]:
            values += _hot_pixels(pixels, mean_of(outputs[skim]["events"])[2], prefix, notes, key)
        for det in DETECTORS:
            oh = outputs.get(skim, {}).get(f"occupancy/{det}")
            if oh is not None:
                m, e, n = mean_of(oh)
                if n > 1:
                    values.append(_value(f"{prefix}.{_OCC_NAME[det]}_per_event", m, e))
    order = list(VARIABLES)
    values.sort(key=lambda v: order.index(v.name))
    return RunQA(exp, run, values, dict(sorted(hists.items())), list(skipped), notes)


# ------------------------------------------------------------------------------ the loop
_COLLECTORS: dict[str, type[Collector]] = {
    "hlt_mumu_2trk": MuMuCollector,
    "hlt_bhabha": BhabhaCollector,
    "hlt_gamma_gamma": GammaGammaCollector,
    "hlt_hadron": OccupancyCollector,
    "cosmic": OccupancyCollector,
}


def collect_qa(
    data: str | os.PathLike[str] | Dataset,
    *,
    exp: int | None = None,
    runs: Sequence[int] | range | None = None,
    registry: RunRegistry | None = None,
    executor: str | Any | None = None,
    workers: int | None = None,
    cache: bool | str | os.PathLike[str] = False,
    on_error: Literal["skip", "stop"] = "skip",
    progress: bool = False,
) -> list[RunQA]:
    """Monitoring variables and QA histograms of every run with data.

    Parameters
    ----------
    data
        A folder of skims as the simulator writes them (with ``runs.json``) or a
        :class:`~b2calib.engine.Dataset` (``registry`` then gives the runs' nominal energies).
    exp, runs
        Only these runs.
    executor, workers, cache
        As :func:`b2calib.engine.collect` (the same results under every executor); None is
        ``"inprocess"``. ``cache`` is off by default.
    on_error
        ``"skip"``: leave out unreadable files (listed in the run's :attr:`RunQA.skipped`;
        files that cannot be attributed to a run are logged); ``"stop"``: raise the first
        :class:`~b2calib.exceptions.FileFormatError`, which names the file.

    Runs without any file of the known skims are left out; cosmic runs have occupancies only.
    """
    if on_error not in ("skip", "stop"):
        raise ConfigError(f"on_error must be 'skip' or 'stop', not {on_error!r}")
    if isinstance(data, Dataset):
        ds = data
        files = [f for f in ds if (exp is None or f.exp == exp)]
        if runs is not None:
            files = [f for f in files if f.run in set(runs)]
        ds = Dataset(files, list(ds.problems))
    else:
        folder = Path(data)
        if registry is None:
            if not (folder / "runs.json").exists():
                raise QAError(f"{folder}: no runs.json; pass registry= or a Dataset")
            registry = RunRegistry.load(folder / "runs.json")
        ds = Dataset.select(folder, registry=registry, exp=exp, runs=runs)
    if ds.problems and on_error == "stop":
        p = ds.problems[0]
        raise FileFormatError(p.path, p.reason, p.message)
    for p in ds.problems:
        log.warning("QA: file left out (%s): %s", p.reason, p.message)
    per_run: dict[RunKey, dict[str, Histograms]] = {}
    skipped: dict[RunKey, list[SkippedFile]] = {}
    prescales: dict[RunKey, dict[str, float]] = {}
    by_path = {f.path: (f.exp, f.run) for f in ds}
    for skim, cls in _COLLECTORS.items():
        files = [f for f in ds if f.skim == skim]
        if not files:
            continue
        dets, bad = _detectors_of(files, prescales)
        for s in bad:
            if on_error == "stop":
                raise FileFormatError(s.path, s.reason, s.message)
            skipped.setdefault(by_path[s.path], []).append(s)
        good = [f for f in files if f.path not in {s.path for s in bad}]
        if not good:
            continue
        collector = cls(detectors=dets)  # type: ignore[call-arg]
        result = collect(
            collector,
            Dataset(good),
            executor="inprocess" if executor is None else executor,
            workers=workers,
            on_bad_file=on_error,
            cache=cache,
            progress=progress,
        )
        for s in result.skipped:
            skipped.setdefault(by_path[s.path], []).append(s)
        for key in result.output:
            per_run.setdefault(key, {})[skim] = result.output[key]
    out = []
    for key in sorted(set(per_run) | set(skipped)):
        nominal = None
        if registry is not None and key in registry:
            nominal = registry.get(*key).ecms_nominal_gev or None
        out.append(
            run_qa_from_outputs(
                key[0],
                key[1],
                per_run.get(key, {}),
                ecms_nominal_gev=nominal,
                prescales=prescales.get(key),
                skipped=sorted(skipped.get(key, []), key=lambda s: s.path),
            )
        )
    return out


def _metadata(path: str) -> FileMetadata:
    """A file's ``FileMetaData`` alone (the event tree's description is not parsed: the
    dataset has already checked the file)."""
    try:
        with uproot.open(path) as f:
            text = str(f[METADATA_KEY])
    except Exception as err:  # uproot raises many types for damaged files
        raise FileFormatError(path, "unreadable", f"cannot read {METADATA_KEY} ({err})") from err
    return FileMetadata.from_json(text, path)


def _detectors_of(
    files: Sequence[Any], prescales: dict[RunKey, dict[str, float]]
) -> tuple[tuple[str, ...], list[SkippedFile]]:
    """Detectors every readable file has (from the metadata), each run's prescales, and the
    files whose metadata cannot be read."""
    common = set(DETECTORS)
    bad = []
    for f in files:
        try:
            meta = _metadata(f.path)
        except FileFormatError as err:
            bad.append(SkippedFile(f.path, err.reason, str(err)))
            continue
        common &= set(meta.extra.get("detectors", DETECTORS))
        ps = meta.extra.get("prescales")
        if isinstance(ps, dict):
            prescales.setdefault((f.exp, f.run), {}).update({k: float(v) for k, v in ps.items()})
    return tuple(d for d in DETECTORS if d in common), bad


def __dir__() -> list[str]:
    return __all__
