"""Run the simulated experiment: runs -> events -> detector response -> HLT skims -> files.

Output layout under ``out``::

    runs.json                     run registry
    catalogue.json                file catalogue: size and Adler-32 of every skim file, recorded
                                  as each file is written (:class:`b2calib.io.FileCatalogue`)
    simulation.json               configuration, prescales, cross sections, interventions,
                                  generated events per run and process, events per skim
    truth/database.txt            true constants as a basf2 local database (payload files beside)
    previous/database.txt         with planted outliers (``SimConfig.planted``): the truth with
                                  the planted channels at their previous values
                                  (:mod:`b2calib.sim.planted`)
    e0012/r00001/cdst_hlt_bhabha_e0012_r00001.root   one file per (exp, run, skim)
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import numpy.typing as npt
import uproot

from b2calib._version import __version__
from b2calib._workers import exit_with_parent
from b2calib.conditions.localdb import LocalDatabase
from b2calib.conditions.payload import Payload
from b2calib.exceptions import ConfigError
from b2calib.geometry import top
from b2calib.io import METADATA_KEY, TREE_NAME, FileCatalogue, FileMetadata, file_checksum
from b2calib.physics import cross_section_nb
from b2calib.runs import Run, RunRegistry
from b2calib.sim.conditions import INTERVENTIONS, conditions_for_run, truth_payloads
from b2calib.sim.config import PROCESSES, SimConfig
from b2calib.sim.detector import Collection, remove_detectors, simulate_response
from b2calib.sim.faults import apply_faults
from b2calib.sim.physics import PROCESS_ID, Beam, Particles, generate
from b2calib.sim.planted import check_planted, planted_channels, write_previous
from b2calib.sim.runs import NOMINAL_ECMS, generate_runs, run_rng
from b2calib.sim.trigger import trigger_variables
from b2calib.skims import SKIMS

__all__ = ["SimulationResult", "expected_run_lumi_pb", "prescales", "simulate", "skim_path"]

RELEASE = f"b2calib-{__version__}"
#: Cosmic-ray trigger rate (Hz) used with the cosmic prescale.
COSMIC_RATE_HZ = 250.0


def expected_run_lumi_pb(cfg: SimConfig) -> float:
    """Mean recorded luminosity of a physics run under ``cfg`` (pb^-1)."""
    hours = cfg.mean_run_hours * math.exp(0.4**2 / 2)  # mean of the log-normal run length
    return cfg.inst_lumi_1e34 * 0.85 * 1e34 * hours * 3600 * 0.925 / 1e36


def prescales(cfg: SimConfig) -> dict[str, float]:
    """Documented prescale of each process (and ``cosmic``): the fraction of produced events
    the simulator keeps, fixed by ``events_per_run`` and ``process_fractions``."""
    lumi = expected_run_lumi_pb(cfg)
    out = {}
    for p in PROCESSES:
        sigma_pb = cross_section_nb(p, NOMINAL_ECMS["4S"]) * 1000.0
        out[p] = cfg.process_fractions[p] * cfg.events_per_run / (lumi * sigma_pb)
    # a 2-hour cosmic run keeps half as many events as a physics run
    out["cosmic"] = 0.5 * cfg.events_per_run / (COSMIC_RATE_HZ * 2.0 * 3600)
    return out


def skim_path(out: str | os.PathLike[str], exp: int, run: int, skim: str) -> Path:
    """Path of the file of (exp, run, skim) under an output folder."""
    return Path(out) / f"e{exp:04d}" / f"r{run:05d}" / f"cdst_{skim}_e{exp:04d}_r{run:05d}.root"


@dataclass
class SimulationResult:
    """What :func:`simulate` produced."""

    out: Path
    registry: RunRegistry
    generated: dict[int, dict[str, int]] = field(default_factory=dict)
    skim_events: dict[int, dict[str, int]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


class _SkimWriter:
    """Appends chunks of events to one skim file, written atomically on close."""

    def __init__(
        self, path: Path, compression: uproot.compression.Compression, chunks: int
    ) -> None:
        self.path = path
        # room for one basket per chunk: a full basket index makes uproot relocate the tree
        self.capacity = chunks + 1
        self.tmp = path.with_name(path.name + ".part")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = uproot.recreate(self.tmp, compression=compression)
        # a TObjString before the tree: FileMetaData (written last) then adds no new class, so
        # uproot does not rewrite the streamer record and leave its old copy as dead space
        self.file["Software"] = json.dumps({"release": RELEASE, "generator": "b2calib.sim"})
        self.n = 0

    def extend(self, data: dict[str, Any]) -> None:
        if TREE_NAME not in self.file:
            types = {
                k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in data.items()
            }
            self.file.mktree(TREE_NAME, types, initial_basket_capacity=self.capacity)
        self.file[TREE_NAME].extend(data)
        self.n += len(next(iter(data.values())))

    def close(self, meta: FileMetadata) -> str:
        """Write the metadata, close the file and return its Adler-32 (of the bytes written,
        before the file takes its name)."""
        self.file[METADATA_KEY] = meta.to_json()
        self.file.close()
        checksum = file_checksum(self.tmp)
        os.replace(self.tmp, self.path)
        return checksum


def _jagged(c: Collection, n_events: int) -> ak.Array:
    counts = np.bincount(np.asarray(c["evt"], dtype=np.int64), minlength=n_events)
    rec = ak.zip({k: v for k, v in c.items() if k != "evt"}, depth_limit=1)
    return ak.unflatten(rec, counts)


def _select(data: dict[str, Any], mask: npt.NDArray[np.bool_]) -> dict[str, Any]:
    return {k: v[mask] for k, v in data.items()}


def _event_columns(
    run: Run,
    chunk_first_event: int,
    proc: npt.NDArray[np.int64],
    times: npt.NDArray[np.float64],
    t_coll: npt.NDArray[np.float64],
    ecms: npt.NDArray[np.float64],
) -> dict[str, Any]:
    n = len(proc)
    return {
        "EventMetaData_m_experiment": np.full(n, run.exp, np.int32),
        "EventMetaData_m_run": np.full(n, run.run, np.int32),
        "EventMetaData_m_event": (chunk_first_event + np.arange(1, n + 1)).astype(np.uint32),
        "EventMetaData_m_time": (times * 1e9).astype(np.uint64),
        "SimTruth_m_process": proc.astype(np.int8),
        "SimTruth_m_eventTime": t_coll.astype(np.float32),
        "SimTruth_m_ecms": ecms.astype(np.float32),
    }


def _run_counts(
    cfg: SimConfig, run: Run, rng: np.random.Generator, ecms: float, ps: dict[str, float]
) -> dict[str, int]:
    if run.run_type == "physics":
        return {
            p: int(rng.poisson(run.lumi_pb * cross_section_nb(p, ecms) * 1000.0 * ps[p]))
            for p in cfg.processes
        }
    if run.run_type == "cosmic":
        return {"cosmic": int(rng.poisson(COSMIC_RATE_HZ * run.duration_s * ps["cosmic"]))}
    return {}


def simulate_run(
    cfg: SimConfig, run: Run, out: Path
) -> tuple[int, dict[str, int], dict[str, int], dict[str, str]]:
    """Simulate one run; returns (run, generated per process, events per skim, the files
    written with their Adler-32 checksums)."""
    cond = conditions_for_run(cfg, run)
    rng = run_rng(cfg, run.run, 1)
    ps = prescales(cfg)
    counts = _run_counts(cfg, run, rng, cond.ecms, ps)
    total = sum(counts.values())
    skims = [s for s in (cfg.skims or list(SKIMS)) if run.run_type in SKIMS[s].run_types]
    if not counts or not skims:
        return run.run, counts, {}, {}
    nchunks = max(1, math.ceil(total / cfg.chunk_size))
    split = {p: rng.multinomial(n, [1.0 / nchunks] * nchunks) for p, n in counts.items()}
    compression = {"zstd": uproot.ZSTD, "lz4": uproot.LZ4, "zlib": uproot.ZLIB}[cfg.compression](
        cfg.compression_level
    )
    writers = {
        s: _SkimWriter(skim_path(out, run.exp, run.run, s), compression, nchunks) for s in skims
    }
    nominal = Beam(run.ecms_nominal_gev or NOMINAL_ECMS["4S"], 0.0)
    beam = Beam(cond.ecms, cond.ecms_spread)
    detectors = tuple(cfg.detectors)
    # the run's detectors: the others are simulated (the same random numbers for every detector
    # whatever the run includes) and emptied, as a run without them is written
    absent = tuple(d for d in detectors if d not in run.detectors)
    first_event = 0
    span = run.duration_s / nchunks
    faults = [f for f in cfg.faults if f["run"] == run.run]
    for c in range(nchunks):
        crng = run_rng(cfg, run.run, 1000 + c)
        n_p = {p: int(split[p][c]) for p in counts}
        n = sum(n_p.values())
        proc = np.concatenate([np.full(k, PROCESS_ID[p]) for p, k in n_p.items()]).astype(np.int64)
        perm = crng.permutation(n)  # old event index -> position in time order
        times_sorted = np.sort(crng.uniform(run.start + c * span, run.start + (c + 1) * span, n))
        times_old = times_sorted[perm]
        parts: list[Particles] = []
        offset = 0
        for p, k in n_p.items():
            if k == 0:
                continue
            t_p = times_old[offset : offset + k]
            if cond.step_time is None:
                bs = cond.beamspot_at(t_p)
                part = generate(crng, p, k, beam, bs, cond.beamspot_size)
                part.evt = part.evt + offset
                parts.append(part)
            else:  # the beams step inside this run: each span's events with its beams
                after = t_p >= cond.step_time
                for seg_beam, sel in zip(cond.beams, (~after, after), strict=True):
                    idx = np.flatnonzero(sel)
                    if len(idx) == 0:
                        continue
                    bs = cond.beamspot_at(t_p[idx])
                    part = generate(crng, p, len(idx), seg_beam, bs, cond.beamspot_size)
                    part.evt = idx[part.evt] + offset
                    parts.append(part)
            offset += k
        allp = Particles.concat(parts)
        allp.evt = perm[allp.evt]
        order = np.argsort(allp.evt, kind="stable")
        allp = Particles(
            allp.evt[order], allp.pdg[order], allp.p4[order], allp.vertex[order], allp.t0[order]
        )
        proc_new = np.empty(n, np.int64)
        proc_new[perm] = proc
        cosmic = run.run_type == "cosmic"
        # collisions happen at bunch crossings (RF buckets); cosmics at any time
        t_coll: npt.NDArray[np.float64]
        if cosmic:
            t_coll = crng.uniform(-10.0, 10.0, n)
        else:
            t_coll = (crng.integers(-8, 9, n) * top.RF_PERIOD_NS).astype(np.float64)
        if cosmic:
            ecms_evt = np.zeros(n)
        elif cond.step_time is None:
            ecms_evt = np.full(n, cond.ecms)
        else:
            ecms_evt = cond.ecms_at(times_sorted)
        resp = simulate_response(
            crng,
            allp,
            n,
            t_coll,
            cond,
            run.magnet_on,
            detectors,
            pxd_occupancy=0.0 if cosmic else cfg.pxd_occupancy,
        )
        if faults:
            apply_faults(
                resp.collections,
                faults,
                seed=cfg.seed,
                exp=run.exp,
                run=run.run,
                chunk=c,
                n_events=n,
            )
        trig = trigger_variables(
            resp.collections["TrackFitResults"], resp.collections["ECLClusters"], n, nominal
        )
        if absent:  # after the trigger, which sees the simulated ECL clusters in any case
            remove_detectors(resp, absent)
        data: dict[str, Any] = _event_columns(
            run, first_event, proc_new, times_sorted, t_coll, ecms_evt
        )
        data.update(resp.event)
        data.update(
            {f"SoftwareTriggerVariables_{k}": v.astype(np.float32) for k, v in trig.items()}
        )
        masks = {s: SKIMS[s].select(trig) for s in SKIMS if run.run_type in SKIMS[s].run_types}
        data.update({f"SoftwareTriggerResult_{s}": m.astype(np.int8) for s, m in masks.items()})
        for name, coll in resp.collections.items():
            if name == "ECLClusters" and "ECL" not in detectors:
                continue
            data[name] = _jagged(coll, n)
        for s, w in writers.items():
            w.extend(_select(data, masks[s]))
        first_event += n
    skim_events = {}
    files = {}
    for s, w in writers.items():
        meta = FileMetadata(
            exp=run.exp,
            run=run.run,
            skim=s,
            n_events=w.n,
            globaltag=cfg.globaltag,
            release=RELEASE,
            seed=cfg.seed,
            extra={
                "run_type": run.run_type,
                "beam_energy": run.beam_energy,
                "lumi_pb": run.lumi_pb,
                "prescales": ps,
                "detectors": [d for d in cfg.detectors if d not in absent],
                "generator": "b2calib.sim",
                "generated_events": counts,
            },
        )
        files[str(w.path)] = w.close(meta)
        skim_events[s] = w.n
    return run.run, counts, skim_events, files


def _write_truth(cfg: SimConfig, runs: list[Run], out: Path) -> None:
    """True constants as a basf2 local database, one IoV per stretch of identical content, and,
    with planted channels, ``previous/``: the same IoVs with the planted channels at their
    previous values (:func:`~b2calib.sim.planted.plant`)."""
    folder = out / "truth"
    if folder.exists():
        shutil.rmtree(folder)
    if (out / "previous").exists():
        shutil.rmtree(out / "previous")
    db = LocalDatabase(folder)
    current: dict[str, tuple[Payload, int, int]] = {}
    order: list[str] = []

    def flush(name: str) -> None:
        payload, first, last = current.pop(name)
        db.add(payload, (cfg.exp, first, cfg.exp, last))

    for run in runs:
        for p in truth_payloads(conditions_for_run(cfg, run)):
            if p.name not in order:
                order.append(p.name)
            prev = current.get(p.name)
            if prev is not None and prev[0].same_content(p) and prev[2] == run.run - 1:
                current[p.name] = (prev[0], prev[1], run.run)
            else:
                if prev is not None:
                    flush(p.name)
                current[p.name] = (p, run.run, run.run)
    for name in order:
        if name in current:
            flush(name)
    if cfg.planted:
        write_previous(folder, out / "previous", planted_channels(cfg.planted))


def _check_beam_step(cfg: SimConfig, runs: list[Run]) -> None:
    """The beam step's run must be a physics run lasting longer than ``beam_step_hours``."""
    if cfg.beam_step_run is None:
        return
    [run] = [r for r in runs if r.run == cfg.beam_step_run]
    hours = run.duration_s / 3600.0
    if run.run_type != "physics" or hours <= cfg.beam_step_hours:
        raise ConfigError(
            f"beam_step_run {run.run} is a {run.run_type} run of {hours:.2f} h: the beam step "
            f"needs a physics run longer than beam_step_hours = {cfg.beam_step_hours}"
        )


