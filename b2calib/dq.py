"""Data-quality flags and the data-quality tags of the calibration input filters.

A detector of a run is certified with one of :data:`DQ_FLAGS`. The calibrations select their
input runs with a data-quality *tag* (``dq="Good Or Recoverable"``, as Belle II's prompt
scripts do), which is a condition on the flags of the run's included detectors, or on its
length. The tags are stated once, here, for the two places that read them: the run registry
(:meth:`b2calib.runs.Run.has_dq`) and the good-run lists, whose presets of the same meaning
(:data:`b2calib.qa.grl.DQ_TAG_PRESETS`) are these tags' :attr:`DQTag.expression`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from b2calib.exceptions import ConfigError

__all__ = ["DQ_FLAGS", "DQ_TAGS", "DQTag", "dq_tag"]

#: Certification flags of a detector in a run (NOTSET until someone certifies it).
DQ_FLAGS: tuple[str, ...] = ("GOOD", "BAD", "RECOVERABLE", "NOTSET", "EXCLUDED")


@dataclass(frozen=True)
class DQTag:
    """A data-quality tag of the calibration input filters.

    Attributes
    ----------
    name
        The tag as calibrations name it (``"Good For PXD"``).
    preset
        The name of the good-run-list preset that selects the same runs.
    expression
        That preset's expression in the good-run-list language.
    flags
        Flags every included detector (but those of ``except_detectors``) must have; empty:
        no condition on the flags. A run with no such detector does not pass.
    except_detectors
        Detectors whose flags do not matter.
    min_duration_s
        The run must last at least this long (seconds); None: no condition on the length.
    """

    name: str
    preset: str
    expression: str
    flags: frozenset[str] = frozenset()
    except_detectors: tuple[str, ...] = ()
    min_duration_s: float | None = None

    def accepts(self, flags: Mapping[str, str], duration_s: float) -> bool:
        """Whether a run passes, given the flag of each of its included detectors and its
        length in seconds."""
        if self.min_duration_s is not None and duration_s < self.min_duration_s:
            return False
        if not self.flags:
            return True
        judged = [f for d, f in flags.items() if d not in self.except_detectors]
        return bool(judged) and all(f in self.flags for f in judged)


#: The data-quality tags, by name.
DQ_TAGS: dict[str, DQTag] = {
    t.name: t
    for t in (
        DQTag("Good", "all_good", "all == GOOD", frozenset({"GOOD"})),
        DQTag(
            "Good Or Recoverable",
            "good_or_recoverable",
            "all in (GOOD, RECOVERABLE)",
            frozenset({"GOOD", "RECOVERABLE"}),
        ),
        DQTag(
            "Good For PXD",
            "good_for_pxd",
            "all except (PXD) == GOOD",
            frozenset({"GOOD"}),
            except_detectors=("PXD",),
        ),
        DQTag(">=30 Minute Run", "min_30_minutes", "duration >= 1800", min_duration_s=1800.0),
    )
}


def dq_tag(name: str) -> DQTag:
    """The data-quality tag called ``name`` (a :class:`ConfigError` listing them if unknown)."""
    try:
        return DQ_TAGS[name]
    except KeyError:
        raise ConfigError(
            f"unknown data-quality tag {name!r}; known: {', '.join(DQ_TAGS)}"
        ) from None


def __dir__() -> list[str]:
    return __all__
