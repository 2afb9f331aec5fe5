"""The integrated luminosity of a run from the events of a luminosity selection.

The luminosity methods are the selections of :data:`b2calib.skims.LUMI_SELECTIONS`: every
``hlt_bhabha`` event (``Bhabha2Trk``), and the ``hlt_gamma_gamma`` events with the ``GG`` flag.
A run's luminosity is ``L = N / sum_p(prescale_p sigma_vis,p)`` (:func:`lumi_from_count`) from
the events ``N`` a method counted. The simulator's prescales (files' metadata) are fractions of
the produced events kept, so ``N`` is divided by them; the sum runs over every process that
passes the selection (tau pairs make 0.2 % of the Bhabha count). The visible cross sections
``sigma_vis,p`` (cross section x selection efficiency) are *not* taken from the run's simulation
truth: they were measured once on an independent simulated sample (:mod:`b2calib.sim.luminosity`,
seed 20190) at the Y(4S) energy and are committed here as :data:`VISIBLE_CROSS_SECTIONS_NB`;
other nominal energies (continuum) scale them with the generator's ``cross_section_nb(p, E) /
cross_section_nb(p, E_4S)`` (:func:`b2calib.physics.cross_section_nb`; the selections cut on
energies relative to the beam energy: the efficiency does not depend on it). The error is the
Poisson error of ``N`` combined in quadrature with the visible cross sections' error (< 0.1 %,
negligible). No selected event: no value, never 0 +- 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from b2calib.exceptions import QAError
from b2calib.physics import Y4S_ECMS_GEV, cross_section_nb
from b2calib.skims import LUMI_SELECTIONS

__all__ = [
    "VISIBLE_CROSS_SECTIONS_NB",
    "VISIBLE_CROSS_SECTION_ECMS",
    "expected_count",
    "lumi_from_count",
]

#: Collision energy (GeV) at which :data:`VISIBLE_CROSS_SECTIONS_NB` were measured.
VISIBLE_CROSS_SECTION_ECMS = Y4S_ECMS_GEV
#: Visible cross sections (nb) of each luminosity method (:data:`b2calib.skims.LUMI_SELECTIONS`)
#: for each process that passes its selection: (value, binomial error of the efficiency times
#: the cross section), at :data:`VISIBLE_CROSS_SECTION_ECMS`, as measured by
#: :func:`b2calib.sim.luminosity.measure_visible_cross_sections` on its default sample (seed
#: 20190; bhabha 1M, gamma_gamma 500k, tautau 400k, mumu 100k, hadron 100k events). Regenerate
#: with ``python -m b2calib.sim.luminosity`` (~1 minute), which prints this table.
#: Processes without a selected event are left out: mumu and hadron pass neither selection,
#: tautau and bhabha not the gamma-gamma one (0 of 400k / 1M).
VISIBLE_CROSS_SECTIONS_NB: dict[str, dict[str, tuple[float, float]]] = {
    # efficiency 0.9640 of 14.753 nb; tau pairs: 0.88 % of 0.667 nb
    "bhabha": {"bhabha": (14.2223, 0.0027), "tautau": (0.00584, 0.00010)},
    # efficiency 0.9171 of 1.935 nb
    "gamma_gamma": {"gamma_gamma": (1.77458, 0.00075)},
}


def lumi_from_count(
    method: str,
    n_selected: float,
    *,
    prescales: Mapping[str, float] | None = None,
    ecms_gev: float = Y4S_ECMS_GEV,
    cross_sections: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> tuple[float, float] | None:
    """Integrated luminosity (pb^-1) and its error from the events a luminosity method counted.

    ``L = N / sum_p(prescale_p sigma_vis,p(E))``: the simulator keeps the fraction
    ``prescale_p`` of the produced events of process ``p`` (a keep fraction, not "1 in n"), so
    ``N`` is divided by it. ``sigma_vis,p(E)`` is the visible cross section of
    :data:`VISIBLE_CROSS_SECTIONS_NB` (or ``cross_sections``) scaled to the collision energy
    ``E`` by the ratio ``cross_section_nb(p, E) / cross_section_nb(p, E0)`` of the generator's
    cross sections (the efficiency is taken as independent of the energy: the selections cut on
    energies relative to the beam energy). The error combines, in quadrature, the Poisson error
    of ``N`` with the error of the visible cross sections (relative 0.02 % for Bhabha, 0.04 %
    for gamma-gamma: negligible next to the counting). None when ``N`` is 0 (no measurement).
    Prescales missing from ``prescales`` (or None) are 1.
    """
    if n_selected <= 0:
        _check(method)
        return None
    denom, var = _visible_pb(method, prescales, ecms_gev, cross_sections)
    if denom <= 0:
        return None
    lumi = n_selected / denom
    return lumi, lumi * math.sqrt(1.0 / n_selected + var / denom**2)


def expected_count(
    method: str,
    lumi_pb: float,
    *,
    prescales: Mapping[str, float] | None = None,
    ecms_gev: float = Y4S_ECMS_GEV,
    cross_sections: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> float:
    """The number of events a luminosity method is expected to select (prescales applied) in
    an integrated luminosity of ``lumi_pb`` pb^-1: ``lumi_pb sum_p(prescale_p sigma_vis,p(E))``,
    the inverse of :func:`lumi_from_count` (same arguments). The luminosity monitoring
    compares a method's count with this count for the run registry's recorded luminosity:
    ``N / expected`` is the ratio measured / recorded, and ``1 / sqrt(expected)`` its error
    when the recorded luminosity is right (the Poisson error of the expected count, which a
    run with few events does not underestimate as ``sqrt(N)`` would)."""
    return lumi_pb * _visible_pb(method, prescales, ecms_gev, cross_sections)[0]


def _check(method: str) -> None:
    if method not in LUMI_SELECTIONS:
        raise QAError(f"unknown luminosity method {method!r}; known: {', '.join(LUMI_SELECTIONS)}")


def _visible_pb(
    method: str,
    prescales: Mapping[str, float] | None,
    ecms_gev: float,
    cross_sections: Mapping[str, Mapping[str, tuple[float, float]]] | None,
) -> tuple[float, float]:
    """``sum_p(prescale_p sigma_vis,p(E))`` of a method in pb, and its variance."""
    _check(method)
    table = (cross_sections if cross_sections is not None else VISIBLE_CROSS_SECTIONS_NB)[method]
    ps = prescales or {}
    denom, var = 0.0, 0.0
    for process, (sigma, err) in table.items():
        scale = cross_section_nb(process, ecms_gev) / cross_section_nb(
            process, VISIBLE_CROSS_SECTION_ECMS
        )
        w = ps.get(process, 1.0) * scale * 1000.0  # nb -> pb
        denom += w * sigma
        var += (w * err) ** 2
    return denom, var


def __dir__() -> list[str]:
    return __all__
