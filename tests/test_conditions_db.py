"""The conditions database, on SQLite and on a real PostgreSQL server.

Every test taking ``db`` (or ``db_url``) runs on both backends. The PostgreSQL ones are marked
``postgres`` and use the session's private server (tests/postgres.py), with a new database per
test. Rules the database must enforce itself are checked through a separate plain DB-API
connection (``sqlite3`` / ``psycopg``), so that it is the database refusing, not the library.
"""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.pool
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
import uproot

from b2calib.conditions import (
    ALLOWED_MOVES,
    STATES,
    ConditionsDB,
    IoV,
    IovEntry,
    LocalDatabase,
    Payload,
    PayloadFile,
)
from b2calib.conditions.payload import ChannelStatus, bytes_md5, file_md5
from b2calib.conditions.tagops import resolve
from b2calib.exceptions import ConditionsError, PayloadError
from b2calib.io import METADATA_KEY, TREE_NAME, FileMetadata, read_metadata
from tests.postgres import PostgresMissing, PostgresServer, find_pg_bin

# The state machine of the issue, written out independently of the code.
EXPECTED_MOVES = {
    ("OPEN", "TESTING"),
    ("OPEN", "RUNNING"),
    ("TESTING", "VALIDATED"),
    ("TESTING", "OPEN"),
    ("VALIDATED", "PUBLISHED"),
    ("VALIDATED", "OPEN"),
    ("PUBLISHED", "INVALID"),
}
# how to reach each state from OPEN
PATH_TO = {
    "OPEN": [],
    "TESTING": ["TESTING"],
    "VALIDATED": ["TESTING", "VALIDATED"],
    "PUBLISHED": ["TESTING", "VALIDATED", "PUBLISHED"],
    "INVALID": ["TESTING", "VALIDATED", "PUBLISHED", "INVALID"],
    "RUNNING": ["RUNNING"],
}
# runs used to compare lookups: several experiments, run 0, runs past every explicit bound
GRID = [(e, r) for e in range(5) for r in [*range(13), 1000]]


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def new_url(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[], str]]:
    """Makes URLs of further empty databases on the same backend as ``db_url``."""
    server: PostgresServer | None = None
    if db_url.startswith("postgresql"):
        server = request.getfixturevalue("postgres_server")
    made: list[str] = []

    def make() -> str:
        if server is None:
            made.append(f"other{len(made)}.sqlite")
            return f"sqlite:///{tmp_path / made[-1]}"
        made.append(server.create_database("other"))
        return server.url(made[-1])

    yield make
    if server is not None:
        for name in made:
            server.drop_database(name)


@pytest.fixture
def db(db_url: str) -> Iterator[ConditionsDB]:
    """A new conditions database; changes are recorded as made by ``alice``."""
    conditions = ConditionsDB(db_url, author="alice")
    yield conditions
    conditions.close()


class Raw:
    """A plain DB-API connection in autocommit mode, beside the library."""

    def __init__(self, url: str) -> None:
        u = sa.engine.make_url(url)
        self.backend = u.get_backend_name()
        self.conn: Any
        if self.backend == "sqlite":
            self.conn = sqlite3.connect(str(u.database), isolation_level=None)
            self.errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        else:
            import psycopg

            self.conn = psycopg.connect(
                host=str(u.query["host"]),
                port=int(str(u.query["port"])),
                user=u.username,
                dbname=u.database,
                autocommit=True,
            )
            self.errors = (psycopg.Error,)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (``?`` placeholders) and return its rows."""
        if self.backend != "sqlite":
            sql = sql.replace("?", "%s")
        cur = self.conn.execute(sql, tuple(params))
        return [tuple(r) for r in cur.fetchall()] if cur.description else []

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params)[0][0]

    def refused(self, sql: str, params: Sequence[Any] = (), match: str = "b2calib: ") -> str:
        """Assert the database refuses ``sql`` with one of the migration's rule messages."""
        with pytest.raises(self.errors) as info:
            self.execute(sql, params)
        assert match in str(info.value), str(info.value)
        return str(info.value)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def raw(db: ConditionsDB) -> Iterator[Raw]:
    connection = Raw(db.url)
    yield connection
    connection.close()


def payload(value: float, name: str = "X", n: int = 3) -> Payload:
    """A small payload whose constants are all ``value`` (distinct values: distinct content)."""
    return Payload(
        name, keys={"channel": np.arange(n, dtype=np.int32)}, values={"value": np.full(n, value)}
    )


def rich_payload(seed: int) -> Payload:
    """A payload with every kind of column and provenance metadata: one row per ECL crystal, as
    the database takes an ECLCrystalEnergy payload (b2calib.conditions.payloadtypes)."""
    rng = np.random.default_rng(seed)
    n = 8736
    return Payload(
        "ECLCrystalEnergy",
        keys={"cellID": np.arange(1, n + 1, dtype=np.int32)},
        values={"value": rng.normal(1, 0.03, n)},
        errors={"value": np.full(n, 0.01)},
        status=np.where(np.arange(n) % 7 == 0, ChannelStatus.DEAD, ChannelStatus.OK),
        metadata={"units": {"value": "1"}, "provenance": {"runs": [seed, seed + 1]}},
    )


def value(p: Payload) -> float:
    return float(p.value()[0])


def make_tag(
    db: ConditionsDB,
    name: str,
    items: Sequence[tuple[Payload, IoV | str]] = (),
    state: str = "OPEN",
) -> list[IovEntry]:
    """Create tag ``name`` holding ``items`` and move it to ``state``."""
    db.create_tag(name)
    entries = db.upload_and_add(
        name, [(p, IoV.parse(i) if isinstance(i, str) else i) for p, i in items]
    )
    for st in PATH_TO[state]:
        db.set_state(name, st)
    return entries


def content(db: ConditionsDB, tag: str) -> list[tuple[str, str, int]]:
    """A tag's IoVs as (name, iov text, revision)."""
    return [(e.name, str(e.iov), e.payload.revision) for e in db.iovs(tag)]


def revisions(db: ConditionsDB, run: tuple[int, int], tags: Sequence[str]) -> dict[str, int]:
    """Payload name -> revision valid for ``run`` through ``tags``."""
    return {n: e.payload.revision for n, e in db.lookup(*run, tags).items()}


def database_state(db: ConditionsDB) -> tuple[Any, ...]:
    """Everything a failed write must leave as it was."""
    tags = [(t.name, t.state, t.modified) for t in db.tags()]
    iovs = {t[0]: content(db, t[0]) for t in tags}
    return tags, iovs, db.payloads(), [(h.action, h.globaltag) for h in db.history()]


# -- the PostgreSQL fixture itself -----------------------------------------------------------


def test_missing_postgres_binaries_say_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(PostgresMissing, match=r"install Debian's package `postgresql`"):
        find_pg_bin(tmp_path)
    (tmp_path / "15" / "bin").mkdir(parents=True)  # a folder without the programs
    with pytest.raises(PostgresMissing, match="initdb, pg_ctl and postgres"):
        find_pg_bin(tmp_path)


@pytest.mark.postgres
def test_postgres_server_is_private_and_running(postgres_server: PostgresServer) -> None:
    assert postgres_server.bindir.parent.parent == Path("/usr/lib/postgresql")
    assert postgres_server.running
    raw = Raw(postgres_server.url("postgres"))
    try:
        assert raw.scalar("SHOW fsync") == "off"
        assert raw.scalar("SHOW listen_addresses") == ""
        assert raw.scalar("SHOW unix_socket_directories") == str(postgres_server.socket_dir)
    finally:
        raw.close()


# -- schema and migrations -------------------------------------------------------------------


