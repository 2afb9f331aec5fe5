"""The prompt loop's b2luigi graph: one :class:`CalibrationTask` per calibration, built and run
by :func:`build` with b2luigi's worker factory (what ``b2luigi.process`` uses, without its
command-line parsing, so that the loop is a library call).

A task is identified by the database URL, the loop's invocation and the calibration; everything
else it reads from the invocation's record (:mod:`b2calib.prompt.loop`). On a batch system
b2luigi re-creates the task in a job of its own from its class path
(``b2calib.prompt.tasks.CalibrationTask``) and these parameters.

b2luigi is the ``prompt`` extra: this module imports it on first use of the task class (the
module attribute ``CalibrationTask`` is made then), so that importing b2calib never loads it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from b2calib._extras import require

__all__ = ["CalibrationTask", "batch_systems", "build", "task_class"]  # noqa: F822 (CalibrationTask: made on first use)

FEATURE = "b2calib prompt"


@functools.cache
def task_class() -> type:
    """The task class (b2luigi imported now: a missing ``prompt`` extra is an error naming
    it)."""
    b2luigi: Any = require("b2luigi", FEATURE)
    from b2calib.prompt import loop

    class CalibrationTask(b2luigi.Task):
        """One calibration of an invocation of the prompt loop: complete when its job record
        says so (see :func:`b2calib.prompt.loop.task_complete`)."""

        db_url = b2luigi.Parameter()
        prompt_run = b2luigi.IntParameter()
        calibration = b2luigi.Parameter()
        #: b2luigi's setting, read from the task (not part of its identity)
        batch_system = b2luigi.Parameter(default="local", significant=False)

        @property
        def priority(self) -> int:
            return loop.task_priority(self.calibration)

        def requires(self) -> list[Any]:
            return [
                self.clone(calibration=name)
                for name in loop.task_requires(self.db_url, self.prompt_run, self.calibration)
            ]

        def complete(self) -> bool:
            return loop.task_complete(self.db_url, self.prompt_run, self.calibration)

        def output(self) -> list[Any]:
            return []  # the job records are the output (complete() reads them)

        def run(self) -> None:
            loop.task_run(self.db_url, self.prompt_run, self.calibration)

    CalibrationTask.__module__ = __name__
    CalibrationTask.__qualname__ = "CalibrationTask"
    return CalibrationTask


def __getattr__(name: str) -> Any:
    if name == "CalibrationTask":
        return task_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def batch_systems() -> list[str]:
    """The batch systems b2luigi knows (its ``batch_system`` setting): ``local``, ``auto``,
    ``lsf``, ``htcondor``, ``slurm``, ``gbasf2`` (a plug-in of b2luigi for basf2 jobs on the
    grid) ..."""
    task_class()  # b2luigi (the prompt extra)
    from b2luigi.batch.workers import BatchSystems

    return [str(b.value) for b in BatchSystems if b.value not in ("test", "custom")]


def build(
    url: str, run_id: int, calibrations: Sequence[str], *, workers: int, batch_system: str
) -> bool:
    """Run the tasks of ``calibrations`` (and what they require) for invocation ``run_id``
    with ``workers`` b2luigi workers on ``batch_system``; luigi's own logging kept to
    warnings. Returns whether luigi ran every task."""
    cls = task_class()
    from b2luigi.cli.runner import run_luigi

    if batch_system != "local":
        from b2luigi import set_setting

        # the batch jobs re-create the task by its class path (b2luigi's batch-runner)
        set_setting("__batch_runner_use_cli", True)
    tasks = [
        cls(db_url=url, prompt_run=run_id, calibration=name, batch_system=batch_system)
        for name in calibrations
    ]
    for name in ("luigi", "luigi-interface"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return bool(run_luigi(tasks, {"workers": workers, "log_level": "WARNING"}))


def __dir__() -> list[str]:
    return __all__
