"""The collision energy fitted to the dimuon mass, with initial-state radiation.

The model is the mass of a pair after initial-state radiation, ``sqrt(s) sqrt(1 - x)`` with the
photon's energy fraction ``x`` of density ``beta x^(beta - 1)`` on (0, 0.25) (``beta = 2 alpha /
pi (2 ln(sqrt(s) / m_e) - 1)``, fixed), folded with a Gaussian resolution whose width (tracking
and beam-energy spread) is fitted too: iminuit ``BinnedNLL`` in ``[E - 0.30, E + 0.15]`` GeV
around the run's nominal collision energy ``E`` (the histogram's mode when unknown). A Crystal
Ball peak position, tried first, sat 9 MeV (5 sigma) below the true energy: the radiative tail
skews the core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import hist
import numpy as np
import numpy.typing as npt
from iminuit import Minuit, cost
from scipy import special

from b2calib.exceptions import QAError

__all__ = ["MASS_WINDOW_GEV", "MIN_DIMUONS", "DimuonMassFit", "fit_dimuon_mass"]

F = npt.NDArray[np.float64]

#: The fit window around the collision energy (GeV): the radiative tail below, the peak above.
MASS_WINDOW_GEV = (-0.30, 0.15)
#: Fewer dimuon candidates than this (in the histogram, and in the window) are not fitted.
MIN_DIMUONS = 50


@dataclass(frozen=True)
class DimuonMassFit:
    """The fitted collision energy and Gaussian width of the dimuon mass (GeV), with errors."""

    ecms: float
    ecms_error: float
    width: float
    width_error: float


def _isr_beta(ecms: float) -> float:
    """Exponent of the ISR energy-fraction density ``beta x^(beta - 1)``."""
    return 2.0 / (137.035999 * math.pi) * (2.0 * math.log(ecms / 0.51099895e-3) - 1.0)


# ISR photon energy fractions: the density beta x^(beta-1) on (0, 0.25) cut into log-spaced
# slices; each slice is a Gaussian at E sqrt(1 - x) with the slice's probability
_X_EDGES = np.concatenate([[0.0], np.logspace(-12.0, math.log10(0.25), 240)])
_X_MID = np.concatenate([[0.0], np.sqrt(_X_EDGES[1:-1] * _X_EDGES[2:])])


def _isr_cdf(m: F, ecms: float, sigma: float, beta: float) -> F:
    """CDF of the dimuon mass: ``ecms sqrt(1 - x)`` with the ISR fraction ``x`` (density
    ``beta x^(beta-1)`` on (0, 0.25)), folded with a Gaussian of width ``sigma``."""
    w = np.diff((_X_EDGES / 0.25) ** beta)
    centre = ecms * np.sqrt(1.0 - _X_MID)
    z = (np.asarray(m, dtype=np.float64)[:, None] - centre[None, :]) / sigma
    return np.asarray(special.ndtr(z) @ w, dtype=np.float64)


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
    c = np.asarray(h.values(), dtype=np.float64)
    if c.sum() < MIN_DIMUONS:
        raise QAError(
            f"{c.sum():.0f} dimuon candidates, at least {MIN_DIMUONS} needed for the mass fit"
        )
    centre = nominal if nominal else float(h.axes[0].centers[int(np.argmax(c))])
    edges = h.axes[0].edges
    i0 = int(np.searchsorted(edges, centre + MASS_WINDOW_GEV[0]))
    i1 = int(np.searchsorted(edges, centre + MASS_WINDOW_GEV[1]))
    xe, n = edges[i0 : i1 + 1], c[i0:i1]
    if n.sum() < MIN_DIMUONS:
        raise QAError(f"{n.sum():.0f} dimuon candidates in the fit window, {MIN_DIMUONS} needed")
    beta = _isr_beta(centre)

    def cdf(x: F, ecms: float, sigma: float) -> F:
        f = _isr_cdf(x, ecms, sigma, beta)
        return (f - f[0]) / (f[-1] - f[0])

    m = Minuit(cost.BinnedNLL(n, xe, cdf), ecms=centre, sigma=0.04)
    m.limits["ecms"] = (xe[0], xe[-1])
    m.limits["sigma"] = (0.003, 0.3)
    m.migrad()
    m.hesse()
    if not (m.valid and m.accurate):
        raise QAError(
            f"dimuon mass fit did not converge (valid={m.valid}, accurate covariance={m.accurate})"
        )
    return DimuonMassFit(
        float(m.values["ecms"]),
        float(m.errors["ecms"]),
        float(m.values["sigma"]),
        float(m.errors["sigma"]),
    )


def __dir__() -> list[str]:
    return __all__
