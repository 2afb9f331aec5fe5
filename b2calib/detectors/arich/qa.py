"""ARICH monitoring.

* ``mumu.arich_photons_per_track``: the ARICH digits of a dimuon event divided by the number of
  its tracks with an ARICH ExtHit, for each such track, with its QA histogram.
* ``<skim>.arich_digits_per_event`` (``hadron``, ``cosmic``): the occupancy.
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
    mean_histogram,
    occupancy,
)

__all__ = ["PHOTONS_PER_TRACK", "ARICHDimuonQA", "qa_parts"]

#: ARICH photons per dimuon track. One entry per dimuon track in the ARICH (forward endcap):
#: ~6 per 100 dimuon events, 90-290 (median 190) per run at events_per_run=3000 (the other
#: QA histograms: >= 390), so half of the default's 100 entries.
PHOTONS_PER_TRACK = HistogramDef(
    "ARICH",
    "photons_per_track",
    "ARICH photons per dimuon track",
    bins=(50, -0.25, 49.75),
    min_entries=50.0,
)


@dataclass(frozen=True)
class ARICHDimuonQA(QAPart[DimuonEvents]):
    """ARICH photons per dimuon track in the ARICH."""

    detector = "ARICH"
    skim = "hlt_mumu_2trk"
    variables = (
        VariableDef("mumu.arich_photons_per_track", "ARICH", "", "ARICH digits per forward track"),
    )
    histograms = (PHOTONS_PER_TRACK,)

    def branches(self) -> dict[str, str]:
        return EXT_HIT_BRANCHES | {"ARICHDigits_m_modID": "var * int16"}

    def fill(self, events: DimuonEvents) -> Histograms:
        ev, ext = events.events, events.ext_hits
        n_dig = np.asarray(ak.to_numpy(ak.num(ev["ARICHDigits_m_modID"])), dtype=np.float64)
        sel = ext.detector == DETECTOR_ID["ARICH"]
        k = np.bincount(ext.event[sel], minlength=len(ev))
        per_track = (n_dig / np.maximum(k, 1))[ext.event[sel]]
        return {
            PHOTONS_PER_TRACK.output_name: PHOTONS_PER_TRACK.filled(per_track),
            "mean/arich_photons": mean_histogram(per_track),
        }

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        return self.mean_value(
            run, "hlt_mumu_2trk", "mean/arich_photons", "mumu.arich_photons_per_track"
        )


def qa_parts() -> list[QAPart[Any]]:
    """The ARICH's QA parts."""
    return [ARICHDimuonQA(), *occupancy("ARICH", "nARICHDigits", "arich_digits", "ARICH digits")]


def __dir__() -> list[str]:
    return __all__
