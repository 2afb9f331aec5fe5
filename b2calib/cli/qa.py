"""The quality-assurance commands of ``b2calib``: monitoring, certification, good-run lists
and dashboard users.

::

    b2calib qa collect DATA [--exp E] [--runs 1-11] [--executor X]   runs, variables, histograms
    b2calib qa reference set EXP RUNS DETECTOR/NAME... | --all  [--method M] [--options O]
                             [--min-entries N] [--p-warning P] [--p-error P]
    b2calib qa reference set --exp E --auto      one reference run per class and period of E
    b2calib qa reference list
    b2calib qa period add --exp E --from-run N --reason R     the detector changed from run N on
    b2calib qa period list [--exp E] | remove --exp E --from-run N
    b2calib qa evaluate [--exp E] [--runs R]                  compare with the references
    b2calib qa status [--exp E] [--runs R]                    automatic status and flags
    b2calib qa evidence EXP RUN [DETECTOR]                    what feeds it, worst first
    b2calib qa trend NAME [--exp E]                           a monitoring variable per run
    b2calib signoff flag EXP RUNS DETECTORS FLAG --comment C --user U [--force]
                                                 (RUNS 7 or 1-30, DETECTORS CDC, CDC,ECL or all)
    b2calib signoff history EXP RUN [DETECTOR]                the flags' history
    b2calib signoff state EXP RUN [STATE --user U [--comment C] [--force]]  show or move a run
                                                       along OPEN -> SIGNOFF -> COMPLETED
    b2calib grl make NAME EXPRESSION --user U [--description D] [--exp E] [--runs R]
    b2calib grl list | versions NAME | show NAME [--version N] | presets
    b2calib grl diff NAME V1 V2                               runs added, removed, luminosity
    b2calib grl export NAME [--version N] [--format json|cms|csv] [-o FILE]
    b2calib grl combine A OP B [-o FILE]                      OP: and, or, minus
    b2calib user add NAME --role viewer|expert|manager [--detectors CDC,ECL]
    b2calib user list | remove NAME | password NAME

Certifying commands (``signoff flag``, ``signoff state``, ``grl make``) authenticate like the
dashboards: ``--user`` (default ``$B2CALIB_USER``) and the password, read from
``$B2CALIB_PASSWORD`` (automation), else from standard input when it is not a terminal
(``echo ... | b2calib ...``), else asked for. Managing users needs write access to the database
itself, as managing global tags does; a new password is asked for twice, or read from stdin.

Overriding another person's flag, GOOD over an automatic ERROR and completing a run with
NOTSET detectors need ``--force``: without it the command lists every such change, writes
nothing and exits with status 1; with it each one is recorded as confirmed in the history.
Good-run lists sum the recorded luminosity (run registry), and say so.

A QA period ("from run N of experiment E on, the detector changed") gives the runs from N on
references and trend bands of their own, as a shift changes the references after an
intervention; like the references, periods are set with write access to the database.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from b2calib.cli.output import DB_HELP, bad_file_policy, input_options, parse_runs, record, table

if TYPE_CHECKING:
    from b2calib.qa.grl import GoodRunList
    from b2calib.qa.store import QADatabase, User

__all__ = ["grl", "qa", "signoff", "user"]


@contextmanager
def _open(url: str | None) -> Iterator[QADatabase]:
    from b2calib.qa.store import QADatabase

    qdb = QADatabase(url)
    try:
        yield qdb
    finally:
        qdb.close()


def _uses_db(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--db`` and pass the opened QA database as the command's first argument."""

    @functools.wraps(f)
    def command(*, db_url: str | None, **kwargs: Any) -> Any:
        with _open(db_url) as qdb:
            return f(qdb, **kwargs)

    return click.option(
        "--db", "db_url", metavar="URL", envvar="B2CALIB_DB", show_envvar=True, help=DB_HELP
    )(command)


def _login(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--user``/``--password`` and pass the authenticated user as ``user``."""

    @functools.wraps(f)
    def command(qdb: QADatabase, *, user_name: str | None, **kwargs: Any) -> Any:
        return f(qdb, user=_authenticate(qdb, user_name), **kwargs)

    return click.option(
        "--user",
        "user_name",
        envvar="B2CALIB_USER",
        help="Your b2calib user name (default $B2CALIB_USER); the password is read from "
        "$B2CALIB_PASSWORD, else from standard input when it is not a terminal, else asked for.",
    )(command)


def _authenticate(qdb: QADatabase, user_name: str | None) -> User:
    if not user_name:
        raise click.UsageError("this command writes: give --user (or set $B2CALIB_USER)")
    password = os.environ.get("B2CALIB_PASSWORD") or _read_password(twice=False)
    user = qdb.users.authenticate(user_name, password)
    if user is None:
        raise click.ClickException(f"user {user_name!r}: wrong name or password")
    return user


def _read_password(*, twice: bool) -> str:
    """A password from standard input when it is not a terminal (``echo pw | b2calib ...``),
    else asked for without echo (twice for a new one)."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            raise click.ClickException("no password on standard input")
        return line
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=twice))


