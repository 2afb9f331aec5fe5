"""The visible cross sections of the luminosity selections, measured on simulated events.

The luminosity of the QA (:func:`b2calib.qa.monitoring.lumi_from_count`) divides the events a
selection of :data:`b2calib.skims.LUMI_SELECTIONS` counted by the visible cross sections
(cross section x selection efficiency) of the processes that pass it. They are not taken from
a run's simulation truth: :func:`measure_visible_cross_sections` measures them once on an
independent simulated sample, and the QA reads only the committed result
(:data:`b2calib.qa.monitoring.VISIBLE_CROSS_SECTIONS_NB`). Regenerate it with::

    python -m b2calib.sim.luminosity

(the default sample of seed :data:`VISIBLE_CROSS_SECTION_SEED` at the Y(4S) energy, ~1 minute),
which prints the table in the committed layout, each value and its error rounded to the error's
second significant digit.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from b2calib.exceptions import ConfigError
from b2calib.geometry import top
from b2calib.physics import Y4S_ECMS_GEV, cross_section_nb
from b2calib.sim.conditions import conditions_for_run
from b2calib.sim.config import SimConfig
from b2calib.sim.detector import simulate_response
from b2calib.sim.physics import PROCESS_ID, Beam, generate
from b2calib.sim.runs import generate_runs
from b2calib.sim.trigger import trigger_variables
from b2calib.skims import LUMI_SELECTIONS, SKIMS, Cut

__all__ = ["VISIBLE_CROSS_SECTION_SEED", "main", "measure_visible_cross_sections"]

#: Seed of the simulated sample the committed visible cross sections were measured on.
VISIBLE_CROSS_SECTION_SEED = 20190


def _lumi_mask(method: str, trig: Mapping[str, npt.ArrayLike]) -> npt.NDArray[np.bool_]:
    skim, cut = LUMI_SELECTIONS[method]
    return SKIMS[skim].select(trig) & Cut(cut)(trig)


def measure_visible_cross_sections(
    n_events: Mapping[str, int] | None = None,
    *,
    seed: int = VISIBLE_CROSS_SECTION_SEED,
    ecms_gev: float = Y4S_ECMS_GEV,
    chunk: int = 50_000,
) -> dict[str, dict[str, tuple[float, float]]]:
    """Measure the visible cross sections of the luminosity selections on a simulated sample.

    The "MC" sample is independent of any data run: the detector conditions are those of run 1
    of a one-run experiment 0 simulated with ``seed``; the events of each process are
    generated at the nominal energy ``ecms_gev`` (with the simulator's beam-energy spread),
    passed through the track reconstruction, the ECL response (the software trigger reads
    nothing else, so the other detectors are not simulated) and the software trigger (with the
    nominal beam energy, as the HLT does) and counted with :data:`LUMI_SELECTIONS`. The
    simulation truth used is that of this sample alone (which process each event is).

    Parameters
    ----------
    n_events
        Events to simulate per process (default: bhabha 1M, gamma_gamma 500k, tautau 400k,
        mumu 100k, hadron 100k). Processes left out are not measured.
    seed
        Seed of the conditions and of the events.
    ecms_gev
        Nominal collision energy.
    chunk
        Events simulated at once (memory).

    Returns
    -------
    dict
        ``{method: {process: (sigma_vis_nb, error_nb)}}`` with ``sigma_vis = sigma(ecms) k / n``
        (``k`` of ``n`` events selected) and the binomial error ``sigma sqrt(k (n - k) / n) / n``;
        processes with ``k = 0`` are left out.
    """
    sizes = dict(
        n_events
        if n_events is not None
        else {
            "bhabha": 1_000_000,
            "gamma_gamma": 500_000,
            "tautau": 400_000,
            "mumu": 100_000,
            "hadron": 100_000,
        }
    )
    cfg = SimConfig(
        exp=0,
        n_runs=1,
        seed=seed,
        run_types={"physics": 1.0, "cosmic": 0.0, "beam": 0.0, "debug": 0.0},
        continuum_fraction=0.0,
    )
    (run,) = generate_runs(cfg)
    cond = conditions_for_run(cfg, run)
    beam, nominal = Beam(ecms_gev, cond.ecms_spread), Beam(ecms_gev, 0.0)
    out: dict[str, dict[str, tuple[float, float]]] = {m: {} for m in LUMI_SELECTIONS}
    for process, n in sizes.items():
        if n < 1:
            raise ConfigError(f"n_events[{process!r}] must be at least 1, not {n}")
        rng = np.random.default_rng(np.random.SeedSequence([seed, PROCESS_ID[process]]))
        k = dict.fromkeys(LUMI_SELECTIONS, 0)
        for first in range(0, n, chunk):
            m = min(chunk, n - first)
            parts = generate(
                rng, process, m, beam, np.tile(cond.beamspot, (m, 1)), cond.beamspot_size
            )
            t_coll = (rng.integers(-8, 9, m) * top.RF_PERIOD_NS).astype(np.float64)
            # the trigger reads the tracks and the ECL clusters (always simulated) only
            resp = simulate_response(rng, parts, m, t_coll, cond, True, ("ECL",))
            trig = trigger_variables(
                resp.collections["TrackFitResults"], resp.collections["ECLClusters"], m, nominal
            )
            for method in LUMI_SELECTIONS:
                k[method] += int(_lumi_mask(method, trig).sum())
        sigma = cross_section_nb(process, ecms_gev)
        for method, kk in k.items():
            if kk:
                out[method][process] = (sigma * kk / n, sigma * math.sqrt(kk * (n - kk) / n) / n)
    return out


def _rounded(value: float, error: float) -> tuple[float, float]:
    """The error to two significant digits and the value to the same decimal place."""
    if error <= 0:
        return value, error
    digits = 1 - math.floor(math.log10(error))
    return round(value, digits), round(error, digits)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m b2calib.sim.luminosity [--events PROCESS=N ...] [--seed S] [--ecms E]``:
    measure the visible cross sections and print them in the layout of
    :data:`b2calib.qa.monitoring.VISIBLE_CROSS_SECTIONS_NB`."""
    parser = argparse.ArgumentParser(
        prog="python -m b2calib.sim.luminosity", description=main.__doc__
    )
    parser.add_argument(
        "--events",
        action="append",
        metavar="PROCESS=N",
        help="events of a process (repeat; default: the committed sample sizes)",
    )
    parser.add_argument("--seed", type=int, default=VISIBLE_CROSS_SECTION_SEED)
    parser.add_argument("--ecms", type=float, default=Y4S_ECMS_GEV, help="collision energy, GeV")
    args = parser.parse_args(argv)
    sizes = None
    if args.events:
        try:
            sizes = {p: int(n) for p, _, n in (e.partition("=") for e in args.events)}
        except ValueError:
            parser.error(f"--events takes PROCESS=N, got {args.events}")
    table = measure_visible_cross_sections(sizes, seed=args.seed, ecms_gev=args.ecms)
    print(f"# seed {args.seed}, collision energy {args.ecms} GeV")
    print("{")
    for method, processes in table.items():
        inner = ", ".join(f"{p!r}: {_rounded(*v)!r}" for p, v in processes.items())
        print(f"    {method!r}: {{{inner}}},")
    print("}")


def __dir__() -> list[str]:
    return __all__


if __name__ == "__main__":
    main()
