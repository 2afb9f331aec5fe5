"""Declaring calibrations, as the real prompt scripts do, and ordering them by dependency.

A :class:`Calibration` names its expert, its inputs (collectors over skims), input filters on
runs (type, beam energy, magnet, data-quality tag), the calibrations it depends on (whose
payloads it reads: ``depends_on``) and those it merely runs after when both are scheduled
(``after``), its algorithms and IoV strategy, the validation of its new payloads against the
previous ones, and an ``expert_config`` of tunables with defaults that a user can override
(validated: unknown keys and wrong types are errors).

Calibrations are found by name in a registry: :func:`register` adds one; packages add theirs
through the ``b2calib.calibrations`` entry-point group (each entry point is a Calibration, or a
function returning several).
"""

from __future__ import annotations

import graphlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from b2calib.calibration.algorithm import Algorithm
from b2calib.calibration.constants import Constants
from b2calib.calibration.fitview import ChannelView
from b2calib.calibration.strategies import SingleIOV, Strategy
from b2calib.calibration.validation import PayloadComparison, Validator
from b2calib.conditions.iov import RunKey
from b2calib.engine import Collector
from b2calib.exceptions import CalibrationError, ConfigError
from b2calib.runs import BEAM_ENERGIES, RUN_TYPES
from b2calib.skims import SKIMS

__all__ = [
    "Calibration",
    "CollectorInput",
    "calibrations",
    "dependency_order",
    "get_calibration",
    "register",
]

CollectorFactory = Callable[[Constants, Sequence[RunKey]], Collector]
INPUT_FORMATS = ("cdst", "raw")
#: Stages of prompt processing, in the order they run: ``local`` (no collision data: local
#: runs, cosmics, pulser), ``raw`` (raw-data based: before reconstruction, e.g. PXD hot pixels,
#: SVD hot strips), ``alignment`` (tracker alignment), ``post-tracking`` (on cDST skims after
#: tracking, the usual case), ``analysis`` (analysis-based: beam spot, boost, collision energy).
#: These are the five stages of Belle II's prompt calibration.
STAGES = ("local", "raw", "alignment", "post-tracking", "analysis")
ENTRY_POINT_GROUP = "b2calib.calibrations"


@dataclass(frozen=True)
class CollectorInput:
    """A collector run over some skims.

    ``collector`` is a :class:`~b2calib.engine.Collector`, or a function of the current
    constants and the input runs returning one (for calibrations whose collector applies the
    constants being iterated).
    """

    collector: Collector | CollectorFactory
    skims: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.skims, str):
            object.__setattr__(self, "skims", (self.skims,))
        unknown = [s for s in self.skims if s not in SKIMS]
        if unknown or not self.skims:
            raise ConfigError(f"unknown skims {unknown}; known: {', '.join(SKIMS)}")

    def build(self, constants: Constants, runs: Sequence[RunKey]) -> Collector:
        """The collector to run with these constants."""
        if isinstance(self.collector, Collector):
            return self.collector
        return self.collector(constants, runs)


