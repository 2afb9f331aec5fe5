"""Good-run lists: the runs an expression selects, with their luminosity, as a value.

A good-run list (GRL) is the set of runs (exp, run) that data analyses may use, with the luminosity
they contain. It is made by evaluating an :class:`Expression` on every run of the registry with
its current flags (:func:`evaluate`), combined with other lists by set operations (``&``, ``|``,
``-``) and exported as JSON (runs per experiment), CMS "golden JSON" (inclusive run ranges per
experiment) and CSV.

The expression language is :mod:`b2calib.qa.grl.expression`.

The luminosity of a list is the **recorded** one, from the run registry (``Run.lumi_pb``,
named ``"recorded (run registry)"`` as in :data:`b2calib.qa.store.LUMINOSITY_COLUMNS`), not
the Bhabha or gamma-gamma measurement; its exports say so (:data:`LUMINOSITY`).

A list made from flags carries ``warnings`` (:class:`GRLWarning`): the runs it selected with
detectors still uncertified (NOTSET), or certified GOOD over an automatic ERROR (a confirmed
override, with the reason kept in the flag history), among the detectors whose flags its
expression reads (every detector when it reads none: an expression like ``run in 1..30``
vouches for whole runs). Two lists are compared with :func:`diff` (:class:`GRLDiff`).

Exports
-------
``to_json``: ``{"name", "expression", "version", "created" (ISO 8601), "author", "description",
"lumi": "recorded (run registry)", "lumi_pb", "experiments": {"<exp>": {"runs": [...],
"run_lumi_pb": [...], "lumi_pb"}}, "warnings": [{"exp", "run", "detectors": [...],
"overrides": [[detector, reason], ...]}, ...]}``;
the per-run luminosities make :meth:`GoodRunList.from_json` exact.
``to_cms_json``: ``{"<exp>": [[first, last], ...]}``, inclusive ranges of strictly consecutive
run numbers (Belle II's (exp, run) in the place of CMS's (run, lumi section)).
``to_csv``: header ``exp,run,recorded_lumi_pb``, one row per run, then a last row
``TOTAL,,<lumi_pb>`` with the total recorded luminosity (an ordinary three-column row, so any
csv reader reads it; drop the row whose ``exp`` is ``TOTAL`` to keep only runs). Luminosities
are written with ``repr`` so they read back exactly.
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
from b2calib.geometry import DETECTORS
from b2calib.qa.grl.expression import PRESETS, Expression, parse
from b2calib.runs import Run

__all__ = [
    "LUMINOSITY",
    "GRLDiff",
    "GRLRun",
    "GRLWarning",
    "GoodRunList",
    "diff",
    "evaluate",
    "runs_expression",
]

#: The luminosity a good-run list sums: the run registry's recorded one (its exports say so).
LUMINOSITY = "recorded (run registry)"


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
class GRLWarning:
    """A run a good-run list selected while some of its detectors were uncertified (NOTSET,
    ``detectors``) or certified GOOD over an automatic ERROR (``overrides``: (detector, reason)
    pairs, the reason as the flag history keeps it: what was confirmed, by whom, and why)."""

    exp: int
    run: int
    detectors: tuple[str, ...]
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[int, int]:
        """(exp, run)."""
        return (self.exp, self.run)

    def __str__(self) -> str:
        parts = [f"{', '.join(self.detectors)} NOTSET (uncertified)"] if self.detectors else []
        parts += [f"{det} {reason}" for det, reason in self.overrides]
        return f"run ({self.exp}, {self.run}): {'; '.join(parts)}"


@dataclass(frozen=True)
class GoodRunList:
    """A good-run list: runs sorted by (exp, run), each once, with the expression that made it.

    ``version``, ``created`` and ``author`` are set when the list is stored. ``warnings`` name
    the runs selected with uncertified detectors (see the module documentation), by run. Set
    operations ``a & b``, ``a | b`` and ``a - b`` give unversioned lists whose expression is
    ``(a) and (b)``, ``(a) or (b)``, ``(a) and not (b)`` of the operands' expressions and whose
    runs (and warnings) keep what they have in the left operand (in the right one for runs
    only there). Its luminosity is the recorded one (:data:`LUMINOSITY`).
    """

    name: str
    expression: str
    runs: tuple[GRLRun, ...]
    version: int | None = None
    created: datetime | None = None
    author: str | None = None
    description: str = ""
    warnings: tuple[GRLWarning, ...] = ()

    def __post_init__(self) -> None:
        runs = tuple(sorted(self.runs, key=lambda r: r.key))
        for a, b in itertools.pairwise(runs):
            if a.key == b.key:
                raise ConfigError(f"good-run list {self.name!r}: run {a.key} appears twice")
        object.__setattr__(self, "runs", runs)
        object.__setattr__(self, "warnings", tuple(sorted(self.warnings, key=lambda w: w.key)))

    @property
    def lumi_pb(self) -> float:
        """Integrated **recorded** luminosity of the runs (the run registry's, see
        :data:`LUMINOSITY`), pb^-1 (an exactly rounded sum)."""
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
        warned = {w.key: w for w in other.warnings} | {w.key: w for w in self.warnings}
        warnings = tuple(w for k, w in warned.items() if k in keys)
        return GoodRunList(f"{self.name}{op}{other.name}", expr, runs, warnings=warnings)

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
            "lumi": LUMINOSITY,
            "lumi_pb": self.lumi_pb,
            "experiments": experiments,
            "warnings": [_warning_json(w) for w in self.warnings],
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
            warnings = tuple(
                GRLWarning(
                    _as_int(w["exp"]),
                    _as_int(w["run"]),
                    tuple(map(str, w["detectors"])),
                    tuple((str(det), str(why)) for det, why in w.get("overrides", ())),
                )
                for w in d.get("warnings", ())
            )
            grl = cls(
                name=str(d["name"]),
                expression=str(d["expression"]),
                runs=tuple(runs),
                version=None if d["version"] is None else _as_int(d["version"]),
                created=None if created is None else datetime.fromisoformat(created),
                author=d["author"],
                description=str(d.get("description", "")),
                warnings=warnings,
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
        """CSV: ``exp,run,recorded_lumi_pb`` per run, then ``TOTAL,,<total>`` as the last
        row (the recorded luminosity, :data:`LUMINOSITY`)."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["exp", "run", "recorded_lumi_pb"])
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
    overrides: Mapping[tuple[int, int], Mapping[str, str]] | None = None,
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
    overrides
        The detectors certified GOOD over an automatic ERROR, with the reason the flag
        history keeps: ``{(exp, run): {detector: reason}}``; a selected run with one of them
        (among the detectors the expression vouches for) is named in the warnings.

    Returns
    -------
    GoodRunList
        Unversioned; its ``expression`` is the canonical text of the expression (a preset's
        expression, not its name, so that the list stays reproducible if presets change).
    """
    preset = expression if isinstance(expression, str) and expression in PRESETS else None
    expr = parse(expression) if isinstance(expression, str) else expression
    vouched = expr.detectors() or frozenset(DETECTORS)  # reads no flag: vouches for whole runs
    selected: dict[tuple[int, int], GRLRun] = {}
    warnings: list[GRLWarning] = []
    seen: set[tuple[int, int]] = set()
    for r in runs:
        if r.key in seen:
            raise ConfigError(f"run {r.key} is given twice to the good-run list")
        seen.add(r.key)
        if expr(r):
            selected[r.key] = GRLRun(r.exp, r.run, r.lumi_pb)
            notset = tuple(
                d for d in DETECTORS if d in r.detectors and d in vouched and r.flag(d) == "NOTSET"
            )
            confirmed = (overrides or {}).get(r.key, {})
            over = tuple(
                (d, confirmed[d])
                for d in DETECTORS
                if d in confirmed and d in vouched and r.flag(d) == "GOOD"
            )
            if notset or over:
                warnings.append(GRLWarning(r.exp, r.run, notset, over))
    text = str(expr)
    return GoodRunList(
        name if name is not None else (preset or text),
        text,
        tuple(selected.values()),
        description=description,
        warnings=tuple(warnings),
    )


def _warning_json(w: GRLWarning) -> dict[str, Any]:
    """A warning in :meth:`GoodRunList.to_json` (``overrides`` only when it has some: the
    lists stored before they were warned of read and write back the same)."""
    out: dict[str, Any] = {"exp": w.exp, "run": w.run, "detectors": list(w.detectors)}
    if w.overrides:
        out["overrides"] = [list(o) for o in w.overrides]
    return out


@dataclass(frozen=True)
class GRLDiff:
    """What changed from one good-run list (``old``) to another (``new``), typically two
    versions of one list (:func:`diff`).

    ``added`` are the runs of ``new`` only, ``removed`` those of ``old`` only (as in that
    list), ``changed`` the runs in both whose recorded luminosity differs, as (old, new).
    Luminosities are the recorded ones (:data:`LUMINOSITY`), pb^-1.
    """

    old: GoodRunList
    new: GoodRunList
    added: tuple[GRLRun, ...]
    removed: tuple[GRLRun, ...]
    changed: tuple[tuple[GRLRun, GRLRun], ...]

    @property
    def lumi_added_pb(self) -> float:
        """Recorded luminosity of the runs added."""
        return math.fsum(r.lumi_pb for r in self.added)

    @property
    def lumi_removed_pb(self) -> float:
        """Recorded luminosity of the runs removed."""
        return math.fsum(r.lumi_pb for r in self.removed)

    @property
    def lumi_change_pb(self) -> float:
        """``new.lumi_pb - old.lumi_pb``."""
        return self.new.lumi_pb - self.old.lumi_pb

    @property
    def expression_changed(self) -> bool:
        """Whether the two lists were made by different expressions."""
        return self.old.expression != self.new.expression

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def __str__(self) -> str:
        def label(g: GoodRunList) -> str:
            return f"{g.name} v{g.version}" if g.version is not None else g.name

        return (
            f"{label(self.old)} -> {label(self.new)}: +{len(self.added)} runs "
            f"({self.lumi_added_pb:.6g} pb^-1), -{len(self.removed)} runs "
            f"({self.lumi_removed_pb:.6g} pb^-1), {len(self.changed)} with another luminosity; "
            f"{LUMINOSITY} luminosity {self.old.lumi_pb:.6g} -> {self.new.lumi_pb:.6g} pb^-1 "
            f"({self.lumi_change_pb:+.6g})"
        )


def diff(old: GoodRunList, new: GoodRunList) -> GRLDiff:
    """What changed from good-run list ``old`` to ``new`` (:class:`GRLDiff`)."""
    mine = {r.key: r for r in old.runs}
    theirs = {r.key: r for r in new.runs}
    return GRLDiff(
        old=old,
        new=new,
        added=tuple(r for k, r in theirs.items() if k not in mine),
        removed=tuple(r for k, r in mine.items() if k not in theirs),
        changed=tuple(
            (mine[k], r) for k, r in theirs.items() if k in mine and mine[k].lumi_pb != r.lumi_pb
        ),
    )
