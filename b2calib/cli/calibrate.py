"""``b2calib calibrate``: run registered calibrations on a data folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from b2calib.cli.output import bad_file_policy, input_options, parse_runs
from b2calib.exceptions import ConfigError

__all__ = ["calibrate"]


def _overrides(values: tuple[str, ...], names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep:
            if len(names) != 1:
                raise ConfigError(f"--config {v}: with several calibrations write NAME=FILE.json")
            name, path = names[0], v
        out[name] = Path(path)
    return out


@click.command()
@click.argument("names", nargs=-1)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of skim files with its runs.json.",
)
@click.option("--runs", "runs_text", help="Runs to use, e.g. '1-11' or '3,5,7-9' (default: all).")
@click.option("--exp", type=int, help="Experiment (default: all).")
@click.option(
    "--gt", "input_tags", multiple=True, help="Input global tag (repeat; highest priority first)."
)
@click.option("--staging", help="Staging tag for the payloads (default: staging_<names>).")
@click.option(
    "--config",
    "configs",
    multiple=True,
    help="Expert config JSON: FILE.json, or NAME=FILE.json with several calibrations.",
)
@click.option("--with-deps", is_flag=True, help="Also run the calibrations these depend on.")
@click.option(
    "--executor",
    default="processes",
    show_default=True,
    help="inprocess, threads, processes, or a Dask scheduler address (tcp://host:8786).",
)
@click.option("--workers", type=int, help="Local workers (default: all cores).")
@click.option("--no-cache", is_flag=True, help="Do not use the collector cache.")
@input_options
@click.option("--list", "list_only", is_flag=True, help="List the registered calibrations.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--db",
    "url",
    envvar="B2CALIB_DB",
    help="Conditions database URL or SQLite path (default: $B2CALIB_DB, else the embedded one).",
)
@click.option("--author", envvar="B2CALIB_USER", help="Recorded as the author of the changes.")
def calibrate(
    names: tuple[str, ...],
    data: Path | None,
    runs_text: str | None,
    exp: int | None,
    input_tags: tuple[str, ...],
    staging: str | None,
    configs: tuple[str, ...],
    with_deps: bool,
    executor: str,
    workers: int | None,
    no_cache: bool,
    on_bad_file: str | None,
    stop_on_bad_file: bool,
    no_verify: bool,
    max_nonfinite: float,
    list_only: bool,
    quiet: bool,
    url: str | None,
    author: str | None,
) -> None:
    """Run calibrations NAMES on the runs of a data folder and stage their payloads.

    Exits with status 1 when a calibration did not succeed (FAILED, NOT_ENOUGH_DATA or SKIPPED);
    nothing is staged for a failed calibration. Re-running with the same inputs does nothing.
    Data-quality filters read the flags certified in the database (for the runs it knows).
    Every file is compared with its catalogue's checksum before it is read (--no-verify: not);
    NaN and Inf values met are reported per run and branch.
    """
    from b2calib.calibration import calibrations, run_calibrations
    from b2calib.conditions import ConditionsDB

    if list_only:
        for name, cal in calibrations().items():
            order = [f"needs {', '.join(cal.depends_on)}"] if cal.depends_on else []
            order += [f"after {', '.join(cal.after)}"] if cal.after else []
            deps = f" ({'; '.join(order)})" if order else ""
            click.echo(f"{name}: {cal.stage}; {cal.expert}; skims {', '.join(cal.skims)}{deps}")
            if cal.description:
                click.echo(f"    {cal.description}")
        return
    if not names:
        raise click.UsageError("name at least one calibration (see --list)")
    if data is None:
        raise click.UsageError("--data is required")
    from b2calib.qa.store import QADatabase
    from b2calib.runs import RunRegistry

    policy = bad_file_policy(on_bad_file, stop_on_bad_file)
    # a run listed twice stops the job (or leaves the run out) as the policy says, below
    loaded = RunRegistry.load(Path(data) / "runs.json", on_duplicate="drop")
    db = ConditionsDB(url, author=author)
    # the calibrations' data-quality filters read the flags certified in this database
    qdb = QADatabase(db.url)
    try:
        registry = RunRegistry(
            qdb.runs.with_certified_flags(loaded),
            duplicates=loaded.duplicates,
            source=loaded.source,
        )
    finally:
        qdb.close()
    try:
        reports = run_calibrations(
            list(names),
            data,
            db=db,
            staging_tag=staging or "staging_" + "+".join(names),
            input_tags=input_tags,
            exp=exp,
            runs=parse_runs(runs_text) if runs_text else None,
            config=_overrides(configs, list(names)),
            with_dependencies=with_deps,
            executor=executor,
            workers=workers,
            cache=not no_cache,
            on_bad_file=policy,
            progress=not quiet,
            registry=registry,
            verify=not no_verify,
            max_nonfinite=max_nonfinite,
        )
    finally:
        db.close()
    for report in reports.values():
        click.echo(str(report))
    if any(r.status != "OK" for r in reports.values()):
        raise SystemExit(1)
