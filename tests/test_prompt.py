"""The prompt calibration loop (b2calib.prompt, ``b2calib prompt``) on small generated buckets:
its result, failures and skips, resumption after SIGKILL, the end of the loop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from b2calib.calibration import declaration
from b2calib.calibration.jobs import JobStore
from b2calib.cli import cli
from b2calib.conditions import ConditionsDB
from b2calib.exceptions import ConfigError
from b2calib.prompt import PromptStore, run_prompt
from b2calib.prompt.summary import PromptSummary
from tests import prompt_calibrations
from tests.conftest import REPO
from tests.prompt_calibrations import HOLD_DIR_ENV, HOLD_ENV
from tests.test_db_roles import Roles, roles, set_up  # noqa: F401 (roles: the fixture)

pytest.importorskip("b2luigi")


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs 1-4 of experiment 1 for the prompt-test calibrations."""
    folder = tmp_path_factory.mktemp("prompt-bucket")
    prompt_calibrations.write_bucket(folder)
    return folder


@pytest.fixture(autouse=True)
def test_calibrations() -> Iterator[None]:
    """The prompt-test calibrations registered for the test, and removed after it."""
    prompt_calibrations.register()
    yield
    for cal in prompt_calibrations.calibrations():
        declaration._REGISTRY.pop(cal.name, None)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[ConditionsDB]:
    d = ConditionsDB(tmp_path / "prompt.sqlite", author="manager")
    yield d
    d.close()


@pytest.fixture
def any_db(db_url: str) -> Iterator[ConditionsDB]:
    """A new database on SQLite, and on PostgreSQL (marked ``postgres``)."""
    d = ConditionsDB(db_url, author="manager")
    yield d
    d.close()


def staged(db: ConditionsDB, tag: str) -> list[tuple[str, int, str, str]]:
    """The content of a tag: payload name, revision, IoV and the payload's content (its
    columns and metadata; a payload file's bytes hold the time it was written, so two runs'
    checksums differ however equal their payloads are)."""
    out = []
    for e in db.iovs(tag):
        p = db.payload(e.payload)
        columns = {
            f"{kind}:{k}": v.tolist()
            for kind, cols in (("key", p.keys), ("value", p.values), ("error", p.errors))
            for k, v in cols.items()
        }
        columns["status"] = None if p.status is None else p.status.tolist()
        content = json.dumps([columns, p.metadata], sort_keys=True)
        out.append((e.name, e.payload.revision, str(e.iov), content))
    return out


def _three_on_two_workers(data: Path, db: ConditionsDB) -> PromptSummary:
    """The loop over runs 1-4 of experiment 1 with the three prompt-test calibrations, from the
    previous tag, on 2 b2luigi workers."""
    return run_prompt(
        data,
        db=db,
        exp=1,
        runs=range(1, 5),
        input_tags=[prompt_calibrations.previous_tag(db)],
        calibrations=["tp-dep", "tp-base", "tp-indep"],
        workers=2,
        progress=False,
    )


