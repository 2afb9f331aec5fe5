"""The beam-spot collector's moments summed per atom, compiled with numba, one event at a time.

The same moments as :func:`b2calib.detectors.beam.collectors.event_moments` (the numpy path,
the reference and the fallback without numba), each computed with the same floating-point
operations in the same order from the same per-track inputs (``sin phi0``, ``cos phi0``, the
weights and the residuals, computed by numpy), and added to its atom's sums in event order as
``numpy.add.reduceat`` adds them: the sums are the numpy path's, bit for bit
(tests/test_beamspot.py). Without the ``(events, 233)`` array of every event's moments (and its
sorted and masked copies), which cost more than the read.

Importing this module imports numba; :mod:`b2calib.detectors.beam.collectors` imports it on
first use only.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

__all__ = ["atom_moments"]

F = npt.NDArray[np.float64]


@numba.njit(cache=True, nogil=True)
def atom_moments(  # type: ignore[no-untyped-def,unused-ignore]
    s, c, w, d, z, ref, clean, slot, out
):
    """Add each event's moments to ``out[slot[e], 0]``, and to ``out[slot[e], 1]`` when
    ``clean[e]`` (``out``: ``(atoms, 2, N_MOMENTS)``); ``s, c, w, d, z`` ``(n, 2)``: the tracks'
    ``sin phi0``, ``cos phi0``, weight, ``d'`` and ``z'``; ``ref`` ``(n, 6)``."""
    m = np.empty(out.shape[2])
    a = np.empty((2, 2))
    big_a = np.empty((2, 2))
    b = np.empty(2)
    f = np.empty(3)
    v = np.empty(2)
    pm = np.empty((2, 2))
    ff = np.empty((3, 3))
    for e in range(s.shape[0]):
        for t in range(2):
            a[t, 0] = s[e, t]
            a[t, 1] = -c[e, t]
        for i in range(2):
            b[i] = w[e, 0] * a[0, i] * d[e, 0] + w[e, 1] * a[1, i] * d[e, 1]
            for j in range(2):
                big_a[i, j] = w[e, 0] * a[0, i] * a[0, j] + w[e, 1] * a[1, i] * a[1, j]
        z1, z2 = z[e, 0], z[e, 1]
        zbar = (z1 + z2) / 2.0
        z12 = z1 * z2
        f[0] = s[e, 0] * s[e, 1]
        f[1] = c[e, 0] * c[e, 1]
        f[2] = -(s[e, 0] * c[e, 1] + c[e, 0] * s[e, 1])
        y0 = d[e, 0] * d[e, 1]
        for i in range(2):
            v[i] = d[e, 0] * a[1, i] + d[e, 1] * a[0, i]
            for j in range(2):
                pm[i, j] = a[0, i] * a[1, j]
        for i in range(3):
            for j in range(3):
                ff[i, j] = f[i] * f[j]
        p = 0
        m[p] = 1.0  # n
        p += 1
        for i in range(2):  # A
            for j in range(2):
                m[p] = big_a[i, j]
                p += 1
        for i in range(2):  # b
            m[p] = b[i]
            p += 1
        for i in range(2):  # bb
            for j in range(2):
                m[p] = b[i] * b[j]
                p += 1
        for i in range(2):  # bA
            for j in range(2):
                for k in range(2):
                    m[p] = b[i] * big_a[j, k]
                    p += 1
        for i in range(2):  # AA
            for j in range(2):
                for k in range(2):
                    for q in range(2):
                        m[p] = big_a[i, j] * big_a[k, q]
                        p += 1
        m[p] = w[e, 0] * (d[e, 0] * d[e, 0]) + w[e, 1] * (d[e, 1] * d[e, 1])  # wdd
        p += 1
        for i in range(2):  # Aref
            m[p] = big_a[i, 0] * ref[e, 0] + big_a[i, 1] * ref[e, 1]
            p += 1
        m[p] = zbar
        m[p + 1] = zbar * zbar  # zbar2
        m[p + 2] = ref[e, 2]  # zref
        p += 3
        for i in range(2):  # bz
            m[p] = b[i] * zbar
            p += 1
        for i in range(2):  # Az
            for j in range(2):
                m[p] = big_a[i, j] * zbar
                p += 1
        m[p] = z12
        m[p + 1] = z12 * z12  # z12sq
        m[p + 2] = z12 * (z1 + z2)  # z12sum
        m[p + 3] = z1 * z1 + z2 * z2  # zsq
        p += 4
        for i in range(3):  # ff
            for j in range(3):
                m[p] = ff[i, j]
                p += 1
        for i in range(3):  # fy
            m[p] = f[i] * y0
            p += 1
        for i in range(3):  # fd
            for j in range(2):
                m[p] = f[i] * v[j]
                p += 1
        for i in range(3):  # faa
            for j in range(2):
                for k in range(2):
                    m[p] = f[i] * a[0, j] * a[1, k]
                    p += 1
        yy = y0 * y0
        m[p] = yy  # yy
        p += 1
        for i in range(2):  # yv
            m[p] = y0 * v[i]
            p += 1
        for i in range(2):  # vv
            for j in range(2):
                m[p] = v[i] * v[j]
                p += 1
        for i in range(2):  # yP
            for j in range(2):
                m[p] = y0 * pm[i, j]
                p += 1
        for i in range(2):  # vP
            for j in range(2):
                for k in range(2):
                    m[p] = v[i] * pm[j, k]
                    p += 1
        for i in range(2):  # PP
            for j in range(2):
                for k in range(2):
                    for q in range(2):
                        m[p] = pm[i, j] * pm[k, q]
                        p += 1
        for i in range(3):  # ffyy
            for j in range(3):
                m[p] = ff[i, j] * yy
                p += 1
        for i in range(3):  # ffyf
            for j in range(3):
                for k in range(3):
                    m[p] = ff[i, j] * (f[k] * y0)
                    p += 1
        for i in range(3):  # ffff
            for j in range(3):
                for k in range(3):
                    for q in range(3):
                        m[p] = ff[i, j] * f[k] * f[q]
                        p += 1
        row = slot[e]
        for k in range(p):
            out[row, 0, k] += m[k]
        if clean[e]:
            for k in range(p):
                out[row, 1, k] += m[k]
