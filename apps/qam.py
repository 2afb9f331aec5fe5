"""QAM: trends of the monitoring variables vs run and each QA histogram against its reference.

The trend shows one point per run (value and error), coloured by its status, over the GOOD
band of the run's class (run type and beam energy: 4S, Continuum and cosmic runs each have
their own): colour and band come from the library's one comparison
(:class:`b2calib.qa.store.Trend`). A point clicked picks its run. For the run picked the page
lists the evidence of its automatic status, worst first (:meth:`QADatabase.status.evidence`),
draws its worst histograms over the reference of its class (scaled to the run's entries), and
tables its comparisons and monitoring variables, each with its status.

The page is made once per session: one trend figure and a few histogram figures whose data
sources are replaced in place when the run or the variable changes (a change sends the new
numbers, not a new plot). Nothing is cached by time: every change reads the library, which
keeps an experiment's judged variables while its stored values and run registry are unchanged
(:meth:`b2calib.qa.store.runs.Runs.judged`), so a re-evaluation by another process shows at the
next change; the page keeps only the experiment's run list (read again for a run not in it)
and its variable list (read again when the experiment, detector, run type or range changes).
The state is in the URL:
``/qam?exp=14&run=15&variable=mumu.top_time&detector=TOP&run_type=physics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from html import escape
from typing import Any
from urllib.parse import urlencode

import numpy as np
import panel as pn
import param
from bokeh.core.property.vectorization import field, value
from bokeh.models import (
    CategoricalColorMapper,
    CDSView,
    ColumnDataSource,
    DataRange1d,
    Grid,
    GroupFilter,
    HoverTool,
    Line,
    LinearAxis,
    PanTool,
    Plot,
    Quad,
    ResetTool,
    TapTool,
    WheelZoomTool,
)
from bokeh.models.annotations import Legend, LegendItem, Span, Title
from bokeh.plotting import figure
from bokeh.transform import factor_mark
from panel.io.document import unlocked

from b2calib.qa.monitoring import VARIABLES
from b2calib.qa.store.status import STATUS_COLUMNS
from b2calib.runs import RUN_TYPES

from ._common import (
    ALL,
    STATUS_COLORS,
    comparisons_frame,
    db_key,
    header,
    histogram_pair,
    served,
    session_user,
    status_table,
)

__all__ = ["MAX_HISTOGRAMS", "QAM"]

#: Histograms drawn at once for one run (the worst statuses first); the table lists them all.
MAX_HISTOGRAMS = 3
_SEVERITY = {"ERROR": 0, "WARNING": 1, "TOO_FEW": 2, "GOOD": 3, "NONE": 4}
#: Colours of the GOOD bands of the run classes, in the order the classes appear.
_CLASS_COLORS = ("#2e9e44", "#1f77b4", "#9467bd", "#8c564b", "#17becf", "#bcbd22")
#: Markers of the run types on the trend (cosmic runs: triangles, also outlined).
_MARKERS = {"physics": "circle", "cosmic": "triangle", "beam": "square", "debug": "diamond"}
#: The state the URL carries (a view to share).
_URL_STATE = ("exp", "run", "variable", "detector", "run_type")
#: How bad a trend status is (the worst run of a variable is shown first).
_RANK = {"ERROR": 2, "WARNING": 1}


# ------------------------------------------------------------------------------ page
class QAM(pn.viewable.Viewer):
    """Quality-assurance monitor: trends and histograms with their references.

    Parameters
    ----------
    db
        A :class:`b2calib.qa.store.QADatabase`.
    exp, run, variable, detector
        The state (also the URL's): the experiment, the run shown, the variable of the trend
        and the detector (or system) the variables and histograms are narrowed to (``"all"``).
    run_type, first, last
        The runs of the trend.
    """

    db = param.Parameter(doc="The QA database (b2calib.qa.store.QADatabase).")
    exp = param.Integer(default=None, allow_None=True, doc="Experiment.")
    run = param.Integer(default=None, allow_None=True, doc="Run whose histograms are shown.")
    variable = param.String(default="", doc="Monitoring variable of the trend.")
    detector = param.String(default=ALL, doc="Detector or system ('all': every one).")
    run_type = param.String(default=ALL, doc="Run type of the trend's runs ('all': every one).")
    first = param.Integer(default=None, allow_None=True, doc="First run shown.")
    last = param.Integer(default=None, allow_None=True, doc="Last run shown.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.db is None:
            raise TypeError("QAM needs db=QADatabase(...)")
        self._key = db_key(self.db)
        self.user = session_user(self.db)
        self._busy = False
        #: the runs of each experiment read by this page (read again for a run not in them)
        self._run_lists: dict[int, dict[int, Any]] = {}
        #: the variable options and the scope they were read for
        self._options: list[str] = []
        self._options_scope: tuple[Any, ...] | None = None
        exps = self.db.runs.experiments()
        self._exps = exps
        self.message = pn.pane.Alert("", alert_type="warning", visible=False)
        # -- widgets
        self.exp_select = pn.widgets.Select(
            label="Experiment", options=exps, width=200, css_classes=["qam-exp"]
        )
        self.detector_select = pn.widgets.Select(
            label="Detector", options=[ALL, *STATUS_COLUMNS], width=200,
            css_classes=["qam-detector"],
        )  # fmt: skip
        self.run_type_select = pn.widgets.Select(
            label="Run type", options=[ALL, *RUN_TYPES], width=200, css_classes=["qam-run-type"]
        )
        self.first_input = pn.widgets.IntInput(
            label="First run", placeholder="first run", width=200, css_classes=["qam-first"]
        )
        self.last_input = pn.widgets.IntInput(
            label="Last run", placeholder="last run", width=200, css_classes=["qam-last"]
        )
        self.variable_select = pn.widgets.Select(
            label="Variable (worst first)", options=[], width=200, css_classes=["qam-variable"]
        )
        self.run_input = pn.widgets.IntInput(
            label="Run", placeholder="run", width=200, css_classes=["qam-run"]
        )
        self.previous_button = pn.widgets.Button(
            label="< previous", width=95, css_classes=["qam-previous"]
        )
        self.next_button = pn.widgets.Button(label="next >", width=95, css_classes=["qam-next"])
        # -- the views, made once
        self.trend_title = pn.pane.HTML("", sizing_mode="stretch_width", margin=(0, 10))
        self._trend_fig = self._make_trend()
        self.trend_pane = pn.pane.Bokeh(self._trend_fig, sizing_mode="stretch_width")
        self.run_head = pn.pane.HTML("", sizing_mode="stretch_width")
        self.evidence_table = pn.pane.HTML("", sizing_mode="stretch_width")
        self._hist_parts: dict[str, tuple[Any, Any, Any, Any]] = {}
        self._hist_figs = [self._make_histogram(i) for i in range(MAX_HISTOGRAMS)]
        self.hist_note = pn.pane.HTML("", sizing_mode="stretch_width")
        self.hist_pane = pn.GridBox(
            *(pn.pane.Bokeh(f) for f in self._hist_figs), ncols=3, css_classes=["qam-histograms"]
        )
        self.comparisons_table = pn.pane.HTML("", sizing_mode="stretch_width")
        self.variables_table = pn.pane.HTML("", sizing_mode="stretch_width")
        # -- the state: the URL's, then defaults for what it does not give
        if served() and pn.state.location is not None:
            pn.state.location.sync(self, {k: k for k in _URL_STATE})
        self._complete_state(say=True)
        self._show_widgets()
        self._draw_trend()
        self._draw_run()
        #: the URL of the whole state (a view to share), written by the browser when it changes
        self._url = pn.widgets.TextInput(visible=False, css_classes=["qam-url"])
        self._url.jscallback(
            value="if (cb_obj.value) window.history.replaceState(window.history.state, '', "
            "cb_obj.value)"
        )
        if served() and pn.state.location is not None:
            pn.state.onload(self._state_to_url)
        # -- widgets -> state -> views
        self.exp_select.param.watch(lambda e: self._set(exp=e.new), "value")
        self.detector_select.param.watch(lambda e: self._set(detector=e.new), "value")
        self.run_type_select.param.watch(lambda e: self._set(run_type=e.new), "value")
        self.first_input.param.watch(lambda e: self._set(first=e.new), "value")
        self.last_input.param.watch(lambda e: self._set(last=e.new), "value")
        self.variable_select.param.watch(lambda e: self._set(variable=e.new), "value")
        self.run_input.param.watch(lambda e: self._set(run=e.new), "value")
        self.previous_button.on_click(lambda _: self._step(-1))
        self.next_button.on_click(lambda _: self._step(+1))
        self._points.selected.on_change("indices", self._on_tap)
        self.param.watch(self._on_scope, ["exp", "detector", "run_type", "first", "last"])
        self.param.watch(self._on_variable, "variable")
        self.param.watch(self._on_run, "run")

    # -- state ---------------------------------------------------------------------------

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        """Changes made here (state, widgets, figures) do not echo back as user input."""
        busy, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = busy

    def _state_to_url(self) -> None:
        """The whole state into the URL once the page is shown. Through the hidden
        :attr:`_url` box, whose change the browser writes with ``history.replaceState``:
        Panel's location pushed it only when the document happened to be idle already (a
        second page opened in the same tab kept its short URL)."""
        if pn.state.location is not None:
            state = {k: getattr(self, k) for k in _URL_STATE}
            query = urlencode({k: v for k, v in state.items() if v is not None})
            self._url.value = f"{pn.state.location.pathname}?{query}"

    def _set(self, **values: Any) -> None:
        if not self._busy:
            self.param.update(**values)

    def _run_type(self) -> str | None:
        return None if self.run_type == ALL else self.run_type

    def _runs(self, *, having: int | None = None) -> dict[int, Any]:
        """The runs of the experiment by number (a :class:`b2calib.runs.Run` each), as read
        when the page opened or the experiment was chosen; read again when run ``having`` is
        not among them (a run registered since)."""
        if self.exp is None:
            return {}
        runs = self._run_lists.get(self.exp)
        if runs is None or (having is not None and having not in runs):
            runs = {r.run: r for r in self.db.runs.select(exp=self.exp)}
            self._run_lists[self.exp] = runs
        return runs

    def _trend(self, name: str) -> Any:
        return self.db.runs.trend(
            name, exp=self.exp, first=self.first, last=self.last, run_type=self._run_type()
        )

    def _variable_options(self) -> list[str]:
        """The variables with a value in the runs selected (experiment, run type, range) of
        the detector chosen, the worst first."""
        if self.exp is None:
            return []
        names = self.db.status.worst_variables(
            self.exp, run_type=self._run_type(), first=self.first, last=self.last
        )
        if self.detector != ALL:
            names = [n for n in names if _detector_of(n) == self.detector]
        return names

    def _default_run(self, *, worst: bool) -> int | None:
        """The run to show when the state gives none that fits. ``worst`` (another experiment
        or run type chosen): the worst run of the variable among the runs selected (worst
        status, then farthest from its band's centre), else the first of them. Otherwise, and
        without a variable: the latest collision run of the run type (cosmic runs have no QA
        histograms)."""
        runs = self._runs()
        if worst and self.variable and self.exp is not None:
            t = self._trend(self.variable)
            if len(t):
                rank = np.array([_RANK.get(str(x), 0) for x in t.status])
                pull = np.nan_to_num(np.abs(np.asarray(t.pull, dtype=float)), nan=0.0)
                if rank.max() > 0:
                    return int(t.run[np.lexsort((-pull, -rank))[0]])
                return int(t.run[0])
        chosen = [r for r, x in runs.items() if self.run_type in (ALL, x.run_type)]
        physics = [r for r in chosen if runs[r].run_type == "physics"]
        return max(physics or chosen or runs or [None])  # type: ignore[type-var]

    def _complete_state(self, *, say: bool = False, worst_run: bool = False) -> None:
        """Defaults for what the state does not give (or gives wrong: said in the message when
        ``say``, the URL's state); a run that does not fit is replaced by the worst run of the
        variable when ``worst_run``, else by the latest (see :meth:`_default_run`)."""
        notes: list[str] = []
        with self._quiet():
            if self.exp not in self._exps:
                if self.exp is not None:
                    notes.append(f"experiment {self.exp} has no runs in the database")
                self.exp = self._exps[-1] if self._exps else None
            if self.detector not in (ALL, *STATUS_COLUMNS):
                notes.append(f"no detector or system {self.detector!r}")
                self.detector = ALL
            if self.run_type not in (ALL, *RUN_TYPES):
                notes.append(f"no run type {self.run_type!r}")
                self.run_type = ALL
            scope = (self.exp, self.detector, self.run_type, self.first, self.last)
            if scope != self._options_scope:  # read once per scope, not on every change
                self._options, self._options_scope = self._variable_options(), scope
            if self.variable not in self._options:
                if self.variable:
                    notes.append(
                        f"no monitoring variable {self.variable!r}"
                        + ("" if self.detector == ALL else f" of {self.detector}")
                        + ("" if self.run_type == ALL else f" in {self.run_type} runs")
                    )
                self.variable = self._options[0] if self._options else ""
            runs = self._runs(having=self.run)
            if self.run not in runs:
                if self.run is not None:
                    notes.append(f"run {self.exp}/{self.run} is not in the database")
                self.run = self._default_run(worst=worst_run)
        if say:
            text = "; ".join(notes)
            self.message.object = (
                text[:1].upper() + text[1:] + ": shown is the default instead." if notes else ""
            )
            self.message.visible = bool(notes)

    def _show_widgets(self) -> None:
        """Show the state in the widgets (without echoing it back)."""
        with self._quiet():
            self.exp_select.value = self.exp
            self.detector_select.value = self.detector
            self.run_type_select.value = self.run_type
            self.first_input.value = self.first
            self.last_input.value = self.last
            self.variable_select.options = self._options
            self.variable_select.value = self.variable or None
            self.run_input.value = self.run
            runs = self._stepped()
            self.previous_button.disabled = not runs or self.run == runs[0]
            self.next_button.disabled = not runs or self.run == runs[-1]

    def _stepped(self) -> list[int]:
        """The runs the previous/next buttons step through: those of the run type chosen."""
        return sorted(r for r, x in self._runs().items() if self.run_type in (ALL, x.run_type))

    def _step(self, step: int) -> None:
        runs = self._stepped()
        if self.run in runs:
            i = runs.index(self.run) + step
            if 0 <= i < len(runs):
                self.run = runs[i]

    def _on_scope(self, *events: Any) -> None:
        if self._busy:
            return
        changed = {e.name for e in events}
        runs = self._runs()
        if "exp" in changed or (
            "run_type" in changed
            and self.run in runs
            and self.run_type not in (ALL, runs[self.run].run_type)
        ):
            # a run number of another experiment is another run (and a run of another type
            # is not in the trend): the worst run of the variable (kept when the experiment
            # has it, else its worst) is shown
            with self._quiet():
                self.run = None
        self._complete_state(worst_run=True)
        self._show_widgets()
        self._draw_trend()
        self._draw_run()

    def _on_variable(self, *_: Any) -> None:
        if self._busy:
            return
        self._complete_state()
        self._show_widgets()
        self._draw_trend()

    def _on_run(self, *_: Any) -> None:
        if self._busy:
            return
        self._complete_state()
        self._show_widgets()
        self._draw_run()

    def _on_tap(self, attr: str, old: list[int], new: list[int]) -> None:
        """A trend point clicked: its run is shown."""
        if self._busy or not new:
            return
        runs = self._points.data["run"]
        run = int(runs[new[0]])
        if run != self.run:
            self.run = run

    # -- the trend -----------------------------------------------------------------------

    def _make_trend(self) -> Any:
        """The trend figure: GOOD bands per run class, points with errors, the run picked."""
        self._status_map = CategoricalColorMapper(
            factors=list(STATUS_COLORS), palette=list(STATUS_COLORS.values())
        )
        self._class_map = CategoricalColorMapper(factors=[], palette=list(_CLASS_COLORS))
        columns = ("run", "value", "error", "lower", "upper", "low", "high", "status",
                   "run_type", "run_class")  # fmt: skip
        self._points = ColumnDataSource({c: [] for c in columns}, name="qam-trend-points")
        p = figure(
            height=340,
            sizing_mode="stretch_width",
            tools="xpan,xwheel_zoom,box_zoom,reset",
            toolbar_location="above",
            x_axis_label="run",
            y_range=DataRange1d(only_visible=True),
            name="qam-trend",
        )
        # the GOOD band of each run (its class's centre +- 3 of its combined sigma)
        bands: Any = p.vbar(
            x="run", width=1.0, bottom="low", top="high", source=self._points,
            fill_color={"field": "run_class", "transform": self._class_map}, fill_alpha=0.18,
            line_color=None, name="qam-trend-bands",
        )  # fmt: skip
        errors: Any = p.segment(x0="run", y0="lower", x1="run", y1="upper", source=self._points,
                           line_color="#666666", line_width=1)  # fmt: skip
        markers = [_MARKERS.get(t, "circle") for t in RUN_TYPES]
        points: Any = p.scatter(
            x="run", y="value", source=self._points, size=7,
            marker=factor_mark("run_type", markers, list(RUN_TYPES)),
            fill_color={"field": "status", "transform": self._status_map},
            line_color={"field": "status", "transform": self._status_map},
            name="qam-trend-scatter",
            selection_line_color="black", nonselection_fill_alpha=1.0,
            nonselection_line_alpha=1.0,
        )  # fmt: skip
        self._scatter = points
        points.selection_glyph.size = 13
        points.selection_glyph.line_width = 2.5
        # the picked run is the source's selection: the bands and errors do not show it
        for r in (bands, errors):
            r.selection_glyph = r.glyph
            r.nonselection_glyph = r.glyph
        cosmic: Any = p.scatter(
            x="run", y="value", source=self._points, size=13, marker="triangle",
            fill_color=None, line_color="black", line_width=1.5,
            view=CDSView(filter=GroupFilter(column_name="run_type", group="cosmic")),
        )  # fmt: skip
        cosmic.nonselection_glyph = cosmic.glyph
        self._cosmic_item = LegendItem(label=value("cosmic run"), renderers=[cosmic],
                                       visible=False)  # fmt: skip
        # legends outside the plot: the status colours (and the cosmic mark), the classes' bands
        status_legend = Legend(
            title="status", items=[LegendItem(label=field("status"), renderers=[points]),
                                   self._cosmic_item],
            label_text_font_size="11px", name="qam-status-legend",
        )  # fmt: skip
        # one entry per class whose band is drawn (set with the data: a class too small for a
        # trend, or a variable not judged, has no band and no entry)
        self._bands = bands
        band_legend = Legend(
            title="GOOD band of", items=[], label_text_font_size="11px", name="qam-band-legend",
        )  # fmt: skip
        self._band_legend = band_legend
        p.add_layout(status_legend, "right")
        p.add_layout(band_legend, "right")
        p.add_tools(
            HoverTool(
                renderers=[points],
                tooltips=[
                    ("run", "@run (@run_class)"),
                    ("value", "@value{0.0000} ± @error{0.0000}"),
                    ("GOOD band", "@low{0.0000} .. @high{0.0000}"),
                    ("status", "@status"),
                ],
            ),
            TapTool(renderers=[points]),
        )
        self._marker = Span(location=0, dimension="height", line_color="#1f4e8c",
                            line_dash="dashed", line_width=1.5, visible=False,
                            name="qam-run-marker")  # fmt: skip
        p.add_layout(self._marker)
        return p

    def _draw_trend(self) -> None:
        with unlocked(), self._quiet():
            self._draw_trend_models()

    def _draw_trend_models(self) -> None:
        name = self.variable
        if not name or self.exp is None:
            self.trend_title.object = "<p>No monitoring variables in the database yet.</p>"
            self._points.data = {c: [] for c in self._points.data}
            self._trend_fig.visible = False
            return
        t = self._trend(name)
        runs = self._runs()
        run = np.asarray(t.run, dtype=np.int32)
        y = np.asarray(t.value, dtype=np.float64)
        error = np.asarray(t.error, dtype=np.float64)
        status = [str(s) for s in t.status]
        classes = [str(c) for c in t.run_class]
        run_type = [getattr(runs.get(r), "run_type", "") for r in run.tolist()]
        self._class_map.factors = list(dict.fromkeys(classes))
        drawn: dict[str, int] = {}  # the classes with a band, each at its first banded run
        finite = np.isfinite(np.asarray(t.low, dtype=float)) & np.isfinite(
            np.asarray(t.high, dtype=float)
        )
        for i in np.flatnonzero(finite).tolist():
            drawn.setdefault(classes[i], i)
        self._band_legend.items = [
            LegendItem(label=value(c), renderers=[self._bands], index=i) for c, i in drawn.items()
        ]
        self._band_legend.visible = bool(drawn)
        # what only draws (errors, bands) as 4-byte numbers: the page gets less to read
        self._points.data = {
            "run": run,
            "value": y,
            "error": error.astype(np.float32),
            "lower": (y - error).astype(np.float32),
            "upper": (y + error).astype(np.float32),
            "low": np.asarray(t.low, dtype=np.float32),
            "high": np.asarray(t.high, dtype=np.float32),
            "status": status,
            "run_type": run_type,
            "run_class": classes,
        }
        self._cosmic_item.visible = "cosmic" in run_type
        self._scatter.glyph.size = 7 if len(run) < 500 else 4  # thousands of runs: smaller dots
        self._trend_fig.visible = len(run) > 0
        self._trend_fig.yaxis.axis_label = name + (f" [{t.unit}]" if t.unit else "")
        counts = {s: status.count(s) for s in ("ERROR", "WARNING")}
        worse = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        if not run.size:
            verdict = ""
        elif worse:
            verdict = f" ({worse})"
        elif set(status) == {"GOOD"}:
            verdict = ", all GOOD"
        else:
            verdict = ""
        definition = VARIABLES.get(name)
        how = (
            "Colour: the run's status against the GOOD band of its class (shaded)"
            if definition is None or definition.judged
            else f"Not judged (no band, status NONE): {definition.description}"
        )
        self.trend_title.object = (
            f'<div id="qam-trend-title"><b>{escape(name)}</b> ({escape(t.detector)}), '
            f"exp {self.exp}: {len(run)} runs{verdict}. {escape(how)}; click a point to show "
            "its run.</div>"
            if run.size
            else f'<div id="qam-trend-title">No values of <b>{escape(name)}</b> in the '
            "selected runs.</div>"
        )
        self._mark_run()

    def _mark_run(self) -> None:
        """The run shown, marked on the trend (a dashed line, its point outlined)."""
        runs = np.asarray(self._points.data["run"])
        hit = np.flatnonzero(runs == self.run) if runs.size else np.array([], dtype=int)
        self._marker.visible = self.run is not None
        if self.run is not None:
            self._marker.location = float(self.run)
        self._points.selected.indices = [int(hit[0])] if hit.size else []

    # -- the run -------------------------------------------------------------------------

    def _make_histogram(self, i: int) -> Any:
        """Histogram figure ``i``: the run's bins, filled in its status colour, and the
        reference's (scaled to the run's entries) as a black line; both fit in its y-range."""
        run_source = ColumnDataSource(
            {"left": [], "right": [], "top": []}, name=f"qam-hist-run-{i}"
        )
        ref_source = ColumnDataSource({"x": [], "y": []}, name=f"qam-hist-ref-{i}")
        # a bare Plot: a figure() costs twice its time to make, and the page makes three
        p = Plot(
            width=330, height=250, name=f"qam-hist-{i}", x_range=DataRange1d(),
            y_range=DataRange1d(start=0.0), title=Title(text="", text_font_size="11px"),
            toolbar_location="right", min_border_left=40,
        )  # fmt: skip
        xaxis = LinearAxis(axis_label_text_font_size="10px")
        yaxis = LinearAxis()
        p.add_layout(xaxis, "below")
        p.add_layout(yaxis, "left")
        p.add_layout(Grid(dimension=0, ticker=xaxis.ticker))
        p.add_layout(Grid(dimension=1, ticker=yaxis.ticker))
        p.add_tools(PanTool(dimensions="width"), WheelZoomTool(dimensions="width"), ResetTool())
        p.toolbar.autohide = True
        bars: Any = p.add_glyph(
            run_source, Quad(left="left", right="right", top="top", bottom=0.0, fill_alpha=0.55)
        )
        ref: Any = p.add_glyph(ref_source, Line(x="x", y="y", line_color="black", line_width=1.5))
        legend = Legend(
            items=[LegendItem(label="run", renderers=[bars]),
                   LegendItem(label="reference", renderers=[ref])],
            orientation="horizontal", label_text_font_size="10px", spacing=6, margin=2,
        )  # fmt: skip
        legend.padding = 2  # type: ignore[assignment]
        p.add_layout(legend, "below")
        self._hist_parts[p.id] = (run_source, ref_source, bars, legend)
        return p

    def _draw_run(self) -> None:
        with unlocked(), self._quiet():
            self._draw_run_models()
            self._mark_run()

    def _draw_run_models(self) -> None:
        exp, run = self.exp, self.run
        if run is None or exp is None:
            self.run_head.object = "<p>No run selected.</p>"
            for f in self._hist_figs:
                f.visible = False
            return
        info = self._runs().get(run)
        det = self.detector
        db = self.db
        stored = db.histograms.comparisons(exp, run)
        keys = db.histograms.keys(exp, run)
        variables = db.runs.variables(exp, run)
        evidence = [e for e in db.status.evidence(exp, run) if det in (ALL, e.detector)]
        # -- what the run is, where it is signed off
        run_class = f"{info.run_type} {info.beam_energy}" if info is not None else ""
        cosmic = " (cosmic run)" if info is not None and info.run_type == "cosmic" else ""
        signoff = "/signoff?" + urlencode({"exp": exp, "run": run})
        summary = "/runsummary?" + urlencode(
            {"exp": exp, **({"run_type": info.run_type} if info is not None else {})}
        )
        refs = [r for r in db.histograms.references(exp).values() if (r.exp, r.run) == (exp, run)]
        notes = []
        if refs:
            notes.append(
                f'<p class="qam-is-reference"><b>Run {exp}/{run} is the reference run</b> of '
                f"{escape(run_class)} for {len(refs)} histograms: they are the reference, not "
                "compared with themselves.</p>"
            )
        missing = [e for e in evidence if e.kind == "reference"]
        for e in missing:
            notes.append(f'<p class="qam-no-reference">{escape(e.message)}</p>')
        detectors = ", ".join(info.detectors) if info is not None else ""
        self.run_head.object = (
            f'<h3 id="qam-run-head" style="margin:8px 0 2px">Run {exp}/{run}'
            f"{escape(' - ' + run_class if run_class else '')}{cosmic}</h3>"
            f'<p style="margin:2px 0">detectors: {escape(detectors)} &nbsp;|&nbsp; '
            f'<a class="qam-signoff-link" href="{escape(signoff)}">sign-off of this run</a>'
            f' &nbsp;|&nbsp; <a class="qam-summary-link" href="{escape(summary)}">'
            f"run summary</a></p>{''.join(notes)}"
        )
        # -- the evidence of its automatic status, worst first
        rows = [
            {"status": e.status, "kind": e.kind, "detector": e.detector, "item": e.name,
             "what was measured against what was expected": e.message}
            for e in evidence
        ]  # fmt: skip
        self.evidence_table.object = (
            f"<h3>Evidence of the automatic status{'' if det == ALL else ' of ' + det}, "
            "worst first</h3>"
            + (
                status_table(rows, list(rows[0]) if rows else [], "qam-evidence")
                if rows
                else '<p class="qam-evidence">Nothing feeds the automatic status of this run'
                + ("" if det == ALL else f" for {escape(det)}")
                + ".</p>"
            )
        )
        # -- its histograms over their references, worst first
        by_key = {(s.detector, s.name): s for s in stored}
        keys = [k for k in keys if det in (ALL, k[0])]

        def severity(k: tuple[str, str]) -> int:
            s = by_key.get(k)
            return _SEVERITY.get(s.comparison.status.name if s else "NONE", 5)

        keys.sort(key=lambda k: (severity(k), k))
        shown = keys[:MAX_HISTOGRAMS]
        for i, fig in enumerate(self._hist_figs):
            fig.visible = i < len(shown)
            if i < len(shown):
                self._draw_histogram(fig, exp, run, shown[i], by_key.get(shown[i]))
        self.hist_pane.visible = bool(shown)
        note = f"{len(keys)} histograms of run {exp}/{run}" + (
            f"; the {MAX_HISTOGRAMS} worst are drawn" if len(keys) > MAX_HISTOGRAMS else ""
        )
        if not keys:
            note = f"Run {exp}/{run}{cosmic} has no QA histograms" + (
                "" if det == ALL else f" of {escape(det)}"
            )
        self.hist_note.object = f"<h3>Histograms vs reference</h3><p>{note}.</p>"
        table = comparisons_frame([by_key[k] for k in keys if k in by_key])
        self.comparisons_table.object = (
            status_table(table.to_dict("records"), list(table.columns), "qam-comparisons")
            if len(table)
            else ""
        )
        # -- its monitoring variables, each with its status against its trend
        judged = {e.name: e for e in evidence if e.kind == "variable"}
        vrows = []
        for v in variables:
            if det not in (ALL, v.detector):
                continue
            e = judged.get(v.name)
            expected = getattr(e, "expected", None)
            definition = VARIABLES.get(v.name)
            vrows.append(
                {
                    "detector": v.detector,
                    "variable": v.name,
                    "value": f"{v.value:.5g}",
                    "error": f"{v.error:.2g}",
                    "unit": v.unit,
                    "GOOD band": "" if expected is None else "{:.5g} .. {:.5g}".format(*expected),
                    "status": e.status
                    if e is not None
                    else ("NONE" if definition is None or definition.judged else "not judged"),
                }
            )
        self.variables_table.object = f"<h3>Monitoring variables of run {exp}/{run}</h3>" + (
            status_table(vrows, list(vrows[0]), "qam-variables")
            if vrows
            else "<p>No monitoring variables.</p>"
        )

    def _draw_histogram(
        self, fig: Any, exp: int, run: int, key: tuple[str, str], stored: Any
    ) -> None:
        detector, name = key
        run_source, ref_source, bars, legend = self._hist_parts[fig.id]
        data = histogram_pair(
            self._key, exp, run, detector, name,
            getattr(stored, "reference_exp", None), getattr(stored, "reference_run", None),
        )  # fmt: skip
        comparison = getattr(stored, "comparison", None)
        status = getattr(getattr(comparison, "status", None), "name", "NONE")
        colour = STATUS_COLORS.get(status, STATUS_COLORS["NONE"])
        fig.visible = True
        if len(data["edges"]) != 1:
            fig.title.text = f"{detector} {name}: {len(data['edges'])}-D, see the table"
            run_source.data = {"left": [], "right": [], "top": []}
            ref_source.data = {"x": [], "y": []}
            return
        edges = np.asarray(data["edges"][0], dtype=float)
        values = np.asarray(data["values"], dtype=float)
        run_source.data = {"left": edges[:-1], "right": edges[1:], "top": values}
        bars.glyph.fill_color = colour
        bars.glyph.line_color = colour
        p = getattr(comparison, "p_value", None)
        p_text = "" if p is None or not np.isfinite(p) else f", p = {p:.3g}"
        fig.title.text = f"{detector} {name}: {status}{p_text}"
        fig.xaxis.axis_label = data["label"][0]
        if data["ref_values"] is None:
            ref_source.data = {"x": [], "y": []}
            ref_label = "no reference"
        else:
            ref_source.data = {
                "x": np.repeat(edges, 2)[1:-1],
                "y": np.repeat(np.asarray(data["ref_values"], dtype=float), 2),
            }
            ref_label = f"reference {data['ref_run'][0]}/{data['ref_run'][1]}"
            if tuple(data["ref_run"]) == (exp, run):
                ref_label += " (this run)"
        legend.items[0].label = value(f"run {exp}/{run}")
        legend.items[1].label = value(ref_label)

    # -- layout --------------------------------------------------------------------------

    def __panel__(self) -> pn.viewable.Viewable:
        filters = pn.Column(
            pn.pane.HTML("<h3>Filters</h3>"),
            self.exp_select,
            self.detector_select,
            self.run_type_select,
            self.first_input,
            self.last_input,
            self.variable_select,
            self.run_input,
            pn.Row(self.previous_button, self.next_button),
            self._url,
            width=240,
        )
        return pn.Column(
            header("QAM: quality-assurance monitor", self.user),
            self.message,
            pn.Row(
                filters,
                pn.Column(
                    pn.Column(
                        self.trend_title,
                        self.trend_pane,
                        css_classes=["qam-trend"],
                        sizing_mode="stretch_width",
                    ),
                    self.run_head,
                    self.evidence_table,
                    self.hist_note,
                    self.hist_pane,
                    self.comparisons_table,
                    self.variables_table,
                    sizing_mode="stretch_width",
                ),
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
        )


def _detector_of(name: str) -> str:
    """The detector (or system) a monitoring variable belongs to ('' when unknown)."""
    v = VARIABLES.get(name)
    return v.detector if v is not None else ""


def app() -> pn.viewable.Viewer:
    """The served page (one per session) against the server's database."""
    from .serve import current_database

    return QAM(db=current_database())


def __dir__() -> list[str]:
    return __all__


if pn.state.served:
    app().servable(title="b2calib QAM")
