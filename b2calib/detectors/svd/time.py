"""SVD cluster time (``svd-time``, SVDCoGTimeCalibrations): per sensor side, the third-order
polynomial ``t = a0 + a1 r + a2 r^2 + a3 r^3`` of the raw CoG time ``r`` (basf2
``SVDCoGTimeCalibrationAlgorithm``).

Per sensor side, the 2-D histogram of the event T0 against the raw time of the clusters on
tracks; cells with fewer than ``max(2, 0.1 % of the side's entries)`` entries are zeroed
(``zero_min_entries``, ``zero_fraction``; out-of-
time tails, stray pile-up); the profile in 1 ns raw-time bins (mean event T0, error the side's
pooled spread / sqrt(n), bins with at least ``min_profile_entries``) is fitted with the cubic
(weighted linear least squares: exact, with its covariance). A side's fit must be monotonic over
the raw times it was fitted on, else FAILED; ``monotonic_full_range`` in the diagnostics tells
whether it is over the whole raw range (-80, 120) ns too: there the cubic is an extrapolation
several times the fitted range, which ``a3`` (known to about half its size) does not constrain.

What the profile measures is the mean event T0 of the clusters of a raw time, ``E[T0 | r]``. It
equals the true ``t(r)`` where the collision times are spread evenly around ``t(r)`` over several
cluster-time resolutions (2.5 ns); near the ends of the collision-time range (the outermost
bunches, +-16 ns) it flattens towards the inside. The fit therefore uses the raw bins whose mean
event T0 is inside the event T0 distribution (its ``fit_t0_quantile`` quantiles) by
``fit_margin_spread`` times the profile's spread. The zeroing of low cells truncates each raw
bin's event T0 distribution (by whole bunches: the T0 bins are the RF buckets), which scatters
the profile points beyond their statistical errors: the fit errors are scaled by
``sqrt(chi2 / ndf)`` when it exceeds 1 (the PDG scale factor).

NOT_ENOUGH_DATA when a layer-3 sensor side has fewer than ``min_entries_layer3`` (10 000)
entries; a side of another layer with fewer than ``min_entries_side`` entries or fewer than
``min_profile_bins`` profile points is flagged NOT_ENOUGH_DATA on its own.

Boundaries (:class:`~b2calib.calibration.SequentialBoundaries`): a new payload starts at a run
whose layer-3 V-side mean raw time moved by more than ``boundary_shift_ns`` (2 ns) from the mean
of the run where the current payload started (basf2 ``isBoundaryRequired``), runs with fewer than
``boundary_min_entries`` layer-3 V-side clusters being skipped; the move must also exceed
``boundary_min_significance`` standard deviations (one run's mean is known to ~10 ns / sqrt(n)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
    SequentialBoundaries,
)
from b2calib.calibration.fitview import ChannelView, FitView, ViewContext
from b2calib.calibration.toolkit import NotEnoughData, guarded, require, status_counts
from b2calib.conditions import ChannelStatus, Payload
from b2calib.conditions.iov import RunKey
from b2calib.detectors.svd.collectors import N_SIDES, RAW_AXIS, T0_AXIS, ClusterTimeCollector
from b2calib.geometry import vxd

__all__ = [
    "COG_TIME",
    "SIDE_KEYS",
    "TimeCalibrationAlgorithm",
    "TimeCurves",
    "fit_time_curves",
    "layer3_v_raw_mean",
    "raw_time_boundaries",
    "time_calibration",
    "time_profiles",
]

F = npt.NDArray[np.float64]

COG_TIME = "SVDCoGTimeCalibrations"
RAW_RANGE = vxd.SVD_RAW_RANGE
_rows = np.repeat(np.arange(vxd.N_SVD_SENSORS), 2)
#: Key columns of the per-side payload (sensor sides in order, side 0 = V, 1 = U).
SIDE_KEYS = {
    "layer": vxd.SVD_SENSOR_TABLE[_rows, 0].astype(np.int8),
    "ladder": vxd.SVD_SENSOR_TABLE[_rows, 1].astype(np.int8),
    "sensor": vxd.SVD_SENSOR_TABLE[_rows, 2].astype(np.int8),
    "side": np.tile(np.array([0, 1], dtype=np.int8), vxd.N_SVD_SENSORS),
}
_LAYER = SIDE_KEYS["layer"].astype(np.int64)
_L3V = (_LAYER == 3) & (SIDE_KEYS["side"] == 0)


def _centres(axis: tuple[int, float, float]) -> F:
    n, lo, hi = axis
    return lo + (np.arange(n) + 0.5) * (hi - lo) / n


@dataclass
class TimeCurves:
    """The cubic fit of every sensor side.

    Attributes
    ----------
    coef
        (sides, 4): a0..a3 of ``t = a0 + a1 r + a2 r^2 + a3 r^3`` (NaN where not fitted).
    cov
        (sides, 4, 4) their covariance.
    status
        Per side :class:`~b2calib.conditions.ChannelStatus`.
    entries
        Per side, the histogram entries (before the cells are zeroed).
    chi2, ndf
        Of the profile fit.
    raw_lo, raw_hi
        The raw times the fit covers (edges of the first and last profile bins used).
    monotonic_full_range
        Whether the derivative is positive over :data:`~b2calib.geometry.vxd.SVD_RAW_RANGE` too.
    """

    coef: F
    cov: F
    status: npt.NDArray[np.int8]
    entries: F
    chi2: F
    ndf: F
    raw_lo: F
    raw_hi: F
    monotonic_full_range: npt.NDArray[np.bool_]

    def __call__(self, raw: npt.ArrayLike) -> F:
        """t(raw) of every side: (sides, len(raw))."""
        r = np.atleast_1d(np.asarray(raw, dtype=np.float64))
        powers = r[None, :] ** np.arange(4)[:, None]
        return np.asarray(self.coef @ powers)

    def error(self, raw: npt.ArrayLike) -> F:
        """Error of t(raw) of every side from the fit covariance: (sides, len(raw))."""
        r = np.atleast_1d(np.asarray(raw, dtype=np.float64))
        powers = r[None, :] ** np.arange(4)[:, None]  # (4, n)
        var = np.einsum("in,sij,jn->sn", powers, self.cov, powers)
        return np.asarray(np.sqrt(np.maximum(var, 0.0)))


def _monotonic(coef: F, lo: F, hi: F, n: int = 201) -> npt.NDArray[np.bool_]:
    """Derivative > 0 on [lo, hi] for every row of coefficients."""
    x = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, n)[None, :]
    d = coef[:, 1, None] + 2 * coef[:, 2, None] * x + 3 * coef[:, 3, None] * x**2
    return np.asarray(np.all(d > 0, axis=1))


def time_profiles(
    counts: npt.ArrayLike, config: Mapping[str, Any]
) -> tuple[F, F, F, npt.NDArray[np.bool_], F]:
    """The profiles :func:`fit_time_curves` fits: per sensor side and raw-time bin the mean
    event T0 and its error (the side's pooled spread over the square root of the bin's
    entries), after zeroing the cells below ``max(zero_min_entries, zero_fraction x
    entries)``.

    Returns
    -------
    x, mean, err, use, entries
        Raw-time bin centres, means and errors (sides, raw bins), the bins fitted (enough
        entries, the mean inside the event-T0 distribution by the configured margin) and the
        entries of each side.
    """
    c = np.asarray(counts, dtype=np.float64).copy()
    entries = c.sum(axis=(1, 2))
    thr = np.maximum(float(config["zero_min_entries"]), float(config["zero_fraction"]) * entries)
    c[c < thr[:, None, None]] = 0.0
    y = _centres(T0_AXIS)
    x = _centres(RAW_AXIS)
    n = c.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (c * y).sum(axis=2) / n
        var = (c * (y[None, None, :] - mean[..., None]) ** 2).sum(axis=2) / n
        err = np.sqrt(var / n)
    use = (n >= float(config["min_profile_entries"])) & (err > 0)
    # the fit range: raw bins whose mean event T0 is inside the event T0 distribution by a
    # margin of the profile's spread (the collision times end at the outermost bunches; beyond
    # the profile flattens instead of following t(r))
    t0_all = c.sum(axis=1)  # (sides, T0 bins)
    cum = np.cumsum(t0_all, axis=1) / np.maximum(t0_all.sum(axis=1, keepdims=True), 1.0)
    q = float(config["fit_t0_quantile"])
    q_lo = y[np.argmax(cum >= q, axis=1)]
    q_hi = y[np.argmax(cum >= 1.0 - q, axis=1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.sqrt(
            np.sum(np.where(use, var * n, 0.0), axis=1) / np.sum(np.where(use, n, 0.0), axis=1)
        )
    margin = float(config["fit_margin_spread"]) * spread
    with np.errstate(invalid="ignore"):
        use &= (mean >= (q_lo + margin)[:, None]) & (mean <= (q_hi - margin)[:, None])
    # the error of a profile point: the side's pooled spread / sqrt(n) (the spread of the event
    # T0 at a given raw time is the same over the fitted range: the cluster and event-T0
    # resolutions); a bin's own spread from ~10 entries would make the weights noisy
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.sqrt(
            np.sum(np.where(use, var * n, 0.0), axis=1) / np.sum(np.where(use, n, 0.0), axis=1)
        )
        err = spread[:, None] / np.sqrt(n)
    return x, mean, err, use, entries


def fit_time_curves(counts: npt.ArrayLike, config: Mapping[str, Any]) -> TimeCurves:
    """Fit the cubic of every sensor side from the (sides, raw bins, T0 bins) counts.

    See the module documentation for the method and the flags; ``config`` holds
    ``zero_min_entries``, ``zero_fraction``, ``min_profile_entries``, ``min_profile_bins``,
    ``min_entries_side``, ``fit_t0_quantile`` and ``fit_margin_spread``.
    """
    x, mean, err, use, entries = time_profiles(counts, config)
    ns = mean.shape[0]
    half = 0.5 * (RAW_AXIS[2] - RAW_AXIS[1]) / RAW_AXIS[0]
    coef = np.full((ns, 4), np.nan)
    cov = np.full((ns, 4, 4), np.nan)
    chi2 = np.full(ns, np.nan)
    ndf = np.zeros(ns)
    lo = np.full(ns, np.nan)
    hi = np.full(ns, np.nan)
    status = np.full(ns, ChannelStatus.NOT_ENOUGH_DATA, dtype=np.int8)
    enough = (use.sum(axis=1) >= int(config["min_profile_bins"])) & (
        entries >= float(config["min_entries_side"])
    )
    for s in np.flatnonzero(enough):
        u = use[s]
        xs, ys, es = x[u], mean[s, u], err[s, u]
        # centred and scaled powers for conditioning; back to powers of r after
        x0, sc = 0.5 * (xs.min() + xs.max()), max(0.5 * (xs.max() - xs.min()), 1.0)
        z = (xs - x0) / sc
        design = z[:, None] ** np.arange(4)[None, :] / es[:, None]
        qmat, rr = np.linalg.qr(design)
        if np.linalg.matrix_rank(rr) < 4:
            status[s] = ChannelStatus.FAILED
            continue
        b = np.linalg.solve(rr, qmat.T @ (ys / es))
        rinv = np.linalg.inv(rr)
        cz = rinv @ rinv.T
        # z^k = ((r - x0) / sc)^k: the map from the z-coefficients to the r-coefficients
        m = np.zeros((4, 4))
        for k in range(4):
            for j in range(k + 1):
                m[j, k] = _binom(k, j) * (-x0) ** (k - j) / sc**k
        res = (design @ b) - ys / es
        chi2[s] = float(res @ res)
        ndf[s] = len(xs) - 4
        scale = max(1.0, chi2[s] / ndf[s]) if ndf[s] > 0 else 1.0
        coef[s] = m @ b
        cov[s] = scale * (m @ cz @ m.T)
        lo[s], hi[s] = xs.min() - half, xs.max() + half
        status[s] = ChannelStatus.OK
    fitted = np.isfinite(coef[:, 0])
    mono = np.zeros(ns, dtype=bool)
    mono[fitted] = _monotonic(coef[fitted], lo[fitted], hi[fitted])
    status[fitted & ~mono] = ChannelStatus.FAILED
    full = np.zeros(ns, dtype=bool)
    full[fitted] = _monotonic(
        coef[fitted], np.full(fitted.sum(), RAW_RANGE[0]), np.full(fitted.sum(), RAW_RANGE[1])
    )
    return TimeCurves(coef, cov, status, entries, chi2, ndf, lo, hi, full)


def _binom(n: int, k: int) -> float:
    from math import comb

    return float(comb(n, k))


def _counts(h: Any) -> F:
    return np.asarray(h.values(), dtype=np.float64).reshape(N_SIDES, RAW_AXIS[0], T0_AXIS[0])


def layer3_v_raw_mean(h: Any) -> tuple[float, float, float]:
    """Mean raw time of the layer-3 V-side clusters of a ``t0_vs_raw`` histogram: (mean, its
    error, entries)."""
    raw = _counts(h)[_L3V].sum(axis=(0, 2))
    n = float(raw.sum())
    if n == 0:
        return float("nan"), float("nan"), 0.0
    x = _centres(RAW_AXIS)
    mean = float((raw * x).sum() / n)
    sd = float(np.sqrt((raw * (x - mean) ** 2).sum() / n))
    return mean, sd / np.sqrt(n), n


def raw_time_boundaries(
    runs: Sequence[RunKey], means: Sequence[tuple[float, float, float]], config: Mapping[str, Any]
) -> list[RunKey]:
    """Runs where a new payload starts: the layer-3 V-side mean raw time (per run: mean, error,
    entries) moved by more than ``boundary_shift_ns`` and ``boundary_min_significance``
    standard deviations from that of the run where the current payload started; runs with fewer
    than ``boundary_min_entries`` entries are skipped. None with ``find_boundaries`` false."""
    if not config.get("find_boundaries", True):
        return []
    shift = float(config["boundary_shift_ns"])
    nsig = float(config["boundary_min_significance"])
    min_n = float(config["boundary_min_entries"])
    out: list[RunKey] = []
    ref: tuple[float, float] | None = None
    for run, (m, e, n) in zip(runs, means, strict=True):
        if n < min_n:
            continue
        if ref is None:
            ref = (m, e)
            continue
        d = abs(m - ref[0])
        if d > shift and d > nsig * float(np.hypot(e, ref[1])):
            out.append(run)
            ref = (m, e)
    return out


class TimeCalibrationAlgorithm(Algorithm):
    """SVDCoGTimeCalibrations: the cubic t(raw) per sensor side (module documentation)."""

    name = "svd_cog_time"
    payloads = (COG_TIME,)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        (h,) = require(data, "t0_vs_raw", message="no SVD clusters on tracks with an event T0")
        counts = _counts(h)
        entries = counts.sum(axis=(1, 2))
        curves = fit_time_curves(counts, cfg)
        diag = Diagnostics(histograms={"t0_vs_raw": h}, tables={"fits": _table(curves)})
        min_l3 = float(cfg["min_entries_layer3"])
        low = float(entries[_LAYER == 3].min())
        if low < min_l3:
            raise NotEnoughData(
                f"a layer-3 sensor side has {low:.0f} clusters on tracks < {min_l3:.0f}", diag
            )
        status = curves.status
        ok = status == ChannelStatus.OK
        summary = status_counts(status)
        if not ok.any():
            raise NotEnoughData(f"no sensor side calibrated: {summary}", diag)
        err = np.sqrt(np.einsum("sii->si", np.where(ok[:, None, None], curves.cov, 0.0)))
        values = {f"a{i}": np.where(ok, curves.coef[:, i], np.nan) for i in range(4)}
        errors = {f"a{i}": np.where(ok, err[:, i], np.nan) for i in range(4)}
        payload = Payload(
            COG_TIME,
            keys=dict(SIDE_KEYS),
            values=values,
            errors=errors,
            status=status,
            metadata={
                "units": {"a0": "ns", "a1": "1", "a2": "1/ns", "a3": "1/ns^2"},
                "description": "t = a0 + a1 r + a2 r^2 + a3 r^3 of the raw CoG time r; side 1 = u",
                "method": "profile of the event T0 in raw-time bins, cubic fit (basf2 "
                "SVDCoGTimeCalibrationAlgorithm)",
            },
        )
        return AlgorithmResult(AlgorithmStatus.OK, [payload], diag, f"{summary}")

    def boundaries(self, data: AlgorithmInput) -> list[RunKey]:
        """Runs where the layer-3 V-side mean raw time moves (:func:`raw_time_boundaries`)."""
        runs = [r for r in data.runs if "t0_vs_raw" in data.per_run.get(r, {})]
        means = [layer3_v_raw_mean(data.per_run[r]["t0_vs_raw"]) for r in runs]
        return raw_time_boundaries(runs, means, data.config)


def _table(c: TimeCurves) -> dict[str, npt.NDArray[Any]]:
    t: dict[str, npt.NDArray[Any]] = {"side_index": np.arange(N_SIDES)}
    for i in range(4):
        t[f"a{i}"] = c.coef[:, i]
        for j in range(i, 4):
            t[f"cov{i}{j}"] = c.cov[:, i, j]
    t.update(
        entries=c.entries,
        chi2=c.chi2,
        ndf=c.ndf,
        raw_lo=c.raw_lo,
        raw_hi=c.raw_hi,
        monotonic_full_range=c.monotonic_full_range.astype(np.int8),
        status=c.status,
    )
    return t


class _ProfileView(ChannelView):
    """A sensor side's profile of the event T0 in raw-time bins (the points the cubic was
    fitted to, :func:`time_profiles` of the stored ``t0_vs_raw``), the cubic and the pulls of
    the fitted points."""

    def view(self, context: ViewContext) -> FitView:
        side = context.row
        table = context.table("fits")
        h = context.histogram("t0_vs_raw")
        x, mean, err, use, entries = time_profiles(_counts(h)[side : side + 1], context.config)
        x, mean, err, use = x, mean[0], err[0], use[0]
        n, lo, hi = RAW_AXIS
        edges = np.linspace(lo, hi, n + 1)
        status = ChannelStatus(int(table["status"][side])).name
        coef = np.array([float(table[f"a{i}"][side]) for i in range(4)])
        params = {
            f"a{i}": (float(coef[i]), float(np.sqrt(max(float(table[f"cov{i}{i}"][side]), 0.0))))
            for i in range(4)
        }
        pulls = np.full(len(x), np.nan)
        expected = np.full(len(x), np.nan)
        model: dict[str, F] = {}
        model_x = np.zeros(0)
        fit_range = None
        if np.all(np.isfinite(coef)):
            curve = np.polynomial.polynomial.polyval(x, coef)
            expected[use] = curve[use]
            with np.errstate(invalid="ignore", divide="ignore"):
                pulls[use] = (mean[use] - curve[use]) / err[use]
            r_lo, r_hi = float(table["raw_lo"][side]), float(table["raw_hi"][side])
            model_x = np.linspace(r_lo, r_hi, 200)
            model = {"total": np.polynomial.polynomial.polyval(model_x, coef)}
            fit_range = (r_lo, r_hi)
        chi2, ndf = float(table["chi2"][side]), float(table["ndf"][side])
        need = context.config.get("min_entries_side")
        if status == "OK":
            head = f"fit OK: cubic t(raw) through {int(use.sum())} profile points"
            head += f", chi2/ndf {chi2:.1f}/{ndf:.0f}" if ndf > 0 else ""
        elif status == "NOT_ENOUGH_DATA":
            head = (
                f"NOT_ENOUGH_DATA: {float(entries[0]):.0f} clusters ({need} required) and "
                f"{int(use.sum())} profile points ({context.config.get('min_profile_bins')} "
                "required)"
            )
        else:
            head = f"{status}: the cubic is singular or not monotonic over the fitted range"
        return FitView(
            calibration=context.calibration,
            payload=context.name,
            channel=context.channel,
            x_label="raw CoG time (ns)",
            edges=edges,
            counts=np.where(use, mean, np.nan),
            errors=np.where(use, err, np.nan),
            model_x=model_x,
            model=model,
            pulls=pulls,
            status=context.status,
            message=f"{head}; the points are the mean event T0 in raw-time bins, not counts",
            parameters=params,
            entries=float(entries[0]),
            kind="fit",
            iov=context.iov,
            value=(params["a0"][0], params["a0"][1]),
            y_label="mean event T0 (ns)",
            fit_range=fit_range,
            expected=expected,
        )


#: The profile and cubic of a sensor side.
_VIEW = _ProfileView()


def time_calibration() -> Calibration:
    """``svd-time``: SVDCoGTimeCalibrations from hadron events."""
    return Calibration(
        name="svd-time",
        validation=PayloadComparison(
            columns=("a0",), max_abs_change=1.0
        ),  # the cubic's correlated coefficients: its constant term (ns)
        expert="svd-calibration@b2calib.example",
        inputs={"clusters": CollectorInput(ClusterTimeCollector(), ("hlt_hadron",))},
        algorithms=[TimeCalibrationAlgorithm()],
        strategy=SequentialBoundaries(),
        input_format="cdst",
        stage="post-tracking",
        run_type="physics",
        beam_energy=("4S", "Continuum"),
        magnet_on=True,
        expert_config={
            "min_entries_layer3": 10000,
            "zero_min_entries": 2,
            "zero_fraction": 0.001,
            "min_entries_side": 1000,
            "min_profile_entries": 10,
            "min_profile_bins": 8,
            "fit_t0_quantile": 0.01,
            "fit_margin_spread": 3.5,
            "find_boundaries": True,
            "boundary_shift_ns": 2.0,
            "boundary_min_significance": 3.0,
            "boundary_min_entries": 100,
        },
        open_end=True,
        description="SVD cluster time (SVDCoGTimeCalibrations): per sensor side, the event T0 "
        "against the raw CoG time of the clusters on tracks, cells below max(2, 0.1 % of the "
        "entries) zeroed, profile, third-order polynomial; a new payload where the layer-3 "
        "V-side mean raw time moves by more than 2 ns.",
        fit_views={COG_TIME: _VIEW},
    )


def __dir__() -> list[str]:
    return __all__
