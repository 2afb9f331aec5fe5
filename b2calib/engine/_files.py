"""Skim files kept open in each process, from one work item, batch and event loop to the next.

Opening a skim file parses its tree's metadata (uproot reads every branch's ``TBranch``: 55-69
of them in the simulated skims), which costs as much as reading a few branches of a small work
item (issue 20: 10 % of the workers' CPU in the cdc-t0 and top-module-t0 collects). A
calibration reads the same files again and again in the same kept worker pool: each iteration
(ecl-energy's three), each pass (the beam spot's two), each calibration that depends on another
one. :class:`FileCache` keeps up to :data:`OPEN_FILES` files open per process:

- keyed by absolute path, and valid while the file's identity ``(st_dev, st_ino, st_size,
  st_mtime_ns)`` is the one it had when it was opened: a file rewritten or replaced since is
  opened again;
- a file is lent to one caller at a time (:meth:`FileCache.take` removes it from the cache,
  :meth:`FileCache.give_back` returns it): two threads of the thread executor never read
  through one file object; a second thread asking for a file in use opens its own;
- without uproot's object and array caches (:class:`~b2calib.io.SkimFile` opens files
  without them): a kept file holds its tree's metadata (~0.6 MB for a 69-branch tree), no
  arrays or baskets;
- a file that fails is not given back (a damaged file gives the error it gives today, every
  time it is read), nor is a file that failed to open kept;
- forked processes do not use the files of the process they were forked from (the file
  offsets of the descriptors they inherit are shared with it); the shared pool's end closes
  the caller's files (:func:`b2calib._workers.shutdown_pool`), and its workers' go with them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict

from b2calib._workers import at_shutdown
from b2calib.io import SkimFile, open_skim

__all__ = ["OPEN_FILES", "FileCache", "Identity", "open_files"]


def _open_files_setting() -> int:
    """``$B2CALIB_OPEN_FILES`` (0: no file is kept open), else 64."""
    text = os.environ.get("B2CALIB_OPEN_FILES", "").strip()
    if not text:
        return 64
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(
            f"B2CALIB_OPEN_FILES={text!r}: expected the number of skim files a process keeps "
            "open (0 or more)"
        )
    return value


#: Files kept open per process at most (the least recently used one closes first):
#: ``$B2CALIB_OPEN_FILES``, else 64.
OPEN_FILES = _open_files_setting()

Identity = tuple[int, int, int, int]


def identity(path: str) -> Identity | None:
    """``(st_dev, st_ino, st_size, st_mtime_ns)`` of ``path`` (None: it cannot be stat'ed)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class FileCache:
    """Open skim files by path, lent out one caller at a time.

    Parameters
    ----------
    size
        Files kept open at most (0: none, every file is closed when it is given back).
    """

    def __init__(self, size: int = OPEN_FILES) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._idle: OrderedDict[str, tuple[Identity, SkimFile]] = OrderedDict()
        self._owner = os.getpid()
        #: Files opened (not taken from the cache) since this cache was made.
        self.opened = 0

    def __len__(self) -> int:
        return len(self._idle)

    def take(self, path: str) -> tuple[SkimFile, Identity | None]:
        """The open file ``path``, kept or opened now, and its identity when it was opened;
        nobody else gets it until it is given back.

        Raises
        ------
        FileFormatError
            As :func:`~b2calib.io.open_skim`, when the file has to be opened and cannot be.
        """
        key = os.path.abspath(path)
        ident = identity(key)
        with self._lock:
            kept = self._idle.pop(key, None) if self._owner == os.getpid() else None
        if kept is not None:
            if ident is not None and kept[0] == ident:
                return kept[1], ident
            _close([kept[1]])
        f = open_skim(path)
        with self._lock:
            self.opened += 1
        return f, ident

    def give_back(self, path: str, ident: Identity | None, f: SkimFile) -> None:
        """Return a file :meth:`take` lent (to be kept, or closed when the cache is full, the
        file could not be stat'ed when it was opened, or this cache is not the process's)."""
        if ident is None or self.size < 1 or self._owner != os.getpid():
            _close([f])
            return
        key = os.path.abspath(path)
        with self._lock:
            out = [v[1] for v in (self._idle.pop(key, None),) if v is not None]
            self._idle[key] = (ident, f)
            while len(self._idle) > self.size:
                out.append(self._idle.popitem(last=False)[1][1])
        _close(out)

    def forget(self) -> None:
        """In a forked child: drop the parent's files (their descriptors' offsets are shared
        with the parent, so they are not read here; closing this process's copies of the
        descriptors does not close the parent's) and the lock another thread may have held."""
        self._lock = threading.Lock()
        files = [f for _, f in self._idle.values()]
        self._idle = OrderedDict()
        self._owner = os.getpid()
        _close(files)

    def clear(self) -> None:
        """Close every file kept."""
        with self._lock:
            files = [f for _, f in self._idle.values()]
            self._idle.clear()
        _close(files)


def _close(files: list[SkimFile]) -> None:
    for f in files:
        with contextlib.suppress(Exception):  # a read-only file: nothing to lose
            f.close()


#: This process's open files (the engine's work items read through it).
open_files = FileCache()
at_shutdown(open_files.clear)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=open_files.forget)
