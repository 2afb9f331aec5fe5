"""Skim-file integrity on the command line (issue 13): ``size-report`` on baskets that cannot be
decompressed, ``calibrate`` and ``qa collect`` on the issue's damaged inputs (checksums,
``--no-verify``, duplicate events, NaN values and ``--max-nonfinite``, ``--on-bad-file``)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from b2calib.cli import cli
from b2calib.exceptions import ConditionsError
from tests.skimfiles import (
    basket_range,
    copy_bucket,
    corrupt_silently,
    recatalogue,
    rewrite,
    skim_file,
    with_nonfinite,
)


@pytest.fixture
def bucket(sample: Path, tmp_path: Path) -> Path:
    """Runs 1-3 of the sample bucket (registry, catalogue and skims), free to damage."""
    return copy_bucket(sample, tmp_path / "bucket", runs=range(1, 4))


# -- size-report -----------------------------------------------------------------------------------


def test_size_report_says_when_a_basket_cannot_be_decompressed(bucket: Path) -> None:
    from b2calib.sizereport import size_report

    victim = skim_file(bucket, 1)
    start, n = basket_range(victim, "CDCHits_m_time")
    data = bytearray(victim.read_bytes())
    data[start + n - 200 : start + n - 100] = bytes(100)  # zeros inside the compressed block
    victim.write_bytes(bytes(data))
    rep = size_report(victim)
    checksum, basket = rep.problems  # the catalogue tells too
    assert checksum.startswith("adler32 is")
    assert checksum.endswith("[checksum]")
    assert "CDCHits_m_time" in basket
    assert "basket 0 (entries 0-53" in basket
    assert "cannot be decompressed" in basket
    result = CliRunner().invoke(cli, ["size-report", str(victim)])
    assert result.exit_code == 1
    assert "CDCHits" in result.output  # the table is still printed
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {victim}: {checksum}", f"error: {victim}: {basket}"]
    (bucket / "catalogue.json").unlink()  # a file from elsewhere: the baskets still tell
    assert size_report(victim).problems == [basket]
    clean = CliRunner().invoke(cli, ["size-report", str(skim_file(bucket, 2))])
    assert clean.exit_code == 0
    assert "error" not in clean.output


def test_size_report_checks_the_catalogue(bucket: Path) -> None:
    victim = skim_file(bucket, 1)
    corrupt_silently(victim, "CDCHits_m_time")
    result = CliRunner().invoke(cli, ["size-report", str(victim)])
    assert result.exit_code == 1
    assert f"error: {victim}: adler32" in result.output


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def previous(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A conditions database with the sample's truth as tag ``previous``."""
    db = tmp_path_factory.mktemp("previous") / "c.sqlite"
    code, out = _cli(
        "db", "import-local", str(sample / "truth"), "--gt", "previous", "--db", str(db)
    )
    assert code == 0, out
    return db


def _gain(bucket: Path, db: Path, *extra: str, runs: str = "1-3") -> tuple[int, str, list[float]]:
    """``calibrate cdc-dedx-run-gain`` (runs 1-3); exit status, output, staged gains."""
    from b2calib.conditions import ConditionsDB

    mine = db.parent / f"{bucket.name}-{len(list(db.parent.iterdir()))}.sqlite"
    shutil.copy(db, mine)
    code, out = _cli(
        "calibrate",
        "cdc-dedx-run-gain",
        "--data",
        str(bucket),
        "--runs",
        runs,
        "--gt",
        "previous",
        "--staging",
        "dedx",
        "--db",
        str(mine),
        "--executor",
        "inprocess",
        "--no-cache",
        "--quiet",
        *extra,
    )
    conditions = ConditionsDB(mine)
    try:
        gains = [
            float(conditions.payload(e.payload).value()[0])
            for e in conditions.iovs("dedx", "CDCDedxRunGain")
        ]
    except ConditionsError:  # nothing staged: no staging tag
        gains = []
    finally:
        conditions.close()
    return code, out, gains


