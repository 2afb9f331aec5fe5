"""The prompt calibration loop over a bucket of runs: :func:`run_prompt`.

One invocation of the loop is recorded (``prompt_runs``) with everything its tasks need (data
folder, runs, staging and input tags, calibrations, options); the luigi graph
(:mod:`b2calib.prompt.tasks`) has one task per calibration, identified by the database URL, the
invocation and the calibration, and calls :func:`task_complete`, :func:`task_requires` and
:func:`task_run` of this module, in whichever process b2luigi runs it.

A task is complete when the calibration job :func:`~b2calib.calibration.run_calibrations` would
run now completed and its validation is recorded, or when the task already recorded an outcome
in this invocation. A task whose calibration did not succeed records its outcome (FAILED,
NOT_ENOUGH_DATA, SKIPPED with the reason) and ends normally, so that its dependents run, see it
and record SKIPPED; calibrations that only come ``after`` it run as usual. A later invocation
tries again what did not succeed (its recorded algorithm steps are reused).
"""

from __future__ import annotations

import graphlib
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from b2calib.calibration.declaration import STAGES, Calibration, calibrations, get_calibration
from b2calib.calibration.jobs import Job, JobStore
from b2calib.calibration.runner import JobPlan, ProgressEvent, plan_jobs, run_calibrations
from b2calib.calibration.validation import no_ok_channel, validate_job
from b2calib.conditions import ConditionsDB
from b2calib.db import now
from b2calib.engine.integrity import verify_files
from b2calib.exceptions import B2CalibError, CalibrationError, ConfigError
from b2calib.prompt.store import PromptRun, PromptStore, TaskOutcome
from b2calib.prompt.summary import PromptRow, PromptSummary
from b2calib.runs import RunRegistry

__all__ = [
    "run_prompt",
    "summarize",
    "task_complete",
    "task_priority",
    "task_requires",
    "task_run",
]

#: The luigi priority of each stage: among the tasks ready to run, earlier stages go first.
_PRIORITY = {stage: 10 * (len(STAGES) - i) for i, stage in enumerate(STAGES)}


