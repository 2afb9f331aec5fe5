"""The collision energy (``ecms``, CollisionInvariantMass): the centre-of-mass energy, its
uncertainty and the beam-energy spread per time interval, from the dimuon invariant mass.

Method. The dimuon mass of a sub-interval (the mass x mass-resolution histograms of
:class:`~b2calib.detectors.beam.collectors.MassCollector` summed over its atoms) is fitted with
the ISR line shape the QA monitoring uses (:mod:`b2calib.fit.isr`, the one model): the mass
before radiation, ``Ecms``, is the payload's ``mass``. Its Gaussian part separates the two
widths: each event's mass resolution is known (propagated from the tracking resolution the
simulator documents, see the collector), so the Gaussian of an event of resolution ``r`` has
width ``sqrt(spread^2 + r^2)`` with the beam-energy ``spread`` the one free width (fitted as
``spread^2``, which may come out negative when it is not resolved). The spread is quoted
``sqrt(max(s2, 0))`` with the half-width of the image of ``s2 +- error`` as its error; it is
*resolved* when ``s2`` exceeds ``spread_resolved_sigmas`` (2) errors, and the payload's
metadata lists which rows are (``spread_resolved``): the dimuon mass resolution (~40 MeV)
dwarfs the spread (~5 MeV), so a sub-interval needs some 10^4 dimuons to resolve it. (basf2's
dimuon part of ``InvariantMassAlgorithm`` fixes the spread to 5.2 MeV instead.)

4S and off-resonance runs are kept apart (``beam_energy`` classes of the run registry): a new
payload starts wherever the class changes, so no interval spans both. Time intervals as the
boost vector's, with the losses of basf2's eCMS calibration (``caf_ecms.py``, R. Zlebcik):
``pow(0.000020e0*rawTime, 2) + 1./nEv`` outer and ``pow(0.000120e0*rawTime, 2) + 1./nEv``
inner; with dimuons alone (basf2 adds hadronic B decays) they give long intervals, which are
then cut where the energy steps (:func:`~b2calib.detectors.beam.timeline.find_steps` on the
per-atom mean mass in the peak's core).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from b2calib.calibration import (
    Algorithm,
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Calibration,
    CollectorInput,
    Diagnostics,
    SequentialBoundaries,
)
from b2calib.conditions import ChannelStatus
from b2calib.conditions.iov import RunKey
from b2calib.detectors.beam.collectors import MASS_BINS, RESOLUTION_BINS, MassCollector
from b2calib.detectors.beam.timeline import (
    beam_intervals,
    outer_boundaries,
    per_atom,
    time_payload,
)
from b2calib.fit.isr import MASS_WINDOW_GEV, MIN_DIMUONS, fit_isr_mass

__all__ = [
    "COLLISION_MASS",
    "CORE_HALF_WIDTH_GEV",
    "EcmsAlgorithm",
    "EcmsFit",
    "ecms_calibration",
    "fit_ecms",
]

F = npt.NDArray[np.float64]

COLLISION_MASS = "CollisionInvariantMass"
#: The peak core whose per-atom mean mass the step finder follows (GeV around the mode).
CORE_HALF_WIDTH_GEV = 0.08


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
) -> EcmsFit:
    """Fit Ecms and the beam-energy spread to a mass x resolution histogram
    (:data:`~b2calib.detectors.beam.collectors.MASS_BINS` x
    :data:`~b2calib.detectors.beam.collectors.RESOLUTION_BINS`).

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
    fit = fit_isr_mass(
        mass,
        edges,
        centre,
        resolutions=_centres(RESOLUTION_BINS),
        resolution_weights=weights,
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


class EcmsAlgorithm(Algorithm):
    """CollisionInvariantMass per sub-interval from the dimuon mass line shape (see the
    module)."""

    name = "ecms"
    payloads = (COLLISION_MASS,)

    def boundaries(self, data: AlgorithmInput) -> Sequence[RunKey]:
        info = data.run_info
        return outer_boundaries(
            data, "atom_time", data.config, kind=lambda r: info[r].beam_energy if r in info else ""
        )

    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        config = dict(data.config)
        classes = {data.run_info[r].beam_energy for r in data.runs if r in data.run_info}
        if len(classes) > 1:
            return AlgorithmResult(
                AlgorithmStatus.FAILURE,
                message=f"runs {data.runs[0]}..{data.runs[-1]} mix beam energies "
                f"{sorted(classes)}: an interval never spans 4S and off-resonance runs",
            )
        iv = beam_intervals(data, "atom_time", config)
        if isinstance(iv, AlgorithmResult):
            return iv
        nominals = [
            data.run_info[r].ecms_nominal_gev
            for r in data.runs
            if r in data.run_info and data.run_info[r].ecms_nominal_gev
        ]
        nominal = float(np.median(nominals)) if nominals else None
        hists = per_atom(data, "mass", iv)  # (atoms, mass, resolution)
        mass_atoms = hists.sum(axis=2)
        mid = _centres(MASS_BINS)
        mode = float(mid[int(np.argmax(mass_atoms.sum(axis=0)))])
        core = np.abs(mid - mode) <= CORE_HALF_WIDTH_GEV
        n_core = mass_atoms[:, core].sum(axis=1)
        s1 = mass_atoms[:, core] @ (mid[core] - mode)
        s2 = mass_atoms[:, core] @ (mid[core] - mode) ** 2
        steps = iv.find_steps(n_core, s1, s2, threshold=float(config["step_threshold"]))
        subs = iv.subintervals(steps)
        fits: list[EcmsFit | None] = []
        messages: list[str] = []
        for lo, hi in subs:
            try:
                fit = fit_ecms(
                    hists[lo:hi].sum(axis=0),
                    nominal,
                    resolved_sigmas=float(config["spread_resolved_sigmas"]),
                    min_events=int(config["min_sub_events"]),
                )
            except ValueError as err:
                fits.append(None)
                messages.append(str(err))
            else:
                fits.append(fit)
                messages.append(fit.message)
        status = np.array(
            [
                ChannelStatus.NOT_ENOUGH_DATA
                if f is None
                else (ChannelStatus.OK if f.valid else ChannelStatus.FAILED)
                for f in fits
            ],
            dtype=np.int8,
        )
        ok = status == ChannelStatus.OK
        if not ok.any():
            return AlgorithmResult(
                AlgorithmStatus.NOT_ENOUGH_DATA
                if all(f is None for f in fits)
                else AlgorithmStatus.FAILURE,
                message="no sub-interval could be fitted: " + "; ".join(sorted(set(messages))),
            )
        source = iv.fallback(ok)
        good = [fits[s] for s in source]
        values = {
            "mass": np.array([f.mass for f in good if f]),
            "spread": np.array([f.spread for f in good if f]),
        }
        errors = {
            "mass": np.array([f.mass_error for f in good if f]),
            "spread": np.array([f.spread_error for f in good if f]),
        }
        payload = time_payload(
            COLLISION_MASS,
            iv,
            subs,
            values,
            errors,
            status,
            units={"mass": "GeV", "spread": "GeV"},
            description="collision energy sqrt(s) and the beam-energy spread per time "
            "interval, from the dimuon invariant mass (ISR line shape)",
            method="binned ISR line-shape fit of the dimuon mass, per-event mass resolution "
            "from the documented tracking resolution, beam-energy spread fitted",
            beam_energy=sorted(classes)[0] if classes else "",
            spread_resolved=[bool(f.resolved) for f in good if f],
            spread_squared=[float(f.s2) for f in good if f],
            spread_squared_error=[float(f.s2_error) for f in good if f],
            fallback_from=[int(s) if s != i else -1 for i, s in enumerate(source)],
            events=[float(f.n) if f else 0.0 for f in fits],
            steps=[float(iv.t_start[j]) for j in steps],
            notes=[m for m in messages if m],
        )
        diag = Diagnostics(
            tables={
                "subintervals": {
                    "t_start": np.array([iv.t_start[lo] for lo, _ in subs]),
                    "t_end": np.array([iv.t_end[hi - 1] for _, hi in subs]),
                    **values,
                    "mass_err": errors["mass"],
                    "spread_err": errors["spread"],
                    "status": status,
                }
            }
        )
        diag.histograms["mass"] = _mass_hist(hists.sum(axis=(0, 2)))
        return AlgorithmResult(AlgorithmStatus.OK, [payload], diag)


def _mass_hist(counts: F) -> object:
    import hist

    h = hist.Hist(hist.axis.Regular(*MASS_BINS, name="mass", label="dimuon mass (GeV)"))
    h.view()[...] = counts
    return h


def ecms_calibration() -> Calibration:
    """The ``ecms`` declaration (stage ``analysis``, after ``boostvector``)."""
    return Calibration(
        name="ecms",
        expert="beam-calibration expert",
        inputs={"dimuons": CollectorInput(MassCollector(), ("hlt_mumu_2trk",))},
        algorithms=[EcmsAlgorithm()],
        strategy=SequentialBoundaries(),
        stage="analysis",
        run_type="physics",
        beam_energy=("4S", "Continuum"),
        magnet_on=True,
        depends_on=("boostvector",),
        expert_config={
            "outer_loss": "pow(0.000020e0*rawTime, 2) +  1./nEv",
            "inner_loss": "pow(0.000120e0*rawTime, 2) +  1./nEv",
            "min_sub_events": 50,
            "min_events": 15,
            "step_threshold": 30.0,
            "spread_resolved_sigmas": 2.0,
        },
        description="CollisionInvariantMass (Ecms and the beam-energy spread) per time "
        "interval from the dimuon mass line shape (ISR, per-event resolution, spread), 4S and "
        "off-resonance runs apart; intervals with basf2's eCMS losses, cut where Ecms steps.",
    )


def __dir__() -> list[str]:
    return __all__
