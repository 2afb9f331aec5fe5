"""Payload validation: review a staging tag's payloads against what they replace, approve or
reject the tag, and download it as a basf2 local database.

The page reads, top to bottom:

* the **tag picker** (staging tags, OPEN or TESTING, first) and the tag's **traffic light**:
  one row per payload name with its calibration, detector, expert, runs, job state, calibration
  status, validation verdict and reason, wall time and channel counts
  (:func:`b2calib.review.tag_summary`), worst first; clicking a row opens that payload;
* **one payload** (:func:`b2calib.review.compare_payload`): its value vs channel with errors
  (new and previous), the difference and the pull vs channel, the distribution of the pulls,
  the detector map (pull, value or difference per cell: clicking a cell selects its channel),
  the channel statuses and a sortable table of the outliers beyond a threshold. What it is
  compared with is, by default, what it replaces; any revision of the same name or any tag can
  be picked instead;
* **one channel**: the histogram it was fitted from with the model, its components and the
  pulls, its fit status, message and parameters (:func:`b2calib.review.fit_view`), and its
  history over every IoV of the tag next to the mean and spread of all channels
  (:func:`b2calib.review.history`); clicking a point, a map cell or an outlier opens it;
* the **review**: approve (TESTING -> VALIDATED) or reject (back to OPEN) with a comment, as
  the logged-in user, only when the library's :func:`~b2calib.review.may_review` allows it
  (the reason is shown otherwise, and the library refuses a write that gets through anyway),
  the tag's reviews, and the download of a VALIDATED tag as a local database (zip).

The page's state is in its URL (``?tag=...&payload=...&channel=...&column=...&previous=...&
threshold=...&iov=...``): a link reopens the same view.

Speed: the figures are plain Bokeh, built once per page; one ColumnDataSource of numpy arrays
holds every channel of the payload shown and is shared by the channel plots and the map (a
selection in one shows in all), and changing the payload, the channel or the threshold updates
the sources in place. The channel plots share one toolbar. Nothing here computes physics: the
library answers, the page draws.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.events import Tap
from bokeh.layouts import gridplot
from bokeh.models import (
    BasicTickFormatter,
    ColumnDataSource,
    CustomJS,
    DatetimeTicker,
    DatetimeTickFormatter,
    FixedTicker,
    LinearColorMapper,
    Range1d,
    TapTool,
)
from bokeh.models.annotations import ColorBar, Title
from bokeh.palettes import RdBu11, Viridis256
from bokeh.plotting import figure

from b2calib.exceptions import B2CalibError, PermissionDenied

from ._common import describe_user, header, served, session_user

__all__ = ["LIGHT_COLORS", "STAGING_STATES", "Payloads"]

#: Colours of the traffic light.
LIGHT_COLORS = {"green": "#2e9e44", "amber": "#f0a30a", "red": "#d62728", "grey": "#9e9e9e"}
#: States of the tags listed first in the picker (the staging tags under review).
STAGING_STATES = ("TESTING", "OPEN")
#: What the map's colour can show.
MAP_COLUMNS = {"pull": "pull", "value": "new value", "diff": "difference"}
#: The query parameters of the page's URL (parameter -> query name).
URL_STATE = {
    "tag": "tag",
    "payload": "payload",
    "channel": "channel",
    "column": "column",
    "previous": "previous",
    "threshold": "threshold",
    "iov": "iov",
}

#: Canvas, not WebGL: faster in a browser without a GPU (measured in bench/bench_review.py).
_BACKEND: Literal["canvas", "svg", "webgl"] = "canvas"
_ENDED = "Your login has ended (logged out, or your account changed): reload the page."
_PLOT_W, _SIDE_W, _PLOT_H, _TABLE_W, _PULLS_H = 560, 400, 220, 380, 140
AlertKind = Literal["primary", "secondary", "success", "danger", "warning", "info", "light"]

#: Marks the page once the browser has drawn new data of a source (double animation frame):
#: ``document.body.dataset[key]`` counts the draws and ``[key + "At"]`` holds the time of the
#: last (``performance.now()``); tests and the bench wait for them.
_DRAWN_JS = """
requestAnimationFrame(() => requestAnimationFrame(() => {
  const n = Number(document.body.dataset[key] || 0) + 1
  document.body.dataset[key] = String(n)
  document.body.dataset[key + "At"] = String(performance.now())
}))
"""


def _review() -> Any:
    """The library's review layer (imported on first use: the page module loads fast)."""
    import b2calib.review as review

    return review


def _set(model: Any, name: str, value: Any) -> None:
    """Set a Bokeh property only when it changes (a title or label change lays out again)."""
    if getattr(model, name) != value:
        setattr(model, name, value)


def _fit_view(*args: Any, **kwargs: Any) -> Any:
    """The library's drill-down of a channel (:func:`b2calib.review.fit_view`)."""
    return _review().fit_view(*args, **kwargs)


def _light_style(value: Any) -> str:
    colour = LIGHT_COLORS.get(str(value))
    if colour is None:
        return ""
    return f"background-color: {colour}; color: {'black' if value == 'amber' else 'white'}"


def _fmt(x: Any, digits: int = 4) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "" if x is None else str(x)
    return "" if not np.isfinite(v) else f"{v:.{digits}g}"


def _pm(value: Any, error: Any) -> str:
    """``value ± error``; the value alone when there is no error (a payload without
    uncertainties), "none" when there is no value."""
    v, e = _fmt(value), _fmt(error)
    return (f"{v} ± {e}" if e else v) if v else "none"


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v)


def _mark_drawn(source: ColumnDataSource, key: str) -> None:
    source.js_on_change("data", CustomJS(args={"key": key}, code=_DRAWN_JS))


