"""The beams, a system: the calibrations of the boost vector and the collision energy, and the
monitoring of the collision energy and the luminosity (:mod:`b2calib.detectors.beam.qa`).

=============  =========================  ======================================================
``boostvector``  CollisionBoostVector     the dimuon velocity per time interval
                                          (:mod:`~b2calib.detectors.beam.boost`)
``ecms``         CollisionInvariantMass   Ecms and the beam-energy spread per time interval from
                                          the dimuon mass (:mod:`~b2calib.detectors.beam.ecms`)
=============  =========================  ======================================================

Their collectors are in :mod:`~b2calib.detectors.beam.collectors`, the time atoms and steps
in :mod:`~b2calib.detectors.beam.timeline`. :func:`calibrations` imports them when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from b2calib.calibration import Calibration

__all__ = ["calibrations"]


def calibrations() -> list[Calibration]:
    """The beam calibration declarations, in the order Belle II's prompt calibration runs
    them."""
    from b2calib.detectors.beam.boost import boostvector_calibration
    from b2calib.detectors.beam.ecms import ecms_calibration

    return [
        boostvector_calibration(),
        ecms_calibration(),
    ]


def __dir__() -> list[str]:
    return __all__
