"""HoloViews views of a fit: data with errors, the model, its components, and the pulls.

The returned objects display in notebooks and embed in Panel apps; holoviews (the
``dashboards`` extra) is imported only when a plot is made.
"""

from __future__ import annotations

from typing import Any

import hist
import numpy as np

from b2calib._extras import require
from b2calib.exceptions import ConfigError
from b2calib.fit.fitting import FitResult
from b2calib.fit.models import Shape, Sum

__all__ = ["plot_fit"]


def plot_fit(h: hist.Hist, model: Shape | Sum, result: FitResult, *, points: int = 400) -> Any:
    """Layout of (data with Poisson errors + model curve + components) over (pulls).

    The model is drawn as expected entries per bin on the model's range.
    """
    hv = require("holoviews", "plot_fit")
    if not hv.Store.renderers:  # styling needs a backend; bokeh is what Panel apps use
        require("holoviews.plotting.bokeh", "plot_fit")

        hv.Store.set_current_backend("bokeh")
    if h.ndim != 1:
        raise ConfigError("plot_fit draws 1-D histograms")
    if model.range is None:
        raise ConfigError("the model needs its fit range (model.on(low, high))")
    low, high = model.range
    edges = h.axes[0].edges
    sel = (edges[:-1] >= low - 1e-12) & (edges[1:] <= high + 1e-12)
    centers = h.axes[0].centers[sel]
    width = np.diff(edges)[sel]
    counts = h.values()[sel].astype(np.float64)
    errors = np.sqrt(np.maximum(counts, 1.0))
    p = [result.values[name] for name in result.parameters]
    x = np.linspace(low, high, points)
    w = float(np.mean(width))
    if isinstance(model, Sum):
        scale = 1.0 if model.extended else float(counts.sum())
        curve = scale * model.density(x, *p) * w
        expected = scale * model.density(centers, *p) * width
        parts = [
            hv.Curve(
                (x, scale * model.component(name, x, *p) * w), "x", "entries", label=name
            ).opts(line_dash="dashed")
            for name, _ in model.components
        ]
    else:
        norm = (
            p[0]
            if result.parameters[0] == "n" and len(p) > len(model.params)
            else float(counts.sum())
        )
        shape_p = p[-len(model.params) :] if model.params else []
        curve = norm * model.pdf(x, *shape_p) * w
        expected = norm * model.pdf(centers, *shape_p) * width
        parts = []
    data = hv.ErrorBars((centers, counts, errors), "x", ["entries", "error"], label="data")
    dots = hv.Scatter((centers, counts), "x", "entries").opts(color="black", size=4)
    fitted = hv.Curve((x, curve), "x", "entries", label="fit").opts(color="firebrick")
    title = f"chi2/ndof = {result.chi2:.1f}/{result.ndof}" if np.isfinite(result.chi2) else ""
    top = hv.Overlay([data, dots, fitted, *parts]).opts(title=title)
    pulls = (counts - expected) / errors
    bottom = hv.Spikes((centers, pulls), "x", "pull").opts(height=150)
    return (top + bottom).cols(1)
