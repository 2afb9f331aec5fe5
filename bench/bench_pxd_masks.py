"""The PXD masks against their 2 s budget: the masks over all 7.68 M pixels from 10^6 events;
writes bench/RESULTS_pxd_masks.md.

The sample is bench/cases_pxd_masks.py's (one collision run of ~10^6 events, ~20-30 hits per
pixel; generated once into bench/out/). Measured, on 2 processes (the engine's two work items of
the run's file), best of ``--repeat``:

- bare read: uproot reading the three PXD branches the collector reads (sensor ID, u, v), the
  same entry ranges as the engine's work items, one per process (``TTree.arrays``); and the
  engine's own read of them (``b2calib.io.SkimFile.arrays``: each basket's bytes straight into
  the arrays), the limit of its event loop;
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
import resource
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
from b2calib.io import open_skim  # noqa: E402

BRANCHES = [b for b in M.PixelHitCollector().branches if b.startswith("PXDDigits_")]
BUDGET_S = 2.0


def read_item(job: tuple[str, int, int]) -> tuple[int, float]:
    """Bare read of the PXD branches of one work item: (digits read, CPU seconds)."""
    path, start, stop = job
    c0 = time.process_time()
    with uproot.open(path) as f:
        arrays = f["tree"].arrays(BRANCHES, entry_start=start, entry_stop=stop)
    return len(arrays[BRANCHES[0]].layout.content), time.process_time() - c0


def engine_read_item(job: tuple[str, int, int]) -> tuple[int, float]:
    """The engine's read of the PXD branches of one work item: (digits, CPU seconds)."""
    path, start, stop = job
    c0 = time.process_time()
    with open_skim(path) as f:
        arrays = f.arrays(BRANCHES, start, stop)
    return len(arrays[BRANCHES[0]].layout.content), time.process_time() - c0


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its finished children so far."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def sum_map(pool: Any, fn: Any, jobs: list[Any], cpu: list[float]) -> int:
    """Digits read by ``fn`` over ``jobs`` in ``pool``; appends their CPU seconds to ``cpu``."""
    out = list(pool.map(fn, jobs))
    cpu.append(sum(c for _, c in out))
    return sum(n for n, _ in out)


def collector_item(job: tuple[str, int, int]) -> tuple[float, ...]:
    """One work item: (uproot read, engine read, compiled count, numpy pixel numbers, numpy
    bincount, hand-over as a plain Hist, hand-over as PixelHits), seconds."""
    path, start, stop = job
    tu = time.perf_counter()
    with uproot.open(path) as f:
        f["tree"].arrays(BRANCHES, entry_start=start, entry_stop=stop)
    t0 = time.perf_counter()
    with open_skim(path) as sf:
        a = sf.arrays(BRANCHES, start, stop)
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
    return t0 - tu, t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5


def timed(fn: Any, repeat: int) -> tuple[list[float], Any]:
    """Wall times of ``repeat`` calls and the last result."""
    out, times = None, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    times, out = timed(fn, repeat)
    return min(times), out


def spread(times: list[float]) -> str:
    return f"best of {len(times)}; all: " + ", ".join(f"{t:.2f}" for t in times)


