"""The conditions command line (gt, iov, lookup, payload, db) against a scratch SQLite database."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from b2calib.cli import cli
from b2calib.conditions import ConditionsDB, Payload, PayloadInfo
from b2calib.conditions.payload import file_md5


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of every command: a fresh database and a fixed author."""
    return {"B2CALIB_DB": str(tmp_path / "conditions.sqlite"), "B2CALIB_USER": "tester"}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Payload files: two ECLGain contents and one CDCT0."""
    out = {name: tmp_path / f"{name}.root" for name in ("gain1", "gain2", "t0")}
    Payload(
        "ECLGain",
        keys={"cell": np.arange(4)},
        values={"gain": np.array([1.0, 1.1, 0.9, 1.2], dtype=np.float32)},
        errors={"gain": np.full(4, 0.01)},
        status=np.array([0, 0, 3, 1]),
        metadata={
            "units": {"gain": "ADC/MeV"},
            "description": "crystal gains",
            "provenance": {"job": 3},
        },
    ).write(out["gain1"])
    Payload(
        "ECLGain",
        keys={"cell": np.arange(4)},
        values={"gain": np.array([1.01, 1.1, 0.9, 1.2], dtype=np.float32)},
    ).write(out["gain2"])
    Payload("CDCT0", values={"t0": np.array([3.5, 4.25])}).write(out["t0"])
    return out


def run(env: dict[str, str], *args: object, code: int = 0) -> str:
    """Run ``b2calib ARGS``, check the exit status, return stdout and stderr."""
    result = CliRunner(env=env).invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, result.output
    return result.output


def error(env: dict[str, str], *args: object) -> str:
    """The single error line of a failing command (exit status 1)."""
    lines = run(env, *args, code=1).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ")
    return lines[0].removeprefix("Error: ")


def table(out: str) -> list[list[str]]:
    """The rows of a table printed below a header and a dashed line, split on whitespace."""
    lines = out.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("--")) + 1
    return [line.split() for line in lines[start:]]


def record(text: str) -> dict[str, str]:
    """The ``key  value`` lines of a record (key and value separated by two or more spaces)."""
    return dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in text.splitlines())


def stored(env: dict[str, str], name: str, revision: int) -> PayloadInfo:
    """The database's record of a payload revision."""
    cdb = ConditionsDB(env["B2CALIB_DB"])
    try:
        return cdb.payload_info(name, revision)
    finally:
        cdb.close()


def checksum(env: dict[str, str], name: str, revision: int) -> str:
    return stored(env, name, revision).checksum