class Payloads(pn.viewable.Viewer):
    """Validation of a staging tag's payloads, its approval and its export.

    Parameters
    ----------
    db
        The QA database (users and login sessions: :class:`b2calib.qa.store.QADatabase`).
    conditions
        The conditions database (:class:`b2calib.conditions.ConditionsDB`); by default the
        one on ``db``'s URL.
    user
        Who reviews (a :class:`b2calib.qa.store.User`); a served page takes the logged-in user
        and ignores this; None reads only.
    """

    db = param.Parameter(doc="The QA database (users, sessions).")
    conditions = param.Parameter(default=None, doc="The conditions database.")
    user = param.Parameter(default=None, doc="The logged-in user (None: read only).")
    tag = param.String(default="", doc="The global tag reviewed.")
    payload = param.String(default="", doc="The payload name shown.")
    iov = param.String(default="", doc="The IoV of the new revision shown ('' : the latest).")
    column = param.String(default="", doc="The value column shown ('': the payload's first).")
    previous = param.String(
        default="",
        doc="What the payload is compared with: '' what it replaces, 'rev:N' revision N of the "
        "same name, 'tag:NAME' the payload valid in tag NAME.",
    )
    threshold = param.Number(
        default=5.0, bounds=(0.0, None), inclusive_bounds=(False, True),
        doc="Outlier threshold (|pull|).",
    )  # fmt: skip
    channel = param.Integer(default=None, allow_None=True, doc="The channel drilled into.")
    map_column: param.Selector[Any] = param.Selector(
        objects=list(MAP_COLUMNS), default="pull", doc="What the detector map's colour shows."
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.db is None:
            raise TypeError("Payloads needs db=QADatabase(...)")
        if self.conditions is None:
            from b2calib.conditions import ConditionsDB

            self.conditions = ConditionsDB(self.db.url, author=self.db.author)
        if served():
            self.user = session_user(self.db)  # served: the login decides, nothing else
        self._busy = False
        self._history_key: Any = None
        self._other_tag = False
        self._x = np.zeros(0)
        self._map_title = "detector map"
        self._shown: dict[str, Any] = {}
        self._summary: Any = None
        self._comparison: Any = None
        self._tags = {t.name: t for t in self.conditions.tags()}

        self._build_widgets()
        self._build_figures()
        # one payload's view: shown once a payload is
        self.payload_view = pn.Column(
            pn.Row(
                self.iov_select,
                self.column_select,
                self.previous_select,
                self.threshold_input,
                self.map_select,
            ),
            pn.Row(
                pn.pane.Bokeh(self.grid, height=3 * _PLOT_H + 10, width=_PLOT_W + _SIDE_W + 40),
                pn.Column(self.status_counts, self.outlier_info, self.outlier_table),
            ),
            pn.Row(
                pn.pane.Bokeh(
                    self.channel_grid, height=_PLOT_H + _PULLS_H + 10, width=_PLOT_W + _SIDE_W + 40
                ),
                pn.Column(self.fit_info, self.history_info, width=_TABLE_W),
            ),
            sizing_mode="stretch_width",
        )
        self.param.watch(
            self._reconcile,
            ["tag", "payload", "iov", "column", "previous", "threshold", "channel"],
        )
        self.param.watch(self._recolour_map, ["map_column"])
        if served():
            if pn.state.location is not None:
                pn.state.location.sync(self, URL_STATE)
            # what the page opened with counts as drawn once the document is
            doc = pn.state.curdoc
            if doc is not None:
                for key in ("payloadDrawn", "fitDrawn", "historyDrawn"):
                    doc.js_on_event("document_ready", CustomJS(args={"key": key}, code=_DRAWN_JS))
        if not self.tag:
            staging = self._staging_tags()
            with param.discard_events(self):
                self.tag = staging[0] if staging else ""
        self._reconcile()

    # ------------------------------------------------------------------------ widgets
    def _staging_tags(self) -> list[str]:
        order = {s: i for i, s in enumerate(STAGING_STATES)}
        staging = [t for t in self._tags.values() if t.state in order]
        staging.sort(key=lambda t: (order[t.state], -t.modified.timestamp(), t.name))
        return [t.name for t in staging]

    def _tag_groups(self) -> dict[str, dict[str, str]]:
        staging = self._staging_tags()
        others = sorted(n for n in self._tags if n not in staging)
        groups: dict[str, dict[str, str]] = {}
        if staging:
            groups["staging (TESTING, OPEN)"] = {f"{n} ({self._tags[n].state})": n for n in staging}
        if others:
            groups["other tags"] = {f"{n} ({self._tags[n].state})": n for n in others}
        return groups

    def _build_widgets(self) -> None:
        groups = self._tag_groups()
        self.tag_select = pn.widgets.Select(
            label="Global tag", groups=groups or {"": {"(no tags)": ""}}, width=320,
            css_classes=["payloads-tag"],
        )  # fmt: skip
        self.tag_select.param.watch(lambda e: setattr(self, "tag", e.new or ""), "value")
        self.tag_info = pn.pane.HTML("", css_classes=["tag-info"], sizing_mode="stretch_width")
        self.summary_table = pn.widgets.Tabulator(
            pd.DataFrame(),
            show_index=False,
            disabled=True,
            selectable=False,
            pagination=None,
            height=300,
            sizing_mode="stretch_width",
            # a long reason is cut in its cell: the whole text on hover (and under the payload)
            configuration={"columnDefaults": {"tooltip": True}},
            css_classes=["payloads-summary"],
        )
        self.summary_table.on_click(self._on_summary_click)
        self.message = pn.pane.Alert(
            "", alert_type="light", visible=False, css_classes=["payloads-message"]
        )
        self.title = pn.pane.HTML(
            "<p>Click a payload of the table to review it.</p>",
            css_classes=["payload-title"],
            sizing_mode="stretch_width",
        )
        self.iov_select = pn.widgets.Select(label="IoV", options=[], width=150)
        self.column_select = pn.widgets.Select(label="Column", options=[], width=150)
        self.previous_select = pn.widgets.Select(
            label="Compared with", options={}, width=300, css_classes=["previous-select"]
        )
        self.threshold_input = pn.widgets.FloatInput(
            label="Outlier threshold (|pull|)", value=self.threshold, start=0.1, step=0.5,
            width=170, css_classes=["outlier-threshold"],
        )  # fmt: skip
        self.map_select = pn.widgets.Select.from_param(
            self.param.map_column, label="Map shows", width=130
        )
        for widget, name in (
            (self.iov_select, "iov"),
            (self.column_select, "column"),
            (self.previous_select, "previous"),
            (self.threshold_input, "threshold"),
        ):
            widget.param.watch(self._from_widget(name), "value")
        self.status_counts = pn.pane.HTML("", css_classes=["status-counts"], width=_TABLE_W)
        self.outlier_info = pn.pane.HTML("", css_classes=["outlier-info"], width=_TABLE_W)
        self.outlier_table = pn.widgets.Tabulator(
            pd.DataFrame(),
            show_index=False,
            disabled=True,
            selectable=False,
            pagination="remote",
            page_size=12,
            width=_TABLE_W,
            css_classes=["payloads-outliers"],
        )
        self.outlier_table.on_click(self._on_outlier_click)
        self.fit_info = pn.pane.HTML("", css_classes=["fit-info"], width=_TABLE_W)
        self.history_info = pn.pane.HTML("", css_classes=["history-info"])

        # review
        self.review_note = pn.pane.HTML(
            "", css_classes=["review-note"], sizing_mode="stretch_width"
        )
        self.review_comment = pn.widgets.TextAreaInput(
            label="Comment", placeholder="why (required to reject)", height=70, width=420,
            css_classes=["review-comment"],
        )  # fmt: skip
        self.approve_button = pn.widgets.Button(
            label="Approve (TESTING → VALIDATED)", color="success", width=240,
            css_classes=["approve-tag"],
        )  # fmt: skip
        self.reject_button = pn.widgets.Button(
            label="Reject (back to OPEN)", color="danger", width=200,
            css_classes=["reject-tag"],
        )  # fmt: skip
        self.approve_button.on_click(lambda _e: self._review_tag("approve"))
        self.reject_button.on_click(lambda _e: self._review_tag("reject"))
        self.review_message = pn.pane.Alert(
            "", alert_type="light", visible=False, css_classes=["review-message"]
        )
        self.reviews_table = pn.widgets.Tabulator(
            pd.DataFrame(columns=["time", "action", "user", "role", "from", "to", "comment"]),
            show_index=False,
            disabled=True,
            selectable=False,
            sizing_mode="stretch_width",
            css_classes=["reviews-table"],
        )
        self.download = pn.widgets.FileDownload(
            callback=self._export,
            filename="tag.zip",
            label="Download local database (zip)",
            color="primary",
            width=280,
            css_classes=["download-zip"],
        )
        self.download_note = pn.pane.HTML("", css_classes=["download-note"])

    def _from_widget(self, name: str) -> Any:
        def set_param(event: Any) -> None:
            if self._busy:
                return
            value = event.new
            if name == "threshold":
                value = 0.0 if value is None else float(value)
            else:
                value = "" if value is None else str(value)
            setattr(self, name, value)

        return set_param

    def _set_widget(self, widget: Any, value: Any, options: Any = None) -> None:
        """Show ``value`` (and ``options``) in a widget without its watcher acting."""
        busy, self._busy = self._busy, True
        try:
            if options is not None:
                widget.options = options
            widget.value = value
        finally:
            self._busy = busy

    # ------------------------------------------------------------------------ figures
    def _build_figures(self) -> None:
        # one row a channel (the map, its hover and taps, the mark of a channel)
        empty = {k: np.zeros(0) for k in ("x", "channel", "new", "old", "diff", "pull", "mx",
                                          "my", "colour")}  # fmt: skip
        self.source = ColumnDataSource(empty, name="channels")
        # the channel plots: every series as one polyline broken by NaN, three vertices a
        # channel: (x, v, NaN) twice is a point (a zero-length stroke with square caps), and
        # (x, lo, NaN) to (x, hi, NaN) an error bar. One stroke a series instead of 8736 markers:
        # the browser draws a payload in a fraction of the time (bench/bench_review.py)
        self.lines = ColumnDataSource(
            {k: np.zeros(0) for k in ("x3", "new3", "old3", "diff3", "pull3", "newe3", "olde3")},
            name="channel-lines",
        )
        _mark_drawn(self.lines, "payloadDrawn")
        tools = "pan,box_zoom,wheel_zoom,reset,save"

        def channel_figure(title: str, y: str) -> Any:
            # explicit ranges, set with the data: no range computed in the browser and sent back
            f = figure(
                width=_PLOT_W, height=_PLOT_H, title=title, tools=tools,
                output_backend=_BACKEND, y_axis_label=y, x_range=Range1d(start=0, end=1),
                y_range=Range1d(start=0, end=1),
            )  # fmt: skip
            f.on_event(Tap, self._on_plot_tap)
            # channel numbers as numbers up to a million (ARICH's 4e5 read 4.000e+5); PXD's
            # 2e10 (sensor ID, u, v in one number) stays short in scientific notation
            f.xaxis[0].formatter = BasicTickFormatter(power_limit_high=6)
            return f

        self.value_fig = channel_figure("new and previous value vs channel", "value")
        self.diff_fig = channel_figure("difference (new - previous) vs channel", "new - previous")
        self.pull_fig = channel_figure("pull vs channel", "pull")
        self.diff_fig.x_range = self.value_fig.x_range
        self.pull_fig.x_range = self.value_fig.x_range
        points = dict(source=self.lines, line_width=3, line_cap="square")
        self.value_fig.line("x3", "olde3", source=self.lines, color="#999999", alpha=0.6)
        self.value_fig.line("x3", "newe3", source=self.lines, color="#1f4e8c", alpha=0.6)
        self.value_fig.line("x3", "old3", color="#999999", legend_label="previous", **points)
        self.value_fig.line("x3", "new3", color="#1f4e8c", legend_label="new", **points)
        self.value_fig.legend.location = "top_right"
        self.value_fig.legend.click_policy = "hide"
        self.diff_fig.line("x3", "diff3", color="#6a3d9a", **points)
        self.pull_fig.line("x3", "pull3", color="#e6550d", **points)
        # the channel drilled into stands out in every plot of the payload
        self.mark = ColumnDataSource(
            {k: [] for k in ("x", "new", "old", "diff", "pull", "mx", "my")}, name="mark"
        )
        _mark_drawn(self.mark, "selectionDrawn")
        for f, y in ((self.value_fig, "new"), (self.diff_fig, "diff"), (self.pull_fig, "pull")):
            f.scatter("x", y, source=self.mark, marker="diamond", size=14, fill_color="#ffd700",
                      line_color="black", line_width=1.5)  # fmt: skip
        self.value_fig.scatter("x", "old", source=self.mark, marker="circle", size=9,
                               fill_color=None, line_color="black")  # fmt: skip
        self.threshold_source = ColumnDataSource({"x": [0.0, 1.0], "hi": [5.0, 5.0],
                                                  "lo": [-5.0, -5.0]})  # fmt: skip
        for col in ("hi", "lo"):
            self.pull_fig.line("x", col, source=self.threshold_source, color="#d62728",
                               line_dash="dashed")  # fmt: skip

        # pull distribution
        self.hist_source = ColumnDataSource({"left": [], "right": [], "top": []})
        self.hist_fig = figure(
            width=_SIDE_W, height=_PLOT_H, title="pull distribution", tools="",
            toolbar_location=None, x_axis_label="pull", y_axis_label="channels",
        )  # fmt: skip
        self.hist_fig.quad(left="left", right="right", top="top", bottom=0,
                           source=self.hist_source, color="#e6550d", alpha=0.6)  # fmt: skip

        # detector map
        self.mapper = LinearColorMapper(palette=list(reversed(RdBu11)), low=-5, high=5,
                                        nan_color="#eeeeee")  # fmt: skip
        self.map_fig = figure(
            width=_SIDE_W, height=_PLOT_H, title="detector map", tools="tap,hover,reset",
            toolbar_location=None, output_backend=_BACKEND, x_range=Range1d(start=0, end=1),
            y_range=Range1d(start=0, end=1),
            tooltips=[("channel", "@channel"), ("cell", "@mx, @my"), ("pull", "@pull"),
                      ("difference", "@diff"), ("new", "@new")],
        )  # fmt: skip
        # its title names the payload, the map and what the colour shows: smaller, to fit
        title = self.map_fig.title
        if isinstance(title, Title):
            title.text_font_size = "11px"
        self.map_fig.rect(
            "mx", "my", width=1, height=1, source=self.source,
            fill_color={"field": "colour", "transform": self.mapper}, line_color=None,
            nonselection_fill_alpha=1.0,
        )  # fmt: skip
        self.map_fig.add_layout(ColorBar(color_mapper=self.mapper, width=8), "right")
        self._map_ranges = (self.map_fig.x_range, self.map_fig.y_range)
        self.map_fig.rect("mx", "my", width=1, height=1, source=self.mark, fill_color=None,
                          line_color="black", line_width=2.5)  # fmt: skip
        self.map_fig.grid.visible = False

        # drill-down: the histogram a channel was fitted from, its model and pulls
        self.fit_hist = ColumnDataSource({"left": [], "right": [], "top": [], "x": [],
                                          "lo": [], "hi": []})  # fmt: skip
        self.fit_model = ColumnDataSource({"xs": [], "ys": [], "colour": [], "label": [],
                                           "width": []})  # fmt: skip
        self.fit_pulls = ColumnDataSource({"x": [], "pull": [], "width": []})
        _mark_drawn(self.fit_model, "fitDrawn")
        self.fit_fig = figure(
            width=_SIDE_W, height=_PLOT_H, tools="pan,wheel_zoom,box_zoom,reset",
            x_range=Range1d(start=0, end=1),
            title="the channel's fit: histogram, model and components",
        )  # fmt: skip
        self.fit_fig.quad(left="left", right="right", top="top", bottom=0, source=self.fit_hist,
                          color="#9ecae1", line_color="#6baed6")  # fmt: skip
        self.fit_fig.segment("x", "lo", "x", "hi", source=self.fit_hist, color="black")
        self.fit_fig.multi_line("xs", "ys", source=self.fit_model, color="colour",
                                line_width="width", legend_field="label")  # fmt: skip
        self.fit_fig.legend.location = "top_right"
        self.fit_fig.legend.label_text_font_size = "8pt"
        self.fitpull_fig = figure(width=_SIDE_W, height=_PULLS_H,
                                  title="fit pulls per bin: (data - model) / error",
                                  y_axis_label="pull", x_range=self.fit_fig.x_range,
                                  tools="")  # fmt: skip
        self.fitpull_fig.vbar(x="x", top="pull", width="width", source=self.fit_pulls,
                              color="#756bb1")  # fmt: skip

        # history over the IoVs of the tag
        self.hist_band = ColumnDataSource({"x": [], "lo": [], "hi": [], "mean": [], "label": []})
        self.hist_chan = ColumnDataSource({"x": [], "value": [], "lo": [], "hi": [],
                                           "label": []})  # fmt: skip
        _mark_drawn(self.hist_band, "historyDrawn")
        self.history_fig = figure(
            width=_PLOT_W, height=_PLOT_H, title="history over the IoVs of the tag",
            tools="pan,wheel_zoom,box_zoom,reset,hover",
            tooltips=[("IoV", "@label"), ("value", "$y")],
        )  # fmt: skip
        self.history_fig.varea("x", "lo", "hi", source=self.hist_band, color="#bbbbbb",
                               alpha=0.5, legend_label="mean ± spread")  # fmt: skip
        self.history_fig.line("x", "mean", source=self.hist_band, color="#555555",
                              legend_label="mean of channels")  # fmt: skip
        self.history_fig.segment("x", "lo", "x", "hi", source=self.hist_chan, color="#1f4e8c")
        self.history_fig.scatter("x", "value", source=self.hist_chan, size=6, color="#1f4e8c",
                                 legend_label="channel")  # fmt: skip
        # the legend below the plot: inside, it hid the channel's first IoV (x = 0, y ~ 0)
        legend = self.history_fig.legend[0]
        legend.orientation = "horizontal"
        legend.label_text_font_size = "8pt"
        legend.update(padding=2, margin=2)
        self.history_fig.add_layout(legend, "below")

        for tap in self.map_fig.select(type=TapTool):
            tap.behavior = "select"  # type: ignore[attr-defined]
        self.source.selected.on_change("indices", self._on_tap)
        # one toolbar for the payload's plots, one for the channel's: a change of the channel
        # lays out and paints the channel's plots only, never the payload's 8736-point ones
        self.grid = gridplot(
            [[self.value_fig, self.map_fig], [self.diff_fig, self.hist_fig], [self.pull_fig, None]],
            merge_tools=True,
            toolbar_location="left",
        )
        self.channel_grid = gridplot(
            [[self.fit_fig, self.history_fig], [self.fitpull_fig, None]],
            merge_tools=True,
            toolbar_location="left",
        )

    # ------------------------------------------------------------------- reconcile
    def _reconcile(self, *_events: Any) -> None:
        """Bring what the page shows in line with its parameters, doing only what changed."""
        if self._busy:
            return
        self._busy = True
        try:
            with pn.io.hold():
                self._show_tag()
                self._show_payload()
                self._show_outliers()
                self._show_channel()
        finally:
            self._busy = False

    def _say(self, text: str, kind: AlertKind = "warning") -> None:
        self.message.object = text
        self.message.alert_type = kind
        self.message.visible = bool(text)

    def _show_tag(self) -> None:
        if self._shown.get("tag") == self.tag and self._summary is not None:
            return
        self._other_tag = self._shown.get("tag") is not None
        self._shown = {"tag": self.tag}
        self._summary = None
        self._comparison = None
        self._say("")
        if self.tag not in self._tags:
            if self.tag:
                self._say(f"There is no global tag {self.tag!r}.", "danger")
            self._set_widget(self.tag_select, None)
            self.summary_table.value = pd.DataFrame()
            self.tag_info.object = "<p>Pick a global tag.</p>"
            self._update_review()
            return
        self._set_widget(self.tag_select, self.tag)
        self._load_summary()

    def _load_summary(self) -> None:
        """Read the tag's summary (again) and show it with the tag's reviews."""
        try:
            self._summary = _review().tag_summary(self.conditions, self.tag)
        except B2CalibError as err:
            self._say(f"Cannot summarise tag {self.tag}: {err}", "danger")
            self.summary_table.value = pd.DataFrame()
            self._update_review()
            return
        self._tags[self.tag] = self._summary.tag
        names = {r.name for r in self._summary.rows}
        moved = self._other_tag and self.payload not in names  # picked another tag
        if self._summary.rows and (not self.payload or moved):
            # the worst payload first (inside _reconcile: no watcher acts on these)
            self.param.update(
                payload=self._summary.rows[0].name, iov="", column="", previous="", channel=None
            )
        self.summary_table.value = self._summary_frame()
        self.summary_table.height = min(320, 40 + 31 * len(self.summary_table.value))
        if self.summary_table.style is not None:
            self.summary_table.style.map(_light_style, subset=["light"])
        s = self._summary
        inputs = ", ".join(s.inputs) or "none recorded"
        dets = ", ".join(sorted(s.detectors)) or "none"
        self.tag_info.object = (
            f'<p><b>{html.escape(s.tag.name)}</b> is <b id="tag-state">{s.tag.state}</b>; '
            f'light <span id="tag-light" style="{_light_style(s.light)};padding:1px 6px">'
            f"{s.light}</span>; {len(s.rows)} payloads from detectors {html.escape(dets)}; "
            f"compared with {html.escape(inputs)}.</p>"
        )
        self._update_review()

    def _summary_frame(self) -> pd.DataFrame:
        rows = []
        for r in self._summary.rows:
            rows.append(
                {
                    "light": r.light,
                    "payload": r.name,
                    "calibration": r.calibration or "",
                    "detector": r.detector or "",
                    "expert": r.expert or "",
                    "runs": r.runs,
                    "IoVs": len(r.iovs),
                    "job": r.job_state or "",
                    "status": r.status or "",
                    "verdict": r.verdict or "not validated",
                    "reason": r.reason,
                    "wall time (s)": "" if r.wall_time is None else f"{r.wall_time:.1f}",
                    "channels": _counts_text(r.channels),
                }
            )
        columns = ["light", "payload", "calibration", "detector", "expert", "runs", "IoVs", "job",
                   "status", "verdict", "reason", "wall time (s)", "channels"]  # fmt: skip
        return pd.DataFrame(rows, columns=columns)

    def _row(self) -> Any:
        if self._summary is None:
            return None
        for r in self._summary.rows:
            if r.name == self.payload:
                return r
        return None

    def _on_summary_click(self, event: Any) -> None:
        if event.row is None or self._summary is None:
            return
        name = str(self.summary_table.value.iloc[event.row]["payload"])
        # a new payload starts at its latest IoV, default column and comparison
        self.param.update(payload=name, iov="", column="", previous="", channel=None)

    # ------------------------------------------------------------------- payload
    def _show_payload(self) -> None:
        key = (self.tag, self.payload, self.iov, self.column, self.previous)
        if self._shown.get("payload") == key:
            return
        self._shown["payload"] = key
        self._shown.pop("outliers", None)
        self._shown.pop("channel", None)
        self._comparison = None
        row = self._row()
        if row is None:
            if self.payload and self._summary is not None:
                self._say(f"Tag {self.tag} holds no payload {self.payload!r}.", "danger")
            self._clear_payload()
            return
        iovs = list(row.iovs)
        iov = self.iov if self.iov in iovs else iovs[-1]
        revision = row.revisions[iovs.index(iov)]
        previous: int | str | None = None
        if self.previous.startswith("rev:"):
            try:
                previous = int(self.previous[4:])
            except ValueError:
                self._say(f"previous={self.previous!r}: 'rev:' needs a revision number", "danger")
        elif self.previous.startswith("tag:"):
            previous = self.previous[4:]
        try:
            comp = _review().compare_payload(
                self.conditions, row.name, revision, previous=previous, tag=self.tag, iov=iov,
                column=self.column or None,
            )  # fmt: skip
        except B2CalibError as err:
            self._say(f"Cannot compare {row.name} rev {revision} [{iov}]: {err}", "danger")
            self._clear_payload()
            return
        self._comparison = comp
        _set(self.payload_view, "visible", True)
        self._say("")
        # the parameters say what is shown (the library's choice where they said nothing)
        with param.discard_events(self):
            self.iov = comp.iov
            self.column = comp.column
        self._shown["payload"] = (self.tag, self.payload, self.iov, self.column, self.previous)
        self._set_widget(self.iov_select, comp.iov, list(row.iovs))
        self._set_widget(self.threshold_input, self.threshold)
        self._set_widget(self.column_select, comp.column, list(comp.columns))
        self._set_widget(self.previous_select, self.previous, self._previous_options(row, comp))
        self._fill_channels(comp)

    def _previous_options(self, row: Any, comp: Any) -> dict[str, str]:
        default = f"what it replaces ({comp.previous_source})" if not self.previous else (
            "what it replaces"
        )  # fmt: skip
        options = {default: ""}
        for info in self.conditions.payloads(row.name):
            if info.revision != comp.new.revision:
                options[f"revision {info.revision}"] = f"rev:{info.revision}"
        for name in sorted(self._tags):
            if name != self.tag:
                options[f"tag {name}"] = f"tag:{name}"
        if self.previous and self.previous not in options.values():
            options[self.previous] = self.previous
        return options

    def _clear_payload(self) -> None:
        # hidden only while there is nothing to show (a tag opens on its worst payload): showing
        # it again lays the page out anew, which a change of payload need not
        _set(self.payload_view, "visible", False)
        self.source.data = {k: np.zeros(0) for k in self.source.data}
        self.lines.data = {k: np.zeros(0) for k in self.lines.data}
        self._x = np.zeros(0)
        self.hist_source.data = {"left": [], "right": [], "top": []}
        self.outlier_table.value = pd.DataFrame()
        self.status_counts.object = ""
        self.outlier_info.object = ""
        self.title.object = "<p>Click a payload of the table to review it.</p>"
        self._clear_channel()

    def _fill_channels(self, comp: Any) -> None:
        n = len(comp.channel)
        channel = np.asarray(comp.channel, dtype=np.int64)
        unique = len(np.unique(channel)) == n
        x = channel if unique else np.arange(n)
        new, new_err = np.asarray(comp.new_value, float), np.asarray(comp.new_error, float)
        old, old_err = np.asarray(comp.old_value, float), np.asarray(comp.old_error, float)
        dmap = _review().detector_map(comp)
        if dmap is not None:
            mx, my = np.asarray(dmap.x, float), np.asarray(dmap.y, float)
            self._map_title = dmap.title
            _set(self.map_fig.xaxis[0], "axis_label", dmap.x_label)
            _set(self.map_fig.yaxis[0], "axis_label", dmap.y_label)
            self.map_fig.xaxis.major_label_overrides = {int(k): v for k, v in dmap.x_labels.items()}
            self.map_fig.yaxis.major_label_overrides = {int(k): v for k, v in dmap.y_labels.items()}
        else:
            mx = my = np.full(n, np.nan)
            self._map_title = "no detector map for this payload's keys"
            _set(self.map_fig.xaxis[0], "axis_label", "")
            _set(self.map_fig.yaxis[0], "axis_label", "")
            self.map_fig.xaxis.major_label_overrides = {}
            self.map_fig.yaxis.major_label_overrides = {}
        self._map_xy = (mx, my)
        diff, pull = np.asarray(comp.diff, float), np.asarray(comp.pull, float)
        data = {
            "x": x.astype(np.float64),
            "channel": channel,
            "new": new,
            "old": old,
            "diff": diff,
            "pull": pull,
            "mx": mx,
            "my": my,
            "colour": self._map_colour(comp),
        }
        self._x = data["x"]
        self.source.selected.indices = []
        self._mark_row(None)
        # float32 to the browser: half the bytes, and more than a plot's resolution
        self.source.data = {
            k: v if k == "channel" else v.astype(np.float32) for k, v in data.items()
        }
        gap = np.full(n, np.nan)

        def triple(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
            return np.column_stack([a, a if b is None else b, gap]).ravel().astype(np.float32)

        self.lines.data = {
            "x3": triple(data["x"]),
            "new3": triple(new),
            "old3": triple(old),
            "diff3": triple(diff),
            "pull3": triple(pull),
            "newe3": triple(new - new_err, new + new_err),
            "olde3": triple(old - old_err, old + old_err),
        }
        self._set_ranges(data)
        self._set_map_range()
        keys = list(comp.keys)
        if not unique:  # e.g. a beam spot's time intervals: rows in the payload's order
            key = f"row ({', '.join(keys)})" if keys else "row"
        elif len(keys) == 1:
            key = keys[0]
        else:  # a channel number combining the keys (the outlier table shows them apart)
            key = f"channel ({', '.join(keys)})"
        # titles and labels change only when they must: a change lays the plots out again
        for f in (self.value_fig, self.diff_fig, self.pull_fig):
            _set(f.xaxis[0], "axis_label", key)
        _set(self.value_fig.yaxis[0], "axis_label", comp.column)
        counts, edges = comp.pull_histogram()
        self.hist_source.data = {
            "left": np.asarray(edges[:-1], float),
            "right": np.asarray(edges[1:], float),
            "top": np.asarray(counts, float),
        }
        lo, hi = (float(x.min()), float(x.max())) if n else (0.0, 1.0)
        self.threshold_source.data = {
            "x": [lo, hi],
            "hi": [self.threshold] * 2,
            "lo": [-self.threshold] * 2,
        }
        self.status_counts.object = self._status_html(comp)
        prev = comp.previous
        self.title.object = (
            f'<h3 id="payload-title" style="margin:4px 0">{html.escape(comp.name)} revision '
            f"{comp.new.revision} [{html.escape(comp.iov)}], column {html.escape(comp.column)}"
            f"</h3><p>{n} channels; compared with "
            f'<span id="previous-source">{html.escape(comp.previous_source)}</span>'
            + ("" if prev is not None else " (nothing to compare with)")
            + "</p>"
            + self._verdict_html()
        )

    def _verdict_html(self) -> str:
        """The payload's light, verdict and whole reason (cut short in the summary table)."""
        row = self._row()
        if row is None:
            return ""
        job = f"; job status {html.escape(row.status)}" if row.status else ""
        reason = f": {html.escape(row.reason)}" if row.reason else ""
        return (
            f'<p id="payload-verdict"><span style="{_light_style(row.light)};padding:1px 6px">'
            f"{row.light}</span> verdict <b>{html.escape(row.verdict or 'not validated')}</b>"
            f"{job}{reason}</p>"
        )

    def _set_ranges(self, data: Mapping[str, np.ndarray]) -> None:
        """The plots' ranges from the data (no range computed in the browser)."""

        def span(*columns: np.ndarray, pad: float = 0.05) -> tuple[float, float]:
            values = np.concatenate([np.asarray(c, float).ravel() for c in columns])
            values = values[np.isfinite(values)]
            if not values.size:
                return (0.0, 1.0)
            lo, hi = float(values.min()), float(values.max())
            margin = (hi - lo) * pad or max(abs(lo) * 0.05, 0.5)
            return (lo - margin, hi + margin)

        for rng, columns in (
            (self.value_fig.x_range, (data["x"],)),
            (self.value_fig.y_range, (data["new"], data["old"])),
            (self.diff_fig.y_range, (data["diff"],)),
            (self.pull_fig.y_range, (data["pull"], np.array([-self.threshold, self.threshold]))),
            (self.map_fig.x_range, (data["mx"] - 0.5, data["mx"] + 0.5)),
            (self.map_fig.y_range, (data["my"] - 0.5, data["my"] + 0.5)),
        ):
            start, end = span(*columns, pad=0.0 if rng in self._map_ranges else 0.05)
            rng.update(start=start, end=end, reset_start=start, reset_end=end)

    def _map_shown(self, comp: Any) -> str:
        """The column the map colours: the one asked for, but the difference when a pull is
        asked for and no channel has one (a payload without uncertainties): a grey map would
        hide its outliers."""
        if (
            self.map_column == "pull"
            and comp is not None
            and not np.isfinite(np.asarray(comp.pull, float)).any()
        ):
            return "diff"
        return self.map_column

    def _map_colour(self, comp: Any) -> np.ndarray:
        shown = self._map_shown(comp)
        column = {"pull": comp.pull, "value": comp.new_value, "diff": comp.diff}[shown]
        return np.asarray(column, dtype=np.float64)

    def _set_map_range(self) -> None:
        colour = np.asarray(self.source.data["colour"], float)
        finite = colour[np.isfinite(colour)]
        shown = self._map_shown(self._comparison)
        if shown == "pull":
            self.mapper.palette = list(reversed(RdBu11))
            bound = max(self.threshold, 1.0)
            self.mapper.low, self.mapper.high = -bound, bound
        elif finite.size:
            self.mapper.palette = Viridis256
            lo, hi = np.percentile(finite, [1.0, 99.0])
            if shown == "diff":
                bound = max(abs(lo), abs(hi)) or 1.0
                self.mapper.palette = list(reversed(RdBu11))
                lo, hi = -bound, bound
            self.mapper.low, self.mapper.high = float(lo), float(hi) if hi > lo else float(lo) + 1
        title = f"{self._map_title}: {MAP_COLUMNS[shown]}"
        map_x = getattr(self, "_map_xy", (np.zeros(0),))[0]
        if len(map_x) and np.isnan(map_x).all():  # no map drawn: its colour is no question
            title = self._map_title
        elif shown != self.map_column:
            title += " (no pulls)"
        _set(self.map_fig.title, "text", title)

    def _recolour_map(self, *_events: Any) -> None:
        if self._comparison is None:
            return
        colour = self._map_colour(self._comparison).astype(np.float32)
        self.source.patch({"colour": [(slice(None), colour)]})
        self._set_map_range()

    def _status_html(self, comp: Any) -> str:
        names = dict(comp.status_names)
        new = np.asarray(comp.status_new)
        old = np.asarray(comp.status_old)
        codes = sorted(set(np.unique(new).tolist()) | set(np.unique(old).tolist()))
        rows = "".join(
            f"<tr><td>{html.escape(names.get(c, 'absent' if c < 0 else str(c)))}</td>"
            f'<td style="text-align:right">{int((new == c).sum())}</td>'
            f'<td style="text-align:right">{int((old == c).sum())}</td></tr>'
            for c in codes
        )
        return (
            '<table id="status-counts" style="border-collapse:collapse">'
            "<tr><th>channel status</th><th>new</th><th>previous</th></tr>"
            f"{rows}</table>"
        )

    # ------------------------------------------------------------------- outliers
    def _show_outliers(self) -> None:
        comp = self._comparison
        key = (self._shown.get("payload"), self.threshold)
        if comp is None or self._shown.get("outliers") == key:
            return
        self._shown["outliers"] = key
        self._set_widget(self.threshold_input, self.threshold)
        try:
            out = comp.outliers(self.threshold)
        except B2CalibError as err:
            self._say(f"Outliers of {comp.name}: {err}", "danger")
            out = {}
        frame = self._outlier_frame(comp, out)
        self.outlier_table.value = frame
        limits = [f"|pull| > {self.threshold:g}"]
        if comp.max_abs_change is not None:
            limits.append(f"|change| > {comp.max_abs_change:g}")
        if comp.max_rel_change is not None:
            limits.append(f"|relative change| > {comp.max_rel_change:g}")
        self.outlier_info.object = (
            f'<p><b id="outlier-count">{len(frame)}</b> outliers among the channels OK in both: '
            f"{' or, without a pull, '.join(limits)}; click one to open its fit.</p>"
        )
        data = self.threshold_source.data
        self.threshold_source.data = {
            "x": list(data["x"]),
            "hi": [self.threshold] * 2,
            "lo": [-self.threshold] * 2,
        }
        if self.map_column == "pull":
            self._set_map_range()

    @staticmethod
    def _outlier_frame(comp: Any, out: Mapping[str, np.ndarray]) -> pd.DataFrame:
        """The outlier table: channel, its keys (when more than the channel), new, old,
        difference, pull, relative change, statuses by name; worst first (the library's
        order)."""
        if not out:
            return pd.DataFrame(columns=["channel", "new", "old", "diff", "pull", "rel"])
        keys = [k for k in comp.keys if k in out and k != "channel"]
        shown_keys = keys if len(keys) > 1 or (keys and comp.channel.dtype.kind != "i") else []
        columns = ["channel", *shown_keys, "new", "old", "diff", "pull", "rel"]
        frame = pd.DataFrame({c: np.asarray(out[c]) for c in columns if c in out})
        for c in ("new", "old", "diff", "pull", "rel"):
            if c in frame:
                frame[c] = frame[c].astype(float).round(5)
        names = dict(comp.status_names)
        for c in ("status_new", "status_old"):
            if c in out:
                frame[c.replace("_", " ")] = [names.get(int(v), str(v)) for v in out[c]]
        return frame

    def _on_outlier_click(self, event: Any) -> None:
        if event.row is None or "channel" not in self.outlier_table.value:
            return
        self.channel = int(self.outlier_table.value.iloc[event.row]["channel"])

    # ------------------------------------------------------------------- channel
    def _in_doc(self, fn: Any) -> None:
        """Run ``fn`` (a Bokeh callback's work) as a Panel callback of this page's document."""
        from panel.io.state import set_curdoc

        doc = self.value_fig.document
        if doc is None:
            fn()
            return
        with set_curdoc(doc):
            fn()

    def _on_tap(self, _attr: str, _old: Any, new: list[int]) -> None:
        """A map cell clicked: its channel."""
        if self._busy or not new or self._comparison is None:
            return
        row = int(new[0])
        channels = np.asarray(self.source.data["channel"])
        if 0 <= row < len(channels):
            self._in_doc(lambda: setattr(self, "channel", int(channels[row])))

    def _on_plot_tap(self, event: Any) -> None:
        """A channel plot clicked: the channel nearest to the click along x."""
        if self._comparison is None or event.x is None or not len(self._x):
            return
        row = int(np.nanargmin(np.abs(self._x - float(event.x))))
        channel = int(np.asarray(self.source.data["channel"])[row])
        self._in_doc(lambda: setattr(self, "channel", channel))

    def _clear_channel(self) -> None:
        if len(self.mark.data["x"]):
            self._mark_row(None)
        self.fit_hist.data = {k: [] for k in self.fit_hist.data}
        self.fit_model.data = {k: [] for k in self.fit_model.data}
        self.fit_pulls.data = {k: [] for k in self.fit_pulls.data}
        self.hist_band.data = {k: [] for k in self.hist_band.data}
        self.hist_chan.data = {k: [] for k in self.hist_chan.data}
        self.fit_info.object = "<p>Click a channel (a point, a map cell or an outlier).</p>"
        self.history_info.object = ""

    def _show_channel(self) -> None:
        comp = self._comparison
        key = (self._shown.get("payload"), self.channel)
        if comp is None or self._shown.get("channel") == key:
            return
        self._shown["channel"] = key
        if self.channel is None:
            self._clear_channel()
            self._history_later()
            return
        rows = np.flatnonzero(np.asarray(comp.channel) == self.channel)
        if rows.size == 0:
            self._say(f"{comp.name} has no channel {self.channel}.", "danger")
            self._clear_channel()
            return
        self._show_fit(comp, int(rows[0]))
        self._history_later(int(rows[0]))

    def _mark_row(self, row: int | None) -> None:
        """Mark the payload's ``row`` (None: no mark) in the payload's plots."""
        data = self.source.data
        keys = ("x", "new", "old", "diff", "pull", "mx", "my")
        if row is None or row >= len(data["x"]):
            self.mark.data = {k: [] for k in keys}
        else:
            self.mark.data = {k: [float(data[k][row])] for k in keys}

    def _history_later(self, row: int | None = None) -> None:
        """Draw the history, and mark the channel's ``row`` in the payload's plots, once what
        was asked for is on its way: in a served page on the next ticks of the server's loop
        (the payload or the channel's fit reach the browser first, without waiting for the IoVs
        of the tag nor for the repaint of the payload's plots), at once outside a server."""
        key = (self._shown.get("payload"), self.channel)
        self._history_key = key

        def draw() -> None:
            if self._history_key == key and self._comparison is not None:
                self._show_history(self.channel)
                later(select)

        def select() -> None:
            if self._history_key == key:
                self._mark_row(row)

        doc = pn.state.curdoc

        def later(fn: Any) -> None:
            if served() and doc is not None:
                doc.add_next_tick_callback(fn)
            else:
                fn()

        later(draw)

    def _show_fit(self, comp: Any, row: int) -> None:
        ch = self.channel
        assert ch is not None
        status_name = dict(comp.status_names).get(int(comp.status_new[row]), "?")
        head = (
            f'<h4 id="channel-head" style="margin:2px 0">{html.escape(comp.name)} channel {ch}'
            f"</h4><p>new {_pm(comp.new_value[row], comp.new_error[row])}, previous "
            f"{_pm(comp.old_value[row], comp.old_error[row])}, pull "
            f"{_fmt(comp.pull[row], 3) or 'none (no uncertainty)'}; channel status "
            f"{html.escape(status_name)}</p>"
        )
        try:
            fv = _fit_view(self.conditions, self.tag, comp.name, ch, iov=comp.iov)
        except B2CalibError as err:
            for s in (self.fit_hist, self.fit_model, self.fit_pulls):
                s.data = {k: [] for k in s.data}
            self.fit_info.object = (
                head + f'<p id="fit-status" class="fit-missing">No fit to show: '
                f"{html.escape(str(err))}</p>"
            )
            return
        edges = np.asarray(fv.edges, float)
        counts = np.asarray(fv.counts, float)
        errors = np.asarray(fv.errors, float)
        centres = 0.5 * (edges[:-1] + edges[1:]) if edges.size else np.zeros(0)
        self.fit_hist.data = {
            "left": edges[:-1] if edges.size else np.zeros(0),
            "right": edges[1:] if edges.size else np.zeros(0),
            "top": counts,
            "x": centres,
            "lo": counts - errors,
            "hi": counts + errors,
        }
        palette = ["#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]
        names = sorted(fv.model, key=lambda k: (k != "total", k))
        model_x = np.asarray(fv.model_x, float)
        self.fit_model.data = {
            "xs": [model_x] * len(names),
            "ys": [np.asarray(fv.model[k], float) for k in names],
            "colour": [
                "black" if k == "total" else palette[i % len(palette)] for i, k in enumerate(names)
            ],
            "label": names,
            "width": [2.0 if k == "total" else 1.2 for k in names],
        }
        # the x range: the bins with entries (a histogram's axis is wide)
        filled = np.flatnonzero(counts > 0)
        if filled.size:
            lo, hi = float(edges[filled[0]]), float(edges[filled[-1] + 1])
        elif edges.size:
            lo, hi = float(edges[0]), float(edges[-1])
        else:  # no histogram for this channel (the message says why)
            lo, hi = 0.0, 1.0
        pad = 0.05 * (hi - lo) or 0.5
        self.fit_fig.x_range.update(start=lo - pad, end=hi + pad)
        self.fit_pulls.data = {
            "x": centres,
            "pull": np.asarray(fv.pulls, float),
            "width": np.diff(edges) * 0.9,
        }
        _set(self.fit_fig.xaxis[0], "axis_label", fv.x_label)
        parameters = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td>"
            f"<td>{'± ' + _fmt(e) if _fmt(e) else ''}</td></tr>"
            for k, (v, e) in fv.parameters.items()
        )
        self.fit_info.object = (
            head
            + f'<p>fit <b id="fit-status">{html.escape(fv.status)}</b>'
            + (f": {html.escape(fv.message)}" if fv.message else "")
            + f"; {fv.entries:.0f} entries</p>"
            + f'<table id="fit-parameters">{parameters}</table>'
        )

    def _show_history(self, channel: int | None) -> None:
        comp = self._comparison
        if comp is None:
            return
        channels = () if channel is None else (channel,)
        try:
            h = _review().history(self.conditions, self.tag, comp.name, column=comp.column,
                                  channels=channels)  # fmt: skip
        except B2CalibError as err:
            self.history_info.object = f"<p>No history: {html.escape(str(err))}</p>"
            return
        n = len(h.first_run)
        labels = [
            f"{e}/{a}-{b}" if b != a else f"{e}/{a}"
            for e, a, b in zip(h.exp.tolist(), h.first_run.tolist(), h.last_run.tolist(),
                               strict=True)
        ]  # fmt: skip
        axis = self.history_fig.xaxis[0]
        if h.time is not None:
            x = np.asarray(h.time, float) * 1000.0
            if not isinstance(axis.ticker, DatetimeTicker):
                axis.formatter = DatetimeTickFormatter()
                axis.ticker = DatetimeTicker()
            _set(axis, "axis_label", "time")
        else:
            x = np.arange(n, dtype=float)
            step = max(1, int(np.ceil(n / 10)))
            ticks = list(range(0, n, step))
            if isinstance(axis.ticker, FixedTicker):
                _set(axis.ticker, "ticks", ticks)
            else:
                axis.ticker = FixedTicker(ticks=ticks)
                axis.formatter = BasicTickFormatter()
            _set(axis, "major_label_overrides", dict(enumerate(labels)))
            _set(axis, "axis_label", "IoV (exp/runs)")
        _set(self.history_fig.yaxis[0], "axis_label", comp.column)
        mean, spread = np.asarray(h.mean, float), np.asarray(h.spread, float)
        self.hist_band.data = {
            "x": x,
            "lo": mean - spread,
            "hi": mean + spread,
            "mean": mean,
            "label": labels,
        }
        if channel is not None and h.values.shape[1]:
            v, e = np.asarray(h.values[:, 0], float), np.asarray(h.errors[:, 0], float)
            self.hist_chan.data = {"x": x, "value": v, "lo": v - e, "hi": v + e, "label": labels}
            what = f"channel {channel}"
        else:
            self.hist_chan.data = {k: [] for k in self.hist_chan.data}
            what = "all channels"
        self.history_info.object = (
            f'<p id="history-head"><b>History</b>: {html.escape(h.name)}.{html.escape(h.column)} '
            f"over the {n} IoVs of {html.escape(h.tag)}, {what} (grey: mean ± spread of the "
            "channels OK in each IoV)</p>"
        )

    # ------------------------------------------------------------------- review
    def _update_review(self) -> None:
        tag = self._tags.get(self.tag)
        s = self._summary
        reason = ""
        allowed = False
        if tag is None or s is None:
            reason = "Pick a tag."
        elif self.user is None:
            reason = "Read only: log in as a manager or as the detector's expert to review."
        else:
            allowed, why = _review().may_review(self.user, s)
            if not allowed:
                reason = why
            elif tag.state != "TESTING":
                allowed = False
                reason = (
                    f"Tag {tag.name} is {tag.state}: only a TESTING tag can be approved or "
                    "rejected."
                )
        for b in (self.approve_button, self.reject_button):
            b.disabled = not allowed
        who = html.escape(describe_user(self.user))
        self.review_note.object = (
            f"<p>You are {who}. "
            + (
                "You may approve or reject this tag."
                if allowed
                else f'<span id="review-refusal">{html.escape(reason)}</span>'
            )
            + "</p>"
        )
        rows = [
            {
                "time": r.time.strftime("%Y-%m-%d %H:%M:%S"),
                "action": r.action,
                "user": r.user,
                "role": r.role,
                "from": r.state_from,
                "to": r.state_to,
                "comment": r.comment,
            }
            for r in (s.reviews if s is not None else ())
        ]
        self.reviews_table.value = pd.DataFrame(
            rows, columns=["time", "action", "user", "role", "from", "to", "comment"]
        )
        if tag is not None and tag.state == "VALIDATED":
            self.download.disabled = False
            self.download.filename = f"{tag.name}.zip"
            self.download_note.object = (
                f"<p>{html.escape(tag.name)} as a basf2 local database: database.txt and the "
                "payload files.</p>"
            )
        else:
            self.download.disabled = True
            state = "no tag" if tag is None else f"{tag.name} is {tag.state}"
            self.download_note.object = (
                f'<p id="download-refusal">Only a VALIDATED tag is exported ({html.escape(state)}'
                ").</p>"
            )

    def _writer(self) -> Any:
        """Who writes now, or None after saying why (a served page's login may have ended)."""
        if self.user is None:
            self._review_say("Read only: log in to review tags.", "danger")
            return None
        if not served():
            return self.user
        user = session_user(self.db)
        if user != self.user:
            self._review_say(_ENDED, "danger")
            return None
        return user

    def _review_say(self, text: str, kind: AlertKind) -> None:
        self.review_message.object = text
        self.review_message.alert_type = kind
        self.review_message.visible = True

    def _review_tag(self, action: str) -> None:
        comment = (self.review_comment.value or "").strip()
        if action == "reject" and not comment:
            self._review_say(f"Say why {self.tag} is rejected: a comment is required.", "warning")
            return
        user = self._writer()
        if user is None:
            return
        do = _review().approve if action == "approve" else _review().reject
        try:
            r = do(self.conditions, self.tag, user, comment)
        except PermissionDenied as err:
            self._review_say(f"Refused: {err}", "danger")
            return
        except B2CalibError as err:
            self._review_say(f"Not done: {err}", "danger")
            return
        self.review_comment.value = ""
        self._review_say(
            f"{r.tag}: {r.action} by {r.user} ({r.role}), {r.state_from} → {r.state_to}.",
            "success",
        )
        self._tags = {t.name: t for t in self.conditions.tags()}
        self._set_widget(self.tag_select, self.tag, None)
        self.tag_select.groups = self._tag_groups()
        self._set_widget(self.tag_select, self.tag)
        self._load_summary()

    def _export(self) -> io.BytesIO:
        tag = self._tags.get(self.tag)
        if tag is None or tag.state != "VALIDATED":
            return io.BytesIO(b"")
        return io.BytesIO(_review().export_zip(self.conditions, tag.name))

    # ------------------------------------------------------------------- layout
    def __panel__(self) -> pn.viewable.Viewable:
        review_card = pn.Card(
            self.review_note,
            self.review_comment,
            pn.Row(self.approve_button, self.reject_button),
            self.review_message,
            pn.pane.Markdown("**Reviews of this tag**"),
            self.reviews_table,
            pn.Row(self.download, self.download_note),
            title="Review and export",
            collapsed=False,
            sizing_mode="stretch_width",
        )
        return pn.Column(
            header("Payload validation", self.user),
            pn.Row(self.tag_select, self.tag_info, sizing_mode="stretch_width"),
            self.message,
            self.summary_table,
            review_card,
            self.title,
            self.payload_view,
            sizing_mode="stretch_width",
        )


def app() -> pn.viewable.Viewer:
    """The served page against the server's databases."""
    from .serve import current_conditions, current_database

    return Payloads(db=current_database(), conditions=current_conditions())


def __dir__() -> list[str]:
    return __all__


if pn.state.served:
    app().servable(title="b2calib payload validation")
