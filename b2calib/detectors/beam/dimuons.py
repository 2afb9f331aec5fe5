"""The tight dimuon selection of the beam calibrations (Belle II's beam-spot selection).

An event of the ``hlt_mumu_2trk`` skim is kept when it has exactly two tracks, of opposite
charge, each with ``p > 1 GeV/c``, ``|z0| < 2 cm``, ``|d0| < 0.5 cm``, at least 8 SVD and 20 CDC
hits, and the pair's invariant mass (muon hypothesis) is within 9.5-11.5 GeV.
:func:`select_dimuons` returns the two tracks of every kept event side by side
(:class:`Dimuons`), with the event time (``EventMetaData_m_time``, UNIX ns) and its global time
atom (:func:`b2calib.calibration.intervals.atom_index`).

Conventions of the simulated tracks (``b2calib.sim.detector``): ``d0 = x sin(phi0) -
y cos(phi0)`` of the production vertex ``(x, y, z)``, ``z0`` is the vertex ``z`` (the perigee
is the production point: no ``tanLambda (x cos(phi0) + y sin(phi0))`` term), ``phi0`` the
momentum direction there, ``omega`` the signed curvature (``pt = |B_FACTOR / omega|``). The
files carry no track covariance: the d0 and z0 errors are the tracking resolution
parametrisation :func:`d0_resolution` / :func:`z0_resolution` (the simulator's documented model,
as basf2's TrackFitResult covariance would give them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np
import numpy.typing as npt

from b2calib.calibration.intervals import atom_index
from b2calib.exceptions import BadValueError
from b2calib.fit._lm import compiled
from b2calib.qa.monitoring.parts import B_FACTOR

__all__ = [
    "DIMUON_BRANCHES",
    "MUON_MASS",
    "SELECTION",
    "Dimuons",
    "d0_resolution",
    "prepare_selection",
    "select_dimuons",
    "z0_resolution",
]

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

MUON_MASS = 0.1056583755  # GeV (PDG)
#: The cuts (GeV, cm, hits), as Belle II's beam-spot selection.
SELECTION = {
    "p_min": 1.0,
    "z0_max": 2.0,
    "d0_max": 0.5,
    "svd_hits_min": 8,
    "cdc_hits_min": 20,
    "mass_min": 9.5,
    "mass_max": 11.5,
}
_TRACK_BRANCHES = {
    f"TrackFitResults_m_{k}": f"var * {t}"
    for k, t in (
        ("d0", "float32"),
        ("phi0", "float32"),
        ("omega", "float32"),
        ("z0", "float32"),
        ("tanLambda", "float32"),
        ("charge", "int8"),
        ("nSVDHits", "int16"),
        ("nCDCHits", "int16"),
    )
}
#: What :func:`select_dimuons` reads.
DIMUON_BRANCHES: dict[str, str] = {
    "EventMetaData_m_experiment": "int32",
    "EventMetaData_m_run": "int32",
    "EventMetaData_m_time": "uint64",
    **_TRACK_BRANCHES,
}


def d0_resolution(p: npt.ArrayLike, tan_lambda: npt.ArrayLike) -> F:
    """d0 resolution (cm): ``12 um (+) 20 um / (p sin^1.5 theta)``."""
    sin = 1.0 / np.sqrt(1.0 + np.asarray(tan_lambda, dtype=np.float64) ** 2)
    return np.hypot(12e-4, 20e-4 / (np.asarray(p, dtype=np.float64) * sin**1.5))


def z0_resolution(p: npt.ArrayLike, tan_lambda: npt.ArrayLike) -> F:
    """z0 resolution (cm): ``20 um (+) 30 um / (p sin^1.5 theta)``."""
    sin = 1.0 / np.sqrt(1.0 + np.asarray(tan_lambda, dtype=np.float64) ** 2)
    return np.hypot(20e-4, 30e-4 / (np.asarray(p, dtype=np.float64) * sin**1.5))


@dataclass(frozen=True)
class Dimuons:
    """The selected events: per-track arrays of shape ``(n, 2)`` (the two tracks of each event,
    the positive one first), the event time (UNIX ns) and its atom."""

    d0: F
    z0: F
    phi0: F
    tan_lambda: F
    p: F
    px: F
    py: F
    pz: F
    mass: F
    time_ns: npt.NDArray[np.int64]
    atom: I64

    def __len__(self) -> int:
        return len(self.mass)


def _flat(events: ak.Array, branch: str) -> npt.NDArray[np.generic]:
    """The flattened jagged ``branch`` (its stored type: no float64 copy of every track)."""
    return np.asarray(ak.to_numpy(ak.flatten(events[branch])))


def select_dimuons(events: ak.Array, *, compiled_kernel: bool = True) -> Dimuons:
    """The events passing the tight dimuon selection (:data:`SELECTION`).

    Compiled (:mod:`b2calib.detectors.beam._dimuons`, one pass over the flattened track
    branches as stored) when numba is there and ``compiled_kernel``; else numpy (the
    reference). The two give the same pairs (tests/test_beamspot.py).
    """
    n_trk = np.asarray(ak.to_numpy(ak.num(events["TrackFitResults_m_d0"])), dtype=np.int64)
    kernel = (
        compiled("b2calib.detectors.beam._dimuons", "select_pairs") if compiled_kernel else None
    )
    if kernel is not None:
        return _select_compiled(kernel, events, n_trk)
    return _select_numpy(events, n_trk)


def prepare_selection() -> None:
    """Load the compiled selection (when numba is there) for the stored branch types: a
    collector's ``prepare`` calls it, so that forked workers inherit it."""
    kernel = compiled("b2calib.detectors.beam._dimuons", "select_pairs")
    if kernel is not None:
        f, i8, i16 = np.zeros(0, np.float32), np.zeros(0, np.int8), np.zeros(0, np.int16)
        kernel(np.zeros(0, np.int64), f, f, f, f, f, i8, i16, i16, 1.0, 1.0, _CUTS)


