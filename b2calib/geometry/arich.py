"""ARICH: 420 HAPDs (modules 1..420) in 7 rings, 144 channels (0..143) each = 60480 channels."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

N_MODULES = 420
N_CHANNELS_PER_MODULE = 144
N_CHANNELS = N_MODULES * N_CHANNELS_PER_MODULE
#: HAPDs per ring, inner to outer.
RING_NMODULES = np.array([42, 48, 54, 60, 66, 72, 78], dtype=np.int64)
RING_FIRST = np.concatenate([[0], np.cumsum(RING_NMODULES)[:-1]])
#: Ring radii (cm) at the photon detector plane, z = 170 cm.
RING_RADIUS = np.linspace(57.0, 105.0, 7)
Z_DETECTOR_CM = 170.0
assert RING_NMODULES.sum() == N_MODULES


def module_at(r: npt.ArrayLike, phi: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """HAPD (1..420) nearest to radius ``r`` (cm) and azimuth ``phi``; 0 outside the plane."""
    r = np.asarray(r, dtype=np.float64)
    phi = np.where(np.isfinite(phi), phi, 0.0)
    r = np.where(np.isfinite(r), r, -1e6)
    half = 0.5 * (RING_RADIUS[1] - RING_RADIUS[0])
    ring = np.rint((r - RING_RADIUS[0]) / (2 * half)).astype(np.int64)
    ok = (ring >= 0) & (ring < 7)
    ringc = np.clip(ring, 0, 6)
    n = RING_NMODULES[ringc]
    iphi = np.floor(np.mod(np.asarray(phi, dtype=np.float64), 2 * np.pi) / (2 * np.pi) * n)
    return np.where(ok, RING_FIRST[ringc] + iphi.astype(np.int64) % n + 1, 0)


def channel_index(module: npt.ArrayLike, channel: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Payload channel index 0..60479 of (module 1..420, channel 0..143)."""
    return (np.asarray(module, np.int64) - 1) * N_CHANNELS_PER_MODULE + np.asarray(
        channel, np.int64
    )


def ring_of(module: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """HAPD ring 0..6 (inner to outer) of modules 1..420; -1 for any other number."""
    m = np.asarray(module, dtype=np.int64)
    ring = np.searchsorted(RING_FIRST + RING_NMODULES, m - 1, side="right")
    return np.where((m >= 1) & (m <= N_MODULES), ring, -1)
