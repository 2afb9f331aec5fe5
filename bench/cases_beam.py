"""Full-size samples of the beam calibrations (read by bench/bench_calibrations.py).

The beam spot: 12 physics runs of ~40k generated mu-mu events (~29k selected dimuons per run,
~350k in all; a Belle II bucket of ~10 fb^-1 holds a few hundred thousand tight dimuons after the
skim's prescale), ~5 h each, the beams stepping 2 h into run 6. Only the CDC and SVD are
simulated (the selection reads the tracks' hit counts). The calibrations the beam spot runs
after (ordering only: it reads none of their payloads) are not run.
"""

_MUMU = {
    "exp": 12,
    "seed": 41,
    "n_runs": 12,
    "events_per_run": 40000,
    "processes": ["mumu"],
    "process_fractions": {
        "bhabha": 0.0,
        "gamma_gamma": 0.0,
        "mumu": 1.0,
        "hadron": 0.0,
        "tautau": 0.0,
    },
    "skims": ["hlt_mumu_2trk"],
    "detectors": ["CDC", "SVD"],
    "run_types": {"physics": 1.0},
    "continuum_fraction": 0.0,
    "beam_step_run": 6,
    "beam_step_hours": 2.0,
}

CASES = {
    "beamspot": {"sim": _MUMU, "config": {}, "runs": "1-12"},
}
