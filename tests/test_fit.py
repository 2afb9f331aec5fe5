"""The fit library: a certified reference fit, every model on seeded toys, statuses, and the
batched per-channel fits against per-channel iminuit."""

from __future__ import annotations

import hist
import numpy as np
import numpy.typing as npt
import pytest

from b2calib import fit
from b2calib.conditions.payload import ChannelStatus
from b2calib.fit import (
    ChannelFits,
    Shape,
    Sum,
    fit_channels,
    fit_hist,
    fit_unbinned,
    least_squares,
)

F = npt.NDArray[np.float64]

# NIST StRD nonlinear regression, Misra1a (lower difficulty): y = b1 (1 - exp(-b2 x))
MISRA_X = [
    77.6,
    114.9,
    141.1,
    190.8,
    239.9,
    289.0,
    332.8,
    378.4,
    434.8,
    477.3,
    536.8,
    593.1,
    689.1,
    760.0,
]
MISRA_Y = [
    10.07,
    14.73,
    17.94,
    23.93,
    29.61,
    35.18,
    40.02,
    44.82,
    50.76,
    55.05,
    61.01,
    66.40,
    75.47,
    81.78,
]
CERTIFIED = {"b1": (2.3894212918e02, 2.7070075241e00), "b2": (5.5015643181e-04, 7.2668688436e-06)}
CERTIFIED_SSR = 1.2455138894e-01


def misra(x: np.ndarray, b1: float, b2: float) -> np.ndarray:
    return b1 * (1 - np.exp(-b2 * x))


@pytest.mark.parametrize("start", [{"b1": 500.0, "b2": 1e-4}, {"b1": 250.0, "b2": 5e-4}])
def test_least_squares_reproduces_nist_misra1a(start: dict[str, float]) -> None:
    r = least_squares(misra, MISRA_X, MISRA_Y, start=start)
    assert r.valid, r.message
    for p, (value, error) in CERTIFIED.items():
        assert r.values[p] == pytest.approx(value, rel=2e-6)
        # Hesse's full second derivative vs NIST's linearised covariance: 0.2 % apart
        assert r.errors[p] == pytest.approx(error, rel=5e-3)
    assert r.chi2 == pytest.approx(CERTIFIED_SSR, rel=1e-7)
    assert r.ndof == 12
    assert np.isnan(r.pvalue)
    assert "errors scaled" in r.message
    with_err = least_squares(misra, MISRA_X, MISRA_Y, yerr=np.full(14, 0.1), start=start)
    assert with_err.values["b1"] == pytest.approx(CERTIFIED["b1"][0], rel=2e-6)
    assert 0 < with_err.pvalue < 1
    # with yerr = the residual standard deviation, unscaled errors equal the scaled ones
    rsd = np.sqrt(CERTIFIED_SSR / 12)
    same = least_squares(misra, MISRA_X, MISRA_Y, yerr=np.full(14, rsd), start=start)
    assert same.errors["b1"] == pytest.approx(r.errors["b1"], rel=1e-3)


def test_least_squares_status_messages() -> None:
    r = least_squares(misra, MISRA_X[:2], MISRA_Y[:2], start=[200.0, 1e-3])
    assert not r.valid
    assert r.message.startswith("not enough data")
    assert np.isnan(r.values["b1"])
    r = least_squares(misra, MISRA_X, MISRA_Y, start=[500.0, 1e-4], ncall=5)
    assert not r.valid
    assert "call limit reached" in r.message


