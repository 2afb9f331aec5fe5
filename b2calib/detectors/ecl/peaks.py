"""ECL crystal energy from gamma-gamma and mu-mu peaks (basf2 eclGammaGammaE and eclMuMuE,
``ECLCrystalEnergyGammaGamma``, ``ECLCrystalEnergyMuMu``).

Per central crystal, the calibrated 5x5 energy (the current ECLCrystalEnergy applied, as in
basf2) divided by the expected photon energy (two-body kinematics of the nominal beams from the
photon direction, :func:`expected_photon_energy`) or, for muons, the calibrated 5x5 energy itself,
fitted with a Novosibirsk peak plus a constant (>= 150 entries as in basf2; the shape parameters
from the crystal's theta ring, see :func:`fit_peaks`). basf2 updates each crystal by
``expected_peak / fitted_peak``; because a cluster shares ~30 % of its energy with the
neighbours, that converges slowly and its quoted error ignores the neighbours. Here the
collector also records the mean energy sharing of each crystal's 5x5 window and the algorithm
solves all crystals together (:func:`solve_peaks`); the collector is re-run (ITERATE) with the
new constants until they stop moving. ``expected_peak`` is the Monte-Carlo peak
(ECLExpGammaGammaE, ECLExpMuMuE). :func:`peak_constants` is one method from its histograms to
its constants.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import awkward as ak
import hist
import numba
import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from b2calib.calibration import Constants
from b2calib.conditions import ChannelStatus, eventdep
from b2calib.conditions.iov import RunKey
from b2calib.conditions.payload import Payload
from b2calib.detectors.ecl._common import (
    CLUSTER_BRANCHES,
    DIGIT_BRANCHES,
    EVENT_BRANCHES,
    IA,
    N_SLOTS,
    NEIGHBOURS_5X5,
    TRACK_BRANCHES,
    F,
    cell_axis,
    digest,
    flat_clusters,
    per_run_sets,
    run_of,
    track_matched,
    window_energies,
)
from b2calib.detectors.ecl._linalg import lu_solve_many
from b2calib.detectors.ecl.merge import applied_constants
from b2calib.engine import Collector
from b2calib.fit.novosibirsk_batched import fit_novosibirsk_channels
from b2calib.geometry import ecl

__all__ = [
    "BEAM_PAYLOAD",
    "ECMS_4S",
    "GG_BINS",
    "GG_FIT_RANGE",
    "GG_PAYLOAD",
    "MUMU_BINS",
    "MUMU_PAYLOAD",
    "RING",
    "ECLPeakCollector",
    "expected_photon_energy",
    "fit_peaks",
    "peak_collector",
    "peak_constants",
    "run_ecms",
    "solve_peaks",
]

#: Theta ring (0..68) of each crystal (index cellID - 1).
RING = ecl.ring_of(np.arange(1, ecl.N_CRYSTALS + 1))
#: The collision energy (the beam calibration's payload), used when available.
BEAM_PAYLOAD = "CollisionInvariantMass"
GG_PAYLOAD = "ECLCrystalEnergyGammaGamma"
MUMU_PAYLOAD = "ECLCrystalEnergyMuMu"

#: Nominal SuperKEKB beams (HER e-, LER e+, GeV) and half crossing angle (rad), scaled to the
#: Upsilon(4S) collision energy: the processing's nominal beam parameters.
E_HER, E_LER, HALF_CROSSING = 7.004, 4.002, 0.0415
ECMS_4S = 10.5794

#: Histogram binning of the peak methods: gamma-gamma E/E_exp, mu-mu E (GeV).
GG_BINS = (160, 0.70, 1.10)
MUMU_BINS = (150, 0.05, 0.50)
#: Fit range of the gamma-gamma peak (the ISR tail below is not Novosibirsk-shaped).
GG_FIT_RANGE = (0.85, 1.02)

#: Selection of the muons and photons (GeV).
_MU_MIN_P = 1.0
_MU_MAX_E = 1.0
_GG_MIN_E = 1.0


def expected_photon_energy(theta: F, phi: F, ecms: float = ECMS_4S) -> F:
    """Lab energy (GeV) of a photon of a two-body gamma-gamma final state in direction
    (theta, phi), for the nominal beams: ``E = M^2 / (2 (E_beam - p_beam . n))``."""
    k = ecms / (2.0 * np.sqrt(E_HER * E_LER) * np.cos(HALF_CROSSING))
    eh, el = E_HER * k, E_LER * k
    e_tot = eh + el
    px, pz = e_tot * np.sin(HALF_CROSSING), (eh - el) * np.cos(HALF_CROSSING)
    m2 = e_tot**2 - px**2 - pz**2
    st = np.sin(theta)
    dot = px * st * np.cos(phi) + pz * np.cos(theta)
    return np.asarray(m2 / (2.0 * (e_tot - dot)), dtype=np.float64)


@dataclasses.dataclass(frozen=True, eq=False)
class ECLPeakCollector(Collector):
    """Calibrated 5x5 energy per central crystal, for the gamma-gamma or mu-mu peak fit.

    ``mode`` ``"gamma_gamma"``: the two leading neutral clusters, value = E_5x5 / E_expected
    (histogram ``gg_ratio``); ``"mumu"``: track-matched muon clusters, value = E_5x5 in GeV
    (``mumu_energy``). ``runs`` maps each (exp, run) to the index of its constants in
    ``gains`` (the ECLCrystalEnergy applied); ``key`` is their digest (the cache key).
    ``ecms`` gives the collision energy of runs for which a CollisionInvariantMass payload is
    known (its time average over the run, :func:`run_ecms`; the nominal 4S energy otherwise).
    """

    mode: str
    runs: tuple[tuple[int, int, int], ...] = ()
    gains: tuple[F, ...] = ()
    key: str = ""
    ecms: tuple[tuple[int, int, float], ...] = ()
    version: ClassVar[int] = 2

    def __post_init__(self) -> None:
        if self.mode not in ("gamma_gamma", "mumu"):
            raise ValueError(f"ECLPeakCollector mode must be gamma_gamma or mumu, not {self.mode}")

    @property
    def branches(self) -> dict[str, str]:
        extra = TRACK_BRANCHES if self.mode == "mumu" else {}
        return EVENT_BRANCHES | CLUSTER_BRANCHES | DIGIT_BRANCHES | extra

    def _gains(self, run: RunKey) -> F:
        for exp, r, i in self.runs:
            if (exp, r) == run:
                return self.gains[i]
        return np.ones(ecl.N_CRYSTALS)

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        gains = self._gains(run_of(events))
        cl = flat_clusters(events)
        cellall = cl["maxCellId"].astype(np.int64)
        if self.mode == "mumu":
            idx, p = track_matched(events, cl)
            idx = idx[(p > _MU_MIN_P) & (cl["energy"][idx] < _MU_MAX_E)]
            win = window_energies(events, cl["evt"][idx], cellall[idx], gains)
            e = win.sum(axis=1)
            h = hist.Hist(
                cell_axis(),
                hist.axis.Regular(*MUMU_BINS, name="energy", label="E_5x5 (GeV)"),
                storage=hist.storage.Double(),
            )
            h.fill(cellall[idx], e)
            return {"mumu_energy": h, "mumu_frac": _fractions(cellall[idx], win, e)}
        idx = _leading_photons(cl)
        win = window_energies(events, cl["evt"][idx], cellall[idx], gains)
        e = win.sum(axis=1)
        run = run_of(events)
        ecms = next((v for ex, r, v in self.ecms if (ex, r) == run), ECMS_4S)
        expected = expected_photon_energy(cl["theta"][idx], cl["phi"][idx], ecms)
        h = hist.Hist(
            cell_axis(),
            hist.axis.Regular(*GG_BINS, name="ratio", label="E_5x5 / E_expected"),
            storage=hist.storage.Double(),
        )
        h.fill(cellall[idx], e / expected)
        return {"gg_ratio": h, "gg_frac": _fractions(cellall[idx], win, e)}


def _fractions(cell: IA, win: F, total: F | None = None) -> hist.Hist:
    """Sum over clusters of each 5x5 slot's share of the calibrated window energy, per central
    crystal (divided by the cluster count it is the mean energy-sharing matrix). ``total`` is
    ``win.sum(axis=1)`` when the caller has it."""
    h = hist.Hist(
        cell_axis(),
        hist.axis.Integer(0, N_SLOTS, name="slot", flow=False),
        storage=hist.storage.Double(),
    )
    if total is None:
        total = win.sum(axis=1)
    # the sums of a weighted bincount over (crystal, slot), in the same order: the same bits;
    # into a row-major array (the histogram's view is column-major: a cache line per write)
    sums = np.zeros((ecl.N_CRYSTALS, N_SLOTS))
    _share_sums(
        np.asarray(cell, dtype=np.int64),
        np.ascontiguousarray(win, dtype=np.float64),
        np.asarray(total, dtype=np.float64),
        sums,
    )
    h.view()[...] = sums
    return h


@numba.njit(cache=True, nogil=True)
def _share_sums(cell, win, total, out):  # type: ignore[no-untyped-def,unused-ignore]
    """``out[cell - 1, slot] += win / total`` over the clusters with a positive total, in
    cluster order (the order of ``np.bincount`` over the flattened (cluster, slot) shares)."""
    for k in range(cell.shape[0]):
        t = total[k]
        if t > 0:
            row = cell[k] - 1
            for a in range(win.shape[1]):
                out[row, a] += win[k, a] / t


def _leading_photons(cl: dict[str, Any]) -> IA:
    """The two most energetic neutral clusters of events that have two above 1 GeV: per event,
    the most energetic first (of equal energies, the first cluster), events in order."""
    return np.asarray(
        _leading_pairs(
            cl["offsets"], cl["energy"], cl["isTrack"], cl["maxCellId"], _GG_MIN_E, ecl.N_CRYSTALS
        )
    )


@numba.njit(cache=True, nogil=True)
def _leading_pairs(offsets, energy, is_track, cell, e_min, n_cells):  # type: ignore[no-untyped-def,unused-ignore]
    """Indices of the two leading clusters (neutral, above ``e_min``, with a cell id of the
    calorimeter) of each event with two such, one pass over each event's clusters."""
    out = np.empty(2 * (offsets.shape[0] - 1), np.int64)
    n = 0
    for e in range(offsets.shape[0] - 1):
        first, second = -1, -1
        for i in range(offsets[e], offsets[e + 1]):
            if is_track[i] != 0 or not energy[i] > e_min or cell[i] < 1 or cell[i] > n_cells:
                continue
            if first < 0 or energy[i] > energy[first]:
                first, second = i, first
            elif second < 0 or energy[i] > energy[second]:
                second = i
        if second >= 0:
            out[n] = first
            out[n + 1] = second
            n += 2
    return out[:n]


