"""The conditions-database commands of ``b2calib``, after basf2's ``b2conditionsdb``.

::

    b2calib gt list [--state S] [--regex R]        global tags
    b2calib gt show NAME                           a tag's record and its payload IoVs
    b2calib gt create NAME [--type T] [--description D]
    b2calib gt clone SOURCE NAME [--description D]
    b2calib gt modify NAME [--description D] [--type T]
    b2calib gt state NAME STATE                    prints OLD -> NEW
    b2calib gt approve NAME --user U [--comment C] TESTING -> VALIDATED, recorded as a review
    b2calib gt reject NAME --user U --comment C    TESTING -> OPEN, recorded as a review
    b2calib gt merge NEW SOURCE... [--description D]   first source wins
    b2calib gt diff A B                            + added, - removed, ~ changed
    b2calib gt runningupdate RUNNING STAGING --run EXP RUN [--mode M] [--dry-run]
                                                   M: strict, allow-closed, fix-closed,
                                                   simple, full-replacement
    b2calib gt snapshot RUNNING NAME --until EXP RUN
    b2calib gt history [NAME] [--limit N]
    b2calib iov [list] TAG [--name P] [--run EXP RUN]   ``iov TAG`` is short for ``iov list TAG``
    b2calib iov add TAG PAYLOAD REVISION IOV
    b2calib iov remove TAG PAYLOAD IOV
    b2calib lookup EXP RUN --gt A [--gt B ...] [--name P] [--time T]
    b2calib payload upload FILE [--gt TAG --iov IOV]
    b2calib payload list [NAME]
    b2calib payload show NAME [--revision N]
    b2calib payload dump NAME [--revision N] [--limit N] [--csv]
    b2calib db export-local FOLDER --gt A [--gt B ...] [--runs IOV]
    b2calib db import-local FOLDER --gt TAG [--description D]
    b2calib db info
    b2calib db verify                              payload checksums, published tags' manifests
    b2calib db upgrade                             create or migrate the schema (the owner)
    b2calib db grant ROLE                          PostgreSQL: the application role's privileges

Every command takes ``--db URL`` (default ``$B2CALIB_DB``, else the SQLite file in the user's
data directory); commands that write take ``--author`` (default ``$B2CALIB_USER``, else the
login name). ``gt approve`` and ``gt reject`` authenticate as ``b2calib signoff flag`` does
(``--user``, default ``$B2CALIB_USER``; the password from ``$B2CALIB_PASSWORD``, else standard
input when it is not a terminal, else asked for) and record the user as the author; a manager
reviews any tag, a detector's expert only a tag of that detector's calibrations alone. An IoV
is written ``first_exp,first_run,final_exp,final_run`` (-1 = open).
Errors are one line naming the tag, payload or IoV at fault, with exit status 1 (2 for a
command-line usage error); a refused running update lists its problems, one a line, below it.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from b2calib.cli.output import DB_HELP, cell, record, table
from b2calib.exceptions import B2CalibError

if TYPE_CHECKING:
    from b2calib.conditions import ConditionsDB, Diff, IoV, IovEntry, PayloadInfo

__all__ = ["db", "gt", "iov", "lookup", "payload"]

#: The running-update modes (b2calib.conditions.RUNNING_UPDATE_MODES, without loading it).
_MODES = ("strict", "allow_closed", "fix_closed", "simple", "full_replacement")


def _iov_rows(entries: Iterable[IovEntry], *, tag: bool = False) -> list[list[object]]:
    return [
        [e.name, e.payload.revision, str(e.iov), e.payload.checksum]
        + ([e.globaltag] if tag else [])
        for e in entries
    ]


_IOV_HEADER = ["payload", "rev", "iov", "checksum"]


def _diff_lines(d: Diff[PayloadInfo]) -> list[list[object]]:
    """``+`` added, ``-`` removed, ``~`` changed rows, by payload name and first run."""
    rows: list[tuple[tuple[str, tuple[int, int]], list[object]]] = []
    for sign, entries in (("+", d.added), ("-", d.removed)):
        for name, iov, info in entries:
            rows.append(((name, iov.start), [sign, name, f"rev {info.revision}", str(iov)]))
    for (name, iov_a, a), (_, iov_b, b) in d.changed:
        rev = f"rev {a.revision}" + ("" if a.revision == b.revision else f" -> {b.revision}")
        span = str(iov_a) + ("" if iov_a == iov_b else f" -> {iov_b}")
        rows.append(((name, iov_a.start), ["~", name, rev, span]))
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


def _diff_counts(d: Diff[PayloadInfo]) -> str:
    return f"{len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed"


# -- database options --------------------------------------------------------------------------


@contextmanager
def _open(url: str | None, author: str | None = None) -> Iterator[ConditionsDB]:
    from b2calib.conditions import ConditionsDB

    cdb = ConditionsDB(url, author=author)
    try:
        yield cdb
    finally:
        cdb.close()


def _uses_db(*, writes: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--db`` (and ``--author`` when the command writes) and pass the opened database
    as the command's first argument."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def command(*, db_url: str | None, author: str | None = None, **kwargs: Any) -> Any:
            with _open(db_url, author) as cdb:
                return f(cdb, **kwargs)

        if writes:
            command = click.option(
                "--author",
                metavar="NAME",
                help="Author recorded for the change (default: $B2CALIB_USER, else the login).",
            )(command)
        return click.option(
            "--db", "db_url", metavar="URL", envvar="B2CALIB_DB", show_envvar=True, help=DB_HELP
        )(command)

    return decorate


def _run_key(value: tuple[int, int] | None) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


def _parse_iov(text: str) -> IoV:
    from b2calib.conditions import IoV

    return IoV.parse(text)


def _type(value: str | None) -> str | None:
    return None if value is None else value.upper()


def _run_option(*decls: str, help: str, required: bool = False) -> Callable[[Any], Any]:
    return click.option(*decls, nargs=2, type=int, metavar="EXP RUN", required=required, help=help)


# -- gt ----------------------------------------------------------------------------------------


@click.group()
def gt() -> None:
    """Global tags: list, show, create, clone, modify, state, approve, reject, merge, diff,
    running update, snapshot, history."""


@gt.command("list")
@click.option("--state", help="Only tags in this state (OPEN, TESTING, ..., RUNNING).")
@click.option("--regex", help="Only tags whose name matches this regular expression.")
@_uses_db()
def gt_list(cdb: ConditionsDB, state: str | None, regex: str | None) -> None:
    """Global tags: name, type, state, last modification and description."""
    try:
        pattern = re.compile(regex) if regex is not None else None
    except re.error as err:
        raise click.BadParameter(f"{regex!r}: {err}", param_hint="--regex") from None
    tags = [t for t in cdb.tags(state) if pattern is None or pattern.search(t.name)]
    if not tags:
        click.echo("no global tags")
        return
    rows = [[t.name, t.type, t.state, t.modified, t.description] for t in tags]
    click.echo(table(["name", "type", "state", "modified (UTC)", "description"], rows))


@gt.command("show")
@click.argument("name")
@_uses_db()
def gt_show(cdb: ConditionsDB, name: str) -> None:
    """A global tag's record and its payload IoVs."""
    t = cdb.tag(name)
    entries = cdb.iovs(name)
    click.echo(
        record(
            [
                ("name", t.name),
                ("type", t.type),
                ("state", t.state),
                ("description", t.description),
                ("created", f"{cell(t.created)} UTC by {t.author}"),
                ("modified", f"{cell(t.modified)} UTC"),
                ("IoVs", len(entries)),
            ]
        )
    )
    if entries:
        click.echo("\n" + table(_IOV_HEADER, _iov_rows(entries)))


