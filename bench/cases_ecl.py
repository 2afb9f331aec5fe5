"""Full-size samples of the ECL calibrations (read by bench/bench_calibrations.py).

Energy: 11 Upsilon(4S) runs of 400k events (40 % Bhabha, 30 % gamma-gamma, 30 % mu-mu; ~4.4M
events, ~75 s to simulate on 2 cores with only the ECL). Per barrel crystal that is ~150 Bhabha
electrons as the central crystal (5x5 constants to ~0.15 %) and, over most of the calorimeter,
the >= 150 photons and muons per crystal that the basf2 peak fits require. Time: 11 runs of
200k Bhabha events (~3.5M electrons, ~150 per barrel crystal: offsets to ~0.1 ns). Only the
ECL is simulated (the calibrations read nothing else); the crate 17 replacement of run 6 (the
default, middle run) splits both payloads. No previous payload is needed: the energy
collectors start from nominal constants, the time collector from zero offsets.
"""

_NO_OTHER = {"hadron": 0.0, "tautau": 0.0}
_COMMON = {
    "exp": 12,
    "n_runs": 11,
    "detectors": ["ECL"],
    "run_types": {"physics": 1.0},
    "continuum_fraction": 0.0,
}

_ENERGY = {
    **_COMMON,
    "seed": 41,
    "events_per_run": 400000,
    "processes": ["bhabha", "gamma_gamma", "mumu"],
    "process_fractions": {"bhabha": 0.4, "gamma_gamma": 0.3, "mumu": 0.3, **_NO_OTHER},
    "skims": ["hlt_bhabha", "hlt_gamma_gamma", "hlt_mumu_2trk"],
}

_TIME = {
    **_COMMON,
    "seed": 42,
    "events_per_run": 200000,
    "processes": ["bhabha"],
    "process_fractions": {"bhabha": 1.0, "gamma_gamma": 0.0, "mumu": 0.0, **_NO_OTHER},
    "skims": ["hlt_bhabha"],
}

CASES = {
    "ecl-energy": {"sim": _ENERGY, "config": {}, "runs": "1-11"},
    "ecl-time": {"sim": _TIME, "config": {}, "runs": "1-11"},
}

# Realistic luminosity for the peak methods (bench/bench_ecl_realistic.py; issue 14). The
# gamma-gamma and mu-mu statistics of a bucket are set by its luminosity: at a real bucket's
# skim fractions (Bhabha ~90 %, gamma-gamma and mu-mu 5 % each) the mu-mu skim is unprescaled
# and the gamma-gamma one kept at 34 % (the same 5 % of the events). Here they are exactly that
# (mu-mu prescale 1, gamma-gamma 0.34) over 5 runs, 1.9-2.7 fb^-1 (the run lengths vary); the
# Bhabha skim, 18 times either in a real bucket (24M events here, ~1.5 h to simulate on this
# machine), is prescaled to as many events as each (~1.3M, ~110 electrons per barrel crystal):
# its 5x5 constants are ~4 times less precise than a real bucket's, which only raises the
# peaks' weight in the merge. The interventions from run 1 on, so that all runs share one
# payload.
_PEAK_LUMI = {
    **_COMMON,
    "n_runs": 5,
    "intervention_run": 1,
    "events_per_run": 764_900,
    "processes": ["bhabha", "gamma_gamma", "mumu"],
    "process_fractions": {"bhabha": 1 / 3, "gamma_gamma": 1 / 3, "mumu": 1 / 3, **_NO_OTHER},
    "skims": ["hlt_bhabha", "hlt_gamma_gamma", "hlt_mumu_2trk"],
}

#: ecl-energy with a bucket's peak statistics, one sample per seed (not a timing case: read by
#: bench/bench_ecl_realistic.py only).
REALISTIC_ENERGY = [{**_PEAK_LUMI, "seed": s} for s in (61, 62, 63)]