def run_ecms(beam: Payload) -> float:
    """The collision energy (GeV) of a run from its CollisionInvariantMass: the mass of a
    run-level payload, or the time average (:func:`~b2calib.conditions.eventdep.run_mean`,
    weighted by the intervals' durations) of a time-dependent one, which the beam calibration
    writes per time interval. Within a run it changes by a few MeV at most: 0.03 % of the
    gamma-gamma expectation, the size of its uncertainty."""
    if eventdep.is_time_dependent(beam):
        beam = eventdep.run_mean(beam, columns=("mass",))
    return float(beam.value("mass")[0])


def peak_collector(mode: str) -> Callable[[Constants, Sequence[RunKey]], ECLPeakCollector]:
    """The collector factory of a peak method (``"gamma_gamma"`` or ``"mumu"``): an
    :class:`ECLPeakCollector` with the ECLCrystalEnergy of each run applied and, for
    gamma-gamma, the runs' collision energies (CollisionInvariantMass) where known."""

    def factory(constants: Constants, runs: Sequence[RunKey]) -> ECLPeakCollector:
        index, sets = per_run_sets({r: (applied_constants(constants, r),) for r in runs})
        gains = tuple(s[0] for s in sets)
        ecms = []
        if mode == "gamma_gamma":
            for exp, run in runs:
                beam = constants.stored(BEAM_PAYLOAD, exp, run)
                if beam is not None:
                    ecms.append((exp, run, run_ecms(beam)))
        return ECLPeakCollector(mode, index, gains, digest(*gains) if gains else "", tuple(ecms))

    factory.__name__ = f"ecl_{mode}_collector"
    return factory


