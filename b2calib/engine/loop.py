"""The event loop: work items, executors, the bad-file policy and the disk cache.

>>> from b2calib.engine import ChannelValueCollector, Dataset, collect
>>> data = Dataset.select("data-samples/bucket", skims="hlt_bhabha")            # doctest: +SKIP
>>> ecl = ChannelValueCollector("ECLCalDigits_m_CellId", "ECLCalDigits_m_Energy",
...                             8736, (100, 0.0, 6.0), first_channel=1)          # doctest: +SKIP
>>> result = collect(ecl, data, executor="processes")                           # doctest: +SKIP
>>> result.output.merged()["channel_value"]                                     # doctest: +SKIP

Work items are (file, tree, entry range) slices of at most ``step_size`` events, planned from
the files' metadata; one file belongs to one run, so every item's histograms are that run's.
Consecutive items of one run form a batch, one task (:func:`_batches`): the worker merges its
items' histograms in item order and sends one partial per batch, its integer arrays in their
narrowest type (:mod:`b2calib.engine._transfer`), instead of a 7 MB histogram per item.
On Dask a task runs a few consecutive batches (:func:`_guided`: the scheduler and the
workers' event loops spend CPU per task), each batch's partial still its own.
Batches are sent out the largest runs first, a run's batches in their order
(:func:`_largest_runs_first`: the workers finish together), and merged in that order, whatever
order the executor finishes them in; histograms are summed within a run only, and the batches
depend on the data only (not on the executor or the number of workers): the same collector on
the same data gives identical histograms under every executor, bit for bit even for
floating-point storage. Each process keeps the files its items read open for the next item,
batch and event loop (:mod:`b2calib.engine._files`: a calibration's iterations and passes, and
the calibrations that depend on one another, read the same files in the same kept workers),
and opens a file again when it changed.

The input's integrity is checked on the way (:mod:`b2calib.engine.integrity`): every file is
compared with its catalogue entry before its items are sent out; every item reads the event
numbers beside the collector's branches and counts the NaN and Inf values of its
floating-point branches, so that a run's duplicate events and non-finite values are known when
its items are merged, without a second pass over the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import awkward as ak
import numpy as np
import numpy.typing as npt
import uproot

from b2calib._extras import require
from b2calib._workers import (
    HeapTrim,
    keep_freed_memory,
    shared_pool,
    shutdown_pool,
)
from b2calib.engine._files import FileCache, Identity, open_files
from b2calib.engine._reads import ReadCache
from b2calib.engine._transfer import Wire
from b2calib.engine.collector import Collector, Histograms, RunOutput
from b2calib.engine.dataset import Dataset, FileRef, SkippedFile, _inconsistent, _skipped
from b2calib.engine.integrity import (
    EVENT_BRANCH,
    NonFiniteCounts,
    check_fraction,
    count_nonfinite,
    duplicate_detail,
    duplicate_events,
    nonfinite_detail,
    verify_files,
)
from b2calib.exceptions import B2CalibError, BadValueError, ConfigError, FileFormatError
from b2calib.io import TREE_NAME, SkimFile

__all__ = [
    "DEFAULT_MAX_NONFINITE",
    "CollectResult",
    "WorkItem",
    "collect",
    "default_cache_dir",
    "plan",
]

Policy = Literal["skip", "stop"]
CACHE_FORMAT = 2
#: The largest fraction of NaN or Inf values a run's branch may hold by default (0.1 %).
DEFAULT_MAX_NONFINITE = 1e-3


@dataclass(frozen=True)
class WorkItem:
    """A slice of one file for one task."""

    index: int
    path: str
    exp: int
    run: int
    entry_start: int
    entry_stop: int
    tree: str = TREE_NAME
    skim: str = ""
    #: Whether the item ends its file (its first item starts at entry 0).
    last: bool = True


@dataclass
class CollectResult:
    """What an event loop produced.

    Attributes
    ----------
    skipped
        Files left out, with why (unreadable, corrupt, or inconsistent under
        ``on_bad_file="skip"``).
    unverified
        Files read without a checksum to compare with (no catalogue lists them).
    nonfinite
        NaN and Inf values per run and branch among the floating-point branches the collector
        read (runs left out included).
    verify_seconds
        Seconds of the call spent comparing the files with their catalogue entries (reading
        each file whole for its checksum, once per file and process).
    """

    output: RunOutput
    skipped: list[SkippedFile] = field(default_factory=list)
    n_items: int = 0
    n_events: int = 0
    cache_hits: int = 0
    unverified: list[str] = field(default_factory=list)
    nonfinite: NonFiniteCounts = field(default_factory=NonFiniteCounts)
    verify_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no file was skipped."""
        return not self.skipped


