"""Reading cDST-like skim files: checks, metadata and columnar reads with clear errors.

A skim file is a ROOT file with a TTree ``tree`` (one entry per event, branches named
``<basf2 object>_<member>`` with a counter ``n<object>`` for per-event collections) and a
``TObjString`` ``FileMetaData`` holding a JSON object (exp, run, skim, global tag, release,
event count, seed ...).

A file cannot carry its own checksum: as Belle II's file catalogue does, a
:class:`FileCatalogue` (``catalogue.json`` at the top of a data folder, written by whoever
writes the files) records each file's size and Adler-32 checksum, which a reader compares with
the file before trusting its bytes (:func:`verify_file`).
"""

from __future__ import annotations

import io
import json
import os
import re
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import numpy.typing as npt
import uproot

from b2calib.exceptions import ConfigError, FileFormatError, MissingBranchError

__all__ = [
    "CATALOGUE_NAME",
    "CatalogueEntry",
    "FileCatalogue",
    "FileMetadata",
    "SkimFile",
    "check_root_file",
    "file_checksum",
    "find_catalogue",
    "find_skim_files",
    "open_skim",
    "path_mismatch",
    "read_metadata",
    "verify_file",
    "write_root_bytes",
]

TREE_NAME = "tree"
METADATA_KEY = "FileMetaData"
#: The file catalogue of a data folder, beside its ``runs.json``.
CATALOGUE_NAME = "catalogue.json"
CATALOGUE_FORMAT = "b2calib-file-catalogue-1"
#: How many folders above a file its catalogue may be (``<folder>/e0012/r00001/<file>``: 3).
CATALOGUE_DEPTH = 3
_CHUNK = 8 << 20


def check_root_file(path: str | os.PathLike[str]) -> int:
    """Check that ``path`` is a complete ROOT file from its header; return its size in bytes.

    Raises
    ------
    FileFormatError
        ``not-root`` when the file does not start with the ROOT magic, ``truncated`` when it is
        shorter than the end offset its header records, ``unreadable`` when it cannot be opened.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            head = f.read(24)
    except OSError as err:
        raise FileFormatError(str(p), "unreadable", f"cannot read file ({err.strerror})") from err
    _check_header(head, size, str(p))
    return size


def write_root_bytes(fill: Callable[[Any], None], *, compression: Any) -> bytes:
    """The bytes of a ROOT file that ``fill`` writes into (an uproot directory opened by
    ``uproot.recreate``), made in memory: no temporary file (its folder, writes, reading back
    and removal took ~25 % of the CPU of writing a small diagnostics file). The file's own
    name, which ROOT files record, is uproot's ``dynamic.root``."""
    sink = _MemorySink()
    with uproot.recreate(sink, compression=compression) as f:
        fill(f)
    return sink.data


class _MemorySink(io.BytesIO):
    """A file in memory that keeps its bytes when uproot closes it."""

    data = b""

    def close(self) -> None:
        if not self.closed:
            self.data = self.getvalue()
        super().close()


def check_root_bytes(data: bytes, label: str) -> None:
    """:func:`check_root_file` for a file held in memory (``label`` names it in errors)."""
    _check_header(data[:24], len(data), label)


def _check_header(head: bytes, size: int, label: str) -> None:
    if len(head) < 4 or head[:4] != b"root":
        raise FileFormatError(label, "not-root", "not a ROOT file (no 'root' magic bytes)")
    if len(head) < 16:
        raise FileFormatError(label, "truncated", f"file is only {size} bytes, header incomplete")
    version = int.from_bytes(head[4:8], "big")
    end = int.from_bytes(head[12:20] if version >= 1_000_000 else head[12:16], "big")
    if size < end:
        raise FileFormatError(
            label, "truncated", f"file is truncated: {size} bytes on disk, header says {end}"
        )


@dataclass(frozen=True)
class FileMetadata:
    """What a skim file says about itself."""

    exp: int
    run: int
    skim: str
    n_events: int
    globaltag: str
    release: str
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str, path: str = "?") -> FileMetadata:
        """Parse the ``FileMetaData`` JSON string of a file."""
        try:
            d = json.loads(text)
            known = {
                k: d.pop(k) for k in ("exp", "run", "skim", "n_events", "globaltag", "release")
            }
        except (ValueError, KeyError) as err:
            raise FileFormatError(path, "missing-metadata", f"bad FileMetaData ({err})") from err
        seed = d.pop("seed", None)
        return cls(**known, seed=seed, extra=d)

    def to_json(self) -> str:
        """Serialise as the JSON string stored in the file."""
        d = {
            "exp": self.exp,
            "run": self.run,
            "skim": self.skim,
            "n_events": self.n_events,
            "globaltag": self.globaltag,
            "release": self.release,
            "seed": self.seed,
        }
        d.update(self.extra)
        return json.dumps(d, sort_keys=True)


