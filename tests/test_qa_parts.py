"""QA declared per detector and registered like calibrations: a part registered in a process
comes out of collect_qa with no collector edited; clashes are refused; the collectors carry
their parts (pickled, identified by each part's class and version)."""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot

import b2calib.detectors
from b2calib.exceptions import ConfigError
from b2calib.geometry import DETECTORS
from b2calib.qa.monitoring import (
    QA_HISTOGRAMS,
    SYSTEMS,
    VARIABLES,
    GammaGammaCollector,
    HistogramDef,
    MonitoringValue,
    MuMuCollector,
    QAPart,
    VariableDef,
    collect_qa,
    qa_parts,
    register,
    unregister,
)
from b2calib.qa.monitoring.parts import (
    DimuonEvents,
    Histograms,
    RunHistograms,
    SkimEvents,
    flat,
    mean_histogram,
)
from b2calib.sim import SimConfig, simulate, skim_path

SKIMS = ["hlt_mumu_2trk", "hlt_tau_tau", "hlt_bhabha"]


@dataclasses.dataclass(frozen=True)
class SVDOnTrackFraction(QAPart[DimuonEvents]):
    """A detector-style part, as a detectors/<det>/qa.py declares it: the share of the SVD
    clusters of dimuon events that are on a track."""

    detector = "SVD"
    skim = "hlt_mumu_2trk"
    variables = (VariableDef("mumu.svd_on_track_fraction", "SVD", "", "SVD clusters on tracks"),)
    histograms = (
        HistogramDef("SVD", "clusters_per_event", "SVD clusters per event", bins=(40, 0, 40)),
    )

    def branches(self) -> dict[str, str]:
        return {"SVDClusters_m_trackIndex": "var * int16"}

    def fill(self, events: DimuonEvents) -> Histograms:
        on = flat(events.events, "SVDClusters_m_trackIndex", np.int64) >= 0
        (h,) = self.histograms
        per_event = ak.to_numpy(ak.num(events.events["SVDClusters_m_trackIndex"]))
        return {"mean/svd_on_track": mean_histogram(on), h.output_name: h.filled(per_event)}

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        return self.mean_value(run, self.skim, "mean/svd_on_track", "mumu.svd_on_track_fraction")


@dataclasses.dataclass(frozen=True)
class ECLTauClusters(QAPart[SkimEvents]):
    """A part of a skim without a collector of its own (tau pairs): the generic one reads it."""

    detector = "ECL"
    skim = "hlt_tau_tau"
    order = 100.0
    variables = (VariableDef("tau_tau.ecl_clusters_per_event", "ECL", "", "ECL clusters"),)

    def branches(self) -> dict[str, str]:
        return {"nECLClusters": "int32"}

    def fill(self, events: SkimEvents) -> Histograms:
        return {"ecl_clusters": mean_histogram(ak.to_numpy(events.events["nECLClusters"]))}

    def compute(self, run: RunHistograms) -> list[MonitoringValue]:
        return self.mean_value(run, self.skim, "ecl_clusters", self.variables[0].name)


@dataclasses.dataclass(frozen=True)
class Declares(QAPart[SkimEvents]):
    """A part declaring whatever a test gives it."""

    detector: str = "CDC"
    names: tuple[str, ...] = ()
    skim: str | None = None
    fills: tuple[str, ...] = ()
    order = 0.0

    @property
    def variables(self) -> tuple[VariableDef, ...]:
        return tuple(VariableDef(n, self.detector, "", n) for n in self.names)

    def fill(self, events: SkimEvents) -> Histograms:
        return {name: mean_histogram(np.ones(len(events))) for name in self.fills}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = SimConfig(
        exp=5,
        n_runs=2,
        seed=17,
        events_per_run=1500,
        run_types={"physics": 1.0, "cosmic": 0.0, "beam": 0.0, "debug": 0.0},
        skims=SKIMS,
    )
    out = tmp_path_factory.mktemp("qa_parts")
    simulate(cfg, out, jobs=1)
    return out


@pytest.fixture
def extra_parts() -> Iterator[tuple[SVDOnTrackFraction, ECLTauClusters]]:
    parts = (SVDOnTrackFraction(), ECLTauClusters())
    for p in parts:
        register(p)
    try:
        yield parts
    finally:
        for p in parts:
            unregister(p)


def test_every_detector_package_declares_its_qa() -> None:
    installed = b2calib.detectors.qa_parts()
    assert qa_parts() == sorted(installed, key=lambda p: p.order)
    assert {p.detector for p in installed} == {*DETECTORS, *SYSTEMS}
    for p in installed:
        assert {v.detector for v in p.variables} <= {p.detector}


def test_a_registered_part_comes_out_of_collect_qa(
    folder: Path, extra_parts: tuple[SVDOnTrackFraction, ECLTauClusters]
) -> None:
    names = list(VARIABLES)
    assert names.index("mumu.svd_on_track_fraction") == names.index("mumu.svd_hits_per_track") + 1
    assert names[-1] == "tau_tau.ecl_clusters_per_event"
    assert ("SVD", "clusters_per_event") in QA_HISTOGRAMS
    qa = collect_qa(folder, executor="inprocess")
    assert len(qa) == 2
    for r in qa:
        # the variable as computed from the file itself
        a = uproot.open(skim_path(folder, r.exp, r.run, "hlt_mumu_2trk"))["tree"].arrays()
        q = a["TrackFitResults_m_charge"]
        a = a[(ak.num(q) == 2) & (ak.sum(q, axis=1) == 0)]
        on = ak.to_numpy(ak.flatten(a["SVDClusters_m_trackIndex"])) >= 0
        v = r.variable("mumu.svd_on_track_fraction")
        assert (v.detector, v.unit) == ("SVD", "")
        assert v.value == pytest.approx(on.mean(), rel=1e-12)
        assert v.error == pytest.approx(on.std(ddof=1) / math.sqrt(len(on)), rel=1e-9)
        assert r.histograms[("SVD", "clusters_per_event")].sum() == len(a)
        tau = uproot.open(skim_path(folder, r.exp, r.run, "hlt_tau_tau"))["tree"].arrays()
        clusters = r.variable("tau_tau.ecl_clusters_per_event")
        assert clusters.value == pytest.approx(np.mean(ak.to_numpy(tau["nECLClusters"])))
        got = [v.name for v in r.variables]
        assert got == [n for n in VARIABLES if n in set(got)]


