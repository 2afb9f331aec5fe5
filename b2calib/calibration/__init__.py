"""The calibration framework (basf2's CAF, in Python).

=================  ===========================================================================
``algorithm``      :class:`Algorithm`, its input, result, status codes and diagnostics
``strategies``     IoV strategies: SingleIOV, SimpleRunByRun, SequentialRunByRun,
                   SequentialBoundaries
``constants``      :class:`Constants`: payloads valid for a run (previous iteration, then tags)
``declaration``    :class:`Calibration` declarations, expert config, registry, dependency order
``runner``         :func:`run_calibrations`: collect, execute, iterate, checkpoint, stage
``jobs``           the calibration job tables and :class:`~b2calib.calibration.jobs.JobStore`:
                   each execution checkpointed, the final payloads staged in one transaction
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
    from b2calib.calibration.runner import CalibrationReport, ExecutionReport, run_calibrations
    from b2calib.calibration.strategies import (
        Execution,
        SequentialBoundaries,
        SequentialRunByRun,
        SimpleRunByRun,
        SingleIOV,
        Strategy,
    )

__all__ = [
    "Algorithm",
    "AlgorithmInput",
    "AlgorithmResult",
    "AlgorithmStatus",
    "Calibration",
    "CalibrationReport",
    "CollectorInput",
    "Constants",
    "Diagnostics",
    "Execution",
    "ExecutionReport",
    "SequentialBoundaries",
    "SequentialRunByRun",
    "SimpleRunByRun",
    "SingleIOV",
    "Strategy",
    "calibrations",
    "dependency_order",
    "get_calibration",
    "register",
    "run_calibrations",
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
        "runner": ["CalibrationReport", "ExecutionReport", "run_calibrations"],
        "strategies": [
            "Execution",
            "SequentialBoundaries",
            "SequentialRunByRun",
            "SimpleRunByRun",
            "SingleIOV",
            "Strategy",
        ],
    },
)


def __dir__() -> list[str]:
    return __all__
