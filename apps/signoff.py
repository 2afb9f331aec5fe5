"""Sign-off: the runs x detectors certification grid, the evidence of a cell, flags with
comments and their history, the run workflow, and the good-run lists.

The grid shows each detector's current flag as the cell's colour and text, and the automatic
status of the last evaluation as a stripe on its left: evidence next to the human decision,
never replacing it. Clicking a cell shows that detector's evidence for the run (automatic
status, histograms over their references with the test results, monitoring variables, flag
history) and, for a user allowed to, the controls to set its flag. Every write goes through the
library with the logged-in user, which refuses what the user's role does not allow
(:class:`~b2calib.exceptions.PermissionDenied`, shown as a message). A served page asks again
before every write whether its login is still live: one ended since the page was opened
(logged out, the user removed or changed) writes nothing.
"""

from __future__ import annotations

import io
import json
from typing import Any, Literal

import pandas as pd
import panel as pn
import param

from b2calib.exceptions import B2CalibError, PermissionDenied
from b2calib.geometry import DETECTORS
from b2calib.qa.grl import PRESETS
from b2calib.runs import DQ_FLAGS, RUN_TYPES

from ._common import (
    ALL,
    FLAG_COLORS,
    STATUS_COLORS,
    comparisons_frame,
    db_key,
    describe_user,
    header,
    histogram_plot,
    served,
    session_user,
)

__all__ = ["SignOff"]

_PAGE_SIZE = 25
_ENDED = "Your login has ended (logged out, or your account changed): reload the page."
AlertKind = Literal["primary", "secondary", "success", "danger", "warning", "info", "light"]


def _flag_style(value: Any) -> str:
    colour = FLAG_COLORS.get(str(value).split(" ")[0])
    if colour is None:
        return ""
    text = "white" if str(value).startswith(("GOOD", "BAD", "EXCLUDED")) else "black"
    return f"background-color: {colour}; color: {text}"


