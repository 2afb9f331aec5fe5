"""The simulator: determinism, event rates, channel ranges, truth, interventions and physics."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from scipy import stats

from b2calib.conditions.localdb import LocalDatabase
from b2calib.exceptions import ConfigError
from b2calib.geometry import DETECTORS, arich, cdc, ecl, klm, top, vxd
from b2calib.io import open_skim, read_metadata
from b2calib.physics import cross_section_nb
from b2calib.runs import RunRegistry
from b2calib.sim import (
    PROCESS_ID,
    SimConfig,
    SimulationResult,
    conditions_for_run,
    generate_runs,
    prescales,
    simulate,
    truth_payloads,
)
from b2calib.sim.detector import bethe_bloch
from b2calib.sim.simulate import simulate_run
from tests.conftest import small_config

Experiment = tuple[SimConfig, SimulationResult]


def read_all(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every branch of every skim file below ``folder``, flattened to numpy."""
    out = {}
    for f in sorted(folder.rglob("cdst_*.root")):
        with uproot.open(f) as fh:
            arrays = fh["tree"].arrays(library="ak")
            out[str(f.relative_to(folder))] = {
                k: ak.to_numpy(ak.flatten(arrays[k], axis=None)) for k in arrays.fields
            }
    return out


@pytest.mark.slow
def test_same_seed_same_data_whatever_the_jobs(tmp_path: Path) -> None:
    cfg = SimConfig(exp=3, n_runs=3, events_per_run=300, seed=99)
    simulate(cfg, tmp_path / "a", jobs=1)
    simulate(cfg, tmp_path / "b", jobs=2)
    a, b = read_all(tmp_path / "a"), read_all(tmp_path / "b")
    assert a.keys() == b.keys()
    assert len(a) > 0
    for f in a:
        assert a[f].keys() == b[f].keys()
        for branch in a[f]:
            assert np.array_equal(a[f][branch], b[f][branch]), (f, branch)
    ta = (tmp_path / "a" / "truth" / "database.txt").read_text()
    assert ta == (tmp_path / "b" / "truth" / "database.txt").read_text()
    assert (
        RunRegistry.load(tmp_path / "a" / "runs.json").select()
        == RunRegistry.load(tmp_path / "b" / "runs.json").select()
    )
    simulate(SimConfig(exp=3, n_runs=3, events_per_run=300, seed=100), tmp_path / "c", jobs=2)
    c = read_all(tmp_path / "c")
    f = next(iter(c))
    assert not np.array_equal(
        a[f]["ECLCalDigits_m_Energy"][:50], c[f]["ECLCalDigits_m_Energy"][:50]
    )


def test_generated_counts_follow_lumi_times_cross_section_times_prescale(
    experiment: Experiment,
) -> None:
    cfg, result = experiment
    ps = prescales(cfg)
    pulls = []
    for run in result.registry.select(run_type="physics"):
        ecms = conditions_for_run(cfg, run).ecms
        for process, n in result.generated[run.run].items():
            expected = run.lumi_pb * 1000.0 * cross_section_nb(process, ecms) * ps[process]
            pulls.append((n - expected) / np.sqrt(expected))
    pulls_a = np.array(pulls)
    assert len(pulls_a) >= 15
    # Poisson: chi2 of the pulls consistent with its degrees of freedom
    chi2 = float(np.sum(pulls_a**2))
    assert stats.chi2.sf(chi2, len(pulls_a)) > 1e-3, pulls_a
    assert abs(pulls_a.mean()) < 4 / np.sqrt(len(pulls_a))


