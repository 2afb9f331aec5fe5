"""The calibration framework: strategies, iteration, dependencies, checkpoints, staging."""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from b2calib.calibration import (
    AlgorithmResult,
    AlgorithmStatus,
    Calibration,
    CollectorInput,
    Diagnostics,
    SequentialBoundaries,
    SequentialRunByRun,
    SimpleRunByRun,
    SingleIOV,
    dependency_order,
    run_calibrations,
)
from b2calib.calibration.algorithm import Algorithm, AlgorithmInput
from b2calib.calibration.jobs import Job, JobStore, StepValues
from b2calib.conditions import ConditionsDB, Payload
from b2calib.conditions.payloadtypes import check_payload
from b2calib.exceptions import CalibrationError, ConfigError
from b2calib.sim.simulate import skim_path
from tests.broken_runs import rewrite_skim
from tests.example_calibration import (
    PAYLOAD,
    SKIM,
    OffsetAlgorithm,
    offset_calibration,
    residual_collector,
    write_runs,
)

RunKey = tuple[int, int]
OK, ITERATE = AlgorithmStatus.OK, AlgorithmStatus.ITERATE
NED, FAILURE = AlgorithmStatus.NOT_ENOUGH_DATA, AlgorithmStatus.FAILURE


# -- strategies on their own -------------------------------------------------------------------


def fake(events: Mapping[RunKey, int], need: int, fail: set[RunKey] | None = None):
    """An execute callback: OK when the runs hold ``need`` events, else NOT_ENOUGH_DATA."""
    calls: list[list[RunKey]] = []

    def execute(runs: list[RunKey]) -> AlgorithmResult:
        calls.append(list(runs))
        if fail and fail & set(runs):
            return AlgorithmResult(FAILURE, message="boom")
        if sum(events[r] for r in runs) < need:
            return AlgorithmResult(NED)
        return AlgorithmResult(OK, [Payload("P", values={"n": np.array([len(runs)])})])

    return execute, calls


def no_boundaries() -> list[RunKey]:
    return []


def summary(executions) -> list[tuple[list[RunKey], str | None, str]]:
    return [
        (e.runs, None if e.iov is None else str(e.iov), e.result.status.value) for e in executions
    ]


def test_single_iov() -> None:
    runs = [(1, 1), (1, 2), (1, 5)]
    execute, _calls = fake(dict.fromkeys(runs, 10), need=25)
    assert summary(SingleIOV().run(runs, execute, no_boundaries)) == [(runs, "1,1,1,5", "OK")]
    execute, _ = fake(dict.fromkeys(runs, 5), need=25)
    assert summary(SingleIOV().run(runs, execute, no_boundaries)) == [
        (runs, None, "NOT_ENOUGH_DATA")
    ]


def test_simple_run_by_run() -> None:
    events = {(1, 1): 10, (1, 2): 3, (1, 3): 10}
    execute, calls = fake(events, need=5)
    out = SimpleRunByRun().run(sorted(events), execute, no_boundaries)
    assert summary(out) == [
        ([(1, 1)], "1,1,1,1", "OK"),
        ([(1, 3)], "1,3,1,3", "OK"),
        ([(1, 2)], None, "NOT_ENOUGH_DATA"),
    ]
    assert calls == [[(1, 1)], [(1, 2)], [(1, 3)]]


def test_sequential_run_by_run_merges_forward_and_leftovers_backward() -> None:
    # run 3 alone is too small: merged with run 4; runs 8-9 at the end are merged into 5-7;
    # run 6 is missing from the input: the IoVs still leave no gap.
    events = {
        (1, 1): 10,
        (1, 2): 10,
        (1, 3): 4,
        (1, 4): 7,
        (1, 5): 6,
        (1, 7): 6,
        (1, 8): 2,
        (1, 9): 1,
    }
    execute, calls = fake(events, need=10)
    out = SequentialRunByRun().run(sorted(events), execute, no_boundaries)
    assert summary(out) == [
        ([(1, 1)], "1,1,1,1", "OK"),
        ([(1, 2)], "1,2,1,2", "OK"),
        ([(1, 3), (1, 4)], "1,3,1,4", "OK"),
        ([(1, 5), (1, 7), (1, 8), (1, 9)], "1,5,1,9", "OK"),
    ]
    assert [(1, 5), (1, 7)] in calls  # 5 alone, then 5+7 was enough, then the leftovers
    assert calls[-1] == [(1, 5), (1, 7), (1, 8), (1, 9)]


def test_sequential_run_by_run_closes_gaps_and_respects_experiments() -> None:
    events = {(1, 1): 10, (1, 4): 10, (2, 1): 3, (2, 2): 3}
    execute, calls = fake(events, need=10)
    out = SequentialRunByRun().run(sorted(events), execute, no_boundaries)
    # runs 2-3 of exp 1 are not in the input: run 1's payload covers them (no gap);
    # exp 2 never has enough data, and is never merged into exp 1
    assert summary(out) == [
        ([(1, 1)], "1,1,1,3", "OK"),
        ([(1, 4)], "1,4,1,4", "OK"),
        ([(2, 1), (2, 2)], None, "NOT_ENOUGH_DATA"),
    ]
    assert all(len({r[0] for r in c}) == 1 for c in calls)


def test_sequential_run_by_run_step_size() -> None:
    events = {(1, r): 10 for r in range(1, 8)}
    execute, _ = fake(events, need=10)
    out = SequentialRunByRun(step_size=3).run(sorted(events), execute, no_boundaries)
    assert [str(e.iov) for e in out] == ["1,1,1,3", "1,4,1,6", "1,7,1,7"]
    with pytest.raises(ConfigError, match="step_size"):
        SequentialRunByRun(step_size=0)


def test_failure_stops_the_strategy() -> None:
    events = {(1, r): 10 for r in range(1, 6)}
    execute, calls = fake(events, need=10, fail={(1, 3)})
    out = SequentialRunByRun().run(sorted(events), execute, no_boundaries)
    assert summary(out) == [
        ([(1, 1)], "1,1,1,1", "OK"),
        ([(1, 2)], "1,2,1,2", "OK"),
        ([(1, 3)], None, "FAILURE"),
    ]
    assert len(calls) == 3


