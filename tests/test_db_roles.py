"""PostgreSQL roles (issue 13): an owner role migrates the database and grants; the application
connects as a role that owns nothing and holds only the privileges it needs (no TRUNCATE, no
DDL). Each test gets its own owner, application role and database on the session's server
(tests/postgres.py), which trusts local connections: a URL names the role, no password.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hist
import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from b2calib.calibration.jobs import JobStore
from b2calib.cli import cli
from b2calib.conditions import ConditionsDB, IoV, Payload
from b2calib.db import make_engine
from b2calib.db.roles import APPLICATION_PRIVILEGES, OTHER_TABLES, grant
from b2calib.exceptions import ConditionsError, QAError
from b2calib.qa.monitoring import MonitoringValue, RunQA
from b2calib.qa.store import QADatabase, User
from b2calib.runs import Run
from tests.conftest import SAMPLE
from tests.postgres import PostgresServer
from tests.test_immutability import HEAD, migrate

pytestmark = pytest.mark.postgres

_names = itertools.count(1)
DETS = ("PXD", "SVD", "CDC", "TOP", "ARICH", "ECL", "KLM")


@dataclass
class Roles:
    """An owner role, an application role and a database the owner owns."""

    server: PostgresServer
    owner: str
    app: str
    database: str

    def url(self, role: str) -> str:
        s = self.server
        return f"postgresql+psycopg://{role}@/{self.database}?host={s.socket_dir}&port={s.port}"

    @property
    def owner_url(self) -> str:
        return self.url(self.owner)

    @property
    def app_url(self) -> str:
        return self.url(self.app)

    def raw(self, role: str) -> Any:
        """A plain psycopg connection as ``role`` (autocommit)."""
        import psycopg

        s = self.server
        return psycopg.connect(
            host=str(s.socket_dir),
            port=s.port,
            user=role,
            dbname=self.database,
            autocommit=True,
        )


@pytest.fixture
def roles(postgres_server: PostgresServer) -> Iterator[Roles]:
    n = f"{os.getpid()}_{next(_names)}"
    r = Roles(postgres_server, f"b2owner_{n}", f"b2app_{n}", f"b2roles_{n}")
    postgres_server._admin(f"CREATE ROLE {r.owner} LOGIN")
    postgres_server._admin(f"CREATE ROLE {r.app} LOGIN")
    postgres_server._admin(f"CREATE DATABASE {r.database} OWNER {r.owner}")
    try:
        yield r
    finally:
        postgres_server.drop_database(r.database)
        postgres_server._admin(f"DROP ROLE IF EXISTS {r.app}")
        postgres_server._admin(f"DROP ROLE IF EXISTS {r.owner}")


def shown(url: str) -> str:
    """A URL as b2calib's messages show it."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def b2calib(*args: str, code: int = 0) -> list[str]:
    result = CliRunner(env={"B2CALIB_USER": "ops"}).invoke(cli, list(args))
    assert result.exit_code == code, result.output
    return result.output.strip().splitlines()


def set_up(r: Roles) -> None:
    """What the README says the owner does: migrate, then grant the application role."""
    assert f"is at revision {HEAD}" in b2calib("db", "upgrade", "--db", r.owner_url)[-1]
    lines = b2calib("db", "grant", r.app, "--db", r.owner_url)
    assert lines[0] == f"granted role {r.app} what the application needs in {r.database}:"


