"""Run-level monitoring variables and QA histograms: truth recovered, faults found."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import shutil
from pathlib import Path

import awkward as ak
import hist
import numpy as np
import pytest
import uproot
from scipy import stats

from b2calib.engine import Dataset
from b2calib.exceptions import ConfigError, FileFormatError, QAError
from b2calib.fit.histstats import sigma68
from b2calib.geometry import DETECTOR_ID, DETECTORS, cdc, top
from b2calib.physics import cross_section_nb
from b2calib.qa.compare import QAStatus, Thresholds, compare
from b2calib.qa.monitoring import (
    QA_HISTOGRAMS,
    SYSTEMS,
    VARIABLES,
    VISIBLE_CROSS_SECTION_ECMS,
    VISIBLE_CROSS_SECTIONS_NB,
    GammaGammaCollector,
    HistogramDef,
    MonitoringValue,
    RunQA,
    collect_qa,
    lumi_from_count,
    run_qa_from_outputs,
)
from b2calib.qa.monitoring.luminosity import expected_count
from b2calib.qa.monitoring.parts import RunHistograms
from b2calib.runs import RunRegistry
from b2calib.sim import (
    PROCESS_ID,
    SimConfig,
    conditions_for_run,
    generate_runs,
    prescales,
    simulate,
    skim_path,
)
from b2calib.sim.luminosity import main as luminosity_main
from b2calib.sim.luminosity import measure_visible_cross_sections

BASE = dict(
    exp=9,
    n_runs=12,
    seed=41,
    events_per_run=3000,
    run_types={"physics": 0.85, "cosmic": 0.15, "beam": 0.0, "debug": 0.0},
    continuum_fraction=0.0,
    skims=["hlt_bhabha", "hlt_gamma_gamma", "hlt_mumu_2trk", "hlt_hadron", "cosmic"],
)


@dataclasses.dataclass
class Sample:
    folder: Path
    cfg: SimConfig
    registry: RunRegistry
    qa: dict[int, RunQA]
    cdc_run: int  # 30 % of the CDC wires dead
    top_run: int  # TOP times +3 ns
    klm_run: int  # 20 KLM noise digits per event
    healthy: list[int]  # physics runs without faults


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    plain = SimConfig(**BASE)  # type: ignore[arg-type]
    physics = [r.run for r in generate_runs(plain) if r.run_type == "physics"]
    cdc_run, top_run, klm_run = physics[-1], physics[-2], physics[-3]
    faults = [
        {"run": cdc_run, "detector": "CDC", "kind": "dead_fraction", "value": 0.3},
        {"run": top_run, "detector": "TOP", "kind": "time_shift", "value": 3.0},
        {"run": klm_run, "detector": "KLM", "kind": "noise", "value": 20.0},
    ]
    cfg = SimConfig(**BASE, faults=faults)  # type: ignore[arg-type]
    folder = tmp_path_factory.mktemp("qa_monitoring")
    result = simulate(cfg, folder, jobs=2)
    qa = {r.run: r for r in collect_qa(folder, executor="inprocess")}
    healthy = [r for r in physics if r not in (cdc_run, top_run, klm_run)]
    return Sample(folder, cfg, result.registry, qa, cdc_run, top_run, klm_run, healthy)


def _with(s: Sample, detector: str) -> list[int]:
    """The healthy runs that included ``detector``."""
    return [r for r in s.healthy if detector in s.registry.get(s.cfg.exp, r).detectors]


def _mumu_file(s: Sample, run: int) -> Path:
    return (
        s.folder
        / f"e{s.cfg.exp:04d}"
        / f"r{run:05d}"
        / (f"cdst_hlt_mumu_2trk_e{s.cfg.exp:04d}_r{run:05d}.root")
    )


def test_every_run_with_data_has_its_numbers(sample: Sample) -> None:
    """Every variable and QA histogram of the detectors (and systems) of the run, and none of a
    detector the run did not include."""
    reg = sample.registry
    assert sorted(sample.qa) == sorted(r.run for r in reg.select())
    for run, qa in sample.qa.items():
        names = {v.name for v in qa.variables}
        assert all(v.detector == VARIABLES[v.name].detector for v in qa.variables)
        included = {*reg.get(sample.cfg.exp, run).detectors, *SYSTEMS}
        if reg.get(sample.cfg.exp, run).run_type == "cosmic":
            cosmic = {n for n, d in VARIABLES.items() if n.startswith("cosmic.")}
            assert names == {n for n in cosmic if VARIABLES[n].detector in included}, qa.notes
            assert qa.histograms == {}
            continue
        expected = {
            n for n, d in VARIABLES.items() if d.detector in included and "cosmic." not in n
        }
        assert expected == names, qa.notes
        assert set(qa.histograms) == {k for k in QA_HISTOGRAMS if k[0] in included}
        for key, h in qa.histograms.items():
            d = QA_HISTOGRAMS[key]
            assert h.axes[0].size == d.bins[0]
            assert h.storage_type is hist.storage.Int64
            assert h.values().sum() > 50, key
        assert all(v.error > 0 and math.isfinite(v.value) for v in qa.variables)
    with pytest.raises(QAError, match="no monitoring variable 'nope'"):
        sample.qa[sample.healthy[0]].variable("nope")


def test_dimuon_mass_recovers_the_true_collision_energy(sample: Sample) -> None:
    pulls, nominal_pulls = [], []
    for run in [*sample.healthy, sample.cdc_run, sample.top_run, sample.klm_run]:
        r = sample.registry.get(sample.cfg.exp, run)
        true = conditions_for_run(sample.cfg, r).ecms
        v = sample.qa[run].variable("mumu.invariant_mass")
        pulls.append((v.value - true) / v.error)
        nominal = (v.value - r.ecms_nominal_gev) / v.error
        assert sample.qa[run].variable("mumu.invariant_mass_pull").value == pytest.approx(nominal)
        nominal_pulls.append(nominal)
    n = len(pulls)
    assert n >= 8
    # pulls against the truth: unit normal within statistics (too few runs for the width test)
    assert abs(np.mean(pulls)) < 3.0 / math.sqrt(n), pulls
    assert np.sum(np.square(pulls)) < stats.chi2.ppf(0.999, n), pulls
    assert np.sum(np.square(pulls)) > stats.chi2.ppf(0.001, n), pulls
    # the width: 40 MeV (tracking) with the 5.4 MeV beam-energy spread
    for run in sample.healthy:
        assert 0.030 < sample.qa[run].variable("mumu.invariant_mass_width").value < 0.050


@pytest.mark.slow
def test_dimuon_mass_pulls_meet_the_pull_standard(tmp_path: Path) -> None:
    """150 runs of ~250 dimuons (4S and continuum), only the tracks and the PXD read out: the
    fitted collision energy against the truth, mean and width of the pulls."""
    cfg = SimConfig(
        exp=4,
        n_runs=150,
        seed=5,
        events_per_run=400,
        processes=["mumu"],
        process_fractions={"bhabha": 0, "gamma_gamma": 0, "mumu": 1, "hadron": 0, "tautau": 0},
        detectors=["PXD"],
        run_types={"physics": 1.0, "cosmic": 0.0, "beam": 0.0, "debug": 0.0},
        continuum_fraction=0.3,
        skims=["hlt_mumu_2trk"],
    )
    result = simulate(cfg, tmp_path, jobs=2)
    pulls = []
    for qa in collect_qa(tmp_path):
        pxd = {"PXD"} & set(result.registry.get(qa.exp, qa.run).detectors)
        assert {v.detector for v in qa.variables} == {"BEAM", "TRACKING", *pxd}
        true = conditions_for_run(cfg, result.registry.get(qa.exp, qa.run)).ecms
        v = qa.variable("mumu.invariant_mass")
        pulls.append((v.value - true) / v.error)
    assert len(pulls) == 150
    assert abs(np.mean(pulls)) < 3.0 / math.sqrt(len(pulls))
    assert 0.85 < np.std(pulls, ddof=1) < 1.15


def _selected_tracks(path: Path) -> ak.Array:
    a = uproot.open(path)["tree"].arrays(filter_name="TrackFitResults_*")
    q = a["TrackFitResults_m_charge"]
    two = (ak.num(q) == 2) & (ak.sum(q, axis=1) == 0)
    return a[two]


def test_cdc_hits_per_track_follow_the_hit_efficiency(sample: Sample) -> None:
    """96 % hit efficiency on the live wires of every layer the track crosses."""
    for run in sample.healthy[:3]:
        r = sample.registry.get(sample.cfg.exp, run)
        gain = conditions_for_run(sample.cfg, r).cdc_wire_gain
        alive = np.array(
            [
                np.mean(gain[cdc.LAYER_FIRST[i] : cdc.LAYER_FIRST[i] + cdc.LAYER_NWIRES[i]] > 0)
                for i in range(cdc.N_LAYERS)
            ]
        )
        t = _selected_tracks(_mumu_file(sample, run))
        z0 = ak.to_numpy(ak.flatten(t["TrackFitResults_m_z0"]))
        tanl = ak.to_numpy(ak.flatten(t["TrackFitResults_m_tanLambda"]))
        n = ak.to_numpy(ak.flatten(t["TrackFitResults_m_nCDCHits"])).astype(float)
        z = z0[:, None] + cdc.LAYER_RADIUS[None, :] * tanl[:, None]  # ~straight 5 GeV tracks
        crossed = (z >= cdc.LAYER_ZMIN) & (z <= cdc.LAYER_ZMAX)
        expected = 0.96 * (crossed * alive).sum(axis=1)
        v = sample.qa[run].variable("mumu.cdc_hits_per_track")
        assert v.value == pytest.approx(n.mean(), rel=1e-12)
        assert v.error == pytest.approx(n.std(ddof=1) / math.sqrt(len(n)), rel=1e-9)
        # paired: the binomial scatter of the hits around the expectation
        assert abs(v.value - expected.mean()) < 4 * (n - expected).std() / math.sqrt(len(n))
        # SVD: both sides of up to four layers, 99 % efficient; PXD: two layers
        assert 7.0 < sample.qa[run].variable("mumu.svd_hits_per_track").value < 8.0
        if "PXD" in r.detectors:
            assert 1.9 < sample.qa[run].variable("mumu.pxd_hits_per_track").value <= 2.0
        else:  # the tracks count no PXD hit in a run without the PXD
            assert not ak.any(t["TrackFitResults_m_nPXDHits"])


def test_top_photons_and_good_muons_follow_the_simulated_efficiencies(sample: Sample) -> None:
    """TOP: 22 (1 + 0.6 |cos theta|) photons per track on the live pixels of its module, plus
    the module's random (3 per event over all channels) and hot-channel noise. KLM: each crossed
    strip fires with its true efficiency; the good-muon fraction is drawn from that."""
    rng = np.random.default_rng(8)
    top_pulls, klm_pulls = [], []
    for run in sample.healthy:
        cond = conditions_for_run(sample.cfg, sample.registry.get(sample.cfg.exp, run))
        path = _mumu_file(sample, run)
        a = uproot.open(path)["tree"].arrays(filter_name=["TrackFitResults_*", "ExtHits_*"])
        q = a["TrackFitResults_m_charge"]
        a = a[(ak.num(q) == 2) & (ak.sum(q, axis=1) == 0)]
        ext_evt = np.repeat(np.arange(len(a)), ak.to_numpy(ak.num(a["ExtHits_m_detectorID"])))
        det = ak.to_numpy(ak.flatten(a["ExtHits_m_detectorID"]))
        copy = ak.to_numpy(ak.flatten(a["ExtHits_m_copyID"])).astype(np.int64)
        trk = ak.to_numpy(ak.flatten(a["ExtHits_m_trackIndex"])).astype(np.int64)
        tanl = ak.to_numpy(ak.flatten(a["TrackFitResults_m_tanLambda"])).astype(float)
        on = det == DETECTOR_ID["TOP"]
        t = tanl[2 * ext_evt[on] + trk[on]]  # two tracks per selected event
        module = copy[on] - 1
        alive = (cond.top_status != 1).reshape(top.N_MODULES, top.N_PIXELS)
        hot = np.where(alive, cond.top_hot_rate.reshape(alive.shape), 0.0).sum(axis=1)
        expected = (
            22.0 * (1 + 0.6 * np.abs(t) / np.sqrt(1 + t**2)) * alive.mean(axis=1)[module]
            + 3.0 * alive.sum(axis=1)[module] / top.N_CHANNELS
            + hot[module]
        )
        v = sample.qa[run].variable("mumu.top_digits_per_track")
        top_pulls.append((v.value - expected.mean()) / v.error)
        on = det == DETECTOR_ID["KLM"]
        eff = cond.klm_efficiency[copy[on] - 1]
        _, track = np.unique(ext_evt[on] * 64 + trk[on], return_inverse=True)
        crossed = np.bincount(track)
        fired = np.array(
            [np.bincount(track, weights=rng.random(len(eff)) < eff) for _ in range(400)]
        )
        counted = crossed >= 4
        good = float(np.mean(fired[:, counted] / crossed[counted] >= 0.8))
        v = sample.qa[run].variable("mumu.good_muon_fraction")
        klm_pulls.append((v.value - good) / v.error)
    for pulls in (top_pulls, klm_pulls):
        assert abs(np.mean(pulls)) < 3.0 / math.sqrt(len(pulls)), pulls
        assert np.sum(np.square(pulls)) < stats.chi2.ppf(0.999, len(pulls)), pulls


def test_hot_pixels_follow_the_simulated_hot_pixel_rates(sample: Sample) -> None:
    """A true hot pixel with firing probability r per event is found when it fires more than
    1 % of the N events (and 3 times): expected count sum_i P(Binomial(N, r_i) > max(0.01 N, 2))."""
    summary = json.loads((sample.folder / "simulation.json").read_text())
    pulls = []
    for run in _with(sample, "PXD"):
        cond = conditions_for_run(sample.cfg, sample.registry.get(sample.cfg.exp, run))
        n = summary["skim_events"][str(run)]["hlt_hadron"]
        p = stats.binom.sf(max(math.floor(0.01 * n), 2), n, cond.pxd_hot_rate)
        v = sample.qa[run].variable("hadron.pxd_hot_pixels")
        pulls.append((v.value - p.sum()) / math.sqrt(np.sum(p * (1 - p))))
        frac = sample.qa[run].variable("hadron.pxd_hot_pixel_fraction")
        assert 0.1 < frac.value < 0.4
    assert np.all(np.abs(pulls) < 4), pulls
    assert abs(np.mean(pulls)) < 3.0 / math.sqrt(len(pulls)), pulls


def _sigma68(x: np.ndarray) -> float:
    q1, q2 = np.quantile(x, [0.158655, 0.841345])
    return float(q2 - q1) / 2


def test_impact_parameter_resolutions_follow_the_simulated_model(sample: Sample) -> None:
    """The simulator smears d0 by 12 um (+) 20 um / (p sin^1.5 theta) and z0 by 20 um (+)
    30 um / (p sin^1.5 theta): the expected sigma68 of the pair residuals of each run is drawn
    from that model with the run's own tracks."""
    rng = np.random.default_rng(3)
    rel_d0: list[float] = []
    rel_z0: list[float] = []
    for run in sample.healthy:
        t = _selected_tracks(_mumu_file(sample, run))
        omega = ak.to_numpy(ak.flatten(t["TrackFitResults_m_omega"])).astype(float)
        tanl = ak.to_numpy(ak.flatten(t["TrackFitResults_m_tanLambda"])).astype(float)
        p = 0.0029979246 * 1.5 / np.abs(omega) * np.sqrt(1 + tanl**2)
        ms = 1.0 / (p * (1 + tanl**2) ** -0.75)
        for name, (a, b), rel in (
            ("mumu.d0_resolution", (12.0, 20.0), rel_d0),
            ("mumu.z0_resolution", (20.0, 30.0), rel_z0),
        ):
            sigma = np.hypot(a, b * ms)
            draw = rng.standard_normal((200, len(sigma))) * sigma
            expected = _sigma68((draw[:, 0::2] + draw[:, 1::2]).ravel() / math.sqrt(2))
            v = sample.qa[run].variable(name)
            assert abs(v.value - expected) < 3.5 * v.error, (run, name, v, expected)
            rel.append(v.value / expected)
    assert np.mean(rel_d0) == pytest.approx(1.0, abs=0.05)
    assert np.mean(rel_z0) == pytest.approx(1.0, abs=0.05)


