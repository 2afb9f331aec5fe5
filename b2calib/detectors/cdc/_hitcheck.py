"""The first CDC hit whose layer, wire or left/right no CDC hit has, compiled with numba: one
pass over the hits as stored (int8 and int16, no widened copies), a few percent of a read.

Importing this module imports numba; :func:`b2calib.detectors.cdc.tracking.check_hits` imports
it on first use only and checks with numpy without it.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["first_bad_hit"]


@numba.njit(cache=True, nogil=True)
def first_bad_hit(layer, wire, lr, nwires):  # type: ignore[no-untyped-def,unused-ignore]
    """Index of the first hit with ``layer`` outside ``0..len(nwires)-1``, ``wire`` outside
    ``0..nwires[layer]-1`` or ``lr`` (when it has as many entries as ``layer``) not 0 or 1;
    -1 when every hit is sound."""
    n_layers = nwires.shape[0]
    check_lr = lr.shape[0] == layer.shape[0]
    for k in range(layer.shape[0]):
        ly = np.int64(layer[k])
        if ly < 0 or ly >= n_layers:
            return k
        w = np.int64(wire[k])
        if w < 0 or w >= nwires[ly]:
            return k
        if check_lr and lr[k] != 0 and lr[k] != 1:
            return k
    return -1
