"""The x-t collector's profile points, compiled with numba, one hit at a time.

For every hit of an event with an event T0 and a T0 set for its run, the drift time
``(t_meas - event T0) - wire T0`` and, when it is inside the time window, the hit's row
(``2 layer + lr``), drift length in half cells and fitted drift length: the same floating-point
operations, in the same order, as the numpy path of
:class:`b2calib.detectors.cdc.tracking.XtCollector` (the reference and the fallback without
numba), and the points in hit order, so the profiles it fills are the same bit for bit
(tests/test_cdc.py). Without the flat float64 copies of every hit's branches and T0s, which
cost more than the read.

Importing this module imports numba; :mod:`b2calib.detectors.cdc.tracking` imports it on first
use only.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["xt_points"]


@numba.njit(cache=True, nogil=True)
def xt_points(  # type: ignore[no-untyped-def,unused-ignore]
    counts, t0, has, event_set, sets, layer_first, layer, wire, lr, time, x, half_cell, lo, hi, out
):
    """Write the points of the hits in the window ``lo < t < hi`` to ``out`` (``(hits, 4)``:
    row, u, drift time, drift length) in hit order; return their number.

    ``counts`` hits per event, ``t0`` and ``has`` its event T0 and whether it has one,
    ``event_set`` its run's row of ``sets`` (wire T0s; -1: none), ``layer_first`` the first
    global wire of each layer, ``half_cell`` the half cell of each row; the hits' ``layer``,
    ``wire``, ``lr``, ``time`` and fitted drift length ``x``.
    """
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
            td = (np.float64(time[k]) - te) - sets[s, layer_first[ly] + np.int64(wire[k])]
            if td > lo and td < hi:  # false for NaN
                row = 2 * ly + np.int64(lr[k])
                xk = np.float64(x[k])
                out[n, 0] = row
                out[n, 1] = xk / half_cell[row]
                out[n, 2] = td
                out[n, 3] = xk
                n += 1
    return n
