"""The detectors: one package per detector (or system), each declaring what it calibrates.

=========  ==================================================================================
``ecl``    crystal energy (Bhabha linear system, gamma-gamma and mu-mu peaks, merged), crystal
           and crate time offsets
``cdc``    wire T0, x-t relations, dE/dx run gain, wire gain and cos(theta) correction
``top``    channel masks, module T0, common T0, channel T0
=========  ==================================================================================

A detector package has a ``calibrations()`` function returning its
:class:`~b2calib.calibration.Calibration` declarations. :func:`calibrations` collects those of
every package found here, so a new detector package is picked up as it is added, without
reinstalling b2calib; the calibration registry loads them through the ``b2calib.calibrations``
entry point (other packages add theirs the same way), so ``b2calib calibrate ecl-energy`` and
:func:`b2calib.calibration.get_calibration` find them without importing this package first.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from b2calib.calibration import Calibration

__all__ = ["calibrations", "packages"]


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


def __dir__() -> list[str]:
    return __all__
