"""The beams, a system: the beam spot calibration and the monitoring of the collision energy and
the luminosity.

==============  ============  ===================================================================
``beamspot``    BeamSpot      IP position per time sub-interval and luminous-region size per
                              outer interval, from the d0/z0 of tight dimuon tracks
==============  ============  ===================================================================

The modules:

==============  =================================================================================
``dimuons``     the tight dimuon selection of the beam calibrations, the track resolution model
``collectors``  the beam-spot collector (additive moments per time atom)
``beamspot``    ``beamspot``
``qa``          monitoring: collision energy from the dimuon mass, luminosity, hadron/Bhabha
                ratio
==============  =================================================================================

:func:`calibrations` imports them when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from b2calib.calibration import Calibration

__all__ = ["calibrations"]


def calibrations() -> list[Calibration]:
    """The beam calibration declarations, in the order basf2 runs them."""
    from b2calib.detectors.beam.beamspot import beamspot_calibration

    return [beamspot_calibration()]


def __dir__() -> list[str]:
    return __all__