def sample(shape: Shape, params: tuple[float, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw from a shape on its range by inverting its CDF on a fine grid."""
    assert shape.range is not None
    grid = np.linspace(*shape.range, 20001)
    cdf = np.concatenate(
        [
            [0.0],
            np.cumsum(
                0.5 * (shape.pdf(grid[1:], *params) + shape.pdf(grid[:-1], *params)) * np.diff(grid)
            ),
        ]
    )
    return np.interp(rng.random(n) * cdf[-1], cdf, grid)


CASES = [
    (fit.gauss.on(-3, 5), (1.0, 0.8)),
    (fit.double_gauss.on(-4, 6), (1.0, 0.5, 1.5, 0.6)),
    (fit.crystal_ball.on(-4, 3), (1.2, 3.0, 0.5, 0.6)),
    (fit.double_crystal_ball.on(-5, 5), (1.1, 3.0, 1.6, 4.0, 0.2, 0.8)),
    (fit.novosibirsk.on(0.5, 1.15), (1.0, 0.03, 0.3)),
    (fit.bifurcated_gauss.on(-4, 6), (1.0, 0.7, 1.4)),
    (fit.voigt.on(-4, 6), (1.0, 0.5, 0.3)),
    (fit.landau_gauss.on(0.0, 1.0), (0.2, 0.03, 0.02)),
    (fit.exponential.on(0, 4), (-0.8,)),
    (fit.polynomial(2).on(-1, 1), (0.3, 0.4)),
    (fit.chebyshev_poly(2, 0, 10), (0.2, -0.3)),
]


@pytest.mark.parametrize(("shape", "truth"), CASES, ids=[c[0].name for c in CASES])
def test_models_recover_their_parameters(shape: Shape, truth: tuple[float, ...]) -> None:
    rng = np.random.default_rng(sum(map(ord, shape.name)))
    x = sample(shape, truth, 10_000, rng)
    start = {
        p: v * (1.05 if v else 1.0) + (0.0 if v else 0.05)
        for p, v in zip(shape.params, truth, strict=True)
    }
    h = hist.Hist(hist.axis.Regular(80, *shape.range), storage=hist.storage.Int64())  # type: ignore[misc]
    h.fill(x)
    for r in (fit_hist(h, shape, start=start), fit_unbinned(x, shape, start=start)):
        assert r.valid, (shape.name, r.message)
        pulls = [(r.values[p] - t) / r.errors[p] for p, t in zip(shape.params, truth, strict=True)]
        assert np.all(np.abs(pulls) < 3.5), (shape.name, pulls)
    binned = fit_hist(h, shape, start=start)
    assert binned.pvalue > 1e-3, (shape.name, binned.chi2, binned.ndof)


def test_extended_sum_signal_and_background() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(1.0, 0.05, 6000), rng.uniform(0.6, 1.4, 3000)])
    model = Sum((("sig", fit.gauss.on(0.6, 1.4)), ("bkg", fit.chebyshev_poly(1, 0.6, 1.4))))
    h = hist.Hist(hist.axis.Regular(80, 0.6, 1.4), storage=hist.storage.Int64())
    h.fill(x)
    for r in (fit_hist(h, model), fit_hist(h, model, method="chi2"), fit_unbinned(x, model)):
        assert r.valid, r.message
        assert abs(r.values["n_sig"] - 6000) < 3.5 * r.errors["n_sig"]
        assert abs(r.values["sig_mu"] - 1.0) < 3.5 * r.errors["sig_mu"]
    frac = Sum(model.components, extended=False)
    r = fit_hist(h, frac)
    assert abs(r.values["f_sig"] - 2 / 3) < 3.5 * r.errors["f_sig"]
    empty = hist.Hist(hist.axis.Regular(80, 0.6, 1.4))
    assert fit_hist(empty, model).message.startswith("not enough data")


def make_channels(
    n_channels: int, seed: int, background: int = 0
) -> tuple[hist.Hist, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu = rng.normal(1.0, 0.03, n_channels)
    sig = rng.uniform(0.04, 0.06, n_channels)
    n = rng.poisson(400, n_channels)
    n[:20] = rng.integers(0, 100, 20)  # starved channels
    h = hist.Hist(
        hist.axis.Regular(n_channels, -0.5, n_channels - 0.5),
        hist.axis.Regular(100, 0.6, 1.4),
        storage=hist.storage.Int64(),
    )
    ch = np.repeat(np.arange(n_channels), n)
    bk = rng.integers(0, n_channels, background)
    h.fill(
        np.concatenate([ch, bk]).astype(float),
        np.concatenate([rng.normal(mu[ch], sig[ch]), rng.uniform(0.6, 1.4, background)]),
    )
    return h, mu, sig


@pytest.mark.parametrize("background", [0, 60_000])
def test_batched_agrees_with_iminuit(background: int) -> None:
    h, mu, sig = make_channels(2500, 7, background)
    bg = background > 0
    fast = fit_channels(h, background=bg, fallback=False)
    head = hist.Hist(hist.axis.Regular(300, -0.5, 299.5), h.axes[1], storage=hist.storage.Int64())
    head[...] = h.values()[:300]
    ref = fit_channels(head, background=bg, method="iminuit")
    both = ref.ok & fast.ok[:300]
    assert both.sum() == np.sum(ref.status != ChannelStatus.NOT_ENOUGH_DATA)
    assert np.array_equal(fast.status[:300], ref.status)
    for p in ref.parameters:
        diff = (fast.values[p][:300][both] - ref.values[p][both]) / ref.errors[p][both]
        assert np.all(np.abs(diff) < 0.05), (p, np.abs(diff).max())
    # closure: pulls of the fitted peaks and widths against the injected ones
    ok = fast.ok
    for p, truth in (("mu", mu), ("sigma", sig)):
        pull = (fast.values[p][ok] - truth[ok]) / fast.errors[p][ok]
        assert abs(pull.mean()) < 0.1, (p, pull.mean())
        assert 0.85 < pull.std() < 1.15, (p, pull.std())


def with_bad_channels(h: hist.Hist) -> hist.Hist:
    """Channel 30 has everything in one bin (no measurable width), 31 is flat (no peak),
    32 is empty."""
    values = h.values()
    values[30] = 0
    values[30, 50] = 400
    values[31] = 5
    values[32, :] = 0
    h[...] = values
    return h


@pytest.mark.parametrize("background", [False, True])
def test_compiled_fit_equals_the_numpy_fallback(
    background: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled batched fit (numba) runs the numpy path's iteration: the same statuses,
    reasons and iterations, values equal up to rounding; splitting the channels over threads
    changes no bit."""
    from b2calib.fit import batched

    monkeypatch.setattr(batched, "_MIN_CHANNELS_COMPILED", 1)
    h = with_bad_channels(make_channels(1000, 11, 25_000 if background else 0)[0])
    compiled = fit_channels(h, background=background, fallback=False, threads=1)
    split = fit_channels(h, background=background, fallback=False, threads=2)
    monkeypatch.setattr(batched, "_compiled", lambda: None)
    plain = fit_channels(h, background=background, fallback=False)
    assert compiled.summary()["FAILED"] >= 2  # the bad channels meet both paths' checks
    assert_same_fits(compiled, plain, split, sigmas=1e-9, error_rtol=1e-9)


def assert_same_fits(
    compiled: ChannelFits,
    plain: ChannelFits,
    split: ChannelFits,
    *,
    sigmas: float,
    error_rtol: float,
    fixed: dict[str, float] | None = None,
) -> None:
    """A compiled batched fit against the numpy path's (``plain``): the same statuses, reasons
    and iterations, values within ``sigmas`` of their errors, errors within ``error_rtol``, the
    same NLL to 1e-12; the fit split over threads (``split``) the same bit for bit. A parameter
    in ``fixed`` keeps its value."""
    assert np.array_equal(compiled.status, plain.status)
    assert compiled.reason == plain.reason
    assert np.array_equal(compiled.iterations, plain.iterations)
    ok = compiled.ok
    for p in compiled.parameters:
        if fixed and p in fixed:
            assert np.all(compiled.values[p][ok] == fixed[p])
            continue
        diff = (compiled.values[p][ok] - plain.values[p][ok]) / plain.errors[p][ok]
        assert np.all(np.abs(diff) < sigmas), (p, np.abs(diff).max())
        np.testing.assert_allclose(compiled.errors[p][ok], plain.errors[p][ok], rtol=error_rtol)
        assert np.array_equal(compiled.values[p], split.values[p], equal_nan=True)
        assert np.array_equal(compiled.errors[p], split.errors[p], equal_nan=True)
    np.testing.assert_allclose(compiled.nll[ok], plain.nll[ok], rtol=1e-12)


def test_batched_fit_without_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without numba the batched fit takes the numpy path (numba is an accelerator here)."""
    import sys

    from b2calib.fit import batched

    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
    monkeypatch.delitem(sys.modules, "b2calib.fit._peak_lm", raising=False)
    assert batched._compiled() is None
    h, _, _ = make_channels(60, 2)
    assert fit_channels(h, fallback=False).summary() == {"OK": 40, "NOT_ENOUGH_DATA": 20}


def test_compiled_pseudo_inverse_is_numpys() -> None:
    """The compiled fit's fallback for a singular information matrix solves as
    numpy.linalg.pinv, whatever the rank."""
    from b2calib.fit._peak_lm import _pinv_solve

    rng = np.random.default_rng(3)
    for n in (3, 4):
        for rank in range(1, n + 1):
            j = rng.normal(size=(n, rank)) * rng.lognormal(0.0, 1.0, size=(n, 1))
            a, b, x = j @ j.T, rng.normal(size=n), np.empty(n)
            _pinv_solve(a, b, x)
            np.testing.assert_allclose(x, np.linalg.pinv(a) @ b, rtol=1e-8, atol=1e-12)


def test_information_errors_decide_as_the_condition_number() -> None:
    """The errors of the batched fits call a channel usable exactly when the condition number
    of its scaled information is below 1e12 (the SVD is taken only where a cheaper bound
    cannot decide), with the errors from the inverse."""
    from b2calib.fit._lm import errors

    rng = np.random.default_rng(4)
    a = rng.normal(size=(400, 4, 6))
    a[7, 3] = a[7, 2] + 1e-8 * a[7, 1]  # two parameters all but degenerate
    info = a @ np.swapaxes(a, 1, 2)
    info[5] = 0.0  # nothing measured
    info[6, 3, :], info[6, :, 3] = info[6, 2, :], info[6, :, 2]  # two parameters degenerate
    info[8, 0, 0] = np.nan
    info[9] *= 1e30  # large but well conditioned
    info[10, 3, 3] *= 1e-14  # a tiny information: still measured once scaled
    good, err = errors(info)
    d = np.sqrt(np.abs(np.einsum("cpp->cp", info)))
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = info / d[:, :, None] / d[:, None, :]
    finite = np.all(np.isfinite(scaled), axis=(1, 2))
    expect = np.zeros(len(info), dtype=bool)
    expect[finite] = np.linalg.cond(scaled[finite]) < 1e12
    assert np.array_equal(good, expect)
    assert not good[[5, 6, 7, 8]].any()
    assert good[[9, 10]].all()
    plain = good.copy()
    plain[[9, 10]] = False  # (their unscaled inverse is not accurate enough to compare to)
    inv_diag = np.einsum("cpp->cp", np.linalg.inv(info[plain]))
    np.testing.assert_allclose(err[plain], np.sqrt(inv_diag), rtol=1e-8)
    assert np.all(np.isnan(err[~good]))


def test_channel_statuses() -> None:
    h, _, _ = make_channels(200, 3)
    values = h.values()
    values[30] = 0
    values[30, 50] = 400  # everything in one bin: a width cannot be measured
    values[31] = 5  # flat: no peak
    values[32, :] = 0
    h[...] = values
    r = fit_channels(h, min_entries=150)
    st = r.summary()
    assert st["NOT_ENOUGH_DATA"] == 21  # the 20 starved channels and the empty one
    assert r.status[32] == ChannelStatus.NOT_ENOUGH_DATA
    assert "entries < 150" in r.reason[32]
    for ch in (30, 31):
        assert r.status[ch] == ChannelStatus.FAILED, (ch, r.reason[ch])
        assert np.isnan(r.values["mu"][ch])
        assert r.reason[ch] != "OK"
    assert np.all(np.isnan(r.values["mu"][r.status != ChannelStatus.OK]))
    assert np.all(np.isfinite(r.values["mu"][r.ok]))


def test_fit_channels_arguments() -> None:
    h, _, _ = make_channels(50, 1)
    from b2calib.exceptions import ConfigError

    with pytest.raises(ConfigError, match="channels x values"):
        fit_channels(h[:, sum])
    with pytest.raises(ConfigError, match="batched"):
        fit_channels(h, method="scipy")
    r = fit_channels(h, value_range=(0.8, 1.2))
    assert r.summary()["OK"] == 30


def test_plot_fit_draws_data_model_components_and_pulls() -> None:
    import holoviews as hv

    rng = np.random.default_rng(2)
    model = Sum((("sig", fit.gauss.on(0.6, 1.4)), ("bkg", fit.constant.on(0.6, 1.4))))
    h = hist.Hist(hist.axis.Regular(40, 0.6, 1.4), storage=hist.storage.Int64())
    h.fill(np.concatenate([rng.normal(1.0, 0.05, 3000), rng.uniform(0.6, 1.4, 1000)]))
    r = fit_hist(h, model)
    layout = fit.plot_fit(h, model, r)
    assert isinstance(layout, hv.Layout)
    top, bottom = layout
    labels = [el.label for el in top]
    assert labels[:1] == ["data"]
    assert {"fit", "sig", "bkg"} <= set(labels)
    pulls = bottom.dimension_values("pull")
    assert len(pulls) == 40
    assert abs(np.mean(pulls)) < 0.5
    assert "chi2/ndof" in top.opts.get().kwargs["title"]
    shape_only = fit_hist(h, fit.gauss.on(0.8, 1.2))
    assert isinstance(fit.plot_fit(h, fit.gauss.on(0.8, 1.2), shape_only), hv.Layout)


def test_high_statistics_peaks_are_not_singular() -> None:
    """Regression: with millions of entries the information of the yield (~1/n) and of the
    position (~n/sigma^2) differ by 14 orders of magnitude; the raw condition number called such
    well-measured fits singular (a full-size TOP common T0 run failed so)."""
    from b2calib.fit.template_shift import fit_template_shift

    rng = np.random.default_rng(9)
    n = 2_000_000
    x = np.concatenate([rng.normal(0.1, 0.08, n), rng.uniform(-1.0, 1.0, n // 20)])
    h = hist.Hist(
        hist.axis.Regular(1, -0.5, 0.5), hist.axis.Regular(100, -1.0, 1.0), storage="int64"
    )
    h.fill(np.zeros(len(x)), x)
    fits = fit_channels(h, background=True, fallback=False)
    assert fits.status[0] == ChannelStatus.OK, fits.reason
    assert fits.values["mu"][0] == pytest.approx(0.1, abs=5 * fits.errors["mu"][0])
    assert fits.errors["mu"][0] == pytest.approx(0.08 / np.sqrt(n), rel=0.1)
    edges = np.linspace(-1.0, 1.0, 101)
    counts = np.histogram(x, edges)[0][None, :]
    shift = fit_template_shift(counts, edges, [[1.0]], [[0.0]], [[0.08]], fallback=False)
    assert shift.status[0] == ChannelStatus.OK, shift.reason
    assert shift.values["mu"][0] == pytest.approx(0.1, abs=5 * shift.errors["mu"][0])


def _folded_counts(
    rng: np.random.Generator,
    edges: F,
    w: F,
    m: F,
    s: F,
    entries: tuple[int, int],
    background: float,
) -> F:
    """Per channel: between ``entries`` photons from its Gaussian components (weights ``w``,
    offsets ``m`` from a random position in the period, widths ``s``) and ``background`` as
    many flat ones, folded into the period ``edges[-1]`` and histogrammed in ``edges``."""
    n_channels, period = len(w), float(edges[-1])
    mu = rng.uniform(0.2, 1.8, n_channels)
    counts = np.empty((n_channels, len(edges) - 1))
    for c in range(n_channels):
        n = rng.integers(*entries)
        k = rng.choice(w.shape[1], size=n, p=w[c] / w[c].sum())
        peaks = rng.normal(mu[c] + m[c, k], s[c, k])
        x = np.concatenate([peaks, rng.uniform(0, period, int(n * background))])
        counts[c] = np.histogram(np.mod(x, period), edges)[0]
    return counts


def template_channels(n_channels: int, seed: int) -> tuple[F, F, F, F, F, float]:
    """Counts of a TOP-like folded time per channel (a main and a second peak of different
    widths, their periodic copies, a flat background) and the template; channel 0 is empty, 1
    flat (no peak), 2 a single bin."""
    rng = np.random.default_rng(seed)
    period, nb = 2.0, 48
    edges = np.linspace(0.0, period, nb + 1)
    w = np.tile([0.7, 0.2, 0.1], (n_channels, 1)) * rng.uniform(0.8, 1.2, (n_channels, 3))
    m = np.tile([0.0, 0.35, -0.2], (n_channels, 1))
    s = np.tile([0.08, 0.12, 0.3], (n_channels, 1)) * rng.uniform(0.9, 1.1, (n_channels, 3))
    counts = _folded_counts(rng, edges, w, m, s, (300, 3000), background=1 / 5)
    counts[0], counts[1], counts[2] = 0.0, 20.0, 0.0
    counts[2, 7] = 900.0
    return counts, edges, w, m, s, period


def compiled_split_and_numpy(
    monkeypatch: pytest.MonkeyPatch,
    channels: tuple[F, F, F, F, F, float],
    block: int | None = None,
) -> tuple[ChannelFits, ChannelFits, ChannelFits]:
    """The template-shift fits of ``channels`` (as :func:`template_channels` gives them):
    compiled on 1 thread, compiled over 2, and the numpy path (in blocks of ``block``)."""
    from b2calib.fit import template_shift
    from b2calib.fit.template_shift import fit_template_shift

    monkeypatch.setattr(template_shift, "_MIN_CHANNELS_COMPILED", 1)
    monkeypatch.setattr(template_shift, "_MIN_CHANNELS_PER_THREAD", 10)
    counts, edges, w, m, s, period = channels
    args = (counts, edges, w, m, s)
    compiled = fit_template_shift(*args, period=period, fallback=False, threads=1)
    split = fit_template_shift(*args, period=period, fallback=False, threads=2)
    monkeypatch.setattr(template_shift, "_compiled", lambda: None)
    more = {} if block is None else {"block": block}
    plain = fit_template_shift(*args, period=period, fallback=False, **more)
    return compiled, split, plain


def test_compiled_template_fit_equals_the_numpy_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled template-shift fit (numba) runs the numpy path's iteration: the same
    statuses, reasons and iterations, values within 1e-9 of their errors (its model skips
    components more than 8.3 widths from a bin edge, 5e-17 of them, and tabulates the normal
    distribution to the rounding of libm's), errors within 1e-7 (the flat channel's shift is
    undetermined: its error moves 2e-8 with rounding, as before the table); splitting the
    channels over threads changes no bit."""
    compiled, split, plain = compiled_split_and_numpy(
        monkeypatch, template_channels(120, 5), block=50
    )
    assert compiled.summary()["OK"] >= 110
    assert compiled.status[0] == ChannelStatus.NOT_ENOUGH_DATA
    assert_same_fits(compiled, plain, split, sigmas=1e-9, error_rtol=1e-7)


def top_like_channels(n_channels: int, seed: int) -> tuple[F, F, F, F, F, float]:
    """Counts and templates shaped as TOP's photon-time fits (the template of
    :class:`b2calib.detectors.top.photons.PhotonPDF`): per channel 13 main and 13 second peaks
    (0.35 ns later) of widths 0.08-0.34 ns, weighted by the track crossings, in 48 bins of one
    2 ns period, on a flat background; channel 0 has too few entries."""
    rng = np.random.default_rng(seed)
    period, nb = 2.0, 48
    edges = np.linspace(0.0, period, nb + 1)
    chrom = np.linspace(0.01, 0.32, 13) * rng.uniform(0.9, 1.1, (n_channels, 1))
    zw = rng.uniform(0.5, 1.0, (n_channels, 13))
    w = np.concatenate([0.8 * zw, 0.2 * zw], axis=1)
    m = np.concatenate([np.zeros((n_channels, 13)), np.full((n_channels, 13), 0.35)], axis=1)
    s = np.sqrt(np.concatenate([0.08**2 + chrom**2, 0.10**2 + chrom**2], axis=1))
    counts = _folded_counts(rng, edges, w, m, s, (100, 2000), background=1 / 4)
    counts[0] = 0.0
    counts[0, 5] = 10.0
    return counts, edges, w, m, s, period


def test_tabulated_normal_equals_libm() -> None:
    """The compiled template fit's normal distribution and density (Taylor series about the
    nearest node of a table) are libm's ``erfc`` and ``exp`` to the rounding of the values
    (2.3e-16 absolute) over the table's span; NaN stays NaN."""
    import math

    from b2calib.fit._template_lm import SPAN, _normal

    z = np.concatenate(
        [np.linspace(-SPAN, SPAN, 20001), np.random.default_rng(3).uniform(-SPAN, SPAN, 5000)]
    )
    got = np.array([_normal(x) for x in z])
    cdf = np.array([0.5 * math.erfc(-x / math.sqrt(2.0)) for x in z])
    pdf = np.array([math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi) for x in z])
    assert np.max(np.abs(got[:, 0] - cdf)) <= 2.3e-16
    assert np.max(np.abs(got[:, 1] - pdf)) <= 2.3e-16
    assert np.all(np.isnan(_normal(float("nan"))))


def test_compiled_top_template_fit_equals_the_numpy_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On TOP-shaped templates (26 components, periodic copies) the compiled fit (the tabulated
    normal distribution) gives the numpy path's fits (scipy's ``erfc``, the reference): the same
    statuses and iterations, values within 1e-9 of their errors."""
    compiled, split, plain = compiled_split_and_numpy(monkeypatch, top_like_channels(100, 11))
    assert compiled.summary()["OK"] >= 95
    assert compiled.status[0] == ChannelStatus.NOT_ENOUGH_DATA
    assert_same_fits(compiled, plain, split, sigmas=1e-9, error_rtol=1e-9)


def _table_and_component_models(
    w: F, m: F, s: F, edges: F, shifts: npt.ArrayLike
) -> tuple[list[bool], float, float, int]:
    """Per shift whether the template table (:func:`_model_table`) answered, and the largest
    differences from the per-component model (:func:`_model`) of its expected counts and of
    its Jacobian by the shift, per unit yield; and the table's order (-1: none)."""
    from b2calib.fit import _template_lm as tl

    nb = len(edges) - 1
    h = (edges[-1] - edges[0]) / nb
    widths = np.diff(edges)
    tab = np.empty((2 * (nb + tl.TABLE_PAD) + 1, tl.TABLE_MAX_ORDER + 1))
    span = np.zeros(2, dtype=np.int64)
    coef = np.empty((len(w), tl.TABLE_MAX_ORDER + 1))
    order = np.zeros(len(w), dtype=np.int64)
    top = tl._table_orders(h, w, s, coef, order)
    table = (h, tab, span, coef, order, top, np.empty((2, len(tab))), np.empty((2, nb + 1)))
    answered, d_lam, d_jac = [], 0.0, 0.0
    for mu in np.asarray(shifts, dtype=np.float64):
        th = np.array([1000.0, mu, 3.0])
        lam, jac = np.full(nb, np.nan), np.full((nb, 3), np.nan)
        ref_lam, ref_jac = np.empty(nb), np.zeros((nb, 3))
        tl._model(th, edges, widths, w, m, s, ref_lam, ref_jac)
        answered.append(bool(tl._model_table(th, edges, widths, w, m, s, lam, jac, table)))
        if answered[-1]:
            d_lam = max(d_lam, float(np.max(np.abs(lam - ref_lam))) / 1000.0)
            d_jac = max(d_jac, float(np.max(np.abs(jac - ref_jac))) / 1000.0)
    return answered, d_lam, d_jac, top


