"""SVD calibrations: closure on the simulator, algorithm pieces on arrays, bad input, CLI and
notebook.

One hadron sample (``SAMPLE_CFG``: 6 runs of 25k generated events, ~11k hadron-skim events a run,
the intervention at run 4: every raw CoG time +4 ns) serves both calibrations: the cluster time
(two IoVs of three runs, each with > 10 000 clusters on every layer-3 sensor side) and the hot
strips run by run (20 injected hot strips, 6 runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from b2calib.calibration import AlgorithmInput, AlgorithmStatus, Constants
from b2calib.calibration.toolkit import binomial_interval
from b2calib.cli import cli
from b2calib.conditions import ChannelStatus, ConditionsDB
from b2calib.conditions.payloadtypes import check_payload
from b2calib.detectors import svd as S
from b2calib.detectors.svd import collectors, hot_strips, time
from b2calib.engine import Dataset, collect
from b2calib.geometry import top as geo_top
from b2calib.geometry import vxd
from b2calib.sim import SimConfig, simulate
from b2calib.sim.conditions import (
    SVD_RAW_SHIFT,
    _shift_raw,
    conditions_for_run,
    svd_hot_strip_index,
    truth_payloads,
)
from b2calib.sim.runs import generate_runs
from tests.closure import assert_closure, calibrate, pulls, staged
from tests.conftest import SAMPLE
from tests.test_notebooks import execute

CALS = {c.name: c for c in S.calibrations()}
HADRON = {"bhabha": 0.0, "gamma_gamma": 0.0, "mumu": 0.0, "hadron": 1.0, "tautau": 0.0}


def _config(**kw: object) -> SimConfig:
    base: dict[str, object] = dict(
        exp=12,
        seed=7,
        processes=["hadron"],
        process_fractions=HADRON,
        skims=["hlt_hadron"],
        detectors=["SVD"],
        run_types={"physics": 1.0},
        continuum_fraction=0.0,
    )
    return SimConfig(**(base | kw))  # type: ignore[arg-type]


SAMPLE_CFG = _config(n_runs=6, events_per_run=25000, intervention_run=4)


def _truth(cfg: SimConfig, run: int):  # type: ignore[no-untyped-def]
    return conditions_for_run(cfg, next(r for r in generate_runs(cfg) if r.run == run))


@pytest.fixture(scope="module")
def hadron(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ConditionsDB]:
    """The hadron sample calibrated by both SVD calibrations."""
    out = tmp_path_factory.mktemp("svd")
    simulate(SAMPLE_CFG, out / "data", jobs=2)
    reports, db = calibrate(
        [CALS["svd-hot-strips"], CALS["svd-time"]], out / "data", out / "db.sqlite"
    )
    assert {k: r.status for k, r in reports.items()} == {
        "svd-hot-strips": "OK",
        "svd-time": "OK",
    }
    return out, db


# ------------------------------------------------------------------------------ closure
def _time_curve(
    coef: np.ndarray, cov: np.ndarray, lo: np.ndarray, hi: np.ndarray, true: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fitted t(r), its error from the fit covariance and the true t(r) at five raw times
    spread over each side's fitted range: (sides, 5) each."""
    frac = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    r = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
    powers = r[..., None] ** np.arange(4)  # (sides, 5, 4)
    fit = np.einsum("spk,sk->sp", powers, coef)
    err = np.sqrt(np.einsum("spk,skl,spl->sp", powers, cov, powers))
    return fit, err, np.einsum("spk,sk->sp", powers, true)


