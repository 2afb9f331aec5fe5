"""Time to calibrate a full-size sample, one line per detector calibration; writes
bench/RESULTS_calibrations.md.

Each detector's bench/cases_<detector>.py gives, per calibration, the simulated sample that
gives it the statistics of a real bucket (``sim``: SimConfig settings), expert-config overrides
(``config``) and the runs (``runs``). For each calibration, side by side in one run:
- the bare uproot read of the branches its collectors read, from the files it reads, in two
  processes (the limit of any event loop on this machine);
- ROOT RDataFrame reading the same branches (summing them: every basket is decompressed);
- ``b2calib calibrate``: collectors on 2 local processes, the algorithms, iterations and
  staging into a conditions database (SQLite), with the calibration's dependencies run before
  (not timed). A case with ``"previous": "truth"`` starts, as prompt processing does, from the
  previous calibration: the sample's true constants imported as input tag ``previous``. A case
  with ``"certified": True`` reads every run as certified GOOD for each detector it included
  (for calibrations that select runs by data quality; the simulated runs are not certified).
  The calibrations a calibration only runs ``after`` (the beam spot after CDC, TOP and KLM in
  the prompt order: it reads none of their payloads) are not run.

Samples are generated once into bench/out/ (not committed) and reused.

Each row also splits the calibration's time (the report's ``seconds``): collecting (every
input, every iteration; of it, verifying the files' checksums), the algorithms (every
execution, every iteration) and the rest (planning, checks, checkpoints and staging).

Usage: python bench/bench_calibrations.py [NAME ...]; with names, their rows replace the same
rows of bench/RESULTS_calibrations.md and the others are kept (the header says which rows were
measured when).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import runpy
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uproot

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_sim import machine  # noqa: E402

from b2calib._workers import shared_pool  # noqa: E402
from b2calib.calibration import Constants, get_calibration, run_calibrations  # noqa: E402
from b2calib.conditions import ConditionsDB  # noqa: E402
from b2calib.engine import Dataset  # noqa: E402
from b2calib.runs import RunRegistry  # noqa: E402
from b2calib.sim import SimConfig, simulate  # noqa: E402


def load_cases() -> dict[str, dict[str, Any]]:
    """Every ``CASES`` of bench/cases_*.py, by calibration name."""
    cases: dict[str, dict[str, Any]] = {}
    for path in sorted(HERE.glob("cases_*.py")):
        cases.update(runpy.run_path(str(path))["CASES"])
    return cases


def sample(sim: dict[str, Any]) -> Path:
    """The simulated sample of these settings, generated once."""
    key = hashlib.sha256(json.dumps(sim, sort_keys=True).encode()).hexdigest()[:12]
    out = HERE / "out" / f"calib_{key}"
    if not (out / "simulation.json").exists():
        t0 = time.perf_counter()
        simulate(SimConfig(**sim), out, jobs=2)
        print(f"  simulated {out.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def parse_runs(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def read_branches(job: tuple[list[str], list[str]]) -> int:
    files, branches = job
    n = 0
    for f in files:
        with uproot.open(f) as fh:
            n += len(fh["tree"].arrays(branches))
    return n


def rdataframe_read(files: list[str], branches: list[str]) -> float:
    """Seconds for RDataFrame to read and sum every branch (JIT warmed up on the first file)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ROOT

    ROOT.gROOT.SetBatch(True)
    ROOT.EnableImplicitMT(2)

    def run(paths: list[str]) -> None:
        vec = ROOT.std.vector("string")()
        for p in paths:
            vec.push_back(p)
        df = ROOT.RDataFrame("tree", vec)
        sums = [df.Sum(b) for b in branches]
        ROOT.RDF.RunGraphs(sums)

    run(files[:1])
    t0 = time.perf_counter()
    run(files)
    return time.perf_counter() - t0


