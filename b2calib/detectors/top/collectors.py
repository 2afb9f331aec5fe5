"""TOP collectors: hits per channel, folded photon times per channel, track-time differences of
slot pairs, folded photon residuals with the channel and module T0 applied.

The collectors that apply constants carry them as :class:`RunTables` (distinct per-channel
tables and the table of each run), made by the calibrations' collector factories
(:func:`~b2calib.detectors.top.module_t0.module_t0_collector`,
:func:`~b2calib.detectors.top.common_t0.common_t0_collector`) with :func:`run_tables`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import awkward as ak
import hist
import numba
import numpy as np
import numpy.typing as npt

from b2calib.conditions.iov import RunKey
from b2calib.detectors.top.photons import (
    Z_BINS,
    Photons,
    _load_kernels,
    check_digits,
    match_photons,
)
from b2calib.engine import Collector
from b2calib.engine.fill import fill_1d, fill_2d, regular_bin
from b2calib.exceptions import BadValueError, CalibrationError
from b2calib.geometry import top

__all__ = [
    "CHANNEL_TIME_BINS",
    "COMMON_TIME_BINS",
    "DIFF_BINS",
    "ChannelHitCollector",
    "ChannelTimeCollector",
    "CommonT0Collector",
    "ModuleT0Collector",
    "RunTables",
    "run_tables",
]

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_NM, _NP, _NC = top.N_MODULES, top.N_PIXELS, top.N_CHANNELS
_RF = top.RF_PERIOD_NS
#: Folded time axis (ns): one RF period.
CHANNEL_TIME_BINS = 48
COMMON_TIME_BINS = 128
#: Track time differences between two slots (ns).
DIFF_BINS = (160, -2.0, 2.0)
_EVENT_BRANCHES = {"EventMetaData_m_experiment": "int32", "EventMetaData_m_run": "int32"}
_PHOTON_BRANCHES = {
    "TOPDigits_m_moduleID": "var * int8",
    "TOPDigits_m_pixelID": "var * int16",
    "TOPDigits_m_time": "var * float32",
    "ExtHits_m_detectorID": "var * int8",
    "ExtHits_m_copyID": "var * int32",
    "ExtHits_m_posZ": "var * float32",
    "ExtHits_m_tof": "var * float32",
}


def _flat(events: ak.Array, branch: str, dtype: Any) -> npt.NDArray[Any]:
    return np.asarray(ak.to_numpy(ak.flatten(events[branch])), dtype=dtype)


def _run_of(events: ak.Array) -> RunKey:
    exp = np.unique(ak.to_numpy(events["EventMetaData_m_experiment"]))
    run = np.unique(ak.to_numpy(events["EventMetaData_m_run"]))
    if len(exp) != 1 or len(run) != 1:
        raise BadValueError(  # one file is one run: a file with others is no sound file
            "EventMetaData_m_run", f"the entries read hold several runs: exp {exp}, run {run}"
        )
    return int(exp[0]), int(run[0])


def _hist(*axes: tuple[int, float, float], names: Sequence[str]) -> hist.Hist:
    return hist.Hist(
        *(
            hist.axis.Regular(n, lo, hi, name=nm)
            for (n, lo, hi), nm in zip(axes, names, strict=True)
        ),
        storage=hist.storage.Int64(),
    )


def _view(h: hist.Hist) -> I64:
    """The int64 storage of ``h`` with flow bins (filled in place)."""
    return cast(I64, h.view(flow=True))


_CH_AXIS = (_NC, -0.5, _NC - 0.5)
_MOD_AXIS = (_NM, 0.5, _NM + 0.5)


def _flow_bins(v: npt.ArrayLike, axis: tuple[int, float, float]) -> I64:
    """The bin of each value on a regular axis with flow bins (0 below, ``n + 1`` above or
    NaN), by the float64 operations of the engine's fill (:mod:`b2calib.engine.fill`), so the
    same bins."""
    n, lo, hi = int(axis[0]), float(axis[1]), float(axis[2])
    x = np.asarray(v, dtype=np.float64)
    out = np.full(len(x), n + 1, dtype=np.int64)
    inside = (x >= lo) & (x < hi)
    out[inside] = ((x[inside] - lo) / (hi - lo) * n).astype(np.int64) + 1
    out[x < lo] = 0
    return out


def _z_hist(p: Photons) -> hist.Hist:
    """Photons per (module, z of their track's crossing): filled per track with its photon
    count, not per photon (the same integer counts; ~27 photons a track)."""
    h = _hist(_MOD_AXIS, Z_BINS, names=("module", "z"))
    view = _view(h)
    per_track = np.bincount(p.ph_trk, minlength=len(p.trk_evt))
    flat = _flow_bins(p.trk_module, _MOD_AXIS) * view.shape[1] + _flow_bins(p.trk_z, Z_BINS)
    # float64 sums of integer weights: exact up to 2^53 photons
    view += (
        np.rint(np.bincount(flat, weights=per_track, minlength=view.size))
        .astype(np.int64)
        .reshape(view.shape)
    )
    return h


@numba.njit(cache=True, nogil=True, inline="always")
def _np_mod(a, b):  # type: ignore[no-untyped-def,unused-ignore]
    """``np.mod(a, b)`` of floats, b != 0, as numpy computes it (``npy_divmod``): ``fmod``,
    moved by ``b`` to the sign of ``b``; a zero takes the sign of ``b``."""
    mod = np.fmod(a, b)
    if mod != 0.0:
        if (b < 0.0) != (mod < 0.0):
            mod += b
    else:
        mod = math.copysign(0.0, b)
    return mod


@numba.njit(cache=True, nogil=True)
def _fold_fill_2d(out, x, r, xlo, xhi, nx, period, ny):  # type: ignore[no-untyped-def,unused-ignore]
    for k in range(x.shape[0]):
        i = regular_bin(float(x[k]), xlo, xhi, nx)
        out[i, regular_bin(_np_mod(r[k], period), 0.0, period, ny)] += 1


@numba.njit(cache=True, nogil=True)
def _fold_fill_1d(out, r, period, n):  # type: ignore[no-untyped-def,unused-ignore]
    for k in range(r.shape[0]):
        out[regular_bin(_np_mod(r[k], period), 0.0, period, n)] += 1


def _fill_folded(
    view: I64,
    r: F,
    bins: int,
    x: npt.ArrayLike | None = None,
    xaxis: tuple[int, float, float] | None = None,
    *,
    compiled: bool = True,
) -> None:
    """Fill ``r`` folded modulo the RF period into ``bins`` bins over [0, RF): the 1-D ``view``
    (with flow bins), or with ``x`` on ``xaxis`` the 2-D one: ``fill_1d(view, np.mod(r, RF),
    ...)`` or ``fill_2d(view, x, np.mod(r, RF), xaxis, ...)``, which ``compiled=False`` runs
    (the reference). Compiled, the folding is done in the fill's loop (numpy's
    remainder, :func:`_np_mod`): no pass and no array for the folded values (np.mod took a
    third of the channel-time collector)."""
    taxis = (bins, 0.0, _RF)
    if x is None:
        if compiled:
            _fold_fill_1d(view, r, float(_RF), int(bins))
        else:
            fill_1d(view, np.mod(r, _RF), taxis)
        return
    if xaxis is None:
        raise ValueError("_fill_folded: x without its axis")
    if compiled:
        nx, xlo, xhi = xaxis
        _fold_fill_2d(
            view, np.asarray(x), r, float(xlo), float(xhi), int(nx), float(_RF), int(bins)
        )
    else:
        fill_2d(view, x, np.mod(r, _RF), xaxis, taxis)


def _load_fill_kernels() -> None:
    """Load the compiled folded fills for the collectors' types (a collector's ``prepare``)."""
    one = np.zeros(1)
    _fill_folded(np.zeros(3, dtype=np.int64), one, 1)
    _fill_folded(np.zeros((3, 3), dtype=np.int64), one, 1, np.zeros(1, np.int64), (1, 0.0, 1.0))


@dataclasses.dataclass(frozen=True)
class RunTables:
    """Per-channel offsets valid for each run: distinct tables and a run -> table index."""

    tables: tuple[tuple[float, ...], ...] = ()
    runs: tuple[tuple[int, int, int], ...] = ()

    def table(self, run: RunKey) -> F:
        """The offsets of ``run``; raises CalibrationError for a run without a table."""
        for e, r, i in self.runs:
            if (e, r) == run:
                return np.asarray(self.tables[i], dtype=np.float64)
        raise CalibrationError(f"no TOP constants prepared for run {run[0]}.{run[1]}")


def run_tables(per_run: Mapping[RunKey, F]) -> RunTables:
    """The :class:`RunTables` of per-run offsets (runs with equal offsets share a table)."""
    tables: list[tuple[float, ...]] = []
    runs = []
    for run, arr in sorted(per_run.items()):
        t = tuple(float(x) for x in arr)
        if t not in tables:
            tables.append(t)
        runs.append((run[0], run[1], tables.index(t)))
    return RunTables(tuple(tables), tuple(runs))


@dataclasses.dataclass(frozen=True)
class ChannelHitCollector(Collector):
    """Hits per channel (all digits) and the number of events: the channel-mask input."""

    version: ClassVar[int] = 1

    @property
    def branches(self) -> dict[str, str]:
        return {
            "EventMetaData_m_run": "int32",
            "TOPDigits_m_moduleID": "var * int8",
            "TOPDigits_m_pixelID": "var * int16",
        }

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        mod = _flat(events, "TOPDigits_m_moduleID", np.int64)
        pix = _flat(events, "TOPDigits_m_pixelID", np.int64)
        check_digits(mod, pix)
        hits = _hist(_CH_AXIS, names=("channel",))
        fill_1d(_view(hits), top.channel_index(mod, pix), _CH_AXIS)
        n = _hist((1, 0.0, 1.0), names=("events",))
        n.view(flow=True)[1] = len(events)
        return {"hits": hits, "events": n}


@dataclasses.dataclass(frozen=True)
class ChannelTimeCollector(Collector):
    """Per channel: photon time minus expected time, folded modulo the RF period; and the
    photon-weighted z of the track crossings per module (for the chromatic smearing)."""

    version: ClassVar[int] = 1

    @property
    def branches(self) -> dict[str, str]:
        return dict(_PHOTON_BRANCHES)

    def prepare(self) -> None:
        _load_kernels()
        _load_fill_kernels()

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        p = match_photons(events)
        axis = (CHANNEL_TIME_BINS, 0.0, _RF)
        h = _hist(_CH_AXIS, axis, names=("channel", "time"))
        _fill_folded(_view(h), p.ph_resid, CHANNEL_TIME_BINS, p.ph_channel, _CH_AXIS)
        return {"channel_time": h, "z": _z_hist(p)}


@numba.njit(cache=True, nogil=True, inline="always")
def _before(a, b):  # type: ignore[no-untyped-def,unused-ignore]
    """``a`` sorts before ``b`` in np.sort's order of floats (NaN last)."""
    return a < b or (b != b and a == a)


