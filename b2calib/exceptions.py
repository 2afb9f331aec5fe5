"""Exceptions raised by b2calib.

Every error derives from :class:`B2CalibError` and, where it fits, from the matching builtin
(so ``except OSError`` still catches an unreadable file). Messages say what is wrong, where
(file, branch, run, payload) and, where possible, what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "B2CalibError",
    "BadValueError",
    "CalibrationError",
    "ConditionsError",
    "ConfigError",
    "ConfirmationNeeded",
    "FileFormatError",
    "InconsistentDataError",
    "MissingBranchError",
    "MissingExtraError",
    "PayloadError",
    "PermissionDenied",
    "QAError",
    "ReviewError",
    "RunNotFoundError",
    "SkimDefinitionError",
    "TimeDependentPayloadError",
]


class B2CalibError(Exception):
    """Base class of every error b2calib raises on purpose.

    Every one pickles with its message and attributes, whatever its constructor takes, so that
    it crosses process boundaries (pool workers, Dask) as itself.
    """

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(
    cls: type[B2CalibError], args: tuple[object, ...], state: dict[str, object]
) -> B2CalibError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class CalibrationError(B2CalibError, RuntimeError):
    """A calibration cannot run: bad declaration, dependency cycle, no input, failed algorithm."""


class ConditionsError(B2CalibError, ValueError):
    """A conditions-database operation breaks a rule (global-tag state, overlap, immutability),
    or names a global tag, payload or revision that does not exist."""


class TimeDependentPayloadError(ConditionsError):
    """A run-level request (no time) of a payload that holds constants per time interval inside
    the run (:mod:`b2calib.conditions.eventdep`). The message names the payload, its revision,
    where it was found, the run and the number of intervals, and says how to ask.

    Attributes
    ----------
    payload, revision, source, exp, run, intervals
        The payload name, its revision (``None`` when unknown), the global tag or local database
        it was found in, the run asked for and the payload's number of time intervals.
    """

    def __init__(
        self,
        message: str,
        *,
        payload: str = "",
        revision: int | None = None,
        source: str = "",
        exp: int = -1,
        run: int = -1,
        intervals: int = 0,
    ) -> None:
        super().__init__(message)
        self.payload = payload
        self.revision = revision
        self.source = source
        self.exp = exp
        self.run = run
        self.intervals = intervals


class BadValueError(B2CalibError, ValueError):
    """A branch holds values its collector cannot use: a layer, wire, channel or flag outside
    what the detector has, which no event of a sound file holds (a corrupt or foreign file).

    Collectors raise it naming the branch; the event loop names the file and the entries it
    was reading and treats the file as bad (reason ``"bad-values"``): left out and listed, or
    the job stopped, as ``on_bad_file`` says.

    Parameters
    ----------
    branch
        The branch at fault.
    detail
        What is wrong with its values (which values, and what the detector has).
    """

    def __init__(self, branch: str, detail: str) -> None:
        self.branch = branch
        self.detail = detail
        super().__init__(f"branch {branch!r}: {detail}")


class ConfigError(B2CalibError, ValueError):
    """A configuration value (CLI option, config file key, expert_config) is invalid."""


class FileFormatError(B2CalibError, OSError):
    """A file is not a readable ROOT file, is truncated, lacks the expected structure or holds
    values no sound file holds.

    Parameters
    ----------
    path
        The file at fault.
    reason
        A short machine-readable reason: ``"not-root"``, ``"truncated"``, ``"missing-tree"``,
        ``"missing-metadata"``, ``"wrong-type"``, ``"unreadable"``, ``"checksum"`` (the
        file's size or checksum is not what the file catalogue recorded when it was written)
        or ``"bad-values"`` (a branch holds values no sound file holds:
        :class:`BadValueError`).
    detail
        Human-readable explanation.
    message
        The whole message, when it was composed already (an error recorded earlier and raised
        now); by default ``"<path>: <detail> [<reason>]"``.
    """

    def __init__(self, path: str, reason: str, detail: str, *, message: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(message if message is not None else f"{self.path}: {detail} [{reason}]")


class InconsistentDataError(FileFormatError):
    """Skim files that are readable but contradict each other, their paths or the run registry:
    the same events twice in a run (``"duplicate-events"``), a file whose path and metadata name
    different runs (``"path-mismatch"``), files of a run the registry does not list
    (``"not-in-registry"``) or lists more than once (``"registry-duplicate"``), more NaN or Inf
    values in a run than allowed (``"non-finite"``).

    ``paths`` are every file involved (``path`` is the first); the message names them all.
    """

    def __init__(
        self, paths: Sequence[str], reason: str, detail: str, *, message: str | None = None
    ) -> None:
        self.paths = [str(p) for p in paths]
        super().__init__(", ".join(self.paths), reason, detail, message=message)
        self.path = self.paths[0] if self.paths else ""


class MissingBranchError(B2CalibError, KeyError):
    """A requested branch is not in a tree; the message lists the closest existing names."""

    def __init__(self, path: str, branch: str, available: Iterable[str]) -> None:
        self.path = str(path)
        self.branch = branch
        avail = list(available)
        close = difflib.get_close_matches(branch, avail, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        self.message = f"{self.path}: no branch {branch!r} in tree{hint}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class MissingExtraError(B2CalibError, ImportError):
    """A feature needs an optional dependency that is not installed; the message names the
    extra that installs it (``pip install 'b2calib[dashboards]'``)."""


class PayloadError(B2CalibError, ValueError):
    """A payload file is malformed, or its checksum does not match the expected one."""


class QAError(B2CalibError, ValueError):
    """A quality-assurance record (flag, run state, histogram, reference, good-run list, user) is
    missing or a request about it is invalid."""


class PermissionDenied(QAError):
    """The user may not make this change (role, detector or run state forbids it)."""


class ConfirmationNeeded(QAError):
    """A certification write that needs an explicit confirmation: overriding another person's
    flag, GOOD over an automatic ERROR, completing a run with NOTSET detectors. Nothing was
    written; repeat the write with ``force=True`` (``--force`` on the command line) to confirm
    every one, which the history records.

    Attributes
    ----------
    confirmations : list[Confirmation]
        Every (run, detector) that needs confirming and why
        (:class:`~b2calib.qa.store.certification.Confirmation`), in the order of the changes.
    """

    def __init__(self, confirmations: Sequence[Any], *, hint: str = "force=True") -> None:
        # Confirmation lives in b2calib.qa.store (the exceptions import nothing of b2calib)
        self.confirmations: list[Any] = list(confirmations)
        n = len(self.confirmations)
        lines = "".join(f"\n  {c}" for c in self.confirmations)
        super().__init__(
            f"{n} change{'s' if n != 1 else ''} need{'s' if n == 1 else ''} an explicit "
            f"confirmation ({hint}); nothing was written:{lines}"
        )


class ReviewError(B2CalibError, ValueError):
    """A payload review cannot be made: the tag, payload, revision, IoV, column or channel asked
    for is not there (the message names which)."""


class RunNotFoundError(B2CalibError, KeyError):
    """A run (exp, run) is not in the run registry."""

    def __init__(self, exp: int, run: int) -> None:
        self.exp, self.run = exp, run
        self.message = f"run ({exp}, {run}) is not in the run registry"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class SkimDefinitionError(B2CalibError, ValueError):
    """A skim cut string cannot be parsed, or names an unknown trigger variable."""
