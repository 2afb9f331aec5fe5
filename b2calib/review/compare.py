"""One payload revision against the one it replaces, channel by channel, as columns (numpy
arrays) for the payload-validation view.

The join and the comparison are the validation's
(:meth:`PayloadComparison.compare <b2calib.calibration.validation.PayloadComparison.compare>`,
with the thresholds the calibration declares), so the view shows what the validation judged.

What is compared
    * The IoV: one IoV of the new revision in ``tag`` (``iov=``); by default the IoV with the
      most outliers (by the calibration's validation thresholds), the first of them on a tie.
    * The previous payload (``previous=``): ``None`` -> what the validation compared with: the
      payload of the same name valid at the IoV's first run through the input tags of the job
      that staged the revision (:func:`~b2calib.calibration.validation.previous_payloads`),
      else the highest revision of the same name below the new one, else nothing; an ``int``
      -> that revision of the same name; a ``str`` -> the payload of that name valid in that
      tag at the IoV's first run.
    * A time-dependent payload (:mod:`b2calib.conditions.eventdep`): each interval with the
      previous constants at its start (as the validation); its rows carry ``t_start`` and
      ``t_end`` among the keys.
    * A list payload (hot pixels, masked channels): rows in both, rows added (``status_old``
      -1) and rows removed (``status_new`` -1), in that order.

Rows and channels
    One row per joined channel (per interval), then the added, then the removed rows.
    ``channel`` is the payload's key column that is not a time key (int64), several packed in
    decimal (:func:`~b2calib.conditions.payload.channel_ids`: TOP module 3 pixel 17 -> 3017),
    or the row's position in its interval when there is none (a run-level constant, a beam
    spot per interval): the numbering of the drill-down
    (:func:`~b2calib.calibration.fitview.fit_view`).

Statuses
    The payloads' :class:`~b2calib.conditions.ChannelStatus` codes, with ``fallback``
    (:data:`FALLBACK`) folded in as :func:`~b2calib.calibration.channel_counts` does: a
    NOT_ENOUGH_DATA or FAILED row with finite values holds a substitute; -1: the row is absent
    from that payload. A payload without status counts its rows OK.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from b2calib.calibration.validation import (
    PairComparison,
    PayloadComparison,
    finite_rows,
    pairs,
)
from b2calib.conditions import eventdep
from b2calib.conditions import tables as ct
from b2calib.conditions.database import ConditionsDB, IovEntry, PayloadInfo
from b2calib.conditions.iov import IoV
from b2calib.conditions.payload import Payload, channel_ids
from b2calib.conditions.status import ChannelStatus
from b2calib.exceptions import CalibrationError, ConditionsError, ConfigError, ReviewError
from b2calib.review._cache import cached_payload

__all__ = [
    "ABSENT",
    "FALLBACK",
    "STATUS_NAMES",
    "ChannelComparison",
    "channel_ids",
    "compare_payload",
]

F = npt.NDArray[np.float64]
#: The status code of a fallback row (NOT_ENOUGH_DATA or FAILED with a finite value).
FALLBACK = 6
#: The status code of a row absent from that payload.
ABSENT = -1
#: Status code -> name.
STATUS_NAMES: Mapping[int, str] = {
    **{int(s): s.name for s in ChannelStatus},
    FALLBACK: "fallback",
    ABSENT: "absent",
}


@dataclass(frozen=True)
class ChannelComparison:
    """A payload revision against the previous one, one row per channel (see the module's
    description); every per-row field is a numpy array of the same length.

    Attributes
    ----------
    name
        The payload name.
    new, previous
        The new revision, and the previous one compared with (``None``: nothing to compare).
    previous_source
        Where the previous one comes from: ``"previous_e16 [16,1,-1,-1]"`` (a tag and its IoV
        there), ``"revision 3"``; empty when none.
    tag
        The tag of the new revision's IoV.
    iov
        The IoV of the new revision shown.
    iovs
        Every IoV of the new revision in the tag.
    column, columns
        The value column shown, and the numeric value columns available.
    keys
        The key columns per row (``{"cellID": ...}``; ``t_start``, ``t_end`` for intervals).
    channel
        int64 channel id per row.
    new_value, new_error, old_value, old_error
        Values and errors (NaN where absent or without error).
    diff, pull
        new - old; diff / sqrt(e_new^2 + e_old^2) (NaN where not defined).
    status_new, status_old
        int8 status codes (:data:`STATUS_NAMES`; -1 absent).
    status_names
        Code -> name.
    max_pull, max_rel_change, max_abs_change
        The calibration's validation thresholds for this payload (the defaults of
        :meth:`outliers`).
    """

    name: str
    new: PayloadInfo
    previous: PayloadInfo | None
    previous_source: str
    tag: str
    iov: str
    iovs: tuple[str, ...]
    column: str
    columns: tuple[str, ...]
    keys: Mapping[str, npt.NDArray[Any]]
    channel: npt.NDArray[np.int64]
    new_value: F
    new_error: F
    old_value: F
    old_error: F
    diff: F
    pull: F
    status_new: npt.NDArray[np.int8]
    status_old: npt.NDArray[np.int8]
    status_names: Mapping[int, str]
    max_pull: float | None = 5.0
    max_rel_change: float | None = None
    max_abs_change: float | None = None

    def __len__(self) -> int:
        return len(self.channel)

    @property
    def both_ok(self) -> npt.NDArray[np.bool_]:
        """Rows OK in both payloads (the channels compared)."""
        return (self.status_new == ChannelStatus.OK) & (self.status_old == ChannelStatus.OK)

    @property
    def rel(self) -> F:
        """(new - old) / abs(old) (inf where old is 0 and new is not, NaN where undefined)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(
                self.old_value != 0,
                self.diff / np.abs(self.old_value),
                np.where(self.diff == 0, 0.0, np.inf * np.sign(self.diff)),
            )

    def outliers(
        self,
        threshold: float | None = None,
        *,
        max_rel_change: float | None = None,
        max_abs_change: float | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """The rows OK in both payloads beyond the thresholds, worst first, as columns.

        A row with a pull is an outlier when abs(pull) > ``threshold``; a row without (no
        errors) when its relative change exceeds ``max_rel_change`` or its change
        ``max_abs_change`` (``None``: the calibration's, :attr:`max_pull` ...; no change
        threshold: rows without a pull are not judged). The columns: ``row`` (index in this
        comparison), the key columns, ``channel`` (a key column named ``channel`` is the
        channel id), ``new``, ``old``, ``diff``, ``pull``,
        ``rel``, ``score`` (how many times its threshold the row is beyond: abs(pull) /
        threshold, else the larger of abs(rel) / ``max_rel_change`` and abs(diff) /
        ``max_abs_change``: a time offset near 0 is judged by its change in ns, not by a
        relative change), ``status_new``, ``status_old``.
        """
        thr = self.max_pull if threshold is None else threshold
        rel_thr = self.max_rel_change if max_rel_change is None else max_rel_change
        abs_thr = self.max_abs_change if max_abs_change is None else max_abs_change
        if thr is not None and not thr > 0:
            raise ReviewError(f"payload {self.name}: the pull threshold must be > 0, not {thr}")
        ok = self.both_ok
        has_pull = np.isfinite(self.pull)
        rel = self.rel
        out = np.zeros(len(self), dtype=bool)
        if thr is not None:
            out |= ok & has_pull & (np.abs(self.pull) > thr)
        rest = ok & (~has_pull if thr is not None else np.ones(len(self), dtype=bool))
        with np.errstate(invalid="ignore"):
            if rel_thr is not None:
                out |= rest & (np.abs(rel) > rel_thr)
            if abs_thr is not None:
                out |= rest & (np.abs(self.diff) > abs_thr)
        rows = np.flatnonzero(out)
        # how far beyond its threshold each row is: comparable across the criteria
        by_pull = has_pull[rows] & (thr is not None)
        score = np.zeros(len(rows))
        with np.errstate(invalid="ignore", divide="ignore"):
            if thr is not None:
                score = np.where(by_pull, np.abs(self.pull[rows]) / thr, 0.0)
            if rel_thr is not None:
                score = np.where(by_pull, score, np.maximum(score, np.abs(rel[rows]) / rel_thr))
            if abs_thr is not None:
                change = np.abs(self.diff[rows]) / abs_thr
                score = np.where(by_pull, score, np.maximum(score, change))
        order = np.argsort(-score, kind="stable")
        rows, score = rows[order], score[order]
        table: dict[str, npt.NDArray[Any]] = {"row": rows}
        for k, v in self.keys.items():
            table[k] = v[rows]
        table |= {
            "channel": self.channel[rows],
            "new": self.new_value[rows],
            "old": self.old_value[rows],
            "diff": self.diff[rows],
            "pull": self.pull[rows],
            "rel": rel[rows],
            "score": score,
            "status_new": self.status_new[rows],
            "status_old": self.status_old[rows],
        }
        return table

    def pull_histogram(
        self, bins: int | Sequence[float] = 50, range: tuple[float, float] = (-10.0, 10.0)
    ) -> tuple[npt.NDArray[np.int64], F]:
        """Counts and edges of the finite pulls of the rows OK in both payloads; pulls beyond
        ``range`` are counted in the first or last bin (``bins``: a number of bins over
        ``range``, or the edges)."""
        p = self.pull[self.both_ok & np.isfinite(self.pull)]
        if isinstance(bins, int):
            edges = np.linspace(range[0], range[1], bins + 1)
        else:
            edges = np.asarray(bins, dtype=np.float64)
        mid = (edges[:-1] + edges[1:]) / 2
        counts, _ = np.histogram(np.clip(p, mid[0], mid[-1]), bins=edges)
        return counts.astype(np.int64), edges

    def status_counts(self, which: str = "new") -> dict[str, int]:
        """Rows per status name of the new (``"new"``) or previous (``"old"``) payload."""
        s = self.status_new if which == "new" else self.status_old
        codes, n = np.unique(s, return_counts=True)
        return {self.status_names[int(c)]: int(k) for c, k in zip(codes, n, strict=True)}


# ----------------------------------------------------------------------------- lookups
def _info(db: ConditionsDB, name: str, revision: int, what: str) -> PayloadInfo:
    try:
        return db.payload_info(name, int(revision))
    except ConditionsError:
        raise ReviewError(f"{what}: payload {name} has no revision {revision}") from None


def _revision_iovs(db: ConditionsDB, info: PayloadInfo, tag: str | None) -> list[IovEntry]:
    """The IoVs of revision ``info`` in ``tag`` (by start); ``tag=None``: in the latest tag
    that holds it."""
    t, g = ct.iovs, ct.globaltags
    q = (
        sa.select(g.c.id, g.c.name, t.c.first_exp, t.c.first_run, t.c.final_exp, t.c.final_run)
        .join(g, g.c.id == t.c.globaltag_id)
        .where(t.c.payload_id == info.id)
    )
    if tag is not None:
        q = q.where(g.c.name == tag)
    with db.read() as conn:
        rows = list(conn.execute(q))
    if not rows:
        return []
    latest = max(r.id for r in rows)
    out = [
        IovEntry(r.name, info, IoV(r.first_exp, r.first_run, r.final_exp, r.final_run))
        for r in rows
        if r.id == latest
    ]
    return sorted(out, key=lambda e: e.iov.start)


def _validator(db: ConditionsDB, name: str, calibration: str | None) -> PayloadComparison:
    """The calibration's comparison for payload ``name`` (its declared
    :class:`PayloadComparison`), else the default one."""
    if calibration is not None:
        from b2calib.calibration.declaration import get_calibration

        try:
            v = get_calibration(calibration).validation
        except ConfigError:
            v = None
        if isinstance(v, PayloadComparison):
            return v.per_payload.get(name, v)
    return PayloadComparison()


def _numeric(p: Payload) -> list[str]:
    return [c for c, v in p.values.items() if v.dtype.kind in "biuf"]


# ----------------------------------------------------------------------------- the comparison
def compare_payload(
    db: ConditionsDB,
    name: str,
    new_revision: int,
    *,
    previous: int | str | None = None,
    tag: str | None = None,
    iov: str | None = None,
    column: str | None = None,
) -> ChannelComparison:
    """Revision ``new_revision`` of payload ``name`` against the previous payload, channel by
    channel (see the module's description).

    Parameters
    ----------
    db
        The conditions database.
    name, new_revision
        The new payload revision.
    previous
        ``None``: what the validation compared it with; an ``int``: that revision of ``name``;
        a ``str``: the payload ``name`` valid in that tag at the IoV's first run.
    tag
        The tag holding the new revision (default: the latest tag that holds it).
    iov
        The new revision's IoV to show (``"16,1,16,6"``; default: the one with the most
        outliers).
    column
        The value column to show (default: the first numeric value column).

    Raises
    ------
    ReviewError
        The revision, the tag, the revision's IoV in the tag, the previous revision, the
        previous tag or its payload at the IoV, or the column is not there (the message names
        which).
    """
    from b2calib.review.summary import origins

    what = f"payload {name} revision {new_revision}" + (f" in tag {tag}" if tag else "")
    info = _info(db, name, new_revision, what)
    if tag is not None:
        try:
            db.tag(tag)
        except ConditionsError:
            raise ReviewError(f"{what}: no global tag {tag!r}") from None
    entries = _revision_iovs(db, info, tag)
    if not entries:
        raise ReviewError(
            f"{what}: the revision is in " + (f"no IoV of tag {tag}" if tag else "no global tag")
        )
    tag = entries[0].globaltag
    iovs = tuple(str(e.iov) for e in entries)
    if iov is not None:
        try:
            want = IoV.parse(iov)
        except (ValueError, ConditionsError, ConfigError):
            raise ReviewError(f"{what}: {iov!r} is not an IoV (exp,run,exp,run)") from None
        entries = [e for e in entries if e.iov == want]
        if not entries:
            raise ReviewError(f"{what}: no IoV {iov} (its IoVs: {', '.join(iovs)})")
    new = cached_payload(db, info)
    if column is not None and column not in new.values:
        raise ReviewError(f"{what}: no value column {column!r} (columns: {', '.join(new.values)})")
    # who staged it: the calibration (thresholds) and its job's input tags (the previous)
    _, found, jobs = origins(db, tag, entries)
    calibration = next((o.calibration for o in found if o.calibration), None)
    inputs_of = {job.key: tags for job, tags in jobs}
    job = next((o.job for o in found if o.job is not None), None)
    input_tags = inputs_of.get(job.key, []) if job is not None else []
    candidates = [(e, *_previous(db, name, info, e, previous, input_tags, what)) for e in entries]
    validator = _validator(db, name, calibration)
    results = [
        _compare(db, validator, new, e, old, old_info, source, tag, iovs, column)
        for e, old, old_info, source in candidates
    ]
    if len(results) == 1:
        return results[0]
    counts = [len(r.outliers()["row"]) for r in results]
    return results[int(np.argmax(counts))]  # the first of the most


def _previous(
    db: ConditionsDB,
    name: str,
    info: PayloadInfo,
    entry: IovEntry,
    previous: int | str | None,
    input_tags: Sequence[str],
    what: str,
) -> tuple[Payload | None, PayloadInfo | None, str]:
    """The previous payload of one IoV, its record and where it comes from."""
    start = entry.iov.start
    if isinstance(previous, int) and not isinstance(previous, bool):
        old_info = _info(db, name, previous, f"{what}: the previous")
        return cached_payload(db, old_info), old_info, f"revision {previous}"
    if isinstance(previous, str):
        try:
            hit = db.lookup(start[0], start[1], [previous], names=[name]).get(name)
        except ConditionsError:
            raise ReviewError(f"{what}: no global tag {previous!r} to compare with") from None
        if hit is None:
            raise ReviewError(
                f"{what}: tag {previous} has no payload {name} at run {start[0]},{start[1]} "
                f"(the first run of IoV {entry.iov})"
            )
        return cached_payload(db, hit.payload), hit.payload, f"{previous} [{hit.iov}]"
    if input_tags:
        # the rule of the validation (previous_payloads): valid at the IoV's first run through
        # the job's input tags, highest priority first
        at = db.lookup(start[0], start[1], list(input_tags), names=[name]).get(name)
        if at is not None:
            return cached_payload(db, at.payload), at.payload, f"{at.globaltag} [{at.iov}]"
    older = [p for p in db.payloads(name) if p.revision < info.revision]
    if older:
        old_info = older[-1]
        return cached_payload(db, old_info), old_info, f"revision {old_info.revision}"
    return None, None, ""


def _compare(
    db: ConditionsDB,
    validator: PayloadComparison,
    new: Payload,
    entry: IovEntry,
    old: Payload | None,
    old_info: PayloadInfo | None,
    source: str,
    tag: str,
    iovs: tuple[str, ...],
    column: str | None,
) -> ChannelComparison:
    what = f"payload {new.name} revision {entry.payload.revision} in tag {tag} [{entry.iov}]"
    numeric = _numeric(new)
    columns = tuple(c for c in numeric if old is None or c in old.values) or tuple(numeric)
    col = column if column is not None else (columns[0] if columns else None)
    if col is None:
        raise ReviewError(f"{what}: no numeric value column to show")
    todo: list[tuple[Payload, Payload | None]]
    if old is None:
        todo = [(new, None)]
    else:
        try:
            todo = list(pairs(new, old))
        except CalibrationError as err:
            raise ReviewError(f"{what}: cannot be compared with {source}: {err}") from None
    comparison = dataclasses.replace(
        validator, columns=(col,) if old is not None and col in old.values else ()
    )
    parts: list[dict[str, npt.NDArray[Any]]] = []
    for new_part, old_part in todo:
        parts.append(_part(comparison, new_part, old_part, col, what, source))
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    keys = {k[4:]: v for k, v in cols.items() if k.startswith("key:")}
    ids = channel_ids({k: v for k, v in keys.items() if k not in eventdep.TIME_KEYS})
    channel = (
        ids
        if ids is not None
        else np.concatenate([np.arange(len(p["new_value"]), dtype=np.int64) for p in parts])
    )
    diff = cols["new_value"] - cols["old_value"]
    sigma = np.sqrt(cols["new_error"] ** 2 + cols["old_error"] ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        pull = np.where(np.isfinite(sigma) & (sigma > 0), diff / sigma, np.nan)
    return ChannelComparison(
        name=new.name,
        new=entry.payload,
        previous=old_info,
        previous_source=source,
        tag=tag,
        iov=str(entry.iov),
        iovs=iovs,
        column=col,
        columns=columns,
        keys=keys,
        channel=channel,
        new_value=cols["new_value"],
        new_error=cols["new_error"],
        old_value=cols["old_value"],
        old_error=cols["old_error"],
        diff=diff,
        pull=pull,
        status_new=cols["status_new"].astype(np.int8),
        status_old=cols["status_old"].astype(np.int8),
        status_names=STATUS_NAMES,
        max_pull=validator.max_pull,
        max_rel_change=validator.max_rel_change,
        max_abs_change=validator.max_abs_change,
    )


def _folded(p: Payload, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int8]:
    """Status codes of ``rows`` of ``p`` (-1 for row -1), fallback folded in."""
    if p.status is None:
        s = np.zeros(len(p), dtype=np.int8)
    else:
        s = p.status.copy()
        lacking = (s == ChannelStatus.NOT_ENOUGH_DATA) | (s == ChannelStatus.FAILED)
        s[lacking & finite_rows(p)] = FALLBACK
    out = np.full(len(rows), ABSENT, dtype=np.int8)
    have = rows >= 0
    out[have] = s[rows[have]]
    return out


def _take(p: Payload, source: Mapping[str, npt.NDArray[Any]], col: str, rows: Any) -> F:
    out = np.full(len(rows), np.nan)
    if col in source:
        have = rows >= 0
        out[have] = source[col][rows[have]].astype(np.float64)
    return out


def _part(
    comparison: PayloadComparison,
    new: Payload,
    old: Payload | None,
    col: str,
    what: str,
    source: str,
) -> dict[str, npt.NDArray[Any]]:
    """The columns of one pair (one IoV, or one interval)."""
    if old is None:
        rows_new = np.arange(len(new), dtype=np.int64)
        rows_old = np.full(len(new), -1, dtype=np.int64)
        keys = {f"key:{k}": v for k, v in new.keys.items()}
    else:
        try:
            c: PairComparison = comparison.compare(new, old)
        except CalibrationError as err:
            raise ReviewError(f"{what}: cannot be compared with {source}: {err}") from None
        rows_new, rows_old = c.new_rows, c.old_rows
        keys = {f"key:{k}": c.table[k] for k in new.keys if k in c.table}
    out: dict[str, npt.NDArray[Any]] = dict(keys)
    out["new_value"] = _take(new, new.values, col, rows_new)
    out["new_error"] = _take(new, new.errors, col, rows_new)
    if old is None:
        out["old_value"] = np.full(len(rows_new), np.nan)
        out["old_error"] = np.full(len(rows_new), np.nan)
        out["status_old"] = np.full(len(rows_new), ABSENT, dtype=np.int8)
    else:
        out["old_value"] = _take(old, old.values, col, rows_old)
        out["old_error"] = _take(old, old.errors, col, rows_old)
        out["status_old"] = _folded(old, rows_old)
    out["status_new"] = _folded(new, rows_new)
    return out


def __dir__() -> list[str]:
    return __all__
