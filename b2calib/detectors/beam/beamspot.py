"""The beam spot (``beamspot``, BeamSpot): the interaction-point position per time
sub-interval and the luminous-region size per outer interval, from tight dimuon events.

Method (after basf2's ``BeamSpotAlgorithm`` / ``BeamSpotStandAlone`` by R. Zlebcik, and
BELLE2-NOTE-TE-2019-018; the collector's moments are described in
:mod:`b2calib.detectors.beam.collectors`):

* **Time intervals** (:mod:`b2calib.calibration.intervals`): atoms of 0.1 h, outer intervals
  (whole runs, one payload each) with the loss ``pow(rawTime-2.0,2)+10*pow(maxGap,2)``,
  sub-intervals with ``pow(rawTime-0.5,2)+10*pow(maxGap,2)``; one payload row per sub-interval.
* **Position x, y** per sub-interval: least squares of the track impact parameters on
  ``d0 = x sin(phi0) - y cos(phi0)``, weighted by ``1 / (sigma_d0^2 + size projection^2)``
  (basf2: unweighted). The covariance is the sandwich estimator clustered by event
  (``H^-1 (sum_e g_e g_e^T) H^-1 G / (G - 1)``, ``g_e`` the event's score): right whatever the
  weights, and it counts that both tracks of an event come from one vertex (their
  luminous-region offsets add coherently, the tracks being back to back). basf2 takes the
  residual variance of an unweighted fit.
* **Position z**: the mean over events of ``(z0_1 + z0_2) / 2`` with the error of a mean
  (the luminous region, 350 um long, dominates the 20 um tracks). basf2's z estimate adds
  ``tanLambda (x cos(phi0) + y sin(phi0))``: the simulator's ``z0`` is the vertex ``z``
  already (:mod:`b2calib.detectors.beam.dimuons`).
* **Size** per outer interval, without the track resolution, from products of the two tracks'
  residuals (their errors are independent, so the products' expectation is the size alone,
  as in basf2): ``<d'_1 d'_2> = s1 s2 Sxx + c1 c2 Syy - (s1 c2 + c1 s2) Sxy`` by least squares
  over all events of the outer interval (each around its own sub-interval's position), and
  ``<z'_1 z'_2> = Szz``. Better than basf2: the bias from the fitted positions (of order
  ``1/n`` of a sub-interval, the ``n - 1`` of a variance) is removed (``E = S - C_pos``); the
  xy errors are sandwich errors (the products' variance depends on the track directions; the
  products taken around the reference, which the iteration brings onto the fit), the z error
  that of a mean. basf2 takes the residual variance.
* **Resolved or not**: a diagonal element is resolved when it exceeds ``resolved_sigmas``
  (expert_config, 2) of its error. An unresolved one is stored as 0 (its off-diagonal
  elements too) and named in ``metadata["size"][k]["not_resolved"]`` (``k`` the outer interval
  in the payload) with its fit and upper limit (value + 2 errors): the vertical size (0.2 um,
  against a 12 um d0 resolution) always is; the horizontal one (~10 um) is with a few thousand
  events. basf2 instead constrains the
  smallest eigen-size of the xy size matrix to 0.05 um (its ``linearFitPos``) and rotates the
  matrix by the fitted beam tilts (kX, kY); the simulator has no tilt, this algorithm fits none
  (``size_xz = size_yz = 0``, and the x-z, y-z position covariance comes from the sandwich).
* **Outliers** (basf2's cuts on the residuals around a first fit: |d0| < 70 um, |z0| < 1200 um,
  |d'_1 d'_2 - expected| < 1600 um^2): the collector takes residuals around a reference beam
  spot and fills the moments twice, all events and those within the cuts. A first pass uses
  the ``BeamSpot`` in the input tags (0 without one) and, as long as the fitted positions
  differ from the reference by more than ``reference_tolerance_um``, the algorithm asks to
  ITERATE (one more collector pass with its own payload as the reference; at most
  ``max_passes``); the pass whose reference agrees uses the events within the cuts.
* **Steps inside a run** (not in basf2, whose split sees only times and event counts): the
  position fitted to each atom alone is the series in which
  :class:`~b2calib.calibration.intervals.IntervalAlgorithm` searches each run for steps (binary
  segmentation, 5 standard deviations in one coordinate); each step found is then moved, by
  at most two atoms, to where the three coordinates together differ most, and a sub-interval
  starts at its atom, so that a beam step is placed to within one atom.
* A sub-interval that fails copies its nearest good neighbour, flagged (FAILED or
  NOT_ENOUGH_DATA); fewer than 15 events in all is NOT_ENOUGH_DATA. An outer interval of fewer
  than 50 events joins the payload of its neighbours (:meth:`BeamSpotAlgorithm.boundaries`) and
  copies their rows, flagged, so that no run is left without a payload.

Payload (time-dependent, one row per sub-interval): keys ``t_start``, ``t_end`` (UNIX ns),
values ``x, y, z`` (cm) with errors, ``cov_xx .. cov_zz`` (cm^2), ``size_xx .. size_zz``
(cm^2, shared by the rows of an outer interval; errors of the fitted elements), status.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from b2calib.calibration import (
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Calibration,
    CollectorInput,
    Constants,
    PayloadComparison,
    SequentialBoundaries,
)
from b2calib.calibration.fitview import NoChannelFit
from b2calib.calibration.intervals import (
    BEAMSPOT_INNER_LOSS,
    BEAMSPOT_OUTER_LOSS,
    Atom,
    IntervalAlgorithm,
    IntervalFit,
    OuterInterval,
    SubInterval,
    per_atom,
    sum_atoms,
)
from b2calib.calibration.toolkit import NotEnoughData
from b2calib.conditions.iov import RunKey
from b2calib.conditions.payload import Payload
from b2calib.detectors.beam.collectors import (
    N_MOMENTS,
    BeamSpotCollector,
    ReferenceSpots,
    moment,
)

__all__ = [
    "BEAMSPOT",
    "RUNS_AFTER",
    "BeamSpotAlgorithm",
    "PositionFit",
    "SizeFit",
    "beamspot_calibration",
    "beamspot_collector",
    "fit_position",
    "fit_size",
    "reference_spots",
]

F = npt.NDArray[np.float64]

BEAMSPOT = "BeamSpot"
#: The calibrations the beam spot runs after when they are scheduled (Belle II's prompt script
#: order); it reads none of their payloads, so they are ordering only (``after``).
RUNS_AFTER = (
    "cdc-dedx-run-gain",
    "cdc-dedx-cosine",
    "cdc-dedx-wire-gain",
    "top-channel-t0",
    "top-module-t0",
    "top-common-t0",
    "klm-strip-efficiency",
    "klm-time",
)
_MOMENTS = "beamspot_moments"
_XYZ = ("x", "y", "z")
_PAIRS = ("xx", "xy", "xz", "yy", "yz", "zz")
_IDX = {"xx": (0, 0), "xy": (0, 1), "xz": (0, 2), "yy": (1, 1), "yz": (1, 2), "zz": (2, 2)}


# ------------------------------------------------------------------------ the reference
def _rows_of(p: Payload) -> list[tuple[int, int, float, float, float, float, float, float]]:
    """Reference rows ``(t_start_ns, t_end_ns, x, y, z, sxx, syy, sxy)`` of a BeamSpot payload
    (time-dependent, or one row valid for the whole run)."""
    n = len(p)
    big = np.iinfo(np.int64).max

    def col(name: str) -> F:
        return np.asarray(p.values[name], dtype=np.float64) if name in p.values else np.zeros(n)

    t0 = np.asarray(p.keys.get("t_start", np.full(n, -big)), dtype=np.int64)
    t1 = np.asarray(p.keys.get("t_end", np.full(n, big)), dtype=np.int64)
    x, y, z = col("x"), col("y"), col("z")
    sxx, syy, sxy = col("size_xx"), col("size_yy"), col("size_xy")
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    return [
        (int(t0[i]), int(t1[i]), x[i], y[i], z[i], sxx[i], syy[i], sxy[i])
        for i in range(n)
        if ok[i]
    ]


def reference_spots(constants: Constants, runs: Sequence[RunKey]) -> ReferenceSpots:
    """The BeamSpot payloads valid for ``runs`` as the collector's reference (whole, all time
    intervals); runs without one have none."""
    rows = []
    for e, r in runs:
        p = constants.stored(BEAMSPOT, e, r)
        if p is None:
            continue
        for it in _rows_of(p):
            rows.append((int(e), int(r), *it))
    return ReferenceSpots(tuple(rows))


def beamspot_collector(constants: Constants, runs: Sequence[RunKey]) -> BeamSpotCollector:
    """The collector with the BeamSpot valid for each run as the reference."""
    return BeamSpotCollector(reference=reference_spots(constants, runs))


# ------------------------------------------------------------------------------- fits
@dataclass(frozen=True)
class PositionFit:
    """The position of one sub-interval.

    ``position`` (cm) and ``cov`` (3 x 3, cm^2); ``reference`` the moments' mean reference
    position (weighted as the fit); ``n_events``; ``chi2``/``ndf`` of the d0 fit; ``ok`` and
    the reason when not."""

    position: F
    cov: F
    reference: F
    n_events: float
    chi2: float
    ndf: int
    ok: bool
    message: str = ""


def _sym(m: F) -> F:
    return np.asarray(0.5 * (m + m.T), dtype=np.float64)


def fit_position(m: npt.ArrayLike, *, min_events: float = 2) -> PositionFit:
    """The position of the events whose moments (summed) are ``m`` (:data:`N_MOMENTS`)."""
    m = np.asarray(m, dtype=np.float64)
    n = float(moment(m, "n"))
    nan3 = np.full(3, np.nan)
    if n < max(min_events, 2):
        return PositionFit(nan3, np.full((3, 3), np.nan), nan3, n, 0.0, 0, False, f"{n:g} events")
    H = moment(m, "A")
    if not np.all(np.isfinite(H)) or np.linalg.cond(H) > 1e10:
        return PositionFit(
            nan3, np.full((3, 3), np.nan), nan3, n, 0.0, 0, False, "tracks do not span x and y"
        )
    Hinv = np.linalg.inv(H)
    b = moment(m, "b")
    delta = Hinv @ b
    ref_xy = Hinv @ moment(m, "Aref")
    bA, AA = moment(m, "bA"), moment(m, "AA")
    cross = np.einsum("jlm,m->jl", bA, delta)
    meat = moment(m, "bb") - cross - cross.T + np.einsum("jklm,k,m->jl", AA, delta, delta)
    scale = n / (n - 1)
    cov_xy = _sym(Hinv @ meat @ Hinv) * scale
    zsum, z2 = float(moment(m, "zbar")), float(moment(m, "zbar2"))
    zm = zsum / n
    var_z = max(z2 - n * zm**2, 0.0) / (n - 1)
    ref_z = float(moment(m, "zref")) / n
    # x-z, y-z: sum_e g_e (zbar_e - zm)
    g_z = moment(m, "bz") - zm * b - moment(m, "Az") @ delta + zm * (H @ delta)
    cov_xyz = Hinv @ g_z / n * scale
    cov = np.zeros((3, 3))
    cov[:2, :2] = cov_xy
    cov[:2, 2] = cov[2, :2] = cov_xyz
    cov[2, 2] = var_z / n
    chi2 = float(moment(m, "wdd") - 2 * delta @ b + delta @ H @ delta)
    pos = np.array([*(ref_xy + delta), ref_z + zm])
    ref = np.array([*ref_xy, ref_z])
    ok = bool(np.all(np.isfinite(pos)) and np.all(np.diag(cov) > 0))
    return PositionFit(pos, cov, ref, n, chi2, int(2 * n - 2), ok, "" if ok else "no spread")


def _atom_positions(m: npt.ArrayLike, *, min_events: float = 2) -> tuple[F, F]:
    """:func:`fit_position` of many moment vectors at once (rows of ``m``), as the step search
    needs them: the positions ``(k, 3)`` and their errors (NaN where the fit is not ``ok``). The
    same arithmetic on stacked arrays (2x2 matrices: no reduction longer than 2 terms), so
    within rounding of the one-by-one fits (tests/test_beamspot.py)."""
    m = np.asarray(m, dtype=np.float64)
    k = len(m)
    values = np.full((k, 3), np.nan)
    errors = np.full((k, 3), np.nan)
    n = moment(m, "n")
    H = moment(m, "A")
    finite = np.all(np.isfinite(H), axis=(1, 2)) & (n >= max(min_events, 2))
    eye = np.broadcast_to(np.eye(2), H.shape)
    H = np.where(finite[:, None, None], H, eye)
    good = finite & (np.linalg.cond(H) <= 1e10)
    if not good.any():
        return values, errors
    m, n, H = m[good], n[good], H[good]
    Hinv = np.linalg.inv(H)
    b = moment(m, "b")
    delta = np.einsum("aij,aj->ai", Hinv, b)
    ref_xy = np.einsum("aij,aj->ai", Hinv, moment(m, "Aref"))
    cross = np.einsum("ajlm,am->ajl", moment(m, "bA"), delta)
    meat = (
        moment(m, "bb")
        - cross
        - cross.transpose(0, 2, 1)
        + np.einsum("ajklm,ak,am->ajl", moment(m, "AA"), delta, delta)
    )
    cov_xy = Hinv @ meat @ Hinv
    cov_xy = 0.5 * (cov_xy + cov_xy.transpose(0, 2, 1)) * (n / (n - 1))[:, None, None]
    zm = moment(m, "zbar") / n
    var_z = np.maximum(moment(m, "zbar2") - n * zm**2, 0.0) / (n - 1)
    pos = np.column_stack([ref_xy + delta, moment(m, "zref") / n + zm])
    diag = np.column_stack([cov_xy[:, 0, 0], cov_xy[:, 1, 1], var_z / n])
    ok = np.all(np.isfinite(pos), axis=1) & np.all(diag > 0, axis=1)
    rows = np.flatnonzero(good)[ok]
    values[rows] = pos[ok]
    errors[rows] = np.sqrt(diag[ok])
    return values, errors


@dataclass(frozen=True)
class SizeFit:
    """The luminous-region size of an outer interval.

    ``matrix`` (3 x 3, cm^2) as fitted, ``errors`` (3 x 3) of its elements (NaN where not
    fitted: x-z, y-z), ``resolved`` per diagonal element, ``n_events``."""

    matrix: F
    errors: F
    resolved: dict[str, bool]
    n_events: float

    def stored(self) -> F:
        """The size matrix as stored: unresolved diagonal elements, and the off-diagonal
        elements of an unresolved one, set to 0."""
        out = np.nan_to_num(self.matrix.copy())
        for k, axis in enumerate(_XYZ):
            if not self.resolved[axis * 2]:
                out[k, :] = 0.0
                out[:, k] = 0.0
        return out


def fit_size(
    moments: Sequence[npt.ArrayLike], positions: Sequence[PositionFit], *, sigmas: float = 2.0
) -> SizeFit:
    """The size from the summed moments of each sub-interval and its fitted position (only
    those with ``ok`` positions count)."""
    ff = np.zeros((3, 3))
    rhs = np.zeros(3)
    yy = 0.0
    n_tot = 0.0
    sy = sy2 = 0.0
    zbias = 0.0
    terms: list[tuple[F, F]] = []
    for m_, fit in zip(moments, positions, strict=True):
        if not fit.ok:
            continue
        m = np.asarray(m_, dtype=np.float64)
        n = float(moment(m, "n"))
        d = fit.position[:2] - fit.reference[:2]
        ffk = moment(m, "ff")
        fy = moment(m, "fy") - moment(m, "fd") @ d + np.einsum("jkm,k,m->j", moment(m, "faa"), d, d)
        c = np.array([fit.cov[0, 0], fit.cov[1, 1], fit.cov[0, 1]])
        ff += ffk
        rhs += fy + ffk @ c
        terms.append((m, c))
        # sum of y^2 around this position: y = y0 - v.d + d^T P d
        vd = moment(m, "yv") @ d
        q = np.einsum("jk,j,k->", moment(m, "yP"), d, d)
        yy += float(
            moment(m, "yy")
            + np.einsum("jk,j,k->", moment(m, "vv"), d, d)
            + np.einsum("jklm,j,k,l,m->", moment(m, "PP"), d, d, d, d)
            - 2 * vd
            + 2 * q
            - 2 * np.einsum("jlm,j,l,m->", moment(m, "vP"), d, d, d)
        )
        dz = fit.position[2] - fit.reference[2]
        z12, zbar = float(moment(m, "z12")), float(moment(m, "zbar"))
        sy += z12 - 2 * dz * zbar + n * dz**2
        sy2 += (
            float(moment(m, "z12sq"))
            + dz**2 * (float(moment(m, "zsq")) + 2 * z12)
            + n * dz**4
            - 2 * dz * float(moment(m, "z12sum"))
            + 2 * dz**2 * z12
            - 4 * dz**3 * zbar
        )
        zbias += n * fit.cov[2, 2]
        n_tot += n
    matrix = np.full((3, 3), np.nan)
    errors = np.full((3, 3), np.nan)
    if n_tot < 4 or np.linalg.cond(ff) > 1e12:
        raise NotEnoughData(f"{n_tot:g} events: no size fit")
    ffinv = np.linalg.inv(ff)
    s = ffinv @ rhs
    # sandwich covariance (the products' variance depends on the track directions); the
    # residuals around each sub-interval's expectation f.(S - C_k), y taken around the
    # reference (the algorithm iterates until the two agree)
    meat = np.zeros((3, 3))
    for m_, c in terms:
        sk = s - c
        meat += (
            moment(m_, "ffyy")
            - 2 * np.einsum("jkl,l->jk", moment(m_, "ffyf"), sk)
            + np.einsum("jklm,l,m->jk", moment(m_, "ffff"), sk, sk)
        )
    cov_s = _sym(ffinv @ meat @ ffinv) * n_tot / (n_tot - 3)
    es = np.sqrt(np.diag(cov_s))
    szz = (sy + zbias) / n_tot
    var_y = max(sy2 - sy**2 / n_tot, 0.0) / (n_tot - 1)
    ezz = math.sqrt(var_y / n_tot)
    matrix[0, 0], matrix[1, 1], matrix[0, 1] = s
    matrix[1, 0] = matrix[0, 1]
    matrix[2, 2] = szz
    matrix[0, 2] = matrix[2, 0] = matrix[1, 2] = matrix[2, 1] = 0.0
    errors[0, 0], errors[1, 1], errors[0, 1] = es
    errors[1, 0] = errors[0, 1]
    errors[2, 2] = ezz
    resolved = {
        p: bool(matrix[i, i] > sigmas * errors[i, i]) for p, i in (("xx", 0), ("yy", 1), ("zz", 2))
    }
    return SizeFit(matrix, errors, resolved, n_tot)


# -------------------------------------------------------------------------- algorithm
class BeamSpotAlgorithm(IntervalAlgorithm):
    """BeamSpot per time sub-interval (see the module docstring)."""

    name = "beamspot"
    payload = BEAMSPOT
    payloads = (BEAMSPOT,)
    default_outer_loss = BEAMSPOT_OUTER_LOSS
    default_inner_loss = BEAMSPOT_INNER_LOSS
    units: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            **dict.fromkeys(_XYZ, "cm"),
            **{f"cov_{p}": "cm^2" for p in _PAIRS},
            **{f"size_{p}": "cm^2" for p in _PAIRS},
        }
    )
    description = (
        "beam spot per time interval: IP position (x, y, z) with its covariance per "
        "sub-interval, luminous-region size covariance per outer interval (0 where not "
        "resolved, see metadata['size'])"
    )

    # ------------------------------------------------------------------ moments
    def _moments(self, data: AlgorithmInput, atoms: Sequence[Atom], sel: int) -> F:
        memo = self.__dict__.get("_memo")
        if memo is None:  # outside run()
            h = sum_atoms(data.per_run, _MOMENTS, atoms)
            if h is None:
                return np.zeros(N_MOMENTS)
            return np.asarray(h.values()[sel], dtype=np.float64)
        # sum_atoms' additions on the run's moments of selection ``sel`` only, kept per run as
        # C-ordered rows (the histogram's view is Fortran-ordered: picking the atoms of each
        # sub-interval from it cost most of the algorithm)
        by_run: dict[RunKey, list[int]] = {}
        for a in atoms:
            by_run.setdefault(a.key, []).append(a.index)
        total: F | None = None
        for key in sorted(by_run):
            rows = self._run_moments(data, key, sel, memo)
            if rows is None:
                continue
            where, table = rows
            pos = sorted({where[a] for a in by_run[key] if a in where})
            part = np.take(table, pos, axis=0).sum(axis=0)
            total = part if total is None else total + part
        return np.zeros(N_MOMENTS) if total is None else total

    @staticmethod
    def _run_moments(
        data: AlgorithmInput, key: RunKey, sel: int, memo: dict[Any, Any]
    ) -> tuple[dict[int, int], F] | None:
        """The atoms of run ``key`` (index -> row) and their moments of selection ``sel``, a
        C-ordered row per atom, made once per execution; ``None`` without the histogram."""
        found = ("run moments", id(data), key, sel)
        if found not in memo:
            h = data.per_run[key].get(_MOMENTS) if key in data.per_run else None
            if h is None:
                memo[found] = None
            else:
                assert [x.name for x in h.axes] == ["atom", "selection", "moment"]
                where = {int(c): i for i, c in enumerate(h.axes["atom"])}
                table = np.ascontiguousarray(h.values()[:, sel, :], dtype=np.float64)
                memo[found] = (where, table)
        out: tuple[dict[int, int], F] | None = memo[found]
        return out

    def _position(
        self, data: AlgorithmInput, atoms: Sequence[Atom], sel: int
    ) -> tuple[F, PositionFit]:
        """The summed moments of ``atoms`` (selection ``sel``) and the position fitted to them,
        computed once per execution (:meth:`run`'s memo): the outer fits and each
        sub-interval's fit ask for the same ones."""
        memo = self.__dict__.get("_memo")
        key = ("position", id(data), sel, tuple((a.key, a.index) for a in atoms))
        if memo is not None and key in memo:
            found: tuple[F, PositionFit] = memo[key]
            return found
        m = self._moments(data, atoms, sel)
        out = (m, fit_position(m))
        if memo is not None:
            memo[key] = out
        return out

    def _fits(
        self, data: AlgorithmInput, outer: OuterInterval, atoms: Sequence[Atom]
    ) -> tuple[int, list[F], list[PositionFit], bool]:
        """The selection used (0 all, 1 within the cuts), the moments and positions of every
        sub-interval, and whether the reference agreed with the fit (converged); computed once
        per execution (:meth:`run` clears the memo)."""
        memo = self.__dict__.get("_memo")
        if memo is None:  # outside run()
            return self._compute_fits(data, outer, atoms)
        key = ("fits", id(data), tuple(s.atoms for s in outer.subs))
        if key not in memo:
            memo[key] = self._compute_fits(data, outer, atoms)
        return memo[key]

    def _compute_fits(
        self, data: AlgorithmInput, outer: OuterInterval, atoms: Sequence[Atom]
    ) -> tuple[int, list[F], list[PositionFit], bool]:
        subs = [[atoms[i] for i in s.atoms] for s in outer.subs]
        tol = np.asarray(data.config["reference_tolerance_um"], dtype=np.float64) * 1e-4
        every = [self._position(data, a, 0) for a in subs]
        fits = [f for _, f in every]
        good = [f for f in fits if f.ok]
        converged = bool(good) and all(np.all(np.abs(f.position - f.reference) < tol) for f in good)
        if not converged:
            return 0, [m for m, _ in every], fits, False
        clean = [self._position(data, a, 1) for a in subs]
        return 1, [m for m, _ in clean], [f for _, f in clean], True

    # ------------------------------------------------------------------ steps
    def partition(self, data: AlgorithmInput) -> tuple[list[Atom], list[OuterInterval]]:
        """The framework's partition (computed once per execution inside :meth:`run`)."""
        memo = self.__dict__.get("_memo")
        if memo is None:
            return super().partition(data)
        key = ("partition", id(data))
        if key not in memo:
            memo[key] = super().partition(data)
        return memo[key]

    def atom_series(self, data: AlgorithmInput, atoms: Sequence[Atom]) -> tuple[F, F]:
        """The position (x, y, z) fitted to each atom alone, with its errors (NaN for an atom
        of fewer than ``min_atom_events`` events): the series in which the framework
        searches for steps inside runs (a sub-interval then starts at the step's atom).
        Computed once per execution (:meth:`run`'s memo): :meth:`steps` asks twice."""
        memo = self.__dict__.get("_memo")
        if memo is None:
            return self._atom_series(data, atoms)
        key = ("series", id(data), tuple((a.key, a.index) for a in atoms))
        if key not in memo:
            memo[key] = self._atom_series(data, atoms)
        found: tuple[F, F] = memo[key]
        return found

    def _atom_series(self, data: AlgorithmInput, atoms: Sequence[Atom]) -> tuple[F, F]:
        moments = per_atom(data.per_run, _MOMENTS, atoms)
        values = np.full((len(atoms), 3), np.nan)
        errors = np.full((len(atoms), 3), np.nan)
        if moments.ndim != 3:
            return values, errors
        return _atom_positions(moments[:, 0], min_events=float(data.config["min_atom_events"]))

    def steps(self, data: AlgorithmInput, atoms: Sequence[Atom]) -> list[int]:
        """The framework's steps (a column's weighted means differ by 5 standard deviations),
        each moved to the atom, among the two before and after it in its run, where the
        positions before and after differ most in all three coordinates together (the sum of
        the squared significances): the most significant single coordinate places a step one
        atom off more often (with ~25 events per atom, a 8 um step in x: ~10 %)."""
        found = super().steps(data, atoms)
        if not found:
            return found
        values, errors = self.atom_series(data, atoms)
        good = np.isfinite(errors) & (errors > 0)
        w = np.where(good, 1.0 / np.where(good, errors, 1.0) ** 2, 0.0)
        wv = w * np.nan_to_num(values)
        by_run: dict[RunKey, list[int]] = {}
        for i, a in enumerate(atoms):
            by_run.setdefault(a.key, []).append(i)
        for idx in by_run.values():
            idx.sort(key=lambda i: atoms[i].t_start)
        out = []
        for pos, k in enumerate(found):
            idx = by_run[atoms[k].key]
            j = idx.index(k)
            # the segment between the neighbouring steps of the same run
            lo = max([idx.index(f) for f in found[:pos] if f in idx] + [0])
            hi = min([idx.index(f) for f in found[pos + 1 :] if f in idx] + [len(idx)])
            best, best_chi2 = j, -1.0
            for c in range(max(lo + 1, j - 2), min(hi - 1, j + 2) + 1):
                left, right = idx[lo:c], idx[c:hi]
                sw1, sw2 = w[left].sum(0), w[right].sum(0)
                ok = (sw1 > 0) & (sw2 > 0)
                if not ok.any():
                    continue
                m1 = wv[left].sum(0)[ok] / sw1[ok]
                m2 = wv[right].sum(0)[ok] / sw2[ok]
                chi2 = float(np.sum((m2 - m1) ** 2 / (1 / sw1[ok] + 1 / sw2[ok])))
                if chi2 > best_chi2:
                    best, best_chi2 = c, chi2
            out.append(idx[best])
        return sorted(set(out))

    # ------------------------------------------------------------------ interval fits
    def fit_outer(
        self, data: AlgorithmInput, outer: OuterInterval, atoms: Sequence[Atom]
    ) -> IntervalFit:
        _, moments, fits, _ = self._fits(data, outer, atoms)
        size = fit_size(moments, fits, sigmas=float(data.config["resolved_sigmas"]))
        stored = size.stored()
        values = {f"size_{p}": float(stored[_IDX[p]]) for p in _PAIRS}
        errors = {
            f"size_{p}": float(size.errors[_IDX[p]])
            for p in _PAIRS
            if np.isfinite(size.errors[_IDX[p]])
        }
        return IntervalFit(values, errors, True, "")

    def fit_sub(
        self,
        data: AlgorithmInput,
        outer: OuterInterval,
        sub: SubInterval,
        atoms: Sequence[Atom],
        shared: IntervalFit | None,
    ) -> IntervalFit:
        sel = self._selection(data, outer, atoms)
        _, fit = self._position(data, [atoms[i] for i in sub.atoms], sel)
        if not fit.ok:
            if fit.n_events < 2:
                raise NotEnoughData(fit.message)
            return IntervalFit(ok=False, message=fit.message)
        values = {a: float(v) for a, v in zip(_XYZ, fit.position, strict=True)}
        values |= {f"cov_{p}": float(fit.cov[_IDX[p]]) for p in _PAIRS}
        errors = {a: float(math.sqrt(fit.cov[k, k])) for k, a in enumerate(_XYZ)}
        return IntervalFit(values, errors, True, "")

    def _selection(self, data: AlgorithmInput, outer: OuterInterval, atoms: Sequence[Atom]) -> int:
        return self._fits(data, outer, atoms)[0]

    # ------------------------------------------------------------------ the execution
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        self.__dict__["_memo"] = {}
        try:
            return self._run(data)
        finally:
            self.__dict__["_memo"] = None

    def _run(self, data: AlgorithmInput) -> AlgorithmResult:
        result = super().run(data)
        if result.status is not AlgorithmStatus.OK:
            return result
        atoms, outers = self.partition(data)
        sizes: list[dict[str, Any]] = []
        converged = True
        for k, o in enumerate(outers):
            if o.n_events < self.min_sub_events:
                sizes.append({"outer": k, "fitted": None, "not_resolved": ["xx", "yy", "zz"]})
                continue
            sel, moments, fits, conv = self._fits(data, o, atoms)
            converged &= conv
            try:
                size = fit_size(moments, fits, sigmas=float(data.config["resolved_sigmas"]))
            except NotEnoughData:
                sizes.append({"outer": k, "fitted": None, "not_resolved": ["xx", "yy", "zz"]})
                continue
            sizes.append({"outer": k, **_size_metadata(size, sel, conv)})
        (payload,) = result.payloads
        payload.metadata["size"] = sizes
        payload.metadata["reference_converged"] = converged
        passes = int(data.config["max_passes"])
        if not converged and data.iteration + 1 < passes:
            return AlgorithmResult(
                AlgorithmStatus.ITERATE,
                result.payloads,
                result.diagnostics,
                "positions moved from the reference: another pass with the residual cuts",
            )
        note = "" if converged else "reference not converged: no outlier cuts"
        return AlgorithmResult(result.status, result.payloads, result.diagnostics, note)


def _size_metadata(size: SizeFit, sel: int, converged: bool) -> dict[str, Any]:
    """What the payload's metadata says of an outer interval's size (cm^2)."""
    fitted = {
        p: [float(size.matrix[_IDX[p]]), float(size.errors[_IDX[p]])]
        for p in ("xx", "yy", "xy", "zz")
    }
    not_resolved = [p for p, ok in size.resolved.items() if not ok]
    return {
        "fitted": fitted,
        "not_resolved": not_resolved,
        "upper_limit": {p: max(0.0, fitted[p][0]) + 2 * fitted[p][1] for p in not_resolved},
        "n_events": size.n_events,
        "outlier_cuts": bool(sel == 1),
        "reference_converged": converged,
    }


# ------------------------------------------------------------------------ declaration
_EXPERT_CONFIG: Mapping[str, Any] = {
    "outerLoss": BEAMSPOT_OUTER_LOSS,
    "innerLoss": BEAMSPOT_INNER_LOSS,
    "reference_tolerance_um": [2.0, 2.0, 50.0],
    "resolved_sigmas": 2.0,
    "max_passes": 3,
    "min_atom_events": 10,
}


_VIEW = NoChannelFit(
    "a time-dependent beam payload: one fit per time interval of all its events, not per "
    "channel (diagnostics intervals, atoms)",
    lambda c: c.step_message,
)


def beamspot_calibration() -> Calibration:
    """``beamspot``: BeamSpot per time interval from tight dimuon events."""
    return Calibration(
        name="beamspot",
        validation=PayloadComparison(
            columns=("x", "y", "z"),
            max_pull=None,
            max_abs_change=0.01,
            error_outlier_fraction=1.0,
        ),  # per interval (cm): 100 um is a jump; the beams move: a warning at most
        expert="beam-calibration@b2calib.example",
        inputs={"dimuons": CollectorInput(beamspot_collector, ("hlt_mumu_2trk",))},
        algorithms=[BeamSpotAlgorithm()],
        strategy=SequentialBoundaries(),
        stage="analysis",
        run_type="physics",
        magnet_on=True,
        after=RUNS_AFTER,
        expert_config=dict(_EXPERT_CONFIG),
        max_iterations=3,
        open_end=True,
        description="Beam spot (BeamSpot) per time interval: IP position per sub-interval "
        "from the d0/z0 of tight dimuon tracks (sandwich covariance), luminous-region size per "
        "outer interval from the products of the two tracks' residuals (unresolved elements "
        "flagged); basf2's residual cuts in a second collector pass.",
        fit_views={BEAMSPOT: _VIEW},
    )


def __dir__() -> list[str]:
    return __all__
