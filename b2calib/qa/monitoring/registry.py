"""The registry of QA parts, as calibrations are registered.

Installed packages declare their parts through the ``b2calib.qa`` entry-point group (each entry
point is a :class:`~b2calib.qa.monitoring.QAPart`, or a function returning several), loaded once,
on first use; b2calib's own come from the ``qa.py`` of each package of :mod:`b2calib.detectors`
(:func:`b2calib.detectors.qa_parts`), so a new detector package adds its QA without a switch
being edited anywhere. :func:`register` adds a part for this process.

A part is refused when its detector or skim is unknown, when it declares a variable or QA
histogram of another detector (or a QA histogram of another skim than its own), or when a
variable name or a QA histogram it declares is already declared by another part.

:data:`VARIABLES` and :data:`QA_HISTOGRAMS` are read-only views of the registry, the variables in
listing order (:mod:`b2calib.qa.monitoring.parts`), the QA histograms by detector; they load the
registry on first use: importing this module loads no part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from b2calib.exceptions import ConfigError
from b2calib.geometry import DETECTORS
from b2calib.qa.monitoring.definitions import SYSTEMS, HistogramDef, VariableDef
from b2calib.qa.monitoring.parts import LISTING, QAPart
from b2calib.skims import SKIMS

__all__ = [
    "ENTRY_POINT_GROUP",
    "QA_HISTOGRAMS",
    "VARIABLES",
    "qa_parts",
    "register",
    "unregister",
]

#: The entry-point group of the packages that declare QA parts.
ENTRY_POINT_GROUP = "b2calib.qa"

#: Parts registered in this process with :func:`register`.
_REGISTERED: list[QAPart[Any]] = []
#: Parts of the installed packages' entry points, loaded once, on first use.
_ENTRY_POINTS: list[QAPart[Any]] | None = None
#: Every part in listing order (None: to be sorted again).
_LISTING: list[QAPart[Any]] | None = None


def _check(part: QAPart[Any], others: Sequence[QAPart[Any]], where: str = "") -> None:
    """Refuse a malformed part, or one that declares what ``others`` declare."""
    what = f"{where}{part.describe()}"
    if part.detector not in (*DETECTORS, *SYSTEMS):
        known = ", ".join((*DETECTORS, *SYSTEMS))
        raise ConfigError(f"{what}: unknown detector {part.detector!r}; known: {known}")
    if part.skim is not None and part.skim not in SKIMS:
        raise ConfigError(f"{what}: unknown skim {part.skim!r}; known: {', '.join(SKIMS)}")
    declared: list[VariableDef | HistogramDef] = [*part.variables, *part.histograms]
    for d in declared:
        if d.detector != part.detector:
            raise ConfigError(f"{what} declares {d.name!r} of another detector, {d.detector}")
    for h in part.histograms:
        if h.skim != part.skim:
            raise ConfigError(f"{what} declares QA histogram {h.name!r} of skim {h.skim}")
    taken: dict[tuple[str, object], QAPart[Any]] = {}
    for p in others:
        taken |= {("variable", v.name): p for v in p.variables}
        taken |= {("QA histogram", (h.detector, h.name)): p for h in p.histograms}
    mine: list[tuple[str, object]] = [("variable", v.name) for v in part.variables]
    mine += [("QA histogram", (h.detector, h.name)) for h in part.histograms]
    for i, key in enumerate(mine):
        if key in taken or key in mine[:i]:
            by = f"by {taken[key].describe()}" if key in taken else "twice"
            raise ConfigError(f"{what}: {key[0]} {key[1]!r} is already declared {by}")


def _entry_point_parts() -> list[QAPart[Any]]:
    global _ENTRY_POINTS
    if _ENTRY_POINTS is None:
        from importlib.metadata import entry_points

        found: list[QAPart[Any]] = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            obj = ep.load()
            made = obj() if callable(obj) and not isinstance(obj, QAPart) else obj
            for part in [made] if isinstance(made, QAPart) else list(made):
                _check(part, found, f"entry point {ep.name} ({ep.value}): ")
                found.append(part)
        _ENTRY_POINTS = found
    return _ENTRY_POINTS


def _listing() -> list[QAPart[Any]]:
    """Every part in listing order (the registry's own list: a new one after each change)."""
    global _LISTING
    if _LISTING is None:
        _LISTING = sorted([*_entry_point_parts(), *_REGISTERED], key=lambda p: p.order)
    return _LISTING


def qa_parts() -> list[QAPart[Any]]:
    """Every known part in listing order: the installed packages' (entry points) and those
    registered in this process."""
    return list(_listing())


def register(part: QAPart[Any]) -> QAPart[Any]:
    """Add a part for this process (to :data:`VARIABLES`, :data:`QA_HISTOGRAMS` and the
    collectors made from now on); registering an equal part again changes nothing.

    Raises
    ------
    ConfigError
        The part is malformed, or declares a variable or QA histogram that a known part
        declares.
    """
    global _LISTING
    known = qa_parts()
    if part in known:
        return part
    _check(part, known)
    _REGISTERED.append(part)
    _LISTING = None
    return part


def unregister(part: QAPart[Any]) -> None:
    """Remove a part that :func:`register` added (installed packages' parts stay)."""
    global _LISTING
    if part not in _REGISTERED:
        raise ConfigError(f"{part.describe()} was not registered in this process")
    _REGISTERED.remove(part)
    _LISTING = None


K = TypeVar("K")
V = TypeVar("V")


class _RegistryView(Mapping[K, V]):
    """A read-only mapping computed from the registry whenever it is read."""

    def __init__(self, build: Callable[[list[QAPart[Any]]], dict[K, V]], what: str) -> None:
        self._build = build
        self._what = what
        self._cache: tuple[list[QAPart[Any]], dict[K, V]] | None = None

    def _data(self) -> dict[K, V]:
        listing = _listing()
        if self._cache is None or self._cache[0] is not listing:
            self._cache = (listing, self._build(listing))
        return self._cache[1]

    def __getitem__(self, key: K) -> V:
        return self._data()[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __repr__(self) -> str:
        return f"<{self._what}: {len(self)} registered>"


#: Every monitoring variable, by name, in listing order (read-only).
VARIABLES: Mapping[str, VariableDef] = _RegistryView(
    lambda parts: {v.name: v for p in parts for v in p.variables}, "monitoring variables"
)


def _histograms(parts: list[QAPart[Any]]) -> dict[tuple[str, str], HistogramDef]:
    declared = [h for p in parts for h in p.histograms]
    declared.sort(key=lambda h: LISTING.index(h.detector))
    return {(h.detector, h.name): h for h in declared}


#: Every QA histogram, by (detector, name), detector by detector (:data:`LISTING`), each
#: detector's in listing order (read-only).
QA_HISTOGRAMS: Mapping[tuple[str, str], HistogramDef] = _RegistryView(_histograms, "QA histograms")


def __dir__() -> list[str]:
    return __all__
