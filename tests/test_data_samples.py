"""The committed sample bucket is what its documented command regenerates, and is usable."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from b2calib.conditions.localdb import LocalDatabase
from b2calib.conditions.payload import Payload
from b2calib.runs import RunRegistry
from b2calib.sim import SimConfig, simulate
from tests.conftest import REPO
from tests.skimfiles import adler32
from tests.test_sim import read_all


def catalogue(folder: Path) -> dict[str, dict[str, object]]:
    return json.loads((folder / "catalogue.json").read_text())["files"]


def test_sample_is_one_complete_bucket(sample: Path) -> None:
    reg = RunRegistry.load(sample / "runs.json")
    buckets = reg.buckets(9.0)
    assert buckets[0].complete
    assert 9.0 <= buckets[0].lumi_fb <= 20.0
    assert reg.select(run_type="cosmic")
    size = sum(f.stat().st_size for f in (REPO / "data-samples").rglob("*") if f.is_file())
    assert size < 12e6, f"data-samples/ is {size / 1e6:.1f} MB"


def test_sample_has_its_file_catalogue(sample: Path) -> None:
    """Every skim file of the sample is in its catalogue, with its size and Adler-32."""
    files = catalogue(sample)
    assert set(files) == {f.relative_to(sample).as_posix() for f in sample.rglob("cdst_*.root")}
    for rel, entry in files.items():
        path = sample / rel
        assert entry == {"size": path.stat().st_size, "adler32": adler32(path)}, rel


@pytest.mark.slow
def test_regenerating_gives_identical_content(sample: Path, tmp_path: Path) -> None:
    cfg_file = REPO / "data-samples" / "bucket.toml"
    assert "b2calib simulate --config data-samples/bucket.toml --out data-samples/bucket" in (
        cfg_file.read_text()
    )
    simulate(SimConfig.from_file(cfg_file), tmp_path, jobs=2)
    a, b = read_all(sample), read_all(tmp_path)
    assert a.keys() == b.keys()
    for f in a:
        for branch in a[f]:
            assert np.array_equal(a[f][branch], b[f][branch]), (f, branch)
    new, old = LocalDatabase(tmp_path / "truth"), LocalDatabase(sample / "truth")
    assert new.entries() == old.entries()
    for e in old.entries():
        assert Payload.read(old.folder / e.filename).same_content(
            Payload.read(new.folder / e.filename)
        )
    assert (
        RunRegistry.load(tmp_path / "runs.json").select()
        == RunRegistry.load(sample / "runs.json").select()
    )
    assert tomllib.loads(cfg_file.read_text())["simulation"]["seed"] == 2
    # the same files in the catalogue, of the same sizes; ROOT's headers hold the time of
    # writing and a random UUID, so the checksums are those of the new bytes
    new_files, old_files = catalogue(tmp_path), catalogue(sample)
    assert {k: v["size"] for k, v in new_files.items()} == {
        k: v["size"] for k, v in old_files.items()
    }
    for rel, entry in new_files.items():
        assert entry["adler32"] == adler32(tmp_path / rel), rel
