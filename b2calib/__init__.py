"""b2calib: calibration and data-quality workbench for a Belle II-like experiment.

The library is layered: a package imports only the packages of the layers below it (the last
column), never one above; ``tests/test_layers.py`` checks every import against this map.

``geometry``         channel maps of the sub-detectors
``io``               reading skim files (checks, metadata, columnar reads)
``db``               the database layer: engines (SQLite, PostgreSQL), the writers' lock,
                     transactions, clock, audit log, the Alembic migrations of every domain
``conditions``       payloads, IoVs, global tags and the conditions database (SQLite,
                     PostgreSQL), basf2 local databases
``skims``            HLT calibration skims as named cuts on trigger variables
``runs``             the run registry and prompt-processing buckets
``sim``              the seeded simulator of a Belle II-like experiment
``engine``           event loops: datasets, collectors, executors (local, Dask), cache
``fit``              fit models, fits of histograms and batched per-channel fits
``calibration``      the calibration framework: algorithms, IoV strategies, iteration,
                     dependencies, checkpoints and staging
``sizereport``,      file-size tables and text summaries
=======
=================  ===========================================  =================================
package            what it holds                                imports (besides exceptions)
=================  ===========================================  =================================
``geometry``       channel maps of the sub-detectors            -
``dq``             data-quality flags and the DQ tags of the    -
                   calibration input filters
``physics``        e+e- cross sections of the simulated and     -
                   measured processes
``io``             reading skim files: checks, metadata,        -
                   columnar reads
``skims``          HLT calibration skims as named cuts on       io
                   trigger variables; luminosity selections
``runs``           the run registry and prompt-processing       dq
                   buckets
``db``             the database: engine (SQLite, PostgreSQL),   -
                   writers' lock, transactions, clock, audit
                   log, Alembic migrations
``conditions``     payloads and the checks of each payload      geometry, io, db
                   type, IoVs, global tags with their rules,
                   the conditions database, basf2 local
                   databases
``sim``            the seeded simulator of a Belle II-like      geometry, physics, io, skims,
                   experiment                                   runs, dq, conditions
``engine``         event loops: datasets, collectors,           io, runs
                   executors (local, Dask), cache
``fit``            fit models, fits of histograms, batched      conditions (channel status)
                   per-channel fits, histogram statistics
``calibration``    the calibration framework: algorithms, IoV   geometry, dq, io, skims, runs,
                   strategies, iteration, dependencies, job     db, conditions, engine, fit
                   checkpoints, staging; the toolkit the
                   detectors share
``qa``             data quality: monitoring (collectors and     geometry, dq, physics, io,
                   the plug-in registry), comparisons with      skims, runs, db, engine, fit
                   references, the QA database (users, runs,
                   histograms, status, certification,
                   good-run lists), good-run-list language
``detectors``      one package per detector and system: its     every package above but sim
                   calibrations and its QA (plug-ins found
                   through entry points)
``prompt``         the prompt calibration loop over a bucket:   geometry, dq, io, skims, runs,
                   one b2luigi graph of the calibrations,       db, conditions, engine, fit,
                   resumable, validated, summarised; its        calibration, qa (b2luigi: the
                   records in the database                      ``prompt`` extra)
``review``         payload review: a staging tag's traffic-     geometry, db, conditions,
                   light summary, a payload against the one     calibration, qa, prompt,
                   it replaces, histories, detector maps, the   detectors
                   approval of a tag, its export as a basf2
                   local database
``sizereport``,    file-size tables and text summaries          io, runs
``summary``
``cli``            the ``b2calib`` command line                 everything; the dashboards in
                                                                ``b2calib serve``
``b2calib_apps``   the served dashboards (``apps/`` in the      every package but cli
                   repository; the ``dashboards`` extra)
=================  ===========================================  =================================

The core imports none of the optional stacks (dashboards, notebooks, Dask, PostgreSQL: the
extras); a feature that needs one names the extra to install. ``import b2calib`` itself loads
nothing heavy: its names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from b2calib._lazy import attach
from b2calib._version import __version__

if TYPE_CHECKING:
    from b2calib import geometry
    from b2calib.conditions.localdb import LocalDatabase
    from b2calib.conditions.payload import Payload
    from b2calib.conditions.status import ChannelStatus
    from b2calib.exceptions import (
        B2CalibError,
        FileFormatError,
        MissingBranchError,
        PayloadError,
    )
    from b2calib.io import FileMetadata, SkimFile, open_skim, read_metadata
    from b2calib.runs import Bucket, Run, RunRegistry, make_buckets
    from b2calib.sizereport import size_report
    from b2calib.skims import SKIMS, get_skim

__all__ = [
    "SKIMS",
    "B2CalibError",
    "Bucket",
    "ChannelStatus",
    "FileFormatError",
    "FileMetadata",
    "LocalDatabase",
    "MissingBranchError",
    "Payload",
    "PayloadError",
    "Run",
    "RunRegistry",
    "SkimFile",
    "__version__",
    "geometry",
    "get_skim",
    "make_buckets",
    "open_skim",
    "read_metadata",
    "size_report",
]

__getattr__ = attach(
    __name__,
    {
        "": ["geometry"],
        "conditions.localdb": ["LocalDatabase"],
        "conditions.payload": ["Payload"],
        "conditions.status": ["ChannelStatus"],
        "exceptions": ["B2CalibError", "FileFormatError", "MissingBranchError", "PayloadError"],
        "io": ["FileMetadata", "SkimFile", "open_skim", "read_metadata"],
        "runs": ["Bucket", "Run", "RunRegistry", "make_buckets"],
        "sizereport": ["size_report"],
        "skims": ["SKIMS", "get_skim"],
    },
)


def __dir__() -> list[str]:
    return __all__
