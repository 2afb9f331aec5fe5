"""The drill-down of a payload channel: the histogram it was fitted from, the fitted model with
its components, the pulls, and the channel's fit status with a message saying why.

Everything comes from the diagnostics stored with the calibration job that staged the payload
(:class:`~b2calib.calibration.Diagnostics` of the execution whose IoV holds the payload's):
nothing is refitted. How a payload's channel maps onto those diagnostics is calibration
knowledge, so each :class:`~b2calib.calibration.Calibration` declares it in ``fit_views``:
payload name -> a :class:`ChannelView`, which builds the :class:`FitView` of one channel from a
:class:`ViewContext`. The views provided here:

=====================  ======================================================================
:class:`HistogramFit`  a row of a channels x observable histogram with the fit table of
                       :meth:`~b2calib.calibration.Diagnostics.add_fits` and the model the
                       algorithm fitted (:class:`GaussPeak`, :class:`NovosibirskPeak`)
:class:`CountingView`  the per-channel counting a mask or an efficiency is decided from (no
                       fit: a histogram row or table values, and the decision explained)
:class:`NoChannelFit`  a method without a per-channel histogram: says so, never a fake fit
=====================  ======================================================================

:func:`fit_view` finds, for a payload in a global tag, the job that staged that revision, its
execution's diagnostics (decoded once per step and kept in a bounded cache), the calibration's
declaration, and builds the view.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from b2calib.conditions.iov import IoV
from b2calib.conditions.payload import channel_ids
from b2calib.conditions.status import ChannelStatus
from b2calib.exceptions import ConditionsError, ConfigError, ReviewError

if TYPE_CHECKING:
    from b2calib.calibration.algorithm import Diagnostics
    from b2calib.conditions.database import ConditionsDB
    from b2calib.conditions.payload import Payload

__all__ = [
    "ChannelFit",
    "ChannelView",
    "CountingView",
    "FitView",
    "FitViewError",
    "GaussPeak",
    "HistogramFit",
    "NoChannelFit",
    "NovosibirskPeak",
    "PeakModel",
    "TemplatePeak",
    "ViewContext",
    "channel_status",
    "clear_cache",
    "fit_view",
    "payload_channels",
    "range_of_entries",
]

F = npt.NDArray[np.float64]
_MODEL_POINTS = 400
#: Statuses shown as ``fallback`` when the channel still has a finite value (as
#: :func:`~b2calib.calibration.validation.channel_counts` counts them).
_LACKING = (ChannelStatus.NOT_ENOUGH_DATA, ChannelStatus.FAILED)


class FitViewError(ReviewError):
    """A fit view cannot be built: the message names the tag, payload, revision, channel or
    diagnostics at fault (a :class:`~b2calib.exceptions.ReviewError`)."""


@dataclass(frozen=True)
class FitView:
    """One channel's fit, as the calibration made it.

    Attributes
    ----------
    calibration, payload, channel
        The calibration that staged the payload, the payload name and the channel
        (:func:`payload_channels`: the key column, several packed, or the row of a payload
        without keys).
    x_label
        What the histogram's x axis is.
    edges, counts, errors
        The histogram the channel was fitted from (or counted in); errors are the square roots
        of the variances. Empty arrays when the diagnostics hold no histogram for it.
    model_x, model
        The fitted model, ``"total"`` and each component, evaluated at ``model_x`` in counts per
        bin (the normalisation of ``counts``). Empty when there is no fit.
    pulls
        ``(counts - expected) / error`` per bin with the model's expected counts per bin as
        the fit computed them; NaN outside the fit range and where there is no model.
    status
        The channel's status in the payload: ``OK``, ``fallback`` (NOT_ENOUGH_DATA or FAILED
        with a substitute value), ``NOT_ENOUGH_DATA``, ``FAILED``, ``DEAD``, ``HOT``,
        ``UNUSABLE``.
    message
        Why: the fit's status and the numbers behind it, e.g. ``"NOT_ENOUGH_DATA: 3 entries <
        20 required; no value"``.
    parameters
        Fitted parameters, name -> (value, error); also derived numbers the payload value is
        made of, when the view knows them.
    entries
        Entries of the histogram row (in the fit range for a fit).
    kind
        ``"fit"`` (a fitted model), ``"counting"`` (a decision from counts, no fit) or
        ``"none"`` (no per-channel histogram for this channel).
    iov
        The IoV of the payload revision shown.
    value
        The channel's value in the payload and its error (NaN when absent).
    y_label
        What the histogram's y axis is (``"entries"`` for a fit).
    fit_range
        The x range the model was fitted on (``None`` without a fit).
    expected
        The model's expected counts per bin as the fit computed them (NaN outside the fit
        range and without a model): for a fit with a free yield it adds up to the entries.
    """

    calibration: str
    payload: str
    channel: int
    x_label: str
    edges: F
    counts: F
    errors: F
    model_x: F
    model: Mapping[str, F]
    pulls: F
    status: str
    message: str
    parameters: Mapping[str, tuple[float, float]]
    entries: float
    kind: str = "fit"
    iov: str = ""
    value: tuple[float, float] = (math.nan, math.nan)
    y_label: str = "entries"
    fit_range: tuple[float, float] | None = None
    expected: F = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class ViewContext:
    """What a :class:`ChannelView` gets to build one channel's view.

    Attributes
    ----------
    calibration, name, channel
        Calibration, payload name, channel asked for.
    payload
        The staged payload revision.
    row
        The channel's row in :attr:`payload`.
    diagnostics
        The diagnostics of the execution that produced the payload.
    config
        The job's expert configuration.
    iov
        The payload's IoV in the tag.
    step_status, step_message
        The execution's status and message.
    runs
        The execution's runs (exp, run).
    """

    calibration: str
    name: str
    channel: int
    payload: Payload
    row: int
    diagnostics: Diagnostics
    config: Mapping[str, Any] = field(default_factory=dict)
    iov: str = ""
    step_status: str = ""
    step_message: str = ""
    runs: tuple[tuple[int, int], ...] = ()

    @property
    def status(self) -> str:
        """The channel's status in the payload (see :func:`channel_status`)."""
        return channel_status(self.payload, self.row)

    @property
    def value(self) -> tuple[float, float]:
        """The channel's value in the payload's ``value`` column (else its first value
        column), and its error."""
        col = "value" if "value" in self.payload.values else next(iter(self.payload.values), None)
        if col is None:
            return (math.nan, math.nan)
        v = self.payload.values[col][self.row]
        err = self.payload.errors.get(col)
        e = math.nan if err is None else float(err[self.row])
        try:
            return (float(v), e)
        except (TypeError, ValueError):
            return (math.nan, e)

    def where(self) -> str:
        """``"payload X channel N (calibration C)"`` for messages."""
        return f"payload {self.name} channel {self.channel} ({self.calibration})"

    def table(self, name: str) -> Mapping[str, npt.NDArray[Any]]:
        """Diagnostics table ``name``, or an error naming what is missing."""
        t = self.diagnostics.tables.get(name)
        if t is None:
            known = ", ".join(sorted(self.diagnostics.tables)) or "none"
            raise FitViewError(
                f"{self.where()}: the diagnostics hold no table {name!r} (tables: {known})"
            )
        return t

    def histogram(self, name: str) -> Any:
        """Diagnostics histogram ``name``, or an error naming what is missing."""
        h = self.diagnostics.histograms.get(name)
        if h is None:
            known = ", ".join(sorted(self.diagnostics.histograms)) or "none"
            raise FitViewError(
                f"{self.where()}: the diagnostics hold no histogram {name!r} (histograms: {known})"
            )
        return h


