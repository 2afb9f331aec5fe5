"""``b2calib calibrate`` with a calibration whose collector takes minutes per work item, for
killing the command while its pool workers are busy (``tests/test_integrity.py``).

Run as ``python -m tests.slow_calibration calibrate test-slow --data ... --executor processes``
from the repository: it registers ``test-slow`` and runs the ``b2calib`` command line.
"""

from __future__ import annotations

import dataclasses
import time

import awkward as ak
import hist

from b2calib.calibration import Calibration, CollectorInput, declaration
from b2calib.engine import Collector
from tests.example_calibration import SKIM, OffsetAlgorithm

#: How long the collector sleeps per work item (s): far longer than any test waits.
SLEEP_S = 300.0


@dataclasses.dataclass(frozen=True)
class SlowCollector(Collector):
    """Sleeps, then histograms ``x``."""

    seconds: float = SLEEP_S

    @property
    def branches(self) -> dict[str, str]:
        return {"x": "float32"}

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        time.sleep(self.seconds)
        h = hist.Hist(hist.axis.Regular(10, -5.0, 5.0, name="residual"))
        h.fill(ak.to_numpy(events["x"]))
        return {"residual": h}


def slow_calibration() -> Calibration:
    """``test-slow``: the example offset algorithm on the slow collector."""
    return Calibration(
        name="test-slow",
        expert="test@example.org",
        inputs={"mumu": CollectorInput(SlowCollector(), (SKIM,))},
        algorithms=[OffsetAlgorithm()],
        expert_config={"min_entries": 1, "tolerance": 0.02},
    )


def main() -> None:
    """Register ``test-slow`` and run the command line."""
    from b2calib.cli import main as cli_main

    declaration.register(slow_calibration())
    cli_main()


if __name__ == "__main__":
    main()
