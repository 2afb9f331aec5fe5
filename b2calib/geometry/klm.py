"""KLM: barrel (BKLM, 2 sections x 8 sectors x 15 layers) and endcaps (EKLM, backward 12 and
forward 14 layers x 4 sectors), each layer with two orthogonal strip planes.

Every strip has one global channel number ``1..N_CHANNELS`` (the payload key), decoded by
:func:`decode`. Strip counts: BKLM scintillator layers 1-2 have 42 phi and 54 z strips, RPC
layers 3-15 have 48 and 48; EKLM planes have 75 strips.

The signal of a strip is read out at one end: :func:`propagation_distance` is the distance from
a crossing point to the readout end, along the strip (BKLM z strips run along phi and are read
out at the sector edge at negative local x; BKLM phi strips run along z and are read out at the
section's outer end; EKLM strips are read out at the plane edge). :func:`strip_type` gives the
four types of the KLMTimeConstants payload.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

BKLM, EKLM = 1, 2
BKLM_LAYERS = 15
BKLM_SECTORS = 8
EKLM_SECTORS = 4
EKLM_LAYERS = {1: 12, 2: 14}  # section 1 backward, 2 forward
EKLM_STRIPS = 75
#: BKLM layer radius (cm) and the z that separates backward (0) and forward (1) sections.
BKLM_R0, BKLM_DR = 201.0, 9.1
BKLM_ZMIN, BKLM_ZSPLIT, BKLM_ZMAX = -190.0, 40.0, 270.0
#: EKLM first-layer |z| (cm), layer pitch, and the radial extent of the planes.
EKLM_Z0 = {1: 195.0, 2: 280.0}
EKLM_DZ = 4.0
EKLM_RMIN, EKLM_RMAX = 130.0, 330.0


#: KLMTimeConstants types (basf2 ``KLMTimeConstants``): EKLM scintillator, BKLM scintillator,
#: RPC phi strips, RPC z strips.
EKLM_SCINT, BKLM_SCINT, RPC_PHI, RPC_Z = 1, 2, 3, 4
TIME_TYPES = {
    EKLM_SCINT: "EKLM scintillator",
    BKLM_SCINT: "BKLM scintillator",
    RPC_PHI: "RPC phi",
    RPC_Z: "RPC z",
}
#: BKLM scintillator layers (the others are RPCs).
BKLM_SCINT_LAYERS = 2


def bklm_nstrips(layer: int, plane: int) -> int:
    """Strips in a BKLM plane (plane 0: z strips, 1: phi strips)."""
    if layer <= 2:
        return 54 if plane == 0 else 42
    return 48


def _plane_table() -> npt.NDArray[np.int64]:
    rows = []
    for section in (0, 1):
        for sector in range(1, BKLM_SECTORS + 1):
            for layer in range(1, BKLM_LAYERS + 1):
                for plane in (0, 1):
                    rows.append((BKLM, section, sector, layer, plane, bklm_nstrips(layer, plane)))
    for section in (1, 2):
        for sector in range(1, EKLM_SECTORS + 1):
            for layer in range(1, EKLM_LAYERS[section] + 1):
                for plane in (1, 2):
                    rows.append((EKLM, section, sector, layer, plane, EKLM_STRIPS))
    return np.array(rows, dtype=np.int64)


#: One row per strip plane: subdetector, section, sector, layer, plane, number of strips.
PLANES = _plane_table()
PLANE_FIRST = np.concatenate([[1], 1 + np.cumsum(PLANES[:, 5])[:-1]])
N_CHANNELS = int(PLANES[:, 5].sum())
_PLANE_INDEX = {tuple(int(v) for v in row[:5]): i for i, row in enumerate(PLANES)}


def plane_index(subdetector: int, section: int, sector: int, layer: int, plane: int) -> int:
    """Row of :data:`PLANES` for one strip plane."""
    return _PLANE_INDEX[(subdetector, section, sector, layer, plane)]


def _plane_lookup() -> npt.NDArray[np.int64]:
    lut = np.full((3, 3, 9, 16, 3), -1, dtype=np.int64)
    for i, (sub, sec, sect, lay, pl, _n) in enumerate(PLANES):
        lut[sub, sec, sect, lay, pl] = i
    return lut


_LUT = _plane_lookup()
#: The row of :data:`PLANES` of every channel (index channel - 1).
_PLANE_COLUMNS = {
    name: np.ascontiguousarray(PLANES[:, k])
    for k, name in enumerate(("subdetector", "section", "sector", "layer", "plane"))
}
_CHANNEL_PLANE = np.repeat(np.arange(len(PLANES), dtype=np.int64), PLANES[:, 5])


def plane_index_of(
    subdetector: npt.ArrayLike,
    section: npt.ArrayLike,
    sector: npt.ArrayLike,
    layer: npt.ArrayLike,
    plane: npt.ArrayLike,
) -> npt.NDArray[np.int64]:
    """Rows of :data:`PLANES` of strip-plane addresses (arrays of :func:`plane_index`).

    Raises
    ------
    ValueError
        For an address of no KLM strip plane (:func:`bad_address` says which and why).
    """
    address = [np.asarray(a) for a in (subdetector, section, sector, layer, plane)]
    bad = bad_address(*address)
    if bad is not None:
        raise ValueError(f"invalid KLM plane address: {bad[2]}")
    return np.asarray(_LUT[tuple(address)], dtype=np.int64)


#: The fields of a strip-plane address, in :func:`plane_index`'s order.
ADDRESS_FIELDS = ("subdetector", "section", "sector", "layer", "plane")


def bad_address(
    subdetector: npt.ArrayLike,
    section: npt.ArrayLike,
    sector: npt.ArrayLike,
    layer: npt.ArrayLike,
    plane: npt.ArrayLike,
) -> tuple[str, int, str] | None:
    """The first address (in array order) of no KLM strip plane: its field at fault (of
    :data:`ADDRESS_FIELDS`: the first one out of its range; ``""`` for a combination of fields
    in range that no plane has), its position and what is wrong; None when every address is a
    plane's."""
    address = [np.asarray(a, dtype=np.int64) for a in (subdetector, section, sector, layer, plane)]
    if not address[0].size:
        return None
    out = [(a < 0) | (a >= dim) for a, dim in zip(address, _LUT.shape, strict=True)]
    outside = np.logical_or.reduce(out)
    clipped = tuple(np.where(outside, 0, a) for a in address)
    bad = outside | (_LUT[clipped] < 0)
    if not bad.any():
        return None
    k = int(np.argmax(bad))
    for name, a, o, dim in zip(ADDRESS_FIELDS, address, out, _LUT.shape, strict=True):
        if o[k]:
            return name, k, f"{name} {int(a[k])} outside 0..{dim - 1}"
    values = ", ".join(f"{n} {int(a[k])}" for n, a in zip(ADDRESS_FIELDS, address, strict=True))
    return "", k, f"no strip plane has {values}"