def test_hadron_bhabha_ratio_follows_the_cross_sections(sample: Sample) -> None:
    """Expected ratio: sum over processes of sigma x prescale x skim efficiency (from the
    simulated truth over all runs), prescales removed as the variable does."""
    summary = json.loads((sample.folder / "simulation.json").read_text())
    ps = summary["prescales"]
    runs = [*sample.healthy, sample.cdc_run, sample.top_run, sample.klm_run]
    generated = {
        p: sum(summary["generated_events"][str(r)][p] for r in runs) for p in ps if p != "cosmic"
    }
    passed: dict[str, dict[str, int]] = {"hlt_hadron": {}, "hlt_bhabha": {}}
    for skim, counts in passed.items():
        for r in runs:
            path = skim_path(sample.folder, sample.cfg.exp, r, skim)
            proc = ak.to_numpy(uproot.open(path)["tree"]["SimTruth_m_process"].array())
            for p in generated:
                if p in PROCESS_ID:
                    counts[p] = counts.get(p, 0) + int(np.sum(proc == PROCESS_ID[p]))

    def rate(skim: str) -> float:
        return sum(
            cross_section_nb(p, 10.5794) * ps[p] * passed[skim][p] / generated[p]
            for p in passed[skim]
            if generated[p]
        )

    expected = (rate("hlt_hadron") / ps["hadron"]) / (rate("hlt_bhabha") / ps["bhabha"])
    pulls = []
    for r in runs:
        v = sample.qa[r].variable("hadron_bhabha_ratio")
        pulls.append((v.value - expected) / v.error)
    n = len(pulls)
    assert abs(np.mean(pulls)) < 3.0 / math.sqrt(n), pulls
    assert np.sum(np.square(pulls)) < stats.chi2.ppf(0.999, n), pulls


