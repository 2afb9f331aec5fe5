"""Approving and rejecting a staging tag: TESTING -> VALIDATED (approve) or TESTING -> OPEN
(reject), each recorded with the user, role, detectors and comment in ``tag_reviews``
(append-only, migration 0007) in the same transaction as the state's move.

Who may review (:func:`may_review`)
    A ``manager`` reviews any tag. An ``expert`` reviews only a tag whose payloads all come from
    calibrations of ONE detector, one of the expert's (a single calibration's, or one detector's,
    staging tag): not a tag with payloads of several detectors, of a system (the beam spot), of
    an unknown calibration or uploaded by hand, nor an empty one. A ``viewer`` reviews nothing.
    A refusal is :class:`~b2calib.exceptions.PermissionDenied` naming the user, the tag and its
    detectors.

All or nothing
    The user is checked to be a current user with the role and detectors claimed
    (:meth:`~b2calib.qa.store.users.Users.require`), the tag to be TESTING and unchanged since
    its detectors were read, then the tag moves (:meth:`ConditionsDB.move_state
    <b2calib.conditions.ConditionsDB.move_state>`: the state machine, with the review's
    comment in the tag's history) and the review row is written, in one transaction: a failure
    of any leaves neither.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from b2calib.conditions.database import ConditionsDB
from b2calib.conditions.tables import globaltags
from b2calib.db import as_utc, now
from b2calib.exceptions import ConditionsError, PermissionDenied, ReviewError
from b2calib.qa.store.users import User, Users
from b2calib.review.summary import TagSummary, origins
from b2calib.review.tables import tag_reviews

__all__ = ["ACTIONS", "Review", "approve", "may_review", "reject", "reviews", "tag_detectors"]

#: action -> (the state it moves from, the state it moves to)
ACTIONS = {"approve": ("TESTING", "VALIDATED"), "reject": ("TESTING", "OPEN")}


@dataclass(frozen=True)
class Review:
    """One approval or rejection of a tag: who (name, role, the detectors of an expert), the
    comment, when, and the move it made."""

    tag: str
    action: str
    user: str
    role: str
    comment: str
    time: datetime
    state_from: str
    state_to: str
    detectors: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Scope:
    detectors: frozenset[str]
    unowned: tuple[str, ...]
    empty: bool


def _scope(db: ConditionsDB, tag: str) -> _Scope:
    from b2calib.detectors import detector_of

    entries, found, _ = origins(db, tag)
    dets: set[str] = set()
    unowned: set[str] = set()
    for e, o in zip(entries, found, strict=True):
        d = detector_of(o.calibration) if o.calibration else None
        if d is None:
            unowned.add(e.name)
        else:
            dets.add(d)
    return _Scope(frozenset(dets), tuple(sorted(unowned)), not entries)


def tag_detectors(db: ConditionsDB, tag: str) -> frozenset[str]:
    """The detectors whose calibrations staged payloads into ``tag``
    (:func:`b2calib.detectors.detector_of` of the calibration of each IoV)."""
    return _scope(db, tag).detectors


def may_review(
    user: User, summary_or_detectors: TagSummary | Collection[str], tag: str | None = None
) -> tuple[bool, str]:
    """Whether ``user`` may approve or reject the tag (see the module's description), and why
    not (``""`` when allowed).

    ``summary_or_detectors`` is the tag's :class:`TagSummary` (its detectors, and its payloads
    of no detector, which only a manager reviews) or the tag's detectors alone (then the
    caller vouches that every payload comes from a detector's calibration); ``tag`` names the
    tag in the reason (default: the summary's)."""
    if isinstance(summary_or_detectors, TagSummary):
        scope = _Scope(
            summary_or_detectors.detectors,
            summary_or_detectors.unowned,
            not summary_or_detectors.rows,
        )
        tag = tag or summary_or_detectors.tag.name
    else:
        dets = frozenset(summary_or_detectors)
        scope = _Scope(dets, (), not dets)
    return _allowed(user, tag or "this tag", scope)


def _allowed(user: User, tag: str, scope: _Scope) -> tuple[bool, str]:
    dets = ", ".join(sorted(scope.detectors)) or "none"
    where = f"tag {tag} (detectors: {dets}"
    if scope.unowned:
        shown = ", ".join(scope.unowned[:5]) + (" ..." if len(scope.unowned) > 5 else "")
        where += f"; payloads of no detector: {shown}"
    where += ")"
    if user.role == "manager":
        return True, ""
    if user.role != "expert":
        return False, (
            f"user {user.name} is a {user.role}: only a manager or the detector's expert "
            f"reviews {where}"
        )
    mine = ", ".join(user.detectors)
    if scope.empty:
        return False, f"user {user.name} (expert of {mine}) may not review {where}: it is empty"
    if scope.unowned:
        return False, (
            f"user {user.name} (expert of {mine}) may not review {where}: only a manager "
            "reviews payloads of no detector"
        )
    if len(scope.detectors) != 1:
        return False, (
            f"user {user.name} (expert of {mine}) may not review {where}: it holds payloads "
            "of several detectors, only a manager reviews it"
        )
    (det,) = scope.detectors
    if det not in user.detectors:
        return False, (
            f"user {user.name} (expert of {mine}) may not review {where}: not an expert of {det}"
        )
    return True, ""


def _review(db: ConditionsDB, tag: str, user: User, comment: str, action: str) -> Review:
    state_from, state_to = ACTIONS[action]
    comment = comment.strip()
    if action == "reject" and not comment:
        raise ReviewError(f"rejecting tag {tag}: say why in the comment")
    try:
        before = db.tag(tag)
    except ConditionsError as err:
        raise ReviewError(f"no global tag {tag!r} to {action} ({err})") from None
    scope = _scope(db, tag)
    ok, why = _allowed(user, tag, scope)
    if not ok:
        raise PermissionDenied(why)
    when = now()
    dets = user.detectors if user.role == "expert" else ()
    with db.write() as conn:
        Users(db).require(conn, user)
        modified = conn.execute(
            sa.select(globaltags.c.modified).where(globaltags.c.name == tag)
        ).scalar()
        if modified is None or as_utc(modified) != before.modified:
            raise ReviewError(f"tag {tag} changed while it was being reviewed: review it again")
        db.move_state(
            conn,
            tag,
            state_to,
            expect=state_from,
            review=action,
            user=user.name,
            role=user.role,
            comment=comment,
        )
        conn.execute(
            tag_reviews.insert().values(
                tag=tag,
                action=action,
                user=user.name,
                role=user.role,
                detectors=",".join(dets),
                comment=comment,
                created=when,
                state_from=state_from,
                state_to=state_to,
            )
        )
    return Review(tag, action, user.name, user.role, comment, when, state_from, state_to, dets)


def approve(db: ConditionsDB, tag: str, user: User, comment: str = "") -> Review:
    """Approve staging tag ``tag``: TESTING -> VALIDATED with a review row, in one transaction.

    Raises
    ------
    PermissionDenied
        ``user`` may not review the tag (:func:`may_review`), or is not a current user with
        the role and detectors claimed.
    ConditionsError
        The tag is not TESTING.
    ReviewError
        No such tag, or it changed while being reviewed.
    """
    return _review(db, tag, user, comment, "approve")


def reject(db: ConditionsDB, tag: str, user: User, comment: str) -> Review:
    """Reject staging tag ``tag``: TESTING -> OPEN (its calibrations can stage again) with a
    review row, in one transaction; the comment (why) is required. Raises as :func:`approve`
    (and :class:`ReviewError` for an empty comment)."""
    return _review(db, tag, user, comment, "reject")


def reviews(db: ConditionsDB, tag: str | None = None) -> list[Review]:
    """The reviews (of one tag), oldest first."""
    t = tag_reviews
    q = sa.select(t).order_by(t.c.id)
    if tag is not None:
        q = q.where(t.c.tag == tag)
    with db.read() as conn:
        return [_row(r) for r in conn.execute(q)]


def _row(r: Any) -> Review:
    return Review(
        tag=r.tag,
        action=r.action,
        user=r.user,
        role=r.role,
        comment=r.comment,
        time=as_utc(r.created),
        state_from=r.state_from,
        state_to=r.state_to,
        detectors=tuple(d for d in r.detectors.split(",") if d),
    )


def __dir__() -> list[str]:
    return __all__
