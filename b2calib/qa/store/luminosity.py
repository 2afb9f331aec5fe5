"""The integrated luminosity of the runs, by each of its sources, side by side.

A run has up to three luminosities, in pb^-1, each named the same everywhere
(:data:`LUMINOSITY_COLUMNS`):

``"recorded (run registry)"``
    What the run registry recorded for the run (``Run.lumi_pb``); every run has it. The
    good-run lists sum this one (:attr:`b2calib.qa.grl.GoodRunList.lumi_pb`).
``"Bhabha"``, ``"gamma-gamma"``
    Measured from the run's events of the Bhabha and gamma-gamma luminosity selections (the
    monitoring variables ``bhabha.lumi_pb`` and ``gamma_gamma.lumi_pb``, with their
    statistical errors); ``None`` (``NaN`` in :meth:`LuminosityTable.to_frame`) for a run they
    were not measured in. A missing measurement is never replaced by the recorded value: the
    totals count the runs measured and name the others.

The three differ by design (the registry's figure is the online estimate, the measurements the
offline ones, each with its own visible cross section), so a page shows which one it sums.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from b2calib.db import Database
from b2calib.qa.store.tables import qa_runs, qa_variables, run_range

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "LUMINOSITY_COLUMNS",
    "LUMINOSITY_VARIABLES",
    "Luminosity",
    "LuminosityTable",
    "LuminosityTotal",
    "RunLuminosity",
]

#: The names of a run's luminosities, everywhere: the run registry's, then the measured ones.
LUMINOSITY_COLUMNS: tuple[str, str, str] = ("recorded (run registry)", "Bhabha", "gamma-gamma")
RECORDED, BHABHA, GAMMA_GAMMA = LUMINOSITY_COLUMNS
#: The monitoring variable (pb^-1) holding each measured luminosity.
LUMINOSITY_VARIABLES: dict[str, str] = {
    BHABHA: "bhabha.lumi_pb",
    GAMMA_GAMMA: "gamma_gamma.lumi_pb",
}


@dataclass(frozen=True)
class RunLuminosity:
    """One run's luminosities in pb^-1 (``None``: not measured in that run)."""

    exp: int
    run: int
    run_type: str
    beam_energy: str
    recorded: float
    bhabha: float | None
    bhabha_error: float | None
    gamma_gamma: float | None
    gamma_gamma_error: float | None

    @property
    def key(self) -> tuple[int, int]:
        """(exp, run)."""
        return (self.exp, self.run)

    def value(self, column: str) -> float | None:
        """The luminosity named ``column`` (one of :data:`LUMINOSITY_COLUMNS`)."""
        return {RECORDED: self.recorded, BHABHA: self.bhabha, GAMMA_GAMMA: self.gamma_gamma}[
            _column(column)
        ]

    def error(self, column: str) -> float | None:
        """The statistical error of the luminosity named ``column`` (``None`` for the recorded
        one, which the registry gives without error, and for one not measured)."""
        return {RECORDED: None, BHABHA: self.bhabha_error, GAMMA_GAMMA: self.gamma_gamma_error}[
            _column(column)
        ]


@dataclass(frozen=True)
class LuminosityTotal:
    """The sum of one luminosity over the runs that have it.

    ``lumi_pb`` sums the runs measured (``runs`` of them), ``error_pb`` their statistical
    errors in quadrature (0 for the recorded luminosity); ``missing`` are the (exp, run) without
    this luminosity, left out of the sum (never replaced by another source).
    """

    column: str
    lumi_pb: float
    error_pb: float
    runs: int
    missing: tuple[tuple[int, int], ...]

    @property
    def lumi_fb(self) -> float:
        """``lumi_pb`` in fb^-1."""
        return self.lumi_pb / 1000.0

    def __str__(self) -> str:
        err = f" +- {self.error_pb / 1000.0:.3f}" if self.error_pb > 0 else ""
        miss = f" ({len(self.missing)} runs not measured)" if self.missing else ""
        return f"{self.column}: {self.lumi_fb:.3f}{err} fb^-1{miss}"