def test_loop_stages_every_calibration_in_dependency_order(
    bucket: Path, any_db: ConditionsDB
) -> None:
    db = any_db
    summary = _three_on_two_workers(bucket, db)
    assert summary.staging_tag == "prompt_e1_r1-4"
    assert summary.input_tags == ["prev"]
    assert [r.calibration for r in summary.rows] == ["tp-base", "tp-indep", "tp-dep"]
    assert [r.status for r in summary.rows] == ["OK", "OK", "OK"]
    assert summary.ok
    assert all(r.iovs == 1 and r.payloads == 1 for r in summary.rows)
    one_ok = {"OK": 1, "fallback": 0, "NOT_ENOUGH_DATA": 0, "FAILED": 0, "masked": 0}
    assert all(r.channels == one_ok for r in summary.rows)
    # each validated against the input tag, the verdict in its job record
    assert [r.verdict for r in summary.rows] == ["GOOD"] * 3
    for r, name in zip(summary.rows, ("TPBase", "TPIndep", "TPDep"), strict=True):
        assert name in r.verdict_reason
        assert "within thresholds" in r.verdict_reason
    store = JobStore(db)
    assert {j.calibration: store.validation(j).verdict.value for j in store.jobs()} == (
        dict.fromkeys(["tp-base", "tp-indep", "tp-dep"], "GOOD")
    )
    content = staged(db, "prompt_e1_r1-4")
    assert [(name, rev, iov) for name, rev, iov, _ in content] == [
        ("TPBase", 2, "1,1,-1,-1"),  # revision 1 is the input tag's
        ("TPDep", 2, "1,1,-1,-1"),
        ("TPIndep", 2, "1,1,-1,-1"),
    ]
    # tp-dep ran after tp-base completed: its job names tp-base's job as its dependency
    jobs = {j.calibration: j for j in JobStore(db).jobs()}
    assert {j.state for j in jobs.values()} == {"completed"}
    assert json.loads(_inputs(db, jobs["tp-dep"].key))["dependencies"] == {
        "tp-base": jobs["tp-base"].key
    }
    assert db.tag("prompt_e1_r1-4").state == "TESTING"
    assert summary.state == "TESTING"
    assert any("moved to TESTING" in a for a in summary.actions)
    outcomes = PromptStore(db).outcomes(summary.prompt_run)
    assert {n: o.outcome for n, o in outcomes.items()} == dict.fromkeys(
        ["tp-base", "tp-indep", "tp-dep"], "OK"
    )
    assert outcomes["tp-dep"].started >= outcomes["tp-base"].finished
    data = summary.to_json()
    assert data["ok"] is True
    assert [r["calibration"] for r in data["rows"]] == ["tp-base", "tp-indep", "tp-dep"]
    assert data["stages"]["post-tracking"]["calibrations"] == 3
    json.dumps(data)
    table = summary.table()
    assert "tp-dep" in table
    assert "post-tracking" in table


def _log_checksums(log: Path) -> Any:
    """``file_checksum`` that also appends the file's name to ``log`` (from any process)."""
    from b2calib.engine import integrity

    real = integrity.file_checksum

    def logged(path: str) -> str:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{Path(path).name}\n".encode())
        finally:
            os.close(fd)
        return real(path)

    return logged


