"""The conditions database: payloads, global tags, IoVs, lookup and history.

Storage is the b2calib database (:mod:`b2calib.db`): an embedded SQLite file by default (WAL
journal, a busy timeout and ``BEGIN IMMEDIATE`` write transactions, so several processes can
write at once), or PostgreSQL for a shared server (``postgresql+psycopg://user@host/db``; writes
take a transaction-scoped advisory lock). Every public write is one transaction: it happens
completely or not at all. The schema is created and upgraded by Alembic on first use.

Payload files are stored in the database itself, with their MD5 checksum, and verified on every
read. Uploading a payload whose content is already stored under the same name returns the
existing revision, so re-running a calibration does not multiply payloads.

Publishing a global tag records its *manifest* in the history: a SHA-256 digest of every IoV
with its payload's name, revision, MD5 and the SHA-256 of its file, and one digest per payload
name. The database refuses to change a published tag, a stored payload or the history (the
migrations' triggers); :meth:`ConditionsDB.verify` checks what gets past it (the database's
superuser, the SQLite file's owner): every stored file against its checksum and every
PUBLISHED or INVALID tag against its manifest.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections import Counter
from collections.abc import Collection, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from b2calib.conditions import tables as s
from b2calib.conditions.browse import IovTable, StackEntry, TagSize, iov_table, stack_entries
from b2calib.conditions.iov import IoV, RunKey, uncovered
from b2calib.conditions.localdb import LocalDatabase, LocalDbEntry
from b2calib.conditions.names import check_globaltag_name
from b2calib.conditions.payload import Payload, bytes_md5, read_payload_file, verify_checksum
from b2calib.conditions.payloadtypes import check_payload
from b2calib.conditions.tagops import (
    Diff,
    IntArray,
    IovColumns,
    diff,
    layer,
    resolve_columns,
    run_keys,
)
from b2calib.db import Database, as_utc, history, now
from b2calib.exceptions import ConditionsError, PayloadError

if TYPE_CHECKING:
    from b2calib.conditions.runningupdate import RunningUpdate

__all__ = [
    "ConditionsDB",
    "GlobalTag",
    "HistoryEntry",
    "IovEntry",
    "PayloadFile",
    "PayloadInfo",
    "StackLookup",
    "Verification",
]

#: How many tags' IoVs a :class:`ConditionsDB` keeps for lookups (the least recently used go).
LOOKUP_CACHE_TAGS = 16

#: Version of the manifest a published tag records (its ``details["version"]`` in the history).
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class PayloadInfo:
    """A stored payload revision (without its content)."""

    id: int
    name: str
    revision: int
    checksum: str
    size: int
    created: datetime
    author: str
    provenance: dict[str, Any] = field(compare=False, hash=False, repr=False)

    def __str__(self) -> str:
        return f"{self.name} rev {self.revision}"


@dataclass(frozen=True)
class GlobalTag:
    """A global tag's record."""

    name: str
    type: str
    state: str
    description: str
    created: datetime
    modified: datetime
    author: str