@dataclass
class Calibration:
    """A calibration declaration.

    Parameters
    ----------
    name
        Unique name, e.g. ``"ecl-energy"`` (letters, digits, ``-`` and ``_``).
    expert
        Contact of the responsible expert.
    inputs
        Named collector inputs; histogram names must be unique over all of them.
    algorithms
        Executed in order on the merged collector output.
    strategy
        IoV strategy (default :class:`SingleIOV`).
    input_format
        ``"cdst"`` or ``"raw"``.
    stage
        Prompt-processing stage, one of :data:`STAGES` (``"post-tracking"`` by default): the
        prompt loop runs the stages in that order.
    run_type, beam_energy, magnet_on, dq
        Input run filters (see :meth:`b2calib.runs.RunRegistry.select`).
    depends_on
        Names of calibrations whose payloads this one needs: they must have completed into the
        staging tag (or run with it), and when one fails this one is skipped.
    after
        Names of calibrations this one runs after when they are scheduled in the same run
        (ordering only: they are never required nor pulled in, their jobs are not part of this
        one's job key, and a failure of one does not skip this one).
    prevails_over
        Calibrations writing payloads of the same names (e.g. the PXD masks of the physics
        runs, for the masks of the cosmic runs) whose IoVs this one's replace in a staging tag,
        on the runs its own IoVs cover: theirs are cut around this one's, in whichever order
        the two are staged. Two calibrations writing a payload name for overlapping runs of one
        staging tag must say which prevails; otherwise staging the second is refused.
    validation
        Compares the new payloads with the previous ones after a job
        (:func:`~b2calib.calibration.validation.validate_job`); default
        :class:`~b2calib.calibration.validation.PayloadComparison` with its default thresholds;
        ``None``: not validated.
    expert_config
        Tunables with their defaults (JSON values).
    max_iterations
        Collector passes at most while an algorithm asks to ITERATE (basf2 default: 5).
    open_end
        Make the last payload of each name open-ended (prompt processing).
    description
        One paragraph for humans.
    fit_views
        How each payload's channels are shown from the stored diagnostics (the drill-down of
        :func:`~b2calib.calibration.fitview.fit_view`): payload name -> a
        :class:`~b2calib.calibration.fitview.ChannelView` (the histogram and fitted model, the
        counting a mask was decided from, or why a channel has no fit of its own).
    """

    name: str
    expert: str
    inputs: Mapping[str, CollectorInput]
    algorithms: Sequence[Algorithm]
    strategy: Strategy = field(default_factory=SingleIOV)
    input_format: str = "cdst"
    stage: str = "post-tracking"
    run_type: str | tuple[str, ...] | None = None
    beam_energy: str | tuple[str, ...] | None = None
    magnet_on: bool | None = None
    dq: str | None = None
    depends_on: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    prevails_over: tuple[str, ...] = ()
    validation: Validator | None = field(default_factory=PayloadComparison)
    expert_config: Mapping[str, Any] = field(default_factory=dict)
    max_iterations: int = 5
    open_end: bool = False
    description: str = ""
    fit_views: Mapping[str, ChannelView] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"calibration {self.name!r}"
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", self.name):
            raise ConfigError(f"{where}: name must be letters, digits, '-' and '_'")
        if not self.expert:
            raise ConfigError(f"{where}: name an expert contact")
        if self.input_format not in INPUT_FORMATS:
            raise ConfigError(f"{where}: input_format must be one of {INPUT_FORMATS}")
        if self.stage not in STAGES:
            raise ConfigError(f"{where}: stage must be one of {STAGES}, not {self.stage!r}")
        if not self.inputs:
            raise ConfigError(f"{where}: needs at least one collector input")
        if not self.algorithms:
            raise ConfigError(f"{where}: needs at least one algorithm")
        names = [a.name for a in self.algorithms]
        if "" in names or len(set(names)) != len(names):
            raise ConfigError(f"{where}: algorithms need distinct non-empty names, got {names}")
        produced = [p for a in self.algorithms for p in a.payloads]
        if len(set(produced)) != len(produced):
            raise ConfigError(f"{where}: two algorithms produce the same payload: {produced}")
        unknown_views = sorted(set(self.fit_views) - set(produced))
        if unknown_views:
            raise ConfigError(
                f"{where}: fit_views of payloads it does not produce: {unknown_views}; "
                f"it produces {produced}"
            )
        bad_views = [n for n, v in self.fit_views.items() if not isinstance(v, ChannelView)]
        if bad_views:
            raise ConfigError(f"{where}: fit_views of {bad_views} must be ChannelView objects")
        if self.max_iterations < 1:
            raise ConfigError(f"{where}: max_iterations must be >= 1")
        for value, allowed, what in (
            (self.run_type, RUN_TYPES, "run type"),
            (self.beam_energy, BEAM_ENERGIES, "beam energy"),
        ):
            given = {value} if isinstance(value, str) else set(value or ())
            if given - set(allowed):
                raise ConfigError(f"{where}: unknown {what} {sorted(given - set(allowed))}")
        self.depends_on = tuple(self.depends_on)
        if self.name in self.depends_on:
            raise ConfigError(f"{where}: depends on itself")
        if isinstance(self.after, str):
            self.after = (self.after,)
        self.after = tuple(self.after)
        if self.name in self.after:
            raise ConfigError(f"{where}: runs after itself")
        if isinstance(self.prevails_over, str):
            self.prevails_over = (self.prevails_over,)
        self.prevails_over = tuple(self.prevails_over)
        if self.name in self.prevails_over:
            raise ConfigError(f"{where}: prevails over itself")
        both = sorted(set(self.after) & set(self.depends_on))
        if both:
            raise ConfigError(
                f"{where}: {', '.join(both)} both in depends_on and in after; depends_on "
                "already orders them"
            )
        if self.validation is not None and not callable(self.validation):
            raise ConfigError(
                f"{where}: validation must be a Validator (a callable of new payloads, previous "
                f"payloads and context), not {self.validation!r}"
            )
        try:
            json.dumps(dict(self.expert_config))
        except TypeError as err:
            raise ConfigError(f"{where}: expert_config must be JSON values ({err})") from None

    @property
    def skims(self) -> tuple[str, ...]:
        """Every input skim."""
        return tuple(dict.fromkeys(s for i in self.inputs.values() for s in i.skims))

    @property
    def payloads(self) -> tuple[str, ...]:
        """Payload names the calibration produces."""
        return tuple(p for a in self.algorithms for p in a.payloads)

    def configure(
        self, overrides: Mapping[str, Any] | str | os.PathLike[str] | None = None
    ) -> dict[str, Any]:
        """The expert configuration: defaults updated by ``overrides`` (a mapping or a JSON
        file). Unknown keys, and values of another type than the default's, are errors."""
        where = f"calibration {self.name}"
        if overrides is None:
            given: Mapping[str, Any] = {}
        elif isinstance(overrides, Mapping):
            given = overrides
        else:
            path = Path(overrides)
            where = f"{path} ({where})"
            try:
                given = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise ConfigError(f"{path}: cannot read expert_config JSON ({err})") from None
            if not isinstance(given, dict):
                raise ConfigError(f"{path}: expert_config must be a JSON object")
        config = dict(self.expert_config)
        for key, value in given.items():
            if key not in config:
                known = ", ".join(sorted(config)) or "none"
                raise ConfigError(f"{where}: unknown expert_config key {key!r}; known: {known}")
            config[key] = _checked(where, key, config[key], value)
        return config