@pytest.mark.slow
def test_time_closure(hadron: tuple[Path, ConditionsDB]) -> None:
    out, db = hadron
    entries = staged(db, "staging", "SVDCoGTimeCalibrations")
    # the +4 ns raw-time move at run 4 starts a new payload
    assert [(e.iov.first_run, e.iov.final_run) for e, _ in entries] == [(1, 3), (4, -1)]
    result = collect(
        collectors.ClusterTimeCollector(),
        Dataset.from_paths(str(out / "data" / "e0012" / "*" / "*.root")),
        executor="inprocess",
        cache=False,
        progress=False,
    )
    config = CALS["svd-time"].configure()
    fitted, errors, truth = [], [], []
    for (entry, payload), runs in zip(entries, ([1, 2, 3], [4, 5, 6]), strict=True):
        sel = [(12, r) for r in runs]
        data = AlgorithmInput(
            sel, result.output.merged(sel), result.output, Constants(db, []), config
        )
        res = time.TimeCalibrationAlgorithm().run(data)
        assert res.status is AlgorithmStatus.OK, res.message
        # the staged payload is this execution's
        for i in range(4):
            np.testing.assert_array_equal(res.payloads[0].value(f"a{i}"), payload.value(f"a{i}"))
        table = res.diagnostics.tables["fits"]
        ok = payload.status == ChannelStatus.OK
        assert ok.sum() >= 0.8 * 344, payload.status
        # a side flagged has NaN coefficients, never a number
        assert np.all(np.isnan(payload.value("a0")[~ok]))
        coef = np.stack([table[f"a{i}"] for i in range(4)], axis=1)
        cov = np.empty((344, 4, 4))
        for i in range(4):
            for j in range(i, 4):
                cov[:, i, j] = cov[:, j, i] = table[f"cov{i}{j}"]
        true = _truth(SAMPLE_CFG, runs[0]).svd_time.reshape(-1, 4)
        fit, err, t_true = _time_curve(
            coef[ok], cov[ok], table["raw_lo"][ok], table["raw_hi"][ok], true[ok]
        )
        p, d = (fit - t_true) / err, fit - t_true
        print(
            f"IoV {entry.iov}: {ok.sum()} sides; pull mean per raw point {p.mean(axis=0).round(2)}"
        )
        print(f"  fitted - true t (ns), mean per raw point {d.mean(axis=0).round(3)}")
        print(f"  chi2/ndf median {np.median(table['chi2'][ok] / table['ndf'][ok]):.2f}")
        print(f"  monotonic over -80..120 ns: {table['monotonic_full_range'][ok].mean():.0%}")
        fitted.append(fit.ravel())
        errors.append(err.ravel())
        truth.append(t_true.ravel())
    assert_closure(np.concatenate(fitted), np.concatenate(errors), np.concatenate(truth), "t(raw)")
    # the method's bias: the calibrated time follows the true one to 0.07 ns on average at
    # every point of the fitted ranges (the zeroing of low cells truncates each raw bin's event
    # T0 distribution by whole bunches: a bias of ~0.03 ns periodic in t)
    diff = (np.concatenate(fitted) - np.concatenate(truth)).reshape(-1, 5)
    print(f"t(raw) - true: mean {diff.mean():+.4f} ns, per point {diff.mean(axis=0).round(3)}")
    assert np.all(np.abs(diff.mean(axis=0)) < 0.07)
    assert abs(diff.mean()) < 0.02


@pytest.mark.slow
def test_hot_strips_closure(hadron: tuple[Path, ConditionsDB]) -> None:
    _, db = hadron
    truth = _truth(SAMPLE_CFG, 1)
    hot = svd_hot_strip_index(truth)
    assert len(np.unique(hot)) == len(hot) == 20
    flags = staged(db, "staging", "SVDHotStripsCalibrations")
    occupancy = staged(db, "staging", "SVDOccupancyCalibrations")
    assert [(e.iov.first_run, e.iov.final_run) for e, _ in flags] == [
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 4),
        (5, 5),
        (6, -1),
    ]
    side = np.repeat(np.arange(collectors.N_SIDES), vxd.SVD_SIDE_STRIPS)
    fitted, errors, expected = [], [], []
    for (_, flag), (_, occ) in zip(flags, occupancy, strict=True):
        assert flag.status is not None
        found = flag.status == ChannelStatus.HOT
        # every injected hot strip found, no other strip flagged
        np.testing.assert_array_equal(np.flatnonzero(found), np.sort(hot))
        np.testing.assert_array_equal(flag.value("value"), found.astype(float))
        v, e = occ.value("value"), occ.errors["value"]
        # the background occupancy of a hot strip: its side's mean over the other strips
        good = (~found).astype(float)
        bg = np.bincount(side, weights=v * good) / np.bincount(side, weights=good)
        expected.append(1 - (1 - truth.svd_hot_rate) * (1 - bg[side[hot]]))
        fitted.append(v[hot])
        errors.append(e[hot])
        assert np.all(e > 0)
    assert_closure(
        np.concatenate(fitted), np.concatenate(errors), np.concatenate(expected), "hot occupancy"
    )