def test_template_table_equals_the_model_per_component() -> None:
    """The compiled template fit's table (the whole template's Taylor series about nodes a bin
    apart, built as the shifts need them) gives the per-component model's expected counts and
    Jacobian to 1e-14 of the yield (bin probabilities of 0.02: the rounding of the template's
    sum over 78 components), at shifts anywhere inside the edges and up to 8 bins beyond; a
    shift further out or NaN leaves the model to the per-component one, and so do components
    too narrow for the bins (no table)."""
    from b2calib.fit import _template_lm as tl
    from b2calib.fit import template_shift

    _, edges, w, m, s, period = top_like_channels(12, 3)
    w3, m3, s3 = template_shift._periodic(w / w.sum(axis=1, keepdims=True), m, s, period)
    h = edges[1] - edges[0]
    rng = np.random.default_rng(4)
    inside = [*rng.uniform(-7.9 * h, 2.0 + 7.9 * h, 40), 0.0, 1.0, 0.5 * h, 2.0]
    for ch in range(len(w3)):
        shifts = [*inside, -8.6 * h, 2.0 + 8.6 * h, 7.0, float("nan")]
        answered, d_lam, d_jac, top = _table_and_component_models(
            w3[ch], m3[ch], s3[ch], edges, shifts
        )
        assert 0 < top <= tl.TABLE_MAX_ORDER
        assert answered == [True] * len(inside) + [False] * 4
        assert d_lam < 1e-14, (ch, d_lam)
        assert d_jac < 1e-14 * 48 / 2.0, (ch, d_jac)  # per ns: the bin probability per bin width
    # one component of 0.2 bins: no table
    answered, _, _, top = _table_and_component_models(
        np.array([1.0]), np.array([0.0]), np.array([0.2 * h]), edges, [1.0]
    )
    assert top == -1
    assert answered == [False]


