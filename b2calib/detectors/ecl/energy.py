"""ECL crystal energy calibration (basf2 eclBhabhaE / eclee5x5, eclGammaGammaE, eclMuMuE and
eclMergingCrystalE).

Convention (the truth payload's): ``E = const * E_raw`` per crystal (``ECLCrystalEnergy``).

Methods
-------
Bhabha 5x5 (``ECLCrystalEnergy5x5``)
    For every Bhabha electron with a matched track, the raw energies ``E_j`` of the 5x5 window
    around its central crystal should sum, once calibrated, to the expected energy
    ``E_exp = rho * p`` (``p`` the track momentum, ``rho`` the Monte-Carlo 5x5 energy fraction,
    basf2's ECLExpee5x5E). One linear least-squares problem for all crystals: the collector
    accumulates the normal equations ``Q_jk += w E_j E_k`` and ``R_j += w E_j p`` (``w = 1/p^2``,
    constant relative resolution) per (central crystal, slot pair) over the fixed 5x5 neighbour
    table, a 8736 x 325 histogram; the algorithm scatters it into a sparse ``Q`` and solves
    ``Q g = rho R``. Uncertainties: ``sqrt(diag(Q^-1) * chi2/ndf)`` with ``chi2`` from the
    accumulated sums, plus the uncertainty of ``rho`` (fully correlated scale).
Gamma-gamma and mu-mu peaks (``ECLCrystalEnergyGammaGamma``, ``ECLCrystalEnergyMuMu``)
    Per central crystal, the calibrated 5x5 energy (the current ECLCrystalEnergy applied, as in
    basf2) divided by the expected photon energy (two-body kinematics of the nominal beams from
    the photon direction) or, for muons, the calibrated 5x5 energy itself, fitted with a
    Novosibirsk peak plus a constant (>= 150 entries as in basf2; the shape parameters from the
    crystal's theta ring, see :func:`fit_peaks`). basf2 updates each crystal by
    ``expected_peak / fitted_peak``; because a cluster shares ~30 % of its energy with the
    neighbours, that converges slowly and its quoted error ignores the neighbours. Here the
    collector also records the mean energy sharing of each crystal's 5x5 window and the
    algorithm solves all crystals together (:func:`solve_peaks`); the collector is re-run
    (ITERATE) with the new constants until they stop moving. ``expected_peak`` is the
    Monte-Carlo peak (ECLExpGammaGammaE, ECLExpMuMuE).
Merge (``ECLCrystalEnergy``)
    Inverse-variance average of the methods that measured the crystal; the ``methods`` column is
    a bit mask of which did (1 Bhabha 5x5, 2 gamma-gamma, 4 mu-mu).

The Monte-Carlo expectations
    basf2 reads them from payloads made on MC with nominal constants. The simulator has no
    nominal-constant mode, so they are expert-config numbers: the 5x5 fraction ``rho`` is the
    factor that makes the 5x5 solution unbiased on simulation with the constants known (it
    absorbs the small errors-in-variables bias of the method), the peaks are the fitted peaks on
    simulation with the true constants applied (equivalent to nominal-constant MC). The
    expected photon energy uses the run's CollisionInvariantMass when the input tags have it,
    else the nominal Upsilon(4S) energy (the calibration selects 4S runs), which the real one can
    miss by a few MeV: the 0.03 % uncertainty of the gamma-gamma expectation, a common scale.
    basf2 keeps one expectation per crystal; here the peaks are expected per theta ring (the
    gamma-gamma one varies by 0.2 % with theta; 0 = no expectation, its crystals are
    NOT_ENOUGH_DATA), with MC errors scaled to the scatter seen between independent
    simulations (x2 and x4.5 the statistical ones), and the crystal-to-crystal spread of
    the MC peaks within a ring (0.065 % for gamma-gamma, 0.19 % for mu-mu, beyond their
    statistics) is the ``*_expected_peak_spread`` per-crystal uncertainty. The test suite
    re-derives the expectations from fresh simulation and checks them against these defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

import awkward as ak
import hist
import numba
import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from b2calib.calibration import (
    Algorithm,
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Calibration,
    CollectorInput,
    Constants,
    Diagnostics,
    SequentialBoundaries,
)
from b2calib.conditions import ChannelStatus, Payload
from b2calib.conditions.iov import RunKey
from b2calib.detectors.ecl._common import (
    CLUSTER_BRANCHES,
    CRATE,
    DIGIT_BRANCHES,
    EVENT_BRANCHES,
    IA,
    N_PAIRS,
    N_SLOTS,
    NEIGHBOURS_5X5,
    PAIR_A,
    PAIR_B,
    TRACK_BRANCHES,
    F,
    applied_column,
    cell_axis,
    crate_axis,
    crate_step_boundaries,
    digest,
    offsets_of,
    per_run_sets,
    run_of,
    track_momentum,
    window_energies,
)
from b2calib.detectors.ecl._linalg import solve_with_variances
from b2calib.engine import Collector
from b2calib.fit.novosibirsk_batched import fit_novosibirsk_channels
from b2calib.geometry import ecl

__all__ = [
    "EE5X5_PAYLOAD",
    "GG_PAYLOAD",
    "MERGED_PAYLOAD",
    "MUMU_PAYLOAD",
    "ECLEnergyAlgorithm",
    "ECLPeakCollector",
    "ECLee5x5Collector",
    "energy_calibration",
    "expected_photon_energy",
    "fit_peaks",
    "solve_ee5x5",
    "solve_peaks",
]

MERGED_PAYLOAD = "ECLCrystalEnergy"
#: Theta ring (0..68) of each crystal (index cellID - 1).
RING = ecl.ring_of(np.arange(1, ecl.N_CRYSTALS + 1))
#: The collision energy (the beam calibration's payload), used when available.
BEAM_PAYLOAD = "CollisionInvariantMass"
EE5X5_PAYLOAD = "ECLCrystalEnergy5x5"
GG_PAYLOAD = "ECLCrystalEnergyGammaGamma"
MUMU_PAYLOAD = "ECLCrystalEnergyMuMu"
METHOD_BITS = {"ee5x5": 1, "gamma_gamma": 2, "mumu": 4}

#: Nominal SuperKEKB beams (HER e-, LER e+, GeV) and half crossing angle (rad), scaled to the
#: Upsilon(4S) collision energy: the processing's nominal beam parameters.
E_HER, E_LER, HALF_CROSSING = 7.004, 4.002, 0.0415
ECMS_4S = 10.5794

#: Histogram binning of the peak methods: gamma-gamma E/E_exp, mu-mu E (GeV).
GG_BINS = (160, 0.70, 1.10)
MUMU_BINS = (150, 0.05, 0.50)
#: Fit range of the gamma-gamma peak (the ISR tail below is not Novosibirsk-shaped).
GG_FIT_RANGE = (0.85, 1.02)
CRATE_RATIO_BINS = (120, 0.6, 1.2)

#: Selection of the Bhabha electrons, muons and photons (GeV).
_E_MIN_P = 2.0
_EOP_MIN = 0.7
_MU_MIN_P = 1.0
_MU_MAX_E = 1.0
_GG_MIN_E = 1.0

DEFAULT_CONFIG: dict[str, Any] = {
    "ee5x5_min_entries": 10,
    "ee5x5_expected": 0.94359,
    "ee5x5_expected_error": 0.00012,
    "ee5x5_resolution": 0.018,
    "ee5x5_prior_width": 0.2,
    "gg_min_entries": 150,
    "gg_expected_peak": [
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.94353,
        0.94584,
        0.94629,
        0.94667,
        0.94663,
        0.94643,
        0.94638,
        0.94635,
        0.94607,
        0.9464,
        0.94665,
        0.94671,
        0.94655,
        0.94664,
        0.94684,
        0.94669,
        0.9468,
        0.947,
        0.94718,
        0.94739,
        0.94732,
        0.94697,
        0.94747,
        0.94707,
        0.94744,
        0.94691,
        0.94686,
        0.94682,
        0.94694,
        0.94713,
        0.94706,
        0.94727,
        0.94702,
        0.94677,
        0.94685,
        0.94682,
        0.94677,
        0.94735,
        0.94656,
        0.94643,
        0.94682,
        0.94667,
        0.94671,
        0.94662,
        0.94638,
        0.94625,
        0.94593,
        0.9463,
        0.94622,
        0.94655,
        0.94587,
        0.9461,
        0.94626,
        0.94633,
        0.94634,
        0.94594,
        0.94539,
        0.94311,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    # MC statistical errors x 2: the ring peaks of independent simulations scatter by about
    # twice their statistical errors (chi2/ndf ~4 between two samples with those alone)
    "gg_expected_peak_error": [
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.00096,
        0.00032,
        0.00026,
        0.00022,
        0.00022,
        0.00022,
        0.00022,
        0.0002,
        0.0002,
        0.0002,
        0.0002,
        0.00022,
        0.00022,
        0.00022,
        0.00022,
        0.00024,
        0.00024,
        0.00024,
        0.00026,
        0.00026,
        0.00026,
        0.00026,
        0.00026,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00028,
        0.00026,
        0.00026,
        0.00026,
        0.00026,
        0.00026,
        0.00026,
        0.00024,
        0.00024,
        0.00024,
        0.00024,
        0.00024,
        0.00022,
        0.00022,
        0.00024,
        0.00022,
        0.00022,
        0.0002,
        0.00018,
        0.0002,
        0.00028,
        0.00076,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    "gg_expected_scale_error": 0.0003,
    "gg_expected_peak_spread": 0.00065,
    "mumu_min_entries": 150,
    "mumu_expected_peak": [
        0.0,
        0.0,
        0.0,
        0.16942,
        0.17107,
        0.17058,
        0.17141,
        0.17033,
        0.17087,
        0.17116,
        0.17058,
        0.17099,
        0.17125,
        0.1705,
        0.17095,
        0.17072,
        0.17046,
        0.17078,
        0.17115,
        0.17059,
        0.17113,
        0.17049,
        0.17088,
        0.17099,
        0.17088,
        0.17084,
        0.17118,
        0.17055,
        0.17083,
        0.17086,
        0.17072,
        0.17112,
        0.17091,
        0.1705,
        0.17091,
        0.17109,
        0.1708,
        0.17107,
        0.17058,
        0.17079,
        0.17054,
        0.17095,
        0.17029,
        0.17079,
        0.17087,
        0.17104,
        0.17107,
        0.17081,
        0.17053,
        0.17084,
        0.17056,
        0.17075,
        0.17067,
        0.17074,
        0.17058,
        0.17107,
        0.17112,
        0.17093,
        0.1708,
        0.1707,
        0.17082,
        0.17099,
        0.17091,
        0.17093,
        0.17066,
        0.171,
        0.16929,
        0.0,
        0.0,
    ],
    # MC statistical errors x 4.5: the ring peaks of independent simulations scatter by
    # about 4.5 times their statistical errors (not understood: the Landau-like shape makes
    # the ring fits of peak and tail trade off; ~0.35 %, small beside the crystal errors)
    "mumu_expected_peak_error": [
        0.0,
        0.0,
        0.0,
        0.00275,
        0.00121,
        0.0009,
        0.00077,
        0.00072,
        0.00067,
        0.00067,
        0.00067,
        0.00067,
        0.00067,
        0.00054,
        0.00054,
        0.00054,
        0.00054,
        0.00054,
        0.00054,
        0.00054,
        0.00058,
        0.00054,
        0.00058,
        0.00058,
        0.00058,
        0.00058,
        0.00058,
        0.00058,
        0.00058,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00063,
        0.00067,
        0.00067,
        0.00067,
        0.00067,
        0.00067,
        0.00067,
        0.00063,
        0.00063,
        0.00067,
        0.00067,
        0.00072,
        0.00077,
        0.00113,
        0.00266,
        0.0,
        0.0,
    ],
    # the mean mu-mu peak of two independent simulations differs by 0.13 %
    "mumu_expected_scale_error": 0.0015,
    "mumu_expected_peak_spread": 0.0019,
    "unmeasured_width": 0.05,
    "tolerance": 0.1,
    "payload_boundaries": [],
    "find_boundaries": True,
    "step_min": 0.02,
    "step_significance": 5.0,
}


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


# ----------------------------------------------------------------------------------- collectors
def _flat_clusters(events: ak.Array) -> dict[str, Any]:
    num = ak.num(events["ECLClusters_m_energy"])
    out: dict[str, Any] = {
        "evt": np.repeat(np.arange(len(events)), ak.to_numpy(num)),
        "offsets": offsets_of(num),
    }
    for key in ("energy", "theta", "phi", "maxCellId", "isTrack", "trackIndex"):
        out[key] = ak.to_numpy(ak.flatten(events[f"ECLClusters_m_{key}"]))
    return out


def _track_matched(events: ak.Array, cl: dict[str, Any]) -> tuple[IA, F]:
    """Indices of track-matched clusters in the calorimeter and their track momenta."""
    p, toff = track_momentum(events)
    ti = cl["trackIndex"].astype(np.int64)
    ntrk = np.diff(toff)[cl["evt"]]
    cell = cl["maxCellId"].astype(np.int64)
    sel = (cl["isTrack"] == 1) & (ti >= 0) & (ti < ntrk) & (cell >= 1) & (cell <= ecl.N_CRYSTALS)
    idx = np.flatnonzero(sel)
    return idx, p[toff[cl["evt"][idx]] + ti[idx]]


@numba.njit(cache=True, nogil=True)
def _fill_normal(q, r, n, syy, cell, e, p, pa, pb):  # type: ignore[no-untyped-def,unused-ignore]
    for k in range(cell.shape[0]):
        c = cell[k] - 1
        w = 1.0 / (p[k] * p[k])
        n[c] += 1.0
        syy[c] += w * p[k] * p[k]
        for a in range(e.shape[1]):
            r[c, a] += w * e[k, a] * p[k]
        for s in range(pa.shape[0]):
            q[c, s] += w * e[k, pa[s]] * e[k, pb[s]]


@dataclasses.dataclass(frozen=True)
class ECLee5x5Collector(Collector):
    """Normal equations of the Bhabha 5x5 method (raw energies: no constants applied).

    Histograms: ``ee5x5_q`` (cell x 325 slot pairs, sum of ``w E_a E_b``), ``ee5x5_r`` (cell x
    25 slots, ``w E_a p``), ``ee5x5_n`` (electrons per central crystal), ``ee5x5_syy``
    (``w p^2``), and ``ee5x5_crate_ratio`` (raw 5x5 energy / p per crate, for monitoring and
    for finding steps between runs).
    """

    version: ClassVar[int] = 1

    @property
    def branches(self) -> dict[str, str]:
        return EVENT_BRANCHES | CLUSTER_BRANCHES | DIGIT_BRANCHES | TRACK_BRANCHES

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        cl = _flat_clusters(events)
        idx, p = _track_matched(events, cl)
        keep = (p > _E_MIN_P) & (cl["energy"][idx] / np.maximum(p, 1e-9) > _EOP_MIN)
        idx, p = idx[keep], p[keep]
        cell = cl["maxCellId"][idx].astype(np.int64)
        e = window_energies(events, cl["evt"][idx], cell)
        out = {
            "ee5x5_q": hist.Hist(
                cell_axis(),
                hist.axis.Integer(0, N_PAIRS, name="pair", flow=False),
                storage=hist.storage.Double(),
            ),
            "ee5x5_r": hist.Hist(
                cell_axis(),
                hist.axis.Integer(0, N_SLOTS, name="slot", flow=False),
                storage=hist.storage.Double(),
            ),
            "ee5x5_n": hist.Hist(cell_axis(), storage=hist.storage.Double()),
            "ee5x5_syy": hist.Hist(cell_axis(), storage=hist.storage.Double()),
        }
        _fill_normal(
            out["ee5x5_q"].view(),
            out["ee5x5_r"].view(),
            out["ee5x5_n"].view(),
            out["ee5x5_syy"].view(),
            cell,
            e,
            p.astype(np.float64),
            PAIR_A.astype(np.int64),
            PAIR_B.astype(np.int64),
        )
        ratio = hist.Hist(
            crate_axis(),
            hist.axis.Regular(*CRATE_RATIO_BINS, name="ratio", label="raw E5x5 / p"),
            storage=hist.storage.Double(),
        )
        ratio.fill(CRATE[cell - 1], e.sum(axis=1) / p)
        out["ee5x5_crate_ratio"] = ratio
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class ECLPeakCollector(Collector):
    """Calibrated 5x5 energy per central crystal, for the gamma-gamma or mu-mu peak fit.

    ``mode`` ``"gamma_gamma"``: the two leading neutral clusters, value = E_5x5 / E_expected
    (histogram ``gg_ratio``); ``"mumu"``: track-matched muon clusters, value = E_5x5 in GeV
    (``mumu_energy``). ``runs`` maps each (exp, run) to the index of its constants in
    ``gains`` (the ECLCrystalEnergy applied); ``key`` is their digest (the cache key).
    ``ecms`` gives the collision energy of runs for which a CollisionInvariantMass payload is
    known (the nominal 4S energy otherwise).
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
        cl = _flat_clusters(events)
        cellall = cl["maxCellId"].astype(np.int64)
        if self.mode == "mumu":
            idx, p = _track_matched(events, cl)
            idx = idx[(p > _MU_MIN_P) & (cl["energy"][idx] < _MU_MAX_E)]
            win = window_energies(events, cl["evt"][idx], cellall[idx], gains)
            e = win.sum(axis=1)
            h = hist.Hist(
                cell_axis(),
                hist.axis.Regular(*MUMU_BINS, name="energy", label="E_5x5 (GeV)"),
                storage=hist.storage.Double(),
            )
            h.fill(cellall[idx], e)
            return {"mumu_energy": h, "mumu_frac": _fractions(cellall[idx], win)}
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
        return {"gg_ratio": h, "gg_frac": _fractions(cellall[idx], win)}


