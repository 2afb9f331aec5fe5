"""The database layer: a Database raises its owner's error class, logs changes, and the
migrations reach the tables of every domain without importing them."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from b2calib.conditions import ConditionsDB
from b2calib.db import MIGRATIONS, Database, as_utc, history, now
from b2calib.exceptions import B2CalibError, QAError
from b2calib.qa.store import QADatabase
from tests.conftest import REPO

TABLE_MODULES = (
    "b2calib.conditions.tables",
    "b2calib.calibration.jobs",
    "b2calib.qa.store.tables",
    "b2calib.prompt.tables",
    "b2calib.review.tables",
)


class _Error(B2CalibError):
    pass


class _Owner(Database):
    error = _Error
    label = "test database"


def test_a_database_raises_its_owner_s_error(tmp_path: Path) -> None:
    with pytest.raises(_Error, match="cannot open the test database"):
        _Owner(tmp_path / "no" / "such" / "folder" / "t.sqlite")
    db = QADatabase(tmp_path / "qa.sqlite", author="admin")
    try:
        assert repr(db) == f"QADatabase('sqlite:///{tmp_path / 'qa.sqlite'}')"
        db.runs.import_runs([])
        # a rule of the database itself (a trigger) is reported as the owner's error
        with pytest.raises(QAError, match="refused by the database: quality-assurance history"):
            _insert_then_delete_a_flag(db)
        with pytest.raises(QAError, match="write failed, nothing was changed"), db.write() as conn:
            conn.execute(sa.text("INSERT INTO no_such_table VALUES (1)"))
        with db.read() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM qa_flags")).scalar() == 0
    finally:
        db.close()


def _insert_then_delete_a_flag(db: Database) -> None:
    with db.write() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO qa_flags (exp, run, detector, flag, comment, author, time) "
                "VALUES (1, 1, 'CDC', 'GOOD', '', 'x', '2026-01-01')"
            )
        )
        conn.execute(sa.text("DELETE FROM qa_flags"))


def test_the_audit_log_is_shared(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b2calib.sqlite'}"
    qa, conditions = QADatabase(url, author="admin"), ConditionsDB(url, author="alice")
    try:
        qa.users.add("mona", "m-secret", "manager")
        conditions.create_tag("T")
        with conditions.write() as conn:
            conditions.log(conn, "note", "T", why="a test")
        entries = conditions.history()
        assert [(e.author, e.action, e.globaltag) for e in entries] == [
            ("admin", "add_user", None),
            ("alice", "create", "T"),
            ("alice", "note", "T"),
        ]
        assert entries[-1].details == {"why": "a test"}
        with qa.read() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(history)).scalar() == 3
    finally:
        qa.close()
        conditions.close()


def test_the_clock_is_utc() -> None:
    assert now().tzinfo is UTC
    naive = datetime(2026, 1, 1, 12)
    assert as_utc(naive) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    cet = datetime(2026, 1, 1, 13, tzinfo=timezone(timedelta(hours=1)))
    assert as_utc(cet) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert as_utc(cet).tzinfo is UTC


def test_migrations_import_no_domain_code() -> None:
    """The migrations are frozen history: they and their environment import no domain."""
    allowed = ("__future__", "alembic", "sqlalchemy", "importlib")
    files = [MIGRATIONS / "env.py", *sorted((MIGRATIONS / "versions").glob("*.py"))]
    assert len(files) >= 3
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                for name in names:
                    assert name.split(".")[0] in allowed or name.startswith("b2calib.db"), (
                        path,
                        name,
                    )


def test_developers_autogenerate_names_the_table_modules(tmp_path: Path) -> None:
    """The developers' command line (pyproject's [tool.alembic]): with the table modules named
    by ``-x tables``, autogenerate finds the migrations complete."""
    url = f"sqlite:///{tmp_path / 'dev.sqlite'}"
    tables = ",".join(TABLE_MODULES)
    for args in (["upgrade", "head"], ["-x", f"tables={tables}", "check"]):
        done = subprocess.run(
            [sys.executable, "-m", "alembic", "-x", f"url={url}", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
    assert "No new upgrade operations detected" in done.stdout + done.stderr
