"""CDC dE/dx calibrations from Bhabha electrons: run gain, cos(theta) correction, wire gain.

Model and conventions (those of the truth payloads)
    The dE/dx of a hit, ``adc / path / 120``, is ``bethe_bloch(beta gamma) * wire gain * run gain
    * cosine correction(cos theta) * fluctuation`` with a Landau-like fluctuation of mean 1;
    Bhabha electrons are on the Fermi plateau (``bethe_bloch = 1``). The three constants are
    degenerate in their product; the conventions fixing them are

    * the wire gains average 1 over the live wires (dead wires: 0, status DEAD);
    * the cosine correction and the run gain are absolute: the *mean* hit dE/dx of electrons,
      corrected by all three, is 1.

    Per-track truncated means (5-75 %, ``CDCDedxTracks``) are robust against the Landau tail
    but lie below the mean by a factor ``K`` that depends on the fluctuation's shape and on the
    number of hits per track (so on cos(theta)). The run gain measures run-to-run variations
    with Gaussian fits of truncated means and takes its absolute scale from the mean hit dE/dx
    of the input: ``K``, the fitted truncated mean over the mean hit dE/dx, is averaged over
    the input runs (fitted per run), and its uncertainty is part of every run gain's (a common
    uncertainty: the run gains of one calibration are correlated through it). The cosine
    correction uses the mean hit dE/dx per bin directly (a per-bin ``K`` would fold the track
    length into it). The wire gains are ratios of per-wire truncated means: ``K`` cancels.

Order (as in basf2)
    ``cdc-dedx-run-gain`` first (Gaussian fit per run, within 2.5 widths of the peak, of the
    track truncated means divided by the current cosine correction; SequentialRunByRun merges
    runs with too few tracks), then ``cdc-dedx-cosine`` (per bin of cos(theta): mean hit dE/dx
    over the new run gain and the current wire gains), then ``cdc-dedx-wire-gain`` (5-75 %
    truncated mean of the hit dE/dx per wire over the new run gain and cosine correction). The
    run gain uses the cosine correction and wire gains valid in the input tags (the previous
    payloads); missing ones count as 1, and the run gain then absorbs their average.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

import awkward as ak
import hist
import numba
import numpy as np
import numpy.typing as npt

from b2calib.calibration import (
    Algorithm,
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Calibration,
    CollectorInput,
    Constants,
    Diagnostics,
    PayloadComparison,
    SequentialRunByRun,
    SingleIOV,
)
from b2calib.calibration.toolkit import (
    NotEnoughData,
    channel_payload,
    guarded,
    require,
    status_counts,
)
from b2calib.conditions import ChannelStatus
from b2calib.conditions.iov import RunKey
from b2calib.detectors.cdc import fitviews
from b2calib.detectors.cdc.tracking import check_hits, prepare_hit_check
from b2calib.engine import Collector, RunOutput
from b2calib.engine.fill import fill_1d, fill_2d, mean_add, regular_bin
from b2calib.fit import ChannelFits, fit_channels
from b2calib.fit.histstats import mean_sums, mean_view
from b2calib.fit.truncated_mean import truncated_means
from b2calib.geometry import cdc

__all__ = [
    "COSINE_PAYLOAD",
    "COS_EDGES",
    "RUN_GAIN_PAYLOAD",
    "WIRE_GAIN_PAYLOAD",
    "CosineAlgorithm",
    "DedxCollector",
    "RunGainAlgorithm",
    "WireGainAlgorithm",
    "cosine_calibration",
    "run_gain_calibration",
    "wire_gain_calibration",
]

F = npt.NDArray[np.float64]
#: cos(theta) bin edges of CDCDedxCosineCor (100 bins, those of the payload convention).
COS_EDGES = np.linspace(-0.87, 0.96, 101)
RUN_GAIN_PAYLOAD = "CDCDedxRunGain"
COSINE_PAYLOAD = "CDCDedxCosineCor"
WIRE_GAIN_PAYLOAD = "CDCDedxWireGain"
N_COS = len(COS_EDGES) - 1
#: Track truncated-mean axis (units of the electron plateau).
TRACK_BINS = (300, 0.0, 3.0)
#: Hit dE/dx axis of the wire-gain histograms.
HIT_BINS = (100, 0.0, 3.0)
COS_AXIS = (N_COS, float(COS_EDGES[0]), float(COS_EDGES[-1]))
WIRE_AXIS = (cdc.N_WIRES, -0.5, cdc.N_WIRES - 0.5)
ADC_PER_UNIT = 120.0

_BRANCHES = {
    "EventMetaData_m_experiment": "int32",
    "EventMetaData_m_run": "int32",
    "CDCHits_m_layer": "var * int8",
    "CDCHits_m_wire": "var * int16",
    "CDCHits_m_adcCount": "var * int16",
    "CDCHits_m_pathLength": "var * float32",
    "CDCHits_m_trackIndex": "var * int16",
    "CDCDedxTracks_m_trackIndex": "var * int16",
    "CDCDedxTracks_m_p": "var * float32",
    "CDCDedxTracks_m_cosTheta": "var * float32",
    "CDCDedxTracks_m_dedxAvgTruncated": "var * float32",
}


def cos_bin(cos_theta: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Cosine-correction bin (0..99) of cos(theta), clipped to the edges (as the truth)."""
    return np.clip(np.searchsorted(COS_EDGES, np.asarray(cos_theta)) - 1, 0, N_COS - 1)