def test_the_collectors_carry_and_identify_their_parts(
    extra_parts: tuple[SVDOnTrackFraction, ECLTauClusters],
) -> None:
    c = MuMuCollector()
    assert SVDOnTrackFraction() in c.active_parts
    assert "SVDClusters_m_trackIndex" in c.branches
    ident = c.identity()
    parts: list[dict[str, Any]] = ident["parts"]
    assert {"part": f"{__name__}.SVDOnTrackFraction", "version": 1, "config": {}} in parts
    assert any(p["part"] == "b2calib.detectors.klm.qa.KLMDimuonQA" for p in parts)
    assert pickle.loads(pickle.dumps(c)) == c
    # a part of a detector the files do not have is left out, also from the cache key
    without = MuMuCollector(detectors=("CDC",))
    assert SVDOnTrackFraction() not in without.active_parts
    assert "SVDClusters_m_trackIndex" not in without.branches
    assert len(without.identity()["parts"]) < len(parts)


def test_clashes_are_refused() -> None:
    with pytest.raises(
        ConfigError,
        match=r"variable 'mumu\.cdc_hits_per_track' is already declared by QA part TrackHits",
    ):
        register(Declares(names=("mumu.cdc_hits_per_track",)))
    with pytest.raises(ConfigError, match=r"variable 'x\.y' is already declared twice"):
        register(Declares(names=("x.y", "x.y")))
    with pytest.raises(ConfigError, match="unknown detector 'FOO'"):
        register(Declares(detector="FOO"))
    with pytest.raises(ConfigError, match="unknown skim 'hlt_nothing'"):
        register(Declares(skim="hlt_nothing"))
    with pytest.raises(ConfigError, match="was not registered"):
        unregister(Declares())
    before = list(VARIABLES)
    part = Declares(names=("x.y",))
    assert register(part) is part
    register(Declares(names=("x.y",)))  # an equal part again: nothing changes
    assert list(VARIABLES) == ["x.y", *before]
    unregister(part)
    assert list(VARIABLES) == before
    # two parts filling one histogram of a skim
    events = ak.Array(
        {"EventMetaData_m_event": np.arange(3), "SoftwareTriggerVariables_GG": [1.0] * 3}
    )
    collector = GammaGammaCollector(parts=(Declares(skim="hlt_gamma_gamma", fills=("events",)),))
    with pytest.raises(ConfigError, match=r"fills \['events'\]"):
        collector.collect(events)
    with pytest.raises(ConfigError, match="not its parts"):
        GammaGammaCollector(parts=(Declares(skim="hlt_bhabha"),))


def test_pxd_hot_pixels_count_every_pixel_across_merged_chunks() -> None:
    """The digits per PXD pixel (a dense histogram of the 7.68M pixels) of two chunks merged
    with ``+`` and pickled are the digits counted directly; the hot pixels are those firing in
    more than 1 % of the events (and 3 times)."""
    from b2calib.detectors.pxd.qa import PXDHotPixels
    from b2calib.geometry import vxd

    rng = np.random.default_rng(4)
    n_events = 300
    hot = {(3, 10, 700): 10, (39, 249, 0): 4, (0, 0, 0): 3}  # (sensor, u, v) -> events fired
    rows: list[list[tuple[int, int, int]]] = [[] for _ in range(n_events)]
    for pixel, n in hot.items():
        for e in rng.choice(n_events, n, replace=False):
            rows[e].append(pixel)
    for e in range(n_events):  # background: distinct random pixels, once each
        rows[e] += [
            (int(rng.integers(40)), int(rng.integers(1, 249)), int(rng.integers(1, 768)))
            for _ in range(int(rng.integers(0, 30)))
        ]
    events = ak.Array(
        {
            "PXDDigits_m_sensorID": [[int(vxd.PXD_IDS[s]) for s, _, _ in r] for r in rows],
            "PXDDigits_m_uCellID": [[u for _, u, _ in r] for r in rows],
            "PXDDigits_m_vCellID": [[v for _, _, v in r] for r in rows],
        }
    )
    part = PXDHotPixels("hlt_hadron")
    h = (
        part.fill(SkimEvents(events[:150]))["pxd_pixels"]
        + part.fill(SkimEvents(events[150:]))["pxd_pixels"]
    )
    h = pickle.loads(pickle.dumps(h))
    ids = np.array([(s * vxd.PXD_NU + u) * vxd.PXD_NV + v for r in rows for s, u, v in r])
    expected = np.bincount(ids, minlength=vxd.N_PXD_PIXELS)
    assert np.array_equal(h.values(), expected)
    run = RunHistograms(
        1,
        1,
        {"hlt_hadron": {"events": mean_histogram(np.ones(n_events)), "pxd_pixels": h}},
        None,
        {},
    )
    values = {v.name: v.value for v in part.compute(run)}
    background = len(ids) - sum(hot.values())
    assert values["hadron.pxd_hot_pixels"] == 2  # (0,0,0) fires 3 times: not more than 1 %
    assert values["hadron.pxd_hot_pixel_fraction"] == pytest.approx(14 / (14 + 3 + background))
