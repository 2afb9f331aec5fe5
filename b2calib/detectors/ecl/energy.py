"""ECL crystal energy calibration (``ecl-energy``; basf2 eclBhabhaE / eclee5x5, eclGammaGammaE,
eclMuMuE and eclMergingCrystalE).

Convention (the truth payload's): ``E = const * E_raw`` per crystal (``ECLCrystalEnergy``).

One algorithm (:class:`ECLEnergyAlgorithm`) runs the three methods and their merge in one
execution, each method in its module:

=========  ========================================================================================
``ee5x5``  Bhabha 5x5 (``ECLCrystalEnergy5x5``): one sparse linear system for all crystals from
           the 5x5 energies of Bhabha electrons and their track momenta
``peaks``  gamma-gamma and mu-mu peaks (``ECLCrystalEnergyGammaGamma``, ``ECLCrystalEnergyMuMu``):
           Novosibirsk + constant peak fits per crystal, solved over the 5x5 energy sharing
``merge``  ``ECLCrystalEnergy``: inverse-variance average of the methods that measured the
           crystal, with a bit mask of which did
=========  ========================================================================================

The statistics each method needs
    The peak methods need ``gg_min_entries`` photons and ``mumu_min_entries`` muons (150, as
    basf2) per crystal; crystals with fewer are NOT_ENOUGH_DATA for that method and the merge
    uses the methods that have a constant (the ``methods`` mask says which). The photons and
    muons come with the luminosity: with the mu-mu skim unprescaled and the gamma-gamma one
    at a 5 %/5 % share (a real bucket's fractions), a crystal collects a median of ~150 muons
    and ~130 photons per fb^-1, so the peaks set most crystals from ~2 fb^-1 on (including
    the endcap rings no Bhabha reaches; bench/RESULTS_ecl_realistic.md). On a bucket of a
    fraction of that, as on a test-sized sample, they set none: the merge is the 5x5 alone.

The Monte-Carlo expectations
    basf2 reads them from payloads made on MC with nominal constants. The simulator has no
    nominal-constant mode, so they are expert-config numbers: the 5x5 fraction ``rho`` is the
    factor that makes the 5x5 solution unbiased on simulation with the constants known (it
    absorbs the small errors-in-variables bias of the method), the peaks are the fitted peaks on
    simulation with the true constants applied (equivalent to nominal-constant MC). The
    expected photon energy uses the run's CollisionInvariantMass when the input tags have it
    (its time average over the run, as the beam calibration writes it per time interval),
    else the nominal Upsilon(4S) energy (the calibration selects 4S runs), which the real one can
    miss by a few MeV: the 0.03 % uncertainty of the gamma-gamma expectation, a common scale.
    basf2 keeps one expectation per crystal; here the peaks are expected per theta ring (the
    gamma-gamma one varies by 0.2 % with theta; 0 = no expectation, its crystals are
    NOT_ENOUGH_DATA), with MC errors scaled to the scatter seen between independent
    simulations (x2 and x4.5 the statistical ones), and the crystal-to-crystal spread of
    the MC peaks within a ring (0.065 % for gamma-gamma, 0.19 % for mu-mu, beyond their
    statistics) is the ``*_expected_peak_spread`` per-crystal uncertainty. The test suite
    re-derives the expectations from fresh simulation and checks them against these defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from b2calib.calibration import (
    Algorithm,
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Calibration,
    CollectorInput,
    Diagnostics,
    PayloadComparison,
    SequentialBoundaries,
)
from b2calib.calibration.fitview import (
    ChannelFit,
    HistogramFit,
    NoChannelFit,
    NovosibirskPeak,
    ViewContext,
)
from b2calib.calibration.toolkit import NotEnoughData, channel_payload, guarded
from b2calib.conditions import ChannelStatus
from b2calib.conditions.iov import RunKey
from b2calib.detectors.ecl._common import CRATE, F, crate_step_boundaries
from b2calib.detectors.ecl.ee5x5 import EE5X5_PAYLOAD, ECLee5x5Collector, solve_ee5x5
from b2calib.detectors.ecl.merge import (
    MERGED_PAYLOAD,
    METHOD_BITS,
    applied_constants,
    applied_errors,
    merge_methods,
)
from b2calib.detectors.ecl.peaks import (
    GG_FIT_RANGE,
    GG_PAYLOAD,
    MUMU_PAYLOAD,
    RING,
    peak_collector,
    peak_constants,
)
from b2calib.geometry import ecl

__all__ = ["DEFAULT_CONFIG", "ECLEnergyAlgorithm", "energy_calibration"]

#: Each peak method's key of the expert config and its histogram.
_PEAK_KEYS = {"gamma_gamma": ("gg", "gg_ratio"), "mumu": ("mumu", "mumu_energy")}

DEFAULT_CONFIG: dict[str, Any] = {
    "ee5x5_min_entries": 10,
    "ee5x5_expected": 0.94359,
    "ee5x5_expected_error": 0.00012,
    "ee5x5_resolution": 0.018,
    "ee5x5_prior_width": 0.2,
    "gg_min_entries": 150,
    "gg_expected_peak": [
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.94353,
        0.94584,
        0.94629,
        0.94667,
        0.94663,
        0.94643,
        0.94638,
        0.94635,
        0.94607,
        0.9464,
        0.94665,
        0.94671,
        0.94655,
        0.94664,
        0.94684,
        0.94669,
        0.9468,
        0.947,
        0.94718,
        0.94739,
        0.94732,
        0.94697,
        0.94747,
        0.94707,
        0.94744,
        0.94691,
        0.94686,
        0.94682,
        0.94694,
        0.94713,
        0.94706,
        0.94727,
        0.94702,
        0.94677,
        0.94685,
        0.94682,
        0.94677,
        0.94735,
        0.94656,
        0.94643,
        0.94682,
        0.94667,
        0.94671,
        0.94662,
        0.94638,
        0.94625,
        0.94593,
        0.9463,
        0.94622,
        0.94655,
        0.94587,
        0.9461,
        0.94626,
        0.94633,
        0.94634,
        0.94594,
        0.94539,
        0.94311,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    # MC statistical errors x 2: the ring peaks of independent simulations scatter by about
    # twice their statistical errors (chi2/ndf ~4 between two samples with those alone)
    "gg_expected_peak_error": [
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.00096,
        0.00032,
        0.00026,
        0.00022,
        0.00022,
        0.00022,
        0.00022,
        0.0002,
        0.0002,
        0.0002,
        0.0002,
        0.00022,
        0.00022,
        0.00022,
        0.00022,
        0.00024,
        0.00024,
        0.00024,
        0.00026,
        0.00026,
        0.00026,
        0.00026,
        0.00026,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00026,
        0.00026,
        0.00026,
        0.00026,
        0.00026,
        0.00026,
        0.00024,
        0.00024,
        0.00024,
        0.00024,
        0.00024,
        0.00022,
        0.00022,
        0.00024,
        0.00022,
        0.00022,
        0.0002,
        0.00018,
        0.0002,
        0.00028,
        0.00076,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    "gg_expected_scale_error": 0.0003,
    "gg_expected_peak_spread": 0.00065,
    "mumu_min_entries": 150,
    "mumu_expected_peak": [
        0.0,
        0.0,
        0.0,
        0.16942,
        0.17107,
        0.17058,
        0.17141,
        0.17033,
        0.17087,
        0.17116,
        0.17058,
        0.17099,
        0.17125,
        0.1705,
        0.17095,
        0.17072,
        0.17046,
        0.17078,
        0.17115,
        0.17059,
        0.17113,
        0.17049,
        0.17088,
        0.17099,
        0.17088,
        0.17084,
        0.17118,
        0.17055,
        0.17083,
        0.17086,
        0.17072,
        0.17112,
        0.17091,
        0.1705,
        0.17091,
        0.17109,
        0.1708,
        0.17107,
        0.17058,
        0.17079,
        0.17054,
        0.17095,
        0.17029,
        0.17079,
        0.17087,
        0.17104,
        0.17107,
        0.17081,
        0.17053,
        0.17084,
        0.17056,
        0.17075,
        0.17067,
        0.17074,
        0.17058,
        0.17107,
        0.17112,
        0.17093,
        0.1708,
        0.1707,
        0.17082,
        0.17099,
        0.17091,
        0.17093,
        0.17066,
        0.171,
        0.16929,
        0.0,
        0.0,
    ],
    # MC statistical errors x 4.5: the ring peaks of independent simulations scatter by
    # about 4.5 times their statistical errors (not understood: the Landau-like shape makes
    # the ring fits of peak and tail trade off; ~0.35 %, small beside the crystal errors)
    "mumu_expected_peak_error": [
        0.0,
        0.0,
        0.0,
        0.00275,
        0.00121,
        0.0009,
        0.00077,
        0.00072,
        0.00067,
        0.00067,
        0.00067,
        0.00067,
        0.00067,
        0.00054,
        0.00054,
        0.00054,
        0.00054,
        0.00054,
        0.00054,
        0.00054,
        0.00058,
        0.00054,
        0.00058,
        0.00058,
        0.00058,
        0.00058,
        0.00058,
        0.00058,
        0.00058,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00067,
        0.00067,
        0.00067,
        0.00067,
        0.00067,
        0.00067,
        0.00063,
        0.00063,
        0.00067,
        0.00067,
        0.00072,
        0.00077,
        0.00113,
        0.00266,
        0.0,
        0.0,
    ],
    # the mean mu-mu peak of two independent simulations differs by 0.13 %
    "mumu_expected_scale_error": 0.0015,
    "mumu_expected_peak_spread": 0.0019,
    "unmeasured_width": 0.05,
    "tolerance": 0.1,
    "payload_boundaries": [],
    "find_boundaries": True,
    "step_min": 0.02,
    "step_significance": 5.0,
}


class ECLEnergyAlgorithm(Algorithm):
    """The three crystal-energy methods and their merge, in one execution.

    Produces ECLCrystalEnergy5x5, ECLCrystalEnergyGammaGamma, ECLCrystalEnergyMuMu (per-method,
    with per-crystal status) and ECLCrystalEnergy (merged, with the ``methods`` bit mask). Asks
    to ITERATE while the merged constants move from the constants the collectors applied by an
    RMS over crystals of more than ``tolerance`` standard deviations. Requests payload
    boundaries where a crate's mean raw 5x5 energy fraction steps between runs.
    """

    name = "ecl_energy"
    payloads = (EE5X5_PAYLOAD, GG_PAYLOAD, MUMU_PAYLOAD, MERGED_PAYLOAD)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        hs = data.histograms
        nc = ecl.N_CRYSTALS
        applied = applied_constants(data.constants, data.runs[0])
        applied_error = applied_errors(data.constants, data.runs[0], cfg["unmeasured_width"])
        methods: dict[str, tuple[F, F, np.ndarray]] = {}
        diag = Diagnostics()
        info: dict[str, Any] = {}
        # the 5x5 system (a banded Cholesky and the diagonal of its inverse: about a second
        # for the 8016 crystals of a bench payload, on its first iteration, remembered after)
        # and the mu-mu method are computed on two more threads while the gamma-gamma method
        # fits: they release the GIL in their compiled and BLAS/LAPACK parts, none reads what
        # another computes, and their diagnostics are added in the same order after
        with ThreadPoolExecutor(max_workers=2) as pool:
            ee5x5 = None
            if "ee5x5_q" in hs:
                ee5x5 = pool.submit(
                    solve_ee5x5,
                    hs["ee5x5_q"],
                    hs["ee5x5_r"],
                    hs["ee5x5_n"],
                    hs["ee5x5_syy"],
                    expected=cfg["ee5x5_expected"],
                    expected_error=cfg["ee5x5_expected_error"],
                    min_entries=cfg["ee5x5_min_entries"],
                    resolution=cfg["ee5x5_resolution"],
                    prior_width=cfg["ee5x5_prior_width"],
                )
                diag.histograms["ee5x5_crate_ratio"] = hs["ee5x5_crate_ratio"]
                diag.histograms["ee5x5_n"] = hs["ee5x5_n"]
            mumu = pool.submit(self._peak_method, "mumu", cfg, hs, applied, applied_error)
            gg = self._peak_method("gamma_gamma", cfg, hs, applied, applied_error)
            peaks = {"gamma_gamma": gg, "mumu": mumu.result()}
            if ee5x5 is not None:
                v, e, s, info["ee5x5"] = ee5x5.result()
            else:
                v, e, s = np.full(nc, np.nan), np.full(nc, np.nan), np.full(nc, 1, np.int8)
        for mode, (*_, fits) in peaks.items():
            if fits is not None:
                key, hname = _PEAK_KEYS[mode]
                diag.histograms[hname] = hs[hname]
                diag.add_fits(key, fits, np.arange(1, nc + 1))
        methods["ee5x5"] = (v, e, s)
        # the merge's order: 5x5, gamma-gamma, mu-mu
        methods |= {mode: (v, e, s) for mode, (v, e, s, _) in peaks.items()}
        value, error, status, mask = merge_methods(methods)
        counts = {name: int(np.sum(s == ChannelStatus.OK)) for name, (_, _, s) in methods.items()}
        ok = status == ChannelStatus.OK
        if not ok.any():
            raise NotEnoughData(
                f"no crystal calibrated by any method (OK per method: {counts})", diag
            )
        with np.errstate(invalid="ignore"):
            shift = np.abs(value - applied) / error
        max_shift = float(np.max(shift[ok]))
        rms_shift = float(np.sqrt(np.mean(shift[ok] ** 2)))
        previous = data.constants.get(MERGED_PAYLOAD, *data.runs[0])
        done = previous is not None and rms_shift < cfg["tolerance"]
        diag.tables["crystals"] = {
            "cellID": np.arange(1, nc + 1, dtype=np.int32),
            "crate": CRATE.astype(np.int16),
            "value": value,
            "error": error,
            "status": status,
            "methods": mask,
            "applied": applied,
            **{f"{k}_value": m[0] for k, m in methods.items()},
            **{f"{k}_error": m[1] for k, m in methods.items()},
        }
        meta = {
            "method": "basf2 eclee5x5 / eclGammaGammaE / eclMuMuE / eclMergingCrystalE",
            "description": "per-crystal energy constant: E = const * E_raw",
            "ok_per_method": counts,
            "ee5x5": info.get("ee5x5", {}),
            "iteration": data.iteration,
        }
        # per crystal: the value and error NaN where the status is not OK
        cells = {"cellID": np.arange(1, nc + 1, dtype=np.int32)}
        payloads = [
            channel_payload(
                name, cells, *methods[key], units="1", flagged=np.nan, **meta | {"method": method}
            )
            for name, key, method in (
                (EE5X5_PAYLOAD, "ee5x5", "basf2 eclee5x5"),
                (GG_PAYLOAD, "gamma_gamma", "basf2 eclGammaGammaE"),
                (MUMU_PAYLOAD, "mumu", "basf2 eclMuMuE"),
            )
        ]
        merged = {"value": value, "methods": mask}
        payloads.append(
            channel_payload(
                MERGED_PAYLOAD,
                cells,
                merged,
                error,
                status,
                units="1",
                flagged=np.nan,
                methods_bits=METHOD_BITS,
                **meta,
            )
        )
        message = (
            f"OK per method {counts}; merged {int(ok.sum())} of {nc} crystals; "
            f"shift max {max_shift:.3g} rms {rms_shift:.3g} sigma"
        )
        status_code = AlgorithmStatus.OK if done else AlgorithmStatus.ITERATE
        return AlgorithmResult(status_code, payloads, diag, message)

    @staticmethod
    def _peak_method(
        mode: str,
        cfg: Mapping[str, Any],
        hs: Mapping[str, Any],
        applied: F,
        applied_error: F,
    ) -> tuple[F, F, np.ndarray, Any]:
        """The constants of the gamma-gamma or mu-mu method (``mode``): values, errors,
        statuses and the fits (``None`` without histograms)."""
        key, hname = _PEAK_KEYS[mode]
        tail, vrange = (0.2, GG_FIT_RANGE) if mode == "gamma_gamma" else (-0.2, None)
        expected_peak = np.asarray(cfg[f"{key}_expected_peak"], dtype=np.float64)
        return peak_constants(
            hs.get(hname),
            hs.get(f"{key}_frac"),
            applied,
            expected=expected_peak[RING],
            expected_error=np.hypot(
                np.asarray(cfg[f"{key}_expected_peak_error"], dtype=np.float64),
                cfg[f"{key}_expected_scale_error"] * expected_peak,
            )[RING],
            expected_spread=cfg[f"{key}_expected_peak_spread"],
            applied_error=applied_error,
            min_entries=cfg[f"{key}_min_entries"],
            tail=tail,
            value_range=vrange,
        )

    def boundaries(self, data: AlgorithmInput) -> list[RunKey]:
        """Runs where a crate's mean raw 5x5 energy fraction steps, and where the constants
        the collectors applied change (see
        :func:`~b2calib.detectors.ecl._common.crate_step_boundaries`)."""
        return crate_step_boundaries(
            data, "ee5x5_crate_ratio", lambda run: applied_constants(data.constants, run)
        )


def _crystal_row(context: ViewContext) -> dict[str, Any]:
    """The ``crystals`` diagnostics row of the context's crystal."""
    table = context.table("crystals")
    i = int(np.flatnonzero(table["cellID"] == context.channel)[0])
    return {k: v[i] for k, v in table.items()}