def test_skim_counts_follow_luminosity(experiment: Experiment) -> None:
    """Per run, N(skim) = sum_p L sigma_p prescale_p eff(p -> skim) within Poisson errors, with the
    efficiencies measured on the whole experiment: the luminosity can be measured back."""
    cfg, result = experiment
    ps = prescales(cfg)
    physics = result.registry.select(run_type="physics")
    passed: dict[tuple[str, str], int] = defaultdict(int)
    counts: dict[tuple[int, str], int] = {}
    for run in physics:
        for skim in ("hlt_bhabha", "hlt_gamma_gamma", "hlt_mumu_2trk"):
            path = next(f for f in result.files if f"cdst_{skim}_e0007_r{run.run:05d}" in f.name)
            with open_skim(path) as fh:
                proc = ak.to_numpy(fh.arrays(["SimTruth_m_process"])["SimTruth_m_process"])
            counts[(run.run, skim)] = len(proc)
            for name, pid in PROCESS_ID.items():
                passed[(name, skim)] += int((proc == pid).sum())
    generated: dict[str, int] = defaultdict(int)
    for run in physics:
        for p, n in result.generated[run.run].items():
            generated[p] += n
    pulls = []
    for (run_number, skim), n in counts.items():
        run = result.registry.get(7, run_number)
        ecms = conditions_for_run(cfg, run).ecms
        expected = sum(
            run.lumi_pb
            * 1000.0
            * cross_section_nb(p, ecms)
            * ps[p]
            * passed[(p, skim)]
            / generated[p]
            for p in generated
        )
        pulls.append((n - expected) / np.sqrt(expected))
    pulls_a = np.array(pulls)
    assert stats.chi2.sf(float(np.sum(pulls_a**2)), len(pulls_a)) > 1e-3, pulls_a
    # Bhabha skim is dominated by Bhabha events; gamma-gamma by gamma-gamma
    assert passed[("bhabha", "hlt_bhabha")] > 0.9 * sum(
        passed[(p, "hlt_bhabha")] for p in PROCESS_ID
    )
    gg = passed[("gamma_gamma", "hlt_gamma_gamma")]
    assert gg > 0.9 * sum(passed[(p, "hlt_gamma_gamma")] for p in PROCESS_ID)


def test_channel_ids_within_detector_ranges(experiment: Experiment) -> None:
    data = read_all(experiment[1].out)
    assert any("cosmic" in f for f in data)
    seen = set()
    for _f, b in data.items():
        if "ECLCalDigits_m_CellId" in b:
            assert b["ECLCalDigits_m_CellId"].min(initial=1) >= 1
            assert b["ECLCalDigits_m_CellId"].max(initial=1) <= ecl.N_CRYSTALS
        layer, wire = b["CDCHits_m_layer"].astype(int), b["CDCHits_m_wire"].astype(int)
        assert np.all((layer >= 0) & (layer < cdc.N_LAYERS))
        assert np.all((wire >= 0) & (wire < cdc.LAYER_NWIRES[layer]))
        assert np.all(cdc.layer_of(cdc.global_wire(layer, wire)) == layer)
        assert np.all(
            (b["TOPDigits_m_moduleID"] >= 1) & (b["TOPDigits_m_moduleID"] <= top.N_MODULES)
        )
        assert np.all((b["TOPDigits_m_pixelID"] >= 1) & (b["TOPDigits_m_pixelID"] <= top.N_PIXELS))
        assert np.all(
            (b["ARICHDigits_m_modID"] >= 1) & (b["ARICHDigits_m_modID"] <= arich.N_MODULES)
        )
        assert np.all((b["ARICHDigits_m_channelID"] >= 0) & (b["ARICHDigits_m_channelID"] < 144))
        klm.channel(  # raises on any invalid address
            b["KLMDigits_m_subdetector"].astype(int),
            b["KLMDigits_m_section"].astype(int),
            b["KLMDigits_m_sector"].astype(int),
            b["KLMDigits_m_layer"].astype(int),
            b["KLMDigits_m_plane"].astype(int),
            b["KLMDigits_m_strip"].astype(int),
        )
        ext_klm = b["ExtHits_m_copyID"][b["ExtHits_m_detectorID"] == 7]
        assert np.all((ext_klm >= 1) & (ext_klm <= klm.N_CHANNELS))
        vxd.sensor_index(b["SVDClusters_m_sensorID"], "SVD")
        vxd.sensor_index(b["PXDDigits_m_sensorID"], "PXD")
        assert np.all((b["SVDClusters_m_firstStrip"] >= 0) & (b["SVDClusters_m_firstStrip"] < 768))
        assert np.all((b["PXDDigits_m_uCellID"] >= 0) & (b["PXDDigits_m_uCellID"] < vxd.PXD_NU))
        assert np.all((b["PXDDigits_m_vCellID"] >= 0) & (b["PXDDigits_m_vCellID"] < vxd.PXD_NV))
        seen.update(k.split("_")[0] for k in b)
    assert {
        "ECLCalDigits",
        "CDCHits",
        "TOPDigits",
        "KLMDigits",
        "ARICHDigits",
        "SVDClusters",
        "PXDDigits",
        "TrackFitResults",
        "CDCDedxTracks",
        "ExtHits",
        "EventMetaData",
        "SoftwareTriggerVariables",
        "EventT0",
        "TOPRecBunch",
        "ECLClusters",
    } <= seen