@gt.command("create")
@click.argument("name")
@click.option("--type", "tag_type", default="DEV", show_default=True, help="DEV or RELEASE.")
@click.option("--description", default="", help="What the tag is for.")
@_uses_db(writes=True)
def gt_create(cdb: ConditionsDB, name: str, tag_type: str, description: str) -> None:
    """Create an empty OPEN global tag."""
    t = cdb.create_tag(name, type=tag_type.upper(), description=description)
    click.echo(f"created {t.type} global tag {t.name} ({t.state})")


@gt.command("clone")
@click.argument("source")
@click.argument("name")
@click.option("--description", help="Default: 'clone of SOURCE'.")
@_uses_db(writes=True)
def gt_clone(cdb: ConditionsDB, source: str, name: str, description: str | None) -> None:
    """A new OPEN tag NAME with the IoVs of SOURCE (in any state)."""
    t = cdb.clone_tag(source, name, description=description)
    click.echo(f"created {t.name} ({t.state}) from {source}: {len(cdb.iovs(name))} IoVs")


@gt.command("modify")
@click.argument("name")
@click.option("--description", help="New description.")
@click.option("--type", "tag_type", help="New type: DEV or RELEASE.")
@_uses_db(writes=True)
def gt_modify(cdb: ConditionsDB, name: str, description: str | None, tag_type: str | None) -> None:
    """Change a tag's description or type (not once PUBLISHED or INVALID)."""
    if description is None and tag_type is None:
        raise click.UsageError("give --description and/or --type")
    t = cdb.modify_tag(name, description=description, type=_type(tag_type))
    click.echo(f"{t.name}: type {t.type}, description {t.description!r}")


