"""CDC: 14336 sense wires in 56 layers (superlayer 0 with 8 layers, superlayers 1-8 with 6).

Layers are numbered continuously 0..55 (basf2 "ICLayer"); wires inside a layer 0..n-1.
The global wire index ``layer_first[layer] + wire`` runs 0..14335 and is the channel number
used in payloads. Wires are read out by 300 front-end boards of up to 48 channels.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

N_WIRES = 14336
N_LAYERS = 56
N_BOARDS = 300

_SL_NWIRES = [160, 160, 192, 224, 256, 288, 320, 352, 384]
_SL_NLAYERS = [8, 6, 6, 6, 6, 6, 6, 6, 6]
#: Superlayer of each layer.
LAYER_SUPERLAYER = np.repeat(np.arange(9), _SL_NLAYERS)
#: Wires in each layer.
LAYER_NWIRES = np.repeat(_SL_NWIRES, _SL_NLAYERS).astype(np.int64)
#: Global index of wire 0 of each layer.
LAYER_FIRST = np.concatenate([[0], np.cumsum(LAYER_NWIRES)[:-1]])


def _radii() -> npt.NDArray[np.float64]:
    r = [16.8 + 1.0 * i for i in range(8)]
    start = 25.7
    for _sl in range(1, 9):
        r += [start + 1.78 * i for i in range(6)]
        start = r[-1] + 2.05
    return np.array(r)


#: Sense-wire layer radius in cm (16.8 cm inner, ~111 cm outer).
LAYER_RADIUS = _radii()
#: Half-width of a drift cell in cm (half the wire spacing in r-phi).
LAYER_HALF_CELL = np.pi * LAYER_RADIUS / LAYER_NWIRES
#: z extent (cm) of each layer: the endplates are conical.
LAYER_ZMIN = np.interp(LAYER_RADIUS, [16.8, 111.1], [-35.0, -83.0])
LAYER_ZMAX = np.interp(LAYER_RADIUS, [16.8, 111.1], [68.0, 159.0])
#: Half-cell stagger of alternate layers.
LAYER_STAGGER = np.where(np.arange(N_LAYERS) % 2 == 1, 0.5, 0.0)

assert LAYER_NWIRES.sum() == N_WIRES


def global_wire(layer: npt.ArrayLike, wire: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Global wire index (0..14335) of (layer, wire)."""
    return LAYER_FIRST[np.asarray(layer, dtype=np.int64)] + np.asarray(wire, dtype=np.int64)


def layer_of(gwire: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Layer (0..55) of global wire indices."""
    return np.searchsorted(LAYER_FIRST, np.asarray(gwire, dtype=np.int64), side="right") - 1


def _board_table() -> npt.NDArray[np.int64]:
    """Board of every wire: superlayers 1-8 in blocks of 6 layers x 8 wires (48 channels);
    superlayer 0 in two halves of 4 layers x 12 wires (the last board of each half has 16)."""
    board = np.empty(N_WIRES, dtype=np.int64)
    nb = 0
    for half in range(2):
        for layer in range(4 * half, 4 * half + 4):
            w = np.arange(LAYER_NWIRES[layer])
            board[LAYER_FIRST[layer] + w] = nb + w // 12
        nb += int(np.ceil(160 / 12))
    for sl in range(1, 9):
        layers = np.flatnonzero(sl == LAYER_SUPERLAYER)
        for lay in layers.tolist():
            w = np.arange(LAYER_NWIRES[lay])
            board[LAYER_FIRST[lay] + w] = nb + w // 8
        nb = nb + int(LAYER_NWIRES[layers[0]] // 8)
    return board


_BOARD = _board_table()
assert _BOARD.max() + 1 == N_BOARDS


def board_of(gwire: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Front-end board (0..299) of global wire indices."""
    return _BOARD[np.asarray(gwire, dtype=np.int64)]