def run_prompt(
    data: str | os.PathLike[str],
    *,
    db: ConditionsDB,
    bucket: int | None = None,
    exp: int | None = None,
    runs: Sequence[int] | range | None = None,
    input_tags: Sequence[str] = (),
    staging_tag: str | None = None,
    calibrations: Sequence[str] | None = None,
    workers: int = 2,
    executor: str = "inprocess",
    batch_system: str | None = None,
    update_running: str | None = None,
    mode: str = "strict",
    auto_validate: bool = False,
    config: Mapping[str, Mapping[str, Any] | str | os.PathLike[str]] | None = None,
    progress: bool = True,
    min_lumi_fb: float = 9.0,
) -> PromptSummary:
    """Run the prompt calibration loop over a bucket of runs, on b2luigi.

    Every selected calibration becomes one b2luigi task (requiring the tasks of the
    calibrations it depends on or comes after); b2luigi runs them with ``workers`` local
    workers, or on ``batch_system``. Each task runs its calibration with
    :func:`~b2calib.calibration.run_calibrations` into the bucket's staging tag, validates the
    new payloads against the input tags and records the verdict in the job record. Killed at
    any moment and started again with the same arguments, the loop continues where it stopped
    (jobs and algorithm steps already recorded are not redone; no payload is staged twice).

    Parameters
    ----------
    data
        Folder of skim files with its ``runs.json``.
    db
        The conditions database (job records, staging tag, the loop's own records).
    bucket
        A prompt-processing bucket of the folder's run registry
        (:meth:`~b2calib.runs.RunRegistry.buckets` with ``min_lumi_fb``); an unknown number is
        an error listing the buckets with their runs.
    exp, runs
        Instead of ``bucket``: the experiment and its runs (default every run of ``exp``).
    input_tags
        Global tags to start from, highest priority first; the staging tag of the previous
        bucket, when it exists, comes before them.
    staging_tag
        Default ``prompt_bucket{N}``, or ``prompt_e{E}_r{A}-{B}`` for ``exp`` and ``runs``;
        created OPEN when missing; moved back from TESTING to OPEN when a calibration is to
        run (the content the manager tests changes). When every calibration succeeded it goes
        to TESTING.
    calibrations
        Names of registered calibrations (default: every registered one). A dependency that is
        not among them must have completed into the staging tag before.
    workers
        Local b2luigi workers (calibrations run at once).
    executor
        The engine's executor inside a task (default ``"inprocess"``: the workers already
        use the cores).
    batch_system
        b2luigi's ``batch_system`` setting for the tasks: ``"local"`` (default), ``"lsf"``,
        ``"htcondor"``, ``"slurm"``, ``"auto"`` (the first of them found), ``"gbasf2"`` (a
        b2luigi plug-in for basf2 jobs on the grid): b2luigi's own back ends, of which only
        local is tested here. On a batch system each task runs in a job of its own, which re-creates
        it from its parameters (database URL, invocation, calibration) and reads the rest
        from the database: the database must be reachable from the batch nodes.
    update_running, mode
        Once the staging tag is VALIDATED, append it to this running tag with
        :meth:`~b2calib.conditions.ConditionsDB.running_update` (from the first run of the
        bucket, in ``mode``), then snapshot the running tag up to the bucket's last run as
        ``{running}_bucket{N}`` (``{running}_e{E}_r{A}-{B}``). Done once: a re-run finds it done.
    auto_validate
        When every calibration is OK and every validation GOOD, move the staging tag from
        TESTING to VALIDATED (recorded in its history with the reason).
    config
        Expert-config overrides per calibration name (mappings or JSON files).
    progress
        Print one line per event and calibration (queued, collecting n/m, fitting,
        validating, done).
    min_lumi_fb
        The buckets' minimum luminosity.

    Returns
    -------
    PromptSummary
        Built from the database's records: a re-run with nothing to do gives the same rows.

    Raises
    ------
    ConfigError
        An unknown bucket (the message lists the buckets), run, calibration or batch system;
        a staging tag VALIDATED (or later) that a calibration to run would change. Nothing is
        recorded then.
    MissingExtraError
        b2luigi is not installed (the ``prompt`` extra).
    """
    from b2calib.prompt.tasks import batch_systems, build

    systems = batch_systems()  # b2luigi (the prompt extra), before anything is recorded
    if batch_system is not None and batch_system not in systems:
        raise ConfigError(f"batch system {batch_system!r}: b2luigi knows {', '.join(systems)}")
    folder = Path(data).resolve()  # the tasks' folder: the same job keys from any directory
    registry = RunRegistry.load(folder / "runs.json", on_duplicate="drop")
    previous: str | None = None
    if bucket is not None:
        if exp is not None or runs is not None:
            raise ConfigError("give a bucket, or an experiment and runs, not both")
        found = {b.index: b for b in registry.buckets(min_lumi_fb)}
        if bucket not in found:
            listed = "; ".join(
                f"{b.index}: exp {b.exp} run"
                + (
                    f"s {b.first_run}-{b.last_run}"
                    if b.last_run > b.first_run
                    else f" {b.first_run}"
                )
                + ("" if b.complete else " (open)")
                for b in found.values()
            )
            raise ConfigError(
                f"{folder / 'runs.json'}: no bucket {bucket} (at {min_lumi_fb:g} fb^-1 per "
                f"bucket); buckets: {listed or 'none'}"
            )
        chosen = found[bucket]
        exp, run_list = chosen.exp, [r.run for r in chosen.runs]
        staging = staging_tag or f"prompt_bucket{bucket}"
        previous = _previous_staging(db, bucket, exp)
    else:
        if exp is None:
            raise ConfigError("give a bucket (--bucket N) or an experiment and runs (--exp E)")
        known = sorted(r.run for r in registry if r.exp == exp)
        run_list = sorted(set(runs)) if runs is not None else known
        missing = [r for r in run_list if r not in known]
        if missing or not run_list:
            raise ConfigError(
                f"{folder / 'runs.json'}: experiment {exp} has no run "
                f"{', '.join(map(str, missing)) if missing else '(none registered)'}"
            )
        staging = staging_tag or f"prompt_e{exp}_r{run_list[0]}-{run_list[-1]}"
    tags = list(dict.fromkeys([*([previous] if previous else []), *input_tags]))
    if staging in tags:
        raise ConfigError(f"staging tag {staging} cannot also be an input tag")
    names = _schedule(calibrations)
    overrides = {
        name: (dict(value) if isinstance(value, Mapping) else str(value))
        for name, value in (config or {}).items()
    }
    # what is done already: the job each calibration would run now completed and validated
    runs_now = _load_registry(db.url, folder)
    plans = plan_jobs(
        names,
        folder,
        db=db,
        staging_tag=staging,
        input_tags=tags,
        exp=exp,
        runs=run_list,
        config=overrides,
        registry=runs_now,
    )
    keys = {name: p.key for name, p in plans.items()}
    done = {n for n in names if _done(db, keys.get(n, ""))}
    pending = [n for n in names if n not in done]
    if (batch_system or "local") == "local":
        _verify_before_fork(plans, pending)
    actions = _open_staging(db, staging, pending, bucket, exp, run_list)
    store = PromptStore(db)
    prun = store.start(
        bucket=bucket,
        exp=exp,
        runs=run_list,
        staging_tag=staging,
        input_tags=tags,
        options={
            "data": str(folder),
            "calibrations": names,
            "executor": executor,
            "config": overrides,
            "workers": workers,
            "batch_system": batch_system or "local",
            "update_running": update_running,
            "mode": mode,
            "auto_validate": auto_validate,
            "progress": progress,
        },
    )
    plan = _plan(db.url, prun.id)
    # this process's tasks use the caller's connection and what was read above
    cached = (db.url, prun.id)
    _DBS[(os.getpid(), db.url, db.author)] = db
    _KEYS[(db.url, prun.id)] = keys
    _REGISTRIES[cached] = runs_now
    try:
        if progress:
            for action in actions:
                _say("prompt", action)
            for name in names:
                _say(
                    name, "done before (job completed and validated)" if name in done else "queued"
                )
        build(db.url, prun.id, names, workers=workers, batch_system=batch_system or "local")
        store.finish(prun.id)
        summary = summarize(db, prun.id, plan=plan)
    finally:
        _DBS.pop((os.getpid(), db.url, db.author), None)
        _KEYS.pop((db.url, prun.id), None)
        _REGISTRIES.pop(cached, None)
        _PLANS.pop((db.url, prun.id), None)
    summary.actions += actions
    summary.actions += _promote(db, summary, auto_validate)
    if update_running is not None:
        summary.actions += _update_running(db, summary, update_running, mode)
    summary.state = db.tag(staging).state
    return summary


