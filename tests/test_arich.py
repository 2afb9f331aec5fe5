"""ARICH channel mask: closure on the simulator, the algorithm's rules on arrays, bad input, CLI
and notebook.

The closure needs statistics a full simulation cannot give in a test's time: the basf2 rule
(signal below 0.3 x the ring average) keeps every live channel only when the weakest ring has
~130 signal hits per channel (its noise windows then hold ~60 hits: a live channel sits > 5
standard deviations above the cut), i.e. ~1.6 M collision events, ~5 CPU-minutes of `simulate`.
:func:`_high_statistics` therefore runs the simulator's own generator, tracking and ARICH
response (:func:`b2calib.sim.detector.arich_response`, with the run's true masks and hot rates)
on 100 000 collision events and draws the ARICH response of those tracks 24 times with
independent random streams (photons, their channels and time windows, hot-channel and beam
noise all drawn again; the tracks are shared), skipping the ECL, the trigger and the files; the
digits go through the calibration's collector and algorithm. The file-based chain (runner, CLI,
staging) runs on the sample bucket and on a sample without the ARICH.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import awkward as ak
import hist
import numpy as np
import pytest
from click.testing import CliRunner

from b2calib.calibration import AlgorithmInput, AlgorithmStatus, Constants, run_calibrations
from b2calib.cli import cli
from b2calib.conditions import ChannelStatus, ConditionsDB, LocalDatabase
from b2calib.detectors import arich as A
from b2calib.detectors.arich import channel_mask as cm
from b2calib.engine import RunOutput
from b2calib.geometry import arich as geo
from b2calib.sim import SimConfig, simulate
from b2calib.sim.conditions import conditions_for_run, truth_payloads
from b2calib.sim.detector import arich_response, reconstruct_tracks
from b2calib.sim.physics import Beam, Particles, generate
from b2calib.sim.runs import generate_runs
from tests.closure import pulls, staged
from tests.conftest import SAMPLE
from tests.test_notebooks import execute

CAL = A.calibrations()[0]
CONFIG = CAL.configure()
RING_CHANNELS = geo.RING_NMODULES * 144


def _input(windows: np.ndarray, n_events: float, **config: Any) -> AlgorithmInput:
    h = hist.Hist(
        hist.axis.Regular(geo.N_CHANNELS, -0.5, geo.N_CHANNELS - 0.5, name="channel"),
        hist.axis.Regular(4, -0.5, 3.5, name="window"),
        storage=hist.storage.Int64(),
    )
    h.view()[:] = windows
    ev = hist.Hist(hist.axis.Regular(1, 0.0, 1.0, name="events"), storage=hist.storage.Int64())
    ev.view(flow=True)[1] = n_events
    hists = {"windows": h, "events": ev}
    return AlgorithmInput(
        [(12, 1)], hists, RunOutput({(12, 1): hists}), Constants(None, []), CONFIG | config
    )


# --------------------------------------------------------------------------- the closure
def _high_statistics(cfg: SimConfig, n_events: int, passes: int) -> tuple[dict[str, Any], Any]:
    """The collector's histograms of ``passes`` ARICH responses to the tracks of ``n_events``
    collision events (Bhabha, hadron, mu-pair as 3:5:2) of ``cfg``'s first run, and the run's
    true conditions."""
    run = generate_runs(cfg)[0]
    cond = conditions_for_run(cfg, run)
    beam = Beam(cond.ecms, cond.ecms_spread)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x41524901]))
    parts, offset = [], 0
    for process, fraction in (("bhabha", 0.3), ("hadron", 0.5), ("mumu", 0.2)):
        k = int(n_events * fraction)
        p = generate(
            rng, process, k, beam, cond.beamspot_at(np.full(k, run.start)), cond.beamspot_size
        )
        p.evt = p.evt + offset
        parts.append(p)
        offset += k
    tracks, _ = reconstruct_tracks(rng, Particles.concat(parts), 1.5)
    collector = cm.ChannelMaskCollector()
    total: dict[str, Any] = {}
    for k in range(passes):
        prng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x41524902, k]))
        digits, _ = arich_response(prng, tracks, cond, offset)
        counts = np.bincount(digits["evt"], minlength=offset)
        events = ak.Array(
            {
                "EventMetaData_m_run": np.full(offset, run.run, np.int32),
                **{
                    f"ARICHDigits_{c}": ak.unflatten(digits[c], counts)
                    for c in ("m_modID", "m_channelID", "m_bitmap")
                },
            }
        )
        out = collector.collect(events)
        total = out if not total else {n: total[n] + out[n] for n in out}
    return total, cond


@pytest.fixture(scope="module")
def closure() -> tuple[Any, Any, Any]:
    cfg = SimConfig(exp=12, seed=5, n_runs=1, run_types={"physics": 1.0}, continuum_fraction=0.0)
    hists, cond = _high_statistics(cfg, 100_000, 24)
    data = AlgorithmInput(
        [(12, 1)], hists, RunOutput({(12, 1): hists}), Constants(None, []), CONFIG
    )
    result = cm.ChannelMaskAlgorithm().run(data)
    truth = next(p for p in truth_payloads(cond) if p.name == cm.CHANNEL_MASK)
    return result, cond, truth


@pytest.mark.slow
def test_channel_mask_closure(closure: tuple[Any, Any, Any]) -> None:
    result, cond, truth = closure
    assert result.status == AlgorithmStatus.OK, result.message
    (mask,) = result.payloads
    status, true_status = mask.status, truth.status
    assert status is not None
    assert true_status is not None
    dead, hot = status == ChannelStatus.DEAD, status == ChannelStatus.HOT
    true_dead, true_hot = true_status == ChannelStatus.DEAD, true_status == ChannelStatus.HOT
    # every dead and hot channel found, no live one masked
    np.testing.assert_array_equal(dead, true_dead)
    np.testing.assert_array_equal(hot, true_hot)
    assert np.all(status[true_status == ChannelStatus.OK] == ChannelStatus.OK)
    assert true_dead.sum() > 800
    assert true_hot.sum() >= 10
    # the margins: the weakest live channel and the strongest masked one against the cuts
    ch = result.diagnostics.tables["channels"]
    ratio = ch["signal"] / ch["ring_signal"]
    live = ~(true_dead | true_hot)
    rings = result.diagnostics.tables["rings"]["signal_per_channel"]
    print(f"ring signal per channel {np.round(rings, 1)}")
    print(
        f"lowest live signal / ring average {ratio[live].min():.3f} (cut 0.3), lowest live "
        f"S/N {np.nanmin(ch['s2n'][live]):.3f} (cut 0.1); highest dead ratio "
        f"{ratio[true_dead].max():.3f}, highest hot S/N {ch['s2n'][true_hot].max():.4f}"
    )
    assert ratio[live].min() > 0.4
    assert np.nanmin(ch["s2n"][live]) > 0.3
    assert rings.min() > 100
    # the hot channels' noise rate against the truth
    s = pulls(mask.value()[hot], mask.errors["value"][hot], cond.arich_hot_rate[hot])
    print("hot-rate", s)
    assert abs(s.mean) < 1.0
    assert 0.5 < s.width < 1.6
    assert s.worst < 4.0
    np.testing.assert_allclose(mask.value()[hot], cond.arich_hot_rate[hot], rtol=0.02)
    assert np.all(mask.value()[~hot] == 0)


@pytest.mark.slow
def test_channel_mask_has_the_truths_layout(closure: tuple[Any, Any, Any]) -> None:
    result, _, truth = closure
    (mask,) = result.payloads
    assert mask.name == truth.name
    assert list(mask.keys) == list(truth.keys) == ["module", "channel"]
    for k in truth.keys:
        np.testing.assert_array_equal(mask.keys[k], truth.keys[k])
        assert mask.keys[k].dtype == truth.keys[k].dtype
    assert list(mask.values) == list(truth.values) == ["value"]
    for entry in ("units", "description"):
        assert mask.metadata[entry] == truth.metadata[entry]
    assert set(np.unique(truth.status)) == {ChannelStatus.OK, ChannelStatus.DEAD, ChannelStatus.HOT}


@pytest.mark.slow
def test_simulated_bitmap_tells_photons_from_noise(closure: tuple[Any, Any, Any]) -> None:
    """Photons in windows 1-2, noise uniform: a hot channel's four windows are equal within
    their errors, a live channel's in-time windows hold its signal."""
    result, cond, _ = closure
    ch = result.diagnostics.tables["channels"]
    w = np.stack([ch[f"window{i}"] for i in range(4)], axis=1)
    hot = cond.arich_status == 2
    noise = w[hot][:, [0, 3]].sum(axis=1)
    assert np.all(np.abs(w[hot][:, 0] - w[hot][:, 3]) < 5 * np.sqrt(noise))
    live = cond.arich_status == 0
    assert w[live][:, 1:3].sum() > 3 * w[live][:, [0, 3]].sum()
    assert np.all(w[cond.arich_status == 1] == 0)  # dead: no digit at all


