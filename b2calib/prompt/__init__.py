"""The prompt calibration loop: every registered calibration of a bucket of runs as one
dependency graph on b2luigi, resumable, into one staging tag per bucket, validated, summarised,
and on to the running tag.

===========  ======================================================================================
``loop``     :func:`run_prompt`: the bucket's runs, the calibrations ordered by ``depends_on`` and
             ``after`` (earlier stages first), the staging tag, the end of the loop (TESTING,
             ``auto_validate``, the running update and its snapshot); what the tasks call
``tasks``    the b2luigi graph: one task per calibration, complete when its job record says so
             (b2luigi is the ``prompt`` extra, imported on first use)
``summary``  :class:`PromptSummary` and :class:`PromptRow`: the summary table and its JSON
``store``    :class:`PromptStore`: the loop's invocations and task outcomes in the database
``tables``   the tables ``prompt_runs`` and ``prompt_tasks``
===========  ======================================================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from b2calib._lazy import attach

if TYPE_CHECKING:
    from b2calib.prompt.loop import run_prompt, summarize
    from b2calib.prompt.store import PromptRun, PromptStore, TaskOutcome
    from b2calib.prompt.summary import PromptRow, PromptSummary, StageTime

__all__ = [
    "PromptRow",
    "PromptRun",
    "PromptStore",
    "PromptSummary",
    "StageTime",
    "TaskOutcome",
    "run_prompt",
    "summarize",
]

__getattr__ = attach(
    __name__,
    {
        "loop": ["run_prompt", "summarize"],
        "store": ["PromptRun", "PromptStore", "TaskOutcome"],
        "summary": ["PromptRow", "PromptSummary", "StageTime"],
    },
)


def __dir__() -> list[str]:
    return __all__