def channel_status(payload: Payload, row: int) -> str:
    """The status of a payload row as the validation counts it: the
    :class:`~b2calib.conditions.ChannelStatus` name, ``"fallback"`` for a NOT_ENOUGH_DATA or
    FAILED row with a finite value, ``"OK"`` for a payload without status."""
    if payload.status is None:
        return "OK"
    code = ChannelStatus(int(payload.status[row]))
    if code in _LACKING and _finite_row(payload, row):
        return "fallback"
    return code.name


def _finite_row(payload: Payload, row: int) -> bool:
    for col in payload.values.values():
        if col.dtype.kind in "fc" and not np.isfinite(col[row]):
            return False
    return True


class ChannelView(abc.ABC):
    """How a calibration shows one channel of one of its payloads (declared in
    :attr:`~b2calib.calibration.Calibration.fit_views`)."""

    @abc.abstractmethod
    def view(self, context: ViewContext) -> FitView:
        """The view of ``context.channel``."""


# ------------------------------------------------------------------------------ models
class PeakModel(abc.ABC):
    """The model a fit table's parameters belong to: its curves and its expected counts per
    bin, computed as the fit computed them."""

    #: Parameter names in the fit table (each with a ``<name>_err`` column).
    parameters: tuple[str, ...] = ()

    @abc.abstractmethod
    def curves(self, p: Mapping[str, float], x: F, edges: F) -> dict[str, F]:
        """Each component's expected entries per unit x at ``x`` (``edges``: the fit-range
        bins the model was fitted on)."""

    @abc.abstractmethod
    def expected(self, p: Mapping[str, float], edges: F) -> F:
        """Expected counts in each bin of ``edges`` (the fit-range bins)."""


