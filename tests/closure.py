"""Closure tests of detector calibrations: simulate known constants, calibrate, compare.

The project's standard for a calibration test: over the channels that came out OK, the pulls
``(fitted - true) / quoted uncertainty`` have a mean within 0.1 of zero and a standard deviation
between 0.85 and 1.15; channels the simulator made dead or starved come out flagged. A channel
handed over as calibrated must have a finite value and a finite, positive uncertainty: the
helpers refuse any other (:class:`ClosureError`, naming the channels) before computing a pull.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from b2calib.calibration import Calibration, CalibrationReport, run_calibrations
from b2calib.conditions import ChannelStatus, ConditionsDB, Payload
from b2calib.conditions.database import IovEntry

PULL_MEAN_MAX = 0.1
PULL_WIDTH = (0.85, 1.15)


class ClosureError(AssertionError):
    """Constants a closure test cannot judge: a channel handed over as calibrated (OK) without
    a finite value or with an uncertainty that is not finite and positive."""


def check_quoted(
    fitted: npt.ArrayLike,
    errors: npt.ArrayLike,
    label: str = "",
    channels: npt.ArrayLike | None = None,
) -> None:
    """Raise :class:`ClosureError` unless every value is finite and every uncertainty finite
    and positive: an OK channel always has a positive uncertainty (one of 0 would make its pull
    infinite, or 0/0 where the value is fixed by a convention). ``channels`` names the channels
    in the message (default: their positions)."""
    f = np.asarray(fitted, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    names = np.arange(len(f)) if channels is None else np.asarray(channels)
    where = f"{label}: " if label else ""
    for bad, what in (
        (~np.isfinite(f), "a value that is not finite"),
        (~np.isfinite(e), "an uncertainty that is not finite"),
        (np.isfinite(e) & (e <= 0), "an uncertainty <= 0"),
    ):
        if bad.any():
            shown = ", ".join(
                f"{n} (value {v:g}, error {u:g})"
                for n, v, u in zip(names[bad][:5], f[bad][:5], e[bad][:5], strict=True)
            )
            raise ClosureError(
                f"{where}{int(bad.sum())} channel(s) handed over as calibrated with {what}: "
                f"{shown}{' ...' if bad.sum() > 5 else ''}"
            )


def ok_channels(payload: Payload, label: str = "", column: str = "value") -> npt.NDArray[np.bool_]:
    """The channels of ``payload`` whose status is OK, after :func:`check_quoted` on them
    (named by the payload's first key column)."""
    assert payload.status is not None, f"{label}: {payload.name} has no status column"
    ok = payload.status == ChannelStatus.OK
    names = next(iter(payload.keys.values()), np.arange(len(ok)))
    check_quoted(
        payload.value(column)[ok],
        payload.errors[column][ok],
        label or payload.name,
        np.asarray(names)[ok],
    )
    return np.asarray(ok)


@dataclass(frozen=True)
class Pulls:
    """Pull statistics over channels."""

    mean: float
    width: float
    n: int
    worst: float

    def __str__(self) -> str:
        return f"pull mean {self.mean:+.3f}, width {self.width:.3f} over {self.n} channels"


def pulls(fitted: npt.ArrayLike, errors: npt.ArrayLike, truth: npt.ArrayLike) -> Pulls:
    """Pull statistics of ``fitted +- errors`` against ``truth`` (values finite, errors finite and
    positive: :func:`check_quoted`)."""
    f, e, t = (np.asarray(a, dtype=np.float64) for a in (fitted, errors, truth))
    assert f.shape == e.shape == t.shape, (f.shape, e.shape, t.shape)
    assert len(f) >= 2, "need at least two channels for a pull distribution"
    check_quoted(f, e)
    p = (f - t) / e
    return Pulls(float(p.mean()), float(p.std(ddof=1)), len(p), float(np.abs(p).max()))


def assert_closure(
    fitted: npt.ArrayLike, errors: npt.ArrayLike, truth: npt.ArrayLike, label: str
) -> Pulls:
    """Assert the project's pull standard; return the statistics (for the notes)."""
    check_quoted(fitted, errors, label)
    s = pulls(fitted, errors, truth)
    assert abs(s.mean) < PULL_MEAN_MAX, f"{label}: {s}"
    assert PULL_WIDTH[0] <= s.width <= PULL_WIDTH[1], f"{label}: {s}"
    print(f"{label}: {s}")
    return s


def calibrate(
    calibration: Calibration | str,
    data: Path,
    db_path: Path,
    *,
    staging_tag: str = "staging",
    **kwargs: Any,
) -> tuple[dict[str, CalibrationReport], ConditionsDB]:
    """Run a calibration on ``data`` into a fresh SQLite database; the reports and the database."""
    db = ConditionsDB(db_path, author="closure-test")
    reports = run_calibrations(
        calibration, data, db=db, staging_tag=staging_tag, cache=False, **kwargs
    )
    return reports, db


def staged(db: ConditionsDB, tag: str, name: str) -> list[tuple[IovEntry, Payload]]:
    """The IoVs of payload ``name`` in ``tag`` (in run order) with their payloads."""
    return [(e, db.payload(e.payload)) for e in db.iovs(tag, name)]


def truth_over_events(
    truth: Payload | Sequence[Payload],
    times_ns: npt.ArrayLike,
    columns: Sequence[str] | None = None,
    *,
    intervals_of: Payload | None = None,
) -> dict[str, npt.NDArray[np.float64]]:
    """The simulator's time-dependent truth (``BeamSpot``, ``CollisionBoostVector``,
    ``CollisionInvariantMass``, one payload per run or several) averaged over events.

    Each event at ``times_ns`` (UNIX ns, ``EventMetaData_m_time``) takes the truth row holding
    it (the rows of all ``truth`` payloads together, basf2's lookup semantics,
    :mod:`b2calib.conditions.eventdep`); the average is over events. With ``intervals_of`` (a
    fitted time-dependent payload, one row per sub-interval) the events are grouped by the
    sub-interval holding each: one average per sub-interval, NaN where none has events; without
    it, one average over all events. This is what a closure test compares a fitted
    sub-interval with: the truth averaged over that sub-interval's events.
    """
    from b2calib.conditions import eventdep

    parts = [truth] if isinstance(truth, Payload) else list(truth)
    t0 = np.concatenate([p.keys["t_start"].astype(np.int64) for p in parts])
    order = np.argsort(t0, kind="stable")
    t0 = t0[order]
    cols = list(columns) if columns is not None else list(parts[0].values)
    values = {c: np.concatenate([p.value(c) for p in parts])[order] for c in cols}
    t = np.asarray(times_ns, dtype=np.int64)
    row = np.clip(np.searchsorted(t0, t, side="right") - 1, 0, len(t0) - 1)
    if intervals_of is None:
        group, n_groups = np.zeros(len(t), dtype=np.intp), 1
    else:
        group = eventdep.interval_index(intervals_of, t)
        n_groups = len(eventdep.intervals(intervals_of)[0])
    counts = np.bincount(group, minlength=n_groups).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            c: np.bincount(group, weights=values[c][row].astype(np.float64), minlength=n_groups)
            / counts
            for c in cols
        }
