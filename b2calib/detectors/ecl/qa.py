"""ECL monitoring.

* ``bhabha.ecl_e_over_p``: the mean E/p of the Bhabha tracks (the energy of the ECL cluster
  matched to a track over the track's momentum) with 0.5 < E/p < 1.5; QA histograms of E/p and of
  the cluster energies of Bhabha events.
* ``<skim>.ecl_clusters_per_event`` (``hadron``, ``cosmic``): the occupancy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from b2calib.qa.monitoring import HistogramDef, MonitoringValue, QAPart, VariableDef
from b2calib.qa.monitoring.parts import (
    B_FACTOR,
    Histograms,
    RunHistograms,
    SkimEvents,
    event_index,
    flat,
    mean_histogram,
    occupancy,
)

__all__ = ["CLUSTER_ENERGY", "E_OVER_P", "ECLBhabhaQA", "qa_parts"]

#: E/p of the Bhabha tracks.
E_OVER_P = HistogramDef(
    "ECL", "e_over_p", "E/p of Bhabha tracks", bins=(75, 0.0, 1.5), skim="hlt_bhabha"
)
#: The ECL cluster energies of Bhabha events.
CLUSTER_ENERGY = HistogramDef(
    "ECL",
    "cluster_energy",
    "ECL cluster energy in Bhabha events (GeV)",
    bins=(40, 0.0, 8.0),
    skim="hlt_bhabha",
)


@dataclass(frozen=True)
class ECLBhabhaQA(QAPart[SkimEvents]):
    """E/p and cluster energies of Bhabha (``hlt_bhabha``) events."""

    detector = "ECL"
    skim = "hlt_bhabha"
    variables = (
        VariableDef(
            "bhabha.ecl_e_over_p", "ECL", "", "mean E/p of Bhabha tracks with 0.5 < E/p < 1.5"
        ),
    )
    histograms = (E_OVER_P, CLUSTER_ENERGY)

    def branches(self) -> dict[str, str]:
        return {
            "TrackFitResults_m_omega": "var * float32",
            "TrackFitResults_m_tanLambda": "var * float32",
            "ECLClusters_m_energy": "var * float32",
            "ECLClusters_m_trackIndex": "var * int16",
        }

    def fill(self, events: SkimEvents) -> Histograms:
        ev = events.events
        energy = flat(ev, "ECLClusters_m_energy")
        ti = flat(ev, "ECLClusters_m_trackIndex", np.int64)
        c_evt = event_index(ev, "ECLClusters_m_energy")
        omega = flat(ev, "TrackFitResults_m_omega")
        tanl = flat(ev, "TrackFitResults_m_tanLambda")
        ntrk = np.asarray(ak.to_numpy(ak.num(ev["TrackFitResults_m_omega"])), dtype=np.int64)
        first = np.concatenate([[0], np.cumsum(ntrk)[:-1]]).astype(np.int64)
        with np.errstate(divide="ignore"):
            p = np.abs(B_FACTOR / omega) * np.sqrt(1.0 + tanl**2)
        on = (ti >= 0) & (ti < ntrk[c_evt]) if len(ti) else np.zeros(0, bool)
        ep = energy[on] / p[first[c_evt[on]] + ti[on]]
        ep = ep[np.isfinite(ep)]
        core = ep[(ep > 0.5) & (ep < 1.5)]
        return {
            E_OVER_P.output_name: E_OVER_P.filled(ep),
            CLUSTER_ENERGY.output_name: CLUSTER_ENERGY.filled(energy),
            "mean/e_over_p": mean_histogram(core),
        }

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        return self.mean_value(run, "hlt_bhabha", "mean/e_over_p", "bhabha.ecl_e_over_p")


def qa_parts() -> list[QAPart[Any]]:
    """The ECL's QA parts."""
    return [ECLBhabhaQA(), *occupancy("ECL", "nECLClusters", "ecl_clusters", "ECL clusters")]


def __dir__() -> list[str]:
    return __all__
