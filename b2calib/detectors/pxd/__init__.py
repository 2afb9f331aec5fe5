"""The PXD: its monitoring (:mod:`b2calib.detectors.pxd.qa`) and its calibrations.

=============  ==============  ===============================================================
``pxd-gain``   PXDGainMapPar   gain per (sensor, 4 u x 6 v bins): median of the track clusters'
                               charge / expected charge (path length, current gain) x the
                               current gain (:mod:`b2calib.detectors.pxd.gain`)
=============  ==============  ===============================================================

:func:`calibrations` imports them when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from b2calib.calibration import Calibration

__all__ = ["calibrations"]


def calibrations() -> list[Calibration]:
    """The PXD calibration declarations, in the order basf2 runs them."""
    from b2calib.detectors.pxd import gain

    return [gain.gain_calibration()]


def __dir__() -> list[str]:
    return __all__
