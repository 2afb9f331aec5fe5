"""Per-channel fits of a shifted Gaussian-mixture template on a flat background, batched.

Some peaks have a known shape but an unknown position: a TOP photon-time peak is the PMT
transit-time spread (a main peak and a second peak at a fixed distance) smeared by a chromatic
dispersion that depends on where the track crossed the bar, all known in advance, while the
channel's time offset is what is measured. The model per channel ``c`` and bin ``i`` is

``lambda_ci = n_c sum_k w_ck [Phi((e_{i+1} - mu_c - m_ck) / s_ck) - Phi((e_i - mu_c - m_ck) /
s_ck)] + b_c (e_{i+1} - e_i)``

with a fixed template (weights ``w``, offsets ``m`` and widths ``s`` of K Gaussian components
per channel, weights summing to one) and free yield ``n``, shift ``mu`` and flat background
``b``. With ``period`` the template repeats with that period (a variable folded modulo a bunch
spacing). The fit is Poisson maximum likelihood (the cost of iminuit's ``ExtendedBinnedNLL``) by
Levenberg-Marquardt with the expected information, as :func:`b2calib.fit.fit_channels` does for a
Gaussian: compiled with numba, one channel after the other, the channels split over threads
(:mod:`b2calib.fit._template_lm`, from 200 channels on, or 1000 components a channel; its model
from a table of the channel's template built once per fit, :data:`_TABLE`), or, below
that or without numba, in numpy vectorised over channels (in blocks, to bound memory; the same
iteration: the same fits up to rounding), with an iminuit fallback for channels that do not
converge (its model compiled too when the fit was). Every channel gets a status (OK,
NOT_ENOUGH_DATA, FAILED) with its reason; failed channels carry NaN.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from iminuit import Minuit, cost
from scipy import special

from b2calib.conditions.status import ChannelStatus
from b2calib.exceptions import ConfigError
from b2calib.fit._lm import compiled, fisher, minimize, over_threads, poisson_lm
from b2calib.fit._lm import errors as lm_errors
from b2calib.fit.batched import ChannelFits

__all__ = ["fit_template_shift", "template_density"]

F = npt.NDArray[np.float64]
_SQRT2 = np.sqrt(2.0)
_INV_SQRT2PI = 1.0 / np.sqrt(2.0 * np.pi)
_PARAMS = ("n", "mu", "b")
#: the compiled fit from this many channels on (its first call in a process loads it from the
#: numba cache, about the cost of the numpy path on a hundred channels)
_MIN_CHANNELS_COMPILED = 200
#: below this many channels per thread, starting a thread costs more than it saves
_MIN_CHANNELS_PER_THREAD = 100
#: the compiled fit also for fewer channels when each has this many components (periodic copies
#: counted): TOP's common T0 fits one channel of 1872 components per run, 45 ms each by numpy
#: (the whole template at every bin edge, every iteration), 3 ms compiled; a run-by-run
#: calibration pays the load once and saves it back within about ten runs
_MIN_COMPONENTS_COMPILED = 1000
#: the compiled model from the channel's template table (Taylor series of the whole template
#: about nodes a bin apart, built once per channel and reused by every iteration:
#: :func:`b2calib.fit._template_lm._model_table`); False: per component at every iteration
#: (:func:`b2calib.fit._template_lm._model`, the reference)
_TABLE = True


def _use_compiled(channels: int, components: int) -> bool:
    """Whether the compiled fit runs (numba there, and enough work to pay for its load)."""
    enough = channels >= _MIN_CHANNELS_COMPILED or (
        channels > 0 and components >= _MIN_COMPONENTS_COMPILED
    )
    return enough and _compiled() is not None


def _periodic(w: F, m: F, s: F, period: float | None) -> tuple[F, F, F]:
    if period is None:
        return w, m, s
    shifts = (-period, 0.0, period)
    return (
        np.concatenate([w] * 3, axis=1),
        np.concatenate([m + d for d in shifts], axis=1),
        np.concatenate([s] * 3, axis=1),
    )


def template_density(
    x: npt.ArrayLike,
    mu: float,
    weights: npt.ArrayLike,
    offsets: npt.ArrayLike,
    widths: npt.ArrayLike,
    period: float | None = None,
) -> F:
    """The normalised template of one channel shifted by ``mu``, at ``x`` (for plots)."""
    w, m, s = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (weights, offsets, widths))
    w, m, s = _periodic(w, m, s, period)
    z = (np.asarray(x, dtype=np.float64)[:, None] - mu - m[0][None, :]) / s[0][None, :]
    return np.asarray((w[0] * _INV_SQRT2PI * np.exp(-0.5 * z * z) / s[0]).sum(axis=1))


def _model(theta: F, edges: F, w: F, m: F, s: F) -> tuple[F, F]:
    """Expected counts (C, B) and Jacobian (C, B, 3) for parameters (n, mu, b)."""
    n, mu, b = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
    z = (edges[None, None, :] - mu[:, :, None] - m[:, :, None]) / s[:, :, None]
    cdf = 0.5 * special.erfc(-z / _SQRT2)
    pdf = _INV_SQRT2PI * np.exp(-0.5 * z * z) / s[:, :, None]
    prob = np.einsum("ck,ckb->cb", w, np.diff(cdf, axis=2))
    dprob = -np.einsum("ck,ckb->cb", w, np.diff(pdf, axis=2))
    width = np.diff(edges)[None, :]
    lam = n * prob + b * width
    jac = np.stack([prob, n * dprob, np.broadcast_to(width, lam.shape)], axis=-1)
    return lam, jac


def _start(counts: F, edges: F, mode: F) -> F:
    """Background from the lowest quarter of the bins, shift from the highest 3-bin sum."""
    width = np.diff(edges)
    centers = 0.5 * (edges[1:] + edges[:-1])
    low = np.sort(counts, axis=1)[:, : max(1, counts.shape[1] // 4)].mean(axis=1)
    b = np.maximum(low / width.mean(), 0.1 / np.ptp(edges))
    smooth = counts + np.roll(counts, 1, axis=1) + np.roll(counts, -1, axis=1)
    peak = centers[np.argmax(smooth, axis=1)]
    n = np.maximum(counts.sum(axis=1) - b * np.ptp(edges), 1.0)
    return np.stack([n, peak - mode, b], axis=1)


@dataclass(frozen=True)
class _BlockModel:
    """The model of a block of channels, for any subset of it."""

    edges: F
    w: F
    m: F
    s: F

    def __call__(self, theta: F, sub: npt.NDArray[np.int64]) -> tuple[F, F]:
        return _model(theta, self.edges, self.w[sub], self.m[sub], self.s[sub])


def _project(new: F) -> F:
    new[:, 0] = np.maximum(new[:, 0], 1e-9)
    new[:, 2] = np.maximum(new[:, 2], 0.0)
    return new


def _iminuit_channel(
    counts: F, edges: F, w: F, m: F, s: F, start: F, kernel: Callable[..., F] | None = None
) -> tuple[F, F, bool, str, float]:
    """One channel with iminuit's ExtendedBinnedNLL (the reference, and the fallback when the
    fast path does not converge, e.g. a background creeping to its bound 0); the template's
    distribution from ``kernel`` (:func:`b2calib.fit._template_lm.template_cdf`, compiled: a
    third of the time) or numpy."""

    def model(x: F, n: float, mu: float, b: float) -> F:
        if kernel is not None:
            return np.asarray(n * kernel(x, mu, w, m, s) + b * (x - edges[0]))
        z = (x[:, None] - mu - m[None, :]) / s[None, :]
        cdf = 0.5 * special.erfc(-z / _SQRT2)
        return np.asarray(n * (cdf @ w) + b * (x - edges[0]))

    c = cost.ExtendedBinnedNLL(counts, edges, model)
    mi = Minuit(c, n=max(start[0], 1.0), mu=start[1], b=max(start[2], 0.0))
    mi.limits["n"] = (0.0, None)
    mi.limits["b"] = (0.0, None)
    mi.limits["mu"] = (edges[0], edges[-1])
    mi.strategy = 2
    return minimize(mi)


def _lm(
    counts: F,
    edges: F,
    w: F,
    m: F,
    s: F,
    mode: F,
    max_iter: int,
    tol: float,
    block: int,
    threads: int,
) -> tuple[F, npt.NDArray[np.bool_], npt.NDArray[np.int64], F, F]:
    """Levenberg-Marquardt on all channels from :func:`_start` (yield kept positive,
    background >= 0): parameters, convergence, iterations, NLL and the information matrix at
    the end point.

    Compiled (:mod:`b2calib.fit._template_lm`) when numba is there and there are at least
    :data:`_MIN_CHANNELS_COMPILED` channels or :data:`_MIN_COMPONENTS_COMPILED` components
    (:func:`_use_compiled`), the channels split over ``threads`` threads (the
    kernel releases the GIL; channels are independent, so the result does not depend on the
    split); else the numpy iteration of :func:`b2calib.fit._lm.poisson_lm` in blocks of
    ``block`` channels. The two agree up to rounding.
    """
    theta = _start(counts, edges, mode)
    kernel = _compiled() if _use_compiled(len(counts), w.shape[1]) else None
    if kernel is not None:

        def run(sl: slice) -> tuple[F, npt.NDArray[np.bool_], npt.NDArray[np.int64], F, F]:
            th = theta[sl]  # updated in place
            conv, it, nl, info = kernel(
                counts[sl], edges, th, w[sl], m[sl], s[sl], max_iter, tol, _TABLE
            )
            return th, conv, it, nl, info

        th, conv, it, nl, info = over_threads(len(counts), threads, _MIN_CHANNELS_PER_THREAD, run)
        return th, conv, it, nl, info
    out = []
    for lo in range(0, len(counts), block):
        sl = slice(lo, lo + block)
        lm = poisson_lm(
            counts[sl],
            theta[sl],
            _BlockModel(edges, w[sl], m[sl], s[sl]),
            _project,
            max_iter=max_iter,
            tol=tol,
            floor_at_zero=(2,),  # the background
        )
        out.append((lm.theta, lm.converged, lm.iterations, lm.nll, fisher(lm.jac, lm.lam)))
    th, conv, it, nl, info = (np.concatenate([o[k] for o in out]) for k in range(5))
    return th, conv, it, nl, info


def _compiled() -> Callable[..., tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], F, F]] | None:
    """The compiled iteration, or None without numba."""
    return compiled("b2calib.fit._template_lm", "template_lm")


def _compiled_cdf() -> Callable[..., F] | None:
    """The compiled template distribution (the fallback's model), or None without numba."""
    return compiled("b2calib.fit._template_lm", "template_cdf")


def fit_template_shift(
    counts: npt.ArrayLike,
    edges: npt.ArrayLike,
    weights: npt.ArrayLike,
    offsets: npt.ArrayLike,
    widths: npt.ArrayLike,
    *,
    period: float | None = None,
    min_entries: int = 50,
    max_iter: int = 60,
    tol: float = 1e-6,
    block: int = 256,
    fallback: bool = True,
    threads: int | None = None,
) -> ChannelFits:
    """Fit yield, shift and flat background of a fixed Gaussian-mixture template per channel.

    Parameters
    ----------
    counts
        (channels, bins) histogram contents.
    edges
        (bins + 1,) bin edges, common to all channels.
    weights, offsets, widths
        (channels, K) template components: weights (normalised here to sum to one per
        channel), offsets from the shift ``mu`` and Gaussian widths (> 0).
    period
        Repeat the template with this period (for folded variables; the edges should span one
        period).
    min_entries
        Channels with fewer entries are NOT_ENOUGH_DATA and are not fitted.
    max_iter, tol
        Iterations at most; convergence when 0.5 g^T I^-1 g < ``tol``.
    block
        Channels fitted together by the numpy path (bounds its memory to ~block * K * bins
        doubles).
    fallback
        Refit with iminuit (``ExtendedBinnedNLL``, limits n, b >= 0) the channels the fast
        path did not converge; FAILED only if that fails too.
    threads
        Threads the compiled path splits the channels over (default: the CPU count).

    Returns
    -------
    ChannelFits
        Parameters ``n``, ``mu``, ``b`` with errors from the inverse expected information;
        FAILED channels (no convergence, singular information, shift outside the edges) carry
        NaN.
    """
    c_all = np.asarray(counts, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    w, m, s = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (weights, offsets, widths))
    if c_all.ndim != 2 or e.shape != (c_all.shape[1] + 1,):
        raise ConfigError(f"counts {c_all.shape} and edges {e.shape} do not match")
    if not (w.shape == m.shape == s.shape and w.shape[0] == c_all.shape[0]):
        raise ConfigError(
            f"template shapes {w.shape}, {m.shape}, {s.shape} do not match {c_all.shape[0]} "
            "channels"
        )
    if np.any(s <= 0) or np.any(w < 0):
        raise ConfigError("template widths must be positive and weights non-negative")
    norm = w.sum(axis=1, keepdims=True)
    w = np.divide(w, norm, out=np.zeros_like(w), where=norm > 0)
    mode = m[np.arange(len(m)), np.argmax(w, axis=1)]  # offset of the strongest component
    w, m, s = _periodic(w, m, s, period)
    nch = c_all.shape[0]
    entries = c_all.sum(axis=1)
    status = np.full(nch, ChannelStatus.OK, dtype=np.int8)
    reason = ["OK"] * nch
    values = np.full((nch, 3), np.nan)
    errors = np.full((nch, 3), np.nan)
    nll = np.full(nch, np.nan)
    iters = np.zeros(nch, dtype=np.int64)
    enough = (entries >= max(min_entries, 4)) & (norm[:, 0] > 0)
    for i in np.flatnonzero(~enough):
        status[i] = ChannelStatus.NOT_ENOUGH_DATA
        reason[i] = f"{int(entries[i])} entries < {min_entries}"
    todo = np.flatnonzero(enough)
    if not len(todo):  # every channel NOT_ENOUGH_DATA: nothing to fit
        return ChannelFits.from_table(
            _PARAMS, values, errors, status, reason, entries, nll, iters, "template-shift"
        )
    n_threads = threads if threads is not None else (os.cpu_count() or 1)
    theta, conv, it, nl, info = _lm(
        c_all[todo], e, w[todo], m[todo], s[todo], mode[todo], max_iter, tol, block, n_threads
    )
    good, err = lm_errors(info)
    inside = (theta[:, 1] > e[0]) & (theta[:, 1] < e[-1])
    # the fallback's model compiled when the fit was (numba is loaded then)
    lm_compiled = _use_compiled(len(todo), w.shape[1])
    cdf = _compiled_cdf() if lm_compiled else None
    iters[todo], nll[todo] = it, nl
    fine = conv & good & inside
    values[todo[fine]], errors[todo[fine]] = theta[fine], err[fine]
    # the others one by one (a few in a thousand): the fallback, or the reason they failed
    for k in np.flatnonzero(~fine).tolist():
        ch = int(todo[k])
        if not conv[k] and fallback:
            val, er, valid, msg, fval = _iminuit_channel(
                c_all[ch], e, w[ch], m[ch], s[ch], theta[k], cdf
            )
            if valid and e[0] < val[1] < e[-1]:
                values[ch], errors[ch], nll[ch] = val, er, fval
                continue
            status[ch] = ChannelStatus.FAILED
            reason[ch] = f"no convergence (iminuit: {msg})"
            continue
        status[ch] = ChannelStatus.FAILED
        if not conv[k]:
            reason[ch] = f"no convergence after {it[k]} iterations"
        elif not good[k]:
            reason[ch] = "singular information matrix"
        else:
            reason[ch] = f"shift {theta[k, 1]:.3f} outside the fitted range"
    return ChannelFits.from_table(
        _PARAMS, values, errors, status, reason, entries, nll, iters, "template-shift"
    )
