"""Sign-off: the runs x detectors certification grid, the evidence of a cell, flags with
comments and their history, bulk sign-off, the run workflow, and the good-run lists.

The grid holds every run of the selection (virtual scrolling: the browser draws the rows in
view). Each detector cell shows the detector's current flag and, as a badge of its own colour,
the automatic status of the last evaluation ("GOOD · auto ERROR"), with a mark (⚠) where the
two disagree; the systems (BEAM, TRACKING) have an automatic status only. The columns are in
:data:`~b2calib.qa.store.status.STATUS_COLUMNS` order, as on every page. The grid re-reads the
flags and run states every :data:`POLL_SECONDS` (and on its refresh button), so a flag set by
someone else appears without a reload.

Clicking a cell shows everything that feeds that detector's automatic status, worst first,
each with its own status (``QADatabase.status.evidence``), its flag history and the run's
state, then its histograms over their references. ``/signoff?exp=30&run=23&detector=ECL``
opens that cell. Ticking rows (or typing runs) and choosing detectors signs off many cells in
one all-or-nothing write.

Every write goes through the library with the logged-in user, which refuses what the user's
role does not allow (:class:`~b2calib.exceptions.PermissionDenied`, shown as a message). A write
the library wants confirmed (another person's flag overridden, GOOD over an automatic ERROR, a
run completed with detectors NOTSET) opens a dialog listing each confirmation; only after the
user confirms is it written, with ``force=True``, and the history records what was confirmed.
A served page asks again before every write whether its login is still live: one ended since
the page was opened (logged out, the user removed or changed) writes nothing.
"""

from __future__ import annotations

import html
import io
import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import pandas as pd
import panel as pn
import param
from bokeh.models.widgets.tables import HTMLTemplateFormatter

from b2calib.exceptions import B2CalibError, ConfirmationNeeded, PermissionDenied
from b2calib.qa.grl import LUMINOSITY, PRESETS
from b2calib.qa.monitoring import SYSTEMS
from b2calib.qa.store.status import STATUS_COLUMNS
from b2calib.runs import DQ_FLAGS, RUN_TYPES

from ._common import (
    ALL,
    FLAG_COLORS,
    STATUS_COLORS,
    db_key,
    describe_user,
    header,
    histogram_plot,
    served,
    session_user,
    status_table,
)

__all__ = ["POLL_SECONDS", "SignOff"]

#: Seconds between two re-reads of the grid's flags and run states in a served page.
POLL_SECONDS = 20
_ENDED = "Your login has ended (logged out, or your account changed): reload the page."
AlertKind = Literal["primary", "secondary", "success", "danger", "warning", "info", "light"]
_NOT_INCLUDED = "-"
#: a flag that disagrees with the automatic status: GOOD over a WARNING or ERROR, BAD or
#: RECOVERABLE over GOOD
_DISAGREE = {("GOOD", "ERROR"), ("GOOD", "WARNING"), ("BAD", "GOOD"), ("RECOVERABLE", "GOOD")}
_RUNS_TEXT = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")

# A grid cell holds a short code (3000 runs x 9 columns stay a small payload) that the browser
# draws: the flag's letter ("_" for a system, which has none), the automatic status's letter,
# "!" where they disagree; "-" for a detector the run did not include.
_FLAG_CODE = {"GOOD": "G", "BAD": "B", "RECOVERABLE": "R", "NOTSET": "N", "EXCLUDED": "X"}
_STATUS_CODE = {"GOOD": "G", "WARNING": "W", "ERROR": "E", "TOO_FEW": "T", "NONE": "0"}
assert set(_FLAG_CODE) == set(DQ_FLAGS), "a flag without its code in the sign-off grid"
assert set(_STATUS_CODE) == set(STATUS_COLORS), "a status without its code in the grid"
_FLAG_OF = {c: f for f, c in _FLAG_CODE.items()}
_STATUS_OF = {c: s for s, c in _STATUS_CODE.items()}
_CELL_TEMPLATE = (
    f"<% var F = {json.dumps(_FLAG_OF)}, S = {json.dumps(_STATUS_OF)}, v = String(value); %>"
    '<% if (v.length < 2) { %><span class="so-none">-</span><% } else {'
    ' var f = F[v[0]], s = S[v[1]]; %><div class="so-cell">'
    '<% if (f) { %><span class="so-flag so-flag-<%= f %>"><%= f %></span><% } %>'
    '<% if (v[2]) { %><span class="so-mark" title="the flag disagrees with the automatic '
    'status">⚠</span><% } %>'
    '<span class="so-auto so-auto-<%= s %>" title="automatic status">auto <%= s %></span>'
    "</div><% } %>"
)


def _text_colour(name: str) -> str:
    return "white" if name in ("GOOD", "BAD", "EXCLUDED", "ERROR") else "black"