def test_a_fault_is_found_in_its_detector_only(sample: Sample) -> None:
    ref = sample.qa[sample.healthy[0]]
    few = Thresholds(min_entries=50)  # the ARICH sees ~100 forward muons per run
    faulty = {
        sample.cdc_run: ("CDC", "hits_per_track"),
        sample.top_run: ("TOP", "track_time"),
        sample.klm_run: ("KLM", "digits_per_event"),
    }
    elsewhere = []  # the other detectors' histograms of the faulty runs
    for run, bad_key in faulty.items():
        qa = sample.qa[run]
        for key, h in qa.histograms.items():
            if key not in ref.histograms:  # a detector one of the runs did not include
                continue
            d = QA_HISTOGRAMS[key]
            c = compare(h, ref.histograms[key], d.method, d.options, few)  # type: ignore[arg-type]
            if key == bad_key:
                assert c.status is QAStatus.ERROR, (key, c)
            elif key[0] != bad_key[0]:
                elsewhere.append((run, key, c))
    # GOOD but for the p-value's own fluctuations (~1 % ERROR, ~5 % WARNING expected)
    assert sum(c.status is QAStatus.ERROR for *_, c in elsewhere) <= 1, elsewhere
    assert sum(c.status is QAStatus.GOOD for *_, c in elsewhere) >= 0.85 * len(elsewhere)
    # the TOP time shift is seen by every TOP time: both histograms and the variable
    top_time = compare(
        sample.qa[sample.top_run].histograms[("TOP", "time_residual")],
        ref.histograms[("TOP", "time_residual")],
    )
    assert top_time.status is QAStatus.ERROR, top_time
    name = "mumu.top_time"
    healthy = np.array([sample.qa[r].variable(name).value for r in sample.healthy])
    shifted = sample.qa[sample.top_run].variable(name)
    assert shifted.value - np.median(healthy) == pytest.approx(3.0, abs=0.3)
    assert (shifted.value - np.median(healthy)) / shifted.error > 20
    # healthy runs against each other: GOOD but for the p-value's own fluctuations
    statuses = [
        compare(sample.qa[a].histograms[key], sample.qa[b].histograms[key], thresholds=few).status
        for a, b in zip(sample.healthy[:-1], sample.healthy[1:], strict=True)
        for key in QA_HISTOGRAMS
        if key in sample.qa[a].histograms and key in sample.qa[b].histograms
    ]
    assert statuses.count(QAStatus.ERROR) <= 3  # ~1 % expected
    assert statuses.count(QAStatus.GOOD) >= 0.85 * len(statuses)  # ~95 % expected
    # the matching variable: 30 % of the wires dead -> 30 % fewer hits, many sigma away
    name = "mumu.cdc_hits_per_track"
    healthy = np.array([sample.qa[r].variable(name).value for r in sample.healthy])
    bad = sample.qa[sample.cdc_run].variable(name)
    assert (healthy.mean() - bad.value) / bad.error > 20
    assert bad.value / healthy.mean() == pytest.approx(0.7, abs=0.03)
    # 20 noise digits per event more in the KLM
    name = "hadron.klm_digits_per_event"
    noisy = sample.qa[sample.klm_run].variable(name)
    quiet = np.array([sample.qa[r].variable(name).value for r in sample.healthy])
    assert (noisy.value - quiet.mean()) / noisy.error > 20
    assert noisy.value - quiet.mean() == pytest.approx(20.0, abs=4 * noisy.error)
    # the time shift moves no count
    top = sample.qa[sample.top_run].variable("mumu.top_digits_per_track")
    others = np.array([sample.qa[r].variable(top.name).value for r in sample.healthy])
    assert abs(top.value - others.mean()) < 4 * math.hypot(top.error, others.std(ddof=1))


