"""What the prompt loop builds on (issue 17): ordering-only dependencies (``after``), progress
events, the job key computed without collecting (``plan_jobs``), the job summary's times,
stage and channel counts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from b2calib.calibration import (
    Calibration,
    JobStore,
    ProgressEvent,
    dependency_order,
    plan_jobs,
    run_calibrations,
)
from b2calib.conditions import ChannelStatus, ConditionsDB, Payload
from b2calib.engine import Dataset, collect
from b2calib.exceptions import CalibrationError, ConfigError
from tests.example_calibration import (
    SKIM,
    OffsetAlgorithm,
    ResidualCollector,
    offset_calibration,
    write_runs,
)

TRUE = {(1, r): (1.0 if r <= 4 else 3.0) for r in range(1, 9)} | {(2, r): -0.5 for r in (1, 2, 3)}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    write_runs(tmp_path / "data", TRUE, dict.fromkeys(TRUE, 1000))
    return tmp_path / "data"


@pytest.fixture
def db(tmp_path: Path) -> ConditionsDB:
    return ConditionsDB(tmp_path / "conditions.sqlite", author="calibrator")


def test_after_orders_without_requiring(data: Path, db: ConditionsDB, tmp_path: Path) -> None:
    """``after``: ordered after a selected calibration, never required nor pulled in, not
    skipped when it fails; a cycle through after edges is an error."""
    bad = offset_calibration(algorithm=OffsetAlgorithm(fail_on=[(1, 6)]), name="first")
    later = offset_calibration(name="later", after=("first",))
    assert [c.name for c in dependency_order([later, bad])] == ["first", "later"]
    # not selected: ignored (not an error, unlike depends_on)
    assert [c.name for c in dependency_order([later])] == ["later"]
    events: list[ProgressEvent] = []
    reports = run_calibrations(
        [later, bad],
        data,
        db=db,
        staging_tag="staging",
        cache=tmp_path / "cache",
        exp=1,
        on_event=events.append,
    )
    assert list(reports) == ["first", "later"]
    assert reports["first"].status == "FAILED"
    assert reports["later"].status == "OK", reports["later"]  # not skipped
    done = [e.calibration for e in events if e.phase == "done"]
    assert done == ["first", "later"]
    # run alone: the calibration it runs after never completed, and it runs all the same
    alone = offset_calibration(name="alone", after=("first", "never-registered"))
    assert (
        run_calibrations(alone, data, db=db, staging_tag="other", cache=tmp_path / "cache", exp=1)[
            "alone"
        ].status
        == "OK"
    )
    # with_dependencies does not pull `after` calibrations in
    only = run_calibrations(
        alone,
        data,
        db=db,
        staging_tag="third",
        cache=tmp_path / "cache",
        exp=1,
        with_dependencies=True,
    )
    assert list(only) == ["alone"]
    # cycles through after edges, or mixing both kinds, are errors
    a = offset_calibration(name="a", after=("b",))
    b = offset_calibration(name="b", depends_on=("a",))
    with pytest.raises(CalibrationError, match="cycle"):
        dependency_order([a, b])
    c = offset_calibration(name="c", after=("d",))
    d = offset_calibration(name="d", after=("c",))
    with pytest.raises(CalibrationError, match="cycle"):
        dependency_order([c, d])
    with pytest.raises(ConfigError, match="runs after itself"):
        offset_calibration(name="e", after=("e",))
    with pytest.raises(ConfigError, match="both in depends_on and in after"):
        offset_calibration(name="f", after=("g",), depends_on=("g",))


def test_after_is_not_part_of_the_job_key(data: Path, db: ConditionsDB, tmp_path: Path) -> None:
    """The jobs of `after` calibrations do not enter the key: the job is the same whether or
    not they ran before."""
    first = offset_calibration(name="first")
    # both write TestOffset for the same runs into one staging tag: the later one prevails
    later = offset_calibration(name="later", after=("first",))
    later.prevails_over = ("first",)
    alone = run_calibrations(later, data, db=db, staging_tag="s", cache=tmp_path / "c", exp=2)
    both = run_calibrations(
        [first, later], data, db=db, staging_tag="s", cache=tmp_path / "c", exp=2
    )
    assert both["later"].already_done
    assert both["later"].job == alone["later"].job


def test_plan_jobs_gives_the_runners_key(data: Path, db: ConditionsDB, tmp_path: Path) -> None:
    """plan_jobs computes, without collecting, exactly the key of the job run_calibrations runs
    (with dependencies planned or completed before), and JobStore.job finds it."""
    offset = offset_calibration()
    scale = scale_calibration()
    kw = dict(db=db, staging_tag="staging", exp=1, config={"test-offset": {"tolerance": 0.03}})
    plans = plan_jobs([scale, offset], data, **kw)  # type: ignore[arg-type]
    assert list(plans) == ["test-offset", "test-scale"]
    store = JobStore(db)
    assert store.job(plans["test-offset"].key) is None
    assert plans["test-offset"].runs == [(1, r) for r in range(1, 9)]
    # the dependency not planned nor completed: no key, and why
    alone = plan_jobs(scale, data, **kw)["test-scale"]  # type: ignore[arg-type]
    assert alone.key == ""
    assert "test-offset, which has not completed into staging tag staging" in alone.message
    reports = run_calibrations([scale, offset], data, cache=tmp_path / "cache", **kw)  # type: ignore[arg-type]
    for name, plan in plans.items():
        assert reports[name].job == plan.key
        job = store.job(plan.key)
        assert job is not None
        assert job.state == "completed"
        assert job.calibration == name
    # after the dependency completed: planned alone, the same key
    assert plan_jobs(scale, data, **kw)["test-scale"].key == plans["test-scale"].key  # type: ignore[arg-type]
    # other inputs, other key: verification, the runs, the input tags
    assert (
        plan_jobs(offset, data, **kw, verify=False)["test-offset"].key != plans["test-offset"].key
    )  # type: ignore[arg-type]
    changed = plan_jobs(offset, data, **(kw | {"input_tags": ["x"]}))["test-offset"]  # type: ignore[arg-type]
    assert changed.key != plans["test-offset"].key
    # no run passes the filters: no job, and why
    none = plan_jobs(offset, data, **(kw | {"exp": 9}))["test-offset"]  # type: ignore[arg-type]
    assert (none.key, none.runs) == ("", [])
    assert "no input run" in none.message


def scale_calibration(name: str = "test-scale") -> Calibration:
    from tests.test_calibration import scale_calibration as make

    return make(name)


@pytest.mark.parametrize("executor", ["inprocess", "processes"])
def test_collect_reports_progress(data: Path, executor: str, tmp_path: Path) -> None:
    """collect calls on_progress in the calling process: 0 of n, then once per item done."""
    dataset = Dataset.select(data, skims=SKIM, exp=1)
    calls: list[tuple[int, int]] = []
    result = collect(
        ResidualCollector(),
        dataset,
        executor=executor,
        workers=2,
        cache=False,
        progress=False,
        step_size=400,
        on_progress=lambda done, total: calls.append((done, total)),
    )
    n = result.n_items
    assert n == 8 * 3  # 1000 events a file: items of 400, 400 and 200
    assert calls == [(i, n) for i in range(n + 1)]


@pytest.mark.parametrize("executor", ["inprocess", "processes"])
def test_progress_events(data: Path, db: ConditionsDB, tmp_path: Path, executor: str) -> None:
    """run_calibrations' events: queued for each, then collecting n/m per iteration, fitting,
    staging, done with the status; a calibration completed before: queued, done."""
    events: list[ProgressEvent] = []
    kw = dict(db=db, staging_tag="staging", cache=tmp_path / "cache", exp=2, workers=2)
    report = run_calibrations(
        offset_calibration(), data, executor=executor, on_event=events.append, **kw
    )["test-offset"]
    assert report.status == "OK"
    phases = [(e.phase, e.iteration) for e in events if e.phase != "collecting"]
    assert phases == [
        ("queued", 0),
        ("fitting", 0),
        ("fitting", 1),
        ("staging", 1),
        ("done", 2),
    ]
    assert events[-1].message == "OK"
    for it in (0, 1):
        seen = [(e.done, e.total) for e in events if e.phase == "collecting" and e.iteration == it]
        assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
    events.clear()
    run_calibrations(offset_calibration(), data, on_event=events.append, **kw)
    assert [(e.phase, e.message) for e in events] == [("queued", ""), ("done", "OK")]


def test_job_summary_times_stage_and_channels(data: Path, db: ConditionsDB, tmp_path: Path) -> None:
    """The stored summary: started, finished (ISO UTC), wall time and its collect and algorithm
    seconds, stage, channel counts of the staged payloads; a job completed before keeps its
    recorded ones."""
    report = run_calibrations(
        offset_calibration(), data, db=db, staging_tag="s", cache=tmp_path / "c", exp=2
    )["test-offset"]
    (job,) = JobStore(db).jobs("test-offset")
    s = job.summary
    assert s["stage"] == "post-tracking"
    started = dt.datetime.fromisoformat(s["started"])
    finished = dt.datetime.fromisoformat(s["finished"])
    assert started.utcoffset() == dt.timedelta(0)
    assert started <= finished
    assert 0 < s["wall_time"] <= (finished - started).total_seconds() + 0.01
    # where the wall time went: collecting (of it, verifying the files' checksums) and the
    # algorithms, each measured, within it
    assert set(s["seconds"]) == {"collect", "verify", "algorithms"}
    assert s["seconds"]["collect"] > s["seconds"]["verify"] > 0
    assert s["seconds"]["algorithms"] > 0
    assert s["seconds"]["collect"] + s["seconds"]["algorithms"] <= s["wall_time"]
    # one payload of one channel without status staged: one OK channel
    assert s["channels"] == {"OK": 1, "fallback": 0, "NOT_ENOUGH_DATA": 0, "FAILED": 0, "masked": 0}
    assert report.summary()["channels"] == s["channels"]
    assert not report.no_ok_channel
    assert "  channels: 1 OK\n" in str(report)
    c, v, a = s["seconds"]["collect"], s["seconds"]["verify"], s["seconds"]["algorithms"]
    assert (
        f"  time {s['wall_time']:.1f} s: collecting {c:.1f} s (verifying files {v:.1f} s),"
        f" algorithms {a:.1f} s\n"
    ) in str(report)
    report.channels = {"OK": 0, "fallback": 3, "NOT_ENOUGH_DATA": 1, "FAILED": 0, "masked": 0}
    assert report.no_ok_channel
    assert "channels: 3 fallback, 1 NOT_ENOUGH_DATA: no OK channel, every one fell back" in str(
        report
    )
    again = run_calibrations(
        offset_calibration(), data, db=db, staging_tag="s", cache=tmp_path / "c", exp=2
    )["test-offset"]
    assert again.already_done
    assert (again.started, again.finished, again.wall_time) == (
        s["started"],
        s["finished"],
        s["wall_time"],
    )
    assert again.channels == s["channels"]
    assert again.seconds == s["seconds"]


def test_channel_counts() -> None:
    from b2calib.calibration import channel_counts, no_ok_channel

    st = ChannelStatus
    p = Payload(
        "P",
        keys={"ch": np.arange(8)},
        values={"v": np.array([1.0, 2.0, 3.0, np.nan, 5.0, np.nan, 0.0, 1.0])},
        status=np.array(
            [
                st.OK,
                st.OK,
                st.NOT_ENOUGH_DATA,
                st.NOT_ENOUGH_DATA,
                st.FAILED,
                st.FAILED,
                st.DEAD,
                st.HOT,
            ]
        ),
    )
    plain = Payload("Q", values={"v": np.arange(3.0)})
    counts = channel_counts([p, plain])
    assert counts == {"OK": 5, "fallback": 2, "NOT_ENOUGH_DATA": 1, "FAILED": 1, "masked": 2}
    assert not no_ok_channel(counts)
    fallen = Payload(
        "R",
        keys={"ch": np.arange(3)},
        values={"v": np.array([1.0, 1.0, np.nan])},
        status=np.array([st.NOT_ENOUGH_DATA, st.FAILED, st.FAILED]),
    )
    assert no_ok_channel(channel_counts([fallen]))
    # a mask list (hot pixels) has no OK channel and is not a failure; no channel at all neither
    hot = Payload(
        "H", keys={"ch": np.arange(2)}, values={"v": np.ones(2)}, status=np.full(2, st.HOT)
    )
    assert not no_ok_channel(channel_counts([hot]))
    assert not no_ok_channel(channel_counts([]))


def test_planning_again_reads_no_metadata(
    data: Path, db: ConditionsDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan_jobs (a workflow's complete(), asked per task) reads each file's metadata once per
    process and file version: again, nothing is opened; a changed file is read again."""
    import os

    from b2calib.engine import dataset

    read: list[str] = []

    def counting(path: str) -> object:
        read.append(str(path))
        return real(path)

    real = dataset.read_metadata
    monkeypatch.setattr(dataset, "read_metadata", counting)
    monkeypatch.setattr(dataset, "_METADATA", {})
    first = plan_jobs(offset_calibration(), data, db=db, staging_tag="s")["test-offset"]
    assert len(read) == len(TRUE)
    again = plan_jobs(offset_calibration(), data, db=db, staging_tag="s")["test-offset"]
    assert len(read) == len(TRUE)
    assert again.key == first.key
    touched = Path(read[0])
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    changed = plan_jobs(offset_calibration(), data, db=db, staging_tag="s")["test-offset"]
    assert read[len(TRUE) :] == [str(touched)]
    assert changed.key != first.key  # the file's identity is part of the job's inputs


def test_collecting_counts_the_items_of_every_input(
    data: Path, db: ConditionsDB, tmp_path: Path
) -> None:
    """A calibration with two collector inputs: one collecting count over both (the second's
    items planned from the files' metadata while the first runs)."""
    from b2calib.calibration import CollectorInput

    cal = offset_calibration(
        name="two-inputs",
        inputs={
            "a": CollectorInput(ResidualCollector(name="residual"), (SKIM,)),
            "b": CollectorInput(ResidualCollector(name="other"), (SKIM,)),
        },
        max_iterations=1,
    )
    events: list[ProgressEvent] = []
    run_calibrations(
        cal,
        data,
        db=db,
        staging_tag="s",
        cache=tmp_path / "c",
        exp=2,
        on_event=events.append,
    )
    seen = [(e.done, e.total) for e in events if e.phase == "collecting"]
    assert seen == [(0, 6), (1, 6), (2, 6), (3, 6), (3, 6), (4, 6), (5, 6), (6, 6)]
