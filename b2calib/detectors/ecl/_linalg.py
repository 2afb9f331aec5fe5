"""Sparse solves of the ECL energy methods: a symmetric solve with the diagonal of the inverse
(the 5x5 linear system), and many right-hand sides through a sparse LU (the peak system's toys).

The normal equations ``Q g = R`` of the Bhabha 5x5 method couple crystals that share a 5x5
window, i.e. crystals at most 4 rings and 4 phi columns apart: ``Q`` is sparse and, in a
bandwidth-reducing order, banded. It is factorised by a banded Cholesky (LAPACK ``pbtrf``) and the
diagonal of ``Q^-1`` (the variances of the constants) comes from the Takahashi recurrence over
the band, by blocks of columns in matrix products, never forming a dense 8736 x 8736 inverse.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
from scipy.sparse.csgraph import reverse_cuthill_mckee
from threadpoolctl import threadpool_limits

__all__ = ["lu_solve_many", "solve_with_variances"]

F = npt.NDArray[np.float64]


#: Columns per block of :func:`_inverse_diagonal`: its matrix products are (bandwidth x
#: bandwidth) x (bandwidth x block), past the size where BLAS reaches its speed.
INVERSE_BLOCK = 128


def _inverse_diagonal(chol: F, block: int = INVERSE_BLOCK) -> F:
    """Diagonal of ``(L L^T)^-1`` from the lower band ``chol[k, j] = L[j + k, j]`` (bandwidth
    ``b``): the Takahashi recurrence by blocks of columns, from the last block to the first.

    With ``J`` a block of columns and ``K`` the ``b`` rows after it, ``Z = (L L^T)^-1`` obeys
    ``Z[K, J] = -Z[K, K] X`` and ``Z[J, J] = L_JJ^-T L_JJ^-1 - X^T Z[K, J]`` with
    ``X = L[K, J] L_JJ^-1``: the ``b x b`` window of ``Z`` after the block is all it needs, and
    the window after the previous block is made of ``Z[J, J]``, ``Z[K, J]`` and the old one.
    The flops are those of the column-by-column recurrence (``n b^2``), in matrix products.
    """
    b = chol.shape[0] - 1
    n = chol.shape[1]
    diag = np.empty(n)
    window = np.zeros((0, 0))  # Z over the rows [end of the block, + b)
    for j0 in range(((n - 1) // block) * block, -1, -block):
        j1 = min(j0 + block, n)
        m = j1 - j0
        kk = min(b, n - j1)
        # L[J, J] and L[K, J] as dense blocks: element (i, j) of L is chol[i - j, j]
        cols = np.arange(j0, j1)
        d = np.arange(j0, j1 + kk)[:, None] - cols
        dense = np.where((d >= 0) & (d <= b), chol[np.clip(d, 0, b), cols], 0.0)
        inv_jj = scipy.linalg.solve_triangular(dense[:m], np.eye(m), lower=True)
        x = dense[m:] @ inv_jj
        z_kj = -(window[:kk, :kk] @ x)
        z_jj = inv_jj.T @ inv_jj - x.T @ z_kj
        z_jj = 0.5 * (z_jj + z_jj.T)
        diag[j0:j1] = np.diagonal(z_jj)
        size = min(b, n - j0)
        p = min(m, size)
        r = size - p
        new = np.empty((size, size))
        new[:p, :p] = z_jj[:p, :p]
        new[p:, :p] = z_kj[:r, :p]
        new[:p, p:] = z_kj[:r, :p].T
        new[p:, p:] = window[:r, :r]
        window = new
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
    # one BLAS thread: the solve runs beside the peak fits, and OpenBLAS's threads on a busy
    # machine wait for each other (the Cholesky took 5.7 s with two against 0.3 s with one)
    with threadpool_limits(limits=1, user_api="blas"):
        chol = scipy.linalg.cholesky_banded(ab, lower=True, check_finite=True)
        x_perm = scipy.linalg.cho_solve_banded((chol, True), np.asarray(r, dtype=np.float64)[perm])
        var_perm = _inverse_diagonal(chol)
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
