"""Skim-file and run integrity in the engine (issue 13): checksums recorded by the simulator and
verified before a file is read, duplicate events, files whose path and metadata disagree, a run
registry that lists a run twice or misses one, NaN and Inf values in what a collector reads.

Every damaged input is a copy of (part of) the committed sample bucket, damaged as the issue's
reproductions did; the command line on the same cases is in ``test_integrity_cli.py``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from click.testing import CliRunner

from b2calib.cli import cli
from b2calib.engine import Dataset, ValueCollector, collect
from b2calib.exceptions import ConfigError, FileFormatError
from b2calib.runs import RunRegistry
from tests.skimfiles import (
    adler32,
    basket_range,
    copy_bucket,
    entries,
    names,
    overwrite,
    read_skim,
    recatalogue,
    rewrite,
    skim_file,
    twice,
    with_nonfinite,
)
from tests.test_engine import ECL

QUIET = dict(executor="inprocess", cache=False, progress=False)


@pytest.fixture
def bucket(sample: Path, tmp_path: Path) -> Path:
    """Runs 1-3 of the sample bucket (registry, catalogue and skims), free to damage."""
    return copy_bucket(sample, tmp_path / "bucket", runs=range(1, 4))


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


# -- checksums -----------------------------------------------------------------------------------


def test_the_simulator_records_a_checksum_per_file(experiment) -> None:  # type: ignore[no-untyped-def]
    _, result = experiment
    catalogue = json.loads((result.out / "catalogue.json").read_text())
    assert catalogue["checksum"] == "adler32"
    assert set(catalogue["files"]) == {f.relative_to(result.out).as_posix() for f in result.files}
    for rel, entry in catalogue["files"].items():
        path = result.out / rel
        assert entry == {"size": path.stat().st_size, "adler32": adler32(path)}, rel


def test_a_corrupt_file_is_caught_by_its_checksum(bucket: Path) -> None:
    victim = skim_file(bucket, 2)
    start, n = basket_range(victim, "CDCHits_m_time")  # a branch the ECL collector never reads
    overwrite(victim, start + n // 2, 2048)
    ds = Dataset.select(bucket, skims="hlt_bhabha")
    r = collect(ECL, ds, **QUIET)
    assert names(r.skipped) == [(victim.name, "checksum")]
    message = r.skipped[0].message
    assert message.count(str(victim)) == 1
    assert "adler32" in message
    assert "catalogue" in message
    assert sorted(r.output) == [(12, 1), (12, 3)]
    assert r.n_events == sum(f.n_events for f in ds if f.run != 2)
    with pytest.raises(FileFormatError) as err:
        collect(ECL, ds, on_bad_file="stop", **QUIET)
    assert err.value.reason == "checksum"
    assert str(err.value).count(str(victim)) == 1  # one line naming the file once
    unverified = collect(ECL, ds, verify=False, **QUIET)
    assert unverified.ok  # the damage is where this collector does not read
    assert sorted(unverified.output) == [(12, 1), (12, 2), (12, 3)]


def test_a_changed_size_is_a_mismatch(bucket: Path) -> None:
    victim = skim_file(bucket, 3)
    with victim.open("ab") as f:
        f.write(b"\0" * 100)
    r = collect(ECL, Dataset.select(bucket, skims="hlt_bhabha"), **QUIET)
    assert names(r.skipped) == [(victim.name, "checksum")]
    assert "bytes" in r.skipped[0].message


def test_verification_reads_each_file_once(bucket: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once per file, not per work item, and not again in the same process while the file keeps
    its path, size and modification time."""
    from b2calib.engine import integrity

    calls: list[str] = []
    real = integrity.file_checksum

    def counting(path: str) -> str:
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(integrity, "file_checksum", counting)
    integrity.forget_verified()
    ds = Dataset.select(bucket, skims="hlt_bhabha")
    first = collect(ECL, ds, step_size=10, **QUIET)  # several work items per file
    assert first.ok
    assert first.n_items > len(ds)
    assert first.verify_seconds > 0  # the time it took is reported
    assert collect(ECL, ds, step_size=10, verify=False, **QUIET).verify_seconds == 0.0
    collect(ECL, ds, step_size=10, **QUIET)
    collect(ECL, ds, executor="processes", workers=2, cache=False, progress=False)
    assert sorted(calls) == sorted(f.path for f in ds)
    touched = Path(ds.files[0].path)
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    collect(ECL, ds, **QUIET)
    assert calls.count(str(touched)) == 2