def _method_values(context: ViewContext) -> str:
    """Each method's constant of the crystal and whether the merge used it."""
    row = _crystal_row(context)
    parts = []
    for method, bit in METHOD_BITS.items():
        v, e = float(row[f"{method}_value"]), float(row[f"{method}_error"])
        used = " (used)" if int(row["methods"]) & bit else ""
        parts.append(f"{method} {v:.4f} +- {e:.4f}{used}" if np.isfinite(v) else f"{method} -")
    return f"constant applied {float(row['applied']):.4f}; per method: " + ", ".join(parts)


def _ee5x5_detail(context: ViewContext) -> str:
    n = context.diagnostics.histograms.get("ee5x5_n")
    need = context.config.get("ee5x5_min_entries")
    if n is None:
        return "no Bhabha electrons in this execution"
    count = float(np.asarray(n.values())[context.channel - 1])
    return f"central crystal of {count:.0f} Bhabha electrons ({need} required)"


def _explain_peak(key: str) -> Any:
    def explain(context: ViewContext, fit: ChannelFit) -> str | None:
        ring = int(RING[context.channel - 1])
        expected = float(np.asarray(context.config.get(f"{key}_expected_peak", [0.0] * 69))[ring])
        need = context.config.get(f"{key}_min_entries")
        if fit.ok and context.status != "OK":
            if not expected > 0:
                return f"no Monte-Carlo expectation for theta ring {ring}"
            return "the solution over the crystals' energy sharing failed for this crystal"
        if fit.status == ChannelStatus.NOT_ENOUGH_DATA and need and fit.entries >= int(need):
            return (
                f"the shape (width, tail) of theta ring {ring} could not be measured (ring sum "
                "< 200 entries, or its fit failed)"
            )
        if fit.ok:
            return (
                "the constants of all crystals are solved together from their peaks and the 5x5 "
                f"energy sharing (expected peak {expected:.4g}); width and tail are those of "
                f"theta ring {ring}"
            )
        return None

    return explain


