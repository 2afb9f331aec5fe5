"""Small calibrations for the prompt-loop tests, on the example calibration's data
(``tests/example_calibration.py``): each stages its own payload, one always fails, and each can
be held (made to wait) at a phase, so that a test can kill the loop there.

Run as ``python -m tests.prompt_calibrations prompt ...`` from the repository: it registers the
calibrations and runs the ``b2calib`` command line. ``B2CALIB_TEST_HOLD=NAME:PHASE[,...]`` with
``B2CALIB_TEST_HOLD_DIR=FOLDER`` holds calibration NAME at PHASE (``collect``: in its
collector; ``fit``: in its algorithm; ``validate``: in its validation): it writes
``FOLDER/NAME-PHASE`` and sleeps, far longer than any test waits. Test scaffolding, not
detector calibrations.
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
from b2calib.calibration.validation import PayloadComparison, ValidationResult
from b2calib.conditions import Payload
from b2calib.conditions.iov import IoV, RunKey
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


class HeldComparison(PayloadComparison):
    """The default validation, held at ``validate`` for calibration ``calibration``."""

    def __init__(self, calibration: str) -> None:
        super().__init__()
        self.calibration = calibration

    def __call__(self, new: Any, previous: Any, context: Any) -> ValidationResult:
        hold(self.calibration, "validate")
        return super().__call__(new, previous, context)


class NamedOffset(OffsetAlgorithm):
    """The offset algorithm staging payload ``payload`` (and failing when ``fail``); payloads
    with ``status`` get a status column of that code for their one channel."""

    def __init__(
        self,
        calibration: str,
        payload: str,
        fail: bool = False,
        status: int | None = None,
        crash: bool = False,
    ) -> None:
        super().__init__(fail_on=RUNS if fail else ())
        self.crash = crash
        self.calibration = calibration
        self.payloads = (payload,)
        self.name = f"{calibration}-offset"
        self.status = status

    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        hold(self.calibration, "fit")
        if self.crash:
            raise ZeroDivisionError("a bug in the algorithm")
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
    name: str,
    payload: str,
    *,
    fail: bool = False,
    status: int | None = None,
    crash: bool = False,
    **kw: Any,
) -> Calibration:
    """A prompt-test calibration: the example offset measurement, converging at once."""
    return Calibration(
        name=name,
        expert="test@example.org",
        inputs={"mumu": CollectorInput(HeldCollector(calibration=name), (SKIM,))},
        algorithms=[NamedOffset(name, payload, fail, status, crash)],
        validation=HeldComparison(name),
        run_type="physics",
        expert_config={"min_entries": 100, "tolerance": 100.0},
        open_end=True,  # as prompt calibrations are: the running tag goes on from them
        **kw,
    )


def calibrations() -> list[Calibration]:
    """``tp-base``; ``tp-dep`` depends on it, ``tp-after`` comes after it; ``tp-indep``;
    ``tp-fail`` always fails, ``tp-fail-dep`` depends on it, ``tp-after-fail`` comes after
    it; ``tp-fallback``'s one channel FAILED (a fallback value); ``tp-crash`` has a bug (its
    algorithm raises ZeroDivisionError)."""
    p = PAYLOADS
    return [
        make_calibration("tp-base", p["tp-base"]),
        make_calibration("tp-dep", p["tp-dep"], depends_on=("tp-base",)),
        make_calibration("tp-after", p["tp-after"], after=("tp-base",)),
        make_calibration("tp-indep", p["tp-indep"]),
        make_calibration("tp-fail", p["tp-fail"], fail=True),
        make_calibration("tp-fail-dep", p["tp-fail-dep"], depends_on=("tp-fail",)),
        make_calibration("tp-after-fail", p["tp-after-fail"], after=("tp-fail",)),
        make_calibration("tp-fallback", p["tp-fallback"], status=2),
        make_calibration("tp-crash", p["tp-crash"], crash=True),
    ]


def register() -> None:
    """Register the prompt-test calibrations (again: replacing earlier ones)."""
    for cal in calibrations():
        declaration.register(cal, replace=True)


#: The payload of each prompt-test calibration.
PAYLOADS = {
    "tp-base": "TPBase",
    "tp-dep": "TPDep",
    "tp-after": "TPAfter",
    "tp-indep": "TPIndep",
    "tp-fail": "TPFail",
    "tp-fail-dep": "TPFailDep",
    "tp-after-fail": "TPAfterFail",
    "tp-fallback": "TPFallback",
    "tp-crash": "TPCrash",
}


def previous_tag(db: Any, tag: str = "prev") -> str:
    """An input tag with the payloads the calibrations measure again (offset 0.27 +- 0.05,
    open-ended from run 1.0): their validations compare with these (GOOD)."""
    db.create_tag(tag)
    items = [
        (
            Payload(
                name,
                keys={"channel": np.array([0])},
                values={"offset": np.array([0.27])},
                errors={"offset": np.array([0.05])},
            ),
            IoV(1, 0, -1, -1),
        )
        for name in PAYLOADS.values()
    ]
    db.upload_and_add(tag, items)
    return tag


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