def test_dead_channels_never_fire(experiment: Experiment) -> None:
    cfg, result = experiment
    data = read_all(result.out)
    cond = conditions_for_run(cfg, result.registry.select()[0])
    top_ch = np.concatenate(
        [
            top.channel_index(b["TOPDigits_m_moduleID"], b["TOPDigits_m_pixelID"])
            for b in data.values()
        ]
    )
    assert not np.any(cond.top_status[top_ch] == 1)
    assert np.any(cond.top_status[top_ch] == 2)  # noisy ones do
    arich_ch = np.concatenate(
        [
            arich.channel_index(b["ARICHDigits_m_modID"], b["ARICHDigits_m_channelID"])
            for b in data.values()
        ]
    )
    assert not np.any(cond.arich_status[arich_ch] == 1)
    wires = np.concatenate(
        [
            cdc.global_wire(b["CDCHits_m_layer"].astype(int), b["CDCHits_m_wire"].astype(int))
            for b in data.values()
        ]
    )
    assert not np.any(cond.cdc_wire_gain[wires] == 0)


def test_truth_reads_back_equal_to_the_simulator(experiment: Experiment) -> None:
    cfg, result = experiment
    db = LocalDatabase(result.out / "truth")
    for run in result.registry:
        for payload in truth_payloads(conditions_for_run(cfg, run)):
            stored = db.read(db.find(payload.name, run.exp, run.run))
            assert stored.same_content(payload), (payload.name, run.run)
    names = {e.name for e in db.entries()}
    assert {
        "ECLCrystalEnergy",
        "CDCTimeZeros",
        "CDCXtRelations",
        "TOPCalModuleT0",
        "TOPCalChannelT0",
        "KLMStripEfficiency",
        "ARICHChannelMask",
        "SVDCoGTimeCalibrations",
        "PXDGainMapPar",
        "BeamSpot",
        "CollisionInvariantMass",
        "CollisionBoostVector",
        "CDCDedxRunGain",
    } <= names


def test_interventions_make_an_iov_boundary(experiment: Experiment) -> None:
    cfg, result = experiment
    boundary = cfg.effective_intervention_run
    runs = {r.run: r for r in result.registry}
    before = conditions_for_run(cfg, runs[boundary - 1])
    after = conditions_for_run(cfg, runs[boundary])
    crate17 = ecl.crate_of(np.arange(1, ecl.N_CRYSTALS + 1)) == 17
    ratio = before.ecl_energy_const / after.ecl_energy_const
    np.testing.assert_allclose(ratio[crate17], 1.04, rtol=5e-4)
    np.testing.assert_array_equal(ratio[~crate17], 1.0)
    boards = cdc.board_of(np.arange(cdc.N_WIRES))
    shift = after.cdc_t0 - before.cdc_t0
    changed = (boards >= 120) & (boards <= 123)
    np.testing.assert_allclose(shift[changed], 2.5, atol=2e-3)
    np.testing.assert_array_equal(shift[~changed], 0.0)
    assert abs(after.top_module_t0.sum()) < 1e-3
    nominal = {r.run: r.ecms_nominal_gev for r in result.registry}
    offset_before = before.ecms - nominal[boundary - 1]
    offset_after = after.ecms - nominal[boundary]
    assert offset_after == pytest.approx(offset_before - 2e-3, abs=3e-3)  # plus < 1 MeV drift
    entries = [
        e for e in LocalDatabase(result.out / "truth").entries() if e.name == "ECLCrystalEnergy"
    ]
    assert [e.iov.as_tuple() for e in entries] == [
        (7, 1, 7, boundary - 1),
        (7, boundary, 7, cfg.last_run),
    ]
    meta = json.loads((result.out / "simulation.json").read_text())
    assert meta["intervention_run"] == boundary
    assert any(i["detector"] == "ECL" for i in meta["interventions"])


