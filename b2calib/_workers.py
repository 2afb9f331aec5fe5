"""Worker processes that end with their parent.

A process pool's workers wait for work from their parent; when the parent is killed (``kill
-9``, an out-of-memory kill, a batch system's hard limit), nothing tells them, and they live on,
adopted by PID 1. :func:`exit_with_parent` is the pools' initializer: on Linux the kernel kills
the worker when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere a thread polls
the parent's PID once a second.

:func:`large_buffers_from_heap` lets a worker reuse the memory of its large arrays from one task to
the next. glibc serves allocations above a threshold with a fresh ``mmap`` and returns them to the
system when freed; it raises the threshold as large blocks are freed (after the first task a local
pool's workers reuse their memory), unless the threshold was set, as Dask's nanny does for its
workers (``MALLOC_TRIM_THRESHOLD_``, which also fixes the threshold at 128 kB). Every decompressed
basket and histogram of every task then is new memory, zeroed page by page by the kernel: 280k
page faults per 10^6 ECL events in two Dask workers against 42k in a local pool's, ~40 % of the
workers' CPU (measured for issue 20 on the 2-core benchmark machine).

:func:`release_free_memory` gives the free memory inside glibc's heap back to the system. A
process that keeps a large result per run (the engine's caller: a 7 MB histogram per run, each
arriving beside the transient buffers it was unpickled from) leaves holes between the results
kept, which the heap keeps resident: 3.5 MiB per run read, half again the result's own size
(issue 20, the scale curve). The engine's :class:`HeapTrim` calls it as runs pass into the
result, once the memory resident beyond what the caller keeps has grown by
:data:`TRIM_SLACK`: a trim after every run made every run's transfer buffers fresh pages, zeroed
by the kernel (per 10^6 ECL events, trimming once per run: 63-65k page faults in the caller on
2 processes, 0.18-0.20 s of its CPU; in-process 107-127k, with 0.32-0.41 s of system time of
1.34-1.66 s; with the slack, 37-39k and 41-47k).

:func:`shared_pool` is the process pool the engine's local executor keeps from one event loop to
the next (a calibration's collectors and iterations): a new pool's workers start with a cold
heap, and their first tasks take every large buffer as fresh, zeroed pages; on the 2-core
benchmark machine (one run, load 3-4) a pool created per call made 2 processes 1.2x one, a kept
pool 2.0x (issue 20).
Its workers end with this process (:func:`exit_with_parent`), at its exit
(:func:`shutdown_pool`, registered with :mod:`atexit`), or when :func:`shutdown_pool` is called.
They keep up to :data:`TRIM_THRESHOLD` of freed memory for the next task
(:func:`keep_freed_memory`): with glibc's defaults each warm worker still took ~45k page faults
per 10^6 ECL events (the histograms and baskets of every task fresh pages), with it ~9k, and
8-13 % less CPU (issue 20; their RSS stayed within the same 130-190 MiB). A Dask task sets the
same in its worker (the nanny's ``MALLOC_TRIM_THRESHOLD_`` returned every freed block at once):
2 workers' page faults per 10^6 events 68-116k -> 2-35k, their CPU 10-15 % lower.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import ClassVar

__all__ = [
    "HeapTrim",
    "at_shutdown",
    "compiler_ready",
    "exit_with_parent",
    "keep_freed_memory",
    "large_buffers_from_heap",
    "release_free_memory",
    "shared_pool",
    "shutdown_pool",
]

_PR_SET_PDEATHSIG = 1
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1
#: The mmap threshold a worker sets: glibc's largest (its dynamic threshold's bound on 64 bits).
MMAP_THRESHOLD = 32 * 1024 * 1024
_heap_set: list[bool] = []
_trim_set: list[bool] = []
#: Freed memory at the top of a pool worker's heap kept for its next task
#: (:func:`keep_freed_memory`): more than a task's baskets and histograms.
TRIM_THRESHOLD = 64 * 1024 * 1024
#: Memory resident beyond what the caller keeps, grown since the last trim, that makes
#: :class:`HeapTrim` trim the heap: more than a run's transfer buffers and event numbers.
TRIM_SLACK = 64 * 1024 * 1024
#: Seconds between two looks at the parent, where the kernel cannot be asked.
POLL_S = 1.0


def exit_with_parent(parent: int) -> None:
    """Make this (worker) process exit as soon as process ``parent`` is gone.

    Use as a pool's initializer: ``ProcessPoolExecutor(initializer=exit_with_parent,
    initargs=(os.getpid(),))``.
    """
    if sys.platform.startswith("linux") and _pdeathsig():
        if os.getppid() != parent:  # the parent died before the kernel was asked
            os._exit(1)
        return
    threading.Thread(target=_watch, args=(parent,), name="exit-with-parent", daemon=True).start()


def large_buffers_from_heap() -> bool:
    """Serve allocations of up to :data:`MMAP_THRESHOLD` from the heap in this process, so that
    the memory of a task's large arrays is reused by the next (glibc only; once per process).
    Returns whether the threshold is set."""
    if not _heap_set:
        _heap_set.append(_mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return _heap_set[0]


def _mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt(param, value)`` in this process; whether it was set (False where there
    is no glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.mallopt(param, value)) == 1
    except (OSError, AttributeError):
        return False


def release_free_memory() -> bool:
    """Return the free pages of this process's heap to the system (glibc's ``malloc_trim(0)``;
    in the engine's caller collecting 20 runs of the ECL scale sample, its 21 calls took 134 ms of
    a 35.6 s loop). Returns whether memory was released; False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.malloc_trim(0)) == 1
    except (OSError, AttributeError):
        return False