# ------------------------------------------------------------------------------- arrays
def test_ring_of() -> None:
    modules = [0, 1, 42, 43, 90, 91, 144, 145, 204, 205, 270, 271, 342, 343, 420, 421]
    np.testing.assert_array_equal(
        geo.ring_of(modules), [-1, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, -1]
    )
    np.testing.assert_array_equal(np.bincount(cm.CHANNEL_RING), RING_CHANNELS)


def test_collector_counts_single_bit_digits_per_window() -> None:
    events = ak.Array(
        {
            "EventMetaData_m_run": np.array([3, 3], np.int32),
            "ARICHDigits_m_modID": ak.Array([[1, 1, 2], [420, 1]]),
            "ARICHDigits_m_channelID": ak.Array([[0, 0, 5], [143, 0]]),
            "ARICHDigits_m_bitmap": ak.Array([[2, 6, 8], [1, 4]]),
        }
    )
    out = cm.ChannelMaskCollector().collect(events)
    w = out["windows"].values()
    assert w.sum() == 4  # the two-bit digit (6) is not counted
    assert w[0, 1] == 1
    assert w[0, 2] == 1
    assert w[144 + 5, 3] == 1
    assert w[geo.N_CHANNELS - 1, 0] == 1
    assert out["bitmap"].values()[6] == 1
    assert out["events"].values().sum() == 2