def fit_peaks(
    h: hist.Hist, *, min_entries: int, tail: float, value_range: tuple[float, float] | None
) -> tuple[Any, Any]:
    """Novosibirsk + constant peak of every crystal, the shape (width, tail) fixed to that of
    its theta ring.

    The crystals of a ring see the same physics, so the ring sum (>= 200 entries) measures the
    shape; each crystal then fits its yield, peak and constant background. With all five
    parameters free the peak error of a 150-entry fit is underestimated and the peak biased
    by the tail-width correlation; with the ring's shape it is neither. Crystals of a ring
    whose shape could not be measured are NOT_ENOUGH_DATA (or FAILED if its fit failed).

    Returns the per-crystal fits and the per-ring fits.
    """
    ring = ecl.ring_of(np.arange(1, ecl.N_CRYSTALS + 1))
    counts = h.values()
    ring_hist: hist.Hist = hist.Hist(
        hist.axis.Integer(0, ecl.N_RINGS, name="ring", flow=False), h.axes[1]
    )
    ring_hist.view()[...] = np.stack([counts[ring == r].sum(axis=0) for r in range(ecl.N_RINGS)])
    rings = fit_novosibirsk_channels(
        ring_hist, min_entries=200, tail_start=tail, value_range=value_range
    )
    # a ring whose shape fit did not converge is tried again from other tail start values
    for retry_tail in (0.5 * tail, 0.0, -0.5 * tail):
        failed = np.flatnonzero(rings.status == ChannelStatus.FAILED)
        if failed.size == 0:
            break
        again = fit_novosibirsk_channels(
            ring_hist, min_entries=200, tail_start=retry_tail, value_range=value_range
        )
        for r in failed[again.status[failed] == ChannelStatus.OK].tolist():
            rings.status[r] = ChannelStatus.OK
            rings.reason[r] = f"OK (tail started at {retry_tail:g})"
            for p in rings.parameters:
                rings.values[p][r] = again.values[p][r]
                rings.errors[p][r] = again.errors[p][r]
    width, tail_r = rings.values["width"][ring], rings.values["tail"][ring]
    shaped = np.isfinite(width) & np.isfinite(tail_r)
    fits = fit_novosibirsk_channels(
        h,
        min_entries=min_entries,
        tail_start=tail,
        value_range=value_range,
        fixed={"width": np.where(shaped, width, 0.01), "tail": np.where(shaped, tail_r, 0.0)},
    )
    no_shape = ~shaped & (fits.status == ChannelStatus.OK)
    ring_status = rings.status[ring]
    for i in np.flatnonzero(~shaped & (fits.entries > 0)).tolist():
        fits.reason[i] = f"ring {ring[i]} shape: {rings.reason[ring[i]]}"
    fits.status[no_shape] = np.where(
        ring_status[no_shape] == ChannelStatus.FAILED,
        ChannelStatus.FAILED,
        ChannelStatus.NOT_ENOUGH_DATA,
    )
    for p in fits.parameters:
        fits.values[p][fits.status != ChannelStatus.OK] = np.nan
        fits.errors[p][fits.status != ChannelStatus.OK] = np.nan
    return fits, rings