def test_each_file_is_checksummed_once_for_the_whole_loop(
    bucket: Path, tmp_path: Path, db: ConditionsDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop compares the files with their catalogue once, before b2luigi forks a process
    per task, and the tasks inherit the checksums: three calibrations of the same four files
    read each whole once, not once per task (issue 20: on the demo bucket the tasks spent 20 s
    of 118 verifying)."""
    import shutil

    from b2calib.engine import integrity
    from b2calib.io import FileCatalogue

    data = tmp_path / "bucket"
    shutil.copytree(bucket, data)
    catalogue = FileCatalogue(data)
    files = sorted(data.rglob("*.root"))
    for f in files:
        catalogue.record(f)
    catalogue.save()
    log = tmp_path / "checksums.log"
    integrity.forget_verified()
    monkeypatch.setattr(integrity, "file_checksum", _log_checksums(log))
    assert _three_on_two_workers(data, db).ok
    assert sorted(log.read_text().split()) == sorted(f.name for f in files)
    integrity.forget_verified()


def _inputs(db: ConditionsDB, key: str) -> str:
    import sqlalchemy as sa

    from b2calib.calibration.jobs import calibration_jobs

    with db.read() as conn:
        return str(
            conn.execute(
                sa.select(calibration_jobs.c.inputs).where(calibration_jobs.c.key == key)
            ).scalar_one()
        )


def test_failure_skips_dependents_and_independent_ones_run(
    bucket: Path, any_db: ConditionsDB
) -> None:
    db = any_db
    summary = run_prompt(
        bucket,
        db=db,
        exp=1,
        calibrations=["tp-after-fail", "tp-fail", "tp-fail-dep", "tp-indep", "tp-crash"],
        workers=1,
        progress=False,
    )
    status = {r.calibration: (r.status, r.reason) for r in summary.rows}
    # ordered by depends_on and after: tp-after-fail waited for tp-fail, but ran
    order = [r.calibration for r in summary.rows]
    assert order.index("tp-fail") < order.index("tp-after-fail")
    assert status["tp-after-fail"] == ("OK", "")
    outcomes = PromptStore(db).outcomes(summary.prompt_run)
    assert outcomes["tp-after-fail"].started >= outcomes["tp-fail"].finished
    assert status["tp-fail"][0] == "FAILED"
    assert "residual fit did not converge" in status["tp-fail"][1]
    assert status["tp-fail-dep"] == (
        "SKIPPED",
        f"dependency tp-fail FAILED: {status['tp-fail'][1]}",
    )
    assert status["tp-indep"] == ("OK", "")
    # a bug in a calibration is its failure, with where it was raised; the loop goes on
    assert status["tp-crash"] == (
        "FAILED",
        "ZeroDivisionError: a bug in the algorithm (at prompt_calibrations.py:"
        f"{_line_of('raise ZeroDivisionError')} in run)",
    )
    assert not summary.ok
    assert [e.name for e in db.iovs(summary.staging_tag)] == ["TPAfterFail", "TPIndep"]
    assert db.tag(summary.staging_tag).state == "OPEN"
    table = summary.table()
    assert f"tp-fail-dep: SKIPPED: dependency tp-fail FAILED: {status['tp-fail'][1]}" in table
    assert "stays OPEN: 3 calibrations did not succeed (tp-crash, tp-fail, tp-fail-dep)" in table


def _line_of(text: str) -> int:
    lines = Path(prompt_calibrations.__file__).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_unknown_bucket_lists_the_buckets(bucket: Path, db: ConditionsDB) -> None:
    with pytest.raises(ConfigError, match=r"no bucket 7 .*buckets: 1: exp 1 runs 1-3; 2: exp 1"):
        run_prompt(bucket, db=db, bucket=7, min_lumi_fb=0.003, progress=False)
    code, out = _cli("--data", str(bucket), "--bucket", "3", "--db", db.url)
    assert code == 1
    assert "no bucket 3" in out
    assert "buckets: 1: exp 1 runs 1-3; 2: exp 1 run 4 (open)" in out
    assert PromptStore(db).runs() == []
    with pytest.raises(ConfigError, match=r"batch system 'pbs': b2luigi knows .*slurm"):
        run_prompt(bucket, db=db, exp=1, batch_system="pbs", progress=False)
    assert PromptStore(db).runs() == []  # nothing recorded


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["prompt", "--min-lumi", "0.003", *args])
    return result.exit_code, result.output


# -- killed and resumed ---------------------------------------------------------------------

KILLED = ["tp-base", "tp-dep", "tp-indep"]


def _loop_command(bucket: Path, url: str) -> list[str]:
    cmd = [sys.executable, "-m", "tests.prompt_calibrations", "prompt", "--data", str(bucket)]
    cmd += ["--exp", "1", "--runs", "1-4", "--only", ",".join(KILLED), "--workers", "2"]
    cmd += ["--gt", "prev"]
    return [*cmd, "--db", url, "--quiet"]


def _run_loop(bucket: Path, url: str, tmp_path: Path, hold: str = "") -> subprocess.Popen[bytes]:
    """The loop in a subprocess of its own process group (held at ``hold``)."""
    env = {**os.environ, HOLD_ENV: hold, HOLD_DIR_ENV: str(tmp_path)}
    env["B2CALIB_CACHE_DIR"] = str(tmp_path / "cache")  # the collectors run (no cached output)
    with (tmp_path / "loop.log").open("ab") as log:
        return subprocess.Popen(
            _loop_command(bucket, url),
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _kill_when_held(job: subprocess.Popen[bytes], marker: Path, log: Path) -> None:
    """SIGKILL the loop's whole process group once it is held at ``marker``."""
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert job.poll() is None, f"the loop ended before {marker.name}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the loop never reached {marker.name}"
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)  # the loop's own group: it and its workers
        job.wait(10)


def _state(db: ConditionsDB) -> dict[str, str]:
    return {j.calibration: j.state for j in JobStore(db).jobs()}


@pytest.fixture(scope="module")
def uninterrupted(bucket: Path, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Any, ...]]:
    """The staging tag of an uninterrupted loop (its own database)."""
    prompt_calibrations.register()
    db = ConditionsDB(tmp_path_factory.mktemp("reference") / "ref.sqlite")
    try:
        prev = prompt_calibrations.previous_tag(db)
        summary = run_prompt(
            bucket,
            db=db,
            exp=1,
            runs=range(1, 5),
            input_tags=[prev],
            calibrations=KILLED,
            progress=False,
        )
        assert summary.ok
        return staged(db, summary.staging_tag)
    finally:
        db.close()


