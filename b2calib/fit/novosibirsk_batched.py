"""Per-channel Novosibirsk peak on a flat background, fitted over thousands of channels at once.

The ECL gamma-gamma and mu-mu energy calibrations of basf2 (``eclGammaGammaE``, ``eclMuMuE``) fit
each crystal's energy distribution with a Novosibirsk function plus a constant. This is the
batched version of that fit: per channel the expected counts are

``lambda_i = n * f(x_i) / sum_k f(x_k) + b * w_i``

with ``f`` the Novosibirsk density (:func:`b2calib.fit.novosibirsk`, parameters peak, width,
tail) evaluated at the bin centres and normalised over the fit range, ``w_i`` the bin widths.
The Poisson likelihood (the cost of iminuit's ``ExtendedBinnedNLL``) is minimised by a
Levenberg-Marquardt iteration with the expected (Fisher) information; the Jacobian is taken by
central differences. From 50 channels on, with numba, the iteration is compiled and runs one
channel after the other, the channels split over threads (:mod:`b2calib.fit._novosibirsk_lm`);
otherwise it is the numpy iteration vectorised over channels. Both give the same fits up to
rounding. Each channel gets a
status: OK, NOT_ENOUGH_DATA (fewer than ``min_entries`` in the range) or FAILED (no convergence,
singular information, a parameter outside its physical range), with NaN values when not OK.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import hist
import numpy as np
import numpy.typing as npt

from b2calib.conditions.status import ChannelStatus
from b2calib.exceptions import ConfigError
from b2calib.fit._lm import channel_table, compiled, fisher, over_threads, poisson_lm
from b2calib.fit._lm import errors as lm_errors
from b2calib.fit.batched import ChannelFits

__all__ = ["fit_novosibirsk_channels", "novosibirsk_density"]

F = npt.NDArray[np.float64]
_PARAMS = ("n", "peak", "width", "tail", "b")
_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))
_MAX_TAIL = 2.0
#: below this many channels per thread, starting a thread costs more than it saves
_MIN_CHANNELS_PER_THREAD = 500
#: the compiled fit from this many channels on: its first call in a process loads it from the
#: numba cache (or compiles it), which costs more than the numpy path saves on a few channels;
#: from 50 on it saves: the 69 theta rings of the ECL fit 5 parameters 3-10x faster compiled
_MIN_CHANNELS_COMPILED = 50


def novosibirsk_density(x: F, peak: F, width: F, tail: F) -> F:
    """Unnormalised Novosibirsk density, vectorised over channels.

    ``x`` has shape (bins,); ``peak``, ``width``, ``tail`` shape (channels, 1). Same form as
    :func:`b2calib.fit.novosibirsk`: a positive ``tail`` gives a long tail to low values.
    """
    small = np.abs(tail) < 1e-7
    t = np.where(small, 1e-7, tail)
    s0 = 2.0 / _FWHM * np.arcsinh(t * _FWHM / 2.0)
    arg = 1.0 - (x[None, :] - peak) * t / width
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_arg = np.log(np.maximum(arg, 1e-300))
        val = np.exp(-0.5 * (log_arg / s0) ** 2 - 0.5 * s0**2)
        gauss = np.exp(-0.5 * ((x[None, :] - peak) / width) ** 2)
    val = np.where(arg > 1e-7, val, 0.0)
    return np.where(small, gauss, val)


def _model(theta: F, centers: F, widths: F) -> F:
    """Expected counts (channels, bins)."""
    n, peak, width, tail, b = (theta[:, k : k + 1] for k in range(5))
    dens = novosibirsk_density(centers, peak, width, tail) * widths[None, :]
    norm = dens.sum(axis=1, keepdims=True)
    shape = np.where(norm > 0, dens / np.where(norm > 0, norm, 1.0), 0.0)
    return n * shape + b * widths[None, :]


def _jacobian(theta: F, centers: F, widths: F, frozen: npt.NDArray[np.bool_] | None = None) -> F:
    """d lambda / d theta by central differences (channels, bins, parameters); the columns of
    ``frozen`` parameters are 0 (the fit never uses them: it zeroes them)."""
    steps = np.maximum(np.abs(theta) * 1e-4, 1e-7)
    steps[:, 1] = np.maximum(theta[:, 2] * 1e-3, 1e-9)  # the peak: in units of the width
    steps[:, 2] = np.maximum(theta[:, 2] * 1e-3, 1e-9)
    steps[:, 3] = 1e-4
    cols = []
    for k in range(theta.shape[1]):
        if frozen is not None and frozen[k]:
            cols.append(np.zeros((theta.shape[0], centers.shape[0])))
            continue
        up, down = theta.copy(), theta.copy()
        up[:, k] += steps[:, k]
        down[:, k] -= steps[:, k]
        cols.append(
            (_model(up, centers, widths) - _model(down, centers, widths))
            / (2 * steps[:, k : k + 1])
        )
    return np.stack(cols, axis=-1)


def _clip(theta: F, lo: float, hi: float, min_width: float) -> F:
    theta[:, 0] = np.maximum(theta[:, 0], 1e-9)
    theta[:, 1] = np.clip(theta[:, 1], lo, hi)
    theta[:, 2] = np.clip(theta[:, 2], min_width, hi - lo)
    theta[:, 3] = np.clip(theta[:, 3], -_MAX_TAIL, _MAX_TAIL)
    theta[:, 4] = np.maximum(theta[:, 4], 0.0)
    return theta


def _start(counts: F, centers: F, widths: F, tail: float) -> F:
    """Peak at the maximum of the 5-bin smoothed spectrum, width from the spread of the bins
    above half of it, background from the outer bins."""
    kernel = np.ones(5) / 5.0
    smooth = np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="same"), 1, counts)
    imax = np.argmax(smooth, axis=1)
    peak = centers[imax]
    above = smooth >= 0.5 * smooth[np.arange(len(counts)), imax][:, None]
    lo = np.where(above, centers[None, :], np.inf).min(axis=1)
    hi = np.where(above, centers[None, :], -np.inf).max(axis=1)
    width = np.clip((hi - lo) / _FWHM, 2 * widths.min(), np.ptp(centers) / 4)
    edge = 0.5 * (counts[:, :3].mean(axis=1) + counts[:, -3:].mean(axis=1))
    b = np.maximum(edge / widths.mean(), 0.5 / np.ptp(centers))
    n = np.maximum(counts.sum(axis=1) - b * widths.sum(), 1.0)
    return np.stack([n, peak, width, np.full(len(counts), tail), b], axis=1)


def _compiled() -> Callable[..., tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], F, F]] | None:
    """The compiled iteration (:mod:`b2calib.fit._novosibirsk_lm`), or None without numba."""
    return compiled("b2calib.fit._novosibirsk_lm", "novosibirsk_lm")


def _lm_numpy(
    counts: F,
    centers: F,
    widths: F,
    theta: F,
    frozen: npt.NDArray[np.bool_],
    lo: float,
    hi: float,
    min_width: float,
    max_iter: int,
    tol: float,
) -> tuple[F, npt.NDArray[np.bool_], npt.NDArray[np.int64], F, F]:
    """The numpy iteration, vectorised over channels: parameters, convergence, iterations, NLL
    and the information matrix at the end point (frozen parameters: diagonal 1)."""
    lm = poisson_lm(
        counts,
        theta,
        lambda th, _idx: (_model(th, centers, widths), _jacobian(th, centers, widths, frozen)),
        lambda th: _clip(th, lo, hi, min_width),
        max_iter=max_iter,
        tol=tol,
        floor_at_zero=(4,),  # the background
        frozen=frozen,
    )
    jac = lm.jac.copy()
    jac[..., frozen] = 0.0
    info = fisher(jac, lm.lam)
    info[:, frozen, frozen] = 1.0
    return lm.theta, lm.converged, lm.iterations, lm.nll, info


def fit_novosibirsk_channels(
    h: hist.Hist,
    *,
    value_range: tuple[float, float] | None = None,
    min_entries: int = 150,
    tail_start: float = 0.1,
    fixed: Mapping[str, npt.ArrayLike] | None = None,
    max_iter: int = 200,
    tol: float = 1e-5,
    threads: int | None = None,
) -> ChannelFits:
    """Fit a Novosibirsk peak plus a constant in every channel of a channels x values histogram.

    Parameters
    ----------
    h
        Histogram whose first axis is the channel and second the fitted value.
    value_range
        Fit only bins inside (low, high); default the whole value axis.
    min_entries
        Channels with fewer entries in the range are NOT_ENOUGH_DATA (basf2: 150).
    tail_start
        Start value of the tail parameter (positive: tail to low values).
    fixed
        Parameters held fixed, name -> value per channel (or one value for all), e.g. the
        ``width`` and ``tail`` of a shape measured on the sum of many channels; their errors
        are reported as 0.
    max_iter, tol
        Iteration limit and convergence (0.5 g^T I^-1 g below ``tol``, the EDM).
    threads
        Threads of the compiled fit (default: one per core; at least 500 channels each).

    Returns
    -------
    ChannelFits
        Parameters ``n`` (signal entries in the range), ``peak``, ``width``, ``tail``, ``b``
        (background per unit of the value), with errors from the inverse Fisher information.
    """
    counts_all, edges = channel_table(h, value_range, 8, "fit_novosibirsk_channels")
    centers = 0.5 * (edges[1:] + edges[:-1])
    widths = np.diff(edges)
    nch, npar = counts_all.shape[0], len(_PARAMS)
    entries = counts_all.sum(axis=1)
    status = np.full(nch, ChannelStatus.OK, dtype=np.int8)
    reason = ["OK"] * nch
    values = np.full((nch, npar), np.nan)
    errors = np.full((nch, npar), np.nan)
    nll = np.full(nch, np.nan)
    iters = np.zeros(nch, dtype=np.int64)
    enough = entries >= max(min_entries, npar + 1)
    for i in np.flatnonzero(~enough).tolist():
        status[i] = ChannelStatus.NOT_ENOUGH_DATA
        reason[i] = f"{int(entries[i])} entries < {min_entries}"
    idx_fit = np.flatnonzero(enough)
    if idx_fit.size:
        lo, hi = float(edges[0]), float(edges[-1])
        min_width = 0.25 * float(widths.min())
        counts = counts_all[idx_fit]
        theta = _start(counts, centers, widths, tail_start)
        frozen = np.zeros(npar, dtype=bool)
        for name, val in (fixed or {}).items():
            if name not in _PARAMS:
                raise ConfigError(f"unknown parameter {name!r}; parameters: {_PARAMS}")
            k = _PARAMS.index(name)
            theta[:, k] = np.broadcast_to(np.asarray(val, dtype=np.float64), (nch,))[idx_fit]
            frozen[k] = True
        theta = _clip(theta, lo, hi, min_width)
        kernel = _compiled() if len(idx_fit) >= _MIN_CHANNELS_COMPILED else None
        if kernel is None:
            theta, converged, it, cur, info = _lm_numpy(
                counts, centers, widths, theta, frozen, lo, hi, min_width, max_iter, tol
            )
        else:

            def run(sl: slice) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], F, F]:
                return kernel(  # theta in place
                    counts[sl],
                    centers,
                    widths,
                    theta[sl],
                    frozen,
                    lo,
                    hi,
                    min_width,
                    _MAX_TAIL,
                    max_iter,
                    tol,
                )

            n_threads = threads if threads is not None else (os.cpu_count() or 1)
            converged, it, cur, info = over_threads(
                len(idx_fit), n_threads, _MIN_CHANNELS_PER_THREAD, run
            )
        iters[idx_fit] = it
        good, err = lm_errors(info)
        err[:, frozen] = 0.0
        values[idx_fit], errors[idx_fit], nll[idx_fit] = theta, err, cur
        # the checks below, as masks: only the channels failing one go through them one by one
        # (for its reason); 30 ms per call on the ECL's 2500 fitted crystals
        n_all, peak_all, width_all, tail_all = (theta[:, i] for i in range(4))
        with np.errstate(invalid="ignore"):
            suspect = (
                ~converged
                | ~good
                | ~np.all(np.isfinite(err), axis=1)
                | ~((lo + width_all < peak_all) & (peak_all < hi - width_all))
                | ((np.abs(tail_all) >= _MAX_TAIL - 1e-6) & (not frozen[3]))
                | (
                    (not frozen[2])
                    & ((width_all >= 0.5 * (hi - lo)) | (width_all <= min_width * 1.0001))
                )
                | ~(n_all > 0)
            )
        for k in np.flatnonzero(suspect).tolist():
            ch = int(idx_fit[k])
            n, peak, width, tail, _b = theta[k]
            problem = None
            if not converged[k]:
                problem = f"no convergence after {iters[ch]} iterations"
            elif not good[k] or not np.all(np.isfinite(err[k])):
                problem = "singular information matrix"
            elif not lo + width < peak < hi - width:
                problem = f"peak {peak:.4g} not inside the fit range by one width"
            elif abs(tail) >= _MAX_TAIL - 1e-6 and not frozen[3]:
                problem = f"tail {tail:.3g} at its limit"
            elif not frozen[2] and (width >= 0.5 * (hi - lo) or width <= min_width * 1.0001):
                problem = f"width {width:.3g} at its limit"
            elif n <= 0:
                problem = "no signal"
            if problem:
                status[ch] = ChannelStatus.FAILED
                reason[ch] = problem
    return ChannelFits.from_table(
        _PARAMS, values, errors, status, reason, entries, nll, iters, "batched-novosibirsk"
    )
