"""Run summary: every run with its type, times, triggers, detectors, luminosity and flags.

The luminosity of a run (``L Bhabha``, ``L gg``: gamma-gamma) is taken from its Bhabha and
gamma-gamma monitoring variables when the database holds them (the ``L from`` column says so),
else from the run registry's recorded luminosity. The table sorts and filters in the browser
page by page, and the rows it shows are downloadable as CSV.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param

from b2calib.geometry import DETECTORS
from b2calib.runs import RUN_TYPES

from ._common import ALL, header, session_user

__all__ = ["LUMI_VARIABLES", "RunSummary"]

#: Monitoring variables holding a run's luminosity (pb^-1) measured with each process.
LUMI_VARIABLES = {"bhabha": "bhabha.lumi_pb", "gamma_gamma": "gamma_gamma.lumi_pb"}


def _flags_text(run: Any) -> str:
    """'all GOOD' ('all NOTSET' ...) or the detectors that are not GOOD with their flag."""
    flags = {d: run.flag(d) for d in run.detectors}
    if flags and len(set(flags.values())) == 1:
        return f"all {next(iter(flags.values()))}"
    bad = [f"{d} {f}" for d, f in flags.items() if f != "GOOD"]
    return ", ".join(bad)


def _detectors_text(detectors: tuple[str, ...]) -> str:
    """'all 7' when every detector took data, 'all but PXD' when one was missing, else the
    list of those that did."""
    missing = [d for d in DETECTORS if d not in detectors]
    if len(missing) == 1:
        return f"all but {missing[0]}"
    if set(DETECTORS) <= set(detectors):
        return f"all {len(DETECTORS)}"
    return " ".join(detectors) or "none"


class RunSummary(pn.viewable.Viewer):
    """The run table (sortable, filterable, downloadable).

    Parameters
    ----------
    db
        A :class:`b2calib.qa.store.QADatabase`.
    """

    db = param.Parameter(doc="The QA database (b2calib.qa.store.QADatabase).")
    exp: param.Selector[Any] = param.Selector(objects=[ALL], default=ALL, doc="Experiment.")
    run_type: param.Selector[Any] = param.Selector(
        objects=[ALL, *RUN_TYPES], default=ALL, doc="Run type."
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.db is None:
            raise TypeError("RunSummary needs db=QADatabase(...)")
        self.user = session_user(self.db)
        self.param.exp.objects = [ALL, *sorted({r.exp for r in self.db.runs.select()})]
        self.table = pn.widgets.Tabulator(
            self.frame(),
            show_index=False,
            disabled=True,
            pagination="remote",
            page_size=50,
            header_filters=True,
            frozen_columns=["exp", "run"],
            sizing_mode="stretch_width",
            css_classes=["run-summary"],
        )
        self.download = pn.widgets.FileDownload(
            callback=self._csv,
            filename="runs.csv",
            label="Download CSV (rows shown by the filters)",
            color="primary",
            width=320,
            css_classes=["download-csv"],
        )

    def _lumi(
        self, name: str, exp: int | None, run_type: str | None
    ) -> dict[tuple[int, int], float]:
        if name not in set(self.db.runs.variable_names()):
            return {}
        t = self.db.runs.trend(name, exp=exp, run_type=run_type)
        return {
            (int(e), int(r)): float(v)
            for e, r, v in zip(t.exp, t.run, t.value, strict=True)
            if np.isfinite(v)
        }

    def frame(self) -> pd.DataFrame:
        """The table of the runs selected by the filters."""
        exp = None if self.exp == ALL else int(self.exp)
        run_type = None if self.run_type == ALL else self.run_type
        runs = list(self.db.runs.select(exp=exp, run_type=run_type))
        bhabha = self._lumi(LUMI_VARIABLES["bhabha"], exp, run_type)
        gg = self._lumi(LUMI_VARIABLES["gamma_gamma"], exp, run_type)
        rows = []
        for r in runs:
            b, g = bhabha.get(r.key), gg.get(r.key)
            measured = b is not None or g is not None
            rows.append(
                {
                    "exp": r.exp,
                    "run": r.run,
                    "type": r.run_type,
                    "beam": r.beam_energy,
                    "start (UTC)": r.start_iso[:16],
                    "stop (UTC)": r.stop_iso[:16],
                    "minutes": round(r.duration_s / 60.0, 1),
                    "L1 triggers": int(r.l1_triggers),
                    "detectors": _detectors_text(r.detectors),
                    "L Bhabha (pb-1)": b if b is not None else r.lumi_pb,
                    "L gg (pb-1)": g if g is not None else r.lumi_pb,
                    "L from": "monitoring" if measured else "registry",
                    "flags": _flags_text(r),
                }
            )
        columns = ["exp", "run", "type", "beam", "start (UTC)", "stop (UTC)", "minutes",
                   "L1 triggers", "detectors", "L Bhabha (pb-1)", "L gg (pb-1)",
                   "L from", "flags"]  # fmt: skip
        df = pd.DataFrame(rows, columns=columns)
        for c in ("L Bhabha (pb-1)", "L gg (pb-1)"):
            df[c] = df[c].astype(float).round(3)
        return df

    @param.depends("exp", "run_type", watch=True)
    def refresh(self) -> None:
        """Re-read the runs."""
        self.table.value = self.frame()

    def _csv(self) -> io.StringIO:
        view = self.table.current_view
        buf = io.StringIO()
        view.to_csv(buf, index=False)
        buf.seek(0)
        return buf

    @param.depends("exp", "run_type")
    def totals(self) -> pn.pane.Markdown:
        """Number of runs and summed luminosity of the selection."""
        df = self.table.value
        if df.empty:
            return pn.pane.Markdown("No runs.")
        lumi = df["L Bhabha (pb-1)"].sum() / 1000.0
        src = sorted(set(df["L from"]))
        note = "" if src == ["monitoring"] else f" (luminosity from: {', '.join(src)})"
        hours = df["minutes"].sum() / 60.0
        return pn.pane.Markdown(
            f"**{len(df)} runs**, {hours:.1f} h, "
            f"{lumi if math.isfinite(lumi) else 0:.3f} fb<sup>-1</sup> (Bhabha){note}"
        )

    def __panel__(self) -> pn.viewable.Viewable:
        filters = pn.Param(
            self.param, parameters=["exp", "run_type"], show_name=False,
            default_layout=pn.Row,
        )  # fmt: skip
        return pn.Column(
            header("Run summary", self.user),
            pn.Row(filters, self.download),
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
