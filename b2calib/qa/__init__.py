"""Quality assurance: comparisons of histograms with their references.

===========  ================================================================================
``compare``  chi2 (ROOT ``TH1::Chi2Test``), Kolmogorov-Smirnov (``TH1::KolmogorovTest``) and
             Anderson-Darling (``TH1::AndersonDarlingTest``) tests, and :func:`compare`, which
             turns a test's p-value into a status with per-histogram thresholds
===========  ================================================================================
"""

from __future__ import annotations

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

__all__ = [
    "Comparison",
    "QAStatus",
    "Thresholds",
    "ad_test",
    "chi2_test",
    "compare",
    "kolmogorov_prob",
    "ks_test",
]


def __dir__() -> list[str]:
    return __all__
