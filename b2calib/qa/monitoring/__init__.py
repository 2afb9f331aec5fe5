"""Run-level monitoring variables and QA histograms (the Belle II "MiraBelle" idea).

Collectors run over the calibration skims on the engine (:func:`b2calib.engine.collect`, in
process, in a process pool or on Dask) and fill histograms per run, mergeable with ``+``; every
monitoring number is then computed from those histograms, never from arrays kept in memory.
What is filled and computed is declared per detector (and for the two systems) as
:class:`QAPart` s in the ``qa.py`` of each package of :mod:`b2calib.detectors` (where each
variable is defined) and registered like calibrations (:func:`register`, the ``b2calib.qa``
entry-point group); the collector of each skim is composed of the parts of its skim:

===================  ======================================================================
``hlt_mumu_2trk``    :class:`MuMuCollector`: hits per track (PXD, SVD, CDC), TOP digits and
                     ARICH photons per track, the TOP time of the tracks (photon time
                     minus expected time) and its largest module deviation,
                     impact-parameter resolutions, good-muon fraction (KLM), dimuon mass;
                     QA histograms of those and of digit charges, times and layers
``hlt_bhabha``       :class:`BhabhaCollector`: event count (Bhabha luminosity,
                     hadron/Bhabha ratio), ECL E/p, cluster energy and cluster time of
                     the Bhabha electrons
``hlt_gamma_gamma``  :class:`GammaGammaCollector`: events with the ``GG`` flag
                     (gamma-gamma luminosity)
``hlt_hadron``,      :class:`OccupancyCollector`: event count and objects per event of every
``cosmic``           detector (the occupancy summaries; the only numbers of cosmic runs), hot
                     PXD pixels
===================  ======================================================================

:func:`run_qa_from_outputs` turns one run's histograms into a :class:`RunQA`;
:func:`collect_qa` does it all for a folder of skims or a :class:`~b2calib.engine.Dataset`.

===============  ==================================================================================
``definitions``  :class:`VariableDef`, :class:`HistogramDef`, :class:`MonitoringValue`,
                 :class:`RunQA`, :data:`SYSTEMS`
``parts``        :class:`QAPart` and the toolkit of its methods (events as the parts see them, a
                 run's histograms, histogram builders, the generic :class:`~parts.Occupancy`)
``registry``     :func:`register`, :func:`qa_parts`, :data:`VARIABLES`, :data:`QA_HISTOGRAMS`
``collectors``   the skims' collectors, composed of the registered parts
``massfit``      the collision energy fitted to the dimuon mass (the model: :mod:`b2calib.fit.isr`)
``luminosity``   the luminosity from the events of a luminosity selection
``collect``      :func:`collect_qa`, :func:`run_qa_from_outputs`
===============  ==================================================================================

Definitions (what the numbers mean)
-----------------------------------
* Detector names are those of :data:`b2calib.geometry.DETECTORS`, plus two systems
  (:data:`SYSTEMS`): ``BEAM`` (collision energy and luminosity: dimuon mass, hadron/Bhabha
  ratio) and ``TRACKING`` (impact-parameter resolutions).
* Means per track or event carry the error ``std / sqrt(n)``; they come from ``Mean``-storage
  histograms (count, mean, variance: exact, mergeable).
* Widths are sigma68 (:func:`b2calib.fit.histstats.sigma68`): half the width of the central
  68.27 % interval, from the histogram's quantiles, with the asymptotic error of the quantiles.
* QA histograms have one entry per independent object (track, event, cluster): the photons of
  one track share its time, so TOP timing is monitored by the mean digit time per track.
* A detector the run did not include (the run registry's :attr:`~b2calib.runs.Run.detectors`,
  the files' metadata) has no value and no QA histogram in that run, whatever its files hold.
* Times are in ns against what they should be (event T0, flight time): ``mumu.top_time``,
  ``bhabha.ecl_time`` follow a time shift of the TOP or the ECL; the raw times carry the
  constants' offsets (the processing global tag is nominal), so healthy runs sit at a common
  offset, not at 0, and follow its slow drift.
* Each variable is defined where it is declared: ``b2calib.detectors.<detector>.qa``
  (``beam`` and ``tracking`` for the systems).
* A variable is judged against the trend of its class unless its definition says it is not
  (:attr:`VariableDef.judged`): ``bhabha.lumi_pb`` and ``gamma_gamma.lumi_pb``, a run's
  integrated luminosity, depend on its length and are shown only; what is judged is their
  agreement with the recorded luminosity (``bhabha.lumi_recorded_ratio``,
  ``gamma_gamma.lumi_recorded_ratio``) and with each other (``bhabha_gamma_gamma_lumi_ratio``),
  each expected to be 1.
"""

from __future__ import annotations

from b2calib.qa.monitoring.collect import collect_qa, run_qa_from_outputs
from b2calib.qa.monitoring.collectors import (
    BhabhaCollector,
    GammaGammaCollector,
    MuMuCollector,
    OccupancyCollector,
    SkimCollector,
)
from b2calib.qa.monitoring.definitions import (
    SYSTEMS,
    HistogramDef,
    MonitoringValue,
    RunQA,
    VariableDef,
)
from b2calib.qa.monitoring.luminosity import (
    VISIBLE_CROSS_SECTION_ECMS,
    VISIBLE_CROSS_SECTIONS_NB,
    lumi_from_count,
)
from b2calib.qa.monitoring.parts import QAPart
from b2calib.qa.monitoring.registry import (
    QA_HISTOGRAMS,
    VARIABLES,
    qa_parts,
    register,
    unregister,
)

__all__ = [
    "QA_HISTOGRAMS",
    "SYSTEMS",
    "VARIABLES",
    "VISIBLE_CROSS_SECTIONS_NB",
    "VISIBLE_CROSS_SECTION_ECMS",
    "BhabhaCollector",
    "GammaGammaCollector",
    "HistogramDef",
    "MonitoringValue",
    "MuMuCollector",
    "OccupancyCollector",
    "QAPart",
    "RunQA",
    "SkimCollector",
    "VariableDef",
    "collect_qa",
    "lumi_from_count",
    "qa_parts",
    "register",
    "run_qa_from_outputs",
    "unregister",
]


def __dir__() -> list[str]:
    return __all__
