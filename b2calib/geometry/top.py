"""TOP: 16 quartz modules (slots) around the barrel, 512 pixels each (8 rows x 64 columns).

Modules are 1..16, pixels 1..512 as in basf2 ``TOPDigit``; the payload channel index is
``(module - 1) * 512 + (pixel - 1)``. The photon propagation model below is the shared
"reconstruction knowledge": the simulator draws photon times around it and calibrations use it
to compute the expected arrival time of a photon.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

N_MODULES = 16
N_PIXELS = 512
N_CHANNELS = N_MODULES * N_PIXELS
N_ROWS, N_COLUMNS = 8, 64
#: Accelerator RF period (ns); bunches cross at multiples of it. TOP folds times modulo it.
RF_PERIOD_NS = 1.96516
#: Radius of the quartz bars (cm) and their z extent.
RADIUS_CM = 120.0
Z_MIN_CM, Z_MAX_CM = -130.0, 130.0
#: Effective group velocity of Cherenkov photons along the bar (cm/ns).
GROUP_VELOCITY = 19.0


def module_of_phi(phi: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Module (1..16) covering azimuth ``phi`` (radians); module 1 is centred at phi = 0."""
    p = np.mod(np.asarray(phi, dtype=np.float64) + np.pi / N_MODULES, 2 * np.pi)
    return (np.floor(p / (2 * np.pi / N_MODULES)).astype(np.int64) % N_MODULES) + 1


def path_factor(pixel: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Ratio of photon path to bar length for a pixel (bounces: larger for outer columns)."""
    p = np.asarray(pixel, dtype=np.int64) - 1
    col = p % N_COLUMNS
    row = p // N_COLUMNS
    return 1.05 + 0.35 * np.abs(col - 31.5) / 31.5 + 0.03 * row


def expected_propagation_time(
    pixel: npt.ArrayLike, z_local: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Expected photon propagation time (ns) from a track crossing at ``z_local`` (cm) to
    ``pixel`` at the backward readout end of the bar (direct photons)."""
    z = np.asarray(z_local, dtype=np.float64)
    return path_factor(pixel) * (z - Z_MIN_CM) / GROUP_VELOCITY


def channel_index(module: npt.ArrayLike, pixel: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Payload channel index 0..8191 of (module 1..16, pixel 1..512)."""
    return (np.asarray(module, dtype=np.int64) - 1) * N_PIXELS + np.asarray(pixel, np.int64) - 1