#: The page's own styles: the grid's flags and automatic-status badges in the shared colours,
#: disabled buttons greyed with a not-allowed cursor, the confirmation dialog.
STYLESHEET = "\n".join(
    [
        ".so-flag { display:inline-block; padding:0 4px; border-radius:3px; font-weight:600;"
        " font-size:11px; line-height:1.25; }",
        *(
            f".so-flag-{f} {{ background:{c}; color:{_text_colour(f)}; }}"
            for f, c in FLAG_COLORS.items()
        ),
        ".so-auto { display:inline-block; padding:0 4px; border-radius:3px;"
        " font-size:10px; line-height:1.2; }",
        *(
            f".so-auto-{s} {{ background:{c}; color:{_text_colour(s)}; }}"
            for s, c in STATUS_COLORS.items()
        ),
        ".so-cell { position:relative; display:flex; flex-direction:column;"
        " align-items:flex-start; gap:1px; }",
        ".so-mark { margin-left:3px; color:#b00020; font-weight:700; }",
        ".so-cell .so-mark { position:absolute; top:0; right:0; font-size:12px; line-height:1; }",
        ".so-none { color:#999; }",
        "table.evidence-table, table.grl-run-table { border-collapse:collapse; margin:2px 0 8px; }",
        ".evidence-table th, .evidence-table td, .grl-run-table th, .grl-run-table td"
        " { padding:2px 8px; border-bottom:1px solid #e4e4e4; text-align:left; }",
    ]
)
#: The grid: compact rows (a shift sees 20 runs and more at once) and as tall as the window
#: leaves under the header, the filters and the legend (at least 300 px).
GRID_STYLE = (
    ":host { flex: 0 0 auto !important; height: max(300px, calc(100vh - 190px)) !important; }"
    " .pnx-tabulator.tabulator { height: 100% !important; }"
    " .tabulator-row .tabulator-cell { padding: 2px 4px !important; line-height: 1.2; }"
    " .tabulator-col .tabulator-col-content { padding: 3px 4px !important; }"
)
BUTTON_STYLE = (
    ":host(.bk-disabled) .bk-btn, .bk-btn[disabled] { opacity: 0.45; cursor: not-allowed;"
    " filter: grayscale(1); }"
)


def _flag_style(value: Any) -> str:
    colour = FLAG_COLORS.get(str(value).split(" ")[0])
    if colour is None:
        return ""
    return f"background-color: {colour}; color: {_text_colour(str(value).split(' ')[0])}"


def _badge(name: str, colours: dict[str, str] = STATUS_COLORS) -> str:
    colour = colours.get(name, STATUS_COLORS["NONE"])
    return (
        f'<span style="background:{colour};color:{_text_colour(name)};padding:1px 6px;'
        f'border-radius:3px">{html.escape(name)}</span>'
    )


def cell_value(flag: str | None, auto: str) -> str:
    """What a grid cell holds (see ``_CELL_TEMPLATE``) for a detector's ``flag`` (None: a
    system, which has no flag) and automatic status ``auto``."""
    disagree = "!" if (flag, auto) in _DISAGREE else ""
    return ("_" if flag is None else _FLAG_CODE[flag]) + _STATUS_CODE[auto] + disagree


def cell_parts(value: str) -> tuple[str | None, str, bool]:
    """(flag or None, automatic status, whether they disagree) of a grid cell's value; a
    detector the run did not include: (None, "NONE", False)."""
    if len(value) < 2:
        return None, "NONE", False
    return _FLAG_OF.get(value[0]), _STATUS_OF[value[1]], value[2:] == "!"


def cell_flag(value: str) -> str | None:
    """The flag of a grid cell's value (None for a system or a detector not included)."""
    return cell_parts(value)[0]


def parse_runs(text: str) -> list[int]:
    """Run numbers from ``"23"``, ``"3, 5, 7-9"`` (ValueError naming the part not understood)."""
    out: set[int] = set()
    for part in text.replace(";", ",").split(","):
        if not part.strip():
            continue
        m = _RUNS_TEXT.fullmatch(part)
        if m is None:
            raise ValueError(f"{part.strip()!r} is not a run or a range like 7-9")
        first, last = int(m[1]), int(m[2] or m[1])
        if last < first:
            raise ValueError(f"the range {first}-{last} ends before it starts")
        out.update(range(first, last + 1))
    return sorted(out)


def runs_text(runs: Sequence[int]) -> str:
    """``[3, 5, 6, 7]`` -> ``"3, 5-7"``."""
    parts: list[str] = []
    for r in sorted(set(runs)):
        if parts and "-" not in parts[-1].split(",")[-1] and int(parts[-1]) == r - 1:
            parts[-1] = f"{r - 1}-{r}"
        elif parts and "-" in parts[-1] and int(parts[-1].split("-")[1]) == r - 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{r}"
        else:
            parts.append(str(r))
    return ", ".join(parts)