def resident_bytes() -> int | None:
    """This process's resident memory in bytes (``/proc/self/statm``); None where there is none."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class HeapTrim:
    """Trims the heap (:func:`release_free_memory`) when this process's resident memory, net of
    the bytes its caller says it keeps, has grown by more than ``slack`` since the last trim.

    Memory then stays within ``slack`` of what is kept, however many runs pass, while the freed
    buffers of one run are reused by the next instead of coming back as fresh pages.

    Parameters
    ----------
    slack
        Growth in bytes, beyond what is kept, that makes :meth:`__call__` trim.
    """

    def __init__(self, slack: int = TRIM_SLACK) -> None:
        self.slack = slack
        self.kept = 0
        self._base: int | None = None

    def keep(self, nbytes: int) -> None:
        """Count ``nbytes`` more that the caller keeps (a run's histograms passed into the
        result): resident memory they explain is not growth."""
        self.kept += nbytes

    def __call__(self, force: bool = False) -> bool:
        """Trim if memory has grown by more than the slack since the last trim (or ``force``);
        returns whether the heap was trimmed."""
        now = resident_bytes()
        base = self._base
        if (
            not force
            and now is not None
            and base is not None
            and now - self.kept - base <= self.slack
        ):
            return False
        release_free_memory()
        after = resident_bytes()
        self._base = None if after is None else after - self.kept
        return True


class _Shared:
    """The shared pool, its size and the process that made it."""

    lock = threading.Lock()
    pool: ProcessPoolExecutor | None = None
    workers = 0
    owner = 0
    #: The classes of ``__main__`` when the workers were forked (what they can unpickle from it).
    main: ClassVar[dict[str, object]] = {}
    #: The modules imported when the workers were forked (what they have without importing).
    modules: ClassVar[frozenset[str]] = frozenset()


def shared_pool(workers: int, uses: Sequence[type] = ()) -> ProcessPoolExecutor:
    """This process's pool of ``workers`` worker processes (which end with it), started on first
    use and kept for the next calls. A call for another number of workers, after a worker died
    (a broken pool), or for tasks that ``uses`` a class the workers do not have as it is now
    replaces it: a class of ``__main__`` (a script's, a notebook's) defined, or defined again,
    since they were forked, or a class of a module imported since (a calibration's collectors,
    new to the pool).

    Workers forked now inherit the module with everything it imported and every kernel the
    collector's ``prepare`` loaded; a kept worker had to import them at its first task. On the
    2-core benchmark machine (issue 20) that was 0.7 s for the beam collectors (scipy and the
    QA definitions they import), paid by both workers in the calibration's first collect,
    against 0.02 s to fork a new pool of 2. A process forked from the pool's owner gets its
    own pool."""
    if workers < 1:
        raise ValueError("a pool needs at least one worker")
    with _Shared.lock:
        pool = _Shared.pool
        if pool is not None and _Shared.owner != os.getpid():
            pool = _Shared.pool = None  # inherited through fork: the parent's, not ours to use
        if pool is not None and (
            _Shared.workers != workers
            or getattr(pool, "_broken", False)
            or any(not _forked_with(cls) for cls in uses)
        ):
            pool.shutdown(wait=True, cancel_futures=True)
            pool = _Shared.pool = None
        if pool is None:
            compiler_ready()
            main = sys.modules.get("__main__")
            found = vars(main).items() if main is not None else ()
            _Shared.main = {k: v for k, v in found if isinstance(v, type)}  # classes only
            _Shared.modules = frozenset(sys.modules)
            pool = ProcessPoolExecutor(
                max_workers=workers, initializer=_pool_worker, initargs=(os.getpid(),)
            )
            _Shared.pool, _Shared.workers, _Shared.owner = pool, workers, os.getpid()
        return pool


def compiler_ready() -> None:
    """Initialise numba's compiler in this process, when it has imported numba (the engine's
    compiled fills do), so that workers forked from it inherit it: :func:`shared_pool` calls it
    before its workers start.

    numba loads its typing and lowering registries, and with them some 600 modules (numba's
    own, its extensions'), at a process's first compiled call, even of a kernel it loads from
    its cache. A new pool's worker did that at its first task: 1.0-1.6 s at load 10 on the
    2-core benchmark machine, against 0.01-0.02 s forked after its parent had done it (issue
    20). The parent does it once, and needs it for its own compiled kernels (the fits) anyway.
    """
    if "numba" not in sys.modules:
        return
    try:
        from numba.core.registry import cpu_target

        cpu_target.target_context.refresh()
    except (ImportError, AttributeError):  # another numba layout: workers do it themselves
        return


def _forked_with(cls: type) -> bool:
    """Whether the pool's workers have ``cls`` as it is without importing anything: a class of
    modules (its own and its bases') that were imported when they were forked, or one
    ``__main__`` held then."""
    if cls.__module__ != "__main__":
        return all(c.__module__ in _Shared.modules for c in cls.__mro__)
    head, *rest = cls.__qualname__.split(".")
    obj = _Shared.main.get(head)
    for name in rest:
        obj = getattr(obj, name, None)
    return obj is cls


#: Called by :func:`shutdown_pool` (what the calling process keeps for its pool's tasks).
_at_shutdown: list[Callable[[], None]] = []


def at_shutdown(fn: Callable[[], None]) -> None:
    """Call ``fn`` whenever :func:`shutdown_pool` ends the pool, and at exit (e.g. to close the
    files the caller's own event loops keep open, :mod:`b2calib.engine._files`)."""
    _at_shutdown.append(fn)


def shutdown_pool(wait: bool = True) -> None:
    """End the workers of :func:`shared_pool` (tasks not yet started are cancelled; ``wait``:
    return when the processes are gone), and call the :func:`at_shutdown` functions. The next
    :func:`shared_pool` starts a new pool."""
    with _Shared.lock:
        pool, _Shared.pool = _Shared.pool, None
    if pool is not None and _Shared.owner == os.getpid():
        pool.shutdown(wait=wait, cancel_futures=True)
    for fn in _at_shutdown:
        fn()


atexit.register(shutdown_pool)


def keep_freed_memory() -> bool:
    """:func:`large_buffers_from_heap`, and keep up to :data:`TRIM_THRESHOLD` of freed memory
    at the top of the heap instead of returning it to the system at once (glibc only; once per
    process; for the shared pool's and Dask's workers, whose tasks each allocate and free the
    same large buffers). Returns whether both are set."""
    if not _trim_set:
        ok = large_buffers_from_heap() and _mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        _trim_set.append(ok)
    return _trim_set[0]


def _pool_worker(parent: int) -> None:
    """The shared pool's initializer: end with ``parent``, keep freed memory for the next task,
    and leave what the worker inherited out of the garbage collector's full collections
    (:func:`gc.freeze`)."""
    exit_with_parent(parent)
    keep_freed_memory()
    # The worker is forked from its parent with the parent's every object (its imports: numba,
    # uproot, hist, the collectors' tables: 280-490k objects the collector tracks). A full
    # collection traversed them all, triggered by the objects the worker makes as it opens
    # files (uproot parses every branch's metadata: thousands of objects per file): 0.2-0.3 s
    # each, 0-0.5 s of the 0.8-1.4 s the workers spent on arich-channel-mask's 33 files (issue
    # 20). Frozen, they are never traversed, nor their pages copied by the collector writing
    # into them; what the parent had left as garbage stays (its pages shared with the parent).
    gc.freeze()


def _pdeathsig() -> bool:
    """Ask the kernel for SIGKILL when the parent dies; False where it cannot be asked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os._exit(1)


def __dir__() -> list[str]:
    return __all__
