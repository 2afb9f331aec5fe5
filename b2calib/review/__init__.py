"""Payload review: what the payload-validation and conditions dashboards show, as arrays and
records, and the approval of a staging tag.

===============  ===================================================================================
``summary``      :func:`tag_summary`: the traffic-light summary of a staging tag, one
                 :class:`PayloadRow` per payload name (calibration, detector, expert, runs, job
                 status, validation verdict, wall time, channel counts)
``compare``      :func:`compare_payload`: a revision against the one it replaces, channel by
                 channel (:class:`ChannelComparison`: values, errors, differences, pulls,
                 statuses, outliers, pull histogram), through the validation's own comparison
``history``      :func:`history`: a constant over the IoVs of a tag (per interval for
                 time-dependent payloads), chosen channels and the mean and spread of the OK ones
``maps``         :func:`detector_map`: the detector-map cell of each row of a comparison (ECL
                 theta ring x phi, CDC layer x wire, TOP module x pixel, KLM sector x layer,
                 ARICH HAPD ring x module, SVD/PXD sensors)
``approval``     :func:`approve`, :func:`reject`: TESTING -> VALIDATED or OPEN with a
                 :class:`Review` in one transaction; who may (:func:`may_review`); the reviews
``export``       :func:`export_zip`: a tag as a zipped basf2 local database
``fitview``      :func:`fit_view`: a channel's fit from its calibration's diagnostics
                 (:mod:`b2calib.calibration.fitview`)
``tables``       the table ``tag_reviews`` (append-only)
===============  ===================================================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from b2calib._lazy import attach

if TYPE_CHECKING:
    from b2calib.review.approval import (
        Review,
        approve,
        may_review,
        reject,
        reviews,
        tag_detectors,
    )
    from b2calib.review.compare import ChannelComparison, channel_ids, compare_payload
    from b2calib.review.export import export_zip
    from b2calib.review.fitview import FitView, FitViewError, fit_view
    from b2calib.review.history import History, history
    from b2calib.review.maps import DetectorMap, detector_map
    from b2calib.review.summary import PayloadRow, TagSummary, Unstaged, tag_summary

__all__ = [
    "ChannelComparison",
    "DetectorMap",
    "FitView",
    "FitViewError",
    "History",
    "PayloadRow",
    "Review",
    "TagSummary",
    "Unstaged",
    "approve",
    "channel_ids",
    "compare_payload",
    "detector_map",
    "export_zip",
    "fit_view",
    "history",
    "may_review",
    "reject",
    "reviews",
    "tag_detectors",
    "tag_summary",
]

__getattr__ = attach(
    __name__,
    {
        "approval": ["Review", "approve", "may_review", "reject", "reviews", "tag_detectors"],
        "compare": ["ChannelComparison", "channel_ids", "compare_payload"],
        "export": ["export_zip"],
        "fitview": ["FitView", "FitViewError", "fit_view"],
        "history": ["History", "history"],
        "maps": ["DetectorMap", "detector_map"],
        "summary": ["PayloadRow", "TagSummary", "Unstaged", "tag_summary"],
    },
)


def __dir__() -> list[str]:
    return __all__