def test_sequential_boundaries() -> None:
    events = {(1, r): 10 for r in (1, 2, 3, 5, 6, 9)} | {(2, 1): 10}
    execute, _ = fake(events, need=10)
    # boundary at run 4 (not in the input): the second payload starts there
    out = SequentialBoundaries([(1, 4), (1, 9)]).run(sorted(events), execute, no_boundaries)
    assert summary(out) == [
        ([(1, 1), (1, 2), (1, 3)], "1,1,1,3", "OK"),
        ([(1, 5), (1, 6)], "1,4,1,8", "OK"),
        ([(1, 9)], "1,9,1,9", "OK"),
        ([(2, 1)], "2,1,2,1", "OK"),
    ]
    # requested by the algorithm when none are given; the last segment without enough data is
    # not merged back over the boundary at 9: its run has no payload
    events[(1, 9)] = 2
    execute, _ = fake(events, need=10)
    out = SequentialBoundaries().run(sorted(events), execute, lambda: [(1, 5), (1, 9)])
    assert summary(out) == [
        ([(1, 1), (1, 2), (1, 3)], "1,1,1,4", "OK"),
        ([(1, 5), (1, 6)], "1,5,1,8", "OK"),
        ([(2, 1)], "2,1,2,1", "OK"),
        ([(1, 9)], None, "NOT_ENOUGH_DATA"),
    ]


def crosses(runs: list[RunKey], boundaries: list[RunKey]) -> bool:
    return any(runs[0] < b <= runs[-1] for b in boundaries)


@pytest.mark.parametrize("requested", [False, True], ids=["configured", "requested"])
def test_sequential_boundaries_never_merge_across_a_boundary(requested: bool) -> None:
    """Issue 14: a small first run before a hardware boundary was merged forward with the
    runs after it, so that one payload averaged constants that differ across the boundary.
    A segment without enough data gets no payload; its neighbours keep their own IoVs."""
    events = {(1, 1): 3, (1, 2): 10, (1, 3): 10, (1, 4): 4, (1, 5): 2, (1, 7): 12, (1, 8): 1}
    bounds = [(1, 2), (1, 4), (1, 7)]
    execute, calls = fake(events, need=10)
    strategy = SequentialBoundaries(None if requested else bounds)
    out = strategy.run(sorted(events), execute, lambda: bounds)
    assert summary(out) == [
        ([(1, 2), (1, 3)], "1,2,1,3", "OK"),
        ([(1, 7), (1, 8)], "1,7,1,8", "OK"),
        ([(1, 1)], None, "NOT_ENOUGH_DATA"),
        ([(1, 4), (1, 5)], None, "NOT_ENOUGH_DATA"),
    ]
    assert calls == [[(1, 1)], [(1, 2), (1, 3)], [(1, 4), (1, 5)], [(1, 7), (1, 8)]]
    assert not any(crosses(c, bounds) for c in calls)
    # two boundaries between runs with data (runs 4-5 absent): the payload before them ends at
    # the first, the next starts at the last
    events = {(1, 1): 10, (1, 3): 10, (1, 6): 10}
    execute, calls = fake(events, need=10)
    out = SequentialBoundaries([(1, 4), (1, 5)]).run(sorted(events), execute, no_boundaries)
    assert summary(out) == [([(1, 1), (1, 3)], "1,1,1,3", "OK"), ([(1, 6)], "1,5,1,6", "OK")]
    # a FAILURE still stops at once
    execute, calls = fake(dict.fromkeys(sorted(events), 10), need=10, fail={(1, 3)})
    out = SequentialBoundaries([(1, 3)]).run(sorted(events), execute, no_boundaries)
    assert summary(out) == [([(1, 1)], "1,1,1,2", "OK"), ([(1, 3), (1, 6)], None, "FAILURE")]
    assert len(calls) == 2


# -- the framework on files --------------------------------------------------------------------

TRUE = {(1, r): (1.0 if r < 5 else 3.0) for r in range(1, 9)} | {(2, r): -0.5 for r in (1, 2, 3)}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    events = dict.fromkeys(TRUE, 2000) | {(1, 3): 100, (2, 3): 50}
    write_runs(tmp_path / "data", TRUE, events)
    return tmp_path / "data"


@pytest.fixture
def db(tmp_path: Path) -> ConditionsDB:
    return ConditionsDB(tmp_path / "conditions.sqlite", author="calibrator")


def run(cal: Calibration, data: Path, db: ConditionsDB, tmp_path: Path, **kw):
    kw.setdefault("staging_tag", "staging")
    return run_calibrations(cal, data, db=db, cache=tmp_path / "cache", **kw)


def staged_values(db: ConditionsDB, tag: str) -> list[tuple[str, float, float]]:
    out = []
    for e in db.iovs(tag, PAYLOAD):
        p = db.payload(e.payload)
        out.append((str(e.iov), float(p.value("offset")[0]), float(p.errors["offset"][0])))
    return out


def test_boundaries_requested_by_the_algorithm_and_iteration(
    data: Path, db: ConditionsDB, tmp_path: Path
) -> None:
    report = run(offset_calibration(), data, db, tmp_path)["test-offset"]
    assert report.status == "OK", report
    assert report.iterations == 2
    assert report.converged
    staged = staged_values(db, "staging")
    assert [iov for iov, _, _ in staged] == ["1,1,1,4", "1,5,1,8", "2,1,2,3"]
    for (iov, value, error), truth in zip(staged, [1.0, 3.0, -0.5], strict=True):
        assert abs(value - truth) < 4 * error + 0.005, (iov, value, error)  # + binning
    # payloads carry their provenance, diagnostics are stored with the step
    p = db.payload(db.iovs("staging", PAYLOAD)[1].payload)
    prov = p.metadata["provenance"]
    assert prov["calibration"] == "test-offset"
    assert prov["iteration"] == 1
    assert prov["runs"] == [[1, 5], [1, 6], [1, 7], [1, 8]]
    assert prov["expert_config"] == {"min_entries": 500, "tolerance": 0.02}
    assert len(prov["files"]) == 4
    store = JobStore(db)
    (job,) = store.jobs("test-offset")
    assert job.state == "completed"
    step = next(s for s in store.steps(job) if s.runs == [(1, 5), (1, 6), (1, 7), (1, 8)])
    diag = Diagnostics.from_bytes(store.diagnostics(step) or b"")
    assert diag.histograms["residual"].sum() == pytest.approx(8000)
    # only the staged payloads are revisions; iterations are checkpoints
    assert [i.revision for i in db.payloads(PAYLOAD)] == [1, 2, 3]


