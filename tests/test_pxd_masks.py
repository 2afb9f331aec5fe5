"""PXD hot and dead pixels (``pxd-hot-dead``, ``pxd-hot-dead-cosmic``).

The closure sample (slow): two collision runs of the PXD alone with a beam background of 8e-5 of
the pixels per event (inner layer 1e-4, outer 6.7e-5), ~1.6e5 written events each: each run alone
has ~11 hits per outer pixel (NOT_ENOUGH_DATA), the two merged (SequentialRunByRun, 3.3e5
events, 2.0e8 digits) ~22 on the outer and ~33 on the inner layer. A live pixel is then called
dead with a chance exp(-22) = 3e-10 (1e-3 expected of the 7.68 M pixels: the "no live pixel
masked" claim holds; at the check's 15 it would be ~2), and a pixel
is seen hot above a noise rate 6 x the background, 4e-4 (outer) and 6e-4 (inner) per event,
below the truth's lowest (1e-3): every injected hot pixel must be found. Both runs also have a
dead sensor, a dead row and a dead drain (faults), which must come out at their level.
"""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from click.testing import CliRunner

from b2calib.calibration import (
    AlgorithmInput,
    AlgorithmStatus,
    Constants,
    SequentialRunByRun,
    SimpleRunByRun,
    get_calibration,
)
from b2calib.cli import cli
from b2calib.conditions import ChannelStatus, ConditionsDB, check_payload
from b2calib.detectors import pxd
from b2calib.detectors.pxd import masks as M
from b2calib.engine import RunOutput
from b2calib.exceptions import BadValueError, ConfigError
from b2calib.geometry import vxd
from b2calib.sim import SimConfig, simulate
from b2calib.sim.conditions import conditions_for_run
from b2calib.sim.detector import pxd_background, pxd_sensor_occupancy
from b2calib.sim.faults import pxd_dead_pixels
from b2calib.sim.runs import generate_runs
from tests.closure import assert_closure, calibrate, staged
from tests.conftest import SAMPLE
from tests.test_notebooks import execute

NPIX = vxd.N_PXD_PIXELS
BHABHA_ONLY = {"bhabha": 1.0, "gamma_gamma": 0.0, "mumu": 0.0, "hadron": 0.0, "tautau": 0.0}
#: The injected dead parts: sensor 17, row v = 400 of sensor 3, drain 310 (u = 77, v % 4 = 2)
#: of sensor 30.
FAULTS = {"dead_sensor": 17, "dead_row": 3 * 768 + 400, "dead_drain": 30 * 1000 + 310}
CLOSURE = SimConfig(
    exp=12,
    seed=1,
    n_runs=2,
    events_per_run=190_000,
    processes=["bhabha"],
    process_fractions=BHABHA_ONLY,
    skims=["hlt_bhabha"],
    detectors=["PXD"],
    run_types={"physics": 1.0},
    continuum_fraction=0.0,
    pxd_occupancy=8e-5,
    chunk_size=25_000,
    compression_level=1,
    faults=[
        {"run": run, "detector": "PXD", "kind": kind, "value": value}
        for run in (1, 2)
        for kind, value in FAULTS.items()
    ],
)


_COUNTS: dict[float, np.ndarray] = {}


def _poisson_counts(mean: float = 25.0) -> np.ndarray:
    """Hits of every pixel, Poisson of ``mean`` (drawn once per mean: a copy each call)."""
    if mean not in _COUNTS:
        rng = np.random.default_rng(int(mean * 10))
        _COUNTS[mean] = rng.poisson(mean, (vxd.N_PXD_SENSORS, 250, 768)).astype(np.int64)
    return _COUNTS[mean].copy()


def _flat(s: int, u: object, v: object) -> np.ndarray:
    return (s * 250 + np.asarray(u)) * 768 + np.asarray(v)


