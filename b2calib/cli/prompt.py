"""``b2calib prompt``: the prompt calibration loop over a bucket of runs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from b2calib.cli.output import parse_runs

__all__ = ["prompt"]


@click.command()
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of skim files with its runs.json.",
)
@click.option(
    "--bucket",
    type=int,
    help="Bucket number (see `b2calib buckets DATA`); an unknown one lists the buckets.",
)
@click.option("--exp", type=int, help="Instead of --bucket: the experiment ...")
@click.option("--runs", "runs_text", help="... and its runs, e.g. '1-11' (default: all).")
@click.option("--min-lumi", type=float, default=9.0, show_default=True, help="fb^-1 per bucket.")
@click.option(
    "--gt",
    "input_tags",
    multiple=True,
    help="Input global tag (repeat; highest priority first), after the previous bucket's "
    "staging tag.",
)
@click.option(
    "--staging",
    help="Staging tag (default: prompt_bucketN, or prompt_eE_rA-B with --exp/--runs).",
)
@click.option("--only", help="Comma-separated calibrations (default: every registered one).")
@click.option(
    "--config",
    "configs",
    multiple=True,
    help="Expert config of one calibration: NAME=FILE.json (repeat).",
)
@click.option("--workers", type=int, default=2, show_default=True, help="Calibrations run at once.")
@click.option(
    "--executor",
    default="inprocess",
    show_default=True,
    help="The event loop inside each calibration: inprocess, threads, processes, or a Dask "
    "scheduler address.",
)
@click.option(
    "--batch-system",
    default="local",
    show_default=True,
    help="b2luigi's batch_system: local, lsf, htcondor, slurm, auto, gbasf2 (b2luigi's back "
    "ends; only local is tested here; batch jobs must reach the database).",
)
@click.option(
    "--json",
    "json_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the summary as JSON to this file.",
)
@click.option(
    "--auto-validate",
    is_flag=True,
    help="Move the staging tag to VALIDATED when every calibration is OK and every "
    "validation GOOD.",
)
@click.option(
    "--update-running",
    metavar="TAG",
    help="Once the staging tag is VALIDATED: running update of TAG from the bucket's first "
    "run, then a snapshot TAG_bucketN up to its last run.",
)
@click.option(
    "--mode",
    type=click.Choice(
        [
            *("strict", "allow-closed", "fix-closed", "simple", "full-replacement"),
            *("allow_closed", "fix_closed", "full_replacement"),
        ]
    ),
    default="strict",
    show_default=True,
    help="Mode of the running update.",
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
@click.option(
    "--db",
    "url",
    envvar="B2CALIB_DB",
    help="Conditions database URL or SQLite path (default: $B2CALIB_DB, else the embedded one).",
)
@click.option("--author", envvar="B2CALIB_USER", help="Recorded as the author of the changes.")
def prompt(
    data: Path,
    bucket: int | None,
    exp: int | None,
    runs_text: str | None,
    min_lumi: float,
    input_tags: tuple[str, ...],
    staging: str | None,
    only: str | None,
    configs: tuple[str, ...],
    workers: int,
    executor: str,
    batch_system: str,
    json_file: Path | None,
    auto_validate: bool,
    update_running: str | None,
    mode: str,
    quiet: bool,
    url: str | None,
    author: str | None,
) -> None:
    """Prompt calibration of a bucket of runs: every registered calibration (or --only) as one
    b2luigi graph, into the bucket's staging tag.

    \b
    Each calibration runs as a b2luigi task once the calibrations it depends on (and those
    it comes after) have run, earlier stages first (local, raw, alignment, post-tracking,
    analysis), --workers at a time. Its payloads go to the staging tag (created OPEN;
    default prompt_bucketN), starting from the previous bucket's staging tag and the --gt
    tags; its new payloads are then validated against those tags (verdict GOOD, WARNING or
    ERROR, kept in its job record for the payload-validation dashboard).

    \b
    A calibration that FAILED or had NOT_ENOUGH_DATA is reported with its reason; the
    calibrations that depend on it are SKIPPED; the others still run. The summary table
    lists each calibration's status (FALLBACK: no channel OK, each fell back or failed),
    channels, payloads, IoVs, validation verdict and wall time, per-stage times, and the
    reasons of what is not OK.

    \b
    Stopped at any moment (Ctrl-C, a killed job), the same command continues where it
    stopped: what completed is not redone and no payload is staged twice. Re-running after
    a failure tries the failed calibrations again.

    \b
    When every calibration succeeded the staging tag goes to TESTING for the manager's
    approval (b2calib gt state TAG VALIDATED); --auto-validate does it when everything is
    OK and GOOD. --update-running TAG then appends the VALIDATED staging tag to the running
    tag TAG and snapshots it as TAG_bucketN; before approval it says what to do, and the
    same command run again after approval does only the update. A TESTING staging tag goes
    back to OPEN when the loop has calibrations to run; a VALIDATED one is never reopened.

    Exits with status 1 when a calibration is not OK.
    """
    from b2calib.conditions import ConditionsDB
    from b2calib.exceptions import ConfigError
    from b2calib.prompt import run_prompt

    if (exp is None) == (bucket is None):
        raise click.UsageError("give --bucket N, or --exp E (with --runs A-B)")
    if runs_text is not None and exp is None:
        raise click.UsageError("--runs needs --exp")
    config: dict[str, str] = {}
    for item in configs:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--config {item}: write NAME=FILE.json")
        config[name] = path
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    db = ConditionsDB(url, author=author)
    try:
        summary = run_prompt(
            data,
            db=db,
            bucket=bucket,
            exp=exp,
            runs=parse_runs(runs_text) if runs_text else None,
            input_tags=input_tags,
            staging_tag=staging,
            calibrations=names,
            workers=workers,
            executor=executor,
            batch_system=batch_system,
            update_running=update_running,
            mode=mode.replace("-", "_"),
            auto_validate=auto_validate,
            config=config,
            progress=not quiet,
            min_lumi_fb=min_lumi,
        )
    finally:
        db.close()
    click.echo(summary.table())
    if json_file is not None:
        json_file.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    if not summary.ok:
        raise SystemExit(1)
