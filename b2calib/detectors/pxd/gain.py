"""PXD gain map (``pxd-gain``, PXDGainMapPar) from the charge of track clusters in Bhabha events
(basf2 PXDPerformanceCollector / PXDAnalyticGainCalibrationAlgorithm, median strategy with the
charge-ratio histograms).

Convention (the truth payload's): ``raw charge = true charge * gain`` in each of 4 x 6 (u, v)
bins of every sensor; PXDGainMapPar keyed by (sensorID, ubin, vbin), ``ubin = u * 4 // 250``,
``vbin = v * 6 // 768`` of the cluster's seed pixel.

Method
------
Collector: every PXD cluster on a track of p >= 1 GeV/c (``PXDClusters`` with
``m_trackIndex``; basf2's ``e+:gain`` list) with charge >= 8 ADU and size 1-10 pixels (basf2's
cuts; the collector's ``min_momentum``, ``min_charge``, ``min_size``, ``max_size``) is matched
to its track's intercept with the sensor (``PXDIntercepts``: same event, track and sensor),
which gives the path length in the sensor, ``thickness * sqrt(1 + u'^2 + v'^2)`` (basf2:
``thickness / cos(theta_local)``). The expected charge of the cluster is

    ``expected = MIP_MEDIAN_ADU * path / thickness * current gain of its bin``

(basf2's ``chargeMPV = getDeltaP(p, length) / ADUToEnergy``, the current gain inside
``ADUToEnergy``); its ratio ``charge / expected`` is histogrammed per bin (400 bins over 0-4,
basf2's ``PXDClusterChargeRatio``). ``MIP_MEDIAN_ADU`` is the median cluster charge of a MIP
crossing a sensor perpendicularly at gain 1: the Landau MPV (32.4 ADU) times the median-to-MPV
ratio of the simulated charge distribution (1.146), so that the median ratio is the gain
relative to the current one (basf2 takes its MPV from its MC; the median strategy then measures
gains relative to that). The momentum dependence of the MPV (relativistic rise) is left out:
Bhabha electrons are on the plateau.

Algorithm: per bin with >= ``min_clusters`` clusters, ``gain = median(ratio) x current gain``
(the current gain averaged over the input runs, as basf2 averages its ``dbtree``); the median
is interpolated in the ratio histogram and its error is the asymptotic error of a median,
``1 / (2 f sqrt(n))``, the density ``f`` at the median from the 40 % and 60 % quantiles (order
statistics; ``1.2533 sigma / sqrt(n)`` for a Gaussian; a wider window below 100 clusters),
times the current gain. A bin with enough clusters but no valid median (no spread) is FAILED,
with the fallback value. A bin with fewer clusters falls back to the mean of the measured bins
of its sensor's v row (status NOT_ENOUGH_DATA, ``fallback`` = 1, error the spread of those
bins), else to 1.0 (NOT_ENOUGH_DATA, ``fallback`` = 2, no error); basf2's extra fill of the
forward v bins from the nearest measured one (``correctForward``) is not done. The execution is
NOT_ENOUGH_DATA when no bin is measured or when the clusters number fewer than
``safety_factor x min_clusters x 960`` (basf2's ``safetyFactor``; the prompt calibration uses
11, ~2.1M clusters). Payloads: SequentialBoundaries at the ``payload_boundaries`` of the expert
config (known gain retunes), else one payload for the runs.

What the simulation gives
-------------------------
Bhabha tracks reach ~57 % of the 960 bins (not the backward parts of the sensors): the others
come out 1.0, flagged. A cluster that lost a dead pixel has less charge; the gains absorb it
(~-0.05 %, a tenth of the error at ~4000 clusters a bin).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

import awkward as ak
import hist
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
    SequentialBoundaries,
)
from b2calib.calibration.fitview import NoChannelFit
from b2calib.calibration.toolkit import NotEnoughData, channel_payload, guarded, require
from b2calib.conditions import ChannelStatus
from b2calib.conditions.iov import RunKey
from b2calib.engine import Collector
from b2calib.exceptions import CalibrationError
from b2calib.geometry import B_FIELD_T, vxd

__all__ = [
    "GAIN_PAYLOAD",
    "MIP_MEDIAN_ADU",
    "N_BINS",
    "RATIO_BINS",
    "PXDGainAlgorithm",
    "PXDGainCollector",
    "bin_keys",
    "bin_of",
    "current_gains",
    "fill_fallbacks",
    "gain_calibration",
    "histogram_median",
]

F = npt.NDArray[np.float64]
IA = npt.NDArray[np.int64]

GAIN_PAYLOAD = "PXDGainMapPar"
_NU, _NV = vxd.PXD_GAIN_BINS_U, vxd.PXD_GAIN_BINS_V
#: Gain bins: 40 sensors x 4 u bins x 6 v bins, in the order (sensor, ubin, vbin).
N_BINS = vxd.N_PXD_SENSORS * _NU * _NV
#: Charge-ratio binning (basf2's PXDClusterChargeRatio: 400 bins over 0-4).
RATIO_BINS = (400, 0.0, 4.0)
#: Median cluster charge (ADU) of a MIP crossing a sensor perpendicularly at gain 1: the Landau
#: MPV 32.38 ADU times the median-to-MPV ratio 1.1460 of the simulated charge distribution.
MIP_MEDIAN_ADU = 37.103
#: 1/R[cm] = factor * B[T] / pt[GeV]
_BFIELD_FACTOR = 0.0029979246
#: Half the quantile window of the density at the median from 100 entries on (the 40 % and
#: 60 % quantiles).
_H = 0.1

DEFAULT_CONFIG: dict[str, Any] = {
    "min_clusters": 200,
    "safety_factor": 11.0,
    "payload_boundaries": [],
}

CLUSTER_BRANCHES = {
    "EventMetaData_m_experiment": "int32",
    "EventMetaData_m_run": "int32",
    "PXDClusters_m_sensorID": "var * uint16",
    "PXDClusters_m_uCellID": "var * int16",
    "PXDClusters_m_vCellID": "var * int16",
    "PXDClusters_m_charge": "var * int16",
    "PXDClusters_m_size": "var * int8",
    "PXDClusters_m_trackIndex": "var * int16",
    "PXDIntercepts_m_sensorID": "var * uint16",
    "PXDIntercepts_m_coorUprime": "var * float32",
    "PXDIntercepts_m_coorVprime": "var * float32",
    "PXDIntercepts_m_trackIndex": "var * int16",
    "TrackFitResults_m_omega": "var * float32",
    "TrackFitResults_m_tanLambda": "var * float32",
}


def bin_of(sensor_id: npt.ArrayLike, u: npt.ArrayLike, v: npt.ArrayLike) -> IA:
    """Gain bin 0..959 of pixels (VxdID, u cell, v cell): ``(sensor * 4 + ubin) * 6 + vbin``."""
    s = vxd.sensor_index(np.asarray(sensor_id), "PXD").astype(np.int64)
    ub = np.asarray(u, dtype=np.int64) * _NU // vxd.PXD_NU
    vb = np.asarray(v, dtype=np.int64) * _NV // vxd.PXD_NV
    return np.asarray((s * _NU + ub) * _NV + vb)


def bin_keys() -> dict[str, npt.NDArray[Any]]:
    """The key columns of PXDGainMapPar (sensorID, ubin, vbin), in bin order."""
    gi = np.indices((vxd.N_PXD_SENSORS, _NU, _NV)).reshape(3, -1)
    return {
        "sensorID": vxd.PXD_IDS[gi[0]].astype(np.int32),
        "ubin": gi[1].astype(np.int8),
        "vbin": gi[2].astype(np.int8),
    }


def _flat(events: ak.Array, name: str) -> npt.NDArray[Any]:
    return ak.to_numpy(ak.flatten(events[name]))


@dataclasses.dataclass(frozen=True, eq=False)
class PXDGainCollector(Collector):
    """Charge ratio of track clusters per gain bin (see the module doc).

    ``runs`` maps (exp, run) to the index of its current gains ``gains[i]`` (960, bin order);
    ``key`` is their digest. Histograms ``clusters`` (bin: clusters selected) and
    ``charge_ratio`` (bin x charge / expected charge).
    """

    runs: tuple[tuple[int, int, int], ...] = ()
    gains: tuple[F, ...] = ()
    key: str = ""
    min_charge: int = 8
    min_size: int = 1
    max_size: int = 10
    min_momentum: float = 1.0
    version: ClassVar[int] = 2

    @property
    def branches(self) -> dict[str, str]:
        return dict(CLUSTER_BRANCHES)

    def _gains(self, run: RunKey) -> F:
        for exp, r, i in self.runs:
            if (exp, r) == run:
                return np.asarray(self.gains[i])
        return np.ones(N_BINS)

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        gains = self._gains(_run_of(events))
        ncl = ak.to_numpy(ak.num(events["PXDClusters_m_sensorID"]))
        nic = ak.to_numpy(ak.num(events["PXDIntercepts_m_sensorID"]))
        cl_evt = np.repeat(np.arange(len(events), dtype=np.int64), ncl)
        ic_evt = np.repeat(np.arange(len(events), dtype=np.int64), nic)
        sensor = _flat(events, "PXDClusters_m_sensorID").astype(np.int64)
        charge = _flat(events, "PXDClusters_m_charge").astype(np.float64)
        size = _flat(events, "PXDClusters_m_size").astype(np.int64)
        track = _flat(events, "PXDClusters_m_trackIndex").astype(np.int64)
        sel = (track >= 0) & (charge >= self.min_charge)
        sel &= (size >= self.min_size) & (size <= self.max_size)
        # the track's momentum (basf2's e+:gain list, p > 1 GeV/c; no field: not measured)
        ntrk = ak.to_numpy(ak.num(events["TrackFitResults_m_omega"]))
        first = np.concatenate([[0], np.cumsum(ntrk)])[cl_evt]
        on = sel & (track < ntrk[cl_evt])
        omega = _flat(events, "TrackFitResults_m_omega").astype(np.float64)
        tanl = _flat(events, "TrackFitResults_m_tanLambda").astype(np.float64)
        t = np.where(on, first + track, 0)
        with np.errstate(divide="ignore"):
            pt = np.where(omega != 0, _BFIELD_FACTOR * B_FIELD_T / np.abs(omega), np.inf)
        momentum = (pt * np.sqrt(1.0 + tanl**2))[t] if len(omega) else np.zeros(len(t))
        sel = on & (momentum >= self.min_momentum)
        # the track's intercept with the cluster's sensor: same event, track and sensor
        ic_key = _match_key(
            ic_evt,
            _flat(events, "PXDIntercepts_m_trackIndex").astype(np.int64),
            _flat(events, "PXDIntercepts_m_sensorID").astype(np.int64),
        )
        cl_key = _match_key(cl_evt, track, sensor)
        order = np.argsort(ic_key, kind="stable")
        pos = np.clip(np.searchsorted(ic_key[order], cl_key), 0, max(len(ic_key) - 1, 0))
        found = (ic_key[order][pos] == cl_key) if len(ic_key) else np.zeros(len(cl_key), bool)
        sel &= found
        ic = order[pos[sel]]
        up = _flat(events, "PXDIntercepts_m_coorUprime").astype(np.float64)[ic]
        vp = _flat(events, "PXDIntercepts_m_coorVprime").astype(np.float64)[ic]
        b = bin_of(
            sensor[sel],
            _flat(events, "PXDClusters_m_uCellID")[sel],
            _flat(events, "PXDClusters_m_vCellID")[sel],
        )
        expected = MIP_MEDIAN_ADU * np.sqrt(1.0 + up**2 + vp**2) * gains[b]
        ratio = charge[sel] / expected
        bins = hist.axis.Integer(0, N_BINS, name="bin", label="gain bin", flow=False)
        h_n = hist.Hist(bins, storage=hist.storage.Int64())
        h_n.fill(b)
        h_r = hist.Hist(
            bins,
            hist.axis.Regular(*RATIO_BINS, name="ratio", label="charge / expected charge"),
            storage=hist.storage.Int64(),
        )
        h_r.fill(b, ratio)
        return {"clusters": h_n, "charge_ratio": h_r}


def _match_key(evt: IA, track: IA, sensor_id: IA) -> IA:
    return (evt * 4096 + track) * 65536 + (sensor_id & 0xFFFF)


def _run_of(events: ak.Array) -> RunKey:
    """(exp, run) of a chunk (the engine gives one file, so one run, per call)."""
    if len(events) == 0:
        return (0, 0)
    return (int(events["EventMetaData_m_experiment"][0]), int(events["EventMetaData_m_run"][0]))


def current_gains(constants: Constants, run: RunKey) -> F:
    """The gains valid for ``run`` (PXDGainMapPar, bin order), as the collector applies them:
    1 without a payload; a bin without a positive finite value, 1."""
    payload = constants.get(GAIN_PAYLOAD, *run)
    if payload is None:
        return np.ones(N_BINS)
    values = np.asarray(payload.value("value"), dtype=np.float64)
    if len(values) != N_BINS:
        raise CalibrationError(
            f"payload {GAIN_PAYLOAD} for run {run}: {len(values)} rows, expected {N_BINS}"
        )
    return np.where(np.isfinite(values) & (values > 0), values, 1.0)


def _gain_factory(constants: Constants, runs: Sequence[RunKey]) -> PXDGainCollector:
    """The collector with each run's current gains (runs sharing a payload share a set)."""
    sets: list[F] = []
    index: list[tuple[int, int, int]] = []
    for exp, run in sorted(runs):
        g = current_gains(constants, (exp, run))
        same = [i for i, s in enumerate(sets) if np.array_equal(s, g)]
        if not same:
            sets.append(g)
        index.append((exp, run, same[0] if same else len(sets) - 1))
    key = hashlib.sha256(b"".join(np.ascontiguousarray(s).tobytes() for s in sets)).hexdigest()
    return PXDGainCollector(tuple(index), tuple(sets), key if sets else "")


