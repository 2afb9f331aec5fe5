"""What a payload must hold, per payload type: the checks a payload passes on its way into the
conditions database.

:data:`PAYLOAD_TYPES` is the one table of the payloads the simulator's truth and the calibrations
write, built on :mod:`b2calib.geometry`: for each payload name its detector, its key columns with
their ranges (the channel numbering of the detector), combinations of keys that must name real
parts (an SVD sensor, a PXD sensor's VxdID) and the number of rows (one per channel, or any
number for a list of some channels such as hot pixels).

:func:`check_payload` refuses, with one line naming the payload and what is wrong:

* for every payload: keys that are not integers, value columns that are not numbers, status
  codes that are not a :class:`~b2calib.conditions.ChannelStatus`, a key that appears twice, a
  value or error that is NaN or infinite in a row whose status is OK (in any row when the payload
  has no status), and a payload of NaN (no finite value at all, unless the status flags every
  channel: a calibration that found no channel it could calibrate says so);
* for a payload type of the table, besides: other key columns, another number of rows, keys
  outside their detector's range, key combinations that name no part of the detector, missing
  value columns;
* for a time-dependent payload (:mod:`b2calib.conditions.eventdep`: the beam payloads
  ``BeamSpot``, ``CollisionBoostVector``, ``CollisionInvariantMass``, whose rows are time
  intervals, and any payload marked ``event_dependency = "time"``): a type that must be
  time-dependent and is not marked so, interval keys ``t_start``/``t_end`` missing or not
  integers, an interval with ``t_end <= t_start``, rows not sorted by ``t_start``, and two
  intervals that overlap.

A payload name outside the table gets the checks of every payload only. The conditions database
checks every payload it stores (:class:`~b2calib.conditions.PayloadFile`: uploads, local
database imports, staging of calibration results).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from b2calib.conditions.status import ChannelStatus
from b2calib.exceptions import PayloadError
from b2calib.geometry import arich, cdc, ecl, klm, top, vxd

if TYPE_CHECKING:
    from b2calib.conditions.payload import Payload

__all__ = ["DEDX_COS_BINS", "PAYLOAD_TYPES", "PayloadType", "check_payload"]

#: Bins in cos(theta) of the CDC dE/dx cosine correction (``CDCDedxCosineCor``).
DEDX_COS_BINS = 100
_STATUS_CODES = np.array([s.value for s in ChannelStatus], dtype=np.int64)


@dataclass(frozen=True)
class PayloadType:
    """What a payload of one name holds.

    Parameters
    ----------
    detector
        The detector (or system) the payload calibrates.
    keys
        Key column -> (lowest, highest) value, inclusive; no key columns for a single row.
    rows
        The number of rows, or ``None`` for a list of some channels (at most one row per key).
    channel
        What one row is, for messages (``"ECL crystal"``).
    members
        (key columns, the combinations of their values that exist, what those are): e.g. the
        (layer, ladder, sensor) of every SVD sensor.
    values
        Value columns the payload must have (others may be added).
    time_dependent
        The rows are time intervals (keys ``t_start``, ``t_end`` in UNIX ns; metadata
        ``event_dependency = "time"``, :mod:`b2calib.conditions.eventdep`).
    """

    detector: str
    keys: Mapping[str, tuple[int, int]]
    rows: int | None
    channel: str
    members: tuple[tuple[tuple[str, ...], frozenset[tuple[int, ...]], str], ...] = field(
        default=(), repr=False
    )
    values: tuple[str, ...] = ()
    time_dependent: bool = False


def _rows(table: npt.NDArray[Any]) -> frozenset[tuple[int, ...]]:
    return frozenset(tuple(int(v) for v in row) for row in np.atleast_2d(table))


_CELL = {"cellID": (1, ecl.N_CRYSTALS)}
_WIRE = {"wire": (0, cdc.N_WIRES - 1)}
_TOP_CHANNEL = {"module": (1, top.N_MODULES), "pixel": (1, top.N_PIXELS)}
_KLM_CHANNEL = {"channel": (1, klm.N_CHANNELS)}
_SVD_SENSOR = {
    "layer": (min(vxd.SVD_LADDERS), max(vxd.SVD_LADDERS)),
    "ladder": (1, max(vxd.SVD_LADDERS.values())),
    "sensor": (1, max(vxd.SVD_SENSORS.values())),
}
_SVD_SENSORS = (("layer", "ladder", "sensor"), _rows(vxd.SVD_SENSOR_TABLE), "SVD sensors")
_PXD_ID = {"sensorID": (int(vxd.PXD_IDS.min()), int(vxd.PXD_IDS.max()))}
_PXD_SENSORS = (("sensorID",), _rows(vxd.PXD_IDS[:, None]), "PXD sensors (VxdID)")
_PXD_PIXEL = {**_PXD_ID, "u": (0, vxd.PXD_NU - 1), "v": (0, vxd.PXD_NV - 1)}
#: Interval keys of a time-dependent payload: UNIX nanoseconds (EventMetaData_m_time).
_TIME = {"t_start": (0, 2**63 - 1), "t_end": (0, 2**63 - 1)}
_COV = ("cov_xx", "cov_xy", "cov_xz", "cov_yy", "cov_yz", "cov_zz")
_SIZE = ("size_xx", "size_xy", "size_xz", "size_yy", "size_yz", "size_zz")


def _beam(values: tuple[str, ...]) -> PayloadType:
    """A beam payload: one row per time interval."""
    return PayloadType("beam", _TIME, None, "time interval", values=values, time_dependent=True)


#: The payload types the simulator's truth and the calibrations write, by payload name.
PAYLOAD_TYPES: dict[str, PayloadType] = {
    **{
        name: PayloadType("ECL", _CELL, ecl.N_CRYSTALS, "ECL crystal")
        for name in (
            "ECLCrystalEnergy",
            "ECLCrystalEnergy5x5",
            "ECLCrystalEnergyGammaGamma",
            "ECLCrystalEnergyMuMu",
            "ECLCrystalTimeOffset",
        )
    },
    "ECLCrateTimeOffset": PayloadType("ECL", {"crate": (1, ecl.N_CRATES)}, ecl.N_CRATES, "crate"),
    "CDCTimeZeros": PayloadType("CDC", _WIRE, cdc.N_WIRES, "CDC sense wire"),
    "CDCDedxWireGain": PayloadType("CDC", _WIRE, cdc.N_WIRES, "CDC sense wire"),
    "CDCXtRelations": PayloadType(
        "CDC",
        {"layer": (0, cdc.N_LAYERS - 1), "lr": (0, 1)},
        2 * cdc.N_LAYERS,
        "(CDC layer, left/right)",
    ),
    "CDCDedxRunGain": PayloadType("CDC", {}, 1, "run"),
    "CDCDedxCosineCor": PayloadType(
        "CDC", {"bin": (0, DEDX_COS_BINS - 1)}, DEDX_COS_BINS, "cos(theta) bin"
    ),
    "TOPCalModuleT0": PayloadType("TOP", {"module": (1, top.N_MODULES)}, top.N_MODULES, "module"),
    "TOPCalChannelT0": PayloadType("TOP", _TOP_CHANNEL, top.N_CHANNELS, "TOP channel"),
    "TOPCalChannelMask": PayloadType("TOP", _TOP_CHANNEL, top.N_CHANNELS, "TOP channel"),
    "TOPCalCommonT0": PayloadType("TOP", {}, 1, "run"),
    "KLMStripEfficiency": PayloadType("KLM", _KLM_CHANNEL, klm.N_CHANNELS, "KLM strip"),
    "KLMTimeCableDelay": PayloadType("KLM", _KLM_CHANNEL, klm.N_CHANNELS, "KLM strip"),
    "KLMTimeConstants": PayloadType(
        "KLM", {"type": (1, len(klm.TIME_TYPES))}, len(klm.TIME_TYPES), "KLM strip type"
    ),
    "ARICHChannelMask": PayloadType(
        "ARICH",
        {"module": (1, arich.N_MODULES), "channel": (0, arich.N_CHANNELS_PER_MODULE - 1)},
        arich.N_CHANNELS,
        "ARICH channel",
    ),
    "SVDCoGTimeCalibrations": PayloadType(
        "SVD",
        {**_SVD_SENSOR, "side": (0, 1)},
        2 * vxd.N_SVD_SENSORS,
        "SVD sensor side",
        (_SVD_SENSORS,),
    ),
    "SVDHotStripsCalibrations": PayloadType(
        "SVD",
        {**_SVD_SENSOR, "side": (0, 1), "strip": (0, vxd.SVD_STRIPS - 1)},
        None,
        "hot SVD strip",
        (_SVD_SENSORS,),
    ),
    "SVDOccupancyCalibrations": PayloadType(
        "SVD",
        {**_SVD_SENSOR, "side": (0, 1), "strip": (0, vxd.SVD_STRIPS - 1)},
        vxd.N_SVD_STRIPS,
        "SVD strip",
        (_SVD_SENSORS,),
    ),
    "PXDMaskedPixelPar": PayloadType("PXD", _PXD_PIXEL, None, "hot PXD pixel", (_PXD_SENSORS,)),
    "PXDDeadPixelPar": PayloadType("PXD", _PXD_PIXEL, None, "dead PXD pixel", (_PXD_SENSORS,)),
    "PXDOccupancyInfoPar": PayloadType(
        "PXD", _PXD_ID, vxd.N_PXD_SENSORS, "PXD sensor", (_PXD_SENSORS,)
    ),
    "PXDGainMapPar": PayloadType(
        "PXD",
        {**_PXD_ID, "ubin": (0, vxd.PXD_GAIN_BINS_U - 1), "vbin": (0, vxd.PXD_GAIN_BINS_V - 1)},
        vxd.N_PXD_SENSORS * vxd.PXD_GAIN_BINS_U * vxd.PXD_GAIN_BINS_V,
        "(PXD sensor, u bin, v bin)",
        (_PXD_SENSORS,),
    ),
    "BeamSpot": _beam(("x", "y", "z", *_COV, *_SIZE)),
    "CollisionBoostVector": _beam(("bx", "by", "bz", *_COV)),
    "CollisionInvariantMass": _beam(("mass", "spread")),
}


def check_payload(payload: Payload, source: str | None = None) -> None:
    """Refuse (:class:`~b2calib.exceptions.PayloadError`) a payload that does not hold what its
    type must (see the module's description).

    Parameters
    ----------
    payload
        The payload.
    source
        Where it comes from (a file), named in the message before the payload.
    """
    problem = _problem(payload, PAYLOAD_TYPES.get(payload.name))
    if problem is not None:
        where = f"{source}: " if source else ""
        raise PayloadError(f"{where}payload {payload.name}: {problem}")


def _problem(payload: Payload, kind: PayloadType | None) -> str | None:
    """What is wrong with ``payload`` (of type ``kind``, ``None`` if unknown), or ``None``."""
    keys = payload.keys
    for col, arr in payload.columns.items():
        if arr.ndim != 1:
            return f"column {col} holds {arr.ndim}-dimensional rows, not one number per row"
    for col, arr in keys.items():
        if arr.dtype.kind not in "iu":
            return f"key column {col} holds {arr.dtype}, not integers"
    numbers = {**payload.values, **{f"{k}_err": v for k, v in payload.errors.items()}}
    for col, arr in numbers.items():
        if arr.dtype.kind not in "biuf":
            return f"column {col} holds {arr.dtype}, not numbers"
    if payload.status is not None:
        wrong = ~np.isin(payload.status, _STATUS_CODES)
        if wrong.any():
            codes = ", ".join(str(c) for c in np.unique(payload.status[wrong])[:5].tolist())
            return f"{int(wrong.sum())} rows have a status that is no ChannelStatus ({codes})"
    if kind is not None:
        problem = _type_problem(payload, kind)
        if problem is not None:
            return problem
    if (kind is not None and kind.time_dependent) or _marked_time(payload):
        problem = _time_problem(payload, kind)
        if problem is not None:
            return problem
    if keys:
        problem = _duplicates(keys)
        if problem is not None:
            return problem
    return _nonfinite(payload, numbers)


def _type_problem(payload: Payload, kind: PayloadType) -> str | None:
    keys = payload.keys
    if set(keys) != set(kind.keys):
        return f"key columns {list(keys)}, expected {list(kind.keys)}"
    if kind.rows is not None and len(payload) != kind.rows:
        return f"{len(payload)} rows, expected {kind.rows} (one per {kind.channel})"
    missing = [v for v in kind.values if v not in payload.values]
    if missing:
        return f"no value column {', '.join(missing)} (a {payload.name} holds {_list(kind)})"
    for col, (lo, hi) in kind.keys.items():
        arr = keys[col]
        out = (arr < lo) | (arr > hi)
        if out.any():
            seen = ", ".join(str(v) for v in dict.fromkeys(arr[out].tolist()[:3]))
            return (
                f"{int(out.sum())} {col} keys outside the {kind.detector} range {lo}..{hi} "
                f"(e.g. {seen})"
            )
    for cols, allowed, what in kind.members:
        combos, counts = _unique_rows([keys[c] for c in cols])
        unknown = np.array([tuple(r) not in allowed for r in combos.tolist()], dtype=bool)
        if unknown.any():
            n = int(counts[unknown].sum())
            example = dict(zip(cols, combos[unknown][0].tolist(), strict=True))
            return f"{n} rows' ({', '.join(cols)}) are not {what} (e.g. {_text(example)})"
    return None


def _marked_time(payload: Payload) -> bool:
    return payload.metadata.get("event_dependency") == "time"


def _time_problem(payload: Payload, kind: PayloadType | None) -> str | None:
    """What is wrong with the time intervals of a time-dependent payload, or ``None``."""
    if not _marked_time(payload):
        return (
            "is not marked time-dependent (metadata event_dependency = 'time'): its rows are "
            "time intervals (b2calib.conditions.eventdep.time_dependent builds one)"
        )
    keys = payload.keys
    missing = [k for k in ("t_start", "t_end") if k not in keys]
    if missing:
        return f"time-dependent, but has no interval key column {' or '.join(missing)}"
    if len(payload) == 0:
        return "time-dependent, but holds no time interval"
    t0, t1 = (keys[k].astype(np.int64) for k in ("t_start", "t_end"))
    bad = np.flatnonzero(t1 <= t0)
    if len(bad):
        i = int(bad[0])
        return (
            f"{len(bad)} time intervals end before they start (t_end <= t_start), e.g. row {i}: "
            f"t_start={t0[i]}, t_end={t1[i]} ns"
        )
    back = np.flatnonzero(np.diff(t0) < 0)
    if len(back):
        i = int(back[0])
        return (
            f"rows are not sorted by t_start (row {i + 1} starts at {t0[i + 1]} ns, before row "
            f"{i} at {t0[i]} ns)"
        )
    pairs = np.unique(np.column_stack([t0, t1]), axis=0)
    over = np.flatnonzero(pairs[1:, 0] < pairs[:-1, 1])
    if len(over):
        i = int(over[0])
        return (
            f"{len(over)} time intervals overlap the previous one, e.g. "
            f"[{pairs[i, 0]}, {pairs[i, 1]}) and [{pairs[i + 1, 0]}, {pairs[i + 1, 1]}) ns"
        )
    return None


def _packed(cols: Sequence[npt.NDArray[Any]]) -> npt.NDArray[np.int64] | None:
    """The rows of the integer key columns ``cols`` as one int64 each, in the rows'
    lexicographic order (``None`` when their ranges do not fit in 62 bits, or without rows):
    sorting one column is ~10 times faster than a lexsort or a row-wise unique of 10^5-10^6 rows
    (per-strip, per-pixel payloads). Made column by column: the reductions of a stacked
    (rows, columns) array run across its rows' strides, several times slower."""
    if not cols or len(cols[0]) == 0:
        return None
    lo = [int(c.min()) for c in cols]
    hi = [int(c.max()) for c in cols]
    span = [high - low + 1 for high, low in zip(hi, lo, strict=True)]
    if math.prod(span) >= 2**62 or min(lo) < -(2**62) or max(hi) >= 2**62:
        return None  # (uint64 keys beyond int64 too)
    packed = cols[0].astype(np.int64)  # a copy, also of an int64 column
    packed -= lo[0]
    for c, low, width in zip(cols[1:], lo[1:], span[1:], strict=True):
        packed *= width
        np.add(packed, c, out=packed, casting="unsafe")  # uint64 keys: in range, checked above
        packed -= low
    return packed


def _unique_rows(
    cols: Sequence[npt.NDArray[Any]],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The distinct rows of the columns ``cols`` (an int64 array, a row each, in order) and how
    many rows each is: ``np.unique(rows, axis=0, return_counts=True)``. Through :func:`_packed`
    when it can, without sorting when the rows come in order (as a payload's channels do)."""
    packed = _packed(cols)
    if packed is None:
        rows = np.column_stack([c.astype(np.int64) for c in cols])
        combos, counts = np.unique(rows, axis=0, return_counts=True)
        return combos, counts
    step = np.diff(packed)
    if np.all(step >= 0):
        first = np.flatnonzero(np.concatenate(([True], step != 0)))
        counts = np.diff(np.append(first, len(packed)))
    else:
        _, first, counts = np.unique(packed, return_index=True, return_counts=True)
    return np.column_stack([c[first].astype(np.int64) for c in cols]), counts


def _duplicates(keys: Mapping[str, npt.NDArray[Any]]) -> str | None:
    cols = list(keys.values())
    packed = _packed(cols)
    if packed is not None:
        step = np.diff(packed)
        if np.all(step > 0):  # in order, none repeated: no sort needed
            return None
        if np.all(np.diff(np.sort(packed)) != 0):
            return None
    rows = np.column_stack([a.astype(np.int64) for a in cols])
    ordered = rows[np.lexsort(rows.T[::-1])]
    again = np.all(ordered[1:] == ordered[:-1], axis=1)
    if not again.any():
        return None
    example = dict(zip(keys, ordered[1:][again][0].tolist(), strict=True))
    return f"{int(again.sum())} rows repeat the key of another row (e.g. {_text(example)})"


def _nonfinite(payload: Payload, numbers: Mapping[str, npt.NDArray[Any]]) -> str | None:
    ok = (
        np.ones(len(payload), dtype=bool)
        if payload.status is None
        else payload.status == ChannelStatus.OK
    )
    floats = [a for a in payload.values.values() if a.dtype.kind == "f"]
    if ok.any() and floats and not any(np.isfinite(a).any() for a in floats):
        return "no value is finite (a payload of NaN)"
    for col, arr in numbers.items():
        if arr.dtype.kind != "f":
            continue
        bad = ok & ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            where = {k: v[i].item() for k, v in payload.keys.items()} or {"row": i}
            status = "" if payload.status is None else " whose status is OK"
            return (
                f"{col} is {arr[i]} in {int(bad.sum())} rows{status} (e.g. {_text(where)}); "
                "only a channel flagged in the status column may have no value"
            )
    return None


def _list(kind: PayloadType) -> str:
    return ", ".join(kind.values)


def _text(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def __dir__() -> list[str]:
    return __all__
