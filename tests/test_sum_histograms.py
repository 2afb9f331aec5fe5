"""``RunOutput.merged`` sums histograms with growing category axes (the atoms of the
time-dependent calibrations) in one allocation: the same histogram, bit for bit, as
boost-histogram's ``h0 + h1 + ...``."""

from __future__ import annotations

import hist
import numpy as np
import pytest

from b2calib.engine.collector import RunOutput, sum_histograms


def _chain(hists: list[hist.Hist]) -> hist.Hist:
    """The reference: boost-histogram's ``+``, as ``RunOutput.merged`` summed before."""
    total = hists[0].copy()
    for h in hists[1:]:
        total = total + h
    return total


def _runs(storage: type, n_runs: int = 5, seed: int = 2) -> list[hist.Hist]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_runs):
        h = hist.Hist(
            hist.axis.IntCategory([], growth=True, name="atom", label="atom"),
            hist.axis.Regular(4, 0.0, 1.0, name="x"),
            hist.axis.StrCategory([], growth=True, name="s"),
            storage=storage(),
            name="moments",
        )
        n = 60
        weight = {} if storage is hist.storage.Int64 else {"weight": rng.normal(size=n)}
        # each run its own atoms, overlapping the previous run's (categories in any order),
        # values in the flow bins too
        h.fill(
            rng.integers(0, 9, n) + 3 * k,
            rng.random(n) * 1.4 - 0.2,
            rng.choice(["a", "b", "c"], n),
            **weight,
        )
        out.append(h)
    return out


def _same(a: hist.Hist, b: hist.Hist) -> None:
    assert a == b  # axes (categories in order, metadata) and contents
    assert a.__dict__ == b.__dict__
    assert [x.__dict__ for x in a.axes] == [x.__dict__ for x in b.axes]
    va, vb = np.asarray(a.view(flow=True)), np.asarray(b.view(flow=True))
    assert va.dtype == vb.dtype
    assert va.tobytes() == vb.tobytes()


@pytest.mark.parametrize("storage", [hist.storage.Double, hist.storage.Weight, hist.storage.Int64])
def test_sum_of_growing_categories_is_boost_sum(storage: type) -> None:
    hists = _runs(storage)
    assert len({tuple(h.axes["atom"]) for h in hists}) == len(hists)  # the fast path is taken
    _same(sum_histograms(hists), _chain(hists))
    # the inputs are untouched
    _same(hists[0], _runs(storage)[0])


def test_merged_is_boost_sum() -> None:
    out = RunOutput()
    hists = _runs(hist.storage.Weight, n_runs=4)
    fixed = [hist.Hist(hist.axis.Regular(3, 0.0, 1.0)) for _ in hists]
    for i, (h, f) in enumerate(zip(hists, fixed, strict=True)):
        f.fill([0.1 * i, 0.5])
        out.add((1, i + 1), {"m": h, "f": f})
    merged = out.merged()
    _same(merged["m"], _chain(hists))
    _same(merged["f"], _chain(fixed))
    _same(out.merged([(1, 2), (1, 4)])["m"], _chain([hists[1], hists[3]]))
    one = out.merged([(1, 3)])["m"]
    _same(one, hists[2])
    assert one is not hists[2]


def test_other_storages_fall_back_to_boost() -> None:
    rng = np.random.default_rng(4)
    hists = []
    for k in range(3):
        h = hist.Hist(hist.axis.IntCategory([], growth=True), storage=hist.storage.Mean())
        h.fill(rng.integers(0, 4, 20) + k, sample=rng.normal(size=20))
        hists.append(h)
    _same(sum_histograms(hists), _chain(hists))
