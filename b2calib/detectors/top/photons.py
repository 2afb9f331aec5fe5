"""TOP photons: matched to their tracks, their time PDF, and their times folded modulo the RF
period.

Photons are matched to tracks as the TOP reconstruction does: the digits of a module belong to
the track whose extrapolation (a TOP ExtHit) crossed that module; modules crossed by two tracks
of an event are ambiguous and left out. The expected propagation time comes from
:func:`b2calib.geometry.top.expected_propagation_time`; a photon's residual is its time minus
the track's time of flight and the expected propagation time.

The photon time PDF (:class:`PhotonPDF`: TTS main peak 80 ps, 20 % second peak at +350 ps of
100 ps width, and a chromatic smearing ``0.8 ps/cm * path factor(pixel) * (z - z_min)``) is TOP
detector knowledge, as basf2's reconstruction PDF is; its parameters are expert_config entries
(:data:`PDF_CONFIG`).

Collisions happen at bunch crossings, so residuals folded modulo the RF period no longer depend
on the bunch: :func:`circular_centre` and :func:`rf_window` locate and centre their peak, and
:func:`phase_boundaries` finds the runs where a module's timing steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import awkward as ak
import numba
import numpy as np
import numpy.typing as npt
from scipy import stats

from b2calib.calibration.toolkit import find_steps
from b2calib.conditions.iov import RunKey
from b2calib.exceptions import BadValueError
from b2calib.geometry import DETECTOR_ID, top

__all__ = [
    "BOUNDARY_CONFIG",
    "PDF_CONFIG",
    "Z_BINS",
    "PhotonPDF",
    "Photons",
    "check_digits",
    "circular_centre",
    "match_photons",
    "phase_boundaries",
    "rf_window",
]

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_TOP = DETECTOR_ID["TOP"]
_NM, _NP = top.N_MODULES, top.N_PIXELS
_RF = top.RF_PERIOD_NS
#: z binning (cm) of the photon-weighted track crossings, for the chromatic smearing.
Z_BINS = (13, top.Z_MIN_CM, top.Z_MAX_CM)


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


#: The expert_config entries of the photon PDF, at their defaults (:meth:`PhotonPDF.from_config`).
PDF_CONFIG = {
    "tts_sigma_ns": 0.08,
    "tts_second_fraction": 0.2,
    "tts_second_offset_ns": 0.35,
    "tts_second_sigma_ns": 0.10,
    "chromatic_ns_per_cm": 0.0008,
}


@dataclasses.dataclass
class Photons:
    """TOP tracks (one per module crossed by a single track) and the photons matched to them:
    per track its event, module, crossing z and time of flight; per photon its track (index),
    channel (0..8191), pixel (1..512) and residual (time - time of flight - expected
    propagation time)."""

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


#: Path factor of each pixel 1..512 (index pixel - 1): one gather per photon instead of the
#: formula's five passes over the photons (the same float64 operations, the same values).
_PATH_FACTOR = top.path_factor(np.arange(1, _NP + 1))


@numba.njit(cache=True, nogil=True)
def _digit_photons(  # type: ignore[no-untyped-def,unused-ignore]
    n_dig,
    mod_d,
    pix_d,
    t_d,
    track_of,
    trk_z,
    trk_tof,
    path_factor,
    z_min,
    velocity,
    trk,
    channel,
    pixel,
    resid,
):
    """The digits of the modules crossed by one track: per photon its track, channel, pixel
    and residual ``t - tof - path_factor * (z - z_min) / velocity`` (the operations of
    :func:`~b2calib.geometry.top.expected_propagation_time`, in its order), written to the
    first entries of ``trk``, ``channel``, ``pixel`` and ``resid`` (one entry per digit at
    least); returns how many.

    ``track_of[event * 16 + module - 1]`` is the track of that module (-1: none or two); the
    digits of event ``e`` are the next ``n_dig[e]`` entries of the flat digit arrays.
    """
    k = 0
    i = 0
    for e in range(n_dig.shape[0]):
        base = e * _NM
        for _ in range(n_dig[e]):
            m = np.int64(mod_d[i])
            t = track_of[base + m - 1]
            if t >= 0:
                p = np.int64(pix_d[i])
                trk[k] = t
                channel[k] = (m - 1) * _NP + p - 1
                pixel[k] = p
                expected = path_factor[p - 1] * (trk_z[t] - z_min) / velocity
                resid[k] = np.float64(t_d[i]) - trk_tof[t] - expected
                k += 1
            i += 1
    return k


def check_digits(module: npt.NDArray[Any], pixel: npt.NDArray[Any]) -> None:
    """Raise :class:`~b2calib.exceptions.BadValueError` for the first digit whose module is not
    1..16 or whose pixel is not 1..512, naming its branch (no sound file holds one; a pixel past
    512 would count as the next module's)."""
    if not len(module) or (
        module.min() >= 1 and module.max() <= _NM and pixel.min() >= 1 and pixel.max() <= _NP
    ):
        return
    bad_mod = (module < 1) | (module > _NM)
    k = int(np.argmax(bad_mod | (pixel < 1) | (pixel > _NP)))
    if bad_mod[k]:
        raise BadValueError(
            "TOPDigits_m_moduleID",
            f"digit {k} of the entries read: module {module[k]}, TOP has 1..{_NM}",
        )
    raise BadValueError(
        "TOPDigits_m_pixelID",
        f"digit {k} of the entries read: pixel {pixel[k]}, a module has 1..{_NP}",
    )


def match_photons(events: ak.Array) -> Photons:
    """Tracks at TOP (modules crossed by exactly one track) and their photons."""
    n_ext = np.asarray(ak.to_numpy(ak.num(events["ExtHits_m_detectorID"])), dtype=np.int64)
    evt_e = np.repeat(np.arange(len(events), dtype=np.int64), n_ext)
    sel = _flat(events, "ExtHits_m_detectorID", np.int64) == _TOP
    mod_e = _flat(events, "ExtHits_m_copyID", np.int64)[sel]
    bad = (mod_e < 1) | (mod_e > _NM)
    if np.any(bad):
        k = int(np.argmax(bad))
        raise BadValueError(
            "ExtHits_m_copyID",
            f"TOP ExtHit {k} of the entries read: module {mod_e[k]}, TOP has 1..{_NM}",
        )
    key = evt_e[sel] * _NM + mod_e - 1
    z = _flat(events, "ExtHits_m_posZ", np.float64)[sel]
    tof = _flat(events, "ExtHits_m_tof", np.float64)[sel]
    uniq, first, cnt = np.unique(key, return_index=True, return_counts=True)
    single = cnt == 1
    tkey, rows = uniq[single], first[single]
    n_dig = np.asarray(ak.to_numpy(ak.num(events["TOPDigits_m_moduleID"])), dtype=np.int64)
    mod_d = ak.to_numpy(ak.flatten(events["TOPDigits_m_moduleID"]))
    pix_d = ak.to_numpy(ak.flatten(events["TOPDigits_m_pixelID"]))
    t_d = ak.to_numpy(ak.flatten(events["TOPDigits_m_time"]))
    check_digits(mod_d, pix_d)  # the digit loop indexes its tables with them
    track_of = np.full(len(events) * _NM, -1, dtype=np.int64)
    track_of[tkey] = np.arange(len(tkey), dtype=np.int64)
    tz, ttof = z[rows], tof[rows]
    # the outputs allocated by numpy, not in the compiled loop: numba's own allocations of
    # this size are fresh pages every time (16k page faults for the 3M digits of a bench
    # file, 3/4 of the loop's time), numpy's come from the worker's heap, reused
    n = len(mod_d)
    trk, channel, pixel = (np.empty(n, dtype=np.int64) for _ in range(3))
    resid = np.empty(n, dtype=np.float64)
    k = _digit_photons(
        n_dig,
        mod_d,
        pix_d,
        t_d,
        track_of,
        tz,
        ttof,
        _PATH_FACTOR,
        float(top.Z_MIN_CM),
        float(top.GROUP_VELOCITY),
        trk,
        channel,
        pixel,
        resid,
    )
    return Photons(
        tkey // _NM, tkey % _NM + 1, tz, ttof, trk[:k], channel[:k], pixel[:k], resid[:k]
    )


def _load_kernels() -> None:
    """Load the compiled digit loop of :func:`match_photons` for the skim files' types (a
    collector's ``prepare``: once before the engine's workers fork, not once in each)."""
    jagged = {
        "ExtHits_m_detectorID": np.int8,
        "ExtHits_m_copyID": np.int32,
        "ExtHits_m_posZ": np.float32,
        "ExtHits_m_tof": np.float32,
        "TOPDigits_m_moduleID": np.int8,
        "TOPDigits_m_pixelID": np.int16,
        "TOPDigits_m_time": np.float32,
    }
    one = np.ones(1, dtype=np.int64)
    match_photons(ak.Array({k: ak.unflatten(np.ones(1, dtype=t), one) for k, t in jagged.items()}))


def circular_centre(counts: F, period: float) -> F:
    """Peak position of each row of a folded histogram (phase of the first harmonic)."""
    nb = counts.shape[-1]
    phase = np.exp(2j * np.pi * (np.arange(nb) + 0.5) / nb)
    return np.asarray(np.mod(np.angle(counts @ phase) / (2 * np.pi) * period, period))


def rf_window(counts: F, centre: F) -> tuple[F, I64]:
    """Roll each row so that the bins cover one period centred on ``centre`` (one per row);
    returns rolled counts and the first bin (absolute, may be negative) of each row."""
    nb = counts.shape[-1]
    bw = _RF / nb
    first = np.rint(centre / bw).astype(np.int64) - nb // 2
    idx = (first[:, None] + np.arange(nb)[None, :]) % nb
    return np.take_along_axis(counts, idx, axis=1), first


#: The expert_config entries of :func:`phase_boundaries`, at their defaults.
BOUNDARY_CONFIG: dict[str, Any] = {
    "find_boundaries": True,
    "boundary_pvalue": 1e-6,
    "boundary_min_shift_ns": 0.1,
}


def phase_boundaries(
    runs: Sequence[RunKey], module_counts: Sequence[npt.ArrayLike], config: Mapping[str, Any]
) -> list[RunKey]:
    """Runs where a module's timing steps, from per-run (16, bins) histograms of the photon
    times folded modulo the RF period.

    Binary segmentation (:func:`b2calib.calibration.toolkit.find_steps`): for every split of a
    run range, the per-module phases before and after (:func:`_module_phase`), their common
    shift removed (the common T0 drifts: not a module step), chi2 over the modules, scored by
    ``(chi2 - ndf) / sqrt(2 ndf)``; the best split is kept when its p-value is below
    ``boundary_pvalue`` and a module moved by more than ``boundary_min_shift_ns``, and both
    sides are searched again. With ``find_boundaries`` false, none is searched: the expert's
    choice of one payload over a step when neither side has data enough for one (the
    :class:`~b2calib.calibration.SequentialBoundaries` strategy never merges over a boundary).
    """
    if len(runs) < 2 or not config.get("find_boundaries", True):
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

    return find_steps(runs, compare)


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


def __dir__() -> list[str]:
    return __all__