def _verify_before_fork(plans: Mapping[str, JobPlan], names: Sequence[str]) -> None:
    """Compare the files the calibrations ``names`` will read with their catalogue once, here,
    before b2luigi forks a process for each task: the tasks inherit the checksums (kept per
    process by file identity, :func:`~b2calib.engine.integrity.verify_files`) instead of each
    reading its files whole again. A task still finds and reports a corrupt file, or one no
    catalogue lists, itself.

    On the demo bucket (issue 20, 2-core benchmark machine) the 22 calibrations' tasks spent
    20.4 s of their 117.5 s verifying, most files read whole by several tasks."""
    files = {f[0] for n in names if n in plans for f in plans[n].inputs.get("files", [])}
    if files:
        verify_files(sorted(files))


def _done(db: ConditionsDB, key: str) -> bool:
    """Whether job ``key`` completed and its validation is recorded."""
    store = JobStore(db)
    job = store.job(key) if key else None
    return job is not None and job.state == "completed" and store.validation(job) is not None


def _open_staging(
    db: ConditionsDB,
    staging: str,
    pending: Sequence[str],
    bucket: int | None,
    exp: int,
    runs: Sequence[int],
) -> list[str]:
    """Make the staging tag ready for the ``pending`` calibrations: created OPEN when missing;
    moved back from TESTING to OPEN when there is something to run (what the manager tests
    changes); a VALIDATED (or later) tag is never reopened by the loop: refused."""
    state = {t.name: t.state for t in db.tags()}.get(staging)
    if state is None:
        where = f"bucket {bucket}" if bucket is not None else f"exp {exp} runs {_runs_text(runs)}"
        db.create_tag(staging, description=f"prompt calibration of {where}")
        return []
    if not pending or state == "OPEN":
        return []
    if state == "TESTING":
        db.set_state(staging, "OPEN")
        return [
            f"staging tag {staging} moved back from TESTING to OPEN: {', '.join(pending)} to run"
        ]
    raise ConfigError(
        f"staging tag {staging} is {state} and {', '.join(pending)} would change it: move it "
        f"back to OPEN (b2calib gt state {staging} OPEN) or give another staging tag"
    )


