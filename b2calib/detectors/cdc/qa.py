"""CDC monitoring.

* ``mumu.cdc_hits_per_track``: CDC hits per dimuon track (the track's hit count), with its QA
  histogram.
* ``<skim>.cdc_hits_per_event`` (``hadron``, ``cosmic``): the occupancy.
"""

from __future__ import annotations

from typing import Any

from b2calib.qa.monitoring import QAPart
from b2calib.qa.monitoring.parts import TrackHits, occupancy

__all__ = ["qa_parts"]


def qa_parts() -> list[QAPart[Any]]:
    """The CDC's QA parts."""
    return [
        TrackHits("CDC", "nCDCHits", "CDC hits per dimuon track", (71, -0.5, 70.5)),
        *occupancy("CDC", "nCDCHits", "cdc_hits", "CDC hits"),
    ]


def __dir__() -> list[str]:
    return __all__
