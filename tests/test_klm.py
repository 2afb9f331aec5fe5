"""KLM calibrations: closure on the simulator, algorithm pieces on arrays, CLI and notebook.

Samples (mu-mu only, KLM only, seed 5 of experiment 12, so one set of static constants):

* ``efficiency``: 6 runs of ~17k dimuon events, the BKLM high-voltage trip (forward sector 3
  layer 8, efficiency x 0.6) from run 4: KLMStripEfficiency run by run, the plane efficiencies
  compared with the mean true efficiency of the strips their selected crossings went through;
* ``timing``: 2 runs of ~20k dimuon events: KLMTimeConstants and KLMTimeCableDelay against the
  truth.

The runs are certified GOOD for every detector (:func:`certified`): the strip efficiency reads
runs that are "Good Or Recoverable".
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import hist
import numpy as np
import pytest
import uproot
from click.testing import CliRunner

from b2calib.calibration import (
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Constants,
    Diagnostics,
    SequentialRunByRun,
    run_calibrations,
)
from b2calib.calibration.toolkit import binomial_interval
from b2calib.cli import cli
from b2calib.conditions import ChannelStatus, ConditionsDB, Payload
from b2calib.detectors import klm as K
from b2calib.detectors.klm import collectors, strip_efficiency
from b2calib.engine import RunOutput
from b2calib.exceptions import BadValueError
from b2calib.geometry import klm as geo
from b2calib.runs import RunRegistry
from b2calib.sim import SimConfig, simulate
from b2calib.sim.conditions import KLM_PROPAGATION_DELAY, conditions_for_run, truth_payloads
from b2calib.sim.runs import generate_runs
from tests.closure import assert_closure, calibrate, ok_channels, pulls, staged
from tests.test_notebooks import execute

CALS = {c.name: c for c in K.calibrations()}
MUMU_ONLY = {"bhabha": 0.0, "gamma_gamma": 0.0, "mumu": 1.0, "hadron": 0.0, "tautau": 0.0}
NPL = len(geo.PLANES)
#: The plane of the simulated intervention (BKLM forward sector 3 layer 8), both strip planes.
TRIP_PLANES = [geo.plane_index(geo.BKLM, 1, 3, 8, p) for p in (0, 1)]


def _config(**kw: object) -> SimConfig:
    base: dict[str, object] = dict(
        exp=12,
        seed=5,
        processes=["mumu"],
        process_fractions=MUMU_ONLY,
        skims=["hlt_mumu_2trk"],
        detectors=["KLM"],
        run_types={"physics": 1.0},
        continuum_fraction=0.0,
    )
    return SimConfig(**(base | kw))  # type: ignore[arg-type]


EFFICIENCY = _config(n_runs=6, events_per_run=10000, intervention_run=4)
TIMING = _config(n_runs=2, events_per_run=12000, intervention_run=2)


def certified(data: Path) -> RunRegistry:
    """The runs of ``data`` with every included detector certified GOOD."""
    loaded = RunRegistry.load(data / "runs.json")
    return RunRegistry(
        dataclasses.replace(r, dq=dict.fromkeys(r.detectors, "GOOD")) for r in loaded
    )


def _truth(cfg: SimConfig, run: int):  # type: ignore[no-untyped-def]
    return conditions_for_run(cfg, next(r for r in generate_runs(cfg) if r.run == run))


# ------------------------------------------------------------------------------ declarations
def test_declarations() -> None:
    eff, tim = CALS["klm-strip-efficiency"], CALS["klm-time"]
    assert eff.payloads == ("KLMStripEfficiency",)
    assert tim.payloads == ("KLMTimeConstants", "KLMTimeCableDelay")
    assert eff.skims == tim.skims == ("hlt_mumu_2trk",)
    assert eff.dq == "Good Or Recoverable"
    assert eff.run_type == "physics"
    assert eff.stage == tim.stage == "post-tracking"
    assert isinstance(eff.strategy, strip_efficiency.StripEfficiencyRunByRun)
    assert isinstance(tim.strategy, SequentialRunByRun)
    assert eff.configure() == {"min_crossings": 10, "requested_precision": 0.02}
    assert tim.configure()["min_hits"] == 50
    truth = {p.name: p for p in truth_payloads(_truth(TIMING, 1))}
    assert np.array_equal(truth["KLMTimeConstants"].value(), KLM_PROPAGATION_DELAY)
    assert list(truth["KLMTimeConstants"].keys["type"]) == [1, 2, 3, 4]


def test_geometry_types_and_distances() -> None:
    ch = np.arange(1, geo.N_CHANNELS + 1)
    d = geo.decode(ch)
    typ = geo.strip_type(ch)
    assert np.all(typ[d["subdetector"] == geo.EKLM] == geo.EKLM_SCINT)
    assert np.all(typ[(d["subdetector"] == geo.BKLM) & (d["layer"] <= 2)] == geo.BKLM_SCINT)
    rpc = (d["subdetector"] == geo.BKLM) & (d["layer"] > 2)
    assert np.all(typ[rpc & (d["plane"] == 1)] == geo.RPC_PHI)
    assert np.all(typ[rpc & (d["plane"] == 0)] == geo.RPC_Z)
    # a BKLM phi strip of the forward section is read out at the section split
    c = geo.channel(geo.BKLM, 1, 1, 5, 1, 10)
    assert geo.propagation_distance(c, 230.0, 0.0, 100.0) == pytest.approx(100.0 - geo.BKLM_ZSPLIT)
    # EKLM plane 2 strips run along y, read out at |y| = -RMAX/2
    c = geo.channel(geo.EKLM, 2, 1, 3, 2, 10)
    assert geo.propagation_distance(c, 50.0, -120.0, 290.0) == pytest.approx(120.0 + 165.0)


# ------------------------------------------------------------------------- strip efficiency
def test_binomial_interval_behaves_at_zero_and_one() -> None:
    lo, hi = binomial_interval([0, 20, 20, 0], [20, 20, 40, 0], method="jeffreys")
    assert lo[0] == 0.0
    assert 0.0 < hi[0] < 0.1
    assert 0.9 < lo[1] < 1.0
    assert hi[1] == 1.0
    assert lo[2] < 0.5 < hi[2]
    assert np.isnan(lo[3])
    assert np.isnan(hi[3])
    with pytest.raises(ValueError, match="method must be"):
        binomial_interval(1, 2, method="wald")


def _eff_input(n: np.ndarray, k: np.ndarray) -> AlgorithmInput:
    hn, hk = (hist.Hist(hist.axis.Regular(NPL, -0.5, NPL - 0.5, name="plane")) for _ in "nk")
    hn.view()[...] = n
    hk.view()[...] = k
    cfg = CALS["klm-strip-efficiency"].configure()
    return AlgorithmInput(
        [(12, 1)],
        {"crossings": hn, "matched": hk},
        RunOutput({(12, 1): {"crossings": hn, "matched": hk}}),
        Constants([]),
        cfg,
    )


def test_strip_efficiency_rules() -> None:
    alg = strip_efficiency.StripEfficiencyAlgorithm()
    n = np.full(NPL, 2000)
    k = np.full(NPL, 1900)
    n[5], k[5] = 0, 0  # a plane without crossings: not measured, not a reason to wait
    res = alg.run(_eff_input(n, k))
    assert res.status is AlgorithmStatus.OK, res.message
    p = res.payloads[0]
    first, count = geo.PLANE_FIRST[0] - 1, geo.PLANES[0, 5]
    assert np.all(p.value()[first : first + count] == 0.95)  # every strip its plane's value
    s5 = slice(geo.PLANE_FIRST[5] - 1, geo.PLANE_FIRST[5] - 1 + geo.PLANES[5, 5])
    assert np.all(p.status[s5] == ChannelStatus.NOT_ENOUGH_DATA)
    assert np.all(p.errors["value"][p.status == 0] > 0)
    k[7] = n[7] = 2000  # efficiency 1: a positive error, the run still good
    res = alg.run(_eff_input(n, k))
    assert res.status is AlgorithmStatus.OK
    assert res.payloads[0].errors["value"][geo.PLANE_FIRST[7] - 1] > 0
    n[9], k[9] = 9, 9  # 0 < crossings < 10
    res = alg.run(_eff_input(n, k))
    assert res.status is AlgorithmStatus.NOT_ENOUGH_DATA
    assert "0 < crossings < 10" in res.message
    n[9], k[9] = 300, 150  # error 0.029 > 0.02
    res = alg.run(_eff_input(n, k))
    assert res.status is AlgorithmStatus.NOT_ENOUGH_DATA
    assert "error > 0.02" in res.message
    res = alg.run(_eff_input(np.zeros(NPL, int), np.zeros(NPL, int)))
    assert res.status is AlgorithmStatus.NOT_ENOUGH_DATA
    assert "KLM excluded" in res.message


def _fake(status: str, planes: list[int]) -> AlgorithmResult:
    table = {"crossings": np.isin(np.arange(NPL), planes).astype(np.int64)}
    diag = Diagnostics(tables={"planes": table})
    if status == "OK":
        return AlgorithmResult(
            AlgorithmStatus.OK, [Payload("X", values={"value": np.ones(1)})], diag
        )
    return AlgorithmResult(AlgorithmStatus.NOT_ENOUGH_DATA, diagnostics=diag)


def test_strip_efficiency_strategy_merging() -> None:
    """Runs 1 good; 2 low (no new plane) -> into the next good run 3; 4 low with a plane run 3
    lacks and 5 good lacks it too -> 4 alone (calibrated alone: still low, no payload); 6 has no
    crossings (KLM excluded): ignored; 7 low -> into the previous good run 5."""
    runs = {
        (12, 1): ("OK", [1, 2, 3]),
        (12, 2): ("LOW", [1, 2]),
        (12, 3): ("OK", [1, 2, 3]),
        (12, 4): ("LOW", [1, 4]),
        (12, 5): ("OK", [1, 2, 3]),
        (12, 6): ("LOW", []),
        (12, 7): ("LOW", [2]),
    }
    calls: list[list[tuple[int, int]]] = []

    def execute(rs: list[tuple[int, int]]) -> AlgorithmResult:
        calls.append(rs)
        ok = any(runs[r][0] == "OK" for r in rs)
        planes = sorted({p for r in rs for p in runs[r][1]})
        return _fake("OK" if ok else "LOW", planes)

    out = strip_efficiency.StripEfficiencyRunByRun().run(list(runs), execute, list)
    done = [(e.runs, str(e.iov)) for e in out if e.ok]
    assert [r for r, _ in done] == [[(12, 1)], [(12, 2), (12, 3)], [(12, 5), (12, 7)]]
    iovs = [e.iov for e in out if e.ok]
    assert [(i.first_run, i.final_run) for i in iovs] == [(1, 1), (2, 4), (5, 7)]
    lacking = [e.runs for e in out if not e.ok]
    assert [(12, 4)] in lacking
    assert [(12, 6)] in lacking


def test_selection_cuts() -> None:
    """One track through barrel layers 1-15 (30 planes) with digits on every plane; the cuts
    of the basf2 collector on the layers and the momentum."""

    def track(matched: np.ndarray, p: float) -> collectors.Crossings:
        layers = np.repeat(np.arange(1, 16), 2)
        planes = np.arange(30)
        z = np.zeros(30)
        return collectors.Crossings(
            event=np.zeros(30, np.int64),
            track=np.zeros(30, np.int64),
            channel=geo.PLANE_FIRST[planes],
            plane=planes,
            layer=layers,
            matched=matched,
            time=z,
            momentum=np.full(30, p),
            x=z,
            y=z,
            z=z,
            tof=z,
        )

    cuts = (14, 4, 4.0)
    all_on = np.ones(30, bool)
    sel = collectors.selected_for_efficiency(track(all_on, 5.0), *cuts)
    assert sel.all()
    # low momentum: the outermost layers have < 4 matched digits outside them and too few
    # crossings outside to ask for them, so they need p >= 4 GeV/c
    sel = collectors.selected_for_efficiency(track(all_on, 3.0), *cuts)
    assert sel[:26].all()
    assert not sel[26:].any()
    # digits only on the 14 planes of layers 1-7: those have 12 digits in other layers,
    # layers 8-13 none in outer layers though the track crosses >= 4 planes there; layers 14
    # and 15 have too few crossings outside and pass on the momentum
    few = np.zeros(30, bool)
    few[:14] = True
    sel = collectors.selected_for_efficiency(track(few, 5.0), *cuts)
    assert np.array_equal(np.flatnonzero(sel), [26, 27, 28, 29])
    assert not collectors.selected_for_efficiency(track(few, 3.0), *cuts).any()
    # digits on layers 1-8: layers 7 and 8 have < 4 digits in the layers outside them, which
    # the track crosses: rejected; layers 1-6 kept, 14-15 kept on the momentum
    inner = np.zeros(30, bool)
    inner[:16] = True
    sel = collectors.selected_for_efficiency(track(inner, 5.0), *cuts)
    assert np.array_equal(np.flatnonzero(sel), [*range(12), 26, 27, 28, 29])


def _weighted_truth(cfg: SimConfig, data: Path, runs: list[tuple[int, int]]) -> np.ndarray:
    """The efficiency each plane's selected crossings of ``runs`` saw: the mean of the true
    efficiencies of the strips crossed (what a plane efficiency measures)."""
    num = np.zeros(NPL)
    den = np.zeros(NPL)
    col = collectors.StripEfficiencyCollector()
    for _, run in runs:
        eff = _truth(cfg, run).klm_efficiency
        for f in sorted(data.glob(f"e*/r{run:05d}/cdst_hlt_mumu_2trk_*.root")):
            ev = uproot.open(f)["tree"].arrays(list(col.branches))
            c = collectors.crossings(ev, col.allowed_distance)
            sel = collectors.selected_for_efficiency(c, 14, 4, 4.0)
            np.add.at(num, c.plane[sel], eff[c.channel[sel] - 1])
            np.add.at(den, c.plane[sel], 1.0)
    return np.divide(num, den, out=np.full(NPL, np.nan), where=den > 0)


@pytest.fixture(scope="module")
def efficiency(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ConditionsDB, dict]:  # type: ignore[type-arg]
    out = tmp_path_factory.mktemp("klm_efficiency")
    simulate(EFFICIENCY, out / "data", jobs=2)
    reports, db = calibrate(
        CALS["klm-strip-efficiency"],
        out / "data",
        out / "db.sqlite",
        registry=certified(out / "data"),
    )
    assert reports["klm-strip-efficiency"].status == "OK", reports
    return out, db, reports


@pytest.mark.slow
def test_strip_efficiency_closure(efficiency: tuple[Path, ConditionsDB, dict]) -> None:  # type: ignore[type-arg]
    out, db, reports = efficiency
    items = {e.iov.first_run: p for e, p in staged(db, "staging", "KLMStripEfficiency")}
    steps = [s for s in reports["klm-strip-efficiency"].executions if s.iov is not None]
    assert len(items) == len(steps) >= 4
    first = geo.PLANE_FIRST - 1
    fitted, errors, truth = [], [], []
    trip: dict[bool, list[np.ndarray]] = {False: [], True: []}
    for step in steps:
        runs = [r for _, r in step.runs]
        # the intervention run (4) starts a payload: no execution mixes runs before and after
        after = min(runs) >= 4
        assert after or max(runs) < 4, runs
        payload = items[step.iov.first_run]
        ok = ok_channels(payload, "KLMStripEfficiency")[first]
        expected = _weighted_truth(EFFICIENCY, out / "data", step.runs)
        fitted.append(payload.value()[first][ok])
        errors.append(payload.errors["value"][first][ok])
        truth.append(expected[ok])
        trip[after].append(payload.value()[first[TRIP_PLANES]])
    s = assert_closure(
        np.concatenate(fitted),
        np.concatenate(errors),
        np.concatenate(truth),
        "KLM plane efficiency",
    )
    assert s.n > 3000
    # the tripped plane: x0.6 from the intervention on, in its own payloads
    before, after_ = np.mean(trip[False], axis=0), np.mean(trip[True], axis=0)
    assert np.all(np.abs(after_ / before - 0.6) < 0.05), (before, after_)


# ----------------------------------------------------------------------------------- time
@pytest.fixture(scope="module")
def timing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ConditionsDB]:
    out = tmp_path_factory.mktemp("klm_time")
    simulate(TIMING, out / "data", jobs=2)
    reports, db = calibrate(CALS["klm-time"], out / "data", out / "db.sqlite")
    assert reports["klm-time"].status == "OK", reports
    return out, db


@pytest.mark.slow
def test_time_closure(timing: tuple[Path, ConditionsDB]) -> None:
    _, db = timing
    [(_, constants)] = staged(db, "staging", "KLMTimeConstants")
    [(_, cable)] = staged(db, "staging", "KLMTimeCableDelay")
    v, e = constants.value(), constants.errors["value"]
    assert np.all(e > 0), e
    assert np.all(np.abs(v - KLM_PROPAGATION_DELAY) < 3 * e), (v, e)
    truth = _truth(TIMING, 1).klm_delay
    ok = ok_channels(cable, "KLMTimeCableDelay")
    s = assert_closure(cable.value()[ok], cable.errors["value"][ok], truth[ok], "KLM cable delay")
    assert s.n > 0.25 * geo.N_CHANNELS
    typ = geo.strip_type(np.arange(1, geo.N_CHANNELS + 1))
    for k, name in geo.TIME_TYPES.items():
        sel = ok & (typ == k)
        print(name, pulls(cable.value()[sel], cable.errors["value"][sel], truth[sel]))
    # channels with < 50 hits: the nearest calibrated strips' value, flagged
    borrowed = cable.status == ChannelStatus.NOT_ENOUGH_DATA
    assert borrowed.any()
    assert np.all(np.isfinite(cable.value()[borrowed]))
    b = pulls(cable.value()[borrowed], cable.errors["value"][borrowed], truth[borrowed])
    print("from neighbours:", b)
    assert abs(b.mean) < 0.1
    assert 0.8 < b.width < 1.3


# ---------------------------------------------------------------------------------- bad input
def test_sample_without_klm(tmp_path: Path) -> None:
    cfg = _config(n_runs=2, events_per_run=300, detectors=["CDC"])
    simulate(cfg, tmp_path / "data", jobs=1)
    reports = run_calibrations(
        [CALS["klm-strip-efficiency"], CALS["klm-time"]],
        tmp_path / "data",
        db=ConditionsDB(tmp_path / "db.sqlite", author="test"),
        staging_tag="staging",
        cache=False,
        registry=certified(tmp_path / "data"),
    )
    for name, report in reports.items():
        assert report.status in ("NOT_ENOUGH_DATA", "SKIPPED"), (name, str(report))
        assert not report.staged
        print(report)


# ------------------------------------------------------------------------- CLI and notebook
@pytest.mark.slow
def test_cli(timing: tuple[Path, ConditionsDB], tmp_path: Path) -> None:
    out, _ = timing
    data = tmp_path / "data"
    shutil.copytree(out / "data", data)
    db = tmp_path / "cli.sqlite"
    base = ["calibrate", "--data", str(data), "--db", str(db), "--quiet"]
    result = CliRunner().invoke(cli, [*base, "klm-time", "--staging", "t"])
    assert result.exit_code == 0, result.output
    assert {e.name for e in ConditionsDB(db).iovs("t")} == {"KLMTimeConstants", "KLMTimeCableDelay"}
    # nothing certified: the strip efficiency has no input run, and says so
    result = CliRunner().invoke(cli, [*base, "klm-strip-efficiency", "--staging", "e"])
    assert result.exit_code == 1
    assert "NOT_ENOUGH_DATA" in result.output
    runs = json.loads((data / "runs.json").read_text())
    for r in runs["runs"]:
        r["dq"] = dict.fromkeys(r["detectors"], "GOOD")
    (data / "runs.json").write_text(json.dumps(runs))
    cfg = tmp_path / "eff.json"
    cfg.write_text(json.dumps({"requested_precision": 0.05}))
    result = CliRunner().invoke(
        cli,
        [
            *base,
            "klm-strip-efficiency",
            "--staging",
            "e",
            "--config",
            f"klm-strip-efficiency={cfg}",
        ],
    )
    assert result.exit_code == 0, result.output
    assert {e.name for e in ConditionsDB(db).iovs("e")} == {"KLMStripEfficiency"}


@pytest.mark.notebooks
@pytest.mark.slow
def test_klm_notebook(sample: Path) -> None:
    numbers = execute("klm.ipynb", sample)
    # strip efficiency: every plane measured (~40 crossings each), pulls against the truth with
    # the side of the interval facing it; the intervention's x0.6 seen across run 7
    assert numbers["planes_measured"] == NPL
    assert abs(float(numbers["efficiency_mean_pull"])) < 0.3  # type: ignore[arg-type]
    assert 0.8 < float(numbers["efficiency_pull_width"]) < 1.2  # type: ignore[arg-type]
    assert float(numbers["trip_ratio"]) == pytest.approx(0.6, abs=0.2)  # type: ignore[arg-type]
    assert numbers["efficiency_default_status"] == "NOT_ENOUGH_DATA"  # errors ~0.04 > 0.02
    assert numbers["efficiency_status"] == "OK"  # requested precision 0.1
    assert numbers["efficiency_payloads"] == 1
    # time: the four propagation delays from ~28k hits; the cable delays starved
    for k, v in enumerate(KLM_PROPAGATION_DELAY):
        assert float(numbers["delays"][k]) == pytest.approx(v, abs=0.005)  # type: ignore[index]
    assert numbers["time_default_status"] == "NOT_ENOUGH_DATA"
    assert numbers["time_status"] == "OK"
    assert numbers["cable_ok"] < 0.01 * geo.N_CHANNELS
    assert numbers["staged"] == ["KLMStripEfficiency", "KLMTimeCableDelay", "KLMTimeConstants"]


def _window_cdf_numpy(
    edges: np.ndarray, mean: np.ndarray, sd: np.ndarray, weight: np.ndarray
) -> np.ndarray:
    """The delay fit's sum of windowed Gaussian CDFs at the edges, in numpy (the model before it
    was compiled with its gradient): each Gaussian within 6 widths (the largest) of its mean, 0
    below, its whole weight above, less its CDF at the first edge."""
    from scipy.special import ndtr

    nb = len(edges) - 1
    bw = float(edges[1] - edges[0])
    w = int(np.ceil(6.0 * float(sd.max(initial=0.0)) / bw)) + 1
    c = np.floor((mean - edges[0]) / bw).astype(np.int64)
    idx = c[:, None] + np.arange(-w, w + 2)[None, :]
    inside = (idx >= 0) & (idx <= nb)
    at = np.clip(idx, 0, nb)
    phi = ndtr((edges[at] - mean[:, None]) / sd[:, None]) * weight[:, None]
    cdf = np.bincount(at[inside], weights=phi[inside], minlength=nb + 1)
    beyond = c + w + 2
    reached = beyond <= nb
    step = np.bincount(np.maximum(beyond[reached], 0), weights=weight[reached], minlength=nb + 1)
    base = float(np.sum(weight * ndtr((edges[0] - mean) / sd)))
    return np.asarray(cdf + np.cumsum(step) - base)


def _reference_delay_model(cells: np.ndarray, edges: np.ndarray, window: tuple[float, float]):  # type: ignore[no-untyped-def]
    """The scintillator delay fit's scaled CDF as it was computed before (numpy, per distance
    bin): the reference of the compiled model."""
    from scipy.special import ndtr

    ref = collectors.REFERENCE_DELAY
    n_ck = cells[:, :, 0]
    n_c = np.maximum(n_ck.sum(axis=1), 1.0)
    tbar, dbar = cells[:, :, 1].sum(axis=1) / n_c, cells[:, :, 3].sum(axis=1) / n_c
    with np.errstate(invalid="ignore", divide="ignore"):
        dck = np.where(n_ck > 0, cells[:, :, 3] / n_ck, 0.0)
        vck = np.where(n_ck > 0, np.maximum(cells[:, :, 4] / n_ck - dck**2, 0.0), 0.0)
    lo, hi = window
    nb = len(edges) - 1
    live = [np.flatnonzero(n_ck[:, k] > 0) for k in range(collectors.DISTANCE_BINS)]

    def scaled_cdf(x: np.ndarray, delay: float, sigma: float) -> np.ndarray:
        out = np.empty(collectors.DISTANCE_BINS * nb + 1)
        total = 0.0
        for k, i in enumerate(live):
            m = tbar[i] + delay * (dck[i, k] - dbar[i])
            sd = np.sqrt(sigma**2 + (delay - ref) ** 2 * vck[i, k])
            sw = np.sqrt(sigma**2 + delay**2 * vck[i, k])
            norm = n_ck[i, k] / np.maximum(ndtr((hi - m) / sw) - ndtr((lo - m) / sw), 1e-300)
            f = _window_cdf_numpy(edges, m - ref * dck[i, k], sd, norm)
            out[0 if k == 0 else k * nb + 1 : (k + 1) * nb + 1] = total + f[0 if k == 0 else 1 :]
            total += float(n_ck[i, k].sum())
        return out

    return scaled_cdf


def _scintillator_sample(
    seed: int, channels: int = 300, noise: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells (channel x distance bin x moments), the histogram of ``t - REFERENCE_DELAY x d``
    (2 ns bins x distance bin) and its edges of a simulated scintillator type: cable delays
    uniform in +-5 ns, strips of 200 cm, delay 0.068 ns/cm, resolution 1.3 ns, window -20..40;
    ``noise`` of the hits are noise digits instead (uniform in the window)."""
    rng = np.random.default_rng(seed)
    ch = rng.integers(0, channels, 200 * channels)
    d = rng.uniform(0.0, 200.0, len(ch))
    t = rng.uniform(-5.0, 5.0, channels)[ch] + 0.068 * d + rng.normal(0.0, 1.3, len(ch))
    if noise:
        hit = rng.choice(len(t), noise, replace=False)
        t[hit] = rng.uniform(-20.0, 40.0, noise)
    inside = (t >= -20.0) & (t < 40.0)
    ch, d, t = ch[inside], d[inside], t[inside]
    dbin = np.minimum((d / 200.0 * collectors.DISTANCE_BINS).astype(np.int64), 3)
    cells = np.zeros((channels, collectors.DISTANCE_BINS, len(collectors.MOMENTS)))
    for k, w in enumerate((np.ones_like(t), t, t * t, d, d * d, t * d)):
        np.add.at(cells[:, :, k], (ch, dbin), w)
    edges = np.arange(-34.0, 40.0001, 2.0)
    counts, _, _ = np.histogram2d(
        t - collectors.REFERENCE_DELAY * d, dbin, bins=(edges, np.arange(-0.5, 4.0))
    )
    return cells, counts, edges


