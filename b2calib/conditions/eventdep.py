"""Time-dependent payloads: constants that change inside a run (basf2's ``EventDependency``).

An IoV is run-granular; a beam spot that moves during a run needs constants per time interval.
As basf2 stores such constants in one payload (``EventDependency``, by event time), b2calib
stores them in one ordinary :class:`~b2calib.conditions.Payload`:

* two int64 key columns ``t_start`` and ``t_end``: the interval of each row in UNIX
  nanoseconds (the unit of ``EventMetaData_m_time``), rows sorted by ``t_start``; one row per
  interval, or several (an interval's rows then differ in the payload's other keys);
* ``metadata["event_dependency"] == "time"``.

Lookup semantics are basf2's: only the inner boundaries matter. The first interval extends to
minus infinity and the last to plus infinity inside the payload's IoV, and the interval ``i``
holds from its ``t_start`` up to the next interval's ``t_start`` (a time in a gap between two
intervals, e.g. between two runs of one IoV, gets the earlier interval's constants). The stored
``t_end`` records where the data of the interval ended (and is checked: ``t_end > t_start``,
intervals sorted and not overlapping, :mod:`b2calib.conditions.payloadtypes`).

A run-level request (no time) of a time-dependent payload is an error,
:class:`~b2calib.exceptions.TimeDependentPayloadError`, raised by the lookups of
:class:`~b2calib.conditions.ConditionsDB` (``payloads_for``),
:class:`~b2calib.conditions.LocalDatabase` (``lookup``) and the calibration framework's
``Constants`` (``get``, ``require``): ask with a time (:func:`at_time`) or take the payload as
stored and iterate its :func:`intervals`. A consumer that needs one number per run asks for it
explicitly with :func:`run_mean` (duration-weighted, or weighted by the caller's event counts).

>>> p = time_dependent("CollisionInvariantMass", [0, 3_600_000_000_000], [3_600_000_000_000,
...     7_200_000_000_000], values={"mass": [10.579, 10.576], "spread": [5.4e-3, 5.4e-3]})
>>> float(at_time(p, 5_000_000_000_000).value("mass")[0])
10.576
>>> round(float(run_mean(p).value("mass")[0]), 4)
10.5775
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from b2calib.conditions.payload import Payload
from b2calib.exceptions import PayloadError, TimeDependentPayloadError

__all__ = [
    "EVENT_DEPENDENCY",
    "TIME_KEYS",
    "TimeDependentPayloadError",
    "at_time",
    "interval_index",
    "intervals",
    "is_time_dependent",
    "run_level_error",
    "run_mean",
    "time_dependent",
    "values_at",
]

#: The metadata key marking a payload's event dependency (value ``"time"``).
EVENT_DEPENDENCY = "event_dependency"
#: The key columns of a time-dependent payload: interval start and end, UNIX nanoseconds.
TIME_KEYS = ("t_start", "t_end")

I64 = npt.NDArray[np.int64]
F = npt.NDArray[np.float64]


def is_time_dependent(payload: Payload) -> bool:
    """Whether ``payload`` holds constants per time interval (``metadata["event_dependency"]``
    is ``"time"``)."""
    return payload.metadata.get(EVENT_DEPENDENCY) == "time"


def _require(payload: Payload) -> tuple[I64, I64]:
    if not is_time_dependent(payload):
        raise PayloadError(f"payload {payload.name} is not time-dependent (one value per run)")
    missing = [k for k in TIME_KEYS if k not in payload.keys]
    if missing:
        raise PayloadError(
            f"payload {payload.name} is marked time-dependent but has no key column "
            f"{' or '.join(missing)}"
        )
    return (
        payload.keys["t_start"].astype(np.int64, copy=False),
        payload.keys["t_end"].astype(np.int64, copy=False),
    )


def intervals(payload: Payload) -> tuple[I64, I64]:
    """The distinct time intervals of a time-dependent payload, ``(t_start, t_end)`` arrays in
    UNIX nanoseconds, sorted by start (one entry per interval, however many rows it has)."""
    t0, t1 = _require(payload)
    if len(t0) == 0:
        return t0.copy(), t1.copy()
    pairs = np.unique(np.column_stack([t0, t1]), axis=0)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def interval_index(payload: Payload, t_ns: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Index into :func:`intervals` of the interval holding each time (UNIX ns), with basf2's
    semantics: the first interval open to minus infinity, the last to plus infinity, interval
    ``i`` up to the next one's start. Vectorised: one index per time of ``t_ns``."""
    starts, _ = intervals(payload)
    if len(starts) == 0:
        raise PayloadError(f"payload {payload.name} has no time interval")
    t = np.asarray(t_ns, dtype=np.int64)
    return np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(starts) - 1)


