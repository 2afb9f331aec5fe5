"""Quality assurance: monitoring, comparisons with references, certification, good-run lists.

==============  ================================================================================
``compare``     chi2 (ROOT ``TH1::Chi2Test``), Kolmogorov-Smirnov (``TH1::KolmogorovTest``) and
                Anderson-Darling (``TH1::AndersonDarlingTest``) tests, and :func:`compare`, which
                turns a test's p-value into a status with per-histogram thresholds
``monitoring``  run-level monitoring variables (MiraBelle-like) and QA histograms, collected over
                the skims by the engine (:func:`collect_qa`)
``store``       :class:`QADatabase`: runs, variables and their trends, QA histograms with their
                references and comparisons, the automatic status, append-only certification
                flags and run sign-off, versioned good-run lists, users with hashed passwords
``grl``         good-run lists: an expression language over flags and run properties (parsed,
                never evaluated as Python), set operations, JSON / CMS JSON / CSV exports
==============  ================================================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from b2calib._lazy import attach

if TYPE_CHECKING:
    from b2calib.qa.compare import (
        Comparison,
        QAStatus,
        Thresholds,
        ad_test,
        chi2_test,
        compare,
        kolmogorov_prob,
        ks_test,
    )
    from b2calib.qa.grl import PRESETS, GoodRunList
    from b2calib.qa.monitoring import QA_HISTOGRAMS, VARIABLES, MonitoringValue, RunQA, collect_qa
    from b2calib.qa.store import (
        FlagEntry,
        QADatabase,
        Reference,
        RunState,
        StoredComparison,
        Trend,
        User,
    )

__all__ = [
    "PRESETS",
    "QA_HISTOGRAMS",
    "VARIABLES",
    "Comparison",
    "FlagEntry",
    "GoodRunList",
    "MonitoringValue",
    "QADatabase",
    "QAStatus",
    "Reference",
    "RunQA",
    "RunState",
    "StoredComparison",
    "Thresholds",
    "Trend",
    "User",
    "ad_test",
    "chi2_test",
    "collect_qa",
    "compare",
    "kolmogorov_prob",
    "ks_test",
]

# names are imported on first use (b2calib._lazy)
__getattr__ = attach(
    __name__,
    {
        "compare": [
            "Comparison",
            "QAStatus",
            "Thresholds",
            "ad_test",
            "chi2_test",
            "compare",
            "kolmogorov_prob",
            "ks_test",
        ],
        "grl": ["PRESETS", "GoodRunList"],
        "monitoring": ["QA_HISTOGRAMS", "VARIABLES", "MonitoringValue", "RunQA", "collect_qa"],
        "store": [
            "FlagEntry",
            "QADatabase",
            "Reference",
            "RunState",
            "StoredComparison",
            "Trend",
            "User",
        ],
    },
)


def __dir__() -> list[str]:
    return __all__
