"""Calibration intervals in time: atoms, the loss expressions, the split into outer intervals and
sub-intervals, and the algorithm base class of the beam calibrations.

The beam spot, the boost vector and the collision energy move during a run, so their constants are
measured per interval of time, as basf2's ``Splitter`` (tracking/calibration, R. Zlebcik) does:

1. **Atoms.** Time is cut into atoms of :data:`ATOM_SECONDS` (0.1 h). Here the atoms lie on a
   GLOBAL grid, atom ``a`` covering ``[a, a + 1) x ATOM_SECONDS`` in UNIX time
   (:func:`atom_index`), so that a collector fills per event without knowing when its run
   started; an atom cut by a run boundary exists once per run (collector outputs are per run).
   A collector fills :func:`atom_times_hist` with :func:`fill_atom_times` (events per atom and
   when in the atom they came), and its moments with an :func:`atom_axis`;
   :func:`atoms_from_hist` turns the per-run histograms into :class:`Atom` s,
   :func:`sum_atoms` sums any such histogram over the atoms of an interval and
   :func:`per_atom` gives its values atom by atom.
2. **Loss.** An interval of consecutive atoms has a loss, an expert_config expression
   (:class:`LossExpression`, parsed safely, never ``eval``) of ``rawTime`` (h, from its first
   atom's start to its last atom's end, gaps included), ``netTime`` (h, the summed atom
   durations), ``maxGap`` (h, the largest gap between consecutive atoms) and ``nEv`` (events;
   0 counts as 0.1, as in basf2, so that ``1./nEv`` stays finite).
3. **Split** (:func:`split`). Dynamic programming finds the partition of minimal summed loss:
   first the outer intervals (the outer loss), then, inside each, the sub-intervals (the inner
   loss). The beam spot shares one size over an outer interval and has a position per
   sub-interval. Sub-intervals with fewer than 50 events merge into a neighbour, a run shorter
   than 2 minutes joins the nearest sub-interval, fewer than 15 events in total is
   NOT_ENOUGH_DATA. The split sees only times and event counts; where the constants step inside
   a run, :class:`IntervalAlgorithm` finds the step in a per-atom series and forces a
   sub-interval to start at its atom (``breaks``), so that a step is placed to within one atom,
   not to within a sub-interval.
4. **Fits** (:class:`IntervalAlgorithm`): per outer interval the shared quantities, per
   sub-interval its own; a failed sub-interval copies its nearest good neighbour
   (:func:`fill_from_neighbours`) and is flagged; one time-dependent payload row per
   sub-interval (keys ``t_start``, ``t_end`` in UNIX ns, ``metadata["event_dependency"] ==
   "time"``).

Differences from basf2
----------------------
* **Outer intervals are whole runs.** basf2 cuts outer intervals anywhere on the atom grid;
  here each outer interval becomes one payload whose IoV is run-granular (first run .. last
  run), so the outer dynamic programming only breaks between runs (and always between
  experiments). Sub-intervals cut runs freely.
* **Atoms on a global grid.** basf2 divides each run, from its first to its last event, into
  ``floor(duration / 0.1 h)`` equal atoms (at least one) and counts the events of each; here the
  grid is global, so the first and last atoms of a run are partial. A run's atoms span from its
  first to its last event (to within the :data:`ATOM_SUBBINS` resolution, 10 s) and grid cells
  without events between them are atoms with no events (as basf2's atoms tile the run): a gap is
  only ever between runs.
* **Merging of small sub-intervals** is repeated until none has fewer than ``min_sub_events``
  events (basf2 stops after 10 merges); as in basf2, the smallest one merges into its neighbour
  with fewer events (the earlier on a tie, the only one at an end), within its outer interval.
* **Short runs** join the nearest sub-interval in time of their experiment when the split is
  made (basf2 adds them to the nearest *calibrated* interval after the fits and does not use
  their events); here their events are fit with that sub-interval.
* **Steps** (forced sub-interval starts found in the data) are an addition: basf2's split is
  blind to the constants.
* **Payload rows** hold each sub-interval's start and end (its first atom's start, its last
  atom's end; an end never after the next row's start), where basf2's ``EventDependency`` has
  only the break points, placed at events; the lookup (:mod:`b2calib.conditions.eventdep`)
  uses the starts, extending the first row to minus infinity, each row up to the next row's
  start and the last row to plus infinity within the payload's IoV.
* **Failed intervals** copy the nearest good sub-interval (the smaller time distance between
  interval edges, the earlier on a tie) as basf2's ``extrapolateCalibration`` does, but within
  one algorithm execution, and are flagged in the payload's status column (basf2 does not flag
  them).

Default losses (basf2 prompt scripts, calibration/scripts/prompt/calibrations/)
------------------------------------------------------------------------------
==============  ==============================================  ================================
calibration     outer                                           inner
==============  ==============================================  ================================
beam spot       ``pow(rawTime - 2.0, 2) + 10 * pow(maxGap, 2)``  ``pow(rawTime - 0.5, 2) + 10 *
                                                                pow(maxGap, 2)``
boost vector    ``pow(rawTime - 8.0, 2) + 10 * pow(maxGap, 2)``  the same as the outer
collision       ``pow(0.000020e0*rawTime, 2) + 1./nEv``          ``pow(0.000120e0*rawTime, 2) +
energy                                                          1./nEv``
==============  ==============================================  ================================

(caf_beamspot.py, caf_boostvector.py and caf_ecms.py, ``expert_config`` keys ``outerLoss`` and
``innerLoss``; the collision-energy ones are those of the combined hadronic-B and dimuon
calibration ``caf_ecms.py``, the basf2 source consulted has no separate ``caf_ecms_dimuon.py``.)
"""

from __future__ import annotations

import abc
import math
import re
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import hist
import numpy as np
import numpy.typing as npt

from b2calib.calibration.algorithm import (
    Algorithm,
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Diagnostics,
)
from b2calib.calibration.toolkit import NotEnoughData, find_steps, guarded, weighted_mean_split
from b2calib.conditions.iov import RunKey
from b2calib.conditions.payload import Payload
from b2calib.conditions.status import ChannelStatus
from b2calib.exceptions import ConfigError

__all__ = [
    "ATOMS_HISTOGRAM",
    "ATOM_NS",
    "ATOM_SECONDS",
    "ATOM_SUBBINS",
    "BEAMSPOT_INNER_LOSS",
    "BEAMSPOT_OUTER_LOSS",
    "BOOSTVECTOR_INNER_LOSS",
    "BOOSTVECTOR_OUTER_LOSS",
    "ECMS_INNER_LOSS",
    "ECMS_OUTER_LOSS",
    "LOSS_VARIABLES",
    "MIN_EVENTS",
    "MIN_RUN_SECONDS",
    "MIN_SUB_EVENTS",
    "Atom",
    "IntervalAlgorithm",
    "IntervalFit",
    "LossExpression",
    "OuterInterval",
    "SubInterval",
    "atom_axis",
    "atom_index",
    "atom_times_hist",
    "atoms_from_counts",
    "atoms_from_hist",
    "fill_atom_times",
    "fill_from_neighbours",
    "interval_variables",
    "per_atom",
    "split",
    "sum_atoms",
]

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Duration of an atom, the smallest piece of time an interval is made of (basf2: 0.1 h).
ATOM_SECONDS = 360.0
#: :data:`ATOM_SECONDS` in nanoseconds (the unit of ``EventMetaData_m_time``).
ATOM_NS = 360_000_000_000
#: Sub-bins per atom of :func:`atom_times_hist`: where in its atom an event came, so that the
#: first and last event of a run are known to ``ATOM_SECONDS / ATOM_SUBBINS`` (10 s).
ATOM_SUBBINS = 36
_SUB_NS = ATOM_NS // ATOM_SUBBINS
#: Name of the per-run histogram of :func:`atom_times_hist` that :class:`IntervalAlgorithm` reads.
ATOMS_HISTOGRAM = "atoms"
#: Sub-intervals with fewer events merge into a neighbour (basf2 calibTools ``runAlgorithm``).
MIN_SUB_EVENTS = 50
#: Runs this short or shorter (first to last event) join the nearest sub-interval (basf2:
#: ``filter(runs, 2./60)``, runs longer than 2 minutes are kept).
MIN_RUN_SECONDS = 120.0
#: Fewer events in total is NOT_ENOUGH_DATA (basf2 calibTools ``runCalibration``).
MIN_EVENTS = 15