def _runs_range(runs_text: str | None) -> tuple[int | None, int | None]:
    if runs_text is None:
        return None, None
    runs = parse_runs(runs_text)
    return min(runs), max(runs)


_RUNS = click.option("--runs", "runs_text", help="Run range, e.g. '1-11' (default: all).")
_EXP = click.option("--exp", type=int, help="Experiment (default: all).")


# -- qa ----------------------------------------------------------------------------------------


@click.group()
def qa() -> None:
    """Monitoring variables, QA histograms, references and the automatic status."""


@qa.command("collect")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_EXP
@_RUNS
@click.option(
    "--executor",
    default="processes",
    show_default=True,
    help="inprocess, threads, processes, or a Dask scheduler address.",
)
@click.option("--no-cache", is_flag=True, help="Do not use the collector cache.")
@click.option(
    "--register-only",
    is_flag=True,
    help="Only register the runs (what certifying them needs), reading no event.",
)
@input_options
@_uses_db
def qa_collect(
    qdb: QADatabase,
    data: Path,
    exp: int | None,
    runs_text: str | None,
    executor: str,
    no_cache: bool,
    register_only: bool,
    on_bad_file: str | None,
    stop_on_bad_file: bool,
    no_verify: bool,
    max_nonfinite: float,
) -> None:
    """Register the runs of DATA (its runs.json) and store each run's monitoring variables and
    QA histograms; runs with references are evaluated. Every file is compared with its
    catalogue's checksum before it is read (--no-verify: not). --register-only: the runs
    alone, so that shifters can certify them (e.g. for the calibrations' data-quality
    filters) before or without the collection."""
    from b2calib.qa.monitoring import collect_qa
    from b2calib.runs import RunRegistry

    policy = bad_file_policy(on_bad_file, stop_on_bad_file)
    # a run listed twice stops the collection (or leaves the run out) as the policy says
    registry = RunRegistry.load(data / "runs.json", on_duplicate="drop")
    if register_only:
        chosen = parse_runs(runs_text) if runs_text else None
        selected = [
            r
            for r in registry
            if (exp is None or r.exp == exp) and (chosen is None or r.run in chosen)
        ]
        n = qdb.runs.import_runs(selected)
        click.echo(f"registered {n} runs of {data} (no event read)")
        return
    results = collect_qa(
        data,
        exp=exp,
        runs=parse_runs(runs_text) if runs_text else None,
        registry=registry,  # read once, here
        executor=executor,
        cache=not no_cache,
        on_error=policy,
        verify=not no_verify,
        max_nonfinite=max_nonfinite,
    )
    qdb.runs.import_runs(registry)
    for rq in results:
        qdb.histograms.store_run(rq)
    grid: dict[tuple[int, int], dict[str, str]] = {}
    if results and qdb.histograms.references():
        first, last = min(rq.run for rq in results), max(rq.run for rq in results)
        grid = qdb.status.evaluate_all(exp=exp, first=first, last=last)
    rows = []
    for rq in results:
        status = grid.get((rq.exp, rq.run), {})
        bad = sorted(d for d, s in status.items() if s in ("WARNING", "ERROR"))
        skipped = ", ".join(f"{f.path} ({f.reason})" for f in rq.skipped) or "-"
        rows.append(
            [rq.exp, rq.run, len(rq.variables), len(rq.histograms), " ".join(bad) or "-", skipped]
        )
    header = ["exp", "run", "variables", "histograms", "warning/error", "skipped files"]
    click.echo(table(header, rows))


@qa.group("reference")
def qa_reference() -> None:
    """The reference run of each QA histogram."""


