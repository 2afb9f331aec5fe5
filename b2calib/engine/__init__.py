"""The event-loop engine: datasets of skim files, pure collectors, executors and a disk cache.

=============  ==================================================================
``dataset``    :class:`Dataset` of skim files selected by run properties or paths
``collector``  :class:`Collector` base class, generic collectors, :class:`RunOutput`
``loop``       :func:`collect`: work items, executors (in-process, processes, Dask),
               the bad-file policy and the cache
``integrity``  checksums verified before files are read, duplicate events and
               :class:`NonFiniteCounts` found in the same pass as the histograms
=============  ==================================================================
"""

from b2calib.engine.collector import ChannelValueCollector, Collector, RunOutput, ValueCollector
from b2calib.engine.dataset import Dataset, FileRef, SkippedFile
from b2calib.engine.integrity import NonFiniteCounts
from b2calib.engine.loop import CollectResult, WorkItem, collect, default_cache_dir, plan

__all__ = [
    "ChannelValueCollector",
    "CollectResult",
    "Collector",
    "Dataset",
    "FileRef",
    "NonFiniteCounts",
    "RunOutput",
    "SkippedFile",
    "ValueCollector",
    "WorkItem",
    "collect",
    "default_cache_dir",
    "plan",
]
