"""Planted outliers: the simulator's ``previous/`` database, and the validation finding them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from b2calib.calibration import run_calibrations
from b2calib.calibration.algorithm import Diagnostics
from b2calib.calibration.jobs import JobStore
from b2calib.conditions import ConditionsDB
from b2calib.conditions.localdb import LocalDatabase
from b2calib.conditions.payload import Payload
from b2calib.exceptions import ConfigError
from b2calib.qa.store import QADatabase
from b2calib.sim import SimConfig, conditions_for_run, generate_runs, simulate, truth_payloads
from b2calib.sim.planted import check_planted, plant, planted_channels
from tests.conftest import REPO
from tests.review_fixture import (
    CALIBRATIONS,
    PLANTED,
    PREVIOUS_TAG,
    REVIEW_USERS,
    STAGING_TAG,
    prepare_review_database,
)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"payload": "ECLCrateTimeOffset", "channel": 28}, "missing ['shift']"),
        ({"payload": "ECLCrateTimeOffset", "channel": 28, "shift": 0.0}, "other than 0"),
        ({"payload": "ECLCrateTimeOffset", "channel": 28, "shift": float("nan")}, "finite"),
        ({"payload": "ECLCrateTimeOffset", "channel": "28", "shift": 1.0}, "an integer"),
        ({"payload": "ECLCrateTimeOffset", "channel": 28, "shift": 1.0, "cell": 3}, "['cell']"),
    ],
)
def test_a_bad_planted_entry_names_itself(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=r"planted\[0\]") as err:
        SimConfig(planted=[entry])
    assert message in str(err.value)


def test_a_channel_planted_twice_is_refused() -> None:
    e = {"payload": "ECLCrateTimeOffset", "channel": 28, "shift": 1.0}
    with pytest.raises(ConfigError, match=r"planted\[1\].*channel 28 of ECLCrateTimeOffset"):
        SimConfig(planted=[e, {**e, "shift": 2.0}])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"payload": "ECLCrateTimeOffset", "channel": 53, "shift": 1.0},
            "no crate 53 (crate 1-52)",
        ),
        (
            {"payload": "ECLCrateTime", "channel": 3, "shift": 1.0},
            "writes no payload 'ECLCrateTime'",
        ),
        (
            {"payload": "ECLCrateTimeOffset", "channel": 3, "shift": 1.0, "column": "mu"},
            "no value column 'mu'",
        ),
        ({"payload": "CDCDedxRunGain", "channel": 0, "shift": 0.1}, "no key column"),
    ],
)
def test_simulate_refuses_a_channel_the_truth_lacks_before_writing(
    entry: dict[str, object], message: str, tmp_path: Path
) -> None:
    cfg = SimConfig(exp=3, n_runs=2, events_per_run=100, seed=5, planted=[entry])
    with pytest.raises(ConfigError, match="planted") as err:
        simulate(cfg, tmp_path / "out", jobs=1)
    assert message in str(err.value)
    assert not (tmp_path / "out").exists()


def _entries_and_payloads(folder: Path) -> tuple[LocalDatabase, list[tuple[object, Payload]]]:
    db = LocalDatabase(folder)
    return db, [(e, db.read(e)) for e in db.entries()]


def _assert_previous_is_truth_but(
    out: Path, planted: list[dict[str, object]], *, same_bytes: bool
) -> None:
    """``previous/`` has the truth's entries; its payloads equal the truth's but for the planted
    channels, at truth - shift (and the unplanted files are the truth's bytes)."""
    truth, t = _entries_and_payloads(out / "truth")
    previous, p = _entries_and_payloads(out / "previous")
    assert [e for e, _ in p] == [e for e, _ in t]
    by_name = {q.payload: q for q in planted_channels(planted)}
    seen = 0
    for (entry, old), (_, new) in zip(p, t, strict=True):
        q = by_name.get(new.name)
        if q is None:
            assert old.same_content(new), entry
            if same_bytes:
                assert (previous.folder / entry.filename).read_bytes() == (
                    truth.folder / entry.filename
                ).read_bytes()
            continue
        seen += 1
        assert old.keys.keys() == new.keys.keys()
        assert old.errors.keys() == new.errors.keys()
        ids = next(iter(new.keys.values()))
        diff = new.values[q.column].astype(np.float64) - old.values[q.column].astype(np.float64)
        assert np.flatnonzero(diff) == pytest.approx(np.flatnonzero(ids == q.channel))
        assert diff[ids == q.channel] == pytest.approx(q.shift, abs=1e-6)
        others = {k: v for k, v in old.values.items() if k != q.column}
        assert all(np.array_equal(v, new.values[k]) for k, v in others.items())
        assert old.metadata["provenance"]["planted"] == [q.as_dict()]
    assert seen == len(LocalDatabase(out / "truth").entries()) - sum(
        1 for e in truth.entries() if e.name not in by_name
    )
    assert seen >= 1


def test_simulate_writes_previous_only_with_planted_channels(tmp_path: Path) -> None:
    planted = [
        {"payload": "ECLCrystalTimeOffset", "channel": 1234, "shift": 4.0},
        {"payload": "CDCDedxCosineCor", "channel": 93, "shift": -0.1},
    ]
    simulate(
        SimConfig(exp=3, n_runs=2, events_per_run=100, seed=5, planted=planted), tmp_path / "a"
    )
    _assert_previous_is_truth_but(tmp_path / "a", planted, same_bytes=True)
    simulate(SimConfig(exp=3, n_runs=2, events_per_run=100, seed=5), tmp_path / "a")
    assert not (tmp_path / "a" / "previous").exists()  # a stale previous/ is not left behind
    assert "planted" not in SimConfig().to_dict()


def test_committed_sample_plants_what_its_config_says(sample: Path) -> None:
    """data-samples/bucket/previous is the truth but for the planted channel (the files of the
    other payloads are the truth's bytes: the repository stores them once)."""
    cfg = tomllib.loads((REPO / "data-samples" / "bucket.toml").read_text())["simulation"]
    assert cfg["planted"] == [{k: PLANTED[k] for k in ("payload", "channel", "shift")}]
    _assert_previous_is_truth_but(sample, cfg["planted"], same_bytes=True)


def _validation_tables(db: ConditionsDB, calibration: str) -> dict[str, dict[str, np.ndarray]]:
    store = JobStore(db)
    [job] = store.jobs(calibration)
    data = store.diagnostics_of_validation(job)
    assert data is not None, calibration
    return Diagnostics.from_bytes(data).tables


def test_the_review_database_validation_finds_exactly_the_planted_channel(
    tmp_path: Path, sample: Path
) -> None:
    url = prepare_review_database(tmp_path / "review.sqlite")
    db = ConditionsDB(url, author="test")
    assert db.tag(STAGING_TAG).state == "TESTING"
    assert {t.name for t in db.tags()} >= {STAGING_TAG, PREVIOUS_TAG}
    store = JobStore(db)
    assert sorted(j.calibration for j in store.jobs()) == sorted(CALIBRATIONS)
    # the outliers of every validation of the loop: the planted channel, nothing else
    outliers = []
    for name in CALIBRATIONS:
        for payload, table in _validation_tables(db, name).items():
            keys = next(iter(table))
            outliers += [(name, payload, int(c)) for c in table[keys][table["outlier"] == 1]]
    assert outliers == [(PLANTED["calibration"], PLANTED["payload"], PLANTED["channel"])]
    [job] = store.jobs(PLANTED["calibration"])
    record = store.validation(job)
    assert record is not None
    assert f"crate={PLANTED['channel']}" in record.reason
    # the calibration recovers the truth there, within its error; previous = truth - shift
    [entry] = [e for e in db.iovs(STAGING_TAG, PLANTED["payload"]) if str(e.iov) == PLANTED["iov"]]
    new = db.payload(entry.payload)
    row = int(np.flatnonzero(new.keys["crate"] == PLANTED["channel"])[0])
    truth = LocalDatabase(sample / "truth").lookup(PLANTED["payload"], 12, 1)
    previous = db.payload(db.lookup(12, 1, [PREVIOUS_TAG])[PLANTED["payload"]].payload)
    value, error = float(new.values["value"][row]), float(new.errors["value"][row])
    assert new.status is not None
    assert new.status[row] == 0
    assert abs(value - float(truth.values["value"][row])) < 3 * error
    assert float(truth.values["value"][row] - previous.values["value"][row]) == pytest.approx(
        PLANTED["shift"]
    )
    assert value - float(previous.values["value"][row]) > PLANTED["shift"] - 3 * error
    # the users and the sample's data quality are there too
    qa = QADatabase(url)
    for user, (_, role, detectors) in REVIEW_USERS.items():
        u = qa.users.get(user)
        assert (u.role, tuple(u.detectors)) == (role, detectors)
    assert len(qa.runs.select(exp=12)) == 12
    assert qa.runs.variables(12, 2)


def test_the_planted_channel_does_not_depend_on_the_previous_value(
    tmp_path: Path, sample: Path
) -> None:
    """ecl-time measures the offset as the applied one plus the fitted residual: with the truth
    as input tag instead of previous/, crate 28 comes out the same."""
    url = prepare_review_database(tmp_path / "review.sqlite")
    with_previous = ConditionsDB(url, author="test")
    db = ConditionsDB(tmp_path / "truth.sqlite", author="test")
    db.import_local(sample / "truth", "truth")
    run_calibrations(
        [PLANTED["calibration"]],
        sample,
        db=db,
        input_tags=["truth"],
        staging_tag="from_truth",
        runs=range(1, 12),
        exp=12,
        progress=False,
    )

    def crate(d: ConditionsDB, tag: str) -> float:
        [entry] = [e for e in d.iovs(tag, PLANTED["payload"]) if str(e.iov) == PLANTED["iov"]]
        p = d.payload(entry.payload)
        return float(p.values["value"][p.keys["crate"] == PLANTED["channel"]][0])

    assert crate(db, "from_truth") == pytest.approx(crate(with_previous, STAGING_TAG), abs=0.01)


def test_the_demo_bucket_plants_an_ecl_crystal_time_offset() -> None:
    """data-samples/prompt.toml plants in an 8736-channel ECL payload (the payload view's speed
    budget and the ECL map use it); the channel is one of its truth (checked without events)."""
    cfg = SimConfig.from_file(REPO / "data-samples" / "prompt.toml")
    [planted] = planted_channels(cfg.planted)
    assert (planted.payload, planted.channel, planted.shift) == ("ECLCrystalTimeOffset", 1234, 4.0)
    truth = truth_payloads(conditions_for_run(cfg, generate_runs(cfg)[0]))
    check_planted([planted], truth)
    [payload] = [p for p in truth if p.name == planted.payload]
    assert len(payload) == 8736
    old = plant(payload, [planted])
    changed = np.flatnonzero(old.values["value"] != payload.values["value"])
    assert payload.keys["cellID"][changed].tolist() == [1234]
    assert float(payload.values["value"][changed[0]] - old.values["value"][changed[0]]) == (
        pytest.approx(4.0)
    )
