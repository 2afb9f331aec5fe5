"""The QA monitor (QAM) in a real browser at 3000 runs; writes its section of
bench/RESULTS_qa.md.

Serves a copy of the 3000-run benchmark database (``bench/qa_pages_sample.py``) with
``b2calib serve`` and opens ``/qam`` in headless Chromium (Debian's); times, in the browser:

- first render: navigation start (``performance.now()``) until the trend shows every point of
  the default variable (the worst one) and the default run's evidence, histograms and variables
  are shown;
- the same page opened with its state in the URL (``/qam?exp=..&run=..&variable=..``);
- another run typed into the run box until its evidence is shown (and its point marked);
- another run by a click on its trend point (the tap tool's selection set as a click sets it);
- another variable chosen until the trend shows every point of it;

and the bytes the server sent over the websocket for each (frames received by the page).

Usage: python bench/bench_qam_page.py [--runs 3000] [--repeat 5] [--port P] [--no-write]
(``--no-write``: print the section without writing it, for a machine that is not quiet.)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from bench_sim import machine  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402
from qa_pages_sample import EXP, qa_pages_database  # noqa: E402
from results_section import replace_section  # noqa: E402

from b2calib.qa.store import QADatabase  # noqa: E402
from tests.browser_server import Server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
RESULTS = HERE / "RESULTS_qa.md"
SECTION = "qam"
TIMEOUT_MS = 120_000

#: The page before issue 19 (commit 77ce99f: HoloViews panes rebuilt on every change, 12 histogram
#: plots with their own toolbars), measured by hand in the same way on the same database.
BEFORE = (
    "Before (commit 77ce99f, HoloViews panes rebuilt on every change, 13 figures), same "
    "database and machine at a load of about 13: first render 19.2-25.5 s (373 kB), another "
    "run 2.1-6.4 s until its table changed (its 12 plots after that), another variable "
    "2.0-4.4 s (155 kB)."
)
#: JS: the number of points in the QAM trend's data source (-1 before it exists).
_POINTS = """() => {
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
    const s = doc.get_model_by_name("qam-trend-points")
    if (s != null) {
      const d = s.data
      const runs = d instanceof Map ? d.get("run") : d.run
      return runs.length
    }
  }
  return -1
}"""
#: JS: select the trend point of run ``run`` as a click on it does (the tap tool's selection).
_TAP = """(run) => {
  for (const doc of Bokeh.documents) {
    const s = doc.get_model_by_name("qam-trend-points")
    if (s != null) {
      const d = s.data
      const runs = Array.from(d instanceof Map ? d.get("run") : d.run)
      s.selected.indices = [runs.indexOf(run)]
      return true
    }
  }
  return false
}"""


class Frames:
    """Bytes of the websocket frames the page received."""

    def __init__(self, page: Page) -> None:
        self.n = 0
        page.on("websocket", lambda ws: ws.on("framereceived", self._add))

    def _add(self, payload: Any) -> None:
        self.n += len(payload)

    def take(self) -> int:
        n, self.n = self.n, 0
        return n


def _ready(page: Page, points: int, run: int) -> None:
    page.wait_for_function(f"() => ({_POINTS})() == {points}", timeout=TIMEOUT_MS)
    head = page.locator("#qam-run-head")
    head.filter(has_text=re.compile(rf"Run {EXP}/{run}\b")).wait_for(timeout=TIMEOUT_MS)
    page.locator(".qam-variables").first.wait_for(timeout=TIMEOUT_MS)


def _settle(page: Page) -> None:
    """Let the last frames of an action arrive before its bytes are counted."""
    page.wait_for_timeout(500)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--port", type=int, default=None, help="serve on this port (default: free)")
    ap.add_argument(
        "--no-write", action="store_true", help="print the section, leave RESULTS_qa.md alone"
    )
    args = ap.parse_args()
    source = qa_pages_database(args.runs)
    work = Path(tempfile.mkdtemp(prefix="bench-qam-"))
    db_path = work / "qa.sqlite"
    shutil.copy(source, db_path)  # the server writes its sessions: never into the original
    url = f"sqlite:///{db_path}"
    db = QADatabase(url)
    runs = db.runs.select(exp=EXP)
    physics = [r.run for r in runs if r.run_type == "physics"]
    default_run = max(physics)
    worst = db.status.worst_variables(EXP)
    default_var = worst[0]
    other_var = next(n for n in worst[1:] if n.split(".")[0] == default_var.split(".")[0])
    n_default = len(db.runs.trend(default_var, exp=EXP, run_type=None))
    n_other = len(db.runs.trend(other_var, exp=EXP, run_type=None))
    typed_run = physics[len(physics) // 2]
    tapped_run = physics[len(physics) // 3]
    db.close()
    state_url = f"/qam?exp={EXP}&run={typed_run}&variable={other_var}"
    load_before = os.getloadavg()[0]
    keys = ("first", "url", "run", "tap", "variable")
    times: dict[str, list[float]] = {k: [] for k in keys}
    sent: dict[str, list[int]] = {k: [] for k in keys}
    with Server(url, "--allow-anonymous", port=args.port) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        for i in range(args.repeat + 1):  # the first load warms the server's imports up
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            ctx.set_default_timeout(TIMEOUT_MS)
            page = ctx.new_page()
            frames = Frames(page)
            got: dict[str, float] = {}
            nbytes: dict[str, int] = {}
            page.goto(server.base + "/qam", wait_until="commit")
            _ready(page, n_default, default_run)
            got["first"] = page.evaluate("performance.now()") / 1000.0
            _settle(page)
            nbytes["first"] = frames.take()
            # another run typed into the run box
            t0 = time.perf_counter()
            box = page.locator(".qam-run input")
            box.fill(str(typed_run))
            box.press("Enter")
            _ready(page, n_default, typed_run)
            got["run"] = time.perf_counter() - t0
            _settle(page)
            nbytes["run"] = frames.take()
            # another run by its trend point
            t0 = time.perf_counter()
            page.evaluate(_TAP, tapped_run)
            _ready(page, n_default, tapped_run)
            got["tap"] = time.perf_counter() - t0
            _settle(page)
            nbytes["tap"] = frames.take()
            # another variable
            t0 = time.perf_counter()
            page.locator(".qam-variable select").select_option(other_var)
            page.wait_for_function(f"() => ({_POINTS})() == {n_other}", timeout=TIMEOUT_MS)
            page.locator("#qam-trend-title").filter(has_text=other_var).wait_for(timeout=TIMEOUT_MS)
            got["variable"] = time.perf_counter() - t0
            _settle(page)
            nbytes["variable"] = frames.take()
            # the state in the URL
            page.goto(server.base + state_url, wait_until="commit")
            _ready(page, n_other, typed_run)
            got["url"] = page.evaluate("performance.now()") / 1000.0
            _settle(page)
            nbytes["url"] = frames.take()
            if i == args.repeat:
                shots = REPO / "build" / "bench"
                shots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shots / "qam.png"), full_page=True)
            ctx.close()
            if i:
                for k in keys:
                    times[k].append(got[k])
                    sent[k].append(nbytes[k])
        browser.close()
    load = (load_before + os.getloadavg()[0]) / 2

    def row(name: str, key: str, limit: str) -> str:
        v = times[key]
        kb = statistics.median(sent[key]) / 1000.0
        return (
            f"| {name} | {statistics.median(v):.2f} | {min(v):.2f} | {max(v):.2f} | "
            f"{kb:.0f} | {limit} |"
        )

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## QAM, the QA monitor, in a real browser",
        "",
        f"`python bench/bench_qam_page.py --runs {args.runs}` on {machine()}; {now}; headless "
        f"Chromium, {args.repeat} page loads after one warm-up; times in seconds (median, min, "
        f"max), kB: the websocket frames the page received (median). Load average of the "
        f"machine about {load:.1f} while measured (other processes share its 2 cores: an idle "
        "machine is faster).",
        "",
        f"Database: the {args.runs}-run benchmark database (`bench/qa_pages_sample.py`), "
        f"experiment {EXP}. Default view: the worst variable `{default_var}` ({n_default} "
        f"points), the latest physics run {default_run}; the other variable `{other_var}` "
        f"({n_other} points); runs {typed_run} (typed) and {tapped_run} (its point clicked).",
        "",
        "| what | median | min | max | kB sent | issue's limit |",
        "|---|---:|---:|---:|---:|---:|",
        row("first render of `/qam` (navigation start to trend, evidence, histograms)",
            "first", "1.5"),
        row(f"`{state_url}` opened (state in the URL)", "url", "1.5"),
        row("another run typed until its evidence is shown", "run", "0.3"),
        row("another run by its trend point until shown", "tap", "0.3"),
        row("another variable chosen until its trend is drawn", "variable", "0.3"),
        "",
        "The first render is a new browser context (nothing cached, a first visit); the URL is "
        "opened in the same context after it, with the 2.9 MB of Bokeh and Panel scripts "
        "cached (every later visit). Read both against the floor section (Panel and Bokeh with "
        "nothing of ours, on the same machine).",
        "",
        BEFORE,
        "",
    ]  # fmt: skip
    section = replace_section(RESULTS, SECTION, "\n".join(lines), write=not args.no_write)
    print(section)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
