"""ECL monitoring.

* ``bhabha.ecl_e_over_p``: the mean E/p of the Bhabha tracks (the energy of the ECL cluster
  matched to a track over the track's momentum) with 0.5 < E/p < 1.5; QA histograms of E/p and of
  the cluster energies of Bhabha events.
* ``bhabha.ecl_time``: the ECL time of the Bhabha electrons against what it should be, in ns
  (the variable that follows an ECL time shift): the time of each track-matched cluster above
  :data:`MIN_TIME_ENERGY` minus the event T0 and its flight time from the IP
  (:func:`b2calib.geometry.ecl.flight_distance` of its central crystal), averaged per event
  (the clusters of an event share its T0: one entry per event), the mean over the events with
  the error ``std / sqrt(n)``, and the QA histogram ``cluster_time`` of the events' times. The
  raw times carry the crystal and crate offsets (the processing global tag is nominal): a
  healthy run's mean depends on the crystals its electrons hit, which the error includes.
* ``<skim>.ecl_clusters_per_event`` (``hadron``, ``cosmic``): the occupancy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import awkward as ak
import numpy as np

from b2calib.geometry import ecl
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

__all__ = [
    "CLUSTER_ENERGY",
    "CLUSTER_TIME",
    "E_OVER_P",
    "MIN_TIME_ENERGY",
    "ECLBhabhaQA",
    "qa_parts",
]

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

#: The ECL time of a Bhabha event: its electrons' cluster times - event T0 - flight time.
CLUSTER_TIME = HistogramDef(
    "ECL",
    "cluster_time",
    "ECL cluster time - event T0 - flight time, Bhabha electrons, mean per event (ns)",
    bins=(60, -15.0, 15.0),
    skim="hlt_bhabha",
)
#: The energy (GeV) of a track-matched cluster whose time counts in ``bhabha.ecl_time``.
MIN_TIME_ENERGY = 1.0
_C_CM_PER_NS = 29.9792458  # the speed of light


@dataclass(frozen=True)
class ECLBhabhaQA(QAPart[SkimEvents]):
    """E/p, cluster energies and cluster times of Bhabha (``hlt_bhabha``) events."""

    detector = "ECL"
    skim = "hlt_bhabha"
    version: ClassVar[int] = 2
    variables = (
        VariableDef(
            "bhabha.ecl_e_over_p", "ECL", "", "mean E/p of Bhabha tracks with 0.5 < E/p < 1.5"
        ),
        VariableDef(
            "bhabha.ecl_time",
            "ECL",
            "ns",
            "mean ECL time of Bhabha electrons: cluster time - event T0 - flight time",
        ),
    )
    histograms = (E_OVER_P, CLUSTER_ENERGY, CLUSTER_TIME)

    def branches(self) -> dict[str, str]:
        return {
            "TrackFitResults_m_omega": "var * float32",
            "TrackFitResults_m_tanLambda": "var * float32",
            "ECLClusters_m_energy": "var * float32",
            "ECLClusters_m_trackIndex": "var * int16",
            "ECLClusters_m_time": "var * float32",
            "ECLClusters_m_maxCellId": "var * int16",
            "EventT0_m_eventT0": "float32",
            "EventT0_m_hasEventT0": "int8",
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
        # the electrons' times, one entry per event (its clusters share its T0)
        t0 = np.asarray(ak.to_numpy(ev["EventT0_m_eventT0"]), dtype=np.float64)
        has_t0 = np.asarray(ak.to_numpy(ev["EventT0_m_hasEventT0"]), dtype=bool)
        timed = on & (energy > MIN_TIME_ENERGY)
        timed &= has_t0[c_evt] if len(c_evt) else np.zeros(0, bool)
        cell = flat(ev, "ECLClusters_m_maxCellId", np.int64)[timed]
        t = (
            flat(ev, "ECLClusters_m_time")[timed]
            - t0[c_evt[timed]]
            - ecl.flight_distance(cell) / _C_CM_PER_NS
        )
        n_evt = np.bincount(c_evt[timed], minlength=len(ev))
        has = n_evt > 0
        t_evt = np.bincount(c_evt[timed], weights=t, minlength=len(ev))[has] / n_evt[has]
        return {
            E_OVER_P.output_name: E_OVER_P.filled(ep),
            CLUSTER_ENERGY.output_name: CLUSTER_ENERGY.filled(energy),
            CLUSTER_TIME.output_name: CLUSTER_TIME.filled(t_evt),
            "mean/e_over_p": mean_histogram(core),
            "mean/ecl_time": mean_histogram(t_evt),
        }

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        out = self.mean_value(run, "hlt_bhabha", "mean/e_over_p", "bhabha.ecl_e_over_p")
        return out + self.mean_value(run, "hlt_bhabha", "mean/ecl_time", "bhabha.ecl_time")


def qa_parts() -> list[QAPart[Any]]:
    """The ECL's QA parts."""
    return [ECLBhabhaQA(), *occupancy("ECL", "nECLClusters", "ecl_clusters", "ECL clusters")]


def __dir__() -> list[str]:
    return __all__
