"""TOP monitoring.

* ``mumu.top_digits_per_track``: TOP digits in the module the dimuon track crosses (its TOP
  ExtHit), noise included, with its QA histogram.
* The QA histogram ``track_time``: the mean time of those digits per track, minus the event T0
  (one entry per track: the photons of one track share its time, they are not independent).
* ``mumu.top_time``: the TOP time of the dimuon tracks against what it should be, in ns (the
  variable that follows a TOP time shift): per track, the median over the digits of its module
  of the photon time minus its expected time (the event T0, the track's time of flight to the
  bar, :attr:`ExtHit.m_tof`, and the photon's propagation to its pixel,
  :func:`b2calib.geometry.top.expected_propagation_time`), from :data:`MIN_PHOTONS` digits on;
  the mean of the tracks' times per event (the tracks of an event share its T0 and its error:
  one entry per event), the mean over the events with the error ``std / sqrt(n)``, and the QA
  histogram ``time_residual`` of the events' times. The raw times carry the module and channel
  offsets and the common offset, which drifts by ~0.02 ns a day (the processing global tag is
  nominal): a healthy run sits near the common offset (~0.5 ns), not at 0; a run whose TOP
  times moved sits away from the other runs.
* ``mumu.top_module_time_deviation``: the largest deviation (ns) of one module's mean track
  time from the mean of all the run's tracks, over the modules with :data:`MIN_MODULE_TRACKS`
  tracks, with that module's error (the RMS of all the tracks over ``sqrt(n)`` of the module): a
  module whose time moved against the others (a common shift moves ``mumu.top_time`` instead).
  Healthy runs show the modules' own offsets (~0.3 ns each) and their statistical spread.
* ``<skim>.top_digits_per_event`` (``hadron``, ``cosmic``): the occupancy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import awkward as ak
import hist
import numpy as np
import numpy.typing as npt

from b2calib.geometry import DETECTOR_ID, top
from b2calib.qa.monitoring import HistogramDef, MonitoringValue, QAPart, VariableDef
from b2calib.qa.monitoring.parts import (
    EXT_HIT_BRANCHES,
    DimuonEvents,
    Histograms,
    RunHistograms,
    event_index,
    flat,
    mean_histogram,
    occupancy,
)

__all__ = [
    "DIGITS_PER_TRACK",
    "MIN_MODULE_TRACKS",
    "MIN_PHOTONS",
    "TIME_RESIDUAL",
    "TRACK_TIME",
    "TOPDimuonQA",
    "qa_parts",
]

#: TOP digits in the module of a dimuon track.
DIGITS_PER_TRACK = HistogramDef(
    "TOP", "digits_per_track", "TOP digits per dimuon track", bins=(80, -0.5, 79.5)
)
#: The mean TOP digit time of a dimuon track.
TRACK_TIME = HistogramDef(
    "TOP",
    "track_time",
    "mean TOP digit time in the track's module - event T0 (ns)",
    bins=(30, 0.0, 30.0),
)
#: The TOP time of a dimuon track: the median of its photons' time minus the expected time.
TIME_RESIDUAL = HistogramDef(
    "TOP",
    "time_residual",
    "TOP photon time - expected time, median per track, mean per dimuon event (ns)",
    bins=(40, -4.0, 4.0),
)
#: Digits of a track's module needed for its time (median of the photon residuals).
MIN_PHOTONS = 5
#: Tracks a module needs for its mean time to count in ``mumu.top_module_time_deviation``.
MIN_MODULE_TRACKS = 5
_SLOTS = 17  # module ids 1-16, per event


@dataclass(frozen=True)
class TOPDimuonQA(QAPart[DimuonEvents]):
    """TOP digits, their mean time and the tracks' TOP time (photon time minus expected time),
    per dimuon track, in the module the track crosses."""

    detector = "TOP"
    skim = "hlt_mumu_2trk"
    version: ClassVar[int] = 2
    variables = (
        VariableDef(
            "mumu.top_digits_per_track", "TOP", "", "TOP digits in the module of the track"
        ),
        VariableDef(
            "mumu.top_time",
            "TOP",
            "ns",
            "mean TOP time of dimuon tracks: photon time - expected time (event T0, time of "
            "flight, propagation), median per track",
        ),
        VariableDef(
            "mumu.top_module_time_deviation",
            "TOP",
            "ns",
            "largest deviation of a TOP module's mean track time from the run's mean",
        ),
    )
    histograms = (DIGITS_PER_TRACK, TRACK_TIME, TIME_RESIDUAL)

    def branches(self) -> dict[str, str]:
        return EXT_HIT_BRANCHES | {
            "ExtHits_m_posZ": "var * float32",
            "ExtHits_m_tof": "var * float32",
            "TOPDigits_m_moduleID": "var * int8",
            "TOPDigits_m_pixelID": "var * int16",
            "TOPDigits_m_time": "var * float32",
            "EventT0_m_eventT0": "float32",
            "EventT0_m_hasEventT0": "int8",
        }

    def fill(self, events: DimuonEvents) -> Histograms:
        ev, ext = events.events, events.ext_hits
        mod = flat(ev, "TOPDigits_m_moduleID", np.int64)
        time = flat(ev, "TOPDigits_m_time")
        d_evt = event_index(ev, "TOPDigits_m_moduleID")
        d_slot = d_evt * _SLOTS + mod
        counts = np.bincount(d_slot, minlength=_SLOTS * len(ev))
        t_sum = np.bincount(d_slot, weights=time, minlength=_SLOTS * len(ev))
        sel = ext.detector == DETECTOR_ID["TOP"]
        slot = ext.event[sel] * _SLOTS + ext.copy[sel]
        per_track = counts[slot]
        # one entry per track (the photons of a track share its time: not independent)
        has = per_track > 0
        t0 = np.asarray(ak.to_numpy(ev["EventT0_m_eventT0"]), dtype=np.float64)
        t_trk = t_sum[slot[has]] / per_track[has] - t0[ext.event[sel][has]]
        residual, module, event = self._track_times(events, sel, slot, d_slot, time, t0)
        by_module = hist.Hist(
            hist.axis.Integer(1, _SLOTS, name="module"), storage=hist.storage.Mean()
        )
        by_module.fill(module, sample=residual)
        # one entry per event: its tracks share the event T0 (and its error), they are not
        # independent
        n_evt = np.bincount(event, minlength=len(ev))
        has_evt = n_evt > 0
        t_evt = np.bincount(event, weights=residual, minlength=len(ev))[has_evt] / n_evt[has_evt]
        return {
            DIGITS_PER_TRACK.output_name: DIGITS_PER_TRACK.filled(per_track),
            "mean/top_digits": mean_histogram(per_track),
            TRACK_TIME.output_name: TRACK_TIME.filled(t_trk),
            TIME_RESIDUAL.output_name: TIME_RESIDUAL.filled(t_evt),
            "mean/top_time": mean_histogram(t_evt),
            "mean/top_module_time": by_module,
        }

    @staticmethod
    def _track_times(
        events: DimuonEvents,
        sel: npt.NDArray[np.bool_],
        slot: npt.NDArray[np.int64],
        d_slot: npt.NDArray[np.int64],
        time: npt.NDArray[np.float64],
        t0: npt.NDArray[np.float64],
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The TOP time (median photon residual), module and event of each track alone in its
        module with :data:`MIN_PHOTONS` digits there, in an event with an event T0."""
        ev = events.events
        n_slots = _SLOTS * len(ev)
        tracks_in = np.bincount(slot, minlength=n_slots)
        alone = tracks_in[slot] == 1
        owner = np.full(n_slots, -1, np.int64)
        owner[slot[alone]] = np.flatnonzero(alone)
        k = owner[d_slot] if len(d_slot) else np.zeros(0, np.int64)
        has_t0 = np.asarray(ak.to_numpy(ev["EventT0_m_hasEventT0"]), dtype=bool)
        use = k >= 0
        use[use] &= has_t0[d_slot[use] // _SLOTS]
        k = k[use]
        z = flat(ev, "ExtHits_m_posZ")[sel]
        tof = flat(ev, "ExtHits_m_tof")[sel]
        pixel = flat(ev, "TOPDigits_m_pixelID", np.int64)[use]
        res = (
            time[use]
            - t0[d_slot[use] // _SLOTS]
            - tof[k]
            - top.expected_propagation_time(pixel, z[k])
        )
        # the median per track: residuals sorted within each track
        order = np.lexsort((res, k))
        k_s, r_s = k[order], res[order]
        n = np.bincount(k_s, minlength=len(slot))
        first = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
        ok = n >= MIN_PHOTONS
        lo = r_s[first[ok] + (n[ok] - 1) // 2]
        hi = r_s[first[ok] + n[ok] // 2]
        return 0.5 * (lo + hi), events.ext_hits.copy[sel][ok], events.ext_hits.event[sel][ok]

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        skim = "hlt_mumu_2trk"
        out = self.mean_value(run, skim, "mean/top_digits", "mumu.top_digits_per_track")
        out += self.mean_value(run, skim, "mean/top_time", "mumu.top_time")
        by_module = run.get(skim, "mean/top_module_time")
        if by_module is None:
            return out
        v: Any = by_module.view()
        n = np.asarray(v["count"], dtype=np.float64)
        mean = np.asarray(v["value"], dtype=np.float64)
        n_all = float(n.sum())
        ok = n >= MIN_MODULE_TRACKS
        if n_all < 2 or not ok.any():
            run.note(f"no TOP module with {MIN_MODULE_TRACKS} dimuon tracks for its mean time")
            return out
        # every track about the mean of all: within and between modules
        mean_all = float((n * mean).sum() / n_all)
        ss = float(np.sum(v["_sum_of_deltas_squared"]) + np.sum(n * (mean - mean_all) ** 2))
        rms = math.sqrt(ss / (n_all - 1))
        dev = np.where(ok, mean - mean_all, 0.0)
        i = int(np.argmax(np.abs(dev)))
        out.append(self.value("mumu.top_module_time_deviation", abs(dev[i]), rms / math.sqrt(n[i])))
        return out


def qa_parts() -> list[QAPart[Any]]:
    """TOP's QA parts."""
    return [TOPDimuonQA(), *occupancy("TOP", "nTOPDigits", "top_digits", "TOP digits")]


def __dir__() -> list[str]:
    return __all__
