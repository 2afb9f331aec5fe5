"""The conditions browser and the workbench index in a real browser; writes
bench/RESULTS_conditions.md.

Serves a copy of a database (default: the demo's, ``build/demo/conditions.sqlite``; ``make demo``
makes it) with ``b2calib serve`` and opens, in headless Chromium (Debian's), with its state in the
URL: ``/conditions?tag=<staging>&exp=..&run=..&stack=<staging>,<input>&diff=<input>..<staging>``,
and times (``performance.now()`` in the page: from the start of the navigation):

- first render: the page with the tag's IoV chart drawn (every IoV's bar in the browser), the
  lookup through the stack and the diff shown;
- choosing another tag in the page until its chart is drawn;
- choosing another run until the lookup shows it;
- the index page until its conditions summary is shown.

Usage: python bench/bench_conditions_page.py [--db PATH] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from bench_conditions_lookup import SECTION as LOOKUP  # noqa: E402
from bench_sim import machine  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402

from b2calib.conditions import ConditionsDB  # noqa: E402
from tests.browser_server import Server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
_BARS = """(n) => {
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
    const r = doc.get_model_by_name("iov-bars")
    if (r != null) {
      const d = r.data_source.data
      const names = d instanceof Map ? d.get("name") : d.name
      return names.length == n
    }
  }
  return false
}"""


def _text(page: Page, css: str, text: str) -> None:
    page.locator(css).filter(has_text=text).first.wait_for(state="visible", timeout=60_000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", default=str(REPO / "build" / "demo" / "conditions.sqlite"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "RESULTS_conditions.md"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-conditions-"))
    db_path = work / "conditions.sqlite"
    shutil.copy(args.db, db_path)  # the server writes its sessions: never into the original
    url = f"sqlite:///{db_path}"
    db = ConditionsDB(url)
    tags = {t.name: t for t in db.tags()}
    sizes = db.tag_sizes()
    staging = next((n for n, t in tags.items() if t.state in ("TESTING", "VALIDATED")), None)
    staging = staging or sorted(tags)[0]
    # another tag, of another size (so that its chart is told from the first's)
    others = [n for n in sorted(tags) if n != staging]
    other = next((n for n in others if sizes[n].iovs != sizes[staging].iovs), others[0])
    table = db.iov_table(staging)
    axis = table.run_axis()
    exp, run = int(axis.experiments[-1]), int(axis.first[-1]) + 2
    inputs = [n for n in tags if n.startswith("previous")] or [other]
    stack = f"{staging},{inputs[0]}"
    diff = f"{inputs[0]}..{staging}"
    n_lookup = len(db.lookup(exp, run, stack.split(",")))
    d = db.diff(inputs[0], staging)
    db.close()
    load_before = os.getloadavg()[0]
    path = f"/conditions?tag={staging}&exp={exp}&run={run}&stack={stack}&diff={diff}"
    first: list[float] = []
    retag: list[float] = []
    rerun: list[float] = []
    index: list[float] = []
    with Server(url, "--allow-anonymous") as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        for i in range(args.repeat + 1):  # the first load warms the server's imports up
            ctx = browser.new_context(viewport={"width": 1280, "height": 800})
            page = ctx.new_page()
            page.goto(server.base + path, wait_until="commit")
            page.wait_for_function(_BARS, arg=sizes[staging].iovs, timeout=60_000)
            _text(page, "#lookup-summary", f"Run {exp}/{run} through")
            _text(page, "#diff-summary", f"{len(d.changed)} changed")
            t_first = page.evaluate("performance.now()") / 1000.0
            # another tag, chosen in the page
            t0 = time.perf_counter()
            page.locator(".tag-select select").select_option(other)
            page.wait_for_function(_BARS, arg=sizes[other].iovs, timeout=60_000)
            t_tag = time.perf_counter() - t0
            # another run
            t0 = time.perf_counter()
            page.locator(".run-input input").fill(str(run + 1))
            page.locator(".run-input input").press("Enter")
            _text(page, "#lookup-summary", f"Run {exp}/{run + 1} through")
            t_run = time.perf_counter() - t0
            page.goto(server.base + "/", wait_until="commit")
            _text(page, ".summary-cond", "global tags")
            t_index = page.evaluate("performance.now()") / 1000.0
            ctx.close()
            if i:
                first.append(t_first)
                retag.append(t_tag)
                rerun.append(t_run)
                index.append(t_index)
        browser.close()
    load = (load_before + os.getloadavg()[0]) / 2

    def row(name: str, values: list[float], limit: str) -> str:
        return (
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | "
            f"{max(values):.2f} | {limit} |"
        )

    lines = [
        "# The conditions browser in a real browser",
        "",
        f"`python bench/bench_conditions_page.py` on {machine()}; headless Chromium, "
        f"{args.repeat} loads after one warm-up; times in seconds (median, min, max); "
        f"load average of the machine about {load:.1f} while measured (other processes "
        "share its cores: the times of an idle machine are lower).",
        "",
        f"Database: a copy of `{args.db}`. Page: `{path}`: tag {staging} "
        f"({sizes[staging].iovs} IoVs of {sizes[staging].payloads} payloads), the lookup of "
        f"{n_lookup} payloads through a 2-tag stack, the diff {diff} ({len(d.added)} added, "
        f"{len(d.removed)} removed, {len(d.changed)} changed IoVs).",
        "",
        "| what | median | min | max | issue's limit |",
        "|---|---|---|---|---|",
        row("first render (navigation start to chart, lookup and diff shown)", first, "1.5"),
        row(f"another tag chosen ({other}, {sizes[other].iovs} IoVs) until drawn", retag, "-"),
        row("another run typed until its lookup is shown", rerun, "-"),
        row("index page (navigation start to conditions summary shown)", index, "-"),
        "",
    ]
    # the payload lookup's section (bench_conditions_lookup.py) is kept
    before = Path(args.out).read_text() if Path(args.out).exists() else ""
    kept = before[before.index(LOOKUP) :] if LOOKUP in before else ""
    Path(args.out).write_text("\n".join(lines) + ("\n" + kept if kept else ""))
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
