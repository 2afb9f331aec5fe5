"""PXD monitoring.

* ``mumu.pxd_hits_per_track``: PXD hits per dimuon track (the track's hit count); QA histograms
  of it and of the charge of the PXD digits of dimuon events.
* ``<skim>.pxd_digits_per_event`` (``hadron``, ``cosmic``): the occupancy.
* ``<skim>.pxd_hot_pixels``: PXD pixels that fire in more than :data:`HOT_PIXEL_OCCUPANCY` of
  the run's events of the skim (and at least 3 times; from :data:`MIN_HOT_PIXEL_EVENTS` events
  on), counted per pixel, with a Poisson error (conservative); ``<skim>.pxd_hot_pixel_fraction``:
  the share of the PXD digits they make, with a binomial error.

The digits per pixel are a dense histogram of all 7.68M pixels with an adaptive storage (one
byte a pixel until a pixel counts 256 digits: 7.7 MB a run and skim), filled and merged in
linear time. (A growing category axis of the fired pixels, as before, looks each digit up among
the categories: quadratic in the fired pixels, about 13 minutes for the 12 runs of the demo
bucket, ~3M digits a run in the hadron skim.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import hist
import numpy as np

from b2calib.exceptions import ConfigError
from b2calib.fit.histstats import mean_of
from b2calib.geometry import vxd
from b2calib.qa.monitoring import HistogramDef, MonitoringValue, QAPart, VariableDef
from b2calib.qa.monitoring.definitions import SKIM_PREFIX
from b2calib.qa.monitoring.parts import (
    OCCUPANCY_SKIMS,
    DimuonEvents,
    Histograms,
    RunHistograms,
    SkimEvents,
    TrackHits,
    flat,
    listing_order,
    occupancy,
)

__all__ = [
    "DIGIT_CHARGE",
    "HOT_PIXEL_OCCUPANCY",
    "MIN_HOT_PIXEL_EVENTS",
    "PXDDigitCharge",
    "PXDHotPixels",
    "qa_parts",
]

#: A PXD pixel is hot when it fires in more than this fraction of the events (and 3 times).
HOT_PIXEL_OCCUPANCY = 0.01
#: Fewer events than this (per run and skim) do not look for hot pixels.
MIN_HOT_PIXEL_EVENTS = 200
#: The charge of the PXD digits of dimuon events.
DIGIT_CHARGE = HistogramDef(
    "PXD", "digit_charge", "PXD digit charge in dimuon events (ADU)", bins=(64, 0.0, 256.0)
)


@dataclass(frozen=True)
class PXDDigitCharge(QAPart[DimuonEvents]):
    """The QA histogram of the charge of the PXD digits of dimuon events."""

    detector = "PXD"
    skim = "hlt_mumu_2trk"
    histograms = (DIGIT_CHARGE,)

    def branches(self) -> dict[str, str]:
        return {"PXDDigits_m_charge": "var * int16"}

    def fill(self, events: DimuonEvents) -> Histograms:
        charge = flat(events.events, "PXDDigits_m_charge")
        return {DIGIT_CHARGE.output_name: DIGIT_CHARGE.filled(charge)}


@dataclass(frozen=True)
class PXDHotPixels(QAPart[SkimEvents]):
    """Hot PXD pixels in an all-events skim (``hlt_hadron`` or ``cosmic``): the digits per
    pixel (a dense histogram of every pixel, adaptive storage), then the pixels that fire too
    often."""

    skim: str = "hlt_hadron"
    detector = "PXD"
    version: ClassVar[int] = 2

    def __post_init__(self) -> None:
        if self.skim not in OCCUPANCY_SKIMS:
            raise ConfigError(f"PXD hot pixels: skim {self.skim!r} is not one of {OCCUPANCY_SKIMS}")

    @property
    def order(self) -> float:
        return listing_order(self.skim)  # after the occupancies of every detector

    @property
    def variables(self) -> tuple[VariableDef, ...]:
        prefix = SKIM_PREFIX[self.skim]
        return (
            VariableDef(
                f"{prefix}.pxd_hot_pixels",
                "PXD",
                "",
                f"PXD pixels firing in > 1 % of {prefix} events",
            ),
            VariableDef(
                f"{prefix}.pxd_hot_pixel_fraction",
                "PXD",
                "",
                f"PXD digits on hot pixels ({prefix})",
            ),
        )

    def branches(self) -> dict[str, str]:
        return {
            "PXDDigits_m_sensorID": "var * uint16",
            "PXDDigits_m_uCellID": "var * int16",
            "PXDDigits_m_vCellID": "var * int16",
        }

    def fill(self, events: SkimEvents) -> Histograms:
        ev = events.events
        sensor = vxd.sensor_index(flat(ev, "PXDDigits_m_sensorID", np.int64), "PXD")
        u = flat(ev, "PXDDigits_m_uCellID", np.int64)
        v = flat(ev, "PXDDigits_m_vCellID", np.int64)
        h = hist.Hist(
            hist.axis.Integer(0, vxd.N_PXD_PIXELS, underflow=False, overflow=False, name="pixel"),
            storage=hist.storage.Unlimited(),
        )
        if len(u):
            h.fill((sensor * vxd.PXD_NU + u) * vxd.PXD_NV + v)
        return {"pxd_pixels": h}

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        """Hot pixels (firing in more than :data:`HOT_PIXEL_OCCUPANCY` of the events) and the
        fraction of the digits they make (binomial error; the count has a Poisson error)."""
        pixels, events = run.get(self.skim, "pxd_pixels"), run.get(self.skim, "events")
        if pixels is None or events is None:
            return []
        n_events = mean_of(events)[2]
        prefix = SKIM_PREFIX[self.skim]
        if n_events < MIN_HOT_PIXEL_EVENTS:
            run.note(
                f"{n_events:.0f} {prefix} events, {MIN_HOT_PIXEL_EVENTS} needed for hot pixels"
            )
            return []
        counts = np.asarray(pixels.values(), dtype=np.float64)
        total = float(counts.sum())
        if total <= 0:
            return []
        hot = (counts > HOT_PIXEL_OCCUPANCY * n_events) & (counts >= 3)
        n_hot = float(hot.sum())
        frac = float(counts[hot].sum()) / total
        return [
            self.value(f"{prefix}.pxd_hot_pixels", n_hot, math.sqrt(max(n_hot, 1.0))),
            self.value(
                f"{prefix}.pxd_hot_pixel_fraction",
                frac,
                math.sqrt(max(frac * (1 - frac), 1.0 / total) / total),
            ),
        ]


def qa_parts() -> list[QAPart[Any]]:
    """The PXD's QA parts."""
    return [
        TrackHits("PXD", "nPXDHits", "PXD hits per dimuon track", (6, -0.5, 5.5)),
        PXDDigitCharge(),
        *occupancy("PXD", "nPXDDigits", "pxd_digits", "PXD digits"),
        *(PXDHotPixels(skim) for skim in OCCUPANCY_SKIMS),
    ]


def __dir__() -> list[str]:
    return __all__
