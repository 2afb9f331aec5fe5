"""The beam-spot collector: additive moments of the tight dimuon events per time atom.

The beam spot is fitted by least squares whose normal equations, covariance (sandwich) and size
estimators are sums over events. :class:`BeamSpotCollector` fills, per run, the histogram
``beamspot_moments`` (axes: the global atom index, ``floor(t / 360 s)``, a category grown as
events come; the moment :data:`MOMENTS`; the selection: 0 every event, 1 the events within
basf2's residual cuts around the reference beam spot), ``Double`` storage: any sub-interval
of a run is the sum of its atoms. ``atoms`` counts the selected events in 10 s bins of
each atom (:func:`b2calib.calibration.intervals.atom_times_hist`, named ``atoms``: the first and
last event times of a run to 10 s, for the interval splitting).

Every track quantity is taken relative to the reference beam spot of the event's time (the
``BeamSpot`` payload the collector is built with, :class:`ReferenceSpots`; zero without one):
``d' = d0 - (x_ref sin(phi0) - y_ref cos(phi0))``, ``z' = z0 - z_ref``. The moments (per event
``e``, tracks ``i = 1, 2`` with ``a_i = (sin phi0_i, -cos phi0_i)`` and weight
``w_i = 1 / (sigma_d0,i^2 + sx^2 sin^2 phi0_i + sy^2 cos^2 phi0_i)``, the track resolution and
the nominal size projection):

================  ====  ============================================================
``n``             1     events
``A``             4     ``A_e = sum_i w_i a_i a_i^T`` (the position normal matrix)
``b``             2     ``b_e = sum_i w_i a_i d'_i``
``bb``            4     ``b_e b_e^T``                      (sandwich, clustered by event)
``bA``            8     ``b_e (x) A_e``
``AA``            16    ``A_e (x) A_e``
``wdd``           1     ``sum_i w_i d'_i^2``               (chi2)
``Aref``          2     ``A_e p_ref``                      (the reference, exactly added back)
``zbar``          1     ``(z'_1 + z'_2) / 2``               (z position)
``zbar2``         1     its square
``zref``          1     ``z_ref``
``bz``            2     ``b_e zbar``                       (x-z, y-z covariance)
``Az``            4     ``A_e zbar``
``z12``           1     ``z'_1 z'_2``                      (z size)
``z12sq``         1     ``(z'_1 z'_2)^2``
``z12sum``        1     ``z'_1 z'_2 (z'_1 + z'_2)``
``zsq``           1     ``z'_1^2 + z'_2^2``
``ff``            9     ``f f^T``, ``f = (s1 s2, c1 c2, -(s1 c2 + c1 s2))``  (xy size)
``fy``            3     ``f d'_1 d'_2``
``fd``            6     ``f (x) (d'_1 a_2 + d'_2 a_1)``
``faa``           12    ``f (x) a_1 (x) a_2``
``yy``            1     ``y^2``, ``y = d'_1 d'_2``
``yv``            2     ``y v``, ``v = d'_1 a_2 + d'_2 a_1``  (size residuals around any position)
``vv``            4     ``v v^T``
``yP``            4     ``y P``, ``P = a_1 a_2^T``
``vP``            8     ``v (x) P``
``PP``            16    ``P (x) P``
``ffyy``          9     ``f f^T y^2``                      (size sandwich, around the reference)
``ffyf``          27    ``f f^T y (x) f``
``ffff``          81    ``f f^T (x) f f^T``
================  ====  ============================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import ClassVar

import awkward as ak
import hist
import numpy as np
import numpy.typing as npt

from b2calib.calibration.intervals import (
    ATOMS_HISTOGRAM,
    atom_axis,
    atom_times_hist,
    fill_atom_times,
)
from b2calib.conditions.iov import RunKey
from b2calib.detectors.beam.dimuons import (
    DIMUON_BRANCHES,
    Dimuons,
    d0_resolution,
    prepare_selection,
    select_dimuons,
)
from b2calib.engine import Collector
from b2calib.fit._lm import compiled

__all__ = [
    "CUTS",
    "MOMENTS",
    "N_MOMENTS",
    "BeamSpotCollector",
    "ReferenceSpots",
    "event_moments",
    "moment",
    "reference_rows",
]

F = npt.NDArray[np.float64]

#: Moment name -> shape (see the module docstring).
MOMENTS: dict[str, tuple[int, ...]] = {
    "n": (),
    "A": (2, 2),
    "b": (2,),
    "bb": (2, 2),
    "bA": (2, 2, 2),
    "AA": (2, 2, 2, 2),
    "wdd": (),
    "Aref": (2,),
    "zbar": (),
    "zbar2": (),
    "zref": (),
    "bz": (2,),
    "Az": (2, 2),
    "z12": (),
    "z12sq": (),
    "z12sum": (),
    "zsq": (),
    "ff": (3, 3),
    "fy": (3,),
    "fd": (3, 2),
    "faa": (3, 2, 2),
    "yy": (),
    "yv": (2,),
    "vv": (2, 2),
    "yP": (2, 2),
    "vP": (2, 2, 2),
    "PP": (2, 2, 2, 2),
    "ffyy": (3, 3),
    "ffyf": (3, 3, 3),
    "ffff": (3, 3, 3, 3),
}
_SLICES: dict[str, tuple[slice, tuple[int, ...]]] = {}
_pos = 0
for _name, _shape in MOMENTS.items():
    _size = int(np.prod(_shape)) if _shape else 1
    _SLICES[_name] = (slice(_pos, _pos + _size), _shape)
    _pos += _size
#: Length of the moment vector.
N_MOMENTS = _pos
#: basf2's outlier cuts (cm, cm^2): |d0 residual| < 70 um, |z0 residual| < 1200 um,
#: |d'_1 d'_2 - expected| < 1600 um^2 (the xy-size cut, when the reference has a size).
CUTS = {"d0": 70e-4, "z0": 1200e-4, "dd": 1600e-8}


def moment(m: npt.ArrayLike, name: str) -> F:
    """The moment ``name`` of moment vectors ``m`` (last axis :data:`N_MOMENTS`), in its shape."""
    arr = np.asarray(m, dtype=np.float64)
    sl, shape = _SLICES[name]
    return arr[..., sl].reshape(arr.shape[:-1] + shape)


@dataclasses.dataclass(frozen=True)
class ReferenceSpots:
    """Reference beam spots per run: rows ``(exp, run, t_start_ns, t_end_ns, x, y, z, sxx,
    syy, sxy)`` (cm, cm^2; a size of 0 when unknown), as a time-dependent BeamSpot payload
    holds them. Within a run the first row extends to -infinity and the last to +infinity (the
    EventDependency lookup); a run without rows has the reference 0."""

    rows: tuple[tuple[int, int, int, int, float, float, float, float, float, float], ...] = ()

    def of_run(self, run: RunKey) -> tuple[npt.NDArray[np.int64], F] | None:
        """``(t_start_ns, values (n, 6))`` of the run's rows in time order, or None."""
        mine = sorted(r for r in self.rows if (r[0], r[1]) == run)
        if not mine:
            return None
        t = np.array([r[2] for r in mine], dtype=np.int64)
        v = np.array([r[4:] for r in mine], dtype=np.float64)
        return t, v

    def at(self, run: RunKey, t_ns: npt.ArrayLike) -> tuple[F, bool]:
        """The reference ``(n, 6)`` at the times ``t_ns`` of run ``run``, and whether the run
        has one."""
        t = np.asarray(t_ns, dtype=np.int64)
        table = self.of_run(run)
        if table is None:
            return np.zeros((len(t), 6)), False
        starts, vals = table
        idx = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(starts) - 1)
        return vals[idx], True