def privileges(r: Roles) -> dict[str, set[str]]:
    """Table -> what the application role may do with it (table-level privileges)."""
    kinds = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    with r.raw(r.owner) as conn:
        tables = [
            t
            for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        return {
            t: {
                k
                for k in kinds
                if conn.execute("SELECT has_table_privilege(%s, %s, %s)", (r.app, t, k)).fetchone()[
                    0
                ]
            }
            for t in tables
        }


# -- set-up --------------------------------------------------------------------------------------


def test_the_owner_migrates_and_grants_the_application_role_only_what_it_needs(
    roles: Roles,
) -> None:
    set_up(roles)
    got = privileges(roles)
    assert got["payloads"] == got["payload_files"] == {"SELECT", "INSERT"}
    assert (
        got["history"]
        == got["qa_flags"]
        == got["qa_run_states"]
        == got["qa_grls"]
        == {
            "SELECT",
            "INSERT",
        }
    )
    assert got["iovs"] == {"SELECT", "INSERT", "DELETE"}
    assert got["globaltags"] == {"SELECT", "INSERT"}  # UPDATE of some columns only, below
    assert got["alembic_version"] == {"SELECT"}
    for table in ("qa_runs", "qa_users", "calibration_jobs", "step_payloads", "qa_histograms"):
        assert got[table] == {"SELECT", "INSERT", "UPDATE", "DELETE"}, table
    assert not any("TRUNCATE" in p or "TRIGGER" in p or "REFERENCES" in p for p in got.values())
    assert set(APPLICATION_PRIVILEGES) | {"qa_runs"} <= set(got)
    assert OTHER_TABLES == ("SELECT", "INSERT", "UPDATE", "DELETE")
    with roles.raw(roles.owner) as conn:

        def yes(sql: str) -> bool:
            return bool(conn.execute(sql, (roles.app,)).fetchone()[0])

        for column in ("state", "modified", "description", "type"):
            assert yes(f"SELECT has_column_privilege(%s, 'globaltags', '{column}', 'UPDATE')")
        for column in ("id", "name", "author", "created"):
            assert not yes(f"SELECT has_column_privilege(%s, 'globaltags', '{column}', 'UPDATE')")
        assert not yes("SELECT has_schema_privilege(%s, 'public', 'CREATE')")
        assert not yes("SELECT has_database_privilege(%s, current_database(), 'TEMPORARY')")
        assert yes("SELECT has_database_privilege(%s, current_database(), 'CONNECT')")
        assert not yes(
            "SELECT count(*) > 0 FROM pg_class WHERE relowner = "
            "(SELECT oid FROM pg_roles WHERE rolname = %s)"
        )
    # granting again changes nothing
    b2calib("db", "grant", roles.app, "--db", roles.owner_url)
    assert privileges(roles) == got


def test_the_application_role_does_every_normal_operation(roles: Roles, tmp_path: Path) -> None:
    set_up(roles)
    cdb = ConditionsDB(roles.app_url, author="app")
    qa = QADatabase(roles.app_url, author="app")
    try:
        conditions_workload(cdb, tmp_path)
        qa_workload(qa)
        report = cdb.verify()
        assert report.ok, report.problems
        assert report.tags == ("imported", "prompt_snap", "release")
    finally:
        cdb.close()
        qa.close()
    # and from the command line
    out = b2calib("gt", "list", "--db", roles.app_url)
    assert any(line.startswith("release ") for line in out)
    assert b2calib("db", "verify", "--db", roles.app_url)[0].endswith("no mismatch")


def value(x: float, name: str = "X") -> Payload:
    return Payload(
        name, keys={"channel": np.arange(3, dtype=np.int32)}, values={"v": np.full(3, x)}
    )


def conditions_workload(db: ConditionsDB, tmp_path: Path) -> None:
    one = db.upload(value(1))
    value(2).write(tmp_path / "x2.root")
    two = db.upload_file(tmp_path / "x2.root")
    db.create_tag("release", description="first")
    db.modify_tag("release", description="second", type="RELEASE")
    db.add_iov("release", one, "0,0,0,-1")
    db.upload_and_add("release", [(value(3, "Y"), IoV(0, 0))])
    db.add_iov("release", two, "1,0,1,5")
    db.remove_iov("release", "X", "1,0,1,5")
    db.clone_tag("release", "copy")
    db.merge("merged", ["copy", "release"])
    for state in ("TESTING", "OPEN", "TESTING", "VALIDATED", "PUBLISHED"):
        db.set_state("release", state)
    db.set_state("copy", "TESTING")
    db.set_state("copy", "VALIDATED")
    db.create_tag("prompt")
    db.add_iov("prompt", one, "0,0,-1,-1")
    db.set_state("prompt", "RUNNING")
    db.create_tag("stage")
    db.add_iov("stage", two, "0,0,-1,-1")
    db.set_state("stage", "TESTING")
    db.set_state("stage", "VALIDATED")
    db.running_update("prompt", "stage", valid_from=(2, 0))
    db.snapshot("prompt", "prompt_snap", until=(2, 5))
    assert db.lookup(2, 3, ["prompt_snap"])["X"].payload.revision == 2
    db.export_local(tmp_path / "out", ["release"])
    db.import_local(SAMPLE / "truth", "imported")
    for state in ("TESTING", "VALIDATED", "PUBLISHED", "INVALID"):
        db.set_state("imported", state)
    db.set_state("release", "PUBLISHED")
    assert db.tag("imported").state == "INVALID"
    # calibration checkpoints and staging (what `b2calib calibrate` writes)
    jobs = JobStore(db)
    job = jobs.open("k" * 64, "example", "staging_tag", {"runs": [1, 2]})
    jobs.set_state(job, "collected:0")
    jobs.record_step(job, 0, "algo", [(0, 1)], "OK", "", [value(4)], b"diagnostics")
    assert jobs.steps(job)[0].status == "OK"
    jobs.complete(job, [(IoV(0, 0), value(4))], {"iterations": 1})
    jobs.complete(jobs.open("j" * 64, "example", "staging_tag", {}), [(IoV(0, 0), value(5))], {})
    assert [e.payload for e in db.iovs("staging_tag")] == [db.find_payload(value(5))]
    assert [h.action for h in db.history("staging_tag")].count("replace_iov") == 1


def qa_workload(qa: QADatabase) -> None:
    runs = [
        Run(3, r, "physics", "4S", 1.7e9 + 3600 * r, 1.7e9 + 3600 * (r + 1), 10.0, 5, DETS, True)
        for r in (1, 2, 3)
    ]
    qa.runs.import_runs(runs)
    qa.runs.import_runs(runs)  # again: updates
    qa.users.add("mona", "m-secret", "manager")
    qa.users.add("carl", "c-secret", "expert", ["CDC"])
    qa.users.set_password("carl", "c-new")
    assert qa.users.authenticate("carl", "c-new") is not None
    qa.users.remove("carl")
    rng = np.random.default_rng(1)
    for r in (1, 2, 3):
        for _ in range(2):  # stored again: replaced
            h = hist.Hist.new.Reg(20, -1, 1, name="x").Int64()
            h.fill(rng.normal(0, 0.3, 500))
            qa.histograms.store_run(
                RunQA(3, r, [MonitoringValue("t.cdc", "CDC", 1.0, 0.1, "")], {("CDC", "res"): h})
            )
    qa.histograms.set_reference("CDC", "res", 3, 1)
    qa.histograms.set_reference("CDC", "res", 3, 2)  # replaced
    qa.status.evaluate_all(exp=3)
    mona = User("mona", "manager")
    qa.certification.set_flags([(3, r, "CDC", "GOOD") for r in (1, 2, 3)], user=mona, comment="")
    qa.certification.set_flag(3, 2, "CDC", "BAD", user=mona, comment="dead wires")
    qa.certification.set_state(3, 1, "SIGNOFF", user=mona)
    qa.certification.set_state(
        3, 1, "COMPLETED", user=mona, force=True, comment="only CDC is read in this test"
    )  # 6 detectors NOTSET
    made = qa.grls.make("golden", "CDC == GOOD", user=mona)
    assert [r.run for r in made.runs] == [1, 3]
    qa.periods.add(3, 3, "CDC boards replaced")  # a QA period, and its removal
    assert qa.periods.remove(3, 3) == 0


# -- what the application role cannot do -----------------------------------------------------------


#: What the application role must not be able to do, each refused for want of a privilege.
FORBIDDEN = (
    "TRUNCATE iovs",
    "TRUNCATE qa_flags",
    "TRUNCATE payload_files CASCADE",
    "TRUNCATE calibration_jobs CASCADE",
    "DROP TABLE iovs CASCADE",
    "ALTER TABLE payloads ADD COLUMN x integer",
    "ALTER TABLE iovs DISABLE TRIGGER iovs_guard",
    "ALTER TABLE globaltags DISABLE TRIGGER ALL",
    "DROP TRIGGER iovs_guard ON iovs",
    "DROP FUNCTION b2calib_guard_iovs() CASCADE",
    "CREATE OR REPLACE FUNCTION b2calib_immutable() RETURNS trigger AS "
    "$$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql",
    "SET session_replication_role = replica",
    "CREATE TABLE evil (id integer)",
    "CREATE TEMP TABLE globaltags (id integer, state text)",
    "UPDATE payloads SET checksum = 'x'",
    "DELETE FROM payload_files",
    "UPDATE globaltags SET name = 'renamed'",
    "UPDATE globaltags SET id = 99",
    "DELETE FROM globaltags",
    "DELETE FROM qa_flags",
    "UPDATE history SET author = 'mallory'",
    "UPDATE alembic_version SET version_num = '0002'",
)


def published_as_app(roles: Roles) -> ConditionsDB:
    """Set up the roles; as the application role, publish tag ``P`` with one IoV; return the
    application's database."""
    set_up(roles)
    db = ConditionsDB(roles.app_url, author="app")
    db.create_tag("P")
    db.upload_and_add("P", [(value(1), IoV(0, 0))])
    for state in ("TESTING", "VALIDATED", "PUBLISHED"):
        db.set_state("P", state)
    return db


def test_the_application_role_cannot_truncate_drop_alter_or_disable_triggers(
    roles: Roles,
) -> None:
    import psycopg

    db = published_as_app(roles)
    try:
        before = (db.iovs("P"), db.payloads(), db.history())
        with roles.raw(roles.app) as conn:
            for sql in FORBIDDEN:
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match=r"\w"):
                    conn.execute(sql)
        assert (db.iovs("P"), db.payloads(), db.history()) == before
    finally:
        db.close()


