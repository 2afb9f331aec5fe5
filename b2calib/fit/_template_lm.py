"""The shifted-template fit's Levenberg-Marquardt, compiled with numba, one channel at a time.

The same iteration as :func:`b2calib.fit._lm.poisson_lm` with the model of
:func:`b2calib.fit.template_shift._model` (Fisher scoring, a damping per channel, the background
held at its bound 0 while the gradient points below it, the EDM ``0.5 g^T I^-1 g`` below ``tol``
for convergence, a damping beyond 1e8 stopping unconverged), written as a loop over channels, as
:mod:`b2calib.fit._peak_lm` does for a Gaussian peak: a channel costs only its own iterations.
The model skips the bins where a component is more than :data:`CUT` of its widths away (its
cumulative distribution there is within 5.2e-17 of 0 or 1, below the rounding of the bin
probabilities; the density 1.1e-15 of its peak), which is about half of the (component, edge)
pairs of a TOP photon-time template with its periodic copies.

The normal distribution and density at the remaining edges (all of the fit's time went into
libm's ``erfc`` and ``exp`` there: 25 ns a pair) come from their Taylor series about the nearest
of the nodes :data:`NODES_PER_UNIT` apart (:func:`_normal`): the coefficients are the density
times Hermite polynomials, computed once from ``math.erfc`` and ``math.exp`` at the nodes; to
the sixth order the result equals libm's to 2.3e-16 absolute (tests/test_fit.py), the rounding
of the values themselves. The numpy path of :mod:`b2calib.fit.template_shift` (scipy's
``erfc``) stays the reference and the fallback when numba is missing; both give the same fits
up to rounding (tests/test_fit.py).

A fit evaluates its model at every iteration, but only the shift ``mu`` moves the template:
the model comes instead from a table per channel (:func:`_model_table`) of the whole template's
distribution ``T(x) = sum_k w_k Phi((x - m_k) / s_k)`` and its Taylor coefficients up to the
order its narrowest component needs (:func:`_table_orders`: the bound of the remainder below
:data:`TABLE_EPS`) at nodes a mean bin width apart (:func:`_table_build`), built for the
nodes the edges shifted by ``mu`` fall nearest to, the first time they do: about one node per
edge per fit instead of every (component, edge) pair at every iteration. ``T`` and ``T'`` at
an edge are the nearest node's series; the expected counts and Jacobian equal the per-component
model's (:func:`_model`, the reference) to 1e-14 of the yield (the rounding of the template's
sum), and the fits to 1e-11 of their errors on top-channel-t0's 8192 channels. A channel whose
components are too narrow for the bins, or a shift whose edges leave the table, is evaluated
per component.

Importing this module imports numba; :mod:`b2calib.fit.template_shift` imports it on first use.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import numpy.typing as npt

from b2calib.fit._peak_lm import _fisher, _gradient_information, _nll, _solve

__all__ = ["CUT", "NODES_PER_UNIT", "SPAN", "normal_table", "template_cdf", "template_lm"]

F = npt.NDArray[np.float64]

#: components further than this many widths from a bin edge add nothing there (Phi is 0 or 1
#: to 5.2e-17: 1 - Phi rounds to 1)
CUT = 8.3
#: nodes of the normal distribution's table per unit of z (a power of 2: the nodes are exact)
NODES_PER_UNIT = 128
#: the table spans [-SPAN, SPAN] (CUT rounded up)
SPAN = 9
_SQRT2 = math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
_ORDER = 5  # the density's Taylor series to d^5, the distribution's to d^6 (|d| <= 1/256)


def normal_table() -> F:
    """Per node ``z_j = j / NODES_PER_UNIT - SPAN`` (rows): the standard normal distribution at
    ``z_j`` and the Taylor coefficients of the density about it, ``phi(z_j) (-1)^n He_n(z_j) /
    n!`` for n = 0.._ORDER (``He_n`` the probabilists' Hermite polynomials:
    ``He_{n+1} = z He_n - n He_{n-1}``)."""
    z = np.arange(-SPAN * NODES_PER_UNIT, SPAN * NODES_PER_UNIT + 1) / NODES_PER_UNIT
    cdf = np.array([0.5 * math.erfc(-x / _SQRT2) for x in z])
    pdf = np.array([_INV_SQRT2PI * math.exp(-0.5 * x * x) for x in z])
    table = np.empty((len(z), _ORDER + 2))
    table[:, 0] = cdf
    a_prev, a = np.zeros_like(z), np.ones_like(z)  # (-1)^n He_n(z)
    for n in range(_ORDER + 1):
        table[:, n + 1] = pdf * a / math.factorial(n)
        a_prev, a = a, -z * a - n * a_prev
    return table


_TABLE = normal_table()  # frozen into the compiled code (numba treats global arrays as constants)
_LAST = len(_TABLE) - 1


@numba.njit(cache=True, nogil=True, inline="always")
def _normal(z: float) -> tuple[float, float]:
    """The standard normal distribution and density at ``z`` (|z| <= SPAN; NaN stays NaN), from
    the Taylor series about the nearest node of :func:`normal_table`."""
    j = min(max(int(z * NODES_PER_UNIT + (SPAN * NODES_PER_UNIT + 0.5)), 0), _LAST)
    d = z - (j / NODES_PER_UNIT - SPAN)  # |d| <= 1 / 256 (the nodes and this are exact)
    t = _TABLE[j]
    pdf = t[1] + d * (t[2] + d * (t[3] + d * (t[4] + d * (t[5] + d * t[6]))))
    inner = t[4] * 0.25 + d * (t[5] * 0.2 + d * (t[6] * (1.0 / 6.0)))
    cdf = t[0] + d * (t[1] + d * (t[2] * 0.5 + d * (t[3] * (1.0 / 3.0) + d * inner)))
    return cdf, pdf


@numba.njit(cache=True, nogil=True)
def _model(th: F, edges: F, widths: F, w: F, m: F, s: F, lam: F, jac: F) -> None:
    """Expected counts and Jacobian of one channel at ``th`` = (n, mu, b) into ``lam`` (B,) and
    ``jac`` (B, 3); components ``w``, ``m``, ``s`` (K,).

    Per component, the edges within :data:`CUT` widths are found by bisection (the others give
    0 below, 1 above), the distribution and density are evaluated there in one pass, then
    differenced per bin."""
    nb = widths.shape[0]
    cdf = np.empty(nb + 1)
    pdf = np.empty(nb + 1)
    for i in range(nb):
        lam[i] = 0.0  # the template's probability per bin, then the expected counts
        jac[i, 1] = 0.0  # minus its derivative by mu, then n times that
    for k in range(w.shape[0]):
        wk = w[k]
        if wk == 0.0:
            continue
        inv = 1.0 / s[k]
        ws = wk * inv
        off = th[1] + m[k]
        if (edges[0] - off) * inv > CUT or (edges[nb] - off) * inv < -CUT:
            continue  # the whole component below the first edge or above the last
        lo, hi = 0, nb  # first: the first edge at most CUT widths below the component
        while lo < hi:
            mid = (lo + hi) // 2
            if (edges[mid] - off) * inv < -CUT:
                lo = mid + 1
            else:
                hi = mid
        first = lo
        hi = nb + 1  # last: the first edge more than CUT widths above it (nb + 1: none)
        while lo < hi:
            mid = (lo + hi) // 2
            if (edges[mid] - off) * inv > CUT:
                hi = mid
            else:
                lo = mid + 1
        last = lo
        for i in range(first, last):
            cdf[i], pdf[i] = _normal((edges[i] - off) * inv)
        if first == 0:
            c0, p0 = cdf[0], pdf[0]
            first = 1
        else:
            c0, p0 = 0.0, 0.0
        for i in range(first, last):
            lam[i - 1] += wk * (cdf[i] - c0)
            jac[i - 1, 1] += ws * (pdf[i] - p0)
            c0, p0 = cdf[i], pdf[i]
        if last <= nb:  # the bin up to the first edge where the distribution is 1
            lam[last - 1] += wk * (1.0 - c0)
            jac[last - 1, 1] -= ws * p0
    n, b = th[0], th[2]
    for i in range(nb):
        prob = lam[i]
        lam[i] = n * prob + b * widths[i]
        jac[i, 0] = prob
        jac[i, 1] = -n * jac[i, 1]
        jac[i, 2] = widths[i]


#: the template table's Taylor series (:func:`_table_orders`) stops where the bound of its
#: remainder is below this fraction of a component's density (the values are rounded to
#: 1.1e-16 anyway)
TABLE_EPS = 1e-17
#: the table's highest order: a channel whose components are too narrow for the node spacing
#: (about a bin) to reach :data:`TABLE_EPS` by this order is evaluated per component
TABLE_MAX_ORDER = 24
#: lattice nodes beyond the shifts ``mu`` inside the edges, on each side (a shift further out,
#: as an iteration can try, is evaluated per component)
TABLE_PAD = 8
# |d^n phi / dz^n| <= 1.086435 sqrt(n!) / sqrt(2 pi) (Cramer's bound on Hermite functions)
_CRAMER = 1.086435 / math.sqrt(2.0 * math.pi)


@numba.njit(cache=True, nogil=True)
def _table_orders(h: float, w: F, s: F, coef: F, order: npt.NDArray[np.int64]) -> int:
    """Per component the Taylor order its table terms need and ``coef[k, n] = (h / s_k)^n /
    n!``; returns the channel's highest order, or -1 if some component needs more than
    :data:`TABLE_MAX_ORDER`.

    About the nearest node (at most ``h / 2`` away, ``a = h / (2 s_k)`` in the component's
    widths) the series of the density cut after ``d^(N-1)`` is off by at most
    ``|phi^(N)| a^N / N! <= _CRAMER a^N / sqrt(N!)`` of the component's ``w / s``, the
    distribution's one order higher by less: ``N`` is the first order where that is below
    :data:`TABLE_EPS`."""
    top = 0
    for k in range(w.shape[0]):
        r = h / s[k]
        a = 0.5 * r
        bound = _CRAMER * a
        n = 1
        while bound > TABLE_EPS:
            n += 1
            if n > TABLE_MAX_ORDER:
                return -1
            bound *= a / math.sqrt(n)
        order[k] = n if w[k] != 0.0 else 0
        top = max(top, order[k])
        c = 1.0
        coef[k, 0] = 1.0
        for p in range(1, TABLE_MAX_ORDER + 1):
            c *= r / p
            coef[k, p] = c
    return top


@numba.njit(cache=True, nogil=True)
def _table_build(
    lo: int,
    hi: int,
    half: int,
    h: float,
    w: F,
    m: F,
    s: F,
    coef: F,
    order: npt.NDArray[np.int64],
    top: int,
    tab: F,
    lanes: F,
) -> None:
    """Nodes ``lo..hi-1`` of the template table ``tab[j, n]``: the distribution ``T(x) =
    sum_k w_k Phi((x - m_k) / s_k)`` at ``x_j = (j - half) h`` and its Taylor coefficients in
    units of ``h``, ``T^(n)(x_j) h^n / n!``: per component ``w_k phi^(n-1)(z) (h / s_k)^n /
    n!`` with ``phi^(n) = (-1)^n He_n phi`` (``He_{n+1} = z He_n - n He_{n-1}``), components
    beyond :data:`CUT` widths 0 or ``w_k`` (as :func:`_model`).

    The Hermite recurrence is a chain of dependent multiplications: four nodes run it side by
    side (a third less time than one node after the other or than lanes in memory)."""
    for j in range(lo, hi):
        for n in range(top + 1):
            tab[j, n] = 0.0
    zs, ps = lanes[0], lanes[1]
    for k in range(w.shape[0]):
        wk = w[k]
        if wk == 0.0:
            continue
        inv = 1.0 / s[k]
        first, last = hi, lo  # the nodes within CUT widths (z increases with j)
        for j in range(lo, hi):
            z = ((j - half) * h - m[k]) * inv
            if z > CUT:
                tab[j, 0] += wk
            elif z >= -CUT:
                cdf, pdf = _normal(z)
                tab[j, 0] += wk * cdf
                zs[j] = z
                ps[j] = wk * pdf
                first = min(first, j)
                last = j + 1
        nk = order[k]
        ck = coef[k]
        j = first
        while j + 4 <= last:
            z0, z1, z2, z3 = zs[j], zs[j + 1], zs[j + 2], zs[j + 3]
            p0, p1, p2, p3 = ps[j], ps[j + 1], ps[j + 2], ps[j + 3]
            g0 = g1 = g2 = g3 = 1.0  # (-1)^(n-1) He_(n-1)(z), from n = 1
            q0 = q1 = q2 = q3 = 0.0  # the same for n - 1
            r0, r1, r2, r3 = tab[j], tab[j + 1], tab[j + 2], tab[j + 3]
            for n in range(1, nk + 1):
                cn = ck[n]
                r0[n] += p0 * g0 * cn
                r1[n] += p1 * g1 * cn
                r2[n] += p2 * g2 * cn
                r3[n] += p3 * g3 * cn
                a = n - 1.0
                t0 = -z0 * g0 - a * q0
                t1 = -z1 * g1 - a * q1
                t2 = -z2 * g2 - a * q2
                t3 = -z3 * g3 - a * q3
                q0, q1, q2, q3 = g0, g1, g2, g3
                g0, g1, g2, g3 = t0, t1, t2, t3
            j += 4
        while j < last:
            z0, p0, r0 = zs[j], ps[j], tab[j]
            g0, q0 = 1.0, 0.0
            for n in range(1, nk + 1):
                r0[n] += p0 * g0 * ck[n]
                g0, q0 = -z0 * g0 - (n - 1.0) * q0, g0
            j += 1


@numba.njit(cache=True, nogil=True)
def _model_table(
    th: F,
    edges: F,
    widths: F,
    w: F,
    m: F,
    s: F,
    lam: F,
    jac: F,
    table: tuple[float, F, npt.NDArray[np.int64], F, npt.NDArray[np.int64], int, F, F],
) -> bool:
    """:func:`_model` from the channel's template table: node ``j`` at ``x_j = (j - half) h``
    (:func:`_table_build`); ``T`` and ``T'`` at each ``edge - mu`` from the series about the
    nearest node (``h`` the mean bin width: the shifts an iteration tries reuse the nodes of
    the ones before; the nodes built form one interval, ``span``). Returns False (nothing
    written) when an edge falls outside the lattice or ``top < 0`` (no table)."""
    h, tab, span, coef, order, top, scratch, vd = table
    if top < 0:
        return False
    nb = widths.shape[0]
    half = (tab.shape[0] - 1) // 2
    mu = th[1]
    vals, ders = vd[0], vd[1]
    lo, hi = tab.shape[0], -1
    for i in range(nb + 1):
        u = (edges[i] - mu) / h + half
        if not (u >= 0.0 and u <= 2.0 * half):  # NaN too
            return False
        j = int(u + 0.5)
        lo = min(lo, j)
        hi = max(hi, j + 1)
    if span[1] <= span[0] or hi < span[0] or lo > span[1]:  # none built, or apart: anew
        _table_build(lo, hi, half, h, w, m, s, coef, order, top, tab, scratch)
        span[0], span[1] = lo, hi
    else:  # extend the interval built
        if lo < span[0]:
            _table_build(lo, span[0], half, h, w, m, s, coef, order, top, tab, scratch)
            span[0] = lo
        if hi > span[1]:
            _table_build(span[1], hi, half, h, w, m, s, coef, order, top, tab, scratch)
            span[1] = hi
    for i in range(nb + 1):
        x = edges[i] - mu
        j = min(max(int(x / h + half + 0.5), lo), hi - 1)  # as above; clamped: never off the table
        t = (x - (j - half) * h) / h
        row = tab[j]
        v = row[top]
        dv = top * row[top]
        for n in range(top - 1, 0, -1):
            v = v * t + row[n]
            dv = dv * t + n * row[n]
        vals[i] = v * t + row[0]
        ders[i] = dv / h
    n, b = th[0], th[2]
    for i in range(nb):
        prob = vals[i + 1] - vals[i]
        lam[i] = n * prob + b * widths[i]
        jac[i, 0] = prob
        jac[i, 1] = -n * (ders[i + 1] - ders[i])
        jac[i, 2] = widths[i]
    return True


@numba.njit(cache=True, nogil=True)
def _model_either(
    th: F,
    edges: F,
    widths: F,
    w: F,
    m: F,
    s: F,
    lam: F,
    jac: F,
    table: tuple[float, F, npt.NDArray[np.int64], F, npt.NDArray[np.int64], int, F, F],
) -> None:
    """:func:`_model_table` where the channel has a table and the edges shifted by ``mu`` fall
    on its lattice, else :func:`_model`."""
    if not _model_table(th, edges, widths, w, m, s, lam, jac, table):
        _model(th, edges, widths, w, m, s, lam, jac)


@numba.njit(cache=True, nogil=True)
def template_cdf(x: F, mu: float, w: F, m: F, s: F) -> F:
    """The template's cumulative distribution ``sum_k w_k Phi((x - mu - m_k) / s_k)`` at ``x``
    (the model of the iminuit fallback, :func:`b2calib.fit.template_shift._iminuit_channel`),
    components beyond :data:`CUT` widths taken as 0 or 1."""
    out = np.zeros(x.shape[0])
    for k in range(w.shape[0]):
        wk = w[k]
        if wk == 0.0:
            continue
        inv = 1.0 / s[k]
        off = mu + m[k]
        for i in range(x.shape[0]):
            z = (x[i] - off) * inv
            if z > CUT:
                out[i] += wk
            elif z >= -CUT:
                out[i] += wk * _normal(z)[0]
    return out


@numba.njit(cache=True, nogil=True)
def template_lm(
    counts: F,
    edges: F,
    theta: F,
    w: F,
    m: F,
    s: F,
    max_iter: int,
    tol: float,
    table: bool = True,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], F, F]:
    """Fit every channel (rows of ``counts``, template rows of ``w``, ``m``, ``s``) from
    ``theta`` (n, mu, b; updated in place).

    Returns whether each channel converged, its iterations, its NLL and the information matrix
    at the end point (for the errors), as :func:`b2calib.fit._lm.poisson_lm` and
    :func:`b2calib.fit._lm.fisher` on :func:`b2calib.fit.template_shift._model`. With
    ``table`` the model comes from the channel's template table (:func:`_model_table`) where
    its components allow one, else per component (:func:`_model`, the reference).
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
    h = (edges[nb] - edges[0]) / nb  # the table's node spacing: the mean bin width
    tab = np.empty((2 * (nb + TABLE_PAD) + 1, TABLE_MAX_ORDER + 1))
    span = np.zeros(2, dtype=np.int64)
    coef = np.empty((w.shape[1], TABLE_MAX_ORDER + 1))
    order = np.zeros(w.shape[1], dtype=np.int64)
    lanes = np.empty((2, tab.shape[0]))
    vd = np.empty((2, nb + 1))
    for ch in range(nch):
        c = counts[ch]
        th = theta[ch]
        wc, mc, sc = w[ch], m[ch], s[ch]
        damping = 1e-3
        top = _table_orders(h, wc, sc, coef, order) if table and h > 0.0 else -1
        span[0], span[1] = 0, 0  # no node built
        tbl = (h, tab, span, coef, order, top, lanes, vd)
        _model_either(th, edges, widths, wc, mc, sc, lam, jac, tbl)
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
            _model_either(new, edges, widths, wc, mc, sc, lam_new, jac_new, tbl)
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