def solve_peaks(
    peak: F,
    peak_error: F,
    fractions: F,
    applied: F,
    ok: np.ndarray,
    *,
    expected: F | float,
    expected_error: F | float,
    applied_error: F | None = None,
    n_toys: int = 400,
) -> tuple[F, F, np.ndarray]:
    """Constants from the fitted peaks of all crystals together.

    A cluster centred on crystal ``c`` shares its energy with its 5x5 neighbours (mean shares
    ``fractions[c, slot]``), so its peak measures ``sum_j F_cj x_j`` with ``x_j = applied_j /
    true_j``. Updating each crystal by its own peak alone (Jacobi) converges slowly and quotes
    too small an uncertainty; instead the sparse system ``F x = peak / expected`` is solved over
    the crystals with a peak (others enter with x = 1, their applied constant taken as right),
    the constants are ``applied / x``, and the uncertainties come from propagating the peak
    errors and the relative uncertainties ``applied_error`` of the applied constants of the
    neighbours outside the system through ``F^-1`` (``n_toys`` Gaussian toys, fixed seed),
    plus the expected peak's.

    Returns values, errors and a mask of crystals solved (non-singular, positive).
    """
    nc = ecl.N_CRYSTALS
    value = np.full(nc, np.nan)
    error = np.full(nc, np.nan)
    expected = np.broadcast_to(np.asarray(expected, dtype=np.float64), (nc,))
    expected_error = np.broadcast_to(np.asarray(expected_error, dtype=np.float64), (nc,))
    idx = np.flatnonzero(ok & (expected > 0))
    if idx.size == 0:
        return value, error, np.zeros(nc, bool)
    pos = np.full(nc + 1, -1, np.int64)
    pos[idx + 1] = np.arange(idx.size)
    nbr = NEIGHBOURS_5X5[idx]
    frac = fractions[idx]
    col = pos[nbr]
    inside = col >= 0
    rows = np.broadcast_to(np.arange(idx.size)[:, None], nbr.shape)
    f = scipy.sparse.csc_matrix(
        (frac[inside], (rows[inside], col[inside])), shape=(idx.size, idx.size)
    )
    rhs = peak[idx] / expected[idx] - np.where(inside, 0.0, frac).sum(axis=1)
    try:
        lu = scipy.sparse.linalg.splu(f)
    except RuntimeError:
        return value, error, np.zeros(nc, bool)
    x = lu.solve(rhs)
    rng = np.random.default_rng(20260401)
    noise = (peak_error[idx] / expected[idx])[:, None] * rng.standard_normal((idx.size, n_toys))
    if applied_error is not None:
        # a neighbour taken as right (x = 1) is only known to its own uncertainty; the same
        # draw enters every cluster window it is part of
        out = ~inside & (nbr > 0)
        g_out = scipy.sparse.csr_matrix(
            (frac[out], (rows[out], nbr[out] - 1)), shape=(idx.size, nc)
        )
        shift = np.nan_to_num(applied_error)[:, None] * rng.standard_normal((nc, n_toys))
        noise -= np.asarray(g_out @ shift)
    toys = lu_solve_many(lu, noise)  # lu.solve(noise) up to rounding, 10x faster
    sx = np.sqrt(np.mean(toys**2, axis=1))
    good = np.isfinite(x) & (x > 0) & np.isfinite(sx)
    g = applied[idx] / x
    value[idx[good]] = g[good]
    rel_ref = (expected_error[idx] / expected[idx])[good]
    error[idx[good]] = np.abs(g[good]) * np.hypot(sx[good] / x[good], rel_ref)
    solved = np.zeros(nc, bool)
    solved[idx[good]] = True
    return value, error, solved


