"""The floor under the pages' first render: what Panel and Bokeh cost before any page of ours.

Serves, with ``pn.serve`` in a subprocess (no database, no login), two pages that hold nothing
of b2calib:

- ``/text``: one HTML pane (the Panel floor: Panel's and Bokeh's scripts, the websocket, the
  document);
- ``/plot``: one Bokeh figure of 2500 points, one 50-row Tabulator and one HTML pane (the
  widgets a QA page is made of, with the data of one trend);

and opens each in headless Chromium (Debian's), as the page benches do: navigation start
(``performance.now()``) until the page shows its content, in a new browser context (nothing
cached: the first visit) and again in the same context (the scripts cached: every later
visit). Writes its section of bench/RESULTS_qa.md, so that the pages' times read against it.

Usage: python bench/bench_page_floor.py [--repeat 5] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from bench_sim import machine  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402
from results_section import replace_section  # noqa: E402

from tests.browser_server import free_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
RESULTS = HERE / "RESULTS_qa.md"
SECTION = "floor"
TIMEOUT_MS = 60_000
POINTS = 2500

#: The two pages, served by ``pn.serve`` (``{port}`` filled in).
APP = """
import numpy as np, pandas as pd, panel as pn
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

pn.extension("tabulator")

def text():
    return pn.pane.HTML('<div id="floor-ready">ready</div>')

def plot():
    rng = np.random.default_rng(1)
    run = np.arange({points})
    src = ColumnDataSource(dict(run=run, value=rng.normal(size=run.size)), name="floor-points")
    fig = figure(height=300, sizing_mode="stretch_width", tools="tap,box_zoom,reset")
    fig.scatter("run", "value", source=src, size=5)
    df = pd.DataFrame(dict(run=run[:50], value=rng.normal(size=50), status=["GOOD"] * 50))
    return pn.Column(
        pn.pane.HTML('<div id="floor-ready">ready</div>'),
        pn.pane.Bokeh(fig, sizing_mode="stretch_width"),
        pn.widgets.Tabulator(df, css_classes=["floor-table"], height=400),
        sizing_mode="stretch_width",
    )

server = pn.serve(dict(text=text, plot=plot), port={port}, address="127.0.0.1", show=False,
                  start=False)
print("serving on", {port}, flush=True)
server.io_loop.start()
"""
#: JS: the number of points in the plot page's data source (-1 before it exists).
_POINTS = """() => {
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
    const s = doc.get_model_by_name("floor-points")
    if (s != null) {
      const d = s.data
      return (d instanceof Map ? d.get("run") : d.run).length
    }
  }
  return -1
}"""


def _shown(page: Page, path: str) -> float:
    """Navigation start to the page's content shown, in seconds."""
    page.locator("#floor-ready").wait_for(timeout=TIMEOUT_MS)
    if path == "/plot":
        page.wait_for_function(f"() => ({_POINTS})() == {POINTS}", timeout=TIMEOUT_MS)
        page.locator(".floor-table .tabulator-row").first.wait_for(timeout=TIMEOUT_MS)
    return float(page.evaluate("performance.now()")) / 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--no-write", action="store_true", help="print the section, leave RESULTS_qa.md alone"
    )
    args = ap.parse_args()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", APP.replace("{port}", str(port)).replace("{points}", str(POINTS))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("serving on"):
            break
    else:
        raise SystemExit("the floor's server did not start")
    base = f"http://127.0.0.1:{port}"
    load_before = os.getloadavg()[0]
    times: dict[tuple[str, str], list[float]] = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            for i in range(args.repeat + 1):  # the first round warms the server's imports up
                for path in ("/text", "/plot"):
                    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                    page = ctx.new_page()
                    page.goto(base + path, wait_until="commit")
                    cold = _shown(page, path)
                    page.goto(base + path, wait_until="commit")
                    cached = _shown(page, path)
                    ctx.close()
                    if i:
                        times.setdefault((path, "cold"), []).append(cold)
                        times.setdefault((path, "cached"), []).append(cached)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    load = (load_before + os.getloadavg()[0]) / 2

    def row(name: str, key: tuple[str, str]) -> str:
        v = times[key]
        return f"| {name} | {statistics.median(v):.2f} | {min(v):.2f} | {max(v):.2f} |"

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## The floor: Panel and Bokeh before any page of ours",
        "",
        f"`python bench/bench_page_floor.py` on {machine()}; {now}; headless Chromium, "
        f"{args.repeat} loads of each page after one warm-up; load average about {load:.1f}. "
        "Seconds from navigation start until the page shows its content (median, min, max). "
        "Cold: a new browser context (nothing cached, a shifter's first visit); cached: the "
        "same page opened again in that context (the scripts cached, every later visit).",
        "",
        "| page served by `pn.serve`, nothing of b2calib | median | min | max |",
        "|---|---:|---:|---:|",
        row("one HTML pane, cold", ("/text", "cold")),
        row("one HTML pane, cached", ("/text", "cached")),
        row(f"a figure of {POINTS} points, a 50-row Tabulator, cold", ("/plot", "cold")),
        row(f"a figure of {POINTS} points, a 50-row Tabulator, cached", ("/plot", "cached")),
        "",
        "The pages' first renders above read against these: what a page of ours takes beyond "
        "the row of its kind is ours to cut; the floor is Panel's and Bokeh's.",
        "",
    ]
    section = replace_section(RESULTS, SECTION, "\n".join(lines), write=not args.no_write)
    print(section)


if __name__ == "__main__":
    main()
