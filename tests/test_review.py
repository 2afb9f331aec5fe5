"""Payload review (issue 18): a staging tag's summary from the job, validation and prompt
records, a payload against the previous one, histories, detector maps, the approval of a tag
(its rules, all-or-nothing, append-only) and its export as a zipped basf2 local database.

The world of most tests is real: the calibrations ``cdc-dedx-run-gain`` (CDC) and ``ecl-time``
(ECL) run on the committed sample against its truth, staged and validated, on SQLite and on
PostgreSQL (one database per backend for the module; each test works on its own tags)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from b2calib.calibration import JobStore, ValidationResult, Verdict, run_calibrations
from b2calib.calibration.declaration import get_calibration
from b2calib.calibration.validation import validate_job
from b2calib.conditions import ChannelStatus, ConditionsDB, Payload
from b2calib.conditions.eventdep import time_dependent
from b2calib.conditions.iov import IoV
from b2calib.detectors import detector_of
from b2calib.exceptions import ConditionsError, PermissionDenied, ReviewError
from b2calib.geometry import cdc, ecl, vxd
from b2calib.prompt.store import PromptStore
from b2calib.qa.store.users import User, Users
from b2calib.review import (
    approve,
    compare_payload,
    detector_map,
    export_zip,
    history,
    may_review,
    reject,
    reviews,
    tag_detectors,
    tag_summary,
)
from b2calib.review.summary import light_of, runs_text
from b2calib.review.tables import tag_reviews
from tests.conftest import BACKENDS, SAMPLE

OK, NED, FAILED, DEAD = (
    int(ChannelStatus.OK),
    int(ChannelStatus.NOT_ENOUGH_DATA),
    int(ChannelStatus.FAILED),
    int(ChannelStatus.DEAD),
)
PASSWORD = "review-pw"


@dataclass
class World:
    db: ConditionsDB
    url: str
    jobs: dict[str, str]  # calibration -> job key
    users: dict[str, User]


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """The sample's truth as ``sim_truth``; cdc-dedx-run-gain staged into ``s_cdc`` and
    ecl-time into ``s_ecl``, each validated against ``sim_truth``; users of every role."""
    tmp = tmp_path_factory.mktemp("review")
    server = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'b2calib.sqlite'}"
    else:
        server = request.getfixturevalue("postgres_server")
        name = server.create_database()
        url = server.url(name)
    db = ConditionsDB(url, author="calibrator")
    db.import_local(SAMPLE / "truth", "sim_truth")
    jobs = {}
    store = JobStore(db)
    for cal, tag in (("cdc-dedx-run-gain", "s_cdc"), ("ecl-time", "s_ecl")):
        report = run_calibrations(
            get_calibration(cal),
            SAMPLE,
            db=db,
            staging_tag=tag,
            input_tags=["sim_truth"],
            cache=tmp / "cache",
        )[cal]
        assert report.status == "OK", report
        job = store.job(report.job)
        assert job is not None
        store.record_validation(job, validate_job(db, job, ["sim_truth"]))
        jobs[cal] = job.key
    users = Users(db)
    made = {
        "boss": users.add("boss", PASSWORD, "manager"),
        "cdc": users.add("cdc", PASSWORD, "expert", ["CDC"]),
        "ecl": users.add("ecl", PASSWORD, "expert", ["ECL", "KLM"]),
        "eve": users.add("eve", PASSWORD, "viewer"),
    }
    yield World(db, url, jobs, made)
    db.close()
    if server is not None:
        server.drop_database(name)


def make_testing(db: ConditionsDB, source: str, name: str) -> str:
    """A clone of ``source`` moved to TESTING."""
    db.clone_tag(source, name)
    db.set_state(name, "TESTING")
    return name


def count_reviews(db: ConditionsDB) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(tag_reviews)).scalar())


# ------------------------------------------------------------------------------ detectors
def test_detector_of_a_calibration() -> None:
    assert detector_of("ecl-time") == "ECL"
    assert detector_of("cdc-dedx-run-gain") == "CDC"
    assert detector_of("arich-channel-mask") == "ARICH"
    assert detector_of("beamspot") is None  # a system
    assert detector_of("no-such-calibration") is None


def test_runs_text_and_lights() -> None:
    assert runs_text([(16, 1), (16, 2), (16, 3), (16, 5), (16, 7), (16, 8)]) == "16/1-3,5,7-8"
    assert runs_text([(12, 4), (14, 1)]) == "12/4; 14/1"
    assert light_of("c", "OK", "GOOD") == "green"
    assert light_of("c", "OK", "WARNING") == "amber"
    assert light_of("c", "OK", None) == "grey"
    assert light_of("c", "FALLBACK", "GOOD") == "red"
    assert light_of("c", "OK", "ERROR") == "red"
    assert light_of(None, None, None) == "grey"


# ------------------------------------------------------------------------------ summary
def test_summary_from_the_job_and_validation_records(world: World) -> None:
    db = world.db
    store = JobStore(db)
    s = tag_summary(db, "s_cdc")
    assert s.tag.name == "s_cdc"
    assert s.inputs == ("sim_truth",)
    assert s.detectors == frozenset({"CDC"})
    assert s.unowned == ()
    (row,) = s.rows
    job = store.job(world.jobs["cdc-dedx-run-gain"])
    assert job is not None
    record = store.validation(job)
    assert record is not None
    (entry,) = [d for d in record.summary if d["name"] == "CDCDedxRunGain"]
    iovs = db.iovs("s_cdc", "CDCDedxRunGain")
    assert row.name == "CDCDedxRunGain"
    assert row.revisions == tuple(e.payload.revision for e in iovs)
    assert row.iovs == tuple(str(e.iov) for e in iovs)
    assert (row.calibration, row.detector) == ("cdc-dedx-run-gain", "CDC")
    assert row.expert == get_calibration("cdc-dedx-run-gain").expert
    assert row.job_state == "completed"
    assert row.status == "OK"
    assert row.verdict == entry["verdict"]
    assert dict(row.channels) == entry["channels"]
    assert row.wall_time == pytest.approx(job.summary["wall_time"])
    assert row.runs == runs_text(job.summary["runs"])
    assert row.light == light_of("cdc-dedx-run-gain", "OK", entry["verdict"])
    assert s.light == row.light
    assert s.reviews == ()
    with pytest.raises(ReviewError, match="no global tag 'nope'"):
        tag_summary(db, "nope")


def test_summary_lights_follow_the_verdicts_and_the_prompt_outcomes(world: World) -> None:
    """A later validation's verdict, a prompt task's outcome and a payload uploaded by hand
    change the lights as the rules say; the worst row comes first."""
    db = world.db
    store = JobStore(db)
    job = store.job(world.jobs["ecl-time"])
    assert job is not None
    db.clone_tag("s_ecl", "s_ecl_lights")  # IoVs without job records: from provenance
    s = tag_summary(db, "s_ecl_lights")
    assert {r.calibration for r in s.rows} == {"ecl-time"}
    assert all(r.status is None and r.verdict is None and r.light == "grey" for r in s.rows)

    before = {r.name: r for r in tag_summary(db, "s_ecl").rows}
    assert set(before) == {"ECLCrystalTimeOffset", "ECLCrateTimeOffset"}
    store.record_validation(job, ValidationResult(Verdict.WARNING, "planted warning"))
    s = tag_summary(db, "s_ecl")
    assert [r.light for r in s.rows] == ["amber", "amber"]
    assert all(r.verdict == "WARNING" and r.reason == "planted warning" for r in s.rows)
    store.record_validation(job, ValidationResult(Verdict.ERROR, "planted error"))
    assert {r.light for r in tag_summary(db, "s_ecl").rows} == {"red"}
    store.record_validation(job, ValidationResult(Verdict.GOOD, "planted good"))
    assert {(r.light, r.reason) for r in tag_summary(db, "s_ecl").rows} == {("green", "")}

    # the prompt loop ran it: its outcome and wall time are the row's
    prompt = PromptStore(db)
    run = prompt.start(
        bucket=1, exp=12, runs=[1], staging_tag="s_ecl", input_tags=["sim_truth"], options={}
    )
    task = prompt.record(run.id, "ecl-time", "NOT_ENOUGH_DATA", "too few", job.key, job.created)
    s = tag_summary(db, "s_ecl")
    assert {(r.status, r.light) for r in s.rows} == {("NOT_ENOUGH_DATA", "red")}
    assert all("too few" in r.reason for r in s.rows)
    assert s.rows[0].wall_time == pytest.approx(task.wall_time)
    assert s.unstaged == ()
    # a calibration of the loop that staged nothing is listed, red
    failed = prompt.record(run.id, "cdc-t0", "FAILED", "no wire converged", "", job.created)
    s = tag_summary(db, "s_ecl")
    (u,) = s.unstaged
    assert (u.calibration, u.detector, u.status, u.reason, u.light) == (
        "cdc-t0",
        "CDC",
        "FAILED",
        "no wire converged",
        "red",
    )
    assert u.wall_time == pytest.approx(failed.wall_time)
    assert s.light == "red"
    # a job into the tag that did not complete (no prompt loop): FAILED with its state
    broken = store.open("0" * 64, "klm-time", "s_ecl", {"input_tags": ["sim_truth"]})
    store.set_state(broken, "failed", {"message": "cable delays diverged"})
    assert [
        (u.calibration, u.detector, u.status, u.reason) for u in tag_summary(db, "s_ecl").unstaged
    ] == [
        ("cdc-t0", "CDC", "FAILED", "no wire converged"),
        ("klm-time", "KLM", "FAILED", "its job is failed: cable delays diverged"),
    ]

    # a payload uploaded by hand into a copy: no calibration, grey; worst first
    db.clone_tag("s_ecl", "s_ecl_hand")
    hand = Payload("HandMade", keys={"c": np.arange(3)}, values={"value": np.ones(3)})
    db.upload_and_add("s_ecl_hand", [(hand, IoV(12, 1, 12, -1))])
    s = tag_summary(db, "s_ecl_hand")
    assert [r.light for r in s.rows] == ["grey", "grey", "grey"]
    made = s.row("HandMade")
    assert (made.calibration, made.detector, made.status, made.verdict) == (
        None,
        None,
        None,
        None,
    )
    assert dict(made.channels)["OK"] == 3
    assert s.unowned == ("HandMade",)
    assert s.light == "grey"
    with pytest.raises(ReviewError, match="s_ecl_hand has no payload 'Nope'"):
        s.row("Nope")


# ------------------------------------------------------------------------------ comparison
def crystals(
    value: np.ndarray, error: np.ndarray, status: np.ndarray | None = None, name: str = "Gains"
) -> Payload:
    return Payload(
        name,
        keys={"cellID": np.arange(1, len(value) + 1, dtype=np.int32)},
        values={"value": value},
        errors={"value": error},
        status=status,
    )


def test_comparison_numbers_are_the_hand_computed_ones(tmp_path: Path) -> None:
    """Differences and pulls against a chosen revision and a chosen tag, the planted outlier
    first among the outliers, the statuses with fallback folded in, the pull histogram."""
    db = ConditionsDB(tmp_path / "c.sqlite", author="t")
    rng = np.random.default_rng(3)
    n = 500
    old_v, old_e = 1.0 + 0.01 * rng.normal(size=n), np.full(n, 0.01)
    new_v, new_e = old_v + 0.01 * rng.normal(size=n), np.full(n, 0.02)
    new_v[123] += 1.0  # the planted outlier: pull ~ 45
    new_v[7] += 0.2  # a second one: pull ~ 9
    status = np.zeros(n, dtype=np.int8)
    status[10] = NED  # a fallback (finite value)
    status[11] = DEAD
    db.create_tag("prev")
    db.upload_and_add("prev", [(crystals(old_v, old_e), IoV(1, 0, -1, -1))])
    db.create_tag("stage")
    db.upload_and_add("stage", [(crystals(new_v, new_e, status), IoV(1, 1, 1, 10))])
    c = compare_payload(db, "Gains", 2, previous=1, tag="stage")
    assert (c.new.revision, c.previous and c.previous.revision) == (2, 1)
    assert c.previous_source == "revision 1"
    assert (c.iov, c.iovs, c.column, c.tag) == ("1,1,1,10", ("1,1,1,10",), "value", "stage")
    assert c.channel.tolist() == list(range(1, n + 1))
    np.testing.assert_allclose(c.diff, new_v - old_v)
    np.testing.assert_allclose(c.pull, (new_v - old_v) / np.sqrt(new_e**2 + old_e**2))
    np.testing.assert_allclose(c.new_error, new_e)
    assert c.status_new[10] == 6
    assert c.status_names[6] == "fallback"
    assert c.status_new[11] == DEAD
    assert c.status_counts() == {"OK": n - 2, "DEAD": 1, "fallback": 1}
    out = c.outliers()
    assert out["channel"][:2].tolist() == [124, 8]
    assert out["pull"][0] == pytest.approx((new_v[123] - old_v[123]) / np.sqrt(0.02**2 + 0.01**2))
    assert set(out["channel"].tolist()) == {
        int(i + 1) for i in np.flatnonzero(np.abs(c.pull) > 5) if i not in (10, 11)
    }
    assert len(c.outliers(threshold=20.0)["row"]) == 1
    counts, edges = c.pull_histogram(bins=20, range=(-10, 10))
    assert len(edges) == 21
    assert counts.sum() == n - 2
    assert counts[-1] >= 1  # the planted outlier is counted in the last bin
    # without errors: judged by the change thresholds, ranked by how far beyond them
    offsets = Payload(
        "Offsets", keys={"crate": np.arange(1, 5)}, values={"value": [0.001, 5.0, -6.0, 2.0]}
    )
    moved = Payload(
        "Offsets", keys={"crate": np.arange(1, 5)}, values={"value": [0.05, 8.0, -2.0, 2.1]}
    )
    db.upload_and_add("prev", [(offsets, IoV(1, 0, -1, -1))])
    db.upload_and_add("stage", [(moved, IoV(1, 1, -1, -1))])
    o = compare_payload(db, "Offsets", 2, tag="stage", previous="prev")
    assert np.isnan(o.pull).all()
    assert len(o.outliers()["row"]) == 0  # the default comparison judges pulls only
    by_change = o.outliers(max_abs_change=1.0)
    assert by_change["crate"].tolist() == [
        3,
        2,
    ]  # crate 1 moved by 0.049 only: rel 49 is no outlier
    np.testing.assert_allclose(by_change["score"], [4.0, 3.0])
    np.testing.assert_allclose(by_change["diff"], [4.0, 3.0])
    by_rel = o.outliers(max_rel_change=0.5)
    assert by_rel["crate"].tolist() == [1, 3, 2]
    np.testing.assert_allclose(by_rel["score"], [49.0 / 0.5, (4 / 6) / 0.5, 0.6 / 0.5])
    # against a tag: the payload valid there at the IoV's first run
    by_tag = compare_payload(db, "Gains", 2, previous="prev", tag="stage")
    assert by_tag.previous_source == "prev [1,0,-1,-1]"
    np.testing.assert_allclose(by_tag.pull, c.pull)
    # nothing to compare with: the first revision has no previous
    first = compare_payload(db, "Gains", 1, tag="prev")
    assert first.previous is None
    assert first.previous_source == ""
    assert np.isnan(first.old_value).all()
    assert (first.status_old == -1).all()
    # the errors name what is missing
    with pytest.raises(ReviewError, match="payload Gains has no revision 9"):
        compare_payload(db, "Gains", 9, tag="stage")
    with pytest.raises(ReviewError, match=r"payload Gains revision 2 in tag prev: .*no IoV"):
        compare_payload(db, "Gains", 2, tag="prev")
    with pytest.raises(ReviewError, match="no value column 'gain'"):
        compare_payload(db, "Gains", 2, tag="stage", column="gain")
    with pytest.raises(ReviewError, match="the previous: payload Gains has no revision 5"):
        compare_payload(db, "Gains", 2, tag="stage", previous=5)
    with pytest.raises(
        ReviewError,
        match=r"tag stage has no payload Gains at run 1,0 \(the first run of IoV 1,0,-1,-1\)",
    ):
        compare_payload(db, "Gains", 1, tag="prev", previous="stage")
    with pytest.raises(ReviewError, match="no IoV 1,1,1,11"):
        compare_payload(db, "Gains", 2, tag="stage", iov="1,1,1,11")
    with pytest.raises(ReviewError, match="no global tag 'nope'"):
        compare_payload(db, "Gains", 2, tag="nope")
    db.close()


def test_comparison_of_multi_iov_list_and_time_dependent_payloads(tmp_path: Path) -> None:
    db = ConditionsDB(tmp_path / "c.sqlite", author="t")
    n = 50
    base = np.ones(n)
    err = np.full(n, 0.01)
    shifted = base.copy()
    shifted[[3, 4, 5]] += 1.0
    db.create_tag("prev")
    db.upload_and_add("prev", [(crystals(base, err), IoV(1, 0, -1, -1))])
    db.create_tag("stage")
    # one revision in two IoVs; the other IoV's revision has the outliers
    db.upload_and_add(
        "stage",
        [
            (crystals(base + 1e-4, err), IoV(1, 1, 1, 5)),
            (crystals(shifted, err), IoV(1, 6, 1, 9)),
            (crystals(base + 1e-4, err), IoV(1, 10, 1, 12)),
        ],
    )
    two = compare_payload(db, "Gains", 2, tag="stage", previous="prev")
    assert two.iovs == ("1,1,1,5", "1,10,1,12")
    assert two.iov == "1,1,1,5"
    assert compare_payload(db, "Gains", 2, tag="stage", iov="1,10,1,12").iov == "1,10,1,12"
    bad = compare_payload(db, "Gains", 3, tag="stage", previous="prev")
    assert bad.outliers()["channel"].tolist() == [4, 5, 6]

    # a list payload: rows in both, then added, then removed
    def mask(rows: list[int]) -> Payload:
        return Payload(
            "HotList",
            keys={"channel": np.array(rows, dtype=np.int32)},
            values={"value": np.ones(len(rows))},
            status=np.full(len(rows), int(ChannelStatus.HOT), np.int8),
        )

    db.upload_and_add("prev", [(mask([1, 2, 3]), IoV(1, 0, -1, -1))])
    db.upload_and_add("stage", [(mask([2, 3, 9]), IoV(1, 1, -1, -1))])
    lst = compare_payload(db, "HotList", 2, tag="stage", previous="prev")
    assert lst.channel.tolist() == [2, 3, 9, 1]
    assert lst.status_old.tolist() == [4, 4, -1, 4]
    assert lst.status_new.tolist() == [4, 4, 4, -1]

    # a time-dependent payload: each interval against the previous constants at its start
    h = 3_600_000_000_000
    old = time_dependent("Spot", [0, 2 * h], [2 * h, 4 * h], values={"x": [1.0, 2.0]})
    old.errors["x"] = np.array([0.1, 0.1])
    new = time_dependent(
        "Spot", [h, 3 * h], [2 * h, 4 * h], values={"x": [1.5, 2.5]}, errors={"x": [0.1, 0.2]}
    )
    db.upload_and_add("prev", [(old, IoV(1, 0, -1, -1))])
    db.upload_and_add("stage", [(new, IoV(1, 1, -1, -1))])
    td = compare_payload(db, "Spot", 2, tag="stage", previous="prev")
    assert td.keys["t_start"].tolist() == [h, 3 * h]
    np.testing.assert_allclose(td.old_value, [1.0, 2.0])
    np.testing.assert_allclose(td.pull, [0.5 / np.hypot(0.1, 0.1), 0.5 / np.hypot(0.2, 0.1)])
    assert td.channel.tolist() == [0, 0]
    db.close()


def test_the_default_previous_is_what_the_validation_compared_with(world: World) -> None:
    db = world.db
    job = JobStore(db).job(world.jobs["ecl-time"])
    assert job is not None
    validated = validate_job(db, job, ["sim_truth"])
    (pv,) = [p for p in validated.payloads if p.name == "ECLCrystalTimeOffset"]
    for entry in db.iovs("s_ecl", "ECLCrystalTimeOffset"):
        c = compare_payload(db, entry.name, entry.payload.revision, tag="s_ecl")
        assert c.previous is not None
        assert f"{entry.name} rev {c.previous.revision} in sim_truth" in pv.previous
        start = entry.iov.start
        was = db.lookup(start[0], start[1], ["sim_truth"], names=[entry.name])[entry.name]
        assert c.previous == was.payload
        assert c.previous_source == f"sim_truth [{was.iov}]"
        truth = db.payload(was.payload)
        new = db.payload(entry.payload)
        assert c.channel.tolist() == new.keys["cellID"].tolist()
        np.testing.assert_allclose(c.new_value, new.values["value"])
        np.testing.assert_allclose(c.old_value, truth.values["value"])
        m = detector_map(c)
        assert m is not None
        assert m.detector == "ECL"
        np.testing.assert_array_equal(m.y, ecl.ring_of(c.channel))
        np.testing.assert_array_equal(m.x, ecl.iphi_of(c.channel))
        assert len(set(zip(m.x.tolist(), m.y.tolist(), strict=True))) == len(c)


# ------------------------------------------------------------------------------ history
def test_history_values_are_the_payloads(tmp_path: Path) -> None:
    db = ConditionsDB(tmp_path / "c.sqlite", author="t")
    rng = np.random.default_rng(5)
    db.create_tag("t")
    payloads = []
    for i in range(5):
        v = rng.normal(1.0, 0.1, size=30)
        status = np.zeros(30, dtype=np.int8)
        status[i] = FAILED
        p = crystals(v, np.full(30, 0.01), status)
        payloads.append(p)
        db.upload_and_add("t", [(p, IoV(2, 10 * i, 2, 10 * i + 9))])
    h = history(db, "t", "Gains", channels=[1, 7, 30, 99])
    assert h.first_run.tolist() == [0, 10, 20, 30, 40]
    assert h.last_run.tolist() == [9, 19, 29, 39, 49]
    assert h.time is None
    assert h.revision.tolist() == [1, 2, 3, 4, 5]
    assert h.values.shape == (5, 4)
    for i, p in enumerate(payloads):
        np.testing.assert_array_equal(h.values[i, :3], p.values["value"][[0, 6, 29]])
        ok = np.arange(30) != i
        assert h.mean[i] == pytest.approx(p.values["value"][ok].mean())
        assert h.spread[i] == pytest.approx(p.values["value"][ok].std())
        assert h.n_ok[i] == 29
    assert np.isnan(h.values[:, 3]).all()
    assert (h.status[:, 3] == -1).all()
    assert h.status[0, 0] == FAILED
    # time-dependent: one point per interval, at its start
    hour = 3_600_000_000_000
    spot = time_dependent(
        "Spot", [0, hour, 2 * hour], [hour, 2 * hour, 3 * hour], values={"x": [1.0, 2.0, 3.0]}
    )
    db.upload_and_add("t", [(spot, IoV(2, 0, -1, -1))])
    hs = history(db, "t", "Spot", channels=[0])
    assert hs.time is not None
    assert hs.time.tolist() == [0.0, 3600.0, 7200.0]
    assert hs.values[:, 0].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ReviewError, match="global tag t has no payload Nope"):
        history(db, "t", "Nope")
    with pytest.raises(ReviewError, match="no value column 'gain'"):
        history(db, "t", "Gains", column="gain")
    db.close()


# ------------------------------------------------------------------------------ maps
def test_detector_maps_by_key_columns() -> None:
    from b2calib.review.maps import map_of_keys

    wires = np.array([0, 159, 160, 14335])
    m = map_of_keys("CDCTimeZeros", {"wire": wires})
    assert m is not None
    assert m.detector == "CDC"
    assert m.y.tolist() == cdc.layer_of(wires).tolist() == [0, 0, 1, 55]
    assert m.x.tolist() == [0, 159, 0, 383]
    top = map_of_keys("TOPCalChannelT0", {"module": np.array([1, 16]), "pixel": np.array([1, 512])})
    assert top is not None
    assert (top.x.tolist(), top.y.tolist()) == ([1, 512], [1, 16])
    klm = map_of_keys("KLMStripEfficiency", {"channel": np.arange(1, 200)})
    assert klm is not None
    assert klm.shared
    arich = map_of_keys("ARICHChannelMask", {"module": np.array([1, 43]), "channel": [0, 143]})
    assert arich is not None
    assert (arich.x.tolist(), arich.y.tolist()) == ([0, 11], [0, 23])
    svd = map_of_keys(
        "SVDCoGTimeCalibrations",
        {"layer": [3, 3, 6], "ladder": [1, 1, 16], "sensor": [1, 2, 5], "side": [0, 1, 1]},
    )
    assert svd is not None
    # ladders of layers 3, 4, 5, 6 stacked (7 + 10 + 12 + 16 rows); sensor x side columns
    assert (svd.x.tolist(), svd.y.tolist()) == ([0, 3, 9], [0, 0, 44])
    assert svd.y_labels[44] == "L6.16"
    strips = map_of_keys(
        "SVDHotStripsCalibrations",
        {"layer": [4], "ladder": [2], "sensor": [1], "side": [1], "strip": [5]},
    )
    assert strips is not None
    assert (strips.x.tolist(), strips.y.tolist()) == ([768 + 5], [8])
    sensor = int(vxd.PXD_IDS[3])
    pixels = map_of_keys("PXDMaskedPixelPar", {"sensorID": [sensor], "u": [12], "v": [700]})
    assert pixels is not None
    assert (pixels.x.tolist(), pixels.y.tolist()) == ([700], [3 * vxd.PXD_NU + 12])
    occupancy = map_of_keys("PXDOccupancyInfoPar", {"sensorID": vxd.PXD_IDS})
    assert occupancy is not None
    assert occupancy.x.tolist() == list(range(vxd.N_PXD_SENSORS))
    assert map_of_keys("PXDOccupancyInfoPar", {"sensorID": [12345]}) is None  # no sensor
    assert map_of_keys("ECLCrateTimeOffset", {"crate": np.arange(1, 53)}) is None
    assert map_of_keys("ECLCrystalEnergy", {"cellID": np.array([0, 5])}) is None  # not a cell


# ------------------------------------------------------------------------------ approval
def test_approve_and_reject_record_reviews(world: World) -> None:
    db, u = world.db, world.users
    tag = make_testing(db, "s_cdc", "r_cdc")
    assert tag_detectors(db, tag) == frozenset({"CDC"})
    s = tag_summary(db, tag)
    assert may_review(u["cdc"], s) == (True, "")
    assert may_review(u["boss"], s) == (True, "")
    allowed, why = may_review(u["ecl"], s)
    assert not allowed
    assert "ecl" in why
    assert "r_cdc" in why
    assert "CDC" in why
    review = approve(db, tag, u["cdc"], "dE/dx gains look fine")
    assert (review.action, review.user, review.role, review.detectors) == (
        "approve",
        "cdc",
        "expert",
        ("CDC",),
    )
    assert (review.state_from, review.state_to) == ("TESTING", "VALIDATED")
    assert db.tag(tag).state == "VALIDATED"
    (stored,) = reviews(db, tag)
    assert stored.comment == "dE/dx gains look fine"
    assert stored.time == review.time.replace(microsecond=stored.time.microsecond)
    assert tag_summary(db, tag).reviews == (stored,)
    moved = [h for h in db.history(tag) if h.action == "state"][-1]
    assert moved.details["new"] == "VALIDATED"
    assert moved.details["user"] == "cdc"
    assert moved.details["comment"] == "dE/dx gains look fine"
    # back to TESTING, then the manager rejects it (a comment is required)
    db.set_state(tag, "OPEN")
    db.set_state(tag, "TESTING")
    with pytest.raises(ReviewError, match="say why"):
        reject(db, tag, u["boss"], "  ")
    back = reject(db, tag, u["boss"], "redo with more data")
    assert (back.state_to, db.tag(tag).state, back.detectors) == ("OPEN", "OPEN", ())
    assert [r.action for r in reviews(db, tag)] == ["approve", "reject"]


def test_refusals_name_the_user_the_tag_and_the_detectors(world: World) -> None:
    db, u = world.db, world.users
    tag = make_testing(db, "s_cdc", "r_refused")
    n = count_reviews(db)
    with pytest.raises(PermissionDenied, match=r"user ecl \(expert of ECL, KLM\).*r_refused.*CDC"):
        approve(db, tag, u["ecl"], "not mine")
    with pytest.raises(PermissionDenied, match=r"user eve is a viewer.*r_refused.*CDC"):
        approve(db, tag, u["eve"], "")
    # a tag of two detectors: only a manager
    db.merge("r_mixed", ["s_cdc", "s_ecl"])
    db.set_state("r_mixed", "TESTING")
    assert tag_detectors(db, "r_mixed") == frozenset({"CDC", "ECL"})
    with pytest.raises(PermissionDenied, match=r"user cdc .*r_mixed.*CDC, ECL.*several"):
        approve(db, "r_mixed", u["cdc"], "")
    # a payload uploaded by hand: only a manager
    db.clone_tag("s_cdc", "r_hand")
    hand = Payload("HandMade", keys={"c": np.arange(2)}, values={"value": np.ones(2)})
    db.upload_and_add("r_hand", [(hand, IoV(12, 1, 12, -1))])
    db.set_state("r_hand", "TESTING")
    with pytest.raises(PermissionDenied, match=r"r_hand.*payloads of no detector: HandMade"):
        approve(db, "r_hand", u["cdc"], "")
    # a stale user (demoted, or claiming another role): refused by the database's users
    with pytest.raises(PermissionDenied, match="not a current user"):
        approve(db, tag, User("eve", "manager"), "")
    # the wrong state: an OPEN tag is neither approved nor rejected
    db.clone_tag("s_cdc", "r_open")
    with pytest.raises(ConditionsError, match="r_open is OPEN, not TESTING"):
        approve(db, "r_open", u["boss"], "")
    with pytest.raises(ReviewError, match="no global tag 'nope'"):
        approve(db, "nope", u["boss"], "")
    assert count_reviews(db) == n
    assert db.tag(tag).state == db.tag("r_mixed").state == db.tag("r_hand").state == "TESTING"
    assert approve(db, "r_mixed", u["boss"], "both fine").state_to == "VALIDATED"
    assert count_reviews(db) == n + 1


def test_a_review_is_all_or_nothing(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review row failing to be written (no time) leaves the tag TESTING: the state's move
    is rolled back with it."""
    import b2calib.review.approval as approval

    db, u = world.db, world.users
    tag = make_testing(db, "s_cdc", "r_atomic")
    n = count_reviews(db)
    monkeypatch.setattr(approval, "now", lambda: None)
    with pytest.raises(ConditionsError):
        approve(db, tag, u["boss"], "")
    assert db.tag(tag).state == "TESTING"
    assert count_reviews(db) == n
    assert not [h for h in db.history(tag) if h.details.get("review")]


