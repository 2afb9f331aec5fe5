"""What the input's integrity checks cost a calibration; writes bench/RESULTS_integrity.md.

For full-size calibration samples (bench/cases_*.py, generated once into bench/out/ as
bench/bench_calibrations.py does):
- verification alone: every file of the calibration compared with its catalogue entry (size,
  Adler-32), the in-process cache emptied first (the page cache is warm: the read is the
  checksum's, not the disk's);
- ``run_calibrations`` on 2 local processes with verification (the default) and without
  (``verify=False``), and the time spent verifying inside the first (once per file and job,
  however many event loops the job runs);
- the same-pass checks (event numbers read for the duplicate-event check, NaN / Inf counted):
  the calibration's first collector over its files with them and with them switched off.

Usage: python bench/bench_integrity.py [NAME ...]   (default: ecl-time cdc-dedx-run-gain)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_calibrations import load_cases, parse_runs, sample  # noqa: E402
from bench_engine import timed  # noqa: E402
from bench_sim import machine  # noqa: E402

import b2calib.engine.loop as loop  # noqa: E402
from b2calib.calibration import Constants, get_calibration, run_calibrations  # noqa: E402
from b2calib.conditions import ConditionsDB  # noqa: E402
from b2calib.engine import Dataset, collect, integrity  # noqa: E402
from b2calib.runs import RunRegistry  # noqa: E402

DEFAULT = ["ecl-time", "cdc-dedx-run-gain"]
#: Alternating runs of the same-pass comparison (best of each).
REPEAT = 3


def database(tmp: str, folder: Path, case: dict[str, Any]) -> tuple[ConditionsDB, list[str]]:
    """A conditions database, with the sample's truth as input tag ``previous`` where the case
    starts from the previous calibration."""
    db = ConditionsDB(Path(tmp) / "bench.sqlite", author="bench")
    if case.get("previous") != "truth":
        return db, []
    db.import_local(folder / "truth", "previous")
    return db, ["previous"]


def calibrate(name: str, case: dict[str, Any], folder: Path, verify: bool) -> tuple[float, float]:
    """Wall time of the calibration (dependencies before, untimed) and of its verification."""
    integrity.forget_verified()
    spent = [0.0]
    real = loop.verify_files

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="b2calib-bench-") as tmp:
        db, tags = database(tmp, folder, case)
        common: dict[str, Any] = dict(
            db=db,
            staging_tag="bench",
            input_tags=tags,
            runs=parse_runs(case.get("runs", "1-11")),
            cache=False,
            executor="processes",
            workers=2,
            verify=verify,
        )
        deps = get_calibration(name).depends_on
        if deps:
            run_calibrations(list(deps), folder, with_dependencies=True, **common)
        integrity.forget_verified()
        config = {name: case["config"]} if case.get("config") else None
        loop.verify_files = timed
        try:
            t0 = time.perf_counter()
            report = run_calibrations(name, folder, config=config, **common)[name]
            wall = time.perf_counter() - t0
        finally:
            loop.verify_files = real
        db.close()
    if report.status != "OK":
        raise SystemExit(f"{name}: {report.status} {report.message}")
    return wall, spent[0]


def same_pass(name: str, case: dict[str, Any], folder: Path) -> tuple[float, float]:
    """The calibration's first collector over its files: with the same-pass checks, without."""
    cal = get_calibration(name)
    runs = parse_runs(case.get("runs", "1-11"))
    registry = RunRegistry.load(folder / "runs.json")
    with tempfile.TemporaryDirectory(prefix="b2calib-bench-") as tmp:
        db, tags = database(tmp, folder, case)
        inp = next(iter(cal.inputs.values()))
        keys = [r.key for r in registry.select(runs=runs)]
        collector = inp.build(Constants(db, tags), keys)
        db.close()
    ds = Dataset.select(folder, registry=registry, runs=runs, skims=inp.skims)
    opts: dict[str, Any] = dict(
        executor="processes", workers=2, cache=False, progress=False, verify=False
    )
    opts["max_nonfinite"] = 1.0
    counting, numbering = loop.count_nonfinite, loop._event_numbers
    t_with = t_without = float("inf")
    for _ in range(REPEAT):  # alternating: the machine's load drifts
        t_with = min(t_with, timed(lambda: collect(collector, ds, **opts), 1)[0])
        loop.count_nonfinite = lambda events, branches: {}  # type: ignore[assignment]
        loop._event_numbers = lambda tree: False  # type: ignore[assignment]
        try:  # workers are forked: they see the switched-off checks
            t_without = min(t_without, timed(lambda: collect(collector, ds, **opts), 1)[0])
        finally:
            loop.count_nonfinite, loop._event_numbers = counting, numbering
    return t_with, t_without


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", help=f"calibrations (default: {' '.join(DEFAULT)})")
    args = ap.parse_args()
    cases = load_cases()
    rows = []
    for name in args.names or DEFAULT:
        case = cases[name]
        folder = sample(case["sim"])
        print(f"{name} ...", flush=True)
        files = sorted(f.path for f in Dataset.from_paths(folder))
        mb = sum(os.path.getsize(f) for f in files) / 1e6

        def cold(paths: list[str] = files) -> Any:
            integrity.forget_verified()
            return integrity.verify_files(paths)

        t_verify, (bad, unverified) = timed(cold)
        if bad or unverified:
            raise SystemExit(f"{name}: sample not verifiable: {bad} {unverified[:3]}")
        runs = [(calibrate(name, case, folder, True), calibrate(name, case, folder, False)[0])]
        runs += [(calibrate(name, case, folder, True), calibrate(name, case, folder, False)[0])]
        with_v = min(r[0] for r in runs)  # alternating: the machine's load drifts
        without_v = min(r[1] for r in runs)
        t_with, t_without = same_pass(name, case, folder)
        rows.append((name, len(files), mb, t_verify, with_v, without_v, t_with, t_without))
        print(f"  {rows[-1]}", flush=True)
    lines = [
        "# What the input's integrity checks cost",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}",
        "- command: `python bench/bench_integrity.py`",
        "- samples: bench/cases_*.py, as bench/bench_calibrations.py (the page cache is warm)",
        "",
        "verify = every file of the sample compared with its catalogue entry (size, Adler-32), "
        "nothing cached in the process. calibrate = `run_calibrations` on 2 local processes, "
        "best of two, with verification (the default) and with `verify=False`; in it = the time "
        "spent verifying inside the verifying run (once per file and job). Same pass = the "
        "calibration's first collector over its files, 2 processes, with the event numbers read "
        "and the NaN / Inf counted, and with both switched off (best of 3, alternating). The "
        "machine is shared: single runs vary by 20 % and more, hence the best of alternating "
        "runs.",
        "",
        "| calibration | files | MB | verify | MB/s | calibrate | in it verifying | share "
        "| calibrate --no-verify | same pass: with | without | overhead |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, n, mb, tv, (tc, spent), tn, tw, two in rows:
        lines.append(
            f"| {name} | {n} | {mb:.0f} | {tv:.2f} s | {mb / tv:.0f} | {tc:.1f} s | {spent:.2f} s "
            f"| {100 * spent / tc:.1f} % | {tn:.1f} s | {tw:.2f} s | {two:.2f} s "
            f"| {100 * (tw - two) / two:+.0f} % |"
        )
    out = HERE / "RESULTS_integrity.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