def reference_rows(
    per_run: Mapping[RunKey, Sequence[tuple[int, int, float, float, float, float, float, float]]],
) -> ReferenceSpots:
    """:class:`ReferenceSpots` from per-run rows ``(t_start_ns, t_end_ns, x, y, z, sxx, syy,
    sxy)``."""
    rows = []
    for (e, r), items in sorted(per_run.items()):
        for it in items:
            rows.append((int(e), int(r), int(it[0]), int(it[1]), *(float(v) for v in it[2:])))
    return ReferenceSpots(tuple(rows))  # type: ignore[arg-type]


def _outer(*arrs: F) -> F:
    """Per-event outer product of per-event vectors/tensors, flattened after the event axis."""

    def flat(a: F) -> F:
        return a.reshape(len(a), int(np.prod(a.shape[1:])))

    out = flat(arrs[0])
    for a in arrs[1:]:
        out = flat(out[:, :, None] * flat(a)[:, None, :])
    return out


def _tracks(mu: Dimuons, ref: F, nominal_size: tuple[float, float]) -> tuple[F, F, F, F, F]:
    """Per track ``(n, 2)``: ``sin phi0``, ``cos phi0``, the weight ``w``, ``d'`` and ``z'``."""
    s, c = np.sin(mu.phi0), np.cos(mu.phi0)
    dprime = mu.d0 - (ref[:, None, 0] * s - ref[:, None, 1] * c)
    zprime = mu.z0 - ref[:, None, 2]
    sig2 = d0_resolution(mu.p, mu.tan_lambda) ** 2
    w = 1.0 / (sig2 + (nominal_size[0] * s) ** 2 + (nominal_size[1] * c) ** 2)
    return s, c, w, dprime, zprime


