"""Every registered calibration survives a run with no usable files (issue 13).

The sample bucket with its first run broken in every skim file (the issue's ``KeyError: (12,
1)``): (a) without a branch every
collector reads, (b) with an empty tree (its metadata still promising events), (c) absent. Each
registered calibration runs with its dependencies (sharing one database per damage, so each
runs once) at thresholds lowered for the bucket's few events, and must: not crash; end OK
or NOT_ENOUGH_DATA; name run 1 and why in its report and job summary (and no other run);
never hand run 1 to an algorithm nor stage a payload made of it alone; merge it into its
neighbour's IoV (the sequential strategies and SingleIOV) or leave it without payload
(SimpleRunByRun); and stage the very constants it stages without run 1 at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from b2calib.calibration import (
    AlgorithmStatus,
    CalibrationReport,
    SimpleRunByRun,
    calibrations,
    get_calibration,
    run_calibrations,
)
from b2calib.calibration.jobs import JobStore
from b2calib.conditions import ConditionsDB, Payload
from b2calib.runs import RunRegistry
from tests.broken_runs import broken_copy
from tests.conftest import SAMPLE

BROKEN = (12, 1)
#: Every run of the bucket (run 6 is a cosmic run the calibrations leave out; the hardware
#: interventions of run 7 make payload boundaries). Fewer would starve TOP's module T0.
RUNS = list(range(1, 13))
#: Thresholds lowered for the bucket's ~150 events a run (as the CLI tests of each detector do).
LOW: dict[str, dict[str, Any]] = {
    "cdc-xt": {"min_bin_entries": 3},
    "cdc-dedx-cosine": {"min_hits_per_bin": 100},
    "cdc-dedx-wire-gain": {"min_hits": 3},
    "ecl-energy": {"ee5x5_min_entries": 2},
    "ecl-time": {"crate_min_entries": 5},
    "top-channel-mask": {"min_mean_hits": 5.0},
    "top-channel-t0": {"min_calibrated_fraction": 0.0},
    # neither side of the bucket's module-5 step (run 7) connects all modules, and a boundary is
    # never merged over: one module T0 over the step, asked for (as tests/test_top.py does)
    "top-module-t0": {"min_pair_entries": 5, "find_boundaries": False},
    # the bucket has < 1 signal hit per channel: forced through, a payload per run
    "arich-channel-mask": {"min_outer_ring_hits": 0.0},
}
#: (a) a missing branch, (b) an empty tree, (c) an absent file.
DAMAGES = ["missing-branch", "empty-tree", "absent"]
#: Cheap enough for the fast suite (a few seconds each, the reference included): the dE/dx chain
#: (SequentialRunByRun and SingleIOV) with a missing branch; ``test_ecl`` keeps ecl-time
#: (SequentialBoundaries) there too. The rest run in `make test`.
FAST = {("cdc-dedx-run-gain", "missing-branch"), ("cdc-dedx-cosine", "missing-branch")}


def _reads_run_1(name: str) -> bool:
    """Whether the calibration's run-type filter takes run 1 (a physics run) at all."""
    run_type = get_calibration(name).run_type
    return run_type is None or "physics" in ((run_type,) if isinstance(run_type, str) else run_type)


#: Each calibration meets one damage, in turn, so that each damage is met by a third of the
#: calibrations (a damaged file is recognised where files are read, shared by all; what each
#: calibration must survive is a run without data), and the FAST cases; the whole matrix (every
#: calibration x every damage) cost about 10 minutes of test time (5 of the 2-core CI) for the
#: same coverage.
PAIRS = sorted({(name, DAMAGES[i % len(DAMAGES)]) for i, name in enumerate(calibrations())} | FAST)
CASES = [
    pytest.param(
        name,
        damage,
        marks=[
            *(() if (name, damage) in FAST else (pytest.mark.slow,)),
            *(() if _reads_run_1(name) else (pytest.mark.skip(reason="reads no physics run"),)),
        ],
    )
    for name, damage in PAIRS
]


class Bucket:
    """One calibration database over a (broken) copy of the bucket; each calibration is run
    once, with its dependencies, and its report kept."""

    def __init__(self, data: Path, folder: Path) -> None:
        self.data = data
        self.db = ConditionsDB(folder / "conditions.sqlite", author="broken-runs")
        self.db.import_local(SAMPLE / "truth", "previous")
        # every run certified GOOD, for the calibrations that select runs by data quality
        # (klm-strip-efficiency: Good Or Recoverable); the simulated runs are uncertified
        self.registry = RunRegistry(
            dataclasses.replace(r, dq=dict.fromkeys(r.detectors, "GOOD"))
            for r in RunRegistry.load(data / "runs.json")
        )
        self.cache = folder / "cache"
        self.reports: dict[str, CalibrationReport] = {}

    def report(self, name: str, runs: list[int]) -> CalibrationReport:
        if name not in self.reports:
            self.reports |= run_calibrations(
                name,
                self.data,
                db=self.db,
                staging_tag="staging",
                input_tags=["previous"],
                runs=runs,
                registry=self.registry,
                config=LOW,
                with_dependencies=True,
                cache=self.cache,
            )
        return self.reports[name]

    def staged(self, report: CalibrationReport) -> dict[str, list[tuple[str, Payload]]]:
        out: dict[str, list[tuple[str, Payload]]] = {}
        for entry in report.staged:
            out.setdefault(entry.name, []).append((str(entry.iov), self.db.payload(entry.payload)))
        return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bucket]:
    """The bucket without run 1: what a broken run 1 must not change."""
    bucket = Bucket(SAMPLE, tmp_path_factory.mktemp("reference"))
    yield bucket
    bucket.db.close()