def test_executors_agree_and_bad_files_are_named(sample: Sample, tmp_path: Path) -> None:
    runs = [sample.healthy[0], sample.cdc_run]
    a = collect_qa(sample.folder, runs=runs, executor="inprocess")
    ds = Dataset.select(sample.folder, runs=runs)
    b = collect_qa(ds, registry=sample.registry, executor="threads", workers=2)
    assert [(r.run, r.variables) for r in a] == [(r.run, r.variables) for r in b]
    for x, y in zip(a, b, strict=True):
        assert x.histograms.keys() == y.histograms.keys()
        assert all(x.histograms[k] == y.histograms[k] for k in x.histograms)
    assert [r.variables for r in a] == [sample.qa[r].variables for r in runs]
    # a truncated dimuon file
    folder = tmp_path / "damaged"
    src = sample.folder / f"e{sample.cfg.exp:04d}" / f"r{runs[0]:05d}"
    shutil.copytree(src, folder / src.parent.name / src.name)
    shutil.copy(sample.folder / "runs.json", folder / "runs.json")
    bad = folder / src.parent.name / src.name / _mumu_file(sample, runs[0]).name
    bad.write_bytes(bad.read_bytes()[:4000])
    with pytest.raises(FileFormatError) as err:
        collect_qa(folder, on_error="stop")
    assert str(bad) in str(err.value)
    (qa,) = collect_qa(folder, on_error="skip")
    names = {v.name for v in qa.variables}
    assert "hadron_bhabha_ratio" in names
    assert not any(n.startswith("mumu.") for n in names)
    with pytest.raises(ConfigError, match="on_error"):
        collect_qa(folder, on_error="ignore")  # type: ignore[arg-type]