def event_moments(mu: Dimuons, ref: F, *, nominal_size: tuple[float, float] = (10e-4, 0.0)) -> F:
    """The moment vectors ``(n, N_MOMENTS)`` of the events ``mu`` relative to the reference
    ``ref`` ``(n, 6)`` (x, y, z, sxx, syy, sxy at each event's time)."""
    n = len(mu)
    s, c, w, dprime, zprime = _tracks(mu, ref, nominal_size)
    a = np.stack([s, -c], axis=-1)  # (n, 2 tracks, 2)
    A = np.einsum("et,eti,etj->eij", w, a, a)
    b = np.einsum("et,eti,et->ei", w, a, dprime)
    zbar = zprime.mean(axis=1)
    z1, z2 = zprime[:, 0], zprime[:, 1]
    z12 = z1 * z2
    f = np.stack(
        [s[:, 0] * s[:, 1], c[:, 0] * c[:, 1], -(s[:, 0] * c[:, 1] + c[:, 0] * s[:, 1])], 1
    )
    y0 = dprime[:, 0] * dprime[:, 1]
    dmix = dprime[:, 0, None] * a[:, 1] + dprime[:, 1, None] * a[:, 0]
    pmat = a[:, 0, :, None] * a[:, 1, None, :]
    parts = {
        "n": np.ones(n),
        "A": A,
        "b": b,
        "bb": _outer(b, b),
        "bA": _outer(b, A),
        "AA": _outer(A, A),
        "wdd": np.einsum("et,et->e", w, dprime**2),
        "Aref": np.einsum("eij,ej->ei", A, ref[:, :2]),
        "zbar": zbar,
        "zbar2": zbar**2,
        "zref": ref[:, 2],
        "bz": b * zbar[:, None],
        "Az": A * zbar[:, None, None],
        "z12": z12,
        "z12sq": z12**2,
        "z12sum": z12 * (z1 + z2),
        "zsq": z1**2 + z2**2,
        "ff": _outer(f, f),
        "fy": f * y0[:, None],
        "fd": _outer(f, dmix),
        "faa": _outer(f, a[:, 0], a[:, 1]),
        "yy": y0**2,
        "yv": y0[:, None] * dmix,
        "vv": _outer(dmix, dmix),
        "yP": y0[:, None] * pmat.reshape(n, 4),
        "vP": _outer(dmix, pmat),
        "PP": _outer(pmat, pmat),
        "ffyy": _outer(f, f) * (y0**2)[:, None],
        "ffyf": _outer(f, f, f * y0[:, None]),
        "ffff": _outer(f, f, f, f),
    }
    out = np.empty((n, N_MOMENTS))
    for name, (sl, _) in _SLICES.items():
        out[:, sl] = parts[name].reshape(n, sl.stop - sl.start)
    return out


def _atom_sums(
    mu: Dimuons,
    ref: F,
    clean: npt.NDArray[np.bool_],
    *,
    nominal_size: tuple[float, float] = (10e-4, 0.0),
    compiled_kernel: bool = True,
    tracks: tuple[F, F, F, F, F] | None = None,
) -> tuple[npt.NDArray[np.int64], F]:
    """The atoms of the events ``mu`` (sorted) and their moments summed per atom, ``(atoms,
    2, N_MOMENTS)``: ``[:, 0]`` every event, ``[:, 1]`` the ``clean`` ones; each atom's events
    added in their order.

    Compiled (:mod:`b2calib.detectors.beam._moments`, one event at a time) when numba is there
    and ``compiled_kernel``; else the sums of :func:`event_moments`. The two give the same sums,
    bit for bit (each event's moments are the same, bit for bit, and added in the same order).
    ``tracks``: :func:`_tracks` of the same arguments, when the caller has them.
    """
    atoms, slot = np.unique(mu.atom, return_inverse=True)
    sums = np.zeros((len(atoms), 2, N_MOMENTS))
    if not len(atoms):
        return atoms, sums
    kernel = (
        compiled("b2calib.detectors.beam._moments", "atom_moments") if compiled_kernel else None
    )
    if kernel is not None:
        s, c, w, dprime, zprime = tracks or _tracks(mu, ref, nominal_size)
        kernel(s, c, w, dprime, zprime, ref, clean, slot.astype(np.int64), sums)
        return atoms, sums
    m = event_moments(mu, ref, nominal_size=nominal_size)
    # unbuffered, in event order: each atom's events added one after the other, as the kernel
    # adds them (``reduceat`` adds in another order: sums within 4e-13 of these)
    np.add.at(sums[:, 0], slot, m)
    np.add.at(sums[:, 1], slot[clean], m[clean])
    return atoms, sums


