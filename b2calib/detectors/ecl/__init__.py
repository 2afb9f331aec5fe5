"""ECL calibrations: crystal energy (``ecl-energy``) and crystal and crate time offsets
(``ecl-time``).

==========  =====================================================================================
``energy``  Bhabha 5x5 linear system, gamma-gamma and mu-mu peak fits, merged ECLCrystalEnergy
``time``    ECLCrystalTimeOffset and ECLCrateTimeOffset from Bhabha electrons
==========  =====================================================================================
"""

from __future__ import annotations

from b2calib.calibration import Calibration
from b2calib.detectors.ecl.energy import energy_calibration
from b2calib.detectors.ecl.time import time_calibration

__all__ = ["calibrations"]


def calibrations() -> list[Calibration]:
    """The ECL calibration declarations: ``ecl-energy`` and ``ecl-time``."""
    return [energy_calibration(), time_calibration()]
