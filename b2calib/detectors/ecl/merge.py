"""ECL crystal energy: the merge of the methods (basf2 eclMergingCrystalE, ``ECLCrystalEnergy``)
and the merged constants the collectors apply.

The merged constant of a crystal is the inverse-variance average of the methods that measured
it; the ``methods`` column is a bit mask of which did (:data:`METHOD_BITS`: 1 Bhabha 5x5,
2 gamma-gamma, 4 mu-mu). Convention (the truth payload's): ``E = const * E_raw``.
"""

from __future__ import annotations

import numpy as np

from b2calib.calibration import Constants
from b2calib.conditions import ChannelStatus
from b2calib.conditions.iov import RunKey
from b2calib.detectors.ecl._common import F, applied_column
from b2calib.geometry import ecl

__all__ = [
    "MERGED_PAYLOAD",
    "METHOD_BITS",
    "applied_constants",
    "applied_errors",
    "merge_methods",
]

MERGED_PAYLOAD = "ECLCrystalEnergy"
METHOD_BITS = {"ee5x5": 1, "gamma_gamma": 2, "mumu": 4}


def applied_constants(constants: Constants, run: RunKey) -> F:
    """The ECLCrystalEnergy applied for ``run`` (1 without a payload; flagged crystals: the
    median of the measured ones)."""
    return applied_column(constants, MERGED_PAYLOAD, run, 1.0, ecl.N_CRYSTALS)


def applied_errors(constants: Constants, run: RunKey, unmeasured: float) -> F:
    """Relative uncertainty of the applied ECLCrystalEnergy; ``unmeasured`` (the spread of
    uncalibrated crystal gains) where it has none (no payload, or a flagged crystal)."""
    payload = constants.get(MERGED_PAYLOAD, *run)
    if payload is None or "value" not in payload.errors:
        return np.full(ecl.N_CRYSTALS, unmeasured)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(payload.errors["value"] / payload.value("value"))
    return np.where(np.isfinite(rel), rel, unmeasured)


def merge_methods(
    methods: dict[str, tuple[F, F, np.ndarray]],
) -> tuple[F, F, np.ndarray, np.ndarray]:
    """Inverse-variance average of the methods that measured each crystal.

    Returns value, error, status and the bit mask of the methods used (:data:`METHOD_BITS`).
    A crystal no method measured is FAILED if any method's fit failed, else NOT_ENOUGH_DATA.
    """
    nc = ecl.N_CRYSTALS
    sw = np.zeros(nc)
    swx = np.zeros(nc)
    mask = np.zeros(nc, dtype=np.int8)
    failed = np.zeros(nc, dtype=bool)
    for name, (v, e, s) in methods.items():
        ok = (s == ChannelStatus.OK) & np.isfinite(v) & np.isfinite(e) & (e > 0)
        w = np.where(ok, 1.0 / np.where(ok, e, 1.0) ** 2, 0.0)
        sw += w
        swx += w * np.nan_to_num(v)
        mask[ok] |= METHOD_BITS[name]
        failed |= s == ChannelStatus.FAILED
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(sw > 0, swx / sw, np.nan)
        error = np.where(sw > 0, 1.0 / np.sqrt(sw), np.nan)
    status = np.where(
        sw > 0,
        ChannelStatus.OK,
        np.where(failed, ChannelStatus.FAILED, ChannelStatus.NOT_ENOUGH_DATA),
    ).astype(np.int8)
    return value, error, status, mask


def __dir__() -> list[str]:
    return __all__