def test_a_run_without_a_detector_has_no_value_of_it(sample: Sample) -> None:
    """A run that did not include the PXD has no PXD value and no PXD QA histogram (its files
    hold empty PXD collections); nor has a run whose registry entry leaves the PXD out even when
    its files hold PXD data: the registry's word counts."""
    exp = sample.cfg.exp
    without = [r.run for r in sample.registry.select() if "PXD" not in r.detectors]
    assert without, "the sample has a run without the PXD"
    for run in without:
        qa = sample.qa[run]
        assert not [v.name for v in qa.variables if v.detector == "PXD"]
        assert not [k for k in qa.histograms if k[0] == "PXD"]
        assert qa.variable("mumu.svd_hits_per_track").value > 7.0  # the others are there
    # a healthy run with PXD data, its registry entry without the PXD
    run = _with(sample, "PXD")[0]
    assert sample.qa[run].variable("mumu.pxd_hits_per_track").value > 1.9
    entries = [
        dataclasses.replace(r, detectors=tuple(d for d in r.detectors if d != "PXD"))
        if r.run == run
        else r
        for r in sample.registry.select()
    ]
    (qa,) = collect_qa(sample.folder, runs=[run], registry=RunRegistry(entries))
    assert {v.detector for v in qa.variables} == {v.detector for v in sample.qa[run].variables} - {
        "PXD"
    }
    assert [v for v in qa.variables if v.detector != "PXD"] == [
        v for v in sample.qa[run].variables if v.detector != "PXD"
    ]
    assert set(qa.histograms) == {k for k in sample.qa[run].histograms if k[0] != "PXD"}
    # from the histograms alone, with the run's detectors
    outputs = {"hlt_mumu_2trk": {"mean/pxd_hits": _mean([2.0, 2.0, 1.0])}}
    assert run_qa_from_outputs(exp, run, outputs).variable("mumu.pxd_hits_per_track")
    dets = [d for d in DETECTORS if d != "PXD"]
    assert run_qa_from_outputs(exp, run, outputs, detectors=dets).variables == []
    with pytest.raises(ConfigError, match="unknown detectors"):
        run_qa_from_outputs(exp, run, outputs, detectors=["PXD", "XYZ"])


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[int, RunQA], int, int]:
    """Twelve physics runs of ~1000 events (as the QA demo's), the TOP times of one run and the
    ECL times of another shifted by 2 ns."""
    cfg = SimConfig(
        exp=3,
        n_runs=12,
        seed=7,
        events_per_run=1000,
        run_types={"physics": 1.0, "cosmic": 0.0, "beam": 0.0, "debug": 0.0},
        continuum_fraction=0.0,
        skims=["hlt_bhabha", "hlt_mumu_2trk"],
        faults=[
            {"run": 6, "detector": "ECL", "kind": "time_shift", "value": 2.0},
            {"run": 9, "detector": "TOP", "kind": "time_shift", "value": 2.0},
        ],
    )
    folder = tmp_path_factory.mktemp("time_shift")
    simulate(cfg, folder, jobs=2)
    return {q.run: q for q in collect_qa(folder)}, 9, 6


def _from_the_others(qa: dict[int, RunQA], name: str) -> dict[int, float]:
    """Each run's distance from the median of the other runs, in units of its error."""
    values = {r: q.variable(name) for r, q in qa.items()}
    return {
        r: (v.value - float(np.median([w.value for s, w in values.items() if s != r]))) / v.error
        for r, v in values.items()
    }


def test_time_variables_find_a_time_shift(
    shifted: tuple[dict[int, RunQA], int, int],
) -> None:
    """A 2 ns TOP (ECL) time shift puts its run many sigma away from the others in mumu.top_time
    (bhabha.ecl_time), and only there: the other runs stay within 3 sigma."""
    qa, top_run, ecl_run = shifted
    assert len(qa) == 12
    for name, run in (("mumu.top_time", top_run), ("bhabha.ecl_time", ecl_run)):
        pulls = _from_the_others(qa, name)
        assert pulls[run] >= 5.0, (name, pulls)
        assert all(abs(p) < 3.0 for r, p in pulls.items() if r != run), (name, pulls)
        others = [qa[r].variable(name).value for r in qa if r != run]
        assert qa[run].variable(name).value - np.median(others) == pytest.approx(2.0, abs=0.5)
    # a common shift of the TOP moves no module against the others
    pulls = _from_the_others(qa, "mumu.top_module_time_deviation")
    assert all(abs(p) < 3.0 for p in pulls.values()), pulls
    for run in qa:
        assert qa[run].variable("mumu.top_time").unit == "ns"
        assert 0.0 < qa[run].variable("mumu.top_module_time_deviation").value < 1.5
    # the QA histograms of the shifted runs against a healthy one
    ref = qa[1]
    for run, key in ((top_run, ("TOP", "time_residual")), (ecl_run, ("ECL", "cluster_time"))):
        c = compare(qa[run].histograms[key], ref.histograms[key])
        assert c.status is QAStatus.ERROR, (key, c)
        assert compare(qa[2].histograms[key], ref.histograms[key]).status is not QAStatus.ERROR