# where the loop is held when killed; the jobs' states and the validated calibrations then
MOMENTS: dict[str, tuple[str, dict[str, str], set[str]]] = {
    "first calibration collecting": ("tp-base:collect", {"tp-base": "init"}, set()),
    # its job completed (payloads staged), its validation not recorded yet
    "first calibration validating": ("tp-base:validate", {"tp-base": "completed"}, set()),
    "the last calibration fitting": (
        "tp-dep:fit",
        {"tp-base": "completed", "tp-dep": "collected:0"},
        {"tp-base", "tp-indep"},
    ),
}


@pytest.mark.skipif(sys.platform != "linux", reason="process groups")
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_killed_loop_resumes_to_the_same_staging_tag(
    moment: str, bucket: Path, tmp_path: Path, uninterrupted: list[tuple[Any, ...]]
) -> None:
    """Done-when of issue 17: SIGKILL at a moment, re-run: the staging tag is the uninterrupted
    run's (IoVs, payload names, revisions and contents), no payload revision twice."""
    hold, expected, validated_then = MOMENTS[moment]
    url = f"sqlite:///{tmp_path / 'killed.sqlite'}"
    name, phase = hold.split(":")
    seed = ConditionsDB(url)
    prompt_calibrations.previous_tag(seed)
    seed.close()
    job = _run_loop(bucket, url, tmp_path, hold)
    _kill_when_held(job, tmp_path / f"{name}-{phase}", tmp_path / "loop.log")
    db = ConditionsDB(url)
    try:
        at_kill = _state(db)
        assert {k: at_kill.get(k) for k in expected} == expected
        jobs = JobStore(db)
        validated = {j.calibration for j in jobs.jobs() if jobs.validation(j) is not None}
        assert validated - {"tp-indep"} == validated_then - {"tp-indep"}  # tp-indep: a race
        assert all(o.outcome == "OK" for o in PromptStore(db).outcomes(1).values())
        steps_before = {j.calibration: len(JobStore(db).steps(j)) for j in JobStore(db).jobs()}
        again = _run_loop(bucket, url, tmp_path)
        assert again.wait(120) == 0, (tmp_path / "loop.log").read_text()
        tag = "prompt_e1_r1-4"
        assert staged(db, tag) == uninterrupted
        for payload in ("TPBase", "TPDep", "TPIndep"):
            assert [p.revision for p in db.payloads(payload)] == [1, 2]  # prev's, the loop's
        assert _state(db) == dict.fromkeys(KILLED, "completed")
        # what was completed before the kill was not redone
        store = JobStore(db)
        for cal, n in steps_before.items():
            if at_kill[cal] == "completed":
                job_of = next(j for j in store.jobs(cal))
                assert len(store.steps(job_of)) == n
        assert db.tag(tag).state == "TESTING"
        assert {j.calibration: jobs.validation(j).verdict.value for j in jobs.jobs()} == (
            dict.fromkeys(KILLED, "GOOD")
        )
    finally:
        db.close()


# -- a second run, FALLBACK, the end of the loop, the command line ----------------------------


def _counts(db: ConditionsDB) -> tuple[int, int, int]:
    """Jobs, algorithm steps and payload revisions recorded."""
    store = JobStore(db)
    jobs = store.jobs()
    revisions = sum(len(db.payloads(n)) for n in prompt_calibrations.PAYLOADS.values())
    return len(jobs), sum(len(store.steps(j)) for j in jobs), revisions


