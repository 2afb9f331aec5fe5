"""The detectors: one package per detector (or system), each declaring what it calibrates and
what it monitors.

============  =================================================================================
``pxd``       hot, dead and occupancy masks of every pixel, gain map; monitoring: hits per
              track, digit charge, occupancy, hot pixels
``svd``       hot strips and strip occupancy, cluster time (CoG); monitoring: clusters per track,
              cluster charge, occupancy
``cdc``       wire T0, x-t relations, dE/dx run gain, wire gain and cos(theta) correction;
              monitoring: hits per track, occupancy
``top``       channel masks, module T0, common T0, channel T0; monitoring: digits and their
              time per track, occupancy
``arich``     channel mask (dead and hot channels); monitoring: photons per track, occupancy
``ecl``       crystal energy (Bhabha linear system, gamma-gamma and mu-mu peaks, merged), crystal
              and crate time offsets; monitoring: E/p, cluster energies, occupancy
``klm``       strip efficiency, time constants and cable delays; monitoring: good-muon fraction,
              digits, occupancy
``tracking``  (a system) monitoring: impact-parameter resolutions
``beam``      (a system) beam spot per time interval; monitoring: collision energy from the
              dimuon mass, luminosity, hadron/Bhabha ratio
============  =================================================================================

A detector package has a ``calibrations()`` function returning its
:class:`~b2calib.calibration.Calibration` declarations. :func:`calibrations` collects those of
every package found here, so a new detector package is picked up as it is added, without
reinstalling b2calib; the calibration registry loads them through the ``b2calib.calibrations``
entry point (other packages add theirs the same way), so ``b2calib calibrate ecl-energy`` and
:func:`b2calib.calibration.get_calibration` find them without importing this package first.

A package that monitors its detector has a module ``qa`` with a ``qa_parts()`` function
returning its :class:`~b2calib.qa.monitoring.QAPart` s; :func:`qa_parts` collects them (it
imports each package's ``qa`` module), and the QA registry loads them through the
``b2calib.qa`` entry point (:func:`b2calib.qa.monitoring.qa_parts`): a new detector's QA is a
new ``qa.py``, with no switch to edit in the collectors.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pkgutil
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from b2calib.calibration import Calibration
    from b2calib.qa.monitoring import QAPart

__all__ = ["SYSTEMS", "calibrations", "detector_of", "packages", "qa_parts"]

#: The packages that are systems, not detectors: their calibrations have no detector (and no
#: detector expert reviews them alone).
SYSTEMS = ("beam", "tracking")


def packages() -> list[ModuleType]:
    """Every detector package of b2calib, imported, by name."""
    return [
        importlib.import_module(info.name)
        for info in pkgutil.iter_modules(__path__, f"{__name__}.")
        if info.ispkg
    ]


def calibrations() -> list[Calibration]:
    """The calibration declarations of every detector package, package by package."""
    return [c for p in packages() if hasattr(p, "calibrations") for c in p.calibrations()]


@functools.cache
def _detector_by_calibration() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for p in packages():
        if not hasattr(p, "calibrations"):
            continue
        package = p.__name__.rsplit(".", 1)[-1]
        detector = None if package in SYSTEMS else package.upper()
        for c in p.calibrations():
            out[c.name] = detector
    return out


def detector_of(calibration: str) -> str | None:
    """The detector (``"ECL"``, ``"CDC"`` ... as :data:`b2calib.geometry.DETECTORS`) whose
    package here declares the calibration named ``calibration``; ``None`` for a calibration of
    a system (:data:`SYSTEMS`: the beam spot, the collision energy) or one no package here
    declares (registered by another package or a test)."""
    return _detector_by_calibration().get(calibration)


def qa_parts() -> list[QAPart[Any]]:
    """The QA parts of every detector package with a ``qa`` module, package by package."""
    parts: list[QAPart[Any]] = []
    for info in pkgutil.iter_modules(__path__, f"{__name__}."):
        if info.ispkg and importlib.util.find_spec(f"{info.name}.qa") is not None:
            parts += importlib.import_module(f"{info.name}.qa").qa_parts()
    return parts


def __dir__() -> list[str]:
    return __all__
