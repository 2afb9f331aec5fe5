"""The collectors of the monitoring: one per skim, composed from the registered parts of the skim.

===================  ======================================================================
``hlt_mumu_2trk``    :class:`MuMuCollector`: events with exactly two opposite-charge tracks
                     (:class:`~b2calib.qa.monitoring.parts.DimuonEvents`)
``hlt_bhabha``       :class:`BhabhaCollector`: every event
``hlt_gamma_gamma``  :class:`GammaGammaCollector`: every event
``hlt_hadron``,      :class:`OccupancyCollector`: every event
``cosmic``
other skims          :class:`SkimCollector`: every event (for parts of other skims)
===================  ======================================================================

A collector counts the events it selects (``events``, a ``Mean`` histogram) and adds what each
of its parts fills; it uses the parts of its skim whose detectors are among ``detectors`` (those
the files have), the systems' always. It is a frozen, picklable dataclass that carries its
parts (by default the parts registered for its skim when it is made); its
:meth:`~SkimCollector.identity`, the engine's cache key, names each part's class, version and
configuration.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import awkward as ak
import numpy as np

from b2calib.engine import Collector
from b2calib.exceptions import ConfigError
from b2calib.geometry import DETECTORS
from b2calib.qa.monitoring.parts import (
    DimuonEvents,
    Histograms,
    QAPart,
    SkimEvents,
    flat,
    mean_histogram,
)
from b2calib.qa.monitoring.registry import qa_parts
from b2calib.skims import SKIMS

__all__ = [
    "COLLECTORS",
    "BhabhaCollector",
    "GammaGammaCollector",
    "MuMuCollector",
    "OccupancyCollector",
    "SkimCollector",
    "collector_for",
    "qa_skims",
]


@dataclasses.dataclass(frozen=True)
class SkimCollector(Collector):
    """The monitoring of one skim: its selected events, filled by its parts.

    Parameters
    ----------
    detectors
        Whose branches to read (those the files have): the parts of other detectors are left
        out.
    skim
        The skim (one of :attr:`skims` of the class).
    parts
        The parts of the skim; None: those registered now
        (:func:`~b2calib.qa.monitoring.qa_parts`).
    """

    detectors: tuple[str, ...] = DETECTORS
    skim: str = ""
    parts: tuple[QAPart[Any], ...] | None = None
    version: ClassVar[int] = 1
    #: The skims the class collects (empty: any skim).
    skims: ClassVar[tuple[str, ...]] = ()
    #: Branches read whatever the parts.
    base_branches: ClassVar[dict[str, str]] = {"EventMetaData_m_event": "uint32"}

    def __post_init__(self) -> None:
        bad = set(self.detectors) - set(DETECTORS)
        if bad:
            raise ConfigError(f"unknown detectors {sorted(bad)}; known: {', '.join(DETECTORS)}")
        allowed = self.skims or tuple(SKIMS)
        if self.skim not in allowed:
            raise ConfigError(
                f"{type(self).__name__} collects {', '.join(allowed)}, not {self.skim!r}"
            )
        if self.parts is None:
            object.__setattr__(self, "parts", tuple(p for p in qa_parts() if p.skim == self.skim))
        others = [p.describe() for p in self.all_parts if p.skim != self.skim]
        if others:
            raise ConfigError(f"{type(self).__name__} of {self.skim}: not its parts: {others}")

    @property
    def all_parts(self) -> tuple[QAPart[Any], ...]:
        """The collector's parts, used or not."""
        return self.parts or ()

    @property
    def active_parts(self) -> tuple[QAPart[Any], ...]:
        """The parts whose detectors are all among :attr:`detectors`."""
        dets = set(self.detectors)
        return tuple(p for p in self.all_parts if set(p.requires) <= dets)

    @property
    def branches(self) -> dict[str, str]:
        b = dict(self.base_branches)
        for part in self.active_parts:
            b |= part.branches()
        return b

    def select(self, events: ak.Array) -> SkimEvents:
        """The events the parts see: all of them."""
        return SkimEvents(events)

    def collect(self, events: ak.Array) -> Histograms:
        selected = self.select(events)
        out: Histograms = {"events": mean_histogram(np.ones(len(selected)))}
        for part in self.active_parts:
            filled = part.fill(selected)
            clash = sorted(out.keys() & filled.keys())
            if clash:
                raise ConfigError(
                    f"{part.describe()} fills {clash}, which the collector of {self.skim} "
                    "or another of its parts fills"
                )
            out |= filled
        return out

    def identity(self) -> dict[str, Any]:
        """Class, version, configuration and the class, version and configuration of every
        part used."""
        cls = type(self)
        return {
            "collector": f"{cls.__module__}.{cls.__qualname__}",
            "version": cls.version,
            "config": {"detectors": list(self.detectors), "skim": self.skim},
            "parts": [p.identity() for p in self.active_parts],
        }