@qa_reference.command("set")
@click.argument("exp", type=int, required=False)
@click.argument("runs_text", metavar="RUNS", required=False)
@click.argument("histograms", nargs=-1, metavar="[DETECTOR/NAME]...")
@click.option("--all", "all_", is_flag=True, help="Every QA histogram stored for that run.")
@click.option(
    "--auto",
    is_flag=True,
    help="With --exp E: one reference run per class of runs (run type, beam energy) and QA "
    "period of experiment E, every histogram: the first run of the class in the period with "
    "enough entries in each and no detector flagged BAD.",
)
@click.option("--exp", "auto_exp", type=int, help="The experiment of --auto.")
@click.option("--method", type=click.Choice(["chi2", "ks", "ad"]), help="Default: as defined.")
@click.option("--options", help="Test options (chi2: UU, UW, WW, UF, OF; ks: U, O, N).")
@click.option("--min-entries", type=float, help="Fewer entries: TOO_FEW (default: as defined).")
@click.option("--p-warning", type=float, default=0.05, show_default=True)
@click.option("--p-error", type=float, default=0.01, show_default=True)
@_uses_db
def qa_reference_set(
    qdb: QADatabase,
    exp: int | None,
    runs_text: str | None,
    histograms: tuple[str, ...],
    all_: bool,
    auto: bool,
    auto_exp: int | None,
    method: str | None,
    options: str | None,
    min_entries: float | None,
    p_warning: float,
    p_error: float,
) -> None:
    """Make run EXP RUN the reference of the histograms named DETECTOR/NAME (or of all of that
    run's histograms, with --all) for the runs of its experiment, class (run type, beam
    energy: a 4S physics run for the 4S physics runs, a Continuum run for the Continuum runs,
    a cosmic run for the cosmics) and QA period (see `qa period`). RUNS may name one run of
    each class and period: 2,29,12. With --exp E --auto, b2calib proposes and sets one run per
    class and period."""
    from b2calib.qa.compare import Thresholds

    if auto:
        if auto_exp is None or exp is not None or histograms or all_:
            raise click.UsageError("--auto takes --exp E alone (no EXP RUNS, names or --all)")
        chosen = qdb.histograms.choose_references(auto_exp, min_entries=min_entries)
        if not chosen:
            raise click.ClickException(f"experiment {auto_exp} has no QA histograms stored")
        picks = [(auto_exp, run) for _, run in sorted(chosen.items(), key=lambda kv: kv[1])]
        all_ = True
    else:
        if exp is None or runs_text is None:
            raise click.UsageError("give EXP RUNS (or --exp E --auto)")
        if auto_exp is not None:
            raise click.UsageError("--exp goes with --auto; otherwise give EXP RUNS")
        if all_ == bool(histograms):
            raise click.UsageError("name the histograms as DETECTOR/NAME, or give --all (not both)")
        picks = [(exp, run) for run in parse_runs(runs_text)]
    keys: list[tuple[str, str]] = []
    for h in histograms:
        det, sep, hname = h.partition("/")
        if not sep or not det or not hname:
            raise click.BadParameter(f"{h!r} is not DETECTOR/NAME", param_hint="HISTOGRAMS")
        keys.append((det, hname))
    for e, run in picks:
        run_keys = qdb.histograms.keys(e, run) if all_ else keys
        if all_ and not run_keys:
            raise click.ClickException(f"run ({e}, {run}) has no QA histograms stored")
        for det, hname in run_keys:
            _, _, defaults = qdb.histograms.reference_defaults(det, hname)
            floor = defaults.min_entries if min_entries is None else min_entries
            ref = qdb.histograms.set_reference(
                det,
                hname,
                e,
                run,
                method=method,
                options=options,
                thresholds=Thresholds(floor, p_warning, p_error),
            )
            runs = qdb.periods.label(e, ref.period)
            click.echo(
                f"{det}/{hname}: reference run ({e}, {run}) of the {ref.run_type} "
                f"{ref.beam_energy} {runs} of experiment {e}, {ref.method} {ref.options}"
            )


@qa_reference.command("list")
@_uses_db
def qa_reference_list(qdb: QADatabase) -> None:
    """Every QA histogram's references (one per class of runs, run type and beam energy, and QA
    period of its experiment: "all" when the experiment has one period, else its runs,
    "-6", "7-11", "12-") and test."""
    periods = {(p.exp, p.first_run): p for p in qdb.periods.all()}

    def span(exp: int, first: int) -> str:
        p = periods.get((exp, first))
        if p is None or p.last_run is None:
            return "all" if first == 0 else f"{first}-"
        return f"{first}-{p.last_run}" if first else f"-{p.last_run}"

    rows = [
        [
            f"{r.detector}/{r.name}",
            f"{r.run_type} {r.beam_energy}",
            r.exp,
            r.run,
            span(r.exp, r.period),
            r.method,
            r.options or "-",
            r.thresholds.min_entries,
            r.thresholds.p_warning,
            r.thresholds.p_error,
        ]
        for r in qdb.histograms.references().values()
    ]
    header = [
        "histogram",
        "runs",
        "exp",
        "run",
        "period",
        "method",
        "options",
        "min entries",
        "p warn",
        "p err",
    ]
    click.echo(table(header, sorted(rows)) if rows else "no references")


