"""The quality-assurance database: runs, monitoring variables, QA histograms and their
references, certification flags, run sign-off, good-run lists and the users who write them.

=============  ===================================================================================
``tables``     the ``qa_`` tables (created by the migrations of :mod:`b2calib.db`)
``database``   :class:`QADatabase`
=============  ===================================================================================
"""

from __future__ import annotations

from b2calib.qa.store.database import (
    ROLES,
    RUN_STATES,
    FlagEntry,
    QADatabase,
    Reference,
    RunState,
    StoredComparison,
    Trend,
    User,
    hash_password,
    verify_password,
)

__all__ = [
    "ROLES",
    "RUN_STATES",
    "FlagEntry",
    "QADatabase",
    "Reference",
    "RunState",
    "StoredComparison",
    "Trend",
    "User",
    "hash_password",
    "verify_password",
]


def __dir__() -> list[str]:
    return __all__