@numba.njit(cache=True, nogil=True)
def _select(v, lo, hi, k):  # type: ignore[no-untyped-def,unused-ignore]
    """Rearrange ``v[lo:hi]`` in place so that ``v[k]`` holds the value at ``k`` of the sorted
    range (np.sort's order: NaN last), none of ``v[lo:k]`` after it and none of
    ``v[k + 1:hi]`` before it: quickselect (median-of-three pivot, Sedgewick's partition with
    sentinels), insertion sort below 12 values."""
    while hi - lo > 12:
        a, b, c = lo, (lo + hi) // 2, hi - 1
        if _before(v[b], v[a]):
            v[a], v[b] = v[b], v[a]
        if _before(v[c], v[b]):
            v[b], v[c] = v[c], v[b]
            if _before(v[b], v[a]):
                v[a], v[b] = v[b], v[a]
        # v[a] <= pivot <= v[c]: v[a] stops the downward scan, the pivot at hi - 2 the upward
        pivot = v[b]
        v[b], v[hi - 2] = v[hi - 2], v[b]
        i, j = lo, hi - 2
        while True:
            i += 1
            while _before(v[i], pivot):
                i += 1
            j -= 1
            while _before(pivot, v[j]):
                j -= 1
            if i >= j:
                break
            v[i], v[j] = v[j], v[i]
        v[i], v[hi - 2] = v[hi - 2], v[i]
        if k == i:
            return
        if k < i:
            hi = i
        else:
            lo = i + 1
    for i in range(lo + 1, hi):
        x = v[i]
        j = i - 1
        while j >= lo and _before(x, v[j]):
            v[j + 1] = v[j]
            j -= 1
        v[j + 1] = x


