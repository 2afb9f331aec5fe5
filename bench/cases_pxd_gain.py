"""Full-size sample of the PXD gain calibration (read by bench/bench_calibrations.py).

11 runs of 70k Bhabha events (~770k events, ~2.3M track clusters): above what basf2's prompt
calibration asks of a sample at its defaults (safety factor 11 x 200 clusters x 960 bins =
2.1M clusters), ~4000 clusters per bin the Bhabha tracks reach (~0.6 % per bin). A real bucket
has more Bhabha events; the time grows with them linearly (the collector is vectorised, the
algorithm works on 960 histograms). Only the PXD is simulated (the calibration reads nothing
else).
"""

_BHABHA = {
    "exp": 12,
    "seed": 31,
    "n_runs": 11,
    "events_per_run": 70000,
    "processes": ["bhabha"],
    "process_fractions": {
        "bhabha": 1.0,
        "gamma_gamma": 0.0,
        "mumu": 0.0,
        "hadron": 0.0,
        "tautau": 0.0,
    },
    "skims": ["hlt_bhabha"],
    "detectors": ["PXD"],
    "run_types": {"physics": 1.0},
    "continuum_fraction": 0.0,
}

CASES = {
    "pxd-gain": {"sim": _BHABHA, "config": {}, "runs": "1-11"},
}
