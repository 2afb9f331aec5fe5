"""A small calibration with a known answer, for testing the framework.

Each run's events carry one value ``x`` drawn from a normal distribution of unit width around
the run's true offset. The calibration measures the offset: its collector histograms
``x - current offset`` (so it uses the constants being iterated, as a real time calibration
does), its algorithm adds the mean residual to the current offset and asks to ITERATE until the
residual is below a tolerance. It can request payload boundaries where the per-run residual
jumps. This is test scaffolding, not a detector calibration.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import awkward as ak
import hist
import numpy as np
import uproot

from b2calib.calibration import (
    Algorithm,
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Calibration,
    CollectorInput,
    Constants,
    Diagnostics,
    SequentialBoundaries,
    Strategy,
)
from b2calib.conditions import Payload
from b2calib.conditions.iov import RunKey
from b2calib.engine import Collector
from b2calib.io import METADATA_KEY, TREE_NAME, FileMetadata
from b2calib.runs import Run, RunRegistry
from b2calib.sim.simulate import skim_path

SKIM = "hlt_mumu_2trk"
PAYLOAD = "TestOffset"
BINS = (400, -10.0, 10.0)


def write_runs(
    folder: Path, offsets: Mapping[RunKey, float], events: Mapping[RunKey, int], seed: int = 1
) -> RunRegistry:
    """Skim files and a runs.json with ``events[run]`` values around ``offsets[run]``."""
    rng = np.random.default_rng(seed)
    runs = []
    for (exp, run), offset in sorted(offsets.items()):
        n = events[(exp, run)]
        path = skim_path(folder, exp, run, SKIM)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = FileMetadata(exp, run, SKIM, n, "", "test")
        with uproot.recreate(path) as f:
            f[METADATA_KEY] = meta.to_json()
            branches = {
                "EventMetaData_m_experiment": np.full(n, exp, np.int32),
                "EventMetaData_m_run": np.full(n, run, np.int32),
                "x": (offset + rng.normal(size=n)).astype(np.float32),
            }
            f.mktree(TREE_NAME, {k: v.dtype for k, v in branches.items()})
            f[TREE_NAME].extend(branches)
        start = 1.7e9 + 1000.0 * (100 * exp + run)
        runs.append(
            Run(exp, run, "physics", "4S", start, start + 600, 1.0, 1000, ("CDC",), True, 10.58)
        )
    registry = RunRegistry(runs)
    registry.save(folder / "runs.json")
    return registry


@dataclasses.dataclass(frozen=True)
class ResidualCollector(Collector):
    """Histogram of ``x`` minus the current offset of the event's run."""

    shifts: tuple[tuple[int, int, float], ...] = ()
    name: str = "residual"
    version: ClassVar[int] = 1

    @property
    def branches(self) -> dict[str, str]:
        return {
            "EventMetaData_m_experiment": "int32",
            "EventMetaData_m_run": "int32",
            "x": "float32",
        }

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        table = {(e, r): s for e, r, s in self.shifts}
        exp = ak.to_numpy(events["EventMetaData_m_experiment"])
        run = ak.to_numpy(events["EventMetaData_m_run"])
        shift = np.array([table.get((int(e), int(r)), 0.0) for e, r in zip(exp, run, strict=True)])
        h = hist.Hist(hist.axis.Regular(*BINS, name="residual"), storage=hist.storage.Int64())
        h.fill(ak.to_numpy(events["x"]) - shift)
        return {self.name: h}


def current_offset(constants: Constants, run: RunKey) -> float:
    payload = constants.get(PAYLOAD, *run)
    return 0.0 if payload is None else float(payload.value("offset")[0])


def residual_collector(constants: Constants, runs: Sequence[RunKey]) -> ResidualCollector:
    return ResidualCollector(tuple((e, r, current_offset(constants, (e, r))) for e, r in runs))


def _mean(h: hist.Hist) -> tuple[float, float, float]:
    counts = h.values()
    n = float(counts.sum())
    centers = h.axes[0].centers
    mean = float((counts * centers).sum() / n)
    var = float((counts * (centers - mean) ** 2).sum() / n)
    return mean, np.sqrt(var / n), n


class OffsetAlgorithm(Algorithm):
    """Offset = current offset + mean residual; ITERATE while the residual is large."""

    name = "offset"
    payloads = (PAYLOAD,)

    def __init__(self, fail_on: Sequence[RunKey] = (), crash_on: Path | None = None) -> None:
        self.fail_on = set(fail_on)
        self.crash_on = crash_on
        self.calls: list[list[RunKey]] = []

    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        self.calls.append(list(data.runs))
        if self.crash_on is not None and self.crash_on.exists():
            marker = json.loads(self.crash_on.read_text())
            if [list(r) for r in data.runs] == marker:
                self.crash_on.unlink()  # crash once, as an interrupted job would
                raise RuntimeError("simulated interruption")
        if self.fail_on & set(data.runs):
            return AlgorithmResult(AlgorithmStatus.FAILURE, message="residual fit did not converge")
        h = data.histograms.get("residual")
        if h is None or h.sum() < data.config["min_entries"]:
            return AlgorithmResult(AlgorithmStatus.NOT_ENOUGH_DATA)
        residual, error, n = _mean(h)
        offset = current_offset(data.constants, data.runs[0]) + residual
        diagnostics = Diagnostics(histograms={"residual": h})
        payload = Payload(
            PAYLOAD,
            values={"offset": np.array([offset])},
            errors={"offset": np.array([error])},
            metadata={"units": {"offset": "a.u."}},
        )
        status = (
            AlgorithmStatus.ITERATE
            if abs(residual) > data.config["tolerance"]
            else AlgorithmStatus.OK
        )
        return AlgorithmResult(status, [payload], diagnostics, f"{n:.0f} entries")

    def boundaries(self, data: AlgorithmInput) -> list[RunKey]:
        means = {
            r: current_offset(data.constants, r) + _mean(data.per_run[r]["residual"])[0]
            for r in data.runs
        }
        runs = sorted(means)
        return [b for a, b in itertools.pairwise(runs) if abs(means[b] - means[a]) > 1.0]


def offset_calibration(
    strategy: Strategy | None = None,
    algorithm: OffsetAlgorithm | None = None,
    name: str = "test-offset",
    **kwargs: object,
) -> Calibration:
    """The example calibration (``SequentialBoundaries`` asking the algorithm by default)."""
    declaration: dict[str, object] = {
        "name": name,
        "expert": "test@example.org",
        "inputs": {"mumu": CollectorInput(residual_collector, (SKIM,))},
        "algorithms": [algorithm or OffsetAlgorithm()],
        "strategy": strategy or SequentialBoundaries(),
        "run_type": "physics",
        "expert_config": {"min_entries": 500, "tolerance": 0.02},
    }
    return Calibration(**(declaration | kwargs))  # type: ignore[arg-type]
