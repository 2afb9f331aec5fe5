"""The shifted-template fit's Levenberg-Marquardt, compiled with numba, one channel at a time.

The same iteration as :func:`b2calib.fit._lm.poisson_lm` with the model of
:func:`b2calib.fit.template_shift._model` (Fisher scoring, a damping per channel, the background
held at its bound 0 while the gradient points below it, the EDM ``0.5 g^T I^-1 g`` below ``tol``
for convergence, a damping beyond 1e8 stopping unconverged), written as a loop over channels, as
:mod:`b2calib.fit._peak_lm` does for a Gaussian peak: a channel costs only its own iterations.
The model skips the bins where a component is more than :data:`CUT` of its widths away (its
cumulative distribution there is 0 or 1 to 1e-19: no change beyond rounding), which is most
bins for the narrow components of a TOP photon-time template and for the periodic copies. The
numpy path of :mod:`b2calib.fit.template_shift` stays the reference and the fallback when numba
is missing; both give the same fits up to rounding (tests/test_fit.py).

Importing this module imports numba; :mod:`b2calib.fit.template_shift` imports it on first use.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import numpy.typing as npt

from b2calib.fit._peak_lm import _fisher, _gradient_information, _nll, _solve

__all__ = ["CUT", "template_lm"]

F = npt.NDArray[np.float64]

#: components further than this many widths from a bin edge add nothing there (Phi is 0 or 1
#: and phi is 0 to within 1e-18)
CUT = 9.0
_SQRT2 = math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


@numba.njit(cache=True, nogil=True)
def _model(th: F, edges: F, widths: F, w: F, m: F, s: F, lam: F, jac: F) -> None:
    """Expected counts and Jacobian of one channel at ``th`` = (n, mu, b) into ``lam`` (B,) and
    ``jac`` (B, 3); components ``w``, ``m``, ``s`` (K,)."""
    nb = widths.shape[0]
    for i in range(nb):
        lam[i] = 0.0  # the template's probability per bin, then the expected counts
        jac[i, 1] = 0.0  # minus its derivative by mu, then n times that
    for k in range(w.shape[0]):
        wk = w[k]
        if wk == 0.0:
            continue
        sk = s[k]
        off = th[1] + m[k]
        z0 = (edges[0] - off) / sk
        if z0 > CUT:
            continue  # the whole component is below the first edge
        if z0 < -CUT:
            c0, p0 = 0.0, 0.0
        else:
            c0 = 0.5 * math.erfc(-z0 / _SQRT2)
            p0 = _INV_SQRT2PI * math.exp(-0.5 * z0 * z0) / sk
        for i in range(nb):
            z1 = (edges[i + 1] - off) / sk
            if z1 < -CUT:
                continue  # still 0 at both edges of this bin
            if z1 > CUT:
                c1, p1 = 1.0, 0.0
            else:
                c1 = 0.5 * math.erfc(-z1 / _SQRT2)
                p1 = _INV_SQRT2PI * math.exp(-0.5 * z1 * z1) / sk
            lam[i] += wk * (c1 - c0)
            jac[i, 1] += wk * (p1 - p0)
            if z1 > CUT:
                break  # 1 at both edges of every later bin
            c0, p0 = c1, p1
    n, b = th[0], th[2]
    for i in range(nb):
        prob = lam[i]
        lam[i] = n * prob + b * widths[i]
        jac[i, 0] = prob
        jac[i, 1] = -n * jac[i, 1]
        jac[i, 2] = widths[i]


@numba.njit(cache=True, nogil=True)
def template_lm(
    counts: F, edges: F, theta: F, w: F, m: F, s: F, max_iter: int, tol: float
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], F, F]:
    """Fit every channel (rows of ``counts``, template rows of ``w``, ``m``, ``s``) from
    ``theta`` (n, mu, b; updated in place).

    Returns whether each channel converged, its iterations, its NLL and the information matrix
    at the end point (for the errors), as :func:`b2calib.fit._lm.poisson_lm` and
    :func:`b2calib.fit._lm.fisher` on :func:`b2calib.fit.template_shift._model`.
    """
    nch, npar = theta.shape
    nb = counts.shape[1]
    widths = edges[1:] - edges[:-1]
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
        wc, mc, sc = w[ch], m[ch], s[ch]
        damping = 1e-3
        _model(th, edges, widths, wc, mc, sc, lam, jac)
        cur = _nll(c, lam)
        for _ in range(max_iter):
            iters[ch] += 1
            _gradient_information(c, jac, lam, grad, info)
            if th[2] <= 0.0 and grad[2] > 0.0:  # the background at its bound 0
                grad[2] = 0.0
                for p in range(npar):
                    info[2, p] = 0.0
                    info[p, 2] = 0.0
                info[2, 2] = 1.0
            for p in range(npar):
                for q in range(npar):
                    damped[p, q] = info[p, q]
                damped[p, p] = info[p, p] + damping * info[p, p]
            _solve(damped, grad, scratch, step)
            for p in range(npar):
                new[p] = th[p] - step[p]
            new[0] = max(new[0], 1e-9)
            new[2] = max(new[2], 0.0)
            _model(new, edges, widths, wc, mc, sc, lam_new, jac_new)
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