@pytest.mark.parametrize("narrow", [False, True])
def test_template_fit_from_its_table_equals_the_fit_per_component(
    monkeypatch: pytest.MonkeyPatch, narrow: bool
) -> None:
    """The compiled fit with the template table gives the compiled fit per component's (its
    reference): the same statuses, reasons and iterations, values within 1e-9 of their errors,
    errors within 1e-9; with the iminuit fallback (which starts from the end point of an
    unconverged iteration) within 0.01 sigma and 1 %. With components too narrow for the bins
    the fit runs per component (no table): bit for bit."""
    from b2calib.fit import template_shift
    from b2calib.fit.template_shift import fit_template_shift

    monkeypatch.setattr(template_shift, "_MIN_CHANNELS_COMPILED", 1)
    counts, edges, w, m, s, period = top_like_channels(150, 21)
    if narrow:  # half a bin and less: the table would need more than its highest order
        s = s * 0.2
    for fallback, sigmas, error_rtol in ((False, 1e-9, 1e-9), (True, 1e-2, 1e-2)):
        fits = {}
        for table in (True, False):
            monkeypatch.setattr(template_shift, "_TABLE", table)
            fits[table] = fit_template_shift(
                counts, edges, w, m, s, period=period, fallback=fallback, threads=1
            )
        if narrow:
            for p in fits[True].parameters:
                assert np.array_equal(fits[True].values[p], fits[False].values[p], equal_nan=True)
                assert np.array_equal(fits[True].errors[p], fits[False].errors[p], equal_nan=True)
        assert fits[True].summary()["OK"] >= 100
        assert_same_fits(fits[True], fits[False], fits[True], sigmas=sigmas, error_rtol=error_rtol)


