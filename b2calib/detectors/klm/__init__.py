"""The KLM: its monitoring (:mod:`b2calib.detectors.klm.qa`) and its calibrations.

==========================  =====================  =============================================
``klm-strip-efficiency``    KLMStripEfficiency     matched digits / extrapolated crossings per
                                                   strip plane (basf2 collector cuts), Jeffreys
                                                   interval; run by run, low-statistics runs
                                                   merged into a neighbouring good run
``klm-time``                KLMTimeConstants,      per-channel time shift, propagation delay per
                            KLMTimeCableDelay      strip type from time vs distance, then the
                                                   cable delay per channel
==========================  =====================  =============================================

The modules:

====================  ==========================================================================
``collectors``        crossings matched to digits; the collectors of both calibrations
``strip_efficiency``  ``klm-strip-efficiency`` and its IoV strategy
``time``              ``klm-time``
``qa``                monitoring
====================  ==========================================================================

:func:`calibrations` imports them when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from b2calib.calibration import Calibration

__all__ = ["calibrations"]


def calibrations() -> list[Calibration]:
    """The KLM calibration declarations."""
    from b2calib.detectors.klm.strip_efficiency import strip_efficiency_calibration
    from b2calib.detectors.klm.time import time_calibration

    return [strip_efficiency_calibration(), time_calibration()]


def __dir__() -> list[str]:
    return __all__