def test_calibrate_skips_a_corrupt_file(bucket: Path, previous: Path) -> None:
    """The issue: bytes overwritten inside a compressed block moved the dE/dx run gain."""
    code, out, _ = _gain(bucket, previous)
    assert code == 0, out
    victim = skim_file(bucket, 1)
    corrupt_silently(victim, "CDCDedxTracks_m_dedxAvgTruncated")
    code, out, _ = _gain(bucket, previous, "--no-verify")
    assert "skipped file" not in out  # read, garbage and all, as before
    code, out, _ = _gain(bucket, previous)
    assert code == 0, out
    assert f"skipped file {victim}" in out
    assert "adler32" in out


def test_calibrate_counts_and_stops_on_nan(sample: Path, tmp_path: Path, previous: Path) -> None:
    """The issue: NaN in dE/dx inputs were dropped silently and moved the run gain of runs 1-3
    (0.9726 -> 0.9713 there); counted now, reported in the job summary, a stop above the
    limit."""
    bucket = copy_bucket(sample, tmp_path / "whole")
    code, out, clean = _gain(bucket, previous, runs="1-11")
    assert code == 0, out
    assert clean
    assert abs(clean[0] - 0.9726) < 5e-4
    for run in (1, 2, 3):
        f = skim_file(bucket, run)
        rewrite(f, f, with_nonfinite("CDCDedxTracks", "m_cosTheta", 0.05, seed=run))
        recatalogue(bucket, f)
    code, out, _ = _gain(bucket, previous, runs="1-11")
    assert code == 1
    [line] = [x for x in out.splitlines() if x.startswith("Error:")]
    assert "CDCDedxTracks_m_cosTheta" in line
    assert "NaN or Inf" in line
    # the first bad run the job meets: the engine sends the runs with the most events first
    named = re.search(r"run \(12, (\d+)\)", line)
    assert named is not None, line
    assert int(named[1]) in (1, 2, 3), line
    assert f"r{int(named[1]):05d}" in line  # its file
    assert "--max-nonfinite" in line
    code, out, moved = _gain(bucket, previous, "--max-nonfinite", "0.2", runs="1-11")
    assert code == 0, out
    assert moved[0] != clean[0]  # what the values did to the constant ...
    reported = [x for x in out.splitlines() if "non-finite" in x]
    assert len(reported) == 3
    assert all("CDCDedxTracks_m_cosTheta" in x for x in reported)
    assert "run 12.1" in reported[0]  # ... is no longer silent
    code, out, _ = _gain(bucket, previous, "--on-bad-file", "skip", runs="1-11")
    assert code == 0, out  # runs 1-3 left out and listed, the others calibrated
    assert [x.split(":")[0] for x in out.splitlines() if x.endswith("[non-finite]")] == [
        f"  skipped file {skim_file(bucket, run)}" for run in (1, 2, 3)
    ]


def test_calibrate_stops_on_duplicate_events(bucket: Path, previous: Path) -> None:
    original = skim_file(bucket, 1)
    copy = original.with_name(original.stem + "_copy.root")
    shutil.copy(original, copy)
    code, out, _ = _gain(bucket, previous)
    assert code == 1
    errors = [x for x in out.splitlines() if x.startswith("Error:")]
    assert len(errors) == 1
    assert str(copy) in errors[0]
    assert "duplicate-events" in errors[0]
    code, out, _ = _gain(bucket, previous, "--on-bad-file", "skip")
    assert f"skipped file {copy}" in out
    assert f"skipped file {original}" in out


def test_qa_collect_no_verify_and_policy(bucket: Path, tmp_path: Path) -> None:
    victim = skim_file(bucket, 2, "hlt_mumu_2trk")
    corrupt_silently(victim, "SimTruth_m_eventTime")  # read by no QA part
    base = ["qa", "collect", str(bucket), "--db", str(tmp_path / "qa.sqlite")]
    base += ["--executor", "inprocess", "--no-cache"]
    code, out = _cli(*base)
    assert code == 0, out
    assert f"{victim} (checksum)" in out
    code, out = _cli(*base, "--no-verify")
    assert code == 0, out
    assert "(checksum)" not in out
