"""The running update: a VALIDATED staging tag appended to a RUNNING tag from a first valid run.

The rules and the modes are those of basf2's ``b2conditionsdb tag runningupdate``
(``conditions_db/runningupdate.py``), written for b2calib's tags and IoVs:

1. the running tag must be RUNNING and the staging tag VALIDATED;
2. every IoV of the running tag (of any payload name) must start before the first valid run
   ``valid_from``, and every *closed* one must also end before it (an open one is closed by the
   update); b2calib adds that ``valid_from`` must be after the last run frozen by a
   :meth:`~b2calib.conditions.ConditionsDB.snapshot` of the running tag;
3. the staging tag, per payload name: in mode ``"simple"`` one IoV of all runs (0,0,-1,-1);
   in the other modes IoVs without overlaps or gaps between them (over their whole coverage,
   IoVs from (0,0) included), every IoV not starting at (0,0) starting at or after
   ``valid_from``, and a coverage ending open unless the mode allows closed ones
   (``"allow_closed"``, ``"fix_closed"``, ``"full_replacement"``); ``"fix_closed"`` opens the
   latest IoV of each name;
4. each *open* IoV of the running tag whose payload name the staging tag has is closed just
   before what the staging tag covers from ``valid_from`` on, except that when the staging
   tag's first IoV of that name holds the same revision, that IoV is not added and the running
   one extends over it (staying open when nothing is left); in ``"full_replacement"`` an open
   IoV whose name the staging tag lacks is closed at the run before ``valid_from``;
5. every other staging IoV is clipped to ``[valid_from, open)`` (which moves (0,0) starts to
   ``valid_from``) and added.

Every problem of rules 2 and 3 is collected and reported at once, with counts by kind.
:func:`plan` computes the update from the tags' IoVs without touching the database;
:meth:`~b2calib.conditions.ConditionsDB.running_update` checks, plans and applies it in one
transaction (rolled back for a dry run).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from b2calib.conditions.database import IovEntry
from b2calib.conditions.iov import ALL_RUNS, IoV, RunKey, uncovered
from b2calib.exceptions import ConditionsError

__all__ = ["RUNNING_UPDATE_MODES", "Plan", "RunningUpdate", "check_mode", "plan"]

#: The modes of :meth:`~b2calib.conditions.ConditionsDB.running_update`, as basf2 names them
#: (``b2conditionsdb tag runningupdate`` default, ``--allow-closed``, ``--fix-closed``,
#: ``--simple-mode``, ``--full-replacement``).
RUNNING_UPDATE_MODES = ("strict", "allow_closed", "fix_closed", "simple", "full_replacement")

#: The modes in which the staging coverage of a payload may end closed.
_CLOSED_ALLOWED = ("allow_closed", "fix_closed", "full_replacement")


@dataclass(frozen=True)
class RunningUpdate:
    """What a running update did (or, for a dry run, would do) to the running tag.

    Attributes
    ----------
    running, staging
        The running tag updated and the staging tag it took the payloads from.
    valid_from
        The first valid run of the update, ``(exp, run)``.
    mode
        One of :data:`RUNNING_UPDATE_MODES`.
    dry_run
        True when the update was computed and applied inside a transaction that was rolled
        back: nothing was written.
    closed
        The open IoVs of the running tag that were closed: ``(entry before, its new IoV)``
        (the new IoV is ``None`` when nothing of it remains).
    created
        The IoVs added to the running tag.
    extended
        The open IoVs of the running tag whose revision is the staging tag's first one of
        their name: that first staging IoV was not added, the running IoV extends over it.
        Each entry is as it is after the update (still open, or closed later, in which case it
        is in :attr:`closed` too).
    warnings
        What was accepted but deserves a look (closed staging coverage in a mode that allows
        it, IoVs opened by ``fix_closed``, staging IoVs ending before ``valid_from``, tag
        states ignored by a dry run).
    """

    running: str
    staging: str
    valid_from: RunKey
    mode: str
    dry_run: bool
    closed: list[tuple[IovEntry, IoV | None]]
    created: list[IovEntry]
    extended: list[IovEntry]
    warnings: list[str]

    def __bool__(self) -> bool:
        """Whether the update changes the running tag."""
        return bool(self.closed or self.created)

    def summary(self) -> str:
        """One line: the counts, and "dry run, nothing written" for a dry run."""
        counts = (
            f"{len(self.created)} IoVs created, {len(self.closed)} closed, "
            f"{len(self.extended)} extended"
        )
        text = (
            f"running update of {self.running} from {self.staging} at run "
            f"{self.valid_from[0]},{self.valid_from[1]} ({self.mode}): {counts}"
        )
        return f"dry run, nothing written: {text}" if self.dry_run else text


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`RUNNING_UPDATE_MODES` (``-`` may stand for ``_``)."""
    m = str(mode).replace("-", "_")
    if m not in RUNNING_UPDATE_MODES:
        raise ConditionsError(
            f"running update: unknown mode {mode!r}; "
            f"the modes are {', '.join(RUNNING_UPDATE_MODES)}"
        )
    return m


@dataclass
class _Staged:
    """A staging IoV with the IoV the update uses (``fix_closed`` may open it)."""

    entry: IovEntry
    iov: IoV

    def __str__(self) -> str:
        return f"{self.entry.payload} [{self.entry.iov}]"


@dataclass(frozen=True)
class Plan:
    """The operations of an update, computed by :func:`plan`."""

    closed: list[tuple[IovEntry, IoV | None]]
    created: list[tuple[IoV, IovEntry]]  # (IoV to add, the staging entry it comes from)
    extended: list[IovEntry]
    warnings: list[str]


