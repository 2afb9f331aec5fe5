"""Per-channel peak fits over thousands of channels at once.

The model per channel is a binned Gaussian peak on an optional flat background,
``lambda_i = N [Phi(z_{i+1}) - Phi(z_i)] + B w_i`` with ``z = (edge - mu) / sigma``, fitted by
Poisson maximum likelihood (the cost of iminuit's ``ExtendedBinnedNLL``). The fast path runs a
Levenberg-Marquardt iteration with the expected (Fisher) information on every channel: compiled
with numba, one channel after the other, the channels split over threads
(:mod:`b2calib.fit._peak_lm`, from 1000 channels on), or, below that or without numba, in numpy
vectorised over channels (the same iteration: the same fits up to rounding). ``method="iminuit"``
fits each channel with iminuit and is the reference. Every channel gets a status: OK,
NOT_ENOUGH_DATA (fewer than ``min_entries`` in the range) or FAILED (no convergence, a parameter
out of its physical range, singular information), with the reason. Failed channels carry NaN
values, never numbers that could be mistaken for constants.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import hist
import numpy as np
import numpy.typing as npt
from iminuit import Minuit, cost
from scipy import special

from b2calib.conditions.status import ChannelStatus
from b2calib.exceptions import ConfigError
from b2calib.fit._lm import (
    LMResult,
    channel_table,
    compiled,
    fisher,
    minimize,
    over_threads,
    poisson_lm,
)
from b2calib.fit._lm import errors as lm_errors

__all__ = ["ChannelFits", "fit_channels"]

F = npt.NDArray[np.float64]
_SQRT2 = np.sqrt(2.0)
_INV_SQRT2PI = 1.0 / np.sqrt(2.0 * np.pi)
#: below this many channels per thread, starting a thread costs more than it saves
_MIN_CHANNELS_PER_THREAD = 500
#: the compiled fit from this many channels on: its first call in a process loads it from the
#: numba cache (or compiles it), which costs more than the numpy path saves on a few hundred
_MIN_CHANNELS_COMPILED = 1000


@dataclass
class ChannelFits:
    """Per-channel results; arrays are indexed like the histogram's channel axis."""

    parameters: tuple[str, ...]
    values: dict[str, F]
    errors: dict[str, F]
    status: npt.NDArray[np.int8]
    reason: list[str]
    entries: F
    nll: F
    iterations: npt.NDArray[np.int64]
    method: str

    @property
    def ok(self) -> npt.NDArray[np.bool_]:
        """Channels with a valid fit."""
        return self.status == ChannelStatus.OK

    @classmethod
    def from_table(
        cls,
        parameters: tuple[str, ...],
        values: F,
        errors: F,
        status: npt.NDArray[np.int8],
        reason: list[str],
        entries: F,
        nll: F,
        iterations: npt.NDArray[np.int64],
        method: str,
    ) -> ChannelFits:
        """From (channels, parameters) tables; channels that are not OK get NaN values and
        errors, never numbers that could be mistaken for constants."""
        bad = status != ChannelStatus.OK
        values, errors = values.copy(), errors.copy()
        values[bad] = np.nan
        errors[bad] = np.nan
        return cls(
            parameters,
            {p: values[:, k] for k, p in enumerate(parameters)},
            {p: errors[:, k] for k, p in enumerate(parameters)},
            status,
            reason,
            entries,
            nll,
            iterations,
            method,
        )

    def summary(self) -> dict[str, int]:
        """Number of channels per status."""
        return {
            s.name: int(np.sum(self.status == s)) for s in ChannelStatus if np.any(self.status == s)
        }


def _model(theta: F, edges: F, background: bool) -> tuple[F, F]:
    """Expected counts (C, B) and their Jacobian (C, B, P)."""
    n, mu, sigma = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
    z = (edges[None, :] - mu) / sigma
    cdf = 0.5 * special.erfc(-z / _SQRT2)
    pdf = _INV_SQRT2PI * np.exp(-0.5 * z * z)
    prob = np.diff(cdf, axis=1)
    lam = n * prob
    d_mu = -n * np.diff(pdf, axis=1) / sigma
    d_sigma = -n * np.diff(pdf * z, axis=1) / sigma
    cols = [prob, d_mu, d_sigma]
    if background:
        width = np.diff(edges)[None, :]
        lam = lam + theta[:, 3:4] * width
        cols.append(np.broadcast_to(width, lam.shape))
    return lam, np.stack(cols, axis=-1)


