"""Fits built on iminuit: models, fits of histograms / unbinned data / (x, y) points, and the
batched per-channel fits calibrations run over thousands of channels.

``import b2calib.fit`` (and ``b2calib.fit.histstats``, which the data-quality monitoring uses)
loads neither iminuit, scipy.stats nor a plotting stack: each name below is imported from its
module on first use (:mod:`b2calib._lazy`), and :func:`plot_fit` imports holoviews only when it
draws.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from b2calib._lazy import attach

if TYPE_CHECKING:
    from b2calib.fit.batched import ChannelFits, fit_channels
    from b2calib.fit.fitting import FitResult, fit_hist, fit_unbinned, least_squares
    from b2calib.fit.models import (
        Shape,
        Sum,
        bifurcated_gauss,
        chebyshev_poly,
        constant,
        crystal_ball,
        double_crystal_ball,
        double_gauss,
        exponential,
        gauss,
        landau_gauss,
        novosibirsk,
        polynomial,
        voigt,
    )
    from b2calib.fit.plot import plot_fit

__all__ = [
    "ChannelFits",
    "FitResult",
    "Shape",
    "Sum",
    "bifurcated_gauss",
    "chebyshev_poly",
    "constant",
    "crystal_ball",
    "double_crystal_ball",
    "double_gauss",
    "exponential",
    "fit_channels",
    "fit_hist",
    "fit_unbinned",
    "gauss",
    "landau_gauss",
    "least_squares",
    "novosibirsk",
    "plot_fit",
    "polynomial",
    "voigt",
]

__getattr__ = attach(
    __name__,
    {
        "batched": ["ChannelFits", "fit_channels"],
        "fitting": ["FitResult", "fit_hist", "fit_unbinned", "least_squares"],
        "models": [
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
        ],
        "plot": ["plot_fit"],
    },
)


def __dir__() -> list[str]:
    return __all__
