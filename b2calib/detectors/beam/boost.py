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
an additive moment of :class:`~b2calib.detectors.beam.collectors.BoostCollector`, summed over
the sub-interval's atoms. (basf2's ``BoostVectorAlgorithm``, R. Zlebcik, instead fits the
direction as the median plane normal and the rapidity as a median of the unbinned events,
errors by bootstrap; here the moments keep sub-intervals sums of atoms.)

Time intervals: the atoms are partitioned as Belle II does, outer intervals (whole runs, one
payload each) and inner sub-intervals, each minimising its loss, by default basf2's
``pow(rawTime - 8.0, 2) + 10 * pow(maxGap, 2)`` for both (``outer_loss``, ``inner_loss`` in the
expert config); then the sub-intervals are cut where the boost steps
(:func:`~b2calib.detectors.beam.timeline.find_steps` on the per-atom ``beta``). A sub-interval
with too few events or a failed estimate copies its nearest good neighbour, flagged
(``NOT_ENOUGH_DATA`` / ``FAILED``).
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
from b2calib.detectors.beam.collectors import BOOST_MASS_BINS, BoostCollector
from b2calib.detectors.beam.timeline import (
    beam_intervals,
    outer_boundaries,
    per_atom,
    time_payload,
)

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


class BoostVectorAlgorithm(Algorithm):
    """CollisionBoostVector per sub-interval from the dimuon velocity moments (see the
    module)."""

    name = "boostvector"
    payloads = (BOOST_VECTOR,)

    def boundaries(self, data: AlgorithmInput) -> Sequence[RunKey]:
        return outer_boundaries(data, "atom_time", data.config)

    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        config = dict(data.config)
        iv = beam_intervals(data, "atom_time", config)
        if isinstance(iv, AlgorithmResult):
            return iv
        moments = per_atom(data, "boost_moments", iv)  # (atoms, mass, moment)
        mask = peak_bins(moments, float(config["peak_half_width_gev"]))
        sel = np.einsum("m,amk->ak", mask, moments)  # per atom: n, sums, sums of products
        # the steps of the mean momentum: a boost step moves it as much as the velocity's
        steps = iv.find_steps(
            sel[:, 0],
            sel[:, 2:5],
            sel[:, [_PRODUCT[1, 1], _PRODUCT[2, 2], _PRODUCT[3, 3]]],
            threshold=float(config["step_threshold"]),
        )
        subs = iv.subintervals(steps)
        fits = [boost_from_moments(moments[lo:hi].sum(axis=0), mask) for lo, hi in subs]
        min_sub = float(config["min_sub_events"])
        status = np.array(
            [
                ChannelStatus.OK
                if f.n >= min_sub and f.ok
                else (ChannelStatus.NOT_ENOUGH_DATA if f.n < min_sub else ChannelStatus.FAILED)
                for f in fits
            ],
            dtype=np.int8,
        )
        if not np.any(status == ChannelStatus.OK):
            return AlgorithmResult(
                AlgorithmStatus.NOT_ENOUGH_DATA,
                message=f"no sub-interval has {min_sub:.0f} dimuons near the mass peak "
                f"({sum(f.n for f in fits):.0f} in total)",
            )
        source = iv.fallback(status == ChannelStatus.OK)
        values = {c: np.array([fits[s].beta[i] for s in source]) for i, c in enumerate("xyz")}
        errors = {
            f"b{c}": np.sqrt([fits[s].cov[i, i] for s in source]) for i, c in enumerate("xyz")
        }
        columns = {f"b{c}": values[c] for c in "xyz"}
        for name, (i, j) in zip(_COV, _PAIRS, strict=True):
            columns[name] = np.array([fits[s].cov[i, j] for s in source])
        payload = time_payload(
            BOOST_VECTOR,
            iv,
            subs,
            columns,
            errors,
            status,
            units={**{f"b{c}": "" for c in "xyz"}, **dict.fromkeys(_COV, "")},
            description="velocity of the centre-of-mass frame in the lab (beta vector) per "
            "time interval, from the dimuon momentum sum",
            method="mean dimuon velocity near the mass peak, additive moments per 0.1 h atom",
            fallback_from=[int(s) if s != i else -1 for i, s in enumerate(source)],
            events=[f.n for f in fits],
            steps=[float(iv.t_start[j]) for j in steps],
        )
        diag = Diagnostics(
            tables={
                "subintervals": {
                    "t_start": np.array([iv.t_start[lo] for lo, _ in subs]),
                    "t_end": np.array([iv.t_end[hi - 1] for _, hi in subs]),
                    "n": np.array([f.n for f in fits]),
                    **dict(columns.items()),
                    "status": status,
                }
            }
        )
        return AlgorithmResult(AlgorithmStatus.OK, [payload], diag)


def boostvector_calibration() -> Calibration:
    """The ``boostvector`` declaration (stage ``analysis``, after ``beamspot``)."""
    return Calibration(
        name="boostvector",
        expert="beam-calibration expert",
        inputs={"dimuons": CollectorInput(BoostCollector(), ("hlt_mumu_2trk",))},
        algorithms=[BoostVectorAlgorithm()],
        strategy=SequentialBoundaries(),
        stage="analysis",
        run_type="physics",
        magnet_on=True,
        depends_on=("beamspot",),
        expert_config={
            "outer_loss": "pow(rawTime - 8.0, 2) + 10 * pow(maxGap, 2)",
            "inner_loss": "pow(rawTime - 8.0, 2) + 10 * pow(maxGap, 2)",
            "min_sub_events": 50,
            "min_events": 15,
            "peak_half_width_gev": PEAK_HALF_WIDTH_GEV,
            "step_threshold": 30.0,
        },
        description="CollisionBoostVector per time interval from the velocity of tight dimuon "
        "pairs near the mass peak (Belle II's BoostVectorAlgorithm intervals: 0.1 h atoms, "
        "outer and inner losses), sub-intervals also cut where the boost steps.",
    )


def __dir__() -> list[str]:
    return __all__
