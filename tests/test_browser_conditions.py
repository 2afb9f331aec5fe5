"""Browser tests of the workbench's index and of the conditions browser: a real ``b2calib serve``
driven by headless Chromium (as tests/test_browser.py) against a database holding the sample's
runs and QA (tests/browser_server.py) and its conditions:

* ``sim_truth``: the committed sample's truth (``b2calib db import-local``);
* ``prompt_test`` (TESTING): a new revision of ``CDCTimeZeros`` for runs 12/7-12 only, the
  staging tag of a calibration;
* ``candidate``: ``prompt_test`` merged over ``sim_truth``: from ``sim_truth`` to it exactly one
  payload IoV changed.

Screenshots: ``build/test-artifacts/screenshots/index.png`` and ``conditions-*.png``; the
README's are taken at 1280x800 (``make screenshots`` copies them to docs/screenshots).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from playwright.sync_api import Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from b2calib.conditions import ConditionsDB, IoV
from b2calib_apps.serve import APPS
from tests.browser_server import (
    TIMEOUT_MS,
    Server,
    page_fixture,
    prepare_database,
)
from tests.browser_server import shoot as shoot_page

pytestmark = pytest.mark.ui

REPO = Path(__file__).resolve().parent.parent
#: The README's screenshots: a laptop's window.
README_VIEWPORT = {"width": 1280, "height": 800}
CHANGED = "CDCTimeZeros"

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def db_url(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("workbench") / "workbench.sqlite"
    url = prepare_database(sample, path)
    # the truth through the command line, as the demo does
    subprocess.run(
        [sys.executable, "-c", "from b2calib.cli import main; main()", "db", "import-local",
         str((sample / "truth").relative_to(REPO)), "--gt", "sim_truth", "--db", url],
        check=True, capture_output=True, cwd=REPO,
    )  # fmt: skip
    db = ConditionsDB(url, author="test")
    old = db.payload(CHANGED, 2)
    new = dataclasses.replace(old, values={k: v + 0.25 for k, v in old.values.items()})
    db.create_tag("prompt_test", description="staging tag of a CDC calibration")
    db.upload_and_add("prompt_test", [(new, IoV(12, 7, 12, 12))])
    db.set_state("prompt_test", "TESTING")
    db.merge("candidate", ["prompt_test", "sim_truth"], description="prompt_test over sim_truth")
    db.close()
    return url


@pytest.fixture(scope="module")
def conditions(db_url: str) -> Iterator[ConditionsDB]:
    db = ConditionsDB(db_url)
    yield db
    db.close()


@pytest.fixture(scope="module")
def server(db_url: str) -> Iterator[Server]:
    with Server(db_url, "--allow-anonymous") as s:
        yield s


page = page_fixture(README_VIEWPORT["width"], README_VIEWPORT["height"])


def shoot(page: Page, name: str, *, full_page: bool = False) -> None:
    shoot_page(page, name, full_page=full_page)


_BARS_JS = """() => {
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
    const r = doc.get_model_by_name("iov-bars")
    if (r != null) {
      const d = r.data_source.data
      const get = (k) => Array.from(d instanceof Map ? d.get(k) : d[k])
      const out = {}
      for (const k of ["name", "revision", "iov", "checksum", "x0", "x1"]) out[k] = get(k)
      return out
    }
  }
  return null
}"""


def bars(page: Page, tag: str, n: int) -> dict[str, list]:
    """The data of the IoV chart's bars of ``tag`` (``n`` IoVs), as the browser holds it
    (waits for the page to show that tag)."""
    expect(page.locator("#tag-title")).to_contain_text(f"{tag} (")
    page.wait_for_function(
        f"() => {{ const d = ({_BARS_JS})(); return d && d.name.length == {n} }}"
    )
    data: dict[str, list] = page.evaluate(_BARS_JS)
    return data


def table_rows(page: Page, css: str) -> list[dict[str, str]]:
    """The rows a Tabulator shows (its current page), field -> text."""
    rows = page.locator(f"{css} .tabulator-row")
    out = []
    for i in range(rows.count()):
        cells = rows.nth(i).locator(".tabulator-cell")
        out.append(
            {
                str(cells.nth(j).get_attribute("tabulator-field")): cells.nth(j).inner_text()
                for j in range(cells.count())
            }
        )
    return out


def chosen(page: Page) -> Locator:
    """The tags of the stack as the page shows them."""
    return page.locator(".stack-choice .choices__list--multiple .choices__item")


def wait_for_stack(page: Page, stack: str) -> None:
    """Wait until the server has taken the stack (it is in the URL)."""
    want = urlencode({"stack": stack})
    page.wait_for_function(f"() => window.location.search.includes({want!r})")


def add_to_stack(page: Page, tag: str) -> None:
    """Append ``tag`` to the stack in the page (its multi-choice widget)."""
    option = page.locator(".stack-choice .choices__list--dropdown .choices__item", has_text=tag)
    for attempt in range(3):  # the server may redraw the widget's choices as it opens
        page.locator(".stack-choice input.choices__input--cloned").click()
        try:
            option.first.click(timeout=3000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
    page.keyboard.press("Escape")


def html_rows(page: Page, css: str) -> list[dict[str, str]]:
    """The rows of one of the page's HTML tables (lookup, diff), field -> text."""
    rows: list[dict[str, str]] = page.locator(f"table.{css}").evaluate(
        """t => Array.from(t.querySelectorAll("tbody tr")).map(tr => Object.fromEntries(
             Array.from(tr.querySelectorAll("td")).map(td => [td.dataset.field, td.innerText])))"""
    )
    return rows


