"""The prompt calibration loop (b2calib.prompt, ``b2calib prompt``) on small generated buckets:
its result, failures and skips, resumption after SIGKILL, the end of the loop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from b2calib.calibration import declaration
from b2calib.calibration.jobs import JobStore
from b2calib.cli import cli
from b2calib.conditions import ConditionsDB
from b2calib.exceptions import ConfigError
from b2calib.prompt import PromptStore, run_prompt
from tests import prompt_calibrations

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


def staged(db: ConditionsDB, tag: str) -> list[tuple[str, int, str, str]]:
    """The content of a tag: payload name, revision, IoV, checksum."""
    return [(e.name, e.payload.revision, str(e.iov), e.payload.checksum) for e in db.iovs(tag)]


def test_loop_stages_every_calibration_in_dependency_order(bucket: Path, db: ConditionsDB) -> None:
    summary = run_prompt(
        bucket,
        db=db,
        exp=1,
        runs=range(1, 5),
        calibrations=["tp-dep", "tp-base", "tp-indep"],
        workers=2,
        progress=False,
    )
    assert summary.staging_tag == "prompt_e1_r1-4"
    assert [r.calibration for r in summary.rows] == ["tp-base", "tp-indep", "tp-dep"]
    assert [r.status for r in summary.rows] == ["OK", "OK", "OK"]
    assert summary.ok
    assert all(r.iovs == 1 and r.payloads == 1 for r in summary.rows)
    content = staged(db, "prompt_e1_r1-4")
    assert [(name, rev, iov) for name, rev, iov, _ in content] == [
        ("TPBase", 1, "1,1,1,4"),
        ("TPDep", 1, "1,1,1,4"),
        ("TPIndep", 1, "1,1,1,4"),
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


def _inputs(db: ConditionsDB, key: str) -> str:
    import sqlalchemy as sa

    from b2calib.calibration.jobs import calibration_jobs

    with db.read() as conn:
        return str(
            conn.execute(
                sa.select(calibration_jobs.c.inputs).where(calibration_jobs.c.key == key)
            ).scalar_one()
        )


def test_failure_skips_dependents_and_independent_ones_run(bucket: Path, db: ConditionsDB) -> None:
    summary = run_prompt(
        bucket,
        db=db,
        exp=1,
        calibrations=["tp-fail", "tp-fail-dep", "tp-indep"],
        workers=1,
        progress=False,
    )
    status = {r.calibration: (r.status, r.reason) for r in summary.rows}
    assert status["tp-fail"][0] == "FAILED"
    assert "residual fit did not converge" in status["tp-fail"][1]
    assert status["tp-fail-dep"] == (
        "SKIPPED",
        f"dependency tp-fail FAILED: {status['tp-fail'][1]}",
    )
    assert status["tp-indep"] == ("OK", "")
    assert not summary.ok
    assert [e.name for e in db.iovs(summary.staging_tag)] == ["TPIndep"]
    assert db.tag(summary.staging_tag).state == "OPEN"
    table = summary.table()
    assert f"tp-fail-dep: SKIPPED: dependency tp-fail FAILED: {status['tp-fail'][1]}" in table
    assert "stays OPEN: 2 calibrations did not succeed (tp-fail, tp-fail-dep)" in table


def test_unknown_bucket_lists_the_buckets(bucket: Path, db: ConditionsDB) -> None:
    with pytest.raises(ConfigError, match=r"no bucket 7 .*buckets: 1: exp 1 runs 1-3; 2: exp 1"):
        run_prompt(bucket, db=db, bucket=7, min_lumi_fb=0.003, progress=False)
    code, out = _cli("--data", str(bucket), "--bucket", "3", "--db", db.url)
    assert code == 1
    assert "no bucket 3" in out
    assert "buckets: 1: exp 1 runs 1-3; 2: exp 1 run 4 (open)" in out
    assert PromptStore(db).runs() == []


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["prompt", "--min-lumi", "0.003", *args])
    return result.exit_code, result.output
