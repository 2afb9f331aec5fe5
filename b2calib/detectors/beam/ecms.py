"""The collision energy (``ecms``, CollisionInvariantMass): the centre-of-mass energy, its
uncertainty and the beam-energy spread per time interval, from the dimuon invariant mass.

Method. The dimuon mass of a sub-interval (the mass x mass-resolution histograms of
:class:`~b2calib.detectors.beam.energy_collectors.MassCollector` summed over its atoms) is
fitted with the ISR line shape the QA monitoring uses (:mod:`b2calib.fit.isr`, the one model):
the mass before radiation, ``Ecms``, is the payload's ``mass``. Its Gaussian part separates the
two widths: each event's mass resolution is known (propagated from the tracking resolution the
simulator documents, see the collector), so the Gaussian of an event of resolution ``r`` has
width ``sqrt(spread^2 + r^2)`` with the beam-energy ``spread`` the one free width (fitted as
``spread^2``, which may come out negative when it is not resolved). The spread is quoted
``sqrt(max(s2, 0))`` with the half-width of the image of ``s2 +- error`` as its error; it is
*resolved* when ``s2`` exceeds ``spread_resolved_sigmas`` (2) errors, and the payload says which
rows are (column ``spread_resolved``, 1 or 0, next to ``spread_squared`` and its error): the
dimuon mass resolution (~40 MeV) dwarfs the spread (~5 MeV), so a sub-interval needs some 10^4
dimuons to resolve it. (basf2's dimuon part of ``InvariantMassAlgorithm`` fixes the spread to
5.2 MeV instead.)

The resolutions. Each event's resolution is evaluated at the nominal kinematics of its
measured directions (see the collector), not at its measured momenta, which gave the
resolutions of the fluctuated momenta and a spread^2 ~11 MeV^2 too large (8.7M toy pairs, the
simulator's generator and smearing: 40.7 +- 1.1 MeV^2 for a true 29.2). They are scaled from the
collector's reference energy to the run's nominal one (:func:`resolution_scale`), and a bin
stands for the mean ``r^2`` of its events (``resolution_r2``), not its centre (6.6 MeV^2 off).
The Gaussian of resolution ``r`` is centred ``-r^2 / (2 E)`` from the radiated mass (a mass
computed from momenta smeared with a Gaussian relative error is displaced so to second order,
~-0.08 MeV: the bias of -0.17 +- 0.10 MeV on the 7 whole runs of the bench sample without the
step, -0.094 +- 0.017 MeV on the toy pairs) and narrows as ``(1 - x)^0.85`` with the radiated
fraction ``x`` (lower momenta). On the toy pairs: Ecms +0.008 +- 0.017 MeV, spread^2 28.7 +-
1.1 MeV^2 for 29.2; on the bench sample -0.07 +- 0.10 MeV. The error of spread^2 is the Hesse
error at spread = 5.2 MeV (see :func:`~b2calib.fit.isr.fit_isr_mass`, ``s2_error_at``): at the
fitted value it grows with the fluctuation and the pulls of one-atom intervals leaned negative.

4S and off-resonance runs are kept apart (``beam_energy`` classes of the run registry): a new
payload starts wherever the class changes, so no interval spans both. Time intervals as the
boost vector's, with the losses of basf2's eCMS calibration (``caf_ecms.py``, R. Zlebcik):
``pow(0.000020e0*rawTime, 2) + 1./nEv`` outer and ``pow(0.000120e0*rawTime, 2) + 1./nEv``
inner; with dimuons alone (basf2 adds hadronic B decays) they give long intervals, which are
made to start wherever the energy steps inside a run (the per-atom mean mass of the peak's core,
:class:`~b2calib.calibration.intervals.IntervalAlgorithm`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from b2calib.calibration import (
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Calibration,
    CollectorInput,
    PayloadComparison,
    SequentialBoundaries,
)
from b2calib.calibration.fitview import NoChannelFit
from b2calib.calibration.intervals import (
    ECMS_INNER_LOSS,
    ECMS_OUTER_LOSS,
    Atom,
    IntervalAlgorithm,
    IntervalFit,
    OuterInterval,
    SubInterval,
    per_atom,
    sum_atoms,
)
from b2calib.calibration.toolkit import NotEnoughData
from b2calib.conditions.iov import RunKey
from b2calib.detectors.beam.energy_collectors import (
    MASS_BINS,
    RESOLUTION_BINS,
    RESOLUTION_ECMS,
    MassCollector,
)
from b2calib.fit.isr import MASS_WINDOW_GEV, MIN_DIMUONS, fit_isr_mass

__all__ = [
    "COLLISION_MASS",
    "CORE_HALF_WIDTH_GEV",
    "EcmsAlgorithm",
    "EcmsFit",
    "ecms_calibration",
    "fit_ecms",
    "resolution_scale",
]

F = npt.NDArray[np.float64]

COLLISION_MASS = "CollisionInvariantMass"
#: The peak core whose per-atom mean mass the step finder follows (GeV around the mode).
CORE_HALF_WIDTH_GEV = 0.08
#: The displacement of the Gaussian of resolution ``r`` from the radiated mass, in ``r^2 / E``:
#: a mass computed from momenta with a Gaussian relative error ``eps`` goes as ``sqrt(1 + eps)``
#: per track, hence ``E[M] = M (1 - r^2 / (2 M^2))`` (the simulator smears pt so; a Gaussian
#: curvature error would give ``+3/2``).
_RESOLUTION_SHIFT = -0.5
#: The share of the squared mass resolution from the ``0.1 % pt`` term (dimuons of the
#: simulator: 0.69, the event-to-event spread of the rescaling below is 4e-4).
_PT_LINEAR_SHARE = 0.69
#: The spread^2 at which the error of the fitted spread^2 is evaluated (GeV^2): (5.2 MeV)^2,
#: the spread basf2's dimuon eCMS fit fixes (see :func:`~b2calib.fit.isr.fit_isr_mass`).
_S2_ERROR_AT = 5.2e-3**2


def resolution_scale(ecms: float | None, reference: float = RESOLUTION_ECMS) -> float:
    """The factor from the resolutions the collector evaluated at ``reference`` to those at a
    run's nominal ``ecms``: the momenta scale as ``k = ecms / reference``, the mass resolution
    as ``k sqrt(1 + (k^2 - 1) f)`` with ``f`` the share of the ``pt``-proportional term."""
    if not ecms:
        return 1.0
    k = ecms / reference
    return float(k * np.sqrt(1.0 + (k * k - 1.0) * _PT_LINEAR_SHARE))


def _centres(spec: tuple[int, float, float]) -> F:
    n, lo, hi = spec
    return np.asarray(lo + (np.arange(n) + 0.5) * (hi - lo) / n, dtype=np.float64)


def _edges(spec: tuple[int, float, float]) -> F:
    n, lo, hi = spec
    return np.linspace(lo, hi, n + 1)


@dataclass(frozen=True)
class EcmsFit:
    """The fit of one sub-interval (GeV): ``mass`` (Ecms) and ``spread`` with errors, the
    fitted ``s2 = spread^2`` with its error, whether the spread is resolved, the candidates
    in the window, whether the fit is valid, and why not."""

    mass: float
    mass_error: float
    spread: float
    spread_error: float
    s2: float
    s2_error: float
    resolved: bool
    n: float
    valid: bool
    message: str = ""


def fit_ecms(
    counts: npt.ArrayLike,
    nominal: float | None,
    *,
    resolved_sigmas: float = 2.0,
    min_events: int = MIN_DIMUONS,
    scale: float = 1.0,
    r2_sums: npt.ArrayLike | None = None,
) -> EcmsFit:
    """Fit Ecms and the beam-energy spread to a mass x resolution histogram
    (:data:`~b2calib.detectors.beam.energy_collectors.MASS_BINS` x
    :data:`~b2calib.detectors.beam.energy_collectors.RESOLUTION_BINS`); the resolutions are
    multiplied by ``scale`` (:func:`resolution_scale`). With ``r2_sums`` (the sum of the
    events' squared resolutions per resolution bin, over the histogram's mass range), each
    bin's resolution is ``sqrt(mean r^2)`` rather than its centre.

    Raises
    ------
    ValueError
        Fewer than ``min_events`` candidates (in total or in the window).
    """
    c = np.asarray(counts, dtype=np.float64)
    edges = _edges(MASS_BINS)
    mass = c.sum(axis=1)
    mid = _centres(MASS_BINS)
    centre = nominal if nominal else float(mid[int(np.argmax(mass))])
    inside = (mid > centre + MASS_WINDOW_GEV[0]) & (mid < centre + MASS_WINDOW_GEV[1])
    weights = c[inside].sum(axis=0)
    res = _centres(RESOLUTION_BINS)
    if r2_sums is not None:
        n_r = c.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            res = np.where(n_r > 0, np.sqrt(np.asarray(r2_sums, dtype=np.float64) / n_r), res)
    fit = fit_isr_mass(
        mass,
        edges,
        centre,
        resolutions=scale * res,
        resolution_weights=weights,
        resolution_shift=_RESOLUTION_SHIFT,
        resolution_power=1.0 + _PT_LINEAR_SHARE,
        s2_error_at=_S2_ERROR_AT,
        min_events=min_events,
    )
    s2, e = fit.width, fit.width_error
    spread = float(np.sqrt(max(s2, 0.0)))
    spread_err = 0.5 * float(np.sqrt(max(s2 + e, 0.0)) - np.sqrt(max(s2 - e, 0.0)))
    return EcmsFit(
        fit.ecms,
        fit.ecms_error,
        spread,
        spread_err,
        s2,
        e,
        bool(s2 > resolved_sigmas * e),
        fit.n,
        fit.valid,
        fit.message,
    )


class EcmsAlgorithm(IntervalAlgorithm):
    """CollisionInvariantMass per sub-interval from the dimuon mass line shape (see the
    module); the step search follows the per-atom mean mass of the peak's core."""

    name = "ecms"
    payload = COLLISION_MASS
    payloads = (COLLISION_MASS,)
    default_outer_loss = ECMS_OUTER_LOSS
    default_inner_loss = ECMS_INNER_LOSS
    units: ClassVar[Mapping[str, str]] = {
        "mass": "GeV",
        "spread": "GeV",
        "spread_squared": "GeV^2",
        "spread_resolved": "",
    }
    description = (
        "collision energy sqrt(s) (mass) and the beam-energy spread per time interval, from "
        "the dimuon invariant mass (ISR line shape, per-event mass resolution); "
        "spread_resolved = 1 where spread_squared is resolved from 0"
    )

    def run_groups(self, data: AlgorithmInput) -> Mapping[RunKey, Hashable] | None:
        """The beam energy of each run (the run registry's 4S, Continuum ...): outer intervals,
        hence payloads, never mix them (:meth:`boundaries` starts one where it changes)."""
        return {r: info.beam_energy for r, info in data.run_info.items()}

    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        classes = {data.run_info[r].beam_energy for r in data.runs if r in data.run_info}
        if len(classes) > 1:
            return AlgorithmResult(
                AlgorithmStatus.FAILURE,
                message=f"runs {data.runs[0]}..{data.runs[-1]} mix beam energies "
                f"{sorted(classes)}: an interval never spans 4S and off-resonance runs",
            )
        return super().run(data)

    @staticmethod
    def _nominal(data: AlgorithmInput) -> float | None:
        nominals = [
            data.run_info[r].ecms_nominal_gev
            for r in data.runs
            if r in data.run_info and data.run_info[r].ecms_nominal_gev
        ]
        return float(np.median(nominals)) if nominals else None

    def fit_sub(
        self,
        data: AlgorithmInput,
        outer: OuterInterval,
        sub: SubInterval,
        atoms: Sequence[Atom],
        shared: IntervalFit | None,
    ) -> IntervalFit | None:
        chosen = [atoms[i] for i in sub.atoms]
        h = sum_atoms(data.per_run, "mass", chosen)
        if h is None:
            raise NotEnoughData("no dimuon in the sub-interval")
        r2 = sum_atoms(data.per_run, "resolution_r2", chosen)
        try:
            nominal = self._nominal(data)
            fit = fit_ecms(
                np.asarray(h.values()),
                nominal,
                resolved_sigmas=float(data.config["spread_resolved_sigmas"]),
                min_events=int(self.min_sub_events),
                scale=resolution_scale(nominal),
                r2_sums=None if r2 is None else np.asarray(r2.values()),
            )
        except ValueError as err:
            raise NotEnoughData(str(err)) from None
        return IntervalFit(
            {
                "mass": fit.mass,
                "spread": fit.spread,
                "spread_squared": fit.s2,
                "spread_resolved": float(fit.resolved),
            },
            {"mass": fit.mass_error, "spread": fit.spread_error, "spread_squared": fit.s2_error},
            fit.valid,
            fit.message,
        )

    def atom_series(self, data: AlgorithmInput, atoms: Sequence[Atom]) -> tuple[F, F] | None:
        """Per atom, the mean dimuon mass in the peak's core (+-80 MeV around the mode),
        resolution-weighted: each resolution class ``r`` of the histogram is centred on its
        mean over all atoms and weighted by the inverse of its variance, so that the sharp
        pairs count more (error ``1 / sqrt(sum_r w_r n_r)``)."""
        h = per_atom(data.per_run, "mass", atoms)  # (atoms, mass, resolution)
        mid = _centres(MASS_BINS)
        mode = float(mid[int(np.argmax(h.sum(axis=(0, 2))))])
        core = np.abs(mid - mode) <= CORE_HALF_WIDTH_GEV
        x = mid[core] - mode
        hc = h[:, core, :]
        n = hc.sum(axis=1)  # (atoms, r)
        s1 = np.einsum("amr,m->ar", hc, x)
        s2 = np.einsum("amr,m->ar", hc, x**2)
        nt, t1, t2 = n.sum(axis=0), s1.sum(axis=0), s2.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = np.where(nt > 0, t1 / nt, 0.0)
            var = np.where(nt > 1, t2 / nt - mu**2, np.inf)
            w = np.where(np.isfinite(var) & (var > 0), 1.0 / var, 0.0)
            sw = n @ w
            mean = ((s1 - n * mu) @ w) / sw
            err = 1.0 / np.sqrt(sw)
        bad = n.sum(axis=1) < 10
        return np.where(bad, np.nan, mean)[:, None], np.where(bad, np.nan, err)[:, None]