def _runs_text(runs: Sequence[int]) -> str:
    return f"{runs[0]}-{runs[-1]}" if len(runs) > 1 else str(runs[0])


def _previous_staging(db: ConditionsDB, bucket: int, exp: int) -> str | None:
    """The staging tag of the previous bucket: the one the loop last used for it, else
    ``prompt_bucket{N-1}`` when it exists."""
    existing = {t.name for t in db.tags()}
    for r in reversed(PromptStore(db).runs()):
        if r.bucket == bucket - 1 and r.exp == exp and r.staging_tag in existing:
            return r.staging_tag
    name = f"prompt_bucket{bucket - 1}"
    return name if name in existing else None


def _schedule(selected: Sequence[str] | None) -> list[str]:
    """The calibrations to run, ordered by ``depends_on`` and ``after`` (among them), earlier
    stages first where the graph leaves the choice."""
    known = calibrations()
    names = list(dict.fromkeys(selected)) if selected is not None else list(known)
    cals = {n: get_calibration(n) for n in names}
    if not cals:
        raise ConfigError("no calibration to run")
    graph = {n: _predecessors(c, cals) for n, c in cals.items()}
    sorter = graphlib.TopologicalSorter(graph)
    try:
        sorter.prepare()
    except graphlib.CycleError as err:
        cycle = " -> ".join(err.args[1])
        raise CalibrationError(f"calibration dependencies form a cycle: {cycle}") from None
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda n: (STAGES.index(cals[n].stage), n))
        order += ready
        sorter.done(*ready)
    return order


def _predecessors(cal: Calibration, scheduled: Mapping[str, Any]) -> list[str]:
    """The scheduled calibrations ``cal`` depends on or comes after."""
    return [d for d in dict.fromkeys([*cal.depends_on, *cal.after]) if d in scheduled]


# -- the tasks' side (any process) -------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """What the tasks of one invocation need, read from its record."""

    url: str
    run: PromptRun
    data: Path
    calibrations: tuple[str, ...]
    executor: str
    config: dict[str, Any]
    progress: bool


_PLANS: dict[tuple[str, int], _Plan] = {}
_DBS: dict[tuple[int, str, str], ConditionsDB] = {}
_REGISTRIES: dict[tuple[str, int], RunRegistry] = {}
_KEYS: dict[tuple[str, int], dict[str, str]] = {}


def _db(url: str, author: str) -> ConditionsDB:
    """This process's connection to ``url`` (a forked worker opens its own)."""
    key = (os.getpid(), url, author)
    if key not in _DBS:
        _DBS[key] = ConditionsDB(url, author=author)
    return _DBS[key]


def _plan(url: str, run_id: int) -> _Plan:
    if (url, run_id) not in _PLANS:
        db = ConditionsDB(url)
        try:
            run = PromptStore(db).run(run_id)
        finally:
            db.close()
        o = run.options
        _PLANS[(url, run_id)] = _Plan(
            url=url,
            run=run,
            data=Path(o["data"]),
            calibrations=tuple(o["calibrations"]),
            executor=str(o["executor"]),
            config=dict(o["config"]),
            progress=bool(o["progress"]),
        )
    return _PLANS[(url, run_id)]


def _registry(plan: _Plan) -> RunRegistry:
    """The invocation's run registry (:func:`_load_registry`), read once (before the workers
    fork: they have it too)."""
    key = (plan.url, plan.run.id)
    if key not in _REGISTRIES:
        _REGISTRIES[key] = _load_registry(plan.url, plan.data)
    return _REGISTRIES[key]


def _load_registry(url: str, data: Path) -> RunRegistry:
    """The folder's runs with the data-quality flags certified in the database (what the
    calibrations' ``dq`` filters read), as ``b2calib calibrate`` does."""
    from b2calib.qa.store import QADatabase

    loaded = RunRegistry.load(data / "runs.json", on_duplicate="drop")
    qdb = QADatabase(url)
    try:
        return RunRegistry(
            qdb.runs.with_certified_flags(loaded),
            duplicates=loaded.duplicates,
            source=loaded.source,
        )
    finally:
        qdb.close()


def task_priority(calibration: str) -> int:
    """The luigi priority of a calibration's task: earlier stages first."""
    return _PRIORITY.get(get_calibration(calibration).stage, 0)


