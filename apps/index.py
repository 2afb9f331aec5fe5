"""The index page: what each app is for, who is logged in, a summary of the database."""

from __future__ import annotations

from collections import Counter
from typing import Any

import panel as pn
import param

from ._common import describe_user, header, session_user

__all__ = ["Index"]

_CARDS = (
    ("qam", "QAM", "Trends of the monitoring variables vs run against their reference bands; "
     "each QA histogram of a run over its reference with the test result."),
    ("signoff", "Sign-off", "Runs x detectors certification grid: the evidence of a run, "
     "flags with comments and their history, the run workflow and the good-run lists."),
    ("runsummary", "Run summary", "Every run with its type, times, triggers, detectors, "
     "luminosity (Bhabha, gamma-gamma) and flags; sortable, filterable, as CSV."),
)  # fmt: skip


class Index(pn.viewable.Viewer):
    """Landing page with links to the apps and a summary of the database's runs."""

    db = param.Parameter(doc="The QA database (b2calib.qa.store.QADatabase).")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.db is None:
            raise TypeError("Index needs db=QADatabase(...)")
        self.user = session_user(self.db)

    def summary(self) -> str:
        """'12 runs in exp 12; run states: 10 OPEN, 2 SIGNOFF; ...' (markdown)."""
        runs = list(self.db.runs.select())
        if not runs:
            return "The database holds no runs yet (`b2calib qa import-runs`)."
        exps = sorted({r.exp for r in runs})
        states = Counter(self.db.certification.states().values())
        lumi = sum(r.lumi_pb for r in runs) / 1000.0
        state_text = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        return (
            f"**{len(runs)} runs** in experiment{'s' if len(exps) > 1 else ''} "
            f"{', '.join(map(str, exps))}, {lumi:.2f} fb<sup>-1</sup> recorded; "
            f"run states: {state_text}."
        )

    def __panel__(self) -> pn.viewable.Viewable:
        cards = [
            pn.pane.HTML(
                f'<a class="app-card" id="card-{path}" href="/{path}" style="display:block;'
                f"text-decoration:none;color:inherit;border:1px solid #c8d3e0;border-radius:8px;"
                f'padding:12px 16px;width:300px;height:120px;background:#f7f9fc">'
                f'<div style="font-size:1.2em;font-weight:600;color:#1f4e8c">{name}</div>'
                f"<div>{text}</div></a>",
                width=340,
            )
            for path, name, text in _CARDS
        ]
        role = (
            "You may read everything; log in to certify runs."
            if self.user is None
            else {
                "viewer": "You may read everything (viewer: no writes).",
                "expert": "You may flag the detectors you are expert of.",
                "manager": "You may flag every detector, complete runs and make good-run lists.",
            }.get(self.user.role, "")
        )
        return pn.Column(
            header("b2calib data quality", self.user),
            pn.pane.Markdown(
                f"Logged in as **{describe_user(self.user)}**. {role}\n\n{self.summary()}"
            ),
            pn.Row(*cards),
            sizing_mode="stretch_width",
        )


def app() -> pn.viewable.Viewer:
    """The served page against the server's database."""
    from .serve import current_database

    return Index(db=current_database())


def __dir__() -> list[str]:
    return __all__


if pn.state.served:
    app().servable(title="b2calib data quality")
