"""Configuration of the simulated experiment.

Everything has a documented default; a TOML or JSON file may override any field, and the
command line overrides the file. The same configuration and seed always give the same data.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from b2calib.exceptions import ConfigError
from b2calib.geometry import DETECTORS

__all__ = ["PROCESSES", "SimConfig"]

#: Physics processes the simulator generates in collision runs.
PROCESSES = ("bhabha", "gamma_gamma", "mumu", "hadron", "tautau")
#: Compression algorithms of the skim files (:attr:`SimConfig.compression`).
COMPRESSIONS = ("zstd", "lz4", "zlib")
#: The default share of physics runs taken without the PXD.
_PXD_EXCLUDED_FRACTION = 0.1


@dataclass
class SimConfig:
    """Settings of one simulated experiment.

    Attributes
    ----------
    exp, first_run, n_runs
        Experiment number and the run numbers ``first_run .. first_run + n_runs - 1``.
    seed
        Master seed; every run, process and chunk derives its own stream from it.
    events_per_run
        Expected number of generated collision events in a physics run of average luminosity.
        It fixes the documented per-process prescales (see ``process_fractions``).
    process_fractions
        Share of ``events_per_run`` given to each process; the prescale of process ``p`` is
        ``fraction_p * events_per_run / (mean_run_lumi * sigma_p)``.
    processes, skims, detectors
        What to generate, which skim files to write, which detectors' branches to write.
    start_time
        ISO time of the first run start (UTC).
    run_types
        Fractions of physics / cosmic / beam / debug runs (the first run is always physics).
    continuum_fraction, scan_fraction
        Fractions of physics runs taken off-resonance and in an energy scan.
    inst_lumi_1e34, mean_run_hours
        Typical instantaneous luminosity (1e34 cm^-2 s^-1) and physics-run length.
    intervention_run
        Run at which the documented hardware interventions happen (default: the middle run).
    chunk_size
        Events generated and written at a time (memory bound).
    compression, compression_level
        The skim files' compression: ``"zstd"`` (the default), ``"lz4"`` or ``"zlib"``, as
        basf2's RootOutput ``compressionAlgorithm`` chooses it for a file (its default leaves
        it to ROOT, zlib, at level 1; LZ4 is the fast-read choice it names), and the level.
        Anything but zstd is recorded by :meth:`to_dict`. The content is the same whatever
        the choice.
    faults
        Detector faults injected into single runs (:mod:`b2calib.sim.faults`), e.g.
        ``{"run": 7, "detector": "CDC", "kind": "dead_fraction", "value": 0.3}``. Empty by
        default (and then left out of :meth:`to_dict`).
    pxd_occupancy
        Mean beam-background occupancy of the PXD: the fraction of its pixels that fire in an
        event of a collision run (inner layer 1.5 times the outer, uniform within a sensor;
        none in cosmic runs), the background the PXD hot/dead-pixel masks are made from. Real
        PXD occupancies are 0.1-1 %. 0 by default (no background hits: the samples made before
        it existed are unchanged), and then left out of :meth:`to_dict`. Drawn from its own
        random stream: every other branch keeps its values.
    pxd_excluded_fraction
        The fraction of physics runs taken without the PXD (high background): the run
        registry's detectors leave it out and those runs hold no PXD data
        (:func:`b2calib.sim.detector.remove_detectors`). 0.1 by default (and then left out of
        :meth:`to_dict`); 0 for samples that need the PXD in every run (the run list's other
        random draws stay as they are).
    beam_step_run
        The run in which the beams step once during the run (``None``, the default: no step, and
        the ``beam_step_*`` settings are left out of :meth:`to_dict`). It must be a physics run
        longer than ``beam_step_hours``. Within every run the beam spot drifts linearly (see
        :mod:`b2calib.sim.conditions`); the step adds, at one documented time, what the beam
        calibrations must resolve inside a run: the interval splitting of the beam spot, boost
        vector and collision energy is proven on it.
    beam_step_hours
        Time of the step after the run's start (hours, default 2.0).
    beam_step_um
        Step of the beam-spot position (x, y, z) in micrometres, default (+8, +0.5, +150): a
        few times the position resolution of a sub-interval of ~100 dimuon events in x and z
        (the luminous region is ~10 um wide in x, 0.2 um in y and 350 um long in z; a y step of
        0.5 um is not resolved by tracks, as at Belle II, and is there so that y is not
        trivially constant).
    beam_step_ecms_mev
        Step of the collision energy (MeV, default -3.0), made by the HER energy alone (the LER
        energy kept), so that the boost vector steps with it (by ~2.6e-4 in beta_z for -3 MeV).
    planted
        Planted outliers (:mod:`b2calib.sim.planted`): channels whose constants changed between
        the previous bucket and this one, e.g. ``{"payload": "ECLCrystalTimeOffset", "channel":
        1234, "shift": 4.0}``. The data follow the truth; the simulator writes ``previous/``
        beside ``truth/``: the truth with these channels at ``truth - shift``, the constants a
        calibration replaces. Empty by default (no ``previous/``, left out of :meth:`to_dict`);
        the events do not depend on it.
    """

    exp: int = 12
    first_run: int = 1
    n_runs: int = 24
    seed: int = 1
    events_per_run: float = 2000.0
    process_fractions: dict[str, float] = field(
        default_factory=lambda: {
            "bhabha": 0.40,
            "gamma_gamma": 0.10,
            "mumu": 0.25,
            "hadron": 0.18,
            "tautau": 0.07,
        }
    )
    processes: list[str] = field(default_factory=lambda: list(PROCESSES))
    skims: list[str] | None = None
    detectors: list[str] = field(default_factory=lambda: list(DETECTORS))
    start_time: str = "2026-04-01T00:00:00"
    run_types: dict[str, float] = field(
        default_factory=lambda: {"physics": 0.80, "cosmic": 0.08, "beam": 0.06, "debug": 0.06}
    )
    continuum_fraction: float = 0.1
    scan_fraction: float = 0.0
    inst_lumi_1e34: float = 2.5
    mean_run_hours: float = 5.0
    intervention_run: int | None = None
    chunk_size: int = 100_000
    globaltag: str = "b2calib_sim_nominal"
    compression_level: int = 5
    compression: str = "zstd"
    faults: list[dict[str, Any]] = field(default_factory=list)
    pxd_occupancy: float = 0.0
    pxd_excluded_fraction: float = _PXD_EXCLUDED_FRACTION
    beam_step_run: int | None = None
    beam_step_hours: float = 2.0
    beam_step_um: list[float] = field(default_factory=lambda: [8.0, 0.5, 150.0])
    beam_step_ecms_mev: float = -3.0
    planted: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` on any inconsistent setting."""
        if self.n_runs < 1:
            raise ConfigError("n_runs must be at least 1")
        if self.exp < 0 or self.first_run < 0:
            raise ConfigError("exp and first_run must be non-negative")
        if self.events_per_run <= 0:
            raise ConfigError("events_per_run must be positive")
        bad = set(self.processes) - set(PROCESSES)
        if bad:
            raise ConfigError(f"unknown processes {sorted(bad)}; known: {', '.join(PROCESSES)}")
        bad = set(self.detectors) - set(DETECTORS)
        if bad:
            raise ConfigError(f"unknown detectors {sorted(bad)}; known: {', '.join(DETECTORS)}")
        if set(self.process_fractions) != set(PROCESSES) or any(
            v < 0 for v in self.process_fractions.values()
        ):
            raise ConfigError(
                f"process_fractions needs a non-negative value for each of {PROCESSES}"
            )
        if self.skims is not None:
            from b2calib.skims import SKIMS

            bad = set(self.skims) - set(SKIMS)
            if bad:
                raise ConfigError(f"unknown skims {sorted(bad)}; known: {', '.join(SKIMS)}")
        if set(self.run_types) - {"physics", "cosmic", "beam", "debug"}:
            raise ConfigError("run_types keys must be physics, cosmic, beam, debug")
        if abs(sum(self.run_types.values()) - 1) > 1e-6:
            raise ConfigError("run_types fractions must add up to 1")
        if self.intervention_run is not None and not (
            self.first_run <= self.intervention_run < self.first_run + self.n_runs
        ):
            raise ConfigError(
                f"intervention_run {self.intervention_run} is outside the simulated runs "
                f"{self.first_run}..{self.first_run + self.n_runs - 1}"
            )
        if not 0.0 <= self.pxd_occupancy <= 0.05:
            raise ConfigError(
                f"pxd_occupancy must be a fraction of the pixels in [0, 0.05], "
                f"got {self.pxd_occupancy}"
            )
        if not 0.0 <= self.pxd_excluded_fraction <= 1.0:
            raise ConfigError(
                f"pxd_excluded_fraction must be in [0, 1], got {self.pxd_excluded_fraction}"
            )
        if self.beam_step_run is not None and not (
            self.first_run <= self.beam_step_run <= self.last_run
        ):
            raise ConfigError(
                f"beam_step_run {self.beam_step_run} is outside the simulated runs "
                f"{self.first_run}..{self.last_run}"
            )
        if not self.beam_step_hours > 0:
            raise ConfigError(f"beam_step_hours must be positive, got {self.beam_step_hours}")
        if len(self.beam_step_um) != 3 or not all(abs(v) < 1e4 for v in self.beam_step_um):
            raise ConfigError(
                f"beam_step_um must be three steps (x, y, z) of less than 1 cm, got "
                f"{self.beam_step_um}"
            )
        if not abs(self.beam_step_ecms_mev) <= 100.0:
            raise ConfigError(
                f"beam_step_ecms_mev must be within +-100 MeV, got {self.beam_step_ecms_mev}"
            )
        if self.chunk_size < 1000:
            raise ConfigError("chunk_size must be at least 1000")
        if self.compression not in COMPRESSIONS:
            raise ConfigError(
                f"compression must be one of {sorted(COMPRESSIONS)}, got {self.compression!r}"
            )
        if self.faults:
            from b2calib.sim.faults import validate_faults

            validate_faults(self.faults, self.first_run, self.last_run)
        if self.planted:
            from b2calib.sim.planted import planted_channels

            planted_channels(self.planted)

    @property
    def start_timestamp(self) -> float:
        """UNIX time of ``start_time`` (read as UTC)."""
        from datetime import UTC, datetime

        return datetime.fromisoformat(self.start_time).replace(tzinfo=UTC).timestamp()

    @property
    def last_run(self) -> int:
        """Last simulated run number."""
        return self.first_run + self.n_runs - 1

    @property
    def effective_intervention_run(self) -> int:
        """The run at which the hardware interventions take effect."""
        if self.intervention_run is not None:
            return self.intervention_run
        return self.first_run + self.n_runs // 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (what files and the truth record); ``faults``, ``planted``,
        ``pxd_occupancy``, ``compression`` and the ``beam_step_*`` settings only when set,
        ``pxd_excluded_fraction`` only when not the default."""
        d = asdict(self)
        if self.beam_step_run is None:
            for k in ("beam_step_run", "beam_step_hours", "beam_step_um", "beam_step_ecms_mev"):
                del d[k]
        if self.compression == "zstd":
            del d["compression"]
        if not self.faults:
            del d["faults"]
        if not self.planted:
            del d["planted"]
        if not self.pxd_occupancy:
            del d["pxd_occupancy"]
        if self.pxd_excluded_fraction == _PXD_EXCLUDED_FRACTION:
            del d["pxd_excluded_fraction"]
        return d

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> SimConfig:
        """Load from a TOML (``.toml``) or JSON file; keyword arguments override the file."""
        p = Path(path)
        try:
            raw = p.read_bytes()
            data = tomllib.loads(raw.decode()) if p.suffix == ".toml" else json.loads(raw)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{p}: cannot read simulation config ({err})") from err
        data = data.get("simulation", data)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{p}: unknown setting(s) {sorted(unknown)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)
