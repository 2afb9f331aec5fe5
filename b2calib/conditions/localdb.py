"""basf2 local database: a ``database.txt`` index plus payload files beside it.

Each line is ``dbstore/<name> <revision> <firstExp>,<firstRun>,<finalExp>,<finalRun>``;
``#`` starts a comment; the payload of a line is ``dbstore_<name>_rev_<revision>.root`` in the
same folder. IoV bounds are inclusive and -1 means open.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from b2calib.conditions.iov import IoV
from b2calib.conditions.names import check_payload_name
from b2calib.conditions.payload import Payload
from b2calib.exceptions import ConfigError, PayloadError

__all__ = ["LocalDatabase", "LocalDbEntry"]

_LINE = re.compile(
    r"^dbstore/(?P<name>\S+)\s+(?P<rev>\d+)\s+"
    r"(?P<e1>-?\d+),(?P<r1>-?\d+),(?P<e2>-?\d+),(?P<r2>-?\d+)\s*$",
    re.ASCII,
)


@dataclass(frozen=True)
class LocalDbEntry:
    """One line of ``database.txt``: a payload revision and its interval of validity."""

    name: str
    revision: int
    iov: IoV

    @property
    def filename(self) -> str:
        """File name of the payload beside ``database.txt``."""
        return f"dbstore_{self.name}_rev_{self.revision}.root"

    def contains(self, exp: int, run: int) -> bool:
        """Whether (exp, run) lies in this entry's IoV (inclusive, -1 open)."""
        return self.iov.contains(exp, run)

    def line(self) -> str:
        """The ``database.txt`` line of this entry."""
        return f"dbstore/{self.name} {self.revision} {self.iov}"


class LocalDatabase:
    """Read and write a basf2 local database folder.

    Parameters
    ----------
    folder
        The folder holding ``database.txt`` (created on the first write).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.index = self.folder / "database.txt"

    def entries(self) -> list[LocalDbEntry]:
        """All entries, in file order.

        A line that is not an entry, names a payload basf2 could not store or gives a wrong IoV,
        and a ``database.txt`` that cannot be read or is not UTF-8 text raise
        :class:`PayloadError` naming the file (and the line).
        """
        if not self.index.exists():
            return []
        out = []
        for n, raw in enumerate(self._text().splitlines(), start=1):
            text = raw.split("#", 1)[0].strip()
            if not text:
                continue
            m = _LINE.match(text)
            if m is None:
                raise PayloadError(f"{self.index}:{n}: not a database.txt line: {raw!r}")
            try:
                name = check_payload_name(m["name"])
                iov = IoV(int(m["e1"]), int(m["r1"]), int(m["e2"]), int(m["r2"]))
            except (ConfigError, PayloadError) as err:
                raise PayloadError(f"{self.index}:{n}: {err}") from None
            out.append(LocalDbEntry(name, int(m["rev"]), iov))
        return out

    def _text(self) -> str:
        """The text of ``database.txt``."""
        try:
            data = self.index.read_bytes()
        except OSError as err:
            raise PayloadError(
                f"{self.index}: cannot read ({err.strerror or type(err).__name__})"
            ) from err
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data[: err.start].count(b"\n") + 1
            raise PayloadError(
                f"{self.index}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); "
                "a database.txt holds lines 'dbstore/<name> <revision> <iov>'"
            ) from None

    def add(self, payload: Payload, iov: IoV | tuple[int, int, int, int]) -> LocalDbEntry:
        """Write ``payload`` as the next revision of its name, valid for ``iov``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        revs = [e.revision for e in self.entries() if e.name == payload.name]
        iov = iov if isinstance(iov, IoV) else IoV(*iov)
        entry = LocalDbEntry(payload.name, max(revs, default=0) + 1, iov)
        payload.write(self.folder / entry.filename)
        self._append([entry])
        return entry

    def add_files(self, entries: list[tuple[LocalDbEntry, bytes]]) -> None:
        """Add stored payload files (bytes as they are, so checksums are kept) and their lines.

        A revision already present with different bytes is an error: a revision names one
        immutable payload.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        for entry, data in entries:
            path = self.folder / entry.filename
            if path.exists() and path.read_bytes() != data:
                raise PayloadError(f"{path}: exists with different content; choose an empty folder")
            if not path.exists():
                tmp = path.with_name(path.name + ".part")
                tmp.write_bytes(data)
                os.replace(tmp, path)
        self._append([e for e, _ in entries])

    def _append(self, entries: list[LocalDbEntry]) -> None:
        with self.index.open("a") as f:
            f.writelines(e.line() + "\n" for e in entries)

    def read(self, entry: LocalDbEntry) -> Payload:
        """The payload of an entry."""
        return Payload.read(self.folder / entry.filename)

    def find(self, name: str, exp: int, run: int) -> LocalDbEntry:
        """The entry of payload ``name`` valid for (exp, run); the last matching line wins, as
        in basf2."""
        hits = [e for e in self.entries() if e.name == name and e.contains(exp, run)]
        if not hits:
            raise PayloadError(f"{self.index}: no payload {name!r} valid for run ({exp}, {run})")
        return hits[-1]

    def lookup(self, name: str, exp: int, run: int, time: int | None = None) -> Payload:
        """The payload ``name`` valid for (exp, run); the last matching line wins, as in basf2.

        ``time`` (UNIX nanoseconds, as ``EventMetaData_m_time``) picks, in a time-dependent
        payload (:mod:`b2calib.conditions.eventdep`), the constants of the interval holding it.
        Without a time, a time-dependent payload raises
        :class:`~b2calib.exceptions.TimeDependentPayloadError`; ``read(find(...))`` gives the
        payload as stored.
        """
        from b2calib.conditions import eventdep

        entry = self.find(name, exp, run)
        payload = self.read(entry)
        if not eventdep.is_time_dependent(payload):
            return payload
        if time is None:
            raise eventdep.run_level_error(
                payload,
                exp=exp,
                run=run,
                source=f"local database {self.index}",
                revision=entry.revision,
            )
        return eventdep.at_time(payload, time)