@dataclass(frozen=True)
class IovEntry:
    """A payload revision valid for an IoV in a global tag."""

    globaltag: str
    payload: PayloadInfo
    iov: IoV

    @property
    def name(self) -> str:
        """The payload name."""
        return self.payload.name

    def __str__(self) -> str:
        return f"{self.payload} [{self.iov}] in {self.globaltag}"


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded change."""

    time: datetime
    author: str
    action: str
    globaltag: str | None
    details: dict[str, Any] = field(compare=False, hash=False)


@dataclass(frozen=True)
class Verification:
    """What :meth:`ConditionsDB.verify` checked and what it found.

    Attributes
    ----------
    payloads
        Number of stored payload files whose MD5 was recomputed.
    tags
        PUBLISHED or INVALID global tags compared with the manifest recorded when they were
        published, by name.
    unsealed
        PUBLISHED or INVALID global tags without a manifest (published before b2calib recorded
        manifests, or by a client other than b2calib): not compared, not a mismatch.
    problems
        One line per mismatch, naming the payload or global tag at fault.
    """

    payloads: int
    tags: tuple[str, ...]
    unsealed: tuple[str, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """No mismatch."""
        return not self.problems

    def summary(self) -> list[str]:
        """What was checked and the outcome, as ``b2calib db verify`` ends its report."""
        n, m = self.payloads, len(self.tags)
        checked = (
            f"checked {n} stored payload file{_s(n)} against "
            + ("its checksum" if n == 1 else "their checksums")
            + f" and {m} PUBLISHED or INVALID global tag{_s(m)} against the manifest recorded "
            + ("when it was published" if m == 1 else "when they were published")
        )
        k = len(self.problems)
        lines = [
            f"{k} mismatch{'es' if k != 1 else ''}: {checked}" if k else f"{checked}: no mismatch"
        ]
        if self.unsealed:
            u = len(self.unsealed)
            lines.append(
                f"{u} PUBLISHED or INVALID global tag{_s(u)} "
                + ("has" if u == 1 else "have")
                + " no manifest (published before b2calib recorded manifests, or by another "
                + f"client): {', '.join(self.unsealed)}; "
                + ("its" if u == 1 else "their")
                + " payload files were checked"
            )
        return lines


@dataclass(frozen=True)
class PayloadFile:
    """A payload with the bytes of its file and their MD5 checksum: what the database stores.

    Made before a write transaction (writing a payload's ROOT file takes time), stored inside
    it (:meth:`ConditionsDB.stage`). Every payload on its way into the database is one: it is
    checked when made (:func:`~b2calib.conditions.payloadtypes.check_payload`: keys, rows,
    finite values), and a payload that fails the checks is refused with
    :class:`~b2calib.exceptions.PayloadError` naming ``source`` (a file) and the payload.
    """

    payload: Payload
    data: bytes = field(repr=False)
    checksum: str
    source: str = field(default="", compare=False)
    #: the payload's :meth:`~b2calib.conditions.payload.Payload.content_hash`, computed when
    #: the file is made (outside the write transaction that stores it)
    content_hash: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_payload(self.payload, self.source or None)
        object.__setattr__(self, "content_hash", self.payload.content_hash())

    @classmethod
    def of(cls, item: PayloadFile | Payload | str | os.PathLike[str]) -> PayloadFile:
        """A payload's file, written now; or a payload file as it is (its bytes and MD5 kept),
        read from its path or given as a :class:`PayloadFile` (returned as it is)."""
        if isinstance(item, PayloadFile):
            return item
        if isinstance(item, Payload):
            return cls(item, *item.to_bytes())
        data = read_payload_file(item)
        payload = Payload.from_bytes(data, source=str(item))
        return cls(payload, data, bytes_md5(data), str(item))


#: What identifies a tag's content for the lookup cache: its id, state and the newest entry of the
#: audit log about it.
_Stamp = tuple[int, str, int | None]


class _TagIovs:
    """One global tag's IoVs as :class:`IovColumns`, with their payload records; the
    :class:`IovEntry` of a row is made when first asked for and kept."""

    def __init__(
        self, tag: str, stamp: _Stamp, rows: IntArray, infos: dict[int, PayloadInfo]
    ) -> None:
        self.tag = tag
        self.stamp = stamp
        # rows: payload id, first_exp, first_run, final_exp, final_run (of stored payloads)
        pids = np.array(sorted(infos), dtype=np.int64)
        names = sorted({info.name for info in infos.values()})
        code_of = np.array([names.index(infos[int(p)].name) for p in pids], dtype=np.int64)
        code = code_of[np.searchsorted(pids, rows[:, 0])] if len(pids) else rows[:, 0]
        self.columns = IovColumns.of(names, code, *(rows[:, k] for k in range(1, 5)))
        self.rows = rows[self.columns.order]
        self.infos = infos
        self._entries = np.full(len(self.rows), None, dtype=object)
        self._made = np.zeros(len(self.rows), dtype=bool)

    def entries(self, rows: IntArray) -> npt.NDArray[np.object_]:
        """The :class:`IovEntry` of each row of :attr:`columns` in ``rows``."""
        held = self._entries
        for row in np.unique(rows[~self._made[rows]]).tolist():
            pid, e1, r1, e2, r2 = self.rows[row].tolist()
            held[row] = IovEntry(self.tag, self.infos[pid], IoV(e1, r1, e2, r2))
            self._made[row] = True
        return held[rows]


class StackLookup(Mapping[RunKey, dict[str, IovEntry]]):
    """What :meth:`ConditionsDB.lookup_many` answers: for each run asked, the payload of each
    name from the highest-priority tag holding one, as ``{name: IovEntry}``.

    The whole stack is resolved when it is made (one sorted search per tag and name, over all
    runs at once); the dictionary of a run is made when asked for, a new one each time, its
    names in the order the tags give them (those of the first tag by name, then those only the
    next one gives, ...).

    Parameters
    ----------
    runs
        The runs, ``(exp, run)`` per row.
    tags
        The tags' IoVs, highest priority first.
    names
        The payload names asked for (all when ``None``).
    """

    def __init__(
        self,
        runs: IntArray,
        tags: Sequence[_TagIovs],
        names: Collection[str] | None = None,
    ) -> None:
        present = sorted({n for t in tags for n in t.columns.names})
        if names is not None:
            wanted = set(names)
            present = [n for n in present if n in wanted]
        self._names = present
        self._tags = list(tags)
        self._runs = runs
        keys = run_keys(runs)
        self._layer, self._row = resolve_columns(keys, [t.columns for t in tags], present)

    @property
    def names(self) -> tuple[str, ...]:
        """The payload names asked for that a tag of the stack holds, sorted."""
        return tuple(self._names)

    @cached_property
    def _index(self) -> dict[RunKey, int]:
        exp, run = self._runs[:, 0].tolist(), self._runs[:, 1].tolist()
        return {key: i for i, key in enumerate(zip(exp, run, strict=True))}

    @cached_property
    def _found(self) -> tuple[list[list[int]], list[list[IovEntry | None]]]:
        """Per run, the names found (by the priority of their tag, then name) and the entry
        of every name (``None`` where none is found)."""
        n = len(self._names)
        rank = np.where(self._layer < 0, len(self._tags), self._layer) * n
        order = np.argsort(rank + np.arange(n)[:, None], axis=0, kind="stable").T
        found = (self._layer >= 0).sum(axis=0).tolist()
        entries = np.full(self._layer.shape, None, dtype=object)
        for i, tag in enumerate(self._tags):
            here = self._layer == i
            entries[here] = tag.entries(self._row[here])
        return (
            [o[:k] for o, k in zip(order.tolist(), found, strict=True)],
            entries.T.tolist(),
        )

    def __getitem__(self, run: RunKey) -> dict[str, IovEntry]:
        i = self._index[run]
        order, entries = self._found
        here = cast(list[IovEntry], entries[i])  # found: not None at the places of order[i]
        names = self._names
        return {names[j]: here[j] for j in order[i]}

    def __iter__(self) -> Iterator[RunKey]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"<StackLookup of {len(self)} runs, {len(self._names)} payload names>"


class ConditionsDB(Database):
    """A conditions database: payloads, global tags, IoVs, lookup and history.

    Opened with a URL or an SQLite path and an author, as :class:`~b2calib.db.Database`; its
    errors are :class:`~b2calib.exceptions.ConditionsError`.
    """

    error = ConditionsError
    label = "conditions database"

    def __init__(self, url: str | os.PathLike[str] | None = None, *, author: str | None = None):
        super().__init__(url, author=author)
        #: {tag: its IoVs}, the least recently used first (see :meth:`lookup_many`)
        self._lookup_cache: dict[str, _TagIovs] = {}

    # -- payloads ----------------------------------------------------------------------------

    def upload(self, payload: Payload, *, provenance: dict[str, Any] | None = None) -> PayloadInfo:
        """Store ``payload`` as the next revision of its name and return its record.

        When the same content is already stored under that name, its existing revision is
        returned and nothing is written. ``provenance`` defaults to the payload's
        ``metadata["provenance"]``.
        """
        return self._upload(payload, provenance)

    def upload_file(
        self, path: str | os.PathLike[str], *, provenance: dict[str, Any] | None = None
    ) -> PayloadInfo:
        """Store a payload file byte for byte (its MD5 stays the file's), like :meth:`upload`."""
        return self._upload(path, provenance)

    def _upload(
        self, item: Payload | str | os.PathLike[str], provenance: dict[str, Any] | None
    ) -> PayloadInfo:
        file = PayloadFile.of(item)
        with self.write() as conn:
            return self._store(conn, file, provenance)

    def find_payload(self, payload: Payload) -> PayloadInfo | None:
        """The stored revision with the same content as ``payload``, if any."""
        with self.read() as conn:
            return _find(conn, payload.name, payload.content_hash())

    def _store(
        self, conn: Connection, file: PayloadFile, provenance: dict[str, Any] | None = None
    ) -> PayloadInfo:
        """Store a payload's file as the next revision of its name, or return the revision
        already holding the same content. ``provenance`` defaults to the payload's
        ``metadata["provenance"]``."""
        payload, data, checksum = file.payload, file.data, file.checksum
        name, content_hash = payload.name, file.content_hash
        existing = _find(conn, name, content_hash)
        if existing is not None:
            return existing
        if provenance is None:
            provenance = payload.metadata.get("provenance", {})
        p = s.payloads
        revision = (
            conn.execute(sa.select(sa.func.max(p.c.revision)).where(p.c.name == name)).scalar() or 0
        ) + 1
        row = dict(
            name=name,
            revision=revision,
            checksum=checksum,
            content_hash=content_hash,
            size=len(data),
            created=now(),
            author=self.author,
            provenance=json.dumps(provenance, sort_keys=True, default=str),
        )
        pid = conn.execute(p.insert().values(**row).returning(p.c.id)).scalar_one()
        conn.execute(s.payload_files.insert().values(payload_id=pid, content=data))
        self.log(conn, "upload", None, payload=name, revision=revision, checksum=checksum)
        return _payload_info(conn.execute(sa.select(p).where(p.c.id == pid)).one())

    def payloads(self, name: str | None = None) -> list[PayloadInfo]:
        """Stored payload revisions (of one name), by name and revision."""
        p = s.payloads
        q = sa.select(p).order_by(p.c.name, p.c.revision)
        if name is not None:
            q = q.where(p.c.name == name)
        with self.read() as conn:
            return [_payload_info(r) for r in conn.execute(q)]

    def payload_info(self, name: str, revision: int | None = None) -> PayloadInfo:
        """The record of payload ``name`` at ``revision`` (the newest when ``None``)."""
        with self.read() as conn:
            return self._payload_info(conn, name, revision)

    def _payload_info(self, conn: Connection, name: str, revision: int | None) -> PayloadInfo:
        p = s.payloads
        q = sa.select(p).where(p.c.name == name)
        q = (
            q.order_by(p.c.revision.desc())
            if revision is None
            else q.where(p.c.revision == revision)
        )
        row = conn.execute(q.limit(1)).first()
        if row is None:
            what = f"payload {name!r}" + ("" if revision is None else f" revision {revision}")
            raise ConditionsError(f"{what} is not in {self.safe_url}")
        return _payload_info(row)

    def payload_bytes(self, info: PayloadInfo) -> bytes:
        """The stored file of a payload revision, verified against its checksum."""
        with self.read() as conn:
            data = conn.execute(
                sa.select(s.payload_files.c.content).where(s.payload_files.c.payload_id == info.id)
            ).scalar()
        if data is None:
            raise PayloadError(f"payload {info}: its file is missing from the database")
        verify_checksum(data, info.checksum, f"payload {info}")
        return bytes(data)

    def payload(self, name: str | PayloadInfo, revision: int | None = None) -> Payload:
        """The content of a payload revision (the newest when ``revision`` is ``None``),
        verified against its checksum: a corrupted payload raises :class:`PayloadError`."""
        info = name if isinstance(name, PayloadInfo) else self.payload_info(name, revision)
        return Payload.from_bytes(self.payload_bytes(info), source=f"payload {info}")

    # -- global tags -------------------------------------------------------------------------

    def tags(self, state: str | None = None) -> list[GlobalTag]:
        """All global tags (in one state), by name."""
        g = s.globaltags
        q = sa.select(g).order_by(g.c.name)
        if state is not None:
            q = q.where(g.c.state == _check_state(state))
        with self.read() as conn:
            return [_tag(r) for r in conn.execute(q)]

    def tag(self, name: str) -> GlobalTag:
        """The record of global tag ``name``."""
        with self.read() as conn:
            return _tag(self._tag_row(conn, name))

    def _tag_row(self, conn: Connection, name: str) -> Any:
        row = conn.execute(sa.select(s.globaltags).where(s.globaltags.c.name == name)).first()
        if row is None:
            raise ConditionsError(f"global tag {name!r} does not exist in {self.safe_url}")
        return row

    def create_tag(self, name: str, *, type: str = "DEV", description: str = "") -> GlobalTag:
        """Create an empty OPEN global tag."""
        with self.write() as conn:
            return self._create_tag(conn, name, type, description)

    def _create_tag(self, conn: Connection, name: str, type: str, description: str) -> GlobalTag:
        check_globaltag_name(name)
        if type not in s.TYPES:
            raise ConditionsError(f"global tag {name}: type {type!r} is not one of {s.TYPES}")
        exists = conn.execute(sa.select(s.globaltags.c.id).where(s.globaltags.c.name == name))
        if exists.first() is not None:
            raise ConditionsError(f"global tag {name!r} already exists")
        when = now()
        conn.execute(
            s.globaltags.insert().values(
                name=name,
                type=type,
                state="OPEN",
                description=description,
                created=when,
                modified=when,
                author=self.author,
            )
        )
        self.log(conn, "create", name, type=type, description=description)
        return _tag(self._tag_row(conn, name))

    def modify_tag(
        self, name: str, *, description: str | None = None, type: str | None = None
    ) -> GlobalTag:
        """Change a tag's description or type (not allowed once PUBLISHED)."""
        with self.write() as conn:
            row = self._tag_row(conn, name)
            if row.state in s.FROZEN_STATES:
                raise ConditionsError(f"global tag {name} is {row.state}: it cannot be modified")
            values: dict[str, Any] = {}
            if description is not None:
                values["description"] = description
            if type is not None:
                if type not in s.TYPES:
                    raise ConditionsError(f"global tag {name}: type {type!r} not in {s.TYPES}")
                values["type"] = type
            if values:
                conn.execute(
                    s.globaltags.update()
                    .where(s.globaltags.c.id == row.id)
                    .values(modified=now(), **values)
                )
                self.log(conn, "modify", name, **values)
            return _tag(self._tag_row(conn, name))

    def set_state(self, name: str, state: str) -> GlobalTag:
        """Move a tag to ``state`` by an allowed move (:data:`b2calib.conditions.ALLOWED_MOVES`)."""
        with self.write() as conn:
            return self.move_state(conn, name, state)

    def move_state(
        self,
        conn: Connection,
        name: str,
        state: str,
        *,
        expect: str | None = None,
        **details: Any,
    ) -> GlobalTag:
        """:meth:`set_state` inside a :meth:`write` transaction of this database, so that the
        caller's own records change in the same transaction (a review of the tag is written
        with its move). ``expect``: refuse unless the tag is in that state now; ``details``
        are recorded with the move in the tag's history."""
        state = _check_state(state)
        row = self._tag_row(conn, name)
        if expect is not None and row.state != _check_state(expect):
            raise ConditionsError(
                f"global tag {name} is {row.state}, not {expect}: it cannot be moved to {state}"
                " this way"
            )
        if state != row.state:
            allowed = s.ALLOWED_MOVES[row.state]
            if state not in allowed:
                moves = ", ".join(allowed) or "none (final state)"
                raise ConditionsError(
                    f"global tag {name}: cannot move from {row.state} to {state}; allowed: {moves}"
                )
            if state == "PUBLISHED":
                self.log(conn, "manifest", name, **_manifest(self._sealed_lines(conn, row.id)))
            conn.execute(
                s.globaltags.update()
                .where(s.globaltags.c.id == row.id)
                .values(state=state, modified=now())
            )
            self.log(conn, "state", name, old=row.state, new=state, **details)
        return _tag(self._tag_row(conn, name))

    def clone_tag(self, source: str, name: str, *, description: str | None = None) -> GlobalTag:
        """A new OPEN tag with the same IoVs as ``source`` (any state)."""
        with self.write() as conn:
            src = self._tag_row(conn, source)
            desc = description if description is not None else f"clone of {source}"
            tag = self._create_tag(conn, name, src.type, desc)
            entries = self._entries(conn, source)
            self._insert_iovs(conn, name, [(e.iov, e.payload) for e in entries])
            self.log(conn, "clone", name, source=source, iovs=len(entries))
            return tag

    # -- IoVs --------------------------------------------------------------------------------

    def add_iov(self, tag: str, payload: PayloadInfo | tuple[str, int], iov: IoV | str) -> IovEntry:
        """Make a payload revision valid for ``iov`` in an OPEN tag; an overlap with another IoV
        of the same payload name in the tag is refused."""
        iov = IoV.parse(iov) if isinstance(iov, str) else iov
        with self.write() as conn:
            info = (
                payload
                if isinstance(payload, PayloadInfo)
                else self._payload_info(conn, payload[0], payload[1])
            )
            self._require_open(conn, tag)
            (entry,) = self._insert_iovs(conn, tag, [(iov, info)])
            return entry

    def upload_and_add(
        self,
        tag: str,
        payloads: Iterable[tuple[Payload | str | os.PathLike[str], IoV]],
        *,
        provenance: dict[str, Any] | None = None,
    ) -> list[IovEntry]:
        """Upload payloads (objects, or files stored byte for byte) and add them to an OPEN
        tag, all in one transaction."""
        staged = [(PayloadFile.of(p), iov) for p, iov in payloads]
        with self.write() as conn:
            self._require_open(conn, tag)
            items = [(iov, self._store(conn, file, provenance)) for file, iov in staged]
            return self._insert_iovs(conn, tag, items)

    def remove_iov(self, tag: str, name: str, iov: IoV | str) -> None:
        """Remove the IoV ``iov`` (exactly) of payload ``name`` from an OPEN tag."""
        iov = IoV.parse(iov) if isinstance(iov, str) else iov
        with self.write() as conn:
            self._require_open(conn, tag)
            hits = [e for e in self._entries(conn, tag, name) if e.iov == iov]
            if not hits:
                raise ConditionsError(f"global tag {tag} has no IoV {iov} of payload {name}")
            self._delete_iov(conn, tag, hits[0])
            self.log(conn, "remove_iov", tag, payload=name, iov=str(iov))

    def stage(
        self,
        conn: Connection,
        tag: str,
        items: Sequence[tuple[IoV, PayloadFile]],
        *,
        description: str,
        owner: str | None = None,
        prevails_over: Collection[str] = (),
        yields_to: Collection[str] = (),
        **details: Any,
    ) -> list[IovEntry]:
        """Store payloads and add them to a staging tag, replacing the IoVs they overlap; inside
        a :meth:`write` transaction of this database, so that the caller's own records change
        in the same transaction (the calibration job store marks its job completed in it).

        ``tag`` is created (OPEN, with ``description``) when missing and must be OPEN. An IoV
        already in it for the same payload name that overlaps the new ones is

        * removed when it was made by ``owner`` (the calibration staging, as recorded in its
          payload's provenance; an earlier job of it), by no recorded calibration, or when
          ``owner`` is not given: recorded in the tag's history as ``replace_iov`` with
          ``details``;
        * cut around the new ones when made by a calibration of ``prevails_over``
          (``carve_iov``);
        * left alone when made by a calibration of ``yields_to``: the new IoVs are cut around
          it instead;
        * otherwise a :class:`ConditionsError` naming both calibrations: two calibrations
          writing one payload name for the same runs must say which prevails.

        Content already stored under the same name is not stored again. Returns the IoVs added.
        """
        self._open_tag(conn, tag, description)
        staged = [(iov, self._store(conn, file)) for iov, file in items]
        gid = self._tag_row(conn, tag).id
        kept: dict[str, list[IoV]] = {}
        for old in self._entries(conn, tag):
            hits = [iov for iov, i in staged if i.name == old.name and old.iov.overlaps(iov)]
            if not hits:
                continue
            made_by = (old.payload.provenance or {}).get("calibration")
            if owner is None or made_by is None or made_by == owner:
                self._delete_iov(conn, tag, old)
                self.log(
                    conn, "replace_iov", tag, payload=str(old.payload), iov=str(old.iov), **details
                )
            elif made_by in prevails_over:
                self._delete_iov(conn, tag, old)
                pieces = uncovered(old.iov, hits)
                for piece in pieces:
                    self._insert_row(conn, gid, piece, old.payload, now())
                self.log(
                    conn,
                    "carve_iov",
                    tag,
                    payload=str(old.payload),
                    iov=str(old.iov),
                    kept=[str(p) for p in pieces],
                    by=owner,
                )
            elif made_by in yields_to:
                kept.setdefault(old.name, []).append(old.iov)
            else:
                raise ConditionsError(
                    f"global tag {tag}: calibration {owner} stages {old.name} for runs "
                    f"{hits[0]}, where IoV {old.iov} of calibration {made_by} is; declare which "
                    f"of the two prevails (Calibration.prevails_over)"
                )
        if kept:
            staged = [
                (piece, info)
                for iov, info in staged
                for piece in uncovered(iov, kept.get(info.name, []))
            ]
        return self._insert_iovs(conn, tag, staged)

    def _delete_iov(self, conn: Connection, tag: str, entry: IovEntry) -> None:
        t = s.iovs
        gid = self._tag_row(conn, tag).id
        conn.execute(
            t.delete().where(
                t.c.globaltag_id == gid,
                t.c.payload_id == entry.payload.id,
                t.c.first_exp == entry.iov.first_exp,
                t.c.first_run == entry.iov.first_run,
            )
        )

    def _open_tag(self, conn: Connection, tag: str, description: str) -> None:
        """Create ``tag`` (OPEN) when missing; refuse it unless it is OPEN."""
        exists = conn.execute(sa.select(s.globaltags.c.id).where(s.globaltags.c.name == tag))
        if exists.first() is None:
            self._create_tag(conn, tag, "DEV", description)
        self._require_open(conn, tag)

    def _require_open(self, conn: Connection, tag: str) -> None:
        state = self._tag_row(conn, tag).state
        if state == "RUNNING":
            raise ConditionsError(
                f"global tag {tag} is RUNNING: it changes only by a running update"
            )
        if state != "OPEN":
            raise ConditionsError(
                f"global tag {tag} is {state}: only OPEN tags can be modified"
                + ("" if state in s.FROZEN_STATES else " (move it back to OPEN first)")
            )

    def _insert_iovs(
        self, conn: Connection, tag: str, items: Sequence[tuple[IoV, PayloadInfo]]
    ) -> list[IovEntry]:
        gid = self._tag_row(conn, tag).id
        names = {info.name for _, info in items}
        present: dict[str, list[IoV]] = {n: [] for n in names}
        for e in self._entries(conn, tag):
            if e.name in present:
                present[e.name].append(e.iov)
        when = now()
        out = []
        for iov, info in items:
            clash = next((o for o in present[info.name] if o.overlaps(iov)), None)
            if clash is not None:
                raise ConditionsError(
                    f"global tag {tag}: IoV {iov} of {info} overlaps IoV {clash} of "
                    f"payload {info.name} already in the tag"
                )
            present[info.name].append(iov)
            self._insert_row(conn, gid, iov, info, when)
            out.append(IovEntry(tag, info, iov))
        conn.execute(s.globaltags.update().where(s.globaltags.c.id == gid).values(modified=when))
        for iov, info in items:
            self.log(conn, "add_iov", tag, payload=info.name, revision=info.revision, iov=str(iov))
        return out

    def iovs(
        self, tag: str, name: str | None = None, *, run: RunKey | None = None
    ) -> list[IovEntry]:
        """The IoVs of a tag (of one payload name, or valid for one run), by name and start."""
        with self.read() as conn:
            entries = self._entries(conn, tag, name)
        if run is not None:
            entries = [e for e in entries if e.iov.contains(*run)]
        return entries

    def _entries(self, conn: Connection, tag: str, name: str | None = None) -> list[IovEntry]:
        gid = self._tag_row(conn, tag).id
        t, p = s.iovs, s.payloads
        q = (
            sa.select(t.c.first_exp, t.c.first_run, t.c.final_exp, t.c.final_run, p)
            .join(p, p.c.id == t.c.payload_id)
            .where(t.c.globaltag_id == gid)
        )
        if name is not None:
            q = q.where(p.c.name == name)
        out = [
            IovEntry(tag, _payload_info(r), IoV(r.first_exp, r.first_run, r.final_exp, r.final_run))
            for r in conn.execute(q)
        ]
        return sorted(out, key=lambda e: (e.name, e.iov.start))

    # -- lookup ------------------------------------------------------------------------------

    def lookup(
        self, exp: int, run: int, tags: Sequence[str], names: Iterable[str] | None = None
    ) -> dict[str, IovEntry]:
        """Payloads valid for run (exp, run) through ``tags`` in priority order (first wins)."""
        return self.lookup_many([(exp, run)], tags, names)[(exp, run)]

    def lookup_many(
        self, runs: Iterable[RunKey], tags: Sequence[str], names: Iterable[str] | None = None
    ) -> StackLookup:
        """:meth:`lookup` for many runs at once: ``{run: {name: IovEntry}}``.

        The tags' IoVs are read once (one query per tag) and kept, with what identifies their
        content (:data:`LOOKUP_CACHE_TAGS` tags at most): a later lookup through a tag nothing
        was written to since costs one indexed query of the tags' stamps. Every write of a tag's
        IoVs through b2calib is in the audit log in its own transaction, and PUBLISHED and
        INVALID tags cannot change (:mod:`b2calib.conditions.tables`).
        """
        if isinstance(tags, str):
            tags = [tags]
        pairs = np.fromiter(itertools.chain.from_iterable(runs), dtype=np.int64).reshape(-1, 2)
        return StackLookup(pairs, self._tag_iovs(tags), None if names is None else set(names))

    def _tag_iovs(self, tags: Sequence[str]) -> list[_TagIovs]:
        """The IoVs of ``tags`` (in order), from the cache while their stamps are unchanged."""
        g, h = s.globaltags, history
        newest = sa.select(sa.func.max(h.c.id)).where(h.c.globaltag == g.c.name).scalar_subquery()
        q = sa.select(g.c.name, g.c.id, g.c.state, newest).where(g.c.name.in_(sorted(set(tags))))
        cache = self._lookup_cache
        out = []
        with self.read() as conn:
            stamps: dict[str, _Stamp] = {r[0]: tuple(r[1:]) for r in conn.execute(q)}
            for tag in tags:
                if tag not in stamps:
                    self._tag_row(conn, tag)  # raises naming the tag
                held = cache.pop(tag, None)
                if held is None or held.stamp != stamps[tag]:
                    held = self._read_tag_iovs(conn, tag, stamps[tag])
                cache[tag] = held  # the most recently used last
                out.append(held)
        while len(cache) > LOOKUP_CACHE_TAGS:
            cache.pop(next(iter(cache)))
        return out

    @staticmethod
    def _read_tag_iovs(conn: Connection, tag: str, stamp: _Stamp) -> _TagIovs:
        t, p = s.iovs, s.payloads
        result = conn.execute(
            sa.select(t.c.payload_id, t.c.first_exp, t.c.first_run, t.c.final_exp, t.c.final_run)
            .where(t.c.globaltag_id == stamp[0])
            .order_by(t.c.payload_id, t.c.id)
        )
        rows = np.fromiter(itertools.chain.from_iterable(result), dtype=np.int64).reshape(-1, 5)
        used = sa.select(t.c.payload_id).where(t.c.globaltag_id == stamp[0])
        infos = {r.id: _payload_info(r) for r in conn.execute(sa.select(p).where(p.c.id.in_(used)))}
        stored = np.isin(rows[:, 0], list(infos))  # an IoV of no stored payload is not looked up
        return _TagIovs(tag, stamp, rows[stored], infos)

    def payloads_for(
        self,
        exp: int,
        run: int,
        tags: Sequence[str],
        names: Iterable[str] | None = None,
        *,
        time: int | None = None,
    ) -> dict[str, Payload]:
        """The payload contents valid for a run through ``tags`` (verified).

        ``time`` (UNIX nanoseconds, as ``EventMetaData_m_time``) picks, in a time-dependent
        payload (:mod:`b2calib.conditions.eventdep`), the constants of the interval holding it;
        run-level payloads are the same at every time. Without a time, a time-dependent
        payload raises :class:`~b2calib.exceptions.TimeDependentPayloadError` naming it, its
        revision, tag, the run and its number of intervals: ask with a time, or take the
        payload as stored (:meth:`lookup` then :meth:`payload`) and iterate its intervals.
        """
        from b2calib.conditions import eventdep

        out = {}
        for n, e in self.lookup(exp, run, tags, names).items():
            payload = self.payload(e.payload)
            if eventdep.is_time_dependent(payload):
                if time is None:
                    raise eventdep.run_level_error(
                        payload,
                        exp=exp,
                        run=run,
                        source=f"global tag {e.globaltag}",
                        revision=e.payload.revision,
                    )
                payload = eventdep.at_time(payload, time)
            out[n] = payload
        return out

    def replay(self, path: str | os.PathLike[str]) -> dict[RunKey, dict[str, IovEntry]]:
        """The payloads a processed file used: its recorded global tags (highest priority
        first, comma separated as in basf2's FileMetaData) looked up for its run."""
        from b2calib.io import read_metadata

        meta = read_metadata(path)
        tags = [t.strip() for t in meta.globaltag.split(",") if t.strip()]
        if not tags:
            raise ConditionsError(f"{path}: the file records no global tag to replay")
        return dict(self.lookup_many([(meta.exp, meta.run)], tags))

    # -- tag operations ----------------------------------------------------------------------

    def merge(
        self, name: str, sources: Sequence[str], *, description: str | None = None
    ) -> GlobalTag:
        """A new OPEN tag combining ``sources`` by priority (first wins): a lower tag only fills
        runs the higher ones leave without a payload of that name."""
        with self.write() as conn:
            first = self._tag_row(conn, sources[0])
            layers = [[(e.name, e.iov, e.payload) for e in self._entries(conn, t)] for t in sources]
            tag = self._create_tag(
                conn, name, first.type, description or f"merge of {', '.join(sources)}"
            )
            self._insert_iovs(conn, name, [(iov, info) for _, iov, info in layer(layers)])
            self.log(conn, "merge", name, sources=list(sources))
            return tag

    def diff(self, a: str, b: str) -> Diff[PayloadInfo]:
        """Payload IoVs added, removed and changed from tag ``a`` to tag ``b``."""
        with self.read() as conn:
            ea = [(e.name, e.iov, e.payload) for e in self._entries(conn, a)]
            eb = [(e.name, e.iov, e.payload) for e in self._entries(conn, b)]
        return diff(ea, eb)

    # -- browsing ----------------------------------------------------------------------------

    def tag_sizes(self) -> dict[str, TagSize]:
        """Every global tag's number of payload names, IoVs and payload revisions, by tag name
        (one query; an empty tag counts zeros)."""
        g, t, p = s.globaltags, s.iovs, s.payloads
        q = (
            sa.select(
                g.c.name,
                sa.func.count(sa.distinct(p.c.name)),
                sa.func.count(t.c.id),
                sa.func.count(sa.distinct(t.c.payload_id)),
            )
            .select_from(
                g.outerjoin(t, t.c.globaltag_id == g.c.id).outerjoin(p, p.c.id == t.c.payload_id)
            )
            .group_by(g.c.name)
            .order_by(g.c.name)
        )
        with self.read() as conn:
            return {r[0]: TagSize(int(r[1]), int(r[2]), int(r[3])) for r in conn.execute(q)}

    def iov_table(self, tag: str) -> IovTable:
        """The IoVs of ``tag`` as columns (name, revision, checksum, IoV bounds), by payload
        name then start: what a chart of the tag on a run axis draws
        (:meth:`IovTable.run_axis`, :meth:`IovTable.bars`). One query, no payload record
        decoded."""
        t, p = s.iovs, s.payloads
        with self.read() as conn:
            gid = self._tag_row(conn, tag).id
            q = (
                sa.select(
                    p.c.name,
                    p.c.revision,
                    p.c.checksum,
                    t.c.first_exp,
                    t.c.first_run,
                    t.c.final_exp,
                    t.c.final_run,
                )
                .join(p, p.c.id == t.c.payload_id)
                .where(t.c.globaltag_id == gid)
            )
            rows = [
                (
                    r.name,
                    r.revision,
                    r.checksum,
                    IoV(r.first_exp, r.first_run, r.final_exp, r.final_run),
                )
                for r in conn.execute(q)
            ]
        return iov_table(tag, rows)

    def lookup_stack(
        self, exp: int, run: int, tags: Sequence[str], names: Iterable[str] | None = None
    ) -> dict[str, list[StackEntry]]:
        """What each tag of a stack holds for run (exp, run), per payload name.

        ``tags`` in priority order (first wins, as :meth:`lookup`). For each payload name valid
        at the run in any of them: one :class:`StackEntry` per tag holding it, in priority
        order; the first (``applies``) is what :meth:`lookup` returns, the others are shadowed
        by it. Names sorted.

        Raises
        ------
        ConditionsError
            Naming a tag of the stack that does not exist.
        """
        if isinstance(tags, str):
            tags = [tags]
        wanted = set(names) if names is not None else None
        with self.read() as conn:
            layers = [
                (
                    tag,
                    [
                        (e.name, e.payload.revision, e.payload.checksum, e.iov)
                        for e in self._entries(conn, tag)
                        if (wanted is None or e.name in wanted) and e.iov.contains(exp, run)
                    ],
                )
                for tag in tags
            ]
        return stack_entries((int(exp), int(run)), layers)

    def running_update(
        self,
        running: str,
        staging: str,
        *,
        valid_from: RunKey,
        mode: str = "strict",
        dry_run: bool = False,
    ) -> RunningUpdate:
        """Append VALIDATED tag ``staging`` to RUNNING tag ``running`` from run ``valid_from``.

        The rules and modes are those of basf2's ``b2conditionsdb tag runningupdate``
        (:mod:`b2calib.conditions.runningupdate`): every IoV of the running tag must start
        before ``valid_from`` and every closed one end before it (and ``valid_from`` must be
        after the runs frozen by a :meth:`snapshot`); the staging tag must be free of overlaps
        and gaps per payload name, start at (0,0) or at/after ``valid_from`` and end open
        (``mode`` "strict"), or may end closed ("allow_closed"), have its last IoVs opened
        ("fix_closed"), hold only one (0,0,-1,-1) IoV per name ("simple"), or replace every
        open payload of the running tag ("full_replacement": open IoVs of names it lacks are
        closed at the run before ``valid_from``). Open running IoVs of the updated names are
        closed before the staging IoVs, which are clipped to start at ``valid_from`` at the
        earliest; a staging tag's first IoV with the running IoV's revision extends it instead.

        The update is one transaction, recorded in the history (each IoV closed and added, and
        a ``running_update`` entry with the mode, first run and operations). With ``dry_run``
        the same transaction runs and is rolled back: nothing is written, the result is what
        the update would do, and the tags' states are only warned about (as basf2 does).

        Raises
        ------
        ConditionsError
            For an unknown tag or mode, a tag in the wrong state, or, listing every problem
            at once, IoVs of either tag that the rules refuse.
        """
        from b2calib.conditions.runningupdate import RunningUpdate, check_mode, plan

        mode = check_mode(mode)
        try:
            vf = (int(valid_from[0]), int(valid_from[1]))
            if len(valid_from) != 2:
                raise ValueError
        except (TypeError, ValueError, IndexError):
            raise ConditionsError(
                f"running update: the first valid run must be (experiment, run), not {valid_from!r}"
            ) from None
        if min(vf) < 0:
            raise ConditionsError(
                f"running update: the first valid run {vf} must be an (experiment, run) >= 0"
            )
        if running == staging:
            raise ConditionsError(f"running update: {running} cannot update itself")
        warnings: list[str] = []
        with self.write(rollback=dry_run) as conn:
            r_row, st_row = self._tag_row(conn, running), self._tag_row(conn, staging)
            for role, tag, row, wanted in (
                ("running", running, r_row, "RUNNING"),
                ("staging", staging, st_row, "VALIDATED"),
            ):
                if row.state != wanted:
                    what = f"{role} tag {tag} is {row.state}, not {wanted}"
                    if not dry_run:
                        raise ConditionsError(f"running update: {what}")
                    warnings.append(f"{what} (a dry run goes on)")
            current = self._entries(conn, running)
            p = plan(
                running,
                staging,
                current,
                self._entries(conn, staging),
                valid_from=vf,
                mode=mode,
                frozen_until=self._snapshot_until(conn, running),
            )
            warnings += p.warnings
            created: list[IovEntry] = []
            if p.closed or p.created:
                for old, new in p.closed:
                    self._delete_iov(conn, running, old)
                    if new is not None:
                        self._insert_row(conn, r_row.id, new, old.payload, now())
                    self.log(
                        conn,
                        "close_iov",
                        running,
                        payload=str(old.payload),
                        old=str(old.iov),
                        new=str(new),
                    )
                created = self._insert_iovs(
                    conn, running, [(iov, e.payload) for iov, e in p.created]
                )
                self.log(
                    conn,
                    "running_update",
                    running,
                    staging=staging,
                    valid_from=list(vf),
                    mode=mode,
                    closed=[f"{old.payload} {old.iov} -> {new}" for old, new in p.closed],
                    created=[f"{e.payload} {e.iov}" for e in created],
                    extended=[f"{e.payload} {e.iov}" for e in p.extended],
                )
            else:
                warnings.append(f"nothing to do: {staging} changes nothing in {running}")
            return RunningUpdate(
                running=running,
                staging=staging,
                valid_from=vf,
                mode=mode,
                dry_run=dry_run,
                closed=p.closed,
                created=created,
                extended=p.extended,
                warnings=warnings,
            )

    def _snapshot_until(self, conn: Connection, running: str) -> RunKey | None:
        """The last run frozen by a snapshot of ``running``, if any."""
        h = history
        rows = conn.execute(sa.select(h.c.details).where(h.c.action == "snapshot"))
        ends = [
            (int(d["until"][0]), int(d["until"][1]))
            for d in (json.loads(r.details) for r in rows)
            if d.get("source") == running
        ]
        return max(ends, default=None)

    def _insert_row(
        self, conn: Connection, tag_id: int, iov: IoV, info: PayloadInfo, when: datetime
    ) -> None:
        """One IoV row, without any check (callers check overlaps)."""
        conn.execute(
            s.iovs.insert().values(
                globaltag_id=tag_id,
                payload_id=info.id,
                created=when,
                author=self.author,
                first_exp=iov.first_exp,
                first_run=iov.first_run,
                final_exp=iov.final_exp,
                final_run=iov.final_run,
            )
        )

    def snapshot(self, running: str, name: str, *, until: RunKey) -> GlobalTag:
        """Freeze what a RUNNING tag gives for every run up to ``until`` into a new PUBLISHED tag.

        IoVs starting after ``until`` are left out and open ones are closed at ``until``: later
        running updates can only close them after ``until``, so the snapshot answers every run
        up to ``until`` exactly as the running tag did when those runs were processed.
        """
        with self.write() as conn:
            r_row = self._tag_row(conn, running)
            if r_row.state != "RUNNING":
                raise ConditionsError(f"snapshot: {running} is {r_row.state}, not RUNNING")
            limit = IoV(0, 0, *until)
            items = []
            for e in self._entries(conn, running):
                clipped = e.iov.intersect(limit)
                if clipped is not None:
                    items.append((clipped, e.payload))
            self._create_tag(
                conn, name, r_row.type, f"snapshot of {running} up to run {until[0]}.{until[1]}"
            )
            self._insert_iovs(conn, name, items)
            gid = self._tag_row(conn, name).id
            self.log(conn, "manifest", name, **_manifest(self._sealed_lines(conn, gid)))
            for old, new in (
                ("OPEN", "TESTING"),
                ("TESTING", "VALIDATED"),
                ("VALIDATED", "PUBLISHED"),
            ):
                conn.execute(
                    s.globaltags.update().where(s.globaltags.c.id == gid).values(state=new)
                )
                self.log(conn, "state", name, old=old, new=new)
            self.log(conn, "snapshot", name, source=running, until=list(until), iovs=len(items))
            return _tag(self._tag_row(conn, name))

    def history(self, tag: str | None = None, *, limit: int | None = None) -> list[HistoryEntry]:
        """Recorded changes, oldest first (of one tag when given; uploads have no tag)."""
        h = history
        q = sa.select(h).order_by(h.c.id)
        if tag is not None:
            q = q.where(h.c.globaltag == tag)
        if limit is not None:
            q = q.order_by(None).order_by(h.c.id.desc()).limit(limit)
        with self.read() as conn:
            rows = list(conn.execute(q))
        rows.sort(key=lambda r: r.id)
        return [
            HistoryEntry(as_utc(r.time), r.author, r.action, r.globaltag, json.loads(r.details))
            for r in rows
        ]

    # -- manifests and verification ----------------------------------------------------------

    def _sealed_lines(self, conn: Connection, tag_id: int) -> list[_Line]:
        """The manifest lines of a tag being published, each payload file verified against
        its checksum (a corrupted payload is not published)."""
        rows = self._manifest_rows(conn, tag_id)
        by_id = {r.payload_id: r for r in rows}
        digests: dict[int, str] = {}
        with closing(_files(conn, set(by_id))) as files:
            for pid, data in files:
                r = by_id[pid]
                verify_checksum(data, r.checksum, f"payload {r.name} rev {r.revision}")
                digests[pid] = hashlib.sha256(data).hexdigest()
        for pid, r in by_id.items():
            if r.name is None:
                raise PayloadError(f"an IoV names payload id {pid}, which is not stored")
            if pid not in digests:
                raise PayloadError(
                    f"payload {r.name} rev {r.revision}: its file is missing from the database"
                )
        return [_line(r, digests[r.payload_id]) for r in rows]

    @staticmethod
    def _manifest_rows(conn: Connection, tag_id: int | None = None) -> list[Any]:
        t, p = s.iovs, s.payloads
        q = sa.select(
            t.c.globaltag_id,
            t.c.payload_id,
            t.c.first_exp,
            t.c.first_run,
            t.c.final_exp,
            t.c.final_run,
            p.c.name,
            p.c.revision,
            p.c.checksum,
        ).join(p, p.c.id == t.c.payload_id, isouter=True)
        if tag_id is not None:
            q = q.where(t.c.globaltag_id == tag_id)
        return list(conn.execute(q))

    def verify(self) -> Verification:
        """Check the database against what it recorded: recompute the MD5 of every stored
        payload file (and its size) and compare each PUBLISHED or INVALID global tag with the
        manifest recorded in the history when it was published.

        A rewrite that got past the database's own guards (its superuser, the SQLite file's
        owner) shows as a mismatch naming the payload or the tag and its payloads: a changed
        file, a payload row and file swapped together, IoVs changed, added or removed, a tag
        detached from its IoVs, moved out of PUBLISHED or deleted. A tag published before
        manifests were recorded is listed in :attr:`Verification.unsealed`, not a mismatch.
        Reads in one transaction; writes nothing.
        """
        p, g, h = s.payloads, s.globaltags, history
        with self.read() as conn:
            payloads = {r.id: r for r in conn.execute(sa.select(p))}
            with closing(_files(conn)) as files:
                digests, problems = _check_files(payloads, files)
            tags = {r.id: r for r in conn.execute(sa.select(g.c.id, g.c.name, g.c.state))}
            rows = self._manifest_rows(conn)
            manifests: dict[str, list[tuple[datetime, Any]]] = {}
            for entry in conn.execute(
                sa.select(h.c.time, h.c.globaltag, h.c.details)
                .where(h.c.action == "manifest")
                .order_by(h.c.id)
            ):
                manifests.setdefault(str(entry.globaltag), []).append(
                    (as_utc(entry.time), _json_or_none(entry.details))
                )
        lines, dangling = _tag_lines(tags, rows, digests)
        checked, unsealed, mismatches = _check_tags(tags, lines, manifests)
        return Verification(len(digests), checked, unsealed, (*problems, *dangling, *mismatches))

    # -- basf2 local databases ---------------------------------------------------------------

    def export_local(
        self, folder: str | os.PathLike[str], tags: str | Sequence[str], *, runs: IoV | None = None
    ) -> list[LocalDbEntry]:
        """Write what ``tags`` (priority order) give, optionally only for ``runs``, as a basf2
        local database (``database.txt`` + ``dbstore_<name>_rev_<revision>.root``).

        The payload files are written byte for byte as stored, so their checksums are kept.
        """
        tags = [tags] if isinstance(tags, str) else list(tags)
        with self.read() as conn:
            layers = [[(e.name, e.iov, e.payload) for e in self._entries(conn, t)] for t in tags]
        items = layer(layers)
        if runs is not None:
            items = [(n, c, p) for n, iov, p in items if (c := iov.intersect(runs)) is not None]
        files: dict[int, bytes] = {}
        out = []
        for name, iov, info in items:
            if info.id not in files:
                files[info.id] = self.payload_bytes(info)
            out.append((LocalDbEntry(name, info.revision, iov), files[info.id]))
        target = LocalDatabase(folder)
        if target.index.exists():
            raise ConditionsError(f"{target.index} exists already; export into a new folder")
        target.add_files(out)
        return [e for e, _ in out]

    def import_local(
        self, folder: str | os.PathLike[str], tag: str, *, description: str = ""
    ) -> list[IovEntry]:
        """Upload a basf2 local database into OPEN tag ``tag`` (created when missing), in one
        transaction. Files are kept byte for byte; content already stored under the same name
        is reused. Where lines overlap, the later line wins, as in basf2."""
        source = LocalDatabase(folder)
        entries = source.entries()
        if not entries:
            raise ConditionsError(f"{source.index}: no payload to import")
        loaded = []
        for entry in entries:
            path = source.folder / entry.filename
            if not path.exists():
                raise PayloadError(f"{path}: payload file of line '{entry.line()}' is missing")
            file = PayloadFile.of(path)
            if file.payload.name != entry.name:
                raise PayloadError(
                    f"{path}: holds payload {file.payload.name!r}, not {entry.name!r}"
                )
            loaded.append((entry, file))
        with self.write() as conn:
            self._open_tag(conn, tag, description or f"imported from {source.folder}")
            stored = [
                self._store(conn, file) for _, file in loaded
            ]  # revisions follow the file's order
            taken: dict[str, list[IoV]] = {}
            items: list[tuple[IoV, PayloadInfo]] = []
            for (entry, _), info in reversed(
                list(zip(loaded, stored, strict=True))
            ):  # later lines win
                for piece in uncovered(entry.iov, taken.get(entry.name, [])):
                    items.append((piece, info))
                taken.setdefault(entry.name, []).append(entry.iov)
            items.sort(key=lambda it: (it[1].name, it[0].start))
            added = self._insert_iovs(conn, tag, items)
            self.log(conn, "import_local", tag, folder=str(source.folder), iovs=len(added))
            return added


#: One line of a manifest: (payload name, IoV start and end, revision, MD5, SHA-256 of the file).
_Line = tuple[str, int, int, int, int, int, str, str]


def _line(row: Any, sha256: str) -> _Line:
    return (
        row.name,
        row.first_exp,
        row.first_run,
        row.final_exp,
        row.final_run,
        row.revision,
        row.checksum,
        sha256,
    )


def _manifest(lines: Iterable[_Line]) -> dict[str, Any]:
    """A tag's manifest: the SHA-256 of its sorted IoV lines, their number, and one SHA-256
    per payload name (so that a mismatch can name the payloads that changed)."""
    text: dict[str, list[str]] = {}
    ordered = sorted(lines)
    for name, e1, r1, e2, r2, revision, md5, sha in ordered:
        text.setdefault(name, []).append(f"{name}\t{revision}\t{e1},{r1},{e2},{r2}\t{md5}\t{sha}")
    every = [f"b2calib manifest {MANIFEST_VERSION}", *(t for ts in text.values() for t in ts)]
    return {
        "version": MANIFEST_VERSION,
        "digest": _sha256("\n".join(every)),
        "iovs": len(ordered),
        "payloads": {name: _sha256("\n".join(ts)) for name, ts in text.items()},
    }


def _check_files(
    payloads: dict[int, Any], files: Iterable[tuple[int, bytes]]
) -> tuple[dict[int, str], list[str]]:
    """The SHA-256 of each stored file by payload id, and the files' problems: a checksum or
    size that is not the recorded one, a missing file (by payload name and revision), a file
    of no payload."""
    digests: dict[int, str] = {}
    found: list[tuple[tuple[str, int], str]] = []
    strays: list[str] = []
    for pid, data in files:
        r = payloads.get(pid)
        if r is None:
            strays.append(f"a stored file names payload id {pid}, which does not exist")
            continue
        digests[pid] = hashlib.sha256(data).hexdigest()
        md5, what = bytes_md5(data), f"payload {r.name} rev {r.revision}"
        if md5 != r.checksum:
            why = f"checksum mismatch (recorded {r.checksum}, the stored file has {md5})"
        elif len(data) != r.size:
            why = f"size mismatch (recorded {r.size} bytes, the stored file has {len(data)})"
        else:
            continue
        found.append(((r.name, r.revision), f"{what}: {why}"))
    for pid in payloads.keys() - digests.keys():
        r = payloads[pid]
        found.append(
            ((r.name, r.revision), f"payload {r.name} rev {r.revision}: its file is missing")
        )
    return digests, [m for _, m in sorted(found)] + strays


def _tag_lines(
    tags: dict[int, Any], rows: Iterable[Any], digests: dict[int, str]
) -> tuple[dict[int, list[_Line]], list[str]]:
    """Every tag's manifest lines now, by tag id, and the IoVs that name no tag or no
    payload."""
    lines: dict[int, list[_Line]] = {}
    orphans: Counter[int] = Counter()
    problems = []
    for r in rows:
        if r.globaltag_id not in tags:
            orphans[r.globaltag_id] += 1
        elif r.name is None:
            problems.append(
                f"an IoV of global tag {tags[r.globaltag_id].name} names payload id "
                f"{r.payload_id}, which does not exist"
            )
        else:
            lines.setdefault(r.globaltag_id, []).append(_line(r, digests.get(r.payload_id, "-")))
    for tid, n in sorted(orphans.items()):
        verb = "belongs" if n == 1 else "belong"
        problems.insert(0, f"{n} IoV{_s(n)} {verb} to global tag id {tid}, which does not exist")
    return lines, problems


def _check_tags(
    tags: dict[int, Any],
    lines: dict[int, list[_Line]],
    manifests: dict[str, list[tuple[datetime, Any]]],
) -> tuple[tuple[str, ...], tuple[str, ...], list[str]]:
    """Compare every PUBLISHED or INVALID tag, and every tag a manifest was recorded for, with
    its manifests: the tags checked, the frozen tags without a manifest, the mismatches."""
    by_name = {t.name: t for t in tags.values()}
    frozen = {t.name for t in tags.values() if t.state in s.FROZEN_STATES}
    checked: list[str] = []
    unsealed: list[str] = []
    problems: list[str] = []
    for name in sorted(frozen | manifests.keys()):
        tag, recorded = by_name.get(name), manifests.get(name, [])
        if not recorded:
            unsealed.append(name)
            continue
        was = f"it was PUBLISHED (manifest recorded {_when(recorded[0][0])})"
        if tag is None:
            problems.append(f"global tag {name} is gone, but {was}")
            continue
        if tag.state not in s.FROZEN_STATES:
            problems.append(
                f"global tag {name} is {tag.state}, but {was}: only the move to INVALID may follow"
            )
        checked.append(name)
        current = _manifest(lines.get(tag.id, []))
        for time, details in recorded:
            mismatch = _compare(details, current)
            if mismatch:
                problems.append(
                    f"global tag {name}: its content differs from the manifest recorded when it "
                    f"was published ({_when(time)}): {mismatch}"
                )
    return tuple(checked), tuple(unsealed), problems


def _compare(recorded: Any, current: dict[str, Any]) -> str:
    """How a tag's content differs from a recorded manifest ("" when it does not)."""
    if not isinstance(recorded, dict) or recorded.get("version") != MANIFEST_VERSION:
        return "the recorded manifest is not one this b2calib writes"
    if recorded.get("digest") == current["digest"]:
        return ""
    parts = []
    if recorded.get("iovs") != current["iovs"]:
        parts.append(f"{recorded.get('iovs')} IoVs recorded, {current['iovs']} now")
    before = recorded.get("payloads")
    before = before if isinstance(before, dict) else {}
    now_ = current["payloads"]
    changed = sorted(n for n in before.keys() | now_.keys() if before.get(n) != now_.get(n))
    if changed:
        parts.append(f"payload{_s(len(changed))} {', '.join(changed)} changed")
    return "; ".join(parts) or "its digest differs"


def _files(
    conn: Connection, ids: set[int] | None = None
) -> Generator[tuple[int, bytes], None, None]:
    """Stored payload files (of payloads ``ids``), by payload id, a few at a time."""
    f = s.payload_files
    q = sa.select(f.c.payload_id, f.c.content).order_by(f.c.payload_id)
    if ids is not None:
        q = q.where(f.c.payload_id.in_(sorted(ids)))
    result = conn.execute(q.execution_options(yield_per=16))
    try:
        for row in result:
            yield int(row.payload_id), bytes(row.content)
    finally:
        result.close()  # a server-side cursor on PostgreSQL, when the caller stops early


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _when(t: datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M:%S} UTC"


def _find(conn: Connection, name: str, content_hash: str) -> PayloadInfo | None:
    """The stored revision of ``name`` with this content, if any."""
    p = s.payloads
    row = conn.execute(
        sa.select(p).where(p.c.name == name, p.c.content_hash == content_hash)
    ).first()
    return None if row is None else _payload_info(row)


def _check_state(state: str) -> str:
    state = state.upper()
    if state not in s.STATES:
        raise ConditionsError(f"unknown global tag state {state!r}; states: {', '.join(s.STATES)}")
    return state


def _payload_info(row: Any) -> PayloadInfo:
    return PayloadInfo(
        id=row.id,
        name=row.name,
        revision=row.revision,
        checksum=row.checksum,
        size=row.size,
        created=as_utc(row.created),
        author=row.author,
        provenance=json.loads(row.provenance),
    )


def _tag(row: Any) -> GlobalTag:
    return GlobalTag(
        name=row.name,
        type=row.type,
        state=row.state,
        description=row.description,
        created=as_utc(row.created),
        modified=as_utc(row.modified),
        author=row.author,
    )