def default_cache_dir() -> Path:
    """``$B2CALIB_CACHE_DIR``, else ``$XDG_CACHE_HOME/b2calib``, else ``~/.cache/b2calib``."""
    env = os.environ.get("B2CALIB_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "b2calib"


def _parse_type(spec: str) -> tuple[bool, str]:
    jagged = spec.startswith("var *")
    return jagged, spec.split("*")[-1].strip()


def _check_types(path: str, tree: Any, branches: dict[str, str]) -> None:
    """Raise FileFormatError(wrong-type) when a branch does not have the declared type."""
    for name, spec in branches.items():
        interp = tree[name].interpretation
        want_jagged, want_dtype = _parse_type(spec)
        if isinstance(interp, uproot.AsJagged):
            jagged, dtype = True, interp.content.to_dtype
        elif isinstance(interp, uproot.AsDtype):
            jagged, dtype = False, interp.to_dtype
        else:
            jagged, dtype = False, None
        if jagged != want_jagged or dtype is None or dtype.name != want_dtype:
            have = f"{'var * ' if jagged else ''}{dtype.name if dtype is not None else interp}"
            raise FileFormatError(path, "wrong-type", f"branch {name!r} is {have}, expected {spec}")


#: A file's last work item takes the file's remaining events when they are fewer than
#: ``step_size // TAIL_FRACTION``: a sliver of a few events is not worth a task of its own (its
#: fixed costs, opening the file and handing a collector's histograms over, are those of a full
#: item, and it lengthens the loop by a task when the items are as many as the workers).
TAIL_FRACTION = 10


def plan(dataset: Dataset, step_size: int = 500_000) -> list[WorkItem]:
    """Cut the files into work items of at most ``step_size`` events, a file's last item up to
    ``step_size // TAIL_FRACTION`` more (from the files' metadata; nothing is opened here: each
    task checks its own file's branches and types)."""
    if step_size < 1:
        raise ConfigError("step_size must be at least 1")
    tail = step_size // TAIL_FRACTION
    items: list[WorkItem] = []
    for ref in dataset:
        start = 0
        while start < ref.n_events:
            stop = min(ref.n_events, start + step_size)
            if ref.n_events - stop < tail:
                stop = ref.n_events
            items.append(
                WorkItem(
                    len(items),
                    ref.path,
                    ref.exp,
                    ref.run,
                    start,
                    stop,
                    skim=ref.skim,
                    last=stop == ref.n_events,
                )
            )
            start = stop
    return items


#: A batch holds at most this many events by default, and the default batches are at least
#: :data:`MIN_BATCHES` when the data has as many items (enough tasks for the workers).
BATCH_EVENTS = 2_000_000
MIN_BATCHES = 64


@dataclass(frozen=True)
class _Batch:
    """Consecutive work items of one run: one task, one partial result."""

    index: int
    items: tuple[WorkItem, ...]

    @property
    def run(self) -> tuple[int, int]:
        """The (exp, run) of every item of the batch."""
        return self.items[0].exp, self.items[0].run


def _batches(items: Sequence[WorkItem], max_events: int | None = None) -> list[_Batch]:
    """Group consecutive items of the same run into batches of at most ``max_events`` events
    (an item larger than that is a batch of its own). ``None``: the items' events over
    :data:`MIN_BATCHES`, at most :data:`BATCH_EVENTS`. The batches depend on the items only, so
    that the order in which histograms are summed is the same under every executor."""
    if max_events is None:
        total = sum(it.entry_stop - it.entry_start for it in items)
        max_events = min(BATCH_EVENTS, total // MIN_BATCHES)
    if max_events < 0:
        raise ConfigError("batch_events must not be negative")
    out: list[_Batch] = []
    current: list[WorkItem] = []
    n = 0
    for it in items:
        size = it.entry_stop - it.entry_start
        if current and (
            (it.exp, it.run) != (current[0].exp, current[0].run) or n + size > max_events
        ):
            out.append(_Batch(len(out), tuple(current)))
            current, n = [], 0
        current.append(it)
        n += size
    if current:
        out.append(_Batch(len(out), tuple(current)))
    return out


def _largest_runs_first(tasks: Sequence[_Batch]) -> list[_Batch]:
    """The batches in the order they are sent out and merged: the runs with the most events
    first, each run's batches together and in their own order.

    The workers take the batches in this order, so that the last ones to start are the
    smallest runs' and the workers finish close together: in the order of the data, a large
    run coming last kept one worker busy while the others had nothing left (issue 20: the
    engine bench's largest file, twice the average, is its last; ``bench/timeline_engine.py``,
    old and new alternated under load 7-10, one of 2 workers idle at the end for 6-10 % of the
    loop's wall time on the local pool and 1-13 % on Dask, in this order 1-4 % and 0-3 %). The
    histograms are only ever summed within a run, and a run's
    batches are merged in their own order, so every order of the runs gives the same sums, bit
    for bit."""
    events: dict[tuple[int, int], int] = {}
    first: dict[tuple[int, int], int] = {}
    for pos, task in enumerate(tasks):
        n = sum(it.entry_stop - it.entry_start for it in task.items)
        events[task.run] = events.get(task.run, 0) + n
        first.setdefault(task.run, pos)
    return sorted(tasks, key=lambda t: (-events[t.run], first[t.run]))


def _cache_key(collector: Collector, item: WorkItem) -> str:
    st = os.stat(item.path)
    ident = {
        "format": CACHE_FORMAT,
        **collector.identity(),
        "file": {
            "path": os.path.abspath(item.path),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "inode": st.st_ino,
        },
        "entries": [item.entry_start, item.entry_stop],
        "tree": item.tree,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class _ItemOutput:
    """What one work item gives: the collector's histograms, the event numbers it read (None:
    the file has none) and its NaN / Inf counts per floating-point branch."""

    histograms: Histograms
    events: npt.NDArray[np.integer] | None
    nonfinite: dict[str, tuple[int, int]]


def _event_numbers(tree: Any) -> bool:
    """Whether the tree has flat integer event numbers to check for duplicates."""
    if EVENT_BRANCH not in tree:
        return False
    interp = tree[EVENT_BRANCH].interpretation
    return isinstance(interp, uproot.AsDtype) and interp.to_dtype.kind in "iu"


@dataclass
class _Group:
    """Merged items of one run and skim: in a worker a file's items, then the batch's files;
    in the calling process a run's batches, held until the run's items are all merged."""

    histograms: Histograms = field(default_factory=dict)
    events: list[tuple[str, npt.NDArray[np.integer]]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    n_events: int = 0
    #: NaN / Inf values and all values per floating-point branch.
    nonfinite: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, item: WorkItem, out: _ItemOutput) -> None:
        """Add one item's output (its histograms are taken, not copied)."""
        if item.path not in self.paths:
            self.paths.append(item.path)
        _add_histograms(self.histograms, out.histograms)
        if out.events is not None:
            self.events.append((item.path, out.events))
        self.n_events += item.entry_stop - item.entry_start
        self._count(out.nonfinite)

    def merge(self, other: _Group) -> None:
        """Add a group of the same run and skim that comes after (taken, not copied)."""
        self.paths.extend(p for p in other.paths if p not in self.paths)
        _add_histograms(self.histograms, other.histograms)
        self.events.extend(other.events)
        self.n_events += other.n_events
        self._count(other.nonfinite)

    def _count(self, nonfinite: dict[str, tuple[int, int]]) -> None:
        for name, (bad, total) in nonfinite.items():
            have = self.nonfinite.get(name, (0, 0))
            self.nonfinite[name] = (have[0] + bad, have[1] + total)


def _add_histograms(total: Histograms, more: Histograms) -> None:
    for name, h in more.items():
        if name in total:
            total[name] += h
        else:
            total[name] = h


@dataclass
class _Partial:
    """What one batch gives: its whole files merged per skim in item order; the parts of the
    files whose other items are in other batches, each on its own (``spanning``: path, skim,
    the part); the files that could not be read and the items found in the cache.

    A file is used whole or not at all: when one of its items cannot be read, or its values
    are rejected, the items read before are dropped with it (here, or, for a file spanning
    batches, by the caller, which holds its parts until the run's last batch is in)."""

    groups: dict[str, _Group] = field(default_factory=dict)
    spanning: list[tuple[str, str, _Group]] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    cache_hits: int = 0


def _process_batch(
    collector: Collector,
    batch: _Batch,
    cache_dir: str | None,
    stop: bool,
    reads: tuple[str, int] | None = None,
) -> tuple[int, Wire[_Partial]]:
    """Run the collector on a batch's items and merge them file by file (in any process).
    ``stop``: return at the first file that cannot be read (the job stops on it)."""
    partial = _Partial()
    files = _OpenFile()
    bad: str | None = None  # the file whose remaining items in this batch are not read
    part: _Group | None = None  # the items of the current file so far
    try:
        for pos, item in enumerate(batch.items):
            if item.path == bad:
                continue
            _, out, hit = _process(collector, item, cache_dir, files, reads)
            partial.cache_hits += int(hit)
            if isinstance(out, SkippedFile):
                partial.skipped.append(out)
                bad, part = item.path, None
                if stop:
                    break
                continue
            if part is None:
                part = _Group()
                whole = item.entry_start == 0
            part.add(item, out)
            if pos + 1 == len(batch.items) or batch.items[pos + 1].path != item.path:
                if whole and item.last:
                    if item.skim in partial.groups:
                        partial.groups[item.skim].merge(part)
                    else:
                        partial.groups[item.skim] = part
                else:
                    partial.spanning.append((item.path, item.skim, part))
                part = None
    finally:
        files.close()
    return batch.index, Wire(partial)


class _OpenFile:
    """The file a batch's items read, taken from the process's open files
    (:data:`~b2calib.engine._files.open_files`) for its consecutive items and given back when
    the batch moves on to another file or ends: opening a skim file reads its tree's metadata,
    which for the files of every detector's branches costs more than reading a few branches of
    a small item, and the next batch, collect or iteration reading the file finds it open."""

    def __init__(self, cache: FileCache = open_files) -> None:
        self.cache = cache
        self.path: str | None = None
        self.file: SkimFile | None = None
        self.ident: Identity | None = None

    def get(self, path: str) -> SkimFile:
        """The open file ``path`` (raises :class:`FileFormatError` as :func:`open_skim`)."""
        if path != self.path or self.file is None:
            self.close()
            self.file, self.ident = self.cache.take(path)
            self.path = path
        return self.file

    def discard(self) -> None:
        """Close the file instead of giving it back (a read through it failed)."""
        if self.file is not None:
            self.file.close()
        self.file, self.path, self.ident = None, None, None

    def close(self) -> None:
        """Give the file back to the process's open files."""
        if self.file is not None and self.path is not None:
            self.cache.give_back(self.path, self.ident, self.file)
        self.file, self.path, self.ident = None, None, None


def _process(
    collector: Collector,
    item: WorkItem,
    cache_dir: str | None,
    files: _OpenFile,
    reads: tuple[str, int] | None = None,
) -> tuple[int, _ItemOutput | SkippedFile, bool]:
    """Run the collector on one item (in any process), reading it from ``files`` (through the
    read cache ``reads``, when given). Returns (index, result, cache hit)."""
    path = None
    if cache_dir is not None:
        key = _cache_key(collector, item)
        path = Path(cache_dir) / key[:2] / f"{key}.pkl"
        if path.exists():
            try:
                with path.open("rb") as fh:
                    cached = pickle.load(fh)
                if isinstance(cached, _ItemOutput):
                    return item.index, cached, True
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
                pass  # a damaged cache entry is recomputed
    try:
        f = files.get(item.path)
        branches = collector.branches
        names = list(branches)
        f.check_branches(names)
        _check_types(item.path, f.tree, branches)
        if f.num_entries < item.entry_stop:
            raise FileFormatError(
                item.path,
                "truncated",
                f"tree has {f.num_entries} entries, its metadata promised {item.entry_stop}",
            )
        numbered = _event_numbers(f.tree)
        extra = [EVENT_BRANCH] if numbered and EVENT_BRANCH not in branches else []
        if reads is None:
            arrays = f.arrays(names + extra, item.entry_start, item.entry_stop)
        else:
            arrays = _read_cache(*reads).arrays(
                f, files.ident, item.tree, names + extra, item.entry_start, item.entry_stop
            )
    except B2CalibError as err:
        files.discard()  # not kept: the next read of the file opens it again
        return item.index, _skipped(item.path, err), False
    events = arrays[names] if extra else arrays  # the collector sees what it asked for
    numbers = ak.to_numpy(arrays[EVENT_BRANCH]) if numbered else None
    where = f"entries {item.entry_start}-{item.entry_stop} (run {item.exp}/{item.run})"
    try:
        histograms = collector.collect(events)
    except BadValueError as err:  # the file's values, not the collector: a bad file
        return (
            item.index,
            _skipped(item.path, FileFormatError(item.path, "bad-values", f"{where}: {err}")),
            False,
        )
    except Exception as err:  # a collector's own failure: raised, naming what it was reading
        err.add_note(f"{type(collector).__name__} was collecting {item.path}, {where}")
        raise
    out = _ItemOutput(histograms, numbers, count_nonfinite(events, branches))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(out, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    return item.index, out, False


def _run_pool(
    fn: Callable[..., Any],
    tasks: Sequence[_Batch],
    workers: int,
    threads: bool,
    uses: Sequence[type] = (),
) -> Iterator[tuple[int, Wire[_Partial]]]:
    """Run ``tasks`` on a local thread pool, or on the process's shared pool of ``workers``
    processes (:func:`~b2calib._workers.shared_pool`: kept from one call to the next, its
    workers end with this process; started again when they lack a class of ``uses``)."""
    pool: ThreadPoolExecutor | ProcessPoolExecutor
    if threads:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(tasks)))) as pool:
            yield from _completed(pool, fn, tasks)
        return
    pool = shared_pool(max(1, workers), uses)
    try:
        yield from _completed(pool, fn, tasks)
    except BrokenProcessPool:
        shutdown_pool(wait=False)  # a worker died: the next call starts a new pool
        raise


def _completed(
    pool: ThreadPoolExecutor | ProcessPoolExecutor, fn: Callable[..., Any], tasks: Sequence[_Batch]
) -> Iterator[tuple[int, Wire[_Partial]]]:
    """Submit ``tasks`` to ``pool`` and yield their results as they complete (tasks not yet
    started are cancelled when the caller stops early)."""
    # a finished future holds its result: each is dropped once its result is handed over, so
    # that the calling process holds one partial at a time, not every batch's
    futures = {pool.submit(fn, t) for t in tasks}
    try:
        for fut in as_completed(futures):
            futures.discard(fut)
            yield fut.result()
    finally:
        for fut in futures:
            fut.cancel()


#: The clients this process connected to the clusters passed as executors (by the cluster's
#: ``id``, with the cluster), kept for the next collects: connecting and closing one in every
#: call cost ~15 ms and a first task's round trips (the engine bench's "cluster passed" row).
_cluster_clients: dict[int, tuple[Any, Any]] = {}
_cluster_clients_lock = threading.Lock()


def _dask_client(executor: Any) -> tuple[Any, bool]:
    """A distributed Client for a Client, a scheduler address or a cluster, and whether the
    engine owns it (and closes it after the collect).

    A cluster's client is kept for the collects that follow, with this process or until the
    cluster closes (its client closes with it, and the next collect passing a cluster connects
    anew). It is not made the process's default client: the caller's own Dask computations go
    where they went before."""
    Client = require("distributed", "the Dask executor").Client

    if isinstance(executor, Client):
        return executor, False
    if isinstance(executor, str):
        return Client(executor), True
    if hasattr(executor, "scheduler_address"):
        with _cluster_clients_lock:
            kept = _cluster_clients.get(id(executor))
            if kept is not None and kept[0] is executor and kept[1].status == "running":
                return kept[1], False
            for key, (_, client) in list(_cluster_clients.items()):  # closed with their cluster
                if client.status != "running":
                    del _cluster_clients[key]
            client = Client(executor, set_as_default=False)
            _cluster_clients[id(executor)] = (executor, client)
            return client, False
    raise ConfigError(f"not a Dask client, cluster or scheduler address: {executor!r}")


#: Dask: a task runs consecutive batches (in the order sent) and returns their partials
#: together, each batch's partial still its own; the tasks are cut "guided": each takes about
#: ``1 / (DASK_SPLIT * threads)`` of the events not yet in a task, at most
#: :data:`DASK_MAX_BATCHES` batches, so the first tasks are large and the last ones single
#: batches (the workers still finish together). Dask's scheduler, in the calling process,
#: and the workers' event loops spend CPU per task (its messages, the result's fetch):
#: fewer tasks, less of it (issue 20, the engine bench's 20 batches on 2 workers: 20 tasks ->
#: 10, the scheduler's transitions per collect 112 -> 52, the caller's socket sends 305-328 ->
#: 190-201 and receives 480-600 -> 310-340, the workers' sends 110-120 -> 75-85, strace).
DASK_SPLIT = 2
DASK_MAX_BATCHES = 8


def _guided(tasks: Sequence[_Batch], threads: int) -> list[tuple[_Batch, ...]]:
    """``tasks`` cut into consecutive groups, one per Dask task (see :data:`DASK_SPLIT`); one
    batch per group when the cluster has no thread yet (an adaptive cluster scaling up)."""
    if threads < 1:
        return [(t,) for t in tasks]
    sizes = [sum(it.entry_stop - it.entry_start for it in t.items) for t in tasks]
    remaining = sum(sizes)
    groups: list[tuple[_Batch, ...]] = []
    current: list[_Batch] = []
    n = 0
    for task, size in zip(tasks, sizes, strict=True):
        current.append(task)
        n += size
        if n * DASK_SPLIT * threads >= remaining or len(current) >= DASK_MAX_BATCHES:
            groups.append(tuple(current))
            remaining -= n
            current, n = [], 0
    if current:
        groups.append(tuple(current))
    return groups


def _run_batches(
    fn: Callable[[_Batch], tuple[int, Wire[_Partial]]], batches: tuple[_Batch, ...]
) -> list[tuple[int, Wire[_Partial]]]:
    """One Dask task: ``fn`` on each of ``batches``, in order."""
    return [fn(b) for b in batches]


def _run_dask(
    fn: Callable[..., Any], tasks: Sequence[_Batch], executor: Any
) -> Iterator[tuple[int, Wire[_Partial]]]:
    client, owned = _dask_client(executor)
    from distributed import as_completed as dask_completed

    try:
        groups = _guided(tasks, sum(client.nthreads().values()))
        # a future the client holds keeps its result in a worker's memory: each is released
        # once its result is here, so that the workers do not hold every batch's partial
        # in the order given, said by priorities rather than left to the scheduler's own
        # ordering of independent tasks
        futures = {
            client.submit(_run_batches, fn, g, pure=False, priority=len(groups) - pos)
            for pos, g in enumerate(groups)
        }
        try:
            for fut in dask_completed(futures, loop=client.loop):
                futures.discard(fut)
                results = fut.result()
                fut.release()
                while results:  # handed over one at a time, each dropped once merged
                    yield results.pop(0)
        finally:
            client.cancel(list(futures))
    finally:
        if owned:
            client.close()


def collect(
    collector: Collector,
    dataset: Dataset,
    *,
    executor: str | Any = "processes",
    workers: int | None = None,
    on_bad_file: Policy | None = None,
    cache: bool | str | os.PathLike[str] = True,
    progress: bool = True,
    step_size: int = 500_000,
    verify: bool = True,
    max_nonfinite: float = DEFAULT_MAX_NONFINITE,
    on_progress: Callable[[int, int], None] | None = None,
    batch_events: int | None = None,
    read_cache: str | os.PathLike[str] | None = None,
) -> CollectResult:
    """Run ``collector`` over ``dataset`` and return its histograms per run.

    Parameters
    ----------
    executor
        ``"inprocess"``; ``"threads"`` (a local thread pool: best when the collector spends its
        time in code that releases the GIL, as the compiled fills and uproot's decompression
        do, since no histogram has to be sent between processes); ``"processes"`` (a local
        pool of ``workers`` processes, default all cores, kept for the next calls, which end
        when this process does: :func:`b2calib._workers.shutdown_pool` ends them sooner);
        or Dask: a ``distributed.Client``, a scheduler address (``"tcp://host:8786"``) or a
        cluster object (``LocalCluster``, or a dask-jobqueue ``SLURMCluster``, ``LSFCluster``,
        ``HTCondorCluster`` ... for batch farms).
    on_bad_file
        What to do with a bad file. Files are bad when they are unreadable (truncated, not
        ROOT, missing or mistyped branches), corrupt (size or checksum not what the catalogue
        recorded) or inconsistent (:data:`~b2calib.engine.dataset.INCONSISTENT`: the same
        events twice in a run, a path that names another run than the metadata, a run the
        registry does not list or lists twice, more NaN or Inf values than ``max_nonfinite``).
        ``None`` (the default): leave out unreadable and corrupt files and list them in
        :attr:`CollectResult.skipped`, stop on inconsistent ones (the result would be wrong in
        a way leaving out one file cannot be trusted to mend); ``"skip"``: leave out and list
        every bad file (for duplicate events the run's files of that skim, for too many
        non-finite values the run's files); ``"stop"``: raise the first bad file's error.
        The error is one line naming the files (:class:`~b2calib.exceptions.FileFormatError`,
        :class:`~b2calib.exceptions.InconsistentDataError` for inconsistent data).
    cache
        ``True`` (the default folder, :func:`default_cache_dir`), a folder, or ``False``.
        Entries are keyed by the collector's class, version and configuration and by the
        file's path, size, modification time and inode, so a changed file or configuration
        is read again.
    progress
        Show a progress bar (terminal or notebook).
    step_size
        Events per work item at most (a file smaller than that is one item; a file's last item
        takes a remainder below a tenth of it, :data:`TAIL_FRACTION`): small enough to bound
        memory, large enough not to cut a file's baskets: each item decompresses every basket
        it overlaps (the simulated skim files hold one basket per branch, so items of a fifth
        of a file cost ~4x the CPU of whole files).
    verify
        Compare each file with its file-catalogue entry (size, Adler-32) before reading it
        (:func:`~b2calib.engine.integrity.verify_files`: once per file and process); files no
        catalogue lists are read, and said so once.
    max_nonfinite
        The largest fraction of NaN or Inf values allowed per run in each floating-point
        branch the collector reads (default 0.1 %); more is inconsistent data. The counts are
        in :attr:`CollectResult.nonfinite` whatever the limit.
    on_progress
        Called in the calling process with ``(items done, items in all)``: once with 0 done
        when the items are planned, then as each batch of items completes, whatever the
        executor (for a caller's own progress display; an exception it raises stops the loop).
    batch_events
        Events per batch at most: a batch (a task of the local executors; on Dask a task runs
        a few consecutive batches, :data:`DASK_SPLIT`) runs consecutive items of one run and
        sends back their merged histograms, once (``None``: the data's events over
        :data:`MIN_BATCHES`, at most :data:`BATCH_EVENTS`; 0: one item per batch). The same
        data and ``batch_events`` give identical histograms under every executor.
    read_cache
        A folder on this machine's disk, made by the caller for the collects that read the
        same files again (a calibration's iterations), and removed by it after: each item's
        decoded branches are kept there and taken from there by the next collect reading
        them (:class:`~b2calib.engine._reads.ReadCache`; at most ``$B2CALIB_READ_CACHE_MB``,
        default 8192 MB, shared between the workers). Local executors only: Dask's workers
        read as without it.
    """
    if on_bad_file not in (None, "skip", "stop"):
        raise ConfigError(f"on_bad_file must be 'skip' or 'stop' (or None), not {on_bad_file!r}")
    max_nonfinite = check_fraction(max_nonfinite)
    result = CollectResult(RunOutput())
    for problem in dataset.problems:
        _bad_file(result, problem, on_bad_file)
    files = list(dataset.files)
    if verify:
        started = time.perf_counter()
        corrupt, result.unverified = verify_files([f.path for f in files], workers)
        result.verify_seconds = time.perf_counter() - started
        for problem in corrupt:
            _bad_file(result, problem, on_bad_file)
        left_out = {s.path for s in corrupt}
        files = [f for f in files if f.path not in left_out]
    items = plan(Dataset(files), step_size)
    result.n_items = len(items)
    tasks = _largest_runs_first(_batches(items, batch_events))
    position = {task.index: pos for pos, task in enumerate(tasks)}
    cache_dir: str | None = None
    if cache is not False:
        cache_dir = str(default_cache_dir() if cache is True else Path(cache))
    reads = None
    if read_cache is not None and executor in ("inprocess", "threads", "processes"):
        n_proc = 1 if executor != "processes" else workers or os.cpu_count() or 1
        reads = (str(read_cache), read_cache_bytes() // n_proc)
    fn = _Task(collector, cache_dir, stop=on_bad_file == "stop", reads=reads)
    trim = HeapTrim()
    if executor in ("inprocess", "threads", "processes") and items:
        collector.prepare()  # before the local workers fork: they inherit what it loads
        # nor do they inherit the free memory a caller's earlier work left resident (a
        # calibration's previous pass: every run's histograms, freed)
        trim(force=True)
    if executor == "inprocess":
        stream: Iterator[tuple[int, Wire[_Partial]]] = (fn(t) for t in tasks)
    elif executor == "threads":
        stream = _run_pool(fn, tasks, workers or os.cpu_count() or 1, threads=True)
    elif executor == "processes":  # the shared pool's workers may predate this collector
        pooled = dataclasses.replace(
            fn, prepare=True, cwd=os.getcwd(), key=_collector_key(collector)
        )
        stream = _run_pool(
            pooled, tasks, workers or os.cpu_count() or 1, threads=False, uses=[type(collector)]
        )
    elif isinstance(executor, str) and not executor.startswith(("tcp://", "tls://", "inproc://")):
        raise ConfigError(
            f"unknown executor {executor!r}: 'inprocess', 'threads', 'processes' or Dask"
        )
    else:
        stream = _run_dask(dataclasses.replace(fn, heap=True), tasks, executor)
    from tqdm.auto import tqdm

    merge = _RunMerge(result, on_bad_file, max_nonfinite, files, trim)
    pending: dict[int, _Partial] = {}  # by position in ``tasks``
    next_pos = 0
    done = 0
    if on_progress is not None:
        on_progress(0, len(items))
    with tqdm(total=len(items), unit="item", disable=not progress, desc="collect") as bar:
        for index, wire in stream:
            partial = wire.payload
            pos = position[index]
            done += len(tasks[pos].items)
            bar.update(len(tasks[pos].items))
            if on_progress is not None:
                on_progress(done, len(items))
            for problem in partial.skipped:
                _bad_file(result, problem, on_bad_file)
            result.cache_hits += partial.cache_hits
            pending[pos] = partial
            while next_pos in pending:  # merge in the order sent: deterministic sums
                merge.add(tasks[next_pos], pending.pop(next_pos))
                next_pos += 1
    merge.close_run()
    result.skipped.sort(key=lambda s: s.path)  # the same report whatever finished first
    return result


def _bad_file(result: CollectResult, problem: SkippedFile, policy: Policy | None) -> None:
    """Raise the problem's error, or list the file as skipped, as the policy says."""
    if policy == "stop" or (policy is None and problem.inconsistent):
        raise problem.error()
    if problem.path not in {s.path for s in result.skipped}:
        result.skipped.append(problem)


class _RunMerge:
    """Merges work items in order and checks each run when its last item is in: duplicate
    events per skim, NaN and Inf per branch. A run passes into the result only then."""

    def __init__(
        self,
        result: CollectResult,
        policy: Policy | None,
        max_nonfinite: float,
        files: Sequence[FileRef],
        trim: HeapTrim,
    ) -> None:
        self.result, self.policy, self.max_nonfinite = result, policy, max_nonfinite
        self.trim = trim
        self.files_of: dict[tuple[int, int], list[str]] = {}
        for f in files:
            self.files_of.setdefault(f.key, []).append(f.path)
        self.run: tuple[int, int] | None = None
        self.groups: dict[str, _Group] = {}
        #: The parts of the run's files that span batches, by file, in the order merged.
        self.spanning: dict[str, tuple[str, _Group]] = {}
        #: The run's files that could not be read (or were rejected) in some item.
        self.bad: set[str] = set()

    def add(self, batch: _Batch, partial: _Partial) -> None:
        key = batch.run
        if key != self.run:
            self.close_run()
            self.run = key
        self.bad.update(s.path for s in partial.skipped)
        for skim, group in partial.groups.items():
            self._merge(skim, group)
        for path, skim, part in partial.spanning:
            if path in self.spanning:
                self.spanning[path][1].merge(part)
            else:
                self.spanning[path] = (skim, part)

    def _merge(self, skim: str, group: _Group) -> None:
        if skim in self.groups:
            self.groups[skim].merge(group)
        else:
            self.groups[skim] = group

    def close_run(self) -> None:
        """Check the run whose items are all merged, and pass it into the result."""
        for path, (skim, part) in self.spanning.items():  # the files read whole
            if path not in self.bad:
                self._merge(skim, part)
        key, groups = self.run, self.groups
        self.run, self.groups, self.spanning, self.bad = None, {}, {}, set()
        if key is None:
            return
        counts = NonFiniteCounts()
        for group in groups.values():
            counts.add(key, group.nonfinite)
        self.result.nonfinite += counts
        over = counts.over(key, self.max_nonfinite)
        if over:
            paths = self.files_of.get(key, [])
            detail = nonfinite_detail(key, over, self.max_nonfinite)
            self._reject(_inconsistent(paths, "non-finite", detail, key))
            return
        for skim, group in groups.items():
            repeated, involved = duplicate_events(group.events)
            if involved:
                detail = duplicate_detail(key, skim, repeated, involved)
                problems = _inconsistent(involved, "duplicate-events", detail, key, skim)
                for path in group.paths:  # the files of the run and skim all left out
                    if path not in involved:
                        problems.append(
                            SkippedFile(
                                path,
                                "duplicate-events",
                                problems[0].message,
                                tuple(involved),
                                key,
                                skim,
                            )
                        )
                self._reject(problems)
                continue
            held = self.result.output.get(key, {})
            self.trim.keep(
                sum(h.view(flow=True).nbytes for n, h in group.histograms.items() if n not in held)
            )
            self.result.output.add(key, group.histograms, copy=False)
            self.result.n_events += group.n_events
        groups.clear()  # the run's event numbers and transfer buffers are gone: give back
        self.trim()  # the holes they leave between the runs' results, once they add up

    def _reject(self, problems: list[SkippedFile]) -> None:
        for problem in problems:
            _bad_file(self.result, problem, self.policy)


#: This process's read caches, by folder (each counts the bytes this process wrote to it).
_read_caches: dict[str, ReadCache] = {}


def _read_cache(folder: str, max_bytes: int) -> ReadCache:
    cache = _read_caches.get(folder)
    if cache is None:
        if len(_read_caches) > 16:  # the folders of finished jobs
            _read_caches.clear()
        cache = _read_caches[folder] = ReadCache(folder, max_bytes)
    return cache


def read_cache_bytes() -> int:
    """``$B2CALIB_READ_CACHE_MB`` in bytes (default 8192 MB): what the read cache of one
    calibration job holds at most (each process writes its share)."""
    text = os.environ.get("B2CALIB_READ_CACHE_MB", "").strip()
    try:
        mb = float(text) if text else 8192.0
    except ValueError:
        mb = -1.0
    if not mb >= 0:
        raise ConfigError(
            f"B2CALIB_READ_CACHE_MB={text!r}: expected the megabytes a calibration's read cache "
            "may hold (0 or more)"
        )
    return int(mb * 2**20)


#: The collectors (by :func:`_collector_key`) prepared in this worker process.
_prepared: set[str] = set()


def _collector_key(collector: Collector) -> str:
    """What tells collectors apart for :func:`_prepare_once`: class and configuration (its
    ``repr``: for collectors holding per-channel constants, tens of milliseconds, computed once
    per collect in the calling process)."""
    return f"{type(collector).__module__}.{type(collector).__qualname__}:{collector!r}"


def _prepare_once(collector: Collector, key: str) -> None:
    """Run ``collector.prepare()`` unless a collector of the same ``key`` was prepared in this
    process."""
    if key not in _prepared:
        collector.prepare()
        if len(_prepared) > 1000:
            _prepared.clear()
        _prepared.add(key)


@dataclass(frozen=True)
class _Task:
    """Picklable callable sent to workers: runs one batch."""

    collector: Collector
    cache_dir: str | None
    stop: bool = False
    #: Set in Dask workers: their large arrays' memory reused from task to task
    #: (:func:`~b2calib._workers.keep_freed_memory`; the kept pool's initializer sets it).
    heap: bool = False
    #: Set for the shared process pool, whose workers were forked before this collect: the
    #: collector's :meth:`~b2calib.engine.Collector.prepare` is run in the worker (idempotent:
    #: a worker forked after it inherits what it loaded), in the caller's working directory.
    prepare: bool = False
    cwd: str | None = None
    #: The collector's :func:`_collector_key` (with ``prepare``), computed once by the caller:
    #: each batch's task used to compute it again in the worker (6-7 % of the workers' CPU in
    #: the cdc-t0 and top-module-t0 collects, issue 20).
    key: str = ""
    #: The read cache's folder and the bytes each process may write to it (``read_cache``).
    reads: tuple[str, int] | None = None

    def __call__(self, batch: _Batch) -> tuple[int, Wire[_Partial]]:
        if self.heap:
            keep_freed_memory()
        if self.cwd is not None and os.getcwd() != self.cwd:
            os.chdir(self.cwd)
        if self.prepare:
            _prepare_once(self.collector, self.key or _collector_key(self.collector))
        return _process_batch(self.collector, batch, self.cache_dir, self.stop, self.reads)
