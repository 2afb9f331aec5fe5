"""The QA database the dashboard benchmarks open: a running period of N runs (default 3000).

The runs' QA is that of the simulated data-quality sample (``data-samples/qa.toml``: physics
runs at the 4S and in the Continuum, cosmic runs, three injected faults), repeated over N runs of
one experiment (30) in their order, so that the pages show the classes, the cosmics and the
faults they show in the demo. References: the first run of each class; every run evaluated;
the first 100 runs certified by a manager; users ``manager``, ``expert`` (CDC, ECL) and
``shifter``, password ``bench-password``. Built once into ``bench/out/`` and reused (delete the
file to rebuild it).

Usage: python bench/qa_pages_sample.py [--runs 3000]   (prints the database's path)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: The experiment number of the repeated runs.
EXP = 30
PASSWORD = "bench-password"


def qa_pages_database(n_runs: int = 3000) -> Path:
    """The path of the benchmark QA database of ``n_runs`` runs, built when missing."""
    from bench_qa import source

    from b2calib.qa.monitoring import collect_qa
    from b2calib.qa.store import QADatabase, User
    from b2calib.runs import RunRegistry

    path = HERE / "out" / f"qa_pages_{n_runs}.sqlite"
    if path.exists():
        return path
    data = source()
    registry = RunRegistry.load(data / "runs.json")
    collected = {(q.exp, q.run): q for q in collect_qa(data)}
    template = list(registry)
    partial = path.with_suffix(".part")
    for extra in ("", "-wal", "-shm"):
        Path(str(partial) + extra).unlink(missing_ok=True)
    db = QADatabase(partial, author="bench")
    runs, qas = [], []
    t_start = template[0].start
    for k in range(n_runs):
        r = template[k % len(template)]
        start = t_start + 4 * 3600 * k
        runs.append(replace(r, exp=EXP, run=k + 1, start=start, stop=start + r.duration_s, dq={}))
        q = collected.get(r.key)
        if q is not None:
            qas.append(replace(q, exp=EXP, run=k + 1))
    db.runs.import_runs(runs)
    for q in qas:
        db.histograms.store_run(q)
    first_of_class: dict[tuple[str, str], int] = {}
    for r in runs:
        first_of_class.setdefault((r.run_type, r.beam_energy), r.run)
    stored = {run for _, run in db.histograms.stored_runs(exp=EXP)}
    for run in first_of_class.values():
        if run in stored:
            for det, name in db.histograms.keys(EXP, run):
                db.histograms.set_reference(det, name, EXP, run)
    db.status.evaluate_all(exp=EXP)
    db.users.add("manager", PASSWORD, "manager")
    db.users.add("expert", PASSWORD, "expert", detectors=("CDC", "ECL"))
    db.users.add("shifter", PASSWORD, "viewer")
    manager = User("manager", "manager")
    for r in runs[:100]:
        db.certification.set_flags(
            [(EXP, r.run, d, "GOOD") for d in r.detectors],
            user=manager,
            comment="bench",
            force=True,  # GOOD whatever the automatic status: confirmed, as a shift would
        )
    db.close()
    partial.rename(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3000)
    print(qa_pages_database(ap.parse_args().runs))


if __name__ == "__main__":
    main()
