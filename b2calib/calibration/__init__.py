"""The calibration framework (basf2's CAF, in Python).

=================  ===========================================================================
``algorithm``      :class:`Algorithm`, its input, result, status codes and diagnostics
``strategies``     IoV strategies: SingleIOV, SimpleRunByRun, SequentialRunByRun,
                   SequentialBoundaries
``constants``      :class:`Constants`: payloads valid for a run (previous iteration, then tags)
``declaration``    :class:`Calibration` declarations, expert config, registry, dependency order
                   (``depends_on``, and ``after`` for ordering only)
``runner``         :func:`run_calibrations`: collect, execute, iterate, checkpoint, stage;
                   progress events; :func:`plan_jobs`: the job keys without collecting
``jobs``           the calibration job tables and :class:`JobStore`: each execution
                   checkpointed, the final payloads staged in one transaction, validations
``validation``     the validation of new payloads against the previous ones (verdict, reason,
                   diagnostics) and the channel counts of a job's summary
``fitview``        the drill-down of a payload channel: :func:`fit_view` gives the histogram it
                   was fitted from, the model, its components and pulls, and its status
                   (:class:`FitView`), from the diagnostics stored with the job and the
                   calibration's ``fit_views``
``toolkit``        what the detectors' algorithms share: the input guard (NOT_ENOUGH_DATA), the
                   payload-boundary search, the per-channel payload
``intervals``      calibration intervals in time (basf2's Splitter): atoms, loss expressions,
                   the split into outer intervals and sub-intervals, and
                   :class:`~b2calib.calibration.intervals.IntervalAlgorithm`, the base of the
                   beam calibrations (time-dependent payloads)
=================  ===========================================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from b2calib._lazy import attach

if TYPE_CHECKING:
    from b2calib.calibration.algorithm import (
        Algorithm,
        AlgorithmInput,
        AlgorithmResult,
        AlgorithmStatus,
        Diagnostics,
    )
    from b2calib.calibration.constants import Constants
    from b2calib.calibration.declaration import (
        Calibration,
        CollectorInput,
        calibrations,
        dependency_order,
        get_calibration,
        register,
    )
    from b2calib.calibration.fitview import (
        ChannelView,
        CountingView,
        FitView,
        FitViewError,
        GaussPeak,
        HistogramFit,
        NoChannelFit,
        NovosibirskPeak,
        ViewContext,
        fit_view,
    )
    from b2calib.calibration.jobs import Job, JobStore, ValidationRecord
    from b2calib.calibration.runner import (
        CalibrationReport,
        ExecutionReport,
        JobPlan,
        ProgressEvent,
        plan_jobs,
        run_calibrations,
    )
    from b2calib.calibration.strategies import (
        Execution,
        SequentialBoundaries,
        SequentialRunByRun,
        SimpleRunByRun,
        SingleIOV,
        Strategy,
    )
    from b2calib.calibration.validation import (
        PayloadComparison,
        PayloadValidation,
        ValidationContext,
        ValidationResult,
        Validator,
        Verdict,
        channel_counts,
        no_ok_channel,
        validate_job,
    )

__all__ = [
    "Algorithm",
    "AlgorithmInput",
    "AlgorithmResult",
    "AlgorithmStatus",
    "Calibration",
    "CalibrationReport",
    "ChannelView",
    "CollectorInput",
    "Constants",
    "CountingView",
    "Diagnostics",
    "Execution",
    "ExecutionReport",
    "FitView",
    "FitViewError",
    "GaussPeak",
    "HistogramFit",
    "Job",
    "JobPlan",
    "JobStore",
    "NoChannelFit",
    "NovosibirskPeak",
    "PayloadComparison",
    "PayloadValidation",
    "ProgressEvent",
    "SequentialBoundaries",
    "SequentialRunByRun",
    "SimpleRunByRun",
    "SingleIOV",
    "Strategy",
    "ValidationContext",
    "ValidationRecord",
    "ValidationResult",
    "Validator",
    "Verdict",
    "ViewContext",
    "calibrations",
    "channel_counts",
    "dependency_order",
    "fit_view",
    "get_calibration",
    "no_ok_channel",
    "plan_jobs",
    "register",
    "run_calibrations",
    "validate_job",
]

# names are imported on first use (b2calib._lazy)
__getattr__ = attach(
    __name__,
    {
        "algorithm": [
            "Algorithm",
            "AlgorithmInput",
            "AlgorithmResult",
            "AlgorithmStatus",
            "Diagnostics",
        ],
        "constants": ["Constants"],
        "declaration": [
            "Calibration",
            "CollectorInput",
            "calibrations",
            "dependency_order",
            "get_calibration",
            "register",
        ],
        "fitview": [
            "ChannelView",
            "CountingView",
            "FitView",
            "FitViewError",
            "GaussPeak",
            "HistogramFit",
            "NoChannelFit",
            "NovosibirskPeak",
            "ViewContext",
            "fit_view",
        ],
        "jobs": ["Job", "JobStore", "ValidationRecord"],
        "runner": [
            "CalibrationReport",
            "ExecutionReport",
            "JobPlan",
            "ProgressEvent",
            "plan_jobs",
            "run_calibrations",
        ],
        "strategies": [
            "Execution",
            "SequentialBoundaries",
            "SequentialRunByRun",
            "SimpleRunByRun",
            "SingleIOV",
            "Strategy",
        ],
        "validation": [
            "PayloadComparison",
            "PayloadValidation",
            "ValidationContext",
            "ValidationResult",
            "Validator",
            "Verdict",
            "channel_counts",
            "no_ok_channel",
            "validate_job",
        ],
    },
)


def __dir__() -> list[str]:
    return __all__
