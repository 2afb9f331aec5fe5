"""Detector faults injected into chosen runs, so that data-quality monitoring has something to
find.

A fault is a dict in :attr:`b2calib.sim.SimConfig.faults`::

    {"run": 7, "detector": "CDC", "kind": "dead_fraction", "value": 0.3}

applied only to that run and detector, after the detector response and before the trigger
(so skims see the faulty detector as the HLT would). Kinds:

``dead_fraction``
    A fraction ``value`` of the detector's readout channels is dead for the whole run (chosen
    from the seed, the run and the detector): their hits are removed. Channels are CDC wires,
    SVD sensor sides, PXD gate groups (sensor x 16 bands of 48 rows; a track's PXD cluster whose
    seed pixel is dead is lost), TOP and ARICH pixels, ECL crystals (a cluster whose central
    crystal is dead is lost) and KLM strips. The per-track hit
    counts of the tracks (``TrackFitResults_m_nCDCHits``, ``m_nSVDHits``) are recounted; the
    PXD hit count of a track counts sensor crossings and is left as it is.
``time_shift``
    ``value`` ns added to every time the detector measures (CDC, SVD, TOP, ECL, KLM), as a
    wrong trigger or clock offset would, digitised again.
``noise``
    On average ``value`` extra hits per event (Poisson) on random channels, out of time, as
    the detector's own random noise is simulated (PXD digits, SVD clusters, TOP, ARICH and KLM
    digits); they belong to no track.
``dead_sensor``, ``dead_row``, ``dead_drain`` (PXD)
    One PXD sensor, gate row or drain line is dead for the whole run: its digits are removed.
    ``value`` names it: the sensor index ``s`` (0-39, the order of
    :data:`b2calib.geometry.vxd.PXD_IDS`); a row ``s * 768 + v``; a drain ``s * 1000 + d``
    with ``d = u * 4 + v % 4`` (the four drains of a column read every fourth row, as basf2
    numbers them). (:func:`pxd_dead_pixels` gives the pixels.)

Without faults the simulator's output is bit-identical to one without this module: faults
draw from their own random streams.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from b2calib.exceptions import ConfigError
from b2calib.geometry import DETECTORS, arich, cdc, ecl, klm, top, vxd

__all__ = ["FAULT_KINDS", "PXD_DRAINS", "apply_faults", "pxd_dead_pixels", "validate_faults"]

#: Known fault kinds and the detectors each applies to.
FAULT_KINDS: dict[str, tuple[str, ...]] = {
    "dead_fraction": DETECTORS,
    "time_shift": ("SVD", "CDC", "TOP", "ECL", "KLM"),
    "noise": ("PXD", "SVD", "TOP", "ARICH", "KLM"),
    "dead_sensor": ("PXD",),
    "dead_row": ("PXD",),
    "dead_drain": ("PXD",),
}
#: Drain lines per PXD sensor (``drain = u * 4 + v % 4``).
PXD_DRAINS = vxd.PXD_NU * 4
_PXD_UNITS = {
    "dead_sensor": vxd.N_PXD_SENSORS,
    "dead_row": vxd.N_PXD_SENSORS * vxd.PXD_NV,
    "dead_drain": vxd.N_PXD_SENSORS * PXD_DRAINS,
}
_PXD_BANDS = 16
Collection = dict[str, npt.NDArray[Any]]


def validate_faults(faults: list[dict[str, Any]], first_run: int, last_run: int) -> None:
    """Raise :class:`ConfigError` on a fault that names an unknown kind, detector or run."""
    for i, f in enumerate(faults):
        where = f"faults[{i}]"
        if not isinstance(f, dict) or set(f) != {"run", "detector", "kind", "value"}:
            raise ConfigError(f"{where}: need exactly the keys run, detector, kind, value: {f!r}")
        kind, det = f["kind"], f["detector"]
        if kind not in FAULT_KINDS:
            raise ConfigError(f"{where}: unknown kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        if det not in FAULT_KINDS[kind]:
            raise ConfigError(
                f"{where}: {kind} does not apply to {det!r}; it applies to "
                f"{', '.join(FAULT_KINDS[kind])}"
            )
        if not isinstance(f["run"], int) or not first_run <= f["run"] <= last_run:
            raise ConfigError(
                f"{where}: run {f['run']!r} is not simulated ({first_run}..{last_run})"
            )
        value = f["value"]
        if not isinstance(value, int | float) or not np.isfinite(value):
            raise ConfigError(f"{where}: value must be a number, got {value!r}")
        if kind == "dead_fraction" and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where}: dead_fraction must be in [0, 1], got {value}")
        if kind == "noise" and not value >= 0.0:
            raise ConfigError(f"{where}: noise (hits per event) must not be negative, got {value}")
        if kind in _PXD_UNITS and not (value == int(value) and 0 <= value < _PXD_UNITS[kind]):
            raise ConfigError(
                f"{where}: {kind} needs an index in [0, {_PXD_UNITS[kind]}), got {value}"
            )


def pxd_dead_pixels(kind: str, value: int) -> npt.NDArray[np.int64]:
    """Flat pixel numbers ``(sensor * 250 + u) * 768 + v`` of the PXD sensor, row or drain a
    ``dead_sensor``, ``dead_row`` or ``dead_drain`` fault with ``value`` kills."""
    n_sensor = vxd.PXD_NU * vxd.PXD_NV
    u, v = np.divmod(np.arange(n_sensor, dtype=np.int64), vxd.PXD_NV)
    if kind == "dead_sensor":
        return int(value) * n_sensor + np.arange(n_sensor, dtype=np.int64)
    if kind == "dead_row":
        s, row = divmod(int(value), vxd.PXD_NV)
        on = v == row
    elif kind == "dead_drain":
        s, drain = divmod(int(value), PXD_DRAINS)
        on = u * 4 + v % 4 == drain
    else:
        raise ValueError(f"not a PXD dead-part fault: {kind!r}")
    return s * n_sensor + np.flatnonzero(on)


def _dead_channels(
    seed: int, exp: int, run: int, detector: str, n: int, fraction: float
) -> npt.NDArray[np.bool_]:
    rng = np.random.default_rng(
        np.random.SeedSequence([seed, exp, run, 0x4641554C, DETECTORS.index(detector)])
    )
    return rng.random(n) < fraction


def _keep(c: Collection, mask: npt.NDArray[np.bool_]) -> Collection:
    return {k: v[mask] for k, v in c.items()}


def _recount(fit: Collection, hits: Collection, column: str) -> None:
    """Per-track count of ``hits`` rows (with ``m_trackIndex`` >= 0) into ``fit[column]``."""
    n_trk = len(fit["evt"])
    first = np.searchsorted(fit["evt"], hits["evt"])
    ti = hits["m_trackIndex"].astype(np.int64)
    on = ti >= 0
    pos = first[on] + ti[on]
    fit[column] = np.bincount(pos, minlength=n_trk).astype(fit[column].dtype)


def _channels(detector: str, c: Collection) -> tuple[npt.NDArray[np.int64], int]:
    """Channel index of every row of the detector's main collection, and the channel count."""
    if detector == "CDC":
        return cdc.global_wire(c["m_layer"], c["m_wire"]), cdc.N_WIRES
    if detector == "SVD":
        s = vxd.sensor_index(c["m_sensorID"], "SVD")
        return s * 2 + c["m_isUCluster"].astype(np.int64), 2 * vxd.N_SVD_SENSORS
    if detector == "PXD":
        s = vxd.sensor_index(c["m_sensorID"], "PXD")
        band = c["m_vCellID"].astype(np.int64) * _PXD_BANDS // vxd.PXD_NV
        return s * _PXD_BANDS + band, _PXD_BANDS * vxd.N_PXD_SENSORS
    if detector == "TOP":
        return top.channel_index(c["m_moduleID"], c["m_pixelID"]), top.N_CHANNELS
    if detector == "ARICH":
        ch = (c["m_modID"].astype(np.int64) - 1) * 144 + c["m_channelID"].astype(np.int64)
        return ch, arich.N_CHANNELS
    if detector == "ECL":
        return c["m_CellId"].astype(np.int64) - 1, ecl.N_CRYSTALS
    ch = klm.channel(
        c["m_subdetector"], c["m_section"], c["m_sector"], c["m_layer"], c["m_plane"], c["m_strip"]
    )
    return ch - 1, klm.N_CHANNELS


