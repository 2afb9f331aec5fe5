"""Compiled histogram filling for the engine's hot path.

``hist.Hist.fill`` needs float coordinates; converting ~10^8 integer channel ids per bucket
costs more than the fill. These numba loops fill the integer storage of a regular-axes
histogram directly, with boost-histogram's under/overflow convention (NaN goes to overflow),
so the result is bit-identical to ``Hist.fill``.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

__all__ = ["fill_1d", "fill_2d"]


@numba.njit(cache=True, nogil=True)
def _bin(v: float, lo: float, hi: float, n: int) -> int:
    if v >= lo and v < hi:
        return int((v - lo) / (hi - lo) * n) + 1
    if v < lo:
        return 0
    return n + 1  # above, or NaN


@numba.njit(cache=True, nogil=True)
def _fill_2d(out, x, y, xlo, xhi, nx, ylo, yhi, ny):  # type: ignore[no-untyped-def,unused-ignore]
    for k in range(x.shape[0]):
        i = _bin(float(x[k]), xlo, xhi, nx)
        j = _bin(float(y[k]), ylo, yhi, ny)
        out[i, j] += 1


@numba.njit(cache=True, nogil=True)
def _fill_1d(out, x, lo, hi, n):  # type: ignore[no-untyped-def,unused-ignore]
    for k in range(x.shape[0]):
        out[_bin(float(x[k]), lo, hi, n)] += 1


def fill_2d(
    view: npt.NDArray[np.int64],
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    xaxis: tuple[int, float, float],
    yaxis: tuple[int, float, float],
) -> None:
    """Add (x, y) pairs to ``view``, the int64 storage of a 2-D histogram *with* flow bins,
    for regular axes given as (bins, low, high)."""
    nx, xlo, xhi = xaxis
    ny, ylo, yhi = yaxis
    _fill_2d(
        view,
        np.asarray(x),
        np.asarray(y),
        float(xlo),
        float(xhi),
        int(nx),
        float(ylo),
        float(yhi),
        int(ny),
    )


def fill_1d(view: npt.NDArray[np.int64], x: npt.ArrayLike, axis: tuple[int, float, float]) -> None:
    """Add values to ``view``, the int64 storage of a 1-D histogram with flow bins."""
    n, lo, hi = axis
    _fill_1d(view, np.asarray(x), float(lo), float(hi), int(n))