@qa.group("period")
def qa_period() -> None:
    """QA periods: from a run on the detector changed (an intervention); the runs from it on
    get references and trend bands of their own."""


_FROM_RUN = click.option(
    "--from-run", "first_run", type=int, required=True, help="The period's first run."
)


@qa_period.command("add")
@click.option("--exp", type=int, required=True, help="The experiment.")
@_FROM_RUN
@click.option("--reason", required=True, help="What changed in the detector.")
@_uses_db
def qa_period_add(qdb: QADatabase, exp: int, first_run: int, reason: str) -> None:
    """From run --from-run of experiment --exp on, the detector configuration changed
    (--reason): a new QA period, until the next one. Its runs are judged against the trend of
    their period at once; their histograms need references of the period, then evaluating."""
    p = qdb.periods.add(exp, first_run, reason)
    n = len(qdb.runs.select(exp=exp, first=first_run, last=p.last_run))
    click.echo(
        f"experiment {exp}: QA period from run {first_run} on ({p.label}, {n} registered "
        f"{'run' if n == 1 else 'runs'}): {p.reason}"
    )
    moved = sum(k[-1] == first_run for k in qdb.histograms.references(exp))
    if moved:
        click.echo(
            f"{moved} {'reference' if moved == 1 else 'references'} of the runs before, being "
            f"runs from {first_run} on, moved to the new period"
        )
    click.echo(
        "its runs' monitoring variables are judged against the trend of the period now; set "
        f"the period's references (`b2calib qa reference set --exp {exp} --auto`, or "
        f"`b2calib qa reference set {exp} RUN --all` with a run of the period), then run "
        f"`b2calib qa evaluate --exp {exp}`"
    )


@qa_period.command("list")
@_EXP
@_uses_db
def qa_period_list(qdb: QADatabase, exp: int | None) -> None:
    """The QA periods of each experiment (of --exp only), each experiment's first included."""
    rows = [
        [
            p.exp,
            p.first_run,
            "-" if p.last_run is None else p.last_run,
            p.reason or "(the experiment's start)",
            p.author or "-",
            p.time.strftime("%Y-%m-%d %H:%M") if p.time else "-",
        ]
        for p in qdb.periods.all(exp)
    ]
    header = ["exp", "first run", "last run", "reason", "author", "time"]
    click.echo(table(header, rows, [True] * 3 + [False] * 3) if rows else "no experiment")


@qa_period.command("remove")
@click.option("--exp", type=int, required=True, help="The experiment.")
@_FROM_RUN
@_uses_db
def qa_period_remove(qdb: QADatabase, exp: int, first_run: int) -> None:
    """Remove the QA period of --exp that starts at --from-run: its runs join the period
    before, and its references are removed with it."""
    dropped = qdb.periods.remove(exp, first_run)
    click.echo(
        f"experiment {exp}: the QA period from run {first_run} is removed, with its "
        f"{dropped} {'reference' if dropped == 1 else 'references'}; run "
        f"`b2calib qa evaluate --exp {exp}`"
    )


@qa.command("evaluate")
@_EXP
@_RUNS
@_uses_db
def qa_evaluate(qdb: QADatabase, exp: int | None, runs_text: str | None) -> None:
    """Compare the runs' QA histograms with their references and show the automatic status."""
    first, last = _runs_range(runs_text)
    qdb.status.evaluate_all(exp=exp, first=first, last=last)
    _status_table(qdb, exp, first, last)


@qa.command("status")
@_EXP
@_RUNS
@_uses_db
def qa_status(qdb: QADatabase, exp: int | None, runs_text: str | None) -> None:
    """Automatic status / certified flag of each detector, and the sign-off state, per run."""
    first, last = _runs_range(runs_text)
    _status_table(qdb, exp, first, last)


