"""Full-size samples of the TOP calibrations (read by bench/bench_calibrations.py).

One mu-mu sample serves all four: 11 runs of ~40k mu-mu events (~440k events, ~22M matched
photons): ~2700 photons per channel for the channel T0 (~5 ps per channel), ~60 hits per channel
per run for the masks, ~3k events per slot pair for the module T0 (~2 ps) and ~2M photons per
run for the common T0 (<1 ps per run), i.e. the precision Belle II asks of TOP timing (well below
the 80 ps transit-time spread). Only TOP is simulated (the calibrations read nothing else).
"""

_MUMU = {
    "exp": 12,
    "seed": 21,
    "n_runs": 11,
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
    "detectors": ["TOP"],
    "run_types": {"physics": 1.0},
    "continuum_fraction": 0.0,
    # the module-5 step at run 6 (the default, middle run): channel T0 and module T0 payloads
    # split there, the common T0 follows it run by run
}

CASES = {
    "top-channel-mask": {"sim": _MUMU, "config": {}, "runs": "1-11"},
    "top-channel-t0": {"sim": _MUMU, "config": {}, "runs": "1-11"},
    "top-module-t0": {"sim": _MUMU, "config": {}, "runs": "1-11"},
    "top-common-t0": {"sim": _MUMU, "config": {}, "runs": "1-11"},
}