def plane_of(ch: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """The row of :data:`PLANES` of channels (1..N_CHANNELS)."""
    ch = np.asarray(ch, dtype=np.int64)
    if np.any((ch < 1) | (ch > N_CHANNELS)):
        raise ValueError(f"KLM channel outside 1..{N_CHANNELS}")
    return np.asarray(_CHANNEL_PLANE[ch - 1])


def channel(
    subdetector: npt.ArrayLike,
    section: npt.ArrayLike,
    sector: npt.ArrayLike,
    layer: npt.ArrayLike,
    plane: npt.ArrayLike,
    strip: npt.ArrayLike,
) -> npt.NDArray[np.int64]:
    """Global channel number (1..N_CHANNELS) of strips; strips are 1-based in their plane."""
    idx = plane_index_of(subdetector, section, sector, layer, plane)
    return PLANE_FIRST[idx] + np.asarray(strip, dtype=np.int64) - 1


def decode(ch: npt.ArrayLike) -> dict[str, npt.NDArray[np.int64]]:
    """Split global channel numbers into subdetector, section, sector, layer, plane, strip."""
    ch = np.asarray(ch, dtype=np.int64)
    i = plane_of(ch)
    out = {name: column[i] for name, column in _PLANE_COLUMNS.items()}
    out["strip"] = ch - PLANE_FIRST[i] + 1
    return out


def _strip_types() -> npt.NDArray[np.int64]:
    d = decode(np.arange(1, N_CHANNELS + 1))
    rpc_type = np.where(d["plane"] == 1, RPC_PHI, RPC_Z)
    bklm_type = np.where(d["layer"] <= BKLM_SCINT_LAYERS, BKLM_SCINT, rpc_type)
    return np.where(d["subdetector"] == EKLM, EKLM_SCINT, bklm_type).astype(np.int64)


_STRIP_TYPE = _strip_types()


def strip_type(ch: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """KLMTimeConstants type of channels: :data:`EKLM_SCINT`, :data:`BKLM_SCINT`, :data:`RPC_PHI`
    (BKLM plane 1, layers 3-15) or :data:`RPC_Z` (BKLM plane 0, layers 3-15)."""
    ch = np.asarray(ch, dtype=np.int64)
    plane_of(ch)  # the range check
    return np.asarray(_STRIP_TYPE[ch - 1])


def propagation_distance(
    ch: npt.ArrayLike, x: npt.ArrayLike, y: npt.ArrayLike, z: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Distance (cm) along the strip from the crossing point ``(x, y, z)`` to the readout end.

    BKLM z strips (plane 0): local x across the sector (``r tan(phi - sector centre)``) plus
    half the sector width; BKLM phi strips (plane 1): along z to the backward end (section 0)
    or from the section split (section 1); EKLM: ``|x|`` (plane 1) or ``|y|`` (plane 2) plus
    half the plane's outer radius.
    """
    ch = np.asarray(ch, dtype=np.int64)
    plane_of(ch)  # the range check
    x, y, z = (np.asarray(a, dtype=np.float64) for a in (x, y, z))
    shape = np.broadcast(ch, x, y, z).shape
    ch, x, y, z = (np.broadcast_to(a, shape).reshape(-1) for a in (ch, x, y, z))
    out = np.empty(ch.shape)
    # each formula only on the channels it applies to, found from the channel's formula in one
    # table (elementwise: the values are those of every formula evaluated everywhere and
    # selected)
    kind = _DISTANCE_KIND[ch - 1]
    eklm = np.flatnonzero(kind <= _EKLM_Y)
    phis = np.flatnonzero((kind == _BKLM_PHI_FORWARD) | (kind == _BKLM_PHI_BACKWARD))
    zs = np.flatnonzero(kind == _BKLM_Z)
    out[eklm] = np.where(kind[eklm] == _EKLM_X, np.abs(x[eklm]), np.abs(y[eklm])) + EKLM_RMAX / 2
    zp = z[phis]
    out[phis] = np.where(kind[phis] == _BKLM_PHI_FORWARD, zp - BKLM_ZSPLIT, BKLM_ZSPLIT - zp)
    xz, yz = x[zs], y[zs]
    r = np.hypot(xz, yz)
    phi = np.arctan2(yz, xz)
    local = r * np.tan(np.mod(phi - _SECTOR_CENTRE[ch[zs] - 1] + np.pi, 2 * np.pi) - np.pi)
    width = 2 * r * np.tan(np.pi / 8)
    out[zs] = local + width / 2
    return out.reshape(shape)


def _distance_kinds() -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float64]]:
    """Per channel: which formula of :func:`propagation_distance` applies, and the centre of
    its sector (rad, ``(sector - 1) pi / 4``)."""
    d = decode(np.arange(1, N_CHANNELS + 1))
    bklm = np.where(
        d["plane"] == 0,
        _BKLM_Z,
        np.where(d["section"] == 1, _BKLM_PHI_FORWARD, _BKLM_PHI_BACKWARD),
    )
    kind = np.where(d["subdetector"] == EKLM, np.where(d["plane"] == 1, _EKLM_X, _EKLM_Y), bklm)
    return kind.astype(np.int8), (d["sector"] - 1) * np.pi / 4


_EKLM_X, _EKLM_Y, _BKLM_PHI_FORWARD, _BKLM_PHI_BACKWARD, _BKLM_Z = range(5)
_DISTANCE_KIND, _SECTOR_CENTRE = _distance_kinds()