@numba.njit(cache=True, nogil=True)
def _medians(  # type: ignore[no-untyped-def,unused-ignore]
    trk, r, n_trk, min_photons, grouped
):
    """Median of ``r`` per track (``trk`` its index, < ``n_trk``): the mean of the two middle
    values of the track's sorted residuals; NaN for tracks with fewer than ``min_photons``.
    The values are grouped by track with a counting sort, then the two middle values of each
    track's few are selected in place (:func:`_select`: the values np.sort puts there, without
    sorting the rest nor allocating a copy per track); ``grouped`` (as long as ``r``) is
    their room."""
    cnt = np.zeros(n_trk, dtype=np.int64)
    for k in range(trk.shape[0]):
        cnt[trk[k]] += 1
    start = np.zeros(n_trk + 1, dtype=np.int64)
    for t in range(n_trk):
        start[t + 1] = start[t] + cnt[t]
    fill = start[:-1].copy()
    for k in range(trk.shape[0]):
        grouped[fill[trk[k]]] = r[k]
        fill[trk[k]] += 1
    med = np.full(n_trk, np.nan)
    ok = cnt >= min_photons
    for t in range(n_trk):
        if ok[t]:
            lo, hi, c = start[t], start[t + 1], cnt[t]
            k1 = lo + (c - 1) // 2
            _select(grouped, lo, hi, k1)
            second = grouped[k1]
            if c % 2 == 0:  # the next value: the first smallest of those after k1
                second = grouped[k1 + 1]
                for i in range(k1 + 2, hi):
                    if _before(grouped[i], second):
                        second = grouped[i]
            med[t] = 0.5 * (grouped[k1] + second)
    return med, ok


