"""Reading cDST-like skim files: checks, metadata and columnar reads with clear errors.

A skim file is a ROOT file with a TTree ``tree`` (one entry per event, branches named
``<basf2 object>_<member>`` with a counter ``n<object>`` for per-event collections) and a
``TObjString`` ``FileMetaData`` holding a JSON object (exp, run, skim, global tag, release,
event count, seed ...).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import uproot

from b2calib.exceptions import FileFormatError, MissingBranchError

__all__ = [
    "FileMetadata",
    "SkimFile",
    "check_root_file",
    "find_skim_files",
    "open_skim",
    "read_metadata",
]

TREE_NAME = "tree"
METADATA_KEY = "FileMetaData"


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
        check_root_file(self.path)
        try:
            self._file = uproot.open(self.path)
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
        have = set(self.tree.keys())
        for b in branches:
            if b not in have:
                raise MissingBranchError(self.path, b, have)

    def arrays(
        self,
        branches: Sequence[str],
        entry_start: int | None = None,
        entry_stop: int | None = None,
    ) -> ak.Array:
        """Read ``branches`` for an entry range as an awkward record array."""
        self.check_branches(branches)
        try:
            return self.tree.arrays(
                list(branches), entry_start=entry_start, entry_stop=entry_stop, library="ak"
            )
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