def _status_table(qdb: QADatabase, exp: int | None, first: int | None, last: int | None) -> None:
    from b2calib.geometry import DETECTORS
    from b2calib.qa.store.status import STATUS_COLUMNS

    auto = qdb.status.grid(exp=exp, first=first, last=last)
    states = qdb.certification.states(exp=exp, first=first, last=last)
    systems = [c for c in STATUS_COLUMNS if c not in DETECTORS]
    rows = []
    for r in qdb.runs.select(exp=exp, first=first, last=last):
        cells = [f"{auto[r.key][d]}/{r.flag(d)}" if d in r.detectors else "-" for d in DETECTORS]
        rows.append(
            [r.exp, r.run, r.run_type, states[r.key], *cells] + [auto[r.key][c] for c in systems]
        )
    click.echo(
        "automatic status / certified flag of each detector; automatic status of the systems "
        f"({', '.join(systems)})"
    )
    click.echo(table(["exp", "run", "type", "state", *STATUS_COLUMNS], rows))


@qa.command("evidence")
@click.argument("exp", type=int)
@click.argument("run_number", metavar="RUN", type=int)
@click.argument("detector", required=False)
@_uses_db
def qa_evidence(qdb: QADatabase, exp: int, run_number: int, detector: str | None) -> None:
    """Every item that feeds the automatic status of run EXP RUN (of DETECTOR only: a detector,
    BEAM or TRACKING), worst first: each histogram against its reference, each monitoring
    variable against the trend of the run's class, each histogram without a reference."""
    items = qdb.status.evidence(exp, run_number, detector.upper() if detector else None)
    if not items:
        click.echo(f"run ({exp}, {run_number}): no evidence (no histogram, no variable)")
        return
    rows = [[e.detector, e.status, e.kind, e.message] for e in items]
    click.echo(table(["detector", "status", "kind", "evidence"], rows))


@qa.command("trend")
@click.argument("name")
@_EXP
@_uses_db
def qa_trend(qdb: QADatabase, name: str, exp: int | None) -> None:
    """A monitoring variable per physics run, with its band and each run's status."""
    tr = qdb.runs.trend(name, exp=exp)
    lo, hi = tr.band
    unit = f" [{tr.unit}]" if tr.unit else ""
    click.echo(
        f"{tr.name}{unit} ({tr.detector}): band {lo:.6g} .. {hi:.6g} for a typical run; each "
        "run is GOOD within its own limits (its class's centre +- 3 of its combined sigma)"
    )
    rows = [
        [int(e), int(r), f"{v:.6g}", f"{err:.2g}", f"{a:.6g}", f"{b:.6g}", str(s), str(c)]
        for e, r, v, err, a, b, s, c in zip(
            tr.exp, tr.run, tr.value, tr.error, tr.low, tr.high, tr.status, tr.run_class,
            strict=True,
        )
    ]  # fmt: skip
    header = ["exp", "run", "value", "error", "low", "high", "status", "runs"]
    click.echo(table(header, rows, [True] * 6 + [False] * 2))


# -- signoff -----------------------------------------------------------------------------------

_FORCE = click.option(
    "--force",
    is_flag=True,
    help="Confirm the changes that need it (overriding another person's flag, GOOD over an "
    "automatic ERROR, completing a run with NOTSET detectors), with a --comment saying why; "
    "recorded in the history.",
)


@contextmanager
def _confirm_with_force() -> Iterator[None]:
    """A write refused for want of confirmations says to give --force."""
    from b2calib.exceptions import ConfirmationNeeded

    try:
        yield
    except ConfirmationNeeded as err:
        raise ConfirmationNeeded(
            err.confirmations, hint="give --force to confirm them, which the history records"
        ) from None


@click.group()
def signoff() -> None:
    """Certification: flags per (run, detector), their history, and the run's sign-off state."""


