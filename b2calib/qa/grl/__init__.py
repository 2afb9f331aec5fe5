"""Good-run lists: a logic expression over data-quality flags and run properties, evaluated on runs.

A good-run list (GRL) is the set of runs (exp, run) that data analyses may use, with the luminosity
they contain: the runs of the registry for which an :class:`Expression` is true with their current
flags (:func:`evaluate`), combined by set operations and exported as JSON, CMS "golden JSON" and
CSV.

==============  ===============================================================================
``expression``  the expression language (grammar, names, canonical text): tokenizer, parser,
                syntax tree and its evaluation on a run; :data:`PRESETS`
``goodrunlist`` the list as a value: :class:`GRLRun`, :class:`GoodRunList` (set operations,
                exports and their inverses, :class:`GRLWarning` for runs selected with
                uncertified detectors), :func:`evaluate`, :func:`runs_expression`,
                :func:`diff` (:class:`GRLDiff`); the luminosity summed (:data:`LUMINOSITY`)
==============  ===============================================================================
"""

from __future__ import annotations

from b2calib.qa.grl.expression import (
    DQ_TAG_PRESETS,
    PRESETS,
    Expression,
    ExpressionError,
    parse,
)
from b2calib.qa.grl.goodrunlist import (
    LUMINOSITY,
    GoodRunList,
    GRLDiff,
    GRLRun,
    GRLWarning,
    diff,
    evaluate,
    runs_expression,
)

__all__ = [
    "DQ_TAG_PRESETS",
    "LUMINOSITY",
    "PRESETS",
    "Expression",
    "ExpressionError",
    "GRLDiff",
    "GRLRun",
    "GRLWarning",
    "GoodRunList",
    "diff",
    "evaluate",
    "parse",
    "runs_expression",
]


def __dir__() -> list[str]:
    return __all__
