"""The running update with the modes and rules of basf2's ``b2conditionsdb tag runningupdate``,
on SQLite and PostgreSQL (every test taking ``db`` runs on both backends), and its command line.

The expected IoVs are written out by hand from the rules (b2calib.conditions.runningupdate),
not computed by the code under test.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from b2calib.cli import cli
from b2calib.cli.conditions import _MODES
from b2calib.conditions import (
    RUNNING_UPDATE_MODES,
    ConditionsDB,
    IoV,
    IovEntry,
    Payload,
    PayloadInfo,
    RunningUpdate,
    runningupdate,
)
from b2calib.conditions.runningupdate import plan
from b2calib.db import history
from b2calib.db.engine import _PG_LOCK
from b2calib.exceptions import ConditionsError

# -- the scenario ----------------------------------------------------------------------------
# A payload's content is its revision number, so that the same (name, number) is the same
# stored revision: E rev 1 and G rev 1 in the staging tag are those of the running tag.

#: The running tag: open and closed IoVs of several names.
RUNNING = [
    ("A", 1, "0,0,-1,-1"),
    ("B", 1, "0,0,1,4"),
    ("B", 2, "1,5,-1,-1"),
    ("C", 1, "0,0,1,9"),
    ("D", 1, "0,0,-1,-1"),
    ("E", 1, "0,0,-1,-1"),
    ("G", 1, "0,0,-1,-1"),
]
#: The staging tag: (0,0) starts, several IoVs of one name, same-revision first IoVs (E, G),
#: a new payload (F) whose only IoV is closed.
STAGING = [
    ("A", 2, "0,0,2,9"),
    ("A", 3, "2,10,-1,-1"),
    ("B", 3, "2,5,-1,-1"),
    ("C", 2, "0,0,-1,-1"),
    ("E", 1, "0,0,2,19"),
    ("E", 2, "2,20,-1,-1"),
    ("F", 1, "2,0,4,-1"),
    ("G", 1, "0,0,-1,-1"),
]
#: The running tag after the update from run 2,0 in mode allow_closed.
ALLOW_CLOSED = [
    ("A", "0,0,1,-1", 1),  # closed at the run before the update (its staging starts at 0,0)
    ("A", "2,0,2,9", 2),  # the (0,0) start moved to the first valid run
    ("A", "2,10,-1,-1", 3),
    ("B", "0,0,1,4", 1),  # closed before the update: left alone
    ("B", "1,5,2,4", 2),  # closed just before its staging IoV
    ("B", "2,5,-1,-1", 3),
    ("C", "0,0,1,9", 1),
    ("C", "2,0,-1,-1", 2),
    ("D", "0,0,-1,-1", 1),  # not in staging: left open
    ("E", "0,0,2,19", 1),  # same revision as staging's first: extended over it, then closed
    ("E", "2,20,-1,-1", 2),
    ("F", "2,0,4,-1", 1),  # closed, accepted in this mode
    ("G", "0,0,-1,-1", 1),  # same revision, open staging IoV: untouched
]
EXPECTED = {
    "allow_closed": ALLOW_CLOSED,
    "fix_closed": [r if r[0] != "F" else ("F", "2,0,-1,-1", 1) for r in ALLOW_CLOSED],
    "full_replacement": [r if r[0] != "D" else ("D", "0,0,1,-1", 1) for r in ALLOW_CLOSED],
}


@pytest.fixture
def db(db_url: str) -> Iterator[ConditionsDB]:
    conditions = ConditionsDB(db_url, author="alice")
    yield conditions
    conditions.close()


def payload(name: str, number: int) -> Payload:
    return Payload(
        name,
        keys={"channel": np.arange(3, dtype=np.int32)},
        values={"value": np.full(3, float(number))},
    )


def make_tag(
    db: ConditionsDB, name: str, items: Sequence[tuple[str, int, str]], states: Sequence[str]
) -> None:
    db.create_tag(name)
    added = db.upload_and_add(name, [(payload(n, k), IoV.parse(iov)) for n, k, iov in items])
    assert [e.payload.revision for e in added] == [k for _, k, _ in items]
    for state in states:
        db.set_state(name, state)


VALIDATED = ("TESTING", "VALIDATED")


def scenario(db: ConditionsDB) -> None:
    make_tag(db, "R", RUNNING, ["RUNNING"])
    make_tag(db, "S", STAGING, VALIDATED)


def running_copy(db: ConditionsDB, name: str, source: str = "R") -> None:
    db.clone_tag(source, name)
    db.set_state(name, "RUNNING")


def content(db: ConditionsDB, tag: str) -> list[tuple[str, str, int]]:
    return [(e.name, str(e.iov), e.payload.revision) for e in db.iovs(tag)]


def everything(db: ConditionsDB) -> tuple[Any, ...]:
    """Tags, IoVs, payloads and the whole history, with times and details."""
    tags = db.tags()
    iovs = {t.name: db.iovs(t.name) for t in tags}
    history = [(h.time, h.author, h.action, h.globaltag, h.details) for h in db.history()]
    return tags, iovs, db.payloads(), history


def lines(u: RunningUpdate) -> list[str]:
    """The operations of an update as text, in the result's order."""
    return (
        [f"~ {old.payload} {old.iov} -> {new}" for old, new in u.closed]
        + [f"+ {e.payload} {e.iov}" for e in u.created]
        + [f"= {e.payload} {e.iov}" for e in u.extended]
    )


