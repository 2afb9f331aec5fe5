"""Certification's explicit confirmations (issue 19): overriding another person's flag, GOOD
over an automatic ERROR and completing a run with NOTSET detectors are refused without
``force`` (naming every one, writing nothing) and recorded as confirmed with it."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from b2calib.exceptions import ConfirmationNeeded, PermissionDenied, QAError
from b2calib.qa.monitoring import MonitoringValue, RunQA
from b2calib.qa.store import Confirmation, QADatabase
from tests.test_qa_store import CARL, MONA, PIA, _runs

#: The CDC variable made to fail in run 3 (far below its trend over the 4S runs).
CDC_VARIABLE = "hadron.cdc_hits_per_event"


@pytest.fixture
def db(db_url: str) -> Iterator[QADatabase]:
    """test_qa_store's runs and users; CDC's automatic status is ERROR in run 3 alone."""
    qa = QADatabase(db_url, author="admin")
    qa.runs.import_runs(_runs())
    qa.users.add("mona", "m-secret", "manager")
    qa.users.add("carl", "c-secret", "expert", ["CDC", "ECL"])
    qa.users.add("pia", "p-secret", "expert", ["PXD"])
    for run in (1, 2, 3, 4, 6, 7, 8):  # the physics 4S runs
        value = 20.0 if run == 3 else 50.0 + 0.1 * run
        qa.histograms.store_run(
            RunQA(3, run, [MonitoringValue(CDC_VARIABLE, "CDC", value, 0.5, "")], {})
        )
    yield qa
    qa.close()


def test_the_fixture_has_one_automatic_error(db: QADatabase) -> None:
    grid = db.status.grid(exp=3)
    errors = [(k, d) for k, per in grid.items() for d, s in per.items() if s == "ERROR"]
    assert errors == [((3, 3), "CDC")]


def test_the_status_grid_follows_another_process_write_at_once(db: QADatabase, db_url: str) -> None:
    """The library keeps an experiment's grid while what it is made of is unchanged: a write
    by another process (another QADatabase) is seen by the next read, not minutes later."""
    assert db.status.grid(exp=3)[(3, 3)]["CDC"] == "ERROR"
    assert db.status.grid(exp=3, first=3, last=3) == {(3, 3): db.status.grid(exp=3)[(3, 3)]}
    other = QADatabase(db_url, author="admin")
    other.histograms.store_run(
        RunQA(3, 3, [MonitoringValue(CDC_VARIABLE, "CDC", 50.3, 0.5, "")], {})
    )
    assert db.status.grid(exp=3)[(3, 3)]["CDC"] == "GOOD"
    assert db.status.get(3, 3)["CDC"] == "GOOD"
    # a run registered since is in the next grid
    run9 = db.runs.get(3, 9)
    other.runs.import_runs([dataclasses.replace(run9, run=10)])
    assert (3, 10) in db.status.grid(exp=3)
    other.close()


def test_overriding_another_persons_flag_needs_confirmation(db: QADatabase) -> None:
    db.certification.set_flag(3, 1, "CDC", "BAD", user=CARL, comment="HV trip")
    with pytest.raises(ConfirmationNeeded) as info:
        db.certification.set_flag(3, 1, "CDC", "GOOD", user=MONA, comment="recovered")
    assert info.value.confirmations == [Confirmation(3, 1, "CDC", "overrides BAD set by carl")]
    assert str(info.value) == (
        "1 change needs an explicit confirmation (force=True); nothing was written:\n"
        "  run (3, 1) CDC: overrides BAD set by carl"
    )
    assert [e.flag for e in db.certification.flag_history(3, 1)] == ["BAD"]  # nothing written
    entry = db.certification.set_flag(
        3, 1, "CDC", "GOOD", user=MONA, comment="recovered", force=True
    )
    assert entry.confirmed == "overrides BAD set by carl"
    assert [(e.flag, e.author, e.confirmed) for e in db.certification.flag_history(3, 1)] == [
        ("BAD", "carl", ""),
        ("GOOD", "mona", "overrides BAD set by carl"),
    ]


def test_what_is_not_an_override(db: QADatabase) -> None:
    """Your own flag, the same flag again, and a NOTSET set by someone else need nothing."""
    db.certification.set_flag(3, 1, "CDC", "BAD", user=CARL, comment="HV trip")
    db.certification.set_flag(3, 1, "CDC", "RECOVERABLE", user=CARL, comment="his own")
    assert db.certification.confirmations([(3, 1, "CDC", "RECOVERABLE")], user=MONA) == []
    db.certification.set_flag(3, 1, "CDC", "RECOVERABLE", user=MONA, comment="same flag")
    db.certification.set_flag(3, 1, "ECL", "NOTSET", user=CARL, comment="not looked at")
    entry = db.certification.set_flag(3, 1, "ECL", "GOOD", user=MONA, comment="")
    assert entry.confirmed == ""
    # the newest author counts: mona set RECOVERABLE last, so carl now overrides mona
    assert db.certification.confirmations([(3, 1, "CDC", "GOOD")], user=CARL) == [
        Confirmation(3, 1, "CDC", "overrides RECOVERABLE set by mona")
    ]


def test_good_over_an_automatic_error_needs_confirmation(db: QADatabase) -> None:
    with pytest.raises(ConfirmationNeeded, match=r"run \(3, 3\) CDC: GOOD over automatic status"):
        db.certification.set_flag(3, 3, "CDC", "GOOD", user=CARL, comment="")
    assert db.certification.flag_history(3, 3) == []
    # BAD or RECOVERABLE agree with the automatic status: nothing to confirm
    assert db.certification.confirmations([(3, 3, "CDC", "BAD")], user=CARL) == []
    # GOOD where the automatic status is not ERROR: nothing to confirm
    assert db.certification.confirmations([(3, 2, "CDC", "GOOD")], user=CARL) == []
    entry = db.certification.set_flag(
        3, 3, "CDC", "GOOD", user=CARL, comment="a calibration artefact", force=True
    )
    assert entry.confirmed == "GOOD over automatic status ERROR"
    assert db.certification.flags(3, 3)["CDC"].confirmed == "GOOD over automatic status ERROR"


def test_one_change_with_two_reasons_records_both(db: QADatabase) -> None:
    db.certification.set_flag(3, 3, "CDC", "BAD", user=CARL, comment="hits missing")
    assert db.certification.confirmations([(3, 3, "CDC", "GOOD")], user=MONA) == [
        Confirmation(3, 3, "CDC", "overrides BAD set by carl"),
        Confirmation(3, 3, "CDC", "GOOD over automatic status ERROR"),
    ]
    with pytest.raises(QAError, match=r"say why: run \(3, 3\) CDC overrides BAD set by carl"):
        db.certification.set_flag(3, 3, "CDC", "GOOD", user=MONA, comment=" ", force=True)
    entry = db.certification.set_flag(3, 3, "CDC", "GOOD", user=MONA, comment="ok", force=True)
    assert entry.confirmed == "overrides BAD set by carl; GOOD over automatic status ERROR"


def test_bulk_flags_list_every_confirmation_and_are_all_or_nothing(db: QADatabase) -> None:
    """The `signoff flag 3 1-8 all GOOD` of a manager over an expert's flags and an ERROR."""
    db.certification.set_flag(3, 2, "ECL", "BAD", user=CARL, comment="hot crystals")
    db.certification.set_flag(3, 6, "PXD", "RECOVERABLE", user=PIA, comment="hot pixels")
    changes = [(3, r.run, d, "GOOD") for r in db.runs.select(exp=3, last=8) for d in r.detectors]
    expected = [
        Confirmation(3, 2, "ECL", "overrides BAD set by carl"),
        Confirmation(3, 3, "CDC", "GOOD over automatic status ERROR"),
        Confirmation(3, 6, "PXD", "overrides RECOVERABLE set by pia"),
    ]
    assert db.certification.confirmations(changes, user=MONA) == expected
    before = {run: db.certification.flag_history(3, run) for run in range(1, 9)}
    with pytest.raises(ConfirmationNeeded) as info:
        db.certification.set_flags(changes, user=MONA, comment="shift")
    assert info.value.confirmations == expected
    assert str(info.value).splitlines() == [
        "3 changes need an explicit confirmation (force=True); nothing was written:",
        "  run (3, 2) ECL: overrides BAD set by carl",
        "  run (3, 3) CDC: GOOD over automatic status ERROR",
        "  run (3, 6) PXD: overrides RECOVERABLE set by pia",
    ]
    # nothing of the batch was written, not even the changes that needed no confirmation
    assert {run: db.certification.flag_history(3, run) for run in range(1, 9)} == before
    entries = db.certification.set_flags(changes, user=MONA, comment="shift", force=True)
    assert len(entries) == len(changes) == 7 * 8 - 1  # run 4 has no PXD
    confirmed = {(e.run, e.detector): e.confirmed for e in entries if e.confirmed}
    assert confirmed == {(c.run, c.detector): c.reason for c in expected}
    assert all(e.flag == "GOOD" for e in entries)


