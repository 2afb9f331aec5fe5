"""Per-channel peak fits over thousands of channels at once.

The model per channel is a binned Gaussian peak on an optional flat background,
``lambda_i = N [Phi(z_{i+1}) - Phi(z_i)] + B w_i`` with ``z = (edge - mu) / sigma``, fitted by
Poisson maximum likelihood (the cost of iminuit's ``ExtendedBinnedNLL``). The fast path runs a
Levenberg-Marquardt iteration with the expected (Fisher) information on all channels together
(numpy, vectorised over channels); ``method="iminuit"`` fits each channel with iminuit and is
the reference. Every channel gets a status: OK, NOT_ENOUGH_DATA (fewer than ``min_entries`` in
the range) or FAILED (no convergence, a parameter out of its physical range, singular
information), with the reason. Failed channels carry NaN values, never numbers that could be
mistaken for constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import hist
import numpy as np
import numpy.typing as npt
from iminuit import Minuit, cost
from scipy import special

from b2calib.conditions.payload import ChannelStatus
from b2calib.exceptions import ConfigError

__all__ = ["ChannelFits", "fit_channels"]

F = npt.NDArray[np.float64]
_SQRT2 = np.sqrt(2.0)
_INV_SQRT2PI = 1.0 / np.sqrt(2.0 * np.pi)


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


_TINY = 1e-12  # expected counts below this are empty bins: no information, no gradient


def _nll(counts: F, lam: F) -> F:
    lam = np.maximum(lam, _TINY)
    return np.sum(lam - counts * np.log(lam), axis=1)


def _fisher(jac: F, lam: F) -> F:
    """Expected information J^T diag(1/lambda) J, bins with vanishing lambda left out."""
    weight = np.where(lam > _TINY, 1.0 / np.maximum(lam, _TINY), 0.0)
    jt = np.swapaxes(jac, 1, 2)
    return np.asarray(np.matmul(jt, jac * weight[..., None]), dtype=np.float64)  # batched BLAS


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
    counts: F, edges: F, theta: F, background: bool, max_iter: int, tol: float
) -> tuple[F, F, npt.NDArray[np.bool_], npt.NDArray[np.int64], F]:
    """Vectorised Levenberg-Marquardt with Fisher scoring on all channels."""
    nch, npar = theta.shape
    damping = np.full(nch, 1e-3)
    active = np.ones(nch, dtype=bool)
    converged = np.zeros(nch, dtype=bool)
    iters = np.zeros(nch, dtype=np.int64)
    lam, jac = _model(theta, edges, background)
    nll = _nll(counts, lam)
    lo, hi = edges[0], edges[-1]
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        iters[idx] += 1
        c, lam_a, jac_a, th = counts[idx], lam[idx], jac[idx], theta[idx]
        resid = 1.0 - c / np.maximum(lam_a, _TINY)
        grad = np.matmul(np.swapaxes(jac_a, 1, 2), resid[..., None])[..., 0]
        info = _fisher(jac_a, lam_a)
        if background:  # a background at its bound 0 that wants to go lower is held fixed
            pinned = (th[:, 3] <= 0.0) & (grad[:, 3] > 0.0)
            grad[pinned, 3] = 0.0
            info[pinned, 3, :] = 0.0
            info[pinned, :, 3] = 0.0
            info[pinned, 3, 3] = 1.0
        diag = np.einsum("cpp->cp", info)
        damped = info + damping[idx, None, None] * np.einsum("cp,pq->cpq", diag, np.eye(npar))
        step = _solve(damped, grad)
        new = th - step
        new[:, 0] = np.maximum(new[:, 0], 1e-9)
        new[:, 2] = np.clip(new[:, 2], 1e-6 * (hi - lo), None)
        if background:
            new[:, 3] = np.maximum(new[:, 3], 0.0)
        lam_new, jac_new = _model(new, edges, background)
        nll_new = _nll(c, lam_new)
        better = nll_new <= nll[idx] + 1e-12 * np.abs(nll[idx])
        # EDM-like distance to the minimum, from the undamped information
        with np.errstate(invalid="ignore"):
            edm = 0.5 * np.einsum("cp,cp->c", grad, _solve(info, grad))
        acc = idx[better]
        theta[acc], lam[acc], jac[acc], nll[acc] = (
            new[better],
            lam_new[better],
            jac_new[better],
            nll_new[better],
        )
        damping[acc] = np.maximum(damping[acc] / 10.0, 1e-9)
        damping[idx[~better]] *= 10.0
        done = (edm < tol) | (damping[idx] > 1e8)
        converged[idx] = (edm < tol) & np.isfinite(edm)
        active[idx[done]] = False
    return theta, _fisher(jac, lam), converged, iters, nll


def _solve(a: F, b: F) -> F:
    """Batched a^-1 b; a stack with a singular matrix falls back to the pseudo-inverse (one
    singular channel must not stop the others)."""
    try:
        out = np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        out = (np.linalg.pinv(a) @ b[..., None])[..., 0]
    return np.asarray(out, dtype=np.float64)


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
    m.migrad()
    valid = bool(m.valid)
    if valid:
        m.hesse()
        valid = bool(m.valid and m.accurate)
    msg = (
        "OK"
        if valid
        else ("call limit reached" if m.fmin.has_reached_call_limit else "minimum not valid")
    )
    return np.array(m.values), np.array(m.errors), valid, msg, float(m.fval)


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
    """
    if h.ndim != 2:
        raise ConfigError("fit_channels needs a channels x values histogram")
    if method not in ("batched", "iminuit"):
        raise ConfigError(f"method must be 'batched' or 'iminuit', not {method!r}")
    edges_all = h.axes[1].edges
    counts_all = h.values().astype(np.float64)
    if value_range is not None:
        lo, hi = value_range
        sel = (edges_all[:-1] >= lo - 1e-12) & (edges_all[1:] <= hi + 1e-12)
        if sel.sum() < 4:
            raise ConfigError(f"value_range {value_range} keeps fewer than 4 bins")
        first = int(np.flatnonzero(sel)[0])
        edges = edges_all[first : first + int(sel.sum()) + 1]
        counts_all = counts_all[:, sel]
    else:
        edges = edges_all
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
        theta, info, conv, it, nl = _lm(
            counts_all[fit_idx], edges, start.copy(), background, max_iter, tol
        )
        cov = np.full_like(info, np.nan)
        good_info = np.linalg.cond(info) < 1e14
        cov[good_info] = np.linalg.inv(info[good_info])
        values[fit_idx], nll[fit_idx], iters[fit_idx] = theta, nl, it
        errors[fit_idx] = np.sqrt(np.abs(np.einsum("cpp->cp", cov)))
        for k, ch in enumerate(fit_idx.tolist()):
            if not conv[k]:
                retry.append(int(ch))
                reason[ch] = f"no convergence after {it[k]} iterations"
            elif not good_info[k]:
                retry.append(int(ch))
                reason[ch] = "singular information matrix"
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
    for ch in np.flatnonzero(status == ChannelStatus.OK).tolist():
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
    bad = status != ChannelStatus.OK
    values[bad] = np.nan
    errors[bad] = np.nan
    return ChannelFits(
        names,
        {p: values[:, k] for k, p in enumerate(names)},
        {p: errors[:, k] for k, p in enumerate(names)},
        status,
        reason,
        entries,
        nll,
        iters,
        method,
    )
