"""The drill-down of the TOP payloads (:mod:`b2calib.calibration.fitview`): channel T0 with
its photon-PDF template fit, module T0 from its slot-pair fits, common T0, channel mask."""

from __future__ import annotations

import numpy as np

from b2calib.calibration.fitview import (
    ChannelFit,
    CountingView,
    GaussPeak,
    HistogramFit,
    NoChannelFit,
    PeakModel,
    TemplatePeak,
    ViewContext,
)
from b2calib.detectors.top.photons import PhotonPDF
from b2calib.geometry import top

__all__ = ["CHANNEL_T0_VIEW", "COMMON_T0_VIEW", "MASK_VIEW", "MODULE_T0_VIEW"]

F = np.ndarray
_NM, _NP, _RF = top.N_MODULES, top.N_PIXELS, top.RF_PERIOD_NS


def _index(context: ViewContext) -> int:
    """The channel index 0..8191 of a payload channel (module * 1000 + pixel)."""
    module, pixel = divmod(context.channel, 1000)
    return (module - 1) * _NP + pixel - 1


class _ChannelT0View(HistogramFit):
    """The channel's folded photon times over one RF period around its module's phase (the
    window the fit used), with the shifted photon-PDF template."""

    def _first(self, context: ViewContext, fit: ChannelFit) -> int:
        return int(context.table(self.fits)["window_first_bin"][fit.index])

    def row_data(self, context: ViewContext, fit: ChannelFit) -> tuple[F, F, F, str]:
        _, counts, errors, _ = super().row_data(context, fit)
        nb = len(counts)
        first = self._first(context, fit)
        idx = (first + np.arange(nb)) % nb
        bw = _RF / nb
        window = (first + np.arange(nb + 1)) * bw
        return window, counts[idx], errors[idx], "photon time - expected, folded (ns)"

    def parameters_for(
        self, context: ViewContext, fit: ChannelFit
    ) -> dict[str, tuple[float, float]]:
        p = dict(fit.parameters)
        if "mu" in p:  # the fit's window coordinates -> the shown time axis
            nb = context.histogram(self.histogram).axes[1].size
            p["mu"] = (p["mu"][0] + self._first(context, fit) * _RF / nb, p["mu"][1])
        return p

    def model_for(self, context: ViewContext, fit: ChannelFit) -> PeakModel:
        i = fit.index
        zw = np.asarray(context.histogram("z").values(), dtype=np.float64)[i // _NP]
        pf = top.path_factor(np.array([i % _NP + 1]))
        w, m, s = PhotonPDF.from_config(context.config).components(pf, zw[None, :])
        return TemplatePeak(tuple(w[0]), tuple(m[0]), tuple(s[0]), period=_RF)


def _channel_explain(context: ViewContext, fit: ChannelFit) -> str | None:
    if context.status == "DEAD":
        return "masked DEAD by the channel mask (top-channel-mask): no T0"
    if not fit.ok:
        return None
    text = "value = mu minus the mean mu of the module's calibrated channels (zero mean per module)"
    runs = len(context.runs)
    if runs > 1:
        text += (
            f"; the histogram is the sum of {runs} runs as collected (the fit summed them "
            "aligned on each run's common phase)"
        )
    if context.status != "OK":
        text += (
            f"; fewer than {context.config.get('min_channels_per_module')} calibrated "
            "channels in the module"
        )
    return text


CHANNEL_T0_VIEW = _ChannelT0View(
    "channel_time",
    "channel_fits",
    TemplatePeak((1.0,), (0.0,), (1.0,)),  # its parameters; the template: model_for
    channel_map=_index,
    explain=_channel_explain,
)


def _best_pair(context: ViewContext) -> int:
    """The slot pair (a < b) of the module with the most entries and an OK fit."""
    t = context.table("pair_fits")
    p = np.asarray(t["channel"])
    a, b = p // _NM + 1, p % _NM + 1
    m = context.channel
    mine = (a < b) & ((a == m) | (b == m))
    score = np.where(mine, t["entries"] * (t["status"] == 0) + 1e-3 * t["entries"], -1.0)
    return int(p[int(np.argmax(score))])


def _module_explain(context: ViewContext, fit: ChannelFit) -> str:
    t = context.table("pair_fits")
    p = np.asarray(t["channel"])
    a, b = p // _NM + 1, p % _NM + 1
    m = context.channel
    mine = (a < b) & ((a == m) | (b == m)) & (t["status"] == 0)
    shown = _best_pair(context)
    pairs = ", ".join(f"{a[k]}-{b[k]} {t['mu'][k]:+.3f}" for k in np.flatnonzero(mine)[:15])
    return (
        f"the module T0s (sum 0) are solved by least squares from {int(mine.sum())} slot-pair "
        f"differences of module {m}; shown: pair {shown // _NM + 1}-{shown % _NM + 1}, the one "
        f"with most entries; pairs (ns): {pairs}"
    )


MODULE_T0_VIEW = HistogramFit(
    "pair_diff",
    "pair_fits",
    GaussPeak(background=True),
    min_entries="min_pair_entries",
    channel_map=_best_pair,
    explain=_module_explain,
)


def _common_detail(context: ViewContext) -> str:
    t = context.table("fit")
    return (
        f"template fit of {float(t['entries'][0]):.0f} photons: n {float(t['n'][0]):.0f}, "
        f"mu (window) {float(t['mu'][0]):.4f} +- {float(t['mu_err'][0]):.4f} ns; the template "
        "depends on the fraction of uncalibrated channels in the constants, which the "
        "diagnostics do not keep, so it is not redrawn"
    )


COMMON_T0_VIEW = NoChannelFit(
    "one template fit of all photons of the run folded modulo the RF period (histogram "
    "'folded' of the diagnostics); the value is placed by continuity along the runs",
    _common_detail,
)


def _mask_describe(context: ViewContext, row: int) -> str:
    t = context.table("channels")
    hits, mean, rms = (float(t[k][row]) for k in ("hits", "group_mean", "group_rms"))
    rule = {
        "DEAD": f": dead, {hits:.0f} <= mean / 5 = {mean / 5:.1f}",
        "HOT": f": hot, {hits:.0f} > max(2 mean, mean + 6 rms) = "
        f"{max(2 * mean, mean + 6 * rms):.1f}",
    }.get(context.status, "")
    return (
        f"{context.status}: no per-channel fit: this calibration counts hits; {hits:.0f} hits, "
        f"its boardstack's channels {mean:.1f} +- {rms:.1f} (3-sigma clipped){rule}"
    )


MASK_VIEW = CountingView(
    "channels",
    "channel",
    _mask_describe,
    histogram="hits",
    x_label="channel index",
    y_label="hits",
    channel_map=_index,
    neighbours=64,
)


def __dir__() -> list[str]:
    return __all__
