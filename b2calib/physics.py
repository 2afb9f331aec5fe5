"""e+e- physics shared by the simulator and the luminosity measurement: PDG masses and the
cross sections of the processes at a collision energy.

Cross sections are tree-level QED in the generation acceptance ``|cos theta*| < COS_MAX``
(hadrons: the measured e+e- -> hadrons values at the Y(4S)). The simulator generates process
``p`` with ``N ~ Poisson(L * sigma_p * prescale_p)`` events in a run of luminosity ``L``
(:mod:`b2calib.sim`); the luminosity of the QA (:mod:`b2calib.qa.monitoring`) scales its
visible cross sections, measured at the Y(4S), to a run's nominal energy with the ratio of these.
Masses come from the PDG via the ``particle`` package (imported on first use). Units: GeV, nb.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALPHA",
    "COS_MAX",
    "Y4S_ECMS_GEV",
    "cross_section_nb",
    "dsigma_dcos_nb",
    "mass",
    "masses",
]

F = npt.NDArray[np.float64]
#: The fine-structure constant.
ALPHA = 1 / 137.035999
HBARC2_NB = 0.3893794e6  # (hbar c)^2 in nb GeV^2
#: Generation acceptance in the CMS polar angle.
COS_MAX = {"bhabha": 0.80, "gamma_gamma": 0.85, "mumu": 0.90, "tautau": 0.90}
#: Nominal collision energy (GeV) of the Y(4S) runs.
Y4S_ECMS_GEV = 10.5794


@cache
def mass(pdg: int) -> float:
    """PDG mass in GeV of a particle id (absolute value used)."""
    from particle import Particle

    m = Particle.from_pdgid(abs(pdg)).mass
    return 0.0 if m is None else m / 1000.0


def masses(pdg: npt.ArrayLike) -> F:
    """PDG masses (GeV) of an array of particle ids."""
    codes, inverse = np.unique(np.abs(np.asarray(pdg, dtype=np.int64)), return_inverse=True)
    return np.array([mass(int(c)) for c in codes])[inverse.reshape(-1)]


def dsigma_dcos_nb(process: str, c: F, s: float) -> F:
    """Tree-level dsigma/dcos(theta*) in nb of a two-body process (``bhabha``, ``gamma_gamma``,
    ``mumu``, ``tautau``) at ``cos theta* = c`` and ``s = ecms^2``."""
    if process == "bhabha":
        return 2 * np.pi * ALPHA**2 / (4 * s) * ((3 + c**2) / (1 - c)) ** 2 * HBARC2_NB
    if process == "gamma_gamma":
        return 2 * np.pi * ALPHA**2 / s * (1 + c**2) / (1 - c**2) * HBARC2_NB / 2
    if process in ("mumu", "tautau"):
        m = mass(13 if process == "mumu" else 15)
        beta = np.sqrt(max(0.0, 1 - 4 * m**2 / s))
        return (
            2
            * np.pi
            * ALPHA**2
            / (4 * s)
            * beta
            * (1 + c**2 + (1 - beta**2) * (1 - c**2))
            * HBARC2_NB
        )
    raise ValueError(process)


def cross_section_nb(process: str, ecms: float) -> float:
    """Visible cross section (nb) of a process in the generation acceptance at ``ecms``."""
    s = ecms**2
    if process == "hadron":
        on_peak = abs(ecms - Y4S_ECMS_GEV) < 0.015
        return 3.69 * (10.58**2 / s) + (1.05 if on_peak else 0.0)
    if process == "cosmic":
        return 0.0
    c = np.linspace(-COS_MAX[process], COS_MAX[process], 4001)
    y = dsigma_dcos_nb(process, c, s)
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(c)))


def __dir__() -> list[str]:
    return __all__
