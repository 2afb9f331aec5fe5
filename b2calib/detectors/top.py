"""TOP calibrations (being written: issue 5)."""

from __future__ import annotations

from b2calib.calibration import Calibration

__all__ = ["calibrations"]


def calibrations() -> list[Calibration]:
    """The TOP calibration declarations."""
    return []
