"""The PXD masks against their 2 s budget: the masks over all 7.68 M pixels from 10^6 events;
writes bench/RESULTS_pxd_masks.md.

The sample is bench/cases_pxd_masks.py's (one collision run of ~10^6 events, ~20-30 hits per
pixel; generated once into bench/out/). Measured, on 2 processes (the engine's two work items of
the run's file), best of ``--repeat``:

- bare read: uproot reading the three PXD branches the collector reads (sensor ID, u, v), the
  same entry ranges as the engine's work items, one per process: the limit of any event loop;
- the collector's own work per digit (pixel number and ``np.bincount``) and the hand-over of a
  work item's 7.68 M counts between processes: a plain ``hist.Hist`` (61 MB pickled) against
  :class:`~b2calib.detectors.pxd.masks.PixelHits` (15 MB, or the fired pixels only);
- collect: the engine's event loop with the collector (no cache, files verified or not);
- masks: the algorithm on the merged counts (checks, dead and hot steps, payloads, diagnostics);
- calibrate: ``run_calibrations`` (collect, algorithm, checkpoint, staging), as
  bench/bench_calibrations.py times it.

Usage: python bench/bench_pxd_masks.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import pickle
import runpy
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hist
import numpy as np
import uproot

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_calibrations import sample  # noqa: E402
from bench_sim import machine  # noqa: E402

from b2calib.calibration import run_calibrations  # noqa: E402
from b2calib.conditions import ConditionsDB  # noqa: E402
from b2calib.detectors.pxd import masks as M  # noqa: E402
from b2calib.engine import Dataset, collect  # noqa: E402
from b2calib.engine.loop import plan  # noqa: E402

BRANCHES = [b for b in M.PixelHitCollector().branches if b.startswith("PXDDigits_")]
BUDGET_S = 2.0


def read_item(job: tuple[str, int, int]) -> int:
    """Bare read of the PXD branches of one work item; returns the digits read."""
    path, start, stop = job
    with uproot.open(path) as f:
        arrays = f["tree"].arrays(BRANCHES, entry_start=start, entry_stop=stop)
    return int(sum(len(arrays[b].layout.content) for b in BRANCHES[:1]))


def collector_item(job: tuple[str, int, int]) -> tuple[float, ...]:
    """One work item: (read, compiled count, numpy pixel numbers, numpy bincount, hand-over
    as a plain Hist, hand-over as PixelHits), seconds."""
    path, start, stop = job
    t0 = time.perf_counter()
    with uproot.open(path) as f:
        a = f["tree"].arrays(BRANCHES, entry_start=start, entry_stop=stop)
    t1 = time.perf_counter()
    flat = [np.asarray(a[b].layout.content.data) for b in BRANCHES]
    counts = np.zeros(M._NPIX, dtype=np.int64)
    M.add_pixel_hits(counts, *flat)
    t2 = time.perf_counter()
    index = M.pixel_index(*flat)
    t3 = time.perf_counter()
    check = np.bincount(index, minlength=M._NPIX)
    t4 = time.perf_counter()
    if not np.array_equal(check, counts):
        raise RuntimeError("the compiled count and np.bincount differ")
    plain = hist.Hist(M._pixel_axis(), storage=hist.storage.Int64())
    plain.view()[:] = counts
    pickle.loads(pickle.dumps(plain, protocol=pickle.HIGHEST_PROTOCOL))
    t5 = time.perf_counter()
    compact = M.PixelHits(M._pixel_axis(), storage=hist.storage.Int64())
    compact.view()[:] = counts
    pickle.loads(pickle.dumps(compact, protocol=pickle.HIGHEST_PROTOCOL))
    t6 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    out, times = None, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    case = runpy.run_path(str(HERE / "cases_pxd_masks.py"))["CASES"]["pxd-hot-dead"]
    data = sample(case["sim"])
    files = sorted(str(p) for p in data.rglob("*.root"))
    dataset = Dataset.from_files(files)
    jobs = [(it.path, it.entry_start, it.entry_stop) for it in plan(dataset)]
    n_events = sum(stop - start for _, start, stop in jobs)
    load = os.getloadavg()
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(read_item, jobs))  # warm the page cache and the workers
        t_read, digits = best(lambda: sum(pool.map(read_item, jobs)), args.repeat)
        parts = min(
            (list(pool.map(collector_item, jobs)) for _ in range(args.repeat)),
            key=lambda rows: max(sum(r) for r in rows),
        )
    per_item = np.max(np.array(parts), axis=0)  # the slower of the two items, per step
    collector = M.PixelHitCollector()
    t_collect, result = best(
        lambda: collect(
            collector,
            dataset,
            executor="processes",
            workers=2,
            cache=False,
            progress=False,
            verify=False,
        ),
        args.repeat,
    )
    t_collect_verified, _ = best(
        lambda: collect(
            collector, dataset, executor="processes", workers=2, cache=False, progress=False
        ),
        1,
    )
    merged = result.output.merged()
    counts = np.asarray(merged["pixel_hits"].view(), dtype=np.int64)
    cal = M.hot_dead_calibration()

    def masks() -> Any:
        m = M.find_masks(counts, M.MaskConfig())
        return m, M._payloads(counts, m, float(n_events)), M._diagnostics(counts, m, n_events)

    t_masks, (m, payloads, _) = best(masks, args.repeat)
    t_find, _ = best(lambda: M.find_masks(counts, M.MaskConfig()), args.repeat)

    def calibrate() -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            db = ConditionsDB(Path(tmp) / "c.sqlite", author="bench")
            reports = run_calibrations(
                [cal], data, db=db, staging_tag="bench", cache=False, progress=False, workers=2
            )
            db.close()
            return reports[cal.name]

    t_cal, report = best(calibrate, max(1, args.repeat - 1))
    total_ms = t_collect + t_masks
    med = m.median
    layer1 = med[:16].mean() / n_events
    layer2 = med[16:].mean() / n_events
    rows = [
        ("bare read (3 PXD branches, 2 processes)", t_read, ""),
        ("collect (engine, 2 processes, no cache, no verify)", t_collect, ""),
        ("collect, files verified (Adler-32 of the 1 GB file)", t_collect_verified, ""),
        ("masks: checks, dead and hot steps (find_masks)", t_find, "7.68 M pixels"),
        ("masks + payloads + diagnostics (the algorithm)", t_masks, ""),
        ("collect + algorithm", total_ms, f"budget {BUDGET_S:.0f} s"),
        ("calibrate (run_calibrations: collect, algorithm, checkpoint, staging)", t_cal, ""),
    ]
    lines = [
        "# PXD masks: the 2 s budget (masks over 7.68 M pixels from 10^6 events)",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}; load average when started {load[0]:.1f} (shared machine)",
        "- command: `python bench/bench_pxd_masks.py`",
        f"- sample: bench/cases_pxd_masks.py: {n_events:,} events (one run, one file, "
        f"{len(jobs)} work items), {digits:,} PXD digits ({digits / n_events:.0f} per event); "
        f"median hits per pixel {med[:16].mean():.1f} (layer 1) and {med[16:].mean():.1f} "
        f"(layer 2), i.e. a background of {layer1:.1e} and {layer2:.1e} per pixel and event",
        f"- result: {report.status}; {m.summary()}; best of {args.repeat}",
        "",
        "| step | time | note |",
        "|---|---:|---|",
        *(f"| {name} | {t:.2f} s | {note} |" for name, t, note in rows),
        "",
        f"calibrate / bare read: **{t_cal / t_read:.1f}x**; collect / bare read: "
        f"{t_collect / t_read:.1f}x; collect + algorithm: {total_ms:.2f} s against the "
        f"{BUDGET_S:.0f} s budget.",
        "",
        "Per work item (the slower of the two, each on its own core):",
        "",
        "| part | time | per digit |",
        "|---|---:|---:|",
    ]
    names = (
        "uproot read of the item",
        "**the collector's count: one compiled pass, 1 byte per pixel + carry**",
        "(numpy alternative) pixel numbers from sensor table, u, v",
        "(numpy alternative) np.bincount into 7.68 M int64",
        "hand-over as a plain hist.Hist (pickle 61 MB + unpickle)",
        "**hand-over as PixelHits (uint16, 15 MB + unpickle)**",
    )
    per_digit = digits / len(jobs)
    lines += [
        f"| {n} | {t:.3f} s | {t / per_digit * 1e9:.1f} ns |"
        for n, t in zip(names, per_item, strict=True)
    ]
    floor = t_read / digits
    lines += [
        "",
        "**Verdict.** "
        + (
            f"The budget is met: collect + algorithm {total_ms:.2f} s <= {BUDGET_S:.0f} s."
            if total_ms <= BUDGET_S
            else f"The {BUDGET_S:.0f} s budget is not met end to end: collect + algorithm take "
            f"{total_ms:.1f} s. The floor is the read: uproot alone needs {t_read:.1f} s for "
            f"these {digits:.2g} digits on 2 cores ({floor * 1e9:.0f} ns a digit), and the "
            f"15-hits check needs at least 15 x 7.68 M = 1.15e8 digits, {1.15e8 * floor:.1f} s "
            "of reading at this rate, whatever the number of events."
        )
        + f" The masks themselves (checks, dead and hot steps over 7.68 M pixels) take "
        f"{t_find:.2f} s, {t_masks:.2f} s with the payloads and diagnostics; what the collector "
        "adds to the read per digit is the compiled count (the numpy pixel numbers + "
        "np.bincount cost 3-10 x more), and per work item the hand-over of the counts "
        "(PixelHits: 15 MB instead of 61 MB). A dense 61 MB histogram per work item is not the "
        "bottleneck for large items (a few % of the item); it was for the sample bucket's 44 "
        "small items (39 s and 2.6 GB of cache before PixelHits pickled sparse).",
    ]
    lines += [
        "",
        "The payloads: "
        + ", ".join(f"{p.name} {len(p)} rows" for p in payloads)
        + f". Hot pixels are seen above a noise rate of "
        f"{float(M.hot_rate_threshold(layer2)):.1e} (layer 2) and "
        f"{float(M.hot_rate_threshold(layer1)):.1e} (layer 1) per event; a live pixel is "
        f"called dead with a chance exp(-median): "
        f"{float(M.false_dead_rate(med).dot(np.full(40, 192_000))):.2g} expected of 7.68 M.",
    ]
    out = HERE / "RESULTS_pxd_masks.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