@pytest.mark.parametrize(
    ("module", "channel", "branch", "what"),
    [
        (
            1,
            144,
            "ARICHDigits_m_channelID",
            "digit 3 of the entries read: channel 144, a module has 0..143",
        ),
        (
            3,
            -1,
            "ARICHDigits_m_channelID",
            "digit 3 of the entries read: channel -1, a module has 0..143",
        ),
        (
            421,
            0,
            "ARICHDigits_m_modID",
            "digit 3 of the entries read: module 421, ARICH has 1..420",
        ),
        (0, 5, "ARICHDigits_m_modID", "digit 3 of the entries read: module 0, ARICH has 1..420"),
    ],
)
def test_a_digit_off_the_arich_names_its_branch(
    module: int, channel: int, branch: str, what: str
) -> None:
    """A module or channel no ARICH digit has is a value no sound file holds (a channel past
    143 used to count as the next module's): ``BadValueError`` naming the branch, digit and
    value."""
    from b2calib.exceptions import BadValueError

    events = ak.Array(
        {
            "EventMetaData_m_run": np.array([3, 3], np.int32),
            "ARICHDigits_m_modID": ak.Array([[1, 1, 2], [module, 1]]),
            "ARICHDigits_m_channelID": ak.Array([[0, 0, 5], [channel, 0]]),
            "ARICHDigits_m_bitmap": ak.Array([[2, 6, 8], [1, 4]]),
        }
    )
    with pytest.raises(BadValueError) as err:
        cm.ChannelMaskCollector().collect(events)
    assert err.value.branch == branch
    assert str(err.value) == f"branch {branch!r}: {what}"


def _synthetic(signal: float = 100.0, noise: float = 10.0) -> np.ndarray:
    """Windows of a detector where every channel has ``signal`` in-time hits and ``noise``
    per window."""
    w = np.full((geo.N_CHANNELS, 4), noise)
    w[:, 1] += signal / 2
    w[:, 2] += signal / 2
    return w


