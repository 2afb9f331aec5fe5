"""The event-loop engine: datasets of skim files, pure collectors, executors and a disk cache.

=============  ==================================================================
``dataset``    :class:`Dataset` of skim files selected by run properties or paths
``collector``  :class:`Collector` base class, generic collectors, :class:`RunOutput`
``loop``       :func:`collect`: work items, executors (in-process, processes, Dask),
               the bad-file policy and the cache
=============  ==================================================================
"""

from b2calib.engine.collector import ChannelValueCollector, Collector, RunOutput, ValueCollector
from b2calib.engine.dataset import Dataset, FileRef, SkippedFile
from b2calib.engine.loop import CollectResult, WorkItem, collect, default_cache_dir, plan

__all__ = [
    "ChannelValueCollector",
    "CollectResult",
    "Collector",
    "Dataset",
    "FileRef",
    "RunOutput",
    "SkippedFile",
    "ValueCollector",
    "WorkItem",
    "collect",
    "default_cache_dir",
    "plan",
]
