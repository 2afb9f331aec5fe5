"""The conditions database: payloads, global tags, IoVs, lookup and history.

Storage is SQLAlchemy: an embedded SQLite file by default (WAL journal, a busy timeout and
``BEGIN IMMEDIATE`` write transactions, so several processes can write at once), or PostgreSQL
for a shared server (``postgresql+psycopg://user@host/db``; writes take a transaction-scoped
advisory lock). Every public write is one transaction: it happens completely or not at all.
The schema is created and upgraded by Alembic on first use.

Payload files are stored in the database itself, with their MD5 checksum, and verified on every
read. Uploading a payload whose content is already stored under the same name returns the
existing revision, so re-running a calibration does not multiply payloads.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from b2calib.conditions import schema as s
from b2calib.conditions.iov import IoV, RunKey, uncovered
from b2calib.conditions.localdb import LocalDatabase, LocalDbEntry
from b2calib.conditions.payload import Payload, bytes_md5, verify_checksum
from b2calib.conditions.tagops import Diff, diff, layer, resolve
from b2calib.exceptions import B2CalibError, ConditionsError, PayloadError

__all__ = [
    "DB_ENV",
    "ConditionsDB",
    "GlobalTag",
    "HistoryEntry",
    "IovEntry",
    "PayloadInfo",
    "default_url",
    "upgrade",
]

DB_ENV = "B2CALIB_DB"
_MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK = 0x6232_6361_6C69  # "b2cali": one advisory lock serialises writers


def default_url() -> str:
    """The database used when none is given: ``$B2CALIB_DB``, else an SQLite file in the
    user's data directory (``~/.local/share/b2calib/conditions.sqlite`` on Linux)."""
    url = os.environ.get(DB_ENV)
    if url:
        return url
    import platformdirs

    folder = Path(platformdirs.user_data_dir("b2calib", appauthor=False))
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'conditions.sqlite'}"


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


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


def upgrade(engine: Engine) -> None:
    """Create or upgrade the schema to the newest Alembic revision (safe to call concurrently:
    it runs inside the writers' lock)."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return
    with _writing(engine) as conn:
        if MigrationContext.configure(conn).get_current_revision() != head:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")


@contextmanager
def _writing(engine: Engine) -> Iterator[Connection]:
    with engine.connect().execution_options(b2calib_write=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        yield conn


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 120})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # transactions are begun below, not by pysqlite
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout = 120000")
            _wal(cur)
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("b2calib_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _wal(cursor: Any, timeout: float = 120) -> None:
    """Switch an SQLite database to WAL. SQLite answers "database is locked" at once, without
    waiting for the busy timeout, while another process is creating or switching the same new
    file, so retry until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


_RULE = re.compile(r"b2calib: ([^\n\"']+)")