def _start(counts: F, centers: F, width: F, background: bool) -> F:
    """Start values: background from the outer bins, then yield, peak and width of the excess
    in a window around the highest bin."""
    total = counts.sum(axis=1)
    if background:
        level = 0.5 * (counts[:, :3].mean(axis=1) + counts[:, -3:].mean(axis=1)) / width.mean()
        # never start on the limit b = 0 (Migrad can stay stuck there): at least one entry
        b = np.maximum(level, 1.0 / np.ptp(centers))
    else:
        b = np.zeros(len(counts))
    excess = np.clip(counts - b[:, None] * width[None, :], 0.0, None)
    peak = centers[np.argmax(excess, axis=1)]
    span = 0.15 * np.ptp(centers)
    near = np.abs(centers[None, :] - peak[:, None]) < span
    w = excess * near
    safe = np.maximum(w.sum(axis=1), 1.0)
    mean = (w * centers).sum(axis=1) / safe
    var = (w * (centers - mean[:, None]) ** 2).sum(axis=1) / safe
    sigma = np.clip(np.sqrt(var), width.min(), np.ptp(centers))
    n = np.maximum(excess.sum(axis=1), 0.1 * total + 1.0)
    cols = [n, np.where(w.sum(axis=1) > 0, mean, peak), sigma]
    if background:
        cols.append(b)
    return np.stack(cols, axis=1).astype(np.float64)


def _lm(
    counts: F, edges: F, theta: F, background: bool, max_iter: int, tol: float, threads: int
) -> tuple[F, npt.NDArray[np.bool_], npt.NDArray[np.int64], F, F]:
    """Levenberg-Marquardt on all channels (yield and width kept positive, background >= 0):
    parameters, convergence, iterations, NLL and the information matrix at the end point.

    Compiled (:mod:`b2calib.fit._peak_lm`) when numba is there and there are at least
    :data:`_MIN_CHANNELS_COMPILED` channels, the channels split over
    ``threads`` threads (the kernel releases the GIL; channels are independent, so the result
    does not depend on the split); else the numpy iteration of :func:`b2calib.fit._lm.poisson_lm`.
    The two agree up to rounding.
    """
    kernel = _compiled() if len(counts) >= _MIN_CHANNELS_COMPILED else None
    if kernel is None:
        lm = _lm_numpy(counts, edges, theta, background, max_iter, tol)
        return lm.theta, lm.converged, lm.iterations, lm.nll, fisher(lm.jac, lm.lam)

    def run(sl: slice) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], F, F]:
        return kernel(counts[sl], edges, theta[sl], background, max_iter, tol)  # theta in place

    conv, it, nll, info = over_threads(len(counts), threads, _MIN_CHANNELS_PER_THREAD, run)
    return theta, conv, it, nll, info


def _compiled() -> Callable[..., tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], F, F]] | None:
    """The compiled iteration, or None without numba."""
    return compiled("b2calib.fit._peak_lm", "peak_lm")


def _lm_numpy(
    counts: F, edges: F, theta: F, background: bool, max_iter: int, tol: float
) -> LMResult:
    """The numpy iteration, vectorised over channels."""
    width_floor = 1e-6 * (edges[-1] - edges[0])

    def project(new: F) -> F:
        new[:, 0] = np.maximum(new[:, 0], 1e-9)
        new[:, 2] = np.clip(new[:, 2], width_floor, None)
        if background:
            new[:, 3] = np.maximum(new[:, 3], 0.0)
        return new

    return poisson_lm(
        counts,
        theta,
        lambda th, _idx: _model(th, edges, background),
        project,
        max_iter=max_iter,
        tol=tol,
        floor_at_zero=(3,) if background else (),
    )


def _iminuit_channel(
    counts: F, edges: F, start: F, background: bool
) -> tuple[F, F, bool, str, float]:
    def cdf(x: F, n: float, mu: float, sigma: float, b: float = 0.0) -> F:
        return n * 0.5 * special.erfc(-(x - mu) / (sigma * _SQRT2)) + b * (x - edges[0])

    if background:

        def model(x: F, n: float, mu: float, sigma: float, b: float) -> F:
            return cdf(x, n, mu, sigma, b)
    else:

        def model(x: F, n: float, mu: float, sigma: float) -> F:  # type: ignore[misc]
            return cdf(x, n, mu, sigma)

    c = cost.ExtendedBinnedNLL(counts, edges, model)
    m = Minuit(c, *start)
    m.strategy = 2
    m.limits["n"] = (0.0, None)
    m.limits["sigma"] = (1e-6 * (edges[-1] - edges[0]), None)
    if background:
        m.limits["b"] = (0.0, None)
    return minimize(m)