def test_schema_matches_migrations(db: ConditionsDB) -> None:
    """The tables of every domain (on the shared MetaData) are what the migrations create."""
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    import b2calib.calibration.jobs
    import b2calib.conditions.tables
    import b2calib.prompt.tables
    import b2calib.qa.store.tables
    import b2calib.review.tables
    from b2calib.db import MIGRATIONS, metadata

    domains = (
        b2calib.conditions.tables,
        b2calib.calibration.jobs,
        b2calib.qa.store.tables,
        b2calib.prompt.tables,
        b2calib.review.tables,
    )
    tables = {"history"} | {
        t.name for d in domains for t in vars(d).values() if isinstance(t, sa.Table)
    }
    assert set(metadata.tables) == tables
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        assert ctx.get_current_revision() == head
        assert compare_metadata(ctx, metadata) == []
        # the comparison does see a difference when there is one
        changed = sa.MetaData()
        for table in metadata.tables.values():
            table.to_metadata(changed)
        sa.Table("extra", changed, sa.Column("id", sa.Integer, primary_key=True))
        assert [d[0] for d in compare_metadata(ctx, changed)] == ["add_table"]
    reopened = ConditionsDB(db.url)  # opening again does not migrate again
    reopened.close()


def test_open_by_path_and_open_errors(tmp_path: Path) -> None:
    by_path = ConditionsDB(tmp_path / "plain.sqlite", author="carol")
    try:
        assert by_path.url == f"sqlite:///{tmp_path / 'plain.sqlite'}"
        assert by_path.create_tag("T").author == "carol"
    finally:
        by_path.close()
    with pytest.raises(ConditionsError, match="cannot open the conditions database"):
        ConditionsDB(tmp_path / "no" / "such" / "folder" / "c.sqlite")
    url = "postgresql+psycopg://user:s3cret@/db?host=/nonexistent-b2calib&port=5"
    with pytest.raises(ConditionsError, match="cannot open the conditions database") as info:
        ConditionsDB(url)
    assert "s3cret" not in str(info.value)
    assert "user:***@" in str(info.value)


