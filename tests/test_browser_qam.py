"""Browser tests of QAM, the QA monitor (issue 19): a real ``b2calib serve`` driven by headless
Chromium against the QA database of the sample bucket (the fixtures of test_browser.py).

What a shift relies on: the page opens on the worst variable; a click on a trend point shows
its run and marks it; the URL carries the state both ways; every point's colour is its status
from the library's one comparison with its class's band; the run's evidence is listed worst
first with each item's status; cosmic runs and the reference run say what they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from playwright.sync_api import Page, expect

from b2calib.qa.store import QADatabase
from b2calib_apps._common import STATUS_COLORS
from tests.browser_server import REFERENCE_RUN, Server, shoot
from tests.test_browser import db_url  # noqa: F401 (the same database as test_browser)

pytestmark = pytest.mark.ui

EXP = REFERENCE_RUN[0]
COSMIC_VARIABLE = "cosmic.cdc_hits_per_event"

#: JS: the columns of a named data source of the page.
_COLUMNS = """(name) => {
  const s = Bokeh.documents[0].get_model_by_name(name)
  if (s == null) return null
  const out = {}
  const keys = s.data instanceof Map ? [...s.data.keys()] : Object.keys(s.data)
  for (const k of keys) out[k] = Array.from(s.data instanceof Map ? s.data.get(k) : s.data[k])
  out.__selected__ = Array.from(s.selected.indices)
  return out
}"""
#: JS: where (page pixels) the trend point of ``run`` is drawn.
_POINT = """(run) => {
  const doc = Bokeh.documents[0]
  const fig = doc.get_model_by_name("qam-trend")
  const src = doc.get_model_by_name("qam-trend-points")
  const find = (v) => {
    if (v.model === fig) return v
    for (const c of (v.children ? v.children() : [])) { const r = find(c); if (r) return r }
    return null
  }
  let view = null
  for (const r of Bokeh.index.roots) { view = find(r); if (view) break }
  const col = (k) => Array.from(src.data instanceof Map ? src.data.get(k) : src.data[k])
  const i = col("run").indexOf(run)
  const box = view.canvas_view.el.getBoundingClientRect()
  return [box.left + view.frame.x_scale.compute(run),
          box.top + view.frame.y_scale.compute(col("value")[i])]
}"""
#: JS: properties of the named model (a few, as the tests read them).
_MODEL = """([name, path]) => {
  let x = Bokeh.documents[0].get_model_by_name(name)
  for (const p of path) x = x[p]
  return x
}"""


@pytest.fixture(scope="module")
def server(db_url: str) -> Iterator[Server]:  # noqa: F811 (test_browser's needs a login)
    with Server(db_url, "--allow-anonymous") as s:
        yield s


def open_qam(pg: Page, server: Server, query: str = "") -> None:
    """Open ``/qam?query`` and wait until its trend and its run are shown."""
    pg.goto(server.base + "/qam" + (f"?{query}" if query else ""))
    expect(pg.locator("#qam-run-head")).to_be_visible()
    pg.wait_for_function(f"() => ({_COLUMNS})('qam-trend-points') != null")


def columns(pg: Page, name: str = "qam-trend-points") -> dict[str, Any]:
    """The columns of data source ``name`` in the page (``__selected__``: its selection)."""
    got: dict[str, Any] = pg.evaluate(_COLUMNS, name)
    return got


def band_labels(pg: Page) -> list[str]:
    """The entries of the trend's legend of GOOD bands (none when it is hidden)."""
    got: list[str] = pg.evaluate(
        "() => { const l = Bokeh.documents[0].get_model_by_name('qam-band-legend');"
        " return l.visible ? l.items.map(i => i.label.value) : [] }"
    )
    return got


def url_state(pg: Page) -> dict[str, str]:
    """The page's URL query."""
    return {k: v[0] for k, v in parse_qs(urlparse(pg.url).query).items()}


def test_opens_on_the_worst_variable_and_puts_the_state_in_the_url(
    page: Page,
    server: Server,
    db_url: str,  # noqa: F811
) -> None:
    db = QADatabase(db_url)
    worst = db.status.worst_variables(EXP)
    latest = max(r.run for r in db.runs.select(exp=EXP, run_type="physics"))
    open_qam(page, server)
    variable = page.locator(".qam-variable select")
    expect(variable).to_have_value(worst[0])
    # the variables offered worst first
    options = variable.locator("option").all_text_contents()
    assert options == [n for n in worst if n in options]
    expect(page.locator("#qam-run-head")).to_contain_text(f"Run {EXP}/{latest}")
    # the whole view is in the URL, to be shared
    page.wait_for_function("() => location.search.includes('variable=')")
    assert url_state(page) == {
        "exp": str(EXP), "run": str(latest), "variable": worst[0], "detector": "all",
        "run_type": "all",
    }  # fmt: skip
    # the detector choices in the order of every page (detectors, then the systems)
    from b2calib.qa.store.status import STATUS_COLUMNS

    detectors = page.locator(".qam-detector select option").all_text_contents()
    assert detectors == ["all", *STATUS_COLUMNS]