def test_completing_a_run_with_notset_detectors_needs_confirmation(db: QADatabase) -> None:
    for det in ("CDC", "ECL"):
        db.certification.set_flag(3, 4, det, "GOOD", user=CARL, comment="")
    db.certification.set_flag(3, 4, "SVD", "NOTSET", user=MONA, comment="no expert on shift")
    db.certification.set_state(3, 4, "SIGNOFF", user=CARL)
    reason = "completes with SVD, TOP, ARICH, KLM NOTSET"  # run 4 did not include PXD
    assert db.certification.state_confirmations(3, 4, "COMPLETED", user=MONA) == [
        Confirmation(3, 4, None, reason)
    ]
    with pytest.raises(ConfirmationNeeded) as info:
        db.certification.set_state(3, 4, "COMPLETED", user=MONA, comment="shift over")
    assert str(info.value).endswith(f"nothing was written:\n  run (3, 4): {reason}")
    assert db.certification.state(3, 4).state == "SIGNOFF"
    done = db.certification.set_state(3, 4, "COMPLETED", user=MONA, comment="shift", force=True)
    assert (done.state, done.confirmed) == ("COMPLETED", reason)
    assert [(s.state, s.confirmed) for s in db.certification.state_history(3, 4)] == [
        ("SIGNOFF", ""),
        ("COMPLETED", reason),
    ]
    # reopening and the other moves need nothing
    assert db.certification.state_confirmations(3, 4, "OPEN", user=MONA) == []


