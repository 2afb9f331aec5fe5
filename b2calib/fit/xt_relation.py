"""Batched fits of drift-chamber x-t relations: a fifth-order polynomial with a linear tail.

The relation of one (layer, left/right) row is

``x(t) = p0 + p1 t + ... + p5 t^5`` for ``t < t_b`` and
``x(t) = x(t_b) + x'(t_b) (t - t_b)`` beyond,

continuous in value and slope at the boundary ``t_b`` (the tail slope is the polynomial's
derivative there, as in basf2's ``XTFunction``). The model is linear in ``p0..p5`` for a fixed
``t_b``: every row is fitted at once by weighted linear least squares on a grid of boundaries,
the boundary refined by a ternary search on the profiled chi-square, and the covariance of the
seven parameters taken from the Jacobian at the minimum. The search's normal equations at each
boundary come from prefix sums of the points' moments (:class:`_Moments`), not from a design
matrix per boundary: on the benchmark's 112 rows the fit took 2.6x less CPU, its parameters
within 1.2e-5 of their errors of the design-matrix search (issue 20). Its per-point work (each
candidate's count of points below it and squared residuals) is one compiled pass
(:mod:`b2calib.fit._xt_chi2`) with numba, the same chi2 bit for bit as numpy's: half the fit's
CPU on the bench's 112 rows.

Rows whose fit is unphysical (a non-increasing x(t) in the fitted range, a boundary outside the
data, a non-positive tail slope, a poor chi-square) are FAILED; rows with too few points are
NOT_ENOUGH_DATA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from b2calib.conditions.status import ChannelStatus
from b2calib.exceptions import ConfigError
from b2calib.fit._lm import compiled

__all__ = ["XtFits", "fit_xt", "xt_gradient", "xt_slope", "xt_value"]

F = npt.NDArray[np.float64]
_POW = np.arange(6)
_T_SCALE = 100.0  # ns: times are scaled inside the solve to keep the normal equations sane


@dataclass
class XtFits:
    """Per-row x-t fits.

    Attributes
    ----------
    params
        (rows, 8): p0..p5, t_boundary, tail_slope (the payload's columns; NaN when not OK).
    cov
        (rows, 7, 7) covariance of p0..p5, t_boundary (the tail slope follows from them).
    chi2, ndf
        Fit quality per row.
    t_range
        (rows, 2): the drift-time range of the fitted points.
    status, reason
        :class:`ChannelStatus` per row and why.
    """

    params: F
    cov: F
    chi2: F
    ndf: npt.NDArray[np.int64]
    t_range: F
    status: npt.NDArray[np.int8]
    reason: list[str]


def _basis(t: F, tb: F) -> F:
    """Design matrix (..., pts, 6) of the scaled model at scaled times ``t`` for boundaries
    ``tb`` (broadcast over the leading axes).

    The powers ``tt^k`` are running products (not ``tt ** k``: a ``pow`` per element was most
    of the fit's time), the tail's ``k tt^(k-1) (t - tt)`` from the power below."""
    tt = np.minimum(t, tb[..., None])
    dt = t - tt
    out = np.empty((*tt.shape, len(_POW)))
    out[..., 0] = 1.0
    out[..., 1] = tt
    for k in range(2, len(_POW)):
        np.multiply(out[..., k - 1], tt, out=out[..., k])
    # the tail, from the highest power down (each uses the plain power below it)
    for k in range(len(_POW) - 1, 1, -1):
        out[..., k] += k * out[..., k - 1] * dt
    out[..., 1] += dt
    return out


def _solve(a: F, y: F, w: F) -> tuple[F, F]:
    """Weighted least squares over the last-but-one axis; returns (coefficients, chi2)."""
    aw = a * w[..., None]
    awt = np.swapaxes(aw, -1, -2)
    m = np.matmul(awt, a)  # batched BLAS (einsum here was half the fit's time)
    b = np.matmul(awt, y[..., None])[..., 0]
    ridge = 1e-12 * np.trace(m, axis1=-2, axis2=-1)[..., None, None] + 1e-300
    m = m + ridge * np.eye(a.shape[-1])  # rows without points stay solvable (and flagged)
    c = np.linalg.solve(m, b[..., None])[..., 0]
    r = y - np.matmul(a, c[..., None])[..., 0]
    return c, np.sum(w * r * r, axis=-1)


def _profile(t: F, y: F, w: F, tb: F) -> tuple[F, F]:
    """Coefficients and chi2 for boundaries ``tb`` of shape (rows, k)."""
    a = _basis(t[:, None, :], tb)
    return _solve(a, y[:, None, :], w[:, None, :])


class _Moments:
    """Weighted moments of every row's points, summed over the points below each point and
    above it: the normal equations of the profiled fit at any boundary without its design
    matrix (:meth:`chi2`).

    Below the boundary a point's basis is its powers ``t^k``; above it is linear in ``t``,
    ``(1 - k) tb^k + k tb^(k-1) t``, so a boundary's normal equations need the sums of
    ``w t^n`` (n < 11) and ``w y t^k`` over the points below it and of ``w t^n``, ``w y t^n``
    (n < 3, n < 2) over those above. With the points sorted per row, both are prefix sums
    gathered at the number of points below.
    """

    def __init__(self, t: F, y: F, w: F) -> None:
        order = np.argsort(t, axis=1, kind="stable")
        ts, ys, ws = (np.take_along_axis(a, order, axis=1) for a in (t, y, w))
        powers = np.empty((*ts.shape, 2 * len(_POW) - 1))
        powers[..., 0] = 1.0
        for n in range(1, powers.shape[-1]):
            np.multiply(powers[..., n - 1], ts, out=powers[..., n])
        wp = ws[..., None] * powers
        rows = len(ts)
        below = np.zeros((rows, ts.shape[1] + 1, powers.shape[-1] + len(_POW)))
        np.cumsum(wp, axis=1, out=below[:, 1:, : powers.shape[-1]])
        np.cumsum(
            wp[..., : len(_POW)] * ys[..., None], axis=1, out=below[:, 1:, powers.shape[-1] :]
        )
        tail = np.concatenate([wp[..., :3], wp[..., :2] * ys[..., None]], axis=-1)
        above = np.zeros((rows, ts.shape[1] + 1, 5))
        above[:, :-1] = np.cumsum(tail[:, ::-1], axis=1)[:, ::-1]
        self.t, self.below, self.above = ts, below, above
        self.points = (t, y, w)

    def chi2(self, tb: F, *, compiled_kernel: bool = True) -> F:
        """The profiled chi2 at boundaries ``tb`` (rows, k), as :func:`_profile` gives it: the
        same normal equations (summed in another order) and ridge, the chi2 from the residuals
        (from the normal equations alone it would lose to cancellation the digits that the
        search's last steps compare). The per-point work in one compiled pass
        (:mod:`b2calib.fit._xt_chi2`) with numba and ``compiled_kernel``, else numpy: the
        same chi2, bit for bit."""
        tb = np.ascontiguousarray(tb, dtype=np.float64)
        kernel = compiled("b2calib.fit._xt_chi2", "count_below") if compiled_kernel else None
        if kernel is not None:
            count = np.empty(tb.shape, np.int64)
            kernel(self.t, tb, count)
        else:
            count = np.sum(self.t[:, None, :] <= tb[..., None], axis=-1)
        below = np.take_along_axis(self.below, count[..., None], axis=1)
        above = np.take_along_axis(self.above, count[..., None], axis=1)
        n = len(_POW)
        m = below[..., _POW[:, None] + _POW[None, :]]
        b = below[..., 2 * n - 1 :]
        tbp = tb[..., None] ** _POW
        alpha = (1 - _POW) * tbp
        beta = np.zeros_like(tbp)
        beta[..., 1:] = _POW[1:] * tbp[..., :-1]
        s0, s1, s2 = (above[..., i, None, None] for i in range(3))
        aa = alpha[..., :, None] * alpha[..., None, :]
        ab = alpha[..., :, None] * beta[..., None, :]
        bb = beta[..., :, None] * beta[..., None, :]
        m = m + aa * s0 + (ab + np.swapaxes(ab, -1, -2)) * s1 + bb * s2
        b = b + alpha * above[..., 3, None] + beta * above[..., 4, None]
        ridge = 1e-12 * np.trace(m, axis1=-2, axis2=-1)[..., None, None] + 1e-300
        c = np.linalg.solve(m + ridge * np.eye(n), b[..., None])[..., 0]
        kernel = compiled("b2calib.fit._xt_chi2", "squared_residuals") if compiled_kernel else None
        if kernel is not None:
            t2, y2, w2 = self.points
            sq = np.empty((*tb.shape, t2.shape[1]))
            kernel(t2, y2, np.ascontiguousarray(c), tb, sq)
            return np.einsum("...p,...p->...", sq, np.broadcast_to(w2[:, None, :], sq.shape))
        t, y, w = (a[:, None, :] for a in self.points)
        tt = np.minimum(t, tb[..., None])
        # the polynomial (value) and its slope at tt by Horner, in place
        value = np.empty(tt.shape)
        value[...] = c[..., n - 1, None]
        slope = np.zeros(tt.shape)
        for k in range(n - 2, -1, -1):
            np.multiply(slope, tt, out=slope)
            slope += value
            np.multiply(value, tt, out=value)
            value += c[..., k, None]
        np.subtract(t, tt, out=tt)  # the time beyond the boundary
        slope *= tt
        value += slope
        np.subtract(y, value, out=value)  # the residuals
        np.multiply(value, value, out=slope)
        return np.einsum("...p,...p->...", slope, np.broadcast_to(w, slope.shape))


def _search(t: F, y: F, w: F) -> Callable[[F], F]:
    """The profiled chi2 at boundaries (rows, k) that the boundary search compares, for the
    scaled points ``t``, ``y`` with weights ``w``: from their moments (:class:`_Moments`),
    which costs a few per cent of :func:`_profile`'s design matrices at 48 boundaries."""
    return _Moments(t, y, w).chi2


def _unscale(q: F, tb_s: F) -> F:
    """Payload parameters (rows, 8) from scaled coefficients and boundary."""
    p = q / _T_SCALE**_POW
    tb = tb_s * _T_SCALE
    slope = np.sum(_POW[1:] * p[:, 1:] * tb[:, None] ** (_POW[1:] - 1), axis=1)
    return np.column_stack([p, tb, slope])


def xt_value(params: F, t: npt.ArrayLike) -> F:
    """x(t) for parameter rows ``params`` (rows, 8) at times ``t`` (rows, n) or (n,)."""
    p, tb, slope = params[:, :6], params[:, 6:7], params[:, 7:8]
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), (len(params), np.shape(t)[-1]))
    tt = np.minimum(t, tb)
    poly = np.einsum("rni,ri->rn", tt[..., None] ** _POW, p)
    return poly + slope * (t - tt)


def xt_gradient(params: F, t: npt.ArrayLike) -> F:
    """d x(t) / d (p0..p5, t_boundary): (rows, n, 7), the tail slope tied to the polynomial."""
    p, tb = params[:, :6], params[:, 6:7]
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), (len(params), np.shape(t)[-1]))
    tt = np.minimum(t, tb)
    g = _basis(t, tb[:, 0])
    curv = np.sum(_POW[2:] * (_POW[2:] - 1) * p[:, 2:] * tb ** (_POW[2:] - 2), axis=1)
    dtb = curv[:, None] * (t - tt)
    return np.concatenate([g, dtb[..., None]], axis=-1)