def test_reviews_are_append_only_against_raw_sql(world: World) -> None:
    db, u = world.db, world.users
    tag = make_testing(db, "s_cdc", "r_raw")
    approve(db, tag, u["boss"], "fine")
    n = count_reviews(db)
    t = tag_reviews
    for statement in (t.update().values(comment="forged"), t.delete()):
        with pytest.raises(ConditionsError, match="append-only"), db.write() as conn:
            conn.execute(statement)
    with db.read() as conn:
        first = conn.execute(sa.select(t).order_by(t.c.id).limit(1)).one()
    row: dict[str, Any] = dict(first._mapping)
    if db.engine.dialect.name == "sqlite":
        with pytest.raises(ConditionsError, match="append-only"), db.write() as conn:
            conn.execute(sa.text(
                "INSERT OR REPLACE INTO tag_reviews (id, tag, action, user, role, detectors, "
                "comment, created, state_from, state_to) VALUES (:id, :tag, :action, :user, "
                ":role, :detectors, 'forged', :created, :state_from, :state_to)"
            ), row)  # fmt: skip
    else:
        with pytest.raises(ConditionsError, match="protected"), db.write() as conn:
            conn.execute(sa.text("TRUNCATE tag_reviews"))
    assert count_reviews(db) == n
    assert reviews(db, tag)[0].comment == "fine"