@signoff.command("flag")
@click.argument("exp", type=int)
@click.argument("runs_text", metavar="RUNS")
@click.argument("detectors", metavar="DETECTORS")
@click.argument("value", metavar="FLAG")
@click.option("--comment", required=True, help="Why (kept in the history).")
@_FORCE
@_uses_db
@_login
def signoff_flag(
    qdb: QADatabase,
    user: User,
    exp: int,
    runs_text: str,
    detectors: str,
    value: str,
    comment: str,
    force: bool,
) -> None:
    """Set the FLAG (GOOD, BAD, RECOVERABLE, NOTSET, EXCLUDED) of DETECTORS (CDC, or
    CDC,ECL, or 'all': every detector the run included that you may flag) in RUNS (7, or
    1-30: the registered runs in that range). All are recorded, or none.

    Overriding another person's flag and GOOD over an automatic ERROR need --force (without
    it: every such change is listed, nothing is written, exit status 1)."""
    from b2calib.exceptions import RunNotFoundError

    wanted = set(parse_runs(runs_text))
    runs = [
        r for r in qdb.runs.select(exp=exp, first=min(wanted), last=max(wanted)) if r.run in wanted
    ]
    if len(wanted) == 1 and not runs:
        raise RunNotFoundError(exp, min(wanted))
    if not runs:
        raise click.ClickException(f"no registered run of experiment {exp} in {runs_text}")
    changes = []
    for r in runs:
        if detectors.lower() == "all":
            dets = [d for d in r.detectors if user.can_flag(d)]
        else:
            dets = [d.strip().upper() for d in detectors.split(",") if d.strip()]
        changes += [(exp, r.run, d, value.upper()) for d in dets]
    if not changes:
        raise click.ClickException(f"{user} may flag none of these detectors")
    with _confirm_with_force():
        entries = qdb.certification.set_flags(changes, user=user, comment=comment, force=force)
    for run_number in sorted({e.run for e in entries}):
        names = ",".join(e.detector for e in entries if e.run == run_number)
        click.echo(f"run ({exp}, {run_number}) {names}: {value.upper()} by {user.name}")
        for e in entries:
            if e.run == run_number and e.confirmed:
                click.echo(f"  {e.detector} confirmed (--force): {e.confirmed}")


@signoff.command("history")
@click.argument("exp", type=int)
@click.argument("run_number", metavar="RUN", type=int)
@click.argument("detector", required=False)
@_uses_db
def signoff_history(qdb: QADatabase, exp: int, run_number: int, detector: str | None) -> None:
    """Every flag set for run EXP RUN (or one DETECTOR), oldest first, with what its author
    confirmed (--force)."""
    rows = [
        [e.time, e.detector, e.flag, e.author, e.comment or "-", e.confirmed or "-"]
        for e in qdb.certification.flag_history(exp, run_number, detector)
    ]
    click.echo(
        table(["time", "detector", "flag", "author", "comment", "confirmed"], rows)
        if rows
        else f"run ({exp}, {run_number}): no flags set"
    )


@signoff.command("state")
@click.argument("exp", type=int)
@click.argument("run_number", metavar="RUN", type=int)
@click.argument("state", required=False)
@click.option("--comment", default="", help="Kept in the run's history.")
@click.option(
    "--user",
    "user_name",
    envvar="B2CALIB_USER",
    help="Needed to change the state (password as for `signoff flag`).",
)
@_FORCE
@_uses_db
def signoff_state(
    qdb: QADatabase,
    exp: int,
    run_number: int,
    state: str | None,
    comment: str,
    user_name: str | None,
    force: bool,
) -> None:
    """Show the sign-off history of run EXP RUN, or move it to STATE (OPEN, SIGNOFF,
    COMPLETED: a manager completes and reopens). Completing a run with NOTSET detectors needs
    --force."""
    if state is not None:
        user = _authenticate(qdb, user_name)
        with _confirm_with_force():
            qdb.certification.set_state(
                exp, run_number, state.upper(), user=user, comment=comment, force=force
            )
    history = qdb.certification.state_history(exp, run_number)
    current = qdb.certification.state(exp, run_number)
    click.echo(f"run ({exp}, {run_number}): {current.state}")
    if history:
        rows = [[h.time, h.state, h.author, h.comment or "-", h.confirmed or "-"] for h in history]
        click.echo(table(["time", "state", "author", "comment", "confirmed"], rows))


# -- grl ---------------------------------------------------------------------------------------


@click.group()
def grl() -> None:
    """Good-run lists: make (versioned), list, versions, show, diff, export, combine. A list
    sums the recorded luminosity (run registry)."""


@grl.command("make")
@click.argument("name")
@click.argument("expression")
@click.option("--description", default="", help="Kept with the version.")
@_EXP
@_RUNS
@_uses_db
@_login
def grl_make(
    qdb: QADatabase,
    user: User,
    name: str,
    expression: str,
    description: str,
    exp: int | None,
    runs_text: str | None,
) -> None:
    """Make the next version of good-run list NAME from EXPRESSION (or a preset's name) over
    the runs' current flags (managers only)."""
    from b2calib.qa.grl import PRESETS

    first, last = _runs_range(runs_text)
    g = qdb.grls.make(
        name,
        PRESETS.get(expression, expression),
        user=user,
        description=description,
        exp=exp,
        first=first,
        last=last,
    )
    click.echo(_summary(g))
    _echo_warnings(g)


