"""Detector response: from generated particles to cDST-like collections.

Each sub-detector turns the particles it sees into the objects basf2 writes to a cDST, with
the *true* constants of the run applied (gains, offsets, x-t relations, masks) and the
resolutions below, so that calibrations can recover those constants. The processing global
tag of the simulated files is nominal (all gains 1, all offsets 0): raw quantities carry the
full miscalibration. Collections are flat arrays with an ``evt`` column (event index) and are
grouped per event only when written.

Resolution model (documented so tests can rely on it)
-----------------------------------------------------
* tracks: sigma(pt)/pt = 0.1 % pt (+) 0.3 %; d0: 12 um (+) 20 um / (p sin^1.5 theta);
  z0: 20 um (+) 30 um / (p sin^1.5 theta); 99.5 % efficiency if >= 6 CDC layers are crossed.
* CDC: 96 % hit efficiency, drift-time resolution 2 ns, track-fit drift-length resolution 60 um,
  dE/dx per hit with Landau (Moyal) fluctuations; hit times are corrected for time of flight.
* ECL: electromagnetic showers over 5x5 crystals with 95.5 % containment and a leakage tail;
  muons and 70 % of hadrons deposit a MIP (~190 MeV); noise 0.3 MeV, 1 MeV digit threshold;
  time resolution sqrt((0.25 ns GeV / E)^2 + (0.8 ns)^2).
* TOP: ~22 photons per track, transit-time spread 80 ps with a 20 % second peak at +350 ps.
* KLM: strip efficiency per strip; digit time resolution 1 ns (scintillators), 1.5 ns (RPCs);
  signal propagation to the strip's readout end with the delay of its type (EKLM / BKLM
  scintillator, RPC phi / z: ``KLM_PROPAGATION_DELAY``) plus a cable delay per strip.

Digitisation: stored floats keep a documented number of mantissa bits (:func:`quantize`), as a
digitiser would, e.g. 12 bits for CDC times (0.05 ns at 200 ns), 14 bits for TOP times, 12 bits for
ECL energies (2.4e-4 relative). Track parameters keep full float32 precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from b2calib.geometry import DETECTOR_ID, arich, cdc, ecl, klm, top, vxd
from b2calib.physics import masses
from b2calib.sim.conditions import (
    COS_EDGES,
    KLM_PROPAGATION_DELAY,
    SVD_RAW_RANGE,
    Conditions,
    xt_position,
)
from b2calib.sim.physics import C_CM_PER_NS, Particles

__all__ = ["DETECTOR_COLLECTIONS", "Response", "remove_detectors", "side_rng", "simulate_response"]

# the simulator mixes integer and float arrays freely: internal arrays are typed loosely
F = npt.NDArray[Any]
IA = npt.NDArray[Any]
Collection = dict[str, npt.NDArray[Any]]

_BFIELD_FACTOR = 0.0029979246  # 1/R[cm] = factor * B[T] / pt[GeV]


@dataclass
class Response:
    """Collections (flat, with ``evt``) and event-level columns of one chunk of events."""

    collections: dict[str, Collection] = field(default_factory=dict)
    event: dict[str, npt.NDArray[Any]] = field(default_factory=dict)


@dataclass
class Tracks:
    """Reconstructed tracks (true kinematics kept for the detector response)."""

    evt: IA
    index: IA  # index of the track within its event
    charge: IA
    p: F
    pt: F
    theta: F
    phi0: F
    tanl: F
    vertex: F  # (n, 3)
    radius: F  # curvature radius (cm), inf when the magnet is off
    beta: F
    backward: npt.NDArray[np.bool_]  # cosmic upper leg: traversed before the POCA
    pdg: IA
    particle: IA  # index into the particle arrays
    cdc_inside: npt.NDArray[np.bool_]  # (tracks, 56): layer crossed inside the chamber
    cdc_phi: F  # (tracks, 56): azimuth at each layer
    cdc_alpha: F  # (tracks, 56): entrance angle at each layer


def side_rng(rng: np.random.Generator, key: int) -> np.random.Generator:
    """An independent generator for ``key`` derived from ``rng``'s seed, without drawing from
    ``rng``: what a detector response adds (a new branch, a new effect) draws from its own
    side stream, so that the values of every other branch stay as they were."""
    seq = rng.bit_generator.seed_seq
    if not isinstance(seq, np.random.SeedSequence) or seq.entropy is None:
        raise TypeError("side_rng needs a generator seeded from a SeedSequence")
    entropy = np.atleast_1d(np.asarray(seq.entropy, dtype=object)).tolist()
    return np.random.default_rng(np.random.SeedSequence([*entropy, *seq.spawn_key, key]))


def quantize(x: npt.ArrayLike, bits: int) -> npt.NDArray[np.float32]:
    """Round float32 values to ``bits`` mantissa bits (relative precision 2**-bits)."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    drop = 23 - bits
    u = a.view(np.uint32)
    half = np.uint32(1 << (drop - 1))
    mask = np.uint32((0xFFFFFFFF >> drop) << drop)
    return ((u + half) & mask).view(np.float32)


def _moyal(rng: np.random.Generator, n: int) -> F:
    """Moyal (Landau-like) variates normalised to mean 1 and unit scale."""
    z = rng.standard_normal(n)
    return -2.0 * np.log(np.abs(z) + 1e-300) - (np.euler_gamma + np.log(2.0))


def _wrap(a: F) -> F:
    return np.mod(a + np.pi, 2 * np.pi) - np.pi


def _cross(trk: Tracks, r: float | F) -> tuple[npt.NDArray[np.bool_], F, F, F, F]:
    """Where tracks cross the cylinder of radius ``r`` (a number: arrays per track) or each
    cylinder of a 1-D array of radii (arrays of shape (tracks, radii)).

    Returns (reached, phi, z, arc length in xy, entrance angle). A straight line from the
    vertex is bent by the curvature: azimuth shift q * asin(s / 2R).
    """
    x0, y0 = trk.vertex[:, 0], trk.vertex[:, 1]
    phi0 = trk.phi0
    R, q, z0, tanl = trk.radius, trk.charge, trk.vertex[:, 2], trk.tanl
    if np.ndim(r) == 1:
        x0, y0, phi0, R, q, z0, tanl = (a[:, None] for a in (x0, y0, phi0, R, q, z0, tanl))
        r = np.asarray(r)[None, :]
    elif np.ndim(r) != 0:
        raise ValueError("r must be a number or a 1-D array of radii")
    ux, uy = np.cos(phi0), np.sin(phi0)
    pu = x0 * ux + y0 * uy
    disc = pu**2 - (x0**2 + y0**2) + r**2
    s = -pu + np.sqrt(np.maximum(disc, 0.0))
    ratio = s / (2 * R)
    reached = (disc >= 0) & (ratio < 1.0)
    bend = np.arcsin(np.clip(ratio, -1.0, 1.0))
    phi = np.arctan2(y0 + s * uy, x0 + s * ux) - q * bend
    arc = 2 * R * bend
    arc = np.where(np.isfinite(arc), arc, s)
    z = z0 + arc * tanl
    alpha = _wrap(phi0 - 2 * q * bend - phi)
    return reached, phi, z, arc, alpha


def _local_index(evt: IA) -> IA:
    """Index of each element within its event (``evt`` sorted)."""
    if len(evt) == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.searchsorted(evt, evt)
    return np.arange(len(evt)) - first


