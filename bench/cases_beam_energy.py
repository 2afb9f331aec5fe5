"""Full-size samples of the boost-vector and collision-energy calibrations (read by
bench/bench_calibrations.py).

One dimuon sample serves both: 8 physics runs (4S and off-resonance, seed 17: 4S, 4S,
off-resonance, 4S ...) of ~50k mu-mu events, ~300k tight pairs in ~45 h: a few days of Belle
II's tight dimuons at the luminosity the simulator assumes, with the documented beam step 2 h
into run 2 (-3 MeV by the HER energy, the boost steps with it). Only the tracking detectors
the selection reads (CDC, SVD) are simulated. Neither reads the payloads of the calibration it
runs after (``beamspot`` before ``boostvector`` before ``ecms`` is the prompt order only,
``after``): those are not run.
"""

_DIMUONS = {
    "exp": 5,
    "seed": 17,
    "n_runs": 8,
    "events_per_run": 50000,
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
    "continuum_fraction": 0.3,
    "beam_step_run": 2,
}

CASES = {
    "boostvector": {"sim": _DIMUONS, "config": {}, "runs": "1-8"},
    "ecms": {"sim": _DIMUONS, "config": {}, "runs": "1-8"},
}
