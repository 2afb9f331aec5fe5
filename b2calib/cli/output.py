"""What the commands share: the ``--db`` help, run lists and plain-text tables."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar

import click

from b2calib.exceptions import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["DB_HELP", "bad_file_policy", "cell", "input_options", "parse_runs", "record", "table"]

DB_HELP = (
    "Conditions database: SQLAlchemy URL or SQLite file "
    "(default: $B2CALIB_DB, else conditions.sqlite in the user's data directory)."
)


def cell(value: object) -> str:
    """A value as a table shows it: ``-`` for None, times to the second."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def table(
    header: Sequence[str] | None,
    rows: Iterable[Sequence[object]],
    right: Sequence[bool] | None = None,
) -> str:
    """Aligned plain-text table. Columns are right-aligned where ``right`` says so, by default
    those holding only numbers."""
    raw = [list(r) for r in rows]
    ncol = len(header) if header is not None else max((len(r) for r in raw), default=0)
    if right is None:
        right = [
            bool(raw)
            and all(
                isinstance(r[i], int | float) and not isinstance(r[i], bool)
                for r in raw
                if r[i] is not None
            )
            for i in range(ncol)
        ]
    text = [[cell(v) for v in r] for r in raw]
    head = list(header) if header is not None else []
    width = [max([len(r[i]) for r in text] + [len(head[i]) if head else 0]) for i in range(ncol)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, width, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = []
    if head:
        out += [line(head), line(["-" * w for w in width])]
    out += [line(r) for r in text]
    return "\n".join(out)


def record(pairs: Sequence[tuple[str, object]]) -> str:
    """``key  value`` lines with the values aligned."""
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {cell(v)}".rstrip() for k, v in pairs)


def parse_runs(text: str) -> list[int]:
    """Run numbers from ``"1-11"``, ``"3,5,7-9"``."""
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            raise ConfigError(f"--runs {text!r}: expected runs like '1-11' or '3,5,7-9'")
        first, last = int(m[1]), int(m[2] or m[1])
        if last < first:
            raise ConfigError(f"--runs {text!r}: range {first}-{last} ends before it starts")
        out += range(first, last + 1)
    return sorted(set(out))


def input_options(fn: F) -> F:
    """The options of the commands that read skim files: the bad-file policy, checksum
    verification and the NaN / Inf limit (``on_bad_file``, ``verify`` and ``max_nonfinite`` of
    :func:`b2calib.engine.collect`)."""
    options = [
        click.option(
            "--on-bad-file",
            type=click.Choice(["skip", "stop"]),
            help="skip: leave out and list every bad file; stop: stop at the first. Default: "
            "leave out unreadable or corrupt files, stop on inconsistent data (duplicate "
            "events, a path that names another run than the metadata, a run the registry "
            "lacks or lists twice, too many NaN or Inf values).",
        ),
        click.option(
            "--stop-on-bad-file",
            is_flag=True,
            help="Stop at the first bad file (--on-bad-file stop).",
        ),
        click.option(
            "--no-verify",
            is_flag=True,
            help="Do not compare the files with their catalogue's checksums before reading them.",
        ),
        click.option(
            "--max-nonfinite",
            type=click.FloatRange(0.0, 1.0),
            default=1e-3,  # engine.loop.DEFAULT_MAX_NONFINITE (not imported: --help stays fast)
            show_default=True,
            help="Largest fraction of NaN or Inf values allowed in a run's branch.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def bad_file_policy(
    on_bad_file: str | None, stop_on_bad_file: bool
) -> Literal["skip", "stop"] | None:
    """The ``on_bad_file`` of the engine from the two options."""
    if stop_on_bad_file:
        if on_bad_file == "skip":
            raise ConfigError("--stop-on-bad-file and --on-bad-file skip contradict each other")
        return "stop"
    return "skip" if on_bad_file == "skip" else "stop" if on_bad_file == "stop" else None


def __dir__() -> list[str]:
    return __all__