#: The drill-down: the peak methods' per-crystal histograms with their Novosibirsk + constant
#: fits; the Bhabha 5x5 method and the merge have no per-crystal histogram.
FIT_VIEWS = {
    GG_PAYLOAD: HistogramFit(
        "gg_ratio",
        "gg",
        NovosibirskPeak(),
        fit_range=GG_FIT_RANGE,
        min_entries="gg_min_entries",
        value_parameter="peak",
        explain=_explain_peak("gg"),
        absent="the gamma-gamma method collected no photons in this execution",
    ),
    MUMU_PAYLOAD: HistogramFit(
        "mumu_energy",
        "mumu",
        NovosibirskPeak(),
        min_entries="mumu_min_entries",
        value_parameter="peak",
        explain=_explain_peak("mumu"),
        absent="the mu-mu method collected no muons in this execution",
    ),
    EE5X5_PAYLOAD: NoChannelFit(
        "the Bhabha 5x5 method solves one linear system over all crystals from the "
        "electrons' 5x5 energies and track momenta",
        _ee5x5_detail,
    ),
    MERGED_PAYLOAD: NoChannelFit(
        "the inverse-variance average of the methods that measured the crystal",
        _method_values,
    ),
}


def energy_calibration() -> Calibration:
    """The ``ecl-energy`` calibration declaration."""
    return Calibration(
        name="ecl-energy",
        validation=PayloadComparison(
            max_rel_change=0.05,  # gains ~1: relative
            # one method's constants, merged into ECLCrystalEnergy (what physics uses): a method
            # without statistics in a bucket (the peaks below ~2 fb^-1 of their skims) is
            # reported, not an error of the calibration
            per_payload={
                name: PayloadComparison(max_rel_change=0.05, intermediate=True)
                for name in (
                    "ECLCrystalEnergy5x5",
                    "ECLCrystalEnergyGammaGamma",
                    "ECLCrystalEnergyMuMu",
                )
            },
        ),
        expert="ecl-calibration@b2calib.example",
        inputs={
            "bhabha": CollectorInput(ECLee5x5Collector(), ("hlt_bhabha",)),
            "gamma_gamma": CollectorInput(peak_collector("gamma_gamma"), ("hlt_gamma_gamma",)),
            "mumu": CollectorInput(peak_collector("mumu"), ("hlt_mumu_2trk",)),
        },
        algorithms=[ECLEnergyAlgorithm()],
        strategy=SequentialBoundaries(),
        run_type="physics",
        beam_energy="4S",
        expert_config=dict(DEFAULT_CONFIG),
        max_iterations=5,
        fit_views=FIT_VIEWS,
        description=(
            "ECL crystal energy constants (E = const * E_raw): Bhabha 5x5 linear system, "
            "gamma-gamma and mu-mu Novosibirsk peak fits, merged by inverse variance into "
            "ECLCrystalEnergy; a new payload where a crate's energy response steps."
        ),
    )


def __dir__() -> list[str]:
    return __all__
