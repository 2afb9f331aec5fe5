"""The dimuon invariant mass after initial-state radiation (ISR), and its binned fit.

The model is the mass of a pair after initial-state radiation, ``sqrt(s) sqrt(1 - x)`` with the
photon's energy fraction ``x`` of density ``beta x^(beta - 1)`` on (0, 0.25) (``beta = 2 alpha /
pi (2 ln(sqrt(s) / m_e) - 1)``, fixed), folded with a Gaussian. The density is cut into 240
log-spaced slices of ``x``, each a Gaussian at ``sqrt(s) sqrt(1 - x)`` with the slice's
probability, so the model's CDF is a weighted sum of normal CDFs (exact for iminuit's
``BinnedNLL``, which takes the CDF).

Two uses share it:

* the QA monitoring (:mod:`b2calib.qa.monitoring.massfit`): one Gaussian width ``sigma`` fitted
  with the energy, the width mixing tracking resolution and beam-energy spread;
* the ``ecms`` calibration (:mod:`b2calib.detectors.beam.ecms`): the Gaussian of each event is
  the quadrature sum of the beam-energy spread (fitted) and the event's mass resolution (given:
  the distribution of the events' resolutions, a mixture of Gaussians), so that the spread is
  separated from the resolution. The spread is fitted as its square ``s2`` (which may come out
  negative when the spread is not resolved), so that its error stays symmetric near zero.

The window is ``[E - 0.30, E + 0.15]`` GeV around a centre ``E`` (the nominal collision energy,
or the histogram's mode). A Crystal Ball peak position, tried first for the QA, sat 9 MeV
(5 sigma) below the true energy: the radiative tail skews the core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from iminuit import Minuit, cost
from scipy import special

__all__ = [
    "ISR_X_MAX",
    "MASS_WINDOW_GEV",
    "MIN_DIMUONS",
    "IsrMassFit",
    "fit_isr_mass",
    "isr_beta",
    "isr_mass_cdf",
]

F = npt.NDArray[np.float64]

#: The fit window around the collision energy (GeV): the radiative tail below, the peak above.
MASS_WINDOW_GEV = (-0.30, 0.15)
#: Fewer dimuon candidates than this (in the histogram, and in the window) are not fitted.
MIN_DIMUONS = 50
#: The largest ISR photon energy fraction of the model (and of the simulator).
ISR_X_MAX = 0.25

# ISR photon energy fractions: the density beta x^(beta-1) on (0, 0.25) cut into log-spaced
# slices; each slice is a Gaussian at E sqrt(1 - x) with the slice's probability. The slices
# below x = 1e-5 (a mass 53 keV below E at most, 40 % of the pairs) are one slice at their mean
# x, beta / (beta + 1) 1e-5: the 148 log-spaced slices from 1e-12 it replaces moved the CDF by
# 3e-8 at the narrowest width of the ecms fit (20 MeV), 3e-7 at 5 MeV, and cost 60 % of each
# evaluation (tests/test_boost_ecms.py compares the fits on both grids).
_X_FINE = np.concatenate([[0.0], np.logspace(-12.0, math.log10(ISR_X_MAX), 240)])
_X_MERGED = 1e-5
_X_EDGES = np.concatenate([[0.0], _X_FINE[_X_FINE >= _X_MERGED]])


def _x_mid(edges: F, beta: float | None) -> F:
    """Each slice's ``x``: the geometric centre of its edges; the first slice (from 0) at 0 when
    it is negligibly short (the fine grid), else at its mean under the density."""
    first = 0.0 if beta is None else beta / (beta + 1.0) * edges[1]
    return np.concatenate([[first], np.sqrt(edges[1:-1] * edges[2:])])


def isr_beta(ecms: float) -> float:
    """Exponent of the ISR energy-fraction density ``beta x^(beta - 1)`` at ``sqrt(s) = ecms``
    (GeV)."""
    return 2.0 / (137.035999 * math.pi) * (2.0 * math.log(ecms / 0.51099895e-3) - 1.0)


def isr_mass_cdf(
    m: npt.ArrayLike,
    ecms: float,
    sigma: float | npt.ArrayLike,
    beta: float,
    weights: npt.ArrayLike | None = None,
    shifts: npt.ArrayLike | None = None,
    power: float = 0.0,
) -> F:
    """CDF of the dimuon mass: ``ecms sqrt(1 - x)`` with the ISR fraction ``x`` (density
    ``beta x^(beta-1)`` on (0, 0.25)), folded with a Gaussian of width ``sigma``.

    ``sigma`` may be an array of widths with ``weights`` (summing to 1): the CDF is then the
    weighted mixture (events of different mass resolutions), each Gaussian displaced by
    ``shifts`` (GeV, one per width; none by default). With ``power``, the widths and shifts are
    those of the non-radiative pairs and shrink with the radiation: a pair of mass
    ``ecms sqrt(1 - x)`` has the width ``sigma (1 - x)^(power / 2)`` and the shift
    ``shifts (1 - x)^((power - 1) / 2)``.
    """
    return _cdf(m, ecms, sigma, beta, weights, shifts, power, _X_EDGES, _x_mid(_X_EDGES, beta))


def _cdf(
    m: npt.ArrayLike,
    ecms: float,
    sigma: float | npt.ArrayLike,
    beta: float,
    weights: npt.ArrayLike | None,
    shifts: npt.ArrayLike | None,
    power: float,
    edges: F,
    mid: F,
) -> F:
    """:func:`isr_mass_cdf` on the ISR slices ``edges`` (centres ``mid``)."""
    w = np.diff((edges / ISR_X_MAX) ** beta)
    centre = ecms * np.sqrt(1.0 - mid)
    x = np.asarray(m, dtype=np.float64)[:, None] - centre[None, :]
    s = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    if s.size == 1 and weights is None:
        return np.asarray(special.ndtr(x / s[0]) @ w, dtype=np.float64)
    k = np.ones(1) if weights is None else np.asarray(weights, dtype=np.float64)
    d = np.zeros(len(s)) if shifts is None else np.asarray(shifts, dtype=np.float64)
    g = (1.0 - mid) ** (0.5 * power)  # the width factor of each ISR slice
    h = g**2 / np.sqrt(1.0 - mid)  # the shift factor
    out = np.zeros(x.shape[0])
    for sk, wk, dk in zip(s, k, d, strict=True):
        if wk > 0:
            out += wk * (special.ndtr((x - dk * h) / (sk * g)) @ w)
    return out


@dataclass(frozen=True)
class IsrMassFit:
    """A fit of the ISR mass model (GeV).

    Attributes
    ----------
    ecms, ecms_error
        The collision energy (the mass before radiation) and its error.
    width, width_error
        Without resolutions: the Gaussian width. With resolutions: the square of the
        beam-energy spread, ``s2`` (GeV^2, may be negative when not resolved), and its error.
    n
        Candidates in the window.
    valid
        Minuit's minimum valid and its covariance accurate.
    message
        Why not valid (empty when valid).
    """

    ecms: float
    ecms_error: float
    width: float
    width_error: float
    n: float
    valid: bool
    message: str = ""


def fit_isr_mass(
    counts: npt.ArrayLike,
    edges: npt.ArrayLike,
    centre: float | None,
    *,
    resolutions: npt.ArrayLike | None = None,
    resolution_weights: npt.ArrayLike | None = None,
    resolution_shift: float = 0.0,
    resolution_power: float = 0.0,
    s2_error_at: float | None = None,
    min_events: int = MIN_DIMUONS,
) -> IsrMassFit:
    """Binned maximum-likelihood fit of the ISR mass model to a dimuon mass histogram.

    Parameters
    ----------
    counts, edges
        The histogram (counts per bin, bin edges in GeV).
    centre
        The window's centre, the nominal collision energy (None or 0: the histogram's mode).
    resolutions, resolution_weights
        Without: one Gaussian width is fitted. With: the events' mass resolutions (GeV) and
        their shares; the Gaussian of a resolution ``r`` has width ``sqrt(s2 + r^2)`` and the
        spread's square ``s2`` is fitted (reported as ``width``).
    resolution_shift
        With resolutions: the Gaussian of a resolution ``r`` is centred
        ``resolution_shift * r^2 / E`` from the radiated mass (the second-order displacement of
        a mass computed from smeared momenta; ``-1/2`` for momenta smeared with a Gaussian
        relative error, as the simulator does, see :mod:`b2calib.detectors.beam.ecms`).
    resolution_power
        With resolutions: they are those of non-radiative pairs; a pair that radiated a
        fraction ``x`` has the width ``sqrt(s2 + r^2) (1 - x)^(resolution_power / 2)`` (its
        momenta are lower; ``power`` of :func:`isr_mass_cdf`, 0 by default).
    s2_error_at
        With resolutions: the error of ``s2`` is the Hesse error at ``s2 = s2_error_at`` (and
        the fitted energy) rather than at the fitted ``s2``: the curvature at the minimum grows
        with the fitted width, so that a fluctuation up gets a larger error than one down and
        the pulls of a short interval lean negative (-0.07 at 1300 pairs); the curvature at a
        fixed reference does not follow the fluctuation. None: at the fitted value.
    min_events
        Fewer candidates (in total or in the window) raise ValueError.

    Raises
    ------
    ValueError
        Too few candidates; the message says how many.
    """
    c = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if c.sum() < min_events:
        raise ValueError(
            f"{c.sum():.0f} dimuon candidates, at least {min_events} needed for the mass fit"
        )
    mid = 0.5 * (edges[1:] + edges[:-1])
    centre = centre if centre else float(mid[int(np.argmax(c))])
    i0 = int(np.searchsorted(edges, centre + MASS_WINDOW_GEV[0]))
    i1 = int(np.searchsorted(edges, centre + MASS_WINDOW_GEV[1]))
    xe, n = edges[i0 : i1 + 1], c[i0:i1]
    if n.sum() < min_events:
        raise ValueError(f"{n.sum():.0f} dimuon candidates in the fit window, {min_events} needed")
    beta = isr_beta(centre)
    if resolutions is None:

        def cdf(x: F, ecms: float, sigma: float) -> F:
            f = isr_mass_cdf(x, ecms, sigma, beta)
            return (f - f[0]) / (f[-1] - f[0])

        m = Minuit(cost.BinnedNLL(n, xe, cdf), ecms=centre, sigma=0.04)
        m.limits["sigma"] = (0.003, 0.3)
        par = "sigma"
    else:
        r2 = np.asarray(resolutions, dtype=np.float64) ** 2
        rw = np.asarray(resolution_weights, dtype=np.float64)
        keep = rw > 0
        r2, rw = r2[keep], rw[keep] / rw[keep].sum()
        floor = float(np.min(r2)) if len(r2) else 0.0
        shifts = resolution_shift * r2 / centre

        def cdf_spread(x: F, ecms: float, s2: float) -> F:
            f = isr_mass_cdf(
                x, ecms, np.sqrt(np.maximum(s2 + r2, 1e-12)), beta, rw, shifts, resolution_power
            )
            return (f - f[0]) / (f[-1] - f[0])

        nll = cost.BinnedNLL(n, xe, cdf_spread)
        m = Minuit(nll, ecms=centre, s2=5e-3**2)
        m.limits["s2"] = (-0.9 * floor, 0.3**2)
        m.errors["s2"] = 1e-4
        par = "s2"
    m.limits["ecms"] = (xe[0], xe[-1])
    m.migrad()
    m.hesse()
    valid = bool(m.valid and m.accurate)
    why = f"dimuon mass fit did not converge (valid={m.valid}, accurate covariance={m.accurate})"
    width_error = float(m.errors[par])
    if resolutions is not None and s2_error_at is not None and valid:
        at = Minuit(nll, ecms=m.values["ecms"], s2=s2_error_at)
        at.errors["s2"] = 1e-4
        at.hesse()
        if at.accurate and np.isfinite(at.errors["s2"]):
            width_error = float(at.errors["s2"])
    return IsrMassFit(
        float(m.values["ecms"]),
        float(m.errors["ecms"]),
        float(m.values[par]),
        width_error,
        float(n.sum()),
        valid,
        "" if valid else why,
    )


def __dir__() -> list[str]:
    return __all__
