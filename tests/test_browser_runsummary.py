"""Browser tests of the run summary (issue 19): totals of the rows shown, the three luminosities
under the library's names (the same on the index page), links to a run's views in the other
pages, the page's state in its URL, cosmic runs marked.

A real ``b2calib serve`` (anonymous readers allowed) driven by headless Chromium against a QA
database made from the sample (experiment 12: 11 physics runs and the cosmic run 6).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import FloatRect, Locator, Page, expect

from b2calib.qa.store import LUMINOSITY_COLUMNS, LuminosityTable, QADatabase
from tests.browser_server import (
    TIMEOUT_MS,
    Server,
    page_fixture,
    prepare_database,
)
from tests.browser_server import shoot as shoot_page

pytestmark = pytest.mark.ui

REPO = Path(__file__).resolve().parent.parent
EXP = 12
COSMIC_RUN = 6

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def db_url(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return prepare_database(sample, tmp_path_factory.mktemp("qa") / "qa.sqlite")


@pytest.fixture(scope="module")
def lumi(db_url: str) -> LuminosityTable:
    """The library's luminosities of every run (what the pages must show)."""
    return QADatabase(db_url).luminosity()


@pytest.fixture(scope="module")
def server(db_url: str) -> Iterator[Server]:
    with Server(db_url, "--allow-anonymous") as s:
        yield s


page = page_fixture(1500, 1000)


def rows(page: Page) -> Locator:
    return page.locator(".run-summary .tabulator-row")


def cell(page: Page, run: int, column: str) -> Locator:
    """The summary's cell of (experiment 12, run) in ``column``."""
    row = rows(page).filter(
        has=page.locator('.tabulator-cell[tabulator-field="run"]', has_text=re.compile(rf"^{run}$"))
    )
    return row.locator(f'.tabulator-cell[tabulator-field="{column}"]')


def box_of(loc: Locator, seconds: float = 10.0) -> FloatRect:
    """The box of ``loc`` once it has one. Tabulator redraws its rows after the page shows
    them: twice in CI a cell was visible, then had no box (a redrawn row not yet laid out)."""
    deadline = time.monotonic() + seconds
    while (box := loc.bounding_box()) is None and time.monotonic() < deadline:
        loc.page.wait_for_timeout(100)
    assert box is not None, f"{loc} has no box after {seconds} s"
    return box


def header_filter(page: Page, column: str, value: str) -> None:
    box = page.locator(f'.run-summary .tabulator-col[tabulator-field="{column}"] input')
    box.fill(value)
    box.press("Enter")


def totals_of(lumi: LuminosityTable, keys: list[tuple[int, int]]) -> list[str]:
    """The library's totals of the runs ``keys`` as the pages begin to write them: 'Bhabha:
    11.948' (fb^-1, then the error and the unit)."""
    part = LuminosityTable(tuple(r for r in lumi if r.key in set(keys)))
    return [f"{t.column}: {t.lumi_fb:.3f}" for t in part.totals().values()]


def open_summary(page: Page, server: Server, query: str = "") -> None:
    page.goto(server.base + "/runsummary" + query)
    expect(rows(page).first).to_be_visible()
    expect(page.locator(".summary-totals")).to_contain_text("runs")


def shoot(page: Page, name: str) -> Path:
    return shoot_page(page, name, settle_ms=300)


# ------------------------------------------------------------------ totals of what is shown
def test_totals_are_those_of_the_rows_shown(page: Page, server: Server, db_url: str) -> None:
    """Issue 19: the totals ignored the filters. They follow a column filter and the run-type
    choice, and say that they are the totals of the rows shown."""
    db = QADatabase(db_url)
    lumi = db.luminosity()
    runs = db.runs.select(exp=EXP)
    open_summary(page, server)
    totals = page.locator(".summary-totals")
    expect(totals).to_contain_text(f"{len(runs)} runs")
    for text in totals_of(lumi, [r.key for r in runs]):
        expect(totals).to_contain_text(text)
    # a column filter: run 3 only
    header_filter(page, "run", "3")
    expect(rows(page)).to_have_count(1)
    expect(totals).to_contain_text(f"1 of {len(runs)} runs shown")
    for text in totals_of(lumi, [(EXP, 3)]):
        expect(totals).to_contain_text(text)
    expect(totals).to_contain_text("Totals of the rows shown")
    header_filter(page, "run", "")
    expect(rows(page)).to_have_count(len(runs))
    # the run type chosen above the table: physics runs only
    page.locator(".summary-type select").select_option("physics")
    physics = [r.key for r in runs if r.run_type == "physics"]
    expect(rows(page)).to_have_count(len(physics))
    expect(totals).to_contain_text(f"{len(physics)} runs")
    for text in totals_of(lumi, physics):
        expect(totals).to_contain_text(text)
    shoot(page, "runsummary-physics")


