"""Skim files: metadata, clear errors on bad files, identical content in uproot and ROOT."""

from pathlib import Path
from types import ModuleType

import awkward as ak
import numpy as np
import pytest

from b2calib.exceptions import FileFormatError, MissingBranchError
from b2calib.io import open_skim, read_metadata
from b2calib.sim import SimConfig, SimulationResult, simulate
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


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_engine_read_is_uproots(tmp_path: Path, compression: str) -> None:
    """SkimFile.arrays reads numeric branches basket by basket into the arrays: the same forms,
    types and values as uproot's TTree.arrays, for any entry range, across baskets too."""
    cfg = SimConfig(
        n_runs=1,
        events_per_run=3000,
        chunk_size=1000,
        seed=5,
        run_types={"physics": 1.0},
        skims=["hlt_bhabha"],
        pxd_occupancy=2e-6,
        compression=compression,
    )
    simulate(cfg, tmp_path, jobs=1)
    path = next(tmp_path.rglob("cdst_hlt_bhabha_*.root"))
    with open_skim(path) as f:
        names = f.branches
        n = f.num_entries
        edges = [int(e) for e in f.tree["PXDDigits_m_sensorID"].entry_offsets]
        assert len(edges) > 3  # several baskets
        assert f.tree["PXDDigits_m_sensorID"].interpretation.content.to_dtype == np.uint16
        inner = (edges[1] - 1, edges[2] + 1)  # across a basket edge
        ranges = [(None, None), (0, n), inner, (edges[1], edges[2]), (3, 3), (n, n + 5), (-5, None)]
        for start, stop in ranges:
            mine = f.arrays(names, start, stop)
            ref = f.tree.arrays(names, entry_start=start, entry_stop=stop, library="ak")
            assert mine.layout.form == ref.layout.form, (start, stop)
            assert len(mine) == len(ref), (start, stop)
            for name in names:
                assert ak.array_equal(mine[name], ref[name]), (name, start, stop)