def _bin_integrals(f: Callable[[F], F], edges: F, points: int = 9) -> F:
    """Integral of ``f`` over each bin (Simpson's rule on ``points`` points per bin)."""
    u = np.linspace(0.0, 1.0, points)
    x = edges[:-1, None] + np.diff(edges)[:, None] * u[None, :]
    y = f(x.ravel()).reshape(x.shape)
    w = np.ones(points)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return np.asarray((y @ w) * np.diff(edges) / (3.0 * (points - 1)), dtype=np.float64)


@dataclass(frozen=True)
class GaussPeak(PeakModel):
    """The Gaussian peak (yield ``n``, ``mu``, ``sigma``) on an optional flat background ``b``
    (entries per unit x) of :func:`b2calib.fit.fit_channels`: expected counts are the
    Gaussian's integral over each bin plus ``b`` times the bin width."""

    background: bool = False

    @property
    def parameters(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("n", "mu", "sigma", "b") if self.background else ("n", "mu", "sigma")

    def curves(self, p: Mapping[str, float], x: F, edges: F) -> dict[str, F]:
        from b2calib.fit.models import constant, gauss

        out = {"signal": p["n"] * gauss.density(x, p["mu"], p["sigma"])}
        if self.background:
            out["background"] = p["b"] * constant.density(x)
        return out

    def expected(self, p: Mapping[str, float], edges: F) -> F:
        from b2calib.fit.models import gauss

        lam = _bin_integrals(lambda x: p["n"] * gauss.density(x, p["mu"], p["sigma"]), edges)
        if self.background:
            lam = lam + p["b"] * np.diff(edges)
        return lam


@dataclass(frozen=True)
class NovosibirskPeak(PeakModel):
    """The Novosibirsk peak (``n`` entries in the fit range, ``peak``, ``width``, ``tail``) on
    a flat background ``b`` of :func:`b2calib.fit.novosibirsk_batched.fit_novosibirsk_channels`:
    the density is evaluated at the bin centres and normalised by its sum over the fit-range
    bins, as the fit does."""

    parameters: tuple[str, ...] = ("n", "peak", "width", "tail", "b")

    def _norm(self, p: Mapping[str, float], edges: F) -> float:
        from b2calib.fit.models import novosibirsk

        centres = 0.5 * (edges[1:] + edges[:-1])
        f = novosibirsk.density(centres, p["peak"], p["width"], p["tail"])
        return float(np.sum(f * np.diff(edges)))

    def curves(self, p: Mapping[str, float], x: F, edges: F) -> dict[str, F]:
        from b2calib.fit.models import constant, novosibirsk

        norm = self._norm(p, edges)
        f = novosibirsk.density(x, p["peak"], p["width"], p["tail"])
        signal = p["n"] * f / norm if norm > 0 else np.zeros_like(x)
        return {"signal": signal, "background": p["b"] * constant.density(x)}

    def expected(self, p: Mapping[str, float], edges: F) -> F:
        from b2calib.fit.models import novosibirsk

        centres, widths = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
        dens = novosibirsk.density(centres, p["peak"], p["width"], p["tail"]) * widths
        norm = dens.sum()
        shape = dens / norm if norm > 0 else np.zeros_like(dens)
        return np.asarray(p["n"] * shape + p["b"] * widths, dtype=np.float64)


@dataclass(frozen=True)
class TemplatePeak(PeakModel):
    """A fixed Gaussian-mixture template shifted by ``mu`` (yield ``n``, flat background ``b``)
    of :func:`b2calib.fit.template_shift.fit_template_shift`: components ``weights``,
    ``offsets`` and ``widths`` (one channel's), repeating with ``period`` when given."""

    weights: tuple[float, ...]
    offsets: tuple[float, ...]
    widths: tuple[float, ...]
    period: float | None = None
    parameters: tuple[str, ...] = ("n", "mu", "b")

    def _density(self, x: F, mu: float) -> F:
        from b2calib.fit.template_shift import template_density

        w = np.asarray(self.weights, dtype=np.float64)
        w = w / w.sum() if w.sum() > 0 else w
        return template_density(x, mu, w, self.offsets, self.widths, self.period)

    def curves(self, p: Mapping[str, float], x: F, edges: F) -> dict[str, F]:
        return {
            "signal": p["n"] * self._density(x, p["mu"]),
            "background": np.full_like(x, p["b"]),
        }

    def expected(self, p: Mapping[str, float], edges: F) -> F:
        lam = _bin_integrals(lambda x: p["n"] * self._density(x, p["mu"]), edges)
        return lam + p["b"] * np.diff(edges)


# ------------------------------------------------------------------------------ helpers
def _row_index(ids: npt.NDArray[Any], channel: int, what: str, where: str) -> int:
    hits = np.flatnonzero(np.asarray(ids) == channel)
    if hits.size == 0:
        raise FitViewError(f"{where}: no channel {channel} in {what}")
    return int(hits[0])


def _hist_row(h: Any, index: int, where: str, name: str) -> tuple[F, F, F, str]:
    """Edges, counts, errors and x label of row ``index`` of a channels x values histogram
    (or of a 1-D histogram when ``index`` is ignored)."""
    values = np.asarray(h.values(), dtype=np.float64)
    variances = h.variances()
    var = values if variances is None else np.asarray(variances, dtype=np.float64)
    if h.ndim == 1:
        axis = h.axes[0]
        return np.asarray(axis.edges, np.float64), values, np.sqrt(var), str(axis.label or "")
    if h.ndim != 2:
        raise FitViewError(f"{where}: histogram {name!r} has {h.ndim} axes, not 1 or 2")
    if not 0 <= index < values.shape[0]:
        raise FitViewError(
            f"{where}: row {index} outside histogram {name!r} ({values.shape[0]} rows)"
        )
    axis = h.axes[1]
    return (
        np.asarray(axis.edges, np.float64),
        values[index],
        np.sqrt(np.maximum(var[index], 0.0)),
        str(axis.label or ""),
    )


def _fit_slice(edges: F, fit_range: tuple[float, float] | None) -> slice:
    """The bins of ``edges`` inside ``fit_range`` (as :func:`b2calib.fit._lm.channel_table`
    selects them)."""
    if fit_range is None:
        return slice(0, len(edges) - 1)
    lo, hi = fit_range
    sel = np.flatnonzero((edges[:-1] >= lo - 1e-12) & (edges[1:] <= hi + 1e-12))
    if sel.size == 0:
        return slice(0, 0)
    return slice(int(sel[0]), int(sel[-1]) + 1)


def _fmt(x: float) -> str:
    return f"{x:.4g}" if np.isfinite(x) else "nan"


def _fallback_text(context: ViewContext, fallback: str) -> str:
    status = context.status
    if status == "OK":
        return ""
    value = context.value[0]
    if np.isfinite(value):
        return f"; value {_fmt(value)} is {fallback}" if fallback else f"; value {_fmt(value)}"
    return "; no value"


#: ``explain(context, fit) -> str | None``: a calibration's own words on a channel (appended
#: to the generic message), e.g. why a well-fitted crystal is NOT_ENOUGH_DATA in the payload.
Explain = Callable[[ViewContext, "ChannelFit"], "str | None"]


#: ``fit_range(context, fit, edges, counts) -> (low, high) | None``.
RangeOf = Callable[[ViewContext, "ChannelFit", F, F], "tuple[float, float] | None"]


def range_of_entries(
    context: ViewContext, fit: ChannelFit, edges: F, counts: F
) -> tuple[float, float] | None:
    """The fit range of a fit whose range the diagnostics do not record (a window around the
    peak of a first fit): the contiguous bins nearest the fitted ``mu`` whose counts add up to
    the fit table's entries, the narrowest such window."""
    mu = fit.parameters.get("mu", (math.nan, math.nan))[0]
    if not np.isfinite(mu) or len(counts) == 0:
        return None
    cum = np.concatenate([[0.0], np.cumsum(counts)])
    i, j = np.nonzero(np.isclose(cum[None, :] - cum[:, None], fit.entries, rtol=0, atol=0.5))
    keep = j > i
    if not keep.any():
        return None
    i, j = i[keep], j[keep]
    inside = (edges[i] <= mu) & (edges[j] >= mu)
    if inside.any():
        i, j = i[inside], j[inside]
    k = int(np.argmin(j - i))
    return (float(edges[i[k]]), float(edges[j[k]]))


@dataclass(frozen=True)
class ChannelFit:
    """One row of a fit table: status code, entries and parameters (value, error)."""

    status: int
    entries: float
    parameters: dict[str, tuple[float, float]]
    index: int

    @property
    def ok(self) -> bool:
        """Whether the fit gave a valid result."""
        return self.status == ChannelStatus.OK

    @property
    def status_name(self) -> str:
        """The fit's status name."""
        try:
            return ChannelStatus(self.status).name
        except ValueError:
            return f"status {self.status}"


@dataclass(frozen=True)
class HistogramFit(ChannelView):
    """A channel fitted in a row of a channels x observable histogram.

    Parameters
    ----------
    histogram
        The diagnostics histogram (first axis: the fit table's channels, in order).
    fits
        The fit table (:meth:`~b2calib.calibration.Diagnostics.add_fits`).
    model
        The model the algorithm fitted.
    x_label
        The x axis label (default: the histogram's).
    fit_range
        The x range fitted (``None``: the whole axis), the name of an expert-config key
        holding it, or ``fit_range(context, fit, edges, counts) -> (low, high) | None``
        (e.g. :func:`range_of_entries`).
    min_entries
        The expert-config key of the minimum entries of a fit (for the NOT_ENOUGH_DATA
        message), or a number.
    channel_map
        The fit table's channel of a payload channel (default: the same number).
    value_parameter
        The fitted parameter the payload value is made from (for the message).
    relation
        How the payload value follows from the fit, e.g. ``"value = applied + mu - crate"``.
    fallback
        What a non-OK channel's substitute value is, e.g. ``"the crate mean"``.
    explain
        A calibration's own words on a channel, appended to the message.
    status_column
        The fit table's column of the fit status.
    head
        ``head(context, fit) -> message``: the whole message, for a view whose histogram is
        not the channel's own (e.g. a wire shown with its board's fit).
    absent
        When the diagnostics hold neither the fit table nor the histogram (a method that did
        not run in this execution): the message of a view without histogram; ``None``: an
        error.
    """

    histogram: str
    fits: str
    model: PeakModel
    x_label: str | None = None
    fit_range: tuple[float, float] | str | RangeOf | None = None
    min_entries: str | int | None = "min_entries"
    channel_map: Callable[[ViewContext], int] | None = None
    value_parameter: str = "mu"
    relation: str = ""
    fallback: str = ""
    explain: Explain | None = None
    status_column: str = "status"
    absent: str | None = None
    head: Callable[[ViewContext, ChannelFit], str] | None = None

    def _range(
        self, context: ViewContext, fit: ChannelFit, edges: F, counts: F
    ) -> tuple[float, float] | None:
        r: Any = self.fit_range
        if isinstance(r, str):
            r = context.config.get(r)
        elif callable(r):
            r = r(context, fit, edges, counts)
        if r is None:
            return None
        lo, hi = r
        return (float(lo), float(hi))

    def _min_entries(self, context: ViewContext) -> int | None:
        m = self.min_entries
        if isinstance(m, str):
            m = context.config.get(m)
        return None if m is None else int(m)

    def channel_fit(self, context: ViewContext) -> ChannelFit:
        """The fit-table row of the context's channel."""
        table = context.table(self.fits)
        wanted = context.channel if self.channel_map is None else self.channel_map(context)
        i = _row_index(table["channel"], wanted, f"fit table {self.fits!r}", context.where())
        params = {
            p: (float(table[p][i]), float(table[f"{p}_err"][i]))
            for p in self.model.parameters
            if p in table and f"{p}_err" in table
        }
        return ChannelFit(int(table[self.status_column][i]), float(table["entries"][i]), params, i)

    def view(self, context: ViewContext) -> FitView:
        diag = context.diagnostics
        if self.absent is not None and (
            self.fits not in diag.tables or self.histogram not in diag.histograms
        ):
            return NoChannelFit(self.absent).view(context)
        fit = self.channel_fit(context)
        edges, counts, errors, label = self.row_data(context, fit)
        fit_range = self._range(context, fit, edges, counts)
        sl = _fit_slice(edges, fit_range)
        fit_edges = edges[sl.start : sl.stop + 1]
        pulls = np.full(len(counts), np.nan)
        expected = np.full(len(counts), np.nan)
        model_x = np.zeros(0)
        model: dict[str, F] = {}
        shown = self.parameters_for(context, fit)
        peak = self.model_for(context, fit)
        values = {p: shown[p][0] for p in peak.parameters if p in shown}
        has_model = fit.ok and all(p in values for p in peak.parameters)
        has_model = has_model and all(np.isfinite(v) for v in values.values())
        has_model = has_model and len(fit_edges) > 1
        if has_model:
            lam = peak.expected(values, fit_edges)
            expected[sl] = lam
            err = errors[sl].copy()
            err = np.where(err > 0, err, np.sqrt(np.maximum(lam, 0.0)))
            with np.errstate(invalid="ignore", divide="ignore"):
                pulls[sl] = np.where(err > 0, (counts[sl] - lam) / err, np.nan)
            model_x = np.linspace(fit_edges[0], fit_edges[-1], _MODEL_POINTS)
            width = np.diff(fit_edges)
            bin_of = np.searchsorted(fit_edges, model_x, side="right") - 1
            per_bin = width[np.clip(bin_of, 0, len(width) - 1)]
            curves = peak.curves(values, model_x, fit_edges)
            parts = {k: v * per_bin for k, v in curves.items()}
            model = {"total": np.sum(list(parts.values()), axis=0), **parts}
        entries = float(counts[sl].sum())
        message = self._message(context, dataclasses.replace(fit, parameters=shown))
        return FitView(
            calibration=context.calibration,
            payload=context.name,
            channel=context.channel,
            x_label=self.x_label or label,
            edges=edges,
            counts=counts,
            errors=errors,
            model_x=model_x,
            model=model,
            pulls=pulls,
            status=context.status,
            message=message,
            parameters=shown,
            entries=entries,
            kind="fit",
            iov=context.iov,
            value=context.value,
            fit_range=None if not has_model else (float(fit_edges[0]), float(fit_edges[-1])),
            expected=expected,
        )

    def row_data(self, context: ViewContext, fit: ChannelFit) -> tuple[F, F, F, str]:
        """Edges, counts, errors and x label of the histogram row the channel was fitted
        from (subclasses: the same coordinates as the fit table's parameters)."""
        h = context.histogram(self.histogram)
        return _hist_row(h, fit.index, context.where(), self.histogram)

    def model_for(self, context: ViewContext, fit: ChannelFit) -> PeakModel:
        """The model of this channel's fit (subclasses: a per-channel template)."""
        return self.model

    def parameters_for(
        self, context: ViewContext, fit: ChannelFit
    ) -> dict[str, tuple[float, float]]:
        """The parameters shown: the fit's, and derived numbers (subclasses)."""
        return dict(fit.parameters)

    def _message(self, context: ViewContext, fit: ChannelFit) -> str:
        if self.head is not None:
            return self.head(context, fit)
        status = context.status
        # a masked channel (DEAD, HOT, UNUSABLE) says so before its fit's status
        masked = status not in ("OK", "fallback", fit.status_name)
        if fit.status == ChannelStatus.NOT_ENOUGH_DATA:
            need = self._min_entries(context)
            head = f"NOT_ENOUGH_DATA: {fit.entries:.0f} entries" + (
                f" < {need} required" if need is not None else ""
            )
            head = f"{status}: fit {head}" if masked else head
        elif fit.status == ChannelStatus.FAILED:
            head = (
                f"FAILED: the fit of {fit.entries:.0f} entries gave no valid result (no "
                "convergence, or a peak or width outside the fit range)"
            )
            head = f"{status}: fit {head}" if masked else head
        elif fit.ok:
            p = fit.parameters.get(self.value_parameter)
            head = f"fit OK: {fit.entries:.0f} entries" + (
                f", {self.value_parameter} = {_fmt(p[0])} +- {_fmt(p[1])}" if p else ""
            )
            if status != "OK":
                head = f"{status}: " + head
        else:
            head = f"{fit.status_name}: {fit.entries:.0f} entries"
        parts = [head]
        if self.relation and fit.ok:
            parts.append(self.relation)
        extra = self.explain(context, fit) if self.explain is not None else None
        if extra:
            parts.append(extra)
        return "; ".join(parts) + (_fallback_text(context, self.fallback) if not fit.ok else "")


@dataclass(frozen=True)
class CountingView(ChannelView):
    """A channel decided by counting (masks, efficiencies): the histogram or table values it
    was decided from, and the decision in words. No model, no pulls.

    Parameters
    ----------
    table
        The diagnostics table with one row per channel.
    channel_column
        The table's column of the payload channel; ``None``: the table's rows are the
        payload's.
    describe
        ``describe(context, row) -> message``: the decision with its numbers, e.g.
        ``"DEAD: 0 hits, expected 57 +- 8"``; ``row`` is the table row.
    histogram
        A diagnostics histogram to show: a row of a 2-D one (the table's row) or a 1-D one
        per channel (its bin of the channel is shown in the message; the histogram is not a
        per-channel distribution, so only its bins around the channel are given).
    histogram_row
        ``histogram_row(context, row) -> index``: the row of a 2-D histogram (default: the
        table row), e.g. a pixel's sensor.
    x_label, y_label
        Axis labels.
    channel_map
        The table's channel of a payload channel (default: the same number).
    parameters
        Table columns shown as parameters (value, error column or None).
    """

    table: str
    channel_column: str | None
    describe: Callable[[ViewContext, int], str]
    histogram: str | None = None
    histogram_row: Callable[[ViewContext, int], int] | None = None
    x_label: str | None = None
    y_label: str = "entries"
    channel_map: Callable[[ViewContext], int] | None = None
    parameters: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)
    neighbours: int = 0

    def view(self, context: ViewContext) -> FitView:
        table = context.table(self.table)
        wanted = context.channel if self.channel_map is None else self.channel_map(context)
        if self.channel_column is None:
            row = context.row if self.channel_map is None else wanted
            if not 0 <= row < len(next(iter(table.values()), ())):
                raise FitViewError(f"{context.where()}: no row {row} in table {self.table!r}")
        else:
            row = _row_index(
                table[self.channel_column], wanted, f"table {self.table!r}", context.where()
            )
        edges = counts = errors = np.zeros(0)
        label = ""
        if self.histogram is not None:
            h = context.histogram(self.histogram)
            if h.ndim == 2:
                hrow = row if self.histogram_row is None else self.histogram_row(context, row)
                edges, counts, errors, label = _hist_row(h, hrow, context.where(), self.histogram)
            else:
                e, c, err, label = _hist_row(h, 0, context.where(), self.histogram)
                lo = max(row - self.neighbours, 0)
                hi = min(row + self.neighbours + 1, len(c))
                edges, counts, errors = e[lo : hi + 1], c[lo:hi], err[lo:hi]
        params = {
            name: (
                float(table[v][row]),
                math.nan if e is None else float(table[e][row]),
            )
            for name, (v, e) in self.parameters.items()
        }
        return FitView(
            calibration=context.calibration,
            payload=context.name,
            channel=context.channel,
            x_label=self.x_label or label,
            edges=edges,
            counts=counts,
            errors=errors,
            model_x=np.zeros(0),
            model={},
            pulls=np.full(len(counts), np.nan),
            status=context.status,
            message=self.describe(context, row),
            parameters=params,
            entries=float(counts.sum()),
            kind="counting",
            iov=context.iov,
            value=context.value,
            y_label=self.y_label,
        )


