"""Scale curve: wall time and peak memory of the engine and of one calibration against the number
of events; writes bench/RESULTS_scale.md.

One sample serves every point: the ecl-time case of bench/cases_ecl.py (Bhabha events, ECL only,
the hlt_bhabha skim) with 20 runs of 540k events (~10^7 events, ~6 GB; generated once into
bench/out/ by bench_calibrations.sample and reused). A point is the first N runs of it (2 runs
~10^6 events, 8 runs ~4x10^6, 20 runs ~10^7), timed in a fresh Python process of its own, so that
its peak memory is its own:

- engine: the ECL channel x energy histogram of bench/bench_engine.py (8736 x 100 bins) filled by
  :func:`b2calib.engine.collect` on 2 local processes (the public engine API only);
- calibration: ``run_calibrations`` of the calibration (default ecl-time) on 2 local processes,
  as bench/bench_calibrations.py runs it (its ``bench_one`` without the reference reads).

Memory: the peak resident set of the point's main process and of its largest worker
(``getrusage`` RUSAGE_SELF and RUSAGE_CHILDREN, ``ru_maxrss``), and, with psutil, the peaks of the
sum over the main process and all its workers sampled every 0.1 s: of their resident sets (RSS),
and of their proportional sets (PSS, each page shared by n processes counted 1/n times). The local
workers are forked from the main process: a worker forked when the main process holds the
histograms of many runs (a calibration's second pass) has them all in its RSS, although they are
shared pages nobody copies, so the sum of RSS counts them once per process; the sum of PSS counts
what the process tree occupies. The result: the histograms the point's consumer holds per run
(the engine's :class:`~b2calib.engine.RunOutput`; for a calibration the output of its collector
pass, which the IoV strategy merges over the run ranges it chooses after collecting: per
collector class the largest output of a ``collect`` call), reported beside the PSS net of it.
Time: the exponent ``b`` of
``time ~ events^b`` fitted on log-log axes (1 is linear; fixed costs such as starting the
workers and the fits pull it below 1 at small samples), and the line ``a + b * events``.

Usage: python bench/bench_scale.py [--runs 2,8,20] [--calibration ecl-time]
                             [--sample-runs 20] [--events-per-run 540000] [--output PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_calibrations import bench_one, load_cases, sample  # noqa: E402
from bench_engine import ECL  # noqa: E402
from bench_sim import machine  # noqa: E402

from b2calib._workers import shutdown_pool  # noqa: E402
from b2calib.calibration import runner  # noqa: E402
from b2calib.engine import Dataset, RunOutput, collect  # noqa: E402

#: runs of the sample used at each point by default (~10^6, 4x10^6 and 10^7 events)
DEFAULT_RUNS = (2, 8, 20)
N_RUNS = 20
EVENTS_PER_RUN = 540_000


def scale_sim(n_runs: int = N_RUNS, events_per_run: int = EVENTS_PER_RUN) -> dict[str, Any]:
    """The sample's settings: the ecl-time case's, with 20 runs of 540k events by default."""
    base = load_cases()["ecl-time"]["sim"]
    return {**base, "n_runs": n_runs, "events_per_run": events_per_run}


def peak_mib() -> tuple[float, float]:
    """Peak resident set of this process and of its largest finished child, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, child


def output_bytes(output: RunOutput) -> int:
    """Bytes of the histograms' storage (with flow bins) in a collector's output."""
    return sum(h.view(flow=True).nbytes for key in output for h in output[key].values())