# ----------------------------------------------------------------------- method, fast
def test_pixel_index_and_collector() -> None:
    s = vxd.PXD_IDS[[0, 39, 39, 5]]
    u, v = np.array([0, 249, 249, 10]), np.array([0, 767, 767, 3])
    np.testing.assert_array_equal(
        M.pixel_index(s, u, v), [0, NPIX - 1, NPIX - 1, (5 * 250 + 10) * 768 + 3]
    )
    counts = M.pixel_hits(s, u, v)
    assert counts.shape == (NPIX,)
    assert counts[NPIX - 1] == 2
    assert counts.sum() == 4
    events = ak.Array(
        {
            "EventMetaData_m_run": [1, 1, 1],
            "PXDDigits_m_sensorID": [[int(s[0]), int(s[1])], [], [int(s[2]), int(s[3])]],
            "PXDDigits_m_uCellID": [[0, 249], [], [249, 10]],
            "PXDDigits_m_vCellID": [[0, 767], [], [767, 3]],
        }
    )
    many = M.pixel_hits(np.full(1000, s[3]), np.full(1000, 10), np.full(1000, 3))
    assert many[(5 * 250 + 10) * 768 + 3] == 1000  # past the one-byte counter's 255
    out = M.PixelHitCollector().collect(events)
    np.testing.assert_array_equal(out["pixel_hits"].view(), counts)
    assert out["events"].sum() == 3
    # a digit off the detector names its branch and value (the engine then names the file)
    cases = (
        ((vxd.SVD_IDS[:1], [0], [0]), "PXDDigits_m_sensorID", "no PXD sensor"),
        ((s[:1], [250], [0]), "PXDDigits_m_uCellID", "with 250: u outside 0..249"),
        ((s[:1], [0], [-1]), "PXDDigits_m_vCellID", "with -1: v outside 0..767"),
        (([s[0] + 1], [0], [0]), "PXDDigits_m_sensorID", "no PXD sensor"),
    )
    for bad, branch, what in cases:
        with pytest.raises(BadValueError, match=what) as err:
            M.pixel_index(*bad)
        assert err.value.branch == branch
        before = counts.copy()
        with pytest.raises(
            BadValueError, match=r"1 PXD digit\(s\) off the detector, the first \(digit 4 "
        ) as err:
            M.add_pixel_hits(counts, np.append(s, bad[0]), [*u, *bad[1]], [*v, *bad[2]])
        assert err.value.branch == branch
        np.testing.assert_array_equal(counts, before)  # nothing added


def test_pixel_hits_pickle_compactly_and_add() -> None:
    import pickle

    sparse = M.PixelHits(M._pixel_axis(), storage=M.hist.storage.Int64())
    sparse.view()[[3, 7]] = [1, 100_000]
    dense = M.PixelHits(M._pixel_axis(), storage=M.hist.storage.Int64())
    dense.view()[:] = np.arange(NPIX) % 50
    dense.view()[5] = 200_000  # above a byte and uint16: kept exactly
    dense.view()[[6, 9]] = [256, 511]  # the low byte wraps: the rest is kept beside it
    assert len(pickle.dumps(sparse)) < 1000
    assert len(pickle.dumps(dense)) < NPIX * 1.01  # one byte a pixel
    for h in (sparse, dense):
        back = pickle.loads(pickle.dumps(h))
        assert type(back) is M.PixelHits
        np.testing.assert_array_equal(back.view(), h.view())
    total = RunOutput({(1, 1): {"h": sparse}}) + RunOutput({(1, 1): {"h": dense}})
    np.testing.assert_array_equal(total[(1, 1)]["h"].view(), sparse.view() + dense.view())


