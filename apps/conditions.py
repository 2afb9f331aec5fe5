"""Conditions browser: global tags, a tag's IoVs on a run axis, what a stack of tags gives for a
run, and the diff of two tags.

* **Global tags**: name, type, state, description, times and size of every tag
  (:meth:`ConditionsDB.tag_sizes`); the chosen tag's recorded history
  (:meth:`ConditionsDB.history`).
* **IoVs on the run axis**: one row per payload name, one bar per IoV from its first to its last
  run, coloured by revision; the runs of several experiments side by side with their
  boundaries (:meth:`ConditionsDB.iov_table`); hovering a bar names the payload, revision, IoV
  and checksum.
* **What applies at a run**: through a stack of tags in the order chosen (first wins), each
  payload's revision, IoV and the tag it comes from, with what the lower tags hold there
  (:meth:`ConditionsDB.lookup_stack`).
* **Diff of two tags** (:meth:`ConditionsDB.diff`): IoVs added, removed and changed; a changed
  payload links to the payload-validation view comparing it with the first tag's.

The page's state is in its URL: ``/conditions?tag=T&exp=16&run=3&stack=a,b&diff=a..b``.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, FactorRange, FixedTicker, HoverTool, Range1d
from bokeh.models.annotations import LabelSet, Span
from bokeh.palettes import Category10_10
from bokeh.plotting import figure
from panel.io.document import unlocked

from b2calib.exceptions import B2CalibError

from ._common import header, served, session_user

__all__ = ["Conditions", "html_table", "payloads_link"]

#: Colours of the tag states in the tags table.
STATE_COLORS = {
    "OPEN": "#dbe8f7",
    "TESTING": "#f0a30a",
    "VALIDATED": "#2e9e44",
    "PUBLISHED": "#1f4e8c",
    "INVALID": "#9e9e9e",
    "RUNNING": "#7f5aa2",
}
_ROW_PX = 20  # height of one payload row of the IoV chart
_EXP_ROW = "experiment"  # the chart's top row: the experiments' names


#: Style of the HTML tables (lookup, diff): compact, striped, a fixed header, scrolling.
_TABLE_CSS = (
    "<style>.ctable-box{max-height:560px;overflow:auto;border:1px solid #c8d3e0}"
    ".ctable{border-collapse:collapse;width:100%;font-size:13px}"
    ".ctable th{position:sticky;top:0;background:#e9eff7;text-align:left;padding:4px 8px;"
    "border-bottom:1px solid #c8d3e0}"
    ".ctable td{padding:3px 8px;border-bottom:1px solid #eef1f5;white-space:nowrap}"
    ".ctable tr:nth-child(even) td{background:#f7f9fc}"
    ".ctable td.c-changed{color:#b35c00;font-weight:600}"
    ".ctable td.c-added{color:#2e7d32;font-weight:600}"
    ".ctable td.c-removed{color:#c62828;font-weight:600}</style>"
)


def html_table(
    rows: list[dict[str, Any]],
    columns: list[str],
    css: str,
    *,
    raw: frozenset[str] | set[str] = frozenset(),
) -> str:
    """``rows`` as an HTML table of class ``css``: a cell per column, ``data-field`` its column
    (text escaped, but for the ``raw`` columns, which hold HTML made here)."""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            text = str(v) if c in raw else escape(str(v))
            kind = f' class="c-{escape(str(v))}"' if c == "change" else ""
            cells.append(f'<td data-field="{escape(c)}"{kind}>{text}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'{_TABLE_CSS}<div class="ctable-box"><table class="ctable {css}">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def payloads_link(tag: str, payload: str, previous: str) -> str:
    """The payload-validation view of ``payload`` in ``tag`` against the one in ``previous``."""
    return "/payloads?" + urlencode({"tag": tag, "payload": payload, "previous": previous})


def _state_style(value: Any) -> str:
    colour = STATE_COLORS.get(str(value))
    if colour is None:
        return ""
    text = "black" if value in ("OPEN", "TESTING") else "white"
    return f"background-color: {colour}; color: {text}"


def _when(t: Any) -> str:
    return t.strftime("%Y-%m-%d %H:%M")


def _split(text: str, sep: str) -> list[str]:
    return [p.strip() for p in text.split(sep) if p.strip()]


class Conditions(pn.viewable.Viewer):
    """The conditions browser of a :class:`~b2calib.conditions.ConditionsDB`.

    Parameters
    ----------
    db
        The conditions database.
    qa
        The QA database of the same URL, for the logged-in user (optional).
    tag, exp, run, stack, diff
        The state (also the URL's): the tag shown, the run looked up, the stack of tags
        (comma separated, first wins) and the diff (``"a..b"``).
    """

    db = param.Parameter(doc="The conditions database (b2calib.conditions.ConditionsDB).")
    qa = param.Parameter(default=None, doc="The QA database, for the logged-in user.")
    tag = param.String(default="", doc="Global tag shown.")
    exp = param.Integer(default=None, allow_None=True, doc="Experiment looked up.")
    run = param.Integer(default=None, allow_None=True, doc="Run looked up.")
    stack = param.String(default="", doc="Tags looked up through, first wins (a,b).")
    diff = param.String(default="", doc="Tags compared (a..b).")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.db is None:
            raise TypeError("Conditions needs db=ConditionsDB(...)")
        self.user = session_user(self.qa) if self.qa is not None else None
        self._busy = False
        self.tags = self.db.tags()
        names = [t.name for t in self.tags]
        self.message = pn.pane.Alert("", alert_type="danger", visible=False)
        # -- widgets
        self.tag_select = pn.widgets.Select(
            name="Global tag", options=names, width=260, css_classes=["tag-select"]
        )
        self.tags_table = pn.widgets.Tabulator(
            self._tags_frame(),
            show_index=False,
            disabled=True,
            selectable=1,
            sizing_mode="stretch_width",
            css_classes=["tags-table"],
            max_height=260,
        )
        self.tags_table.style.map(_state_style, subset=["state"])  # type: ignore[union-attr]
        self.tag_title = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["tag-title"])
        self._fig = self._figure()
        self.chart = pn.pane.Bokeh(
            self._fig, sizing_mode="stretch_width", css_classes=["iov-chart"]
        )
        self.history_table = pn.widgets.Tabulator(
            pd.DataFrame(columns=["time (UTC)", "author", "action", "details"]),
            show_index=False,
            disabled=True,
            pagination="local",
            page_size=15,
            sizing_mode="stretch_width",
            css_classes=["tag-history"],
            widths={"details": 600},
        )
        self.exp_input = pn.widgets.IntInput(
            name="Experiment", start=0, width=110, css_classes=["exp-input"]
        )
        self.run_input = pn.widgets.IntInput(
            name="Run", start=0, width=110, css_classes=["run-input"]
        )
        self.stack_choice = pn.widgets.MultiChoice(
            name="Stack of tags (first wins)",
            options=names,
            width=520,
            css_classes=["stack-choice"],
        )
        self.lookup_head = pn.pane.HTML(
            "", css_classes=["lookup-head"], sizing_mode="stretch_width"
        )
        # the lookup and the diff are plain HTML tables: a page draws them much faster than
        # further Tabulators (the page's first render must stay within 1.5 s)
        self.lookup_table = pn.pane.HTML("", sizing_mode="stretch_width")
        self.diff_a = pn.widgets.Select(
            name="From tag (A)", options=["", *names], width=260, css_classes=["diff-a"]
        )
        self.diff_b = pn.widgets.Select(
            name="To tag (B)", options=["", *names], width=260, css_classes=["diff-b"]
        )
        self.diff_head = pn.pane.HTML("", css_classes=["diff-head"], sizing_mode="stretch_width")
        self.diff_table = pn.pane.HTML("", sizing_mode="stretch_width")
        # -- the state: defaults, then the URL's
        if served() and pn.state.location is not None:
            pn.state.location.sync(
                self, {"tag": "tag", "exp": "exp", "run": "run", "stack": "stack", "diff": "diff"}
            )
        if not self.tag and names:
            running = [t.name for t in self.tags if t.state == "RUNNING"]
            self.tag = running[0] if running else names[0]
        # -- widgets <-> state
        self.tag_select.param.watch(lambda e: self._set(tag=e.new), "value")
        self.tags_table.param.watch(self._on_table_select, "selection")
        self.exp_input.param.watch(lambda e: self._set(exp=e.new), "value")
        self.run_input.param.watch(lambda e: self._set(run=e.new), "value")
        self.stack_choice.param.watch(lambda e: self._set(stack=",".join(e.new)), "value")
        self.diff_a.param.watch(lambda e: self._set_diff(), "value")
        self.diff_b.param.watch(lambda e: self._set_diff(), "value")
        self.param.watch(self._on_tag, "tag")
        self.param.watch(self._on_lookup, ["exp", "run", "stack"])
        self.param.watch(self._on_diff, "diff")
        self._on_diff()
        self._on_tag()
        if served() and pn.state.location is not None:
            pn.state.onload(self._show_state)

    def _show_state(self) -> None:
        """Put the state chosen by default (the tag, its last run) in the page's URL too."""
        location = pn.state.location
        if location is None:
            return
        state: dict[str, Any] = {"tag": self.tag, "exp": self.exp, "run": self.run}
        state.update(stack=self.stack, diff=self.diff)
        location.update_query(**{k: v for k, v in state.items() if v not in ("", None)})

    # -- state changes -----------------------------------------------------------------------

    def _set(self, **values: Any) -> None:
        if not self._busy:
            self.param.update(**values)

    def _set_diff(self) -> None:
        a, b = self.diff_a.value, self.diff_b.value
        self._set(diff=f"{a}..{b}" if a or b else "")

    def _on_table_select(self, event: Any) -> None:
        if event.new:
            name = str(self.tags_table.value.iloc[event.new[0]]["name"])
            self._set(tag=name)

    def _fail(self, err: Exception) -> None:
        self.message.object = escape(str(err))
        self.message.visible = True

    def _widgets(self) -> None:
        """Show the state in the widgets (without echoing back)."""
        self._busy = True
        try:
            names = [t.name for t in self.tags]
            self.tag_select.value = self.tag if self.tag in names else None
            rows = self.tags_table.value.index[self.tags_table.value["name"] == self.tag]
            self.tags_table.selection = [int(i) for i in rows]
            self.exp_input.value = self.exp
            self.run_input.value = self.run
            stack = [t for t in self._stack() if t in names]
            # the chosen tags show in the stack's order (the widget lists them as its options)
            self.stack_choice.options = [*stack, *(n for n in names if n not in stack)]
            self.stack_choice.value = stack
            a, _, b = self.diff.partition("..")
            self.diff_a.value = a if a in names else ""
            self.diff_b.value = b if b in names else ""
        finally:
            self._busy = False

    def _stack(self) -> list[str]:
        return _split(self.stack, ",") or ([self.tag] if self.tag else [])

    def _on_tag(self, *_: Any) -> None:
        self.message.visible = False
        if not self.tag:
            self.tag_title.object = "<p>The database holds no global tag yet.</p>"
            self._widgets()
            return
        try:
            table = self.db.iov_table(self.tag)
            info = self.db.tag(self.tag)
            history = self.db.history(self.tag)
        except B2CalibError as err:
            self._fail(err)
            self._table = None
            self.chart.visible = False
            self._widgets()
            return
        self.tag_title.object = (
            f'<h3 id="tag-title" style="margin:4px 0">{info.name} '
            f'<span style="font-weight:normal">({info.type}, {info.state}: {len(table)} IoVs '
            f"of {len(table.names)} payloads)</span></h3>"
            f"<div>{escape(info.description)}</div>"
        )
        self._table = table
        self.chart.visible = True
        self.history_table.value = pd.DataFrame(
            {
                "time (UTC)": [_when(h.time) for h in history],
                "author": [h.author for h in history],
                "action": [h.action for h in history],
                "details": [json.dumps(h.details, sort_keys=True) for h in history],
            }
        )
        axis = table.run_axis()
        if (self.exp is None or self.run is None) and len(axis.experiments):
            # no run asked yet: the tag's last run (the change looks it up)
            self.param.update(exp=int(axis.experiments[-1]), run=int(axis.last[-1]))
        else:
            self._on_lookup()

    def _on_lookup(self, *_: Any) -> None:
        self.message.visible = False
        if self._table is not None and self.tag:
            self._draw()
        stack = self._stack()
        self._widgets()
        if self.exp is None or self.run is None or not stack:
            self.lookup_head.object = "<p>Choose an experiment, a run and a stack of tags.</p>"
            self.lookup_table.object = ""
            return
        try:
            found = self.db.lookup_stack(self.exp, self.run, stack)
        except B2CalibError as err:
            self._fail(err)
            self.lookup_head.object = f"<p>Lookup failed: {escape(str(err))}</p>"
            self.lookup_table.object = ""
            return
        rows = []
        for name, entries in found.items():
            first = entries[0]
            rows.append(
                {
                    "payload": name,
                    "revision": first.revision,
                    "IoV": str(first.iov),
                    "from tag": first.globaltag,
                    "checksum": first.checksum,
                    "shadowed": "; ".join(
                        f"{e.globaltag} rev {e.revision} [{e.iov}]" for e in entries[1:]
                    ),
                }
            )
        per_tag = {t: sum(r["from tag"] == t for r in rows) for t in stack}
        self.lookup_head.object = (
            f'<p id="lookup-summary">Run <b>{self.exp}/{self.run}</b> through '
            f"<b>{' &rarr; '.join(map(escape, stack))}</b>: {len(rows)} payloads ("
            + ", ".join(f"{n} from {escape(t)}" for t, n in per_tag.items())
            + ").</p>"
        )
        self.lookup_table.object = html_table(
            rows, ["payload", "revision", "IoV", "from tag", "checksum", "shadowed"], "lookup-table"
        )

    def _on_diff(self, *_: Any) -> None:
        self.message.visible = False
        self._widgets()
        a, sep, b = self.diff.partition("..")
        if not (sep and a and b):
            self.diff_head.object = "<p>Choose two tags to compare.</p>"
            self.diff_table.object = ""
            return
        try:
            d = self.db.diff(a, b)
        except B2CalibError as err:
            self._fail(err)
            self.diff_head.object = f"<p>Diff failed: {escape(str(err))}</p>"
            self.diff_table.object = ""
            return
        rows: list[dict[str, Any]] = []
        for name, iov, info in d.added:
            rows.append({"change": "added", "payload": name, "IoV in B": iov, "rev B": info})
        for name, iov, info in d.removed:
            rows.append({"change": "removed", "payload": name, "IoV in A": iov, "rev A": info})
        for (name, iov_a, info_a), (_, iov_b, info_b) in d.changed:
            link = escape(payloads_link(b, name, a))
            rows.append(
                {
                    "change": "changed",
                    "payload": name,
                    "IoV in A": iov_a,
                    "rev A": info_a,
                    "IoV in B": iov_b,
                    "rev B": info_b,
                    "validation": f'<a class="validation-link" href="{link}">compare</a>',
                }
            )
        for r in rows:
            for k in ("IoV in A", "IoV in B"):
                r[k] = str(r[k]) if k in r else ""
            for k in ("rev A", "rev B"):
                r[k] = r[k].revision if k in r else ""
        rows.sort(key=lambda r: (r["payload"], r["change"]))
        columns = ["change", "payload", "IoV in A", "rev A", "IoV in B", "rev B", "validation"]
        self.diff_head.object = (
            f'<p id="diff-summary">From <b>{escape(a)}</b> to <b>{escape(b)}</b>: '
            f"{len(d.added)} IoVs added, {len(d.removed)} removed, {len(d.changed)} changed "
            f"({len({r['payload'] for r in rows})} payloads).</p>"
        )
        self.diff_table.object = html_table(rows, columns, "diff-table", raw={"validation"})

    # -- tables and chart --------------------------------------------------------------------

    def _tags_frame(self) -> pd.DataFrame:
        sizes = self.db.tag_sizes()
        rows = [
            {
                "name": t.name,
                "type": t.type,
                "state": t.state,
                "payloads": sizes[t.name].payloads,
                "IoVs": sizes[t.name].iovs,
                "revisions": sizes[t.name].revisions,
                "description": t.description,
                "created (UTC)": _when(t.created),
                "modified (UTC)": _when(t.modified),
                "author": t.author,
            }
            for t in self.tags
        ]
        columns = ["name", "type", "state", "payloads", "IoVs", "revisions", "description",
                   "created (UTC)", "modified (UTC)", "author"]  # fmt: skip
        return pd.DataFrame(rows, columns=columns)

    _table: Any = None

    def _figure(self) -> Any:
        """The IoV chart, made once; :meth:`_draw` puts a tag's bars in it."""
        self._bars = ColumnDataSource(
            {k: [] for k in ("name", "x0", "x1", "revision", "iov", "checksum", "color")}
        )
        self._exps = ColumnDataSource({"x": [], "row": [], "label": []})
        p = figure(
            y_range=FactorRange(),
            x_range=Range1d(start=0.0, end=1.0),
            height=200,
            sizing_mode="stretch_width",
            toolbar_location="above",
            tools="xpan,xwheel_zoom,reset",
            title="",
        )
        bars = p.hbar(
            y="name",
            left="x0",
            right="x1",
            height=0.7,
            color="color",
            line_color="white",
            line_width=1,
            source=self._bars,
            name="iov-bars",
        )
        p.add_tools(
            HoverTool(
                renderers=[bars],
                tooltips=[
                    ("payload", "@name"),
                    ("revision", "@revision"),
                    ("IoV", "@iov"),
                    ("checksum", "@checksum"),
                ],
            )
        )
        # the experiment boundaries, named in a row of their own at the top
        p.vspan(x="x", source=self._exps, line_color="#444", line_width=2)
        p.add_layout(
            LabelSet(x="x", y="row", text="label", source=self._exps, text_font_size="11px",
                     text_color="#444", text_baseline="middle", x_offset=4)
        )  # fmt: skip
        self._marker = Span(
            location=0.0, dimension="height", line_color="#d62728", line_dash="dashed",
            line_width=2, visible=False,
        )  # fmt: skip
        p.add_layout(self._marker)
        p.xaxis.ticker = FixedTicker(ticks=[])
        p.xaxis.axis_label = "run (experiments side by side)"
        p.xgrid.grid_line_color = None
        p.yaxis.major_label_text_font_size = "11px"
        return p

    def _draw(self) -> None:
        """The tag's IoVs as bars on the run axis, with the looked-up run marked."""
        # the chart's Bokeh models are changed in place: outside the document's lock when the
        # change comes from a table's event, so through Panel's dispatch of held events
        with unlocked():
            self._draw_models()

    def _draw_models(self) -> None:
        table = self._table
        p = self._fig
        asked = [(self.exp, self.run)] if self.exp is not None and self.run is not None else []
        axis = table.run_axis(asked)
        x0, x1 = table.bars(axis)
        names = list(table.names)
        palette = list(Category10_10)
        self._bars.data = {
            "name": table.name.tolist(),
            "x0": x0,
            "x1": x1,
            "revision": table.revision.tolist(),
            "iov": table.iov_text,
            "checksum": table.checksum.tolist(),
            "color": [palette[int(r) % len(palette)] for r in table.revision.tolist()],
        }
        p.y_range.factors = [*reversed(names), _EXP_ROW]
        p.x_range.start, p.x_range.end = 0.0, max(axis.end, 1.0)
        p.height = 110 + _ROW_PX * (len(names) + 1)
        p.title.text = f"{self.tag}: IoVs on the run axis (colour: revision; hover: details)"
        # runs: a tick at the middle of every run (thinned when there are many)
        ticks: list[float] = []
        labels: dict[float | str, str] = {}
        total = int(sum(axis.last - axis.first + 1))
        step = max(1, int(np.ceil(total / 40)))
        for first, last, start in zip(
            axis.first.tolist(), axis.last.tolist(), axis.starts.tolist(), strict=True
        ):
            for r in range(first, last + 1, step):
                x = start + (r - first) + 0.5
                ticks.append(x)
                labels[x] = str(r)
        p.xaxis.ticker.ticks = ticks
        p.xaxis.major_label_overrides = labels
        self._exps.data = {
            "x": axis.starts.tolist(),
            "row": [_EXP_ROW] * len(axis.experiments),
            "label": [f"exp {e}" for e in axis.experiments.tolist()],
        }
        if asked and self.exp in axis.experiments.tolist():
            self._marker.location = axis.position(int(self.exp), int(self.run)) + 0.5  # type: ignore[arg-type]
            self._marker.visible = True
        else:
            self._marker.visible = False

    # -- layout ------------------------------------------------------------------------------

    def __panel__(self) -> pn.viewable.Viewable:
        def section(title: str, anchor: str) -> pn.pane.HTML:
            return pn.pane.HTML(
                f'<h2 id="{anchor}" style="margin:10px 0 0;color:#1f4e8c;font-size:1.2em">'
                f"{title}</h2>",
                sizing_mode="stretch_width",
            )

        return pn.Column(
            header("Conditions", self.user),
            self.message,
            section("Global tags", "tags"),
            self.tags_table,
            pn.Row(self.tag_select),
            self.tag_title,
            pn.Tabs(
                ("IoVs on the run axis", self.chart),
                ("History", self.history_table),
                sizing_mode="stretch_width",
                dynamic=True,  # the history is drawn when its tab is opened
            ),
            section("What applies at a run", "lookup"),
            pn.Row(self.exp_input, self.run_input, self.stack_choice),
            self.lookup_head,
            self.lookup_table,
            section("Diff of two tags", "diff"),
            pn.Row(self.diff_a, self.diff_b),
            self.diff_head,
            self.diff_table,
            sizing_mode="stretch_width",
        )


def app() -> pn.viewable.Viewer:
    """The served page against the server's database."""
    from .serve import current_conditions, current_database

    return Conditions(db=current_conditions(), qa=current_database())


def __dir__() -> list[str]:
    return __all__


if pn.state.served:
    app().servable(title="b2calib conditions")
