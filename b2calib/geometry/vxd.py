"""Vertex detector: PXD (layers 1-2) and SVD (layers 3-6), sensors addressed by basf2 VxdID.

VxdID packs ``layer`` (3 bits), ``ladder`` (5 bits), ``sensor`` (3 bits) and ``segment``
(5 bits) as ``layer << 13 | ladder << 8 | sensor << 5 | segment``. Ladders and sensors are
1-based as in basf2.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: SVD: ladders and sensors per ladder for layers 3..6; 768 strips per sensor side, except the
#: V side (side 0, strips along z) of the sensors of layers 4-6: 512 (:data:`SVD_STRIPS_V`).
SVD_LADDERS = {3: 7, 4: 10, 5: 12, 6: 16}
SVD_SENSORS = {3: 2, 4: 3, 5: 4, 6: 5}
SVD_RADIUS = {3: 3.9, 4: 8.0, 5: 10.4, 6: 13.5}
SVD_STRIPS = 768
#: SVD raw CoG time range (ns) the readout gives and over which the time calibration polynomial
#: must be monotonic.
SVD_RAW_RANGE = (-80.0, 120.0)
#: Strips of the V side (side 0) per layer.
SVD_STRIPS_V = {3: 768, 4: 512, 5: 512, 6: 512}
SVD_SENSOR_LENGTH = 12.3  # cm along z
#: PXD: ladders and sensors per ladder for layers 1..2; 250 (u) x 768 (v) pixels per sensor.
PXD_LADDERS = {1: 8, 2: 12}
PXD_SENSORS = {1: 2, 2: 2}
PXD_RADIUS = {1: 1.4, 2: 2.2}
PXD_NU, PXD_NV = 250, 768
PXD_SENSOR_LENGTH = {1: 4.48, 2: 6.14}  # cm along z
#: Gain-map binning per PXD sensor (u bins x v bins), as basf2 PXDGainMapPar.
PXD_GAIN_BINS_U, PXD_GAIN_BINS_V = 4, 6


def vxd_id(
    layer: npt.ArrayLike, ladder: npt.ArrayLike, sensor: npt.ArrayLike
) -> npt.NDArray[np.int64]:
    """basf2 VxdID integer of (layer, ladder, sensor)."""
    return (
        (np.asarray(layer, np.int64) << 13)
        | (np.asarray(ladder, np.int64) << 8)
        | (np.asarray(sensor, np.int64) << 5)
    )


def decode_vxd_id(vid: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], ...]:
    """(layer, ladder, sensor) of VxdID integers."""
    v = np.asarray(vid, dtype=np.int64)
    return (v >> 13) & 0x7, (v >> 8) & 0x1F, (v >> 5) & 0x7


def _sensors(ladders: dict[int, int], sensors: dict[int, int]) -> npt.NDArray[np.int64]:
    rows = [
        (lay, lad, sen)
        for lay in sorted(ladders)
        for lad in range(1, ladders[lay] + 1)
        for sen in range(1, sensors[lay] + 1)
    ]
    return np.array(rows, dtype=np.int64)


#: (layer, ladder, sensor) of all 172 SVD sensors and all 40 PXD sensors.
SVD_SENSOR_TABLE = _sensors(SVD_LADDERS, SVD_SENSORS)
PXD_SENSOR_TABLE = _sensors(PXD_LADDERS, PXD_SENSORS)
N_SVD_SENSORS = len(SVD_SENSOR_TABLE)
N_PXD_SENSORS = len(PXD_SENSOR_TABLE)
N_PXD_PIXELS = N_PXD_SENSORS * PXD_NU * PXD_NV
SVD_IDS = vxd_id(*SVD_SENSOR_TABLE.T)
PXD_IDS = vxd_id(*PXD_SENSOR_TABLE.T)


def svd_strips(layer: npt.ArrayLike, side: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Strips of SVD sensor sides (side 1 = U: 768; side 0 = V: 768 in layer 3, else 512)."""
    lay = np.asarray(layer, np.int64)
    v = np.where(lay == 3, SVD_STRIPS_V[3], SVD_STRIPS_V[4])
    return np.asarray(np.where(np.asarray(side) == 1, SVD_STRIPS, v), dtype=np.int64)


#: Strips of each SVD sensor side, index ``2 * sensor index + side`` (side 1 = U).
SVD_SIDE_STRIPS = svd_strips(np.repeat(SVD_SENSOR_TABLE[:, 0], 2), np.tile([0, 1], N_SVD_SENSORS))
#: First strip of each sensor side in the flat strip numbering (sensor sides in order).
SVD_SIDE_FIRST = np.concatenate([[0], np.cumsum(SVD_SIDE_STRIPS)[:-1]]).astype(np.int64)
#: All SVD strips (223 744).
N_SVD_STRIPS = int(SVD_SIDE_STRIPS.sum())


def _index_table(ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    table = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
    table[ids] = np.arange(len(ids))
    return table


#: Sensor index by VxdID (-1: no such sensor), one lookup per hit.
_INDEX = {"SVD": _index_table(SVD_IDS), "PXD": _index_table(PXD_IDS)}


def sensor_index(vid: npt.ArrayLike, detector: str) -> npt.NDArray[np.int64]:
    """Position of VxdIDs in :data:`SVD_IDS` or :data:`PXD_IDS` (``detector`` "SVD"/"PXD").

    Raises
    ------
    ValueError
        For a VxdID that is no sensor of ``detector``, naming (up to five of) them.
    """
    table = _INDEX["SVD" if detector == "SVD" else "PXD"]
    v = np.asarray(vid, dtype=np.int64)
    inside = (v >= 0) & (v < len(table))
    pos = np.where(inside, table[np.where(inside, v, 0)], -1)
    if np.any(pos < 0):
        bad = np.unique(v[pos < 0])[:5].tolist()
        raise ValueError(f"unknown {detector} VxdID: {bad}")
    return np.asarray(pos, dtype=np.int64)
