"""PXD calibrations and monitoring.

=======================  =========================================================================
``pxd-hot-dead``         PXDMaskedPixelPar, PXDDeadPixelPar, PXDOccupancyInfoPar of collision runs
                         from the digits of every pixel (raw stage; :mod:`.masks`)
``pxd-hot-dead-cosmic``  the same for cosmic runs, run by run, forced through
=======================  =========================================================================

Monitoring: :mod:`b2calib.detectors.pxd.qa`. :func:`calibrations` imports the calibration
modules when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from b2calib.calibration import Calibration

__all__ = ["calibrations"]


def calibrations() -> list[Calibration]:
    """The PXD calibration declarations: the masks (raw stage) first."""
    from b2calib.detectors.pxd import masks

    return [masks.hot_dead_calibration(), masks.cosmic_masks_calibration()]


def __dir__() -> list[str]:
    return __all__
