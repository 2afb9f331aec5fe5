"""The traffic-light summary of a staging tag: one row per payload name, from the job records
of the calibrations that staged it, their validations and the prompt loop's task outcomes.

Where a row comes from
    Each IoV of the tag is matched with the calibration job that staged it (``calibration_jobs``
    of this staging tag: the job whose ``staged`` list holds the payload revision; the latest
    such job), else with the calibration its payload's provenance names (no job record: no
    status); a payload uploaded by hand has no calibration. A payload name staged by several
    calibrations (a mask from collisions and one from cosmics) has one row: ``calibration`` is
    the calibration of its first IoV, ``calibrations`` all of them, and the status, verdict,
    channel counts and wall time combine those of every job (worst status and verdict, sums).

Status (``status``)
    The prompt loop's outcome of the job's task (``OK``, ``FAILED``, ``NOT_ENOUGH_DATA``,
    ``SKIPPED``; the latest task run with that job), else ``OK`` for a completed job and
    ``FAILED`` for another; ``FALLBACK`` for an OK job none of whose channels is OK (every one
    fell back or failed, :func:`~b2calib.calibration.no_ok_channel`), as the prompt summary.

Verdict (``verdict``)
    The latest validation of the job (``calibration_validations``): the verdict and reason of
    this payload name in it (the job's verdict when the name is not in it); ``None`` when the
    job was never validated.

Light (``light``)
    ``red`` when the verdict is ERROR or the status is not OK (FALLBACK, FAILED,
    NOT_ENOUGH_DATA, SKIPPED); ``amber`` for a WARNING; ``green`` for GOOD and OK; ``grey``
    when there is no verdict (never validated, or no calibration: uploaded by hand). Rows are
    ordered red, amber, grey, green, then by name; the tag's light is the worst of its rows
    (``grey`` for an empty tag).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from b2calib.calibration.jobs import Job, JobStore, calibration_jobs
from b2calib.calibration.validation import CHANNEL_KEYS, channel_counts, no_ok_channel
from b2calib.conditions.database import ConditionsDB, GlobalTag, IovEntry
from b2calib.db import as_utc
from b2calib.exceptions import ConditionsError, ConfigError, ReviewError
from b2calib.review._cache import cached_payload

if TYPE_CHECKING:
    from b2calib.review.approval import Review

__all__ = ["LIGHTS", "PayloadRow", "TagSummary", "Unstaged", "light_of", "tag_summary"]

#: The lights, worst first.
LIGHTS = ("red", "amber", "grey", "green")
_STATUS_RANK = {"OK": 0, "FALLBACK": 1, "SKIPPED": 2, "NOT_ENOUGH_DATA": 3, "FAILED": 4}
_VERDICT_RANK = {"GOOD": 0, "WARNING": 1, "ERROR": 2}


@dataclass(frozen=True)
class PayloadRow:
    """One payload name of a staging tag (see the module's description).

    Attributes
    ----------
    name
        The payload name.
    revisions, iovs
        Its revisions and IoVs (``"16,1,16,12"``) in the tag, in IoV order.
    calibration
        The calibration that staged its first IoV (``None``: uploaded by hand or unknown).
    calibrations
        Every calibration that staged an IoV of it.
    detector
        ``"ECL"``, ``"CDC"`` ... (:func:`b2calib.detectors.detector_of`); ``None`` for a
        system's calibration (beam), an unknown one or no calibration.
    expert
        The calibration's expert contact.
    runs
        The runs of its jobs (``"16/1-3,5,7-12"``), empty when unknown.
    job_state
        The state of its job record (``completed`` ...), ``None`` without one.
    status
        OK / FALLBACK / FAILED / NOT_ENOUGH_DATA / SKIPPED, ``None`` without a job record.
    verdict
        GOOD / WARNING / ERROR, ``None`` when never validated.
    reason
        Why it is not green: the verdict's reason and the status's (empty when GOOD and OK).
    wall_time
        Seconds its jobs took (the prompt task's, else the job summary's), ``None`` unknown.
    channels
        Channel counts (``OK``, ``fallback``, ``NOT_ENOUGH_DATA``, ``FAILED``, ``masked``):
        the validation's for this name, else counted on the payloads of the tag.
    light
        ``"green"``, ``"amber"``, ``"red"`` or ``"grey"``.
    jobs
        The keys of its calibration jobs.
    """

    name: str
    revisions: tuple[int, ...]
    iovs: tuple[str, ...]
    calibration: str | None
    detector: str | None
    expert: str | None
    runs: str
    job_state: str | None
    status: str | None
    verdict: str | None
    reason: str
    wall_time: float | None
    channels: Mapping[str, int]
    light: str
    calibrations: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Unstaged:
    """A calibration that ran for the tag (a prompt task or a job into it) and staged nothing
    in it: FAILED, NOT_ENOUGH_DATA, SKIPPED, or a job that did not complete. Its light is
    red."""

    calibration: str
    detector: str | None
    expert: str | None
    status: str
    reason: str
    wall_time: float | None
    job: str
    light: str = "red"


@dataclass(frozen=True)
class TagSummary:
    """The summary of a staging tag.

    Attributes
    ----------
    tag
        The tag's record.
    rows
        One per payload name, worst light first, then by name.
    inputs
        The tags its new payloads are compared with: the input tags of its jobs (highest
        priority first, each once).
    reviews
        Its approvals and rejections, oldest first.
    light
        The worst light of its rows (``grey`` for an empty tag).
    detectors
        The detectors whose calibrations staged into it.
    unowned
        Payload names of no detector's calibration (a system's such as the beam spot,
        uploaded by hand, or of an unknown calibration): only a manager reviews a tag with
        them.
    unstaged
        The calibrations that ran for the tag and staged nothing in it (their latest prompt
        task or job), by name; each is red, and counts in the tag's light.
    """

    tag: GlobalTag
    rows: tuple[PayloadRow, ...]
    inputs: tuple[str, ...]
    reviews: tuple[Review, ...]
    light: str
    detectors: frozenset[str]
    unowned: tuple[str, ...] = field(default=())
    unstaged: tuple[Unstaged, ...] = field(default=())

    def row(self, name: str) -> PayloadRow:
        """The row of payload ``name``; :class:`ReviewError` when the tag has none."""
        for r in self.rows:
            if r.name == name:
                return r
        raise ReviewError(f"global tag {self.tag.name} has no payload {name!r}")


def light_of(calibration: str | None, status: str | None, verdict: str | None) -> str:
    """The light of a row (see the module's description)."""
    if calibration is None:
        return "grey"
    if verdict == "ERROR" or (status is not None and status != "OK"):
        return "red"
    if verdict is None:
        return "grey"
    return "amber" if verdict == "WARNING" else "green"


# ----------------------------------------------------------------------------- who staged what
@dataclass(frozen=True)
class _Origin:
    """Who staged one IoV: the job (when recorded) and its calibration."""

    calibration: str | None
    job: Job | None


def jobs_of(db: ConditionsDB, tag: str) -> list[tuple[Job, list[str]]]:
    """The calibration jobs that stage into ``tag``, latest first, each with the input tags it
    ran with (highest priority first: the tags its validation compared with)."""
    from b2calib.calibration.jobs import _job

    j = calibration_jobs
    with db.read() as conn:
        rows = conn.execute(sa.select(j).where(j.c.staging_tag == tag).order_by(j.c.id.desc()))
        return [
            (_job(r), [str(t) for t in json.loads(r.inputs).get("input_tags", [])]) for r in rows
        ]


def origins(
    db: ConditionsDB, tag: str, entries: Sequence[IovEntry] | None = None
) -> tuple[list[IovEntry], list[_Origin], list[tuple[Job, list[str]]]]:
    """The tag's IoVs (by name and start), who staged each, and the tag's jobs with their
    input tags (:func:`jobs_of`)."""
    if entries is None:
        entries = db.iovs(tag)
    jobs = jobs_of(db, tag)
    exact: dict[tuple[str, int, str], Job] = {}
    by_revision: dict[tuple[str, int], Job] = {}
    by_calibration: dict[str, Job] = {}
    for job, _ in jobs:  # latest first: setdefault keeps the latest
        if job.state != "completed":
            continue
        by_calibration.setdefault(job.calibration, job)
        for name, rev, iov in job.summary.get("staged", []):
            exact.setdefault((str(name), int(rev), str(iov)), job)
            by_revision.setdefault((str(name), int(rev)), job)
    out = []
    for e in entries:
        hit = exact.get((e.name, e.payload.revision, str(e.iov)))
        hit = hit or by_revision.get((e.name, e.payload.revision))
        if hit is not None:
            out.append(_Origin(hit.calibration, hit))
            continue
        made_by = (e.payload.provenance or {}).get("calibration")
        made_by = str(made_by) if made_by else None
        out.append(_Origin(made_by, by_calibration.get(made_by) if made_by else None))
    return list(entries), out, jobs


def _detector(calibration: str | None) -> str | None:
    if calibration is None:
        return None
    from b2calib.detectors import detector_of

    return detector_of(calibration)


def _expert(calibration: str | None) -> str | None:
    if calibration is None:
        return None
    from b2calib.calibration.declaration import get_calibration

    try:
        return get_calibration(calibration).expert
    except ConfigError:
        return None


# ----------------------------------------------------------------------------- job facts
@dataclass
class _JobFacts:
    status: str
    status_reason: str
    wall_time: float | None
    verdict: str | None
    verdict_reason: str
    per_payload: dict[str, dict[str, Any]]


def _outcomes(db: ConditionsDB, keys: Iterable[str]) -> dict[str, Any]:
    """The latest prompt task of each job key (rows of ``prompt_tasks``)."""
    from b2calib.prompt.tables import prompt_tasks as t

    keys = sorted(set(keys))
    if not keys:
        return {}
    with db.read() as conn:
        rows = conn.execute(sa.select(t).where(t.c.job_key.in_(keys)).order_by(t.c.id))
        return {r.job_key: r for r in rows}


def _facts(db: ConditionsDB, job: Job, outcome: Any) -> _JobFacts:
    s = job.summary
    wall: float | None = s.get("wall_time")
    if outcome is not None:
        wall = (as_utc(outcome.finished) - as_utc(outcome.started)).total_seconds()
    if outcome is not None and outcome.outcome != "OK":
        status, why = str(outcome.outcome), str(outcome.reason)
    elif job.state != "completed":
        status, why = (
            "FAILED",
            f"its job is {job.state}" + (f": {s['message']}" if s.get("message") else ""),
        )
    elif no_ok_channel(s.get("channels", {})):
        status, why = "FALLBACK", "no channel of its payloads is OK: every one fell back or failed"
    else:
        status, why = "OK", ""
    record = JobStore(db).validation(job)
    per = {}
    if record is not None:
        per = {str(d.get("name")): d for d in record.summary}
    return _JobFacts(
        status=status,
        status_reason=why,
        wall_time=None if wall is None else float(wall),
        verdict=None if record is None else record.verdict.value,
        verdict_reason="" if record is None else record.reason,
        per_payload=per,
    )


def runs_text(runs: Iterable[Sequence[int]]) -> str:
    """``[(16, 1), (16, 2), (16, 3), (16, 5)]`` -> ``"16/1-3,5"`` (experiments separated by
    ``"; "``)."""
    by_exp: dict[int, list[int]] = {}
    for e, r in runs:
        by_exp.setdefault(int(e), []).append(int(r))
    parts = []
    for exp in sorted(by_exp):
        rs = sorted(set(by_exp[exp]))
        spans: list[str] = []
        start = prev = rs[0]
        for r in rs[1:]:
            if r == prev + 1:
                prev = r
                continue
            spans.append(f"{start}-{prev}" if prev > start else str(start))
            start = prev = r
        spans.append(f"{start}-{prev}" if prev > start else str(start))
        parts.append(f"{exp}/{','.join(spans)}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- the summary
def tag_summary(db: ConditionsDB, tag: str) -> TagSummary:
    """The traffic-light summary of staging tag ``tag`` (see the module's description).

    Raises
    ------
    ReviewError
        No global tag ``tag``.
    """
    from b2calib.review.approval import reviews

    try:
        record = db.tag(tag)
    except ConditionsError as err:
        raise ReviewError(f"no global tag {tag!r} to summarise ({err})") from None
    entries, found, jobs = origins(db, tag)
    outcomes = _outcomes(db, [o.job.key for o in found if o.job is not None])
    facts: dict[str, _JobFacts] = {}
    for o in found:
        if o.job is not None and o.job.key not in facts:
            facts[o.job.key] = _facts(db, o.job, outcomes.get(o.job.key))
    names: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        names.setdefault(e.name, []).append(i)
    rows = []
    for name, idx in names.items():
        rows.append(_row(db, name, [entries[i] for i in idx], [found[i] for i in idx], facts))
    rows.sort(key=lambda r: (LIGHTS.index(r.light), r.name))
    inputs: list[str] = []
    used = {o.job.key for o in found if o.job is not None}
    for job, tags in reversed(jobs):  # oldest first
        for t in tags if job.key in used else ():
            if t not in inputs and t != tag:
                inputs.append(t)
    detectors = frozenset(r.detector for r in rows if r.detector is not None)
    unowned = tuple(sorted({r.name for r in rows if _unowned(r)}))
    staged = {c for r in rows for c in r.calibrations}
    unstaged = _unstaged(db, tag, staged, [job for job, _ in jobs])
    lights = [r.light for r in rows] + [u.light for u in unstaged]
    return TagSummary(
        tag=record,
        rows=tuple(rows),
        inputs=tuple(inputs),
        reviews=tuple(reviews(db, tag)),
        light=min(lights, key=LIGHTS.index, default="grey"),
        detectors=detectors,
        unowned=unowned,
        unstaged=unstaged,
    )


def _unstaged(
    db: ConditionsDB, tag: str, staged: set[str], jobs: Sequence[Job]
) -> tuple[Unstaged, ...]:
    """The calibrations that ran for ``tag`` (latest prompt task, else latest job) and staged
    nothing in it."""
    from b2calib.prompt.tables import prompt_runs as r
    from b2calib.prompt.tables import prompt_tasks as t

    out: dict[str, Unstaged] = {}
    with db.read() as conn:
        rows = conn.execute(
            sa.select(t)
            .join(r, r.c.id == t.c.run_id)
            .where(r.c.staging_tag == tag)
            .order_by(t.c.id)
        )
        latest = {row.calibration: row for row in rows}
    for name, row in latest.items():
        if name in staged or row.outcome == "OK":
            continue
        wall = (as_utc(row.finished) - as_utc(row.started)).total_seconds()
        out[name] = Unstaged(
            name, _detector(name), _expert(name), row.outcome, row.reason, wall, row.job_key
        )
    for job in jobs:  # latest first
        name = job.calibration
        if name in staged or name in out or name in latest or job.state == "completed":
            continue
        message = job.summary.get("message") or ""
        out[name] = Unstaged(
            name,
            _detector(name),
            _expert(name),
            "FAILED",
            f"its job is {job.state}" + (f": {message}" if message else ""),
            job.summary.get("wall_time"),
            job.key,
        )
    return tuple(out[n] for n in sorted(out))


def _unowned(row: PayloadRow) -> bool:
    return not row.calibrations or any(_detector(c) is None for c in row.calibrations)


def _row(
    db: ConditionsDB,
    name: str,
    entries: list[IovEntry],
    found: list[_Origin],
    facts: Mapping[str, _JobFacts],
) -> PayloadRow:
    calibrations = tuple(dict.fromkeys(o.calibration for o in found if o.calibration))
    jobs = list({o.job.key: o.job for o in found if o.job is not None}.values())
    calibration = found[0].calibration if found else None
    if calibration is None and calibrations:
        calibration = calibrations[0]
    status: str | None = None
    verdict: str | None = None
    reasons: list[str] = []
    wall: float | None = None
    channels: dict[str, int] | None = None
    runs: list[Sequence[int]] = []
    for job in jobs:
        f = facts[job.key]
        if status is None or _STATUS_RANK.get(f.status, 4) > _STATUS_RANK.get(status, 4):
            status = f.status
        if f.status != "OK" and f.status_reason:
            reasons.append(f"{job.calibration}: {f.status}: {f.status_reason}")
        entry = f.per_payload.get(name)
        v = None if f.verdict is None else (str(entry["verdict"]) if entry else f.verdict)
        if v is not None and (verdict is None or _VERDICT_RANK[v] > _VERDICT_RANK[verdict]):
            verdict = v
        if v is not None and v != "GOOD":
            why = str(entry.get("reason", "")) if entry else f.verdict_reason
            if why:
                reasons.append(why if len(jobs) == 1 else f"{job.calibration}: {why}")
        if entry and entry.get("channels"):
            channels = channels or dict.fromkeys(CHANNEL_KEYS, 0)
            for k, n in entry["channels"].items():
                channels[str(k)] = channels.get(str(k), 0) + int(n)
        if f.wall_time is not None:
            wall = (wall or 0.0) + f.wall_time
        runs += job.summary.get("runs", [])
    if channels is None:
        channels = channel_counts(cached_payload(db, e.payload) for e in entries)
    states = sorted({j.state for j in jobs})
    return PayloadRow(
        name=name,
        revisions=tuple(e.payload.revision for e in entries),
        iovs=tuple(str(e.iov) for e in entries),
        calibration=calibration,
        detector=_detector(calibration),
        expert=_expert(calibration),
        runs=runs_text(runs) if runs else "",
        job_state=",".join(states) if states else None,
        status=status,
        verdict=verdict,
        reason="; ".join(dict.fromkeys(reasons)),
        wall_time=wall,
        channels=channels,
        light=light_of(calibration, status, verdict),
        calibrations=calibrations,
        jobs=tuple(j.key for j in jobs),
    )


def __dir__() -> list[str]:
    return __all__
