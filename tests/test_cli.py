"""The command line: outputs and one-line errors with a non-zero exit status."""

from __future__ import annotations

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
