"""Sparse symmetric solve with the diagonal of the inverse, for the ECL 5x5 linear system.

The normal equations ``Q g = R`` of the Bhabha 5x5 method couple crystals that share a 5x5
window, i.e. crystals at most 4 rings and 4 phi columns apart: ``Q`` is sparse and, in a
bandwidth-reducing order, banded. It is factorised by a banded Cholesky (LAPACK ``pbtrf``) and the
diagonal of ``Q^-1`` (the variances of the constants) comes from the Takahashi recurrence over
the band, never forming a dense 8736 x 8736 inverse.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse
from scipy.sparse.csgraph import reverse_cuthill_mckee

__all__ = ["solve_with_variances"]

F = npt.NDArray[np.float64]


@numba.njit(cache=True, nogil=True, fastmath=False)
def _inverse_diagonal(ab):  # type: ignore[no-untyped-def,unused-ignore]
    """Diagonal of (L L^T)^-1 from the lower band ``ab[k, j] = L[j + k, j]`` (Takahashi).

    Columns of Z = (L L^T)^-1 are computed from the last to the first; only the (bw+1)^2 window
    of Z that the recurrence needs is kept, in a circular buffer, so the inner loops run over
    contiguous memory.
    """
    bw = ab.shape[0] - 1
    n = ab.shape[1]
    m = bw + 1
    w = np.zeros((m, m))  # w[a % m, b % m] = Z[a, b] for a, b in [j, j + bw]
    acc = np.zeros(m)
    diag = np.zeros(n)
    for j in range(n - 1, -1, -1):
        ljj = ab[0, j]
        kmax = min(bw, n - 1 - j)
        base = (j + 1) % m
        len1 = min(kmax, m - base)
        for di in range(kmax):
            acc[di] = 0.0
        for dk in range(1, kmax + 1):
            lk = ab[dk, j]
            if lk == 0.0:
                continue
            r = (j + dk) % m
            for t in range(len1):
                acc[t] += lk * w[r, base + t]
            for t in range(kmax - len1):
                acc[len1 + t] += lk * w[r, t]
        jm = j % m
        s = 0.0
        for di in range(1, kmax + 1):
            z = -acc[di - 1] / ljj
            c = (j + di) % m
            w[jm, c] = z
            w[c, jm] = z
            s += ab[di, j] * z
        zjj = (1.0 / ljj - s) / ljj
        w[jm, jm] = zjj
        diag[j] = zjj
    return diag


def _bandwidth(m: scipy.sparse.coo_matrix) -> int:
    return int(np.abs(m.row - m.col).max(initial=0))


def solve_with_variances(q: scipy.sparse.spmatrix, r: F) -> tuple[F, F, int]:
    """Solve ``q x = r`` for a sparse symmetric positive-definite ``q``.

    Returns
    -------
    x, var, bandwidth
        The solution, the diagonal of ``q^-1`` and the bandwidth used.

    Raises
    ------
    numpy.linalg.LinAlgError
        When ``q`` is not positive definite.
    """
    csr = scipy.sparse.csr_matrix(q)
    n = csr.shape[0]
    natural = csr.tocoo()
    perm = reverse_cuthill_mckee(csr, symmetric_mode=True)
    permuted = csr[perm][:, perm].tocoo()
    if _bandwidth(permuted) >= _bandwidth(natural):
        perm = np.arange(n)
        permuted = natural
    bw = _bandwidth(permuted)
    ab = np.zeros((bw + 1, n))
    lower = permuted.row >= permuted.col
    rows, cols = permuted.row[lower], permuted.col[lower]
    np.add.at(ab, (rows - cols, cols), permuted.data[lower])
    chol = scipy.linalg.cholesky_banded(ab, lower=True, check_finite=True)
    x_perm = scipy.linalg.cho_solve_banded((chol, True), np.asarray(r, dtype=np.float64)[perm])
    var_perm = _inverse_diagonal(np.ascontiguousarray(chol))
    x = np.empty(n)
    var = np.empty(n)
    x[perm] = x_perm
    var[perm] = var_perm
    return x, var, bw
