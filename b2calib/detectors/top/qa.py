"""TOP monitoring.

* ``mumu.top_digits_per_track``: TOP digits in the module the dimuon track crosses (its TOP
  ExtHit), noise included, with its QA histogram.
* The QA histogram ``track_time``: the mean time of those digits per track, minus the event T0
  (one entry per track: the photons of one track share its time, they are not independent).
* ``<skim>.top_digits_per_event`` (``hadron``, ``cosmic``): the occupancy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from b2calib.geometry import DETECTOR_ID
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

__all__ = ["DIGITS_PER_TRACK", "TRACK_TIME", "TOPDimuonQA", "qa_parts"]

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
_SLOTS = 17  # module ids 1-16, per event


@dataclass(frozen=True)
class TOPDimuonQA(QAPart[DimuonEvents]):
    """TOP digits and their mean time per dimuon track, in the module the track crosses."""

    detector = "TOP"
    skim = "hlt_mumu_2trk"
    variables = (
        VariableDef(
            "mumu.top_digits_per_track", "TOP", "", "TOP digits in the module of the track"
        ),
    )
    histograms = (DIGITS_PER_TRACK, TRACK_TIME)

    def branches(self) -> dict[str, str]:
        return EXT_HIT_BRANCHES | {
            "TOPDigits_m_moduleID": "var * int8",
            "TOPDigits_m_time": "var * float32",
            "EventT0_m_eventT0": "float32",
        }

    def fill(self, events: DimuonEvents) -> Histograms:
        ev, ext = events.events, events.ext_hits
        mod = flat(ev, "TOPDigits_m_moduleID", np.int64)
        d_evt = event_index(ev, "TOPDigits_m_moduleID")
        counts = np.bincount(d_evt * _SLOTS + mod, minlength=_SLOTS * len(ev))
        t_sum = np.bincount(
            d_evt * _SLOTS + mod,
            weights=flat(ev, "TOPDigits_m_time"),
            minlength=_SLOTS * len(ev),
        )
        sel = ext.detector == DETECTOR_ID["TOP"]
        slot = ext.event[sel] * _SLOTS + ext.copy[sel]
        per_track = counts[slot]
        # one entry per track (the photons of a track share its time: not independent)
        has = per_track > 0
        t0 = np.asarray(ak.to_numpy(ev["EventT0_m_eventT0"]), dtype=np.float64)
        t_trk = t_sum[slot[has]] / per_track[has] - t0[ext.event[sel][has]]
        return {
            DIGITS_PER_TRACK.output_name: DIGITS_PER_TRACK.filled(per_track),
            "mean/top_digits": mean_histogram(per_track),
            TRACK_TIME.output_name: TRACK_TIME.filled(t_trk),
        }

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        return self.mean_value(run, "hlt_mumu_2trk", "mean/top_digits", "mumu.top_digits_per_track")


def qa_parts() -> list[QAPart[Any]]:
    """TOP's QA parts."""
    return [TOPDimuonQA(), *occupancy("TOP", "nTOPDigits", "top_digits", "TOP digits")]


def __dir__() -> list[str]:
    return __all__
