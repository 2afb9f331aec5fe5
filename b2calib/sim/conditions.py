"""True detector conditions of the simulated experiment, per run.

Static tables (per-channel gains, offsets, masks) are drawn once per experiment from the seed;
the documented hardware interventions change some of them from ``intervention_run`` on; a few
quantities drift with time (CDC dE/dx run gain, TOP common T0, beam spot, collision energy).
:func:`conditions_for_run` gives the truth of one run and :func:`truth_payloads` writes it in the
payload format calibrations produce, with the calibration convention of each payload in its
description.

The beams
    The beam spot (luminous-region centre) follows a slow sinusoidal drift over days (periods of
    3 days, amplitudes 5, 3, 20 um in x, y, z): each run starts on it and drifts linearly inside
    the run along its tangent (``beamspot_slope``, < 1 um per hour in x). The luminous-region
    size (10 um, 0.2 um, 350 um) is drawn per run (5 % spread). The collision energy follows a
    5-day sinusoid of 1.5 MeV amplitude plus 0.3 MeV per run, -2.0 MeV from the intervention run
    on (an energy change that scales both beams: the boost is unchanged); its spread is
    5.4 MeV. The boost vector is that of the beam energies and the 83 mrad crossing angle
    (:class:`b2calib.sim.physics.Beam`), the one the generator applies to every event.

    With ``SimConfig.beam_step_run`` set, the beams step once inside that run, at
    ``beam_step_hours`` after its start: the beam-spot position by ``beam_step_um`` and the
    collision energy by ``beam_step_ecms_mev`` through the HER energy alone (so the boost steps
    too). Events before the step are generated with the beams before it, events after with the
    beams after it; the other runs are unchanged (and so is every run when the step is off).

    The beam payloads of the truth are time-dependent (:mod:`b2calib.conditions.eventdep`,
    keys ``t_start``, ``t_end`` in UNIX ns): ``BeamSpot`` has one row per 0.1 h atom of the
    global grid ``floor(t / 360 s)`` that the run covers (the calibrations' atoms), cut at the
    step, each holding the position at the middle of its time span (its mean over uniformly
    spread events, the drift being linear) and the size; ``CollisionBoostVector`` and
    ``CollisionInvariantMass`` have one row per span of constant beams (two in the step run).
    The truth averaged over a set of events is the mean over the events of the row holding each
    (``eventdep.values_at``); :meth:`Conditions.beamspot_at`, :meth:`Conditions.ecms_at` and
    :meth:`Conditions.boost_at` give it per event exactly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from b2calib.conditions.eventdep import time_dependent
from b2calib.conditions.payload import ChannelStatus, Payload
from b2calib.geometry import arich, cdc, ecl, klm, top, vxd
from b2calib.runs import Run
from b2calib.sim.config import SimConfig
from b2calib.sim.physics import Beam
from b2calib.sim.runs import NOMINAL_ECMS, run_rng

__all__ = [
    "INTERVENTIONS",
    "KLM_PROPAGATION_DELAY",
    "SVD_RAW_SHIFT",
    "TRUTH_ATOM_SECONDS",
    "Conditions",
    "conditions_for_run",
    "svd_hot_strip_index",
    "svd_strip_keys",
    "truth_payloads",
]

F = npt.NDArray[np.float64]
IA = npt.NDArray[np.int64]

#: Hardware interventions applied from the intervention run on (documented in the truth).
INTERVENTIONS: tuple[dict[str, str], ...] = (
    {
        "detector": "ECL",
        "payloads": "ECLCrystalEnergy, ECLCrateTimeOffset",
        "description": "crate 17 shaper boards replaced: its crystals' raw energy response +4 %, "
        "crate time offset +3 ns",
    },
    {
        "detector": "CDC",
        "payloads": "CDCTimeZeros",
        "description": "front-end boards 120-123 replaced: their wires' T0 +2.5 ns",
    },
    {
        "detector": "TOP",
        "payloads": "TOPCalModuleT0, TOPCalCommonT0",
        "description": "module 5 firmware update: module 5 timing +0.4 ns (re-centred: module T0s "
        "sum to zero, the mean goes to the common T0)",
    },
    {
        "detector": "KLM",
        "payloads": "KLMStripEfficiency",
        "description": "BKLM forward sector 3 layer 8 high-voltage trip: strip efficiency x0.6",
    },
    {
        "detector": "SVD",
        "payloads": "SVDCoGTimeCalibrations",
        "description": "APV25 trigger latency changed: the raw CoG time of every sensor side "
        "+4 ns (t = p(raw - 4 ns): the calibration polynomial moves)",
    },
    {
        "detector": "Beam",
        "payloads": "CollisionInvariantMass",
        "description": "HER energy adjustment: collision energy -2.0 MeV",
    },
)
#: KLM signal propagation delay along the strips (ns/cm) per KLMTimeConstants type (index
#: type - 1: EKLM scintillator, BKLM scintillator, RPC phi, RPC z); the same in every run.
KLM_PROPAGATION_DELAY = np.array([0.0680, 0.0670, 0.0550, 0.0570])
#: Visible dE/dx: cos(theta) bin edges of the CDC cosine correction.
COS_EDGES = np.linspace(-0.87, 0.96, 101)
#: The time grid of the beam-spot truth rows: the calibrations' 0.1 h atoms, ``floor(t / 360 s)``.
TRUTH_ATOM_SECONDS = 360.0
#: SVD raw-time range over which the time calibration polynomial is monotonic (ns).
SVD_RAW_RANGE = vxd.SVD_RAW_RANGE
#: The SVD intervention: the raw CoG time of every sensor side moves by this much (ns).
SVD_RAW_SHIFT = 4.0


@dataclass
class Conditions:
    """All true constants of one run (arrays indexed by the payload channel numbering)."""

    exp: int
    run: int
    start: float
    stop: float
    ecl_energy_const: F  # E_true = const * E_raw          (8736)
    ecl_crystal_t0: F  # t_raw = t + crystal + crate     (8736)
    ecl_crate_t0: F  # (52, crate 1 at index 0)
    cdc_t0: F  # t_raw = t_drift + T0            (14336)
    cdc_xt: F  # (56, 2, 8): p0..p5, t_boundary, tail slope
    cdc_wire_gain: F  # 0 = dead wire                   (14336)
    cdc_run_gain: float
    cdc_cos_cor: F  # (100,) on COS_EDGES
    top_module_t0: F  # (16,) sums to zero
    top_channel_t0: F  # (8192,) zero mean in each module
    top_common_t0: float
    top_status: npt.NDArray[np.int8]  # 0 active, 1 dead, 2 noisy (8192)
    top_hot_rate: F  # hits per event of noisy channels
    klm_efficiency: F  # (N_KLM,) index = channel - 1
    klm_delay: F  # ns
    arich_status: npt.NDArray[np.int8]  # 0 ok, 1 dead, 2 hot (60480)
    arich_hot_rate: F
    svd_time: F  # (172, 2, 4): T(raw) = a0 + a1 r + a2 r^2 + a3 r^3
    svd_hot: IA  # (n, 3): sensor index, side (1 = u), strip
    svd_hot_rate: F  # per-event probability that a hot strip fires (its noise occupancy)
    pxd_dead: IA  # (n, 3): sensor index, u, v
    pxd_hot: IA  # (n, 3)
    pxd_hot_rate: F
    pxd_gain: F  # (40, 4, 6)
    beamspot: F  # x, y, z (cm) at run start
    beamspot_slope: F  # dx/dt, dy/dt, dz/dt (cm per hour)
    beamspot_size: F  # sigma x, y, z (cm)
    ecms: float  # GeV, at run start (before a step)
    ecms_spread: float  # GeV
    step_time: float | None = None  # UNIX s of the beam step inside the run (None: no step)
    beamspot_step: F = field(default_factory=lambda: np.zeros(3))  # cm, from step_time on
    ecms_step: float = 0.0  # GeV, from step_time on (by the HER energy)

    def _after(self, t: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        t = np.asarray(t, dtype=np.float64)
        if self.step_time is None:
            return np.zeros(t.shape, dtype=bool)
        return t >= self.step_time

    def beamspot_at(self, t: npt.ArrayLike) -> F:
        """Beam-spot position (n, 3) at UNIX times ``t`` (linear drift within the run, plus
        the step from ``step_time`` on)."""
        hours = (np.asarray(t, dtype=np.float64) - self.start) / 3600.0
        pos = self.beamspot[None, :] + hours[:, None] * self.beamspot_slope[None, :]
        if self.step_time is None:
            return pos
        return pos + self._after(t)[:, None] * self.beamspot_step[None, :]

    @property
    def beams(self) -> tuple[Beam, ...]:
        """The beams of the run: one, or the beams before and after the step."""
        first = Beam(self.ecms, self.ecms_spread)
        if self.step_time is None:
            return (first,)
        return first, first.with_her_energy(self.ecms + self.ecms_step)

    def segments(self) -> list[tuple[float, float]]:
        """The spans of constant beams (UNIX s): the run, or before and after the step."""
        if self.step_time is None:
            return [(self.start, self.stop)]
        return [(self.start, self.step_time), (self.step_time, self.stop)]

    def ecms_at(self, t: npt.ArrayLike) -> F:
        """Collision energy (GeV) at UNIX times ``t``."""
        return np.where(self._after(t), self.ecms + self.ecms_step, self.ecms)

    def boost_at(self, t: npt.ArrayLike) -> F:
        """Boost vector (n, 3) of the centre-of-mass frame at UNIX times ``t``."""
        boosts = np.stack([b.boost for b in self.beams])
        return boosts[np.minimum(self._after(t).astype(np.intp), len(boosts) - 1)]

    def atoms(self) -> list[tuple[float, float]]:
        """The run cut on the 0.1 h atom grid (``floor(t / TRUTH_ATOM_SECONDS)``) and at the
        step: the time spans (UNIX s) of the beam-spot truth rows."""
        a = TRUTH_ATOM_SECONDS
        cuts = {self.start, self.stop}
        cuts.update(k * a for k in range(int(self.start // a) + 1, int(np.ceil(self.stop / a))))
        if self.step_time is not None:
            cuts.add(self.step_time)
        edges = sorted(c for c in cuts if self.start <= c <= self.stop)
        return [(t0, t1) for t0, t1 in itertools.pairwise(edges) if t1 > t0]


def _xt_table(rng: np.random.Generator) -> F:
    out = np.empty((cdc.N_LAYERS, 2, 8))
    c = cdc.LAYER_HALF_CELL
    for layer in range(cdc.N_LAYERS):
        v0_layer = 0.0045 * rng.normal(1.0, 0.04)
        for lr in range(2):
            v0 = v0_layer * rng.normal(1.0, 0.02)
            ck = np.array(
                [
                    1.0,
                    rng.normal(-0.45, 0.03),
                    rng.normal(0.12, 0.02),
                    rng.normal(-0.03, 0.005),
                    0.004,
                ]
            )
            k = np.sum(ck / np.arange(1, 6))
            tb = 0.92 * c[layer] / (v0 * k)
            p = np.zeros(6)
            p[0] = abs(rng.normal(0.002, 0.001))
            p[1:] = v0 * ck / (np.arange(1, 6) * tb ** np.arange(0, 5))
            slope = v0 * ck.sum()
            out[layer, lr] = [*p, tb, slope]
    return out


def xt_position(params: F, t: F) -> F:
    """Drift distance (cm) of drift times ``t`` (ns) for one x-t parameter row (8 values)."""
    p, tb, slope = params[:6], params[6], params[7]
    t = np.asarray(t, dtype=np.float64)
    poly = np.polynomial.polynomial.polyval(np.minimum(t, tb), p)
    return np.where(t < tb, poly, poly + slope * (t - tb))


def _svd_time(rng: np.random.Generator) -> F:
    n = vxd.N_SVD_SENSORS
    coef = np.empty((n, 2, 4))
    coef[..., 0] = rng.normal(-2.0, 1.5, (n, 2))
    coef[..., 1] = rng.normal(1.0, 0.05, (n, 2))
    coef[..., 2] = rng.normal(0.002, 0.0005, (n, 2))
    coef[..., 3] = rng.normal(-2e-5, 5e-6, (n, 2))
    return coef


def _shift_raw(coef: F, d: float) -> F:
    """Coefficients of ``t = p(r - d)`` for ``t = p(r)`` (cubic in the last axis): the raw time
    moved by ``d``."""
    a0, a1, a2, a3 = np.moveaxis(coef, -1, 0)
    return np.stack(
        [
            a0 - a1 * d + a2 * d**2 - a3 * d**3,
            a1 - 2 * a2 * d + 3 * a3 * d**2,
            a2 - 3 * a3 * d,
            a3,
        ],
        axis=-1,
    )


def _q16(x: F) -> F:
    """Constants are float32 with 12 mantissa bits (relative 2.4e-4); the truth is exactly that."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    u = a.view(np.uint32)
    return ((u + np.uint32(1 << 10)) & np.uint32(0xFFFFF800)).view(np.float32).astype(np.float64)


