"""Worker processes that end with their parent.

A process pool's workers wait for work from their parent; when the parent is killed (``kill
-9``, an out-of-memory kill, a batch system's hard limit), nothing tells them, and they live on,
adopted by PID 1. :func:`exit_with_parent` is the pools' initializer: on Linux the kernel kills
the worker when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere a thread polls
the parent's PID once a second.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

__all__ = ["exit_with_parent"]

_PR_SET_PDEATHSIG = 1
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
