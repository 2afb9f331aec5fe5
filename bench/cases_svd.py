"""Full-size samples of the SVD calibrations (read by bench/bench_calibrations.py).

One hadron sample serves both: 11 runs of 40k generated hadron events (~17k hadron-skim events a
run, ~190k in all): ~50k clusters on tracks per layer-3 sensor side for each of the two cluster
time payloads (the intervention at run 6 moves every raw time by +4 ns: a new payload there;
basf2 asks 10 000), and ~17k events a run for the hot strips run by run (~20 hits per strip of a
layer-3 sensor side from the tracks: the relative cut judges every side). Only the SVD is
simulated (the calibrations read nothing else).
"""

_HADRON = {
    "exp": 12,
    "seed": 23,
    "n_runs": 11,
    "events_per_run": 40000,
    "processes": ["hadron"],
    "process_fractions": {
        "bhabha": 0.0,
        "gamma_gamma": 0.0,
        "mumu": 0.0,
        "hadron": 1.0,
        "tautau": 0.0,
    },
    "skims": ["hlt_hadron"],
    "detectors": ["SVD"],
    "run_types": {"physics": 1.0},
    "continuum_fraction": 0.0,
}

CASES = {
    "svd-hot-strips": {"sim": _HADRON, "config": {}, "runs": "1-11"},
    "svd-time": {"sim": _HADRON, "config": {}, "runs": "1-11"},
}