def task_requires(url: str, run_id: int, calibration: str) -> list[str]:
    """The calibrations of the invocation whose tasks ``calibration``'s task requires."""
    plan = _plan(url, run_id)
    return _predecessors(get_calibration(calibration), dict.fromkeys(plan.calibrations))


def task_complete(url: str, run_id: int, calibration: str) -> bool:
    """Whether ``calibration``'s task of invocation ``run_id`` has nothing (more) to do: it
    recorded an outcome in this invocation, or the job it would run now completed and its
    validation is recorded."""
    plan = _plan(url, run_id)
    db = _db(url, plan.run.author)
    if PromptStore(db).outcome(run_id, calibration) is not None:
        return True
    return _done(db, _job_key(plan, db, calibration) or "")


def _job_key(plan: _Plan, db: ConditionsDB, calibration: str) -> str | None:
    """The key of the job ``run_calibrations`` would run now for ``calibration`` (computed
    without collecting, by :func:`~b2calib.calibration.plan_jobs` for every calibration of the
    invocation at once: a dependency enters with its planned job, which is the job its task
    completes), or ``None`` when the runner would open no job."""
    key = (plan.url, plan.run.id)  # computed before the workers fork, valid in them too
    if key not in _KEYS:
        plans = plan_jobs(
            list(plan.calibrations),
            plan.data,
            db=db,
            staging_tag=plan.run.staging_tag,
            input_tags=plan.run.input_tags,
            exp=plan.run.exp,
            runs=plan.run.runs,
            config=plan.config,
            registry=_registry(plan),
        )
        _KEYS[key] = {name: p.key for name, p in plans.items()}
    return _KEYS[key].get(calibration) or None


def task_run(url: str, run_id: int, calibration: str) -> None:
    """Run ``calibration`` for invocation ``run_id`` and record its outcome: never raises for
    a calibration that did not succeed (its dependents must see the outcome)."""
    plan = _plan(url, run_id)
    db = _db(url, plan.run.author)
    store = PromptStore(db)
    started = now()
    say = _Reporter(calibration, plan.progress)
    try:
        outcome, reason, key, fallback = _run_one(plan, db, calibration, say)
    except Exception as err:  # recorded as the task's failure: the loop goes on
        outcome, key, fallback = "FAILED", "", False
        reason = f"{type(err).__name__}: {err}"
        if not isinstance(err, B2CalibError):  # a bug: where it was raised
            where = traceback.extract_tb(err.__traceback__)[-1]
            reason += f" (at {Path(where.filename).name}:{where.lineno} in {where.name})"
    # a FALLBACK completed (its dependents run): recorded OK, shown as the summary shows it
    shown, why = ("FALLBACK", _FALLBACK_REASON) if fallback else (outcome, reason)
    say.line(f"done: {shown}" + (f" - {why}" if why and shown != "OK" else ""))
    store.record(run_id, calibration, outcome, reason, key, started)


#: Why a calibration that completed is FALLBACK (the live line and the summary's row).
_FALLBACK_REASON = "no channel of its payloads is OK: every one fell back or failed"


def _run_one(
    plan: _Plan, db: ConditionsDB, name: str, say: _Reporter
) -> tuple[str, str, str, bool]:
    """(outcome, reason, job key, whether it is FALLBACK: no OK channel) of running
    calibration ``name``."""
    cal = get_calibration(name)
    store, jobs = PromptStore(db), JobStore(db)
    staging = plan.run.staging_tag
    for dep in cal.depends_on:
        if dep in plan.calibrations:
            before = store.outcome(plan.run.id, dep)
            if before is not None and before.outcome != "OK":
                return "SKIPPED", f"dependency {dep} {before.outcome}: {before.reason}", "", False
        elif not any(j.staging_tag == staging and j.state == "completed" for j in jobs.jobs(dep)):
            return (
                "SKIPPED",
                f"dependency {dep} is not scheduled and has not completed into staging tag "
                f"{staging}",
                "",
                False,
            )
    reports = run_calibrations(
        [name],
        plan.data,
        db=db,
        staging_tag=staging,
        input_tags=plan.run.input_tags,
        exp=plan.run.exp,
        runs=plan.run.runs,
        config=plan.config,
        executor=plan.executor,
        progress=False,
        registry=_registry(plan),
        on_event=say.event,
    )
    report = reports[name]
    if report.status != "OK":
        return report.status, report.message, report.job, False
    job = jobs.job(report.job)
    if job is None:  # pragma: no cover - the runner has just completed it
        raise CalibrationError(f"calibration {name}: job {report.job[:12]} is not recorded")
    if jobs.validation(job) is None:
        say.line("validating")
        result = validate_job(db, job, plan.run.input_tags)
        jobs.record_validation(job, result)
        say.line(f"validation {result.verdict.value}: {result.reason}")
    channels = {k: int(v) for k, v in job.summary.get("channels", {}).items()}
    return "OK", report.message, report.job, no_ok_channel(channels)  # as the summary's row


