"""Fit models: probability densities with named parameters, normalised on a fit range.

A :class:`Shape` is a density ``f(x, *params)``; :meth:`Shape.on` normalises it numerically on
``[low, high]`` (analytic where scipy gives the CDF). :class:`Sum` adds shapes, with yields
(extended) or fractions. Where scipy implements a distribution (normal, Crystal Ball, Landau,
Voigt profile, exponential) it is used; Novosibirsk, the two-sided Crystal Ball and the
bifurcated Gaussian follow their standard formulas.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.polynomial import chebyshev
from scipy import special, stats

from b2calib.exceptions import ConfigError

__all__ = [
    "Shape",
    "Sum",
    "bifurcated_gauss",
    "chebyshev_poly",
    "constant",
    "crystal_ball",
    "double_crystal_ball",
    "double_gauss",
    "exponential",
    "gauss",
    "landau_gauss",
    "novosibirsk",
    "polynomial",
    "voigt",
]

F = npt.NDArray[np.float64]
_GRID = 4001  # points of the numerical normalisation and CDF


@dataclass(frozen=True)
class Shape:
    """A density with named parameters, their default limits, and a normalisation range.

    ``density(x, *params)`` need not be normalised; :meth:`pdf` is, on ``range``.
    """

    name: str
    params: tuple[str, ...]
    density: Callable[..., F]
    limits: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    range: tuple[float, float] | None = None

    def on(self, low: float, high: float) -> Shape:
        """The same shape normalised on ``[low, high]``."""
        if not high > low:
            raise ConfigError(f"{self.name}: empty range [{low}, {high}]")
        return Shape(self.name, self.params, self.density, self.limits, (float(low), float(high)))

    def pdf(self, x: npt.ArrayLike, *p: float) -> F:
        """Density normalised to unit integral on :attr:`range`."""
        x = np.asarray(x, dtype=np.float64)
        if self.range is None:
            raise ConfigError(f"{self.name}: call .on(low, high) to set the fit range")
        grid = np.linspace(*self.range, _GRID)
        norm = _simpson(self.density(grid, *p), grid)
        return self.density(x, *p) / norm if norm > 0 else np.full_like(x, np.nan)

    def cdf(self, x: npt.ArrayLike, *p: float) -> F:
        """Normalised cumulative distribution on :attr:`range` (trapezoid on a fine grid)."""
        if self.range is None:
            raise ConfigError(f"{self.name}: call .on(low, high) to set the fit range")
        grid = np.linspace(*self.range, _GRID)
        y = self.density(grid, *p)
        cum = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(grid))])
        total = cum[-1]
        x = np.asarray(x, dtype=np.float64)
        return np.interp(x, grid, cum / total) if total > 0 else np.full_like(x, np.nan)

    def __call__(self, x: npt.ArrayLike, *p: float) -> F:
        return self.pdf(x, *p)


def _simpson(y: F, x: F) -> float:
    from scipy.integrate import simpson

    return float(simpson(y, x=x))


@dataclass(frozen=True)
class Sum:
    """A sum of shapes on one range.

    With ``extended=True`` each component has a yield ``n_<name>`` and :meth:`density` is the
    expected number of entries per unit x; otherwise the first ``k-1`` components have
    fractions ``f_<name>`` and :meth:`pdf` is normalised. Shape parameters are prefixed with the
    component name (``signal_mu``).
    """

    components: tuple[tuple[str, Shape], ...]
    extended: bool = True

    def __post_init__(self) -> None:
        ranges = {s.range for _, s in self.components}
        if len(ranges) != 1 or None in ranges:
            raise ConfigError("all components of a Sum need the same range (use .on(low, high))")
        names = [n for n, _ in self.components]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate component names {names}")

    @property
    def range(self) -> tuple[float, float]:
        """The common fit range."""
        r = self.components[0][1].range
        assert r is not None
        return r

    @property
    def params(self) -> tuple[str, ...]:
        """Yields (or fractions), then every component's parameters."""
        if self.extended:
            head = [f"n_{n}" for n, _ in self.components]
        else:
            head = [f"f_{n}" for n, _ in self.components[:-1]]
        return tuple(head + [f"{n}_{p}" for n, s in self.components for p in s.params])

    @property
    def limits(self) -> dict[str, tuple[float | None, float | None]]:
        """Default limits: yields >= 0, fractions in [0, 1], then the components'."""
        lim: dict[str, tuple[float | None, float | None]] = {}
        for p in self.params[: len(self.components) - (0 if self.extended else 1)]:
            lim[p] = (0.0, None) if self.extended else (0.0, 1.0)
        for n, s in self.components:
            for p, v in s.limits.items():
                lim[f"{n}_{p}"] = v
        return lim

    def _split(self, p: Sequence[float]) -> tuple[list[float], list[tuple[float, ...]]]:
        k = len(self.components) - (0 if self.extended else 1)
        weights, rest = list(p[:k]), list(p[k:])
        shapes = []
        for _, s in self.components:
            shapes.append(tuple(rest[: len(s.params)]))
            rest = rest[len(s.params) :]
        if not self.extended:
            weights.append(1.0 - sum(weights))
        return weights, shapes

    def component(self, name: str, x: npt.ArrayLike, *p: float) -> F:
        """One component's contribution (entries per unit x, or its weighted pdf)."""
        weights, shapes = self._split(p)
        for (n, s), w, sp in zip(self.components, weights, shapes, strict=True):
            if n == name:
                return w * s.pdf(x, *sp)
        raise KeyError(name)

    def _weighted(self, what: str, x: npt.ArrayLike, p: Sequence[float]) -> F:
        weights, shapes = self._split(p)
        xa = np.asarray(x, dtype=np.float64)
        total = np.zeros_like(xa)
        for (_, s), w, sp in zip(self.components, weights, shapes, strict=True):
            total = total + w * getattr(s, what)(xa, *sp)
        return total

    def density(self, x: npt.ArrayLike, *p: float) -> F:
        """Sum of the weighted, normalised components."""
        return self._weighted("pdf", x, p)

    pdf = density

    def cdf(self, x: npt.ArrayLike, *p: float) -> F:
        """Cumulative of :meth:`density` from the range's low edge (expected entries below x
        when extended, a normalised CDF otherwise)."""
        return self._weighted("cdf", x, p)

    def __call__(self, x: npt.ArrayLike, *p: float) -> F:
        return self.density(x, *p)


