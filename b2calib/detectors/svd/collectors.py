"""SVD collectors: event T0 against the raw cluster time per sensor side (``svd-time``), and the
strip hits of every strip with the number of events (``svd-hot-strips``).

Sensor sides are numbered ``2 * sensor index + side`` (side 1 = U, the sensors in the order of
:data:`b2calib.geometry.vxd.SVD_SENSOR_TABLE`); strips are numbered flat over the sensor sides
(:data:`b2calib.geometry.vxd.SVD_SIDE_FIRST`), 768 per side except the 512-strip V sides of
layers 4-6.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, cast

import awkward as ak
import hist
import numba
import numpy as np
import numpy.typing as npt

from b2calib.engine import Collector
from b2calib.engine.fill import fill_2d
from b2calib.exceptions import BadValueError
from b2calib.geometry import top, vxd

__all__ = [
    "N_SIDES",
    "RAW_AXIS",
    "T0_AXIS",
    "ClusterTimeCollector",
    "StripHitCollector",
    "side_index",
]

I64 = npt.NDArray[np.int64]

#: SVD sensor sides (172 sensors x 2).
N_SIDES = 2 * vxd.N_SVD_SENSORS
#: Raw cluster time axis (ns): 1 ns bins over the times on-track clusters take.
RAW_AXIS = (100, -45.0, 55.0)
#: Event T0 axis (ns): one bin per RF bucket (1.965 ns) centred on it, over the collision times
#: (collisions happen at bunch crossings: each bin holds one bunch's event T0s, whose 0.8 ns
#: resolution leaves 2 % of them in the neighbouring bins).
T0_AXIS = (21, -10.5 * top.RF_PERIOD_NS, 10.5 * top.RF_PERIOD_NS)
_CLUSTERS = {
    "SVDClusters_m_sensorID": "var * int32",
    "SVDClusters_m_isUCluster": "var * int8",
}


def _flat(events: ak.Array, branch: str, dtype: Any) -> npt.NDArray[Any]:
    return np.asarray(ak.to_numpy(ak.flatten(events[branch])), dtype=dtype)


def side_index(sensor_id: npt.ArrayLike, is_u: npt.ArrayLike) -> I64:
    """Sensor-side index ``2 * sensor index + side`` of clusters (VxdID, side 1 = U).

    Raises
    ------
    BadValueError
        For a VxdID that is no SVD sensor (branch ``SVDClusters_m_sensorID``).
    """
    try:
        sensor = vxd.sensor_index(sensor_id, "SVD")
    except ValueError as err:
        raise BadValueError("SVDClusters_m_sensorID", f"SVD clusters with {err}") from None
    return np.asarray(2 * sensor + np.asarray(is_u, dtype=np.int64), dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def _fill_strips(out, last, evt, side, first, size, side_first, side_n):  # type: ignore[no-untyped-def,unused-ignore]
    """Add one hit per strip and event to ``out`` (flow bins: strip k at k + 1) for clusters
    of contiguous events; ``last`` (strips) holds the last event that hit each strip."""
    for i in range(evt.shape[0]):
        f0 = side_first[side[i]]
        n = side_n[side[i]]
        for j in range(max(size[i], 1)):
            st = first[i] + j
            if st < 0 or st >= n:
                continue
            k = f0 + st
            if last[k] != evt[i]:
                last[k] = evt[i]
                out[k + 1] += 1


def _view(h: hist.Hist) -> I64:
    return cast(I64, h.view(flow=True))


@dataclasses.dataclass(frozen=True)
class ClusterTimeCollector(Collector):
    """Per sensor side, the event T0 against the raw CoG time of the clusters on tracks, in
    events with an event T0 (basf2 ``SVDCoGTimeCalibrationCollector``).

    One 2-D histogram: x the sensor side and the raw time bin combined
    (``side * RAW_AXIS[0] + bin``; clusters outside :data:`RAW_AXIS` are not filled), y the
    event T0 on :data:`T0_AXIS`.
    """

    version: ClassVar[int] = 3

    @property
    def branches(self) -> dict[str, str]:
        return {
            "EventMetaData_m_run": "int32",
            "EventT0_m_eventT0": "float32",
            "EventT0_m_hasEventT0": "int8",
            **_CLUSTERS,
            "SVDClusters_m_clsTime": "var * float32",
            "SVDClusters_m_trackIndex": "var * int16",
        }

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        nr, lo, hi = RAW_AXIS
        xaxis = (N_SIDES * nr, -0.5, N_SIDES * nr - 0.5)
        h = hist.Hist(
            hist.axis.Regular(*xaxis, name="side_raw"),
            hist.axis.Regular(*T0_AXIS, name="t0"),
            storage=hist.storage.Int64(),
        )
        if len(events):
            n_cls = ak.to_numpy(ak.num(events["SVDClusters_m_clsTime"]))
            t0f = np.repeat(ak.to_numpy(events["EventT0_m_eventT0"]).astype(np.float64), n_cls)
            hasf = np.repeat(ak.to_numpy(events["EventT0_m_hasEventT0"]) == 1, n_cls)
            raw = _flat(events, "SVDClusters_m_clsTime", np.float64)
            on = (_flat(events, "SVDClusters_m_trackIndex", np.int64) >= 0) & hasf
            on &= (raw >= lo) & (raw < hi)
            side = side_index(
                _flat(events, "SVDClusters_m_sensorID", np.int64)[on],
                _flat(events, "SVDClusters_m_isUCluster", np.int64)[on],
            )
            rbin = np.clip(np.floor((raw[on] - lo) / (hi - lo) * nr), 0, nr - 1).astype(np.int64)
            fill_2d(_view(h), side * nr + rbin, t0f[on], xaxis, T0_AXIS)
        return {"t0_vs_raw": h}


@dataclasses.dataclass(frozen=True)
class StripHitCollector(Collector):
    """Hits of every strip (each strip of every cluster, at most once per event and strip: an
    SVD strip gives one digit per event) and the number of events (basf2
    ``SVDOccupancyCalibrationsCollector``)."""

    version: ClassVar[int] = 3

    @property
    def branches(self) -> dict[str, str]:
        return {
            "EventMetaData_m_run": "int32",
            **_CLUSTERS,
            "SVDClusters_m_firstStrip": "var * int16",
            "SVDClusters_m_clsSize": "var * int8",
        }

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        axis = (vxd.N_SVD_STRIPS, -0.5, vxd.N_SVD_STRIPS - 0.5)
        hits = hist.Hist(hist.axis.Regular(*axis, name="strip"), storage=hist.storage.Int64())
        n = hist.Hist(hist.axis.Regular(1, 0.0, 1.0, name="events"), storage=hist.storage.Int64())
        n.view(flow=True)[1] = len(events)
        if len(events):
            counts = ak.to_numpy(ak.num(events["SVDClusters_m_sensorID"]))
            evt = np.repeat(np.arange(len(events), dtype=np.int64), counts)
            side = side_index(
                _flat(events, "SVDClusters_m_sensorID", np.int64),
                _flat(events, "SVDClusters_m_isUCluster", np.int64),
            )
            first = _flat(events, "SVDClusters_m_firstStrip", np.int64)
            size = _flat(events, "SVDClusters_m_clsSize", np.int64)
            last = np.full(vxd.N_SVD_STRIPS, -1, dtype=np.int64)
            _fill_strips(
                _view(hits), last, evt, side, first, size, vxd.SVD_SIDE_FIRST, vxd.SVD_SIDE_STRIPS
            )
        return {"strip_hits": hits, "events": n}


def __dir__() -> list[str]:
    return __all__
