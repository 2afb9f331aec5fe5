"""Immutability that holds (issue 13): every attack of the issue's "Immutability" section,
replayed through a plain DB-API connection beside the library (``sqlite3`` / ``psycopg``, as
an attacker or a careless user would), on SQLite and on PostgreSQL.

The database itself must refuse each one with a ``b2calib: ...`` rule message. On PostgreSQL
the raw connection is the server's superuser, which passes every privilege check: what stops it
here is the triggers, not the privileges (``tests/test_db_roles.py`` tests the roles). SQLite's
``INSERT OR REPLACE`` is PostgreSQL's ``INSERT ... ON CONFLICT DO UPDATE``; SQLite's ``DELETE``
of every row is PostgreSQL's ``TRUNCATE``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from b2calib.cli import cli
from b2calib.conditions import ConditionsDB, IoV, Payload, PayloadFile
from b2calib.conditions.payload import bytes_md5
from b2calib.exceptions import ConditionsError, PayloadError, QAError
from b2calib.qa.store import QADatabase, User
from b2calib.runs import Run
from tests.test_conditions_db import Raw, make_tag, payload

DETS = ("PXD", "SVD", "CDC", "TOP", "ARICH", "ECL", "KLM")
MONA = User("mona", "manager")
LATER = datetime(2031, 1, 1, tzinfo=UTC)


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from b2calib.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return str(ScriptDirectory.from_config(cfg).get_current_head())


#: The newest revision (0003 here; a later revision may follow it).
HEAD = _head()


@pytest.fixture
def db(db_url: str) -> Iterator[ConditionsDB]:
    conditions = ConditionsDB(db_url, author="alice")
    yield conditions
    conditions.close()


@pytest.fixture
def qa(db: ConditionsDB) -> Iterator[QADatabase]:
    """The QA records of the same database: runs 1-3 of experiment 3 and a manager."""
    store = QADatabase(db.url, author="admin")
    store.runs.import_runs(
        Run(3, r, "physics", "4S", 1.7e9 + 3600 * r, 1.7e9 + 3600 * (r + 1), 100.0, 10, DETS, True)
        for r in (1, 2, 3)
    )
    store.users.add("mona", "m-secret", "manager")
    yield store
    store.close()


@pytest.fixture
def raw(db: ConditionsDB) -> Iterator[Raw]:
    connection = Raw(db.url)
    yield connection
    connection.close()


def row(raw: Raw, sql: str, params: Sequence[Any] = ()) -> dict[str, Any]:
    """The one row ``sql`` selects, as a dict by column name."""
    if raw.backend != "sqlite":
        sql = sql.replace("?", "%s")
    cur = raw.conn.execute(sql, tuple(params))
    names = [d[0] for d in cur.description]
    (values,) = cur.fetchall()
    return dict(zip(names, values, strict=True))


def replace(raw: Raw, table: str, values: dict[str, Any], key: Sequence[str] = ("id",)) -> str:
    """Assert the database refuses to replace the row of ``table`` holding ``key``: SQLite's
    ``INSERT OR REPLACE``, PostgreSQL's ``INSERT ... ON CONFLICT (key) DO UPDATE``."""
    cols = list(values)
    marks = ", ".join("?" for _ in cols)
    sql = f"INTO {table} ({', '.join(cols)}) VALUES ({marks})"
    if raw.backend == "sqlite":
        sql = f"INSERT OR REPLACE {sql}"
    else:
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c not in key)
        sql = f"INSERT {sql} ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"
    return raw.refused(sql, list(values.values()))


def cli_error(url: str, *args: str) -> str:
    """The one-line error of a failing ``b2calib`` command on database ``url``."""
    result = CliRunner(env={"B2CALIB_USER": "mallory"}).invoke(cli, [*args, "--db", url])
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    return line


def published(db: ConditionsDB) -> tuple[int, int]:
    """ECLCrystalEnergy rev 1 and rev 2 (mean 1.0009) in PUBLISHED tag ``P``, rev 1 in OPEN tag
    ``D``; returns the ids of ``P`` and ``D``."""
    make_tag(db, "P", [(energy(0.9), "0,0,0,-1"), (energy(1.0009), "1,0,-1,-1")], "PUBLISHED")
    db.create_tag("D")
    db.add_iov("D", ("ECLCrystalEnergy", 1), "0,0,-1,-1")
    with db.read() as conn:
        ids = dict(conn.exec_driver_sql("SELECT name, id FROM globaltags").all())
    return ids["P"], ids["D"]


