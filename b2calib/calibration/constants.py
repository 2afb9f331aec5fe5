"""The constants a calibration sees: its own previous iteration, then global tags by priority."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from b2calib.conditions.database import ConditionsDB
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

    def get(self, name: str, exp: int, run: int) -> Payload | None:
        """The payload ``name`` valid for (exp, run), or ``None``."""
        for iov, payload in self.overlay:
            if payload.name == name and iov.contains(exp, run):
                return payload
        if self.db is None or not self.tags:
            return None
        if self._live is None:  # the staging tag may not exist yet
            existing = {t.name for t in self.db.tags()}
            self._live = [t for t in self.tags if t in existing]
        if not self._live:
            return None
        entry = self.db.lookup(exp, run, self._live, [name]).get(name)
        if entry is None:
            return None
        if entry.payload.id not in self._cache:
            self._cache[entry.payload.id] = self.db.payload(entry.payload)
        return self._cache[entry.payload.id]

    def require(self, name: str, exp: int, run: int) -> Payload:
        """Like :meth:`get`, but a missing payload is an error naming it, the run and the tags."""
        payload = self.get(name, exp, run)
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
