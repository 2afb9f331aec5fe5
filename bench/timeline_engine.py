"""Where the engine's time goes on 2 local processes and on Dask: a timeline per worker.

Runs the engine bench's task (ECL channel x energy, 8736 x 100 bins, ``bench/out/bhabha_N``)
a few times on 2 kept local processes and on a Dask LocalCluster(2), with the engine's
functions wrapped to record, on one clock (``time.perf_counter``: the system's monotonic
clock, the same in every process):
- in each worker: each batch's start and end, and the pickling of its partial;
- in the caller: the collect's start, the prepare and the pool's first submission, each
  partial's arrival, its unpickling (and on which thread), the merge of each batch and run,
  and the collect's end.
Prints one summary per executor and run (first batch's latency, idle at the start and at the
tail per worker, busy time, the caller's CPU spent on unpickling and merging).

Usage: python bench/timeline_engine.py [--events 1000000] [--rounds 3] [--dask]
(run by another checkout's interpreter, it times that checkout's engine: the functions it wraps
are the same; a diagnostic, not in ``make bench``)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import process as cf_process
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ["B2CALIB_OPEN_FILES"] = "0"  # as bench_engine.py: every pass opens its files

from bench_engine import ECL, bucket  # noqa: E402

from b2calib.engine import Dataset, _transfer, collect, loop  # noqa: E402

LOG = Path(tempfile.gettempdir()) / f"b2calib_timeline_{os.getpid()}"
_thread_cpu = time.thread_time


def _log(kind: str, **fields: Any) -> None:
    rec = {"kind": kind, "pid": os.getpid(), "t": time.perf_counter(), **fields}
    with (LOG / f"{os.getpid()}.jsonl").open("a") as fh:
        fh.write(json.dumps(rec) + "\n")


def _install() -> None:
    """Wrap the engine's functions in this process (workers forked after it inherit them)."""
    LOG.mkdir(exist_ok=True)
    process_batch = loop._process_batch
    wire_reduce = _transfer.Wire.__reduce__
    from_wire = _transfer._from_wire
    merge_add = loop._RunMerge.add
    close_run = loop._RunMerge.close_run

    sendback = cf_process._sendback_result

    def timed_sendback(*args: Any, **kwargs: Any) -> None:
        t0, c0 = time.perf_counter(), _thread_cpu()
        sendback(*args, **kwargs)
        _log("send", t0=t0, cpu=_thread_cpu() - c0)

    def timed_batch(collector: Any, batch: Any, cache_dir: Any, stop: bool) -> Any:
        t0, c0 = time.perf_counter(), _thread_cpu()
        out = process_batch(collector, batch, cache_dir, stop)
        _log("batch", index=batch.index, t0=t0, cpu=_thread_cpu() - c0)
        return out

    def timed_reduce(self: Any) -> Any:
        t0, c0 = time.perf_counter(), _thread_cpu()
        out = wire_reduce(self)
        _log("pickle", t0=t0, cpu=_thread_cpu() - c0, size=len(out[1][0]))
        return out

    def timed_from_wire(blob: bytes) -> Any:
        t0, c0 = time.perf_counter(), _thread_cpu()
        out = from_wire(blob)
        _log("unpickle", t0=t0, cpu=_thread_cpu() - c0, thread=threading.current_thread().name)
        return out

    def timed_add(self: Any, batch: Any, partial: Any) -> None:
        t0, c0 = time.perf_counter(), _thread_cpu()
        merge_add(self, batch, partial)
        _log("merge", index=batch.index, t0=t0, cpu=_thread_cpu() - c0)

    def timed_close(self: Any) -> None:
        t0, c0 = time.perf_counter(), _thread_cpu()
        close_run(self)
        _log("close_run", t0=t0, cpu=_thread_cpu() - c0)

    # pickled by reference, as the function it stands for
    timed_from_wire.__module__, timed_from_wire.__qualname__ = _transfer.__name__, "_from_wire"
    cf_process._sendback_result = timed_sendback  # type: ignore[attr-defined]
    loop._process_batch = timed_batch  # type: ignore[assignment]
    _transfer.Wire.__reduce__ = timed_reduce  # type: ignore[method-assign]
    _transfer._from_wire = timed_from_wire
    loop._RunMerge.add = timed_add  # type: ignore[method-assign]
    loop._RunMerge.close_run = timed_close  # type: ignore[method-assign]


