"""Intervals of validity: which runs a payload applies to.

An IoV is ``(first_exp, first_run, final_exp, final_run)``, inclusive at both ends. A final run of
-1 means "to the end of the final experiment", a final experiment of -1 means "forever" (and then
the final run is -1 too). All runs is ``(0, 0, -1, -1)``.

Runs are ordered as ``(exp, run)`` pairs, so an IoV is an interval on that order and the usual
interval algebra (containment, overlap, intersection, difference) applies; this module implements
it once for the database, the local-database files and the calibration strategies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from b2calib.exceptions import ConfigError

__all__ = ["ALL_RUNS", "IoV", "RunKey"]

RunKey = tuple[int, int]
_OPEN = 1 << 62  # stands for -1 (open) in the ordering
#: The largest experiment or run number: the databases store them as 32-bit integers.
MAX_NUMBER = 2**31 - 1
_TEXT = re.compile(r"^\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*$")


@dataclass(frozen=True, order=False)
class IoV:
    """An interval of validity.

    Parameters
    ----------
    first_exp, first_run
        First run covered (both >= 0). Every number is at most ``2**31 - 1``, as the databases
        store them.
    final_exp, final_run
        Last run covered; ``final_run = -1`` is the end of ``final_exp``, ``final_exp = -1`` is
        open-ended (``final_run`` must then be -1).
    """

    first_exp: int
    first_run: int
    final_exp: int = -1
    final_run: int = -1

    def __post_init__(self) -> None:
        if self.first_exp < 0 or self.first_run < 0:
            raise ConfigError(f"IoV {self}: first experiment and run must be >= 0")
        if self.final_exp < -1 or self.final_run < -1:
            raise ConfigError(f"IoV {self}: final experiment and run must be >= -1")
        if max(self.first_exp, self.first_run, self.final_exp, self.final_run) > MAX_NUMBER:
            raise ConfigError(
                f"IoV {self}: experiment and run numbers must be at most {MAX_NUMBER}"
            )
        if self.final_exp == -1 and self.final_run != -1:
            raise ConfigError(f"IoV {self}: an open final experiment needs final run -1")
        if self.end < self.start:
            raise ConfigError(f"IoV {self}: ends before it starts")

    # -- construction and text ---------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> IoV:
        """Parse ``"first_exp,first_run,final_exp,final_run"``."""
        m = _TEXT.match(text)
        if m is None:
            raise ConfigError(
                f"IoV {text!r}: expected four integers 'first_exp,first_run,final_exp,final_run'"
            )
        return cls(*(int(g) for g in m.groups()))

    @classmethod
    def from_keys(cls, start: RunKey, end: RunKey) -> IoV:
        """The IoV from ``start`` to ``end`` given as ordering keys (see :attr:`end`)."""
        final_exp = -1 if end[0] >= _OPEN else end[0]
        final_run = -1 if end[1] >= _OPEN else end[1]
        return cls(start[0], start[1], final_exp, final_run)

    @classmethod
    def run(cls, exp: int, run: int) -> IoV:
        """The IoV of a single run."""
        return cls(exp, run, exp, run)

    def __str__(self) -> str:
        return f"{self.first_exp},{self.first_run},{self.final_exp},{self.final_run}"

    def as_tuple(self) -> tuple[int, int, int, int]:
        """``(first_exp, first_run, final_exp, final_run)``."""
        return (self.first_exp, self.first_run, self.final_exp, self.final_run)

    # -- ordering keys -----------------------------------------------------------------------

    @property
    def start(self) -> RunKey:
        """First run as an ``(exp, run)`` key."""
        return (self.first_exp, self.first_run)

    @property
    def end(self) -> RunKey:
        """Last run as an ordering key; open ends are a very large number."""
        if self.final_exp == -1:
            return (_OPEN, _OPEN)
        return (self.final_exp, _OPEN if self.final_run == -1 else self.final_run)

    @property
    def is_open(self) -> bool:
        """True when the IoV has no end (``final_exp == -1``)."""
        return self.final_exp == -1

    # -- relations ---------------------------------------------------------------------------

    def contains(self, exp: int, run: int) -> bool:
        """Whether run (exp, run) is in the IoV."""
        return self.start <= (exp, run) <= self.end

    def covers(self, other: IoV) -> bool:
        """Whether every run of ``other`` is in this IoV."""
        return self.start <= other.start and other.end <= self.end

    def overlaps(self, other: IoV) -> bool:
        """Whether the two IoVs share at least one run."""
        return self.start <= other.end and other.start <= self.end

    def intersect(self, other: IoV) -> IoV | None:
        """The runs in both, or ``None``."""
        if not self.overlaps(other):
            return None
        return IoV.from_keys(max(self.start, other.start), min(self.end, other.end))

    def subtract(self, other: IoV) -> list[IoV]:
        """The runs of this IoV not in ``other`` (zero, one or two IoVs)."""
        if not self.overlaps(other):
            return [self]
        out = []
        before = _run_before(other.start)
        if other.start > self.start and before is not None:
            out.append(IoV.from_keys(self.start, before))
        after = _run_after(other.end)
        if other.end < self.end and after is not None:
            out.append(IoV.from_keys(after, self.end))
        return out

    def close_before(self, exp: int, run: int) -> IoV | None:
        """This IoV ended at the run before (exp, run), or ``None`` if nothing would remain."""
        before = _run_before((exp, run))
        if before is None or before < self.start:
            return None
        return IoV.from_keys(self.start, min(before, self.end))

    def starting_at(self, exp: int, run: int) -> IoV:
        """This IoV with its start moved to (exp, run)."""
        return IoV.from_keys((exp, run), self.end)


ALL_RUNS = IoV(0, 0, -1, -1)


def _run_before(key: RunKey) -> RunKey | None:
    exp, run = key
    if run > 0:
        return (exp, run - 1)
    if exp > 0:
        return (exp - 1, _OPEN)
    return None


def _run_after(key: RunKey) -> RunKey | None:
    exp, run = key
    if exp >= _OPEN:
        return None
    if run >= _OPEN:
        return (exp + 1, 0)
    return (exp, run + 1)


def uncovered(iov: IoV, taken: Iterable[IoV]) -> list[IoV]:
    """The parts of ``iov`` that none of ``taken`` covers, in run order."""
    pieces = [iov]
    for t in taken:
        pieces = [p for piece in pieces for p in piece.subtract(t)]
    return sorted(pieces, key=lambda p: p.start)
