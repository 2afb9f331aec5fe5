"""The beams, a system: the monitoring of the collision energy and the luminosity
(:mod:`b2calib.detectors.beam.qa`)."""

from __future__ import annotations

__all__: list[str] = []


def __dir__() -> list[str]:
    return __all__