# ------------------------------------------------------------------------------------- shapes
def _gauss(x: F, mu: float, sigma: float) -> F:
    return stats.norm.pdf(x, mu, sigma)


def _double_gauss(x: F, mu: float, sigma1: float, sigma2: float, f1: float) -> F:
    return f1 * stats.norm.pdf(x, mu, sigma1) + (1 - f1) * stats.norm.pdf(x, mu, sigma2)


def _crystal_ball(x: F, beta: float, m: float, mu: float, sigma: float) -> F:
    return stats.crystalball.pdf(x, beta, m, loc=mu, scale=sigma)


def _cb_tail(t: F, beta: float, m: float) -> F:
    """Power-law tail (m/beta)^m exp(-beta^2/2) (m/beta - beta - t)^-m, in log space."""
    log_a = m * np.log(m / beta) - 0.5 * beta**2
    b = m / beta - beta
    return np.exp(log_a - m * np.log(np.maximum(b - t, 1e-300)))


def _double_crystal_ball(
    x: F, beta_l: float, m_l: float, beta_r: float, m_r: float, mu: float, sigma: float
) -> F:
    t = (np.asarray(x, dtype=np.float64) - mu) / sigma
    out = np.exp(-0.5 * t**2)
    left, right = t < -beta_l, t > beta_r  # tails evaluated only where they apply
    out[left] = _cb_tail(t[left], beta_l, m_l)
    out[right] = _cb_tail(-t[right], beta_r, m_r)
    return out


def _novosibirsk(x: F, peak: float, width: float, tail: float) -> F:
    """Novosibirsk function (BaBar/Belle form with the tail parameter ``tail``)."""
    x = np.asarray(x, dtype=np.float64)
    if abs(tail) < 1e-7:
        return np.exp(-0.5 * ((x - peak) / width) ** 2)
    s0 = 2.0 / 2.35482 * np.arcsinh(tail * 2.35482 / 2.0)
    arg = 1.0 - (x - peak) * tail / width
    with np.errstate(divide="ignore", invalid="ignore"):
        log_arg = np.where(arg > 1e-7, np.log(np.maximum(arg, 1e-300)), -np.inf)
        val = np.exp(-0.5 * (log_arg / s0) ** 2 - 0.5 * s0**2)
    return np.where(arg > 1e-7, val, 0.0)


def _bifurcated_gauss(x: F, mu: float, sigma_l: float, sigma_r: float) -> F:
    x = np.asarray(x, dtype=np.float64)
    s = np.where(x < mu, sigma_l, sigma_r)
    return np.exp(-0.5 * ((x - mu) / s) ** 2)


def _voigt(x: F, mu: float, sigma: float, gamma: float) -> F:
    return special.voigt_profile(np.asarray(x) - mu, sigma, gamma)