@numba.njit(cache=True, nogil=True, error_model="numpy")  # x / 0 is inf or NaN, as in numpy
def _matched_hits(
    ntrk: npt.NDArray[np.int64],
    nhit: npt.NDArray[np.int64],
    trk_index: npt.NDArray[np.int16],
    trk_selected: npt.NDArray[np.bool_],
    hit_track: npt.NDArray[np.int16],
    layer: npt.NDArray[np.int8],
    wire: npt.NDArray[np.int16],
    adc: npt.NDArray[np.int16],
    path: npt.NDArray[np.float32],
    layer_first: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The hits of selected tracks, in their order: the position of each one's track in the
    flat track arrays (the selected track of its event whose index it carries; the first, were
    two to carry one), its global wire and its dE/dx (ADC counts / path length /
    :data:`ADC_PER_UNIT`, in double precision).

    Event by event: a Bhabha event has two tracks, so each hit compares a few indices, where a
    search of every hit's (event, index) key among every track's, and masks of every hit
    branch, took 2.4 s of a 2-core collect (issue 20)."""
    n = hit_track.shape[0]
    track = np.empty(n, dtype=np.int64)
    gwire = np.empty(n, dtype=np.int64)
    dedx = np.empty(n, dtype=np.float64)
    m = 0
    t0 = 0
    h0 = 0
    for e in range(ntrk.shape[0]):
        t1 = t0 + ntrk[e]
        h1 = h0 + nhit[e]
        for h in range(h0, h1):
            k = hit_track[h]
            for j in range(t0, t1):
                if trk_selected[j] and trk_index[j] == k:
                    track[m] = j
                    gwire[m] = layer_first[np.int64(layer[h])] + np.int64(wire[h])
                    dedx[m] = np.float64(adc[h]) / np.float64(path[h]) / ADC_PER_UNIT
                    m += 1
                    break
        t0 = t1
        h0 = h1
    return track[:m], gwire[:m], dedx[:m]


@numba.njit(cache=True, nogil=True, error_model="numpy")  # x / 0 is inf or NaN, as in numpy
def _fill_hits(  # type: ignore[no-untyped-def,unused-ignore]
    ntrk,
    nhit,
    trk_index,
    trk_selected,
    hit_track,
    layer,
    wire,
    adc,
    path,
    layer_first,
    t_factor,
    w_factor,
    t_bin,
    mean_sums,
    wire_counts,
    wire_rows,
    hit_axis,
    keys,
):
    """Fill the hits of selected tracks (those of :func:`_matched_hits`, in their order) into a
    collector's hit histogram; return their number.

    A hit's value is its dE/dx over ``t_factor`` of its track (flat track order) times
    ``w_factor`` of its global wire: the operations of :meth:`DedxCollector._collect`'s numpy
    path, on the same operands. With ``mean_sums`` of shape (3, bins) (the count, mean and sum
    of squared deltas of a ``Mean`` histogram without flow bins), the value is added to bin
    ``t_bin`` of its track with boost-histogram's update; else it is counted in
    ``wire_counts``, the int64 (wire, dE/dx) storage with flow bins of the wire-gain
    histogram (``wire_rows`` wire bins) as a flat array in column-major order, whose wire axis
    has one bin per wire (a wire's floating-point bin is the wire's + 1: tests/test_cdc.py) and
    dE/dx axis ``hit_axis`` (bins, low, high) (the bins of
    :func:`b2calib.engine.fill.fill_2d`). ``keys`` (int64, one per hit) is scratch space for
    those bins: counted as each value is computed, the 12 MB histogram's cache misses stalled
    the arithmetic (the compiled pass cost more than the numpy path's arrays); in a loop of
    their own the processor overlaps them, as in the T0 collector's pass. The hits must have
    been checked (:func:`~b2calib.detectors.cdc.tracking.check_hits`): the tables are indexed
    with them.
    """
    means = mean_sums.shape[1] > 0
    count, mean, ssd = mean_sums[0], mean_sums[1], mean_sums[2]
    n_y, y_lo, y_hi = int(hit_axis[0]), hit_axis[1], hit_axis[2]
    m = 0
    t0 = 0
    h0 = 0
    for e in range(ntrk.shape[0]):
        t1 = t0 + ntrk[e]
        h1 = h0 + nhit[e]
        for h in range(h0, h1):
            k = hit_track[h]
            for j in range(t0, t1):
                if trk_selected[j] and trk_index[j] == k:
                    gw = layer_first[np.int64(layer[h])] + np.int64(wire[h])
                    dedx = np.float64(adc[h]) / np.float64(path[h]) / ADC_PER_UNIT
                    v = dedx / (t_factor[j] * w_factor[gw])
                    if means:
                        mean_add(count, mean, ssd, t_bin[j], v)
                    else:
                        i = regular_bin(v, y_lo, y_hi, n_y)
                        keys[m] = i * wire_rows + gw + 1
                    m += 1
                    break
        t0 = t1
        h0 = h1
    if not means:
        for k in range(m):
            wire_counts[keys[k]] += 1
    return m


def _tracks_and_hits(events: ak.Array, p_min: float) -> dict[str, npt.NDArray[Any]]:
    """Selected electron tracks and their hits (flat arrays; the tracks ordered by event and
    index, the hits in their order)."""
    n_evt = len(events)
    ntrk = ak.to_numpy(ak.num(events["CDCDedxTracks_m_trackIndex"])).astype(np.int64)
    nhit = ak.to_numpy(ak.num(events["CDCHits_m_layer"])).astype(np.int64)
    exp = ak.to_numpy(events["EventMetaData_m_experiment"])
    run = ak.to_numpy(events["EventMetaData_m_run"])
    flat = {k: ak.to_numpy(ak.flatten(events[k])) for k in _BRANCHES if k.startswith("CDC")}
    trk_index = flat["CDCDedxTracks_m_trackIndex"]
    sel = flat["CDCDedxTracks_m_p"] > p_min
    evt_t = np.repeat(np.arange(n_evt), ntrk)
    chosen = np.flatnonzero(sel)
    key_t = evt_t[chosen] * 4096 + trk_index[chosen].astype(np.int64)
    order = chosen[np.argsort(key_t)]
    check_hits(nhit, flat["CDCHits_m_layer"], flat["CDCHits_m_wire"])  # before the table
    track, gwire, dedx = _matched_hits(
        ntrk,
        nhit,
        trk_index,
        sel,
        flat["CDCHits_m_trackIndex"],
        flat["CDCHits_m_layer"],
        flat["CDCHits_m_wire"],
        flat["CDCHits_m_adcCount"],
        flat["CDCHits_m_pathLength"],
        cdc.LAYER_FIRST,
    )
    exp_t, run_t = exp[evt_t], run[evt_t]
    cos_t = flat["CDCDedxTracks_m_cosTheta"].astype(np.float64)
    cbin_t = cos_bin(cos_t)  # per track, not per hit: 40 times fewer searches
    return {
        "t_exp": exp_t[order],
        "t_run": run_t[order],
        "t_cos": cos_t[order],
        "t_cos_bin": cbin_t[order],
        "t_trunc": flat["CDCDedxTracks_m_dedxAvgTruncated"][order].astype(np.float64),
        # per track, in the flat order: what a hit takes from its track (``h_track``) is
        # looked up per track and gathered, not computed for each of ~50 hits per track
        "exp": exp_t,
        "run": run_t,
        "h_track": track,
        "h_cos_bin": cbin_t[track],
        "h_wire": gwire,
        "h_dedx": dedx,
    }


@numba.njit(cache=True, nogil=True)
def _mean_loop(count, mean, ssd, index, sample):  # type: ignore[no-untyped-def,unused-ignore]
    """Add ``sample`` to the mean accumulators of bins ``index``, in order, with the update of
    boost-histogram's ``Mean`` storage (the same bits as ``Hist.fill(..., sample=...)``)."""
    for k in range(sample.shape[0]):
        b = index[k]
        n = count[b] + 1.0
        delta = sample[k] - mean[b]
        count[b] = n
        mean[b] += delta / n
        ssd[b] += delta * (sample[k] - mean[b])


def _fill_mean(h: hist.Hist, index: npt.NDArray[np.int64], sample: F) -> None:
    """Fill the ``Mean`` histogram ``h`` (one axis, no entry in its flow bins) with
    ``sample`` in its bins ``index`` (0-based), as ``h.fill(centres[index], sample=sample)``
    does, bit for bit, without the coordinates and their binning."""
    view: Any = h.view()  # a structured view of the accumulators
    count = np.array(view["count"], dtype=np.float64)
    mean = np.array(view["value"], dtype=np.float64)
    ssd = np.array(view["_sum_of_deltas_squared"], dtype=np.float64)
    _mean_loop(
        count, mean, ssd, np.asarray(index, dtype=np.int64), np.asarray(sample, dtype=np.float64)
    )
    view["count"], view["value"], view["_sum_of_deltas_squared"] = count, mean, ssd


def _per_run(
    exp: npt.NDArray[Any], run: npt.NDArray[Any], table: tuple[tuple[int, int, float], ...]
) -> F:
    out = np.ones(len(exp))
    for e, r, v in table:
        out[(exp == e) & (run == r)] = v
    return out


@dataclasses.dataclass(frozen=True)
class DedxCollector(Collector):
    """dE/dx histograms of Bhabha electrons with the current constants applied.

    ``kind`` selects what is filled:

    ``"run"``
        ``dedx_run_track``: track truncated mean / cosine correction; ``dedx_run_hit``: the mean
        hit dE/dx / (cosine correction * wire gain) (mean storage, one bin).
    ``"cosine"``
        ``dedx_cos_track``: cos(theta) bin x track truncated mean / run gain;
        ``dedx_cos_hit``: mean hit dE/dx / (run gain * wire gain) per cos(theta) bin.
    ``"wire"``
        ``dedx_wire_hit``: wire x hit dE/dx / (run gain * cosine correction).

    Parameters
    ----------
    run_gain
        (exp, run, gain) of each input run (1 where unknown).
    cosine
        The current correction per cos(theta) bin (100 values; empty: 1).
    wire_gain
        The current wire gains (14336 values; empty, 0 or NaN: 1).
    p_min
        Electron selection: track momentum above this (GeV/c) in Bhabha events.
    """

    kind: str
    run_gain: tuple[tuple[int, int, float], ...] = ()
    cosine: tuple[float, ...] = ()
    wire_gain: tuple[float, ...] = ()
    p_min: float = 2.0
    version: ClassVar[int] = 1

    @property
    def branches(self) -> dict[str, str]:
        return dict(_BRANCHES)

    def prepare(self) -> None:
        """Load the compiled hit check and hit fill (forked workers inherit them)."""
        prepare_hit_check()
        # the types of collect's arguments: the branches as read, the tables, the storages
        i, f = np.zeros(0, np.int64), np.zeros(0)
        i8, i16, f32 = i.astype(np.int8), i.astype(np.int16), f.astype(np.float32)
        _fill_hits(
            i, i, i16, i > 0, i16, i8, i16, i16, f32, i, f, f, i, np.zeros((3, 1)), i, 1,
            np.array(HIT_BINS, dtype=np.float64), i,
        )  # fmt: skip

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        return self._collect(events, compiled_kernel=True)

    def _collect(self, events: ak.Array, *, compiled_kernel: bool) -> dict[str, hist.Hist]:
        """The histograms of :attr:`kind`: their hits filled by one compiled pass
        (:func:`_fill_hits`) with ``compiled_kernel``, else from the flat per-hit arrays of
        :func:`_tracks_and_hits`: the same values in the same order, so the same histograms,
        bit for bit."""
        if self.kind not in ("run", "cosine", "wire"):
            raise ValueError(f"DedxCollector kind must be run, cosine or wire, not {self.kind!r}")
        if compiled_kernel:
            return self._collect_compiled(events)
        d = _tracks_and_hits(events, self.p_min)
        cosine = self._cosine()
        h_cos = cosine[d["h_cos_bin"]]
        t_cos = cosine[d["t_cos_bin"]]
        if self.kind == "run":
            gain = self._hit_gains(d["h_wire"])
            track = hist.Hist(
                hist.axis.Regular(*TRACK_BINS, name="dedx", label="truncated mean / cosine"),
                storage=hist.storage.Int64(),
            )
            fill_1d(track.view(flow=True), d["t_trunc"] / t_cos, TRACK_BINS)
            hit = hist.Hist(hist.axis.Regular(1, 0, 1, name="all"), storage=hist.storage.Mean())
            _fill_mean(hit, np.zeros(len(d["h_dedx"]), np.int64), d["h_dedx"] / (h_cos * gain))
            return {"dedx_run_track": track, "dedx_run_hit": hit}
        if self.kind == "cosine":
            gain = self._hit_gains(d["h_wire"])
            rg_t = _per_run(d["t_exp"], d["t_run"], self.run_gain)
            rg_h = _per_run(d["exp"], d["run"], self.run_gain)[d["h_track"]]
            track = hist.Hist(
                hist.axis.Regular(*COS_AXIS, name="cos", label="cos(theta)"),
                hist.axis.Regular(*TRACK_BINS, name="dedx", label="truncated mean / run gain"),
                storage=hist.storage.Int64(),
            )
            fill_2d(track.view(flow=True), d["t_cos"], d["t_trunc"] / rg_t, COS_AXIS, TRACK_BINS)
            hit = hist.Hist(
                hist.axis.Regular(*COS_AXIS, name="cos", label="cos(theta)"),
                storage=hist.storage.Mean(),
            )
            _fill_mean(hit, d["h_cos_bin"], d["h_dedx"] / (rg_h * gain))
            return {"dedx_cos_track": track, "dedx_cos_hit": hit}
        if self.kind == "wire":
            rg_h = _per_run(d["exp"], d["run"], self.run_gain)[d["h_track"]]
            h = hist.Hist(
                hist.axis.Regular(*WIRE_AXIS, name="wire", label="wire"),
                hist.axis.Regular(*HIT_BINS, name="dedx", label="hit dE/dx / (run * cosine)"),
                storage=hist.storage.Int64(),
            )
            fill_2d(
                h.view(flow=True), d["h_wire"], d["h_dedx"] / (rg_h * h_cos), WIRE_AXIS, HIT_BINS
            )
        return {"dedx_wire_hit": h}

    def _collect_compiled(self, events: ak.Array) -> dict[str, hist.Hist]:
        """:meth:`_collect` with one compiled pass over the hits (:func:`_fill_hits`): the
        factors each hit's value is divided by are looked up per track and per wire, not
        gathered into arrays of every hit's; the tracks in their flat order (the track
        histograms count, the order of their entries does not matter)."""
        ntrk = ak.to_numpy(ak.num(events["CDCDedxTracks_m_trackIndex"])).astype(np.int64)
        nhit = ak.to_numpy(ak.num(events["CDCHits_m_layer"])).astype(np.int64)
        flat = {k: ak.to_numpy(ak.flatten(events[k])) for k in _BRANCHES if k.startswith("CDC")}
        sel = flat["CDCDedxTracks_m_p"] > self.p_min
        check_hits(nhit, flat["CDCHits_m_layer"], flat["CDCHits_m_wire"])  # before the tables
        cos_t = flat["CDCDedxTracks_m_cosTheta"].astype(np.float64)
        cbin_t = cos_bin(cos_t)
        trunc = flat["CDCDedxTracks_m_dedxAvgTruncated"].astype(np.float64)
        t_cos = self._cosine()[cbin_t]
        if self.kind != "run":
            evt_t = np.repeat(np.arange(len(events)), ntrk)
            exp = ak.to_numpy(events["EventMetaData_m_experiment"])[evt_t]
            rg_t = _per_run(exp, ak.to_numpy(events["EventMetaData_m_run"])[evt_t], self.run_gain)
        out: dict[str, hist.Hist]
        hit: hist.Hist
        if self.kind == "run":
            track = hist.Hist(
                hist.axis.Regular(*TRACK_BINS, name="dedx", label="truncated mean / cosine"),
                storage=hist.storage.Int64(),
            )
            fill_1d(track.view(flow=True), trunc[sel] / t_cos[sel], TRACK_BINS)
            hit = hist.Hist(hist.axis.Regular(1, 0, 1, name="all"), storage=hist.storage.Mean())
            out = {"dedx_run_track": track, "dedx_run_hit": hit}
            t_factor, w_factor, t_bin = t_cos, self._wire_gains(), np.zeros(len(sel), np.int64)
        elif self.kind == "cosine":
            track = hist.Hist(
                hist.axis.Regular(*COS_AXIS, name="cos", label="cos(theta)"),
                hist.axis.Regular(*TRACK_BINS, name="dedx", label="truncated mean / run gain"),
                storage=hist.storage.Int64(),
            )
            fill_2d(track.view(flow=True), cos_t[sel], trunc[sel] / rg_t[sel], COS_AXIS, TRACK_BINS)
            hit = hist.Hist(
                hist.axis.Regular(*COS_AXIS, name="cos", label="cos(theta)"),
                storage=hist.storage.Mean(),
            )
            out = {"dedx_cos_track": track, "dedx_cos_hit": hit}
            t_factor, w_factor, t_bin = rg_t, self._wire_gains(), cbin_t
        else:
            hit = hist.Hist(
                hist.axis.Regular(*WIRE_AXIS, name="wire", label="wire"),
                hist.axis.Regular(*HIT_BINS, name="dedx", label="hit dE/dx / (run * cosine)"),
                storage=hist.storage.Int64(),
            )
            out = {"dedx_wire_hit": hit}
            # rg * cos per track is the product the numpy path forms per hit; x * 1.0 is x
            t_factor, w_factor, t_bin = rg_t * t_cos, np.ones(cdc.N_WIRES), cbin_t
        means = hit.storage_type is hist.storage.Mean
        view: Any = hit.view(flow=not means)
        sums = (
            np.stack([view[k] for k in ("count", "value", "_sum_of_deltas_squared")])
            if means
            else np.zeros((3, 0))
        )
        _fill_hits(
            ntrk,
            nhit,
            flat["CDCDedxTracks_m_trackIndex"],
            sel,
            flat["CDCHits_m_trackIndex"],
            flat["CDCHits_m_layer"],
            flat["CDCHits_m_wire"],
            flat["CDCHits_m_adcCount"],
            flat["CDCHits_m_pathLength"],
            cdc.LAYER_FIRST,
            t_factor,
            w_factor,
            np.asarray(t_bin, dtype=np.int64),
            sums,
            # the column-major storage as a flat array (a view)
            np.zeros(0, np.int64) if means else view.T.reshape(-1),
            view.shape[0],
            np.array(HIT_BINS, dtype=np.float64),
            np.zeros(0, np.int64) if means else np.empty(len(flat["CDCHits_m_layer"]), np.int64),
        )
        if means:
            view["count"], view["value"], view["_sum_of_deltas_squared"] = sums
        return out

    def _cosine(self) -> F:
        """The current correction per cos(theta) bin (1 where unknown)."""
        return np.asarray(self.cosine, dtype=np.float64) if self.cosine else np.ones(N_COS)

    def _wire_gains(self) -> F:
        """The current gain of each wire (1 where unknown, not positive or not finite)."""
        if not self.wire_gain:
            return np.ones(cdc.N_WIRES)
        wg = np.asarray(self.wire_gain, dtype=np.float64)
        return np.where(np.isfinite(wg) & (wg > 0), wg, 1.0)

    def _hit_gains(self, wire: npt.NDArray[np.int64]) -> F:
        """The current gain of each hit's wire (1 where unknown, not positive or not finite)."""
        if not self.wire_gain:
            return np.ones(len(wire))
        return self._wire_gains()[wire]


def _run_gains(constants: Constants, runs: Sequence[RunKey]) -> tuple[tuple[int, int, float], ...]:
    out = []
    for e, r in runs:
        p = constants.require(RUN_GAIN_PAYLOAD, e, r)
        out.append((int(e), int(r), float(p.value("value")[0])))
    return tuple(out)


def _cosine(constants: Constants, run: RunKey) -> tuple[float, ...]:
    p = constants.get(COSINE_PAYLOAD, *run)
    if p is None:
        return ()
    values = np.asarray(p.value("value"), dtype=np.float64)
    return tuple(np.where(np.isfinite(values) & (values > 0), values, 1.0).tolist())


def _wire_gain(constants: Constants, run: RunKey) -> tuple[float, ...]:
    p = constants.get(WIRE_GAIN_PAYLOAD, *run)
    if p is None:
        return ()
    out = np.ones(cdc.N_WIRES)
    out[np.asarray(p.keys["wire"], dtype=np.int64)] = p.value("value")
    return tuple(out.tolist())


def run_collector(constants: Constants, runs: Sequence[RunKey]) -> DedxCollector:
    """Run-gain collector with the previous cosine correction and wire gains."""
    return DedxCollector("run", (), _cosine(constants, runs[0]), _wire_gain(constants, runs[0]))


def cosine_collector(constants: Constants, runs: Sequence[RunKey]) -> DedxCollector:
    """Cosine collector with the run gains of ``cdc-dedx-run-gain``."""
    return DedxCollector("cosine", _run_gains(constants, runs), (), _wire_gain(constants, runs[0]))


def wire_collector(constants: Constants, runs: Sequence[RunKey]) -> DedxCollector:
    """Wire-gain collector with the new run gains and cosine correction."""
    cos = _cosine(constants, runs[0])
    if not cos:
        constants.require(COSINE_PAYLOAD, *runs[0])
    return DedxCollector("wire", _run_gains(constants, runs), cos, ())


def peak_window(
    h: hist.Hist, min_entries: int, window: float
) -> tuple[ChannelFits, tuple[float, float] | None]:
    """The first step of :func:`_peak`: the Gaussian fit of a 1-D histogram on its whole axis
    (at least ``min_entries``) and the bin range within ``window`` fitted widths of its peak
    (``None`` when the fit failed). Deterministic: the drill-down finds the window of a stored
    histogram with it."""
    h2: hist.Hist = hist.Hist(hist.axis.Regular(1, -0.5, 0.5), h.axes[0])
    h2.view()[...] = h.values().reshape(1, -1)
    fits = fit_channels(h2, min_entries=min_entries)
    if not fits.ok[0]:
        return fits, None
    mu, sigma = float(fits.values["mu"][0]), float(fits.values["sigma"][0])
    edges = h.axes[0].edges
    lo = edges[max(int(np.searchsorted(edges, mu - window * sigma)) - 1, 0)]
    hi = edges[min(int(np.searchsorted(edges, mu + window * sigma)), len(edges) - 1)]
    return fits, (float(lo), float(hi))


def _peak(h: hist.Hist, min_entries: int, window: float) -> ChannelFits:
    """Gaussian fit of a 1-D histogram: on the whole axis (at least ``min_entries``), then within
    ``window`` fitted widths of the peak (the tails of the truncated-mean distribution are not
    Gaussian)."""
    fits, fit_range = peak_window(h, min_entries, window)
    if fit_range is None:
        return fits
    h2: hist.Hist = hist.Hist(hist.axis.Regular(1, -0.5, 0.5), h.axes[0])
    h2.view()[...] = h.values().reshape(1, -1)
    # the threshold applies to the sample (checked by the first fit), not to its core within
    # the window: re-applying it failed samples just above the threshold instead of fitting them
    return fit_channels(h2, value_range=fit_range, min_entries=0)


def _scale(
    track: hist.Hist, hit_sum: float, hit_sum2: float, hit_n: float, window: float
) -> tuple[float, float]:
    """The factor K (Gaussian-fitted truncated mean / mean hit dE/dx) of pooled input and its
    relative uncertainty."""
    fits = _peak(track, 10, window)
    mu, mu_err = float(fits.values["mu"][0]), float(fits.errors["mu"][0])
    mean = hit_sum / hit_n
    var = hit_sum2 / hit_n - mean**2
    rel = np.hypot(mu_err / mu, np.sqrt(max(var, 0.0) / hit_n) / mean)
    return mu / mean, float(rel)


def _k_factor(per_run: RunOutput, min_tracks: int, window: float) -> tuple[float, float]:
    """K (Gaussian-fitted truncated mean / mean hit dE/dx) and its relative uncertainty: the
    weighted mean of the per-run ratios over every input run with ``min_tracks`` tracks (per run,
    so that the run-to-run gain variation does not widen the fitted distribution); the pooled
    input when no run has enough tracks."""
    tracks = [per_run[r]["dedx_run_track"] for r in per_run if "dedx_run_track" in per_run[r]]
    hits = [per_run[r]["dedx_run_hit"] for r in per_run if "dedx_run_track" in per_run[r]]
    key = hashlib.sha1(
        b"".join(
            np.asarray(h.view(flow=True)).tobytes()  # every field (counts, sums) of the storage
            for pair in zip(tracks, hits, strict=True)
            for h in pair
        )
    ).hexdigest()
    key += f"{min_tracks}/{window}"
    if key in _K_CACHE:
        return _K_CACHE[key]
    ratios, weights = [], []
    for t, hh in zip(tracks, hits, strict=True):
        if t.sum() < min_tracks:
            continue
        fit = _peak(t, min_tracks, window)
        n, mean, var = mean_view(hh)
        if not fit.ok[0] or n[0] < 2:
            continue
        mu, mu_err = float(fit.values["mu"][0]), float(fit.errors["mu"][0])
        ratio = mu / float(mean[0])
        # the two are positively correlated (same hits): adding in quadrature is conservative
        rel = np.hypot(mu_err / mu, np.sqrt(var[0] / n[0]) / mean[0])
        ratios.append(ratio)
        weights.append(1.0 / (ratio * rel) ** 2)
    if ratios:
        w = np.asarray(weights)
        k = float(np.sum(w * np.asarray(ratios)) / w.sum())
        result = (k, float(1.0 / np.sqrt(w.sum()) / k))
    else:
        pooled = per_run.merged()
        s, s2, nh = mean_sums(pooled["dedx_run_hit"])
        result = _scale(pooled["dedx_run_track"], float(s[0]), float(s2[0]), float(nh[0]), window)
    if len(_K_CACHE) > 16:
        _K_CACHE.clear()
    _K_CACHE[key] = result
    return result


#: K of an input, computed once for all the executions over it (a pure function's memo).
_K_CACHE: dict[str, tuple[float, float]] = {}


class RunGainAlgorithm(Algorithm):
    """Run gain: Gaussian fit of the track truncated means, absolute via the mean hit dE/dx."""

    name = "cdc_dedx_run_gain"
    payloads = (RUN_GAIN_PAYLOAD,)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        (h,) = require(data, "dedx_run_track", min_entries=cfg["min_tracks"], counted="tracks")
        window = cfg["fit_window_sigma"]
        k, k_rel = _k_factor(data.per_run, cfg["min_tracks"], window)
        fits = _peak(h, cfg["min_tracks"], window)
        if not fits.ok[0]:
            return AlgorithmResult(
                AlgorithmStatus.FAILURE,
                message=f"runs {data.runs[0]}..{data.runs[-1]}: Gaussian fit failed "
                f"({fits.reason[0]})",
            )
        mu, err = float(fits.values["mu"][0]), float(fits.errors["mu"][0])
        gain = mu / k
        error = gain * float(np.hypot(err / mu, k_rel))
        diagnostics = Diagnostics(histograms={"track_truncated_mean": h})
        diagnostics.add_fits("run_fit", fits, np.arange(1))
        payload = channel_payload(
            RUN_GAIN_PAYLOAD,
            {},
            np.array([gain]),
            np.array([error]),
            units="1",
            description="run gain of the dE/dx scale",
            provenance={
                "method": "Gaussian fit of Bhabha track truncated means / K",
                "K": k,
                "K_rel_error": k_rel,
                "tracks": float(h.sum()),
            },
        )
        return AlgorithmResult(
            AlgorithmStatus.OK, [payload], diagnostics, f"gain {gain:.4f} +- {error:.4f}"
        )


def run_gain_calibration() -> Calibration:
    """``cdc-dedx-run-gain``: CDCDedxRunGain per run (runs merged when short of tracks)."""
    return Calibration(
        name="cdc-dedx-run-gain",
        validation=PayloadComparison(
            max_pull=None, max_rel_change=0.1, error_outlier_fraction=1.0
        ),  # one gain per run, which moves by design: a warning at most
        expert="cdc-dedx@b2calib.example",
        inputs={"bhabha": CollectorInput(run_collector, ("hlt_bhabha",))},
        algorithms=[RunGainAlgorithm()],
        strategy=SequentialRunByRun(),
        run_type="physics",
        expert_config={"min_tracks": 200, "fit_window_sigma": 2.5},
        description="dE/dx run gain: Gaussian fit per run of the Bhabha electrons' truncated "
        "means with the previous cosine correction; absolute scale from the mean hit dE/dx; "
        "runs with too few tracks are merged with the next.",
        fit_views={RUN_GAIN_PAYLOAD: fitviews.RUN_GAIN_VIEW},
    )


class CosineAlgorithm(Algorithm):
    """Cosine correction: mean hit dE/dx / (run gain * wire gain) per cos(theta) bin.

    The per-bin mean of the hits is used rather than per-bin fits of track truncated means:
    the truncated mean's ratio to the mean depends on the number of hits per track, which
    changes with cos(theta), so truncated means would fold the track length into the
    correction. The Gaussian fits of the truncated means are kept in the diagnostics.
    """

    name = "cdc_dedx_cosine"
    payloads = (COSINE_PAYLOAD,)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        h, hh = require(data, "dedx_cos_track", "dedx_cos_hit", message="no hits")
        n, mean, var = mean_view(hh)
        if n.sum() < cfg["min_hits_per_bin"] * N_COS / 4:
            raise NotEnoughData("too few hits")
        ok = n >= cfg["min_hits_per_bin"]
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(ok, mean, np.nan)
            error = np.where(ok, np.sqrt(var / n), np.nan)
        status = np.where(ok, ChannelStatus.OK, ChannelStatus.NOT_ENOUGH_DATA).astype(np.int8)
        if ok.sum() < 2:
            raise NotEnoughData("< 2 bins filled")
        fits = fit_channels(h, min_entries=cfg["min_hits_per_bin"] // 20)
        diagnostics = Diagnostics(histograms={"cos_truncated_mean": h})
        diagnostics.add_fits("truncated_mean_fits", fits, np.arange(N_COS))
        diagnostics.tables["cos_bins"] = {
            "bin": np.arange(N_COS),
            "hits": n,
            "value": value,
            "error": error,
            "status": status,
        }
        payload = channel_payload(
            COSINE_PAYLOAD,
            {"bin": np.arange(N_COS, dtype=np.int16)},
            {"cos_lo": COS_EDGES[:-1], "cos_hi": COS_EDGES[1:], "value": value},
            error,
            status,
            units="1",
            description="dE/dx correction in bins of cos(theta)",
            provenance={"method": "mean hit dE/dx / (run gain * wire gain) per bin"},
        )
        return AlgorithmResult(
            AlgorithmStatus.OK, [payload], diagnostics, f"{int(ok.sum())}/{N_COS} bins filled"
        )


def cosine_calibration() -> Calibration:
    """``cdc-dedx-cosine``: CDCDedxCosineCor in 100 bins of cos(theta), after the run gain."""
    return Calibration(
        name="cdc-dedx-cosine",
        validation=PayloadComparison(columns=("value",), max_rel_change=0.05),
        expert="cdc-dedx@b2calib.example",
        inputs={"bhabha": CollectorInput(cosine_collector, ("hlt_bhabha",))},
        algorithms=[CosineAlgorithm()],
        strategy=SingleIOV(),
        run_type="physics",
        depends_on=("cdc-dedx-run-gain",),
        expert_config={"min_hits_per_bin": 2000},
        description="dE/dx cos(theta) correction in 100 bins: mean hit dE/dx of Bhabha "
        "electrons over run gain and wire gain (absolute: the hit fluctuation has mean 1).",
        fit_views={COSINE_PAYLOAD: fitviews.COSINE_VIEW},
    )


def _layer_means(value: F, ok: npt.NDArray[np.bool_], layer: npt.NDArray[np.int64]) -> F:
    """Mean of ``value`` over the ``ok`` wires of each layer (over all ``ok`` wires for a layer
    without any)."""
    count = np.bincount(layer[ok], minlength=cdc.N_LAYERS)
    total = np.bincount(layer[ok], weights=value[ok], minlength=cdc.N_LAYERS)
    pooled = float(np.mean(value[ok]))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, pooled)


def _expected_resolution(
    tm: F, tm_err: F, n: F, ok: npt.NDArray[np.bool_], layer: npt.NDArray[np.int64]
) -> F:
    """Expected relative uncertainty of each wire's truncated mean, ``R_layer / sqrt(n)``.

    A wire's own error (from the winsorised spread of its hits) is correlated with its
    truncated mean: the hit distribution is skewed, so a sample that fluctuated low has a
    smaller spread too, and a pull with that error is biased (low values get small errors,
    large negative pulls). The relative resolution ``R = sqrt(n) * error / mean`` is a property
    of the fluctuation's shape, common to the wires of a layer: it is pooled over the layer's
    ``ok`` wires (``R^2`` averaged), so that one wire's fluctuation hardly enters its error.
    """
    rel2n = np.where(ok, n * (tm_err / np.where(ok, tm, 1.0)) ** 2, 0.0)
    count = np.bincount(layer[ok], minlength=cdc.N_LAYERS)
    total = np.bincount(layer, weights=rel2n, minlength=cdc.N_LAYERS)
    pooled = float(np.sum(rel2n) / max(int(ok.sum()), 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(count > 0, total / np.maximum(count, 1), pooled)
        return np.sqrt(r2[layer] / n)


class WireGainAlgorithm(Algorithm):
    """Wire gain: 5-75 % truncated mean per wire, normalised to average 1 over live wires.

    Uncertainty: the expected one, not the one of each wire's own hits. It is the layer's
    relative resolution of the truncated mean at the wire's number of hits
    (:func:`_expected_resolution`) times the layer's mean gain, with the normalisation's noise
    in quadrature. Neither factor follows the wire's own fluctuation: an error taken from the
    wire's hit spread follows its truncated mean (a skewed distribution; pulls were biased by
    -0.04 overall and by -0.2 to +0.15 in quartiles of the quoted error), and even an error
    proportional to the wire's measured gain biases the pulls by about minus the relative
    error (small measured values, small errors). The price: a wire whose gain is x % off its
    layer's mean quotes an error x % too large or too small.
    """

    name = "cdc_dedx_wire_gain"
    payloads = (WIRE_GAIN_PAYLOAD,)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        (h,) = require(
            data,
            "dedx_wire_hit",
            min_entries=cfg["min_hits"] * cdc.N_WIRES / 4,
            message="too few hits",
        )
        counts = h.values().astype(np.float64)
        above = h.view(flow=True)[1:-1, -1].astype(np.float64)
        lo, hi = cfg["truncation"]
        tm, tm_err, n = truncated_means(counts, h.axes[1].edges, lo, hi, above)
        layer = cdc.layer_of(np.arange(cdc.N_WIRES))
        layer_mean = np.bincount(layer, weights=n) / cdc.LAYER_NWIRES
        dead = (n == 0) & (layer_mean[layer] >= cfg["dead_layer_mean"])
        ok = (n >= cfg["min_hits"]) & np.isfinite(tm) & (tm > 0)
        if ok.sum() < 2:
            raise NotEnoughData("< 2 wires with hits")
        norm = float(np.mean(tm[ok]))
        value = tm / norm
        rel = _expected_resolution(tm, tm_err, n, ok, layer)
        # the normalisation's own noise (the wires' gains average 1 by definition: the spread of
        # the gains is not an uncertainty of the relative gains)
        norm_rel = float(np.sqrt(np.sum(rel[ok] ** 2))) / ok.sum()
        layer_gain = _layer_means(value, ok, layer)
        error = layer_gain[layer] * np.hypot(rel, norm_rel)
        status = np.where(ok, ChannelStatus.OK, ChannelStatus.NOT_ENOUGH_DATA).astype(np.int8)
        value[~ok] = np.nan
        error[~ok] = np.nan
        status[dead] = ChannelStatus.DEAD
        value[dead] = 0.0
        # the hit spectra of the most extreme wires, for a look at them
        score = np.where(ok, np.abs(value - 1.0) / error, -1.0)
        extreme = np.sort(np.argsort(score)[::-1][: cfg["keep_extreme_wires"]])
        spectra: hist.Hist = hist.Hist(
            hist.axis.Integer(0, len(extreme), name="index", label="extreme wire index"),
            h.axes[1],
            storage=hist.storage.Double(),
        )
        spectra.view()[...] = counts[extreme]
        diagnostics = Diagnostics(
            histograms={"extreme_wires": spectra},
            tables={
                "extreme_wires": {"wire": extreme.astype(np.int64)},
                "wire_gain": {
                    "wire": np.arange(cdc.N_WIRES),
                    "truncated_mean": tm,
                    "truncated_mean_err": tm_err,
                    "entries": n,
                    "status": status,
                },
            },
        )
        payload = channel_payload(
            WIRE_GAIN_PAYLOAD,
            {"wire": np.arange(cdc.N_WIRES, dtype=np.int32)},
            value,
            error,
            status,
            units="1",
            description="relative wire gain: raw dE/dx = true * wire * run * cosine; 0 = dead",
            provenance={
                "method": f"{lo:.0%}-{hi:.0%} truncated mean per wire / mean over wires; "
                "error: the layer's resolution at the wire's hits times the layer's mean gain",
                "normalisation": norm,
            },
        )
        msg = ", ".join(f"{k} {v}" for k, v in status_counts(status).items())
        return AlgorithmResult(AlgorithmStatus.OK, [payload], diagnostics, msg)


def wire_gain_calibration() -> Calibration:
    """``cdc-dedx-wire-gain``: CDCDedxWireGain per wire, after run gain and cosine."""
    return Calibration(
        name="cdc-dedx-wire-gain",
        validation=PayloadComparison(
            columns=("value",), max_rel_change=0.2
        ),  # wire gains ~1, a few hundred hits a wire
        expert="cdc-dedx@b2calib.example",
        inputs={"bhabha": CollectorInput(wire_collector, ("hlt_bhabha",))},
        algorithms=[WireGainAlgorithm()],
        strategy=SingleIOV(),
        run_type="physics",
        depends_on=("cdc-dedx-run-gain", "cdc-dedx-cosine"),
        expert_config={
            "min_hits": 50,
            "truncation": [0.05, 0.75],
            "dead_layer_mean": 20.0,
            "keep_extreme_wires": 12,
        },
        description="dE/dx wire gain: 5-75 % truncated mean of the Bhabha electrons' hit dE/dx "
        "per wire over run gain and cosine correction, normalised to average 1 over live wires.",
        fit_views={WIRE_GAIN_PAYLOAD: fitviews.WIRE_GAIN_VIEW},
    )


def __dir__() -> list[str]:
    return __all__
