"""The event loop: work items, executors, the bad-file policy and the disk cache.

>>> from b2calib.engine import ChannelValueCollector, Dataset, collect
>>> data = Dataset.select("data-samples/bucket", skims="hlt_bhabha")            # doctest: +SKIP
>>> ecl = ChannelValueCollector("ECLCalDigits_m_CellId", "ECLCalDigits_m_Energy",
...                             8736, (100, 0.0, 6.0), first_channel=1)          # doctest: +SKIP
>>> result = collect(ecl, data, executor="processes")                           # doctest: +SKIP
>>> result.output.merged()["channel_value"]                                     # doctest: +SKIP

Work items are (file, tree, entry range) slices of at most ``step_size`` events, planned from
the files' metadata; one file belongs to one run, so every item's histograms are that run's.
Results are merged in item order, whatever order the executor finishes them in: the same
collector on the same data gives identical histograms under every executor.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import uproot

from b2calib._extras import require
from b2calib._workers import exit_with_parent
from b2calib.engine.collector import Collector, Histograms, RunOutput
from b2calib.engine.dataset import Dataset, SkippedFile, _skipped
from b2calib.exceptions import B2CalibError, ConfigError, FileFormatError
from b2calib.io import TREE_NAME, open_skim

__all__ = ["CollectResult", "WorkItem", "collect", "default_cache_dir", "plan"]

Policy = Literal["skip", "stop"]
CACHE_FORMAT = 1


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


@dataclass
class CollectResult:
    """What an event loop produced."""

    output: RunOutput
    skipped: list[SkippedFile] = field(default_factory=list)
    n_items: int = 0
    n_events: int = 0
    cache_hits: int = 0

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


def plan(dataset: Dataset, step_size: int = 500_000) -> list[WorkItem]:
    """Cut the files into work items of at most ``step_size`` events (from the files' metadata;
    nothing is opened here: each task checks its own file's branches and types)."""
    if step_size < 1:
        raise ConfigError("step_size must be at least 1")
    items: list[WorkItem] = []
    for ref in dataset:
        for start in range(0, ref.n_events, step_size):
            stop = min(ref.n_events, start + step_size)
            items.append(WorkItem(len(items), ref.path, ref.exp, ref.run, start, stop))
    return items


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


def _process(
    collector: Collector, item: WorkItem, cache_dir: str | None
) -> tuple[int, Histograms | SkippedFile, bool]:
    """Run the collector on one item (in any process). Returns (index, result, cache hit)."""
    path = None
    if cache_dir is not None:
        key = _cache_key(collector, item)
        path = Path(cache_dir) / key[:2] / f"{key}.pkl"
        if path.exists():
            try:
                with path.open("rb") as fh:
                    return item.index, pickle.load(fh), True
            except (OSError, pickle.UnpicklingError, EOFError):
                pass  # a damaged cache entry is recomputed
    try:
        with open_skim(item.path) as f:
            branches = collector.branches
            f.check_branches(list(branches))
            _check_types(item.path, f.tree, branches)
            if f.num_entries < item.entry_stop:
                raise FileFormatError(
                    item.path,
                    "truncated",
                    f"tree has {f.num_entries} entries, its metadata promised {item.entry_stop}",
                )
            events = f.arrays(list(branches), item.entry_start, item.entry_stop)
    except B2CalibError as err:
        return item.index, _skipped(item.path, err), False
    hists = collector.collect(events)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(hists, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    return item.index, hists, False


def _run_pool(
    fn: Callable[..., Any], items: Sequence[WorkItem], workers: int, threads: bool
) -> Iterator[tuple[int, Any, bool]]:
    pool: ThreadPoolExecutor | ProcessPoolExecutor
    if threads:
        pool = ThreadPoolExecutor(max_workers=workers)
    else:  # workers end with this process, even when it is killed
        pool = ProcessPoolExecutor(
            max_workers=workers, initializer=exit_with_parent, initargs=(os.getpid(),)
        )
    with pool:
        futures = [pool.submit(fn, it) for it in items]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()


def _dask_client(executor: Any) -> tuple[Any, bool]:
    """A distributed Client for a Client, a scheduler address or a cluster, and whether the
    engine owns it (and closes it)."""
    Client = require("distributed", "the Dask executor").Client

    if isinstance(executor, Client):
        return executor, False
    if isinstance(executor, str):
        return Client(executor), True
    if hasattr(executor, "scheduler_address"):
        return Client(executor), True
    raise ConfigError(f"not a Dask client, cluster or scheduler address: {executor!r}")


def _run_dask(
    fn: Callable[..., Any], items: Sequence[WorkItem], executor: Any
) -> Iterator[tuple[int, Any, bool]]:
    client, owned = _dask_client(executor)
    from distributed import as_completed as dask_completed

    try:
        futures = client.map(fn, items, pure=False)
        try:
            for fut in dask_completed(futures):
                yield fut.result()
        finally:
            client.cancel(futures)
    finally:
        if owned:
            client.close()


def collect(
    collector: Collector,
    dataset: Dataset,
    *,
    executor: str | Any = "processes",
    workers: int | None = None,
    on_bad_file: Policy = "skip",
    cache: bool | str | os.PathLike[str] = True,
    progress: bool = True,
    step_size: int = 500_000,
) -> CollectResult:
    """Run ``collector`` over ``dataset`` and return its histograms per run.

    Parameters
    ----------
    executor
        ``"inprocess"``; ``"threads"`` (a local thread pool: best when the collector spends its
        time in code that releases the GIL, as the compiled fills and uproot's decompression
        do, since no histogram has to be sent between processes); ``"processes"`` (a local
        pool of ``workers`` processes, default all cores, which end when this process does);
        or Dask: a ``distributed.Client``,
        a scheduler address (``"tcp://host:8786"``) or a cluster object (``LocalCluster``,
        or a dask-jobqueue ``SLURMCluster``, ``LSFCluster``, ``HTCondorCluster`` ... for
        batch farms).
    on_bad_file
        ``"skip"``: leave out unreadable files (truncated, not ROOT, missing or mistyped
        branches) and list them in :attr:`CollectResult.skipped`; ``"stop"``: raise the first
        such error before any result is returned.
    cache
        ``True`` (the default folder, :func:`default_cache_dir`), a folder, or ``False``.
        Entries are keyed by the collector's class, version and configuration and by the
        file's path, size, modification time and inode, so a changed file or configuration
        is read again.
    progress
        Show a progress bar (terminal or notebook).
    step_size
        Events per work item at most (a file smaller than that is one item): large enough that
        a task runs well above the executor's overhead, small enough to bound memory.
    """
    if on_bad_file not in ("skip", "stop"):
        raise ConfigError(f"on_bad_file must be 'skip' or 'stop', not {on_bad_file!r}")
    items = plan(dataset, step_size)
    skipped = list(dataset.problems)
    if skipped and on_bad_file == "stop":
        first = skipped[0]
        raise FileFormatError(first.path, first.reason, first.message)
    cache_dir: str | None = None
    if cache is not False:
        cache_dir = str(default_cache_dir() if cache is True else Path(cache))
    result = CollectResult(RunOutput(), skipped, n_items=len(items))
    fn = _Task(collector, cache_dir)
    if executor == "inprocess":
        stream: Iterator[tuple[int, Any, bool]] = (fn(it) for it in items)
    elif executor in ("processes", "threads"):
        stream = _run_pool(fn, items, workers or os.cpu_count() or 1, executor == "threads")
    elif isinstance(executor, str) and not executor.startswith(("tcp://", "tls://", "inproc://")):
        raise ConfigError(
            f"unknown executor {executor!r}: 'inprocess', 'threads', 'processes' or Dask"
        )
    else:
        stream = _run_dask(fn, items, executor)
    from tqdm.auto import tqdm

    pending: dict[int, Any] = {}
    next_index = 0
    by_index = {it.index: it for it in items}
    with tqdm(total=len(items), unit="item", disable=not progress, desc="collect") as bar:
        for index, payload, hit in stream:
            bar.update(1)
            if isinstance(payload, SkippedFile):
                if on_bad_file == "stop":
                    raise FileFormatError(payload.path, payload.reason, payload.message)
                if payload.path not in {s.path for s in result.skipped}:
                    result.skipped.append(payload)
            result.cache_hits += int(hit)
            pending[index] = payload
            while next_index in pending:  # merge in item order: deterministic sums
                done = pending.pop(next_index)
                it = by_index[next_index]
                if not isinstance(done, SkippedFile):
                    result.output.add((it.exp, it.run), done, copy=False)
                    result.n_events += it.entry_stop - it.entry_start
                next_index += 1
    result.skipped.sort(key=lambda s: s.path)  # the same report whatever finished first
    return result


@dataclass(frozen=True)
class _Task:
    """Picklable callable sent to workers."""

    collector: Collector
    cache_dir: str | None

    def __call__(self, item: WorkItem) -> tuple[int, Histograms | SkippedFile, bool]:
        return _process(self.collector, item, self.cache_dir)