def test_gt_approve_and_reject_on_the_command_line(world: World) -> None:
    from click.testing import CliRunner

    from b2calib.cli import cli

    db = world.db
    tag = make_testing(db, "s_cdc", "r_cli")
    env = {"B2CALIB_DB": world.url, "B2CALIB_PASSWORD": PASSWORD}
    runner = CliRunner(env=env)
    refused = runner.invoke(cli, ["gt", "approve", tag, "--user", "ecl"])
    assert refused.exit_code == 1
    assert "user ecl (expert of ECL, KLM) may not review tag r_cli" in refused.output
    done = runner.invoke(cli, ["gt", "approve", tag, "--user", "cdc", "--comment", "good"])
    assert done.exit_code == 0, done.output
    assert "r_cli: TESTING -> VALIDATED (approved by cdc, expert)" in done.output
    assert db.tag(tag).state == "VALIDATED"
    assert runner.invoke(cli, ["gt", "state", tag, "OPEN"]).exit_code == 0
    assert runner.invoke(cli, ["gt", "state", tag, "TESTING"]).exit_code == 0
    usage = runner.invoke(cli, ["gt", "reject", tag, "--user", "boss"])
    assert usage.exit_code == 2
    assert "--comment" in usage.output
    wrong = CliRunner(env={**env, "B2CALIB_PASSWORD": "bad"}).invoke(
        cli, ["gt", "reject", tag, "--user", "boss", "--comment", "x"]
    )
    assert wrong.exit_code == 1
    assert "wrong name or password" in wrong.output
    out = runner.invoke(cli, ["gt", "reject", tag, "--user", "boss", "--comment", "redo"])
    assert out.exit_code == 0
    assert "TESTING -> OPEN (rejected by boss, manager)" in out.output
    assert [r.action for r in reviews(db, tag)] == ["approve", "reject"]
    helptext = runner.invoke(cli, ["gt", "--help"]).output
    assert "approve" in helptext
    assert "reject" in helptext