def test_a_click_on_a_trend_point_shows_its_run_and_marks_it(
    page: Page,
    server: Server,
) -> None:
    open_qam(page, server, f"exp={EXP}&run=3&variable=hadron.klm_digits_per_event")
    before = columns(page)
    assert before["run"][before["__selected__"][0]] == 3  # the run shown is marked
    page.wait_for_function("() => location.search.includes('run_type=')")  # URL completed
    history = page.evaluate("() => history.length")
    x, y = page.evaluate(_POINT, 9)
    page.mouse.click(x, y)
    expect(page.locator("#qam-run-head")).to_contain_text(f"Run {EXP}/9")
    expect(page.locator(".qam-run input")).to_have_value("9")
    page.wait_for_function("() => location.search.includes('run=9')")
    # the URL follows the view, replacing the page's history entry: Back leaves the page
    # (issue 19: each change pushed an entry, so Back stepped through the runs seen)
    assert page.evaluate("() => history.length") == history
    after = columns(page)
    assert [after["run"][i] for i in after["__selected__"]] == [9]
    assert page.evaluate(_MODEL, ["qam-run-marker", ["location"]]) == 9
    # the trend stays: the same variable, every point
    assert after["run"] == before["run"]


def test_the_url_state_round_trips(page: Page, server: Server) -> None:
    query = f"exp={EXP}&run=4&variable=hadron.ecl_clusters_per_event&detector=ECL"
    open_qam(page, server, query)
    expect(page.locator(".qam-detector select")).to_have_value("ECL")
    expect(page.locator(".qam-variable select")).to_have_value("hadron.ecl_clusters_per_event")
    expect(page.locator(".qam-run input")).to_have_value("4")
    expect(page.locator("#qam-trend-title")).to_contain_text("hadron.ecl_clusters_per_event")
    # narrowed to ECL: its evidence only
    details = page.locator('.qam-evidence td[data-field="detector"]').all_text_contents()
    assert details
    assert set(details) == {"ECL"}
    # a change in the page goes into the URL, and that URL opens the same view
    page.locator(".qam-detector select").select_option("CDC")
    page.wait_for_function("() => location.search.includes('detector=CDC')")
    expect(page.locator("#qam-trend-title")).to_contain_text("(CDC)")
    state = url_state(page)
    assert state["detector"] == "CDC"
    assert state["run"] == "4"
    assert state["variable"].split(".")[1].startswith("cdc_")
    shared = page.url
    page.goto(shared)
    expect(page.locator("#qam-run-head")).to_contain_text(f"Run {EXP}/4")
    expect(page.locator(".qam-detector select")).to_have_value("CDC")
    expect(page.locator(".qam-variable select")).to_have_value(state["variable"])
    # the run type filters the variables and is in the URL both ways (issue 19: it did not
    # filter the variable list and was lost from the URL)
    open_qam(page, server, f"exp={EXP}&run_type=cosmic")
    expect(page.locator(".qam-run-type select")).to_have_value("cosmic")
    options = page.locator(".qam-variable select option").all_text_contents()
    assert options
    assert all(o.startswith("cosmic.") for o in options), options
    page.wait_for_function("() => location.search.includes('run_type=cosmic')")
    assert set(columns(page)["run_type"]) == {"cosmic"}
    expect(page.locator("#qam-run-head")).to_contain_text("(cosmic run)")
    # previous/next step through the runs of the type chosen: the sample has one cosmic run
    expect(page.locator(".qam-previous button")).to_be_disabled()
    expect(page.locator(".qam-next button")).to_be_disabled()
    page.locator(".qam-run-type select").select_option("physics")
    page.wait_for_function("() => location.search.includes('run_type=physics')")
    expect(page.locator("#qam-run-head")).not_to_contain_text("(cosmic run)")
    options = page.locator(".qam-variable select option").all_text_contents()
    assert options
    assert not any(o.startswith("cosmic.") for o in options), options
    assert set(columns(page)["run_type"]) == {"physics"}
    # a state the database does not have is said, not silently replaced
    open_qam(page, server, f"exp={EXP}&run=999")
    expect(page.locator(".alert")).to_contain_text(f"Run {EXP}/999 is not in the database")