def test_drifting_constants_change_every_run(experiment: Experiment) -> None:
    cfg, result = experiment
    gains = [conditions_for_run(cfg, r).cdc_run_gain for r in result.registry]
    assert len(set(gains)) == len(gains)
    entries = [e for e in LocalDatabase(result.out / "truth").entries() if e.name == "BeamSpot"]
    assert len(entries) == len(result.registry)


def test_dimuon_mass_reflects_the_collision_energy(experiment: Experiment) -> None:
    cfg, result = experiment
    peaks = {}
    for run in result.registry.select(run_type="physics"):
        path = next(f for f in result.files if f"cdst_hlt_mumu_2trk_e0007_r{run.run:05d}" in f.name)
        with open_skim(path) as fh:
            a = fh.arrays(
                ["TrackFitResults_m_omega", "TrackFitResults_m_phi0", "TrackFitResults_m_tanLambda"]
            )
        pt = 0.0029979246 * 1.5 / np.abs(a["TrackFitResults_m_omega"])
        phi, tl = a["TrackFitResults_m_phi0"], a["TrackFitResults_m_tanLambda"]
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * tl
        e = np.sqrt(px**2 + py**2 + pz**2 + 0.1056584**2)
        m = np.sqrt(
            ak.sum(e, 1) ** 2 - ak.sum(px, 1) ** 2 - ak.sum(py, 1) ** 2 - ak.sum(pz, 1) ** 2
        )
        ecms = conditions_for_run(cfg, run).ecms
        m_np = ak.to_numpy(m)
        near = m_np[np.abs(m_np - ecms) < 0.15]
        peaks.setdefault(run.beam_energy, []).append((float(np.median(near)), ecms, len(near)))
    assert {"4S", "Continuum"} <= set(peaks)
    # sigma(M) ~ 45 MeV: the median of n events is known to ~1.25 sigma / sqrt(n); ISR pulls it
    # a few MeV below sqrt(s) (the same in every run, so it cancels in differences)
    for median, ecms, n in (p for v in peaks.values() for p in v):
        assert n > 50
        assert median == pytest.approx(ecms - 0.005, abs=0.005 + 3 * 1.25 * 0.045 / np.sqrt(n))
    (m4, e4, n4), (mc, ec, nc) = peaks["4S"][0], peaks["Continuum"][0]
    err = 1.25 * 0.045 * np.hypot(1 / np.sqrt(n4), 1 / np.sqrt(nc))
    assert m4 - mc == pytest.approx(e4 - ec, abs=3 * err)


