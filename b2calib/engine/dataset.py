"""Datasets: the skim files an event loop runs over, selected by run properties or by paths."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from b2calib.exceptions import B2CalibError, ConfigError, FileFormatError
from b2calib.io import find_skim_files, read_metadata
from b2calib.runs import RunRegistry

__all__ = ["Dataset", "FileRef", "SkippedFile"]


@dataclass(frozen=True)
class FileRef:
    """One skim file of a dataset, with what its metadata says."""

    path: str
    exp: int
    run: int
    skim: str
    n_events: int


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of an event loop, and why.

    ``reason`` is one of ``not-root``, ``truncated``, ``missing-tree``, ``missing-metadata``,
    ``unreadable``, ``missing-branch``, ``wrong-type``.
    """

    path: str
    reason: str
    message: str


def _skipped(path: str, err: B2CalibError) -> SkippedFile:
    reason = err.reason if isinstance(err, FileFormatError) else "missing-branch"
    return SkippedFile(str(path), reason, str(err))


@dataclass
class Dataset:
    """An ordered set of skim files (sorted by experiment, run, skim, path).

    Files whose metadata cannot be read are kept in :attr:`problems`; the event loop applies its
    bad-file policy to them (skip and report, or stop).
    """

    files: list[FileRef] = field(default_factory=list)
    problems: list[SkippedFile] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.files = sorted(self.files, key=lambda f: (f.exp, f.run, f.skim, f.path))

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[FileRef]:
        return iter(self.files)

    @property
    def runs(self) -> list[tuple[int, int]]:
        """(exp, run) pairs present, sorted."""
        return sorted({(f.exp, f.run) for f in self.files})

    @property
    def n_events(self) -> int:
        """Events in all files, from their metadata."""
        return sum(f.n_events for f in self.files)

    @classmethod
    def from_files(cls, paths: Iterable[str | os.PathLike[str]]) -> Dataset:
        """A dataset of the given files (their metadata is read; unreadable ones are problems)."""
        files, problems = [], []
        for p in paths:
            try:
                m = read_metadata(p)
            except B2CalibError as err:
                problems.append(_skipped(str(p), err))
                continue
            files.append(FileRef(str(p), m.exp, m.run, m.skim, m.n_events))
        return cls(files, problems)

    @classmethod
    def from_paths(cls, *patterns: str | os.PathLike[str]) -> Dataset:
        """Files given as paths, glob patterns (``**`` allowed) or folders (all skims below)."""
        paths: list[str] = []
        for pat in patterns:
            p = Path(pat)
            if p.is_dir():
                paths += [str(f) for f in find_skim_files(p)]
                continue
            matches = sorted(glob.glob(str(pat), recursive=True))
            if not matches and not p.exists():
                raise ConfigError(f"no file matches {str(pat)!r}")
            paths += matches or [str(p)]
        return cls.from_files(dict.fromkeys(paths))

    @classmethod
    def select(
        cls,
        folder: str | os.PathLike[str],
        *,
        registry: RunRegistry | None = None,
        exp: int | None = None,
        runs: Sequence[int] | range | None = None,
        skims: str | Sequence[str] | None = None,
        run_type: str | Sequence[str] | None = None,
        beam_energy: str | Sequence[str] | None = None,
        magnet_on: bool | None = None,
        dq: str | None = None,
        within: Dataset | None = None,
    ) -> Dataset:
        """Skim files below ``folder`` of the runs the registry selects.

        The registry defaults to ``folder/runs.json``. Run filters are those of
        :meth:`b2calib.runs.RunRegistry.select`; ``skims`` keeps only those skims. ``within``
        (every file of ``folder``, read once) saves reading the files' metadata again when
        selecting several times from one folder.
        """
        folder = Path(folder)
        if registry is None:
            registry = RunRegistry.load(folder / "runs.json")
        keep = {
            r.key
            for r in registry.select(
                exp=exp,
                runs=runs,
                run_type=run_type,
                beam_energy=beam_energy,
                magnet_on=magnet_on,
                dq=dq,
            )
        }
        wanted = {skims} if isinstance(skims, str) else set(skims) if skims is not None else None
        ds = within if within is not None else cls.from_files(find_skim_files(folder))
        files = [
            f for f in ds.files if (f.exp, f.run) in keep and (wanted is None or f.skim in wanted)
        ]
        return cls(files, ds.problems)
