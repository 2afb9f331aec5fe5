"""Quality-assurance database at the scale of a running period; writes bench/RESULTS_qa.md.

The dashboards must stay usable with thousands of runs. This stores N runs (default 3000) of
monitoring variables and QA histograms in an embedded SQLite database, the runs' QA taken from a
simulated sample (data-samples/qa.toml, its physics runs repeated), and times, side by side:
- a monitoring trend (one point per run) through the library vs the bare SQL select of the same
  rows (the limit: no decoding, no status);
- the automatic status grid of every run and detector, the flag grid, the run registry;
- storing a run's QA, evaluating a run against its references, certifying a flag;
- a good-run list over every run;
and computes the size of the data behind a QAM trend and a histogram overlay (counted from the
arrays, not captured on the websocket).

Usage: python bench/bench_qa.py [--runs 3000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_engine import timed  # noqa: E402
from bench_sim import machine  # noqa: E402

from b2calib.qa.monitoring import collect_qa  # noqa: E402
from b2calib.qa.store import QADatabase, User  # noqa: E402
from b2calib.runs import RunRegistry  # noqa: E402
from b2calib.sim import SimConfig, simulate  # noqa: E402

CONFIG = HERE.parent / "data-samples" / "qa.toml"


def source() -> Path:
    """The simulated QA sample, generated once and reused."""
    out = HERE / "out" / "qa_source"
    if not (out / "simulation.json").exists():
        import tomllib

        cfg = SimConfig(**tomllib.loads(CONFIG.read_text())["simulation"])
        simulate(cfg, out, jobs=2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3000)
    args = ap.parse_args()
    n = args.runs

    data = source()
    registry = RunRegistry.load(data / "runs.json")
    qas = [q for q in collect_qa(data) if registry.get(q.exp, q.run).run_type == "physics"]
    template = {q.run: registry.get(q.exp, q.run) for q in qas}

    db_path = HERE / "out" / "qa_bench.sqlite"
    db_path.unlink(missing_ok=True)
    for extra in ("-wal", "-shm"):
        Path(str(db_path) + extra).unlink(missing_ok=True)
    db = QADatabase(db_path, author="bench")
    runs, sources = [], []
    t_start = registry.get(qas[0].exp, qas[0].run).start
    for k in range(n):
        q = qas[k % len(qas)]
        r = template[q.run]
        start = t_start + 4 * 3600 * k
        runs.append(replace(r, exp=30, run=k + 1, start=start, stop=start + r.duration_s, dq={}))
        sources.append(q)
    t0 = time.perf_counter()
    db.runs.import_runs(runs)
    t_import = time.perf_counter() - t0

    t0 = time.perf_counter()
    for k, q in enumerate(sources):
        db.histograms.store_run(replace(q, exp=30, run=k + 1))
    t_store = (time.perf_counter() - t0) / n

    db.users.add("mgr", "bench-password", "manager")
    mgr = User("mgr", "manager")
    for det, name in db.histograms.keys(30, 1):
        db.histograms.set_reference(det, name, 30, 1)
    t0 = time.perf_counter()
    db.status.evaluate_all(exp=30)
    t_eval_all = time.perf_counter() - t0
    t_eval_one, _ = timed(lambda: db.status.evaluate(30, 2))

    names = db.runs.variable_names()
    name = "mumu.cdc_hits_per_track" if "mumu.cdc_hits_per_track" in names else names[0]
    t_trend, trend = timed(lambda: db.runs.trend(name, exp=30))
    bare_sql = sa.text(
        "SELECT v.exp, v.run, v.value, v.error FROM qa_variables v JOIN qa_runs r "
        "ON r.exp = v.exp AND r.run = v.run WHERE v.name = :n AND v.exp = 30 "
        "AND r.run_type = 'physics' ORDER BY v.exp, v.run"
    )

    def bare() -> list[object]:
        with db.engine.connect() as conn:
            return list(conn.execute(bare_sql, {"n": name}).all())

    t_bare, rows = timed(bare)
    assert len(rows) == len(trend.run) == n  # type: ignore[arg-type]
    t_grid_auto, grid = timed(lambda: db.status.grid(exp=30), repeat=1)
    assert len(grid) == n  # type: ignore[arg-type]

    t0 = time.perf_counter()
    sample_flags = range(1, min(n, 100) + 1)
    for run in sample_flags:
        for det in runs[run - 1].detectors:
            db.certification.set_flag(30, run, det, "GOOD", user=mgr, comment="bench", force=True)
    t_flag = (time.perf_counter() - t0) / sum(len(runs[r - 1].detectors) for r in sample_flags)
    t_grid_flags, _ = timed(lambda: db.certification.flag_grid(exp=30))
    t_registry, _ = timed(lambda: db.runs.registry(exp=30))
    t_grl, grl = timed(lambda: db.grls.make("bench", "all == GOOD", user=mgr), repeat=1)

    det, hname = db.histograms.keys(30, 2)[0]
    h = db.histograms.get(30, 2, det, hname)
    trend_bytes = len(trend.run) * (8 * 4 + 8)  # exp, run, value, error + a status code
    hist_bytes = 2 * h.values().size * 8
    size_mb = db_path.stat().st_size / 2**20
    db.close()

    def ms(t: float) -> str:
        return f"{1e3 * t:.1f} ms"

    lines = [
        "# QA database at scale",
        "",
        f"Machine: {machine()}. Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by "
        f"`python bench/bench_qa.py --runs {n}`.",
        "",
        f"{n} physics runs of one experiment in an embedded SQLite database ({size_mb:.0f} MB), "
        f"each with {len(qas[0].variables)}-{max(len(q.variables) for q in qas)} monitoring "
        f"variables and {len(qas[0].histograms)} QA histograms (the QA of the {len(qas)} physics "
        "runs of `data-samples/qa.toml`, repeated).",
        "",
        "| operation | time | note |",
        "|---|---:|---|",
        f"| trend of `{name}`, library | {ms(t_trend)} | {n} points with band and statuses |",
        f"| same rows, bare SQL select (the limit) | {ms(t_bare)} | ratio {t_trend / t_bare:.1f} |",
        f"| automatic status grid, every run x detector | {ms(t_grid_auto)} | "
        f"{len(names)} variables' trends + stored comparisons |",
        f"| flag grid, every run | {ms(t_grid_flags)} | newest flag per (run, detector) |",
        f"| run registry with flags | {ms(t_registry)} | feeds the calibration dq filters |",
        f"| good-run list over every run | {ms(t_grl)} | {len(grl)} runs in it (those certified "
        "GOOD), versioned, stored |",
        f"| import {n} runs' metadata | {ms(t_import)} | one transaction |",
        f"| store one run's QA | {ms(t_store)} | one transaction, mean of {n} |",
        f"| evaluate every run against its references | {t_eval_all:.1f} s | "
        f"{1e3 * t_eval_all / n:.1f} ms a run, then the status grid |",
        f"| evaluate one run (a shifter's re-evaluation) | {ms(t_eval_one)} | comparisons + "
        "that run's status from the trends |",
        f"| certify one flag | {ms(t_flag)} | append-only, permission checked |",
        "",
        f"The data behind a QAM trend is {trend_bytes / 1024:.0f} kB for {n} runs (exp, run, "
        f"value, error and a status per run, as 8-byte numbers); a histogram overlay "
        f"{hist_bytes / 1024:.1f} kB (bin contents of the run and its reference), whatever the "
        "number of events. Computed from the arrays, not captured on the websocket.",
        "",
    ]
    out = HERE / "RESULTS_qa.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(json.dumps({"runs": n, "trend_s": t_trend, "bare_s": t_bare}))


if __name__ == "__main__":
    main()