# ------------------------------------------------------------------------------------ tracks
def reconstruct_tracks(
    rng: np.random.Generator, parts: Particles, b_field: float
) -> tuple[Tracks, Collection]:
    """Select reconstructable charged particles and fit them (smeared helices)."""
    q = parts.charge
    px, py, pz, e = parts.p4.T
    pt = np.hypot(px, py)
    p = np.sqrt(pt**2 + pz**2)
    sel = (q != 0) & (pt > 0.05)
    idx = np.flatnonzero(sel)
    with np.errstate(divide="ignore"):
        radius = np.where(b_field > 0, pt[idx] / (_BFIELD_FACTOR * max(b_field, 1e-9)), np.inf)
    trk = Tracks(
        evt=parts.evt[idx],
        index=np.zeros(len(idx), np.int64),
        charge=q[idx],
        p=p[idx],
        pt=pt[idx],
        theta=np.arccos(np.clip(pz[idx] / p[idx], -1, 1)),
        phi0=np.arctan2(py[idx], px[idx]),
        tanl=pz[idx] / pt[idx],
        vertex=parts.vertex[idx],
        radius=radius,
        beta=p[idx] / e[idx],
        backward=parts.t0[idx] < 0,
        pdg=parts.pdg[idx],
        particle=idx,
        cdc_inside=np.zeros((len(idx), cdc.N_LAYERS), bool),
        cdc_phi=np.zeros((len(idx), cdc.N_LAYERS)),
        cdc_alpha=np.zeros((len(idx), cdc.N_LAYERS)),
    )
    # the layer crossings decide reconstructability and are reused by the CDC response
    reached, trk.cdc_phi, z, _, trk.cdc_alpha = _cross(trk, cdc.LAYER_RADIUS)
    trk.cdc_inside = reached & (z >= cdc.LAYER_ZMIN) & (z <= cdc.LAYER_ZMAX)
    ok = (trk.cdc_inside.sum(axis=1) >= 6) & (rng.random(len(idx)) < 0.995)
    trk = _subset(trk, ok)
    trk.index = _local_index(trk.evt)
    n = len(trk.p)
    sin = np.sin(trk.theta)
    ms = 1.0 / (trk.p * sin**1.5)
    phi0 = trk.phi0 + rng.normal(0, 5e-4, n)
    d0_true = trk.vertex[:, 0] * np.sin(trk.phi0) - trk.vertex[:, 1] * np.cos(trk.phi0)
    d0 = d0_true + rng.standard_normal(n) * np.hypot(12e-4, 20e-4 * ms)
    z0 = trk.vertex[:, 2] + rng.standard_normal(n) * np.hypot(20e-4, 30e-4 * ms)
    if b_field > 0:
        pt_meas = trk.pt * (1 + rng.standard_normal(n) * np.hypot(1e-3 * trk.pt, 3e-3))
        omega = trk.charge * _BFIELD_FACTOR * b_field / pt_meas
    else:
        omega = np.zeros(n)
    fit: Collection = {
        "evt": trk.evt,
        "m_d0": d0.astype(np.float32),
        "m_phi0": _wrap(phi0).astype(np.float32),
        "m_omega": omega.astype(np.float32),
        "m_z0": z0.astype(np.float32),
        "m_tanLambda": (trk.tanl + rng.normal(0, 1e-3, n)).astype(np.float32),
        "m_pValue": rng.random(n).astype(np.float32),
        "m_charge": trk.charge.astype(np.int8),
    }
    return trk, fit


def _subset(trk: Tracks, mask: npt.NDArray[np.bool_]) -> Tracks:
    return Tracks(**{k: getattr(trk, k)[mask] for k in trk.__dataclass_fields__})


# --------------------------------------------------------------------------------------- CDC
def _xt_inverse_table(cond: Conditions, npts: int = 512) -> tuple[F, F]:
    """Per (layer, lr) drift time sampled on a uniform drift-distance grid."""
    xmax = cdc.LAYER_HALF_CELL * 1.05
    table = np.empty((cdc.N_LAYERS * 2, npts))
    for layer in range(cdc.N_LAYERS):
        for lr in range(2):
            prm = cond.cdc_xt[layer, lr]
            tmax = prm[6] + (xmax[layer] * 1.2) / prm[7]
            tg = np.linspace(0.0, tmax, 4000)
            xg = xt_position(prm, tg)
            table[2 * layer + lr] = np.interp(np.linspace(0, xmax[layer], npts), xg, tg)
    return table, xmax


def bethe_bloch(betagamma: F) -> F:
    """Mean dE/dx in units of the Fermi plateau (electrons from Bhabha = 1)."""
    bg2 = np.asarray(betagamma) ** 2
    f = (1 + 1 / bg2) * (0.6 + 0.18 * np.log1p(bg2))
    plateau = 1.5 * 1.1223
    return np.minimum(f, plateau) / plateau


def cdc_response(
    rng: np.random.Generator, trk: Tracks, t_coll: F, cond: Conditions
) -> tuple[Collection, Collection, IA]:
    """CDCHits (with the track-fit relation) and CDCDedxTracks. Returns also hits per track."""
    ti, layer = np.nonzero(trk.cdc_inside)
    phi_h, alpha_h = trk.cdc_phi[ti, layer], trk.cdc_alpha[ti, layer]
    nw = cdc.LAYER_NWIRES[layer]
    u = np.mod(phi_h, 2 * np.pi) / (2 * np.pi) * nw - cdc.LAYER_STAGGER[layer]
    wire_f = np.rint(u)
    frac = u - wire_f
    wire = wire_f.astype(np.int64) % nw
    gw = cdc.global_wire(layer, wire)
    gain = cond.cdc_wire_gain[gw]
    keep = (gain > 0) & (rng.random(len(gw)) < 0.96)
    ti, layer, wire, gw, frac, alpha_h, gain = (  # type: ignore[assignment]
        a[keep] for a in (ti, layer, wire, gw, frac, alpha_h, gain)
    )
    cosa = np.abs(np.cos(alpha_h))
    dist = np.abs(frac) * 2 * np.pi * cdc.LAYER_RADIUS[layer] / cdc.LAYER_NWIRES[layer] * cosa
    lr = (frac > 0).astype(np.int64)
    table, xmax = _xt_inverse_table(cond)
    pos = np.clip(dist / xmax[layer], 0, 1) * (table.shape[1] - 1)
    i0 = np.minimum(pos.astype(np.int64), table.shape[1] - 2)
    w = pos - i0
    row = 2 * layer + lr
    t_drift = table[row, i0] * (1 - w) + table[row, i0 + 1] * w
    evt = trk.evt[ti]
    t_meas = t_coll[evt] + t_drift + cond.cdc_t0[gw] + rng.normal(0, 2.0, len(gw))
    fit_dist = np.abs(dist + rng.normal(0, 0.006, len(gw)))
    # dE/dx
    sin = np.sin(trk.theta[ti])
    height = np.where(cdc.LAYER_SUPERLAYER[layer] == 0, 1.0, 1.78)
    path = height / (np.maximum(sin, 0.1) * np.maximum(cosa, 0.2))
    m = masses(trk.pdg)
    bg = trk.p / np.maximum(m, 1e-6)
    cos_theta = np.cos(trk.theta)
    cos_bin = np.clip(np.searchsorted(COS_EDGES, cos_theta[ti]) - 1, 0, len(cond.cdc_cos_cor) - 1)
    fluct = np.maximum(1.0 + 0.12 * _moyal(rng, len(gw)), 0.2)
    dedx = bethe_bloch(bg[ti]) * gain * cond.cdc_run_gain * cond.cdc_cos_cor[cos_bin] * fluct
    adc = np.clip(np.rint(120.0 * dedx * path), 1, 4095)
    # hits come out of np.nonzero already grouped by event (tracks are event-ordered),
    # then by track and layer: no sort is needed
    order = slice(None)
    ti_s = ti
    hits: Collection = {
        "evt": evt[order],
        "m_layer": layer[order].astype(np.int8),
        "m_wire": wire[order].astype(np.int16),
        "m_time": quantize(t_meas[order], 12),
        "m_adcCount": adc[order].astype(np.int16),
        "m_trackIndex": trk.index[ti_s].astype(np.int16),
        "m_fitDriftLength": quantize(fit_dist[order], 10),
        "m_leftRight": lr[order].astype(np.int8),
        "m_entranceAngle": quantize(alpha_h[order], 10),
        "m_pathLength": quantize(path[order], 10),
    }
    nhits = np.bincount(ti, minlength=len(trk.p))
    # truncated mean (5-75 %) of uncalibrated adc/path per track
    val = adc / path
    # one float key (track index + a fraction increasing with the value) sorts by track, then
    # value; ti is at most ~1e6, so the fraction keeps ~1e-10 resolution
    o = np.argsort(ti + val / (2.0 * val.max(initial=1.0)))
    tis, vals = ti[o], val[o]
    first = np.searchsorted(tis, tis)
    rank = np.arange(len(tis)) - first
    cnt = nhits[tis]
    use = (rank >= np.floor(0.05 * cnt)) & (rank < np.ceil(0.75 * cnt))
    s = np.bincount(tis[use], weights=vals[use], minlength=len(trk.p))
    k = np.bincount(tis[use], minlength=len(trk.p))
    has = k > 0
    dedx_tracks: Collection = {
        "evt": trk.evt[has],
        "m_trackIndex": trk.index[has].astype(np.int16),
        "m_p": trk.p[has].astype(np.float32),
        "m_cosTheta": cos_theta[has].astype(np.float32),
        "m_charge": trk.charge[has].astype(np.int8),
        "m_nHits": k[has].astype(np.int16),
        "m_dedxAvgTruncated": (s[has] / k[has] / 120.0).astype(np.float32),
    }
    return hits, dedx_tracks, nhits


# --------------------------------------------------------------------------------------- VXD
def _ladder_local(phi: F, r: float, nlad: int) -> tuple[IA, F, float]:
    ladder = np.mod(np.floor(np.mod(phi, 2 * np.pi) / (2 * np.pi) * nlad + 0.5), nlad).astype(
        np.int64
    )
    centre = ladder * 2 * np.pi / nlad
    width = 2 * r * np.tan(np.pi / nlad) * 1.1
    return ladder + 1, r * np.tan(_wrap(phi - centre)), width


