"""Checkpoints of calibration jobs, kept in the conditions database: their tables and
:class:`JobStore`.

A job is one calibration over one set of inputs (runs, files, configuration, input tags,
staging tag), identified by a hash of them. Every algorithm execution is recorded as a step with
its status, its payload files and its diagnostics, so an interrupted job resumes without redoing
completed steps, and a job that completed is not run again. Step payloads are checkpoints, not
payload revisions: only the final ones become revisions, when they are staged. Uploading them,
adding their IoVs to the staging tag and marking the job completed is one transaction.

The validations of a job's staged payloads (:mod:`b2calib.calibration.validation`) are kept in
``calibration_validations``, append-only: a validation run again adds a row, the latest wins.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from b2calib.conditions.database import ConditionsDB, IovEntry, PayloadFile
from b2calib.conditions.iov import IoV, RunKey
from b2calib.conditions.payload import Payload
from b2calib.db import UTC_TIME, as_utc, metadata, now
from b2calib.exceptions import ConditionsError

if TYPE_CHECKING:
    from b2calib.calibration.validation import ValidationResult, Verdict

__all__ = [
    "Job",
    "JobStore",
    "StepRecord",
    "ValidationRecord",
    "calibration_jobs",
    "calibration_steps",
    "calibration_validations",
    "step_diagnostics",
    "step_payloads",
]

# -- tables (created by the migrations of b2calib.db) ------------------------------------------

calibration_jobs = Table(
    "calibration_jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("calibration", String(200), nullable=False),
    Column("staging_tag", String(200), nullable=False),
    Column("state", String(20), nullable=False),
    Column("created", UTC_TIME, nullable=False),
    Column("updated", UTC_TIME, nullable=False),
    Column("inputs", Text, nullable=False),
    Column("summary", Text, nullable=False),
)

calibration_steps = Table(
    "calibration_steps",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("calibration_jobs.id"), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("algorithm", String(200), nullable=False),
    Column("runs", Text, nullable=False),
    Column("first_exp", Integer, nullable=False),
    Column("first_run", Integer, nullable=False),
    Column("final_exp", Integer, nullable=False),
    Column("final_run", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("message", Text, nullable=False),
    Column("created", UTC_TIME, nullable=False),
    UniqueConstraint("job_id", "iteration", "algorithm", "runs", name="uq_step"),
)

step_payloads = Table(
    "step_payloads",
    metadata,
    Column("step_id", Integer, ForeignKey("calibration_steps.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("checksum", String(32), nullable=False),
    Column("content", LargeBinary, nullable=False),
)

#: The table ``diagnostics``: the diagnostics file of a step.
step_diagnostics = Table(
    "diagnostics",
    metadata,
    Column("step_id", Integer, ForeignKey("calibration_steps.id"), primary_key=True),
    Column("content", LargeBinary, nullable=False),
)

#: The table ``calibration_validations``: each validation of a job's staged payloads, with its
#: verdict, reason, per-payload summary (JSON) and diagnostics file; append-only.
calibration_validations = Table(
    "calibration_validations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("calibration_jobs.id"), nullable=False),
    Column("verdict", String(10), nullable=False),
    Column("reason", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("diagnostics", LargeBinary),
    Column("created", UTC_TIME, nullable=False),
    CheckConstraint("verdict IN ('GOOD', 'WARNING', 'ERROR')", name="ck_validation_verdict"),
    Index("ix_calibration_validations_job", "job_id", "id"),
)


@dataclass(frozen=True)
class ValidationRecord:
    """A stored validation of a job: its verdict, reason, per-payload summaries (the JSON of
    :meth:`~b2calib.calibration.validation.PayloadValidation.as_dict`) and time."""

    id: int
    job: str
    verdict: Verdict
    reason: str
    summary: list[dict[str, Any]]
    created: datetime


@dataclass(frozen=True)
class Job:
    """A calibration job's record."""

    id: int
    key: str
    calibration: str
    staging_tag: str
    state: str
    created: datetime
    summary: dict[str, Any]


@dataclass(frozen=True)
class StepRecord:
    """One recorded algorithm execution."""

    id: int
    iteration: int
    algorithm: str
    runs: list[RunKey]
    status: str
    message: str
    payloads: list[Payload]


#: An execution as :meth:`JobStore.record_steps` records it: iteration, algorithm, runs, status,
#: message, payloads (or their files) and diagnostics.
StepValues = tuple[int, str, list[RunKey], str, str, Sequence[Payload | PayloadFile], bytes | None]


def _runs_text(runs: list[RunKey]) -> str:
    return json.dumps([list(r) for r in runs])


