"""The ``b2calib`` command line.

Every subcommand reports a bad input as one line naming the file, run or option at fault and
exits with a non-zero status. This module holds the main group and the commands on simulated
data (``simulate``, ``summary``, ``runs``, ``buckets``, ``retention``, ``size-report``); the
others are grouped by what they work on:

===============  ================================================================================
``conditions``   ``gt``, ``iov``, ``lookup``, ``payload``, ``db``: the conditions database, as
                 ``b2conditionsdb``
``calibrate``    ``calibrate``: run registered calibrations into a staging tag
``prompt``       ``prompt``: the prompt calibration loop over a bucket (the ``prompt`` extra)
``qa``           ``qa``, ``signoff``, ``grl``, ``user``: monitoring, certification, good-run
                 lists, users
``serve``        ``serve``: the dashboards (the ``dashboards`` extra)
``output``       what they share: run lists, plain-text tables
===============  ================================================================================

The modules import the library inside the commands, and this module imports a group's module
only when one of its commands is looked up (:class:`_Group`, a lazy group), so ``b2calib --help``
loads click and these small modules, never numpy, the database or a plotting stack
(``tests/test_cli.py`` checks it; ``bench/bench_imports.py`` times it).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click

from b2calib._version import __version__
from b2calib.exceptions import B2CalibError

__all__ = ["main"]

#: The commands defined in the modules of this package: name -> module, imported when the
#: command is looked up (run, or listed by ``b2calib --help``).
_LAZY_COMMANDS = {
    **dict.fromkeys(("gt", "iov", "lookup", "payload", "db"), "b2calib.cli.conditions"),
    "calibrate": "b2calib.cli.calibrate",
    "prompt": "b2calib.cli.prompt",
    **dict.fromkeys(("qa", "signoff", "grl", "user"), "b2calib.cli.qa"),
    "serve": "b2calib.cli.serve",
}


class _Group(click.Group):
    """The main group: loads its commands' modules lazily (:data:`_LAZY_COMMANDS`) and turns
    b2calib errors into one clear line and exit status 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY_COMMANDS and cmd_name not in self.commands:
            command = getattr(importlib.import_module(_LAZY_COMMANDS[cmd_name]), cmd_name)
            if not isinstance(command, click.Command) or command.name != cmd_name:
                raise RuntimeError(f"{_LAZY_COMMANDS[cmd_name]}.{cmd_name} is not that command")
            self.add_command(command)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except B2CalibError as err:
            raise click.ClickException(str(err)) from err


