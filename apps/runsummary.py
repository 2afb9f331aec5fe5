"""Run summary: every run with its type, times, triggers, detectors, luminosities and flags.

A run's luminosity is shown three ways, side by side, under the names the library gives them
(:data:`b2calib.qa.store.LUMINOSITY_COLUMNS`): the **recorded** luminosity of the run registry,
and the luminosities measured from the Bhabha and the gamma-gamma events
(:meth:`b2calib.qa.store.QADatabase.luminosity`); a good-run list sums the recorded one. The
totals above the table are those of the rows it shows (the experiment and run-type filters and
the column filters); the rows it shows are downloadable as CSV. Each run links to its views in
QAM and in the sign-off page; the page's state is in its URL
(``/runsummary?exp=14&run_type=physics``), so a view can be shared.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models.widgets.tables import HTMLTemplateFormatter, NumberFormatter

from b2calib.geometry import DETECTORS
from b2calib.qa.store import (
    LUMINOSITY_COLUMNS,
    STATUS_COLUMNS,
    LuminosityTable,
)
from b2calib.runs import RUN_TYPES

from ._common import ALL, FileDownload, header, luminosity_total, served, session_user

__all__ = ["RunSummary"]

#: Order of the detectors and systems in the page (as on every page).
_ORDER = {d: i for i, d in enumerate(STATUS_COLUMNS)}
#: The run registry's luminosity (what a good-run list sums).
RECORDED = LUMINOSITY_COLUMNS[0]
#: The page's state in its URL (``/runsummary?exp=14&run_type=physics``).
_URL_STATE = ("exp", "run_type")
#: The column of the links to a run's views in the other pages.
_VIEWS = "views"
#: How the type column shows a run type: a cosmic run is marked (no beams, no luminosity).
_TYPE_TEMPLATE = (
    '<% if (value == "cosmic") { %><span class="cosmic-mark" title="cosmic run: no beams, no '
    'luminosity" style="background:#5b4a8a;color:#fff;border-radius:3px;padding:0 5px">'
    "&#9790; cosmic</span><% } else { %><%= value %><% } %>"
)


def _flags_text(run: Any) -> str:
    """'all GOOD' ('all NOTSET' ...) or each flag with its detectors, in the detector order of
    every page: 'GOOD: CDC; NOTSET: PXD, SVD, TOP'."""
    flags = {d: run.flag(d) for d in sorted(run.detectors, key=lambda d: _ORDER.get(d, 99))}
    if flags and len(set(flags.values())) == 1:
        return f"all {next(iter(flags.values()))}"
    by_flag: dict[str, list[str]] = {}
    for d, f in flags.items():
        by_flag.setdefault(f, []).append(d)
    return "; ".join(f"{f}: {', '.join(ds)}" for f, ds in by_flag.items())


def _detectors_text(detectors: tuple[str, ...]) -> str:
    """'all 7' when every detector took data, 'all but PXD' when one was missing, else the
    list of those that did (in the detector order)."""
    missing = [d for d in DETECTORS if d not in detectors]
    if len(missing) == 1:
        return f"all but {missing[0]}"
    if not missing:
        return f"all {len(DETECTORS)}"
    return " ".join(d for d in DETECTORS if d in detectors) or "none"


#: The columns' widths in pixels: they add up to 1335, inside a 1400 px window.
_WIDTHS = {
    "exp": 60,
    "run": 60,
    _VIEWS: 110,
    "type": 85,
    "beam": 95,
    "start (UTC)": 140,
    "minutes": 80,
    "L1 triggers": 115,
    "detectors": 95,
    "flags": 150,
    **dict.fromkeys(LUMINOSITY_COLUMNS, 115),
}


def _views(exp: int, run: int) -> str:
    """Links to the run's views in QAM and in the sign-off page (:func:`page_url`'s addresses;
    written out here, as two integers need no quoting and the table has thousands of runs)."""
    state = f"exp={exp}&amp;run={run}"
    return (
        f'<a class="to-qam" href="/qam?{state}" title="run {exp}/{run} in QAM">QAM</a> &middot; '
        f'<a class="to-signoff" href="/signoff?{state}" title="run {exp}/{run} in the sign-off '
        'page">sign-off</a>'
    )


def _minutes(seconds: np.ndarray) -> np.ndarray:
    return np.round(seconds / 60.0, 1)


def _utc(seconds: np.ndarray) -> np.ndarray:
    """UNIX seconds as 'YYYY-MM-DD HH:MM' (UTC), for the whole column at once."""
    text = np.datetime_as_string(np.asarray(seconds, dtype="datetime64[s]"), unit="m")
    return np.char.replace(text.astype(str), "T", " ")


class RunSummary(pn.viewable.Viewer):
    """The run table (sortable, filterable, downloadable) with the totals of the rows shown.

    Parameters
    ----------
    db
        A :class:`b2calib.qa.store.QADatabase`.
    """

    db = param.Parameter(doc="The QA database (b2calib.qa.store.QADatabase).")
    exp = param.String(default=ALL, doc="Experiment shown (a number, or 'all'); in the URL.")
    run_type = param.String(default=ALL, doc="Run type shown (or 'all'); in the URL.")

    def __init__(self, **params: Any) -> None:
        location = pn.state.location if served() else None
        if location is not None:  # the URL's state: the page is built for it
            query = location.query_params
            params.update({k: str(query[k]) for k in _URL_STATE if k in query})
        super().__init__(**params)
        if self.db is None:
            raise TypeError("RunSummary needs db=QADatabase(...)")
        self.user = session_user(self.db)
        self.experiments = [str(e) for e in self.db.runs.experiments()]
        self.notice = pn.pane.HTML("", css_classes=["summary-notice"], visible=False)
        with param.discard_events(self):  # the table is built below
            self._check_state()
        self.exp_select = pn.widgets.Select(
            label="Experiment", options=[ALL, *self.experiments], value=self.exp, width=140,
            css_classes=["summary-exp"],
        )  # fmt: skip
        self.type_select = pn.widgets.Select(
            label="Run type", options=[ALL, *RUN_TYPES], value=self.run_type, width=140,
            css_classes=["summary-type"],
        )  # fmt: skip
        self.exp_select.link(self, value="exp", bidirectional=True)
        self.type_select.link(self, value="run_type", bidirectional=True)
        frame = self.frame()
        text = {"type": "input", "func": "like", "placeholder": "filter"}
        number = {"type": "number", "func": "=", "placeholder": "="}
        self.table = pn.widgets.Tabulator(
            frame,
            show_index=False,
            disabled=True,
            pagination="remote",
            page_size=50,
            header_filters={
                c: (number if frame[c].dtype.kind in "iuf" else text)
                for c in frame.columns
                if c != _VIEWS
            },
            formatters={
                _VIEWS: {"type": "html"},
                "type": HTMLTemplateFormatter(template=_TYPE_TEMPLATE),
                "flags": {"type": "textarea"},
                **{
                    c: NumberFormatter(format="0,0.000", nan_format="-", text_align="right")
                    for c in LUMINOSITY_COLUMNS
                },
            },
            groups={"luminosity (pb-1)": list(LUMINOSITY_COLUMNS)},
            # every column has its width, so that the three luminosities stay in a shift's
            # 1400 px window (the flags and the long headers wrap)
            widths=_WIDTHS,
            configuration={"columnDefaults": {"headerWordWrap": True}},
            frozen_columns=["exp", "run"],
            sizing_mode="stretch_width",
            css_classes=["run-summary"],
        )
        self.totals = pn.pane.HTML("", css_classes=["summary-totals"], sizing_mode="stretch_width")
        self.download = FileDownload(
            callback=self._csv,
            filename="runs.csv",
            label="Download CSV (the rows shown)",
            color="primary",
            width=260,
            css_classes=["download-csv"],
        )
        self.table.param.watch(self._show_totals, ["value", "filters"])
        self._show_totals()
        if (
            location is not None
        ):  # a choice in the page goes into the URL (a number there is an int)
            location.sync(self, {k: k for k in _URL_STATE}, on_error=self._url_state)

    # ------------------------------------------------------------------------ the state
    def _url_state(self, values: dict[str, Any]) -> None:
        self.param.update(**{k: str(v) for k, v in values.items()})

    def _check_state(self) -> None:
        """An experiment or run type the database does not know (a shared URL) is said and
        replaced by all."""
        wrong = []
        if self.exp != ALL and self.exp not in self.experiments:
            wrong.append(f"experiment {self.exp!r} has no runs here")
            self.exp = ALL
        if self.run_type != ALL and self.run_type not in RUN_TYPES:
            wrong.append(f"{self.run_type!r} is not a run type ({', '.join(RUN_TYPES)})")
            self.run_type = ALL
        self.notice.object = (
            f'<p style="color:#8a5a00">{"; ".join(wrong)}: all shown.</p>' if wrong else ""
        )
        self.notice.visible = bool(wrong)

    @param.depends("exp", "run_type", watch=True)
    def refresh(self) -> None:
        """Re-read the runs of the experiment and run type chosen."""
        self._check_state()
        self.table.value = self.frame()

    # ------------------------------------------------------------------------ the table
    def frame(self) -> pd.DataFrame:
        """The table of the runs of the experiment and run type chosen."""
        exp = None if self.exp == ALL else int(self.exp)
        run_type = None if self.run_type == ALL else self.run_type
        runs = self.db.runs.select(exp=exp, run_type=run_type)
        self.luminosity = self.db.luminosity(exp=exp, run_type=run_type)
        start = np.array([r.start for r in runs], dtype=float)
        stop = np.array([r.stop for r in runs], dtype=float)
        df = pd.DataFrame(
            {
                "exp": [r.exp for r in runs],
                "run": [r.run for r in runs],
                _VIEWS: [_views(r.exp, r.run) for r in runs],
                "type": [r.run_type for r in runs],
                "beam": [r.beam_energy for r in runs],
                "start (UTC)": _utc(start) if runs else [],
                "minutes": _minutes(stop - start),
                "L1 triggers": np.array([r.l1_triggers for r in runs], dtype=np.int64),
                "detectors": [_detectors_text(r.detectors) for r in runs],
                "flags": [_flags_text(r) for r in runs],
            }
        )
        measured = self.luminosity.to_frame()[["exp", "run", *LUMINOSITY_COLUMNS]]
        df = df.merge(measured, on=["exp", "run"], how="left", validate="one_to_one")
        for c in LUMINOSITY_COLUMNS:
            df[c] = df[c].astype(float).round(3)
        return df

    def shown(self) -> pd.DataFrame:
        """The rows the table shows: the runs chosen, narrowed by the column filters."""
        return self.table.current_view

    def _csv(self) -> io.StringIO:
        buf = io.StringIO()
        self.shown().drop(columns=[_VIEWS]).to_csv(buf, index=False)
        buf.seek(0)
        return buf

    # ------------------------------------------------------------------------ totals
    def _show_totals(self, *_: Any) -> None:
        self.totals.object = self.totals_html()

    def totals_html(self) -> str:
        """Runs, hours and the three luminosities (the library's totals) of the rows shown,
        and what they are."""
        df, everything = self.shown(), self.table.value
        if everything.empty:
            return "No runs."
        filtered = len(df) < len(everything)
        head = f"<b>{len(df)} of {len(everything)} runs shown</b>" if filtered else (
            f"<b>{len(df)} runs</b>"
        )  # fmt: skip
        hours = df["minutes"].sum() / 60.0
        cosmic = int((df["type"] == "cosmic").sum())
        keys = zip(df["exp"].tolist(), df["run"].tolist(), strict=True)
        runs = (self.luminosity.get(e, r) for e, r in keys)
        shown = LuminosityTable(tuple(r for r in runs if r is not None))
        totals = " &middot; ".join(luminosity_total(t, len(df)) for t in shown.totals().values())
        which = "narrowed by the column filters" if filtered else "no column filter set"
        return (
            f"{head}, {hours:.1f} h"
            + (f", {cosmic} cosmic (no beams)" if cosmic else "")
            + f";<br>luminosity: {totals}.<br><i>Totals of the rows shown ({which}). A good-run "
            f"list sums the {RECORDED} luminosity; Bhabha and gamma-gamma are measured from "
            "the runs' events (statistical errors).</i>"
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            header("Run summary", self.user),
            self.notice,
            pn.Row(self.exp_select, self.type_select, self.download, align="end"),
            self.totals,
            self.table,
            sizing_mode="stretch_width",
        )


def app() -> pn.viewable.Viewer:
    """The served page against the server's database."""
    from .serve import current_database

    return RunSummary(db=current_database())


def __dir__() -> list[str]:
    return __all__


if pn.state.served:
    app().servable(title="b2calib run summary")