def test_sensor_medians_match_numpy() -> None:
    c = (_poisson_counts(14.0) // 4).reshape(vxd.N_PXD_SENSORS, -1)
    c[4] = 0
    c[5, : c.shape[1] // 2] = 0
    np.testing.assert_array_equal(M.sensor_medians(c), np.median(c, axis=1))


def test_checks_need_15_hits_per_pixel_and_per_sensor_median() -> None:
    c = _poisson_counts(14.0)
    ok, why, _, _ = M.check_statistics(c, 15.0)
    assert not ok
    assert "per pixel" in why
    with pytest.raises(M.NotEnoughData, match="15 per pixel"):
        M.find_masks(c)
    c = _poisson_counts(30.0)
    c[7] //= 3  # one sensor with a median of 10: short, though the total passes
    ok, why, median, _ = M.check_statistics(c, 15.0)
    assert not ok
    assert "1 sensors (1.4.2)" in why
    assert median[7] == 10
    # a sensor without a single hit is dead, not short of statistics
    c = _poisson_counts(30.0)
    c[7] = 0
    assert M.check_statistics(c, 15.0)[0]


def test_dead_sensor_row_drain_pixel_and_hot_pixel() -> None:
    c = _poisson_counts(25.0)
    c[3] = 0
    c[5, :, 100] = 0
    c[7, 10, 1::4] = 0  # drain 41 of sensor 7 (u = 10, v % 4 = 1)
    c[9, 3, 7] = 0
    c[11, 20, 30] += 200
    m = M.find_masks(c)
    assert m.summary() == {
        "dead sensor": 192_000,
        "dead row": 250,
        "dead drain": 192,
        "dead pixel": 1,
        "hot pixel": 1,
    }
    assert np.all(m.dead[3] == 1)
    assert np.all(m.dead[5, :, 100] == 2)
    assert np.all(m.dead[7, 10, 1::4] == 3)
    assert m.dead[9, 3, 7] == 4
    assert m.hot[11, 20, 30] == 1
    np.testing.assert_array_equal(M.drain_of([10, 0], [5, 4]), [41, 0])


def test_hot_drains_and_rows_need_their_own_multiplier() -> None:
    """With the multipliers equal (7) a drain or row cannot be hot once its pixels above
    7 x median are masked (their mean is <= 7 x median): the steps act when an expert sets
    drain_multiplier / row_multiplier below the pixel multiplier."""
    c = _poisson_counts(25.0)
    c[12, 40, 2::4] += 100  # drain 162 of sensor 12 at ~5 x median: no pixel above 7 x
    c[13, :, 500] += 100  # row 500 of sensor 13
    assert M.find_masks(c).summary() == {}
    m = M.find_masks(c, M.MaskConfig(drain_multiplier=3.0, row_multiplier=3.0))
    assert m.summary() == {"hot drain": 192, "hot row": 250}
    assert np.all(m.hot[12, 40, 2::4] == 2)
    assert np.all(m.hot[13, :, 500] == 3)
    # hot pixels first, then drains and rows over what is left unmasked
    c[14, 5, 5] += 1000
    m = M.find_masks(c, M.MaskConfig(drain_multiplier=3.0, row_multiplier=3.0, mask_rows=False))
    assert m.summary() == {"hot pixel": 1, "hot drain": 192}


def test_forced_through_masks_hot_pixels_only_where_statistics_are_short() -> None:
    c = np.zeros((vxd.N_PXD_SENSORS, 250, 768), np.int64)
    c[2, 3, 4] = 30
    c[2, 3, 5] = 3
    c[20, 100, 100] = 8
    m = M.find_masks(c, M.MaskConfig(force_continue_masking=True))
    assert not m.enough
    assert m.summary() == {"hot pixel": 2}  # above 7 x max(median, 1); nothing called dead
    assert not m.dead_checked.any()
    assert not m.dead_sensor_checked


def test_false_dead_and_hot_thresholds() -> None:
    assert M.false_dead_rate(15.0) * NPIX == pytest.approx(2.35, rel=0.01)
    assert M.false_dead_rate(23.0) * NPIX < 1e-3
    assert M.hot_rate_threshold(1e-4) == pytest.approx(6e-4, rel=1e-3)


def test_algorithm_payloads_pass_the_payload_checks() -> None:
    c = _poisson_counts(25.0)
    c[3] = 0
    c[11, 20, 30] += 5000
    hits = M.PixelHits(M._pixel_axis(), storage=M.hist.storage.Int64())
    hits.view()[:] = c.ravel()
    events = M.hist.Hist(M.hist.axis.Regular(1, 0, 1), storage=M.hist.storage.Int64())
    events.view(flow=True)[1] = 100_000
    cal = M.hot_dead_calibration()
    data = AlgorithmInput(
        runs=[(12, 1)],
        histograms={"pixel_hits": hits, "events": events},
        per_run=RunOutput(),
        constants=Constants(None),
        config=cal.configure(),
    )
    result = M.PixelMaskAlgorithm().run(data)
    assert result.status is AlgorithmStatus.OK, result.message
    hot, dead, occupancy = result.payloads
    for p in result.payloads:
        check_payload(p)
    assert (hot.name, dead.name, occupancy.name) == (
        "PXDMaskedPixelPar",
        "PXDDeadPixelPar",
        "PXDOccupancyInfoPar",
    )
    assert len(hot) == 1
    assert len(dead) == 192_000
    # noise pulses per event: -ln((1 - p) / (1 - b)), with its binomial error
    p, b = c[11, 20, 30] / 1e5, np.median(c[11]) / 1e5
    assert hot.value()[0] == pytest.approx(-np.log((1 - p) / (1 - b)), rel=1e-9)
    assert 0 < hot.errors["value"][0] < 1e-3
    assert occupancy.status[3] == ChannelStatus.DEAD
    assert occupancy.value()[0] == pytest.approx(25e-5, rel=0.01)
    assert result.diagnostics.tables["masked"]["dead_level"].max() == 1


def test_declarations() -> None:
    names = [c.name for c in pxd.calibrations()]
    assert names[:2] == ["pxd-hot-dead", "pxd-hot-dead-cosmic"]
    physics, cosmic = (get_calibration(n) for n in names[:2])
    for cal in (physics, cosmic):
        assert cal.stage == "raw"
        assert cal.input_format == "raw"
        assert cal.payloads == ("PXDMaskedPixelPar", "PXDDeadPixelPar", "PXDOccupancyInfoPar")
    assert isinstance(physics.strategy, SequentialRunByRun)
    assert isinstance(cosmic.strategy, SimpleRunByRun)
    assert physics.skims == M.PHYSICS_SKIMS
    assert cosmic.skims == ("cosmic",)
    assert physics.configure()["force_continue_masking"] is False
    assert cosmic.configure()["force_continue_masking"] is True
    assert physics.configure()["min_hits"] == 15.0


# --------------------------------------------------------------------- simulator, fast
@pytest.mark.slow
def test_background_occupancy_dead_pixels_and_order() -> None:
    cfg = SimConfig(n_runs=1)
    cond = conditions_for_run(cfg, generate_runs(cfg)[0])
    digits = {
        "evt": np.array([0, 0, 2]),
        "m_sensorID": vxd.PXD_IDS[[1, 2, 3]].astype(np.uint16),
        "m_uCellID": np.array([1, 2, 3], np.int16),
        "m_vCellID": np.array([1, 2, 3], np.int16),
        "m_charge": np.array([50, 60, 70], np.int16),
    }
    rng = np.random.default_rng(3)
    out = pxd_background(rng, digits, cond, 400, 2e-3)
    assert np.all(np.diff(out["evt"]) >= 0)
    first = np.searchsorted(out["evt"], [0, 2])
    np.testing.assert_array_equal(out["m_charge"][[first[0], first[0] + 1, first[1]]], [50, 60, 70])
    s = vxd.sensor_index(out["m_sensorID"], "PXD")
    flat = (s * 250 + out["m_uCellID"]) * 768 + out["m_vCellID"]
    dead = (cond.pxd_dead[:, 0] * 250 + cond.pxd_dead[:, 1]) * 768 + cond.pxd_dead[:, 2]
    assert not np.isin(flat, dead).any()
    per_sensor = np.bincount(s, minlength=40) / (400 * 250 * 768)
    expected = pxd_sensor_occupancy(2e-3)
    np.testing.assert_allclose(per_sensor, expected, rtol=0.03)
    assert expected[:16] == pytest.approx(expected[16:].mean() * 1.5)
    assert pxd_background(rng, digits, cond, 400, 0.0) is digits


def test_dead_part_faults() -> None:
    assert len(pxd_dead_pixels("dead_sensor", 17)) == 192_000
    row = pxd_dead_pixels("dead_row", 3 * 768 + 400)
    assert len(row) == 250
    assert np.all(row % 768 == 400)
    assert np.all(row // 192_000 == 3)
    drain = pxd_dead_pixels("dead_drain", 30 * 1000 + 310)
    u, v = (drain % 192_000) // 768, drain % 768
    assert len(drain) == 192
    assert np.all(u == 77)
    assert np.all(v % 4 == 2)
    for bad in (
        {"run": 1, "detector": "PXD", "kind": "dead_row", "value": 40 * 768},
        {"run": 1, "detector": "PXD", "kind": "dead_drain", "value": 1.5},
        {"run": 1, "detector": "SVD", "kind": "dead_sensor", "value": 1},
    ):
        with pytest.raises(ConfigError):
            SimConfig(n_runs=2, faults=[bad])
    with pytest.raises(ConfigError, match="pxd_occupancy"):
        SimConfig(pxd_occupancy=0.5)
    assert "pxd_occupancy" not in SimConfig().to_dict()
    assert SimConfig(pxd_occupancy=1e-3).to_dict()["pxd_occupancy"] == 1e-3


@pytest.mark.slow
def test_background_leaves_every_other_branch_bit_identical(tmp_path: Path) -> None:
    """The background draws from its own stream: with it, only the PXD branches of the
    collision runs change (the track digits stay first in each event); cosmic runs have none."""
    base = dict(n_runs=3, events_per_run=300, seed=4, run_types={"physics": 0.6, "cosmic": 0.4})
    simulate(SimConfig(**base), tmp_path / "a", jobs=1)  # type: ignore[arg-type]
    simulate(SimConfig(**base, pxd_occupancy=1e-4), tmp_path / "b", jobs=1)  # type: ignore[arg-type]
    changed = set()
    for fa in sorted((tmp_path / "a").glob("e*/r*/cdst_*.root")):
        fb = tmp_path / "b" / fa.relative_to(tmp_path / "a")
        ta, tb = uproot.open(fa)["tree"], uproot.open(fb)["tree"]
        assert set(ta.keys()) == set(tb.keys())
        for k in ta.keys():  # noqa: SIM118 (iterating a TTree gives branches)
            a, b = ta[k].array(), tb[k].array()
            if not ak.array_equal(a, b):
                changed.add((fa.name.split("_e0")[0], k))
                if k.startswith("PXDDigits_"):
                    n = ak.num(a)
                    kept = ak.Array([x[:m] for x, m in zip(b.tolist(), n.tolist(), strict=True)])
                    assert ak.array_equal(kept, a, dtype_exact=False)
    assert changed, "the background changed nothing"
    assert all(k.startswith(("PXDDigits_", "nPXDDigits")) for _, k in changed), changed
    assert not any(f.startswith("cdst_cosmic") for f, _ in changed)


# ------------------------------------------------------------------------ closure, slow
@pytest.fixture(scope="module")
def closure(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ConditionsDB, object]:
    out = tmp_path_factory.mktemp("pxd_masks")
    simulate(CLOSURE, out / "data", jobs=2)
    reports, db = calibrate("pxd-hot-dead", out / "data", out / "db.sqlite")
    return out, db, reports["pxd-hot-dead"]


def _truth_sets() -> tuple[set[int], set[int], np.ndarray, np.ndarray]:
    cond = conditions_for_run(CLOSURE, generate_runs(CLOSURE)[0])
    injected = np.concatenate([pxd_dead_pixels(k, v) for k, v in FAULTS.items()])
    dead = set(_flat(cond.pxd_dead[:, 0], cond.pxd_dead[:, 1], cond.pxd_dead[:, 2]).tolist())
    dead |= set(injected.tolist())
    hot_flat = _flat(cond.pxd_hot[:, 0], cond.pxd_hot[:, 1], cond.pxd_hot[:, 2])
    alive = ~np.isin(hot_flat, injected)  # a hot pixel in a dead part is dead
    return dead, set(hot_flat[alive].tolist()), hot_flat[alive], cond.pxd_hot_rate[alive]


def _payload_flat(p: object) -> np.ndarray:
    s = vxd.sensor_index(p.keys["sensorID"], "PXD")  # type: ignore[attr-defined]
    return _flat(s, p.keys["u"].astype(np.int64), p.keys["v"].astype(np.int64))  # type: ignore[attr-defined]


@pytest.mark.slow
def test_closure_every_dead_and_hot_pixel_found_no_live_one_masked(closure) -> None:  # type: ignore[no-untyped-def]
    _, db, report = closure
    assert report.status == "OK", report
    text = str(report)
    # run 1 alone is short of hits (NOT_ENOUGH_DATA): merged with run 2 into one payload
    assert "runs 12.1..12.2: OK IoV 12,1,12,2" in text, text
    true_dead, true_hot, hot_flat, hot_rate = _truth_sets()
    ((_, hot),) = staged(db, "staging", "PXDMaskedPixelPar")
    ((_, dead),) = staged(db, "staging", "PXDDeadPixelPar")
    ((_, occ),) = staged(db, "staging", "PXDOccupancyInfoPar")
    found_dead, found_hot = set(_payload_flat(dead).tolist()), set(_payload_flat(hot).tolist())
    print(
        f"dead: {len(true_dead)} true, {len(found_dead & true_dead)} found, "
        f"{len(found_dead - true_dead)} live called dead; hot: {len(true_hot)} true, "
        f"{len(found_hot & true_hot)} found, {len(found_hot - true_hot)} good called hot; "
        f"{dead.metadata['found']} {hot.metadata['found']}"
    )
    assert found_dead == true_dead
    assert found_hot == true_hot
    assert dead.metadata["found"] == {
        "dead sensor": 192_000,
        "dead row": 250,
        "dead drain": 192,
        "dead pixel": len(true_dead) - 192_000 - 250 - 192,
    }
    # the noise rate of the hot pixels (pulses per event): the project's pull standard
    order, got = np.argsort(hot_flat), np.argsort(_payload_flat(hot))
    assert_closure(hot.value()[got], hot.errors["value"][got], hot_rate[order], "hot-pixel rate")
    # the occupancy info: the simulated background per layer (+ track hits, a few %)
    assert occ.status[17] == ChannelStatus.DEAD
    live = occ.status == ChannelStatus.OK
    ratio = occ.value()[live] / pxd_sensor_occupancy(CLOSURE.pxd_occupancy)[live]
    assert np.all((ratio > 1.0) & (ratio < 1.03)), ratio


@pytest.mark.slow
def test_sample_without_the_pxd_is_not_enough_data(tmp_path: Path) -> None:
    cfg = SimConfig(
        n_runs=1,
        events_per_run=300,
        run_types={"physics": 1.0},
        detectors=["ECL", "CDC"],
        skims=list(M.PHYSICS_SKIMS),
    )
    simulate(cfg, tmp_path / "data", jobs=1)
    reports, _ = calibrate("pxd-hot-dead", tmp_path / "data", tmp_path / "db.sqlite")
    report = reports["pxd-hot-dead"]
    assert report.status == "NOT_ENOUGH_DATA"
    assert not report.staged
    assert "PXDDigits" in str(report), str(report)


# ---------------------------------------------------------------------- CLI, notebook
@pytest.mark.slow
def test_cli_on_the_sample_bucket(tmp_path: Path) -> None:
    db = tmp_path / "cal.sqlite"
    base = ["calibrate", "--data", str(SAMPLE), "--db", str(db), "--quiet"]
    result = CliRunner().invoke(cli, [*base, "pxd-hot-dead", "--runs", "1-12", "--staging", "p"])
    assert "NOT_ENOUGH_DATA" in result.output, result.output
    assert "(15 per pixel)" in result.output
    result = CliRunner().invoke(cli, [*base, "pxd-hot-dead-cosmic", "--staging", "c"])
    assert result.exit_code == 0, result.output
    ((entry, hot),) = staged(ConditionsDB(db), "c", "PXDMaskedPixelPar")
    assert (entry.iov.first_run, entry.iov.final_run) == (6, 6)
    # forced through: the hottest truth pixels of the cosmic run, no other pixel
    truth_cfg = SimConfig.from_file(SAMPLE.parent / "bucket.toml")
    cond = conditions_for_run(truth_cfg, generate_runs(truth_cfg)[5])
    true_hot = set(_flat(cond.pxd_hot[:, 0], cond.pxd_hot[:, 1], cond.pxd_hot[:, 2]).tolist())
    assert len(hot) > 10
    assert set(_payload_flat(hot).tolist()) <= true_hot
    cfg = tmp_path / "force.json"
    cfg.write_text(json.dumps({"force_continue_masking": True}))
    result = CliRunner().invoke(
        cli,
        [
            *base,
            "pxd-hot-dead",
            "--runs",
            "1-2",
            "--staging",
            "f",
            "--config",
            f"pxd-hot-dead={cfg}",
        ],
    )
    assert result.exit_code == 0, result.output


@pytest.mark.notebooks
@pytest.mark.slow
def test_pxd_masks_notebook(sample: Path) -> None:
    numbers = execute("pxd_masks.ipynb", sample)
    assert numbers["physics_status"] == "NOT_ENOUGH_DATA"
    assert numbers["cosmic_status"] == "OK"
    assert numbers["cosmic_hot_found"] >= 10
    assert numbers["cosmic_hot_false"] == 0
    assert numbers["toy_dead_missed"] == 0
    assert numbers["toy_live_called_dead"] == 0
    assert numbers["toy_hot_missed"] == 0
    assert numbers["toy_good_called_hot"] == 0