@gt.command("state")
@click.argument("name")
@click.argument("state")
@_uses_db(writes=True)
def gt_state(cdb: ConditionsDB, name: str, state: str) -> None:
    """Move a tag to STATE. Allowed moves: OPEN -> TESTING or RUNNING; TESTING -> VALIDATED
    or OPEN; VALIDATED -> PUBLISHED or OPEN; PUBLISHED -> INVALID."""
    old = cdb.tag(name).state
    new = cdb.set_state(name, state).state
    click.echo(f"{name}: {old} -> {new}" if old != new else f"{name}: already {new}")


def _review_command(action: str) -> Callable[..., Any]:
    def run(name: str, user_name: str | None, comment: str, db_url: str | None) -> None:
        from b2calib.cli.qa import _read_password
        from b2calib.qa.store.users import Users
        from b2calib.review import approve, reject

        if not user_name:
            raise click.UsageError(f"gt {action} writes: give --user (or set $B2CALIB_USER)")
        with _open(db_url, user_name) as cdb:
            password = os.environ.get("B2CALIB_PASSWORD") or _read_password(twice=False)
            user = Users(cdb).authenticate(user_name, password)
            if user is None:
                raise click.ClickException(f"user {user_name!r}: wrong name or password")
            review = (approve if action == "approve" else reject)(cdb, name, user, comment)
        click.echo(
            f"{name}: {review.state_from} -> {review.state_to} ({action.rstrip('e')}ed by "
            f"{review.user}, {review.role})"
        )

    return run


_REVIEW_USER = click.option(
    "--user",
    "user_name",
    envvar="B2CALIB_USER",
    help="Your b2calib user name (default $B2CALIB_USER); the password is read from "
    "$B2CALIB_PASSWORD, else from standard input when it is not a terminal, else asked for.",
)
_REVIEW_DB = click.option(
    "--db", "db_url", metavar="URL", envvar="B2CALIB_DB", show_envvar=True, help=DB_HELP
)


@gt.command("approve")
@click.argument("name")
@_REVIEW_USER
@click.option("--comment", default="", help="Why it is approved (recorded with the review).")
@_REVIEW_DB
def gt_approve(name: str, user_name: str | None, comment: str, db_url: str | None) -> None:
    """Approve staging tag NAME: TESTING -> VALIDATED, recorded with the user, role and comment
    in the tag's reviews. A manager approves any tag; a detector's expert only a tag whose
    payloads all come from that detector's calibrations."""
    _review_command("approve")(name, user_name, comment, db_url)


@gt.command("reject")
@click.argument("name")
@_REVIEW_USER
@click.option("--comment", required=True, help="Why it is rejected (required).")
@_REVIEW_DB
def gt_reject(name: str, user_name: str | None, comment: str, db_url: str | None) -> None:
    """Reject staging tag NAME: TESTING -> OPEN (its calibrations may stage again), recorded
    with the user, role and comment in the tag's reviews; who may: as for ``gt approve``."""
    _review_command("reject")(name, user_name, comment, db_url)


@gt.command("merge")
@click.argument("name")
@click.argument("sources", nargs=-1, required=True)
@click.option("--description", help="Default: 'merge of SOURCES'.")
@_uses_db(writes=True)
def gt_merge(
    cdb: ConditionsDB, name: str, sources: tuple[str, ...], description: str | None
) -> None:
    """A new OPEN tag NAME combining SOURCES by priority: the first given wins, a later one only
    fills runs the earlier ones leave without a payload of that name."""
    t = cdb.merge(name, list(sources), description=description)
    entries = cdb.iovs(name)
    click.echo(f"created {t.name} ({t.state}) from {', '.join(sources)}: {len(entries)} IoVs")
    if entries:
        click.echo(table(_IOV_HEADER, _iov_rows(entries)))


