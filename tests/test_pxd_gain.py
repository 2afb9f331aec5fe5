"""PXD gain map (pxd-gain): the median and its error, the fallbacks, the layout of the truth,
the algorithm on toy histograms, bad input, the command line and the closure on the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import hist
import numpy as np
import pytest
from click.testing import CliRunner

from b2calib.calibration import AlgorithmInput, AlgorithmStatus, Constants
from b2calib.calibration.toolkit import channel_payload
from b2calib.cli import cli
from b2calib.conditions import ChannelStatus, ConditionsDB
from b2calib.conditions.iov import IoV
from b2calib.conditions.payloadtypes import PAYLOAD_TYPES
from b2calib.detectors.pxd import gain as G
from b2calib.engine import RunOutput
from b2calib.geometry import vxd
from b2calib.sim import SimConfig, simulate
from b2calib.sim.conditions import conditions_for_run, truth_payloads
from b2calib.sim.runs import generate_runs
from tests.closure import assert_closure, calibrate, ok_channels, pulls, staged
from tests.conftest import SAMPLE
from tests.test_notebooks import execute


def ak_flat(x: ak.Array) -> np.ndarray:
    return np.asarray(ak.to_numpy(ak.flatten(x)))


BHABHA_ONLY = {"bhabha": 1.0, "gamma_gamma": 0.0, "mumu": 0.0, "hadron": 0.0, "tautau": 0.0}


def _config(**kw: object) -> SimConfig:
    base: dict[str, object] = dict(
        exp=12,
        seed=7,
        processes=["bhabha"],
        process_fractions=BHABHA_ONLY,
        skims=["hlt_bhabha"],
        detectors=["PXD"],
        run_types={"physics": 1.0},
        continuum_fraction=0.0,
        pxd_excluded_fraction=0.0,  # the PXD in every run
    )
    return SimConfig(**(base | kw))  # type: ignore[arg-type]


#: ~4 track clusters per Bhabha event: ~500k clusters, ~550 of the 960 bins (those Bhabha
#: tracks reach) with >= 200 clusters, ~1 % per bin.
CLOSURE = _config(n_runs=2, events_per_run=60000)
LOW = {"safety_factor": 0.0}


def _truth_gain(cfg: SimConfig, run: int = 1) -> np.ndarray:
    r = next(x for x in generate_runs(cfg) if x.run == run)
    return conditions_for_run(cfg, r).pxd_gain.ravel()


# ------------------------------------------------------------------------------ pieces
def test_median_and_its_error_on_gaussian_toys() -> None:
    """Interpolated histogram medians of 2000 toys of 400 Gaussian values: unbiased, their
    error is 1.2533 sigma / sqrt(n) and gives unit pulls."""
    rng = np.random.default_rng(3)
    n, sigma, rows = 400, 0.2, 2000
    x = rng.normal(1.0, sigma, (rows, n))
    edges = np.linspace(*G.RATIO_BINS[1:], G.RATIO_BINS[0] + 1)
    counts = np.stack([np.histogram(r, edges)[0] for r in x])
    median, error = G.histogram_median(counts, edges)
    assert np.median(error) == pytest.approx(1.2533 * sigma / np.sqrt(n), rel=0.05)
    pull = (median - 1.0) / error
    assert abs(pull.mean()) < 0.1
    assert 0.9 < pull.std() < 1.1
    assert error.std() / error.mean() < 0.2  # a stable estimate, not a noisy one
    # against the exact sample median: within the error (the histogram's 0.01 bins)
    assert np.abs(median - np.median(x, axis=1)).max() < error.mean()
    empty_m, empty_e = G.histogram_median(np.zeros((1, len(edges) - 1)), edges)
    assert np.isnan(empty_m[0])
    assert np.isnan(empty_e[0])


def test_fallbacks_take_the_row_mean_then_one() -> None:
    gain = np.full(G.N_BINS, np.nan)
    error = np.full(G.N_BINS, np.nan)
    measured = np.zeros(G.N_BINS, bool)
    g = gain.reshape(vxd.N_PXD_SENSORS, 4, 6)
    e, m = error.reshape(g.shape), measured.reshape(g.shape)
    g[3, :2, 1], e[3, :2, 1], m[3, :2, 1] = [1.1, 0.9], 0.01, True  # sensor 3, v row 1
    out, err, code = G.fill_fallbacks(gain, error, measured)
    o, r, c = out.reshape(g.shape), err.reshape(g.shape), code.reshape(g.shape)
    assert o[3, 0, 1] == 1.1
    assert c[3, 0, 1] == 0
    assert r[3, 0, 1] == 0.01
    assert np.allclose(o[3, 2:, 1], 1.0)
    assert np.all(c[3, 2:, 1] == 1)
    assert np.allclose(r[3, 2:, 1], np.std([1.1, 0.9], ddof=1))
    assert np.all(o[3, :, 0] == 1.0)
    assert np.all(c[3, :, 0] == 2)
    assert np.all(np.isnan(r[3, :, 0]))
    assert int((code == 2).sum()) == G.N_BINS - 4


def test_bins_have_the_truth_layout() -> None:
    cfg = _config(n_runs=1, events_per_run=10)
    run = generate_runs(cfg)[0]
    truth = next(
        p for p in truth_payloads(conditions_for_run(cfg, run)) if p.name == "PXDGainMapPar"
    )
    for k, v in G.bin_keys().items():
        assert np.array_equal(truth.keys[k], v), k
    assert PAYLOAD_TYPES[G.GAIN_PAYLOAD].rows == G.N_BINS
    sensor = np.repeat(vxd.PXD_IDS, 4)
    u = np.tile([0, 62, 63, 249], vxd.N_PXD_SENSORS)
    b = G.bin_of(sensor, u, np.full(len(u), 767))
    assert np.array_equal(b[:4], [5, 5, 11, 23])  # ubin = u * 4 // 250, vbin = v * 6 // 768
    keys = G.bin_keys()
    assert np.array_equal(keys["sensorID"][b], sensor)
    assert np.array_equal(keys["ubin"][b], u * 4 // 250)
    assert np.all(keys["vbin"][b] == 5)


def _toy_input(current: np.ndarray, true: np.ndarray, n: np.ndarray) -> AlgorithmInput:
    """Charge-ratio histograms as the collector fills them: charge / (expected * current)."""
    rng = np.random.default_rng(5)
    h_n = hist.Hist(
        hist.axis.Integer(0, G.N_BINS, name="bin", flow=False), storage=hist.storage.Int64()
    )
    h_r = hist.Hist(
        h_n.axes[0], hist.axis.Regular(*G.RATIO_BINS, name="ratio"), storage=hist.storage.Int64()
    )
    b = np.repeat(np.arange(G.N_BINS), n)
    # a Landau-like ratio of median 1 at the true gain (Moyal, 15 % scale)
    z = rng.standard_normal(len(b))
    moyal = -2.0 * np.log(np.abs(z))  # standard Moyal: median 0.78760, mean 1.27036
    ratio = (1.0 + 0.15 * (moyal - 1.27036)) / (1.0 + 0.15 * (0.78760 - 1.27036))
    ratio *= true[b] / current[b]
    h_n.fill(b)
    h_r.fill(b, ratio)
    payload = channel_payload(
        G.GAIN_PAYLOAD, G.bin_keys(), current, np.full(G.N_BINS, 0.01), None, units="1"
    )
    constants = Constants(None, overlay=[(IoV(12, 1, 12, 2), payload)])
    histograms = {"clusters": h_n, "charge_ratio": h_r}
    per_run = RunOutput({(12, 1): histograms})
    return AlgorithmInput([(12, 1)], histograms, per_run, constants, dict(G.DEFAULT_CONFIG))


def test_algorithm_multiplies_by_the_current_gain() -> None:
    """The ratio is relative to the current gains (the input conditions): the gain is the
    median ratio times them; starved bins fall back, flagged."""
    rng = np.random.default_rng(9)
    true = rng.normal(1.0, 0.08, G.N_BINS)
    current = true * rng.normal(1.0, 0.05, G.N_BINS)
    n = np.full(G.N_BINS, 2000)  # 1.9M clusters: below basf2's 11 x 200 x 960
    n[:24] = 150  # sensor 0 starved: default 1.0
    n[30] = 150  # sensor 1, u bin 1, v bin 0: its row's mean
    data = _toy_input(current, true, n)
    data.config = {**G.DEFAULT_CONFIG, "safety_factor": 1.0}
    result = G.PXDGainAlgorithm().run(data)
    assert result.status is AlgorithmStatus.OK, result.message
    (p,) = result.payloads
    ok = ok_channels(p)
    assert int(ok.sum()) == G.N_BINS - 25
    assert_closure(p.value("value")[ok], p.errors["value"][ok], true[ok], "toy gains")
    fb = p.value("fallback")
    assert np.all(fb[:24] == 2)
    assert np.all(p.value("value")[:24] == 1.0)
    row = [24, 36, 42]  # the other u bins of sensor 1, v bin 0
    assert fb[30] == 1
    assert p.value("value")[30] == pytest.approx(p.value("value")[row].mean())
    assert np.all(p.status[fb > 0] == ChannelStatus.NOT_ENOUGH_DATA)
    # basf2's safety factor: 11 x 200 x 960 clusters needed
    data.config = dict(G.DEFAULT_CONFIG)
    short = G.PXDGainAlgorithm().run(data)
    assert short.status is AlgorithmStatus.NOT_ENOUGH_DATA
    assert "safety_factor" in short.message


def test_declaration() -> None:
    cal = G.gain_calibration()
    assert cal.stage == "post-tracking"
    assert cal.input_format == "cdst"
    assert cal.skims == ("hlt_bhabha",)
    assert cal.payloads == ("PXDGainMapPar",)
    assert cal.run_type == "physics"
    assert set(cal.expert_config) == {"min_clusters", "safety_factor", "payload_boundaries"}
    assert cal.expert_config["min_clusters"] == 200
    from b2calib.calibration import get_calibration

    assert get_calibration("pxd-gain").payloads == cal.payloads


# ------------------------------------------------------------------------------ simulator
def test_simulated_track_clusters(tmp_path: Path) -> None:
    """PXDClusters are their track's digits (seed among the event's digits, charge >= seed's),
    each with its track's intercept; a dead gate group (fault) loses the clusters seeded in it;
    the charge per unit path length has the expected median."""
    cfg = _config(
        n_runs=2,
        events_per_run=1500,
        faults=[{"run": 1, "detector": "PXD", "kind": "dead_fraction", "value": 0.5}],
    )
    simulate(cfg, tmp_path, jobs=1)
    from b2calib.io import open_skim
    from b2calib.sim.faults import _PXD_BANDS, _dead_channels

    per_run = {}
    for run in (1, 2):
        path = tmp_path / "e0012" / f"r{run:05d}" / f"cdst_hlt_bhabha_e0012_r{run:05d}.root"
        with open_skim(path) as f:
            a = f.arrays([b for b in f.branches if b.startswith(("PXD", "nPXD"))])
        cl = {k[12:]: np.asarray(ak_flat(a[k])) for k in a.fields if k.startswith("PXDClusters_")}
        dg = {k[10:]: np.asarray(ak_flat(a[k])) for k in a.fields if k.startswith("PXDDigits_")}
        ic = {k[14:]: np.asarray(ak_flat(a[k])) for k in a.fields if k.startswith("PXDIntercepts_")}
        cl_evt = np.repeat(np.arange(len(a)), np.asarray(a["nPXDClusters"]))
        dg_evt = np.repeat(np.arange(len(a)), np.asarray(a["nPXDDigits"]))
        ic_evt = np.repeat(np.arange(len(a)), np.asarray(a["nPXDIntercepts"]))

        def key(e, s, u, v):  # type: ignore[no-untyped-def]
            return ((e * 100000 + s) * 250 + u) * 768 + v

        digit = dict(
            zip(
                key(dg_evt, dg["m_sensorID"], dg["m_uCellID"], dg["m_vCellID"]),
                dg["m_charge"],
                strict=False,
            )
        )
        seed = key(cl_evt, cl["m_sensorID"], cl["m_uCellID"], cl["m_vCellID"])
        assert all(k in digit for k in seed)
        assert np.all(cl["m_charge"] >= np.array([digit[k] for k in seed]))
        track = set(zip(ic_evt, ic["m_trackIndex"], ic["m_sensorID"], strict=True))
        assert all(
            t in track for t in zip(cl_evt, cl["m_trackIndex"], cl["m_sensorID"], strict=True)
        )
        per_run[run] = (cl, ic, len(track))
    # run 1: half the gate groups dead, none of them seeds a cluster
    cl, ic, n_crossings = per_run[1]
    dead = _dead_channels(cfg.seed, 12, 1, "PXD", _PXD_BANDS * vxd.N_PXD_SENSORS, 0.5)
    band = (
        vxd.sensor_index(cl["m_sensorID"], "PXD") * _PXD_BANDS
        + cl["m_vCellID"] * _PXD_BANDS // vxd.PXD_NV
    )
    assert not dead[band].any()
    assert 0.3 < len(cl["m_charge"]) / n_crossings < 0.7
    cl, ic, n_crossings = per_run[2]
    assert len(cl["m_charge"]) / n_crossings > 0.99  # only dead pixels (0.1 %) lose one
    # charge per path length: the median of a MIP times the gains (~1)
    assert np.median(cl["m_charge"]) > G.MIP_MEDIAN_ADU


# ------------------------------------------------------------------------------ bad input
def test_sample_without_pxd_is_not_enough_data(tmp_path: Path) -> None:
    """PXD excluded from the sample: NOT_ENOUGH_DATA (the files lack the PXD branches), no
    payload; a PXD sample too small: NOT_ENOUGH_DATA with the reason."""
    simulate(
        _config(n_runs=1, events_per_run=300, detectors=["CDC", "ECL"]), tmp_path / "no", jobs=1
    )
    reports, _ = calibrate(
        G.gain_calibration(), tmp_path / "no", tmp_path / "no.sqlite", config={"pxd-gain": LOW}
    )
    report = reports["pxd-gain"]
    assert report.status == "NOT_ENOUGH_DATA", report
    assert not report.staged
    assert "missing-branch" in report.runs_without_data[(12, 1)]
    assert "PXDClusters" in report.skipped_files[0].message
    simulate(_config(n_runs=1, events_per_run=300), tmp_path / "small", jobs=1)
    reports, _db = calibrate(G.gain_calibration(), tmp_path / "small", tmp_path / "small.sqlite")
    report = reports["pxd-gain"]
    assert report.status == "NOT_ENOUGH_DATA"
    assert "no gain bin with 200 clusters" in report.executions[0].message


@pytest.mark.slow
def test_cli_on_the_sample_bucket(tmp_path: Path) -> None:
    db = tmp_path / "cal.sqlite"
    base = ["calibrate", "--data", str(SAMPLE), "--db", str(db), "--quiet", "pxd-gain"]
    result = CliRunner().invoke(cli, [*base, "--staging", "strict"])
    assert "NOT_ENOUGH_DATA" in result.output
    assert "no gain bin with 200 clusters" in result.output
    low = tmp_path / "low.json"
    low.write_text(json.dumps({"safety_factor": 0.0, "min_clusters": 10}))
    result = CliRunner().invoke(cli, [*base, "--staging", "low", "--config", str(low)])
    assert result.exit_code == 0, result.output
    ((_entry, payload),) = staged(ConditionsDB(db), "low", "PXDGainMapPar")
    assert len(payload) == G.N_BINS
    ok = ok_channels(payload)
    assert 20 < ok.sum() < 400
    assert np.all(payload.value("value")[~ok] > 0)


# ------------------------------------------------------------------------------ closure
@pytest.fixture(scope="module")
def closure_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pxd_gain")
    simulate(CLOSURE, out / "data", jobs=2)
    return out


@pytest.mark.slow
def test_closure_from_nominal_and_from_a_previous_payload(closure_sample: Path) -> None:
    """Gains against the truth over the measured bins (~500), starting from nominal gains (1)
    and from a previous payload 5 % off the truth (the collector divides by it, the algorithm
    multiplies it back); a known retune (payload_boundaries) splits the payloads."""
    out = closure_sample
    truth = _truth_gain(CLOSURE)
    reports, db = calibrate(
        G.gain_calibration(), out / "data", out / "a.sqlite", config={"pxd-gain": LOW}
    )
    assert reports["pxd-gain"].status == "OK", reports["pxd-gain"]
    ((_, p),) = staged(db, "staging", "PXDGainMapPar")
    ok = ok_channels(p)
    assert ok.sum() > 450
    assert_closure(p.value("value")[ok], p.errors["value"][ok], truth[ok], "pxd-gain from nominal")
    # the previous payload: truth x N(1, 5 %)
    previous = channel_payload(
        G.GAIN_PAYLOAD,
        G.bin_keys(),
        truth * np.random.default_rng(1).normal(1.0, 0.05, G.N_BINS),
        np.full(G.N_BINS, 0.01),
        None,
        units="1",
    )
    db2 = ConditionsDB(out / "b.sqlite", author="test")
    db2.create_tag("previous")
    db2.upload_and_add("previous", [(previous, IoV(0, 0, -1, -1))])
    db2.close()
    reports, db2 = calibrate(
        G.gain_calibration(),
        out / "data",
        out / "b.sqlite",
        config={"pxd-gain": LOW},
        input_tags=["previous"],
    )
    assert reports["pxd-gain"].status == "OK", reports["pxd-gain"]
    ((_, q),) = staged(db2, "staging", "PXDGainMapPar")
    assert np.array_equal(ok_channels(q), ok)
    assert_closure(q.value("value")[ok], q.errors["value"][ok], truth[ok], "from previous")
    # not the previous payload's values: the truth's (the 5 % scatter is gone)
    assert np.std(q.value("value")[ok] / truth[ok]) < 0.02
    # a known retune between the runs: one payload each, each within its statistical scatter
    reports, db3 = calibrate(
        G.gain_calibration(),
        out / "data",
        out / "c.sqlite",
        config={"pxd-gain": {**LOW, "payload_boundaries": [[12, 2]]}},
    )
    payloads = staged(db3, "staging", "PXDGainMapPar")
    assert [(e.iov.first_run, e.iov.final_run) for e, _ in payloads] == [(1, 1), (2, 2)]
    for e, p in payloads:
        ok = ok_channels(p)
        assert ok.sum() > 200
        s = pulls(p.value("value")[ok], p.errors["value"][ok], truth[ok])
        print(f"run {e.iov.first_run}: {s}")
        assert abs(s.mean) < 3.0 / np.sqrt(s.n)  # ~250 bins: 0.1 would be 1.6 sigma
        assert 0.85 <= s.width <= 1.15


# ------------------------------------------------------------------------------ notebook
@pytest.mark.notebooks
@pytest.mark.slow
def test_pxd_gain_notebook(sample: Path) -> None:
    numbers = execute("pxd_gain.ipynb", sample)
    assert 2000 < int(numbers["clusters"]) < 4000  # type: ignore[call-overload]
    assert numbers["defaults_status"] == "NOT_ENOUGH_DATA"
    assert numbers["status"] == "OK"
    assert 30 <= int(numbers["bins_ok"]) <= 120  # type: ignore[call-overload]
    assert int(numbers["bins_default"]) > 700  # type: ignore[call-overload]
    # ~10-30 clusters per measured bin: medians of few entries, loose bounds
    assert abs(float(numbers["pull_mean_vs_truth"])) < 0.8  # type: ignore[arg-type]
    assert 0.7 < float(numbers["pull_width_vs_truth"]) < 1.6  # type: ignore[arg-type]
    assert all(abs(p) < 3.0 for p in numbers["layer_pulls"])  # type: ignore[attr-defined]
    assert numbers["staged"] == ["PXDGainMapPar"]