# ------------------------------------------------------------------------- without files
def test_sigma68_and_its_error_on_toys() -> None:
    rng = np.random.default_rng(5)
    est, err = [], []
    for _ in range(300):
        h = hist.Hist(hist.axis.Regular(400, -100.0, 100.0), storage=hist.storage.Int64())
        h.fill(rng.normal(3.0, 15.0, 1000))
        s, e = sigma68(h)
        est.append(s)
        err.append(e)
    assert float(np.mean(est)) == pytest.approx(15.0, abs=3 * float(np.std(est)) / math.sqrt(300))
    assert float(np.std(est) / np.mean(err)) == pytest.approx(1.0, abs=0.12)
    assert all(math.isnan(x) for x in sigma68(hist.Hist(hist.axis.Regular(4, 0, 1))))


def _mean(values: list[float]) -> hist.Hist:
    h = hist.Hist(hist.axis.Integer(0, 1), storage=hist.storage.Mean())
    h.fill(np.zeros(len(values), dtype=np.int64), sample=values)
    return h


def test_run_qa_from_histograms() -> None:
    good = _mean([1.0] * 95 + [0.0] * 5)
    outputs = {
        "hlt_mumu_2trk": {"mean/good_muon": good, "mean/cdc_hits": _mean([40.0, 42.0, 44.0])},
        "hlt_hadron": {"events": _mean([1.0] * 400)},
        "hlt_bhabha": {"events": _mean([1.0] * 1000)},
    }
    qa = run_qa_from_outputs(3, 8, outputs, prescales={"hadron": 0.5, "bhabha": 0.25})
    assert qa.variable("mumu.cdc_hits_per_track").value == pytest.approx(42.0)
    assert qa.variable("mumu.cdc_hits_per_track").error == pytest.approx(2.0 / math.sqrt(3))
    assert qa.variable("mumu.good_muon_fraction").value == pytest.approx(0.95)
    assert qa.variable("mumu.good_muon_fraction").error == pytest.approx(
        math.sqrt(96 * 6 / (102**2 * 103))
    )
    ratio = qa.variable("hadron_bhabha_ratio")
    assert ratio.value == pytest.approx((400 / 0.5) / (1000 / 0.25))
    assert ratio.error == pytest.approx(ratio.value * math.sqrt(1 / 400 + 1 / 1000))
    assert qa.histograms == {}
    # no data: no numbers, and no made-up ones
    empty = run_qa_from_outputs(3, 9, {"hlt_hadron": {"events": _mean([1.0])}})
    assert empty.variables == []


def test_fault_configuration() -> None:
    assert "faults" not in SimConfig(n_runs=3).to_dict()
    f = {"run": 2, "detector": "CDC", "kind": "dead_fraction", "value": 0.3}
    assert SimConfig(n_runs=3, faults=[f]).to_dict()["faults"] == [f]
    for bad, match in (
        ({**f, "kind": "melted"}, "unknown kind"),
        ({**f, "detector": "PXD", "kind": "time_shift"}, "does not apply to 'PXD'"),
        ({**f, "run": 9}, "not simulated"),
        ({**f, "value": 1.5}, r"in \[0, 1\]"),
        ({**f, "kind": "noise", "detector": "TOP", "value": -1}, "must not be negative"),
        ({**f, "kind": "noise"}, "does not apply to 'CDC'"),
        ({"run": 2, "detector": "CDC"}, "exactly the keys"),
    ):
        with pytest.raises(ConfigError, match=match):
            SimConfig(n_runs=3, faults=[bad])


# ------------------------------------------------------------------------------ luminosity
def _pulls(qa: list[RunQA], registry: RunRegistry, name: str) -> np.ndarray:
    out = []
    for r in qa:
        run = registry.get(r.exp, r.run)
        if run.run_type == "physics":
            v = r.variable(name)
            assert v.unit == "pb^-1"
            assert v.detector == "BEAM"
            out.append((v.value - run.lumi_pb) / v.error)
    return np.array(out)


def test_luminosity_of_the_sample_runs(sample: Sample) -> None:
    """Both luminosities of every physics run (faulty ones too: the faults touch neither the
    tracks' momenta nor the ECL) agree with the registry's within their errors."""
    for name in ("bhabha.lumi_pb", "gamma_gamma.lumi_pb"):
        pulls = _pulls(list(sample.qa.values()), sample.registry, name)
        assert len(pulls) == len(sample.healthy) + 3
        assert np.all(np.abs(pulls) < 4), (name, pulls)


