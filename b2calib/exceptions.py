"""Exceptions raised by b2calib.

Every error derives from :class:`B2CalibError` and, where it fits, from the matching builtin
(so ``except OSError`` still catches an unreadable file). Messages say what is wrong, where
(file, branch, run, payload) and, where possible, what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "B2CalibError",
    "CalibrationError",
    "ConditionsError",
    "ConfigError",
    "FileFormatError",
    "MissingBranchError",
    "MissingExtraError",
    "PayloadError",
    "PermissionDenied",
    "QAError",
    "RunNotFoundError",
    "SkimDefinitionError",
]


class B2CalibError(Exception):
    """Base class of every error b2calib raises on purpose."""


class CalibrationError(B2CalibError, RuntimeError):
    """A calibration cannot run: bad declaration, dependency cycle, no input, failed algorithm."""


class ConditionsError(B2CalibError, ValueError):
    """A conditions-database operation breaks a rule (global-tag state, overlap, immutability),
    or names a global tag, payload or revision that does not exist."""


class ConfigError(B2CalibError, ValueError):
    """A configuration value (CLI option, config file key, expert_config) is invalid."""


class FileFormatError(B2CalibError, OSError):
    """A file is not a readable ROOT file, is truncated, or lacks the expected structure.

    Parameters
    ----------
    path
        The file at fault.
    reason
        A short machine-readable reason: ``"not-root"``, ``"truncated"``, ``"missing-tree"``,
        ``"missing-metadata"``, ``"wrong-type"`` or ``"unreadable"``.
    detail
        Human-readable explanation.
    """

    def __init__(self, path: str, reason: str, detail: str) -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {detail} [{reason}]")


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
