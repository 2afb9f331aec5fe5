"""The boost vector (``boostvector``, CollisionBoostVector): the velocity of the centre-of-mass
frame in the lab, per time interval, from tight dimuon events.

Method. In the centre-of-mass frame an ``e+e- -> mu+mu-`` pair without radiation is at rest,
so its lab four-momentum ``(E, p) = (E1 + E2, p1 + p2)`` gives the boost ``p / E``.
Initial-state radiation gives the pair a momentum along the beam axis in the CMS, of either
sign with equal probability, so the sum of the CMS four-momenta of many pairs has no momentum:
the boost is the ratio of sums ``beta = sum p / sum E`` (a Lorentz transformation is linear,
so this holds to all orders; the mean of the per-event velocities ``p / E`` would be pulled by
``- beta (1 - beta^2) <u^2>`` by the radiative recoil ``u``, as much as its statistical error
here). Its covariance is the delta method's, ``cov(p - beta E) / (n E_mean^2)``. Only pairs
whose mass lies within 0.25 GeV of the mass peak (the mode of the interval's mass
distribution, in 50 MeV bins) are used: the far radiative tail only adds noise. Every sum is
an additive moment of :class:`~b2calib.detectors.beam.energy_collectors.BoostCollector`, summed over
the sub-interval's atoms. (basf2's ``BoostVectorAlgorithm``, R. Zlebcik, instead fits the
direction as the median plane normal and the rapidity as a median of the unbinned events,
errors by bootstrap; here the moments keep sub-intervals sums of atoms.)

Time intervals: the atoms are partitioned as Belle II does, outer intervals (whole runs, one
payload each) and inner sub-intervals, each minimising its loss, by default basf2's
``pow(rawTime - 8.0, 2) + 10 * pow(maxGap, 2)`` for both (the expert config's ``outerLoss``
and ``innerLoss``, basf2's names), and a sub-interval is made to start wherever the
per-atom boost steps inside a run (:class:`~b2calib.calibration.intervals.IntervalAlgorithm`
does the split, the fits and the fallbacks). A sub-interval with too few events or a failed
estimate copies its nearest good neighbour, flagged (``NOT_ENOUGH_DATA`` / ``FAILED``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from b2calib.calibration import (
    AlgorithmInput,
    Calibration,
    CollectorInput,
    PayloadComparison,
    SequentialBoundaries,
)
from b2calib.calibration.fitview import NoChannelFit
from b2calib.calibration.intervals import (
    BOOSTVECTOR_INNER_LOSS,
    BOOSTVECTOR_OUTER_LOSS,
    Atom,
    IntervalAlgorithm,
    IntervalFit,
    OuterInterval,
    SubInterval,
    per_atom,
    sum_atoms,
)
from b2calib.calibration.toolkit import NotEnoughData
from b2calib.detectors.beam.energy_collectors import BOOST_MASS_BINS, BoostCollector

__all__ = [
    "BOOST_VECTOR",
    "PEAK_HALF_WIDTH_GEV",
    "BoostFit",
    "BoostVectorAlgorithm",
    "boost_from_moments",
    "boostvector_calibration",
    "peak_bins",
]

F = npt.NDArray[np.float64]

BOOST_VECTOR = "CollisionBoostVector"
#: Pairs within this distance of the mass peak are used (GeV).
PEAK_HALF_WIDTH_GEV = 0.25
_COV = ("cov_xx", "cov_xy", "cov_xz", "cov_yy", "cov_yz", "cov_zz")
_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
#: positions of the sums of products in the moment axis (E, px, py, pz: 0..3)
_PRODUCT = {(i, j): 5 + k for k, (i, j) in enumerate((i, j) for i in range(4) for j in range(i, 4))}


@dataclass(frozen=True)
class BoostFit:
    """The boost of one sub-interval: ``beta`` (3,), its covariance (3, 3), the pairs used."""

    beta: F
    cov: F
    n: float

    @property
    def ok(self) -> bool:
        """Finite, with a positive-definite covariance."""
        if not (np.all(np.isfinite(self.beta)) and np.all(np.isfinite(self.cov))):
            return False
        return bool(np.all(np.linalg.eigvalsh(self.cov) > 0))


def peak_bins(moments: npt.ArrayLike, half_width: float = PEAK_HALF_WIDTH_GEV) -> F:
    """The mass bins (of ``moments``, ``(..., mass, moment)``) within ``half_width`` of the
    most populated one, as a 0/1 mask."""
    m = np.asarray(moments, dtype=np.float64)
    counts = m[..., 0].reshape(-1, m.shape[-2]).sum(axis=0)
    n, lo, hi = BOOST_MASS_BINS
    centres = lo + (np.arange(n) + 0.5) * (hi - lo) / n
    peak = centres[int(np.argmax(counts))]
    return (np.abs(centres - peak) <= half_width + 1e-9).astype(np.float64)


def boost_from_moments(moments: npt.ArrayLike, mask: npt.ArrayLike) -> BoostFit:
    """The boost ``sum p / sum E`` and its covariance from moments ``(mass, moment)`` (summed
    over atoms) in the mass bins of ``mask``."""
    s = np.asarray(mask, dtype=np.float64) @ np.asarray(moments, dtype=np.float64)
    n = float(s[0])
    if n < 2:
        return BoostFit(np.full(3, np.nan), np.full((3, 3), np.nan), n)
    sum_e, sum_p = s[1], s[2:5]
    beta = sum_p / sum_e
    second = np.empty((4, 4))
    for (i, j), k in _PRODUCT.items():
        second[i, j] = second[j, i] = s[k]
    mean = s[1:5] / n
    cov4 = (second - n * np.outer(mean, mean)) / (n - 1)  # sample covariance of (E, p)
    jac = np.column_stack([-beta, np.eye(3)])  # d = p - beta E
    cov = jac @ cov4 @ jac.T / (n * mean[0] ** 2)
    return BoostFit(beta, cov, n)


class BoostVectorAlgorithm(IntervalAlgorithm):
    """CollisionBoostVector per sub-interval from the dimuon four-momentum moments (see the
    module); the step search follows the per-atom boost."""

    name = "boostvector"
    payload = BOOST_VECTOR
    payloads = (BOOST_VECTOR,)
    default_outer_loss = BOOSTVECTOR_OUTER_LOSS
    default_inner_loss = BOOSTVECTOR_INNER_LOSS
    units: ClassVar[Mapping[str, str]] = {
        **{f"b{c}": "" for c in "xyz"},
        **dict.fromkeys(_COV, ""),
    }
    description = (
        "velocity of the centre-of-mass frame in the lab (beta vector) per time interval, from "
        "the dimuon four-momentum sum near the mass peak"
    )

    @staticmethod
    def _mask(data: AlgorithmInput) -> F:
        h = data.histograms["boost_moments"]
        return peak_bins(
            np.asarray(h.values()).sum(axis=0), float(data.config["peak_half_width_gev"])
        )

    def fit_sub(
        self,
        data: AlgorithmInput,
        outer: OuterInterval,
        sub: SubInterval,
        atoms: Sequence[Atom],
        shared: IntervalFit | None,
    ) -> IntervalFit | None:
        h = sum_atoms(data.per_run, "boost_moments", [atoms[i] for i in sub.atoms])
        if h is None:
            raise NotEnoughData("no dimuon in the sub-interval")
        fit = boost_from_moments(np.asarray(h.values()), self._mask(data))
        if fit.n < self.min_sub_events:
            raise NotEnoughData(
                f"{fit.n:.0f} dimuons near the mass peak, {self.min_sub_events:g} needed"
            )
        values = {f"b{c}": float(fit.beta[i]) for i, c in enumerate("xyz")}
        values |= {c: float(fit.cov[i, j]) for c, (i, j) in zip(_COV, _PAIRS, strict=True)}
        errors = {f"b{c}": float(np.sqrt(max(fit.cov[i, i], 0.0))) for i, c in enumerate("xyz")}
        return IntervalFit(values, errors, fit.ok, "" if fit.ok else "covariance not positive")

    def atom_series(self, data: AlgorithmInput, atoms: Sequence[Atom]) -> tuple[F, F] | None:
        moments = per_atom(data.per_run, "boost_moments", atoms)  # (atoms, mass, moment)
        return _atom_boosts(moments, self._mask(data))


def _atom_boosts(moments: npt.ArrayLike, mask: npt.ArrayLike, min_pairs: float = 10) -> tuple[F, F]:
    """Each atom's boost and its errors, ``(atoms, 3)`` each, from per-atom moments ``(atoms,
    mass, moment)``: :func:`boost_from_moments` of each atom, NaN where it has fewer than
    ``min_pairs`` pairs or its fit is not :attr:`BoostFit.ok`.

    The atoms' fits are made together (one batched product, one batched eigenvalue check):
    the same operations on each atom's numbers as :func:`boost_from_moments`, the same values
    bit for bit (tests/test_boost_ecms.py), without a Python fit per atom.
    """
    m = np.asarray(moments, dtype=np.float64)
    w = np.asarray(mask, dtype=np.float64)
    values = np.full((len(m), 3), np.nan)
    errors = np.full((len(m), 3), np.nan)
    if m.ndim != 3 or not len(m):
        return values, errors
    s_all = np.stack([w @ row for row in m])  # each atom's sums, as boost_from_moments
    rows = np.flatnonzero(s_all[:, 0] >= max(min_pairs, 2))
    s = s_all[rows]
    n, sum_e, sum_p = s[:, 0], s[:, 1], s[:, 2:5]
    beta = sum_p / sum_e[:, None]
    second = np.empty((len(s), 4, 4))
    for (i, j), k in _PRODUCT.items():
        second[:, i, j] = second[:, j, i] = s[:, k]
    mean = s[:, 1:5] / n[:, None]
    outer = mean[:, :, None] * mean[:, None, :]
    cov4 = (second - n[:, None, None] * outer) / (n - 1)[:, None, None]
    jac = np.concatenate([-beta[:, :, None], np.broadcast_to(np.eye(3), (len(s), 3, 3))], 2)
    cov = jac @ cov4 @ np.swapaxes(jac, 1, 2) / (n * mean[:, 0] ** 2)[:, None, None]
    ok = np.isfinite(beta).all(1) & np.isfinite(cov).all((1, 2))
    ok[ok] = (np.linalg.eigvalsh(cov[ok]) > 0).all(1)
    values[rows[ok]] = beta[ok]
    errors[rows[ok]] = np.sqrt(np.diagonal(cov[ok], axis1=1, axis2=2))
    return values, errors


_VIEW = NoChannelFit(
    "a time-dependent beam payload: one fit per time interval of all its events, not per "
    "channel (diagnostics intervals, atoms)",
    lambda c: c.step_message,
)


def boostvector_calibration() -> Calibration:
    """The ``boostvector`` declaration (stage ``analysis``, after ``beamspot``)."""
    return Calibration(
        name="boostvector",
        validation=PayloadComparison(
            columns=("bx", "by", "bz"),
            max_pull=None,
            max_abs_change=0.002,
            error_outlier_fraction=1.0,
        ),  # per interval; the beams move beyond its errors: a warning at most
        expert="beam-calibration@b2calib.example",
        inputs={"dimuons": CollectorInput(BoostCollector(), ("hlt_mumu_2trk",))},
        algorithms=[BoostVectorAlgorithm()],
        strategy=SequentialBoundaries(),
        stage="analysis",
        run_type="physics",
        magnet_on=True,
        after=("beamspot",),  # Belle II's order; reads no BeamSpot (ordering only)
        expert_config={
            "outerLoss": BOOSTVECTOR_OUTER_LOSS,
            "innerLoss": BOOSTVECTOR_INNER_LOSS,
            "peak_half_width_gev": PEAK_HALF_WIDTH_GEV,
        },
        description="CollisionBoostVector per time interval from the four-momentum sum of tight "
        "dimuon pairs near the mass peak (Belle II's BoostVectorAlgorithm intervals: 0.1 h atoms, "
        "outer and inner losses), sub-intervals also cut where the boost steps.",
        fit_views={BOOST_VECTOR: _VIEW},
    )


def __dir__() -> list[str]:
    return __all__