_MAIN = {
    "CDC": "CDCHits",
    "SVD": "SVDClusters",
    "PXD": "PXDDigits",
    "TOP": "TOPDigits",
    "ARICH": "ARICHDigits",
    "ECL": "ECLCalDigits",
    "KLM": "KLMDigits",
}
#: time columns and their digitisation (mantissa bits; None: full float32)
_TIMES: dict[str, tuple[tuple[str, str, int | None], ...]] = {
    "CDC": (("CDCHits", "m_time", 12),),
    "SVD": (("SVDClusters", "m_clsTime", 12),),
    "TOP": (("TOPDigits", "m_time", 14),),
    "ECL": (("ECLCalDigits", "m_Time", 12), ("ECLClusters", "m_time", None)),
    "KLM": (("KLMDigits", "m_time", 12),),
}


def _noise(rng: np.random.Generator, detector: str, evt: npt.NDArray[np.int64]) -> Collection:
    """Random noise hits of ``detector`` in the events ``evt`` (the simulator's noise model)."""
    from b2calib.sim.conditions import SVD_RAW_RANGE
    from b2calib.sim.detector import quantize

    n = len(evt)
    if detector == "PXD":
        return {
            "evt": evt,
            "m_sensorID": vxd.PXD_IDS[rng.integers(0, vxd.N_PXD_SENSORS, n)].astype(np.uint16),
            "m_uCellID": rng.integers(0, vxd.PXD_NU, n).astype(np.int16),
            "m_vCellID": rng.integers(0, vxd.PXD_NV, n).astype(np.int16),
            "m_charge": rng.integers(3, 30, n).astype(np.int16),
        }
    if detector == "SVD":
        strip = rng.integers(0, vxd.SVD_STRIPS, n)
        sensor = rng.integers(0, vxd.N_SVD_SENSORS, n)
        side = rng.integers(0, 2, n)
        # the 512-strip V sides (layers 4-6): the strip mapped onto them (no other draw)
        nstrips = vxd.SVD_SIDE_STRIPS[2 * sensor + side]
        strip = strip * nstrips // vxd.SVD_STRIPS
        return {
            "evt": evt,
            "m_sensorID": vxd.SVD_IDS[sensor].astype(np.int32),
            "m_isUCluster": side.astype(np.int8),
            "m_position": quantize((strip + 0.5) / nstrips * 4.0 - 2.0, 12),
            "m_clsCharge": np.rint(rng.uniform(6000, 12000, n)).astype(np.float32),
            "m_clsTime": quantize(rng.uniform(*SVD_RAW_RANGE, n), 12),
            "m_clsSize": np.ones(n, np.int8),
            "m_firstStrip": strip.astype(np.int16),
            "m_trackIndex": np.full(n, -1, np.int16),
        }
    if detector == "TOP":
        ch = rng.integers(0, top.N_CHANNELS, n)
        return {
            "evt": evt,
            "m_moduleID": (ch // top.N_PIXELS + 1).astype(np.int8),
            "m_pixelID": (ch % top.N_PIXELS + 1).astype(np.int16),
            "m_time": quantize(rng.uniform(-30.0, 70.0, n), 14),
            "m_pulseHeight": np.clip(np.rint(rng.normal(300, 80, n)), 40, 2000).astype(np.int16),
        }
    if detector == "ARICH":
        ch = rng.integers(0, arich.N_CHANNELS, n)
        return {
            "evt": evt,
            "m_modID": (ch // 144 + 1).astype(np.int16),
            "m_channelID": (ch % 144).astype(np.int16),
            "m_bitmap": (1 << rng.integers(0, 4, n)).astype(np.uint8),
        }
    addr = klm.decode(rng.integers(1, klm.N_CHANNELS + 1, n))
    return {
        "evt": evt,
        "m_subdetector": addr["subdetector"].astype(np.int8),
        "m_section": addr["section"].astype(np.int8),
        "m_sector": addr["sector"].astype(np.int8),
        "m_layer": addr["layer"].astype(np.int8),
        "m_plane": addr["plane"].astype(np.int8),
        "m_strip": addr["strip"].astype(np.int16),
        "m_time": quantize(rng.uniform(-100.0, 100.0, n), 12),
        "m_nPhotoelectrons": quantize(rng.uniform(0, 10, n), 6),
    }


def apply_faults(
    collections: dict[str, Collection],
    faults: list[dict[str, Any]],
    *,
    seed: int,
    exp: int,
    run: int,
    chunk: int,
    n_events: int,
) -> None:
    """Apply the faults of run ``run`` to the collections of chunk ``chunk`` (``n_events``
    events), in place."""
    from b2calib.sim.detector import quantize

    for f in faults:
        if f["run"] != run:
            continue
        det, kind, value = f["detector"], f["kind"], float(f["value"])
        name = _MAIN[det]
        if name not in collections:
            continue
        if kind == "dead_fraction":
            c = collections[name]
            ch, n = _channels(det, c)
            dead = _dead_channels(seed, exp, run, det, n, value)
            collections[name] = _keep(c, ~dead[ch])
            if det == "CDC":
                _recount(collections["TrackFitResults"], collections[name], "m_nCDCHits")
            elif det == "SVD":
                _recount(collections["TrackFitResults"], collections[name], "m_nSVDHits")
            elif det == "PXD" and "PXDClusters" in collections:
                # a track's cluster is lost with its seed pixel's gate group
                cl = collections["PXDClusters"]
                collections["PXDClusters"] = _keep(cl, ~dead[_channels(det, cl)[0]])
            elif det == "ECL":
                cl = collections["ECLClusters"]
                alive = ~dead[cl["m_maxCellId"].astype(np.int64) - 1]
                collections["ECLClusters"] = _keep(cl, alive)
        elif kind == "noise":
            rng = np.random.default_rng(
                np.random.SeedSequence([seed, exp, run, 0x4E4F4953, DETECTORS.index(det), chunk])
            )
            counts = rng.poisson(value, n_events)
            extra = _noise(rng, det, np.repeat(np.arange(n_events, dtype=np.int64), counts))
            c = collections[name]
            both = {k: np.concatenate([c[k], extra[k].astype(c[k].dtype)]) for k in c}
            order = np.argsort(both["evt"], kind="stable")
            collections[name] = {k: v[order] for k, v in both.items()}
        elif kind in _PXD_UNITS:
            c = collections[name]
            s = vxd.sensor_index(c["m_sensorID"], "PXD")
            flat = (s * vxd.PXD_NU + c["m_uCellID"].astype(np.int64)) * vxd.PXD_NV + c[
                "m_vCellID"
            ].astype(np.int64)
            collections[name] = _keep(c, ~np.isin(flat, pxd_dead_pixels(kind, int(value))))
        elif kind == "time_shift":
            for coll, column, bits in _TIMES[det]:
                if coll not in collections:
                    continue
                t = collections[coll][column].astype(np.float64) + value
                collections[coll][column] = (
                    quantize(t, bits) if bits is not None else t.astype(np.float32)
                )


def __dir__() -> list[str]:
    return __all__
