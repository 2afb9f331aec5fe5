"""Beam monitoring: the collision energy, the luminosity and the hadron/Bhabha ratio.

* ``mumu.invariant_mass``: the collision energy fitted to the dimuon mass
  (:func:`b2calib.qa.monitoring.massfit.fit_dimuon_mass`, its model shared with the ``ecms``
  calibration in :mod:`b2calib.fit.isr`: the mass after initial-state radiation folded with a
  Gaussian resolution, in a window around the run's nominal collision energy ``E``, the
  histogram's mode when unknown); ``mumu.invariant_mass_width``: the
  Gaussian width (tracking and beam-energy spread); ``mumu.invariant_mass_pull``:
  ``(mass - E) / error``, expected 0. The mass itself has no fixed expected value (a Continuum
  run is 60 MeV below a 4S run): it is judged against the runs of its beam-energy class, the
  pull against the run's own nominal energy. QA histogram: the dimuon mass.
* ``hadron_bhabha_ratio``: events of the ``hlt_hadron`` skim over events of ``hlt_bhabha``,
  each divided by its process's prescale from the files' metadata, with the error of a ratio
  of two independent Poisson counts. It has no reference value: it depends on the skims'
  efficiencies (Belle II quotes 0.193 for its own selections; the simulator gives ~0.31).
* ``bhabha.lumi_pb``, ``gamma_gamma.lumi_pb`` (pb^-1): the run's integrated luminosity from the
  events of the selections of :data:`b2calib.skims.LUMI_SELECTIONS` (every ``hlt_bhabha``
  event; the ``hlt_gamma_gamma`` events with the ``GG`` flag), see
  :mod:`b2calib.qa.monitoring.luminosity`. No selected event, or no nominal collision energy:
  no value (and a note), never 0 +- 0. They are shown, plotted and summed (the luminosity
  tables), but **not judged** (:attr:`VariableDef.judged`): runs differ in length, so a band
  over the runs' integrated luminosities would flag long and short runs, not bad ones.
* What a shifter checks instead, judged against 1: ``bhabha.lumi_recorded_ratio`` and
  ``gamma_gamma.lumi_recorded_ratio``, each method's count over the count expected from the
  luminosity the run registry recorded (:func:`~b2calib.qa.monitoring.luminosity.expected_count`;
  the simulator draws its events from that luminosity, so 1 is the truth), with the Poisson
  error of the expected count; and ``bhabha_gamma_gamma_lumi_ratio``, the Bhabha luminosity
  over the gamma-gamma one, with the error of both counts expected from their common
  luminosity. A ratio does not depend on the run's length (a short run has a larger error,
  not another value): a wrong recorded luminosity, or a method off by a few per cent, is
  flagged; a short run is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import awkward as ak
import numpy as np

from b2calib.exceptions import QAError
from b2calib.fit.histstats import mean_of
from b2calib.qa.monitoring import HistogramDef, MonitoringValue, QAPart, VariableDef
from b2calib.qa.monitoring.luminosity import expected_count, lumi_from_count
from b2calib.qa.monitoring.massfit import fit_dimuon_mass
from b2calib.qa.monitoring.parts import (
    B_FACTOR,
    DimuonEvents,
    Histograms,
    RunHistograms,
    SkimEvents,
    listing_order,
    mean_histogram,
)

__all__ = [
    "DIMUON_MASS",
    "BhabhaLuminosity",
    "DimuonMassQA",
    "GammaGammaLuminosity",
    "HadronBhabhaRatio",
    "Luminosity",
    "LuminosityMethodsRatio",
    "qa_parts",
]

#: The dimuon invariant mass.
DIMUON_MASS = HistogramDef(
    "BEAM", "dimuon_mass", "dimuon invariant mass (GeV)", bins=(100, 10.0, 11.0)
)
_MUON_MASS = 0.1056583755  # GeV (PDG)


@dataclass(frozen=True)
class DimuonMassQA(QAPart[DimuonEvents]):
    """The collision energy and the mass resolution fitted to the dimuon mass."""

    detector = "BEAM"
    skim = "hlt_mumu_2trk"
    variables = (
        VariableDef(
            "mumu.invariant_mass",
            "BEAM",
            "GeV",
            "collision energy fitted to the dimuon mass, judged against the runs of its beam "
            "energy class (mumu.invariant_mass_pull compares it with the run's nominal energy)",
        ),
        VariableDef(
            "mumu.invariant_mass_pull",
            "BEAM",
            "",
            "(fitted dimuon mass - nominal collision energy of the run) / error",
            0.0,
        ),
        VariableDef(
            "mumu.invariant_mass_width", "BEAM", "GeV", "Gaussian width of the dimuon mass peak"
        ),
    )
    histograms = (DIMUON_MASS,)

    def fill(self, events: DimuonEvents) -> Histograms:
        """Dimuon mass (GeV); pairs with a straight track (no field) are left out."""
        t = events.tracks
        with np.errstate(divide="ignore", invalid="ignore"):
            pt = np.abs(B_FACTOR / t["omega"])
            ok = np.isfinite(pt)
            px, py, pz = pt * np.cos(t["phi0"]), pt * np.sin(t["phi0"]), pt * t["tanLambda"]
            e = np.sqrt(px**2 + py**2 + pz**2 + _MUON_MASS**2)
            s = [a[0::2] + a[1::2] for a in (e, px, py, pz)]
            m2 = s[0] ** 2 - s[1] ** 2 - s[2] ** 2 - s[3] ** 2
            good = ok[0::2] & ok[1::2] & (m2 > 0)
        return {DIMUON_MASS.output_name: DIMUON_MASS.filled(np.sqrt(m2[good]))}

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        h = run.get("hlt_mumu_2trk", DIMUON_MASS.output_name)
        if h is None:
            return []
        nominal = run.ecms_nominal_gev
        try:
            fit = fit_dimuon_mass(h, nominal)
        except QAError as err:
            run.note(str(err))
            return []
        out = [
            self.value("mumu.invariant_mass", fit.ecms, fit.ecms_error),
            self.value("mumu.invariant_mass_width", fit.width, fit.width_error),
        ]
        if nominal:
            out.append(
                self.value("mumu.invariant_mass_pull", (fit.ecms - nominal) / fit.ecms_error, 1.0)
            )
        return out


@dataclass(frozen=True)
class HadronBhabhaRatio(QAPart[SkimEvents]):
    """Hadron over Bhabha events, prescales removed (from the event counts of both skims)."""

    detector = "BEAM"
    variables = (
        VariableDef(
            "hadron_bhabha_ratio", "BEAM", "", "hlt_hadron / hlt_bhabha events, prescales removed"
        ),
    )

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        bhabha, hadron = run.get("hlt_bhabha", "events"), run.get("hlt_hadron", "events")
        if bhabha is None or hadron is None:
            return []
        nb, nh = mean_of(bhabha)[2], mean_of(hadron)[2]
        if nb > 0 and nh > 0:
            r = (nh / run.prescale("hadron")) / (nb / run.prescale("bhabha"))
            return [self.value("hadron_bhabha_ratio", r, r * math.sqrt(1 / nh + 1 / nb))]
        run.note(f"{nh:.0f} hadron and {nb:.0f} Bhabha events: no ratio")
        return []


@dataclass(frozen=True)
class Luminosity(QAPart[SkimEvents]):
    """The luminosity of a method of :data:`b2calib.skims.LUMI_SELECTIONS` from the events of
    its selection, counted in the histogram ``count`` of its skim (the base of
    :class:`BhabhaLuminosity` and :class:`GammaGammaLuminosity`): ``<method>.lumi_pb`` (not
    judged) and ``<method>.lumi_recorded_ratio``, the count over the count expected from the
    run registry's recorded luminosity (judged against 1)."""

    detector = "BEAM"
    order = listing_order("run", "BEAM")  # with the ratio, not in the block of its skim
    version: ClassVar[int] = 2
    method: ClassVar[str]
    count: ClassVar[str]
    description: ClassVar[str]

    @property
    def variables(self) -> tuple[VariableDef, ...]:
        return (
            VariableDef(f"{self.method}.lumi_pb", "BEAM", "pb^-1", self.description, judged=False),
            VariableDef(
                f"{self.method}.lumi_recorded_ratio",
                "BEAM",
                "",
                f"{self.method} luminosity / recorded luminosity (run registry): the events "
                "selected over those expected from the recorded luminosity",
                1.0,
            ),
        )

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        h = run.get(self.skim or "", self.count)
        if h is None:
            return []
        if not run.ecms_nominal_gev:
            run.note(f"no nominal collision energy: no {self.method} luminosity")
            return []
        n = mean_of(h)[2]
        out = []
        lumi = lumi_from_count(
            self.method, n, prescales=run.prescales, ecms_gev=run.ecms_nominal_gev
        )
        if lumi is None:
            run.note(f"no {self.method} luminosity events")
        else:
            out.append(self.value(f"{self.method}.lumi_pb", *lumi))
        recorded = run.recorded_lumi_pb
        if recorded is not None and recorded > 0:
            expected = expected_count(
                self.method, recorded, prescales=run.prescales, ecms_gev=run.ecms_nominal_gev
            )
            if expected > 0:
                # N = 0 is a measurement here (no events where the registry says there were)
                ratio = (f"{self.method}.lumi_recorded_ratio", n / expected, expected**-0.5)
                out.append(self.value(*ratio))
        return out


