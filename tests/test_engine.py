"""The event-loop engine: datasets, identical results under every executor, bad files, cache."""

from __future__ import annotations

import dataclasses
import gc
import itertools
import os
import shutil
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar
from unittest import mock

import awkward as ak
import hist
import numpy as np
import pytest
import uproot

from b2calib import _workers
from b2calib.engine import (
    ChannelValueCollector,
    CollectResult,
    Dataset,
    RunOutput,
    ValueCollector,
    WorkItem,
    collect,
    loop,
    plan,
)
from b2calib.engine._transfer import Wire
from b2calib.engine.loop import (
    TAIL_FRACTION,
    _Batch,
    _batches,
    _guided,
    _largest_runs_first,
    _Partial,
    _run_pool,
)
from b2calib.exceptions import BadValueError, ConfigError, FileFormatError
from b2calib.geometry import ecl
from b2calib.runs import RunRegistry
from tests.test_pool_workers import _alive

ECL = ChannelValueCollector(
    "ECLCalDigits_m_CellId",
    "ECLCalDigits_m_Energy",
    ecl.N_CRYSTALS,
    (100, 0.0, 6.0),
    first_channel=1,
)


@pytest.fixture(scope="module")
def bhabha(sample: Path) -> Dataset:
    return Dataset.select(sample, skims="hlt_bhabha")


def expected_ecl(ds: Dataset) -> np.ndarray:
    """The reference: the bare uproot + numpy loop over the same files."""
    ch, e = [], []
    for f in ds:
        with uproot.open(f.path) as fh:
            a = fh["tree"].arrays(["ECLCalDigits_m_CellId", "ECLCalDigits_m_Energy"])
        ch.append(ak.to_numpy(ak.flatten(a["ECLCalDigits_m_CellId"])))
        e.append(ak.to_numpy(ak.flatten(a["ECLCalDigits_m_Energy"])))
    counts, _, _ = np.histogram2d(
        np.concatenate(ch),
        np.concatenate(e),
        bins=[ecl.N_CRYSTALS, 100],
        range=[[0.5, ecl.N_CRYSTALS + 0.5], [0.0, 6.0]],
    )
    return counts


def test_dataset_selection(sample: Path) -> None:
    reg = RunRegistry.load(sample / "runs.json")
    all_files = Dataset.from_paths(sample)
    assert len(all_files) == len(list(sample.rglob("cdst_*.root")))
    ds = Dataset.select(
        sample, skims=["hlt_bhabha", "hlt_mumu_2trk"], runs=range(3, 6), run_type="physics"
    )
    assert {f.skim for f in ds} == {"hlt_bhabha", "hlt_mumu_2trk"}
    assert {f.run for f in ds} == {r.run for r in reg.select(runs=range(3, 6), run_type="physics")}
    assert Dataset.select(sample, run_type="cosmic", skims="cosmic").runs == [
        r.key for r in reg.select(run_type="cosmic")
    ]
    assert len(Dataset.select(sample, dq="Good")) == 0  # nothing certified yet
    globbed = Dataset.from_paths(str(sample / "e0012" / "r0000[12]" / "cdst_hlt_bhabha_*.root"))
    assert globbed.runs == [(12, 1), (12, 2)]
    with pytest.raises(ConfigError, match="no file matches"):
        Dataset.from_paths(str(sample / "nothing_*.root"))


def test_work_items_cover_every_entry(bhabha: Dataset) -> None:
    items = plan(bhabha, step_size=25)
    assert len(items) > len(bhabha)  # small target: files are cut in several items
    for f in bhabha:
        ranges = [(i.entry_start, i.entry_stop) for i in items if i.path == f.path]
        assert ranges[0][0] == 0
        assert ranges[-1][1] == f.n_events
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert [i.index for i in items] == list(range(len(items)))
    for i in items:  # at most step_size events, a file's last item up to a tenth more
        assert 0 < i.entry_stop - i.entry_start <= 25 + 25 // TAIL_FRACTION