@dataclasses.dataclass(frozen=True)
class MuMuCollector(SkimCollector):
    """Dimuon (``hlt_mumu_2trk``) monitoring: events with exactly two opposite-charge tracks.

    The tracks' helix parameters, charges and hit counts are always read.
    """

    skim: str = "hlt_mumu_2trk"
    skims: ClassVar[tuple[str, ...]] = ("hlt_mumu_2trk",)
    base_branches: ClassVar[dict[str, str]] = {
        f"TrackFitResults_m_{k}": f"var * {t}"
        for k, t in (
            ("d0", "float32"),
            ("phi0", "float32"),
            ("omega", "float32"),
            ("z0", "float32"),
            ("tanLambda", "float32"),
            ("charge", "int8"),
            ("nCDCHits", "int16"),
            ("nSVDHits", "int16"),
            ("nPXDHits", "int16"),
        )
    }

    def select(self, events: ak.Array) -> DimuonEvents:
        """The events with exactly two opposite-charge tracks, and their tracks."""
        ntrk = np.asarray(ak.to_numpy(ak.num(events["TrackFitResults_m_d0"])), dtype=np.int64)
        q = ak.to_numpy(
            ak.fill_none(ak.pad_none(events["TrackFitResults_m_charge"], 2, clip=True), 0)
        )
        use = (ntrk == 2) & (q[:, 0] * q[:, 1] < 0) if len(events) else np.zeros(0, bool)
        ev = events[use]
        # tracks of the selected events: two per event, in event order
        tracks = {
            k: flat(ev, f"TrackFitResults_m_{k}")
            for k in ("d0", "phi0", "omega", "z0", "tanLambda")
        }
        return DimuonEvents(ev, tracks)


@dataclasses.dataclass(frozen=True)
class BhabhaCollector(SkimCollector):
    """Bhabha (``hlt_bhabha``): the event count, and what its parts fill (ECL E/p and cluster
    energies)."""

    skim: str = "hlt_bhabha"
    skims: ClassVar[tuple[str, ...]] = ("hlt_bhabha",)


@dataclasses.dataclass(frozen=True)
class GammaGammaCollector(SkimCollector):
    """Gamma-gamma (``hlt_gamma_gamma``): the event count, and what its parts fill (the events
    with the ``GG`` flag, the luminosity count)."""

    skim: str = "hlt_gamma_gamma"
    skims: ClassVar[tuple[str, ...]] = ("hlt_gamma_gamma",)


@dataclasses.dataclass(frozen=True)
class OccupancyCollector(SkimCollector):
    """Events, and what the parts fill: objects per event of each detector, the fired PXD
    pixels (``hlt_hadron``, ``cosmic``)."""

    skim: str = "hlt_hadron"
    skims: ClassVar[tuple[str, ...]] = ("hlt_hadron", "cosmic")


#: The collector of each skim the monitoring reads (other skims: :class:`SkimCollector`).
COLLECTORS: dict[str, type[SkimCollector]] = {
    "hlt_mumu_2trk": MuMuCollector,
    "hlt_bhabha": BhabhaCollector,
    "hlt_gamma_gamma": GammaGammaCollector,
    "hlt_hadron": OccupancyCollector,
    "cosmic": OccupancyCollector,
}


def qa_skims() -> list[str]:
    """The skims the monitoring reads: those of :data:`COLLECTORS`, then any other skim a
    registered part fills."""
    extra = [p.skim for p in qa_parts() if p.skim is not None and p.skim not in COLLECTORS]
    return [*COLLECTORS, *dict.fromkeys(extra)]


def collector_for(skim: str, detectors: tuple[str, ...] = DETECTORS) -> SkimCollector:
    """The collector of ``skim`` with the parts registered for it."""
    return COLLECTORS.get(skim, SkimCollector)(detectors=detectors, skim=skim)


def __dir__() -> list[str]:
    return __all__