def _landau_gauss(x: F, mpv: float, eta: float, sigma: float) -> F:
    """Landau (scipy; ``mpv`` its most probable value, ``eta`` its width) convolved with a
    Gaussian of ``sigma``: an FFT convolution on a grid that depends only on the points asked
    for (so the result is smooth in the parameters), then linear interpolation."""
    from scipy.signal import fftconvolve

    x = np.asarray(x, dtype=np.float64)
    xmin, xmax = float(x.min(initial=0.0)), float(x.max(initial=1.0))
    span = max(xmax - xmin, 1e-9)
    grid = np.linspace(xmin - 0.5 * span, xmax + 0.5 * span, 4096)
    step = grid[1] - grid[0]
    shift = mpv + 0.22278298 * eta  # scipy's landau location is not the most probable value
    landau = stats.landau.pdf((grid - shift) / eta) / eta
    offsets = (np.arange(2 * grid.size - 1) - (grid.size - 1)) * step
    kernel = stats.norm.pdf(offsets, 0.0, sigma) * step
    conv = fftconvolve(landau, kernel, mode="same")
    return np.interp(x, grid, conv)


def _exponential(x: F, slope: float) -> F:
    return np.exp(slope * np.asarray(x, dtype=np.float64))


def _constant(x: F) -> F:
    return np.ones_like(np.asarray(x, dtype=np.float64))


gauss = Shape("gauss", ("mu", "sigma"), _gauss, {"sigma": (0.0, None)})
double_gauss = Shape(
    "double_gauss",
    ("mu", "sigma1", "sigma2", "f1"),
    _double_gauss,
    {"sigma1": (0.0, None), "sigma2": (0.0, None), "f1": (0.0, 1.0)},
)
crystal_ball = Shape(
    "crystal_ball",
    ("beta", "m", "mu", "sigma"),
    _crystal_ball,
    {"beta": (0.0, None), "m": (1.0, None), "sigma": (0.0, None)},
)
double_crystal_ball = Shape(
    "double_crystal_ball",
    ("beta_l", "m_l", "beta_r", "m_r", "mu", "sigma"),
    _double_crystal_ball,
    {
        "beta_l": (0.0, None),
        "m_l": (1.0, None),
        "beta_r": (0.0, None),
        "m_r": (1.0, None),
        "sigma": (0.0, None),
    },
)
novosibirsk = Shape("novosibirsk", ("peak", "width", "tail"), _novosibirsk, {"width": (0.0, None)})
bifurcated_gauss = Shape(
    "bifurcated_gauss",
    ("mu", "sigma_l", "sigma_r"),
    _bifurcated_gauss,
    {"sigma_l": (0.0, None), "sigma_r": (0.0, None)},
)
voigt = Shape(
    "voigt", ("mu", "sigma", "gamma"), _voigt, {"sigma": (0.0, None), "gamma": (0.0, None)}
)
landau_gauss = Shape(
    "landau_gauss",
    ("mpv", "eta", "sigma"),
    _landau_gauss,
    {"eta": (0.0, None), "sigma": (0.0, None)},
)
exponential = Shape("exponential", ("slope",), _exponential)
constant = Shape("constant", (), _constant)


def polynomial(degree: int) -> Shape:
    """Polynomial ``1 + c1 x + ... + cn x^n`` (the constant is fixed by the normalisation)."""
    if degree < 0:
        raise ConfigError("polynomial degree must be >= 0")

    def density(x: F, *c: float) -> F:
        xa = np.asarray(x, dtype=np.float64)
        return np.asarray(np.polynomial.polynomial.polyval(xa, [1.0, *c]), dtype=np.float64)

    return Shape(f"polynomial{degree}", tuple(f"c{i}" for i in range(1, degree + 1)), density)


def chebyshev_poly(degree: int, low: float, high: float) -> Shape:
    """Chebyshev series ``T0 + c1 T1 + ... + cn Tn`` of x mapped from [low, high] to [-1, 1]."""
    if degree < 0 or not high > low:
        raise ConfigError("chebyshev needs degree >= 0 and high > low")

    def density(x: F, *c: float) -> F:
        u = (2 * np.asarray(x, dtype=np.float64) - low - high) / (high - low)
        return np.asarray(chebyshev.chebval(u, [1.0, *c]), dtype=np.float64)

    return Shape(f"chebyshev{degree}", tuple(f"c{i}" for i in range(1, degree + 1)), density).on(
        low, high
    )


def describe(model: Shape | Sum | Callable[..., Any]) -> tuple[str, ...]:
    """Parameter names of a model (a Shape, a Sum, or a plain function ``f(x, a, b, ...)``)."""
    if isinstance(model, Shape | Sum):
        return tuple(model.params)
    from iminuit.util import describe as _describe

    return tuple(_describe(model)[1:])
