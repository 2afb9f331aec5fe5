"""Event generation: beams and the final-state particles of each process.

Kinematics are generated in the centre-of-mass frame with initial-state radiation (ISR) and
boosted to the lab with the SuperKEKB beam energies (7 GeV e-, 4 GeV e+, 83 mrad crossing).
Masses and the cross sections (their angular distributions, and the event counts of
:mod:`b2calib.sim.simulate`) come from :mod:`b2calib.physics`. Units: GeV, cm, ns.

Process ``p`` is generated with ``N ~ Poisson(L * sigma_p * prescale_p)`` events in a run of
luminosity ``L``; the prescales are documented in every file's metadata, so the luminosity can be
measured back from the Bhabha and gamma-gamma counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from b2calib.physics import ALPHA, COS_MAX, dsigma_dcos_nb, mass, masses

__all__ = ["PROCESS_ID", "Beam", "Particles", "generate"]

F = npt.NDArray[np.float64]
#: Process ids stored in ``SimTruth_m_process``.
PROCESS_ID = {"bhabha": 1, "gamma_gamma": 2, "mumu": 3, "hadron": 4, "tautau": 5, "cosmic": 6}
E_HER, E_LER, HALF_CROSSING = 7.004, 4.002, 0.0415
C_CM_PER_NS = 29.9792458


@dataclass(frozen=True)
class Beam:
    """Beam conditions: CMS energy, its spread and the CMS->lab boost.

    The HER and LER energies are the nominal ones (7.004, 4.002 GeV) scaled by one factor to
    give ``ecms``, unless ``lab`` gives them (:meth:`with_her_energy`: a change of the HER energy
    alone, which moves the boost as well as the collision energy).
    """

    ecms: float
    spread: float
    lab: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.lab is not None:
            eh, el = self.lab
            ecms = 2 * np.sqrt(eh * el) * np.cos(HALF_CROSSING)
            if not np.isclose(ecms, self.ecms, rtol=1e-12, atol=0.0):
                raise ValueError(
                    f"beam energies {eh}, {el} GeV give a collision energy of {ecms} GeV, "
                    f"not {self.ecms} GeV"
                )

    @property
    def energies(self) -> tuple[float, float]:
        """HER and LER energies (GeV): ``lab``, or the nominal ones scaled to give ``ecms``."""
        if self.lab is not None:
            return self.lab
        nominal = 2 * np.sqrt(E_HER * E_LER) * np.cos(HALF_CROSSING)
        k = self.ecms / nominal
        return E_HER * k, E_LER * k

    def with_her_energy(self, ecms: float) -> Beam:
        """The beam after the HER energy changed (the LER one kept) to give collision energy
        ``ecms``: ``E_HER' = E_HER (ecms / self.ecms)^2``; the boost changes with it."""
        eh, el = self.energies
        return Beam(ecms, self.spread, (eh * (ecms / self.ecms) ** 2, el))

    @property
    def boost(self) -> F:
        """Velocity of the CMS in the lab (beta vector): the beams' momentum sum over their
        energy sum (electron masses neglected), the HER along +z tilted by the half crossing
        angle towards +x, the LER against it."""
        eh, el = self.energies
        p = np.array([(eh + el) * np.sin(HALF_CROSSING), 0.0, (eh - el) * np.cos(HALF_CROSSING)])
        return p / (eh + el)


def boost(p4: F, beta: F) -> F:
    """Lorentz-boost four-vectors ``(n, 4)`` (px, py, pz, E) by velocity ``beta`` (3,) or (n, 3)."""
    beta = np.broadcast_to(beta, (len(p4), 3))
    b2 = np.einsum("ij,ij->i", beta, beta)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = np.einsum("ij,ij->i", beta, p4[:, :3])
    g2 = np.where(b2 > 0, (gamma - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0)
    out = np.empty_like(p4)
    out[:, :3] = p4[:, :3] + (g2 * bp + gamma * p4[:, 3])[:, None] * beta
    out[:, 3] = gamma * (p4[:, 3] + bp)
    return out


# ----------------------------------------------------------------------------- angles
def _sample_cos(rng: np.random.Generator, process: str, n: int) -> F:
    c = np.linspace(-COS_MAX[process], COS_MAX[process], 2001)
    y = dsigma_dcos_nb(process, c, 10.58**2)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(c))])
    return np.interp(rng.random(n) * cdf[-1], cdf, c)