def refusal(db: ConditionsDB, *args: Any, **kwargs: Any) -> list[str]:
    """The lines of the error of a running update that must fail and write nothing."""
    before = everything(db)
    with pytest.raises(ConditionsError) as info:
        db.running_update(*args, **kwargs)
    assert everything(db) == before
    return str(info.value).splitlines()


# -- the modes -------------------------------------------------------------------------------


def test_each_mode_s_resulting_iovs(db: ConditionsDB) -> None:
    scenario(db)
    for mode in RUNNING_UPDATE_MODES:
        running_copy(db, mode)
    # strict: F's staging IoVs end closed
    assert refusal(db, "strict", "S", valid_from=(2, 0)) == [
        "running update of strict from S at run 2,0 (strict) refused, 1 problem "
        "(closed payloads: 1)",
        "  closed payloads: F rev 1 [2,0,4,-1]: the last IoV of F in S is not open",
    ]
    # simple: only one 0,0,-1,-1 IoV per payload
    error = refusal(db, "simple", "S", valid_from=(2, 0), mode="simple")
    assert error[0] == (
        "running update of simple from S at run 2,0 (simple) refused, 8 problems "
        "(wrong validity: 6, duplicate payloads: 2)"
    )
    assert "  duplicate payloads: E rev 2 [2,20,-1,-1] (a second IoV of E)" in error
    assert "  wrong validity: F rev 1 [2,0,4,-1] is not 0,0,-1,-1" in error
    for mode, expected in EXPECTED.items():
        u = db.running_update(mode, "S", valid_from=(2, 0), mode=mode)
        assert content(db, mode) == expected, mode
        assert (u.running, u.staging, u.valid_from, u.mode, u.dry_run) == (
            mode,
            "S",
            (2, 0),
            mode,
            False,
        )
        assert db.tag(mode).state == "RUNNING"
    # the operations, for full_replacement
    assert lines(u) == [
        "~ A rev 1 0,0,-1,-1 -> 0,0,1,-1",
        "~ B rev 2 1,5,-1,-1 -> 1,5,2,4",
        "~ D rev 1 0,0,-1,-1 -> 0,0,1,-1",
        "~ E rev 1 0,0,-1,-1 -> 0,0,2,19",
        "+ A rev 2 2,0,2,9",
        "+ A rev 3 2,10,-1,-1",
        "+ B rev 3 2,5,-1,-1",
        "+ C rev 2 2,0,-1,-1",
        "+ E rev 2 2,20,-1,-1",
        "+ F rev 1 2,0,4,-1",
        "= E rev 1 0,0,2,19",
        "= G rev 1 0,0,-1,-1",
    ]
    assert u.warnings == [
        "F rev 1 [2,0,4,-1]: the last IoV of F in S is not open: accepted in mode full_replacement"
    ]
    # the runs the tags answer for: before the update as before, after it the staging's
    assert {n: e.payload.revision for n, e in db.lookup(1, 99, ["full_replacement"]).items()} == {
        "A": 1,
        "B": 2,
        "D": 1,
        "E": 1,
        "G": 1,
    }
    assert {n: e.payload.revision for n, e in db.lookup(2, 15, ["full_replacement"]).items()} == {
        "A": 3,
        "B": 3,
        "C": 2,
        "E": 1,
        "F": 1,
        "G": 1,
    }
    assert db.lookup(9, 0, ["fix_closed"])["F"].payload.revision == 1
    assert "F" not in db.lookup(9, 0, ["allow_closed"])
    fix = db.history("fix_closed")[-1]
    assert fix.action == "running_update"
    assert fix.details["mode"] == "fix_closed"
    assert "F rev 1 2,0,-1,-1" in fix.details["created"]