#: Beam spot, outer intervals (one size): basf2 caf_beamspot.py ``expert_config["outerLoss"]``.
BEAMSPOT_OUTER_LOSS = "pow(rawTime - 2.0, 2) + 10 * pow(maxGap, 2)"
#: Beam spot, sub-intervals (one position each): caf_beamspot.py ``innerLoss``.
BEAMSPOT_INNER_LOSS = "pow(rawTime - 0.5, 2) + 10 * pow(maxGap, 2)"
#: Boost vector, outer intervals: basf2 caf_boostvector.py ``outerLoss``.
BOOSTVECTOR_OUTER_LOSS = "pow(rawTime - 8.0, 2) + 10 * pow(maxGap, 2)"
#: Boost vector, sub-intervals: caf_boostvector.py ``innerLoss`` (the same as the outer).
BOOSTVECTOR_INNER_LOSS = "pow(rawTime - 8.0, 2) + 10 * pow(maxGap, 2)"
#: Collision energy, outer intervals: basf2 caf_ecms.py ``outerLoss`` (time in hours).
ECMS_OUTER_LOSS = "pow(0.000020e0*rawTime, 2) + 1./nEv"
#: Collision energy, sub-intervals: caf_ecms.py ``innerLoss``.
ECMS_INNER_LOSS = "pow(0.000120e0*rawTime, 2) + 1./nEv"

#: The variables a loss expression may use (times in hours, as basf2's ``Splitter``).
LOSS_VARIABLES = ("rawTime", "netTime", "maxGap", "nEv")


# =============================================================================== loss parser
_TOKEN = re.compile(
    r"(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>[-+*/(),])"
)
Node = Callable[[Mapping[str, Any]], Any]


def _minimum(*a: Any) -> Any:
    return np.minimum.reduce(np.broadcast_arrays(*a))


def _maximum(*a: Any) -> Any:
    return np.maximum.reduce(np.broadcast_arrays(*a))


#: name -> (function, fewest arguments, most arguments or None for any number)
_FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "pow": (np.power, 2, 2),
    "sqrt": (np.sqrt, 1, 1),
    "exp": (np.exp, 1, 1),
    "log": (np.log, 1, 1),
    "abs": (np.abs, 1, 1),
    "min": (_minimum, 2, None),
    "max": (_maximum, 2, None),
}


