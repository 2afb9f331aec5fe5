"""KLM monitoring.

* ``mumu.good_muon_fraction``: among dimuon tracks extrapolated through at least
  :data:`MIN_KLM_CROSSINGS` KLM strips (KLM ExtHits), the fraction whose crossed strips have a
  KLM digit in at least :data:`GOOD_MUON_MATCH` of the cases; error: the standard deviation of
  the fraction's posterior with a flat prior, ``sqrt((k+1)(n-k+1) / ((n+2)^2 (n+3)))`` (never
  zero, also when every muon is good). QA histograms of that matched fraction per muon, of the
  digits' layers and of the digits per dimuon event.
* ``<skim>.klm_digits_per_event`` (``hadron``, ``cosmic``): the occupancy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from b2calib.geometry import DETECTOR_ID, klm
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
    "DIGITS_PER_EVENT",
    "DIGIT_LAYER",
    "GOOD_MUON_MATCH",
    "MATCHED_FRACTION",
    "MIN_KLM_CROSSINGS",
    "KLMDimuonQA",
    "qa_parts",
]

#: A track counts for the good-muon fraction when it crosses at least this many KLM strips.
MIN_KLM_CROSSINGS = 4
#: A good muon has a KLM digit in at least this fraction of the strips it crosses.
GOOD_MUON_MATCH = 0.8
#: The layers of the KLM digits of dimuon events.
DIGIT_LAYER = HistogramDef(
    "KLM", "digit_layer", "KLM digit layer in dimuon events", bins=(16, -0.5, 15.5)
)
#: KLM digits per dimuon event.
DIGITS_PER_EVENT = HistogramDef(
    "KLM", "digits_per_event", "KLM digits per dimuon event", bins=(50, 0.0, 150.0)
)
#: The fraction of the crossed KLM strips with a digit, per muon.
MATCHED_FRACTION = HistogramDef(
    "KLM",
    "matched_fraction",
    "fraction of crossed KLM strips with a digit, per muon",
    bins=(20, 0.0, 1.0),
)
_DIGIT_COLUMNS = (
    ("subdetector", "int8"),
    ("section", "int8"),
    ("sector", "int8"),
    ("layer", "int8"),
    ("plane", "int8"),
    ("strip", "int16"),
)


@dataclass(frozen=True)
class KLMDimuonQA(QAPart[DimuonEvents]):
    """The good-muon fraction of the dimuon tracks, and the KLM digits of dimuon events."""

    detector = "KLM"
    skim = "hlt_mumu_2trk"
    variables = (
        VariableDef(
            "mumu.good_muon_fraction",
            "KLM",
            "",
            "dimuon tracks with KLM hits on >= 80 % of their crossed strips",
        ),
    )
    histograms = (DIGIT_LAYER, DIGITS_PER_EVENT, MATCHED_FRACTION)

    def branches(self) -> dict[str, str]:
        return EXT_HIT_BRANCHES | {f"KLMDigits_m_{k}": f"var * {t}" for k, t in _DIGIT_COLUMNS}

    def fill(self, events: DimuonEvents) -> Histograms:
        ev, ext = events.events, events.ext_hits
        cols = [flat(ev, f"KLMDigits_m_{k}", np.int64) for k, _ in _DIGIT_COLUMNS]
        d_evt = event_index(ev, "KLMDigits_m_layer")
        stride = klm.N_CHANNELS + 1
        fired = np.unique(d_evt * stride + klm.channel(*cols)) if len(d_evt) else d_evt
        sel = ext.detector == DETECTOR_ID["KLM"]
        key = ext.event[sel] * stride + ext.copy[sel]
        matched = np.isin(key, fired)
        trk = ext.event[sel] * 64 + ext.track[sel]
        ids, inverse = np.unique(trk, return_inverse=True)
        crossed = np.bincount(inverse, minlength=len(ids))
        hit = np.bincount(inverse, weights=matched, minlength=len(ids))
        counted = crossed >= MIN_KLM_CROSSINGS
        frac = hit[counted] / crossed[counted]
        good = (frac >= GOOD_MUON_MATCH).astype(np.float64)
        per_event = ak.to_numpy(ak.num(ev["KLMDigits_m_layer"]))
        return {
            DIGIT_LAYER.output_name: DIGIT_LAYER.filled(cols[3]),
            DIGITS_PER_EVENT.output_name: DIGITS_PER_EVENT.filled(per_event),
            MATCHED_FRACTION.output_name: MATCHED_FRACTION.filled(np.minimum(frac, 0.999)),
            "mean/good_muon": mean_histogram(good),
        }

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        h = run.get("hlt_mumu_2trk", "mean/good_muon")
        if h is None:
            return []
        v = h.view()[0]
        n, k = float(v["count"]), float(v["count"]) * float(v["value"])
        if n <= 0:
            return []
        err = math.sqrt((k + 1) * (n - k + 1) / ((n + 2) ** 2 * (n + 3)))
        return [self.value("mumu.good_muon_fraction", k / n, err)]


def qa_parts() -> list[QAPart[Any]]:
    """The KLM's QA parts."""
    return [KLMDimuonQA(), *occupancy("KLM", "nKLMDigits", "klm_digits", "KLM digits")]


def __dir__() -> list[str]:
    return __all__