@gt.command("diff")
@click.argument("a")
@click.argument("b")
@_uses_db()
def gt_diff(cdb: ConditionsDB, a: str, b: str) -> None:
    """Payload IoVs added (+), removed (-) and changed (~) from tag A to tag B.

    The exit status is 0 whether or not the tags differ."""
    d = cdb.diff(a, b)
    if d:
        click.echo(table(None, _diff_lines(d)))
        click.echo(f"{a} -> {b}: {_diff_counts(d)}")
    else:
        click.echo(f"{a} and {b} hold the same payload IoVs")


_MODE_FLAGS = {  # basf2's b2conditionsdb flags for the modes
    "allow_closed": "--allow-closed",
    "fix_closed": "--fix-closed",
    "simple": "--simple-mode",
    "full_replacement": "--full-replacement",
}


@gt.command("runningupdate")
@click.argument("running")
@click.argument("staging")
@_run_option("-r", "--run", "valid_from", required=True, help="First valid run of the update.")
@click.option(
    "--mode",
    # the command line's spelling and the library's (b2calib prompt --mode takes both too)
    type=click.Choice([*(m.replace("_", "-") for m in _MODES), *(m for m in _MODES if "_" in m)]),
    help="strict (the default): staging IoVs free of gaps and overlaps, ending open; "
    "allow-closed: they may end closed; fix-closed: the last one of each payload is opened; "
    "simple: one 0,0,-1,-1 IoV per payload; full-replacement: as allow-closed, and the open "
    "payloads of RUNNING absent from STAGING are closed before the first valid run.",
)
@click.option("--allow-closed", is_flag=True, help="Same as --mode allow-closed.")
@click.option("--fix-closed", is_flag=True, help="Same as --mode fix-closed.")
@click.option("--simple-mode", "simple", is_flag=True, help="Same as --mode simple.")
@click.option("--full-replacement", is_flag=True, help="Same as --mode full-replacement.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Do the update in a transaction that is rolled back: show it, write nothing.",
)
@_uses_db(writes=True)
def gt_runningupdate(
    cdb: ConditionsDB,
    running: str,
    staging: str,
    valid_from: tuple[int, int],
    mode: str | None,
    dry_run: bool,
    **flags: bool,
) -> None:
    """Append VALIDATED tag STAGING to RUNNING tag RUNNING from run --run EXP RUN, with the
    rules and modes of basf2's ``b2conditionsdb tag runningupdate``.

    Prints the operations, by payload: open IoVs of RUNNING closed (~), IoVs created (+), and
    IoVs of RUNNING extended (=) because STAGING's first IoV of their payload has the same
    revision; then any warning, and a last line with the counts. Every problem that makes the
    update impossible is listed at once and nothing is written.
    """
    chosen = {m: _MODE_FLAGS[m] for m, flag in flags.items() if flag}
    if mode is not None:
        chosen.setdefault(mode.replace("-", "_"), f"--mode {mode}")
    if len(chosen) > 1:
        raise click.UsageError(f"give one mode, not {', '.join(chosen.values())}")
    key = _run_key(valid_from)
    assert key is not None
    u = cdb.running_update(
        running, staging, valid_from=key, mode=next(iter(chosen), "strict"), dry_run=dry_run
    )
    if not u:
        raise click.ClickException(
            f"running update of {running} from {staging}: nothing to do, check the tags given"
        )
    extended = {(e.name, e.payload.revision): e for e in u.extended}
    rows: list[tuple[tuple[str, tuple[int, int]], list[object]]] = []
    for old, new in u.closed:
        sign = "=" if (old.name, old.payload.revision) in extended else "~"
        rows.append(
            (
                (old.name, old.iov.start),
                [sign, old.name, f"rev {old.payload.revision}", f"{old.iov} -> {new}"],
            )
        )
    for e in u.extended:
        if e.iov.is_open:  # extended and left open: not among the closed ones
            rows.append(
                ((e.name, e.iov.start), ["=", e.name, f"rev {e.payload.revision}", f"{e.iov}"])
            )
    for e in u.created:
        rows.append(((e.name, e.iov.start), ["+", e.name, f"rev {e.payload.revision}", str(e.iov)]))
    click.echo(table(None, [r for _, r in sorted(rows, key=lambda r: r[0])]))
    for w in u.warnings:
        click.echo(f"warning: {w}")
    click.echo(u.summary())


