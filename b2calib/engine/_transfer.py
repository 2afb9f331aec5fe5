"""What a worker process sends back, in fewer bytes: integer arrays in their narrowest type.

A collector's histograms are mostly ``Int64`` storage whose counts per run fit in 16 bits (the
ECL channel x energy histogram of a 60k-event run: 8738 x 102 bins of at most ~700 entries).
Pickled as they are, each work item sent 7.3 MB through the pool's pipe (or Dask's socket),
which cost the parent ~6-10 ms of CPU per item on the 2-core benchmark machine (issue 20),
competing with the workers. :class:`Wire` wraps a task's result: in the process that made it
nothing happens; pickled, every large integer array in it (the histograms' storage, the event
numbers) travels in the smallest integer type that holds its values exactly, and is
widened back to its own type on arrival. The values are unchanged bit for bit.

A ``hist.Hist`` of ``Int64`` or ``Double`` storage travels as its axes, attributes and storage
array, and is rebuilt by filling an empty histogram of the same axes: boost-histogram's own
unpickling took ~7 ms for the 8736 x 100 histogram, this takes ~0.7 ms (in the parent, the one
process every result passes through). A ``Double`` storage holding integers only (counts filled
with unit weights: the ECL gamma-gamma and mu-mu ratio histograms, 11 MB per run each) travels
narrowed as an integer storage would, and is the same bit for bit once filled back into
float64. Other histograms are pickled as they are.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Generic, TypeVar

import hist
import numpy as np
import numpy.typing as npt

__all__ = ["NARROW_MIN", "Wire", "dumps_narrow"]

T = TypeVar("T")
#: Integer arrays of at least this many elements are narrowed (below, the scan costs more
#: than the bytes it saves).
NARROW_MIN = 4096


def _narrowest(a: npt.NDArray[np.integer]) -> np.dtype[Any] | None:
    """The smallest integer type that holds every value of ``a``, if smaller than its own."""
    lo, hi = a.min(), a.max()
    small = np.result_type(np.min_scalar_type(lo), np.min_scalar_type(hi))
    if small.kind not in "iu" or small.itemsize >= a.dtype.itemsize:
        return None
    return small


def _integral(a: npt.NDArray[Any]) -> npt.NDArray[np.int64] | None:
    """``a`` (float64) as int64 when that holds every value bit for bit (integers only: no
    fraction, -0.0, NaN or infinity), else None; a first slice is tried before the whole."""
    if a.dtype != np.float64 or a.size < NARROW_MIN:
        return None
    for part in (a.ravel(order="K")[:NARROW_MIN], a):
        with np.errstate(invalid="ignore"):  # NaN, infinity, beyond int64: caught below
            ints = part.astype(np.int64)
        if not np.array_equal(ints.astype(np.float64).view(np.int64), part.view(np.int64)):
            return None
    return ints


def _widen(small: npt.NDArray[np.integer], dtype: str) -> npt.NDArray[np.integer]:
    """The array ``small`` back in its own type ``dtype``."""
    return small.astype(np.dtype(dtype))


#: Storages whose ``view(flow=True)`` is a plain array, rebuilt by :func:`_rebuild_hist`.
_PLAIN_STORAGES = (hist.storage.Int64, hist.storage.Double)


def _rebuild_hist(
    axes: tuple[Any, ...], storage: Any, attributes: dict[str, Any], data: npt.NDArray[Any]
) -> hist.Hist:
    """A ``hist.Hist`` of ``axes`` and ``storage`` holding ``data`` (with flow bins)."""
    h = hist.Hist(*axes, storage=storage)
    h.__dict__.update(attributes)
    h.view(flow=True)[...] = data
    return h


class _NarrowPickler(pickle.Pickler):
    """Pickles large integer arrays in their narrowest type (:func:`_widen` restores them)."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._made: list[npt.NDArray[Any]] = []  # the narrowed copies, not narrowed again

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is hist.Hist and isinstance(obj.storage_type(), _PLAIN_STORAGES):
            data = obj.view(flow=True)
            if data.dtype.kind in "iu":
                data = self._narrow(data)
            else:  # counts in a Double storage travel as integers when they are integers
                ints = _integral(data)
                narrow = None if ints is None else self._narrow(ints)
                if narrow is not None and narrow is not ints:
                    data = narrow
            return _rebuild_hist, (tuple(obj.axes), obj.storage_type(), dict(obj.__dict__), data)
        if (
            type(obj) is np.ndarray
            and obj.dtype.kind in "iu"
            and obj.size >= NARROW_MIN
            and not any(obj is m for m in self._made)
        ):
            narrow = self._narrow(obj)
            if narrow is not obj:
                return _widen, (narrow, obj.dtype.str)
        return NotImplemented

    def _narrow(self, a: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """``a`` in its narrowest integer type (``a`` itself when it is already)."""
        small = _narrowest(a) if a.size >= NARROW_MIN else None
        if small is None:
            return a
        narrow = a.astype(small)
        self._made.append(narrow)
        return narrow


def dumps_narrow(obj: Any) -> bytes:
    """``pickle.dumps(obj)`` with large integer arrays narrowed; ``pickle.loads`` reads it."""
    buf = io.BytesIO()
    _NarrowPickler(buf).dump(obj)
    return buf.getvalue()


def _from_wire(blob: bytes | bytearray | memoryview | pickle.PickleBuffer) -> Wire[Any]:
    return Wire(pickle.loads(blob))


class Wire(Generic[T]):
    """A task's result; pickled (to another process), its integer arrays are narrowed."""

    __slots__ = ("payload",)

    def __init__(self, payload: T) -> None:
        self.payload = payload

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return _from_wire, (dumps_narrow(self.payload),)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, tuple[Any]]:
        fn, (blob,) = self.__reduce__()
        if isinstance(protocol, int) and protocol >= 5:
            # Dask pickles with protocol 5 and takes a PickleBuffer out of the stream, as a
            # frame of its own: the ~2 MB blob is neither copied into the pickle stream (and
            # scanned there for "__main__") in the worker nor copied out of it in the caller.
            # A pickler without a buffer callback writes it in the stream, as bytes.
            return fn, (pickle.PickleBuffer(blob),)
        return fn, (blob,)
