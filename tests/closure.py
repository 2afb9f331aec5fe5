"""Closure tests of detector calibrations: simulate known constants, calibrate, compare.

The project's standard for a calibration test: over the channels that came out OK, the pulls
``(fitted - true) / quoted uncertainty`` have a mean within 0.1 of zero and a standard deviation
between 0.85 and 1.15; channels the simulator made dead or starved come out flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from b2calib.calibration import Calibration, CalibrationReport, run_calibrations
from b2calib.conditions import ConditionsDB, Payload
from b2calib.conditions.database import IovEntry

PULL_MEAN_MAX = 0.1
PULL_WIDTH = (0.85, 1.15)


@dataclass(frozen=True)
class Pulls:
    """Pull statistics over channels."""

    mean: float
    width: float
    n: int
    worst: float

    def __str__(self) -> str:
        return f"pull mean {self.mean:+.3f}, width {self.width:.3f} over {self.n} channels"


def pulls(fitted: npt.ArrayLike, errors: npt.ArrayLike, truth: npt.ArrayLike) -> Pulls:
    """Pull statistics of ``fitted +- errors`` against ``truth`` (all finite, errors > 0)."""
    f, e, t = (np.asarray(a, dtype=np.float64) for a in (fitted, errors, truth))
    assert f.shape == e.shape == t.shape, (f.shape, e.shape, t.shape)
    assert len(f) >= 2, "need at least two channels for a pull distribution"
    assert np.all(np.isfinite(f)), "non-finite constant"
    assert np.all(np.isfinite(e)), "non-finite uncertainty"
    assert np.all(e > 0), "a quoted uncertainty is not positive"
    p = (f - t) / e
    return Pulls(float(p.mean()), float(p.std(ddof=1)), len(p), float(np.abs(p).max()))


def assert_closure(
    fitted: npt.ArrayLike, errors: npt.ArrayLike, truth: npt.ArrayLike, label: str
) -> Pulls:
    """Assert the project's pull standard; return the statistics (for the notes)."""
    s = pulls(fitted, errors, truth)
    assert abs(s.mean) < PULL_MEAN_MAX, f"{label}: {s}"
    assert PULL_WIDTH[0] <= s.width <= PULL_WIDTH[1], f"{label}: {s}"
    print(f"{label}: {s}")
    return s


def calibrate(
    calibration: Calibration | str,
    data: Path,
    db_path: Path,
    *,
    staging_tag: str = "staging",
    **kwargs: Any,
) -> tuple[dict[str, CalibrationReport], ConditionsDB]:
    """Run a calibration on ``data`` into a fresh SQLite database; the reports and the database."""
    db = ConditionsDB(db_path, author="closure-test")
    reports = run_calibrations(
        calibration, data, db=db, staging_tag=staging_tag, cache=False, **kwargs
    )
    return reports, db


def staged(db: ConditionsDB, tag: str, name: str) -> list[tuple[IovEntry, Payload]]:
    """The IoVs of payload ``name`` in ``tag`` (in run order) with their payloads."""
    return [(e, db.payload(e.payload)) for e in db.iovs(tag, name)]