def histogram_median(counts: npt.ArrayLike, edges: npt.ArrayLike) -> tuple[F, F]:
    """Median of each row of a histogram (interpolated within its bin) and its error.

    The error is the asymptotic one of a sample median, ``1 / (2 f sqrt(n))``, with the density
    ``f`` at the median estimated from the quantiles ``0.5 +- h`` (the order statistics around
    the median: Siddiqui's sparsity estimate, ``1 / f = (q(0.5 + h) - q(0.5 - h)) / 2h``),
    ``h = 0.1`` from 100 entries on, ``1 / sqrt(n)`` below (at most 0.4: fewer entries need a
    wider window); for a Gaussian it is ``1.2533 sigma / sqrt(n)``. Unit pulls from ~20
    entries on, slightly conservative below. Overflow counts (last column of ``counts`` when it
    has one more column than bins) count in n.

    Parameters
    ----------
    counts
        (rows, bins) or (rows, bins + 1) with the overflow last.
    edges
        The bin edges (bins + 1).

    Returns
    -------
    median, error
        Per row; NaN for an empty row.
    """
    c = np.asarray(counts, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    nb = len(e) - 1
    n = c.sum(axis=1)
    median = _quantile(c[:, :nb], e, n * 0.5)
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.clip(1.0 / np.sqrt(n), _H, 0.4)
        spread = _quantile(c[:, :nb], e, n * (0.5 + h)) - _quantile(c[:, :nb], e, n * (0.5 - h))
        error = spread / (4.0 * h * np.sqrt(n))
    empty = n <= 0
    return np.where(empty, np.nan, median), np.where(empty, np.nan, error)


def _quantile(counts: F, edges: F, rank: F) -> F:
    """The value below which ``rank`` entries of each row lie, the entries of a bin spread
    evenly over it. A rank that falls between two bins' entries (the cumulative count equals
    it at an edge, e.g. the median of an even number of entries) takes the middle of the gap
    between the last entry below and the first above, as a sample median does."""
    rank = np.asarray(rank, dtype=np.float64)
    below = _interpolated(counts, edges, rank, after=False)
    above = _interpolated(counts, edges, rank, after=True)
    return np.asarray(0.5 * (below + above))


def _interpolated(counts: F, edges: F, rank: F, *, after: bool) -> F:
    cum = np.cumsum(counts, axis=1)
    # first bin whose cumulative count reaches (after: exceeds) the rank
    reach = cum <= rank[:, None] if after else cum < rank[:, None]
    i = np.minimum(reach.sum(axis=1), counts.shape[1] - 1)
    rows = np.arange(len(counts))
    before = np.where(i > 0, cum[rows, np.maximum(i - 1, 0)], 0.0)
    inside = counts[rows, i]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(inside > 0, (rank - before) / inside, 0.5)
    width = edges[1] - edges[0]
    return np.asarray(edges[i] + np.clip(frac, 0.0, 1.0) * width)


def fill_fallbacks(gain: F, error: F, measured: npt.ArrayLike) -> tuple[F, F, npt.NDArray[Any]]:
    """Gains of the bins not measured: the mean of the measured bins of the same sensor and v
    row (error: their spread, the standard deviation; NaN with one), else 1.0 (no error).

    Returns gain, error and the ``fallback`` code per bin (0 measured, 1 row mean, 2 default).
    """
    ok = np.asarray(measured, dtype=bool).reshape(vxd.N_PXD_SENSORS, _NU, _NV)
    g = np.asarray(gain, dtype=np.float64).reshape(ok.shape)
    err = np.asarray(error, dtype=np.float64).reshape(ok.shape).copy()
    n = ok.sum(axis=1)  # (sensors, v rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, g, 0.0).sum(axis=1) / n
        var = np.where(ok, (g - mean[:, None, :]) ** 2, 0.0).sum(axis=1) / (n - 1)
    spread = np.where(n > 1, np.sqrt(var), np.nan)
    row = np.broadcast_to((n > 0)[:, None, :], ok.shape)
    out = np.where(ok, g, np.where(row, np.broadcast_to(mean[:, None, :], ok.shape), 1.0))
    err = np.where(ok, err, np.where(row, np.broadcast_to(spread[:, None, :], ok.shape), np.nan))
    code = np.where(ok, 0, np.where(row, 1, 2)).astype(np.int8)
    return out.ravel(), err.ravel(), code.ravel()


class PXDGainAlgorithm(Algorithm):
    """Gains per (sensor, u bin, v bin): median charge ratio x current gain (see module doc)."""

    name = "pxd_gain"
    payloads = (GAIN_PAYLOAD,)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        h_n, h_r = require(
            data, "clusters", "charge_ratio", min_entries=1, message="no PXD track clusters"
        )
        counts = h_n.values().astype(np.float64)
        needed = float(cfg["safety_factor"]) * cfg["min_clusters"] * N_BINS
        ratio_counts = h_r.values(flow=True)[:, 1:]  # bins and overflow
        median, median_err = histogram_median(ratio_counts, h_r.axes[1].edges)
        current = np.mean([current_gains(data.constants, r) for r in data.runs], axis=0)
        enough = counts >= cfg["min_clusters"]
        valid = np.isfinite(median) & (median > 0) & np.isfinite(median_err) & (median_err > 0)
        measured = enough & valid
        gain, error, code = fill_fallbacks(median * current, median_err * current, measured)
        status = np.where(
            measured,
            ChannelStatus.OK,
            np.where(enough, ChannelStatus.FAILED, ChannelStatus.NOT_ENOUGH_DATA),
        ).astype(np.int8)
        keys = bin_keys()
        diag = Diagnostics(
            histograms={"clusters": h_n, "charge_ratio": h_r},
            tables={
                "bins": {
                    **{k: v.astype(np.int32) for k, v in keys.items()},
                    "clusters": counts,
                    "median_ratio": median,
                    "median_ratio_err": median_err,
                    "current_gain": current,
                    "gain": gain,
                    "gain_err": error,
                    "fallback": code,
                    "status": status,
                }
            },
        )
        total = float(counts.sum())
        if not measured.any():
            raise NotEnoughData(
                f"no gain bin with {cfg['min_clusters']} clusters ({total:.0f} clusters)", diag
            )
        if total < needed:
            raise NotEnoughData(
                f"{total:.0f} clusters < safety_factor x min_clusters x {N_BINS} bins = "
                f"{needed:.0f}",
                diag,
            )
        payload = channel_payload(
            GAIN_PAYLOAD,
            keys,
            {"value": gain, "fallback": code},
            error,
            status,
            units={"value": "1", "fallback": "1"},
            description="charge gain per (sensor, u bin, v bin): raw = true * gain; fallback "
            "1: mean of the sensor's v row, 2: default 1.0 (status NOT_ENOUGH_DATA, or FAILED "
            "for a bin with enough clusters but no valid median)",
            method="basf2 PXDAnalyticGainCalibrationAlgorithm (median strategy): median of "
            "cluster charge / expected charge x current gain",
        )
        n_row, n_def = int(np.sum(code == 1)), int(np.sum(code == 2))
        message = (
            f"{int(measured.sum())}/{N_BINS} bins measured from {total:.0f} clusters; "
            f"{n_row} from their v row, {n_def} default 1.0"
        )
        return AlgorithmResult(AlgorithmStatus.OK, [payload], diag, message)

    def boundaries(self, data: AlgorithmInput) -> list[RunKey]:
        """The ``payload_boundaries`` of the expert config (known gain retunes)."""
        return [(int(e), int(r)) for e, r in data.config.get("payload_boundaries", [])]


_VIEW = NoChannelFit(
    "a gain bin's value is the median charge ratio of its clusters (diagnostics "
    "charge_ratio, bins), not a fit",
    lambda c: c.step_message,
)


def gain_calibration() -> Calibration:
    """The ``pxd-gain`` calibration declaration."""
    return Calibration(
        name="pxd-gain",
        validation=PayloadComparison(columns=("value",), max_rel_change=0.1),  # gains ~1
        expert="pxd-calibration@b2calib.example",
        inputs={"bhabha": CollectorInput(_gain_factory, ("hlt_bhabha",))},
        algorithms=[PXDGainAlgorithm()],
        strategy=SequentialBoundaries(),
        input_format="cdst",
        stage="post-tracking",
        run_type="physics",
        expert_config=dict(DEFAULT_CONFIG),
        max_iterations=1,
        description=(
            "PXD gain map (PXDGainMapPar, 4 x 6 u-v bins per sensor) from Bhabha track "
            "clusters: median of charge / expected charge (path length in the sensor, current "
            "gain) x current gain; bins with < 200 clusters take their v row's mean, else 1.0; "
            "new payloads at the payload_boundaries of the expert config."
        ),
        fit_views={GAIN_PAYLOAD: _VIEW},
    )


def __dir__() -> list[str]:
    return __all__
