"""What worker processes send back: integer arrays narrowed on the way, values unchanged."""

from __future__ import annotations

import pickle

import hist
import numpy as np

from b2calib.engine._transfer import NARROW_MIN, Wire, dumps_narrow


def _hists() -> dict[str, hist.Hist]:
    rng = np.random.default_rng(7)
    counts = hist.Hist(
        hist.axis.Regular(300, 0.5, 300.5, name="channel", label="cell"),
        hist.axis.Regular(40, 0.0, 6.0, name="value"),
        storage=hist.storage.Int64(),
        name="counts",
        label="digits",
        metadata={"unit": "GeV"},
    )
    counts.fill(rng.integers(-5, 310, 50_000), rng.normal(3.0, 2.0, 50_000))
    counts.view(flow=True)[0, 0] = 40_000  # wider than 8 bits
    sums = hist.Hist(hist.axis.Variable([0.0, 0.1, 0.5, 2.0]), storage=hist.storage.Double())
    sums.fill(rng.random(1000), weight=rng.random(1000) * np.pi)
    weights = hist.Hist(hist.axis.Integer(0, 5000), storage=hist.storage.Weight())
    weights.fill(rng.integers(0, 5000, 20_000), weight=rng.random(20_000))
    means = hist.Hist(hist.axis.Regular(3, 0, 1), storage=hist.storage.Mean())
    means.fill([0.1, 0.5, 0.9], sample=[1.0, 2.0, 3.0])
    return {"counts": counts, "sums": sums, "weights": weights, "means": means}


def test_round_trip_is_exact() -> None:
    hists = _hists()
    events = {
        "uint32": np.arange(10_000, dtype=np.uint32) * 3,
        "int64 with negatives": np.arange(-6000, 6000, dtype=np.int64),
        "int64 wide": np.array([0, 2**40] * NARROW_MIN, dtype=np.int64),
        "short": np.arange(10, dtype=np.int64),
        "float": np.linspace(0, 1, 10_000),
    }
    sent = Wire((hists, events))
    got_hists, got_events = pickle.loads(pickle.dumps(sent)).payload
    for name, h in hists.items():
        g = got_hists[name]
        assert type(g) is type(h)
        assert g == h, name  # axes, storage, contents
        assert g.storage_type == h.storage_type
        assert np.array_equal(g.view(flow=True), h.view(flow=True)), name
        assert g.__dict__ == h.__dict__, name  # name, label, metadata
        assert [a.label for a in g.axes] == [a.label for a in h.axes]
    g = got_hists["counts"]
    g.fill([1.0], [1.0])  # the rebuilt histogram is an ordinary one
    assert g.view(flow=True).dtype == np.int64
    for name, a in events.items():
        assert got_events[name].dtype == a.dtype, name
        assert np.array_equal(got_events[name], a), name
    assert Wire(5).payload == 5  # in the same process: nothing happens


def test_narrow_bytes() -> None:
    """The 8-byte counts of a histogram whose bins hold < 65536 travel in 2 bytes."""
    h = _hists()["counts"]
    plain = pickle.dumps(h, protocol=pickle.HIGHEST_PROTOCOL)
    narrow = dumps_narrow(h)
    assert len(narrow) < 0.3 * len(plain)
    assert pickle.loads(narrow) == h
