"""Decoded branches kept on local disk for the rereads of one calibration job.

An iterating calibration reads the same files again in every iteration (ecl-energy's peak
methods up to five times, ecl-time and the beam spot twice), with new constants in its
collectors; each pass decompressed and decoded the same baskets again, about as costly as the
first (issue 20: ecl-energy's gamma-gamma and mu-mu skims, 800 MB decoded, 2.4 s of CPU per
pass to read, 0.2 s from this cache). :class:`ReadCache` keeps each work item's branches as
they were decoded, one file per (skim file version, tree, branch, entry range), in a folder the
caller makes for the job and removes after it:

- keyed by the file's identity ``(st_dev, st_ino, st_size, st_mtime_ns)``: a file rewritten or
  replaced since is read again;
- written whole or not at all (a temporary name, then a rename), so a reader in another worker
  sees a complete entry or none;
- bounded: a process stops adding entries once it has written its share of ``max_bytes``
  (new entries are not written; the ones there are still read);
- the arrays come back as they were decoded (the same awkward form, dtypes and values, in
  writable memory: the collectors' compiled kernels see the same types as from a read).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import threading
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

__all__ = ["ReadCache"]

_MAGIC = b"b2calib-reads-1\n"
_ALIGN = 64


class ReadCache:
    """Decoded branches of work items in ``folder`` (made by the caller, removed after).

    Parameters
    ----------
    folder
        Where the entries are (shared by every worker of the job on this machine).
    max_bytes
        The bytes this process writes at most (its share of the job's budget).
    """

    def __init__(self, folder: str | os.PathLike[str], max_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.written = 0

    def _path(self, ident: tuple[int, ...], tree: str, branch: str, start: int, stop: int) -> Path:
        key = json.dumps([list(ident), tree, branch, start, stop])
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()}.bin"

    def arrays(
        self,
        f: Any,
        ident: tuple[int, ...] | None,
        tree: str,
        branches: list[str],
        start: int,
        stop: int,
    ) -> ak.Array:
        """``f.arrays(branches, start, stop)`` (``f`` a :class:`~b2calib.io.SkimFile`), the
        branches found here taken from here, the others read and kept (within the budget).
        Without the file's identity nothing is kept or taken."""
        if ident is None:
            return f.arrays(branches, start, stop)
        paths = {b: self._path(ident, tree, b, start, stop) for b in branches}
        found = {b: _load(p) for b, p in paths.items()}
        missing = [b for b, a in found.items() if a is None]
        if missing:
            read = f.arrays(missing, start, stop)
            for b in missing:
                found[b] = read[b]
                if self.written < self.max_bytes:
                    self.written += _store(paths[b], read[b])
        contents = [ak.to_layout(found[b]) for b in branches]
        return ak.Array(ak.contents.RecordArray(contents, branches, length=stop - start))


def _store(path: Path, array: ak.Array) -> int:
    """Write one branch's decoded array to ``path`` (atomically); return the bytes written (0
    when it could not be written: the cache is an optimisation, a full disk is no error)."""
    form, length, buffers = ak.to_buffers(array)
    header: dict[str, Any] = {"form": form.to_json(), "length": length, "buffers": []}
    blobs = []
    offset = 0
    for key, buf in buffers.items():
        a = np.ascontiguousarray(buf)
        header["buffers"].append([key, a.dtype.str, int(a.size), offset])
        blobs.append(a)
        offset += -(-a.nbytes // _ALIGN) * _ALIGN
    head = json.dumps(header).encode()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        with open(tmp, "wb") as fh:
            fh.write(_MAGIC)
            fh.write(len(head).to_bytes(8, "little"))
            fh.write(head)
            fh.write(b"\0" * (-fh.tell() % _ALIGN))
            base = fh.tell()
            for (_, _, _, at), a in zip(header["buffers"], blobs, strict=True):
                fh.seek(base + at)
                fh.write(a.data)  # the buffer itself, not a copy of it
            fh.truncate(base + offset)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return 0
    return base + offset


def _load(path: Path) -> ak.Array | None:
    """A branch written by :func:`_store`, or None when there is none (or it is unreadable:
    the branch is read from its file again)."""
    try:
        with open(path, "rb") as fh:
            # mapped, not read: the arrays are views of the page cache's pages, copied only
            # where written (a private mapping; an entry is never changed in place, only
            # replaced or removed, which leaves a mapping intact). Reading the bytes into
            # new memory cost as much CPU as the collectors' use of them (issue 20).
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
    except (OSError, ValueError):  # gone, unreadable, or empty
        return None
    data = np.frombuffer(mapped, dtype=np.uint8)
    if bytes(data[: len(_MAGIC)]) != _MAGIC:
        return None
    n = int.from_bytes(bytes(data[len(_MAGIC) : len(_MAGIC) + 8]), "little")
    start = len(_MAGIC) + 8
    try:
        header = json.loads(bytes(data[start : start + n]))
    except ValueError:
        return None
    base = start + n + (-(start + n) % _ALIGN)
    buffers = {}
    for key, dtype, size, at in header["buffers"]:
        dt = np.dtype(dtype)
        lo = base + at
        if lo + size * dt.itemsize > len(data):
            return None
        buffers[key] = data[lo : lo + size * dt.itemsize].view(dt)
    return ak.from_buffers(ak.forms.from_json(header["form"]), header["length"], buffers)
