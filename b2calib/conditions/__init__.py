"""Conditions: payloads, intervals of validity, global tags and the conditions database.

=====================  =======================================================================
``names``              what a payload and a global tag may be called (basf2, the columns)
``payload``            the payload file format (ROOT, one TTree per payload, MD5 checksum)
``payloadtypes``       what a payload must hold, per payload type (keys in their detector's
                       range, rows, finite values): checked on the way into the database
``status``             :class:`ChannelStatus`, the status column of a payload
``eventdep``           time-dependent payloads (basf2's EventDependency by time): constants per
                       time interval inside a run, looked up at a time
``iov``                intervals of validity and their algebra
``localdb``            basf2 local databases (``database.txt`` + payload files)
``tagops``             priority layering of tags, lookup of many runs, diff
``tables``             the conditions tables (created and upgraded by the migrations of
                       :mod:`b2calib.db`)
``runningupdate``      the running update's rules and modes (basf2's ``b2conditionsdb tag
                       runningupdate``) and its result, :class:`RunningUpdate`
``database``           :class:`ConditionsDB`: payloads, global tags with states and rules, IoVs,
                       lookup, running update, snapshot, merge, diff, history, interchange,
                       staging inside a caller's transaction, and :class:`Verification` of
                       payload checksums and published tags' manifests
``browse``             what a conditions browser shows: tags' sizes (:class:`TagSize`), a tag's
                       IoVs as columns on a run axis (:class:`IovTable`, :class:`RunAxis`),
                       the entries of a stack of tags at a run (:class:`StackEntry`)
=====================  =======================================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from b2calib._lazy import attach

if TYPE_CHECKING:
    from b2calib.conditions.browse import IovTable, RunAxis, StackEntry, TagSize
    from b2calib.conditions.database import (
        ConditionsDB,
        GlobalTag,
        HistoryEntry,
        IovEntry,
        PayloadFile,
        PayloadInfo,
        StackLookup,
        Verification,
    )
    from b2calib.conditions.iov import ALL_RUNS, IoV
    from b2calib.conditions.localdb import LocalDatabase, LocalDbEntry
    from b2calib.conditions.payload import Payload
    from b2calib.conditions.payloadtypes import PAYLOAD_TYPES, PayloadType, check_payload
    from b2calib.conditions.runningupdate import RUNNING_UPDATE_MODES, RunningUpdate
    from b2calib.conditions.status import ChannelStatus
    from b2calib.conditions.tables import ALLOWED_MOVES, STATES
    from b2calib.conditions.tagops import Diff

__all__ = [
    "ALLOWED_MOVES",
    "ALL_RUNS",
    "PAYLOAD_TYPES",
    "RUNNING_UPDATE_MODES",
    "STATES",
    "ChannelStatus",
    "ConditionsDB",
    "Diff",
    "GlobalTag",
    "HistoryEntry",
    "IoV",
    "IovEntry",
    "IovTable",
    "LocalDatabase",
    "LocalDbEntry",
    "Payload",
    "PayloadFile",
    "PayloadInfo",
    "PayloadType",
    "RunAxis",
    "RunningUpdate",
    "StackEntry",
    "StackLookup",
    "TagSize",
    "Verification",
    "check_payload",
]

# names are imported on first use: `from b2calib.conditions import ChannelStatus` loads neither
# the database (SQLAlchemy) nor the ROOT I/O
__getattr__ = attach(
    __name__,
    {
        "browse": ["IovTable", "RunAxis", "StackEntry", "TagSize"],
        "database": [
            "ConditionsDB",
            "GlobalTag",
            "HistoryEntry",
            "IovEntry",
            "PayloadFile",
            "PayloadInfo",
            "StackLookup",
            "Verification",
        ],
        "iov": ["ALL_RUNS", "IoV"],
        "localdb": ["LocalDatabase", "LocalDbEntry"],
        "payload": ["Payload"],
        "payloadtypes": ["PAYLOAD_TYPES", "PayloadType", "check_payload"],
        "runningupdate": ["RUNNING_UPDATE_MODES", "RunningUpdate"],
        "status": ["ChannelStatus"],
        "tables": ["ALLOWED_MOVES", "STATES"],
        "tagops": ["Diff"],
    },
)


def __dir__() -> list[str]:
    return __all__
