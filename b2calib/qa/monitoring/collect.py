"""Monitoring of runs: the collectors over a dataset, then each run's numbers from its
histograms.

:func:`collect_qa` runs the collector of every skim the monitoring reads
(:func:`~b2calib.qa.monitoring.collectors.qa_skims`) over a folder of skims or a
:class:`~b2calib.engine.Dataset` on the engine (:func:`b2calib.engine.collect`, in process, in a
process pool or on Dask), histograms per run mergeable with ``+``;
:func:`run_qa_from_outputs` turns one run's histograms into a :class:`RunQA`: every registered
part computes its variables from them, never from arrays kept in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import hist
import uproot

from b2calib.engine import Dataset, SkippedFile, collect
from b2calib.engine.loop import DEFAULT_MAX_NONFINITE
from b2calib.exceptions import ConfigError, FileFormatError, QAError
from b2calib.geometry import DETECTORS
from b2calib.io import METADATA_KEY, FileMetadata
from b2calib.qa.monitoring.collectors import collector_for, qa_skims
from b2calib.qa.monitoring.definitions import RunQA
from b2calib.qa.monitoring.parts import Histograms, RunHistograms
from b2calib.qa.monitoring.registry import VARIABLES, qa_parts
from b2calib.runs import RunRegistry

__all__ = ["collect_qa", "run_qa_from_outputs"]

log = logging.getLogger(__name__)

RunKey = tuple[int, int]


def run_qa_from_outputs(
    exp: int,
    run: int,
    outputs: Mapping[str, Mapping[str, hist.Hist]],
    *,
    ecms_nominal_gev: float | None = None,
    prescales: Mapping[str, float] | None = None,
    skipped: Sequence[SkippedFile] = (),
    detectors: Sequence[str] | None = None,
    recorded_lumi_pb: float | None = None,
) -> RunQA:
    """Monitoring variables and QA histograms of one run from its collectors' histograms.

    Parameters
    ----------
    outputs
        Histograms per skim (``hlt_mumu_2trk``, ``hlt_bhabha``, ``hlt_gamma_gamma``,
        ``hlt_hadron``, ``cosmic``),
        as the collectors of this package fill them; missing skims give no variables.
    ecms_nominal_gev
        The run's nominal collision energy (the pull's reference, the mass-fit window and the
        energy of the luminosity's visible cross sections; None: no luminosity).
    prescales
        Per process (``hadron``, ``bhabha``, ...), from the files' metadata; None or missing: 1.
    detectors
        The detectors the run included (the run registry's); None: every detector. A part of
        another detector, or one that reads another detector's data
        (:attr:`QAPart.requires`), gives no value and no QA histogram, whatever the outputs
        hold: a detector the run did not include has no value.
    recorded_lumi_pb
        The luminosity the run registry recorded for the run (pb^-1): what the measured
        luminosities are compared with (``bhabha.lumi_recorded_ratio``, ...); None: unknown,
        no such ratio.

    Every registered part computes its variables (:meth:`QAPart.compute`), in listing order; the
    QA histograms are those the parts declare, as their skims' outputs hold them.
    """
    histograms = RunHistograms(
        exp, run, outputs, ecms_nominal_gev, prescales or {}, recorded_lumi_pb=recorded_lumi_pb
    )
    parts = qa_parts()
    if detectors is not None:
        unknown = sorted(set(detectors) - set(DETECTORS))
        if unknown:
            raise ConfigError(
                f"run ({exp}, {run}): unknown detectors {unknown}; known: {', '.join(DETECTORS)}"
            )
        included = set(detectors)
        parts = [
            p
            for p in parts
            if (p.detector not in DETECTORS or p.detector in included)
            and set(p.requires) <= included
        ]
    values = [v for part in parts for v in part.compute(histograms)]
    hists: dict[tuple[str, str], hist.Hist] = {}
    for d in (d for part in parts for d in part.histograms):
        h = histograms.get(d.skim, d.output_name)
        if h is not None:
            hists[(d.detector, d.name)] = h
    order = {name: i for i, name in enumerate(VARIABLES)}
    values.sort(key=lambda v: order[v.name])
    return RunQA(exp, run, values, dict(sorted(hists.items())), list(skipped), histograms.notes)


def collect_qa(
    data: str | os.PathLike[str] | Dataset,
    *,
    exp: int | None = None,
    runs: Sequence[int] | range | None = None,
    registry: RunRegistry | None = None,
    executor: str | Any | None = None,
    workers: int | None = None,
    cache: bool | str | os.PathLike[str] = False,
    on_error: Literal["skip", "stop"] | None = None,
    progress: bool = False,
    verify: bool = True,
    max_nonfinite: float = DEFAULT_MAX_NONFINITE,
) -> list[RunQA]:
    """Monitoring variables and QA histograms of every run with data.

    Parameters
    ----------
    data
        A folder of skims as the simulator writes them (with ``runs.json``) or a
        :class:`~b2calib.engine.Dataset` (``registry`` then gives the runs' nominal energies).
    exp, runs
        Only these runs.
    executor, workers, cache
        As :func:`b2calib.engine.collect` (the same results under every executor); None is
        ``"inprocess"``. ``cache`` is off by default.
    on_error
        The bad-file policy of :func:`b2calib.engine.collect` (its ``on_bad_file``): ``None``
        (the default) leaves out unreadable and corrupt files and stops on inconsistent data
        (duplicate events, a path that names another run than the metadata, a run the registry
        does not list or lists twice, too many NaN or Inf values); ``"skip"`` leaves out every
        bad file; ``"stop"`` raises the first bad file's
        :class:`~b2calib.exceptions.FileFormatError`, which names the file. Files left out are
        listed in their run's :attr:`RunQA.skipped` (files that cannot be attributed to a run
        are logged).
    verify, max_nonfinite
        As :func:`b2calib.engine.collect`: compare each file with its catalogue entry before
        reading it; the fraction of NaN or Inf values a run's branch may hold.

    Runs without any file of the skims the monitoring reads (:func:`qa_skims`) are left out;
    cosmic runs have occupancies only.
    """
    if on_error not in (None, "skip", "stop"):
        raise ConfigError(f"on_error must be 'skip' or 'stop' (or None), not {on_error!r}")
    if isinstance(data, Dataset):
        ds = data
        files = [f for f in ds if (exp is None or f.exp == exp)]
        if runs is not None:
            files = [f for f in files if f.run in set(runs)]
        ds = Dataset(files, list(ds.problems))
    else:
        folder = Path(data)
        if registry is None:
            if not (folder / "runs.json").exists():
                raise QAError(f"{folder}: no runs.json; pass registry= or a Dataset")
            registry = RunRegistry.load(folder / "runs.json")
        ds = Dataset.select(folder, registry=registry, exp=exp, runs=runs)
    per_run: dict[RunKey, dict[str, Histograms]] = {}
    skipped: dict[RunKey, list[SkippedFile]] = {}
    for p in ds.problems:
        if on_error == "stop" or (on_error is None and p.inconsistent):
            raise p.error()
        if p.run is not None:
            skipped.setdefault(p.run, []).append(p)
        else:
            log.warning("QA: file left out (%s): %s", p.reason, p.message)
    prescales: dict[RunKey, dict[str, float]] = {}
    by_path = {f.path: (f.exp, f.run) for f in ds}
    run_detectors: dict[RunKey, tuple[str, ...]] = {}
    for skim in qa_skims():
        files = [f for f in ds if f.skim == skim]
        if not files:
            continue
        groups, bad = _detector_groups(files, prescales, registry)
        for s in bad:
            if on_error == "stop":
                raise FileFormatError(s.path, s.reason, s.message)
            skipped.setdefault(by_path[s.path], []).append(s)
        # one collector per set of detectors: a run without a detector leaves it out of the
        # collector of its files only
        for dets, good in groups.items():
            for f in good:
                key = (f.exp, f.run)
                run_detectors[key] = tuple(d for d in run_detectors.get(key, dets) if d in dets)
            result = collect(
                collector_for(skim, dets),
                Dataset(good),
                executor="inprocess" if executor is None else executor,
                workers=workers,
                on_bad_file=on_error,
                cache=cache,
                progress=progress,
                verify=verify,
                max_nonfinite=max_nonfinite,
            )
            for s in result.skipped:
                skipped.setdefault(by_path[s.path], []).append(s)
            for key in result.output:
                per_run.setdefault(key, {})[skim] = result.output[key]
    out = []
    for key in sorted(set(per_run) | set(skipped)):
        nominal = recorded = None
        included: tuple[str, ...] | None = run_detectors.get(key)
        if registry is not None and key in registry:
            entry = registry.get(*key)
            nominal = entry.ecms_nominal_gev or None
            recorded = entry.lumi_pb
            included = tuple(d for d in (included or DETECTORS) if d in entry.detectors)
        out.append(
            run_qa_from_outputs(
                key[0],
                key[1],
                per_run.get(key, {}),
                ecms_nominal_gev=nominal,
                prescales=prescales.get(key),
                skipped=sorted(skipped.get(key, []), key=lambda s: s.path),
                detectors=included,
                recorded_lumi_pb=recorded,
            )
        )
    return out


def _metadata(path: str) -> FileMetadata:
    """A file's ``FileMetaData`` alone (the event tree's description is not parsed: the
    dataset has already checked the file)."""
    try:
        with uproot.open(path) as f:
            text = str(f[METADATA_KEY])
    except Exception as err:  # uproot raises many types for damaged files
        raise FileFormatError(path, "unreadable", f"cannot read {METADATA_KEY} ({err})") from err
    return FileMetadata.from_json(text, path)


def _detector_groups(
    files: Sequence[Any],
    prescales: dict[RunKey, dict[str, float]],
    registry: RunRegistry | None,
) -> tuple[dict[tuple[str, ...], list[Any]], list[SkippedFile]]:
    """The readable files grouped by the detectors their runs have (those of the metadata, of
    every file of the run, and of the run registry's entry when it lists the run), each run's
    prescales, and the files whose metadata cannot be read."""
    per_run: dict[RunKey, set[str]] = {}
    good, bad = [], []
    for f in files:
        try:
            meta = _metadata(f.path)
        except FileFormatError as err:
            bad.append(SkippedFile(f.path, err.reason, str(err)))
            continue
        key = (f.exp, f.run)
        dets = per_run.setdefault(key, set(DETECTORS))
        dets &= set(meta.extra.get("detectors", DETECTORS))
        if registry is not None and key in registry:
            dets &= set(registry.get(*key).detectors)
        ps = meta.extra.get("prescales")
        if isinstance(ps, dict):
            prescales.setdefault(key, {}).update({k: float(v) for k, v in ps.items()})
        good.append(f)
    groups: dict[tuple[str, ...], list[Any]] = {}
    for f in good:
        have = per_run[(f.exp, f.run)]
        groups.setdefault(tuple(d for d in DETECTORS if d in have), []).append(f)
    return groups, bad


def __dir__() -> list[str]:
    return __all__