def test_files_without_a_catalogue_entry_are_read_and_said_once(
    bucket: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (bucket / "catalogue.json").unlink()
    ds = Dataset.select(bucket, skims="hlt_bhabha")
    with caplog.at_level(logging.WARNING, logger="b2calib"):
        first = collect(ECL, ds, **QUIET)
        again = collect(ECL, ds, **QUIET)
    assert first.ok
    assert again.ok
    assert first.unverified == sorted(f.path for f in ds)
    notes = [r.getMessage() for r in caplog.records if "catalogue" in r.getMessage()]
    assert len(notes) == 1, notes
    assert str(bucket) in notes[0]
    assert "3 files" in notes[0]


def test_a_bad_catalogue_is_one_line(bucket: Path) -> None:
    (bucket / "catalogue.json").write_text('{"files": 5}')
    with pytest.raises(ConfigError, match=r"catalogue\.json: not a file catalogue"):
        collect(ECL, Dataset.select(bucket, skims="hlt_bhabha"), **QUIET)


# -- duplicate events, path vs metadata, the run registry ------------------------------------------


@pytest.mark.parametrize("how", ["second copy", "written twice"])
def test_duplicate_events_stop_the_job(bucket: Path, how: str, tmp_path: Path) -> None:
    original = skim_file(bucket, 1)
    if how == "second copy":
        copy = original.with_name(original.stem + "_copy.root")
        shutil.copy(original, copy)
        involved = sorted([original.name, copy.name])
    else:
        n = entries(original)
        rewrite(original, original, twice, n_events=2 * n)
        recatalogue(bucket, original)
        involved = [original.name]
    ds = Dataset.select(bucket, skims="hlt_bhabha")
    assert not ds.problems  # nothing to see in the metadata: the events tell
    with pytest.raises(FileFormatError) as err:
        collect(ECL, ds, **QUIET)
    assert err.value.reason == "duplicate-events"
    line = str(err.value)
    assert "\n" not in line
    assert "run (12, 1)" in line
    assert all(name in line for name in involved)
    for executor in ("inprocess", "processes"):
        for cache in (False, tmp_path / "cache", tmp_path / "cache"):  # the second from the cache
            r = collect(
                ECL,
                ds,
                on_bad_file="skip",
                executor=executor,
                workers=2,
                cache=cache,
                progress=False,
            )
            assert names(r.skipped) == [(x, "duplicate-events") for x in involved]
            assert sorted(r.output) == [(12, 2), (12, 3)]


def test_duplicate_events_as_by_sorting() -> None:
    """Chunks that increase and lie apart are answered without the sort (issue 20); every case
    gives what sorting all the numbers gives: the repeated numbers, their type and the files."""
    from b2calib.engine.integrity import duplicate_events

    def by_sorting(numbers: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, list[str]]:
        ordered = np.sort(np.concatenate([a for _, a in numbers]))
        repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
        return repeated, sorted({p for p, a in numbers if np.isin(a, repeated).any()})

    rng = np.random.default_rng(20)
    cases = [
        [("a", np.arange(5, dtype=np.uint32)), ("b", np.arange(5, 9, dtype=np.uint32))],
        [("a", np.arange(5, dtype=np.uint32)), ("b", np.arange(4, 9, dtype=np.uint32))],
        [("b", np.arange(10, 12)), ("a", np.arange(3)), ("c", np.zeros(0, np.int64))],
        [("a", np.array([1, 2, 2, 3]))],  # written twice in a file
        [("a", np.array([3, 1, 2]))],  # not in order, no repeat
        [("a", np.array([7])), ("b", np.array([7]))],
        [("a", np.zeros(0, np.uint32))],
    ]
    for _ in range(2000):
        chunks = []
        for j in range(int(rng.integers(1, 5))):
            n = int(rng.integers(0, 6))
            kind = int(rng.integers(0, 3))
            if kind == 0:
                a = np.sort(rng.choice(40, n, replace=False)).astype(np.uint32)
            elif kind == 1:
                a = rng.integers(0, 30, n)
            else:
                a = np.arange(10 * j, 10 * j + n, dtype=np.uint32)
            chunks.append((f"f{j}", a))
        cases.append(chunks)
    for numbers in cases:
        repeated, involved = duplicate_events(numbers)
        want, want_involved = by_sorting(numbers)
        assert repeated.dtype == want.dtype
        assert np.array_equal(repeated, want)
        assert involved == want_involved


def test_duplicate_events_do_not_double_the_luminosity(bucket: Path) -> None:
    """The issue: a second copy of run 1's Bhabha file doubled its Bhabha luminosity."""
    from b2calib.qa.monitoring import collect_qa

    original = skim_file(bucket, 1)
    shutil.copy(original, original.with_name(original.stem + "_copy.root"))
    with pytest.raises(FileFormatError, match=r"duplicate-events"):
        collect_qa(bucket, runs=[1])
    [run1] = collect_qa(bucket, runs=[1], on_error="skip")
    assert sorted({s.reason for s in run1.skipped}) == ["duplicate-events"]
    assert "bhabha" not in {v.name.split(".")[0] for v in run1.variables}


def test_a_file_whose_path_and_metadata_disagree(bucket: Path) -> None:
    """The issue: a file in r00001 whose metadata says run 3 was counted as run 3."""
    moved = skim_file(bucket, 1, "hlt_gamma_gamma")
    rewrite(moved, moved, run=3)
    recatalogue(bucket, moved)
    ds = Dataset.select(bucket, skims="hlt_gamma_gamma", runs=[3])
    assert [f.path for f in ds] == [str(skim_file(bucket, 3, "hlt_gamma_gamma"))]
    assert names(ds.problems) == [(moved.name, "path-mismatch")]
    assert "r00001" in ds.problems[0].message
    assert "run 3" in ds.problems[0].message
    energy = ValueCollector("ECLCalDigits_m_Energy", (10, 0.0, 6.0))
    with pytest.raises(FileFormatError) as err:
        collect(energy, ds, **QUIET)
    assert err.value.reason == "path-mismatch"
    assert str(moved) in str(err.value)
    r = collect(energy, ds, on_bad_file="skip", **QUIET)
    assert names(r.skipped) == [(moved.name, "path-mismatch")]
    assert r.n_events == entries(skim_file(bucket, 3, "hlt_gamma_gamma"))
    # a selection the file has nothing to do with is not stopped by it
    assert not Dataset.select(bucket, skims="hlt_gamma_gamma", runs=[2]).problems


def test_a_run_listed_twice_in_the_registry(bucket: Path) -> None:
    """The issue: runs.json with run 1 twice was accepted (last wins)."""
    registry = bucket / "runs.json"
    data = json.loads(registry.read_text())
    data["runs"].append(dict(data["runs"][0], lumi_pb=1.0))
    registry.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"runs\.json: run \(12, 1\) is listed 2 times"):
        RunRegistry.load(registry)
    lenient = RunRegistry.load(registry, on_duplicate="drop")
    assert (12, 1) not in lenient
    assert lenient.duplicates == {(12, 1): 2}
    ds = Dataset.select(bucket, skims="hlt_bhabha")
    assert names(ds.problems) == [(skim_file(bucket, 1).name, "registry-duplicate")]
    with pytest.raises(FileFormatError, match=r"runs\.json lists run \(12, 1\) 2 times"):
        collect(ECL, ds, **QUIET)
    r = collect(ECL, ds, on_bad_file="skip", **QUIET)
    assert names(r.skipped) == [(skim_file(bucket, 1).name, "registry-duplicate")]
    assert sorted(r.output) == [(12, 2), (12, 3)]
    code, out = _cli("runs", str(bucket))
    assert code == 1
    assert out.strip().splitlines() == [
        f"Error: {registry}: run (12, 1) is listed 2 times (entries 1 and 13); "
        "a run registry lists each run once"
    ]