class SqlDatabase:
    """The b2calib database: its connection, schema upgrade and transactions (the base of
    :class:`ConditionsDB` and of the quality-assurance database).

    Errors are raised as :attr:`error` (a subclass of it for each kind of database).

    Parameters
    ----------
    url
        SQLAlchemy URL (``sqlite:///path.sqlite``, ``postgresql+psycopg://...``) or a path to an
        SQLite file; default :func:`default_url`.
    author
        Recorded as the author of every change made through this object (default: the
        ``B2CALIB_USER`` environment variable, else the login name).
    """

    error: type[B2CalibError] = ConditionsError

    def __init__(self, url: str | os.PathLike[str] | None = None, *, author: str | None = None):
        if url is None:
            url = default_url()
        url = str(url)
        if "://" not in url:
            url = f"sqlite:///{Path(url).expanduser().resolve()}"
        self.url = url
        self.author = author or os.environ.get("B2CALIB_USER") or getpass.getuser()
        try:
            self.engine = _make_engine(url)
            upgrade(self.engine)
        except sa.exc.SQLAlchemyError as err:
            raise self.error(
                f"{self._where()}: cannot open the conditions database ({_one_line(err)})"
            ) from err

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where()!r})"

    def _where(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with _writing(self.engine) as conn:
                yield conn
        except sa.exc.DBAPIError as err:
            m = _RULE.search(str(err.orig))
            if m:
                raise self.error(f"refused by the database: {m.group(1).strip()}") from err
            raise self.error(
                f"{self._where()}: write failed, nothing was changed ({_one_line(err)})"
            ) from err

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def _log(
        self,
        conn: Connection,
        action: str,
        tag: str | None,
        *,
        author: str | None = None,
        **details: Any,
    ) -> None:
        conn.execute(
            s.history.insert().values(
                time=_now(),
                author=author or self.author,
                action=action,
                globaltag=tag,
                details=json.dumps(details, sort_keys=True, default=str),
            )
        )


class ConditionsDB(SqlDatabase):
    """A conditions database: payloads, global tags, IoVs, lookup and history.

    Opened with a URL or an SQLite path and an author, as :class:`SqlDatabase`.
    """

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
        payload, data, checksum = _payload_bytes(item)
        with self._write() as conn:
            return self._store(conn, payload, data, checksum, provenance)

    def find_payload(self, payload: Payload) -> PayloadInfo | None:
        """The stored revision with the same content as ``payload``, if any."""
        with self._read() as conn:
            return _find(conn, payload.name, payload.content_hash())

    def _store(
        self,
        conn: Connection,
        payload: Payload,
        data: bytes,
        checksum: str,
        provenance: dict[str, Any] | None = None,
    ) -> PayloadInfo:
        """Store a payload's file (``data`` with MD5 ``checksum``) as the next revision of its
        name, or return the revision already holding the same content. ``provenance``
        defaults to the payload's ``metadata["provenance"]``."""
        name, content_hash = payload.name, payload.content_hash()
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
            created=_now(),
            author=self.author,
            provenance=json.dumps(provenance, sort_keys=True, default=str),
        )
        pid = conn.execute(p.insert().values(**row).returning(p.c.id)).scalar_one()
        conn.execute(s.payload_files.insert().values(payload_id=pid, content=data))
        self._log(conn, "upload", None, payload=name, revision=revision, checksum=checksum)
        return _payload_info(conn.execute(sa.select(p).where(p.c.id == pid)).one())

    def payloads(self, name: str | None = None) -> list[PayloadInfo]:
        """Stored payload revisions (of one name), by name and revision."""
        p = s.payloads
        q = sa.select(p).order_by(p.c.name, p.c.revision)
        if name is not None:
            q = q.where(p.c.name == name)
        with self._read() as conn:
            return [_payload_info(r) for r in conn.execute(q)]

    def payload_info(self, name: str, revision: int | None = None) -> PayloadInfo:
        """The record of payload ``name`` at ``revision`` (the newest when ``None``)."""
        with self._read() as conn:
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
            raise ConditionsError(f"{what} is not in {self._where()}")
        return _payload_info(row)

    def payload_bytes(self, info: PayloadInfo) -> bytes:
        """The stored file of a payload revision, verified against its checksum."""
        with self._read() as conn:
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
        with self._read() as conn:
            return [_tag(r) for r in conn.execute(q)]

    def tag(self, name: str) -> GlobalTag:
        """The record of global tag ``name``."""
        with self._read() as conn:
            return _tag(self._tag_row(conn, name))

    def _tag_row(self, conn: Connection, name: str) -> Any:
        row = conn.execute(sa.select(s.globaltags).where(s.globaltags.c.name == name)).first()
        if row is None:
            raise ConditionsError(f"global tag {name!r} does not exist in {self._where()}")
        return row

    def create_tag(self, name: str, *, type: str = "DEV", description: str = "") -> GlobalTag:
        """Create an empty OPEN global tag."""
        with self._write() as conn:
            return self._create_tag(conn, name, type, description)

    def _create_tag(self, conn: Connection, name: str, type: str, description: str) -> GlobalTag:
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise ConditionsError(f"global tag name {name!r}: use letters, digits and _ . + - only")
        if type not in s.TYPES:
            raise ConditionsError(f"global tag {name}: type {type!r} is not one of {s.TYPES}")
        exists = conn.execute(sa.select(s.globaltags.c.id).where(s.globaltags.c.name == name))
        if exists.first() is not None:
            raise ConditionsError(f"global tag {name!r} already exists")
        now = _now()
        conn.execute(
            s.globaltags.insert().values(
                name=name,
                type=type,
                state="OPEN",
                description=description,
                created=now,
                modified=now,
                author=self.author,
            )
        )
        self._log(conn, "create", name, type=type, description=description)
        return _tag(self._tag_row(conn, name))

    def modify_tag(
        self, name: str, *, description: str | None = None, type: str | None = None
    ) -> GlobalTag:
        """Change a tag's description or type (not allowed once PUBLISHED)."""
        with self._write() as conn:
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
                    .values(modified=_now(), **values)
                )
                self._log(conn, "modify", name, **values)
            return _tag(self._tag_row(conn, name))

    def set_state(self, name: str, state: str) -> GlobalTag:
        """Move a tag to ``state`` by an allowed move (:data:`b2calib.conditions.ALLOWED_MOVES`)."""
        state = _check_state(state)
        with self._write() as conn:
            row = self._tag_row(conn, name)
            if state != row.state:
                allowed = s.ALLOWED_MOVES[row.state]
                if state not in allowed:
                    moves = ", ".join(allowed) or "none (final state)"
                    raise ConditionsError(
                        f"global tag {name}: cannot move from {row.state} to {state}; "
                        f"allowed: {moves}"
                    )
                conn.execute(
                    s.globaltags.update()
                    .where(s.globaltags.c.id == row.id)
                    .values(state=state, modified=_now())
                )
                self._log(conn, "state", name, old=row.state, new=state)
            return _tag(self._tag_row(conn, name))

    def clone_tag(self, source: str, name: str, *, description: str | None = None) -> GlobalTag:
        """A new OPEN tag with the same IoVs as ``source`` (any state)."""
        with self._write() as conn:
            src = self._tag_row(conn, source)
            desc = description if description is not None else f"clone of {source}"
            tag = self._create_tag(conn, name, src.type, desc)
            entries = self._entries(conn, source)
            self._insert_iovs(conn, name, [(e.iov, e.payload) for e in entries])
            self._log(conn, "clone", name, source=source, iovs=len(entries))
            return tag

    # -- IoVs --------------------------------------------------------------------------------

    def add_iov(self, tag: str, payload: PayloadInfo | tuple[str, int], iov: IoV | str) -> IovEntry:
        """Make a payload revision valid for ``iov`` in an OPEN tag; an overlap with another IoV
        of the same payload name in the tag is refused."""
        iov = IoV.parse(iov) if isinstance(iov, str) else iov
        with self._write() as conn:
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
        staged = [(_payload_bytes(p), iov) for p, iov in payloads]
        with self._write() as conn:
            self._require_open(conn, tag)
            items = [
                (iov, self._store(conn, p, data, checksum, provenance))
                for (p, data, checksum), iov in staged
            ]
            return self._insert_iovs(conn, tag, items)

    def remove_iov(self, tag: str, name: str, iov: IoV | str) -> None:
        """Remove the IoV ``iov`` (exactly) of payload ``name`` from an OPEN tag."""
        iov = IoV.parse(iov) if isinstance(iov, str) else iov
        with self._write() as conn:
            self._require_open(conn, tag)
            hits = [e for e in self._entries(conn, tag, name) if e.iov == iov]
            if not hits:
                raise ConditionsError(f"global tag {tag} has no IoV {iov} of payload {name}")
            self._delete_iov(conn, tag, hits[0])
            self._log(conn, "remove_iov", tag, payload=name, iov=str(iov))

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
        now = _now()
        out = []
        for iov, info in items:
            clash = next((o for o in present[info.name] if o.overlaps(iov)), None)
            if clash is not None:
                raise ConditionsError(
                    f"global tag {tag}: IoV {iov} of {info} overlaps IoV {clash} of "
                    f"payload {info.name} already in the tag"
                )
            present[info.name].append(iov)
            self._insert_row(conn, gid, iov, info, now)
            out.append(IovEntry(tag, info, iov))
        conn.execute(s.globaltags.update().where(s.globaltags.c.id == gid).values(modified=now))
        for iov, info in items:
            self._log(conn, "add_iov", tag, payload=info.name, revision=info.revision, iov=str(iov))
        return out

    def iovs(
        self, tag: str, name: str | None = None, *, run: RunKey | None = None
    ) -> list[IovEntry]:
        """The IoVs of a tag (of one payload name, or valid for one run), by name and start."""
        with self._read() as conn:
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
    ) -> dict[RunKey, dict[str, IovEntry]]:
        """:meth:`lookup` for many runs at once (one query per tag)."""
        if isinstance(tags, str):
            tags = [tags]
        wanted = set(names) if names is not None else None
        run_list = [(int(e), int(r)) for e, r in runs]
        with self._read() as conn:
            layers = [
                [
                    (e.name, e.iov, e)
                    for e in self._entries(conn, t)
                    if wanted is None or e.name in wanted
                ]
                for t in tags
            ]
        return resolve(run_list, layers)

    def payloads_for(
        self, exp: int, run: int, tags: Sequence[str], names: Iterable[str] | None = None
    ) -> dict[str, Payload]:
        """The payload contents valid for a run through ``tags`` (verified)."""
        return {n: self.payload(e.payload) for n, e in self.lookup(exp, run, tags, names).items()}

    def replay(self, path: str | os.PathLike[str]) -> dict[RunKey, dict[str, IovEntry]]:
        """The payloads a processed file used: its recorded global tags (highest priority
        first, comma separated as in basf2's FileMetaData) looked up for its run."""
        from b2calib.io import read_metadata

        meta = read_metadata(path)
        tags = [t.strip() for t in meta.globaltag.split(",") if t.strip()]
        if not tags:
            raise ConditionsError(f"{path}: the file records no global tag to replay")
        return self.lookup_many([(meta.exp, meta.run)], tags)

    # -- tag operations ----------------------------------------------------------------------

    def merge(
        self, name: str, sources: Sequence[str], *, description: str | None = None
    ) -> GlobalTag:
        """A new OPEN tag combining ``sources`` by priority (first wins): a lower tag only fills
        runs the higher ones leave without a payload of that name."""
        with self._write() as conn:
            first = self._tag_row(conn, sources[0])
            layers = [[(e.name, e.iov, e.payload) for e in self._entries(conn, t)] for t in sources]
            tag = self._create_tag(
                conn, name, first.type, description or f"merge of {', '.join(sources)}"
            )
            self._insert_iovs(conn, name, [(iov, info) for _, iov, info in layer(layers)])
            self._log(conn, "merge", name, sources=list(sources))
            return tag

    def diff(self, a: str, b: str) -> Diff[PayloadInfo]:
        """Payload IoVs added, removed and changed from tag ``a`` to tag ``b``."""
        with self._read() as conn:
            ea = [(e.name, e.iov, e.payload) for e in self._entries(conn, a)]
            eb = [(e.name, e.iov, e.payload) for e in self._entries(conn, b)]
        return diff(ea, eb)

    def running_update(
        self,
        running: str,
        staging: str,
        *,
        valid_from: RunKey | None = None,
        allow_closed: bool = False,
    ) -> list[IovEntry]:
        """Append a VALIDATED staging tag to a RUNNING tag, by the prompt-processing rules.

        * the update starts at ``valid_from`` (default: the earliest start in the staging tag
          other than (0, 0)), which must be after every IoV start already in the running tag:
          a running tag only grows forward;
        * staging IoVs starting at (0, 0) are moved to ``valid_from``; any other staging IoV
          starting before it is refused;
        * per payload name the staging IoVs must leave no gap between them and the last one must
          end open (unless ``allow_closed``), so that the running tag always has a payload for
          future runs;
        * open IoVs of the running tag for the updated payloads are closed at the run before
          the first staging IoV of that payload; a closed one reaching past it is refused.

        Returns the IoVs added to the running tag.
        """
        with self._write() as conn:
            r_row, st_row = self._tag_row(conn, running), self._tag_row(conn, staging)
            if r_row.state != "RUNNING":
                raise ConditionsError(f"running update: {running} is {r_row.state}, not RUNNING")
            if st_row.state != "VALIDATED":
                raise ConditionsError(
                    f"running update: staging tag {staging} is {st_row.state}, not VALIDATED"
                )
            stage = self._entries(conn, staging)
            if not stage:
                raise ConditionsError(f"running update: staging tag {staging} is empty")
            if valid_from is None:
                starts = [e.iov.start for e in stage if e.iov.start != (0, 0)]
                if not starts:
                    raise ConditionsError(
                        f"running update: every IoV of {staging} starts at (0, 0); "
                        "give the first run of the update (valid_from)"
                    )
                valid_from = min(starts)
            valid_from = (int(valid_from[0]), int(valid_from[1]))
            if min(valid_from) < 0:
                raise ConditionsError(
                    f"running update: first run {valid_from} must be an (experiment, run) >= 0"
                )
            frozen = self._snapshot_until(conn, running)
            if frozen is not None and not valid_from > frozen:
                raise ConditionsError(
                    f"running update: {running} was snapshot up to run {frozen}; an update must "
                    f"start after it, not at {valid_from}"
                )
            current = self._entries(conn, running)
            latest = max((e.iov.start for e in current), default=None)
            if latest is not None and not valid_from > latest:
                raise ConditionsError(
                    f"running update: it must start after every IoV start already in {running}; "
                    f"the latest starts at {latest}, the update at {valid_from}"
                )
            moved: list[tuple[IoV, PayloadInfo]] = []
            for e in stage:
                if e.iov.start == (0, 0) and e.iov.end < valid_from:
                    raise ConditionsError(
                        f"running update: staging IoV {e.iov} of {e.payload} ends before the "
                        f"update's first run {valid_from}"
                    )
                iov = e.iov.starting_at(*valid_from) if e.iov.start == (0, 0) else e.iov
                if iov.start < valid_from:
                    raise ConditionsError(
                        f"running update: staging IoV {e.iov} of {e.payload} starts before the "
                        f"update's first run {valid_from}"
                    )
                moved.append((iov, e.payload))
            by_name: dict[str, list[IoV]] = {}
            for iov, info in moved:
                by_name.setdefault(info.name, []).append(iov)
            for name, ivs in by_name.items():
                last = max(ivs, key=lambda i: i.start)
                if not allow_closed and not last.is_open:
                    raise ConditionsError(
                        f"running update: the last IoV {last} of {name} in {staging} is closed; "
                        "the running tag would have no payload after it (allow_closed to force)"
                    )
                first = min(i.start for i in ivs)
                gaps = uncovered(IoV.from_keys(first, last.end), ivs)
                if gaps:
                    raise ConditionsError(
                        f"running update: the IoVs of {name} in {staging} leave a gap ({gaps[0]}); "
                        "the running tag would have no payload there"
                    )
                for e in current:
                    if e.name != name or e.iov.end < first:
                        continue
                    if not e.iov.is_open:
                        raise ConditionsError(
                            f"running update: closed IoV {e.iov} of {e.payload} in {running} "
                            f"reaches past the update's first run {first} of {name}"
                        )
                    closed = e.iov.close_before(*first)
                    self._delete_iov(conn, running, e)
                    if closed is not None:
                        self._insert_row(conn, r_row.id, closed, e.payload, _now())
                    self._log(
                        conn,
                        "close_iov",
                        running,
                        payload=str(e.payload),
                        old=str(e.iov),
                        new=str(closed),
                    )
            added = self._insert_iovs(conn, running, moved)
            self._log(
                conn,
                "running_update",
                running,
                staging=staging,
                valid_from=list(valid_from),
                iovs=len(added),
            )
            return added

    def _snapshot_until(self, conn: Connection, running: str) -> RunKey | None:
        """The last run frozen by a snapshot of ``running``, if any."""
        h = s.history
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
        with self._write() as conn:
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
            for old, new in (
                ("OPEN", "TESTING"),
                ("TESTING", "VALIDATED"),
                ("VALIDATED", "PUBLISHED"),
            ):
                conn.execute(
                    s.globaltags.update().where(s.globaltags.c.id == gid).values(state=new)
                )
                self._log(conn, "state", name, old=old, new=new)
            self._log(conn, "snapshot", name, source=running, until=list(until), iovs=len(items))
            return _tag(self._tag_row(conn, name))

    def history(self, tag: str | None = None, *, limit: int | None = None) -> list[HistoryEntry]:
        """Recorded changes, oldest first (of one tag when given; uploads have no tag)."""
        h = s.history
        q = sa.select(h).order_by(h.c.id)
        if tag is not None:
            q = q.where(h.c.globaltag == tag)
        if limit is not None:
            q = q.order_by(None).order_by(h.c.id.desc()).limit(limit)
        with self._read() as conn:
            rows = list(conn.execute(q))
        rows.sort(key=lambda r: r.id)
        return [
            HistoryEntry(_utc(r.time), r.author, r.action, r.globaltag, json.loads(r.details))
            for r in rows
        ]

    # -- basf2 local databases ---------------------------------------------------------------

    def export_local(
        self, folder: str | os.PathLike[str], tags: str | Sequence[str], *, runs: IoV | None = None
    ) -> list[LocalDbEntry]:
        """Write what ``tags`` (priority order) give, optionally only for ``runs``, as a basf2
        local database (``database.txt`` + ``dbstore_<name>_rev_<revision>.root``).

        The payload files are written byte for byte as stored, so their checksums are kept.
        """
        tags = [tags] if isinstance(tags, str) else list(tags)
        with self._read() as conn:
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
            payload, data, checksum = _payload_bytes(path)
            if payload.name != entry.name:
                raise PayloadError(f"{path}: holds payload {payload.name!r}, not {entry.name!r}")
            loaded.append((entry, payload, data, checksum))
        with self._write() as conn:
            self._open_tag(conn, tag, description or f"imported from {source.folder}")
            stored = [  # revisions follow the file's order
                self._store(conn, payload, data, checksum) for _, payload, data, checksum in loaded
            ]
            taken: dict[str, list[IoV]] = {}
            items: list[tuple[IoV, PayloadInfo]] = []
            for (entry, *_), info in reversed(
                list(zip(loaded, stored, strict=True))
            ):  # later lines win
                for piece in uncovered(entry.iov, taken.get(entry.name, [])):
                    items.append((piece, info))
                taken.setdefault(entry.name, []).append(entry.iov)
            items.sort(key=lambda it: (it[1].name, it[0].start))
            added = self._insert_iovs(conn, tag, items)
            self._log(conn, "import_local", tag, folder=str(source.folder), iovs=len(added))
            return added


def _payload_bytes(item: Payload | str | os.PathLike[str]) -> tuple[Payload, bytes, str]:
    """A payload, its file's bytes and their MD5 (a file is kept as it is)."""
    if isinstance(item, Payload):
        return (item, *item.to_bytes())
    data = Path(item).read_bytes()
    return Payload.from_bytes(data, source=str(item)), data, bytes_md5(data)


def _find(conn: Connection, name: str, content_hash: str) -> PayloadInfo | None:
    """The stored revision of ``name`` with this content, if any."""
    p = s.payloads
    row = conn.execute(
        sa.select(p).where(p.c.name == name, p.c.content_hash == content_hash)
    ).first()
    return None if row is None else _payload_info(row)


def _one_line(err: BaseException) -> str:
    """The driver's message of a database error, on one line."""
    text = str(getattr(err, "orig", None) or err).split("(Background on this error")[0]
    return " ".join(text.split())


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
        created=_utc(row.created),
        author=row.author,
        provenance=json.loads(row.provenance),
    )


def _tag(row: Any) -> GlobalTag:
    return GlobalTag(
        name=row.name,
        type=row.type,
        state=row.state,
        description=row.description,
        created=_utc(row.created),
        modified=_utc(row.modified),
        author=row.author,
    )