def test_delay_model_equals_reference_and_its_gradient() -> None:
    """The compiled delay model is the numpy model it replaced up to rounding, and its analytic
    gradient is the numerical one."""
    from b2calib.detectors.klm import time as T

    cells, _, edges = _scintillator_sample(3)
    cells[5, 2] = 0.0  # a channel without hits in one distance bin
    window = (-20.0, 40.0)
    model = T._DelayModel(cells, edges, window, collectors.REFERENCE_DELAY)
    reference = _reference_delay_model(cells, edges, window)
    for delay, sigma in ((0.068, 1.3), (0.03, 3.0), (0.12, 0.4)):
        value = model.cdf(edges, delay, sigma).copy()
        np.testing.assert_allclose(value, reference(edges, delay, sigma), rtol=1e-12, atol=1e-9)
        grad = model.grad(edges, delay, sigma).copy()
        h = 1e-6
        for p, step in enumerate(((h, 0.0), (0.0, h))):
            up = model.cdf(edges, delay + step[0], sigma + step[1]).copy()
            down = model.cdf(edges, delay - step[0], sigma - step[1]).copy()
            numerical = (up - down) / (2 * h)
            np.testing.assert_allclose(grad[p], numerical, atol=1e-5 * np.abs(numerical).max())


def _with_background(gauss: Any, even: np.ndarray) -> Any:
    """The reference model of the delay fit with its background: a fraction of the hits spread
    as ``even`` (cumulative at the edges)."""

    def model(x: np.ndarray, delay: float, sigma: float, background: float) -> np.ndarray:
        return (1 - background) * gauss(x, delay, sigma) + background * even

    return model