class _Parser:
    """Recursive descent over the tokens of a loss expression, building closures.

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := ("-" | "+") unary | primary
    primary := NUMBER | VARIABLE | FUNCTION "(" expr ("," expr)* ")" | "(" expr ")"
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, position)
        pos = 0
        while pos < len(text):
            if text[pos].isspace():
                pos += 1
                continue
            m = _TOKEN.match(text, pos)
            if m is None:
                raise self.error(f"unexpected character {text[pos]!r}", pos)
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(), pos))
            pos = m.end()
        self.i = 0
        self.variables: set[str] = set()

    def error(self, what: str, pos: int) -> ConfigError:
        return ConfigError(
            f"loss expression {self.text!r}: {what} at position {pos}\n"
            f"  {self.text}\n  {' ' * pos}^"
        )

    def peek(self) -> tuple[str, str, int]:
        if self.i < len(self.tokens):
            return self.tokens[self.i]
        return ("end", "", len(self.text))

    def take(self, op: str) -> None:
        kind, tok, pos = self.peek()
        if kind != "op" or tok != op:
            found = "the end" if kind == "end" else repr(tok)
            raise self.error(f"expected {op!r}, found {found}", pos)
        self.i += 1

    def parse(self) -> Node:
        if not self.tokens:
            raise self.error("empty expression", 0)
        node = self.expr()
        kind, tok, pos = self.peek()
        if kind != "end":
            raise self.error(f"unexpected {tok!r}", pos)
        return node

    def expr(self) -> Node:
        node = self.term()
        while True:
            kind, tok, _ = self.peek()
            if kind != "op" or tok not in "+-":
                return node
            self.i += 1
            right = self.term()
            node = _binary(np.add if tok == "+" else np.subtract, node, right)

    def term(self) -> Node:
        node = self.unary()
        while True:
            kind, tok, _ = self.peek()
            if kind != "op" or tok not in "*/":
                return node
            self.i += 1
            right = self.unary()
            node = _binary(np.multiply if tok == "*" else np.true_divide, node, right)

    def unary(self) -> Node:
        kind, tok, _ = self.peek()
        if kind == "op" and tok in "+-":
            self.i += 1
            inner = self.unary()
            if tok == "+":
                return inner
            return lambda env: np.negative(inner(env))
        return self.primary()

    def primary(self) -> Node:
        kind, tok, pos = self.peek()
        if kind == "num":
            self.i += 1
            value = float(tok)
            return lambda env: value
        if kind == "op" and tok == "(":
            self.i += 1
            node = self.expr()
            self.take(")")
            return node
        if kind == "name":
            self.i += 1
            nxt_kind, nxt, _ = self.peek()
            if nxt_kind == "op" and nxt == "(":
                return self.call(tok, pos)
            if tok not in LOSS_VARIABLES:
                known = ", ".join(LOSS_VARIABLES)
                hint = (
                    " (a function needs its arguments in parentheses)" if tok in _FUNCTIONS else ""
                )
                raise self.error(f"unknown variable {tok!r}{hint}; known: {known}", pos)
            self.variables.add(tok)
            return lambda env: env[tok]
        found = "the end" if kind == "end" else repr(tok)
        raise self.error(f"expected a number, variable, function or '(', found {found}", pos)

    def call(self, name: str, pos: int) -> Node:
        if name not in _FUNCTIONS:
            known = ", ".join(_FUNCTIONS)
            raise self.error(f"unknown function {name!r}; known: {known}", pos)
        fn, lo, hi = _FUNCTIONS[name]
        self.take("(")
        args = [self.expr()]
        while self.peek()[:2] == ("op", ","):
            self.i += 1
            args.append(self.expr())
        self.take(")")
        if len(args) < lo or (hi is not None and len(args) > hi):
            want = f"{lo}" if lo == hi else f"at least {lo}"
            raise self.error(f"{name}() takes {want} arguments, not {len(args)}", pos)
        return lambda env: fn(*(a(env) for a in args))


def _binary(fn: Callable[[Any, Any], Any], left: Node, right: Node) -> Node:
    return lambda env: fn(left(env), right(env))


class LossExpression:
    """A loss of an interval, from an expert_config string such as basf2's
    ``"pow(rawTime - 2.0, 2) + 10 * pow(maxGap, 2)"``.

    The text is parsed by a small recursive-descent parser (never ``eval``): numbers (``2``,
    ``1.``, ``.5``, ``2.0e-5``), ``+ - * /``, unary minus, parentheses, the functions ``pow``,
    ``sqrt``, ``exp``, ``log``, ``abs``, ``min`` and ``max`` (two or more arguments), and the
    variables of :data:`LOSS_VARIABLES`: ``rawTime``, ``netTime``, ``maxGap`` (hours) and ``nEv``.
    Anything else (another name, an attribute, ``**``, a string) is a :class:`ConfigError`
    naming the expression and the position.

    Calling it evaluates it on numbers or numpy arrays (broadcast): ``loss(rawTime=...,
    netTime=..., maxGap=..., nEv=...)`` returns a float array; a division by zero gives an
    infinity, not a warning.
    """

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise ConfigError(f"a loss expression must be a string, not {text!r}")
        self.text = text
        parser = _Parser(text)
        self._node = parser.parse()
        #: The variables the expression uses.
        self.variables: frozenset[str] = frozenset(parser.variables)

    def __call__(self, **variables: Any) -> F:
        missing = sorted(self.variables - set(variables))
        if missing:
            raise ConfigError(f"loss expression {self.text!r}: no value for {missing}")
        env = {k: np.asarray(v, dtype=np.float64) for k, v in variables.items()}
        with np.errstate(all="ignore"):
            return np.asarray(self._node(env), dtype=np.float64)

    def __repr__(self) -> str:
        return f"LossExpression({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LossExpression) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _loss(expression: LossExpression | str) -> LossExpression:
    return expression if isinstance(expression, LossExpression) else LossExpression(expression)


# ===================================================================================== atoms
@dataclass(frozen=True)
class Atom:
    """The events of one run in one cell of the atom grid.

    Attributes
    ----------
    exp, run
        The run.
    index
        The global atom index, ``floor(t / ATOM_SECONDS)`` for UNIX time ``t`` in seconds.
    t_start, t_end
        UNIX seconds: the grid cell, except for a run's first atom, which starts at the run's
        first event, and its last, which ends at its last event (both to within
        ``ATOM_SECONDS / ATOM_SUBBINS``, the resolution of :func:`atom_times_hist`).
    n_events
        Events in the atom (0 for a cell without events between a run's first and last event).
    """

    exp: int
    run: int
    index: int
    t_start: float
    t_end: float
    n_events: float

    @property
    def key(self) -> RunKey:
        """The (exp, run) of the atom."""
        return (self.exp, self.run)


def atom_index(t_ns: npt.ArrayLike) -> I64:
    """The global atom index of UNIX times in nanoseconds (``EventMetaData_m_time``):
    ``floor(t_ns / ATOM_NS)``, computed in integers."""
    t = np.asarray(t_ns)
    if t.dtype.kind == "f":
        return np.floor(t / ATOM_NS).astype(np.int64)
    return (t.astype(np.int64) // ATOM_NS).astype(np.int64)


def atom_axis(name: str = "atom", atoms: Sequence[int] = ()) -> hist.axis.IntCategory:
    """The atom axis of a collector histogram: the global atom index, a growing integer
    category (an ``Integer`` axis would grow from 0 to the ~5e6 of today's atoms), holding
    ``atoms`` (in that order) to start with."""
    return hist.axis.IntCategory(
        list(atoms), growth=True, name=name, label="atom (UNIX time / 360 s)"
    )


def atom_times_hist() -> hist.Hist:
    """The events of a run per atom and per :data:`ATOM_SUBBINS` sub-bin of the atom (10 s):
    what :func:`atoms_from_hist` needs (events per atom, and the first and last event times)."""
    return hist.Hist(
        atom_axis(),
        hist.axis.Integer(0, ATOM_SUBBINS, name="sub", label="10 s bin in the atom", flow=False),
        storage=hist.storage.Double(),
    )


def fill_atom_times(h: hist.Hist, t_ns: npt.ArrayLike) -> hist.Hist:
    """Fill :func:`atom_times_hist` ``h`` with event times (UNIX ns); returns ``h``."""
    t = np.asarray(t_ns)
    if t.dtype.kind == "f":
        t = np.floor(t).astype(np.int64)
    t = t.astype(np.int64)
    a = t // ATOM_NS
    h.fill(atom=a, sub=(t - a * ATOM_NS) // _SUB_NS)
    return h


def atoms_from_counts(
    exp: int,
    run: int,
    indices: npt.ArrayLike,
    counts: npt.ArrayLike,
    t_first: float | None = None,
    t_last: float | None = None,
) -> list[Atom]:
    """The atoms of one run from its events per atom.

    Parameters
    ----------
    exp, run
        The run.
    indices, counts
        Global atom indices and the events in each (any order; atoms without events are
        dropped, the cells between the first and the last atom become atoms of no events).
    t_first, t_last
        UNIX seconds of the run's first and last event; by default the start of its first atom
        and the end of its last.

    Returns
    -------
    list of Atom
        In time order; empty when the run has no events.
    """
    idx = np.asarray(indices, dtype=np.int64)
    n = np.asarray(counts, dtype=np.float64)
    keep = n > 0
    idx, n = idx[keep], n[keep]
    if not len(idx):
        return []
    lo, hi = int(idx.min()), int(idx.max())
    per = np.zeros(hi - lo + 1)
    np.add.at(per, idx - lo, n)
    starts = (lo + np.arange(hi - lo + 1)) * ATOM_SECONDS
    ends = starts + ATOM_SECONDS
    if t_first is not None:
        starts[0] = min(max(float(t_first), starts[0]), ends[0])
    if t_last is not None:
        ends[-1] = max(min(float(t_last), ends[-1]), starts[-1])
    return [
        Atom(int(exp), int(run), lo + k, float(starts[k]), float(ends[k]), float(per[k]))
        for k in range(len(per))
    ]


def atoms_from_hist(
    per_run: Mapping[RunKey, Mapping[str, hist.Hist]] | Mapping[RunKey, hist.Hist],
    name: str = ATOMS_HISTOGRAM,
    runs: Iterable[RunKey] | None = None,
) -> list[Atom]:
    """The atoms of every run from their :func:`atom_times_hist` histograms.

    Parameters
    ----------
    per_run
        Per run, the histogram, or the run's histograms by name (a collector's
        :class:`~b2calib.engine.RunOutput`).
    name
        The histogram's name when ``per_run`` holds histograms by name.
    runs
        The runs to take (default: all); a run without the histogram has no atoms.

    Returns
    -------
    list of Atom
        Sorted by run, then time.
    """
    keys = sorted(per_run) if runs is None else sorted(set(runs))
    out: list[Atom] = []
    for key in keys:
        entry = per_run.get(key) if isinstance(per_run, Mapping) else None
        h = entry.get(name) if isinstance(entry, Mapping) else entry
        if h is None:
            continue
        names = [ax.name for ax in h.axes]
        cats = np.asarray(list(h.axes["atom"]), dtype=np.int64)
        if not len(cats):
            continue
        v = np.asarray(h.values(), dtype=np.float64)
        if names != ["atom", "sub"]:  # by name, whatever the order of the axes
            v = v.transpose(names.index("atom"), names.index("sub"))
        n = v.sum(axis=1)
        nonzero = np.flatnonzero(n > 0)
        if not len(nonzero):
            continue
        order = nonzero[np.argsort(cats[nonzero])]
        first, last = order[0], order[-1]
        sub_first = int(np.flatnonzero(v[first] > 0)[0])
        sub_last = int(np.flatnonzero(v[last] > 0)[-1])
        sub_s = ATOM_SECONDS / ATOM_SUBBINS
        t_first = cats[first] * ATOM_SECONDS + sub_first * sub_s
        t_last = cats[last] * ATOM_SECONDS + (sub_last + 1) * sub_s
        out += atoms_from_counts(key[0], key[1], cats, n, t_first, t_last)
    return out


def sum_atoms(
    per_run: Mapping[RunKey, Mapping[str, hist.Hist]],
    name: str,
    atoms: Iterable[Atom],
    axis: str = "atom",
) -> hist.Hist | None:
    """Histogram ``name`` summed over ``atoms`` (of any runs), without its atom axis.

    ``per_run[run][name]`` must have an :func:`atom_axis` named ``axis``; atoms absent from it
    add nothing. Returns ``None`` when no run of ``atoms`` has the histogram.
    """
    by_run: dict[RunKey, list[int]] = {}
    for a in atoms:
        by_run.setdefault(a.key, []).append(a.index)
    total: hist.Hist | None = None
    # additive storages: the runs' sums are added as arrays and make one histogram at the end,
    # the same additions as adding a histogram per run (element by element, in run order)
    summed: Any = None
    first: hist.Hist | None = None
    for key in sorted(by_run):
        h = per_run.get(key, {}).get(name) if key in per_run else None
        if h is None:
            continue
        ax = h.axes[axis]
        where = {int(c): i for i, c in enumerate(ax)}
        pos = sorted({where[a] for a in by_run[key] if a in where})
        others = [x.name for x in h.axes if x.name != axis]
        dim = [x.name for x in h.axes].index(axis)
        storage = h.storage_type
        if storage in _ADDITIVE:
            # a C-ordered copy (the view is Fortran-ordered): numpy then sums it atom after atom
            picked: Any = np.take(np.asarray(h.view(flow=True)), pos, axis=dim)
            if storage is hist.storage.Weight:
                sums: Any = (picked["value"].sum(axis=dim), picked["variance"].sum(axis=dim))
            else:
                sums = picked.sum(axis=dim)
            if first is None or _same_others(first, h, axis):
                if summed is None:
                    summed = sums
                elif storage is hist.storage.Weight:
                    summed = (summed[0] + sums[0], summed[1] + sums[1])
                else:
                    summed = summed + sums
                first = h if first is None else first
                continue
            part = hist.Hist(*[x for x in h.axes if x.name != axis], storage=storage())
            target: Any = part.view(flow=True)
            if storage is hist.storage.Weight:
                target["value"], target["variance"] = sums
            else:
                target[...] = sums
        else:  # Mean and other non-additive storages: hist adds them properly
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                chosen: Any = h[{axis: pos}]  # type: ignore[dict-item]
                part = chosen.project(*others)
        total = part if total is None else total + part
    if first is not None:
        out = hist.Hist(*[x for x in first.axes if x.name != axis], storage=first.storage_type())
        into: Any = out.view(flow=True)
        if first.storage_type is hist.storage.Weight:
            into["value"], into["variance"] = summed
        else:
            into[...] = summed
        total = out if total is None else out + total
    return total


_ADDITIVE = (hist.storage.Double, hist.storage.Int64, hist.storage.Weight)


def _same_others(a: hist.Hist, b: hist.Hist, axis: str) -> bool:
    """Whether ``a`` and ``b`` have the same storage and the same axes but ``axis``: their
    sums over ``axis`` add as arrays."""
    if a.storage_type is not b.storage_type:
        return False
    return [x for x in a.axes if x.name != axis] == [x for x in b.axes if x.name != axis]


def per_atom(
    per_run: Mapping[RunKey, Mapping[str, hist.Hist]],
    name: str,
    atoms: Sequence[Atom],
    axis: str = "atom",
) -> F:
    """The values of histogram ``name`` for each atom: an array ``(len(atoms), *rest)`` with
    ``rest`` the shape of its other axes (no flow bins), zeros for an atom (or a run) without
    entries. For the per-atom series of a step search (:meth:`IntervalAlgorithm.atom_series`):
    e.g. the sums of weights, of x and of x^2 per atom give each atom's mean and its error."""
    out: F | None = None
    by_run: dict[RunKey, list[int]] = {}
    for i, a in enumerate(atoms):
        by_run.setdefault(a.key, []).append(i)
    for key, rows in by_run.items():
        h = per_run[key].get(name) if key in per_run else None
        if h is None:
            continue
        dim = [x.name for x in h.axes].index(axis)
        values = np.moveaxis(np.asarray(h.values(), dtype=np.float64), dim, 0)
        if out is None:
            out = np.zeros((len(atoms), *values.shape[1:]))
        where = {int(c): i for i, c in enumerate(h.axes[axis])}
        found = [(r, where[atoms[r].index]) for r in rows if atoms[r].index in where]
        if found:
            r_idx, c_idx = (list(x) for x in zip(*found, strict=True))
            out[r_idx] = values[c_idx]
    return np.zeros((len(atoms),)) if out is None else out


# ============================================================================= the split
@dataclass(frozen=True)
class SubInterval:
    """A sub-interval: consecutive atoms of one outer interval (it may cut runs).

    Attributes
    ----------
    atoms
        Indices into the atom list given to :func:`split`, in time order.
    t_start, t_end
        UNIX seconds: the start of its first atom, the end of its last.
    n_events
        Its events.
    runs
        The runs it has atoms of, in order.
    loss
        Its inner loss.
    step
        Whether it starts at a forced break (``breaks`` of :func:`split`: a step found in the
        data).
    """

    atoms: tuple[int, ...]
    t_start: float
    t_end: float
    n_events: float
    runs: tuple[RunKey, ...]
    loss: float = math.nan
    step: bool = False


@dataclass(frozen=True)
class OuterInterval:
    """An outer interval: whole consecutive runs, cut into sub-intervals.

    Attributes
    ----------
    runs
        Its runs, in order (short runs that joined one of its sub-intervals included).
    subs
        Its sub-intervals, in time order.
    loss
        Its outer loss (short runs not counted).
    """

    runs: tuple[RunKey, ...]
    subs: tuple[SubInterval, ...]
    loss: float = math.nan

    @property
    def atoms(self) -> tuple[int, ...]:
        """Indices of its atoms, in time order."""
        return tuple(i for s in self.subs for i in s.atoms)

    @property
    def t_start(self) -> float:
        """UNIX seconds: the start of its first atom."""
        return self.subs[0].t_start

    @property
    def t_end(self) -> float:
        """UNIX seconds: the end of its last atom."""
        return self.subs[-1].t_end

    @property
    def n_events(self) -> float:
        """Its events."""
        return float(sum(s.n_events for s in self.subs))


def interval_variables(atoms: Sequence[Atom], indices: Sequence[int]) -> dict[str, float]:
    """The loss variables (:data:`LOSS_VARIABLES`) of the atoms ``indices`` (in time order)."""
    sel = sorted((atoms[i] for i in indices), key=lambda a: (a.t_start, a.key))
    t0 = np.array([a.t_start for a in sel])
    t1 = np.array([a.t_end for a in sel])
    gaps = t0[1:] - t1[:-1]
    n = float(sum(a.n_events for a in sel))
    return {
        "rawTime": float(t1[-1] - t0[0]) / 3600.0,
        "netTime": float(np.sum(t1 - t0)) / 3600.0,
        "maxGap": float(max(0.0, gaps.max())) / 3600.0 if len(gaps) else 0.0,
        "nEv": n if n > 0 else 0.1,
    }


#: how many losses :func:`_partition` evaluates at once (ends x starts)
_LOSS_BLOCK = 1 << 16


def _partition(
    t0: F,
    t1: F,
    net: F,
    nev: F,
    inner_gap: F,
    loss: LossExpression,
    group: I64 | None = None,
) -> list[tuple[int, int]]:
    """The partition of units ``0 .. n-1`` into consecutive segments of minimal summed loss.

    A unit is a run of atoms (outer split) or one atom (inner split): ``t0``/``t1`` its first
    atom's start and last atom's end (s), ``net`` its summed atom durations (s), ``nev`` its
    events, ``inner_gap`` its largest gap between its own atoms (s). Segments never join units of
    different ``group`` (nor a unit of another group between them). Returns (first, last) unit
    of each segment, inclusive.

    Dynamic programming as basf2's ``Splitter::getMinLoss``: ``best[e + 1]`` is the least loss of
    units ``0 .. e``, the minimum over the start ``s`` of the last segment of ``best[s] +
    loss(s .. e)``; on a tie the earliest start (the longest last segment) wins, as in basf2.
    The losses of every start are evaluated at once for a block of ends (numpy), O(n^2) in all.
    """
    n = len(t0)
    cum_net = np.concatenate([[0.0], np.cumsum(net)])
    cum_ev = np.concatenate([[0.0], np.cumsum(nev)])
    before = np.concatenate([[0.0], t0[1:] - t1[:-1]])  # gap before unit u
    best = np.empty(n + 1)
    best[0] = 0.0
    start = np.zeros(n + 1, dtype=np.int64)
    # the earliest start of a segment ending at e: where the run of equal groups begins
    first = np.zeros(n, dtype=np.int64)
    if group is not None:
        for u in range(1, n):
            first[u] = first[u - 1] if group[u] == group[u - 1] else u
    # the losses of the segments s .. e, for a block of ends e at a time (every start at once:
    # the same element-by-element arithmetic as one end after the other)
    gap_after = np.maximum(inner_gap[:-1], before[1:])  # unit u and the gap after it (u < n-1)
    running = np.empty(0)  # largest gap_after[s .. e-1] for s < e
    block = max(1, _LOSS_BLOCK // max(n, 1))
    values = np.empty((0, n))
    for e in range(n):
        row = e % block
        if row == 0:
            ends = np.arange(e, min(e + block, n))
            starts = np.minimum(np.arange(n)[None, :], ends[:, None])  # s > e: any valid start
            gaps = np.empty((len(ends), n))
            for r, end in enumerate(ends.tolist()):
                if end:
                    running = np.maximum(running, gap_after[end - 1])
                    running = np.append(running, gap_after[end - 1])
                gaps[r, :end] = np.maximum(running, inner_gap[end])
                gaps[r, end:] = inner_gap[end]
            ev = cum_ev[ends + 1][:, None] - cum_ev[starts]
            values = np.broadcast_to(
                loss(
                    rawTime=(t1[ends][:, None] - t0[starts]) / 3600.0,
                    netTime=(cum_net[ends + 1][:, None] - cum_net[starts]) / 3600.0,
                    maxGap=np.maximum(gaps, 0.0) / 3600.0,
                    nEv=np.where(ev > 0, ev, 0.1),
                ),
                (len(ends), n),
            )
        total = best[: e + 1] + values[row, : e + 1]
        total = np.where(np.isnan(total), np.inf, total)
        total[: first[e]] = np.inf
        s = int(np.argmin(total))
        if not np.isfinite(total[s]):
            raise ConfigError(
                f"loss expression {loss.text!r} is not finite for any interval ending at "
                f"unit {e} (it must give a number for every interval)"
            )
        best[e + 1] = total[s]
        start[e + 1] = s
    segments = []
    e = n
    while e > 0:
        s = int(start[e])
        segments.append((s, e - 1))
        e = s
    return segments[::-1]


def _merge_small(
    subs: list[list[int]], counts: list[float], min_events: float, groups: list[int] | None = None
) -> tuple[list[list[int]], list[float]]:
    """Merge the smallest sub-interval into its neighbour with fewer events (the earlier one on a
    tie, the only one at an end) while one has fewer than ``min_events`` events.

    ``groups`` (one per sub-interval) are the pieces between forced breaks: a neighbour of the
    same group is preferred, so that a step is kept unless its side is too small on its own."""
    subs = [list(s) for s in subs]
    counts = list(counts)
    grp = list(groups) if groups is not None else [0] * len(subs)
    while len(subs) > 1:
        i = int(np.argmin(counts))
        if counts[i] >= min_events:
            break
        near = [j for j in (i - 1, i + 1) if 0 <= j < len(subs)]
        same = [j for j in near if grp[j] == grp[i]]
        near = same or near
        j = near[0] if len(near) == 1 else (i + 1 if counts[i + 1] < counts[i - 1] else i - 1)
        lo, hi = min(i, j), max(i, j)
        subs[lo] = subs[lo] + subs[hi]
        counts[lo] = counts[lo] + counts[hi]
        grp[lo] = grp[j]
        del subs[hi], counts[hi], grp[hi]
    return subs, counts


def _distance(a0: float, a1: float, b0: float, b1: float) -> float:
    """Time between intervals [a0, a1] and [b0, b1] (0 when they overlap)."""
    return max(0.0, b0 - a1, a0 - b1)


def split(
    atoms: Sequence[Atom],
    outer_loss: LossExpression | str,
    inner_loss: LossExpression | str,
    *,
    min_sub_events: float = MIN_SUB_EVENTS,
    min_run_seconds: float = MIN_RUN_SECONDS,
    min_events: float = MIN_EVENTS,
    breaks: Iterable[int] = (),
    groups: Mapping[RunKey, Hashable] | None = None,
) -> list[OuterInterval]:
    """Outer intervals of whole runs, each cut into sub-intervals, of minimal summed loss.

    Parameters
    ----------
    atoms
        The atoms of every run (e.g. :func:`atoms_from_hist`), any order.
    outer_loss, inner_loss
        Loss expressions (:class:`LossExpression` or their text) of the outer intervals and of
        the sub-intervals.
    min_sub_events
        Sub-intervals with fewer events merge into a neighbour within their outer interval.
    min_run_seconds
        Runs lasting this long or less (first atom's start to last atom's end) take no part in
        the split and then join the nearest sub-interval in time of their experiment (the
        earlier on a tie); those of an experiment without a longer run are left out.
    min_events
        Fewer events in total raise :class:`~b2calib.calibration.toolkit.NotEnoughData`.
    breaks
        Atoms (indices into ``atoms``) where a sub-interval must start, e.g. where the
        constants step (:meth:`IntervalAlgorithm.atom_series`): no sub-interval spans one, and
        a sub-interval with too few events merges across one only when it has no neighbour on
        its side. (An extension: basf2's split looks at times and event counts only.)
    groups
        A label per run (e.g. the beam energy: 4S or off-resonance): an outer interval only
        joins runs of one label and experiment, and a short run joins a sub-interval of its
        own; runs absent from it share a label.

    Returns
    -------
    list of OuterInterval
        In run order. Outer intervals never span two experiments.

    Raises
    ------
    NotEnoughData
        Fewer than ``min_events`` events in total, or every run is short. An algorithm's
        :func:`~b2calib.calibration.toolkit.guarded` ``run`` turns it into NOT_ENOUGH_DATA.
    ConfigError
        A loss expression that does not parse or is not finite.

    Notes
    -----
    Steps (see the module docstring for the differences from basf2): short runs are set aside;
    the outer split runs the dynamic programming over runs (breaks between runs only), the inner
    split over the atoms of each outer interval; small sub-intervals merge; short runs join.
    """
    outer = _loss(outer_loss)
    inner = _loss(inner_loss)
    total = float(sum(a.n_events for a in atoms))
    if total < min_events:
        raise NotEnoughData(f"{total:g} events < {min_events:g} for the time intervals")
    by_run: dict[RunKey, list[int]] = {}
    for i, a in enumerate(atoms):
        by_run.setdefault(a.key, []).append(i)
    for idx in by_run.values():
        idx.sort(key=lambda i: atoms[i].t_start)
    runs = sorted(by_run)
    t0 = np.array([atoms[by_run[r][0]].t_start for r in runs])
    t1 = np.array([atoms[by_run[r][-1]].t_end for r in runs])
    short = (t1 - t0) <= min_run_seconds
    long_runs = [r for r, s in zip(runs, short, strict=True) if not s]
    if not long_runs:
        raise NotEnoughData(
            f"every run lasts {min_run_seconds:g} s or less: nothing to split into intervals"
        )

    # ---- outer split over whole runs
    at0 = np.array([a.t_start for a in atoms])
    at1 = np.array([a.t_end for a in atoms])
    aev = np.array([a.n_events for a in atoms], dtype=np.float64)

    def inner_max_gap(idx: list[int]) -> float:
        g = at0[idx[1:]] - at1[idx[:-1]]
        return float(g.max()) if len(g) else 0.0

    u_t0 = np.array([at0[by_run[r][0]] for r in long_runs])
    u_t1 = np.array([at1[by_run[r][-1]] for r in long_runs])
    u_net = np.array([float(np.sum(at1[by_run[r]] - at0[by_run[r]])) for r in long_runs])
    u_ev = np.array([float(aev[by_run[r]].sum()) for r in long_runs])
    u_gap = np.array([inner_max_gap(by_run[r]) for r in long_runs])
    labels: dict[tuple[int, Hashable], int] = {}

    def label(r: RunKey) -> int:
        return labels.setdefault((r[0], None if groups is None else groups.get(r)), len(labels))

    kinds = np.array([label(r) for r in long_runs], dtype=np.int64)
    outer_segments = _partition(u_t0, u_t1, u_net, u_ev, u_gap, outer, kinds)

    # ---- inner split of each outer interval over its atoms, then merging of small ones
    forced = np.zeros(len(atoms), dtype=bool)
    forced[[int(b) for b in breaks]] = True
    pieces: list[tuple[list[RunKey], list[list[int]]]] = []
    for s, e in outer_segments:
        o_runs = long_runs[s : e + 1]
        idx = [i for r in o_runs for i in by_run[r]]
        piece = np.cumsum(forced[idx]).astype(np.int64)
        segs = _partition(
            at0[idx], at1[idx], at1[idx] - at0[idx], aev[idx], np.zeros(len(idx)), inner, piece
        )
        subs = [idx[a : b + 1] for a, b in segs]
        subs, _ = _merge_small(
            subs,
            [float(aev[sub].sum()) for sub in subs],
            min_sub_events,
            [int(piece[a]) for a, _ in segs],
        )
        pieces.append((o_runs, subs))

    # ---- short runs join the nearest sub-interval of their experiment
    for r in (r for r, s in zip(runs, short, strict=True) if s):
        r0, r1 = float(at0[by_run[r][0]]), float(at1[by_run[r][-1]])
        best: tuple[float, int, int] | None = None
        for g, (o_runs, subs) in enumerate(pieces):
            if label(o_runs[0]) != label(r):
                continue
            for k, sub in enumerate(subs):
                d = _distance(r0, r1, float(at0[sub].min()), float(at1[sub].max()))
                if best is None or d < best[0]:
                    best = (d, g, k)
        if best is None:  # an experiment of short runs only: left out
            continue
        _, g, k = best
        o_runs, subs = pieces[g]
        subs[k] = sorted(subs[k] + by_run[r], key=lambda i: (at0[i], atoms[i].key))
        o_runs.append(r)

    out = []
    for (s, e), (o_runs, subs) in zip(outer_segments, pieces, strict=True):
        made = []
        for sub in subs:
            made.append(
                SubInterval(
                    atoms=tuple(sub),
                    t_start=float(at0[sub].min()),
                    t_end=float(at1[sub].max()),
                    n_events=float(aev[sub].sum()),
                    runs=tuple(sorted({atoms[i].key for i in sub})),
                    loss=float(inner(**interval_variables(atoms, sub))),
                    step=bool(forced[sub[0]]),
                )
            )
        made.sort(key=lambda x: x.t_start)
        long_idx = [i for r in long_runs[s : e + 1] for i in by_run[r]]
        out.append(
            OuterInterval(
                runs=tuple(sorted(o_runs)),
                subs=tuple(made),
                loss=float(outer(**interval_variables(atoms, long_idx))),
            )
        )
    return out


def fill_from_neighbours(
    ok: npt.ArrayLike,
    t_start: npt.ArrayLike | None = None,
    t_end: npt.ArrayLike | None = None,
) -> I64:
    """For each interval, itself when ``ok``, else the nearest good one (to copy its values).

    Parameters
    ----------
    ok
        Whether each interval (in time order) has its own result.
    t_start, t_end
        Their times: the distance is then the time between the intervals' edges, as basf2's
        ``extrapolateCalibration``; by default the distance in index.

    Returns
    -------
    ndarray of int
        Index of the interval to take values from; on a tie the earlier one.

    Raises
    ------
    NotEnoughData
        When no interval is good.
    """
    good = np.asarray(ok, dtype=bool)
    n = len(good)
    if n and not good.any():
        raise NotEnoughData(f"none of the {n} time intervals has a result")
    idx = np.arange(n)
    good_idx = np.flatnonzero(good)
    out = idx.copy()
    for i in np.flatnonzero(~good):
        if t_start is None or t_end is None:
            d = np.abs(good_idx - i).astype(np.float64)
        else:
            s = np.asarray(t_start, dtype=np.float64)
            e = np.asarray(t_end, dtype=np.float64)
            d = np.maximum(0.0, np.maximum(s[good_idx] - e[i], s[i] - e[good_idx]))
        out[i] = good_idx[int(np.argmin(d))]  # argmin: the first, i.e. the earlier, on a tie
    return out


# ===================================================================== the algorithm base
@dataclass
class IntervalFit:
    """What a fit of an interval gives: values with errors, or a failure.

    Attributes
    ----------
    values, errors
        Payload columns (errors keyed by their value column). Shared values of an outer
        interval go into every row of its sub-intervals.
    ok
        False for a failed fit (its values are then not used).
    message
        Why it failed, or a note.
    """

    values: Mapping[str, float] = field(default_factory=dict)
    errors: Mapping[str, float] = field(default_factory=dict)
    ok: bool = True
    message: str = ""


class IntervalAlgorithm(Algorithm):
    """Base of the algorithms that calibrate per time interval (beam spot, boost vector,
    collision energy).

    A subclass sets :attr:`name`, :attr:`payload` (the one payload name it produces, also put in
    :attr:`payloads`), the default losses and, where it differs, :attr:`atoms_histogram` (the
    per-run :func:`atom_times_hist` its collector fills); it implements :meth:`fit_sub` and, for
    quantities shared over an outer interval (the beam spot size), :meth:`fit_outer`. Its
    collector's other histograms have an :func:`atom_axis`, and :func:`sum_atoms` adds them up
    over an interval's atoms.

    * :meth:`boundaries`: the first run of each outer interval of the split of every run with
      data, for :class:`~b2calib.calibration.SequentialBoundaries` (one execution, hence one
      payload, per outer interval).
    * :meth:`run`: the split of the execution's runs (with SequentialBoundaries, one outer
      interval: the split of a segment of the optimal partition is that segment), then the fits;
      a sub-interval whose fit fails, or whose outer interval has fewer than
      :attr:`min_sub_events` events or a failed :meth:`fit_outer`, copies the values of the
      nearest sub-interval with a result (:func:`fill_from_neighbours`, by time) and has status
      FAILED (NOT_ENOUGH_DATA when it lacked events). No sub-interval with a result, or fewer
      than :attr:`min_events` events: NOT_ENOUGH_DATA.

    The payload has one row per sub-interval, keys ``t_start`` and ``t_end`` (int64 UNIX ns:
    the start of its first atom and the end of its last, clipped to the next row's start, so
    rows within a run meet and rows on either side of a gap between runs do not),
    ``metadata["event_dependency"] = "time"`` and, in
    ``metadata["intervals"]``, the losses, the outer interval of each row and the copies.
    Outer intervals never mix experiments, nor runs of different :meth:`run_groups` labels.
    The diagnostics hold the partition: tables ``atoms`` (one row per atom with its outer and
    sub-interval) and ``intervals`` (one row per sub-interval with its values and status).
    """

    #: The payload the algorithm produces.
    payload: str = ""
    #: expert_config keys of the losses (basf2's prompt scripts' names); absent keys take the
    #: defaults below.
    outer_loss_key: str = "outerLoss"
    inner_loss_key: str = "innerLoss"
    default_outer_loss: str = BEAMSPOT_OUTER_LOSS
    default_inner_loss: str = BEAMSPOT_INNER_LOSS
    #: The per-run histogram made by :func:`atom_times_hist`.
    atoms_histogram: str = ATOMS_HISTOGRAM
    min_sub_events: float = MIN_SUB_EVENTS
    min_run_seconds: float = MIN_RUN_SECONDS
    min_events: float = MIN_EVENTS
    #: The step search in :meth:`atom_series`: a sub-interval starts where, for some column,
    #: the weighted means of a run's atoms before and after differ by more than
    #: :attr:`step_significance` standard deviations and by more than :attr:`step_min`.
    step_significance: float = 5.0
    step_min: float = 0.0
    #: Units of the payload columns, and its description (payload metadata).
    units: ClassVar[Mapping[str, str]] = {}
    description: str = ""

    # ------------------------------------------------------------------ to implement
    def fit_outer(
        self, data: AlgorithmInput, outer: OuterInterval, atoms: Sequence[Atom]
    ) -> IntervalFit | None:
        """Quantities shared by the sub-intervals of ``outer`` (e.g. the beam spot size), or
        ``None`` when there are none (the default). A result with ``ok`` false, or a raised
        :class:`~b2calib.calibration.toolkit.NotEnoughData`, fails every sub-interval of
        ``outer``."""
        return None

    @abc.abstractmethod
    def fit_sub(
        self,
        data: AlgorithmInput,
        outer: OuterInterval,
        sub: SubInterval,
        atoms: Sequence[Atom],
        shared: IntervalFit | None,
    ) -> IntervalFit | None:
        """The values of sub-interval ``sub`` (its atoms are ``[atoms[i] for i in sub.atoms]``),
        given the shared result of its outer interval. ``None``, a result with ``ok`` false, a
        non-finite value, or a raised :class:`~b2calib.calibration.toolkit.NotEnoughData` is a
        failure."""

    def run_groups(self, data: AlgorithmInput) -> Mapping[RunKey, Hashable] | None:
        """A label per run that outer intervals must not mix (e.g. 4S and off-resonance runs
        for the collision energy), or ``None`` (the default): see :func:`split`."""
        return None

    def atom_series(self, data: AlgorithmInput, atoms: Sequence[Atom]) -> tuple[F, F] | None:
        """Per-atom values and errors, ``(len(atoms), k)`` arrays (NaN or a non-positive error
        where an atom tells nothing), in which :meth:`steps` searches for steps inside runs;
        ``None`` (the default) for no step search."""
        return None

    # ------------------------------------------------------------------ the framework
    def steps(self, data: AlgorithmInput, atoms: Sequence[Atom]) -> list[int]:
        """Atoms (indices into ``atoms``) where the constants step inside a run: binary
        segmentation (:func:`~b2calib.calibration.toolkit.find_steps`) of each run's
        :meth:`atom_series` with :func:`~b2calib.calibration.toolkit.weighted_mean_split`.
        They become forced sub-interval starts of :func:`split`, so that a step is placed to
        within an atom rather than to within a sub-interval."""
        series = self.atom_series(data, atoms)
        if series is None:
            return []
        values = np.asarray(series[0], dtype=np.float64).reshape(len(atoms), -1)
        errors = np.asarray(series[1], dtype=np.float64).reshape(len(atoms), -1)
        by_run: dict[RunKey, list[int]] = {}
        for i, a in enumerate(atoms):
            by_run.setdefault(a.key, []).append(i)
        out: list[int] = []
        for key in sorted(by_run):
            idx = sorted(by_run[key], key=lambda i: atoms[i].t_start)
            if len(idx) < 2:
                continue
            test = weighted_mean_split(
                values[idx],
                errors[idx],
                min_step=self.step_min,
                min_significance=self.step_significance,
            )
            # find_steps segments a sequence of (exp, run) keys: number the atoms (0, k)
            found = find_steps([(0, k) for k in range(len(idx))], test)
            out += [idx[k] for _, k in found]
        return sorted(out)

    def losses(self, config: Mapping[str, Any]) -> tuple[LossExpression, LossExpression]:
        """The outer and inner losses of an expert configuration (defaults where absent)."""
        return (
            LossExpression(config.get(self.outer_loss_key, self.default_outer_loss)),
            LossExpression(config.get(self.inner_loss_key, self.default_inner_loss)),
        )

    def atoms(self, data: AlgorithmInput) -> list[Atom]:
        """The atoms of the runs of ``data``."""
        return atoms_from_hist(data.per_run, self.atoms_histogram, data.runs)

    def partition(self, data: AlgorithmInput) -> tuple[list[Atom], list[OuterInterval]]:
        """The atoms of ``data``'s runs and their split (raises NotEnoughData)."""
        atoms = self.atoms(data)
        outer, inner = self.losses(data.config)
        outers = split(
            atoms,
            outer,
            inner,
            min_sub_events=self.min_sub_events,
            min_run_seconds=self.min_run_seconds,
            min_events=self.min_events,
            breaks=self.steps(data, atoms) if atoms else (),
            groups=self.run_groups(data),
        )
        return atoms, outers

    def boundaries(self, data: AlgorithmInput) -> Sequence[RunKey]:
        """Where a payload starts (none when there is not enough data): at each outer interval,
        unless it or the outer intervals since the last start lack events (fewer than
        ``min_sub_events``): a starved outer interval joins its neighbours' payload, whose rows
        it then copies (flagged), so that no run is left without a payload (basf2 extrapolates
        failed intervals from their neighbours). The first outer interval starts the first
        payload anyway (no boundary: a run before it without data is covered too). Where the
        :meth:`run_groups` label changes, a payload always starts (payloads never mix groups)."""
        try:
            _, outers = self.partition(data)
        except NotEnoughData:
            return ()
        groups = self.run_groups(data) or {}
        out: list[RunKey] = []
        fitted = False  # the current payload has an outer interval with enough events
        label: Hashable = None
        for k, o in enumerate(outers):
            enough = o.n_events >= self.min_sub_events
            group = groups.get(o.runs[0])
            if k and group != label:
                out.append(o.runs[0])
                fitted = enough
            else:
                if enough and fitted:
                    out.append(o.runs[0])
                fitted |= enough
            label = group
        return out

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        atoms, outers = self.partition(data)
        subs = [(o, k, s) for o in outers for k, s in enumerate(o.subs)]
        n = len(subs)
        fits: list[IntervalFit | None] = [None] * n
        reasons = [""] * n
        lacking = np.zeros(n, dtype=bool)
        row = 0
        for o in outers:
            count = len(o.subs)
            shared: IntervalFit | None = None
            why = ""
            if o.n_events < self.min_sub_events:
                why = f"{o.n_events:g} events < {self.min_sub_events:g} in the outer interval"
                lacking[row : row + count] = True
            else:
                try:
                    shared = self.fit_outer(data, o, atoms)
                    if shared is not None and (not shared.ok or not _finite(shared)):
                        why = shared.message or "outer fit failed"
                except NotEnoughData as err:
                    why = str(err)
                    lacking[row : row + count] = True
            for k, sub in enumerate(o.subs):
                i = row + k
                if why:
                    reasons[i] = why
                    continue
                try:
                    fit = self.fit_sub(data, o, sub, atoms, shared)
                except NotEnoughData as err:
                    reasons[i] = str(err)
                    lacking[i] = True
                    continue
                if fit is None or not fit.ok or not _finite(fit):
                    reasons[i] = (fit.message if fit is not None else "") or "fit failed"
                    continue
                fits[i] = IntervalFit(
                    {**(shared.values if shared else {}), **fit.values},
                    {**(shared.errors if shared else {}), **fit.errors},
                    True,
                    fit.message,
                )
            row += count

        ok = np.array([f is not None for f in fits], dtype=bool)
        t_start = np.array([s.t_start for _, _, s in subs])
        t_end = np.array([s.t_end for _, _, s in subs])
        diagnostics = self._diagnostics(atoms, outers, fits, ok, lacking)
        if not ok.any():
            raise NotEnoughData(
                f"no time interval could be calibrated ({reasons[0] or 'no fit'})", diagnostics
            )
        source = fill_from_neighbours(ok, t_start, t_end)
        diagnostics.tables["intervals"]["copied_from"] = source.astype(np.int64)
        payload = self._payload(data, outers, subs, fits, ok, lacking, source, reasons)
        return AlgorithmResult(AlgorithmStatus.OK, [payload], diagnostics)

    # ------------------------------------------------------------------ helpers
    def _payload(
        self,
        data: AlgorithmInput,
        outers: list[OuterInterval],
        subs: list[tuple[OuterInterval, int, SubInterval]],
        fits: list[IntervalFit | None],
        ok: npt.NDArray[np.bool_],
        lacking: npt.NDArray[np.bool_],
        source: I64,
        reasons: list[str],
    ) -> Payload:
        n = len(subs)
        starts = np.array([round(s.t_start * 1e9) for _, _, s in subs], dtype=np.int64)
        ends = np.array([round(s.t_end * 1e9) for _, _, s in subs], dtype=np.int64)
        ends[:-1] = np.minimum(ends[:-1], starts[1:])  # never overlapping the next row
        columns = list(dict.fromkeys(c for f in fits if f is not None for c in f.values))
        err_columns = list(dict.fromkeys(c for f in fits if f is not None for c in f.errors))
        values = {c: np.full(n, np.nan) for c in columns}
        errors = {c: np.full(n, np.nan) for c in err_columns}
        for i in range(n):
            f = fits[int(source[i])]
            assert f is not None
            for c in columns:
                values[c][i] = float(f.values.get(c, np.nan))
            for c in err_columns:
                errors[c][i] = float(f.errors.get(c, np.nan))
        status = np.where(
            ok,
            ChannelStatus.OK,
            np.where(lacking, ChannelStatus.NOT_ENOUGH_DATA, ChannelStatus.FAILED),
        ).astype(np.int8)
        outer_of = {id(o): j for j, o in enumerate(outers)}
        outer_loss, inner_loss = self.losses(data.config)
        metadata: dict[str, Any] = {
            "event_dependency": "time",
            "description": self.description,
            "units": {"t_start": "ns", "t_end": "ns", **dict(self.units)},
            "intervals": {
                "outer_loss": outer_loss.text,
                "inner_loss": inner_loss.text,
                "atom_seconds": ATOM_SECONDS,
                "outer": [outer_of[id(o)] for o, _, _ in subs],
                "outer_runs": [[list(o.runs[0]), list(o.runs[-1])] for o in outers],
                "n_events": [s.n_events for _, _, s in subs],
                "copied": [
                    {"row": i, "from": int(source[i]), "reason": reasons[i]}
                    for i in range(n)
                    if not ok[i]
                ],
            },
        }
        return Payload(
            self.payload,
            keys={"t_start": starts, "t_end": ends},
            values=values,
            errors=errors,
            status=status,
            metadata=metadata,
        )

    def _diagnostics(
        self,
        atoms: Sequence[Atom],
        outers: list[OuterInterval],
        fits: list[IntervalFit | None],
        ok: npt.NDArray[np.bool_],
        lacking: npt.NDArray[np.bool_],
    ) -> Diagnostics:
        d = Diagnostics()
        outer_of = np.full(len(atoms), -1, dtype=np.int64)
        sub_of = np.full(len(atoms), -1, dtype=np.int64)
        rows: dict[str, list[Any]] = {
            k: []
            for k in (
                "outer",
                "t_start",
                "t_end",
                "n_events",
                "n_atoms",
                "loss",
                "step",
                "outer_loss",
                "first_exp",
                "first_run",
                "last_exp",
                "last_run",
            )
        }
        i = 0
        for j, o in enumerate(outers):
            for s in o.subs:
                outer_of[list(s.atoms)] = j
                sub_of[list(s.atoms)] = i
                rows["outer"].append(j)
                rows["t_start"].append(s.t_start)
                rows["t_end"].append(s.t_end)
                rows["n_events"].append(s.n_events)
                rows["n_atoms"].append(len(s.atoms))
                rows["loss"].append(s.loss)
                rows["step"].append(s.step)
                rows["outer_loss"].append(o.loss)
                rows["first_exp"].append(s.runs[0][0])
                rows["first_run"].append(s.runs[0][1])
                rows["last_exp"].append(s.runs[-1][0])
                rows["last_run"].append(s.runs[-1][1])
                i += 1
        ints = {"outer", "n_atoms", "step", "first_exp", "first_run", "last_exp", "last_run"}
        table = {
            k: np.asarray(v, dtype=np.int64 if k in ints else np.float64) for k, v in rows.items()
        }
        table["status"] = np.where(
            ok,
            ChannelStatus.OK,
            np.where(lacking, ChannelStatus.NOT_ENOUGH_DATA, ChannelStatus.FAILED),
        ).astype(np.int8)
        columns = list(dict.fromkeys(c for f in fits if f is not None for c in f.values))
        for c in columns:
            table[c] = np.array(
                [float(f.values.get(c, np.nan)) if f is not None else np.nan for f in fits]
            )
            table[f"{c}_err"] = np.array(
                [float(f.errors.get(c, np.nan)) if f is not None else np.nan for f in fits]
            )
        table["copied_from"] = np.arange(len(fits), dtype=np.int64)
        d.tables["intervals"] = table
        d.tables["atoms"] = {
            "exp": np.array([a.exp for a in atoms], dtype=np.int64),
            "run": np.array([a.run for a in atoms], dtype=np.int64),
            "index": np.array([a.index for a in atoms], dtype=np.int64),
            "t_start": np.array([a.t_start for a in atoms], dtype=np.float64),
            "t_end": np.array([a.t_end for a in atoms], dtype=np.float64),
            "n_events": np.array([a.n_events for a in atoms], dtype=np.float64),
            "outer": outer_of,
            "sub": sub_of,
        }
        return d


def _finite(fit: IntervalFit) -> bool:
    return all(math.isfinite(float(v)) for v in fit.values.values())


def __dir__() -> list[str]:
    return __all__
