"""The collision energy fitted to the dimuon mass, with initial-state radiation.

The model and the fit live in the fit layer (:mod:`b2calib.fit.isr`), shared with the ``ecms``
calibration: the mass after initial-state radiation folded with one Gaussian whose width
(tracking and beam-energy spread) is fitted too, iminuit ``BinnedNLL`` in ``[E - 0.30, E + 0.15]``
GeV around the run's nominal collision energy ``E`` (the histogram's mode when unknown). This
module turns its outcome into the monitoring's terms (a :class:`DimuonMassFit`, or a
:class:`~b2calib.exceptions.QAError` saying why there is none).
"""

from __future__ import annotations

from dataclasses import dataclass

import hist
import numpy as np

from b2calib.exceptions import QAError
from b2calib.fit.isr import MASS_WINDOW_GEV, MIN_DIMUONS, fit_isr_mass

__all__ = ["MASS_WINDOW_GEV", "MIN_DIMUONS", "DimuonMassFit", "fit_dimuon_mass"]


@dataclass(frozen=True)
class DimuonMassFit:
    """The fitted collision energy and Gaussian width of the dimuon mass (GeV), with errors."""

    ecms: float
    ecms_error: float
    width: float
    width_error: float


def fit_dimuon_mass(h: hist.Hist, nominal: float | None) -> DimuonMassFit:
    """Fit the collision energy and the mass resolution to a dimuon mass histogram (GeV).

    Parameters
    ----------
    h
        A 1-D count histogram of the dimuon mass.
    nominal
        The run's nominal collision energy, the centre of the window (None or 0: the mode).

    Raises
    ------
    QAError
        Too few candidates (:data:`MIN_DIMUONS`), or a fit that did not converge; the message
        says which.
    """
    try:
        fit = fit_isr_mass(np.asarray(h.values(), dtype=np.float64), h.axes[0].edges, nominal)
    except ValueError as err:
        raise QAError(str(err)) from None
    if not fit.valid:
        raise QAError(fit.message)
    return DimuonMassFit(fit.ecms, fit.ecms_error, fit.width, fit.width_error)


def __dir__() -> list[str]:
    return __all__
