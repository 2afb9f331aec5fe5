"""The drill-down of a payload channel (b2calib.calibration.fitview) on calibrations run on
small samples: the committed sample bucket (ecl-time, cdc-t0, the dE/dx run gain and cosine
correction) and two simulated here (TOP alone: 10k mu-mu events; ECL alone: 100k events, 45 %
gamma-gamma and 45 % mu-mu). Checked: the model redrawn from the stored parameters is the one
the algorithm fitted (an extended fit's expected counts add up to its entries), the pulls of
well-filled bins are standard normal, the fitted parameter gives the payload value, a channel
without enough data says why, a counting decision gives its numbers, bad input names what is
missing."""

from __future__ import annotations

import numpy as np
import pytest

from b2calib.calibration import Diagnostics, JobStore, run_calibrations
from b2calib.calibration.fitview import FitView, FitViewError, fit_view, payload_channels
from b2calib.conditions import ChannelStatus, ConditionsDB, Payload
from b2calib.conditions.iov import IoV
from b2calib.detectors.ecl.peaks import GG_FIT_RANGE
from b2calib.geometry import cdc, top
from b2calib.sim import SimConfig, simulate
from tests.closure import calibrate
from tests.conftest import SAMPLE

TAG = "staging"
LOW_TIME = {"ecl-time": {"crate_min_entries": 5}}
NONE = {"bhabha": 0.0, "gamma_gamma": 0.0, "mumu": 0.0, "hadron": 0.0, "tautau": 0.0}


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> ConditionsDB:
    """ecl-time and the dE/dx run gain and cosine correction on the sample bucket."""
    path = tmp_path_factory.mktemp("fitview") / "c.sqlite"
    reports, out = calibrate("ecl-time", SAMPLE, path, config=LOW_TIME)
    assert reports["ecl-time"].status == "OK"
    reports, _ = calibrate("cdc-dedx-cosine", SAMPLE, path, with_dependencies=True)
    assert reports["cdc-dedx-cosine"].status == "OK"
    return out


@pytest.fixture(scope="module")
def cdc_db(tmp_path_factory: pytest.TempPathFactory) -> ConditionsDB:
    """cdc-t0 on the sample bucket, the x-t relation from the sample's truth (as the input tag
    of prompt processing holds an earlier bucket's)."""
    db = ConditionsDB(tmp_path_factory.mktemp("fitview-cdc") / "c.sqlite", author="test")
    db.import_local(SAMPLE / "truth", "truth")
    reports = run_calibrations(
        "cdc-t0", SAMPLE, db=db, staging_tag=TAG, input_tags=["truth"], cache=False
    )
    assert reports["cdc-t0"].status == "OK"
    return db


@pytest.fixture(scope="module")
def top_db(tmp_path_factory: pytest.TempPathFactory) -> ConditionsDB:
    """TOP masks, channel, module and common T0 on two simulated runs of 5k mu-mu events
    (channel T0 from 30 photons, one payload over both runs)."""
    out = tmp_path_factory.mktemp("fitview-top")
    cfg = SimConfig(
        exp=12,
        seed=5,
        processes=["mumu"],
        process_fractions=NONE | {"mumu": 1.0},
        skims=["hlt_mumu_2trk"],
        detectors=["TOP"],
        run_types={"physics": 1.0},
        continuum_fraction=0.0,
        n_runs=2,
        events_per_run=5_000,
    )
    simulate(cfg, out / "data", jobs=2)
    names = ["top-channel-mask", "top-channel-t0", "top-module-t0", "top-common-t0"]
    # one channel-T0 payload over both runs: their histograms summed aligned on their phase
    config = {"top-channel-t0": {"min_entries": 30, "find_boundaries": False}}
    reports, db = calibrate(names, out / "data", out / "c.sqlite", config=config)
    assert {k: r.status for k, r in reports.items()} == dict.fromkeys(names, "OK")
    return db