@dataclass(frozen=True)
class LuminosityTable:
    """The luminosities of the runs selected, in (exp, run) order
    (``QADatabase.luminosity(...)``)."""

    runs: tuple[RunLuminosity, ...]

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[RunLuminosity]:
        return iter(self.runs)

    @functools.cached_property
    def _by_key(self) -> dict[tuple[int, int], RunLuminosity]:
        return {r.key: r for r in self.runs}

    def get(self, exp: int, run: int) -> RunLuminosity | None:
        """The luminosities of run (exp, run), ``None`` when it is not in the table."""
        return self._by_key.get((exp, run))

    def total(self, column: str) -> LuminosityTotal:
        """The sum of the luminosity named ``column`` over the runs that have it."""
        column = _column(column)
        values = [(r.key, r.value(column), r.error(column)) for r in self.runs]
        measured = [(v, e) for _, v, e in values if v is not None]
        return LuminosityTotal(
            column=column,
            lumi_pb=math.fsum(v for v, _ in measured),
            error_pb=math.sqrt(math.fsum((e or 0.0) ** 2 for _, e in measured)),
            runs=len(measured),
            missing=tuple(k for k, v, _ in values if v is None),
        )

    def totals(self) -> dict[str, LuminosityTotal]:
        """:meth:`total` of each of :data:`LUMINOSITY_COLUMNS`, keyed by its name."""
        return {c: self.total(c) for c in LUMINOSITY_COLUMNS}

    def to_frame(self) -> pd.DataFrame:
        """The table as a pandas DataFrame, one row per run: ``exp``, ``run``, ``run type``,
        ``beam energy``, then each of :data:`LUMINOSITY_COLUMNS` in pb^-1 and, after each
        measured one, its error (``"Bhabha error"``, ``"gamma-gamma error"``); ``NaN`` where
        not measured."""
        import pandas as pd

        nan = float("nan")
        columns = ["exp", "run", "run type", "beam energy", RECORDED, BHABHA, f"{BHABHA} error"]
        columns += [GAMMA_GAMMA, f"{GAMMA_GAMMA} error"]
        rows = [
            [
                r.exp,
                r.run,
                r.run_type,
                r.beam_energy,
                r.recorded,
                nan if r.bhabha is None else r.bhabha,
                nan if r.bhabha_error is None else r.bhabha_error,
                nan if r.gamma_gamma is None else r.gamma_gamma,
                nan if r.gamma_gamma_error is None else r.gamma_gamma_error,
            ]
            for r in self.runs
        ]
        frame = pd.DataFrame(rows, columns=columns)
        for c in columns[4:]:
            frame[c] = frame[c].astype(float)
        return frame


def _column(column: str) -> str:
    if column not in LUMINOSITY_COLUMNS:
        raise KeyError(
            f"no luminosity {column!r}; known: {', '.join(repr(c) for c in LUMINOSITY_COLUMNS)}"
        )
    return column


class Luminosity:
    """The runs' luminosities of a QA database: ``QADatabase.luminosity(...)`` gives a
    :class:`LuminosityTable`.

    Parameters
    ----------
    db
        The database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def __call__(
        self,
        exp: int | None = None,
        first: int | None = None,
        last: int | None = None,
        run_type: str | None = None,
    ) -> LuminosityTable:
        """The recorded, Bhabha and gamma-gamma luminosity of every run selected (experiment,
        run range, run type; ``None``: all), in (exp, run) order."""
        r, v = qa_runs, qa_variables
        where = run_range(r, exp, first, last)
        if run_type is not None:
            where.append(r.c.run_type == run_type)
        run_query = (
            sa.select(r.c.exp, r.c.run, r.c.run_type, r.c.beam_energy, r.c.lumi_pb)
            .where(*where)
            .order_by(r.c.exp, r.c.run)
        )
        names = {name: column for column, name in LUMINOSITY_VARIABLES.items()}
        var_query = sa.select(v.c.exp, v.c.run, v.c.name, v.c.value, v.c.error).where(
            *run_range(v, exp, first, last), v.c.name.in_(list(names))
        )
        with self.db.read() as conn:
            rows = conn.execute(run_query).all()
            measured: dict[tuple[int, int, str], tuple[float | None, float | None]] = {}
            for x in conn.execute(var_query):
                value = float(x.value) if x.value is not None else math.nan
                error = float(x.error) if x.error is not None else math.nan
                measured[(x.exp, x.run, names[x.name])] = (
                    value if math.isfinite(value) else None,
                    error if math.isfinite(value) and math.isfinite(error) else None,
                )
        none: tuple[float | None, float | None] = (None, None)
        out = []
        for x in rows:
            b, be = measured.get((x.exp, x.run, BHABHA), none)
            g, ge = measured.get((x.exp, x.run, GAMMA_GAMMA), none)
            out.append(
                RunLuminosity(
                    x.exp, x.run, x.run_type, x.beam_energy, float(x.lumi_pb), b, be, g, ge
                )
            )
        return LuminosityTable(tuple(out))


def __dir__() -> list[str]:
    return __all__
