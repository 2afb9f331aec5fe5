"""Truncated means of many binned distributions at once (dE/dx wire gains).

The ``(alpha, beta)`` truncated mean keeps the values between the ``alpha`` and ``beta``
quantiles. From a histogram the quantiles are interpolated linearly inside their bins (entries
are taken as uniform within a bin). Its statistical uncertainty is the asymptotic one of a
trimmed mean: the influence function is ``(W(x) - E W) / (beta - alpha)`` with ``W`` the value
clipped to the two quantiles (winsorised), so ``var = Var(W) / (n (beta - alpha)^2)``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from b2calib.exceptions import ConfigError

__all__ = ["truncated_means"]

F = npt.NDArray[np.float64]


def _quantile(cum: F, edges: F, q: F) -> F:
    """Per-row value where the cumulative count (rows, bins+1 with a leading 0) reaches ``q``."""
    rows = np.arange(len(cum))
    k = np.array([np.searchsorted(c, v, side="left") for c, v in zip(cum, q, strict=True)])
    k = np.clip(k, 1, cum.shape[1] - 1)
    lo, hi = cum[rows, k - 1], cum[rows, k]
    frac = np.where(hi > lo, (q - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
    return edges[k - 1] + frac * (edges[k] - edges[k - 1])


def truncated_means(
    counts: npt.ArrayLike,
    edges: npt.ArrayLike,
    alpha: float = 0.05,
    beta: float = 0.75,
    above: npt.ArrayLike | None = None,
) -> tuple[F, F, F]:
    """Truncated mean, its uncertainty and the entries of every row of ``counts``.

    Parameters
    ----------
    counts
        (rows, bins) histogram contents.
    edges
        (bins + 1,) bin edges.
    alpha, beta
        Quantiles kept (0 <= alpha < beta <= 1).
    above
        (rows,) entries above the last edge (overflow): counted in the quantile ranks, never
        inside the kept range (``beta`` must fall inside the histogram).

    Returns
    -------
    mean, error, entries
        NaN mean and error for rows without entries.
    """
    c = np.asarray(counts, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    if c.ndim != 2 or e.shape != (c.shape[1] + 1,):
        raise ConfigError("truncated_means needs (rows, bins) counts and bins + 1 edges")
    if not 0.0 <= alpha < beta <= 1.0:
        raise ConfigError(f"need 0 <= alpha < beta <= 1, got {alpha}, {beta}")
    over = np.zeros(len(c)) if above is None else np.asarray(above, dtype=np.float64)
    n = c.sum(axis=1) + over
    cum = np.concatenate([np.zeros((len(c), 1)), np.cumsum(c, axis=1)], axis=1)
    qa = _quantile(cum, e, alpha * n)
    qb = _quantile(cum, e, beta * n)
    lo_e, hi_e = e[:-1][None, :], e[1:][None, :]
    # fraction of each bin inside [qa, qb] (uniform within the bin)
    a = np.clip(np.maximum(lo_e, qa[:, None]), lo_e, hi_e)
    b = np.clip(np.minimum(hi_e, qb[:, None]), lo_e, hi_e)
    width = hi_e - lo_e
    part = np.clip(b - a, 0.0, None) / width
    inside = c * part
    mid = 0.5 * (a + b)
    kept = inside.sum(axis=1)
    s1 = (inside * mid).sum(axis=1)
    s2 = (inside * (mid**2 + (b - a) ** 2 / 12.0)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / kept
        # winsorised moments: values below qa count as qa, above qb as qb
        nlo, nhi = alpha * n, (1.0 - beta) * n
        wm = (s1 + nlo * qa + nhi * qb) / n
        w2 = (s2 + nlo * qa**2 + nhi * qb**2) / n
        var_w = np.maximum(w2 - wm**2, 0.0)
        err = np.sqrt(var_w / (n * (beta - alpha) ** 2))
    bad = (n <= 0) | (kept <= 0)
    mean[bad] = np.nan
    err[bad] = np.nan
    return mean, err, n
