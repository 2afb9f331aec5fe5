"""Good-run lists: a logic expression over data-quality flags and run properties, evaluated on runs.

A good-run list (GRL) is the set of runs (exp, run) that data analyses may use, with the luminosity
they contain. It is made by evaluating an :class:`Expression` on every run of the registry with
its current flags (:func:`evaluate`), combined with other lists by set operations (``&``, ``|``,
``-``) and exported as JSON (runs per experiment), CMS "golden JSON" (inclusive run ranges per
experiment) and CSV.

Expression language
-------------------
Grammar (EBNF; ``|`` alternatives, ``[]`` optional, ``{}`` repeated)::

    expression  = or_expr
    or_expr     = and_expr { "or" and_expr }
    and_expr    = not_expr { "and" not_expr }
    not_expr    = "not" not_expr | primary
    primary     = "(" expression ")" | "true" | "false" | PRESET | flag_test | quantified
                | included | property_test
    flag_test   = DETECTOR flag_op
    quantified  = ("all" | "any") [ "except" detectors ] flag_op
    detectors   = "(" DETECTOR { "," DETECTOR } ")" | DETECTOR
    flag_op     = ("==" | "!=") FLAG | ["not"] "in" "(" FLAG { "," FLAG } ")"
    included    = DETECTOR ["not"] "in" "detectors"
    property_test = NUMBER_PROPERTY ("==" | "!=" | "<" | "<=" | ">" | ">=") NUMBER
                | NUMBER_PROPERTY ["not"] "in" NUMBER ".." NUMBER
                | NUMBER_PROPERTY ["not"] "in" "(" NUMBER { "," NUMBER } ")"
                | TEXT_PROPERTY ("==" | "!=") VALUE
                | TEXT_PROPERTY ["not"] "in" "(" VALUE { "," VALUE } ")"
                | "magnet_on"
    VALUE       = WORD | 'quoted' | "quoted"

``not`` binds tighter than ``and``, which binds tighter than ``or`` (as in Python); parentheses
group, at most 64 ``not`` or ``(`` deep.

Names
    DETECTOR is one of :data:`b2calib.geometry.DETECTORS` and FLAG one of
    :data:`b2calib.runs.DQ_FLAGS`, written exactly so (upper case). Keywords (``and or not in all
    any except detectors true false``), property names, preset names and property values (run
    types, beam energies) are case-insensitive; values are stored in the registry's spelling.
    Properties: ``exp``, ``run``, ``l1_triggers`` (integers), ``duration`` (seconds, alias
    ``duration_s``), ``lumi_pb``, ``ecms_nominal_gev``, ``start``, ``stop`` (UNIX s) (numbers),
    ``run_type`` (:data:`b2calib.runs.RUN_TYPES`), ``beam_energy``
    (:data:`b2calib.runs.BEAM_ENERGIES`; ``'No Beam'`` needs quotes) and ``magnet_on`` (yes/no).
    A preset name (:data:`PRESETS`, e.g. ``all_good``) stands for its expression, which is
    inlined when parsed. ``a..b`` is an inclusive range.

Detectors a run did not include
    The run's ``detectors`` tuple says which detectors took data. ``all`` and ``any`` range over
    those detectors only (minus the ``except`` ones): a detector that was not included is not
    required. ``all ...`` over no detector at all is false (as :meth:`b2calib.runs.Run.has_dq`),
    ``any ...`` over none is false. A test of one named detector's flag (``PXD == GOOD``, and
    equally ``PXD != BAD``, ``PXD not in (BAD)``) is false on a run without that detector: it asks
    about data that does not exist. To say "unless PXD took data and was BAD" write
    ``not PXD == BAD``; ``PXD in detectors`` tests inclusion. A detector missing from the run's
    ``dq`` dict is NOTSET.

Examples: ``all == GOOD``; ``all except (PXD) in (GOOD, RECOVERABLE)``;
``run_type == physics and beam_energy == 4S and not any == BAD``; ``exp == 12 and run in 1..50``;
``beam_energy == 'No Beam' and duration >= 1800 and magnet_on``.

``str(expression)`` is a canonical text: minimal parentheses, flags and detectors in the
registry's order, ``in (X)`` with one value written ``== X``; it parses back to an equal
expression. Syntax errors are :class:`ExpressionError` (a :class:`b2calib.exceptions.ConfigError`)
with the column, what was expected and, for an unknown name, the known ones.

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
import difflib
import functools
import io
import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from b2calib.dq import DQ_FLAGS, DQ_TAGS
from b2calib.exceptions import ConfigError
from b2calib.geometry import DETECTORS
from b2calib.runs import BEAM_ENERGIES, RUN_TYPES, Run

__all__ = [
    "DQ_TAG_PRESETS",
    "PRESETS",
    "Expression",
    "ExpressionError",
    "GRLRun",
    "GoodRunList",
    "evaluate",
    "parse",
    "runs_expression",
]


def __dir__() -> list[str]:
    return __all__


#: Named expressions; a preset name may be used inside an expression and as :func:`evaluate`'s
#: argument.
PRESETS: dict[str, str] = {
    **{t.preset: t.expression for t in DQ_TAGS.values()},
    "physics_good": "run_type == physics and all == GOOD",
    "physics_4s_good": "run_type == physics and beam_energy == 4S and all == GOOD",
    "physics_4s_good_or_recoverable": (
        "run_type == physics and beam_energy == 4S and all in (GOOD, RECOVERABLE)"
    ),
    "physics_4s_good_for_pxd": "run_type == physics and beam_energy == 4S and all except (PXD) "
    "== GOOD",
    "physics_continuum_good": "run_type == physics and beam_energy == Continuum and all == GOOD",
}

#: The data-quality tags of :data:`b2calib.dq.DQ_TAGS` and the presets equal to them.
DQ_TAG_PRESETS: dict[str, str] = {t.name: t.preset for t in DQ_TAGS.values()}


class ExpressionError(ConfigError):
    """A good-run-list expression cannot be parsed.

    Attributes
    ----------
    text
        The expression.
    position
        0-based character offset of the fault (the message gives the 1-based column).
    expected
        What the parser expected there.
    """

    def __init__(self, text: str, position: int, expected: str, found: str, hint: str = "") -> None:
        self.text = text
        self.position = position
        self.expected = expected
        self.found = found
        tail = f"; {hint}" if hint else ""
        super().__init__(
            f"good-run-list expression, column {position + 1}: expected {expected}, "
            f"found {found}{tail}\n  {text}\n  {' ' * position}^"
        )


# --------------------------------------------------------------------------------------------
# properties

Kind = Literal["int", "float", "text", "bool"]


@dataclass(frozen=True)
class _Property:
    name: str
    kind: Kind
    get: Callable[[Run], Any]
    values: tuple[str, ...] = ()


_PROPERTIES: dict[str, _Property] = {
    p.name: p
    for p in (
        _Property("exp", "int", lambda r: r.exp),
        _Property("run", "int", lambda r: r.run),
        _Property("l1_triggers", "int", lambda r: r.l1_triggers),
        _Property("duration", "float", lambda r: r.duration_s),
        _Property("lumi_pb", "float", lambda r: r.lumi_pb),
        _Property("ecms_nominal_gev", "float", lambda r: r.ecms_nominal_gev),
        _Property("start", "float", lambda r: r.start),
        _Property("stop", "float", lambda r: r.stop),
        _Property("run_type", "text", lambda r: r.run_type, RUN_TYPES),
        _Property("beam_energy", "text", lambda r: r.beam_energy, BEAM_ENERGIES),
        _Property("magnet_on", "bool", lambda r: r.magnet_on),
    )
}
_ALIASES = {"duration_s": "duration"}
_WORD_RE = re.compile(r"[A-Za-z0-9_]+\Z")


def _fmt_number(v: float) -> str:
    return str(v) if isinstance(v, int) else repr(v)


def _fmt_value(v: str) -> str:
    return v if _WORD_RE.match(v) else f"'{v}'"


def _ordered(items: frozenset[str], order: tuple[str, ...]) -> list[str]:
    return sorted(items, key=lambda x: (order.index(x) if x in order else len(order), x))


# --------------------------------------------------------------------------------------------
# syntax tree: frozen nodes; And/Or are flattened so that equality does not depend on grouping


class _Node:
    precedence: ClassVar[int] = 4  # atoms; Not 3, And 2, Or 1

    def evaluate(self, run: Run) -> bool:
        raise NotImplementedError

    def text(self) -> str:
        raise NotImplementedError

    def flag_detectors(self) -> frozenset[str]:
        return frozenset()

    def child_text(self, child: _Node) -> str:
        t = child.text()
        return f"({t})" if child.precedence < self.precedence else t


@dataclass(frozen=True)
class _Const(_Node):
    value: bool

    def evaluate(self, run: Run) -> bool:
        return self.value

    def text(self) -> str:
        return "true" if self.value else "false"


@dataclass(frozen=True)
class _Not(_Node):
    operand: _Node
    precedence: ClassVar[int] = 3

    def evaluate(self, run: Run) -> bool:
        return not self.operand.evaluate(run)

    def text(self) -> str:
        return "not " + self.child_text(self.operand)

    def flag_detectors(self) -> frozenset[str]:
        return self.operand.flag_detectors()


@dataclass(frozen=True)
class _And(_Node):
    operands: tuple[_Node, ...]
    precedence: ClassVar[int] = 2

    def evaluate(self, run: Run) -> bool:
        return all(o.evaluate(run) for o in self.operands)

    def text(self) -> str:
        return " and ".join(self.child_text(o) for o in self.operands)

    def flag_detectors(self) -> frozenset[str]:
        return frozenset().union(*(o.flag_detectors() for o in self.operands))


@dataclass(frozen=True)
class _Or(_Node):
    operands: tuple[_Node, ...]
    precedence: ClassVar[int] = 1

    def evaluate(self, run: Run) -> bool:
        return any(o.evaluate(run) for o in self.operands)

    def text(self) -> str:
        return " or ".join(self.child_text(o) for o in self.operands)

    def flag_detectors(self) -> frozenset[str]:
        return frozenset().union(*(o.flag_detectors() for o in self.operands))


def _join(cls: type[_And] | type[_Or], operands: Iterable[_Node]) -> _Node:
    flat: list[_Node] = []
    for o in operands:
        flat.extend(o.operands if isinstance(o, cls) else (o,))
    return flat[0] if len(flat) == 1 else cls(tuple(flat))


def _flag_op_text(flags: frozenset[str], negated: bool) -> str:
    if len(flags) == 1:
        return f"{'!=' if negated else '=='} {next(iter(flags))}"
    inner = ", ".join(_ordered(flags, DQ_FLAGS))
    return f"{'not in' if negated else 'in'} ({inner})"


@dataclass(frozen=True)
class _FlagTest(_Node):
    detector: str
    flags: frozenset[str]
    negated: bool

    def evaluate(self, run: Run) -> bool:
        if self.detector not in run.detectors:
            return False
        return (run.flag(self.detector) in self.flags) != self.negated

    def text(self) -> str:
        return f"{self.detector} {_flag_op_text(self.flags, self.negated)}"

    def flag_detectors(self) -> frozenset[str]:
        return frozenset((self.detector,))


@dataclass(frozen=True)
class _Quantified(_Node):
    quantifier: Literal["all", "any"]
    excluded: frozenset[str]
    flags: frozenset[str]
    negated: bool

    def evaluate(self, run: Run) -> bool:
        tested = [
            (run.flag(d) in self.flags) != self.negated
            for d in run.detectors
            if d not in self.excluded
        ]
        if self.quantifier == "all":
            return bool(tested) and all(tested)
        return any(tested)

    def text(self) -> str:
        exc = ""
        if self.excluded:
            exc = f" except ({', '.join(_ordered(self.excluded, DETECTORS))})"
        return f"{self.quantifier}{exc} {_flag_op_text(self.flags, self.negated)}"

    def flag_detectors(self) -> frozenset[str]:
        return frozenset(DETECTORS) - self.excluded


@dataclass(frozen=True)
class _Included(_Node):
    detector: str

    def evaluate(self, run: Run) -> bool:
        return self.detector in run.detectors

    def text(self) -> str:
        return f"{self.detector} in detectors"


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


@dataclass(frozen=True)
class _Compare(_Node):
    prop: str
    op: str
    value: float | str

    def evaluate(self, run: Run) -> bool:
        return _COMPARE[self.op](_PROPERTIES[self.prop].get(run), self.value)

    def text(self) -> str:
        v = self.value
        return f"{self.prop} {self.op} {_fmt_value(v) if isinstance(v, str) else _fmt_number(v)}"


@dataclass(frozen=True)
class _Member(_Node):
    """``prop in (v1, v2, ...)`` with at least two values (one value is a :class:`_Compare`)."""

    prop: str
    values: frozenset[float | str]
    negated: bool

    def evaluate(self, run: Run) -> bool:
        return (_PROPERTIES[self.prop].get(run) in self.values) != self.negated

    def text(self) -> str:
        p = _PROPERTIES[self.prop]
        if p.kind == "text":
            parts = [
                _fmt_value(str(v)) for v in _ordered(frozenset(map(str, self.values)), p.values)
            ]
        else:
            parts = [
                _fmt_number(v) for v in sorted(v for v in self.values if not isinstance(v, str))
            ]
        return f"{self.prop} {'not in' if self.negated else 'in'} ({', '.join(parts)})"


@dataclass(frozen=True)
class _Range(_Node):
    prop: str
    low: float
    high: float
    negated: bool

    def evaluate(self, run: Run) -> bool:
        return (self.low <= _PROPERTIES[self.prop].get(run) <= self.high) != self.negated

    def text(self) -> str:
        op = "not in" if self.negated else "in"
        return f"{self.prop} {op} {_fmt_number(self.low)}..{_fmt_number(self.high)}"


@dataclass(frozen=True)
class _Flag(_Node):
    prop: str

    def evaluate(self, run: Run) -> bool:
        return bool(_PROPERTIES[self.prop].get(run))

    def text(self) -> str:
        return self.prop


# --------------------------------------------------------------------------------------------
# the public expression


@dataclass(frozen=True)
class Expression:
    """A parsed good-run-list expression (see the module documentation); make one with
    :func:`parse`.

    Calling it on a :class:`~b2calib.runs.Run` says whether the run is good; ``str()`` gives the
    canonical text. Expressions compare equal when their canonical forms are equal, and combine
    with ``&``, ``|`` and ``~``.
    """

    _root: _Node = field(repr=False)

    def __call__(self, run: Run) -> bool:
        return self._root.evaluate(run)

    def __str__(self) -> str:
        return self._root.text()

    def __repr__(self) -> str:
        return f"Expression({str(self)!r})"

    def detectors(self) -> frozenset[str]:
        """The detectors whose flags the expression reads (``all``/``any`` read every detector
        but the excepted ones; ``PXD in detectors`` reads no flag)."""
        return self._root.flag_detectors()

    def __and__(self, other: Expression) -> Expression:
        return Expression(_join(_And, (self._root, other._root)))

    def __or__(self, other: Expression) -> Expression:
        return Expression(_join(_Or, (self._root, other._root)))

    def __invert__(self) -> Expression:
        return Expression(_Not(self._root))


# --------------------------------------------------------------------------------------------
# tokenizer and recursive-descent parser

_TOKEN_RE = re.compile(
    r"""(?P<space>\s+)
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?![A-Za-z0-9_])
      | (?P<word>[A-Za-z0-9_]+)
      | (?P<string>'[^']*'|"[^"]*")
      | (?P<op>==|!=|<=|>=|<|>|\(|\)|,|\.\.)
    """,
    re.VERBOSE,
)
_BAD_OPERATORS = {
    "&&": "write 'and'",
    "&": "write 'and'",
    "||": "write 'or'",
    "|": "write 'or'",
    "!": "write 'not'",
    "=": "write '=='",
}


@dataclass(frozen=True)
class _Token:
    kind: Literal["number", "word", "string", "op", "end"]
    text: str
    position: int

    def describe(self) -> str:
        return "the end of the expression" if self.kind == "end" else repr(self.text)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            bad = text[pos : pos + 2] if text[pos : pos + 2] in _BAD_OPERATORS else text[pos]
            if bad[0] in "'\"":
                raise ExpressionError(
                    text, pos, f"a closing quote ({bad[0]})", "an unterminated string"
                )
            raise ExpressionError(
                text, pos, "a name, number, quoted value or operator", repr(bad),
                _BAD_OPERATORS.get(bad, ""),
            )  # fmt: skip
        kind = m.lastgroup
        if kind != "space":
            tokens.append(_Token(kind, m.group(), pos))  # type: ignore[arg-type]
        pos = m.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


#: Deepest nesting of ``not`` and parentheses the parser accepts (it recurses).
_MAX_DEPTH = 64


def _known(names: Iterable[str]) -> str:
    return ", ".join(names)


class _Parser:
    def __init__(self, text: str, presets: Mapping[str, str], expanding: tuple[str, ...]) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.presets = {k.lower(): k for k in presets}
        self.preset_texts = presets
        self.expanding = expanding
        self.depth = 0

    # token helpers
    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def peek(self, ahead: int = 1) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        t = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return t

    def is_kw(self, word: str, tok: _Token | None = None) -> bool:
        t = self.tok if tok is None else tok
        return t.kind == "word" and t.text.lower() == word

    def is_op(self, op: str) -> bool:
        return self.tok.kind == "op" and self.tok.text == op

    def fail(self, expected: str, hint: str = "", tok: _Token | None = None) -> ExpressionError:
        t = self.tok if tok is None else tok
        return ExpressionError(self.text, t.position, expected, t.describe(), hint)

    def expect_op(self, op: str, what: str = "") -> _Token:
        if not self.is_op(op):
            raise self.fail(f"'{op}'{what}")
        return self.advance()

    # grammar
    def parse(self) -> _Node:
        if self.tok.kind == "end":
            raise self.fail("an expression")
        node = self.or_expr()
        if self.tok.kind != "end":
            raise self.fail("'and', 'or' or the end of the expression")
        return node

    def or_expr(self) -> _Node:
        nodes = [self.and_expr()]
        while self.is_kw("or"):
            self.advance()
            nodes.append(self.and_expr())
        return _join(_Or, nodes)

    def and_expr(self) -> _Node:
        nodes = [self.not_expr()]
        while self.is_kw("and"):
            self.advance()
            nodes.append(self.not_expr())
        return _join(_And, nodes)

    def nest(self, tok: _Token) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail(
                "a simpler expression",
                f"more than {_MAX_DEPTH} nested 'not' or '(' in a row",
                tok,
            )

    def not_expr(self) -> _Node:
        if self.is_kw("not"):
            self.nest(self.advance())
            node: _Node = _Not(self.not_expr())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> _Node:
        t = self.tok
        if self.is_op("("):
            self.nest(self.advance())
            node = self.or_expr()
            self.expect_op(")", " closing the '(' at column " + str(t.position + 1))
            self.depth -= 1
            return node
        if t.kind != "word":
            raise self.fail("a test (a detector, all, any, a run property or a preset) or '('")
        low = t.text.lower()
        if low in ("true", "false"):
            self.advance()
            return _Const(low == "true")
        if low in ("all", "any"):
            return self.quantified()
        if low in _PROPERTIES or low in _ALIASES:
            return self.property_test()
        if low in self.presets:
            return self.preset()
        if t.text in DETECTORS:
            return self.detector_test()
        names = [*DETECTORS, "all", "any", *_PROPERTIES, *self.preset_texts]
        close = difflib.get_close_matches(t.text, names, n=3, cutoff=0.6)
        close += [n for n in names if n.lower() == low and n not in close]
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise self.fail(
            "a detector, 'all', 'any', a run property or a preset",
            f"unknown name {t.text!r}{hint}; detectors (upper case): {_known(DETECTORS)}; "
            f"run properties: {_known(_PROPERTIES)}; presets: {_known(self.preset_texts)}",
        )

    def preset(self) -> _Node:
        t = self.advance()
        name = self.presets[t.text.lower()]
        if name in self.expanding:
            chain = " -> ".join((*self.expanding, name))
            raise self.fail("an expression", f"presets refer to each other in a cycle: {chain}", t)
        inner = _Parser(self.preset_texts[name], self.preset_texts, (*self.expanding, name))
        try:
            return inner.parse()
        except ExpressionError as err:
            raise self.fail("a valid preset", f"preset {name!r} is invalid: {err}", t) from err

    def detector(self, what: str) -> str:
        t = self.tok
        if t.kind == "word" and t.text in DETECTORS:
            self.advance()
            return t.text
        close = [d for d in DETECTORS if d.lower() == t.text.lower()]
        close += difflib.get_close_matches(t.text, DETECTORS, n=2, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise self.fail(
            f"a detector{what}",
            f"unknown detector {t.text!r}{hint}; detectors: {_known(DETECTORS)}"
            if t.kind == "word"
            else f"detectors: {_known(DETECTORS)}",
        )

    def flag(self) -> str:
        t = self.tok
        if t.kind == "word" and t.text in DQ_FLAGS:
            self.advance()
            return t.text
        close = [f for f in DQ_FLAGS if f.lower() == t.text.lower()]
        close += difflib.get_close_matches(t.text.upper(), DQ_FLAGS, n=2, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise self.fail(
            "a flag",
            f"unknown flag {t.text!r}{hint}; flags: {_known(DQ_FLAGS)}"
            if t.kind == "word"
            else f"flags: {_known(DQ_FLAGS)}",
        )

    def negated_in(self) -> bool | None:
        """Consume ``in`` / ``not in``: False / True; None (nothing consumed) otherwise."""
        if self.is_kw("in"):
            self.advance()
            return False
        if self.is_kw("not") and self.is_kw("in", self.peek()):
            self.advance()
            self.advance()
            return True
        return None

    def flag_op(self, subject: str) -> tuple[frozenset[str], bool]:
        if self.tok.kind == "op" and self.tok.text in ("==", "!="):
            negated = self.advance().text == "!="
            return frozenset((self.flag(),)), negated
        negated_in = self.negated_in()
        if negated_in is None:
            hint = ""
            if self.tok.kind == "op" and self.tok.text in ("<", "<=", ">", ">="):
                hint = "flags are not ordered"
            raise self.fail(f"'==', '!=', 'in' or 'not in' after {subject}", hint)
        self.expect_op("(", " before the list of flags")
        flags = [self.flag()]
        while self.is_op(","):
            self.advance()
            flags.append(self.flag())
        self.expect_op(")", " or ',' in the list of flags")
        return frozenset(flags), negated_in

    def quantified(self) -> _Node:
        q = self.advance().text.lower()
        excluded: list[str] = []
        if self.is_kw("except"):
            self.advance()
            if self.is_op("("):
                self.advance()
                excluded.append(self.detector(" after 'except ('"))
                while self.is_op(","):
                    self.advance()
                    excluded.append(self.detector(" after ','"))
                self.expect_op(")", " or ',' in the list of detectors")
            else:
                excluded.append(self.detector(" or '(' after 'except'"))
        flags, negated = self.flag_op(f"'{q}'")
        return _Quantified(q, frozenset(excluded), flags, negated)  # type: ignore[arg-type]

    def detector_test(self) -> _Node:
        det = self.advance().text
        save = self.i
        negated_in = self.negated_in()
        if negated_in is not None and self.is_kw("detectors"):
            self.advance()
            node: _Node = _Included(det)
            return _Not(node) if negated_in else node
        self.i = save
        flags, negated = self.flag_op(det)
        return _FlagTest(det, flags, negated)

    def number(self, prop: _Property) -> float:
        t = self.tok
        if t.kind != "number":
            raise self.fail(f"a number for {prop.name}")
        self.advance()
        if prop.kind == "int":
            if not re.fullmatch(r"-?\d+", t.text):
                raise self.fail(f"an integer for {prop.name}", tok=t)
            return int(t.text)
        v = float(t.text)
        if not math.isfinite(v):
            raise self.fail(f"a finite number for {prop.name}", tok=t)
        # integral values are kept as int, so that equal numbers have one canonical spelling
        return int(v) if v.is_integer() and abs(v) < 2**53 else v

    def value(self, prop: _Property) -> str:
        t = self.tok
        if t.kind in ("word", "string", "number"):
            raw = t.text[1:-1] if t.kind == "string" else t.text
            for v in prop.values:
                if v.lower() == raw.lower():
                    self.advance()
                    return v
        hint = ""
        if t.kind == "word" and any(" " in v and v.lower().startswith(t.text.lower() + " ")
                                    for v in prop.values):  # fmt: skip
            hint = "quote values with spaces ('No Beam'); "
        raise self.fail(f"a {prop.name} value", f"{hint}{prop.name} values: {_known(prop.values)}")

    def property_test(self) -> _Node:
        t = self.advance()
        prop = _PROPERTIES[_ALIASES.get(t.text.lower(), t.text.lower())]
        if prop.kind == "bool":
            if (self.tok.kind == "op" and self.tok.text in _COMPARE) or self.is_kw("in"):
                raise self.fail(
                    "'and', 'or', ')' or the end",
                    f"{prop.name} is a yes/no property: write '{prop.name}' or 'not {prop.name}'",
                )
            return _Flag(prop.name)
        text = prop.kind == "text"
        if self.tok.kind == "op" and self.tok.text in _COMPARE:
            op_tok = self.advance()
            if text and op_tok.text not in ("==", "!="):
                raise self.fail(
                    f"'==', '!=', 'in' or 'not in' after {prop.name}",
                    f"{prop.name} is not ordered",
                    op_tok,
                )
            value: float | str = self.value(prop) if text else self.number(prop)
            return _Compare(prop.name, op_tok.text, value)
        negated = self.negated_in()
        if negated is None:
            ops = "'==', '!=', 'in' or 'not in'" if text else "a comparison, 'in' or 'not in'"
            raise self.fail(f"{ops} after {prop.name}")
        if not self.is_op("("):
            if text:
                raise self.fail(f"'(' before the list of {prop.name} values")
            low = self.number(prop)
            self.expect_op("..", f" in the range {prop.name} in {_fmt_number(low)}..")
            high_tok = self.tok
            high = self.number(prop)
            if high < low:
                raise self.fail(
                    f"an upper bound >= {_fmt_number(low)}", "ranges are low..high", high_tok
                )
            return _Range(prop.name, low, high, negated)
        self.advance()
        values: list[float | str] = [self.value(prop) if text else self.number(prop)]
        while self.is_op(","):
            self.advance()
            values.append(self.value(prop) if text else self.number(prop))
        self.expect_op(")", f" or ',' in the list of {prop.name} values")
        if len(set(values)) == 1:
            return _Compare(prop.name, "!=" if negated else "==", values[0])
        return _Member(prop.name, frozenset(values), negated)


def parse(text: str) -> Expression:
    """Parse a good-run-list expression (grammar in the module documentation).

    Parameters
    ----------
    text
        The expression, or the name of a preset (:data:`PRESETS`).

    Returns
    -------
    Expression

    Raises
    ------
    ExpressionError
        With the column, what was expected and the known names.
    """
    if not isinstance(text, str):
        raise ConfigError(f"a good-run-list expression is text, got {type(text).__name__}")
    return Expression(_Parser(text, PRESETS, ()).parse())


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