@pytest.fixture(scope="module")
def ecl_db(tmp_path_factory: pytest.TempPathFactory) -> ConditionsDB:
    """ecl-energy on one simulated run of 100k events rich in photons and muons, the peak
    methods' threshold lowered to 20 entries (a few crystals reach it)."""
    out = tmp_path_factory.mktemp("fitview-ecl")
    cfg = SimConfig(
        processes=["bhabha", "gamma_gamma", "mumu"],
        process_fractions=NONE | {"bhabha": 0.1, "gamma_gamma": 0.45, "mumu": 0.45},
        skims=["hlt_bhabha", "hlt_gamma_gamma", "hlt_mumu_2trk"],
        detectors=["ECL"],
        run_types={"physics": 1.0, "cosmic": 0.0, "beam": 0.0, "debug": 0.0},
        continuum_fraction=0.0,
        n_runs=1,
        events_per_run=100_000.0,
        seed=12,
    )
    simulate(cfg, out / "data", jobs=2)
    config = {"ecl-energy": {"gg_min_entries": 20, "mumu_min_entries": 20, "tolerance": 1e6}}
    reports, db = calibrate("ecl-energy", out / "data", out / "c.sqlite", config=config)
    assert reports["ecl-energy"].status == "OK"
    return db


def _payload(db: ConditionsDB, name: str) -> Payload:
    entry = db.iovs(TAG, name)[0]
    return db.payload(name, entry.payload.revision)


def _rows(payload: Payload, status: ChannelStatus) -> np.ndarray:
    assert payload.status is not None
    return np.flatnonzero(payload.status == status)


def _stored_fits(db: ConditionsDB, name: str, table: str) -> dict[str, np.ndarray]:
    """The fit table of the execution that produced the first IoV of ``name`` in the tag."""
    store = JobStore(db)
    revision = db.iovs(TAG, name)[0].payload.revision
    for job in store.jobs():
        if [name, revision] in [s[:2] for s in job.summary.get("staged", [])]:
            step = next(e["step"] for e in job.summary["executions"] if name in e["payloads"])
            record = next(s for s in store.steps(job) if s.id == step)
            data = store.diagnostics(record)
            assert data is not None
            return Diagnostics.from_bytes(data).tables[table]
    raise AssertionError(f"no job staged {name}")


def _nll(v: FitView) -> float:
    """The fit's Poisson negative log-likelihood (as the batched fits compute it) of the
    histogram shown and the model redrawn."""
    inside = np.isfinite(v.expected)
    lam = np.maximum(v.expected[inside], 1e-12)
    return float(np.sum(lam - v.counts[inside] * np.log(lam)))


def _assert_model_is_the_fit(v: FitView) -> None:
    """An extended fit with a free yield has expected counts adding up to its entries: the
    model redrawn from the stored parameters (shape, normalisation, fit range) is the fitted
    one. The model drawn is in counts per bin."""
    assert v.kind == "fit"
    assert v.fit_range is not None
    assert np.nansum(v.expected) == pytest.approx(v.entries, rel=1e-6)
    inside = np.isfinite(v.expected)
    assert np.isnan(v.pulls[~inside]).all()
    assert np.isfinite(v.pulls[inside & (v.counts > 0)]).all()
    assert set(v.model) >= {"total"}
    assert np.allclose(sum(m for k, m in v.model.items() if k != "total"), v.model["total"])


