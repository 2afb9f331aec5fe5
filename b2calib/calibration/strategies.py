"""IoV strategies: which runs each algorithm execution uses, and the IoV of its payloads.

The strategies of basf2's CAF:

* :class:`SingleIOV`: one execution over all runs, one payload valid for all of them;
* :class:`SimpleRunByRun`: one execution per run, a payload per run that has enough data;
* :class:`SequentialRunByRun`: runs in order, ``step_size`` at a time; on NOT_ENOUGH_DATA the
  next runs are added and the execution repeated; runs left over at the end are merged into the
  previous success; never across an experiment; IoVs are extended so that no gap remains
  between consecutive payloads;
* :class:`SequentialBoundaries`: one execution per segment of runs between given (exp, run)
  boundaries (or those the algorithm requests) and experiment changes; each payload starts at
  its boundary and ends before the next one. Unlike basf2's, a segment without enough data is
  never merged with a neighbour: its runs get no payload (see the class).

A strategy never looks at histograms: it calls ``execute(runs)`` and reads the status, so it is
tested on its own. A FAILURE stops the strategy at once.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from b2calib.calibration.algorithm import AlgorithmResult, AlgorithmStatus
from b2calib.conditions.iov import IoV, RunKey
from b2calib.exceptions import ConfigError

__all__ = [
    "Execution",
    "SequentialBoundaries",
    "SequentialRunByRun",
    "SimpleRunByRun",
    "SingleIOV",
    "Strategy",
]

Execute = Callable[[list[RunKey]], AlgorithmResult]
RequestBoundaries = Callable[[], Sequence[RunKey]]

_SUCCESS = (AlgorithmStatus.OK, AlgorithmStatus.ITERATE)


@dataclass
class Execution:
    """One final algorithm execution: its runs, result and, for a success, its payloads' IoV."""

    runs: list[RunKey]
    result: AlgorithmResult
    iov: IoV | None

    @property
    def ok(self) -> bool:
        """True when the execution produced payloads."""
        return self.result.status in _SUCCESS


class Strategy(abc.ABC):
    """Base class of IoV strategies."""

    @abc.abstractmethod
    def run(
        self, runs: Sequence[RunKey], execute: Execute, boundaries: RequestBoundaries
    ) -> list[Execution]:
        """Execute the algorithm over ``runs`` (sorted, distinct) and return the final
        executions: successes with their IoV, then any that could not succeed (IoV ``None``)."""

    def describe(self) -> dict[str, object]:
        """Name and settings (recorded in the payloads' provenance)."""
        return {"strategy": type(self).__name__, **vars(self)}


class SingleIOV(Strategy):
    """One execution over all runs; the payloads are valid from the first to the last run."""

    def run(
        self, runs: Sequence[RunKey], execute: Execute, boundaries: RequestBoundaries
    ) -> list[Execution]:
        runs = list(runs)
        result = execute(runs)
        ok = result.status in _SUCCESS
        return [Execution(runs, result, IoV(*runs[0], *runs[-1]) if ok else None)]


class SimpleRunByRun(Strategy):
    """One execution per run; a run without enough data gets no payload."""

    def run(
        self, runs: Sequence[RunKey], execute: Execute, boundaries: RequestBoundaries
    ) -> list[Execution]:
        out = []
        for r in runs:
            result = execute([r])
            out.append(Execution([r], result, IoV.run(*r) if result.status in _SUCCESS else None))
            if result.status is AlgorithmStatus.FAILURE:
                break
        return _successes_first(out)


def _by_experiment(runs: Sequence[RunKey]) -> list[list[RunKey]]:
    return [list(g) for _, g in itertools.groupby(sorted(runs), key=lambda r: r[0])]


def _sequential(
    chunks: list[list[RunKey]], starts: list[RunKey], execute: Execute
) -> tuple[list[Execution], bool]:
    """Execute chunks in order, merging forward on NOT_ENOUGH_DATA and leftovers backward.

    ``starts[i]`` is where chunk i's payload starts. Returns the executions (successes with
    their IoVs, then the one that failed or lacked data) and whether one failed; a FAILURE
    stops at once."""
    done: list[tuple[list[RunKey], RunKey, AlgorithmResult]] = []
    pending: list[RunKey] = []
    pending_start: RunKey = (0, 0)
    lacking: AlgorithmResult | None = None
    for chunk, start in zip(chunks, starts, strict=True):
        if not pending:
            pending_start = start
        pending = pending + chunk
        result = execute(pending)
        if result.status is AlgorithmStatus.FAILURE:
            return [*_with_iovs(done), Execution(pending, result, None)], True
        if result.status in _SUCCESS:
            done.append((pending, pending_start, result))
            pending = []
        else:
            lacking = result
    if pending and done:  # leftovers go into the previous success
        runs, start, _ = done[-1]
        merged = execute(runs + pending)
        if merged.status in _SUCCESS:
            done[-1] = (runs + pending, start, merged)
            return _with_iovs(done), False
        if merged.status is AlgorithmStatus.FAILURE:
            return [*_with_iovs(done), Execution(runs + pending, merged, None)], True
        # an algorithm wanting more data with more runs: the earlier success stands
    tail = [Execution(pending, lacking, None)] if pending and lacking is not None else []
    return [*_with_iovs(done), *tail], False


