"""The history of a payload's constants over the IoVs of a tag: chosen channels and the mean
and spread of every OK channel, per IoV (per interval for a time-dependent payload), as arrays.

Payloads are decoded once per process and revision (a bounded LRU cache), so a second look at
the same tag reads nothing again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from b2calib.conditions import eventdep
from b2calib.conditions.database import ConditionsDB
from b2calib.conditions.payload import Payload, channel_ids
from b2calib.conditions.status import ChannelStatus
from b2calib.exceptions import ConditionsError, ReviewError
from b2calib.review._cache import cached_payloads

__all__ = ["History", "history"]

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class History:
    """Constants of one payload name over a tag's IoVs: one point per IoV, or per interval of a
    time-dependent payload.

    Attributes
    ----------
    name, column, tag
        What is shown.
    exp, first_run, last_run
        The IoV of each point (``last_run`` -1: open).
    time
        The interval's start (UNIX seconds) of each point of a time-dependent payload, else
        ``None``.
    revision
        The payload revision of each point.
    channels
        The channel ids asked for, as :attr:`ChannelComparison.channel
        <b2calib.review.compare.ChannelComparison>` numbers them.
    values, errors
        Shape (points, channels); NaN where the channel is absent or has no error.
    status
        Shape (points, channels): the channel's status code (-1 absent).
    mean, spread
        Per point, the mean and standard deviation of the column over the channels OK in it
        (with a finite value); NaN when none.
    n_ok
        Per point, the number of those channels.
    """

    name: str
    column: str
    tag: str
    exp: I64
    first_run: I64
    last_run: I64
    time: F | None
    revision: I64
    channels: I64
    values: F
    errors: F
    status: npt.NDArray[np.int8]
    mean: F
    spread: F
    n_ok: I64


def _points(p: Payload) -> list[tuple[float | None, npt.NDArray[np.intp]]]:
    """(interval start in s or None, rows) per point of a payload."""
    if not eventdep.is_time_dependent(p):
        return [(None, np.arange(len(p)))]
    t = p.keys["t_start"]
    starts = np.unique(t)
    return [(float(s) / 1e9, np.flatnonzero(t == s)) for s in starts.tolist()]


def history(
    db: ConditionsDB,
    tag: str,
    name: str,
    *,
    column: str | None = None,
    channels: Sequence[int] = (),
) -> History:
    """The history of payload ``name`` in ``tag`` (see the module's description).

    ``column`` defaults to the first numeric value column; ``channels`` are channel ids as
    :attr:`ChannelComparison.channel <b2calib.review.compare.ChannelComparison>` gives them.

    Raises
    ------
    ReviewError
        No tag ``tag``, no IoV of ``name`` in it, or no value column ``column``.
    """
    try:
        entries = db.iovs(tag, name)
    except ConditionsError:
        raise ReviewError(f"no global tag {tag!r} to show the history of {name} in") from None
    if not entries:
        raise ReviewError(f"global tag {tag} has no payload {name}")
    wanted = np.asarray(list(channels), dtype=np.int64)
    exp: list[int] = []
    first: list[int] = []
    last: list[int] = []
    times: list[float | None] = []
    revs: list[int] = []
    values: list[F] = []
    errors: list[F] = []
    statuses: list[npt.NDArray[np.int8]] = []
    mean: list[float] = []
    spread: list[float] = []
    n_ok: list[int] = []
    col = column
    for e, p in zip(entries, cached_payloads(db, [e.payload for e in entries]), strict=True):
        if col is None:
            col = next((c for c, v in p.values.items() if v.dtype.kind in "biuf"), None)
            if col is None:
                raise ReviewError(f"payload {name} in tag {tag}: no numeric value column")
        if col not in p.values:
            raise ReviewError(
                f"payload {name} revision {e.payload.revision} in tag {tag} [{e.iov}]: no value "
                f"column {col!r} (columns: {', '.join(p.values)})"
            )
        v_all = p.values[col].astype(np.float64, copy=False)
        err_all = p.errors[col].astype(np.float64, copy=False) if col in p.errors else None
        s_all = p.status if p.status is not None else np.zeros(len(p), dtype=np.int8)
        ids_all = channel_ids({k: v for k, v in p.keys.items() if k not in eventdep.TIME_KEYS})
        for t, rows in _points(p):
            # without key columns: the row's position in its interval (as the comparison)
            ids = ids_all[rows] if ids_all is not None else np.arange(len(rows), dtype=np.int64)
            v, s = v_all[rows], s_all[rows]
            ok = (s == ChannelStatus.OK) & np.isfinite(v)
            n = int(ok.sum())
            mean.append(float(v[ok].mean()) if n else np.nan)
            spread.append(float(v[ok].std()) if n else np.nan)
            n_ok.append(n)
            exp.append(e.iov.first_exp)
            first.append(e.iov.first_run)
            last.append(e.iov.final_run)
            times.append(t)
            revs.append(e.payload.revision)
            row = np.full(len(wanted), np.nan)
            erow = np.full(len(wanted), np.nan)
            srow = np.full(len(wanted), -1, dtype=np.int8)
            if len(wanted) and len(ids):
                order = np.argsort(ids, kind="stable")
                pos = np.clip(np.searchsorted(ids[order], wanted), 0, len(ids) - 1)
                hit = ids[order][pos] == wanted
                at = order[pos[hit]]
                row[hit] = v[at]
                srow[hit] = s[at]
                if err_all is not None:
                    erow[hit] = err_all[rows][at]
            values.append(row)
            errors.append(erow)
            statuses.append(srow)
    assert col is not None
    shape = (len(exp), len(wanted))
    return History(
        name=name,
        column=col,
        tag=tag,
        exp=np.asarray(exp, dtype=np.int64),
        first_run=np.asarray(first, dtype=np.int64),
        last_run=np.asarray(last, dtype=np.int64),
        time=None if all(t is None for t in times) else np.asarray(times, dtype=np.float64),
        revision=np.asarray(revs, dtype=np.int64),
        channels=wanted,
        values=np.asarray(values, dtype=np.float64).reshape(shape),
        errors=np.asarray(errors, dtype=np.float64).reshape(shape),
        status=np.asarray(statuses, dtype=np.int8).reshape(shape),
        mean=np.asarray(mean, dtype=np.float64),
        spread=np.asarray(spread, dtype=np.float64),
        n_ok=np.asarray(n_ok, dtype=np.int64),
    )


def __dir__() -> list[str]:
    return __all__