def _fractions(cell: IA, win: F) -> hist.Hist:
    """Sum over clusters of each 5x5 slot's share of the calibrated window energy, per central
    crystal (divided by the cluster count it is the mean energy-sharing matrix)."""
    h = hist.Hist(
        cell_axis(),
        hist.axis.Integer(0, N_SLOTS, name="slot", flow=False),
        storage=hist.storage.Double(),
    )
    total = win.sum(axis=1)
    good = total > 0
    np.add.at(h.view(), cell[good] - 1, win[good] / total[good, None])
    return h


def _leading_photons(cl: dict[str, Any]) -> IA:
    """The two most energetic neutral clusters of events that have two above 1 GeV."""
    neutral = (
        (cl["isTrack"] == 0)
        & (cl["energy"] > _GG_MIN_E)
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


def _applied(constants: Constants, run: RunKey) -> F:
    return applied_column(constants, MERGED_PAYLOAD, run, 1.0, ecl.N_CRYSTALS)


def _applied_error(constants: Constants, run: RunKey, unmeasured: float) -> F:
    """Relative uncertainty of the applied ECLCrystalEnergy; ``unmeasured`` (the spread of
    uncalibrated crystal gains) where it has none (no payload, or a flagged crystal)."""
    payload = constants.get(MERGED_PAYLOAD, *run)
    if payload is None or "value" not in payload.errors:
        return np.full(ecl.N_CRYSTALS, unmeasured)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(payload.errors["value"] / payload.value("value"))
    return np.where(np.isfinite(rel), rel, unmeasured)


def _peak_factory(mode: str) -> Any:
    def factory(constants: Constants, runs: Sequence[RunKey]) -> ECLPeakCollector:
        index, sets = per_run_sets({r: (_applied(constants, r),) for r in runs})
        gains = tuple(s[0] for s in sets)
        ecms = []
        if mode == "gamma_gamma":
            for exp, run in runs:
                beam = constants.get(BEAM_PAYLOAD, exp, run)
                if beam is not None:
                    ecms.append((exp, run, float(beam.value("value")[0])))
        return ECLPeakCollector(mode, index, gains, digest(*gains) if gains else "", tuple(ecms))

    factory.__name__ = f"ecl_{mode}_collector"
    return factory


# ------------------------------------------------------------------------------------ algorithm
_SOLVED: dict[str, tuple[F, F, int]] = {}


def _solve_cached(q: scipy.sparse.csr_matrix, r: F) -> tuple[F, F, int]:
    """:func:`solve_with_variances`, remembered for the last few systems: the Bhabha input does
    not change while the peak methods iterate, so each iteration would solve the same system."""
    h = hashlib.sha256()
    for a in (q.indptr, q.indices, q.data, r):
        h.update(np.ascontiguousarray(a).tobytes())
    key = h.hexdigest()
    if key not in _SOLVED:
        if len(_SOLVED) >= 4:
            _SOLVED.pop(next(iter(_SOLVED)))
        _SOLVED[key] = solve_with_variances(q, r)
    x, var, bw = _SOLVED[key]
    return x.copy(), var.copy(), bw


def solve_ee5x5(
    q_hist: hist.Hist,
    r_hist: hist.Hist,
    n_hist: hist.Hist,
    syy_hist: hist.Hist,
    *,
    expected: float,
    expected_error: float,
    min_entries: int,
    resolution: float = 0.018,
    prior_width: float = 0.2,
) -> tuple[F, F, np.ndarray, dict[str, Any]]:
    """Solve the Bhabha 5x5 system: constants, uncertainties, statuses and a summary.

    ``resolution`` (relative, per electron) and ``prior_width`` set a weak prior
    ``g = 1 +- prior_width`` that keeps the system regular where few electrons constrain a
    crystal; the uncertainties are the posterior ones, ``diag((Q + lam)^-1) * chi2 / ndf`` (for
    a crystal the prior constrains noticeably, i.e. one with very few electrons, they are
    conservative). Crystals that received energy enter the system; those that were the central
    crystal of fewer than ``min_entries`` electrons are NOT_ENOUGH_DATA (NaN), those with a
    non-positive or non-finite solution FAILED.
    """
    nc = ecl.N_CRYSTALS
    qv = np.asarray(q_hist.values(), dtype=np.float64)
    rv = np.asarray(r_hist.values(), dtype=np.float64)
    n_centre = np.asarray(n_hist.values(), dtype=np.float64)
    syy = float(np.sum(syy_hist.values())) * expected**2
    rows = NEIGHBOURS_5X5[:, PAIR_A]
    cols = NEIGHBOURS_5X5[:, PAIR_B]
    nz = (qv != 0) & (rows > 0) & (cols > 0)
    ri, ci, vi = rows[nz] - 1, cols[nz] - 1, qv[nz]
    off = ri != ci
    q = scipy.sparse.coo_matrix(
        (
            np.concatenate([vi, vi[off]]),
            (np.concatenate([ri, ci[off]]), np.concatenate([ci, ri[off]])),
        ),
        shape=(nc, nc),
    ).tocsr()
    slots = NEIGHBOURS_5X5
    sel = (rv != 0) & (slots > 0)
    r = np.bincount(slots[sel] - 1, weights=rv[sel], minlength=nc) * expected
    diag = q.diagonal()
    active = np.flatnonzero(diag > 0)
    status = np.full(nc, ChannelStatus.NOT_ENOUGH_DATA, dtype=np.int8)
    values = np.full(nc, np.nan)
    errors = np.full(nc, np.nan)
    n_electrons = int(n_centre.sum())
    summary: dict[str, Any] = {"electrons": n_electrons, "crystals_in_system": len(active)}
    if len(active) == 0 or n_electrons < 2:
        summary["reason"] = f"{n_electrons} electrons for {len(active)} crystals"
        return values, errors, status, summary
    # a weak prior g = 1 +- prior_width keeps crystals seen by too few electrons from making
    # the system singular; for a measured crystal its pull on g is ~ 1e-3 of its error
    lam = (resolution * expected) ** 2 / prior_width**2
    sub = q[active][:, active]
    g, var, bw = _solve_cached(
        sub + lam * scipy.sparse.identity(len(active), format="csr"),
        np.asarray(r[active] + lam, dtype=np.float64),
    )
    # residual variance per electron: chi2 over the degrees of freedom the ridge-regularised
    # fit leaves, N - tr(Q (Q + lam)^-1) = N - (n - lam tr((Q + lam)^-1))
    dof_used = len(active) - lam * float(var.sum())
    ndf = n_electrons - dof_used
    chi2 = syy - 2.0 * float(g @ r[active]) + float(g @ (sub @ g))
    if ndf <= 1.0:
        summary["reason"] = f"{n_electrons} electrons for {dof_used:.0f} effective parameters"
        return values, errors, status, summary
    scale = max(chi2, 0.0) / ndf
    err = np.sqrt(var * scale + (g * expected_error / expected) ** 2)
    summary |= {
        "bandwidth": bw,
        "chi2": chi2,
        "ndf": ndf,
        "resolution": float(np.sqrt(scale) / expected),
    }
    values[active], errors[active] = g, err
    status[active] = ChannelStatus.OK
    starved = n_centre < min_entries
    bad = ~np.isfinite(values) | ~np.isfinite(errors) | (np.nan_to_num(values) <= 0)
    status[bad & ~starved] = ChannelStatus.FAILED
    status[starved] = ChannelStatus.NOT_ENOUGH_DATA
    not_ok = status != ChannelStatus.OK
    values[not_ok] = np.nan
    errors[not_ok] = np.nan
    return values, errors, status, summary


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
    toys = lu.solve(noise)
    sx = np.sqrt(np.mean(toys**2, axis=1))
    good = np.isfinite(x) & (x > 0) & np.isfinite(sx)
    g = applied[idx] / x
    value[idx[good]] = g[good]
    rel_ref = (expected_error[idx] / expected[idx])[good]
    error[idx[good]] = np.abs(g[good]) * np.hypot(sx[good] / x[good], rel_ref)
    solved = np.zeros(nc, bool)
    solved[idx[good]] = True
    return value, error, solved


def _peak_method(
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


def _payload(name: str, value: F, error: F, status: np.ndarray, meta: dict[str, Any]) -> Payload:
    cells = np.arange(1, ecl.N_CRYSTALS + 1, dtype=np.int32)
    bad = status != ChannelStatus.OK
    return Payload(
        name,
        keys={"cellID": cells},
        values={"value": np.where(bad, np.nan, value)},
        errors={"value": np.where(bad, np.nan, error)},
        status=status,
        metadata={"units": {"value": "1"}} | meta,
    )


def merge_methods(
    methods: dict[str, tuple[F, F, np.ndarray]],
) -> tuple[F, F, np.ndarray, np.ndarray]:
    """Inverse-variance average of the methods that measured each crystal.

    Returns value, error, status and the bit mask of the methods used (:data:`METHOD_BITS`).
    A crystal no method measured is FAILED if any method's fit failed, else NOT_ENOUGH_DATA.
    """
    nc = ecl.N_CRYSTALS
    sw = np.zeros(nc)
    swx = np.zeros(nc)
    mask = np.zeros(nc, dtype=np.int8)
    failed = np.zeros(nc, dtype=bool)
    for name, (v, e, s) in methods.items():
        ok = (s == ChannelStatus.OK) & np.isfinite(v) & np.isfinite(e) & (e > 0)
        w = np.where(ok, 1.0 / np.where(ok, e, 1.0) ** 2, 0.0)
        sw += w
        swx += w * np.nan_to_num(v)
        mask[ok] |= METHOD_BITS[name]
        failed |= s == ChannelStatus.FAILED
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(sw > 0, swx / sw, np.nan)
        error = np.where(sw > 0, 1.0 / np.sqrt(sw), np.nan)
    status = np.where(
        sw > 0,
        ChannelStatus.OK,
        np.where(failed, ChannelStatus.FAILED, ChannelStatus.NOT_ENOUGH_DATA),
    ).astype(np.int8)
    return value, error, status, mask


class ECLEnergyAlgorithm(Algorithm):
    """The three crystal-energy methods and their merge, in one execution.

    Produces ECLCrystalEnergy5x5, ECLCrystalEnergyGammaGamma, ECLCrystalEnergyMuMu (per-method,
    with per-crystal status) and ECLCrystalEnergy (merged, with the ``methods`` bit mask). Asks
    to ITERATE while the merged constants move from the constants the collectors applied by an
    RMS over crystals of more than ``tolerance`` standard deviations. Requests payload
    boundaries where a crate's mean raw 5x5 energy fraction steps between runs.
    """

    name = "ecl_energy"
    payloads = (EE5X5_PAYLOAD, GG_PAYLOAD, MUMU_PAYLOAD, MERGED_PAYLOAD)

    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        hs = data.histograms
        nc = ecl.N_CRYSTALS
        applied = _applied(data.constants, data.runs[0])
        applied_error = _applied_error(data.constants, data.runs[0], cfg["unmeasured_width"])
        methods: dict[str, tuple[F, F, np.ndarray]] = {}
        diag = Diagnostics()
        info: dict[str, Any] = {}
        if "ee5x5_q" in hs:
            v, e, s, summary = solve_ee5x5(
                hs["ee5x5_q"],
                hs["ee5x5_r"],
                hs["ee5x5_n"],
                hs["ee5x5_syy"],
                expected=cfg["ee5x5_expected"],
                expected_error=cfg["ee5x5_expected_error"],
                min_entries=cfg["ee5x5_min_entries"],
                resolution=cfg["ee5x5_resolution"],
                prior_width=cfg["ee5x5_prior_width"],
            )
            info["ee5x5"] = summary
            diag.histograms["ee5x5_crate_ratio"] = hs["ee5x5_crate_ratio"]
            diag.histograms["ee5x5_n"] = hs["ee5x5_n"]
        else:
            v, e, s = np.full(nc, np.nan), np.full(nc, np.nan), np.full(nc, 1, np.int8)
        methods["ee5x5"] = (v, e, s)
        for mode, key, tail, vrange in (
            ("gamma_gamma", "gg", 0.2, GG_FIT_RANGE),
            ("mumu", "mumu", -0.2, None),
        ):
            hname = "gg_ratio" if mode == "gamma_gamma" else "mumu_energy"
            v, e, s, fits = _peak_method(
                hs.get(hname),
                hs.get(f"{key}_frac"),
                applied,
                expected=np.asarray(cfg[f"{key}_expected_peak"], dtype=np.float64)[RING],
                expected_error=np.hypot(
                    np.asarray(cfg[f"{key}_expected_peak_error"], dtype=np.float64),
                    cfg[f"{key}_expected_scale_error"]
                    * np.asarray(cfg[f"{key}_expected_peak"], dtype=np.float64),
                )[RING],
                expected_spread=cfg[f"{key}_expected_peak_spread"],
                applied_error=applied_error,
                min_entries=cfg[f"{key}_min_entries"],
                tail=tail,
                value_range=vrange,
            )
            methods[mode] = (v, e, s)
            if fits is not None:
                diag.histograms[hname] = hs[hname]
                diag.add_fits(key, fits, np.arange(1, nc + 1))
        value, error, status, mask = merge_methods(methods)
        counts = {name: int(np.sum(s == ChannelStatus.OK)) for name, (_, _, s) in methods.items()}
        ok = status == ChannelStatus.OK
        if not ok.any():
            return AlgorithmResult(
                AlgorithmStatus.NOT_ENOUGH_DATA,
                diagnostics=diag,
                message=f"no crystal calibrated by any method (OK per method: {counts})",
            )
        with np.errstate(invalid="ignore"):
            shift = np.abs(value - applied) / error
        max_shift = float(np.max(shift[ok]))
        rms_shift = float(np.sqrt(np.mean(shift[ok] ** 2)))
        previous = data.constants.get(MERGED_PAYLOAD, *data.runs[0])
        done = previous is not None and rms_shift < cfg["tolerance"]
        diag.tables["crystals"] = {
            "cellID": np.arange(1, nc + 1, dtype=np.int32),
            "crate": CRATE.astype(np.int16),
            "value": value,
            "error": error,
            "status": status,
            "methods": mask,
            "applied": applied,
            **{f"{k}_value": m[0] for k, m in methods.items()},
            **{f"{k}_error": m[1] for k, m in methods.items()},
        }
        meta = {
            "method": "basf2 eclee5x5 / eclGammaGammaE / eclMuMuE / eclMergingCrystalE",
            "description": "per-crystal energy constant: E = const * E_raw",
            "ok_per_method": counts,
            "ee5x5": info.get("ee5x5", {}),
            "iteration": data.iteration,
        }
        payloads = [
            _payload(EE5X5_PAYLOAD, *methods["ee5x5"], meta | {"method": "basf2 eclee5x5"}),
            _payload(
                GG_PAYLOAD, *methods["gamma_gamma"], meta | {"method": "basf2 eclGammaGammaE"}
            ),
            _payload(MUMU_PAYLOAD, *methods["mumu"], meta | {"method": "basf2 eclMuMuE"}),
        ]
        merged = _payload(MERGED_PAYLOAD, value, error, status, meta)
        merged.values["methods"] = mask
        merged.metadata["methods_bits"] = METHOD_BITS
        payloads.append(merged)
        message = (
            f"OK per method {counts}; merged {int(ok.sum())} of {nc} crystals; "
            f"shift max {max_shift:.3g} rms {rms_shift:.3g} sigma"
        )
        status_code = AlgorithmStatus.OK if done else AlgorithmStatus.ITERATE
        return AlgorithmResult(status_code, payloads, diag, message)

    def boundaries(self, data: AlgorithmInput) -> list[RunKey]:
        return crate_step_boundaries(data, "ee5x5_crate_ratio")


def energy_calibration() -> Calibration:
    """The ``ecl-energy`` calibration declaration."""
    return Calibration(
        name="ecl-energy",
        expert="ecl-calibration@b2calib.example",
        inputs={
            "bhabha": CollectorInput(ECLee5x5Collector(), ("hlt_bhabha",)),
            "gamma_gamma": CollectorInput(_peak_factory("gamma_gamma"), ("hlt_gamma_gamma",)),
            "mumu": CollectorInput(_peak_factory("mumu"), ("hlt_mumu_2trk",)),
        },
        algorithms=[ECLEnergyAlgorithm()],
        strategy=SequentialBoundaries(),
        run_type="physics",
        beam_energy="4S",
        expert_config=dict(DEFAULT_CONFIG),
        max_iterations=5,
        description=(
            "ECL crystal energy constants (E = const * E_raw): Bhabha 5x5 linear system, "
            "gamma-gamma and mu-mu Novosibirsk peak fits, merged by inverse variance into "
            "ECLCrystalEnergy; a new payload where a crate's energy response steps."
        ),
    )
