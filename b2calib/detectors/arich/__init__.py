"""ARICH calibrations: the channel mask; its monitoring is :mod:`b2calib.detectors.arich.qa`.

=======================  ================  ========================================================
``arich-channel-mask``   ARICHChannelMask  per channel, signal = hits in the in-time windows 1+2 of
                                           the hit bitmap minus those in the noise windows 0+3;
                                           masked below 0.3 x its HAPD ring's average signal or
                                           with signal/noise < 0.1 (dead, or hot when its noise
                                           exceeds its ring's); NOT_ENOUGH_DATA below 30 signal
                                           hits per channel in the outer ring
=======================  ================  ========================================================

The modules: ``channel_mask`` (``arich-channel-mask``) and ``qa``. :func:`calibrations`
imports them when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from b2calib.calibration import Calibration

__all__ = ["calibrations"]


def calibrations() -> list[Calibration]:
    """The ARICH calibration declarations."""
    from b2calib.detectors.arich.channel_mask import channel_mask_calibration

    return [channel_mask_calibration()]


def __dir__() -> list[str]:
    return __all__
