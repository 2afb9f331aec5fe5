"""Generation of the run list of a simulated experiment."""

from __future__ import annotations

import numpy as np

from b2calib.geometry import DETECTORS
from b2calib.runs import Run
from b2calib.sim.config import SimConfig

__all__ = ["NOMINAL_ECMS", "generate_runs", "run_rng"]

#: Nominal collision energy (GeV) of each beam-energy class; Scan runs step through values.
NOMINAL_ECMS = {"4S": 10.5794, "Continuum": 10.5200, "Scan": 10.7500}
_SCAN_POINTS = (10.6330, 10.6800, 10.7500, 10.8670)
#: Typical L1 trigger rates (Hz) per run type.
_L1_RATE = {"physics": 6000.0, "cosmic": 250.0, "beam": 2000.0, "debug": 500.0}
_HOURS = {"cosmic": (1.0, 3.0), "beam": (0.2, 1.0), "debug": (0.1, 0.5)}


def run_rng(cfg: SimConfig, run: int, stream: int) -> np.random.Generator:
    """Independent random stream for (seed, exp, run, stream): reproducible per run."""
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, cfg.exp, run, stream]))


def generate_runs(cfg: SimConfig) -> list[Run]:
    """Runs of the experiment with type, beam energy, times, luminosity and triggers.

    Physics runs last ``mean_run_hours`` on average (log-normal), at ``inst_lumi_1e34`` x
    (0.6-1.1) with 5-10 % dead time; runs follow each other with 5-40 minute gaps.
    """
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, cfg.exp, 0x52554E53]))
    t = cfg.start_timestamp
    types = list(cfg.run_types)
    probs = np.array([cfg.run_types[k] for k in types])
    runs: list[Run] = []
    for i in range(cfg.n_runs):
        number = cfg.first_run + i
        rtype = "physics" if i == 0 else str(rng.choice(types, p=probs))
        u = rng.random()
        if rtype == "physics":
            hours = float(np.clip(rng.lognormal(np.log(cfg.mean_run_hours), 0.4), 0.3, 12.0))
            if u < cfg.scan_fraction:
                energy = "Scan"
            elif u < cfg.scan_fraction + cfg.continuum_fraction:
                energy = "Continuum"
            else:
                energy = "4S"
            inst = cfg.inst_lumi_1e34 * rng.uniform(0.6, 1.1)  # 1e34 cm^-2 s^-1
            live = 1.0 - rng.uniform(0.05, 0.10)
            lumi_pb = inst * 1e34 * hours * 3600 * live / 1e36
        else:
            lo, hi = _HOURS[rtype]
            hours = float(rng.uniform(lo, hi))
            energy = "No Beam" if rtype in ("cosmic", "debug") else "4S"
            lumi_pb = 0.0
        ecms = 0.0
        if energy == "Scan":
            ecms = _SCAN_POINTS[i % len(_SCAN_POINTS)]
        elif energy in NOMINAL_ECMS:
            ecms = NOMINAL_ECMS[energy]
        dets = list(DETECTORS)
        if rtype == "physics" and rng.random() < cfg.pxd_excluded_fraction:
            dets.remove("PXD")  # PXD sometimes excluded (high background)
        magnet = not (rtype == "cosmic" and rng.random() < 0.3)
        duration = hours * 3600.0
        triggers = int(rng.poisson(_L1_RATE[rtype] * duration))
        runs.append(
            Run(
                exp=cfg.exp,
                run=number,
                run_type=rtype,
                beam_energy=energy,
                start=round(t, 3),
                stop=round(t + duration, 3),
                lumi_pb=round(lumi_pb, 4),
                l1_triggers=triggers,
                detectors=tuple(dets),
                magnet_on=magnet,
                ecms_nominal_gev=ecms,
            )
        )
        t += duration + rng.uniform(300, 2400)
    return runs
