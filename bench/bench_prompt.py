"""The prompt loop on the demo bucket: generation time, loop wall time, per calibration and stage.

What `make demo` does with data-samples/prompt.toml, measured (bench/RESULTS_prompt.md):

1. generate the demo bucket (``simulate`` of data-samples/prompt.toml, 2 worker processes),
   timed (``--reuse``: keep a bucket generated before, untimed);
2. a fresh conditions database: the bucket's true constants imported as input tag
   ``sim_truth`` (the constants the loop starts from), the runs registered and every detector
   of every run certified GOOD by a shifter, as data-quality shifters do before the prompt
   calibration (klm-strip-efficiency reads "Good Or Recoverable" runs only);
3. the whole prompt loop (:func:`b2calib.prompt.run_prompt`, bucket 1, every registered
   calibration, 2 b2luigi workers), timed; the status, channel counts, payloads and wall time
   of each calibration from its summary;
4. the critical path of the dependency graph (``depends_on`` and ``after``): the longest chain
   by the measured wall times, the floor of the loop's wall time whatever the workers.

Usage: python bench/bench_prompt.py [--reuse] [--out DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_sim import machine  # noqa: E402

from b2calib.calibration import calibrations  # noqa: E402
from b2calib.conditions import ConditionsDB  # noqa: E402
from b2calib.prompt import PromptSummary, run_prompt  # noqa: E402
from b2calib.qa.store import QADatabase  # noqa: E402
from b2calib.runs import RunRegistry  # noqa: E402
from b2calib.sim import SimConfig, simulate  # noqa: E402

CONFIG = ROOT / "data-samples" / "prompt.toml"
#: The issue's budgets (2 cores): generation and the whole loop.
GENERATION_BUDGET_S = 300.0
LOOP_BUDGET_S = 180.0
#: The heading of the hand-written part of the results file, kept when the bench runs again.
FINDINGS = "## Findings"


def generate(out: Path, reuse: bool) -> float | None:
    """Simulate the demo bucket into ``out``; its wall time (None when reused)."""
    if reuse and (out / "runs.json").exists():
        return None
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    simulate(SimConfig.from_file(CONFIG), out, jobs=2)
    return time.perf_counter() - t0


def certify(db: ConditionsDB, data: Path) -> int:
    """Register the bucket's runs and certify every detector of every run GOOD (one shifter);
    the number of flags set."""
    registry = RunRegistry.load(data / "runs.json")
    qdb = QADatabase(db.url)
    try:
        qdb.runs.import_runs(registry)
        shifter = qdb.users.add("bench-shifter", "bench-shifter", "manager")
        flags = [(r.exp, r.run, d, "GOOD") for r in registry for d in r.detectors]
        qdb.certification.set_flags(flags, user=shifter, comment="bench: all good")
    finally:
        qdb.close()
    return len(flags)


def critical_path(times: dict[str, float]) -> tuple[list[str], float]:
    """The longest chain of the calibrations' graph (``depends_on`` and ``after`` edges) by
    the measured wall times, and its length."""
    cals = calibrations()
    best: dict[str, tuple[float, list[str]]] = {}

    def longest(name: str) -> tuple[float, list[str]]:
        if name not in best:
            cal = cals[name]
            before = [d for d in (*cal.depends_on, *getattr(cal, "after", ())) if d in times]
            prev = max((longest(d) for d in before), default=(0.0, []), key=lambda x: x[0])
            best[name] = (prev[0] + times[name], [*prev[1], name])
        return best[name]

    length, chain = max((longest(n) for n in times), key=lambda x: x[0])
    return chain, length


def bucket_facts(data: Path) -> dict[str, Any]:
    """Runs, events and size of the generated bucket."""
    registry = RunRegistry.load(data / "runs.json")
    sim = json.loads((data / "simulation.json").read_text())
    size = sum(p.stat().st_size for p in data.rglob("*.root"))
    kinds: dict[str, int] = {}
    for r in registry:
        key = r.run_type if r.run_type != "physics" else f"physics {r.beam_energy}"
        kinds[key] = kinds.get(key, 0) + 1
    generated = sim.get("generated_events", {})
    return {
        "runs": len(registry),
        "kinds": kinds,
        "lumi_fb": sum(r.lumi_pb for r in registry) / 1000.0,
        "generated": sum(sum(per.values()) for per in generated.values()) if generated else None,
        "files": len(list(data.rglob("*.root"))),
        "gb": size / 1e9,
    }


def write_results(
    path: Path,
    *,
    gen_s: float | None,
    loop_s: float,
    summary: PromptSummary,
    facts: dict[str, Any],
    started: str,
    load: tuple[float, float],
    workers: int,
    code: str,
) -> None:
    rows = summary.rows
    times = {r.calibration: float(r.wall_time or 0.0) for r in rows}
    chain, length = critical_path(times)
    total = sum(times.values())
    ok = sum(r.ok for r in rows)
    kinds = ", ".join(f"{v} {k}" for k, v in facts["kinds"].items())
    lines = [
        "# The prompt loop on the demo bucket (data-samples/prompt.toml)",
        "",
        f"- date: {started}; load average (1 min) at the start {load[0]:.1f}, at the end "
        f"{load[1]:.1f} (shared machine: other jobs may run beside it)",
        f"- machine: {machine()}",
        f"- code: {code}",
        "- command: `python bench/bench_prompt.py`",
        f"- bucket: {facts['runs']} runs ({kinds}), "
        f"{facts['lumi_fb']:.2f} fb^-1, "
        + (f"{facts['generated']:,} generated events, " if facts["generated"] else "")
        + f"{facts['files']} files, {facts['gb']:.2f} GB",
        "",
        "## Summary",
        "",
        "| what | measured | budget |",
        "|---|---:|---:|",
        "| generation (simulate, 2 processes) | "
        + ("reused (not timed)" if gen_s is None else f"**{gen_s:.0f} s**")
        + f" | {GENERATION_BUDGET_S:.0f} s |",
        f"| the whole loop (run_prompt, {workers} b2luigi workers) | **{loop_s:.0f} s** | "
        f"{LOOP_BUDGET_S:.0f} s |",
        f"| sum of the calibrations' wall times | {total:.0f} s | |",
        f"| critical path ({' -> '.join(chain)}) | {length:.0f} s | |",
        f"| calibrations OK | {ok} of {len(rows)} | all |",
        "",
        f"The loop is bound by {'the work' if total / workers > length else 'the graph'}: the "
        f"calibrations' wall times summed over {workers} workers give {total / workers:.0f} s, "
        f"the critical path {length:.0f} s; the loop took {loop_s:.0f} s.",
        "",
        "## Per calibration",
        "",
        "Channels: counts over the staged payloads (b2calib.calibration.channel_counts as the "
        "loop reports them). Wall time: the calibration's task, from its start to its finish.",
        "",
        "| calibration | stage | status | channels OK | fallback | NOT_ENOUGH_DATA | FAILED "
        "| masked | payloads | IoVs | wall time | validation | reason |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in sorted(rows, key=lambda r: -times[r.calibration]):
        c = r.channels
        lines.append(
            f"| {r.calibration} | {r.stage} | {r.status} | {c.get('OK', 0):,} | "
            f"{c.get('fallback', 0):,} | {c.get('NOT_ENOUGH_DATA', 0):,} | {c.get('FAILED', 0):,} "
            f"| {c.get('masked', 0):,} | {r.payloads} | {r.iovs} | {times[r.calibration]:.1f} s "
            f"| {r.verdict or '-'}{': ' + r.verdict_reason if r.verdict_reason else ''} "
            f"| {r.reason} |"
        )
    lines += [
        "",
        "## Per stage",
        "",
        "| stage | calibrations | sum of wall times | elapsed (first start to last finish) |",
        "|---|---:|---:|---:|",
    ]
    for stage, st in summary.stage_times().items():
        lines.append(f"| {stage} | {st.calibrations} | {st.wall_time:.0f} s | {st.elapsed:.0f} s |")
    lines += ["", "## The loop's summary table", "", "```", summary.table(), "```", ""]
    # the findings written by hand below the measured part are kept when it is measured again
    kept = ""
    if path.exists():
        old = path.read_text()
        if FINDINGS in old:
            kept = old[old.index(FINDINGS) :]
    path.write_text("\n".join(lines) + ("\n" + kept if kept else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "out" / "prompt-bucket")
    parser.add_argument("--reuse", action="store_true", help="keep a bucket generated before")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--code", default="", help="which code (branch, commit) is measured")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS_prompt.md")
    args = parser.parse_args()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load0 = os.getloadavg()[0]
    gen_s = generate(args.out, args.reuse)
    print(f"generation: {'reused' if gen_s is None else f'{gen_s:.1f} s'}", flush=True)
    facts = bucket_facts(args.out)
    with tempfile.TemporaryDirectory(prefix="b2calib-bench-prompt-") as tmp:
        os.environ.setdefault("B2CALIB_CACHE_DIR", str(Path(tmp) / "cache"))
        db = ConditionsDB(Path(tmp) / "prompt.sqlite", author="bench")
        db.import_local(args.out / "truth", "sim_truth")
        certify(db, args.out)
        t0 = time.perf_counter()
        summary = run_prompt(
            args.out,
            db=db,
            bucket=1,
            input_tags=["sim_truth"],
            workers=args.workers,
            progress=False,
        )
        loop_s = time.perf_counter() - t0
        print(summary.table(), flush=True)
        print(f"loop: {loop_s:.1f} s", flush=True)
        write_results(
            args.results,
            gen_s=gen_s,
            loop_s=loop_s,
            summary=summary,
            facts=facts,
            started=started,
            load=(load0, os.getloadavg()[0]),
            workers=args.workers,
            code=args.code,
        )


if __name__ == "__main__":
    main()
