"""The integrity of an event loop's input, checked without a second pass over the data.

``verify_files``
    Each file is compared with its entry in the file catalogue (size, Adler-32) before any of
    its work items is sent out: once per file and process, the result kept by path, size,
    modification time and inode, so that the many event loops of one calibration job read a
    file's bytes for its checksum once. Files no catalogue lists are read unverified and said
    so once.
``NonFiniteCounts``
    NaN and Inf values in the floating-point branches a collector reads, counted in the same
    pass as its histograms, per run and branch, and merged with ``+`` as they are.
``duplicate_events``
    The event numbers every work item reads beside its collector's branches
    (``EventMetaData_m_event``), checked per run and skim when the run's items are merged.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import awkward as ak
import numpy as np
import numpy.typing as npt

from b2calib.engine.dataset import SkippedFile
from b2calib.exceptions import ConfigError, FileFormatError
from b2calib.io import (
    CATALOGUE_NAME,
    CatalogueEntry,
    FileCatalogue,
    file_checksum,
    find_catalogue,
    verify_file,
)

__all__ = [
    "EVENT_BRANCH",
    "NonFiniteCounts",
    "check_fraction",
    "count_nonfinite",
    "duplicate_detail",
    "duplicate_events",
    "forget_verified",
    "nonfinite_detail",
    "verify_files",
]

log = logging.getLogger(__name__)

RunKey = tuple[int, int]
#: The event number every work item reads, for the duplicate-event check.
EVENT_BRANCH = "EventMetaData_m_event"
#: Checksums kept in memory (one entry per file identity).
CACHE_SIZE = 100_000

_lock = threading.Lock()
_checksums: OrderedDict[tuple[str, int, int, int], str] = OrderedDict()
_catalogues: dict[str, tuple[tuple[int, int], FileCatalogue]] = {}
_announced: set[str] = set()


def forget_verified() -> None:
    """Forget the checksums computed, the catalogues read and the files said unverified in
    this process (the next event loop verifies its files again)."""
    with _lock:
        _checksums.clear()
        _catalogues.clear()
        _announced.clear()


def _identity(path: str) -> tuple[str, int, int, int]:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)


def _catalogue(folder: Path) -> FileCatalogue:
    """The catalogue of ``folder``, read again only when its file changed."""
    path = folder / CATALOGUE_NAME
    st = path.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    key = str(path)
    with _lock:
        cached = _catalogues.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    catalogue = FileCatalogue.load(folder)
    with _lock:
        _catalogues[key] = (stamp, catalogue)
    return catalogue


def _checksum(path: str) -> str:
    """The file's Adler-32, computed once per file identity in this process."""
    ident = _identity(path)
    with _lock:
        known = _checksums.get(ident)
        if known is not None:
            _checksums.move_to_end(ident)
            return known
    value = file_checksum(path)
    with _lock:
        _checksums[ident] = value
        while len(_checksums) > CACHE_SIZE:
            _checksums.popitem(last=False)
    return value


def _check(path: str, entry: CatalogueEntry, catalogue: str) -> SkippedFile | None:
    try:
        if os.stat(path).st_size == entry.size:
            verify_file(path, entry, catalogue, _checksum(path))
        else:
            verify_file(path, entry, catalogue)  # a size mismatch needs no checksum
    except FileFormatError as err:
        return SkippedFile(str(path), err.reason, str(err))
    except OSError as err:
        return SkippedFile(str(path), "unreadable", f"{path}: cannot read file ({err.strerror})")
    return None


def verify_files(
    paths: Sequence[str], threads: int | None = None
) -> tuple[list[SkippedFile], list[str]]:
    """Compare files with their catalogue entries (see :func:`b2calib.io.verify_file`).

    Returns the files whose size or checksum differs (reason ``checksum``) and the files no
    catalogue lists (read unverified: logged once per process). Checksums are computed in
    ``threads`` threads (default: one per core; Adler-32 and reading release the GIL).
    """
    folder_of: dict[str, Path | None] = {}
    todo: list[tuple[str, CatalogueEntry, str]] = []
    unverified: list[str] = []
    for path in paths:
        parent = os.path.dirname(os.path.abspath(path))
        if parent not in folder_of:
            folder_of[parent] = find_catalogue(path)
        folder = folder_of[parent]
        entry = None if folder is None else _catalogue(folder).entry(path)
        if entry is None or folder is None:
            unverified.append(str(path))
        else:
            todo.append((str(path), entry, str(folder / CATALOGUE_NAME)))
    n = min(len(todo), threads or os.cpu_count() or 1)
    if n > 1:
        with ThreadPoolExecutor(max_workers=n) as pool:
            results = list(pool.map(lambda t: _check(*t), todo))
    else:
        results = [_check(*t) for t in todo]
    _announce(unverified)
    return [r for r in results if r is not None], sorted(unverified)


def _announce(paths: Iterable[str]) -> None:
    """Say once per process which files are read without a checksum to compare with."""
    with _lock:
        new = sorted(set(paths) - _announced)
        _announced.update(new)
    if not new:
        return
    where = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in new])
    log.warning(
        "%d file%s below %s %s no entry in a file catalogue (%s): read without checksum "
        "verification",
        len(new),
        "" if len(new) == 1 else "s",
        where,
        "has" if len(new) == 1 else "have",
        CATALOGUE_NAME,
    )


# -- NaN and Inf -----------------------------------------------------------------------------------


