"""The PXD: its monitoring (:mod:`b2calib.detectors.pxd.qa`); its calibrations come later."""

from __future__ import annotations

__all__: list[str] = []


def __dir__() -> list[str]:
    return __all__