#: side_rng key of the SVD's noise (hot strips, the random strips of the 512-strip V sides).
_SVD_NOISE_KEY = 0x53564400


def svd_response(
    rng: np.random.Generator, trk: Tracks, t_coll: F, cond: Conditions, n_events: int
) -> tuple[Collection, IA]:
    """SVDClusters on both sides of the sensors crossed, with hot-strip and random noise."""
    out: list[dict[str, npt.NDArray[Any]]] = []
    nsvd = np.zeros(len(trk.p), dtype=np.int64)
    length = vxd.SVD_SENSOR_LENGTH
    for layer, r in vxd.SVD_RADIUS.items():
        nlad, nsen = vxd.SVD_LADDERS[layer], vxd.SVD_SENSORS[layer]
        reached, phi, z, _, _ = _cross(trk, r)
        ladder, uloc, width = _ladder_local(phi, r, nlad)
        zlo = -0.4 * nsen * length
        sensor = np.floor((z - zlo) / length).astype(np.int64) + 1
        ok = reached & (sensor >= 1) & (sensor <= nsen) & (np.abs(uloc) < width / 2)
        ti = np.flatnonzero(ok)
        vid = vxd.vxd_id(layer, ladder[ti], sensor[ti])
        sidx = vxd.sensor_index(vid, "SVD")
        ustrip = np.floor((uloc[ti] / width + 0.5) * vxd.SVD_STRIPS).astype(np.int64)
        vloc = z[ti] - (zlo + (sensor[ti] - 1) * length)
        nv = vxd.SVD_STRIPS_V[layer]
        vstrip = np.floor(vloc / length * nv).astype(np.int64)
        for side, strip, pos in ((1, ustrip, uloc[ti]), (0, vstrip, vloc - length / 2)):
            nstrips = vxd.SVD_STRIPS if side == 1 else nv
            eff = rng.random(len(ti)) < 0.99
            n = int(eff.sum())
            t_true = t_coll[trk.evt[ti[eff]]] + rng.normal(0, 2.5, n)
            raw = _svd_raw_time(cond.svd_time[sidx[eff], side], t_true)
            size = np.minimum(1 + rng.poisson(0.9, n), 5)
            out.append(
                {
                    "evt": trk.evt[ti[eff]],
                    "m_sensorID": vid[eff].astype(np.int32),
                    "m_isUCluster": np.full(n, side, np.int8),
                    "m_position": quantize(pos[eff], 12),
                    "m_clsCharge": np.rint(
                        20000 * np.maximum(1 + 0.1 * _moyal(rng, n), 0.3)
                    ).astype(np.float32),
                    "m_clsTime": quantize(raw, 12),
                    "m_clsSize": size.astype(np.int8),
                    "m_firstStrip": np.clip(strip[eff] - size // 2, 0, nstrips - 1).astype(
                        np.int16
                    ),
                    "m_trackIndex": trk.index[ti[eff]].astype(np.int16),
                }
            )
            np.add.at(nsvd, ti[eff], 1)
    # hot strips and random noise clusters. A hot strip fires in an event with probability
    # its rate (its occupancy), from the SVD's side stream; the draws of the shared generator
    # that the first version made for them are still made, in the same order and sizes, so that
    # no other branch changes
    old_hot_evt, _ = _bernoulli_hits(rng, cond.svd_hot_rate, n_events)
    nrand = rng.poisson(2.0, n_events)
    rand_evt = np.repeat(np.arange(n_events), nrand)
    nr = len(rand_evt)
    r_sens = rng.integers(0, vxd.N_SVD_SENSORS, nr)
    r_side = rng.integers(0, 2, nr)
    r_strip = rng.integers(0, vxd.SVD_STRIPS, nr)
    n_old = len(old_hot_evt) + nr
    charge = rng.uniform(6000, 12000, n_old)[len(old_hot_evt) :]
    time = rng.uniform(*SVD_RAW_RANGE, n_old)[len(old_hot_evt) :]
    noise = side_rng(rng, _SVD_NOISE_KEY)
    # the V sides of layers 4-6 have 512 strips: their random noise strips are drawn again
    r_n = vxd.SVD_SIDE_STRIPS[2 * r_sens + r_side]
    short = np.flatnonzero(r_n != vxd.SVD_STRIPS)
    r_strip[short] = noise.integers(0, vxd.SVD_STRIPS_V[4], len(short))
    fires = noise.random((len(cond.svd_hot_rate), n_events)) < cond.svd_hot_rate[:, None]
    hot_i, hot_evt = np.nonzero(fires)
    nh = len(hot_evt)
    sens = np.concatenate([cond.svd_hot[hot_i, 0], r_sens])
    nside = np.concatenate([cond.svd_hot[hot_i, 1], r_side])
    strip = np.concatenate([cond.svd_hot[hot_i, 2], r_strip])
    nstrips = vxd.SVD_SIDE_STRIPS[2 * sens + nside]
    n = nh + nr
    out.append(
        {
            "evt": np.concatenate([hot_evt, rand_evt]),
            "m_sensorID": vxd.SVD_IDS[sens].astype(np.int32),
            "m_isUCluster": nside.astype(np.int8),
            "m_position": quantize((strip + 0.5) / nstrips * 4.0 - 2.0, 12),
            "m_clsCharge": np.concatenate(
                [np.rint(noise.uniform(6000, 12000, nh)), np.rint(charge)]
            ).astype(np.float32),
            "m_clsTime": quantize(np.concatenate([noise.uniform(*SVD_RAW_RANGE, nh), time]), 12),
            "m_clsSize": np.ones(n, np.int8),
            "m_firstStrip": strip.astype(np.int16),
            "m_trackIndex": np.full(n, -1, np.int16),
        }
    )
    return _concat_sorted(out), nsvd


def _svd_raw_time(coef: F, t: F) -> F:
    """Invert t = a0 + a1 r + a2 r^2 + a3 r^3 for the raw time r (Newton's method)."""
    a0, a1, a2, a3 = coef.T
    r = (t - a0) / a1
    for _ in range(6):
        f = a0 + r * (a1 + r * (a2 + r * a3)) - t
        d = a1 + r * (2 * a2 + 3 * a3 * r)
        r = r - f / d
    return np.clip(r, *SVD_RAW_RANGE)