GRID = [(e, r) for e in range(6) for r in [*range(25), 1000]]


@pytest.mark.parametrize("mode", ["allow_closed", "full_replacement"])
def test_every_run_answers_as_the_rules_say(db: ConditionsDB, mode: str) -> None:
    """Run by run, against a model of the rules written from the tags' lookups: before the
    first valid run the running tag answers as before; from it on, a payload of the staging
    tag as the staging tag does (the running one until the staging's first IoV starts, none
    after a closed end), any other payload as before (none in full_replacement)."""
    scenario(db)
    vf = (2, 0)
    old = {run: revisions(answers) for run, answers in db.lookup_many(GRID, ["R"]).items()}
    staged = {run: revisions(answers) for run, answers in db.lookup_many(GRID, ["S"]).items()}
    starts: dict[str, tuple[int, int]] = {}
    for e in db.iovs("S"):
        starts[e.name] = min(starts.get(e.name, e.iov.start), e.iov.start)
    db.running_update("R", "S", valid_from=vf, mode=mode)
    new = {run: revisions(answers) for run, answers in db.lookup_many(GRID, ["R"]).items()}
    for run in GRID:
        if run < vf:
            assert new[run] == old[run], run
            continue
        expected = {}
        for name in {*old[run], *starts}:
            if name in staged[run]:
                expected[name] = staged[run][name]
                continue
            # the running payload is kept until the staging's begins, or for good if the
            # staging tag lacks it (but in full_replacement)
            keep = run < max(starts[name], vf) if name in starts else mode != "full_replacement"
            if keep and name in old[run]:
                expected[name] = old[run][name]
        assert new[run] == expected, run


def revisions(answers: dict[str, IovEntry]) -> dict[str, int]:
    return {name: e.payload.revision for name, e in answers.items()}


def test_simple_mode(db: ConditionsDB) -> None:
    make_tag(db, "R", RUNNING, ["RUNNING"])
    make_tag(db, "S", [("A", 2, "0,0,-1,-1"), ("G", 1, "0,0,-1,-1")], VALIDATED)
    make_tag(db, "bad", [("A", 3, "0,0,1,-1"), ("A", 4, "2,0,-1,-1")], VALIDATED)
    assert refusal(db, "R", "bad", valid_from=(2, 0), mode="simple") == [
        "running update of R from bad at run 2,0 (simple) refused, 3 problems "
        "(wrong validity: 2, duplicate payloads: 1)",
        "  wrong validity: A rev 3 [0,0,1,-1] is not 0,0,-1,-1",
        "  duplicate payloads: A rev 4 [2,0,-1,-1] (a second IoV of A)",
        "  wrong validity: A rev 4 [2,0,-1,-1] is not 0,0,-1,-1",
    ]
    u = db.running_update("R", "S", valid_from=(2, 0), mode="simple")
    assert lines(u) == [
        "~ A rev 1 0,0,-1,-1 -> 0,0,1,-1",
        "+ A rev 2 2,0,-1,-1",
        "= G rev 1 0,0,-1,-1",
    ]
    assert content(db, "R")[:2] == [("A", "0,0,1,-1", 1), ("A", "2,0,-1,-1", 2)]


# -- the rules -------------------------------------------------------------------------------


