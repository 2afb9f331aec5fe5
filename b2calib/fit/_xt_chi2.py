"""The x-t boundary search's per-point work, compiled with numba.

:meth:`b2calib.fit.xt_relation._Moments.chi2` evaluates, at every candidate boundary of every
row, the number of points at or below it and each point's weighted-to-be squared residual
from the profiled polynomial with its linear tail. In numpy that is some 25 passes over
(rows, boundaries, points) arrays (19 MB each at the 48-boundary grid of the bench's 112
rows), and at the ternary search's 2 boundaries a few dozen small array operations; here
one pass, element by element, with the same floating-point operations in the same order (no
fused multiply-add: numba contracts none without ``fastmath``), so the squared residuals are
the same bit for bit. Their weighted sum stays numpy's (its summation order is its own).

Importing this module imports numba; :mod:`b2calib.fit.xt_relation` imports it on first use
only and computes with numpy without it.
"""

from __future__ import annotations

import numba

__all__ = ["count_below", "squared_residuals"]


@numba.njit(cache=True, nogil=True)
def count_below(t, tb, out):  # type: ignore[no-untyped-def,unused-ignore]
    """``out[r, j]``: the number of points ``t[r, :]`` at or below ``tb[r, j]`` (none for a NaN
    boundary), as ``np.sum(t[:, None, :] <= tb[..., None], axis=-1)``."""
    for r in range(tb.shape[0]):
        for j in range(tb.shape[1]):
            b = tb[r, j]
            n = 0
            for p in range(t.shape[1]):
                if t[r, p] <= b:
                    n += 1
            out[r, j] = n


@numba.njit(cache=True, nogil=True)
def squared_residuals(t, y, c, tb, out):  # type: ignore[no-untyped-def,unused-ignore]
    """``out[r, j, p]``: the squared residual of point ``p`` of row ``r`` from the polynomial
    ``c[r, j]`` (ascending powers) below boundary ``tb[r, j]`` and its tangent beyond, by
    Horner's scheme for the value and slope at ``min(t, tb)`` (NaN when either is), as the
    numpy path of ``_Moments.chi2`` computes it."""
    n = c.shape[2]
    for r in range(tb.shape[0]):
        for j in range(tb.shape[1]):
            b = tb[r, j]
            for p in range(t.shape[1]):
                tp = t[r, p]
                tt = tp if (tp < b or tp != tp) else b  # np.minimum: NaN if either is
                value = c[r, j, n - 1]
                slope = 0.0
                for k in range(n - 2, -1, -1):
                    slope = slope * tt
                    slope = slope + value
                    value = value * tt
                    value = value + c[r, j, k]
                slope = slope * (tp - tt)
                value = value + slope
                res = y[r, p] - value
                out[r, j, p] = res * res