def run_case(label: str, sim: dict[str, Any], repeat: int, config: M.MaskConfig) -> list[str]:
    """Time one sample (the masks with ``config``); returns its section of the results."""
    data = sample(sim)
    files = sorted(str(p) for p in data.rglob("*.root") if p.parent.name != "truth")
    dataset = Dataset.from_files(files)
    jobs = [(it.path, it.entry_start, it.entry_stop) for it in plan(dataset)]
    n_events = sum(stop - start for _, start, stop in jobs)
    load = os.getloadavg()
    collector = M.PixelHitCollector()
    t0 = time.perf_counter()
    collector.prepare()  # the compiled count's load, once per process (0 when already loaded)
    t_prepare = time.perf_counter() - t0
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(read_item, jobs))  # warm the page cache and the workers
        read_cpu: list[float] = []
        engine_cpu: list[float] = []
        reads, digits = timed(lambda: sum_map(pool, read_item, jobs, read_cpu), repeat)
        list(pool.map(engine_read_item, jobs))
        engine_reads, _ = timed(lambda: sum_map(pool, engine_read_item, jobs, engine_cpu), repeat)
        parts = min(
            (list(pool.map(collector_item, jobs)) for _ in range(repeat)),
            key=lambda rows: max(sum(r) for r in rows),
        )
    t_read, t_engine_read = min(reads), min(engine_reads)
    per_item = np.max(np.array(parts), axis=0)  # the slower of the items, per step

    def run(executor: str, verify: bool = False) -> Any:
        return collect(
            collector,
            dataset,
            executor=executor,
            workers=2,
            cache=False,
            progress=False,
            verify=verify,
        )

    collect_cpu: list[float] = []

    def run_counted() -> Any:
        c0 = cpu_seconds()
        out = run("processes")
        collect_cpu.append(cpu_seconds() - c0)
        return out

    collects, result = timed(run_counted, repeat)
    threads, _ = timed(lambda: run("threads"), repeat)
    t_collect, t_threads = min(collects), min(threads)
    t_collect_verified, _ = best(lambda: run("processes", verify=True), 1)
    merged = result.output.merged()
    counts = np.asarray(merged["pixel_hits"].view(), dtype=np.int64)
    cal = M.hot_dead_calibration()

    def masks() -> Any:
        m = M.find_masks(counts, config)
        return m, M._payloads(counts, m, float(n_events)), M._diagnostics(counts, m, n_events)

    masks_times, (m, payloads, _) = timed(masks, repeat)
    t_masks = min(masks_times)
    t_find, _ = best(lambda: M.find_masks(counts, config), repeat)

    def calibrate() -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            db = ConditionsDB(Path(tmp) / "c.sqlite", author="bench")
            reports = run_calibrations(
                [cal],
                data,
                db=db,
                staging_tag="bench",
                cache=False,
                progress=False,
                executor="processes",
                workers=2,
            )
            db.close()
            return reports[cal.name]

    cals, report = timed(calibrate, max(1, repeat - 1))
    t_cal = min(cals)
    totals = [c + t_masks for c in collects]
    total = min(totals)
    med = m.median
    layer1 = med[:16].mean() / n_events
    layer2 = med[16:].mean() / n_events
    rows = [
        ("bare read: uproot TTree.arrays (3 PXD branches, 2 warm processes)", reads, ""),
        ("the engine's read alone (b2calib.io, same branches and processes)", engine_reads, ""),
        ("collect (engine, 2 processes, no cache, no verify)", collects, ""),
        ("collect (engine, 2 threads, no cache, no verify)", threads, ""),
        ("collect, files verified (Adler-32 of the file)", [t_collect_verified], ""),
        ("masks: checks, dead and hot steps (find_masks)", [t_find], "7.68 M pixels"),
        ("masks + payloads + diagnostics (the algorithm)", masks_times, ""),
        ("**collect (processes) + algorithm**", totals, f"budget {BUDGET_S:.0f} s"),
        (
            "calibrate (run_calibrations, processes: collect, algorithm, checkpoint, staging)",
            cals,
            "",
        ),
    ]
    checks = M.check_statistics(counts, M.MaskConfig().min_hits)
    forced = config.min_hits != M.MaskConfig().min_hits
    lines = [
        f"## {label}",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average (1 min) when started "
        f"{load[0]:.1f}, at the end {os.getloadavg()[0]:.1f} (shared machine: other jobs may "
        "run beside it)",
        f"- sample: {n_events:,} events (one run, one file, {len(jobs)} work items), "
        f"{digits:,} PXD digits ({digits / n_events:.0f} per event); median hits per pixel "
        f"{med[:16].mean():.1f} (layer 1) and {med[16:].mean():.1f} (layer 2), i.e. a "
        f"background of {layer1:.1e} and {layer2:.1e} per pixel and event",
        f"- statistics checks: {'passed' if checks[0] else 'failed'} ({checks[1] or 'ok'}); "
        f"calibrate: {report.status}; masks found: {m.summary()}"
        + (
            f" (the masks timed with the checks at min_hits={config.min_hits:g}, the time "
            "of the steps does not depend on it)"
            if forced
            else ""
        ),
        f"- the compiled count's load in a fresh process (Collector.prepare, once per process, "
        f"before the workers fork): {t_prepare:.2f} s, not in the times below",
        "",
        "| step | best | all runs (s) | note |",
        "|---|---:|---|---|",
        *(
            f"| {name} | {min(ts):.2f} s | {', '.join(f'{t:.2f}' for t in ts)} | {note} |"
            for name, ts, note in rows
        ),
        "",
        f"collect / bare read: **{t_collect / t_read:.2f}x** (threads: "
        f"{t_threads / t_read:.2f}x); collect + algorithm / bare read: {total / t_read:.2f}x; "
        f"calibrate / bare read: {t_cal / t_read:.1f}x; collect / the engine's read alone: "
        f"{t_collect / t_engine_read:.2f}x. Collect + algorithm: **{total:.2f} s** "
        f"against the {BUDGET_S:.0f} s budget: "
        + ("met." if total <= BUDGET_S else f"not met ({total - BUDGET_S:+.2f} s)."),
        "",
        "CPU seconds (user + system of every process: far less sensitive to other jobs on "
        "the machine than wall times):",
        "",
        "| step | best | all runs (CPU s) | best / 2 cores |",
        "|---|---:|---|---:|",
        *(
            f"| {name} | {min(cs):.2f} s | {', '.join(f'{c:.2f}' for c in cs)} | "
            f"{min(cs) / 2:.2f} s |"
            for name, cs in (
                ("bare read: uproot TTree.arrays", read_cpu),
                ("the engine's read alone", engine_cpu),
                ("collect (engine, 2 processes: parent + workers)", collect_cpu),
            )
        ),
        "",
        f"Collect CPU / 2 + algorithm: **{min(collect_cpu) / 2 + t_masks:.2f} s**, the wall "
        "time on 2 idle cores with the two work items in parallel, against the "
        f"{BUDGET_S:.0f} s budget: "
        + ("met." if min(collect_cpu) / 2 + t_masks <= BUDGET_S else "not met.")
        + f" Collect CPU / bare read CPU: {min(collect_cpu) / min(read_cpu):.2f}x (uproot), "
        f"{min(collect_cpu) / min(engine_cpu):.2f}x (the engine's read).",
        "",
        "Per work item (the slower of the two, each on its own core):",
        "",
        "| part | time | per digit |",
        "|---|---:|---:|",
    ]
    names = (
        "uproot read of the item (TTree.arrays)",
        "**the engine's read of the item (b2calib.io)**",
        "**the collector's count: one compiled pass, 1 byte per pixel + carry**",
        "(numpy alternative) pixel numbers from sensor table, u, v",
        "(numpy alternative) np.bincount into 7.68 M int64",
        "hand-over as a plain hist.Hist (pickle 61 MB + unpickle)",
        "**hand-over as PixelHits (low byte, 7.7 MB + unpickle)**",
    )
    per_digit = digits / len(jobs)
    lines += [
        f"| {n} | {t:.3f} s | {t / per_digit * 1e9:.1f} ns |"
        for n, t in zip(names, per_item, strict=True)
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
        "",
    ]
    print("\n".join(lines), flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--case", choices=["full", "min", "min-lz4", "all"], nargs="+", default=["all"]
    )
    args = parser.parse_args()
    cases = runpy.run_path(str(HERE / "cases_pxd_masks.py"))
    todo = {
        "full": (
            "The bench sample: ~2e8 digits",
            cases["CASES"]["pxd-hot-dead"]["sim"],
            M.MaskConfig(),
        ),
        "min": (
            "The issue's case at its least: every sensor's median >= 15 hits per pixel",
            cases["MIN_STATS"],
            M.MaskConfig(),
        ),
        "min-lz4": (
            "The same sample written with LZ4 (basf2's fast-read choice) instead of zstd",
            cases["MIN_STATS_LZ4"],
            M.MaskConfig(),
        ),
    }
    keys = ["min", "min-lz4", "full"] if "all" in args.case else args.case
    lines = [
        "# PXD masks: the 2 s budget (masks over 7.68 M pixels from 10^6 events)",
        "",
        f"- machine: {machine()}",
        f"- command: `python bench/bench_pxd_masks.py --repeat {args.repeat} --case "
        f"{' '.join(args.case)}`",
        "",
    ]
    for key in keys:
        label, sim, config = todo[key]
        lines += run_case(label, sim, args.repeat, config)
    out = HERE / "RESULTS_pxd_masks.md"
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
