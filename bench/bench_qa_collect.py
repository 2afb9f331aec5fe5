"""QA collection of the demo bucket (build/demo/prompt-bucket from `make prompt-bucket`, else
bench/out/prompt-bucket from bench_prompt.py): the 12 runs' monitoring through collect_qa, and
the PXD hot-pixel count that dominated it.

Appends its results to bench/RESULTS_qa.md (the section "Collection of the demo bucket" is
replaced). The hot-pixel count is timed on one run's hadron PXD digits both ways: the dense
per-pixel histogram the part fills now, and the growing category axis it filled before, on a
prefix of the digits (its look-up per digit makes it superquadratic: the whole run is out of
reach).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import awkward as ak
import hist
import numpy as np
import uproot

from b2calib.geometry import vxd
from b2calib.qa.monitoring import collect_qa

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS_qa.md"
TITLE = "## Collection of the demo bucket"


def pixel_ids(path: Path) -> np.ndarray:
    with uproot.open(path) as f:
        a = f["tree"].arrays(["PXDDigits_m_sensorID", "PXDDigits_m_uCellID", "PXDDigits_m_vCellID"])
    s = vxd.sensor_index(ak.to_numpy(ak.flatten(a["PXDDigits_m_sensorID"])), "PXD")
    u = ak.to_numpy(ak.flatten(a["PXDDigits_m_uCellID"])).astype(np.int64)
    v = ak.to_numpy(ak.flatten(a["PXDDigits_m_vCellID"])).astype(np.int64)
    return np.asarray((s * vxd.PXD_NU + u) * vxd.PXD_NV + v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    demo = REPO / "build" / "demo" / "prompt-bucket"  # make demo's; else bench_prompt.py's
    default = demo if demo.exists() else REPO / "bench" / "out" / "prompt-bucket"
    ap.add_argument("--data", default=str(default))
    ap.add_argument("--old-digits", type=int, default=400_000, help="prefix for the old fill")
    ap.add_argument("--executor", default="processes")
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "runs.json").exists():
        raise SystemExit(f"{data}: no demo bucket; run `make prompt-bucket` first")
    rows = []
    t = time.perf_counter()
    qa = collect_qa(data, executor=args.executor, workers=2)
    rows.append(
        (
            f"collect_qa of the {len(qa)} runs ({args.executor}, 2 workers, no cache)",
            time.perf_counter() - t,
            f"{sum(f.stat().st_size for f in data.rglob('*.root')) / 1e9:.1f} GB of skims",
        )
    )
    ids = pixel_ids(data / "e0016" / "r00002" / "cdst_hlt_hadron_e0016_r00002.root")
    dense = hist.Hist(
        hist.axis.Integer(0, vxd.N_PXD_PIXELS, underflow=False, overflow=False),
        storage=hist.storage.Unlimited(),
    )
    t = time.perf_counter()
    dense.fill(ids)
    rows.append(
        (
            f"PXD digits per pixel, run 16/2 hlt_hadron, dense histogram ({len(ids):,} digits)",
            time.perf_counter() - t,
            f"{len(np.unique(ids)):,} pixels fired",
        )
    )
    n = min(args.old_digits, len(ids))
    old = hist.Hist(hist.axis.IntCategory([], growth=True), storage=hist.storage.Int64())
    t = time.perf_counter()
    old.fill(ids[:n])
    rows.append(
        (
            f"the same, growing category axis (before), first {n:,} digits",
            time.perf_counter() - t,
            "superquadratic in the pixels fired",
        )
    )
    assert np.array_equal(
        np.sort(np.asarray(old.axes[0])),
        np.flatnonzero(np.bincount(ids[:n], minlength=vxd.N_PXD_PIXELS)),
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    lines = [
        TITLE,
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {when}, load "
        f"average {load:.1f} at the end (the cores were shared); "
        "`python bench/bench_qa_collect.py`.",
        "",
        "| operation | time | note |",
        "|---|---:|---|",
        *(f"| {what} | {sec:.2f} s | {note} |" for what, sec, note in rows),
        "",
        "Before the dense histogram, `b2calib qa collect build/demo/prompt-bucket` did not end in "
        "834 s: the hot-pixel part looked every digit up among the categories of a growing axis "
        "(~3M digits a run in hlt_hadron, 2.4M pixels fired).",
        "",
    ]
    text = RESULTS.read_text()
    if TITLE in text:
        text = text[: text.index(TITLE)]
    RESULTS.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