def _summary(g: GoodRunList) -> str:
    from b2calib.qa.grl import LUMINOSITY

    version = f" v{g.version}" if g.version is not None else ""
    return f"{g.name}{version}: {len(g)} runs, {g.lumi_pb:.6g} pb^-1 {LUMINOSITY} ({g.expression})"


def _echo_warnings(g: GoodRunList, *, err: bool = False) -> None:
    """The runs the list selected with uncertified detectors or detectors certified GOOD over
    an automatic ERROR (with the reason from the flag history), one a line."""
    if g.warnings:
        n = len(g.warnings)
        click.echo(
            f"warning: {n} run{'s' if n != 1 else ''} selected with uncertified (NOTSET) "
            "detectors or GOOD over an automatic ERROR:",
            err=err,
        )
        for w in g.warnings:
            click.echo(f"  {w}", err=err)


@grl.command("list")
@_uses_db
def grl_list(qdb: QADatabase) -> None:
    """The newest version of every good-run list."""
    rows = [
        [g.name, g.version, len(g), round(g.lumi_pb, 3), len(g.warnings), g.author, g.expression]
        for g in qdb.grls.latest()
    ]
    header = ["name", "version", "runs", "recorded lumi/pb^-1", "warnings", "author"]
    click.echo(table([*header, "expression"], rows) if rows else "no good-run lists")


@grl.command("versions")
@click.argument("name")
@_uses_db
def grl_versions(qdb: QADatabase, name: str) -> None:
    """Every version of good-run list NAME, oldest first (each one is kept: show, export and
    diff take --version / V1 V2)."""
    rows = [
        [
            g.version,
            g.created,
            g.author,
            len(g),
            round(g.lumi_pb, 3),
            len(g.warnings),
            g.description or "-",
            g.expression,
        ]
        for g in qdb.grls.versions(name)
    ]
    header = ["version", "created", "author", "runs", "recorded lumi/pb^-1", "warnings"]
    click.echo(table([*header, "description", "expression"], rows))


@grl.command("diff")
@click.argument("name")
@click.argument("old", type=int, metavar="V1")
@click.argument("new", type=int, metavar="V2")
@_uses_db
def grl_diff(qdb: QADatabase, name: str, old: int, new: int) -> None:
    """What changed from version V1 to version V2 of good-run list NAME: the runs added and
    removed (as ranges per experiment) and the recorded luminosity."""
    from b2calib.qa.grl import LUMINOSITY

    d = qdb.grls.diff(name, old, new)

    def ranges(runs: tuple[Any, ...]) -> str:
        from b2calib.qa.grl import GoodRunList

        found = GoodRunList("", "", runs).to_cms_json()
        if not found:
            return "-"
        return "; ".join(
            f"exp {e}: " + ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in rs)
            for e, rs in found.items()
        )

    pairs = [
        ("list", name),
        ("versions", f"{old} -> {new}"),
    ]
    if d.expression_changed:
        pairs += [
            (f"expression v{old}", d.old.expression),
            (f"expression v{new}", d.new.expression),
        ]
    else:
        pairs.append(("expression", d.new.expression))
    pairs += [
        ("runs", f"{len(d.old)} -> {len(d.new)}"),
        ("added", f"{len(d.added)} runs, {d.lumi_added_pb:.6g} pb^-1: {ranges(d.added)}"),
        ("removed", f"{len(d.removed)} runs, {d.lumi_removed_pb:.6g} pb^-1: {ranges(d.removed)}"),
    ]
    if d.changed:
        pairs.append(
            (
                "lumi changed",
                ", ".join(
                    f"({a.exp}, {a.run}) {a.lumi_pb:.6g} -> {b.lumi_pb:.6g}" for a, b in d.changed
                ),
            )
        )
    pairs.append(
        (
            "lumi",
            f"{d.old.lumi_pb:.6g} -> {d.new.lumi_pb:.6g} pb^-1 ({d.lumi_change_pb:+.6g}), "
            f"{LUMINOSITY}",
        )
    )
    click.echo(record(pairs))


@grl.command("presets")
def grl_presets() -> None:
    """The named expressions ``grl make`` accepts."""
    from b2calib.qa.grl import PRESETS

    click.echo(record(sorted(PRESETS.items())))