@gt.command("snapshot")
@click.argument("running")
@click.argument("name")
@_run_option("--until", required=True, help="Last run the snapshot must answer for.")
@_uses_db(writes=True)
def gt_snapshot(cdb: ConditionsDB, running: str, name: str, until: tuple[int, int]) -> None:
    """Freeze what RUNNING tag RUNNING gives up to run --until into a new PUBLISHED tag NAME."""
    key = _run_key(until)
    assert key is not None
    t = cdb.snapshot(running, name, until=key)
    n = len(cdb.iovs(name))
    click.echo(f"created {t.name} ({t.state}): {running} up to run {key[0]},{key[1]}, {n} IoVs")


@gt.command("history")
@click.argument("name", required=False)
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N changes.")
@_uses_db()
def gt_history(cdb: ConditionsDB, name: str | None, limit: int | None) -> None:
    """Recorded changes, oldest first (of one global tag when NAME is given)."""
    if name is not None:
        cdb.tag(name)  # an unknown tag is an error, not an empty history
    entries = cdb.history(name, limit=limit)
    if not entries:
        click.echo("no recorded changes")
        return
    rows = [
        [
            h.time,
            h.author,
            h.action,
            h.globaltag,
            _details(h.action, h.details),
        ]
        for h in entries
    ]
    click.echo(table(["time (UTC)", "author", "action", "global tag", "details"], rows))


def _details(action: str, details: dict[str, Any]) -> str:
    """A history entry's details on one line (a manifest: its digest and counts)."""
    if action == "manifest" and isinstance(details.get("payloads"), dict):
        details = {**details, "payloads": f"{len(details['payloads'])} names"}
    return ", ".join(f"{k}={v}" for k, v in details.items())


# -- iov -----------------------------------------------------------------------------------------


class _DefaultGroup(click.Group):
    """A group whose first argument, when it is not one of its commands, goes to a default
    command: ``b2calib iov TAG`` is ``b2calib iov list TAG``."""

    def __init__(self, *args: Any, default: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default = default

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default, *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultGroup, default="list")
def iov() -> None:
    """Payload IoVs of a global tag: list (the default: "b2calib iov TAG"), add, remove."""


@iov.command("list")
@click.argument("tag")
@click.option("--name", help="Only IoVs of this payload.")
@_run_option("--run", help="Only IoVs valid for this run.")
@_uses_db()
def iov_list(cdb: ConditionsDB, tag: str, name: str | None, run: tuple[int, int] | None) -> None:
    """The payload IoVs of global tag TAG."""
    entries = cdb.iovs(tag, name, run=_run_key(run))
    if not entries:
        click.echo(f"no IoVs in {tag} match")
        return
    click.echo(table(_IOV_HEADER, _iov_rows(entries)))


@iov.command("add")
@click.argument("tag")
@click.argument("name")
@click.argument("revision", type=int)
@click.argument("iov_text", metavar="IOV")
@_uses_db(writes=True)
def iov_add(cdb: ConditionsDB, tag: str, name: str, revision: int, iov_text: str) -> None:
    """Make revision REVISION of payload NAME valid for IOV in OPEN tag TAG."""
    e = cdb.add_iov(tag, (name, revision), _parse_iov(iov_text))
    click.echo(f"added {e.payload} [{e.iov}] to {tag}")


@iov.command("remove")
@click.argument("tag")
@click.argument("name")
@click.argument("iov_text", metavar="IOV")
@_uses_db(writes=True)
def iov_remove(cdb: ConditionsDB, tag: str, name: str, iov_text: str) -> None:
    """Remove the IoV IOV (exactly) of payload NAME from OPEN tag TAG."""
    iov_ = _parse_iov(iov_text)
    cdb.remove_iov(tag, name, iov_)
    click.echo(f"removed {name} [{iov_}] from {tag}")


# -- lookup --------------------------------------------------------------------------------------


_NS = 10**9
_UNIX_NUMBER = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(ns|s)?\s*$")


