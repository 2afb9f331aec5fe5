"""TOP common T0 (``top-common-t0``, TOPCalCommonT0): photon times with channel and module T0
applied, folded modulo the RF period, photon PDF + constant fit per run; the values, defined
modulo the RF period, placed by continuity along the runs (:func:`unfold_period`), a run whose
period is ambiguous flagged UNUSABLE.

The payload (as basf2's TOPCalCommonT0: value, error, status) quotes as ``value_err`` the
quadrature sum of the run's statistical error and the error the applied channel and module T0
give it; both parts are in its metadata (``statistical_error``, ``correlated_error``), with the
constants the correlated part comes from (``correlated_with``): it is common to every run with
the same ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
    Execution,
    PayloadComparison,
    SequentialRunByRun,
)
from b2calib.calibration.toolkit import channel_payload, guarded, require
from b2calib.conditions import ChannelStatus, Payload
from b2calib.conditions.iov import RunKey
from b2calib.detectors.top import fitviews
from b2calib.detectors.top.channel_t0 import CHANNEL_T0, applied_channel_t0
from b2calib.detectors.top.collectors import CommonT0Collector, run_tables
from b2calib.detectors.top.module_t0 import MODULE_T0, applied_module_t0
from b2calib.detectors.top.photons import PDF_CONFIG, PhotonPDF, circular_centre, rf_window
from b2calib.fit.template_shift import fit_template_shift
from b2calib.geometry import top

__all__ = [
    "COMMON_T0",
    "CommonT0Algorithm",
    "Unfolded",
    "common_t0_calibration",
    "common_t0_collector",
    "unfold_period",
]

F = npt.NDArray[np.float64]

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


@dataclass(frozen=True)
class Unfolded:
    """Values placed by :func:`unfold_period`.

    Attributes
    ----------
    values
        Each value moved by a whole number of periods to its place in the sequence.
    ambiguous
        True where the period could not be chosen unambiguously (the value is placed at the
        image nearest the prediction, but must not be used).
    predicted, predicted_error
        The prediction from the neighbours each value was placed against (for the seed of a
        sequence without anchor: the seed's own value and error).
    """

    values: F
    ambiguous: npt.NDArray[np.bool_]
    predicted: F
    predicted_error: F


def unfold_period(
    values: npt.ArrayLike,
    errors: npt.ArrayLike,
    period: float,
    *,
    anchor: tuple[float, float] | None = None,
    reference: float = 0.0,
    window: int = 5,
    sigmas: float = 5.0,
    margin: float = 0.2,
) -> Unfolded:
    """Place a sequence of values defined modulo ``period`` by continuity along the sequence.

    Each value is moved to the image (value + k period) nearest the prediction from its
    neighbours already placed: the weighted mean of the last ``window`` values placed
    unambiguously, with its error. The choice is ambiguous, and the value flagged, when the
    value lies within ``sigmas`` combined standard deviations plus ``margin`` of half a period
    from the prediction, i.e. when ``|d| > period / 2 - sigmas * sqrt(err^2 + err_pred^2) -
    margin`` for the distance ``d`` to the nearest image: the other image is then not excluded
    (``margin`` also flags a jump so large, ~0.8 ns for the TOP common T0, that a hardware step of
    either sign is as likely). A flagged value never enters a prediction.

    With ``anchor`` (a previous value and its error, before the first) the sequence is placed
    forward from it. Without, it starts from a seed, the value nearest the weighted circular mean
    of the sequence (the most typical one), and is placed forward and backward from there; the
    whole sequence is then moved by the whole number of periods that brings its weighted median
    nearest ``reference`` (the period convention: ``reference`` within half a period of the
    typical value, not of every value).

    Parameters
    ----------
    values, errors
        The sequence (finite values, positive errors), in order.
    period
        The period.
    anchor
        ``(value, error)`` preceding the sequence, or ``None``.
    reference
        Without ``anchor``: where the sequence's median is placed, within half a period.
    window
        Placed values the prediction averages over.
    sigmas, margin
        The ambiguity threshold (see above).

    Returns
    -------
    Unfolded
        The placed values, the ambiguity flags and the predictions.
    """
    v = np.asarray(values, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    n = len(v)
    if v.shape != e.shape or v.ndim != 1:
        raise ValueError("values and errors must be 1-d arrays of one length")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(e)) and np.all(e > 0)):
        raise ValueError("values must be finite and errors finite and positive")
    out = v.copy()
    flag = np.zeros(n, dtype=bool)
    pred = np.full(n, np.nan)
    pred_err = np.full(n, np.nan)
    if n == 0:
        return Unfolded(out, flag, pred, pred_err)
    half = period / 2

    def wrap(x: F | float) -> Any:
        return np.mod(np.asarray(x) + half, period) - half

    def walk(order: Sequence[int], history: list[tuple[float, float]]) -> None:
        for i in order:
            recent = history[-window:]
            w = np.array([1.0 / err**2 for _, err in recent])
            x = np.array([val for val, _ in recent])
            p, pe = float(np.sum(w * x) / np.sum(w)), float(np.sqrt(1.0 / np.sum(w)))
            d = float(wrap(v[i] - p))
            # the image itself, v + k period (k whole), not p + d: a value that needs no move
            # stays bitwise what was measured, whatever the prediction
            out[i] = v[i] + period * round((p + d - v[i]) / period)
            pred[i], pred_err[i] = p, pe
            if abs(d) > half - sigmas * np.hypot(e[i], pe) - margin:
                flag[i] = True
            else:
                history.append((float(out[i]), float(e[i])))

    if anchor is not None:
        walk(range(n), [(float(anchor[0]), float(anchor[1]))])
        return Unfolded(out, flag, pred, pred_err)
    w = 1.0 / e**2
    phase = 2 * np.pi * v / period
    mean = np.angle(np.sum(w * np.exp(1j * phase))) / (2 * np.pi) * period
    seed = int(np.lexsort((e, np.abs(wrap(v - mean))))[0])
    out[seed], pred[seed], pred_err[seed] = v[seed], v[seed], e[seed]
    walk(range(seed + 1, n), [(float(v[seed]), float(e[seed]))])
    walk(range(seed - 1, -1, -1), [(float(v[seed]), float(e[seed]))])
    ok = ~flag
    order = np.argsort(out[ok])
    cum = np.cumsum(w[ok][order])
    median = out[ok][order][np.searchsorted(cum, cum[-1] / 2)]
    shift = period * round((median - (reference + float(wrap(median - reference)))) / period)
    out -= shift
    pred -= shift
    return Unfolded(out, flag, pred, pred_err)


def _correlated_error(
    data: AlgorithmInput, config: Mapping[str, Any]
) -> tuple[float, dict[str, str]]:
    """The uncertainty the applied channel and module T0 give the common T0 of ``data``'s runs,
    and the constants it comes from (content hashes: runs with the same share it).

    The common T0 measures the photon-weighted mean of ``true - applied`` channel + module T0.

    * Channel T0: within a module the payload's calibrated channels have zero mean, so their
      statistical errors cancel in the (uniform over pixels) photon-weighted mean, and so do the
      unknown T0s of live uncalibrated channels (applied as 0): what remains is the convention's
      mean over all 512 channels, of which the DEAD ones are unseen, ``n_dead s^2 / n_live^2``
      per module with ``s = uncalibrated_channel_t0_spread_ns``.
    * Module T0: the payload's errors with the covariance of a sum-zero fit,
      ``P diag(16/15 sigma^2) P`` (``P`` removes the mean), weighted by the run's photon share
      per module (a uniform share does not see the module T0 errors at all).

    Payloads without errors (the truth) contribute nothing.
    """
    run = data.runs[0]
    share = data.histograms["z"].values().astype(np.float64).sum(axis=1)
    share = share / max(float(share.sum()), 1.0)
    spread = float(config["uncalibrated_channel_t0_spread_ns"])
    channel = data.constants.require(CHANNEL_T0, *run)
    module = data.constants.require(MODULE_T0, *run)
    var = 0.0
    if channel.status is not None:
        dead = (channel.status == ChannelStatus.DEAD).reshape(_NM, _NP).sum(axis=1)
        live = np.maximum(_NP - dead, 1)
        var += float(np.sum(share**2 * dead * spread**2 / live**2))
    sigma = module.errors.get("value")
    if sigma is not None and np.all(np.isfinite(sigma)):
        centred = share - share.mean()
        var += float(np.sum(centred**2 * sigma**2) * _NM / (_NM - 1))
    group = {p.name: p.content_hash()[:16] for p in (channel, module)}
    return float(np.sqrt(var)), group


class CommonT0Algorithm(Algorithm):
    """Common T0 from the folded photon residuals (channel and module T0 applied).

    The folded distribution is read over one RF period around its peak and fitted with the
    photon PDF (averaged over the photons' pixels and track crossings) plus a constant; the
    common T0 is the main peak position, defined modulo the RF period. Each execution places it
    nearest the previous common T0 valid for its first run (a usable one: status OK), else
    nearest ``reference_ns``; then :meth:`combine` places the executions' values together by
    continuity along the runs (:func:`unfold_period` with ``unfold_window_runs``,
    ``unfold_sigmas`` and ``unfold_margin_ns``), anchored on that previous common T0 when there
    is one, and flags UNUSABLE a run whose period cannot be placed unambiguously.
    NOT_ENOUGH_DATA below ``min_photons``. The error is the quadrature sum of the fit's and the
    one from the applied channel and module T0 (:func:`_correlated_error`).
    Photons of live channels whose channel T0 is not calibrated (the share of such channels in
    the TOPCalChannelT0 payload) are described by the PDF smeared by the typical channel T0
    spread ``uncalibrated_channel_t0_spread_ns`` (e.g. a bucket too small for channel T0).
    The common T0 is defined modulo the RF period by collision data: without a previous
    payload, ``reference_ns`` must be within RF/2 of the typical (median) common T0 of the runs.
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
        anchor = _anchor(data.constants, data.runs[0])
        ref = float(cfg["reference_ns"]) if anchor is None else anchor[0]
        mu = ref + float(np.mod(mu - ref + _RF / 2, _RF)) - _RF / 2
        stat = float(fits.errors["mu"][0])
        corr, group = _correlated_error(data, cfg)
        payload = _payload(
            mu,
            stat,
            corr,
            ChannelStatus.OK,
            correlated_with=group,
            signal_photons=float(fits.values["n"][0]),
        )
        return AlgorithmResult(
            AlgorithmStatus.OK,
            [payload],
            diag,
            f"common T0 {mu:.4f} +- {stat:.4f} (stat) +- {corr:.4f} (channel/module T0) ns "
            f"from {fits.values['n'][0]:.0f} photons",
        )

    def combine(
        self,
        executions: Sequence[Execution],
        constants: Constants,
        config: Mapping[str, Any],
    ) -> list[AlgorithmResult]:
        """Place the per-run values by continuity along the runs (:func:`unfold_period`),
        anchored on the previous common T0 valid for the first run when there is a usable one
        (status OK); a run whose period is ambiguous is flagged UNUSABLE."""
        results = [e.result for e in executions]
        payloads = [r.payloads[0] for r in results]
        values = np.array([p.value("value")[0] for p in payloads], dtype=np.float64)
        errors = np.array([p.errors["value"][0] for p in payloads], dtype=np.float64)
        anchor = _anchor(constants, executions[0].runs[0])
        placed = unfold_period(
            values,
            errors,
            _RF,
            anchor=anchor,
            reference=float(config["reference_ns"]),
            window=int(config["unfold_window_runs"]),
            sigmas=float(config["unfold_sigmas"]),
            margin=float(config["unfold_margin_ns"]),
        )
        how = "from the previous payload" if anchor is not None else "without previous payload"
        out = []
        for i, (r, p) in enumerate(zip(results, payloads, strict=True)):
            value, flagged = float(placed.values[i]), bool(placed.ambiguous[i])
            meta = {k: v for k, v in p.metadata.items() if k not in _OWN_METADATA}
            payload = _payload(
                value,
                float(p.metadata["statistical_error"]),
                float(p.metadata["correlated_error"]),
                ChannelStatus.UNUSABLE if flagged else ChannelStatus.OK,
                unfolding={
                    "anchored": anchor is not None,
                    "predicted": float(placed.predicted[i]),
                    "predicted_error": float(placed.predicted_error[i]),
                    "periods_moved": int(np.rint((value - values[i]) / _RF)),
                },
                **meta,
            )
            message = r.message
            if flagged:
                message = (
                    f"RF period ambiguous ({how}): {value:.4f} ns is "
                    f"{abs(value - placed.predicted[i]):.3f} ns from the neighbouring runs' "
                    f"{placed.predicted[i]:.4f} +- {placed.predicted_error[i]:.4f} ns; "
                    "flagged UNUSABLE. " + message
                )
            out.append(AlgorithmResult(r.status, [payload], r.diagnostics, message))
        return out


_OWN_METADATA = frozenset(
    {
        "units",
        "description",
        "statistical_error",
        "correlated_error",
        "unfolding",
        "period",
    }
)


def _anchor(constants: Constants, run: RunKey) -> tuple[float, float] | None:
    """The previous common T0 valid for ``run`` and its error, when usable (finite, status OK
    or no status), else ``None``."""
    previous = constants.get(COMMON_T0, *run)
    if previous is None:
        return None
    value = float(previous.value("value")[0])
    error = previous.errors.get("value")
    err = float(error[0]) if error is not None else np.nan
    ok = previous.status is None or previous.status[0] == ChannelStatus.OK
    if not (ok and np.isfinite(value)):
        return None
    return value, err if np.isfinite(err) and err > 0 else _RF / 20


def _payload(
    value: float,
    statistical: float,
    correlated: float,
    status: ChannelStatus,
    **metadata: Any,
) -> Payload:
    """The TOPCalCommonT0 payload: the value, its total error and status; the two parts of the
    error in the metadata."""
    return channel_payload(
        COMMON_T0,
        {},
        np.array([value]),
        np.array([float(np.hypot(statistical, correlated))]),
        np.array([status], dtype=np.int8),
        units="ns",
        description="common T0 of all modules, defined modulo the RF period "
        f"({_RF} ns) and placed by continuity along the runs; value_err is the quadrature sum "
        "of statistical_error (this run's photons) and correlated_error (the channel and module "
        "T0 applied, common to every run with the same correlated_with constants); status "
        "UNUSABLE where the period could not be placed",
        statistical_error=statistical,
        correlated_error=correlated,
        period=_RF,
        **metadata,
    )


def common_t0_calibration() -> Calibration:
    """``top-common-t0``: TOPCalCommonT0 per run, after the channel and module T0."""
    return Calibration(
        name="top-common-t0",
        validation=PayloadComparison(
            max_pull=None, max_abs_change=0.5, error_outlier_fraction=1.0
        ),  # one value per run that follows the accelerator's timing: a warning at most
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
            "unfold_window_runs": 5,
            "unfold_sigmas": 5.0,
            "unfold_margin_ns": 0.2,
            **PDF_CONFIG,
        },
        open_end=True,
        description="TOP common T0 (TOPCalCommonT0) per run: photon residuals with channel "
        "and module T0 applied folded modulo the RF period, photon PDF + constant fit; "
        "the RF period placed by continuity along the runs (ambiguous runs flagged UNUSABLE); "
        "error with the channel and module T0 uncertainty; runs with too few photons merge "
        "with the next.",
        fit_views={COMMON_T0: fitviews.COMMON_T0_VIEW},
    )


def __dir__() -> list[str]:
    return __all__
