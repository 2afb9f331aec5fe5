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
(issue 20, the scale curve). The engine calls it as each run passes into the result.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

__all__ = ["exit_with_parent", "large_buffers_from_heap", "release_free_memory"]

_PR_SET_PDEATHSIG = 1
_M_MMAP_THRESHOLD = -3
#: The mmap threshold a worker sets: glibc's largest (its dynamic threshold's bound on 64 bits).
MMAP_THRESHOLD = 32 * 1024 * 1024
_heap_set: list[bool] = []
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
        ok = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                ok = int(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) == 1
            except (OSError, AttributeError):
                ok = False
        _heap_set.append(ok)
    return _heap_set[0]


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