def test_tag_states(db: ConditionsDB) -> None:
    scenario(db)
    make_tag(db, "open", [("A", 2, "0,0,-1,-1")], [])
    make_tag(db, "testing", [("A", 2, "0,0,-1,-1")], ["TESTING"])
    assert refusal(db, "open", "S", valid_from=(2, 0)) == [
        "running update: running tag open is OPEN, not RUNNING"
    ]
    assert refusal(db, "R", "testing", valid_from=(2, 0)) == [
        "running update: staging tag testing is TESTING, not VALIDATED"
    ]
    assert refusal(db, "R", "missing", valid_from=(2, 0))[0].startswith(
        "global tag 'missing' does not exist in "
    )
    # a dry run only warns about the states (as basf2's does) and shows the update
    before = everything(db)
    u = db.running_update("R", "testing", valid_from=(2, 0), dry_run=True)
    assert everything(db) == before
    assert u.warnings == ["staging tag testing is TESTING, not VALIDATED (a dry run goes on)"]
    assert lines(u) == ["~ A rev 1 0,0,-1,-1 -> 0,0,1,-1", "+ A rev 2 2,0,-1,-1"]


def test_first_valid_run_against_the_running_tag(db: ConditionsDB) -> None:
    scenario(db)
    make_tag(db, "S0", [("A", 2, "0,0,-1,-1")], VALIDATED)
    # B rev 2 starts at 1,5; C rev 1 (closed) ends at 1,9
    assert refusal(db, "R", "S0", valid_from=(1, 5)) == [
        "running update of R from S0 at run 1,5 (strict) refused, 2 problems (running IoVs "
        "start at or after the first valid run: 1, running IoVs end at or after the first "
        "valid run: 1)",
        "  running IoVs start at or after the first valid run: B rev 2 [1,5,-1,-1]",
        "  running IoVs end at or after the first valid run: C rev 1 [0,0,1,9]",
    ]
    assert refusal(db, "R", "S0", valid_from=(1, 9))[1:] == [
        "  running IoVs end at or after the first valid run: C rev 1 [0,0,1,9]"
    ]
    # any payload name counts: D, E, G are not in S0, C is closed
    u = db.running_update("R", "S0", valid_from=(1, 10))
    assert lines(u) == ["~ A rev 1 0,0,-1,-1 -> 0,0,1,9", "+ A rev 2 1,10,-1,-1"]
    # the new IoV of A starts at 1,10: the next update must start after it
    make_tag(db, "S1", [("A", 3, "0,0,-1,-1")], VALIDATED)
    assert refusal(db, "R", "S1", valid_from=(1, 10))[1:] == [
        "  running IoVs start at or after the first valid run: A rev 2 [1,10,-1,-1]"
    ]
    # b2calib's own rule: not into the runs frozen by a snapshot of the running tag
    db.snapshot("R", "snap", until=(2, 3))
    assert refusal(db, "R", "S1", valid_from=(2, 3))[1:] == [
        "  starts in a snapshot: R was snapshot up to run 2,3: an update must start after it"
    ]
    db.running_update("R", "S1", valid_from=(2, 4))
    assert content(db, "R")[:3] == [
        ("A", "0,0,1,9", 1),
        ("A", "1,10,2,3", 2),
        ("A", "2,4,-1,-1", 3),
    ]


def test_every_problem_is_listed_at_once(db: ConditionsDB) -> None:
    scenario(db)
    make_tag(
        db,
        "S2",
        [
            ("A", 2, "1,10,1,12"),
            ("A", 3, "1,15,-1,-1"),  # a gap: 1,13 to 1,14
            ("B", 3, "1,6,-1,-1"),  # starts before 1,10
            ("C", 2, "0,0,1,20"),  # closed: strict refuses
            ("D", 2, "0,0,1,12"),
            ("D", 3, "1,14,2,-1"),  # a gap and closed
        ],
        VALIDATED,
    )
    assert refusal(db, "R", "S2", valid_from=(1, 9)) == [
        "running update of R from S2 at run 1,9 (strict) refused, 6 problems (running IoVs "
        "end at or after the first valid run: 1, gaps: 2, starts too early: 1, closed "
        "payloads: 2)",
        "  running IoVs end at or after the first valid run: C rev 1 [0,0,1,9]",
        "  gaps: A has no IoV for runs 1,13,1,14",
        "  starts too early: B rev 3 [1,6,-1,-1] starts before the first valid run 1,9",
        "  closed payloads: C rev 2 [0,0,1,20]: the last IoV of C in S2 is not open",
        "  gaps: D has no IoV for runs 1,13,1,13",
        "  closed payloads: D rev 3 [1,14,2,-1]: the last IoV of D in S2 is not open",
    ]
    # allow_closed accepts the closed ones, not the rest
    assert refusal(db, "R", "S2", valid_from=(1, 9), mode="allow_closed")[0].endswith(
        "refused, 4 problems (running IoVs end at or after the first valid run: 1, gaps: 2, "
        "starts too early: 1)"
    )
    # passing: several IoVs, from the first valid run on, without a gap at an experiment's end
    make_tag(db, "S3", [("A", 2, "1,10,1,-1"), ("A", 3, "2,0,-1,-1")], VALIDATED)
    u = db.running_update("R", "S3", valid_from=(1, 10))
    assert lines(u) == [
        "~ A rev 1 0,0,-1,-1 -> 0,0,1,9",
        "+ A rev 2 1,10,1,-1",
        "+ A rev 3 2,0,-1,-1",
    ]


