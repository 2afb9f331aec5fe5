"""ECL calibrations: the algorithm pieces on arrays, closure on the simulator, the CLI on the
sample bucket, the notebooks.

Closure samples (generated here, ECL only):

* ``bhabha_sample``: 2 runs x 150k events (90 % Bhabha), the intervention at run 2: the Bhabha
  5x5 energy method, the time offsets and the payload split at the intervention.
* ``photon_sample``: 1 run x 800k events (45 % gamma-gamma, 45 % mu-mu): the peak methods and
  the merge.
* ``crate_blocks_sample``: 24 runs x 30k Bhabha events, a payload per run: the crate offsets,
  the crate-level fallback and the crystals alone in their crate.
* per test, 1 run x 80k Bhabha events on each of three seeds: the crystal offsets.
* ``realistic_sample``: 1 run x 150k events at a real bucket's skim fractions (90 % Bhabha,
  5 % gamma-gamma, 5 % mu-mu), three seeds: what each method calibrates and the merge records.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import hist
import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
from click.testing import CliRunner

from b2calib.calibration import Constants, run_calibrations
from b2calib.calibration.toolkit import find_steps, weighted_mean_split
from b2calib.cli import cli
from b2calib.conditions import ChannelStatus, ConditionsDB
from b2calib.conditions.iov import IoV
from b2calib.detectors.cdc.views import final_diagnostics
from b2calib.detectors.ecl import _common as C
from b2calib.detectors.ecl import calibrations
from b2calib.detectors.ecl import ee5x5 as B
from b2calib.detectors.ecl import energy as E
from b2calib.detectors.ecl import merge as M
from b2calib.detectors.ecl import peaks as P
from b2calib.detectors.ecl import time as T
from b2calib.detectors.ecl._linalg import _inverse_diagonal, solve_with_variances
from b2calib.engine import Dataset, collect
from b2calib.fit.novosibirsk_batched import fit_novosibirsk_channels, novosibirsk_density
from b2calib.geometry import ecl
from b2calib.runs import RunRegistry
from b2calib.sim import SimConfig, simulate
from b2calib.sim.conditions import conditions_for_run, truth_payloads
from b2calib.sim.physics import Beam, boost
from tests.broken_runs import broken_copy
from tests.closure import assert_closure, calibrate, ok_channels, pulls, staged
from tests.conftest import SAMPLE
from tests.test_fit import assert_same_fits
from tests.test_notebooks import execute

OK = ChannelStatus.OK
NED = ChannelStatus.NOT_ENOUGH_DATA
CELLS = np.arange(1, ecl.N_CRYSTALS + 1)


# ------------------------------------------------------------------------------- pieces
def test_declarations() -> None:
    cals = {c.name: c for c in calibrations()}
    assert set(cals) == {"ecl-energy", "ecl-time"}
    energy, time = cals["ecl-energy"], cals["ecl-time"]
    assert energy.skims == ("hlt_bhabha", "hlt_gamma_gamma", "hlt_mumu_2trk")
    assert time.skims == ("hlt_bhabha",)
    assert energy.expert_config["gg_min_entries"] == 150  # basf2's minimum
    produced = {p for a in energy.algorithms for p in a.payloads}
    assert produced == {
        "ECLCrystalEnergy",
        "ECLCrystalEnergy5x5",
        "ECLCrystalEnergyGammaGamma",
        "ECLCrystalEnergyMuMu",
    }
    assert {p for a in time.algorithms for p in a.payloads} == {
        "ECLCrystalTimeOffset",
        "ECLCrateTimeOffset",
    }


def test_banded_solve_and_inverse_diagonal() -> None:
    rng = np.random.default_rng(3)
    n = 300
    a = scipy.sparse.random(n, n, density=0.03, random_state=4)
    q = (a @ a.T + scipy.sparse.identity(n)).tocsr()
    r = rng.normal(size=n)
    x, var, bw = solve_with_variances(q, r)
    dense = np.linalg.inv(q.toarray())
    assert np.allclose(x, dense @ r, atol=1e-10)
    assert np.allclose(var, np.diag(dense), atol=1e-12)
    assert 0 < bw < n
    with pytest.raises(np.linalg.LinAlgError):
        solve_with_variances(-q, r)


@pytest.mark.parametrize("bandwidth", [0, 5, 40])
def test_inverse_diagonal_by_blocks_is_the_inverse(bandwidth: int) -> None:
    """The blocked Takahashi recurrence gives the diagonal of the dense inverse whatever the
    block (one column, smaller or larger than the bandwidth, the whole matrix, a last block
    cut short), within rounding (it replaced a column-by-column recurrence: 2e-15 apart on
    the bench's 8016-crystal system)."""
    rng = np.random.default_rng(11)
    n = 203
    a = np.zeros((n, n))
    for k in range(bandwidth + 1):
        a += np.diag(rng.normal(size=n - k), -k)
    q = a @ a.T + np.eye(n)
    ab = np.zeros((bandwidth + 1, n))  # the lower band of q
    for k in range(bandwidth + 1):
        ab[k, : n - k] = np.diagonal(q, -k)
    chol = scipy.linalg.cholesky_banded(ab, lower=True)
    expected = np.diag(np.linalg.inv(q))
    for block in (1, 7, 64, 128, 500):
        got = _inverse_diagonal(chol, block)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


def _sample_novosibirsk(rng, peak, width, tail, n):  # type: ignore[no-untyped-def]
    grid = np.linspace(peak - 8 * width, peak + 8 * width, 4001)
    dens = novosibirsk_density(grid, np.array([[peak]]), np.array([[width]]), np.array([[tail]]))
    cdf = np.cumsum(dens[0])
    return np.interp(rng.random(n), cdf / cdf[-1], grid)


def test_batched_novosibirsk_recovers_peaks_with_honest_errors() -> None:
    rng = np.random.default_rng(5)
    nch, n = 600, 400
    peaks = rng.normal(1.0, 0.02, nch)
    h = hist.Hist(hist.axis.Integer(0, nch), hist.axis.Regular(120, 0.85, 1.15))
    for c in range(nch):
        x = _sample_novosibirsk(rng, peaks[c], 0.012, 0.3, n)
        h.fill(np.full(n, c), np.concatenate([x[: n - 40], rng.uniform(0.85, 1.15, 40)]))
    h.view()[:5] = 0  # empty channels: not enough data, NaN
    fits = fit_novosibirsk_channels(h, min_entries=150, tail_start=0.2)
    assert np.all(fits.status[:5] == NED)
    assert np.all(np.isnan(fits.values["peak"][:5]))
    ok = fits.ok
    assert ok.sum() > 0.98 * (nch - 5)
    pull = (fits.values["peak"][ok] - peaks[ok]) / fits.errors["peak"][ok]
    assert abs(pull.mean()) < 0.12
    assert 0.85 < pull.std() < 1.15
    # the shape fixed at its true value: a free peak and yield only
    fixed = fit_novosibirsk_channels(h, min_entries=150, fixed={"width": 0.012, "tail": 0.3})
    assert np.all(fixed.errors["tail"][fixed.ok] == 0.0)
    pull = (fixed.values["peak"][fixed.ok] - peaks[fixed.ok]) / fixed.errors["peak"][fixed.ok]
    assert abs(pull.mean()) < 0.12
    assert 0.85 < pull.std() < 1.15


def _novosibirsk_channels(nch: int, seed: int) -> tuple[hist.Hist, np.ndarray]:
    """``nch`` channels of 400 Novosibirsk entries (width 0.012, tail 0.3) on 40 flat ones; the
    first five empty, two whose peak is outside the range (FAILED fits)."""
    rng = np.random.default_rng(seed)
    peaks = rng.normal(1.0, 0.02, nch)
    peaks[5:7] = (0.86, 1.16)
    h = hist.Hist(hist.axis.Integer(0, nch), hist.axis.Regular(120, 0.85, 1.15))
    for c in range(nch):
        x = _sample_novosibirsk(rng, peaks[c], 0.012, 0.3, 400)
        h.fill(np.full(400, c), np.concatenate([x[:360], rng.uniform(0.85, 1.15, 40)]))
    h.view()[:5] = 0
    return h, peaks


@pytest.mark.parametrize("fixed", [None, {"width": 0.012, "tail": 0.3}], ids=["free", "shape"])
def test_compiled_novosibirsk_equals_the_numpy_fallback(
    fixed: dict[str, float] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled Novosibirsk fit (numba) runs the numpy path's iteration: the same statuses,
    reasons and iterations, values within 1e-7 of their errors, errors within 1e-5; splitting
    the channels over threads changes no bit."""
    from b2calib.fit import novosibirsk_batched as NB

    h, _ = _novosibirsk_channels(1000, 11)
    kw = {"min_entries": 150, "tail_start": 0.2, "fixed": fixed}
    compiled = fit_novosibirsk_channels(h, threads=1, **kw)  # type: ignore[arg-type]
    split = fit_novosibirsk_channels(h, threads=2, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(NB, "_compiled", lambda: None)
    plain = fit_novosibirsk_channels(h, **kw)  # type: ignore[arg-type]
    assert compiled.method == plain.method == "batched-novosibirsk"
    assert compiled.summary()["FAILED"] >= 2  # the peaks outside the range, on both paths
    assert_same_fits(compiled, plain, split, sigmas=1e-7, error_rtol=1e-5, fixed=fixed)


def test_novosibirsk_fit_without_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without numba the Novosibirsk fit takes the numpy path, with honest errors."""
    import sys

    from b2calib.fit import novosibirsk_batched as NB

    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
    monkeypatch.delitem(sys.modules, "b2calib.fit._novosibirsk_lm", raising=False)
    monkeypatch.delitem(sys.modules, "b2calib.fit._peak_lm", raising=False)
    assert NB._compiled() is None
    h, peaks = _novosibirsk_channels(200, 12)
    fits = fit_novosibirsk_channels(h, min_entries=150, fixed={"width": 0.012, "tail": 0.3})
    assert fits.summary() == {"OK": 193, "NOT_ENOUGH_DATA": 5, "FAILED": 2}
    pull = (fits.values["peak"][fits.ok] - peaks[fits.ok]) / fits.errors["peak"][fits.ok]
    assert abs(pull.mean()) < 0.2
    assert 0.8 < pull.std() < 1.2


def test_novosibirsk_jacobian_skips_frozen_columns() -> None:
    """The numpy Jacobian leaves the columns of frozen parameters 0 (the fit zeroes them) and
    computes the others bit for bit as before."""
    from b2calib.fit import novosibirsk_batched as NB

    edges = np.linspace(0.85, 1.15, 121)
    centers, widths = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
    theta = np.array([[300.0, 1.0, 0.012, 0.3, 20.0], [150.0, 0.98, 0.015, -0.2, 0.0]])
    frozen = np.array([False, False, True, True, False])
    full = NB._jacobian(theta, centers, widths)
    part = NB._jacobian(theta, centers, widths, frozen)
    assert np.all(part[..., frozen] == 0.0)
    assert part[..., ~frozen].tobytes() == full[..., ~frozen].tobytes()


def test_peak_toys_solve_as_superlu() -> None:
    """The peak system's toys, solved row-wise on SuperLU's factors, are SuperLU's own solve up
    to rounding: the constants and errors of :func:`solve_peaks` are those of ``lu.solve``."""
    from b2calib.detectors.ecl._linalg import lu_solve_many

    rng = np.random.default_rng(8)
    n = 400
    a = scipy.sparse.random(n, n, density=0.02, random_state=9) + 2.0 * scipy.sparse.identity(n)
    lu = scipy.sparse.linalg.splu(a.tocsc())
    b = rng.normal(size=(n, 50))
    np.testing.assert_allclose(lu_solve_many(lu, b), lu.solve(b), rtol=1e-12, atol=1e-13)
    share = np.exp(-np.abs(np.subtract.outer(np.arange(5), 2)) / 0.4)
    frac = np.tile(np.outer(share, share).ravel(), (ecl.N_CRYSTALS, 1))
    frac[C.NEIGHBOURS_5X5 == 0] = 0.0
    frac /= frac.sum(axis=1, keepdims=True)
    ok = (ecl.ring_of(CELLS) >= 20) & (ecl.ring_of(CELLS) < 35) & (rng.random(ecl.N_CRYSTALS) < 0.8)
    peak = rng.normal(0.95, 0.01, ecl.N_CRYSTALS)
    args = (peak, np.full(ecl.N_CRYSTALS, 2e-3), frac, np.ones(ecl.N_CRYSTALS), ok)
    kw = {
        "expected": 0.95,
        "expected_error": 1e-4,
        "applied_error": np.full(ecl.N_CRYSTALS, 0.01),
        "n_toys": 100,
    }
    value, error, solved = P.solve_peaks(*args, **kw)  # type: ignore[arg-type]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(P, "lu_solve_many", lambda lu, b: lu.solve(b))
        value0, error0, solved0 = P.solve_peaks(*args, **kw)  # type: ignore[arg-type]
    assert np.array_equal(solved, solved0)
    assert solved.sum() > 1500
    np.testing.assert_allclose(value[solved], value0[solved], rtol=1e-12)
    np.testing.assert_allclose(error[solved], error0[solved], rtol=1e-10)


def _toy_ee5x5(
    n: int = 120_000, rings: tuple[int, int] = (20, 40)
) -> tuple[dict[str, hist.Hist], np.ndarray, np.ndarray]:
    """The Bhabha 5x5 histograms of ``n`` toy electrons of known energy spread over the 5x5
    windows of ``rings`` (barrel); the true constants and the crystals hit at the centre."""
    rng = np.random.default_rng(6)
    truth = rng.normal(1.0, 0.04, ecl.N_CRYSTALS)
    barrel = np.flatnonzero((ecl.ring_of(CELLS) >= rings[0]) & (ecl.ring_of(CELLS) < rings[1])) + 1
    centre = rng.choice(barrel, n)
    share = np.exp(-np.abs(np.subtract.outer(np.arange(5), 2)) / 0.4)
    share = np.outer(share, share).ravel()
    frac = share * rng.uniform(0.8, 1.2, (n, 25))
    frac /= frac.sum(axis=1, keepdims=True)
    p = rng.uniform(3.0, 7.0, n)
    cells = C.NEIGHBOURS_5X5[centre - 1]
    e_true = 0.94 * p[:, None] * frac * rng.normal(1.0, 0.015, n)[:, None]
    e_raw = e_true / truth[cells - 1]
    hs = {
        "q": hist.Hist(C.cell_axis(), hist.axis.Integer(0, C.N_PAIRS, flow=False)),
        "r": hist.Hist(C.cell_axis(), hist.axis.Integer(0, C.N_SLOTS, flow=False)),
        "n": hist.Hist(C.cell_axis()),
        "syy": hist.Hist(C.cell_axis()),
    }
    B._fill_normal(
        hs["q"].view(),
        hs["r"].view(),
        hs["n"].view(),
        hs["syy"].view(),
        centre.astype(np.int64),
        e_raw,
        p,
    )
    return hs, truth, barrel


def test_ee5x5_linear_system_on_toy_electrons() -> None:
    """Electrons of known energy spread over 5x5 windows; the constants come back."""
    hs, truth, barrel = _toy_ee5x5()
    value, error, status, summary = B.solve_ee5x5(
        hs["q"], hs["r"], hs["n"], hs["syy"], expected=0.94, expected_error=0.0, min_entries=10
    )
    ok = status == OK
    assert set(CELLS[ok]) <= set(barrel)
    assert np.all(np.isnan(value[~ok]))
    assert summary["resolution"] == pytest.approx(0.015, rel=0.1)
    assert_closure(value[ok], error[ok], truth[ok], "toy ee5x5")


def test_ee5x5_solution_remembered_by_its_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 5x5 solution of equal sums (copies, as each iteration merges them anew) is the
    remembered one, bit for bit, without building the system again; other sums or parameters
    are solved anew, and what a caller changes in a result is not remembered."""
    hs, _, _ = _toy_ee5x5(20_000, (20, 24))
    args = (hs["q"], hs["r"], hs["n"], hs["syy"])
    kw = {"expected": 0.94, "expected_error": 0.0, "min_entries": 10}
    solved: list[int] = []
    solve = B._solve

    def counted(*a: object) -> object:
        solved.append(1)
        return solve(*a)  # type: ignore[arg-type]

    monkeypatch.setattr(B, "_solve", counted)
    B._SOLVED.clear()
    first = B.solve_ee5x5(*args, **kw)  # type: ignore[arg-type]
    first[0][:] = -1.0  # the caller's copy
    first[3]["chi2"] = -1.0
    B._SOLVED.clear()
    reference = B.solve_ee5x5(*args, **kw)  # type: ignore[arg-type]
    again = B.solve_ee5x5(*(h.copy() for h in args), **kw)  # type: ignore[arg-type]
    assert len(solved) == 2
    for a, b in zip(reference[:3], again[:3], strict=True):
        assert a.tobytes() == b.tobytes()
    assert reference[3] == again[3]
    assert np.isfinite(again[0]).sum() > 500
    assert again[3]["chi2"] > 0
    B.solve_ee5x5(*args, **(kw | {"min_entries": 11}))  # type: ignore[arg-type]
    changed = hs["n"].copy()
    changed.view()[100] += 1.0
    B.solve_ee5x5(hs["q"], hs["r"], changed, hs["syy"], **kw)  # type: ignore[arg-type]
    assert len(solved) == 4


class _Synchronous:
    """A stand-in for a one-thread pool that runs what it is given at once."""

    def __enter__(self) -> _Synchronous:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        from concurrent.futures import Future

        future: Future[object] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _toy_peaks(rings: tuple[int, int] = (20, 23)) -> dict[str, hist.Hist]:
    """Gamma-gamma and mu-mu peak histograms (300 entries per crystal of ``rings``) and their
    energy sharing (a fixed 5x5 share)."""
    rng = np.random.default_rng(9)
    cells = CELLS[(ecl.ring_of(CELLS) >= rings[0]) & (ecl.ring_of(CELLS) < rings[1])]
    share = np.exp(-np.abs(np.subtract.outer(np.arange(5), 2)) / 0.4)
    share = np.outer(share, share).ravel() / np.outer(share, share).sum()
    out: dict[str, hist.Hist] = {}
    for name, key, bins, peak, width in (
        ("gg_ratio", "gg", P.GG_BINS, 0.946, 0.02),
        ("mumu_energy", "mumu", P.MUMU_BINS, 0.171, 0.015),
    ):
        h = hist.Hist(C.cell_axis(), hist.axis.Regular(*bins))
        centre = np.repeat(cells, 300)
        h.fill(centre, rng.normal(peak, width, len(centre)))
        frac = hist.Hist(C.cell_axis(), hist.axis.Integer(0, C.N_SLOTS, flow=False))
        frac.view()[cells - 1] = 300 * np.where(C.NEIGHBOURS_5X5[cells - 1] > 0, share, 0.0)
        out |= {name: h, f"{key}_frac": frac}
    return out


def test_energy_algorithm_solves_the_5x5_beside_the_peaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 5x5 system and the mu-mu method on two more threads while the gamma-gamma method
    fits give, bit for bit, the payloads, message and diagnostics of computing them one after
    the other on the calling thread."""
    from b2calib.calibration import AlgorithmInput
    from b2calib.engine import RunOutput

    toy, _, _ = _toy_ee5x5(10_000, (20, 24))
    hs = {f"ee5x5_{k}": h for k, h in toy.items()} | _toy_peaks()
    hs["ee5x5_crate_ratio"] = hist.Hist(hist.axis.Integer(0, ecl.N_CRATES))
    config = E.energy_calibration().configure({"ee5x5_expected": 0.94})
    data = AlgorithmInput([(1, 1)], hs, RunOutput(), Constants(None), config)

    def run() -> tuple[list[bytes], str, list[str], list[bytes]]:
        B._SOLVED.clear()
        result = E.ECLEnergyAlgorithm().run(data)
        arrays = [
            a.tobytes()
            for p in result.payloads
            for a in (p.value("value"), p.errors["value"], p.status)
        ]
        tables = [
            np.asarray(v).tobytes() for t in result.diagnostics.tables.values() for v in t.values()
        ]
        return arrays, result.message, list(result.diagnostics.histograms), tables

    threaded = run()
    monkeypatch.setattr(E, "ThreadPoolExecutor", lambda max_workers: _Synchronous())
    assert threaded == run()
    assert "OK per method {'ee5x5': " in threaded[1]
    assert threaded[2] == ["ee5x5_crate_ratio", "ee5x5_n", "gg_ratio", "mumu_energy"]
    counts = re.search(r"'gamma_gamma': (\d+), 'mumu': (\d+)", threaded[1])
    assert counts is not None
    assert int(counts[1]) > 100  # crystals the peak methods calibrated
    assert int(counts[2]) > 100


def test_collector_kernels_fill_what_plain_numpy_fills() -> None:
    """The ECL collectors' kernels (the 5x5 window energies with their cell-id range cut, the
    normal equations skipping empty slots, the energy fractions in one loop) fill, bit for
    bit, what the plain per-element sums fill: np.add.at in input order."""
    import awkward as ak

    rng = np.random.default_rng(8)
    n_evt = 1500
    centre = rng.integers(1, ecl.N_CRYSTALS + 1, (n_evt, 2))  # two clusters per event
    ndig = rng.integers(0, 60, n_evt)
    # digits: half inside a cluster's window (repeats too), half anywhere
    near = C.NEIGHBOURS_5X5[np.repeat(centre[:, 0], ndig) - 1, rng.integers(0, 25, ndig.sum())]
    anywhere = rng.integers(1, ecl.N_CRYSTALS + 1, ndig.sum())
    cells = np.where(rng.random(ndig.sum()) < 0.5, near, anywhere).astype(np.int32)
    cells[cells == 0] = 1
    energy = rng.exponential(0.05, ndig.sum()).astype(np.float32)
    events = ak.Array(
        {
            "ECLCalDigits_m_CellId": ak.unflatten(cells, ndig),
            "ECLCalDigits_m_Energy": ak.unflatten(energy, ndig),
        }
    )
    cl_evt = np.repeat(np.arange(n_evt), 2)
    cl_cell = centre.ravel().astype(np.int64)
    gains = rng.normal(1.0, 0.05, ecl.N_CRYSTALS)
    win = C.window_energies(events, cl_evt, cl_cell, gains)
    ref = np.zeros((len(cl_evt), C.N_SLOTS))
    off = np.concatenate([[0], np.cumsum(ndig)])
    for k, (e, c) in enumerate(zip(cl_evt, cl_cell, strict=True)):
        row = C.NEIGHBOURS_5X5[c - 1]
        for d in range(off[e], off[e + 1]):
            slot = np.flatnonzero(row == cells[d])
            if slot.size:
                ref[k, slot[0]] += np.float64(energy[d]) * gains[cells[d] - 1]
    assert win.tobytes() == ref.tobytes()
    assert np.count_nonzero(win) > 0.2 * win.size
    # the gamma-gamma / mu-mu energy fractions
    frac = P._fractions(cl_cell, win).view()
    total = win.sum(axis=1)
    good = total > 0
    plain = np.zeros((ecl.N_CRYSTALS, C.N_SLOTS))
    np.add.at(plain, cl_cell[good] - 1, win[good] / total[good, None])
    assert frac.tobytes() == np.asfortranarray(plain).tobytes()
    # the window totals handed over by the collector: the same bits
    assert P._fractions(cl_cell, win, win.sum(axis=1)).view().tobytes() == frac.tobytes()
    # the Bhabha 5x5 normal equations
    p = rng.uniform(3.0, 7.0, len(cl_evt))
    q, r = np.zeros((ecl.N_CRYSTALS, C.N_PAIRS)), np.zeros((ecl.N_CRYSTALS, C.N_SLOTS))
    n, syy = np.zeros(ecl.N_CRYSTALS), np.zeros(ecl.N_CRYSTALS)
    B._fill_normal(q, r, n, syy, cl_cell, win, p)
    w = 1.0 / (p * p)
    q_ref, r_ref = np.zeros_like(q), np.zeros_like(r)
    np.add.at(q_ref, cl_cell - 1, w[:, None] * win[:, C.PAIR_A] * win[:, C.PAIR_B])
    np.add.at(r_ref, cl_cell - 1, w[:, None] * win * p[:, None])
    assert q.tobytes() == q_ref.tobytes()
    assert r.tobytes() == r_ref.tobytes()
    assert n.tobytes() == np.bincount(cl_cell - 1, minlength=ecl.N_CRYSTALS).astype(float).tobytes()


def _plain_window_energies(events, cl_evt, cl_cell, gains):  # type: ignore[no-untyped-def]
    """The former window kernel's sums, element by element: each digit of the cluster's event
    added to the first slot of its window holding its cell, in digit order."""
    import awkward as ak

    cells = ak.to_numpy(ak.flatten(events["ECLCalDigits_m_CellId"]))
    energy = ak.to_numpy(ak.flatten(events["ECLCalDigits_m_Energy"]))
    off = C.offsets_of(ak.num(events["ECLCalDigits_m_CellId"]))
    ref = np.zeros((len(cl_evt), C.N_SLOTS))
    for k, (e, c) in enumerate(zip(cl_evt, cl_cell, strict=True)):
        row = C.NEIGHBOURS_5X5[c - 1]
        for d in range(off[e], off[e + 1]):
            slot = np.flatnonzero((row == cells[d]) & (row > 0))
            if slot.size:
                ref[k, slot[0]] += np.float64(energy[d]) * gains[cells[d] - 1]
    return ref


def test_window_energies_of_clusters_in_any_order_and_stray_digits() -> None:
    """The window kernel (one scratch array per event) sums what the former per-cluster search
    summed, bit for bit: clusters of an event not consecutive or out of event order, several
    clusters sharing cells, a cell hit twice, digits of cell ids outside the calorimeter."""
    import awkward as ak

    rng = np.random.default_rng(21)
    n_evt = 400
    ndig = rng.integers(0, 40, n_evt)
    centre = rng.integers(1, ecl.N_CRYSTALS + 1, n_evt)
    near = C.NEIGHBOURS_5X5[np.repeat(centre, ndig) - 1, rng.integers(0, 25, ndig.sum())]
    cells = np.where(near > 0, near, 5).astype(np.int16)
    stray = rng.random(ndig.sum()) < 0.1
    cells[stray] = rng.choice(np.array([0, -3, ecl.N_CRYSTALS + 1, 30000], np.int16), stray.sum())
    energy = rng.exponential(0.05, ndig.sum()).astype(np.float32)
    events = ak.Array(
        {
            "ECLCalDigits_m_CellId": ak.unflatten(cells, ndig),
            "ECLCalDigits_m_Energy": ak.unflatten(energy, ndig),
        }
    )
    # three clusters per event near its centre, shuffled: an event's clusters apart
    cl_evt = rng.permutation(np.repeat(np.arange(n_evt), 3))
    shift = rng.integers(0, 25, len(cl_evt))
    cl_cell = C.NEIGHBOURS_5X5[centre[cl_evt] - 1, shift]
    cl_cell = np.where(cl_cell > 0, cl_cell, centre[cl_evt]).astype(np.int64)
    gains = rng.normal(1.0, 0.05, ecl.N_CRYSTALS)
    win = C.window_energies(events, cl_evt, cl_cell, gains)
    ref = _plain_window_energies(events, cl_evt, cl_cell, gains)
    assert win.tobytes() == ref.tobytes()
    assert np.count_nonzero(win) > 0.1 * win.size
    # sorted clusters (as the collectors give them): the same rows
    order = np.argsort(cl_evt, kind="stable")
    sorted_win = C.window_energies(events, cl_evt[order], cl_cell[order], gains)
    assert sorted_win.tobytes() == ref[order].tobytes()


def _former_leading_photons(cl):  # type: ignore[no-untyped-def]
    """The former selection of the gamma-gamma collector (sorts of all neutral clusters)."""
    neutral = (
        (cl["isTrack"] == 0)
        & (cl["energy"] > 1.0)
        & (cl["maxCellId"] >= 1)
        & (cl["maxCellId"] <= ecl.N_CRYSTALS)
    )
    idx = np.flatnonzero(neutral)
    evt = cl["evt"][idx]
    order = np.lexsort((-cl["energy"][idx], evt))
    idx, evt = idx[order], evt[order]
    first = np.searchsorted(evt, evt)
    rank = np.arange(len(evt)) - first
    count = np.bincount(evt, minlength=int(evt.max(initial=-1)) + 1)[evt]
    return idx[(rank < 2) & (count >= 2)]


def test_leading_photons_as_the_former_sort() -> None:
    """The per-event pass picks the clusters the former sort picked, in its order: equal
    energies (the first cluster first), charged, NaN, at 1 GeV exactly, cells out of range."""
    import awkward as ak

    rng = np.random.default_rng(5)
    n_evt = 3000
    num = rng.integers(0, 7, n_evt)
    total = int(num.sum())
    energy = (rng.integers(0, 12, total) * 0.25).astype(np.float32)  # many ties, 1.0 exactly
    energy[rng.random(total) < 0.03] = np.nan
    cell = rng.integers(-2, ecl.N_CRYSTALS + 3, total).astype(np.int16)
    is_track = (rng.random(total) < 0.3).astype(np.int8)
    events = ak.Array(
        {
            f"ECLClusters_m_{k}": ak.unflatten(v, num)
            for k, v in {
                "energy": energy,
                "theta": np.zeros(total, np.float32),
                "phi": np.zeros(total, np.float32),
                "maxCellId": cell,
                "isTrack": is_track,
                "trackIndex": np.full(total, -1, np.int16),
            }.items()
        }
    )
    cl = C.flat_clusters(events)
    got = P._leading_photons(cl)
    ref = _former_leading_photons(cl)
    assert got.dtype == np.int64
    assert np.array_equal(got, ref)
    assert len(ref) > 500


def _former_window_energies(events, cl_evt, cl_cell, gains):  # type: ignore[no-untyped-def]
    """:func:`_plain_window_energies` vectorised over (cluster, digit of its event) pairs, in
    cluster then digit order (``np.add.at`` adds in that order: the same bits)."""
    import awkward as ak

    cells = ak.to_numpy(ak.flatten(events["ECLCalDigits_m_CellId"])).astype(np.int64)
    energy = ak.to_numpy(ak.flatten(events["ECLCalDigits_m_Energy"]))
    off = C.offsets_of(ak.num(events["ECLCalDigits_m_CellId"]))
    n_dig = off[cl_evt + 1] - off[cl_evt]
    k = np.repeat(np.arange(len(cl_evt)), n_dig)
    d = off[cl_evt][k] + np.arange(n_dig.sum()) - np.repeat(np.cumsum(n_dig) - n_dig, n_dig)
    rows = C.NEIGHBOURS_5X5[cl_cell[k] - 1]
    match = (rows == cells[d, None]) & (rows > 0)
    hit = match.any(axis=1)
    ref = np.zeros((len(cl_evt), C.N_SLOTS))
    g = np.asarray(gains)[np.clip(cells[d[hit]], 1, ecl.N_CRYSTALS) - 1]
    np.add.at(ref, (k[hit], match[hit].argmax(axis=1)), np.float64(1.0) * energy[d[hit]] * g)
    return ref


def _former_collect(collector, events):  # type: ignore[no-untyped-def]
    """What the ECL collectors filled before their kernels changed: the former window
    energies and leading photons, the time collector's widened copies of every digit."""
    import awkward as ak

    if isinstance(collector, T.ECLTimeCollector):
        offsets = collector._offsets(C.run_of(events))
        cl = C.flat_clusters(events)
        evt, energy = cl["evt"], cl["energy"]
        cell, ti = cl["maxCellId"].astype(np.int64), cl["trackIndex"].astype(np.int64)
        p, toff = C.track_momentum(events)
        has_t0 = ak.to_numpy(events["EventT0_m_hasEventT0"])[evt] == 1
        sel = (cl["isTrack"] == 1) & (ti >= 0) & (ti < np.diff(toff)[evt]) & has_t0
        sel &= (cell >= 1) & (cell <= ecl.N_CRYSTALS)
        idx = np.flatnonzero(sel)
        pm = p[toff[evt[idx]] + ti[idx]]
        idx = idx[(pm > T._E_MIN_P) & (energy[idx] / np.maximum(pm, 1e-9) > T._EOP_MIN)]
        dig_cell = ak.to_numpy(ak.flatten(events["ECLCalDigits_m_CellId"])).astype(np.int64)
        dig_time = ak.to_numpy(ak.flatten(events["ECLCalDigits_m_Time"])).astype(np.float64)
        dig_off = C.offsets_of(ak.num(events["ECLCalDigits_m_CellId"]))
        d = T._centre_digit(dig_off, dig_cell, evt[idx], cell[idx])
        idx, d = idx[d >= 0], d[d >= 0]
        c = cell[idx]
        t0 = ak.to_numpy(events["EventT0_m_eventT0"]).astype(np.float64)[evt[idx]]
        resid = dig_time[d] - t0 - T.TOF_NS[c - 1] - offsets[c - 1]
        axis = hist.axis.Regular(*T.RESIDUAL_BINS, name="residual")
        h_cell = hist.Hist(C.cell_axis(), axis, storage=hist.storage.Double())
        h_crate = hist.Hist(C.crate_axis(), axis, storage=hist.storage.Double())
        h_cell.fill(c, resid)
        h_crate.fill(C.CRATE[c - 1], resid)
        return {"time_crystal": h_cell, "time_crate": h_crate}
    gains = collector._gains(C.run_of(events))
    cl = C.flat_clusters(events)
    cellall = cl["maxCellId"].astype(np.int64)
    if collector.mode == "mumu":
        idx, p = C.track_matched(events, cl)
        idx = idx[(p > P._MU_MIN_P) & (cl["energy"][idx] < P._MU_MAX_E)]
        win = _former_window_energies(events, cl["evt"][idx], cellall[idx], gains)
        h = hist.Hist(C.cell_axis(), hist.axis.Regular(*P.MUMU_BINS, name="energy"))
        h.fill(cellall[idx], win.sum(axis=1))
        return {"mumu_energy": h, "mumu_frac": P._fractions(cellall[idx], win)}
    idx = _former_leading_photons(cl)
    win = _former_window_energies(events, cl["evt"][idx], cellall[idx], gains)
    expected = P.expected_photon_energy(cl["theta"][idx], cl["phi"][idx])
    h = hist.Hist(C.cell_axis(), hist.axis.Regular(*P.GG_BINS, name="ratio"))
    h.fill(cellall[idx], win.sum(axis=1) / expected)
    return {"gg_ratio": h, "gg_frac": P._fractions(cellall[idx], win)}


def test_collectors_fill_what_the_former_collect_filled() -> None:
    """The gamma-gamma, mu-mu and time collectors, with constants applied, fill bit for bit
    what their former event loops filled, on the sample bucket's files of runs 1-4."""
    from b2calib.io import open_skim

    rng = np.random.default_rng(2)
    runs = ((12, r, 0) for r in range(1, 12))
    gains = rng.normal(1.0, 0.05, ecl.N_CRYSTALS)
    index = tuple(runs)
    time_offsets = (rng.normal(0, 2, ecl.N_CRYSTALS),), (rng.normal(0, 3, ecl.N_CRATES),)
    collectors = {
        "hlt_gamma_gamma": P.ECLPeakCollector("gamma_gamma", index, (gains,)),
        "hlt_mumu_2trk": P.ECLPeakCollector("mumu", index, (gains,)),
        "hlt_bhabha": T.ECLTimeCollector(index, *time_offsets),
    }
    filled, files = 0, 0
    for path in sorted(SAMPLE.glob("e0012/r0000[1-4]/cdst_hlt_*.root")):
        skim = path.name.split("_e0012")[0].removeprefix("cdst_")
        if skim not in collectors:
            continue
        files += 1
        collector = collectors[skim]
        f = open_skim(path)
        events = f.arrays(list(collector.branches), 0, f.num_entries)
        new, old = collector.collect(events), _former_collect(collector, events)
        assert set(new) == set(old)
        for name, h in new.items():
            assert h.view().tobytes() == old[name].view().tobytes(), (path.name, name)
            filled += int(h.values().sum() > 0)
    assert files == 12
    assert filled == 2 * files


def test_peak_system_recovers_constants() -> None:
    """Noise-free peaks generated from the energy sharing give the constants back exactly."""
    rng = np.random.default_rng(7)
    truth = rng.normal(1.0, 0.04, ecl.N_CRYSTALS)
    applied = np.ones(ecl.N_CRYSTALS)
    share = np.exp(-np.abs(np.subtract.outer(np.arange(5), 2)) / 0.4)
    frac = np.tile(np.outer(share, share).ravel(), (ecl.N_CRYSTALS, 1))
    frac[C.NEIGHBOURS_5X5 == 0] = 0.0
    frac /= frac.sum(axis=1, keepdims=True)
    ok = (ecl.ring_of(CELLS) >= 10) & (ecl.ring_of(CELLS) < 60)
    x = applied / truth
    nbr = C.NEIGHBOURS_5X5
    xn = np.where(nbr > 0, x[np.maximum(nbr, 1) - 1], 1.0)
    xn = np.where(ok[np.maximum(nbr, 1) - 1] & (nbr > 0), xn, 1.0)
    peak = 0.95 * (frac * xn).sum(axis=1)
    value, error, solved = P.solve_peaks(
        peak, np.full(ecl.N_CRYSTALS, 1e-3), frac, applied, ok, expected=0.95, expected_error=0.0
    )
    assert np.array_equal(solved, ok)
    assert np.allclose(value[ok], truth[ok], rtol=1e-9)
    # the error of a crystal exceeds its peak's alone: its neighbours share its energy
    assert np.all(error[ok] > 1e-3 / 0.95 * value[ok])


def test_merge_is_inverse_variance_with_provenance() -> None:
    n = ecl.N_CRYSTALS
    a = (np.full(n, 1.0), np.full(n, 0.02), np.full(n, OK, np.int8))
    b = (np.full(n, 1.1), np.full(n, 0.01), np.full(n, OK, np.int8))
    c = (np.full(n, np.nan), np.full(n, np.nan), np.full(n, NED, np.int8))
    b[2][:10] = NED
    c[2][5] = ChannelStatus.FAILED
    a[2][:10] = NED
    value, error, status, mask = M.merge_methods({"ee5x5": a, "gamma_gamma": b, "mumu": c})
    assert value[20] == pytest.approx((1.0 / 0.02**2 + 1.1 / 0.01**2) / (1 / 0.02**2 + 1 / 0.01**2))
    assert error[20] == pytest.approx(1.0 / np.hypot(1 / 0.02, 1 / 0.01))
    assert mask[20] == 3
    assert status[5] == ChannelStatus.FAILED
    assert status[6] == NED
    assert np.isnan(value[:10]).all()


def test_crate_crystal_split_convention() -> None:
    rng = np.random.default_rng(8)
    crystal = rng.normal(0, 1.5, ecl.N_CRYSTALS)
    crate = rng.normal(0, 4.0, ecl.N_CRATES)
    total = crystal + crate[C.CRATE - 1]
    ok = rng.random(ecl.N_CRYSTALS) > 0.3
    cx, cxe, ck, cke, n = T.split_offsets(total, np.full(ecl.N_CRYSTALS, 0.5), ok)
    tx, tk = T.reexpress(crystal, crate, ok)
    assert np.allclose(cx[ok], tx[ok])
    assert np.allclose(ck, tk)
    assert np.allclose(cx[ok] + ck[C.CRATE - 1][ok], total[ok])
    assert np.all(np.isnan(cx[~ok]))
    assert np.allclose(cke, 0.5 / np.sqrt(n))
    assert np.all(cxe[ok] < 0.5)  # the crystal's share of its crate mean is subtracted
    assert np.all(cxe[ok] > 0)


def test_crystal_alone_in_its_crate_is_left_to_the_crate() -> None:
    """Issue 14: the only measured crystal of a crate came out with offset 0 and error exactly
    0. Its whole measurement is the crate's (with its error); its own offset is the
    constraint's 0, with no uncertainty (the algorithm flags it NOT_ENOUGH_DATA)."""
    rng = np.random.default_rng(14)
    total = rng.normal(0, 4.0, ecl.N_CRYSTALS)
    err = rng.uniform(0.2, 0.6, ecl.N_CRYSTALS)
    ok = np.ones(ecl.N_CRYSTALS, bool)
    ok[C.CRATE == 45] = False
    ok[7793] = True  # cell 7794, alone in crate 45
    crate3 = np.flatnonzero(C.CRATE == 3)  # and one in the barrel's crate 3
    ok[crate3] = False
    ok[crate3[10]] = True
    other = int(crate3[10]) + 1
    cx, cxe, ck, cke, n = T.split_offsets(total, err, ok)
    assert C.CRATE[7793] == 45
    assert n[44] == n[2] == 1
    for cell, crate in ((7794, 45), (other, 3)):
        assert cx[cell - 1] == 0.0
        assert np.isnan(cxe[cell - 1])
        assert ck[crate - 1] == total[cell - 1]
        assert cke[crate - 1] == err[cell - 1]
    assert np.all(cxe[ok & (n[C.CRATE - 1] > 1)] > 0)
    # the measured crystals of a payload are those of finite value: the alone one included
    value = np.where(ok, cx, np.nan)
    np.testing.assert_array_equal(T.measured_crystals(value), ok)


def test_find_steps() -> None:
    def steps(rows: list[tuple[tuple[int, int], np.ndarray, np.ndarray]]) -> list[tuple[int, int]]:
        runs, values, errors = zip(*rows, strict=True)
        test = weighted_mean_split(values, errors, min_step=0.02, min_significance=5.0)
        return find_steps(runs, test)

    rng = np.random.default_rng(9)
    runs = [(12, r) for r in range(1, 12)]
    values = rng.normal(0.94, 0.002, (11, 52))
    values[6:, 16] += 0.04
    rows = [(r, values[i], np.full(52, 0.002)) for i, r in enumerate(runs)]
    assert steps(rows) == [(12, 7)]
    rows = [(r, values[0] + rng.normal(0, 0.002, 52), np.full(52, 0.002)) for r in runs]
    assert steps(rows) == []


def test_expected_photon_energy_is_two_body_kinematics() -> None:
    rng = np.random.default_rng(10)
    n = 1000
    cos = rng.uniform(-0.8, 0.8, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    beam = Beam(P.ECMS_4S, 0.0)
    half = P.ECMS_4S / 2
    sin = np.sqrt(1 - cos**2)
    p1 = np.stack(
        [half * sin * np.cos(phi), half * sin * np.sin(phi), half * cos, np.full(n, half)], 1
    )
    p2 = p1 * np.array([-1, -1, -1, 1])
    for p in (boost(p1, beam.boost), boost(p2, beam.boost)):
        theta = np.arccos(p[:, 2] / p[:, 3])
        expected = P.expected_photon_energy(theta, np.arctan2(p[:, 1], p[:, 0]))
        assert np.allclose(expected, p[:, 3], rtol=1e-9)


# ------------------------------------------------------------------------------- closure
def _simulate(out: Path, **kw: object) -> tuple[SimConfig, RunRegistry]:
    """Physics runs of the ECL only, by default with the three calibration processes."""
    base: dict[str, object] = dict(
        processes=["bhabha", "gamma_gamma", "mumu"],
        skims=["hlt_bhabha", "hlt_gamma_gamma", "hlt_mumu_2trk"],
        detectors=["ECL"],
        run_types={"physics": 1.0, "cosmic": 0.0, "beam": 0.0, "debug": 0.0},
        continuum_fraction=0.0,
    )
    cfg = SimConfig(**(base | kw))  # type: ignore[arg-type]
    simulate(cfg, out, jobs=2)
    return cfg, RunRegistry.load(out / "runs.json")


def _fractions(bhabha: float, gg: float, mumu: float) -> dict[str, float]:
    return {"bhabha": bhabha, "gamma_gamma": gg, "mumu": mumu, "hadron": 0.0, "tautau": 0.0}


@pytest.fixture(scope="module")
def bhabha_sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimConfig, RunRegistry]:
    out = tmp_path_factory.mktemp("ecl_bhabha")
    cfg, reg = _simulate(
        out,
        n_runs=2,
        events_per_run=150_000.0,
        process_fractions=_fractions(0.9, 0.05, 0.05),
        intervention_run=2,
        seed=11,
    )
    return out, cfg, reg


@pytest.fixture(scope="module")
def photon_sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimConfig, RunRegistry]:
    out = tmp_path_factory.mktemp("ecl_photons")
    cfg, reg = _simulate(
        out,
        n_runs=1,
        events_per_run=800_000.0,
        process_fractions=_fractions(0.1, 0.45, 0.45),
        seed=12,
    )
    return out, cfg, reg


def _truth(cfg: SimConfig, reg: RunRegistry, run: int):  # type: ignore[no-untyped-def]
    return conditions_for_run(cfg, reg.get(cfg.exp, run))


@pytest.mark.slow
def test_energy_closure_bhabha_and_intervention_split(
    bhabha_sample: tuple[Path, SimConfig, RunRegistry], tmp_path: Path
) -> None:
    data, cfg, reg = bhabha_sample
    reports, db = calibrate("ecl-energy", data, tmp_path / "db.sqlite")
    report = reports["ecl-energy"]
    assert report.status == "OK", report.message
    assert report.converged
    for name in ("ECLCrystalEnergy5x5", "ECLCrystalEnergy"):
        entries = staged(db, "staging", name)
        assert [(e.iov.first_run, e.iov.final_run) for e, _ in entries] == [(1, 1), (2, 2)]
    merged = staged(db, "staging", "ECLCrystalEnergy")
    ring = ecl.ring_of(CELLS)
    for (entry, payload), (_, ee) in zip(
        merged, staged(db, "staging", "ECLCrystalEnergy5x5"), strict=True
    ):
        truth = _truth(cfg, reg, entry.iov.first_run).ecl_energy_const
        ok = ee.status == OK
        assert ok.sum() > 3000
        assert_closure(
            ee.value("value")[ok], ee.errors["value"][ok], truth[ok], f"ee5x5 run {entry.iov}"
        )
        mok = payload.status == OK
        assert_closure(
            payload.value("value")[mok],
            payload.errors["value"][mok],
            truth[mok],
            f"merged {entry.iov}",
        )
        # no Bhabha reaches the innermost endcap rings: flagged, never a number
        starved = (ring < 8) | (ring > 62)
        assert np.all(payload.status[starved] == NED)
        assert np.all(np.isnan(payload.value("value")[starved]))
        assert np.all(payload.value("methods")[mok] & 1)
    # the intervention: crate 17's raw response +4 % -> its constants / 1.04
    first, second = merged[0][1], merged[1][1]
    c17 = (C.CRATE == 17) & (first.status == OK) & (second.status == OK)
    ratio = second.value("value")[c17] / first.value("value")[c17]
    assert np.median(ratio) == pytest.approx(1 / 1.04, abs=0.005)
    others = (C.CRATE != 17) & (first.status == OK) & (second.status == OK)
    assert np.median(second.value("value")[others] / first.value("value")[others]) == pytest.approx(
        1.0, abs=0.002
    )


@pytest.mark.slow
def test_time_closure_and_intervention_split(
    bhabha_sample: tuple[Path, SimConfig, RunRegistry], tmp_path: Path
) -> None:
    data, cfg, reg = bhabha_sample
    reports, db = calibrate("ecl-time", data, tmp_path / "db.sqlite")
    report = reports["ecl-time"]
    assert report.status == "OK", report.message
    assert report.converged
    assert report.iterations >= 2
    crystals = staged(db, "staging", "ECLCrystalTimeOffset")
    crates = staged(db, "staging", "ECLCrateTimeOffset")
    assert [(e.iov.first_run, e.iov.final_run) for e, _ in crates] == [(1, 1), (2, 2)]
    results = []
    for (entry, cx), (_, ck) in zip(crystals, crates, strict=True):
        truth = _truth(cfg, reg, entry.iov.first_run)
        ok = ok_channels(cx, f"crystal t0 {entry.iov}")
        assert ok.sum() > 1500
        measured = T.measured_crystals(cx.value("value"))
        tx, _ = T.reexpress(truth.ecl_crystal_t0, truth.ecl_crate_t0, measured)
        assert_closure(
            cx.value("value")[ok], cx.errors["value"][ok], tx[ok], f"crystal t0 {entry.iov}"
        )
        kok = (ck.status == OK) & (ck.value("crate_level") == 0)
        assert kok.sum() >= 40
        # the total per crystal needs no convention
        total = cx.value("value") + ck.value("value")[C.CRATE - 1]
        true_total = truth.ecl_crystal_t0 + truth.ecl_crate_t0[C.CRATE - 1]
        k = C.CRATE - 1
        total_err = np.hypot(cx.errors["value"], ck.errors["value"][k])  # upper bound: correlated
        d = (total - true_total)[ok]
        assert abs(np.mean(d / total_err[ok])) < 0.1
        starved = (ecl.ring_of(CELLS) < 8) | (ecl.ring_of(CELLS) > 62)
        assert np.all(cx.status[starved] == NED)
        results.append(ck.value("value")[16])
    # the crate pulls: test_time_crate_closure_in_blocks (52 crates per payload are too few)
    truth1, truth2 = _truth(cfg, reg, 1), _truth(cfg, reg, 2)
    assert truth2.ecl_crate_t0[16] - truth1.ecl_crate_t0[16] == pytest.approx(3.0, abs=1e-3)
    assert results[1] - results[0] == pytest.approx(3.0, abs=0.3)


#: Crate closure sample: Bhabha only, one payload per run (``payload_boundaries``).
CRATE_BLOCKS = 24


@pytest.fixture(scope="module")
def crate_blocks_sample(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, SimConfig, RunRegistry]:
    out = tmp_path_factory.mktemp("ecl_crate_blocks")
    cfg, reg = _simulate(
        out,
        processes=["bhabha"],
        skims=["hlt_bhabha"],
        n_runs=CRATE_BLOCKS,
        events_per_run=30_000.0,
        process_fractions=_fractions(1.0, 0.0, 0.0),
        seed=13,
    )
    return out, cfg, reg


@pytest.mark.slow
def test_time_crate_closure_in_blocks(
    crate_blocks_sample: tuple[Path, SimConfig, RunRegistry], tmp_path: Path
) -> None:
    """Crate offsets over many independent payloads (one per run, the default config
    otherwise): the pull standard over ~900 crate values (crates with measured crystals).

    Both electrons of a Bhabha event share its T0 error (0.8 ns), which correlates the crates
    they hit within a payload: the variance of the sum of a payload's crate pulls is about 1.5
    times that of independent crates (measured over 52 payloads of 11 simulated samples,
    1.52 +- 0.30). Payloads (runs) share no events, so over N crate values the pull mean
    scatters by sqrt(1.5 / N), at most 0.042 at N >= 850: 0.1 is 2.4 of its standard
    deviations or more.

    The short runs also leave crates with a single measured crystal (issue 14: it came out OK
    with value 0 and error 0): it is NOT_ENOUGH_DATA with the constraint's 0 and no error, its
    measurement in the crate offset, whose pulls are among those above.
    """
    data, cfg, reg = crate_blocks_sample
    bounds = [[cfg.exp, r] for r in range(2, CRATE_BLOCKS + 1)]
    config = {"ecl-time": {"payload_boundaries": bounds}}
    reports, db = calibrate("ecl-time", data, tmp_path / "db.sqlite", config=config)
    report = reports["ecl-time"]
    assert report.status == "OK", report.message
    assert report.converged
    crystals = staged(db, "staging", "ECLCrystalTimeOffset")
    crates = staged(db, "staging", "ECLCrateTimeOffset")
    assert len(crates) == CRATE_BLOCKS
    fit, err, true = [], [], []
    level_fit: list[float] = []
    level_err: list[float] = []
    level_true: list[float] = []
    n_alone = 0
    for (entry, cx), (_, ck) in zip(crystals, crates, strict=True):
        truth = _truth(cfg, reg, entry.iov.first_run)
        ok_channels(cx, f"crystal t0 {entry.iov}")
        measured = T.measured_crystals(cx.value("value"))
        n_ok = np.bincount(C.CRATE - 1, weights=measured, minlength=ecl.N_CRATES)
        # the truth in the fit's convention, over exactly the crystals the fit averaged
        _, tk = T.reexpress(truth.ecl_crystal_t0, truth.ecl_crate_t0, measured)
        alone = measured & (cx.status != OK)
        n_alone += int(alone.sum())
        assert np.all(cx.status[alone] == NED)
        assert np.all(cx.value("value")[alone] == 0.0)
        assert np.all(np.isnan(cx.errors["value"][alone]))
        assert np.all(n_ok[C.CRATE[alone] - 1] == 1)
        kok = ck.status == OK
        level = ck.value("crate_level") == 1
        assert np.all(n_ok[kok & ~level] > 0)
        assert np.all(n_ok[level] == 0)
        sel = kok & ~level
        fit.append(ck.value("value")[sel])
        err.append(ck.errors["value"][sel])
        true.append(tk[sel])
        # crate-level fallback: the crate offset plus the mean of its crystals' offsets
        mean_crystal = np.bincount(C.CRATE - 1, weights=truth.ecl_crystal_t0) / np.bincount(
            C.CRATE - 1
        )
        lv = kok & level
        level_fit.extend(ck.value("value")[lv])
        level_err.extend(ck.errors["value"][lv])
        level_true.extend(truth.ecl_crate_t0[lv] + mean_crystal[lv])
    n = sum(len(f) for f in fit)
    assert n >= 850, n
    print(f"crystals alone in their crate: {n_alone}")
    assert n_alone >= 20, n_alone
    assert_closure(np.concatenate(fit), np.concatenate(err), np.concatenate(true), "crate t0")
    # the short runs leave crates without a measured crystal: the crate-level fit follows the
    # true crate offsets (spread 4 ns) to a fraction of a nanosecond
    d = np.asarray(level_fit) - np.asarray(level_true)
    rms = float(np.sqrt(np.mean(d**2)))
    print(f"crate-level crates: {len(d)}, mean {d.mean():+.3f} ns, rms {rms:.3f} ns")
    assert len(d) >= 200
    assert rms < 0.5
    # their uncertainties hold the sampling of the crate's crystals by its few hits: the pull
    # width is the standard's; the mean over these ~300 correlated fallbacks scatters by ~0.08
    p = pulls(level_fit, level_err, level_true)
    print(f"crate-level pulls: {p}")
    assert 0.85 <= p.width <= 1.15, p
    assert abs(p.mean) < 0.25, p


#: Seeds of the crystal time closure (issue 14: three seeds per calibration).
CRYSTAL_SEEDS = (13, 14, 15)


@pytest.mark.slow
@pytest.mark.parametrize("seed", CRYSTAL_SEEDS)
def test_time_crystal_closure_over_seeds(seed: int, tmp_path: Path) -> None:
    """The crystal offsets meet the pull standard on each of three seeds: one run of ~80k
    Bhabha events, one payload of 2000-2900 crystals with their 20 entries or more, most with
    fewer than 45 (a Gaussian fit of so few entries quotes its error a few % small: widths
    1.03-1.05; at 60k events, 1400-2100 crystals, mostly at 20-30 entries, 1.04-1.08). A
    crystal alone in its crate is left to the crate (NOT_ENOUGH_DATA, value 0, no error)."""
    cfg, reg = _simulate(
        tmp_path / "data",
        processes=["bhabha"],
        skims=["hlt_bhabha"],
        n_runs=1,
        events_per_run=80_000.0,
        process_fractions=_fractions(1.0, 0.0, 0.0),
        seed=seed,
    )
    reports, db = calibrate("ecl-time", tmp_path / "data", tmp_path / "db.sqlite")
    report = reports["ecl-time"]
    assert report.status == "OK", report.message
    assert report.converged
    ((entry, cx),) = staged(db, "staging", T.CRYSTAL_PAYLOAD)
    ok = ok_channels(cx, f"crystal t0 seed {seed}")
    assert ok.sum() > 1800
    measured = T.measured_crystals(cx.value("value"))
    alone = measured & ~ok
    assert np.all(cx.status[alone] == NED)
    assert np.all(cx.value("value")[alone] == 0.0)
    assert np.all(np.isnan(cx.errors["value"][alone]))
    truth = _truth(cfg, reg, entry.iov.first_run)
    tx, _ = T.reexpress(truth.ecl_crystal_t0, truth.ecl_crate_t0, measured)
    assert_closure(cx.value("value")[ok], cx.errors["value"][ok], tx[ok], f"crystal t0 seed {seed}")


@pytest.mark.slow
def test_energy_closure_peak_methods_and_merge(
    photon_sample: tuple[Path, SimConfig, RunRegistry], tmp_path: Path
) -> None:
    data, cfg, reg = photon_sample
    # basf2 asks for 150 entries per crystal; a test sample that size would take minutes
    config = {"ecl-energy": {"gg_min_entries": 60, "mumu_min_entries": 40}}
    # the beam calibration's collision energy (here the simulated one), as prompt processing
    # would have it in its input tags
    db = ConditionsDB(tmp_path / "db.sqlite", author="closure-test")
    db.create_tag("beam")
    [beam] = [p for p in truth_payloads(_truth(cfg, reg, 1)) if p.name == "CollisionInvariantMass"]
    db.upload_and_add("beam", [(beam, IoV(cfg.exp, 1, cfg.exp, 1))])
    db.close()
    reports, db = calibrate(
        "ecl-energy", data, tmp_path / "db.sqlite", config=config, input_tags=["beam"]
    )
    report = reports["ecl-energy"]
    assert report.status == "OK", report.message
    truth = _truth(cfg, reg, 1).ecl_energy_const
    pulls = {}
    for name, min_ok in (
        ("ECLCrystalEnergyGammaGamma", 1000),
        ("ECLCrystalEnergyMuMu", 2000),
        ("ECLCrystalEnergy", 6000),
    ):
        [(_entry, payload)] = staged(db, "staging", name)
        ok = payload.status == OK
        assert ok.sum() > min_ok, (name, ok.sum())
        pulls[name] = assert_closure(
            payload.value("value")[ok], payload.errors["value"][ok], truth[ok], name
        )
        assert np.all(np.isnan(payload.value("value")[~ok]))
    [(_, merged)] = staged(db, "staging", "ECLCrystalEnergy")
    methods = merged.value("methods")
    assert np.any(methods == 2) or np.any(methods == 6)  # crystals set by the peak methods
    assert np.any(methods & 4)
    # the forward-most rings see no gamma-gamma, mu-mu or Bhabha: flagged
    assert np.all(merged.status[ecl.ring_of(CELLS) < 3] == NED)


#: Skim fractions of a real bucket (issue 14): the Bhabha skim by far the largest, gamma-gamma
#: and mu-mu 5 % each. The peak methods need >= 150 photons or muons per crystal, ~2 fb^-1 of
#: unprescaled mu-mu (bench/bench_ecl_realistic.py); a test-sized sample (150k events: 7.5k
#: mu-mu, what 0.011 fb^-1 gives) has a few per crystal: the peaks are NOT_ENOUGH_DATA and the
#: merge is the 5x5 alone.
REALISTIC_SEEDS = (31, 32, 33)


@pytest.fixture(scope="module", params=REALISTIC_SEEDS, ids=lambda s: f"seed{s}")
def realistic_sample(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, SimConfig, RunRegistry]:
    out = tmp_path_factory.mktemp(f"ecl_realistic_{request.param}")
    cfg, reg = _simulate(
        out,
        n_runs=1,
        events_per_run=150_000.0,
        process_fractions=_fractions(0.9, 0.05, 0.05),
        seed=request.param,
    )
    return out, cfg, reg


@pytest.mark.slow
def test_energy_realistic_fractions_merge_is_what_was_measured(
    realistic_sample: tuple[Path, SimConfig, RunRegistry], tmp_path: Path
) -> None:
    """Issue 14: on a sample with a real bucket's skim fractions each method calibrates the
    crystals it has the data for; a peak method's crystals below its minimum entries are
    NOT_ENOUGH_DATA, the merge of a crystal is the 5x5 alone where the peaks have no constant,
    its ``methods`` records which methods set it, and the merged constants close."""
    data, cfg, reg = realistic_sample
    reports, db = calibrate("ecl-energy", data, tmp_path / "db.sqlite")
    report = reports["ecl-energy"]
    assert report.status == "OK", report.message
    truth = _truth(cfg, reg, 1).ecl_energy_const
    payloads = {
        name: staged(db, "staging", name)[0][1]
        for name in (B.EE5X5_PAYLOAD, P.GG_PAYLOAD, P.MUMU_PAYLOAD, M.MERGED_PAYLOAD)
    }
    [diag] = final_diagnostics(db, report)
    cfg_default = E.DEFAULT_CONFIG
    peak_ok = np.zeros(ecl.N_CRYSTALS, bool)
    for name, key in ((P.GG_PAYLOAD, "gg"), (P.MUMU_PAYLOAD, "mumu")):
        payload, fits = payloads[name], diag.tables[key]
        starved = fits["entries"] < cfg_default[f"{key}_min_entries"]
        print(f"{key}: entries per crystal max {fits['entries'].max():.0f}")
        assert np.all(payload.status[starved] == NED)
        assert np.all(np.isnan(payload.value("value")[starved]))
        peak_ok |= payload.status == OK
        # at this size no crystal has the entries (their closure: bench/RESULTS_ecl_realistic.md)
        assert starved.all()
    merged, ee = payloads[M.MERGED_PAYLOAD], payloads[B.EE5X5_PAYLOAD]
    methods = merged.value("methods")
    mok, eok = merged.status == OK, ee.status == OK
    # where no peak method has a constant, the merge is the 5x5's, crystal by crystal
    alone = ~peak_ok
    np.testing.assert_array_equal(merged.status[alone], ee.status[alone])
    np.testing.assert_allclose(merged.value("value")[alone], ee.value("value")[alone], rtol=1e-12)
    np.testing.assert_allclose(merged.errors["value"][alone], ee.errors["value"][alone], rtol=1e-12)
    assert np.all(methods[alone & mok] == M.METHOD_BITS["ee5x5"])
    assert np.all(methods[~mok] == 0)
    # the methods recorded are exactly those with a constant for the crystal
    bits = sum(
        np.where(payloads[n].status == OK, M.METHOD_BITS[k], 0)
        for n, k in (
            (B.EE5X5_PAYLOAD, "ee5x5"),
            (P.GG_PAYLOAD, "gamma_gamma"),
            (P.MUMU_PAYLOAD, "mumu"),
        )
    )
    np.testing.assert_array_equal(methods, bits)
    np.testing.assert_array_equal(diag.tables["crystals"]["methods"], methods)
    assert eok.sum() > 3000
    assert mok.sum() == (eok | peak_ok).sum()
    composition = {int(b): int(np.sum(methods[mok] == b)) for b in np.unique(methods[mok])}
    print(f"seed {cfg.seed}: merged {int(mok.sum())} crystals, methods {composition}")
    assert_closure(merged.value("value")[mok], merged.errors["value"][mok], truth[mok], "merged")


@pytest.mark.slow
def test_expected_energies_match_truth_applied_simulation(
    bhabha_sample: tuple[Path, SimConfig, RunRegistry],
    photon_sample: tuple[Path, SimConfig, RunRegistry],
) -> None:
    """The Monte-Carlo expectations of the expert config, re-derived: simulation with the true
    constants applied is what nominal-constant MC gives."""
    cfg_default = E.DEFAULT_CONFIG
    data, cfg, reg = photon_sample
    truth = _truth(cfg, reg, 1)
    # nominal-constant MC at the nominal collision energy: the true constants applied, the
    # collision energy of the run given (as the beam calibration's payload)
    payloads = [
        p for p in truth_payloads(truth) if p.name in ("ECLCrystalEnergy", "CollisionInvariantMass")
    ]
    constants = Constants(None, [], [(IoV(0, 0, -1, -1), p) for p in payloads])
    opts = {"executor": "inprocess", "progress": False, "cache": False}
    for mode, skim, hname, key, tail, vrange in (
        ("gamma_gamma", "hlt_gamma_gamma", "gg_ratio", "gg", 0.2, P.GG_FIT_RANGE),
        ("mumu", "hlt_mumu_2trk", "mumu_energy", "mumu", -0.2, None),
    ):
        collector = P.peak_collector(mode)(constants, [(cfg.exp, 1)])
        dataset = Dataset.select(data, skims=skim)
        h = collect(collector, dataset, **opts).output.merged()[hname]  # type: ignore[arg-type]
        fits, _ = P.fit_peaks(h, min_entries=30, tail=tail, value_range=vrange)
        peak, err = fits.values["peak"], fits.errors["peak"]
        spread = cfg_default[f"{key}_expected_peak_spread"]
        default = np.asarray(cfg_default[f"{key}_expected_peak"])
        default_err = np.asarray(cfg_default[f"{key}_expected_peak_error"])
        d, e = [], []
        for r in range(ecl.N_RINGS):
            sel = fits.ok & (r == P.RING)
            if sel.sum() < 10 or default[r] == 0:
                continue
            w = 1.0 / (err[sel] ** 2 + (spread * peak[sel]) ** 2)
            mean, mean_err = np.sum(w * peak[sel]) / np.sum(w), 1.0 / np.sqrt(np.sum(w))
            d.append(mean - default[r])
            e.append(np.hypot(mean_err, default_err[r]))
        diff, derr = np.array(d), np.array(e)
        # a common offset is the expectation's scale uncertainty; the rest its ring errors
        offset = np.sum(diff / derr**2) / np.sum(1 / derr**2)
        offset_err = 1.0 / np.sqrt(np.sum(1 / derr**2))
        scale = cfg_default[f"{key}_expected_scale_error"] * np.mean(default[default > 0])
        chi2 = float(np.mean(((diff - offset) / derr) ** 2))
        print(
            f"{key}: expected peaks per ring vs defaults: common offset {offset:+.5f} "
            f"(scale error {scale:.5f}), chi2/ndf {chi2:.2f} over {len(diff)} rings"
        )
        assert len(diff) > 40
        assert chi2 < 2.0
        assert abs(offset) < 3 * np.hypot(offset_err, scale)
    data, cfg, reg = bhabha_sample
    truth_const = _truth(cfg, reg, 1).ecl_energy_const
    dataset = Dataset.select(data, skims="hlt_bhabha", runs=[1])
    hs = collect(B.ECLee5x5Collector(), dataset, **opts).output.merged()  # type: ignore[arg-type]
    value, error, status, _ = B.solve_ee5x5(
        hs["ee5x5_q"],
        hs["ee5x5_r"],
        hs["ee5x5_n"],
        hs["ee5x5_syy"],
        expected=1.0,
        expected_error=0.0,
        min_entries=10,
    )
    ok = status == OK
    w = (truth_const[ok] / error[ok]) ** 2
    ratio = np.sum(w * value[ok] / truth_const[ok]) / np.sum(w)
    rho, rho_err = 1.0 / ratio, 1.0 / np.sqrt(np.sum(w))
    default = cfg_default["ee5x5_expected"]
    print(f"ee5x5: expected fraction {rho:.5f} +- {rho_err:.5f} (default {default})")
    assert abs(rho - cfg_default["ee5x5_expected"]) < 4 * np.hypot(
        rho_err, cfg_default["ee5x5_expected_error"]
    )


# ---------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_on_the_sample_bucket(tmp_path: Path) -> None:
    db = tmp_path / "cal.sqlite"
    base = ["calibrate", "--data", str(SAMPLE), "--runs", "1-11", "--db", str(db), "--quiet"]
    # ~1200 Bhabha electrons over 8736 crystals: no crystal reaches 10 at the defaults
    result = CliRunner().invoke(cli, [*base, "ecl-energy", "--staging", "strict"])
    assert result.exit_code == 1
    assert "NOT_ENOUGH_DATA" in result.output
    assert "no crystal calibrated" in result.output
    assert "nothing staged" in result.output
    assert "staged ECL" not in result.output
    low = tmp_path / "low.json"
    low.write_text(json.dumps({"ee5x5_min_entries": 2}))
    result = CliRunner().invoke(
        cli, [*base, "ecl-energy", "--staging", "low", "--config", str(low)]
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, [*base, "ecl-time", "--staging", "low"])
    assert result.exit_code == 0, result.output
    database = ConditionsDB(db)
    names = {e.name for e in database.iovs("low")}
    assert names == {
        "ECLCrystalEnergy",
        "ECLCrystalEnergy5x5",
        "ECLCrystalEnergyGammaGamma",
        "ECLCrystalEnergyMuMu",
        "ECLCrystalTimeOffset",
        "ECLCrateTimeOffset",
    }
    for _, payload in staged(database, "low", "ECLCrystalEnergy"):
        ok = payload.status == OK
        assert 50 < ok.sum() < 2000
        assert np.all(np.isfinite(payload.value("value")[ok]))
        assert np.all(np.isnan(payload.value("value")[~ok]))
    crates = staged(database, "low", "ECLCrateTimeOffset")
    assert all((p.status == OK).sum() >= 30 for _, p in crates)


# ------------------------------------------------------------------- broken runs (issue 13)
#: Runs 1-5 of the sample bucket; run 3 is broken in the copies. The bucket's few Bhabha
#: electrons need lower crate thresholds.
BROKEN_RUNS = range(1, 6)
LOW_TIME = {"ecl-time": {"crate_min_entries": 5}}


@pytest.fixture(scope="module")
def time_without_run_3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    """ecl-time on the sample bucket's runs 1, 2, 4, 5: what a broken run 3 must not change."""
    tmp = tmp_path_factory.mktemp("ecl-time-reference")
    _, db = calibrate("ecl-time", SAMPLE, tmp / "c.sqlite", runs=[1, 2, 4, 5], config=LOW_TIME)
    return {name: staged(db, "staging", name) for name in (T.CRYSTAL_PAYLOAD, T.CRATE_PAYLOAD)}


@pytest.mark.parametrize(
    "damage",
    [
        "missing-branch",
        pytest.param("wrong-type", marks=pytest.mark.slow),
        pytest.param("empty-tree", marks=pytest.mark.slow),
    ],
)
def test_time_survives_a_skipped_run(
    damage: str, tmp_path: Path, time_without_run_3: dict[str, list]
) -> None:
    """Regression (issue 13): with run 3's files skipped (a missing or mistyped branch, an empty
    tree) ecl-time raised ``KeyError: (12, 3)`` in crate_step_boundaries. Now run 3 is merged
    into its neighbours' payload, reported with the reason, and the constants are those of
    the runs with data."""
    data = broken_copy(SAMPLE, tmp_path / "data", 12, 3, damage)
    reports, db = calibrate(
        "ecl-time", data, tmp_path / "c.sqlite", runs=BROKEN_RUNS, config=LOW_TIME
    )
    report = reports["ecl-time"]
    assert report.status == "OK", report
    reason = {"empty-tree": "truncated"}.get(damage, damage)
    assert report.runs_without_data == {
        (12, 3): f"cdst_hlt_bhabha_e0012_r00003.root skipped ({reason})"
    }
    for name, reference in time_without_run_3.items():
        got = staged(db, "staging", name)
        assert [str(e.iov) for e, _ in got] == ["12,1,12,5"]  # run 3 is covered
        assert [p.metadata["provenance"]["runs"] for _, p in got] == [
            [[12, 1], [12, 2], [12, 4], [12, 5]]
        ]
        for (_, p), (_, ref) in zip(got, reference, strict=True):
            for column in p.values:
                np.testing.assert_array_equal(p.value(column), ref.value(column))
            np.testing.assert_array_equal(p.errors["value"], ref.errors["value"])
            np.testing.assert_array_equal(p.status, ref.status)


# ---------------------------------------------------------------------------- notebooks
@pytest.mark.notebooks
@pytest.mark.slow
def test_ecl_energy_notebook(sample: Path) -> None:
    numbers = execute("ecl_energy.ipynb", sample)
    assert 1000 < int(numbers["bhabha_electrons"]) < 1500  # type: ignore[call-overload]
    assert 50 < int(numbers["crystals_ok_bucket"]) < 1000  # type: ignore[call-overload]
    first_ok = int(numbers["crystals_ok_first_payload"])  # type: ignore[call-overload]
    assert 5 < first_ok < int(numbers["crystals_ok_bucket"])  # type: ignore[call-overload]
    assert first_ok + int(numbers["crystals_flagged_first_payload"]) == 8736  # type: ignore[call-overload]
    assert abs(float(numbers["pull_mean_vs_truth"])) < 0.5  # type: ignore[arg-type]
    assert 0.5 < float(numbers["pull_width_vs_truth"]) < 1.5  # type: ignore[arg-type]
    assert numbers["payloads"] == 2  # split at the intervention given in the expert config
    assert numbers["staged"] == [
        "ECLCrystalEnergy",
        "ECLCrystalEnergy5x5",
        "ECLCrystalEnergyGammaGamma",
        "ECLCrystalEnergyMuMu",
    ]


@pytest.mark.notebooks
@pytest.mark.slow
def test_ecl_time_notebook(sample: Path) -> None:
    numbers = execute("ecl_time.ipynb", sample)
    assert 1000 < int(numbers["electrons"]) < 1500  # type: ignore[call-overload]
    assert numbers["crystals_ok"] == 0  # at most 4 electrons per crystal: all flagged
    assert 30 <= int(numbers["crates_ok"]) == int(numbers["crate_level"])  # type: ignore[call-overload]
    assert abs(float(numbers["crate_pull_mean_vs_truth"])) < 0.6  # type: ignore[arg-type]
    assert 0.6 < float(numbers["crate_pull_width_vs_truth"]) < 1.6  # type: ignore[arg-type]
    assert numbers["payloads"] == 1
    step, err = float(numbers["crate17_step_ns"]), float(numbers["crate17_step_error_ns"])  # type: ignore[arg-type]
    assert abs(step - 3.0) < 3 * err
    assert step > 0
    assert numbers["staged"] == ["ECLCrateTimeOffset", "ECLCrystalTimeOffset"]


def test_time_payloads_never_span_a_change_of_the_applied_offsets(tmp_path: Path) -> None:
    """With an input tag whose crate offsets change at the crate-17 replacement (the sample
    bucket's truth, run 7), the payloads split there: the collector applied each run's offsets,
    and one payload over both would add the residuals of runs 7-11 to the offsets of run 1
    (regression: the demo bucket's crate 17 came out 5.75 ns against a truth of 3.83 / 6.83)."""
    db = ConditionsDB(tmp_path / "c.sqlite")
    db.import_local(SAMPLE / "truth", "sim_truth")
    truth = {str(e.iov) for e in db.iovs("sim_truth", T.CRATE_PAYLOAD)}
    assert any(i.startswith("12,7,") for i in truth), truth  # the truth changes at run 7
    report = run_calibrations(
        "ecl-time",
        SAMPLE,
        db=db,
        staging_tag="staging",
        input_tags=["sim_truth"],
        runs=range(1, 12),
        cache=tmp_path / "cache",
    )["ecl-time"]
    assert report.status == "OK", report.message
    starts = sorted(e.iov.start for e in db.iovs("staging", T.CRATE_PAYLOAD))
    assert (12, 7) in starts, starts