def test_guard_triggers_are_installed(raw: Raw) -> None:
    if raw.backend == "sqlite":
        names = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    else:
        names = {r[0] for r in raw.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
    assert {"payloads_immutable", "payload_files_immutable"} <= names
    assert any("iovs" in n for n in names)
    assert any("globaltags" in n for n in names)


# -- global tag states -----------------------------------------------------------------------


def test_allowed_moves_are_the_issue_s() -> None:
    assert set(STATES) == {"OPEN", "TESTING", "VALIDATED", "PUBLISHED", "INVALID", "RUNNING"}
    assert {(a, b) for a, bs in ALLOWED_MOVES.items() for b in bs} == EXPECTED_MOVES


def test_every_state_transition_through_the_api(db: ConditionsDB) -> None:
    for i, (old, new) in enumerate(itertools.product(STATES, STATES)):
        name = f"T{i}"
        make_tag(db, name, state=old)
        assert db.tag(name).state == old
        if old == new:
            assert db.set_state(name, new).state == old  # nothing to do
        elif (old, new) in EXPECTED_MOVES:
            assert db.set_state(name, new.lower()).state == new
            last = db.history(name)[-1]
            assert (last.action, last.details) == ("state", {"old": old, "new": new})
        else:
            with pytest.raises(ConditionsError, match=f"cannot move from {old} to {new}; allowed"):
                db.set_state(name, new)
            assert db.tag(name).state == old
    with pytest.raises(ConditionsError, match="unknown global tag state 'DONE'"):
        db.set_state("T0", "done")
    with pytest.raises(ConditionsError, match="global tag 'nope' does not exist"):
        db.set_state("nope", "TESTING")


def test_every_state_transition_in_the_database(db: ConditionsDB, raw: Raw) -> None:
    for i, (old, new) in enumerate(itertools.product(STATES, STATES)):
        name = f"T{i}"
        make_tag(db, name, state=old)
        sql = f"UPDATE globaltags SET state = '{new}' WHERE name = '{name}'"
        if old == new or (old, new) in EXPECTED_MOVES:
            raw.execute(sql)
            assert db.tag(name).state == new
        else:
            raw.refused(sql)
            assert db.tag(name).state == old
    # the check constraint: no state outside the list
    db.create_tag("U")
    with pytest.raises(raw.errors):
        raw.execute("UPDATE globaltags SET state = 'DONE' WHERE name = 'U'")
    assert db.tag("U").state == "OPEN"


def test_published_and_invalid_tags_are_immutable_in_the_database(
    db: ConditionsDB, raw: Raw
) -> None:
    make_tag(db, "P", [(payload(1), "0,0,-1,-1")], state="PUBLISHED")
    (draft,) = make_tag(db, "D", [(payload(2), "0,0,-1,-1")])
    gid = raw.scalar("SELECT id FROM globaltags WHERE name = 'P'")
    pid = raw.scalar("SELECT id FROM payloads WHERE revision = 1")
    before = content(db, "P")

    def all_refused() -> None:
        raw.refused(f"UPDATE iovs SET final_run = 5, final_exp = 3 WHERE globaltag_id = {gid}")
        raw.refused(f"DELETE FROM iovs WHERE globaltag_id = {gid}")
        raw.refused(
            "INSERT INTO iovs (globaltag_id, payload_id, first_exp, first_run, final_exp, "
            "final_run, created, author) VALUES (?, ?, 7, 0, 7, -1, ?, 'mallory')",
            (gid, pid, datetime.now(UTC)),
        )
        # moving an IoV of another tag into it
        raw.refused(f"UPDATE iovs SET globaltag_id = {gid} WHERE payload_id = {draft.payload.id}")
        raw.refused("UPDATE globaltags SET name = 'Q' WHERE name = 'P'")
        raw.refused("UPDATE globaltags SET description = 'edited' WHERE name = 'P'")
        raw.refused("UPDATE globaltags SET type = 'RELEASE' WHERE name = 'P'")
        raw.refused("DELETE FROM globaltags WHERE name = 'P'")
        assert content(db, "P") == before
        assert [t.name for t in db.tags()] == ["D", "P"]

    all_refused()
    # the library reports the database's refusal as a rule violation
    with (
        pytest.raises(ConditionsError, match="refused by the database: the global tag is PUB"),
        db.write() as conn,
    ):
        conn.execute(sa.text(f"DELETE FROM iovs WHERE globaltag_id = {gid}"))
    assert db.set_state("P", "INVALID").state == "INVALID"
    all_refused()
    for st in STATES:
        if st != "INVALID":
            raw.refused(f"UPDATE globaltags SET state = '{st}' WHERE name = 'P'")
    assert db.tag("P").state == "INVALID"
    # an OPEN tag is not protected: the same statements work on it
    raw.execute("UPDATE globaltags SET description = 'edited' WHERE name = 'D'")
    raw.execute("DELETE FROM iovs WHERE globaltag_id = (SELECT id FROM globaltags WHERE name='D')")
    assert db.iovs("D") == []


def test_tags_are_born_open_in_the_database(db: ConditionsDB, raw: Raw) -> None:
    now = "2026-01-01 00:00:00"
    for state in ("PUBLISHED", "VALIDATED", "RUNNING"):
        raw.refused(
            "INSERT INTO globaltags (name, type, state, description, created, modified, author) "
            f"VALUES ('sneaky', 'DEV', '{state}', '', '{now}', '{now}', 'eve')"
        )
    assert [t.name for t in db.tags()] == []


def test_stored_payloads_are_immutable_in_the_database(db: ConditionsDB, raw: Raw) -> None:
    info = db.upload(payload(1))
    raw.refused(f"UPDATE payloads SET checksum = 'x' WHERE id = {info.id}")
    raw.refused(f"UPDATE payloads SET revision = 9 WHERE id = {info.id}")
    raw.refused(f"UPDATE payload_files SET content = ? WHERE payload_id = {info.id}", [b"junk"])
    raw.refused(f"DELETE FROM payload_files WHERE payload_id = {info.id}")
    raw.refused(f"DELETE FROM payloads WHERE id = {info.id}")
    assert db.payload_info("X", 1) == info
    assert value(db.payload("X", 1)) == 1


# -- modifications ---------------------------------------------------------------------------


def test_only_open_tags_can_be_modified(db: ConditionsDB) -> None:
    info = db.upload(payload(1))
    for state in STATES:
        make_tag(db, state, [(payload(2), "0,0,0,-1")], state=state)
        before = database_state(db)
        if state == "OPEN":
            db.add_iov(state, info, "1,0,-1,-1")
            continue
        hint = {
            "TESTING": r"only OPEN tags can be modified \(move it back to OPEN first\)",
            "VALIDATED": r"only OPEN tags can be modified \(move it back to OPEN first\)",
            "PUBLISHED": r"is PUBLISHED: only OPEN tags can be modified$",
            "INVALID": r"is INVALID: only OPEN tags can be modified$",
            "RUNNING": "is RUNNING: it changes only by a running update",
        }[state]
        with pytest.raises(ConditionsError, match=hint):
            db.add_iov(state, info, "1,0,-1,-1")
        with pytest.raises(ConditionsError, match=hint):
            db.add_iov(state, ("X", 1), IoV(1, 0))
        with pytest.raises(ConditionsError, match=hint):
            db.remove_iov(state, "X", "0,0,0,-1")
        with pytest.raises(ConditionsError, match=hint):  # nothing uploaded either
            db.upload_and_add(state, [(payload(3), IoV(5, 0))])
        assert database_state(db) == before
    assert content(db, "OPEN") == [("X", "0,0,0,-1", 2), ("X", "1,0,-1,-1", 1)]
    for state in ("PUBLISHED", "INVALID"):
        with pytest.raises(ConditionsError, match=f"is {state}: it cannot be modified"):
            db.modify_tag(state, description="new")
    # back to OPEN, a tag can be changed again
    db.set_state("TESTING", "OPEN")
    db.add_iov("TESTING", info, "1,0,-1,-1")
    assert content(db, "TESTING") == [("X", "0,0,0,-1", 2), ("X", "1,0,-1,-1", 1)]


def test_overlapping_iovs_are_refused(db: ConditionsDB) -> None:
    make_tag(db, "T", [(payload(1), "1,0,1,10")])
    other = db.upload(payload(2))
    for iov in ["1,5,2,0", "1,10,1,10", "0,0,-1,-1", "0,0,1,0", "1,3,1,4"]:
        with pytest.raises(ConditionsError, match=f"IoV {iov} of X rev 2 overlaps IoV 1,0,1,10"):
            db.add_iov("T", other, iov)
    db.add_iov("T", other, "1,11,1,-1")  # adjacent after, to the end of experiment 1
    db.add_iov("T", other, "0,0,0,-1")  # adjacent before, ending with experiment 0
    db.add_iov("T", other, "2,0,-1,-1")  # adjacent after the end of experiment 1, open
    with pytest.raises(ConditionsError, match="overlaps IoV 2,0,-1,-1"):
        db.add_iov("T", other, "900,5,900,5")
    db.upload_and_add("T", [(payload(3, name="Y"), IoV(0, 0))])  # another name: no overlap
    assert content(db, "T") == [
        ("X", "0,0,0,-1", 2),
        ("X", "1,0,1,10", 1),
        ("X", "1,11,1,-1", 2),
        ("X", "2,0,-1,-1", 2),
        ("Y", "0,0,-1,-1", 1),
    ]
    # an overlap inside one batch: nothing of the batch is written
    db.create_tag("B")
    before = database_state(db)
    with pytest.raises(ConditionsError, match="overlaps"):
        db.upload_and_add("B", [(payload(4), IoV(0, 0, 3, -1)), (payload(5), IoV(3, 7, 3, 7))])
    assert database_state(db) == before
    assert [p.revision for p in db.payloads("X")] == [1, 2]


def test_stage_inside_the_caller_s_transaction(db: ConditionsDB) -> None:
    """What the calibration job store does in one transaction: stage payloads into a tag
    (created when missing), replacing the IoVs they overlap; a failure keeps nothing."""
    first = [
        (IoV.parse("1,0,1,-1"), PayloadFile.of(payload(1))),
        (IoV.parse("2,0,2,-1"), PayloadFile.of(payload(2))),
    ]
    later = [(IoV.parse("2,5,3,-1"), PayloadFile.of(payload(3)))]
    with db.write() as conn:
        added = db.stage(conn, "staging", first, description="calibration staging", job="a")
    assert [str(e.iov) for e in added] == ["1,0,1,-1", "2,0,2,-1"]
    assert db.tag("staging").description == "calibration staging"

    def stage_then_fail() -> None:
        with db.write() as conn:
            db.stage(conn, "staging", later, description="", job="b")
            raise RuntimeError("the caller fails after staging")

    before = database_state(db)
    with pytest.raises(RuntimeError, match="after staging"):
        stage_then_fail()
    assert database_state(db) == before
    with db.write() as conn:
        db.stage(conn, "staging", later, description="", job="b")
    assert content(db, "staging") == [("X", "1,0,1,-1", 1), ("X", "2,5,3,-1", 3)]
    replaced = [h for h in db.history("staging") if h.action == "replace_iov"]
    assert [h.details for h in replaced] == [{"payload": "X rev 2", "iov": "2,0,2,-1", "job": "b"}]
    db.set_state("staging", "TESTING")
    with pytest.raises(ConditionsError, match="staging is TESTING"), db.write() as conn:
        db.stage(conn, "staging", first, description="")


def test_tag_names_types_and_duplicates(db: ConditionsDB) -> None:
    tag = db.create_tag("main_2026.1+x-y", type="RELEASE", description="d")
    assert (tag.name, tag.type, tag.state, tag.description, tag.author) == (
        "main_2026.1+x-y",
        "RELEASE",
        "OPEN",
        "d",
        "alice",
    )
    with pytest.raises(ConditionsError, match="already exists"):
        db.create_tag("main_2026.1+x-y")
    with pytest.raises(ConditionsError, match="use letters, digits"):
        db.create_tag("bad name")
    with pytest.raises(ConditionsError, match="type 'BETA' is not one of"):
        db.create_tag("t", type="BETA")
    assert db.modify_tag("main_2026.1+x-y", type="DEV").type == "DEV"
    assert [t.name for t in db.tags("open")] == ["main_2026.1+x-y"]
    assert db.tags("RUNNING") == []


# -- payloads --------------------------------------------------------------------------------


def test_payload_revisions_and_dedup(db: ConditionsDB) -> None:
    a1 = db.upload(payload(1), provenance={"job": 1})
    a2 = db.upload(payload(2))
    b1 = db.upload(payload(1, name="Y"))
    again = db.upload(payload(1), provenance={"job": 2})  # same content, new file bytes
    a3 = db.upload(payload(3))
    assert [(i.name, i.revision) for i in (a1, a2, b1, again, a3)] == [
        ("X", 1),
        ("X", 2),
        ("Y", 1),
        ("X", 1),
        ("X", 3),
    ]
    assert again == a1
    assert again.provenance == {"job": 1}  # the stored revision, untouched
    assert [p.revision for p in db.payloads("X")] == [1, 2, 3]
    assert [(p.name, p.revision) for p in db.payloads()] == [("X", 1), ("X", 2), ("X", 3), ("Y", 1)]
    assert db.payload_info("X") == a3
    assert db.payload_info("X", 2) == a2
    assert [value(db.payload("X", r)) for r in (1, 2, 3)] == [1, 2, 3]
    assert value(db.payload(b1)) == 1
    for info in (a1, a2, a3, b1):
        data = db.payload_bytes(info)
        assert bytes_md5(data) == info.checksum
        assert info.size == len(data)
        assert info.author == "alice"
    with pytest.raises(ConditionsError, match="payload 'X' revision 9 is not in"):
        db.payload_info("X", 9)
    with pytest.raises(ConditionsError, match="payload 'Z' is not in"):
        db.payload("Z")
    uploads = [h.details for h in db.history() if h.action == "upload"]
    assert [(d["payload"], d["revision"]) for d in uploads] == [
        ("X", 1),
        ("X", 2),
        ("Y", 1),
        ("X", 3),
    ]


def _disable_payload_guard(raw: Raw) -> None:
    """Storage corruption does not ask the triggers: switch the guard off to simulate it."""
    if raw.backend == "sqlite":
        raw.execute("DROP TRIGGER payload_files_immutable")
        raw.execute("DROP TRIGGER payload_files_undeletable")
    else:
        raw.execute("ALTER TABLE payload_files DISABLE TRIGGER payload_files_immutable")


def test_corrupted_stored_payload_is_detected(db: ConditionsDB, raw: Raw, tmp_path: Path) -> None:
    good = db.upload(rich_payload(1))
    bad = db.upload(rich_payload(2))
    make_tag(db, "T", [], state="OPEN")
    db.add_iov("T", bad, IoV(0, 0))
    data = bytearray(db.payload_bytes(bad))
    data[len(data) // 2] ^= 0x01
    _disable_payload_guard(raw)
    raw.execute(f"UPDATE payload_files SET content = ? WHERE payload_id = {bad.id}", [bytes(data)])
    message = f"payload ECLCrystalEnergy rev {bad.revision}: checksum mismatch"
    for read in (
        lambda: db.payload("ECLCrystalEnergy", bad.revision),
        lambda: db.payload(bad),
        lambda: db.payload_bytes(bad),
        lambda: db.payloads_for(0, 0, ["T"]),
        lambda: db.export_local(tmp_path / "out", "T"),
    ):
        with pytest.raises(PayloadError, match=message) as info:
            read()
        assert bad.checksum in str(info.value)
    assert not (tmp_path / "out" / "database.txt").exists()
    assert value(db.payload(good)) == pytest.approx(rich_payload(1).value()[0])
    # a file gone from the table is reported too
    raw.execute(f"DELETE FROM payload_files WHERE payload_id = {bad.id}")
    with pytest.raises(PayloadError, match="its file is missing from the database"):
        db.payload(bad)


# -- lookup ----------------------------------------------------------------------------------


def test_priority_lookup(db: ConditionsDB) -> None:
    make_tag(db, "high", [(payload(10), "1,5,1,10")])
    make_tag(db, "mid", [(payload(20), "1,0,1,-1"), (payload(21, name="Y"), "0,0,-1,-1")])
    make_tag(db, "low", [(payload(30), "0,0,-1,-1"), (payload(31, name="Z"), "2,0,-1,-1")])
    tags = ["high", "mid", "low"]

    def values(run: tuple[int, int], order: Sequence[str]) -> dict[str, float]:
        return {n: value(p) for n, p in db.payloads_for(*run, order).items()}

    assert values((1, 7), tags) == {"X": 10, "Y": 21}
    assert values((1, 5), tags) == {"X": 10, "Y": 21}
    assert values((1, 11), tags) == {"X": 20, "Y": 21}
    assert values((1, 4), tags) == {"X": 20, "Y": 21}
    assert values((0, 0), tags) == {"X": 30, "Y": 21}
    assert values((2, 0), tags) == {"X": 30, "Y": 21, "Z": 31}
    assert values((99, 99), tags) == {"X": 30, "Y": 21, "Z": 31}
    assert values((1, 7), ["low", "mid", "high"]) == {"X": 30, "Y": 21}
    assert values((1, 7), ["high"]) == {"X": 10}
    assert values((1, 4), ["high"]) == {}
    assert set(db.lookup(2, 0, tags, names=["Z", "Q"])) == {"Z"}
    entry = db.lookup(1, 7, tags)["X"]
    assert (entry.globaltag, str(entry.iov), entry.payload.revision) == ("high", "1,5,1,10", 1)
    assert [e.name for e in db.iovs("mid", run=(5, 0))] == ["Y"]
    with pytest.raises(ConditionsError, match="global tag 'nope' does not exist"):
        db.lookup(0, 0, ["high", "nope"])


def test_lookup_many_equals_lookup(db: ConditionsDB) -> None:
    rnd = random.Random(7)
    serial = itertools.count()
    for tag in ("A", "B", "C"):
        items: list[tuple[Payload, IoV]] = []
        for name in ("X", "Y", "Z"):
            cuts = sorted(rnd.sample([(e, r) for e in range(6) for r in range(0, 40, 3)], 5))
            for start, nxt in itertools.pairwise([*cuts, None]):
                if rnd.random() < 0.25:
                    continue  # a gap
                if nxt is None:
                    iov = IoV(*start) if rnd.random() < 0.7 else IoV(*start, start[0], -1)
                else:
                    iov = IoV.from_keys(
                        start, (nxt[0], nxt[1] - 1) if nxt[1] else (nxt[0] - 1, 1 << 62)
                    )
                items.append((payload(next(serial), name), iov))
        make_tag(db, tag, items)
    tags = ["B", "A", "C"]
    runs = [(e, r) for e in range(7) for r in range(600)]
    assert len(runs) > 3000
    got = db.lookup_many(runs, tags)
    assert set(got) == set(runs)
    # reference: per run, the first tag with an IoV of the name containing it
    per_tag = {t: db.iovs(t) for t in tags}
    found = 0
    for run in runs:
        want: dict[str, int] = {}
        for t in tags:
            for e in per_tag[t]:
                if e.name not in want and e.iov.contains(*run):
                    want[e.name] = e.payload.id
        assert {n: e.payload.id for n, e in got[run].items()} == want, run
        found += len(want)
    assert found > len(runs)  # the layout is not trivially empty
    for run in [*rnd.sample(runs, 40), (0, 0), (6, 599), (3, 36), (3, 37)]:
        assert db.lookup(*run, tags) == got[run]
    only_y = db.lookup_many(runs[:50], tags, names=["Y"])
    assert all(set(v) <= {"Y"} for v in only_y.values())


def old_lookup(
    db: ConditionsDB, runs: Sequence[tuple[int, int]], tags: Sequence[str], names: Any = None
) -> dict[tuple[int, int], dict[str, IovEntry]]:
    """The lookup as b2calib 0.1.0 made it: every IoV of every tag as an IovEntry (names
    filtered), then tagops.resolve."""
    layers = [
        [(e.name, e.iov, e) for e in db.iovs(t) if names is None or e.name in names] for t in tags
    ]
    return resolve(runs, layers)


def random_stack(db: ConditionsDB, seed: int) -> list[tuple[int, int]]:
    """Three tags (PUBLISHED, VALIDATED, OPEN) of 4 names with random IoVs of every shape: open
    (-1, -1), to the end of an experiment (-1), closed across an experiment boundary, per run,
    with gaps; returns every IoV's bounds and the runs around them."""
    rnd = random.Random(seed)
    serial = itertools.count()
    edges: set[tuple[int, int]] = set()
    for tag, state in (("rel", "PUBLISHED"), ("val", "VALIDATED"), ("top", "OPEN")):
        items: list[tuple[Payload, IoV]] = []
        for name in ("A", "B", "C", "D"):
            if rnd.random() < 0.2:
                continue  # a tag without the name
            cuts = sorted(rnd.sample([(e, r) for e in range(4) for r in range(12)], 6))
            for start, nxt in itertools.pairwise([*cuts, None]):
                shape = rnd.random()
                if shape < 0.2:
                    continue  # a gap
                if nxt is None:
                    iov = IoV(*start) if shape < 0.6 else IoV(*start, start[0], -1)
                elif shape < 0.4:
                    iov = IoV.run(*start)
                else:  # up to the run before the next cut, maybe across experiments
                    iov = IoV.from_keys(
                        start, (nxt[0], nxt[1] - 1) if nxt[1] else (nxt[0] - 1, 1 << 62)
                    )
                edges |= {iov.start, (iov.final_exp, iov.final_run)}
                items.append((payload(next(serial) % 5, name), iov))  # revisions reused
        make_tag(db, tag, items, state)
    runs = {
        (e + de, max(r + dr, 0))
        for e, r in edges
        if e >= 0 and r >= 0
        for de in (0, 1)
        for dr in (-1, 0, 1)
    }
    runs |= {(e, r) for e in range(6) for r in (0, 1, 11, 12, 13, 500, 2**31 - 1)}
    return sorted(runs)


def test_lookup_many_gives_the_old_answers_on_random_stacks(db: ConditionsDB) -> None:
    runs = random_stack(db, 11)
    found = 0
    for tags in (["top", "val", "rel"], ["rel", "top"], ["val"], ["top", "top", "rel"]):
        want = old_lookup(db, runs, tags)
        got = db.lookup_many(runs, tags)
        assert list(got) == list(want)
        for run in runs:  # every (run, name), 'no payload' included, in the same order
            assert list(got[run].items()) == list(want[run].items()), (tags, run)
        found += sum(map(len, want.values()))
        names = {"B", "D", "Q"}
        assert db.lookup_many(runs, tags, names=names) == old_lookup(db, runs, tags, names)
    assert 0 < found < 4 * 4 * len(runs)  # both hits and 'no payload' are checked
    # runs given as numpy pairs, in any order and repeated, answer the same
    shuffled = [*runs[::-1], runs[0]]
    got = db.lookup_many(np.array(shuffled), ["top", "val", "rel"])
    assert dict(got) == dict(db.lookup_many(runs, ["top", "val", "rel"]))
    assert db.lookup_many([], ["top"]) == {}
    with pytest.raises(ConditionsError, match="global tag 'nope' does not exist"):
        db.lookup_many(runs, ["top", "nope"])


def test_lookup_sees_every_write_to_a_tag_it_keeps(db: ConditionsDB, new_url: Any) -> None:
    """The lookup keeps each tag's IoVs until a write to the tag: every write through b2calib
    (of this process or another) is seen at the next lookup, and a lookup writes nothing."""
    runs = [*random_stack(db, 12), (8, 0), (8, 7), (9, 0), (9, 3), (9, 5), (9, 6)]
    tags = ["top", "val", "rel"]

    def same() -> None:
        assert dict(db.lookup_many(runs, tags)) == old_lookup(db, runs, tags)

    same()
    logged = len(db.history())
    same()
    assert len(db.history()) == logged  # looking up writes nothing
    info = db.upload(payload(99, "A"))
    db.add_iov("top", info, "9,0,9,5")
    assert db.lookup(9, 3, tags)["A"].payload == info
    same()
    db.remove_iov("top", "A", "9,0,9,5")
    assert "A" not in db.lookup(9, 3, ["top"])
    same()
    other = ConditionsDB(db.url, author="bob")  # another writer, as another process would be
    with other.write() as conn:
        other.stage(
            conn, "top", [(IoV(9, 0, 9, 5), PayloadFile.of(payload(98, "A")))], description=""
        )
    other.close()
    assert value(db.payload(db.lookup(9, 3, tags)["A"].payload)) == 98
    same()
    db.set_state("val", "OPEN")  # a state move, then a write to the reopened tag
    same()
    new = db.upload(payload(97, "E"))
    db.add_iov("val", new, "8,0,-1,-1")
    assert db.lookup(8, 7, tags)["E"].payload == new
    same()
    # the promises of the database hold: a PUBLISHED tag refuses a change after lookups
    with pytest.raises(ConditionsError, match="PUBLISHED"):
        db.add_iov("rel", ("A", 1), "20,0,20,1")
    assert db.tag("rel").state == "PUBLISHED"


# -- browsing --------------------------------------------------------------------------------


def test_tag_sizes_count_names_iovs_and_revisions(db: ConditionsDB) -> None:
    make_tag(
        db,
        "A",
        [(payload(1), "1,0,1,4"), (payload(2), "1,5,1,-1"), (payload(3, name="Y"), "0,0,-1,-1")],
    )
    db.create_tag("empty")
    db.clone_tag("A", "B")
    db.add_iov("B", ("X", 1), "2,0,2,9")  # a revision already in the tag, a second IoV
    sizes = db.tag_sizes()
    assert list(sizes) == ["A", "B", "empty"]
    assert (sizes["A"].payloads, sizes["A"].iovs, sizes["A"].revisions) == (2, 3, 3)
    assert (sizes["B"].payloads, sizes["B"].iovs, sizes["B"].revisions) == (2, 4, 3)
    assert (sizes["empty"].payloads, sizes["empty"].iovs, sizes["empty"].revisions) == (0, 0, 0)
    for tag, size in sizes.items():
        entries = db.iovs(tag)
        assert size.iovs == len(entries)
        assert size.payloads == len({e.name for e in entries})
        assert size.revisions == len({e.payload.id for e in entries})


def test_iov_table_columns_and_run_axis(db: ConditionsDB) -> None:
    make_tag(
        db,
        "T",
        [
            (payload(1), "12,1,12,3"),
            (payload(2), "12,4,12,-1"),  # to the end of experiment 12
            (payload(3), "14,2,14,6"),
            (payload(4), "16,1,-1,-1"),  # for ever
            (payload(5, name="Y"), "12,2,16,3"),  # across experiments
        ],
    )
    table = db.iov_table("T")
    entries = db.iovs("T")
    assert len(table) == len(entries) == 5
    assert table.tag == "T"
    assert table.names == ("X", "Y")
    assert table.name.tolist() == [e.name for e in entries]
    assert table.revision.tolist() == [e.payload.revision for e in entries]
    assert table.checksum.tolist() == [e.payload.checksum for e in entries]
    assert table.iov_text == [str(e.iov) for e in entries]
    assert table.open_end.tolist() == [False, True, False, True, False]
    # the axis shows each experiment from its lowest to its highest explicit bound
    axis = table.run_axis()
    assert axis.experiments.tolist() == [12, 14, 16]
    assert axis.first.tolist() == [1, 2, 1]
    assert axis.last.tolist() == [4, 6, 3]
    assert axis.starts.tolist() == [0.0, 4.0, 9.0]
    assert axis.end == 12.0
    assert axis.position(14, 2) == 4.0
    assert axis.position(16, 3) == 11.0
    x0, x1 = table.bars(axis)
    assert x0.tolist() == [0.0, 3.0, 4.0, 9.0, 1.0]
    # 12,1-3 ends after run 3; 12,4,12,-1 at the end of exp 12; for ever at the axis' end
    assert x1.tolist() == [3.0, 4.0, 9.0, 12.0, 12.0]
    # runs a user asks about widen the axis, a new experiment among the others
    wider = table.run_axis([(12, 30), (15, 7)])
    assert wider.experiments.tolist() == [12, 14, 15, 16]
    assert wider.last.tolist() == [30, 6, 7, 3]
    assert wider.position(15, 7) == 35.0
    with pytest.raises(KeyError, match="experiment 13 is not on the run axis"):
        axis.position(13, 1)
    with pytest.raises(ConditionsError, match="global tag 'nope' does not exist"):
        db.iov_table("nope")
    db.create_tag("empty")
    empty = db.iov_table("empty")
    assert len(empty) == 0
    assert empty.names == ()
    assert empty.run_axis().end == 0.0


def test_lookup_stack_names_the_tag_that_answers_and_the_shadowed(db: ConditionsDB) -> None:
    make_tag(db, "high", [(payload(10), "1,5,1,10")])
    make_tag(db, "mid", [(payload(20), "1,0,1,-1"), (payload(21, name="Y"), "0,0,-1,-1")])
    make_tag(db, "low", [(payload(30), "0,0,-1,-1"), (payload(31, name="Z"), "2,0,-1,-1")])
    tags = ["high", "mid", "low"]
    stack = db.lookup_stack(1, 7, tags)
    assert list(stack) == ["X", "Y"]
    assert [(e.globaltag, e.priority, str(e.iov), e.applies) for e in stack["X"]] == [
        ("high", 0, "1,5,1,10", True),
        ("mid", 1, "1,0,1,-1", False),
        ("low", 2, "0,0,-1,-1", False),
    ]
    assert [(e.globaltag, e.applies) for e in stack["Y"]] == [("mid", True)]
    # on every run of a grid: the first entry is what lookup gives, the others are every
    # other tag holding the name at that run, in the stack's order
    for order in (tags, ["low", "high"], ["mid"]):
        for run in GRID:
            got = db.lookup_stack(*run, order)
            want = db.lookup(*run, order)
            assert set(got) == set(want), run
            for name, entries in got.items():
                first = entries[0]
                e = want[name]
                assert first.applies
                assert not any(x.applies for x in entries[1:])
                assert (first.globaltag, first.revision, first.checksum, first.iov) == (
                    e.globaltag,
                    e.payload.revision,
                    e.payload.checksum,
                    e.iov,
                )
                holding = [t for t in order if any(x.name == name for x in db.iovs(t, run=run))]
                assert [x.globaltag for x in entries] == holding
    assert list(db.lookup_stack(1, 7, tags, names=["Y", "Q"])) == ["Y"]
    assert list(db.lookup_stack(1, 7, "mid")) == ["X", "Y"]
    with pytest.raises(ConditionsError, match="global tag 'nope' does not exist"):
        db.lookup_stack(0, 0, ["high", "nope"])


def write_skim(path: Path, globaltag: str, exp: int = 3, run: int = 7) -> Path:
    """A skim-like ROOT file recording the global tags it was processed with."""
    meta = FileMetadata(
        exp=exp, run=run, skim="hlt_bhabha", n_events=3, globaltag=globaltag, release="test"
    )
    with uproot.recreate(path) as f:
        f[METADATA_KEY] = meta.to_json()
        f.mktree(TREE_NAME, {"nTracks": np.int32})
        f[TREE_NAME].extend({"nTracks": np.array([2, 4, 3], dtype=np.int32)})
    return path


def test_replay_uses_the_file_s_global_tags(db: ConditionsDB, tmp_path: Path) -> None:
    make_tag(db, "tagA", [(payload(1), "3,5,3,9")])
    make_tag(db, "tagB", [(payload(2), "0,0,-1,-1"), (payload(3, name="Y"), "3,0,3,-1")])
    path = write_skim(tmp_path / "cdst_a.root", "tagA,tagB")
    assert read_metadata(path).globaltag == "tagA,tagB"
    used = db.replay(path)
    assert list(used) == [(3, 7)]
    assert {n: (e.globaltag, e.payload.revision) for n, e in used[(3, 7)].items()} == {
        "X": ("tagA", 1),
        "Y": ("tagB", 1),
    }
    assert used == db.lookup_many([(3, 7)], ["tagA", "tagB"])
    # priority is the file's order; spaces around names do not matter
    swapped = db.replay(write_skim(tmp_path / "cdst_b.root", " tagB , tagA "))
    assert swapped[(3, 7)]["X"].payload.revision == 2
    other_run = db.replay(write_skim(tmp_path / "cdst_c.root", "tagA,tagB", run=10))
    assert other_run[(3, 10)]["X"].globaltag == "tagB"
    with pytest.raises(ConditionsError, match="records no global tag"):
        db.replay(write_skim(tmp_path / "cdst_d.root", " , "))
    with pytest.raises(ConditionsError, match="global tag 'tagC' does not exist"):
        db.replay(write_skim(tmp_path / "cdst_e.root", "tagC"))


# -- tag operations --------------------------------------------------------------------------


def test_diff(db: ConditionsDB) -> None:
    make_tag(
        db,
        "A",
        [
            (payload(1), "0,0,1,-1"),
            (payload(2), "2,0,-1,-1"),
            (payload(5, name="Y"), "0,0,-1,-1"),
            (payload(6, name="W"), "0,0,4,-1"),
        ],
    )
    db.clone_tag("A", "B")
    assert not db.diff("A", "B")
    db.remove_iov("B", "Y", "0,0,-1,-1")
    db.remove_iov("B", "X", "2,0,-1,-1")
    db.upload_and_add("B", [(payload(3), IoV(2, 0)), (payload(7, name="Z"), IoV(1, 0, 1, 9))])
    db.remove_iov("B", "W", "0,0,4,-1")
    db.add_iov("B", ("W", 1), "0,0,5,-1")  # same payload, other end
    d = db.diff("A", "B")
    assert bool(d)
    assert [(n, str(i), p.revision) for n, i, p in d.added] == [("Z", "1,0,1,9", 1)]
    assert [(n, str(i), p.revision) for n, i, p in d.removed] == [("Y", "0,0,-1,-1", 1)]
    assert [
        ((a[0], str(a[1]), a[2].revision), (str(b[1]), b[2].revision)) for a, b in d.changed
    ] == [
        (("W", "0,0,4,-1", 1), ("0,0,5,-1", 1)),
        (("X", "2,0,-1,-1", 2), ("2,0,-1,-1", 3)),
    ]
    back = db.diff("B", "A")
    assert [n for n, _, _ in back.added] == ["Y"]
    assert [n for n, _, _ in back.removed] == ["Z"]


def test_merge_by_priority(db: ConditionsDB) -> None:
    make_tag(db, "hi", [(payload(1), "1,0,1,-1"), (payload(5, name="Y"), "0,0,-1,-1")])
    make_tag(
        db,
        "lo",
        [(payload(2), "0,0,-1,-1"), (payload(7, name="Z"), "2,0,-1,-1")],
        state="PUBLISHED",
    )
    db.modify_tag("hi", type="RELEASE")
    merged = db.merge("m", ["hi", "lo"])
    assert (merged.state, merged.type, merged.description) == ("OPEN", "RELEASE", "merge of hi, lo")
    assert content(db, "m") == [
        ("X", "0,0,0,-1", 2),
        ("X", "1,0,1,-1", 1),
        ("X", "2,0,-1,-1", 2),
        ("Y", "0,0,-1,-1", 1),
        ("Z", "2,0,-1,-1", 1),
    ]
    for run in GRID:
        assert revisions(db, run, ["m"]) == revisions(db, run, ["hi", "lo"]), run
    assert content(db, "lo") == [("X", "0,0,-1,-1", 2), ("Z", "2,0,-1,-1", 1)]
    assert db.history("m")[-1].details == {"sources": ["hi", "lo"]}
    before = database_state(db)
    with pytest.raises(ConditionsError, match="already exists"):
        db.merge("hi", ["lo"])
    with pytest.raises(ConditionsError, match="'nope' does not exist"):
        db.merge("m2", ["hi", "nope"])
    assert database_state(db) == before


def test_clone(db: ConditionsDB) -> None:
    make_tag(db, "P", [(payload(1), "0,0,3,-1"), (payload(2, name="Y"), "1,0,-1,-1")])
    db.set_state("P", "TESTING")
    db.set_state("P", "VALIDATED")
    db.set_state("P", "PUBLISHED")
    clone = db.clone_tag("P", "C")
    assert (clone.state, clone.description, clone.type) == ("OPEN", "clone of P", "DEV")
    assert [(e.name, e.iov, e.payload) for e in db.iovs("C")] == [
        (e.name, e.iov, e.payload) for e in db.iovs("P")
    ]
    db.add_iov("C", ("X", 1), "4,0,-1,-1")
    assert content(db, "P") == [("X", "0,0,3,-1", 1), ("Y", "1,0,-1,-1", 1)]
    assert [h.details for h in db.history("C") if h.action == "clone"] == [
        {"source": "P", "iovs": 2}
    ]


def test_history_records_who_when_what(db: ConditionsDB) -> None:
    t0 = datetime.now(UTC)
    info = db.upload(payload(1))
    db.create_tag("T", description="first")
    db.add_iov("T", info, "0,0,4,-1")
    db.set_state("T", "TESTING")
    db.set_state("T", "OPEN")
    db.modify_tag("T", description="second")
    db.remove_iov("T", "X", "0,0,4,-1")
    bob = ConditionsDB(db.url, author="bob")
    try:
        bob.add_iov("T", ("X", 1), "5,0,-1,-1")
    finally:
        bob.close()
    t1 = datetime.now(UTC)
    hist = db.history("T")
    assert [(h.action, h.author) for h in hist] == [
        ("create", "alice"),
        ("add_iov", "alice"),
        ("state", "alice"),
        ("state", "alice"),
        ("modify", "alice"),
        ("remove_iov", "alice"),
        ("add_iov", "bob"),
    ]
    assert [h.details for h in hist] == [
        {"type": "DEV", "description": "first"},
        {"payload": "X", "revision": 1, "iov": "0,0,4,-1"},
        {"old": "OPEN", "new": "TESTING"},
        {"old": "TESTING", "new": "OPEN"},
        {"description": "second"},
        {"payload": "X", "iov": "0,0,4,-1"},
        {"payload": "X", "revision": 1, "iov": "5,0,-1,-1"},
    ]
    times = [h.time for h in hist]
    assert all(t.tzinfo is not None for t in times)
    assert t0 <= times[0]
    assert times[-1] <= t1
    assert times == sorted(times)
    assert all(h.globaltag == "T" for h in hist)
    (upload,) = db.history(None)[:1]
    assert (upload.action, upload.globaltag, upload.author) == ("upload", None, "alice")
    assert upload.details == {"payload": "X", "revision": 1, "checksum": info.checksum}
    assert db.history("T", limit=2) == hist[-2:]
    assert [h.action for h in db.history(limit=1)] == ["add_iov"]
    tag = db.tag("T")
    assert tag.author == "alice"
    assert tag.created < tag.modified <= t1


# -- running update and snapshot -------------------------------------------------------------


def running_setup(db: ConditionsDB) -> None:
    """RUNNING tag ``R`` with X rev 1 and Y rev 1 for all runs."""
    make_tag(db, "R", [(payload(1), "0,0,-1,-1"), (payload(100, name="Y"), "0,0,-1,-1")])
    db.set_state("R", "RUNNING")


def staging(
    db: ConditionsDB, name: str, items: Sequence[tuple[Payload, str]], state: str = "VALIDATED"
) -> None:
    """A staging tag, VALIDATED by default."""
    make_tag(db, name, items, state=state)


# the running update's rules and modes: tests/test_running_update.py


def test_snapshot(db: ConditionsDB) -> None:
    running_setup(db)
    staging(db, "S1", [(payload(2), "0,0,-1,-1")])
    db.running_update("R", "S1", valid_from=(1, 10))
    answers = {run: revisions(db, run, ["R"]) for run in GRID}
    snap = db.snapshot("R", "snap", until=(2, 3))
    assert (snap.state, snap.description) == ("PUBLISHED", "snapshot of R up to run 2.3")
    assert content(db, "snap") == [
        ("X", "0,0,1,9", 1),
        ("X", "1,10,2,3", 2),
        ("Y", "0,0,2,3", 1),
    ]
    upto = [run for run in GRID if run <= (2, 3)]
    for run in GRID:
        assert revisions(db, run, ["snap"]) == (answers[run] if run <= (2, 3) else {}), run
    assert [h.action for h in db.history("snap")][-4:] == ["state", "state", "state", "snapshot"]
    # an update reaching into the frozen runs would make the snapshot lie: refused
    staging(db, "S0", [(payload(3), "0,0,-1,-1")])
    with pytest.raises(ConditionsError, match="R was snapshot up to run 2,3: an update must"):
        db.running_update("R", "S0", valid_from=(2, 3))
    # later running updates change neither the snapshot nor the runs it covers
    staging(db, "S2", [(payload(3), "0,0,-1,-1"), (payload(101, name="Y"), "0,0,-1,-1")])
    db.running_update("R", "S2", valid_from=(3, 0))
    assert content(db, "snap") == [
        ("X", "0,0,1,9", 1),
        ("X", "1,10,2,3", 2),
        ("Y", "0,0,2,3", 1),
    ]
    for run in upto:
        assert revisions(db, run, ["snap"]) == revisions(db, run, ["R"]) == answers[run]
    assert revisions(db, (3, 0), ["R"]) == {"X": 3, "Y": 2}
    with pytest.raises(ConditionsError, match="PUBLISHED: only OPEN tags can be modified"):
        db.add_iov("snap", ("X", 3), "3,0,-1,-1")
    with pytest.raises(ConditionsError, match="snapshot: S1 is VALIDATED, not RUNNING"):
        db.snapshot("S1", "snap2", until=(2, 3))
    with pytest.raises(ConditionsError, match="already exists"):
        db.snapshot("R", "snap", until=(4, 0))
    # a snapshot to the end of an experiment
    db.snapshot("R", "snap3", until=(2, -1))
    assert content(db, "snap3")[-1] == ("Y", "0,0,2,-1", 1)


# -- basf2 local databases -------------------------------------------------------------------


def local_lines(folder: Path) -> list[str]:
    return (folder / "database.txt").read_text().splitlines()


def test_export_import_round_trip(
    db: ConditionsDB, new_url: Callable[[], str], tmp_path: Path
) -> None:
    for seed in (1, 2, 3):
        db.upload(rich_payload(seed))
    make_tag(db, "T", [(payload(7, name="Y"), "0,0,-1,-1")])
    db.add_iov("T", ("ECLCrystalEnergy", 3), "0,0,0,-1")
    db.add_iov("T", ("ECLCrystalEnergy", 1), "1,0,-1,-1")
    for state in PATH_TO["PUBLISHED"]:
        db.set_state("T", state)
    first = tmp_path / "export1"
    entries = db.export_local(first, "T")
    assert local_lines(first) == [
        "dbstore/ECLCrystalEnergy 3 0,0,0,-1",
        "dbstore/ECLCrystalEnergy 1 1,0,-1,-1",
        "dbstore/Y 1 0,0,-1,-1",
    ]
    assert [e.line() for e in entries] == local_lines(first)
    assert sorted(p.name for p in first.glob("*.root")) == [
        "dbstore_ECLCrystalEnergy_rev_1.root",
        "dbstore_ECLCrystalEnergy_rev_3.root",
        "dbstore_Y_rev_1.root",
    ]
    for e in entries:  # files byte for byte as stored: the checksums are kept
        info = db.payload_info(e.name, e.revision)
        assert file_md5(first / e.filename) == info.checksum
        assert (first / e.filename).read_bytes() == db.payload_bytes(info)
    with pytest.raises(ConditionsError, match="exists already; export into a new folder"):
        db.export_local(first, "T")

    second_db = ConditionsDB(new_url(), author="bob")
    imported = second_db.import_local(first, "T2")
    assert [(e.name, str(e.iov)) for e in imported] == [(e.name, str(e.iov)) for e in entries]
    second = tmp_path / "export2"
    entries2 = second_db.export_local(second, "T2")
    # the same IoVs and files; revisions are numbered anew, in the order of the lines
    assert local_lines(second) == [
        "dbstore/ECLCrystalEnergy 1 0,0,0,-1",
        "dbstore/ECLCrystalEnergy 2 1,0,-1,-1",
        "dbstore/Y 1 0,0,-1,-1",
    ]
    for a, b in zip(entries, entries2, strict=True):
        assert (a.name, a.iov) == (b.name, b.iov)
        assert (first / a.filename).read_bytes() == (second / b.filename).read_bytes()
        pa, pb = db.payload(a.name, a.revision), second_db.payload(b.name, b.revision)
        assert pa.same_content(pb)
        assert pa.metadata == pb.metadata
        assert db.payload_info(a.name, a.revision).checksum == (
            second_db.payload_info(b.name, b.revision).checksum
        )
    assert second_db.tag("T2").description == f"imported from {first}"
    assert second_db.history("T2")[-1].details == {"folder": str(first), "iovs": 3}
    second_db.close()

    # once numbered in line order, a round trip is exact
    third_db = ConditionsDB(new_url())
    third_db.import_local(second, "T3")
    third = tmp_path / "export3"
    third_db.export_local(third, "T3")
    third_db.close()
    assert local_lines(third) == local_lines(second)
    for path in second.glob("*.root"):
        assert (third / path.name).read_bytes() == path.read_bytes()


def test_export_of_a_lookup_over_runs_and_tags(db: ConditionsDB, tmp_path: Path) -> None:
    make_tag(db, "hi", [(payload(1), "1,5,1,10"), (payload(5, name="Y"), "0,0,-1,-1")])
    make_tag(db, "lo", [(payload(2), "0,0,-1,-1"), (payload(7, name="Z"), "2,0,-1,-1")])
    runs = IoV(1, 0, 2, 4)
    entries = db.export_local(tmp_path / "x", ["hi", "lo"], runs=runs)
    assert local_lines(tmp_path / "x") == [
        "dbstore/X 2 1,0,1,4",
        "dbstore/X 1 1,5,1,10",
        "dbstore/X 2 1,11,2,4",
        "dbstore/Y 1 1,0,2,4",
        "dbstore/Z 1 2,0,2,4",
    ]
    assert all(runs.covers(e.iov) for e in entries)
    local = LocalDatabase(tmp_path / "x")
    for run in GRID:
        for name in ("X", "Y", "Z"):
            want = db.lookup(*run, ["hi", "lo"]).get(name)
            if want is None or not runs.contains(*run):
                with pytest.raises(PayloadError, match="no payload"):
                    local.lookup(name, *run)
            else:
                assert value(local.lookup(name, *run)) == value(db.payload(want.payload))


def test_import_later_lines_win(db: ConditionsDB, tmp_path: Path) -> None:
    local = LocalDatabase(tmp_path / "local")
    local.add(payload(1), (0, 0, -1, -1))
    local.add(payload(2), (1, 0, 1, -1))
    local.add(payload(3), (1, 5, 2, -1))
    local.add(payload(9, name="Y"), (0, 0, 0, 3))
    imported = db.import_local(tmp_path / "local", "T")
    assert content(db, "T") == [
        ("X", "0,0,0,-1", 1),
        ("X", "1,0,1,4", 2),
        ("X", "1,5,2,-1", 3),
        ("X", "3,0,-1,-1", 1),
        ("Y", "0,0,0,3", 1),
    ]
    assert len(imported) == 5
    for run in GRID:
        for name in ("X", "Y"):
            got = db.lookup(*run, ["T"]).get(name)
            if got is None:
                with pytest.raises(PayloadError, match="no payload"):
                    local.lookup(name, *run)
            else:
                assert value(db.payload(got.payload)) == value(local.lookup(name, *run))
    # importing again into the same tag: same contents are reused, the overlap is refused
    before = database_state(db)
    with pytest.raises(ConditionsError, match="overlaps"):
        db.import_local(tmp_path / "local", "T")
    assert database_state(db) == before


def _local_db(folder: Path) -> LocalDatabase:
    local = LocalDatabase(folder)
    local.add(payload(1), (0, 0, -1, -1))
    local.add(payload(2, name="Y"), (0, 0, 4, -1))
    local.add(payload(3, name="Z"), (2, 0, -1, -1))
    return local


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated", "renamed"])
def test_import_is_all_or_nothing(db: ConditionsDB, tmp_path: Path, damage: str) -> None:
    local = _local_db(tmp_path / "local")
    make_tag(db, "keep", [(payload(50, name="W"), "0,0,-1,-1")])
    before = database_state(db)
    victim = local.folder / local.entries()[1].filename
    if damage == "missing":
        victim.unlink()
        message = "payload file of line 'dbstore/Y 1 0,0,4,-1' is missing"
    elif damage == "garbage":
        victim.write_bytes(b"root" + bytes(200))
        message = "not a readable b2calib payload"
    elif damage == "truncated":
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size * 2 // 3])
        message = "not a readable b2calib payload"
    else:
        victim.write_bytes((local.folder / local.entries()[0].filename).read_bytes())
        message = "holds payload 'X', not 'Y'"
    with pytest.raises(PayloadError, match=message) as info:
        db.import_local(local.folder, "new")
    assert "dbstore_Y_rev_1.root" in str(info.value)
    assert database_state(db) == before
    with pytest.raises(PayloadError, match=message):
        db.import_local(local.folder, "keep")
    assert database_state(db) == before


def test_import_into_a_tag_that_refuses_stores_nothing(db: ConditionsDB, tmp_path: Path) -> None:
    local = _local_db(tmp_path / "local")
    make_tag(db, "validated", [(payload(50, name="W"), "0,0,-1,-1")], state="VALIDATED")
    make_tag(db, "busy", [(payload(51, name="Z"), "5,0,-1,-1")])  # Z overlaps the import
    before = database_state(db)
    with pytest.raises(ConditionsError, match="validated is VALIDATED: only OPEN"):
        db.import_local(local.folder, "validated")
    with pytest.raises(ConditionsError, match="IoV 2,0,-1,-1 of Z rev 2 overlaps IoV 5,0,-1,-1"):
        db.import_local(local.folder, "busy")  # fails after storing X and Y: rolled back
    assert database_state(db) == before
    assert [p.name for p in db.payloads()] == ["W", "Z"]
    empty = LocalDatabase(tmp_path / "empty")
    with pytest.raises(ConditionsError, match="no payload to import"):
        db.import_local(empty.folder, "new")


def test_corrupted_exported_payload_is_caught_on_import(
    db: ConditionsDB, new_url: Callable[[], str], tmp_path: Path
) -> None:
    make_tag(db, "T", [(rich_payload(1), "0,0,-1,-1"), (payload(2), "0,0,-1,-1")])
    folder = tmp_path / "export"
    entries = db.export_local(folder, "T")
    path = folder / entries[0].filename
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3000])  # a transfer that stopped short
    other = ConditionsDB(new_url())
    try:
        before = database_state(other)
        with pytest.raises(PayloadError, match=f"{entries[0].filename}: not a readable"):
            other.import_local(folder, "T")
        assert database_state(other) == before
    finally:
        other.close()