@dataclass(frozen=True)
class NoChannelFit(ChannelView):
    """A payload whose channels are not fitted one by one (a linear system over all channels,
    a merge of methods, a time-interval fit): the view says so, with the channel's status and
    value, and shows no histogram.

    Parameters
    ----------
    reason
        Why there is no per-channel histogram, e.g. ``"the Bhabha 5x5 method solves one
        linear system over all crystals"``.
    detail
        ``detail(context) -> str``: more about this channel (e.g. which methods entered a
        merged value), appended to the message.
    """

    reason: str
    detail: Callable[[ViewContext], str] | None = None

    def view(self, context: ViewContext) -> FitView:
        empty = np.zeros(0)
        extra = self.detail(context) if self.detail is not None else ""
        message = f"{context.status}: no per-channel fit: {self.reason}" + (
            f"; {extra}" if extra else ""
        )
        return FitView(
            calibration=context.calibration,
            payload=context.name,
            channel=context.channel,
            x_label="",
            edges=empty,
            counts=empty,
            errors=empty,
            model_x=empty,
            model={},
            pulls=empty,
            status=context.status,
            message=message,
            parameters={},
            entries=0.0,
            kind="none",
            iov=context.iov,
            value=context.value,
        )


# ------------------------------------------------------------------------------ lookup
class _LRU:
    """A small thread-safe LRU cache."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[Any, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = make()
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


#: Decoded diagnostics per (database, step id): decoding a ROOT file takes 5-130 ms.
_DIAGNOSTICS = _LRU(16)
#: Decoded payloads per (database, name, revision).
_PAYLOADS = _LRU(64)
#: The job execution of a staged payload per (database, tag, name, revision, IoV).
_SOURCES = _LRU(1024)


def clear_cache() -> None:
    """Forget the decoded diagnostics, payloads and job look-ups (e.g. after a database was
    replaced under the same URL)."""
    for c in (_DIAGNOSTICS, _PAYLOADS, _SOURCES):
        c.clear()


@dataclass(frozen=True)
class _Source:
    """Where a staged payload revision came from."""

    calibration: str
    job: str
    step: int
    status: str
    message: str
    config: Mapping[str, Any]
    runs: tuple[tuple[int, int], ...] = ()


def _db_key(db: ConditionsDB) -> str:
    return str(db.url)


def _find_source(db: ConditionsDB, tag: str, name: str, revision: int, iov: IoV) -> _Source:
    """The job and execution that staged ``name`` rev ``revision`` for ``iov`` (prefer a job
    staging into ``tag``; a tag made from a staging tag holds the same revisions)."""
    import sqlalchemy as sa

    from b2calib.calibration.jobs import calibration_jobs as j

    with db.read() as conn:
        rows = list(
            conn.execute(
                sa.select(j.c.key, j.c.calibration, j.c.staging_tag, j.c.inputs, j.c.summary)
                .where(j.c.state == "completed")
                .order_by(j.c.id.desc())
            )
        )
    rows.sort(key=lambda r: r.staging_tag != tag)  # stable: this tag's jobs first
    for r in rows:
        if name not in r.summary or f'{name}", {revision},' not in r.summary:
            continue
        summary = json.loads(r.summary)
        if not any(n == name and int(rev) == revision for n, rev, _ in summary.get("staged", [])):
            continue
        for e in summary.get("executions", []):
            if name not in e.get("payloads", ()) or e.get("iov") is None:
                continue
            if IoV.parse(e["iov"]).contains(*iov.start):
                inputs = json.loads(r.inputs)
                return _Source(
                    r.calibration,
                    r.key,
                    int(e["step"]),
                    str(e.get("status", "")),
                    str(e.get("message", "")),
                    dict(inputs.get("config", {})),
                    tuple((int(a), int(b)) for a, b in e.get("runs", [])),
                )
        raise FitViewError(
            f"payload {name} rev {revision} [{iov}] in tag {tag}: job {r.key[:12]} of "
            f"{r.calibration} staged it but records no execution whose IoV holds run "
            f"{iov.start[0]}.{iov.start[1]}"
        )
    raise FitViewError(
        f"payload {name} rev {revision} [{iov}] in tag {tag} was not staged by a completed "
        "calibration job: there are no diagnostics to show"
    )


def _load_diagnostics(db: ConditionsDB, step: int) -> Diagnostics:
    import sqlalchemy as sa

    from b2calib.calibration.algorithm import Diagnostics
    from b2calib.calibration.jobs import step_diagnostics as d

    with db.read() as conn:
        data = conn.execute(sa.select(d.c.content).where(d.c.step_id == step)).scalar()
    return Diagnostics() if data is None else Diagnostics.from_bytes(bytes(data))


def payload_channels(payload: Payload) -> npt.NDArray[np.int64]:
    """One int64 channel id per row of a payload, as the payload validation numbers them
    (:func:`~b2calib.conditions.payload.channel_ids` of its key columns, time keys left out),
    or the row's position when there is no key column."""
    from b2calib.conditions.eventdep import TIME_KEYS

    ids = channel_ids({k: v for k, v in payload.keys.items() if k not in TIME_KEYS})
    return np.arange(len(payload), dtype=np.int64) if ids is None else ids