def test_files_of_a_run_missing_from_the_registry(bucket: Path) -> None:
    """The issue: files of a run missing from the registry were ignored without a word."""
    registry = bucket / "runs.json"
    data = json.loads(registry.read_text())
    data["runs"] = [r for r in data["runs"] if r["run"] != 3]
    registry.write_text(json.dumps(data))
    ds = Dataset.select(bucket, skims="hlt_bhabha")
    assert names(ds.problems) == [(skim_file(bucket, 3).name, "not-in-registry")]
    with pytest.raises(FileFormatError, match=r"run \(12, 3\) is not in the run registry"):
        collect(ECL, ds, **QUIET)
    r = collect(ECL, ds, on_bad_file="skip", **QUIET)
    assert names(r.skipped) == [(skim_file(bucket, 3).name, "not-in-registry")]
    assert sorted(r.output) == [(12, 1), (12, 2)]
    assert not Dataset.select(bucket, skims="hlt_bhabha", runs=[1, 2]).problems


def test_unreadable_files_are_still_skipped_by_default(bucket: Path) -> None:
    """The default stops on inconsistent data only: a truncated file is left out and listed."""
    victim = skim_file(bucket, 2)
    victim.write_bytes(victim.read_bytes()[:5000])
    r = collect(ECL, Dataset.select(bucket, skims="hlt_bhabha"), **QUIET)
    assert names(r.skipped) == [(victim.name, "truncated")]
    assert r.skipped[0].message.count(str(victim)) == 1
    with pytest.raises(FileFormatError) as err:
        collect(ECL, Dataset.select(bucket, skims="hlt_bhabha"), on_bad_file="stop", **QUIET)
    assert str(err.value) == r.skipped[0].message  # one line, the file named once