def test_luminosity_ratios_of_the_sample_runs(sample: Sample) -> None:
    """Each measured luminosity over the recorded one, and Bhabha over gamma-gamma, are 1 in
    every physics run of the sample within their errors, whatever the run's length; a run whose
    recorded luminosity is wrong by 25 % is many sigma off in both ratios to the recorded
    one, and not in the ratio of the two methods. The integrated luminosities are not judged
    (runs differ in length), the ratios are (against 1)."""
    lengths = []
    for r in sample.qa.values():
        run = sample.registry.get(r.exp, r.run)
        if run.run_type != "physics":
            assert not any(v.name.endswith("lumi_recorded_ratio") for v in r.variables)
            continue
        lengths.append(run.duration_s)
        for name in (
            "bhabha.lumi_recorded_ratio",
            "gamma_gamma.lumi_recorded_ratio",
            "bhabha_gamma_gamma_lumi_ratio",
        ):
            v = r.variable(name)
            assert v.detector == "BEAM"
            assert abs(v.value - 1.0) < 4 * v.error, (r.run, name, v)
    assert max(lengths) > 2 * min(lengths)  # short and long runs, none flagged
    assert VARIABLES["bhabha.lumi_pb"].judged is False
    assert VARIABLES["gamma_gamma.lumi_pb"].judged is False
    for name in ("bhabha.lumi_recorded_ratio", "bhabha_gamma_gamma_lumi_ratio"):
        assert VARIABLES[name].judged
        assert VARIABLES[name].reference == 1.0
    # the registry's recorded luminosity of one run 25 % too high: both ratios 25 % low
    run = sample.healthy[0]
    entry = sample.registry.get(sample.cfg.exp, run)
    wrong = RunRegistry(
        [dataclasses.replace(entry, lumi_pb=entry.lumi_pb * 1.25) if r.key == entry.key else r
         for r in sample.registry.select()]
    )  # fmt: skip
    files = Dataset.select(sample.folder, registry=wrong, runs=[run])
    lumi_files = Dataset([f for f in files if f.skim in ("hlt_bhabha", "hlt_gamma_gamma")])
    (qa,) = collect_qa(lumi_files, registry=wrong)
    right = sample.qa[run]
    # flagged: ERROR (5 sigma) by the Bhabha count, at least WARNING (3) by the gamma-gamma one
    for name, sigma in (("bhabha.lumi_recorded_ratio", 5), ("gamma_gamma.lumi_recorded_ratio", 3)):
        v = qa.variable(name)
        assert v.value == pytest.approx(right.variable(name).value / 1.25)
        assert (1.0 - v.value) / v.error > sigma, (name, v)
    assert qa.variable("bhabha_gamma_gamma_lumi_ratio") == right.variable(
        "bhabha_gamma_gamma_lumi_ratio"
    )
    assert qa.variable("bhabha.lumi_pb") == right.variable("bhabha.lumi_pb")


def test_luminosity_from_counts() -> None:
    """The formula, the prescales (fractions kept), the continuum scaling and no-event runs."""
    ps = {"bhabha": 0.25, "tautau": 0.5, "gamma_gamma": 0.1}
    (sb, eb), (st, et) = (VISIBLE_CROSS_SECTIONS_NB["bhabha"][p] for p in ("bhabha", "tautau"))
    lumi, err = lumi_from_count("bhabha", 900, prescales=ps) or (0.0, 0.0)
    denom = (0.25 * sb + 0.5 * st) * 1000.0
    assert lumi == pytest.approx(900 / denom)
    rel = math.hypot(0.25 * eb, 0.5 * et) * 1000.0 / denom
    assert err == pytest.approx(lumi * math.sqrt(1 / 900 + rel**2))
    assert rel < 1e-3  # the visible cross sections' error is negligible next to the counting
    # the count expected in a luminosity: the inverse
    assert expected_count("bhabha", lumi, prescales=ps) == pytest.approx(900)
    # continuum: the generator's 1/s-like scaling of the cross sections
    cont = lumi_from_count("gamma_gamma", 400, prescales=ps, ecms_gev=10.52)
    on = lumi_from_count("gamma_gamma", 400, prescales=ps)
    assert cont is not None
    assert on is not None
    ratio = cross_section_nb("gamma_gamma", 10.52) / cross_section_nb("gamma_gamma", 10.5794)
    assert cont[0] * ratio == pytest.approx(on[0])
    assert cont[0] < on[0]  # a larger cross section below the Y(4S): fewer pb^-1 per event
    assert lumi_from_count("gamma_gamma", 0, prescales=ps) is None
    with pytest.raises(QAError, match="unknown luminosity method"):
        lumi_from_count("mumu", 10)
    # through run_qa_from_outputs: no events, or no energy, give no value (and a note)
    outputs = {"hlt_bhabha": {"events": _mean([1.0] * 900)}, "hlt_gamma_gamma": {}}
    outputs["hlt_gamma_gamma"]["lumi_events"] = _mean([])
    qa = run_qa_from_outputs(3, 8, outputs, prescales=ps, ecms_nominal_gev=10.5794)
    assert [v.name for v in qa.variables] == ["bhabha.lumi_pb"]
    assert qa.variable("bhabha.lumi_pb").value == pytest.approx(lumi)
    assert any("no gamma_gamma luminosity events" in n for n in qa.notes)
    qa = run_qa_from_outputs(3, 8, outputs, prescales=ps)
    assert qa.variables == []
    assert any("no nominal collision energy" in n for n in qa.notes)


def test_gamma_gamma_collector_counts_the_gg_flag() -> None:
    gg = np.array([1, 0, 1, 1, 0], dtype=np.float32)
    events = ak.Array({"EventMetaData_m_event": np.arange(5), "SoftwareTriggerVariables_GG": gg})
    c = GammaGammaCollector()
    a, b = c.collect(events[:2]), c.collect(events[2:])
    merged = {k: a[k] + b[k] for k in a}
    assert merged["lumi_events"].view()[0]["count"] == 3
    assert merged["events"].view()[0]["count"] == 5
    assert set(c.branches) == set(events.fields)


def test_min_entries_of_the_qa_histograms() -> None:
    assert [f.name for f in dataclasses.fields(HistogramDef)][-1] == "min_entries"
    assert HistogramDef("CDC", "x", "x").min_entries == 100.0
    assert QA_HISTOGRAMS[("ARICH", "photons_per_track")].min_entries == 50.0
    assert {d.min_entries for k, d in QA_HISTOGRAMS.items() if k[0] != "ARICH"} == {100.0}