# --------------------------------------------------------------------------- pieces
def test_declarations() -> None:
    assert list(CALS) == ["svd-hot-strips", "svd-time"]
    t, h = CALS["svd-time"], CALS["svd-hot-strips"]
    assert t.payloads == ("SVDCoGTimeCalibrations",)
    assert h.payloads == ("SVDHotStripsCalibrations", "SVDOccupancyCalibrations")
    assert t.skims == ("hlt_hadron",)
    assert (t.run_type, t.beam_energy, t.magnet_on) == ("physics", ("4S", "Continuum"), True)
    assert (t.stage, h.stage) == ("post-tracking", "raw")
    assert t.expert_config["min_entries_layer3"] == 10000
    assert t.expert_config["boundary_shift_ns"] == 2.0
    assert (h.expert_config["absolute_occupancy"], h.expert_config["relative_occupancy"]) == (
        0.2,
        5.0,
    )


def test_strip_geometry_and_truth() -> None:
    assert vxd.N_SVD_STRIPS == 14 * 2 * 768 + 158 * (768 + 512)
    layer = np.repeat(vxd.SVD_SENSOR_TABLE[:, 0], 2)
    v_side = np.tile([True, False], vxd.N_SVD_SENSORS)
    np.testing.assert_array_equal(vxd.SVD_SIDE_STRIPS, np.where(v_side & (layer >= 4), 512, 768))
    assert vxd.SVD_RAW_RANGE == (-80.0, 120.0)
    for run in (1, 4):
        c = _truth(SAMPLE_CFG, run)
        # the truth's hot strips lie on their sides
        assert np.all(c.svd_hot[:, 2] < vxd.SVD_SIDE_STRIPS[2 * c.svd_hot[:, 0] + c.svd_hot[:, 1]])
        for p in truth_payloads(c):
            if p.name.startswith("SVD"):
                check_payload(p)
        flags = next(p for p in truth_payloads(c) if p.name == "SVDHotStripsCalibrations")
        assert len(flags) == vxd.N_SVD_STRIPS
        assert flags.value("value").sum() == 20
    # the intervention moves the raw time: t = p(r - 4 ns)
    before, after = _truth(SAMPLE_CFG, 3).svd_time, _truth(SAMPLE_CFG, 4).svd_time
    r = np.linspace(-30, 30, 7)
    t_before = np.polynomial.polynomial.polyval(r - SVD_RAW_SHIFT, before[5, 0])
    t_after = np.polynomial.polynomial.polyval(r, after[5, 0])
    np.testing.assert_allclose(t_after, t_before, atol=0.01)
    np.testing.assert_allclose(_shift_raw(before, 0.0), before)


def test_binomial_interval_is_clopper_pearson() -> None:
    k = np.array([0, 1, 7, 50, 100])
    lo, hi = binomial_interval(k, 100, cl=0.6827)
    for i, kk in enumerate(k):
        ci = stats.binomtest(int(kk), 100).proportion_ci(confidence_level=0.6827, method="exact")
        assert lo[i] == pytest.approx(ci.low, abs=1e-9)
        assert hi[i] == pytest.approx(ci.high, abs=1e-9)
    assert lo[0] == 0
    assert hi[-1] == 1
    assert hi[0] > 0


def test_binomial_interval_of_distinct_pairs_equals_the_row_unique_reference() -> None:
    # issue 20: the distinct (k, n) found by one flat sort give bit for bit the intervals of
    # the np.unique(axis=1) over (k, n) rows it replaced (7x faster on the 225k SVD strips);
    # with one n for every k (a sample's events), the distinct k alone (5x faster again),
    # counted by a bincount when they are integers (10x faster again), else sorted
    rng = np.random.default_rng(3)
    n = rng.integers(0, 300, 20000).astype(np.float64)
    k = np.minimum(rng.poisson(3.0, n.size), n)
    n[:4], k[:4] = [0.0, 5.0, 5.0, 9.0], [0.0, 5.0, 0.0, 9.0]
    one_n = np.full(n.size, 300.0)
    signed = k.copy()
    signed[k == 0] = -0.0
    cases = [(k, n, n), (k, one_n, one_n), (k, one_n, 300.0), (n, n, n)]
    cases += [(k + 0.25, one_n, 300.0), (signed, one_n, 300.0), (k[k > 2], one_n[k > 2], 300.0)]
    for method in ("clopper-pearson", "jeffreys"):
        for kk, nn, given in cases:
            pairs, inverse = np.unique(np.stack([kk, nn]), axis=1, return_inverse=True)
            a = 0.5 * (1.0 - 0.682689492137086)
            uk, un = pairs
            with np.errstate(invalid="ignore", divide="ignore"):
                if method == "jeffreys":
                    lo = stats.beta.ppf(a, uk + 0.5, un - uk + 0.5)
                    hi = stats.beta.ppf(1.0 - a, uk + 0.5, un - uk + 0.5)
                else:
                    lo = stats.beta.ppf(a, uk, un - uk + 1.0)
                    hi = stats.beta.ppf(1.0 - a, uk + 1.0, un - uk)
            lo, hi = np.where(uk <= 0, 0.0, lo), np.where(uk >= un, 1.0, hi)
            lo, hi = np.where(un <= 0, np.nan, lo), np.where(un <= 0, np.nan, hi)
            got_lo, got_hi = binomial_interval(kk, given, method=method)
            np.testing.assert_array_equal(got_lo, lo[inverse.ravel()])
            np.testing.assert_array_equal(got_hi, hi[inverse.ravel()])
    lo2, hi2 = binomial_interval(k.reshape(-1, 4), 300.0)
    assert lo2.shape == hi2.shape == (5000, 4)