def test_template_fallback_with_the_compiled_distribution() -> None:
    """The iminuit fallback's model compiled (:func:`template_cdf`, the tabulated normal
    distribution) is the numpy one to rounding, and gives iminuit's fit to 1e-5 sigma (Migrad
    follows rounding that far: the tolerance of any change of arithmetic under it)."""
    from scipy import special

    from b2calib.fit import template_shift
    from b2calib.fit._template_lm import template_cdf

    counts, edges, w, m, s, period = top_like_channels(4, 12)
    w3, m3, s3 = template_shift._periodic(w / w.sum(axis=1, keepdims=True), m, s, period)
    for mu in (0.0, 0.7, 1.9):
        z = (edges[:, None] - mu - m3[1][None, :]) / s3[1][None, :]
        numpy_cdf = 0.5 * special.erfc(-z / np.sqrt(2.0)) @ w3[1]
        np.testing.assert_allclose(
            template_cdf(edges, mu, w3[1], m3[1], s3[1]), numpy_cdf, atol=2e-15
        )
    start = np.array([counts[1].sum() * 0.7, 1.1, 5.0])
    args = (counts[1], edges, w3[1], m3[1], s3[1], start)
    val, err, valid, msg, _ = template_shift._iminuit_channel(*args)
    val_c, err_c, valid_c, msg_c, _ = template_shift._iminuit_channel(*args, template_cdf)
    assert valid, msg
    assert valid_c, msg_c
    assert np.all(np.abs(val_c - val) < 1e-5 * err)
    np.testing.assert_allclose(err_c, err, rtol=1e-4)


