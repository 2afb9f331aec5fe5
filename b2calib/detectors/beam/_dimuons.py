"""The tight dimuon selection compiled with numba: one pass over the flattened track branches.

The same selection as the numpy path of :func:`b2calib.detectors.beam.dimuons.select_dimuons`
(the reference, and the fallback without numba), each quantity computed with the same
floating-point operations in the same order from the stored (float32, integer) values, so
that the kept pairs are the numpy path's (tests/test_beamspot.py compares the two). Without the
float64 copies of every track and the masks and gathers of every two-track event.

Importing this module imports numba; :mod:`b2calib.detectors.beam.dimuons` imports it on
first use only.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["select_pairs"]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def select_pairs(  # type: ignore[no-untyped-def,unused-ignore]
    n_trk, d0, phi0, omega, z0, tan_l, charge, n_svd, n_cdc, b_factor, m2_mu, cuts
):
    """The kept two-track events (their indices) and their pairs' ``d0, z0, phi0, tanLambda,
    p, px, py, pz`` (``(8, kept, 2)``, the positive track first) and masses.

    ``n_trk``: tracks per event; the track arrays: the flattened branches, at least
    ``sum(n_trk)`` long (the caller checks); ``cuts``: ``p_min, z0_max, d0_max, svd_hits_min,
    cdc_hits_min, mass_min, mass_max``. ``error_model="numpy"``: a zero omega gives an
    infinite momentum (dropped by the finiteness cut) as in numpy, not ZeroDivisionError.
    """
    p_min, z0_max, d0_max = cuts[0], cuts[1], cuts[2]
    svd_min, cdc_min, mass_min, mass_max = cuts[3], cuts[4], cuts[5], cuts[6]
    n_ev = n_trk.shape[0]
    rows = np.empty(n_ev, np.int64)
    out = np.empty((8, n_ev, 2))
    mass = np.empty(n_ev)
    mom = np.empty((4, 2))  # px, py, pz, p of the two tracks
    e = np.empty(2)
    k = 0
    first = 0
    for i in range(n_ev):
        n = n_trk[i]
        j0 = first
        first += n
        if n != 2:
            continue
        # the cuts on stored values first: an event they drop needs no cos, sin or sqrt (the
        # numpy path ANDs the same cuts, so their order changes no selection)
        ok = charge[j0] * charge[j0 + 1] < 0
        for j in range(j0, j0 + 2):
            ok = (
                ok
                and abs(np.float64(z0[j])) < z0_max
                and abs(np.float64(d0[j])) < d0_max
                and n_svd[j] >= svd_min
                and n_cdc[j] >= cdc_min
            )
        if not ok:
            continue
        for t in range(2):
            j = j0 + t
            # float64 of the stored float32 values, as the numpy path's copies
            ph = np.float64(phi0[j])
            pt = abs(b_factor / np.float64(omega[j]))
            px = pt * math.cos(ph)
            py = pt * math.sin(ph)
            pz = pt * np.float64(tan_l[j])
            p = math.sqrt(px * px + py * py + pz * pz)
            e[t] = math.sqrt(p * p + m2_mu)
            mom[0, t], mom[1, t], mom[2, t], mom[3, t] = px, py, pz, p
            ok = ok and math.isfinite(p) and p > p_min
        if not ok:
            continue
        sx = mom[0, 0] + mom[0, 1]
        sy = mom[1, 0] + mom[1, 1]
        sz = mom[2, 0] + mom[2, 1]
        se = e[0] + e[1]
        m2 = se * se - sx * sx - sy * sy - sz * sz
        m = math.sqrt(m2 if m2 > 0.0 else 0.0)
        if not (m > mass_min and m < mass_max):
            continue
        swap = 1 if charge[j0] < 0 else 0
        for t in range(2):
            j = j0 + (t ^ swap)
            out[0, k, t] = np.float64(d0[j])
            out[1, k, t] = np.float64(z0[j])
            out[2, k, t] = np.float64(phi0[j])
            out[3, k, t] = np.float64(tan_l[j])
            out[4, k, t] = mom[3, t ^ swap]
            out[5, k, t] = mom[0, t ^ swap]
            out[6, k, t] = mom[1, t ^ swap]
            out[7, k, t] = mom[2, t ^ swap]
        mass[k] = m
        rows[k] = i
        k += 1
    return rows[:k].copy(), out[:, :k].copy(), mass[:k].copy()
