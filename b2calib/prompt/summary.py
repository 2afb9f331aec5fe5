"""The prompt loop's summary: one row per calibration, per-stage times, and what the loop did
with the staging tag; as a text table and as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from b2calib.calibration.declaration import STAGES

__all__ = ["CHANNEL_KEYS", "STATUSES", "PromptRow", "PromptSummary", "StageTime"]

#: A row's status: ``FALLBACK`` is a calibration that completed but every channel of whose
#: payloads fell back or failed (it is not OK).
STATUSES = ("OK", "FALLBACK", "FAILED", "NOT_ENOUGH_DATA", "SKIPPED")
#: The channel counts shown (keys of :func:`b2calib.calibration.channel_counts`).
CHANNEL_KEYS = ("OK", "fallback", "NOT_ENOUGH_DATA", "FAILED")


@dataclass
class PromptRow:
    """One calibration of the loop.

    Attributes
    ----------
    calibration, stage
        The calibration and its prompt stage.
    status
        One of :data:`STATUSES`.
    reason
        Why it is not OK (empty when OK).
    channels
        Channel counts of its staged payloads (``OK``, ``fallback``, ``NOT_ENOUGH_DATA``,
        ``FAILED``, ``masked``).
    payloads, iovs
        Payload revisions and IoVs it staged.
    verdict, verdict_reason
        Its validation (``GOOD``, ``WARNING``, ``ERROR``; empty when not validated).
    started, finished, wall_time
        When its task ran (recorded: a re-run that had nothing to do shows the times of the
        run that did it).
    job
        The key of its calibration job (empty when none was opened).
    this_run
        Whether its task ran in this invocation of the loop (not done before).
    """

    calibration: str
    stage: str
    status: str
    reason: str = ""
    channels: dict[str, int] = field(default_factory=dict)
    payloads: int = 0
    iovs: int = 0
    verdict: str = ""
    verdict_reason: str = ""
    started: datetime | None = None
    finished: datetime | None = None
    wall_time: float | None = None
    job: str = ""
    this_run: bool = False

    @property
    def ok(self) -> bool:
        """Status OK."""
        return self.status == "OK"

    @property
    def succeeded(self) -> bool:
        """Its job completed and staged its payloads (OK or FALLBACK)."""
        return self.status in ("OK", "FALLBACK")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "calibration": self.calibration,
            "stage": self.stage,
            "status": self.status,
            "reason": self.reason,
            "channels": dict(self.channels),
            "payloads": self.payloads,
            "iovs": self.iovs,
            "verdict": self.verdict,
            "verdict_reason": self.verdict_reason,
            "started": None if self.started is None else self.started.isoformat(),
            "finished": None if self.finished is None else self.finished.isoformat(),
            "wall_time": self.wall_time,
            "job": self.job,
        }


@dataclass(frozen=True)
class StageTime:
    """The times of one stage (or of the whole loop): the sum of its calibrations' wall times
    and the elapsed time from the first start to the last finish."""

    calibrations: int
    wall_time: float
    elapsed: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "calibrations": self.calibrations,
            "wall_time": self.wall_time,
            "elapsed": self.elapsed,
        }


@dataclass
class PromptSummary:
    """What the prompt loop did on a bucket, built from the database's records.

    Attributes
    ----------
    prompt_run
        The id of this invocation of the loop (``prompt_runs``).
    staging_tag, input_tags
        Where the payloads went and the tags the calibrations started from.
    bucket, exp, runs
        The runs calibrated.
    rows
        One per calibration, in the order the loop scheduled them.
    state
        The staging tag's state at the end.
    actions
        What the loop did (or refused to do) with the staging and running tags, one sentence
        each.
    """

    prompt_run: int
    staging_tag: str
    input_tags: list[str]
    bucket: int | None
    exp: int
    runs: list[int]
    rows: list[PromptRow]
    state: str = ""
    actions: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every calibration OK."""
        return all(r.ok for r in self.rows)

    @property
    def succeeded(self) -> bool:
        """Every calibration completed (OK or FALLBACK)."""
        return all(r.succeeded for r in self.rows)

    def row(self, calibration: str) -> PromptRow:
        """The row of ``calibration``."""
        for r in self.rows:
            if r.calibration == calibration:
                return r
        raise KeyError(calibration)

    def stage_times(self) -> dict[str, StageTime]:
        """Per stage (in :data:`STAGES` order, those with calibrations) and ``"total"``."""
        out: dict[str, StageTime] = {}
        groups: dict[str, list[PromptRow]] = {}
        for r in self.rows:
            groups.setdefault(r.stage, []).append(r)
        for stage in [*STAGES, *sorted(set(groups) - set(STAGES))]:
            if stage in groups:
                out[stage] = _times(groups[stage])
        out["total"] = _times(self.rows)
        return out

    def table(self) -> str:
        """The summary as a text table, per-stage times, the reasons of the rows that are not OK
        and of the validations that are not GOOD, and what the loop did."""
        where = (
            f"bucket {self.bucket} (exp {self.exp}, runs {_span(self.runs)})"
            if self.bucket is not None
            else f"exp {self.exp}, runs {_span(self.runs)}"
        )
        lines = [
            f"prompt calibration of {where} into {self.staging_tag}"
            + (f" ({self.state})" if self.state else "")
            + (f"; input tags {', '.join(self.input_tags)}" if self.input_tags else "")
        ]
        head = ["calibration", "stage", "status", "ch OK", "fallback", "NED", "FAILED"]
        head += ["payloads", "IoVs", "verdict", "wall time"]
        body = []
        for r in self.rows:
            ch = [str(r.channels.get(k, 0)) if r.channels else "-" for k in CHANNEL_KEYS]
            staged = [str(r.payloads), str(r.iovs)] if r.succeeded else ["-", "-"]
            body.append(
                [
                    r.calibration,
                    r.stage,
                    r.status,
                    *ch,
                    *staged,
                    r.verdict or "-",
                    _secs(r.wall_time),
                ]
            )
        lines += _columns(head, body, right=set(range(3, 9)) | {10})
        lines.append("")
        times = self.stage_times()
        tbody = [
            [stage, str(t.calibrations), _secs(t.wall_time), _secs(t.elapsed)]
            for stage, t in times.items()
        ]
        lines += _columns(
            ["stage", "calibrations", "sum of wall times", "elapsed"], tbody, right={1, 2, 3}
        )
        notes = [f"{r.calibration}: {r.status}: {r.reason}" for r in self.rows if not r.ok]
        notes += [
            f"{r.calibration}: validation {r.verdict}: {r.verdict_reason}"
            for r in self.rows
            if r.verdict and r.verdict != "GOOD"
        ]
        if notes:
            lines += ["", *notes]
        if self.actions:
            lines += ["", *self.actions]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON-ready mapping (what ``b2calib prompt --json`` writes)."""
        return {
            "prompt_run": self.prompt_run,
            "staging_tag": self.staging_tag,
            "state": self.state,
            "input_tags": list(self.input_tags),
            "bucket": self.bucket,
            "exp": self.exp,
            "runs": list(self.runs),
            "ok": self.ok,
            "rows": [r.as_dict() for r in self.rows],
            "stages": {k: v.as_dict() for k, v in self.stage_times().items()},
            "actions": list(self.actions),
        }


def _times(rows: list[PromptRow]) -> StageTime:
    timed = [r for r in rows if r.started is not None and r.finished is not None]
    wall = sum(r.wall_time or 0.0 for r in rows)
    if not timed:
        return StageTime(len(rows), wall, 0.0)
    first = min(r.started for r in timed if r.started is not None)
    last = max(r.finished for r in timed if r.finished is not None)
    return StageTime(len(rows), wall, (last - first).total_seconds())


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    return f"{int(value // 60)} min {value % 60:04.1f} s"


def _span(runs: list[int]) -> str:
    if not runs:
        return "none"
    if runs == list(range(runs[0], runs[-1] + 1)):
        return f"{runs[0]}-{runs[-1]}" if len(runs) > 1 else str(runs[0])
    return ",".join(str(r) for r in runs)


def _columns(head: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


def __dir__() -> list[str]:
    return __all__
