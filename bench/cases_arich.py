"""Full-size sample of the ARICH channel mask (read by bench/bench_calibrations.py).

11 physics runs, ~770k collision events in the calibration's skims (Bhabha, mu-pair, hadron; the
default process mix), only the ARICH simulated (the calibration reads nothing else): ~4.5 signal
hits per channel per run in the outer HAPD ring, so SequentialRunByRun merges runs until the 30
the algorithm asks for (7 runs) and the last 4 into them: one payload over the bucket with ~50
signal hits per channel in the outer ring (measured: every dead and hot channel found, 347 live
channels masked, in the inner rings that only mu-pair and hadron tracks light in the simulation).
"""

_BUCKET = {
    "exp": 12,
    "seed": 23,
    "n_runs": 11,
    "events_per_run": 100000,
    "skims": ["hlt_bhabha", "hlt_mumu_2trk", "hlt_hadron"],
    "detectors": ["ARICH"],
    "run_types": {"physics": 1.0},
    "continuum_fraction": 0.0,
}

CASES = {"arich-channel-mask": {"sim": _BUCKET, "config": {}, "runs": "1-11"}}
