"""Notebooks run from top to bottom against the sample bucket; their key numbers are checked."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from b2calib.io import read_metadata
from b2calib.runs import RunRegistry
from tests.conftest import REPO


def execute(name: str, data: Path) -> dict[str, object]:
    """Run a notebook with its ``parameters`` cell pointed at ``data``; return the JSON that its
    last cell prints."""
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    for cell in nb.cells:
        assert not cell.get("outputs"), f"{name} is committed with outputs"
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = f"DATA = {str(data)!r}"
    # the kernel makes its scratch folders (tempfile.mkdtemp: conditions databases, staged
    # payloads) in a folder removed afterwards, not one left in /tmp per notebook and test run
    scratch = tempfile.mkdtemp(prefix="b2calib-notebook-")
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = scratch
    try:
        NotebookClient(
            nb,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(REPO / "notebooks")}},
        ).execute()
    finally:
        if before is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before
        shutil.rmtree(scratch, ignore_errors=True)
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.notebooks
def test_explore_sample(sample: Path) -> None:
    numbers = execute("explore_sample.ipynb", sample)
    reg = RunRegistry.load(sample / "runs.json")
    assert numbers["runs"] == len(reg) == 12
    assert numbers["physics_runs"] == len(reg.select(run_type="physics"))
    assert numbers["bucket_complete"] is True
    assert 9.0 <= float(numbers["bucket_lumi_fb"]) <= 20.0  # type: ignore[arg-type]
    assert numbers["ecl_crystals"] == 8736
    first = reg.select(run_type="physics")[0]
    meta = read_metadata(
        sample / "e0012" / f"r{first.run:05d}" / f"cdst_hlt_bhabha_e0012_r{first.run:05d}.root"
    )
    assert numbers["bhabha_events_run"] == meta.n_events
    assert numbers["skim_files"] == len(list(sample.rglob("cdst_*.root")))


@pytest.mark.slow
@pytest.mark.notebooks
def test_beam(sample: Path) -> None:
    """The beam notebook: its own mu-mu sample with the beam step (the bucket has ~50 dimuons per
    run), the beam spot per time interval against the truth."""
    numbers = execute("beam.ipynb", sample)
    assert float(numbers["bucket_dimuons_per_run"]) < 100  # type: ignore[arg-type]
    assert numbers["status"] == "OK"
    assert numbers["iterations"] == 2
    assert numbers["payloads"] == 3
    assert numbers["rows"] == numbers["rows_ok"]
    assert int(numbers["rows"]) >= 25  # type: ignore[call-overload]
    # ~32 rows: the pull statistics scatter by ~0.2
    for mean, width in zip(numbers["pull_mean"], numbers["pull_width"], strict=True):  # type: ignore[call-overload]
        assert abs(mean) < 0.5
        assert 0.6 < width < 1.4
    assert float(numbers["step_distance_s"]) <= 360.0  # type: ignore[arg-type]
    for pull in [*numbers["size_x_pull"], *numbers["size_z_pull"]]:  # type: ignore[misc]
        assert abs(pull) < 3.5
    assert numbers["y_not_resolved"] is True
    # boost vector and collision energy on the notebook's second sample (4S, 4S, off-resonance,
    # 4S; ~15k pairs per run): few rows, loose statistical bounds
    assert numbers["energy_status"] == {"boostvector": "OK", "ecms": "OK"}
    assert int(numbers["boost_rows"]) >= 3  # type: ignore[call-overload]
    assert abs(float(numbers["boost_pull_mean"])) < 1.0  # type: ignore[arg-type]
    assert 0.3 < float(numbers["boost_pull_width"]) < 2.0  # type: ignore[arg-type]
    # 4S and off-resonance runs never share an Ecms payload
    assert numbers["ecms_payload_beam_energies"] == [["4S"], ["Continuum"], ["4S"]]
    assert numbers["ecms_rows_ok"] == len(numbers["ecms_pulls"])  # type: ignore[arg-type]
    assert all(abs(p) < 3.5 for p in numbers["ecms_pulls"])  # type: ignore[attr-defined]