def test_find_hot_strips_absolute_relative_and_gradient() -> None:
    rng = np.random.default_rng(1)
    n = 10000
    side = np.repeat(np.arange(collectors.N_SIDES), vxd.SVD_SIDE_STRIPS)
    first = vxd.SVD_SIDE_FIRST
    rate = np.full(vxd.N_SVD_STRIPS, 2e-3)
    # a track-like gradient: four times the side's mean at one end, not hot
    strip = np.arange(vxd.N_SVD_STRIPS) - first[side]
    rate[side == 0] *= 1 + 7 * np.exp(-strip[side == 0] / 60.0)
    absolute, relative, weak = first[10] + 5, first[20] + 7, first[30] + 3
    rate[absolute] = 0.3  # above 20 %
    rate[relative] = 0.05  # 25 x the mean: found by the relative pass
    rate[weak] = 0.008  # 4 x the mean: not hot
    hits = rng.binomial(n, rate)
    status, mean, passes = hot_strips.find_hot_strips(hits, n)
    np.testing.assert_array_equal(
        np.flatnonzero(status == ChannelStatus.HOT), sorted([absolute, relative])
    )
    assert passes == 1
    assert mean[0] == pytest.approx(np.mean(hits[side == 0]), rel=0.01)
    # with few events the relative pass flags nothing it cannot tell from a fluctuation
    few = rng.binomial(50, rate)
    status, _, _ = hot_strips.find_hot_strips(few, 50)
    assert set(np.flatnonzero(status == ChannelStatus.HOT)) <= {absolute, relative}
    assert absolute in np.flatnonzero(status == ChannelStatus.HOT)


def _toy_counts(rng: np.random.Generator, coef: np.ndarray, n_per_side: int) -> np.ndarray:
    """(sides, raw, T0) counts of the simulator's model: bunch-crossing collision times, 2.5 ns
    cluster time resolution, 0.8 ns event T0 resolution, raw = t^-1(t_true)."""
    from b2calib.sim.detector import _svd_raw_time

    ns = len(coef)
    nr, rlo, rhi = collectors.RAW_AXIS
    nt, tlo, thi = collectors.T0_AXIS
    counts = np.zeros((ns, nr, nt))
    for s in range(ns):
        t_coll = rng.integers(-8, 9, n_per_side) * geo_top.RF_PERIOD_NS
        raw = _svd_raw_time(
            np.tile(coef[s], (n_per_side, 1)), t_coll + rng.normal(0, 2.5, n_per_side)
        )
        t0 = t_coll + rng.normal(0, 0.8, n_per_side)
        h, _, _ = np.histogram2d(raw, t0, bins=(nr, nt), range=((rlo, rhi), (tlo, thi)))
        counts[s] = h
    return counts


def test_fit_time_curves_on_toys() -> None:
    rng = np.random.default_rng(3)
    coef = np.tile([-2.0, 1.0, 0.002, -2e-5], (40, 1))
    coef[:, 0] += rng.normal(0, 1.5, 40)
    counts = _toy_counts(rng, coef, 20000)
    counts[39] *= 0  # an empty side
    counts[38] = np.round(counts[38] / 100)  # a starved one
    cfg = CALS["svd-time"].configure()
    curves = time.fit_time_curves(counts, cfg)
    ok = curves.status == ChannelStatus.OK
    assert ok[:38].all()
    assert curves.status[38] == curves.status[39] == ChannelStatus.NOT_ENOUGH_DATA
    assert np.all(np.isnan(curves.coef[~ok]))
    fit, err, t_true = _time_curve(
        curves.coef[ok], curves.cov[ok], curves.raw_lo[ok], curves.raw_hi[ok], coef[ok]
    )
    s = pulls(fit.ravel(), err.ravel(), t_true.ravel())
    print("toy t(raw)", s)
    assert abs(s.mean) < 0.3
    assert 0.7 < s.width < 1.3
    assert np.max(np.abs(fit - t_true)) < 0.3
    # a curve bending back inside its fitted range is FAILED, never stored
    bent = counts[:2].copy()
    bent[0] = np.flip(bent[0], axis=1)  # event T0 decreasing with the raw time
    flagged = time.fit_time_curves(bent, cfg)
    assert flagged.status[0] == ChannelStatus.FAILED
    assert flagged.status[1] == ChannelStatus.OK