class _DetectorsOption(click.Option):
    """``--detectors`` of ``simulate``: its help names the detectors, read from
    :mod:`b2calib.geometry` (numpy) only when that help is shown."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from b2calib.geometry import DETECTORS

        self.help = f"Comma-separated detectors to write (default: {','.join(DETECTORS)})."
        return super().get_help_record(ctx)


def _registry(path: Path) -> Any:
    from b2calib.runs import RunRegistry

    return RunRegistry.load(path / "runs.json" if path.is_dir() else path)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="b2calib")
def cli() -> None:
    """b2calib: calibration and data-quality workbench for a Belle II-like experiment."""


@cli.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML or JSON file with any SimConfig setting; options below override it.",
)
@click.option("--exp", type=int, help="Experiment number.")
@click.option("--runs", "n_runs", type=int, help="Number of runs.")
@click.option("--first-run", type=int, help="First run number.")
@click.option(
    "--events-per-run",
    type=float,
    help="Generated collision events in a physics run of average luminosity.",
)
@click.option("--seed", type=int, help="Master seed (same seed, same data).")
@click.option("--skims", help="Comma-separated skims to write (default: all).")
@click.option("--detectors", cls=_DetectorsOption)
@click.option("--processes", help="Comma-separated processes to generate (default: all).")
@click.option("--intervention-run", type=int, help="Run of the documented hardware interventions.")
@click.option(
    "--beam-step-run",
    type=int,
    help="Run in which the beam spot and the collision energy step once (default: none); "
    "--beam-step-hours after its start.",
)
@click.option("--beam-step-hours", type=float, help="Time of the beam step after the run start.")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder."
)
@click.option("--jobs", type=int, default=None, help="Worker processes (default: all cores).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def simulate(
    config_file: Path | None, out: Path, jobs: int | None, quiet: bool, **opts: Any
) -> None:
    """Simulate an experiment: skim files, run registry and true constants."""
    from tqdm import tqdm

    from b2calib.sim import SimConfig
    from b2calib.sim import simulate as run_simulation

    for key in ("skims", "detectors", "processes"):
        if opts[key] is not None:
            opts[key] = [s.strip() for s in opts[key].split(",") if s.strip()]
    overrides = {k: v for k, v in opts.items() if v is not None}
    cfg = SimConfig.from_file(config_file, **overrides) if config_file else SimConfig(**overrides)
    with tqdm(total=cfg.n_runs, unit="run", disable=quiet, desc="simulate") as bar:
        result = run_simulation(cfg, out, jobs=jobs, progress=lambda n: bar.update(n - bar.n))
    nfiles = len(result.files)
    nevents = sum(sum(v.values()) for v in result.generated.values())
    click.echo(f"wrote {nfiles} skim files from {nevents} generated events to {out}")


@cli.command("size-report")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--by", type=click.Choice(["object", "branch"]), default="object", show_default=True)
def size_report_cmd(files: tuple[Path, ...], by: str) -> None:
    """Bytes per branch or per basf2 object, share of the file and bytes per event.

    Every basket is read once: one that cannot be decompressed is an error line (the table is
    printed all the same), as is a file whose size or checksum is not what its catalogue
    recorded. Exits with status 1 when a file has an error.
    """
    from b2calib.sizereport import size_report

    failed = 0
    for f in files:
        try:
            report = size_report(f)
        except B2CalibError as err:
            click.echo(f"error: {err}", err=True)
            failed += 1
            continue
        click.echo(report.format(by=by))
        for problem in report.problems:
            click.echo(f"error: {f}: {problem}", err=True)
        failed += bool(report.problems)
    if failed:
        raise SystemExit(1)


@cli.command()
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--type", "run_type", help="Only runs of this type (physics, cosmic, beam, debug).")
@click.option("--beam-energy", help="Only runs of this beam energy (4S, Continuum, Scan, No Beam).")
def runs(data: Path, run_type: str | None, beam_energy: str | None) -> None:
    """Run summary of a data folder (or of its runs.json)."""
    from b2calib.summary import run_table

    click.echo(run_table(_registry(data).select(run_type=run_type, beam_energy=beam_energy)))


@cli.command()
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--min-lumi", type=float, default=9.0, show_default=True, help="fb^-1 per bucket.")
def buckets(data: Path, min_lumi: float) -> None:
    """Prompt-processing buckets of consecutive runs."""
    from b2calib.summary import bucket_table

    click.echo(bucket_table(_registry(data).buckets(min_lumi)))


@cli.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
def retention(data: Path) -> None:
    """Events and retention of each skim per run (from file metadata)."""
    from b2calib.io import find_skim_files
    from b2calib.summary import retention_table, skim_counts

    click.echo(retention_table(skim_counts(find_skim_files(data))))


@cli.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--min-lumi", type=float, default=9.0, show_default=True, help="fb^-1 per bucket.")
def summary(data: Path, min_lumi: float) -> None:
    """Runs, buckets and skim retention of a data folder."""
    from b2calib.io import find_skim_files
    from b2calib.summary import bucket_table, retention_table, run_table, skim_counts

    reg = _registry(data)
    click.echo("== runs\n" + run_table(reg))
    click.echo("\n== buckets\n" + bucket_table(reg.buckets(min_lumi)))
    click.echo("\n== skim retention\n" + retention_table(skim_counts(find_skim_files(data))))


def main() -> None:
    """Entry point of the ``b2calib`` console script."""
    sys.exit(cli.main(prog_name="b2calib", standalone_mode=True))


if __name__ == "__main__":
    main()
