"""The batched Gaussian peak fit's Levenberg-Marquardt, compiled with numba, one channel at a time.

The same iteration as :func:`b2calib.fit._lm.poisson_lm` with the model of
:func:`b2calib.fit.batched._model` (Fisher scoring, a damping per channel, the background held
at its bound 0 while the gradient points below it, the EDM ``0.5 g^T I^-1 g`` below ``tol`` for
convergence, a damping beyond 1e8 stopping unconverged), written as a loop over channels: a
channel costs only its own iterations, and no (channels, bins, parameters) Jacobian is copied per
iteration. The numpy path of :mod:`b2calib.fit.batched` stays the reference and the fallback when
numba is missing; both give the same fits up to rounding (tests/test_fit.py).

Importing this module imports numba; :mod:`b2calib.fit.batched` imports it on first use only.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import numpy.typing as npt

__all__ = ["peak_lm"]

F = npt.NDArray[np.float64]

_TINY = 1e-12  # as b2calib.fit._lm: expected counts below this are empty bins
_SQRT2 = math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


@numba.njit(cache=True, nogil=True)
def _model(th: F, edges: F, widths: F, background: bool, lam: F, jac: F) -> None:
    """Expected counts and Jacobian of one channel at ``th`` into ``lam`` (B,), ``jac`` (B, P);
    the same arithmetic as :func:`b2calib.fit.batched._model`."""
    n, mu, sigma = th[0], th[1], th[2]
    z0 = (edges[0] - mu) / sigma
    c0 = 0.5 * math.erfc(-z0 / _SQRT2)
    p0 = _INV_SQRT2PI * math.exp(-0.5 * z0 * z0)
    for i in range(widths.shape[0]):
        z1 = (edges[i + 1] - mu) / sigma
        c1 = 0.5 * math.erfc(-z1 / _SQRT2)
        p1 = _INV_SQRT2PI * math.exp(-0.5 * z1 * z1)
        prob = c1 - c0
        lam[i] = n * prob
        jac[i, 0] = prob
        jac[i, 1] = -n * (p1 - p0) / sigma
        jac[i, 2] = -n * (p1 * z1 - p0 * z0) / sigma
        if background:
            lam[i] = lam[i] + th[3] * widths[i]
            jac[i, 3] = widths[i]
        z0, c0, p0 = z1, c1, p1


@numba.njit(cache=True, nogil=True)
def _nll(counts: F, lam: F) -> float:
    total = 0.0
    for i in range(lam.shape[0]):
        x = max(lam[i], _TINY)
        total += x - counts[i] * math.log(x)
    return total


@numba.njit(cache=True, nogil=True)
def _fisher(jac: F, lam: F, out: F) -> None:
    """J^T diag(1/lambda) J into ``out``, bins with vanishing lambda left out."""
    npar = jac.shape[1]
    out[:, :] = 0.0
    for i in range(lam.shape[0]):
        if lam[i] > _TINY:
            w = 1.0 / lam[i]
            for p in range(npar):
                a = jac[i, p] * w
                for q in range(p + 1):
                    out[p, q] += a * jac[i, q]
    for p in range(npar):
        for q in range(p):
            out[q, p] = out[p, q]


@numba.njit(cache=True, nogil=True)
def _gradient_information(counts: F, jac: F, lam: F, grad: F, info: F) -> None:
    """The gradient J^T (1 - n / lambda) and the information J^T diag(1/lambda) J (as
    :func:`_fisher`) in one pass over the bins."""
    npar = jac.shape[1]
    grad[:] = 0.0
    info[:, :] = 0.0
    for i in range(lam.shape[0]):
        r = 1.0 - counts[i] / max(lam[i], _TINY)
        w = 1.0 / lam[i] if lam[i] > _TINY else 0.0
        for p in range(npar):
            grad[p] += jac[i, p] * r
            a = jac[i, p] * w
            for q in range(p + 1):
                info[p, q] += a * jac[i, q]
    for p in range(npar):
        for q in range(p):
            info[q, p] = info[p, q]


@numba.njit(cache=True, nogil=True)
def _pinv_solve(a: F, b: F, x: F) -> None:
    """x = pinv(a) b for a symmetric ``a`` (the information matrices here): eigenvalues by cyclic
    Jacobi rotations, those below 1e-15 of the largest in magnitude dropped (the cut of
    ``numpy.linalg.pinv``). Written out for these 3x3 and 4x4 matrices: numba's ``pinv`` would
    triple the compile time of this module for a case that almost never happens."""
    n = b.shape[0]
    d = a.copy()
    v = np.eye(n)
    scale = 0.0
    for p in range(n):
        for q in range(n):
            scale += d[p, q] * d[p, q]
    for _ in range(60):
        off = 0.0
        for p in range(n):
            for q in range(p + 1, n):
                off += d[p, q] * d[p, q]
        if off <= 1e-36 * scale:
            break
        for p in range(n):
            for q in range(p + 1, n):
                if d[p, q] == 0.0:
                    continue
                theta = (d[q, q] - d[p, p]) / (2.0 * d[p, q])
                t = 1.0 / (abs(theta) + math.sqrt(theta * theta + 1.0))
                if theta < 0.0:
                    t = -t
                c = 1.0 / math.sqrt(t * t + 1.0)
                s = t * c
                for k in range(n):
                    dkp, dkq = d[k, p], d[k, q]
                    d[k, p] = c * dkp - s * dkq
                    d[k, q] = s * dkp + c * dkq
                for k in range(n):
                    dpk, dqk = d[p, k], d[q, k]
                    d[p, k] = c * dpk - s * dqk
                    d[q, k] = s * dpk + c * dqk
                for k in range(n):
                    vkp, vkq = v[k, p], v[k, q]
                    v[k, p] = c * vkp - s * vkq
                    v[k, q] = s * vkp + c * vkq
    largest = 0.0
    for k in range(n):
        largest = max(largest, abs(d[k, k]))
    x[:] = 0.0
    for k in range(n):
        if abs(d[k, k]) > 1e-15 * largest:
            proj = 0.0
            for i in range(n):
                proj += v[i, k] * b[i]
            proj /= d[k, k]
            for i in range(n):
                x[i] += v[i, k] * proj
    return


@numba.njit(cache=True, nogil=True)
def _solve(a: F, b: F, m: F, x: F) -> None:
    """x = a^-1 b by Gaussian elimination with partial pivoting (LAPACK gesv's), ``m`` scratch;
    an exactly zero pivot (a singular matrix) falls back to the pseudo-inverse, as
    :func:`b2calib.fit._lm.solve`."""
    n = b.shape[0]
    m[:, :] = a
    x[:] = b
    for k in range(n):
        piv = k
        for r in range(k + 1, n):
            if abs(m[r, k]) > abs(m[piv, k]):
                piv = r
        if m[piv, k] == 0.0:
            _pinv_solve(a, b, x)
            return
        if piv != k:
            for c in range(n):
                m[k, c], m[piv, c] = m[piv, c], m[k, c]
            x[k], x[piv] = x[piv], x[k]
        for r in range(k + 1, n):
            f = m[r, k] / m[k, k]
            for c in range(k, n):
                m[r, c] -= f * m[k, c]
            x[r] -= f * x[k]
    for k in range(n - 1, -1, -1):
        s = x[k]
        for c in range(k + 1, n):
            s -= m[k, c] * x[c]
        x[k] = s / m[k, k]


@numba.njit(cache=True, nogil=True)
def peak_lm(
    counts: F, edges: F, theta: F, background: bool, max_iter: int, tol: float
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], F, F]:
    """Fit every channel (rows of ``counts``) from ``theta`` (updated in place).

    Returns whether each channel converged, its iterations, its NLL and the information
    matrix at the end point (for the errors), as :func:`b2calib.fit._lm.poisson_lm` and
    :func:`b2calib.fit._lm.fisher` on :func:`b2calib.fit.batched._model`.
    """
    nch, npar = theta.shape
    nb = counts.shape[1]
    widths = edges[1:] - edges[:-1]
    width_floor = 1e-6 * (edges[-1] - edges[0])
    converged = np.zeros(nch, dtype=np.bool_)
    iters = np.zeros(nch, dtype=np.int64)
    nll = np.zeros(nch)
    info_out = np.zeros((nch, npar, npar))
    lam = np.empty(nb)
    jac = np.zeros((nb, npar))
    lam_new = np.empty(nb)
    jac_new = np.zeros((nb, npar))
    grad = np.empty(npar)
    info = np.empty((npar, npar))
    damped = np.empty((npar, npar))
    new = np.empty(npar)
    step = np.empty(npar)
    scratch = np.empty((npar, npar))
    for ch in range(nch):
        c = counts[ch]
        th = theta[ch]
        damping = 1e-3
        _model(th, edges, widths, background, lam, jac)
        cur = _nll(c, lam)
        for _ in range(max_iter):
            iters[ch] += 1
            _gradient_information(c, jac, lam, grad, info)
            if background and th[3] <= 0.0 and grad[3] > 0.0:
                grad[3] = 0.0
                for p in range(npar):
                    info[3, p] = 0.0
                    info[p, 3] = 0.0
                info[3, 3] = 1.0
            for p in range(npar):
                for q in range(npar):
                    damped[p, q] = info[p, q]
                damped[p, p] = info[p, p] + damping * info[p, p]
            _solve(damped, grad, scratch, step)
            for p in range(npar):
                new[p] = th[p] - step[p]
            new[0] = max(new[0], 1e-9)
            new[2] = max(new[2], width_floor)
            if background:
                new[3] = max(new[3], 0.0)
            _model(new, edges, widths, background, lam_new, jac_new)
            nll_new = _nll(c, lam_new)
            better = nll_new <= cur + 1e-12 * abs(cur)
            _solve(info, grad, scratch, step)
            edm = 0.0
            for p in range(npar):
                edm += grad[p] * step[p]
            edm *= 0.5
            if better:
                th[:] = new
                lam, lam_new = lam_new, lam
                jac, jac_new = jac_new, jac
                cur = nll_new
                damping = max(damping / 10.0, 1e-9)
            else:
                damping *= 10.0
            if edm < tol or damping > 1e8:
                converged[ch] = edm < tol and math.isfinite(edm)
                break
        nll[ch] = cur
        _fisher(jac, lam, info_out[ch])
    return converged, iters, nll, info_out