@lru_cache(maxsize=4)
def _static(seed: int, exp: int) -> dict[str, Any]:
    """Per-experiment tables, before interventions (cached: identical for every run)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, exp, 0x7472757468]))
    s: dict[str, Any] = {}
    s["ecl_energy_const"] = 1.0 / np.clip(rng.normal(1.0, 0.04, ecl.N_CRYSTALS), 0.85, 1.15)
    s["ecl_crystal_t0"] = rng.normal(0.0, 1.5, ecl.N_CRYSTALS)
    s["ecl_crate_t0"] = rng.normal(0.0, 4.0, ecl.N_CRATES)
    board_shift = rng.normal(0.0, 1.0, cdc.N_BOARDS)
    s["cdc_t0"] = (
        4.0 + board_shift[cdc.board_of(np.arange(cdc.N_WIRES))] + rng.normal(0.0, 0.5, cdc.N_WIRES)
    )
    s["cdc_xt"] = _xt_table(rng)
    gain = np.clip(rng.normal(1.0, 0.08, cdc.N_WIRES), 0.6, 1.4)
    gain[rng.random(cdc.N_WIRES) < 0.003] = 0.0
    s["cdc_wire_gain"] = gain
    cc = 0.5 * (COS_EDGES[1:] + COS_EDGES[:-1])
    s["cdc_cos_cor"] = 1.0 - 0.015 * cc + 0.04 * cc**2 + 0.06 * cc**4
    mod = rng.normal(0.0, 0.3, top.N_MODULES)
    s["top_module_t0"] = mod - mod.mean()
    ch = rng.normal(0.0, 0.15, (top.N_MODULES, top.N_PIXELS))
    s["top_channel_t0"] = (ch - ch.mean(axis=1, keepdims=True)).ravel()
    status = np.zeros(top.N_CHANNELS, dtype=np.int8)
    u = rng.random(top.N_CHANNELS)
    status[u < 0.010] = 1
    status[(u >= 0.010) & (u < 0.015)] = 2
    s["top_status"] = status
    s["top_hot_rate"] = np.where(status == 2, rng.uniform(0.05, 0.3, top.N_CHANNELS), 0.0)
    s["top_common_t0_base"] = rng.normal(0.5, 0.2)
    eff = rng.beta(40, 2, klm.N_CHANNELS)
    low = rng.random(klm.N_CHANNELS) < 0.01
    eff[low] = rng.uniform(0.3, 0.7, low.sum())
    s["klm_efficiency"] = eff
    s["klm_delay"] = rng.normal(0.0, 2.0, klm.N_CHANNELS)
    astat = np.zeros(arich.N_CHANNELS, dtype=np.int8)
    u = rng.random(arich.N_CHANNELS)
    astat[u < 0.015] = 1
    astat[(u >= 0.015) & (u < 0.0152)] = 2
    s["arich_status"] = astat
    s["arich_hot_rate"] = np.where(astat == 2, rng.uniform(0.2, 0.6, arich.N_CHANNELS), 0.0)
    s["svd_time"] = _svd_time(rng)
    nhot = 20
    s["svd_hot"] = np.stack(
        [
            rng.integers(0, vxd.N_SVD_SENSORS, nhot),
            rng.integers(0, 2, nhot),
            rng.integers(0, vxd.SVD_STRIPS, nhot),
        ],
        axis=1,
    )
    s["svd_hot_rate"] = rng.uniform(0.25, 0.6, nhot)
    # the V sides (side 0) of layers 4-6 have 512 strips: their hot strips are mapped onto them
    hot = s["svd_hot"]
    short = (hot[:, 1] == 0) & (vxd.SVD_SENSOR_TABLE[hot[:, 0], 0] >= 4)
    hot[short, 2] = hot[short, 2] * vxd.SVD_STRIPS_V[4] // vxd.SVD_STRIPS
    ndead, nhotp = int(0.001 * vxd.N_PXD_PIXELS), 200
    flat = rng.choice(vxd.N_PXD_PIXELS, ndead + nhotp, replace=False)
    sensor, rest = np.divmod(flat, vxd.PXD_NU * vxd.PXD_NV)
    u_cell, v_cell = np.divmod(rest, vxd.PXD_NV)
    cells = np.stack([sensor, u_cell, v_cell], axis=1)
    order = np.lexsort((cells[:ndead, 2], cells[:ndead, 1], cells[:ndead, 0]))
    s["pxd_dead"] = cells[:ndead][order]
    s["pxd_hot"] = cells[ndead:]
    s["pxd_hot_rate"] = np.exp(rng.uniform(np.log(1e-3), np.log(0.2), nhotp))
    s["pxd_gain"] = rng.normal(
        1.0, 0.08, (vxd.N_PXD_SENSORS, vxd.PXD_GAIN_BINS_U, vxd.PXD_GAIN_BINS_V)
    )
    for k, v in s.items():
        if isinstance(v, np.ndarray) and v.dtype == np.float64:
            s[k] = _q16(v)
    s["beamspot0"] = np.array(
        [rng.normal(0.045, 0.01), rng.normal(-0.030, 0.01), rng.normal(0.10, 0.05)]
    )
    s["phases"] = rng.uniform(0, 2 * np.pi, 6)
    return s


def conditions_for_run(cfg: SimConfig, run: Run) -> Conditions:
    """The true constants of ``run`` (deterministic in the seed, independent of other runs)."""
    s = _static(cfg.seed, cfg.exp)
    after = run.run >= cfg.effective_intervention_run
    rng = run_rng(cfg, run.run, 0x434F4E44)
    days = (run.start - cfg.start_timestamp) / 86400.0
    ph = s["phases"]

    ecl_const = s["ecl_energy_const"].copy()
    crate_t0 = s["ecl_crate_t0"].copy()
    cdc_t0 = s["cdc_t0"].copy()
    module_t0 = s["top_module_t0"].copy()
    common = s["top_common_t0_base"] + 0.02 * days + rng.normal(0.0, 0.01)
    klm_eff = s["klm_efficiency"].copy()
    svd_time = s["svd_time"]
    if after:
        svd_time = _q16(_shift_raw(svd_time, SVD_RAW_SHIFT))
        crate17 = ecl.crate_of(np.arange(1, ecl.N_CRYSTALS + 1)) == 17
        ecl_const[crate17] /= 1.04
        crate_t0[16] += 3.0
        boards = cdc.board_of(np.arange(cdc.N_WIRES))
        cdc_t0[(boards >= 120) & (boards <= 123)] += 2.5
        module_t0[4] += 0.4
        shift = module_t0.mean()
        module_t0 -= shift
        common += shift
        for plane in (0, 1):
            i = klm.plane_index(klm.BKLM, 1, 3, 8, plane)
            first, n = klm.PLANE_FIRST[i] - 1, klm.PLANES[i, 5]
            klm_eff[first : first + n] *= 0.6

    ecl_const, crate_t0, cdc_t0, module_t0, klm_eff = (
        _q16(a) for a in (ecl_const, crate_t0, cdc_t0, module_t0, klm_eff)
    )
    run_gain = 1.0 + 0.03 * np.sin(2 * np.pi * days / 7.0 + ph[0]) + rng.normal(0.0, 0.005)
    period = 3.0
    amp = np.array([5e-4, 3e-4, 2e-3])  # cm
    base = s["beamspot0"] + amp * np.sin(2 * np.pi * days / period + ph[1:4])
    slope = amp * (2 * np.pi / (period * 24.0)) * np.cos(2 * np.pi * days / period + ph[1:4])
    size = np.array([10e-4, 0.2e-4, 350e-4]) * rng.normal(1.0, 0.05, 3)
    nominal = run.ecms_nominal_gev or NOMINAL_ECMS["4S"]
    ecms = nominal + 1.5e-3 * np.sin(2 * np.pi * days / 5.0 + ph[4]) + rng.normal(0.0, 3e-4)
    if after:
        ecms -= 2.0e-3
    step: dict[str, Any] = {}
    if cfg.beam_step_run == run.run:
        step["step_time"] = run.start + cfg.beam_step_hours * 3600.0
        step["beamspot_step"] = np.asarray(cfg.beam_step_um, dtype=np.float64) * 1e-4
        step["ecms_step"] = cfg.beam_step_ecms_mev * 1e-3

    return Conditions(
        exp=run.exp,
        run=run.run,
        start=run.start,
        stop=run.stop,
        ecl_energy_const=ecl_const,
        ecl_crystal_t0=s["ecl_crystal_t0"],
        ecl_crate_t0=crate_t0,
        cdc_t0=cdc_t0,
        cdc_xt=s["cdc_xt"],
        cdc_wire_gain=s["cdc_wire_gain"],
        cdc_run_gain=float(run_gain),
        cdc_cos_cor=s["cdc_cos_cor"],
        top_module_t0=module_t0,
        top_channel_t0=s["top_channel_t0"],
        top_common_t0=float(common),
        top_status=s["top_status"],
        top_hot_rate=s["top_hot_rate"],
        klm_efficiency=klm_eff,
        klm_delay=s["klm_delay"],
        arich_status=s["arich_status"],
        arich_hot_rate=s["arich_hot_rate"],
        svd_time=svd_time,
        svd_hot=s["svd_hot"],
        svd_hot_rate=s["svd_hot_rate"],
        pxd_dead=s["pxd_dead"],
        pxd_hot=s["pxd_hot"],
        pxd_hot_rate=s["pxd_hot_rate"],
        pxd_gain=s["pxd_gain"],
        beamspot=base,
        beamspot_slope=slope,
        beamspot_size=size,
        ecms=float(ecms),
        ecms_spread=5.4e-3,
        **step,
    )


def _f32(cols: dict[str, Any]) -> dict[str, Any]:
    """float64 columns that float32 holds exactly are stored as float32 (half the size)."""
    out = {}
    for k, v in cols.items():
        v = np.asarray(v)
        if v.dtype == np.float64 and np.array_equal(v.astype(np.float32).astype(np.float64), v):
            v = v.astype(np.float32)
        out[k] = v
    return out


def _p(name: str, description: str, units: dict[str, str], **kw: Any) -> Payload:
    kw["values"] = _f32(kw["values"])
    meta = {
        "description": description,
        "units": units,
        "provenance": {"source": "b2calib.sim truth"},
    }
    return Payload(name=name, metadata=meta, **kw)


def _pixel_list(
    name: str, description: str, unit: str, cells: IA, value: F, status: ChannelStatus
) -> Payload:
    """A PXD pixel list: (sensor index, u, v) rows keyed by VxdID, one status for all."""
    return _p(
        name,
        description,
        {"value": unit},
        keys={
            "sensorID": vxd.PXD_IDS[cells[:, 0]].astype(np.int32),
            "u": cells[:, 1].astype(np.int16),
            "v": cells[:, 2].astype(np.int16),
        },
        values={"value": value},
        status=np.full(len(cells), status, np.int8),
    )


def svd_strip_keys() -> dict[str, npt.NDArray[Any]]:
    """Key columns (layer, ladder, sensor, side, strip) of every SVD strip, sensor sides in
    order (side 0 = V before side 1 = U), as the per-strip SVD payloads hold them."""
    side_idx = np.repeat(np.arange(2 * vxd.N_SVD_SENSORS), vxd.SVD_SIDE_STRIPS)
    sensor = vxd.SVD_SENSOR_TABLE[side_idx // 2]
    return {
        "layer": sensor[:, 0].astype(np.int8),
        "ladder": sensor[:, 1].astype(np.int8),
        "sensor": sensor[:, 2].astype(np.int8),
        "side": (side_idx % 2).astype(np.int8),
        "strip": (np.arange(vxd.N_SVD_STRIPS) - vxd.SVD_SIDE_FIRST[side_idx]).astype(np.int16),
    }


def svd_hot_strip_index(c: Conditions) -> IA:
    """Flat strip indices (:func:`svd_strip_keys` order) of the true hot strips."""
    return vxd.SVD_SIDE_FIRST[2 * c.svd_hot[:, 0] + c.svd_hot[:, 1]] + c.svd_hot[:, 2]


def _svd_hot_strips(c: Conditions) -> Payload:
    """Hot-strip flag per strip (basf2's bitmap), with the true noise occupancy of the hot ones."""
    flat = svd_hot_strip_index(c)
    flag = np.zeros(vxd.N_SVD_STRIPS)
    flag[flat] = 1.0
    rate = np.zeros(vxd.N_SVD_STRIPS)
    np.add.at(rate, flat, c.svd_hot_rate)
    status = np.where(flag > 0, ChannelStatus.HOT, ChannelStatus.OK).astype(np.int8)
    return _p(
        "SVDHotStripsCalibrations",
        "hot-strip flag per strip (1 = hot); occupancy = that of a hot strip (the probability that "
        "it fires in an event, besides its hits from tracks)",
        {"value": "1", "occupancy": "1"},
        keys=svd_strip_keys(),
        values={"value": flag, "occupancy": rate},
        status=status,
    )


def _ns(t: float) -> int:
    """UNIX seconds as the nanoseconds of ``EventMetaData_m_time`` (truncated, as events)."""
    return int(np.float64(t) * 1e9)


def _time_payload(
    name: str, description: str, units: dict[str, str], spans: list[tuple[float, float]], **kw: Any
) -> Payload:
    """A time-dependent truth payload, one row per time span."""
    t0 = np.array([_ns(a) for a, _ in spans], dtype=np.int64)
    t1 = np.array([_ns(b) for _, b in spans], dtype=np.int64)
    meta = {
        "description": description,
        "units": units | {"t_start": "ns", "t_end": "ns"},
        "provenance": {"source": "b2calib.sim truth"},
        **kw.get("extra", {}),
    }
    return time_dependent(name, t0, t1, values=kw["values"], metadata=meta)


def _beam_motion(c: Conditions) -> dict[str, Any]:
    """The beam spot's motion in the run, recorded in the truth's metadata: the position at the
    run start, the linear drift and the step (time, size), the atoms' values being their
    consequence."""
    motion: dict[str, Any] = {
        "start_cm": [float(v) for v in c.beamspot],
        "drift_cm_per_hour": [float(v) for v in c.beamspot_slope],
    }
    if c.step_time is not None:
        motion["step"] = {
            "t_ns": _ns(c.step_time),
            "position_cm": [float(v) for v in c.beamspot_step],
            "ecms_gev": c.ecms_step,
        }
    return {"beam_motion": motion}


_COV = ("cov_xx", "cov_xy", "cov_xz", "cov_yy", "cov_yz", "cov_zz")


def _beam_payloads(c: Conditions) -> list[Payload]:
    """BeamSpot (per atom), CollisionBoostVector and CollisionInvariantMass (per span of
    constant beams), time-dependent."""
    atoms = c.atoms()
    mid = np.array([(a + b) / 2 for a, b in atoms])
    pos = c.beamspot_at(mid)
    n = len(atoms)
    zero = np.zeros(n)
    size2 = c.beamspot_size**2
    size = {
        "size_xx": np.full(n, size2[0]),
        "size_xy": zero,
        "size_xz": zero,
        "size_yy": np.full(n, size2[1]),
        "size_yz": zero,
        "size_zz": np.full(n, size2[2]),
    }
    spans = c.segments()
    beams = c.beams
    boost = np.stack([b.boost for b in beams])
    return [
        _time_payload(
            "BeamSpot",
            "luminous-region centre (x, y, z) per 0.1 h atom: the position at the middle of the "
            "atom (the run-start position drifting linearly in the run, plus the step of the step "
            "run: metadata beam_motion), its covariance (0: the truth), and the luminous-region "
            "size covariance (diagonal: sigma_x^2, sigma_y^2, sigma_z^2)",
            dict.fromkeys(("x", "y", "z"), "cm") | dict.fromkeys((*_COV, *size), "cm^2"),
            atoms,
            extra=_beam_motion(c),
            values={"x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2]}
            | dict.fromkeys(_COV, zero)
            | size,
        ),
        _time_payload(
            "CollisionBoostVector",
            "boost vector beta of the centre-of-mass frame in the lab (the one the generator "
            "applied), per span of constant beams, and its covariance (0: the truth)",
            dict.fromkeys(("bx", "by", "bz", *_COV), "1"),
            spans,
            values={"bx": boost[:, 0], "by": boost[:, 1], "bz": boost[:, 2]}
            | dict.fromkeys(_COV, np.zeros(len(spans))),
        ),
        _time_payload(
            "CollisionInvariantMass",
            "collision energy sqrt(s) (mass) and its spread, per span of constant beams",
            {"mass": "GeV", "spread": "GeV"},
            spans,
            values={
                "mass": np.array([b.ecms for b in beams]),
                "spread": np.array([b.spread for b in beams]),
            },
        ),
    ]


def truth_payloads(c: Conditions) -> list[Payload]:
    """The conditions of one run as payloads, in the convention calibrations produce."""
    cells = np.arange(1, ecl.N_CRYSTALS + 1, dtype=np.int32)
    wires = np.arange(cdc.N_WIRES, dtype=np.int32)
    top_mod = np.repeat(np.arange(1, 17, dtype=np.int16), top.N_PIXELS)
    top_pix = np.tile(np.arange(1, top.N_PIXELS + 1, dtype=np.int16), top.N_MODULES)
    layers, lrs = np.meshgrid(np.arange(cdc.N_LAYERS), np.arange(2), indexing="ij")
    xt = c.cdc_xt.reshape(-1, 8)
    svd = vxd.SVD_SENSOR_TABLE
    svd_rows = np.repeat(np.arange(vxd.N_SVD_SENSORS), 2)
    top_map = {0: ChannelStatus.OK, 1: ChannelStatus.DEAD, 2: ChannelStatus.HOT}
    to_status = np.vectorize(lambda v: int(top_map[int(v)]), otypes=[np.int8])
    gi = np.indices(c.pxd_gain.shape).reshape(3, -1)
    out = [
        _p(
            "ECLCrystalEnergy",
            "per-crystal energy constant: E = const * E_raw",
            {"value": "1"},
            keys={"cellID": cells},
            values={"value": c.ecl_energy_const},
        ),
        _p(
            "ECLCrystalTimeOffset",
            "per-crystal time offset: t = t_raw - crystal - crate",
            {"value": "ns"},
            keys={"cellID": cells},
            values={"value": c.ecl_crystal_t0},
        ),
        _p(
            "ECLCrateTimeOffset",
            "per-crate time offset (crates 1-52)",
            {"value": "ns"},
            keys={"crate": np.arange(1, 53, dtype=np.int16)},
            values={"value": c.ecl_crate_t0},
        ),
        _p(
            "CDCTimeZeros",
            "wire T0: t_drift = t_raw - T0 - event T0",
            {"value": "ns"},
            keys={"wire": wires},
            values={"value": c.cdc_t0},
        ),
        _p(
            "CDCXtRelations",
            "x(t) = p0..p5 polynomial for t < t_boundary, linear with tail_slope beyond; lr 0 left,"
            " 1 right",
            {f"p{i}": f"cm/ns^{i}" for i in range(6)} | {"t_boundary": "ns", "tail_slope": "cm/ns"},
            keys={"layer": layers.ravel().astype(np.int16), "lr": lrs.ravel().astype(np.int8)},
            values={
                **{f"p{i}": xt[:, i] for i in range(6)},
                "t_boundary": xt[:, 6],
                "tail_slope": xt[:, 7],
            },
        ),
        _p(
            "CDCDedxWireGain",
            "relative wire gain: raw dE/dx = true * wire * run * cosine; 0 = dead",
            {"value": "1"},
            keys={"wire": wires},
            values={"value": c.cdc_wire_gain},
        ),
        _p(
            "CDCDedxRunGain",
            "run gain of the dE/dx scale",
            {"value": "1"},
            values={"value": np.array([c.cdc_run_gain])},
        ),
        _p(
            "CDCDedxCosineCor",
            "dE/dx correction in bins of cos(theta)",
            {"value": "1"},
            keys={"bin": np.arange(100, dtype=np.int16)},
            values={"cos_lo": COS_EDGES[:-1], "cos_hi": COS_EDGES[1:], "value": c.cdc_cos_cor},
        ),
        _p(
            "TOPCalModuleT0",
            "module T0 (sum over modules = 0): t = t_raw - channel - module - common",
            {"value": "ns"},
            keys={"module": np.arange(1, 17, dtype=np.int16)},
            values={"value": c.top_module_t0},
        ),
        _p(
            "TOPCalChannelT0",
            "channel T0 relative to its module (zero mean per module)",
            {"value": "ns"},
            keys={"module": top_mod, "pixel": top_pix},
            values={"value": c.top_channel_t0},
        ),
        _p(
            "TOPCalCommonT0",
            "common T0 of all modules",
            {"value": "ns"},
            values={"value": np.array([c.top_common_t0])},
        ),
        _p(
            "TOPCalChannelMask",
            "channel mask: status DEAD or HOT; value = noise hits per event",
            {"value": "1/event"},
            keys={"module": top_mod, "pixel": top_pix},
            values={"value": c.top_hot_rate},
            status=to_status(c.top_status),
        ),
        _p(
            "KLMStripEfficiency",
            "strip efficiency",
            {"value": "1"},
            keys={"channel": np.arange(1, klm.N_CHANNELS + 1, dtype=np.int32)},
            values={"value": c.klm_efficiency},
        ),
        _p(
            "KLMTimeCableDelay",
            "strip time offset: t = t_raw - delay",
            {"value": "ns"},
            keys={"channel": np.arange(1, klm.N_CHANNELS + 1, dtype=np.int32)},
            values={"value": c.klm_delay},
        ),
        _p(
            "KLMTimeConstants",
            "signal propagation delay along the strips per type (1 EKLM scintillator, 2 BKLM "
            "scintillator, 3 RPC phi, 4 RPC z)",
            {"value": "ns/cm"},
            keys={"type": np.arange(1, 5, dtype=np.int8)},
            values={"value": KLM_PROPAGATION_DELAY.copy()},
        ),
        _p(
            "ARICHChannelMask",
            "channel mask: status DEAD or HOT; value = noise hits per event",
            {"value": "1/event"},
            keys={
                "module": np.repeat(np.arange(1, 421, dtype=np.int16), 144),
                "channel": np.tile(np.arange(144, dtype=np.int16), 420),
            },
            values={"value": c.arich_hot_rate},
            status=to_status(c.arich_status),
        ),
        _p(
            "SVDCoGTimeCalibrations",
            "t = a0 + a1 r + a2 r^2 + a3 r^3 of the raw CoG time r; side 1 = u",
            {"a0": "ns", "a1": "1", "a2": "1/ns", "a3": "1/ns^2"},
            keys={
                "layer": svd[svd_rows, 0].astype(np.int8),
                "ladder": svd[svd_rows, 1].astype(np.int8),
                "sensor": svd[svd_rows, 2].astype(np.int8),
                "side": np.tile(np.array([0, 1], dtype=np.int8), vxd.N_SVD_SENSORS),
            },
            values={f"a{i}": c.svd_time[:, :, i].ravel() for i in range(4)},
        ),
        _svd_hot_strips(c),
        _pixel_list(
            "PXDMaskedPixelPar",
            "hot pixels; value = occupancy",
            "1/event",
            c.pxd_hot,
            c.pxd_hot_rate,
            ChannelStatus.HOT,
        ),
        _pixel_list(
            "PXDDeadPixelPar",
            "dead pixels",
            "1",
            c.pxd_dead,
            np.zeros(len(c.pxd_dead)),
            ChannelStatus.DEAD,
        ),
        _p(
            "PXDGainMapPar",
            "charge gain per (sensor, u bin, v bin): raw = true * gain",
            {"value": "1"},
            keys={
                "sensorID": vxd.PXD_IDS[gi[0]].astype(np.int32),
                "ubin": gi[1].astype(np.int8),
                "vbin": gi[2].astype(np.int8),
            },
            values={"value": c.pxd_gain.ravel()},
        ),
        *_beam_payloads(c),
    ]
    return out
