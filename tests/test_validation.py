"""Validation of new payloads against the previous ones (issue 17): the default comparison,
its verdicts, and the validations kept with the jobs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from b2calib.calibration import (
    Diagnostics,
    JobStore,
    PayloadComparison,
    PayloadValidation,
    ValidationContext,
    ValidationResult,
    Verdict,
    declaration,
    run_calibrations,
    validate_job,
)
from b2calib.conditions import ChannelStatus, ConditionsDB, Payload
from b2calib.conditions.eventdep import time_dependent
from b2calib.conditions.iov import IoV
from b2calib.exceptions import CalibrationError, ConditionsError
from tests.example_calibration import PAYLOAD, offset_calibration, write_runs

OK, NED, FAILED, HOT, DEAD = (
    ChannelStatus.OK,
    ChannelStatus.NOT_ENOUGH_DATA,
    ChannelStatus.FAILED,
    ChannelStatus.HOT,
    ChannelStatus.DEAD,
)
IOV = IoV(1, 1, 1, 10)
CTX = ValidationContext("test")
N = 1000


def gains(
    value: np.ndarray | None = None,
    status: np.ndarray | None = None,
    error: float = 0.01,
    name: str = "TestGain",
) -> Payload:
    rng = np.random.default_rng(3)
    v = 1.0 + rng.normal(0, 0.001, N) if value is None else value
    return Payload(
        name,
        keys={"channel": np.arange(1, N + 1)},
        values={"gain": v},
        errors={"gain": np.full(N, error)},
        status=np.full(N, OK, np.int8) if status is None else status,
    )


def compare(new: Payload, old: Payload | None, check: PayloadComparison | None = None):
    check = check or PayloadComparison()
    previous = {new.name: [None if old is None else (IoV(1, 0, 1, 0), old)]}
    return check({new.name: [(IOV, new)]}, previous, CTX)


def test_identical_payloads_are_good() -> None:
    p = gains()
    result = compare(p, gains())
    assert result.verdict is Verdict.GOOD, result.reason
    (pv,) = result.payloads
    assert (pv.compared, pv.outliers, pv.newly_flagged) == (N, 0, 0)
    assert pv.max_abs_pull == 0.0
    table = result.diagnostics.tables["TestGain"]
    assert set(table) >= {"channel", "gain_new", "gain_old", "gain_diff", "gain_pull"}
    assert set(table) >= {"status_new", "status_old"}
    assert result.diagnostics.histograms["TestGain_gain_pull"].sum() == N


def test_a_planted_outlier_is_found_with_its_pull() -> None:
    old = gains()
    value = old.values["gain"].copy()
    value[41] += 0.1  # channel 42: 0.1 / sqrt(2) / 0.01 = 7.07 sigma
    result = compare(gains(value), old)
    assert result.verdict is Verdict.WARNING
    (pv,) = result.payloads
    assert pv.outliers == 1
    assert pv.max_abs_pull == pytest.approx(0.1 / np.sqrt(2) / 0.01)
    assert pv.worst[0]["keys"] == {"channel": 42}
    assert pv.worst[0]["pull"] == pytest.approx(7.071, abs=1e-3)
    assert "TestGain" in result.reason
    assert "channel=42" in result.reason
    assert "1 of 1000 channels" in result.reason
    # beyond the error fraction: ERROR
    value[:100] += 0.1
    assert compare(gains(value), old).verdict is Verdict.ERROR
    # a relative threshold for constants judged without errors
    no_err = Payload("TestGain", keys={"channel": np.arange(1, N + 1)}, values={"gain": value})
    old_no_err = Payload(
        "TestGain", keys={"channel": np.arange(1, N + 1)}, values={"gain": old.values["gain"]}
    )
    assert compare(no_err, old_no_err).verdict is Verdict.GOOD  # nothing to judge by
    judged = compare(no_err, old_no_err, PayloadComparison(max_rel_change=0.05))
    assert judged.verdict is Verdict.ERROR
    assert judged.payloads[0].outliers == 100


def test_every_channel_fallen_back_is_an_error() -> None:
    status = np.full(N, NED, np.int8)
    status[::2] = FAILED
    result = compare(gains(status=status), gains())
    assert result.verdict is Verdict.ERROR
    assert "no OK channel" in result.reason
    assert "1000 fell back" in result.reason
    assert result.payloads[0].channels["fallback"] == N


def test_newly_flagged_channels_by_fraction() -> None:
    old = gains()
    status = np.full(N, OK, np.int8)
    status[5] = DEAD  # 0.1 %: not beyond the warning fraction
    assert compare(gains(status=status), old).verdict is Verdict.GOOD
    status[10:20] = NED  # 1 % statistics-limited: WARNING
    result = compare(gains(status=status), old)
    assert result.verdict is Verdict.WARNING
    (pv,) = result.payloads
    assert (pv.newly_flagged, pv.newly_limited) == (11, 10)
    assert pv.newly_by_status == {"DEAD": 1, "NOT_ENOUGH_DATA": 10}
    assert "10 channels statistics-limited" in result.reason
    assert "newly flagged" not in result.reason  # 1 DEAD: 0.1 %, within the warning fraction
    status[100:200] = DEAD  # 10.1 % newly DEAD: ERROR
    result = compare(gains(status=status), old)
    assert result.verdict is Verdict.ERROR
    assert "101 channels newly flagged (101 DEAD; 10.1 % of 1000)" in result.reason
    # recovered: flagged before, OK now
    back = compare(old, gains(status=status))
    assert back.payloads[0].recovered == 111
    assert back.payloads[0].newly_flagged == 0


def test_statistics_limited_channels_are_a_warning_below_the_limited_fraction() -> None:
    """Issue 17's demo: 47 % of the KLM cable delays, 43 % of the PXD gains fell back for lack
    of statistics in the bucket: channels not calibrated, not channels gone bad (a WARNING with
    their own count); ERROR beyond ``error_limited_fraction``, and for channels newly FAILED,
    DEAD or HOT beyond ``error_new_flagged_fraction`` whatever the statistics-limited ones."""
    old = gains()
    status = np.full(N, OK, np.int8)
    status[:450] = NED  # 45 %, with a fallback value (the previous constants)
    result = compare(gains(status=status), old)
    assert result.verdict is Verdict.WARNING, result.reason
    assert result.payloads[0].channels["fallback"] == 450
    assert "450 channels statistics-limited in this data" in result.reason
    assert "45 % of 1000" in result.reason
    status[:600] = NED  # most channels not calibrated: ERROR
    assert compare(gains(status=status), old).verdict is Verdict.ERROR
    strict = PayloadComparison(error_limited_fraction=0.2)
    status[:] = OK
    status[:450] = NED
    assert compare(gains(status=status), old, strict).verdict is Verdict.ERROR
    status[450:520] = FAILED  # 7 % FAILED beside 45 % statistics-limited: ERROR
    result = compare(gains(status=status), old)
    assert result.verdict is Verdict.ERROR
    assert "70 channels newly flagged (70 FAILED; 7 % of 1000)" in result.reason
    with pytest.raises(CalibrationError, match="error_limited_fraction"):
        PayloadComparison(
            warn_new_flagged_fraction=0.3,
            error_new_flagged_fraction=0.5,
            error_limited_fraction=0.2,
        )


def test_statistics_limited_channels_are_judged_in_their_worst_iov() -> None:
    """Issue 17's demo: KLMTimeCableDelay had 72 % of its channels NOT_ENOUGH_DATA in IoV
    16,1,16,4 (2016 of them NaN, no fallback) and 22 % in the next: 47 % of both read as a
    WARNING; the IoV in use with most channels uncalibrated is an ERROR, and the channels
    without any value are counted."""
    old = gains()
    first = np.full(N, OK, np.int8)
    first[:700] = NED
    value = old.values["gain"].copy()
    value[:50] = np.nan  # no fallback
    second = np.full(N, OK, np.int8)
    second[:200] = NED
    result = PayloadComparison()(
        {
            "TestGain": [
                (IoV(1, 1, 1, 4), gains(value, first)),
                (IoV(1, 5, -1, -1), gains(status=second)),
            ]
        },
        {"TestGain": [(IoV(1, 0, -1, -1), old)] * 2},
        CTX,
    )
    assert result.verdict is Verdict.ERROR, result.reason
    assert (
        "900 channels statistics-limited in this data (newly NOT_ENOUGH_DATA: not calibrated, "
        "45 % of 2000, 700 in IoV 1,1,1,4 (70 % of 1000); 50 of them without a value, no "
        "fallback)" in result.reason
    )
    assert result.payloads[0].newly_limited_without_value == 50


def test_a_previous_payload_without_errors_or_status_is_said_so() -> None:
    """Issue 17's demo: "largest |pull| nan" when the previous payload (the simulator's truth)
    has no errors, and channels flagged DEAD now counted as newly flagged against a previous
    payload without status: the reason says both plainly."""
    old = Payload("TestGain", keys={"channel": np.arange(1, N + 1)}, values={"gain": np.ones(N)})
    value = np.ones(N)
    value[7] = 1.5
    status = np.full(N, OK, np.int8)
    status[20:40] = DEAD
    result = compare(gains(value, status), old, PayloadComparison(max_rel_change=0.1))
    assert result.verdict is Verdict.WARNING
    assert "nan" not in result.reason
    assert "no pull: the previous payload has no errors" in result.reason
    assert "20 channels newly flagged (20 DEAD; 2 % of 1000)" in result.reason
    assert "(the previous payload has no channel status)" in result.reason
    (pv,) = result.payloads
    assert pv.previous_without_status
    assert pv.pulls_missing == "the previous payload has no errors"
    assert math.isnan(pv.max_abs_pull)
    assert PayloadValidation.from_dict(pv.as_dict()).as_dict() == pv.as_dict()


def test_a_channel_outlying_in_several_iovs_is_named_once() -> None:
    """Issue 17's demo: KLMStripEfficiency's "worst" named channel 31905 three times (one per
    run-level IoV compared with the same previous payload): once, with its worst IoV and how
    many IoVs it is an outlier in."""
    old = gains()
    iovs = [IoV(1, r, 1, r) for r in (1, 2, 3)]
    news = []
    for shift in (0.20, 0.30, 0.25):
        v = old.values["gain"].copy()
        v[41] += shift  # channel 42 in all three
        v[99] += 0.1 if shift == 0.30 else 0.0  # channel 100 in IoV 1,2 only
        news.append(gains(v))
    check = PayloadComparison()
    result = check(
        {"TestGain": list(zip(iovs, news, strict=True))},
        {"TestGain": [(IoV(1, 0, 1, 0), old)] * 3},
        CTX,
    )
    (pv,) = result.payloads
    assert pv.outliers == 4
    assert [w["keys"] for w in pv.worst] == [{"channel": 42}, {"channel": 100}]
    assert (pv.worst[0]["iov"], pv.worst[0]["n_iovs"]) == ("1,2,1,2", 3)
    assert result.reason.count("channel=42") == 1
    assert "(IoV 1,2,1,2; an outlier in 3 IoVs)" in result.reason


def test_channels_gone_bad_in_one_iov_are_judged_in_that_iov() -> None:
    """Issue 17's demo: ARICHChannelMask's 1014 channels newly DEAD in IoV 16,8,-1,-1 (1.7 % of
    its channels, beyond the 1 % warning fraction) were diluted by the IoV before (0.86 % of
    both) and not reported at all."""
    old = gains()
    status = np.full(N, OK, np.int8)
    status[:15] = DEAD  # 1.5 % of the second IoV, 0.75 % of both
    check = PayloadComparison(warn_new_flagged_fraction=0.01, error_new_flagged_fraction=0.1)
    iovs = [IoV(1, 1, 1, 7), IoV(1, 8, -1, -1)]
    result = check(
        {"TestGain": [(iovs[0], gains()), (iovs[1], gains(status=status))]},
        {"TestGain": [(IoV(1, 0, -1, -1), old)] * 2},
        CTX,
    )
    assert result.verdict is Verdict.WARNING, result.reason
    assert (
        "15 channels newly flagged (15 DEAD; 0.75 % of 2000, 15 in IoV 1,8,-1,-1 (1.5 % of 1000))"
        in (result.reason)
    )


def test_an_intermediate_payload_without_ok_channel_is_a_warning() -> None:
    """Issue 17's demo: ECLCrystalEnergyGammaGamma / MuMu (one method's constants, combined by
    the calibration into ECLCrystalEnergy) had no OK channel at the demo's statistics and no
    previous payload: an ERROR although the combined payload is what physics uses."""
    none_ok = gains(status=np.full(N, NED, np.int8), name="TestGainMethod")
    combined = gains()
    check = PayloadComparison(per_payload={"TestGainMethod": PayloadComparison(intermediate=True)})
    result = check(
        {"TestGain": [(IOV, combined)], "TestGainMethod": [(IOV, none_ok)]},
        {"TestGain": [(IoV(1, 0, 1, 0), gains())]},
        CTX,
    )
    assert result.verdict is Verdict.WARNING, result.reason
    assert "TestGainMethod: intermediate payload with no OK channel" in result.reason
    assert "no previous payload to compare with" in result.reason  # reported, not judged
    assert compare(none_ok, None).verdict is Verdict.ERROR  # not declared intermediate


def pixels(where: list[int]) -> Payload:
    a = np.asarray(where)
    return Payload(
        "PXDMaskedPixelPar",
        keys={
            "sensorID": np.full(len(a), 8480, np.int32),
            "u": (a // 768).astype(np.int16),
            "v": (a % 768).astype(np.int16),
        },
        values={"value": np.full(len(a), 0.01)},
        errors={"value": np.full(len(a), 0.001)},
        status=np.full(len(a), HOT, np.int8),
    )


def test_a_mask_list_with_rows_added_and_removed() -> None:
    old = pixels(list(range(100)))
    new = pixels([*range(3, 100), 5000, 6000])
    result = compare(new, old)
    (pv,) = result.payloads
    assert (pv.added, pv.removed) == (2, 3)
    assert pv.newly_flagged == 2
    assert result.verdict is Verdict.WARNING  # 2 of 99 listed are new: beyond 0.1 %
    assert "2 rows added to the list" in result.reason
    assert "3 rows removed from the list" in result.reason
    table = result.diagnostics.tables["PXDMaskedPixelPar"]
    assert sorted(table["change"].tolist()).count(1) == 2
    assert sorted(table["change"].tolist()).count(-1) == 3
    # a list is masks, not failures
    assert pv.channels["masked"] == 99
    loose = PayloadComparison(warn_new_flagged_fraction=0.05, error_new_flagged_fraction=0.5)
    assert compare(new, old, loose).verdict is Verdict.GOOD


HOUR = 3_600_000_000_000


def spots(t0: list[int], x: list[float], status: list[int] | None = None) -> Payload:
    n = len(t0)
    return time_dependent(
        "CollisionInvariantMass",
        t0,
        [t + HOUR for t in t0],
        values={"mass": np.asarray(x), "spread": np.full(n, 5.4e-3)},
        errors={"mass": np.full(n, 1e-4)},
        status=None if status is None else np.asarray(status, np.int8),
    )


def test_a_time_dependent_payload_interval_by_interval() -> None:
    """Each new interval against the previous payload at its start time: the previous
    bucket's last interval for intervals after it."""
    old = spots([0, HOUR, 2 * HOUR], [10.570, 10.579, 10.580])
    new = spots([3 * HOUR, 4 * HOUR, 5 * HOUR], [10.5801, 10.5802, 10.590])
    result = compare(new, old)
    (pv,) = result.payloads
    assert pv.compared == 3
    assert pv.outliers == 1  # the third interval, 10 MeV away: 70 sigma
    assert pv.worst[0]["keys"]["t_start"] == 5 * HOUR
    assert pv.worst[0]["old"] == pytest.approx(10.580)
    assert result.verdict is Verdict.ERROR  # 1 of 3 intervals
    table = result.diagnostics.tables["CollisionInvariantMass"]
    assert table["t_start"].tolist() == [3 * HOUR, 4 * HOUR, 5 * HOUR]
    assert table["mass_old"].tolist() == pytest.approx([10.580] * 3)
    # within the previous payload's time range: the interval holding each start
    inside = compare(spots([HOUR // 2, 3 * HOUR // 2], [10.570, 10.579]), old)
    assert inside.payloads[0].outliers == 0
    assert inside.diagnostics.tables["CollisionInvariantMass"]["mass_old"].tolist() == (
        pytest.approx([10.570, 10.579])
    )
    # a fallen-back interval (a neighbour's value, flagged) counts as fallback, not compared
    fb = compare(spots([3 * HOUR, 4 * HOUR], [10.5801, 10.5801], [OK, NED]), old)
    assert fb.payloads[0].channels["fallback"] == 1
    assert fb.payloads[0].compared == 1


def test_a_later_previous_payload_is_compared_with_the_intervals_it_overlaps_only() -> None:
    """A new IoV of two runs whose intervals cover the first run only (the second a cosmic
    run): the second run's previous constants are not compared with the first run's data (the
    demo's BeamSpot turned WARNING so); a new interval across both runs is compared with
    each run's constants from where they start."""
    run1 = spots([0, HOUR], [10.570, 10.571])
    run2 = spots([5 * HOUR], [10.590])  # 20 MeV away
    later = {"CollisionInvariantMass": [[(IoV(1, 2, 1, 2), run2, "rev 2")]]}
    check = PayloadComparison(columns=("mass",), max_pull=None, max_abs_change=0.0015)
    inside = spots([0, HOUR], [10.5701, 10.5711])
    result = check(
        {"CollisionInvariantMass": [(IoV(1, 1, 1, 2), inside)]},
        {"CollisionInvariantMass": [(IoV(1, 1, 1, 1), run1)]},
        ValidationContext("test", later=later),
    )
    assert result.verdict is Verdict.GOOD, result.reason
    assert result.payloads[0].compared == 2
    across = time_dependent(
        "CollisionInvariantMass",
        [0],
        [6 * HOUR],
        values={"mass": np.array([10.5705])},
        errors={"mass": np.array([1e-4])},
    )
    result = check(
        {"CollisionInvariantMass": [(IoV(1, 1, 1, 2), across)]},
        {"CollisionInvariantMass": [(IoV(1, 1, 1, 1), run1)]},
        ValidationContext("test", later=later),
    )
    (pv,) = result.payloads
    assert (pv.compared, pv.outliers) == (2, 1)
    assert pv.worst[0]["old"] == pytest.approx(10.590)
    assert "IoV 1,1,1,2 spans 1 change of the previous constants (from run 1,2)" in result.reason


def test_no_previous_payload_is_a_warning() -> None:
    result = compare(gains(), None)
    assert result.verdict is Verdict.WARNING
    assert "no previous payload to compare with for IoV 1,1,1,10" in result.reason


def test_thresholds_are_checked() -> None:
    with pytest.raises(CalibrationError, match="fraction"):
        PayloadComparison(error_outlier_fraction=2.0)
    with pytest.raises(CalibrationError, match="max_pull must be positive"):
        PayloadComparison(max_pull=0.0)
    with pytest.raises(CalibrationError, match="are not value columns of the new payload"):
        compare(gains(), gains(), PayloadComparison(columns=("nope",)))


# ---------------------------------------------------------------- jobs and their validations
@pytest.fixture
def data(tmp_path: Path) -> Path:
    truth = {(1, r): 1.0 for r in range(1, 5)}
    write_runs(tmp_path / "data", truth, dict.fromkeys(truth, 1000))
    return tmp_path / "data"


def previous_offset(db: ConditionsDB, value: float, error: float) -> None:
    db.create_tag("previous")
    payload = Payload(
        PAYLOAD, values={"offset": np.array([value])}, errors={"offset": np.array([error])}
    )
    db.upload_and_add("previous", [(payload, IoV(1, 0, -1, -1))])


def test_validate_job_and_record_round_trip(
    db_url: str, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """validate_job on a completed job, its record read back as stored (the verdict and the
    diagnostics the dashboard reads), append-only, on both backends (BACKENDS)."""
    db = ConditionsDB(db_url)
    previous_offset(db, 1.0, 0.05)
    cal = offset_calibration(name="test-offset-valid")
    monkeypatch.setitem(declaration._REGISTRY, cal.name, cal)
    report = run_calibrations(
        cal, data, db=db, staging_tag="staging", input_tags=["previous"], cache=tmp_path / "c"
    )[cal.name]
    assert report.status == "OK", report
    store = JobStore(db)
    job = store.job(report.job)
    assert job is not None
    assert store.validation(job) is None
    result = validate_job(db, job, ["previous"])
    assert result.verdict is Verdict.GOOD, result.reason
    (pv,) = result.payloads
    assert pv.previous == [f"{PAYLOAD} rev 1 in previous"]
    assert pv.compared == 1
    store.record_validation(job, result)
    record = store.validation(job)
    assert record is not None
    assert record.verdict is Verdict.GOOD
    assert record.reason == result.reason
    assert record.summary == result.summary()
    blob = store.diagnostics_of_validation(job)
    assert blob is not None
    diag = Diagnostics.from_bytes(blob)
    assert diag.tables[PAYLOAD]["offset_new"].tolist() == pytest.approx(
        [db.payload(report.staged[0].payload).value("offset")[0]]
    )
    # validated again (a planted verdict): the latest wins, the earlier stays
    store.record_validation(job, ValidationResult(Verdict.ERROR, "by hand"))
    latest = store.validation(job)
    assert latest is not None
    assert (latest.verdict, latest.reason) == (Verdict.ERROR, "by hand")
    assert latest.id > record.id
    assert store.diagnostics_of_validation(job) is None
    # append-only: the database refuses to change or delete a validation
    import sqlalchemy as sa

    from b2calib.calibration.jobs import calibration_validations as v

    for statement in (v.update().values(verdict="GOOD"), v.delete()):
        with pytest.raises(ConditionsError, match="append-only"), db.write() as conn:
            conn.execute(statement)
    if db.engine.dialect.name == "postgresql":
        with pytest.raises(ConditionsError, match="protected"), db.write() as conn:
            conn.execute(sa.text("TRUNCATE calibration_validations"))
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(v)).scalar() == 2
    # the staging tag is not a previous tag; a job not completed is not validated
    with pytest.raises(CalibrationError, match="staging tag staging"):
        validate_job(db, job, ["staging"])
    db.close()


def test_validate_job_against_a_shifted_previous(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A previous offset 1 away (errors ~0.03 each): the new payload is an outlier, ERROR."""
    db = ConditionsDB(tmp_path / "db.sqlite")
    previous_offset(db, 2.0, 0.001)
    cal = offset_calibration(name="test-offset-shifted")
    monkeypatch.setitem(declaration._REGISTRY, cal.name, cal)
    report = run_calibrations(
        cal, data, db=db, staging_tag="staging", input_tags=["previous"], cache=tmp_path / "c"
    )[cal.name]
    job = JobStore(db).job(report.job)
    assert job is not None
    result = validate_job(db, job, ["previous"])
    assert result.verdict is Verdict.ERROR
    assert result.payloads[0].outliers == 1
    assert "TestOffset" in result.reason
    # a declaration not registered is given; another calibration's is refused
    given = validate_job(db, job, ["previous"], calibration=cal)
    assert given.verdict is Verdict.ERROR
    with pytest.raises(CalibrationError, match="is of test-offset-shifted, not of other"):
        validate_job(db, job, ["previous"], calibration=offset_calibration(name="other"))
    # no previous tag: WARNING, said so
    none = validate_job(db, job, [])
    assert none.verdict is Verdict.WARNING
    assert "no previous payload" in none.reason


def test_a_new_iov_spanning_a_change_of_the_previous_constants_is_compared_with_each(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17's demo: ECLCrateTimeOffset's one new IoV 16,1,16,12 (crate 17: 5.75 ns) was
    compared with the truth of runs 1-6 only (3.83 ns), not with that of runs 7-12 (6.83 ns,
    the crate replaced at run 7): a previous payload starting inside a new IoV is compared too,
    and the reason says the IoV spans a change."""
    db = ConditionsDB(tmp_path / "db.sqlite")
    db.create_tag("previous")
    ones = [
        (
            Payload(
                PAYLOAD, values={"offset": np.array([v])}, errors={"offset": np.array([0.001])}
            ),
            i,
        )
        for v, i in ((1.0, IoV(1, 0, 1, 2)), (2.0, IoV(1, 3, -1, -1)))
    ]
    db.upload_and_add("previous", ones)
    cal = offset_calibration(name="test-offset-spanning")
    monkeypatch.setitem(declaration._REGISTRY, cal.name, cal)
    report = run_calibrations(
        cal, data, db=db, staging_tag="staging", input_tags=["previous"], cache=tmp_path / "c"
    )[cal.name]
    job = JobStore(db).job(report.job)
    assert job is not None
    assert [iov for _, _, iov in job.summary["staged"]] == ["1,1,1,4"]
    result = validate_job(db, job, ["previous"])
    (pv,) = result.payloads
    assert pv.outliers == 1  # against the offset 2.0 of runs 3 on, not against 1.0
    assert result.verdict is not Verdict.GOOD
    assert pv.previous == [f"{PAYLOAD} rev 1 in previous"]
    assert (
        "IoV 1,1,1,4 spans 1 change of the previous constants (from run 1,3): compared with each"
        in result.reason
    )
    assert pv.worst[0]["old"] == 2.0
    assert pv.worst[0]["previous"] == f"{PAYLOAD} rev 2 in previous"


# ------------------------------------------------- every detector's thresholds on the truth
TRUTH: Any = None


def truth(name: str, run: int) -> tuple[IoV, Payload] | None:
    """The simulator's true payload ``name`` of the sample bucket's run ``run``."""
    from b2calib.conditions import LocalDatabase
    from tests.conftest import SAMPLE

    global TRUTH
    if TRUTH is None:
        TRUTH = LocalDatabase(SAMPLE / "truth")
    found = [e for e in TRUTH.entries() if e.name == name and e.iov.contains(12, run)]
    return (found[-1].iov, TRUTH.read(found[-1])) if found else None


#: What each calibration's validator says of the sample bucket's truth of run 12 against run 1:
#: the hardware interventions of run 7 (b2calib.sim.conditions.INTERVENTIONS) are found.
INTERVENTIONS = {
    "cdc-t0": (Verdict.WARNING, "192 of 14336 channels"),  # boards 120-123: T0 +2.5 ns
    "ecl-time": (Verdict.WARNING, "crate=17"),  # crate 17 +3 ns
    "ecms": (Verdict.WARNING, "mass 10.5788 -> 10.5764"),  # the HER energy
    "klm-strip-efficiency": (Verdict.WARNING, "96 of 38640 channels"),  # HV trip: x0.6
    "svd-time": (Verdict.ERROR, "344 of 344 channels"),  # every side's latency
    "top-module-t0": (Verdict.WARNING, "module=5"),  # firmware: +0.4 ns
}


def test_each_calibration_validates_the_truth() -> None:
    """Each registered calibration's validator on real payload schemas: identical payloads
    GOOD; run 12 against run 1 finds exactly the documented interventions."""
    from b2calib.calibration import calibrations

    checked = 0
    for name, cal in calibrations().items():
        assert cal.validation is not None
        new: dict[str, list[tuple[IoV, Payload]]] = {}
        old: dict[str, list[tuple[IoV, Payload] | None]] = {}
        for payload in cal.payloads:
            a, b = truth(payload, 12), truth(payload, 1)
            if a is not None and b is not None:
                new[payload], old[payload] = [a], [b]
        if not new:
            continue
        checked += 1
        same = cal.validation(new, {k: [v[0]] for k, v in new.items()}, ValidationContext(name))
        assert same.verdict is Verdict.GOOD, (name, same.reason)
        result = cal.validation(new, old, ValidationContext(name))
        verdict, text = INTERVENTIONS.get(name, (Verdict.GOOD, "within thresholds"))
        assert result.verdict is verdict, (name, result.reason)
        assert text in result.reason, (name, result.reason)
    assert checked >= 20
