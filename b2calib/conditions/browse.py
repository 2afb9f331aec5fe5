"""What a conditions browser shows of a database: tags' sizes, a tag's IoVs as columns laid out
on a run axis, and the payloads a stack of tags offers for one run.

:class:`ConditionsDB` answers with these (:meth:`~ConditionsDB.tag_sizes`,
:meth:`~ConditionsDB.iov_table`, :meth:`~ConditionsDB.lookup_stack`); the functions here are
pure, so the database and the tests share them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from b2calib.conditions.iov import IoV, RunKey

__all__ = ["IovTable", "RunAxis", "StackEntry", "TagSize", "iov_table", "stack_entries"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
StrArray = npt.NDArray[np.str_]


@dataclass(frozen=True)
class TagSize:
    """How much a global tag holds.

    Attributes
    ----------
    payloads
        Distinct payload names.
    iovs
        IoVs (one payload revision valid for an interval each).
    revisions
        Distinct payload revisions.
    """

    payloads: int
    iovs: int
    revisions: int


@dataclass(frozen=True)
class RunAxis:
    """Runs of several experiments on one axis: the experiments side by side, in order.

    Run ``r`` of experiment ``e`` occupies ``[position(e, r), position(e, r) + 1)``; each
    experiment shows the runs from its lowest to its highest bound (``first``..``last``) and
    starts where the one before it ends.

    Attributes
    ----------
    experiments
        The experiments shown, ascending.
    first, last
        First and last run shown of each experiment.
    starts
        Axis position where each experiment starts (the experiment boundaries); the axis ends
        at :attr:`end`.
    """

    experiments: IntArray
    first: IntArray
    last: IntArray
    starts: FloatArray

    @property
    def end(self) -> float:
        """Where the axis ends (after the last run of the last experiment)."""
        if not len(self.experiments):
            return 0.0
        return float(self.starts[-1] + (self.last[-1] - self.first[-1] + 1))

    def exp_end(self, exp: int) -> float:
        """Where experiment ``exp``'s last run ends on the axis."""
        i = self._index(exp)
        return float(self.starts[i] + (self.last[i] - self.first[i] + 1))

    def _index(self, exp: int) -> int:
        i = int(np.searchsorted(self.experiments, exp))
        if i >= len(self.experiments) or self.experiments[i] != exp:
            shown = ", ".join(map(str, self.experiments.tolist())) or "none"
            raise KeyError(f"experiment {exp} is not on the run axis (experiments: {shown})")
        return i

    def position(self, exp: int, run: int) -> float:
        """Axis position of the start of run ``run`` of experiment ``exp`` (runs outside the
        experiment's shown range are clipped to it)."""
        i = self._index(exp)
        r = min(max(run, int(self.first[i])), int(self.last[i]) + 1)
        return float(self.starts[i] + (r - self.first[i]))

    @classmethod
    def of(cls, bounds: Iterable[RunKey]) -> RunAxis:
        """The axis showing every ``(exp, run)`` of ``bounds``."""
        lo: dict[int, int] = {}
        hi: dict[int, int] = {}
        for e, r in bounds:
            lo[e] = min(lo.get(e, r), r)
            hi[e] = max(hi.get(e, r), r)
        exps = np.array(sorted(lo), dtype=np.int64)
        first = np.array([lo[int(e)] for e in exps], dtype=np.int64)
        last = np.array([hi[int(e)] for e in exps], dtype=np.int64)
        widths = (last - first + 1).astype(np.float64)
        starts = np.concatenate([[0.0], np.cumsum(widths)[:-1]]) if len(exps) else widths
        return cls(exps, first, last, starts)