def test_completing_a_fully_certified_run_needs_no_confirmation(db: QADatabase) -> None:
    """Every included detector flagged (EXCLUDED counts: it was looked at); PXD, which run 4
    did not include, needs no flag."""
    for det in db.runs.get(3, 4).detectors:
        flag = "EXCLUDED" if det == "KLM" else "GOOD"
        db.certification.set_flag(3, 4, det, flag, user=MONA, comment="klm off")
    db.certification.set_state(3, 4, "SIGNOFF", user=MONA)
    assert db.certification.state_confirmations(3, 4, "COMPLETED", user=MONA) == []
    assert db.certification.set_state(3, 4, "COMPLETED", user=MONA).confirmed == ""


def test_dry_runs_refuse_what_the_write_would(db: QADatabase) -> None:
    with pytest.raises(PermissionDenied, match="may not set the TOP flag"):
        db.certification.confirmations([(3, 1, "TOP", "GOOD")], user=CARL)
    with pytest.raises(QAError, match=r"PXD did not take data in run \(3, 4\)"):
        db.certification.confirmations([(3, 4, "PXD", "GOOD")], user=MONA)
    with pytest.raises(QAError, match="cannot move from OPEN to COMPLETED"):
        db.certification.state_confirmations(3, 1, "COMPLETED", user=MONA)
    db.certification.set_state(3, 1, "SIGNOFF", user=CARL)
    with pytest.raises(PermissionDenied, match=r"may not move run \(3, 1\) from SIGNOFF"):
        db.certification.state_confirmations(3, 1, "COMPLETED", user=CARL)
    # a refusal wins over a confirmation: forcing does not lift a permission
    db.certification.set_flag(3, 1, "PXD", "BAD", user=PIA, comment="hot")
    with pytest.raises(PermissionDenied):
        db.certification.set_flag(3, 1, "PXD", "GOOD", user=CARL, comment="", force=True)


def test_the_confirmed_record_is_append_only(db: QADatabase) -> None:
    db.certification.set_flag(3, 1, "CDC", "BAD", user=CARL, comment="HV trip")
    db.certification.set_flag(3, 1, "CDC", "GOOD", user=MONA, comment="ok", force=True)
    db.certification.set_state(3, 1, "SIGNOFF", user=MONA)
    db.certification.set_state(3, 1, "COMPLETED", user=MONA, force=True, comment="ok")
    for sql in (
        "UPDATE qa_flags SET confirmed = ''",
        "UPDATE qa_run_states SET confirmed = ''",
    ):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.engine.begin() as conn:
            conn.execute(sa.text(sql))
    assert db.certification.flags(3, 1)["CDC"].confirmed == "overrides BAD set by carl"
    assert db.certification.state(3, 1).confirmed.startswith("completes with PXD, SVD, TOP")