class _RecordingOffset(OffsetAlgorithm):
    """The offset algorithm that also keeps the ``raw`` histogram each execution saw."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: list[np.ndarray] = []

    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        self.raw.append(data.histograms["raw"].values().copy())
        data.histograms["raw"].view()[...] = 0  # an algorithm scribbling on its input
        return super().run(data)


def test_an_input_whose_collector_does_not_change_is_not_read_again(
    data: Path, db: ConditionsDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 20: a second input that applies no constant (its collector is built the same in
    # every iteration) is collected once; the iterated one each pass
    from b2calib.calibration import runner
    from tests.example_calibration import ResidualCollector

    collected: list[str] = []
    real = runner.collect

    def counting(collector, dataset, **kw):  # type: ignore[no-untyped-def]
        collected.append(collector.name)
        return real(collector, dataset, **kw)

    monkeypatch.setattr(runner, "collect", counting)
    algorithm = _RecordingOffset()
    cal = offset_calibration(
        algorithm=algorithm,
        inputs={
            "mumu": CollectorInput(residual_collector, (SKIM,)),
            "raw": CollectorInput(ResidualCollector(name="raw"), (SKIM,)),
        },
    )
    events: list[tuple[str, int, int, int]] = []
    report = run_calibrations(
        cal,
        data,
        db=db,
        staging_tag="staging",
        cache=False,
        executor="inprocess",
        on_event=lambda e: events.append((e.phase, e.iteration, e.done, e.total)),
    )["test-offset"]
    assert report.status == "OK"
    assert report.iterations == 2
    assert collected == ["residual", "raw", "residual"]
    # every execution of the second pass saw the histograms of the first, untouched
    n_exec = len(algorithm.raw) // 2
    for first, second in zip(algorithm.raw[:n_exec], algorithm.raw[n_exec:], strict=True):
        np.testing.assert_array_equal(first, second)
    assert sum(r.sum() for r in algorithm.raw[:n_exec]) > 0
    # the second pass still reports its collection as complete
    last = [e for e in events if e[0] == "collecting" and e[1] == 1][-1]
    assert last[2] == last[3]
    assert last[3] > 0


def test_collector_identities_compare_arrays_element_by_element() -> None:
    # the constants a collector applies may be arrays: compared by value, never by ``==``'s
    # truth value (issue 20: a collector built again with other constants is collected again)
    from b2calib.calibration.runner import _same_value

    a = {"config": {"gains": (np.ones(3), np.arange(3.0)), "mode": "mumu", "n": 2}}
    same = {"config": {"gains": (np.ones(3), np.arange(3.0)), "mode": "mumu", "n": 2}}
    assert _same_value(a, same)
    moved = {"config": {"gains": (np.ones(3), np.array([0.0, 1.0, 2.5])), "mode": "mumu", "n": 2}}
    assert not _same_value(a, moved)
    assert not _same_value({"g": np.ones(3)}, {"g": np.ones(4)})
    assert not _same_value({"g": np.ones(3)}, {"g": np.ones(3, dtype=np.float32)})
    assert not _same_value({"g": np.full(2, np.nan)}, {"g": np.full(2, np.nan)})
    assert not _same_value({"g": (1.0,)}, {"g": [1.0]})
    assert not _same_value({"g": 1}, {"h": 1})


def test_a_pass_collecting_anew_holds_no_histogram_of_the_previous_pass(
    data: Path, db: ConditionsDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 20 (memory): while an input whose collector changed is collected again, the
    # previous pass's histograms of every run are gone (the runner kept that pass's result for
    # reuse while collecting the next: twice the histograms per run read)
    from b2calib.calibration import runner

    real = runner.collect
    earlier: list[weakref.ref[object]] = []
    alive: list[int] = []

    def watching(collector, dataset, **kw):  # type: ignore[no-untyped-def]
        gc.collect()
        alive.append(sum(r() is not None for r in earlier))
        result = real(collector, dataset, **kw)
        earlier.extend(weakref.ref(h) for run in result.output for h in result.output[run].values())
        return result

    monkeypatch.setattr(runner, "collect", watching)
    report = run_calibrations(
        offset_calibration(), data, db=db, staging_tag="staging", cache=False
    )["test-offset"]
    assert report.status == "OK"
    assert report.iterations == 2
    assert len(alive) == 2
    assert len(earlier) == 2 * len(report.runs)
    assert alive == [0, 0]


def test_not_enough_data_merges_runs(data: Path, db: ConditionsDB, tmp_path: Path) -> None:
    cal = offset_calibration(SequentialRunByRun(), name="per-run", open_end=True)
    report = run(cal, data, db, tmp_path, config={"per-run": {"min_entries": 1000}})["per-run"]
    iovs = [iov for iov, _, _ in staged_values(db, "staging")]
    assert iovs == [
        "1,1,1,1",
        "1,2,1,2",
        "1,3,1,4",
        "1,5,1,5",
        "1,6,1,6",
        "1,7,1,7",
        "1,8,1,8",
        "2,1,2,1",
        "2,2,-1,-1",
    ]
    assert report.status == "OK"


def test_rerun_is_idempotent(data: Path, db: ConditionsDB, tmp_path: Path) -> None:
    cal = offset_calibration()
    first = run(cal, data, db, tmp_path)["test-offset"]
    payloads, iovs, history = db.payloads(), db.iovs("staging"), db.history()
    again = run(cal, data, db, tmp_path)["test-offset"]
    assert again.already_done
    assert again.status == "OK"
    assert again.executed_steps == 0
    assert db.payloads() == payloads
    assert db.iovs("staging") == iovs
    assert db.history() == history
    assert [str(e.iov) for e in again.staged] == [str(e.iov) for e in first.staged]
    # other inputs (here a config) make a new job; identical content is not uploaded twice,
    # and its IoVs replace the earlier ones in the staging tag
    changed = run(cal, data, db, tmp_path, config={"test-offset": {"tolerance": 0.021}})
    assert not changed["test-offset"].already_done
    assert len(db.iovs("staging")) == 3


def test_resume_after_interruption(data: Path, db: ConditionsDB, tmp_path: Path) -> None:
    marker = tmp_path / "crash.json"
    marker.write_text(json.dumps([[1, 5], [1, 6], [1, 7], [1, 8]]))
    alg = OffsetAlgorithm(crash_on=marker)
    cal = offset_calibration(algorithm=alg)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run(cal, data, db, tmp_path)
    assert "staging" not in [t.name for t in db.tags()]  # nothing staged by the crashed job
    done_before = len(alg.calls) - 1  # executions that completed before the crash
    assert done_before == 1
    report = run(cal, data, db, tmp_path)["test-offset"]
    assert report.status == "OK"
    assert report.reused_steps == done_before
    assert report.executed_steps == 6 - done_before
    # same result as an uninterrupted job
    other = ConditionsDB(tmp_path / "other.sqlite")
    run(offset_calibration(), data, other, tmp_path)
    assert staged_values(db, "staging") == staged_values(other, "staging")


def test_failure_stages_nothing_and_skips_dependents(
    data: Path, db: ConditionsDB, tmp_path: Path
) -> None:
    bad = offset_calibration(algorithm=OffsetAlgorithm(fail_on=[(1, 6)]), name="bad")
    dependent = offset_calibration(name="after-bad", depends_on=("bad",))
    reports = run_calibrations(
        [dependent, bad], data, db=db, staging_tag="staging", cache=tmp_path / "cache"
    )
    assert reports["bad"].status == "FAILED"
    assert "residual fit did not converge" in reports["bad"].message
    assert reports["after-bad"].status == "SKIPPED"
    assert db.payloads() == []
    assert "staging" not in [t.name for t in db.tags()]


class NaNOffsetAlgorithm(OffsetAlgorithm):
    """The offset algorithm, returning a NaN offset (unflagged) for the runs ``nan_on``."""

    def __init__(self, nan_on: Sequence[RunKey]) -> None:
        super().__init__()
        self.nan_on = set(nan_on)

    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        result = super().run(data)
        if self.nan_on & set(data.runs):
            for p in result.payloads:
                p.values["offset"][:] = np.nan
        return result


def test_an_invalid_payload_fails_the_job_and_stages_nothing(
    data: Path, db: ConditionsDB, tmp_path: Path
) -> None:
    """An algorithm's payload that the database would refuse (here an unflagged NaN) is a
    FAILURE of that execution, named in the report: the job is marked failed, nothing is staged,
    and running it again says the same instead of retrying the staging."""
    bad = offset_calibration(algorithm=NaNOffsetAlgorithm(nan_on=[(1, 6)]), name="nan")
    for _ in range(2):
        report = run_calibrations([bad], data, db=db, staging_tag="staging", cache=tmp_path / "c")[
            "nan"
        ]
        assert report.status == "FAILED"
        assert f"payload {PAYLOAD}: no value is finite" in report.message
        assert db.payloads() == []
        assert "staging" not in [t.name for t in db.tags()]
    (job,) = JobStore(db).jobs("nan")
    assert job.state == "failed"


class ScaleAlgorithm(Algorithm):
    """Depends on the offsets: scale = offset of the run x 2 (reads the staging tag)."""

    name = "scale"
    payloads = ("TestScale",)

    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        offset = data.constants.require(PAYLOAD, *data.runs[0]).value("offset")[0]
        return AlgorithmResult(OK, [Payload("TestScale", values={"scale": np.array([2 * offset])})])


def scale_calibration(name: str = "test-scale", depends_on: tuple[str, ...] = ("test-offset",)):
    return Calibration(
        name=name,
        expert="test@example.org",
        inputs={"mumu": CollectorInput(residual_collector, (SKIM,))},
        algorithms=[ScaleAlgorithm()],
        strategy=SequentialBoundaries([(1, 5)]),
        depends_on=depends_on,
    )


def test_dependencies_see_payloads_of_their_dependencies(
    data: Path, db: ConditionsDB, tmp_path: Path
) -> None:
    with pytest.raises(CalibrationError, match="depends on test-offset, which has not completed"):
        run(scale_calibration(), data, db, tmp_path, exp=1)
    reports = run_calibrations(
        [scale_calibration(), offset_calibration()],
        data,
        db=db,
        staging_tag="staging",
        cache=tmp_path / "cache",
        exp=1,
    )
    assert list(reports) == ["test-offset", "test-scale"]
    scales = [db.payload(e.payload).value("scale")[0] for e in db.iovs("staging", "TestScale")]
    offsets = [v for _, v, _ in staged_values(db, "staging")]
    assert scales == pytest.approx([2 * o for o in offsets])
    # run alone later: the dependency completed into this staging tag before; it writes the
    # payload name test-scale wrote, for the same runs, so it must say that it prevails
    second = scale_calibration("test-scale-2")
    second.prevails_over = ("test-scale",)
    again = run(second, data, db, tmp_path, exp=1)
    assert again["test-scale-2"].status == "OK"
    made_by = {e.payload.provenance["calibration"] for e in db.iovs("staging", "TestScale")}
    assert made_by == {"test-scale-2"}


def test_dependency_cycles_are_rejected() -> None:
    a = scale_calibration("a", ("b",))
    b = scale_calibration("b", ("c",))
    c = scale_calibration("c", ("a",))
    with pytest.raises(CalibrationError, match=r"cycle: (a|b|c) -> .* -> .*"):
        dependency_order([a, b, c])
    with pytest.raises(CalibrationError, match="depends on zz, which is not scheduled"):
        dependency_order([scale_calibration("x", ("zz",))])
    d = scale_calibration("d", ())
    e = scale_calibration("e", ("d",))
    f = scale_calibration("f", ("e", "d"))
    assert [x.name for x in dependency_order([f, e, d])] == ["d", "e", "f"]


def test_max_iterations_reached(data: Path, db: ConditionsDB, tmp_path: Path) -> None:
    cal = offset_calibration(max_iterations=1)
    report = run(cal, data, db, tmp_path, exp=2)["test-offset"]
    assert report.status == "OK"
    assert not report.converged
    assert "still asked to ITERATE after 1 iterations" in report.message
    assert len(db.iovs("staging")) == 1


def test_expert_config_is_validated(tmp_path: Path) -> None:
    cal = offset_calibration()
    assert cal.configure() == {"min_entries": 500, "tolerance": 0.02}
    assert cal.configure({"tolerance": 1}) == {"min_entries": 500, "tolerance": 1.0}
    with pytest.raises(ConfigError, match=r"unknown expert_config key 'min_entry'.*min_entries"):
        cal.configure({"min_entry": 3})
    with pytest.raises(ConfigError, match="'min_entries' must be int"):
        cal.configure({"min_entries": 2.5})
    path = tmp_path / "cfg.json"
    path.write_text('{"min_entries": 10}')
    assert cal.configure(path)["min_entries"] == 10
    path.write_text("[1]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        cal.configure(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(name="bad name"), "name must be"),
        (dict(expert=""), "expert contact"),
        (dict(input_format="mdst"), "input_format"),
        (dict(stage="reco"), "stage must be one of"),
        (dict(run_type="collisions"), "unknown run type"),
        (dict(max_iterations=0), "max_iterations"),
        (dict(depends_on=("test-offset",)), "depends on itself"),
    ],
)
def test_declarations_are_validated(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        offset_calibration(**change)
    with pytest.raises(ConfigError, match="unknown skims"):
        CollectorInput(residual_collector, ("hlt_nothing",))


def test_no_input_runs(data: Path, db: ConditionsDB, tmp_path: Path) -> None:
    cal = offset_calibration(beam_energy="Continuum")
    report = run(cal, data, db, tmp_path)["test-offset"]
    assert report.status == "NOT_ENOUGH_DATA"
    assert "no input run" in report.message


def test_payload_not_declared_is_an_error(data: Path, db: ConditionsDB, tmp_path: Path) -> None:
    class Sloppy(OffsetAlgorithm):
        payloads = ("Other",)

    with pytest.raises(CalibrationError, match="returned payloads \\['TestOffset'\\]"):
        run(offset_calibration(algorithm=Sloppy()), data, db, tmp_path)


def test_command_line(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from b2calib.calibration import declaration
    from b2calib.cli import cli

    monkeypatch.setattr(declaration, "_REGISTRY", {})
    declaration.register(offset_calibration())
    declaration.register(scale_calibration())
    url = str(tmp_path / "cli.sqlite")
    cfg = tmp_path / "offset.json"
    cfg.write_text('{"min_entries": 1000}')
    runner = CliRunner()
    base = ["calibrate", "--data", str(data), "--db", url, "--executor", "inprocess", "--quiet"]
    listed = runner.invoke(cli, ["calibrate", "--list"])
    assert listed.exit_code == 0
    line = "test-scale: post-tracking; test@example.org; skims hlt_mumu_2trk (needs test-offset)"
    assert line in listed.output
    # the dependency has not run into this staging tag: one clear line, exit status 1
    result = runner.invoke(cli, [*base, "test-scale", "--staging", "s1", "--runs", "1-8"])
    assert result.exit_code == 1
    assert "depends on test-offset, which has not completed into staging tag s1" in result.output
    result = runner.invoke(
        cli,
        [
            *base,
            "test-scale",
            "--with-deps",
            "--staging",
            "s1",
            "--exp",
            "1",
            "--runs",
            "1-8",
            "--config",
            f"test-offset={cfg}",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "test-offset: OK" in result.output
    assert "staged TestScale rev 2 [1,5,1,8] in s1" in result.output
    again = runner.invoke(
        cli,
        [
            *base,
            "test-offset",
            "--staging",
            "s1",
            "--exp",
            "1",
            "--runs",
            "1-8",
            "--config",
            str(cfg),
        ],
    )
    assert again.exit_code == 0
    assert "completed before, nothing to do" in again.output
    bad = runner.invoke(cli, [*base, "test-offset", "--runs", "3-1"])
    assert bad.exit_code == 1
    assert "Error: --runs '3-1': range 3-1 ends before it starts" in bad.output
    unknown = runner.invoke(cli, [*base, "nope"])
    assert unknown.exit_code == 1
    assert "no calibration named 'nope'; registered: " in unknown.output
    assert "test-offset, test-scale" in unknown.output
    lacking = runner.invoke(
        cli, [*base, "test-offset", "--exp", "2", "--runs", "3", "--staging", "s2"]
    )
    assert lacking.exit_code == 1
    assert "test-offset: NOT_ENOUGH_DATA" in lacking.output


def test_later_algorithms_see_the_earlier_ones_payloads(
    data: Path, db: ConditionsDB, tmp_path: Path
) -> None:
    cal = Calibration(
        name="offset-and-scale",
        expert="test@example.org",
        inputs={"mumu": CollectorInput(residual_collector, (SKIM,))},
        algorithms=[OffsetAlgorithm(), ScaleAlgorithm()],
        strategy=SequentialBoundaries([(1, 5)]),
        expert_config={"min_entries": 500, "tolerance": 0.02},
    )
    report = run(cal, data, db, tmp_path, exp=1)["offset-and-scale"]
    assert report.status == "OK"
    assert report.iterations == 2
    offsets = [v for _, v, _ in staged_values(db, "staging")]
    scales = [db.payload(e.payload).value("scale")[0] for e in db.iovs("staging", "TestScale")]
    assert scales == pytest.approx([2 * o for o in offsets])
    assert offsets == pytest.approx([1.0, 3.0], abs=0.05)


def test_installed_calibrations_survive_a_replaced_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: listing calibrations while a test had replaced the registry loaded the entry
    points into that temporary registry and never again: every later lookup of a detector
    calibration failed with "registered: none"."""
    import dataclasses

    from b2calib.calibration import declaration

    with monkeypatch.context() as m:
        m.setattr(declaration, "_REGISTRY", {})
        assert "ecl-energy" in declaration.calibrations()
    assert declaration.get_calibration("ecl-energy").name == "ecl-energy"
    installed = declaration.get_calibration("cdc-t0")
    with pytest.raises(ConfigError, match="a calibration named 'cdc-t0' is already registered"):
        declaration.register(dataclasses.replace(installed))
    assert declaration.register(installed) is installed


