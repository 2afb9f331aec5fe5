"""The quality-assurance database, by concept: :class:`QADatabase` builds one part per concept
on one :class:`~b2calib.db.Database` and exposes them as attributes (``qa.users.add(...)``,
``qa.certification.set_flags(...)``).

=================  ===============================================================================
``tables``         the ``qa_`` tables (created by the migrations of :mod:`b2calib.db`)
``users``          :class:`Users` (``qa.users``): users, roles and salted password hashes
``sessions``       :class:`Sessions` (``qa.sessions``): the dashboards' login sessions, ended
                   by logout, expiry or a change of their user
``runs``           :class:`Runs` (``qa.runs``): the run registry with the certified flags, the
                   monitoring variables and their :class:`Trend`
``periods``        :class:`Periods` (``qa.periods``): QA periods, a :class:`Period` from a
                   detector change on, with references and trend bands of its own
``luminosity``     :class:`Luminosity` (``qa.luminosity(...)``): each run's recorded (run
                   registry), Bhabha and gamma-gamma luminosity (:data:`LUMINOSITY_COLUMNS`)
                   in a :class:`LuminosityTable` with totals
``histograms``     :class:`Histograms` (``qa.histograms``): QA histograms per run, their
                   :class:`Reference` and the :class:`StoredComparison` with it
``status``         :class:`AutoStatus` (``qa.status``): the automatic status of a (run,
                   detector), evidence for the shifter, never a flag
``certification``  :class:`Certification` (``qa.certification``): append-only flags
                   (:class:`FlagEntry`) and the run sign-off workflow (:class:`RunState`);
                   the changes that need a :class:`Confirmation` (``force=True``)
``grls``           :class:`GoodRunLists` (``qa.grls``): versioned good-run lists
``database``       :class:`QADatabase`, the entry point
=================  ===============================================================================

Each part takes the database and the lower parts it needs: users, sessions, runs, periods and
luminosity at the bottom, then histograms (storing a run's QA with its variables), the
automatic status (on runs and histograms), certification (on users, runs and the automatic
status: GOOD over an automatic ERROR needs a confirmation) and good-run lists (on users and
runs).
"""

from __future__ import annotations

from b2calib.qa.store.certification import Certification, Confirmation, FlagEntry, RunState
from b2calib.qa.store.database import QADatabase
from b2calib.qa.store.grls import GoodRunLists
from b2calib.qa.store.histograms import Histograms, Reference, StoredComparison
from b2calib.qa.store.luminosity import (
    LUMINOSITY_COLUMNS,
    Luminosity,
    LuminosityTable,
    LuminosityTotal,
    RunLuminosity,
)
from b2calib.qa.store.periods import Period, Periods
from b2calib.qa.store.runs import Runs, Trend
from b2calib.qa.store.sessions import Session, Sessions, session_id
from b2calib.qa.store.status import STATUS_COLUMNS, AutoStatus, Evidence
from b2calib.qa.store.tables import ROLES, RUN_STATES
from b2calib.qa.store.users import User, Users, hash_password, verify_password

__all__ = [
    "LUMINOSITY_COLUMNS",
    "ROLES",
    "RUN_STATES",
    "STATUS_COLUMNS",
    "AutoStatus",
    "Certification",
    "Confirmation",
    "Evidence",
    "FlagEntry",
    "GoodRunLists",
    "Histograms",
    "Luminosity",
    "LuminosityTable",
    "LuminosityTotal",
    "Period",
    "Periods",
    "QADatabase",
    "Reference",
    "RunLuminosity",
    "RunState",
    "Runs",
    "Session",
    "Sessions",
    "StoredComparison",
    "Trend",
    "User",
    "Users",
    "hash_password",
    "session_id",
    "verify_password",
]


def __dir__() -> list[str]:
    return __all__
