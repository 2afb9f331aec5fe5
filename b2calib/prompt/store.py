"""The prompt loop's records in the database: invocations and task outcomes
(:mod:`b2calib.prompt.tables`), read and written through :class:`PromptStore`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from b2calib.conditions import ConditionsDB
from b2calib.db import as_utc, now
from b2calib.exceptions import ConfigError
from b2calib.prompt.tables import prompt_runs, prompt_tasks

__all__ = ["OUTCOMES", "PromptRun", "PromptStore", "TaskOutcome"]

#: What a calibration task of the loop can end with.
OUTCOMES = ("OK", "FAILED", "NOT_ENOUGH_DATA", "SKIPPED")


@dataclass(frozen=True)
class PromptRun:
    """One invocation of the prompt loop."""

    id: int
    bucket: int | None
    exp: int
    runs: list[int]
    staging_tag: str
    input_tags: list[str]
    options: dict[str, Any]
    started: datetime
    finished: datetime | None
    author: str


@dataclass(frozen=True)
class TaskOutcome:
    """How one calibration task of an invocation ended."""

    run_id: int
    calibration: str
    outcome: str
    reason: str
    job_key: str
    started: datetime
    finished: datetime

    @property
    def wall_time(self) -> float:
        """Seconds from start to finish."""
        return (self.finished - self.started).total_seconds()


class PromptStore:
    """The prompt loop's records in a :class:`~b2calib.conditions.ConditionsDB`."""

    def __init__(self, db: ConditionsDB) -> None:
        self.db = db

    def start(
        self,
        *,
        bucket: int | None,
        exp: int,
        runs: Sequence[int],
        staging_tag: str,
        input_tags: Sequence[str],
        options: dict[str, Any],
    ) -> PromptRun:
        """Record a new invocation (now, by the database's author)."""
        p = prompt_runs
        with self.db.write() as conn:
            run_id = conn.execute(
                p.insert()
                .values(
                    bucket=bucket,
                    exp=exp,
                    runs=json.dumps(list(runs)),
                    staging_tag=staging_tag,
                    input_tags=json.dumps(list(input_tags)),
                    options=json.dumps(options, sort_keys=True),
                    started=now(),
                    finished=None,
                    author=self.db.author,
                )
                .returning(p.c.id)
            ).scalar_one()
            row = conn.execute(sa.select(p).where(p.c.id == run_id)).one()
            return _run(row)

    def finish(self, run_id: int) -> None:
        """Record the end of an invocation."""
        p = prompt_runs
        with self.db.write() as conn:
            conn.execute(p.update().where(p.c.id == run_id).values(finished=now()))

    def run(self, run_id: int) -> PromptRun:
        """The invocation ``run_id``."""
        p = prompt_runs
        with self.db.read() as conn:
            row = conn.execute(sa.select(p).where(p.c.id == run_id)).first()
        if row is None:
            raise ConfigError(f"no prompt-loop invocation {run_id} in {self.db.safe_url}")
        return _run(row)

    def runs(self, staging_tag: str | None = None) -> list[PromptRun]:
        """Recorded invocations (into one staging tag), oldest first."""
        p = prompt_runs
        q = sa.select(p).order_by(p.c.id)
        if staging_tag is not None:
            q = q.where(p.c.staging_tag == staging_tag)
        with self.db.read() as conn:
            return [_run(r) for r in conn.execute(q)]

    def record(
        self,
        run_id: int,
        calibration: str,
        outcome: str,
        reason: str,
        job_key: str,
        started: datetime,
    ) -> TaskOutcome:
        """Record how a calibration task of invocation ``run_id`` ended (now)."""
        if outcome not in OUTCOMES:
            raise ConfigError(f"prompt task {calibration}: outcome {outcome!r} not in {OUTCOMES}")
        t = prompt_tasks
        with self.db.write() as conn:
            conn.execute(
                t.insert().values(
                    run_id=run_id,
                    calibration=calibration,
                    outcome=outcome,
                    reason=reason,
                    job_key=job_key,
                    started=started,
                    finished=now(),
                )
            )
            row = conn.execute(
                sa.select(t).where(t.c.run_id == run_id, t.c.calibration == calibration)
            ).one()
            return _outcome(row)

    def outcome(self, run_id: int, calibration: str) -> TaskOutcome | None:
        """How ``calibration`` ended in invocation ``run_id``, if it ran there."""
        t = prompt_tasks
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(t).where(t.c.run_id == run_id, t.c.calibration == calibration)
            ).first()
        return None if row is None else _outcome(row)

    def outcomes(self, run_id: int) -> dict[str, TaskOutcome]:
        """Every task outcome of invocation ``run_id``, by calibration."""
        t = prompt_tasks
        with self.db.read() as conn:
            rows = conn.execute(sa.select(t).where(t.c.run_id == run_id).order_by(t.c.id))
            return {r.calibration: _outcome(r) for r in rows}

    def last_success(self, job_key: str) -> TaskOutcome | None:
        """The latest task that ended OK with calibration job ``job_key`` (any invocation)."""
        t = prompt_tasks
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(t)
                .where(t.c.job_key == job_key, t.c.outcome == "OK")
                .order_by(t.c.id.desc())
                .limit(1)
            ).first()
        return None if row is None else _outcome(row)


def _run(row: Any) -> PromptRun:
    return PromptRun(
        id=row.id,
        bucket=row.bucket,
        exp=row.exp,
        runs=[int(r) for r in json.loads(row.runs)],
        staging_tag=row.staging_tag,
        input_tags=list(json.loads(row.input_tags)),
        options=json.loads(row.options),
        started=as_utc(row.started),
        finished=None if row.finished is None else as_utc(row.finished),
        author=row.author,
    )


def _outcome(row: Any) -> TaskOutcome:
    return TaskOutcome(
        run_id=row.run_id,
        calibration=row.calibration,
        outcome=row.outcome,
        reason=row.reason,
        job_key=row.job_key,
        started=as_utc(row.started),
        finished=as_utc(row.finished),
    )


def __dir__() -> list[str]:
    return __all__
