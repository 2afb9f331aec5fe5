"""The names of the conditions database: what a payload and a global tag may be called.

Both are checked against what basf2 and the schema allow, so that a name accepted here can be
stored (the columns' lengths, on PostgreSQL as on SQLite), written to a basf2 local database
(``dbstore/<name> <revision> <iov>`` lines and ``dbstore_<name>_rev_<revision>.root`` files) and
used by basf2:

* a payload name is an ASCII identifier (letters, digits and ``_``, not starting with a digit),
  like the class names basf2 payloads are called after; it is the TTree name of the payload
  file and part of a file name, so no space, ``/`` or ``#`` can enter a ``database.txt`` line;
* a global tag name uses ASCII letters, digits and ``_ + - :`` (what ``b2conditionsdb tag
  create`` accepts) and ``.``, which b2calib has always accepted;
* both are at most :data:`NAME_LENGTH` characters, the length of their columns
  (:mod:`b2calib.conditions.tables` takes it from here).

A module without the ROOT I/O and without SQLAlchemy, so that both the payload format and the
tables use it.
"""

from __future__ import annotations

import re

from b2calib.exceptions import ConditionsError, PayloadError

__all__ = ["NAME_LENGTH", "check_globaltag_name", "check_payload_name"]

#: Longest payload or global tag name: the length of the ``name`` columns of ``payloads`` and
#: ``globaltags``.
NAME_LENGTH = 200

_PAYLOAD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GLOBALTAG_NAME = re.compile(r"[A-Za-z0-9_+\-:.]+")


def _shown(name: str) -> str:
    """``name`` for an error message: its repr, cut after 40 characters."""
    return repr(name) if len(name) <= 40 else f"{name[:40]!r}... ({len(name)} characters)"


def check_payload_name(name: object) -> str:
    """``name`` if it is a valid payload name, else :class:`~b2calib.exceptions.PayloadError`."""
    if not isinstance(name, str):
        raise PayloadError(f"payload name {name!r} is not a string")
    if not _PAYLOAD_NAME.fullmatch(name):
        raise PayloadError(
            f"payload name {_shown(name)} is not a valid identifier: use ASCII letters, digits "
            "and _ (not starting with a digit), as basf2's payload names"
        )
    if len(name) > NAME_LENGTH:
        raise PayloadError(
            f"payload name {_shown(name)} is too long: at most {NAME_LENGTH} characters"
        )
    return name


def check_globaltag_name(name: object) -> str:
    """``name`` if it is a valid global tag name, else
    :class:`~b2calib.exceptions.ConditionsError`."""
    if not isinstance(name, str) or not _GLOBALTAG_NAME.fullmatch(name):
        shown = _shown(name) if isinstance(name, str) else repr(name)
        raise ConditionsError(
            f"global tag name {shown}: use letters, digits and _ . + - : only (ASCII)"
        )
    if len(name) > NAME_LENGTH:
        raise ConditionsError(
            f"global tag name {_shown(name)} is too long: at most {NAME_LENGTH} characters"
        )
    return name


def __dir__() -> list[str]:
    return __all__