@pytest.mark.slow
def test_visible_cross_sections_rederived_on_another_seed() -> None:
    """The committed visible cross sections agree, within the statistical errors, with those
    measured on an independent sample (other seed: other detector conditions), at the Y(4S)
    energy and at the continuum energy (the latter scaled as :func:`lumi_from_count` does)."""
    for ecms, sizes in (
        (VISIBLE_CROSS_SECTION_ECMS, {"bhabha": 60_000, "gamma_gamma": 60_000, "tautau": 40_000}),
        (10.52, {"bhabha": 60_000, "gamma_gamma": 60_000, "mumu": 5_000}),
    ):
        new = measure_visible_cross_sections(sizes, seed=777, ecms_gev=ecms)
        assert set(new) == set(VISIBLE_CROSS_SECTIONS_NB)
        for method, table in VISIBLE_CROSS_SECTIONS_NB.items():
            assert set(new[method]) <= set(table), (method, new[method])
            for process, (sigma, err) in table.items():
                if process not in sizes:
                    continue
                scale = cross_section_nb(process, ecms) / cross_section_nb(
                    process, VISIBLE_CROSS_SECTION_ECMS
                )
                got, got_err = new[method].get(process, (0.0, 0.0))
                tol = 3.5 * math.hypot(err * scale, got_err)
                assert abs(got - sigma * scale) < tol, (ecms, method, process, got, sigma)
    with pytest.raises(ConfigError, match="at least 1"):
        measure_visible_cross_sections({"bhabha": 0})


def test_the_visible_cross_section_command_prints_a_table_like_the_committed_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``python -m b2calib.sim.luminosity`` prints a table of the committed layout (here of a
    small sample: values with their errors rounded to two significant digits)."""
    luminosity_main(["--events", "bhabha=4000", "--events", "gamma_gamma=2000"])
    header, table_text = capsys.readouterr().out.split("\n", 1)
    assert header == f"# seed 20190, collision energy {VISIBLE_CROSS_SECTION_ECMS} GeV"
    table = ast.literal_eval(table_text)
    assert set(table) == set(VISIBLE_CROSS_SECTIONS_NB)
    for method, processes in table.items():
        for process, (sigma, err) in processes.items():
            committed, committed_err = VISIBLE_CROSS_SECTIONS_NB[method][process]
            assert abs(sigma - committed) < 4 * math.hypot(err, committed_err)
            assert len(f"{err:.3e}".split("e")[0].replace(".", "").rstrip("0")) <= 2
    with pytest.raises(SystemExit):
        luminosity_main(["--events", "bhabha"])


@pytest.mark.slow
def test_luminosity_closure_over_many_runs(tmp_path: Path) -> None:
    """200 physics runs (30 % continuum) of ~240 Bhabha and ~210 gamma-gamma events each: the
    measured luminosities against the registry's (true) ones. Pull mean within 0.1 and width
    0.85-1.15 for both methods (measured: -0.02 and 0.99 for Bhabha, 0.03 and 1.00 for
    gamma-gamma)."""
    cfg = SimConfig(
        exp=3,
        n_runs=200,
        seed=2019,
        events_per_run=500,
        run_types={"physics": 1.0, "cosmic": 0.0, "beam": 0.0, "debug": 0.0},
        continuum_fraction=0.3,
        process_fractions={
            "bhabha": 0.5,
            "gamma_gamma": 0.45,
            "tautau": 0.05,
            "mumu": 0.0,
            "hadron": 0.0,
        },
        skims=["hlt_bhabha", "hlt_gamma_gamma"],
        detectors=["ECL"],  # the tracks and the ECL are all the counts need
    )
    assert prescales(cfg)["hadron"] == 0.0
    result = simulate(cfg, tmp_path, jobs=2)
    qa = collect_qa(tmp_path, executor="inprocess")
    assert len(qa) == 200
    continuum = sum(r.beam_energy == "Continuum" for r in result.registry.select())
    assert 40 < continuum < 80
    for name in ("bhabha.lumi_pb", "gamma_gamma.lumi_pb"):
        pulls = _pulls(qa, result.registry, name)
        assert len(pulls) == 200
        assert abs(pulls.mean()) < 0.1, (name, pulls.mean())
        assert 0.85 < pulls.std(ddof=1) < 1.15, (name, pulls.std(ddof=1))


def test_top_module_time_deviation_finds_one_module_moved() -> None:
    """One TOP module 2 ns late against the others: its deviation from the mean of all tracks
    (2 ns less its share of that mean) many sigma above what the healthy modules show."""
    from b2calib.detectors.top.qa import MIN_MODULE_TRACKS, TOPDimuonQA

    rng = np.random.default_rng(3)
    part = TOPDimuonQA()

    def outputs(shift: float, tracks: int) -> dict[str, dict[str, hist.Hist]]:
        module = np.repeat(np.arange(1, 17), tracks)
        t = rng.normal(0.5, 0.8, len(module)) + np.where(module == 5, shift, 0.0)
        h = hist.Hist(hist.axis.Integer(1, 17), storage=hist.storage.Mean())
        h.fill(module, sample=t)
        return {"hlt_mumu_2trk": {"mean/top_module_time": h, "mean/top_time": _mean(list(t))}}

    def deviation(shift: float) -> MonitoringValue:
        values = part.compute(RunHistograms(3, 8, outputs(shift, 40)))
        [v] = [v for v in values if v.name == "mumu.top_module_time_deviation"]
        return v

    moved = deviation(2.0)
    assert moved.unit == "ns"
    assert moved.value == pytest.approx(2.0 * 15 / 16, abs=4 * moved.error)
    assert moved.error == pytest.approx(math.sqrt((0.8**2 + 2.0**2 * 15 / 256) / 40), rel=0.2)
    assert moved.value / moved.error > 8
    # the largest of 16 |normal| deviations: ~2 sigma
    quiet = [deviation(0.0) for _ in range(50)]
    assert np.median([v.value / v.error for v in quiet]) == pytest.approx(2.0, abs=0.4)
    # modules with too few tracks do not count: no value, and why
    run = RunHistograms(3, 8, outputs(2.0, MIN_MODULE_TRACKS - 1))
    assert [v.name for v in part.compute(run)] == ["mumu.top_time"]
    assert "no TOP module with" in run.notes[0]