def pxd_response(
    rng: np.random.Generator, trk: Tracks, cond: Conditions, n_events: int
) -> tuple[Collection, IA, dict[str, Collection]]:
    """PXDDigits: 1-3 pixel clusters of tracks, gains applied, dead pixels removed, hot pixels;
    the PXDClusters and PXDIntercepts of the tracks (:func:`pxd_track_clusters`).

    A track's charge scales with its path length in the sensor (:func:`_pxd_path`)."""
    out = []
    npxd = np.zeros(len(trk.p), dtype=np.int64)
    dead = np.sort(_pxd_flat(cond.pxd_dead[:, 0], cond.pxd_dead[:, 1], cond.pxd_dead[:, 2]))
    for layer, r in vxd.PXD_RADIUS.items():
        nlad, length = vxd.PXD_LADDERS[layer], vxd.PXD_SENSOR_LENGTH[layer]
        reached, phi, z, _, alpha = _cross(trk, r)
        ladder, uloc, width = _ladder_local(phi, r, nlad)
        zlo = -0.9 * length
        sensor = np.floor((z - zlo) / length).astype(np.int64) + 1
        ok = reached & (sensor >= 1) & (sensor <= 2) & (np.abs(uloc) < width / 2)
        ti = np.flatnonzero(ok)
        sidx = vxd.sensor_index(vxd.vxd_id(layer, ladder[ti], sensor[ti]), "PXD")
        ucell = np.floor((uloc[ti] / width + 0.5) * vxd.PXD_NU).astype(np.int64)
        vcell = np.floor((z[ti] - zlo - (sensor[ti] - 1) * length) / length * vxd.PXD_NV).astype(
            np.int64
        )
        n = len(ti)
        up, vp = _pxd_slopes(trk, ti, phi[ti], alpha[ti], nlad)
        total = 40.0 * np.sqrt(1 + up**2 + vp**2) * np.maximum(1 + 0.15 * _moyal(rng, n), 0.3)
        extra_v = rng.random(n) < 0.5
        extra_u = rng.random(n) < 0.3
        share = np.where(extra_v | extra_u, rng.uniform(0.6, 0.9, n), 1.0)
        for du, dv, mask, frac in (
            (0, 0, np.ones(n, bool), share),
            (0, 1, extra_v, (1 - share) * np.where(extra_u, 0.5, 1.0)),
            (1, 0, extra_u, (1 - share) * np.where(extra_v, 0.5, 1.0)),
        ):
            uu = np.clip(ucell + du, 0, vxd.PXD_NU - 1)[mask]
            vv = np.clip(vcell + dv, 0, vxd.PXD_NV - 1)[mask]
            ss = sidx[mask]
            gain = cond.pxd_gain[
                ss, uu * vxd.PXD_GAIN_BINS_U // vxd.PXD_NU, vv * vxd.PXD_GAIN_BINS_V // vxd.PXD_NV
            ]
            charge = np.clip(np.rint(total[mask] * frac[mask] * gain), 1, 255)
            out.append({"evt": trk.evt[ti[mask]], "sidx": ss, "u": uu, "v": vv, "q": charge})
            out[-1] |= {"trk": ti[mask], "up": up[mask], "vp": vp[mask]}
        np.add.at(npxd, ti, 1)
    hot_evt, hot_i = _bernoulli_hits(rng, cond.pxd_hot_rate, n_events)
    out.append(
        {
            "evt": hot_evt,
            "sidx": cond.pxd_hot[hot_i, 0],
            "u": cond.pxd_hot[hot_i, 1],
            "v": cond.pxd_hot[hot_i, 2],
            "q": rng.integers(5, 60, len(hot_evt)),
        }
        | _no_track(len(hot_evt))
    )
    nr = rng.poisson(2.0, n_events)
    ne = int(nr.sum())
    out.append(
        {
            "evt": np.repeat(np.arange(n_events), nr),
            "sidx": rng.integers(0, vxd.N_PXD_SENSORS, ne),
            "u": rng.integers(0, vxd.PXD_NU, ne),
            "v": rng.integers(0, vxd.PXD_NV, ne),
            "q": rng.integers(3, 30, ne),
        }
        | _no_track(ne)
    )
    d = _concat_sorted(out)
    flat = _pxd_flat(d["sidx"], d["u"], d["v"])
    pos = np.clip(np.searchsorted(dead, flat), 0, max(len(dead) - 1, 0))
    alive = dead[pos] != flat if len(dead) else np.ones(len(flat), bool)
    digits: Collection = {
        "evt": d["evt"][alive],
        "m_sensorID": vxd.PXD_IDS[d["sidx"][alive]].astype(np.uint16),
        "m_uCellID": d["u"][alive].astype(np.int16),
        "m_vCellID": d["v"][alive].astype(np.int16),
        "m_charge": d["q"][alive].astype(np.int16),
    }
    return digits, npxd, pxd_track_clusters(trk, d, alive)


def _pxd_slopes(trk: Tracks, ti: IA, phi: F, alpha: F, nlad: int) -> tuple[F, F]:
    """The direction of tracks ``ti`` crossing a PXD ladder at azimuth ``phi`` with entrance
    angle ``alpha`` (to the radial direction) in the sensor's frame: ``u' = du/dw`` and
    ``v' = dv/dw`` (w along the ladder's normal), as a PXDIntercept holds them. The path
    length in the sensor is ``thickness * sqrt(1 + u'^2 + v'^2)``. Deterministic: no draws."""
    ladder, _, _ = _ladder_local(phi, 1.0, nlad)
    beta = _wrap(alpha + _wrap(phi - (ladder - 1) * 2 * np.pi / nlad))
    cos_b = np.maximum(np.abs(np.cos(beta)), 1e-3)
    return np.tan(beta), trk.tanl[ti] / cos_b


def _no_track(n: int) -> dict[str, npt.NDArray[Any]]:
    """The track columns of PXD digits that belong to no track (hot pixels, noise)."""
    nan = np.full(n, np.nan)
    return {"trk": np.full(n, -1, np.int64), "up": nan, "vp": nan}


def pxd_track_clusters(
    trk: Tracks, d: dict[str, npt.NDArray[Any]], alive: IA
) -> dict[str, Collection]:
    """PXDClusters and PXDIntercepts of the tracks, deterministic from their digits.

    A cluster is the alive digits of one track on one sensor (charge their sum, seed the
    pixel of most charge, size their number); an intercept is every crossing of a sensor by a
    track, with its direction in the sensor's frame ``u' = du/dw``, ``v' = dv/dw``. Both
    carry the track's index in its event (``m_trackIndex``), as basf2 relates them to their
    RecoTrack. Digits of hot pixels and noise are not clustered.
    """
    own = d["trk"] >= 0
    key = d["trk"] * vxd.N_PXD_SENSORS + d["sidx"]
    _, first = np.unique(key[own], return_index=True)
    rows = np.flatnonzero(own)[first]
    crossing = np.argsort(d["evt"][rows], kind="stable")
    rows = rows[crossing]
    intercepts: Collection = {
        "evt": d["evt"][rows],
        "m_sensorID": vxd.PXD_IDS[d["sidx"][rows]].astype(np.uint16),
        "m_coorUprime": quantize(d["up"][rows], 12),
        "m_coorVprime": quantize(d["vp"][rows], 12),
        "m_trackIndex": trk.index[d["trk"][rows]].astype(np.int16),
    }
    sel = np.flatnonzero(own & alive)
    # seed first within each cluster: by key, then by decreasing charge
    sel = sel[np.lexsort((-d["q"][sel], key[sel]))]
    ukey, start, inverse = np.unique(key[sel], return_index=True, return_inverse=True)
    charge = np.bincount(inverse, weights=d["q"][sel], minlength=len(ukey))
    size = np.bincount(inverse, minlength=len(ukey))
    seed = sel[start]
    order = np.argsort(d["evt"][seed], kind="stable")
    seed, charge, size = seed[order], charge[order], size[order]
    clusters: Collection = {
        "evt": d["evt"][seed],
        "m_sensorID": vxd.PXD_IDS[d["sidx"][seed]].astype(np.uint16),
        "m_uCellID": d["u"][seed].astype(np.int16),
        "m_vCellID": d["v"][seed].astype(np.int16),
        "m_charge": charge.astype(np.int16),
        "m_size": size.astype(np.int8),
        "m_trackIndex": trk.index[d["trk"][seed]].astype(np.int16),
    }
    return {"PXDClusters": clusters, "PXDIntercepts": intercepts}


#: side_rng key of the PXD beam background (:func:`pxd_background`).
PXD_BACKGROUND_KEY = 0x50584D01
#: Background occupancy of each PXD layer relative to the mean (inner layer 1.5 x outer).
_PXD_LAYER_WEIGHT = {1: 1.5, 2: 1.0}


def pxd_sensor_occupancy(occupancy: float) -> F:
    """Background occupancy (fired fraction of the pixels per event) of each PXD sensor for a
    mean ``occupancy``: the inner layer 1.5 times the outer, the same within a sensor."""
    w = np.array([_PXD_LAYER_WEIGHT[int(layer)] for layer in vxd.PXD_SENSOR_TABLE[:, 0]])
    return np.asarray(occupancy * w / w.mean())


def _pxd_background_units() -> IA:
    """Sensor of each of the equal "units" a background hit is drawn over: 3 units per inner
    sensor, 2 per outer one (the 1.5 : 1 of :data:`_PXD_LAYER_WEIGHT`)."""
    units = np.array([_PXD_LAYER_WEIGHT[int(layer)] * 2 for layer in vxd.PXD_SENSOR_TABLE[:, 0]])
    return np.repeat(np.arange(vxd.N_PXD_SENSORS), units.astype(np.int64))


def pxd_background(
    rng: np.random.Generator,
    digits: Collection,
    cond: Conditions,
    n_events: int,
    occupancy: float,
) -> Collection:
    """``digits`` (sorted by event) with the PXD beam background added: per event a Poisson
    number of hits, mean ``occupancy`` x 7.68 M pixels, spread over the sensors as
    :func:`pxd_sensor_occupancy` says and uniformly within each, charge 3-29 ADU; hits on
    dead pixels are removed. ``rng`` is the side stream :data:`PXD_BACKGROUND_KEY` (a pixel
    may fire twice in an event, with a chance ~ n^2 / 2N per event for n hits: negligible).
    """
    if occupancy <= 0 or n_events == 0:
        return digits
    counts = rng.poisson(occupancy * vxd.N_PXD_PIXELS, n_events)
    n = int(counts.sum())
    units = _pxd_background_units()
    sidx = units[rng.integers(0, len(units), n, dtype=np.int16)]
    u = rng.integers(0, vxd.PXD_NU, n, dtype=np.int16)
    v = rng.integers(0, vxd.PXD_NV, n, dtype=np.int16)
    q = rng.integers(3, 30, n, dtype=np.int16)
    dead = np.zeros(vxd.N_PXD_PIXELS, dtype=bool)
    dead[_pxd_flat(cond.pxd_dead[:, 0], cond.pxd_dead[:, 1], cond.pxd_dead[:, 2])] = True
    alive = ~dead[_pxd_flat(sidx, u, v)]
    evt = np.repeat(np.arange(n_events, dtype=np.int64), counts)[alive]
    extra: Collection = {
        "evt": evt,
        "m_sensorID": vxd.PXD_IDS[sidx[alive]].astype(np.uint16),
        "m_uCellID": u[alive],
        "m_vCellID": v[alive],
        "m_charge": q[alive],
    }
    # both are sorted by event: a stable sort of the two runs keeps the track hits first
    order = np.argsort(np.concatenate([digits["evt"], evt]), kind="stable")
    return {k: np.concatenate([digits[k], extra[k].astype(digits[k].dtype)])[order] for k in digits}


