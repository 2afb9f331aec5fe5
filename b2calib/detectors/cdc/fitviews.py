"""The drill-down of the CDC payloads (:mod:`b2calib.calibration.fitview`): what each channel
of CDCTimeZeros, CDCDedxRunGain, CDCDedxCosineCor, CDCDedxWireGain and CDCXtRelations was
measured from, read from the diagnostics stored with the calibration."""

from __future__ import annotations

import math

import numpy as np

from b2calib.calibration.fitview import (
    ChannelFit,
    ChannelView,
    CountingView,
    FitView,
    GaussPeak,
    HistogramFit,
    NoChannelFit,
    ViewContext,
    range_of_entries,
)
from b2calib.conditions import ChannelStatus
from b2calib.geometry import cdc

__all__ = ["COSINE_VIEW", "RUN_GAIN_VIEW", "T0_VIEW", "WIRE_GAIN_VIEW", "XT_VIEW"]


def _window(
    context: ViewContext, fit: ChannelFit, edges: object, counts: object
) -> tuple[float, float]:
    w = float(context.config.get("fit_window_ns", 10.0))
    return (-w, w)


def _board(context: ViewContext) -> int:
    return int(cdc.board_of(np.array([context.channel]))[0])


def _t0_head(context: ViewContext, fit: ChannelFit) -> str:
    """A wire's own fit (its histogram is not stored) and its board's, which is shown."""
    wires = context.table("wire_fits")
    w = context.channel
    i = int(np.flatnonzero(wires["channel"] == w)[0])
    n, mu, err = float(wires["entries"][i]), float(wires["mu"][i]), float(wires["mu_err"][i])
    own = ChannelStatus(int(wires["status"][i])).name
    board = _board(context)
    status = context.status
    if status == "DEAD":
        what = f"DEAD: no hit on wire {w} while its layer has hits"
    elif own == "OK" and status == "OK":
        what = f"OK: wire fit of {n:.0f} entries, mean residual {mu:.3f} +- {err:.3f} ns"
    elif own == "OK":
        what = (
            f"{status}: the wire fit ({n:.0f} entries, {mu:.3f} ns) has an error above "
            f"max_error_ns {context.config.get('max_error_ns')}; value is the board {board} T0"
        )
    else:
        need = context.config.get("min_entries")
        what = f"{status}: wire fit {own} ({n:.0f} entries, {need} required)" + (
            f"; value is the board {board} T0 with the wire spread in its error"
            if np.isfinite(context.value[0])
            else "; no value (the board fit failed too)"
        )
    board_fit = f"board {board} fit {fit.status_name}"
    if fit.ok:
        b_mu, b_err = fit.parameters["mu"]
        board_fit += f": mean residual {b_mu:.3f} +- {b_err:.3f} ns ({fit.entries:.0f} entries)"
    return (
        f"{what}; shown: the residuals of board {board} and its fit (the per-wire histograms "
        f"are not stored); {board_fit}"
    )


#: CDCTimeZeros: the wire's board residuals and Gaussian fit, with the wire's own fit in words.
T0_VIEW = HistogramFit(
    "board_residual",
    "board_fits",
    GaussPeak(),
    fit_range=_window,
    channel_map=_board,
    head=_t0_head,
)

#: CDCDedxRunGain: the run's truncated-mean histogram and its Gaussian core fit.
RUN_GAIN_VIEW = HistogramFit(
    "track_truncated_mean",
    "run_fit",
    GaussPeak(),
    fit_range=range_of_entries,
    min_entries="min_tracks",
    relation="gain = mu / K (K: the fitted truncated mean over the mean hit dE/dx of the "
    "pooled runs)",
)


def _cosine_explain(context: ViewContext, fit: ChannelFit) -> str:
    bins = context.table("cos_bins")
    i = int(np.flatnonzero(bins["bin"] == context.channel)[0])
    hits, need = float(bins["hits"][i]), context.config.get("min_hits_per_bin")
    return (
        f"value = the mean hit dE/dx of the bin's {hits:.0f} hits ({need} required); the "
        "Gaussian fit of the tracks' truncated means is a cross-check, not the value"
    )


#: CDCDedxCosineCor: the bin's track truncated means with their Gaussian fit (the value is the
#: mean hit dE/dx, said in the message).
COSINE_VIEW = HistogramFit(
    "cos_truncated_mean",
    "truncated_mean_fits",
    GaussPeak(),
    min_entries=None,
    explain=_cosine_explain,
)


class _WireGainView(ChannelView):
    """A wire gain is a truncated mean, not a fit: its hit spectrum when it is one of the
    extreme wires kept, else the numbers."""

    def view(self, context: ViewContext) -> FitView:
        table = context.table("wire_gain")
        i = int(np.flatnonzero(table["wire"] == context.channel)[0])
        n, tm = float(table["entries"][i]), float(table["truncated_mean"][i])
        lo, hi = context.config.get("truncation", [0.05, 0.75])
        what = (
            f"{context.status}: no fit: the gain is the {float(lo):.0%}-{float(hi):.0%} "
            f"truncated mean of the wire's {n:.0f} hits ({tm:.4g}) over the mean of all wires"
        )
        if context.status == "DEAD":
            what = f"DEAD: no hit on wire {context.channel} while its layer has hits"
        elif context.status != "OK":
            what += f"; {context.config.get('min_hits')} hits required"
        extreme = context.table("extreme_wires")["wire"]
        if context.channel in set(extreme.tolist()):
            return CountingView(
                "extreme_wires",
                "wire",
                lambda c, r: what + "; shown: its hit spectrum (one of the most extreme wires)",
                histogram="extreme_wires",
            ).view(context)
        return NoChannelFit(
            "the gain is a truncated mean; the hit spectra are kept only for the most "
            "extreme wires",
            lambda c: f"truncated mean {tm:.4g} of {n:.0f} hits",
        ).view(context)


#: CDCDedxWireGain: truncated means, not fits.
WIRE_GAIN_VIEW = _WireGainView()


def _xt_detail(context: ViewContext) -> str:
    fits = context.table("xt_fits")
    i = np.flatnonzero(fits["row"] == context.row)
    if i.size == 0:
        return ""
    k = int(i[0])
    chi2, ndf = float(fits["chi2"][k]), float(fits["ndf"][k])
    text = f"x-t fit of {float(fits['entries'][k]):.0f} hits"
    if math.isfinite(chi2) and ndf > 0:
        text += f", chi2/ndf {chi2:.1f}/{ndf:.0f}"
    return text


#: CDCXtRelations: a fit of profile points (drift length vs time), not of a histogram.
XT_VIEW = NoChannelFit(
    "the x-t relation of a (layer, left/right) row is fitted to profile points of the drift "
    "length in drift-time bins, not to a histogram (the points are in the diagnostics' "
    "xt_points table)",
    _xt_detail,
)


def __dir__() -> list[str]:
    return __all__
