"""The good-run-list expression language: a logic expression over data-quality flags and run
properties, tokenized and parsed (never evaluated as Python) into a tree of frozen nodes that is
evaluated on runs.

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
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from b2calib.dq import DQ_FLAGS, DQ_TAGS
from b2calib.exceptions import ConfigError
from b2calib.geometry import DETECTORS
from b2calib.runs import BEAM_ENERGIES, RUN_TYPES, Run

__all__ = ["DQ_TAG_PRESETS", "PRESETS", "Expression", "ExpressionError", "parse"]


def __dir__() -> list[str]:
    return __all__


#: Named expressions; a preset name may be used inside an expression and as the argument of
#: :func:`~b2calib.qa.grl.evaluate`.
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
