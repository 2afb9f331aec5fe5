"""b2calib: calibration and data-quality workbench for a Belle II-like experiment.

The library is layered, each layer using only those below it:

===================  ==========================================================
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
``summary``
``cli``              the ``b2calib`` command line
===================  ==========================================================
"""

from __future__ import annotations

from b2calib import geometry
from b2calib._version import __version__
from b2calib.conditions.localdb import LocalDatabase
from b2calib.conditions.payload import ChannelStatus, Payload
from b2calib.exceptions import B2CalibError, FileFormatError, MissingBranchError, PayloadError
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


def __dir__() -> list[str]:
    return __all__
