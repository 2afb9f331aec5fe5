"""The index page, "b2calib workbench": every app in the order a run goes through them, who is
logged in, and a summary of the database's runs and of its conditions."""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import urlencode

import panel as pn
import param

from b2calib.qa.store import LUMINOSITY_COLUMNS

from ._common import describe_user, header, luminosity_total, session_user

__all__ = ["Index"]

#: The apps by stage: (route, name, what it is for). A run is monitored and certified (data
#: quality), then calibrated: its payloads validated in a staging tag, which goes into the
#: conditions.
_STAGES = (
    ("Data quality", (
        ("qam", "QAM", "Trends of the monitoring variables vs run against their reference "
         "bands; each QA histogram of a run over its reference with the test result."),
        ("signoff", "Sign-off", "Runs x detectors certification grid: the evidence of a run, "
         "flags with comments and their history, the run workflow and the good-run lists."),
        ("runsummary", "Run summary", "Every run with its type, times, triggers, detectors, "
         "flags and luminosities (recorded, Bhabha, gamma-gamma); filterable, as CSV."),
    )),
    ("Calibration and conditions", (
        ("payloads", "Payload validation", "A staging tag's payloads with their verdicts; "
         "each against the one it replaces, channel by channel, with detector maps, history "
         "and fits; approve or reject the tag, download it as a local database."),
        ("conditions", "Conditions", "Global tags with type, state and history; a tag's "
         "IoVs on the run axis; what a stack of tags gives for a run; the diff of two tags."),
    )),
)  # fmt: skip


def _card(path: str, name: str, text: str) -> str:
    return (
        f'<a class="app-card" id="card-{path}" href="/{path}" style="display:block;'
        f"text-decoration:none;color:inherit;border:1px solid #c8d3e0;border-radius:8px;"
        f'padding:10px 12px;width:176px;height:150px;background:#f7f9fc">'
        f'<div style="font-size:1.15em;font-weight:600;color:#1f4e8c;margin-bottom:4px">'
        f'{name}</div><div style="font-size:0.9em;line-height:1.35">{text}</div></a>'
    )


def _and(items: list[int]) -> str:
    """'14', '14 and 16', '12, 14 and 16'."""
    words = [str(i) for i in items]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _link(path: str, text: str, **state: str) -> str:
    query = f"?{urlencode(state)}" if state else ""
    return f'<a href="/{path}{query}">{text}</a>'


class Index(pn.viewable.Viewer):
    """Landing page: links to the apps, a summary of the runs and of the conditions."""

    db = param.Parameter(doc="The QA database (b2calib.qa.store.QADatabase).")
    conditions = param.Parameter(
        default=None, doc="The conditions database (b2calib.conditions.ConditionsDB)."
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.db is None:
            raise TypeError("Index needs db=QADatabase(...)")
        self.user = session_user(self.db)

    def summary(self) -> str:
        """'12 runs in experiment 12; luminosity: recorded (run registry) 9.108 fb-1 ...; run
        states: 10 OPEN, 2 SIGNOFF' (HTML). The luminosities are the library's
        (:meth:`b2calib.qa.store.QADatabase.luminosity`), under the names the run summary
        shows them with."""
        lumi = self.db.luminosity()
        if not len(lumi):
            return "The database holds no runs yet (<code>b2calib qa import-runs</code>)."
        exps = sorted({r.exp for r in lumi})
        states = Counter(self.db.certification.states().values())
        state_text = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        totals = "; ".join(luminosity_total(t, len(lumi)) for t in lumi.totals().values())
        return (
            f"<b>{_link('runsummary', f'{len(lumi)} runs')}</b> in "
            f"experiment{'s' if len(exps) > 1 else ''} {_and(exps)};<br>"
            f"luminosity: {totals} (the good-run lists sum the {LUMINOSITY_COLUMNS[0]});<br>"
            f"run states: {_link('signoff', state_text)}."
        )

    def conditions_summary(self) -> str:
        """'5 global tags; waiting for review (TESTING): ...; running: ...' (HTML)."""
        if self.conditions is None:
            return "No conditions database."
        tags = self.conditions.tags()
        if not tags:
            return "The database holds no global tag yet (<code>b2calib db import-local</code>)."
        by_state: dict[str, list[str]] = {}
        for t in tags:
            by_state.setdefault(t.state, []).append(t.name)
        testing = by_state.get("TESTING", [])
        running = by_state.get("RUNNING", [])
        review = ", ".join(_link("payloads", n, tag=n) for n in testing) if testing else "none"
        parts = [
            f"<b>{_link('conditions', f'{len(tags)} global tags')}</b>",
            f"waiting for review (TESTING): <b>{review}</b>",
            "running: "
            + (", ".join(_link("conditions", n, tag=n) for n in running) if running else "none"),
        ]
        validated = by_state.get("VALIDATED", [])
        if validated:
            parts.append("validated: " + ", ".join(_link("payloads", n, tag=n) for n in validated))
        return parts[0] + ";<br>" + "; ".join(parts[1:]) + "."

    def __panel__(self) -> pn.viewable.Viewable:
        role = (
            "You may read everything; log in to certify runs or review tags."
            if self.user is None
            else {
                "viewer": "You may read everything (viewer: no writes).",
                "expert": "You may flag the detectors you are expert of and review their "
                "calibrations' tags.",
                "manager": "You may flag every detector, complete runs, make good-run lists "
                "and approve tags.",
            }.get(self.user.role, "")
        )
        summaries = (self.summary(), self.conditions_summary())
        stages = []
        for (title, cards), text in zip(_STAGES, summaries, strict=True):
            kind = "qa" if title == "Data quality" else "cond"
            stages.append(
                pn.pane.HTML(
                    f'<h2 style="margin:4px 0 0;color:#1f4e8c;font-size:1.15em">{title}</h2>'
                    f'<p class="summary-{kind}" style="margin:6px 0 10px;min-height:4.2em">'
                    f'{text}</p><div style="display:flex;gap:12px">'
                    + "".join(_card(*c) for c in cards)
                    + "</div>",
                    width=610 if kind == "qa" else 440,
                    margin=(5, 20, 5, 10),
                )
            )
        return pn.Column(
            header("b2calib workbench", self.user),
            pn.pane.HTML(
                f"<p>Logged in as <b>{describe_user(self.user)}</b>. {role} A run is monitored "
                "and certified (data quality), then calibrated: its new payloads are validated "
                "in a staging tag, which goes into the conditions.</p>",
                sizing_mode="stretch_width",
            ),
            pn.Row(*stages),
            sizing_mode="stretch_width",
        )


def app() -> pn.viewable.Viewer:
    """The served page against the server's database."""
    from .serve import current_conditions, current_database

    return Index(db=current_database(), conditions=current_conditions())


def __dir__() -> list[str]:
    return __all__


if pn.state.served:
    app().servable(title="b2calib workbench")