def _payload_row(payload: Payload, channel: int, where: str) -> int:
    ids = payload_channels(payload)
    hits = np.flatnonzero(ids == channel)
    if hits.size == 0:
        keys = ", ".join(payload.keys) or "row"
        lo, hi = (int(ids.min()), int(ids.max())) if len(ids) else (0, -1)
        raise FitViewError(
            f"{where}: no channel {channel} (channels by {keys}: {lo}..{hi}, {len(ids)} rows)"
        )
    return int(hits[0])


def fit_view(
    db: ConditionsDB, tag: str, name: str, channel: int, *, iov: str | None = None
) -> FitView:
    """The drill-down of one channel of a payload in a global tag.

    Parameters
    ----------
    db
        The conditions database (holding the calibration jobs and their diagnostics).
    tag
        The global tag.
    name
        The payload name.
    channel
        The channel as the payload validation numbers it (:func:`payload_channels`): the key
        column (e.g. the cellID), several packed (TOP module 3 pixel 17 -> 3017), or the row
        of a payload without keys.
    iov
        The IoV of the payload revision (``"16,1,16,6"``); default the first IoV of the name
        in the tag.

    Returns
    -------
    FitView
        The histogram the channel was fitted from, the model and its components, the pulls,
        the channel's status and a message saying why.

    Raises
    ------
    FitViewError
        Naming the tag, payload, IoV, channel or diagnostics that is missing: no such payload
        in the tag, no such IoV, a payload not staged by a calibration job, a calibration that
        declares no view of the payload, a channel absent from the payload.
    """
    from b2calib.calibration.declaration import get_calibration

    try:
        entries = db.iovs(tag, name)
    except ConditionsError as err:
        raise FitViewError(f"tag {tag}: {err}") from None
    if not entries:
        names = sorted({e.name for e in db.iovs(tag)})
        raise FitViewError(
            f"tag {tag} holds no payload {name!r} (payloads: {', '.join(names) or 'none'})"
        )
    if iov is None:
        entry = entries[0]
    else:
        wanted = IoV.parse(iov)
        found = [e for e in entries if e.iov == wanted]
        if not found:
            known = ", ".join(str(e.iov) for e in entries)
            raise FitViewError(f"tag {tag}: payload {name} has no IoV {iov} (IoVs: {known})")
        entry = found[0]
    key = _db_key(db)
    revision = entry.payload.revision
    source: _Source = _SOURCES.get(
        (key, tag, name, revision, str(entry.iov)),
        lambda: _find_source(db, tag, name, revision, entry.iov),
    )
    where = f"tag {tag}: payload {name} rev {revision} [{entry.iov}]"
    try:
        calibration = get_calibration(source.calibration)
    except ConfigError as err:
        raise FitViewError(f"{where}: calibration {source.calibration!r} unknown ({err})") from None
    spec = calibration.fit_views.get(name)
    if spec is None:
        declared = ", ".join(sorted(calibration.fit_views)) or "none"
        raise FitViewError(
            f"{where}: calibration {source.calibration} declares no fit view of {name} "
            f"(declared: {declared})"
        )
    payload: Payload = _PAYLOADS.get((key, name, revision), lambda: db.payload(name, revision))
    row = _payload_row(payload, int(channel), where)
    diagnostics: Diagnostics = _DIAGNOSTICS.get(
        (key, source.step), lambda: _load_diagnostics(db, source.step)
    )
    context = ViewContext(
        calibration=source.calibration,
        name=name,
        channel=int(channel),
        payload=payload,
        row=row,
        diagnostics=diagnostics,
        config=source.config,
        iov=str(entry.iov),
        step_status=source.status,
        step_message=source.message,
        runs=source.runs,
    )
    return spec.view(context)


def __dir__() -> list[str]:
    return __all__
