"""Browser tests of the served dashboards: a real ``b2calib serve`` driven by headless Chromium
(Debian's package, through Playwright's sync API) against a QA database made from the sample.

Screenshots of every app, and of a page that lost its server, are written to
``build/test-artifacts/screenshots``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import scipy.stats
from playwright.sync_api import Browser, Locator, Page, Route, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from b2calib.qa.store import QADatabase
from b2calib_apps.auth import SESSION_COOKIE
from tests.browser_server import (
    SCREENSHOTS,
    TIMEOUT_MS,
    USERS,
    Server,
    grid_cell,
    open_cell,
    prepare_database,
    shoot,
)
from tests.browser_server import login as login_as

pytestmark = pytest.mark.ui

REPO = Path(__file__).resolve().parent.parent

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def db_url(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return prepare_database(sample, tmp_path_factory.mktemp("qa") / "qa.sqlite")


@pytest.fixture(scope="module")
def server(db_url: str) -> Iterator[Server]:
    with Server(db_url) as s:
        yield s


def login(page: Page, server: Server, name: str, path: str = "/signoff") -> None:
    """Open ``path``, get sent to the login page, log in and land on ``path``."""
    login_as(page, server, name, USERS[name][0], path)
    expect(page).to_have_url(server.base + path)


def set_flag(page: Page, flag: str, comment: str) -> None:
    page.locator(".flag-select select").select_option(flag)
    page.locator(".flag-comment textarea").fill(comment)
    page.locator(".flag-comment textarea").press("Tab")
    page.locator(".set-flag button").click()


# ------------------------------------------------------------- the apps without a server
# Bokeh's ColumnDataSource.from_df calls reset_index(inplace=True), deprecated by pandas 3.1
@pytest.mark.filterwarnings("ignore:The inplace keyword:pandas.errors.Pandas4Warning")
def test_viewers_build_without_server_and_library_refusals_are_shown(db_url: str) -> None:
    import panel as pn
    from bokeh.document import Document

    from b2calib_apps.index import Index
    from b2calib_apps.qam import QAM
    from b2calib_apps.runsummary import RunSummary
    from b2calib_apps.signoff import SignOff, cell_flag

    db = QADatabase(db_url)
    for cls in (Index, QAM, SignOff, RunSummary):
        viewer = cls(db=db)
        doc = Document()
        doc.add_root(pn.Column(viewer).get_root(doc))
        assert doc.roots
    # outside a server nobody is logged in unless the caller says who writes
    assert SignOff(db=db).user is None
    alice = db.users.get("alice")
    s = SignOff(db=db, user=alice)
    before = db.certification.flag_history(12, 10, "ECL")
    s.selected = (12, 10, "ECL")
    assert s.set_button.disabled
    # a click that reaches the server anyway is refused by the library, and said so
    s.flag_select.value = "BAD"
    s.comment.value = "not hers to set"
    s.set_button.clicks += 1
    assert s.message.object.startswith("Refused: ")
    assert s.message.alert_type == "danger"
    assert db.certification.flag_history(12, 10, "ECL") == before
    # her own detector: written, with her as the author
    s.selected = (12, 10, "CDC")
    s.flag_select.value = "RECOVERABLE"
    s.comment.value = "recoverable after the CDC t0 recalibration"
    s.set_button.clicks += 1
    entry = db.certification.flags(12, 10)["CDC"]
    assert (entry.flag, entry.author) == ("RECOVERABLE", "alice")
    assert cell_flag(s.grid.value.set_index("run").at[10, "CDC"]) == "RECOVERABLE"


# ------------------------------------------------------------------------------- login
def test_login_required_and_wrong_password_refused(page: Page, server: Server) -> None:
    for path in ("/", "/qam", "/signoff", "/runsummary"):
        page.goto(server.base + path)
        expect(page).to_have_url(re.compile(r"/login\?next="))
    page.fill("#username", "alice")
    page.fill("#password", "not-her-password")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_have_text("Wrong user name or password.")
    page.fill("#username", "nobody")
    page.fill("#password", "whatever-it-is")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_be_visible()
    assert not [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    page.goto(server.base + "/signoff")  # still not logged in
    expect(page).to_have_url(re.compile(r"/login\?next="))
    # a forged, unsigned cookie does not log anybody in
    page.context.add_cookies([{"name": SESSION_COOKIE, "value": "boss", "url": server.base}])
    page.context.add_cookies([{"name": "user", "value": "boss", "url": server.base}])
    page.context.add_cookies([{"name": "is_guest", "value": "1", "url": server.base}])
    page.goto(server.base + "/signoff")
    expect(page).to_have_url(re.compile(r"/login\?next="))


def test_login_post_needs_the_form_token_and_failures_are_throttled(
    page: Page, db_url: str
) -> None:
    # its own server: the failures below lock this client's address out for a while
    with Server(db_url) as own:
        login_url = own.base + "/login"
        page.goto(login_url)
        xsrf = [c for c in page.context.cookies() if c["name"] == "_xsrf"]
        assert len(xsrf) == 1
        assert xsrf[0]["httpOnly"]
        assert xsrf[0]["sameSite"] == "Lax"
        token = page.locator('input[name="_xsrf"]').get_attribute("value")
        assert token
        right: dict[str, str | float | bool] = {"username": "alice", "password": USERS["alice"][0]}
        no_token = [
            right,
            {**right, "_xsrf": "2|00000000|" + "0" * 32 + "|0"},
        ]
        for form in no_token:  # the right password without the token, or with a wrong one
            refused = page.request.post(login_url, form=form, max_redirects=0)
            assert refused.status == 403
            assert "came from another site" in refused.text()
            assert not [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
        # another site's page posting the form, even with this page's token, is refused: its
        # POST does not carry the Lax cookie the token must match
        forged = (
            f'<form id="f" method="post" action="{login_url}">'
            + "".join(f'<input name="{k}" value="{v}">' for k, v in right.items())
            + f'<input name="_xsrf" value="{token}"></form>'
            + '<script>document.getElementById("f").submit()</script>'
        )
        with page.expect_navigation(url=login_url):
            page.goto("data:text/html," + forged)
        expect(page.locator("#login-error")).to_contain_text("came from another site")
        assert not [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
        # the form itself logs in
        login(page, own, "alice", path="/")
        # five failures from this address: then even the right password is refused, unchecked
        page.context.clear_cookies()
        page.goto(login_url)
        for _ in range(5):
            page.fill("#username", "nobody")
            page.fill("#password", "guess-what")
            page.click("#login-submit")
            expect(page.locator("#login-error")).to_have_text("Wrong user name or password.")
        page.fill("#username", "alice")
        page.fill("#password", USERS["alice"][0])
        page.click("#login-submit")
        expect(page.locator("#login-error")).to_have_text(
            "Too many failed logins: please try again in 30 s."
        )
        assert not [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]


# ------------------------------------------------------------- flags, history, restart
def test_expert_sets_flag_seen_in_grid_history_and_after_restart(
    browser: Browser, db_url: str
) -> None:
    db = QADatabase(db_url)
    comment = "CDC HV trip in layer 12 (test)"
    with Server(db_url) as first:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        login(page, first, "alice")
        open_cell(page, 3, "CDC")
        expect(page.locator(".set-flag button")).to_be_enabled()
        set_flag(page, "BAD", comment)
        expect(page.locator(".signoff-message")).to_contain_text(
            "CDC of run 12/3 set to BAD by alice"
        )
        expect(grid_cell(page, 3, "CDC").locator(".so-flag")).to_have_text("BAD")
        history = page.locator(".flag-history")
        expect(history).to_contain_text(comment)
        expect(history).to_contain_text("alice")
        expect(page.locator("#current-flag")).to_have_text("BAD")
        context.close()
    # the library recorded it with the logged-in author
    entry = db.certification.flags(12, 3)["CDC"]
    assert (entry.flag, entry.author, entry.comment) == ("BAD", "alice", comment)
    with Server(db_url) as second:  # a new server process (new cookie secret: log in again)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        login(page, second, "vic")
        expect(grid_cell(page, 3, "CDC").locator(".so-flag")).to_have_text("BAD")
        open_cell(page, 3, "CDC")
        expect(page.locator(".flag-history")).to_contain_text(comment)
        expect(page.locator(".set-flag button")).to_be_disabled()  # a viewer never writes
        context.close()


def test_expert_refused_on_another_detector(page: Page, server: Server, db_url: str) -> None:
    db = QADatabase(db_url)
    login(page, server, "alice")
    open_cell(page, 4, "ECL")
    expect(page.locator(".set-flag button")).to_be_disabled()
    expect(page.locator(".flag-select select")).to_be_disabled()
    expect(page.locator(".signoff-message")).to_contain_text(
        "alice (expert of CDC) may not flag ECL"
    )
    expect(page.locator(".complete-run button")).to_be_disabled()  # managers only
    page.locator(".bk-tab", has_text="Good-run lists").click()
    expect(page.locator(".grl-make button")).to_be_disabled()
    page.locator(".bk-tab", has_text="Certification").click()
    # her own detector of the same run is open to her
    open_cell(page, 4, "CDC")
    expect(page.locator(".set-flag button")).to_be_enabled()
    assert db.certification.flag_history(12, 4, "ECL") == []
    # logging out ends the login
    page.locator("#logout-link").click()
    expect(page.locator("#logged-out")).to_be_visible()
    page.goto(server.base + "/signoff")
    expect(page).to_have_url(re.compile(r"/login\?next="))


def test_anonymous_reads_but_never_writes(page: Page, db_url: str) -> None:
    db = QADatabase(db_url)
    before = db.certification.flag_history(12, 5)
    with Server(db_url, "--allow-anonymous") as anon:
        page.goto(anon.base + "/signoff")
        expect(page).to_have_url(anon.base + "/signoff")
        expect(page.locator("#whoami")).to_contain_text("anonymous (read only)")
        open_cell(page, 5, "CDC")
        expect(page.locator(".signoff-message")).to_contain_text("Read only: log in to set flags")
        for control in (".set-flag button", ".to-signoff button", ".complete-run button",
                        ".reopen-run button", ".bulk-set button"):  # fmt: skip
            expect(page.locator(control)).to_be_disabled()
        page.locator(".bk-tab", has_text="Good-run lists").click()
        expect(page.locator(".grl-make button")).to_be_disabled()
        # reading works everywhere
        for path, ready in (("/qam", ".bk-Canvas"), ("/runsummary", ".run-summary")):
            page.goto(anon.base + path)
            expect(page.locator(ready).first).to_be_visible()
        # Panel's unsigned guest cookie does not turn a visitor into a user called "guest"
        page.goto(anon.base + "/login")
        expect(page.locator("#anonymous-link")).to_be_visible()
    assert db.certification.flag_history(12, 5) == before


def test_manager_moves_run_through_workflow(page: Page, server: Server, db_url: str) -> None:
    db = QADatabase(db_url)
    login(page, server, "boss")
    open_cell(page, 9, "CDC")
    expect(page.locator(".complete-run button")).to_be_disabled()  # OPEN: not yet
    page.locator(".to-signoff button").click()
    expect(page.locator("#run-state")).to_have_text("SIGNOFF")
    page.locator(".workflow-comment input").fill("completed for the test")
    page.locator(".workflow-comment input").press("Tab")
    page.locator(".complete-run button").click()
    # its detectors are NOTSET: completing it needs the confirmation and a comment (issue 19)
    expect(page.locator(".confirm-dialog")).to_contain_text("NOTSET")
    page.locator(".confirm-write button").click()
    expect(page.locator("#run-state")).to_have_text("COMPLETED")
    expect(grid_cell(page, 9, "state")).to_have_text("COMPLETED")
    state = db.certification.state(12, 9)
    assert (state.state, state.author) == ("COMPLETED", "boss")
    # a completed run takes no flag, from anybody, until a manager reopens it
    open_cell(page, 9, "ECL")
    expect(page.locator(".set-flag button")).to_be_disabled()
    expect(page.locator(".signoff-message")).to_contain_text("Run 12/9 is COMPLETED")
    page.locator(".reopen-run button").click()
    expect(page.locator("#run-state")).to_have_text("OPEN")
    expect(page.locator(".set-flag button")).to_be_enabled()
    assert [s.state for s in db.certification.state_history(12, 9)] == [
        "SIGNOFF",
        "COMPLETED",
        "OPEN",
    ]


# ---------------------------------------------------------------------- good-run lists
def test_manager_makes_and_exports_good_run_list(page: Page, server: Server, db_url: str) -> None:
    db = QADatabase(db_url)
    boss = db.users.get("boss")
    for r in db.runs.select():
        for det in r.detectors:
            bad = (r.run, det) == (7, "TOP")
            if det not in db.certification.flags(r.exp, r.run):
                db.certification.set_flag(r.exp, r.run, det, "BAD" if bad else "GOOD", user=boss,
                            comment="test: bulk certification", force=True)  # fmt: skip
    expected = {
        r.key
        for r in db.runs.select()
        if r.run_type == "physics"
        and r.beam_energy == "4S"
        and all(r.flag(d) == "GOOD" for d in r.detectors)
    }
    assert expected
    assert (12, 7) not in expected

    login(page, server, "boss")
    page.locator(".bk-tab", has_text="Good-run lists").click()
    page.locator(".grl-name input").fill("golden")
    page.locator(".grl-name input").press("Tab")
    page.locator(".grl-preset select").select_option("physics_4s_good")
    page.locator(".grl-make button").click()
    expect(page.locator(".grl-message")).to_contain_text("Made golden version 1")
    grl = db.grls.get("golden")
    assert grl.author == "boss"
    assert grl.version == 1
    assert {r.key for r in grl.runs} == expected
    expect(page.locator("#grl-lumi")).to_have_text(f"{grl.lumi_pb / 1000.0:.4f}")
    lumi = sum(r.lumi_pb for r in db.runs.select() if r.key in expected)
    assert grl.lumi_pb == pytest.approx(lumi, rel=1e-12)

    files = {}
    for kind in ("json", "cms", "csv"):
        with page.expect_download() as download:
            page.locator(f".download-{kind} button").click()
        files[kind] = Path(download.value.path()).read_text()
    assert json.loads(files["json"]) == grl.to_json()
    exported = json.loads(files["json"])["experiments"]["12"]["runs"]
    assert {(12, r) for r in exported} == expected
    cms = json.loads(files["cms"])
    assert {(12, r) for a, b in cms["12"] for r in range(a, b + 1)} == expected
    rows = list(csv.DictReader(io.StringIO(files["csv"])))
    assert {(int(r["exp"]), int(r["run"])) for r in rows if r["exp"] != "TOTAL"} == expected
    assert float(rows[-1]["recorded_lumi_pb"]) == pytest.approx(grl.lumi_pb, rel=1e-12)


# -------------------------------------------------------------------------- screenshots
def test_screenshots_of_every_app(page: Page, server: Server, db_url: str) -> None:
    login(page, server, "boss", path="/")
    expect(page.locator("#card-signoff")).to_be_visible()
    shoot(page, "index")
    page.goto(server.base + "/qam")
    expect(page.locator(".bk-Canvas").first).to_be_visible()
    expect(page.get_by_text("Histograms vs reference")).to_be_visible()
    # the detector filter narrows the variables to that detector's
    page.locator(".qam-detector select").select_option("CDC")
    expect(page.locator(".qam-trend")).to_contain_text("(CDC), exp 12")
    shoot(page, "qam")
    page.goto(server.base + "/signoff")
    open_cell(page, 7, "TOP")
    expect(page.locator(".bk-Canvas").first).to_be_visible()
    shoot(page, "signoff")
    page.goto(server.base + "/runsummary")
    expect(page.locator(".run-summary .tabulator-row").first).to_be_visible()
    shoot(page, "runsummary")
    # filter in the page, download what it shows
    type_filter = page.locator('.run-summary .tabulator-col[tabulator-field="type"] input')
    type_filter.fill("cosmic")
    type_filter.press("Enter")
    cosmic = {r.run for r in QADatabase(db_url).runs.select(run_type="cosmic")}
    expect(page.locator(".run-summary .tabulator-row")).to_have_count(len(cosmic))
    with page.expect_download() as download:
        page.locator(".download-csv").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert {int(r["run"]) for r in rows} == cosmic
    assert {r["type"] for r in rows} == {"cosmic"}
    for name in ("index", "qam", "signoff", "runsummary"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000


# ---------------------------------------------------------- where a login leads (issue 13)
def test_login_never_leads_off_the_site(page: Page, server: Server) -> None:
    """``/login?next=...`` with a tab, a newline, backslashes, extra slashes or a scheme: after a
    real login Chromium stays on the site (the issue's ``/%09/evil.example`` went to
    ``http://evil.example/``)."""
    visited: list[str] = []

    def evil(route: Route) -> None:
        visited.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<h1 id='evil'>evil</h1>")

    page.context.route(re.compile(r"^[a-z]+://([^/]*\.)?evil\.example"), evil)
    for target in ("/%09/evil.example", "/%0A/evil.example", "/%5Cevil.example",
                   "%2F%2Fevil.example", "/%09%5C/evil.example", "https:evil.example",
                   "http://evil.example/", "///evil.example"):  # fmt: skip
        page.context.clear_cookies()
        page.goto(f"{server.base}/login?next={target}")
        page.fill("#username", "vic")
        page.fill("#password", USERS["vic"][0])
        page.click("#login-submit")
        expect(page.locator("#whoami")).to_contain_text("vic")
        assert page.url == server.base + "/", target
    assert visited == []
    # a path of the site is where the login leads
    page.context.clear_cookies()
    page.goto(f"{server.base}/login?next=/runsummary")
    page.fill("#username", "vic")
    page.fill("#password", USERS["vic"][0])
    page.click("#login-submit")
    expect(page).to_have_url(server.base + "/runsummary")


# ---------------------------------------------- a page that lost its server or its login
def covered(page: Page) -> Locator:
    """The cover a page shows once it lost its connection."""
    return page.locator("#b2calib-disconnected")


def assert_blocked(page: Page, control: Locator) -> None:
    """A click on ``control`` no longer reaches it (the cover is on top, the page inert)."""
    with pytest.raises(PlaywrightTimeout):
        control.click(timeout=1500)


def test_page_left_open_across_a_restart_says_so_and_writes_nothing(
    browser: Browser, db_url: str
) -> None:
    """A page open while its server restarts covers itself with a message and a reload button;
    nothing can be clicked or written until it is reloaded, and the new server refuses the old
    page's session. The session lives in the database: with the same cookie secret the reload
    needs no new login."""
    db = QADatabase(db_url)
    secret = ("--cookie-secret", "restart-test-secret-0123456789")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    before = db.certification.flag_history(12, 11, "CDC")
    with Server(db_url, *secret) as first:
        port = first.port
        login(page, first, "alice")
        open_cell(page, 11, "CDC")
        page.locator(".flag-select select").select_option("BAD")
        page.locator(".flag-comment textarea").fill("written after the restart?")
        page.locator(".flag-comment textarea").press("Tab")
        expect(covered(page)).to_have_count(0)
    # the server is gone: the page says so at once
    expect(covered(page)).to_be_visible()
    expect(covered(page)).to_contain_text("Disconnected from the server")
    expect(covered(page)).to_contain_text("Nothing you do on this page is saved")
    expect(page.locator("#b2calib-reload")).to_be_visible()
    shoot(page, "disconnected", full_page=False)
    with Server(db_url, *secret, port=port) as second:
        assert_blocked(page, page.locator(".set-flag button"))
        assert_blocked(page, page.locator(".flag-comment textarea"))
        page.wait_for_timeout(2000)
        expect(covered(page)).to_be_visible()  # no reconnection to the new server
        expect(page.locator("#b2calib-reload")).to_be_focused()
        assert db.certification.flag_history(12, 11, "CDC") == before
        shoot(page, "disconnected-after-restart", full_page=False)
        page.locator("#b2calib-reload").click()
        # the page reloads with its state in the URL (the cell it had open)
        expect(page).to_have_url(re.compile(re.escape(second.base + "/signoff") + r"(\?|$)"))
        expect(page.locator("#whoami")).to_contain_text("alice")
        expect(covered(page)).to_have_count(0)
        open_cell(page, 11, "CDC")
        expect(page.locator(".set-flag button")).to_be_enabled()
    context.close()


def test_open_pages_end_with_their_login(browser: Browser, server: Server, db_url: str) -> None:
    """A page opened with a copy of a login's cookie is cut off when that login logs out in
    another browser; a page of a user who is removed is cut off too. Neither writes."""
    db = QADatabase(db_url)
    db.users.add("eve", "eve-secret-1", "expert", ["CDC"])
    before = db.certification.flag_history(12, 12, "CDC")
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(3)]
    try:
        first, copy, removed = (c.new_page() for c in contexts)
        login(first, server, "alice")
        contexts[1].add_cookies(contexts[0].cookies())
        copy.goto(server.base + "/signoff")
        expect(copy.locator("#whoami")).to_contain_text("alice")
        open_cell(copy, 12, "CDC")
        first.locator("#logout-link").click()
        expect(first.locator("#logged-out")).to_be_visible()
        expect(covered(copy)).to_be_visible()  # within the server's periodic check
        shoot(copy, "login-ended", full_page=False)
        assert_blocked(copy, copy.locator(".set-flag button"))
        copy.reload()
        expect(copy).to_have_url(re.compile(r"/login\?next="))
        # a removed user's open page
        removed.goto(server.base + "/signoff")
        removed.fill("#username", "eve")
        removed.fill("#password", "eve-secret-1")
        removed.click("#login-submit")
        expect(removed.locator("#whoami")).to_contain_text("eve")
        db.users.remove("eve")
        expect(covered(removed)).to_be_visible()
        removed.goto(server.base + "/qam")
        expect(removed).to_have_url(re.compile(r"/login\?next="))
        assert db.certification.flag_history(12, 12, "CDC") == before
    finally:
        for c in contexts:
            c.close()
        if any(u.name == "eve" for u in db.users.all()):
            db.users.remove("eve")