def one_point(kind: str, n_runs: int, calibration: str, sim: dict[str, Any]) -> dict[str, Any]:
    """Time one point in this process (the child that :func:`run_point` starts)."""
    folder = sample(sim)
    if kind == "engine":
        data = Dataset.select(folder, skims="hlt_bhabha", runs=range(1, n_runs + 1))
        t0 = time.perf_counter()
        result = collect(ECL, data, executor="processes", workers=2, cache=False, progress=False)
        wall = time.perf_counter() - t0
        digits = int(result.output.merged()["channel_value"].values().sum())  # type: ignore[attr-defined]
        out = {"events": data.n_events, "wall": wall, "files": len(data), "digits": digits}
        out["result"] = output_bytes(result.output) / 2**20
    else:
        # the size of what each collect call gives the runner (the runner itself is unchanged)
        sizes: dict[str, int] = {}
        real = runner.collect

        def measured(collector: Any, dataset: Any, **kw: Any) -> Any:
            got = real(collector, dataset, **kw)
            name = type(collector).__qualname__
            sizes[name] = max(sizes.get(name, 0), output_bytes(got.output))
            return got

        runner.collect = measured  # type: ignore[assignment]
        case = {**load_cases()[calibration], "sim": sim, "runs": f"1-{n_runs}"}
        r = bench_one(calibration, case, reads=False)
        out = {
            "events": r["events"],
            "wall": r["calibrate"],
            "files": r["files"],
            "status": r["status"],
            "iterations": r["iterations"],
            "payloads": r["payloads"],
            "result": sum(sizes.values()) / 2**20,
        }
    shutdown_pool()  # the kept pool's workers end, so that their peaks count as children's
    own, child = peak_mib()
    return {**out, "kind": kind, "runs": n_runs, "rss_main": own, "rss_worker": child}


def run_point(kind: str, n_runs: int, calibration: str, sim: dict[str, Any]) -> dict[str, Any]:
    """One point in a fresh process, its whole process tree's memory sampled (with psutil)."""
    cmd = [
        sys.executable,
        __file__,
        *("--one", kind, str(n_runs), "--calibration", calibration),
        *("--sample-runs", str(sim["n_runs"]), "--events-per-run", str(sim["events_per_run"])),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = peak_pss = 0.0
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            total = total_pss = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):  # a worker that just ended
                        info = p.memory_full_info()
                        total += info.rss
                        total_pss += info.pss
            except psutil.Error:
                break
            peak = max(peak, total / 2**20)
            peak_pss = max(peak_pss, total_pss / 2**20)
            time.sleep(0.1)
    stdout, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{kind} at {n_runs} runs failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["rss_total"] = peak if psutil is not None else float("nan")
    result["pss_total"] = peak_pss if psutil is not None else float("nan")
    return result