def test_mask_rules_at_their_thresholds() -> None:
    w = _synthetic()
    first = geo.RING_FIRST * 144  # the first channel of each ring
    w[first[0]] = [10, 10 + 14.5, 10 + 14.5, 10]  # signal 29 < 0.3 x ~100: dead
    w[first[1]] = [10, 10 + 15.5, 10 + 15.5, 10]  # signal 31: kept
    w[first[2]] = [0, 0, 0, 0]  # no hit at all: dead
    # S/N = S / (S + 2 n): 100 / (100 + 2n) < 0.1 for n > 450: hot (and left out)
    w[first[3]] = [460, 460 + 50, 460 + 50, 460]
    w[first[4]] = [400, 400 + 50, 400 + 50, 400]  # S/N 0.11: kept
    w[first[5]] = [50, 50, 50, 50]  # noise only, 5 x the ring's: hot
    w[first[6] + 1] = [0, 6000, 6000, 0]  # signal per event 0.024 > 0.02: left out, kept
    res = cm.mask_channels(w, 500_000.0)
    st = res.status
    assert st[first[0]] == ChannelStatus.DEAD
    assert st[first[1]] == ChannelStatus.OK
    assert st[first[2]] == ChannelStatus.DEAD
    assert st[first[3]] == ChannelStatus.HOT
    assert st[first[4]] == ChannelStatus.OK
    assert st[first[5]] == ChannelStatus.HOT
    assert st[first[6] + 1] == ChannelStatus.OK
    assert (st != ChannelStatus.OK).sum() == 4
    # the ring averages leave the hot and the anomalous channels out, keep the dead ones
    assert res.left_out.sum() == 3
    n = RING_CHANNELS
    np.testing.assert_allclose(
        res.ring_signal,
        [
            (100 * (n[0] - 1) + 29) / n[0],
            (100 * (n[1] - 1) + 31) / n[1],
            100 * (n[2] - 1) / n[2],
            100,
            100,
            100,
            100,
        ],
    )
    np.testing.assert_array_equal(res.ring_channels, n - [0, 0, 0, 1, 0, 1, 1])


def test_not_enough_data_below_30_hits_in_the_outer_ring() -> None:
    w = _synthetic(signal=28.0, noise=2.0)
    result = cm.ChannelMaskAlgorithm().run(_input(w, 1e5))
    assert result.status == AlgorithmStatus.NOT_ENOUGH_DATA
    assert "outer HAPD ring: 28.0 signal hits per channel < 30" in result.message
    assert not result.payloads
    w = _synthetic(signal=32.0, noise=2.0)
    result = cm.ChannelMaskAlgorithm().run(_input(w, 1e5))
    assert result.status == AlgorithmStatus.OK
    (mask,) = result.payloads
    assert np.all(mask.status == ChannelStatus.OK)
    # no ARICH digit at all (a sample without the ARICH): NOT_ENOUGH_DATA, never NaN
    result = cm.ChannelMaskAlgorithm().run(_input(np.zeros((geo.N_CHANNELS, 4)), 1e5))
    assert result.status == AlgorithmStatus.NOT_ENOUGH_DATA


