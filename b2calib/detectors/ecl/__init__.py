"""ECL calibrations: crystal energy (``ecl-energy``) and crystal and crate time offsets
(``ecl-time``).

==========  =====================================================================================
``energy``  ``ecl-energy``: the three methods and their merge in one algorithm, merged
            ECLCrystalEnergy
``ee5x5``   Bhabha 5x5 linear system (ECLCrystalEnergy5x5)
``peaks``   gamma-gamma and mu-mu peak fits (ECLCrystalEnergyGammaGamma, ECLCrystalEnergyMuMu)
``merge``   the merge of the methods, and the merged constants the collectors apply
``time``    ``ecl-time``: ECLCrystalTimeOffset and ECLCrateTimeOffset from Bhabha electrons
==========  =====================================================================================

:func:`calibrations` imports them when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from b2calib.calibration import Calibration

__all__ = ["calibrations"]


def calibrations() -> list[Calibration]:
    """The ECL calibration declarations: ``ecl-energy`` and ``ecl-time``."""
    from b2calib.detectors.ecl.energy import energy_calibration
    from b2calib.detectors.ecl.time import time_calibration

    return [energy_calibration(), time_calibration()]


def __dir__() -> list[str]:
    return __all__