# ------------------------------------------------------------------ the three luminosities
def test_three_luminosities_side_by_side_with_the_library_names(
    page: Page, server: Server, lumi: LuminosityTable
) -> None:
    """Recorded (run registry), Bhabha and gamma-gamma luminosity, each its own column under
    the library's name with the library's value; the page says which one a good-run list sums;
    the index page uses the same names and the same totals; the three are side by side on the
    screen of a shift's 1400 px window (the last one was cut off at 1400 px)."""
    page.set_viewport_size({"width": 1400, "height": 900})
    open_summary(page, server)
    heads = page.locator(".run-summary .tabulator-col-title").all_inner_texts()
    for name in LUMINOSITY_COLUMNS:
        assert name in heads
        box = box_of(cell(page, 1, name))
        assert box["x"] + box["width"] <= 1400, (name, box)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400
    for run in (1, 2, 7, COSMIC_RUN):
        measured = lumi.get(EXP, run)
        assert measured is not None
        for name in LUMINOSITY_COLUMNS:
            value = measured.value(name)
            shown = cell(page, run, name).inner_text().strip()
            if value is None:  # not measured: shown as such, never another source's value
                assert shown == "-", (run, name, shown)
            else:
                assert float(shown.replace(",", "")) == pytest.approx(value, abs=5e-4), (run, name)
    totals = page.locator(".summary-totals")
    expect(totals).to_contain_text(f"A good-run list sums the {LUMINOSITY_COLUMNS[0]} luminosity")
    # the index page: the same names, the same totals
    page.goto(server.base + "/")
    summary = page.locator(".summary-qa")
    expect(summary).to_contain_text("runs")
    for text in totals_of(lumi, [r.key for r in lumi]):
        expect(summary).to_contain_text(text)
    expect(summary).to_contain_text(f"good-run lists sum the {LUMINOSITY_COLUMNS[0]}")


# ------------------------------------------------------------------ links and URL state
def test_a_run_links_to_its_views_in_qam_and_signoff(page: Page, server: Server) -> None:
    open_summary(page, server)
    qam = cell(page, 7, "views").locator("a.to-qam")
    signoff = cell(page, 7, "views").locator("a.to-signoff")
    expect(qam).to_have_attribute("href", f"/qam?exp={EXP}&run=7")
    expect(signoff).to_have_attribute("href", f"/signoff?exp={EXP}&run=7")
    qam.click()
    expect(page).to_have_url(re.compile(rf"/qam\?exp={EXP}&run=7(&|$)"))
    expect(page.locator(".bk-Canvas").first).to_be_visible()
    # QAM completes its state in the URL (a view to share); Back still leaves QAM (the
    # completed URL replaced QAM's history entry: pushed, Back went to QAM without it)
    expect(page).to_have_url(re.compile(r"[?&]variable="))
    page.go_back()
    expect(rows(page).first).to_be_visible()
    cell(page, 7, "views").locator("a.to-signoff").click()
    expect(page).to_have_url(f"{server.base}/signoff?exp={EXP}&run=7")
    expect(page.locator(".signoff-grid .tabulator-row").first).to_be_visible()


def test_state_round_trips_through_the_url(page: Page, server: Server, db_url: str) -> None:
    """``/runsummary?exp=12&run_type=cosmic`` opens that view; a choice in the page is written
    to the URL, and the URL reopens it; an unknown experiment is said, not an error."""
    runs = QADatabase(db_url).runs.select(exp=EXP)
    open_summary(page, server, f"?exp={EXP}&run_type=cosmic")
    expect(page.locator(".summary-exp select")).to_have_value(str(EXP))
    expect(page.locator(".summary-type select")).to_have_value("cosmic")
    expect(rows(page)).to_have_count(sum(r.run_type == "cosmic" for r in runs))
    expect(cell(page, COSMIC_RUN, "type").locator(".cosmic-mark")).to_be_visible()
    # a choice in the page goes into the URL ...
    page.locator(".summary-type select").select_option("physics")
    expect(page).to_have_url(re.compile(r"run_type=physics"))
    expect(page).to_have_url(re.compile(rf"exp={EXP}"))
    physics = sum(r.run_type == "physics" for r in runs)
    expect(rows(page)).to_have_count(physics)
    # ... and the URL reopens it
    shared = page.url
    page.goto(shared)
    expect(page.locator(".summary-type select")).to_have_value("physics")
    expect(rows(page)).to_have_count(physics)
    # a URL naming an experiment without runs says so and shows every run
    open_summary(page, server, "?exp=99")
    expect(page.locator(".summary-notice")).to_contain_text("experiment '99' has no runs")
    expect(rows(page)).to_have_count(len(runs))


def test_cosmic_runs_marked_and_the_download_is_primary(
    page: Page, server: Server, db_url: str
) -> None:
    open_summary(page, server)
    cosmic = [r.run for r in QADatabase(db_url).runs.select(exp=EXP) if r.run_type == "cosmic"]
    expect(page.locator(".run-summary .cosmic-mark")).to_have_count(len(cosmic))
    expect(cell(page, COSMIC_RUN, "type")).to_contain_text("cosmic")
    expect(cell(page, 1, "type").locator(".cosmic-mark")).to_have_count(0)
    # the download is the page's primary action
    expect(page.locator(".download-csv button, .download-csv .bk-btn").first).to_have_class(
        re.compile(r"bk-btn-primary")
    )
    path = shoot(page, "runsummary")
    assert path.stat().st_size > 10_000