def test_beam_spot_is_where_the_tracks_come_from(experiment: Experiment) -> None:
    cfg, result = experiment
    run = result.registry.select(run_type="physics")[0]
    cond = conditions_for_run(cfg, run)
    path = next(f for f in result.files if f"cdst_hlt_mumu_2trk_e0007_r{run.run:05d}" in f.name)
    with open_skim(path) as fh:
        a = fh.arrays(["TrackFitResults_m_d0", "TrackFitResults_m_phi0", "TrackFitResults_m_z0"])
    d0 = ak.to_numpy(ak.flatten(a["TrackFitResults_m_d0"])).astype(float)
    phi = ak.to_numpy(ak.flatten(a["TrackFitResults_m_phi0"])).astype(float)
    # d0 = x sin(phi0) - y cos(phi0): a linear fit gives the IP position
    design = np.column_stack([np.sin(phi), -np.cos(phi)])
    (x, y), res, *_ = np.linalg.lstsq(design, d0, rcond=None)
    sigma = np.sqrt(res[0] / (len(d0) - 2) * np.diag(np.linalg.inv(design.T @ design)))
    mid = cond.beamspot_at(np.array([(run.start + run.stop) / 2]))[0]
    assert abs(x - mid[0]) < 4 * sigma[0] + 2e-4
    assert abs(y - mid[1]) < 4 * sigma[1] + 2e-4
    z0 = ak.to_numpy(ak.flatten(a["TrackFitResults_m_z0"]))
    assert np.mean(z0) == pytest.approx(
        mid[2], abs=4 * cond.beamspot_size[2] / np.sqrt(len(z0) / 2)
    )


def test_dedx_follows_the_run_gain_and_bethe_bloch(experiment: Experiment) -> None:
    cfg, result = experiment
    ratios = []
    for run in result.registry.select(run_type="physics"):
        path = next(f for f in result.files if f"cdst_hlt_bhabha_e0007_r{run.run:05d}" in f.name)
        with open_skim(path) as fh:
            dedx = ak.to_numpy(
                ak.flatten(
                    fh.arrays(["CDCDedxTracks_m_dedxAvgTruncated"])[
                        "CDCDedxTracks_m_dedxAvgTruncated"
                    ]
                )
            )
        ratios.append(np.median(dedx) / conditions_for_run(cfg, run).cdc_run_gain)
    # once the run gain is divided out, the electron dE/dx scale is the same in every run
    assert np.std(ratios) / np.mean(ratios) < 0.01
    # Bethe-Bloch-like: minimum near beta-gamma 3, electrons on the plateau at 1
    bg = np.logspace(-0.5, 4, 400)
    f = bethe_bloch(bg)
    assert 2.0 < bg[np.argmin(f)] < 4.5
    assert f[-1] == pytest.approx(1.0)
    assert 1.45 < 1 / f.min() < 1.6  # Fermi plateau / minimum in a drift-chamber gas


def test_cosmic_runs(experiment: Experiment) -> None:
    _cfg, result = experiment
    cosmic = result.registry.select(run_type="cosmic")
    assert cosmic
    for run in cosmic:
        assert run.lumi_pb == 0.0
        files = [f for f in result.files if f"_r{run.run:05d}" in f.name]
        assert [read_metadata(f).skim for f in files] == ["cosmic"]
        with open_skim(files[0]) as fh:
            a = fh.arrays(["TrackFitResults_m_d0", "nTrackFitResults"])
        assert ak.mean(a["nTrackFitResults"]) > 1.5  # upper and lower legs
        assert np.percentile(np.abs(ak.to_numpy(ak.flatten(a["TrackFitResults_m_d0"]))), 90) > 5.0


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown detectors"):
        SimConfig(detectors=["ECL", "XYZ"])
    with pytest.raises(ConfigError, match="pxd_excluded_fraction must be in"):
        SimConfig(pxd_excluded_fraction=1.5)
    # a run list without PXD-less runs: the same runs, all with the PXD
    runs = generate_runs(SimConfig(n_runs=40, seed=3))
    assert any("PXD" not in r.detectors for r in runs)
    every = generate_runs(SimConfig(n_runs=40, seed=3, pxd_excluded_fraction=0.0))
    assert all(set(r.detectors) == set(DETECTORS) for r in every)
    assert [dataclasses.replace(r, detectors=DETECTORS) for r in runs] == every
    assert "pxd_excluded_fraction" not in SimConfig().to_dict()
    assert SimConfig(pxd_excluded_fraction=0.0).to_dict()["pxd_excluded_fraction"] == 0.0
    with pytest.raises(ConfigError, match="outside the simulated runs"):
        SimConfig(n_runs=3, intervention_run=10)
    with pytest.raises(ConfigError, match="unknown skims"):
        SimConfig(skims=["hlt_foo"])
    bad = tmp_path / "c.toml"
    bad.write_text("[simulation]\nexpp = 3\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['expp'\]"):
        SimConfig.from_file(bad)
    bad.write_text("[simulation\n")
    with pytest.raises(ConfigError, match="cannot read simulation config"):
        SimConfig.from_file(bad)


