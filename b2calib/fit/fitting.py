"""Fits with iminuit: of a ``hist.Hist``, of unbinned data, and of any model to (x, y, yerr).

Every fit returns a :class:`FitResult`; a fit that did not converge has ``valid=False`` and a
message saying why, and nothing downstream may treat its values as constants without checking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import hist
import numpy as np
import numpy.typing as npt
from iminuit import Minuit, cost
from scipy import stats

from b2calib.exceptions import ConfigError
from b2calib.fit.models import Shape, Sum, describe

__all__ = ["FitResult", "fit_hist", "fit_unbinned", "least_squares"]

Model = Shape | Sum | Callable[..., Any]


@dataclass
class FitResult:
    """Outcome of one fit.

    ``chi2`` is the minimum of the cost where it is chi2-distributed (least squares, binned
    likelihoods in iminuit's Baker-Cousins form), else nan; ``pvalue`` follows from ``chi2`` and
    ``ndof``.
    """

    parameters: tuple[str, ...]
    values: dict[str, float]
    errors: dict[str, float]
    covariance: npt.NDArray[np.float64]
    valid: bool
    edm: float
    nfcn: int
    chi2: float
    ndof: int
    pvalue: float
    message: str
    minuit: Minuit | None = field(default=None, repr=False, compare=False)

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    @classmethod
    def not_enough_data(cls, params: Sequence[str], message: str) -> FitResult:
        """A result for a fit that was not attempted."""
        n = len(params)
        nan = float("nan")
        return cls(
            tuple(params),
            dict.fromkeys(params, nan),
            dict.fromkeys(params, nan),
            np.full((n, n), nan),
            False,
            nan,
            0,
            nan,
            0,
            nan,
            f"not enough data: {message}",
        )


def _status(m: Minuit) -> tuple[bool, str]:
    fmin = m.fmin
    if fmin is None:
        return False, "not run"
    problems = []
    if fmin.has_reached_call_limit:
        problems.append("call limit reached")
    if fmin.is_above_max_edm:
        problems.append(f"above max EDM ({fmin.edm:.2g} > {fmin.edm_goal:.2g})")
    if not fmin.has_valid_parameters and not problems:
        problems.append("minimum not valid")
    if fmin.has_parameters_at_limit:
        problems.append("a parameter is at its limit")
    if not fmin.has_accurate_covar:
        problems.append("covariance not accurate")
    if fmin.hesse_failed:
        problems.append("Hesse failed")
    valid = bool(fmin.is_valid and fmin.has_accurate_covar)
    return valid, "; ".join(problems) if problems else "OK"


def _minimize(
    c: Any,
    params: Sequence[str],
    start: Mapping[str, float],
    limits: Mapping[str, tuple[float | None, float | None]],
    fixed: Sequence[str],
    ncall: int | None,
    tol: float = 0.1,
) -> Minuit:
    missing = [p for p in params if p not in start]
    if missing:
        raise ConfigError(f"no start value for {missing}")
    m = Minuit(c, *[float(start[p]) for p in params], name=list(params))
    for p, lim in limits.items():
        if p in params:
            m.limits[p] = lim
    for p in fixed:
        m.fixed[p] = True
    m.tol = tol
    m.migrad(ncall=ncall)
    if m.valid:
        m.hesse()
    return m


def _result(
    m: Minuit, params: Sequence[str], chi2: float, ndof: int, scale: float = 1.0
) -> FitResult:
    valid, message = _status(m)
    cov = (
        np.array(m.covariance, dtype=np.float64) * scale
        if m.covariance is not None
        else (np.full((len(params), len(params)), np.nan))
    )
    errors = {p: float(e) * np.sqrt(scale) for p, e in zip(params, m.errors, strict=True)}
    pvalue = float(stats.chi2.sf(chi2, ndof)) if ndof > 0 and np.isfinite(chi2) else float("nan")
    return FitResult(
        tuple(params),
        {p: float(v) for p, v in zip(params, m.values, strict=True)},
        errors,
        cov,
        valid,
        float(m.fmin.edm) if m.fmin else float("nan"),
        int(m.nfcn),
        float(chi2),
        int(ndof),
        pvalue,
        message,
        m,
    )


def _guess(
    params: Sequence[str], centers: npt.NDArray[np.float64], weights: npt.NDArray[np.float64]
) -> dict[str, float]:
    """Start values from the data: yields share the entries, positions at the highest bin,
    widths from the standard deviation; known shape parameters by name (with or without a
    ``<component>_`` prefix), anything else 0."""
    total = float(weights.sum())
    mean = float(np.average(centers, weights=weights)) if total > 0 else float(centers.mean())
    std = float(np.sqrt(np.average((centers - mean) ** 2, weights=weights))) if total > 0 else 1.0
    std = std or float(np.ptp(centers)) / 10 or 1.0
    peak = float(centers[np.argmax(weights)]) if total > 0 else mean
    by_name = {
        "mu": peak,
        "peak": peak,
        "mpv": peak,
        "sigma": std,
        "width": std,
        "eta": std,
        "gamma": std,
        "sigma1": std,
        "sigma_l": std,
        "sigma_r": std,
        "sigma2": 2 * std,
        "beta": 1.5,
        "beta_l": 1.5,
        "beta_r": 1.5,
        "m": 3.0,
        "m_l": 3.0,
        "m_r": 3.0,
        "f1": 0.5,
    }
    n_yields = sum(1 for p in params if p.startswith("n_")) or 1
    guess: dict[str, float] = {}
    for p in params:
        if p.startswith("n_"):
            guess[p] = total / n_yields
        elif p.startswith("f_"):
            guess[p] = 0.5
        else:
            names = [k for k in by_name if p == k or p.endswith("_" + k)]
            guess[p] = by_name[max(names, key=len)] if names else 0.0
    return guess


def fit_hist(
    h: hist.Hist,
    model: Shape | Sum,
    *,
    start: Mapping[str, float] | None = None,
    limits: Mapping[str, tuple[float | None, float | None]] | None = None,
    fixed: Sequence[str] = (),
    method: str = "nll",
    ncall: int | None = None,
) -> FitResult:
    """Fit a 1-D histogram in the model's range.

    ``method="nll"``: binned likelihood (iminuit ``ExtendedBinnedNLL`` for an extended
    :class:`Sum`, ``BinnedNLL`` for a :class:`Shape`); ``"chi2"``: least squares on the bin
    contents with Poisson errors (empty bins get error 1), the shape scaled by a yield ``n``.
    Start values not given are guessed from the histogram.
    """
    if h.ndim != 1:
        raise ConfigError("fit_hist fits 1-D histograms; slice the channel first")
    if model.range is None:
        if not isinstance(model, Shape):
            raise ConfigError("set the fit range of the components with .on(low, high)")
        model = model.on(h.axes[0].edges[0], h.axes[0].edges[-1])
    assert model.range is not None
    low, high = model.range
    edges = h.axes[0].edges
    sel = (edges[:-1] >= low - 1e-12) & (edges[1:] <= high + 1e-12)
    if not sel.any():
        raise ConfigError(f"no bin of the histogram lies in the fit range [{low}, {high}]")
    n = h.values()[sel].astype(np.float64)
    xe = edges[np.r_[np.flatnonzero(sel), np.flatnonzero(sel)[-1] + 1]]
    centers = 0.5 * (xe[1:] + xe[:-1])
    params = list(describe(model))
    if method == "chi2" and isinstance(model, Shape):
        params = ["n", *params]
    lims = {**model.limits, **(limits or {})}
    if method == "chi2" and isinstance(model, Shape):
        lims["n"] = (0.0, None)
    guess = _guess(params, centers, n)
    if "n" in params:
        guess["n"] = float(n.sum())
    guess.update(start or {})
    nfree = len(params) - len(fixed)
    if np.count_nonzero(n) < nfree or n.sum() < nfree:
        return FitResult.not_enough_data(
            params,
            f"{int(n.sum())} entries in {np.count_nonzero(n)} "
            f"non-empty bins for {nfree} free parameters",
        )
    if method == "nll":
        # the models' CDFs at the bin edges: exact bin integrals at the cost of one grid
        if isinstance(model, Sum) and model.extended:
            c: Any = cost.ExtendedBinnedNLL(n, xe, model.cdf)
        else:
            c = cost.BinnedNLL(n, xe, model.cdf)
    elif method == "chi2":
        shape_model, scale = model, 1.0
        if isinstance(model, Sum) and not model.extended:
            scale = float(n.sum())

        def expected_shape(x: Any, norm: float, *p: float) -> Any:
            return norm * np.diff(shape_model.cdf(xe, *p))

        def expected_sum(x: Any, *p: float) -> Any:
            return scale * np.diff(shape_model.cdf(xe, *p))

        f = expected_shape if isinstance(model, Shape) else expected_sum
        c = cost.LeastSquares(centers, n, np.sqrt(np.maximum(n, 1.0)), f)
    else:
        raise ConfigError(f"method must be 'nll' or 'chi2', not {method!r}")
    m = _minimize(c, params, guess, lims, fixed, ncall)
    ndof = len(n) - nfree
    return _result(m, params, float(m.fval), ndof)


def fit_unbinned(
    data: npt.ArrayLike,
    model: Shape | Sum,
    *,
    start: Mapping[str, float] | None = None,
    limits: Mapping[str, tuple[float | None, float | None]] | None = None,
    fixed: Sequence[str] = (),
    ncall: int | None = None,
) -> FitResult:
    """Unbinned maximum-likelihood fit of a sample in the model's range (extended for an
    extended :class:`Sum`). ``chi2`` and ``pvalue`` are nan: an unbinned likelihood has no
    goodness-of-fit by itself."""
    x = np.asarray(data, dtype=np.float64)
    if model.range is None:
        raise ConfigError("set the fit range with model.on(low, high)")
    low, high = model.range
    x = x[(x >= low) & (x <= high)]
    params = list(describe(model))
    nfree = len(params) - len(fixed)
    if len(x) <= nfree:
        return FitResult.not_enough_data(params, f"{len(x)} entries for {nfree} free parameters")
    counts, edges = np.histogram(x, bins=50, range=(low, high))
    guess = _guess(params, 0.5 * (edges[1:] + edges[:-1]), counts.astype(np.float64))
    guess.update(start or {})
    if isinstance(model, Sum) and model.extended:

        def dens(xx: Any, *p: float) -> tuple[float, Any]:
            weights, _ = model._split(p)
            return float(sum(weights)), model.density(xx, *p)

        c: Any = cost.ExtendedUnbinnedNLL(x, dens)
    else:
        c = cost.UnbinnedNLL(x, model.pdf)
    m = _minimize(c, params, guess, {**model.limits, **(limits or {})}, fixed, ncall)
    return _result(m, params, float("nan"), len(x) - nfree)


def least_squares(
    model: Callable[..., Any],
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    yerr: npt.ArrayLike | None = None,
    *,
    start: Mapping[str, float] | Sequence[float],
    limits: Mapping[str, tuple[float | None, float | None]] | None = None,
    fixed: Sequence[str] = (),
    ncall: int | None = None,
    tol: float = 1e-4,
) -> FitResult:
    """Least-squares fit of ``model(x, *params)`` to (x, y, yerr) with iminuit's LeastSquares.

    Without ``yerr`` every point gets unit weight and the parameter errors and covariance are
    scaled by chi2/ndof (the residual variance), as is standard least-squares practice; then
    ``chi2`` is the residual sum of squares and ``pvalue`` is nan. ``tol`` is iminuit's
    tolerance (EDM goal = 0.002 tol); the default is tighter than iminuit's 0.1 because
    least-squares problems are often badly conditioned.
    """
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    params = list(describe(model))
    if not isinstance(start, Mapping):
        start = dict(zip(params, start, strict=True))
    nfree = len(params) - len(fixed)
    ndof = len(xa) - nfree
    if ndof <= 0:
        return FitResult.not_enough_data(params, f"{len(xa)} points for {nfree} free parameters")
    err = np.ones_like(ya) if yerr is None else np.asarray(yerr, dtype=np.float64)
    if np.any(err <= 0):
        raise ConfigError("yerr must be positive")
    c = cost.LeastSquares(xa, ya, err, model)
    m = _minimize(c, params, start, limits or {}, fixed, ncall, tol)
    chi2 = float(m.fval)
    if yerr is None:
        res = _result(m, params, chi2, ndof, scale=chi2 / ndof)
        res.pvalue = float("nan")
        res.message += " (no yerr: errors scaled by sqrt(chi2/ndof))"
        return res
    return _result(m, params, chi2, ndof)