def test_dq_filters_read_the_flags_certified_in_the_database(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from b2calib.calibration import declaration
    from b2calib.cli import cli
    from b2calib.qa.store import QADatabase
    from b2calib.runs import RunRegistry

    monkeypatch.setattr(declaration, "_REGISTRY", {})
    declaration.register(offset_calibration(dq="Good"))
    url = str(tmp_path / "dq.sqlite")
    base = ["calibrate", "test-offset", "--data", str(data), "--db", url, "--exp", "1"]
    base += ["--executor", "inprocess", "--quiet"]
    # nothing certified yet (runs.json carries no flags): no run passes the filter
    before = CliRunner().invoke(cli, [*base, "--staging", "before"])
    assert "test-offset: NOT_ENOUGH_DATA" in before.output
    assert "no input run" in before.output
    qdb = QADatabase(url)
    qdb.runs.import_runs(RunRegistry.load(data / "runs.json"))
    dqm = qdb.users.add("dqm", "secret", "manager")
    qdb.certification.set_flags([(1, r, "CDC", "GOOD") for r in (2, 4, 6, 7)], user=dqm, comment="")
    qdb.certification.set_flags([(1, 7, "CDC", "BAD")], user=dqm, comment="HV trip")
    qdb.close()
    after = CliRunner().invoke(cli, [*base, "--staging", "after"])
    assert "runs 3 (1.2..1.6)" in after.output, after.output


def test_a_new_detector_package_is_found_without_reinstalling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The installed entry points name b2calib.detectors as a whole: a detector package added
    to it (here in a folder of the test, joined to the package's path) brings its calibrations
    and its QA parts with no reinstall and no edit elsewhere."""
    from importlib.metadata import entry_points

    import b2calib.detectors

    package = tmp_path / "zz_newdet"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import dataclasses\n"
        "from b2calib.detectors.cdc.dedx import run_gain_calibration\n\n"
        "def calibrations():\n"
        "    return [dataclasses.replace(run_gain_calibration(), name='zz-new-gain')]\n"
    )
    (package / "qa.py").write_text(
        "from b2calib.qa.monitoring.parts import occupancy\n\n"
        "def qa_parts():\n"
        "    return list(occupancy('CDC', 'nCDCHits', 'zz_hits', 'ZZ hits'))\n"
    )
    monkeypatch.setattr(b2calib.detectors, "__path__", [*b2calib.detectors.__path__, str(tmp_path)])
    found = {
        ep.group: ep.load()
        for group in ("b2calib.calibrations", "b2calib.qa")
        for ep in entry_points(group=group)
        if ep.value.startswith("b2calib.detectors:")
    }
    names = [c.name for c in found["b2calib.calibrations"]()]
    assert "zz-new-gain" in names
    assert {"ecl-energy", "cdc-t0", "top-common-t0"} <= set(names)
    variables = {v.name for p in found["b2calib.qa"]() for v in p.variables}
    assert {"hadron.zz_hits_per_event", "mumu.cdc_hits_per_track"} <= variables


# -- runs without usable data (issue 13) ---------------------------------------------------------


def _break(data: Path, run: RunKey, damage: str) -> None:
    """Break the example's file of ``run`` (see :data:`WHY`)."""
    path = skim_path(data, *run, SKIM)
    if damage == "missing-branch":
        rewrite_skim(path, drop=["x"])
    elif damage == "wrong-type":
        rewrite_skim(path, retype={"x": "float64"})
    elif damage == "empty-tree":
        rewrite_skim(path, empty=True)
    elif damage == "empty-file":
        rewrite_skim(path, empty=True, n_events=0)
    elif damage == "truncated":  # not even its metadata can be read
        path.write_bytes(path.read_bytes()[:2000])
    else:
        path.unlink()


WHY = {
    "missing-branch": "cdst_hlt_mumu_2trk_e0001_r00006.root skipped (missing-branch)",
    "wrong-type": "cdst_hlt_mumu_2trk_e0001_r00006.root skipped (wrong-type)",
    "empty-tree": "cdst_hlt_mumu_2trk_e0001_r00006.root skipped (truncated)",
    "empty-file": "cdst_hlt_mumu_2trk_e0001_r00006.root has no events",
    "truncated": "cdst_hlt_mumu_2trk_e0001_r00006.root skipped (truncated)",
    "absent": "no file of skim hlt_mumu_2trk",
}


@pytest.mark.parametrize("damage", list(WHY))
def test_a_run_without_usable_data_is_merged(
    damage: str, data: Path, db: ConditionsDB, tmp_path: Path
) -> None:
    """Regression (issue 13): a run whose only file was skipped, is empty or absent reached the
    algorithms as a run without collector output (the example's boundary request, like
    ecl-time's, raised KeyError). The algorithms see only runs with data; the strategy merges
    the run as any run lacking data; the report and the job summary say which run and why."""
    _break(data, (1, 6), damage)
    alg = OffsetAlgorithm()
    report = run(offset_calibration(algorithm=alg), data, db, tmp_path)["test-offset"]
    assert report.status == "OK", report
    assert (1, 6) in report.runs
    assert report.runs_without_data == {(1, 6): WHY[damage]}
    assert all((1, 6) not in runs for runs in alg.calls)  # never handed to the algorithm
    staged = staged_values(db, "staging")
    assert [iov for iov, _, _ in staged] == ["1,1,1,4", "1,5,1,8", "2,1,2,3"]  # run 6 merged
    assert staged[1][1] == pytest.approx(3.0, abs=0.1)
    p = db.payload(db.iovs("staging", PAYLOAD)[1].payload)
    assert p.metadata["provenance"]["runs"] == [[1, 5], [1, 7], [1, 8]]  # the data it used
    assert not any("r00006" in f for f in p.metadata["provenance"]["files"])
    assert f"run 1.6: no usable data: {WHY[damage]}" in str(report)
    assert "runs without usable data: 1.6" in report.message
    (job,) = JobStore(db).jobs("test-offset")
    assert job.summary["runs_without_data"] == [[1, 6, WHY[damage]]]
    again = run(offset_calibration(), data, db, tmp_path)["test-offset"]
    assert again.already_done
    assert again.runs_without_data == report.runs_without_data


def test_a_run_without_usable_data_run_by_run(data: Path, db: ConditionsDB, tmp_path: Path) -> None:
    """SimpleRunByRun: the run without data is NOT_ENOUGH_DATA, saying why; the others stage."""
    _break(data, (1, 6), "missing-branch")
    cal = offset_calibration(SimpleRunByRun(), name="by-run")
    report = run(cal, data, db, tmp_path, exp=1)["by-run"]
    assert report.status == "OK", report
    lacking = [e for e in report.executions if e.iov is None]
    # run 3 holds too few events, run 6 none
    assert [(e.runs, e.status) for e in lacking] == [([(1, 3)], NED), ([(1, 6)], NED)]
    assert lacking[1].message == f"no usable data in run 1.6: {WHY['missing-branch']}"
    iovs = [iov for iov, _, _ in staged_values(db, "staging")]
    assert iovs == ["1,1,1,1", "1,2,1,2", "1,4,1,4", "1,5,1,5", "1,7,1,7", "1,8,1,8"]
    assert "runs without payload: 1.3..1.3 (NOT_ENOUGH_DATA), 1.6..1.6" in report.message


class Careless(OffsetAlgorithm):
    """Returns a payload whatever its input (a nominal offset when it has no histogram)."""

    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        if "residual" in data.histograms:
            return super().run(data)
        nominal = Payload(PAYLOAD, values={"offset": np.array([0.0])})
        return AlgorithmResult(OK, [nominal], message="nominal")


def test_no_payload_is_staged_from_nothing(data: Path, db: ConditionsDB, tmp_path: Path) -> None:
    """Regression (issue 13): runs without data reached the algorithm, which could return a
    payload made of nothing; now such an execution is NOT_ENOUGH_DATA before any algorithm
    runs, and a calibration none of whose runs has data stages nothing."""
    damages = {(2, 1): "missing-branch", (2, 2): "empty-file", (2, 3): "absent"}
    for run_key, damage in damages.items():
        _break(data, run_key, damage)
    for strategy in (SingleIOV(), SequentialRunByRun(), SimpleRunByRun(), SequentialBoundaries()):
        name = f"careless-{type(strategy).__name__}"
        cal = offset_calibration(strategy, algorithm=Careless(), name=name)
        report = run(cal, data, db, tmp_path, exp=2)[name]
        assert report.status == "NOT_ENOUGH_DATA", report
        assert "nothing staged" in report.message
        assert sorted(report.runs_without_data) == [(2, 1), (2, 2), (2, 3)]
        assert all(e.status is NED for e in report.executions)
    assert db.payloads() == []


class CombinedOffsetAlgorithm(OffsetAlgorithm):
    """The offset algorithm whose results are revised together: every payload also carries the
    mean offset of all executions (or, with ``nan``, an unflagged NaN offset)."""

    def __init__(self, nan: bool = False) -> None:
        super().__init__()
        self.nan = nan

    def combine(self, executions, constants, config):  # type: ignore[no-untyped-def]
        offsets = [e.result.payloads[0].value("offset")[0] for e in executions]
        out = []
        for e in executions:
            (p,) = e.result.payloads
            value = np.nan if self.nan else p.value("offset")[0]
            revised = Payload(
                p.name,
                values={"offset": np.array([value]), "mean": np.array([np.mean(offsets)])},
                errors=p.errors,
                metadata={"units": {"offset": "a.u.", "mean": "a.u."}},
            )
            out.append(AlgorithmResult(e.result.status, [revised], message="combined"))
        return out


def test_combine_revises_the_staged_payloads_together(
    data: Path, db: ConditionsDB, tmp_path: Path
) -> None:
    """Algorithm.combine sees the successful executions of the strategy in run order; what it
    returns is staged (with the runner's provenance) and the step records keep each execution's
    own result."""
    cal = offset_calibration(
        strategy=SequentialBoundaries([(1, 5)]), algorithm=CombinedOffsetAlgorithm()
    )
    report = run(cal, data, db, tmp_path, exp=1)["test-offset"]
    assert report.status == "OK"
    assert [e.message for e in report.executions] == ["combined", "combined"]
    staged = [db.payload(e.payload) for e in db.iovs("staging", PAYLOAD)]
    offsets = [p.value("offset")[0] for p in staged]
    assert offsets == pytest.approx([1.0, 3.0], abs=0.05)
    assert [p.value("mean")[0] for p in staged] == pytest.approx([np.mean(offsets)] * 2)
    assert all(p.metadata["provenance"]["calibration"] == "test-offset" for p in staged)
    (job,) = JobStore(db).jobs("test-offset")
    last = [s for s in JobStore(db).steps(job) if s.iteration == report.iterations - 1]
    assert all(list(s.payloads[0].values) == ["offset"] for s in last)  # the executions' own
    # a new job (another config) reusing nothing: combined the same way, nothing else staged
    again = run(cal, data, db, tmp_path, exp=1, config={"test-offset": {"tolerance": 0.021}})
    assert again["test-offset"].status == "OK"
    revised = [db.payload(e.payload) for e in db.iovs("staging", PAYLOAD)]
    assert [p.value("mean")[0] for p in revised] == pytest.approx([np.mean(offsets)] * 2, abs=0.01)


def test_a_combine_giving_an_invalid_payload_fails_the_job(
    data: Path, db: ConditionsDB, tmp_path: Path
) -> None:
    cal = offset_calibration(
        strategy=SequentialBoundaries([(1, 5)]), algorithm=CombinedOffsetAlgorithm(nan=True)
    )
    report = run(cal, data, db, tmp_path, exp=1)["test-offset"]
    assert report.status == "FAILED"
    assert f"payload {PAYLOAD}: offset is nan" in report.message
    assert db.payloads() == []


def test_a_result_combine_leaves_alone_is_checked_once(
    data: Path, db: ConditionsDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner checks an execution's payloads once, when it is executed; a combine that
    returns that very result does not have them checked again (a per-strip payload's check
    took 0.06 s under load: it was paid twice). The database's own check when staging stays."""
    import b2calib.calibration.runner as runner

    checked: list[str] = []

    def counting(payload: Payload, source: str | None = None) -> None:
        checked.append(payload.name)
        check_payload(payload, source)

    monkeypatch.setattr(runner, "check_payload", counting)
    cal = offset_calibration(strategy=SequentialBoundaries([(1, 5)]))
    report = run(cal, data, db, tmp_path, exp=1)["test-offset"]
    assert report.status == "OK"
    executed = sum(1 for e in report.executions if e.iov is not None)
    assert executed == 2
    assert checked == [PAYLOAD] * executed * report.iterations


def test_a_payload_is_written_once_and_staged_with_its_checkpoints_bytes(
    data: Path, db: ConditionsDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner writes each payload's file once, for its step's checkpoint, and staging
    stores those very bytes (a per-strip payload's file took 0.06 s to write: it was written
    again at staging)."""
    import sqlalchemy as sa

    from b2calib.calibration.jobs import step_payloads

    written: list[str] = []
    to_bytes = Payload.to_bytes

    def counting(self: Payload) -> tuple[bytes, str]:
        written.append(self.name)
        return to_bytes(self)

    monkeypatch.setattr(Payload, "to_bytes", counting)
    cal = offset_calibration(strategy=SequentialBoundaries([(1, 5)]))
    report = run(cal, data, db, tmp_path, exp=1)["test-offset"]
    assert report.status == "OK"
    executed = sum(1 for e in report.executions if e.iov is not None)
    assert executed == 2
    assert written == [PAYLOAD] * executed * report.iterations
    with db.read() as conn:
        checkpoints = set(conn.execute(sa.select(step_payloads.c.checksum)).scalars())
    staged = {e.payload.checksum for e in db.iovs("staging", PAYLOAD)}
    assert len(staged) == executed
    assert staged <= checkpoints


def test_payload_files_are_written_while_the_next_execution_runs_and_recorded_in_order(
    data: Path, db: ConditionsDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An execution's payload files are written on the runner's writer thread while the next
    execution runs (writing per-strip payloads and their diagnostics was most of the
    algorithms' time of svd-hot-strips and beamspot), with their content hash; every execution
    is still recorded, in the order executed, with the bytes staged."""
    import threading
    import time

    import sqlalchemy as sa

    from b2calib.calibration.jobs import JobStore, step_payloads

    writes: list[tuple[str, float, float]] = []
    to_bytes = Payload.to_bytes

    def slow(self: Payload) -> tuple[bytes, str]:
        start = time.monotonic()
        time.sleep(0.1)  # a large payload
        out = to_bytes(self)
        writes.append((threading.current_thread().name, start, time.monotonic()))
        return out

    monkeypatch.setattr(Payload, "to_bytes", slow)
    hashed: list[str] = []
    content_hash = Payload.content_hash

    def hashing(self: Payload) -> str:
        hashed.append(threading.current_thread().name)
        return content_hash(self)

    monkeypatch.setattr(Payload, "content_hash", hashing)
    alg = OffsetAlgorithm()
    started: list[float] = []
    run_alg = alg.run

    unrecorded: list[int] = []
    store = JobStore(db)

    def timed(data: AlgorithmInput) -> AlgorithmResult:
        started.append(time.monotonic())
        jobs = store.jobs("test-offset")
        unrecorded.append(len(alg.calls) - (len(store.steps(jobs[0])) if jobs else 0))
        return run_alg(data)

    monkeypatch.setattr(alg, "run", timed)
    cal = offset_calibration(strategy=SequentialRunByRun(), algorithm=alg)
    report = run(cal, data, db, tmp_path, exp=1)["test-offset"]
    assert report.status == "OK"
    assert report.executed_steps == len(alg.calls) > 4
    # the checkpoints are at most two executions behind
    assert max(unrecorded) == 2
    assert {name for name, _, _ in writes} == {"b2calib-files_0"}
    # so is the content hash the database identifies stored content by (not in its transaction)
    assert set(hashed) == {"b2calib-files_0"}
    # executions started while an earlier one's file was being written
    assert any(a < t < b for t in started for _, a, b in writes)
    (job,) = store.jobs("test-offset")
    steps = store.steps(job)
    assert [s.runs for s in steps] == alg.calls
    with db.read() as conn:
        checkpoints = set(conn.execute(sa.select(step_payloads.c.checksum)).scalars())
    staged = {e.payload.checksum for e in db.iovs("staging", PAYLOAD)}
    assert len(staged) == sum(1 for e in report.executions if e.iov is not None)
    assert staged <= checkpoints


def test_short_executions_are_checkpointed_together(
    data: Path, db: ConditionsDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20: each commit waits for the disk (about 5 ms with synchronous=FULL), as long as
    a beam-spot execution. Executions shorter than _BATCH_SECONDS are recorded several to a
    transaction, in the order executed and still at most two executions behind; an execution
    that took longer, or finished that long ago, is recorded at the next chance, alone."""
    from b2calib.calibration import runner

    batches: list[int] = []
    record_steps = JobStore.record_steps

    def counting(self: JobStore, job: Job, steps: Sequence[StepValues]) -> list[int]:
        batches.append(len(steps))
        return record_steps(self, job, steps)

    monkeypatch.setattr(JobStore, "record_steps", counting)
    alg = OffsetAlgorithm()
    run_alg = alg.run
    store = JobStore(db)
    unrecorded: list[int] = []

    def tracked(data: AlgorithmInput) -> AlgorithmResult:
        jobs = store.jobs("test-offset")
        unrecorded.append(len(alg.calls) - (len(store.steps(jobs[0])) if jobs else 0))
        return run_alg(data)

    monkeypatch.setattr(alg, "run", tracked)
    cal = offset_calibration(strategy=SequentialRunByRun(), algorithm=alg)
    report = run(cal, data, db, tmp_path, exp=1)["test-offset"]
    assert report.status == "OK"
    assert report.executed_steps == len(alg.calls) == sum(batches) > 4
    assert len(batches) < len(alg.calls)  # fewer transactions than executions
    assert max(unrecorded) <= 2
    (job,) = store.jobs("test-offset")
    steps = store.steps(job)
    assert [s.runs for s in steps] == alg.calls
    assert [s.id for s in steps] == sorted(s.id for s in steps)

    # executions that take longer are each recorded at the next chance, as before
    monkeypatch.setattr(runner, "_BATCH_SECONDS", 0.0)
    slow = ConditionsDB(tmp_path / "slow.sqlite")
    alg.calls.clear()
    batches.clear()
    store = JobStore(slow)
    unrecorded.clear()
    assert run(cal, data, slow, tmp_path, exp=1)["test-offset"].status == "OK"
    assert sum(batches) == len(alg.calls)
    # its files are written on the writer thread: recorded at the next execution or the one
    # after, never more than two behind
    assert max(unrecorded) <= 2
    assert len(batches) > len(alg.calls) // 2


def test_iterations_reread_their_files_from_the_read_cache(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An iterating calibration's collector, built from the constants, reads its files once:
    the next iterations take the decoded branches from the job's read cache, which is gone
    after the job (and a killed job's with it); the payloads are those of a job without it
    (budget 0), bit for bit."""
    from b2calib.engine import _reads

    loads: list[bool] = []
    real_load = _reads._load

    def spy(path: Path) -> object:
        out = real_load(path)
        loads.append(out is not None)
        return out

    monkeypatch.setattr(_reads, "_load", spy)
    folder = tmp_path / "reads"  # made by the first job
    monkeypatch.setenv("B2CALIB_READ_CACHE_DIR", str(folder))
    # a killed job's folder (its process gone) is removed by the next job; a running one's
    # kept, and another machine's (a folder shared by several nodes)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    orphan = folder / f"b2calib-reads-{gone.pid}@{host}-test-offset-x"
    running = folder / f"b2calib-reads-{os.getppid()}@{host}-test-offset-y"
    elsewhere = folder / f"b2calib-reads-{gone.pid}@{host}x-test-offset-z"
    for old in (orphan, running, elsewhere):
        old.mkdir(parents=True)
        (old / "entry.bin").write_bytes(b"x")
    results = []
    for budget in ("0", "100"):
        monkeypatch.setenv("B2CALIB_READ_CACHE_MB", budget)
        db = ConditionsDB(tmp_path / f"conditions-{budget}.sqlite", author="calibrator")
        report = run_calibrations(offset_calibration(), data, db=db, staging_tag="s", cache=False)
        assert report["test-offset"].iterations > 1
        results.append(staged_values(db, "s"))
        # the job's folder is removed, the orphan too
        assert sorted(folder.iterdir()) == sorted([running, elsewhere])
        hits = sum(loads)
        assert (hits > 0) == (budget != "0")
        loads.clear()
    assert results[0] == results[1]


def test_a_read_cache_folder_that_cannot_be_made_is_named(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$B2CALIB_READ_CACHE_DIR`` is made when missing; when it cannot be (below a file), the
    iterating calibration stops with one line naming the variable and the folder."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("B2CALIB_READ_CACHE_DIR", str(blocker / "reads"))
    db = ConditionsDB(tmp_path / "conditions.sqlite", author="calibrator")
    with pytest.raises(ConfigError, match=r"B2CALIB_READ_CACHE_DIR='.*a-file/reads': cannot make"):
        run_calibrations(offset_calibration(), data, db=db, staging_tag="s", cache=False)


def test_an_executions_summed_histograms_are_summed_when_first_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 20: the histograms an execution gets summed over its runs are summed name by name
    when the algorithm first asks (an algorithm reading single runs never pays for them), the
    same, bit for bit, as the runs' output merged; runs without output are left out."""
    import hist

    from b2calib.calibration import runner
    from b2calib.engine import RunOutput

    rng = np.random.default_rng(3)
    output = RunOutput()
    for run in (3, 1, 2):
        hs = {}
        for name in ("a", "b"):
            h = hist.Hist(hist.axis.Regular(20, 0.0, 1.0), storage=hist.storage.Double())
            h.fill(rng.random(50))
            hs[name] = h
        output.add((1, run), hs)
    sums: list[int] = []

    def counted(hists: Sequence[hist.Hist]) -> hist.Hist:
        sums.append(len(hists))
        return runner_sum(hists)

    runner_sum = runner.sum_histograms
    monkeypatch.setattr(runner, "sum_histograms", counted)
    runs = [(1, 2), (1, 3), (1, 9), (1, 1)]  # (1, 9): no output
    merged = runner._Merged(output, runs)
    assert sorted(merged) == ["a", "b"]
    assert len(merged) == 2
    assert sums == []
    want = output.merged([(1, 1), (1, 2), (1, 3)])
    assert np.array_equal(merged["a"].view(flow=True), want["a"].view(flow=True))
    assert merged["a"] is merged["a"]
    assert sums == [3]
    assert np.array_equal(merged["b"].view(flow=True), want["b"].view(flow=True))
    assert sums == [3, 3]
    assert dict(runner._Merged(output, [(1, 9)])) == {}