class _Reporter:
    """Progress lines of one calibration: time, calibration, event; collection throttled."""

    def __init__(self, calibration: str, enabled: bool, every_s: float = 2.0) -> None:
        self.calibration = calibration
        self.enabled = enabled
        self.every_s = every_s
        self.last = 0.0

    def line(self, text: str) -> None:
        if self.enabled:
            _say(self.calibration, text)

    def event(self, e: ProgressEvent) -> None:
        """A progress event of the runner, as a line (collection: every ``every_s`` and at
        its end)."""
        if e.phase == "collecting":
            t = time.monotonic()
            if e.done == e.total or t - self.last >= self.every_s:
                self.last = t
                self.line(f"collecting {e.done}/{e.total} items (pass {e.iteration + 1})")
        elif e.phase == "queued":
            self.line("started")
        elif e.phase == "fitting":
            self.line(f"fitting (pass {e.iteration + 1})")
        elif e.phase == "staging":
            self.line("staging")
        elif e.phase == "done":
            self.line(f"job {e.message}")


def _say(calibration: str, text: str) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    print(f"{stamp}  {calibration:<24} {text}", file=sys.stdout, flush=True)


# -- the summary and the end of the loop ----------------------------------------------------


def summarize(db: ConditionsDB, run_id: int, *, plan: _Plan | None = None) -> PromptSummary:
    """The summary of invocation ``run_id`` from the database's records: each calibration's
    outcome in this invocation, or the job it completed before (with the times recorded
    then)."""
    plan = plan or _plan(db.url, run_id)
    store = PromptStore(db)
    outcomes = store.outcomes(run_id)
    # by stage, and in the order they were scheduled within a stage
    names = sorted(
        plan.calibrations,
        key=lambda n: (STAGES.index(get_calibration(n).stage), plan.calibrations.index(n)),
    )
    rows = [_row(plan, db, name, outcomes.get(name)) for name in names]
    return PromptSummary(
        prompt_run=run_id,
        staging_tag=plan.run.staging_tag,
        input_tags=list(plan.run.input_tags),
        bucket=plan.run.bucket,
        exp=plan.run.exp,
        runs=list(plan.run.runs),
        rows=rows,
        state=db.tag(plan.run.staging_tag).state,
    )


def _row(plan: _Plan, db: ConditionsDB, name: str, outcome: TaskOutcome | None) -> PromptRow:
    cal = get_calibration(name)
    row = PromptRow(name, cal.stage, "FAILED")
    job: Job | None = None
    timing: TaskOutcome | None = outcome
    if outcome is not None:
        row.status, row.reason, row.job = outcome.outcome, outcome.reason, outcome.job_key
        row.this_run = True
        if outcome.job_key:
            job = JobStore(db).job(outcome.job_key)
    else:
        key = _job_key(plan, db, name)
        job = JobStore(db).job(key) if key else None
        if job is not None and job.state == "completed":
            row.status, row.job = "OK", job.key
            timing = PromptStore(db).last_success(job.key)
        else:
            row.reason = "did not run: the loop stopped before its task ended"
            job = None
    if timing is not None:
        row.started, row.finished, row.wall_time = timing.started, timing.finished, timing.wall_time
    elif job is not None:
        s = job.summary
        row.wall_time = s.get("wall_time")
        row.started = _time(s.get("started"))
        row.finished = _time(s.get("finished"))
    if row.status == "OK" and job is not None:
        s = job.summary
        row.reason = ""
        row.channels = {k: int(v) for k, v in s.get("channels", {}).items()}
        staged = s.get("staged", [])
        row.iovs = len(staged)
        row.payloads = len({(n, r) for n, r, _ in staged})
        if no_ok_channel(row.channels):
            row.status = "FALLBACK"
            row.reason = _FALLBACK_REASON
        record = JobStore(db).validation(job)
        if record is not None:
            row.verdict, row.verdict_reason = record.verdict.value, record.reason
    return row


