"""The entry point of the quality-assurance records: :class:`QADatabase`, a
:class:`~b2calib.db.Database` with one part per concept.
"""

from __future__ import annotations

import os
from typing import ClassVar

from b2calib.db import Database
from b2calib.exceptions import B2CalibError, QAError
from b2calib.qa.store.certification import Certification
from b2calib.qa.store.grls import GoodRunLists
from b2calib.qa.store.histograms import Histograms
from b2calib.qa.store.luminosity import Luminosity
from b2calib.qa.store.periods import Periods
from b2calib.qa.store.runs import Runs
from b2calib.qa.store.sessions import Sessions
from b2calib.qa.store.status import AutoStatus
from b2calib.qa.store.users import Users

__all__ = ["QADatabase"]


class QADatabase(Database):
    """The quality-assurance records of a b2calib database, one part per concept.

    It lives in the same database as the conditions (same URL, ``$B2CALIB_DB``, SQLite by
    default or PostgreSQL), in the ``qa_`` tables. Every public write is one transaction; its
    errors are :class:`~b2calib.exceptions.QAError` (and ``PermissionDenied``,
    ``RunNotFoundError``).

    Parameters
    ----------
    url
        As for :class:`~b2calib.conditions.ConditionsDB` (the same database holds both).
    author
        Recorded for administrative changes (users, references, imports) made through this
        object; certification records the :class:`~b2calib.qa.store.users.User` passed to each
        call.

    Attributes
    ----------
    users : Users
        Users and roles: ``add``, ``authenticate``, ``get``, ``all``, ``set_password``,
        ``remove``.
    sessions : Sessions
        The dashboards' login sessions: ``open``, ``find``, ``get``, ``alive``, ``close``,
        ``close_all``, ``purge``.
    runs : Runs
        The run registry with the certified flags and the monitoring variables: ``import_runs``,
        ``select``, ``get``, ``registry``, ``with_certified_flags``, ``variable_names``,
        ``variables``, ``trend``, ``judged``.
    periods : Periods
        QA periods, "from run N of experiment E on, the detector changed (reason)", which
        split the references and trend bands: ``add``, ``remove``, ``all``, ``starts``,
        ``of``, ``label``.
    histograms : Histograms
        QA histograms, references (per class of runs and period) and comparisons:
        ``store_run``, ``keys``, ``get``, ``set_reference``, ``choose_references``,
        ``reference``, ``reference_of``, ``references``, ``compare``, ``comparisons``.
    luminosity : Luminosity
        The runs' recorded, Bhabha and gamma-gamma luminosities side by side:
        ``qa.luminosity(exp=None, first=None, last=None, run_type=None)`` gives a
        :class:`~b2calib.qa.store.luminosity.LuminosityTable` (``totals()``, ``to_frame()``).
    status : AutoStatus
        The automatic status per detector and system (``STATUS_COLUMNS``): ``evaluate``,
        ``evaluate_all``, ``get``, ``grid``, ``evidence``, ``worst_variables``.
    certification : Certification
        Flags and run sign-off: ``set_flag``, ``set_flags``, ``confirmations``, ``flags``,
        ``flag_history``, ``flag_grid``, ``state``, ``states``, ``set_state``,
        ``state_confirmations``, ``state_history``.
    grls : GoodRunLists
        Versioned good-run lists: ``make``, ``get``, ``latest``, ``versions``, ``diff``.
    """

    error: ClassVar[type[B2CalibError]] = QAError
    label: ClassVar[str] = "conditions database"  # the QA tables live in it (same URL, file)

    def __init__(
        self, url: str | os.PathLike[str] | None = None, *, author: str | None = None
    ) -> None:
        super().__init__(url, author=author)
        self.users = Users(self)
        self.sessions = Sessions(self)
        self.runs = Runs(self)
        self.periods = Periods(self)
        self.luminosity = Luminosity(self)
        self.histograms = Histograms(self, self.runs)
        self.status = AutoStatus(self, self.runs, self.histograms)
        self.certification = Certification(self, self.users, self.runs, self.status)
        self.grls = GoodRunLists(self, self.users, self.runs)


def __dir__() -> list[str]:
    return __all__
