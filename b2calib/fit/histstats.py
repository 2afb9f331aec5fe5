"""Statistics of filled histograms: means of ``Mean``-storage histograms, per-group means,
quantiles and sigma68.

Collectors fill histograms and the calibrations and the monitoring compute their numbers from
them (never from arrays kept in memory); these are the summaries they share.

* ``Mean`` storage (``hist.storage.Mean``) keeps, per bin, the count, the mean and the sum of
  squared deviations: exact and mergeable with ``+``. :func:`mean_view` reads them as arrays,
  :func:`mean_sums` as sums (to pool bins), :func:`mean_of` as the mean of a one-bin histogram
  with its error.
* :func:`group_means`: the mean of the values axis (the last) of a ``(groups, values)`` count
  histogram per group, with an error from the spread of all groups together.
* :func:`quantile` and :func:`sigma68` of a 1-D count histogram, linear within a bin. sigma68
  is half the width of the central 68.27 % interval (sigma for a Gaussian); its error is the
  asymptotic (Bahadur) variance of the two sample quantiles, ``[p1 q1 / f1^2 + p2 q2 / f2^2 -
  2 p1 (1 - p2) / (f1 f2)] / (4 n)`` with ``q = 1 - p``, the densities ``f`` at the quantiles
  taken from the slope of the histogram's quantile function between ``p - 0.05`` and
  ``p + 0.05``.
"""

from __future__ import annotations

import math
from typing import Any

import hist
import numpy as np
import numpy.typing as npt

__all__ = ["group_means", "mean_of", "mean_sums", "mean_view", "quantile", "sigma68"]

F = npt.NDArray[np.float64]

_P16, _P84 = 0.5 - 0.682689492 / 2, 0.5 + 0.682689492 / 2


def mean_view(h: hist.Hist) -> tuple[F, F, F]:
    """(count, mean, sample variance) per bin of a ``Mean``-storage histogram."""
    v: Any = h.view()
    return (
        np.asarray(v["count"], dtype=np.float64),
        np.asarray(v["value"], dtype=np.float64),
        np.asarray(v.variance, dtype=np.float64),
    )


def mean_sums(h: hist.Hist) -> tuple[F, F, F]:
    """(sum, sum of squares, count) per bin of a ``Mean``-storage histogram, for pooling
    bins."""
    n, mean, var = mean_view(h)
    return n * mean, n * (np.nan_to_num(var) * np.maximum(n - 1, 0) / np.maximum(n, 1) + mean**2), n


def mean_of(h: hist.Hist) -> tuple[float, float, float]:
    """(mean, error of the mean, count) of a one-bin ``Mean``-storage histogram; the error is
    NaN below two entries, the mean too when it is empty."""
    v = h.view()[0]
    n = float(v["count"])
    if n < 1:
        return math.nan, math.nan, 0.0
    if n < 2:
        return float(v["value"]), math.nan, n
    var = float(v["_sum_of_deltas_squared"]) / (n - 1) / n
    return float(v["value"]), math.sqrt(var), n


def group_means(h: hist.Hist) -> tuple[F, F]:
    """Mean along the last axis of a (groups, values) histogram, and its error from the RMS of
    all groups together (a few entries per group give no usable RMS of their own); NaN for an
    empty group."""
    counts = h.values()
    x = h.axes[-1].centers
    n = counts.sum(axis=-1)
    total = counts.sum(axis=0)
    n_all = total.sum()
    if n_all < 2:
        return np.full(n.shape, np.nan), np.full(n.shape, np.nan)
    mean_all = (total * x).sum() / n_all
    rms = float(np.sqrt((total * (x - mean_all) ** 2).sum() / n_all))
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(n > 0, (counts * x).sum(axis=-1) / n, np.nan)
        err = np.where(n > 0, rms / np.sqrt(n), np.nan)
    return m, err


def quantile(h: hist.Hist, p: float) -> float:
    """The ``p`` quantile of a 1-D histogram (in-range entries, linear within a bin)."""
    c = np.asarray(h.values(), dtype=np.float64)
    edges = h.axes[0].edges
    cum = np.concatenate([[0.0], np.cumsum(c)])
    target = p * cum[-1]
    i = int(np.searchsorted(cum, target, side="left"))
    i = min(max(i, 1), len(c))
    lo, hi = cum[i - 1], cum[i]
    frac = 0.0 if hi == lo else (target - lo) / (hi - lo)
    return float(edges[i - 1] + frac * (edges[i] - edges[i - 1]))


def sigma68(h: hist.Hist, min_entries: int = 20) -> tuple[float, float]:
    """Half-width of the central 68.27 % interval of a 1-D histogram, and its error.

    The error is the asymptotic variance of the two sample quantiles (see the module
    docstring). Fewer than ``min_entries`` in-range entries: (nan, nan).
    """
    n = float(np.asarray(h.values()).sum())
    if n < min_entries:
        return math.nan, math.nan
    q1, q2 = quantile(h, _P16), quantile(h, _P84)
    dq1 = (quantile(h, _P16 + 0.05) - quantile(h, _P16 - 0.05)) / 0.1  # 1 / f1
    dq2 = (quantile(h, _P84 + 0.05) - quantile(h, _P84 - 0.05)) / 0.1
    var = (
        _P16 * (1 - _P16) * dq1**2 + _P84 * (1 - _P84) * dq2**2 - 2 * _P16 * (1 - _P84) * dq1 * dq2
    ) / (4.0 * n)
    return 0.5 * (q2 - q1), math.sqrt(max(var, 0.0))


def __dir__() -> list[str]:
    return __all__
