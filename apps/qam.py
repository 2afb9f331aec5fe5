"""QAM: trends of the monitoring variables vs run and each QA histogram against its reference.

The trend shows one point per run (value and error, coloured by its status against the
reference band of that variable: mean +- 3 sigma of its reference runs); the histograms of the
chosen run are drawn over their reference, scaled to the run's entries, with the stored test
result (statistic, ndf, p-value, status). Only these aggregates are sent to the browser.
"""

from __future__ import annotations

from typing import Any

import holoviews as hv
import holoviews.plotting.bokeh  # registers the Bokeh backend for .opts
import numpy as np
import pandas as pd
import panel as pn
import param

from b2calib.qa.monitoring import SYSTEMS, VARIABLES
from b2calib.runs import RUN_TYPES

from ._common import (
    ALL,
    STATUS_COLORS,
    comparisons_frame,
    db_key,
    header,
    histogram_plot,
    session_user,
    status_style,
)

__all__ = ["MAX_HISTOGRAMS", "QAM"]

#: Histograms drawn at once for one run (the worst statuses first); the table lists them all.
MAX_HISTOGRAMS = 12
_SEVERITY = {"ERROR": 0, "WARNING": 1, "TOO_FEW": 2, "GOOD": 3, "NONE": 4}


class QAM(pn.viewable.Viewer):
    """Quality-assurance monitor: trends and histograms with their references.

    Parameters
    ----------
    db
        A :class:`b2calib.qa.store.QADatabase`.
    """

    db = param.Parameter(doc="The QA database (b2calib.qa.store.QADatabase).")
    exp: param.Selector[Any] = param.Selector(objects=[], doc="Experiment.")
    run_type: param.Selector[Any] = param.Selector(
        objects=[ALL, *RUN_TYPES], default=ALL, doc="Run type."
    )
    detector: param.Selector[Any] = param.Selector(objects=[ALL], default=ALL, doc="Detector.")
    first = param.Integer(default=None, allow_None=True, doc="First run shown.")
    last = param.Integer(default=None, allow_None=True, doc="Last run shown.")
    variable: param.Selector[Any] = param.Selector(
        objects=[], doc="Monitoring variable of the trend."
    )
    run: param.Selector[Any] = param.Selector(objects=[], doc="Run whose histograms are shown.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.db is None:
            raise TypeError("QAM needs db=QADatabase(...)")
        self._key = db_key(self.db)
        self.user = session_user(self.db)
        runs = self.db.runs.select()
        exps = sorted({r.exp for r in runs})
        self.param.exp.objects = exps
        dets: list[str] = []
        for r in runs:
            dets += [d for d in r.detectors if d not in dets]
        self.param.detector.objects = [ALL, *dets, *SYSTEMS]
        if exps and self.exp not in exps:
            with param.discard_events(self):
                self.exp = exps[-1]
        # a variable belongs to the detector (or system) its collector monitors
        self._variable_detector = {name: v.detector for name, v in VARIABLES.items()}
        self._update_runs()
        self._update_variables()

    # --------------------------------------------------------------------- options
    def _selected_runs(self) -> list[Any]:
        run_type = None if self.run_type == ALL else self.run_type
        return list(
            self.db.runs.select(exp=self.exp, first=self.first, last=self.last, run_type=run_type)
        )

    @param.depends("exp", "first", "last", "run_type", watch=True)
    def _update_runs(self) -> None:
        runs = self._selected_runs()
        numbers = [r.run for r in runs]
        self.param.run.objects = numbers
        if numbers and self.run not in numbers:
            # the latest collision run: cosmic runs have no QA histograms
            physics = [r.run for r in runs if r.run_type == "physics"]
            self.run = (physics or numbers)[-1]

    @param.depends("detector", "exp", watch=True)
    def _update_variables(self) -> None:
        order = {name: i for i, name in enumerate(VARIABLES)}  # physics (mumu) ones first
        names = sorted(self.db.runs.variable_names(), key=lambda n: (order.get(n, len(order)), n))
        if self.detector != ALL:
            names = [n for n in names if self._variable_detector.get(n) == self.detector]
        self.param.variable.objects = names
        if names and self.variable not in names:
            self.variable = names[0]

    # ------------------------------------------------------------------------ views
    @param.depends("variable", "exp", "first", "last", "run_type")
    def trend_plot(self) -> pn.viewable.Viewable:
        """Trend of the chosen variable vs run with its reference band and status colours."""
        if not self.variable:
            return pn.pane.Markdown("No monitoring variables in the database yet.")
        run_type = None if self.run_type == ALL else self.run_type
        t = self.db.runs.trend(
            self.variable, exp=self.exp, first=self.first, last=self.last, run_type=run_type
        )
        df = pd.DataFrame(
            {
                "run": np.asarray(t.run, dtype=int),
                "exp": np.asarray(t.exp, dtype=int),
                "value": np.asarray(t.value, dtype=float),
                "error": np.asarray(t.error, dtype=float),
                "status": [str(s) for s in t.status],
            }
        )
        if df.empty:
            return pn.pane.Markdown(f"No values of {self.variable} in the selected runs.")
        parts: list[Any] = []
        lo, hi = t.band
        has_band = bool(np.isfinite(lo) and np.isfinite(hi))
        if has_band:
            parts.append(hv.HSpan(lo, hi).opts(color="#2e9e44", alpha=0.12))
        if t.reference is not None:
            parts.append(hv.HLine(t.reference).opts(color="#2e9e44", line_dash="dashed"))
        parts.append(
            hv.ErrorBars(df, "run", ["value", "error"]).opts(color="#555555", line_width=1)
        )
        points = hv.Scatter(df, "run", ["value", "exp", "error", "status"]).opts(
            color="status",
            cmap=STATUS_COLORS,
            size=7 if len(df) < 500 else 4,
            tools=["hover"],
            show_legend=True,
            legend_position="top_left",
        )
        parts.append(points)
        unit = f" [{t.unit}]" if t.unit else ""
        band = f"; GOOD band {lo:.4g} .. {hi:.4g}{unit}" if has_band else ""
        counts = df["status"].value_counts()
        worse = ", ".join(f"{counts[s]} {s}" for s in ("WARNING", "ERROR") if s in counts)
        if worse:
            verdict = f" ({worse})"
        elif set(counts.index) == {"GOOD"}:
            verdict = ", all GOOD"
        else:
            verdict = ""
        title = f"**{self.variable}** ({t.detector}), exp {self.exp}: {len(df)} runs{verdict}{band}"
        plot = hv.Overlay(parts).opts(
            ylabel=f"{self.variable}{unit}", xlabel="run", responsive=True, height=320
        )
        return pn.Column(
            pn.pane.Markdown(title, margin=(0, 10)),
            pn.pane.HoloViews(plot, sizing_mode="stretch_width"),
            css_classes=["qam-trend"],
            sizing_mode="stretch_width",
        )

    @param.depends("run", "detector", "exp")
    def histograms(self) -> pn.viewable.Viewable:
        """The QA histograms of the chosen run over their references, worst first."""
        if self.run is None:
            return pn.pane.Markdown("No run selected.")
        keys = list(self.db.histograms.keys(self.exp, self.run))
        if self.detector != ALL:
            keys = [k for k in keys if k[0] == self.detector]
        stored = {
            (s.detector, s.name): s for s in self.db.histograms.comparisons(self.exp, self.run)
        }

        def severity(k: tuple[str, str]) -> int:
            s = stored.get(k)
            return _SEVERITY.get(s.comparison.status.name if s else "NONE", 5)

        keys.sort(key=lambda k: (severity(k), k))
        table = comparisons_frame([stored[k] for k in keys if k in stored])
        shown = keys[:MAX_HISTOGRAMS]
        plots = [
            pn.pane.HoloViews(
                histogram_plot(self._key, self.exp, self.run, d, n, stored.get((d, n)))
            )
            for d, n in shown
        ]
        note = f"{len(keys)} histograms of run {self.exp}/{self.run}" + (
            f"; the {MAX_HISTOGRAMS} worst are drawn" if len(keys) > MAX_HISTOGRAMS else ""
        )
        return pn.Column(
            pn.pane.Markdown(f"### Histograms vs reference\n{note}"),
            _comparisons_table(table),
            pn.GridBox(*plots, ncols=3) if plots else pn.pane.Markdown("No QA histograms."),
            sizing_mode="stretch_width",
        )

    @param.depends("run", "detector", "exp")
    def variables_table(self) -> pn.viewable.Viewable:
        """The monitoring variables of the chosen run."""
        if self.run is None:
            return pn.pane.Markdown("")
        rows = [
            {
                "detector": getattr(v, "detector", ""),
                "variable": v.name,
                "value": v.value,
                "error": v.error,
                "unit": getattr(v, "unit", ""),
            }
            for v in self.db.runs.variables(self.exp, self.run)
            if self.detector == ALL or getattr(v, "detector", "") == self.detector
        ]
        df = pd.DataFrame(rows, columns=["detector", "variable", "value", "error", "unit"])
        return pn.Column(
            pn.pane.Markdown(f"### Monitoring variables of run {self.exp}/{self.run}"),
            pn.widgets.Tabulator(
                df,
                show_index=False,
                disabled=True,
                pagination="local",
                page_size=15,
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
        )

    def __panel__(self) -> pn.viewable.Viewable:
        filters = pn.Param(
            self.param,
            parameters=["exp", "detector", "run_type", "first", "last", "variable", "run"],
            widgets={
                "exp": {"width": 200},
                "detector": {"width": 200, "css_classes": ["qam-detector"]},
                "run_type": {"width": 200},
                "first": {"type": pn.widgets.IntInput, "placeholder": "first run", "width": 200},
                "last": {"type": pn.widgets.IntInput, "placeholder": "last run", "width": 200},
                "variable": {"width": 200},
                "run": {"width": 200},
            },
            show_name=False,
            width=220,
        )
        return pn.Column(
            header("QAM: quality-assurance monitor", self.user),
            pn.Row(
                pn.Column(pn.pane.Markdown("### Filters"), filters, width=240),
                pn.Column(
                    self.trend_plot,
                    self.histograms,
                    self.variables_table,
                    sizing_mode="stretch_width",
                ),
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
        )


def _comparisons_table(df: pd.DataFrame) -> pn.widgets.Tabulator:
    table = pn.widgets.Tabulator(
        df,
        show_index=False,
        disabled=True,
        pagination="local",
        page_size=10,
        sizing_mode="stretch_width",
        formatters={"p-value": {"type": "plaintext"}},
    )
    if table.style is not None:
        table.style.map(status_style, subset=["status"])
    return table


def app() -> pn.viewable.Viewer:
    """The served page (one per session) against the server's database."""
    from .serve import current_database

    return QAM(db=current_database())


def __dir__() -> list[str]:
    return __all__


if pn.state.served:
    app().servable(title="b2calib QAM")
