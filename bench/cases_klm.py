"""Full-size samples of the KLM calibrations (read by bench/bench_calibrations.py).

One mu-mu sample serves both: 11 runs of ~19.5k dimuon events (~215k events). Per run every strip
plane gets ~1000 or more selected crossings (efficiency errors ~0.01, below the 0.02 requested):
each run its own KLMStripEfficiency payload, the high-voltage trip of BKLM forward sector 3
layer 8 at run 6 in payloads of its own. For the time calibration SequentialRunByRun merges about
two runs per payload (until a quarter of the strips have 50 digit times): 6 payloads with 46-70 %
of the strips calibrated, the propagation delays to ~0.1 %. Only the KLM is simulated (the
calibrations read its digits, the ExtHits, the track fits and the event T0). The runs are read as
certified GOOD (the strip efficiency reads "Good Or Recoverable" runs).
"""

_MUMU = {
    "exp": 12,
    "seed": 31,
    "n_runs": 11,
    "events_per_run": 20000,
    "processes": ["mumu"],
    "process_fractions": {
        "bhabha": 0.0,
        "gamma_gamma": 0.0,
        "mumu": 1.0,
        "hadron": 0.0,
        "tautau": 0.0,
    },
    "skims": ["hlt_mumu_2trk"],
    "detectors": ["KLM"],
    "run_types": {"physics": 1.0},
    "continuum_fraction": 0.0,
}

CASES = {
    "klm-strip-efficiency": {"sim": _MUMU, "config": {}, "runs": "1-11", "certified": True},
    "klm-time": {"sim": _MUMU, "config": {}, "runs": "1-11"},
}