def simulate(
    cfg: SimConfig,
    out: str | os.PathLike[str],
    jobs: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Simulate the experiment described by ``cfg`` into ``out``.

    Parameters
    ----------
    cfg
        The configuration (validated).
    out
        Output folder; existing skim files of the same runs are replaced.
    jobs
        Worker processes (default: all cores). The output does not depend on it.
    progress
        Called with the number of runs finished so far.
    """
    cfg.validate()
    outp = Path(out)
    runs = generate_runs(cfg)
    _check_beam_step(cfg, runs)
    if cfg.planted:  # before the events: a planted channel the truth lacks is a config error
        check_planted(
            planted_channels(cfg.planted), truth_payloads(conditions_for_run(cfg, runs[0]))
        )
    outp.mkdir(parents=True, exist_ok=True)
    registry = RunRegistry(runs)
    result = SimulationResult(outp, registry)
    jobs = jobs or os.cpu_count() or 1
    if jobs < 1:
        raise ConfigError("jobs must be at least 1")
    done = 0
    if jobs == 1:
        results = []
        for r in runs:
            results.append(simulate_run(cfg, r, outp))
            done += 1
            if progress:
                progress(done)
    else:
        with ProcessPoolExecutor(  # workers end with this process, even when it is killed
            max_workers=jobs, initializer=exit_with_parent, initargs=(os.getpid(),)
        ) as pool:
            futures = [pool.submit(simulate_run, cfg, r, outp) for r in runs]
            results = []
            for f in futures:
                results.append(f.result())
                done += 1
                if progress:
                    progress(done)
    catalogue = FileCatalogue(outp)
    for run_number, gen, sk, files in results:
        result.generated[run_number] = gen
        result.skim_events[run_number] = sk
        result.files.extend(Path(f) for f in files)
        for written, checksum in files.items():
            catalogue.record(written, checksum)
    _write_truth(cfg, runs, outp)
    registry.save(outp / "runs.json")
    catalogue.save()
    summary = {
        "config": cfg.to_dict(),
        "release": RELEASE,
        "prescales": prescales(cfg),
        "cross_sections_nb": {p: cross_section_nb(p, NOMINAL_ECMS["4S"]) for p in PROCESSES},
        "expected_run_lumi_pb": expected_run_lumi_pb(cfg),
        "intervention_run": cfg.effective_intervention_run,
        "interventions": list(INTERVENTIONS),
        "generated_events": {str(k): v for k, v in result.generated.items()},
        "skim_events": {str(k): v for k, v in result.skim_events.items()},
    }
    (outp / "simulation.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return result
