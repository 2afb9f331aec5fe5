"""What the apps share: colours, the logged-in user, the page's reaction to a lost connection,
the automatic-status reads and histogram plots.

Nothing here computes physics: it asks the QA database and lays out what it answers.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import holoviews as hv
import holoviews.plotting.bokeh  # registers the Bokeh backend for .opts
import numpy as np
import pandas as pd
import panel as pn
from bokeh.document import Document
from bokeh.models import CustomJS

from b2calib.exceptions import B2CalibError

#: Colours of the automatic statuses (b2calib.qa.QAStatus names, NONE: nothing to compare).
STATUS_COLORS = {
    "GOOD": "#2e9e44",
    "WARNING": "#f0a30a",
    "ERROR": "#d62728",
    "TOO_FEW": "#9e9e9e",
    "NONE": "#d9d9d9",
}
#: Colours of the certification flags.
FLAG_COLORS = {
    "GOOD": "#2e9e44",
    "BAD": "#d62728",
    "RECOVERABLE": "#f0a30a",
    "NOTSET": "#e8e8e8",
    "EXCLUDED": "#7f5aa2",
}
ALL = "all"

# the databases the cached readers below consult, by key (pn.cache hashes plain values only)
_DATABASES: dict[str, Any] = {}


def db_key(db: Any) -> str:
    """A key under which the cached readers find ``db``."""
    key = f"{type(db).__name__}-{id(db)}"
    _DATABASES[key] = db
    return key


def served() -> bool:
    """Whether the code runs for a page of a server (a Bokeh session), not in plain Python."""
    return bool(pn.state.curdoc and pn.state.curdoc.session_context)


def session_user(db: Any) -> Any:
    """The logged-in :class:`~b2calib.qa.store.User` of the current served page, or None.

    None outside a server, for anonymous visitors, and once the page's login session has
    ended (logout, expiry, the user removed or changed). The page knows its session by the id
    the server's guard put in its request (:data:`b2calib_apps.auth.SESSION_HEADER`; the
    cookie never reaches the page), and each call asks the database whether it is still live.
    """
    from .auth import SESSION_HEADER

    if not served():
        return None
    sid = pn.state.headers.get(SESSION_HEADER)
    if not sid:
        return None
    try:
        session = db.sessions.get(sid)
    except B2CalibError:
        return None
    return None if session is None else session.user


#: What a page does when its connection to the server is lost (server stopped or restarted,
#: login ended): cover the page with a message that says so and a button to reload, and make
#: everything under it inert (no click or key reaches a control). Bokeh does not reconnect a
#: Panel page, and the server would refuse an old page's session anyway.
_DISCONNECTED_JS = """
const id = "b2calib-disconnected"
if (document.getElementById(id) == null) {
  for (const el of Array.from(document.body.children)) {
    el.inert = true
    el.setAttribute("aria-hidden", "true")
  }
  const cover = document.createElement("div")
  cover.id = id
  cover.setAttribute("role", "alertdialog")
  cover.setAttribute("aria-modal", "true")
  cover.setAttribute("aria-labelledby", "b2calib-disconnected-title")
  cover.style.cssText = "position:fixed;inset:0;z-index:2147483647;display:flex;" +
    "align-items:center;justify-content:center;background:rgba(20,24,31,0.55);" +
    "font-family:system-ui,sans-serif"
  cover.innerHTML =
    '<div style="background:#fff;max-width:32rem;padding:1.4rem 2rem;border-radius:8px;' +
    'border-top:6px solid #b00020;box-shadow:0 4px 24px rgba(0,0,0,.35);color:#222">' +
    '<h2 id="b2calib-disconnected-title" style="margin:0 0 .6rem;color:#b00020;' +
    'font-size:1.3rem">Disconnected from the server</h2>' +
    '<p>This page has lost its connection to the b2calib server: the server was stopped or ' +
    'restarted, or your login ended. <b>Nothing you do on this page is saved any more.</b></p>' +
    '<p>Reload the page to continue (you may have to log in again).</p>' +
    '<button id="b2calib-reload" style="padding:.5rem 1.2rem;font-size:1rem;border:0;' +
    'border-radius:4px;background:#1f4e8c;color:#fff;cursor:pointer">Reload the page</button>' +
    "</div>"
  document.body.appendChild(cover)
  const reload = cover.querySelector("#b2calib-reload")
  reload.addEventListener("click", () => window.location.reload())
  reload.focus()
  document.title = "Disconnected: " + document.title
}
"""


def block_when_disconnected(doc: Document | None) -> None:
    """Make a served page show its lost connection and block its controls until reloaded.

    Panel's own ``disconnect_notification`` only shows a toast that can be dismissed and leaves
    every control live, so a click after a restart would look as if it worked; this covers the
    page instead (on Bokeh's ``connection_lost`` event of the document).
    """
    if doc is not None:
        doc.js_on_event("connection_lost", CustomJS(code=_DISCONNECTED_JS))


def describe_user(user: Any) -> str:
    """'alice (expert of CDC, ECL)' / 'anonymous (read only)'."""
    return "anonymous (read only)" if user is None else str(user)


#: JS run when a page's document is ready: a page putting its own state in the URL (Panel's
#: location sync pushes a history entry per change, the defaults it completes at load too)
#: replaces the page's entry instead, so that the browser's Back leaves the page (a run
#: summary's link to QAM, then Back: the summary, not QAM without its defaults).
_REPLACE_STATE_JS = """
if (!window.__b2calib_replace_state) {
  window.__b2calib_replace_state = true
  const push = window.history.pushState.bind(window.history)
  window.history.pushState = function (state, title, url) {
    const to = new URL(url, window.location.href)
    if (to.pathname === window.location.pathname) {
      return window.history.replaceState(state, title, url)
    }
    return push(state, title, url)
  }
}
"""


def replace_history_state(doc: Document | None) -> None:
    """Make a served page's own URL changes replace its history entry rather than add one
    (:data:`_REPLACE_STATE_JS`), so that the browser's Back leaves the page."""
    if doc is not None:
        doc.js_on_event("document_ready", CustomJS(code=_REPLACE_STATE_JS))


def header(title: str, user: Any) -> pn.viewable.Viewable:
    """The title bar of an app: its name, links to the others, who is logged in, log in/out."""
    who = describe_user(user)
    auth = (
        '<a id="logout-link" href="/logout">log out</a>'
        if user is not None
        else '<a id="login-link" href="/login">log in</a>'
    )
    links = " | ".join(
        f'<a href="/{path}">{name}</a>'
        for path, name in (("", "index"), ("qam", "QAM"), ("signoff", "sign-off"),
                           ("runsummary", "run summary"), ("payloads", "payloads"),
                           ("conditions", "conditions"))
    )  # fmt: skip
    return pn.pane.HTML(
        f'<div style="display:flex;justify-content:space-between;align-items:baseline;'
        f'width:100%;border-bottom:2px solid #1f4e8c;padding-bottom:4px">'
        f'<a href="/" title="b2calib workbench: all the apps" style="text-decoration:none">'
        f'<span style="font-size:1.4em;font-weight:600;color:#1f4e8c">{title}</span></a>'
        f"<span>{links}</span>"
        f'<span id="whoami">{who} &nbsp; {auth}</span></div>',
        sizing_mode="stretch_width",
    )


# ------------------------------------------------------------------------ cached reads
@pn.cache(max_items=2000, ttl=60)
def histogram_pair(
    key: str, exp: int, run: int, detector: str, name: str,
    ref_exp: int | None = None, ref_run: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Bin edges and contents of a run's QA histogram and of its reference (scaled to the run's
    entries): run ``ref_exp/ref_run`` when given (the one its stored test used), else the
    histogram's reference now; only these aggregates reach the browser."""
    db = _DATABASES[key]
    h = db.histograms.get(exp, run, detector, name)
    out: dict[str, Any] = {
        "edges": [np.asarray(ax.edges) for ax in h.axes],
        "label": [str(ax.label or ax.name or "") for ax in h.axes],
        "values": np.asarray(h.values(), dtype=float),
        "ref_values": None,
        "ref_run": None,
    }
    ref: Any = db.histograms.reference_of(exp, run, detector, name)
    if ref_exp is not None and ref_run is not None:
        ref = SimpleNamespace(exp=ref_exp, run=ref_run)
    if ref is not None:
        try:
            rh = db.histograms.get(ref.exp, ref.run, detector, name)
        except B2CalibError:
            rh = None
        if rh is not None:
            rv = np.asarray(rh.values(), dtype=float)
            total, rtotal = out["values"].sum(), rv.sum()
            out["ref_values"] = rv * (total / rtotal) if rtotal > 0 else rv
            out["ref_run"] = (ref.exp, ref.run)
    return out


def histogram_plot(
    key: str, exp: int, run: int, detector: str, name: str, stored: Any = None
) -> hv.Element | hv.Overlay:
    """One QA histogram of a run overlaid on its (scaled) reference, titled with the test."""
    # the reference the stored test was computed with (the histogram's reference may have
    # changed since: the curve drawn is then the one the statistic and p-value are about)
    ref_exp = getattr(stored, "reference_exp", None)
    ref_run = getattr(stored, "reference_run", None)
    data = histogram_pair(key, exp, run, detector, name, ref_exp, ref_run)
    status = getattr(getattr(stored, "comparison", None), "status", None)
    status_name = getattr(status, "name", "NONE")
    colour = STATUS_COLORS.get(status_name, STATUS_COLORS["NONE"])
    title = f"{detector} {name}"
    opts: dict[str, Any] = dict(
        width=380, height=280, title=title, tools=["hover"], shared_axes=False, framewise=True,
        fontsize={"xlabel": "8pt", "title": "10pt"},
    )  # fmt: skip
    if len(data["edges"]) == 1:
        edges, values = data["edges"][0], data["values"]
        xlabel = data["label"][0] or "x"
        run_h = hv.Histogram((edges, values), kdims=[xlabel], vdims=["entries"], label=f"run {run}")
        run_h = run_h.opts(fill_color=colour, fill_alpha=0.55, line_color=colour, **opts)
        if data["ref_values"] is None:
            return run_h
        ref_x = np.repeat(edges, 2)[1:-1]
        ref_y = np.repeat(data["ref_values"], 2)
        ref_label = f"reference {data['ref_run'][0]}/{data['ref_run'][1]}"
        ref_c = hv.Curve((ref_x, ref_y), kdims=[xlabel], vdims=["entries"], label=ref_label)
        # the legend below the plot: inside it covered the peaks of run or reference
        return (run_h * ref_c.opts(color="black", line_width=1.5)).opts(
            legend_position="bottom", legend_cols=2, title=title, shared_axes=False
        )
    if len(data["edges"]) == 2:
        xe, ye = data["edges"]
        qm = hv.QuadMesh((xe, ye, data["values"].T), kdims=data["label"][:2] or ["x", "y"])
        return qm.opts(cmap="viridis", colorbar=True, **opts)
    return hv.Div(f"<p>{title}: {len(data['edges'])}-dimensional, not drawn</p>")


def _number(x: float | None) -> str:
    """A statistic or p-value as shown: 4 significant digits, '-' when there is none."""
    return "-" if x is None or not math.isfinite(x) else f"{x:.4g}"


def comparisons_frame(stored: list[Any]) -> pd.DataFrame:
    """The comparisons of a run as a table (detector, histogram, method, statistic, ndf, p,
    status, entries, reference run)."""
    rows = []
    for s in stored:
        c = s.comparison
        rows.append(
            {
                "detector": s.detector,
                "histogram": s.name,
                "method": f"{c.method} {c.options}".strip(),
                "statistic": _number(c.statistic),
                "ndf": "" if c.ndf is None else str(c.ndf),
                "p-value": _number(c.p_value),
                "status": getattr(c.status, "name", str(c.status)),
                "entries": c.entries,
                "reference": f"{s.reference_exp}/{s.reference_run}"
                + (" (this run)" if (s.exp, s.run) == (s.reference_exp, s.reference_run) else ""),
            }
        )
    columns = ["detector", "histogram", "method", "statistic", "ndf", "p-value", "status",
               "entries", "reference"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def status_style(value: Any, colours: dict[str, str] = STATUS_COLORS) -> str:
    """CSS for a Tabulator cell holding a status or flag name."""
    colour = colours.get(str(value))
    if colour is None:
        return ""
    text = "white" if value in ("ERROR", "BAD", "GOOD", "EXCLUDED") else "black"
    return f"background-color: {colour}; color: {text}"


def page_url(path: str, **state: Any) -> str:
    """The address of a page with its state in the query: ``page_url("qam", exp=14, run=15)``
    is ``/qam?exp=14&run=15`` (how the pages link a run to each other's views)."""
    from urllib.parse import urlencode

    query = urlencode({k: v for k, v in state.items() if v is not None})
    return f"/{path}?{query}" if query else f"/{path}"


class FileDownload(pn.widgets.FileDownload):
    """Panel's ``FileDownload`` whose colour reaches the browser: Panel 1.9 turns
    ``button_type`` into its alias ``color`` and never sends that to the button, which stays
    grey (``color="primary"``, a page's primary action, must look primary)."""

    _rename = {**pn.widgets.FileDownload._rename, "color": "button_type"}  # noqa: RUF012


def luminosity_total(total: Any, shown: int) -> str:
    """A luminosity total of the library (:class:`b2calib.qa.store.LuminosityTotal`) as the
    pages write it (HTML): 'Bhabha: **9.010 +- 0.012 fb-1** (11 of 12 runs)', the number of
    runs summed given when not every one of the ``shown`` runs has that luminosity."""
    if total.runs == 0:
        value = "none"
    else:
        err = f" &plusmn; {total.error_pb / 1000.0:.3f}" if total.error_pb > 0 else ""
        value = f"{total.lumi_fb:.3f}{err} fb<sup>-1</sup>"
    where = "" if total.runs == shown else f" ({total.runs} of {shown} runs)"
    return f'<span class="total-lumi">{total.column}: <b>{value}</b>{where}</span>'


#: Style of the pages' plain HTML tables (a page draws them faster than a Tabulator).
_TABLE_CSS = (
    "<style>.stable-box{max-height:420px;overflow:auto;border:1px solid #c8d3e0}"
    ".stable{border-collapse:collapse;width:100%;font-size:13px}"
    ".stable th{position:sticky;top:0;background:#e9eff7;text-align:left;padding:3px 8px;"
    "border-bottom:1px solid #c8d3e0}"
    ".stable td{padding:2px 8px;border-bottom:1px solid #eef1f5}"
    ".stable tr:nth-child(even) td{background:#f7f9fc}</style>"
)


def status_table(
    rows: list[dict[str, Any]],
    columns: list[str],
    css: str,
    *,
    status_columns: tuple[str, ...] = ("status",),
    colours: dict[str, str] = STATUS_COLORS,
) -> str:
    """``rows`` as a plain HTML table of class ``css`` (text escaped): a cell per column with
    ``data-field`` its column name, the ``status_columns`` cells in their status colour."""
    from html import escape

    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            text = str(r.get(c, ""))
            style = status_style(text, colours) if c in status_columns else ""
            attr = f' style="{style};font-weight:600"' if style else ""
            cells.append(f'<td data-field="{escape(c)}"{attr}>{escape(text)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'{_TABLE_CSS}<div class="stable-box"><table class="stable {escape(css)}">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )
