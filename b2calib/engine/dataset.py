"""Datasets: the skim files an event loop runs over, selected by run properties or by paths.

Where the metadata already tells, a dataset finds the files that contradict their paths or the
run registry (:data:`INCONSISTENT`): they are its :attr:`Dataset.problems`, to which the event
loop applies its bad-file policy.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from b2calib.exceptions import B2CalibError, ConfigError, FileFormatError, InconsistentDataError
from b2calib.io import FileMetadata, find_skim_files, path_mismatch, read_metadata
from b2calib.runs import RunRegistry

__all__ = ["INCONSISTENT", "Dataset", "FileRef", "SkippedFile"]

#: Reasons of files that are readable but inconsistent: the event loop stops on them unless
#: told to skip them (``on_bad_file="skip"``).
INCONSISTENT = frozenset(
    {"duplicate-events", "path-mismatch", "not-in-registry", "registry-duplicate", "non-finite"}
)


@dataclass(frozen=True)
class FileRef:
    """One skim file of a dataset, with what its metadata says."""

    path: str
    exp: int
    run: int
    skim: str
    n_events: int

    @property
    def key(self) -> tuple[int, int]:
        """(exp, run)."""
        return (self.exp, self.run)


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of an event loop, and why.

    ``reason`` is one of ``not-root``, ``truncated``, ``missing-tree``, ``missing-metadata``,
    ``unreadable``, ``missing-branch``, ``wrong-type``, ``checksum`` (the file is not what its
    catalogue recorded), ``bad-values`` (a collector found values no sound file holds,
    :class:`~b2calib.exceptions.BadValueError`), or, for readable files that contradict each
    other, their paths or the run registry (:data:`INCONSISTENT`), ``duplicate-events``,
    ``path-mismatch``, ``not-in-registry``, ``registry-duplicate``, ``non-finite``.
    ``message`` is one line naming the file (and every other file involved, ``paths``);
    ``run`` and ``skim`` are the run and skim the file's metadata names, where known.
    """

    path: str
    reason: str
    message: str
    paths: tuple[str, ...] = ()
    run: tuple[int, int] | None = None
    skim: str | None = None

    @property
    def inconsistent(self) -> bool:
        """Whether the file is readable but inconsistent (:data:`INCONSISTENT`)."""
        return self.reason in INCONSISTENT

    def error(self) -> FileFormatError:
        """The error to stop a job with: the same one line."""
        if self.inconsistent:
            return InconsistentDataError(
                self.paths or (self.path,), self.reason, self.message, message=self.message
            )
        return FileFormatError(self.path, self.reason, self.message, message=self.message)


def _skipped(path: str, err: B2CalibError) -> SkippedFile:
    reason = err.reason if isinstance(err, FileFormatError) else "missing-branch"
    return SkippedFile(str(path), reason, str(err))


def _inconsistent(
    paths: Sequence[str],
    reason: str,
    detail: str,
    run: tuple[int, int] | None = None,
    skim: str | None = None,
) -> list[SkippedFile]:
    """One problem per file of an inconsistency, each naming every file involved."""
    message = str(InconsistentDataError(paths, reason, detail))
    return [SkippedFile(p, reason, message, tuple(paths), run, skim) for p in paths]


#: The metadata of the files read in this process, by file version (see :func:`_metadata`).
_METADATA: dict[tuple[str, int, int, int], FileMetadata] = {}


def _metadata(path: str | os.PathLike[str]) -> FileMetadata:
    """:func:`~b2calib.io.read_metadata`, once per file version (absolute path, size,
    modification time in ns, inode); a file that cannot be read is tried again each time."""
    try:
        st = os.stat(path)
    except OSError:
        return read_metadata(path)  # raises the error naming the file
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    found = _METADATA.get(key)
    if found is None:
        found = _METADATA[key] = read_metadata(path)
    return found


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
        """A dataset of the given files (their metadata is read; unreadable ones are problems,
        and so are files whose path names another run than their metadata).

        A file's metadata is read once per process and version of the file (its path, size,
        modification time and inode, as the engine's cache keys): planning the same folder
        again (a workflow asking each task whether its job completed) costs a ``stat`` per
        file."""
        files, problems = [], []
        for p in paths:
            try:
                m = _metadata(p)
            except B2CalibError as err:
                problems.append(_skipped(str(p), err))
                continue
            wrong = path_mismatch(p, m)
            if wrong is not None:
                problems += _inconsistent([str(p)], "path-mismatch", wrong, (m.exp, m.run), m.skim)
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

        Among the problems are, besides unreadable files, the files of the selection that
        contradict the registry: files of a run it does not list (``not-in-registry``, for the
        ``exp``, ``runs`` and ``skims`` asked for) or lists more than once
        (``registry-duplicate``), and files whose path names another run than their metadata
        (``path-mismatch``).
        """
        folder = Path(folder)
        if registry is None:
            registry = RunRegistry.load(folder / "runs.json", on_duplicate="drop")
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
        run_set = set(runs) if runs is not None else None

        def asked(key: tuple[int, int], skim: str | None) -> bool:
            """In the selection as far as the registry cannot tell (exp, runs, skims)."""
            return (
                (exp is None or key[0] == exp)
                and (run_set is None or key[1] in run_set)
                and (wanted is None or skim in wanted)
            )

        files = [
            f for f in ds.files if (f.exp, f.run) in keep and (wanted is None or f.skim in wanted)
        ]
        problems = [
            p
            for p in ds.problems
            if p.run is None or (p.run in keep and (wanted is None or p.skim in wanted))
        ]
        where = registry.source or folder / "runs.json"
        unlisted: dict[tuple[int, int], list[str]] = {}
        for f in ds.files:
            if f.key not in registry and asked(f.key, f.skim):
                unlisted.setdefault(f.key, []).append(f.path)
        for key, paths in sorted(unlisted.items()):
            times = registry.duplicates.get(key)
            if times:
                detail = f"{where} lists run ({key[0]}, {key[1]}) {times} times"
                problems += _inconsistent(paths, "registry-duplicate", detail, key)
            else:
                detail = f"run ({key[0]}, {key[1]}) is not in the run registry {where}"
                problems += _inconsistent(paths, "not-in-registry", detail, key)
        return cls(files, problems)