def schema_head() -> str:
    """The newest Alembic revision of the conditions schema."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from b2calib.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def setup_staging(env: dict[str, str], files: dict[str, Path]) -> None:
    """OPEN tag ``staging``: ECLGain rev 1 for all runs, CDCT0 rev 1 for exp 0 and runs 1.0-1.10;
    ECLGain rev 2 stored but in no tag."""
    run(env, "gt", "create", "staging", "--description", "ECL prompt")
    run(env, "payload", "upload", files["gain1"], "--gt", "staging", "--iov", "0,0,-1,-1")
    run(env, "payload", "upload", files["t0"], "--gt", "staging", "--iov", "0,0,0,-1")
    run(env, "payload", "upload", files["gain2"])
    run(env, "iov", "add", "staging", "CDCT0", "1", "1,0,1,10")


def test_create_upload_show_and_list(env: dict[str, str], files: dict[str, Path]) -> None:
    assert run(env, "gt", "list") == "no global tags\n"
    out = run(env, "gt", "create", "staging", "--description", "ECL prompt")
    assert out == "created DEV global tag staging (OPEN)\n"
    out = run(env, "payload", "upload", files["gain1"], "--gt", "staging", "--iov", "0,0,-1,-1")
    gain1 = checksum(env, "ECLGain", 1)
    size = stored(env, "ECLGain", 1).size
    assert gain1 == file_md5(files["gain1"])  # stored byte for byte
    assert size == files["gain1"].stat().st_size
    assert out.splitlines() == [
        f"uploaded ECLGain rev 1 (checksum {gain1}, {size} bytes)",
        "added ECLGain rev 1 [0,0,-1,-1] to staging",
    ]
    # the same content again is not stored twice
    out = run(env, "payload", "upload", files["gain1"])
    assert out == f"already stored as ECLGain rev 1 (checksum {gain1}, {size} bytes)\n"
    run(env, "payload", "upload", files["t0"], "--gt", "staging", "--iov", "0,0,0,-1")
    out = run(env, "payload", "upload", files["gain2"])
    assert out.startswith("uploaded ECLGain rev 2 ")
    out = run(env, "iov", "add", "staging", "CDCT0", "1", "1,0,1,10")
    assert out == "added CDCT0 rev 1 [1,0,1,10] to staging\n"

    out = run(env, "gt", "show", "staging")
    head = record(out.split("\n\n")[0])
    assert head["name"] == "staging"
    assert head["type"] == "DEV"
    assert head["state"] == "OPEN"
    assert head["description"] == "ECL prompt"
    assert head["created"].endswith(" UTC by tester")
    assert head["IoVs"] == "3"
    t0 = checksum(env, "CDCT0", 1)
    assert table(out) == [
        ["CDCT0", "1", "0,0,0,-1", t0],
        ["CDCT0", "1", "1,0,1,10", t0],
        ["ECLGain", "1", "0,0,-1,-1", gain1],
    ]

    rows = table(run(env, "gt", "list"))
    assert [r[:3] for r in rows] == [["staging", "DEV", "OPEN"]]
    assert rows[0][-2:] == ["ECL", "prompt"]
    run(env, "gt", "create", "other", "--type", "release")
    assert [r[0] for r in table(run(env, "gt", "list", "--regex", "^oth"))] == ["other"]
    assert [r[1] for r in table(run(env, "gt", "list", "--regex", "^oth"))] == ["RELEASE"]
    assert run(env, "gt", "list", "--state", "running") == "no global tags\n"

    rows = table(run(env, "payload", "list"))
    assert [r[:3] for r in rows] == [
        ["CDCT0", "1", t0],
        ["ECLGain", "1", gain1],
        ["ECLGain", "2", checksum(env, "ECLGain", 2)],
    ]
    assert all(r[-1] == "tester" for r in rows)
    assert [r[1] for r in table(run(env, "payload", "list", "ECLGain"))] == ["1", "2"]


def test_iov_listing_and_lookup(env: dict[str, str], files: dict[str, Path]) -> None:
    setup_staging(env, files)
    # `iov TAG` is short for `iov list TAG`
    short, full = run(env, "iov", "staging"), run(env, "iov", "list", "staging")
    assert short == full
    assert [r[:3] for r in table(short)] == [
        ["CDCT0", "1", "0,0,0,-1"],
        ["CDCT0", "1", "1,0,1,10"],
        ["ECLGain", "1", "0,0,-1,-1"],
    ]
    out = run(env, "iov", "staging", "--name", "CDCT0")
    assert [r[2] for r in table(out)] == ["0,0,0,-1", "1,0,1,10"]
    out = run(env, "iov", "--run", "1", "7", "staging")
    assert [r[:3] for r in table(out)] == [
        ["CDCT0", "1", "1,0,1,10"],
        ["ECLGain", "1", "0,0,-1,-1"],
    ]
    out = run(env, "iov", "staging", "--name", "CDCT0", "--run", "1", "11")
    assert out == "no IoVs in staging match\n"

    run(env, "gt", "create", "fix")
    run(env, "iov", "add", "fix", "ECLGain", "2", "1,5,1,8")
    out = run(env, "lookup", "1", "7", "--gt", "fix", "--gt", "staging")
    assert [r[:3] + r[4:] for r in table(out)] == [
        ["CDCT0", "1", "1,0,1,10", "staging"],
        ["ECLGain", "2", "1,5,1,8", "fix"],
    ]
    out = run(env, "lookup", "1", "9", "--gt", "fix", "--gt", "staging", "--name", "ECLGain")
    assert [r[:3] + r[4:] for r in table(out)] == [["ECLGain", "1", "0,0,-1,-1", "staging"]]
    assert run(env, "lookup", "2", "0", "--gt", "fix", "--name", "CDCT0") == (
        "no payload valid for run 2,0 in fix\n"
    )

    out = run(env, "iov", "remove", "staging", "CDCT0", "1,0,1,10")
    assert out == "removed CDCT0 [1,0,1,10] from staging\n"
    assert [r[2] for r in table(run(env, "iov", "staging", "--name", "CDCT0"))] == ["0,0,0,-1"]


def test_diff_merge_clone_modify(env: dict[str, str], files: dict[str, Path]) -> None:
    setup_staging(env, files)
    out = run(env, "gt", "clone", "staging", "next")
    assert out == "created next (OPEN) from staging: 3 IoVs\n"
    assert run(env, "gt", "diff", "staging", "next") == (
        "staging and next hold the same payload IoVs\n"
    )
    run(env, "iov", "remove", "next", "ECLGain", "0,0,-1,-1")
    run(env, "iov", "add", "next", "ECLGain", "2", "0,0,-1,-1")
    run(env, "iov", "remove", "next", "CDCT0", "1,0,1,10")
    run(env, "iov", "add", "next", "CDCT0", "1", "2,0,2,-1")
    run(env, "iov", "remove", "next", "CDCT0", "0,0,0,-1")
    run(env, "iov", "add", "next", "CDCT0", "1", "0,0,0,99")
    out = run(env, "gt", "diff", "staging", "next")  # exit status 0 although they differ
    assert out.splitlines() == [
        "~  CDCT0    rev 1       0,0,0,-1 -> 0,0,0,99",
        "-  CDCT0    rev 1       1,0,1,10",
        "+  CDCT0    rev 1       2,0,2,-1",
        "~  ECLGain  rev 1 -> 2  0,0,-1,-1",
        "staging -> next: 1 added, 1 removed, 2 changed",
    ]

    # merge: the first source wins, later ones fill the gaps
    out = run(env, "gt", "merge", "merged", "next", "staging")
    assert out.splitlines()[0] == "created merged (OPEN) from next, staging: 5 IoVs"
    assert [r[:3] for r in table(out)] == [
        ["CDCT0", "1", "0,0,0,99"],
        ["CDCT0", "1", "0,100,0,-1"],
        ["CDCT0", "1", "1,0,1,10"],
        ["CDCT0", "1", "2,0,2,-1"],
        ["ECLGain", "2", "0,0,-1,-1"],
    ]
    assert [r[:3] for r in table(run(env, "iov", "merged"))] == [
        ["CDCT0", "1", "0,0,0,99"],
        ["CDCT0", "1", "0,100,0,-1"],
        ["CDCT0", "1", "1,0,1,10"],
        ["CDCT0", "1", "2,0,2,-1"],
        ["ECLGain", "2", "0,0,-1,-1"],
    ]
    out = run(env, "gt", "show", "merged")
    assert "description  merge of next, staging\n" in out

    out = run(env, "gt", "modify", "merged", "--description", "for 2024c", "--type", "release")
    assert out == "merged: type RELEASE, description 'for 2024c'\n"
    assert "description  for 2024c\n" in run(env, "gt", "show", "merged")
    out = run(env, "gt", "clone", "merged", "copy", "--description", "a copy")
    assert out == "created copy (OPEN) from merged: 5 IoVs\n"
    assert [r[1] for r in table(run(env, "gt", "list", "--regex", "copy"))] == ["RELEASE"]
    out = run(env, "gt", "modify", "merged", code=2)
    assert "give --description and/or --type" in out


def test_state_moves(env: dict[str, str], files: dict[str, Path]) -> None:
    setup_staging(env, files)
    assert run(env, "gt", "state", "staging", "testing") == "staging: OPEN -> TESTING\n"
    assert run(env, "gt", "state", "staging", "TESTING") == "staging: already TESTING\n"
    assert error(env, "gt", "state", "staging", "RUNNING") == (
        "global tag staging: cannot move from TESTING to RUNNING; allowed: VALIDATED, OPEN"
    )
    # a tag that is not OPEN takes no IoV
    assert error(env, "iov", "add", "staging", "ECLGain", "2", "5,0,5,-1") == (
        "global tag staging is TESTING: only OPEN tags can be modified (move it back to OPEN first)"
    )
    assert run(env, "gt", "state", "staging", "VALIDATED") == "staging: TESTING -> VALIDATED\n"
    assert run(env, "gt", "state", "staging", "PUBLISHED") == "staging: VALIDATED -> PUBLISHED\n"
    assert error(env, "gt", "state", "staging", "OPEN") == (
        "global tag staging: cannot move from PUBLISHED to OPEN; allowed: INVALID"
    )
    assert error(env, "gt", "modify", "staging", "--description", "x") == (
        "global tag staging is PUBLISHED: it cannot be modified"
    )
    assert run(env, "gt", "state", "staging", "INVALID") == "staging: PUBLISHED -> INVALID\n"
    assert error(env, "gt", "state", "staging", "OPEN") == (
        "global tag staging: cannot move from INVALID to OPEN; allowed: none (final state)"
    )
    assert error(env, "gt", "state", "staging", "DONE").startswith(
        "unknown global tag state 'DONE'; states: OPEN, TESTING"
    )
    assert [r[:3] for r in table(run(env, "gt", "list", "--state", "invalid"))] == [
        ["staging", "DEV", "INVALID"]
    ]
    rows = table(run(env, "gt", "history", "staging"))
    states = [r[-2:] for r in rows if r[3] == "state"]
    assert states == [
        ["new=TESTING,", "old=OPEN"],
        ["new=VALIDATED,", "old=TESTING"],
        ["new=PUBLISHED,", "old=VALIDATED"],
        ["new=INVALID,", "old=PUBLISHED"],
    ]
    assert all(r[2] == "tester" for r in rows)
    rows = table(run(env, "gt", "history", "--limit", "2"))
    assert [r[3:6] for r in rows] == [
        ["state", "staging", "new=PUBLISHED,"],
        ["state", "staging", "new=INVALID,"],
    ]


def test_running_update_and_snapshot(env: dict[str, str], files: dict[str, Path]) -> None:
    setup_staging(env, files)
    run(env, "gt", "create", "prompt")
    run(env, "iov", "add", "prompt", "ECLGain", "1", "0,0,-1,-1")
    run(env, "gt", "state", "prompt", "RUNNING")
    assert error(env, "iov", "add", "prompt", "CDCT0", "1", "1,0,1,10") == (
        "global tag prompt is RUNNING: it changes only by a running update"
    )
    run(env, "gt", "create", "update1")
    run(env, "iov", "add", "update1", "ECLGain", "2", "1,10,-1,-1")
    run(env, "iov", "add", "update1", "CDCT0", "1", "0,0,-1,-1")
    update = ("gt", "runningupdate", "prompt", "update1", "--run", "1", "10")
    assert error(env, *update) == ("running update: staging tag update1 is OPEN, not VALIDATED")
    run(env, "gt", "state", "update1", "TESTING")
    run(env, "gt", "state", "update1", "VALIDATED")
    before = run(env, "iov", "prompt")

    expected = [
        "+  CDCT0    rev 1  1,10,-1,-1",
        "~  ECLGain  rev 1  0,0,-1,-1 -> 0,0,1,9",
        "+  ECLGain  rev 2  1,10,-1,-1",
    ]
    summary = (
        "running update of prompt from update1 at run 1,10 (strict): "
        "2 IoVs created, 1 closed, 0 extended"
    )
    out = run(env, *update, "--dry-run")
    assert out.splitlines() == [*expected, f"dry run, nothing written: {summary}"]
    assert run(env, "iov", "prompt") == before
    assert "running_update" not in run(env, "gt", "history", "prompt")

    out = run(env, *update)
    assert out.splitlines() == [*expected, summary]
    assert [r[:3] for r in table(run(env, "iov", "prompt"))] == [
        ["CDCT0", "1", "1,10,-1,-1"],
        ["ECLGain", "1", "0,0,1,9"],
        ["ECLGain", "2", "1,10,-1,-1"],
    ]
    assert run(env, *update, code=1).splitlines() == [
        "Error: running update of prompt from update1 at run 1,10 (strict) refused, 2 problems "
        "(running IoVs start at or after the first valid run: 2)",
        "  running IoVs start at or after the first valid run: CDCT0 rev 1 [1,10,-1,-1]",
        "  running IoVs start at or after the first valid run: ECLGain rev 2 [1,10,-1,-1]",
    ]

    out = run(env, "gt", "snapshot", "prompt", "snap", "--until", "1", "20")
    assert out == "created snap (PUBLISHED): prompt up to run 1,20, 3 IoVs\n"
    assert [r[:3] for r in table(run(env, "iov", "snap"))] == [
        ["CDCT0", "1", "1,10,1,20"],
        ["ECLGain", "1", "0,0,1,9"],
        ["ECLGain", "2", "1,10,1,20"],
    ]
    assert "state        PUBLISHED\n" in run(env, "gt", "show", "snap")
    assert error(env, "gt", "snapshot", "update1", "snap2", "--until", "1", "20") == (
        "snapshot: update1 is VALIDATED, not RUNNING"
    )
    out = run(env, "gt", "snapshot", "prompt", "snap3", code=2)
    assert "Missing option '--until'" in out


def test_local_database_round_trip(
    env: dict[str, str], files: dict[str, Path], tmp_path: Path
) -> None:
    setup_staging(env, files)
    run(env, "gt", "create", "fix")
    run(env, "iov", "add", "fix", "ECLGain", "2", "1,5,1,8")
    first = tmp_path / "export1"
    out = run(
        env, "db", "export-local", first, "--gt", "fix", "--gt", "staging", "--runs", "0,0,1,30"
    )
    assert out == f"wrote 5 lines and 3 payload files to {first}\n"
    text = (first / "database.txt").read_text()
    assert text.splitlines() == [
        "dbstore/CDCT0 1 0,0,0,-1",
        "dbstore/CDCT0 1 1,0,1,10",
        "dbstore/ECLGain 1 0,0,1,4",
        "dbstore/ECLGain 2 1,5,1,8",
        "dbstore/ECLGain 1 1,9,1,30",
    ]
    assert sorted(p.name for p in first.glob("*.root")) == [
        "dbstore_CDCT0_rev_1.root",
        "dbstore_ECLGain_rev_1.root",
        "dbstore_ECLGain_rev_2.root",
    ]
    assert error(env, "db", "export-local", first, "--gt", "fix") == (
        f"{first / 'database.txt'} exists already; export into a new folder"
    )

    out = run(env, "db", "import-local", first, "--gt", "imported")
    assert out.splitlines()[0] == f"imported 5 IoVs from {first} into imported"
    assert [r[:3] for r in table(out)] == [
        ["CDCT0", "1", "0,0,0,-1"],
        ["CDCT0", "1", "1,0,1,10"],
        ["ECLGain", "1", "0,0,1,4"],
        ["ECLGain", "2", "1,5,1,8"],
        ["ECLGain", "1", "1,9,1,30"],
    ]
    assert "description  imported from " in run(env, "gt", "show", "imported")
    second = tmp_path / "export2"
    run(env, "db", "export-local", second, "--gt", "imported")
    assert (second / "database.txt").read_text() == text
    for f in first.glob("*.root"):
        assert (second / f.name).read_bytes() == f.read_bytes()
    # no new payload revision: the files are the stored ones, byte for byte
    assert [r[:2] for r in table(run(env, "payload", "list"))] == [
        ["CDCT0", "1"],
        ["ECLGain", "1"],
        ["ECLGain", "2"],
    ]


def test_payload_show_and_dump(env: dict[str, str], files: dict[str, Path]) -> None:
    setup_staging(env, files)
    out = run(env, "payload", "show", "ECLGain", "--revision", "1")
    head_text, columns, status = out.strip().split("\n\n")
    head = record(head_text)
    info = stored(env, "ECLGain", 1)
    assert head == {
        "payload": "ECLGain",
        "revision": "1",
        "checksum": info.checksum,
        "size": f"{info.size} bytes",
        "created": f"{info.created:%Y-%m-%d %H:%M:%S} UTC by tester",
        "description": "crystal gains",
        "rows": "4",
        "provenance": '{"job": 3}',
    }
    assert table(columns) == [
        ["cell", "key", "int64", "-", "0", "3"],
        ["gain", "value", "float32", "ADC/MeV", "0.9", "1.2"],
        ["gain_err", "error", "float64", "-", "0.01", "0.01"],
        ["status", "status", "int8", "-", "0", "3"],
    ]
    assert status == "status  OK 2, NOT_ENOUGH_DATA 1, DEAD 1"
    # the newest revision by default; no status column, no status line
    out = run(env, "payload", "show", "ECLGain")
    assert "revision     2\n" in out
    assert "status" not in out

    out = run(env, "payload", "dump", "ECLGain", "--revision", "1")
    assert out.splitlines()[0].split() == ["cell", "gain", "gain_err", "status"]
    assert table(out) == [
        ["0", "1.0", "0.01", "0"],
        ["1", "1.1", "0.01", "0"],
        ["2", "0.9", "0.01", "3"],
        ["3", "1.2", "0.01", "1"],
    ]
    out = run(env, "payload", "dump", "ECLGain", "--revision", "1", "--limit", "1")
    assert table(out) == [["0", "1.0", "0.01", "0"], ["...", "3", "more", "rows"]]
    out = run(env, "payload", "dump", "ECLGain", "--csv", "--limit", "2")
    assert out == "cell,gain\n0,1.01\n1,1.1\n"
    assert run(env, "payload", "dump", "CDCT0", "--csv") == "t0\n3.5\n4.25\n"


def test_db_info_and_db_option(env: dict[str, str], files: dict[str, Path], tmp_path: Path) -> None:
    setup_staging(env, files)
    run(env, "gt", "state", "staging", "TESTING")
    run(env, "gt", "create", "other")
    out = run(env, "db", "info")
    head = record(out)
    sizes = sum(stored(env, n, r).size for n, r in [("CDCT0", 1), ("ECLGain", 1), ("ECLGain", 2)])
    assert head == {
        "database": f"sqlite:///{Path(env['B2CALIB_DB']).resolve()}",
        "schema": schema_head(),
        "global tags": "2 (OPEN 1, TESTING 1)",
        "payloads": "2 names, 3 revisions",
        "stored": f"{sizes} bytes of payload files",
    }
    # --db wins over $B2CALIB_DB; --author over $B2CALIB_USER
    other = tmp_path / "other.sqlite"
    out = run(env, "gt", "create", "elsewhere", "--db", other, "--author", "alice")
    assert out == "created DEV global tag elsewhere (OPEN)\n"
    assert [r[0] for r in table(run(env, "gt", "list", "--db", other))] == ["elsewhere"]
    assert "elsewhere" not in run(env, "gt", "list")
    assert table(run(env, "gt", "history", "--db", other))[0][2:5] == [
        "alice",
        "create",
        "elsewhere",
    ]


def test_errors_are_one_line(env: dict[str, str], files: dict[str, Path], tmp_path: Path) -> None:
    setup_staging(env, files)
    where = f"sqlite:///{Path(env['B2CALIB_DB']).resolve()}"
    assert error(env, "gt", "show", "nope") == f"global tag 'nope' does not exist in {where}"
    assert error(env, "iov", "nope") == f"global tag 'nope' does not exist in {where}"
    assert error(env, "gt", "diff", "staging", "nope") == (
        f"global tag 'nope' does not exist in {where}"
    )
    assert error(env, "gt", "history", "nope") == f"global tag 'nope' does not exist in {where}"
    assert error(env, "gt", "merge", "m", "staging", "nope") == (
        f"global tag 'nope' does not exist in {where}"
    )
    assert error(env, "gt", "create", "staging") == "global tag 'staging' already exists"
    assert error(env, "gt", "create", "bad name") == (
        "global tag name 'bad name': use letters, digits and _ . + - : only (ASCII)"
    )
    assert error(env, "gt", "create", "x", "--type", "PROD") == (
        "global tag x: type 'PROD' is not one of ('DEV', 'RELEASE')"
    )
    assert error(env, "payload", "show", "Nope") == f"payload 'Nope' is not in {where}"
    assert error(env, "payload", "list", "Nope") == f"payload 'Nope' is not in {where}"
    assert error(env, "payload", "dump", "ECLGain", "--revision", "7") == (
        f"payload 'ECLGain' revision 7 is not in {where}"
    )
    assert error(env, "iov", "add", "staging", "Nope", "1", "0,0,-1,-1") == (
        f"payload 'Nope' revision 1 is not in {where}"
    )
    assert error(env, "iov", "add", "staging", "CDCT0", "1", "1,5,1,20") == (
        "global tag staging: IoV 1,5,1,20 of CDCT0 rev 1 overlaps IoV 1,0,1,10 of payload "
        "CDCT0 already in the tag"
    )
    assert error(env, "iov", "add", "staging", "CDCT0", "1", "1,5") == (
        "IoV '1,5': expected four integers 'first_exp,first_run,final_exp,final_run'"
    )
    assert error(env, "iov", "add", "staging", "CDCT0", "1", "1,5,1,2") == (
        "IoV 1,5,1,2: ends before it starts"
    )
    assert error(env, "iov", "remove", "staging", "CDCT0", "4,0,4,-1") == (
        "global tag staging has no IoV 4,0,4,-1 of payload CDCT0"
    )
    assert error(env, "db", "export-local", tmp_path / "x", "--gt", "staging", "--runs", "a") == (
        "IoV 'a': expected four integers 'first_exp,first_run,final_exp,final_run'"
    )
    not_payload = tmp_path / "junk.root"
    not_payload.write_text("hello")
    assert error(env, "payload", "upload", not_payload).startswith(
        f"{not_payload}: not a readable b2calib payload ("
    )
    # usage errors: exit status 2
    assert "--gt and --iov go together" in run(
        env, "payload", "upload", files["gain1"], "--gt", "staging", code=2
    )
    assert "Invalid value for --regex" in run(env, "gt", "list", "--regex", "(", code=2)
    assert "Missing option '--gt'" in run(env, "lookup", "1", "2", code=2)
    assert "Missing argument 'SOURCES...'" in run(env, "gt", "merge", "m", code=2)
    # nothing was written by the failures
    assert [r[0] for r in table(run(env, "gt", "list"))] == ["staging"]


def test_console_script(tmp_path: Path) -> None:
    """The installed entry point: exit statuses and a single error line on stderr."""
    script = Path(sys.executable).with_name("b2calib")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "b2calib.cli"]
    db = tmp_path.resolve() / "c.sqlite"

    def b2calib(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args, "--db", str(db)], capture_output=True, text=True, check=False
        )

    ok = b2calib("gt", "create", "demo")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "created DEV global tag demo (OPEN)\n", "")
    bad = b2calib("gt", "show", "nope")
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert bad.stderr == f"Error: global tag 'nope' does not exist in sqlite:///{db}\n"
    refused = b2calib("gt", "state", "demo", "PUBLISHED")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "Error: global tag demo: cannot move from OPEN to PUBLISHED; allowed: TESTING, RUNNING"
    ]
    usage = b2calib("gt", "state", "demo")
    assert usage.returncode == 2
    assert "Missing argument 'STATE'" in usage.stderr
