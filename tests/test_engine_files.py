"""The skim files each process keeps open from one work item, batch and event loop to the next
(b2calib.engine._files): reopened when changed, lent to one caller at a time, bounded, closed
with the pool, and the event loop's results the same as with every file opened afresh."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from b2calib import _workers
from b2calib.engine import CollectResult, Dataset, _files, collect
from b2calib.engine._files import FileCache
from b2calib.io import SkimFile
from tests.test_engine import ECL

QUIET = dict(cache=False, progress=False, verify=False)


@pytest.fixture(scope="module")
def runs(sample: Path) -> list[str]:
    """The ECL files of runs 1 to 4 of the sample bucket."""
    paths = [f.path for f in Dataset.select(sample, skims="hlt_bhabha", runs=range(1, 5))]
    assert [int(Path(p).parent.name[1:]) for p in paths] == [1, 2, 3, 4]
    return paths


def _closed(f: SkimFile) -> bool:
    return bool(f._file.file.closed)


def _copy(src: str, dst: Path) -> None:
    """Write ``src``'s bytes to ``dst`` through a new file renamed over it (a new inode)."""
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def test_a_kept_file_is_reopened_when_replaced_rewritten_or_touched(
    runs: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "cdst_hlt_bhabha_e0012_r00001.root"
    _copy(runs[0], path)
    cache = FileCache(4)
    first, ident = cache.take(str(path))
    assert first._file.file.object_cache is None
    assert first._file.file.array_cache is None
    cache.give_back(str(path), ident, first)
    again, ident = cache.take(str(path))
    assert again is first
    assert cache.opened == 1
    cache.give_back(str(path), ident, again)
    _copy(runs[1], path)  # replaced: another inode
    replaced, ident = cache.take(str(path))
    assert replaced is not first
    assert _closed(first)
    assert cache.opened == 2
    assert replaced.metadata.run == 2
    cache.give_back(str(path), ident, replaced)
    path.write_bytes(Path(runs[0]).read_bytes())  # rewritten in place: same inode, new size
    rewritten, ident = cache.take(str(path))
    assert rewritten.metadata.run == 1
    assert _closed(replaced)
    assert cache.opened == 3
    cache.give_back(str(path), ident, rewritten)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched
    touched, _ = cache.take(str(path))
    assert touched is not rewritten
    assert cache.opened == 4
    touched.close()


def test_a_file_is_lent_to_one_caller_at_a_time_and_the_cache_is_bounded(
    runs: list[str],
) -> None:
    cache = FileCache(2)
    a, ia = cache.take(runs[0])
    b, ib = cache.take(runs[0])  # in use: a thread asking for it too gets its own
    assert a is not b
    assert cache.opened == 2
    cache.give_back(runs[0], ia, a)
    cache.give_back(runs[0], ib, b)  # one file per path is kept
    assert len(cache) == 1
    assert _closed(a)
    assert not _closed(b)
    lent = [cache.take(p) for p in runs[1:4]]
    for p, (f, ident) in zip(runs[1:4], lent, strict=True):
        cache.give_back(p, ident, f)
    assert len(cache) == 2
    assert _closed(b)
    assert [_closed(f) for f, _ in lent] == [True, False, False]
    cache.clear()
    assert len(cache) == 0
    assert all(_closed(f) for f, _ in lent)
    unkept = FileCache(0)
    f, ident = unkept.take(runs[0])
    unkept.give_back(runs[0], ident, f)
    assert len(unkept) == 0
    assert _closed(f)


def _histogram(r: CollectResult) -> np.ndarray:
    return np.asarray(r.output.merged()["channel_value"].view(flow=True))


@pytest.mark.parametrize("executor", ["inprocess", "threads", "processes"])
def test_collects_read_a_changed_or_damaged_file_as_a_fresh_process_would(
    runs: list[str], tmp_path: Path, executor: str
) -> None:
    """A file kept open by an earlier collect (in the caller, its threads or the kept pool's
    workers) and changed since is read as it is now: replaced by another run's file, its
    histograms are those of that file read from another path; truncated, it is skipped as
    truncated."""
    folder, other = tmp_path / "data", tmp_path / "other"
    folder.mkdir()
    other.mkdir()
    path = folder / "cdst_ecl.root"  # a name that says no run: it may hold either
    _copy(runs[0], path)
    _copy(runs[1], other / "cdst_ecl.root")
    kw = dict(QUIET, executor=executor, workers=2)
    first = collect(ECL, Dataset.from_paths(folder), **kw)  # type: ignore[arg-type]
    assert first.ok
    assert first.n_events > 0
    again = collect(ECL, Dataset.from_paths(folder), **kw)  # type: ignore[arg-type]
    assert np.array_equal(_histogram(again), _histogram(first))
    _copy(runs[1], path)  # the same path, now run 2's file
    replaced = collect(ECL, Dataset.from_paths(folder), **kw)  # type: ignore[arg-type]
    reference = collect(ECL, Dataset.from_paths(other), **kw)  # type: ignore[arg-type]
    assert replaced.n_events == reference.n_events != first.n_events
    assert np.array_equal(_histogram(replaced), _histogram(reference))
    ds = Dataset.from_paths(folder)
    with path.open("r+b") as fh:  # truncated in place after its metadata was read
        fh.truncate(path.stat().st_size // 2)
    damaged = collect(ECL, ds, **kw)  # type: ignore[arg-type]
    assert [(Path(s.path).name, s.reason) for s in damaged.skipped] == [(path.name, "truncated")]


def test_a_second_collect_opens_no_file_and_the_pool_end_closes_them(runs: list[str]) -> None:
    ds = Dataset.from_paths(*runs[:2])
    opened = _files.open_files.opened
    first = collect(ECL, ds, executor="inprocess", **QUIET)  # type: ignore[arg-type]
    mid = _files.open_files.opened
    second = collect(ECL, ds, executor="inprocess", **QUIET)  # type: ignore[arg-type]
    assert _files.open_files.opened == mid <= opened + 2
    assert np.array_equal(_histogram(second), _histogram(first))
    assert len(_files.open_files) >= 2
    _workers.shutdown_pool()
    assert len(_files.open_files) == 0


def test_the_number_of_files_kept_open_is_set_by_the_environment() -> None:
    """``$B2CALIB_OPEN_FILES`` sets how many files a process keeps open (0: none; the engine
    bench compares single passes with the bare read that way); a bad value names the variable."""
    import subprocess
    import sys

    code = (
        "from b2calib.engine._files import OPEN_FILES, open_files; "
        "print(OPEN_FILES, open_files.size)"
    )
    for value, want in (("", "64 64"), ("0", "0 0"), ("7", "7 7")):
        env = {**os.environ, "B2CALIB_OPEN_FILES": value}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.stdout.split() == want.split(), out.stderr
    env = {**os.environ, "B2CALIB_OPEN_FILES": "many"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "B2CALIB_OPEN_FILES='many'" in out.stderr
