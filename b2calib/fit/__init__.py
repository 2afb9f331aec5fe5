"""Fits built on iminuit: models, fits of histograms / unbinned data / (x, y) points, and the
batched per-channel fits calibrations run over thousands of channels."""

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