def _rows_of(payload: Payload, start: int) -> npt.NDArray[np.bool_]:
    return payload.keys["t_start"].astype(np.int64, copy=False) == start


def at_time(payload: Payload, t_ns: int) -> Payload:
    """The constants valid at UNIX time ``t_ns`` (nanoseconds, as ``EventMetaData_m_time``):
    the rows of the interval holding it, as a run-level payload without the ``t_start`` and
    ``t_end`` keys. Its metadata records the interval (``"interval"``: ``[t_start, t_end]``, the
    index and the number of intervals) instead of the event dependency."""
    starts, ends = intervals(payload)
    i = int(interval_index(payload, np.int64(t_ns)))
    sel = _rows_of(payload, int(starts[i]))
    meta = {k: v for k, v in payload.metadata.items() if k != EVENT_DEPENDENCY}
    meta["interval"] = {
        "t_start": int(starts[i]),
        "t_end": int(ends[i]),
        "index": i,
        "intervals": len(starts),
    }
    return Payload(
        name=payload.name,
        keys={k: v[sel] for k, v in payload.keys.items() if k not in TIME_KEYS},
        values={k: v[sel] for k, v in payload.values.items()},
        errors={k: v[sel] for k, v in payload.errors.items()},
        status=None if payload.status is None else payload.status[sel],
        metadata=meta,
    )


def values_at(payload: Payload, column: str, t_ns: npt.ArrayLike) -> npt.NDArray[Any]:
    """Value column ``column`` at each time of ``t_ns`` (UNIX ns), for a payload with one row
    per interval: the per-event constants a collector applies."""
    starts, _ = intervals(payload)
    if len(starts) != len(payload):
        raise PayloadError(
            f"payload {payload.name} has {len(payload)} rows in {len(starts)} intervals: "
            "values_at needs one row per interval; use at_time"
        )
    return payload.value(column)[interval_index(payload, t_ns)]


