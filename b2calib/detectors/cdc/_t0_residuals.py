"""The T0 collector's residuals, compiled with numba, filled into its histogram one hit at a time.

For every hit of an event with an event T0 and a T0 set for its run, with a fitted drift length
``u`` (in half cells) inside ``u_min <= u <= u_max``: the residual
``((t_meas - event T0) - wire T0) - t_xt(u)``, ``t_xt`` the inverse x-t relation of the hit's
row interpolated linearly on its uniform ``u`` grid; a finite residual is counted in its
(wire, residual) bin. The same floating-point operations, in the same order, as the numpy path
of :class:`b2calib.detectors.cdc.tracking.T0ResidualCollector` (the reference and the fallback
without numba), and the same bins as :func:`b2calib.engine.fill.fill_2d`, so the histogram is
the same bit for bit (tests/test_cdc.py). Without the flat float64 copies of every hit's
branches, T0s and interpolation indices, which cost more than the read.

The bins are counted in a second loop over the used hits' (wire, residual) bins: incremented
as each residual is computed, the 7 MB histogram's cache misses stall the arithmetic (half the
kernel's time on the bench sample); in a loop of their own the processor overlaps them.

Importing this module imports numba; :mod:`b2calib.detectors.cdc.tracking` imports it on first
use only.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["t0_residuals"]


@numba.njit(cache=True, nogil=True)
def t0_residuals(  # type: ignore[no-untyped-def,unused-ignore]
    counts,
    t0,
    has,
    event_set,
    sets,
    layer_first,
    layer,
    wire,
    lr,
    time,
    x,
    half_cell,
    inv,
    step,
    u_min,
    u_max,
    res_lo,
    res_hi,
    keys,
    out,
):
    """Add the residuals of the used hits to ``out``, the int64 (wire, residual) storage of the
    collector's histogram with flow bins (``out.shape[1] - 2`` residual bins from ``res_lo`` to
    ``res_hi``); return how many were added. ``keys`` (int64, at least one per hit) is scratch
    space for their bins.

    ``counts`` hits per event, ``t0`` and ``has`` its event T0 and whether it has one,
    ``event_set`` its run's row of ``sets`` (wire T0s; -1: none), ``layer_first`` the first
    global wire of each layer, ``half_cell`` the half cell of each row, ``inv`` the drift time of
    each row on the uniform grid of ``u`` of spacing ``step`` from 0; the hits' ``layer``,
    ``wire``, ``lr``, ``time`` and fitted drift length ``x``. The hits must have been checked
    (:func:`b2calib.detectors.cdc.tracking.check_hits`): the tables are indexed with them.
    """
    n_grid = inv.shape[1]
    n_res = out.shape[1] - 2
    h = 0
    n = 0
    for e in range(counts.shape[0]):
        first = h
        h += counts[e]
        s = event_set[e]
        if not has[e] or s < 0:
            continue
        te = np.float64(t0[e])
        for k in range(first, h):
            ly = np.int64(layer[k])
            row = 2 * ly + np.int64(lr[k])
            u = np.float64(x[k]) / half_cell[row]
            if not (u >= u_min and u <= u_max):  # false for NaN
                continue
            pos = u / step
            # numpy's clip(int64(pos), 0, n_grid - 2): truncation towards zero, so every pos
            # below 1 (negative ones too) is cell 0; beyond 2**63 numpy's cast is undefined
            if pos < 1.0:
                i0 = 0
            elif pos >= n_grid - 2:
                i0 = n_grid - 2
            else:
                i0 = int(pos)
            w = pos - i0
            t_fit = inv[row, i0] * (1 - w) + inv[row, i0 + 1] * w
            gw = layer_first[ly] + np.int64(wire[k])
            res = ((np.float64(time[k]) - te) - sets[s, gw]) - t_fit
            if not np.isfinite(res):
                continue
            # fill_2d's bins: the wire axis has one bin per wire (edges at half-integers), whose
            # floating-point bin is the wire's + 1 (tests/test_cdc.py checks every wire)
            if res >= res_lo and res < res_hi:
                j = int((res - res_lo) / (res_hi - res_lo) * n_res) + 1
            elif res < res_lo:
                j = 0
            else:
                j = n_res + 1
            keys[n] = j << 32 | (gw + 1)
            n += 1
    for k in range(n):
        out[keys[k] & 0xFFFFFFFF, keys[k] >> 32] += 1
    return n