def test_compression_is_a_per_file_choice(tmp_path: Path) -> None:
    """zstd by default (and then not in to_dict: older samples keep their record), lz4 or
    zlib on request, as basf2's RootOutput compressionAlgorithm; the content is the same."""
    with pytest.raises(ConfigError, match="compression must be one of"):
        SimConfig(compression="lzma")
    assert "compression" not in SimConfig().to_dict()
    assert SimConfig(compression="lz4").to_dict()["compression"] == "lz4"
    files = {}
    for algo in ("zstd", "lz4"):
        cfg = small_config(
            n_runs=1, events_per_run=200, detectors=["PXD"], skims=["hlt_bhabha"], compression=algo
        )
        files[algo] = simulate(cfg, tmp_path / algo, jobs=1).files[0]
    for algo, want in (("zstd", uproot.ZSTD(5)), ("lz4", uproot.LZ4(5))):
        with uproot.open(files[algo]) as fh:
            assert fh.file.compression == want
    with open_skim(files["zstd"]) as z, open_skim(files["lz4"]) as lz:
        a, b = z.arrays(z.branches), lz.arrays(lz.branches)
        assert all(ak.array_equal(a[k], b[k]) for k in z.branches)


def test_detector_subset_writes_only_those_branches(tmp_path: Path) -> None:
    cfg = small_config(n_runs=1, events_per_run=200, detectors=["ECL"], skims=["hlt_bhabha"])
    result = simulate(cfg, tmp_path, jobs=1)
    assert len(result.files) == 1
    with open_skim(result.files[0]) as fh:
        objects = {b.split("_")[0].removeprefix("n") for b in fh.branches}
    assert "ECLCalDigits" in objects
    assert "CDCHits" not in objects
    assert "TOPDigits" not in objects


def test_a_run_without_the_pxd_has_no_pxd_data(tmp_path: Path) -> None:
    """A run whose registry entry leaves out the PXD is written as basf2 writes it: the PXD
    collections are there but empty, the tracks count no PXD hit, the metadata lists the run's
    detectors; every other branch is that of the same run with the PXD (same random numbers)."""
    cfg = small_config(n_runs=1, events_per_run=300, skims=["hlt_mumu_2trk", "hlt_hadron"])
    [generated] = generate_runs(cfg)
    run = dataclasses.replace(generated, detectors=DETECTORS)
    without = dataclasses.replace(run, detectors=tuple(d for d in DETECTORS if d != "PXD"))
    simulate_run(cfg, run, tmp_path / "with")
    simulate_run(cfg, without, tmp_path / "without")
    a, b = read_all(tmp_path / "with"), read_all(tmp_path / "without")
    assert a.keys() == b.keys()
    assert len(a) == 2
    pxd = ("PXDDigits_", "PXDClusters_", "PXDIntercepts_", "nPXD")
    for f in a:
        assert a[f].keys() == b[f].keys()
        assert len(a[f]["PXDDigits_m_charge"]) > 0
        assert len(a[f]["PXDClusters_m_charge"]) > 0
        assert a[f]["TrackFitResults_m_nPXDHits"].sum() > 0
        for branch in a[f]:
            if branch.startswith(pxd):
                assert not np.any(b[f][branch]), (f, branch)  # empty (or zero counts)
            elif branch == "TrackFitResults_m_nPXDHits":
                assert len(b[f][branch]) == len(a[f][branch])
                assert not np.any(b[f][branch])
            else:
                assert np.array_equal(a[f][branch], b[f][branch]), (f, branch)
        meta = read_metadata(tmp_path / "without" / f)
        assert meta.extra["detectors"] == list(without.detectors)
        assert read_metadata(tmp_path / "with" / f).extra["detectors"] == list(DETECTORS)
