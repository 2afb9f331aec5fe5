"""ECL: 8736 CsI(Tl) crystals in 69 theta rings (13 forward, 46 barrel, 10 backward), 52 crates.

Cell ids are 1-based (``1..8736``) and run ring by ring from the forward endcap, phi index
inside the ring, as ``ECLCalDigit::getCellId()`` in basf2.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

N_CRYSTALS = 8736
N_RINGS = 69
N_CRATES = 52

#: Crystals per theta ring, forward endcap -> barrel -> backward endcap.
RING_NPHI = np.array(
    [48, 48, 64, 64, 64, 96, 96, 96, 96, 96, 96, 144, 144]
    + [144] * 46
    + [144, 144, 96, 96, 96, 96, 96, 64, 64, 64],
    dtype=np.int64,
)
#: Region of each ring: 0 forward endcap, 1 barrel, 2 backward endcap.
RING_REGION = np.array([0] * 13 + [1] * 46 + [2] * 10, dtype=np.int8)

_EDGES_DEG = np.concatenate(
    [
        np.linspace(12.4, 31.4, 14),
        np.linspace(32.2, 128.7, 47),
        np.linspace(130.7, 155.1, 11),
    ]
)
#: Lower and upper polar-angle edge of each ring, radians.
RING_THETA_LO = np.radians(np.concatenate([_EDGES_DEG[0:13], _EDGES_DEG[14:60], _EDGES_DEG[61:71]]))
RING_THETA_HI = np.radians(np.concatenate([_EDGES_DEG[1:14], _EDGES_DEG[15:61], _EDGES_DEG[62:72]]))
RING_THETA = 0.5 * (RING_THETA_LO + RING_THETA_HI)
#: Index of the first crystal of each ring (0-based).
RING_FIRST = np.concatenate([[0], np.cumsum(RING_NPHI)[:-1]])

assert RING_NPHI.sum() == N_CRYSTALS
assert len(RING_NPHI) == N_RINGS

_CELL_RING = np.repeat(np.arange(N_RINGS), RING_NPHI)
_CELL_IPHI = np.arange(N_CRYSTALS) - RING_FIRST[_CELL_RING]


def cell_id(ring: npt.ArrayLike, iphi: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """1-based cell id of crystal ``iphi`` (wrapped) in theta ring ``ring``."""
    ring = np.asarray(ring, dtype=np.int64)
    iphi = np.asarray(iphi, dtype=np.int64) % RING_NPHI[ring]
    return RING_FIRST[ring] + iphi + 1


def ring_of(cell: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Theta ring (0..68) of 1-based cell ids."""
    return _CELL_RING[np.asarray(cell, dtype=np.int64) - 1]


def iphi_of(cell: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Phi index inside its ring of 1-based cell ids."""
    return _CELL_IPHI[np.asarray(cell, dtype=np.int64) - 1]


def theta_phi(cell: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Polar and azimuthal angle (radians) of the crystal centres."""
    ring = ring_of(cell)
    phi = (iphi_of(cell) + 0.5) * 2 * np.pi / RING_NPHI[ring]
    return RING_THETA[ring], phi


def _crate_table() -> npt.NDArray[np.int64]:
    crate = np.empty(N_CRYSTALS, dtype=np.int64)
    ring, iphi = _CELL_RING, _CELL_IPHI
    frac = iphi / RING_NPHI[ring]
    barrel = RING_REGION[ring] == 1
    crate[barrel] = 1 + iphi[barrel] // 4  # 36 barrel crates of 4 phi columns x 46 rings
    fwd = RING_REGION[ring] == 0
    crate[fwd] = 37 + np.floor(frac[fwd] * 8).astype(np.int64)
    bwd = RING_REGION[ring] == 2
    crate[bwd] = 45 + np.floor(frac[bwd] * 8).astype(np.int64)
    return crate


_CRATE = _crate_table()


def crate_of(cell: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Readout crate (1..52) of 1-based cell ids: 36 barrel, 8 forward, 8 backward."""
    return _CRATE[np.asarray(cell, dtype=np.int64) - 1]


def find_ring(theta: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Ring hit by a particle of polar angle ``theta`` (radians); -1 in gaps or outside."""
    theta = np.asarray(theta, dtype=np.float64)
    ring = np.searchsorted(RING_THETA_LO, theta, side="right") - 1
    ok = (ring >= 0) & (theta < RING_THETA_HI[np.clip(ring, 0, N_RINGS - 1)])
    return np.where(ok, ring, -1)


def neighbours(size: int = 5) -> npt.NDArray[np.int64]:
    """Table ``(8736, size*size)`` of 1-based neighbour cell ids in a size x size window.

    Across rings of different granularity the neighbour is the crystal at the same phi.
    Entries outside the calorimeter are 0.
    """
    half = size // 2
    out = np.zeros((N_CRYSTALS, size * size), dtype=np.int64)
    phi_frac = (_CELL_IPHI + 0.5) / RING_NPHI[_CELL_RING]
    k = 0
    for dr in range(-half, half + 1):
        r2 = _CELL_RING + dr
        ok = (r2 >= 0) & (r2 < N_RINGS)
        r2c = np.clip(r2, 0, N_RINGS - 1)
        centre = np.floor(phi_frac * RING_NPHI[r2c]).astype(np.int64)
        for dphi in range(-half, half + 1):
            out[:, k] = np.where(ok, cell_id(r2c, centre + dphi), 0)
            k += 1
    return out


#: Inner radius of the barrel and z of the endcap faces (cm).
BARREL_RADIUS_CM = 125.0
FORWARD_Z_CM, BACKWARD_Z_CM = 196.0, -102.0


def flight_distance(cell: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Distance (cm) from the nominal IP to the front face of crystals: the reconstruction
    subtracts ``flight_distance / c`` from crystal times."""
    ring = ring_of(cell)
    theta = RING_THETA[ring]
    region = RING_REGION[ring]
    return np.select(
        [region == 1, region == 0],
        [BARREL_RADIUS_CM / np.sin(theta), FORWARD_Z_CM / np.cos(theta)],
        BACKWARD_Z_CM / np.cos(theta),
    )
