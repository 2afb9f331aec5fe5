"""What the detectors' calibration algorithms share: the input guard, the payload-boundary search
and the per-channel payload.

Input guard
    An algorithm decorates its :meth:`~b2calib.calibration.Algorithm.run` with :func:`guarded`
    and takes its histograms with :func:`require`, which raises :class:`NotEnoughData` when one
    is missing or the first holds fewer than a minimum of entries; :func:`guarded` turns that
    (and any :class:`NotEnoughData` the algorithm raises later, with its diagnostics) into the
    NOT_ENOUGH_DATA result.

Payload boundaries
    :func:`find_steps` is the one search for the runs where a new payload must start (for
    :meth:`~b2calib.calibration.Algorithm.boundaries`): binary segmentation of the run sequence
    with the detector's own test of a split (:data:`SplitTest`).
    :func:`weighted_mean_split` is the test of per-group values with errors (e.g. the mean
    energy ratio of each ECL crate per run): a step when, for some group, the weighted means
    before and after differ by more than a minimum and a number of standard deviations.

Per-channel payloads
    :func:`channel_payload`: a value, its error and a :class:`~b2calib.conditions.ChannelStatus`
    per channel, with units and a description; :func:`status_counts` summarises the statuses.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import hist
import numpy as np
import numpy.typing as npt

from b2calib.calibration.algorithm import (
    Algorithm,
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Diagnostics,
)
from b2calib.conditions.iov import RunKey
from b2calib.conditions.payload import ChannelStatus, Payload
from b2calib.exceptions import CalibrationError

__all__ = [
    "NotEnoughData",
    "SplitTest",
    "binomial_interval",
    "channel_payload",
    "find_steps",
    "guarded",
    "require",
    "status_counts",
    "weighted_mean_split",
]

F = npt.NDArray[np.float64]
A = TypeVar("A", bound=Algorithm)
Run = Callable[[A, AlgorithmInput], AlgorithmResult]

#: ``split(lo, k, hi) -> (score, accepted)``: the test of a new payload starting at run ``k``
#: for the runs ``lo .. hi - 1`` (indices into the run sequence); the higher the score the
#: clearer the step.
SplitTest = Callable[[int, int, int], tuple[float, bool]]


# ------------------------------------------------------------------------------ input guard
class NotEnoughData(CalibrationError):
    """The input of an algorithm execution cannot give a result: the NOT_ENOUGH_DATA status.

    Raised inside a :func:`guarded` ``run`` (by :func:`require` or by the algorithm), which
    returns it as the result, with ``diagnostics`` when given.
    """

    def __init__(self, message: str, diagnostics: Diagnostics | None = None) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics


def guarded(run: Run[A]) -> Run[A]:
    """Decorator of :meth:`Algorithm.run <b2calib.calibration.Algorithm.run>`: a
    :class:`NotEnoughData` raised inside becomes the NOT_ENOUGH_DATA result (its message and
    diagnostics)."""

    @functools.wraps(run)
    def checked(self: A, data: AlgorithmInput) -> AlgorithmResult:
        try:
            return run(self, data)
        except NotEnoughData as short:
            return AlgorithmResult(
                AlgorithmStatus.NOT_ENOUGH_DATA,
                diagnostics=Diagnostics() if short.diagnostics is None else short.diagnostics,
                message=str(short),
            )

    return checked


def _entries(h: hist.Hist) -> float:
    """Entries of a histogram: the counts of a ``Mean`` storage, else the sum of its values."""
    if h.storage_type is hist.storage.Mean:
        view: Any = h.view()
        return float(np.sum(view["count"]))
    return float(np.sum(h.values()))


def require(
    data: AlgorithmInput,
    *names: str,
    min_entries: float = 0,
    counted: str = "entries",
    message: str | None = None,
) -> tuple[hist.Hist, ...]:
    """The histograms ``names`` of an execution's input (merged over its runs).

    Raises
    ------
    NotEnoughData
        When one is missing, or the first has fewer than ``min_entries`` entries (counts of a
        ``Mean`` storage); its message is ``message``, by default
        ``"{entries} {counted} < {min_entries}"``.
    """
    found = [data.histograms.get(name) for name in names]
    first = found[0]
    n = 0.0 if first is None or min_entries <= 0 else _entries(first)
    present = [h for h in found if h is not None]
    if len(present) < len(names) or n < min_entries:
        raise NotEnoughData(message or f"{int(n)} {counted} < {min_entries}")
    return tuple(present)


# -------------------------------------------------------------------------- step search
def find_steps(
    runs: Sequence[RunKey],
    split: SplitTest,
    *,
    start: Callable[[int], int] | None = None,
) -> list[RunKey]:
    """Runs where a new payload must start, by binary segmentation of ``runs``.

    For the runs ``lo .. hi - 1`` (at first all of them), every split ``k`` between them is
    tested (``split(lo, k, hi)``); the split of the highest score (the first of equal ones) is
    kept when the test accepts it, and both sides are searched again. The payload starts at run
    ``start(k)`` (default ``k``: the detector may place it earlier, e.g. on runs too short to
    tell before the step). A test that looks only at run ``k`` and its neighbours, whatever
    ``lo`` and ``hi``, makes the search return every run it accepts. A test with a ``scan(lo,
    hi)`` method (e.g. :func:`weighted_mean_split`'s) gives the scores and acceptances of every
    split ``lo + 1 .. hi - 1`` at once, the same as ``split`` one by one.

    Returns the starting runs, sorted, each once.
    """
    found: set[RunKey] = set()

    scan: Callable[[int, int], tuple[F, npt.NDArray[np.bool_]]] | None
    scan = getattr(split, "scan", None)

    def search(lo: int, hi: int) -> None:
        if hi - lo < 2:
            return
        if scan is not None:  # every split at once (the same scores)
            values, accepted = scan(lo, hi)
            best = int(np.argmax(values))
            if not accepted[best]:
                return
        else:
            scores = [split(lo, k, hi) for k in range(lo + 1, hi)]
            best = int(np.argmax([score for score, _ in scores]))
            if not scores[best][1]:
                return
        k = lo + 1 + best
        found.add(runs[k if start is None else start(k)])
        search(lo, k)
        search(k, hi)

    search(0, len(runs))
    return sorted(found)


def weighted_mean_split(
    values: npt.ArrayLike,
    errors: npt.ArrayLike,
    *,
    min_step: float,
    min_significance: float,
) -> SplitTest:
    """The split test of per-run, per-group values with errors, for :func:`find_steps`.

    ``values`` and ``errors`` are (runs, groups), e.g. the mean energy ratio of each crate per
    run; values with a non-finite or non-positive error do not count. A split before run ``k``
    is accepted when, for some group, the inverse-variance weighted means of the runs before
    and after it differ by more than ``min_step`` and by more than ``min_significance``
    standard deviations; its score is the largest such significance.

    The test has a ``scan(lo, hi)`` method that :func:`find_steps` uses: every split of the
    runs ``lo .. hi - 1`` at once, bit for bit the scores of the one-by-one test.
    """
    return _WeightedMeanSplit(values, errors, min_step, min_significance)


class _WeightedMeanSplit:
    """:func:`weighted_mean_split`'s test: called as ``split(lo, k, hi)``, or ``scan(lo, hi)``
    for every ``k`` at once."""

    def __init__(
        self, values: npt.ArrayLike, errors: npt.ArrayLike, min_step: float, min_significance: float
    ) -> None:
        self.v = np.asarray(values, dtype=np.float64)
        self.err = np.asarray(errors, dtype=np.float64)
        self.min_step = min_step
        self.min_significance = min_significance
        # the weights and weighted values, element by element as mean() computes them
        good = np.isfinite(self.err) & (self.err > 0)
        self.w = np.where(good, 1.0 / np.where(good, self.err, 1.0) ** 2, 0.0)
        self.wv = self.w * np.nan_to_num(self.v)

    def mean(self, sl: slice) -> tuple[F, F]:
        e = self.err[sl]
        good = np.isfinite(e) & (e > 0)
        w = np.where(good, 1.0 / np.where(good, e, 1.0) ** 2, 0.0)
        sw = w.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.where(sw > 0, (w * np.nan_to_num(self.v[sl])).sum(axis=0) / sw, np.nan)
            e = np.where(sw > 0, 1.0 / np.sqrt(sw), np.nan)
        return m, e

    def __call__(self, lo: int, k: int, hi: int) -> tuple[float, bool]:
        m1, e1 = self.mean(slice(lo, k))
        m2, e2 = self.mean(slice(k, hi))
        diff = np.abs(m2 - m1)
        with np.errstate(invalid="ignore"):
            z = diff / np.hypot(e1, e2)
        ok = np.isfinite(z) & (diff > self.min_step) & (z > self.min_significance)
        if not ok.any():
            return -math.inf, False
        score = float(z[ok].max())
        return score, score > 0.0

    def scan(self, lo: int, hi: int) -> tuple[F, npt.NDArray[np.bool_]]:
        """The scores and acceptances of the splits ``k = lo + 1 .. hi - 1``.

        numpy sums a ``(runs, groups)`` block over its runs one run after the other when there
        are two groups or more: the sums from ``lo`` are then its running sums, and those to
        ``hi`` are added up in the same order here, so the scores are bit for bit those of
        ``split(lo, k, hi)``. With one group numpy sums a column pairwise: each side of each
        split is then summed alone, as one column (4 sums a split instead of the ~30 numpy
        calls of the test).
        """
        if self.w.ndim != 2:
            scores = [self(lo, k, hi) for k in range(lo + 1, hi)]
            return (
                np.array([s for s, _ in scores], dtype=np.float64),
                np.array([a for _, a in scores], dtype=bool),
            )
        w, wv = self.w[lo:hi], self.wv[lo:hi]
        n = hi - lo
        if w.shape[1] == 1:
            wc, wvc = w[:, 0].copy(), wv[:, 0].copy()
            sums = [(wc[:i].sum(), wvc[:i].sum(), wc[i:].sum(), wvc[i:].sum()) for i in range(1, n)]
            table = np.array(sums, dtype=np.float64).reshape(n - 1, 4)
            sw1, s1, sw2, s2 = table.T[:, :, None]
        else:
            sw1 = np.cumsum(w[:-1], axis=0)  # row i: runs lo .. lo + i, before k = lo + 1 + i
            s1 = np.cumsum(wv[:-1], axis=0)
            sw2 = w[1:].copy()  # row i: runs k .. hi - 1, summed from k on
            s2 = wv[1:].copy()
            for j in range(1, n - 1):
                sw2[:-j] += w[1 + j :]
                s2[:-j] += wv[1 + j :]
        with np.errstate(invalid="ignore", divide="ignore"):
            m1 = np.where(sw1 > 0, s1 / sw1, np.nan)
            e1 = np.where(sw1 > 0, 1.0 / np.sqrt(sw1), np.nan)
            m2 = np.where(sw2 > 0, s2 / sw2, np.nan)
            e2 = np.where(sw2 > 0, 1.0 / np.sqrt(sw2), np.nan)
            diff = np.abs(m2 - m1)
            z = diff / np.hypot(e1, e2)
        ok = np.isfinite(z) & (diff > self.min_step) & (z > self.min_significance)
        scores = np.where(ok, z, -np.inf).max(axis=1, initial=-np.inf)
        return scores, ok.any(axis=1) & (scores > 0.0)


def _distinct(k: F) -> tuple[F, npt.NDArray[np.intp]]:
    """``np.unique(k, return_inverse=True)``; for counts (integers from 0 to a few million)
    from a :func:`numpy.bincount`, without sorting (per-strip hit counts: 10 times faster)."""
    if k.size and k.min() >= 0 and k.max() < _MAX_COUNT and np.array_equal(k, np.floor(k)):
        counts = k.astype(np.intp)
        present = np.bincount(counts) > 0
        return np.flatnonzero(present).astype(np.float64), (np.cumsum(present) - 1)[counts]
    uk, inverse = np.unique(k, return_inverse=True)
    return uk, inverse


#: the largest count :func:`_distinct` counts with a bincount
_MAX_COUNT = 1 << 24


# ------------------------------------------------------------------- per-channel payloads
def channel_payload(
    name: str,
    keys: Mapping[str, npt.ArrayLike],
    value: npt.ArrayLike | Mapping[str, npt.ArrayLike],
    error: npt.ArrayLike,
    status: npt.ArrayLike | None = None,
    *,
    units: str | Mapping[str, str],
    description: str | None = None,
    flagged: float | None = None,
    **metadata: Any,
) -> Payload:
    """A payload of one value per channel with its error and status.

    Parameters
    ----------
    name
        Payload name.
    keys
        Key columns (channel identifiers); empty for a single value.
    value
        The ``value`` column, or every value column by name (one of them ``value``, in file
        order).
    error
        The error of ``value``.
    status
        Per-channel :class:`~b2calib.conditions.ChannelStatus`, or ``None`` when channels
        cannot fail.
    units
        The unit of ``value``, or the unit of each value column.
    description
        What the payload holds, for humans (none: no ``description`` entry).
    flagged
        When given, the value and error of every channel whose status is not OK.
    **metadata
        More metadata (method, provenance ...).
    """
    columns = dict(value) if isinstance(value, Mapping) else {"value": value}
    if flagged is not None:
        bad = np.asarray(status) != ChannelStatus.OK
        columns["value"] = np.where(bad, flagged, columns["value"])
        error = np.where(bad, flagged, error)
    return Payload(
        name,
        keys={k: np.asarray(v) for k, v in keys.items()},
        values={k: np.asarray(v) for k, v in columns.items()},
        errors={"value": np.asarray(error)},
        status=None if status is None else np.asarray(status, dtype=np.int8),
        metadata={
            "units": {"value": units} if isinstance(units, str) else dict(units),
            **({} if description is None else {"description": description}),
            **metadata,
        },
    )


def status_counts(status: npt.ArrayLike) -> dict[str, int]:
    """Channels per :class:`~b2calib.conditions.ChannelStatus` name (those with any), in the
    order of the statuses."""
    s = np.asarray(status)
    return {x.name: int(np.sum(s == x)) for x in ChannelStatus if np.any(s == x)}


def binomial_interval(
    k: npt.ArrayLike,
    n: npt.ArrayLike,
    *,
    cl: float = 0.682689492137086,
    method: str = "clopper-pearson",
) -> tuple[F, F]:
    """Central interval of the proportion ``k / n`` at confidence ``cl`` (one standard
    deviation by default; NaN where n <= 0).

    ``method`` is ``"clopper-pearson"`` (exact: the Beta quantiles ``(k, n - k + 1)`` and
    ``(k + 1, n - k)``, never below nominal coverage) or ``"jeffreys"`` (the equal-tailed
    interval of the Beta(k + 1/2, n - k + 1/2) posterior, coverage close to nominal on
    average; Brown, Cai and DasGupta 2001). Both close at 0 when ``k = 0`` and at 1 when
    ``k = n``, unlike the normal approximation, which has no width there. Counts take few
    distinct values: the quantiles are computed once per distinct ``(k, n)``.
    """
    if method not in ("clopper-pearson", "jeffreys"):
        raise ValueError(f"method must be 'clopper-pearson' or 'jeffreys', not {method!r}")
    kk, nn = np.broadcast_arrays(np.asarray(k, np.float64), np.asarray(n, np.float64))
    flat_n = nn.ravel()
    if flat_n.size and np.all(flat_n == flat_n[0]):  # one n (e.g. a sample's events)
        uk, inverse = _distinct(kk.ravel())
        un = np.full(len(uk), flat_n[0])
    else:
        # the distinct (k, n) in lexicographic order: as complex numbers k + i n, which sort
        # by real then imaginary part (a flat sort; ``np.unique(axis=1)`` sorts opaque row
        # bytes), 5 times slower than the distinct k alone
        distinct, inverse = np.unique(kk.ravel() + 1j * flat_n, return_inverse=True)
        uk, un = distinct.real.copy(), distinct.imag.copy()
    a = 0.5 * (1.0 - cl)
    from scipy import stats  # only here: the core imports without loading scipy.stats

    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "jeffreys":
            lo = stats.beta.ppf(a, uk + 0.5, un - uk + 0.5)
            hi = stats.beta.ppf(1.0 - a, uk + 0.5, un - uk + 0.5)
        else:
            lo = stats.beta.ppf(a, uk, un - uk + 1.0)
            hi = stats.beta.ppf(1.0 - a, uk + 1.0, un - uk)
    lo = np.where(uk <= 0, 0.0, lo)
    hi = np.where(uk >= un, 1.0, hi)
    empty = un <= 0
    lo, hi = np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)
    inv = np.asarray(inverse).ravel()
    return lo[inv].reshape(kk.shape), hi[inv].reshape(kk.shape)


def __dir__() -> list[str]:
    return __all__