def test_delay_fit_with_gradient_equals_numerical_fit() -> None:
    """The delay fit with the analytic gradient gives the fit with Minuit's numerical
    derivatives on the reference model with its background: delays within 1e-3 of their error,
    errors and resolutions within 1 %."""
    from iminuit import Minuit
    from iminuit.cost import ExtendedBinnedNLL

    from b2calib.detectors.klm import time as T

    window = (-20.0, 40.0)
    for seed in (1, 2):
        cells, counts, edges = _scintillator_sample(seed)
        use = cells[:, :, 0].sum(axis=1) > 0
        new = T.fit_scintillator_delay(cells, counts, edges, use, window, start=(0.06, 1.0))
        width = float(edges[-1] - edges[0])
        flat = np.concatenate([[window[0]], *[edges[1:] + k * width for k in range(4)]])
        gauss = _reference_delay_model(cells[use], edges, window)
        # the background: each distance bin's hits spread evenly over its bins
        hits = cells[use][:, :, 0].sum(axis=0)
        even = np.concatenate(
            [[0.0], *[hits[:k].sum() + hits[k] * np.arange(1, 38) / 37 for k in range(4)]]
        )

        cost = ExtendedBinnedNLL(counts.T.reshape(-1), flat, _with_background(gauss, even))
        m = Minuit(cost, delay=0.06, sigma=1.0, background=1e-4)
        m.errors["delay"], m.errors["sigma"], m.errors["background"] = 1e-3, 0.05, 1e-4
        m.limits["delay"], m.limits["sigma"] = (0.0, 0.3), (0.05, 20.0)
        m.limits["background"] = (0.0, 0.5)
        m.migrad()
        m.hesse()
        assert new.valid
        assert m.valid
        assert m.accurate
        err = float(m.errors["delay"])
        assert abs(new.value - float(m.values["delay"])) < 1e-3 * err, (new.value, m.values)
        assert new.error == pytest.approx(err, rel=0.01)
        assert new.scatter == pytest.approx(float(m.values["sigma"]), rel=0.01)
        assert abs(new.value - 0.068) < 4 * new.error  # and the truth is recovered