@pytest.mark.parametrize(
    "variable",
    ["bhabha.ecl_e_over_p", "hadron.klm_digits_per_event", "mumu.top_time", "bhabha.lumi_pb"],
)
def test_each_point_is_coloured_by_its_status_from_the_band_of_its_class(
    page: Page,
    server: Server,
    db_url: str,  # noqa: F811
    variable: str,
) -> None:
    trend = QADatabase(db_url).runs.trend(variable, exp=EXP, run_type=None)
    assert len(trend) > 5
    open_qam(page, server, f"exp={EXP}&variable={variable}")
    page.wait_for_function(f"() => ({_COLUMNS})('qam-trend-points').run.length == {len(trend)}")
    got = columns(page)
    assert got["run"] == trend.run.tolist()
    assert got["status"] == trend.status.tolist()
    assert got["run_class"] == trend.run_class.tolist()
    value = np.asarray(got["value"])
    low, high = np.asarray(got["low"]), np.asarray(got["high"])
    # the band drawn for a point is the one its status was judged against: GOOD exactly inside
    judged = np.isfinite(value) & np.isfinite(low)
    inside = (low <= value) & (value <= high)
    good = np.asarray(got["status"]) == "GOOD"
    assert np.array_equal(good[judged], inside[judged])
    # (float32 limits in the page: compare with the library's at that precision)
    assert np.allclose(low, trend.low, rtol=1e-6, equal_nan=True)
    # and the colour of a status is the page's status colour
    factors = page.evaluate(_MODEL, ["qam-trend-scatter", ["glyph", "fill_color", "transform",
                                                            "factors"]])  # fmt: skip
    palette = page.evaluate(_MODEL, ["qam-trend-scatter", ["glyph", "fill_color", "transform",
                                                            "palette"]])  # fmt: skip
    assert dict(zip(factors, palette, strict=True)) == STATUS_COLORS
    # a band legend entry for each class whose band is drawn, and for no other
    drawn = [c for c, lo in zip(got["run_class"], low, strict=True) if np.isfinite(lo)]
    assert band_labels(page) == list(dict.fromkeys(drawn))
    if variable == "bhabha.lumi_pb":
        # a run's integrated luminosity is not judged (issue 19: its band reached below 0)
        assert set(got["status"]) == {"NONE"}
        assert not drawn
        expect(page.locator("#qam-trend-title")).to_contain_text("Not judged")
        cell = page.locator('td[data-field="variable"]', has_text=re.compile(r"^bhabha\.lumi_pb$"))
        row = page.locator(".qam-variables tbody tr").filter(has=cell)
        expect(row.locator('td[data-field="status"]')).to_have_text("not judged")
        # what is judged instead: the ratio to the recorded luminosity, with its band
        cell = page.locator(
            'td[data-field="variable"]', has_text=re.compile(r"^bhabha\.lumi_recorded_ratio$")
        )
        row = page.locator(".qam-variables tbody tr").filter(has=cell)
        expect(row.locator('td[data-field="status"]')).to_have_text(re.compile("GOOD|WARNING"))
    else:
        assert drawn


def test_the_evidence_of_a_run_is_listed_worst_first_with_each_status(
    page: Page,
    server: Server,
    db_url: str,  # noqa: F811
) -> None:
    db = QADatabase(db_url)
    evidence = db.status.evidence(EXP, 9)
    assert evidence[0].status == "ERROR"
    open_qam(page, server, f"exp={EXP}&run=9")
    rows = page.locator(".qam-evidence tbody tr")
    expect(rows).to_have_count(len(evidence))
    status = page.locator('.qam-evidence td[data-field="status"]').all_text_contents()
    items = page.locator('.qam-evidence td[data-field="item"]').all_text_contents()
    assert list(zip(status, items, strict=True)) == [(e.status, e.name) for e in evidence]
    expect(page.locator(".qam-evidence tbody tr").first).to_contain_text(evidence[0].message)
    # the variables table has a status column: the failing variable is ERROR there too
    bad = evidence[0].name
    cell = page.locator('td[data-field="variable"]', has_text=re.compile(rf"^{re.escape(bad)}$"))
    row = page.locator(".qam-variables tbody tr").filter(has=cell)
    expect(row.locator('td[data-field="status"]')).to_have_text("ERROR")
    # the worst histograms are drawn, each over its reference, both inside the y-range
    for i in range(2):
        run = columns(page, f"qam-hist-run-{i}")
        ref = columns(page, f"qam-hist-ref-{i}")
        assert run["top"]
        assert ref["y"]
        end = page.evaluate(_MODEL, [f"qam-hist-{i}", ["y_range", "end"]])
        assert end >= max(run["top"])
        assert end >= max(ref["y"])
    shoot(page, "qam-run-9")