def _parse_time(text: str) -> int:
    """``--time``: an ISO 8601 time (UTC unless it gives an offset), or UNIX seconds (decimals
    allowed; suffix ``s`` optional), or UNIX nanoseconds with the suffix ``ns``; as UNIX ns."""
    from datetime import UTC, datetime
    from decimal import Decimal

    m = _UNIX_NUMBER.match(text)
    if m is not None:
        if m[2] == "ns":
            if "." in m[1]:
                raise click.BadParameter(
                    f"{text!r}: nanoseconds are whole numbers", param_hint="--time"
                )
            return int(m[1])
        return int(Decimal(m[1]) * _NS)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither an ISO time (2026-04-01T02:03:00, UTC unless an offset is "
            "given) nor UNIX seconds (1775009000.5) nor UNIX nanoseconds (1775009000500000000ns)",
            param_hint="--time",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * _NS + delta.microseconds * 1000


def _utc(t_ns: int) -> str:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(t_ns // _NS, UTC)
    frac = t_ns % _NS
    return when.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac:09d}".rstrip("0") if frac else "")


@click.command()
@click.argument("exp", type=int)
@click.argument("run", type=int)
@click.option(
    "--gt",
    "tags",
    multiple=True,
    required=True,
    help="Global tag; repeat for several, highest priority first.",
)
@click.option("--name", "names", multiple=True, help="Only this payload (repeatable).")
@click.option(
    "--time",
    "time_text",
    metavar="TIME",
    help="A time inside the run: ISO 8601 (UTC unless an offset is given, e.g. "
    "2026-04-01T02:03:00), UNIX seconds (1775009000.5) or UNIX nanoseconds with the suffix ns. "
    "Shows which interval of each time-dependent payload holds it, and its constants.",
)
@_uses_db()
def lookup(
    cdb: ConditionsDB,
    exp: int,
    run: int,
    tags: tuple[str, ...],
    names: tuple[str, ...],
    time_text: str | None,
) -> None:
    """The payloads valid for run EXP RUN through the global tags (the first tag that has a
    payload wins).

    A time-dependent payload (constants per time interval inside the run, such as BeamSpot)
    has no single value for a run: with --time, the listing says which of its intervals holds
    the time and prints that interval's constants."""
    t_ns = None if time_text is None else _parse_time(time_text)
    found = cdb.lookup(exp, run, list(tags), list(names) or None)
    if not found:
        click.echo(f"no payload valid for run {exp},{run} in {', '.join(tags)}")
        return
    entries = [found[n] for n in sorted(found)]
    rows = _iov_rows(entries, tag=True)
    if t_ns is None:
        click.echo(table([*_IOV_HEADER, "global tag"], rows))
        return
    from b2calib.conditions import eventdep

    shown = []
    for entry, row in zip(entries, rows, strict=True):
        payload = cdb.payload(entry.payload)
        if not eventdep.is_time_dependent(payload):
            row.append("run-level")
            continue
        at = eventdep.at_time(payload, t_ns)
        interval = at.metadata["interval"]
        row.append(f"{interval['index'] + 1}/{interval['intervals']}")
        shown.append((entry, at))
    click.echo(table([*_IOV_HEADER, "global tag", "interval"], rows))
    for entry, at in shown:
        interval = at.metadata["interval"]
        click.echo(
            f"\n{entry.payload} at {_utc(t_ns)} UTC: interval {interval['index'] + 1} of "
            f"{interval['intervals']}, {_utc(interval['t_start'])} to {_utc(interval['t_end'])} "
            "UTC (the first interval holds earlier times, the last later ones)"
        )
        if len(at) != 1:
            click.echo(
                f"{len(at)} rows: b2calib payload dump {entry.name} --revision "
                f"{entry.payload.revision}"
            )
            continue
        units = at.metadata.get("units", {})
        value_rows = [
            [
                c,
                f"{float(v[0]):.6g}",
                f"{float(at.errors[c][0]):.3g}" if c in at.errors else "-",
                units.get(c, "") if isinstance(units, dict) else "",
            ]
            for c, v in at.values.items()
        ]
        if at.status is not None:
            value_rows.append(["status", _status_name(int(at.status[0])), "", ""])
        click.echo(table(["column", "value", "error", "unit"], value_rows))


def _status_name(code: int) -> str:
    from b2calib.conditions import ChannelStatus

    try:
        return ChannelStatus(code).name
    except ValueError:
        return str(code)


# -- payload -------------------------------------------------------------------------------------


@click.group()
def payload() -> None:
    """Payloads: upload, list, show, dump."""


@payload.command("upload")
# a directory is refused by the library, in one line naming it (not as a usage error)
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--gt", "tag", help="Also make the payload valid for --iov in this OPEN tag.")
@click.option("--iov", "iov_text", metavar="IOV", help="e1,r1,e2,r2 (with --gt).")
@_uses_db(writes=True)
def payload_upload(cdb: ConditionsDB, file: Path, tag: str | None, iov_text: str | None) -> None:
    """Store the payload in FILE as the next revision of its name.

    Content already stored under that name is not stored again: its revision is reused."""
    from b2calib.conditions import Payload

    if (tag is None) != (iov_text is None):
        raise click.UsageError("--gt and --iov go together")
    known = cdb.find_payload(Payload.read(file))
    if tag is not None and iov_text is not None:
        entry = cdb.upload_and_add(tag, [(file, _parse_iov(iov_text))])[0]
        info = entry.payload
        added = f"\nadded {info} [{entry.iov}] to {tag}"
    else:
        info = cdb.upload_file(file)
        added = ""
    how = "already stored as" if known is not None else "uploaded"
    click.echo(f"{how} {info} (checksum {info.checksum}, {info.size} bytes){added}")


@payload.command("list")
@click.argument("name", required=False)
@_uses_db()
def payload_list(cdb: ConditionsDB, name: str | None) -> None:
    """Stored payload revisions (of payload NAME)."""
    infos = cdb.payloads(name)
    if not infos:
        if name is not None:
            cdb.payload_info(name)  # raises: the payload is unknown
        click.echo("no payloads")
        return
    rows = [[i.name, i.revision, i.checksum, i.size, i.created, i.author] for i in infos]
    click.echo(table(["payload", "rev", "checksum", "bytes", "created (UTC)", "author"], rows))


@payload.command("show")
@click.argument("name")
@click.option("--revision", type=int, help="Default: the newest.")
@_uses_db()
def payload_show(cdb: ConditionsDB, name: str, revision: int | None) -> None:
    """A payload revision's record and a summary of its columns."""
    import numpy as np

    from b2calib.conditions import ChannelStatus, eventdep

    info = cdb.payload_info(name, revision)
    p = cdb.payload(info)
    pairs: list[tuple[str, object]] = [
        ("payload", info.name),
        ("revision", info.revision),
        ("checksum", info.checksum),
        ("size", f"{info.size} bytes"),
        ("created", f"{cell(info.created)} UTC by {info.author}"),
        ("description", p.metadata.get("description")),
        ("rows", len(p)),
    ]
    if eventdep.is_time_dependent(p):
        starts, ends = eventdep.intervals(p)
        pairs.append(
            (
                "time intervals",
                f"{len(starts)} from {_utc(int(starts[0]))} to {_utc(int(ends[-1]))} UTC "
                "(time-dependent: look it up with a time, b2calib lookup --time)"
                if len(starts)
                else "none",
            )
        )
    pairs.append(("provenance", json.dumps(info.provenance, sort_keys=True)))
    click.echo(record(pairs))
    units = p.metadata.get("units", {})
    kinds = {
        **dict.fromkeys(p.keys, "key"),
        **dict.fromkeys(p.values, "value"),
        **{f"{k}_err": "error" for k in p.errors},
        "status": "status",
    }
    rows: list[list[object]] = []
    for col, arr in p.columns.items():
        lo, hi = (str(arr.min()), str(arr.max())) if len(arr) else (None, None)
        rows.append([col, kinds[col], str(arr.dtype), units.get(col), lo, hi])
    columns = table(
        ["column", "kind", "type", "unit", "min", "max"], rows, right=[False] * 4 + [True] * 2
    )
    click.echo("\n" + columns)
    if p.status is not None:
        codes, counts = np.unique(p.status, return_counts=True)
        parts = []
        for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
            try:
                label = ChannelStatus(code).name
            except ValueError:
                label = f"code {code}"
            parts.append(f"{label} {count}")
        click.echo("\nstatus  " + ", ".join(parts))


@payload.command("dump")
@click.argument("name")
@click.option("--revision", type=int, help="Default: the newest.")
@click.option("--limit", type=click.IntRange(min=0), help="Only the first N rows.")
@click.option("--csv", "as_csv", is_flag=True, help="Comma-separated values with a header.")
@_uses_db()
def payload_dump(
    cdb: ConditionsDB, name: str, revision: int | None, limit: int | None, as_csv: bool
) -> None:
    """The rows of a payload revision."""
    p = cdb.payload(name, revision)
    cols = p.columns
    n = len(p) if limit is None else min(limit, len(p))
    rows = [[str(a[i]) for a in cols.values()] for i in range(n)]
    if as_csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(cols)
        writer.writerows(rows)
        click.echo(buf.getvalue(), nl=False)
        return
    right = [a.dtype.kind in "iuf" for a in cols.values()]
    click.echo(table(list(cols), rows, right=right))
    if n < len(p):
        click.echo(f"... {len(p) - n} more rows")


# -- db ------------------------------------------------------------------------------------------


@click.group()
def db() -> None:
    """The database as a whole: basf2 local-database export and import, info, verify, and
    (PostgreSQL, as the owner role) upgrade and grant."""


@db.command("export-local")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--gt",
    "tags",
    multiple=True,
    required=True,
    help="Global tag; repeat for several, highest priority first.",
)
@click.option("--runs", "runs_text", metavar="IOV", help="Only these runs: e1,r1,e2,r2.")
@_uses_db()
def db_export_local(
    cdb: ConditionsDB, folder: Path, tags: tuple[str, ...], runs_text: str | None
) -> None:
    """Write what the global tags give as a basf2 local database in FOLDER (database.txt and
    the payload files, byte for byte)."""
    runs = _parse_iov(runs_text) if runs_text is not None else None
    entries = cdb.export_local(folder, list(tags), runs=runs)
    files = {e.filename for e in entries}
    click.echo(f"wrote {len(entries)} lines and {len(files)} payload files to {folder}")