def test_no_sliver_work_item(bhabha: Dataset) -> None:
    """A file's remainder below a tenth of step_size goes into its last item, not a task of its
    own (the 10^6 events of a PXD run were 500k + 500k + a 4k sliver, which cost as much as a
    full item's start and hand-over)."""
    f = next(iter(bhabha))
    n = f.n_events
    one = Dataset([f])
    assert [(i.entry_start, i.entry_stop) for i in plan(one, step_size=n - 1)] == [(0, n)]
    step = max(1, (n - 1) // 2)
    sizes = [i.entry_stop - i.entry_start for i in plan(one, step_size=step)]
    assert sum(sizes) == n
    assert sizes[0] == step
    short = n - step * (n // step)  # what a plain cut would leave at the end
    assert len(sizes) == n // step + (short >= step // TAIL_FRACTION)


@dataclasses.dataclass(frozen=True)
class _Prepared(ValueCollector):
    """Counts the prepare() calls of the process that runs collect()."""

    calls: ClassVar[list[int]] = []

    def prepare(self) -> None:
        self.calls.append(os.getpid())


@pytest.mark.parametrize("executor", ["inprocess", "threads", "processes"])
def test_prepare_runs_once_before_local_workers(bhabha: Dataset, executor: str) -> None:
    col = _Prepared("ECLCalDigits_m_Energy", (10, 0.0, 6.0))
    _Prepared.calls.clear()
    out = collect(col, bhabha, executor=executor, workers=2, cache=False, progress=False)
    assert _Prepared.calls == [os.getpid()]
    assert out.n_events == sum(f.n_events for f in bhabha)


@pytest.mark.slow
@pytest.mark.dask
def test_identical_results_under_every_executor(bhabha: Dataset, tmp_path: Path) -> None:
    from distributed import LocalCluster

    reference = expected_ecl(bhabha)
    results: dict[str, CollectResult] = {
        "inprocess": collect(
            ECL, bhabha, executor="inprocess", cache=False, progress=False, step_size=25
        ),
        "threads": collect(
            ECL, bhabha, executor="threads", workers=2, cache=False, progress=False, step_size=25
        ),
        "processes": collect(
            ECL,
            bhabha,
            executor="processes",
            workers=2,
            cache=False,
            progress=False,
            step_size=25,
        ),
    }
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        results["dask"] = collect(
            ECL, bhabha, executor=cluster, cache=False, progress=False, step_size=25
        )
        results["dask address"] = collect(
            ECL,
            bhabha,
            executor=cluster.scheduler_address,
            cache=False,
            progress=False,
            step_size=25,
        )

    for name, r in results.items():
        assert r.ok, name
        assert r.n_events == bhabha.n_events, name
        assert sorted(r.output) == bhabha.runs, name
        merged = r.output.merged()["channel_value"]
        assert np.array_equal(merged.values(), reference), name
        for run in r.output:  # per-run histograms are identical too
            h = results["inprocess"].output[run]["channel_value"]
            assert np.array_equal(
                r.output[run]["channel_value"].values(flow=True), h.values(flow=True)
            ), (name, run)


def test_dask_tasks_run_consecutive_batches_the_largest_first(bhabha: Dataset) -> None:
    """Issue 20: Dask's tasks each run consecutive batches in the order sent (fewer tasks: the
    scheduler in the caller and the workers' event loops spend CPU per task), the first ones
    the largest, the last ones single batches (the workers finish together)."""
    tasks = _largest_runs_first(_batches(plan(bhabha, step_size=25)))
    groups = _guided(tasks, 2)
    assert [t for g in groups for t in g] == tasks  # every batch once, in the order sent
    assert len(groups) < len(tasks)
    assert len(groups[0]) > 1
    assert len(groups[-1]) == 1
    assert max(len(g) for g in groups) <= loop.DASK_MAX_BATCHES
    assert _guided(tasks, 0) == [(t,) for t in tasks]  # no worker yet: one batch per task
    many = [_Batch(i, (WorkItem(i, "f", 1, i, 0, 10),)) for i in range(100)]
    assert max(len(g) for g in _guided(many, 1)) == loop.DASK_MAX_BATCHES


@pytest.mark.dask
def test_a_cluster_passed_keeps_its_client(bhabha: Dataset) -> None:
    """Issue 20: a cluster passed as the executor is connected to once, not in every call; the
    client is not made the process's default, and closes with its cluster (the next cluster
    passed gets a client of its own)."""
    from distributed import LocalCluster, default_client

    quiet = {"cache": False, "progress": False}
    clusters = [
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0")
        for _ in range(2)
    ]
    try:
        first = collect(ECL, bhabha, executor=clusters[0], **quiet)  # type: ignore[arg-type]
        (client,) = [c for cl, c in loop._cluster_clients.values() if cl is clusters[0]]
        again = collect(ECL, bhabha, executor=clusters[0], **quiet)  # type: ignore[arg-type]
        assert [c for cl, c in loop._cluster_clients.values() if cl is clusters[0]] == [client]
        assert client.status == "running"
        with pytest.raises(ValueError, match="No clients"):
            default_client()
        for run in first.output:
            assert np.array_equal(
                first.output[run]["channel_value"].view(flow=True),
                again.output[run]["channel_value"].view(flow=True),
            )
        clusters[0].close()
        assert client.status != "running"
        collect(ECL, bhabha, executor=clusters[1], **quiet)  # type: ignore[arg-type]
        assert [cl for cl, _ in loop._cluster_clients.values()] == [clusters[1]]
    finally:
        for cluster in clusters:
            cluster.close()


def test_run_ranges_merge_without_rereading(bhabha: Dataset) -> None:
    r = collect(ECL, bhabha, executor="inprocess", cache=False, progress=False)
    runs = list(r.output)
    first, rest = runs[:3], runs[3:]
    a = r.output.merged(first)["channel_value"]
    b = r.output.merged(rest)["channel_value"]
    assert np.array_equal((a + b).values(), r.output.merged()["channel_value"].values())
    only_first = Dataset([f for f in bhabha if (f.exp, f.run) in first])
    again = collect(ECL, only_first, executor="inprocess", cache=False, progress=False)
    assert np.array_equal(again.output.merged()["channel_value"].values(), a.values())
    both = RunOutput({k: r.output[k] for k in first}) + RunOutput({k: r.output[k] for k in rest})
    assert np.array_equal(both.merged()["channel_value"].values(), a.values() + b.values())
    with pytest.raises(KeyError, match="no output for runs"):
        r.output.merged([(12, 999)])


@pytest.fixture
def damaged(bhabha: Dataset, tmp_path: Path) -> Iterator[tuple[Dataset, dict[str, str]]]:
    """Copies of three files plus: a truncated one, a text file, and one lacking the branch."""
    folder = tmp_path / "damaged"
    folder.mkdir()
    good = [Path(f.path) for f in list(bhabha)[:3]]
    for g in good:
        shutil.copy(g, folder / g.name)
    (folder / "cdst_truncated.root").write_bytes(good[0].read_bytes()[:5000])
    (folder / "cdst_text.root").write_text("this is not ROOT\n")
    mumu = next(
        Path(f.path)
        for f in Dataset.select(
            bhabha.files[0].path.rsplit("/e0012", 1)[0], skims="hlt_gamma_gamma"
        )
    )
    src = uproot.open(mumu)["tree"].arrays(["EventMetaData_m_event"])
    with uproot.recreate(folder / "cdst_nobranch.root") as out:
        events = ak.to_numpy(src["EventMetaData_m_event"])
        out.mktree("tree", {"EventMetaData_m_event": events.dtype})
        out["tree"].extend({"EventMetaData_m_event": events})
        out["FileMetaData"] = str(uproot.open(mumu)["FileMetaData"])
    reasons = {
        "cdst_truncated.root": "truncated",
        "cdst_text.root": "not-root",
        "cdst_nobranch.root": "missing-branch",
    }
    return Dataset.from_paths(folder), reasons


def test_bad_files_are_skipped_and_reported(damaged: tuple[Dataset, dict[str, str]]) -> None:
    ds, reasons = damaged
    assert len(ds) == 4  # the truncated and text files fail already when their metadata is read
    r = collect(ECL, ds, executor="inprocess", cache=False, progress=False)
    assert not r.ok
    assert {Path(s.path).name: s.reason for s in r.skipped} == reasons
    for s in r.skipped:
        assert s.path in s.message
    assert r.n_events == sum(f.n_events for f in ds if "nobranch" not in f.path)


def test_bad_files_stop_the_job_when_asked(damaged: tuple[Dataset, dict[str, str]]) -> None:
    ds, _ = damaged
    with pytest.raises(FileFormatError) as err:
        collect(ECL, ds, executor="inprocess", on_bad_file="stop", cache=False, progress=False)
    assert err.value.reason in {"truncated", "not-root", "missing-branch"}
    with pytest.raises(ConfigError, match="on_bad_file"):
        collect(ECL, ds, on_bad_file="ignore", progress=False)  # type: ignore[arg-type]


def test_wrong_type_is_reported(bhabha: Dataset) -> None:
    wrong = ChannelValueCollector(
        "ECLCalDigits_m_CellId", "ECLCalDigits_m_Energy", 10, (10, 0.0, 1.0), value_dtype="float64"
    )
    r = collect(wrong, bhabha, executor="inprocess", cache=False, progress=False)
    assert {s.reason for s in r.skipped} == {"wrong-type"}
    assert "ECLCalDigits_m_Energy' is var * float32, expected var * float64" in r.skipped[0].message
    assert r.n_events == 0


def test_cache_hits_and_invalidation(bhabha: Dataset, tmp_path: Path) -> None:
    files = list(bhabha)[:3]
    folder = tmp_path / "data"
    folder.mkdir()
    for f in files:
        shutil.copy(f.path, folder / Path(f.path).name)
    ds = Dataset.from_paths(folder)
    cache = tmp_path / "cache"
    first = collect(ECL, ds, executor="inprocess", cache=cache, progress=False)
    assert first.cache_hits == 0
    again = collect(ECL, ds, executor="processes", workers=2, cache=cache, progress=False)
    assert again.cache_hits == again.n_items == first.n_items
    assert np.array_equal(
        again.output.merged()["channel_value"].values(),
        first.output.merged()["channel_value"].values(),
    )
    # another configuration is another entry
    coarse = ChannelValueCollector(
        ECL.channel_branch, ECL.value_branch, ECL.n_channels, (50, 0.0, 6.0), first_channel=1
    )
    assert collect(coarse, ds, executor="inprocess", cache=cache, progress=False).cache_hits == 0
    # a changed file is read again; the others still come from the cache
    changed = Path(ds.files[0].path)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    third = collect(ECL, ds, executor="inprocess", cache=cache, progress=False)
    assert third.cache_hits == third.n_items - 1
    # a damaged cache entry is recomputed, not trusted
    for entry in cache.rglob("*.pkl"):
        entry.write_bytes(b"garbage")
    fourth = collect(ECL, ds, executor="inprocess", cache=cache, progress=False)
    assert fourth.cache_hits == 0
    assert np.array_equal(
        fourth.output.merged()["channel_value"].values(),
        first.output.merged()["channel_value"].values(),
    )


def test_value_collector_on_flat_branch(sample: Path) -> None:
    ds = Dataset.select(sample, skims="hlt_mumu_2trk")
    c = ValueCollector(
        "SoftwareTriggerVariables_P1OEbeamCMSBhabhaLE", (60, 0.0, 1.2), jagged=False, name="p1"
    )
    r = collect(c, ds, executor="inprocess", cache=False, progress=False)
    h = r.output.merged()["p1"]
    assert h.sum(flow=True) == ds.n_events
    assert h.axes[0].centers[np.argmax(h.values())] > 0.9  # mu pairs carry the beam momentum
    with pytest.raises(ConfigError, match="axis x"):
        ValueCollector("x", (0, 1.0, 0.0)).collect(ak.Array({"x": [[1.0]]}))


def test_unknown_executor(bhabha: Dataset) -> None:
    with pytest.raises(ConfigError, match="unknown executor"):
        collect(ECL, bhabha, executor="fibers", cache=False, progress=False)
    with pytest.raises(ConfigError, match="not a Dask client"):
        collect(ECL, bhabha, executor=42, cache=False, progress=False)


@dataclasses.dataclass(frozen=True)
class _EnergyWeighted(ChannelValueCollector):
    """The ECL channel x energy counts, and the energy of every digit weighted by itself in
    ``Double`` storage: sums of floats, whose last bits depend on the order of the additions."""

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        e = ak.to_numpy(ak.flatten(events[self.value_branch])).astype(np.float64)
        h = hist.Hist(hist.axis.Regular(7, 0.0, 0.7), storage=hist.storage.Double())
        h.fill(e, weight=e * np.pi)
        return {**super().collect(events), "weighted": h}


def test_worker_side_merge_of_many_items_is_identical(sample: Path) -> None:
    """Three skims of three runs, cut in items of 25 events: a task merges consecutive items of
    one run and sends one partial. The per-run counts are those of one item per task, bit for
    bit; the sums of floats are identical under every executor (and equal to rounding to the
    one-item-per-task sums, added in another order)."""
    ds = Dataset.select(sample, skims=["hlt_bhabha", "hlt_mumu_2trk", "cosmic"], runs=[1, 2, 3])
    items = plan(ds, step_size=25)
    tasks = _batches(items, 100)
    assert len(tasks) < len(items)
    assert all(len({(i.exp, i.run) for i in t.items}) == 1 for t in tasks)
    assert [i for t in tasks for i in t.items] == items
    assert any(len({i.path for i in t.items}) > 1 for t in tasks)  # files of a run in one task
    col = _EnergyWeighted(*dataclasses.astuple(ECL))
    quiet = dict(cache=False, progress=False, step_size=25, workers=2)
    per_item = collect(col, ds, executor="inprocess", batch_events=0, **quiet)  # type: ignore[arg-type]
    ref = collect(col, ds, executor="inprocess", batch_events=100, **quiet)  # type: ignore[arg-type]
    pool = collect(col, ds, executor="processes", batch_events=100, **quiet)  # type: ignore[arg-type]
    for r in (ref, pool):
        assert r.n_items == per_item.n_items == len(items)
        assert r.n_events == per_item.n_events == ds.n_events
        assert sorted(r.output) == sorted(per_item.output) == ds.runs
        assert list(r.nonfinite.items()) == list(per_item.nonfinite.items())
        for run in ds.runs:
            a = r.output[run]["channel_value"].view(flow=True)
            assert np.array_equal(a, per_item.output[run]["channel_value"].view(flow=True))
            w = r.output[run]["weighted"].view(flow=True)
            assert np.array_equal(w, ref.output[run]["weighted"].view(flow=True))
            np.testing.assert_allclose(
                w, per_item.output[run]["weighted"].view(flow=True), rtol=1e-12
            )


def test_largest_runs_go_first_with_the_same_sums(sample: Path) -> None:
    """Issue 20 (the tail of a loop): batches are sent out the runs with the most events first,
    each run's batches together and in their order, and merged in that order. The per-run
    histograms, sums of floats included, are those of the data's order (the former path), bit
    for bit, on 2 processes and in-process."""
    ds = Dataset.select(sample, skims=["hlt_bhabha", "hlt_mumu_2trk", "cosmic"], runs=[1, 2, 3])
    tasks = _batches(plan(ds, step_size=25), 100)
    order = _largest_runs_first(tasks)
    assert sorted(t.index for t in order) == [t.index for t in tasks]
    runs = [r for r, _ in itertools.groupby(t.run for t in order)]
    assert sorted(runs) == sorted({t.run for t in tasks})  # each run's batches together
    size = {r: sum(f.n_events for f in ds if f.key == r) for r in runs}
    assert [size[r] for r in runs] == sorted(size.values(), reverse=True)
    assert runs != sorted(runs)  # the sample's runs differ in size: the order is not the data's
    for r in runs:
        mine = [t.index for t in order if t.run == r]
        assert mine == sorted(mine)

    col = _EnergyWeighted(*dataclasses.astuple(ECL))
    quiet = dict(cache=False, progress=False, step_size=25, batch_events=100, workers=2)
    with mock.patch("b2calib.engine.loop._largest_runs_first", list):
        former = collect(col, ds, executor="inprocess", **quiet)  # type: ignore[arg-type]
    for executor in ("inprocess", "processes"):
        r = collect(col, ds, executor=executor, **quiet)  # type: ignore[arg-type]
        assert r.n_events == former.n_events == ds.n_events
        assert list(r.nonfinite.items()) == list(former.nonfinite.items())
        assert sorted(r.output) == sorted(former.output) == ds.runs
        for run in ds.runs:
            for name in ("channel_value", "weighted"):
                assert np.array_equal(
                    r.output[run][name].view(flow=True), former.output[run][name].view(flow=True)
                ), (executor, run, name)


def test_a_bad_file_among_a_runs_items(sample: Path, tmp_path: Path) -> None:
    """A file that cannot be read (no ECL branches), in the same task as a good file of its run:
    reported and left out under the default policy, the good file's items still merged; the
    job stops on it when asked, under every local executor."""
    folder = tmp_path / "e0012" / "r00001"
    folder.mkdir(parents=True)
    ds = Dataset.select(sample, skims=["hlt_bhabha", "hlt_mumu_2trk"], runs=[1])
    good = {f.skim: f for f in ds}
    shutil.copy(good["hlt_bhabha"].path, folder / Path(good["hlt_bhabha"].path).name)
    mumu = good["hlt_mumu_2trk"].path
    bad = folder / Path(mumu).name
    with uproot.open(mumu) as src, uproot.recreate(bad) as out:
        events = ak.to_numpy(src["tree"]["EventMetaData_m_event"].array())
        out.mktree("tree", {"EventMetaData_m_event": events.dtype})
        out["tree"].extend({"EventMetaData_m_event": events})
        out["FileMetaData"] = str(src["FileMetaData"])
    local = Dataset.from_paths(folder)
    assert len(_batches(plan(local, step_size=10), 10**6)) == 1
    reference = collect(
        ECL,
        Dataset.from_paths(folder / Path(good["hlt_bhabha"].path).name),
        executor="inprocess",
        cache=False,
        progress=False,
        verify=False,
    )
    for executor in ("inprocess", "processes"):
        quiet = dict(executor=executor, workers=2, cache=False, progress=False, verify=False)
        r = collect(ECL, local, step_size=10, batch_events=10**6, **quiet)  # type: ignore[arg-type]
        assert [(Path(s.path).name, s.reason) for s in r.skipped] == [(bad.name, "missing-branch")]
        assert r.n_events == good["hlt_bhabha"].n_events
        assert np.array_equal(
            r.output[(12, 1)]["channel_value"].view(flow=True),
            reference.output[(12, 1)]["channel_value"].view(flow=True),
        )
        with pytest.raises(FileFormatError, match=bad.name):
            collect(ECL, local, step_size=10, on_bad_file="stop", **quiet)  # type: ignore[arg-type]


def test_dask_tasks_reuse_large_buffers(bhabha: Dataset) -> None:
    """A Dask task sets glibc's mmap threshold once per worker (Dask's nanny fixes it at 128 kB:
    every large array was fresh memory) and keeps freed memory for the next task (the nanny's
    trim threshold returned it at once); the histograms are those of a local task."""
    from b2calib import _workers
    from b2calib.engine.loop import _Task

    [batch] = _batches(plan(Dataset(list(bhabha)[:1]), step_size=20), 10**9)
    local = _Task(ECL, None)(batch)[1].payload
    remote = _Task(ECL, None, heap=True)(batch)[1].payload
    assert _workers.large_buffers_from_heap() == sys.platform.startswith("linux")
    assert _workers._heap_set == [sys.platform.startswith("linux")]  # once per process
    assert _workers._trim_set == [sys.platform.startswith("linux")]  # freed memory kept
    assert list(local.groups) == list(remote.groups) == ["hlt_bhabha"]
    assert np.array_equal(
        local.groups["hlt_bhabha"].histograms["channel_value"].view(flow=True),
        remote.groups["hlt_bhabha"].histograms["channel_value"].view(flow=True),
    )


def _numbered_partial(batch: _Batch) -> tuple[int, Wire[_Partial]]:
    """A task for the pools: an empty partial per batch (module level: the workers unpickle it)."""
    return batch.index, Wire(_Partial(cache_hits=batch.index))


@pytest.mark.parametrize("threads", [True, False])
def test_a_pool_holds_no_result_it_handed_over(threads: bool) -> None:
    """Issue 20 (memory): the local pools drop each batch's result once it is handed over (the
    futures kept every batch's partial, with its event numbers, until the loop ended: about
    4 MB per run read); the results are all there, each once."""
    tasks = [_Batch(i, ()) for i in range(6)]
    handed: list[weakref.ref[_Partial]] = []
    alive: list[int] = []
    for index, wire in _run_pool(_numbered_partial, tasks, 1, threads):
        gc.collect()
        alive.append(sum(r() is not None for r in handed))
        assert wire.payload.cache_hits == index
        handed.append(weakref.ref(wire.payload))
        del wire
    assert sorted(r().cache_hits for r in handed if r() is not None) == []  # type: ignore[union-attr]
    assert len(handed) == len(tasks)
    assert alive == [0] * len(tasks)


#: The test of freed memory going back to the system, run in a process of its own: what
#: ``malloc_trim`` can give back depends on the heap's history, which in a test process is every
#: test run before (CI failed it once, 745 -> 726 MiB, in an xdist worker; alone it passes).
_FREED_BETWEEN_KEPT = """
import ctypes, os
from b2calib import _workers

def resident_mib():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 16384  # below any mmap threshold: from the heap
freed, kept = [], []
for _ in range(8000):  # 125 MiB, each block followed by a small one kept
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    freed.append(block)
    kept.append(libc.malloc(64))
for block in freed:
    libc.free(block)
before = resident_mib()
released = _workers.release_free_memory()
print(released, before, resident_mib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_memory_between_kept_blocks_goes_back_to_the_system() -> None:
    """Issue 20 (memory): blocks freed between blocks still held stay resident until the heap is
    trimmed (in the engine's caller, 3.5 MiB per run read between the runs' histograms)."""
    run = subprocess.run(
        [sys.executable, "-c", _FREED_BETWEEN_KEPT], capture_output=True, text=True, check=True
    )
    released, before, after = run.stdout.split()
    assert released == "True"
    assert float(after) < float(before) - 60, run.stdout


@pytest.mark.parametrize(
    ("slack", "trimmed"),
    [(-(2**40), [0, 1, 2, 3]), (_workers.TRIM_SLACK, [0])],  # every run; the default
)
def test_the_heap_is_trimmed_at_the_start_and_as_runs_pass_once_their_freed_memory_adds_up(
    bhabha: Dataset, monkeypatch: pytest.MonkeyPatch, slack: int, trimmed: list[int]
) -> None:
    """Issue 20 (memory): the heap's free memory goes back to the system before the loop starts
    and, as runs pass into the result, once what they freed (transfer buffers, event numbers)
    has added up to the slack; the histograms are the reference's. Trimming after every run
    (what the engine did) made every run's buffers fresh pages: 60k page faults in the
    caller per 10^6 ECL events on 2 processes."""
    from b2calib.engine import loop

    calls: list[int] = []

    def counting() -> bool:
        calls.append(len(result.output))
        return True

    result = CollectResult(RunOutput())
    monkeypatch.setattr(loop, "CollectResult", lambda output: result)
    monkeypatch.setattr(_workers, "release_free_memory", counting)
    monkeypatch.setattr(loop, "HeapTrim", lambda: _workers.HeapTrim(slack))
    three = Dataset(list(bhabha)[:3])  # 53, 41 and 76 events: two or three items each
    out = collect(ECL, three, executor="inprocess", cache=False, progress=False, step_size=30)
    assert out is result
    assert out.n_items == 7
    # once before the loop starts (local workers fork from a trimmed process), then as runs
    # pass into the result, not before; three small runs free far less than the default slack
    assert calls == trimmed
    assert np.array_equal(out.output.merged()["channel_value"].values(), expected_ecl(three))


def test_heap_trim_trims_when_memory_beyond_what_is_kept_has_grown_by_the_slack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trim policy's measure: resident memory net of the bytes kept, against its value
    after the last trim (kept results are not growth; freed holes are)."""
    resident = [100]
    trims: list[int] = []

    def trimming() -> bool:
        trims.append(resident[0])
        resident[0] -= 5  # what the trim gives back
        return True

    monkeypatch.setattr(_workers, "resident_bytes", lambda: resident[0])
    monkeypatch.setattr(_workers, "release_free_memory", trimming)
    trim = _workers.HeapTrim(slack=10)
    assert trim()  # the first call trims: nothing to compare with; base 95
    resident[0] += 30
    trim.keep(25)  # 30 more resident, 25 of them kept: grown by 5
    assert not trim()
    resident[0] += 6  # grown by 11 beyond what is kept
    assert trim()
    assert trims == [100, 131]
    assert not trim()  # measured again after the trim
    assert trim(force=True)
    assert len(trims) == 3
    monkeypatch.setattr(_workers, "resident_bytes", lambda: None)
    assert trim()  # no measure (no /proc): every call trims, as before


def _heap_state() -> list[bool]:
    """Whether this process serves large buffers from its heap and keeps freed memory (run in a
    pool worker)."""
    from b2calib import _workers

    return _workers._heap_set + _workers._trim_set


#: Set by :class:`_NeedsPrepare`'s prepare in the process that runs it.
_LOADED: list[bool] = []


@dataclasses.dataclass(frozen=True)
class _NeedsPrepare(ValueCollector):
    """Collects only in a process where its prepare() ran (as a compiled kernel it loads)."""

    def prepare(self) -> None:
        _LOADED.append(True)

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        assert _LOADED, "prepare() did not run in this process"
        return super().collect(events)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_process_pool_is_kept_between_collects_and_ends(
    bhabha: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local processes are started once and kept for the next collect (a fresh pool per call
    cost 2 processes 40 % of their gain, issue 20): the same workers give the same histograms as
    in-process, bit for bit, a collector new to them is prepared in the worker, a relative path
    is read from the caller's working directory, and shutdown_pool ends the workers."""
    from b2calib import _workers

    _workers.shutdown_pool()
    monkeypatch.setattr(_workers, "_heap_set", [])  # the workers forked now set their own
    monkeypatch.setattr(_workers, "_trim_set", [])
    bhabha = Dataset(list(bhabha)[:4])  # 4 runs, a file each
    quiet = {"cache": False, "progress": False, "step_size": 100, "batch_events": 100}
    reference = collect(ECL, bhabha, executor="inprocess", **quiet)  # type: ignore[arg-type]
    first = collect(ECL, bhabha, executor="processes", workers=2, **quiet)  # type: ignore[arg-type]
    pool = _workers.shared_pool(2)
    pids = set(pool._processes)  # type: ignore[attr-defined]
    assert len(pids) == 2
    # every worker keeps its freed memory for the next task (set by the pool's initializer)
    linux = [sys.platform.startswith("linux")] * 2
    assert [pool.submit(_heap_state).result() for _ in range(4)] == [linux] * 4
    assert all(_alive(p) for p in pids)
    # a collector the workers have not seen, and its files named relative to a new directory
    monkeypatch.chdir(bhabha.files[0].path.rsplit("/", 3)[0])
    relative = Dataset([dataclasses.replace(f, path=os.path.relpath(f.path)) for f in bhabha.files])
    energy = _NeedsPrepare("ECLCalDigits_m_Energy", (10, 0.0, 6.0), jagged=True)
    second = collect(energy, relative, executor="processes", workers=2, **quiet)  # type: ignore[arg-type]
    third = collect(ECL, bhabha, executor="processes", workers=2, **quiet)  # type: ignore[arg-type]
    assert _workers.shared_pool(2) is pool
    assert set(pool._processes) == pids  # type: ignore[attr-defined]
    for r in (first, third):
        assert r.ok
        assert sorted(r.output) == sorted(reference.output)
        for run in reference.output:
            assert np.array_equal(
                r.output[run]["channel_value"].view(flow=True),
                reference.output[run]["channel_value"].view(flow=True),
            )
    assert second.ok
    assert second.n_events == bhabha.n_events
    inproc = collect(energy, bhabha, executor="inprocess", **quiet)  # type: ignore[arg-type]
    for run in inproc.output:
        assert np.array_equal(
            second.output[run]["value"].view(flow=True),
            inproc.output[run]["value"].view(flow=True),
        )
    _workers.shutdown_pool()
    assert not any(_alive(p) for p in pids)
    assert _workers.shared_pool(2) is not pool  # a new pool after a shutdown
    _workers.shutdown_pool()


@dataclasses.dataclass(frozen=True)
class _Scaled(ValueCollector):
    """A collector as a script or notebook defines it (its class in ``__main__``): its values
    multiplied by its class's ``scale``."""

    scale: ClassVar[float] = 1.0

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        h = hist.Hist(hist.axis.Regular(10, 0.0, 12.0), storage=hist.storage.Int64())
        h.fill(ak.to_numpy(ak.flatten(events[self.branch])) * self.scale)
        return {"scaled": h}


def test_process_pool_renewed_for_a_class_of_main_defined_since(
    bhabha: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collector class defined in ``__main__`` (a notebook cell) after the kept pool's workers
    were forked is not in theirs: the pool is started again (they could not unpickle it), and
    again when the class is defined anew (they would use the old one)."""
    import __main__
    from b2calib import _workers

    quiet = {"cache": False, "progress": False, "workers": 2}
    small = Dataset(list(bhabha)[:2])
    collect(ECL, small, executor="processes", **quiet)  # type: ignore[arg-type]

    def cell(scale: float) -> _Scaled:
        """Run the notebook cell that defines ``Cell``, and make its collector."""
        cls = type("Cell", (_Scaled,), {"__module__": "__main__", "scale": scale})
        monkeypatch.setattr(
            __main__, "Cell", dataclasses.dataclass(frozen=True)(cls), raising=False
        )
        return __main__.Cell("ECLCalDigits_m_Energy", (10, 0.0, 6.0))  # type: ignore[no-any-return]

    for scale in (1.0, 2.0):
        before = _workers._Shared.pool
        col = cell(scale)
        out = collect(col, small, executor="processes", **quiet)  # type: ignore[arg-type]
        assert _workers._Shared.pool is not before
        ref = collect(col, small, executor="inprocess", **quiet)  # type: ignore[arg-type]
        for run in ref.output:
            assert np.array_equal(
                out.output[run]["scaled"].view(flow=True), ref.output[run]["scaled"].view(flow=True)
            )
    kept = _workers._Shared.pool
    collect(col, small, executor="processes", **quiet)  # type: ignore[arg-type]
    assert _workers._Shared.pool is kept  # the same class again: the same workers
    _workers.shutdown_pool()


def _imported(module: str) -> bool:
    """Whether ``module`` is imported in this process (run in a pool worker)."""
    return module in sys.modules


_LATE_MODULE = """
import dataclasses

import awkward as ak
import hist

from b2calib.engine import ValueCollector


@dataclasses.dataclass(frozen=True)
class LateCollector(ValueCollector):
    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        h = hist.Hist(hist.axis.Regular(10, 0.0, 6.0), storage=hist.storage.Int64())
        h.fill(ak.to_numpy(ak.flatten(events[self.branch])))
        return {"late": h}
"""


def test_process_pool_renewed_for_a_module_imported_since(
    bhabha: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collector of a module the caller imported after the kept pool's workers were forked (a
    calibration's collectors, new to the pool) starts the pool again, whose workers then have
    the module with what it imports without importing it at their first task (issue 20: the
    beam collectors' imports cost each kept worker 0.7 s in a calibration's first collect); the
    next collect with it keeps the pool."""
    name = "b2calib_late_collectors"
    (tmp_path / f"{name}.py").write_text(_LATE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    quiet = {"cache": False, "progress": False, "workers": 2}
    small = Dataset(list(bhabha)[:2])
    collect(ECL, small, executor="processes", **quiet)  # type: ignore[arg-type]
    before = _workers._Shared.pool
    assert before is not None
    assert before.submit(_imported, name).result() is False

    late = __import__(name).LateCollector("ECLCalDigits_m_Energy", (10, 0.0, 6.0), jagged=True)
    try:
        out = collect(late, small, executor="processes", **quiet)  # type: ignore[arg-type]
        pool = _workers._Shared.pool
        assert pool is not before
        assert pool is not None
        assert pool.submit(_imported, name).result() is True
        ref = collect(late, small, executor="inprocess", **quiet)  # type: ignore[arg-type]
        for run in ref.output:
            assert np.array_equal(
                out.output[run]["late"].view(flow=True), ref.output[run]["late"].view(flow=True)
            )
        collect(late, small, executor="processes", **quiet)  # type: ignore[arg-type]
        assert _workers._Shared.pool is pool
    finally:
        _workers.shutdown_pool()
        sys.modules.pop(name, None)


def test_double_storage_of_integers_travels_narrowed_and_comes_back_bit_for_bit() -> None:
    """A Double histogram holding integer counts is sent as narrow integers (a quarter of the
    bytes here); one holding a fraction, -0.0, NaN, infinity or an integer beyond int64 is sent
    as it is; every one comes back the same bit for bit."""
    import pickle

    rng = np.random.default_rng(3)
    counts = rng.poisson(3.0, (200, 60)).astype(np.float64)
    odd = [0.5, -0.0, np.nan, np.inf, 2.0**70]
    blobs = {}
    for label, value in [("counts", None), *((repr(v), v) for v in odd)]:
        h: hist.Hist = hist.Hist(hist.axis.Regular(198, 0, 1), hist.axis.Regular(58, 0, 1))
        data = counts.copy()
        if value is not None:
            data[150, 40] = value  # past the first slice tried
        h.view(flow=True)[...] = data
        blob = pickle.dumps(Wire({"h": h}))
        back = pickle.loads(blob).payload["h"]
        assert back.axes == h.axes
        assert back.storage_type == h.storage_type
        assert np.array_equal(back.view(flow=True).view(np.int64), h.view(flow=True).view(np.int64))
        blobs[label] = len(blob)
    assert blobs["counts"] < counts.nbytes / 4 + 2000
    assert all(blobs[repr(v)] > counts.nbytes for v in odd)


@dataclasses.dataclass(frozen=True)
class _RejectsEvent(ValueCollector):
    """Event numbers, and a chunk holding event ``bad`` of run ``run`` rejected as a collector
    rejects values no sound file holds (``BadValueError``), or failing as a collector's bug
    does (``bug``)."""

    run: int = -1
    bad: int = -1
    bug: bool = False

    @property
    def branches(self) -> dict[str, str]:
        return {**super().branches, "EventMetaData_m_run": "int32"}

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        numbers = ak.to_numpy(events[self.branch])
        hit = (numbers == self.bad) & (ak.to_numpy(events["EventMetaData_m_run"]) == self.run)
        if hit.any():
            if self.bug:
                raise ZeroDivisionError("a collector's own bug")
            k = int(np.flatnonzero(hit)[0])
            raise BadValueError(self.branch, f"event {k} of the entries read: {self.bad}")
        return super().collect(events)


def _rejecting(bhabha: Dataset, **kw: object) -> tuple[_RejectsEvent, str, int, int]:
    """The collector, and the file of run 1 holding the rejected event, its events and where
    the event lies in it (past its first work item of 20 events)."""
    f = next(f for f in bhabha if f.run == 1)
    with uproot.open(f.path) as fh:
        numbers = fh["tree"]["EventMetaData_m_event"].array(library="np")
    at = 30
    collector = _RejectsEvent(
        "EventMetaData_m_event",
        (10, 0.0, 1e9),
        "uint32",
        False,
        run=1,
        bad=int(numbers[at]),
        **kw,  # type: ignore[arg-type]
    )
    return collector, f.path, len(numbers), at


@pytest.mark.parametrize(
    ("executor", "batch_events"), [("inprocess", None), ("processes", None), ("processes", 10**6)]
)
def test_values_a_collector_rejects_make_the_whole_file_bad(
    bhabha: Dataset, executor: str, batch_events: int | None
) -> None:
    """A collector's ``BadValueError`` in a file's second work item: the file is reported as
    bad (``bad-values``), naming it, the entries and the branch; none of its events is counted,
    not even those of the items read before, whether they were in other batches (by default:
    at most 11 events each here) or in the same one; the job stops on it when asked."""
    collector, path, n_bad, at = _rejecting(bhabha)
    assert at >= 20  # the bad event is in the file's second item (step 20), not its first
    quiet = dict(
        executor=executor,
        workers=2,
        cache=False,
        progress=False,
        verify=False,
        batch_events=batch_events,
    )
    r = collect(collector, bhabha, step_size=20, **quiet)  # type: ignore[arg-type]
    assert [(s.path, s.reason) for s in r.skipped] == [(path, "bad-values")]
    message = r.skipped[0].message
    assert path in message
    assert "entries 20-" in message
    assert "EventMetaData_m_event" in message
    assert r.n_events == sum(f.n_events for f in bhabha) - n_bad
    others = collect(
        collector,
        Dataset([f for f in bhabha if f.path != path]),
        step_size=20,
        **quiet,  # type: ignore[arg-type]
    )
    assert sorted(r.output) == sorted(others.output)
    for run in r.output:
        assert np.array_equal(
            r.output[run]["value"].view(flow=True), others.output[run]["value"].view(flow=True)
        ), run
    with pytest.raises(FileFormatError, match="bad-values") as stop:
        collect(collector, bhabha, step_size=20, on_bad_file="stop", **quiet)  # type: ignore[arg-type]
    assert stop.value.path == path
    assert stop.value.reason == "bad-values"


@pytest.mark.parametrize("executor", ["inprocess", "processes"])
def test_a_collectors_own_error_stops_the_job_naming_the_file(
    bhabha: Dataset, executor: str
) -> None:
    """Any other exception of a collector is its own failure, not the file's: it stops the
    collect whatever the policy, as itself, with a note naming the file and entries."""
    collector, path, _, _ = _rejecting(bhabha, bug=True)
    quiet = dict(executor=executor, workers=2, cache=False, progress=False, verify=False)
    with pytest.raises(ZeroDivisionError) as err:
        collect(collector, bhabha, step_size=20, on_bad_file="skip", **quiet)  # type: ignore[arg-type]
    notes = " ".join(getattr(err.value, "__notes__", []))
    assert f"_RejectsEvent was collecting {path}, entries 20-" in notes


def _assert_same_output(got: CollectResult, want: CollectResult) -> None:
    assert sorted(got.output) == sorted(want.output)
    assert got.n_events == want.n_events
    for run in want.output:
        assert sorted(got.output[run]) == sorted(want.output[run])
        for name, h in want.output[run].items():
            assert np.array_equal(got.output[run][name].view(flow=True), h.view(flow=True))


def test_read_cache_entries_are_private_writable_copies(tmp_path: Path) -> None:
    """An entry's arrays are mapped from its file copy-on-write: a collector may write into
    them without changing the entry (the next pass reads it as stored), and removing the
    folder while they are in use (the job's end) leaves them intact."""
    from b2calib.engine._reads import ReadCache

    stored = {
        "jagged": ak.Array([[1.5, 2.5], [], [3.5]]),
        "flat": ak.Array(np.array([7, 8, 9], dtype=np.int32)),
    }

    class _File:
        reads = 0

        def arrays(self, branches: list[str], start: int, stop: int) -> ak.Array:
            self.reads += 1
            return ak.zip({b: stored[b] for b in branches}, depth_limit=1)

    f = _File()
    cache = ReadCache(tmp_path / "reads", 2**30)
    (tmp_path / "reads").mkdir()
    ident = (1, 2, 3, 4)
    first = cache.arrays(f, ident, "tree", ["jagged", "flat"], 0, 3)
    got = cache.arrays(f, ident, "tree", ["jagged", "flat"], 0, 3)
    assert f.reads == 1
    values = ak.to_numpy(ak.flatten(got["jagged"]))
    values[0] = -1.0  # a kernel writing into its input
    ak.to_numpy(got["flat"])[2] = 0
    again = cache.arrays(f, ident, "tree", ["jagged", "flat"], 0, 3)
    assert f.reads == 1
    assert again.tolist() == first.tolist() == ak.zip(stored, depth_limit=1).tolist()
    assert ak.flatten(got["jagged"]).tolist() == [-1.0, 2.5, 3.5]
    shutil.rmtree(tmp_path / "reads")
    assert again["flat"].tolist() == [7, 8, 9]
    assert ak.flatten(again["jagged"]).tolist() == [1.5, 2.5, 3.5]


@pytest.mark.parametrize("executor", ["inprocess", "threads", "processes"])
def test_a_read_cache_gives_the_same_histograms_without_reading_again(
    sample: Path, tmp_path: Path, executor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collect through a read cache keeps each item's decoded branches; the next collect
    through it (a calibration's next iteration) takes them from there, reading no branch of
    the files, and fills the same histograms, bit for bit, as a collect without it (jagged and
    flat branches, and the event numbers of the duplicate check). A file changed since is read
    again; with a budget of 0 bytes nothing is kept."""
    import b2calib.io

    data = tmp_path / "data"
    shutil.copytree(sample, data, ignore=shutil.ignore_patterns("truth"))
    ds = Dataset.select(data, skims="hlt_bhabha")
    quiet = dict(executor=executor, workers=2, cache=False, progress=False, verify=False)
    flat = _RejectsEvent("EventMetaData_m_event", (10, 0.0, 1e9), "uint32", False)
    collectors = (ECL, flat)
    want = {c: collect(c, ds, step_size=20, **quiet) for c in collectors}  # type: ignore[arg-type]
    folder = tmp_path / "reads"
    folder.mkdir()
    for c in collectors:
        _assert_same_output(collect(c, ds, step_size=20, read_cache=folder, **quiet), want[c])  # type: ignore[arg-type]
    kept = sorted(folder.iterdir())
    assert kept
    assert {p.suffix for p in kept} == {".bin"}  # no temporary file left
    if executor != "processes":  # (the kept pool's workers do not see a mock)
        reads = mock.patch.object(
            b2calib.io.SkimFile, "arrays", side_effect=AssertionError("read again")
        )
        with reads:
            for c in collectors:
                got = collect(c, ds, step_size=20, read_cache=folder, **quiet)  # type: ignore[arg-type]
                _assert_same_output(got, want[c])
    for c in collectors:
        _assert_same_output(collect(c, ds, step_size=20, read_cache=folder, **quiet), want[c])  # type: ignore[arg-type]
    assert sorted(folder.iterdir()) == kept
    changed = Path(ds.files[0].path)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    collect(ECL, ds, step_size=20, read_cache=folder, **quiet)  # type: ignore[arg-type]
    assert len(list(folder.iterdir())) > len(kept)
    monkeypatch.setenv("B2CALIB_READ_CACHE_MB", "0")
    empty = tmp_path / "none"
    empty.mkdir()
    _assert_same_output(collect(ECL, ds, step_size=20, read_cache=empty, **quiet), want[ECL])  # type: ignore[arg-type]
    assert not list(empty.iterdir())
