"""Collectors and their outputs.

A collector is a pure, picklable description of what to histogram: it names the branches it
reads (with their expected types) and turns one chunk of events into a dict of ``hist.Hist``.
The engine calls it once per chunk of one file, so every output belongs to one run; outputs are
kept per (exp, run) and merged with ``+``, so any run range can be summed later without
re-reading the files.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import awkward as ak
import hist
import numpy as np

from b2calib.engine.fill import fill_1d, fill_2d
from b2calib.exceptions import ConfigError

__all__ = ["ChannelValueCollector", "Collector", "RunOutput", "ValueCollector", "sum_histograms"]

Histograms = dict[str, hist.Hist]


class Collector(abc.ABC):
    """Base class of collectors: subclass it as a frozen dataclass.

    Attributes
    ----------
    version
        Bump it when the collector's logic changes: it is part of the cache key, as are the
        dataclass fields (the configuration).
    """

    version: ClassVar[int] = 1

    @property
    @abc.abstractmethod
    def branches(self) -> dict[str, str]:
        """Branches to read, each with its expected type (``"var * float32"``, ``"int32"``)."""

    @abc.abstractmethod
    def collect(self, events: ak.Array) -> Histograms:
        """Histograms of one chunk of events (a record array with :attr:`branches`).

        Values no sound file holds (a wire outside its layer, say) raise
        :class:`~b2calib.exceptions.BadValueError` naming the branch: the engine then treats
        the file as bad, naming it and the entries read, under the collect's ``on_bad_file``.
        Any other exception stops the collect, with a note naming the file and entries."""

    def prepare(self) -> None:
        """Load what every chunk needs and is costly to load, e.g. compiled kernels (nothing
        by default). The engine calls it once per :func:`~b2calib.engine.collect`, in the
        calling process, before local workers start: forked worker processes inherit what it
        loaded instead of each loading it again, threads share it. The workers of the kept
        process pool, which may have been forked before, call it too, once per worker for each
        collector (compared by ``repr``). Must be idempotent."""
        return None

    def identity(self) -> dict[str, Any]:
        """What identifies the collector's output: class, version and configuration."""
        cls = type(self)
        cfg: dict[str, Any] = dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}
        return {
            "collector": f"{cls.__module__}.{cls.__qualname__}",
            "version": cls.version,
            "config": cfg,
        }