def test_the_application_role_meets_the_triggers_where_it_may_write(roles: Roles) -> None:
    """Its privileges allow INSERT into iovs and UPDATE of a tag's state: the triggers still
    guard the published tag."""
    import psycopg

    published_as_app(roles).close()
    with roles.raw(roles.app) as conn:
        for sql in (
            "DELETE FROM iovs",
            "UPDATE globaltags SET state = 'OPEN'",
            "UPDATE globaltags SET modified = now()",
            "UPDATE globaltags SET description = 'edited'",
            "INSERT INTO iovs (globaltag_id, payload_id, first_exp, first_run, final_exp, "
            "final_run, created, author) SELECT globaltag_id, payload_id, 7, 0, 7, -1, now(), "
            "'mallory' FROM iovs",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="b2calib: "):
                conn.execute(sql)


# -- opening as the application role -------------------------------------------------------------


def test_the_application_role_on_an_unmigrated_database_says_the_owner_must_migrate(
    roles: Roles,
) -> None:
    for cls, error in ((ConditionsDB, ConditionsError), (QADatabase, QAError)):
        with pytest.raises(error) as info:
            cls(roles.app_url)
        message = str(info.value)
        assert "\n" not in message
        assert message == (
            f"{shown(roles.app_url)}: the database has no b2calib schema yet and role "
            f"{roles.app} may not create it (an application role owns nothing): the owner role "
            "must migrate it first: b2calib db upgrade --db <the owner's URL>"
        )
    (line,) = b2calib("gt", "list", "--db", roles.app_url, code=1)
    assert line.startswith("Error: ")
    assert "the owner role must migrate it" in line
    with roles.raw(roles.owner) as conn:  # nothing was created
        assert (
            conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
            == 0
        )