def bench_one(name: str, case: dict[str, Any], *, reads: bool = True) -> dict[str, Any]:
    """Calibrate ``name`` on its case's sample, and time the reference reads of its branches
    (the bare read and RDataFrame: ``nan`` without ``reads``, e.g. for bench_scale.py, which
    measures the calibration's own memory)."""
    cal = get_calibration(name)
    folder = sample(case["sim"])
    runs = parse_runs(case.get("runs", f"1-{case['sim'].get('n_runs', 1)}"))
    registry = RunRegistry.load(folder / "runs.json")
    if case.get("certified"):
        registry = RunRegistry(
            dataclasses.replace(r, dq=dict.fromkeys(r.detectors, "GOOD")) for r in registry
        )
    with tempfile.TemporaryDirectory(prefix="b2calib-bench-") as tmp:
        db = ConditionsDB(Path(tmp) / "bench.sqlite", author="bench")
        input_tags: list[str] = []
        if case.get("previous") == "truth":
            # the previous calibration, as prompt processing starts from it: the sample's truth
            db.import_local(folder / "truth", "previous")
            input_tags = ["previous"]
        config = {name: case["config"]} if case.get("config") else None
        common: dict[str, Any] = dict(
            db=db,
            staging_tag="bench",
            input_tags=input_tags,
            runs=runs,
            cache=False,
            registry=registry,
        )
        if cal.depends_on:
            deps = run_calibrations(
                list(cal.depends_on),
                folder,
                with_dependencies=True,
                executor="processes",
                workers=2,
                **common,
            )
            bad = {k: r.status for k, r in deps.items() if r.status != "OK"}
            if bad:
                raise SystemExit(f"{name}: dependencies did not calibrate: {bad}")
        # the files and branches the calibration reads, its collectors built with the constants
        # it will start from (its dependencies' payloads and the input tags)
        constants = Constants(db, ["bench", *input_tags])
        keys = [r.key for r in registry.select(runs=runs)]
        files: set[str] = set()
        branches: set[str] = set()
        events = 0
        for inp in cal.inputs.values():
            ds = Dataset.select(
                folder,
                registry=registry,
                runs=runs,
                skims=inp.skims,
                run_type=cal.run_type,
                beam_energy=cal.beam_energy,
                magnet_on=cal.magnet_on,
            )
            new = {f.path for f in ds} - files
            events += sum(f.n_events for f in ds if f.path in new)
            files |= new
            branches |= set(inp.build(constants, keys).branches)
        paths, names = sorted(files), sorted(branches)
        t_bare = t_rdf = float("nan")
        if reads:
            t_bare = float("inf")
            with ProcessPoolExecutor(2) as pool:
                for _ in range(2):  # best of two: the first read also warms the page cache
                    t0 = time.perf_counter()
                    list(pool.map(read_branches, [(paths[0::2], names), (paths[1::2], names)]))
                    t_bare = min(t_bare, time.perf_counter() - t0)
            t_rdf = rdataframe_read(paths, names)
        t0 = time.perf_counter()
        report = run_calibrations(
            name, folder, executor="processes", workers=2, config=config, **common
        )[name]
        t_cal = time.perf_counter() - t0
    return {
        "name": name,
        "events": events,
        "files": len(paths),
        "runs": len(keys),
        "branches": len(names),
        "bare": t_bare,
        "rdf": t_rdf,
        "calibrate": t_cal,
        "collect": report.seconds["collect"],
        "verify": report.seconds["verify"],
        "algorithms": report.seconds["algorithms"],
        "status": report.status,
        "iterations": report.iterations,
        "executions": report.executed_steps,
        "payloads": len(report.staged),
    }


