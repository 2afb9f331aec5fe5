"""The beams, a system: the beam spot, boost vector and collision energy calibrations and the
monitoring of the collision energy and the luminosity.

===============  ======================  ==========================================================
``beamspot``     BeamSpot                IP position per time sub-interval and luminous-region size
                                         per outer interval, from the d0/z0 of tight dimuon tracks
``boostvector``  CollisionBoostVector    the centre-of-mass velocity per time sub-interval, from
                                         the dimuon four-momentum sum
``ecms``         CollisionInvariantMass  Ecms and the beam-energy spread per time sub-interval,
                                         from the dimuon mass line shape (4S and off-resonance
                                         apart)
===============  ======================  ==========================================================

The modules:

=====================  ==========================================================================
``dimuons``            the tight dimuon selection of the beam calibrations, the track resolution
                       model
``collectors``         the beam-spot collector (additive moments per time atom)
``energy_collectors``  the boost-vector and collision-energy collectors (four-momentum moments,
                       mass x mass resolution, per time atom)
``beamspot``           ``beamspot``
``boost``              ``boostvector``
``ecms``               ``ecms``
``qa``                 monitoring: collision energy from the dimuon mass, luminosity,
                       hadron/Bhabha ratio
=====================  ==========================================================================

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
    from b2calib.detectors.beam.boost import boostvector_calibration
    from b2calib.detectors.beam.ecms import ecms_calibration

    return [beamspot_calibration(), boostvector_calibration(), ecms_calibration()]


def __dir__() -> list[str]:
    return __all__
