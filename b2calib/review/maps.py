"""Detector maps: the cell of each row of a :class:`~b2calib.review.ChannelComparison` on a
2-D map of its detector, chosen by the payload's key columns.

=========================================  ====================================================
key columns                                map (x, y)
=========================================  ====================================================
``cellID`` (ECL crystals 1..8736)          phi index in the ring x theta ring (0..68)
``wire`` (CDC global wire 0..14335)        wire in its layer x layer (0..55)
``layer``, ``lr`` (CDC x-t relations)      left/right x layer
``module``, ``pixel`` (TOP)                pixel (1..512) x module (1..16)
``module``, ``channel`` (ARICH)            HAPD module in its ring (12 columns each) x ring
                                           (12 rows each): the 144 channels of a module are
                                           its 12 x 12 cells
``channel`` of a ``KLM*`` payload          sector (BKLM backward/forward 1..8, EKLM 1..4) x
                                           layer; the strips of a sector's layer share a cell
``layer``, ``ladder``, ``sensor``,         sensor (x 2 sides; with ``strip``: x 768 strips) x
``side`` [, ``strip``] (SVD)               ladder of each layer
``sensorID`` [, ``u``, ``v`` | ``ubin``,   v (or v bin) x sensor's u rows (sensors stacked:
``vbin``] (PXD)                            layer, ladder, sensor); ``sensorID`` alone: sensor
                                           x 0
=========================================  ====================================================

Other keys (crates, modules alone, no key, time intervals) have no map: :func:`detector_map`
returns ``None``, as it does when a key value is outside the detector's channels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from b2calib.geometry import arich, cdc, ecl, klm, top, vxd
from b2calib.review.compare import ChannelComparison

__all__ = ["DetectorMap", "detector_map", "map_of_keys"]

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DetectorMap:
    """Cell coordinates of the rows of a comparison (same order).

    Attributes
    ----------
    detector
        ``"ECL"``, ``"CDC"`` ...
    title, x_label, y_label
        What the map and its axes show.
    x, y
        int64 cell coordinates per row.
    x_labels, y_labels
        Optional tick labels: coordinate -> text (``{0: "L3.1", ...}``).
    shared
        Whether several rows can share a cell (KLM strips of a sector's layer): a view then
        shows one value per cell (e.g. the worst).
    """

    detector: str
    title: str
    x_label: str
    y_label: str
    x: I64
    y: I64
    x_labels: Mapping[int, str] = field(default_factory=dict)
    y_labels: Mapping[int, str] = field(default_factory=dict)
    shared: bool = False


def detector_map(comparison: ChannelComparison) -> DetectorMap | None:
    """The detector map of a comparison's rows, or ``None`` when no map fits its keys (see
    the module's description)."""
    return map_of_keys(comparison.name, comparison.keys)


def _in(a: I64, lo: int, hi: int) -> bool:
    return bool(len(a) == 0 or (a.min() >= lo and a.max() <= hi))


def map_of_keys(name: str, keys: Mapping[str, npt.NDArray[Any]]) -> DetectorMap | None:
    """The detector map of rows with these key columns (payload ``name``), or ``None``."""
    k = {c: np.asarray(v).astype(np.int64) for c, v in keys.items()}
    names = set(k)
    try:
        if names == {"cellID"} and _in(k["cellID"], 1, ecl.N_CRYSTALS):
            c = k["cellID"]
            return DetectorMap(
                "ECL", f"{name}: ECL crystals", "phi index", "theta ring",
                ecl.iphi_of(c), ecl.ring_of(c),
            )  # fmt: skip
        if names == {"wire"} and _in(k["wire"], 0, cdc.N_WIRES - 1):
            w = k["wire"]
            layer = cdc.layer_of(w)
            return DetectorMap(
                "CDC", f"{name}: CDC wires", "wire in layer", "layer",
                w - cdc.LAYER_FIRST[layer], layer,
            )  # fmt: skip
        if names == {"layer", "lr"} and _in(k["layer"], 0, cdc.N_LAYERS - 1):
            return DetectorMap(
                "CDC", f"{name}: CDC layers", "left / right", "layer", k["lr"], k["layer"],
                x_labels={0: "left", 1: "right"},
            )  # fmt: skip
        if (
            names == {"module", "pixel"}
            and _in(k["module"], 1, top.N_MODULES)
            and _in(k["pixel"], 1, top.N_PIXELS)
        ):
            return DetectorMap(
                "TOP", f"{name}: TOP pixels", "pixel", "module", k["pixel"], k["module"]
            )
        if (
            names == {"module", "channel"}
            and _in(k["module"], 1, arich.N_MODULES)
            and _in(k["channel"], 0, arich.N_CHANNELS_PER_MODULE - 1)
        ):
            m, ch = k["module"], k["channel"]
            ring = arich.ring_of(m)
            in_ring = m - 1 - arich.RING_FIRST[ring]
            return DetectorMap(
                "ARICH", f"{name}: ARICH HAPDs (12 x 12 channels each)",
                "HAPD module in its ring", "ring",
                in_ring * 12 + ch % 12, ring * 12 + ch // 12,
                x_labels={12 * i + 6: str(i) for i in range(int(arich.RING_NMODULES.max()))},
                y_labels={12 * r + 6: f"ring {r}" for r in range(len(arich.RING_NMODULES))},
            )  # fmt: skip
        if names == {"channel"} and name.startswith("KLM") and _in(k["channel"], 1, klm.N_CHANNELS):
            return _klm(name, k["channel"])
        if {"layer", "ladder", "sensor", "side"} <= names <= {
            "layer", "ladder", "sensor", "side", "strip"
        }:  # fmt: skip
            return _svd(name, k)
        if "sensorID" in names:
            return _pxd(name, k)
    except (IndexError, ValueError):
        return None
    return None


def _klm(name: str, ch: I64) -> DetectorMap:
    d = klm.decode(ch)
    bklm = d["subdetector"] == klm.BKLM
    # columns: BKLM section 0 sectors 1..8, section 1 sectors 1..8, EKLM section 1 1..4, 2 1..4
    x = np.where(
        bklm,
        d["section"] * klm.BKLM_SECTORS + d["sector"] - 1,
        2 * klm.BKLM_SECTORS + (d["section"] - 1) * klm.EKLM_SECTORS + d["sector"] - 1,
    )
    labels = {s * klm.BKLM_SECTORS + i: f"B{'bf'[s]}{i + 1}" for s in (0, 1) for i in range(8)}
    labels |= {
        2 * klm.BKLM_SECTORS + (s - 1) * klm.EKLM_SECTORS + i: f"E{'bf'[s - 1]}{i + 1}"
        for s in (1, 2)
        for i in range(klm.EKLM_SECTORS)
    }
    return DetectorMap(
        "KLM", f"{name}: KLM sectors and layers (strips share a cell)", "sector", "layer",
        x.astype(np.int64), d["layer"].astype(np.int64), x_labels=labels, shared=True,
    )  # fmt: skip


def _svd(name: str, k: Mapping[str, I64]) -> DetectorMap:
    layer, ladder, sensor, side = k["layer"], k["ladder"], k["sensor"], k["side"]
    first = {
        lay: sum(n for l2, n in vxd.SVD_LADDERS.items() if l2 < lay) for lay in vxd.SVD_LADDERS
    }
    if not _in(layer, min(vxd.SVD_LADDERS), max(vxd.SVD_LADDERS)):
        raise ValueError("not SVD layers")
    offset = np.zeros(8, dtype=np.int64)
    for lay, f in first.items():
        offset[lay] = f
    y = offset[layer] + ladder - 1
    labels = {
        first[lay] + i: f"L{lay}.{i + 1}"
        for lay in vxd.SVD_LADDERS
        for i in range(vxd.SVD_LADDERS[lay])
    }
    if "strip" in k:
        x = ((sensor - 1) * 2 + side) * vxd.SVD_STRIPS + k["strip"]
        return DetectorMap(
            "SVD", f"{name}: SVD strips", "sensor, side (u, v) and strip", "ladder", x, y,
            y_labels=labels,
        )  # fmt: skip
    x = (sensor - 1) * 2 + side
    xl = {2 * s + j: f"s{s + 1} {'vu'[j]}" for s in range(5) for j in (0, 1)}
    return DetectorMap(
        "SVD", f"{name}: SVD sensors", "sensor and side", "ladder", x, y,
        x_labels=xl, y_labels=labels,
    )  # fmt: skip


def _pxd(name: str, k: Mapping[str, I64]) -> DetectorMap | None:
    index = vxd.sensor_index(k["sensorID"], "PXD")
    lay, lad, sen = vxd.PXD_SENSOR_TABLE.T
    sensors = {i: f"{lay[i]}.{lad[i]}.{sen[i]}" for i in range(vxd.N_PXD_SENSORS)}
    names = set(k)
    if names == {"sensorID"}:
        return DetectorMap(
            "PXD", f"{name}: PXD sensors", "sensor", "", index, np.zeros_like(index),
            x_labels=sensors,
        )  # fmt: skip
    if names == {"sensorID", "u", "v"}:
        u, v = k["u"], k["v"]
        rows = vxd.PXD_NU
        x_label, y_label, x, y = "v", "sensor, u", v, index * rows + u
    elif names == {"sensorID", "ubin", "vbin"}:
        rows = int(k["ubin"].max()) + 1 if len(k["ubin"]) else 1
        x_label, y_label, x, y = "v bin", "sensor, u bin", k["vbin"], index * rows + k["ubin"]
    else:
        return None
    return DetectorMap(
        "PXD", f"{name}: PXD pixels", x_label, y_label, x, y,
        y_labels={i * rows + rows // 2: s for i, s in sensors.items()},
    )  # fmt: skip


def __dir__() -> list[str]:
    return __all__
