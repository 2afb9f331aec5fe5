"""Pieces shared by the ECL calibrations: clusters and their tracks, 5x5 windows, per-run
constants, payload boundaries where a crate steps."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import awkward as ak
import hist
import numba
import numpy as np
import numpy.typing as npt

from b2calib.calibration import AlgorithmInput, Constants
from b2calib.calibration.toolkit import find_steps, weighted_mean_split
from b2calib.conditions.iov import RunKey
from b2calib.fit.histstats import group_means
from b2calib.geometry import ecl

F = npt.NDArray[np.float64]
IA = npt.NDArray[np.int64]

#: 1-based cell ids of the 5x5 window around each crystal (0 outside the calorimeter).
NEIGHBOURS_5X5: IA = ecl.neighbours(5)
N_SLOTS = 25
#: (a, b) slot pairs with a <= b of a 5x5 window and their index (325 pairs).
PAIR_A, PAIR_B = np.triu_indices(N_SLOTS)
N_PAIRS = len(PAIR_A)
CRATE: IA = ecl.crate_of(np.arange(1, ecl.N_CRYSTALS + 1))

#: Branches every ECL collector reads.
EVENT_BRANCHES = {
    "EventMetaData_m_experiment": "int32",
    "EventMetaData_m_run": "int32",
}
CLUSTER_BRANCHES = {
    "ECLClusters_m_energy": "var * float32",
    "ECLClusters_m_theta": "var * float32",
    "ECLClusters_m_phi": "var * float32",
    "ECLClusters_m_maxCellId": "var * int16",
    "ECLClusters_m_isTrack": "var * int8",
    "ECLClusters_m_trackIndex": "var * int16",
}
DIGIT_BRANCHES = {
    "ECLCalDigits_m_CellId": "var * int16",
    "ECLCalDigits_m_Energy": "var * float32",
}
TRACK_BRANCHES = {
    "TrackFitResults_m_omega": "var * float32",
    "TrackFitResults_m_tanLambda": "var * float32",
}
#: 1/R[cm] = factor * B[T] / pt[GeV]; the Belle II solenoid field.
_BFIELD_FACTOR = 0.0029979246
B_FIELD_T = 1.5


def cell_axis() -> hist.axis.Integer:
    """Integer axis of 1-based cell ids, without flow bins."""
    return hist.axis.Integer(1, ecl.N_CRYSTALS + 1, name="cell", label="cellID", flow=False)


def crate_axis() -> hist.axis.Integer:
    """Integer axis of crates 1-52, without flow bins."""
    return hist.axis.Integer(1, ecl.N_CRATES + 1, name="crate", label="crate", flow=False)


def run_of(events: ak.Array) -> RunKey:
    """(exp, run) of a chunk (the engine gives one file, so one run, per call)."""
    if len(events) == 0:
        return (0, 0)
    return (int(events["EventMetaData_m_experiment"][0]), int(events["EventMetaData_m_run"][0]))


def offsets_of(counts: npt.ArrayLike) -> IA:
    """Start offsets (n + 1) of jagged rows with ``counts`` elements."""
    c = np.asarray(counts, dtype=np.int64)
    out = np.zeros(len(c) + 1, dtype=np.int64)
    np.cumsum(c, out=out[1:])
    return out


def track_momentum(events: ak.Array) -> tuple[F, IA]:
    """Flat track momenta (GeV) and the offsets of each event's tracks."""
    omega = ak.to_numpy(ak.flatten(events["TrackFitResults_m_omega"])).astype(np.float64)
    tanl = ak.to_numpy(ak.flatten(events["TrackFitResults_m_tanLambda"])).astype(np.float64)
    with np.errstate(divide="ignore"):
        pt = np.where(omega != 0, _BFIELD_FACTOR * B_FIELD_T / np.abs(omega), 0.0)
    p = pt * np.sqrt(1.0 + tanl**2)
    return p, offsets_of(ak.num(events["TrackFitResults_m_omega"]))