class SignOff(pn.viewable.Viewer):
    """Certification of runs by detector, bulk sign-off, run workflow and good-run lists.

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
    run = param.Integer(default=None, allow_None=True, doc="The open cell's run (URL).")
    detector = param.String(default=None, allow_None=True, doc="The open cell's detector (URL).")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.db is None:
            raise TypeError("SignOff needs db=QADatabase(...)")
        if served():
            self.user = session_user(self.db)  # served: the login decides, nothing else
        self._key = db_key(self.db)
        runs = self.db.runs.select()
        exps = sorted({r.exp for r in runs})
        self.param.exp.objects = exps
        if exps and self.exp not in exps:
            with param.discard_events(self):
                self.exp = exps[-1]
        # the detectors any run included, then the systems: STATUS_COLUMNS order
        included = {d for r in runs for d in r.detectors}
        self._flaggable: list[str] = [d for d in STATUS_COLUMNS if d in included]
        self._columns: list[str] = [d for d in STATUS_COLUMNS if d in included or d in SYSTEMS]
        self._included: dict[tuple[int, int], tuple[str, ...]] = {}
        self._auto: dict[tuple[int, int], dict[str, str]] = {}
        self._all_runs: list[Any] | None = runs  # the first grid takes them from here

        formatter = HTMLTemplateFormatter(template=_CELL_TEMPLATE)
        self.grid = pn.widgets.Tabulator(
            self._grid_frame(),
            show_index=False,
            disabled=True,
            selectable="checkbox",
            pagination=None,
            height=430,
            frozen_columns=["exp", "run"],
            # every column has its width: the browser does not measure 3000 rows' contents
            layout="fit_columns",
            formatters=dict.fromkeys(self._columns, formatter),
            widths={
                **dict.fromkeys(self._columns, 112),
                "exp": 66,
                "run": 60,
                "type": 72,
                "state": 100,
            },
            header_align="center",
            sizing_mode="stretch_width",
            css_classes=["signoff-grid"],
            stylesheets=[STYLESHEET, GRID_STYLE],
        )
        self.grid.on_click(self._on_cell)
        self.grid.param.watch(self._on_rows_ticked, "selection")
        self.refresh_button = pn.widgets.Button(
            label="↻ Refresh", width=110, css_classes=["grid-refresh"], stylesheets=[BUTTON_STYLE]
        )
        self.refresh_button.on_click(lambda _e: self.refresh_grid())
        self.refreshed = pn.pane.HTML("", css_classes=["grid-refreshed"])
        self._stamp_refresh()

        # -- one cell
        self.message = pn.pane.Alert(
            "", alert_type="light", visible=False, css_classes=["signoff-message"]
        )
        self.flag_select = pn.widgets.Select(
            label="Flag", options=list(DQ_FLAGS), width=180, css_classes=["flag-select"]
        )
        self.comment = pn.widgets.TextAreaInput(
            label="Comment",
            placeholder="why (required unless GOOD, and for what needs confirming)",
            height=70,
            width=360,
            css_classes=["flag-comment"],
        )
        self.set_button = self._button("Set flag", "primary", 120, "set-flag")
        self.set_button.on_click(self._set_flag)
        self.workflow_comment = pn.widgets.TextInput(
            label="Workflow comment",
            placeholder="why (required when completing with NOTSET)",
            width=300,
            css_classes=["workflow-comment"],
        )
        self.to_signoff = self._button("Send to sign-off", "default", 150, "to-signoff")
        self.complete = self._button("Complete run", "success", 150, "complete-run")
        self.reopen = self._button("Reopen run", "warning", 150, "reopen-run")
        self.to_signoff.on_click(lambda _e: self._move("SIGNOFF"))
        self.complete.on_click(lambda _e: self._move("COMPLETED"))
        self.reopen.on_click(lambda _e: self._move("OPEN"))

        # -- bulk sign-off
        self.bulk_runs = pn.widgets.TextInput(
            label="Runs (tick rows in the grid, or type e.g. 23, 25-30)",
            width=360,
            css_classes=["bulk-runs"],
        )
        self.bulk_detectors = pn.widgets.CheckButtonGroup(
            label="Detectors",
            options=self._flaggable,
            value=[],
            color="primary",
            variant="outline",
            css_classes=["bulk-detectors"],
        )
        self.bulk_all = pn.widgets.Button(
            label="all detectors", width=110, css_classes=["bulk-all-detectors"]
        )
        self.bulk_all.on_click(lambda _e: setattr(self.bulk_detectors, "value", self._flaggable))
        self.bulk_flag = pn.widgets.Select(
            label="Flag", options=list(DQ_FLAGS), value="GOOD", width=160, css_classes=["bulk-flag"]
        )
        self.bulk_comment = pn.widgets.TextInput(
            label="Comment",
            placeholder="why (required unless GOOD, and for what needs confirming)",
            width=360, css_classes=["bulk-comment"],
        )  # fmt: skip
        self.bulk_set = self._button("Set flags", "primary", 130, "bulk-set")
        self.bulk_set.on_click(self._bulk)
        self.bulk_message = pn.pane.Alert(
            "", alert_type="light", visible=False, css_classes=["bulk-message"]
        )

        # -- the confirmation dialog
        self.confirm_text = pn.pane.HTML(
            "", css_classes=["confirm-text"], sizing_mode="stretch_width"
        )
        self.confirm_button = self._button("Confirm and write", "danger", 170, "confirm-write")
        self.cancel_button = self._button("Cancel", "default", 100, "cancel-write")
        self.confirm_button.on_click(self._confirmed)
        self.cancel_button.on_click(self._cancelled)
        self.dialog = pn.Column(
            self.confirm_text,
            pn.Row(self.confirm_button, self.cancel_button),
            visible=False,
            css_classes=["confirm-dialog"],
            styles={
                "border": "3px solid #d62728",
                "border-radius": "6px",
                "padding": "6px 12px",
                "background": "#fff6f6",
            },
            sizing_mode="stretch_width",
        )
        self._pending: tuple[Callable[[], None], Callable[[str, AlertKind], None]] | None = None

        # -- the evidence of the open cell
        self.evidence_head = pn.pane.HTML(
            "Click a detector cell of the grid to see its evidence.",
            sizing_mode="stretch_width",
            css_classes=["evidence-head"],
        )
        self.evidence_items = pn.pane.HTML(
            "", sizing_mode="stretch_width", stylesheets=[STYLESHEET]
        )
        self.history = pn.pane.HTML(
            "", sizing_mode="stretch_width", css_classes=["flag-history"], stylesheets=[STYLESHEET]
        )
        self.plots = pn.Column(sizing_mode="stretch_width")

        self._build_grl_widgets()

        # -- the state: defaults, then the URL's (the grid follows an experiment the URL
        # names: its watcher is set before the URL is read)
        self.param.watch(lambda _e: self.refresh_grid(), ["exp", "first", "last",
                                                                    "run_type"])  # fmt: skip
        if served() and pn.state.location is not None:
            pn.state.location.sync(self, {"exp": "exp", "run": "run", "detector": "detector"})
        self.param.watch(self._on_url_cell, ["run", "detector"])
        self.param.watch(lambda _e: self._show_cell(), "selected")
        self._update_controls()
        if served():
            # the URL's cell opens once the page is shown (its grid is not kept waiting)
            pn.state.onload(self._on_url_cell)
        else:
            self._on_url_cell()
        if served():
            pn.state.add_periodic_callback(self.refresh_grid, period=POLL_SECONDS * 1000)

    @staticmethod
    def _button(name: str, kind: str, width: int, css: str) -> pn.widgets.Button:
        return pn.widgets.Button(
            label=name, color=kind, width=width, css_classes=[css], stylesheets=[BUTTON_STYLE]
        )

    # --------------------------------------------------------------------------- grid
    def _grid_frame(self) -> pd.DataFrame:
        """One row per run: exp, run, type, state, then one cell per column (see
        :func:`cell_value`); the automatic statuses as the library has them now (it keeps an
        experiment's grid while what it is made of is unchanged)."""
        run_type = None if self.run_type == ALL else self.run_type
        if self._all_runs is not None:  # the page's first grid: the runs __init__ read
            runs = [
                r for r in self._all_runs if r.exp == self.exp
                and (self.first is None or r.run >= self.first)
                and (self.last is None or r.run <= self.last)
                and (run_type is None or r.run_type == run_type)
            ]  # fmt: skip
            self._all_runs = None
        else:
            runs = self.db.runs.select(exp=self.exp, first=self.first, last=self.last,
                                       run_type=run_type)  # fmt: skip
        states = self.db.certification.states(
            exp=self.exp, first=self.first, last=self.last, runs=runs
        )
        self._auto = self.db.status.grid(exp=self.exp)
        none = "NONE"
        rows = []
        self._included = {}
        for r in runs:
            auto = self._auto.get(r.key, {})
            self._included[r.key] = r.detectors
            row: dict[str, Any] = {
                "exp": r.exp,
                "run": r.run,
                "type": r.run_type,
                "state": states.get(r.key, "OPEN"),
            }
            for d in self._columns:
                if d not in self._flaggable:
                    row[d] = cell_value(None, auto.get(d, none))
                elif d in r.detectors:
                    row[d] = cell_value(r.flag(d), auto.get(d, none))
                else:
                    row[d] = _NOT_INCLUDED
            rows.append(row)
        return pd.DataFrame(rows, columns=["exp", "run", "type", "state", *self._columns])

    def refresh_grid(self) -> None:
        """Re-read the grid's flags, run states and automatic statuses and send only the cells
        that changed (the whole grid when its runs changed)."""
        with pn.io.hold():
            self._refresh_grid()

    def _refresh_grid(self) -> None:
        new = self._grid_frame()
        old = self.grid.value
        if (
            old is None
            or len(old) != len(new)
            or not (old["run"].to_numpy() == new["run"].to_numpy()).all()
            or not (old["exp"].to_numpy() == new["exp"].to_numpy()).all()
        ):
            self.grid.value = new
        else:
            patch: dict[str, list[tuple[int, Any]]] = {}
            for c in ["state", *self._columns]:
                changed = (old[c].to_numpy() != new[c].to_numpy()).nonzero()[0]
                if len(changed):
                    patch[c] = [(int(i), new[c].iat[i]) for i in changed]
            if patch:
                self.grid.patch(patch, as_index=False)
                if self.selected is not None and any(
                    int(new["run"].iat[i]) == self.selected[1] for v in patch.values() for i, _ in v
                ):
                    self._show_cell()
        self._stamp_refresh()

    def _stamp_refresh(self) -> None:
        self.refreshed.object = (
            f'<span id="grid-refreshed" style="color:#555">{len(self.grid.value)} runs; read at '
            f"{time.strftime('%H:%M:%S')} (re-read every {POLL_SECONDS} s)</span>"
        )

    def _row_of(self, exp: int, run: int) -> int | None:
        df = self.grid.value
        hit = ((df["exp"] == exp) & (df["run"] == run)).to_numpy().nonzero()[0]
        return int(hit[0]) if len(hit) else None

    def _on_cell(self, event: Any) -> None:
        if event.column not in self._columns or event.row is None:
            return
        row = self.grid.value.iloc[event.row]
        if row[event.column] == _NOT_INCLUDED:
            self._say(f"{event.column} was not included in run {row['exp']}/{row['run']}.")
            return
        with pn.io.hold():  # one message to the browser for everything the cell changes
            self.message.visible = False
            self.selected = (int(row["exp"]), int(row["run"]), str(event.column))

    def _on_rows_ticked(self, event: Any) -> None:
        df = self.grid.value
        self.bulk_runs.value = runs_text([int(df["run"].iat[i]) for i in event.new])

    def _on_url_cell(self, *_events: Any) -> None:
        """The URL's run and detector open that cell."""
        if self.run is None or not self.detector:
            return
        cell = (int(self.exp), int(self.run), str(self.detector))
        if cell != self.selected:
            self.selected = cell

    # ------------------------------------------------------------------------- writes
    def _say(self, text: str, kind: AlertKind = "warning") -> None:
        self.message.object = text
        self.message.alert_type = kind
        self.message.visible = True

    def _bulk_say(self, text: str, kind: AlertKind = "warning") -> None:
        self.bulk_message.object = text
        self.bulk_message.alert_type = kind
        self.bulk_message.visible = True

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
        if det not in self._flaggable:
            return f"{det} has an automatic status only: it is not certified."
        if not self.user.can_flag(det):
            return f"{describe_user(self.user)} may not flag {det}."
        if self._state_of(exp, run) == "COMPLETED":
            return f"Run {exp}/{run} is COMPLETED: a manager must reopen it first."
        return None

    def _state_of(self, exp: int, run: int) -> str:
        i = self._row_of(exp, run)
        if i is not None:
            return str(self.grid.value["state"].iat[i])
        return str(self.db.certification.state(exp, run).state)

    def _update_controls(self) -> None:
        refusal = self._refusal()
        cell: tuple[pn.widgets.Widget, ...] = (self.flag_select, self.comment, self.set_button)
        for w in cell:
            w.disabled = refusal is not None
        if self.selected is not None:
            exp, run, det = self.selected
            i = self._row_of(exp, run)
            if i is not None and det in self._flaggable:
                self.flag_select.value = cell_flag(str(self.grid.value[det].iat[i])) or "NOTSET"
            if refusal is not None:
                self._say(refusal, "secondary")
        state = self._state_of(*self.selected[:2]) if self.selected else None
        u = self.user
        can_move = u is not None and u.role in ("expert", "manager")
        manager = u is not None and u.is_manager
        self.to_signoff.disabled = not (can_move and state == "OPEN")
        self.complete.disabled = not (manager and state == "SIGNOFF")
        self.reopen.disabled = not (manager and state == "COMPLETED")
        self.grl_make.disabled = not manager
        can_flag = u is not None and any(u.can_flag(d) for d in self._flaggable)
        bulk: tuple[pn.widgets.Widget, ...] = (
            self.bulk_set, self.bulk_flag, self.bulk_comment, self.bulk_all, self.bulk_detectors,
            self.bulk_runs,
        )  # fmt: skip
        for b in bulk:
            b.disabled = not can_flag

    def _set_flag(self, _event: Any = None) -> None:
        if self.selected is None:
            return
        exp, run, det = self.selected
        flag, comment = self.flag_select.value, (self.comment.value or "").strip()
        if flag != "GOOD" and not comment:
            self._say(f"Say why {det} of run {exp}/{run} is {flag}: a comment is required.")
            return

        def done(entries: list[Any]) -> None:
            e = entries[0]
            self.comment.value = ""
            self._say(f"{det} of run {exp}/{run} set to {e.flag} by {e.author}.", "success")

        self._write_flags([(exp, run, det, flag)], comment, self._say, done)

    def _bulk(self, _event: Any = None) -> None:
        try:
            runs = parse_runs(self.bulk_runs.value or "")
        except ValueError as err:
            self._bulk_say(f"Runs: {err}.")
            return
        dets = [d for d in self._flaggable if d in self.bulk_detectors.value]
        if not runs or not dets:
            self._bulk_say("Choose runs (tick rows or type them) and at least one detector.")
            return
        flag, comment = self.bulk_flag.value, (self.bulk_comment.value or "").strip()
        exp = int(self.exp)
        missing = [r for r in runs if (exp, r) not in self._included]
        if missing:
            self._bulk_say(
                f"Run{'s' if len(missing) > 1 else ''} {runs_text(missing)} of experiment {exp} "
                "not in the grid: widen its selection first."
            )
            return
        changes = [(exp, r, d, flag) for r in runs for d in dets if d in self._included[(exp, r)]]
        if not changes:
            self._bulk_say("None of these detectors was included in these runs.")
            return

        def done(entries: list[Any]) -> None:
            self.bulk_comment.value = ""
            self._bulk_say(
                f"{len(entries)} flags of {len(runs)} run{'s' if len(runs) > 1 else ''} "
                f"({runs_text(runs)}; {', '.join(dets)}) set to {flag} by {entries[0].author}.",
                "success",
            )

        self._write_flags(changes, comment, self._bulk_say, done)

    def _write_flags(
        self,
        changes: list[tuple[int, int, str, str]],
        comment: str,
        say: Callable[[str, AlertKind], None],
        done: Callable[[list[Any]], None],
    ) -> None:
        """Write ``changes`` in one all-or-nothing call; what the library wants confirmed goes
        through the dialog first, and is then written with ``force=True``."""
        user = self._writer(say, "Read only: log in to set flags.")
        if user is None:
            return
        cert = self.db.certification

        def needed() -> list[Any]:
            return list(cert.confirmations(changes, user=user))

        def write(force: bool) -> None:
            try:
                entries = cert.set_flags(changes, user=user, comment=comment, force=force)
            except ConfirmationNeeded as err:
                self._ask(err.confirmations, needed, lambda: write(True), say)
                return
            except PermissionDenied as err:
                say(f"Refused: {err}", "danger")
                return
            except B2CalibError as err:
                say(f"Not saved: {err}", "danger")
                return
            self._patch_flags(entries)
            done(entries)

        try:
            asked = needed()
        except PermissionDenied as err:
            say(f"Refused: {err}", "danger")
            return
        except B2CalibError as err:
            say(f"Not saved: {err}", "danger")
            return
        if asked:
            self._ask(asked, needed, lambda: write(True), say)
        else:
            write(False)

    def _ask(
        self, confirmations: Sequence[Any], again: Callable[[], list[Any]],
        write: Callable[[], None], say: Callable[[str, AlertKind], None],
    ) -> None:  # fmt: skip
        """Show the dialog listing ``confirmations``; its button writes (``write``) when what
        ``again`` finds to confirm then is still what was shown (else it shows the new list);
        ``say`` tells what happened (cancelled, refused)."""
        items = "".join(
            f"<li>run {c.exp}/{c.run}"
            + (f" {html.escape(c.detector)}" if c.detector else "")
            + f": {html.escape(c.reason)}</li>"
            for c in confirmations
        )
        n = len(confirmations)
        self.confirm_text.object = (
            f'<div id="confirm-list"><b>This write needs {n} confirmation{"s" if n > 1 else ""}'
            f"</b> (recorded in the history with it):<ul>{items}</ul></div>"
        )
        shown = sorted(map(repr, confirmations))

        def checked() -> None:
            try:
                now = list(again())
            except B2CalibError as err:
                self._close_dialog()
                say(f"Not written: {err}", "danger")
                return
            if now and sorted(map(repr, now)) != shown:  # changed since it was shown
                self._ask(now, again, write, say)
                return
            self._close_dialog()
            write()

        self._pending = (checked, say)
        self.dialog.visible = True

    def _confirmed(self, _event: Any = None) -> None:
        if self._pending is None:
            return
        go, _ = self._pending
        self._pending = None
        with pn.io.hold():
            go()

    def _cancelled(self, _event: Any = None) -> None:
        say = self._pending[1] if self._pending is not None else self._say
        self._close_dialog()
        say("Nothing written.", "secondary")

    def _close_dialog(self) -> None:
        self._pending = None
        self.dialog.visible = False

    def _patch_flags(self, entries: Sequence[Any]) -> None:
        with pn.io.hold():
            self._patch_flags_held(entries)

    def _patch_flags_held(self, entries: Sequence[Any]) -> None:
        patch: dict[str, list[tuple[int, Any]]] = {}
        for e in entries:
            i = self._row_of(e.exp, e.run)
            if i is None or e.detector not in self._columns:
                continue
            auto = self._auto.get((e.exp, e.run), {}).get(e.detector, "NONE")
            patch.setdefault(e.detector, []).append((i, cell_value(e.flag, auto)))
        if patch:
            self.grid.patch(patch, as_index=False)
        if self.selected is not None and any(
            (e.exp, e.run, e.detector) == self.selected for e in entries
        ):
            self._show_cell()

    def _move(self, state: str) -> None:
        if self.selected is None:
            return
        user = self._writer(self._say, "Read only: log in to change run states.")
        if user is None:
            return
        exp, run, _ = self.selected
        comment = (self.workflow_comment.value or "").strip()
        cert = self.db.certification

        def needed() -> list[Any]:
            return list(cert.state_confirmations(exp, run, state, user=user))

        def write(force: bool) -> None:
            try:
                cert.set_state(exp, run, state, user=user, comment=comment, force=force)
            except ConfirmationNeeded as err:
                self._ask(err.confirmations, needed, lambda: write(True), self._say)
                return
            except PermissionDenied as err:
                self._say(f"Refused: {err}", "danger")
                return
            except B2CalibError as err:
                self._say(f"Not changed: {err}", "danger")
                return
            self.workflow_comment.value = ""
            self._say(f"Run {exp}/{run} is now {state}.", "success")
            i = self._row_of(exp, run)
            if i is not None:
                self.grid.patch({"state": [(i, state)]}, as_index=False)
            self._show_cell()

        try:
            asked = needed()
        except PermissionDenied as err:
            self._say(f"Refused: {err}", "danger")
            return
        except B2CalibError as err:
            self._say(f"Not changed: {err}", "danger")
            return
        if asked:
            self._ask(asked, needed, lambda: write(True), self._say)
        else:
            write(False)

    # ---------------------------------------------------------------------- evidence
    def _show_cell(self) -> None:
        """The open cell's evidence, flag history and run state now; its histogram plots on
        the next tick (the text reaches the browser first)."""
        self._update_controls()
        if self.selected is None:
            return
        exp, run, det = self.selected
        if served() and pn.state.location is not None:
            with param.discard_events(self):
                self.param.update(run=run, detector=det)
            pn.state.location.update_query(exp=exp, run=run, detector=det)
        i = self._row_of(exp, run)
        value = str(self.grid.value[det].iat[i]) if i is not None and det in self._columns else ""
        flag, auto, _ = cell_parts(value)
        state = self._state_of(exp, run)
        items = self.db.status.evidence(exp, run, det)
        worst_var = next((e.name for e in items if e.kind == "variable"), None)
        qam = f"/qam?exp={exp}&run={run}&detector={det}" + (
            f"&variable={worst_var}" if worst_var else ""
        )
        flag_html = (
            f' &nbsp; flag <span id="current-flag">{_badge(flag, FLAG_COLORS)}</span>'
            if flag
            else ""
        )
        self.evidence_head.object = (
            f'<div id="evidence-head"><b style="font-size:1.2em">Run {exp}/{run}, {det}</b>'
            f'{flag_html} &nbsp; automatic status <span id="auto-status">{_badge(auto)}</span>'
            f' &nbsp; run state <b id="run-state">{state}</b> &nbsp; '
            f'<a id="qam-link" href="{html.escape(qam)}">open in QAM</a></div>'
        )
        self.evidence_items.object = _evidence_table(items, det, auto)
        flags = (
            _history_table(self.db.certification.flag_history(exp, run, det))
            if det in self._flaggable
            else ""
        )
        self.history.object = flags + _state_table(self.db.certification.state_history(exp, run))
        self.plots.objects = [pn.pane.Markdown("*drawing the histograms…*")]
        if served() and pn.state.curdoc is not None:
            cell = self.selected
            pn.state.curdoc.add_next_tick_callback(lambda: self._draw_plots(cell))
        else:
            self._draw_plots(self.selected)

    def _draw_plots(self, cell: tuple[int, int, str] | None) -> None:
        if cell is None or cell != self.selected:
            return
        exp, run, det = cell
        stored = [s for s in self.db.histograms.comparisons(exp, run) if s.detector == det]
        stored.sort(key=lambda s: -int(s.comparison.status))  # worst first, as the evidence
        plots = [
            pn.pane.HoloViews(histogram_plot(self._key, exp, run, det, s.name, s))
            for s in stored[:6]
        ]
        self.plots.objects = (
            [pn.pane.Markdown(f"#### {det} histograms vs reference"), pn.GridBox(*plots, ncols=2)]
            if plots
            else []
        )

    # -------------------------------------------------------------------- good-run lists
    def _build_grl_widgets(self) -> None:
        self.grl_select = pn.widgets.Select(label="Good-run list", width=220,
                                            css_classes=["grl-select"])  # fmt: skip
        self.grl_version = pn.widgets.Select(label="Version", width=120,
                                             css_classes=["grl-version"])  # fmt: skip
        self.grl_compare = pn.widgets.Select(label="Compare with version", width=170,
                                             css_classes=["grl-compare"])  # fmt: skip
        self.grl_info = pn.pane.HTML("", css_classes=["grl-info"], sizing_mode="stretch_width")
        self.grl_runs = pn.pane.HTML(
            "", css_classes=["grl-runs"], sizing_mode="stretch_width", stylesheets=[STYLESHEET]
        )
        self.grl_diff = pn.pane.HTML("", css_classes=["grl-diff"], sizing_mode="stretch_width")
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
        self.grl_make = self._button("Make new version", "primary", 180, "grl-make")
        self.grl_message = pn.pane.Alert(
            "", alert_type="light", visible=False, css_classes=["grl-message"]
        )
        self.grl_preset.param.watch(
            lambda e: setattr(self.grl_expression, "value", PRESETS[e.new]), "value"
        )
        self.grl_make.on_click(self._make_grl)
        self.grl_select.param.watch(lambda _e: self._grl_versions(), "value")
        self.grl_version.param.watch(lambda _e: self._show_grl(), "value")
        self.grl_compare.param.watch(lambda _e: self._show_diff(), "value")
        self.downloads = {
            kind: pn.widgets.FileDownload(
                callback=self._download_callback(kind),
                filename=f"grl.{ext}",
                label=label,
                color="default",
                width=170,
                css_classes=[f"download-{kind}"],
                stylesheets=[BUTTON_STYLE],
            )
            for kind, ext, label in (
                ("json", "json", "JSON"),
                ("cms", "json", "CMS JSON"),
                ("csv", "csv", "CSV"),
            )
        }
        self._refresh_grls()

    def _refresh_grls(self, choose: str | None = None) -> None:
        """Re-read the lists' names; show list ``choose`` (else the one shown, else the
        last) at its newest version."""
        names = [g.name for g in self.db.grls.latest()]
        shown = self.grl_select.value
        name = (
            choose if choose in names else shown if shown in names else names[-1] if names else None
        )
        self.grl_select.param.update(options=names, value=name)
        if name == shown:  # no value event: its versions are read here
            self._grl_versions()

    def _grl_versions(self) -> None:
        """The versions of the list chosen, the newest shown. Options and value of each
        selector are set in one update (its watchers run once, with both set; the browser
        gets both: param.discard_events would keep the options from it)."""
        name = self.grl_select.value
        self._versions = {g.version: g for g in self.db.grls.versions(name)} if name else {}
        versions = sorted(self._versions, reverse=True)
        newest = versions[0] if versions else None
        shown = self.grl_version.value
        with pn.io.hold():
            self.grl_compare.param.update(options=[None, *versions], value=None)
            self.grl_version.param.update(options=versions, value=newest)
            if shown == newest:  # the same version number of another list: no value event
                self._show_grl()

    def _current_grl(self) -> Any:
        return self._versions.get(self.grl_version.value) if self.grl_version.value else None

    def _show_grl(self) -> None:
        g = self._current_grl()
        for d in self.downloads.values():
            d.disabled = g is None
        if g is None:
            self.grl_info.object = "No good-run list yet."
            self.grl_runs.object = ""
            self._show_diff()
            return
        for kind, d in self.downloads.items():
            ext = "csv" if kind == "csv" else "json"
            suffix = "_cms" if kind == "cms" else ""
            d.filename = f"{g.name}_v{g.version}{suffix}.{ext}"
        when = g.created.strftime("%Y-%m-%d %H:%M") if g.created else ""
        warnings = g.warnings
        warn = (
            '<div class="grl-warnings" style="background:#fff3cd;border-left:5px solid '
            f'{STATUS_COLORS["WARNING"]};padding:4px 8px;margin:4px 0"><b>Warning:</b><ul>'
            + "".join(f"<li>{html.escape(str(w))}</li>" for w in warnings)
            + "</ul></div>"
            if warnings
            else ""
        )
        self.grl_info.object = (
            f"<b>{html.escape(g.name)}</b> version {g.version} ({html.escape(when)}, "
            f"{html.escape(g.author or '')}): <code>{html.escape(g.expression)}</code>"
            + (f"<br>{html.escape(g.description)}" if g.description else "")
            + f"<br>{len(g)} runs, luminosity {LUMINOSITY} "
            f'<span id="grl-lumi">{g.lumi_pb / 1000.0:.4f}</span> fb<sup>-1</sup> '
            f"({g.lumi_pb:.1f} pb<sup>-1</sup>): the good-run list sums the recorded luminosity "
            "of the run registry of its runs." + warn
        )
        rows = "".join(
            f"<tr><td>{r.exp}</td><td>{r.run}</td><td style='text-align:right'>"
            f"{r.lumi_pb:.2f}</td></tr>"
            for r in g.runs
        )
        self.grl_runs.object = (
            f"<details><summary>The {len(g)} runs of version {g.version}</summary>"
            '<div style="max-height:240px;overflow-y:auto"><table class="grl-run-table">'
            f"<tr><th>exp</th><th>run</th><th>{LUMINOSITY} (pb<sup>-1</sup>)</th></tr>"
            f"{rows}</table></div></details>"
        )
        self._show_diff()

    def _show_diff(self) -> None:
        name, a, b = self.grl_select.value, self.grl_compare.value, self.grl_version.value
        if not name or a is None or b is None or a == b:
            self.grl_diff.object = ""
            return
        d = self.db.grls.diff(name, a, b)

        def runs(grl_runs: Sequence[Any]) -> str:
            return html.escape(", ".join(f"{r.exp}/{r.run}" for r in grl_runs)) or "none"

        expression = (
            f"; expression <code>{html.escape(d.old.expression)}</code> → "
            f"<code>{html.escape(d.new.expression)}</code>"
            if d.expression_changed
            else ""
        )
        self.grl_diff.object = (
            f'<div id="grl-diff-text"><b>{html.escape(name)} version {a} → {b}</b>: '
            f"added {len(d.added)} runs ({runs(d.added)}, {d.lumi_added_pb:.1f} pb<sup>-1</sup>);"
            f" removed {len(d.removed)} runs ({runs(d.removed)}, {d.lumi_removed_pb:.1f} "
            f"pb<sup>-1</sup>); {len(d.changed)} with another luminosity; {LUMINOSITY} "
            f"luminosity {d.lumi_change_pb:+.1f} pb<sup>-1</sup>{expression}.</div>"
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
            f"Made {g.name} version {g.version}: {g.lumi_pb / 1000.0:.4f} fb^-1 ({LUMINOSITY}).",
            "success",
        )
        self._refresh_grls(choose=g.name)

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
                "exp": {"width": 90},
                "run_type": {"width": 120},
                "first": {"type": pn.widgets.IntInput, "placeholder": "first run", "width": 110},
                "last": {"type": pn.widgets.IntInput, "placeholder": "last run", "width": 110},
            },
            show_name=False,
            default_layout=pn.Row,
        )
        legend = (
            "flag: "
            + " ".join(f'<span class="so-flag so-flag-{f}">{f}</span>' for f in DQ_FLAGS)
            + " &nbsp; automatic status: "
            + " ".join(f'<span class="so-auto so-auto-{s}">{s}</span>' for s in STATUS_COLORS)
            + ' &nbsp; <span class="so-mark">⚠</span> the flag disagrees with the automatic '
            "status; BEAM and TRACKING have an automatic status only."
        )
        cell = pn.Column(
            pn.pane.Markdown("### Certify the open cell"),
            self.message,
            pn.Row(self.flag_select, self.set_button),
            self.comment,
            pn.pane.Markdown("### Run workflow: OPEN → SIGNOFF → COMPLETED"),
            self.workflow_comment,
            pn.Row(self.to_signoff, self.complete, self.reopen),
            width=480,
        )
        bulk = pn.Column(
            pn.pane.Markdown(
                "### Bulk sign-off: one flag for several runs and detectors, one write"
            ),
            pn.Row(self.bulk_runs, self.bulk_flag, self.bulk_comment),
            pn.Row(self.bulk_detectors, self.bulk_all, self.bulk_set),
            self.bulk_message,
            sizing_mode="stretch_width",
            css_classes=["bulk-card"],
        )
        evidence = pn.Column(
            self.evidence_head,
            self.evidence_items,
            self.history,
            self.plots,
            sizing_mode="stretch_width",
        )
        certify = pn.Column(
            pn.Row(filters, self.refresh_button, self.refreshed),
            pn.pane.HTML(legend, stylesheets=[STYLESHEET], sizing_mode="stretch_width"),
            self.grid,
            bulk,
            self.dialog,
            pn.Row(cell, evidence),
            sizing_mode="stretch_width",
        )
        grl = pn.Column(
            pn.Row(self.grl_select, self.grl_version, self.grl_compare),
            self.grl_info,
            self.grl_diff,
            pn.Row(*self.downloads.values()),
            self.grl_runs,
            pn.pane.Markdown("**New version** (manager)"),
            pn.Row(self.grl_name, self.grl_preset),
            self.grl_expression,
            self.grl_description,
            self.grl_make,
            self.grl_message,
            sizing_mode="stretch_width",
        )
        # dynamic: the browser gets a tab's models when it is opened (a faster first render)
        tabs = pn.Tabs(
            ("Certification", certify),
            ("Good-run lists", grl),
            dynamic=True,
            sizing_mode="stretch_width",
            css_classes=["signoff-tabs"],
        )
        return pn.Column(
            header("Sign-off: run certification", self.user),
            tabs,
            sizing_mode="stretch_width",
        )