# ----------------------------------------------------------------------------- particles
@dataclass
class Particles:
    """Flat arrays of final-state particles; ``evt`` is the event index of each."""

    evt: npt.NDArray[np.int64]
    pdg: npt.NDArray[np.int64]
    p4: F  # (n, 4) lab px, py, pz, E
    vertex: F  # (n, 3) production vertex (cm)
    t0: F  # time of the particle at its vertex relative to the collision (ns)

    @staticmethod
    def concat(parts: list[Particles]) -> Particles:
        """Concatenate particle lists (event indices must already be global)."""
        return Particles(
            np.concatenate([p.evt for p in parts]),
            np.concatenate([p.pdg for p in parts]),
            np.concatenate([p.p4 for p in parts]),
            np.concatenate([p.vertex for p in parts]),
            np.concatenate([p.t0 for p in parts]),
        )

    @property
    def charge(self) -> npt.NDArray[np.int64]:
        """Electric charge of each particle."""
        q = np.zeros(len(self.pdg), dtype=np.int64)
        for code, sign in ((11, -1), (13, -1), (211, 1), (321, 1), (2212, 1)):
            q[self.pdg == code] = sign
            q[self.pdg == -code] = -sign
        return q


def _isr_fraction(rng: np.random.Generator, n: int, ecms: float) -> F:
    """Energy fraction x of the ISR photon: density beta * x^(beta-1) on (0, 0.25)."""
    beta = 2 * ALPHA / np.pi * (2 * np.log(ecms / mass(11)) - 1)
    return 0.25 * rng.random(n) ** (1.0 / beta)


