"""Immutability that holds against raw SQL: no row of a protected table is ever replaced, key
columns never change, a PUBLISHED or INVALID tag changes only by the move to INVALID, the
history is append-only, and (PostgreSQL) no protected table can be truncated.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

The protected tables are the conditions' (``payloads``, ``payload_files``, ``globaltags``,
``iovs``), the audit log (``history``, which keeps each published tag's manifest) and the
append-only quality-assurance history (``qa_flags``, ``qa_run_states``, ``qa_grls``).

* SQLite resolves ``INSERT OR REPLACE`` (and ``UPDATE OR REPLACE``) by deleting the conflicting
  row without firing its delete triggers, so 0001/0002's update and delete triggers never saw
  it. A ``BEFORE INSERT`` trigger per protected table now refuses a row whose key (primary key
  or unique columns) exists, before SQLite resolves any conflict; the rules hold for any
  client, with no connection setting of b2calib's own.
* Key columns never change (``UPDATE globaltags SET id = 99`` with foreign keys off detached a
  published tag from its IoVs; a rename onto an existing name replaced that tag).
* A PUBLISHED or INVALID tag's row changes only by the move PUBLISHED -> INVALID (which records
  its time in ``modified``); any other change, ``modified`` included, is refused.
* PostgreSQL's row triggers do not see ``TRUNCATE``: a statement-level ``BEFORE TRUNCATE``
  trigger refuses it on every protected table (``CASCADE`` included, each table truncated
  fires its own).
* PostgreSQL: every b2calib trigger function resolves table names in the schema it was
  created in (``search_path`` pinned, ``pg_temp`` last), so that a table of the same name in a
  session's temporary schema cannot stand in for ``globaltags``.

The messages start with "b2calib:" like 0001's and 0002's, so that the library reports them as
rule violations.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FROZEN = "('PUBLISHED', 'INVALID')"
MOVES = (
    "('OPEN>TESTING', 'OPEN>RUNNING', 'TESTING>VALIDATED', 'TESTING>OPEN', "
    "'VALIDATED>PUBLISHED', 'VALIDATED>OPEN', 'PUBLISHED>INVALID')"
)
TAG_FROZEN = "'b2calib: the global tag is PUBLISHED or INVALID, it is immutable'"
TAG_UNDELETABLE = "'b2calib: the global tag is PUBLISHED or INVALID, it cannot be deleted'"
BAD_MOVE = "'b2calib: this global tag state change is not allowed'"
IOVS_FROZEN = "'b2calib: the global tag is PUBLISHED or INVALID, its IoVs are immutable'"
TAG_KEY = "'b2calib: a global tag keeps its id and its name'"
IOV_KEY = "'b2calib: an IoV keeps its id'"
PAYLOAD_FROZEN = "'b2calib: stored payloads are immutable'"
QA_APPEND_ONLY = "'b2calib: quality-assurance history is append-only'"
HISTORY_APPEND_ONLY = "'b2calib: the history is append-only'"

#: Protected table -> (its key columns, each tuple one unique key; the message refusing a
#: replacement). ``id`` keys are SQLite rowids: NEW.id is -1 in a BEFORE INSERT trigger when
#: the statement leaves the id to SQLite.
NEVER_REPLACED = {
    "payloads": ((("id",), ("name", "revision")), PAYLOAD_FROZEN),
    "payload_files": ((("payload_id",),), PAYLOAD_FROZEN),
    "globaltags": (
        (("id",), ("name",)),
        "'b2calib: a global tag is never replaced (its id or name exists)'",
    ),
    "iovs": ((("id",),), "'b2calib: an IoV is never replaced (its id exists)'"),
    "history": ((("id",),), HISTORY_APPEND_ONLY),
    "qa_flags": ((("id",),), QA_APPEND_ONLY),
    "qa_run_states": ((("id",),), QA_APPEND_ONLY),
    "qa_grls": ((("id",), ("name", "version")), QA_APPEND_ONLY),
}
PROTECTED = tuple(NEVER_REPLACED)

# what 0001 created, restored by the downgrade
SQLITE_0001_FROZEN_UPDATE = f"""CREATE TRIGGER globaltags_frozen_update BEFORE UPDATE ON globaltags
    WHEN OLD.state IN {FROZEN} AND (
      NEW.name IS NOT OLD.name OR NEW.type IS NOT OLD.type
      OR NEW.description IS NOT OLD.description OR NEW.author IS NOT OLD.author
      OR NEW.created IS NOT OLD.created)
    BEGIN SELECT RAISE(ABORT, {TAG_FROZEN}); END"""


def _key_match(key: tuple[str, ...]) -> str:
    if key == ("id",) or key == ("payload_id",):
        return f"({key[0]} = NEW.{key[0]} AND NEW.{key[0]} <> -1)"
    return "(" + " AND ".join(f"{c} = NEW.{c}" for c in key) + ")"


def _sqlite_upgrade() -> list[str]:
    out = []
    for table, (keys, message) in NEVER_REPLACED.items():
        match = " OR ".join(_key_match(k) for k in keys)
        out.append(
            f"CREATE TRIGGER {table}_never_replaced BEFORE INSERT ON {table} "
            f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {match}) "
            f"BEGIN SELECT RAISE(ABORT, {message}); END"
        )
    out += [
        f"""CREATE TRIGGER globaltags_keys BEFORE UPDATE OF id, name ON globaltags
        WHEN NEW.id IS NOT OLD.id OR NEW.name IS NOT OLD.name
        BEGIN SELECT RAISE(ABORT, {TAG_KEY}); END""",
        f"""CREATE TRIGGER iovs_keys BEFORE UPDATE OF id ON iovs
        WHEN NEW.id IS NOT OLD.id
        BEGIN SELECT RAISE(ABORT, {IOV_KEY}); END""",
        "DROP TRIGGER globaltags_frozen_update",
        f"""CREATE TRIGGER globaltags_frozen_update BEFORE UPDATE ON globaltags
        WHEN OLD.state IN {FROZEN} AND (
          NEW.id IS NOT OLD.id OR NEW.name IS NOT OLD.name OR NEW.type IS NOT OLD.type
          OR NEW.description IS NOT OLD.description OR NEW.author IS NOT OLD.author
          OR NEW.created IS NOT OLD.created
          OR (NEW.modified IS NOT OLD.modified
              AND NOT (OLD.state = 'PUBLISHED' AND NEW.state = 'INVALID')))
        BEGIN SELECT RAISE(ABORT, {TAG_FROZEN}); END""",
    ]
    for what in ("UPDATE", "DELETE"):
        out.append(
            f"CREATE TRIGGER history_append_only_{what.lower()} BEFORE {what} ON history "
            f"BEGIN SELECT RAISE(ABORT, {HISTORY_APPEND_ONLY}); END"
        )
    return out


def _sqlite_downgrade() -> list[str]:
    out = [f"DROP TRIGGER {table}_never_replaced" for table in NEVER_REPLACED]
    out += [
        "DROP TRIGGER globaltags_keys",
        "DROP TRIGGER iovs_keys",
        "DROP TRIGGER history_append_only_update",
        "DROP TRIGGER history_append_only_delete",
        "DROP TRIGGER globaltags_frozen_update",
        SQLITE_0001_FROZEN_UPDATE,
    ]
    return out


def _guard_iovs(key_rule: bool) -> str:
    key = (
        f"""
      IF TG_OP = 'UPDATE' AND NEW.id IS DISTINCT FROM OLD.id THEN
        RAISE EXCEPTION {IOV_KEY};
      END IF;"""
        if key_rule
        else ""
    )
    return f"""CREATE OR REPLACE FUNCTION b2calib_guard_iovs() RETURNS trigger AS $$
    BEGIN
      IF TG_OP IN ('UPDATE', 'DELETE') AND (SELECT state FROM globaltags
          WHERE id = OLD.globaltag_id) IN {FROZEN} THEN
        RAISE EXCEPTION {IOVS_FROZEN};
      END IF;{key}
      IF TG_OP IN ('UPDATE', 'INSERT') THEN
        IF (SELECT state FROM globaltags WHERE id = NEW.globaltag_id) IN {FROZEN} THEN
          RAISE EXCEPTION {IOVS_FROZEN};
        END IF;
        RETURN NEW;
      END IF;
      RETURN OLD;
    END $$ LANGUAGE plpgsql"""


def _guard_globaltags(strict: bool) -> str:
    frozen_extra = (
        """ OR NEW.id IS DISTINCT FROM OLD.id
          OR (NEW.modified IS DISTINCT FROM OLD.modified
              AND NOT (OLD.state = 'PUBLISHED' AND NEW.state = 'INVALID'))"""
        if strict
        else ""
    )
    key = (
        f"""
      IF NEW.id IS DISTINCT FROM OLD.id OR NEW.name IS DISTINCT FROM OLD.name THEN
        RAISE EXCEPTION {TAG_KEY};
      END IF;"""
        if strict
        else ""
    )
    return f"""CREATE OR REPLACE FUNCTION b2calib_guard_globaltags() RETURNS trigger AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        IF OLD.state IN {FROZEN} THEN
          RAISE EXCEPTION {TAG_UNDELETABLE};
        END IF;
        RETURN OLD;
      END IF;
      IF OLD.state IN {FROZEN} AND (NEW.name IS DISTINCT FROM OLD.name
          OR NEW.type IS DISTINCT FROM OLD.type OR NEW.description IS DISTINCT FROM OLD.description
          OR NEW.author IS DISTINCT FROM OLD.author
          OR NEW.created IS DISTINCT FROM OLD.created{frozen_extra}) THEN
        RAISE EXCEPTION {TAG_FROZEN};
      END IF;{key}
      IF NEW.state IS DISTINCT FROM OLD.state
          AND (OLD.state || '>' || NEW.state) NOT IN {MOVES} THEN
        RAISE EXCEPTION {BAD_MOVE};
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql"""


#: Every trigger function of the b2calib schema (0001, 0002 and this revision).
FUNCTIONS = (
    "b2calib_guard_iovs",
    "b2calib_guard_globaltags",
    "b2calib_immutable",
    "b2calib_born_open",
    "b2calib_append_only",
    "b2calib_history_append_only",
    "b2calib_no_truncate",
)


def _postgres_upgrade() -> list[str]:
    out = [
        _guard_iovs(key_rule=True),
        _guard_globaltags(strict=True),
        "CREATE FUNCTION b2calib_history_append_only() RETURNS trigger AS $$ "
        f"BEGIN RAISE EXCEPTION {HISTORY_APPEND_ONLY}; END $$ LANGUAGE plpgsql",
        """CREATE TRIGGER history_append_only BEFORE UPDATE OR DELETE ON history
        FOR EACH ROW EXECUTE FUNCTION b2calib_history_append_only()""",
        """CREATE FUNCTION b2calib_no_truncate() RETURNS trigger AS $$
        BEGIN
          RAISE EXCEPTION 'b2calib: the table % is protected, it cannot be truncated',
            TG_TABLE_NAME;
        END $$ LANGUAGE plpgsql""",
    ]
    out += [
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION b2calib_no_truncate()"
        for table in PROTECTED
    ]
    pins = "; ".join(
        f"EXECUTE format('ALTER FUNCTION {f}() SET search_path = %I, pg_temp', current_schema())"
        for f in FUNCTIONS
    )
    out.append(f"DO $$ BEGIN {pins}; END $$")
    return out


def _postgres_downgrade() -> list[str]:
    out = [f"DROP TRIGGER {table}_no_truncate ON {table}" for table in PROTECTED]
    out += [
        "DROP FUNCTION b2calib_no_truncate()",
        "DROP FUNCTION b2calib_history_append_only() CASCADE",
        _guard_iovs(key_rule=False),
        _guard_globaltags(strict=False),
    ]
    out += [f"ALTER FUNCTION {f}() RESET search_path" for f in FUNCTIONS[:5]]
    return out


def _statements(up: bool) -> list[str]:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        return _sqlite_upgrade() if up else _sqlite_downgrade()
    if dialect == "postgresql":
        return _postgres_upgrade() if up else _postgres_downgrade()
    raise RuntimeError(f"b2calib conditions database: unsupported backend {dialect!r}")


def upgrade() -> None:
    for statement in _statements(up=True):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(up=False):
        op.execute(statement)