# ------------------------------------------------------------------------- fitted views
def test_ecl_time_crate_fits(sample_db: ConditionsDB) -> None:
    """OK crates (the sample's crystals are too few to fit alone): the histogram shown and the
    Gaussian redrawn give the likelihood the fit reached, the payload value is the offset
    applied plus the fitted mean, the message says where the crate offset comes from."""
    payload = _payload(sample_db, "ECLCrateTimeOffset")
    ok = _rows(payload, ChannelStatus.OK)
    assert ok.size > 20
    stored = _stored_fits(sample_db, "ECLCrateTimeOffset", "crate_fits")
    for crate in payload_channels(payload)[ok].tolist():
        v = fit_view(sample_db, TAG, "ECLCrateTimeOffset", crate)
        assert v.status == "OK"
        assert v.calibration == "ecl-time"
        assert v.message.startswith("fit OK:")
        assert "crate" in v.message
        _assert_model_is_the_fit(v)
        i = int(np.flatnonzero(stored["channel"] == crate)[0])
        assert _nll(v) == pytest.approx(float(stored["nll"][i]), abs=1e-3)
        n, sigma = v.parameters["n"][0], v.parameters["sigma"][0]
        assert sigma > 0
        # no crystal of the sample's crates is measured: every OK crate is a crate-level
        # constant, the offset applied (the previous iteration's) plus the fitted mean
        assert "crate-level constant" in v.message
        applied, mu = v.parameters["applied"][0], v.parameters["mu"][0]
        assert v.parameters["total"][0] == pytest.approx(applied + mu, abs=1e-12)
        assert v.value[0] == pytest.approx(applied + mu, abs=1e-9)
        width = float(np.diff(v.edges)[0])
        assert np.trapezoid(v.model["signal"], v.model_x) / width == pytest.approx(n, rel=0.02)


def test_ecl_time_not_enough_data_says_why(sample_db: ConditionsDB) -> None:
    payload = _payload(sample_db, "ECLCrystalTimeOffset")
    starved = _rows(payload, ChannelStatus.NOT_ENOUGH_DATA)
    starved = starved[~np.isfinite(payload.value()[starved])]
    assert starved.size
    v = fit_view(sample_db, TAG, "ECLCrystalTimeOffset", int(payload_channels(payload)[starved[0]]))
    assert v.status == "NOT_ENOUGH_DATA"
    assert v.message.startswith(f"NOT_ENOUGH_DATA: {v.entries:.0f} entries < 20 required")
    assert v.entries < 20
    assert v.model == {}
    assert np.isnan(v.pulls).all()
    assert "no value" in v.message


def test_cdc_t0_board_fit_pulls_are_standard_normal(cdc_db: ConditionsDB) -> None:
    """A wire is shown with its board's residuals and fit (the wire histograms are not kept);
    on the sample every wire has too few hits and takes its board's T0 (a fallback, said so).
    Over one wire of every board, the pulls of bins expecting >= 10 entries are standard
    normal (the bins' own errors: a bias of -0.1 at 10 entries)."""
    payload = _payload(cdc_db, "CDCTimeZeros")
    ids = payload_channels(payload)
    first = np.unique(cdc.board_of(ids), return_index=True)[1]
    pulls: list[float] = []
    for wire in ids[first].tolist():
        v = fit_view(cdc_db, TAG, "CDCTimeZeros", wire)
        assert v.status == "fallback"
        assert v.message.startswith("fallback: wire fit NOT_ENOUGH_DATA")
        assert f"value is the board {int(cdc.board_of(np.array([wire]))[0])} T0" in v.message
        assert "shown: the residuals of board" in v.message
        _assert_model_is_the_fit(v)
        pulls.extend(v.pulls[v.expected >= 10].tolist())
    p = np.asarray(pulls)
    assert p.size > 1000
    assert abs(p.mean()) < 0.2
    assert 0.85 < p.std() < 1.2


def test_run_gain_fit_gives_the_payload_value(sample_db: ConditionsDB) -> None:
    """CDCDedxRunGain: gain = fitted mu / K; the fit range (a window of a first fit, not
    stored) is found from the table's entries and holds exactly them."""
    entries = sample_db.iovs(TAG, "CDCDedxRunGain")
    assert entries
    for e in entries:
        payload = sample_db.payload("CDCDedxRunGain", e.payload.revision)
        v = fit_view(sample_db, TAG, "CDCDedxRunGain", 0, iov=str(e.iov))
        _assert_model_is_the_fit(v)
        k = float(payload.metadata["provenance"]["K"])
        assert v.value[0] == pytest.approx(v.parameters["mu"][0] / k, rel=1e-9)