@pytest.mark.parametrize("compiled", [True, False])
def test_template_fit_with_no_channel_to_fit(
    compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every channel below ``min_entries`` (a run without usable files): every one
    NOT_ENOUGH_DATA, on either path (the compiled fit's merge stopped it with "need at least
    one array to concatenate")."""
    from b2calib.fit import template_shift

    if compiled:
        monkeypatch.setattr(template_shift, "_MIN_CHANNELS_COMPILED", 1)
    else:
        monkeypatch.setattr(template_shift, "_compiled", lambda: None)
    counts, edges, w, m, s, period = template_channels(5, 7)
    fits = template_shift.fit_template_shift(
        counts, edges, w, m, s, period=period, min_entries=10**9
    )
    assert np.all(fits.status == ChannelStatus.NOT_ENOUGH_DATA)
    assert all(r.endswith(f"< {10**9}") for r in fits.reason)
    assert np.all(np.isnan(fits.values["mu"]))


def test_template_fit_without_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without numba the template-shift fit takes the numpy path."""
    import sys

    from b2calib.fit import template_shift

    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
    monkeypatch.delitem(sys.modules, "b2calib.fit._template_lm", raising=False)
    monkeypatch.delitem(sys.modules, "b2calib.fit._peak_lm", raising=False)
    assert template_shift._compiled() is None
    monkeypatch.setattr(template_shift, "_MIN_CHANNELS_COMPILED", 1)
    counts, edges, w, m, s, period = template_channels(12, 6)
    fits = template_shift.fit_template_shift(counts, edges, w, m, s, period=period)
    assert fits.summary()["OK"] >= 9
    assert fits.status[0] == ChannelStatus.NOT_ENOUGH_DATA


def test_template_fit_of_few_channels_with_many_components_runs_compiled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fit of few channels with many components each (TOP's common T0: one channel per run,
    a template of 624 components, 1872 with the periodic copies, in 128 bins) runs the compiled
    fit by default (issue 20: 45 ms a run by numpy, 3 ms compiled): the numpy path's fits, the
    same statuses and iterations, values within 1e-9 of their errors; few components stay on
    the numpy path."""
    from b2calib.fit import template_shift
    from b2calib.fit.template_shift import fit_template_shift

    rng = np.random.default_rng(17)
    period, nb, n_comp = 2.0, 128, 624
    edges = np.linspace(0.0, period, nb + 1)
    w = rng.uniform(0.1, 1.0, (3, n_comp))
    m = np.where(np.arange(n_comp) % 2 == 0, 0.0, 0.35)[None, :] * np.ones((3, 1))
    s = rng.uniform(0.08, 0.35, (3, n_comp))
    counts = _folded_counts(rng, edges, w, m, s, (3000, 200000), background=1 / 3)
    calls: list[int] = []
    real = template_shift._compiled

    def counted():  # type: ignore[no-untyped-def]
        calls.append(1)
        return real()

    monkeypatch.setattr(template_shift, "_compiled", counted)
    compiled = fit_template_shift(counts, edges, w, m, s, period=period, fallback=False)
    assert calls, "the compiled fit did not run"
    assert compiled.summary()["OK"] == 3
    monkeypatch.setattr(template_shift, "_compiled", lambda: None)
    plain = fit_template_shift(counts, edges, w, m, s, period=period, fallback=False)
    assert_same_fits(compiled, plain, compiled, sigmas=1e-9, error_rtol=1e-9)
    monkeypatch.setattr(template_shift, "_compiled", real)
    assert not template_shift._use_compiled(3, 3 * 26)
    assert template_shift._use_compiled(1, 3 * n_comp)