def test_delay_fit_with_noise_digits() -> None:
    """Three noise digits (uniform in the window) among 60,000 hits leave the delay fit valid
    and the delay within 3 errors of the truth: the model's background takes them. Before it
    had one, seed 2's fit was invalid, 636 errors off (each such hit sat where the Gaussians
    expected 1e-8 hits); klm-time failed on the bench's sample with 4x its events."""
    from b2calib.detectors.klm import time as T

    window = (-20.0, 40.0)
    for seed in (1, 2):
        cells, counts, edges = _scintillator_sample(seed, noise=3)
        use = cells[:, :, 0].sum(axis=1) > 0
        fit = T.fit_scintillator_delay(cells, counts, edges, use, window, start=(0.06, 1.0))
        assert fit.valid, (seed, fit.message)
        assert abs(fit.value - 0.068) < 3 * fit.error, (seed, fit.value, fit.error)
        assert 0.0 < fit.background * fit.hits < 10  # about the three noise digits


def test_delay_fit_tries_again_at_strategy_1_when_its_minimum_is_invalid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A delay fit whose first minimum is invalid (here Migrad stopped at its call limit) tries
    once more from there at strategy 1, which checks the analytic gradient, and ends valid, at
    the minimum the fit finds undisturbed."""
    from b2calib.detectors.klm import time as T

    window = (-20.0, 40.0)
    cells, counts, edges = _scintillator_sample(1, noise=3)
    use = cells[:, :, 0].sum(axis=1) > 0
    expect = T.fit_scintillator_delay(cells, counts, edges, use, window, start=(0.06, 1.0))
    strategies: list[int] = []

    class Stopped(T.Minuit):  # type: ignore[misc]
        def migrad(self, ncall: int | None = None, iterate: int = 5) -> Any:
            strategies.append(int(self.strategy.strategy))
            if len(strategies) == 1:
                return super().migrad(ncall=3, iterate=1)  # stopped at the call limit
            return super().migrad(ncall=ncall, iterate=iterate)

    monkeypatch.setattr(T, "Minuit", Stopped)
    fit = T.fit_scintillator_delay(cells, counts, edges, use, window, start=(0.06, 1.0))
    assert strategies == [0, 1]
    assert fit.valid, fit.message
    assert fit.value == pytest.approx(expect.value, abs=1e-3 * expect.error)
    assert fit.error == pytest.approx(expect.error, rel=1e-2)


def test_profiled_background_fraction() -> None:
    """The delay fit's background fraction is the likelihood's maximum: exactly the fraction
    mixed into expected counts, 0 for counts that are the Gaussians', more than 0 for a hit
    where the Gaussians expect none, capped at 0.5."""
    from b2calib.detectors.klm import time as T

    x = np.linspace(-5.0, 5.0, 41)
    gauss = 1000.0 * np.exp(-0.5 * x**2) / np.exp(-0.5 * x**2).sum()
    even = np.full(len(x), 1000.0 / len(x))
    for f in (0.01, 0.2):
        mixed = (1 - f) * gauss + f * even
        assert T._profiled_fraction(gauss, even, mixed) == pytest.approx(f, rel=1e-9)
    assert T._profiled_fraction(gauss, even, gauss) == 0.0
    empty = gauss.copy()
    empty[0] = 0.0
    hit = empty.copy()
    hit[0] = 1.0
    assert T._profiled_fraction(empty, even, hit) > 0.0
    assert T._profiled_fraction(gauss, even, even) == 0.5


# ------------------------------------------------------------- compiled paths vs the reference
def test_match_compiled_equals_numpy() -> None:
    """The crossings' matching event by event (compiled) gives the numpy path's keys-and-search
    result: duplicate (track, plane) hits, several digits on a strip (the first in the file
    gives the time, a NaN time included), digits on the neighbouring plane, events without
    hits or digits, strip windows of 0 and 7."""
    rng = np.random.default_rng(4)
    n_events = 400
    e_counts = rng.integers(0, 12, n_events)
    e_counts[:3] = 0
    d_counts = rng.integers(0, 12, n_events)
    d_counts[3:6] = 0
    evt = np.repeat(np.arange(n_events), e_counts)
    trk = rng.integers(0, 3, len(evt))
    plane = rng.integers(100, 104, len(evt))  # few planes: duplicates and neighbours
    strip = rng.integers(1, 12, len(evt))
    d_plane = rng.integers(100, 104, d_counts.sum())
    d_strip = rng.integers(1, 12, d_counts.sum())
    d_time = rng.normal(0.0, 5.0, d_counts.sum())
    d_time[::17] = np.nan
    offsets = collectors._offsets
    for span in (0, 7):
        assert collectors._compiled_match_applies(trk, d_strip, span)
        compiled = collectors._match_compiled(
            offsets(e_counts), plane, strip, trk, offsets(d_counts), d_plane, d_strip, d_time, span
        )
        plain = collectors._match_numpy(
            evt, trk, plane, strip, d_counts, d_plane, d_strip, d_time, span
        )
        assert len(plain[0]) < len(evt)  # duplicates were dropped
        assert plain[1].any()
        assert not plain[1].all()
        for a, b in zip(compiled, plain, strict=True):
            np.testing.assert_array_equal(a, b)
    # keys the numpy path mixes up (track 64, strip 128): that path, not the compiled one
    assert not collectors._compiled_match_applies(np.array([0, 64]), d_strip, 0)
    assert not collectors._compiled_match_applies(trk, np.array([1, 128]), 0)
    assert not collectors._compiled_match_applies(trk, d_strip, -1)


def test_collectors_compiled_equal_numpy_path(
    sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both KLM collectors fill bit-identical histograms, and ``crossings`` gives identical
    crossings, through the compiled crossings and the numpy path without numba (one run of the
    sample)."""
    f = sorted(sample.glob("e*/r*/cdst_hlt_mumu_2trk_*.root"))[0]
    col = collectors.TimeCollector()
    ev = uproot.open(f)["tree"].arrays(list(col.branches))
    out: dict[bool, tuple] = {}  # type: ignore[type-arg]
    for compiled in (True, False):
        if not compiled:  # numpy only: no compiled crossings, no compiled matching
            monkeypatch.setattr(collectors, "compiled", lambda *a: None)
            monkeypatch.setattr(collectors, "_compiled_match_applies", lambda *a: False)
        c = collectors.crossings(ev, 8)
        hists = {**col.collect(ev), **collectors.StripEfficiencyCollector().collect(ev)}
        out[compiled] = (c, hists)
    (c1, h1), (c2, h2) = out[True], out[False]
    # a digit on strip 0 of its plane: the numpy path, with the plane of the channel before
    ev2 = ak.with_field(
        ev,
        ak.where(ak.local_index(ev["KLMDigits_m_strip"]) == 0, 0, ev["KLMDigits_m_strip"]),
        "KLMDigits_m_strip",
    )
    monkeypatch.setattr(collectors, "_match_compiled", None)  # not called
    c3 = collectors.crossings(ev2, 8)
    assert len(c3.channel) == len(c1.channel)
    assert c3.matched.sum() <= c1.matched.sum()
    assert len(c1.channel) > 1000
    for field in dataclasses.fields(collectors.Crossings):
        np.testing.assert_array_equal(getattr(c1, field.name), getattr(c2, field.name))
    assert h1.keys() == h2.keys()
    for k in h1:
        assert np.array_equal(h1[k].view(flow=True), h2[k].view(flow=True)), k
    assert h1["moments"].values().sum() > 0