def test_cosmic_and_reference_runs_say_what_they_are(
    page: Page,
    server: Server,
    db_url: str,  # noqa: F811
) -> None:
    db = QADatabase(db_url)
    cosmic = [r.run for r in db.runs.select(exp=EXP, run_type="cosmic")]
    assert cosmic
    open_qam(page, server, f"exp={EXP}&run={cosmic[0]}&variable={COSMIC_VARIABLE}")
    expect(page.locator("#qam-run-head")).to_contain_text("(cosmic run)")
    got = columns(page)
    assert got["run_type"] == ["cosmic"] * len(got["run"])
    assert cosmic[0] in got["run"]
    labels = page.evaluate(
        "() => Bokeh.documents[0].get_model_by_name('qam-status-legend').items"
        ".filter(i => i.visible).map(i => i.label.value ?? i.label.field)"
    )
    assert "cosmic run" in labels
    # one cosmic run: no trend, no band drawn, and no band entry in the legend (issue 19: exp
    # 14 listed a Continuum band it did not draw)
    assert np.isnan(np.asarray(got["low"], dtype=float)).all()
    assert band_labels(page) == []
    # the reference run: said, and its histograms' reference is itself
    open_qam(page, server, f"exp={EXP}&run={REFERENCE_RUN[1]}")
    expect(page.locator(".qam-is-reference")).to_contain_text(
        f"Run {EXP}/{REFERENCE_RUN[1]} is the reference run"
    )
    refs = page.locator('.qam-comparisons td[data-field="reference"]').all_text_contents()
    assert refs
    assert set(refs) == {f"{EXP}/{REFERENCE_RUN[1]} (this run)"}
    # its sign-off and run-summary views are one click away
    link = page.locator(".qam-signoff-link")
    expect(link).to_have_attribute("href", f"/signoff?exp={EXP}&run={REFERENCE_RUN[1]}")
    expect(page.locator(".qam-summary-link")).to_have_attribute(
        "href", f"/runsummary?exp={EXP}&run_type=physics"
    )


def test_another_experiment_shows_its_worst_run_of_the_variable(
    db_url: str,  # noqa: F811
    tmp_path: Any,
) -> None:
    """Issue 19: changing experiment kept the run number (a run of the old experiment). Now
    the new experiment's worst run of the variable is shown (its first when none is worse than
    GOOD), the variable kept when the experiment has it, else its worst. (The page's logic,
    without a browser: the sample has one experiment, a copy gets a second.)"""
    import dataclasses
    import sqlite3

    from b2calib.qa.monitoring import RunQA
    from b2calib_apps.qam import QAM

    path = tmp_path / "two.sqlite"
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as src, sqlite3.connect(path) as dst:
        src.backup(dst)  # (its write-ahead log included)
    db = QADatabase(f"sqlite:///{path}")
    other, kept, bad_run = EXP + 1, "hadron.klm_digits_per_event", 7
    db.runs.import_runs([dataclasses.replace(r, exp=other) for r in db.runs.select(exp=EXP)])
    for r in db.runs.select(exp=other):
        values = [
            dataclasses.replace(v, value=v.value * 100.0 if r.run == bad_run else v.value)
            for v in db.runs.variables(EXP, r.run)
            if v.name == kept
        ]
        db.histograms.store_run(RunQA(other, r.run, values, {}))
    q = QAM(db=db, exp=EXP, run=3, variable="mumu.top_time")
    assert (q.exp, q.run, q.variable) == (EXP, 3, "mumu.top_time")
    q.exp_select.value = other  # the only variable of exp 13 is its worst
    assert (q.exp, q.run, q.variable) == (other, bad_run, kept)
    assert q.run_input.value == bad_run
    assert q.variable_select.options == [kept]
    assert f"Run {other}/{bad_run}" in q.run_head.object
    q.exp_select.value = EXP  # the variable is kept, and the worst run of exp 12 shown
    assert q.variable == kept
    trend = db.runs.trend(kept, exp=EXP, run_type=None)
    rank = {"ERROR": 2, "WARNING": 1}
    worst = max(
        zip(trend.run.tolist(), trend.status.tolist(), np.abs(trend.pull).tolist(), strict=True),
        key=lambda x: (rank.get(x[1], 0), x[2]),
    )
    assert worst[1] == "ERROR"
    assert q.run == worst[0]
    # an experiment where no run is worse than GOOD: its first run
    db.runs.import_runs([dataclasses.replace(r, exp=other + 1) for r in db.runs.select(exp=EXP)])
    for r in db.runs.select(exp=other + 1):
        good = [dataclasses.replace(v, value=1.0) for v in db.runs.variables(EXP, r.run)
                if v.name == kept]  # fmt: skip
        db.histograms.store_run(RunQA(other + 1, r.run, good, {}))
    q = QAM(db=db, exp=EXP, run=worst[0], variable=kept)
    q.exp_select.value = other + 1
    assert set(db.runs.trend(kept, exp=other + 1, run_type=None).status) == {"GOOD"}
    assert (q.run, q.variable) == (1, kept)
