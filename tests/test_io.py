"""Skim files: metadata, clear errors on bad files, identical content in uproot and ROOT."""

from pathlib import Path
from types import ModuleType

import awkward as ak
import numpy as np
import pytest

from b2calib.exceptions import FileFormatError, MissingBranchError
from b2calib.io import open_skim, read_metadata
from b2calib.sim import SimConfig, SimulationResult
from b2calib.sizereport import size_report


def first_file(result: SimulationResult, skim: str) -> Path:
    return next(f for f in result.files if f"cdst_{skim}_" in f.name)


def test_metadata(experiment: tuple[SimConfig, SimulationResult]) -> None:
    cfg, result = experiment
    path = first_file(result, "hlt_bhabha")
    meta = read_metadata(path)
    assert (meta.exp, meta.skim, meta.seed) == (7, "hlt_bhabha", cfg.seed)
    assert meta.globaltag == "b2calib_sim_nominal"
    assert meta.release.startswith("b2calib-")
    with open_skim(path) as f:
        assert f.num_entries == meta.n_events > 0
        assert "ECLCalDigits_m_CellId" in f.branches
        assert "nECLCalDigits" in f.branches


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "not-root"), (b"PK\x03\x04 a zip file", "not-root"), (b"root", "truncated")],
)
def test_bad_files(tmp_path: Path, content: bytes, reason: str) -> None:
    bad = tmp_path / "bad.root"
    bad.write_bytes(content)
    with pytest.raises(FileFormatError) as err:
        open_skim(bad)
    assert err.value.reason == reason
    assert str(bad) in str(err.value)
    with pytest.raises(FileFormatError):
        size_report(bad)


def test_truncated_file(experiment: tuple[SimConfig, SimulationResult], tmp_path: Path) -> None:
    path = first_file(experiment[1], "hlt_bhabha")
    cut = tmp_path / "cut.root"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FileFormatError, match="truncated") as err:
        open_skim(cut)
    assert err.value.reason == "truncated"
    with pytest.raises(FileFormatError, match="truncated"):
        size_report(cut)
    with pytest.raises(FileFormatError, match=r"missing-tree|no TTree"):
        open_skim(sorted((experiment[1].out / "truth").glob("*.root"))[0])


def test_missing_branch(experiment: tuple[SimConfig, SimulationResult]) -> None:
    with open_skim(first_file(experiment[1], "hlt_bhabha")) as f:
        with pytest.raises(MissingBranchError, match="ECLCalDigits_m_Energy") as err:
            f.arrays(["ECLCalDigits_m_Enrgy"])
        assert isinstance(err.value, KeyError)


def test_uproot_and_root_read_the_same(
    experiment: tuple[SimConfig, SimulationResult], root: ModuleType
) -> None:
    ROOT = root

    path = first_file(experiment[1], "hlt_mumu_2trk")
    flat = ["EventMetaData_m_event", "EventMetaData_m_time", "SoftwareTriggerVariables_EC12CMSLE"]
    jagged = [
        "ECLCalDigits_m_CellId",
        "ECLCalDigits_m_Energy",
        "CDCHits_m_time",
        "TOPDigits_m_pixelID",
    ]
    with open_skim(path) as f:
        arr = f.arrays(flat + jagged)
    f_root = ROOT.TFile.Open(str(path))
    meta_root = str(f_root.Get("FileMetaData").GetString())
    f_root.Close()
    assert read_metadata(path).to_json() == meta_root.replace(" ", " ")
    cols = ROOT.RDataFrame("tree", str(path)).AsNumpy(flat + jagged)
    for b in flat:
        assert np.array_equal(cols[b], ak.to_numpy(arr[b])), b
    for b in jagged:
        root_flat = np.concatenate([np.asarray(v) for v in cols[b]]) if len(cols[b]) else []
        assert np.array_equal(root_flat, ak.to_numpy(ak.flatten(arr[b]))), b
        assert [len(v) for v in cols[b]] == ak.num(arr[b]).tolist(), b


def test_size_report(experiment: tuple[SimConfig, SimulationResult]) -> None:
    rep = size_report(first_file(experiment[1], "hlt_bhabha"))
    objects = [r.name for r in rep.by_object()]
    assert objects[0] == "CDCHits"  # the largest object of a Bhabha cDST here
    assert {"ECLCalDigits", "TOPDigits", "EventMetaData"} <= set(objects)
    total = sum(r.compressed for r in rep.by_object())
    assert total == sum(b.compressed for b in rep.branches) < rep.file_bytes
    text = rep.format()
    assert "kB/event" in text
    assert "CDCHits" in text