def _assert_same_crossings(a: collectors.Crossings, b: collectors.Crossings) -> None:
    """Every field equal, bit for bit, with its dtype."""
    for field in dataclasses.fields(collectors.Crossings):
        x, y = getattr(a, field.name), getattr(b, field.name)
        assert x.dtype == y.dtype, field.name
        assert x.tobytes() == y.tobytes(), field.name


def test_crossings_compiled_equals_numpy_on_the_sample(sample: Path) -> None:
    """The compiled crossings (one pass over the branches as read) are the numpy path's, bit
    for bit, on a run of the sample: whole, and a chunk of events whose lists start inside the
    read arrays, for strip windows of 1 and 8."""
    f = sorted(sample.glob("e*/r*/cdst_hlt_mumu_2trk_*.root"))[0]
    ev = uproot.open(f)["tree"].arrays(list(collectors._BRANCHES))
    chunk = ev[len(ev) // 3 : len(ev) // 2]
    group = collectors._group(chunk, collectors._EXT_BRANCHES)
    assert group is not None
    assert group[0][0] > 0  # (the chunk's lists start inside the read arrays)
    for events in (ev, chunk):
        for distance in (1, 8):
            kernel = collectors.crossings(events, distance)
            plain = collectors.crossings(events, distance, compiled_kernel=False)
            assert len(kernel.event) > 400
            assert kernel.matched.any()
            assert np.isfinite(kernel.time).any()
            _assert_same_crossings(kernel, plain)


def _events(**branches: Sequence[Sequence[float]]) -> ak.Array:
    """Events of the collectors' branches (their declared types) from lists; the branches not
    given are empty lists."""
    types = collectors._EXT_BRANCHES | collectors._DIGIT_BRANCHES | collectors._TRACK_BRANCHES
    n = len(next(iter(branches.values())))
    lists = {name: branches.get(name, [[]] * n) for name in types}
    return ak.Array(
        {
            name: ak.unflatten(
                np.array([v for row in lists[name] for v in row], typ.removeprefix("var * ")),
                [len(row) for row in lists[name]],
            )
            for name, typ in types.items()
        }
    )


def _edge_events() -> dict[str, Sequence[Sequence[float]]]:
    """Three events: two tracks with KLM ExtHits (duplicates in a plane, one on the track past
    the event's tracks) among ExtHits of other detectors (whose copy IDs are no KLM channels),
    digits on the strip, near it and in another plane; an event without anything; an event
    with ExtHits of other detectors only."""
    p0, p1 = 5, geo.plane_index(geo.EKLM, 2, 3, 4, 1)
    ch0, ch1 = int(geo.PLANE_FIRST[p0]) + 9, int(geo.PLANE_FIRST[p1]) + 40  # strips 10, 41
    address = [[int(v) for v in geo.PLANES[p, :5]] for p in (p0, p0, p0, p1, p1)]
    return {
        "ExtHits_m_detectorID": [[3, 7, 7, 6, 7, 7, 7], [], [3, 4]],
        "ExtHits_m_copyID": [[123456, ch0, ch0, 99999, ch1, ch1, ch0], [], [0, -5]],
        "ExtHits_m_trackIndex": [[0, 0, 0, 1, 1, 2, 1], [], [0, 0]],
        "ExtHits_m_posX": [[1.5, 2.25, 3.0, 4.0, 5.0, 6.0, 7.0], [], [1.0, 2.0]],
        "ExtHits_m_posY": [[0.5, -2.0, 3.5, 4.0, -5.5, 6.0, 7.0], [], [1.0, 2.0]],
        "ExtHits_m_posZ": [[9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0], [], [1.0, 2.0]],
        "ExtHits_m_tof": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], [], [1.0, 2.0]],
        **{
            f"KLMDigits_m_{k}": [[a[i] for a in address], [], []]
            for i, k in enumerate(("subdetector", "section", "sector", "layer", "plane"))
        },
        "KLMDigits_m_strip": [[10, 10, 3, 48, 41], [], []],
        "KLMDigits_m_time": [[float("nan"), 4.5, 6.0, 7.5, 8.25], [], []],
        "TrackFitResults_m_omega": [[0.002, 0.0], [], [0.001]],
        "TrackFitResults_m_tanLambda": [[0.3, -1.2], [], [0.5]],
    }