def _two_body(
    rng: np.random.Generator, n: int, beam: Beam, process: str, pdg: int, antipdg: int
) -> tuple[F, F, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Back-to-back pairs with ISR: returns lab four-vectors of both and their pdg codes."""
    sqrt_s = beam.ecms + rng.normal(0.0, beam.spread, n)
    x = _isr_fraction(rng, n, beam.ecms)
    m_pair = sqrt_s * np.sqrt(1 - x)
    m = mass(pdg)
    pstar = np.sqrt(np.maximum(m_pair**2 / 4 - m**2, 0.0))
    cos = _sample_cos(rng, process, n)
    sin = np.sqrt(1 - cos**2)
    phi = rng.uniform(0, 2 * np.pi, n)
    mom = pstar[:, None] * np.stack([sin * np.cos(phi), sin * np.sin(phi), cos], axis=1)
    e = np.sqrt(pstar**2 + m**2)
    p1 = np.column_stack([mom, e])
    p2 = np.column_stack([-mom, e])
    # ISR photon along -z or +z: the pair recoils along the other direction
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    bz = sign * x / (2 - x)
    bvec = np.column_stack([np.zeros(n), np.zeros(n), bz])
    p1, p2 = boost(p1, bvec), boost(p2, bvec)
    p1, p2 = boost(p1, beam.boost), boost(p2, beam.boost)
    swap = rng.random(n) < 0.5  # which of the two carries the particle vs antiparticle
    codes1 = np.where(swap, pdg, antipdg)
    codes2 = np.where(swap, antipdg, pdg)
    return p1, p2, codes1, codes2


def _pairs(
    rng: np.random.Generator, n: int, beam: Beam, process: str, pdg: int, anti: int
) -> tuple[F, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    p1, p2, c1, c2 = _two_body(rng, n, beam, process, pdg, anti)
    evt = np.repeat(np.arange(n), 2)
    p4 = np.empty((2 * n, 4))
    p4[0::2], p4[1::2] = p1, p2
    codes = np.empty(2 * n, dtype=np.int64)
    codes[0::2], codes[1::2] = c1, c2
    return p4, codes, evt


def _hadron(
    rng: np.random.Generator, n: int, beam: Beam
) -> tuple[F, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Multi-hadron events: charge-balanced pi/K/p with exponential CMS momenta, plus photons."""
    npairs = 1 + rng.poisson(2.5, n)
    nch = 2 * npairs
    ngam = rng.poisson(4.0, n)
    counts = nch + ngam
    evt = np.repeat(np.arange(n), counts)
    tot = int(counts.sum())
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    local = np.arange(tot) - np.repeat(first, counts)
    charged = local < np.repeat(nch, counts)
    species = rng.choice(np.array([211, 321, 2212]), tot, p=[0.82, 0.12, 0.06])
    sign = np.where(local % 2 == 0, 1, -1)
    pdg = np.where(charged, species * sign, 22)
    pstar = np.where(charged, rng.gamma(2.0, 0.35, tot), rng.exponential(0.3, tot))
    cos = rng.uniform(-1, 1, tot)
    phi = rng.uniform(0, 2 * np.pi, tot)
    sin = np.sqrt(1 - cos**2)
    mom = pstar[:, None] * np.stack([sin * np.cos(phi), sin * np.sin(phi), cos], axis=1)
    mm = masses(pdg)
    p4 = np.column_stack([mom, np.sqrt(pstar**2 + mm**2)])
    return boost(p4, beam.boost), pdg, evt


def _tautau(
    rng: np.random.Generator, n: int, beam: Beam
) -> tuple[F, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Tau pairs; each tau decays to one prong (85 %: e, mu or pi + neutrino) or three pions."""
    t1, t2, _, _ = _two_body(rng, n, beam, "tautau", 15, -15)
    taus = np.empty((2 * n, 4))
    taus[0::2], taus[1::2] = t1, t2
    tau_evt = np.repeat(np.arange(n), 2)
    tau_charge = np.tile([-1, 1], n)
    three = rng.random(2 * n) < 0.15
    nprong = np.where(three, 3, 1)
    evt = np.repeat(tau_evt, nprong)
    parent = np.repeat(np.arange(2 * n), nprong)
    tot = len(evt)
    frac = rng.uniform(0.1, 0.9, tot) / np.repeat(nprong, nprong)
    direction = taus[parent, :3] / np.linalg.norm(taus[parent, :3], axis=1, keepdims=True)
    spread = rng.normal(0, 0.15, (tot, 3))
    d = direction + spread
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    p = frac * taus[parent, 3]
    one_kind = rng.choice(np.array([11, 13, 211]), tot, p=[0.2, 0.2, 0.6])
    kind = np.where(np.repeat(three, nprong), 211, one_kind)
    local = np.arange(tot) - np.repeat(np.concatenate([[0], np.cumsum(nprong)[:-1]]), nprong)
    q = np.repeat(tau_charge, nprong) * np.where(local == 1, -1, 1)
    # lepton codes are negative-charge particles: pdg sign flips with charge
    pdg = np.where(kind == 211, kind * q, -kind * q)
    mm = masses(kind)
    p4 = np.column_stack([p[:, None] * d, np.sqrt(p**2 + mm**2)])
    return p4, pdg, evt


def _cosmic(
    rng: np.random.Generator, n: int
) -> tuple[F, npt.NDArray[np.int64], npt.NDArray[np.int64], F, F]:
    """Cosmic muons, reconstructed as an upper (incoming, time < 0) and a lower leg."""
    p = 1.0 + rng.pareto(1.7, n) * 1.5
    cz = np.sqrt(rng.random(n))  # cos^2 zenith
    sz = np.sqrt(1 - cz**2)
    az = rng.uniform(0, 2 * np.pi, n)
    down = np.stack([sz * np.cos(az), -cz, sz * np.sin(az)], axis=1)  # y is up
    d0 = rng.uniform(-30.0, 30.0, n)
    z0 = rng.uniform(-50.0, 80.0, n)
    perp = np.stack([-down[:, 1], down[:, 0], np.zeros(n)], axis=1)
    perp /= np.maximum(np.linalg.norm(perp, axis=1, keepdims=True), 1e-9)
    vtx = perp * d0[:, None]
    vtx[:, 2] = z0
    q = np.where(rng.random(n) < 0.56, 1, -1)  # mu+/mu- ratio ~1.27
    mu = mass(13)
    e = np.sqrt(p**2 + mu**2)
    up_leg = np.column_stack([-down * p[:, None], e])
    low_leg = np.column_stack([down * p[:, None], e])
    p4 = np.empty((2 * n, 4))
    p4[0::2], p4[1::2] = up_leg, low_leg
    charge = np.empty(2 * n, dtype=np.int64)
    charge[0::2], charge[1::2] = -q, q  # the upper leg is fitted outwards: charge flips
    pdg = -13 * charge
    vertex = np.repeat(vtx, 2, axis=0)
    # the upper leg is traversed before the POCA: its hits come earlier (negative time)
    t0 = np.zeros(2 * n)
    t0[0::2] = -1.0  # marker: time runs backwards along the upper leg
    return p4, pdg, np.repeat(np.arange(n), 2), vertex, t0


def generate(
    rng: np.random.Generator,
    process: str,
    n: int,
    beam: Beam,
    beamspot: F,
    beamsize: F,
) -> Particles:
    """Generate ``n`` events of ``process``.

    ``beamspot`` is (n, 3): the luminous-region centre at each event's time; vertices are drawn
    around it with ``beamsize`` (3,) Gaussian widths.
    """
    if process == "cosmic":
        p4, pdg, evt, vertex, t0 = _cosmic(rng, n)
        return Particles(evt, pdg, p4, vertex, t0)
    if process == "bhabha":
        p4, pdg, evt = _pairs(rng, n, beam, process, 11, -11)
    elif process == "gamma_gamma":
        p4, pdg, evt = _pairs(rng, n, beam, process, 22, 22)
    elif process == "mumu":
        p4, pdg, evt = _pairs(rng, n, beam, process, 13, -13)
    elif process == "hadron":
        p4, pdg, evt = _hadron(rng, n, beam)
    elif process == "tautau":
        p4, pdg, evt = _tautau(rng, n, beam)
    else:
        raise ValueError(f"unknown process {process!r}")
    ip = beamspot + rng.normal(0.0, 1.0, (n, 3)) * beamsize
    return Particles(evt.astype(np.int64), pdg.astype(np.int64), p4, ip[evt], np.zeros(len(evt)))
