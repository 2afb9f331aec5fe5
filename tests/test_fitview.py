"""The drill-down of a payload channel (b2calib.calibration.fitview) on calibrations run on the
committed sample bucket: the histogram, the model the algorithm fitted, the pulls, the status
and its message, and the errors naming what is missing."""

from __future__ import annotations

import numpy as np
import pytest

from b2calib.calibration.fitview import FitViewError, fit_view, payload_channels
from b2calib.conditions import ChannelStatus, ConditionsDB
from tests.closure import calibrate
from tests.conftest import SAMPLE

TAG = "staging"
LOW_TIME = {"ecl-time": {"crate_min_entries": 5}}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> ConditionsDB:
    """ecl-time and the dE/dx run gain and cosine correction on the sample bucket."""
    path = tmp_path_factory.mktemp("fitview") / "c.sqlite"
    reports, out = calibrate("ecl-time", SAMPLE, path, config=LOW_TIME)
    assert reports["ecl-time"].status == "OK"
    reports, _ = calibrate("cdc-dedx-cosine", SAMPLE, path, with_dependencies=True)
    assert reports["cdc-dedx-cosine"].status == "OK"
    return out


def _payload(db: ConditionsDB, name: str):  # type: ignore[no-untyped-def]
    entry = db.iovs(TAG, name)[0]
    return db.payload(name, entry.payload.revision)


def test_ecl_time_crate_fits(db: ConditionsDB) -> None:
    """OK crates (the sample's crystals are too few to fit alone): the Gaussian's expected counts
    add up to the histogram within statistics, the message says where the offset comes from."""
    payload = _payload(db, "ECLCrateTimeOffset")
    ok = np.flatnonzero(payload.status == ChannelStatus.OK)
    assert ok.size > 20
    cells = payload_channels(payload)[ok]
    checked = 0
    for cell in cells.tolist():
        v = fit_view(db, TAG, "ECLCrateTimeOffset", cell)
        assert v.kind == "fit"
        assert v.status == "OK"
        assert v.calibration == "ecl-time"
        assert v.message.startswith("fit OK:")
        assert "crate" in v.message
        n, mu, sigma = (v.parameters[p][0] for p in ("n", "mu", "sigma"))
        assert np.isfinite([n, mu, sigma]).all()
        assert sigma > 0
        # the model drawn is in counts per bin: its integral over x, divided by the bin width,
        # is the Gaussian's yield in the range; the yield matches the entries within statistics
        width = float(np.diff(v.edges)[0])
        drawn = np.trapezoid(v.model["total"], v.model_x) / width
        assert drawn == pytest.approx(n, rel=0.02)
        assert abs(n - v.entries) < 4 * np.sqrt(v.entries) + 1
        assert len(v.pulls) == len(v.counts)
        # pulls in the fit range where there are entries (the sample is too small for their
        # distribution: a few entries per bin)
        assert np.isfinite(v.pulls[v.counts > 0]).all()
        checked += 1
    assert checked == len(cells)


def test_ecl_time_not_enough_data_says_why(db: ConditionsDB) -> None:
    payload = _payload(db, "ECLCrystalTimeOffset")
    ids = payload_channels(payload)
    starved = np.flatnonzero(
        (payload.status == ChannelStatus.NOT_ENOUGH_DATA) & ~np.isfinite(payload.value())
    )
    assert starved.size
    v = fit_view(db, TAG, "ECLCrystalTimeOffset", int(ids[starved[0]]))
    assert v.status == "NOT_ENOUGH_DATA"
    assert f"NOT_ENOUGH_DATA: {v.entries:.0f} entries < 20 required" in v.message
    assert v.entries < 20
    assert v.model == {}
    assert np.isnan(v.pulls).all()
    assert "no value" in v.message


def test_run_gain_fit_gives_the_payload_value(db: ConditionsDB) -> None:
    """CDCDedxRunGain: gain = fitted mu / K, and the fit range found from the table's entries
    holds exactly those entries."""
    entries = db.iovs(TAG, "CDCDedxRunGain")
    assert entries
    for e in entries:
        payload = db.payload("CDCDedxRunGain", e.payload.revision)
        v = fit_view(db, TAG, "CDCDedxRunGain", 0, iov=str(e.iov))
        assert v.kind == "fit"
        assert v.fit_range is not None
        k = float(payload.metadata["provenance"]["K"])
        assert v.value[0] == pytest.approx(v.parameters["mu"][0] / k, rel=1e-9)
        lo, hi = v.fit_range
        inside = (v.edges[:-1] >= lo - 1e-12) & (v.edges[1:] <= hi + 1e-12)
        assert v.counts[inside].sum() == pytest.approx(v.entries)
        assert np.isfinite(v.pulls[inside]).any()
        assert np.isnan(v.pulls[~inside]).all()


def test_cosine_view_says_the_value_is_not_the_fit(db: ConditionsDB) -> None:
    payload = _payload(db, "CDCDedxCosineCor")
    ok = np.flatnonzero(payload.status == ChannelStatus.OK)
    v = fit_view(db, TAG, "CDCDedxCosineCor", int(payload_channels(payload)[ok[0]]))
    assert "mean hit dE/dx" in v.message
    assert "not the value" in v.message
    assert v.value[0] == pytest.approx(float(payload.value("value")[ok[0]]))


def test_errors_name_what_is_missing(db: ConditionsDB) -> None:
    with pytest.raises(FitViewError, match=r"ECLCrystalTimeOffset.*no channel 99999"):
        fit_view(db, TAG, "ECLCrystalTimeOffset", 99999)
    with pytest.raises(FitViewError, match=r"tag staging holds no payload 'NoSuchPayload'"):
        fit_view(db, TAG, "NoSuchPayload", 1)
    with pytest.raises(FitViewError, match=r"has no IoV 12,99,12,99"):
        fit_view(db, TAG, "ECLCrystalTimeOffset", 1, iov="12,99,12,99")