def test_crossings_compiled_edge_cases_equal_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled crossings equal the numpy path's on the cases they handle themselves
    (ExtHits of other detectors, duplicates, a track index past the event's tracks, a straight
    track, events without hits, digits or tracks, NaN digit times, lists typed other than as
    declared but convertible) and leave to the numpy path, with its result or its error, the
    cases that path treats specially (track indices outside 0..63, a digit strip outside its
    plane, lists that do not convert to their declared type), and the values no sound file
    holds, which it rejects (an address of no plane or outside the table, a KLM channel outside
    the KLM)."""
    numpy_path = collectors._crossings_numpy
    calls: list[int] = []

    def spy(events: ak.Array, allowed_distance: int) -> collectors.Crossings:
        calls.append(1)
        return numpy_path(events, allowed_distance)

    monkeypatch.setattr(collectors, "_crossings_numpy", spy)

    def both(events: ak.Array, *, compiled_pass: bool) -> collectors.Crossings:
        """The crossings through both paths, asserted equal; whether the compiled pass made
        them (the numpy path called once, for the reference, else twice)."""
        calls.clear()
        kernel = collectors.crossings(events, 8)
        _assert_same_crossings(kernel, collectors.crossings(events, 8, compiled_kernel=False))
        assert len(calls) == (1 if compiled_pass else 2)
        return kernel

    base = _edge_events()
    kernel = both(_events(**base), compiled_pass=True)
    assert kernel.event.tolist() == [0, 0, 0, 0]  # one crossing per (track, plane) in the KLM
    assert kernel.track.tolist() == [0, 1, 2, 1]
    assert kernel.matched.tolist() == [True, True, True, True]
    np.testing.assert_array_equal(kernel.time, [np.nan, 8.25, 8.25, np.nan])  # the first digit's
    np.testing.assert_array_equal(kernel.x, [2.25, 5.0, 6.0, 7.0])  # the first hit's
    assert np.isfinite(kernel.momentum[0])
    assert np.isinf(kernel.momentum[1])  # omega 0: a straight track
    assert np.isnan(kernel.momentum[2])  # no track 2 in the event
    empty = _events(ExtHits_m_detectorID=[[], []])
    assert len(both(empty, compiled_pass=True).event) == 0
    assert len(both(_events(**base)[1:], compiled_pass=True).event) == 0
    # lists of other types: converted when lossless, else read by the numpy path
    wide = _events(**base)
    for name, typ in (("ExtHits_m_trackIndex", "int64"), ("TrackFitResults_m_omega", "float64")):
        wide = ak.with_field(wide, ak.values_astype(wide[name], typ), name)
    _assert_same_crossings(both(wide, compiled_pass=True), kernel)
    odd = ak.with_field(wide, wide["TrackFitResults_m_omega"] + 1e-12, "TrackFitResults_m_omega")
    both(odd, compiled_pass=False)
    # the numpy path's special cases: its result through both
    cases = [
        ("ExtHits_m_trackIndex", [[0, 0, 0, 1, 64, 2, 1], [], [0, 0]]),
        ("ExtHits_m_trackIndex", [[0, -1, 0, 1, 1, 2, 1], [], [0, 0]]),
        ("KLMDigits_m_strip", [[10, 0, 3, 48, 41], [], []]),
        ("KLMDigits_m_strip", [[10, 10, 3, 48, 76], [], []]),
    ]
    for name, values in cases:
        both(_events(**(base | {name: values})), compiled_pass=False)
    # a channel outside the KLM, an address of no plane, an address outside the table
    # are values no sound file holds: BadValueError naming the branch (the engine then names
    # the file and leaves it out); a negative field no longer wraps around the table
    every = "KLMDigits_m_{subdetector,section,sector,layer,plane}"
    bad = [
        ("ExtHits_m_copyID", [[1, 0, 2, 3, 4, 5, 6], [], [0, 0]], "ExtHits_m_copyID",
         f"KLM ExtHit 0 of the entries read: channel 0, the KLM has 1..{geo.N_CHANNELS}"),
        ("KLMDigits_m_sector", [[1, 1, 1, 1, 5], [], []], every,
         "digit 4 of the entries read: no strip plane has subdetector 2, section 2, sector 5,"
         " layer 4, plane 1"),
        ("KLMDigits_m_sector", [[1, 1, 1, 1, 9], [], []], "KLMDigits_m_sector",
         "digit 4 of the entries read: sector 9 outside 0..8"),
        ("KLMDigits_m_layer", [[1, -1, 1, 1, 4], [], []], "KLMDigits_m_layer",
         "digit 1 of the entries read: layer -1 outside 0..15"),
    ]  # fmt: skip
    for name, values, branch, what in bad:
        events = _events(**(base | {name: values}))
        for compiled in (True, False):
            with pytest.raises(BadValueError) as err:
                collectors.crossings(events, 8, compiled_kernel=compiled)
            assert err.value.branch == branch
            assert str(err.value) == f"branch {branch!r}: {what}"


def test_geometry_tables_equal_formulas() -> None:
    """The per-channel tables of ``decode``, ``strip_type`` and ``extrapolation_layer`` and the
    per-formula ``propagation_distance`` are bit-identical to the formulas they replaced."""
    ch = np.arange(1, geo.N_CHANNELS + 1)
    i = np.searchsorted(geo.PLANE_FIRST, ch, side="right") - 1
    d = geo.decode(ch)
    for k, name in enumerate(("subdetector", "section", "sector", "layer", "plane")):
        np.testing.assert_array_equal(d[name], geo.PLANES[i, k])
    np.testing.assert_array_equal(d["strip"], ch - geo.PLANE_FIRST[i] + 1)
    rpc_type = np.where(d["plane"] == 1, geo.RPC_PHI, geo.RPC_Z)
    bklm_type = np.where(d["layer"] <= geo.BKLM_SCINT_LAYERS, geo.BKLM_SCINT, rpc_type)
    typ = np.where(d["subdetector"] == geo.EKLM, geo.EKLM_SCINT, bklm_type)
    np.testing.assert_array_equal(geo.strip_type(ch), typ)
    layer = np.where(d["subdetector"] == geo.EKLM, geo.BKLM_LAYERS, 0) + d["layer"]
    np.testing.assert_array_equal(collectors.extrapolation_layer(ch), layer)
    rng = np.random.default_rng(8)
    c = rng.integers(1, geo.N_CHANNELS + 1, 20000)
    x, y, z = rng.uniform(-400.0, 400.0, (3, len(c)))
    d = geo.decode(c)
    r = np.hypot(x, y)
    centre = (d["sector"] - 1) * np.pi / 4
    local = r * np.tan(np.mod(np.arctan2(y, x) - centre + np.pi, 2 * np.pi) - np.pi)
    bklm_z = local + r * np.tan(np.pi / 8)
    bklm_phi = np.where(d["section"] == 1, z - geo.BKLM_ZSPLIT, geo.BKLM_ZSPLIT - z)
    bklm = np.where(d["plane"] == 0, bklm_z, bklm_phi)
    eklm = np.where(d["plane"] == 1, np.abs(x), np.abs(y)) + geo.EKLM_RMAX / 2
    expected = np.where(d["subdetector"] == geo.EKLM, eklm, bklm)
    np.testing.assert_array_equal(geo.propagation_distance(c, x, y, z), expected)
    with pytest.raises(ValueError, match="outside"):
        geo.strip_type([0])
    with pytest.raises(ValueError, match="outside"):
        geo.plane_of([geo.N_CHANNELS + 1])


def _neighbour_values_per_plane(
    value: np.ndarray, ok: np.ndarray, spread_of_plane: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The former ``_neighbour_values``: a distance matrix per plane (the reference)."""
    nc = geo.N_CHANNELS
    out_v, out_e, found = np.full(nc, np.nan), np.full(nc, np.nan), np.zeros(nc, bool)
    for p, (first, n) in enumerate(zip(geo.PLANE_FIRST - 1, geo.PLANES[:, 5], strict=True)):
        sl = slice(first, first + n)
        good, need = np.flatnonzero(ok[sl]), np.flatnonzero(~ok[sl])
        if not len(good) or not len(need):
            continue
        dist = np.abs(need[:, None] - good[None, :])
        nearest = dist == dist.min(axis=1, keepdims=True)
        m = nearest.sum(axis=1)
        out_v[first + need] = (nearest * value[sl][good][None, :]).sum(axis=1) / m
        out_e[first + need] = spread_of_plane[p] * np.sqrt(1.0 + 1.0 / m)
        found[first + need] = True
    return out_v, out_e, found


def test_neighbour_values_and_plane_spread_equal_the_per_plane_loops() -> None:
    """The cable delays borrowed from the nearest calibrated strips and the planes' spreads,
    computed over all channels at once, are the former per-plane loops' bit for bit: planes
    with no, one, two and all strips calibrated, ties on both sides, negative delays, planes of
    every size."""
    from b2calib.detectors.klm import time as T

    rng = np.random.default_rng(8)
    nc, npl = geo.N_CHANNELS, len(geo.PLANES)
    for fraction in (0.02, 0.3, 0.9):
        value = rng.normal(-3.0, 2.0, nc)
        ok = rng.random(nc) < fraction
        plane = np.repeat(np.arange(npl), geo.PLANES[:, 5])
        ok[plane % 7 == 0] = False  # planes without calibrated strips
        ok[plane % 11 == 0] = True  # planes with every strip calibrated
        one = geo.PLANE_FIRST[3::13] - 1  # planes with one calibrated strip, two, a tie
        ok[plane % 13 == 3] = False
        ok[one + 4] = True
        ok[one[::2] + 8] = True
        spread = np.array(
            [
                np.std(value[f - 1 : f - 1 + m][ok[f - 1 : f - 1 + m]])
                if ok[f - 1 : f - 1 + m].sum() >= 2
                else np.nan
                for f, m in zip(geo.PLANE_FIRST, geo.PLANES[:, 5], strict=True)
            ]
        )
        np.testing.assert_array_equal(T._plane_spread(value, ok), spread)
        spread = np.where(np.isfinite(spread), spread, 0.7)
        for new, old in zip(
            T._neighbour_values(value, ok, spread),
            _neighbour_values_per_plane(value, ok, spread),
            strict=True,
        ):
            np.testing.assert_array_equal(new, old)


