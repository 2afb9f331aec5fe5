"""The status of a channel in a payload (the ``status`` column of the payload format).

A module of its own, without the file format's ROOT I/O, so that the fits that mark channels
(:mod:`b2calib.fit`) use it without loading uproot.
"""

from __future__ import annotations

import enum

__all__ = ["ChannelStatus"]


class ChannelStatus(enum.IntEnum):
    """Status of one channel in a payload.

    ``UNUSABLE`` (basf2's ``c_Unusable``): a value was measured but must not be used, e.g. a
    constant defined modulo a period whose period could not be placed unambiguously.
    """

    OK = 0
    NOT_ENOUGH_DATA = 1
    FAILED = 2
    DEAD = 3
    HOT = 4
    UNUSABLE = 5


def __dir__() -> list[str]:
    return __all__
