"""The command line: outputs and one-line errors with a non-zero exit status."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from b2calib.cli import cli


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_simulate_and_summaries(tmp_path: Path) -> None:
    code, out = run(
        "simulate",
        "--exp",
        "4",
        "--runs",
        "2",
        "--events-per-run",
        "200",
        "--out",
        str(tmp_path / "x"),
        "--quiet",
        "--jobs",
        "1",
        "--skims",
        "hlt_bhabha,hlt_mumu_2trk",
    )
    assert code == 0, out
    assert "wrote" in out
    code, out = run("summary", str(tmp_path / "x"))
    assert code == 0, out
    assert "== buckets" in out
    assert "hlt_bhabha" in out
    assert "hlt_gamma_gamma" not in out
    code, out = run("runs", str(tmp_path / "x" / "runs.json"), "--type", "physics")
    assert code == 0
    assert out.count(" physics ") >= 1


def test_errors_are_one_line_with_status(tmp_path: Path) -> None:
    bad = tmp_path / "bad.root"
    bad.write_text("hello")
    code, out = run("size-report", str(bad))
    assert code == 1
    assert f"error: {bad}: not a ROOT file" in out
    code, out = run("simulate", "--out", str(tmp_path / "y"), "--detectors", "ECL,FOO", "--quiet")
    assert code == 1
    assert out.strip().splitlines() == [
        "Error: unknown detectors ['FOO']; known: PXD, SVD, CDC, TOP, ARICH, ECL, KLM"
    ]
    code, out = run("runs", str(tmp_path))
    assert code == 1
    assert "not a run registry" in out
    code, out = run("runs", str(tmp_path / "missing"))
    assert code == 2  # click's usage error: the path does not exist


#: Stacks the command line's help must not load (issue 19: `b2calib --help` took over 2 s).
HEAVY_STACKS = (
    "numpy", "scipy", "iminuit", "numba", "uproot", "sqlalchemy", "matplotlib", "holoviews",
    "bokeh", "panel",
)  # fmt: skip


def loaded_after(statement: str) -> set[str]:
    """The :data:`HEAVY_STACKS` a fresh interpreter has in ``sys.modules`` after ``statement``
    (a ``SystemExit`` with status 0, as ``--help`` ends, is not an error)."""
    probe = (
        f"import sys\ntry:\n    {statement}\nexcept SystemExit as e:\n    assert not e.code\n"
        f"print('loaded:' + ','.join(m for m in {HEAVY_STACKS!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = done.stdout.splitlines()[-1].removeprefix("loaded:")
    return {m for m in loaded.split(",") if m}


def test_help_loads_no_heavy_stack_and_lists_every_command() -> None:
    """`b2calib --help` loads click and the command modules only (the groups' modules are
    imported when a command is looked up); every command is still listed and runs."""
    help_statement = "sys.argv = ['b2calib', '--help']; from b2calib.cli import main; main()"
    assert loaded_after(help_statement) == set()
    code, out = run("--help")
    assert code == 0, out
    for name in ("calibrate", "db", "grl", "gt", "iov", "lookup", "payload", "prompt", "qa",
                 "serve", "signoff", "simulate", "user"):  # fmt: skip
        assert re.search(rf"^  {name} ", out, re.M), name
    # a group's own help and a subcommand still work through the lazy lookup
    code, out = run("signoff", "--help")
    assert code == 0, out
    assert "history" in out
    # simulate's help names the detectors (read from the geometry only then)
    code, out = run("simulate", "--help")
    assert code == 0, out
    assert "PXD,SVD,CDC,TOP,ARICH,ECL,KLM" in out.replace("\n", "").replace(" ", "")


def test_fit_package_loads_no_fitting_or_plotting_stack_at_import() -> None:
    """`import b2calib.fit` (and the histogram statistics the QA monitoring imports) load
    neither iminuit, scipy, matplotlib nor holoviews; a fit name loads its fitting stack,
    still without plotting."""
    assert loaded_after("import b2calib.fit") <= {"numpy"}
    assert loaded_after("import b2calib.fit.histstats") <= {"numpy"}
    after_fit = loaded_after("from b2calib.fit import fit_hist, plot_fit, gauss")
    assert {"iminuit", "scipy"} <= after_fit
    assert not after_fit & {"matplotlib", "holoviews", "bokeh", "panel"}