@grl.command("show")
@click.argument("name")
@click.option("--version", type=int, help="Default: the newest.")
@_uses_db
def grl_show(qdb: QADatabase, name: str, version: int | None) -> None:
    """A good-run list's record (a chosen --version, or the newest), its runs (as ranges per
    experiment) and its warnings (runs selected with uncertified detectors, or with GOOD over
    an automatic ERROR)."""
    from b2calib.qa.grl import LUMINOSITY

    g = qdb.grls.get(name, version)
    ranges = g.to_cms_json()
    click.echo(
        record(
            [
                ("name", g.name),
                ("version", g.version),
                ("expression", g.expression),
                ("description", g.description or "-"),
                ("created", g.created),
                ("author", g.author),
                ("runs", len(g)),
                ("lumi", f"{g.lumi_pb:.6g} pb^-1 {LUMINOSITY}"),
            ]
            + [
                (f"exp {e}", ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in rs))
                for e, rs in ranges.items()
            ]
        )
    )
    _echo_warnings(g)


def _export(g: GoodRunList, fmt: str) -> str:
    if fmt == "csv":
        return g.to_csv()
    text = json.dumps(g.to_json() if fmt == "json" else g.to_cms_json(), indent=1)
    return _NUMBERS.sub(_one_line, text) + "\n"


def _one_line(m: re.Match[str]) -> str:
    """An array of numbers (a run list, a [first, last] range) written on one line."""
    return "[" + ", ".join(x.strip() for x in m.group(1).split(",") if x.strip()) + "]"


_NUMBERS = re.compile(r"\[([-+0-9.eE,\s]*?)\]")


_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "cms", "csv"]),
    default="json",
    show_default=True,
    help="json: runs per experiment with luminosity; cms: {exp: [[first, last], ...]}; csv.",
)
_OUTPUT = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (default: standard output).",
)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)


@grl.command("export")
@click.argument("name")
@click.option("--version", type=int, help="Default: the newest.")
@_FORMAT
@_OUTPUT
@_uses_db
def grl_export(
    qdb: QADatabase, name: str, version: int | None, fmt: str, output: Path | None
) -> None:
    """Export a good-run list (a chosen --version, or the newest) as JSON, CMS-style JSON or
    CSV; its luminosity is the recorded one (run registry). Its warnings go to standard
    error."""
    g = qdb.grls.get(name, version)
    _echo_warnings(g, err=True)
    _write(_export(g, fmt), output)


@grl.command("combine")
@click.argument("a")
@click.argument("op", type=click.Choice(["and", "or", "minus"]))
@click.argument("b")
@_FORMAT
@_OUTPUT
@_uses_db
def grl_combine(qdb: QADatabase, a: str, op: str, b: str, fmt: str, output: Path | None) -> None:
    """Combine the newest versions of good-run lists A and B (write NAME@V for a version)."""

    def get(spec: str) -> GoodRunList:
        name, _, version = spec.partition("@")
        return qdb.grls.get(name, int(version) if version else None)

    ga, gb = get(a), get(b)
    result = {"and": ga & gb, "or": ga | gb, "minus": ga - gb}[op]
    click.echo(_summary(result), err=True)
    _echo_warnings(result, err=True)
    _write(_export(result, fmt), output)


# -- user --------------------------------------------------------------------------------------


@click.group()
def user() -> None:
    """Dashboard users: add, list, remove, password."""


@user.command("add")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["viewer", "expert", "manager"]),
    required=True,
    help="viewer reads; expert flags its detectors; manager flags all, completes runs, "
    "makes good-run lists.",
)
@click.option("--detectors", default="", help="An expert's detectors, comma-separated.")
@_uses_db
def user_add(qdb: QADatabase, name: str, role: str, detectors: str) -> None:
    """Add user NAME (the password is asked for twice, or read from standard input)."""
    dets = [d.strip().upper() for d in detectors.split(",") if d.strip()]
    u = qdb.users.add(name, _read_password(twice=True), role, dets)
    click.echo(f"added {u}")


@user.command("list")
@_uses_db
def user_list(qdb: QADatabase) -> None:
    """Every user with role and detectors."""
    rows = [[u.name, u.role, ",".join(u.detectors) or "-"] for u in qdb.users.all()]
    click.echo(table(["name", "role", "detectors"], rows) if rows else "no users")


@user.command("remove")
@click.argument("name")
@_uses_db
def user_remove(qdb: QADatabase, name: str) -> None:
    """Remove user NAME (what they certified stays under their name)."""
    qdb.users.remove(name)
    click.echo(f"removed {name}")


@user.command("password")
@click.argument("name")
@_uses_db
def user_password(qdb: QADatabase, name: str) -> None:
    """Set user NAME's password (asked for twice, or read from standard input)."""
    qdb.users.set_password(name, _read_password(twice=True))
    click.echo(f"password of {name} changed")
