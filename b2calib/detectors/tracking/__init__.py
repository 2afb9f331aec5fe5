"""The tracking, a system: the monitoring of the impact-parameter resolutions
(:mod:`b2calib.detectors.tracking.qa`)."""

from __future__ import annotations

__all__: list[str] = []


def __dir__() -> list[str]:
    return __all__