def flat_clusters(events: ak.Array) -> dict[str, Any]:
    """The clusters of a chunk as flat arrays: their event (``evt``), the offsets of each
    event's clusters and the cluster branches (``energy``, ``theta``, ``phi``, ``maxCellId``,
    ``isTrack``, ``trackIndex``)."""
    num = ak.num(events["ECLClusters_m_energy"])
    out: dict[str, Any] = {
        "evt": np.repeat(np.arange(len(events)), ak.to_numpy(num)),
        "offsets": offsets_of(num),
    }
    for key in ("energy", "theta", "phi", "maxCellId", "isTrack", "trackIndex"):
        out[key] = ak.to_numpy(ak.flatten(events[f"ECLClusters_m_{key}"]))
    return out


def track_matched(events: ak.Array, cl: dict[str, Any]) -> tuple[IA, F]:
    """Indices of track-matched clusters (of :func:`flat_clusters`) in the calorimeter and
    their track momenta."""
    p, toff = track_momentum(events)
    ti = cl["trackIndex"].astype(np.int64)
    ntrk = np.diff(toff)[cl["evt"]]
    cell = cl["maxCellId"].astype(np.int64)
    sel = (cl["isTrack"] == 1) & (ti >= 0) & (ti < ntrk) & (cell >= 1) & (cell <= ecl.N_CRYSTALS)
    idx = np.flatnonzero(sel)
    return idx, p[toff[cl["evt"][idx]] + ti[idx]]


@numba.njit(cache=True, nogil=True)
def _window_energies(dig_off, dig_cell, dig_e, cl_evt, cl_cell, nbr, gains):  # type: ignore[no-untyped-def,unused-ignore]
    """Per event: its digits' calibrated energies summed per cell into a scratch array (in
    digit order, from 0.0: the bits of a sum over the digits of each slot), every cluster of
    the event reads its 25 window cells from it, then the cells written are reset. Work per
    event: its digits twice and 25 per cluster (not clusters x digits)."""
    n = cl_evt.shape[0]
    nc = gains.shape[0]
    ns = nbr.shape[1]
    out = np.zeros((n, ns))
    scratch = np.zeros(nc + 1)
    k = 0
    while k < n:
        e = cl_evt[k]
        for d in range(dig_off[e], dig_off[e + 1]):
            cell = dig_cell[d]
            if cell >= 1 and cell <= nc:  # a cell id out of range is in no window
                scratch[cell] += dig_e[d] * gains[cell - 1]
        while k < n and cl_evt[k] == e:  # the event's clusters (consecutive ones)
            row = nbr[cl_cell[k] - 1]
            for a in range(ns):
                if row[a] > 0:
                    out[k, a] = scratch[row[a]]
            k += 1
        for d in range(dig_off[e], dig_off[e + 1]):
            cell = dig_cell[d]
            if cell >= 1 and cell <= nc:
                scratch[cell] = 0.0
    return out


def window_energies(
    events: ak.Array, cl_evt: IA, cl_cell: IA, gains: F | None = None
) -> npt.NDArray[np.float64]:
    """Digit energies (GeV) in the 5x5 window around each selected cluster's crystal.

    ``cl_evt`` is the event index and ``cl_cell`` the 1-based centre cell of each cluster;
    ``gains`` (per crystal, index cell - 1) multiply the raw digit energies (default: raw).
    Returns an array (clusters, 25) in the slot order of :data:`NEIGHBOURS_5X5`.
    """
    # the digits as read (int32 ids, float32 energies: the kernel widens each value as it uses
    # it, exactly as a widened copy would, without copying the largest arrays of the event)
    cells = ak.to_numpy(ak.flatten(events["ECLCalDigits_m_CellId"]))
    energy = ak.to_numpy(ak.flatten(events["ECLCalDigits_m_Energy"]))
    off = offsets_of(ak.num(events["ECLCalDigits_m_CellId"]))
    g = np.ones(ecl.N_CRYSTALS) if gains is None else np.asarray(gains, dtype=np.float64)
    return np.asarray(
        _window_energies(
            off,
            cells,
            energy,
            np.asarray(cl_evt, dtype=np.int64),
            np.asarray(cl_cell, dtype=np.int64),
            NEIGHBOURS_5X5,
            g,
        )
    )


