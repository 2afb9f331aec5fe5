"""The run summary in a real browser at 3000 runs; writes its section of bench/RESULTS_qa.md.

Serves a copy of the QA dashboards' benchmark database (``bench/qa_pages_sample.py``, 3000 runs;
built when missing) with ``b2calib serve --allow-anonymous`` and opens, in headless Chromium
(Debian's), and times with ``performance.now()`` in the page (from the start of the navigation):

- first render of ``/runsummary``: the table's first row and the totals shown;
- first render with the state in the URL (``/runsummary?exp=30&run_type=physics``);
- a column filter typed (run type ``cosmic``) until the totals are those of the rows shown;
- another run type chosen in the page until the totals say so;
- the index page (its luminosity summary shown): the lightest page of the workbench, the floor
  a page's first render has on the machine as loaded when measured.

Also the server's share: building the page's viewer in this process (the database read and the
table), best of the repeats. The section between ``<!-- BEGIN runsummary -->`` and
``<!-- END runsummary -->`` is replaced; the rest of the file is kept.

Usage: python bench/bench_runsummary_page.py [--runs 3000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from bench_sim import machine  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402
from qa_pages_sample import EXP, qa_pages_database  # noqa: E402
from results_section import replace_section  # noqa: E402

from tests.browser_server import Server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
NAME = "runsummary"
RESULTS = HERE / "RESULTS_qa.md"


def _totals(page: Page, text: str) -> None:
    page.locator(".summary-totals").filter(has_text=text).first.wait_for(timeout=60_000)


def _first_row(page: Page) -> None:
    page.locator(".run-summary .tabulator-row").first.wait_for(timeout=60_000)


def server_build(url: str, repeat: int) -> float:
    """Best time to build the page's viewer (what the server does for each page load)."""
    from b2calib.qa.store import QADatabase
    from b2calib_apps.runsummary import RunSummary

    db = QADatabase(url)
    RunSummary(db=db)  # imports and caches warm
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        RunSummary(db=db)
        best = min(best, time.perf_counter() - t0)
    db.close()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    source = qa_pages_database(args.runs)
    work = Path(tempfile.mkdtemp(prefix="bench-runsummary-"))
    db_path = work / "qa.sqlite"
    shutil.copy(source, db_path)  # the server writes its sessions: never into the original
    url = f"sqlite:///{db_path}"
    load_start = os.getloadavg()[0]
    build = server_build(url, args.repeat)
    first: list[float] = []
    with_state: list[float] = []
    column_filter: list[float] = []
    run_type: list[float] = []
    index: list[float] = []
    with Server(url, "--allow-anonymous") as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        for i in range(args.repeat + 1):  # the first load warms the server's imports up
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            page.goto(server.base + "/runsummary", wait_until="commit")
            _first_row(page)
            _totals(page, f"{args.runs} runs")
            t_first = page.evaluate("performance.now()") / 1000.0
            # a column filter: the totals follow the rows shown
            t0 = time.perf_counter()
            box = page.locator('.run-summary .tabulator-col[tabulator-field="type"] input')
            box.fill("cosmic")
            box.press("Enter")
            _totals(page, "runs shown")
            t_filter = time.perf_counter() - t0
            # the state in the URL
            page.goto(server.base + f"/runsummary?exp={EXP}&run_type=physics", wait_until="commit")
            _first_row(page)
            _totals(page, "runs")
            t_state = page.evaluate("performance.now()") / 1000.0
            # another run type chosen in the page
            t0 = time.perf_counter()
            page.locator(".summary-type select").select_option("cosmic")
            _totals(page, "cosmic (no beams)")
            t_type = time.perf_counter() - t0
            page.goto(server.base + "/", wait_until="commit")
            page.locator(".summary-qa").filter(has_text="luminosity").wait_for(timeout=60_000)
            t_index = page.evaluate("performance.now()") / 1000.0
            ctx.close()
            if i:
                first.append(t_first)
                column_filter.append(t_filter)
                with_state.append(t_state)
                run_type.append(t_type)
                index.append(t_index)
        browser.close()
    load_end = os.getloadavg()[0]
    shutil.rmtree(work, ignore_errors=True)

    def row(name: str, values: list[float], limit: str) -> str:
        return (
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | "
            f"{max(values):.2f} | {limit} |"
        )

    lines = [
        "## Run summary in a real browser",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `python bench/bench_runsummary_page.py "
        f"--runs {args.runs} --repeat {args.repeat}` on {machine()}; load average "
        f"{load_start:.1f} at the start, {load_end:.1f} at the end (the cores are shared: an "
        "idle machine is faster). Headless Chromium, anonymous reader, "
        f"{args.repeat} loads after one warm-up; seconds (median, min, max).",
        "",
        f"Database: `bench/qa_pages_sample.py` ({args.runs} runs of experiment {EXP}: physics "
        "4S and Continuum, cosmics). The page sends the browser one page of 50 rows (remote "
        "pagination); filters, sorting and the totals of the rows shown are computed by the "
        "server.",
        "",
        "| what | median | min | max | budget |",
        "|---|---|---|---|---|",
        row("first render `/runsummary` (navigation start to first row and totals)", first, "1.5"),
        row(f"first render `/runsummary?exp={EXP}&run_type=physics`", with_state, "1.5"),
        row("column filter typed (type: cosmic) until the totals follow", column_filter, "0.3"),
        row("run type chosen (cosmic) until the totals say so", run_type, "0.3"),
        row("index page, for comparison (navigation start to its summary)", index, "1.5"),
        "",
        f"Server: building the page's viewer (database read, table, totals) {build:.2f} s "
        "(best of the repeats, in this process).",
    ]
    replace_section(RESULTS, NAME, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
