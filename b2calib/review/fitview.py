"""The drill-down of a payload channel: the histogram it was fitted from, with the model, its
components and the pulls, from the diagnostics stored with its calibration job
(:mod:`b2calib.calibration.fitview`, where each calibration declares its views); re-exported
here with the other review views. Its errors are :class:`~b2calib.exceptions.ReviewError` s
(:class:`~b2calib.calibration.fitview.FitViewError`)."""

from __future__ import annotations

from b2calib.calibration.fitview import FitView, FitViewError, fit_view

__all__ = ["FitView", "FitViewError", "fit_view"]


def __dir__() -> list[str]:
    return __all__
