"""ECL crystal energy from Bhabha electrons: the 5x5 linear system (basf2 eclee5x5,
``ECLCrystalEnergy5x5``).

For every Bhabha electron with a matched track, the raw energies ``E_j`` of the 5x5 window around
its central crystal should sum, once calibrated, to the expected energy ``E_exp = rho * p``
(``p`` the track momentum, ``rho`` the Monte-Carlo 5x5 energy fraction, basf2's ECLExpee5x5E).
One linear least-squares problem for all crystals: the collector accumulates the normal
equations ``Q_jk += w E_j E_k`` and ``R_j += w E_j p`` (``w = 1/p^2``, constant relative
resolution) per (central crystal, slot pair) over the fixed 5x5 neighbour table, a 8736 x 325
histogram; :func:`solve_ee5x5` scatters it into a sparse ``Q`` and solves ``Q g = rho R``.
Uncertainties: ``sqrt(diag(Q^-1) * chi2/ndf)`` with ``chi2`` from the accumulated sums, plus the
uncertainty of ``rho`` (fully correlated scale).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from typing import Any, ClassVar

import awkward as ak
import hist
import numba
import numpy as np
import scipy.sparse

from b2calib.conditions import ChannelStatus
from b2calib.detectors.ecl._common import (
    CLUSTER_BRANCHES,
    CRATE,
    DIGIT_BRANCHES,
    EVENT_BRANCHES,
    N_PAIRS,
    N_SLOTS,
    NEIGHBOURS_5X5,
    PAIR_A,
    PAIR_B,
    TRACK_BRANCHES,
    F,
    cell_axis,
    crate_axis,
    flat_clusters,
    track_matched,
    window_energies,
)
from b2calib.detectors.ecl._linalg import solve_with_variances
from b2calib.engine import Collector
from b2calib.geometry import ecl

__all__ = ["CRATE_RATIO_BINS", "EE5X5_PAYLOAD", "ECLee5x5Collector", "solve_ee5x5"]

EE5X5_PAYLOAD = "ECLCrystalEnergy5x5"
#: Raw 5x5 energy over momentum per crate (monitoring, and steps between runs).
CRATE_RATIO_BINS = (120, 0.6, 1.2)
#: Selection of the Bhabha electrons (GeV).
_E_MIN_P = 2.0
_EOP_MIN = 0.7


@numba.njit(cache=True, nogil=True)
def _fill_normal(q, r, n, syy, cell, e, p):  # type: ignore[no-untyped-def,unused-ignore]
    """Add each electron's terms to the normal equations; ``q``'s columns are the slot pairs
    (a, b), a <= b, in the order of :data:`PAIR_A`, :data:`PAIR_B` (``numpy.triu_indices``)."""
    ns = e.shape[1]
    for k in range(cell.shape[0]):
        c = cell[k] - 1
        w = 1.0 / (p[k] * p[k])
        n[c] += 1.0
        syy[c] += w * p[k] * p[k]
        for a in range(ns):
            r[c, a] += w * e[k, a] * p[k]
        s = 0
        for a in range(ns):
            ea = e[k, a]
            if ea == 0.0:  # an empty slot adds +-0 to every pair it is in: nothing
                s += ns - a
                continue
            wa = w * ea
            for b in range(a, ns):
                q[c, s] += wa * e[k, b]
                s += 1


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
        cl = flat_clusters(events)
        idx, p = track_matched(events, cl)
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
        # filled in row-major arrays, then copied: a histogram's view is column-major (the cell
        # axis fastest), where a cluster's 325 pairs would be 325 cache lines apart
        q = np.zeros(out["ee5x5_q"].shape)
        r = np.zeros(out["ee5x5_r"].shape)
        _fill_normal(
            q,
            r,
            out["ee5x5_n"].view(),
            out["ee5x5_syy"].view(),
            cell,
            e,
            p.astype(np.float64),
        )
        out["ee5x5_q"].view()[...] = q
        out["ee5x5_r"].view()[...] = r
        ratio = hist.Hist(
            crate_axis(),
            hist.axis.Regular(*CRATE_RATIO_BINS, name="ratio", label="raw E5x5 / p"),
            storage=hist.storage.Double(),
        )
        ratio.fill(CRATE[cell - 1], e.sum(axis=1) / p)
        out["ee5x5_crate_ratio"] = ratio
        return out


#: The last few 5x5 solutions (values, errors, statuses, summary) by a digest of their inputs.
_SOLVED: dict[str, tuple[F, F, np.ndarray, dict[str, Any]]] = {}


def _inputs_key(arrays: tuple[F, ...], params: tuple[float, ...]) -> str:
    """SHA-256 of the accumulated sums (their memory as it lies: a histogram's view is
    column-major, not copied) and the solve's parameters."""
    h = hashlib.sha256(np.asarray(params, dtype=np.float64).tobytes())
    for a in arrays:
        flat = a.ravel(order="K")  # a view of a contiguous array, in memory order
        h.update(f"{a.dtype.str} {a.shape} {a.strides}".encode())
        h.update(np.ascontiguousarray(flat).data)
    return h.hexdigest()


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

    The Bhabha input applies no constants, so it does not change while the peak methods
    iterate: the last few solutions are remembered by a digest of the sums and parameters
    (about 20 ms for a bench payload against about 1 s to build and solve the system).
    """
    qv = np.asarray(q_hist.values(), dtype=np.float64)
    rv = np.asarray(r_hist.values(), dtype=np.float64)
    n_centre = np.asarray(n_hist.values(), dtype=np.float64)
    syy_v = np.asarray(syy_hist.values(), dtype=np.float64)
    params = (expected, expected_error, float(min_entries), resolution, prior_width)
    key = _inputs_key((qv, rv, n_centre, syy_v), params)
    if key not in _SOLVED:
        if len(_SOLVED) >= 4:
            _SOLVED.pop(next(iter(_SOLVED)))
        _SOLVED[key] = _solve(qv, rv, n_centre, syy_v, *params)
    values, errors, status, summary = _SOLVED[key]
    return values.copy(), errors.copy(), status.copy(), copy.deepcopy(summary)


def _solve(
    qv: F,
    rv: F,
    n_centre: F,
    syy_v: F,
    expected: float,
    expected_error: float,
    min_entries: float,
    resolution: float,
    prior_width: float,
) -> tuple[F, F, np.ndarray, dict[str, Any]]:
    """:func:`solve_ee5x5` from the histograms' values."""
    nc = ecl.N_CRYSTALS
    syy = float(np.sum(syy_v)) * expected**2
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
    g, var, bw = solve_with_variances(
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


def __dir__() -> list[str]:
    return __all__
