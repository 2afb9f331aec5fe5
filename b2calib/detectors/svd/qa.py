"""SVD monitoring.

* ``mumu.svd_hits_per_track``: SVD clusters per dimuon track (u and v sides, the track's hit
  count); QA histograms of it and of the charge of the SVD clusters on the dimuon tracks.
* ``<skim>.svd_clusters_per_event`` (``hadron``, ``cosmic``): the occupancy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from b2calib.qa.monitoring import HistogramDef, QAPart
from b2calib.qa.monitoring.parts import (
    DimuonEvents,
    Histograms,
    TrackHits,
    flat,
    occupancy,
)

__all__ = ["CLUSTER_CHARGE", "SVDClusterCharge", "qa_parts"]

#: The charge of the SVD clusters on dimuon tracks.
CLUSTER_CHARGE = HistogramDef(
    "SVD", "cluster_charge", "SVD cluster charge on dimuon tracks (e)", bins=(60, 0, 60000)
)


@dataclass(frozen=True)
class SVDClusterCharge(QAPart[DimuonEvents]):
    """The QA histogram of the charge of the SVD clusters on the dimuon tracks."""

    detector = "SVD"
    skim = "hlt_mumu_2trk"
    histograms = (CLUSTER_CHARGE,)

    def branches(self) -> dict[str, str]:
        return {
            "SVDClusters_m_clsCharge": "var * float32",
            "SVDClusters_m_trackIndex": "var * int16",
        }

    def fill(self, events: DimuonEvents) -> Histograms:
        on_track = flat(events.events, "SVDClusters_m_trackIndex", np.int64) >= 0
        charge = flat(events.events, "SVDClusters_m_clsCharge")[on_track]
        return {CLUSTER_CHARGE.output_name: CLUSTER_CHARGE.filled(charge)}


def qa_parts() -> list[QAPart[Any]]:
    """The SVD's QA parts."""
    return [
        TrackHits(
            "SVD",
            "nSVDHits",
            "SVD clusters per dimuon track",
            (17, -0.5, 16.5),
            "SVD clusters per dimuon track (u and v)",
        ),
        SVDClusterCharge(),
        *occupancy("SVD", "nSVDClusters", "svd_clusters", "SVD clusters"),
    ]


def __dir__() -> list[str]:
    return __all__