def test_time_algorithm_needs_10000_layer3_clusters() -> None:
    rng = np.random.default_rng(5)
    coef = np.tile([-2.0, 1.0, 0.002, -2e-5], (collectors.N_SIDES, 1))
    counts = np.zeros((collectors.N_SIDES, collectors.RAW_AXIS[0], collectors.T0_AXIS[0]))
    counts[:28] = _toy_counts(rng, coef[:28], 3000)  # layer 3: 3000 each
    h = collectors.ClusterTimeCollector().collect(_empty_events())["t0_vs_raw"]
    h.view()[...] = counts.reshape(h.view().shape)
    data = AlgorithmInput(
        [(12, 1)], {"t0_vs_raw": h}, {}, Constants(None, []), CALS["svd-time"].configure()
    )  # type: ignore[arg-type]
    res = time.TimeCalibrationAlgorithm().run(data)
    assert res.status is AlgorithmStatus.NOT_ENOUGH_DATA
    assert "layer-3 sensor side has 3" in res.message
    assert "< 10000" in res.message


def _empty_events():  # type: ignore[no-untyped-def]
    import awkward as ak

    branches = collectors.ClusterTimeCollector().branches
    return ak.Array({k: [] for k in branches})


def test_raw_time_boundaries() -> None:
    cfg = CALS["svd-time"].configure()
    runs = [(12, r) for r in range(1, 9)]
    means = [
        (1.0, 0.1, 5000.0),
        (1.2, 0.1, 5000.0),
        (9.0, 3.0, 10.0),
        (1.5, 0.1, 5000.0),
        (4.0, 0.1, 5000.0),
        (4.2, 0.1, 5000.0),
        (2.9, 0.1, 5000.0),
        (5.3, 0.1, 5000.0),
    ]
    # run 3 too few clusters; the 1.0 -> 1.5 drift no boundary; 1.0 -> 4.0 is one (run 5);
    # 4.0 -> 2.9 (1.1 ns) is not; 4.0 -> 5.3 is not either
    assert time.raw_time_boundaries(runs, means, cfg) == [(12, 5)]
    assert time.raw_time_boundaries(runs, means, {**cfg, "find_boundaries": False}) == []
    # a move of 2.5 ns measured to 1 ns is not significant (3 sigma)
    noisy = [(1.0, 0.7, 500.0), (3.5, 0.7, 500.0)]
    assert time.raw_time_boundaries(runs[:2], noisy, cfg) == []


# ----------------------------------------------------------------------------- bad input
def test_sample_without_the_svd(tmp_path: Path) -> None:
    cfg = _config(n_runs=2, events_per_run=400, detectors=["CDC"])
    simulate(cfg, tmp_path / "data", jobs=1)
    reports, _db = calibrate(
        [CALS["svd-hot-strips"], CALS["svd-time"]], tmp_path / "data", tmp_path / "db.sqlite"
    )
    for name, report in reports.items():
        assert report.status != "OK", name
        assert not report.staged
        messages = " ".join(e.message for e in report.executions)
        print(name, report.status, report.message, messages)
        # the files lack the SVD branches: skipped with the reason, the runs left without data
        assert report.status == "NOT_ENOUGH_DATA"
        assert "missing-branch" in messages, (name, report.message, messages)
        assert "runs without usable data: 12.1, 12.2" in report.message


