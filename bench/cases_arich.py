"""Full-size sample of the ARICH channel mask (read by bench/bench_calibrations.py).

11 physics runs, ~770k collision events in the calibration's skims (Bhabha, mu-pair, hadron; the
default process mix), only the ARICH simulated (the calibration reads nothing else): ~4.5 signal
hits per channel per run in the outer HAPD ring, so SequentialRunByRun merges runs until the 30
the algorithm asks for (7 runs) and the last 4 into them: one payload over the bucket with ~50
signal hits per channel in the outer ring. The inner rings, which only mu-pair and hadron tracks
light in the simulation, average 21.5 (ring 0), 30.5, 32, 36, 51, 66 signal hits per channel:
ring 0 is starved (< 30), its 6048 channels NOT_ENOUGH_DATA (its 78 dead ones too). Measured: all
9 hot and the 827 dead channels of rings 1-6 found, no false hot, 140 live channels masked (347
before the starved-ring rule), in rings 1-4 and 6: at 30-50 signal hits per channel the 0.3 x
ring-average cut is 2-4 standard deviations from a live channel's signal, and the simulated
illumination varies by up to 2x between the HAPDs of a ring (ring 4: 30 to 73 per channel).
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