# --------------------------------------------------------------------------- soak test
#: Page loads of the soak test, the first of them warming the server up, and its time limit.
SOAK_LOADS, SOAK_WARMUP, SOAK_SECONDS = 200, 60, 900.0


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_memory_stays_flat_over_many_page_loads(browser: Browser, db_url: str) -> None:
    """A bounded soak on loopback: page loads of every app in turn, as one logged-in browser.
    The server's resident memory, sampled every 10 loads from load 60, grows by less than 50
    MB in all, and over the second half of the loads its robust (Theil-Sen) slope is below
    0.2 MB a page: a leak of 0.25 MB a page or more fails (the issue's growth was 2.8 MB a
    page). No finer: how many Bokeh sessions are alive at a sample depends on how fast pages
    load (an unused session is discarded after about 15 s) and the allocator keeps its
    high-water mark, so on a loaded machine the memory rises in steps of 10-20 MB now and then
    (measured: 392 MB from load 60 to 100, 403 MB to 140, 412 MB to 200; in another run 378,
    then 389-392, then 410 MB at load 200; in a third 420 MB throughout; over 325 loads on a
    loaded machine 339-341 MB from load 25 on). The issue measured 254 ->
    395 MB over the first 50 loads, then flat through 200."""
    with Server(db_url) as s:
        server = psutil.Process(s.pid)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        login(page, s, "boss", path="/")
        apps = ("/", "/qam", "/signoff", "/runsummary")
        deadline = time.monotonic() + SOAK_SECONDS
        rss: list[float] = []  # MB after SOAK_WARMUP loads, then every 10
        for i in range(SOAK_LOADS):
            assert time.monotonic() < deadline, f"only {i} page loads in {SOAK_SECONDS:.0f} s"
            page.goto(s.base + apps[i % len(apps)])
            expect(page.locator("#whoami")).to_contain_text("boss")
            if i + 1 >= SOAK_WARMUP and (i + 1 - SOAK_WARMUP) % 10 == 0:
                rss.append(server.memory_info().rss / 2**20)
        context.close()
        log = "".join(s.output)
        at = log.find("Traceback")
        assert at < 0, log[max(0, at - 1500) : at + 4000]  # the server's error, whole
    print(f"server RSS (MB) after {SOAK_WARMUP} loads, then every 10:", [round(x) for x in rss])
    late = rss[(SOAK_LOADS // 2 - SOAK_WARMUP) // 10 :]  # the second half of the loads
    slope = scipy.stats.theilslopes(late, 10.0 * np.arange(len(late))).slope
    assert slope < 0.2, (slope, rss)
    assert max(rss) - rss[0] < 50.0, rss