def _pxd_flat(s: npt.ArrayLike, u: npt.ArrayLike, v: npt.ArrayLike) -> IA:
    return (
        np.asarray(s, np.int64) * vxd.PXD_NU + np.asarray(u, np.int64)
    ) * vxd.PXD_NV + np.asarray(v, np.int64)


def _bernoulli_hits(rng: np.random.Generator, rate: F, n_events: int) -> tuple[IA, IA]:
    """(event, channel) pairs where noisy channels with per-event probability ``rate`` fire."""
    if len(rate) == 0 or n_events == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nz = np.flatnonzero(rate > 0)
    counts = rng.binomial(n_events, rate[nz])
    ch = np.repeat(nz, counts)
    evt = rng.integers(0, n_events, len(ch))
    # a channel fires at most once per event
    key = np.unique(evt * (len(rate) + 1) + ch)
    return key // (len(rate) + 1), key % (len(rate) + 1)


def _concat_sorted(
    parts: list[dict[str, npt.NDArray[Any]]],
) -> dict[str, npt.NDArray[Any]]:
    keys = parts[0].keys()
    out = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    order = np.argsort(out["evt"], kind="stable")
    return {k: v[order] for k, v in out.items()}


# --------------------------------------------------------------------------------------- TOP
def top_response(
    rng: np.random.Generator, trk: Tracks, t_coll: F, cond: Conditions, n_events: int
) -> tuple[Collection, Collection, Collection]:
    """TOPDigits, TOP ExtHits and the TOPRecBunch (bunch finder with nominal constants)."""
    reached, phi, z, arc, _ = _cross(trk, top.RADIUS_CM)
    ok = reached & (z > top.Z_MIN_CM) & (z < top.Z_MAX_CM)
    ti = np.flatnonzero(ok)
    module = top.module_of_phi(phi[ti])
    path3d = arc[ti] * np.sqrt(1 + trk.tanl[ti] ** 2)
    tof = path3d / (C_CM_PER_NS * trk.beta[ti]) * np.where(trk.backward[ti], -1, 1)
    ext: Collection = {
        "evt": trk.evt[ti],
        "m_detectorID": np.full(len(ti), DETECTOR_ID["TOP"], np.int8),
        "m_copyID": module.astype(np.int32),
        "m_trackIndex": trk.index[ti].astype(np.int16),
        "m_posX": (top.RADIUS_CM * np.cos(phi[ti])).astype(np.float32),
        "m_posY": (top.RADIUS_CM * np.sin(phi[ti])).astype(np.float32),
        "m_posZ": z[ti].astype(np.float32),
        "m_tof": tof.astype(np.float32),
    }
    npe = rng.poisson(22.0 * (1 + 0.6 * np.abs(np.cos(trk.theta[ti]))))
    ph_trk = np.repeat(np.arange(len(ti)), npe)
    n = len(ph_trk)
    pixel = rng.integers(1, top.N_PIXELS + 1, n)
    mod = module[ph_trk]
    ch = top.channel_index(mod, pixel)
    zl = z[ti][ph_trk]
    t_exp = t_coll[trk.evt[ti][ph_trk]] + tof[ph_trk] + top.expected_propagation_time(pixel, zl)
    second = rng.random(n) < 0.2
    tts = np.where(second, rng.normal(0.35, 0.10, n), rng.normal(0.0, 0.08, n))
    chrom = rng.normal(0, 1, n) * 0.0008 * top.path_factor(pixel) * (zl - top.Z_MIN_CM)
    offsets = cond.top_channel_t0[ch] + cond.top_module_t0[mod - 1] + cond.top_common_t0
    t = t_exp + offsets + tts + chrom
    alive = cond.top_status[ch] != 1
    # bunch finder: per-track median of (t - expected), then mean over tracks in the event
    resid = (t - t_exp + t_coll[trk.evt[ti][ph_trk]])[alive]
    trk_of = ph_trk[alive]
    o = np.lexsort((resid, trk_of))
    trk_s, res_s = trk_of[o], resid[o]
    cnt = np.bincount(trk_s, minlength=len(ti))
    first = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    has = cnt > 0
    med = np.zeros(len(ti))
    med[has] = res_s[first[has] + cnt[has] // 2]
    tevt = trk.evt[ti][has]
    nt = np.bincount(tevt, minlength=n_events)
    rec = np.bincount(tevt, weights=med[has], minlength=n_events) / np.maximum(nt, 1)
    bucket = np.rint(rec / top.RF_PERIOD_NS)
    bunch: Collection = {
        "m_isReconstructed": (nt > 0).astype(np.int8),
        "m_recTime": np.where(nt > 0, rec, 0.0).astype(np.float32),
        "m_bucketNumber": np.where(nt > 0, bucket, 0).astype(np.int16),
        "m_currentOffset": np.where(nt > 0, rec - bucket * top.RF_PERIOD_NS, 0.0).astype(
            np.float32
        ),
    }
    # noise: noisy channels and random background
    hot_evt, hot_ch = _bernoulli_hits(rng, cond.top_hot_rate, n_events)
    nb = rng.poisson(3.0, n_events)
    bkg_evt = np.repeat(np.arange(n_events), nb)
    bkg_ch = rng.integers(0, top.N_CHANNELS, len(bkg_evt))
    nz = len(hot_evt) + len(bkg_evt)
    noise_ch = np.concatenate([hot_ch, bkg_ch])
    noise_ok = cond.top_status[noise_ch] != 1
    d = _concat_sorted(
        [
            {"evt": trk.evt[ti][ph_trk][alive], "ch": ch[alive], "t": t[alive]},
            {
                "evt": np.concatenate([hot_evt, bkg_evt])[noise_ok],
                "ch": noise_ch[noise_ok],
                "t": rng.uniform(-30.0, 70.0, nz)[noise_ok],
            },
        ]
    )
    digits: Collection = {
        "evt": d["evt"],
        "m_moduleID": (d["ch"] // top.N_PIXELS + 1).astype(np.int8),
        "m_pixelID": (d["ch"] % top.N_PIXELS + 1).astype(np.int16),
        "m_time": quantize(d["t"], 14),
        "m_pulseHeight": np.clip(np.rint(rng.normal(300, 80, len(d["evt"]))), 40, 2000).astype(
            np.int16
        ),
    }
    return digits, ext, bunch


# ------------------------------------------------------------------------------------- ARICH
#: The side random stream of the ARICH response (:func:`side_rng`): the photons' time windows.
ARICH_SIDE_KEY = 0x41524900


def arich_response(
    rng: np.random.Generator, trk: Tracks, cond: Conditions, n_events: int
) -> tuple[Collection, Collection]:
    """ARICHDigits (Cherenkov rings of forward tracks, noise) and ARICH ExtHits.

    The hit bitmap (``m_bitmap``) holds the discriminator output sampled in four consecutive
    time windows around the trigger (bit ``i``: window ``i``). Cherenkov photons are in time:
    one bit of the two signal windows (1 or 2); noise and beam-background hits fall in any of
    the four with equal probability. A channel with a photon and a noise hit in the same event
    has both bits set (one, when they share a window). The signal window of each photon comes
    from the side stream :data:`ARICH_SIDE_KEY`.
    """
    fwd = (trk.tanl > 0) & np.isfinite(trk.tanl)
    arc = np.where(
        fwd, (arich.Z_DETECTOR_CM - trk.vertex[:, 2]) / np.where(fwd, trk.tanl, 1.0), np.inf
    )
    ratio = arc / (2 * trk.radius)
    ok = fwd & (ratio < 1.0)
    r = np.where(ok, 2 * trk.radius * np.sin(np.minimum(ratio, 1.0)), np.inf)
    r = np.where(np.isfinite(trk.radius), r, arc)
    phi = trk.phi0 - trk.charge * np.where(np.isfinite(trk.radius), ratio, 0.0)
    module = arich.module_at(r, phi)
    ti = np.flatnonzero(ok & (module > 0))
    ext: Collection = {
        "evt": trk.evt[ti],
        "m_detectorID": np.full(len(ti), DETECTOR_ID["ARICH"], np.int8),
        "m_copyID": module[ti].astype(np.int32),
        "m_trackIndex": trk.index[ti].astype(np.int16),
        "m_posX": (r[ti] * np.cos(phi[ti])).astype(np.float32),
        "m_posY": (r[ti] * np.sin(phi[ti])).astype(np.float32),
        "m_posZ": np.full(len(ti), arich.Z_DETECTOR_CM, np.float32),
        "m_tof": (np.hypot(arc[ti], arich.Z_DETECTOR_CM) / C_CM_PER_NS).astype(np.float32),
    }
    npe = rng.poisson(11.0, len(ti))
    pt_ = np.repeat(ti, npe)
    psi = rng.uniform(0, 2 * np.pi, len(pt_))
    x = r[pt_] * np.cos(phi[pt_]) + 6.0 * np.cos(psi)
    y = r[pt_] * np.sin(phi[pt_]) + 6.0 * np.sin(psi)
    mods = arich.module_at(np.hypot(x, y), np.arctan2(y, x))
    hot_evt, hot_ch = _bernoulli_hits(rng, cond.arich_hot_rate, n_events)
    nb = rng.poisson(3.0, n_events)
    bkg_evt = np.repeat(np.arange(n_events), nb)
    sig = mods > 0
    ch = np.concatenate(
        [
            arich.channel_index(mods[sig], rng.integers(0, 144, int(sig.sum()))),
            hot_ch,
            rng.integers(0, arich.N_CHANNELS, len(bkg_evt)),
        ]
    )
    evt = np.concatenate([trk.evt[pt_][sig], hot_evt, bkg_evt])
    every = evt * arich.N_CHANNELS + ch
    n_sig = int(sig.sum())
    # one digit per channel and event (sorting, as return_inverse does, beats hashing here)
    key, inverse = np.unique(every, return_inverse=True)
    # what fired each digit: a photon (the first n_sig entries), noise (the rest), or both
    has_signal = np.bincount(inverse[:n_sig], minlength=len(key)) > 0
    has_noise = np.bincount(inverse[n_sig:], minlength=len(key)) > 0
    evt, ch = key // arich.N_CHANNELS, key % arich.N_CHANNELS
    alive = cond.arich_status[ch] != 1
    evt, ch = evt[alive], ch[alive]
    has_signal, has_noise = has_signal[alive], has_noise[alive]
    noise_bit = 1 << rng.integers(0, 4, len(ch))
    signal_bit = 1 << (1 + side_rng(rng, ARICH_SIDE_KEY).integers(0, 2, len(ch)))
    bitmap = np.where(has_noise, noise_bit, 0) | np.where(has_signal, signal_bit, 0)
    digits: Collection = {
        "evt": evt,
        "m_modID": (ch // 144 + 1).astype(np.int16),
        "m_channelID": (ch % 144).astype(np.int16),
        "m_bitmap": bitmap.astype(np.uint8),
    }
    return digits, ext


# --------------------------------------------------------------------------------------- ECL
def _ecl_impacts(trk: Tracks, parts: Particles) -> tuple[IA, F, F]:
    """Polar and azimuthal impact of every particle on the ECL front face (nan = none)."""
    n = len(parts.pdg)
    theta = np.full(n, np.nan)
    phi = np.full(n, np.nan)
    px, py, pz, _ = parts.p4.T
    neutral = parts.charge == 0
    theta[neutral] = np.arctan2(np.hypot(px, py), pz)[neutral]
    phi[neutral] = np.arctan2(py, px)[neutral]
    reached, ph, z, _, _ = _cross(trk, ecl.BARREL_RADIUS_CM)
    barrel = reached & (z > ecl.BACKWARD_Z_CM) & (z < ecl.FORWARD_Z_CM)
    th_b = np.arctan2(ecl.BARREL_RADIUS_CM, z)
    # endcaps: where the barrel cylinder is not hit inside the calorimeter length
    zplane = np.where(trk.tanl > 0, ecl.FORWARD_Z_CM, ecl.BACKWARD_Z_CM)
    arc = (zplane - trk.vertex[:, 2]) / trk.tanl
    ratio = arc / (2 * trk.radius)
    rp = np.where(np.isfinite(trk.radius), 2 * trk.radius * np.sin(np.minimum(ratio, 1.0)), arc)
    endcap = ~barrel & (ratio < 1.0) & (arc > 0)
    ph_e = trk.phi0 - trk.charge * np.where(np.isfinite(trk.radius), ratio, 0.0)
    th_e = np.arctan2(rp, zplane)
    idx = trk.particle
    theta[idx] = np.where(barrel, th_b, np.where(endcap, th_e, np.nan))
    phi[idx] = np.where(barrel, ph, np.where(endcap, ph_e, np.nan))
    return np.flatnonzero(np.isfinite(theta)), theta, phi


def ecl_response(
    rng: np.random.Generator,
    trk: Tracks,
    parts: Particles,
    t_coll: F,
    cond: Conditions,
    n_events: int,
) -> tuple[Collection, Collection]:
    """ECLCalDigits (merged per crystal, threshold 1 MeV) and ECLClusters."""
    pi, theta, phi = _ecl_impacts(trk, parts)
    ring = ecl.find_ring(theta[pi])
    pi, ring = pi[ring >= 0], ring[ring >= 0]
    th, ph = theta[pi], np.mod(phi[pi], 2 * np.pi)
    nphi = ecl.RING_NPHI[ring]
    uphi = ph / (2 * np.pi) * nphi
    iphi = np.floor(uphi).astype(np.int64)
    fphi = uphi - iphi
    fth = (th - ecl.RING_THETA_LO[ring]) / (ecl.RING_THETA_HI[ring] - ecl.RING_THETA_LO[ring])
    pdg = np.abs(parts.pdg[pi])
    e = parts.p4[pi, 3]
    m = masses(pdg)
    n = len(pi)
    em = (pdg == 11) | (pdg == 22)
    hadron = np.isin(pdg, (211, 321, 2212))
    showering = hadron & (rng.random(n) < 0.3)
    mip = ~em & ~showering
    contain = 0.955 * (1 - rng.exponential(0.012, n)) * rng.normal(1.0, 0.012, n)
    edep = np.where(em, e * contain, 0.0)
    ekin = e - m
    edep = np.where(showering, ekin * rng.uniform(0.2, 0.8, n), edep)
    mip_e = np.minimum(0.19 * np.maximum(1 + 0.08 * _moyal(rng, n), 0.4), ekin)
    edep = np.where(mip, mip_e, edep)
    lam = np.where(em, 0.40, np.where(showering, 0.6, 0.15))
    # 5x5 window around the impact crystal
    offs = np.arange(-2, 3)
    dr2d, dj2d = np.meshgrid(offs, offs, indexing="ij")
    dr, dj = dr2d.ravel(), dj2d.ravel()
    r2 = ring[:, None] + dr[None, :]
    valid = (r2 >= 0) & (r2 < ecl.N_RINGS)
    r2c = np.clip(r2, 0, ecl.N_RINGS - 1)
    phi_frac = (iphi + fphi)[:, None] / nphi[:, None]
    u2 = phi_frac * ecl.RING_NPHI[r2c]
    j2c = np.floor(u2).astype(np.int64)
    f2 = u2 - j2c
    xr = dr[None, :] - (fth[:, None] - 0.5)
    xj = dj[None, :] - (f2 - 0.5)
    w = np.exp(-np.abs(xr) / lam[:, None]) * np.exp(-np.abs(xj) / lam[:, None]) * valid
    w /= w.sum(axis=1, keepdims=True)
    cell = ecl.cell_id(r2c, j2c + dj[None, :])
    e_true = edep[:, None] * w
    const = cond.ecl_energy_const[cell - 1]
    e_raw = e_true / const + rng.normal(0.0, 3e-4, e_true.shape)
    evt = parts.evt[pi]
    centre = cell[:, 12]
    # clusters (one per particle), energy from its own crystals with nominal calibration
    cl_e = np.where(valid, e_raw, 0.0).sum(axis=1)
    track_of = np.full(len(parts.pdg), -1, np.int64)
    track_of[trk.particle] = trk.index
    cl_keep = cl_e > 0.02
    tof_c = ecl.flight_distance(centre) / C_CM_PER_NS
    t_cl = (
        t_coll[evt]
        + tof_c
        + cond.ecl_crystal_t0[centre - 1]
        + cond.ecl_crate_t0[ecl.crate_of(centre) - 1]
        + rng.normal(0, 0.5, n)
    )
    clusters: Collection = {
        "evt": evt[cl_keep],
        "m_energy": cl_e[cl_keep].astype(np.float32),
        "m_theta": th[cl_keep].astype(np.float32),
        "m_phi": _wrap(ph[cl_keep]).astype(np.float32),
        "m_time": t_cl[cl_keep].astype(np.float32),
        "m_maxCellId": centre[cl_keep].astype(np.int16),
        "m_isTrack": (track_of[pi][cl_keep] >= 0).astype(np.int8),
        "m_trackIndex": track_of[pi][cl_keep].astype(np.int16),
    }
    # digits: merge the same crystal hit by several particles, add beam background
    sel = valid & (e_raw > 0)
    d_evt = np.broadcast_to(evt[:, None], cell.shape)[sel]
    d_cell, d_e = cell[sel], e_raw[sel]
    nb = rng.poisson(12.0, n_events)
    b_evt = np.repeat(np.arange(n_events), nb)
    b_cell = rng.integers(1, ecl.N_CRYSTALS + 1, len(b_evt))
    b_e = 1e-3 + rng.exponential(4e-3, len(b_evt))
    key = np.concatenate(
        [d_evt * (ecl.N_CRYSTALS + 1) + d_cell, b_evt * (ecl.N_CRYSTALS + 1) + b_cell]
    )
    en = np.concatenate([d_e, b_e])
    is_bkg = np.concatenate([np.zeros(len(d_e), bool), np.ones(len(b_e), bool)])
    # by crystal-and-event key, largest deposit first (key < 2^31: exact in float64)
    order = np.argsort(key + 0.5 * (1.0 - en / (en.max(initial=0.0) + 1.0)))
    key, en, is_bkg = key[order], en[order], is_bkg[order]
    ukey, first = np.unique(key, return_index=True)
    esum = np.add.reduceat(en, first) if len(en) else np.zeros(0)
    u_evt, u_cell = ukey // (ecl.N_CRYSTALS + 1), ukey % (ecl.N_CRYSTALS + 1)
    sigma_t = np.hypot(0.25 / np.maximum(esum, 1e-4), 0.8)
    t_sig = (
        t_coll[u_evt]
        + ecl.flight_distance(u_cell) / C_CM_PER_NS
        + cond.ecl_crystal_t0[u_cell - 1]
        + cond.ecl_crate_t0[ecl.crate_of(u_cell) - 1]
        + rng.standard_normal(len(ukey)) * sigma_t
    )
    # a crystal whose largest deposit is beam background gets an out-of-time background time
    t = np.where(is_bkg[first], rng.uniform(-200.0, 200.0, len(ukey)), t_sig)
    keep = esum > 1e-3
    digits: Collection = {
        "evt": u_evt[keep],
        "m_CellId": u_cell[keep].astype(np.int16),
        "m_Energy": quantize(esum[keep], 12),
        "m_Time": quantize(t[keep], 12),
        "m_TimeResolution": quantize(sigma_t[keep], 6),
    }
    return digits, clusters


# --------------------------------------------------------------------------------------- KLM
def klm_response(
    rng: np.random.Generator, trk: Tracks, t_coll: F, cond: Conditions, n_events: int
) -> tuple[Collection, Collection]:
    """KLMDigits and the expected strip crossings (KLM ExtHits) of penetrating tracks.

    A crossed strip fires with its efficiency; its time is ``collision time + flight time +
    propagation distance to the readout end (``klm.propagation_distance``) x the delay of its
    type (``KLM_PROPAGATION_DELAY``) + cable delay + resolution`` (1 ns scintillators, 1.5 ns
    RPCs). The ExtHits carry the crossing point and the flight time.
    """
    pdg = np.abs(trk.pdg)
    punch = np.isin(pdg, (211, 321)) & (trk.p > 1.0) & (rng.random(len(pdg)) < 0.1)
    mu_like = ((pdg == 13) | punch) & (trk.p > 0.6)
    nlayers = np.clip(((trk.p - 0.6) / 0.1).astype(np.int64), 0, 15)
    rows = []
    radii = klm.BKLM_R0 + klm.BKLM_DR * np.arange(klm.BKLM_LAYERS)
    reached, phi, z, arc, _ = _cross(trk, radii)
    layer_idx = np.arange(1, klm.BKLM_LAYERS + 1)[None, :]
    barrel = (
        mu_like[:, None]
        & reached
        & (z > klm.BKLM_ZMIN)
        & (z < klm.BKLM_ZMAX)
        & (layer_idx <= nlayers[:, None])
    )
    ti, li = np.nonzero(barrel)
    if len(ti):
        r = radii[li]
        ph, zz = phi[ti, li], z[ti, li]
        sector = np.mod(np.floor(np.mod(ph, 2 * np.pi) / (np.pi / 4) + 0.5), 8).astype(np.int64) + 1
        centre = (sector - 1) * np.pi / 4
        xloc = r * np.tan(_wrap(ph - centre))
        width = 2 * r * np.tan(np.pi / 8)
        section = (zz >= klm.BKLM_ZSPLIT).astype(np.int64)
        zlo = np.where(section == 1, klm.BKLM_ZSPLIT, klm.BKLM_ZMIN)
        zlen = np.where(
            section == 1, klm.BKLM_ZMAX - klm.BKLM_ZSPLIT, klm.BKLM_ZSPLIT - klm.BKLM_ZMIN
        )
        layer = li + 1
        for pl in (0, 1):
            nstr = np.where(layer <= 2, 54 if pl == 0 else 42, 48)
            if pl == 0:
                strip = np.floor((zz - zlo) / zlen * nstr).astype(np.int64) + 1
                dist = xloc + width / 2
            else:
                strip = np.floor((xloc / width + 0.5) * nstr).astype(np.int64) + 1
                dist = np.where(section == 1, zz - zlo, zlo + zlen - zz)
            strip = np.clip(strip, 1, nstr)
            rows.append(
                (
                    ti,
                    np.full(len(ti), klm.BKLM),
                    section,
                    sector,
                    layer,
                    np.full(len(ti), pl),
                    strip,
                    r * np.cos(ph),
                    r * np.sin(ph),
                    zz,
                    arc[ti, li] * np.sqrt(1 + trk.tanl[ti] ** 2),
                    dist,
                    layer <= 2,
                )
            )
    # endcaps: tracks leave the solenoid at r ~ 160 cm and go straight through the iron
    _, phi_out, _, _, _ = _cross(trk, 160.0)
    for ec_section, z0, nl in (
        (2, klm.EKLM_Z0[2], klm.EKLM_LAYERS[2]),
        (1, -klm.EKLM_Z0[1], klm.EKLM_LAYERS[1]),
    ):
        zl = np.sign(z0) * (abs(z0) + klm.EKLM_DZ * np.arange(nl))
        with np.errstate(divide="ignore", invalid="ignore"):
            rr = (zl[None, :] - trk.vertex[:, 2:3]) / trk.tanl[:, None]
        lidx = np.arange(1, nl + 1)[None, :]
        ok = (
            mu_like[:, None]
            & (rr > klm.EKLM_RMIN)
            & (rr < klm.EKLM_RMAX)
            & (lidx <= nlayers[:, None])
            & np.isfinite(rr)
        )
        ti, li = np.nonzero(ok)
        if not len(ti):
            continue
        r = rr[ti, li]
        ph = np.mod(phi_out[ti], 2 * np.pi)
        x, y = r * np.cos(ph), r * np.sin(ph)
        sector = np.floor(ph / (np.pi / 2)).astype(np.int64) % 4 + 1
        for pl in (1, 2):
            coord = y if pl == 1 else x
            other = x if pl == 1 else y
            strip = np.clip(
                np.floor((coord + klm.EKLM_RMAX) / (2 * klm.EKLM_RMAX) * 75).astype(np.int64) + 1,
                1,
                75,
            )
            rows.append(
                (
                    ti,
                    np.full(len(ti), klm.EKLM),
                    np.full(len(ti), ec_section),
                    sector,
                    li + 1,
                    np.full(len(ti), pl),
                    strip,
                    x,
                    y,
                    np.full(len(ti), zl[0]) + klm.EKLM_DZ * li,
                    np.hypot(r, zl[li]),
                    np.abs(other) + klm.EKLM_RMAX / 2,
                    np.ones(len(ti), bool),
                )
            )
    empty_c: Collection = {k: np.zeros(0, np.int8) for k in ("evt",)}
    if not rows:
        return _klm_digits_noise(rng, cond, n_events, empty_c), _empty_ext()
    cols = [np.concatenate([row[k] for row in rows]) for k in range(13)]
    ti, sub, sec, sector, layer, plane, strip, x, y, zz, path, dist, scint = cols
    ch = klm.channel(sub, sec, sector, layer, plane, strip)
    evt = trk.evt[ti]
    tof = path / (C_CM_PER_NS * trk.beta[ti]) * np.where(trk.backward[ti], -1, 1)
    ext: Collection = {
        "evt": evt,
        "m_detectorID": np.full(len(evt), DETECTOR_ID["KLM"], np.int8),
        "m_copyID": ch.astype(np.int32),
        "m_trackIndex": trk.index[ti].astype(np.int16),
        "m_posX": x.astype(np.float32),
        "m_posY": y.astype(np.float32),
        "m_posZ": zz.astype(np.float32),
        "m_tof": tof.astype(np.float32),
    }
    fired = rng.random(len(ch)) < cond.klm_efficiency[ch - 1]
    res = np.where(scint, 1.0, 1.5)
    t = (
        t_coll[evt]
        + tof
        + dist * KLM_PROPAGATION_DELAY[klm.strip_type(ch) - 1]
        + cond.klm_delay[ch - 1]
        + rng.standard_normal(len(ch)) * res
    )
    sig: Collection = {
        "evt": evt[fired],
        "sub": sub[fired],
        "sec": sec[fired],
        "sector": sector[fired],
        "layer": layer[fired],
        "plane": plane[fired],
        "strip": strip[fired],
        "t": t[fired],
        "npe": np.where(scint[fired], rng.normal(20, 5, int(fired.sum())), 0.0),
    }
    return _klm_digits_noise(rng, cond, n_events, sig), _concat_sorted([ext])


def _klm_digits_noise(
    rng: np.random.Generator, cond: Conditions, n_events: int, sig: Collection
) -> Collection:
    nb = rng.poisson(2.0, n_events)
    b_evt = np.repeat(np.arange(n_events), nb)
    addr = klm.decode(rng.integers(1, klm.N_CHANNELS + 1, len(b_evt)))
    parts = [
        {
            "evt": b_evt,
            "sub": addr["subdetector"],
            "sec": addr["section"],
            "sector": addr["sector"],
            "layer": addr["layer"],
            "plane": addr["plane"],
            "strip": addr["strip"],
            "t": rng.uniform(-100.0, 100.0, len(b_evt)),
            "npe": rng.uniform(0, 10, len(b_evt)),
        }
    ]
    if len(sig) > 1:
        parts.insert(0, sig)
    d = _concat_sorted(parts)
    return {
        "evt": d["evt"],
        "m_subdetector": d["sub"].astype(np.int8),
        "m_section": d["sec"].astype(np.int8),
        "m_sector": d["sector"].astype(np.int8),
        "m_layer": d["layer"].astype(np.int8),
        "m_plane": d["plane"].astype(np.int8),
        "m_strip": d["strip"].astype(np.int16),
        "m_time": quantize(d["t"], 12),
        "m_nPhotoelectrons": quantize(d["npe"], 6),
    }


def _empty_ext() -> Collection:
    return {
        "evt": np.zeros(0, np.int64),
        "m_detectorID": np.zeros(0, np.int8),
        "m_copyID": np.zeros(0, np.int32),
        "m_trackIndex": np.zeros(0, np.int16),
        **{k: np.zeros(0, np.float32) for k in ("m_posX", "m_posY", "m_posZ", "m_tof")},
    }


# ------------------------------------------------------------------------------------ driver
# magnet-off runs have infinite curvature radii: their inf * 0 terms are resolved by np.where
@np.errstate(invalid="ignore", divide="ignore")
def simulate_response(
    rng: np.random.Generator,
    parts: Particles,
    n_events: int,
    t_coll: F,
    cond: Conditions,
    magnet_on: bool,
    detectors: tuple[str, ...],
    *,
    pxd_occupancy: float = 0.0,
) -> Response:
    """Run every requested detector on the particles of ``n_events`` events (with a PXD beam
    background of mean occupancy ``pxd_occupancy``: :func:`pxd_background`)."""
    resp = Response()
    trk, fit = reconstruct_tracks(rng, parts, 1.5 if magnet_on else 0.0)
    nevt_trk = np.bincount(trk.evt, minlength=n_events)
    has_t0 = nevt_trk > 0
    resp.event["EventT0_m_eventT0"] = np.where(
        has_t0, t_coll + rng.normal(0.0, 0.8, n_events), 0.0
    ).astype(np.float32)
    resp.event["EventT0_m_eventT0Uncertainty"] = np.full(n_events, 0.8, np.float32)
    resp.event["EventT0_m_hasEventT0"] = has_t0.astype(np.int8)
    ncdc = np.zeros(len(trk.p), np.int64)
    nsvd = np.zeros(len(trk.p), np.int64)
    npxd = np.zeros(len(trk.p), np.int64)
    ext_parts = []
    if "CDC" in detectors:
        hits, dedx, ncdc = cdc_response(rng, trk, t_coll, cond)
        resp.collections["CDCHits"] = hits
        resp.collections["CDCDedxTracks"] = dedx
    if "SVD" in detectors:
        resp.collections["SVDClusters"], nsvd = svd_response(rng, trk, t_coll, cond, n_events)
    if "PXD" in detectors:
        resp.collections["PXDDigits"], npxd, pxd_tracks = pxd_response(rng, trk, cond, n_events)
        resp.collections.update(pxd_tracks)
        if pxd_occupancy > 0:
            resp.collections["PXDDigits"] = pxd_background(
                side_rng(rng, PXD_BACKGROUND_KEY),
                resp.collections["PXDDigits"],
                cond,
                n_events,
                pxd_occupancy,
            )
    fit["m_nCDCHits"] = ncdc.astype(np.int16)
    fit["m_nSVDHits"] = nsvd.astype(np.int16)
    fit["m_nPXDHits"] = npxd.astype(np.int16)
    resp.collections["TrackFitResults"] = fit
    if "TOP" in detectors:
        digits, ext, bunch = top_response(rng, trk, t_coll, cond, n_events)
        resp.collections["TOPDigits"] = digits
        ext_parts.append(ext)
        resp.event.update({f"TOPRecBunch_{k}": v for k, v in bunch.items()})
    if "ARICH" in detectors:
        digits, ext = arich_response(rng, trk, cond, n_events)
        resp.collections["ARICHDigits"] = digits
        ext_parts.append(ext)
    if "KLM" in detectors:
        digits, ext = klm_response(rng, trk, t_coll, cond, n_events)
        resp.collections["KLMDigits"] = digits
        ext_parts.append(ext)
    if ext_parts:
        resp.collections["ExtHits"] = _concat_sorted(ext_parts)
    # the ECL is always simulated: the trigger needs its clusters; its branches are only
    # written when the ECL is among the requested detectors
    digits, clusters = ecl_response(rng, trk, parts, t_coll, cond, n_events)
    resp.collections["ECLClusters"] = clusters
    if "ECL" in detectors:
        resp.collections["ECLCalDigits"] = digits
    return resp


#: The collections each detector writes (what :func:`remove_detectors` empties); the tracks'
#: extrapolations (``ExtHits``) follow the geometry and are kept.
DETECTOR_COLLECTIONS: dict[str, tuple[str, ...]] = {
    "PXD": ("PXDDigits", "PXDClusters", "PXDIntercepts"),
    "SVD": ("SVDClusters",),
    "CDC": ("CDCHits", "CDCDedxTracks"),
    "TOP": ("TOPDigits",),
    "ARICH": ("ARICHDigits",),
    "ECL": ("ECLCalDigits", "ECLClusters"),
    "KLM": ("KLMDigits",),
}
#: The tracks' hit count of each tracking detector (``TrackFitResults``).
_HIT_COUNTS = {"PXD": "m_nPXDHits", "SVD": "m_nSVDHits", "CDC": "m_nCDCHits"}


def remove_detectors(resp: Response, absent: tuple[str, ...] | list[str]) -> None:
    """Empty, in place, what the detectors of ``absent`` (not in the run) would have written,
    as basf2 writes a run without them: their collections stay (the reconstruction path
    registers them) but hold nothing, the tracks count none of their hits, and without the TOP
    the bunch finder reconstructs no bunch.

    The response is simulated with every detector first and emptied afterwards, so that the
    random numbers and every other detector's data are those of the run with all detectors;
    the track parameters are those of the full detector (the resolution lost without the PXD
    is not modelled).
    """
    for det in absent:
        for name in DETECTOR_COLLECTIONS[det]:
            c = resp.collections.get(name)
            if c is not None:
                resp.collections[name] = {k: v[:0] for k, v in c.items()}
        fit = resp.collections.get("TrackFitResults")
        if det in _HIT_COUNTS and fit is not None:
            fit[_HIT_COUNTS[det]] = np.zeros_like(fit[_HIT_COUNTS[det]])
        if det == "TOP":
            for k, v in resp.event.items():
                if k.startswith("TOPRecBunch_"):
                    resp.event[k] = np.zeros_like(v)
