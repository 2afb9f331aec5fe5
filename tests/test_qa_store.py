"""The quality-assurance database: users, certification (append-only), run sign-off,
monitoring trends, histograms with references, automatic status and good-run lists; on the
embedded SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import hist
import numpy as np
import pytest
import sqlalchemy as sa

from b2calib.exceptions import PermissionDenied, QAError, RunNotFoundError
from b2calib.qa.monitoring import MonitoringValue, RunQA
from b2calib.qa.store import QADatabase, User, hash_password, verify_password
from b2calib.qa.store.status import STATUS_COLUMNS
from b2calib.runs import Run, RunRegistry

DETS = ("PXD", "SVD", "CDC", "TOP", "ARICH", "ECL", "KLM")


@pytest.fixture
def db(db_url: str) -> Iterator[QADatabase]:
    """A new database with 8 physics runs and 1 cosmic run of experiment 3, and four users."""
    qa = QADatabase(db_url, author="admin")
    qa.runs.import_runs(_runs())
    qa.users.add("mona", "m-secret", "manager")
    qa.users.add("carl", "c-secret", "expert", ["CDC", "ECL"])
    qa.users.add("vera", "v-secret", "viewer")
    qa.users.add("pia", "p-secret", "expert", ["PXD"])
    yield qa
    qa.close()


def _runs() -> list[Run]:
    out = [
        Run(
            exp=3,
            run=r,
            run_type="physics",
            beam_energy="4S" if r != 5 else "Continuum",
            start=1.7e9 + 3600 * r,
            stop=1.7e9 + 3600 * r + 1000 + 300 * r,
            lumi_pb=100.0 + r,
            l1_triggers=1000 * r,
            detectors=DETS if r != 4 else tuple(d for d in DETS if d != "PXD"),
            magnet_on=True,
            ecms_nominal_gev=10.58,
        )
        for r in range(1, 9)
    ]
    out.append(Run(3, 9, "cosmic", "No Beam", 1.8e9, 1.8e9 + 600, 0.0, 50, DETS, False, 0.0))
    return out


MONA = User("mona", "manager")
CARL = User("carl", "expert", ("CDC", "ECL"))
VERA = User("vera", "viewer")
PIA = User("pia", "expert", ("PXD",))


# -- users -----------------------------------------------------------------------------------


def test_passwords_are_salted_hashes_never_plain_text(db: QADatabase) -> None:
    a, b = hash_password("same"), hash_password("same")
    assert a != b
    assert a.startswith("scrypt$")
    assert "same" not in a
    assert verify_password("same", a)
    assert verify_password("same", b)
    assert not verify_password("Same", a)
    assert not verify_password("same", "garbage")
    with db.engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT name, password FROM qa_users")).all())
    assert "m-secret" not in str(stored)
    assert verify_password("m-secret", stored["mona"])


def test_authenticate(db: QADatabase) -> None:
    assert db.users.authenticate("carl", "c-secret") == CARL
    assert db.users.authenticate("carl", "m-secret") is None
    assert db.users.authenticate("nobody", "c-secret") is None
    assert db.users.all() == [CARL, MONA, PIA, VERA]
    db.users.set_password("carl", "new one")
    assert db.users.authenticate("carl", "c-secret") is None
    assert db.users.authenticate("carl", "new one") == CARL


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("mona", "x", "manager"), "exists already"),
        (("eve", "x", "admin"), "unknown role 'admin'"),
        (("eve", "x", "expert"), "needs the detectors"),
        (("eve", "x", "viewer", ["CDC"]), "only experts have detectors"),
        (("eve", "x", "expert", ["XYZ"]), "unknown detector 'XYZ'"),
        ((" eve", "x", "viewer"), "bad user name"),
        (("eve", "", "viewer"), "password must not be empty"),
    ],
)
def test_bad_users_are_refused(db: QADatabase, args: tuple, message: str) -> None:
    with pytest.raises((QAError, ValueError), match=message):
        db.users.add(*args)
    assert len(db.users.all()) == 4


def test_user_names_are_printable_and_fit_the_column(db: QADatabase) -> None:
    """Issue 13: names with a newline, a tab or 5000 characters were accepted. A name is at
    most 64 characters (the column holds 200) without control, format or line-separator
    characters; letters of any script and inner spaces are fine."""
    for bad in [
        "eve\nmallory",
        "eve\tmallory",
        "eve\rx",
        "eve\x00",
        "eve\x1b[31m",
        "eve\u200bx",  # zero-width space
        "eve\u2028x",  # line separator
        "eve\x85x",  # next line
        "e" * 65,
        "e" * 5000,
        "",
        "   ",
        "eve:x",
    ]:
        with pytest.raises(QAError, match=r"bad user name") as info:
            db.users.add(bad, "x", "viewer")
        assert "\n" not in str(info.value)
        assert len(str(info.value)) < 300
        assert db.users.authenticate(bad, "x") is None  # no database error on any backend
        with pytest.raises(QAError, match="no user") as info:
            db.users.get(bad)
        assert len(str(info.value)) < 300
        with pytest.raises(QAError, match="no user"):
            db.users.remove(bad)
        with pytest.raises(QAError, match="no user"):
            db.users.set_password(bad, "y")
    assert len(db.users.all()) == 4
    for good in ["e" * 64, "Zoë Łukasz", "ヤマダ", "o'brien-2"]:
        db.users.add(good, "pw", "viewer")
        assert db.users.authenticate(good, "pw") == User(good, "viewer")
    assert len(db.users.all()) == 8


# -- certification ---------------------------------------------------------------------------


def test_flags_keep_every_change(db: QADatabase) -> None:
    db.certification.set_flag(3, 2, "CDC", "BAD", user=CARL, comment="HV trip")
    db.certification.set_flag(3, 2, "CDC", "RECOVERABLE", user=CARL, comment="recalibrate")
    db.certification.set_flag(3, 2, "ECL", "GOOD", user=MONA, comment="shift")
    db.certification.set_flag(
        3, 2, "CDC", "GOOD", user=MONA, comment="  fixed by the new x-t  ", force=True
    )  # overrides carl's flag: confirmed
    history = db.certification.flag_history(3, 2, "CDC")
    assert [(e.flag, e.author, e.comment, e.confirmed) for e in history] == [
        ("BAD", "carl", "HV trip", ""),
        ("RECOVERABLE", "carl", "recalibrate", ""),  # his own flag: nothing to confirm
        ("GOOD", "mona", "fixed by the new x-t", "overrides RECOVERABLE set by carl"),
    ]
    assert all(a.time <= b.time for a, b in itertools.pairwise(history))
    assert len(db.certification.flag_history(3, 2)) == 4
    assert {d: e.flag for d, e in db.certification.flags(3, 2).items()} == {
        "CDC": "GOOD",
        "ECL": "GOOD",
    }
    grid = db.certification.flag_grid(exp=3)
    assert grid[(3, 2)]["CDC"] == "GOOD"
    assert grid[(3, 2)]["PXD"] == "NOTSET"
    assert "PXD" not in grid[(3, 4)]  # not included in run 4
    assert db.runs.get(3, 2).dq == {"CDC": "GOOD", "ECL": "GOOD"}


def test_history_is_append_only_in_the_database_itself(db: QADatabase) -> None:
    db.certification.set_flag(3, 1, "CDC", "BAD", user=CARL, comment="shift")
    db.certification.set_state(3, 1, "SIGNOFF", user=CARL)
    for sql in (
        "UPDATE qa_flags SET flag = 'GOOD'",
        "DELETE FROM qa_flags",
        "UPDATE qa_run_states SET state = 'COMPLETED'",
        "DELETE FROM qa_run_states",
    ):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.engine.begin() as conn:
            conn.execute(sa.text(sql))
    assert db.certification.flags(3, 1)["CDC"].flag == "BAD"
    assert db.certification.state(3, 1).state == "SIGNOFF"


def test_who_may_flag(db: QADatabase) -> None:
    with pytest.raises(PermissionDenied, match=r"vera \(viewer\) may not set the CDC flag"):
        db.certification.set_flag(3, 1, "CDC", "GOOD", user=VERA, comment="shift")
    with pytest.raises(PermissionDenied, match=r"carl \(expert of CDC, ECL\) may not set the TOP"):
        db.certification.set_flag(3, 1, "TOP", "GOOD", user=CARL, comment="shift")
    db.certification.set_flag(3, 1, "TOP", "GOOD", user=MONA, comment="shift")
    db.certification.set_flag(3, 1, "PXD", "GOOD", user=PIA, comment="shift")
    # a user who claims rights they no longer have (a stale session) writes nothing
    db.users.remove("pia")
    with pytest.raises(PermissionDenied, match="not a current user"):
        db.certification.set_flag(3, 1, "PXD", "BAD", user=PIA, comment="shift")
    with pytest.raises(PermissionDenied, match="not a current user"):
        db.certification.set_flag(3, 1, "CDC", "BAD", user=User("carl", "manager"), comment="shift")
    assert {d: e.flag for d, e in db.certification.flags(3, 1).items()} == {
        "TOP": "GOOD",
        "PXD": "GOOD",
    }


def test_bad_flag_requests_name_what_is_wrong(db: QADatabase) -> None:
    with pytest.raises(QAError, match="unknown flag 'FINE'"):
        db.certification.set_flag(3, 1, "CDC", "FINE", user=MONA, comment="shift")
    with pytest.raises(QAError, match="unknown detector 'BKLM'"):
        db.certification.set_flag(3, 1, "BKLM", "GOOD", user=MONA, comment="shift")
    with pytest.raises(RunNotFoundError, match=r"run \(3, 99\)"):
        db.certification.set_flag(3, 99, "CDC", "GOOD", user=MONA, comment="shift")
    assert db.certification.flag_history(3, 1) == []


def test_run_sign_off_workflow(db: QADatabase) -> None:
    assert db.certification.state(3, 1).state == "OPEN"
    with pytest.raises(PermissionDenied, match="vera"):
        db.certification.set_state(3, 1, "SIGNOFF", user=VERA)
    with pytest.raises(QAError, match="cannot move from OPEN to COMPLETED"):
        db.certification.set_state(3, 1, "COMPLETED", user=MONA)
    db.certification.set_state(3, 1, "SIGNOFF", user=CARL, comment="all flags set")
    with pytest.raises(PermissionDenied, match=r"may not move run \(3, 1\) from SIGNOFF to COMP"):
        db.certification.set_state(3, 1, "COMPLETED", user=CARL)
    with pytest.raises(QAError, match=r"say why: run \(3, 1\) completes with"):
        db.certification.set_state(3, 1, "COMPLETED", user=MONA, force=True)  # 7 NOTSET
    db.certification.set_state(3, 1, "COMPLETED", user=MONA, force=True, comment="x")
    with pytest.raises(PermissionDenied, match="COMPLETED: a manager must reopen it"):
        db.certification.set_flag(3, 1, "CDC", "BAD", user=MONA, comment="late")
    db.certification.set_state(3, 1, "OPEN", user=MONA, comment="reprocessing")
    db.certification.set_flag(3, 1, "CDC", "BAD", user=CARL, comment="late")
    assert [(s.state, s.author) for s in db.certification.state_history(3, 1)] == [
        ("SIGNOFF", "carl"),
        ("COMPLETED", "mona"),
        ("OPEN", "mona"),
    ]
    assert db.certification.states(exp=3)[(3, 1)] == "OPEN"
    assert db.certification.states(exp=3)[(3, 2)] == "OPEN"


def test_the_registry_feeds_calibration_filters(db: QADatabase) -> None:
    for det in DETS:
        db.certification.set_flag(3, 1, det, "GOOD", user=MONA, comment="shift")
        db.certification.set_flag(3, 2, det, "GOOD", user=MONA, comment="shift")
        db.certification.set_flag(
            3, 3, det, "GOOD" if det != "PXD" else "BAD", user=MONA, comment="shift"
        )
    db.certification.set_flag(3, 2, "TOP", "RECOVERABLE", user=MONA, comment="shift")
    reg = db.runs.registry(exp=3)
    assert isinstance(reg, RunRegistry)
    assert len(reg) == 9
    assert [r.run for r in reg.select(dq="Good")] == [1]
    assert [r.run for r in reg.select(dq="Good Or Recoverable")] == [1, 2]
    assert [r.run for r in reg.select(dq="Good For PXD")] == [1, 3]


def test_runs_import_updates_metadata_not_flags(db: QADatabase) -> None:
    db.certification.set_flag(3, 1, "CDC", "BAD", user=MONA, comment="shift")
    runs = _runs()
    changed = Run.from_dict({**runs[0].to_dict(), "lumi_pb": 55.0, "dq": {"CDC": "GOOD"}})
    assert db.runs.import_runs([changed]) == 1
    assert db.runs.get(3, 1).lumi_pb == 55.0
    assert db.runs.get(3, 1).dq == {"CDC": "BAD"}
    assert [r.run for r in db.runs.select(exp=3, first=3, last=5)] == [3, 4, 5]
    assert [r.run for r in db.runs.select(run_type="cosmic")] == [9]


# -- histograms, references, automatic status ------------------------------------------------


def _hist(rng: np.random.Generator, n: int, shift: float = 0.0) -> hist.Hist:
    h = hist.Hist.new.Reg(40, -4, 4, name="x").Int64()
    h.fill(rng.normal(shift, 1.0, n))
    return h


def _store(db: QADatabase, run: int, n: int = 5000, shift: float = 0.0, seed: int = 0) -> None:
    rng = np.random.default_rng(seed + run)
    db.histograms.store_run(
        RunQA(
            exp=3,
            run=run,
            variables=[
                MonitoringValue("test.cdc_hits", "CDC", 50.0 + 0.1 * rng.normal(), 0.1, "hits"),
                MonitoringValue("test.ecl_energy", "ECL", 1.0 + shift, 0.01, "GeV"),
            ],
            histograms={("CDC", "residual"): _hist(rng, n, shift), ("ECL", "e"): _hist(rng, n)},
        )
    )


def test_histograms_round_trip_exactly(db: QADatabase) -> None:
    rng = np.random.default_rng(1)
    h = _hist(rng, 1000)
    w = hist.Hist.new.Reg(10, 0, 1, name="y").Var([0, 1, 5], name="z").Weight()
    w.fill(rng.random(100), rng.random(100) * 5, weight=rng.random(100))
    db.histograms.store_run(RunQA(3, 1, [], {("CDC", "a"): h, ("ECL", "w"): w}))
    assert db.histograms.keys(3, 1) == [("CDC", "a"), ("ECL", "w")]
    assert db.histograms.get(3, 1, "CDC", "a") == h
    back = db.histograms.get(3, 1, "ECL", "w")
    np.testing.assert_array_equal(back.variances(flow=True), w.variances(flow=True))
    assert back == w
    with pytest.raises(QAError, match=r"QA histogram CDC/b of run \(3, 1\) is not stored"):
        db.histograms.get(3, 1, "CDC", "b")
    with pytest.raises(RunNotFoundError, match=r"run \(3, 77\)"):
        db.histograms.store_run(RunQA(3, 77, [], {("CDC", "a"): h}))


def test_evaluate_compares_with_the_references(db: QADatabase) -> None:
    for run in range(1, 9):
        _store(db, run, shift=0.4 if run == 6 else 0.0, n=50 if run == 7 else 5000)
    db.histograms.set_reference("CDC", "residual", 3, 1)
    db.histograms.set_reference("ECL", "e", 3, 1, method="ks", options="")
    with pytest.raises(QAError, match="unknown comparison method 'kl'"):
        db.histograms.set_reference("ECL", "e", 3, 1, method="kl")
    status = db.status.evaluate_all(exp=3)
    assert status[(3, 1)]["CDC"] == "GOOD"  # the reference itself
    # ... which is not compared with itself (statistic 0, p = 1 said nothing): it says so
    (ref,) = [c for c in db.histograms.comparisons(3, 1) if c.detector == "CDC"]
    assert ref.status == "GOOD"
    assert "run (3, 1) is the reference of this histogram" in ref.comparison.message
    assert np.isnan(ref.comparison.p_value)
    assert ref.comparison.entries == 5000
    assert status[(3, 6)]["CDC"] == "ERROR"
    assert status[(3, 6)]["ECL"] == "ERROR"
    assert status[(3, 7)]["CDC"] in ("TOO_FEW", "GOOD", "WARNING")  # variables still judged
    assert status[(3, 9)] == dict.fromkeys(STATUS_COLUMNS, "NONE")  # no evidence at all
    assert status[(3, 2)]["TOP"] == "NONE"
    (c6,) = [c for c in db.histograms.comparisons(3, 6) if c.detector == "CDC"]
    assert (c6.reference_exp, c6.reference_run, c6.comparison.method) == (3, 1, "chi2")
    assert c6.comparison.p_value < 1e-6
    assert c6.status == "ERROR"
    (c7,) = [c for c in db.histograms.comparisons(3, 7) if c.detector == "CDC"]
    assert c7.status == "TOO_FEW"
    (e2,) = [c for c in db.histograms.comparisons(3, 2) if c.detector == "ECL"]
    assert e2.comparison.method == "ks"
    goods = [status[(3, r)]["CDC"] for r in (2, 3, 4, 5, 8)]
    assert goods.count("GOOD") >= 4
    # storing the run again drops its comparisons (they described the old histograms)
    _store(db, 6)
    assert db.histograms.comparisons(3, 6) == []
    assert db.status.evaluate(3, 6)["CDC"] == "GOOD"


def test_trend_has_a_band_and_statuses(db: QADatabase) -> None:
    for run in range(1, 9):
        _store(db, run, shift=0.5 if run == 6 else 0.0)
    tr = db.runs.trend("test.ecl_energy", exp=3)
    assert list(tr.run) == list(range(1, 9))
    assert tr.unit == "GeV"
    assert tr.detector == "ECL"
    assert tr.status_of(3, 6) == "ERROR"
    assert tr.status_of(3, 2) == "GOOD"
    assert tr.status_of(3, 9) == "NONE"  # cosmic runs are not in the physics trend
    assert tr.centre == pytest.approx(1.0)
    assert tr.band[0] < 1.0 < tr.band[1]
    assert db.status.get(3, 6)["ECL"] == "ERROR"
    assert db.runs.variable_names() == ["test.cdc_hits", "test.ecl_energy"]
    assert [v.name for v in db.runs.variables(3, 6)] == ["test.cdc_hits", "test.ecl_energy"]
    with pytest.raises(QAError, match="no monitoring variable 'nope'"):
        db.runs.trend("nope")


# -- good-run lists --------------------------------------------------------------------------


def test_good_run_lists_are_versioned_and_match_the_flags(db: QADatabase) -> None:
    for run in range(1, 9):
        for det in db.runs.get(3, run).detectors:
            db.certification.set_flag(
                3,
                run,
                det,
                "BAD" if (run, det) == (3, "ECL") else "GOOD",
                user=MONA,
                comment="shift",
            )
    with pytest.raises(PermissionDenied, match="managers only"):
        db.grls.make("physics", "all == GOOD", user=CARL)
    v1 = db.grls.make("physics", "all == GOOD and run_type == physics", user=MONA)
    assert v1.version == 1
    assert v1.author == "mona"
    assert [r.run for r in v1.runs] == [1, 2, 4, 5, 6, 7, 8]
    assert v1.lumi_pb == pytest.approx(sum(100.0 + r for r in (1, 2, 4, 5, 6, 7, 8)))
    db.certification.set_flag(3, 3, "ECL", "GOOD", user=CARL, comment="recovered", force=True)
    v2 = db.grls.make("physics", "all == GOOD and run_type == physics", user=MONA)
    assert v2.version == 2
    assert [r.run for r in v2.runs] == list(range(1, 9))
    assert db.grls.get("physics") == v2
    assert db.grls.get("physics", 1) == v1
    assert [g.version for g in db.grls.versions("physics")] == [1, 2]
    assert db.grls.latest() == [v2]
    with pytest.raises(QAError, match="no version 7 of good-run list 'physics'"):
        db.grls.get("physics", 7)
    with pytest.raises(Exception, match="ECLX"):
        db.grls.make("bad", "ECLX == GOOD", user=MONA)
    assert db.grls.latest() == [v2]


def test_several_flags_are_all_or_nothing(db: QADatabase) -> None:
    entries = db.certification.set_flags(
        [(3, 1, "CDC", "GOOD"), (3, 2, "CDC", "GOOD"), (3, 4, "PXD", "EXCLUDED")],
        user=MONA,
        comment="shift summary",
    )
    assert [(e.run, e.detector, e.flag) for e in entries] == [
        (3, 1, "CDC", "GOOD")[1:],
        (3, 2, "CDC", "GOOD")[1:],
        (3, 4, "PXD", "EXCLUDED")[1:],
    ]
    db.certification.set_state(3, 2, "SIGNOFF", user=MONA)
    db.certification.set_state(3, 2, "COMPLETED", user=MONA, force=True, comment="all read")
    with pytest.raises(PermissionDenied, match=r"run \(3, 2\) is COMPLETED"):
        db.certification.set_flags(
            [(3, 1, "ECL", "GOOD"), (3, 2, "ECL", "GOOD")], user=MONA, comment="shift"
        )
    with pytest.raises(QAError, match=r"PXD did not take data in run \(3, 4\)"):
        db.certification.set_flags(
            [(3, 1, "ECL", "GOOD"), (3, 4, "PXD", "GOOD")], user=MONA, comment="shift"
        )
    with pytest.raises(PermissionDenied, match="may not set the TOP flag"):
        db.certification.set_flags(
            [(3, 1, "CDC", "BAD"), (3, 1, "TOP", "BAD")], user=CARL, comment="shift"
        )
    assert (
        len(db.certification.flag_history(3, 1)) == 1
    )  # nothing of the refused batches was written


def test_a_flag_other_than_good_says_why(db: QADatabase) -> None:
    db.certification.set_flag(3, 1, "CDC", "GOOD", user=CARL, comment="")
    for flag in ("BAD", "RECOVERABLE", "EXCLUDED", "NOTSET"):
        with pytest.raises(QAError, match=rf"say why CDC of run \(3, 1\) is {flag}"):
            db.certification.set_flag(3, 1, "CDC", flag, user=CARL, comment="  ")
    assert [e.flag for e in db.certification.flag_history(3, 1)] == ["GOOD"]
