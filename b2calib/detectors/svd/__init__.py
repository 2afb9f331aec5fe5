"""SVD calibrations: cluster time and hot strips; its monitoring is :mod:`b2calib.detectors.svd.qa`.

==================  ==========================================  ==================================
``svd-time``        SVDCoGTimeCalibrations                      per sensor side, event T0 against
                                                                the raw CoG time of clusters on
                                                                tracks: cells below max(2, 0.1 %)
                                                                zeroed, profile, cubic fit; a new
                                                                payload where the layer-3 V-side
                                                                mean raw time moves by > 2 ns
``svd-hot-strips``  SVDHotStripsCalibrations,                   strip occupancy with
                    SVDOccupancyCalibrations                    Clopper-Pearson errors; hot above
                                                                20 %, then repeatedly (Poisson-
                                                                significantly) above 5 x
                                                                the side mean of the others
==================  ==========================================  ==================================

The modules:

===============  ================================================================================
``collectors``   event T0 against raw cluster time per sensor side; strip hits and events
``time``         ``svd-time``
``hot_strips``   ``svd-hot-strips``
===============  ================================================================================

:func:`calibrations` imports them when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from b2calib.calibration import Calibration

__all__ = ["calibrations"]


def calibrations() -> list[Calibration]:
    """The SVD calibration declarations: hot strips (raw data), then the cluster time."""
    from b2calib.detectors.svd.hot_strips import hot_strips_calibration
    from b2calib.detectors.svd.time import time_calibration

    return [hot_strips_calibration(), time_calibration()]


def __dir__() -> list[str]:
    return __all__