def energy(mean: float) -> Payload:
    return Payload(
        "ECLCrystalEnergy",
        keys={"cellID": np.arange(1, 8737, dtype=np.int32)},  # one row per crystal
        values={"value": np.full(8736, mean)},
    )


def p_content(db: ConditionsDB) -> list[tuple[str, int, str, str]]:
    return [(e.name, e.payload.revision, e.payload.checksum, str(e.iov)) for e in db.iovs("P")]


# -- SQLite INSERT OR REPLACE (PostgreSQL: INSERT ... ON CONFLICT DO UPDATE) --------------------


def test_insert_or_replace_moves_a_published_tag_back_to_open_then_edited_through_the_cli(
    db: ConditionsDB, raw: Raw
) -> None:
    gid, _ = published(db)
    before = p_content(db)
    tag = row(raw, "SELECT * FROM globaltags WHERE id = ?", [gid])
    replace(raw, "globaltags", {**tag, "state": "OPEN"})
    # a new id with the published tag's name replaces it just as well in SQLite
    replace(raw, "globaltags", {**tag, "id": gid + 100, "state": "OPEN"}, key=("name",))
    assert db.tag("P").state == "PUBLISHED"
    assert "is PUBLISHED: it cannot be modified" in cli_error(
        db.url, "gt", "modify", "P", "--description", "edited"
    )
    assert "is PUBLISHED: only OPEN tags can be modified" in cli_error(
        db.url, "iov", "add", "P", "ECLCrystalEnergy", "1", "1,0,1,5"
    )
    assert p_content(db) == before


def test_insert_or_replace_swaps_a_published_payload_row_and_its_file(
    db: ConditionsDB, raw: Raw
) -> None:
    """ECLCrystalEnergy rev 2 of a PUBLISHED tag: mean 1.0009 must not become 1.2345."""
    published(db)
    info = db.payload_info("ECLCrystalEnergy", 2)
    fake = PayloadFile.of(energy(1.2345))
    record = row(raw, "SELECT * FROM payloads WHERE id = ?", [info.id])
    forged = {
        **record,
        "checksum": fake.checksum,
        "content_hash": fake.payload.content_hash(),
        "size": len(fake.data),
    }
    replace(raw, "payloads", forged)
    replace(raw, "payloads", {**forged, "id": info.id + 100}, key=("name", "revision"))
    replace(raw, "payload_files", {"payload_id": info.id, "content": fake.data}, ("payload_id",))
    assert db.payload_info("ECLCrystalEnergy", 2) == info
    assert db.payload(info).value().mean() == pytest.approx(1.0009)


def test_insert_or_replace_rewrites_the_iovs_of_a_frozen_tag(db: ConditionsDB, raw: Raw) -> None:
    gid, did = published(db)
    before = p_content(db)
    iov = row(raw, "SELECT * FROM iovs WHERE globaltag_id = ? AND first_exp = 1", [gid])
    replace(raw, "iovs", {**iov, "final_exp": 1, "final_run": 5})
    # replaced by an IoV of an OPEN tag: the published tag would lose it
    replace(raw, "iovs", {**iov, "globaltag_id": did, "first_exp": 9, "final_exp": 9})
    assert p_content(db) == before
    db.set_state("P", "INVALID")
    replace(raw, "iovs", {**iov, "payload_id": iov["payload_id"] - 1})
    assert p_content(db) == before


def test_insert_or_replace_turns_a_bad_cdc_flag_good(qa: QADatabase, raw: Raw) -> None:
    qa.certification.set_flag(3, 1, "CDC", "BAD", user=MONA, comment="30 % of the wires dead")
    flag = row(raw, "SELECT * FROM qa_flags WHERE detector = 'CDC'")
    replace(raw, "qa_flags", {**flag, "flag": "GOOD", "comment": ""})
    assert qa.certification.flags(3, 1)["CDC"].flag == "BAD"
    assert [f.flag for f in qa.certification.flag_history(3, 1, "CDC")] == ["BAD"]


