"""TOP calibrations: channel masks, channel T0, module T0 and common T0.

The TOP time of a photon is ``t = t_exp + channel T0 + module T0 + common T0 + TTS + chromatic``
with ``t_exp = collision time + time of flight + propagation time (pixel, z)``; the payloads hold
the offsets (``t = t_raw - channel - module - common``). They are calibrated in the order basf2
runs them:

=====================  ================  ==========================================================
``top-channel-mask``   TOPCalChannelMask  hits per channel; dead if ``hits <= mean / 5``, hot if
                                          ``hits > max(2 mean, mean + 6 rms)``, mean and rms from
                                          3-sigma clipping per board stack (128 pixels)
``top-channel-t0``     TOPCalChannelT0    per channel photon time minus expected time folded
                                          modulo the RF period, fitted with the photon time PDF
                                          (main + second TTS peak with the chromatic smearing,
                                          flat background); zero mean per module; new payload
                                          where a module's timing steps
``top-module-t0``      TOPCalModuleT0     Gaussian fits of the difference of the two muons' track
                                          times for every pair of slots, then a weighted linear
                                          least squares for 16 modules with sum = 0; new payload
                                          where a module's timing steps
``top-common-t0``      TOPCalCommonT0     photon times with channel and module T0 applied, folded
                                          modulo the RF period, photon PDF + constant fit per run
                                          (defined modulo the RF period: nearest the reference)
=====================  ================  ==========================================================

Photons are matched to tracks as the TOP reconstruction does: the digits of a module belong to
the track whose extrapolation (a TOP ExtHit) crossed that module; modules crossed by two tracks
of an event are ambiguous and left out. The expected propagation time comes from
:func:`b2calib.geometry.top.expected_propagation_time`.

Channel T0 in basf2 comes from laser runs (a local calibration of the PMT transit time with a
picosecond laser); the simulated experiment has no laser runs, so it is measured here from
collision mu-mu photons, as basf2's collision-based channel T0 does. The collision time cancels
exactly because collisions happen at bunch crossings: the photon time minus its expected time,
taken modulo the RF period, no longer depends on the bunch, so the 0.8 ns resolution of the
event T0 does not enter.

The photon time PDF (TTS main peak 80 ps, 20 % second peak at +350 ps of 100 ps width, and a
chromatic smearing ``0.8 ps/cm * path factor(pixel) * (z - z_min)``) is TOP detector knowledge,
as basf2's reconstruction PDF is; its parameters are expert_config entries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import awkward as ak
import hist
import numpy as np
import numpy.typing as npt
from scipy import special, stats

from b2calib.calibration import (
    Algorithm,
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Calibration,
    CollectorInput,
    Constants,
    Diagnostics,
    SequentialBoundaries,
    SequentialRunByRun,
    SingleIOV,
)
from b2calib.conditions import ChannelStatus, Payload
from b2calib.conditions.iov import RunKey
from b2calib.engine import Collector
from b2calib.engine.fill import fill_1d, fill_2d
from b2calib.exceptions import CalibrationError
from b2calib.fit import ChannelFits, fit_channels
from b2calib.fit.template_shift import fit_template_shift
from b2calib.geometry import DETECTOR_ID, top

__all__ = [
    "CHANNEL_MASK",
    "CHANNEL_T0",
    "COMMON_T0",
    "MODULE_T0",
    "ChannelHitCollector",
    "ChannelMaskAlgorithm",
    "ChannelT0Algorithm",
    "ChannelTimeCollector",
    "CommonT0Algorithm",
    "CommonT0Collector",
    "ModuleT0Algorithm",
    "ModuleT0Collector",
    "PhotonPDF",
    "boardstack_of",
    "calibrations",
    "clipped_mean",
    "common_t0_collector",
    "mask_channels",
    "match_photons",
    "module_t0_collector",
    "phase_boundaries",
    "solve_module_t0",
]

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

CHANNEL_MASK = "TOPCalChannelMask"
CHANNEL_T0 = "TOPCalChannelT0"
MODULE_T0 = "TOPCalModuleT0"
COMMON_T0 = "TOPCalCommonT0"
EXPERT = "top-calibration@b2calib.example"

_TOP = DETECTOR_ID["TOP"]
_NM, _NP, _NC = top.N_MODULES, top.N_PIXELS, top.N_CHANNELS
_RF = top.RF_PERIOD_NS
#: Board stacks per module (each reads 16 columns x 8 rows = 128 pixels).
N_BOARDSTACKS = 4
#: z binning (cm) of the photon-weighted track crossings, for the chromatic smearing.
Z_BINS = (13, top.Z_MIN_CM, top.Z_MAX_CM)
#: Folded time axis (ns): one RF period.
CHANNEL_TIME_BINS = 48
COMMON_TIME_BINS = 128
#: Track time differences between two slots (ns).
DIFF_BINS = (160, -2.0, 2.0)
_MODULE_KEYS = {"module": np.arange(1, _NM + 1, dtype=np.int16)}
_CHANNEL_KEYS = {
    "module": np.repeat(np.arange(1, _NM + 1, dtype=np.int16), _NP),
    "pixel": np.tile(np.arange(1, _NP + 1, dtype=np.int16), _NM),
}
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


# ------------------------------------------------------------------------------ photon PDF
@dataclasses.dataclass(frozen=True)
class PhotonPDF:
    """The TOP single-photon time PDF around the expected time (ns).

    A main TTS peak at 0 of width ``tts_sigma``, a second peak of fraction ``second_fraction``
    at ``second_offset`` of width ``second_sigma``, each smeared by the chromatic dispersion
    ``chromatic * path_factor(pixel) * (z - z_min)`` of a track crossing the bar at ``z``.
    """

    tts_sigma: float = 0.08
    second_fraction: float = 0.2
    second_offset: float = 0.35
    second_sigma: float = 0.10
    chromatic: float = 0.0008

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PhotonPDF:
        """The PDF parameters of an expert configuration."""
        return cls(
            float(config["tts_sigma_ns"]),
            float(config["tts_second_fraction"]),
            float(config["tts_second_offset_ns"]),
            float(config["tts_second_sigma_ns"]),
            float(config["chromatic_ns_per_cm"]),
        )

    def components(self, path_factor: F, z_weights: F) -> tuple[F, F, F]:
        """Gaussian components (weights, offsets, widths), each (len(path_factor), 2 * Z), for
        pixels with ``path_factor`` and photon-weighted crossings ``z_weights`` over
        :data:`Z_BINS` (one row per pixel, or one row shared by all)."""
        n, lo, hi = Z_BINS
        e = np.linspace(lo, hi, n + 1) - top.Z_MIN_CM
        # rms distance from the bar end over each z bin (uniform within the bin)
        d = np.sqrt((e[:-1] ** 2 + e[:-1] * e[1:] + e[1:] ** 2) / 3.0)
        zw = np.atleast_2d(np.asarray(z_weights, dtype=np.float64))
        pf = np.asarray(path_factor, dtype=np.float64)[:, None]
        chrom2 = (self.chromatic * pf * d[None, :]) ** 2
        zw = np.broadcast_to(zw, chrom2.shape)
        w = np.concatenate([(1 - self.second_fraction) * zw, self.second_fraction * zw], axis=1)
        m = np.concatenate([np.zeros_like(chrom2), np.full_like(chrom2, self.second_offset)], 1)
        s = np.sqrt(
            np.concatenate([self.tts_sigma**2 + chrom2, self.second_sigma**2 + chrom2], axis=1)
        )
        return w, m, s


_PDF_CONFIG = {
    "tts_sigma_ns": 0.08,
    "tts_second_fraction": 0.2,
    "tts_second_offset_ns": 0.35,
    "tts_second_sigma_ns": 0.10,
    "chromatic_ns_per_cm": 0.0008,
}


# ------------------------------------------------------------------------ photons and tracks
@dataclasses.dataclass
class _Photons:
    """TOP tracks (one per module crossed by a single track) and the photons matched to them."""

    trk_evt: I64
    trk_module: I64
    trk_z: F
    trk_tof: F
    ph_trk: I64
    ph_channel: I64
    ph_pixel: I64
    ph_resid: F  # t - tof - expected propagation time


def _flat(events: ak.Array, branch: str, dtype: Any) -> npt.NDArray[Any]:
    return np.asarray(ak.to_numpy(ak.flatten(events[branch])), dtype=dtype)


def match_photons(events: ak.Array) -> _Photons:
    """Tracks at TOP (modules crossed by exactly one track) and their photons."""
    n_ext = np.asarray(ak.to_numpy(ak.num(events["ExtHits_m_detectorID"])), dtype=np.int64)
    evt_e = np.repeat(np.arange(len(events), dtype=np.int64), n_ext)
    sel = _flat(events, "ExtHits_m_detectorID", np.int64) == _TOP
    mod_e = _flat(events, "ExtHits_m_copyID", np.int64)[sel]
    bad = (mod_e < 1) | (mod_e > _NM)
    if np.any(bad):
        raise CalibrationError(f"TOP ExtHits_m_copyID out of 1..{_NM}: {np.unique(mod_e[bad])}")
    key = evt_e[sel] * _NM + mod_e - 1
    z = _flat(events, "ExtHits_m_posZ", np.float64)[sel]
    tof = _flat(events, "ExtHits_m_tof", np.float64)[sel]
    uniq, first, cnt = np.unique(key, return_index=True, return_counts=True)
    single = cnt == 1
    tkey, rows = uniq[single], first[single]
    n_dig = np.asarray(ak.to_numpy(ak.num(events["TOPDigits_m_moduleID"])), dtype=np.int64)
    evt_d = np.repeat(np.arange(len(events), dtype=np.int64), n_dig)
    mod_d = _flat(events, "TOPDigits_m_moduleID", np.int64)
    pix_d = _flat(events, "TOPDigits_m_pixelID", np.int64)
    t_d = _flat(events, "TOPDigits_m_time", np.float64)
    bad = (mod_d < 1) | (mod_d > _NM) | (pix_d < 1) | (pix_d > _NP)
    if np.any(bad):
        raise CalibrationError(
            "TOPDigits with module/pixel out of range (module 1..16, pixel 1..512)"
        )
    key_d = evt_d * _NM + mod_d - 1
    pos = np.searchsorted(tkey, key_d)
    hit = pos < len(tkey)
    hit[hit] = tkey[pos[hit]] == key_d[hit]
    trk = pos[hit]
    tz, ttof = z[rows], tof[rows]
    resid = t_d[hit] - ttof[trk] - top.expected_propagation_time(pix_d[hit], tz[trk])
    return _Photons(
        tkey // _NM,
        tkey % _NM + 1,
        tz,
        ttof,
        trk,
        top.channel_index(mod_d[hit], pix_d[hit]),
        pix_d[hit],
        np.asarray(resid, dtype=np.float64),
    )


def _run_of(events: ak.Array) -> RunKey:
    exp = np.unique(ak.to_numpy(events["EventMetaData_m_experiment"]))
    run = np.unique(ak.to_numpy(events["EventMetaData_m_run"]))
    if len(exp) != 1 or len(run) != 1:
        raise CalibrationError(f"a chunk of events spans several runs: exp {exp}, run {run}")
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


def _z_hist(p: _Photons) -> hist.Hist:
    h = _hist(_MOD_AXIS, Z_BINS, names=("module", "z"))
    fill_2d(_view(h), p.trk_module[p.ph_trk], p.trk_z[p.ph_trk], _MOD_AXIS, Z_BINS)
    return h


# -------------------------------------------------------------------------- per-run tables
@dataclasses.dataclass(frozen=True)
class _RunTables:
    """Per-channel offsets valid for each run: distinct tables and a run -> table index."""

    tables: tuple[tuple[float, ...], ...] = ()
    runs: tuple[tuple[int, int, int], ...] = ()

    def table(self, run: RunKey) -> F:
        for e, r, i in self.runs:
            if (e, r) == run:
                return np.asarray(self.tables[i], dtype=np.float64)
        raise CalibrationError(f"no TOP constants prepared for run {run[0]}.{run[1]}")


def _tables(per_run: Mapping[RunKey, F]) -> _RunTables:
    tables: list[tuple[float, ...]] = []
    runs = []
    for run, arr in sorted(per_run.items()):
        t = tuple(float(x) for x in arr)
        if t not in tables:
            tables.append(t)
        runs.append((run[0], run[1], tables.index(t)))
    return _RunTables(tuple(tables), tuple(runs))


def _channel_t0(constants: Constants, run: RunKey) -> F:
    """Channel T0 of a run (flagged channels 0), from the TOPCalChannelT0 payload."""
    p = constants.require(CHANNEL_T0, *run)
    v = np.asarray(p.value("value"), dtype=np.float64)
    if len(v) != _NC:
        raise CalibrationError(f"payload {CHANNEL_T0} for run {run}: {len(v)} rows, not {_NC}")
    return np.nan_to_num(v, nan=0.0)


def _module_t0(constants: Constants, run: RunKey) -> F:
    p = constants.require(MODULE_T0, *run)
    v = np.asarray(p.value("value"), dtype=np.float64)
    if len(v) != _NM or not np.all(np.isfinite(v)):
        raise CalibrationError(f"payload {MODULE_T0} for run {run}: need {_NM} finite values")
    return v


# ------------------------------------------------------------------------------ collectors
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

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        p = match_photons(events)
        axis = (CHANNEL_TIME_BINS, 0.0, _RF)
        h = _hist(_CH_AXIS, axis, names=("channel", "time"))
        fill_2d(_view(h), p.ph_channel, np.mod(p.ph_resid, _RF), _CH_AXIS, axis)
        return {"channel_time": h, "z": _z_hist(p)}


def _track_times(p: _Photons, offsets: F, min_photons: int) -> tuple[F, npt.NDArray[np.bool_]]:
    """Median over each track's photons of (residual - channel offset); tracks with fewer than
    ``min_photons`` photons are not usable."""
    r = p.ph_resid - offsets[p.ph_channel]
    o = np.lexsort((r, p.ph_trk))
    trk_s, r_s = p.ph_trk[o], r[o]
    n_trk = len(p.trk_evt)
    cnt = np.bincount(trk_s, minlength=n_trk)
    first = np.concatenate([[0], np.cumsum(cnt)[:-1]]).astype(np.int64)
    ok = cnt >= max(min_photons, 1)
    med = np.full(n_trk, np.nan)
    lo = r_s[first[ok] + (cnt[ok] - 1) // 2]
    hi = r_s[first[ok] + cnt[ok] // 2]
    med[ok] = 0.5 * (lo + hi)
    return med, ok


def _pair_index(a: npt.ArrayLike, b: npt.ArrayLike) -> I64:
    """Histogram index of the slot pair (a < b), modules 1..16."""
    return (np.asarray(a, dtype=np.int64) - 1) * _NM + np.asarray(b, dtype=np.int64) - 1


@dataclasses.dataclass(frozen=True)
class ModuleT0Collector(Collector):
    """Events with exactly two usable tracks in two modules a < b: the difference of the track
    times (median photon time minus expected, channel T0 applied), per slot pair; and per
    module the photon times folded modulo the RF period (to locate module timing steps)."""

    channel_t0: _RunTables = _RunTables()
    min_photons: int = 5
    version: ClassVar[int] = 2

    @property
    def branches(self) -> dict[str, str]:
        return _EVENT_BRANCHES | _PHOTON_BRANCHES

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        h = _hist((_NM * _NM, -0.5, _NM * _NM - 0.5), DIFF_BINS, names=("pair", "diff"))
        axis = (CHANNEL_TIME_BINS, 0.0, _RF)
        phase = _hist(_MOD_AXIS, axis, names=("module", "time"))
        if len(events):
            p = match_photons(events)
            offsets = self.channel_t0.table(_run_of(events))
            folded = np.mod(p.ph_resid - offsets[p.ph_channel], _RF)
            fill_2d(_view(phase), p.ph_channel // _NP + 1, folded, _MOD_AXIS, axis)
            med, ok = _track_times(p, offsets, self.min_photons)
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

    offsets: _RunTables = _RunTables()
    version: ClassVar[int] = 1

    @property
    def branches(self) -> dict[str, str]:
        return _EVENT_BRANCHES | _PHOTON_BRANCHES

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
        fill_1d(_view(h), np.mod(p.ph_resid - off[p.ph_channel], _RF), axis)
        fill_1d(_view(pixels), p.ph_pixel, (_NP, 0.5, _NP + 0.5))
        return {"folded": h, "pixel": pixels, "z": _z_hist(p)}


def module_t0_collector(constants: Constants, runs: Sequence[RunKey]) -> ModuleT0Collector:
    """The module-T0 collector with the channel T0 valid for each run."""
    return ModuleT0Collector(_tables({r: _channel_t0(constants, r) for r in runs}))


def common_t0_collector(constants: Constants, runs: Sequence[RunKey]) -> CommonT0Collector:
    """The common-T0 collector with channel + module T0 valid for each run."""
    module = np.repeat(np.arange(_NM), _NP)
    return CommonT0Collector(
        _tables({r: _channel_t0(constants, r) + _module_t0(constants, r)[module] for r in runs})
    )


# ------------------------------------------------------------------------- channel masks
def clipped_mean(values: F, nsigma: float = 3.0, max_iter: int = 20) -> tuple[F, F]:
    """Mean and rms of each row of ``values`` after iterative ``nsigma`` clipping."""
    x = np.asarray(values, dtype=np.float64)
    keep = np.ones_like(x, dtype=bool)
    for _ in range(max_iter):
        n = np.maximum(keep.sum(axis=1), 1)
        mean = np.where(keep, x, 0.0).sum(axis=1) / n
        rms = np.sqrt(np.where(keep, (x - mean[:, None]) ** 2, 0.0).sum(axis=1) / n)
        new = np.abs(x - mean[:, None]) <= nsigma * rms[:, None]
        if np.array_equal(new, keep):
            break
        keep = new
    return mean, rms


def mask_channels(hits: F, groups: I64) -> tuple[npt.NDArray[np.int8], F, F]:
    """Status of every channel (OK, DEAD, HOT) by the basf2 rule within its group: dead if
    ``hits <= mean / 5``, hot if ``hits > max(2 mean, mean + 6 rms)``, mean and rms from
    3-sigma clipping over the group. Returns status, group mean and rms per channel."""
    h = np.asarray(hits, dtype=np.float64)
    ng = int(groups.max()) + 1
    order = np.argsort(groups, kind="stable")
    size = np.bincount(groups, minlength=ng)
    if np.any(size != size[0]):
        raise CalibrationError("channel groups must have equal sizes")
    mean_g, rms_g = clipped_mean(h[order].reshape(ng, size[0]))
    mean, rms = mean_g[groups], rms_g[groups]
    status = np.full(len(h), ChannelStatus.OK, dtype=np.int8)
    status[h <= mean / 5.0] = ChannelStatus.DEAD
    status[h > np.maximum(2.0 * mean, mean + 6.0 * rms)] = ChannelStatus.HOT
    return status, mean, rms


def boardstack_of(channel: npt.ArrayLike) -> I64:
    """Board stack group 0..63 of channel indices 0..8191 (16 columns of a module each)."""
    c = np.asarray(channel, dtype=np.int64)
    col = (c % _NP) % top.N_COLUMNS
    return np.asarray((c // _NP) * N_BOARDSTACKS + col // (top.N_COLUMNS // N_BOARDSTACKS))


class ChannelMaskAlgorithm(Algorithm):
    """Dead and hot channels from the hits per channel (see :func:`mask_channels`).

    Groups are board stacks (128 pixels read by one set of boards): the illumination and the
    electronics noise are similar within one, and 128 channels give a clipped mean to a few
    per cent. Hot channels get value = noise rate per event ``-ln(1 - p)`` from their excess
    occupancy ``p`` over the group mean (a channel records at most one hit per event), with
    its binomial error; dead and good channels value 0.
    """

    name = "channel_mask"
    payloads = (CHANNEL_MASK,)

    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        hits_h, ev_h = data.histograms.get("hits"), data.histograms.get("events")
        if hits_h is None or ev_h is None:
            return AlgorithmResult(AlgorithmStatus.NOT_ENOUGH_DATA, message="no TOP digits")
        hits = hits_h.values().astype(np.float64)
        n_events = float(ev_h.values().sum())
        groups = boardstack_of(np.arange(_NC))
        status, mean, rms = mask_channels(hits, groups)
        min_mean = float(data.config["min_mean_hits"])
        starved = mean < min_mean
        diag = Diagnostics(
            histograms={"hits": hits_h},
            tables={
                "channels": {
                    "channel": np.arange(_NC),
                    "hits": hits,
                    "group_mean": mean,
                    "group_rms": rms,
                    "status": status,
                }
            },
        )
        if np.all(starved):
            return AlgorithmResult(
                AlgorithmStatus.NOT_ENOUGH_DATA,
                diagnostics=diag,
                message=f"mean hits per channel {np.median(mean):.1f} < {min_mean}",
            )
        status[starved] = ChannelStatus.NOT_ENOUGH_DATA
        hot = status == ChannelStatus.HOT
        value = np.zeros(_NC)
        error = np.zeros(_NC)
        # excess occupancy p over the group; a channel records at most one hit per event, so
        # the noise rate is lambda = -ln(1 - p) (Poisson pulses, p = 1 - exp(-lambda))
        occupancy = np.clip((hits[hot] - mean[hot]) / n_events, 0.0, 1.0 - 1e-9)
        value[hot] = -np.log1p(-occupancy)
        # binomial error of the channel's hits and the error of the group mean (128 channels)
        var_p = (hits[hot] * (1 - hits[hot] / n_events) + rms[hot] ** 2 / 128.0) / n_events**2
        error[hot] = np.sqrt(var_p) / (1.0 - occupancy)
        payload = Payload(
            CHANNEL_MASK,
            keys=dict(_CHANNEL_KEYS),
            values={"value": value},
            errors={"value": error},
            status=status,
            metadata={
                "units": {"value": "1/event"},
                "description": "channel mask: status DEAD or HOT; value = noise hits per event",
            },
        )
        counts = {s.name: int(np.sum(status == s)) for s in ChannelStatus if np.any(status == s)}
        return AlgorithmResult(
            AlgorithmStatus.OK, [payload], diag, f"{n_events:.0f} events; {counts}"
        )


# --------------------------------------------------------------------------- channel T0
def _dead_channels(constants: Constants, runs: Sequence[RunKey]) -> npt.NDArray[np.bool_]:
    dead = np.zeros(_NC, dtype=bool)
    for payload in constants.for_runs(CHANNEL_MASK, runs).values():
        if payload is not None and payload.status is not None:
            dead |= payload.status == ChannelStatus.DEAD
    return dead


def _circular_centre(counts: F, period: float) -> F:
    """Peak position of each row of a folded histogram (phase of the first harmonic)."""
    nb = counts.shape[-1]
    phase = np.exp(2j * np.pi * (np.arange(nb) + 0.5) / nb)
    return np.asarray(np.mod(np.angle(counts @ phase) / (2 * np.pi) * period, period))


def _window(counts: F, centre: F) -> tuple[F, I64]:
    """Roll each row so that the bins cover one period centred on ``centre`` (one per row);
    returns rolled counts and the first bin (absolute, may be negative) of each row."""
    nb = counts.shape[-1]
    bw = _RF / nb
    first = np.rint(centre / bw).astype(np.int64) - nb // 2
    idx = (first[:, None] + np.arange(nb)[None, :]) % nb
    return np.take_along_axis(counts, idx, axis=1), first


class ChannelT0Algorithm(Algorithm):
    """Channel T0 from the folded photon times (see the module documentation).

    Each module's photons give a reference phase (first harmonic of the folded distribution);
    each channel's histogram is read over one RF period around it and fitted with the photon
    PDF (template built from the pixel's path factor and its module's photon-weighted track
    crossings) shifted by ``mu`` plus a flat background, all channels in one batched fit. The
    channel T0 is ``mu`` minus the mean ``mu`` of the module's calibrated channels (zero mean
    per module, as the payload convention). Uncertainty: the fit error combined with that of the
    module mean, ``sigma_c^2 (1 - 2/n) + sum(sigma^2) / n^2``.

    Channels masked DEAD are flagged DEAD; channels with fewer than ``min_entries`` photons
    NOT_ENOUGH_DATA; failed fits FAILED.

    The module's photons are folded together over the runs of one execution, so the module
    timing must be stable over them: :meth:`boundaries` requests a new payload where a module's
    timing steps (a firmware update changing a module T0 would otherwise broaden that module's
    peaks).
    """

    name = "channel_t0"
    payloads = (CHANNEL_T0,)

    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        h, zh = data.histograms.get("channel_time"), data.histograms.get("z")
        if h is None or zh is None:
            return AlgorithmResult(AlgorithmStatus.NOT_ENOUGH_DATA, message="no TOP photons")
        counts = h.values().astype(np.float64)
        dead = _dead_channels(data.constants, data.runs)
        mod = np.repeat(np.arange(_NM), _NP)
        centre = _circular_centre(counts.reshape(_NM, _NP, -1).sum(axis=1), _RF)
        rolled, first = _window(counts, centre[mod])
        bw = _RF / counts.shape[1]
        edges = np.arange(counts.shape[1] + 1) * bw
        zw = zh.values().astype(np.float64)
        pf = top.path_factor(np.tile(np.arange(1, _NP + 1), _NM))
        pdf = PhotonPDF.from_config(cfg)
        w, m, s = pdf.components(pf, zw[mod])
        # the fit runs in window coordinates x - first * bw: mu there, the template unchanged
        fits = fit_template_shift(
            rolled,
            edges,
            w,
            m,
            s,
            period=_RF,
            min_entries=int(cfg["min_entries"]),
        )
        mu = fits.values["mu"] + first * bw
        err = fits.errors["mu"]
        status = fits.status.copy()
        status[dead] = ChannelStatus.DEAD
        ok = status == ChannelStatus.OK
        value = np.full(_NC, np.nan)
        error = np.full(_NC, np.nan)
        min_ch = int(cfg["min_channels_per_module"])
        for k in range(_NM):
            sel = slice(k * _NP, (k + 1) * _NP)
            okm = ok[sel]
            n = int(okm.sum())
            if n < min_ch:
                status[sel][okm] = ChannelStatus.NOT_ENOUGH_DATA
                continue
            mean = mu[sel][okm].mean()
            var_mean = np.sum(err[sel][okm] ** 2) / n**2
            value[sel][okm] = mu[sel][okm] - mean
            error[sel][okm] = np.sqrt(err[sel][okm] ** 2 * (1 - 2.0 / n) + var_mean)
        ok = status == ChannelStatus.OK
        diag = Diagnostics(histograms={"channel_time": h, "z": zh})
        diag.add_fits("channel_fits", fits, np.arange(_NC))
        diag.tables["channel_fits"]["window_first_bin"] = first.astype(np.float64)
        diag.tables["channel_fits"]["final_status"] = status
        alive = ~dead
        frac = ok.sum() / max(alive.sum(), 1)
        summary = {x.name: int(np.sum(status == x)) for x in ChannelStatus if np.any(status == x)}
        if frac < float(cfg["min_calibrated_fraction"]):
            return AlgorithmResult(
                AlgorithmStatus.NOT_ENOUGH_DATA,
                diagnostics=diag,
                message=f"{frac:.1%} of live channels calibrated: {summary}",
            )
        payload = Payload(
            CHANNEL_T0,
            keys=dict(_CHANNEL_KEYS),
            values={"value": value},
            errors={"value": error},
            status=status,
            metadata={
                "units": {"value": "ns"},
                "description": "channel T0 relative to its module (zero mean per module)",
                "method": "collision mu-mu photons folded modulo the RF period (no laser runs)",
            },
        )
        return AlgorithmResult(AlgorithmStatus.OK, [payload], diag, f"{summary}")

    def boundaries(self, data: AlgorithmInput) -> list[RunKey]:
        """Runs where a module's timing steps (a module T0 change), see
        :func:`phase_boundaries`."""
        runs = [r for r in data.runs if "channel_time" in data.per_run.get(r, {})]
        phases = [
            data.per_run[r]["channel_time"].values().reshape(_NM, _NP, -1).sum(axis=1) for r in runs
        ]
        return phase_boundaries(runs, phases, data.config)


def phase_boundaries(
    runs: Sequence[RunKey], module_counts: Sequence[npt.ArrayLike], config: Mapping[str, Any]
) -> list[RunKey]:
    """Runs where a module's timing steps, from per-run (16, bins) histograms of the photon
    times folded modulo the RF period.

    Binary segmentation: for every split of a run range, the per-module phases before and after
    (:func:`_module_phase`), their common shift removed (the common T0 drifts: not a module
    step), chi2 over the modules; the best split is kept when its p-value is below
    ``boundary_pvalue`` and a module moved by more than ``boundary_min_shift_ns``, and both
    sides are searched again.
    """
    if len(runs) < 2:
        return []
    stack = np.stack([np.asarray(c, dtype=np.float64) for c in module_counts])
    cum = np.concatenate([np.zeros_like(stack[:1]), np.cumsum(stack, axis=0)])
    min_shift = float(config["boundary_min_shift_ns"])
    log_p = np.log(float(config["boundary_pvalue"]))

    def compare(i: int, k: int, j: int) -> tuple[float, bool]:
        (cl, el), (cr, er) = _module_phase(cum[k] - cum[i]), _module_phase(cum[j] - cum[k])
        ok = np.isfinite(el) & np.isfinite(er)
        if ok.sum() < 3:
            return -np.inf, False
        d = np.mod(cl[ok] - cr[ok] + _RF / 2, _RF) - _RF / 2
        w = 1.0 / (el[ok] ** 2 + er[ok] ** 2)
        d = d - np.sum(w * d) / np.sum(w)  # a common shift is the common T0, not a step
        chi2, ndf = float(np.sum(w * d**2)), int(ok.sum()) - 1
        passes = np.max(np.abs(d)) > min_shift and stats.chi2.logsf(chi2, ndf) < log_p
        return (chi2 - ndf) / np.sqrt(2.0 * ndf), bool(passes)

    out: list[RunKey] = []

    def split(i: int, j: int) -> None:
        if j - i < 2:
            return
        scores = [compare(i, k, j) for k in range(i + 1, j)]
        best = int(np.argmax([sc for sc, _ in scores]))
        if not scores[best][1]:
            return
        out.append(runs[best + i + 1])
        split(i, best + i + 1)
        split(best + i + 1, j)

    split(0, len(runs))
    return sorted(out)


def _module_phase(counts: F, min_photons: float = 20.0) -> tuple[F, F]:
    """Peak phase (ns) of each row of a folded histogram and its uncertainty (NaN below
    ``min_photons``): circular mean with ``var = (1 - R2) / (2 N R1^2)`` in radians, R1 and R2
    the mean resultant lengths of the first and second harmonics."""
    nb = counts.shape[-1]
    angle = 2 * np.pi * (np.arange(nb) + 0.5) / nb
    n = counts.sum(axis=-1)
    safe = np.maximum(n, 1.0)
    h1 = counts @ np.exp(1j * angle) / safe
    h2 = counts @ np.exp(2j * angle) / safe
    centre = np.mod(np.angle(h1), 2 * np.pi) / (2 * np.pi) * _RF
    r1 = np.abs(h1)
    # the second-harmonic term about the mean direction
    r2 = np.real(h2 * np.exp(-2j * np.angle(h1)))
    var = (1 - r2) / (2 * safe * np.maximum(r1, 1e-9) ** 2)
    err = np.sqrt(np.maximum(var, 0.0)) / (2 * np.pi) * _RF
    err = np.where(n >= min_photons, err, np.nan)
    return centre, err


# ---------------------------------------------------------------------------- module T0
def _pair_modules() -> tuple[I64, I64]:
    p = np.arange(_NM * _NM)
    return p // _NM + 1, p % _NM + 1


def solve_module_t0(
    a: npt.ArrayLike, b: npt.ArrayLike, diff: npt.ArrayLike, sigma: npt.ArrayLike
) -> tuple[F, F, float, int]:
    """Module T0s from pair differences ``diff = T0[a] - T0[b]`` (+- ``sigma``) with
    sum(T0) = 0.

    Weighted linear least squares; the covariance is the pseudo-inverse of the normal matrix,
    whose null space (a common shift) is exactly the direction the constraint removes.
    Returns values, covariance, chi2 and degrees of freedom; raises CalibrationError when the
    pairs do not connect all modules.
    """
    ai, bi = np.asarray(a, dtype=np.int64) - 1, np.asarray(b, dtype=np.int64) - 1
    y, s = np.asarray(diff, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    n = len(y)
    design = np.zeros((n, _NM))
    design[np.arange(n), ai] = 1.0
    design[np.arange(n), bi] = -1.0
    wt = 1.0 / s**2
    normal = design.T @ (design * wt[:, None])
    if np.linalg.matrix_rank(normal) < _NM - 1:
        raise CalibrationError("the slot pairs with data do not connect all 16 modules")
    cov = np.asarray(np.linalg.pinv(normal, hermitian=True), dtype=np.float64)
    t0 = cov @ (design.T @ (wt * y))
    t0 -= t0.mean()  # exact zero sum (removes rounding)
    chi2 = float(np.sum(wt * (y - design @ t0) ** 2))
    return t0, cov, chi2, n - (_NM - 1)


def _pair_fits(h: hist.Hist, min_entries: int) -> tuple[ChannelFits, npt.NDArray[np.bool_]]:
    fits = fit_channels(h, background=True, min_entries=min_entries)
    fits.errors["mu"] = _sandwich_mu_error(h.values().astype(np.float64), h.axes[1].edges, fits)
    a, b = _pair_modules()
    usable = fits.ok & (a < b) & np.isfinite(fits.errors["mu"]) & (fits.errors["mu"] > 0)
    return fits, usable


def _sandwich_mu_error(counts: F, edges: F, fits: ChannelFits) -> F:
    """Error of the fitted peak position robust to the peak shape: the sandwich (Huber-White)
    covariance ``I^-1 J I^-1`` of the Gaussian + flat binned Poisson fit, with ``J`` from the
    observed residuals. The per-pair track-time differences are a mixture of resolutions
    (photon counts and crossing positions vary), not one Gaussian, so the inverse information
    alone misstates the scatter of the fitted mean. The flat background (often at its bound 0,
    and uncorrelated with the position of a symmetric peak) is held fixed."""
    n, mu, sg, b = (np.nan_to_num(fits.values[k])[:, None] for k in ("n", "mu", "sigma", "b"))
    sg = np.where(sg > 0, sg, 1.0)
    z = (edges[None, :] - mu) / sg
    cdf = 0.5 * special.erfc(-z / np.sqrt(2.0))
    pdf = np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
    prob = np.diff(cdf, axis=1)
    width = np.diff(edges)[None, :]
    lam = np.maximum(n * prob + b * width, 1e-12)
    jac = np.stack(
        [
            prob,
            -n * np.diff(pdf, axis=1) / sg,
            -n * np.diff(pdf * z, axis=1) / sg,
        ],
        axis=-1,
    )
    info = np.einsum("cbp,cbq->cpq", jac / lam[..., None], jac)
    meat = np.einsum("cbp,cbq->cpq", jac * ((counts - lam) / lam)[..., None] ** 2, jac)
    out = np.full(len(counts), np.nan)
    good = np.linalg.cond(info) < 1e12
    inv = np.linalg.inv(info[good])
    out[good] = np.sqrt(np.abs((inv @ meat[good] @ inv)[:, 1, 1]))
    return out


class ModuleT0Algorithm(Algorithm):
    """Module T0 (16 values, sum 0) from the track time differences of slot pairs.

    Every pair with at least ``min_pair_entries`` events gets a Gaussian (+ flat) fit of the
    difference (batched); then :func:`solve_module_t0`. The payload errors are the square roots
    of the constrained covariance's diagonal. Boundaries are requested where a module's timing
    steps (:func:`phase_boundaries` on the photons of all matched tracks).
    """

    name = "module_t0"
    payloads = (MODULE_T0,)

    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        h = data.histograms.get("pair_diff")
        if h is None:
            return AlgorithmResult(AlgorithmStatus.NOT_ENOUGH_DATA, message="no TOP track pairs")
        fits, usable = _pair_fits(h, int(data.config["min_pair_entries"]))
        a, b = _pair_modules()
        diag = Diagnostics(histograms={"pair_diff": h})
        diag.add_fits("pair_fits", fits, np.arange(_NM * _NM))
        seen = np.zeros(_NM + 1, dtype=bool)
        seen[a[usable]] = seen[b[usable]] = True
        if not seen[1:].all():
            missing = np.flatnonzero(~seen[1:]) + 1
            return AlgorithmResult(
                AlgorithmStatus.NOT_ENOUGH_DATA,
                diagnostics=diag,
                message=f"modules without a usable slot pair: {missing.tolist()}",
            )
        try:
            t0, cov, chi2, ndf = solve_module_t0(
                a[usable], b[usable], fits.values["mu"][usable], fits.errors["mu"][usable]
            )
        except CalibrationError as exc:
            return AlgorithmResult(
                AlgorithmStatus.NOT_ENOUGH_DATA, diagnostics=diag, message=str(exc)
            )
        err = np.sqrt(np.diag(cov))
        diag.tables["module_t0"] = {
            "module": np.arange(1, _NM + 1),
            "value": t0,
            "error": err,
            **{f"cov_{j + 1}": cov[:, j] for j in range(_NM)},  # the constrained covariance
        }
        payload = Payload(
            MODULE_T0,
            keys=dict(_MODULE_KEYS),
            values={"value": t0},
            errors={"value": err},
            metadata={
                "units": {"value": "ns"},
                "description": "module T0 (sum over modules = 0): t = t_raw - channel - module "
                "- common",
                "chi2": chi2,
                "ndf": ndf,
                "pairs": int(usable.sum()),
            },
        )
        return AlgorithmResult(
            AlgorithmStatus.OK,
            [payload],
            diag,
            f"{int(usable.sum())} pairs, chi2/ndf {chi2:.1f}/{ndf}",
        )

    def boundaries(self, data: AlgorithmInput) -> list[RunKey]:
        """Runs where a module's timing steps, from the per-module phases of all photons
        matched to tracks (far more statistics than the two-track events): see
        :func:`phase_boundaries`."""
        runs = [r for r in data.runs if "module_phase" in data.per_run.get(r, {})]
        phases = [data.per_run[r]["module_phase"].values() for r in runs]
        return phase_boundaries(runs, phases, data.config)


# ---------------------------------------------------------------------------- common T0
def _uncalibrated_fraction(constants: Constants, run: RunKey) -> float:
    """Share of the live channels whose channel T0 is not calibrated (status not OK)."""
    p = constants.require(CHANNEL_T0, *run)
    if p.status is None:
        return 0.0
    live = p.status != ChannelStatus.DEAD
    return float(np.sum(live & (p.status != ChannelStatus.OK)) / max(np.sum(live), 1))


class CommonT0Algorithm(Algorithm):
    """Common T0 from the folded photon residuals (channel and module T0 applied).

    The folded distribution is read over one RF period around its peak and fitted with the
    photon PDF (averaged over the photons' pixels and track crossings) plus a constant; the
    common T0 is the main peak position, taken in the period
    ``[reference - RF/2, reference + RF/2)`` where the reference is the previous common T0 in
    the input tags if any, else ``reference_ns``. NOT_ENOUGH_DATA below ``min_photons``.
    Photons of live channels whose channel T0 is not calibrated (the share of such channels in
    the TOPCalChannelT0 payload) are described by the PDF smeared by the typical channel T0
    spread ``uncalibrated_channel_t0_spread_ns`` (e.g. a bucket too small for channel T0).
    The common T0 is defined modulo the RF period by collision data: the reference must be
    within RF/2 of the truth (the previous payload in prompt processing).
    """

    name = "common_t0"
    payloads = (COMMON_T0,)

    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        h = data.histograms.get("folded")
        if h is None or h.values().sum() < int(cfg["min_photons"]):
            n = 0 if h is None else int(h.values().sum())
            return AlgorithmResult(
                AlgorithmStatus.NOT_ENOUGH_DATA, message=f"{n} photons < {cfg['min_photons']}"
            )
        counts = h.values().astype(np.float64)[None, :]
        pix = data.histograms["pixel"].values().astype(np.float64)
        zw = data.histograms["z"].values().astype(np.float64).sum(axis=0)
        # pixels grouped in path factor (12 groups; rms path factor of each group's photons)
        pf = top.path_factor(np.arange(1, _NP + 1))
        group = np.minimum(((pf - pf.min()) / np.ptp(pf) * 12).astype(np.int64), 11)
        wpf = np.bincount(group, weights=pix, minlength=12)
        upf = np.sqrt(
            np.bincount(group, weights=pix * pf**2, minlength=12) / np.maximum(wpf, 1e-300)
        )
        pdf = PhotonPDF.from_config(cfg)
        w, m, s = pdf.components(upf, zw)
        w, m, s = (w * wpf[:, None]).ravel(), m.ravel(), s.ravel()
        # photons of live channels without a calibrated channel T0 are spread by the unknown
        # channel T0s: their share of the PDF is smeared by uncalibrated_channel_t0_spread_ns
        f = _uncalibrated_fraction(data.constants, data.runs[0])
        spread = float(cfg["uncalibrated_channel_t0_spread_ns"])
        w = np.concatenate([(1 - f) * w, f * w])[None, :]
        m = np.concatenate([m, m])[None, :]
        s = np.concatenate([s, np.sqrt(s**2 + spread**2)])[None, :]
        centre = _circular_centre(counts, _RF)
        rolled, first = _window(counts, centre)
        bw = _RF / counts.shape[1]
        edges = np.arange(counts.shape[1] + 1) * bw
        fits = fit_template_shift(
            rolled, edges, w, m, s, period=_RF, min_entries=int(cfg["min_photons"])
        )
        diag = Diagnostics(histograms={k: data.histograms[k] for k in ("folded", "pixel", "z")})
        diag.add_fits("fit", fits, np.array([0]))
        if fits.status[0] != ChannelStatus.OK:
            return AlgorithmResult(
                AlgorithmStatus.FAILURE,
                diagnostics=diag,
                message=f"common T0 fit of runs {data.runs[0]}..{data.runs[-1]}: {fits.reason[0]}",
            )
        mu = float(fits.values["mu"][0] + first[0] * bw)
        previous = data.constants.get(COMMON_T0, *data.runs[0])
        ref = float(cfg["reference_ns"]) if previous is None else float(previous.value()[0])
        mu = ref + float(np.mod(mu - ref + _RF / 2, _RF)) - _RF / 2
        err = float(fits.errors["mu"][0])
        payload = Payload(
            COMMON_T0,
            values={"value": np.array([mu])},
            errors={"value": np.array([err])},
            metadata={
                "units": {"value": "ns"},
                "description": "common T0 of all modules",
                "signal_photons": float(fits.values["n"][0]),
            },
        )
        return AlgorithmResult(
            AlgorithmStatus.OK,
            [payload],
            diag,
            f"common T0 {mu:.4f} +- {err:.4f} ns from {fits.values['n'][0]:.0f} photons",
        )


# ---------------------------------------------------------------------------- declarations
def calibrations() -> list[Calibration]:
    """The TOP calibration declarations, in the order basf2 runs them."""
    return [
        Calibration(
            name="top-channel-mask",
            expert=EXPERT,
            inputs={
                "digits": CollectorInput(
                    ChannelHitCollector(), ("hlt_hadron", "hlt_mumu_2trk", "hlt_bhabha")
                )
            },
            algorithms=[ChannelMaskAlgorithm()],
            strategy=SingleIOV(),
            run_type="physics",
            expert_config={"min_mean_hits": 25.0},
            open_end=True,
            description="TOP dead and hot channels (TOPCalChannelMask) from the hits per channel "
            "in collision events: dead if hits <= mean/5, hot if hits > max(2 mean, mean + 6 "
            "rms), mean and rms from 3-sigma clipping per board stack.",
        ),
        Calibration(
            name="top-channel-t0",
            expert=EXPERT,
            inputs={"photons": CollectorInput(ChannelTimeCollector(), ("hlt_mumu_2trk",))},
            algorithms=[ChannelT0Algorithm()],
            strategy=SequentialBoundaries(),
            run_type="physics",
            magnet_on=True,
            depends_on=("top-channel-mask",),
            expert_config={
                "min_entries": 50,
                "min_channels_per_module": 64,
                "min_calibrated_fraction": 0.5,
                "boundary_pvalue": 1e-6,
                "boundary_min_shift_ns": 0.1,
                **_PDF_CONFIG,
            },
            open_end=True,
            description="TOP channel T0 (TOPCalChannelT0) from collision mu-mu photons folded "
            "modulo the RF period (basf2 uses laser runs; the simulation has none), photon PDF "
            "fit per channel, zero mean per module.",
        ),
        Calibration(
            name="top-module-t0",
            expert=EXPERT,
            inputs={"pairs": CollectorInput(module_t0_collector, ("hlt_mumu_2trk",))},
            algorithms=[ModuleT0Algorithm()],
            strategy=SequentialBoundaries(),
            run_type="physics",
            magnet_on=True,
            depends_on=("top-channel-t0",),
            expert_config={
                "min_pair_entries": 20,
                "boundary_pvalue": 1e-6,
                "boundary_min_shift_ns": 0.1,
            },
            open_end=True,
            description="TOP module T0 (TOPCalModuleT0): Gaussian fits of the track time "
            "difference of slot pairs in mu-mu events, weighted least squares with sum = 0; "
            "payloads split where the module T0s change.",
        ),
        Calibration(
            name="top-common-t0",
            expert=EXPERT,
            inputs={"photons": CollectorInput(common_t0_collector, ("hlt_mumu_2trk",))},
            algorithms=[CommonT0Algorithm()],
            strategy=SequentialRunByRun(step_size=1),
            run_type="physics",
            magnet_on=True,
            depends_on=("top-channel-t0", "top-module-t0"),
            expert_config={
                "min_photons": 1000,
                "reference_ns": 0.0,
                "uncalibrated_channel_t0_spread_ns": 0.15,
                **_PDF_CONFIG,
            },
            open_end=True,
            description="TOP common T0 (TOPCalCommonT0) per run: photon residuals with channel "
            "and module T0 applied folded modulo the RF period, photon PDF + constant fit; "
            "runs with too few photons merge with the next.",
        ),
    ]