class SignOff(pn.viewable.Viewer):
    """Certification of runs by detector, run workflow and good-run lists.

    Parameters
    ----------
    db
        A :class:`b2calib.qa.store.QADatabase`.
    user
        Who writes (a :class:`b2calib.qa.store.User`); a served page takes the logged-in user
        and ignores this; None reads only.
    """

    db = param.Parameter(doc="The QA database (b2calib.qa.store.QADatabase).")
    user = param.Parameter(default=None, doc="The logged-in user (None: read only).")
    exp: param.Selector[Any] = param.Selector(objects=[], doc="Experiment.")
    run_type: param.Selector[Any] = param.Selector(
        objects=[ALL, *RUN_TYPES], default=ALL, doc="Run type."
    )
    first = param.Integer(default=None, allow_None=True, doc="First run of the grid.")
    last = param.Integer(default=None, allow_None=True, doc="Last run of the grid.")
    selected = param.Tuple(default=None, allow_None=True, length=3, doc="(exp, run, detector).")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.db is None:
            raise TypeError("SignOff needs db=QADatabase(...)")
        if served():
            self.user = session_user(self.db)  # served: the login decides, nothing else
        self._key = db_key(self.db)
        runs = list(self.db.runs.select())
        exps = sorted({r.exp for r in runs})
        self.param.exp.objects = exps
        if exps and self.exp not in exps:
            with param.discard_events(self):
                self.exp = exps[-1]
        # the detectors any run included, in the geometry's order (PXD first)
        included = {d for r in runs for d in r.detectors}
        self._detectors: list[str] = [d for d in DETECTORS if d in included]

        self.grid = pn.widgets.Tabulator(
            self._grid_frame(),
            show_index=False,
            disabled=True,
            selectable=False,
            pagination="remote",
            page_size=_PAGE_SIZE,
            frozen_columns=["exp", "run"],
            widths=dict.fromkeys(self._detectors, 118),
            sizing_mode="stretch_width",
            css_classes=["signoff-grid"],
        )
        if self.grid.style is not None:
            self.grid.style.apply(self._grid_style, axis=None)
        self.grid.on_click(self._on_cell)

        self.message = pn.pane.Alert(
            "", alert_type="light", visible=False, css_classes=["signoff-message"]
        )
        self.flag_select = pn.widgets.Select(
            label="Flag", options=list(DQ_FLAGS), width=180, css_classes=["flag-select"]
        )
        self.comment = pn.widgets.TextAreaInput(
            label="Comment",
            placeholder="why (required unless GOOD)",
            height=80,
            width=360,
            css_classes=["flag-comment"],
        )
        self.set_button = pn.widgets.Button(
            label="Set flag", color="primary", width=120, css_classes=["set-flag"]
        )
        self.set_button.on_click(self._set_flag)
        self.workflow_comment = pn.widgets.TextInput(label="Workflow comment", width=300)
        self.to_signoff = pn.widgets.Button(
            label="Send to sign-off", width=150, css_classes=["to-signoff"]
        )
        self.complete = pn.widgets.Button(
            label="Complete run", color="success", width=150, css_classes=["complete-run"]
        )
        self.reopen = pn.widgets.Button(
            label="Reopen run", color="warning", width=150, css_classes=["reopen-run"]
        )
        self.to_signoff.on_click(lambda _e: self._move("SIGNOFF"))
        self.complete.on_click(lambda _e: self._move("COMPLETED"))
        self.reopen.on_click(lambda _e: self._move("OPEN"))

        # good-run lists
        self.grl_select = pn.widgets.Select(
            label="Good-run list", width=260, css_classes=["grl-select"]
        )
        self.grl_info = pn.pane.Markdown("", css_classes=["grl-info"])
        self.grl_preset = pn.widgets.Select(
            label="Preset", options=list(PRESETS), width=260, css_classes=["grl-preset"]
        )
        self.grl_expression = pn.widgets.TextInput(
            label="Expression", value=PRESETS[self.grl_preset.value], width=420
        )
        self.grl_name = pn.widgets.TextInput(
            label="Name", placeholder="e.g. golden", width=200, css_classes=["grl-name"]
        )
        self.grl_description = pn.widgets.TextInput(label="Description", width=420)
        self.grl_make = pn.widgets.Button(
            label="Make new version", color="primary", width=180, css_classes=["grl-make"]
        )
        self.grl_message = pn.pane.Alert(
            "", alert_type="light", visible=False, css_classes=["grl-message"]
        )
        self.grl_preset.param.watch(
            lambda e: setattr(self.grl_expression, "value", PRESETS[e.new]), "value"
        )
        self.grl_make.on_click(self._make_grl)
        self.grl_select.param.watch(lambda _e: self._show_grl(), "value")
        self.downloads = {
            kind: pn.widgets.FileDownload(
                callback=self._download_callback(kind),
                filename=f"grl.{ext}",
                label=label,
                color="default",
                width=170,
                css_classes=[f"download-{kind}"],
            )
            for kind, ext, label in (
                ("json", "json", "JSON"),
                ("cms", "json", "CMS JSON"),
                ("csv", "csv", "CSV"),
            )
        }
        self._refresh_grls()
        self._update_controls()

    # --------------------------------------------------------------------------- grid
    def _grid_runs(self) -> list[Any]:
        run_type = None if self.run_type == ALL else self.run_type
        return list(
            self.db.runs.select(exp=self.exp, first=self.first, last=self.last, run_type=run_type)
        )

    def _grid_frame(self) -> pd.DataFrame:
        """One row per run: exp, run, type, then the current flag of each detector."""
        runs = self._grid_runs()
        flags = self.db.certification.flag_grid(exp=self.exp, first=self.first, last=self.last)
        self._auto = self.db.status.grid(exp=self.exp, first=self.first, last=self.last)
        states = self.db.certification.states(exp=self.exp, first=self.first, last=self.last)
        rows = []
        for r in runs:
            f = flags.get((r.exp, r.run), {})
            row: dict[str, Any] = {
                "exp": r.exp,
                "run": r.run,
                "type": r.run_type,
                "state": states.get((r.exp, r.run), "OPEN"),
            }
            for d in self._detectors:
                row[d] = f.get(d, "NOTSET") if d in r.detectors else "-"
            rows.append(row)
        return pd.DataFrame(rows, columns=["exp", "run", "type", "state", *self._detectors])

    def _grid_style(self, df: pd.DataFrame) -> pd.DataFrame:
        """Flag as background, automatic status as a left stripe."""
        css = pd.DataFrame("", index=df.index, columns=df.columns)
        keys = list(zip(df["exp"].astype(int), df["run"].astype(int), strict=True))
        none = STATUS_COLORS["NONE"]
        for d in self._detectors:
            if d not in df.columns:
                continue
            stripes = [STATUS_COLORS.get(self._auto.get(k, {}).get(d, "NONE"), none) for k in keys]
            css[d] = [
                "" if flag == "-" else f"{_flag_style(flag)}; border-left: 7px solid {stripe}"
                for flag, stripe in zip(df[d].tolist(), stripes, strict=True)
            ]
        return css

    @param.depends("exp", "first", "last", "run_type", watch=True)
    def refresh_grid(self) -> None:
        """Re-read the flags of the runs in the grid."""
        self.grid.value = self._grid_frame()

    def _on_cell(self, event: Any) -> None:
        if event.column not in self._detectors or event.row is None:
            return
        row = self.grid.value.iloc[event.row]
        if row[event.column] == "-":
            self._say(f"{event.column} was not included in run {row['exp']}/{row['run']}.")
            return
        self.message.visible = False
        self.selected = (int(row["exp"]), int(row["run"]), str(event.column))

    # ------------------------------------------------------------------------- writes
    def _say(self, text: str, kind: AlertKind = "warning") -> None:
        self.message.object = text
        self.message.alert_type = kind
        self.message.visible = True

    def _writer(self, say: Any, read_only: str) -> Any:
        """Who writes now, or None (after ``say`` told why, ``read_only`` to a visitor without
        login): the page's user, and in a served page only while its login is live (looked up
        again: it may have ended since the page was opened)."""
        if self.user is None:
            say(read_only, "danger")
            return None
        if not served():
            return self.user
        user = session_user(self.db)
        if user != self.user:
            say(_ENDED, "danger")
            return None
        return user

    def _refusal(self) -> str | None:
        """Why the current user may not flag the selected cell, or None."""
        if self.selected is None:
            return "Click a cell of the grid to see its evidence."
        exp, run, det = self.selected
        if self.user is None:
            return "Read only: log in to set flags."
        if not self.user.can_flag(det):
            return f"{describe_user(self.user)} may not flag {det}."
        if self.db.certification.state(exp, run).state == "COMPLETED":
            return f"Run {exp}/{run} is COMPLETED: a manager must reopen it first."
        return None

    @param.depends("selected", watch=True)
    def _update_controls(self) -> None:
        refusal = self._refusal()
        for w in (self.flag_select, self.comment, self.set_button):
            w.disabled = refusal is not None
        if self.selected is not None:
            exp, run, det = self.selected
            current = self.db.certification.flags(exp, run).get(det)
            self.flag_select.value = current.flag if current is not None else "NOTSET"
            if refusal is not None:
                self._say(refusal, "secondary")
        state = self.db.certification.state(*self.selected[:2]).state if self.selected else None
        u = self.user
        can_move = u is not None and u.role in ("expert", "manager")
        manager = u is not None and u.is_manager
        self.to_signoff.disabled = not (can_move and state == "OPEN")
        self.complete.disabled = not (manager and state == "SIGNOFF")
        self.reopen.disabled = not (manager and state == "COMPLETED")
        self.grl_make.disabled = not manager

    def _set_flag(self, _event: Any = None) -> None:
        if self.selected is None:
            return
        exp, run, det = self.selected
        flag, comment = self.flag_select.value, (self.comment.value or "").strip()
        if flag != "GOOD" and not comment:
            self._say(f"Say why {det} of run {exp}/{run} is {flag}: a comment is required.")
            return
        user = self._writer(self._say, "Read only: log in to set flags.")
        if user is None:
            return
        try:
            entry = self.db.certification.set_flag(exp, run, det, flag, user=user, comment=comment)
        except PermissionDenied as err:
            self._say(f"Refused: {err}", "danger")
            return
        except B2CalibError as err:
            self._say(f"Not saved: {err}", "danger")
            return
        self.comment.value = ""
        self._say(f"{det} of run {exp}/{run} set to {entry.flag} by {entry.author}.", "success")
        self._patch_cell(exp, run, det, entry.flag)
        self.param.trigger("selected")

    def _patch_cell(self, exp: int, run: int, column: str, value: str) -> None:
        df = self.grid.value
        hit = df.index[(df["exp"] == exp) & (df["run"] == run)]
        if len(hit):
            self.grid.patch({column: [(int(hit[0]), value)]})

    def _move(self, state: str) -> None:
        if self.selected is None:
            return
        user = self._writer(self._say, "Read only: log in to change run states.")
        if user is None:
            return
        exp, run, _ = self.selected
        try:
            self.db.certification.set_state(
                exp, run, state, user=user, comment=(self.workflow_comment.value or "").strip()
            )
        except PermissionDenied as err:
            self._say(f"Refused: {err}", "danger")
            return
        except B2CalibError as err:
            self._say(f"Not changed: {err}", "danger")
            return
        self.workflow_comment.value = ""
        self._say(f"Run {exp}/{run} is now {state}.", "success")
        self._patch_cell(exp, run, "state", state)
        self.param.trigger("selected")

    # ---------------------------------------------------------------------- evidence
    @param.depends("selected")
    def evidence(self) -> pn.viewable.Viewable:
        """Automatic status, histograms vs reference, variables and flag history of a cell."""
        if self.selected is None:
            return pn.pane.Markdown("Click a detector cell of the grid to see its evidence.")
        exp, run, det = self.selected
        auto = self.db.status.get(exp, run).get(det, "NONE")
        colour = STATUS_COLORS.get(auto, STATUS_COLORS["NONE"])
        current = self.db.certification.flags(exp, run).get(det)
        flag = current.flag if current is not None else "NOTSET"
        state = self.db.certification.state(exp, run)
        head = pn.pane.HTML(
            f'<div id="evidence-head"><b style="font-size:1.2em">Run {exp}/{run}, {det}</b>'
            f' &nbsp; flag <span id="current-flag" style="{_flag_style(flag)};padding:2px 6px">'
            f"{flag}</span> &nbsp; automatic status "
            f'<span id="auto-status" style="background:{colour};padding:2px 6px">{auto}</span>'
            f' &nbsp; run state <b id="run-state">{state.state}</b></div>',
            sizing_mode="stretch_width",
        )
        stored = [s for s in self.db.histograms.comparisons(exp, run) if s.detector == det]
        plots = [
            pn.pane.HoloViews(histogram_plot(self._key, exp, run, det, s.name, s))
            for s in stored[:6]
        ]
        variables = pd.DataFrame(
            [
                {
                    "variable": v.name,
                    "value": v.value,
                    "error": v.error,
                    "unit": getattr(v, "unit", ""),
                }
                for v in self.db.runs.variables(exp, run)
                if getattr(v, "detector", None) == det
            ],
            columns=["variable", "value", "error", "unit"],
        )
        history = pd.DataFrame(
            [
                {
                    "time": e.time.strftime("%Y-%m-%d %H:%M:%S"),
                    "flag": e.flag,
                    "author": e.author,
                    "comment": e.comment,
                }
                for e in self.db.certification.flag_history(exp, run, det)
            ],
            columns=["time", "flag", "author", "comment"],
        )
        states = pd.DataFrame(
            [
                {
                    "time": s.time.strftime("%Y-%m-%d %H:%M:%S"),
                    "state": s.state,
                    "author": s.author,
                    "comment": s.comment,
                }
                for s in self.db.certification.state_history(exp, run)
            ],
            columns=["time", "state", "author", "comment"],
        )
        table_opts: dict[str, Any] = dict(show_index=False, disabled=True,
                                          sizing_mode="stretch_width")  # fmt: skip
        return pn.Column(
            head,
            pn.pane.Markdown("#### Flag history (oldest first)"),
            pn.widgets.Tabulator(history, css_classes=["flag-history"], **table_opts),
            pn.pane.Markdown(f"#### {det} histograms vs reference"),
            pn.widgets.Tabulator(comparisons_frame(stored), **table_opts)
            if stored
            else pn.pane.Markdown("No comparisons stored for this detector and run."),
            pn.GridBox(*plots, ncols=3) if plots else pn.Spacer(height=0),
            pn.pane.Markdown(f"#### {det} monitoring variables"),
            pn.widgets.Tabulator(variables, **table_opts)
            if len(variables)
            else pn.pane.Markdown("No monitoring variables of this detector."),
            pn.pane.Markdown("#### Run state history"),
            pn.widgets.Tabulator(states, **table_opts)
            if len(states)
            else pn.pane.Markdown("Never moved: OPEN."),
            sizing_mode="stretch_width",
        )

    # -------------------------------------------------------------------- good-run lists
    def _refresh_grls(self) -> None:
        names = [g.name for g in self.db.grls.latest()]
        self.grl_select.options = names
        if names and self.grl_select.value not in names:
            self.grl_select.value = names[-1]
        self._show_grl()

    def _current_grl(self) -> Any:
        if not self.grl_select.value:
            return None
        return self.db.grls.get(self.grl_select.value)

    def _show_grl(self) -> None:
        g = self._current_grl()
        for d in self.downloads.values():
            d.disabled = g is None
        if g is None:
            self.grl_info.object = "No good-run list yet."
            return
        for kind, d in self.downloads.items():
            ext = "csv" if kind == "csv" else "json"
            suffix = "_cms" if kind == "cms" else ""
            d.filename = f"{g.name}_v{g.version}{suffix}.{ext}"
        n_runs = len(g)
        self.grl_info.object = (
            f"**{g.name}** version {g.version}: `{g.expression}`; {n_runs} runs, "
            f'<span id="grl-lumi">{g.lumi_pb / 1000.0:.4f}</span> fb<sup>-1</sup> '
            f"({g.lumi_pb:.1f} pb<sup>-1</sup>)"
        )

    def _download_callback(self, kind: str) -> Any:
        def callback() -> io.StringIO:
            g = self._current_grl()
            if g is None:
                return io.StringIO("")
            if kind == "csv":
                return io.StringIO(g.to_csv())
            data = g.to_json() if kind == "json" else g.to_cms_json()
            return io.StringIO(json.dumps(data, indent=1) + "\n")

        return callback

    def _make_grl(self, _event: Any = None) -> None:
        name = (self.grl_name.value or "").strip()
        if not name:
            self._grl_say("Give the list a name.", "warning")
            return
        user = self._writer(self._grl_say, "Read only: log in as a manager to make good-run lists.")
        if user is None:
            return
        try:
            g = self.db.grls.make(
                name,
                self.grl_expression.value,
                user=user,
                description=self.grl_description.value,
                exp=self.exp,
            )
        except PermissionDenied as err:
            self._grl_say(f"Refused: {err}", "danger")
            return
        except B2CalibError as err:
            self._grl_say(f"Not made: {err}", "danger")
            return
        self._grl_say(
            f"Made {g.name} version {g.version}: {g.lumi_pb / 1000.0:.4f} fb^-1.", "success"
        )
        self._refresh_grls()
        self.grl_select.value = g.name
        self._show_grl()

    def _grl_say(self, text: str, kind: AlertKind) -> None:
        self.grl_message.object = text
        self.grl_message.alert_type = kind
        self.grl_message.visible = True

    # ------------------------------------------------------------------------ layout
    def __panel__(self) -> pn.viewable.Viewable:
        filters = pn.Param(
            self.param,
            parameters=["exp", "run_type", "first", "last"],
            widgets={
                "first": {"type": pn.widgets.IntInput, "placeholder": "first run"},
                "last": {"type": pn.widgets.IntInput, "placeholder": "last run"},
            },
            show_name=False,
            default_layout=pn.Row,
        )
        legend = (
            " ".join(
                f'<span style="{_flag_style(f)};padding:1px 5px;margin-right:4px">{f}</span>'
                for f in DQ_FLAGS
            )
            + " &nbsp; left stripe: automatic status "
            + " ".join(
                f'<span style="border-left:7px solid {c};padding-left:4px;margin-right:4px">{s}'
                "</span>"
                for s, c in STATUS_COLORS.items()
            )
        )
        controls = pn.Column(
            pn.pane.Markdown("### Certify"),
            self.message,
            pn.Row(self.flag_select, self.set_button),
            self.comment,
            pn.pane.Markdown("### Run workflow: OPEN → SIGNOFF → COMPLETED"),
            self.workflow_comment,
            pn.Row(self.to_signoff, self.complete, self.reopen),
            width=480,
        )
        grl = pn.Card(
            pn.Row(self.grl_select, pn.Column(self.grl_info)),
            pn.Row(*self.downloads.values()),
            pn.pane.Markdown("**New version** (manager)"),
            pn.Row(self.grl_name, self.grl_preset),
            self.grl_expression,
            self.grl_description,
            self.grl_make,
            self.grl_message,
            title="Good-run lists",
            collapsed=False,
            sizing_mode="stretch_width",
        )
        return pn.Column(
            header("Sign-off: run certification", self.user),
            filters,
            pn.pane.HTML(legend),
            self.grid,
            pn.Row(controls, pn.Column(self.evidence, sizing_mode="stretch_width")),
            grl,
            sizing_mode="stretch_width",
        )


def app() -> pn.viewable.Viewer:
    """The served page against the server's database."""
    from .serve import current_database

    return SignOff(db=current_database())


def __dir__() -> list[str]:
    return __all__


if pn.state.served:
    app().servable(title="b2calib sign-off")
