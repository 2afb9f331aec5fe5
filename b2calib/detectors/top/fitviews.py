"""The drill-down of the TOP payloads (:mod:`b2calib.calibration.fitview`): channel T0 with
its photon-PDF template fit, module T0 from its slot-pair fits, common T0, channel mask."""

from __future__ import annotations

import math

import numpy as np

from b2calib.calibration.fitview import (
    ChannelFit,
    CountingView,
    GaussPeak,
    HistogramFit,
    PeakModel,
    TemplatePeak,
    ViewContext,
)
from b2calib.detectors.top.photons import PhotonPDF, circular_centre, rf_window
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
            if context.status == "OK":  # the module's zero: the mean mu of its calibrated
                t = context.table(self.fits)
                module = slice(fit.index - fit.index % _NP, fit.index - fit.index % _NP + _NP)
                ok = t["final_status"][module] == 0
                mus = t["mu"][module][ok] + t["window_first_bin"][module][ok] * _RF / nb
                p["module mean"] = (float(np.mean(mus)), math.nan)
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
    mean = fit.parameters.get("module mean")
    if mean is not None:
        mu = fit.parameters["mu"][0]
        text = f"value = mu {mu:.4f} - the module's mean mu {mean[0]:.4f} = {mu - mean[0]:.4f} ns"
    runs = len(context.runs)
    aligned = context.diagnostics.tables.get("alignment")
    if aligned is not None and len(aligned["run"]) > 1:
        moved = int(np.count_nonzero(aligned["shift_bins"]))
        text += (
            f"; the histogram is the sum of {len(aligned['run'])} runs aligned on their common "
            f"phase, as fitted ({moved} rolled)"
        )
    elif aligned is None and runs > 1:
        text += (
            f"; the histogram is the sum of {runs} runs as collected (the fit summed them "
            "aligned on each run's common phase; these diagnostics predate keeping that sum)"
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


class _CommonT0View(_ChannelT0View):
    """The run's photon times folded modulo the RF period, over the period around their
    phase (the window the fit used, found again from the stored histogram), with the template
    the algorithm fitted (stored with it)."""

    def _first(self, context: ViewContext, fit: ChannelFit) -> int:
        counts = np.asarray(context.histogram(self.histogram).values(), dtype=np.float64)
        return int(rf_window(counts[None, :], circular_centre(counts[None, :], _RF))[1][0])

    def row_data(self, context: ViewContext, fit: ChannelFit) -> tuple[F, F, F, str]:
        h = context.histogram(self.histogram)
        counts = np.asarray(h.values(), dtype=np.float64)
        nb = len(counts)
        first = self._first(context, fit)
        idx = (first + np.arange(nb)) % nb
        window = (first + np.arange(nb + 1)) * (_RF / nb)
        return window, counts[idx], np.sqrt(counts[idx]), "photon time - expected, folded (ns)"

    def parameters_for(
        self, context: ViewContext, fit: ChannelFit
    ) -> dict[str, tuple[float, float]]:
        p = dict(fit.parameters)
        if "mu" in p:
            nb = context.histogram(self.histogram).axes[0].size
            p["mu"] = (p["mu"][0] + self._first(context, fit) * _RF / nb, p["mu"][1])
        return p

    def model_for(self, context: ViewContext, fit: ChannelFit) -> PeakModel:
        t = context.table("template")
        return TemplatePeak(
            tuple(t["weight"].tolist()),
            tuple(t["offset"].tolist()),
            tuple(t["width"].tolist()),
            period=_RF,
        )


def _common_explain(context: ViewContext, fit: ChannelFit) -> str | None:
    if not fit.ok:
        return None
    return (
        "value = mu placed by continuity along the runs (modulo the RF period); its error "
        "adds the channel and module T0s' in quadrature"
    )


COMMON_T0_VIEW = _CommonT0View(
    "folded",
    "fit",
    TemplatePeak((1.0,), (0.0,), (1.0,)),
    min_entries="min_photons",
    channel_map=lambda c: 0,
    explain=_common_explain,
    requires=("template",),
    absent="the diagnostics of this execution do not hold the template fitted (an earlier "
    "version): one template fit of all photons of the run folded modulo the RF period",
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
