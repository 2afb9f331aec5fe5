"""Sparse solves of the ECL energy methods: a symmetric solve with the diagonal of the inverse
(the 5x5 linear system), and many right-hand sides through a sparse LU (the peak system's toys).

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
import scipy.sparse.linalg
from scipy.sparse.csgraph import reverse_cuthill_mckee

__all__ = ["lu_solve_many", "solve_with_variances"]

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


@numba.njit(cache=True, nogil=True)
def _triangular_solves(l_ptr, l_idx, l_val, u_ptr, u_idx, u_val, b):  # type: ignore[no-untyped-def,unused-ignore]
    """``b`` (n, k) overwritten by U^-1 L^-1 b, L and U in CSC (L with its diagonal): every
    element of the factors updates one contiguous row of the k right-hand sides."""
    n, k = b.shape
    for j in range(n):  # forward: L y = b, by columns
        d = 0.0
        for p in range(l_ptr[j], l_ptr[j + 1]):
            if l_idx[p] == j:
                d = l_val[p]
        for t in range(k):
            b[j, t] /= d
        for p in range(l_ptr[j], l_ptr[j + 1]):
            i = l_idx[p]
            if i > j:
                v = l_val[p]
                for t in range(k):
                    b[i, t] -= v * b[j, t]
    for j in range(n - 1, -1, -1):  # backward: U x = y, by columns
        d = 0.0
        for p in range(u_ptr[j], u_ptr[j + 1]):
            if u_idx[p] == j:
                d = u_val[p]
        for t in range(k):
            b[j, t] /= d
        for p in range(u_ptr[j], u_ptr[j + 1]):
            i = u_idx[p]
            if i < j:
                v = u_val[p]
                for t in range(k):
                    b[i, t] -= v * b[j, t]


def lu_solve_many(lu: scipy.sparse.linalg.SuperLU, b: F) -> F:
    """``lu.solve(b)`` for a matrix ``b`` of many right-hand sides (n, k), with the same factors.

    SuperLU's own solve of many right-hand sides runs at a fraction of the speed of the
    triangular solves written over rows of ``b`` (each factor element one contiguous update of
    the k columns); the results agree up to rounding (tests/test_ecl.py).
    """
    n = b.shape[0]
    low = scipy.sparse.csc_matrix(lu.L)
    up = scipy.sparse.csc_matrix(lu.U)
    work = np.empty_like(b, dtype=np.float64, order="C")
    work[lu.perm_r] = b  # Pr b
    _triangular_solves(
        low.indptr.astype(np.int64),
        low.indices.astype(np.int64),
        low.data,
        up.indptr.astype(np.int64),
        up.indices.astype(np.int64),
        up.data,
        work,
    )
    out = np.empty((n, b.shape[1]))
    out[:] = work[lu.perm_c]  # x = Pc y
    return out