def digest(*arrays: npt.ArrayLike) -> str:
    """SHA-256 of arrays: identifies the constants a collector applies (its cache key)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes())
    return h.hexdigest()


def per_run_sets(
    arrays: Mapping[RunKey, tuple[F, ...]],
) -> tuple[tuple[tuple[int, int, int], ...], tuple[tuple[F, ...], ...]]:
    """Distinct constant sets and the index of each run's set (runs sharing a payload share)."""
    keys: dict[str, int] = {}
    sets: list[tuple[F, ...]] = []
    index: list[tuple[int, int, int]] = []
    for (exp, run), arrs in sorted(arrays.items()):
        d = digest(*arrs)
        if d not in keys:
            keys[d] = len(sets)
            sets.append(arrs)
        index.append((exp, run, keys[d]))
    return tuple(index), tuple(sets)


def applied_column(
    constants: Constants, name: str, run: RunKey, nominal: float, n: int, column: str = "value"
) -> F:
    """The constants ``name`` valid for ``run`` as a dense array, as a collector applies them.

    Missing payload: ``nominal`` everywhere. Flagged (NaN) channels: the median of the
    measured ones (a neutral stand-in; their own value is never used as a result).
    """
    payload = constants.get(name, *run)
    if payload is None:
        return np.full(n, nominal, dtype=np.float64)
    values = np.asarray(payload.value(column), dtype=np.float64)
    if len(values) != n:
        raise ValueError(f"payload {name} for run {run}: {len(values)} rows, expected {n}")
    return dense_column(values, nominal)


def dense_column(values: npt.ArrayLike, nominal: float) -> F:
    """A payload column as a collector applies it (:func:`applied_column`): flagged (NaN)
    channels take the median of the measured ones, ``nominal`` when none is measured."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    fill = float(np.median(v[finite])) if finite.any() else nominal
    return np.where(finite, v, fill)


def config_boundaries(config: Mapping[str, Any]) -> list[RunKey]:
    """The ``payload_boundaries`` of an expert config as (exp, run) pairs."""
    return [(int(e), int(r)) for e, r in config.get("payload_boundaries", [])]


def applied_changes(data: AlgorithmInput, applied: Callable[[RunKey], F]) -> list[RunKey]:
    """The runs of ``data`` where the constants its collectors applied (``applied(run)``)
    differ from those of the run before: a payload cannot span one, because its algorithm adds
    the residuals of all its runs to one run's applied constants (e.g. an input tag whose
    ECLCrateTimeOffset changes at a crate replacement)."""
    out, last = [], None
    for run in data.runs:
        now = applied(run)
        if last is not None and not np.array_equal(now, last, equal_nan=True):
            out.append(run)
        last = now
    return out


def crate_step_boundaries(
    data: AlgorithmInput, histogram: str, applied: Callable[[RunKey], F] | None = None
) -> list[RunKey]:
    """Payload boundaries of an ECL calibration: those of its expert config, the runs where
    the constants its collectors applied change (:func:`applied_changes`, with ``applied``),
    plus, with ``find_boundaries``, the runs where a crate's mean of the per-run ``histogram``
    (crates x values) steps by ``step_min`` at ``step_significance``
    (:func:`~b2calib.calibration.toolkit.weighted_mean_split`)."""
    cfg = data.config
    found = set(config_boundaries(cfg))
    if applied is not None:
        found |= set(applied_changes(data, applied))
    if cfg["find_boundaries"]:
        runs, means, errors = [], [], []
        for run in data.runs:
            h = data.per_run[run].get(histogram)
            if h is None:
                continue
            m, e = group_means(h)
            runs.append(run)
            means.append(m)
            errors.append(e)
        test = weighted_mean_split(
            means, errors, min_step=cfg["step_min"], min_significance=cfg["step_significance"]
        )
        found |= set(find_steps(runs, test))
    return sorted(found)
