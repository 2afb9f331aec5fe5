"""Collectors of the boost-vector and collision-energy calibrations: tight dimuon events
(``hlt_mumu_2trk``), filled per time atom so that any time interval is a sum over atoms.

Atoms are the 0.1 h cells of the global time grid of :mod:`b2calib.calibration.intervals`
(atom ``floor(t / 360 s)`` of the event time ``EventMetaData_m_time``), so a collector needs no
run start; its output is per run, so an atom cut by a run boundary exists once per run. Every
histogram has the atom as its first axis (:func:`~b2calib.calibration.intervals.atom_axis`,
an integer category that grows as atoms are met: histograms of the same run add, whatever atoms
each chunk saw).

The dimuon selection is the beam calibrations' one,
:func:`~b2calib.detectors.beam.dimuons.select_dimuons` (tight pairs, 9.5-11.5 GeV).

* :class:`BoostCollector`: the pairs whose muons both lie within ``|cos theta*| < 0.75`` in the
  nominal centre-of-mass frame (SuperKEKB's design boost, :data:`NOMINAL_BOOST`): a fiducial
  region symmetric under the CMS reflection ``z* -> -z*`` and inside the acceptance of the
  tight selection (which ends at ``|cos theta*| ~ 0.8``), so that the radiative recoil of
  either sign is accepted alike, as the ratio-of-sums boost of
  :mod:`~b2calib.detectors.beam.boost` assumes (without it, a bias was not seen within the
  closure's precision, but nothing guaranteed its absence); per atom and dimuon-mass bin
  (50 MeV), the additive moments of the pair four-momentum ``(E, p) = (E1 + E2, p1 + p2)``:
  ``n``, the sums of ``E``, ``p_i`` and of their products (histogram ``boost_moments``, axes
  atom x mass x moment, :data:`MOMENTS` names the moments).
* :class:`MassCollector`: per atom the dimuon mass (7.5 MeV bins, 10.0-10.9 GeV) x the event's
  mass resolution (3 MeV bins up to 120 MeV), histogram ``mass``. The resolution is propagated
  from the helix parameters with the tracking resolution documented by the simulator
  (:mod:`b2calib.sim.detector`: ``sigma(pt)/pt = 0.1 % pt (+) 0.3 %``, ``sigma(phi0) = 0.5
  mrad``, ``sigma(tanLambda) = 1e-3``), the collector's fields: the simulated tracks carry no
  covariance; on real data the track covariance would take their place. It is evaluated at the
  *nominal* kinematics of the measured directions (:meth:`PairKinematics.nominal`: the momenta
  those directions imply for a two-body decay at :data:`RESOLUTION_ECMS` in the frame of
  :data:`NOMINAL_BOOST`), not at the measured momenta: a pair whose momenta fluctuated up
  would otherwise be given a larger resolution (the ``0.1 % pt`` term), the resolutions would
  be those of the fluctuated momenta rather than of the true ones, and the fitted spread^2 came
  out ~13 MeV^2 (5 sigma on 1.7M toy pairs) too large. The histogram ``resolution_r2`` (atom x
  resolution bin) sums each event's squared resolution, so that the fit takes each bin's mean
  ``r^2`` rather than its centre (3 MeV bins over a narrow distribution: the centres' ``r^2``
  was 6.6 MeV^2 off, as much as the fitted spread^2's error of some 10^5 pairs).
* Both fill ``atoms`` (:func:`~b2calib.calibration.intervals.atom_times_hist`): selected
  events per atom in 36 slices of 10 s, from which the intervals are made.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import awkward as ak
import hist
import numba
import numpy as np
import numpy.typing as npt

from b2calib.calibration.intervals import (
    ATOMS_HISTOGRAM,
    atom_axis,
    atom_index,
    atom_times_hist,
    fill_atom_times,
)
from b2calib.detectors.beam.dimuons import (
    DIMUON_BRANCHES,
    MUON_MASS,
    prepare_selection,
    select_dimuons,
)
from b2calib.engine import Collector
from b2calib.engine.fill import regular_bin

__all__ = [
    "BOOST_MASS_BINS",
    "MASS_BINS",
    "MOMENTS",
    "NOMINAL_BOOST",
    "RESOLUTION_BINS",
    "RESOLUTION_ECMS",
    "BoostCollector",
    "MassCollector",
    "PairKinematics",
    "pair_kinematics",
]

F = npt.NDArray[np.float64]

#: The dimuon-mass axis of the boost moments (bins, low, high; GeV).
BOOST_MASS_BINS = (44, 9.5, 11.7)
#: The dimuon-mass axis of the mass histogram (GeV).
MASS_BINS = (120, 10.0, 10.9)
#: The mass-resolution axis of the mass histogram (GeV).
RESOLUTION_BINS = (40, 0.0, 0.12)
#: The collision energy at which :class:`MassCollector` evaluates each event's mass resolution
#: (GeV, the nominal 4S one; the ``ecms`` algorithm rescales it to a run's nominal energy).
RESOLUTION_ECMS = 10.5794
#: SuperKEKB's design boost of the centre-of-mass frame (7.004 GeV e-, 4.002 GeV e+, 83 mrad
#: crossing angle), the frame of :class:`BoostCollector`'s fiducial cut.
NOMINAL_BOOST = (0.041488, 0.0, 0.272525)
#: The moments of :class:`BoostCollector` (pair energy ``e`` and momentum ``x, y, z``), in the
#: order of its moment axis.
MOMENTS = (
    "n", "e", "x", "y", "z",
    "ee", "ex", "ey", "ez", "xx", "xy", "xz", "yy", "yz", "zz",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class PairKinematics:
    """Selected dimuon pairs: time (UNIX ns), both muons' momenta ``(n, 2, 3)`` and energies
    ``(n, 2)`` (GeV), helix ``pt``, ``phi0``, ``tanLambda`` ``(n, 2)``."""

    t_ns: npt.NDArray[np.int64]
    p: F
    e: F
    pt: F
    phi0: F
    tanl: F

    @property
    def atom(self) -> npt.NDArray[np.int64]:
        """The global atom index of each event (:func:`~b2calib.calibration.intervals.atom_index`,
        in integers, as the ``atoms`` histogram's)."""
        return atom_index(self.t_ns)

    @property
    def mass(self) -> F:
        """The dimuon invariant mass."""
        s = self.p.sum(axis=1)
        m2 = self.e.sum(axis=1) ** 2 - np.einsum("ij,ij->i", s, s)
        return np.sqrt(np.maximum(m2, 0.0))

    def cos_theta_cms(self, beta: tuple[float, float, float]) -> F:
        """Each muon's ``cos theta`` in the frame moving with velocity ``beta``, ``(n, 2)``."""
        b = np.asarray(beta, dtype=np.float64)
        b2 = float(b @ b)
        gamma = 1.0 / np.sqrt(1.0 - b2)
        bp = self.p @ b  # (n, 2)
        # Lorentz transformation to the frame: p* = p + ((gamma - 1) bp / b2 - gamma E) b
        coef = (gamma - 1.0) * bp / b2 - gamma * self.e
        pstar = self.p + coef[..., None] * b
        return pstar[..., 2] / np.linalg.norm(pstar, axis=2)

    @property
    def beta(self) -> F:
        """The pair velocity ``(p1 + p2) / (E1 + E2)``, ``(n, 3)``."""
        return self.p.sum(axis=1) / self.e.sum(axis=1)[:, None]

    def nominal(self, ecms: float, beta: tuple[float, float, float]) -> PairKinematics:
        """The pairs with the measured directions and the momenta those directions imply for a
        two-body decay at collision energy ``ecms`` in the frame moving with velocity ``beta``
        (each muon of energy ``ecms / 2`` in that frame): kinematics free of the measured
        momenta's fluctuation, for the per-event resolution."""
        b = np.asarray(beta, dtype=np.float64)
        gamma = 1.0 / np.sqrt(1.0 - float(b @ b))
        u = self.p / np.linalg.norm(self.p, axis=2, keepdims=True)
        # E* = gamma (E - (b . u) p): (1 - c^2) p^2 - 2 K c p + m^2 - K^2 = 0, K = E* / gamma
        c = u @ b
        k = 0.5 * ecms / gamma
        p = (k * c + np.sqrt(np.maximum(k**2 - (1.0 - c**2) * MUON_MASS**2, 0.0))) / (1.0 - c**2)
        p3 = u * p[..., None]
        return PairKinematics(
            self.t_ns,
            p3,
            np.sqrt(p**2 + MUON_MASS**2),
            np.hypot(p3[..., 0], p3[..., 1]),
            self.phi0,
            self.tanl,
        )

    def mass_resolution(self, pt_res: tuple[float, float], phi0_res: float, tanl_res: float) -> F:
        """Each event's mass resolution from the helix-parameter resolutions (``sigma(pt)/pt =
        pt_res[0] pt (+) pt_res[1]``), uncorrelated, linear propagation."""
        m = self.mass
        p, e, pt, phi = self.p, self.e, self.pt, self.phi0
        var = np.zeros(len(m))
        for i, j in ((0, 1), (1, 0)):
            pi, pj, ei, ej = p[:, i], p[:, j], e[:, i], e[:, j]
            pp = np.einsum("ij,ij->i", pi, pj)
            p2 = np.einsum("ij,ij->i", pi, pi)
            # d(M^2 / 2) = d(Ei Ej - pi . pj) for each helix parameter of track i
            d_pt = (ej * p2 / ei - pp) / pt[:, i]
            dp_dphi = pt[:, i, None] * np.column_stack(
                [-np.sin(phi[:, i]), np.cos(phi[:, i]), np.zeros(len(m))]
            )
            d_phi = -np.einsum("ij,ij->i", dp_dphi, pj)
            d_tl = ej * pt[:, i] * pi[:, 2] / ei - pt[:, i] * pj[:, 2]
            s_pt = pt[:, i] * np.hypot(pt_res[0] * pt[:, i], pt_res[1])
            var += (d_pt * s_pt) ** 2 + (d_phi * phi0_res) ** 2 + (d_tl * tanl_res) ** 2
        return np.sqrt(var) / np.maximum(m, 1e-9)


def pair_kinematics(events: ak.Array) -> PairKinematics:
    """The tight dimuon pairs of a chunk (:func:`~b2calib.detectors.beam.dimuons.select_dimuons`,
    the beam calibrations' one selection) as :class:`PairKinematics`."""
    d = select_dimuons(events)
    p3 = np.stack([d.px, d.py, d.pz], axis=2)
    e = np.sqrt(np.einsum("ijk,ijk->ij", p3, p3) + MUON_MASS**2)
    return PairKinematics(d.time_ns, p3, e, np.hypot(d.px, d.py), d.phi0, d.tan_lambda)


def _regular(spec: tuple[int, float, float], name: str, label: str) -> hist.axis.Regular:
    return hist.axis.Regular(*spec, name=name, label=label, underflow=False, overflow=False)


@dataclasses.dataclass(frozen=True)
class _DimuonCollector(Collector):
    @property
    def branches(self) -> dict[str, str]:
        return dict(DIMUON_BRANCHES)

    def prepare(self) -> None:
        """Load the compiled selection (forked workers inherit it)."""
        prepare_selection()


@numba.njit(cache=True, nogil=True)
def _fill_moments(out, atom, mass, lo, hi, v):  # type: ignore[no-untyped-def,unused-ignore]
    """Add each pair's :data:`MOMENTS` of ``v`` (``E, px, py, pz``) to ``out`` (atom x mass bin
    x moment) at its atom's index ``atom`` and ``mass`` (within ``lo``..``hi``): the products
    as numpy forms them, each bin's entries in event order, as a fill per moment adds them."""
    nb = out.shape[1]
    for i in range(atom.shape[0]):
        row = out[atom[i], regular_bin(mass[i], lo, hi, nb) - 1]
        row[0] += 1.0
        for a in range(4):
            row[1 + a] += v[i, a]
        k = 5
        for a in range(4):
            for b in range(a, 4):
                row[k] += v[i, a] * v[i, b]
                k += 1


@numba.njit(cache=True, nogil=True)
def _fiducial_sums(p, e, bp, b, b2, gamma, max_cos, keep, v):  # type: ignore[no-untyped-def,unused-ignore]
    """Set ``keep`` (``(n,)``) where both muons have ``|cos theta*| < max_cos`` in the frame of
    velocity ``b`` (``b2 = b.b``, ``gamma``), and write the kept pairs' ``E, px, py, pz`` sums to
    ``v[:kept]``; return the kept count. :meth:`PairKinematics.cos_theta_cms`'s operations
    element by element, from its ``bp = p @ b`` (numpy's, whose order is BLAS's) and the same
    ``e``: the same ``cos theta*`` bit for bit."""
    k = 0
    for i in range(p.shape[0]):
        ok = True
        for t in range(2):
            coef = (gamma - 1.0) * bp[i, t] / b2 - gamma * e[i, t]
            sx = p[i, t, 0] + coef * b[0]
            sy = p[i, t, 1] + coef * b[1]
            sz = p[i, t, 2] + coef * b[2]
            ok = ok and abs(sz / np.sqrt(sx * sx + sy * sy + sz * sz)) < max_cos
        keep[i] = ok
        if ok:
            v[k, 0] = e[i, 0] + e[i, 1]
            for a in range(3):
                v[k, 1 + a] = p[i, 0, a] + p[i, 1, a]
            k += 1
    return k


@dataclasses.dataclass(frozen=True)
class BoostCollector(_DimuonCollector):
    """Additive moments of the dimuon four-momentum per atom and mass bin (``boost_moments``)
    and the atoms' events (``atoms``), pairs in the CMS fiducial region ``|cos theta*| <
    max_cos_cms`` (both muons, in the frame of ``nominal_boost``)."""

    max_cos_cms: float = 0.75
    nominal_boost: tuple[float, float, float] = NOMINAL_BOOST
    version: ClassVar[int] = 4

    def prepare(self) -> None:
        """Load the compiled selection and fiducial cut (forked workers inherit them)."""
        super().prepare()
        e = np.zeros((0, 2))
        _fiducial_sums(
            np.zeros((0, 2, 3)),
            e,
            e,
            np.zeros(3),
            0.0,
            1.0,
            0.0,
            np.zeros(0, bool),
            np.zeros((0, 4)),
        )

    def collect(self, events: ak.Array) -> dict[str, Any]:
        return self._collect(events, compiled_fiducial=True)

    def _collect(self, events: ak.Array, *, compiled_fiducial: bool) -> dict[str, Any]:
        """:meth:`collect`, the fiducial cut and pair sums compiled (:func:`_fiducial_sums`) or
        with numpy (the reference): the same histograms, bit for bit."""
        d = pair_kinematics(events)
        if not len(d.t_ns):
            t_ns, mass, v = d.t_ns, np.zeros(0), np.zeros((0, 4))
        elif compiled_fiducial:
            # the fiducial cut and the pair sums in one compiled pass; what numpy sums in an
            # order of its own (p @ b, the mass's einsum) numpy computes, as the reference does
            b = np.asarray(self.nominal_boost, dtype=np.float64)
            b2 = float(b @ b)
            keep = np.empty(len(d.t_ns), np.bool_)
            v = np.empty((len(d.t_ns), 4))
            n = _fiducial_sums(
                d.p, d.e, d.p @ b, b, b2, 1.0 / np.sqrt(1.0 - b2), self.max_cos_cms, keep, v
            )
            t_ns, mass, v = d.t_ns[keep], d.mass[keep], v[:n]
        else:
            keep = np.all(np.abs(d.cos_theta_cms(self.nominal_boost)) < self.max_cos_cms, axis=1)
            d = PairKinematics(*(getattr(d, f.name)[keep] for f in dataclasses.fields(d)))
            t_ns, mass = d.t_ns, d.mass
            v = np.ascontiguousarray(np.column_stack([d.e.sum(axis=1), d.p.sum(axis=1)]))
        atom = atom_index(t_ns)  # as PairKinematics.atom
        # the atoms in the order the events meet them (as a fill grows the axis)
        atoms, first, code = np.unique(atom, return_index=True, return_inverse=True)
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        h = hist.Hist(
            atom_axis(atoms=atoms[order].tolist()),
            _regular(BOOST_MASS_BINS, "mass", "dimuon mass (GeV)"),
            hist.axis.Integer(0, len(MOMENTS), name="moment", underflow=False, overflow=False),
            storage=hist.storage.Double(),
        )
        if len(t_ns):
            m = np.clip(mass, BOOST_MASS_BINS[1], BOOST_MASS_BINS[2] - 1e-9)
            _fill_moments(h.view(), rank[code.reshape(-1)], m, *BOOST_MASS_BINS[1:], v)
        return {"boost_moments": h, ATOMS_HISTOGRAM: fill_atom_times(atom_times_hist(), t_ns)}


@dataclasses.dataclass(frozen=True)
class MassCollector(_DimuonCollector):
    """The dimuon mass x its resolution per atom (``mass``), the sum of the squared
    resolutions per atom and resolution bin (``resolution_r2``) and the atoms' events
    (``atoms``). The resolution model's parameters are fields (see the module); the resolution
    is evaluated at the nominal kinematics (``resolution_ecms``, ``nominal_boost``) of the
    measured directions."""

    pt_resolution: tuple[float, float] = (1e-3, 3e-3)
    phi0_resolution: float = 5e-4
    tanlambda_resolution: float = 1e-3
    resolution_ecms: float = RESOLUTION_ECMS
    nominal_boost: tuple[float, float, float] = NOMINAL_BOOST
    version: ClassVar[int] = 3

    def collect(self, events: ak.Array) -> dict[str, Any]:
        d = pair_kinematics(events)
        h = hist.Hist(
            atom_axis(),
            _regular(MASS_BINS, "mass", "dimuon mass (GeV)"),
            _regular(RESOLUTION_BINS, "resolution", "dimuon mass resolution (GeV)"),
            storage=hist.storage.Double(),
        )
        r2 = hist.Hist(
            atom_axis(),
            _regular(RESOLUTION_BINS, "resolution", "dimuon mass resolution (GeV)"),
            storage=hist.storage.Double(),
        )
        if len(d.t_ns):
            r = d.nominal(self.resolution_ecms, self.nominal_boost).mass_resolution(
                self.pt_resolution, self.phi0_resolution, self.tanlambda_resolution
            )
            r = np.clip(r, RESOLUTION_BINS[1], RESOLUTION_BINS[2] - 1e-9)
            atom, mass = d.atom, d.mass  # (properties: computed once)
            h.fill(atom=atom, mass=mass, resolution=r)
            inside = (mass >= MASS_BINS[1]) & (mass < MASS_BINS[2])
            r2.fill(atom=atom[inside], resolution=r[inside], weight=r[inside] ** 2)
        return {
            "mass": h,
            "resolution_r2": r2,
            ATOMS_HISTOGRAM: fill_atom_times(atom_times_hist(), d.t_ns),
        }


def __dir__() -> list[str]:
    return __all__
