"""Running calibrations: collect, execute algorithms by IoV strategy, iterate, stage payloads.

:func:`run_calibrations` runs calibrations in dependency order over the skims of a data folder.
For each one:

1. its input runs are selected by its filters; a job key is computed from everything that
   determines the result (calibration, b2calib version, expert config, runs, files with size and
   modification time, input tags, staging tag, the jobs of its dependencies). A job that already
   completed is not run again: a re-run with the same inputs changes nothing.
2. its collectors run on the engine (the engine's cache keeps their output, so an interrupted job
   does not read the files again); the constants they and the algorithms see are the previous
   iteration's payloads, then the staging tag (where the dependencies' payloads are), then the
   input tags.
3. each algorithm is executed as its IoV strategy asks; every execution is checkpointed in the
   database with its payloads and diagnostics, and an execution already recorded is reused.
   The files of an execution's payloads and diagnostics are written on a second thread while
   the next execution runs, and it is recorded once they are (an error in a later execution
   still records it; a killed process can lose the last two executions, run again on resume).
   Executions shorter than a second are recorded two or more to a transaction (each commit
   waits for the disk), within the same bound.
4. while an algorithm says ITERATE, collection and execution repeat (up to ``max_iterations``);
   an input whose collector is built the same again (it applies none of the constants that
   moved) keeps the histograms of the previous pass instead of reading its files again.
5. unless an execution said FAILURE, the payloads are staged in the staging tag and the job is
   marked completed, in one transaction. For a FAILURE nothing is staged.

Runs without usable data
    The input runs are those of the run registry that pass the calibration's filters, whether
    or not their files could be read. A run whose files were all skipped (unreadable, missing
    or mistyped branches), hold no events, or are absent has no collector output: the
    algorithms never see it (every run of an :class:`AlgorithmInput` has output), and an
    execution none of whose runs has output is NOT_ENOUGH_DATA without running the algorithm
    (no payload is made of nothing). The IoV strategy treats it as any run lacking data: merged
    with its neighbours, or without payload (SimpleRunByRun). The report and the job summary
    list each such run and why (:attr:`CalibrationReport.runs_without_data`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import hist
import numpy as np

from b2calib._version import __version__
from b2calib.calibration.algorithm import (
    Algorithm,
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
)
from b2calib.calibration.constants import Constants
from b2calib.calibration.declaration import Calibration, dependency_order, get_calibration
from b2calib.calibration.declaration import calibrations as registered_calibrations
from b2calib.calibration.jobs import Job, JobStore, StepRecord
from b2calib.calibration.strategies import Execution
from b2calib.calibration.validation import channel_counts, no_ok_channel
from b2calib.conditions.database import ConditionsDB, IovEntry, PayloadFile
from b2calib.conditions.iov import IoV, RunKey
from b2calib.conditions.payload import Payload
from b2calib.conditions.payloadtypes import check_payload
from b2calib.db import now
from b2calib.engine import (
    Collector,
    CollectResult,
    Dataset,
    NonFiniteCounts,
    RunOutput,
    SkippedFile,
    collect,
    plan,
)
from b2calib.engine.collector import sum_histograms
from b2calib.engine.loop import DEFAULT_MAX_NONFINITE
from b2calib.exceptions import B2CalibError, CalibrationError, ConfigError, PayloadError
from b2calib.io import find_skim_files
from b2calib.runs import Run, RunRegistry

__all__ = [
    "PHASES",
    "CalibrationReport",
    "ExecutionReport",
    "JobPlan",
    "ProgressEvent",
    "plan_jobs",
    "run_calibrations",
]

Status = Literal["OK", "FAILED", "NOT_ENOUGH_DATA", "SKIPPED"]
#: The phases of :class:`ProgressEvent`, in the order a calibration goes through them.
PHASES = ("queued", "collecting", "fitting", "staging", "done")


@dataclass(frozen=True)
class ProgressEvent:
    """Where a calibration is (:func:`run_calibrations`'s ``on_event``).

    Attributes
    ----------
    calibration
        The calibration's name.
    phase
        One of :data:`PHASES`: ``queued`` (scheduled), ``collecting`` (``done`` of ``total``
        work items of the iteration's collector pass, over all its collector inputs),
        ``fitting`` (the algorithms of the iteration), ``staging`` (the payloads go into the
        staging tag), ``done`` (``message``: the report's status).
    done, total
        Work items collected and to collect (``collecting``).
    iteration
        The collector pass, from 0 (``done``: the number of passes).
    message
        The status, for ``done``.
    """

    calibration: str
    phase: str
    done: int = 0
    total: int = 0
    iteration: int = 0
    message: str = ""


@dataclass(frozen=True)
class JobPlan:
    """The job a calibration would run (:func:`plan_jobs`).

    Attributes
    ----------
    calibration
        The calibration's name.
    key
        The job key (``JobStore.job(key)`` finds its record); ``""`` when the runner would
        open no job (``message`` says why).
    inputs
        What the key is the hash of (calibration, version, expert config, runs, files with
        size and modification time, input tags, staging tag, the jobs of its dependencies ...).
    runs
        The input runs.
    message
        Why there is no job, when ``key`` is empty.
    """

    calibration: str
    key: str
    inputs: dict[str, Any]
    runs: list[RunKey]
    message: str = ""


class _Progress:
    """Turns the engine's per-collect ``(done, total)`` into ``collecting`` events over all
    the collector inputs of one pass (the totals of the inputs not collected yet are planned
    from the files' metadata)."""

    def __init__(
        self,
        emit: Callable[[ProgressEvent], None],
        calibration: str,
        iteration: int,
        datasets: Mapping[str, Dataset],
    ) -> None:
        self.emit, self.calibration, self.iteration = emit, calibration, iteration
        self.planned = {name: len(plan(ds)) for name, ds in datasets.items()}
        self.actual: dict[str, int] = {}

    def of(self, name: str) -> Callable[[int, int], None] | None:
        if self.emit is _ignore:
            return None

        def report(done: int, total: int) -> None:
            self.actual[name] = total
            before = sum(self.actual[n] for n in self.actual if n != name)
            later = sum(t for n, t in self.planned.items() if n not in self.actual)
            self.emit(
                ProgressEvent(
                    self.calibration,
                    "collecting",
                    before + done,
                    before + total + later,
                    self.iteration,
                )
            )

        return report


@dataclass
class ExecutionReport:
    """One final algorithm execution."""

    algorithm: str
    runs: list[RunKey]
    iov: IoV | None
    status: AlgorithmStatus
    message: str
    payloads: list[str]
    step: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the job summary)."""
        return {
            "algorithm": self.algorithm,
            "runs": [list(r) for r in self.runs],
            "iov": None if self.iov is None else str(self.iov),
            "status": self.status.value,
            "message": self.message,
            "payloads": self.payloads,
            "step": self.step,
        }


@dataclass
class CalibrationReport:
    """What running one calibration did."""

    calibration: str
    status: Status
    staging_tag: str
    job: str = ""
    runs: list[RunKey] = field(default_factory=list)
    iterations: int = 0
    converged: bool = True
    executions: list[ExecutionReport] = field(default_factory=list)
    staged: list[IovEntry] = field(default_factory=list)
    skipped_files: list[SkippedFile] = field(default_factory=list)
    executed_steps: int = 0
    reused_steps: int = 0
    already_done: bool = False
    message: str = ""
    runs_without_data: dict[RunKey, str] = field(default_factory=dict)
    nonfinite: NonFiniteCounts = field(default_factory=NonFiniteCounts)
    unverified_files: list[str] = field(default_factory=list)
    stage: str = ""
    started: str = ""
    finished: str = ""
    wall_time: float = 0.0
    #: seconds spent collecting (every input, every iteration) and in the algorithms
    #: (every execution, every iteration): the rest of ``wall_time`` is planning and checks;
    #: ``verify``, part of ``collect``: comparing the files with their catalogue (each file
    #: read whole for its checksum, once per file and process)
    seconds: dict[str, float] = field(
        default_factory=lambda: {"collect": 0.0, "verify": 0.0, "algorithms": 0.0}
    )
    channels: dict[str, int] = field(default_factory=lambda: channel_counts(()))

    @property
    def no_ok_channel(self) -> bool:
        """Whether the staged payloads have no OK channel while some fell back or failed
        (:func:`~b2calib.calibration.validation.no_ok_channel`): such a calibration must not
        read as a plain OK."""
        return no_ok_channel(self.channels)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (stored with the job): also the NaN / Inf values met per run and
        branch (``[exp, run, branch, non-finite, values]``, where there were any), the files
        read without a checksum to compare with, the calibration's stage, when the job's
        execution started and finished (ISO 8601, UTC) and its wall time (s, up to the staging),
        of which the seconds spent collecting (and, of those, verifying files) and in the
        algorithms, and the channels of the staged payloads by status
        (:func:`~b2calib.calibration.validation.channel_counts`)."""
        return {
            "status": self.status,
            "stage": self.stage,
            "started": self.started,
            "finished": self.finished,
            "wall_time": self.wall_time,
            "seconds": dict(self.seconds),
            "channels": dict(self.channels),
            "runs": [list(r) for r in self.runs],
            "iterations": self.iterations,
            "converged": self.converged,
            "executions": [e.as_dict() for e in self.executions],
            "staged": [[e.name, e.payload.revision, str(e.iov)] for e in self.staged],
            "skipped_files": [s.path for s in self.skipped_files],
            "runs_without_data": [[*r, why] for r, why in self.runs_without_data.items()],
            "nonfinite": [list(row) for row in self.nonfinite.rows()],
            "unverified_files": list(self.unverified_files),
            "message": self.message,
        }

    def __str__(self) -> str:
        lines = [
            f"{self.calibration}: {self.status}"
            + (" (completed before, nothing to do)" if self.already_done else "")
            + (f" - {self.message}" if self.message else "")
        ]
        if self.runs:
            lines.append(
                f"  runs {len(self.runs)} ({_run_text(self.runs[0])}..{_run_text(self.runs[-1])}),"
                f" iterations {self.iterations}"
                + ("" if self.converged else " (did not converge)")
                + f", steps executed {self.executed_steps}, reused {self.reused_steps}"
            )
        if self.wall_time:
            c, a = self.seconds.get("collect", 0.0), self.seconds.get("algorithms", 0.0)
            v = self.seconds.get("verify", 0.0)
            lines.append(
                f"  time {self.wall_time:.1f} s: collecting {c:.1f} s (verifying files {v:.1f}"
                f" s), algorithms {a:.1f} s"
            )
        for e in self.executions:
            iov = f"IoV {e.iov}" if e.iov else "no payload"
            lines.append(
                f"  {e.algorithm} runs {_run_text(e.runs[0])}..{_run_text(e.runs[-1])}: "
                f"{e.status.value} {iov}" + (f" ({e.message})" if e.message else "")
            )
        for r, why in self.runs_without_data.items():
            lines.append(f"  run {_run_text(r)}: no usable data: {why}")
        if self.staged:
            counts = ", ".join(f"{n} {k}" for k, n in self.channels.items() if n)
            lines.append(
                f"  channels: {counts or 'none'}"
                + (": no OK channel, every one fell back or failed" if self.no_ok_channel else "")
            )
        for s in self.staged:
            lines.append(f"  staged {s.payload} [{s.iov}] in {s.globaltag}")
        for f in self.skipped_files:
            lines.append(f"  skipped file {f.path}: {_detail(f)}")
        for exp, run, branch, bad, total in self.nonfinite.rows():
            lines.append(
                f"  non-finite values in run {exp}.{run}: {branch} {bad} of {total} are NaN or "
                f"Inf ({100.0 * bad / total:.2g} %)"
            )
        if self.unverified_files:
            n = len(self.unverified_files)
            lines.append(
                f"  {n} input file{'s' if n > 1 else ''} read without checksum verification "
                "(no catalogue entry)"
            )
        return "\n".join(lines)


def _detail(f: SkippedFile) -> str:
    """A skipped file's message without the file names it starts with."""
    for prefix in (", ".join(f.paths), f.path):
        if prefix and f.message.startswith(prefix + ": "):
            return f.message[len(prefix) + 2 :]
    return f.message


def _run_text(r: RunKey) -> str:
    return f"{r[0]}.{r[1]}"


def _runs_text(runs: Sequence[RunKey]) -> str:
    return ", ".join(_run_text(r) for r in runs)


class _Merged(Mapping[str, hist.Hist]):
    """The collector histograms of ``runs`` summed over them, each summed when an algorithm
    first asks for it (:meth:`RunOutput.merged`'s sums, name by name): an algorithm that reads
    single runs (the interval strategies' beam-spot and collision-energy fits) never pays for
    the sums (issue 20: ecms 0.18 s of CPU over its 5 executions)."""

    def __init__(self, output: RunOutput, runs: Sequence[RunKey]) -> None:
        self._parts: dict[str, list[hist.Hist]] = {}
        for run in sorted({r for r in runs if r in output}):  # in run order, as merged()
            for name, h in output[run].items():
                self._parts.setdefault(name, []).append(h)
        self._sums: dict[str, hist.Hist] = {}

    def __getitem__(self, name: str) -> hist.Hist:
        if name not in self._sums:
            self._sums[name] = sum_histograms(self._parts[name])
        return self._sums[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts)

    def __len__(self) -> int:
        return len(self._parts)


def _with_output(output: RunOutput, runs: Iterable[RunKey]) -> list[RunKey]:
    """The runs of ``runs`` for which the collectors produced histograms."""
    return [r for r in runs if output.get(r)]


def _no_data_reasons(
    cal: Calibration,
    runs: Iterable[RunKey],
    datasets: Mapping[str, Dataset],
    skipped: Sequence[SkippedFile],
) -> dict[RunKey, str]:
    """Why each of ``runs`` (runs without collector output) has no usable data: its files that
    were skipped (and why), that hold no events, or that are absent."""
    skipped_by_path = {s.path: s for s in skipped}
    problems = {Path(s.path).name: s for ds in datasets.values() for s in ds.problems}
    out: dict[RunKey, str] = {}
    for run in runs:
        refs = sorted(
            {
                f.path: f for ds in datasets.values() for f in ds.files if (f.exp, f.run) == run
            }.items()
        )
        reasons = []
        found = {ref.skim for _, ref in refs}
        for path, ref in refs:
            name = Path(path).name
            if path in skipped_by_path:
                reasons.append(f"{name} skipped ({skipped_by_path[path].reason})")
            elif ref.n_events == 0:
                reasons.append(f"{name} has no events")
            else:
                reasons.append(f"{name} gave no histograms")
        # a file whose metadata could not be read names its run only in its (basf2) file name
        for skim in cal.skims:
            name = f"cdst_{skim}_e{run[0]:04d}_r{run[1]:05d}.root"
            if skim not in found and name in problems:
                found.add(skim)
                reasons.append(f"{name} skipped ({problems[name].reason})")
        missing = [s for s in cal.skims if s not in found]
        if missing:
            reasons.append(f"no file of skim{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        out[run] = "; ".join(reasons)
    return out


def _selected(
    calibrations: Calibration | str | Iterable[Calibration | str], with_dependencies: bool
) -> dict[str, Calibration]:
    """The calibrations by name, with the ones they depend on (``depends_on``, recursively, not
    ``after``) when ``with_dependencies``."""
    if isinstance(calibrations, str | Calibration):
        calibrations = [calibrations]
    selected = {
        c.name: c for c in (get_calibration(x) if isinstance(x, str) else x for x in calibrations)
    }
    if with_dependencies:
        todo = list(selected.values())
        while todo:
            for dep in todo.pop().depends_on:
                if dep not in selected:
                    selected[dep] = get_calibration(dep)
                    todo.append(selected[dep])
    return selected


def _completed_before(
    selected: Mapping[str, Calibration], store: JobStore, staging_tag: str
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The job key of each dependency not selected that completed into ``staging_tag`` (its
    latest completed job), and per calibration the dependencies that did not."""
    done: dict[str, str] = {}
    missing: dict[str, list[str]] = {}
    for c in selected.values():
        for dep in c.depends_on:
            if dep in selected or dep in done:
                continue
            jobs = [
                j
                for j in store.jobs(dep)
                if j.staging_tag == staging_tag and j.state == "completed"
            ]
            if jobs:
                done[dep] = jobs[-1].key
            else:
                missing.setdefault(c.name, []).append(dep)
    return done, missing


@dataclass
class _Inputs:
    """What one calibration runs on: the files per collector input, the registered runs that
    pass its filters, their records, and its expert configuration."""

    datasets: dict[str, Dataset]
    registered: list[RunKey]
    run_info: dict[RunKey, Run]
    config: dict[str, Any]


class _Data:
    """A data folder's run registry and file metadata, read once for every calibration."""

    def __init__(self, data: str | os.PathLike[str], registry: RunRegistry | None = None) -> None:
        self.folder = Path(data)
        self.registry = (
            registry
            if registry is not None
            else RunRegistry.load(self.folder / "runs.json", on_duplicate="drop")
        )
        self.everything = Dataset.from_files(find_skim_files(self.folder))  # metadata read once

    def inputs(
        self,
        cal: Calibration,
        exp: int | None,
        runs: Sequence[int] | range | None,
        config: Mapping[str, Mapping[str, Any] | str | os.PathLike[str]] | None,
    ) -> _Inputs:
        filters: dict[str, Any] = dict(
            exp=exp,
            runs=runs,
            run_type=cal.run_type,
            beam_energy=cal.beam_energy,
            magnet_on=cal.magnet_on,
            dq=cal.dq,
        )
        datasets = {
            name: Dataset.select(
                self.folder,
                registry=self.registry,
                skims=inp.skims,
                within=self.everything,
                **filters,
            )
            for name, inp in cal.inputs.items()
        }
        registered = self.registry.select(**filters)  # with or without files
        return _Inputs(
            datasets,
            [r.key for r in registered],
            {r.key: r for r in registered},
            cal.configure((config or {}).get(cal.name)),
        )


def _job_plan(
    cal: Calibration,
    inputs: _Inputs,
    *,
    staging_tag: str,
    input_tags: Sequence[str],
    dep_jobs: Mapping[str, str],
    verify: bool,
) -> JobPlan:
    """The job's inputs and key (see :func:`plan_jobs`)."""
    with_files = {r for ds in inputs.datasets.values() for r in ds.runs}
    runs = sorted(with_files | set(inputs.registered))
    if not runs:
        return JobPlan(cal.name, "", {}, runs, "no input run passes the calibration's filters")
    if not with_files:
        return JobPlan(
            cal.name,
            "",
            {},
            runs,
            f"no input run has a file of {', '.join(cal.skims)}; nothing staged",
        )
    files = sorted({f.path for ds in inputs.datasets.values() for f in ds.files})
    job_inputs: dict[str, Any] = {
        "calibration": cal.name,
        "b2calib": __version__,
        "config": inputs.config,
        "runs": [list(r) for r in runs],
        "files": [_file_identity(p) for p in files],
        "input_tags": list(input_tags),
        "staging_tag": staging_tag,
        "dependencies": {d: dep_jobs[d] for d in cal.depends_on},
        "strategy": cal.strategy.describe(),
        "max_iterations": cal.max_iterations,
        "open_end": cal.open_end,
    }
    if not verify:
        job_inputs["unverified"] = True  # not the job that verified its input
    key = hashlib.sha256(json.dumps(job_inputs, sort_keys=True, default=str).encode()).hexdigest()
    return JobPlan(cal.name, key, job_inputs, runs)


def plan_jobs(
    calibrations: Calibration | str | Iterable[Calibration | str],
    data: str | os.PathLike[str],
    *,
    db: ConditionsDB,
    staging_tag: str,
    input_tags: Sequence[str] = (),
    exp: int | None = None,
    runs: Sequence[int] | range | None = None,
    config: Mapping[str, Mapping[str, Any] | str | os.PathLike[str]] | None = None,
    with_dependencies: bool = False,
    registry: RunRegistry | None = None,
    verify: bool = True,
) -> dict[str, JobPlan]:
    """The job each calibration would run with :func:`run_calibrations` and the same arguments,
    without collecting anything: its key, inputs and runs, by calibration name (in the order
    they would run).

    The key is the runner's own (the same function computes it); whether that job completed
    is ``JobStore(db).job(plan.key)`` (state ``"completed"``). The data folder's file metadata
    is read once for all the calibrations, so one call for a whole graph is cheap.

    A dependency among the calibrations enters a key with its planned job's key; one that is
    not, with its latest job completed into ``staging_tag``. A calibration for which the
    runner would open no job (no input run; no run with a file; a dependency neither planned
    nor completed) has key ``""`` and :attr:`JobPlan.message` says why.
    """
    selected = _selected(calibrations, with_dependencies)
    store = JobStore(db)
    done_before, missing = _completed_before(selected, store, staging_tag)
    every_dep = {d for c in selected.values() for d in c.depends_on}
    order = dependency_order(selected.values(), completed=every_dep)
    folder = _Data(data, registry)
    plans: dict[str, JobPlan] = {}
    for cal in order:
        if cal.name in missing:
            plans[cal.name] = JobPlan(
                cal.name,
                "",
                {},
                [],
                f"depends on {', '.join(missing[cal.name])}, which has not completed into "
                f"staging tag {staging_tag}",
            )
            continue
        dep_jobs = {d: plans[d].key if d in plans else done_before[d] for d in cal.depends_on}
        plans[cal.name] = _job_plan(
            cal,
            folder.inputs(cal, exp, runs, config),
            staging_tag=staging_tag,
            input_tags=input_tags,
            dep_jobs=dep_jobs,
            verify=verify,
        )
    return plans


def run_calibrations(
    calibrations: Calibration | str | Iterable[Calibration | str],
    data: str | os.PathLike[str],
    *,
    db: ConditionsDB,
    staging_tag: str,
    input_tags: Sequence[str] = (),
    exp: int | None = None,
    runs: Sequence[int] | range | None = None,
    config: Mapping[str, Mapping[str, Any] | str | os.PathLike[str]] | None = None,
    with_dependencies: bool = False,
    executor: Any = "inprocess",
    workers: int | None = None,
    cache: bool | str | os.PathLike[str] = True,
    on_bad_file: Literal["skip", "stop"] | None = None,
    progress: bool = False,
    registry: RunRegistry | None = None,
    verify: bool = True,
    max_nonfinite: float = DEFAULT_MAX_NONFINITE,
    on_event: Callable[[ProgressEvent], None] | None = None,
) -> dict[str, CalibrationReport]:
    """Run calibrations (by name or declaration) in dependency order.

    Parameters
    ----------
    data
        Folder of skim files with its ``runs.json`` registry (as written by the simulator).
    db, staging_tag
        Where checkpoints and payloads go; the staging tag (OPEN) is created when missing.
    input_tags
        Global tags with the constants to start from, highest priority first.
    exp, runs
        Restrict the input to these runs (the calibrations' own filters apply on top).
    config
        Expert-config overrides per calibration name (mapping or JSON file).
    with_dependencies
        Also run the calibrations the selected ones depend on (``depends_on``; never those
        they only run ``after``). Without it, each dependency must have completed earlier into
        the same staging tag.
    executor, workers, cache, on_bad_file, progress, verify, max_nonfinite
        Passed to :func:`b2calib.engine.collect` (the bad-file policy: by default unreadable
        and corrupt files are left out and listed, inconsistent data stops the job). A job run
        without verification is another job than one with it.
    registry
        The runs with their data-quality flags, which the calibrations' ``dq`` filters read
        (default: the folder's ``runs.json``); give ``QADatabase(url).runs.with_certified_flags``
        of it (:meth:`b2calib.qa.store.Runs.with_certified_flags`) to select by the flags the
        shifters certified.
    on_event
        Called in this process with a :class:`ProgressEvent` as the calibrations go: each
        ``queued`` first (in the order they will run), then per calibration ``collecting``
        (items done of all, per iteration, as they complete), ``fitting`` (per iteration),
        ``staging``, and ``done`` (message: the report's status), also for a calibration
        skipped or completed before.

    Calibrations that only run ``after`` others are ordered after them when both are
    selected; they are not skipped when those fail.
    """
    selected = _selected(calibrations, with_dependencies)
    store = JobStore(db)
    done_before, missing = _completed_before(selected, store, staging_tag)
    for name, deps in missing.items():
        raise CalibrationError(
            f"calibration {name} depends on {deps[0]}, which has not completed into "
            f"staging tag {staging_tag}: run it first, or run with its dependencies"
        )
    order = dependency_order(selected.values(), completed=done_before)
    folder = _Data(data, registry)
    emit = on_event if on_event is not None else _ignore
    for cal in order:
        emit(ProgressEvent(cal.name, "queued"))
    reports: dict[str, CalibrationReport] = {}
    # who prevails over whom in the staging tag: the registered calibrations and these
    known = [*registered_calibrations().values(), *order]
    for cal in order:
        failed_deps = [d for d in cal.depends_on if d in reports and reports[d].status != "OK"]
        if failed_deps:
            when = _now_text()
            reports[cal.name] = CalibrationReport(
                cal.name,
                "SKIPPED",
                staging_tag,
                message=f"dependencies did not succeed: {', '.join(failed_deps)}",
                stage=cal.stage,
                started=when,
                finished=when,
            )
            emit(ProgressEvent(cal.name, "done", message="SKIPPED"))
            continue
        dep_jobs = {d: reports[d].job if d in reports else done_before[d] for d in cal.depends_on}
        runner = _Runner(
            cal,
            db,
            store,
            staging_tag,
            list(input_tags),
            dict(
                executor=executor,
                workers=workers,
                cache=cache,
                on_bad_file=on_bad_file,
                progress=progress,
                verify=verify,
                max_nonfinite=max_nonfinite,
            ),
            emit,
        )
        runner.yields_to = {c.name for c in known if cal.name in c.prevails_over}
        inputs = folder.inputs(cal, exp, runs, config)
        plan = _job_plan(
            cal,
            inputs,
            staging_tag=staging_tag,
            input_tags=input_tags,
            dep_jobs=dep_jobs,
            verify=verify,
        )
        runner.run_info = inputs.run_info
        try:
            reports[cal.name] = report = runner.run(plan, inputs)
        finally:
            runner.close()
        emit(ProgressEvent(cal.name, "done", iteration=report.iterations, message=report.status))
    return reports


def _ignore(event: ProgressEvent) -> None:
    """The default :class:`ProgressEvent` receiver: nothing."""


def _now_text() -> str:
    return now().isoformat()


#: The executions whose files may be written while the next ones run: the checkpoints are at
#: most this many executions behind.
_MAX_UNRECORDED = 2
#: Executions shorter than this are checkpointed together, within :data:`_MAX_UNRECORDED`, in one
#: transaction: each commit waits for the disk (about 5 ms), as long as a beam-spot execution
#: takes. A longer execution, or one that finished this long ago, is checkpointed at the next
#: chance, as each execution was: a killed job redoes at most that many short ones more.
_BATCH_SECONDS = 1.0
#: An execution's step: (algorithm, iteration, runs).
_StepKey = tuple[str, int, tuple[RunKey, ...]]
#: An execution's payload files and diagnostics file.
_StepFiles = tuple[list[PayloadFile], bytes | None]


@dataclass(frozen=True)
class _Writing:
    """An execution whose files are being written, to be recorded when they are."""

    key: _StepKey
    job: Job
    result: AlgorithmResult
    files: Future[_StepFiles]
    #: When the execution started and ended (``time.monotonic``).
    started: float
    finished: float

    def due(self, now: float) -> bool:
        """Whether to checkpoint it now rather than with the next executions
        (:data:`_BATCH_SECONDS`)."""
        return max(self.finished - self.started, now - self.finished) >= _BATCH_SECONDS


@dataclass
class _Pass:
    """One collector pass of a job and what its algorithm executions see."""

    job: Job
    iteration: int
    output: RunOutput
    constants: Constants
    config: dict[str, Any]
    report: CalibrationReport
    run_info: Mapping[RunKey, Run] = field(default_factory=dict)

    def input(self, runs: list[RunKey]) -> AlgorithmInput:
        """The algorithm input for ``runs`` (runs with collector output)."""
        merged = _Merged(self.output, runs)
        return AlgorithmInput(
            runs,
            merged,
            self.output,
            self.constants,
            self.config,
            self.iteration,
            {r: self.run_info[r] for r in runs if r in self.run_info},
        )


class _Runner:
    """Runs one calibration (see the module documentation)."""

    def __init__(
        self,
        cal: Calibration,
        db: ConditionsDB,
        store: JobStore,
        staging_tag: str,
        input_tags: list[str],
        engine_options: dict[str, Any],
        emit: Callable[[ProgressEvent], None] = _ignore,
    ) -> None:
        self.cal, self.db, self.store = cal, db, store
        self.emit = emit
        self.started = time.perf_counter()
        self.staging_tag, self.input_tags = staging_tag, input_tags
        self.engine_options = engine_options
        self.reads: str | None = None
        self.steps: dict[_StepKey, int] = {}
        # the files of this iteration's payloads, written (and checked) once when their
        # execution is recorded, by id(payload): staging stores these bytes, the checkpoint's
        self.files: dict[int, PayloadFile] = {}
        # the executions whose files the writer thread is writing, oldest first, each recorded
        # (checkpointed) once written
        self.writing: deque[_Writing] = deque()
        self.writer: ThreadPoolExecutor | None = None
        self.requested: dict[str, list[RunKey]] = {}
        self.run_info: dict[RunKey, Run] = {}
        #: the calibrations that prevail over this one in the staging tag
        self.yields_to: set[str] = set()

    def _rereads(self) -> str | None:
        """The read cache's folder of an iterating calibration (its iterations read the same
        files again: :func:`b2calib.engine.collect`'s ``read_cache``), made on first use in
        ``$B2CALIB_READ_CACHE_DIR`` or the system's temporary folder, and removed by
        :meth:`close`; None for a calibration of one iteration."""
        if self.cal.max_iterations < 2:
            return None
        if self.reads is None:
            parent = Path(os.environ.get("B2CALIB_READ_CACHE_DIR") or tempfile.gettempdir())
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ConfigError(
                    f"B2CALIB_READ_CACHE_DIR={str(parent)!r}: cannot make the folder ({err})"
                ) from None
            _remove_orphans(parent)
            self.reads = tempfile.mkdtemp(
                prefix=f"{_reads_prefix(os.getpid())}{self.cal.name}-", dir=parent
            )
        return self.reads

    def close(self) -> None:
        """Remove the read cache's folder (:meth:`_rereads`)."""
        if self.reads is not None:
            shutil.rmtree(self.reads, ignore_errors=True)
            self.reads = None

    def run(self, plan: JobPlan, inputs: _Inputs) -> CalibrationReport:
        """Run the calibration's planned job on ``inputs`` (the files of its collector inputs,
        the runs of the registry that pass its filters)."""
        cal, datasets, config = self.cal, inputs.datasets, inputs.config
        self.started = time.perf_counter()
        report = CalibrationReport(
            cal.name, "OK", self.staging_tag, stage=cal.stage, started=_now_text()
        )
        runs = plan.runs
        report.runs = runs
        if not plan.key:
            report.status = "NOT_ENOUGH_DATA"
            report.message = plan.message
            if runs:
                report.runs_without_data = _no_data_reasons(cal, runs, datasets, [])
            self._finished(report)
            return report
        key, job_inputs = plan.key, plan.inputs
        job = self.store.open(key, cal.name, self.staging_tag, job_inputs)
        report.job = key
        if job.state == "completed":
            return self._from_summary(report, job)
        self.provenance = {
            "calibration": cal.name,
            "expert": cal.expert,
            "b2calib": __version__,
            "expert_config": config,
            "input_tags": self.input_tags,
            "strategy": cal.strategy.describe(),
        }
        self.files_by_run: dict[RunKey, list[str]] = {}
        for ds in datasets.values():
            for f in ds.files:
                self.files_by_run.setdefault((f.exp, f.run), []).append(f.path)
        self.with_data: set[RunKey] = set()
        self.skipped_paths: set[str] = set()
        overlay: list[tuple[IoV, Payload]] = []
        executions: list[tuple[Algorithm, Execution]] = []
        # each input's collector and result of the previous pass: an input whose collector is
        # built the same again (it applies none of the constants that moved) is not re-read
        previous: dict[str, tuple[Collector, CollectResult]] = {}
        for iteration in range(cal.max_iterations):
            report.iterations = iteration + 1
            constants = Constants(self.db, [self.staging_tag, *self.input_tags], overlay)
            output = RunOutput()
            progress = _Progress(self.emit, cal.name, iteration, datasets)
            started = time.perf_counter()
            for name, inp in cal.inputs.items():
                collector = inp.build(constants, runs)
                reused = _same_collector(previous.get(name), collector)
                if reused is not None:
                    result = reused
                    report_progress = progress.of(name)
                    if report_progress is not None:
                        total = progress.planned[name]
                        report_progress(total, total)
                    # the algorithms of the last pass saw these histograms: hand out copies
                    _add_output(output, result.output, name, copy=True)
                    del result
                    continue
                # the previous pass's histograms are not held while this pass collects anew:
                # that would double the histograms held per run read
                previous.pop(name, None)
                result = collect(
                    collector,
                    datasets[name],
                    on_progress=progress.of(name),
                    # a collector built from the constants may read its files again
                    read_cache=None if isinstance(inp.collector, Collector) else self._rereads(),
                    **self.engine_options,
                )
                previous[name] = (collector, result)
                report.seconds["verify"] += result.verify_seconds
                report.skipped_files += [s for s in result.skipped if s not in report.skipped_files]
                if iteration == 0:  # the same files each iteration
                    report.nonfinite += result.nonfinite
                    report.unverified_files = sorted({*report.unverified_files, *result.unverified})
                _add_output(output, result.output, name)
                del result  # only `previous` and `output` hold it
            report.seconds["collect"] += time.perf_counter() - started
            self.with_data = set(_with_output(output, runs))
            self.skipped_paths = {s.path for s in report.skipped_files}
            report.runs_without_data = _no_data_reasons(
                cal, [r for r in runs if r not in self.with_data], datasets, report.skipped_files
            )
            self.store.set_state(job, f"collected:{iteration}")
            self.emit(ProgressEvent(cal.name, "fitting", iteration=iteration))
            started = time.perf_counter()
            executions = self._algorithms(
                _Pass(job, iteration, output, constants, config, report, self.run_info), runs
            )
            report.seconds["algorithms"] += time.perf_counter() - started
            statuses = {e.result.status for _, e in executions}
            if AlgorithmStatus.FAILURE in statuses:
                break
            iterate = AlgorithmStatus.ITERATE in statuses
            if iterate and iteration + 1 < cal.max_iterations:
                overlay = [
                    (e.iov, p) for _, e in executions if e.ok and e.iov for p in e.result.payloads
                ]
                continue
            report.converged = not iterate
            break
        report.executions = [self._exec_report(alg, e, iteration) for alg, e in executions]
        failures = [r for r in report.executions if r.status is AlgorithmStatus.FAILURE]
        successes = [r for r in report.executions if r.iov is not None]
        no_data = (
            f"runs without usable data: {_runs_text(list(report.runs_without_data))}"
            if report.runs_without_data
            else ""
        )
        if failures:
            report.status = "FAILED"
            report.message = "; ".join(
                [
                    *(
                        f"{f.algorithm} failed on runs {_run_text(f.runs[0])}.."
                        f"{_run_text(f.runs[-1])}" + (f": {f.message}" if f.message else "")
                        for f in failures
                    ),
                    "nothing staged",
                    *([no_data] if no_data else []),
                ]
            )
            self._finished(report)
            self.store.set_state(job, "failed", report.summary())
            return report
        if not successes:
            report.status = "NOT_ENOUGH_DATA"
            report.message = "; ".join(
                ["no execution had enough data", "nothing staged", *([no_data] if no_data else [])]
            )
            self._finished(report)
            self.store.set_state(job, "not_enough_data", report.summary())
            return report
        lacking = [r for r in report.executions if r.iov is None]
        notes = [no_data] if no_data else []
        if lacking:
            notes.append(
                "runs without payload: "
                + ", ".join(
                    f"{_run_text(r.runs[0])}..{_run_text(r.runs[-1])} ({r.status.value})"
                    for r in lacking
                )
            )
        report.message = "; ".join(notes)
        if not report.converged:
            report.message = (
                f"still asked to ITERATE after {cal.max_iterations} iterations; "
                "staged the last iteration's payloads. " + report.message
            ).strip()
        items = [(e.iov, p) for _, e in executions if e.iov is not None for p in e.result.payloads]
        if cal.open_end:
            items = _open_last(items)
        report.channels = channel_counts(p for _, p in items)
        self.emit(ProgressEvent(cal.name, "staging", iteration=iteration))
        self._finished(report)
        report.staged = self.store.complete(
            job,
            [(iov, self._staged(p)) for iov, p in items],
            report.summary(),
            prevails_over=cal.prevails_over,
            yields_to=self.yields_to,
        )
        return report

    def _finished(self, report: CalibrationReport) -> None:
        """Record the end of the job's execution in its report (before its summary is
        stored)."""
        report.finished = _now_text()
        report.wall_time = round(time.perf_counter() - self.started, 3)
        report.seconds = {k: round(v, 3) for k, v in report.seconds.items()}

    def _algorithms(self, p: _Pass, runs: list[RunKey]) -> list[tuple[Algorithm, Execution]]:
        """Every algorithm executed by the strategy, stopping at the first FAILURE."""
        executions: list[tuple[Algorithm, Execution]] = []
        self.files.clear()  # the previous iteration's payloads are not staged
        with ThreadPoolExecutor(1, thread_name_prefix="b2calib-files") as self.writer:
            try:
                for alg in self.cal.algorithms:
                    done = self.cal.strategy.run(
                        runs,
                        functools.partial(self._execute, p, alg),
                        functools.partial(self._boundaries, p, alg, runs),
                    )
                    self._record(keep=0)
                    if not self._combined(p, alg, done, executions):
                        break
            except BaseException:
                self._record(keep=0)  # the executions done before the error are checkpointed
                raise
            finally:
                self.writing.clear()
                self.writer = None
        return executions

    def _combined(
        self,
        p: _Pass,
        alg: Algorithm,
        done: list[Execution],
        executions: list[tuple[Algorithm, Execution]],
    ) -> bool:
        """Add an algorithm's executions ``done`` (revised by its ``combine``) to
        ``executions``; False after a FAILURE (the next algorithms are not executed)."""
        failed = any(e.result.status is AlgorithmStatus.FAILURE for e in done)
        if not failed:
            self._combine(p, alg, done)
        executions += [(alg, e) for e in done]
        if failed or any(e.result.status is AlgorithmStatus.FAILURE for e in done):
            return False
        # the next algorithms see these payloads first
        p.constants.overlay[:0] = [
            (e.iov, payload) for e in done if e.iov is not None for payload in e.result.payloads
        ]
        return True

    def _combine(self, p: _Pass, alg: Algorithm, done: list[Execution]) -> None:
        """Replace the results of the successful executions of ``done`` by those
        :meth:`Algorithm.combine` revises together (the step records keep the executions' own
        results). A revision that raises, changes the number of results or their payloads' names,
        or holds a payload the database would refuse, makes the executions FAILURE."""
        ok = [e for e in done if e.ok]
        if not ok:
            return
        try:
            revised = alg.combine(ok, p.constants, p.config)
            if len(revised) != len(ok):
                raise CalibrationError(
                    f"combine returned {len(revised)} results for {len(ok)} executions"
                )
            for e, r in zip(ok, revised, strict=True):
                names = ([q.name for q in r.payloads], [q.name for q in e.result.payloads])
                if names[0] != names[1] or r.status is not e.result.status:
                    raise CalibrationError(
                        f"combine turned {e.result.status.value} {names[1]} of runs "
                        f"{_run_text(e.runs[0])}..{_run_text(e.runs[-1])} into "
                        f"{r.status.value} {names[0]}"
                    )
        except B2CalibError as err:
            message = f"{alg.name} combining its results: {type(err).__name__}: {err}"
            for e in ok:
                e.result = AlgorithmResult(AlgorithmStatus.FAILURE, message=message)
            return
        for e, r in zip(ok, revised, strict=True):
            if r is e.result:  # not revised: its payloads were checked when it was executed
                continue
            for new, old in zip(r.payloads, e.result.payloads, strict=True):
                if "provenance" in old.metadata:  # the runner's record of where it came from
                    new.metadata.setdefault("provenance", old.metadata["provenance"])
            e.result = _refused_payloads(r)

    def _boundaries(self, p: _Pass, alg: Algorithm, runs: list[RunKey]) -> list[RunKey]:
        """Boundaries the algorithm requests from the runs with data, asked once per job (in
        the first iteration) so that the payload IoVs stay the same while iterating."""
        if alg.name not in self.requested:
            present = [r for r in runs if r in self.with_data]
            found = alg.boundaries(p.input(present)) if present else ()
            self.requested[alg.name] = sorted((int(e), int(r)) for e, r in found)
        return self.requested[alg.name]

    def _execute(self, p: _Pass, alg: Algorithm, runs: list[RunKey]) -> AlgorithmResult:
        job, iteration, report = p.job, p.iteration, p.report
        key = (alg.name, iteration, tuple(runs))
        self._record()
        record = self.store.step(job, iteration, alg.name, runs)
        if record is not None:
            report.reused_steps += 1
            return self._from_record(record, key)
        started = time.monotonic()
        present = [r for r in runs if r in self.with_data]
        if not present:  # nothing to calibrate on: the algorithm is not asked
            result = AlgorithmResult(
                AlgorithmStatus.NOT_ENOUGH_DATA,
                message=_no_data_message(runs, report.runs_without_data),
            )
        else:
            try:
                result = alg.run(p.input(present))
            except B2CalibError as err:
                result = AlgorithmResult(
                    AlgorithmStatus.FAILURE, message=f"{type(err).__name__}: {err}"
                )
        unexpected = [q.name for q in result.payloads if q.name not in alg.payloads]
        if unexpected:
            raise CalibrationError(
                f"algorithm {alg.name} of {self.cal.name} returned payloads {unexpected} it does "
                f"not declare (declared: {', '.join(alg.payloads)})"
            )
        result = _refused_payloads(result)
        for payload in result.payloads:
            payload.metadata["provenance"] = {
                **payload.metadata.get("provenance", {}),
                **self.provenance,
                "algorithm": alg.name,
                "iteration": iteration,
                "runs": [list(r) for r in present],  # the runs whose data it was made of
                "files": sorted(
                    Path(f).name
                    for r in present
                    for f in self.files_by_run.get(r, [])
                    if f not in self.skipped_paths
                ),
            }
            if len(present) < len(runs):
                payload.metadata["provenance"]["runs_without_data"] = [
                    list(r) for r in runs if r not in self.with_data
                ]
        assert self.writer is not None, "executions run within _algorithms"
        files = self.writer.submit(_step_files, result)
        self.writing.append(_Writing(key, job, result, files, started, time.monotonic()))
        self._record(keep=_MAX_UNRECORDED)
        report.executed_steps += 1
        return result

    def _record(self, *, keep: int | None = None) -> None:
        """Record (checkpoint) the executions whose files are written, oldest first, in one
        transaction, waiting for the oldest while more than ``keep`` are not recorded
        (``None``: no waiting; 0: all are recorded). Unless some must be waited for, short
        executions wait to be recorded with the next ones (:data:`_BATCH_SECONDS`). Their
        payloads' files are kept for staging."""
        waited = 0 if keep is None else max(len(self.writing) - keep, 0)
        batch: list[_Writing] = []
        for w in self.writing:
            if len(batch) >= waited and not w.files.done():
                break
            batch.append(w)
        if not batch:
            return
        if not waited:
            now = time.monotonic()
            if not any(w.due(now) for w in batch):
                return
        written: list[_StepFiles] = []
        failed: BaseException | None = None
        for w in batch:
            try:
                written.append(w.files.result())
            except BaseException as err:  # the executions before it are still recorded
                failed = err
                break
        batch = batch[: len(written)]
        if batch:
            ids = self.store.record_steps(
                batch[0].job,
                [
                    (w.key[1], w.key[0], list(w.key[2]), w.result.status.value, w.result.message)
                    + written[i]
                    for i, w in enumerate(batch)
                ],
            )
            for w, (files, _), step_id in zip(batch, written, ids, strict=True):
                self.steps[w.key] = step_id
                self.files.update((id(f.payload), f) for f in files)
                self.writing.popleft()
        if failed is not None:
            raise failed

    def _staged(self, payload: Payload) -> Payload | PayloadFile:
        """What staging stores for ``payload``: the file written when its execution was
        recorded, or the payload (revised by ``combine``, or from a resumed job's checkpoint)."""
        f = self.files.get(id(payload))
        return f if f is not None and f.payload is payload else payload

    def _from_record(self, record: StepRecord, key: _StepKey) -> AlgorithmResult:
        self.steps[key] = record.id
        return AlgorithmResult(
            AlgorithmStatus(record.status), payloads=record.payloads, message=record.message
        )

    def _exec_report(self, alg: Algorithm, e: Execution, iteration: int) -> ExecutionReport:
        key = (alg.name, iteration, tuple(e.runs))
        return ExecutionReport(
            alg.name,
            e.runs,
            e.iov,
            e.result.status,
            e.result.message,
            [p.name for p in e.result.payloads],
            self.steps.get(key, 0),
        )

    def _from_summary(self, report: CalibrationReport, job: Job) -> CalibrationReport:
        s = job.summary
        report.already_done = True
        report.status = s["status"]
        report.iterations = s["iterations"]
        report.converged = s["converged"]
        report.message = s["message"]
        report.runs_without_data = {
            (int(e), int(r)): str(why) for e, r, why in s.get("runs_without_data", [])
        }
        for exp, run, branch, bad, total in s.get("nonfinite", []):
            report.nonfinite.add((exp, run), {branch: (bad, total)})
        report.unverified_files = list(s.get("unverified_files", []))
        # recorded by the execution that completed it (absent from older summaries)
        report.started = str(s.get("started", ""))
        report.finished = str(s.get("finished", ""))
        report.wall_time = float(s.get("wall_time", 0.0))
        report.seconds = {k: float(v) for k, v in s.get("seconds", report.seconds).items()}
        report.channels = {k: int(v) for k, v in s.get("channels", {}).items()}
        report.staged = [
            IovEntry(self.staging_tag, self.db.payload_info(name, rev), IoV.parse(iov))
            for name, rev, iov in s["staged"]
        ]
        report.executions = [
            ExecutionReport(
                e["algorithm"],
                [(int(a), int(b)) for a, b in e["runs"]],
                None if e["iov"] is None else IoV.parse(e["iov"]),
                AlgorithmStatus(e["status"]),
                e["message"],
                list(e["payloads"]),
                e["step"],
            )
            for e in s["executions"]
        ]
        return report


def _refused_payloads(result: AlgorithmResult) -> AlgorithmResult:
    """``result``, or a FAILURE naming the first of its payloads the database would refuse
    (:func:`~b2calib.conditions.payloadtypes.check_payload`), so that an algorithm's invalid
    payload fails its job like any failed fit instead of stopping the staging."""
    for payload in result.payloads:
        try:
            check_payload(payload)
        except PayloadError as err:
            return AlgorithmResult(
                AlgorithmStatus.FAILURE,
                diagnostics=result.diagnostics,
                message=f"{err} (the algorithm said {result.status.value}"
                + (f": {result.message})" if result.message else ")"),
            )
    return result


def _step_files(result: AlgorithmResult) -> _StepFiles:
    """The files of an execution's checked payloads and its diagnostics file (``None`` when it
    has none). Run on the runner's writer thread while the next execution runs: compressing
    and hashing the bytes of large payloads release the GIL."""
    diag = result.diagnostics
    blob = diag.to_bytes() if (diag.histograms or diag.tables) else None
    return [PayloadFile.of(q) for q in result.payloads], blob


def _no_data_message(runs: Sequence[RunKey], why: Mapping[RunKey, str]) -> str:
    """The message of an execution none of whose ``runs`` has data."""
    if len(runs) == 1:
        return f"no usable data in run {_run_text(runs[0])}: {why.get(runs[0], 'no histograms')}"
    return f"no usable data in runs {_run_text(runs[0])}..{_run_text(runs[-1])}: " + "; ".join(
        f"{_run_text(r)}: {why.get(r, 'no histograms')}" for r in runs
    )


def _file_identity(path: str) -> list[Any]:
    """A file in a job's inputs: its absolute path (a folder given as a relative path is the
    same job), size and modification time."""
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def _add_output(total: RunOutput, part: RunOutput, input_name: str, *, copy: bool = False) -> None:
    for key in part:
        clash = set(part[key]) & set(total[key]) if key in total else set()
        if clash:
            raise CalibrationError(
                f"collector input {input_name}: histogram names {sorted(clash)} are already "
                "produced by another input; give the collectors distinct names"
            )
        total.add(key, part[key], copy=copy)


def _reads_prefix(pid: int) -> str:
    """The start of the name of a read-cache folder of process ``pid`` on this machine."""
    return f"b2calib-reads-{pid}@{socket.gethostname()}-"


def _remove_orphans(parent: Path) -> None:
    """Remove the read-cache folders in ``parent`` of processes of this machine that ended
    without removing them (killed: ``b2calib-reads-<pid>@<host>-...``, the pid no longer
    running here); another machine's folders (a shared folder) are left to it."""
    for folder in parent.glob("b2calib-reads-*@*"):
        pid = folder.name.removeprefix("b2calib-reads-").partition("@")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        if not folder.name.startswith(_reads_prefix(int(pid))):
            continue  # another machine's
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # another user's process: running
            pass


def _same_collector(
    previous: tuple[Collector, CollectResult] | None, collector: Collector
) -> CollectResult | None:
    """The previous pass's result of an input when its collector is built the same again.

    Collectors are pure: the same collector (class, version and configuration, which holds
    every constant it applies) on the same files gives the same histograms, which the engine's
    disk cache would return too; an iteration whose new constants that collector does not
    apply (e.g. the ECL Bhabha 5x5 sums, read raw while the peak methods iterate) keeps them
    instead of reading its files again. Collectors that compare unequal, and any that is not
    a dataclass (compared by identity), are collected again.
    """
    if previous is None:
        return None
    before, result = previous
    if type(before) is not type(collector) or not dataclasses.is_dataclass(collector):
        return None
    return result if _same_value(before.identity(), collector.identity()) else None


def _same_value(a: Any, b: Any) -> bool:
    """Whether two collector identities are equal: mappings, sequences and arrays compared
    element by element (arrays of the same dtype and shape, NaN never equal to NaN), anything
    else with ``==``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _open_last(items: list[tuple[IoV, Payload]]) -> list[tuple[IoV, Payload]]:
    last: dict[str, IoV] = {}
    for iov, p in items:
        if p.name not in last or iov.start > last[p.name].start:
            last[p.name] = iov
    return [(IoV(*iov.start) if last[p.name] == iov else iov, p) for iov, p in items]