def test_the_application_role_on_an_out_of_date_database_says_the_owner_must_migrate(
    roles: Roles,
) -> None:
    migrate(roles.owner_url, "0002")
    engine = make_engine(roles.owner_url)
    try:
        grant(engine, roles.app)  # granted under the old schema
    finally:
        engine.dispose()
    with pytest.raises(ConditionsError) as info:
        ConditionsDB(roles.app_url)
    assert str(info.value) == (
        f"{shown(roles.app_url)}: the database schema is at revision 0002, this b2calib "
        f"needs {HEAD}, and role {roles.app} may not migrate it (an application role owns "
        "nothing): the owner role must migrate it: b2calib db upgrade --db <the owner's URL>"
    )
    set_up(roles)
    ConditionsDB(roles.app_url).close()


def test_an_application_role_without_its_grants_says_the_owner_must_grant(roles: Roles) -> None:
    b2calib("db", "upgrade", "--db", roles.owner_url)
    with pytest.raises(ConditionsError) as info:
        ConditionsDB(roles.app_url)
    assert str(info.value) == (
        f"{shown(roles.app_url)}: role {roles.app} may not read the b2calib tables: the owner role "
        f"must grant it what the application needs: b2calib db grant {roles.app} --db "
        "<the owner's URL>"
    )
    set_up(roles)
    # a table a later migration adds is unreadable until the owner grants again
    with roles.raw(roles.owner) as conn:
        conn.execute("CREATE TABLE qa_added_later (id serial PRIMARY KEY, token text)")
    with pytest.raises(ConditionsError, match=f"role {roles.app} may not read the b2calib tables"):
        ConditionsDB(roles.app_url)
    b2calib("db", "grant", roles.app, "--db", roles.owner_url)
    assert privileges(roles)["qa_added_later"] == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    db = ConditionsDB(roles.app_url)
    try:
        with db.write() as conn:
            conn.execute(sa.text("INSERT INTO qa_added_later (token) VALUES ('t')"))
    finally:
        db.close()


