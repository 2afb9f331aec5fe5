"""Engine and fit benchmark, side by side in one run; writes bench/RESULTS_engine.md.

Task: fill the ECL channel x energy histogram (8736 crystals x 100 bins) from ECLCalDigits of a
generated Bhabha bucket of >= 2 million events, with
- the bare uproot read of the same two branches (the limit: nothing is filled), on 1 and on 2
  processes (a pool started once, as the engine's);
- the bare read followed by the engine's compiled fill (the limit of any loop that fills);
- the b2calib engine: in-process, 2 local processes (its kept pool, and a pool started in the
  call: the first collect of a process), 2 threads, Dask LocalCluster with 2 workers (through
  a Client made once, as a farm's user holds one, and with the cluster passed, which connects a
  new client in every call);
- ROOT RDataFrame (pip package `root`, JIT warmed up), without and with implicit multithreading;
- a plain uproot + numpy notebook loop.
Then the 8736-channel peak fits: the batched path (numpy, compiled on 1 thread and on every
core) vs per-channel iminuit.

Every row opens its files in every round, as the bare read does: the engine keeps no file open
from one pass to the next here (``B2CALIB_OPEN_FILES=0``, set before b2calib is imported, so
the workers and Dask's have it too). A calibration's repeated passes do keep them open (see
bench_calibrations.py).

Usage: python bench/bench_engine.py [--events 2200000] [--fits-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import cast
from unittest import mock

import awkward as ak
import hist
import numpy as np
import uproot

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ["B2CALIB_OPEN_FILES"] = "0"  # each pass opens its files, as the bare read does
from bench_sim import bhabha_bucket_config, machine  # noqa: E402

from b2calib._workers import shutdown_pool  # noqa: E402
from b2calib.engine import ChannelValueCollector, CollectResult, Dataset, collect  # noqa: E402
from b2calib.engine.fill import fill_2d  # noqa: E402
from b2calib.engine.integrity import EVENT_BRANCH  # noqa: E402
from b2calib.fit import ChannelFits, batched, fit_channels  # noqa: E402
from b2calib.sim import simulate  # noqa: E402

BRANCHES = ["ECLCalDigits_m_CellId", "ECLCalDigits_m_Energy"]
ECL = ChannelValueCollector(BRANCHES[0], BRANCHES[1], 8736, (100, 0.0, 6.0), first_channel=1)


def bucket(events: int) -> Path:
    """The Bhabha bucket (ECL branches, hlt_bhabha), generated once and reused."""
    out = HERE / "out" / f"bhabha_{events}"
    if (out / "simulation.json").exists():
        return out
    n_runs = 20
    # physics runs are ~92.5 % live: ask for a little more so the bucket reaches `events`
    cfg = bhabha_bucket_config(n_runs=n_runs, events_per_run=events / n_runs / 0.925, seed=2026)
    simulate(cfg, out, jobs=2)
    return out


def timed(fn: Callable[[], object], repeat: int = 2) -> tuple[float, object]:
    """Best of ``repeat`` wall times (the first run also warms the page cache)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def interleaved(
    runs: dict[str, Callable[[], object]], rounds: int
) -> tuple[dict[str, float], dict[str, object]]:
    """Best wall time of each of ``runs`` over ``rounds`` rounds that run each once in turn (a
    load that comes and goes touches them all alike), and each one's last result. The first
    round also warms the page cache and the workers."""
    best = dict.fromkeys(runs, float("inf"))
    out: dict[str, object] = {}
    for _ in range(rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            out[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, out


def bare_read(files: list[str]) -> int:
    n = 0
    for f in files:
        with uproot.open(f) as fh:
            a = fh["tree"].arrays(BRANCHES)
        n += len(a)
    return n


def balanced_halves(data: Dataset) -> list[list[str]]:
    """The files in two lists of about equal events (the largest first, each to the lighter
    list): the 2-process read without the imbalance of every other file (this bucket's files
    hold 23k-100k events: every other file gives one process 54 % of the events)."""
    halves: list[list[str]] = [[], []]
    events = [0, 0]
    for f in sorted(data, key=lambda f: -f.n_events):
        i = events.index(min(events))
        halves[i].append(f.path)
        events[i] += f.n_events
    return halves


def collect_cpu(fn: Callable[[], object], workers: list[int]) -> tuple[float, float]:
    """CPU seconds of one call of ``fn``: this process's, and that of the processes ``workers``."""
    import psutil

    def cpu(pids: list[int]) -> float:
        return sum(sum(psutil.Process(p).cpu_times()[:2]) for p in pids)

    c0, w0 = time.process_time(), cpu(workers)
    fn()
    return time.process_time() - c0, cpu(workers) - w0


def read_and_fill(files: list[str], numbers: bool = False) -> np.ndarray:
    """The bare read, then the engine's compiled fill of the same histogram (no integrity
    checks, no per-run histograms): what the in-process engine cannot go below. With
    ``numbers``, the event numbers are read too, as the engine does for its duplicate-event
    check (:mod:`b2calib.engine.integrity`)."""
    view = np.zeros((8736 + 2, 100 + 2), np.int64, order="F")
    channels = (8736, 0.5, 8736.5)
    branches = [*BRANCHES, EVENT_BRANCH] if numbers else BRANCHES
    for f in files:
        with uproot.open(f) as fh:
            a = fh["tree"].arrays(branches)
        ch = ak.to_numpy(ak.flatten(a[BRANCHES[0]]))
        e = ak.to_numpy(ak.flatten(a[BRANCHES[1]]))
        fill_2d(view, ch, e, channels, ECL.value_bins)
    return view


def cold_pool(data: Dataset) -> CollectResult:
    """The engine on 2 local processes started in the call (as every call did before its pool
    was kept: the first collect of a process)."""
    shutdown_pool()
    return collect(ECL, data, executor="processes", workers=2, cache=False, progress=False)


def numpy_loop(files: list[str]) -> np.ndarray:
    total = np.zeros((8736, 100))
    for f in files:
        with uproot.open(f) as fh:
            a = fh["tree"].arrays(BRANCHES)
        ch = ak.to_numpy(ak.flatten(a[BRANCHES[0]]))
        e = ak.to_numpy(ak.flatten(a[BRANCHES[1]]))
        counts, _, _ = np.histogram2d(ch, e, bins=[8736, 100], range=[[0.5, 8736.5], [0.0, 6.0]])
        total += counts
    return total


def rdataframe(files: list[str], mt: bool) -> tuple[float, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ROOT

    ROOT.gROOT.SetBatch(True)
    if mt:
        ROOT.EnableImplicitMT(2)
    else:
        ROOT.DisableImplicitMT()
    model = ROOT.RDF.TH2DModel("h", "h", 8736, 0.5, 8736.5, 100, 0.0, 6.0)
    # warm the JIT on one file
    ROOT.RDataFrame("tree", files[0]).Histo2D(model, *BRANCHES).GetValue()
    vec = ROOT.std.vector("string")()
    for f in files:
        vec.push_back(f)
    t0 = time.perf_counter()
    h = ROOT.RDataFrame("tree", vec).Histo2D(model, *BRANCHES).GetValue()
    dt = time.perf_counter() - t0
    counts = np.array(
        [[h.GetBinContent(i + 1, j + 1) for j in range(100)] for i in range(0, 8736, 97)]
    )
    return dt, counts


def synthetic_channels(seed: int = 1) -> hist.Hist:
    """8736 channels x 100 bins: Gaussian peaks (400 entries) on a flat background."""
    rng = np.random.default_rng(seed)
    n_ch = 8736
    mu = rng.normal(1.0, 0.03, n_ch)
    sig = rng.uniform(0.04, 0.06, n_ch)
    n = rng.poisson(400, n_ch)
    ch = np.repeat(np.arange(n_ch), n)
    bk = rng.integers(0, n_ch, 200_000)
    h = hist.Hist(
        hist.axis.Regular(n_ch, -0.5, n_ch - 0.5),
        hist.axis.Regular(100, 0.6, 1.4),
        storage=hist.storage.Int64(),
    )
    h.fill(
        np.concatenate([ch, bk]).astype(float),
        np.concatenate([rng.normal(mu[ch], sig[ch]), rng.uniform(0.6, 1.4, 200_000)]),
    )
    return h


def fit_benchmark() -> list[str]:
    """The 8736-channel peak fits, side by side in one run (interleaved, best of 5): the numpy
    path (the vectorised iteration; the fallback without numba), the compiled path on one thread
    and on one thread per core, and per-channel iminuit (the reference). Lines of the report."""
    h = synthetic_channels()
    t0 = time.perf_counter()
    fit_channels(h, background=True, fallback=False)  # numba: compile, or load the cache
    first = time.perf_counter() - t0
    cores = os.cpu_count() or 1

    def numpy_path() -> ChannelFits:
        with mock.patch.object(batched, "_compiled", return_value=None):
            return fit_channels(h, background=True, fallback=False)

    paths: dict[str, Callable[[], ChannelFits]] = {
        "batched, numpy (the fallback without numba)": numpy_path,
        "batched, compiled (numba), 1 thread": lambda: fit_channels(
            h, background=True, fallback=False, threads=1
        ),
        f"batched, compiled (numba), {cores} threads (default)": lambda: fit_channels(
            h, background=True, fallback=False
        ),
    }
    best = dict.fromkeys(paths, float("inf"))
    fits: dict[str, ChannelFits] = {}
    for _ in range(5):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fits[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    t_ref, ref = timed(lambda: fit_channels(h, background=True, method="iminuit"), repeat=1)
    assert isinstance(ref, ChannelFits)
    numpy_name = next(iter(paths))
    lines = [
        "## 8736-channel peak fits (Gaussian + flat background, 100 bins, ~400 entries each)",
        "",
        f"- load average before the fits: {os.getloadavg()[0]:.2f} ({cores} cores)",
        "",
        "| method | wall time | per channel | / numpy path | channels OK | largest difference "
        "to iminuit | statuses as iminuit |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, fit in [*fits.items(), ("per-channel iminuit (reference)", ref)]:
        t = best.get(name, t_ref)
        ok = fit.ok & ref.ok
        diff = max(
            float(np.max(np.abs(fit.values[p][ok] - ref.values[p][ok]) / ref.errors[p][ok]))
            for p in ref.parameters
        )
        lines.append(
            f"| {name} | {t:.3f} s | {1e6 * t / 8736:.0f} us | {t / best[numpy_name]:.2f} | "
            f"{int(fit.ok.sum())} | {diff:.4f} sigma | {np.array_equal(fit.status, ref.status)} |"
        )
    compiled = list(paths)[1:]
    lines += [
        "",
        f"- compiled vs numpy path: {best[numpy_name] / best[compiled[0]]:.2f}x faster on 1 "
        f"thread, {best[numpy_name] / best[compiled[1]]:.2f}x on {cores}; iminuit vs compiled "
        f"({cores} threads): {t_ref / best[compiled[1]]:.0f}x slower",
        f"- first call of the compiled fit (numba compiles, or loads its cache): {first:.2f} s",
        "- RooFit was not benchmarked: a per-channel RooFit loop is slower than the iminuit "
        "reference by construction (same MINUIT, plus RooFit's overhead).",
        "",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2_200_000)
    ap.add_argument("--fits-only", action="store_true", help="print the fit part only")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the engine rows")
    args = ap.parse_args()
    if args.fits_only:
        print(f"- machine: {machine()}\n")
        print("\n".join(fit_benchmark()))
        return
    folder = bucket(args.events)
    data = Dataset.select(folder, skims="hlt_bhabha")
    files = [f.path for f in data]
    n_events = data.n_events
    rows: list[tuple[str, float, str]] = []

    halves = balanced_halves(data)
    load_before = os.getloadavg()[0]
    from concurrent.futures import ProcessPoolExecutor

    from distributed import Client, LocalCluster

    with (
        ProcessPoolExecutor(2) as pool,
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        best, out = interleaved(
            {
                "bare": lambda: bare_read(files),
                "bare2": lambda: sum(pool.map(bare_read, [files[0::2], files[1::2]])),
                "bare2bal": lambda: sum(pool.map(bare_read, halves)),
                "readfill": lambda: read_and_fill(files),
                "readfillev": lambda: read_and_fill(files, numbers=True),
                "in": lambda: collect(ECL, data, executor="inprocess", cache=False, progress=False),
                "p2": lambda: collect(
                    ECL, data, executor="processes", workers=2, cache=False, progress=False
                ),
                "p2cold": lambda: cold_pool(data),
                "t2": lambda: collect(
                    ECL, data, executor="threads", workers=2, cache=False, progress=False
                ),
                "dask": lambda: collect(ECL, data, executor=client, cache=False, progress=False),
                "daskcl": lambda: collect(ECL, data, executor=cluster, cache=False, progress=False),
            },
            rounds=args.rounds,
        )
        load_after = os.getloadavg()[0]
        # where the CPU goes: the caller's and the workers' seconds for one collect
        from b2calib._workers import _Shared

        cpu = {
            "in-process": collect_cpu(
                lambda: collect(ECL, data, executor="inprocess", cache=False, progress=False), []
            ),
            "2 processes": collect_cpu(
                lambda: collect(
                    ECL, data, executor="processes", workers=2, cache=False, progress=False
                ),
                list(_Shared.pool._processes) if _Shared.pool is not None else [],
            ),
            "Dask (2 workers)": collect_cpu(
                lambda: collect(ECL, data, executor=client, cache=False, progress=False),
                list(client.run(os.getpid).values()),
            ),
        }
    t_bare2bal = best["bare2bal"]
    t_bare, t_bare2, t_fill, t_fillev, t_in, t_p2, t_cold, t_t2, t_dask, t_daskcl = (
        best[k]
        for k in (
            "bare",
            "bare2",
            "readfill",
            "readfillev",
            "in",
            "p2",
            "p2cold",
            "t2",
            "dask",
            "daskcl",
        )
    )
    r_in, r_p2, r_cold, r_t2, r_dask, r_daskcl = (
        cast(CollectResult, out[k]) for k in ("in", "p2", "p2cold", "t2", "dask", "daskcl")
    )
    rows.append(("bare uproot read of the 2 branches (limit)", t_bare, ""))
    rows.append(
        (
            "bare uproot read, 2 processes (parallel limit)",
            t_bare2,
            f"{t_bare / t_bare2:.2f}x the 1-process read on this machine",
        )
    )
    rows.append(
        (
            "bare uproot read, 2 processes, files split by events",
            t_bare2bal,
            f"{t_bare / t_bare2bal:.2f}x the 1-process read: each process ~50 % of the events "
            "(every other file: 46 / 54 %)",
        )
    )
    rows.append(
        (
            "bare read + the engine's compiled fill (limit of a filling loop)",
            t_fill,
            "1 process",
        )
    )
    rows.append(
        (
            "bare read + fill + the event numbers (read by the engine's duplicate-event check)",
            t_fillev,
            "1 process",
        )
    )
    rows.append(("engine, in-process (1 process)", t_in, f"{t_in / t_fill:.2f}x read + fill"))
    rows.append(("engine, 2 local processes (kept pool)", t_p2, ""))
    rows.append(("engine, 2 local processes started in the call", t_cold, "a first collect"))
    rows.append(("engine, 2 threads", t_t2, ""))
    rows.append(("engine, Dask LocalCluster (2 workers), its Client passed", t_dask, ""))
    rows.append(
        (
            "engine, Dask LocalCluster (2 workers), the cluster passed",
            t_daskcl,
            "the engine keeps its client from the first call",
        )
    )
    t_np, np_counts = timed(lambda: numpy_loop(files), repeat=1)
    rows.append(("plain uproot + numpy histogram2d loop", t_np, ""))
    t_rdf, rdf_counts = rdataframe(files, mt=False)
    rows.append(("ROOT RDataFrame Histo2D, single thread", t_rdf, "JIT warmed up"))
    t_rdf_mt, _ = rdataframe(files, mt=True)
    rows.append(("ROOT RDataFrame Histo2D, implicit MT (2)", t_rdf_mt, "JIT warmed up"))

    engine = r_in.output.merged()["channel_value"].values()
    same = all(
        np.array_equal(engine, r.output.merged()["channel_value"].values())
        for r in (r_p2, r_cold, r_t2, r_dask, r_daskcl)
    )
    agree_fill = np.array_equal(engine, cast(np.ndarray, out["readfill"])[1:-1, 1:-1])
    agree_np = np.array_equal(engine, np_counts)
    agree_rdf = np.array_equal(engine[::97], rdf_counts)

    fit_lines = fit_benchmark()

    lines = [
        "# Engine and fit benchmark",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}",
        f"- data: {n_events:,} Bhabha events in {len(files)} files "
        f"({sum(os.path.getsize(f) for f in files) / 1e6:.0f} MB, ZSTD), "
        f"{int(engine.sum()):,} ECL digits",
        "- task: ECL channel x energy histogram, 8736 x 100 bins",
        f"- command: `python bench/bench_engine.py --events {args.events}`; the engine rows are "
        f"the best of {args.rounds} interleaved rounds; load average (1 min) "
        f"{load_before:.2f} before them, {load_after:.2f} after; every row opens its files in "
        "every round (the engine keeps none open: `B2CALIB_OPEN_FILES=0`)",
        "",
        "| what | wall time | events/s | / bare read | note |",
        "|---|---:|---:|---:|---|",
    ]
    for name, t, note in rows:
        lines.append(f"| {name} | {t:.2f} s | {n_events / t:,.0f} | {t / t_bare:.2f} | {note} |")
    lines += [
        "",
        f"- engine 2 threads vs 1 process: {t_in / t_t2:.2f}x faster; 2 processes: "
        f"{t_in / t_p2:.2f}x (started in the call: {t_in / t_cold:.2f}x); Dask 2 workers: "
        f"{t_in / t_dask:.2f}x (the cluster passed: {t_in / t_daskcl:.2f}x); the bare read "
        f"itself gains {t_bare / t_bare2:.2f}x from a "
        "second process in this run (repeated runs on this VM vary by about 20 %)",
        f"- engine vs the 2-process bare read: 2 processes {t_p2 / t_bare2:.2f}, 2 threads "
        f"{t_t2 / t_bare2:.2f}, Dask 2 workers {t_dask / t_bare2:.2f}; vs the read split by "
        f"events: 2 processes {t_p2 / t_bare2bal:.2f}, Dask {t_dask / t_bare2bal:.2f}",
        "- CPU of one collect after the rounds, the caller's + the workers': "
        + ", ".join(f"{k} {c:.2f} + {w:.2f} s" for k, (c, w) in cpu.items())
        + " (the caller holds Dask's scheduler too)",
        f"- engine (1 process) vs RDataFrame single thread: {t_rdf / t_in:.2f}x faster; "
        f"vs RDataFrame with implicit MT: {t_rdf_mt / t_in:.2f}x",
        f"- in-process engine vs the bare read + compiled fill: {t_in / t_fill:.2f}x (the fill "
        f"alone is {(t_fill - t_bare) / t_bare:.0%} of the bare read in this run; reading the "
        f"event numbers too, {(t_fillev - t_fill) / t_bare:.0%} more); vs read + fill + event "
        f"numbers: {t_in / t_fillev:.2f}x",
        f"- identical histograms in-process / 2 processes (kept, started) / 2 threads / Dask: "
        f"{same}; equal to the read + fill: {agree_fill}, to the numpy loop: {agree_np}; equal "
        f"to RDataFrame (every 97th channel): {agree_rdf}",
        "",
        *fit_lines,
    ]
    text = "\n".join(lines)
    (HERE / "RESULTS_engine.md").write_text(text)
    (HERE / "out" / "engine_timings.json").write_text(json.dumps({n: t for n, t, _ in rows}))
    print(text)


if __name__ == "__main__":
    main()