@dataclass(frozen=True)
class BhabhaLuminosity(Luminosity):
    """The Bhabha luminosity: every ``hlt_bhabha`` event (the skim's cut is the selection)."""

    skim = "hlt_bhabha"
    method = "bhabha"
    count = "events"
    description = (
        "integrated luminosity from hlt_bhabha events (depends on the run's length: "
        "bhabha.lumi_recorded_ratio is judged)"
    )


@dataclass(frozen=True)
class GammaGammaLuminosity(Luminosity):
    """The gamma-gamma luminosity: the ``hlt_gamma_gamma`` events with the ``GG`` flag (no
    track, two clusters above 2 GeV back to back), counted as ``lumi_events``."""

    skim = "hlt_gamma_gamma"
    method = "gamma_gamma"
    count = "lumi_events"
    description = (
        "integrated luminosity from hlt_gamma_gamma events with the GG flag (depends on the "
        "run's length: gamma_gamma.lumi_recorded_ratio is judged)"
    )

    def branches(self) -> dict[str, str]:
        return {"SoftwareTriggerVariables_GG": "float32"}

    def fill(self, events: SkimEvents) -> Histograms:
        gg = np.asarray(ak.to_numpy(events.events["SoftwareTriggerVariables_GG"]), dtype=np.float64)
        return {"lumi_events": mean_histogram(np.ones(int(np.sum(gg == 1.0))))}