def _records() -> list[dict[str, Any]]:
    out = []
    for f in LOG.glob("*.jsonl"):
        out += [json.loads(line) for line in f.read_text().splitlines()]
        f.unlink()
    return sorted(out, key=lambda r: r["t"])


def _summary(name: str, t_start: float, t_end: float, recs: list[dict[str, Any]]) -> None:
    me = os.getpid()
    batches = [r for r in recs if r["kind"] == "batch"]
    workers = sorted({r["pid"] for r in batches})
    wall = t_end - t_start
    print(f"\n## {name}: wall {wall:.3f} s, {len(batches)} batches on {len(workers)} workers")
    for w in workers:
        mine = sorted((r for r in batches if r["pid"] == w), key=lambda r: r["t0"])
        busy = sum(r["t"] - r["t0"] for r in mine)
        cpu = sum(r["cpu"] for r in mine)
        gaps = [b["t0"] - a["t"] for a, b in itertools.pairwise(mine)]
        pickles = [r for r in recs if r["kind"] == "pickle" and r["pid"] == w]
        sends = [r for r in recs if r["kind"] == "send" and r["pid"] == w]
        print(
            f"- worker {w}: {len(mine)} batches {[r['index'] for r in mine]}; first starts at "
            f"+{mine[0]['t0'] - t_start:.3f} s, last ends {t_end - mine[-1]['t']:.3f} s before "
            f"the end; busy {busy:.3f} s (CPU {cpu:.3f} s, {busy / wall:.0%} of the wall); "
            f"gaps between batches {sum(gaps):.3f} s (largest {max(gaps, default=0):.3f}); "
            f"pickling {sum(r['cpu'] for r in pickles):.3f} s CPU for "
            f"{sum(r['size'] for r in pickles) / 1e6:.1f} MB; sending (pickling included) "
            f"{sum(r['t'] - r['t0'] for r in sends):.3f} s wall, "
            f"{sum(r['cpu'] for r in sends):.3f} s CPU"
        )
    unp = [r for r in recs if r["kind"] == "unpickle" and r["pid"] == me]
    merges = [r for r in recs if r["kind"] in ("merge", "close_run") and r["pid"] == me]
    ends = {r["index"]: r["t"] for r in batches}
    got = [r for r in recs if r["kind"] == "merge" and r["pid"] == me]
    lat = [g["t0"] - ends[g["index"]] for g in got if g["index"] in ends]
    print(
        f"- caller: unpickling {sum(r['cpu'] for r in unp):.3f} s CPU "
        f"({len(unp)} partials, threads {sorted({r['thread'] for r in unp})}); merging "
        f"{sum(r['cpu'] for r in merges):.3f} s CPU; batch end -> its merge starts: median "
        f"{sorted(lat)[len(lat) // 2] if lat else 0:.4f} s, max {max(lat, default=0):.4f} s; "
        f"last merge ends {t_end - max((r['t'] for r in merges), default=t_end):.3f} s before "
        "the end"
    )


def _run(name: str, fn: Callable[[], object], rounds: int) -> None:
    for i in range(rounds):
        _records()
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        cpu = time.process_time() - c0
        _summary(f"{name}, round {i + 1} (caller CPU {cpu:.3f} s)", t0, t1, _records())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dask", action="store_true", help="also Dask LocalCluster(2)")
    args = ap.parse_args()
    data = Dataset.select(bucket(args.events), skims="hlt_bhabha")
    _install()
    print(f"load before: {os.getloadavg()}")

    def p2() -> object:
        return collect(ECL, data, executor="processes", workers=2, cache=False, progress=False)

    def inproc() -> object:
        return collect(ECL, data, executor="inprocess", cache=False, progress=False)

    _run("in-process", inproc, 1)
    _run("2 local processes (kept pool)", p2, args.rounds)
    if args.dask:
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            client.run(_install)
            _run(
                "Dask LocalCluster(2)",
                lambda: collect(ECL, data, executor=client, cache=False, progress=False),
                args.rounds,
            )
    print(f"load after: {os.getloadavg()}")
    _records()
    LOG.rmdir()


if __name__ == "__main__":
    main()