def test_second_run_does_nothing_and_prints_the_same_summary(
    bucket: Path, db: ConditionsDB
) -> None:
    prev = prompt_calibrations.previous_tag(db)
    options = dict(exp=1, input_tags=[prev], progress=False)
    names = ["tp-base", "tp-dep", "tp-after"]
    first = run_prompt(bucket, db=db, calibrations=names, **options)  # type: ignore[arg-type]
    assert first.ok
    before = _counts(db)
    second = run_prompt(bucket, db=db, calibrations=names, **options)  # type: ignore[arg-type]
    assert _counts(db) == before
    assert PromptStore(db).outcomes(second.prompt_run) == {}  # no task ran
    assert [r.as_dict() for r in second.rows] == [r.as_dict() for r in first.rows]
    assert second.stage_times() == first.stage_times()
    table = first.table().split("\n\n")
    assert second.table().split("\n\n")[:2] == table[:2]  # the rows and the times
    assert second.to_json()["rows"] == first.to_json()["rows"]
    assert second.actions == []  # the staging tag stays TESTING
    # one more calibration: the staging tag changes, so it goes back to OPEN, then TESTING
    third = run_prompt(bucket, db=db, calibrations=[*names, "tp-indep"], **options)  # type: ignore[arg-type]
    assert list(PromptStore(db).outcomes(third.prompt_run)) == ["tp-indep"]
    assert third.actions[:2] == [
        "staging tag prompt_e1_r1-4 moved back from TESTING to OPEN: tp-indep to run",
        "staging tag prompt_e1_r1-4 moved to TESTING: ready for the manager's approval",
    ]
    assert third.state == "TESTING"


