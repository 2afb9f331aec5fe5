"""CDC calibrations.

============  ===============================================================================
``tracking``  wire T0 (``cdc-t0``, CDCTimeZeros) and x-t relations (``cdc-xt``, CDCXtRelations)
``dedx``      dE/dx run gain, cos(theta) correction and wire gain (``cdc-dedx-*``)
``views``     what an expert looks at after a calibration (the notebooks' plots and tables)
============  ===============================================================================

:func:`calibrations` imports them when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from b2calib.calibration import Calibration

__all__ = ["calibrations"]


def calibrations() -> list[Calibration]:
    """The CDC calibration declarations, in the order prompt processing runs them."""
    from b2calib.detectors.cdc.dedx import (
        cosine_calibration,
        run_gain_calibration,
        wire_gain_calibration,
    )
    from b2calib.detectors.cdc.tracking import t0_calibration, xt_calibration

    return [
        t0_calibration(),
        xt_calibration(),
        run_gain_calibration(),
        cosine_calibration(),
        wire_gain_calibration(),
    ]


def __dir__() -> list[str]:
    return __all__