def _with_iovs(done: list[tuple[list[RunKey], RunKey, AlgorithmResult]]) -> list[Execution]:
    """Successes with IoVs from their start to the run before the next one's start."""
    out = []
    for i, (runs, start, result) in enumerate(done):
        if i + 1 < len(done):
            iov = IoV(*start).close_before(*done[i + 1][1])
        else:
            iov = IoV(*start, *runs[-1])
        out.append(Execution(runs, result, iov))
    return out


def _successes_first(executions: list[Execution]) -> list[Execution]:
    return [e for e in executions if e.ok] + [e for e in executions if not e.ok]


class SequentialRunByRun(Strategy):
    """Runs in order, ``step_size`` at a time, merging on NOT_ENOUGH_DATA (see module doc)."""

    def __init__(self, step_size: int = 1) -> None:
        if step_size < 1:
            raise ConfigError(f"SequentialRunByRun: step_size must be >= 1, not {step_size}")
        self.step_size = step_size

    def run(
        self, runs: Sequence[RunKey], execute: Execute, boundaries: RequestBoundaries
    ) -> list[Execution]:
        out: list[Execution] = []
        for exp_runs in _by_experiment(runs):
            chunks = [
                exp_runs[i : i + self.step_size] for i in range(0, len(exp_runs), self.step_size)
            ]
            executions, failed = _sequential(chunks, [c[0] for c in chunks], execute)
            out += executions
            if failed:
                break
        return _successes_first(out)


class SequentialBoundaries(Strategy):
    """One execution per segment: the runs from a boundary (or an experiment's first run) up to
    the next boundary or experiment change. Boundaries are ``boundaries`` when given, else
    those the algorithm requests (:meth:`~b2calib.calibration.Algorithm.boundaries`, asked
    once over all runs with data).

    A boundary is a run where the constants change (a hardware intervention, a step the
    algorithm found), so no payload and no execution spans one:

    * each payload's IoV starts at its segment's boundary (the experiment's first run for the
      first segment) and ends at the run before the next boundary, covering the runs of its
      segment absent from the input; the experiment's last payload ends at its last run;
    * a segment whose execution lacks data (NOT_ENOUGH_DATA) is not merged with the segment
      after it nor with the one before: its runs get no payload (they are reported), and the
      neighbours' IoVs stay within their own segments.

    basf2's ``SequentialBoundaries`` instead merges a segment without enough data with the next
    one (and the last with the previous success), dropping the boundary between them: the
    merged payload then averages constants that differ across that boundary. Where one payload
    over a boundary is wanted (a sample too small on either side), the boundary is not requested
    (for the ECL and TOP algorithms, ``find_boundaries`` false in the expert config).
    """

    def __init__(self, boundaries: Sequence[RunKey] | None = None) -> None:
        self.boundaries = (
            None if boundaries is None else sorted({(int(e), int(r)) for e, r in boundaries})
        )

    def run(
        self, runs: Sequence[RunKey], execute: Execute, boundaries: RequestBoundaries
    ) -> list[Execution]:
        marks = self.boundaries
        if marks is None:
            marks = sorted({(int(e), int(r)) for e, r in boundaries()})
        out: list[Execution] = []
        for exp_runs in _by_experiment(runs):
            failed = False
            for segment, start, end in _segments(exp_runs, marks):
                result = execute(segment)
                ok = result.status in _SUCCESS
                iov = None
                if ok:
                    iov = (
                        IoV(*start, *segment[-1]) if end is None else IoV(*start).close_before(*end)
                    )
                out.append(Execution(segment, result, iov))
                if result.status is AlgorithmStatus.FAILURE:
                    failed = True
                    break
            if failed:
                break
        return _successes_first(out)


def _segments(
    exp_runs: list[RunKey], marks: Sequence[RunKey]
) -> list[tuple[list[RunKey], RunKey, RunKey | None]]:
    """The runs of one experiment cut at the boundaries ``marks``: each segment's runs, where
    its payload starts (its boundary, or its first run for the first segment) and the boundary
    before which it ends (``None`` for the last segment)."""
    out: list[tuple[list[RunKey], RunKey, RunKey | None]] = []
    for r in exp_runs:
        if not out:
            out.append(([r], r, None))
            continue
        runs, start, _ = out[-1]
        crossed = [b for b in marks if runs[-1] < b <= r]
        if crossed:
            # the previous payload ends before the first boundary, the next starts at the last
            out[-1] = (runs, start, min(crossed))
            out.append(([r], max(crossed), None))
        else:
            runs.append(r)
    return out
