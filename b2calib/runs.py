"""The run registry: runs with their metadata, queries, and prompt-processing buckets.

A run is identified by (exp, run). The registry is stored as JSON (``runs.json`` beside the
skims the simulator writes) and read back without loss.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from b2calib.dq import DQ_FLAGS, dq_tag
from b2calib.exceptions import ConfigError, RunNotFoundError

__all__ = [
    "BEAM_ENERGIES",
    "DQ_FLAGS",
    "RUN_TYPES",
    "Bucket",
    "Run",
    "RunRegistry",
    "make_buckets",
]

RUN_TYPES = ("physics", "cosmic", "beam", "debug")
BEAM_ENERGIES = ("4S", "Continuum", "Scan", "No Beam")


@dataclass(frozen=True)
class Run:
    """One run and what is known about it.

    Times are UNIX seconds (UTC); luminosities in pb^-1.
    """

    exp: int
    run: int
    run_type: str
    beam_energy: str
    start: float
    stop: float
    lumi_pb: float
    l1_triggers: int
    detectors: tuple[str, ...]
    magnet_on: bool
    ecms_nominal_gev: float = 0.0
    notes: str = ""
    dq: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.run_type not in RUN_TYPES:
            raise ConfigError(f"run ({self.exp}, {self.run}): unknown run type {self.run_type!r}")
        if self.beam_energy not in BEAM_ENERGIES:
            raise ConfigError(
                f"run ({self.exp}, {self.run}): unknown beam energy {self.beam_energy!r}"
            )
        if self.stop < self.start:
            raise ConfigError(f"run ({self.exp}, {self.run}) stops before it starts")
        for det, flag in self.dq.items():
            if flag not in DQ_FLAGS:
                raise ConfigError(f"run ({self.exp}, {self.run}): bad flag {flag!r} for {det}")

    @property
    def key(self) -> tuple[int, int]:
        """(exp, run)."""
        return (self.exp, self.run)

    @property
    def duration_s(self) -> float:
        """Run length in seconds."""
        return self.stop - self.start

    @property
    def start_iso(self) -> str:
        """Start time as ISO 8601 UTC."""
        return datetime.fromtimestamp(self.start, UTC).strftime("%Y-%m-%d %H:%M:%S")

    @property
    def stop_iso(self) -> str:
        """Stop time as ISO 8601 UTC."""
        return datetime.fromtimestamp(self.stop, UTC).strftime("%Y-%m-%d %H:%M:%S")

    def flag(self, detector: str) -> str:
        """Data-quality flag of ``detector`` (NOTSET when not yet certified)."""
        return self.dq.get(detector, "NOTSET")

    def has_dq(self, tag: str) -> bool:
        """Whether the run satisfies a data-quality tag of the calibration input filters
        (:data:`b2calib.dq.DQ_TAGS`: ``Good``, ``Good Or Recoverable``, ``Good For PXD``,
        ``>=30 Minute Run``)."""
        return dq_tag(tag).accepts({d: self.flag(d) for d in self.detectors}, self.duration_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        d = asdict(self)
        d["detectors"] = list(self.detectors)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Run:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["detectors"] = tuple(d["detectors"])
        return cls(**d)


@dataclass(frozen=True)
class Bucket:
    """Consecutive runs of one experiment grouped for prompt processing."""

    index: int
    exp: int
    runs: tuple[Run, ...]
    complete: bool

    @property
    def first_run(self) -> int:
        """First run number."""
        return self.runs[0].run

    @property
    def last_run(self) -> int:
        """Last run number."""
        return self.runs[-1].run

    @property
    def lumi_fb(self) -> float:
        """Recorded integrated luminosity in fb^-1."""
        return sum(r.lumi_pb for r in self.runs) / 1000.0

    @property
    def name(self) -> str:
        """Name as used in prompt processing."""
        return f"bucket{self.index:02d}"


def make_buckets(runs: Iterable[Run], min_lumi_fb: float = 9.0) -> list[Bucket]:
    """Group consecutive runs into buckets of at least ``min_lumi_fb``, never across experiments.

    Runs are taken in (exp, run) order; runs without luminosity (cosmic, beam, debug) join the
    bucket they fall in. The last bucket of an experiment is ``complete=False`` when it has not
    yet reached ``min_lumi_fb`` (prompt processing waits for more data).
    """
    if min_lumi_fb <= 0:
        raise ConfigError("min_lumi_fb must be positive")
    ordered = sorted(runs, key=lambda r: r.key)
    buckets: list[Bucket] = []
    current: list[Run] = []
    lumi = 0.0

    def close(complete: bool) -> None:
        nonlocal current, lumi
        if current:
            buckets.append(Bucket(len(buckets) + 1, current[0].exp, tuple(current), complete))
        current, lumi = [], 0.0

    for r in ordered:
        if current and r.exp != current[0].exp:
            close(complete=False)
        current.append(r)
        lumi += r.lumi_pb / 1000.0
        if lumi >= min_lumi_fb:
            close(complete=True)
    close(complete=False)
    return buckets


class RunRegistry:
    """An ordered collection of runs with queries; loads from and saves to JSON.

    Attributes
    ----------
    duplicates
        Runs the registry's file listed more than once, with how many times (loaded with
        ``on_duplicate="drop"``: those runs are left out, since no entry is to be trusted more
        than the other).
    source
        The file the registry was loaded from (None: built in memory).
    """

    def __init__(
        self,
        runs: Iterable[Run] = (),
        *,
        duplicates: Mapping[tuple[int, int], int] | None = None,
        source: str | os.PathLike[str] | None = None,
    ) -> None:
        self._runs: dict[tuple[int, int], Run] = {r.key: r for r in runs}
        self._runs = dict(sorted(self._runs.items()))
        self.duplicates: dict[tuple[int, int], int] = dict(duplicates or {})
        self.source = None if source is None else Path(source)

    def add(self, run: Run) -> None:
        """Add or replace a run."""
        last = next(reversed(self._runs), None)
        self._runs[run.key] = run
        if last is not None and run.key < last:  # appending in order costs nothing more
            self._runs = dict(sorted(self._runs.items()))

    def __len__(self) -> int:
        return len(self._runs)

    def __iter__(self) -> Iterator[Run]:
        return iter(self._runs.values())

    def __contains__(self, key: object) -> bool:
        return key in self._runs

    def get(self, exp: int, run: int) -> Run:
        """The run (exp, run); :class:`RunNotFoundError` if absent."""
        try:
            return self._runs[(exp, run)]
        except KeyError:
            raise RunNotFoundError(exp, run) from None

    def set_flag(self, exp: int, run: int, detector: str, flag: str) -> Run:
        """Record a data-quality flag for one detector of a run; returns the updated run."""
        r = self.get(exp, run)
        new = replace(r, dq={**r.dq, detector: flag})
        self._runs[r.key] = new
        return new

    def select(
        self,
        *,
        exp: int | None = None,
        runs: Sequence[int] | range | None = None,
        run_type: str | Sequence[str] | None = None,
        beam_energy: str | Sequence[str] | None = None,
        magnet_on: bool | None = None,
        dq: str | None = None,
        detectors: Sequence[str] | None = None,
    ) -> list[Run]:
        """Runs matching every given filter (``None`` means no filter).

        ``run_type`` and ``beam_energy`` accept one value or several; ``dq`` is a data-quality
        tag (see :meth:`Run.has_dq`); ``detectors`` requires those detectors to be included.
        """

        def as_set(
            v: str | Sequence[str] | None, allowed: Sequence[str], what: str
        ) -> set[str] | None:
            if v is None:
                return None
            s = {v} if isinstance(v, str) else set(v)
            bad = s - set(allowed)
            if bad:
                raise ConfigError(f"unknown {what} {sorted(bad)}; known: {', '.join(allowed)}")
            return s

        types = as_set(run_type, RUN_TYPES, "run type")
        energies = as_set(beam_energy, BEAM_ENERGIES, "beam energy")
        run_set = set(runs) if runs is not None else None
        out = []
        for r in self:
            if exp is not None and r.exp != exp:
                continue
            if run_set is not None and r.run not in run_set:
                continue
            if types is not None and r.run_type not in types:
                continue
            if energies is not None and r.beam_energy not in energies:
                continue
            if magnet_on is not None and r.magnet_on != magnet_on:
                continue
            if detectors is not None and not set(detectors) <= set(r.detectors):
                continue
            if dq is not None and not r.has_dq(dq):
                continue
            out.append(r)
        return out

    def buckets(self, min_lumi_fb: float = 9.0) -> list[Bucket]:
        """Prompt-processing buckets of all runs (see :func:`make_buckets`)."""
        return make_buckets(self, min_lumi_fb)

    def total_lumi_pb(self) -> float:
        """Sum of recorded luminosity."""
        return sum(r.lumi_pb for r in self)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the registry as JSON."""
        Path(path).write_text(json.dumps({"runs": [r.to_dict() for r in self]}, indent=1) + "\n")

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, on_duplicate: Literal["raise", "drop"] = "raise"
    ) -> RunRegistry:
        """Read a registry written by :meth:`save`.

        A run listed more than once is an error (:class:`ConfigError` naming the run and its
        entries); with ``on_duplicate="drop"`` such runs are left out and recorded in
        :attr:`duplicates` (the event loop then stops on their files, or skips them).
        """
        if on_duplicate not in ("raise", "drop"):
            raise ConfigError(f"on_duplicate must be 'raise' or 'drop', not {on_duplicate!r}")
        p = Path(path)
        try:
            data = json.loads(p.read_text())
            entries = data["runs"]
            if not isinstance(entries, list):
                raise TypeError("'runs' is not a list")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{p}: not a run registry ({err})") from err
        runs: list[Run] = []
        for i, d in enumerate(entries, 1):
            try:
                runs.append(Run.from_dict(d))
            except ConfigError as err:
                raise ConfigError(f"{p}: entry {i}: {err}") from err
            except (KeyError, TypeError, AttributeError) as err:
                raise ConfigError(
                    f"{p}: entry {i} is not a run ({type(err).__name__}: {err})"
                ) from err
        where: dict[tuple[int, int], list[int]] = {}
        for i, r in enumerate(runs, 1):
            where.setdefault(r.key, []).append(i)
        twice = {k: v for k, v in where.items() if len(v) > 1}
        if twice and on_duplicate == "raise":
            key, at = min(twice.items())
            more = f" (and {len(twice) - 1} more runs)" if len(twice) > 1 else ""
            raise ConfigError(
                f"{p}: run ({key[0]}, {key[1]}) is listed {len(at)} times (entries "
                f"{', '.join(map(str, at[:-1]))} and {at[-1]}){more}; a run registry lists "
                "each run once"
            )
        return cls(
            (r for r in runs if r.key not in twice),
            duplicates={k: len(v) for k, v in twice.items()},
            source=p,
        )


def __dir__() -> list[str]:
    return __all__