class RunOutput(Mapping[tuple[int, int], Histograms]):
    """Histograms per (exp, run); ``a + b`` adds histograms of the same run and name."""

    def __init__(self, per_run: Mapping[tuple[int, int], Histograms] | None = None) -> None:
        self._data: dict[tuple[int, int], Histograms] = {}
        for key, hists in (per_run or {}).items():
            self.add(key, hists)

    def __getitem__(self, key: tuple[int, int]) -> Histograms:
        return self._data[key]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(sorted(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def add(
        self, key: tuple[int, int], hists: Mapping[str, hist.Hist], *, copy: bool = True
    ) -> None:
        """Add histograms of one run (in place). ``copy=False`` takes ownership of histograms
        nobody else holds (the engine's fresh task results), saving a copy per run."""
        mine = self._data.setdefault(key, {})
        for name, h in hists.items():
            if name not in mine:
                mine[name] = h.copy() if copy else h
            else:
                mine[name] += h

    def __add__(self, other: RunOutput) -> RunOutput:
        out = RunOutput(self._data)
        for key in other:
            out.add(key, other[key])
        return out

    def merged(self, runs: Iterable[tuple[int, int]] | None = None) -> Histograms:
        """Histograms summed over ``runs`` (default: all), in run order."""
        keys = sorted(self._data) if runs is None else sorted(set(runs))
        missing = [k for k in keys if k not in self._data]
        if missing:
            raise KeyError(f"no output for runs {missing}")
        parts: dict[str, list[hist.Hist]] = {}
        for k in keys:
            for name, h in self._data[k].items():
                parts.setdefault(name, []).append(h)
        return {name: sum_histograms(hs) for name, hs in parts.items()}


_ADDITIVE = (hist.storage.Double, hist.storage.Int64, hist.storage.Weight)


def _grown_axes(hists: Sequence[hist.Hist]) -> list[list[Any] | None] | None:
    """Per axis of ``hists``: None where every histogram has the same axis, or the union of
    the categories (in order of first appearance, as boost-histogram grows an axis) of a
    growing category axis; None for all when the one-allocation sum does not apply."""
    first = hists[0]
    if type(first) is not hist.Hist or first.storage_type not in _ADDITIVE:
        return None
    if any(
        type(h) is not hist.Hist or h.storage_type is not first.storage_type or h.ndim != first.ndim
        for h in hists
    ):
        return None
    out: list[list[Any] | None] = []
    for i, ax in enumerate(first.axes):
        if all(h.axes[i] == ax for h in hists):
            out.append(None)
            continue
        cat = (hist.axis.IntCategory, hist.axis.StrCategory)
        if not isinstance(ax, cat) or not ax.traits.growth or ax.traits.overflow:
            return None
        for h in hists:
            other = h.axes[i]
            if (
                type(other) is not type(ax)
                or other.traits != ax.traits
                or other.__dict__ != ax.__dict__
            ):
                return None
        seen: dict[Any, None] = {}
        for h in hists:
            seen.update(dict.fromkeys(h.axes[i]))
        out.append(list(seen))
    return out


def sum_histograms(hists: Sequence[hist.Hist]) -> hist.Hist:
    """``hists[0] + hists[1] + ...``, a new histogram.

    Histograms that differ only in the categories of growing category axes (the atom axis of
    the time-dependent calibrations) are summed into one histogram of the union of the
    categories allocated once: boost-histogram's ``+`` of such histograms remaps them bin by bin
    and copies the growing total each time (0.4 s for 12 runs of 50 atoms x 466 bins). The
    result is the same, bit for bit: the same categories in the same order, each bin summed
    in the same order.
    """
    if not hists:
        raise ValueError("no histogram to sum")
    grown = _grown_axes(hists) if len(hists) > 1 else None
    if grown is None or all(g is None for g in grown):
        total = hists[0].copy()
        for h in hists[1:]:
            total += h
        return total
    first = hists[0]
    axes = []
    for ax, cats in zip(first.axes, grown, strict=True):
        if cats is not None:
            new = type(ax)(cats, growth=True, overflow=False)
            new.__dict__.update(ax.__dict__)  # name, label and metadata
            ax = new
        axes.append(ax)
    out = hist.Hist(*axes, storage=first.storage_type())
    # the first's name, label and metadata, as ``+`` keeps them, and unknown variances
    out.__dict__.update(first.__dict__, _variance_known=False)
    view: Any = out.view(flow=True)
    fields = ("value", "variance") if first.storage_type is hist.storage.Weight else (None,)
    for h in hists:
        src: Any = h.view(flow=True)
        index = []
        for ax, cats, n in zip(h.axes, grown, src.shape, strict=True):
            if cats is None:
                index.append(np.arange(n))
            else:
                where = {c: j for j, c in enumerate(cats)}
                index.append(np.fromiter((where[c] for c in ax), dtype=np.intp, count=len(ax)))
        ix = np.ix_(*index)
        for f in fields:
            if f is None:
                view[ix] += src
            else:
                view[f][ix] += src[f]
    return out


def _axis(spec: tuple[int, float, float], name: str, label: str) -> hist.axis.Regular:
    n, lo, hi = spec
    if n < 1 or not hi > lo:
        raise ConfigError(f"axis {name}: need bins >= 1 and high > low, got {spec}")
    return hist.axis.Regular(int(n), float(lo), float(hi), name=name, label=label)


@dataclasses.dataclass(frozen=True)
class ValueCollector(Collector):
    """A 1-D histogram of one (flat or jagged) branch.

    Parameters
    ----------
    branch, dtype
        Branch and its element type (``"float32"``); ``jagged`` says whether it is per object.
    bins
        (number of bins, low, high).
    """

    branch: str
    bins: tuple[int, float, float]
    dtype: str = "float32"
    jagged: bool = True
    name: str = "value"

    @property
    def branches(self) -> dict[str, str]:
        return {self.branch: f"var * {self.dtype}" if self.jagged else self.dtype}

    def prepare(self) -> None:
        """Load the compiled fill for the branch's type (forked workers inherit it)."""
        fill_1d(np.zeros(3, np.int64), np.zeros(0, self.dtype), self.bins)

    def collect(self, events: ak.Array) -> Histograms:
        h = hist.Hist(_axis(self.bins, "x", self.branch), storage=hist.storage.Int64())
        values = events[self.branch]
        if self.jagged:
            values = ak.flatten(values)
        fill_1d(h.view(flow=True), ak.to_numpy(values), self.bins)
        return {self.name: h}


@dataclasses.dataclass(frozen=True)
class ChannelValueCollector(Collector):
    """A channels x values histogram: the input of per-channel calibrations.

    Fills ``(channel, value)`` for every object of the two parallel jagged branches, e.g.
    ``ECLCalDigits_m_CellId`` x ``ECLCalDigits_m_Energy``, optionally keeping only objects with
    ``min_value <= value``. The channel axis is integer-binned: bin ``i`` is channel
    ``first_channel + i``.
    """

    channel_branch: str
    value_branch: str
    n_channels: int
    value_bins: tuple[int, float, float]
    first_channel: int = 0
    channel_dtype: str = "int16"
    value_dtype: str = "float32"
    name: str = "channel_value"

    @property
    def branches(self) -> dict[str, str]:
        return {
            self.channel_branch: f"var * {self.channel_dtype}",
            self.value_branch: f"var * {self.value_dtype}",
        }

    def _channel_bins(self) -> tuple[int, float, float]:
        first = self.first_channel
        return (self.n_channels, first - 0.5, first + self.n_channels - 0.5)

    def prepare(self) -> None:
        """Load the compiled fill for the branches' types (forked workers inherit it)."""
        view = np.zeros((3, 3), np.int64, order="F")  # the layout of a histogram's storage
        channels, values = np.zeros(0, self.channel_dtype), np.zeros(0, self.value_dtype)
        fill_2d(view, channels, values, self._channel_bins(), self.value_bins)

    def collect(self, events: ak.Array) -> Histograms:
        first = self.first_channel
        channel_axis = hist.axis.Regular(
            self.n_channels,
            first - 0.5,
            first + self.n_channels - 0.5,
            name="channel",
            label=self.channel_branch,
        )
        h = hist.Hist(
            channel_axis,
            _axis(self.value_bins, "value", self.value_branch),
            storage=hist.storage.Int64(),
        )
        ch = ak.to_numpy(ak.flatten(events[self.channel_branch]))
        val = ak.to_numpy(ak.flatten(events[self.value_branch]))
        fill_2d(h.view(flow=True), ch, val, self._channel_bins(), self.value_bins)
        return {self.name: h}
