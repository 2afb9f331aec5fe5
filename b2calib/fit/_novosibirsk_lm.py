"""The batched Novosibirsk peak fit's Levenberg-Marquardt, compiled with numba, one channel at a
time.

The same iteration as :func:`b2calib.fit._lm.poisson_lm` with the model and the central-difference
Jacobian of :mod:`b2calib.fit.novosibirsk_batched` (Fisher scoring, a damping per channel, the
background held at its bound 0 while the gradient points below it, frozen parameters with a zero
gradient and a unit information diagonal, the EDM ``0.5 g^T I^-1 g`` below ``tol`` for
convergence, a damping beyond 1e8 stopping unconverged), written as a loop over channels: a
channel costs only its own iterations, the density (logarithm and exponentials) is evaluated only
where a parameter moves it (not for the yield and the background, nor for frozen parameters),
and no (channels, bins, parameters) array is built per iteration. The numpy path of
:mod:`b2calib.fit.novosibirsk_batched` stays the reference and the fallback when numba is missing;
both give the same fits up to rounding (tests/test_ecl.py).

Importing this module imports numba; :mod:`b2calib.fit.novosibirsk_batched` imports it on first
use only.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import numpy.typing as npt

from b2calib.fit._peak_lm import _fisher, _gradient_information, _nll, _solve

__all__ = ["novosibirsk_lm"]

F = npt.NDArray[np.float64]

_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))


@numba.njit(cache=True, nogil=True)
def _shape(centers: F, widths: F, peak: float, width: float, tail: float, out: F) -> None:
    """The normalised density times the bin widths into ``out`` (the ``shape`` of
    :func:`b2calib.fit.novosibirsk_batched._model`)."""
    small = abs(tail) < 1e-7
    t = 1e-7 if small else tail
    s0 = 2.0 / _FWHM * math.asinh(t * _FWHM / 2.0)
    norm = 0.0
    for i in range(centers.shape[0]):
        d = centers[i] - peak
        if small:
            v = math.exp(-0.5 * (d / width) ** 2)
        else:
            arg = 1.0 - d * t / width
            if arg > 1e-7:
                la = math.log(max(arg, 1e-300))
                v = math.exp(-0.5 * (la / s0) ** 2 - 0.5 * s0**2)
            else:
                v = 0.0
        out[i] = v * widths[i]
        norm += out[i]
    for i in range(centers.shape[0]):
        out[i] = out[i] / norm if norm > 0.0 else 0.0


@numba.njit(cache=True, nogil=True)
def _model(
    th: F, centers: F, widths: F, frozen: npt.NDArray[np.bool_], lam: F, jac: F, s: F, s2: F
) -> None:
    """Expected counts ``lam`` (B,) and central-difference Jacobian ``jac`` (B, 5) at ``th``,
    the steps of :func:`b2calib.fit.novosibirsk_batched._jacobian`; ``s``, ``s2`` scratch."""
    nb = centers.shape[0]
    n, peak, width, tail, b = th[0], th[1], th[2], th[3], th[4]
    _shape(centers, widths, peak, width, tail, s)
    for i in range(nb):
        lam[i] = n * s[i] + b * widths[i]
    for k in range(5):
        if frozen[k]:
            for i in range(nb):
                jac[i, k] = 0.0
            continue
        if k == 1 or k == 2:
            h = max(width * 1e-3, 1e-9)
        elif k == 3:
            h = 1e-4
        else:
            h = max(abs(th[k]) * 1e-4, 1e-7)
        if k == 0:
            for i in range(nb):
                up = (n + h) * s[i] + b * widths[i]
                down = (n - h) * s[i] + b * widths[i]
                jac[i, 0] = (up - down) / (2 * h)
        elif k == 4:
            for i in range(nb):
                up = n * s[i] + (b + h) * widths[i]
                down = n * s[i] + (b - h) * widths[i]
                jac[i, 4] = (up - down) / (2 * h)
        else:
            up1, up2, up3 = peak, width, tail
            dn1, dn2, dn3 = peak, width, tail
            if k == 1:
                up1, dn1 = peak + h, peak - h
            elif k == 2:
                up2, dn2 = width + h, width - h
            else:
                up3, dn3 = tail + h, tail - h
            _shape(centers, widths, up1, up2, up3, s2)
            for i in range(nb):
                jac[i, k] = n * s2[i] + b * widths[i]
            _shape(centers, widths, dn1, dn2, dn3, s2)
            for i in range(nb):
                jac[i, k] = (jac[i, k] - (n * s2[i] + b * widths[i])) / (2 * h)


@numba.njit(cache=True, nogil=True)
def novosibirsk_lm(
    counts: F,
    centers: F,
    widths: F,
    theta: F,
    frozen: npt.NDArray[np.bool_],
    lo: float,
    hi: float,
    min_width: float,
    max_tail: float,
    max_iter: int,
    tol: float,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], F, F]:
    """Fit every channel (rows of ``counts``) from ``theta`` (updated in place), the
    parameters (n, peak, width, tail, b) kept inside the bounds of
    :func:`b2calib.fit.novosibirsk_batched._clip`.

    Returns whether each channel converged, its iterations, its NLL and the information matrix
    at the end point (frozen parameters' rows and columns 0, their diagonal 1), as
    :func:`b2calib.fit._lm.poisson_lm` and :func:`b2calib.fit._lm.fisher`.
    """
    nch, npar = theta.shape
    nb = counts.shape[1]
    converged = np.zeros(nch, dtype=np.bool_)
    iters = np.zeros(nch, dtype=np.int64)
    nll = np.zeros(nch)
    info_out = np.zeros((nch, npar, npar))
    lam = np.empty(nb)
    jac = np.zeros((nb, npar))
    lam_new = np.empty(nb)
    jac_new = np.zeros((nb, npar))
    s = np.empty(nb)
    s2 = np.empty(nb)
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
        _model(th, centers, widths, frozen, lam, jac, s, s2)
        cur = _nll(c, lam)
        for _ in range(max_iter):
            iters[ch] += 1
            _gradient_information(c, jac, lam, grad, info)
            for p in range(npar):
                if frozen[p]:
                    grad[p] = 0.0
                    info[p, p] = 1.0
            if th[4] <= 0.0 and grad[4] > 0.0:  # the background at its bound
                grad[4] = 0.0
                for p in range(npar):
                    info[4, p] = 0.0
                    info[p, 4] = 0.0
                info[4, 4] = 1.0
            for p in range(npar):
                for q in range(npar):
                    damped[p, q] = info[p, q]
                damped[p, p] = info[p, p] + damping * info[p, p]
            _solve(damped, grad, scratch, step)
            for p in range(npar):
                new[p] = th[p] - step[p]
            new[0] = max(new[0], 1e-9)
            new[1] = min(max(new[1], lo), hi)
            new[2] = min(max(new[2], min_width), hi - lo)
            new[3] = min(max(new[3], -max_tail), max_tail)
            new[4] = max(new[4], 0.0)
            _model(new, centers, widths, frozen, lam_new, jac_new, s, s2)
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
        for p in range(npar):
            if frozen[p]:
                info_out[ch, p, p] = 1.0
    return converged, iters, nll, info_out