@db.command("import-local")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--gt", "tag", required=True, help="OPEN tag to fill (created when missing).")
@click.option("--description", default="", help="Description of a tag created by the import.")
@_uses_db(writes=True)
def db_import_local(cdb: ConditionsDB, folder: Path, tag: str, description: str) -> None:
    """Upload the basf2 local database in FOLDER into global tag --gt."""
    added = cdb.import_local(folder, tag, description=description)
    click.echo(f"imported {len(added)} IoVs from {folder} into {tag}")
    click.echo(table(_IOV_HEADER, _iov_rows(added)))


@db.command("info")
@_uses_db()
def db_info(cdb: ConditionsDB) -> None:
    """Where the database is, its schema revision, and what it holds."""
    import sqlalchemy as sa

    revision = cdb.revision()
    tags = cdb.tags()
    infos = cdb.payloads()
    by_state = ", ".join(f"{s} {n}" for s, n in sorted(Counter(t.state for t in tags).items()))
    url = sa.engine.make_url(cdb.url).render_as_string(hide_password=True)
    size = sum(i.size for i in infos)
    click.echo(
        record(
            [
                ("database", url),
                ("schema", revision),
                ("global tags", f"{len(tags)} ({by_state})" if tags else "0"),
                ("payloads", f"{len({i.name for i in infos})} names, {len(infos)} revisions"),
                ("stored", f"{size} bytes of payload files"),
            ]
        )
    )