def test_confirmation_needed_crosses_processes() -> None:
    err = ConfirmationNeeded([Confirmation(3, 1, None, "completes with PXD NOTSET")])
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ConfirmationNeeded)
    assert isinstance(back, QAError)
    assert back.confirmations == err.confirmations
    assert str(back) == str(err)
    assert str(err.confirmations[0]) == "run (3, 1): completes with PXD NOTSET"


# -- good-run lists: versions, diff, warnings ---------------------------------------------------


def test_good_run_list_versions_diff_and_warnings(db: QADatabase) -> None:
    for run in (1, 2, 3):
        for det in db.runs.get(3, run).detectors:
            db.certification.set_flag(3, run, det, "GOOD", user=MONA, comment="ok", force=True)
    v1 = db.grls.make("cdc", "CDC == GOOD and run_type == physics", user=MONA)
    assert [r.run for r in v1] == [1, 2, 3]
    # run 3's CDC is GOOD over its automatic ERROR (confirmed): the list says so, with the
    # reason the flag history keeps
    (over,) = v1.warnings
    assert (over.exp, over.run, over.detectors) == (3, 3, ())
    ((det, reason),) = over.overrides
    entry = db.certification.flags(3, 3)["CDC"]
    assert det == "CDC"
    assert reason == (
        f"GOOD over automatic status ERROR, confirmed by mona at {entry.time:%Y-%m-%d %H:%M} "
        "UTC: 'ok'"
    )
    assert str(over) == f"run (3, 3): CDC {reason}"
    db.certification.set_flag(3, 2, "CDC", "BAD", user=CARL, comment="HV trip", force=True)
    db.certification.set_flag(3, 4, "CDC", "GOOD", user=CARL, comment="")
    db.certification.set_flag(3, 5, "CDC", "GOOD", user=CARL, comment="")
    v2 = db.grls.make("cdc", "CDC == GOOD and run_type == physics", user=MONA)
    assert [r.run for r in v2] == [1, 3, 4, 5]
    assert v2.warnings == v1.warnings
    # an expression that does not read the CDC flag vouches for other detectors only
    assert db.grls.make("ecl", "ECL == GOOD", user=MONA).warnings == ()
    d = db.grls.diff("cdc", 1, 2)
    assert [r.run for r in d.added] == [4, 5]
    assert [r.run for r in d.removed] == [2]
    assert d.lumi_change_pb == pytest.approx(104.0 + 105.0 - 102.0)
    assert not d.expression_changed
    assert [g.version for g in db.grls.versions("cdc")] == [1, 2]
    assert db.grls.get("cdc", 1) == v1
    # a list over whole runs warns of every uncertified detector of the runs it selected
    loose = db.grls.make("loose", "run_type == physics and run <= 4", user=MONA)
    assert [(w.run, w.detectors, [d for d, _ in w.overrides]) for w in loose.warnings] == [
        (3, (), ["CDC"]),  # GOOD over the automatic ERROR
        (4, ("SVD", "TOP", "ARICH", "ECL", "KLM"), []),  # no PXD in run 4; its CDC is GOOD
    ]
    # the warnings are those of the time the version was made, kept with it
    db.certification.set_flags(
        [(3, 4, d, "GOOD") for d in ("SVD", "TOP", "ARICH", "ECL", "KLM")],
        user=MONA,
        comment="",
    )
    assert db.grls.get("loose").warnings == loose.warnings
    assert [w.run for w in db.grls.get("loose").warnings] == [3, 4]
    assert db.grls.get("loose").warnings[0].overrides == over.overrides  # stored with it
    again = db.grls.make("loose", "run_type == physics and run <= 4", user=MONA)
    assert again.warnings == (over,)
    # a BAD set since (a newer flag) is no override any more
    db.certification.set_flag(3, 3, "CDC", "BAD", user=MONA, comment="after all")
    assert db.grls.make("loose", "run_type == physics and run <= 4", user=MONA).warnings == ()
    with pytest.raises(
        QAError, match=r"no version 9 of good-run list 'cdc' \(its versions: 1, 2\)"
    ):
        db.grls.diff("cdc", 1, 9)
    with pytest.raises(QAError, match="no good-run list 'nope'"):
        db.grls.get("nope", 1)
