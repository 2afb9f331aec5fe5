"""Small calibrations for the prompt-loop tests, on the example calibration's data
(``tests/example_calibration.py``): each stages its own payload, one always fails, and each can
be held (made to wait) at a phase, so that a test can kill the loop there.

Run as ``python -m tests.prompt_calibrations prompt ...`` from the repository: it registers the
calibrations and runs the ``b2calib`` command line. ``B2CALIB_TEST_HOLD=NAME:PHASE[,...]`` with
``B2CALIB_TEST_HOLD_DIR=FOLDER`` holds calibration NAME at PHASE (``collect``: in its
collector; ``fit``: in its algorithm): it writes ``FOLDER/NAME-PHASE`` and sleeps, far longer
than any test waits. Test scaffolding, not detector calibrations.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import awkward as ak
import hist
import numpy as np

from b2calib.calibration import (
    AlgorithmInput,
    AlgorithmResult,
    Calibration,
    CollectorInput,
    declaration,
)
from b2calib.conditions import Payload
from b2calib.conditions.iov import RunKey
from tests.example_calibration import SKIM, OffsetAlgorithm, ResidualCollector, write_runs

HOLD_ENV = "B2CALIB_TEST_HOLD"
HOLD_DIR_ENV = "B2CALIB_TEST_HOLD_DIR"
#: Runs of the test bucket: experiment 1, runs 1-4 (1 pb^-1 each).
RUNS = [(1, r) for r in range(1, 5)]


def hold(name: str, phase: str) -> None:
    """Wait (300 s) when ``B2CALIB_TEST_HOLD`` names ``name:phase``, after writing its marker
    file."""
    if f"{name}:{phase}" not in os.environ.get(HOLD_ENV, "").split(","):
        return
    folder = Path(os.environ[HOLD_DIR_ENV])
    (folder / f"{name}-{phase}").write_text(str(os.getpid()))
    time.sleep(300.0)


@dataclasses.dataclass(frozen=True)
class HeldCollector(ResidualCollector):
    """The residual collector, held at ``collect`` for calibration ``calibration``."""

    calibration: str = ""

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        hold(self.calibration, "collect")
        return super().collect(events)


class NamedOffset(OffsetAlgorithm):
    """The offset algorithm staging payload ``payload`` (and failing when ``fail``); payloads
    with ``status`` get a status column of that code for their one channel."""

    def __init__(
        self, calibration: str, payload: str, fail: bool = False, status: int | None = None
    ) -> None:
        super().__init__(fail_on=RUNS if fail else ())
        self.calibration = calibration
        self.payloads = (payload,)
        self.name = f"{calibration}-offset"
        self.status = status

    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        hold(self.calibration, "fit")
        result = super().run(data)
        result.payloads = [
            Payload(
                self.payloads[0],
                keys={"channel": np.array([0])},
                values=p.values,
                errors=p.errors,
                status=None if self.status is None else np.array([self.status]),
                metadata=p.metadata,
            )
            for p in result.payloads
        ]
        return result


def make_calibration(
    name: str, payload: str, *, fail: bool = False, status: int | None = None, **kw: Any
) -> Calibration:
    """A prompt-test calibration: the example offset measurement, converging at once."""
    return Calibration(
        name=name,
        expert="test@example.org",
        inputs={"mumu": CollectorInput(HeldCollector(calibration=name), (SKIM,))},
        algorithms=[NamedOffset(name, payload, fail, status)],
        run_type="physics",
        expert_config={"min_entries": 100, "tolerance": 100.0},
        **kw,
    )


def calibrations() -> list[Calibration]:
    """``tp-base``; ``tp-dep`` depends on it; ``tp-indep``; ``tp-fail`` always fails and
    ``tp-fail-dep`` depends on it; ``tp-fallback``'s one channel FAILED."""
    return [
        make_calibration("tp-base", "TPBase"),
        make_calibration("tp-dep", "TPDep", depends_on=("tp-base",)),
        make_calibration("tp-indep", "TPIndep"),
        make_calibration("tp-fail", "TPFail", fail=True),
        make_calibration("tp-fail-dep", "TPFailDep", depends_on=("tp-fail",)),
        make_calibration("tp-fallback", "TPFallback", status=2),
    ]


def register() -> None:
    """Register the prompt-test calibrations (again: replacing earlier ones)."""
    for cal in calibrations():
        declaration.register(cal, replace=True)


def write_bucket(folder: Path, seed: int = 1) -> None:
    """The test bucket: runs 1-4 of experiment 1, 400 events each around offset 0.3."""
    offsets: dict[RunKey, float] = dict.fromkeys(RUNS, 0.3)
    write_runs(folder, offsets, dict.fromkeys(RUNS, 400), seed=seed)


def main() -> None:
    """Register the prompt-test calibrations and run the command line."""
    from b2calib.cli import main as cli_main

    register()
    cli_main()


if __name__ == "__main__":
    main()