@dataclass(frozen=True)
class IovTable:
    """A global tag's IoVs as columns, one row per IoV, by payload name then start.

    A final run of -1 (to the end of the experiment) or a final experiment of -1 (open-ended)
    is kept as stored; :meth:`bars` resolves them on a :class:`RunAxis`.

    Attributes
    ----------
    tag
        The global tag.
    name, checksum
        Payload name and MD5 checksum of its file, per IoV.
    revision, first_exp, first_run, final_exp, final_run
        The payload revision and the IoV, per IoV.
    """

    tag: str
    name: StrArray
    revision: IntArray
    checksum: StrArray
    first_exp: IntArray
    first_run: IntArray
    final_exp: IntArray
    final_run: IntArray

    def __len__(self) -> int:
        return len(self.name)

    @property
    def names(self) -> tuple[str, ...]:
        """The payload names, sorted."""
        return tuple(sorted(set(self.name.tolist())))

    @property
    def iov_text(self) -> list[str]:
        """Each IoV as text, ``"16,1,16,7"``."""
        cols = (self.first_exp, self.first_run, self.final_exp, self.final_run)
        return [",".join(map(str, row)) for row in zip(*(c.tolist() for c in cols), strict=True)]

    @property
    def open_end(self) -> npt.NDArray[np.bool_]:
        """IoVs without an explicit last run (to the end of an experiment, or for ever)."""
        return (self.final_exp == -1) | (self.final_run == -1)

    def run_axis(self, runs: Iterable[RunKey] = ()) -> RunAxis:
        """The run axis showing every explicit bound of the IoVs and ``runs`` (e.g. the runs a
        user asks about): an open end adds nothing, so an IoV ``(16, 8, -1, -1)`` extends to
        the last run shown."""
        explicit = self.final_exp != -1
        bounds = [
            *zip(self.first_exp.tolist(), self.first_run.tolist(), strict=True),
            *zip(
                self.final_exp[explicit & (self.final_run != -1)].tolist(),
                self.final_run[explicit & (self.final_run != -1)].tolist(),
                strict=True,
            ),
            *((int(e), int(r)) for e, r in runs),
        ]
        # an experiment an IoV ends with (final run -1) is shown from its first run known
        ends = self.final_exp[explicit & (self.final_run == -1)].tolist()
        known = {e for e, _ in bounds}
        bounds += [(e, 0) for e in ends if e not in known]
        return RunAxis.of(bounds)

    def bars(self, axis: RunAxis | None = None) -> tuple[FloatArray, FloatArray]:
        """Start and end of each IoV on ``axis`` (default: :meth:`run_axis`), for drawing bars
        from the first to the last run; open ends end where the axis or their experiment
        does."""
        axis = self.run_axis() if axis is None else axis
        n = len(self)
        x0 = np.empty(n)
        x1 = np.empty(n)
        for i in range(n):
            x0[i] = axis.position(int(self.first_exp[i]), int(self.first_run[i]))
            fe, fr = int(self.final_exp[i]), int(self.final_run[i])
            if fe == -1:
                x1[i] = axis.end
            elif fr == -1:
                x1[i] = axis.exp_end(fe)
            else:
                x1[i] = axis.position(fe, fr) + 1.0
        return x0, x1


def iov_table(tag: str, rows: Sequence[tuple[str, int, str, IoV]]) -> IovTable:
    """An :class:`IovTable` from ``(name, revision, checksum, iov)`` rows (sorted here)."""
    ordered = sorted(rows, key=lambda r: (r[0], r[3].start))
    n = len(ordered)

    def ints(values: Iterable[int]) -> IntArray:
        return np.fromiter(values, dtype=np.int64, count=n)

    return IovTable(
        tag=tag,
        name=np.array([r[0] for r in ordered], dtype=np.str_),
        revision=ints(r[1] for r in ordered),
        checksum=np.array([r[2] for r in ordered], dtype=np.str_),
        first_exp=ints(r[3].first_exp for r in ordered),
        first_run=ints(r[3].first_run for r in ordered),
        final_exp=ints(r[3].final_exp for r in ordered),
        final_run=ints(r[3].final_run for r in ordered),
    )


@dataclass(frozen=True)
class StackEntry:
    """What one tag of a stack holds for a payload name at a run.

    Attributes
    ----------
    globaltag
        The tag.
    priority
        Its place in the stack (0 = highest).
    name, revision, checksum, iov
        The payload revision valid at the run in that tag and its IoV.
    applies
        Whether this is the revision the stack gives (the highest-priority tag holding the
        name); the others are shadowed by it.
    """

    globaltag: str
    priority: int
    name: str
    revision: int
    checksum: str
    iov: IoV
    applies: bool


def stack_entries(
    run: RunKey, layers: Sequence[tuple[str, Iterable[tuple[str, int, str, IoV]]]]
) -> dict[str, list[StackEntry]]:
    """For each payload name valid at ``run`` in any tag of ``layers`` (``(tag, rows)`` in
    priority order, rows ``(name, revision, checksum, iov)``), the tags' entries in priority
    order; the first applies. Names sorted."""
    out: dict[str, list[StackEntry]] = {}
    for priority, (tag, rows) in enumerate(layers):
        for name, revision, checksum, iov in rows:
            if not iov.contains(*run):
                continue
            entries = out.setdefault(name, [])
            if any(e.globaltag == tag for e in entries):
                continue  # a tag holds at most one IoV of a name per run; a tag given twice
            entries.append(StackEntry(tag, priority, name, revision, checksum, iov, not entries))
    return dict(sorted(out.items()))


def __dir__() -> list[str]:
    return __all__
