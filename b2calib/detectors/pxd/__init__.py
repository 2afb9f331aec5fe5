"""The PXD: its calibrations and its monitoring (:mod:`b2calib.detectors.pxd.qa`).

=======================  =========================================================================
``pxd-hot-dead``         PXDMaskedPixelPar, PXDDeadPixelPar, PXDOccupancyInfoPar of collision runs
                         from the digits of every pixel (raw stage; :mod:`.masks`)
``pxd-hot-dead-cosmic``  the same for cosmic runs, run by run, forced through
``pxd-gain``             PXDGainMapPar: gain per (sensor, 4 u x 6 v bins), the median of the track
                         clusters' charge / expected charge (path length, current gain) x the
                         current gain (post-tracking; :mod:`.gain`)
=======================  =========================================================================

:func:`calibrations` imports the calibration modules when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from b2calib.calibration import Calibration

__all__ = ["calibrations"]


def calibrations() -> list[Calibration]:
    """The PXD calibration declarations, in the order basf2 runs them: the masks (raw stage)
    first, then the gain."""
    from b2calib.detectors.pxd import gain, masks

    return [
        masks.hot_dead_calibration(),
        masks.cosmic_masks_calibration(),
        gain.gain_calibration(),
    ]


def __dir__() -> list[str]:
    return __all__