def test_cosine_view_says_the_value_is_not_the_fit(sample_db: ConditionsDB) -> None:
    payload = _payload(sample_db, "CDCDedxCosineCor")
    ok = _rows(payload, ChannelStatus.OK)
    v = fit_view(sample_db, TAG, "CDCDedxCosineCor", int(payload_channels(payload)[ok[0]]))
    assert "mean hit dE/dx" in v.message
    assert "not the value" in v.message
    assert v.value[0] == pytest.approx(float(payload.value("value")[ok[0]]))


def test_top_channel_t0_template_fits_give_the_payload(top_db: ConditionsDB) -> None:
    """The photon-PDF template redrawn per channel is the fitted one; the payload value of a
    channel is its fitted mu minus the mean mu of its module's calibrated channels."""
    payload = _payload(top_db, "TOPCalChannelT0")
    ids = payload_channels(payload)
    for module in (3,):
        rows = np.flatnonzero((payload.status == ChannelStatus.OK) & (ids // 1000 == module))
        assert rows.size > 400
        views = [fit_view(top_db, TAG, "TOPCalChannelT0", int(ids[r])) for r in rows]
        for v in views[::50]:
            _assert_model_is_the_fit(v)
            assert set(v.model) == {"total", "signal", "background"}
            assert "sum of 2 runs aligned on their common phase, as fitted" in v.message
        # the histogram shown (the runs' aligned sum) and the template redrawn give the
        # likelihood the fit reached (iminuit fallbacks keep another constant: most, not all)
        nll = _stored_fits(top_db, "TOPCalChannelT0", "channel_fits")["nll"]
        index = (ids[rows] // 1000 - 1) * 512 + ids[rows] % 1000 - 1
        same = [abs(_nll(v) - nll[i]) < 1e-3 for v, i in zip(views, index, strict=True)]
        assert np.mean(same) > 0.95
        mu = np.array([v.parameters["mu"][0] for v in views])
        value = np.array([v.value[0] for v in views])
        np.testing.assert_allclose(value, mu - mu.mean(), atol=1e-9)
        # the view gives the module's zero it subtracted
        zero = np.array([v.parameters["module mean"][0] for v in views])
        np.testing.assert_allclose(zero, mu.mean(), atol=1e-9)
        assert views[0].message.startswith("fit OK:")
        assert "the module's mean mu" in views[0].message
    dead = _rows(payload, ChannelStatus.DEAD)
    assert dead.size
    v = fit_view(top_db, TAG, "TOPCalChannelT0", int(ids[dead[0]]))
    assert v.message.startswith("DEAD: fit NOT_ENOUGH_DATA")
    assert "masked DEAD by the channel mask" in v.message


def test_top_module_t0_shows_its_best_pair(top_db: ConditionsDB) -> None:
    pulls: list[float] = []
    for module in range(1, 17):
        v = fit_view(top_db, TAG, "TOPCalModuleT0", module)
        _assert_model_is_the_fit(v)
        assert set(v.model) == {"total", "signal", "background"}
        assert f"slot-pair differences of module {module}" in v.message
        shown = v.message.split("shown: pair ")[1].split(",")[0]
        assert str(module) in shown.split("-")
        pulls.extend(v.pulls[v.expected >= 25].tolist())
    p = np.asarray(pulls)
    assert p.size > 50
    assert abs(p.mean()) < 0.3
    assert 0.7 < p.std() < 1.4


def test_top_common_t0_redraws_the_stored_template(top_db: ConditionsDB) -> None:
    """The run's folded photon times over the fit's window (found again from the stored
    histogram) with the template stored with the fit: the fitted one; the payload value is the
    fitted mu placed modulo the RF period."""
    entries = top_db.iovs(TAG, "TOPCalCommonT0")
    assert len(entries) == 2  # one per run
    for entry in entries:
        v = fit_view(top_db, TAG, "TOPCalCommonT0", 0, iov=str(entry.iov))
        _assert_model_is_the_fit(v)
        assert set(v.model) == {"total", "signal", "background"}
        assert v.edges[-1] - v.edges[0] == pytest.approx(top.RF_PERIOD_NS)
        turns = (v.value[0] - v.parameters["mu"][0]) / top.RF_PERIOD_NS
        assert turns == pytest.approx(round(turns), abs=1e-9)
        assert "placed by continuity" in v.message


def test_ecl_peak_views_redraw_the_novosibirsk_fits(ecl_db: ConditionsDB) -> None:
    """Gamma-gamma and mu-mu crystals: the Novosibirsk + constant redrawn (normalised over the
    fit-range bins as the fit does) is the fitted one."""
    for name, fit_range in (
        ("ECLCrystalEnergyGammaGamma", GG_FIT_RANGE),
        ("ECLCrystalEnergyMuMu", None),
    ):
        payload = _payload(ecl_db, name)
        ids = payload_channels(payload)
        ok = _rows(payload, ChannelStatus.OK)
        assert ok.size
        for r in ok[:10]:
            v = fit_view(ecl_db, TAG, name, int(ids[r]))
            _assert_model_is_the_fit(v)
            assert set(v.model) == {"total", "signal", "background"}
            assert "theta ring" in v.message
            assert v.parameters["peak"][1] > 0
            if fit_range is not None:
                assert v.fit_range == pytest.approx(fit_range, abs=1e-9)
        starved = _rows(payload, ChannelStatus.NOT_ENOUGH_DATA)
        v = fit_view(ecl_db, TAG, name, int(ids[starved[0]]))
        assert "required" in v.message or "theta ring" in v.message
    v = fit_view(ecl_db, TAG, "ECLCrystalEnergy5x5", 1000)
    assert v.kind == "none"
    assert "linear system" in v.message


# ----------------------------------------------------------------------- counting views
def test_top_mask_counting_view_gives_the_rule(top_db: ConditionsDB) -> None:
    payload = _payload(top_db, "TOPCalChannelMask")
    ids = payload_channels(payload)
    for status, word in ((ChannelStatus.DEAD, "<= mean / 5"), (ChannelStatus.HOT, "> max(2 mean")):
        rows = _rows(payload, status)
        assert rows.size
        v = fit_view(top_db, TAG, "TOPCalChannelMask", int(ids[rows[0]]))
        assert v.kind == "counting"
        assert v.status == status.name
        assert v.message.startswith(f"{status.name}: no per-channel fit: this calibration counts")
        assert word in v.message
        assert v.model == {}
        # the channel's own hits, in the middle of its neighbours'
        hits = float(v.message.split("counts hits; ")[1].split(" hits")[0])
        assert hits in v.counts.tolist()


# -------------------------------------------------------------------------------- errors
def test_errors_name_what_is_missing(sample_db: ConditionsDB) -> None:
    with pytest.raises(FitViewError, match=r"ECLCrystalTimeOffset.*no channel 99999"):
        fit_view(sample_db, TAG, "ECLCrystalTimeOffset", 99999)
    with pytest.raises(FitViewError, match=r"tag staging holds no payload 'NoSuchPayload'"):
        fit_view(sample_db, TAG, "NoSuchPayload", 1)
    with pytest.raises(FitViewError, match=r"has no IoV 12,99,12,99"):
        fit_view(sample_db, TAG, "ECLCrystalTimeOffset", 1, iov="12,99,12,99")
    # a payload uploaded by hand, not by a calibration job: no diagnostics
    edited = _payload(sample_db, "ECLCrystalTimeOffset")
    edited.values["value"] = np.nan_to_num(edited.values["value"]) + 0.5
    sample_db.create_tag("manual")
    sample_db.upload_and_add("manual", [(edited, IoV.parse("12,1,12,1"))])
    with pytest.raises(FitViewError, match=r"rev \d+ \[12,1,12,1\] in tag manual was not staged"):
        fit_view(sample_db, "manual", "ECLCrystalTimeOffset", 1)
