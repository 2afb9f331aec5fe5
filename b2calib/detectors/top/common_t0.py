"""TOP common T0 (``top-common-t0``, TOPCalCommonT0): photon times with channel and module T0
applied, folded modulo the RF period, photon PDF + constant fit per run (defined modulo the RF
period: nearest the reference).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from b2calib.calibration import (
    Algorithm,
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Calibration,
    CollectorInput,
    Constants,
    Diagnostics,
    SequentialRunByRun,
)
from b2calib.calibration.toolkit import channel_payload, guarded, require
from b2calib.conditions import ChannelStatus
from b2calib.conditions.iov import RunKey
from b2calib.detectors.top.channel_t0 import CHANNEL_T0, applied_channel_t0
from b2calib.detectors.top.collectors import CommonT0Collector, run_tables
from b2calib.detectors.top.module_t0 import applied_module_t0
from b2calib.detectors.top.photons import PDF_CONFIG, PhotonPDF, circular_centre, rf_window
from b2calib.fit.template_shift import fit_template_shift
from b2calib.geometry import top

__all__ = ["COMMON_T0", "CommonT0Algorithm", "common_t0_calibration", "common_t0_collector"]

COMMON_T0 = "TOPCalCommonT0"
_NM, _NP = top.N_MODULES, top.N_PIXELS
_RF = top.RF_PERIOD_NS


def common_t0_collector(constants: Constants, runs: Sequence[RunKey]) -> CommonT0Collector:
    """The common-T0 collector with channel + module T0 valid for each run."""
    module = np.repeat(np.arange(_NM), _NP)
    return CommonT0Collector(
        run_tables(
            {
                r: applied_channel_t0(constants, r) + applied_module_t0(constants, r)[module]
                for r in runs
            }
        )
    )


def _uncalibrated_fraction(constants: Constants, run: RunKey) -> float:
    """Share of the live channels whose channel T0 is not calibrated (status not OK)."""
    p = constants.require(CHANNEL_T0, *run)
    if p.status is None:
        return 0.0
    live = p.status != ChannelStatus.DEAD
    return float(np.sum(live & (p.status != ChannelStatus.OK)) / max(np.sum(live), 1))


class CommonT0Algorithm(Algorithm):
    """Common T0 from the folded photon residuals (channel and module T0 applied).

    The folded distribution is read over one RF period around its peak and fitted with the
    photon PDF (averaged over the photons' pixels and track crossings) plus a constant; the
    common T0 is the main peak position, taken in the period
    ``[reference - RF/2, reference + RF/2)`` where the reference is the previous common T0 in
    the input tags if any, else ``reference_ns``. NOT_ENOUGH_DATA below ``min_photons``.
    Photons of live channels whose channel T0 is not calibrated (the share of such channels in
    the TOPCalChannelT0 payload) are described by the PDF smeared by the typical channel T0
    spread ``uncalibrated_channel_t0_spread_ns`` (e.g. a bucket too small for channel T0).
    The common T0 is defined modulo the RF period by collision data: the reference must be
    within RF/2 of the truth (the previous payload in prompt processing).
    """

    name = "common_t0"
    payloads = (COMMON_T0,)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        (h,) = require(data, "folded", min_entries=cfg["min_photons"], counted="photons")
        counts = h.values().astype(np.float64)[None, :]
        pix = data.histograms["pixel"].values().astype(np.float64)
        zw = data.histograms["z"].values().astype(np.float64).sum(axis=0)
        # pixels grouped in path factor (12 groups; rms path factor of each group's photons)
        pf = top.path_factor(np.arange(1, _NP + 1))
        group = np.minimum(((pf - pf.min()) / np.ptp(pf) * 12).astype(np.int64), 11)
        wpf = np.bincount(group, weights=pix, minlength=12)
        upf = np.sqrt(
            np.bincount(group, weights=pix * pf**2, minlength=12) / np.maximum(wpf, 1e-300)
        )
        pdf = PhotonPDF.from_config(cfg)
        w, m, s = pdf.components(upf, zw)
        w, m, s = (w * wpf[:, None]).ravel(), m.ravel(), s.ravel()
        # photons of live channels without a calibrated channel T0 are spread by the unknown
        # channel T0s: their share of the PDF is smeared by uncalibrated_channel_t0_spread_ns
        f = _uncalibrated_fraction(data.constants, data.runs[0])
        spread = float(cfg["uncalibrated_channel_t0_spread_ns"])
        w = np.concatenate([(1 - f) * w, f * w])[None, :]
        m = np.concatenate([m, m])[None, :]
        s = np.concatenate([s, np.sqrt(s**2 + spread**2)])[None, :]
        centre = circular_centre(counts, _RF)
        rolled, first = rf_window(counts, centre)
        bw = _RF / counts.shape[1]
        edges = np.arange(counts.shape[1] + 1) * bw
        fits = fit_template_shift(
            rolled, edges, w, m, s, period=_RF, min_entries=int(cfg["min_photons"])
        )
        diag = Diagnostics(histograms={k: data.histograms[k] for k in ("folded", "pixel", "z")})
        diag.add_fits("fit", fits, np.array([0]))
        if fits.status[0] != ChannelStatus.OK:
            return AlgorithmResult(
                AlgorithmStatus.FAILURE,
                diagnostics=diag,
                message=f"common T0 fit of runs {data.runs[0]}..{data.runs[-1]}: {fits.reason[0]}",
            )
        mu = float(fits.values["mu"][0] + first[0] * bw)
        previous = data.constants.get(COMMON_T0, *data.runs[0])
        ref = float(cfg["reference_ns"]) if previous is None else float(previous.value()[0])
        mu = ref + float(np.mod(mu - ref + _RF / 2, _RF)) - _RF / 2
        err = float(fits.errors["mu"][0])
        payload = channel_payload(
            COMMON_T0,
            {},
            np.array([mu]),
            np.array([err]),
            units="ns",
            description="common T0 of all modules",
            signal_photons=float(fits.values["n"][0]),
        )
        return AlgorithmResult(
            AlgorithmStatus.OK,
            [payload],
            diag,
            f"common T0 {mu:.4f} +- {err:.4f} ns from {fits.values['n'][0]:.0f} photons",
        )


def common_t0_calibration() -> Calibration:
    """``top-common-t0``: TOPCalCommonT0 per run, after the channel and module T0."""
    return Calibration(
        name="top-common-t0",
        expert="top-calibration@b2calib.example",
        inputs={"photons": CollectorInput(common_t0_collector, ("hlt_mumu_2trk",))},
        algorithms=[CommonT0Algorithm()],
        strategy=SequentialRunByRun(step_size=1),
        run_type="physics",
        magnet_on=True,
        depends_on=("top-channel-t0", "top-module-t0"),
        expert_config={
            "min_photons": 1000,
            "reference_ns": 0.0,
            "uncalibrated_channel_t0_spread_ns": 0.15,
            **PDF_CONFIG,
        },
        open_end=True,
        description="TOP common T0 (TOPCalCommonT0) per run: photon residuals with channel "
        "and module T0 applied folded modulo the RF period, photon PDF + constant fit; "
        "runs with too few photons merge with the next.",
    )


def __dir__() -> list[str]:
    return __all__
