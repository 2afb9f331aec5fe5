"""PostgreSQL roles: an owner that migrates, an application role that owns nothing.

On a shared PostgreSQL server b2calib's tables belong to an *owner* role, the one that creates
and migrates them (``b2calib db upgrade``) and owns the database. The application (the command
line, the dashboards, calibration jobs, notebooks) connects as an *application* role that owns
nothing and holds only the privileges :func:`grant` gives it: what the library's normal
operations need, never ``TRUNCATE``, never DDL (no ``CREATE`` in the schema, no temporary
tables; owning nothing, it can alter, drop or disable the triggers of no table). The owner
grants them with ``b2calib db grant ROLE`` after every migration (a table a later revision adds
is reachable once granted). A database administrator creates both roles and the database once;
the README's PostgreSQL section has the statements.

The privileges (:data:`APPLICATION_PRIVILEGES`): the protected tables, whose rows are never
changed (payloads and their files, the history, the append-only quality-assurance records,
calibration validations, the prompt loop's task outcomes and the reviews of staging tags), get
``SELECT`` and ``INSERT``;
IoVs also ``DELETE`` (an OPEN tag's IoVs are removed); global tags ``UPDATE`` of their state,
time of change, description and type only; the prompt loop's invocations ``UPDATE`` of their
end only; every other table
of the owner's (:data:`OTHER_TABLES`: QA runs, variables, histograms, references, comparisons,
users, calibration checkpoints, and tables later migrations add) ``SELECT``, ``INSERT``,
``UPDATE`` and ``DELETE``; the schema's sequences ``USAGE``. The triggers of the migrations
still guard what the privileges allow (a PUBLISHED tag's IoVs, its state moves).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from b2calib.db.engine import writing
from b2calib.exceptions import B2CalibError

__all__ = ["APPLICATION_PRIVILEGES", "OTHER_TABLES", "grant"]

#: Table -> the privileges the application role gets on it.
APPLICATION_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "payloads": ("SELECT", "INSERT"),
    "payload_files": ("SELECT", "INSERT"),
    "globaltags": ("SELECT", "INSERT", "UPDATE (state, modified, description, type)"),
    "iovs": ("SELECT", "INSERT", "DELETE"),
    "history": ("SELECT", "INSERT"),
    "qa_flags": ("SELECT", "INSERT"),
    "qa_run_states": ("SELECT", "INSERT"),
    "qa_grls": ("SELECT", "INSERT"),
    "calibration_validations": ("SELECT", "INSERT"),
    # the prompt loop's records: an invocation is only ever finished, a task outcome only added
    "prompt_runs": ("SELECT", "INSERT", "UPDATE (finished)"),
    "prompt_tasks": ("SELECT", "INSERT"),
    # the reviews of staging tags: append-only
    "tag_reviews": ("SELECT", "INSERT"),
    "alembic_version": ("SELECT",),
}
#: The privileges on every other table the owner owns in the schema.
OTHER_TABLES = ("SELECT", "INSERT", "UPDATE", "DELETE")


def grant(engine: Engine, role: str) -> list[str]:
    """Give application role ``role`` what the application needs, and nothing more, on the
    b2calib tables of ``engine``'s database, connected as their owner; idempotent.

    Revokes whatever ``role`` held on the schema's tables and sequences first, and keeps every
    role but the owner from creating objects in the schema and temporary tables in the
    database.

    Returns
    -------
    list[str]
        What was granted, one line per table (for the command line).

    Raises
    ------
    B2CalibError
        The database is not PostgreSQL, or has no b2calib schema yet; the connected role does
        not own the tables and the database; ``role`` does not exist, is the connected role, a
        superuser, a member of the owner or owns tables itself.
    """
    with writing(engine) as conn:
        if conn.dialect.name != "postgresql":
            raise B2CalibError(
                "roles are PostgreSQL's; an SQLite database has none (the file's permissions "
                "say who may write it)"
            )
        me, schema, database = conn.execute(
            sa.text("SELECT current_user, current_schema(), current_database()")
        ).one()
        _check_role(conn, role, me)
        tables = _owned_tables(conn, schema, me)
        if "alembic_version" not in tables:
            raise B2CalibError(
                f"no b2calib schema in {database} owned by role {me}: migrate it first "
                "(b2calib db upgrade), as the role that owns it"
            )
        db_owner = conn.execute(
            sa.text(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
            )
        ).scalar()
        if db_owner != me:
            raise B2CalibError(
                f"role {me} does not own database {database}: create the database owned by the "
                f"role that migrates it (CREATE DATABASE {database} OWNER {me}), so that it can "
                "keep other roles from creating objects in it"
            )
        q = conn.dialect.identifier_preparer.quote
        r, s, d = q(role), q(schema), q(database)
        statements = [
            f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}",
            f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {r}",
            f"REVOKE CREATE ON SCHEMA {s} FROM PUBLIC, {r}",
            f"GRANT USAGE ON SCHEMA {s} TO {r}",
            f"REVOKE TEMPORARY ON DATABASE {d} FROM PUBLIC, {r}",
            f"GRANT CONNECT ON DATABASE {d} TO {r}",
            f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
        ]
        lines = [f"granted role {role} what the application needs in {database}:"]
        for table in tables:
            privileges = APPLICATION_PRIVILEGES.get(table, OTHER_TABLES)
            statements.append(f"GRANT {', '.join(privileges)} ON {s}.{q(table)} TO {r}")
            lines.append(f"  {table}: {', '.join(privileges)}")
        lines.append(f"  sequences of schema {schema}: USAGE")
        for statement in statements:
            conn.execute(sa.text(statement))
        return lines


def _check_role(conn: Connection, role: str, me: str) -> None:
    """Refuse a role that is not an application role: missing, the owner, a superuser, a
    member of the owner."""
    found = conn.execute(
        sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"), {"r": role}
    ).first()
    if found is None:
        raise B2CalibError(
            f"role {role} does not exist: a database administrator creates it first "
            f"(CREATE ROLE {role} LOGIN PASSWORD '...')"
        )
    if role == me:
        raise B2CalibError(
            f"role {role} is the role granting: the application needs a role of its own, one "
            "that owns nothing"
        )
    if found.rolsuper:
        raise B2CalibError(
            f"role {role} is a superuser: it passes every privilege check and every trigger "
            "can be switched off by it"
        )
    owned = conn.execute(
        sa.text(
            "SELECT count(*) FROM pg_class WHERE relowner = "
            "(SELECT oid FROM pg_roles WHERE rolname = :r)"
        ),
        {"r": role},
    ).scalar()
    if owned:
        raise B2CalibError(
            f"role {role} owns {owned} tables or other objects in this database: an application "
            "role owns nothing"
        )
    member = conn.execute(
        sa.text("SELECT pg_has_role(:r, :me, 'MEMBER')"), {"r": role, "me": me}
    ).scalar()
    if member:
        raise B2CalibError(
            f"role {role} is a member of {me}, the owner: it would hold the owner's rights"
        )


def _owned_tables(conn: Connection, schema: str, owner: str) -> list[str]:
    rows: Any = conn.execute(
        sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = :s AND tableowner = :o "
            "ORDER BY tablename"
        ),
        {"s": schema, "o": owner},
    )
    return [t for (t,) in rows]


def __dir__() -> list[str]:
    return __all__