def query(page: Page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


# ------------------------------------------------------------------------------ the index
def test_index_links_every_app(page: Page, server: Server) -> None:
    page.goto(server.base + "/")
    expect(page).to_have_title("b2calib workbench")
    cards = page.locator("a.app-card")
    expect(cards).to_have_count(5)
    hrefs = [cards.nth(i).get_attribute("href") for i in range(5)]
    # in the order a run goes through them: data quality, then its calibration's payloads
    assert hrefs == ["/qam", "/signoff", "/runsummary", "/payloads", "/conditions"]
    # the conditions side of the summary: the tags, the one waiting for review, linked
    summary = page.locator(".summary-cond")
    expect(summary).to_contain_text("3 global tags")
    expect(summary).to_contain_text("waiting for review (TESTING): prompt_test")
    assert summary.locator("a", has_text="prompt_test").get_attribute("href") == (
        "/payloads?tag=prompt_test"
    )
    expect(page.locator(".summary-qa")).to_contain_text("runs in experiment 12")
    shoot(page, "index")
    payloads_built = importlib.util.find_spec("b2calib_apps.payloads") is not None
    for href in hrefs:
        if href == "/payloads" and not payloads_built:
            continue  # the payload-validation app comes from another branch
        response = page.goto(server.base + href)
        assert response is not None
        assert response.status == 200, href
        expect(page).to_have_title(APPS[href.strip("/")][0])
        # every page's header leads back to the index
        expect(page.locator('a[href="/"]').first).to_be_attached()
    page.goto(server.base + "/conditions")
    page.locator('a[title^="b2calib workbench"]').click()
    expect(page).to_have_title("b2calib workbench")


# ---------------------------------------------------------------------- the conditions page
def test_tags_and_a_tag_s_iovs_on_the_run_axis(
    page: Page, server: Server, conditions: ConditionsDB
) -> None:
    page.goto(server.base + "/conditions?tag=sim_truth")
    expect(page).to_have_title("b2calib conditions")
    rows = page.locator(".tags-table .tabulator-row")
    expect(rows).to_have_count(3)
    shown = {r["name"]: r for r in table_rows(page, ".tags-table")}
    assert set(shown) == {"sim_truth", "prompt_test", "candidate"}
    sizes = conditions.tag_sizes()
    for name, row in shown.items():
        assert row["state"] == conditions.tag(name).state
        assert int(row["IoVs"]) == sizes[name].iovs
        assert int(row["payloads"]) == sizes[name].payloads
    expect(page.locator("#tag-title")).to_contain_text("sim_truth (DEV, OPEN: 85 IoVs")
    # the chart draws every IoV of the tag, each from its first to its last run
    entries = conditions.iovs("sim_truth")
    data = bars(page, "sim_truth", len(entries))
    assert data["name"] == [e.name for e in entries]
    assert data["revision"] == [e.payload.revision for e in entries]
    assert data["iov"] == [str(e.iov) for e in entries]
    assert data["checksum"] == [e.payload.checksum for e in entries]
    widths = [b - a for a, b in zip(data["x0"], data["x1"], strict=True)]
    assert widths == [e.iov.final_run - e.iov.first_run + 1 for e in entries]
    shoot(page, "conditions-tag")
    # another tag chosen in the page: the chart and the URL follow
    page.locator(
        '.tags-table .tabulator-cell[tabulator-field="name"]', has_text=re.compile("^prompt_test$")
    ).click()
    expect(page.locator("#tag-title")).to_contain_text("prompt_test (DEV, TESTING: 1 IoVs")
    page.wait_for_function("() => window.location.search.includes('tag=prompt_test')")
    data = bars(page, "prompt_test", 1)
    assert data["name"] == [CHANGED]
    assert data["iov"] == ["12,7,12,12"]
    # the tag's history
    page.locator(".bk-tab", has_text="History").click()
    history = page.locator(".tag-history")
    expect(history).to_contain_text("create")
    expect(history).to_contain_text("add_iov")
    expect(history).to_contain_text("TESTING")


def test_lookup_through_a_stack_names_the_tag_each_payload_comes_from(
    page: Page, server: Server, conditions: ConditionsDB
) -> None:
    page.goto(server.base + "/conditions?tag=sim_truth")
    # run 12/9 through prompt_test first, then sim_truth, chosen in the page
    page.locator(".exp-input input").fill("12")
    page.locator(".exp-input input").press("Enter")
    page.locator(".run-input input").fill("9")
    page.locator(".run-input input").press("Enter")
    # the stack starts as the tag shown; put prompt_test in front of it
    expect(chosen(page)).to_have_count(1)
    add_to_stack(page, "prompt_test")
    wait_for_stack(page, "sim_truth,prompt_test")
    chosen(page).filter(has_text="sim_truth").locator(".choices__button").click()
    wait_for_stack(page, "prompt_test")
    add_to_stack(page, "sim_truth")
    wait_for_stack(page, "prompt_test,sim_truth")
    expect(chosen(page)).to_have_count(2)
    summary = page.locator("#lookup-summary")
    expect(summary).to_contain_text("Run 12/9 through prompt_test → sim_truth")
    want = conditions.lookup(12, 9, ["prompt_test", "sim_truth"])
    expect(summary).to_contain_text(f"{len(want)} payloads (1 from prompt_test,")
    expect(page.locator("table.lookup-table tbody tr")).to_have_count(len(want))
    rows = {r["payload"]: r for r in html_rows(page, "lookup-table")}
    assert set(rows) == set(want)
    new = rows[CHANGED]
    assert new["from tag"] == "prompt_test"
    assert int(new["revision"]) == want[CHANGED].payload.revision == 3
    assert new["IoV"] == "12,7,12,12"
    assert new["shadowed"] == "sim_truth rev 2 [12,7,12,12]"
    for name, e in want.items():
        assert rows[name]["from tag"] == e.globaltag
        assert int(rows[name]["revision"]) == e.payload.revision
    assert query(page)["stack"] == "prompt_test,sim_truth"
    assert (query(page)["exp"], query(page)["run"]) == ("12", "9")
    shoot(page, "conditions-lookup", full_page=True)
    # before run 7 the staging tag has nothing: sim_truth's first revision applies
    page.locator(".run-input input").fill("3")
    page.locator(".run-input input").press("Enter")
    expect(summary).to_contain_text("Run 12/3 through prompt_test → sim_truth")
    expect(summary).to_contain_text("0 from prompt_test")
    row = page.locator("table.lookup-table tbody tr").filter(has_text=CHANGED)
    expect(row.locator('[data-field="from tag"]')).to_have_text("sim_truth")
    rows = {r["payload"]: r for r in html_rows(page, "lookup-table")}
    assert (rows[CHANGED]["from tag"], rows[CHANGED]["revision"]) == ("sim_truth", "1")


def test_diff_of_two_tags_links_a_changed_payload_to_its_validation(
    page: Page, server: Server, conditions: ConditionsDB
) -> None:
    page.goto(server.base + "/conditions?tag=candidate")
    page.locator(".diff-a select").select_option("sim_truth")
    page.locator(".diff-b select").select_option("candidate")
    head = page.locator("#diff-summary")
    expect(head).to_contain_text("From sim_truth to candidate: 0 IoVs added, 0 removed, 1 changed")
    d = conditions.diff("sim_truth", "candidate")
    assert [(a[0], str(a[1]), a[2].revision, b[2].revision) for a, b in d.changed] == [
        (CHANGED, "12,7,12,12", 2, 3)
    ]
    expect(page.locator("table.diff-table tbody tr")).to_have_count(1)
    rows = html_rows(page, "diff-table")
    assert [(r["change"], r["payload"], r["rev A"], r["rev B"]) for r in rows] == [
        ("changed", CHANGED, "2", "3")
    ]
    link = page.locator("table.diff-table a.validation-link")
    expect(link).to_have_count(1)
    # the validation view of the new revision's IoV against the first tag's payload
    assert link.get_attribute("href") == (
        f"/payloads?tag=candidate&payload={CHANGED}&iov=12%2C7%2C12%2C12&previous=tag%3Asim_truth"
    )
    assert query(page)["diff"] == "sim_truth..candidate"
    shoot(page, "conditions-diff", full_page=True)
    # the other way round, against the staging tag alone: removed IoVs, the changed one
    page.goto(server.base + "/conditions?diff=sim_truth..prompt_test")
    expect(head).to_contain_text(
        "From sim_truth to prompt_test: 0 IoVs added, 84 removed, 1 changed"
    )


def test_the_url_carries_the_state(page: Page, server: Server) -> None:
    page.goto(
        server.base + "/conditions?tag=candidate&exp=12&run=8&stack=prompt_test,sim_truth"
        "&diff=sim_truth..candidate"
    )
    expect(page.locator("#tag-title")).to_contain_text("candidate (DEV, OPEN")
    expect(page.locator(".tag-select select")).to_have_value("candidate")
    expect(page.locator(".exp-input input")).to_have_value("12")
    expect(page.locator(".run-input input")).to_have_value("8")
    expect(page.locator("#lookup-summary")).to_contain_text(
        "Run 12/8 through prompt_test → sim_truth"
    )
    # the stack shows in its order
    expect(chosen(page)).to_have_count(2)
    assert [re.sub(r"Remove item.*", "", t).strip() for t in chosen(page).all_inner_texts()] == [
        "prompt_test",
        "sim_truth",
    ]
    expect(page.locator("#diff-summary")).to_contain_text("1 changed")
    assert {r["name"] for r in table_rows(page, ".tags-table")} >= {"candidate"}
    shoot(page, "conditions")
    # a tag that does not exist is named, not a broken page
    page.goto(server.base + "/conditions?tag=nope")
    expect(page.get_by_text("global tag 'nope' does not exist")).to_be_visible()


# ------------------------------------------------------------------ the viewer, no server
# Bokeh's ColumnDataSource.from_df calls reset_index(inplace=True), deprecated by pandas 3.1
@pytest.mark.filterwarnings("ignore:The inplace keyword:pandas.errors.Pandas4Warning")
def test_viewer_without_server_names_what_is_missing(db_url: str) -> None:
    import panel as pn
    from bokeh.document import Document

    from b2calib_apps.conditions import Conditions
    from b2calib_apps.index import Index

    db = ConditionsDB(db_url)
    viewer = Conditions(db=db, tag="sim_truth", exp=12, run=9, stack="prompt_test,sim_truth")
    doc = Document()
    doc.add_root(pn.Column(viewer).get_root(doc))
    assert "24 payloads (1 from prompt_test, 23 from sim_truth)" in viewer.lookup_head.object
    assert 'data-field="from tag">prompt_test</td>' in viewer.lookup_table.object
    # a stack naming a tag that does not exist: said, nothing listed
    viewer.stack = "prompt_test,<b>nope</b>"
    assert viewer.message.visible
    assert "global tag &#x27;&lt;b&gt;nope&lt;/b&gt;&#x27; does not exist" in viewer.message.object
    assert viewer.lookup_table.object == ""
    viewer.diff = "sim_truth..candidate"
    assert not viewer.message.visible
    assert viewer.diff_table.object.count('class="validation-link"') == 1
    from b2calib.qa.store import QADatabase

    index = Index(db=QADatabase(db_url), conditions=db)
    assert 'waiting for review (TESTING): <b><a href="/payloads?tag=prompt_test">' in (
        index.conditions_summary()
    )
    db.close()
