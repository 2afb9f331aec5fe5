"""TOP channel T0 (``top-channel-t0``, TOPCalChannelT0): per channel, the photon time minus its
expected time folded modulo the RF period, fitted with the photon time PDF (main + second TTS
peak with the chromatic smearing, flat background); zero mean per module; a new payload where a
module's timing steps.

Channel T0 in basf2 comes from laser runs (a local calibration of the PMT transit time with a
picosecond laser); the simulated experiment has no laser runs, so it is measured here from
collision mu-mu photons, as basf2's collision-based channel T0 does. The collision time cancels
exactly because collisions happen at bunch crossings: the photon time minus its expected time,
taken modulo the RF period, no longer depends on the bunch, so the 0.8 ns resolution of the
event T0 does not enter.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

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
from b2calib.calibration.toolkit import (
    NotEnoughData,
    channel_payload,
    guarded,
    require,
    status_counts,
)
from b2calib.conditions import ChannelStatus
from b2calib.conditions.iov import RunKey
from b2calib.detectors.top import fitviews
from b2calib.detectors.top.channel_mask import CHANNEL_KEYS, dead_channels
from b2calib.detectors.top.collectors import ChannelTimeCollector
from b2calib.detectors.top.photons import (
    BOUNDARY_CONFIG,
    PDF_CONFIG,
    PhotonPDF,
    circular_centre,
    phase_boundaries,
    rf_window,
)
from b2calib.exceptions import CalibrationError
from b2calib.fit.template_shift import fit_template_shift
from b2calib.geometry import top

__all__ = [
    "CHANNEL_T0",
    "ChannelT0Algorithm",
    "applied_channel_t0",
    "channel_t0_calibration",
]

F = npt.NDArray[np.float64]

CHANNEL_T0 = "TOPCalChannelT0"
_NM, _NP, _NC = top.N_MODULES, top.N_PIXELS, top.N_CHANNELS
_RF = top.RF_PERIOD_NS


def applied_channel_t0(constants: Constants, run: RunKey) -> F:
    """Channel T0 of a run (flagged channels 0), from the TOPCalChannelT0 payload."""
    p = constants.require(CHANNEL_T0, *run)
    v = np.asarray(p.value("value"), dtype=np.float64)
    if len(v) != _NC:
        raise CalibrationError(f"payload {CHANNEL_T0} for run {run}: {len(v)} rows, not {_NC}")
    return np.nan_to_num(v, nan=0.0)


def _aligned_counts(data: AlgorithmInput, merged: F) -> F:
    """The channel time histograms of ``data``'s runs summed with each run's rolled by the whole
    number of bins nearest the drift of its photons' common phase since the first run's.

    The common T0 drifts during an IoV; summed as they are, each channel's histogram would hold
    its photons' share of that drift. With ~100 photons per channel that share follows every
    run's own photons (Poisson), so a channel T0 fitted on the runs of the common T0 calibration
    takes in about channels / photons of each run's deviation from the IoV's mean common T0,
    and the common T0 measured against it follows the drift by only that much less (issue 14:
    0.98 of it over 150-run IoVs). The common shift cancels in the zero mean per module.
    """
    runs = [r for r in data.runs if "channel_time" in data.per_run.get(r, {})]
    if len(runs) < 2:
        return merged
    bw = _RF / merged.shape[1]
    out = np.zeros_like(merged)
    reference: float | None = None
    for r in runs:
        counts = data.per_run[r]["channel_time"].values().astype(np.float64)
        phase = float(circular_centre(counts.sum(axis=0)[None, :], _RF)[0])
        reference = phase if reference is None else reference
        drift = np.mod(phase - reference + _RF / 2, _RF) - _RF / 2
        out += np.roll(counts, -int(np.rint(drift / bw)), axis=1)
    return out


class ChannelT0Algorithm(Algorithm):
    """Channel T0 from the folded photon times (see the module documentation).

    The runs' histograms are summed aligned on their photons' common phase
    (:func:`_aligned_counts`: the common T0 drifts from run to run, and must not enter the
    channel T0 through each channel's share of every run's photons). Each module's photons give
    a reference phase (first harmonic of the folded distribution);
    each channel's histogram is read over one RF period around it and fitted with the photon
    PDF (template built from the pixel's path factor and its module's photon-weighted track
    crossings) shifted by ``mu`` plus a flat background, all channels in one batched fit. The
    channel T0 is ``mu`` minus the mean ``mu`` of the module's calibrated channels (zero mean
    per module, as the payload convention). Uncertainty: the fit error combined with that of the
    module mean, ``sigma_c^2 (1 - 2/n) + sum(sigma^2) / n^2``.

    Channels masked DEAD are flagged DEAD; channels with fewer than ``min_entries`` photons
    NOT_ENOUGH_DATA; failed fits FAILED.

    The module's photons are folded together over the runs of one execution, so the module
    timing must be stable over them: :meth:`boundaries` requests a new payload where a module's
    timing steps (a firmware update changing a module T0 would otherwise broaden that module's
    peaks).
    """

    name = "channel_t0"
    payloads = (CHANNEL_T0,)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        h, zh = require(data, "channel_time", "z", message="no TOP photons")
        counts = _aligned_counts(data, h.values().astype(np.float64))
        dead = dead_channels(data.constants, data.runs)
        mod = np.repeat(np.arange(_NM), _NP)
        centre = circular_centre(counts.reshape(_NM, _NP, -1).sum(axis=1), _RF)
        rolled, first = rf_window(counts, centre[mod])
        bw = _RF / counts.shape[1]
        edges = np.arange(counts.shape[1] + 1) * bw
        zw = zh.values().astype(np.float64)
        pf = top.path_factor(np.tile(np.arange(1, _NP + 1), _NM))
        pdf = PhotonPDF.from_config(cfg)
        w, m, s = pdf.components(pf, zw[mod])
        # the fit runs in window coordinates x - first * bw: mu there, the template unchanged
        fits = fit_template_shift(
            rolled,
            edges,
            w,
            m,
            s,
            period=_RF,
            min_entries=int(cfg["min_entries"]),
        )
        mu = fits.values["mu"] + first * bw
        err = fits.errors["mu"]
        status = fits.status.copy()
        status[dead] = ChannelStatus.DEAD
        ok = status == ChannelStatus.OK
        value = np.full(_NC, np.nan)
        error = np.full(_NC, np.nan)
        min_ch = int(cfg["min_channels_per_module"])
        for k in range(_NM):
            sel = slice(k * _NP, (k + 1) * _NP)
            okm = ok[sel]
            n = int(okm.sum())
            if n < min_ch:
                status[sel][okm] = ChannelStatus.NOT_ENOUGH_DATA
                continue
            mean = mu[sel][okm].mean()
            var_mean = np.sum(err[sel][okm] ** 2) / n**2
            value[sel][okm] = mu[sel][okm] - mean
            error[sel][okm] = np.sqrt(err[sel][okm] ** 2 * (1 - 2.0 / n) + var_mean)
        ok = status == ChannelStatus.OK
        diag = Diagnostics(histograms={"channel_time": h, "z": zh})
        diag.add_fits("channel_fits", fits, np.arange(_NC))
        diag.tables["channel_fits"]["window_first_bin"] = first.astype(np.float64)
        diag.tables["channel_fits"]["final_status"] = status
        alive = ~dead
        frac = ok.sum() / max(alive.sum(), 1)
        summary = status_counts(status)
        if frac < float(cfg["min_calibrated_fraction"]):
            raise NotEnoughData(f"{frac:.1%} of live channels calibrated: {summary}", diag)
        payload = channel_payload(
            CHANNEL_T0,
            CHANNEL_KEYS,
            value,
            error,
            status,
            units="ns",
            description="channel T0 relative to its module (zero mean per module)",
            method="collision mu-mu photons folded modulo the RF period (no laser runs)",
        )
        return AlgorithmResult(AlgorithmStatus.OK, [payload], diag, f"{summary}")

    def boundaries(self, data: AlgorithmInput) -> list[RunKey]:
        """Runs where a module's timing steps (a module T0 change), see
        :func:`~b2calib.detectors.top.photons.phase_boundaries`."""
        runs = [r for r in data.runs if "channel_time" in data.per_run.get(r, {})]
        phases = [
            data.per_run[r]["channel_time"].values().reshape(_NM, _NP, -1).sum(axis=1) for r in runs
        ]
        return phase_boundaries(runs, phases, data.config)


def channel_t0_calibration() -> Calibration:
    """``top-channel-t0``: TOPCalChannelT0 from collision mu-mu photons, after the masks."""
    return Calibration(
        name="top-channel-t0",
        validation=PayloadComparison(max_abs_change=0.2),  # channel offsets (ns)
        expert="top-calibration@b2calib.example",
        inputs={"photons": CollectorInput(ChannelTimeCollector(), ("hlt_mumu_2trk",))},
        algorithms=[ChannelT0Algorithm()],
        strategy=SequentialBoundaries(),
        run_type="physics",
        magnet_on=True,
        depends_on=("top-channel-mask",),
        expert_config={
            "min_entries": 50,
            "min_channels_per_module": 64,
            "min_calibrated_fraction": 0.5,
            **BOUNDARY_CONFIG,
            **PDF_CONFIG,
        },
        open_end=True,
        description="TOP channel T0 (TOPCalChannelT0) from collision mu-mu photons folded "
        "modulo the RF period (basf2 uses laser runs; the simulation has none), photon PDF "
        "fit per channel, zero mean per module.",
        fit_views={CHANNEL_T0: fitviews.CHANNEL_T0_VIEW},
    )


def __dir__() -> list[str]:
    return __all__