# -- NaN and Inf ----------------------------------------------------------------------------------


def test_nonfinite_values_are_counted_per_run_and_branch(bucket: Path) -> None:
    victim = skim_file(bucket, 2)
    rewrite(victim, victim, with_nonfinite("ECLCalDigits", "m_Energy", 0.02))
    recatalogue(bucket, victim)
    data, _ = read_skim(victim)
    energies = ak.to_numpy(ak.flatten(data["ECLCalDigits"]["m_Energy"]))
    bad, total = int((~np.isfinite(energies)).sum()), energies.size
    assert 0 < bad < 0.05 * total
    ds = Dataset.select(bucket, skims="hlt_bhabha")
    r = collect(ECL, ds, max_nonfinite=0.05, **QUIET)
    assert r.ok
    assert r.nonfinite[(12, 2)]["ECLCalDigits_m_Energy"] == (bad, total)
    assert r.nonfinite[(12, 1)]["ECLCalDigits_m_Energy"][0] == 0
    assert r.nonfinite.rows() == [(12, 2, "ECLCalDigits_m_Energy", bad, total)]
    pool = collect(ECL, ds, max_nonfinite=0.05, executor="processes", workers=2, cache=False)
    assert pool.nonfinite == r.nonfinite
    parts = [collect(ECL, Dataset([f]), max_nonfinite=0.05, **QUIET).nonfinite for f in ds]
    assert parts[0] + parts[1] + parts[2] == r.nonfinite  # mergeable like the histograms
    with pytest.raises(FileFormatError) as err:
        collect(ECL, ds, **QUIET)  # the default allows 0.1 %
    assert err.value.reason == "non-finite"
    line = str(err.value)
    assert "run (12, 2)" in line
    assert "ECLCalDigits_m_Energy" in line
    assert str(victim) in line
    assert f"{bad} of {total}" in line
    skipped = collect(ECL, ds, on_bad_file="skip", **QUIET)
    assert names(skipped.skipped) == [(victim.name, "non-finite")]
    assert sorted(skipped.output) == [(12, 1), (12, 3)]
    with pytest.raises(ConfigError, match="max_nonfinite"):
        collect(ECL, ds, max_nonfinite=2.0, **QUIET)


def test_errors_cross_process_boundaries() -> None:
    """A b2calib error raised in a pool worker reaches the parent as itself (it used to break
    the pool: FileFormatError could not be unpickled)."""
    import pickle

    from b2calib.exceptions import InconsistentDataError, MissingBranchError

    for err in (
        FileFormatError("a.root", "checksum", "adler32 is 0, the catalogue recorded 1"),
        InconsistentDataError(["a.root", "b.root"], "duplicate-events", "run (1, 2): twice"),
        MissingBranchError("a.root", "x", ["y"]),
    ):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err)
        assert str(back) == str(err)
        assert back.__dict__ == err.__dict__
