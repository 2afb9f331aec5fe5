"""Time-dependent payloads (basf2's EventDependency by time): lookups at a time inside a run
through the conditions database, the basf2 local-database export and the calibrations'
constants; the clear error of a run-level request; the payload-type checks; the simulator's
beam step and its time-dependent truth."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from b2calib.calibration.constants import Constants
from b2calib.conditions import ConditionsDB, IoV, LocalDatabase, Payload, check_payload
from b2calib.conditions import eventdep as ed
from b2calib.conditions.payload import ChannelStatus
from b2calib.exceptions import ConditionsError, PayloadError, TimeDependentPayloadError
from b2calib.runs import Run
from b2calib.sim import SimConfig, conditions_for_run, truth_payloads
from b2calib.sim.physics import Beam

NS = 1_000_000_000
T0 = 1_775_001_600 * NS  # 2026-04-01 00:00 UTC
#: three intervals of run 5: 0-1 h, 1-2.5 h, 2.5-4 h after T0
STARTS = np.array([T0, T0 + 3600 * NS, T0 + 9000 * NS])
ENDS = np.array([T0 + 3600 * NS, T0 + 9000 * NS, T0 + 14400 * NS])
_COV = ("cov_xx", "cov_xy", "cov_xz", "cov_yy", "cov_yz", "cov_zz")
_SIZE = ("size_xx", "size_xy", "size_xz", "size_yy", "size_yz", "size_zz")


def beamspot(
    starts: np.ndarray = STARTS, ends: np.ndarray = ENDS, *, x: np.ndarray | None = None
) -> Payload:
    """A BeamSpot of the shared layout, x = 0.01, 0.02, 0.03 cm in its intervals."""
    n = len(starts)
    xs = np.arange(1, n + 1) * 0.01 if x is None else x
    values = {"x": xs, "y": np.full(n, -0.03), "z": np.full(n, 0.1)}
    values |= dict.fromkeys(_COV, np.full(n, 1e-8)) | dict.fromkeys(_SIZE, np.full(n, 1e-6))
    return ed.time_dependent(
        "BeamSpot",
        starts,
        ends,
        values=values,
        errors={"x": np.full(n, 2e-4), "y": np.full(n, 3e-4), "z": np.full(n, 3e-3)},
        status=np.zeros(n, np.int8),
    )


def test_intervals_and_basf2_lookup_semantics() -> None:
    p = beamspot()
    t0, t1 = ed.intervals(p)
    np.testing.assert_array_equal(t0, STARTS)
    np.testing.assert_array_equal(t1, ENDS)
    assert ed.is_time_dependent(p)
    assert p.keys["t_start"].dtype == np.int64
    # the first interval is open to -inf, the last to +inf; only inner boundaries matter
    times = [0, T0 - 1, T0 + 1, STARTS[1] - 1, STARTS[1], STARTS[2] + 5, ENDS[2], 2**62]
    np.testing.assert_array_equal(ed.interval_index(p, times), [0, 0, 0, 0, 1, 2, 2, 2])
    got = ed.at_time(p, int(STARTS[1]) + 10 * NS)
    assert list(got.keys) == []
    assert len(got) == 1
    assert got.value("x")[0] == pytest.approx(0.02)
    assert got.errors["x"][0] == pytest.approx(2e-4)
    assert got.metadata["interval"] == {
        "t_start": int(STARTS[1]),
        "t_end": int(ENDS[1]),
        "index": 1,
        "intervals": 3,
    }
    assert not ed.is_time_dependent(got)
    np.testing.assert_allclose(ed.values_at(p, "x", times), [0.01] * 4 + [0.02, 0.03, 0.03, 0.03])


def test_a_time_in_a_gap_gets_the_earlier_interval() -> None:
    """Intervals of two runs of one IoV: a time between them belongs to the earlier one."""
    p = beamspot(STARTS, np.array([STARTS[1] - 600 * NS, ENDS[1], ENDS[2]]))
    assert ed.at_time(p, int(STARTS[1]) - 60 * NS).value("x")[0] == pytest.approx(0.01)


def test_builder_sorts_rows_and_keeps_other_keys() -> None:
    p = ed.time_dependent(
        "XTimeDep",
        [20, 10, 20, 10],
        [30, 20, 30, 20],
        keys={"ch": np.array([2, 1, 1, 2], np.int16)},
        values={"v": [4.0, 1.0, 3.0, 2.0]},
    )
    np.testing.assert_array_equal(p.keys["t_start"], [10, 10, 20, 20])
    np.testing.assert_array_equal(p.keys["ch"], [1, 2, 1, 2])
    np.testing.assert_array_equal(p.value("v"), [1.0, 2.0, 3.0, 4.0])
    late = ed.at_time(p, 25)
    np.testing.assert_array_equal(late.keys["ch"], [1, 2])
    np.testing.assert_array_equal(late.value("v"), [3.0, 4.0])
    check_payload(p)
    mean = ed.run_mean(p)
    np.testing.assert_allclose(mean.value("v"), [2.0, 3.0])


def test_run_mean_is_explicit_and_weighted() -> None:
    p = beamspot()
    mean = ed.run_mean(p)  # durations 1 h, 1.5 h, 1.5 h
    assert mean.value("x")[0] == pytest.approx((0.01 * 1 + 0.02 * 1.5 + 0.03 * 1.5) / 4)
    assert mean.errors["x"][0] == pytest.approx(2e-4 * np.sqrt(1 + 1.5**2 * 2) / 4)
    assert mean.metadata["mean_of_intervals"]["weighting"] == "duration"
    by_events = ed.run_mean(p, [0, 10, 30])
    assert by_events.value("x")[0] == pytest.approx(0.0275)
    failed = beamspot()
    assert failed.status is not None
    failed.status[2] = ChannelStatus.FAILED
    assert ed.run_mean(failed).value("x")[0] == pytest.approx(0.016)  # (0.01 + 0.03) / 2.5
    with pytest.raises(PayloadError, match="3 finite non-negative weights"):
        ed.run_mean(p, [1.0, 2.0])


@pytest.mark.parametrize(
    ("starts", "ends", "message"),
    [
        (STARTS, np.array([ENDS[0] + 1, ENDS[1], ENDS[2]]), r"1 time intervals overlap"),
        (STARTS, np.array([STARTS[0], ENDS[1], ENDS[2]]), r"1 time intervals end before they"),
        (STARTS, np.array([ENDS[0], STARTS[1] - 5, ENDS[2]]), r"1 time intervals end before they"),
    ],
    ids=["overlapping", "empty", "reversed"],
)
def test_type_checks_refuse_bad_intervals(
    starts: np.ndarray, ends: np.ndarray, message: str
) -> None:
    with pytest.raises(PayloadError, match=f"payload BeamSpot: {message}"):
        check_payload(beamspot(starts, ends))


def test_type_checks_refuse_unsorted_unmarked_and_run_level_beam_payloads() -> None:
    p = beamspot()
    unsorted = Payload(
        "BeamSpot",
        keys={k: v[::-1].copy() for k, v in p.keys.items()},
        values=p.values,
        metadata=p.metadata,
    )
    with pytest.raises(PayloadError, match="not sorted by t_start"):
        check_payload(unsorted)
    with pytest.raises(PayloadError, match="not marked time-dependent"):
        check_payload(Payload("BeamSpot", keys=p.keys, values=p.values))
    with pytest.raises(PayloadError, match=r"key columns \[\], expected \['t_start', 't_end'\]"):
        check_payload(Payload("CollisionInvariantMass", values={"mass": [10.58], "spread": [0]}))
    no_spread = ed.time_dependent("CollisionInvariantMass", [1], [2], values={"mass": [10.58]})
    with pytest.raises(PayloadError, match="no value column spread"):
        check_payload(no_spread)
    # any payload marked time-dependent gets the interval checks
    with pytest.raises(PayloadError, match="overlap"):
        check_payload(ed.time_dependent("XOther", [1, 5], [10, 20], values={"v": [1.0, 2.0]}))


def test_lookup_at_a_time_through_the_database_and_its_local_export(
    db_url: str, tmp_path: Path
) -> None:
    db = ConditionsDB(db_url, author="alice")
    db.create_tag("beam")
    run_level = Payload("XRunLevel", values={"v": np.array([7.0])})
    db.upload_and_add("beam", [(beamspot(), IoV(12, 5, 12, 5)), (run_level, IoV(12, 0, 12, -1))])
    inside = int(STARTS[1]) + 1800 * NS
    got = db.payloads_for(12, 5, ["beam"], time=inside)
    assert got["BeamSpot"].value("x")[0] == pytest.approx(0.02)
    assert got["XRunLevel"].value("v")[0] == 7.0  # a run-level payload at any time
    assert db.payloads_for(12, 5, ["beam"], ["BeamSpot"], time=0)["BeamSpot"].value("x")[0] == (
        pytest.approx(0.01)
    )
    with pytest.raises(TimeDependentPayloadError) as err:
        db.payloads_for(12, 5, ["beam"])
    message = str(err.value)
    for part in ("BeamSpot rev 1", "global tag beam", "3 time intervals", "run (12, 5)", "time"):
        assert part in message, (part, message)
    assert isinstance(err.value, ConditionsError)
    assert (err.value.payload, err.value.revision, err.value.intervals) == ("BeamSpot", 1, 3)
    assert db.payloads_for(12, 6, ["beam"]).keys() == {"XRunLevel"}  # other runs unaffected

    entries = db.export_local(tmp_path / "local", "beam")
    assert {e.name for e in entries} == {"BeamSpot", "XRunLevel"}
    local = LocalDatabase(tmp_path / "local")
    assert local.lookup("BeamSpot", 12, 5, time=inside).value("x")[0] == pytest.approx(0.02)
    assert local.lookup("BeamSpot", 12, 5, time=int(ENDS[2]) + NS).value("x")[0] == (
        pytest.approx(0.03)
    )
    with pytest.raises(TimeDependentPayloadError, match=r"rev 1 in local database .*3 time"):
        local.lookup("BeamSpot", 12, 5)
    stored = local.read(local.find("BeamSpot", 12, 5))
    assert stored.same_content(beamspot())
    assert ed.is_time_dependent(stored)

    # and back: the import keeps the layout and reuses the stored revision
    added = db.import_local(tmp_path / "local", "reimported")
    assert {e.payload.revision for e in added if e.name == "BeamSpot"} == {1}
    back = db.payloads_for(12, 5, ["reimported"], ["BeamSpot"], time=inside)["BeamSpot"]
    assert back.value("x")[0] == pytest.approx(0.02)
    db.close()


def test_published_time_dependent_payloads_stay_immutable(tmp_path: Path) -> None:
    db = ConditionsDB(tmp_path / "db.sqlite", author="alice")
    db.create_tag("beam")
    db.upload_and_add("beam", [(beamspot(), IoV(12, 5, 12, 5))])
    for state in ("TESTING", "VALIDATED", "PUBLISHED"):
        db.set_state("beam", state)
    moved = beamspot(x=np.array([0.01, 0.02, 0.05]))
    with pytest.raises(ConditionsError, match="PUBLISHED"):
        db.upload_and_add("beam", [(moved, IoV(12, 5, 12, 5))])
    assert db.upload(beamspot()).revision == 1  # the same content: the same revision
    assert db.upload(moved).revision == 2  # a new one is appended, never replaces
    with db.engine.connect() as conn:
        with pytest.raises(sa.exc.DBAPIError):  # the database refuses, not the library
            conn.execute(sa.text("UPDATE payload_files SET content = x'00'"))
        conn.rollback()
    assert db.verify().ok
    db.close()


def test_constants_ask_with_a_time(tmp_path: Path) -> None:
    db = ConditionsDB(tmp_path / "db.sqlite", author="alice")
    db.create_tag("beam")
    db.upload_and_add("beam", [(beamspot(), IoV(12, 5, 12, 5))])
    constants = Constants(db, ["staging", "beam"])
    at = constants.require("BeamSpot", 12, 5, time=int(STARTS[2]))
    assert at.value("x")[0] == pytest.approx(0.03)
    with pytest.raises(TimeDependentPayloadError, match=r"BeamSpot rev 1 in global tag beam"):
        constants.get("BeamSpot", 12, 5)
    whole = constants.stored("BeamSpot", 12, 5)
    assert whole is not None
    assert len(ed.intervals(whole)[0]) == 3
    previous = Constants(None, overlay=[(IoV(12, 5, 12, 5), beamspot())])
    with pytest.raises(TimeDependentPayloadError, match="in the previous iteration"):
        previous.require("BeamSpot", 12, 5)
    assert previous.get("BeamSpot", 12, 6) is None
    db.close()


def _step_run(**kw: object) -> tuple[SimConfig, Run]:
    cfg = SimConfig(exp=12, n_runs=2, beam_step_run=1, **kw)  # type: ignore[arg-type]
    start = 1_775_001_600.0
    run = Run(12, 1, "physics", "4S", start, start + 5 * 3600.0, 100.0, 10**6, ("CDC",), True)
    return cfg, run


def test_truth_of_the_beam_step() -> None:
    cfg, run = _step_run()
    cond = conditions_for_run(cfg, run)
    assert cond.step_time == run.start + 2 * 3600.0
    before, after = cond.step_time - 1.0, cond.step_time + 1.0
    jump = cond.beamspot_at([after])[0] - cond.beamspot_at([before])[0]
    np.testing.assert_allclose(jump, [8e-4, 0.5e-4, 150e-4], atol=1e-7)  # + 2 s of drift
    assert cond.ecms_at(after) - cond.ecms_at(before) == pytest.approx(-3e-3)
    old, new = cond.beams
    assert new.energies[1] == old.energies[1]  # the HER alone moved
    assert new.boost[2] - old.boost[2] == pytest.approx(-2.6e-4, abs=0.1e-4)
    payloads = {p.name: p for p in truth_payloads(cond)}
    for name in ("BeamSpot", "CollisionBoostVector", "CollisionInvariantMass"):
        check_payload(payloads[name])
        assert ed.intervals(payloads[name])[0][0] == int(run.start * 1e9)
        assert ed.intervals(payloads[name])[1][-1] == int(run.stop * 1e9)
    bs = payloads["BeamSpot"]
    assert len(bs) == 50  # 5 h of 0.1 h atoms, the step on an atom boundary
    motion = bs.metadata["beam_motion"]
    assert motion["step"]["t_ns"] == int(cond.step_time * 1e9)
    np.testing.assert_allclose(motion["drift_cm_per_hour"], cond.beamspot_slope)
    t_ns = np.array([before, after]) * 1e9
    np.testing.assert_allclose(
        ed.values_at(bs, "z", t_ns),
        cond.beamspot_at([before, after])[:, 2],
        atol=abs(cond.beamspot_slope[2]) * 0.05 + 1e-9,  # the drift over half an atom
    )
    np.testing.assert_allclose(ed.values_at(bs, "size_zz", t_ns), cond.beamspot_size[2] ** 2)
    mass = payloads["CollisionInvariantMass"]
    np.testing.assert_allclose(ed.values_at(mass, "mass", t_ns), cond.ecms_at([before, after]))
    boost = payloads["CollisionBoostVector"]
    np.testing.assert_allclose(
        ed.values_at(boost, "bz", t_ns), cond.boost_at([before, after])[:, 2]
    )
    # the step off: one span, the boost the generator applies
    plain = conditions_for_run(SimConfig(exp=12, n_runs=2), run)
    assert plain.step_time is None
    assert len(plain.atoms()) == 50
    [b] = [p for p in truth_payloads(plain) if p.name == "CollisionBoostVector"]
    np.testing.assert_allclose(
        [b.value(c)[0] for c in ("bx", "by", "bz")], Beam(plain.ecms, 0.0).boost
    )


def test_a_step_off_the_atom_grid_cuts_an_atom() -> None:
    cfg, run = _step_run(beam_step_hours=1.25)
    cond = conditions_for_run(cfg, run)
    [bs] = [p for p in truth_payloads(cond) if p.name == "BeamSpot"]
    assert len(bs) == 51
    assert int(cond.step_time * 1e9) in set(bs.keys["t_start"].tolist())


def test_the_beam_step_must_be_in_a_long_enough_physics_run() -> None:
    from b2calib.exceptions import ConfigError
    from b2calib.sim.simulate import _check_beam_step

    with pytest.raises(ConfigError, match=r"beam_step_run 9 is outside the simulated runs 1\.\.2"):
        SimConfig(n_runs=2, beam_step_run=9)
    cfg, run = _step_run(beam_step_hours=6.0)
    with pytest.raises(ConfigError, match=re.escape("physics run of 5.00 h")):
        _check_beam_step(cfg, [run])
    assert "beam_step_run" not in SimConfig().to_dict()
    assert SimConfig(beam_step_run=1).to_dict()["beam_step_um"] == [8.0, 0.5, 150.0]


def test_the_boost_truth_is_the_boost_of_the_generated_events() -> None:
    """The dimuon pairs without hard ISR move with the truth's boost, before and after a HER
    step (which moves beta_z by -2.6e-4)."""
    from b2calib.sim.physics import generate

    cfg, run = _step_run()
    cond = conditions_for_run(cfg, run)
    rng = np.random.default_rng(3)
    measured = []
    for beam in cond.beams:
        n = 20_000
        part = generate(rng, "mumu", n, beam, np.zeros((n, 3)), np.zeros(3))
        p4 = part.p4[0::2] + part.p4[1::2]
        mass = np.sqrt(p4[:, 3] ** 2 - np.sum(p4[:, :3] ** 2, axis=1))
        hard = mass < beam.ecms - 3 * beam.spread  # ISR: the pair recoils along z
        beta = p4[~hard, :3] / p4[~hard, 3:]
        err = beta.std(axis=0) / np.sqrt(len(beta))
        np.testing.assert_allclose(beta.mean(axis=0), beam.boost, atol=float(4 * err.max()))
        measured.append(beta.mean(axis=0))
    step = measured[1][2] - measured[0][2]
    assert step == pytest.approx(cond.beams[1].boost[2] - cond.beams[0].boost[2], rel=0.05)


def test_closure_truth_is_averaged_over_the_events_of_each_sub_interval() -> None:
    from tests.closure import truth_over_events

    cfg, run = _step_run()
    cond = conditions_for_run(cfg, run)
    [bs] = [p for p in truth_payloads(cond) if p.name == "BeamSpot"]
    times = np.sort(np.random.default_rng(1).uniform(run.start, run.stop, 2000))
    exact = cond.beamspot_at(times)
    # fitted sub-intervals: 0-1.5 h, 1.5-2.5 h (holding the step), 2.5-5 h
    edges = run.start + np.array([0.0, 1.5, 2.5, 5.0]) * 3600
    fitted = ed.time_dependent(
        "BeamSpot", edges[:-1] * 1e9, edges[1:] * 1e9, values={"x": np.zeros(3), "z": np.zeros(3)}
    )
    got = truth_over_events(bs, times * 1e9, ["x", "z"], intervals_of=fitted)
    which = np.searchsorted(edges, times, side="right") - 1
    for i in range(3):
        np.testing.assert_allclose(got["z"][i], exact[which == i, 2].mean(), atol=1e-6)
    # the middle sub-interval's truth lies between the two sides of the step
    assert got["z"][0] < got["z"][1] - 0.004 < got["z"][2] - 0.008
    # two runs' truth payloads together
    other = Run(12, 2, "physics", "4S", run.stop + 600, run.stop + 4200, 1.0, 1, ("CDC",), True)
    [bs2] = [p for p in truth_payloads(conditions_for_run(cfg, other)) if p.name == "BeamSpot"]
    both = truth_over_events([bs2, bs], [run.start * 1e9 + 1, other.start * 1e9 + 1e9], ["x"])
    assert both["x"][0] == pytest.approx((bs.value("x")[0] + bs2.value("x")[0]) / 2)


def test_command_line_lookup_at_a_time(tmp_path: Path) -> None:
    from tests.test_cli_conditions import run, table

    env = {"B2CALIB_DB": str(tmp_path / "db.sqlite"), "B2CALIB_USER": "tester"}
    db = ConditionsDB(tmp_path / "db.sqlite", author="alice")
    db.create_tag("beam")
    run_level = Payload("XRunLevel", values={"v": np.array([7.0])})
    db.upload_and_add("beam", [(beamspot(), IoV(12, 5, 12, 5)), (run_level, IoV(12, 0, 12, -1))])
    db.close()
    listing = run(env, "lookup", "12", "5", "--gt", "beam")
    assert [r[0] for r in table(listing)] == ["BeamSpot", "XRunLevel"]
    # 2026-04-01 01:30 UTC lies in the second interval, in each of its spellings
    for when in ("2026-04-01T01:30:00", "2026-04-01 03:30:00+02:00", "1775007000", "1775007000s"):
        out = run(env, "lookup", "12", "5", "--gt", "beam", "--time", when)
        assert [r[-1] for r in table(out.split("\n\n")[0])] == ["2/3", "run-level"], when
        head = "BeamSpot rev 1 at 2026-04-01 01:30:00 UTC: interval 2 of 3, 2026-04-01 01:00:00"
        assert head in out
        values = {r[0]: r[1:] for r in table(out.split("\n\n")[1])}
        assert values["x"] == ["0.02", "0.0002"]
        assert values["status"] == ["OK"]
    show = run(env, "payload", "show", "BeamSpot")
    assert "time intervals  3 from 2026-04-01 00:00:00 to 2026-04-01 04:00:00 UTC" in show
    out = run(env, "lookup", "12", "5", "--gt", "beam", "--time", "1775007000000000001ns")
    assert "at 2026-04-01 01:30:00.000000001 UTC" in out
    assert "Invalid value for --time: 'yesterday' is neither an ISO time" in run(
        env, "lookup", "12", "5", "--gt", "beam", "--time", "yesterday", code=2
    )


def test_the_ecl_peaks_take_the_runs_time_averaged_collision_energy() -> None:
    """The one consumer that needs one collision energy per run asks for the time average."""
    from b2calib.detectors.ecl import peaks

    mass = ed.time_dependent(
        "CollisionInvariantMass",
        [0, 3600 * NS],
        [3600 * NS, 4 * 3600 * NS],
        values={"mass": [10.580, 10.576], "spread": [5.4e-3, 5.4e-3]},
    )
    constants = Constants(None, overlay=[(IoV(12, 1, 12, 1), mass)])
    with pytest.raises(TimeDependentPayloadError):
        constants.get(peaks.BEAM_PAYLOAD, 12, 1)
    collector = peaks.peak_collector("gamma_gamma")(constants, [(12, 1), (12, 2)])
    assert collector.ecms == ((12, 1, pytest.approx(10.577)),)  # 1 h at 10.580, 3 h at 10.576
    assert peaks.run_ecms(ed.at_time(mass, 0)) == pytest.approx(10.580)


TIME_AND_ECMS = ("EventMetaData_m_time", "SimTruth_m_ecms")
D0_PHI0 = ("TrackFitResults_m_d0", "TrackFitResults_m_phi0")


def test_simulated_events_follow_the_beam_step(tmp_path: Path) -> None:
    """In the step run, the tracks come from the stepped beam spot and the events carry the
    stepped collision energy from the step's time on."""
    import awkward as ak

    from b2calib.io import open_skim
    from b2calib.sim import simulate

    cfg = SimConfig(
        exp=3,
        n_runs=1,
        seed=4,
        events_per_run=1500,
        beam_step_run=1,
        skims=["hlt_mumu_2trk"],
        process_fractions={
            "bhabha": 0.1,
            "gamma_gamma": 0.05,
            "mumu": 0.8,
            "hadron": 0.03,
            "tautau": 0.02,
        },
        run_types={"physics": 1.0, "cosmic": 0.0, "beam": 0.0, "debug": 0.0},
        continuum_fraction=0.0,
    )
    result = simulate(cfg, tmp_path, jobs=1)
    [run] = list(result.registry)
    cond = conditions_for_run(cfg, run)
    assert cond.step_time is not None
    with open_skim(result.files[0]) as fh:
        a = fh.arrays([*TIME_AND_ECMS, "TrackFitResults_m_z0", *D0_PHI0])
    after = a["EventMetaData_m_time"].to_numpy() / 1e9 >= cond.step_time
    assert after.sum() > 300
    assert (~after).sum() > 200
    ecms = a["SimTruth_m_ecms"].to_numpy()
    np.testing.assert_allclose(ecms[~after], cond.ecms, rtol=1e-7)
    np.testing.assert_allclose(ecms[after], cond.ecms - 3e-3, rtol=1e-7)
    z = ak.mean(a["TrackFitResults_m_z0"], axis=1).to_numpy()  # one vertex per event
    err = cond.beamspot_size[2] * np.sqrt(1 / after.sum() + 1 / (~after).sum())
    true = cond.beamspot_at([cond.step_time + 1])[0] - cond.beamspot_at([cond.step_time - 1])[0]
    assert z[after].mean() - z[~after].mean() == pytest.approx(true[2], abs=4 * err + 1e-3)

    def x_of(sel: np.ndarray) -> float:
        d0 = ak.to_numpy(ak.flatten(a["TrackFitResults_m_d0"][sel])).astype(float)
        phi = ak.to_numpy(ak.flatten(a["TrackFitResults_m_phi0"][sel])).astype(float)
        design = np.column_stack([np.sin(phi), -np.cos(phi)])
        return float(np.linalg.lstsq(design, d0, rcond=None)[0][0])

    assert x_of(after) - x_of(~after) == pytest.approx(true[0], abs=4e-4)  # 8 um step, 4 um


def test_command_line_simulation_with_a_beam_step(tmp_path: Path) -> None:
    from tests.test_cli import run

    code, out = run("simulate", "--out", str(tmp_path), "--runs", "2", "--beam-step-run", "5")
    assert code == 1
    assert out.strip().splitlines() == ["Error: beam_step_run 5 is outside the simulated runs 1..2"]
    code, out = run(
        *("simulate", "--out", str(tmp_path), "--runs", "1", "--events-per-run", "100"),
        *("--beam-step-run", "1", "--beam-step-hours", "0.5", "--skims", "hlt_mumu_2trk"),
        *("--quiet", "--jobs", "1"),
    )
    assert code == 0, out
    config = json.loads((tmp_path / "simulation.json").read_text())["config"]
    assert (config["beam_step_run"], config["beam_step_hours"]) == (1, 0.5)
    truth = LocalDatabase(tmp_path / "truth")
    mass = truth.read(truth.find("CollisionInvariantMass", 12, 1))
    assert len(mass) == 2
