"""Time atoms of the beam calibrations' collector output, and steps found in them.

* :func:`atom_table`: the atoms of each run (global atom index, first and last event time to
  10 s, selected events) from the collectors' ``atom_time`` histogram, in time order, with the
  position of each atom in the per-atom axes of the other histograms.
* :func:`find_steps`: where a quantity measured per atom jumps. The interval losses of Belle
  II's beam calibrations look only at durations, gaps and event counts, never at the data, so
  a sudden change of the beam (a documented step in a run) would be averaged over by the
  sub-interval around it. Binary segmentation finds such steps: for a segment of atoms, the
  split maximising ``chi2 = sum_k n_L n_R / (n_L + n_R) (mean_L - mean_R)^2 / var_k`` (``var_k``
  the per-event variance of component ``k`` in the segment, the means per event), accepted
  when ``chi2 > threshold`` and both sides hold ``min_events``; repeated on both sides. The
  calibrations then cut their sub-intervals at the steps found, so that the step falls on an
  interval boundary (to one atom).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hist
import numpy as np
import numpy.typing as npt

from b2calib.calibration import AlgorithmInput, AlgorithmResult, AlgorithmStatus
from b2calib.conditions import Payload
from b2calib.conditions.iov import RunKey
from b2calib.detectors.beam.collectors import ATOM_SECONDS, ATOM_SLICES

__all__ = [
    "AtomTable",
    "BeamIntervals",
    "atom_table",
    "beam_intervals",
    "cut_at",
    "find_steps",
    "outer_boundaries",
    "per_atom",
    "time_payload",
]

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class AtomTable:
    """Atoms of several runs in time order.

    Attributes
    ----------
    runs
        The run of each atom.
    index
        The global atom index (``floor(t / 360 s)``).
    t_start, t_end
        First and last selected event time of the atom (UNIX s, to 10 s).
    n_events
        Selected events.
    """

    runs: tuple[RunKey, ...]
    index: I64
    t_start: F
    t_end: F
    n_events: F

    def __len__(self) -> int:
        return len(self.index)


def atom_table(per_run: dict[RunKey, hist.Hist]) -> AtomTable:
    """The atoms of the runs' ``atom_time`` histograms (atom x slice counts), in time order;
    atoms without events are left out."""
    runs: list[RunKey] = []
    index: list[int] = []
    t0: list[float] = []
    t1: list[float] = []
    n: list[float] = []
    for run in sorted(per_run):
        h = per_run[run]
        cats = np.asarray(list(h.axes[0]), dtype=np.int64)
        v = np.asarray(h.values(), dtype=np.float64).reshape(len(cats), ATOM_SLICES)
        for a in np.argsort(cats):
            nz = np.flatnonzero(v[a] > 0)
            if not len(nz):
                continue
            base = float(cats[a]) * ATOM_SECONDS
            runs.append(run)
            index.append(int(cats[a]))
            t0.append(base + nz[0] * ATOM_SECONDS / ATOM_SLICES)
            t1.append(base + (nz[-1] + 1) * ATOM_SECONDS / ATOM_SLICES)
            n.append(float(v[a].sum()))
    order = np.lexsort((np.asarray(index), np.asarray(t0)))
    return AtomTable(
        tuple(runs[i] for i in order),
        np.asarray(index, dtype=np.int64)[order],
        np.asarray(t0)[order],
        np.asarray(t1)[order],
        np.asarray(n)[order],
    )


def find_steps(
    n: npt.ArrayLike,
    sums: npt.ArrayLike,
    sums2: npt.ArrayLike,
    *,
    threshold: float = 30.0,
    min_events: float = 50.0,
    max_steps: int = 8,
) -> list[int]:
    """Positions ``j`` (sorted) where a new segment starts: atom ``j`` is the first after a
    step (see the module).

    Parameters
    ----------
    n
        Events per atom, ``(atoms,)``.
    sums, sums2
        Per atom the sums of each component and of its square, ``(atoms, k)``.
    threshold
        The chi2 a split must exceed (a scan over the split positions: well above the 1-dof
        5-sigma 25).
    min_events
        Events needed on both sides of a step.
    max_steps
        At most this many steps.
    """
    nn = np.asarray(n, dtype=np.float64)
    s1 = np.asarray(sums, dtype=np.float64).reshape(len(nn), -1)
    s2 = np.asarray(sums2, dtype=np.float64).reshape(len(nn), -1)
    found: list[int] = []

    def best(lo: int, hi: int) -> tuple[float, int]:
        if hi - lo < 2:
            return 0.0, -1
        cn = np.cumsum(nn[lo:hi])
        c1 = np.cumsum(s1[lo:hi], axis=0)
        c2 = np.cumsum(s2[lo:hi], axis=0)
        tot_n, tot1, tot2 = cn[-1], c1[-1], c2[-1]
        if tot_n < 2 * min_events:
            return 0.0, -1
        var = tot2 / tot_n - (tot1 / tot_n) ** 2
        var = np.where(var > 0, var, np.inf)
        nl, nr = cn[:-1], tot_n - cn[:-1]
        ok = (nl >= min_events) & (nr >= min_events)
        if not ok.any():
            return 0.0, -1
        with np.errstate(divide="ignore", invalid="ignore"):
            ml = c1[:-1] / nl[:, None]
            mr = (tot1 - c1[:-1]) / nr[:, None]
            chi2 = np.sum((ml - mr) ** 2 / var, axis=1) * nl * nr / tot_n
        chi2 = np.where(ok & np.isfinite(chi2), chi2, 0.0)
        j = int(np.argmax(chi2))
        return float(chi2[j]), lo + j + 1

    segments = [(0, len(nn))]
    while segments and len(found) < max_steps:
        lo, hi = segments.pop()
        chi2, j = best(lo, hi)
        if j > 0 and chi2 > threshold:
            found.append(j)
            segments += [(lo, j), (j, hi)]
    return sorted(found)


def cut_at(bounds: Sequence[tuple[int, int]], steps: Sequence[int]) -> list[tuple[int, int]]:
    """Sub-intervals ``[start, stop)`` of atom positions cut further at ``steps``."""
    out: list[tuple[int, int]] = []
    for lo, hi in bounds:
        cuts = [s for s in steps if lo < s < hi]
        edges = [lo, *cuts, hi]
        out += list(itertools.pairwise(edges))
    return out


def _partition(atoms: AtomTable, config: Mapping[str, Any]) -> list[list[tuple[int, int]]]:
    """Outer intervals (whole runs), each a list of inner sub-intervals ``[lo, hi)`` of atom
    positions. PLACEHOLDER until b2calib.calibration.intervals lands: one outer interval per
    run, sub-intervals of at most 8 h."""
    out: list[list[tuple[int, int]]] = []
    i = 0
    while i < len(atoms):
        j = i
        while j < len(atoms) and atoms.runs[j] == atoms.runs[i]:
            j += 1
        subs = []
        lo = i
        for k in range(i, j + 1):
            if k == j or atoms.t_end[k] - atoms.t_start[lo] > 8 * 3600:
                subs.append((lo, k if k > lo else k + 1))
                lo = k
        out.append([(a, b) for a, b in subs if b > a])
        i = j
    return out


@dataclass(frozen=True)
class BeamIntervals:
    """The atoms of an execution and their inner sub-intervals ``[lo, hi)`` (atom positions,
    in time order)."""

    atoms: AtomTable
    inner: tuple[tuple[int, int], ...]
    min_sub_events: float

    @property
    def t_start(self) -> F:
        """Atom start times (UNIX s)."""
        return self.atoms.t_start

    @property
    def t_end(self) -> F:
        """Atom end times (UNIX s)."""
        return self.atoms.t_end

    def find_steps(
        self, n: npt.ArrayLike, sums: npt.ArrayLike, sums2: npt.ArrayLike, *, threshold: float
    ) -> list[int]:
        """:func:`find_steps` over the execution's atoms in time order (across runs), at least
        ``min_sub_events`` on each side."""
        return find_steps(n, sums, sums2, threshold=threshold, min_events=self.min_sub_events)

    def subintervals(self, steps: Sequence[int] = ()) -> list[tuple[int, int]]:
        """The inner sub-intervals cut at ``steps``; a piece a cut leaves with fewer than
        ``min_sub_events`` events joins its neighbour on its own side of the step."""
        pieces = cut_at(self.inner, steps)
        n = self.atoms.n_events
        stepset = set(steps)
        merged: list[tuple[int, int]] = []
        for lo, hi in pieces:
            if merged and lo not in stepset:
                prev = n[merged[-1][0] : merged[-1][1]].sum()
                if min(prev, n[lo:hi].sum()) < self.min_sub_events:
                    merged[-1] = (merged[-1][0], hi)
                    continue
            merged.append((lo, hi))
        return merged

    def fallback(self, ok: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """For each sub-interval, itself when ``ok``, else the nearest good one (ties: the
        earlier)."""
        good = np.flatnonzero(np.asarray(ok, dtype=bool))
        idx = np.arange(len(np.asarray(ok)))
        d = np.abs(idx[:, None] - good[None, :])
        return np.asarray(good[np.argmin(d, axis=1)], dtype=np.int64)


def _atoms_of(data: AlgorithmInput, hist_name: str, runs: Sequence[RunKey]) -> AtomTable:
    return atom_table({r: data.per_run[r][hist_name] for r in runs if hist_name in data.per_run[r]})


def beam_intervals(
    data: AlgorithmInput, hist_name: str, config: Mapping[str, Any]
) -> BeamIntervals | AlgorithmResult:
    """The sub-intervals of ``data``'s runs (the atoms of histogram ``hist_name``), or a
    NOT_ENOUGH_DATA result when there are fewer than ``config["min_events"]`` events."""
    atoms = _atoms_of(data, hist_name, data.runs)
    total = float(atoms.n_events.sum())
    if total < float(config["min_events"]):
        return AlgorithmResult(
            AlgorithmStatus.NOT_ENOUGH_DATA,
            message=f"{total:.0f} selected dimuons, at least {config['min_events']} needed",
        )
    inner = tuple(s for outer in _partition(atoms, config) for s in outer)
    return BeamIntervals(atoms, inner, float(config["min_sub_events"]))


def outer_boundaries(
    data: AlgorithmInput,
    hist_name: str,
    config: Mapping[str, Any],
    kind: Callable[[RunKey], object] | None = None,
) -> list[RunKey]:
    """The runs where a new payload starts: the first run of each outer interval but the
    first, and every run whose ``kind`` differs from the run before (e.g. its beam energy)."""
    atoms = _atoms_of(data, hist_name, data.runs)
    marks: set[RunKey] = set()
    if len(atoms):
        for outer in _partition(atoms, config)[1:]:
            marks.add(atoms.runs[outer[0][0]])
    if kind is not None:
        runs = sorted(data.runs)
        marks |= {b for a, b in itertools.pairwise(runs) if kind(a) != kind(b)}
    return sorted(marks)


def per_atom(data: AlgorithmInput, hist_name: str, iv: BeamIntervals) -> F:
    """The values of histogram ``hist_name`` (atom first axis) for each atom of ``iv``, in
    order: ``(atoms, ...)``; zeros for an atom the histogram lacks."""
    cache: dict[RunKey, tuple[dict[int, int], F]] = {}
    rows = []
    shape: tuple[int, ...] | None = None
    for run, a in zip(iv.atoms.runs, iv.atoms.index, strict=True):
        if run not in cache:
            h = data.per_run[run][hist_name]
            cats = {int(c): i for i, c in enumerate(h.axes[0])}
            cache[run] = (cats, np.asarray(h.values(), dtype=np.float64))
        cats, v = cache[run]
        shape = v.shape[1:]
        rows.append(v[cats[int(a)]] if int(a) in cats else None)
    if shape is None:
        return np.zeros((0,))
    return np.stack([np.zeros(shape) if r is None else r for r in rows])


def time_payload(
    name: str,
    iv: BeamIntervals,
    subs: Sequence[tuple[int, int]],
    values: Mapping[str, npt.ArrayLike],
    errors: Mapping[str, npt.ArrayLike],
    status: npt.ArrayLike,
    *,
    units: Mapping[str, str],
    description: str,
    **metadata: Any,
) -> Payload:
    """A time-dependent payload: one row per sub-interval with ``t_start``, ``t_end`` (UNIX
    ns, the sub-interval's first and last event to 10 s)."""
    t0 = np.array([iv.t_start[lo] for lo, _ in subs])
    t1 = np.array([iv.t_end[hi - 1] for _, hi in subs])
    return Payload(
        name,
        keys={
            "t_start": np.round(t0 * 1e9).astype(np.int64),
            "t_end": np.round(t1 * 1e9).astype(np.int64),
        },
        values={k: np.asarray(v, dtype=np.float64) for k, v in values.items()},
        errors={k: np.asarray(v, dtype=np.float64) for k, v in errors.items()},
        status=np.asarray(status, dtype=np.int8),
        metadata={
            "event_dependency": "time",
            "units": dict(units),
            "description": description,
            **metadata,
        },
    )


def __dir__() -> list[str]:
    return __all__