def test_overlaps_are_listed() -> None:
    """A tag cannot hold overlapping IoVs of a payload (the database refuses them), so the
    planner's own check is shown on IoVs given to it directly."""
    info = PayloadInfo(1, "A", 1, "md5", 1, datetime(2026, 1, 1, tzinfo=UTC), "alice", {})
    staged = [IovEntry("S", info, IoV.parse(t)) for t in ("2,0,2,9", "2,5,3,-1", "3,0,-1,-1")]
    with pytest.raises(ConditionsError) as err:
        plan("R", "S", [], staged, valid_from=(2, 0), mode="allow_closed")
    assert str(err.value).splitlines() == [
        "running update of R from S at run 2,0 (allow_closed) refused, 2 problems (overlaps: 2)",
        "  overlaps: A rev 1 [2,5,3,-1] overlaps A rev 1 [2,0,2,9]",
        "  overlaps: A rev 1 [3,0,-1,-1] overlaps A rev 1 [2,5,3,-1]",
    ]


def test_full_replacement_by_an_empty_staging_tag_closes_every_open_iov(
    db: ConditionsDB,
) -> None:
    scenario(db)
    make_tag(db, "empty", [], VALIDATED)
    assert not db.running_update("R", "empty", valid_from=(2, 0), dry_run=True)
    u = db.running_update("R", "empty", valid_from=(2, 0), mode="full_replacement")
    assert lines(u) == [
        "~ A rev 1 0,0,-1,-1 -> 0,0,1,-1",
        "~ B rev 2 1,5,-1,-1 -> 1,5,1,-1",
        "~ D rev 1 0,0,-1,-1 -> 0,0,1,-1",
        "~ E rev 1 0,0,-1,-1 -> 0,0,1,-1",
        "~ G rev 1 0,0,-1,-1 -> 0,0,1,-1",
    ]
    assert db.lookup(2, 0, ["R"]) == {}


def test_a_staging_iov_ending_before_the_first_valid_run(db: ConditionsDB) -> None:
    """Clipped to nothing: not added, with a warning; the running IoV is still closed (basf2's
    tool fails on such an IoV with an exception, b2calib retires the payload)."""
    scenario(db)
    make_tag(db, "old", [("A", 2, "0,0,1,-1")], VALIDATED)
    assert refusal(db, "R", "old", valid_from=(2, 0))[1:] == [
        "  closed payloads: A rev 2 [0,0,1,-1]: the last IoV of A in old is not open"
    ]
    u = db.running_update("R", "old", valid_from=(2, 0), mode="allow_closed")
    assert lines(u) == ["~ A rev 1 0,0,-1,-1 -> 0,0,1,-1"]
    assert u.warnings[1:] == [
        "A rev 2 [0,0,1,-1] ends before the first valid run 2,0: not added to R"
    ]
    assert "A" not in db.lookup(2, 0, ["R"])