def _evidence_table(items: Sequence[Any], detector: str, auto: str) -> str:
    """Everything that feeds a cell's automatic status, worst first, as an HTML table."""
    if not items:
        return (
            f'<p id="evidence-items">Nothing feeds the automatic status of {html.escape(detector)}'
            f" in this run ({html.escape(auto)}).</p>"
        )
    rows = "".join(
        f'<tr class="evidence-row"><td>{_badge(e.status)}</td><td>{html.escape(e.kind)}</td>'
        f"<td><code>{html.escape(e.name)}</code></td><td>{html.escape(e.message)}</td></tr>"
        for e in items
    )
    return (
        f"<h4>What the automatic status {_badge(auto)} of {html.escape(detector)} comes from "
        "(worst first)</h4>"
        '<table id="evidence-items" class="evidence-table" style="border-collapse:collapse">'
        "<tr><th>status</th><th>kind</th><th>item</th><th>measured against expected</th></tr>"
        f"{rows}</table>"
    )


def _history_table(entries: Sequence[Any]) -> str:
    """A cell's flag history, oldest first, with what each write confirmed."""
    if not entries:
        return "<h4>Flag history</h4><p>Never flagged: NOTSET.</p>"
    return "<h4>Flag history (oldest first)</h4>" + _changes_table(
        entries, "flag", "history-table", FLAG_COLORS
    )


def _state_table(states: Sequence[Any]) -> str:
    """A run's state history, oldest first, with what each move confirmed."""
    if not states:
        return "<h4>Run state history</h4><p>Never moved: OPEN.</p>"
    return "<h4>Run state history (oldest first)</h4>" + _changes_table(
        states, "state", "state-history", {}
    )


def _changes_table(entries: Sequence[Any], what: str, css: str, colours: dict[str, str]) -> str:
    """Rows of an append-only history (flags or run states: ``what`` is the attribute
    holding the value) as the pages' status table."""
    rows = [
        {
            "time": e.time.strftime("%Y-%m-%d %H:%M:%S") if e.time else "",
            what: getattr(e, what),
            "author": e.author,
            "comment": e.comment,
            "confirmed": e.confirmed,
        }
        for e in entries
    ]
    columns = ["time", what, "author", "comment", "confirmed"]
    return status_table(rows, columns, css, status_columns=(what,), colours=colours)


def app() -> pn.viewable.Viewer:
    """The served page against the server's database."""
    from .serve import current_database

    return SignOff(db=current_database())


def __dir__() -> list[str]:
    return __all__


if pn.state.served:
    app().servable(title="b2calib sign-off")