# ------------------------------------------------------------------------------ export
def test_export_zip_is_the_tag_as_a_local_database(world: World, tmp_path: Path) -> None:
    db = world.db
    data = export_zip(db, "s_ecl")
    entries = db.iovs("s_ecl")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        lines = zf.read("database.txt").decode().split("\n")
        expected = {f"dbstore/{e.name} {e.payload.revision} {e.iov}" for e in entries}
        assert {line for line in lines if line} == expected
        files = {f"dbstore_{e.name}_rev_{e.payload.revision}.root": e.payload for e in entries}
        assert names == {"database.txt", *files}
        for filename, info in files.items():
            assert zf.read(filename) == db.payload_bytes(info)
        zf.extractall(tmp_path / "local")
    other = ConditionsDB(tmp_path / "other.sqlite", author="t")
    back = other.import_local(tmp_path / "local", "imported")
    assert sorted((e.name, str(e.iov), e.payload.checksum) for e in back) == sorted(
        (e.name, str(e.iov), e.payload.checksum) for e in entries
    )
    other.close()
    with pytest.raises(ReviewError, match="no global tag 'nope'"):
        export_zip(db, "nope")
    db.create_tag("r_empty")
    with pytest.raises(ReviewError, match="r_empty holds no payload"):
        export_zip(db, "r_empty")


