"""TOP module T0 (``top-module-t0``, TOPCalModuleT0): Gaussian fits of the difference of the two
muons' track times for every pair of slots, then a weighted linear least squares for the 16
modules with sum = 0; a new payload where a module's timing steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import hist
import numpy as np
import numpy.typing as npt
from scipy import special

from b2calib.calibration import (
    Algorithm,
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Calibration,
    CollectorInput,
    Constants,
    Diagnostics,
    PayloadComparison,
    SequentialBoundaries,
)
from b2calib.calibration.toolkit import NotEnoughData, channel_payload, guarded, require
from b2calib.conditions.iov import RunKey
from b2calib.detectors.top import fitviews
from b2calib.detectors.top.channel_t0 import applied_channel_t0
from b2calib.detectors.top.collectors import ModuleT0Collector, run_tables
from b2calib.detectors.top.photons import BOUNDARY_CONFIG, phase_boundaries
from b2calib.exceptions import CalibrationError
from b2calib.fit import ChannelFits, fit_channels
from b2calib.geometry import top

__all__ = [
    "MODULE_T0",
    "ModuleT0Algorithm",
    "applied_module_t0",
    "module_t0_calibration",
    "module_t0_collector",
    "solve_module_t0",
]

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

MODULE_T0 = "TOPCalModuleT0"
_NM = top.N_MODULES
_MODULE_KEYS = {"module": np.arange(1, _NM + 1, dtype=np.int16)}


def applied_module_t0(constants: Constants, run: RunKey) -> F:
    """Module T0 of a run (16 finite values), from the TOPCalModuleT0 payload."""
    p = constants.require(MODULE_T0, *run)
    v = np.asarray(p.value("value"), dtype=np.float64)
    if len(v) != _NM or not np.all(np.isfinite(v)):
        raise CalibrationError(f"payload {MODULE_T0} for run {run}: need {_NM} finite values")
    return v


def module_t0_collector(constants: Constants, runs: Sequence[RunKey]) -> ModuleT0Collector:
    """The module-T0 collector with the channel T0 valid for each run."""
    return ModuleT0Collector(run_tables({r: applied_channel_t0(constants, r) for r in runs}))


def _pair_modules() -> tuple[I64, I64]:
    p = np.arange(_NM * _NM)
    return p // _NM + 1, p % _NM + 1


def solve_module_t0(
    a: npt.ArrayLike, b: npt.ArrayLike, diff: npt.ArrayLike, sigma: npt.ArrayLike
) -> tuple[F, F, float, int]:
    """Module T0s from pair differences ``diff = T0[a] - T0[b]`` (+- ``sigma``) with
    sum(T0) = 0.

    Weighted linear least squares; the covariance is the pseudo-inverse of the normal matrix,
    whose null space (a common shift) is exactly the direction the constraint removes.
    Returns values, covariance, chi2 and degrees of freedom; raises CalibrationError when the
    pairs do not connect all modules.
    """
    ai, bi = np.asarray(a, dtype=np.int64) - 1, np.asarray(b, dtype=np.int64) - 1
    y, s = np.asarray(diff, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    n = len(y)
    design = np.zeros((n, _NM))
    design[np.arange(n), ai] = 1.0
    design[np.arange(n), bi] = -1.0
    wt = 1.0 / s**2
    normal = design.T @ (design * wt[:, None])
    if np.linalg.matrix_rank(normal) < _NM - 1:
        raise CalibrationError("the slot pairs with data do not connect all 16 modules")
    cov = np.asarray(np.linalg.pinv(normal, hermitian=True), dtype=np.float64)
    t0 = cov @ (design.T @ (wt * y))
    t0 -= t0.mean()  # exact zero sum (removes rounding)
    chi2 = float(np.sum(wt * (y - design @ t0) ** 2))
    return t0, cov, chi2, n - (_NM - 1)


def _pair_fits(h: hist.Hist, min_entries: int) -> tuple[ChannelFits, npt.NDArray[np.bool_]]:
    fits = fit_channels(h, background=True, min_entries=min_entries)
    fits.errors["mu"] = _sandwich_mu_error(h.values().astype(np.float64), h.axes[1].edges, fits)
    a, b = _pair_modules()
    usable = fits.ok & (a < b) & np.isfinite(fits.errors["mu"]) & (fits.errors["mu"] > 0)
    return fits, usable


def _sandwich_mu_error(counts: F, edges: F, fits: ChannelFits) -> F:
    """Error of the fitted peak position robust to the peak shape: the sandwich (Huber-White)
    covariance ``I^-1 J I^-1`` of the Gaussian + flat binned Poisson fit, with ``J`` from the
    observed residuals. The per-pair track-time differences are a mixture of resolutions
    (photon counts and crossing positions vary), not one Gaussian, so the inverse information
    alone misstates the scatter of the fitted mean. The flat background (often at its bound 0,
    and uncorrelated with the position of a symmetric peak) is held fixed."""
    n, mu, sg, b = (np.nan_to_num(fits.values[k])[:, None] for k in ("n", "mu", "sigma", "b"))
    sg = np.where(sg > 0, sg, 1.0)
    z = (edges[None, :] - mu) / sg
    cdf = 0.5 * special.erfc(-z / np.sqrt(2.0))
    pdf = np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
    prob = np.diff(cdf, axis=1)
    width = np.diff(edges)[None, :]
    lam = np.maximum(n * prob + b * width, 1e-12)
    jac = np.stack(
        [
            prob,
            -n * np.diff(pdf, axis=1) / sg,
            -n * np.diff(pdf * z, axis=1) / sg,
        ],
        axis=-1,
    )
    info = np.einsum("cbp,cbq->cpq", jac / lam[..., None], jac)
    meat = np.einsum("cbp,cbq->cpq", jac * ((counts - lam) / lam)[..., None] ** 2, jac)
    out = np.full(len(counts), np.nan)
    good = np.linalg.cond(info) < 1e12
    inv = np.linalg.inv(info[good])
    out[good] = np.sqrt(np.abs((inv @ meat[good] @ inv)[:, 1, 1]))
    return out


class ModuleT0Algorithm(Algorithm):
    """Module T0 (16 values, sum 0) from the track time differences of slot pairs.

    Every pair with at least ``min_pair_entries`` events gets a Gaussian (+ flat) fit of the
    difference (batched); then :func:`solve_module_t0`. The payload errors are the square roots
    of the constrained covariance's diagonal. Boundaries are requested where a module's timing
    steps (:func:`~b2calib.detectors.top.photons.phase_boundaries` on the photons of all
    matched tracks).
    """

    name = "module_t0"
    payloads = (MODULE_T0,)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        (h,) = require(data, "pair_diff", message="no TOP track pairs")
        fits, usable = _pair_fits(h, int(data.config["min_pair_entries"]))
        a, b = _pair_modules()
        diag = Diagnostics(histograms={"pair_diff": h})
        diag.add_fits("pair_fits", fits, np.arange(_NM * _NM))
        seen = np.zeros(_NM + 1, dtype=bool)
        seen[a[usable]] = seen[b[usable]] = True
        if not seen[1:].all():
            missing = np.flatnonzero(~seen[1:]) + 1
            raise NotEnoughData(f"modules without a usable slot pair: {missing.tolist()}", diag)
        try:
            t0, cov, chi2, ndf = solve_module_t0(
                a[usable], b[usable], fits.values["mu"][usable], fits.errors["mu"][usable]
            )
        except CalibrationError as exc:
            raise NotEnoughData(str(exc), diag) from exc
        err = np.sqrt(np.diag(cov))
        diag.tables["module_t0"] = {
            "module": np.arange(1, _NM + 1),
            "value": t0,
            "error": err,
            **{f"cov_{j + 1}": cov[:, j] for j in range(_NM)},  # the constrained covariance
        }
        payload = channel_payload(
            MODULE_T0,
            _MODULE_KEYS,
            t0,
            err,
            units="ns",
            description="module T0 (sum over modules = 0): t = t_raw - channel - module - common",
            chi2=chi2,
            ndf=ndf,
            pairs=int(usable.sum()),
        )
        return AlgorithmResult(
            AlgorithmStatus.OK,
            [payload],
            diag,
            f"{int(usable.sum())} pairs, chi2/ndf {chi2:.1f}/{ndf}",
        )

    def boundaries(self, data: AlgorithmInput) -> list[RunKey]:
        """Runs where a module's timing steps, from the per-module phases of all photons
        matched to tracks (far more statistics than the two-track events): see
        :func:`~b2calib.detectors.top.photons.phase_boundaries`."""
        runs = [r for r in data.runs if "module_phase" in data.per_run.get(r, {})]
        phases = [data.per_run[r]["module_phase"].values() for r in runs]
        return phase_boundaries(runs, phases, data.config)


def module_t0_calibration() -> Calibration:
    """``top-module-t0``: TOPCalModuleT0 from mu-mu track pairs, after the channel T0."""
    return Calibration(
        name="top-module-t0",
        validation=PayloadComparison(
            max_abs_change=0.2, error_outlier_fraction=0.25
        ),  # 16 module offsets (ns): one module moving is a warning
        expert="top-calibration@b2calib.example",
        inputs={"pairs": CollectorInput(module_t0_collector, ("hlt_mumu_2trk",))},
        algorithms=[ModuleT0Algorithm()],
        strategy=SequentialBoundaries(),
        run_type="physics",
        magnet_on=True,
        depends_on=("top-channel-t0",),
        expert_config={
            "min_pair_entries": 20,
            **BOUNDARY_CONFIG,
        },
        open_end=True,
        description="TOP module T0 (TOPCalModuleT0): Gaussian fits of the track time "
        "difference of slot pairs in mu-mu events, weighted least squares with sum = 0; "
        "payloads split where the module T0s change.",
        fit_views={MODULE_T0: fitviews.MODULE_T0_VIEW},
    )


def __dir__() -> list[str]:
    return __all__