def test_time_lacking_channels_skips_the_likelihood(
    sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An execution that cannot calibrate ``min_calibrated_fraction`` of the channels (too few
    with ``min_hits``) says NOT_ENOUGH_DATA without the scintillators' likelihood fit (most of
    its time); with enough channels the fit runs."""
    from b2calib.calibration import AlgorithmInput, Constants
    from b2calib.detectors.klm import time as T

    f = sorted(sample.glob("e*/r*/cdst_hlt_mumu_2trk_*.root"))[0]
    col = collectors.TimeCollector()
    hists = col.collect(uproot.open(f)["tree"].arrays(list(col.branches)))
    fitted: list[int] = []
    real = T.fit_scintillator_delay

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        fitted.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "fit_scintillator_delay", counted)
    cal = CALS["klm-time"]
    runs = [(12, 1)]
    lacking = cal.configure({"min_hits_per_type": 10})
    result = T.TimeAlgorithm().run(AlgorithmInput(runs, hists, RunOutput(), Constants([]), lacking))
    assert result.status.value == "NOT_ENOUGH_DATA", result.message
    assert "of the channels have >= 50 hits" in result.message
    assert not fitted
    types = result.diagnostics.tables["types"]
    assert np.all(np.isfinite(types["delay"][:2]))  # the scintillators' straight lines
    enough = cal.configure({"min_hits": 1, "min_hits_per_type": 10, "min_calibrated_fraction": 0.0})
    result = T.TimeAlgorithm().run(AlgorithmInput(runs, hists, RunOutput(), Constants([]), enough))
    assert len(fitted) == 2, result.message


def test_time_collector_sums_and_fills_equal_bincount_and_hist_fill() -> None:
    """The time collector's one-pass moment sums and compiled fills are ``np.bincount`` with
    each weight and ``Hist.fill`` (the former code), bit for bit: cells hit many times in
    shuffled order, times on and beyond the axis edges, every distance bin."""
    from b2calib.engine.fill import fill_2d

    rng = np.random.default_rng(11)
    n, ncell = 50000, 600
    cell = rng.integers(0, ncell, n)
    t = rng.normal(5.0, 20.0, n)
    t[:200] = np.round(t[:200])  # on bin edges
    d = rng.uniform(0.0, 300.0, n)
    out = np.zeros((ncell, len(collectors.MOMENTS)))
    collectors._moments(out, cell, t, d)
    for k, w in enumerate((np.ones_like(t), t, t * t, d, d * d, t * d)):
        np.testing.assert_array_equal(out[:, k], np.bincount(cell, weights=w, minlength=ncell))
    dbin = rng.integers(0, collectors.DISTANCE_BINS, n)
    axes = ((40, -20.0, 20.0), (collectors.DISTANCE_BINS, -0.5, collectors.DISTANCE_BINS - 0.5))
    names = ("time", "distance_bin")
    want = collectors._hist(*axes, names=names, storage=hist.storage.Int64())
    want.fill(time=t, distance_bin=dbin)
    got = collectors._hist(*axes, names=names, storage=hist.storage.Int64())
    fill_2d(got.view(flow=True), t, dbin, *axes)
    np.testing.assert_array_equal(got.view(flow=True), want.view(flow=True))


def test_track_rank_is_unique_inverse() -> None:
    """The tracks' ranks from the table of keys present are ``np.unique``'s count and inverse,
    for keys in file order, unsorted, sparse, negative (``np.unique`` itself) and none."""
    rng = np.random.default_rng(10)
    event = np.sort(rng.integers(0, 500, 3000))
    for key in (
        event * 64 + rng.integers(0, 3, 3000),
        rng.permutation(event * 64 + rng.integers(0, 64, 3000)),
        np.array([5, 10**9, 5, 7]),
        event * 64 + rng.integers(-1, 3, 3000),
        np.array([3]),
        np.zeros(0, np.int64),
    ):
        ids, inv = np.unique(key, return_inverse=True)
        n, rank = collectors._track_rank(key)
        assert n == len(ids)
        np.testing.assert_array_equal(rank, inv)


def test_efficiency_selection_counts_per_track_and_layer_as_add_at_did() -> None:
    """The crossing selection counts each track's matched and all crossings per layer with one
    ``bincount`` (issue 20: ``np.add.at`` took half of the strip-efficiency collector's CPU);
    the selection is the former one's, element for element, across the cuts' edges."""
    rng = np.random.default_rng(9)
    n = 20000
    event = np.sort(rng.integers(0, 200, n))  # ~33 crossings per track
    track = rng.integers(0, 3, n)
    layer = rng.integers(1, 30, n)
    matched = rng.random(n) < 0.8
    momentum = rng.exponential(3.0, n)
    zeros = np.zeros(n)
    c = collectors.Crossings(
        event, track, zeros.astype(np.int64), zeros.astype(np.int64), layer, matched,
        zeros, momentum, zeros, zeros, zeros, zeros,
    )  # fmt: skip

    def former(min_digits: int, min_outer: int, p_min: float) -> np.ndarray:
        ids, inv = np.unique(event * 64 + track, return_inverse=True)
        digits = np.zeros((len(ids), 30))
        hits = np.zeros((len(ids), 30))
        np.add.at(digits, (inv, layer), matched)
        np.add.at(hits, (inv, layer), 1.0)
        total = digits.sum(axis=1)
        other = total[inv] - digits[inv, layer]
        outer_digits = np.cumsum(digits[:, ::-1], axis=1)[:, ::-1]
        outer_hits = np.cumsum(hits[:, ::-1], axis=1)[:, ::-1]
        nxt = np.minimum(layer + 1, 29)
        beyond = layer + 1 < 30
        m_outer = np.where(beyond, outer_digits[inv, nxt], 0.0)
        h_outer = np.where(beyond, outer_hits[inv, nxt], 0.0)
        ok = (total[inv] >= min_digits) & (other >= min_digits)
        rescued = (h_outer < min_outer) & (momentum >= p_min)
        return ok & (~(m_outer < min_outer) | rescued)

    for cuts in ((14, 4, 4.0), (20, 8, 2.0), (1, 1, 0.0), (40, 4, 4.0), (28, 30, 2.0)):
        got = collectors.selected_for_efficiency(c, *cuts)
        want = former(*cuts)
        np.testing.assert_array_equal(got, want, err_msg=str(cuts))
        assert 0 < want.sum() < n


def _time_edge_events() -> ak.Array:
    """:func:`_edge_events` (the first digit on a strip with a NaN time, two tracks on one
    EKLM strip, ExtHits of other detectors, events without anything) with event T0s, and two
    events of crossings of every type and distance formula (EKLM x and y, BKLM scintillator
    and RPC z strips, RPC phi strips forward and backward): a time outside its window, a NaN
    flight time, a NaN crossing point, one far beyond its strip; the second without an event
    T0."""
    base = {k: list(v) for k, v in _edge_events().items()}
    crossings = [  # (plane address, strip, x, y, z, tof, digit time)
        ((geo.EKLM, 1, 2, 3, 1), 20, -120.0, 40.0, -210.0, 1.0, 12.0),
        ((geo.EKLM, 2, 4, 7, 2), 33, 80.0, -150.5, 300.0, 1.5, 30.25),
        ((geo.BKLM, 0, 3, 1, 0), 7, 150.0, 140.0, -20.0, 0.5, 5.0),
        ((geo.BKLM, 1, 6, 9, 0), 30, -200.0, 90.0, 100.0, 0.7, 9.5),
        ((geo.BKLM, 1, 2, 5, 1), 11, 10.0, 250.0, 130.0, 0.6, 7.0),
        ((geo.BKLM, 0, 8, 12, 1), 40, 180.0, -200.0, -100.0, 0.9, 500.0),  # outside
        ((geo.BKLM, 0, 5, 4, 1), 3, -230.0, -10.0, -50.0, float("nan"), 4.0),
        ((geo.EKLM, 1, 1, 2, 2), 60, float("nan"), float("nan"), -200.0, 1.2, 8.0),
        ((geo.EKLM, 2, 3, 5, 1), 9, 1e6, 3.0, 290.0, 1.1, 6.0),
    ]
    ch = [int(geo.channel(*a, s)) for a, s, *_ in crossings]
    names = ("subdetector", "section", "sector", "layer", "plane")
    for _ in range(2):
        base["ExtHits_m_detectorID"].append([7] * len(crossings))
        base["ExtHits_m_copyID"].append(ch)
        base["ExtHits_m_trackIndex"].append([i % 2 for i in range(len(crossings))])
        for k, col in zip(("posX", "posY", "posZ", "tof"), range(2, 6), strict=True):
            base[f"ExtHits_m_{k}"].append([c[col] for c in crossings])
        for i, name in enumerate(names):
            base[f"KLMDigits_m_{name}"].append([c[0][i] for c in crossings])
        base["KLMDigits_m_strip"].append([c[1] for c in crossings])
        base["KLMDigits_m_time"].append([c[6] for c in crossings])
        base["TrackFitResults_m_omega"].append([0.001, 0.002])
        base["TrackFitResults_m_tanLambda"].append([0.1, 0.2])
    events = _events(**base)
    events = ak.with_field(
        events, np.array([0.5, 0.0, 1.0, -0.25, 3.0], np.float32), "EventT0_m_eventT0"
    )
    return ak.with_field(events, np.array([1, 1, 0, 1, 0], np.int8), "EventT0_m_hasEventT0")


def test_time_hits_compiled_equal_numpy(sample: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The time collector's hits from the compiled pass (only the hits, no crossings) are the
    numpy path's (from the crossings), bit for bit with their dtypes: on a run of the sample
    (whole and a chunk), on every type and distance formula with times outside the windows, NaN
    flight times, digit times and crossing points and an event without T0; the histograms of
    both paths are equal too. Inputs the compiled crossings leave to numpy, and windows not
    one per type, go to the numpy path."""
    f = sorted(sample.glob("e*/r*/cdst_hlt_mumu_2trk_*.root"))[0]
    col = collectors.TimeCollector()
    ev = uproot.open(f)["tree"].arrays(list(col.branches))
    edge = _time_edge_events()
    numpy_path = collectors._time_hits_numpy
    calls: list[int] = []

    def spy(events: ak.Array, windows: tuple[tuple[float, float], ...]) -> tuple:  # type: ignore[type-arg]
        calls.append(1)
        return numpy_path(events, windows)

    monkeypatch.setattr(collectors, "_time_hits_numpy", spy)
    for events, compiled_pass in ((ev, True), (ev[len(ev) // 3 : len(ev) // 2], True),
                                  (edge, True), (edge[3:], True)):  # fmt: skip
        calls.clear()
        got = collectors.time_hits(events)
        want = collectors.time_hits(events, compiled_kernel=False)
        assert len(calls) == (1 if compiled_pass else 2)
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype
            assert a.tobytes() == b.tobytes()
        assert len(got[0]) > 0
    ch, _, d, typ = collectors.time_hits(edge)
    assert sorted(set(typ.tolist())) == [1, 2, 3, 4]
    # the EKLM strip's two tracks; of the 9 crossings with T0, all but the time outside its
    # window and the NaN flight time
    assert len(ch) == 2 + 7
    assert np.isnan(d).sum() == 1  # the NaN crossing point
    strips = collectors._STRIP_LENGTH
    assert np.nanmax(d / strips[ch - 1]) > 1  # beyond its strip: the last bin
    assert np.nanmin(d) < 0  # before its readout end: the first bin
    # the numpy path's cases: a strip outside its plane; windows not one per type
    odd = ak.with_field(edge, edge["KLMDigits_m_strip"] * 0, "KLMDigits_m_strip")
    for events, windows in ((odd, collectors.TIME_WINDOWS), (edge, collectors.TIME_WINDOWS[:3])):
        calls.clear()
        # (the numpy path raises IndexError for three windows and four types)
        with contextlib.suppress(IndexError):
            collectors.time_hits(events, windows)
        assert len(calls) == 1
    # the collector's sums and histograms: the compiled fill against numpy's
    out = {}
    for compiled in (True, False):
        if not compiled:
            monkeypatch.setattr(collectors, "compiled", lambda *a: None)
        with np.errstate(invalid="ignore"):  # numpy's cast of the NaN distance to its bin
            out[compiled] = {
                **col.collect(ev),
                **{f"edge {k}": h for k, h in col.collect(edge).items()},
            }
    assert out[True].keys() == out[False].keys()
    for k, h in out[True].items():
        a, b = h.view(flow=True), out[False][k].view(flow=True)
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), k
    assert out[True]["edge time_1"].values().sum() > 0


def test_delay_model_value_alone_equals_the_pass_with_gradient() -> None:
    """The delay model's value alone (no density computed) is the value of the pass with the
    gradient, bit for bit; beyond the normal table, the distribution above it is libm's
    ``0.5 erfc(-z / sqrt 2)`` (1, without calling it), and below it that call."""
    import math

    from b2calib.detectors.klm import time as T

    cells, _, edges = _scintillator_sample(5)
    model = T._DelayModel(cells, edges, (-20.0, 40.0), collectors.REFERENCE_DELAY)
    for delay, sigma in ((0.068, 1.3), (0.0, 0.05), (0.3, 20.0)):
        value, none = T._delay_model_kernel(*model._args, delay, sigma, with_grad=False)
        both, grad = T._delay_model_kernel(*model._args, delay, sigma, with_grad=True)
        assert none is None
        assert grad is not None
        assert value.tobytes() == both.tobytes()
    z = np.concatenate([[np.nextafter(9.0, 10.0)], np.linspace(9.0, 60.0, 5001)[1:], [1e300]])
    for x in map(float, (*z, *-z, np.inf, -np.inf, np.nan)):
        cdf, pdf = T._normal_at(x, True)
        want = 0.5 * math.erfc(-x / math.sqrt(2.0))
        assert cdf == want or (math.isnan(cdf) and math.isnan(want)), x
        assert pdf == math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi) or math.isnan(x)


def test_efficiency_counts_compiled_equal_numpy(
    sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The strip-efficiency counts from the compiled pass (no crossings) are those of the
    numpy path (the crossings and :func:`selected_for_efficiency`), bit for bit: on a run of the
    sample (whole and a chunk) and on the edge events (a track past the event's tracks, a
    straight track, NaN digit times, crossings on many layers), across the cuts' edges; the
    inputs the compiled crossings leave to numpy take the numpy path."""
    f = sorted(sample.glob("e*/r*/cdst_hlt_mumu_2trk_*.root"))[0]
    ev = uproot.open(f)["tree"].arrays(list(collectors._BRANCHES))
    edge = _time_edge_events()
    calls: list[int] = []
    numpy_crossings = collectors._crossings_numpy

    def spy(events: ak.Array, allowed_distance: int) -> collectors.Crossings:
        calls.append(1)
        return numpy_crossings(events, allowed_distance)

    monkeypatch.setattr(collectors, "_crossings_numpy", spy)
    cuts_sample = ((8, 14, 4, 4.0), (1, 20, 8, 2.0), (3, 1, 1, 0.0), (8, 28, 30, 2.0))
    cuts_edge = ((8, 1, 1, 0.0), (8, 2, 1, 4.0), (1, 3, 2, 0.0), (8, 1, 3, 1e9), (2, 0, 9, 0.0))
    for events, cuts in ((ev, cuts_sample), (ev[len(ev) // 3 : len(ev) // 2], cuts_sample),
                         (edge, cuts_edge), (edge[3:], cuts_edge)):  # fmt: skip
        for cut in cuts:
            calls.clear()
            got = collectors.efficiency_counts(events, *cut)
            assert not calls  # the compiled pass
            want = collectors.efficiency_counts(events, *cut, compiled_kernel=False)
            for a, b in zip(got, want, strict=True):
                assert a.dtype == b.dtype
                assert a.tobytes() == b.tobytes(), cut
    assert collectors.efficiency_counts(edge, 8, 1, 1, 0.0)[0].sum() > 0
    assert collectors.efficiency_counts(ev, 8, 14, 4, 4.0)[1].sum() > 1000
    # a strip outside its plane: the numpy path, through both
    odd = ak.with_field(edge, edge["KLMDigits_m_strip"] * 0, "KLMDigits_m_strip")
    calls.clear()
    got = collectors.efficiency_counts(odd, 8, 1, 1, 0.0)
    assert len(calls) == 1
    want = collectors.efficiency_counts(odd, 8, 1, 1, 0.0, compiled_kernel=False)
    assert got[0].tobytes() == want[0].tobytes()
    assert got[1].tobytes() == want[1].tobytes()