def test_insert_or_replace_rewrites_run_states(qa: QADatabase, raw: Raw) -> None:
    qa.certification.set_state(3, 1, "SIGNOFF", user=MONA)
    qa.certification.set_state(3, 1, "COMPLETED", user=MONA, comment="signed off", force=True)
    state = row(raw, "SELECT * FROM qa_run_states WHERE state = 'COMPLETED'")
    replace(raw, "qa_run_states", {**state, "state": "OPEN", "comment": ""})
    assert qa.certification.state(3, 1).state == "COMPLETED"
    assert [s.state for s in qa.certification.state_history(3, 1)] == ["SIGNOFF", "COMPLETED"]


def test_insert_or_replace_rewrites_good_run_lists(qa: QADatabase, raw: Raw) -> None:
    qa.certification.set_flags([(3, r, "CDC", "GOOD") for r in (1, 2, 3)], user=MONA, comment="")
    made = qa.grls.make("golden", "CDC == GOOD", user=MONA)
    grl = row(raw, "SELECT * FROM qa_grls WHERE name = 'golden'")
    content = json.loads(grl["content"])
    content["experiments"]["3"]["runs"].append(9)
    forged = {**grl, "content": json.dumps(content, sort_keys=True)}
    replace(raw, "qa_grls", forged)
    replace(raw, "qa_grls", {**forged, "id": grl["id"] + 100}, key=("name", "version"))
    assert qa.grls.get("golden").runs == made.runs


def test_insert_or_replace_rewrites_the_history(db: ConditionsDB, raw: Raw) -> None:
    """The history keeps each published tag's manifest: it is append-only too."""
    published(db)
    entry = row(raw, "SELECT * FROM history WHERE globaltag = 'P' ORDER BY id DESC LIMIT 1")
    replace(raw, "history", {**entry, "author": "mallory"})
    raw.refused(f"UPDATE history SET details = '{{}}' WHERE id = {entry['id']}")
    raw.refused(f"DELETE FROM history WHERE id = {entry['id']}")
    assert {h.author for h in db.history("P")} == {"alice"}


# -- key columns and the published tag's own columns ---------------------------------------------


def test_update_globaltags_set_id_with_foreign_keys_off_detaches_a_published_tag(
    db: ConditionsDB, raw: Raw
) -> None:
    gid, did = published(db)
    before = p_content(db)
    if raw.backend == "sqlite":
        raw.execute("PRAGMA foreign_keys = OFF")
    raw.refused(f"UPDATE globaltags SET id = 99 WHERE id = {gid}")
    raw.refused(f"UPDATE globaltags SET id = 98 WHERE id = {did}")  # an OPEN tag's too
    raw.refused("UPDATE iovs SET id = id + 1000")
    if raw.backend == "sqlite":  # a rename onto the published tag replaces it
        raw.refused("UPDATE OR REPLACE globaltags SET name = 'P' WHERE name = 'D'")
    else:
        raw.refused("UPDATE globaltags SET name = 'P' WHERE name = 'D'")
    assert p_content(db) == before
    assert [(t.name, t.state) for t in db.tags()] == [("D", "OPEN"), ("P", "PUBLISHED")]


def test_update_globaltags_set_modified_of_a_published_tag(db: ConditionsDB, raw: Raw) -> None:
    gid, _ = published(db)
    was = db.tag("P")
    raw.refused("UPDATE globaltags SET modified = ? WHERE name = 'P'", [LATER])
    raw.refused("UPDATE globaltags SET modified = ?, state = state WHERE id = ?", [LATER, gid])
    assert db.tag("P") == was
    # the one allowed move, PUBLISHED -> INVALID, records when it happened
    invalid = db.set_state("P", "INVALID")
    assert invalid.modified > was.modified
    raw.refused("UPDATE globaltags SET modified = ? WHERE name = 'P'", [LATER])
    raw.refused("UPDATE globaltags SET author = 'mallory' WHERE name = 'P'")
    raw.refused("UPDATE globaltags SET created = ? WHERE name = 'P'", [LATER])
    assert db.tag("P") == invalid
    # a raw client may make the allowed move too, with its time
    make_tag(db, "Q", [], "PUBLISHED")
    raw.execute("UPDATE globaltags SET state = 'INVALID', modified = ? WHERE name = 'Q'", [LATER])
    assert (db.tag("Q").state, db.tag("Q").modified) == ("INVALID", LATER)


# -- PostgreSQL TRUNCATE (SQLite: DELETE of every row) --------------------------------------------


