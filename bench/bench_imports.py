"""Start-up cost: the command line's help and the imports a user pays before any work; writes
bench/RESULTS_imports.md.

Each statement runs in a fresh interpreter (``python -c``, the page cache warm), best of
``--repeat``; side by side with the limits: the bare interpreter, and the third-party stacks the
statement cannot avoid (``b2calib.fit`` is built on iminuit and scipy.stats, the command line
on click). Also lists which heavy stacks each import loads.

Before issue 12 (commit ac26838, same machine, same script): b2calib --help 0.49 s, import
b2calib 0.47 s (numpy, uproot and SQLAlchemy loaded), import b2calib.fit 1.31 s.

Issue 19 (`b2calib --help` "over 2 s", `from b2calib import fit` 3-7 s on the loaded 2 cores):
the command line's groups load lazily and no longer import the geometry (numpy) for the help;
``b2calib.fit`` exports its names lazily, so ``import b2calib.fit`` and the histogram statistics
the QA monitoring imports no longer load iminuit, numba and scipy.stats. ``--before DIR`` times
the same statements against another checkout of the package (``git archive <commit> b2calib``
unpacked in DIR, put first on ``PYTHONPATH``) in the same run, interleaved, so that both columns
see the same load of the machine.

Usage: python bench/bench_imports.py [--repeat 7] [--before DIR --before-label TEXT]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_sim import machine  # noqa: E402

#: (label, statement, target in seconds or None)
CASES: list[tuple[str, str, float | None]] = [
    ("python (bare interpreter)", "pass", None),
    ("import click (limit of the CLI)", "import click", None),
    (
        "b2calib --help",
        "import sys; sys.argv=['b2calib','--help']; from b2calib.cli import main; main()",
        0.5,
    ),
    (
        "b2calib simulate --help (names the detectors: geometry)",
        "import sys; sys.argv=['b2calib','simulate','--help']; from b2calib.cli import main; "
        "main()",
        None,
    ),
    ("import b2calib", "import b2calib", None),
    (
        "import iminuit, scipy.stats, numba (limit of fit)",
        "import iminuit, iminuit.cost, scipy.stats, numba",
        None,
    ),
    ("from b2calib import fit", "from b2calib import fit", 0.5),
    (
        "import b2calib.fit.histstats (what QA monitoring imports)",
        "import b2calib.fit.histstats",
        None,
    ),
    (
        "from b2calib.fit import fit_hist (a fit: iminuit, scipy)",
        "from b2calib.fit import fit_hist",
        None,
    ),
    ("import b2calib.engine", "import b2calib.engine", None),
    (
        "import b2calib.conditions (ConditionsDB)",
        "from b2calib.conditions import ConditionsDB",
        None,
    ),
    (
        "from b2calib.calibration import run_calibrations",
        "from b2calib.calibration import run_calibrations",
        None,
    ),
    ("from b2calib.qa import QADatabase", "from b2calib.qa import QADatabase", None),
    (
        "b2calib calibrate --list (every detector loaded)",
        "import sys; sys.argv=['b2calib','calibrate','--list']; "
        "from b2calib.cli import main; main()",
        None,
    ),
]
HEAVY = (
    "numpy", "uproot", "scipy", "iminuit", "numba", "sqlalchemy", "matplotlib", "holoviews",
    "bokeh", "panel",
)  # fmt: skip


def once(statement: str, pythonpath: str | None) -> tuple[float, float, list[str]]:
    """Wall time and CPU time (user + system; less sensitive to other jobs on a shared
    machine) of one ``python -c statement``, and the heavy stacks it loaded."""
    probe = (
        f"try:\n    {statement}\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"import sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # run outside the repository: python -c puts the working directory first on sys.path,
    # which would shadow the --before checkout on PYTHONPATH
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"{statement!r} failed:\n{done.stderr}")
    loaded = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    return seconds, cpu, [m for m in loaded.split(",") if m]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--before", type=Path, help="A checkout of the package to compare with.")
    ap.add_argument("--before-label", default="before", help="What --before is (a commit).")
    args = ap.parse_args()
    load_start = os.getloadavg()[0]
    rows = []
    for label, statement, target in CASES:
        now: list[tuple[float, float]] = []
        then: list[tuple[float, float]] = []
        loaded: list[str] = []
        loaded_then: list[str] = []
        for _ in range(args.repeat):  # interleaved: both see the same load
            wall, cpu, loaded = once(statement, None)
            now.append((wall, cpu))
            if args.before is not None:
                wall, cpu, loaded_then = once(statement, str(args.before))
                then.append((wall, cpu))
        best = min(w for w, _ in now)
        verdict = "" if target is None else ("met" if best <= target else "MISSED")
        rows.append((label, now, then, loaded_then, target, verdict, loaded))
        old = f"  (before {min(w for w, _ in then):6.3f} s)" if then else ""
        print(f"{label:60s} {best:6.3f} s{old}  {verdict}  {', '.join(loaded)}", flush=True)
    load = f"load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    before = ""
    if args.before is not None:
        before = (
            f" The before columns: the package at {args.before_label}, timed in the same run, "
            "interleaved with the after ones."
        )
    lines = [
        "# Start-up: command-line help and imports",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python bench/bench_imports.py "
        f"--repeat {args.repeat}{' --before ...' if args.before else ''}` on {machine()}; "
        f"{load}.",
        "",
        "Each statement in a fresh interpreter (page cache warm): the best wall time of the "
        "repeats (the target applies to it) and the median CPU time (user + system of the "
        "process: what the statement costs, less sensitive than the wall time to other jobs "
        "on the machine). The bare interpreter and the third-party imports a statement cannot "
        f"avoid are the limits.{before}",
        "Before issue 12 (commit ac26838, this machine, this script): `b2calib --help` 0.49 s, "
        "`import b2calib` 0.47 s (numpy, uproot and SQLAlchemy loaded), `import b2calib.fit` "
        "1.31 s.",
        "",
        "| statement | wall s | CPU s | target | heavy stacks loaded "
        + ("| before: wall s | CPU s | heavy stacks loaded |" if args.before else "|"),
        "|---|---:|---:|---|---|" + ("---:|---:|---|" if args.before else ""),
    ]
    for label, now, then, loaded_then, target, verdict, loaded in rows:
        t = "" if target is None else f"<= {target} s: {verdict}"
        wall, cpu = min(w for w, _ in now), statistics.median(c for _, c in now)
        line = f"| {label} | {wall:.3f} | {cpu:.3f} | {t} | {', '.join(loaded) or 'none'} |"
        if then:
            line += (
                f" {min(w for w, _ in then):.3f} | {statistics.median(c for _, c in then):.3f} "
                f"| {', '.join(loaded_then) or 'none'} |"
            )
        lines.append(line)
    (HERE / "RESULTS_imports.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
