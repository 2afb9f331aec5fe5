"""Validation of a calibration's new payloads against the previous ones (Belle II's prompt
validation step), and the channel counts of a job's summary.

After a calibration job has staged its payloads, :func:`validate_job` runs the calibration's
validator (:attr:`Calibration.validation <b2calib.calibration.Calibration>`, by default
:class:`PayloadComparison`) on them. The validator compares each new payload with the payload
of the same name that was valid before, per channel, and returns a :class:`ValidationResult`:
a :class:`Verdict` (GOOD, WARNING, ERROR) with its reason, a summary per payload name
(:class:`PayloadValidation`) and :class:`~b2calib.calibration.Diagnostics` (a table per payload
and the histograms of the pulls) for the payload-validation dashboard.
:meth:`JobStore.record_validation <b2calib.calibration.jobs.JobStore.record_validation>` keeps
it with the job.

The previous payloads
    For each staged IoV, the payload of the same name valid at the IoV's first run through the
    previous tags: the job's input tags (in the prompt loop the previous bucket's staging tag,
    then the base global tags), never the staging tag that now holds the new payloads. When the
    previous constants change inside a new IoV (a previous IoV starts in it), the new payload is
    compared with each of them too, and the reason says that the IoV spans the change: the runs
    after it were processed with the other constants.

The comparison (:class:`PayloadComparison`)
    * Rows are joined on the key columns. For every value column compared, per channel: the
      difference new - old, the relative difference (new - old) / abs(old) and, where both
      payloads give an error, the pull (new - old) / sqrt(err_new^2 + err_old^2). A channel is an
      outlier when abs(pull) > ``max_pull``, or, where there is no pull (no errors, or
      ``max_pull=None``), when the relative difference exceeds ``max_rel_change`` or the
      absolute one ``max_abs_change`` (none of them given: channels without errors are not
      judged). Only channels OK in both payloads (or payloads without status) are compared.
    * Channels newly flagged (OK before, not OK now) and recovered (the reverse). A channel
      newly NOT_ENOUGH_DATA is statistics-limited in this data (not calibrated: a fallback or
      no value), counted apart from the channels newly DEAD, HOT, UNUSABLE or FAILED (gone
      bad). A previous payload without status (a simulator's truth, a payload type without
      flags) counts its channels as OK, and the reason says so.
    * A list payload (rows = the flagged channels, e.g. hot pixels or dead pixels: a type of
      :data:`~b2calib.conditions.payloadtypes.PAYLOAD_TYPES` without a fixed number of rows):
      rows added and removed; the added rows, as a fraction of the new list, are its newly
      flagged channels.
    * A time-dependent payload (:mod:`b2calib.conditions.eventdep`): each new interval is
      compared with the previous payload's constants at the interval's start time (basf2's
      lookup: the previous bucket's last interval holds up to +infinity), i.e. with the
      constants the data would have been processed with had the calibration not run; a
      run-level previous payload is compared with every interval.
    * Verdict per payload: ERROR when no channel is OK and some fell back or failed
      (:func:`no_ok_channel`; WARNING for a payload declared ``intermediate``), when the
      outliers or the channels newly DEAD, HOT or FAILED exceed the error fractions, or the
      statistics-limited ones ``error_limited_fraction``; WARNING beyond the warning
      fractions, or when there is no previous payload (not judged for an intermediate
      payload); GOOD otherwise. The result's verdict is the worst, its reason the reasons of
      the payloads that are not GOOD (payload, numbers, worst channels: each channel once,
      with its IoV; "no pull" and why when no errors allowed one).

Channel counts (:func:`channel_counts`)
    Over payloads: each row of a payload with a status column counts once: OK as ``OK``;
    NOT_ENOUGH_DATA and FAILED rows that carry a finite value (a substitute was written: a
    neighbour's constants, a board or sensor mean, a default) as ``fallback``, those without as
    their status; DEAD, HOT and UNUSABLE as ``masked``. Payloads without status count their
    rows as OK. A list payload's rows are the channels it lists, with their status: hot and
    dead pixel lists count as ``masked`` (the channels they do not list are not counted). A
    time-dependent payload counts a row per interval (and channel): a fallen-back interval
    counts as ``fallback``. A channel flagged with a placeholder value (e.g. 0.0, as
    :func:`~b2calib.calibration.toolkit.channel_payload` writes with ``flagged=``) is finite,
    so it counts as ``fallback``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import hist
import numpy as np
import numpy.typing as npt

from b2calib.calibration.algorithm import Diagnostics
from b2calib.conditions import eventdep
from b2calib.conditions.iov import IoV
from b2calib.conditions.payload import Payload
from b2calib.conditions.payloadtypes import PAYLOAD_TYPES
from b2calib.conditions.status import ChannelStatus
from b2calib.exceptions import CalibrationError

if TYPE_CHECKING:
    from b2calib.calibration.declaration import Calibration
    from b2calib.calibration.jobs import Job
    from b2calib.conditions.database import ConditionsDB

__all__ = [
    "CHANNEL_KEYS",
    "PairComparison",
    "PayloadComparison",
    "PayloadValidation",
    "ValidationContext",
    "ValidationResult",
    "Validator",
    "Verdict",
    "channel_counts",
    "finite_rows",
    "no_ok_channel",
    "pairs",
    "previous_payloads",
    "validate_job",
]

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Items = Mapping[str, list[tuple[IoV, Payload]]]
#: Per payload name, per new IoV (same position): the previous payload with its IoV, or None.
Previous = Mapping[str, list[tuple[IoV, Payload] | None]]

#: The keys of :func:`channel_counts`, in the order a summary shows them.
CHANNEL_KEYS = ("OK", "fallback", "NOT_ENOUGH_DATA", "FAILED", "masked")
_MASKED = (ChannelStatus.DEAD, ChannelStatus.HOT, ChannelStatus.UNUSABLE)
#: Bins of the pull histograms (pulls beyond the range fall in the flow bins).
PULL_BINS = (50, -10.0, 10.0)
#: Channels named in a reason at most.
WORST = 5


class Verdict(enum.Enum):
    """The outcome of a validation, worst last."""

    GOOD = "GOOD"
    WARNING = "WARNING"
    ERROR = "ERROR"

    @property
    def rank(self) -> int:
        """0 GOOD, 1 WARNING, 2 ERROR."""
        return _RANK[self]


_RANK = {Verdict.GOOD: 0, Verdict.WARNING: 1, Verdict.ERROR: 2}


def _worst(verdicts: Iterable[Verdict]) -> Verdict:
    return max(verdicts, key=lambda v: v.rank, default=Verdict.GOOD)


# ----------------------------------------------------------------------------- channel counts
def finite_rows(payload: Payload) -> npt.NDArray[np.bool_]:
    """Rows with a finite value in every value column."""
    ok = np.ones(len(payload), dtype=bool)
    for col in payload.values.values():
        if col.dtype.kind in "fc":
            ok &= np.isfinite(col)
    return ok


def channel_counts(payloads: Iterable[Payload]) -> dict[str, int]:
    """Rows of ``payloads`` by what they hold: ``OK``, ``fallback``, ``NOT_ENOUGH_DATA``,
    ``FAILED``, ``masked`` (see the module's description: a NOT_ENOUGH_DATA or FAILED row with
    a finite value is a fallback; DEAD, HOT and UNUSABLE rows are masked; a payload without
    status counts its rows as OK; list and time-dependent payloads count their rows)."""
    counts = dict.fromkeys(CHANNEL_KEYS, 0)
    for p in payloads:
        if p.status is None:
            counts["OK"] += len(p)
            continue
        s = p.status
        finite = finite_rows(p)
        lacking = (s == ChannelStatus.NOT_ENOUGH_DATA) | (s == ChannelStatus.FAILED)
        counts["OK"] += int(np.sum(s == ChannelStatus.OK))
        counts["fallback"] += int(np.sum(lacking & finite))
        counts["NOT_ENOUGH_DATA"] += int(np.sum((s == ChannelStatus.NOT_ENOUGH_DATA) & ~finite))
        counts["FAILED"] += int(np.sum((s == ChannelStatus.FAILED) & ~finite))
        counts["masked"] += int(np.isin(s, np.array(_MASKED, dtype=np.int8)).sum())
    return counts


def no_ok_channel(counts: Mapping[str, int]) -> bool:
    """Whether counts of :func:`channel_counts` (e.g. a job summary's ``"channels"``) have no
    OK channel while some channel fell back or failed: every channel the calibration was to
    determine is a substitute or missing, so the calibration must not read as a plain OK. Masks
    only (lists of hot or dead channels) and no channel at all are not such a case."""
    lacking = sum(int(counts.get(k, 0)) for k in ("fallback", "NOT_ENOUGH_DATA", "FAILED"))
    return int(counts.get("OK", 0)) == 0 and lacking > 0


# ------------------------------------------------------------------------------ results
@dataclass
class PayloadValidation:
    """The comparison of one payload name's new revisions with the previous ones.

    Attributes
    ----------
    name
        The payload name.
    verdict, reason
        This payload's verdict and why (empty reason when GOOD with nothing to say).
    iovs
        The new IoVs compared.
    previous
        The previous payloads compared with (``"name rev N in TAG"``), empty when none.
    compared
        Channels compared (OK in both), over the IoVs (and intervals).
    outliers
        Compared channels beyond the thresholds.
    newly_flagged, recovered
        Channels OK before and not now, and the reverse (list payloads: rows added).
    newly_limited
        Of ``newly_flagged``, the channels NOT_ENOUGH_DATA now: statistics-limited in this
        data (with or without a fallback value), not channels that went DEAD, HOT or FAILED.
    newly_limited_without_value
        Of ``newly_limited``, those without a finite value (no fallback was written).
    newly_by_status
        ``newly_flagged`` by their new status name (``{"DEAD": 39, "NOT_ENOUGH_DATA": 8}``).
    previous_without_status
        Whether a previous payload compared carries no channel status (e.g. a simulator's truth
        or a payload type without flags): its channels all count as OK before, so a channel
        flagged now (a known dead wire) counts as newly flagged.
    added, removed
        Rows only in the new payload, only in the previous one.
    max_abs_pull
        The largest absolute pull (NaN when no pull could be computed).
    channels
        :func:`channel_counts` of the new payloads.
    worst
        The worst channels, each channel (and column) once: ``{"keys": {...}, "column", "new",
        "old", "diff", "pull", "iov", "previous", "n_iovs", "n_previous"}`` (``iov`` and
        ``previous``: the new IoV and the previous payload of its worst value; ``n_iovs``,
        ``n_previous``: in how many new IoVs, against how many previous payloads it is an
        outlier).
    pulls_missing
        Why no pull was computed, when none was (``""`` otherwise): the outliers were then
        judged by the change thresholds.
    """

    name: str
    verdict: Verdict
    reason: str = ""
    iovs: list[str] = field(default_factory=list)
    previous: list[str] = field(default_factory=list)
    compared: int = 0
    outliers: int = 0
    newly_flagged: int = 0
    recovered: int = 0
    added: int = 0
    removed: int = 0
    max_abs_pull: float = math.nan
    channels: dict[str, int] = field(default_factory=dict)
    worst: list[dict[str, Any]] = field(default_factory=list)
    newly_limited: int = 0
    newly_by_status: dict[str, int] = field(default_factory=dict)
    previous_without_status: bool = False
    pulls_missing: str = ""
    newly_limited_without_value: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the stored per-payload summary)."""
        return {
            "name": self.name,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "iovs": list(self.iovs),
            "previous": list(self.previous),
            "compared": self.compared,
            "outliers": self.outliers,
            "newly_flagged": self.newly_flagged,
            "recovered": self.recovered,
            "added": self.added,
            "removed": self.removed,
            "max_abs_pull": None if math.isnan(self.max_abs_pull) else self.max_abs_pull,
            "channels": dict(self.channels),
            "worst": list(self.worst),
            "newly_limited": self.newly_limited,
            "newly_by_status": dict(self.newly_by_status),
            "previous_without_status": self.previous_without_status,
            "pulls_missing": self.pulls_missing,
            "newly_limited_without_value": self.newly_limited_without_value,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PayloadValidation:
        """Read :meth:`as_dict`'s form."""
        pull = d.get("max_abs_pull")
        return cls(
            name=str(d["name"]),
            verdict=Verdict(d["verdict"]),
            reason=str(d.get("reason", "")),
            iovs=list(d.get("iovs", [])),
            previous=list(d.get("previous", [])),
            compared=int(d.get("compared", 0)),
            outliers=int(d.get("outliers", 0)),
            newly_flagged=int(d.get("newly_flagged", 0)),
            recovered=int(d.get("recovered", 0)),
            added=int(d.get("added", 0)),
            removed=int(d.get("removed", 0)),
            max_abs_pull=math.nan if pull is None else float(pull),
            channels={str(k): int(v) for k, v in d.get("channels", {}).items()},
            worst=list(d.get("worst", [])),
            newly_limited=int(d.get("newly_limited", 0)),
            newly_by_status={str(k): int(v) for k, v in d.get("newly_by_status", {}).items()},
            previous_without_status=bool(d.get("previous_without_status", False)),
            pulls_missing=str(d.get("pulls_missing", "")),
            newly_limited_without_value=int(d.get("newly_limited_without_value", 0)),
        )


@dataclass
class ValidationResult:
    """A validation's verdict, its reason, the per-payload summaries and the diagnostics
    (tables and histograms for the dashboards)."""

    verdict: Verdict
    reason: str
    payloads: list[PayloadValidation] = field(default_factory=list)
    diagnostics: Diagnostics = field(default_factory=Diagnostics)

    def summary(self) -> list[dict[str, Any]]:
        """The per-payload summaries, JSON-ready."""
        return [p.as_dict() for p in self.payloads]


@dataclass(frozen=True)
class ValidationContext:
    """What a validator knows besides the payloads: the calibration, its job key, the staging
    tag, the previous tags compared with, where each previous payload was found
    (``sources[name][i]``: ``"name rev N in TAG"`` for the ``i``-th new IoV, empty when none)
    and the previous payloads that start inside a new IoV (``later``)."""

    calibration: str
    job: str = ""
    staging_tag: str = ""
    previous_tags: tuple[str, ...] = ()
    sources: Mapping[str, list[str]] = field(default_factory=dict)
    #: ``later[name][i]``: the other previous payloads valid inside the ``i``-th new IoV
    #: (the previous constants changed inside it), with their IoV and source; each is compared
    #: too (the data of those runs would have been processed with them).
    later: Mapping[str, list[list[tuple[IoV, Payload, str]]]] = field(default_factory=dict)


@runtime_checkable
class Validator(Protocol):
    """Compares a calibration's new payloads with the previous ones.

    ``new`` maps each payload name to its staged ``(IoV, payload)`` pairs; ``previous`` to one
    entry per new IoV (same position): the ``(IoV, payload)`` valid before at the IoV's first
    run, or ``None`` when there was none (a name absent from ``previous``: none for any IoV).
    """

    def __call__(
        self, new: Items, previous: Previous, context: ValidationContext
    ) -> ValidationResult: ...


# --------------------------------------------------------------------------- the comparison
def _fraction(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    if not 0.0 <= value <= 1.0:
        raise CalibrationError(
            f"PayloadComparison: {what} must be a fraction in [0, 1], not {value}"
        )
    return float(value)


@dataclass(frozen=True)
class PayloadComparison:
    """The default validator: per-channel comparison with the previous payloads (see the
    module's description).

    Parameters
    ----------
    max_pull
        A channel whose abs(pull) exceeds it is an outlier; ``None``: pulls are not judged
        (constants expected to move by more than their errors, e.g. per-run values).
    max_rel_change
        For channels without a pull: abs((new - old) / old) beyond it is an outlier.
    max_abs_change
        For channels without a pull: abs(new - old) beyond it is an outlier (constants
        whose scale is absolute: time offsets in ns, positions in cm).
    warn_outlier_fraction, error_outlier_fraction
        Fractions of the compared channels beyond which outliers give WARNING, ERROR (a
        fraction of 0 warns at the first outlier).
    warn_new_flagged_fraction, error_new_flagged_fraction
        The same for channels newly flagged DEAD, HOT, UNUSABLE or FAILED (OK before, not OK
        now; list payloads: rows added, as a fraction of the new list).
    error_limited_fraction
        Channels newly NOT_ENOUGH_DATA (statistics-limited in this data: the calibration kept
        a fallback or no value, the channel did not go bad) give WARNING beyond
        ``warn_new_flagged_fraction`` and ERROR only beyond this fraction (default 0.5: most of
        the channels were not calibrated by this data).
    intermediate
        The payload is an intermediate result that the calibration combines into another of
        its payloads (e.g. one method's ECL crystal energies): having no OK channel is a
        WARNING, not an ERROR, and having no previous payload is not judged (it is reported).
    columns
        The value columns to compare (default: every numeric value column both payloads
        have; ``()``: none, only the flags and rows); each must be a column of the new payloads
        (a previous payload without it, e.g. a simulator's truth, is not compared on it).
    per_payload
        Payload name -> the comparison for it, for a calibration whose payloads need other
        thresholds (a gain and a time offset); the other names get this one.
    """

    max_pull: float | None = 5.0
    max_rel_change: float | None = None
    warn_outlier_fraction: float = 0.0
    error_outlier_fraction: float = 0.05
    warn_new_flagged_fraction: float = 0.001
    error_new_flagged_fraction: float = 0.05
    columns: tuple[str, ...] | None = None
    max_abs_change: float | None = None
    per_payload: Mapping[str, PayloadComparison] = field(default_factory=dict, hash=False)
    error_limited_fraction: float = 0.5
    intermediate: bool = False

    def __post_init__(self) -> None:
        for what in (
            "warn_outlier_fraction",
            "error_outlier_fraction",
            "warn_new_flagged_fraction",
            "error_new_flagged_fraction",
            "error_limited_fraction",
        ):
            _fraction(getattr(self, what), what)
        for what in ("max_pull", "max_rel_change", "max_abs_change"):
            v = getattr(self, what)
            if v is not None and not v > 0:
                raise CalibrationError(f"PayloadComparison: {what} must be positive, not {v}")
        if self.warn_outlier_fraction > self.error_outlier_fraction:
            raise CalibrationError(
                "PayloadComparison: warn_outlier_fraction > error_outlier_fraction"
            )
        if self.warn_new_flagged_fraction > self.error_new_flagged_fraction:
            raise CalibrationError(
                "PayloadComparison: warn_new_flagged_fraction > error_new_flagged_fraction"
            )
        if self.warn_new_flagged_fraction > self.error_limited_fraction:
            raise CalibrationError(
                "PayloadComparison: warn_new_flagged_fraction > error_limited_fraction"
            )
        if self.columns is not None:
            object.__setattr__(self, "columns", tuple(self.columns))

    def __call__(
        self, new: Items, previous: Previous, context: ValidationContext
    ) -> ValidationResult:
        """Compare every payload name of ``new`` with ``previous``."""
        diagnostics = Diagnostics()
        results = [
            self.per_payload.get(name, self)._name(
                name,
                items,
                list(previous.get(name, [])),
                list(context.sources.get(name, [])),
                diagnostics,
                list(context.later.get(name, [])),
            )
            for name, items in sorted(new.items())
        ]
        verdict = _worst(r.verdict for r in results)
        if not results:
            return ValidationResult(
                Verdict.WARNING, f"{context.calibration}: no payload was staged to validate"
            )
        bad = [r for r in results if r.verdict is not Verdict.GOOD]
        reason = "; ".join(f"{r.name}: {r.reason}" for r in bad) or (
            "within thresholds: " + ", ".join(f"{r.name} {_compared_text(r)}" for r in results)
        )
        return ValidationResult(verdict, reason, results, diagnostics)

    # -- one payload name ------------------------------------------------------------------
    def _name(
        self,
        name: str,
        items: list[tuple[IoV, Payload]],
        previous: list[tuple[IoV, Payload] | None],
        sources: list[str],
        diagnostics: Diagnostics,
        later: list[list[tuple[IoV, Payload, str]]] | None = None,
    ) -> PayloadValidation:
        pv = PayloadValidation(name, Verdict.GOOD, iovs=[str(iov) for iov, _ in items])
        pv.channels = channel_counts(p for _, p in items)
        tables: list[dict[str, npt.NDArray[Any]]] = []
        pulls: dict[str, list[F]] = {}
        worst: list[tuple[float, dict[str, Any]]] = []
        missing: list[str] = []
        missing_pulls: set[str] = set()
        spans: list[str] = []
        per_iov: dict[str, tuple[int, int, int]] = {}  # IoV -> newly bad, limited, rows
        is_list = _is_list(name)
        rows = 0
        for i, (iov, p) in enumerate(items):
            found = previous[i] if i < len(previous) else None
            if found is None:
                missing.append(str(iov))
                continue
            old_iov, old = found
            source = sources[i] if i < len(sources) and sources[i] else f"{name} [{old_iov}]"
            if source not in pv.previous:
                pv.previous.append(source)
            others = later[i] if later and i < len(later) else []
            todo = [(*pair, source) for pair in pairs(p, old)]
            changes = []  # the later previous payloads compared (a time overlap for intervals)
            for o_iov, o, src in others:
                overlapping = pairs(p, o, later=True)
                todo += [(*pair, src or name) for pair in overlapping]
                if overlapping:
                    changes.append(f"{o_iov.first_exp},{o_iov.first_run}")
            if changes:
                spans.append(
                    f"IoV {iov} spans {len(changes)} change"
                    + ("s" if len(changes) > 1 else "")
                    + " of the previous constants (from run "
                    + ", ".join(changes)
                    + "): compared with each"
                )
            for new_part, old_part, src in todo:
                c = self.compare(new_part, old_part)
                pv.compared += c.compared
                pv.outliers += c.outliers
                pv.newly_flagged += c.newly_flagged
                pv.newly_limited += c.newly_limited
                for k, n in c.newly_by_status.items():
                    pv.newly_by_status[k] = pv.newly_by_status.get(k, 0) + n
                pv.previous_without_status |= c.previous_without_status
                if c.pulls_missing:
                    missing_pulls.add(c.pulls_missing)
                pv.recovered += c.recovered
                pv.added += c.added
                pv.removed += c.removed
                rows += len(new_part)
                n_bad, n_lim, n_rows = per_iov.get(str(iov), (0, 0, 0))
                per_iov[str(iov)] = (
                    n_bad + c.newly_flagged - c.newly_limited,
                    n_lim + c.newly_limited,
                    n_rows + len(new_part),
                )
                pv.newly_limited_without_value += c.newly_limited_without_value
                tables.append(c.table)
                for col, arr in c.pulls.items():
                    pulls.setdefault(col, []).append(arr)
                worst += [(score, w | {"iov": str(iov), "previous": src}) for score, w in c.worst]
        if tables:
            diagnostics.tables[name] = _concat(tables)
        all_pulls = []
        for col, parts in pulls.items():
            arr = np.concatenate(parts)
            arr = arr[np.isfinite(arr)]
            all_pulls.append(arr)
            h: hist.Hist = hist.Hist(
                hist.axis.Regular(*PULL_BINS, name="pull", label=f"{name} {col} pull")
            )
            h.fill(arr)
            diagnostics.histograms[f"{name}_{col}_pull"] = h
        finite = np.concatenate(all_pulls) if all_pulls else np.zeros(0)
        pv.max_abs_pull = float(np.max(np.abs(finite))) if len(finite) else math.nan
        if not len(finite) and missing_pulls:
            pv.pulls_missing = " or ".join(sorted(missing_pulls))
        pv.worst = _worst_channels(worst)
        self._judge(pv, missing, is_list, rows, per_iov)
        if spans:
            pv.reason = "; ".join([pv.reason, *spans] if pv.reason else spans)
        return pv

    def _judge(
        self,
        pv: PayloadValidation,
        missing: list[str],
        is_list: bool,
        rows: int,
        per_iov: Mapping[str, tuple[int, int, int]],
    ) -> None:
        verdicts: list[Verdict] = []
        reasons: list[str] = []
        if no_ok_channel(pv.channels):
            ch = pv.channels
            verdicts.append(Verdict.WARNING if self.intermediate else Verdict.ERROR)
            reasons.append(
                ("intermediate payload with " if self.intermediate else "")
                + f"no OK channel: {ch['fallback']} fell back, {ch['NOT_ENOUGH_DATA']} "
                f"NOT_ENOUGH_DATA, {ch['FAILED']} FAILED without a value"
            )
        if missing:
            if not self.intermediate:
                verdicts.append(Verdict.WARNING)
            reasons.append(
                "no previous payload to compare with for IoV"
                + ("s " if len(missing) > 1 else " ")
                + ", ".join(missing)
            )
        if pv.compared:
            frac = pv.outliers / pv.compared
            level = self._level(
                frac, pv.outliers, self.warn_outlier_fraction, self.error_outlier_fraction
            )
            if level is not Verdict.GOOD:
                pulls = (
                    f"largest |pull| {pv.max_abs_pull:.3g}"
                    if math.isfinite(pv.max_abs_pull)
                    else f"no pull: {pv.pulls_missing or 'no errors'}"
                )
                verdicts.append(level)
                reasons.append(
                    f"{pv.outliers} of {pv.compared} channels ({100 * frac:.3g} %) are outliers"
                    f" ({self._limits()}; {pulls}); worst: " + _worst_text(pv.worst)
                )
        elif not missing and not is_list and pv.channels.get("OK", 0):
            verdicts.append(Verdict.WARNING)
            reasons.append("no channel OK in both the new and the previous payload to compare")
        base = rows  # the new payloads' channels (a list's: the channels it lists)
        unknown = " (the previous payload has no channel status)" * pv.previous_without_status
        bad = pv.newly_flagged - pv.newly_limited
        if bad and base:
            frac = bad / base
            # judged in the IoV where most went bad: a dead region from one IoV on is not
            # diluted by the IoVs before it
            iov, (n_iov, _, rows_iov) = max(
                per_iov.items(), key=lambda kv: kv[1][0] / max(kv[1][2], 1)
            )
            frac_iov = n_iov / max(rows_iov, 1)
            level = self._level(
                max(frac, frac_iov),
                bad,
                self.warn_new_flagged_fraction,
                self.error_new_flagged_fraction,
            )
            in_iov = (
                f", {n_iov} in IoV {iov} ({100 * frac_iov:.3g} % of {rows_iov})"
                if len(per_iov) > 1 and frac_iov > frac
                else ""
            )
            if level is not Verdict.GOOD:
                verdicts.append(level)
                if is_list:
                    reasons.append(
                        f"{bad} rows added to the list ({100 * frac:.3g} % of {base}{in_iov})"
                    )
                else:
                    which = ", ".join(
                        f"{n} {k}"
                        for k, n in sorted(pv.newly_by_status.items())
                        if k != ChannelStatus.NOT_ENOUGH_DATA.name
                    )
                    reasons.append(
                        f"{bad} channels newly flagged ({which}; {100 * frac:.3g} % of {base}"
                        f"{in_iov})" + unknown
                    )
        if pv.newly_limited and base:
            frac = pv.newly_limited / base
            iov, (_, n_iov, rows_iov) = max(
                per_iov.items(), key=lambda kv: kv[1][1] / max(kv[1][2], 1)
            )
            frac_iov = n_iov / max(rows_iov, 1)
            level = self._level(
                max(frac, frac_iov),
                pv.newly_limited,
                self.warn_new_flagged_fraction,
                self.error_limited_fraction,
            )
            if level is not Verdict.GOOD:
                verdicts.append(level)
                in_iov = (
                    f", {n_iov} in IoV {iov} ({100 * frac_iov:.3g} % of {rows_iov})"
                    if len(per_iov) > 1 and frac_iov > frac
                    else ""
                )
                nan = pv.newly_limited_without_value
                reasons.append(
                    f"{pv.newly_limited} channels statistics-limited in this data (newly "
                    f"NOT_ENOUGH_DATA: not calibrated, {100 * frac:.3g} % of {base}{in_iov}"
                    + (f"; {nan} of them without a value, no fallback" if nan else "")
                    + ")"
                    + unknown
                )
        if is_list and pv.removed and verdicts:
            reasons.append(f"{pv.removed} rows removed from the list")
        if pv.recovered and verdicts:
            reasons.append(f"{pv.recovered} channels recovered")
        pv.verdict = _worst(verdicts)
        pv.reason = "; ".join(reasons)

    @staticmethod
    def _level(frac: float, n: int, warn: float, error: float) -> Verdict:
        if n and frac > error:
            return Verdict.ERROR
        if n and frac > warn:
            return Verdict.WARNING
        return Verdict.GOOD

    def _limits(self) -> str:
        out = []
        if self.max_pull is not None:
            out.append(f"|pull| > {self.max_pull:g}")
        if self.max_rel_change is not None:
            out.append(f"|relative change| > {self.max_rel_change:g}")
        if self.max_abs_change is not None:
            out.append(f"|change| > {self.max_abs_change:g}")
        return " or ".join(out)

    # -- one pair of payloads --------------------------------------------------------------
    def compare(self, new: Payload, old: Payload) -> PairComparison:
        """Compare two payloads of one name row by row (one IoV, or one interval of a
        time-dependent payload with the previous constants at its start: see :func:`pairs`).

        Rows are joined on the key columns (a time-dependent payload's time keys only when
        both have them); every value column of :meth:`_columns` is compared. The returned
        :class:`PairComparison` holds the counts (compared, outliers, newly flagged ...) and
        its ``table``: one row per joined channel (the rows of both first, in the new
        payload's order), then the rows only in the new payload, then those only in the old
        one, with the key columns, ``<col>_new``, ``<col>_old``, ``<col>_diff``,
        ``<col>_pull`` (NaN where not defined), ``status_new``, ``status_old`` (-1 where the
        row is absent), ``change`` (0 joined, 1 added, -1 removed) and ``outlier``; and
        ``new_rows`` / ``old_rows``: the index of each table row in the new / old payload
        (-1 where absent), to read more of the payloads (their errors) in the table's order.

        Raises
        ------
        CalibrationError
            The two payloads have different key columns.
        """
        key_cols = [k for k in new.keys if k not in eventdep.TIME_KEYS or k in old.keys]
        if [k for k in key_cols if k not in old.keys]:
            raise CalibrationError(
                f"payload {new.name}: the previous payload has key columns {list(old.keys)}, the "
                f"new one {list(new.keys)}: they cannot be compared channel by channel"
            )
        ni, oi, only_new, only_old = _join(
            [new.keys[k] for k in key_cols], [old.keys[k] for k in key_cols], len(new), len(old)
        )
        c = PairComparison()
        c.added, c.removed = len(only_new), len(only_old)
        s_new = _status(new)[ni]
        s_old = _status(old)[oi]
        both_ok = (s_new == ChannelStatus.OK) & (s_old == ChannelStatus.OK)
        # flagged now and OK before (or not listed before: a list's rows are flagged), and the
        # reverse
        was_ok = np.concatenate([s_old == ChannelStatus.OK, np.ones(len(only_new), dtype=bool)])
        is_ok = np.concatenate([s_new == ChannelStatus.OK, _status(new)[only_new] == 0])
        newly = was_ok & ~is_ok
        c.newly_flagged = int(np.sum(newly))
        s_now = np.concatenate([s_new, _status(new)[only_new]])[newly]
        for code, n in zip(*np.unique(s_now, return_counts=True), strict=True):
            c.newly_by_status[ChannelStatus(int(code)).name] = int(n)
        c.newly_limited = c.newly_by_status.get(ChannelStatus.NOT_ENOUGH_DATA.name, 0)
        finite_now = np.concatenate([finite_rows(new)[ni], finite_rows(new)[only_new]])[newly]
        c.newly_limited_without_value = int(
            np.sum((s_now == ChannelStatus.NOT_ENOUGH_DATA) & ~finite_now)
        )
        c.previous_without_status = old.status is None
        c.recovered = int(np.sum((s_old != ChannelStatus.OK) & (s_new == ChannelStatus.OK)))
        c.recovered += int(np.sum(_status(old)[only_old] != ChannelStatus.OK))
        table: dict[str, npt.NDArray[Any]] = {
            k: np.concatenate([new.keys[k][ni], new.keys[k][only_new], old.keys[k][only_old]])
            for k in key_cols
        }
        if eventdep.is_time_dependent(new):
            for k in eventdep.TIME_KEYS:
                if k not in table:
                    table[k] = np.concatenate(
                        [new.keys[k][ni], new.keys[k][only_new], np.zeros(len(only_old), np.int64)]
                    )
        n_rows = len(ni) + len(only_new) + len(only_old)
        outlier = np.zeros(len(ni), dtype=bool)
        for col in self._columns(new, old):
            vn = new.values[col][ni].astype(np.float64)
            vo = old.values[col][oi].astype(np.float64)
            diff = vn - vo
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(vo != 0, diff / np.abs(vo), np.where(diff == 0, 0.0, np.inf))
            pull = np.full(len(ni), np.nan)
            if col not in old.errors:
                c.pulls_missing = "the previous payload has no errors"
            elif col not in new.errors:
                c.pulls_missing = "the new payload has no errors"
            if col in new.errors and col in old.errors:
                en = new.errors[col][ni].astype(np.float64)
                eo = old.errors[col][oi].astype(np.float64)
                sigma = np.sqrt(en**2 + eo**2)
                with np.errstate(divide="ignore", invalid="ignore"):
                    pull = np.where(np.isfinite(sigma) & (sigma > 0), diff / sigma, np.nan)
            out = np.zeros(len(ni), dtype=bool)
            rest = both_ok.copy()
            if self.max_pull is not None:
                judged = np.isfinite(pull) & both_ok
                out |= judged & (np.abs(pull) > self.max_pull)
                rest &= ~judged
            if self.max_rel_change is not None:
                out |= rest & (np.abs(rel) > self.max_rel_change)
            if self.max_abs_change is not None:
                out |= rest & (np.abs(diff) > self.max_abs_change)
            outlier |= out
            c.pulls[col] = pull[both_ok]
            pad = np.full(len(only_new) + len(only_old), np.nan)
            vn_all = np.concatenate(
                [vn, new.values[col][only_new].astype(np.float64), pad[len(only_new) :]]
            )
            vo_all = np.concatenate(
                [vo, pad[: len(only_new)], old.values[col][only_old].astype(np.float64)]
            )
            table[f"{col}_new"] = vn_all
            table[f"{col}_old"] = vo_all
            table[f"{col}_diff"] = np.concatenate([diff, pad])
            table[f"{col}_pull"] = np.concatenate([pull, pad])
            score = np.where(np.isfinite(pull), np.abs(pull), np.abs(rel))
            flagged = np.flatnonzero(out)
            if len(flagged) > WORST:  # only the worst few are named
                flagged = flagged[np.argsort(-score[flagged], kind="stable")[:WORST]]
            for i in flagged:
                c.worst.append(
                    (
                        float(score[i]),
                        {
                            "keys": {k: int(new.keys[k][ni[i]]) for k in new.keys},
                            "column": col,
                            "new": float(vn[i]),
                            "old": float(vo[i]),
                            "diff": float(diff[i]),
                            "pull": None if not np.isfinite(pull[i]) else float(pull[i]),
                        },
                    )
                )
        c.compared = int(both_ok.sum())
        c.outliers = int(outlier.sum())
        c.worst.sort(key=lambda t: -t[0])
        del c.worst[WORST:]
        table["status_new"] = np.concatenate(
            [s_new, _status(new)[only_new], np.full(len(only_old), -1, np.int8)]
        ).astype(np.int8)
        table["status_old"] = np.concatenate(
            [s_old, np.full(len(only_new), -1, np.int8), _status(old)[only_old]]
        ).astype(np.int8)
        change = np.zeros(n_rows, dtype=np.int8)
        change[len(ni) : len(ni) + len(only_new)] = 1
        change[len(ni) + len(only_new) :] = -1
        table["change"] = change
        table["outlier"] = np.concatenate([outlier, np.zeros(n_rows - len(ni), bool)]).astype(
            np.int8
        )
        c.table = table
        none = np.full(len(only_old), -1, np.int64)
        c.new_rows = np.concatenate([ni, only_new, none]).astype(np.int64)
        c.old_rows = np.concatenate([oi, np.full(len(only_new), -1, np.int64), only_old]).astype(
            np.int64
        )
        return c

    def _columns(self, new: Payload, old: Payload) -> list[str]:
        """The value columns compared: those asked for (each a column of the new payload; one
        the previous payload lacks, e.g. a simulator's truth, is not compared), or every
        numeric one both have."""
        if self.columns is not None:
            unknown = [c for c in self.columns if c not in new.values]
            if unknown:
                raise CalibrationError(
                    f"payload {new.name}: PayloadComparison columns {unknown} are not value "
                    f"columns of the new payload ({', '.join(new.values)})"
                )
            return [c for c in self.columns if c in old.values]
        return [
            c
            for c, v in new.values.items()
            if c in old.values and v.dtype.kind in "biuf" and old.values[c].dtype.kind in "biuf"
        ]


@dataclass
class PairComparison:
    """The comparison of two payloads of one name (:meth:`PayloadComparison.compare`).

    ``compared`` channels OK in both, ``outliers`` among them, ``newly_flagged`` (of them
    ``newly_limited`` NOT_ENOUGH_DATA, ``newly_by_status`` by status name), ``recovered``,
    ``added`` and ``removed`` rows, ``pulls`` per column (of the channels OK in both),
    ``worst`` (score, description) of the outliers, ``table`` (see
    :meth:`PayloadComparison.compare`) and ``new_rows`` / ``old_rows`` (each table row's
    index in the new / old payload, -1 where absent).
    """

    compared: int = 0
    outliers: int = 0
    newly_flagged: int = 0
    newly_limited: int = 0
    newly_by_status: dict[str, int] = field(default_factory=dict)
    previous_without_status: bool = False
    pulls_missing: str = ""
    newly_limited_without_value: int = 0
    recovered: int = 0
    added: int = 0
    removed: int = 0
    pulls: dict[str, F] = field(default_factory=dict)
    worst: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    table: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    new_rows: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    old_rows: I64 = field(default_factory=lambda: np.zeros(0, np.int64))


def _compared_text(pv: PayloadValidation) -> str:
    if _is_list(pv.name):
        listed = sum(pv.channels.values())
        return f"({listed} listed, {pv.added} added, {pv.removed} removed)"
    return f"({pv.compared} channels compared)"


def _worst_text(worst: list[dict[str, Any]]) -> str:
    out = []
    for w in worst[:WORST]:
        keys = ",".join(f"{k}={v}" for k, v in w["keys"].items())
        pull = "" if w["pull"] is None else f", pull {w['pull']:.3g}"
        n, n_prev = int(w.get("n_iovs", 1)), int(w.get("n_previous", 1))
        where = f" (IoV {w['iov']}" if "iov" in w else ""
        if where and n > 1:
            where += f"; an outlier in {n} IoVs"
        if where and n == 1 and n_prev > 1:
            where += f"; an outlier against {n_prev} previous payloads"
        where += ")" if where else ""
        out.append(f"{keys} {w['column']} {w['old']:.6g} -> {w['new']:.6g}{pull}{where}")
    return "; ".join(out)


def _worst_channels(worst: list[tuple[float, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The ``WORST`` worst entries, each channel and column once (its worst value, with the
    number of IoVs or intervals in which it is among the outliers)."""
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    where: dict[tuple[Any, ...], tuple[set[str], set[str]]] = {}
    for _, w in sorted(worst, key=lambda t: -t[0]):
        k = (tuple(sorted(w["keys"].items())), w["column"])
        seen.setdefault(k, dict(w))
        iovs, previous = where.setdefault(k, (set(), set()))
        iovs.add(str(w.get("iov", "")))
        previous.add(str(w.get("previous", "")))
    for k, w in seen.items():
        w["n_iovs"], w["n_previous"] = len(where[k][0]), len(where[k][1])
    return list(seen.values())[:WORST]


def _is_list(name: str) -> bool:
    kind = PAYLOAD_TYPES.get(name)
    return kind is not None and kind.rows is None and not kind.time_dependent


def _status(p: Payload) -> npt.NDArray[np.int8]:
    if p.status is None:
        return np.zeros(len(p), dtype=np.int8)
    return p.status


def pairs(new: Payload, old: Payload, later: bool = False) -> list[tuple[Payload, Payload]]:
    """The (new, previous) payloads to compare row by row: a time-dependent new payload per
    interval with the previous constants at the interval's start; else the payloads. ``later``:
    ``old`` is a previous payload starting inside the new IoV: a time-dependent new payload's
    intervals are compared with it only where their times overlap (a run's constants are not
    compared with another run's data), at the later of the two starts."""
    if not eventdep.is_time_dependent(new):
        if eventdep.is_time_dependent(old):
            raise CalibrationError(
                f"payload {new.name}: the new payload is run-level, the previous one "
                "time-dependent: they cannot be compared channel by channel"
            )
        return [(new, old)]
    starts, ends = eventdep.intervals(new)
    span = eventdep.intervals(old) if eventdep.is_time_dependent(old) else None
    out = []
    for t, t_end in zip(starts.tolist(), ends.tolist(), strict=True):
        at = t  # the time at which the previous constants are taken
        if later and span is not None:
            if not (int(span[0].min()) < t_end and t < int(span[1].max())):
                continue
            at = max(t, int(span[0].min()))
        sel = new.keys["t_start"] == t
        part = Payload(
            new.name,
            keys={k: v[sel] for k, v in new.keys.items()},
            values={k: v[sel] for k, v in new.values.items()},
            errors={k: v[sel] for k, v in new.errors.items()},
            status=None if new.status is None else new.status[sel],
            metadata=dict(new.metadata),
        )
        prev = eventdep.at_time(old, int(at)) if span is not None else old
        out.append((part, prev))
    return out


def _row_ids(columns: list[npt.NDArray[Any]], n: int) -> I64:
    """One int64 per row identifying its key combination (the same combination, the same id,
    across the arrays concatenated in ``columns``): the keys packed into one integer when their
    ranges allow (10^5-10^6 rows of strips or pixels), else their rank."""
    if not columns or n == 0:
        return np.zeros(n, dtype=np.int64)
    rows = [c.astype(np.int64) for c in columns]
    lo = [int(c.min()) for c in rows]
    span = [int(c.max()) - a + 1 for c, a in zip(rows, lo, strict=True)]
    if float(np.prod(np.array(span, dtype=np.float64))) < 2.0**62:
        packed = np.zeros(n, dtype=np.int64)
        for c, a, w in zip(rows, lo, span, strict=True):
            packed = packed * w + (c - a)
        return packed
    _, inverse = np.unique(np.column_stack(rows), axis=0, return_inverse=True)
    return np.asarray(inverse, dtype=np.int64).ravel()


def _join(
    new_keys: list[npt.NDArray[Any]], old_keys: list[npt.NDArray[Any]], n_new: int, n_old: int
) -> tuple[I64, I64, I64, I64]:
    """Indices of the rows of the new and old payloads with the same keys (in new order), and
    of the rows only in the new, only in the old one."""
    ids = _row_ids(
        [np.concatenate([a, b]) for a, b in zip(new_keys, old_keys, strict=True)], n_new + n_old
    )
    a, b = ids[:n_new], ids[n_new:]
    order = np.argsort(b, kind="stable")
    pos = np.searchsorted(b[order], a)
    pos = np.clip(pos, 0, max(len(b) - 1, 0))
    hit = (b[order][pos] == a) if len(b) else np.zeros(len(a), dtype=bool)
    ni = np.flatnonzero(hit)
    oi = order[pos[hit]] if len(b) else np.zeros(0, dtype=np.int64)
    only_old = np.setdiff1d(np.arange(n_old), oi, assume_unique=False)
    return ni, np.asarray(oi, np.int64), np.flatnonzero(~hit), only_old


def _concat(tables: list[dict[str, npt.NDArray[Any]]]) -> dict[str, npt.NDArray[Any]]:
    """The tables of several IoVs (intervals) as one: the columns they all have."""
    cols = [c for c in tables[0] if all(c in t for t in tables)]
    return {c: np.concatenate([t[c] for t in tables]) for c in cols}


# ------------------------------------------------------------------------------ running it
def previous_payloads(
    db: ConditionsDB, items: Items, tags: Sequence[str]
) -> tuple[dict[str, list[tuple[IoV, Payload] | None]], dict[str, list[str]]]:
    """For each IoV of ``items``, the payload of the same name valid at its first run through
    ``tags`` (highest priority first) with its IoV there, or ``None``; and where each was found
    (``"name rev N in TAG"``). One query per tag, each revision read once."""
    runs = sorted({iov.start for pairs in items.values() for iov, _ in pairs})
    found = db.lookup_many(runs, list(tags), names=list(items)) if tags and runs else {}
    cache: dict[tuple[str, int], Payload] = {}
    out: dict[str, list[tuple[IoV, Payload] | None]] = {}
    sources: dict[str, list[str]] = {}
    for name, pairs in items.items():
        out[name], sources[name] = [], []
        for iov, _ in pairs:
            entry = found.get(iov.start, {}).get(name)
            if entry is None:
                out[name].append(None)
                sources[name].append("")
                continue
            k = (name, entry.payload.revision)
            if k not in cache:
                cache[k] = db.payload(entry.payload)
            out[name].append((entry.iov, cache[k]))
            sources[name].append(f"{name} rev {entry.payload.revision} in {entry.globaltag}")
    return out, sources


def _later_payloads(
    db: ConditionsDB, items: Items, tags: Sequence[str], sources: Mapping[str, list[str]]
) -> dict[str, list[list[tuple[IoV, Payload, str]]]]:
    """Per payload name and new IoV: the previous payloads (through ``tags``, highest priority
    first) valid at the runs where a previous IoV starts inside the new IoV, other than the one
    valid at its first run, with their IoV and source."""
    out: dict[str, list[list[tuple[IoV, Payload, str]]]] = {}
    for name, pairs in items.items():
        starts = {e.iov.start for tag in tags for e in db.iovs(tag, name)}
        inside = [
            sorted(r for r in starts if iov.contains(*r) and r != iov.start) for iov, _ in pairs
        ]
        runs = sorted({r for rs in inside for r in rs})
        found = db.lookup_many(runs, list(tags), names=[name]) if runs else {}
        out[name] = []
        for i, rs in enumerate(inside):
            seen = {sources.get(name, [""] * len(pairs))[i]}
            here: list[tuple[IoV, Payload, str]] = []
            for r in rs:
                entry = found.get(r, {}).get(name)
                if entry is None:
                    continue
                src = f"{name} rev {entry.payload.revision} in {entry.globaltag}"
                if src in seen:
                    continue
                seen.add(src)
                here.append((entry.iov, db.payload(entry.payload), src))
            out[name].append(here)
    return out


def validate_job(
    db: ConditionsDB,
    job: Job,
    previous_tags: Sequence[str],
    *,
    calibration: Calibration | None = None,
) -> ValidationResult:
    """Run the calibration's validator on a completed job's staged payloads, against the
    payloads valid before in ``previous_tags`` (highest priority first; the job's input tags,
    not its staging tag).

    ``calibration`` is the job's declaration when it is not registered (by default the
    registered calibration of the job's name).

    Raises
    ------
    CalibrationError
        The job has not completed, the previous tags include its staging tag, or
        ``calibration`` is another calibration than the job's.
    ConfigError
        No calibration of the job's name is registered.
    """
    from b2calib.calibration.declaration import get_calibration

    if job.state != "completed":
        raise CalibrationError(
            f"calibration job {job.key[:12]} of {job.calibration} is {job.state}, not completed: "
            "only staged payloads are validated"
        )
    if job.staging_tag in previous_tags:
        raise CalibrationError(
            f"validating {job.calibration}: the previous tags must not include the staging tag "
            f"{job.staging_tag} that holds the new payloads"
        )
    cal = calibration if calibration is not None else get_calibration(job.calibration)
    if cal.name != job.calibration:
        raise CalibrationError(
            f"calibration job {job.key[:12]} is of {job.calibration}, not of {cal.name}"
        )
    items: dict[str, list[tuple[IoV, Payload]]] = {}
    for name, rev, iov in job.summary.get("staged", []):
        items.setdefault(name, []).append((IoV.parse(iov), db.payload(name, int(rev))))
    if cal.validation is None:
        return ValidationResult(
            Verdict.GOOD, f"{job.calibration} declares no validation", [], Diagnostics()
        )
    previous, sources = previous_payloads(db, items, previous_tags)
    context = ValidationContext(
        job.calibration,
        job.key,
        job.staging_tag,
        tuple(previous_tags),
        sources,
        _later_payloads(db, items, previous_tags, sources),
    )
    return cal.validation(items, previous, context)


def __dir__() -> list[str]:
    return __all__