def test_arguments(db: ConditionsDB) -> None:
    scenario(db)
    with pytest.raises(TypeError, match="valid_from"):
        db.running_update("R", "S")  # type: ignore[call-arg]
    with pytest.raises(ConditionsError, match=r"first valid run \(2, -1\) must be"):
        db.running_update("R", "S", valid_from=(2, -1))
    with pytest.raises(ConditionsError, match="first valid run must be"):
        db.running_update("R", "S", valid_from=(2,))  # type: ignore[arg-type]
    with pytest.raises(
        ConditionsError,
        match="unknown mode 'relaxed'; the modes are strict, allow_closed, fix_closed, "
        "simple, full_replacement",
    ):
        db.running_update("R", "S", valid_from=(2, 0), mode="relaxed")
    with pytest.raises(ConditionsError, match="R cannot update itself"):
        db.running_update("R", "R", valid_from=(2, 0))
    # an update that changes nothing writes nothing
    make_tag(db, "same", [("G", 1, "0,0,-1,-1")], VALIDATED)
    before = everything(db)
    u = db.running_update("R", "same", valid_from=(2, 0))
    assert not u
    assert [str(e) for e in u.extended] == ["G rev 1 [0,0,-1,-1] in R"]
    assert u.warnings == ["nothing to do: same changes nothing in R"]
    assert everything(db) == before


# -- dry run, history, atomicity -------------------------------------------------------------


def test_dry_run_writes_nothing_and_equals_the_real_run(db: ConditionsDB) -> None:
    scenario(db)
    before = everything(db)
    dry = db.running_update("R", "S", valid_from=(2, 0), mode="fix_closed", dry_run=True)
    assert everything(db) == before
    assert dry.dry_run
    assert dry.summary().startswith("dry run, nothing written: ")
    real = db.running_update("R", "S", valid_from=(2, 0), mode="fix_closed")
    assert dataclasses.replace(dry, dry_run=False) == real
    assert content(db, "R") == EXPECTED["fix_closed"]
    assert real.summary() == (
        "running update of R from S at run 2,0 (fix_closed): 6 IoVs created, 3 closed, 2 extended"
    )
    # the history: every IoV closed and added, then the update itself
    new = db.history()[len(before[3]) :]
    assert [h.action for h in new] == ["close_iov"] * 3 + ["add_iov"] * 6 + ["running_update"]
    assert new[0].details == {"payload": "A rev 1", "old": "0,0,-1,-1", "new": "0,0,1,-1"}
    assert new[-1].details == {
        "staging": "S",
        "valid_from": [2, 0],
        "mode": "fix_closed",
        "closed": [
            "A rev 1 0,0,-1,-1 -> 0,0,1,-1",
            "B rev 2 1,5,-1,-1 -> 1,5,2,4",
            "E rev 1 0,0,-1,-1 -> 0,0,2,19",
        ],
        "created": [
            "A rev 2 2,0,2,9",
            "A rev 3 2,10,-1,-1",
            "B rev 3 2,5,-1,-1",
            "C rev 2 2,0,-1,-1",
            "E rev 2 2,20,-1,-1",
            "F rev 1 2,0,-1,-1",
        ],
        "extended": ["E rev 1 0,0,2,19", "G rev 1 0,0,-1,-1"],
    }
    assert all(h.author == "alice" and h.globaltag == "R" for h in new)