def slope(points: list[dict[str, Any]]) -> float:
    """The exponent b of wall ~ events^b (least squares on log-log axes)."""
    x = np.log([p["events"] for p in points])
    y = np.log([p["wall"] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def linear(points: list[dict[str, Any]]) -> tuple[float, float, float]:
    """The fit wall = a + b * events: fixed seconds ``a``, microseconds per event ``b``, and the
    largest relative deviation of a point from it."""
    x = np.array([p["events"] for p in points], dtype=float)
    y = np.array([p["wall"] for p in points])
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b * 1e6), float(np.max(np.abs(a + b * x - y) / y))


def per_run_slope(points: list[dict[str, Any]], values: list[float]) -> float:
    """MiB more per run read: the slope of ``values`` against the points' runs (least
    squares; 0 for a single point)."""
    if len(points) < 2:
        return 0.0
    return float(np.polyfit([p["runs"] for p in points], values, 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default=",".join(map(str, DEFAULT_RUNS)))
    ap.add_argument("--calibration", default="ecl-time")
    ap.add_argument("--sample-runs", type=int, default=N_RUNS, help="runs of the sample")
    ap.add_argument("--events-per-run", type=int, default=EVENTS_PER_RUN)
    ap.add_argument("--output", default=str(HERE / "RESULTS_scale.md"), help="report file")
    ap.add_argument("--one", nargs=2, metavar=("KIND", "RUNS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    sim = scale_sim(args.sample_runs, args.events_per_run)
    if args.one:
        print(json.dumps(one_point(args.one[0], int(args.one[1]), args.calibration, sim)))
        return
    runs = [int(r) for r in args.runs.split(",")]
    t0 = time.perf_counter()
    folder = sample(sim)
    size = sum(f.stat().st_size for f in folder.rglob("*.root")) / 2**30
    print(f"sample {folder.name}: {size:.1f} GiB ({time.perf_counter() - t0:.0f} s)", flush=True)
    load_before = os.getloadavg()[0]
    points: dict[str, list[dict[str, Any]]] = {"engine": [], "calibration": []}
    for n in runs:
        for kind in points:
            points[kind].append(run_point(kind, n, args.calibration, sim))
            p = points[kind][-1]
            print(
                f"{kind} {n} runs: {p['events']:,} events {p['wall']:.1f} s, RSS main "
                f"{p['rss_main']:.0f} MiB, worker {p['rss_worker']:.0f} MiB, total "
                f"{p['rss_total']:.0f} MiB, total PSS {p['pss_total']:.0f} MiB, result "
                f"{p['result']:.0f} MiB",
                flush=True,
            )
    load = (load_before + os.getloadavg()[0]) / 2
    what = {
        "engine": "engine: ECL channel x energy histogram (8736 x 100), 2 local processes",
        "calibration": f"calibration {args.calibration}, 2 local processes",
    }
    lines = [
        "# Scale curve: time and memory against the number of events",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}; load average about {load:.1f} while measured (other "
        "processes share the cores: compare the points with each other)",
        f"- command: `python bench/bench_scale.py --runs {args.runs} --calibration "
        f"{args.calibration} --sample-runs {args.sample_runs} --events-per-run "
        f"{args.events_per_run}`",
        f"- sample: the ecl-time case with {args.sample_runs} runs of {args.events_per_run:,} "
        "events "
        f"(`bench/out/{folder.name}`, {size:.1f} GiB); a point reads its first runs, in a "
        "process of its own",
        "- memory: peak resident set of the main process and of its largest worker "
        "(getrusage), and the peaks of their sums (psutil, sampled every 0.1 s): total RSS "
        "counts the pages a forked worker shares with the main process once per process, "
        "total PSS once; result: the histograms the consumer holds per run (the engine's "
        "output; the calibration's collector pass, which its IoV strategy merges over run "
        "ranges chosen after collecting), and the peak total PSS net of it",
        "",
        "| what | runs | events | files | wall time | events/s | main RSS | largest worker "
        "RSS | total RSS | total PSS | result | PSS net of result |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, pts in points.items():
        for p in pts:
            lines.append(
                f"| {what[kind].split(':')[0].split(',')[0]} | {p['runs']} | {p['events']:,} "
                f"| {p['files']} | {p['wall']:.1f} s | {p['events'] / p['wall']:,.0f} "
                f"| {p['rss_main']:.0f} MiB | {p['rss_worker']:.0f} MiB "
                f"| {p['rss_total']:.0f} MiB | {p['pss_total']:.0f} MiB "
                f"| {p['result']:.0f} MiB | {p['pss_total'] - p['result']:.0f} MiB |"
            )
    lines.append("")
    for kind, pts in points.items():
        rss = [p["rss_total"] if p["rss_total"] == p["rss_total"] else p["rss_main"] for p in pts]
        extra = ""
        if kind == "calibration":
            extra = (
                f"; status {', '.join(p['status'] for p in pts)}, iterations "
                f"{', '.join(str(p['iterations']) for p in pts)}, payloads "
                f"{', '.join(str(p['payloads']) for p in pts)}"
            )
        fixed, per_event, dev = linear(pts)
        per_run = per_run_slope(pts, rss)
        pss = [p["pss_total"] for p in pts]
        result = [p["result"] for p in pts]
        net = [a - b for a, b in zip(pss, result, strict=True)]
        main = [p["rss_main"] - p["result"] for p in pts]
        extra = (
            f"; peak total PSS {min(pss):.0f}-{max(pss):.0f} MiB ({per_run_slope(pts, pss):.0f} "
            f"MiB more per run), of which the result {per_run_slope(pts, result):.1f} MiB per "
            f"run; net of the result {min(net):.0f}-{max(net):.0f} MiB "
            f"({per_run_slope(pts, net):.1f} MiB per run); the main process's peak RSS net of "
            f"the result (which it holds) {min(main):.0f}-{max(main):.0f} MiB "
            f"({per_run_slope(pts, main):.1f} MiB per run)" + extra
        )
        lines.append(
            f"- {what[kind]}: time ~ events^{slope(pts):.2f} (log-log fit over "
            f"{pts[0]['events']:,}-{pts[-1]['events']:,} events); as a line, {fixed:.1f} s + "
            f"{per_event:.2f} us/event (points within {100 * dev:.0f} % of it); peak total RSS "
            f"{min(rss):.0f}-{max(rss):.0f} MiB ({max(rss) / min(rss):.2f}x from the smallest "
            f"to the largest point, {per_run:.0f} MiB more per run read){extra}"
        )
    lines.append("")
    text = "\n".join(lines)
    Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
