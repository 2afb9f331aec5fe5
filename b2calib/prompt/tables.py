"""The prompt loop's records: one row per invocation of the loop (:data:`prompt_runs`) and one
per calibration task that ran in it (:data:`prompt_tasks`), in the b2calib database (created by
the migration ``0006``). The payload-validation dashboard reads them."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, Text

from b2calib.db import UTC_TIME, metadata

__all__ = ["prompt_runs", "prompt_tasks"]

#: One invocation of the prompt loop: its bucket (or exp and runs), staging and input tags,
#: its options (JSON: the data folder, the calibrations, executor, workers ...), when it
#: started and finished, and who ran it.
prompt_runs = Table(
    "prompt_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("bucket", Integer),
    Column("exp", Integer, nullable=False),
    Column("runs", Text, nullable=False),
    Column("staging_tag", String(200), nullable=False),
    Column("input_tags", Text, nullable=False),
    Column("options", Text, nullable=False),
    Column("started", UTC_TIME, nullable=False),
    Column("finished", UTC_TIME),
    Column("author", String(200), nullable=False),
    Index("ix_prompt_runs_staging", "staging_tag"),
)

#: The outcome of one calibration task in one invocation: ``OK``, ``FAILED``,
#: ``NOT_ENOUGH_DATA`` or ``SKIPPED`` with the reason, the calibration job's key (empty when no
#: job was opened), when the task started and finished.
prompt_tasks = Table(
    "prompt_tasks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, ForeignKey("prompt_runs.id"), nullable=False),
    Column("calibration", String(200), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("reason", Text, nullable=False),
    Column("job_key", String(64), nullable=False),
    Column("started", UTC_TIME, nullable=False),
    Column("finished", UTC_TIME, nullable=False),
    Index("ix_prompt_tasks_run", "run_id", "calibration", unique=True),
    Index("ix_prompt_tasks_job", "job_key"),
)


def __dir__() -> list[str]:
    return __all__
