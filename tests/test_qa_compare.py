"""Histogram comparisons give ROOT's numbers (TH1::Chi2Test, KolmogorovTest, AndersonDarlingTest)
and turn them into statuses with per-histogram thresholds."""

from __future__ import annotations

import ctypes
from types import ModuleType
from typing import Any

import hist
import numpy as np
import pytest

from b2calib.exceptions import ConfigError
from b2calib.qa import QAStatus, Thresholds, ad_test, chi2_test, compare, kolmogorov_prob, ks_test


def _hist(rng: np.random.Generator, n: int, bins: int, weighted: bool, shift: float) -> hist.Hist:
    storage = hist.storage.Weight() if weighted else hist.storage.Int64()
    h = hist.Hist(hist.axis.Regular(bins, -3.0, 3.0), storage=storage)
    x = rng.normal(shift, 1.0, n)
    if weighted:
        h.fill(x, weight=rng.uniform(0.5, 2.0, n))
    else:
        h.fill(x)
    return h


def _to_root(root: ModuleType, h: hist.Hist, name: str) -> Any:
    """A TH1D/TH2D with the same contents (flow bins included), errors set when weighted."""
    weighted = h.storage_type is hist.storage.Weight
    edges = [ax.edges for ax in h.axes]
    if h.ndim == 1:
        r = root.TH1D(name, name, len(edges[0]) - 1, edges[0][0], edges[0][-1])
    else:
        r = root.TH2D(
            name, name, len(edges[0]) - 1, edges[0][0], edges[0][-1],
            len(edges[1]) - 1, edges[1][0], edges[1][-1],
        )  # fmt: skip
    if weighted:
        r.Sumw2()
    values, variances = h.values(flow=True), h.variances(flow=True)
    for index in np.ndindex(values.shape):
        b = r.GetBin(*index)
        r.SetBinContent(b, float(values[index]))
        if weighted:
            r.SetBinError(b, float(np.sqrt(variances[index])))
    r.ResetStats()
    return r


def _root_chi2(root: ModuleType, r1: Any, r2: Any, option: str) -> tuple[float, int, float, int]:
    chi2, ndf, igood = ctypes.c_double(0), ctypes.c_int(0), ctypes.c_int(0)
    p = r1.Chi2TestX(r2, chi2, ndf, igood, option)
    return chi2.value, ndf.value, p, igood.value


@pytest.fixture(scope="module")
def quiet_root(root: ModuleType) -> ModuleType:
    root.gErrorIgnoreLevel = root.kError  # ROOT's Info lines about low bins
    return root


@pytest.mark.root
@pytest.mark.parametrize("mode", ["UU", "UW", "WW"])
def test_chi2_equals_root(quiet_root: ModuleType, mode: str) -> None:
    """Many pairs: low counts, many empty bins (in one or both), different totals and shapes."""
    rng = np.random.default_rng({"UU": 1, "UW": 2, "WW": 3}[mode])
    compared = 0
    for i in range(40):
        bins = int(rng.integers(5, 80))
        n1 = int(rng.choice([4, 20, 150, 4000]))
        n2 = int(rng.choice([6, 50, 600, 9000]))
        h1 = _hist(rng, n1, bins, mode == "WW", rng.normal(0, 0.2))
        h2 = _hist(rng, n2, bins, mode != "UU", rng.normal(0, 0.2))
        ours = chi2_test(h1, h2, mode)
        r1, r2 = _to_root(quiet_root, h1, f"{mode}a{i}"), _to_root(quiet_root, h2, f"{mode}b{i}")
        chi2, ndf, p, igood = _root_chi2(quiet_root, r1, r2, mode)
        assert ours.ndf == ndf
        assert ours.chi2 == pytest.approx(chi2, rel=1e-12, abs=1e-12)
        assert ours.p_value == pytest.approx(p, rel=1e-9, abs=1e-15)
        assert ours.igood == igood
        compared += 1
    assert compared == 40


@pytest.mark.root
def test_chi2_options_and_2d_equal_root(quiet_root: ModuleType) -> None:
    rng = np.random.default_rng(7)
    h1 = _hist(rng, 300, 20, False, 0.0)
    h2 = _hist(rng, 900, 20, False, 0.4)  # the shift puts entries in the overflow
    r1, r2 = _to_root(quiet_root, h1, "of1"), _to_root(quiet_root, h2, "of2")
    for option in ("UU UF OF", "UU OF", "UU UF"):
        ours = chi2_test(h1, h2, option)
        chi2, ndf, p, _ = _root_chi2(quiet_root, r1, r2, option)
        assert (ours.ndf, ours.chi2, ours.p_value) == pytest.approx((ndf, chi2, p), rel=1e-12)
    a = hist.Hist(hist.axis.Regular(8, 0, 1), hist.axis.Regular(6, 0, 1))
    b = hist.Hist(hist.axis.Regular(8, 0, 1), hist.axis.Regular(6, 0, 1))
    a.fill(rng.beta(2, 3, 400), rng.beta(3, 2, 400))
    b.fill(rng.beta(2, 3, 2000), rng.beta(3, 2.2, 2000))
    ours = chi2_test(a, b)
    chi2, ndf, p, _ = _root_chi2(
        quiet_root, _to_root(quiet_root, a, "2a"), _to_root(quiet_root, b, "2b"), "UU"
    )
    assert (ours.ndf, ours.chi2, ours.p_value) == pytest.approx((ndf, chi2, p), rel=1e-12)


