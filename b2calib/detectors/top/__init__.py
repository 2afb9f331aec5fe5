"""TOP calibrations: channel masks, channel T0, module T0 and common T0.

The TOP time of a photon is ``t = t_exp + channel T0 + module T0 + common T0 + TTS + chromatic``
with ``t_exp = collision time + time of flight + propagation time (pixel, z)``; the payloads hold
the offsets (``t = t_raw - channel - module - common``). They are calibrated in the order basf2
runs them:

=====================  ================  ==========================================================
``top-channel-mask``   TOPCalChannelMask  hits per channel; dead if ``hits <= mean / 5``, hot if
                                          ``hits > max(2 mean, mean + 6 rms)``, mean and rms from
                                          3-sigma clipping per board stack (128 pixels)
``top-channel-t0``     TOPCalChannelT0    per channel photon time minus expected time folded
                                          modulo the RF period, fitted with the photon time PDF
                                          (main + second TTS peak with the chromatic smearing,
                                          flat background); zero mean per module; new payload
                                          where a module's timing steps
``top-module-t0``      TOPCalModuleT0     Gaussian fits of the difference of the two muons' track
                                          times for every pair of slots, then a weighted linear
                                          least squares for 16 modules with sum = 0; new payload
                                          where a module's timing steps
``top-common-t0``      TOPCalCommonT0     photon times with channel and module T0 applied, folded
                                          modulo the RF period, photon PDF + constant fit per run
                                          (defined modulo the RF period: nearest the reference)
=====================  ================  ==========================================================

The modules:

================  ===============================================================================
``photons``       photons matched to tracks, the photon time PDF, folded times (peak, window,
                  module timing steps)
``collectors``    the collectors of the four calibrations
``channel_mask``  ``top-channel-mask``
``channel_t0``    ``top-channel-t0``
``module_t0``     ``top-module-t0``
``common_t0``     ``top-common-t0``
================  ===============================================================================

:func:`calibrations` imports them when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from b2calib.calibration import Calibration

__all__ = ["calibrations"]


def calibrations() -> list[Calibration]:
    """The TOP calibration declarations, in the order basf2 runs them."""
    from b2calib.detectors.top.channel_mask import channel_mask_calibration
    from b2calib.detectors.top.channel_t0 import channel_t0_calibration
    from b2calib.detectors.top.common_t0 import common_t0_calibration
    from b2calib.detectors.top.module_t0 import module_t0_calibration

    return [
        channel_mask_calibration(),
        channel_t0_calibration(),
        module_t0_calibration(),
        common_t0_calibration(),
    ]


def __dir__() -> list[str]:
    return __all__