def _checked(where: str, key: str, default: Any, value: Any) -> Any:
    if default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, list | tuple):
        ok = isinstance(value, list | tuple)
        value = list(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"{where}: expert_config {key!r} must be {type(default).__name__} "
            f"like its default {default!r}, not {value!r}"
        )
    return value


#: Calibrations registered in this process with :func:`register`.
_REGISTRY: dict[str, Calibration] = {}
#: Calibrations of the installed packages' entry points, loaded once, on first use.
_ENTRY_POINTS: dict[str, Calibration] | None = None


def _entry_point_calibrations() -> dict[str, Calibration]:
    global _ENTRY_POINTS
    if _ENTRY_POINTS is None:
        from importlib.metadata import entry_points

        found: dict[str, Calibration] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            obj = ep.load()
            made = obj() if callable(obj) and not isinstance(obj, Calibration) else obj
            for cal in [made] if isinstance(made, Calibration) else list(made):
                if cal.name in found:
                    raise ConfigError(
                        f"entry point {ep.name} ({ep.value}) declares calibration "
                        f"{cal.name!r} a second time"
                    )
                found[cal.name] = cal
        _ENTRY_POINTS = found
    return _ENTRY_POINTS


def register(calibration: Calibration, *, replace: bool = False) -> Calibration:
    """Make a calibration available by name (to :func:`get_calibration` and the CLI); a name
    an installed package already declares needs ``replace=True``."""
    name = calibration.name
    current = _REGISTRY.get(name) or _entry_point_calibrations().get(name)
    if current is not None and not replace:
        if current is calibration:
            return calibration
        raise ConfigError(f"a calibration named {name!r} is already registered")
    _REGISTRY[name] = calibration
    return calibration


def calibrations() -> dict[str, Calibration]:
    """Every known calibration, by name: the installed packages' (entry points) and those
    registered in this process (which take precedence)."""
    return dict(sorted({**_entry_point_calibrations(), **_REGISTRY}.items()))


def get_calibration(name: str) -> Calibration:
    """The registered calibration ``name``."""
    known = calibrations()
    if name not in known:
        raise ConfigError(
            f"no calibration named {name!r}; registered: {', '.join(known) or 'none'}"
        )
    return known[name]


def dependency_order(
    selected: Iterable[Calibration], *, completed: Iterable[str] = ()
) -> list[Calibration]:
    """``selected`` in an order where every calibration follows those it depends on and those
    of its ``after`` that are selected.

    Every dependency (``depends_on``) must be among ``selected`` or in ``completed`` (done
    earlier); an ``after`` calibration not selected is ignored. A cycle, through either kind of
    edge, is an error naming it.
    """
    by_name = {c.name: c for c in selected}
    done = set(completed)
    for c in by_name.values():
        missing = [d for d in c.depends_on if d not in by_name and d not in done]
        if missing:
            raise CalibrationError(
                f"calibration {c.name} depends on {', '.join(missing)}, which is not scheduled"
            )
    graph = {n: [d for d in (*c.depends_on, *c.after) if d in by_name] for n, c in by_name.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        cycle = " -> ".join(err.args[1])
        raise CalibrationError(f"calibration dependencies form a cycle: {cycle}") from None
    return [by_name[n] for n in order]
