"""SVD hot strips and strip occupancy (``svd-hot-strips``: SVDHotStripsCalibrations, a flag per
strip, and SVDOccupancyCalibrations, the occupancy per strip), basf2
``SVDHotStripsCalibrationsAlgorithm``.

The occupancy of a strip is its hits per event (a strip gives at most one digit per event), with
the central 68.27 % Clopper-Pearson interval (exact, behaves at 0 hits); the error is its half
width. Hot strips, per sensor side (768 strips, 512 on the V sides of layers 4-6):

1. every strip above ``absolute_occupancy`` (20 %);
2. then, repeatedly, every strip above ``relative_occupancy`` (5) times the mean occupancy of the
   side's strips not yet hot, until none is added.

In step 2 a strip must be *significantly* above: its hits are more than ``relative_occupancy``
times the side's mean hits ``m`` and the Poisson probability of at least that many hits at
``relative_occupancy * m`` is below ``relative_pvalue`` (1e-6). basf2 compares the counts alone,
on raw data whose occupancy (beam background) is about uniform over a side; the simulated
occupancy is that of the tracks, which peaks at the end of a layer-3 sensor nearest the
interaction point at ~4 times the side's mean, where Poisson fluctuations of good strips would
cross 5 times the mean with the counts alone. With few hits (a mean below ~1 per strip) the test
flags nothing but the strips that step 1 finds. Fewer than ``min_events`` events:
NOT_ENOUGH_DATA (run by run, :class:`~b2calib.calibration.SequentialRunByRun` then adds the
next run).

basf2 reads the raw SVDShaperDigits (a raw-data calibration, before tracking); the simulator
writes clusters only, so the strips of every cluster (on tracks or not) stand for the digits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from b2calib.calibration import (
    Algorithm,
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Calibration,
    CollectorInput,
    Diagnostics,
    PayloadComparison,
    SequentialRunByRun,
)
from b2calib.calibration.fitview import CountingView, ViewContext
from b2calib.calibration.toolkit import (
    NotEnoughData,
    binomial_interval,
    guarded,
    require,
    status_counts,
)
from b2calib.conditions import ChannelStatus, Payload
from b2calib.detectors.svd.collectors import N_SIDES, StripHitCollector
from b2calib.geometry import vxd

__all__ = [
    "HOT_STRIPS",
    "OCCUPANCY",
    "STRIP_KEYS",
    "HotStripsAlgorithm",
    "find_hot_strips",
    "hot_strips_calibration",
]

F = npt.NDArray[np.float64]

HOT_STRIPS = "SVDHotStripsCalibrations"
OCCUPANCY = "SVDOccupancyCalibrations"
#: Sensor side of every strip (flat strip numbering).
_SIDE = np.repeat(np.arange(N_SIDES), vxd.SVD_SIDE_STRIPS)
_SENSOR = vxd.SVD_SENSOR_TABLE[_SIDE // 2]
#: Key columns of the per-strip payloads (sensor sides in order, side 0 = V before 1 = U).
STRIP_KEYS: dict[str, npt.NDArray[Any]] = {
    "layer": _SENSOR[:, 0].astype(np.int8),
    "ladder": _SENSOR[:, 1].astype(np.int8),
    "sensor": _SENSOR[:, 2].astype(np.int8),
    "side": (_SIDE % 2).astype(np.int8),
    "strip": (np.arange(vxd.N_SVD_STRIPS) - vxd.SVD_SIDE_FIRST[_SIDE]).astype(np.int16),
}


def _side_mean(values: F, keep: npt.NDArray[np.bool_]) -> F:
    """Per sensor side, the mean of ``values`` over the strips in ``keep`` (per strip)."""
    s = np.bincount(_SIDE, weights=np.where(keep, values, 0.0), minlength=N_SIDES)
    n = np.bincount(_SIDE, weights=keep.astype(np.float64), minlength=N_SIDES)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(n > 0, s / n, 0.0))


def find_hot_strips(
    hits: npt.ArrayLike,
    n_events: float,
    *,
    absolute: float = 0.2,
    relative: float = 5.0,
    pvalue: float = 1e-6,
) -> tuple[npt.NDArray[np.int8], F, int]:
    """Status of every strip (HOT or OK), the mean hits per strip of its side (strips not hot)
    and the number of passes of the relative cut (module documentation)."""
    h = np.asarray(hits, dtype=np.float64)
    hot = h / n_events > absolute
    passes = 0
    while True:
        mean = _side_mean(h, ~hot)[_SIDE]
        above = ~hot & (h > relative * mean)
        p = np.ones(len(h))
        p[above] = stats.poisson.sf(h[above] - 1, relative * mean[above])
        new = above & (p < pvalue)
        if not new.any():
            break
        hot |= new
        passes += 1
    status = np.where(hot, ChannelStatus.HOT, ChannelStatus.OK).astype(np.int8)
    return status, mean, passes


class HotStripsAlgorithm(Algorithm):
    """SVDHotStripsCalibrations and SVDOccupancyCalibrations from the strip hits."""

    name = "svd_hot_strips"
    payloads = (HOT_STRIPS, OCCUPANCY)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        hits_h, ev_h = require(data, "strip_hits", "events", message="no SVD clusters")
        hits = np.asarray(hits_h.values(), dtype=np.float64)
        n = float(ev_h.values().sum())
        diag = Diagnostics(histograms={"strip_hits": hits_h})
        min_events = float(cfg["min_events"])
        if n < min_events:
            raise NotEnoughData(f"{n:.0f} events < {min_events:.0f}", diag)
        if hits.sum() == 0:
            raise NotEnoughData(f"no SVD strip hits in {n:.0f} events", diag)
        status, mean, passes = find_hot_strips(
            hits,
            n,
            absolute=float(cfg["absolute_occupancy"]),
            relative=float(cfg["relative_occupancy"]),
            pvalue=float(cfg["relative_pvalue"]),
        )
        occ = hits / n
        lo, hi = binomial_interval(hits, n)
        hot = status == ChannelStatus.HOT
        diag.tables["strips"] = {
            "strip_index": np.arange(vxd.N_SVD_STRIPS),
            "hits": hits,
            "side_mean_hits": mean,
            "status": status,
        }
        flags = Payload(
            HOT_STRIPS,
            keys=dict(STRIP_KEYS),
            values={"value": hot.astype(np.float64), "occupancy": np.where(hot, occ, 0.0)},
            status=status,
            metadata={
                "units": {"value": "1", "occupancy": "1"},
                "description": "hot-strip flag per strip (1 = hot); occupancy = hits per event "
                "of a hot strip",
                "method": f"occupancy > {cfg['absolute_occupancy']}, then > "
                f"{cfg['relative_occupancy']} x the side mean of the other strips (Poisson p < "
                f"{cfg['relative_pvalue']}) until none is added (basf2 "
                "SVDHotStripsCalibrationsAlgorithm)",
            },
        )
        occupancy = Payload(
            OCCUPANCY,
            keys=dict(STRIP_KEYS),
            values={"value": occ, "lower": lo, "upper": hi},
            errors={"value": 0.5 * (hi - lo)},
            status=np.full(len(occ), ChannelStatus.OK, dtype=np.int8),
            metadata={
                "units": {"value": "1", "lower": "1", "upper": "1"},
                "description": "strip occupancy (hits per event) with its central 68.27 % "
                "Clopper-Pearson interval; error = half its width",
                "events": n,
            },
        )
        summary = status_counts(status)
        return AlgorithmResult(
            AlgorithmStatus.OK,
            [flags, occupancy],
            diag,
            f"{n:.0f} events, {passes} relative passes; {summary}",
        )


def _describe(context: ViewContext, row: int) -> str:
    """The decision on a strip with its numbers."""
    t = context.table("strips")
    hits, mean = float(t["hits"][row]), float(t["side_mean_hits"][row])
    cfg = context.config
    text = (
        f"{context.status}: no per-channel fit: this calibration counts hits; {hits:.0f} hits, "
        f"its side's mean {mean:.2f} per strip"
    )
    if context.status == "HOT":
        text += (
            f" (hot: occupancy above {cfg.get('absolute_occupancy')}, or above "
            f"{cfg.get('relative_occupancy')} x the side's mean with a p-value below "
            f"{cfg.get('relative_pvalue')})"
        )
    return text


#: The strip's hits among its neighbours', and the decision.
_VIEW = CountingView(
    "strips",
    None,
    _describe,
    histogram="strip_hits",
    x_label="strip index",
    y_label="hits",
    neighbours=64,
)


def hot_strips_calibration() -> Calibration:
    """``svd-hot-strips``: SVDHotStripsCalibrations and SVDOccupancyCalibrations."""
    return Calibration(
        name="svd-hot-strips",
        validation=PayloadComparison(
            per_payload={
                # hot strips flagged (the flag column is the status)
                "SVDHotStripsCalibrations": PayloadComparison(
                    columns=(), warn_new_flagged_fraction=0.0005, error_new_flagged_fraction=0.01
                ),
                # occupancies follow the beam background: absolute, per event
                "SVDOccupancyCalibrations": PayloadComparison(
                    columns=("value",), max_pull=None, max_abs_change=0.02
                ),
            }
        ),
        expert="svd-calibration@b2calib.example",
        inputs={"strips": CollectorInput(StripHitCollector(), ("hlt_hadron",))},
        algorithms=[HotStripsAlgorithm()],
        strategy=SequentialRunByRun(),
        input_format="cdst",
        stage="raw",
        run_type="physics",
        expert_config={
            "min_events": 500,
            "absolute_occupancy": 0.2,
            "relative_occupancy": 5.0,
            "relative_pvalue": 1e-6,
        },
        open_end=True,
        description="SVD hot strips (SVDHotStripsCalibrations, a flag per strip) and strip "
        "occupancy (SVDOccupancyCalibrations): strips above 20 % occupancy, then repeatedly "
        "above 5 x the sensor-side mean of the others until none is added.",
        fit_views={HOT_STRIPS: _VIEW, OCCUPANCY: _VIEW},
    )


def __dir__() -> list[str]:
    return __all__
