"""What the commands share: the ``--db`` help, run lists and plain-text tables."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime

from b2calib.exceptions import ConfigError

__all__ = ["DB_HELP", "cell", "parse_runs", "record", "table"]

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


def __dir__() -> list[str]:
    return __all__