def test_grant_refuses_a_role_that_is_not_an_application_role(roles: Roles, tmp_path: Path) -> None:
    b2calib("db", "upgrade", "--db", roles.owner_url)
    s = roles.server
    s._admin(f"CREATE ROLE {roles.app}_member LOGIN IN ROLE {roles.owner}")
    s._admin(f"CREATE ROLE {roles.app}_super LOGIN SUPERUSER")
    try:
        for role, why in (
            (
                roles.owner,
                f"role {roles.owner} is the role granting: the application needs a role "
                "of its own, one that owns nothing",
            ),
            (
                f"{roles.app}_super",
                f"role {roles.app}_super is a superuser: it passes every "
                "privilege check and every trigger can be switched off by it",
            ),
            (
                f"{roles.app}_member",
                f"role {roles.app}_member is a member of {roles.owner}, the "
                "owner: it would hold the owner's rights",
            ),
            (
                "nobody_here",
                "role nobody_here does not exist: a database administrator creates "
                "it first (CREATE ROLE nobody_here LOGIN PASSWORD '...')",
            ),
        ):
            (line,) = b2calib("db", "grant", role, "--db", roles.owner_url, code=1)
            assert line == f"Error: {shown(roles.owner_url)}: {why}"
    finally:
        s._admin(f"DROP ROLE {roles.app}_member")
        s._admin(f"DROP ROLE {roles.app}_super")
    sqlite = f"sqlite:///{tmp_path / 'c.sqlite'}"
    (line,) = b2calib("db", "grant", "app", "--db", sqlite, code=1)
    assert line == (
        f"Error: {sqlite}: roles are PostgreSQL's; an SQLite database has none (the file's "
        "permissions say who may write it)"
    )


def test_grant_needs_the_owner_to_own_the_database(roles: Roles) -> None:
    s = roles.server
    other = s.create_database("notowned")
    s._admin(f"GRANT CREATE ON DATABASE {other} TO {roles.owner}")
    import psycopg

    with psycopg.connect(**s.conninfo(other), autocommit=True) as conn:
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {roles.owner}")
    url = roles.url(roles.owner).replace(roles.database, other)
    try:
        b2calib("db", "upgrade", "--db", url)
        (line,) = b2calib("db", "grant", roles.app, "--db", url, code=1)
        assert line == (
            f"Error: {shown(url)}: role {roles.owner} does not own database {other}: create the "
            f"database owned by the role that migrates it (CREATE DATABASE {other} OWNER "
            f"{roles.owner}), so that it can keep other roles from creating objects in it"
        )
    finally:
        s.drop_database(other)


def test_trigger_functions_resolve_tables_in_their_own_schema(roles: Roles) -> None:
    """A table in a session's temporary schema cannot stand in for globaltags."""
    b2calib("db", "upgrade", "--db", roles.owner_url)
    with roles.raw(roles.owner) as conn:
        rows = conn.execute(
            "SELECT proname, proconfig FROM pg_proc WHERE proname LIKE 'b2calib%'"
        ).fetchall()
    config = dict(rows)
    for name in (
        "b2calib_guard_iovs",
        "b2calib_guard_globaltags",
        "b2calib_immutable",
        "b2calib_born_open",
        "b2calib_append_only",
        "b2calib_history_append_only",
        "b2calib_no_truncate",
    ):
        assert config[name] == ["search_path=public, pg_temp"], name