@pytest.fixture(scope="module")
def broken() -> Iterator[dict[str, Bucket]]:
    """A bucket with run 1 broken per damage, made on first use."""
    made: dict[str, Bucket] = {}
    yield made
    for bucket in made.values():
        bucket.db.close()


def _bucket(
    made: dict[str, Bucket], damage: str, tmp_path_factory: pytest.TempPathFactory
) -> Bucket:
    if damage not in made:
        folder = tmp_path_factory.mktemp(damage)
        data = broken_copy(SAMPLE, folder / "data", *BROKEN, damage)
        made[damage] = Bucket(data, folder)
    return made[damage]


def _why(name: str, damage: str) -> str:
    skims = get_calibration(name).skims
    if damage == "absent":
        return f"no file of skim{'s' if len(skims) > 1 else ''} {', '.join(skims)}"
    reason = {"empty-tree": "truncated"}.get(damage, damage)
    files = sorted(f"cdst_{s}_e0012_r00001.root" for s in skims)
    return "; ".join(f"{f} skipped ({reason})" for f in files)


@pytest.mark.parametrize(("name", "damage"), CASES)
def test_calibration_survives_a_run_without_usable_files(
    name: str,
    damage: str,
    broken: dict[str, Bucket],
    reference: Bucket,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    bucket = _bucket(broken, damage, tmp_path_factory)
    report = bucket.report(name, RUNS)  # must not raise
    assert report.status in ("OK", "NOT_ENOUGH_DATA"), report
    # which run had no data and why: in the report, its text and the job summary
    assert report.runs_without_data == {BROKEN: _why(name, damage)}, report
    assert f"run 12.1: no usable data: {_why(name, damage)}" in str(report)
    assert "runs without usable data: 12.1" in report.message
    (job,) = [j for j in JobStore(bucket.db).jobs(name) if j.key == report.job]
    assert job.summary["runs_without_data"] == [[*BROKEN, _why(name, damage)]]
    # nothing made of run 1: no success of run 1 alone, no payload claiming its data
    for e in report.executions:
        if e.runs == [BROKEN]:
            assert e.status is AlgorithmStatus.NOT_ENOUGH_DATA
            assert e.message == f"no usable data in run 12.1: {_why(name, damage)}"
    staged = bucket.staged(report)
    for payloads in staged.values():
        for _, p in payloads:
            used = p.metadata["provenance"]["runs"]
            assert used, p.name
            assert [12, 1] not in used, (p.name, used)
            assert not any("r00001" in f for f in p.metadata["provenance"]["files"])
    # run 1 merged into a neighbour's IoV, or without payload run by run
    cal = get_calibration(name)
    if report.status == "OK":
        for payload_name, payloads in staged.items():
            covering = [iov for iov, _ in payloads if _covers(iov, BROKEN)]
            if isinstance(cal.strategy, SimpleRunByRun):
                assert not covering, (payload_name, covering)
            else:
                assert len(covering) == 1, (payload_name, [iov for iov, _ in payloads])
    # the constants are those of the runs with data
    expected = reference.report(name, [r for r in RUNS if r != BROKEN[1]])
    assert report.status == expected.status, (report, expected)
    want = reference.staged(expected)
    assert sorted(staged) == sorted(want)
    for payload_name, payloads in staged.items():
        assert len(payloads) == len(want[payload_name]), payload_name
        for (_, got), (_, ref) in zip(payloads, want[payload_name], strict=True):
            _assert_same_constants(got, ref)


def _covers(iov: str, run: tuple[int, int]) -> bool:
    e1, r1, e2, r2 = (int(x) for x in iov.split(","))
    return (e1, r1) <= run and (e2 == -1 or run <= (e2, r2))


def _assert_same_constants(got: Payload, ref: Payload) -> None:
    assert got.name == ref.name
    assert sorted(got.values) == sorted(ref.values), got.name
    for column in got.values:
        np.testing.assert_array_equal(got.value(column), ref.value(column), err_msg=got.name)
    for column in got.errors:
        np.testing.assert_array_equal(got.errors[column], ref.errors[column], err_msg=got.name)
    if ref.status is None:
        assert got.status is None
    else:
        np.testing.assert_array_equal(got.status, ref.status, err_msg=got.name)