def test_a_relative_data_folder_is_the_same_loop(
    bucket: Path, db: ConditionsDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data folder given relative to the working directory names the same jobs as given
    absolute (regression: `make demo`'s second invocation, with `--data build/...`, found every
    calibration to do again and refused the VALIDATED staging tag)."""
    prev = prompt_calibrations.previous_tag(db)
    options = dict(exp=1, input_tags=[prev], progress=False, calibrations=["tp-base", "tp-dep"])
    monkeypatch.chdir(bucket.parent)
    first = run_prompt(Path(bucket.name), db=db, **options)  # type: ignore[arg-type]
    assert first.ok
    second = run_prompt(Path(bucket.name), db=db, **options)  # type: ignore[arg-type]
    assert PromptStore(db).outcomes(second.prompt_run) == {}  # no task ran
    third = run_prompt(bucket.resolve(), db=db, **options)  # type: ignore[arg-type]
    assert PromptStore(db).outcomes(third.prompt_run) == {}


def test_fallback_reads_fallback_in_the_progress_lines_too(
    bucket: Path, db: ConditionsDB, capsys: pytest.CaptureFixture[str]
) -> None:
    """The live line of a calibration without an OK channel says FALLBACK, as the summary's
    row does (regression: `make demo` printed "done: OK" for pxd-hot-dead-cosmic, then
    FALLBACK in its table)."""
    summary = _fallback_and_ok(bucket, db, workers=1)  # tasks here: their output captured
    assert summary.row("tp-fallback").status == "FALLBACK"
    assert summary.row("tp-indep").status == "OK"
    lines = capsys.readouterr().out.splitlines()
    done: dict[str, str] = {}  # each calibration's last line
    for line in lines:
        if line[:2].isdigit():
            name, text = line.split(None, 2)[1:]
            done[name] = text
    assert done["tp-fallback"] == (
        "done: FALLBACK - no channel of its payloads is OK: every one fell back or failed"
    )
    assert done["tp-indep"] == "done: OK"
    # recorded as completed: its dependents run
    assert PromptStore(db).outcome(summary.prompt_run, "tp-fallback").outcome == "OK"


def _fallback_and_ok(bucket: Path, db: ConditionsDB, **options: Any) -> PromptSummary:
    """The prompt loop over a calibration that falls back on every channel and an OK one."""
    return run_prompt(
        bucket,
        db=db,
        exp=1,
        input_tags=[prompt_calibrations.previous_tag(db)],
        calibrations=["tp-fallback", "tp-indep"],
        **options,
    )


def test_fallback_is_not_ok_and_blocks_auto_validation(bucket: Path, db: ConditionsDB) -> None:
    summary = _fallback_and_ok(bucket, db, auto_validate=True, progress=False)
    row = summary.row("tp-fallback")
    assert row.status == "FALLBACK"
    assert row.channels["fallback"] == 1
    assert row.channels["OK"] == 0
    assert row.iovs == 1  # it completed and staged its (fallback) payload
    assert not summary.ok
    assert summary.succeeded
    table = summary.table()
    assert "tp-fallback  post-tracking  FALLBACK" in table
    assert "tp-fallback: FALLBACK: no channel of its payloads is OK" in table
    assert summary.state == "TESTING"
    assert any(
        a.startswith(
            "--auto-validate: staging tag prompt_e1_r1-4 not validated: tp-fallback is FALLBACK"
        )
        for a in summary.actions
    )


def test_auto_validate_then_running_update_and_snapshot(bucket: Path, db: ConditionsDB) -> None:
    prev = prompt_calibrations.previous_tag(db)
    db.create_tag("running")
    db.set_state("running", "RUNNING")
    options = dict(
        db=db,
        bucket=1,
        min_lumi_fb=0.003,
        input_tags=[prev],
        calibrations=["tp-base", "tp-dep"],
        update_running="running",
        progress=False,
    )
    first = run_prompt(bucket, **options)  # type: ignore[arg-type]
    assert first.staging_tag == "prompt_bucket1"
    assert first.runs == [1, 2, 3]
    assert first.ok
    assert first.state == "TESTING"
    assert (
        "running update of running not done: staging tag prompt_bucket1 is TESTING, not "
        "VALIDATED. Approve it (b2calib gt state prompt_bucket1 VALIDATED), then run the same "
        "command again" in "\n".join(first.actions)
    )
    assert db.iovs("running") == []
    # --auto-validate: every calibration OK, every verdict GOOD
    second = run_prompt(bucket, auto_validate=True, **options)  # type: ignore[arg-type]
    assert second.state == "VALIDATED"
    change = [h for h in db.history("prompt_bucket1") if h.action == "state"][-1]
    assert (change.details["old"], change.details["new"]) == ("TESTING", "VALIDATED")
    assert change.details["reason"].startswith("auto-validated by the prompt loop")
    assert [(e.name, str(e.iov)) for e in db.iovs("running")] == [
        ("TPBase", "1,1,-1,-1"),
        ("TPDep", "1,1,-1,-1"),
    ]
    snap = db.tag("running_bucket1")
    assert snap.state == "PUBLISHED"
    assert [(e.name, str(e.iov)) for e in db.iovs("running_bucket1")] == [
        ("TPBase", "1,1,1,3"),
        ("TPDep", "1,1,1,3"),
    ]
    assert {e.payload.revision for e in db.iovs("running_bucket1")} == {2}
    # a third run does not update twice
    updates = [h for h in db.history("running") if h.action == "running_update"]
    third = run_prompt(bucket, auto_validate=True, **options)  # type: ignore[arg-type]
    assert [h for h in db.history("running") if h.action == "running_update"] == updates
    assert any("was done before" in a for a in third.actions)
    assert "snapshot running_bucket1 of running exists already" in third.actions
    # the next bucket starts from this one's staging tag, and goes on in the running tag
    options["bucket"] = 2
    nxt = run_prompt(bucket, auto_validate=True, **options)  # type: ignore[arg-type]
    assert nxt.input_tags == ["prompt_bucket1", "prev"]
    assert nxt.runs == [4]
    assert nxt.state == "VALIDATED"
    assert [(e.name, e.payload.revision, str(e.iov)) for e in db.iovs("running")] == [
        ("TPBase", 2, "1,1,1,3"),
        ("TPBase", 3, "1,4,-1,-1"),
        ("TPDep", 2, "1,1,1,3"),
        ("TPDep", 3, "1,4,-1,-1"),
    ]
    assert db.tag("running_bucket2").state == "PUBLISHED"
    # the loop never reopens a VALIDATED staging tag
    options["calibrations"] = ["tp-base", "tp-dep", "tp-indep"]
    with pytest.raises(ConfigError, match="prompt_bucket2 is VALIDATED and tp-indep would ch"):
        run_prompt(bucket, **options)  # type: ignore[arg-type]


def test_command_line_exit_status_and_json(bucket: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    out_json = tmp_path / "summary.json"
    args = ["--data", str(bucket), "--exp", "1", "--runs", "1-4", "--db", url, "--workers", "1"]
    code, out = _cli(*args, "--only", "tp-fail,tp-fail-dep,tp-indep", "--json", str(out_json))
    assert code == 1, out
    assert "tp-fail-dep: SKIPPED: dependency tp-fail FAILED" in out
    data = json.loads(out_json.read_text())
    assert [(r["calibration"], r["status"]) for r in data["rows"]] == [
        ("tp-fail", "FAILED"),
        ("tp-indep", "OK"),
        ("tp-fail-dep", "SKIPPED"),
    ]
    code, out = _cli(*args, "--only", "tp-indep", "--staging", "other")
    assert code == 0, out
    assert "into other (TESTING)" in out
    code, out = _cli(*args[:2])
    assert code == 2
    assert "give --bucket N, or --exp E" in out
    result = CliRunner().invoke(cli, ["prompt", "--help"])
    assert "b2luigi" in result.output
    assert "--update-running" in result.output
    from b2calib.cli.prompt import prompt
    from b2calib.conditions import RUNNING_UPDATE_MODES

    mode = next(p for p in prompt.params if p.name == "mode")
    choices = mode.type.choices  # type: ignore[attr-defined]
    assert {c.replace("-", "_") for c in choices} == set(RUNNING_UPDATE_MODES)
    assert {m.replace("_", "-") for m in RUNNING_UPDATE_MODES} <= set(choices)


def test_detector_calibrations_on_the_sample_bucket(
    sample: Path, db: ConditionsDB, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two real calibrations (dE/dx run gain, then the cosine correction that depends on it) on
    the committed sample's first bucket, with the progress lines."""
    db.import_local(sample / "truth", "sim_truth")
    summary = run_prompt(
        sample,
        db=db,
        bucket=1,
        input_tags=["sim_truth"],
        calibrations=["cdc-dedx-cosine", "cdc-dedx-run-gain"],
        workers=1,  # tasks in this process: its output is captured
    )
    assert summary.staging_tag == "prompt_bucket1"
    assert summary.runs == list(range(1, 12))
    assert [(r.calibration, r.status) for r in summary.rows] == [
        ("cdc-dedx-run-gain", "OK"),
        ("cdc-dedx-cosine", "OK"),
    ]
    gain = summary.row("cdc-dedx-run-gain")
    assert gain.iovs == gain.payloads == len(db.iovs("prompt_bucket1", "CDCDedxRunGain")) > 1
    assert gain.verdict in ("GOOD", "WARNING", "ERROR")
    lines = capsys.readouterr().out.splitlines()
    events = [line.split(None, 2)[1:] for line in lines if line[:2].isdigit()]
    mine = [text for name, text in events if name == "cdc-dedx-run-gain"]
    assert mine[0] == "queued"
    assert mine[1] == "started"
    assert any(t.startswith("collecting ") and t.endswith(" items (pass 1)") for t in mine)
    assert mine[-4:-2] == ["job OK", "validating"]
    assert mine[-2].startswith(f"validation {gain.verdict}")
    assert mine[-1] == "done: OK"
    assert [name for name, text in events if text == "done: OK"] == [
        "cdc-dedx-run-gain",
        "cdc-dedx-cosine",
    ]


def test_the_loop_as_the_application_role(bucket: Path, roles: Roles) -> None:  # noqa: F811
    """On a shared PostgreSQL server the loop runs as the application role, which may finish an
    invocation and add task outcomes but not rewrite them."""
    import psycopg

    set_up(roles)
    db = ConditionsDB(roles.app_url, author="app")
    try:
        prev = prompt_calibrations.previous_tag(db)
        summary = run_prompt(
            bucket,
            db=db,
            exp=1,
            input_tags=[prev],
            calibrations=["tp-base", "tp-dep", "tp-fail"],
            progress=False,
        )
        assert [(r.calibration, r.status) for r in summary.rows] == [
            ("tp-base", "OK"),
            ("tp-fail", "FAILED"),
            ("tp-dep", "OK"),
        ]
        assert PromptStore(db).run(summary.prompt_run).finished is not None
    finally:
        db.close()
    with roles.raw(roles.app) as conn:
        for sql in (
            "UPDATE prompt_tasks SET outcome = 'OK'",
            "DELETE FROM prompt_tasks",
            "UPDATE prompt_runs SET options = '{}'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