class JobStore:
    """Calibration checkpoints in a :class:`ConditionsDB`."""

    def __init__(self, db: ConditionsDB) -> None:
        self.db = db

    def open(self, key: str, calibration: str, staging_tag: str, inputs: dict[str, Any]) -> Job:
        """The job with this key, created (state ``init``) when new."""
        j = calibration_jobs
        with self.db.write() as conn:
            row = conn.execute(sa.select(j).where(j.c.key == key)).first()
            if row is None:
                when = now()
                conn.execute(
                    j.insert().values(
                        key=key,
                        calibration=calibration,
                        staging_tag=staging_tag,
                        state="init",
                        created=when,
                        updated=when,
                        inputs=json.dumps(inputs, sort_keys=True, default=str),
                        summary="{}",
                    )
                )
                row = conn.execute(sa.select(j).where(j.c.key == key)).one()
            return _job(row)

    def job(self, key: str) -> Job | None:
        """The job with this key (see :func:`~b2calib.calibration.runner.plan_jobs`), or
        ``None`` when there is none."""
        j = calibration_jobs
        with self.db.read() as conn:
            row = conn.execute(sa.select(j).where(j.c.key == key)).first()
        return None if row is None else _job(row)

    def jobs(self, calibration: str | None = None) -> list[Job]:
        """Recorded jobs (of one calibration), oldest first."""
        j = calibration_jobs
        q = sa.select(j).order_by(j.c.id)
        if calibration is not None:
            q = q.where(j.c.calibration == calibration)
        with self.db.read() as conn:
            return [_job(r) for r in conn.execute(q)]

    def set_state(self, job: Job, state: str, summary: dict[str, Any] | None = None) -> None:
        """Record the job's progress (``collected:<iteration>``, ``failed`` ...)."""
        j = calibration_jobs
        values: dict[str, Any] = {"state": state, "updated": now()}
        if summary is not None:
            values["summary"] = json.dumps(summary, sort_keys=True, default=str)
        with self.db.write() as conn:
            conn.execute(j.update().where(j.c.id == job.id).values(**values))

    def step(
        self, job: Job, iteration: int, algorithm: str, runs: list[RunKey]
    ) -> StepRecord | None:
        """The recorded execution of ``algorithm`` on ``runs`` in this iteration, if any."""
        t = calibration_steps
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(t).where(
                    t.c.job_id == job.id,
                    t.c.iteration == iteration,
                    t.c.algorithm == algorithm,
                    t.c.runs == _runs_text(runs),
                )
            ).first()
            return None if row is None else self._step(conn, row)

    def steps(self, job: Job) -> list[StepRecord]:
        """All recorded executions of a job, in order."""
        t = calibration_steps
        with self.db.read() as conn:
            rows = list(conn.execute(sa.select(t).where(t.c.job_id == job.id).order_by(t.c.id)))
            return [self._step(conn, r) for r in rows]

    def _step(self, conn: Any, row: Any) -> StepRecord:
        sp = step_payloads
        stored = conn.execute(
            sa.select(sp.c.checksum, sp.c.content)
            .where(sp.c.step_id == row.id)
            .order_by(sp.c.position)
        )
        payloads = [
            Payload.from_bytes(bytes(r.content), r.checksum, f"checkpoint of step {row.id}")
            for r in stored
        ]
        return StepRecord(
            id=row.id,
            iteration=row.iteration,
            algorithm=row.algorithm,
            runs=[(int(e), int(r)) for e, r in json.loads(row.runs)],
            status=row.status,
            message=row.message,
            payloads=payloads,
        )

    def record_step(
        self,
        job: Job,
        iteration: int,
        algorithm: str,
        runs: list[RunKey],
        status: str,
        message: str,
        payloads: Sequence[Payload | PayloadFile],
        diagnostics: bytes | None,
    ) -> int:
        """Record an execution with its payloads (or their files, written once for the
        checkpoint and the staging) and diagnostics (one transaction); return the step's id."""
        step = (iteration, algorithm, runs, status, message, payloads, diagnostics)
        return self.record_steps(job, [step])[0]

    def record_steps(self, job: Job, steps: Sequence[StepValues]) -> list[int]:
        """Record executions, each as :meth:`record_step` does, in order and in one
        transaction (each commit waits for the disk); return the steps' ids."""
        t = calibration_steps
        ids: list[int] = []
        # the files are written (and hashed) before the transaction takes the writers' lock
        files_of = [[(f.data, f.checksum) for f in map(PayloadFile.of, s[5])] for s in steps]
        with self.db.write() as conn:
            for step, files in zip(steps, files_of, strict=True):
                iteration, algorithm, runs, status, message, _, diagnostics = step
                step_id = conn.execute(
                    t.insert()
                    .values(
                        job_id=job.id,
                        iteration=iteration,
                        algorithm=algorithm,
                        runs=_runs_text(runs),
                        first_exp=runs[0][0],
                        first_run=runs[0][1],
                        final_exp=runs[-1][0],
                        final_run=runs[-1][1],
                        status=status,
                        message=message,
                        created=now(),
                    )
                    .returning(t.c.id)
                ).scalar_one()
                for position, (data, checksum) in enumerate(files):
                    conn.execute(
                        step_payloads.insert().values(
                            step_id=step_id, position=position, checksum=checksum, content=data
                        )
                    )
                if diagnostics is not None:
                    conn.execute(
                        step_diagnostics.insert().values(step_id=step_id, content=diagnostics)
                    )
                ids.append(int(step_id))
        return ids

    def diagnostics(self, step: StepRecord) -> bytes | None:
        """The stored diagnostics file of a step."""
        d = step_diagnostics
        with self.db.read() as conn:
            data = conn.execute(sa.select(d.c.content).where(d.c.step_id == step.id)).scalar()
        return None if data is None else bytes(data)

    def complete(
        self,
        job: Job,
        items: Sequence[tuple[IoV, Payload | PayloadFile]],
        summary: dict[str, Any],
        *,
        prevails_over: Collection[str] = (),
        yields_to: Collection[str] = (),
    ) -> list[IovEntry]:
        """Upload the job's final payloads, add them to its staging tag and mark the job
        completed, atomically.

        The staging tag is created (OPEN) when missing. IoVs already in it for the same payload
        names that overlap the new ones from an earlier job of this calibration are replaced
        (recorded in the tag's history); those of another calibration are cut around the new
        ones when this one prevails over it, the new ones around them when it prevails over
        this one, and otherwise the staging is refused
        (:meth:`~b2calib.conditions.ConditionsDB.stage`). Content already stored under the
        same name is not uploaded again. A payload given as its :class:`PayloadFile` is stored
        with those bytes (the runner passes the files it wrote for the steps' checkpoints).
        """
        db, tag = self.db, job.staging_tag
        files = [(iov, PayloadFile.of(p)) for iov, p in items]
        with db.write() as conn:
            j = calibration_jobs
            state = conn.execute(sa.select(j.c.state).where(j.c.id == job.id)).scalar()
            if state == "completed":
                raise ConditionsError(f"calibration job {job.key[:12]} was completed concurrently")
            added = db.stage(
                conn,
                tag,
                files,
                description=f"staging tag of calibration jobs ({job.calibration})",
                owner=job.calibration,
                prevails_over=prevails_over,
                yields_to=yields_to,
                calibration=job.calibration,
            )
            summary = {
                **summary,
                "staged": [[e.name, e.payload.revision, str(e.iov)] for e in added],
            }
            conn.execute(
                j.update()
                .where(j.c.id == job.id)
                .values(
                    state="completed",
                    updated=now(),
                    summary=json.dumps(summary, sort_keys=True, default=str),
                )
            )
            db.log(
                conn, "calibration", tag, calibration=job.calibration, job=job.key, iovs=len(added)
            )
            return added

    def record_validation(self, job: Job, result: ValidationResult) -> None:
        """Keep a validation of ``job`` (verdict, reason, per-payload summary, diagnostics file)
        in one transaction; an earlier validation of the job stays, the latest is
        :meth:`validation`."""
        diag = result.diagnostics
        blob = diag.to_bytes() if (diag.histograms or diag.tables) else None
        summary = json.dumps(result.summary(), sort_keys=True, default=str)
        v = calibration_validations
        with self.db.write() as conn:
            exists = conn.execute(
                sa.select(calibration_jobs.c.id).where(calibration_jobs.c.id == job.id)
            ).scalar()
            if exists is None:
                raise ConditionsError(
                    f"no calibration job {job.key[:12]} ({job.calibration}) to record a "
                    "validation of"
                )
            conn.execute(
                v.insert().values(
                    job_id=job.id,
                    verdict=result.verdict.value,
                    reason=result.reason,
                    summary=summary,
                    diagnostics=blob,
                    created=now(),
                )
            )
            self.db.log(
                conn,
                "validation",
                job.staging_tag,
                calibration=job.calibration,
                job=job.key,
                verdict=result.verdict.value,
            )

    def _latest_validation(self, job: Job, *columns: Any) -> Any:
        v = calibration_validations
        with self.db.read() as conn:
            return conn.execute(
                sa.select(*columns).where(v.c.job_id == job.id).order_by(v.c.id.desc()).limit(1)
            ).first()

    def validation(self, job: Job) -> ValidationRecord | None:
        """The latest validation of ``job``, or ``None`` when it was never validated."""
        from b2calib.calibration.validation import Verdict

        v = calibration_validations
        row = self._latest_validation(
            job, v.c.id, v.c.verdict, v.c.reason, v.c.summary, v.c.created
        )
        if row is None:
            return None
        return ValidationRecord(
            id=row.id,
            job=job.key,
            verdict=Verdict(row.verdict),
            reason=row.reason,
            summary=json.loads(row.summary),
            created=as_utc(row.created),
        )

    def diagnostics_of_validation(self, job: Job) -> bytes | None:
        """The diagnostics file (:class:`~b2calib.calibration.Diagnostics` bytes) of the latest
        validation of ``job``, or ``None`` (never validated, or nothing to show)."""
        v = calibration_validations
        row = self._latest_validation(job, v.c.diagnostics)
        return None if row is None or row.diagnostics is None else bytes(row.diagnostics)


def _job(row: Any) -> Job:
    return Job(
        id=row.id,
        key=row.key,
        calibration=row.calibration,
        staging_tag=row.staging_tag,
        state=row.state,
        created=as_utc(row.created),
        summary=json.loads(row.summary),
    )