#: :data:`SELECTION` in the kernel's order.
_CUTS = np.array(
    [
        float(SELECTION[k])
        for k in (
            "p_min",
            "z0_max",
            "d0_max",
            "svd_hits_min",
            "cdc_hits_min",
            "mass_min",
            "mass_max",
        )
    ]
)


def _times(events: ak.Array) -> npt.NDArray[np.uint64]:
    return np.asarray(ak.to_numpy(events["EventMetaData_m_time"]), dtype=np.uint64)


def _select_compiled(kernel: Callable[..., Any], events: ak.Array, n_trk: I64) -> Dimuons:
    """:func:`select_dimuons` by the compiled ``kernel`` (``_dimuons.select_pairs``)."""
    flat = {k: _flat(events, f"TrackFitResults_m_{k}") for k in _TRACK_BRANCHES_SHORT}
    n_tracks = int(n_trk.sum())
    for k, a in flat.items():
        # the kernel reads the first sum(n_trk) tracks of every branch: never past their end
        if len(a) != n_tracks:
            raise BadValueError(
                f"TrackFitResults_m_{k}", f"{len(a)} tracks, TrackFitResults_m_d0 has {n_tracks}"
            )
    rows, out, mass = kernel(
        n_trk,
        *(flat[k] for k in ("d0", "phi0", "omega", "z0", "tanLambda", "charge")),
        flat["nSVDHits"],
        flat["nCDCHits"],
        B_FACTOR,
        MUON_MASS**2,
        _CUTS,
    )
    t = _times(events)[rows].astype(np.int64)
    d0, z0, phi0, tan_lambda, p, px, py, pz = out
    return Dimuons(
        d0=d0,
        z0=z0,
        phi0=phi0,
        tan_lambda=tan_lambda,
        p=p,
        px=px,
        py=py,
        pz=pz,
        mass=mass,
        time_ns=t,
        atom=atom_index(t),
    )


def _select_numpy(events: ak.Array, n_trk: I64) -> Dimuons:
    """:func:`select_dimuons` with numpy: the reference of the compiled kernel."""
    two = n_trk == 2
    # the two tracks of each two-track event, in the flattened branches (which the track
    # branches share): no masked copy of the events
    first = (np.cumsum(n_trk) - n_trk)[two]
    index = np.column_stack([first, first + 1])
    flat = {k: _flat(events, f"TrackFitResults_m_{k}") for k in _TRACK_BRANCHES_SHORT}
    cols = {k: flat[k][index].astype(np.float64) for k in ("omega", "phi0", "tanLambda")}
    with np.errstate(divide="ignore", invalid="ignore"):
        pt = np.abs(B_FACTOR / cols["omega"])
    px, py = pt * np.cos(cols["phi0"]), pt * np.sin(cols["phi0"])
    pz = pt * cols["tanLambda"]
    p = np.sqrt(px**2 + py**2 + pz**2)
    e = np.sqrt(p**2 + MUON_MASS**2)
    # the pair's sums, track 0 + track 1 (what ``sum(1)`` adds, without its strided reduction)
    m2 = (
        (e[:, 0] + e[:, 1]) ** 2
        - (px[:, 0] + px[:, 1]) ** 2
        - (py[:, 0] + py[:, 1]) ** 2
        - (pz[:, 0] + pz[:, 1]) ** 2
    )
    mass = np.sqrt(np.maximum(m2, 0.0))
    s = SELECTION
    # the cuts compare the stored values: a float32 (or integer) value converts exactly to
    # float64, so each comparison is the one made on the float64 copy
    z0, d0, charge = (flat[k][index] for k in ("z0", "d0", "charge"))
    with np.errstate(invalid="ignore"):
        track_ok = (
            np.isfinite(p)
            & (p > s["p_min"])
            & (np.abs(z0.astype(np.float64)) < s["z0_max"])
            & (np.abs(d0.astype(np.float64)) < s["d0_max"])
            & (flat["nSVDHits"][index] >= s["svd_hits_min"])
            & (flat["nCDCHits"][index] >= s["cdc_hits_min"])
        )
        ok = (
            track_ok.all(1)
            & (charge[:, 0].astype(np.float64) * charge[:, 1].astype(np.float64) < 0)
            & (mass > s["mass_min"])
            & (mass < s["mass_max"])
        )
    # each kept event's two tracks as (row, track) positions of the (n, 2) arrays, the positive
    # track first: one gather per quantity
    rows = np.flatnonzero(ok)
    swap = (charge[rows, 0] < 0).astype(np.int64)
    at = 2 * rows[:, None] + np.column_stack([swap, 1 - swap])

    def pick(a: npt.NDArray[Any]) -> F:
        return np.asarray(np.ravel(a)[at], dtype=np.float64)

    t = _times(events)[two][ok].astype(np.int64)
    return Dimuons(
        d0=pick(d0),
        z0=pick(z0),
        phi0=pick(cols["phi0"]),
        tan_lambda=pick(cols["tanLambda"]),
        p=pick(p),
        px=pick(px),
        py=pick(py),
        pz=pick(pz),
        mass=mass[ok],
        time_ns=t,
        atom=atom_index(t),
    )


_TRACK_BRANCHES_SHORT = tuple(k.removeprefix("TrackFitResults_m_") for k in _TRACK_BRANCHES)


def __dir__() -> list[str]:
    return __all__