def peak_constants(
    h: hist.Hist | None,
    frac: hist.Hist | None,
    applied: F,
    *,
    expected: F,
    expected_error: F,
    expected_spread: float,
    applied_error: F,
    min_entries: int,
    tail: float,
    value_range: tuple[float, float] | None,
) -> tuple[F, F, np.ndarray, Any]:
    """The constants of one peak method from its histograms (the peaks ``h`` and the energy
    sharing ``frac``; ``None`` when not collected): :func:`fit_peaks`, then
    :func:`solve_peaks` over the crystals with a good fit and an expectation.

    ``expected_spread`` is the relative crystal-to-crystal spread of the Monte-Carlo peak within
    a ring, added to each crystal's peak error. Returns values, errors, statuses and the fits
    (``None`` without histograms).
    """
    nc = ecl.N_CRYSTALS
    if h is None or frac is None:
        return (
            np.full(nc, np.nan),
            np.full(nc, np.nan),
            np.full(nc, ChannelStatus.NOT_ENOUGH_DATA, np.int8),
            None,
        )
    fits, _ = fit_peaks(h, min_entries=min_entries, tail=tail, value_range=value_range)
    shares = frac.values()
    n = shares.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(n[:, None] > 0, shares / n[:, None], 0.0)
    status = fits.status.copy()
    # the Monte-Carlo expected peak varies from crystal to crystal within a ring by
    # ``expected_spread`` (relative; basf2 keeps one per crystal, here one number): a
    # per-crystal uncertainty, independent between crystals
    peak = fits.values["peak"]
    value, error, solved = solve_peaks(
        peak,
        np.hypot(fits.errors["peak"], expected_spread * peak),
        fractions,
        applied,
        status == ChannelStatus.OK,
        expected=expected,
        expected_error=expected_error,
        applied_error=applied_error,
    )
    no_reference = (status == ChannelStatus.OK) & ~(expected > 0)
    status[no_reference] = ChannelStatus.NOT_ENOUGH_DATA
    for i in np.flatnonzero(no_reference).tolist():
        fits.reason[i] = "no Monte-Carlo expectation for this ring"
    status[(status == ChannelStatus.OK) & ~solved] = ChannelStatus.FAILED
    return value, error, status, fits


def __dir__() -> list[str]:
    return __all__
