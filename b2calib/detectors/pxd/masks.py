"""PXD hot and dead pixels (``pxd-hot-dead``, ``pxd-hot-dead-cosmic``): PXDMaskedPixelPar,
PXDDeadPixelPar and PXDOccupancyInfoPar from the hits of every pixel of every sensor, as
basf2's PXDHotPixelMaskCalibrationAlgorithm does it, on raw data (before reconstruction).

The input is the number of digits of each of the 40 x 250 x 768 = 7.68 M pixels (pixel
``u * 768 + v`` of a sensor; :class:`PixelHitCollector`: one ``np.bincount`` per work item, no
loop over pixels) and the number of events. Then (:func:`find_masks`):

1. **Checks** (:func:`check_statistics`): at least ``min_hits`` (15) x 40 x 250 x 768 hits in
   all, and every live sensor's median hits per pixel >= ``min_hits``; else NOT_ENOUGH_DATA,
   unless ``force_continue_masking`` (the cosmic runs): then hot pixels are masked with what
   there is and dead ones only where the statistics allow it (whole sensors when the total
   passes, rows, drains and pixels of sensors whose median passes). A sensor without a single
   hit is a dead sensor, a finding rather than a shortage: it is left out of the median check.
2. **Dead** (PXDDeadPixelPar): sensors, then rows (gates, ``v``), then drains (``u * 4 + v %
   4``: the four drain lines of a column read every fourth row) and then single pixels with
   0 hits. With a mean of ``m`` hits per pixel a live pixel has 0 hits with probability
   ``exp(-m)``: :func:`false_dead_rate` (3e-7 at m = 15, ~2 pixels of 7.68 M).
3. **Hot** (PXDMaskedPixelPar): pixels above ``pixel_multiplier`` (7) x the sensor's median
   hits, then drains and then rows whose mean hits over their pixels not masked yet exceed
   ``drain_multiplier`` / ``row_multiplier`` (7) x the median (a median below 1 counts as 1).
   A pixel that fires in a fraction ``r`` of the events on top of a background of ``b`` hits
   per pixel per event is seen when ``r > (multiplier - 1) b``: :func:`hot_rate_threshold`.

Payloads: the two pixel lists keyed (sensorID, u, v) as the simulator's truth; a dead sensor,
row or drain is listed pixel by pixel (how each pixel was found is in the diagnostics' table
``masked`` and the payload metadata). Hot pixels have value = their noise rate per event
``lambda = -ln((1 - p) / (1 - b))`` (noise pulses; a pixel fires at most once an event) from
their firing fraction ``p`` and the sensor's median background ``b``, with the 68 %
Clopper-Pearson half-width of ``p`` (over ``1 - p``). PXDOccupancyInfoPar: per sensor the
mean occupancy (hits per pixel per event) of its pixels left unmasked, with its Poisson error;
DEAD for a dead sensor, NOT_ENOUGH_DATA for one below the median check.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, cast

import awkward as ak
import hist
import numba
import numpy as np
import numpy.typing as npt

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
    SimpleRunByRun,
)
from b2calib.calibration.fitview import CountingView, ViewContext
from b2calib.calibration.toolkit import (
    NotEnoughData,
    binomial_interval,
    channel_payload,
    guarded,
    require,
)
from b2calib.conditions import ChannelStatus
from b2calib.engine import Collector
from b2calib.exceptions import BadValueError, CalibrationError
from b2calib.geometry import vxd

__all__ = [
    "DEAD_LEVELS",
    "DEAD_PIXELS",
    "HOT_LEVELS",
    "MASKED_PIXELS",
    "N_DRAINS",
    "OCCUPANCY_INFO",
    "PHYSICS_SKIMS",
    "MaskConfig",
    "PixelHitCollector",
    "PixelHits",
    "PixelMaskAlgorithm",
    "PixelMasks",
    "add_pixel_hits",
    "check_statistics",
    "cosmic_masks_calibration",
    "drain_of",
    "false_dead_rate",
    "find_masks",
    "hot_dead_calibration",
    "hot_rate_threshold",
    "pixel_hits",
    "pixel_index",
    "sensor_medians",
]

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

MASKED_PIXELS = "PXDMaskedPixelPar"
DEAD_PIXELS = "PXDDeadPixelPar"
OCCUPANCY_INFO = "PXDOccupancyInfoPar"
_NS, _NU, _NV = vxd.N_PXD_SENSORS, vxd.PXD_NU, vxd.PXD_NV
_NPIX = vxd.N_PXD_PIXELS
#: Drain lines per sensor: ``drain = u * 4 + v % 4``.
N_DRAINS = _NU * 4
#: How a dead pixel was found (diagnostics table ``masked``, column ``level``).
DEAD_LEVELS = {1: "sensor", 2: "row", 3: "drain", 4: "pixel"}
#: How a hot pixel was found.
HOT_LEVELS = {1: "pixel", 2: "drain", 3: "row"}
#: The physics skims the collision-run masks read: disjoint, so no event counts twice (the raw
#: data of every recorded event would do; the skims carry every event's PXD digits).
PHYSICS_SKIMS = ("hlt_bhabha", "hlt_gamma_gamma", "hlt_mumu_2trk", "hlt_hadron")
_HITS_PER_PIXEL_BINS = 200  # the per-sensor distribution of hits per pixel (diagnostics)

# VxdID >> 5 (layer, ladder, sensor; the segment bits are 0) -> sensor index: a 611-entry
# table, one lookup per digit
_LUT = np.full(int(vxd.PXD_IDS.max() >> 5) + 1, -1, dtype=np.int64)
_LUT[vxd.PXD_IDS >> 5] = np.arange(_NS)


def drain_of(u: npt.ArrayLike, v: npt.ArrayLike) -> I64:
    """Drain line of pixels (u, v) within their sensor: ``u * 4 + v % 4``."""
    return np.asarray(u, dtype=np.int64) * 4 + np.asarray(v, dtype=np.int64) % 4


def false_dead_rate(mean_hits: npt.ArrayLike) -> F:
    """Probability that a live pixel with ``mean_hits`` expected hits has none (Poisson)."""
    return np.exp(-np.asarray(mean_hits, dtype=np.float64))


def hot_rate_threshold(background: npt.ArrayLike, multiplier: float = 7.0) -> F:
    """Noise rate per event above which a pixel is masked hot, for a background of
    ``background`` hits per pixel per event: ``p > multiplier x b`` with ``p = b + r (1 - b)``
    gives ``r > (multiplier - 1) b / (1 - b)`` (in the mean; a pixel near it is found half the
    time)."""
    b = np.asarray(background, dtype=np.float64)
    return np.asarray((multiplier - 1.0) * b / (1.0 - b))


def _flat(events: ak.Array, branch: str) -> npt.NDArray[Any]:
    return np.asarray(ak.to_numpy(ak.flatten(events[branch], axis=1)))


def pixel_hits(sensor_id: npt.ArrayLike, u: npt.ArrayLike, v: npt.ArrayLike) -> I64:
    """Digits per pixel, shape (7.68 M,) in the order ``(sensor index * 250 + u) * 768 + v``.

    Raises
    ------
    BadValueError
        For a VxdID that is no PXD sensor or a cell outside the sensor (naming the branch).
    """
    counts = np.zeros(_NPIX, dtype=np.int64)
    add_pixel_hits(counts, sensor_id, u, v)
    return counts


def add_pixel_hits(
    counts: I64, sensor_id: npt.ArrayLike, u: npt.ArrayLike, v: npt.ArrayLike
) -> None:
    """Add the digits (VxdID, u, v) to ``counts`` (7.68 M int64, in place).

    One compiled pass over the digits counts into one byte per pixel (7.7 MB, which stays in
    the CPU caches far better than 61 MB of int64: ~9 ns a digit against ~20, and ~30 for
    numpy's pixel numbers and ``np.bincount``), carrying every 256th hit of a pixel into an
    int64 array that only the hottest pixels touch.

    Raises
    ------
    BadValueError
        For a VxdID that is no PXD sensor or a cell outside the sensor (naming the branch;
        nothing is added).
    """
    sid, uu, vv = (np.ascontiguousarray(a) for a in (sensor_id, u, v))
    if not (len(sid) == len(uu) == len(vv)):
        raise CalibrationError("PXD digits: sensor ID, u and v of different lengths")
    if len(sid) == 0:
        return
    low = np.zeros(_NPIX, dtype=np.uint8)
    carry = np.zeros(_NPIX, dtype=np.int64)  # pages never written cost nothing
    bad = _count_pixels(low, carry, sid, uu, vv, _LUT)
    if bad:
        _raise_bad_digit(sid, uu, vv)
    counts += low
    counts += carry


@numba.njit(cache=True, nogil=True)
def _count_pixels(low, carry, sid, u, v, lut):  # type: ignore[no-untyped-def,unused-ignore]
    """Count the digits into ``low`` (uint8, wrapping) + ``carry`` (multiples of 256); return
    the number of digits off the detector (not counted)."""
    bad = 0
    for k in range(sid.shape[0]):
        s = np.int64(sid[k])
        i = -1 if (s < 0 or (s & 0x1F) != 0 or (s >> 5) >= lut.shape[0]) else lut[s >> 5]
        uk, vk = np.int64(u[k]), np.int64(v[k])
        if i < 0 or uk < 0 or uk >= 250 or vk < 0 or vk >= 768:
            bad += 1
        else:
            p = (i * 250 + uk) * 768 + vk
            low[p] += 1
            if low[p] == 0:
                carry[p] += 256
    return bad


def _raise_bad_digit(sid: npt.NDArray[Any], u: npt.NDArray[Any], v: npt.NDArray[Any]) -> None:
    """Raise :class:`~b2calib.exceptions.BadValueError` for the first digit off the PXD (its
    branch, digit and value, and how many are off in all)."""
    s64 = np.asarray(sid, dtype=np.int64)
    known = (s64 >= 0) & ((s64 & 0x1F) == 0) & ((s64 >> 5) < len(_LUT))
    known[known] = _LUT[s64[known] >> 5] >= 0
    u64, v64 = np.asarray(u, dtype=np.int64), np.asarray(v, dtype=np.int64)
    checks = (
        ("PXDDigits_m_sensorID", ~known, s64, "a VxdID that is no PXD sensor"),
        ("PXDDigits_m_uCellID", (u64 < 0) | (u64 >= _NU), u64, f"u outside 0..{_NU - 1}"),
        ("PXDDigits_m_vCellID", (v64 < 0) | (v64 >= _NV), v64, f"v outside 0..{_NV - 1}"),
    )
    first = min(int(np.argmax(bad)) if bad.any() else len(s64) for _, bad, _, _ in checks)
    n_bad = int(np.logical_or.reduce([bad for _, bad, _, _ in checks]).sum())
    for branch, bad, values, what in checks:
        if first < len(s64) and bad[first]:
            raise BadValueError(
                branch,
                f"{n_bad} PXD digit(s) off the detector, the first (digit {first} of the entries"
                f" read) with {values[first]}: {what}",
            )
    raise AssertionError("no bad digit found")  # pragma: no cover (the kernel found one)


def pixel_index(sensor_id: npt.ArrayLike, u: npt.ArrayLike, v: npt.ArrayLike) -> I64:
    """Pixel number ``(sensor index * 250 + u) * 768 + v`` of each digit (VxdID, u, v).

    Raises
    ------
    BadValueError
        For a VxdID that is no PXD sensor or a cell outside the sensor (naming the branch).
    """
    sid, uu, vv = np.asarray(sensor_id), np.asarray(u), np.asarray(v)
    if len(sid) == 0:
        return np.zeros(0, dtype=np.int64)
    if (
        sid.min() < 0
        or sid.max() >> 5 >= len(_LUT)
        or np.any(sid & 0x1F)
        or uu.min() < 0
        or uu.max() >= _NU
        or vv.min() < 0
        or vv.max() >= _NV
    ):
        _raise_bad_digit(sid, uu, vv)
    out = _LUT[sid >> 5]
    if out.min() < 0:  # an ID in the table's range of no PXD sensor
        _raise_bad_digit(sid, uu, vv)
    out *= _NU
    out += uu
    out *= _NV
    out += vv
    return np.asarray(out)


def _pixel_axis() -> hist.axis.Integer:
    return hist.axis.Integer(0, _NPIX, underflow=False, overflow=False, name="pixel")


def _restore_hits(
    cls: type[PixelHits], where: npt.NDArray[Any], counts: npt.NDArray[Any]
) -> PixelHits:
    h = cls(_pixel_axis(), storage=hist.storage.Int64())
    view = h.view()
    if len(where) == 0 and len(counts) == _NPIX:  # dense: uint8 (or uint16) ...
        view[:] = counts
    else:  # ... or sparse: (pixel, hits); both add the rest of the hottest pixels
        view[where] += counts
    return h


def _dense_then_sparse(
    cls: type[PixelHits],
    dense: npt.NDArray[np.unsignedinteger[Any]],
    where: npt.NDArray[Any],
    extra: I64,
) -> PixelHits:
    h = _restore_hits(cls, np.zeros(0, np.int64), dense)
    h.view()[where] += extra
    return h


class PixelHits(hist.Hist, family=hist):
    """The digits of each of the 7.68 M PXD pixels: a plain ``hist.Hist`` (Int64, 61 MB in
    memory, merged with ``+``) that pickles compactly, for the engine's process pool and disk
    cache: the fired pixels and their hits when fewer than a third of the pixels fired (a few
    kB for a short run), else the low byte of every pixel's hits (7.7 MB) plus the rest of the
    pixels with 256 hits or more (the hot ones). (A plain 61 MB pickle per work item made the 11
    short runs of the sample bucket take 39 s and 2.6 GB of cache; the low byte costs half the
    time of a uint16 copy on both ends: bench/RESULTS_pxd_masks.md.)"""

    def __reduce__(self) -> tuple[Any, ...]:
        view = np.asarray(self.view())
        cls = type(self)
        if np.count_nonzero(view) < _NPIX // 3:
            where = np.flatnonzero(view)
            return (_restore_hits, (cls, where.astype(np.int32), view[where]))
        low = view.astype(np.uint8)  # wraps: the hits modulo 256
        big = np.flatnonzero(view > 0xFF)
        return (_dense_then_sparse, (cls, low, big.astype(np.int32), view[big] - low[big]))


@dataclasses.dataclass(frozen=True)
class PixelHitCollector(Collector):
    """Digits per PXD pixel (all 7.68 M: :class:`PixelHits`) and the number of events."""

    version: ClassVar[int] = 1

    @property
    def branches(self) -> dict[str, str]:
        return {
            "EventMetaData_m_run": "int32",
            "PXDDigits_m_sensorID": "var * uint16",
            "PXDDigits_m_uCellID": "var * int16",
            "PXDDigits_m_vCellID": "var * int16",
        }

    def prepare(self) -> None:
        """Load the compiled count (~0.4 s in a fresh process) once, before the engine's
        workers fork, instead of once in each worker; and the compiled mask steps the
        algorithm runs."""
        one = np.zeros(1, dtype=np.int16)
        _count_pixels(
            np.zeros(1, np.uint8), np.zeros(1, np.int64), np.zeros(0, np.uint16), one, one, _LUT
        )
        # and the masks' steps, which the algorithm runs in this (the calling) process
        tiny = np.zeros((1, 1, 4), dtype=np.int8)
        yes = np.ones(1, dtype=np.bool_)
        _mask_steps(
            np.zeros((1, 1, 4), np.int64),
            np.ones(1),
            yes,
            ~yes,
            7.0,
            7.0,
            7.0,
            True,
            True,
            tiny,
            tiny.copy(),
        )

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        hits = PixelHits(_pixel_axis(), storage=hist.storage.Int64())
        add_pixel_hits(
            cast(I64, hits.view()),
            _flat(events, "PXDDigits_m_sensorID"),
            _flat(events, "PXDDigits_m_uCellID"),
            _flat(events, "PXDDigits_m_vCellID"),
        )
        n = hist.Hist(hist.axis.Regular(1, 0.0, 1.0, name="events"), storage=hist.storage.Int64())
        n.view(flow=True)[1] = len(events)
        return {"pixel_hits": hits, "events": n}


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    """The thresholds of :func:`find_masks` (basf2's names in snake case)."""

    min_hits: float = 15.0
    pixel_multiplier: float = 7.0
    drain_multiplier: float = 7.0
    row_multiplier: float = 7.0
    mask_drains: bool = True
    mask_rows: bool = True
    force_continue_masking: bool = False


@dataclasses.dataclass
class PixelMasks:
    """What :func:`find_masks` found.

    Attributes
    ----------
    dead, hot
        Per pixel (40, 250, 768): 0, or the level it was found at (:data:`DEAD_LEVELS`,
        :data:`HOT_LEVELS`).
    median
        Median hits per pixel of each sensor.
    enough
        Whether the checks passed; ``message`` says why not.
    dead_checked
        Per sensor: whether its rows, drains and pixels were searched for dead ones.
    """

    dead: npt.NDArray[np.int8]
    hot: npt.NDArray[np.int8]
    median: F
    total: int
    enough: bool
    message: str
    dead_checked: npt.NDArray[np.bool_]
    dead_sensor_checked: bool

    def summary(self) -> dict[str, int]:
        """Masked pixels per kind and level, e.g. ``{"dead row": 250, "hot pixel": 180}``."""
        out = {}
        for kind, arr, levels in (("dead", self.dead, DEAD_LEVELS), ("hot", self.hot, HOT_LEVELS)):
            flat = arr.ravel()
            n = np.bincount(flat[np.flatnonzero(flat)], minlength=max(levels) + 1)
            out.update({f"{kind} {name}": int(n[k]) for k, name in levels.items() if n[k]})
        return out


def sensor_medians(counts: npt.ArrayLike) -> F:
    """Median hits per pixel of each sensor (as ``np.median``), from the histogram of the
    hits of its pixels: one ``np.bincount`` per sensor instead of a partial sort."""
    c = np.asarray(counts).reshape(_NS, -1)
    n = c.shape[1]
    out = np.empty(_NS)
    for s, row in enumerate(c):  # 40 sensors
        cdf = np.cumsum(np.bincount(row))
        lo, hi = np.searchsorted(cdf, [(n - 1) // 2, n // 2], side="right")
        out[s] = 0.5 * (lo + hi)
    return out


def check_statistics(counts: npt.ArrayLike, min_hits: float) -> tuple[bool, str, F, int]:
    """basf2's checks: total hits >= ``min_hits`` x sensors x 250 x 768 and every live
    sensor's median hits per pixel >= ``min_hits`` (a sensor without hits is dead, not short).

    Returns (passed, why not, median per sensor, total hits).
    """
    c = np.asarray(counts).reshape(_NS, _NU * _NV)
    sensor_hits = c.sum(axis=1)
    total = int(sensor_hits.sum())
    median = sensor_medians(c)
    live = sensor_hits > 0
    need = min_hits * _NS * _NU * _NV
    if total < need:
        return False, f"{total} PXD hits < {need:.0f} ({min_hits:g} per pixel)", median, total
    low = np.flatnonzero(live & (median < min_hits))
    if len(low):
        names = ", ".join("{}.{}.{}".format(*vxd.PXD_SENSOR_TABLE[s]) for s in low[:5])
        more = f" and {len(low) - 5} more" if len(low) > 5 else ""
        return (
            False,
            f"median hits per pixel < {min_hits:g} in {len(low)} sensors ({names}{more})",
            median,
            total,
        )
    return True, "", median, total


@numba.njit(cache=True, nogil=True)
def _mask_steps(  # type: ignore[no-untyped-def,unused-ignore]
    c, med, checked, dead_sensor, k_pixel, k_drain, k_row, drains, rows, dead, hot
):
    """The dead and hot steps of :func:`find_masks` on counts ``c`` (40, 250, 768), writing
    the levels into ``dead`` and ``hot`` (zeros on entry): the numpy formulation (one pass
    over the 7.68 M pixels per step and condition) as one compiled pass per step and sensor,
    with the same comparisons in the same float64 arithmetic (:func:`find_masks` with its
    checks: 0.27 s -> 0.08 s measured, bench/RESULTS_pxd_masks.md)."""
    ns, nu, nv = c.shape
    for s in range(ns):
        if dead_sensor[s]:
            dead[s, :, :] = 1
            continue  # a dead sensor has no live pixel to call hot
        if checked[s]:
            for v in range(nv):  # dead rows (a v column of the matrix: every u)
                total = 0
                for u in range(nu):
                    total += c[s, u, v]
                if total == 0:
                    for u in range(nu):
                        dead[s, u, v] = 2
            for u in range(nu):  # dead drains: (u, v % 4)
                for k in range(4):
                    total = 0
                    for v in range(k, nv, 4):
                        total += c[s, u, v]
                    if total == 0:
                        for v in range(k, nv, 4):
                            if dead[s, u, v] == 0:
                                dead[s, u, v] = 3
            for u in range(nu):  # dead pixels
                for v in range(nv):
                    if c[s, u, v] == 0 and dead[s, u, v] == 0:
                        dead[s, u, v] = 4
        cut = k_pixel * med[s]
        for u in range(nu):  # hot pixels
            for v in range(nv):
                if dead[s, u, v] == 0 and c[s, u, v] > cut:
                    hot[s, u, v] = 1
        if drains:
            cut = k_drain * med[s]
            for u in range(nu):
                for k in range(4):
                    n = 0
                    h = 0
                    for v in range(k, nv, 4):
                        if dead[s, u, v] == 0 and hot[s, u, v] == 0:
                            n += 1
                            h += c[s, u, v]
                    if n > 0 and h / n > cut:
                        for v in range(k, nv, 4):
                            if dead[s, u, v] == 0 and hot[s, u, v] == 0:
                                hot[s, u, v] = 2
        if rows:
            cut = k_row * med[s]
            for v in range(nv):
                n = 0
                h = 0
                for u in range(nu):
                    if dead[s, u, v] == 0 and hot[s, u, v] == 0:
                        n += 1
                        h += c[s, u, v]
                if n > 0 and h / n > cut:
                    for u in range(nu):
                        if dead[s, u, v] == 0 and hot[s, u, v] == 0:
                            hot[s, u, v] = 3


def find_masks(counts: npt.ArrayLike, config: MaskConfig = MaskConfig()) -> PixelMasks:
    """Dead and hot pixels from the hits of every pixel (shape (40, 250, 768) or flat), by the
    steps of the module docstring: the checks vectorised, the steps compiled (no Python loop
    over pixels)."""
    c = np.asarray(counts, dtype=np.int64).reshape(_NS, _NU, _NV)
    enough, message, median, total = check_statistics(c, config.min_hits)
    if not enough and not config.force_continue_masking:
        raise NotEnoughData(message)
    dead = np.zeros(c.shape, dtype=np.int8)
    hot = np.zeros(c.shape, dtype=np.int8)
    sensor_hits = c.reshape(_NS, -1).sum(axis=1)
    # dead: whole sensors (when the total passes), then rows, drains and single pixels of the
    # sensors whose median passes; hot: pixels above k x median, then drains and rows by their
    # mean over the pixels not yet masked (one compiled pass per step and sensor)
    sensor_checked = total >= config.min_hits * _NS * _NU * _NV
    dead_sensor = (sensor_hits == 0) & sensor_checked
    checked = (median >= config.min_hits) & ~dead_sensor
    _mask_steps(
        c,
        np.maximum(median, 1.0),
        checked,
        dead_sensor,
        float(config.pixel_multiplier),
        float(config.drain_multiplier),
        float(config.row_multiplier),
        bool(config.mask_drains),
        bool(config.mask_rows),
        dead,
        hot,
    )
    return PixelMasks(dead, hot, median, total, enough, message, checked, bool(sensor_checked))


def _pixel_list(
    name: str, description: str, unit: str, where: I64, value: F, error: F, status: int, **meta: Any
) -> Any:
    s, rest = np.divmod(where, _NU * _NV)
    u, v = np.divmod(rest, _NV)
    return channel_payload(
        name,
        {
            "sensorID": vxd.PXD_IDS[s].astype(np.int32),
            "u": u.astype(np.int16),
            "v": v.astype(np.int16),
        },
        value,
        error,
        np.full(len(where), status, np.int8),
        units=unit,
        description=description,
        **meta,
    )


def _payloads(c: I64, m: PixelMasks, n_events: float) -> list[Any]:
    flat_c = c.ravel()
    hot_at = np.flatnonzero(m.hot.ravel())
    dead_at = np.flatnonzero(m.dead.ravel())
    sensor = hot_at // (_NU * _NV)
    b = np.minimum(m.median[sensor] / n_events, 1.0 - 1e-12)
    k = flat_c[hot_at]
    p = k / n_events
    lo, hi = binomial_interval(k, n_events)
    # a pixel fires at most once an event: noise pulses of rate lambda per event on top of the
    # background make it fire with probability p = 1 - (1 - b) exp(-lambda)
    q = np.clip((1.0 - p) / (1.0 - b), 1e-12, 1.0)
    rate = -np.log(q)
    rate_err = 0.5 * (hi - lo) / np.maximum(1.0 - p, 1e-12)
    summary = m.summary()
    hot = _pixel_list(
        MASKED_PIXELS,
        "hot pixels (pixel, drain or row above 7 x the sensor median); value = noise pulses "
        "per event",
        "1/event",
        hot_at,
        rate,
        rate_err,
        ChannelStatus.HOT,
        found={k: v for k, v in summary.items() if k.startswith("hot")},
    )
    dead = _pixel_list(
        DEAD_PIXELS,
        "dead pixels (sensor, row, drain or pixel without hits)",
        "1",
        dead_at,
        np.zeros(len(dead_at)),
        np.zeros(len(dead_at)),
        ChannelStatus.DEAD,
        found={k: v for k, v in summary.items() if k.startswith("dead")},
    )
    free = (m.dead == 0) & (m.hot == 0)
    n_free = free.reshape(_NS, -1).sum(axis=1)
    h_free = np.where(free, c.reshape(m.dead.shape), 0).reshape(_NS, -1).sum(axis=1)
    occ = h_free / np.maximum(n_free, 1) / n_events
    occ_err = np.sqrt(h_free) / np.maximum(n_free, 1) / n_events
    status = np.full(_NS, ChannelStatus.OK, np.int8)
    status[~m.dead_checked] = ChannelStatus.NOT_ENOUGH_DATA
    status[(m.dead == 1).reshape(_NS, -1).all(axis=1)] = ChannelStatus.DEAD
    occupancy = channel_payload(
        OCCUPANCY_INFO,
        {"sensorID": vxd.PXD_IDS.astype(np.int32)},
        occ,
        occ_err,
        status,
        units="1/(pixel event)",
        description="mean occupancy (hits per pixel per event) of the unmasked pixels",
        flagged=0.0,
        n_events=float(n_events),
    )
    return [hot, dead, occupancy]


def _diagnostics(c: I64, m: PixelMasks, n_events: float) -> Diagnostics:
    c3 = c.reshape(_NS, _NU, _NV)
    per_sensor = hist.Hist(
        hist.axis.Integer(0, _NS, name="sensor"),
        hist.axis.Regular(_HITS_PER_PIXEL_BINS, 0.0, float(_HITS_PER_PIXEL_BINS), name="hits"),
        storage=hist.storage.Int64(),
    )
    capped = np.minimum(c.reshape(_NS, -1), _HITS_PER_PIXEL_BINS)
    counts2d = np.stack(
        [np.bincount(row, minlength=_HITS_PER_PIXEL_BINS + 1) for row in capped]  # 40 sensors
    )
    per_sensor.view(flow=True)[1:-1, 1:-1] = counts2d[:, :-1]
    per_sensor.view(flow=True)[1:-1, -1] = counts2d[:, -1]
    at = np.flatnonzero((m.dead | m.hot).ravel())
    s, rest = np.divmod(at, _NU * _NV)
    u, v = np.divmod(rest, _NV)
    masked = {
        "sensor": s,
        "u": u,
        "v": v,
        "hits": c.ravel()[at],
        "dead_level": m.dead.ravel()[at],
        "hot_level": m.hot.ravel()[at],
    }
    sensors = {
        "sensor": np.arange(_NS),
        "sensorID": vxd.PXD_IDS.astype(np.int64),
        "hits": c3.reshape(_NS, -1).sum(axis=1),
        "median": m.median,
        "dead": (m.dead > 0).reshape(_NS, -1).sum(axis=1),
        "hot": (m.hot > 0).reshape(_NS, -1).sum(axis=1),
        "dead_checked": m.dead_checked,
        "events": np.full(_NS, n_events),
    }
    return Diagnostics(
        histograms={"hits_per_pixel": per_sensor}, tables={"masked": masked, "sensors": sensors}
    )


class PixelMaskAlgorithm(Algorithm):
    """Dead and hot PXD pixels from the digits per pixel (see the module docstring)."""

    name = "pixel_masks"
    payloads = (MASKED_PIXELS, DEAD_PIXELS, OCCUPANCY_INFO)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        hits_h, ev_h = require(data, "pixel_hits", "events", message="no PXD digits")
        n_events = float(ev_h.values().sum())
        if n_events <= 0:
            raise NotEnoughData("no events")
        cfg = data.config
        config = MaskConfig(
            min_hits=float(cfg["min_hits"]),
            pixel_multiplier=float(cfg["pixel_multiplier"]),
            drain_multiplier=float(cfg["drain_multiplier"]),
            row_multiplier=float(cfg["row_multiplier"]),
            mask_drains=bool(cfg["mask_drains"]),
            mask_rows=bool(cfg["mask_rows"]),
            force_continue_masking=bool(cfg["force_continue_masking"]),
        )
        counts = np.asarray(hits_h.view(), dtype=np.int64)
        masks = find_masks(counts, config)
        diag = _diagnostics(counts, masks, n_events)
        forced = "" if masks.enough else f"; forced through ({masks.message})"
        found = ", ".join(f"{v} {k}" for k, v in masks.summary().items()) or "nothing masked"
        return AlgorithmResult(
            AlgorithmStatus.OK,
            _payloads(counts, masks, n_events),
            diag,
            f"{n_events:.0f} events, {masks.total} hits: {found}{forced}",
        )


_EXPERT_CONFIG = {
    "min_hits": 15.0,
    "pixel_multiplier": 7.0,
    "drain_multiplier": 7.0,
    "row_multiplier": 7.0,
    "mask_drains": True,
    "mask_rows": True,
    "force_continue_masking": False,
}


#: The masks' validation: hot-pixel lists change from run to run (noisy pixels come and go):
#: a tenth of the list new is a warning, half an error; dead pixels are stable: a percent new
#: is a warning, a tenth an error; the sensors' occupancy follows the beam background.
_MASKS_VALIDATION = PayloadComparison(
    columns=(),
    per_payload={
        MASKED_PIXELS: PayloadComparison(
            columns=(), warn_new_flagged_fraction=0.1, error_new_flagged_fraction=0.5
        ),
        DEAD_PIXELS: PayloadComparison(
            columns=(), warn_new_flagged_fraction=0.01, error_new_flagged_fraction=0.1
        ),
        OCCUPANCY_INFO: PayloadComparison(
            max_pull=None, max_rel_change=0.5, error_outlier_fraction=0.25
        ),
    },
)


def _sensor_index(context: ViewContext) -> int:
    sensors = context.table("sensors")
    sensor_id = int(context.payload.keys["sensorID"][context.row])
    return int(np.flatnonzero(sensors["sensorID"] == sensor_id)[0])


def _pixel_row(context: ViewContext) -> int:
    """The ``masked`` table's row of the context's pixel."""
    t = context.table("masked")
    s = _sensor_index(context)
    u, v = (int(context.payload.keys[k][context.row]) for k in ("u", "v"))
    hit = np.flatnonzero((t["sensor"] == s) & (t["u"] == u) & (t["v"] == v))
    return int(hit[0]) if hit.size else -1


def _describe_pixel(context: ViewContext, row: int) -> str:
    """A masked pixel: its hits against its sensor's median, and at which level it was found."""
    t, sensors = context.table("masked"), context.table("sensors")
    s = _sensor_index(context)
    median = float(sensors["median"][s])
    if row < 0:
        return f"{context.status}: no per-channel fit: this calibration counts hits per pixel"
    hits = int(t["hits"][row])
    dead, hot = int(t["dead_level"][row]), int(t["hot_level"][row])
    how = (
        f"dead, found as a dead {DEAD_LEVELS.get(dead, dead)}"
        if dead
        else f"hot, found as a hot {HOT_LEVELS.get(hot, hot)} (above "
        f"{context.config.get('pixel_multiplier')} x the median)"
    )
    return (
        f"{context.status}: no per-channel fit: this calibration counts hits per pixel; "
        f"{hits} hits, its sensor's median {median:g} per pixel: {how}; shown: the sensor's "
        "distribution of hits per pixel"
    )


def _describe_sensor(context: ViewContext, row: int) -> str:
    sensors = context.table("sensors")
    return (
        f"{context.status}: no per-channel fit: the sensor's mean occupancy of its unmasked "
        f"pixels; {int(sensors['hits'][row])} hits, median {float(sensors['median'][row]):g} "
        f"per pixel, {int(sensors['dead'][row])} dead and {int(sensors['hot'][row])} hot "
        "pixels; shown: its distribution of hits per pixel"
    )


_PIXEL_VIEW = CountingView(
    "masked",
    None,
    _describe_pixel,
    histogram="hits_per_pixel",
    histogram_row=lambda c, r: _sensor_index(c),
    channel_map=_pixel_row,
    x_label="hits per pixel",
    y_label="pixels",
)
_SENSOR_VIEW = CountingView(
    "sensors",
    "sensorID",
    _describe_sensor,
    histogram="hits_per_pixel",
    x_label="hits per pixel",
    y_label="pixels",
)
_VIEWS = {MASKED_PIXELS: _PIXEL_VIEW, DEAD_PIXELS: _PIXEL_VIEW, OCCUPANCY_INFO: _SENSOR_VIEW}


def hot_dead_calibration() -> Calibration:
    """``pxd-hot-dead``: the PXD masks of collision runs, run by run (a run short of hits is
    merged with the next, SequentialRunByRun)."""
    return Calibration(
        name="pxd-hot-dead",
        validation=_MASKS_VALIDATION,
        expert="pxd-calibration@b2calib.example",
        inputs={"pixels": CollectorInput(PixelHitCollector(), PHYSICS_SKIMS)},
        algorithms=[PixelMaskAlgorithm()],
        strategy=SequentialRunByRun(),
        input_format="raw",
        stage="raw",
        run_type="physics",
        expert_config=dict(_EXPERT_CONFIG),
        open_end=True,
        description="PXD hot and dead pixels (PXDMaskedPixelPar, PXDDeadPixelPar, "
        "PXDOccupancyInfoPar) from the digits of every pixel: NOT_ENOUGH_DATA below 15 hits "
        "per pixel; dead sensors, rows, drains, pixels without hits; hot pixels, drains and "
        "rows above 7 x the sensor median.",
        fit_views=_VIEWS,
    )


def cosmic_masks_calibration() -> Calibration:
    """``pxd-hot-dead-cosmic``: the same on cosmic runs, one payload per run
    (SimpleRunByRun), forced through however few hits there are."""
    return Calibration(
        name="pxd-hot-dead-cosmic",
        validation=_MASKS_VALIDATION,
        expert="pxd-calibration@b2calib.example",
        inputs={"pixels": CollectorInput(PixelHitCollector(), ("cosmic",))},
        algorithms=[PixelMaskAlgorithm()],
        strategy=SimpleRunByRun(),
        input_format="raw",
        stage="raw",
        run_type="cosmic",
        # its masks are those of the cosmic runs, which the physics runs' open-ended masks of
        # pxd-hot-dead cover too: in a staging tag the cosmic runs keep these
        prevails_over=("pxd-hot-dead",),
        expert_config={**_EXPERT_CONFIG, "force_continue_masking": True},
        description="PXD hot and dead pixels of cosmic runs, run by run, forced through: hot "
        "pixels whatever the statistics, dead ones where the median allows it.",
        fit_views=_VIEWS,
    )


def __dir__() -> list[str]:
    return __all__