def test_no_svd_clusters_is_not_enough_data() -> None:
    """Files with the SVD branches but no cluster (the SVD off in those events): both
    algorithms say NOT_ENOUGH_DATA with the reason, no payload of NaN."""
    import awkward as ak

    n = 600
    events = ak.Array(
        {
            "EventT0_m_eventT0": np.zeros(n, np.float32),
            "EventT0_m_hasEventT0": np.ones(n, np.int8),
            **{
                b: ak.Array([[]] * n, with_name=None)
                for b in (
                    "SVDClusters_m_sensorID",
                    "SVDClusters_m_isUCluster",
                    "SVDClusters_m_clsTime",
                    "SVDClusters_m_trackIndex",
                    "SVDClusters_m_firstStrip",
                    "SVDClusters_m_clsSize",
                )
            },
        }
    )
    hists = {
        **collectors.ClusterTimeCollector().collect(events),
        **collectors.StripHitCollector().collect(events),
    }
    for alg, name in (
        (time.TimeCalibrationAlgorithm(), "svd-time"),
        (hot_strips.HotStripsAlgorithm(), "svd-hot-strips"),
    ):
        data = AlgorithmInput(
            [(12, 1)],
            hists,
            {},
            Constants(None, []),
            CALS[name].configure(),  # type: ignore[arg-type]
        )
        res = alg.run(data)
        assert res.status is AlgorithmStatus.NOT_ENOUGH_DATA, (name, res.message)
        assert not res.payloads
        print(name, res.message)


# --------------------------------------------------------------------------- CLI, notebook
@pytest.mark.slow
def test_cli_on_the_sample_bucket(tmp_path: Path) -> None:
    db = tmp_path / "cal.sqlite"
    base = ["calibrate", "--data", str(SAMPLE), "--runs", "1-11", "--db", str(db), "--quiet"]
    # the bucket's hadron skim (~10 events a run) is far from the 10 000 layer-3 clusters
    result = CliRunner().invoke(cli, [*base, "svd-time", "--staging", "strict"])
    assert "NOT_ENOUGH_DATA" in result.output
    assert "< 10000" in result.output
    # the hot strips need 100 events at least: the runs merge until they have them
    path = tmp_path / "hot.json"
    path.write_text(json.dumps({"min_events": 100}))
    result = CliRunner().invoke(
        cli, [*base, "svd-hot-strips", "--staging", "low", "--config", f"svd-hot-strips={path}"]
    )
    assert result.exit_code == 0, result.output
    database = ConditionsDB(db)
    assert {e.name for e in database.iovs("low")} == {
        "SVDHotStripsCalibrations",
        "SVDOccupancyCalibrations",
    }
    hot = svd_hot_strip_index(_truth(_bucket_config(), 1))
    for _, flags in staged(database, "low", "SVDHotStripsCalibrations"):
        assert flags.status is not None
        np.testing.assert_array_equal(
            np.flatnonzero(flags.status == ChannelStatus.HOT), np.sort(hot)
        )


def _bucket_config() -> SimConfig:
    import tomllib

    with open(SAMPLE.parent / "bucket.toml", "rb") as f:
        return SimConfig(**tomllib.load(f)["simulation"])


@pytest.mark.notebooks
@pytest.mark.slow
def test_svd_notebook(sample: Path) -> None:
    numbers = execute("svd.ipynb", sample)
    # hot strips: every injected one found in every IoV, none false
    assert numbers["hot_found"] == numbers["hot_true"] == 20
    assert numbers["hot_false"] == 0
    assert abs(float(numbers["hot_occupancy_mean_pull"])) < 1.0  # type: ignore[arg-type]
    # cluster time: NOT_ENOUGH_DATA at the defaults; the intervention found; a few sides
    assert numbers["time_default_status"] == "NOT_ENOUGH_DATA"
    assert numbers["time_boundary_run"] == 7
    assert numbers["time_payloads"] == 2
    assert int(numbers["time_sides_ok"]) >= 5  # type: ignore[call-overload]
    assert abs(float(numbers["time_mean_diff_ns"])) < 0.5  # type: ignore[arg-type]
    assert numbers["staged"] == sorted(
        ["SVDCoGTimeCalibrations", "SVDHotStripsCalibrations", "SVDOccupancyCalibrations"]
    )


def test_a_cluster_on_no_svd_sensor_names_its_branch() -> None:
    """A VxdID that is no SVD sensor is a value no sound file holds: ``BadValueError`` naming
    the branch and the ID (the engine then leaves the file out, naming it)."""
    from b2calib.detectors.svd.collectors import side_index
    from b2calib.exceptions import BadValueError
    from b2calib.geometry import vxd

    good = vxd.SVD_IDS[:2]
    np.testing.assert_array_equal(side_index(good, [1, 0]), [1, 2])
    with pytest.raises(BadValueError, match=r"unknown SVD VxdID: \[7\]") as err:
        side_index([good[0], 7], [1, 0])
    assert err.value.branch == "SVDClusters_m_sensorID"