@db.command("verify")
@_uses_db()
@click.pass_context
def db_verify(ctx: click.Context, cdb: ConditionsDB) -> None:
    """Recompute the checksum of every stored payload file and compare each PUBLISHED or
    INVALID global tag with the manifest recorded when it was published.

    Prints one line per mismatch (naming the payload or tag), then what was checked; exit
    status 1 on any mismatch. Tags published before b2calib recorded manifests are listed,
    not counted as mismatches."""
    report = cdb.verify()
    for line in (*report.problems, *report.summary()):
        click.echo(line)
    if not report.ok:
        ctx.exit(1)


@db.command("upgrade")
@_uses_db()
def db_upgrade(cdb: ConditionsDB) -> None:
    """Create or migrate the database's schema to this b2calib's newest revision.

    Any command migrates the database it opens; on PostgreSQL only the owner role may, and
    runs this after installing a new b2calib, then grants the application role again
    (``b2calib db grant ROLE``)."""
    # opening the database migrated it
    click.echo(f"{cdb.safe_url} is at revision {cdb.revision()}")


@db.command("grant")
@click.argument("role")
@_uses_db()
def db_grant(cdb: ConditionsDB, role: str) -> None:
    """PostgreSQL: give application role ROLE what the application needs on the b2calib
    tables, and nothing more (no TRUNCATE, no DDL); run as the owner role, after every
    upgrade. ROLE must exist, own nothing and be neither a superuser nor a member of the
    owner."""
    from b2calib.db.roles import grant

    try:
        lines = grant(cdb.engine, role)
    except B2CalibError as err:
        raise click.ClickException(f"{cdb.safe_url}: {err}") from err
    for line in lines:
        click.echo(line)
