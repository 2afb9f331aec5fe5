"""The seeded simulator of a Belle II-like experiment.

>>> from b2calib.sim import SimConfig, simulate
>>> cfg = SimConfig(exp=12, n_runs=4, events_per_run=500, seed=3)
>>> result = simulate(cfg, "out")  # doctest: +SKIP

It writes cDST-like skim files (one per experiment, run and skim), the run registry and the
true constants (as a basf2 local database of payloads), all deterministic in the seed.

Constants change at documented times: drifts from run to run, hardware interventions at
``intervention_run`` (:data:`INTERVENTIONS`), the beam spot's linear drift inside each run and,
when ``SimConfig.beam_step_run`` is set (off by default), a step of the beams inside that run at
``beam_step_hours`` after its start: the beam-spot position by ``beam_step_um`` (default +8,
+0.5, +150 um in x, y, z) and the collision energy by ``beam_step_ecms_mev`` (default -3 MeV,
through the HER energy, so the boost vector steps by -2.6e-4 in beta_z). The beam truth
(``BeamSpot``, ``CollisionBoostVector``, ``CollisionInvariantMass``) is time-dependent
(:mod:`b2calib.conditions.eventdep`); see :mod:`b2calib.sim.conditions`.

Planted outliers (``SimConfig.planted``, :mod:`b2calib.sim.planted`): channels whose constants
changed between the previous bucket and the simulated one. The data follow the truth; a second
local database, ``previous/``, holds the truth with those channels at their previous values:
the input tag against which a calibration's validation finds them.
"""

from b2calib.sim.conditions import INTERVENTIONS, Conditions, conditions_for_run, truth_payloads
from b2calib.sim.config import PROCESSES, SimConfig
from b2calib.sim.physics import PROCESS_ID
from b2calib.sim.runs import generate_runs
from b2calib.sim.simulate import SimulationResult, prescales, simulate, skim_path

__all__ = [
    "INTERVENTIONS",
    "PROCESSES",
    "PROCESS_ID",
    "Conditions",
    "SimConfig",
    "SimulationResult",
    "conditions_for_run",
    "generate_runs",
    "prescales",
    "simulate",
    "skim_path",
    "truth_payloads",
]