def fit_channels(
    h: hist.Hist,
    *,
    background: bool = False,
    value_range: tuple[float, float] | None = None,
    min_entries: int = 150,
    method: str = "batched",
    fallback: bool = True,
    max_iter: int = 100,
    tol: float = 1e-6,
    threads: int | None = None,
) -> ChannelFits:
    """Fit a Gaussian peak (plus a flat background if ``background``) in every channel of a
    2-D channels x values histogram.

    Parameters
    ----------
    h
        Histogram whose first axis is the channel and second the fitted value.
    value_range
        Fit only bins inside (low, high); default the whole value axis.
    min_entries
        Channels with fewer entries in the range are NOT_ENOUGH_DATA and are not fitted.
    method
        ``"batched"`` (vectorised over channels) or ``"iminuit"`` (one iminuit fit per channel).
    fallback
        With ``"batched"``, refit with iminuit the channels that the fast path did not converge.
    tol
        Convergence: 0.5 g^T I^-1 g below ``tol`` (the EDM in units of the NLL).
    threads
        Threads of the compiled batched fit (default: one per core; at least 500 channels
        each). The
        channels are independent: the result does not depend on it.
    """
    if method not in ("batched", "iminuit"):
        raise ConfigError(f"method must be 'batched' or 'iminuit', not {method!r}")
    counts_all, edges = channel_table(h, value_range, 4, "fit_channels")
    names = ("n", "mu", "sigma", "b") if background else ("n", "mu", "sigma")
    npar = len(names)
    nch = counts_all.shape[0]
    entries = counts_all.sum(axis=1)
    status = np.full(nch, ChannelStatus.OK, dtype=np.int8)
    reason = ["OK"] * nch
    enough = entries >= max(min_entries, npar + 1)
    for i in np.flatnonzero(~enough):
        status[i] = ChannelStatus.NOT_ENOUGH_DATA
        reason[i] = f"{int(entries[i])} entries < {min_entries}"
    values = np.full((nch, npar), np.nan)
    errors = np.full((nch, npar), np.nan)
    nll = np.full(nch, np.nan)
    iters = np.zeros(nch, dtype=np.int64)
    centers = 0.5 * (edges[1:] + edges[:-1])
    width = np.diff(edges)
    fit_idx = np.flatnonzero(enough)
    start = _start(counts_all[fit_idx], centers, width, background)
    retry: list[int] = []
    if method == "batched" and fit_idx.size:
        n_threads = threads if threads is not None else (os.cpu_count() or 1)
        theta, conv, it, fitted_nll, info = _lm(
            counts_all[fit_idx], edges, start.copy(), background, max_iter, tol, n_threads
        )
        good_info, errors[fit_idx] = lm_errors(info)
        values[fit_idx], nll[fit_idx], iters[fit_idx] = theta, fitted_nll, it
        inside = (edges[0] <= theta[:, 1]) & (theta[:, 1] <= edges[-1])
        for k in np.flatnonzero(~conv | ~good_info | ~inside).tolist():
            ch = int(fit_idx[k])
            if not conv[k]:
                retry.append(int(ch))
                reason[ch] = f"no convergence after {it[k]} iterations"
            elif not good_info[k]:
                retry.append(int(ch))
                reason[ch] = "singular information matrix"
            elif not edges[0] <= theta[k, 1] <= edges[-1]:  # ran away from a bad start
                retry.append(int(ch))
                reason[ch] = f"peak {theta[k, 1]:.4g} outside the fit range"
    else:
        retry = [int(c) for c in fit_idx]
    if method == "iminuit" or fallback:
        pos = {int(c): k for k, c in enumerate(fit_idx)}
        for ch in retry:
            v, e, ok, msg, fval = _iminuit_channel(
                counts_all[ch], edges, start[pos[ch]], background
            )
            if ok:
                values[ch], errors[ch], nll[ch] = v, e, fval
                reason[ch] = "OK" if method == "iminuit" else "OK (iminuit fallback)"
            else:
                status[ch] = ChannelStatus.FAILED
                reason[ch] = (
                    f"iminuit: {msg}" if method == "iminuit" else f"{reason[ch]}; iminuit: {msg}"
                )
    elif retry:
        for ch in retry:
            status[ch] = ChannelStatus.FAILED
    # physical sanity: the peak inside the range, a width below the range, finite errors
    lo, hi = edges[0], edges[-1]
    n_all, mu_all, sigma_all = values[:, 0], values[:, 1], values[:, 2]
    with np.errstate(invalid="ignore"):
        suspect = (status == ChannelStatus.OK) & (
            ~np.all(np.isfinite(values), axis=1)
            | ~np.all(np.isfinite(errors), axis=1)
            | ~((lo <= mu_all) & (mu_all <= hi))
            | (sigma_all >= hi - lo)
            | (sigma_all < 0.2 * width.min())
            | (n_all <= 0)
        )
    for ch in np.flatnonzero(suspect).tolist():
        n, mu, sigma = values[ch, :3]
        problem = None
        if not np.all(np.isfinite(values[ch])) or not np.all(np.isfinite(errors[ch])):
            problem = "non-finite result"
        elif not lo <= mu <= hi:
            problem = f"peak {mu:.4g} outside the fit range"
        elif sigma >= hi - lo:
            problem = f"width {sigma:.4g} not below the fit range"
        elif sigma < 0.2 * width.min():
            problem = f"width {sigma:.3g} below the binning ({width.min():.3g}): not measurable"
        elif n <= 0:
            problem = "no signal"
        if problem:
            status[ch] = ChannelStatus.FAILED
            reason[ch] = problem
    return ChannelFits.from_table(
        names, values, errors, status, reason, entries, nll, iters, method
    )