def plan(
    running: str,
    staging: str,
    running_entries: Sequence[IovEntry],
    staging_entries: Sequence[IovEntry],
    *,
    valid_from: RunKey,
    mode: str,
    frozen_until: RunKey | None = None,
) -> Plan:
    """The operations updating ``running`` from ``staging`` (see the module's rules 2 to 5).

    Raises
    ------
    ConditionsError
        Listing every problem found in both tags (payload, IoV, what is wrong), with counts
        by kind.
    """
    mode = check_mode(mode)
    vf = valid_from
    problems: list[tuple[str, str]] = []
    warnings: list[str] = []

    # rule 2: the running tag
    if frozen_until is not None and not vf > frozen_until:
        problems.append(
            (
                "starts in a snapshot",
                f"{running} was snapshot up to run {_run(frozen_until)}: an update must start "
                "after it",
            )
        )
    for e in running_entries:
        if e.iov.start >= vf:
            problems.append(
                ("running IoVs start at or after the first valid run", f"{e.payload} [{e.iov}]")
            )
        elif not e.iov.is_open and e.iov.end >= vf:
            problems.append(
                ("running IoVs end at or after the first valid run", f"{e.payload} [{e.iov}]")
            )

    # rule 3: the staging tag
    by_name: dict[str, list[_Staged]] = {}
    for e in staging_entries:
        by_name.setdefault(e.name, []).append(_Staged(e, e.iov))
    for items in by_name.values():
        items.sort(key=lambda x: (x.iov.start, x.iov.end, x.entry.payload.revision))
    if mode == "simple":
        for name, items in by_name.items():
            for i, x in enumerate(items):
                if i > 0:
                    problems.append(("duplicate payloads", f"{x} (a second IoV of {name})"))
                if x.iov != ALL_RUNS:
                    problems.append(("wrong validity", f"{x} is not {ALL_RUNS}"))
    else:
        for name, items in by_name.items():
            reach = items[0]
            for x in items[1:]:
                if x.iov.start <= reach.iov.end:
                    problems.append(("overlaps", f"{x} overlaps {reach}"))
                if x.iov.end > reach.iov.end:
                    reach = x
            span = IoV.from_keys(items[0].iov.start, reach.iov.end)
            for gap in uncovered(span, [x.iov for x in items]):
                problems.append(("gaps", f"{name} has no IoV for runs {gap}"))
            if not reach.iov.is_open:
                what = f"{reach}: the last IoV of {name} in {staging} is not open"
                if mode == "fix_closed":
                    pass  # opened below, which says so
                elif mode in _CLOSED_ALLOWED:
                    warnings.append(f"{what}: accepted in mode {mode}")
                else:
                    problems.append(("closed payloads", what))
            for x in items:
                if x.iov.start != (0, 0) and x.iov.start < vf:
                    problems.append(
                        ("starts too early", f"{x} starts before the first valid run {_run(vf)}")
                    )
            if mode == "fix_closed":
                latest = max(items, key=lambda x: (x.iov.start, x.iov.end))
                if not latest.iov.is_open:
                    latest.iov = IoV(*latest.iov.start)
                    warnings.append(f"{latest} opened to {latest.iov} (fix_closed)")
    if problems:
        raise ConditionsError(_refusal(running, staging, vf, mode, problems))

    # rule 4: the open IoVs of the running tag
    valid_range = IoV(vf[0], vf[1])
    first = {name: items[0] for name, items in by_name.items()}
    dropped: set[int] = set()  # id() of the staging IoVs a running IoV extends over
    closed: list[tuple[IovEntry, IoV | None]] = []
    extended: list[IovEntry] = []
    for e in running_entries:
        if not e.iov.is_open:
            continue
        if e.name in by_name:
            cover = IoV(*max(first[e.name].iov.start, vf))
        elif mode == "full_replacement":
            cover = valid_range
        else:
            continue
        f = first.get(e.name)
        same = f is not None and f.entry.payload.revision == e.payload.revision
        if f is not None and same and f.iov.overlaps(cover):
            dropped.add(id(f))
            rest = cover.subtract(f.iov)  # f starts at or before cover: what is left follows f
            if not rest:
                extended.append(e)
                continue
            cover = rest[0]
            new = e.iov.close_before(*cover.start)
            extended.append(IovEntry(e.globaltag, e.payload, new) if new is not None else e)
        else:
            new = e.iov.close_before(*cover.start)
        closed.append((e, new))

    # rule 5: the staging IoVs, clipped to the update's runs
    created: list[tuple[IoV, IovEntry]] = []
    for items in by_name.values():
        for x in items:
            if id(x) in dropped:
                continue
            clipped = x.iov.intersect(valid_range)
            if clipped is None:
                warnings.append(
                    f"{x} ends before the first valid run {_run(vf)}: not added to {running}"
                )
                continue
            created.append((clipped, x.entry))
    created.sort(key=lambda c: (c[1].name, c[0].start))
    closed.sort(key=lambda c: (c[0].name, c[0].iov.start))
    return Plan(closed, created, extended, warnings)


def _run(key: RunKey) -> str:
    return f"{key[0]},{key[1]}"


def _refusal(
    running: str, staging: str, vf: RunKey, mode: str, problems: list[tuple[str, str]]
) -> str:
    counts = Counter(kind for kind, _ in problems)
    head = (
        f"running update of {running} from {staging} at run {_run(vf)} ({mode}) refused, "
        f"{len(problems)} problem{'s' if len(problems) != 1 else ''} ("
        + ", ".join(f"{kind}: {n}" for kind, n in counts.items())
        + ")"
    )
    return "\n".join([head, *(f"  {kind}: {what}" for kind, what in problems)])


def __dir__() -> list[str]:
    return __all__