def count_nonfinite(events: ak.Array, branches: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    """(NaN or Inf values, values) of every floating-point branch among ``branches`` (name ->
    type, as a collector declares them) in a chunk of events."""
    out = {}
    for name, spec in branches.items():
        if not spec.split("*")[-1].strip().startswith("float"):
            continue
        values = events[name]
        if spec.startswith("var"):
            values = ak.flatten(values)
        x = ak.to_numpy(values)
        out[name] = (int(x.size - np.count_nonzero(np.isfinite(x))), int(x.size))
    return out


class NonFiniteCounts(Mapping[RunKey, dict[str, tuple[int, int]]]):
    """NaN and Inf values per run and branch: ``counts[(exp, run)][branch] == (non-finite,
    values)``, for every floating-point branch a collector read. Mergeable with ``+``."""

    def __init__(self, counts: Mapping[RunKey, Mapping[str, tuple[int, int]]] | None = None):
        self._data: dict[RunKey, dict[str, tuple[int, int]]] = {}
        for key, per_branch in (counts or {}).items():
            self.add(key, per_branch)

    def __getitem__(self, key: RunKey) -> dict[str, tuple[int, int]]:
        return self._data[key]

    def __iter__(self) -> Iterator[RunKey]:
        return iter(sorted(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"NonFiniteCounts({self._data!r})"

    def add(self, key: RunKey, counts: Mapping[str, tuple[int, int]]) -> None:
        """Add the counts of one chunk (or run) of run ``key`` (in place)."""
        mine = self._data.setdefault((int(key[0]), int(key[1])), {})
        for branch, (bad, total) in counts.items():
            have = mine.get(branch, (0, 0))
            mine[branch] = (have[0] + int(bad), have[1] + int(total))

    def __add__(self, other: NonFiniteCounts) -> NonFiniteCounts:
        out = NonFiniteCounts(self._data)
        for key in other:
            out.add(key, other[key])
        return out

    def rows(self) -> list[tuple[int, int, str, int, int]]:
        """(exp, run, branch, non-finite, values) wherever a value was not finite, sorted."""
        return [
            (key[0], key[1], branch, bad, total)
            for key in self
            for branch, (bad, total) in sorted(self._data[key].items())
            if bad
        ]

    def over(self, key: RunKey, max_fraction: float) -> list[tuple[str, int, int]]:
        """The branches of run ``key`` with more than ``max_fraction`` of values not finite."""
        return [
            (branch, bad, total)
            for branch, (bad, total) in sorted(self._data.get(key, {}).items())
            if bad > max_fraction * total
        ]


def check_fraction(max_nonfinite: float) -> float:
    """``max_nonfinite`` if it is a fraction (0 to 1), else :class:`ConfigError`."""
    if not isinstance(max_nonfinite, int | float) or not 0.0 <= max_nonfinite <= 1.0:
        raise ConfigError(f"max_nonfinite must be a fraction from 0 to 1, not {max_nonfinite!r}")
    return float(max_nonfinite)


def nonfinite_detail(key: RunKey, over: Sequence[tuple[str, int, int]], limit: float) -> str:
    """The one-line explanation of too many NaN or Inf values in a run."""
    parts = [f"{b}: {bad} of {total} ({100.0 * bad / total:.2g} %)" for b, bad, total in over]
    return (
        f"run ({key[0]}, {key[1]}): values that are NaN or Inf in {'; '.join(parts)}, more than "
        f"the {100.0 * limit:g} % allowed (max_nonfinite; --max-nonfinite on the command line)"
    )


# -- duplicate events --------------------------------------------------------------------------


def duplicate_events(
    numbers: Sequence[tuple[str, npt.NDArray[np.integer]]],
) -> tuple[npt.NDArray[np.integer], list[str]]:
    """The event numbers that occur more than once among ``(path, event numbers)`` chunks of one
    run and skim, and the files holding them."""
    arrays = [a for _, a in numbers]
    if not arrays:
        return np.zeros(0, np.int64), []
    if _increasing_apart(arrays):
        return np.zeros(0, np.result_type(*arrays)), []
    ordered = np.sort(np.concatenate(arrays))
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if repeated.size == 0:
        return repeated, []
    involved = sorted({p for p, a in numbers if np.isin(a, repeated).any()})
    return repeated, involved


def _increasing_apart(arrays: Sequence[npt.NDArray[np.integer]]) -> bool:
    """Whether every chunk's numbers increase strictly and no two chunks' ranges overlap: then
    no number is repeated, which one comparison per event tells (a file's events are written
    in order; the sort that finds the repeated numbers otherwise took 14 ms of the caller's
    CPU for arich-channel-mask's 770k events, issue 20). False says nothing."""
    ranges = []
    for a in arrays:
        if a.size == 0:
            continue
        if a.size > 1 and not bool(np.all(a[1:] > a[:-1])):
            return False
        ranges.append((a[0], a[-1]))
    ranges.sort()
    return all(ranges[i][0] > ranges[i - 1][1] for i in range(1, len(ranges)))


def duplicate_detail(
    key: RunKey, skim: str, repeated: npt.NDArray[np.integer], involved: Sequence[str]
) -> str:
    """The one-line explanation of events found twice in a run."""
    shown = ", ".join(str(int(e)) for e in repeated[:5]) + (", ..." if repeated.size > 5 else "")
    how = "a second copy of a file" if len(involved) > 1 else "events written twice in a file"
    return (
        f"run ({key[0]}, {key[1]}) {skim}: {repeated.size} events are in the data more than once "
        f"(events {shown}): {how}; read one copy only"
    )


def __dir__() -> list[str]:
    return __all__
