"""Global-tag algebra on lists of IoVs: priority layering, lookup of many runs, diff.

Pure functions over ``(IoV, payload)`` pairs, so the database, the local-database export and the
tests share one implementation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from b2calib.conditions.iov import IoV, RunKey, uncovered

__all__ = ["Diff", "IovColumns", "diff", "layer", "resolve", "resolve_columns", "run_keys"]

T = TypeVar("T", bound=Hashable)

_RUN_BITS = 32
_RUN_MASK = (1 << _RUN_BITS) - 1
_INF = np.iinfo(np.int64).max

IntArray = npt.NDArray[np.int64]


def layer(tags: Sequence[Iterable[tuple[str, IoV, T]]]) -> list[tuple[str, IoV, T]]:
    """Combine tags in priority order (first = highest): a lower tag only fills the runs the
    higher ones leave without a payload of that name. Returns non-overlapping
    ``(name, iov, payload)`` triples sorted by name and start."""
    taken: dict[str, list[IoV]] = defaultdict(list)
    out: list[tuple[str, IoV, T]] = []
    for entries in tags:
        added: dict[str, list[IoV]] = defaultdict(list)
        for name, iov, payload in entries:
            for piece in uncovered(iov, taken[name]):
                out.append((name, piece, payload))
                added[name].append(piece)
        for name, pieces in added.items():
            taken[name] += pieces
    return sorted(out, key=lambda e: (e[0], e[1].start))


def _encode_start(iov: IoV) -> int:
    return (iov.first_exp << _RUN_BITS) | iov.first_run


def _encode_end(iov: IoV) -> int:
    if iov.final_exp == -1:
        return int(_INF)
    return (iov.final_exp << _RUN_BITS) | (_RUN_MASK if iov.final_run == -1 else iov.final_run)


def resolve(
    runs: Sequence[RunKey], tags: Sequence[Iterable[tuple[str, IoV, T]]]
) -> dict[RunKey, dict[str, T]]:
    """For every run, the payload of each name from the highest-priority tag that has one.

    Vectorised over runs (a sorted search per tag and payload name), so thousands of runs cost
    about as much as one.
    """
    keys = np.array([(e << _RUN_BITS) | r for e, r in runs], dtype=np.int64)
    result: dict[RunKey, dict[str, T]] = {r: {} for r in runs}
    chosen: dict[str, np.ndarray] = {}
    for entries in tags:
        by_name: dict[str, list[tuple[IoV, T]]] = defaultdict(list)
        for name, iov, payload in entries:
            by_name[name].append((iov, payload))
        for name, items in by_name.items():
            items.sort(key=lambda it: it[0].start)
            starts = np.array([_encode_start(iov) for iov, _ in items], dtype=np.int64)
            ends = np.array([_encode_end(iov) for iov, _ in items], dtype=np.int64)
            idx = np.searchsorted(starts, keys, side="right") - 1
            ok = idx >= 0
            ok[ok] = ends[idx[ok]] >= keys[ok]
            free = chosen.setdefault(name, np.zeros(len(keys), dtype=bool))
            new = ok & ~free
            for i in np.flatnonzero(new).tolist():
                result[runs[i]][name] = items[int(idx[i])][1]
            free |= new
    return result


def run_keys(runs: IntArray | Sequence[RunKey]) -> IntArray:
    """Runs (``(exp, run)`` pairs, or an array of them as rows) as ordering keys
    (``exp << 32 | run``), the keys :class:`IovColumns` searches."""
    pairs = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
    return (pairs[:, 0] << _RUN_BITS) | pairs[:, 1]


@dataclass(frozen=True, eq=False)
class IovColumns:
    """One tag's IoVs as sorted columns, for looking many runs up at once.

    Built by :meth:`of` from the IoVs' bounds and their payload names' codes; rows are sorted by
    name, then start (ties keep the order given), so the IoVs of ``names[i]`` are the rows
    ``offsets[i]:offsets[i + 1]``.

    Attributes
    ----------
    names
        The payload names, sorted.
    offsets
        Where each name's rows begin, and the number of rows at the end.
    order
        For each row, its index in the IoVs given to :meth:`of`.
    start, end
        Each row's first and last run as ordering keys (:func:`run_keys`; an open end is the
        largest int64).
    """

    names: tuple[str, ...]
    offsets: IntArray
    order: IntArray
    start: IntArray
    end: IntArray

    @classmethod
    def of(
        cls,
        names: Sequence[str],
        code: IntArray,
        first_exp: IntArray,
        first_run: IntArray,
        final_exp: IntArray,
        final_run: IntArray,
    ) -> IovColumns:
        """The columns of IoVs given by their bounds (as stored: -1 for open ends) and the
        index ``code`` of their payload name in ``names`` (sorted)."""
        start = (first_exp << _RUN_BITS) | first_run
        last = np.where(final_run == -1, _RUN_MASK, final_run)
        end = np.where(final_exp == -1, _INF, (final_exp << _RUN_BITS) | last)
        order = np.lexsort((start, code))
        offsets = np.searchsorted(code[order], np.arange(len(names) + 1)).astype(np.int64)
        return cls(tuple(names), offsets, order.astype(np.int64), start[order], end[order])

    @cached_property
    def _spans(self) -> dict[str, tuple[int, int]]:
        bounds = self.offsets.tolist()
        return {n: (bounds[i], bounds[i + 1]) for i, n in enumerate(self.names)}

    def holds(self, name: str) -> bool:
        """Whether the tag has an IoV of payload ``name``."""
        return name in self._spans

    def find(self, name: str, keys: IntArray) -> IntArray:
        """For each run key, the row of the IoV of ``name`` holding it (the one starting
        last at or before it), or -1."""
        span = self._spans.get(name)
        if span is None:
            return np.full(len(keys), -1, dtype=np.int64)
        lo, hi = span
        idx = np.searchsorted(self.start[lo:hi], keys, side="right") - 1
        ok = (idx >= 0) & (self.end[lo:hi][np.maximum(idx, 0)] >= keys)
        return np.where(ok, idx + lo, -1)


def resolve_columns(
    keys: IntArray, tags: Sequence[IovColumns], names: Sequence[str]
) -> tuple[IntArray, IntArray]:
    """:func:`resolve` on columns: for every name (rows) and run key (columns), the index of
    the highest-priority tag holding an IoV of the name that contains the run and that IoV's
    row in the tag's columns; both -1 where no tag has one.

    Vectorised over runs: one sorted search per tag and name, of the runs no higher tag
    answered.
    """
    layer = np.full((len(names), len(keys)), -1, dtype=np.int64)
    row = np.full((len(names), len(keys)), -1, dtype=np.int64)
    everything = np.arange(len(keys))
    for j, name in enumerate(names):
        todo, left = everything, keys
        for i, columns in enumerate(tags):
            if not columns.holds(name):
                continue
            found = columns.find(name, left)
            ok = found >= 0
            layer[j, todo[ok]] = i
            row[j, todo[ok]] = found[ok]
            if ok.all():
                break
            todo, left = todo[~ok], left[~ok]
    return layer, row


@dataclass
class Diff(Generic[T]):
    """Differences from tag A to tag B.

    ``added`` and ``removed`` hold ``(name, iov, payload)``; ``changed`` holds pairs (A, B) of
    entries of the same payload name starting at the same run whose payload or end differ.
    """

    added: list[tuple[str, IoV, T]] = field(default_factory=list)
    removed: list[tuple[str, IoV, T]] = field(default_factory=list)
    changed: list[tuple[tuple[str, IoV, T], tuple[str, IoV, T]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def diff(a: Iterable[tuple[str, IoV, T]], b: Iterable[tuple[str, IoV, T]]) -> Diff[T]:
    """What changed from ``a`` to ``b``."""
    in_a = {(n, iov.start): (n, iov, p) for n, iov, p in a}
    in_b = {(n, iov.start): (n, iov, p) for n, iov, p in b}
    out: Diff[T] = Diff()
    for key in sorted(in_a.keys() | in_b.keys()):
        ea, eb = in_a.get(key), in_b.get(key)
        if ea is None and eb is not None:
            out.added.append(eb)
        elif eb is None and ea is not None:
            out.removed.append(ea)
        elif ea is not None and eb is not None and ea != eb:
            out.changed.append((ea, eb))
    return out
