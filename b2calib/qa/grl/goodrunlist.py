"""Good-run lists: the runs an expression selects, with their luminosity, as a value.

A good-run list (GRL) is the set of runs (exp, run) that data analyses may use, with the luminosity
they contain. It is made by evaluating an :class:`Expression` on every run of the registry with
its current flags (:func:`evaluate`), combined with other lists by set operations (``&``, ``|``,
``-``) and exported as JSON (runs per experiment), CMS "golden JSON" (inclusive run ranges per
experiment) and CSV.

The expression language is :mod:`b2calib.qa.grl.expression`.

Exports
-------
``to_json``: ``{"name", "expression", "version", "created" (ISO 8601), "author", "description",
"lumi_pb", "experiments": {"<exp>": {"runs": [...], "run_lumi_pb": [...], "lumi_pb"}}}``; the
per-run luminosities make :meth:`GoodRunList.from_json` exact.
``to_cms_json``: ``{"<exp>": [[first, last], ...]}``, inclusive ranges of strictly consecutive
run numbers (Belle II's (exp, run) in the place of CMS's (run, lumi section)).
``to_csv``: header ``exp,run,lumi_pb``, one row per run, then a last row ``TOTAL,,<lumi_pb>``
with the total integrated luminosity (an ordinary three-column row, so any csv reader reads it;
drop the row whose ``exp`` is ``TOTAL`` to keep only runs). Luminosities are written with
``repr`` so they read back exactly.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from b2calib.exceptions import ConfigError
from b2calib.qa.grl.expression import PRESETS, Expression, parse
from b2calib.runs import Run

__all__ = ["GRLRun", "GoodRunList", "evaluate", "runs_expression"]


def __dir__() -> list[str]:
    return __all__


def runs_expression(keys: Iterable[tuple[int, int]]) -> str:
    """An expression selecting exactly the runs ``keys`` (used for lists imported without one).

    Runs of consecutive numbers become ranges, the others one list per experiment:
    ``[(12, 1), (12, 2), (12, 3), (12, 7), (12, 9), (14, 5)]`` gives
    ``exp == 12 and (run in 1..3 or run in (7, 9)) or exp == 14 and run == 5``; no run gives
    ``false``. The text is canonical (``str(parse(text)) == text``).
    """
    parts = []
    for exp, ranges in _ranges(keys).items():
        tests = [f"run in {a}..{b}" for a, b in ranges if b > a]
        singles = [str(a) for a, b in ranges if b == a]
        if len(singles) == 1:
            tests.append(f"run == {singles[0]}")
        elif singles:
            tests.append(f"run in ({', '.join(singles)})")
        inner = tests[0] if len(tests) == 1 else f"({' or '.join(tests)})"
        parts.append(f"exp == {exp} and {inner}")
    return " or ".join(parts) if parts else "false"


def _ranges(keys: Iterable[tuple[int, int]]) -> dict[int, list[list[int]]]:
    """Inclusive ranges of strictly consecutive run numbers per experiment, sorted."""
    out: dict[int, list[list[int]]] = {}
    for exp, run in sorted(set(keys)):
        ranges = out.setdefault(exp, [])
        if ranges and ranges[-1][1] == run - 1:
            ranges[-1][1] = run
        else:
            ranges.append([run, run])
    return out


# --------------------------------------------------------------------------------------------
# good-run lists


@dataclass(frozen=True)
class GRLRun:
    """One run of a good-run list: (exp, run) and its integrated luminosity in pb^-1."""

    exp: int
    run: int
    lumi_pb: float

    @property
    def key(self) -> tuple[int, int]:
        """(exp, run)."""
        return (self.exp, self.run)


@dataclass(frozen=True)
class GoodRunList:
    """A good-run list: runs sorted by (exp, run), each once, with the expression that made it.

    ``version``, ``created`` and ``author`` are set when the list is stored. Set operations
    ``a & b``, ``a | b`` and ``a - b`` give unversioned lists whose expression is ``(a) and (b)``,
    ``(a) or (b)``, ``(a) and not (b)`` of the operands' expressions and whose runs keep the
    luminosity they have in the left operand (in the right one for runs only there).
    """

    name: str
    expression: str
    runs: tuple[GRLRun, ...]
    version: int | None = None
    created: datetime | None = None
    author: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        runs = tuple(sorted(self.runs, key=lambda r: r.key))
        for a, b in itertools.pairwise(runs):
            if a.key == b.key:
                raise ConfigError(f"good-run list {self.name!r}: run {a.key} appears twice")
        object.__setattr__(self, "runs", runs)

    @property
    def lumi_pb(self) -> float:
        """Integrated luminosity of the runs, pb^-1 (an exactly rounded sum)."""
        return math.fsum(r.lumi_pb for r in self.runs)

    @functools.cached_property
    def keys(self) -> frozenset[tuple[int, int]]:
        """The (exp, run) of every run."""
        return frozenset(r.key for r in self.runs)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, Run | GRLRun):
            key = key.key
        return key in self.keys

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[GRLRun]:
        return iter(self.runs)

    def _combine(self, other: GoodRunList, op: str) -> GoodRunList:
        if not isinstance(other, GoodRunList):
            return NotImplemented
        mine = {r.key: r for r in self.runs}
        theirs = {r.key: r for r in other.runs}
        if op == "&":
            keys = mine.keys() & theirs.keys()
            expr = f"({self.expression}) and ({other.expression})"
        elif op == "|":
            keys = mine.keys() | theirs.keys()
            expr = f"({self.expression}) or ({other.expression})"
        else:
            keys = mine.keys() - theirs.keys()
            expr = f"({self.expression}) and not ({other.expression})"
        runs = tuple(mine[k] if k in mine else theirs[k] for k in keys)
        return GoodRunList(f"{self.name}{op}{other.name}", expr, runs)

    def __and__(self, other: GoodRunList) -> GoodRunList:
        return self._combine(other, "&")

    def __or__(self, other: GoodRunList) -> GoodRunList:
        return self._combine(other, "|")

    def __sub__(self, other: GoodRunList) -> GoodRunList:
        return self._combine(other, "-")

    # exports
    def to_json(self) -> dict[str, Any]:
        """The list as a JSON-ready dict (format in the module documentation)."""
        experiments: dict[str, dict[str, Any]] = {}
        for r in self.runs:
            e = experiments.setdefault(str(r.exp), {"runs": [], "run_lumi_pb": []})
            e["runs"].append(r.run)
            e["run_lumi_pb"].append(r.lumi_pb)
        for e in experiments.values():
            e["lumi_pb"] = math.fsum(e["run_lumi_pb"])
        return {
            "name": self.name,
            "expression": self.expression,
            "version": self.version,
            "created": None if self.created is None else self.created.isoformat(),
            "author": self.author,
            "description": self.description,
            "lumi_pb": self.lumi_pb,
            "experiments": experiments,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GoodRunList:
        """Inverse of :meth:`to_json` (exact).

        Raises
        ------
        ConfigError
            A missing key, a malformed experiment, or totals that disagree with the runs.
        """
        where = f"good-run list {d.get('name')!r}" if isinstance(d, Mapping) else "good-run list"
        try:
            runs: list[GRLRun] = []
            for exp_text, e in d["experiments"].items():
                numbers, lumis = e["runs"], e["run_lumi_pb"]
                if len(numbers) != len(lumis):
                    raise ConfigError(
                        f"{where}: experiment {exp_text} has {len(numbers)} runs but "
                        f"{len(lumis)} luminosities"
                    )
                exp = int(exp_text)
                runs.extend(
                    GRLRun(exp, _as_int(n), float(x)) for n, x in zip(numbers, lumis, strict=True)
                )
            created = d["created"]
            grl = cls(
                name=str(d["name"]),
                expression=str(d["expression"]),
                runs=tuple(runs),
                version=None if d["version"] is None else _as_int(d["version"]),
                created=None if created is None else datetime.fromisoformat(created),
                author=d["author"],
                description=str(d.get("description", "")),
            )
            total = float(d["lumi_pb"])
        except KeyError as err:
            raise ConfigError(f"{where}: JSON lacks the key {err}") from None
        except (TypeError, ValueError, AttributeError) as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"{where}: malformed JSON ({err})") from err
        if not math.isclose(total, grl.lumi_pb, rel_tol=1e-9, abs_tol=1e-9):
            raise ConfigError(
                f"{where}: lumi_pb {total} differs from the sum of its runs {grl.lumi_pb}"
            )
        return grl

    def to_cms_json(self) -> dict[str, list[list[int]]]:
        """CMS "golden JSON": ``{"<exp>": [[first, last], ...]}`` with inclusive ranges of
        strictly consecutive run numbers."""
        return {str(exp): ranges for exp, ranges in _ranges(self.keys).items()}

    @classmethod
    def from_cms_json(
        cls,
        d: Mapping[str, Any],
        lumi: Mapping[tuple[int, int], float] | Iterable[Run] | None = None,
        *,
        name: str = "cms-json",
        description: str = "",
    ) -> GoodRunList:
        """A list from CMS "golden JSON" (inverse of :meth:`to_cms_json`).

        Parameters
        ----------
        d
            ``{"<exp>": [[first, last], ...]}``; ranges may overlap.
        lumi
            Luminosity per run: a mapping (exp, run) -> pb^-1, or runs (a registry). Without it
            every run carries 0 pb^-1 (the format has no luminosity).
        name, description
            Of the new list. Its expression selects exactly its runs (:func:`runs_expression`).

        Raises
        ------
        ConfigError
            Malformed JSON, or a run that ``lumi`` does not know.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"CMS JSON {name!r}: expected an object, got {type(d).__name__}")
        keys: set[tuple[int, int]] = set()
        for exp_text, ranges in d.items():
            try:
                exp = int(exp_text)
                for pair in ranges:
                    first, last = (_as_int(x) for x in pair)
                    if last < first:
                        raise ValueError(f"range [{first}, {last}] ends before it starts")
                    if last - first >= _MAX_RANGE:
                        raise ValueError(f"range [{first}, {last}] spans {_MAX_RANGE} runs or more")
                    keys.update((exp, r) for r in range(first, last + 1))
            except (TypeError, ValueError) as err:
                raise ConfigError(
                    f"CMS JSON {name!r}, experiment {exp_text!r}: expected a list of "
                    f"[first, last] run ranges ({err})"
                ) from err
        table: Mapping[tuple[int, int], float] = {}
        if lumi is not None:
            table = lumi if isinstance(lumi, Mapping) else {r.key: r.lumi_pb for r in lumi}
        runs = []
        for k in keys:
            if lumi is not None and k not in table:
                raise ConfigError(f"CMS JSON {name!r}: no luminosity for run {k} in the lookup")
            runs.append(GRLRun(k[0], k[1], float(table.get(k, 0.0))))
        return cls(name, runs_expression(keys), tuple(runs), description=description)

    def to_csv(self) -> str:
        """CSV: ``exp,run,lumi_pb`` per run, then ``TOTAL,,<total lumi_pb>`` as the last row."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["exp", "run", "lumi_pb"])
        for r in self.runs:
            w.writerow([r.exp, r.run, repr(float(r.lumi_pb))])
        w.writerow(["TOTAL", "", repr(self.lumi_pb)])
        return out.getvalue()


#: Longest run range :meth:`GoodRunList.from_cms_json` accepts (guards against [[1, 10**12]]).
_MAX_RANGE = 1_000_000


def _as_int(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise ValueError(f"{x!r} is not an integer")
    return x


def evaluate(
    expression: str | Expression,
    runs: Iterable[Run],
    *,
    name: str | None = None,
    description: str = "",
) -> GoodRunList:
    """The good-run list of the runs for which ``expression`` is true.

    Parameters
    ----------
    expression
        An :class:`Expression`, its text, or a preset name (:data:`PRESETS`).
    runs
        Runs with their current flags (a :class:`~b2calib.runs.RunRegistry` or any iterable);
        each (exp, run) at most once.
    name
        The list's name; default the preset name, else the canonical expression.
    description
        Free text.

    Returns
    -------
    GoodRunList
        Unversioned; its ``expression`` is the canonical text of the expression (a preset's
        expression, not its name, so that the list stays reproducible if presets change).
    """
    preset = expression if isinstance(expression, str) and expression in PRESETS else None
    expr = parse(expression) if isinstance(expression, str) else expression
    selected: dict[tuple[int, int], GRLRun] = {}
    seen: set[tuple[int, int]] = set()
    for r in runs:
        if r.key in seen:
            raise ConfigError(f"run {r.key} is given twice to the good-run list")
        seen.add(r.key)
        if expr(r):
            selected[r.key] = GRLRun(r.exp, r.run, r.lumi_pb)
    text = str(expr)
    return GoodRunList(
        name if name is not None else (preset or text),
        text,
        tuple(selected.values()),
        description=description,
    )
