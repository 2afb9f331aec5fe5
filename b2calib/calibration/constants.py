"""The constants a calibration sees: its own previous iteration, then global tags by priority."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from b2calib.conditions import eventdep
from b2calib.conditions.database import ConditionsDB, IovEntry
from b2calib.conditions.iov import IoV, RunKey
from b2calib.conditions.payload import Payload
from b2calib.exceptions import CalibrationError

__all__ = ["Constants"]


class Constants:
    """Payloads valid for a run, looked up in ``overlay`` first, then in ``tags``.

    Parameters
    ----------
    db
        The conditions database (``None``: only the overlay, as in tests of an algorithm).
    tags
        Global tags, highest priority first (the staging tag with the dependencies' payloads,
        then the input tags).
    overlay
        ``(iov, payload)`` pairs of the calibration's previous iteration.
    """

    def __init__(
        self,
        db: ConditionsDB | None,
        tags: Sequence[str] = (),
        overlay: Iterable[tuple[IoV, Payload]] = (),
    ) -> None:
        self.db = db
        self.tags = list(tags)
        self.overlay = list(overlay)
        self._cache: dict[int, Payload] = {}
        self._live: list[str] | None = None

    def stored(self, name: str, exp: int, run: int) -> Payload | None:
        """The payload ``name`` valid for (exp, run) as stored, or ``None``: a time-dependent
        payload (:mod:`b2calib.conditions.eventdep`) whole, with all its time intervals (what a
        collector applying per-event constants, or a per-run mean, takes)."""
        for iov, payload in self.overlay:
            if payload.name == name and iov.contains(exp, run):
                return payload
        entry = self._entry(name, exp, run)
        if entry is None:
            return None
        if entry.payload.id not in self._cache:
            self._cache[entry.payload.id] = self.db.payload(entry.payload)  # type: ignore[union-attr]
        return self._cache[entry.payload.id]

    def _entry(self, name: str, exp: int, run: int) -> IovEntry | None:
        if self.db is None or not self.tags:
            return None
        if self._live is None:  # the staging tag may not exist yet
            existing = {t.name for t in self.db.tags()}
            self._live = [t for t in self.tags if t in existing]
        if not self._live:
            return None
        return self.db.lookup(exp, run, self._live, [name]).get(name)

    def get(self, name: str, exp: int, run: int, time: int | None = None) -> Payload | None:
        """The payload ``name`` valid for (exp, run), or ``None``.

        ``time`` (UNIX nanoseconds, as ``EventMetaData_m_time``) picks, in a time-dependent
        payload, the constants of the interval holding it. Without a time, a time-dependent
        payload raises :class:`~b2calib.exceptions.TimeDependentPayloadError` (ask with a time,
        take :meth:`stored` and iterate its intervals, or ask for
        :func:`~b2calib.conditions.eventdep.run_mean` explicitly).
        """
        payload = self.stored(name, exp, run)
        if payload is None or not eventdep.is_time_dependent(payload):
            return payload
        if time is None:
            overlay = any(p is payload for _, p in self.overlay)
            entry = None if overlay else self._entry(name, exp, run)
            raise eventdep.run_level_error(
                payload,
                exp=exp,
                run=run,
                source="the previous iteration"
                if entry is None
                else f"global tag {entry.globaltag}",
                revision=None if entry is None else entry.payload.revision,
            )
        return eventdep.at_time(payload, time)

    def require(self, name: str, exp: int, run: int, time: int | None = None) -> Payload:
        """Like :meth:`get`, but a missing payload is an error naming it, the run and the tags."""
        payload = self.get(name, exp, run, time)
        if payload is None:
            raise CalibrationError(
                f"no payload {name!r} valid for run ({exp}, {run}) in "
                f"{', '.join(self.tags) or 'no global tag'}"
                + (" or the previous iteration" if self.overlay else "")
            )
        return payload

    def for_runs(self, name: str, runs: Sequence[RunKey]) -> dict[RunKey, Payload | None]:
        """:meth:`get` for each run."""
        return {r: self.get(name, *r) for r in runs}