@pytest.mark.root
def test_ks_and_ad_equal_root(quiet_root: ModuleType) -> None:
    rng = np.random.default_rng(11)
    for i in range(40):
        bins = int(rng.integers(5, 80))
        weighted = i % 3 == 0
        h1 = _hist(rng, int(rng.choice([8, 60, 500, 5000])), bins, weighted, 0.0)
        h2 = _hist(rng, int(rng.choice([10, 80, 700, 7000])), bins, False, rng.normal(0, 0.2))
        r1, r2 = _to_root(quiet_root, h1, f"ks1_{i}"), _to_root(quiet_root, h2, f"ks2_{i}")
        for option in ("", "N", "UO"):
            ks = ks_test(h1, h2, option)
            assert ks.p_value == pytest.approx(r1.KolmogorovTest(r2, option), abs=1e-12)
            assert ks.distance == pytest.approx(r1.KolmogorovTest(r2, option + "M"), abs=1e-12)
        ad = ad_test(h1, h2)
        assert ad.statistic == pytest.approx(r1.AndersonDarlingTest(r2, "T"), rel=1e-9, abs=1e-9)
        assert ad.p_value == pytest.approx(r1.AndersonDarlingTest(r2), rel=1e-9, abs=1e-12)


@pytest.mark.root
def test_kolmogorov_prob_equals_root(root: ModuleType) -> None:
    for z in [0.0, 0.1, 0.2, 0.5, 0.754, 0.755, 1.0, 1.5, 2.5, 6.8, 6.8116, 7.0]:
        assert kolmogorov_prob(z) == pytest.approx(root.TMath.KolmogorovProb(z), abs=1e-15)


def test_identical_histograms_and_a_clear_difference() -> None:
    rng = np.random.default_rng(3)
    h = _hist(rng, 5000, 40, False, 0.0)
    same = compare(h, h)
    assert same.statistic == 0.0
    assert same.p_value == 1.0
    assert same.status is QAStatus.GOOD
    shifted = _hist(rng, 5000, 40, False, 0.3)
    for method in ("chi2", "ks", "ad"):
        c = compare(shifted, h, method=method)  # type: ignore[arg-type]
        assert c.p_value < 1e-6, c
        assert c.status is QAStatus.ERROR


def test_one_populated_bin_gives_no_verdict(quiet_root: ModuleType) -> None:
    # a histogram whose entries all fall in one bin (e.g. a fixed hit count): ROOT's chi2 has
    # ndf 0 and p-value 0 even for identical histograms; that must not read as ERROR
    h = hist.Hist(hist.axis.Regular(10, 0.0, 10.0), storage=hist.storage.Int64())
    h.fill(np.full(500, 2.5))
    r = _to_root(quiet_root, h, "one_bin")
    chi2, ndf, p, _ = _root_chi2(quiet_root, r, r, "UU")
    c = compare(h, h)
    assert (c.statistic, c.ndf, c.p_value) == (chi2, ndf, p) == (0.0, 0, 0.0)
    assert c.status is QAStatus.TOO_FEW
    assert "fewer than two populated bins" in c.message
    other = hist.Hist(hist.axis.Regular(10, 0.0, 10.0), storage=hist.storage.Int64())
    other.fill(np.full(500, 3.5))  # all in the next bin: one degree of freedom, a clear ERROR
    assert compare(other, h).ndf == 1
    assert compare(other, h).status is QAStatus.ERROR


def test_status_thresholds() -> None:
    th = Thresholds(min_entries=50, p_warning=0.1, p_error=0.01)
    assert th.status(0.5, 1000) is QAStatus.GOOD
    assert th.status(0.05, 1000) is QAStatus.WARNING
    assert th.status(0.005, 1000) is QAStatus.ERROR
    assert th.status(1e-9, 49) is QAStatus.TOO_FEW
    rng = np.random.default_rng(4)
    small = _hist(rng, 30, 10, False, 0.0)
    big = _hist(rng, 3000, 10, False, 0.0)
    few = compare(small, big, thresholds=th)
    assert few.status is QAStatus.TOO_FEW
    assert "30 entries, at least 50 needed" in few.message
    # no verdict, but the numbers are computed and shown (issue 19: they were NaN): the same
    # as the test without the minimum
    full = compare(small, big, thresholds=Thresholds(min_entries=0))
    assert (few.statistic, few.ndf, few.p_value) == (full.statistic, full.ndf, full.p_value)
    assert np.isfinite(few.p_value)
    assert np.isfinite(few.statistic)
    assert few.message.startswith(full.message)
    empty = compare(big, hist.Hist(big.axes[0], storage=hist.storage.Int64()))
    assert empty.status is QAStatus.TOO_FEW
    assert np.isnan(empty.p_value)
    assert "the reference is empty" in empty.message
    with pytest.raises(ConfigError, match="p_error <= p_warning"):
        Thresholds(p_warning=0.01, p_error=0.05)


def test_bad_input_is_named() -> None:
    a = hist.Hist(hist.axis.Regular(10, 0, 1))
    b = hist.Hist(hist.axis.Regular(12, 0, 1))
    a.fill([0.5] * 10)
    b.fill([0.5] * 10)
    with pytest.raises(ConfigError, match="binnings differ"):
        compare(a, b)
    with pytest.raises(ConfigError, match="choose one of UU, UW, WW"):
        chi2_test(a, a, "UU WW")
    with pytest.raises(ConfigError, match="unknown 'X'"):
        chi2_test(a, a, "UUX")
    with pytest.raises(ConfigError, match="only U, O and N"):
        ks_test(a, a, "Z")
    with pytest.raises(ConfigError, match="unknown comparison method"):
        compare(a, a, method="cramer", thresholds=Thresholds(min_entries=0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="one histogram is empty"):
        chi2_test(a, hist.Hist(hist.axis.Regular(10, 0, 1)))