@pytest.mark.parametrize(
    "table",
    [
        "iovs",
        "qa_flags",
        "payload_files CASCADE",
        "payloads CASCADE",
        "globaltags CASCADE",
        "qa_run_states",
        "qa_grls",
        "history",
    ],
)
def test_truncate_iovs_qa_flags_payload_files_cascade(
    db: ConditionsDB, qa: QADatabase, raw: Raw, table: str
) -> None:
    published(db)
    qa.certification.set_flag(3, 1, "CDC", "BAD", user=MONA, comment="dead wires")
    qa.certification.set_state(3, 1, "SIGNOFF", user=MONA)
    qa.grls.make("golden", "CDC == GOOD", user=MONA)
    counts = {
        t: raw.scalar(f"SELECT count(*) FROM {t}")
        for t in ("iovs", "qa_flags", "payload_files", "payloads", "globaltags", "history")
    }
    if raw.backend == "sqlite":
        raw.refused(f"DELETE FROM {table.split()[0]}")
    else:
        raw.refused(f"TRUNCATE {table}")
    assert counts == {t: raw.scalar(f"SELECT count(*) FROM {t}") for t in counts}
    assert len(db.iovs("P")) == 2
    assert db.tag("P").state == "PUBLISHED"


# -- what the library says ----------------------------------------------------------------------


def test_refusals_reach_the_library_as_one_line_rule_violations(
    db: ConditionsDB, qa: QADatabase
) -> None:
    gid, _ = published(db)
    for sql, owner in (
        (f"UPDATE globaltags SET id = 99 WHERE id = {gid}", db),
        ("UPDATE globaltags SET modified = :t WHERE name = 'P'", db),
        ("DELETE FROM history", qa),
    ):
        error = QAError if owner is qa else ConditionsError
        with pytest.raises(error, match=r"^refused by the database: [^\n]+$"), owner.write() as c:
            c.execute(sa.text(sql), {"t": LATER})
    assert db.tag("P").state == "PUBLISHED"


def test_the_library_still_writes_every_protected_table(db: ConditionsDB, qa: QADatabase) -> None:
    """The new guards refuse replacements, not the library's own inserts."""
    published(db)
    db.upload_and_add("D", [(payload(1.1, name="Z"), IoV(2, 0, 2, -1))])
    db.remove_iov("D", "Z", "2,0,2,-1")
    db.modify_tag("D", description="edited")
    db.set_state("D", "TESTING")
    db.set_state("D", "OPEN")
    db.clone_tag("P", "C")
    qa.certification.set_flag(3, 2, "ECL", "GOOD", user=MONA, comment="")
    qa.certification.set_flag(3, 2, "ECL", "BAD", user=MONA, comment="hot crystals")
    qa.certification.set_state(3, 2, "SIGNOFF", user=MONA)
    qa.grls.make("golden", "ECL == GOOD", user=MONA)
    qa.grls.make("golden", "ECL == GOOD", user=MONA)
    assert [g.version for g in qa.grls.versions("golden")] == [1, 2]
    assert qa.certification.flags(3, 2)["ECL"].flag == "BAD"
    assert [e.payload.revision for e in db.iovs("C")] == [1, 2]


# -- the migration ------------------------------------------------------------------------------


def migrate(url: str, target: str, *, down: bool = False) -> None:
    """Run the migrations to ``target`` on ``url`` (as b2calib runs them: in the writers' lock)."""
    from alembic import command
    from alembic.config import Config

    from b2calib.db import MIGRATIONS, make_engine, writing

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = make_engine(url)
    try:
        with writing(engine) as conn:
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, target)
    finally:
        engine.dispose()


