"""The quality-assurance command line (qa, signoff, grl, user) on the committed sample bucket."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from b2calib.cli import cli
from b2calib.geometry import DETECTORS
from b2calib.qa.store import QADatabase
from b2calib.qa.store.status import STATUS_COLUMNS
from b2calib.runs import RunRegistry
from tests.test_cli_conditions import record, table


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A fresh database; no user logged in."""
    return {"B2CALIB_DB": str(tmp_path / "conditions.sqlite")}


def run(env: dict[str, str], *args: object, code: int = 0, input: str | None = None) -> str:
    result = CliRunner(env=env).invoke(cli, [str(a) for a in args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, result.output
    return result.output


def error(env: dict[str, str], *args: object, input: str | None = None) -> str:
    """The error of a failing command (exit status 1): one line, or for an expression the line
    and the expression with a caret under the fault."""
    out = run(env, *args, code=1, input=input)
    start = out.index("Error: ")  # after a password prompt, if any
    return out[start:].removeprefix("Error: ").strip()


def as_user(env: dict[str, str], name: str, password: str) -> dict[str, str]:
    return {**env, "B2CALIB_USER": name, "B2CALIB_PASSWORD": password}


@pytest.fixture
def collected(env: dict[str, str], sample: Path) -> dict[str, str]:
    """The sample bucket collected into the database, references set to run 2, users added."""
    out = run(env, "qa", "collect", sample, "--executor", "inprocess", "--no-cache")
    assert [r[1] for r in table(out)] == [str(r) for r in range(1, 13)]
    # the sample has ~150 events a run: references judged from 20 entries
    run(env, "qa", "reference", "set", 12, 2, "--all", "--min-entries", 20)
    run(env, "user", "add", "mona", "--role", "manager", input="mona-pw\n")
    run(env, "user", "add", "carl", "--role", "expert", "--detectors", "cdc,ecl", input="c-pw\n")
    run(env, "user", "add", "vera", "--role", "viewer", input="v-pw\n")
    return env


def test_collect_evaluate_status_trend(collected: dict[str, str]) -> None:
    env = collected
    refs = table(run(env, "qa", "reference", "list"))
    assert refs
    assert all(r[1:5] == ["physics", "4S", "12", "2"] for r in refs)
    out = run(env, "qa", "evaluate", "--exp", 12)
    rows = table(out)
    assert [r[1] for r in rows] == [str(r) for r in range(1, 13)]
    header = out.splitlines()[1].split()
    assert header == ["exp", "run", "type", "state", *STATUS_COLUMNS]
    assert header[-2:] == ["BEAM", "TRACKING"]  # the systems: columns of their own
    assert {r[-2] for r in rows if r[2] == "physics"} <= {"GOOD", "WARNING", "TOO_FEW"}
    run2 = dict(zip(header, rows[1], strict=True))
    assert run2["CDC"] == "GOOD/NOTSET"  # compared with itself
    assert all(r[3] == "OPEN" for r in rows)
    qdb = QADatabase(env["B2CALIB_DB"])
    name = qdb.runs.variable_names()[0]
    trend = table(run(env, "qa", "trend", name, "--exp", 12))
    assert len(trend) == len(qdb.runs.trend(name, exp=12)) > 5
    assert [r[1] for r in table(run(env, "qa", "status", "--runs", "3-4"))] == ["3", "4"]
    one = run(env, "qa", "reference", "set", 12, 3, "CDC/hits_per_track", "--method", "ks")
    assert one.strip() == (
        "CDC/hits_per_track: reference run (12, 3) of the physics 4S runs of experiment 12, ks UU"
    )
    assert "not DETECTOR/NAME" in run(env, "qa", "reference", "set", 12, 3, "CDC", code=2)
    assert "or give --all" in run(env, "qa", "reference", "set", 12, 3, code=2)
    assert "--auto takes --exp E alone" in run(
        env, "qa", "reference", "set", 12, 3, "--auto", code=2
    )
    # one reference per class of runs of the experiment, chosen
    auto = run(env, "qa", "reference", "set", "--exp", 12, "--auto", "--min-entries", 20)
    chosen = qdb.histograms.choose_references(12, min_entries=20)
    four_s = chosen[("physics", "4S", 0)]
    assert qdb.runs.get(12, four_s).beam_energy == "4S"
    for (run_type, beam, _), ref_run in chosen.items():
        assert f"reference run (12, {ref_run}) of the {run_type} {beam} runs" in auto
    # the evidence behind a status, worst first
    assert "the reference is now run 12/" in run(env, "qa", "evidence", 12, 5)  # not evaluated
    run(env, "qa", "evaluate", "--exp", 12)
    evidence = run(env, "qa", "evidence", 12, 5)
    assert evidence.splitlines()[0].split() == ["detector", "status", "kind", "evidence"]
    assert f"vs reference run 12/{four_s} (physics 4S runs)" in evidence
    assert [e.message for e in qdb.status.evidence(12, 5, "CDC")] == [
        line.split(None, 3)[3] for line in run(env, "qa", "evidence", 12, 5, "cdc").splitlines()[2:]
    ]
    qdb.close()


def test_users_and_authentication(collected: dict[str, str]) -> None:
    env = collected
    assert table(run(env, "user", "list")) == [
        ["carl", "expert", "CDC,ECL"],
        ["mona", "manager", "-"],
        ["vera", "viewer", "-"],
    ]
    assert "exists already" in error(env, "user", "add", "mona", "--role", "viewer", input="x\n")
    assert "needs the detectors" in error(env, "user", "add", "x", "--role", "expert", input="y\n")
    assert "no password" in error(env, "user", "add", "x", "--role", "viewer", input="\n")
    bad = as_user(env, "carl", "wrong")
    assert error(bad, "signoff", "flag", 12, 3, "CDC", "GOOD", "--comment", "ok") == (
        "user 'carl': wrong name or password"
    )
    run(env, "user", "password", "carl", input="new-pw\n")
    assert "wrong name or password" in error(
        as_user(env, "carl", "c-pw"), "signoff", "flag", 12, 3, "CDC", "GOOD", "--comment", "x"
    )
    run(as_user(env, "carl", "new-pw"), "signoff", "flag", 12, 3, "CDC", "GOOD", "--comment", "x")
    run(env, "user", "remove", "vera")
    assert [r[0] for r in table(run(env, "user", "list"))] == ["carl", "mona"]


def test_sign_off_from_the_command_line(collected: dict[str, str]) -> None:
    env = collected
    carl, mona, vera = (
        as_user(env, "carl", "c-pw"),
        as_user(env, "mona", "mona-pw"),
        as_user(env, "vera", "v-pw"),
    )
    out = run(carl, "signoff", "flag", 12, 3, "cdc".upper(), "bad", "--comment", "HV trip")
    assert out.strip() == "run (12, 3) CDC: BAD by carl"
    assert "may not set the TOP flag" in error(
        carl, "signoff", "flag", 12, 3, "TOP", "GOOD", "--comment", "x"
    )
    assert "vera (viewer) may not" in error(
        vera, "signoff", "flag", 12, 3, "CDC", "GOOD", "--comment", "x"
    )
    # replacing carl's BAD needs --force: without it nothing is written and the override named
    assert error(mona, "signoff", "flag", 12, 3, "CDC", "GOOD", "--comment", "recovered") == (
        "1 change needs an explicit confirmation (give --force to confirm them, which the "
        "history records); nothing was written:\n  run (12, 3) CDC: overrides BAD set by carl"
    )
    assert len(table(run(env, "signoff", "history", 12, 3))) == 1
    out = run(mona, "signoff", "flag", 12, 3, "CDC", "GOOD", "--comment", "recovered", "--force")
    assert out.splitlines() == [
        "run (12, 3) CDC: GOOD by mona",
        "  CDC confirmed (--force): overrides BAD set by carl",
    ]
    history = table(run(env, "signoff", "history", 12, 3))
    assert [(r[3], r[4], r[5], " ".join(r[6:])) for r in history] == [
        ("BAD", "carl", "HV", "trip -"),
        ("GOOD", "mona", "recovered", "overrides BAD set by carl"),
    ]
    run(carl, "signoff", "state", 12, 3, "signoff", "--comment", "flags set")
    assert "may not move run (12, 3) from SIGNOFF to COMPLETED" in error(
        carl, "signoff", "state", 12, 3, "COMPLETED"
    )
    # completing with the detectors nobody certified needs --force too
    assert error(mona, "signoff", "state", 12, 3, "COMPLETED").endswith(
        "nothing was written:\n  run (12, 3): completes with PXD, SVD, TOP, ARICH, ECL, KLM NOTSET"
    )
    assert run(env, "signoff", "state", 12, 3).splitlines()[0] == "run (12, 3): SIGNOFF"
    assert "say why" in error(mona, "signoff", "state", 12, 3, "COMPLETED", "--force")
    out = run(mona, "signoff", "state", 12, 3, "COMPLETED", "--force", "--comment", "shift")
    assert out.splitlines()[0] == "run (12, 3): COMPLETED"
    assert " ".join(table(out)[-1]).endswith(
        "COMPLETED mona shift completes with PXD, SVD, TOP, ARICH, ECL, KLM NOTSET"
    )
    assert "COMPLETED: a manager must reopen it" in error(
        mona, "signoff", "flag", 12, 3, "CDC", "BAD", "--comment", "late"
    )
    assert run(env, "signoff", "state", 12, 3).splitlines()[0] == "run (12, 3): COMPLETED"


def test_good_run_lists_from_the_command_line(collected: dict[str, str], tmp_path: Path) -> None:
    env = collected
    mona = as_user(env, "mona", "mona-pw")
    qdb = QADatabase(env["B2CALIB_DB"])
    physics = [r for r in qdb.runs.select(exp=12) if r.run_type == "physics"]
    for r in physics:
        for det in r.detectors:
            flag = "BAD" if (r.run, det) == (5, "TOP") else "GOOD"
            # the shift looked at the automatic ERRORs of the sample and confirms GOOD
            run(mona, "signoff", "flag", 12, r.run, det, flag, "--comment", "shift", "--force")
    assert "managers only" in error(as_user(env, "carl", "c-pw"), "grl", "make", "good", "all_good")
    out = run(mona, "grl", "make", "good", "all == GOOD", "--description", "first")
    assert out.startswith("good v1: ")
    run(mona, "grl", "make", "good", "all == GOOD")
    run(mona, "grl", "make", "recoverable", "all except (TOP) == GOOD")
    assert [r[:2] for r in table(run(env, "grl", "list"))] == [["good", "2"], ["recoverable", "1"]]
    shown, warned = run(env, "grl", "show", "good", "--version", 1).split("\nwarning: ")
    info = record(shown)
    assert info["version"] == "1"
    assert info["description"] == "first"
    expected = sorted(r.run for r in physics if r.run != 5)
    # the list names every detector of its runs set GOOD over an automatic ERROR, with why
    errors = {
        (run_, det)
        for (_, run_), per in qdb.status.grid(exp=12).items()
        for det, status in per.items()
        if status == "ERROR" and run_ in expected and det in DETECTORS
    }
    assert errors  # the sample has some
    named = {
        (int(m[1]), det)
        for m in re.finditer(r"run \(12, (\d+)\): (.*)", warned)
        for det in re.findall(r"(\w+) GOOD over automatic status ERROR, confirmed by mona", m[2])
    }
    assert named == errors
    assert warned.count("'shift'") == len(errors)
    assert float(info["lumi"].split()[0]) == pytest.approx(
        sum(r.lumi_pb for r in physics if r.run != 5), rel=1e-5
    )
    run(env, "grl", "export", "good", "--format", "json", "-o", tmp_path / "good.json")
    doc = json.loads((tmp_path / "good.json").read_text())
    assert doc["experiments"]["12"]["runs"] == expected
    # the export's warnings go to standard error: standard output is the list alone
    exported = CliRunner(env=env).invoke(cli, ["grl", "export", "good", "--format", "cms"])
    assert "GOOD over automatic status ERROR" in exported.stderr
    cms = json.loads(exported.stdout)
    assert expected == [1, 2, 3, 4, 7, 8, 9, 10, 11, 12]  # run 6 is a cosmic run
    assert cms == {"12": [[1, 4], [7, 12]]}
    exported = CliRunner(env=env).invoke(cli, ["grl", "export", "good", "--format", "csv"])
    rows = list(csv.reader(io.StringIO(exported.stdout)))
    assert [int(r[1]) for r in rows if r and r[0] == "12"] == expected
    minus = json.loads(
        CliRunner(env=env)
        .invoke(cli, ["grl", "combine", "recoverable", "minus", "good@1", "--format", "cms"])
        .stdout
    )
    assert minus == {"12": [[5, 5]]}
    assert "no good-run list 'nope'" in error(env, "grl", "export", "nope")
    assert "XYZ" in error(mona, "grl", "make", "x", "XYZ == GOOD")
    assert [r[0] for r in table(run(env, "grl", "list"))] == ["good", "recoverable"]
    qdb.close()


def test_collect_register_only_lets_shifters_certify_without_reading_events(
    env: dict[str, str], sample: Path
) -> None:
    """`qa collect --register-only` registers the runs (the selected ones only) and stores no
    monitoring; the shifters can then certify them, e.g. before the prompt calibration, whose
    data-quality filters read the certified flags."""
    out = run(env, "qa", "collect", sample, "--register-only", "--runs", "1-5")
    assert out.strip() == f"registered 5 runs of {sample} (no event read)"
    qdb = QADatabase(env["B2CALIB_DB"])
    try:
        assert [r.run for r in qdb.runs.select()] == [1, 2, 3, 4, 5]
        assert not qdb.histograms.stored_runs()
    finally:
        qdb.close()
    run(env, "user", "add", "mona", "--role", "manager", input="mona-pw\n")
    mona = as_user(env, "mona", "mona-pw")
    out = run(mona, "signoff", "flag", 12, "1-5", "all", "GOOD", "--comment", "demo")
    lines = out.splitlines()
    assert len(lines) == 5
    assert all("KLM" in line and line.endswith(": GOOD by mona") for line in lines)
    assert "(12, 7)" in error(mona, "signoff", "flag", 12, 7, "KLM", "GOOD", "--comment", "x")
    # what klm-strip-efficiency's filter selects: the certified runs, and only those
    qdb = QADatabase(env["B2CALIB_DB"])
    try:
        registry = qdb.runs.with_certified_flags(RunRegistry.load(sample / "runs.json"))
    finally:
        qdb.close()
    assert [r.run for r in registry.select(dq="Good Or Recoverable")] == [1, 2, 3, 4, 5]


@pytest.fixture
def registered(env: dict[str, str], sample: Path) -> dict[str, str]:
    """The sample's runs registered (no event read), CDC's automatic status ERROR in run 2
    alone (its hits per event far below the other physics runs'), mona and carl added."""
    from b2calib.qa.monitoring import MonitoringValue, RunQA

    run(env, "qa", "collect", sample, "--register-only")
    qdb = QADatabase(env["B2CALIB_DB"])
    try:
        for r in (1, 2, 3, 4, 5, 7, 8):
            value = 20.0 if r == 2 else 50.0 + 0.1 * r
            qdb.histograms.store_run(
                RunQA(
                    12, r, [MonitoringValue("hadron.cdc_hits_per_event", "CDC", value, 0.5, "")], {}
                )
            )
        assert qdb.status.get(12, 2)["CDC"] == "ERROR"
    finally:
        qdb.close()
    run(env, "user", "add", "mona", "--role", "manager", input="mona-pw\n")
    run(env, "user", "add", "carl", "--role", "expert", "--detectors", "cdc,ecl", input="c-pw\n")
    return env


def test_bulk_sign_off_needs_force_for_what_needs_confirming(registered: dict[str, str]) -> None:
    """`signoff flag 12 1-5 all GOOD` over carl's BAD and an automatic ERROR: refused with both
    named and nothing written; with --force written, each confirmation in the history."""
    env = registered
    mona, carl = as_user(env, "mona", "mona-pw"), as_user(env, "carl", "c-pw")
    run(carl, "signoff", "flag", 12, 3, "ECL", "BAD", "--comment", "hot crystals")
    assert error(mona, "signoff", "flag", 12, "1-5", "all", "GOOD", "--comment", "shift") == (
        "2 changes need an explicit confirmation (give --force to confirm them, which the "
        "history records); nothing was written:\n"
        "  run (12, 2) CDC: GOOD over automatic status ERROR\n"
        "  run (12, 3) ECL: overrides BAD set by carl"
    )
    for r in (1, 2, 4, 5):  # not even the runs that needed no confirmation
        assert run(env, "signoff", "history", 12, r).strip() == f"run (12, {r}): no flags set"
    out = run(mona, "signoff", "flag", 12, "1-5", "all", "GOOD", "--comment", "shift", "--force")
    assert out.splitlines() == [
        "run (12, 1) PXD,SVD,CDC,TOP,ARICH,ECL,KLM: GOOD by mona",
        "run (12, 2) PXD,SVD,CDC,TOP,ARICH,ECL,KLM: GOOD by mona",
        "  CDC confirmed (--force): GOOD over automatic status ERROR",
        "run (12, 3) PXD,SVD,CDC,TOP,ARICH,ECL,KLM: GOOD by mona",
        "  ECL confirmed (--force): overrides BAD set by carl",
        "run (12, 4) PXD,SVD,CDC,TOP,ARICH,ECL,KLM: GOOD by mona",
        "run (12, 5) PXD,SVD,CDC,TOP,ARICH,ECL,KLM: GOOD by mona",
    ]
    history = table(run(env, "signoff", "history", 12, 2, "CDC"))
    assert [" ".join(row[2:]) for row in history] == [
        "CDC GOOD mona shift GOOD over automatic status ERROR"
    ]
    history = table(run(env, "signoff", "history", 12, 1))
    assert all(row[-1] == "-" for row in history)  # nothing confirmed there
    # the same write again: her own flags need nothing, but GOOD over the automatic ERROR is
    # confirmed each time it is written
    assert "run (12, 2) CDC: GOOD over automatic status ERROR" in error(
        mona, "signoff", "flag", 12, "1-5", "all", "GOOD", "--comment", "again"
    )


def test_good_run_list_versions_and_diff_from_the_command_line(
    registered: dict[str, str],
) -> None:
    env = registered
    mona = as_user(env, "mona", "mona-pw")
    run(mona, "signoff", "flag", 12, "1-4", "CDC", "GOOD", "--comment", "shift", "--force")
    out = run(mona, "grl", "make", "cdc", "CDC == GOOD", "--description", "first")
    assert out.splitlines()[0].startswith("cdc v1: 4 runs, 3198.84 pb^-1 recorded (run registry)")
    # run 2's CDC was set GOOD over its automatic ERROR (--force): the list names it, why
    warned = [
        "warning: 1 run selected with uncertified (NOTSET) detectors or GOOD over an automatic "
        "ERROR:",
        "  run (12, 2): CDC GOOD over automatic status ERROR, confirmed by mona at ",
    ]
    lines = out.splitlines()[1:]
    assert [line[: len(w)] for line, w in zip(lines, warned, strict=True)] == warned
    assert lines[1].endswith(" UTC: 'shift'")
    run(mona, "signoff", "flag", 12, "2", "CDC", "BAD", "--comment", "HV trip")
    run(mona, "signoff", "flag", 12, "7-8", "CDC", "GOOD", "--comment", "shift")
    run(mona, "grl", "make", "cdc", "CDC == GOOD")
    versions = table(run(env, "grl", "versions", "cdc"))
    # version, created (date and time), author, runs, recorded lumi, warnings, description...
    assert [(row[0], row[3], row[4], row[6], row[7]) for row in versions] == [
        ("1", "mona", "4", "1", "first"),
        ("2", "mona", "5", "0", "-"),
    ]
    assert [float(row[5]) for row in versions] == pytest.approx([3198.8365, 3587.6338], abs=1e-3)
    diff = record(run(env, "grl", "diff", "cdc", 1, 2))
    assert diff["versions"] == "1 -> 2"
    assert diff["expression"] == "CDC == GOOD"
    assert diff["added"] == "2 runs, 871.589 pb^-1: exp 12: 7-8"
    assert diff["removed"] == "1 runs, 482.791 pb^-1: exp 12: 2"
    assert diff["lumi"] == "3198.84 -> 3587.63 pb^-1 (+388.797), recorded (run registry)"
    shown = record(run(env, "grl", "show", "cdc", "--version", 1).split("\nwarning")[0])
    assert (shown["version"], shown["exp 12"]) == ("1", "1-4")
    shown_lines = run(env, "grl", "show", "cdc", "--version", 1).splitlines()
    assert shown_lines[-2:] == out.splitlines()[1:]  # the warnings of version 1, kept with it
    assert shown["lumi"] == "3198.84 pb^-1 recorded (run registry)"
    # a list over whole runs selects detectors nobody certified: it says which
    out = run(mona, "grl", "make", "all", "run_type == physics and run <= 2")
    assert out.splitlines()[1:] == [
        "warning: 2 runs selected with uncertified (NOTSET) detectors or GOOD over an "
        "automatic ERROR:",
        "  run (12, 1): PXD, SVD, TOP, ARICH, ECL, KLM NOTSET (uncertified)",
        "  run (12, 2): PXD, SVD, TOP, ARICH, ECL, KLM NOTSET (uncertified)",
    ]
    assert "warning: 2 runs selected" in run(env, "grl", "show", "all")
    csv_text = CliRunner(env=env).invoke(cli, ["grl", "export", "all", "--format", "csv"]).stdout
    assert csv_text.splitlines()[0] == "exp,run,recorded_lumi_pb"
    assert "no version 3 of good-run list 'cdc' (its versions: 1, 2)" in error(
        env, "grl", "diff", "cdc", 1, 3
    )


def test_qa_periods_from_the_command_line(registered: dict[str, str]) -> None:
    """`qa period add --exp 12 --from-run 7`: CDC's boards replaced at run 7 (its hits per event
    10 higher, its residual shifted) made every run ERROR, those before it off the band and
    those after it against reference run 1, as in exp 16 of the demo; with the period they
    get a reference and a band of their own, and the period shows in `reference list`."""
    import hist
    import numpy as np

    from b2calib.qa.monitoring import MonitoringValue, RunQA

    env = registered
    qdb = QADatabase(env["B2CALIB_DB"])
    try:
        for r in [r for r in range(1, 13) if r != 6]:  # 6: cosmic
            h = hist.Hist.new.Reg(20, -3, 3, name="x").Int64()
            h.fill(np.random.default_rng(1).normal(0.5 if r >= 7 else 0.0, 1.0, 5000))
            value = (60.0 if r >= 7 else 50.0) + 0.1 * r
            hits = MonitoringValue("hadron.cdc_hits_per_event", "CDC", value, 0.5, "")
            qdb.histograms.store_run(RunQA(12, r, [hits], {("CDC", "residual"): h}))
    finally:
        qdb.close()

    def cdc(out: str) -> dict[int, str]:
        rows = table(out)
        header = out.splitlines()[1].split()
        return {int(r[1]): r[header.index("CDC")].split("/")[0] for r in rows if r[2] == "physics"}

    run(env, "qa", "reference", "set", "--exp", 12, "--auto")
    before = cdc(run(env, "qa", "evaluate", "--exp", 12))
    # runs 1-5 off the band (the median is after the change), 7-12 off reference run 1
    assert set(before.values()) == {"ERROR"}
    assert "no registered run" in error(
        env, "qa", "period", "add", "--exp", 99, "--from-run", 7, "--reason", "x"
    )
    out = run(env, "qa", "period", "add", "--exp", 12, "--from-run", 7, "--reason", "CDC FEBs")
    assert out.splitlines()[0] == (
        "experiment 12: QA period from run 7 on (runs 7-, 6 registered runs): CDC FEBs"
    )
    assert "`b2calib qa reference set --exp 12 --auto`" in out
    assert "then run `b2calib qa evaluate --exp 12`" in out
    assert error(env, "qa", "period", "add", "--exp", 12, "--from-run", 7, "--reason", "y") == (
        "QA period from run 7 of experiment 12 exists already (CDC FEBs)"
    )
    periods = table(run(env, "qa", "period", "list", "--exp", 12))
    assert [r[:3] for r in periods] == [["12", "0", "6"], ["12", "7", "-"]]
    assert periods[1][3:5] == ["CDC", "FEBs"]
    auto = run(env, "qa", "reference", "set", "--exp", 12, "--auto")
    assert auto.splitlines() == [
        "CDC/residual: reference run (12, 1) of the physics 4S runs before 7 of experiment 12, "
        "chi2 UU",
        "CDC/residual: reference run (12, 7) of the physics 4S runs 7- of experiment 12, chi2 UU",
    ]
    refs = table(run(env, "qa", "reference", "list"))
    assert [r[1:6] for r in refs] == [
        ["physics", "4S", "12", "1", "-6"],
        ["physics", "4S", "12", "7", "7-"],
    ]
    after = cdc(run(env, "qa", "evaluate", "--exp", 12))
    assert set(after.values()) == {"GOOD"}
    evidence = run(env, "qa", "evidence", 12, 8, "CDC")
    assert "vs reference run 12/7 (physics 4S runs 7-)" in evidence
    assert "(physics 4S runs 7- of exp 12): within" in evidence
    out = run(env, "qa", "period", "remove", "--exp", 12, "--from-run", 7)
    assert out.strip() == (
        "experiment 12: the QA period from run 7 is removed, with its 1 reference; run "
        "`b2calib qa evaluate --exp 12`"
    )
    assert [r[1] for r in table(run(env, "qa", "period", "list", "--exp", 12))] == ["0"]