def test_a_starved_ring_is_not_enough_data_not_masked() -> None:
    """A ring below ``min_outer_ring_hits`` signal hits per channel (here the innermost, as
    in the simulation where no Bhabha reaches rings 0-2) while the outer ring has enough:
    the payload is made, the starved ring's live and dead channels are NOT_ENOUGH_DATA (never
    masked for lack of statistics), a channel hot by its noise alone is still HOT there, and
    the other rings are masked as before."""
    rng = np.random.default_rng(15)
    n_events = 2e5
    ring = cm.CHANNEL_RING
    signal = np.where(ring == 0, 8.0, 60.0)  # ring 0 starved (< 30), the others adequate
    lam = np.empty((geo.N_CHANNELS, 4))
    lam[:] = 5.0  # noise per window
    lam[:, 1] += signal / 2
    lam[:, 2] += signal / 2
    first = geo.RING_FIRST * 144
    lam[first[0]] = 0.0  # dead in the starved ring
    lam[first[0] + 1] = 300.0  # hot in the starved ring: noise only, 60 x the ring's
    lam[first[6]] = 0.0  # dead in the outer ring
    lam[first[6] + 1] = 300.0  # hot in the outer ring
    w = rng.poisson(lam).astype(np.float64)
    inner = ring == 0
    # the fluctuations alone put live channels of the starved ring below 0.3 x its average
    ring0 = w[inner][:, 1:3].sum(axis=1) - w[inner][:, [0, 3]].sum(axis=1)
    assert (ring0 < 0.3 * 8.0).sum() > 100
    result = cm.ChannelMaskAlgorithm().run(_input(w, n_events))
    assert result.status == AlgorithmStatus.OK, result.message
    assert "1 of 7 HAPD rings below 30 signal hits per channel (ring 0)" in result.message
    (mask,) = result.payloads
    st = mask.status
    assert st is not None
    live0 = inner.copy()
    live0[[first[0], first[0] + 1]] = False
    assert np.all(st[live0] == ChannelStatus.NOT_ENOUGH_DATA)
    assert st[first[0]] == ChannelStatus.NOT_ENOUGH_DATA  # no statistics to call it dead
    assert st[first[0] + 1] == ChannelStatus.HOT  # its noise is seen without the signal
    assert st[first[6]] == ChannelStatus.DEAD
    assert st[first[6] + 1] == ChannelStatus.HOT
    assert np.all(st[~inner & ~np.isin(np.arange(geo.N_CHANNELS), first[6] + [0, 1])] == 0)
    rings = result.diagnostics.tables["rings"]
    np.testing.assert_array_equal(rings["starved"], [1, 0, 0, 0, 0, 0, 0])
    assert rings["signal_per_channel"][0] < 30 < rings["signal_per_channel"][1:].min()


def test_mask_status_as_with_the_noise_test_of_every_channel() -> None:
    """The noise test is evaluated only for the channels whose status it decides (masked, or
    in a starved ring); the statuses are those of the rule applied to every channel."""
    from scipy import stats

    rng = np.random.default_rng(16)
    ring = cm.CHANNEL_RING
    lam = np.empty((geo.N_CHANNELS, 4))
    lam[:] = rng.uniform(0.5, 6.0, geo.N_CHANNELS)[:, None]
    signal = np.where(ring == 1, 10.0, 60.0)  # ring 1 starved at min_ring_signal 30
    lam[:, 1:3] += signal[:, None] / 2
    odd = rng.choice(geo.N_CHANNELS, 600, replace=False)
    lam[odd[:300], 1:3] = 0.0  # no signal: dead
    lam[odd[300:450]] = rng.uniform(10.0, 300.0, 150)[:, None]  # noise only: hot
    lam[odd[450:]] *= rng.uniform(3.0, 40.0, 150)[:, None]  # loud, with signal
    w = rng.poisson(lam).astype(np.float64)
    res = cm.mask_channels(w, 2e5, min_ring_signal=30.0)
    excess = stats.poisson.sf(res.noise - 1.0, res.ring_noise[ring]) < 1e-6
    masked = (res.signal < 0.3 * res.ring_signal[ring]) | (res.s2n < 0.1)
    expected = np.zeros(geo.N_CHANNELS, dtype=np.int8)
    expected[masked] = np.where(excess[masked], ChannelStatus.HOT, ChannelStatus.DEAD)
    starved = res.starved[ring]
    expected[starved] = np.where(
        (res.s2n < 0.1)[starved] & excess[starved],
        ChannelStatus.HOT,
        ChannelStatus.NOT_ENOUGH_DATA,
    )
    assert {ChannelStatus.HOT, ChannelStatus.DEAD, ChannelStatus.NOT_ENOUGH_DATA} <= set(
        np.unique(res.status)
    )
    assert (res.status[starved] == ChannelStatus.HOT).any()
    np.testing.assert_array_equal(res.status, expected)


def test_declaration() -> None:
    assert [c.name for c in A.calibrations()] == ["arich-channel-mask"]
    assert CAL.payloads == ("ARICHChannelMask",)
    assert CAL.stage == "raw"
    assert CAL.input_format == "raw"
    assert "hlt_bhabha" in CAL.skims
    assert CAL.run_type == "physics"
    assert CONFIG == {
        "min_fraction": 0.3,
        "min_s2n": 0.1,
        "min_outer_ring_hits": 30.0,
        "max_signal_occupancy": 0.02,
        "hot_p_value": 1e-6,
    }