def guards(raw: Raw) -> set[str]:
    if raw.backend == "sqlite":
        return {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    return {r[0] for r in raw.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}


def test_migration_0003_upgrades_a_filled_database_and_downgrades(
    db: ConditionsDB, raw: Raw
) -> None:
    published(db)
    at_head = guards(raw)
    new = {"history_append_only", "iovs_no_truncate", "payloads_no_truncate"}
    if raw.backend == "sqlite":
        new = {"globaltags_never_replaced", "globaltags_keys", "history_append_only_delete"}
    assert new <= at_head
    db.close()
    migrate(db.url, "0002", down=True)
    assert not new & guards(raw)
    raw.execute("UPDATE globaltags SET modified = ? WHERE name = 'P'", [LATER])  # 0002's hole
    migrate(db.url, "head")
    assert guards(raw) == at_head
    raw.refused("UPDATE globaltags SET modified = ? WHERE name = 'P'", [datetime.now(UTC)])
    assert [e.payload.revision for e in db.iovs("P")] == [1, 2]


# -- db verify: what gets past the database (its superuser, the SQLite file's owner) ------------


@contextmanager
def bypassing_the_guards(raw: Raw) -> Iterator[None]:
    """What only the database's superuser or the SQLite file's owner can do: write with every
    trigger (and foreign key) off."""
    if raw.backend == "sqlite":
        triggers = raw.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
        for name, _ in triggers:
            raw.execute(f"DROP TRIGGER {name}")
        try:
            yield
        finally:
            for _, sql in triggers:
                raw.execute(sql)
    else:
        raw.execute("SET session_replication_role = replica")
        try:
            yield
        finally:
            raw.execute("RESET session_replication_role")


def verify_cli(url: str, code: int) -> list[str]:
    result = CliRunner().invoke(cli, ["db", "verify", "--db", url])
    assert result.exit_code == code, result.output
    return result.output.strip().splitlines()


def test_db_verify_on_a_clean_database_says_what_it_checked(db: ConditionsDB) -> None:
    published(db)
    make_tag(db, "V", [(payload(1), "0,0,-1,-1")], "VALIDATED")
    report = db.verify()
    assert report.ok
    assert (report.payloads, report.tags, report.unsealed, report.problems) == (3, ("P",), (), ())
    assert verify_cli(db.url, 0) == [
        "checked 3 stored payload files against their checksums and 1 PUBLISHED or INVALID "
        "global tag against the manifest recorded when it was published: no mismatch"
    ]
    db.set_state("P", "INVALID")  # an invalidated tag keeps its manifest
    assert db.verify().tags == ("P",)
    if db.url.startswith("sqlite"):
        empty = ConditionsDB(db.url.replace("b2calib.sqlite", "empty.sqlite"), author="x")
        assert empty.verify().ok
        assert "checked 0 stored payload files" in verify_cli(empty.url, 0)[0]
        empty.close()


def test_publishing_records_the_manifest_in_the_history(db: ConditionsDB) -> None:
    published(db)
    actions = [h.action for h in db.history("P")]
    assert actions[-2:] == ["manifest", "state"]
    manifest = db.history("P")[-2].details
    assert set(manifest) == {"version", "digest", "iovs", "payloads"}
    assert (manifest["version"], manifest["iovs"], list(manifest["payloads"])) == (
        1,
        2,
        ["ECLCrystalEnergy"],
    )
    assert re.fullmatch("[0-9a-f]{64}", manifest["digest"])
    shown = CliRunner().invoke(cli, ["gt", "history", "P", "--db", db.url]).output
    (line,) = [x for x in shown.splitlines() if " manifest " in x]
    assert line.endswith(f"digest={manifest['digest']}, iovs=2, payloads=1 names, version=1")
    # a clone with the same content has the same digest
    db.clone_tag("P", "C")
    for state in ("TESTING", "VALIDATED", "PUBLISHED"):
        db.set_state("C", state)
    assert db.history("C")[-2].details == manifest
    # a snapshot of a running tag is published with its manifest too
    make_tag(db, "R", [(payload(5), "0,0,-1,-1")], "RUNNING")
    db.snapshot("R", "S", until=(3, 7))
    assert [h.action for h in db.history("S")][-5:] == [
        "manifest",
        "state",
        "state",
        "state",
        "snapshot",
    ]
    assert db.verify().tags == ("C", "P", "S")


def test_publishing_refuses_a_corrupted_payload(db: ConditionsDB, raw: Raw) -> None:
    make_tag(db, "V", [(payload(1), "0,0,-1,-1")], "VALIDATED")
    with bypassing_the_guards(raw):
        raw.execute("UPDATE payload_files SET content = ?", [b"junk"])
    with pytest.raises(PayloadError, match=r"payload X rev 1: checksum mismatch"):
        db.set_state("V", "PUBLISHED")
    assert db.tag("V").state == "VALIDATED"


def test_db_verify_reports_a_published_payload_row_and_file_swapped(
    db: ConditionsDB, raw: Raw
) -> None:
    """The issue's swap (mean 1.0009 -> 1.2345), done past the database's guards: the row's
    checksum matches the new file, so reading it raises nothing; verify names tag and payload."""
    published(db)
    info = db.payload_info("ECLCrystalEnergy", 2)
    fake = PayloadFile.of(energy(1.2345))
    with bypassing_the_guards(raw):
        raw.execute(
            "UPDATE payloads SET checksum = ?, size = ? WHERE id = ?",
            [fake.checksum, len(fake.data), info.id],
        )
        raw.execute(
            "UPDATE payload_files SET content = ? WHERE payload_id = ?", [fake.data, info.id]
        )
    assert db.payload("ECLCrystalEnergy", 2).value().mean() == pytest.approx(1.2345)
    report = db.verify()
    assert not report.ok
    (problem,) = report.problems
    assert problem.startswith(
        "global tag P: its content differs from the manifest recorded when it was published ("
    )
    assert problem.endswith("): payload ECLCrystalEnergy changed")
    lines = verify_cli(db.url, 1)
    assert lines[0] == problem
    assert lines[-1].startswith("1 mismatch: checked 2 stored payload files")


def test_db_verify_reports_a_corrupted_payload_file(db: ConditionsDB, raw: Raw) -> None:
    published(db)
    info, rev2 = db.payloads("ECLCrystalEnergy")
    data = bytearray(db.payload_bytes(info))
    data[len(data) // 2] ^= 0x01
    with bypassing_the_guards(raw):
        raw.execute(
            "UPDATE payload_files SET content = ? WHERE payload_id = ?", [bytes(data), info.id]
        )
        raw.execute("DELETE FROM payload_files WHERE payload_id = ?", [rev2.id])
    problems = db.verify().problems
    assert problems[0] == (
        f"payload ECLCrystalEnergy rev 1: checksum mismatch (recorded {info.checksum}, "
        f"the stored file has {bytes_md5(bytes(data))})"
    )
    assert problems[1] == "payload ECLCrystalEnergy rev 2: its file is missing"
    assert problems[2].startswith("global tag P: its content differs from the manifest")
    assert problems[2].endswith(": payload ECLCrystalEnergy changed")
    assert len(problems) == 3
    assert verify_cli(db.url, 1)[-1].startswith("3 mismatches: ")


def test_db_verify_reports_rewritten_iovs_of_a_published_tag(db: ConditionsDB, raw: Raw) -> None:
    gid, _ = published(db)
    db.upload_and_add("D", [(payload(3, name="Y"), IoV(0, 0))])
    with bypassing_the_guards(raw):
        raw.execute(f"UPDATE iovs SET final_run = 5 WHERE globaltag_id = {gid} AND first_exp = 0")
        y = raw.scalar("SELECT id FROM payloads WHERE name = 'Y'")
        raw.execute(
            "INSERT INTO iovs (globaltag_id, payload_id, first_exp, first_run, final_exp, "
            "final_run, created, author) VALUES (?, ?, 0, 0, -1, -1, ?, 'mallory')",
            [gid, y, LATER],
        )
    (problem,) = db.verify().problems
    assert problem.endswith("): 2 IoVs recorded, 3 now; payloads ECLCrystalEnergy, Y changed")
    with bypassing_the_guards(raw):
        raw.execute("DELETE FROM iovs" if raw.backend == "sqlite" else "TRUNCATE iovs")
    (problem,) = db.verify().problems
    assert problem.endswith(": 2 IoVs recorded, 0 now; payload ECLCrystalEnergy changed")


def test_db_verify_reports_a_published_tag_detached_from_its_iovs(
    db: ConditionsDB, raw: Raw
) -> None:
    """``UPDATE globaltags SET id = 99`` with foreign keys (and triggers) off."""
    gid, _ = published(db)
    with bypassing_the_guards(raw):
        raw.execute(f"UPDATE globaltags SET id = 99 WHERE id = {gid}")
    assert db.verify().problems == (
        f"2 IoVs belong to global tag id {gid}, which does not exist",
        "global tag P: its content differs from the manifest recorded when it was published "
        f"({_published_at(db, 'P')}): 2 IoVs recorded, 0 now; payload ECLCrystalEnergy changed",
    )


def _published_at(db: ConditionsDB, tag: str) -> str:
    (entry,) = [h for h in db.history(tag) if h.action == "manifest"]
    return f"{entry.time:%Y-%m-%d %H:%M:%S} UTC"


def test_db_verify_reports_a_published_tag_moved_back_to_open(db: ConditionsDB, raw: Raw) -> None:
    published(db)
    with bypassing_the_guards(raw):
        raw.execute("UPDATE globaltags SET state = 'OPEN' WHERE name = 'P'")
    assert db.verify().problems == (
        "global tag P is OPEN, but it was PUBLISHED (manifest recorded "
        f"{_published_at(db, 'P')}): only the move to INVALID may follow",
    )
    with bypassing_the_guards(raw):
        raw.execute("DELETE FROM globaltags WHERE name = 'P'")
    problems = db.verify().problems
    assert problems[-1] == (
        f"global tag P is gone, but it was PUBLISHED (manifest recorded {_published_at(db, 'P')})"
    )


def test_db_verify_reports_a_forged_manifest(db: ConditionsDB, raw: Raw) -> None:
    """The history is append-only, but a raw client may add an entry: a manifest that does not
    match the tag is reported, whoever wrote it."""
    published(db)
    raw.execute(
        "INSERT INTO history (time, author, action, globaltag, details) "
        "VALUES (?, 'mallory', 'manifest', 'P', ?)",
        [LATER, json.dumps({"version": 1, "digest": "0" * 64, "iovs": 2, "payloads": {}})],
    )
    (problem,) = db.verify().problems
    assert problem == (
        "global tag P: its content differs from the manifest recorded when it was published "
        "(2031-01-01 00:00:00 UTC): payload ECLCrystalEnergy changed"
    )


def test_db_verify_says_which_published_tags_predate_manifests(db_url: str) -> None:
    """A tag published before revision 0003 has no manifest: verify says so and passes."""
    migrate(db_url, "0002")
    raw = Raw(db_url)
    try:
        file = PayloadFile.of(payload(1))
        when = datetime(2026, 6, 1, tzinfo=UTC)
        raw.execute(
            "INSERT INTO payloads (name, revision, checksum, content_hash, size, created, "
            "author, provenance) VALUES ('X', 1, ?, ?, ?, ?, 'old', '{}')",
            [file.checksum, file.payload.content_hash(), len(file.data), when],
        )
        raw.execute("INSERT INTO payload_files (payload_id, content) VALUES (1, ?)", [file.data])
        raw.execute(
            "INSERT INTO globaltags (name, type, state, description, created, modified, author) "
            "VALUES ('old_tag', 'DEV', 'OPEN', '', ?, ?, 'old')",
            [when, when],
        )
        raw.execute(
            "INSERT INTO iovs (globaltag_id, payload_id, first_exp, first_run, final_exp, "
            "final_run, created, author) VALUES (1, 1, 0, 0, -1, -1, ?, 'old')",
            [when],
        )
        for state in ("TESTING", "VALIDATED", "PUBLISHED"):
            raw.execute(f"UPDATE globaltags SET state = '{state}'")
    finally:
        raw.close()
    db = ConditionsDB(db_url)  # migrates to the newest revision
    try:
        report = db.verify()
        assert (report.ok, report.payloads, report.tags, report.unsealed) == (
            True,
            1,
            (),
            ("old_tag",),
        )
        assert verify_cli(db_url, 0) == [
            "checked 1 stored payload file against its checksum and 0 PUBLISHED or INVALID "
            "global tags against the manifest recorded when they were published: no mismatch",
            "1 PUBLISHED or INVALID global tag has no manifest (published before b2calib "
            "recorded manifests, or by another client): old_tag; its payload files were checked",
        ]
    finally:
        db.close()


def test_a_schema_newer_than_this_b2calib_is_one_line(db: ConditionsDB, raw: Raw) -> None:
    raw.execute("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(ConditionsError) as info:
        ConditionsDB(db.url)
    assert str(info.value).endswith(
        ": the database schema is at revision 0099, which this b2calib does not know (its "
        f"newest is {HEAD}): upgrade b2calib"
    )


def test_migration_0008_gives_references_a_run_class_and_keeps_the_history_append_only(
    db: ConditionsDB, qa: QADatabase, raw: Raw
) -> None:
    """0008 keys a QA reference by run class (the one set before takes its reference run's
    class) and adds ``confirmed`` to the flags and run states without rewriting them; the
    append-only guards still hold; down again, one reference per histogram is kept."""
    url = db.url
    qa.close()
    db.close()
    migrate(url, "0007", down=True)
    when = "2026-12-04 10:00:00+00:00"
    raw.execute(
        "INSERT INTO qa_references (detector, name, exp, run, method, options, min_entries, "
        "p_warning, p_error, author, time) VALUES ('CDC', 'h', 3, 2, 'chi2', 'UU', 100, 0.01, "
        f"0.0001, 'a', '{when}')"
    )
    raw.execute(
        "INSERT INTO qa_flags (exp, run, detector, flag, comment, author, time) "
        f"VALUES (3, 1, 'CDC', 'BAD', 'dead', 'mona', '{when}')"
    )
    migrate(url, "head")
    ref = row(raw, "SELECT run_type, beam_energy, exp, run FROM qa_references")
    assert ref == {"run_type": "physics", "beam_energy": "4S", "exp": 3, "run": 2}
    assert row(raw, "SELECT flag, confirmed FROM qa_flags") == {"flag": "BAD", "confirmed": ""}
    raw.refused("UPDATE qa_flags SET confirmed = 'x'")
    raw.execute(
        "INSERT INTO qa_references (detector, name, run_type, beam_energy, exp, run, method, "
        "options, min_entries, p_warning, p_error, author, time) VALUES ('CDC', 'h', "
        f"'physics', 'Continuum', 3, 3, 'chi2', 'UU', 100, 0.01, 0.0001, 'a', '{when}')"
    )
    migrate(url, "0007", down=True)
    assert row(raw, "SELECT exp, run FROM qa_references") == {"exp": 3, "run": 2}
    migrate(url, "head")


def _insert_reference(raw: Raw, *, exp: int, run: int, period: int | None = None) -> None:
    """A physics 4S reference of histogram CDC/h written in raw SQL: in the schema of 0008 and
    0009 (before a reference had a period) when ``period`` is None."""
    key = "" if period is None else "period, "
    value = "" if period is None else f"{period}, "
    raw.execute(
        f"INSERT INTO qa_references ({key}detector, name, run_type, beam_energy, exp, run, "
        f"method, options, min_entries, p_warning, p_error, author, time) VALUES ({value}'CDC', "
        f"'h', 'physics', '4S', {exp}, {run}, 'chi2', 'UU', 100, 0.05, 0.01, 'a', "
        "'2026-12-04 10:00:00+00:00')"
    )


def test_migration_0009_gives_references_an_experiment(
    db: ConditionsDB, qa: QADatabase, raw: Raw
) -> None:
    """0009 keys a QA reference by experiment too (the one set before keeps its reference
    run's experiment), so a second experiment's reference does not replace the first's; down
    again, the newest experiment's reference of each class is kept."""
    url = db.url
    qa.close()
    db.close()
    migrate(url, "0008", down=True)
    _insert_reference(raw, exp=3, run=2)
    migrate(url, "head")
    assert row(raw, "SELECT exp, run FROM qa_references") == {"exp": 3, "run": 2}
    _insert_reference(raw, exp=4, run=7)
    migrate(url, "0008", down=True)
    assert row(raw, "SELECT exp, run FROM qa_references") == {"exp": 4, "run": 7}
    migrate(url, "head")


def test_migration_0010_gives_references_a_qa_period(
    db: ConditionsDB, qa: QADatabase, raw: Raw
) -> None:
    """0010 adds the QA periods and keys a QA reference by period too: a reference set before
    is its experiment's first period's (period 0), so the runs are compared as before; down
    again, each experiment and class keeps its first period's reference, and the periods go."""
    url = db.url
    qa.close()
    db.close()
    migrate(url, "0009", down=True)
    _insert_reference(raw, exp=3, run=2)
    migrate(url, "head")
    assert row(raw, "SELECT period, exp, run FROM qa_references") == {
        "period": 0,
        "exp": 3,
        "run": 2,
    }
    store = QADatabase(url, author="admin")
    try:
        assert store.histograms.reference_of(3, 3, "CDC", "h").run == 2  # type: ignore[union-attr]
        store.periods.add(3, 3, "CDC boards replaced")
        assert store.histograms.reference_of(3, 3, "CDC", "h") is None  # none of its period yet
        _insert_reference(raw, exp=3, run=3, period=3)
        assert store.histograms.reference_of(3, 3, "CDC", "h").run == 3  # type: ignore[union-attr]
        assert store.histograms.reference_of(3, 1, "CDC", "h").run == 2  # type: ignore[union-attr]
    finally:
        store.close()
    migrate(url, "0009", down=True)
    assert row(raw, "SELECT exp, run FROM qa_references") == {"exp": 3, "run": 2}
    migrate(url, "head")
    assert row(raw, "SELECT COUNT(*) AS n FROM qa_periods") == {"n": 0}