class SkimFile:
    """An open skim file. Use :func:`open_skim` (also a context manager)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._names: frozenset[str] | None = None
        check_root_file(self.path)
        try:
            # no object or array cache: the engine keeps files open from one work item to the
            # next (b2calib.engine._files), and they must not hold what was read through them
            self._file = uproot.open(self.path, object_cache=None, array_cache=None)
        except Exception as err:  # uproot raises many types for damaged files
            raise FileFormatError(self.path, "unreadable", f"cannot open ({err})") from err
        try:
            if TREE_NAME not in self._file:
                raise FileFormatError(
                    self.path,
                    "missing-tree",
                    f"no TTree {TREE_NAME!r}; keys are {self._file.keys(cycle=False)}",
                )
            tree = self._file[TREE_NAME]
            if not isinstance(tree, uproot.TTree):
                raise FileFormatError(self.path, "wrong-type", f"{TREE_NAME!r} is not a TTree")
            self.tree = tree
            if METADATA_KEY not in self._file:
                raise FileFormatError(self.path, "missing-metadata", f"no {METADATA_KEY} object")
            self.metadata = FileMetadata.from_json(str(self._file[METADATA_KEY]), self.path)
        except FileFormatError:
            self._file.close()
            raise
        except Exception as err:
            self._file.close()
            raise FileFormatError(self.path, "unreadable", f"damaged file ({err})") from err

    @property
    def branches(self) -> list[str]:
        """Names of all branches of the event tree."""
        return list(self.tree.keys())

    @property
    def num_entries(self) -> int:
        """Number of events."""
        return int(self.tree.num_entries)

    def check_branches(self, branches: Sequence[str]) -> None:
        """Raise :class:`MissingBranchError` for the first branch not in the tree."""
        if self._names is None:  # once per open file: the engine reads many items through it
            self._names = frozenset(self.tree.keys())
        have = self._names
        for b in branches:
            if b not in have:
                raise MissingBranchError(self.path, b, have)

    def arrays(
        self,
        branches: Sequence[str],
        entry_start: int | None = None,
        entry_stop: int | None = None,
    ) -> ak.Array:
        """Read ``branches`` for an entry range as an awkward record array: what uproot's
        ``TTree.arrays`` gives, read faster for numeric branches (:func:`_read_numeric`)."""
        self.check_branches(branches)
        try:
            n = self.num_entries
            start = 0 if entry_start is None else min(max(int(entry_start), 0), n)
            stop = n if entry_stop is None else min(max(int(entry_stop), start), n)
            backwards = any(e is not None and e < 0 for e in (entry_start, entry_stop))
            fast = {
                b: None if backwards else _read_numeric(self.tree[b], start, stop) for b in branches
            }
            slow = [b for b, layout in fast.items() if layout is None]
            if len(slow) == len(fast):
                return self.tree.arrays(
                    list(branches), entry_start=entry_start, entry_stop=entry_stop, library="ak"
                )
            if slow:
                rest = self.tree.arrays(slow, entry_start=start, entry_stop=stop, library="ak")
                fast.update({b: rest[b].layout for b in slow})
            contents = [fast[b] for b in branches]
            return ak.Array(ak.contents.RecordArray(contents, list(branches), length=stop - start))
        except Exception as err:
            raise FileFormatError(
                self.path, "unreadable", f"cannot read branches {list(branches)} ({err})"
            ) from err

    def close(self) -> None:
        """Close the underlying file."""
        self._file.close()

    def __enter__(self) -> SkimFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_numeric(branch: Any, start: int, stop: int) -> ak.contents.Content | None:
    """Entries ``start:stop`` of a numeric branch, flat (``int32``) or jagged (``var *
    int16``), as the awkward layout uproot's ``TTree.arrays`` gives, but read in one pass per
    basket: its decompressed bytes are copied (and byte swapped) straight into the result.
    uproot concatenates the baskets' arrays, then swaps and copies again: for the PXD digits
    that was a third of the read (bench/RESULTS_pxd_masks.md). None for any other branch (a
    header per entry, a fixed-size array, a conversion): uproot reads those.

    Raises
    ------
    ValueError
        For a basket whose entries or byte offsets contradict the branch's basket index.
    """
    interp = branch.interpretation
    jagged = isinstance(interp, uproot.AsJagged)
    inner = interp.content if jagged else interp
    if jagged and interp.header_bytes != 0:
        return None
    if not isinstance(inner, uproot.AsDtype) or inner.from_dtype.shape != ():
        return None
    source, native = inner.from_dtype, inner.to_dtype
    if native != source.newbyteorder("=") or native.kind not in "biuf" or start >= stop:
        return None
    size = source.itemsize
    edges = np.asarray(branch.entry_offsets, dtype=np.int64)
    first = int(np.searchsorted(edges, start, side="right")) - 1
    last = int(np.searchsorted(edges, stop, side="left"))
    # room for the baskets' whole uncompressed bytes (TKey headers and entry offsets too): an
    # upper bound read from the keys alone; pages past the content are never touched
    bound = sum(int(branch.basket_uncompressed_bytes(i)) for i in range(first, last))
    out = np.empty(bound // size + 1, dtype=native)
    counts: list[npt.NDArray[np.int64]] = []
    k = 0
    for i in range(first, last):
        basket = branch.basket(i)
        b0, b1 = int(edges[i]), int(edges[i + 1])
        if basket.num_entries != b1 - b0:
            raise ValueError(f"basket {i} of {branch.name} has {basket.num_entries} entries")
        lo, hi = max(start, b0) - b0, min(stop, b1) - b0
        data = basket.data
        if jagged:
            offsets = np.asarray(basket.byte_offsets, dtype=np.int64)
            step = np.diff(offsets[lo : hi + 1])
            if (
                len(offsets) != b1 - b0 + 1
                or offsets[-1] > len(data)
                or np.any(step < 0)
                or np.any(step % size)
            ):
                raise ValueError(f"basket {i} of {branch.name} has bad byte offsets")
            piece = data[offsets[lo] : offsets[hi]]
            counts.append(step // size)
        else:
            if len(data) < hi * size:
                raise ValueError(f"basket {i} of {branch.name} is short")
            piece = data[lo * size : hi * size]
        m = len(piece) // size
        if k + m > len(out):
            raise ValueError(f"basket {i} of {branch.name} is larger than its key says")
        # one basket at a time: its bytes are copied (and swapped) and then let go
        np.copyto(out[k : k + m], piece.view(source))
        k += m
    out = out[:k]
    content = ak.contents.NumpyArray(out)
    if not jagged:
        return content
    offsets = np.zeros(stop - start + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=offsets[1:])
    return ak.contents.ListOffsetArray(ak.index.Index64(offsets), content)


def file_checksum(path: str | os.PathLike[str]) -> str:
    """The Adler-32 checksum of a file, as 8 hex digits (what Belle II's file catalogue and
    its transfers record and check)."""
    value = 1
    try:
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(min(_CHUNK, max(os.fstat(f.fileno()).st_size, 1)))
            view = memoryview(buf)
            while n := f.readinto(buf):
                value = zlib.adler32(view[:n], value)
    except OSError as err:
        raise FileFormatError(
            str(path), "unreadable", f"cannot read file ({err.strerror})"
        ) from err
    return f"{value & 0xFFFFFFFF:08x}"


@dataclass(frozen=True)
class CatalogueEntry:
    """What the catalogue recorded about one file when it was written."""

    size: int
    adler32: str


class FileCatalogue(Mapping[str, CatalogueEntry]):
    """The files of a data folder with the size and Adler-32 checksum recorded when each was
    written, keyed by their path relative to the folder (``e0012/r00001/cdst_...root``).

    Stored as ``<folder>/catalogue.json``; a mapping of relative path to
    :class:`CatalogueEntry`.
    """

    def __init__(
        self, folder: str | os.PathLike[str], entries: Mapping[str, CatalogueEntry] | None = None
    ) -> None:
        self.folder = Path(folder)
        self._entries: dict[str, CatalogueEntry] = dict(entries or {})

    def __getitem__(self, key: str) -> CatalogueEntry:
        return self._entries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def path(self) -> Path:
        """The catalogue's file."""
        return self.folder / CATALOGUE_NAME

    def key(self, path: str | os.PathLike[str]) -> str | None:
        """``path`` relative to the folder (None when it is not below it)."""
        p, folder = Path(os.path.abspath(path)), Path(os.path.abspath(self.folder))
        try:
            return p.relative_to(folder).as_posix()
        except ValueError:
            return None

    def entry(self, path: str | os.PathLike[str]) -> CatalogueEntry | None:
        """The entry of a file (None when the catalogue does not list it)."""
        key = self.key(path)
        return None if key is None else self._entries.get(key)

    def record(self, path: str | os.PathLike[str], checksum: str | None = None) -> CatalogueEntry:
        """Record a file as it is now (its checksum computed unless given)."""
        key = self.key(path)
        if key is None:
            raise ConfigError(f"{path} is not below the catalogue's folder {self.folder}")
        entry = CatalogueEntry(os.stat(path).st_size, checksum or file_checksum(path))
        self._entries[key] = entry
        return entry

    def save(self) -> None:
        """Write ``catalogue.json`` (atomically)."""
        data = {
            "format": CATALOGUE_FORMAT,
            "checksum": "adler32",
            "files": {
                k: {"size": e.size, "adler32": e.adler32} for k, e in sorted(self._entries.items())
            },
        }
        tmp = self.path.with_name(self.path.name + ".part")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> FileCatalogue:
        """Read ``<folder>/catalogue.json``; :class:`ConfigError` (one line) when it is not a
        file catalogue."""
        folder = Path(folder)
        path = folder / CATALOGUE_NAME
        try:
            data = json.loads(path.read_text())
            if data.get("checksum", "adler32") != "adler32":
                raise ValueError(f"unknown checksum {data['checksum']!r}")
            entries = {
                str(k): CatalogueEntry(int(v["size"]), _hex8(v["adler32"]))
                for k, v in data["files"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            detail = err.strerror if isinstance(err, OSError) else str(err)
            raise ConfigError(f"{path}: not a file catalogue ({detail})") from err
        return cls(folder, entries)


def _hex8(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{8}", value):
        raise ValueError(f"adler32 must be 8 hex digits, not {value!r}")
    return value


def find_catalogue(path: str | os.PathLike[str]) -> Path | None:
    """The folder whose ``catalogue.json`` is the catalogue of a file: the nearest of the
    :data:`CATALOGUE_DEPTH` folders above it that has one (None: none has)."""
    p = Path(os.path.abspath(path))
    for folder in p.parents[:CATALOGUE_DEPTH]:
        if (folder / CATALOGUE_NAME).is_file():
            return folder
    return None


def verify_file(
    path: str | os.PathLike[str], entry: CatalogueEntry, catalogue: str, checksum: str | None = None
) -> None:
    """Compare a file with its catalogue entry (its checksum computed unless given).

    Raises
    ------
    FileFormatError
        ``checksum``: the size or the checksum differs from what ``catalogue`` recorded.
    """
    size = os.stat(path).st_size
    if size != entry.size:
        raise FileFormatError(
            str(path),
            "checksum",
            f"{size} bytes on disk, the catalogue {catalogue} recorded {entry.size}: "
            "the file changed after it was written",
        )
    actual = checksum or file_checksum(path)
    if actual != entry.adler32:
        raise FileFormatError(
            str(path),
            "checksum",
            f"adler32 is {actual}, the catalogue {catalogue} recorded {entry.adler32}: "
            "the file is corrupt",
        )


_NAME = re.compile(r"^cdst_(?P<skim>.+)_e(?P<exp>\d+)_r(?P<run>\d+)(?:\b|_|\.)")


def path_mismatch(path: str | os.PathLike[str], meta: FileMetadata) -> str | None:
    """What a file's path says that its metadata contradicts (None: nothing).

    The path is read as the simulator and Belle II lay data out: an ``e<exp>`` and an
    ``r<run>`` folder above the file, a name ``cdst_<skim>_e<exp>_r<run>...``; parts of the path
    that do not follow that layout say nothing.
    """
    p = Path(path)
    said: list[str] = []
    run_dir, exp_dir = p.parent.name, p.parent.parent.name
    if re.fullmatch(r"r\d+", run_dir) and int(run_dir[1:]) != meta.run:
        said.append(f"folder {run_dir} (run {int(run_dir[1:])})")
    if re.fullmatch(r"e\d+", exp_dir) and int(exp_dir[1:]) != meta.exp:
        said.append(f"folder {exp_dir} (experiment {int(exp_dir[1:])})")
    m = _NAME.match(p.name)
    if m is not None and (int(m["exp"]), int(m["run"]), m["skim"]) != (
        meta.exp,
        meta.run,
        meta.skim,
    ):
        said.append(f"name (exp {int(m['exp'])}, run {int(m['run'])}, skim {m['skim']})")
    if not said:
        return None
    return (
        f"path says {', '.join(said)}, its metadata says exp {meta.exp}, run {meta.run}, "
        f"skim {meta.skim}"
    )


def find_skim_files(folder: str | os.PathLike[str]) -> list[Path]:
    """All skim files (``cdst_*.root``) below ``folder``, sorted."""
    return sorted(Path(folder).rglob("cdst_*.root"))


def open_skim(path: str | os.PathLike[str]) -> SkimFile:
    """Open a skim file after checking it is a complete ROOT file with tree and metadata."""
    return SkimFile(path)


def read_metadata(path: str | os.PathLike[str]) -> FileMetadata:
    """Read only the ``FileMetaData`` of a skim file."""
    with open_skim(path) as f:
        return f.metadata


def __dir__() -> list[str]:
    return __all__