def warm_up() -> None:
    """Start the engine's kept pool of 2 workers before the first row (numba's compiler made
    ready and forked into them, as :func:`~b2calib._workers.shared_pool` does): every row then
    finds the pool started, as the rows after the first always did. Without it the first row
    run paid the pool's start (this warm-up takes 0.6 s on the 2-core benchmark machine), so a
    row's time depended on its place in the run."""
    import b2calib.engine.fill  # noqa: F401  (imports numba: the pool readies its compiler)

    list(shared_pool(2).map(abs, range(2)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", help="calibrations to run (default: every case)")
    ap.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="scale every sample's events per run (the runs, so the executions, stay): which"
        " part of a row's time grows with the events; written to --output, else printed",
    )
    ap.add_argument("--output", type=Path, help="with --scale: the results file to write")
    args = ap.parse_args()
    cases = load_cases()
    if args.scale != 1.0:
        for case in cases.values():
            events = round(case["sim"]["events_per_run"] * args.scale)
            case["sim"] = {**case["sim"], "events_per_run": events}
    names = args.names or list(cases)
    unknown = set(names) - set(cases)
    if unknown:
        raise SystemExit(f"no bench case for {sorted(unknown)}; cases: {', '.join(cases)}")
    header = (
        "| calibration | events | runs | files | branches | bare read | RDataFrame read "
        "| calibrate | calibrate / bare | collect | collect / bare | verify | algorithms | rest "
        "| status | iterations | executions | payloads |"
    )
    out = HERE / "RESULTS_calibrations.md"
    partial = bool(args.names) and args.scale == 1.0
    # checked before anything runs: a partial run must fit the file's table
    kept = _kept_rows(out, header, set(names)) if partial else {"rows": {}, "dates": []}
    warm_up()
    rows = []
    for name in names:
        print(f"{name} ...", flush=True)
        rows.append(bench_one(name, cases[name]))
        r = rows[-1]
        print(f"  {r['calibrate']:.1f} s ({r['calibrate'] / r['bare']:.1f}x the bare read)")
    date = f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}"
    table = {**kept["rows"], **{r["name"]: _row(r) for r in rows}}
    dates = [*kept["dates"], date + (f": {', '.join(names)}" if partial else "")]
    order = [n for n in cases if n in table]
    title = "time to calibrate a full-size sample"
    if args.scale != 1.0:
        title = f"the samples with {args.scale:g}x their events per run"
    lines = [
        f"# Calibration benchmark: {title}",
        "",
        *dates,
        "- command: `python bench/bench_calibrations.py [NAME ...]` (names: re-measure only"
        " their rows)",
        "- samples: bench/cases_*.py (statistics of a real bucket for each calibration)",
        "",
        "Bare read = uproot reading the branches the calibration's collectors read from its"
        " files, 2 processes, best of two (the limit). RDataFrame = ROOT reading and summing the"
        " same branches (implicit MT, 2 threads). calibrate = `run_calibrations` on 2 local"
        " processes: collect, fit, iterate, checkpoint and stage (dependencies run before, not"
        " timed). Of it: collect = the collectors' event loops, every input and iteration (an"
        " input whose collector is unchanged is not read again), of which verify = comparing"
        " the files with their catalogue (each file read whole for its Adler-32 checksum, once"
        " per file and process: not when the calibration's dependencies, run before in the same"
        " process, read the same files); algorithms = every execution"
        " of every iteration (executions: how many; each fits one run range's histograms,"
        " checks and writes its payloads and is checkpointed); rest = planning, checks,"
        " checkpoints and staging.",
        "",
        header,
        "|---|" + "---:|" * 8 + "---:|---:|---:|---:|---:|---|---:|---:|---:|",
        *(table[n] for n in order),
    ]
    if args.scale != 1.0:
        if args.output is None:
            print("\n".join(lines))
            return
        out = args.output
        at = lines.index(next(line for line in lines if line.startswith("- command:")))
        lines[at] = (
            f"- command: `python bench/bench_calibrations.py --scale {args.scale:g} --output"
            f" {out.name} {' '.join(names)}`: {args.scale:g}x the events per run of each"
            " sample, the same runs"
        )
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


def _row(r: dict[str, Any]) -> str:
    rest = r["calibrate"] - r["collect"] - r["algorithms"]
    return (
        f"| {r['name']} | {r['events']:,} | {r['runs']} | {r['files']} | {r['branches']} "
        f"| {r['bare']:.2f} s | {r['rdf']:.2f} s | {r['calibrate']:.2f} s "
        f"| {r['calibrate'] / r['bare']:.1f}x | {r['collect']:.2f} s "
        f"| {r['collect'] / r['bare']:.1f}x | {r['verify']:.2f} s | {r['algorithms']:.2f} s "
        f"| {rest:.2f} s "
        f"| {r['status']} | {r['iterations']} | {r['executions']} | {r['payloads']} |"
    )


def _kept_rows(out: Path, header: str, replaced: set[str]) -> dict[str, Any]:
    """The rows (by calibration) and date lines of ``out`` that a partial run keeps."""
    text = out.read_text() if out.exists() else ""
    if text and header not in text:
        raise SystemExit(
            f"{out} has other columns: run the whole bench (no names) to regenerate it"
        )
    rows: dict[str, str] = {}
    dates: list[str] = []
    for line in text.splitlines():
        if line.startswith("- date: "):
            dates.append(line)
        elif line.startswith("| ") and not line.startswith(("| calibration ", "|---")):
            name = line.split("|")[1].strip()
            if name not in replaced:
                rows[name] = line
    return {"rows": rows, "dates": dates}


if __name__ == "__main__":
    main()
