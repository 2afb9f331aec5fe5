"""Skim-file integrity on the command line (issue 13): ``size-report`` on baskets that cannot be
decompressed."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from b2calib.cli import cli
from tests.skimfiles import basket_range, copy_bucket, corrupt_silently, skim_file


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