_VIEW = NoChannelFit(
    "a time-dependent beam payload: one fit per time interval of all its events, not per "
    "channel (diagnostics intervals, atoms)",
    lambda c: c.step_message,
)


def ecms_calibration() -> Calibration:
    """The ``ecms`` declaration (stage ``analysis``, after ``boostvector``)."""
    return Calibration(
        name="ecms",
        validation=PayloadComparison(
            columns=("mass",),
            max_pull=None,
            max_abs_change=0.0015,
            error_outlier_fraction=1.0,
        ),  # per interval (GeV); the energy is tuned by MeV: a warning at most
        expert="beam-calibration@b2calib.example",
        inputs={"dimuons": CollectorInput(MassCollector(), ("hlt_mumu_2trk",))},
        algorithms=[EcmsAlgorithm()],
        strategy=SequentialBoundaries(),
        stage="analysis",
        run_type="physics",
        beam_energy=("4S", "Continuum"),
        magnet_on=True,
        after=("boostvector",),  # Belle II's order; reads no boost payload (ordering only)
        expert_config={
            "outerLoss": ECMS_OUTER_LOSS,
            "innerLoss": ECMS_INNER_LOSS,
            "spread_resolved_sigmas": 2.0,
        },
        description="CollisionInvariantMass (Ecms and the beam-energy spread) per time "
        "interval from the dimuon mass line shape (ISR, per-event resolution, spread), 4S and "
        "off-resonance runs apart; intervals with basf2's eCMS losses, cut where Ecms steps.",
        fit_views={COLLISION_MASS: _VIEW},
    )


def __dir__() -> list[str]:
    return __all__
