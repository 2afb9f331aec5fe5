"""Full-size samples of the CDC calibrations (read by bench/bench_calibrations.py).

Tracking: 11 runs of 20k mu-mu + Bhabha events (~220k events, ~20M track hits): ~1400 hits per
wire (T0 to ~0.07 ns per wire, well below the 2 ns hit resolution) and ~180k hits per
(layer, left/right) for the x-t relations (~1 um). dE/dx: 11 runs of 20k Bhabha events
(~440k electron tracks): run gains to ~0.03 %, ~1400 hits per wire (wire gains to ~0.6 %),
~4k tracks per cos(theta) bin. Only the CDC is simulated (the calibrations read nothing else);
the board replacement of run 6 (the default, middle run) splits the T0 payloads.

Starting point (the ``previous`` entry): as in prompt processing, ``cdc-t0`` needs the previous
x-t relation and ``cdc-dedx-run-gain`` uses the previous cosine correction and wire gains from
an input tag. The benchmark imports the sample's ``truth/`` local database as the input tag
``previous`` and passes it with ``input_tags=["previous"]`` (to the dependencies' run too); the
collectors of ``cdc-xt``, ``cdc-dedx-cosine`` and ``cdc-dedx-wire-gain`` are built from the
constants of the staging tag after their dependencies ran.
"""

_NO_OTHER = {"gamma_gamma": 0.0, "hadron": 0.0, "tautau": 0.0}

_TRACKING = {
    "exp": 12,
    "seed": 31,
    "n_runs": 11,
    "events_per_run": 20000,
    "processes": ["mumu", "bhabha"],
    "process_fractions": {"bhabha": 0.5, "mumu": 0.5, **_NO_OTHER},
    "skims": ["hlt_mumu_2trk", "hlt_bhabha"],
    "detectors": ["CDC"],
    "run_types": {"physics": 1.0},
    "continuum_fraction": 0.0,
}

_DEDX = {
    "exp": 12,
    "seed": 32,
    "n_runs": 11,
    "events_per_run": 20000,
    "processes": ["bhabha"],
    "process_fractions": {"bhabha": 1.0, "mumu": 0.0, **_NO_OTHER},
    "skims": ["hlt_bhabha"],
    "detectors": ["CDC"],
    "run_types": {"physics": 1.0},
    "continuum_fraction": 0.0,
}

CASES = {
    "cdc-t0": {"sim": _TRACKING, "config": {}, "runs": "1-11", "previous": "truth"},
    "cdc-xt": {"sim": _TRACKING, "config": {}, "runs": "1-11", "previous": "truth"},
    "cdc-dedx-run-gain": {"sim": _DEDX, "config": {}, "runs": "1-11", "previous": "truth"},
    "cdc-dedx-cosine": {"sim": _DEDX, "config": {}, "runs": "1-11", "previous": "truth"},
    "cdc-dedx-wire-gain": {"sim": _DEDX, "config": {}, "runs": "1-11", "previous": "truth"},
}
