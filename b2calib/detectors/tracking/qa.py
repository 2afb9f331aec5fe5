"""Tracking monitoring: the impact-parameter resolutions from dimuon pairs (micrometres).

* ``mumu.d0_resolution``: sigma68 of ``(d0_1 + d0_2 - b.(n_1 + n_2)) / sqrt(2)`` over dimuon
  pairs, where ``n_i = (sin phi0_i, -cos phi0_i)`` and ``b`` is the transverse beam-spot
  position fitted (least squares of ``d0 = b.n``) to all dimuon tracks of the same work item;
  the two tracks come from one vertex, so the vertex spread cancels in the sum. Work items with
  fewer than :data:`MIN_BEAMSPOT_TRACKS` tracks do not contribute.
* ``mumu.z0_resolution``: sigma68 of ``(z0_1 - z0_2) / sqrt(2)``.

sigma68 is :func:`b2calib.fit.histstats.sigma68`: half the width of the central 68.27 %
interval (sigma for a Gaussian), from the quantiles of the histogram (linear within a bin), with
the asymptotic (Bahadur) variance of the two sample quantiles as its error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from b2calib.fit.histstats import sigma68
from b2calib.qa.monitoring import MonitoringValue, QAPart, VariableDef
from b2calib.qa.monitoring.parts import (
    DimuonEvents,
    Histograms,
    RunHistograms,
    count_histogram,
)

__all__ = ["D0_BINS", "MIN_BEAMSPOT_TRACKS", "Z0_BINS", "ImpactParameterQA", "qa_parts"]

#: Work items with fewer dimuon tracks do not measure the d0 resolution (beam-spot fit).
MIN_BEAMSPOT_TRACKS = 20
#: Binning of the d0 pair residuals (um).
D0_BINS = (400, -400.0, 400.0)
#: Binning of the z0 pair residuals (um).
Z0_BINS = (400, -800.0, 800.0)


@dataclass(frozen=True)
class ImpactParameterQA(QAPart[DimuonEvents]):
    """The d0 and z0 resolutions from the pair residuals of the dimuon tracks."""

    detector = "TRACKING"
    skim = "hlt_mumu_2trk"
    variables = (
        VariableDef("mumu.d0_resolution", "TRACKING", "um", "sigma68 of d0, from dimuon pairs"),
        VariableDef("mumu.z0_resolution", "TRACKING", "um", "sigma68 of z0, from dimuon pairs"),
    )

    def fill(self, events: DimuonEvents) -> Histograms:
        """Pair residuals of d0 (beam spot of the work item removed) and z0, in um."""
        t = events.tracks
        d0, phi, z0 = t["d0"], t["phi0"], t["z0"]
        nvec = np.column_stack([np.sin(phi), -np.cos(phi)])
        d0h = count_histogram(D0_BINS, [])
        if len(d0) >= MIN_BEAMSPOT_TRACKS:
            bs, *_ = np.linalg.lstsq(nvec, d0, rcond=None)
            r = d0 - nvec @ bs
            d0h = count_histogram(D0_BINS, (r[0::2] + r[1::2]) / math.sqrt(2.0) * 1e4)
        z = (z0[0::2] - z0[1::2]) / math.sqrt(2.0) * 1e4
        return {"d0_pair": d0h, "z0_pair": count_histogram(Z0_BINS, z)}

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        out = []
        for name, var in (("d0_pair", "mumu.d0_resolution"), ("z0_pair", "mumu.z0_resolution")):
            h = run.get("hlt_mumu_2trk", name)
            if h is None:
                continue
            s, e = sigma68(h)
            if math.isfinite(s):
                out.append(self.value(var, s, e))
            else:
                run.note(f"too few dimuon pairs for {var}")
        return out


def qa_parts() -> list[QAPart[Any]]:
    """The tracking's QA parts."""
    return [ImpactParameterQA()]


def __dir__() -> list[str]:
    return __all__