def _track_times(p: Photons, offsets: F, min_photons: int) -> tuple[F, npt.NDArray[np.bool_]]:
    """Median over each track's photons of (residual - channel offset); tracks with fewer than
    ``min_photons`` photons are not usable."""
    return _track_medians(p, p.ph_resid - offsets[p.ph_channel], min_photons)


def _track_medians(p: Photons, r: F, min_photons: int) -> tuple[F, npt.NDArray[np.bool_]]:
    """:func:`_track_times` of the photons' residuals ``r`` with the offsets applied."""
    # the room allocated by numpy: numba's allocations of this size are fresh pages each time,
    # numpy's come from the worker's heap (see match_photons)
    grouped = np.empty(len(r), dtype=np.float64)
    med, ok = _medians(p.ph_trk, r, len(p.trk_evt), max(min_photons, 1), grouped)
    return med, ok


def _pair_index(a: npt.ArrayLike, b: npt.ArrayLike) -> I64:
    """Histogram index of the slot pair (a < b), modules 1..16."""
    return (np.asarray(a, dtype=np.int64) - 1) * _NM + np.asarray(b, dtype=np.int64) - 1


@dataclasses.dataclass(frozen=True)
class ModuleT0Collector(Collector):
    """Events with exactly two usable tracks in two modules a < b: the difference of the track
    times (median photon time minus expected, channel T0 applied), per slot pair; and per
    module the photon times folded modulo the RF period (to locate module timing steps)."""

    channel_t0: RunTables = RunTables()
    min_photons: int = 5
    version: ClassVar[int] = 2

    @property
    def branches(self) -> dict[str, str]:
        return _EVENT_BRANCHES | _PHOTON_BRANCHES

    def prepare(self) -> None:
        _load_kernels()
        _load_fill_kernels()
        _medians(np.zeros(1, np.int64), np.zeros(1), 1, 1, np.zeros(1))

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        h = _hist((_NM * _NM, -0.5, _NM * _NM - 0.5), DIFF_BINS, names=("pair", "diff"))
        axis = (CHANNEL_TIME_BINS, 0.0, _RF)
        phase = _hist(_MOD_AXIS, axis, names=("module", "time"))
        if len(events):
            p = match_photons(events)
            offsets = self.channel_t0.table(_run_of(events))
            # residuals with the channel T0 applied: the phases' and the track times' (one pass)
            r = p.ph_resid - offsets[p.ph_channel]
            _fill_folded(_view(phase), r, CHANNEL_TIME_BINS, p.ph_channel // _NP + 1, _MOD_AXIS)
            med, ok = _track_medians(p, r, self.min_photons)
            evt, mod, t = p.trk_evt[ok], p.trk_module[ok], med[ok]
            n = np.bincount(evt, minlength=len(events))
            two = n[evt] == 2
            evt, mod, t = evt[two], mod[two], t[two]
            # tracks are sorted by (event, module): pairs are consecutive, lower module first
            a, b = slice(0, None, 2), slice(1, None, 2)
            pair = _pair_index(mod[a], mod[b])
            fill_2d(_view(h), pair, t[a] - t[b], (_NM * _NM, -0.5, _NM * _NM - 0.5), DIFF_BINS)
        return {"pair_diff": h, "module_phase": phase}


@dataclasses.dataclass(frozen=True)
class CommonT0Collector(Collector):
    """Photon time minus expected time with channel and module T0 applied, folded modulo the
    RF period (the bunch-finder residual at photon level); pixel and z of the photons."""

    offsets: RunTables = RunTables()
    version: ClassVar[int] = 1

    @property
    def branches(self) -> dict[str, str]:
        return _EVENT_BRANCHES | _PHOTON_BRANCHES

    def prepare(self) -> None:
        _load_kernels()
        _load_fill_kernels()

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        axis = (COMMON_TIME_BINS, 0.0, _RF)
        h = _hist(axis, names=("time",))
        pixels = _hist((_NP, 0.5, _NP + 0.5), names=("pixel",))
        if not len(events):
            return {
                "folded": h,
                "pixel": pixels,
                "z": _hist(_MOD_AXIS, Z_BINS, names=("module", "z")),
            }
        p = match_photons(events)
        off = self.offsets.table(_run_of(events))
        _fill_folded(_view(h), p.ph_resid - off[p.ph_channel], COMMON_TIME_BINS)
        fill_1d(_view(pixels), p.ph_pixel, (_NP, 0.5, _NP + 0.5))
        return {"folded": h, "pixel": pixels, "z": _z_hist(p)}


def __dir__() -> list[str]:
    return __all__
