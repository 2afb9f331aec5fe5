"""Start-up cost: the command line's help and the imports a user pays before any work; writes
bench/RESULTS_imports.md.

Each statement runs in a fresh interpreter (``python -c``, the page cache warm), best of
``--repeat``; side by side with the limits: the bare interpreter, and the third-party stacks the
statement cannot avoid (``b2calib.fit`` is built on iminuit and scipy.stats, the command line
on click). Also lists which heavy stacks each import loads.

Before issue 12 (commit ac26838, same machine, same script): b2calib --help 0.49 s, import
b2calib 0.47 s (numpy, uproot and SQLAlchemy loaded), import b2calib.fit 1.31 s.

Usage: python bench/bench_imports.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
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
    ("import b2calib", "import b2calib", None),
    (
        "import iminuit, scipy.stats, numba (limit of fit)",
        "import iminuit, iminuit.cost, scipy.stats, numba",
        None,
    ),
    ("import b2calib.fit", "import b2calib.fit", 1.0),
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
HEAVY = ("numpy", "uproot", "scipy", "iminuit", "numba", "sqlalchemy", "holoviews", "panel")


def run(statement: str, repeat: int) -> tuple[float, list[str]]:
    """Best wall time of ``python -c statement`` and the heavy stacks it loaded."""
    probe = (
        f"try:\n    {statement}\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"import sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    best, loaded = float("inf"), ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=False
        )
        best = min(best, time.perf_counter() - t0)
        if done.returncode != 0:
            raise RuntimeError(f"{statement!r} failed:\n{done.stderr}")
        loaded = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    return best, [m for m in loaded.split(",") if m]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    rows = []
    for label, statement, target in CASES:
        seconds, loaded = run(statement, args.repeat)
        verdict = "" if target is None else ("met" if seconds <= target else "MISSED")
        rows.append((label, seconds, target, verdict, loaded))
        print(f"{label:55s} {seconds:6.3f} s  {verdict}  {', '.join(loaded)}")
    lines = [
        "# Start-up: command-line help and imports",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} by `python bench/bench_imports.py "
        f"--repeat {args.repeat}` on {machine()}.",
        "",
        "Each statement in a fresh interpreter, best of the repeats (page cache warm). The bare "
        "interpreter and the third-party imports a statement cannot avoid are the limits.",
        "Before issue 12 (commit ac26838, this machine, this script): `b2calib --help` 0.49 s, "
        "`import b2calib` 0.47 s (numpy, uproot and SQLAlchemy loaded), `import b2calib.fit` "
        "1.31 s.",
        "",
        "| statement | seconds | target | heavy stacks loaded |",
        "|---|---:|---|---|",
    ]
    for label, seconds, target, verdict, loaded in rows:
        t = "" if target is None else f"<= {target} s: {verdict}"
        lines.append(f"| {label} | {seconds:.3f} | {t} | {', '.join(loaded) or 'none'} |")
    (HERE / "RESULTS_imports.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