# ------------------------------------------------------------------------------ drill-down
def test_a_compared_channel_opens_its_fit(world: World) -> None:
    """The channel ids of the comparison are those of the drill-down: the crate compared is
    the crate whose fit is shown, with the payload's value; a missing channel is a
    ReviewError naming it."""
    from b2calib.review import fit_view

    db = world.db
    entry = db.iovs("s_ecl", "ECLCrateTimeOffset")[0]
    c = compare_payload(db, entry.name, entry.payload.revision, tag="s_ecl")
    row = int(np.flatnonzero(c.status_new == OK)[0])
    view = fit_view(db, "s_ecl", entry.name, int(c.channel[row]), iov=c.iov)
    assert (view.calibration, view.payload, view.channel) == (
        "ecl-time",
        "ECLCrateTimeOffset",
        int(c.channel[row]),
    )
    assert view.value[0] == pytest.approx(c.new_value[row])
    with pytest.raises(ReviewError, match=r"ECLCrateTimeOffset .*no channel 999"):
        fit_view(db, "s_ecl", entry.name, 999, iov=c.iov)


def test_history_of_a_staged_payload(world: World) -> None:
    """The history over a staging tag's IoVs, on both backends: the payloads' values, and the
    mean and spread of their OK channels."""
    db = world.db
    entries = db.iovs("s_ecl", "ECLCrystalTimeOffset")
    h = history(db, "s_ecl", "ECLCrystalTimeOffset", channels=[1, 4242, 8736])
    assert h.revision.tolist() == [e.payload.revision for e in entries]
    assert h.first_run.tolist() == [e.iov.first_run for e in entries]
    for i, e in enumerate(entries):
        p = db.payload(e.payload)
        np.testing.assert_array_equal(h.values[i], p.values["value"][[0, 4241, 8735]])
        ok = (p.status == OK) & np.isfinite(p.values["value"])
        assert h.n_ok[i] == int(ok.sum())
        if ok.any():
            assert h.mean[i] == pytest.approx(p.values["value"][ok].mean())
