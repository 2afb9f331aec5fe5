"""The x-t collector's profiles, filled by a compiled (numba) pass one hit at a time.

For every hit of an event with an event T0 and a T0 set for its run, the drift time
``(t_meas - event T0) - wire T0`` and, when it is inside the time window, the hit's row
(``2 layer + lr``), drift length in half cells and fitted drift length: the same floating-point
operations, in the same order, as the numpy path of
:class:`b2calib.detectors.cdc.tracking.XtCollector` (the reference and the fallback without
numba). Each point is added to the profiles as it is found, in hit order, with boost-histogram's
binning and ``Mean`` update, so the profiles are those of ``Hist.fill`` bit for bit
(tests/test_cdc.py). Without the flat float64 copies of every hit's branches and T0s, which
cost more than the read, and without an array of the points and ``Hist.fill``, which took two
thirds of the collector's CPU on the bench sample (issue 20).

Importing this module imports numba; :mod:`b2calib.detectors.cdc.tracking` imports it on first
use only.
"""

from __future__ import annotations

import numba
import numpy as np

from b2calib.engine.fill import mean_add, regular_bin

__all__ = ["xt_profiles"]


@numba.njit(cache=True, nogil=True)
def xt_profiles(  # type: ignore[no-untyped-def,unused-ignore]
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
    lo,
    hi,
    u_axis,
    time_sums,
    length_sums,
):
    """Add the points of the hits in the window ``lo < t < hi`` to the profiles, in hit order;
    return their number.

    ``counts`` hits per event, ``t0`` and ``has`` its event T0 and whether it has one,
    ``event_set`` its run's row of ``sets`` (wire T0s; -1: none), ``layer_first`` the first
    global wire of each layer, ``half_cell`` the half cell of each row; the hits' ``layer``,
    ``wire``, ``lr``, ``time`` and fitted drift length ``x``. A point is the hit's row, its
    drift length in half cells ``u``, drift time and drift length. The profiles' axes: one bin
    per row (edges at half-integers from -0.5) and ``u_axis`` (bins, low, high), regular;
    ``time_sums`` and ``length_sums`` (3, rows + 2, u bins + 2) hold the count, mean and sum
    of squared deltas, flow bins included, of the drift-time and drift-length profiles, updated
    as ``Hist.fill(row, u, sample=...)`` updates them. The hits must have been checked
    (:func:`b2calib.detectors.cdc.tracking.check_hits`): the tables are indexed with them.
    """
    n_u, u_lo, u_hi = int(u_axis[0]), u_axis[1], u_axis[2]
    ct, mt, st = time_sums[0], time_sums[1], time_sums[2]
    cx, mx, sx = length_sums[0], length_sums[1], length_sums[2]
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
                # the row axis has one bin per row (edges at half-integers) and a checked hit's
                # row is on it: its floating-point bin is the row's + 1 (tests/test_cdc.py)
                i = row + 1
                j = regular_bin(xk / half_cell[row], u_lo, u_hi, n_u)
                mean_add(ct, mt, st, (i, j), td)
                mean_add(cx, mx, sx, (i, j), xk)
                n += 1
    return n