@dataclass(frozen=True)
class LuminosityMethodsRatio(QAPart[SkimEvents]):
    """The Bhabha luminosity over the gamma-gamma one (``bhabha_gamma_gamma_lumi_ratio``,
    judged against 1), from the counts of both selections (see :class:`Luminosity`); the error
    is that of both counts expected from their common luminosity ``(N_b + N_g) / (d_b + d_g)``
    (``d``: a method's count per pb^-1)."""

    detector = "BEAM"
    order = listing_order("run", "BEAM")
    variables = (
        VariableDef(
            "bhabha_gamma_gamma_lumi_ratio",
            "BEAM",
            "",
            "Bhabha luminosity / gamma-gamma luminosity",
            1.0,
        ),
    )

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        hb = run.get(BhabhaLuminosity.skim, BhabhaLuminosity.count)
        hg = run.get(GammaGammaLuminosity.skim, GammaGammaLuminosity.count)
        if hb is None or hg is None or not run.ecms_nominal_gev:
            return []
        nb, ng = mean_of(hb)[2], mean_of(hg)[2]
        if nb <= 0 or ng <= 0:
            return []  # the luminosity without events is noted by its part
        db, dg = (
            expected_count(m, 1.0, prescales=run.prescales, ecms_gev=run.ecms_nominal_gev)
            for m in ("bhabha", "gamma_gamma")
        )
        common = (nb + ng) / (db + dg)
        ratio = (nb / db) / (ng / dg)
        error = ratio * math.sqrt(1.0 / (common * db) + 1.0 / (common * dg))
        return [self.value("bhabha_gamma_gamma_lumi_ratio", ratio, error)]


def qa_parts() -> list[QAPart[Any]]:
    """The beams' QA parts."""
    return [
        DimuonMassQA(),
        HadronBhabhaRatio(),
        BhabhaLuminosity(),
        GammaGammaLuminosity(),
        LuminosityMethodsRatio(),
    ]


def __dir__() -> list[str]:
    return __all__
