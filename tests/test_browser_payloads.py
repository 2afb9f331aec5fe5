"""Browser tests of the payload validation page (``/payloads``): a real ``b2calib serve`` driven
by headless Chromium against a staging tag with a planted outlier (:mod:`tests.review_sample`).

A reviewer opens the staging tag, sees its traffic light, finds the planted outlier in the
outlier table, opens its fit, approves the tag as a manager and downloads it as a local
database; an expert of another detector, a viewer and an anonymous visitor cannot approve.
Screenshots: ``build/test-artifacts/screenshots/payloads-*.png``.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Browser, Page, expect

from b2calib.conditions import ConditionsDB, LocalDatabase
from b2calib.qa.store import QADatabase
from tests.browser_server import Server, page_fixture
from tests.browser_server import shoot as shoot_page
from tests.review_sample import CRATE_NAME, NAME, PLANTED, TAG, USERS, build_database

pytestmark = [
    pytest.mark.ui,
    # Bokeh's ColumnDataSource.from_df calls reset_index(inplace=True), deprecated by pandas 3.1
    pytest.mark.filterwarnings("ignore:The inplace keyword:pandas.errors.Pandas4Warning"),
]

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_MS = 60_000

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_database(tmp_path_factory.mktemp("review") / "review.sqlite")


@pytest.fixture(scope="module")
def server(db_url: str) -> Iterator[Server]:
    with Server(db_url, "--allow-anonymous") as s:
        yield s


page = page_fixture(1400, 1000, timeout_ms=TIMEOUT_MS)


def login(page: Page, server: Server, name: str, path: str = "/payloads") -> None:
    page.goto(server.base + "/login?next=" + path.replace("&", "%26").replace("?", "%3F"))
    page.fill("#username", name)
    page.fill("#password", USERS[name][0])
    page.click("#login-submit")
    expect(page.locator("#whoami")).to_contain_text(name)


def shoot(page: Page, name: str, *, full_page: bool = True) -> None:
    shoot_page(page, f"payloads-{name}", full_page=full_page, settle_ms=1000)


def drawn(page: Page, key: str) -> int:
    return int(page.evaluate(f"Number(document.body.dataset.{key} || 0)"))


def summary_row(page: Page, name: str) -> object:
    return page.locator(".payloads-summary .tabulator-row").filter(
        has=page.locator('.tabulator-cell[tabulator-field="payload"]', has_text=name)
    )


def query(page: Page) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(page.url).query).items()}


# ------------------------------------------------------------- the page without a server
def test_page_builds_without_server_and_library_refusals_are_shown(db_url: str) -> None:
    import panel as pn
    from bokeh.document import Document

    from b2calib.review import reviews
    from b2calib_apps.payloads import Payloads

    db = QADatabase(db_url)
    conditions = ConditionsDB(db_url)
    page = Payloads(db=db)
    doc = Document()
    doc.add_root(pn.Column(page).get_root(doc))
    assert page.tag == TAG  # the staging tag is the page's first choice
    # both payload names of the tag, the page open on the first (the worst, then by name)
    assert page.summary_table.value["payload"].tolist() == [CRATE_NAME, NAME]
    assert page.payload == CRATE_NAME
    assert len(page.source.data["channel"]) == 52
    assert page.approve_button.disabled  # nobody logged in
    page.param.update(payload=NAME)
    assert page.outlier_table.value["channel"].iloc[0] == PLANTED
    assert len(page.source.data["channel"]) == 8736
    page.channel = PLANTED
    assert f"channel {PLANTED}" in page.fit_info.object
    assert 'id="fit-status"' in page.fit_info.object
    assert len(page.fit_hist.data["top"]) > 10
    assert len(page.hist_band.data["x"]) == 100  # the history over the tag's IoVs
    assert page.hist_chan.data["value"][0] > 9.0  # the planted crystal, 10 ns off throughout
    # an expert of another detector: the button is disabled, with the library's reason
    alice = db.users.get("alice")
    p = Payloads(db=db, user=alice, tag=TAG)
    assert p.approve_button.disabled
    assert "alice" in p.review_note.object
    assert "ECL" in p.review_note.object
    # a click that reaches the server anyway is refused by the library, and said so
    p.review_comment.value = "not hers to approve"
    p._review_tag("approve")
    assert p.review_message.object.startswith("Refused: ")
    assert conditions.tag(TAG).state == "TESTING"
    assert reviews(conditions, TAG) == []
    # the manager rejects (a comment is required): back to OPEN, recorded
    boss = Payloads(db=db, user=db.users.get("boss"), tag=TAG)
    assert not boss.reject_button.disabled
    boss._review_tag("reject")
    assert "comment is required" in boss.review_message.object
    boss.review_comment.value = "crystal 4242 first (test)"
    boss._review_tag("reject")
    assert boss.review_message.object.endswith("reject by boss (manager), TESTING → OPEN.")
    assert conditions.tag(TAG).state == "OPEN"
    assert boss.reviews_table.value["action"].tolist() == ["reject"]
    assert boss.approve_button.disabled  # OPEN: nothing to approve
    conditions.set_state(TAG, "TESTING")  # staged again, for the tests below


# ----------------------------------------------------------- the reviewer's walk through
def test_manager_finds_planted_outlier_opens_fit_approves_and_downloads(
    page: Page, server: Server, db_url: str
) -> None:
    conditions = ConditionsDB(db_url)
    login(page, server, "boss")
    # the staging tag comes first, with its traffic light
    expect(page.locator(".payloads-tag select")).to_have_value(f"{TAG} (TESTING)")
    expect(page.locator("#tag-state")).to_have_text("TESTING")
    row = summary_row(page, NAME)
    expect(row).to_have_count(1)
    expect(row.locator('.tabulator-cell[tabulator-field="light"]')).to_have_text(
        re.compile("^(green|amber|red|grey)$")
    )
    expect(row.locator('.tabulator-cell[tabulator-field="calibration"]')).to_have_text("ecl-time")
    expect(row.locator('.tabulator-cell[tabulator-field="detector"]')).to_have_text("ECL")
    shoot(page, "tag")
    # one payload: its channels, the planted outlier first in the outlier table
    before = drawn(page, "payloadDrawn")
    row.locator('.tabulator-cell[tabulator-field="payload"]').click()
    expect(page.locator("#payload-title")).to_contain_text(f"{NAME} revision")
    expect(page.locator("#payload-title")).to_contain_text("20,100,20,100")
    expect(page.locator("#previous-source")).to_contain_text("review_previous")
    page.wait_for_function(f"Number(document.body.dataset.payloadDrawn || 0) > {before}")
    first = page.locator(".payloads-outliers .tabulator-row").first
    expect(first.locator('.tabulator-cell[tabulator-field="channel"]')).to_have_text(
        re.compile(rf"^{PLANTED:,}$|^{PLANTED}$")
    )
    assert query(page)["payload"] == NAME
    shoot(page, "payload")
    # its fit: the histogram, the model, the status
    first.locator('.tabulator-cell[tabulator-field="channel"]').click()
    expect(page.locator("#channel-head")).to_contain_text(f"channel {PLANTED}")
    expect(page.locator("#fit-status")).to_have_text("OK")
    expect(page.locator("#fit-parameters")).to_contain_text("mu")
    expect(page.locator("#history-head")).to_contain_text("100 IoVs")
    # the URL follows the click (a moment later on a loaded machine)
    page.wait_for_function(f"new URLSearchParams(location.search).get('channel') === '{PLANTED}'")
    shoot(page, "drilldown")
    # approve as the manager: VALIDATED, with the review recorded
    page.locator(".review-comment textarea").fill("planted outlier understood (test)")
    page.locator(".review-comment textarea").press("Tab")
    page.locator(".approve-tag button").click()
    expect(page.locator(".review-message")).to_contain_text("approve by boss (manager)")
    expect(page.locator("#tag-state")).to_have_text("VALIDATED")
    expect(page.locator(".reviews-table .tabulator-row")).to_have_count(2)  # reject, approve
    expect(page.locator(".reviews-table")).to_contain_text("planted outlier understood (test)")
    assert conditions.tag(TAG).state == "VALIDATED"
    from b2calib.review import reviews

    rejected, r = reviews(conditions, TAG)
    assert rejected.action == "reject"
    assert (r.user, r.role, r.action, r.state_from, r.state_to) == (
        "boss", "manager", "approve", "TESTING", "VALIDATED",
    )  # fmt: skip
    shoot(page, "approved")
    # the local database: database.txt and the files are the tag's
    with page.expect_download() as download:
        page.locator(".download-zip button").click()
    assert download.value.suggested_filename == f"{TAG}.zip"
    data = Path(download.value.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        assert "database.txt" in names
        out = Path(download.value.path()).parent / "unzipped"
        zf.extractall(out)
    local = LocalDatabase(out)
    expected = {(e.name, e.payload.revision, str(e.iov)) for e in conditions.iovs(TAG)}
    got = {(e.name, e.revision, str(e.iov)) for e in local.entries()}
    assert got == expected
    assert names == {"database.txt"} | {e.filename for e in local.entries()}
    for e in local.entries():
        stored = conditions.payload_bytes(conditions.payload_info(e.name, e.revision))
        assert (out / e.filename).read_bytes() == stored


def test_link_reopens_the_same_view_and_clicks_pick_channels(page: Page, server: Server) -> None:
    path = (
        f"/payloads?tag={TAG}&payload={NAME}&channel=17&threshold=8&iov=20,50,20,50&previous=rev:50"
    )
    page.goto(server.base + path)
    expect(page.locator("#payload-title")).to_contain_text("revision 51 [20,50,20,50]")
    expect(page.locator("#previous-source")).to_have_text("revision 50")
    expect(page.locator("#channel-head")).to_contain_text("channel 17")
    expect(page.locator(".outlier-threshold input")).to_have_value("8")
    expect(page.locator(".outlier-info")).to_contain_text("|pull| > 8")
    q = query(page)
    assert (q["tag"], q["payload"], q["channel"], q["iov"]) == (TAG, NAME, "17", "20,50,20,50")
    assert q["previous"] == "rev:50"
    # compared with another tag instead: the one it replaces, picked by name
    page.locator(".previous-select select").select_option(label="tag review_previous")
    expect(page.locator("#previous-source")).to_contain_text("review_previous [20,0,-1,-1]")
    expect(page).to_have_url(
        re.compile("previous=tag%3Areview_previous|previous=tag:review_previous")
    )
    # a click on the detector map (its middle) or on the value plot opens that channel's fit
    canvases = page.locator(".bk-Canvas")
    box = canvases.nth(1).bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5)
    expect(page.locator("#channel-head")).not_to_contain_text("channel 17")
    mapped = page.locator("#channel-head").inner_text()
    box = canvases.nth(0).bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    expect(page.locator("#channel-head")).not_to_have_text(mapped)
    expect(page.locator("#channel-head")).to_contain_text(f"{NAME} channel ")
    assert query(page)["channel"] != "17"


def test_expert_of_another_detector_viewer_and_anonymous_cannot_approve(
    browser: Browser, server: Server, db_url: str
) -> None:
    conditions = ConditionsDB(db_url)
    state = conditions.tag(TAG).state
    for who in ("alice", "vic", None):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        if who is None:
            page.goto(server.base + f"/payloads?tag={TAG}")
            expect(page.locator("#whoami")).to_contain_text("anonymous")
        else:
            login(page, server, who, path=f"/payloads?tag={TAG}")
        expect(page.locator(".payloads-tag select")).to_have_value(re.compile(f"^{TAG} "))
        expect(page.locator(".approve-tag button")).to_be_disabled()
        expect(page.locator(".reject-tag button")).to_be_disabled()
        refusal = page.locator("#review-refusal")
        if who == "alice":
            expect(refusal).to_contain_text("alice")
            expect(refusal).to_contain_text("detectors: ECL")
            shoot(page, "refused", full_page=False)
        elif who is None:
            expect(refusal).to_contain_text("Read only")
        else:
            expect(refusal).not_to_be_empty()
        context.close()
    assert conditions.tag(TAG).state == state


# ------------------------------ the committed sample's prompt loop (its planted outlier)
@pytest.fixture(scope="module")
def sample_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.review_fixture import prepare_review_database

    return prepare_review_database(tmp_path_factory.mktemp("sample") / "review.sqlite")


def test_sample_prompt_loop_planted_crate_found_and_approved(
    browser: Browser, sample_url: str
) -> None:
    """The prompt loop over the committed sample staged prompt_bucket1 (CDC and ECL): the
    crate the simulator planted 4 ns off is the outlier of ECLCrateTimeOffset, its fit opens;
    the ECL expert may not approve a tag with CDC payloads, the manager does, and downloads it."""
    from tests.review_fixture import PLANTED, REVIEW_USERS, STAGING_TAG

    conditions = ConditionsDB(sample_url)
    assert conditions.tag(STAGING_TAG).state == "TESTING"
    name, crate, iov = PLANTED["payload"], PLANTED["channel"], PLANTED["iov"]
    with Server(sample_url) as server:
        context = browser.new_context(
            viewport={"width": 1400, "height": 1000}, accept_downloads=True
        )
        page = context.new_page()
        path = f"/payloads?tag={STAGING_TAG}&payload={name}&iov={iov}"

        def log_in(user: str) -> None:
            page.goto(server.base + "/login?next=" + path.replace("?", "%3F").replace("&", "%26"))
            page.fill("#username", user)
            page.fill("#password", REVIEW_USERS[user][0])
            page.click("#login-submit")
            expect(page.locator("#whoami")).to_contain_text(user)

        log_in("erin")  # ECL expert: the tag holds CDC payloads too
        expect(page.locator("#payload-title")).to_contain_text(f"{name} revision")
        expect(page.locator(".approve-tag button")).to_be_disabled()
        expect(page.locator("#review-refusal")).to_contain_text("CDC")
        first = page.locator(".payloads-outliers .tabulator-row").first
        expect(first.locator('.tabulator-cell[tabulator-field="channel"]')).to_have_text(str(crate))
        first.locator('.tabulator-cell[tabulator-field="channel"]').click()
        expect(page.locator("#channel-head")).to_contain_text(f"{name} channel {crate}")
        expect(page.locator("#fit-status")).not_to_be_empty()
        shoot(page, "sample-planted-crate")
        page.context.clear_cookies()
        log_in("boss")
        expect(summary_row(page, name)).to_have_count(1)
        page.locator(".review-comment textarea").fill("crate 28 understood (test)")
        page.locator(".review-comment textarea").press("Tab")
        page.locator(".approve-tag button").click()
        expect(page.locator("#tag-state")).to_have_text("VALIDATED")
        with page.expect_download() as download:
            page.locator(".download-zip button").click()
        with zipfile.ZipFile(download.value.path()) as zf:
            listed = zf.read("database.txt").decode()
            names = set(zf.namelist())
        context.close()
    entries = conditions.iovs(STAGING_TAG)
    assert names == {"database.txt"} | {
        f"dbstore_{e.name}_rev_{e.payload.revision}.root" for e in entries
    }
    assert len([line for line in listed.splitlines() if line.strip()]) == len(entries)
    assert conditions.tag(STAGING_TAG).state == "VALIDATED"