# -- concurrency -----------------------------------------------------------------------------

N_WORKERS = 4
_barrier: Any = None


def _init_worker(barrier: Any) -> None:
    global _barrier
    _barrier = barrier


def _writer(url: str, worker: int, n: int) -> list[tuple[int, float]]:
    """Upload ``n`` distinct payloads named X and add each to the worker's own tag."""
    db = ConditionsDB(url, author=f"worker{worker}")
    _barrier.wait(timeout=120)
    out = []
    try:
        for k in range(n):
            v = float(worker * 1000 + k)
            (entry,) = db.upload_and_add(f"W{worker}", [(payload(v), IoV(k, 0, k, -1))])
            out.append((entry.payload.revision, v))
    finally:
        db.close()
    return out


def _opener(url: str, worker: int) -> int:
    """Open a database that may not exist yet, at the same time as the others."""
    _barrier.wait(timeout=120)
    db = ConditionsDB(url, author=f"worker{worker}")
    try:
        db.create_tag(f"M{worker}")
        return db.upload(payload(float(worker), name="M")).revision
    finally:
        db.close()


@pytest.fixture(scope="module")
def pool() -> Iterator[multiprocessing.pool.Pool]:
    """Worker processes (spawned: nothing inherited) that start their tasks together."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_WORKERS)
    workers = ctx.Pool(N_WORKERS, initializer=_init_worker, initargs=(barrier,))
    try:
        yield workers
    finally:
        workers.close()
        workers.join()


def test_concurrent_writers(db_url: str, pool: multiprocessing.pool.Pool) -> None:
    n = 10
    db = ConditionsDB(db_url)
    try:
        for w in range(N_WORKERS):
            db.create_tag(f"W{w}")
        results = pool.starmap_async(_writer, [(db_url, w, n) for w in range(N_WORKERS)]).get(
            timeout=300
        )
        got = [rv for r in results for rv in r]
        assert sorted(r for r, _ in got) == list(range(1, N_WORKERS * n + 1))
        stored = {p.revision: value(db.payload(p)) for p in db.payloads("X")}
        assert stored == dict(got)
        for w in range(N_WORKERS):
            assert [(str(e.iov), value(db.payload(e.payload))) for e in db.iovs(f"W{w}")] == [
                (f"{k},0,{k},-1", w * 1000 + k) for k in range(n)
            ]
        authors = {h.author for h in db.history() if h.action == "upload"}
        assert authors == {f"worker{w}" for w in range(N_WORKERS)}
    finally:
        db.close()


def test_concurrent_creation_of_a_new_database(
    db_url: str, pool: multiprocessing.pool.Pool
) -> None:
    if db_url.startswith("sqlite"):
        assert not Path(sa.engine.make_url(db_url).database or "").exists()
    revs = pool.starmap_async(_opener, [(db_url, w) for w in range(N_WORKERS)]).get(timeout=300)
    assert sorted(revs) == list(range(1, N_WORKERS + 1))
    db = ConditionsDB(db_url)
    try:
        assert [t.name for t in db.tags()] == [f"M{w}" for w in range(N_WORKERS)]
        with db.engine.connect() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar()
        assert n == 1
    finally:
        db.close()


def test_threads_share_one_database_object(db: ConditionsDB) -> None:
    """Threads of one process writing through one ConditionsDB (one engine, a pool)."""
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for k in range(5):
                db.upload(payload(100.0 * t + k, name="T"))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert time.monotonic() - t0 < 120
    assert errors == []
    assert [p.revision for p in db.payloads("T")] == list(range(1, 21))


def test_unusable_databases_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConditionsError, match=r"foo://x: cannot open the conditions database") as e:
        ConditionsDB("foo://x")
    assert "\n" not in str(e.value)
    path = tmp_path / "ro.sqlite"
    ConditionsDB(path).close()
    ro = ConditionsDB(f"sqlite:///file:{path}?mode=ro&uri=true")
    with pytest.raises(ConditionsError, match="write failed, nothing was changed") as e:
        ro.create_tag("T")
    assert "\n" not in str(e.value)