def _time(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text)


def _promote(db: ConditionsDB, summary: PromptSummary, auto_validate: bool) -> list[str]:
    """TESTING when every calibration succeeded; VALIDATED with ``auto_validate`` when every
    one is OK and every verdict GOOD."""
    tag = summary.staging_tag
    state = db.tag(tag).state
    if not summary.succeeded:
        bad = [r.calibration for r in summary.rows if not r.succeeded]
        return [
            f"staging tag {tag} stays {state}: {len(bad)} calibration"
            f"{'s' if len(bad) > 1 else ''} did not succeed ({', '.join(bad)})"
        ]
    actions = []
    if state == "OPEN":
        db.set_state(tag, "TESTING")
        state = "TESTING"
        actions.append(f"staging tag {tag} moved to TESTING: ready for the manager's approval")
    if not auto_validate:
        return actions
    why_not = [f"{r.calibration} is {r.status}" for r in summary.rows if not r.ok]
    why_not += [
        f"{r.calibration}'s validation is {r.verdict or 'missing'}"
        for r in summary.rows
        if r.verdict != "GOOD"
    ]
    if why_not:
        actions.append(f"--auto-validate: staging tag {tag} not validated: {'; '.join(why_not)}")
    elif state == "TESTING":
        reason = (
            f"auto-validated by the prompt loop (invocation {summary.prompt_run}): "
            f"{len(summary.rows)} calibrations OK, every validation GOOD"
        )
        _validate_tag(db, tag, reason)
        actions.append(f"staging tag {tag} moved to VALIDATED ({reason})")
    return actions


def _validate_tag(db: ConditionsDB, tag: str, reason: str) -> None:
    """TESTING -> VALIDATED with the reason in the tag's history, in one transaction."""
    import sqlalchemy as sa

    from b2calib.conditions.tables import globaltags

    with db.write() as conn:
        g = globaltags
        state = conn.execute(sa.select(g.c.state).where(g.c.name == tag)).scalar()
        if state != "TESTING":
            raise ConfigError(f"staging tag {tag} is {state}, not TESTING: not validated")
        conn.execute(g.update().where(g.c.name == tag).values(state="VALIDATED", modified=now()))
        db.log(conn, "state", tag, old="TESTING", new="VALIDATED", reason=reason)


def _update_running(db: ConditionsDB, summary: PromptSummary, running: str, mode: str) -> list[str]:
    """``--update-running``: once the staging tag is VALIDATED, append it to ``running`` from
    the first run of the bucket and snapshot ``running`` up to its last run; each is done
    once (a re-run finds them in the history and the tags)."""
    staging = summary.staging_tag
    state = db.tag(staging).state
    if state != "VALIDATED":
        return [
            f"running update of {running} not done: staging tag {staging} is {state}, not "
            f"VALIDATED. Approve it (b2calib gt state {staging} VALIDATED), then run the same "
            "command again: with every calibration done it only does the running update"
        ]
    first, last = (summary.exp, summary.runs[0]), (summary.exp, summary.runs[-1])
    actions = []
    done = [
        h
        for h in db.history(running)
        if h.action == "running_update" and h.details.get("staging") == staging
    ]
    if done:
        actions.append(
            f"running update of {running} with {staging} was done before "
            f"({done[-1].time:%Y-%m-%d %H:%M} UTC)"
        )
    else:
        update = db.running_update(running, staging, valid_from=first, mode=mode)
        actions.append(
            f"running update of {running} with {staging} from run {first[0]}.{first[1]} "
            f"({mode}): {len(update.created)} IoVs added, {len(update.closed)} closed, "
            f"{len(update.extended)} extended"
        )
        actions += [f"  {w}" for w in update.warnings]
    if summary.bucket is not None:
        name = f"{running}_bucket{summary.bucket}"
    else:
        name = f"{running}_e{summary.exp}_r{summary.runs[0]}-{summary.runs[-1]}"
    if name in {t.name for t in db.tags()}:
        actions.append(f"snapshot {name} of {running} exists already")
    else:
        db.snapshot(running, name, until=last)
        actions.append(f"snapshot {name} of {running} up to run {last[0]}.{last[1]} (PUBLISHED)")
    return actions