# ------------------------------------------------------------------ bad input, CLI, notebook
@pytest.mark.slow
def test_sample_without_the_arich(tmp_path: Path) -> None:
    cfg = SimConfig(
        exp=12,
        seed=3,
        n_runs=2,
        events_per_run=300,
        detectors=["CDC", "ECL"],
        skims=["hlt_bhabha", "hlt_mumu_2trk", "hlt_hadron"],
        run_types={"physics": 1.0},
    )
    simulate(cfg, tmp_path / "data", jobs=1)
    db = ConditionsDB(tmp_path / "db.sqlite", author="test")
    reports = run_calibrations(CAL, tmp_path / "data", db=db, staging_tag="s", cache=False)
    report = reports[CAL.name]
    assert report.status == "NOT_ENOUGH_DATA", str(report)
    assert "nothing staged" in str(report)
    assert "no branch 'ARICHDigits_m_modID'" in str(report)  # the reason, per file


@pytest.mark.slow
def test_cli_on_the_sample_bucket(tmp_path: Path) -> None:
    db = tmp_path / "cal.sqlite"
    base = ["calibrate", "arich-channel-mask", "--data", str(SAMPLE), "--db", str(db), "--quiet"]
    # at its defaults the bucket is far too small: said so, nothing staged
    result = CliRunner().invoke(cli, [*base, "--staging", "strict"])
    assert "NOT_ENOUGH_DATA" in result.output
    assert "outer HAPD ring" in result.output
    assert "< 30" in result.output
    # forced through (no minimum), every run gets a payload that passes the staging checks
    cfg = tmp_path / "low.json"
    cfg.write_text(json.dumps({"min_outer_ring_hits": 0.0}))
    result = CliRunner().invoke(
        cli, [*base, "--staging", "low", "--config", f"arich-channel-mask={cfg}"]
    )
    assert result.exit_code == 0, result.output
    database = ConditionsDB(db)
    masks = staged(database, "low", "ARICHChannelMask")
    assert len(masks) == 11  # the physics runs; the cosmic run 6 is covered by run 5's
    truth = LocalDatabase(SAMPLE / "truth")
    for entry, mask in masks:
        true_mask = truth.lookup("ARICHChannelMask", 12, entry.iov.first_run)
        for k in true_mask.keys:
            np.testing.assert_array_equal(mask.keys[k], true_mask.keys[k])
        assert mask.status is not None
        # without signal every channel is masked, or NOT_ENOUGH_DATA in a ring whose average
        # signal fluctuates below the minimum of 0; a hot channel shows its noise even here
        # (not always HOT: with ~100 events the S/N of pure noise scatters by ~0.2 around 0)
        assert np.mean(mask.status != ChannelStatus.OK) > 0.8
        assert np.all(
            np.isin(
                mask.status,
                [
                    ChannelStatus.OK,
                    ChannelStatus.DEAD,
                    ChannelStatus.HOT,
                    ChannelStatus.NOT_ENOUGH_DATA,
                ],
            )
        )


@pytest.mark.notebooks
@pytest.mark.slow
def test_arich_notebook(sample: Path) -> None:
    numbers = execute("arich.ipynb", sample)
    assert numbers["status_at_defaults"] == "NOT_ENOUGH_DATA"
    assert float(numbers["outer_ring_signal"]) < 30  # type: ignore[arg-type]
    # forced through: the hot channels stand out (8 of 14 on the bucket: the S/N of pure
    # noise scatters by ~0.08 over its ~1300 events), nothing else is called hot, every dead
    # channel is masked, and without signal most live channels are masked too
    assert numbers["hot_true"] == 14
    assert 5 <= numbers["hot_found"] <= 14  # type: ignore[operator]
    assert numbers["hot_false"] == 0
    assert numbers["dead_missed"] == 0
    assert numbers["live_masked"] > 40_000  # type: ignore[operator]
    # forced through at a minimum of 0: every ring of the merged bucket averages a positive
    # signal, none is starved (a starved ring's channels would be NOT_ENOUGH_DATA, not masked)
    assert numbers["starved_rings"] == 0
    # photons in the in-time windows: (S + 2n) / (S + 4n) of a live channel's digits
    assert float(numbers["in_time_fraction_live"]) > 0.6  # type: ignore[arg-type]
