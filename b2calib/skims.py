"""HLT calibration skims as named selections over software-trigger variables.

Selections are written in the cut language of the basf2 software trigger and of the seed's
"HLT skims" table: comparisons in square brackets joined by ``and``, ``or`` and ``not``, e.g.
``[[nTracksLE == 1] and [nEidLE == 0] and [P1OEbeamCMSBhabhaLE > 0.1] and [EC1CMSLE < 1]]``.
They are parsed (never ``eval``-ed) and applied to columns of trigger variables.

Where the seed table is legible (hlt_mumu_1trk, hlt_hadron, hlt_bhabha, hlt_gamma_gamma) the cut
is the seed's. hlt_mumu_2trk is illegible in the seed and is the two-track analogue of
hlt_mumu_1trk with the "tight" back-to-back requirement; hlt_tau_tau and hlt_single_photon are
not in the seed and are b2calib's own low-multiplicity definitions. Each skim says which.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from b2calib.exceptions import SkimDefinitionError

__all__ = [
    "LUMI_SELECTIONS",
    "SKIMS",
    "TRIGGER_VARIABLES",
    "Cut",
    "Skim",
    "get_skim",
    "retention",
]

#: Software-trigger variables computed per event (``SoftwareTriggerVariables_<name>``).
TRIGGER_VARIABLES: dict[str, str] = {
    "nTracksLE": "tracks with pt > 0.2 GeV, |d0| < 2 cm, |z0| < 4 cm",
    "nTrkAllLE": "reconstructed tracks with no impact-parameter requirement (cosmics)",
    "nEidLE": "of those, tracks with a matched ECL cluster and E/p > 0.8 (electron-like)",
    "P1CMSBhabhaLE": "CMS momentum of the highest-momentum track (GeV)",
    "P2CMSBhabhaLE": "CMS momentum of the second track (GeV)",
    "P1OEbeamCMSBhabhaLE": "P1CMSBhabhaLE / CMS beam energy",
    "P2OEbeamCMSBhabhaLE": "P2CMSBhabhaLE / CMS beam energy",
    "EC1CMSLE": "CMS energy of the most energetic ECL cluster (GeV)",
    "EC2CMSLE": "CMS energy of the second ECL cluster (GeV)",
    "EC12CMSLE": "EC1CMSLE + EC2CMSLE (GeV)",
    "EtotLE": "lab energy sum of ECL clusters above 0.1 GeV (GeV)",
    "nClustersLE": "ECL clusters above 0.1 GeV",
    "AcolCMSLE": "CMS acollinearity of the two leading tracks (degrees; 180 if fewer)",
    "Bhabha2Trk": "two-track Bhabha flag: 2+ tracks, both leading tracks p*/Ebeam* > 0.5, "
    "EC12CMSLE > 4 GeV and acollinearity < 10 degrees",
    "GG": "gamma-gamma flag: no track, two clusters above 2 GeV back to back (< 10 degrees)",
}


# --------------------------------------------------------------------------- cut parser
_TOKEN = re.compile(
    r"\s*(?:(\[|\])|(==|!=|<=|>=|<|>)|(and|or|not)\b|([A-Za-z_]\w*)|"
    r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))"
)
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}
Node = tuple[Any, ...]


def _tokenize(text: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise SkimDefinitionError(f"cannot parse cut at {text[pos:]!r} in {text!r}")
        kinds = ("bracket", "op", "logic", "name", "number")
        for kind, group in zip(kinds, m.groups(), strict=True):
            if group is not None:
                out.append((kind, group))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise SkimDefinitionError(f"unexpected end of cut {self.text!r}")
        self.i += 1
        return tok

    def parse(self) -> Node:
        node = self.expr()
        if self.peek() is not None:
            raise SkimDefinitionError(f"unexpected {self.peek()[1]!r} in cut {self.text!r}")  # type: ignore[index]
        return node

    def expr(self) -> Node:
        node = self.term()
        while self.peek() == ("logic", "or"):
            self.take()
            node = ("or", node, self.term())
        return node

    def term(self) -> Node:
        node = self.factor()
        while self.peek() == ("logic", "and"):
            self.take()
            node = ("and", node, self.factor())
        return node

    def factor(self) -> Node:
        tok = self.peek()
        if tok == ("logic", "not"):
            self.take()
            return ("not", self.factor())
        if tok == ("bracket", "["):
            self.take()
            node = self.expr()
            if self.take() != ("bracket", "]"):
                raise SkimDefinitionError(f"missing ']' in cut {self.text!r}")
            return node
        return self.comparison()

    def operand(self) -> Node:
        kind, value = self.take()
        if kind == "name":
            return ("var", value)
        if kind == "number":
            return ("num", float(value))
        raise SkimDefinitionError(f"expected a variable or number, got {value!r} in {self.text!r}")

    def comparison(self) -> Node:
        left = self.operand()
        tok = self.peek()
        if tok is None or tok[0] != "op":
            raise SkimDefinitionError(f"expected a comparison after {left[1]!r} in {self.text!r}")
        node: Node | None = None
        while (tok := self.peek()) is not None and tok[0] == "op":  # a < x < b chains
            op = self.take()[1]
            right = self.operand()
            cmp = ("cmp", op, left, right)
            node = cmp if node is None else ("and", node, cmp)
            left = right
        assert node is not None
        return node


def _variables(node: Node) -> set[str]:
    if node[0] == "var":
        return {node[1]}
    if node[0] == "num":
        return set()
    return set().union(*(_variables(n) for n in node[1:] if isinstance(n, tuple)))


def _evaluate(node: Node, data: Mapping[str, npt.ArrayLike]) -> Any:
    kind = node[0]
    if kind == "var":
        return np.asarray(data[node[1]])
    if kind == "num":
        return node[1]
    if kind == "cmp":
        return _OPS[node[1]](_evaluate(node[2], data), _evaluate(node[3], data))
    if kind == "not":
        return np.logical_not(_evaluate(node[1], data))
    fn = np.logical_and if kind == "and" else np.logical_or
    return fn(_evaluate(node[1], data), _evaluate(node[2], data))


@dataclass(frozen=True)
class Cut:
    """A parsed selection in the software-trigger cut language."""

    text: str

    def __post_init__(self) -> None:
        tree = _Parser(self.text).parse()
        object.__setattr__(self, "_tree", tree)
        unknown = _variables(tree) - set(TRIGGER_VARIABLES)
        if unknown:
            raise SkimDefinitionError(
                f"unknown trigger variable(s) {sorted(unknown)} in {self.text!r}"
            )

    @property
    def variables(self) -> frozenset[str]:
        """Trigger variables the cut reads."""
        return frozenset(_variables(self._tree))  # type: ignore[attr-defined]

    def __call__(self, data: Mapping[str, npt.ArrayLike]) -> npt.NDArray[np.bool_]:
        """Boolean mask of the events (rows of ``data``) that pass."""
        missing = self.variables - set(data)
        if missing:
            raise SkimDefinitionError(
                f"missing trigger variable(s) {sorted(missing)} for {self.text!r}"
            )
        return np.asarray(_evaluate(self._tree, data), dtype=np.bool_)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Skim:
    """A named calibration skim."""

    name: str
    cut: Cut
    description: str
    source: str
    run_types: tuple[str, ...] = ("physics",)

    def select(self, data: Mapping[str, npt.ArrayLike]) -> npt.NDArray[np.bool_]:
        """Mask of events passing the skim."""
        return self.cut(data)


def _skim(
    name: str, cut: str, description: str, source: str, run_types: tuple[str, ...] = ("physics",)
) -> Skim:
    return Skim(name, Cut(cut), description, source, run_types)


#: All skims, by name.
SKIMS: dict[str, Skim] = {
    s.name: s
    for s in (
        _skim(
            "hlt_bhabha",
            "[Bhabha2Trk == 1]",
            "two-track Bhabha (prescale removed since prod3)",
            "seed table",
        ),
        _skim(
            "hlt_gamma_gamma",
            "[[nTracksLE <= 1] and [[nEidLE == 0] and [[EC12CMSLE > 4] and [EC1CMSLE > 2]]]]",
            "gamma-gamma for ECL energy",
            "seed table",
        ),
        _skim(
            "hlt_mumu_1trk",
            "[[nTracksLE == 1] and [nEidLE == 0] and [P1OEbeamCMSBhabhaLE > 0.1] and "
            "[EC1CMSLE < 1]]",
            "single-track muon pairs",
            "seed table",
        ),
        _skim(
            "hlt_mumu_2trk",
            "[[nTracksLE == 2] and [nEidLE == 0] and [P1OEbeamCMSBhabhaLE > 0.5] and "
            "[P2OEbeamCMSBhabhaLE > 0.5] and [EC1CMSLE < 1] and [AcolCMSLE < 10]]",
            "tight two-track muon pairs",
            "seed table is illegible: the 1-track cut, two tracks, back to back",
        ),
        _skim(
            "hlt_hadron",
            "[[nTracksLE >= 3] and [Bhabha2Trk == 0]]",
            "hadronic events (also used for physics)",
            "seed table",
        ),
        _skim(
            "hlt_tau_tau",
            "[[nTracksLE >= 2] and [nTracksLE <= 4] and [Bhabha2Trk == 0] and "
            "[P1OEbeamCMSBhabhaLE < 0.8] and [EtotLE < 6] and [AcolCMSLE > 10]]",
            "low-multiplicity tau pairs",
            "b2calib definition",
        ),
        _skim(
            "hlt_single_photon",
            "[[nTracksLE == 0] and [EC1CMSLE > 1] and [EC2CMSLE < 0.2]]",
            "one energetic photon and nothing else",
            "b2calib definition",
        ),
        _skim(
            "cosmic",
            "[nTrkAllLE >= 1]",
            "cosmic-ray runs: every event with a track",
            "b2calib definition",
            run_types=("cosmic",),
        ),
    )
}

#: Luminosity methods: the skim counted and the selection applied to it (in the cut language
#: of this module); the skim's own cut is applied too. The simulator measures their visible
#: cross sections (:mod:`b2calib.sim.luminosity`), the QA counts them
#: (:func:`b2calib.qa.monitoring.lumi_from_count`).
LUMI_SELECTIONS: dict[str, tuple[str, str]] = {
    "bhabha": ("hlt_bhabha", "[Bhabha2Trk == 1]"),
    "gamma_gamma": ("hlt_gamma_gamma", "[GG == 1]"),
}


def get_skim(name: str) -> Skim:
    """The skim called ``name``."""
    try:
        return SKIMS[name]
    except KeyError:
        raise SkimDefinitionError(
            f"unknown skim {name!r}; known skims: {', '.join(SKIMS)}"
        ) from None


def retention(
    data: Mapping[str, npt.ArrayLike], skims: list[str] | None = None
) -> dict[str, float]:
    """Fraction of events in ``data`` (trigger-variable columns) that each skim keeps."""
    n = len(np.asarray(next(iter(data.values()))))
    names = skims if skims is not None else list(SKIMS)
    return {s: (float(get_skim(s).select(data).sum()) / n if n else 0.0) for s in names}


def __dir__() -> list[str]:
    return __all__