def _clean(
    mu: Dimuons, ref: F, tracks: tuple[F, F, F, F, F] | None = None
) -> npt.NDArray[np.bool_]:
    """basf2's residual cuts around the reference (every event passes the size cut when the
    reference has no size); ``tracks``: :func:`_tracks` of the events and reference, when the
    caller has them (their ``sin``, ``cos``, ``d'`` and ``z'`` are these)."""
    if tracks is None:
        s, c = np.sin(mu.phi0), np.cos(mu.phi0)
        d = mu.d0 - (ref[:, None, 0] * s - ref[:, None, 1] * c)
        z = mu.z0 - ref[:, None, 2]
    else:
        s, c, _, d, z = tracks
    ok = (np.abs(d) < CUTS["d0"]).all(1) & (np.abs(z) < CUTS["z0"]).all(1)
    f = np.stack(
        [s[:, 0] * s[:, 1], c[:, 0] * c[:, 1], -(s[:, 0] * c[:, 1] + c[:, 0] * s[:, 1])], 1
    )
    expected = np.einsum("ej,ej->e", f, ref[:, 3:6])
    has_size = (ref[:, 3] > 0) | (ref[:, 4] > 0)
    return ok & (~has_size | (np.abs(d[:, 0] * d[:, 1] - expected) < CUTS["dd"]))


@dataclasses.dataclass(frozen=True)
class BeamSpotCollector(Collector):
    """Moments of the tight dimuon events per atom (see the module docstring).

    Attributes
    ----------
    reference
        The reference beam spots (from the ``BeamSpot`` payloads valid for the runs).
    nominal_size_x, nominal_size_y
        Beam-spot size (cm) in the track weights (efficiency only: the errors are sandwich
        errors, right with any weights).
    """

    reference: ReferenceSpots = ReferenceSpots()
    nominal_size_x: float = 10e-4
    nominal_size_y: float = 0.0
    version: ClassVar[int] = 1

    @property
    def branches(self) -> dict[str, str]:
        return dict(DIMUON_BRANCHES)

    def prepare(self) -> None:
        """Load the compiled selection and moment sums (forked workers inherit them)."""
        prepare_selection()
        kernel = compiled("b2calib.detectors.beam._moments", "atom_moments")
        if kernel is not None:
            e = np.zeros((0, 2))
            kernel(
                e,
                e,
                e,
                e,
                e,
                np.zeros((0, 6)),
                np.zeros(0, bool),
                np.zeros(0, np.int64),
                np.zeros((0, 2, N_MOMENTS)),
            )

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        mu = select_dimuons(events)
        if len(mu):
            exp = np.asarray(ak.to_numpy(events["EventMetaData_m_experiment"]))
            run = np.asarray(ak.to_numpy(events["EventMetaData_m_run"]))
            key = (int(exp[0]), int(run[0]))
        else:
            key = (0, 0)
        ref, _ = self.reference.at(key, mu.time_ns)
        size = (self.nominal_size_x, self.nominal_size_y)
        tracks = _tracks(mu, ref, size)  # the cuts' residuals are the moments' (computed once)
        atoms, sums = _atom_sums(mu, ref, _clean(mu, ref, tracks), nominal_size=size, tracks=tracks)
        h = hist.Hist(
            atom_axis(),
            hist.axis.Integer(0, 2, name="selection", underflow=False, overflow=False),
            hist.axis.Integer(0, N_MOMENTS, name="moment", underflow=False, overflow=False),
            storage=hist.storage.Double(),
        )
        if len(atoms):
            h.fill(
                atom=np.repeat(atoms, 2 * N_MOMENTS),
                selection=np.tile(np.repeat([0, 1], N_MOMENTS), len(atoms)),
                moment=np.tile(np.arange(N_MOMENTS), 2 * len(atoms)),
                weight=sums.ravel(),
            )
        times = fill_atom_times(atom_times_hist(), mu.time_ns)
        return {"beamspot_moments": h, ATOMS_HISTOGRAM: times}


def __dir__() -> list[str]:
    return __all__
