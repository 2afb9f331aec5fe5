"""Per-branch and per-object size of skim files, like the cDST size table of the 2019 seed.

The report also reads every basket of the event tree, to say which cannot be decompressed, and
compares the file with its catalogue entry where it has one.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import uproot

from b2calib.exceptions import ConfigError, FileFormatError
from b2calib.io import (
    TREE_NAME,
    FileCatalogue,
    check_root_file,
    find_catalogue,
    verify_file,
)

__all__ = ["BranchSize", "SizeReport", "size_report"]


@dataclass(frozen=True)
class BranchSize:
    """Bytes of one branch (or of one basf2 object's branches)."""

    name: str
    compressed: int
    uncompressed: int


def object_of(branch: str, collections: set[str]) -> str:
    """basf2 object a branch belongs to: ``nECLCalDigits`` and ``ECLCalDigits_m_Energy`` both
    belong to ``ECLCalDigits``."""
    if branch.startswith("n") and branch[1:] in collections:
        return branch[1:]
    return branch.split("_", 1)[0]


@dataclass
class SizeReport:
    """Sizes of the event tree of one file.

    ``problems`` are one line each: a basket that cannot be decompressed (its branch, number,
    entries and place in the file), a size or checksum that is not what the file catalogue
    recorded. The sizes come from the tree's own records and are reported all the same.
    """

    path: str
    file_bytes: int
    n_events: int
    branches: list[BranchSize]
    problems: list[str] = field(default_factory=list)

    def by_object(self) -> list[BranchSize]:
        """Sizes summed per basf2 object, largest first."""
        collections = {b.name[1:] for b in self.branches if b.name.startswith("n")}
        comp: dict[str, int] = defaultdict(int)
        unc: dict[str, int] = defaultdict(int)
        for b in self.branches:
            o = object_of(b.name, collections)
            comp[o] += b.compressed
            unc[o] += b.uncompressed
        rows = [BranchSize(o, comp[o], unc[o]) for o in comp]
        return sorted(rows, key=lambda r: -r.compressed)

    def format(self, by: str = "object") -> str:
        """Text table: bytes on disk, share of the file, bytes per event, compression ratio."""
        rows = (
            self.by_object()
            if by == "object"
            else sorted(self.branches, key=lambda r: -r.compressed)
        )
        per_evt = self.file_bytes / self.n_events if self.n_events else 0.0
        lines = [
            f"{self.path}",
            f"  {self.file_bytes / 1e6:.2f} MB / {self.n_events} events"
            f" = {per_evt / 1e3:.2f} kB/event",
            f"  {by:<40s} {'on disk':>10s} {'share':>6s} {'B/event':>9s} {'ratio':>6s}",
        ]
        for r in rows:
            share = 100.0 * r.compressed / self.file_bytes if self.file_bytes else 0.0
            be = r.compressed / self.n_events if self.n_events else 0.0
            ratio = r.uncompressed / r.compressed if r.compressed else 0.0
            lines.append(
                f"  {r.name:<40s} {r.compressed / 1e3:8.1f}kB {share:5.1f}% {be:9.1f} {ratio:6.2f}"
            )
        return "\n".join(lines)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _basket_problems(branch: Any) -> list[str]:
    """Every basket of a branch that cannot be read and decompressed, one line each."""
    out = []
    for i in range(branch.num_baskets):
        try:
            branch.basket(i)
        except Exception as err:  # uproot and the codecs raise many types for damaged data
            start, stop = (int(x) for x in branch.basket_entry_start_stop(i))
            where = ""
            if i < branch._num_normal_baskets:
                seek = int(branch.member("fBasketSeek")[i])
                where = f", {int(branch.member('fBasketBytes')[i])} bytes at byte {seek}"
            out.append(
                f"branch {branch.name} basket {i} (entries {start}-{stop}{where}) cannot be "
                f"decompressed ({_first_line(err)})"
            )
    return out


def _catalogue_problem(path: str) -> str | None:
    """The file's size or checksum not being what its catalogue recorded (None: it is, or no
    catalogue lists the file)."""
    folder = find_catalogue(path)
    if folder is None:
        return None
    try:
        catalogue = FileCatalogue.load(folder)
    except ConfigError as err:
        return str(err)
    entry = catalogue.entry(path)
    if entry is None:
        return None
    try:
        verify_file(path, entry, str(catalogue.path))
    except FileFormatError as err:
        return f"{err.detail} [{err.reason}]"
    return None


def size_report(path: str | os.PathLike[str], *, check: bool = True) -> SizeReport:
    """Measure the branches of the event tree of a skim file.

    With ``check`` (the default) every basket is read and decompressed once, and the file is
    compared with its catalogue entry: what fails is in :attr:`SizeReport.problems`.

    Raises
    ------
    FileFormatError
        When the file is not ROOT, is truncated, or has no event tree.
    """
    path = str(path)
    size = check_root_file(path)
    problems: list[str] = []
    try:
        with uproot.open(path) as f:
            if TREE_NAME not in f:
                raise FileFormatError(path, "missing-tree", f"no TTree {TREE_NAME!r}")
            tree = f[TREE_NAME]
            branches = [
                BranchSize(b.name, int(b.compressed_bytes), int(b.uncompressed_bytes))
                for b in tree.branches
            ]
            n = int(tree.num_entries)
            if check:
                for b in tree.branches:
                    problems += _basket_problems(b)
    except FileFormatError:
        raise
    except Exception as err:
        raise FileFormatError(
            path, "unreadable", f"cannot read the event tree ({_first_line(err)})"
        ) from err
    if check:
        mismatch = _catalogue_problem(path)
        if mismatch is not None:
            problems.insert(0, mismatch)
    return SizeReport(path, size, n, branches, problems)


def __dir__() -> list[str]:
    return __all__