def time_dependent(
    name: str,
    t_start: npt.ArrayLike,
    t_end: npt.ArrayLike,
    *,
    values: Mapping[str, npt.ArrayLike],
    keys: Mapping[str, npt.ArrayLike] | None = None,
    errors: Mapping[str, npt.ArrayLike] | None = None,
    status: npt.ArrayLike | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Payload:
    """A time-dependent payload: ``t_start``/``t_end`` (UNIX ns, one per row) become int64 key
    columns before ``keys``, rows are sorted by (``t_start``, other keys) and the metadata is
    marked ``event_dependency = "time"``.

    Parameters
    ----------
    name
        Payload name.
    t_start, t_end
        Interval of each row, UNIX nanoseconds.
    values, keys, errors, status, metadata
        As :class:`~b2calib.conditions.Payload`, one entry per row.
    """
    t0 = np.asarray(t_start, dtype=np.int64)
    t1 = np.asarray(t_end, dtype=np.int64)
    other = {k: np.asarray(v) for k, v in (keys or {}).items()}
    order = np.lexsort((*(other[k] for k in reversed(list(other))), t0))
    st = None if status is None else np.asarray(status, dtype=np.int8)[order]
    return Payload(
        name=name,
        keys={"t_start": t0[order], "t_end": t1[order], **{k: v[order] for k, v in other.items()}},
        values={k: np.asarray(v)[order] for k, v in values.items()},
        errors={k: np.asarray(v)[order] for k, v in (errors or {}).items()},
        status=st,
        metadata={**(metadata or {}), EVENT_DEPENDENCY: "time"},
    )


def run_mean(
    payload: Payload,
    weights: npt.ArrayLike | None = None,
    *,
    columns: tuple[str, ...] | None = None,
) -> Payload:
    """One set of constants for the whole payload: the weighted mean of each value over the
    intervals, as a run-level payload (what a consumer that needs one number per run asks for,
    explicitly).

    Parameters
    ----------
    payload
        A time-dependent payload with the same rows (other keys) in every interval.
    weights
        One weight per interval of :func:`intervals` (e.g. the events the consumer has in each);
        by default the intervals' durations (``t_end - t_start``), i.e. the time average.
    columns
        The value columns to average (default: all).

    Returns
    -------
    Payload
        Per row of an interval: the weighted mean of the intervals whose status is OK (all
        intervals when the payload has no status), its error ``sqrt(sum w^2 e^2) / sum w`` (the
        intervals' errors taken as independent) and the status OK; a row with no OK interval
        keeps NaN and the first interval's status. Metadata ``"mean_of_intervals"`` records the
        number of intervals and the weighting.
    """
    starts, ends = intervals(payload)
    n = len(starts)
    if n == 0:
        raise PayloadError(f"payload {payload.name} has no time interval to average")
    if len(payload) % n:
        raise PayloadError(
            f"payload {payload.name}: {len(payload)} rows are not the same rows in each of "
            f"{n} intervals"
        )
    per = len(payload) // n
    # rows are sorted by (t_start, other keys): reshape to (interval, row)
    t0 = payload.keys["t_start"].astype(np.int64).reshape(n, per)
    if not np.array_equal(t0, np.repeat(starts[:, None], per, axis=1)):
        raise PayloadError(f"payload {payload.name}: rows are not sorted by t_start")
    other = {k: v.reshape(n, per) for k, v in payload.keys.items() if k not in TIME_KEYS}
    for k, v in other.items():
        if not np.all(v == v[:1]):
            raise PayloadError(
                f"payload {payload.name}: the intervals do not all hold the same {k} rows"
            )
    if weights is None:
        w = (ends - starts).astype(np.float64)
        how = "duration"
    else:
        w = np.asarray(weights, dtype=np.float64)
        how = "weights"
        if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise PayloadError(
                f"payload {payload.name}: run_mean needs {n} finite non-negative weights, one "
                f"per interval, got shape {w.shape}"
            )
    ok = (
        np.ones((n, per), dtype=bool)
        if payload.status is None
        else payload.status.reshape(n, per) == 0
    )
    ww = np.where(ok, w[:, None], 0.0)
    total = ww.sum(axis=0)
    good = total > 0
    safe = np.where(good, total, 1.0)
    names = columns or tuple(payload.values)
    values: dict[str, F] = {}
    errors: dict[str, F] = {}
    for c in names:
        v = payload.value(c).astype(np.float64).reshape(n, per)
        values[c] = np.where(good, (ww * np.where(ok, v, 0.0)).sum(axis=0) / safe, np.nan)
        if c in payload.errors:
            e = payload.errors[c].astype(np.float64).reshape(n, per)
            s2 = (ww**2 * np.where(ok, e, 0.0) ** 2).sum(axis=0)
            errors[c] = np.where(good, np.sqrt(s2) / safe, np.nan)
    status = None
    if payload.status is not None:
        status = np.where(good, 0, payload.status.reshape(n, per)[0]).astype(np.int8)
    meta = {k: v for k, v in payload.metadata.items() if k != EVENT_DEPENDENCY}
    meta["mean_of_intervals"] = {
        "intervals": n,
        "weighting": how,
        "t_start": int(starts[0]),
        "t_end": int(ends[-1]),
    }
    return Payload(
        name=payload.name,
        keys={k: v[0] for k, v in other.items()},
        values=values,
        errors=errors,
        status=status,
        metadata=meta,
    )


def run_level_error(
    payload: Payload,
    *,
    exp: int,
    run: int,
    source: str,
    revision: int | None = None,
) -> TimeDependentPayloadError:
    """The error for a run-level request (no time) of a time-dependent payload: it names the
    payload, its revision, where it was found (a global tag, a local database, the previous
    iteration), the run and the number of intervals, and says how to ask."""
    try:
        n = len(intervals(payload)[0])
    except PayloadError:
        n = 0
    rev = "" if revision is None else f" rev {revision}"
    return TimeDependentPayloadError(
        f"payload {payload.name}{rev} in {source} is time-dependent ({n} time interval"
        f"{'' if n == 1 else 's'}) for run ({exp}, {run}): there is no single run-level value; "
        "pass a time (UNIX nanoseconds, as EventMetaData_m_time; --time on the command line), "
        "or take the payload as stored and iterate b2calib.conditions.eventdep.intervals(), or "
        "ask for b2calib.conditions.eventdep.run_mean() explicitly",
        payload=payload.name,
        revision=revision,
        source=source,
        exp=exp,
        run=run,
        intervals=n,
    )


def __dir__() -> list[str]:
    return __all__