def test_a_failing_update_writes_nothing(db: ConditionsDB, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario(db)
    before = everything(db)

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise ConditionsError("disk full")

    # the IoVs are closed first: a failure while adding must undo the closing
    monkeypatch.setattr(ConditionsDB, "_insert_iovs", fail)
    with pytest.raises(ConditionsError, match="disk full"):
        db.running_update("R", "S", valid_from=(2, 0), mode="allow_closed")
    assert everything(db) == before


def test_a_dry_run_holds_the_writers_lock(
    db: ConditionsDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a dry run's transaction another writer cannot begin: the same lock as a write
    (BEGIN IMMEDIATE on SQLite, the advisory lock on PostgreSQL)."""
    scenario(db)
    seen: list[bool] = []
    real_plan = runningupdate.plan

    def probing_plan(*args: Any, **kwargs: Any) -> Any:
        seen.append(other_writer_can_begin(db.url))
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(runningupdate, "plan", probing_plan)
    db.running_update("R", "S", valid_from=(2, 0), mode="allow_closed", dry_run=True)
    assert seen == [False]
    assert other_writer_can_begin(db.url)


def other_writer_can_begin(url: str) -> bool:
    """Whether a writer outside the library could take the writers' lock at once."""
    u = sa.engine.make_url(url)
    if u.get_backend_name() == "sqlite":
        conn = sqlite3.connect(str(u.database), timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError as err:
            if "locked" not in str(err):
                raise
            return False
        finally:
            conn.close()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            got = conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
            return bool(got.scalar())
    finally:
        engine.dispose()


def test_rolled_back_write(db: ConditionsDB) -> None:
    """Database.write(rollback=True): the block sees its writes, nothing is kept."""
    with db.write(rollback=True) as conn:
        db.log(conn, "something")
        assert [r.action for r in conn.execute(sa.select(history.c.action))] == ["something"]
    assert db.history() == []
    with db.write() as conn:
        db.log(conn, "kept")
    assert [h.action for h in db.history()] == ["kept"]


# -- the command line ------------------------------------------------------------------------


def cli_run(env: dict[str, str], *args: object, code: int = 0) -> str:
    result = CliRunner(env=env).invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, result.output
    return result.output


@contextmanager
def _closing(url: str) -> Iterator[ConditionsDB]:
    cdb = ConditionsDB(url, author="alice")
    try:
        yield cdb
    finally:
        cdb.close()


def test_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    with _closing(url) as cdb:
        scenario(cdb)
        for name in ("R2", "R3"):
            running_copy(cdb, name)
        before = everything(cdb)
    env = {"B2CALIB_DB": url, "B2CALIB_USER": "bob"}
    out = cli_run(
        env, "gt", "runningupdate", "R", "S", "--run", 2, 0, "--allow-closed", "--dry-run"
    )
    assert out.splitlines() == [
        "~  A  rev 1  0,0,-1,-1 -> 0,0,1,-1",
        "+  A  rev 2  2,0,2,9",
        "+  A  rev 3  2,10,-1,-1",
        "~  B  rev 2  1,5,-1,-1 -> 1,5,2,4",
        "+  B  rev 3  2,5,-1,-1",
        "+  C  rev 2  2,0,-1,-1",
        "=  E  rev 1  0,0,-1,-1 -> 0,0,2,19",
        "+  E  rev 2  2,20,-1,-1",
        "+  F  rev 1  2,0,4,-1",
        "=  G  rev 1  0,0,-1,-1",
        "warning: F rev 1 [2,0,4,-1]: the last IoV of F in S is not open: accepted in mode "
        "allow_closed",
        "dry run, nothing written: running update of R from S at run 2,0 (allow_closed): "
        "6 IoVs created, 3 closed, 2 extended",
    ]
    with _closing(url) as cdb:
        assert everything(cdb) == before
    # the mode by name or by basf2's flag, the same update
    by_flag = cli_run(env, "gt", "runningupdate", "R2", "S", "-r", 2, 0, "--full-replacement")
    by_name = cli_run(
        env, "gt", "runningupdate", "R3", "S", "--run", 2, 0, "--mode", "full-replacement"
    )
    assert by_flag.replace("R2", "R3") == by_name
    assert "~  D  rev 1  0,0,-1,-1 -> 0,0,1,-1" in by_name.splitlines()
    assert by_name.splitlines()[-1] == (
        "running update of R3 from S at run 2,0 (full_replacement): 6 IoVs created, 4 closed, "
        "2 extended"
    )
    with _closing(url) as cdb:
        assert content(cdb, "R3") == EXPECTED["full_replacement"]
        assert cdb.history("R3")[-1].author == "bob"
    # errors: the refusal lists its problems; usage errors exit with status 2
    out = cli_run(env, "gt", "runningupdate", "R", "S", "--run", 2, 0, code=1)
    assert out.splitlines() == [
        "Error: running update of R from S at run 2,0 (strict) refused, 1 problem "
        "(closed payloads: 1)",
        "  closed payloads: F rev 1 [2,0,4,-1]: the last IoV of F in S is not open",
    ]
    assert "Missing option '-r' / '--run'" in cli_run(env, "gt", "runningupdate", "R", "S", code=2)
    out = cli_run(
        env, "gt", "runningupdate", "R", "S", "-r", 2, 0, "--fix-closed", "--mode", "simple", code=2
    )
    assert "give one mode, not --fix-closed, --mode simple" in out
    assert _MODES == RUNNING_UPDATE_MODES  # the command line's copy of the library's modes
    assert "'lax' is not one of" in cli_run(
        env, "gt", "runningupdate", "R", "S", "-r", 2, 0, "--mode", "lax", code=2
    )