def fit_xt(
    t: F,
    x: F,
    t_err: F,
    x_err: F,
    *,
    min_points: int = 12,
    grid: int = 48,
    max_chi2_ndf: float = 5.0,
) -> XtFits:
    """Fit x(t) in every row.

    Parameters
    ----------
    t, x
        (rows, points): measured drift time and drift distance of each point (NaN: no point).
    t_err, x_err
        Their uncertainties; the fit uses the effective variance
        ``x_err^2 + (x'(t) t_err)^2`` with the slope of a first fit.
    min_points
        Rows with fewer points are NOT_ENOUGH_DATA.
    grid
        Boundary candidates between 40 % and 97 % of the points' time range.
    max_chi2_ndf
        Rows with a larger chi-square per degree of freedom are FAILED.
    """
    t, x, t_err, x_err = (np.asarray(a, dtype=np.float64) for a in (t, x, t_err, x_err))
    if not t.shape == x.shape == t_err.shape == x_err.shape or t.ndim != 2:
        raise ConfigError("fit_xt needs four (rows, points) arrays of one shape")
    rows = len(t)
    use = np.isfinite(t) & np.isfinite(x) & (t_err > 0) & (x_err > 0)
    npts = use.sum(axis=1)
    ts = np.where(use, t, 0.0) / _T_SCALE
    ys = np.where(use, x, 0.0)
    tmin = np.where(use, ts, np.inf).min(axis=1)
    tmax = np.where(use, ts, -np.inf).max(axis=1)
    status = np.full(rows, ChannelStatus.OK, np.int8)
    reason = ["OK"] * rows
    enough = npts >= max(min_points, 10)
    for r in np.flatnonzero(~enough).tolist():
        status[r] = ChannelStatus.NOT_ENOUGH_DATA
        reason[r] = f"{int(npts[r])} points < {min_points}"
    tmin = np.where(enough, tmin, 0.0)
    tmax = np.where(enough, tmax, 1.0)
    # first pass: slope from a straight line through the points
    slope0 = np.where(enough, (np.nanmax(np.where(use, x, np.nan), axis=1, initial=0)) / tmax, 1)
    q = tb_s = np.zeros(rows)
    for slope_of in ("line", "fit"):
        if slope_of == "line":
            slope = np.broadcast_to(slope0[:, None], t.shape) / _T_SCALE
        else:
            slope = xt_slope(_unscale(q, tb_s), np.where(use, t, 0.0))
        var = x_err**2 + (slope * t_err) ** 2
        w = np.where(use, 1.0 / np.where(use, var, 1.0), 0.0)
        frac = np.linspace(0.4, 0.97, grid)
        cand = tmin[:, None] + frac[None, :] * (tmax - tmin)[:, None]
        chi2_at = _search(ts, ys, w)
        chi2 = chi2_at(cand)
        best = np.argmin(chi2, axis=1)
        step = (tmax - tmin) * (frac[1] - frac[0])
        lo = cand[np.arange(rows), best] - step
        hi = np.minimum(cand[np.arange(rows), best] + step, tmin + 0.97 * (tmax - tmin))
        for _ in range(40):  # ternary search of the profiled chi2
            m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
            c = chi2_at(np.column_stack([m1, m2]))
            left = c[:, 0] < c[:, 1]
            hi = np.where(left, m2, hi)
            lo = np.where(left, lo, m1)
        tb_s = 0.5 * (lo + hi)
        coef, chi2b = _profile(ts, ys, w, tb_s[:, None])
        q = coef[:, 0]
    params = _unscale(q, tb_s)
    # covariance of (p0..p5, t_b) from the Jacobian in scaled units, then scaled back
    scaled = np.column_stack([q, tb_s, np.zeros(rows)])
    jac = xt_gradient(scaled, ts)
    info = np.einsum("rpi,rp,rpj->rij", jac, w, jac)
    cov = np.full((rows, 7, 7), np.nan)
    idx = np.flatnonzero(enough)
    good = np.linalg.cond(info[idx]) < 1e14
    d = np.append(1.0 / _T_SCALE**_POW, _T_SCALE)
    cov_scaled = np.full((rows, 7, 7), np.nan)
    cov_scaled[idx[good]] = np.linalg.inv(info[idx[good]])
    cov = cov_scaled * d[None, :, None] * d[None, None, :]
    chi2 = chi2b[:, 0]
    ndf = npts - 7
    t_lo, t_hi = tmin * _T_SCALE, tmax * _T_SCALE
    dense = np.linspace(0.0, 1.0, 200)[None, :] * t_hi[:, None]
    deriv = xt_slope(params, dense)
    for r in np.flatnonzero(enough).tolist():
        problem = None
        if not (np.all(np.isfinite(params[r])) and np.all(np.isfinite(cov[r]))):
            problem = "singular fit"
        elif np.linalg.eigvalsh(cov_scaled[r]).min() <= 0:
            problem = "covariance not positive definite"
        elif not t_lo[r] < params[r, 6] < t_hi[r]:
            problem = (
                f"boundary {params[r, 6]:.1f} ns outside the data ({t_lo[r]:.1f}-{t_hi[r]:.1f})"
            )
        elif params[r, 7] <= 0:
            problem = f"tail slope {params[r, 7]:.3g} cm/ns not positive"
        elif np.any(deriv[r] <= 0):
            problem = "x(t) not increasing in the fitted range"
        elif chi2[r] / max(ndf[r], 1) > max_chi2_ndf:
            problem = f"chi2/ndf {chi2[r] / max(ndf[r], 1):.2f} > {max_chi2_ndf}"
        if problem:
            status[r] = ChannelStatus.FAILED
            reason[r] = problem
    bad = status != ChannelStatus.OK
    params[bad] = np.nan
    cov[bad] = np.nan
    return XtFits(
        params, cov, chi2, ndf.astype(np.int64), np.column_stack([t_lo, t_hi]), status, reason
    )


def xt_slope(params: F, t: F) -> F:
    """dx/dt at times ``t`` (rows, n)."""
    p, tb, slope = params[:, :6], params[:, 6:7], params[:, 7:8]
    tt = np.minimum(t, tb)
    d = np.einsum("rni,ri->rn", _POW[1:] * tt[..., None] ** (_POW[1:] - 1), p[:, 1:])
    return np.where(t < tb, d, slope)
