"""CDC tracking calibrations: wire T0 (CDCTimeZeros) and x-t relations (CDCXtRelations).

Both use the track hits of mu-mu, Bhabha and hadron events: per hit the measured time
``t_meas``, the event T0, and the drift length the track fit assigns (``m_fitDriftLength``).

Wire T0
    The collector histograms, per wire, ``t_meas - event T0 - T0_current - t_xt(x_fit)`` where
    ``t_xt`` inverts the current x-t relation of the hit's (layer, left/right). The algorithm fits
    a Gaussian per wire (batched), adds the fitted mean to the current T0, and asks to ITERATE
    until the board-averaged shifts are below ``tolerance_ns``. A fitted wire's uncertainty is
    its layer's residual width over the square root of its hits (not the width fitted to its own
    few dozen hits, whose fluctuation gave the pulls tails). Wires with fewer than
    ``min_entries`` hits, a failed fit or an error above ``max_error_ns`` fall back to the T0 of
    their front-end board (the board fit of the summed residuals) and are flagged
    NOT_ENOUGH_DATA; their quoted uncertainty is the board's error combined with the measured
    wire-to-wire spread inside boards. Wires without a single hit where their layer has plenty
    are DEAD (value NaN). Payload boundaries are requested where a board's T0 jumps between runs
    (the front-end board replacement of the intervention).

x-t relation
    The collector fills, per (layer, lr) and bin of the fitted drift length (in units of the
    layer's half cell), the mean drift time ``t_meas - event T0 - T0`` and the mean fitted drift
    length. Binning in the track-fit drift length (resolution 60 um) and averaging the measured
    time (resolution 2 ns) keeps the profile unbiased where the relation bends; the small bias
    of the fitted drift length where the hit density changes (the cell edge) is corrected with
    Tweedie's formula from the measured density, and the mean time of a bin for the relation's
    curvature over the drift-length resolution (``t'' sigma^2 / 2``, from a first fit). A
    fifth-order polynomial with a linear tail is fitted per row
    (:func:`b2calib.fit.xt_relation.fit_xt`); rows with fewer than ``min_entries`` hits are
    NOT_ENOUGH_DATA, unphysical fits FAILED; flagged rows keep the previous relation when the
    input tags hold one (else NaN). The fit covariance is stored in the payload's provenance
    (:func:`xt_covariance`).

Order and starting point (the two depend on each other, as in basf2)
    ``cdc-t0`` reads the x-t relation valid in the input tags (in prompt processing: the
    previous bucket's payload; x-t relations are stable over months) and iterates the T0s;
    ``cdc-xt`` depends on ``cdc-t0`` and fits the x-t relation with the new T0s; it needs no
    previous x-t relation. Degeneracy: a common time offset of all wires of a layer is
    equivalent to a shift of the layer's x-t relation in time (p0); it is fixed by the input
    x-t relation. After a large x-t change, run ``cdc-t0`` again with the new x-t (the basf2
    loop).
"""

from __future__ import annotations

import dataclasses
import functools
import math
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
    SingleIOV,
)
from b2calib.calibration.toolkit import (
    channel_payload,
    find_steps,
    guarded,
    require,
    status_counts,
)
from b2calib.conditions import ChannelStatus, Payload
from b2calib.conditions.iov import RunKey
from b2calib.detectors.cdc import fitviews
from b2calib.engine import Collector
from b2calib.engine.fill import fill_2d
from b2calib.exceptions import BadValueError, CalibrationError
from b2calib.fit import ChannelFits, fit_channels
from b2calib.fit._lm import compiled
from b2calib.fit.histstats import mean_view
from b2calib.fit.xt_relation import fit_xt, xt_slope
from b2calib.geometry import cdc

__all__ = [
    "T0_PAYLOAD",
    "XT_PAYLOAD",
    "T0Algorithm",
    "T0ResidualCollector",
    "XtAlgorithm",
    "XtCollector",
    "t0_calibration",
    "xt_calibration",
    "xt_covariance",
    "xt_inverse",
    "xt_rows",
]

F = npt.NDArray[np.float64]
T0_PAYLOAD = "CDCTimeZeros"
XT_PAYLOAD = "CDCXtRelations"
N_ROWS = 2 * cdc.N_LAYERS
#: Drift-length axis of the x-t profile, in units of the layer's half cell.
U_BINS = (220, 0.0, 1.1)
WIRE_AXIS = (cdc.N_WIRES, -0.5, cdc.N_WIRES - 0.5)
TRACK_SKIMS = ("hlt_mumu_2trk", "hlt_bhabha", "hlt_hadron")
HALF_CELL_ROW = np.repeat(cdc.LAYER_HALF_CELL, 2)

_HIT_BRANCHES = {
    "EventMetaData_m_experiment": "int32",
    "EventMetaData_m_run": "int32",
    "EventT0_m_eventT0": "float32",
    "EventT0_m_hasEventT0": "int8",
    "CDCHits_m_layer": "var * int8",
    "CDCHits_m_wire": "var * int16",
    "CDCHits_m_time": "var * float32",
    "CDCHits_m_fitDriftLength": "var * float32",
    "CDCHits_m_leftRight": "var * int8",
}


def xt_rows(payload: Payload) -> F:
    """The (112, 8) parameter table of a CDCXtRelations payload, row ``2 * layer + lr``."""
    layer = np.asarray(payload.keys["layer"], dtype=np.int64)
    lr = np.asarray(payload.keys["lr"], dtype=np.int64)
    if len(layer) != N_ROWS or set((2 * layer + lr).tolist()) != set(range(N_ROWS)):
        raise CalibrationError(f"payload {payload.name}: expected one row per (layer, lr)")
    cols = [f"p{i}" for i in range(6)] + ["t_boundary", "tail_slope"]
    out = np.empty((N_ROWS, 8))
    out[2 * layer + lr] = np.column_stack([payload.value(c) for c in cols])
    return out


def xt_inverse(params: F, npts: int = 1024) -> tuple[F, F]:
    """Drift time on a uniform grid of drift length per row: (u grid in half cells, (rows, n)).

    Rows whose relation is not increasing are NaN (their hits are not used).
    """
    from b2calib.fit.xt_relation import xt_value

    u = np.linspace(0.0, U_BINS[2], npts)
    tmax = params[:, 6] + (U_BINS[2] * HALF_CELL_ROW) / np.maximum(params[:, 7], 1e-4)
    tg = np.linspace(0.0, 1.0, 4096)[None, :] * tmax[:, None]
    xg = xt_value(params, tg)
    out = np.full((len(params), npts), np.nan)
    for r in range(len(params)):
        if np.all(np.diff(xg[r]) > 0) and np.all(np.isfinite(xg[r])):
            out[r] = np.interp(u * HALF_CELL_ROW[r], xg[r], tg[r], left=np.nan, right=np.nan)
    return u, out


def check_hits(
    counts: npt.NDArray[Any],
    layer: npt.NDArray[Any],
    wire: npt.NDArray[Any],
    lr: npt.NDArray[Any] | None = None,
    *,
    compiled_kernel: bool = True,
) -> None:
    """Raise :class:`~b2calib.exceptions.BadValueError` at the first hit whose layer is not a
    CDC layer (0..55), whose wire is not in its layer or whose left/right (when given) is not 0
    or 1: no sound file holds one, and it would index outside the T0 and x-t tables.

    ``counts`` are the hits per event (the message names the event, counted from the first
    entry read), ``layer``, ``wire`` and ``lr`` the hits' branches as flat arrays. One compiled
    pass (:mod:`b2calib.detectors.cdc._hitcheck`) with numba and ``compiled_kernel``, else
    numpy; both find the same hit.
    """
    kernel = (
        compiled("b2calib.detectors.cdc._hitcheck", "first_bad_hit") if compiled_kernel else None
    )
    if kernel is not None:
        k = int(kernel(layer, wire, layer[:0] if lr is None else lr, cdc.LAYER_NWIRES))
        if k < 0:
            return
    else:
        ly = np.asarray(layer, dtype=np.int64)
        w = np.asarray(wire, dtype=np.int64)
        bad = (ly < 0) | (ly >= cdc.N_LAYERS)
        bad |= (w < 0) | (w >= cdc.LAYER_NWIRES[np.where(bad, 0, ly)])
        if lr is not None:
            bad |= (lr != 0) & (lr != 1)
        found = np.flatnonzero(bad)
        if not len(found):
            return
        k = int(found[0])
    event = int(np.searchsorted(np.cumsum(counts), k, side="right"))
    where = f"event {event} of the entries read (hit {k})"
    ly_k, w_k = int(layer[k]), int(wire[k])
    if not 0 <= ly_k < cdc.N_LAYERS:
        raise BadValueError("CDCHits_m_layer", f"{where}: layer {ly_k}, the CDC has 0..55")
    nw = int(cdc.LAYER_NWIRES[ly_k])
    if not 0 <= w_k < nw:
        raise BadValueError(
            "CDCHits_m_wire", f"{where}: wire {w_k} in layer {ly_k}, which has 0..{nw - 1}"
        )
    assert lr is not None
    raise BadValueError("CDCHits_m_leftRight", f"{where}: left/right {int(lr[k])}, not 0 or 1")


def prepare_hit_check() -> None:
    """Compile (or load) :func:`check_hits`'s kernel for the branches' types, once."""
    empty = np.zeros(0, np.int64)
    check_hits(empty, empty.astype(np.int8), empty.astype(np.int16), empty.astype(np.int8))


def _kernel_hits(
    events: ak.Array,
    t0_runs: tuple[tuple[int, int, int], ...],
    t0_sets: tuple[tuple[float, ...], ...],
) -> tuple[npt.NDArray[Any], ...]:
    """The first arguments of the compiled T0 and x-t passes (``_t0_residuals``,
    ``_xt_points``): hits per event, each event's T0, whether it has one and its run's row of
    the T0 sets, the sets, the layers' first wires, the hits' layer, wire, left/right, time and
    fitted drift length as read (checked: :func:`check_hits`), the rows' half cells."""
    counts = ak.to_numpy(ak.num(events["CDCHits_m_layer"]))

    def flat(branch: str) -> npt.NDArray[Any]:
        return np.asarray(ak.to_numpy(ak.flatten(events[branch])))

    exp = ak.to_numpy(events["EventMetaData_m_experiment"]).astype(np.int64)
    run = ak.to_numpy(events["EventMetaData_m_run"]).astype(np.int64)
    layer, wire, lr = (flat(f"CDCHits_m_{b}") for b in ("layer", "wire", "leftRight"))
    check_hits(counts, layer, wire, lr)  # the kernels index their tables with them
    return (
        counts.astype(np.int64),
        np.asarray(ak.to_numpy(events["EventT0_m_eventT0"])),
        ak.to_numpy(events["EventT0_m_hasEventT0"]) > 0,
        _event_sets(exp, run, t0_runs),
        _set_table(t0_sets),
        cdc.LAYER_FIRST,
        layer,
        wire,
        lr,
        flat("CDCHits_m_time"),
        flat("CDCHits_m_fitDriftLength"),
        HALF_CELL_ROW,
    )


def _hits(
    events: ak.Array,
    t0_runs: tuple[tuple[int, int, int], ...],
    t0_sets: tuple[tuple[float, ...], ...],
    *,
    compiled_kernel: bool = True,
) -> dict[str, npt.NDArray[Any]]:
    """Flat per-hit arrays with their event's T0 and its wire's current T0 (``t0_wire``, from
    the set of its event's run: NaN for a run without one) and row (the hits checked first:
    :func:`check_hits`)."""
    counts = ak.to_numpy(ak.num(events["CDCHits_m_layer"]))
    out = {
        "t0": np.repeat(ak.to_numpy(events["EventT0_m_eventT0"]).astype(np.float64), counts),
        "has": np.repeat(ak.to_numpy(events["EventT0_m_hasEventT0"]) > 0, counts),
    }
    layer = ak.to_numpy(ak.flatten(events["CDCHits_m_layer"]))
    wire = ak.to_numpy(ak.flatten(events["CDCHits_m_wire"]))
    lr = ak.to_numpy(ak.flatten(events["CDCHits_m_leftRight"]))
    check_hits(counts, layer, wire, lr, compiled_kernel=compiled_kernel)
    layer = layer.astype(np.int64)
    out["gw"] = cdc.global_wire(layer, wire)
    out["row"] = 2 * layer + lr
    out["time"] = ak.to_numpy(ak.flatten(events["CDCHits_m_time"])).astype(np.float64)
    out["x"] = ak.to_numpy(ak.flatten(events["CDCHits_m_fitDriftLength"])).astype(np.float64)
    out["u"] = out["x"] / HALF_CELL_ROW[out["row"]]
    exp = ak.to_numpy(events["EventMetaData_m_experiment"]).astype(np.int64)
    run = ak.to_numpy(events["EventMetaData_m_run"]).astype(np.int64)
    out["t0_wire"] = _t0_per_hit(exp, run, counts, out["gw"], t0_runs, t0_sets)
    return out


def _t0_per_hit(
    exp: npt.NDArray[np.int64],
    run: npt.NDArray[np.int64],
    counts: npt.NDArray[Any],
    gw: npt.NDArray[np.int64],
    t0_runs: tuple[tuple[int, int, int], ...],
    t0_sets: tuple[tuple[float, ...], ...],
) -> F:
    """Each hit's current T0 from its event's (``exp``, ``run``; ``counts`` hits each) T0 set
    at its wire ``gw``; NaN for a run without a set. The runs are looked up per event, and a
    chunk of one set (one run, or runs sharing their T0) is one gather."""
    event_set = _event_sets(exp, run, t0_runs)
    sets = _set_table(t0_sets)
    used = np.unique(event_set)
    if len(used) == 1 and used[0] >= 0:
        return sets[used[0]][gw]
    hit_set = np.repeat(event_set, counts)
    out = np.full(len(gw), np.nan)
    for i in used[used >= 0]:
        sel = hit_set == i
        out[sel] = sets[i][gw[sel]]
    return out


def _event_sets(
    exp: npt.NDArray[np.int64],
    run: npt.NDArray[np.int64],
    t0_runs: tuple[tuple[int, int, int], ...],
) -> npt.NDArray[np.int64]:
    """The T0 set of each event's run (its index in the collector's sets; -1: none)."""
    index = {(e, r): i for e, r, i in t0_runs}
    keys, inverse = np.unique(exp << 32 | run, return_inverse=True)
    set_of = np.array(
        [index.get((int(k >> 32), int(k & 0xFFFFFFFF)), -1) for k in keys], dtype=np.int64
    )
    return set_of[inverse.reshape(-1)]


@functools.lru_cache(maxsize=4)
def _set_table(t0_sets: tuple[tuple[float, ...], ...]) -> F:
    """A collector's T0 sets as one (sets, wires) array, kept per process (the same for every
    chunk it reads; the T0 and x-t collectors, compiled or not, gather from it)."""
    return _read_only(np.array(t0_sets, dtype=np.float64).reshape(len(t0_sets), cdc.N_WIRES))


@functools.lru_cache(maxsize=4)
def _xt_inverse_of(xt: tuple[float, ...]) -> tuple[F, F]:
    """:func:`xt_inverse` of a collector's flattened x-t parameters, kept per process: it is
    the same for every chunk of events the collector reads, and took 80 ms per chunk."""
    u, inv = xt_inverse(np.asarray(xt, dtype=np.float64).reshape(N_ROWS, 8))
    return _read_only(u), _read_only(inv)


def _read_only(a: F) -> F:
    a.flags.writeable = False
    return a


def _table(runs: tuple[tuple[int, int, int], ...], sets: tuple[tuple[float, ...], ...]) -> dict:
    arrays = [np.asarray(s, dtype=np.float64) for s in sets]
    return {(e, r): arrays[i] for e, r, i in runs}


def _current_t0(constants: Constants, runs: Sequence[RunKey]) -> tuple[tuple, tuple]:
    """(exp, run, set) rows and the distinct T0 sets valid for ``runs`` (zeros where the
    tags hold none: the first iteration then measures the full T0)."""
    sets: list[tuple[float, ...]] = []
    index: dict[int, int] = {}
    rows = []
    for e, r in runs:
        p = constants.get(T0_PAYLOAD, e, r)
        key = -1 if p is None else id(p)
        if key not in index:
            values = np.zeros(cdc.N_WIRES) if p is None else _t0_values(p)
            index[key] = len(sets)
            sets.append(tuple(np.nan_to_num(values, nan=0.0).tolist()))
        rows.append((int(e), int(r), index[key]))
    return tuple(rows), tuple(sets)


def _t0_values(p: Payload) -> F:
    wires = np.asarray(p.keys["wire"], dtype=np.int64)
    out = np.zeros(cdc.N_WIRES)
    out[wires] = np.asarray(p.value("value"), dtype=np.float64)
    return out


@dataclasses.dataclass(frozen=True)
class T0ResidualCollector(Collector):
    """Per-wire histogram of ``t_meas - event T0 - T0_current - t_xt(x_fit)`` (ns).

    Parameters
    ----------
    t0_runs, t0_sets
        (exp, run, set index) per run and the distinct current T0 sets (14336 values each).
    xt
        The x-t parameters used to compute ``t_xt`` (112 rows x 8, flattened).
    bins
        Residual axis.
    u_min, u_max
        Only hits with a fitted drift length between these fractions of the half cell are used:
        the track-fit drift length is folded at the wire, and near the cell edge (where the hit
        density falls) the drift length of a hit is on average below its fitted one, so
        ``t_xt(x_fit)`` would be late there.
    """

    t0_runs: tuple[tuple[int, int, int], ...]
    t0_sets: tuple[tuple[float, ...], ...]
    xt: tuple[float, ...]
    bins: tuple[int, float, float] = (60, -15.0, 15.0)
    u_min: float = 0.05
    u_max: float = 0.85
    name: str = "cdc_t0_residual"
    version: ClassVar[int] = 2

    @property
    def branches(self) -> dict[str, str]:
        return dict(_HIT_BRANCHES)

    def prepare(self) -> None:
        """Load the compiled hit check and residuals (forked workers inherit them)."""
        prepare_hit_check()
        kernel = compiled("b2calib.detectors.cdc._t0_residuals", "t0_residuals")
        if kernel is not None:
            # the types of collect's arguments: the branches as read, the cached tables
            # read-only, the histogram's storage Fortran-ordered
            i, f = np.zeros(0, np.int64), np.zeros(0)
            table = _read_only(np.zeros((1, 2)))
            i8, i16, f32 = i.astype(np.int8), i.astype(np.int16), f.astype(np.float32)
            out = np.zeros((2, 3), np.int64, order="F")
            kernel(
                i, f32, i > 0, i, table, i, i8, i16, i8, f32, f32, f, table, 1.0, 0.0, 1.0,
                0.0, 1.0, i, out,
            )  # fmt: skip

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        return self._collect(events, compiled_kernel=True)

    def _collect(self, events: ak.Array, *, compiled_kernel: bool) -> dict[str, hist.Hist]:
        """The histogram, filled by the compiled kernel
        (:mod:`b2calib.detectors.cdc._t0_residuals`) when numba is there and
        ``compiled_kernel``, else from the flat per-hit arrays of :func:`_hits` and
        :func:`~b2calib.engine.fill.fill_2d`: the same residuals in the same bins, so the same
        histogram, bit for bit."""
        h = hist.Hist(
            hist.axis.Regular(*WIRE_AXIS, name="wire", label="wire"),
            hist.axis.Regular(*self.bins, name="residual", label="t - t_fit (ns)"),
            storage=hist.storage.Int64(),
        )
        u_grid, inv = _xt_inverse_of(self.xt)
        step = u_grid[1] - u_grid[0]
        kernel = (
            compiled("b2calib.detectors.cdc._t0_residuals", "t0_residuals")
            if compiled_kernel
            # beyond 2**62 grid steps numpy's cast of the position to an index is undefined
            and abs(self.u_max) / step < 2.0**62
            else None
        )
        if kernel is not None:
            args = _kernel_hits(events, self.t0_runs, self.t0_sets)
            kernel(
                *args,
                inv,
                float(step),
                float(self.u_min),
                float(self.u_max),
                float(self.bins[1]),
                float(self.bins[2]),
                np.empty(len(args[6]), np.int64),  # a bin per hit
                h.view(flow=True),
            )
            return {self.name: h}
        hits = _hits(events, self.t0_runs, self.t0_sets, compiled_kernel=False)
        # NaN and infinite drift lengths and times give NaN positions and residuals (their
        # cast to an index is clipped): their hits are not used, they are not worth a warning
        with np.errstate(invalid="ignore", over="ignore"):
            pos = hits["u"] / step
            i0 = np.clip(pos.astype(np.int64), 0, len(u_grid) - 2)
            w = pos - i0
            t_fit = inv[hits["row"], i0] * (1 - w) + inv[hits["row"], i0 + 1] * w
            res = hits["time"] - hits["t0"] - hits["t0_wire"] - t_fit
        use = hits["has"] & (hits["u"] >= self.u_min) & (hits["u"] <= self.u_max)
        use &= np.isfinite(res)
        fill_2d(h.view(flow=True), hits["gw"][use], res[use], WIRE_AXIS, self.bins)
        return {self.name: h}


def t0_collector(constants: Constants, runs: Sequence[RunKey]) -> T0ResidualCollector:
    """The T0 collector with the current T0 of each run and the x-t relation of the first."""
    rows, sets = _current_t0(constants, runs)
    xt = xt_rows(constants.require(XT_PAYLOAD, *runs[0]))
    return T0ResidualCollector(rows, sets, tuple(xt.ravel().tolist()))


def _board_sum(counts: F) -> F:
    """Histogram rows (wires) summed per front-end board: the rows in board order, each
    board's run of rows reduced (6x faster than ``np.add.at``, and for counts, whole numbers,
    the same sums in any order)."""
    order, starts = _board_runs()
    return np.add.reduceat(counts[order], starts, axis=0)


@functools.cache
def _board_runs() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The wires in board order and the first of each board's in it (every board has wires)."""
    boards = cdc.board_of(np.arange(cdc.N_WIRES))
    order = np.argsort(boards, kind="stable")
    starts = np.searchsorted(boards[order], np.arange(cdc.N_BOARDS))
    if np.any(np.diff(np.append(starts, cdc.N_WIRES)) <= 0):
        raise AssertionError("a front-end board without wires")  # reduceat would misread it
    order.flags.writeable = starts.flags.writeable = False
    return order, starts


def _expected_errors(fits: ChannelFits, layer: npt.NDArray[np.int64], min_wires: int) -> F:
    """Uncertainty of each wire's fitted mean residual from its layer's residual width,
    ``sigma_layer / sqrt(n)`` (``n``: the wire's entries in the fit window).

    The Gaussian fit's own error, ``sigma_wire / sqrt(n)``, takes the width fitted to the same
    few dozen hits: its fluctuation (``1 / sqrt(2 n)``, 8 to 16 % at 80 to 20 hits) makes the
    pulls a Student-like distribution (wires whose width came out low quote small errors and
    give the tails beyond 3 sigma; binned by the quoted error, the smallest-error quartile is the
    widest). The residual width is a property of the layer (drift velocity, cell size), so it is
    pooled over the layer's fitted wires: ``sigma_layer^2 = sum n sigma^2 / sum (n - 1)`` (the
    fitted width is the maximum-likelihood one, low by ``(n - 1) / n`` in the variance). Layers
    with fewer than ``min_wires`` fitted wires take the pooled width of all layers.
    """
    ok = fits.ok
    n = fits.entries
    s2n = np.where(ok, n * fits.values["sigma"] ** 2, 0.0)
    dof = np.where(ok, n - 1.0, 0.0)
    num = np.bincount(layer, weights=s2n, minlength=cdc.N_LAYERS)
    den = np.bincount(layer, weights=dof, minlength=cdc.N_LAYERS)
    wires = np.bincount(layer[ok], minlength=cdc.N_LAYERS)
    pooled = num.sum() / den.sum() if den.sum() > 0 else np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(wires >= min_wires, num / den, pooled)
        return np.where(ok, np.sqrt(var[layer] / n), np.nan)


class T0Algorithm(Algorithm):
    """Per-wire Gaussian fits of the residual, board fallback, ITERATE until converged."""

    name = "cdc_t0"
    payloads = (T0_PAYLOAD,)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        (h,) = require(
            data, "cdc_t0_residual", min_entries=cfg["min_total_entries"], counted="residuals"
        )
        window = (-cfg["fit_window_ns"], cfg["fit_window_ns"])
        fits = fit_channels(h, value_range=window, min_entries=cfg["min_entries"])
        counts = h.values().astype(np.float64)
        board_h = hist.Hist(
            hist.axis.Regular(cdc.N_BOARDS, -0.5, cdc.N_BOARDS - 0.5, name="board"),
            h.axes[1],
            storage=hist.storage.Double(),
        )
        board_h.view()[...] = _board_sum(counts)
        bfits = fit_channels(board_h, value_range=window, min_entries=cfg["min_entries"])
        _, sets = _current_t0(data.constants, data.runs[:1])
        current = np.asarray(sets[0])
        boards = cdc.board_of(np.arange(cdc.N_WIRES))
        mu = fits.values["mu"]
        layer = cdc.layer_of(np.arange(cdc.N_WIRES))
        err = _expected_errors(fits, layer, cfg["min_wires_for_width"])
        good = fits.ok & (err <= cfg["max_error_ns"])
        entries = counts.sum(axis=1)
        # the board's absolute T0: its fitted mean residual plus the hit-weighted current T0
        n_board = np.bincount(boards, weights=entries, minlength=cdc.N_BOARDS)
        cur_board = np.bincount(boards, weights=entries * current, minlength=cdc.N_BOARDS)
        board_t0 = bfits.values["mu"] + cur_board / np.maximum(n_board, 1)
        # wire-to-wire spread of the absolute T0 inside boards, beyond the statistical errors
        dev = (current + mu - board_t0[boards])[good & bfits.ok[boards]]
        var_stat = err[good & bfits.ok[boards]] ** 2
        if dev.size >= cfg["min_wires_for_spread"]:
            spread2 = max(float(np.var(dev) - np.mean(var_stat)), 0.0)
        else:  # too few fitted wires to measure it: the spread of earlier calibrations
            spread2 = cfg["board_spread_ns"] ** 2
        layer_mean = np.bincount(layer, weights=entries) / cdc.LAYER_NWIRES
        dead = (entries == 0) & (layer_mean[layer] >= cfg["dead_layer_mean"])
        status = np.where(good, ChannelStatus.OK, ChannelStatus.NOT_ENOUGH_DATA).astype(np.int8)
        status[~good & (fits.status == ChannelStatus.FAILED)] = ChannelStatus.FAILED
        bok = bfits.ok[boards]
        value = np.where(good, current + mu, board_t0[boards])
        error = np.where(good, err, np.sqrt(bfits.errors["mu"][boards] ** 2 + spread2))
        status[~good & ~bok] = ChannelStatus.FAILED
        value[~good & ~bok] = np.nan
        error[~good & ~bok] = np.nan
        status[dead] = ChannelStatus.DEAD
        value[dead] = np.nan
        error[dead] = np.nan
        if not np.any(bfits.ok):
            return AlgorithmResult(AlgorithmStatus.FAILURE, message="no board has a good T0 fit")
        # convergence: the fitted wires' shifts averaged per board (fallback wires are not
        # counted: their own offset from the board's T0 is not what the iteration moves)
        n_good = np.bincount(boards[good], minlength=cdc.N_BOARDS)
        mean_shift = np.bincount(boards[good], mu[good], cdc.N_BOARDS) / np.maximum(n_good, 1)
        measured = n_good >= 3
        if measured.any():
            max_shift = float(np.max(np.abs(mean_shift[measured])))
        else:  # nothing fitted per wire: the board fits' shifts
            max_shift = float(np.max(np.abs(bfits.values["mu"][bfits.ok])))
        converged = max_shift < cfg["tolerance_ns"]
        diagnostics = Diagnostics(histograms={"board_residual": board_h})
        diagnostics.add_fits("wire_fits", fits, np.arange(cdc.N_WIRES))
        diagnostics.add_fits("board_fits", bfits, np.arange(cdc.N_BOARDS))
        payload = channel_payload(
            T0_PAYLOAD,
            {"wire": np.arange(cdc.N_WIRES, dtype=np.int32)},
            value,
            error,
            status,
            units="ns",
            description="wire T0: t_drift = t_raw - T0 - event T0; NOT_ENOUGH_DATA wires carry "
            "their board's T0",
            provenance={
                "method": "per-wire Gaussian fit of t - t_fit (error from the layer's residual "
                "width), board fallback",
                "iteration": data.iteration,
                "board_spread_ns": float(np.sqrt(spread2)),
            },
        )
        message = f"max board shift {max_shift:.3f} ns; " + ", ".join(
            f"{k} {v}" for k, v in status_counts(status).items()
        )
        status_code = AlgorithmStatus.OK if converged else AlgorithmStatus.ITERATE
        return AlgorithmResult(status_code, [payload], diagnostics, message)

    def boundaries(self, data: AlgorithmInput) -> list[RunKey]:
        """Runs where a board's T0 (current T0 + mean residual) jumps.

        A jump is significant between two runs where the board has ``min_entries`` hits;
        runs in between with fewer hits are assigned to the level before or after the jump
        from the pooled residuals of all boards that jumped. The search is
        :func:`~b2calib.calibration.toolkit.find_steps` with a test of each run against the
        previous run with enough hits on each board (so it finds every such jump), the largest
        jump first.
        """
        cfg = data.config
        lo, hi = -cfg["fit_window_ns"], cfg["fit_window_ns"]
        rows, sets = _current_t0(data.constants, data.runs)
        tables = _table(rows, sets)
        boards = cdc.board_of(np.arange(cdc.N_WIRES))
        nper = np.bincount(boards, minlength=cdc.N_BOARDS)
        ns, means, errs = [], [], []
        for r in data.runs:
            h = data.per_run[r]["cdc_t0_residual"]
            centers = h.axes[1].centers
            sel = (centers > lo) & (centers < hi)
            b = _board_sum(h.values().astype(np.float64)[:, sel])
            n = b.sum(axis=1)
            m = (b * centers[sel]).sum(axis=1) / np.maximum(n, 1)
            v = (b * centers[sel] ** 2).sum(axis=1) / np.maximum(n, 1) - m**2
            cur = np.bincount(boards, weights=tables[r], minlength=cdc.N_BOARDS) / nper
            ns.append(n)
            means.append(m + cur)
            errs.append(np.sqrt(np.maximum(v, 0.0) / np.maximum(n, 1)))
        n_arr, m_arr, e_arr = np.array(ns), np.array(means), np.array(errs)
        enough = n_arr >= cfg["min_entries"]
        every = np.arange(cdc.N_BOARDS)
        # per run and board: the last run up to it with enough hits on the board (-1: none)
        last = np.maximum.accumulate(
            np.where(enough, np.arange(len(data.runs))[:, None], -1), axis=0
        )
        jumps = {}  # run index -> (boards that jumped, their previous run, the jump)
        for i in range(1, len(data.runs)):
            known = last[i - 1] >= 0
            prev = np.where(known, last[i - 1], 0)
            d = m_arr[i] - m_arr[prev, every]
            sig = np.hypot(e_arr[i], e_arr[prev, every])
            jump = known & enough[i] & (np.abs(d) > cfg["boundary_jump_ns"]) & (np.abs(d) > 5 * sig)
            if np.any(jump):
                jumps[i] = (jump, prev, d)

        def split(_lo: int, k: int, _hi: int) -> tuple[float, bool]:
            if k not in jumps:
                return -math.inf, False
            jump, _, d = jumps[k]
            return float(np.max(np.abs(d[jump]))), True

        def start(i: int) -> int:
            """Runs between the last good one and this one: before or after the jump?"""
            jump, prev, d = jumps[i]
            first = int(prev[jump].min()) + 1
            for j in range(first, i):
                w = n_arr[j, jump]
                if w.sum() == 0:
                    continue
                dev = m_arr[j, jump] - m_arr[prev[jump], np.flatnonzero(jump)]
                pooled = float((w * dev * np.sign(d[jump])).sum() / w.sum())
                if pooled > 0.5 * float(np.mean(np.abs(d[jump]))):
                    return j
            return i

        return find_steps(data.runs, split, start=start)


def t0_calibration() -> Calibration:
    """``cdc-t0``: CDCTimeZeros per wire, split where boards were replaced."""
    return Calibration(
        name="cdc-t0",
        validation=PayloadComparison(max_abs_change=1.0),  # wire T0 (ns)
        expert="cdc-calibration@b2calib.example",
        inputs={"tracks": CollectorInput(t0_collector, TRACK_SKIMS)},
        algorithms=[T0Algorithm()],
        strategy=SequentialBoundaries(),
        run_type="physics",
        expert_config={
            "min_entries": 20,
            "max_error_ns": 2.0,
            "fit_window_ns": 10.0,
            "tolerance_ns": 0.2,
            "min_total_entries": 10000,
            "dead_layer_mean": 10.0,
            "boundary_jump_ns": 1.0,
            "min_wires_for_spread": 200,
            "min_wires_for_width": 50,
            "board_spread_ns": 0.5,
        },
        max_iterations=4,
        description="Wire T0 from Gaussian fits of t_meas - t_fit per wire with the previous "
        "x-t relation (input tag); wires with few hits or errors > 2 ns take their front-end "
        "board's T0; iterates until the board shifts are below tolerance_ns; payloads split "
        "where a board's T0 jumps.",
        fit_views={T0_PAYLOAD: fitviews.T0_VIEW},
    )


@dataclasses.dataclass(frozen=True)
class XtCollector(Collector):
    """Profiles of drift time and fitted drift length per (layer, lr) and drift-length bin.

    Two histograms with mean storage over (row = 2 layer + lr, u = x_fit / half cell):
    ``cdc_xt_time`` holds the mean drift time ``t_meas - event T0 - T0`` (ns),
    ``cdc_xt_length`` the mean fitted drift length (cm).
    """

    t0_runs: tuple[tuple[int, int, int], ...]
    t0_sets: tuple[tuple[float, ...], ...]
    time_window: tuple[float, float] = (-30.0, 600.0)
    version: ClassVar[int] = 1

    @property
    def branches(self) -> dict[str, str]:
        return dict(_HIT_BRANCHES)

    def prepare(self) -> None:
        """Load the compiled profile points (forked workers inherit them)."""
        prepare_hit_check()
        kernel = compiled("b2calib.detectors.cdc._xt_points", "xt_profiles")
        if kernel is not None:
            # the types of collect's arguments: the branches as read, the cached table read-only
            i, f = np.zeros(0, np.int64), np.zeros(0)
            i8, i16, f32 = i.astype(np.int8), i.astype(np.int16), f.astype(np.float32)
            sums = np.zeros((3, 1, 1))
            axis = np.array([1.0, 0.0, 1.0])
            table = _read_only(np.zeros((1, 2)))
            kernel(
                i, f32, i > 0, i, table, i, i8, i16, i8, f32, f32, f, 0.0, 1.0, axis, sums,
                sums.copy(),
            )  # fmt: skip

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        return self._collect(events, compiled_kernel=True)

    def _collect(self, events: ak.Array, *, compiled_kernel: bool) -> dict[str, hist.Hist]:
        """The profiles, filled by the compiled kernel (:mod:`b2calib.detectors.cdc._xt_points`)
        when numba is there and ``compiled_kernel``, else from the flat per-hit arrays of
        :func:`_hits` and ``Hist.fill``: the same points in the same order and bins, so the same
        profiles, bit for bit."""
        axes = (
            hist.axis.Regular(N_ROWS, -0.5, N_ROWS - 0.5, name="row", label="2 layer + lr"),
            hist.axis.Regular(*U_BINS, name="u", label="x_fit / half cell"),
        )
        ht = hist.Hist(*axes, storage=hist.storage.Mean())
        hx = hist.Hist(*axes, storage=hist.storage.Mean())
        lo, hi = self.time_window
        kernel = (
            compiled("b2calib.detectors.cdc._xt_points", "xt_profiles") if compiled_kernel else None
        )
        if kernel is not None:
            args = _kernel_hits(events, self.t0_runs, self.t0_sets)
            sums = [_mean_sums(ht), _mean_sums(hx)]
            kernel(
                *args,
                float(lo),
                float(hi),
                np.array(U_BINS, dtype=np.float64),
                *sums,
            )
            for h, s in zip((ht, hx), sums, strict=True):
                view: Any = h.view(flow=True)  # a structured view of the accumulators
                view["count"], view["value"], view["_sum_of_deltas_squared"] = s
            return {"cdc_xt_time": ht, "cdc_xt_length": hx}
        hits = _hits(events, self.t0_runs, self.t0_sets, compiled_kernel=False)
        td = hits["time"] - hits["t0"] - hits["t0_wire"]
        use = hits["has"] & np.isfinite(td) & (td > lo) & (td < hi)
        row, u = hits["row"][use].astype(np.float64), hits["u"][use]
        ht.fill(row, u, sample=td[use])
        hx.fill(row, u, sample=hits["x"][use])
        return {"cdc_xt_time": ht, "cdc_xt_length": hx}


def _mean_sums(h: hist.Hist) -> F:
    """The count, mean and sum of squared deltas of the ``Mean`` histogram ``h``, flow bins
    included, as one C-ordered (3, ...) array (the compiled fill's: the storage is
    column-major, and a copy in its order would be compiled a second time)."""
    view: Any = h.view(flow=True)
    fields = ("count", "value", "_sum_of_deltas_squared")
    return np.ascontiguousarray(np.stack([view[k] for k in fields]))


def xt_collector(constants: Constants, runs: Sequence[RunKey]) -> XtCollector:
    """The x-t collector with the T0s valid for each run (from ``cdc-t0``)."""
    for e, r in runs:
        constants.require(T0_PAYLOAD, e, r)
    rows, sets = _current_t0(constants, runs)
    return XtCollector(rows, sets)


def xt_points(ht: hist.Hist, hx: hist.Hist, sigma_x: float, min_bin: int) -> dict[str, F]:
    """Profile points per row: drift time and drift length with their errors.

    The drift length of a bin is its mean fitted drift length corrected to the mean true one
    with Tweedie's formula ``E[x | x_fit] = x_fit + sigma^2 d ln p(x_fit) / dx``, ``p`` the
    measured density (counts per bin), ``sigma`` the track-fit drift-length resolution.
    """
    n, t_mean, var_t = mean_view(ht)
    _, x_mean, var_x = mean_view(hx)
    width = (U_BINS[2] - U_BINS[1]) / U_BINS[0] * HALF_CELL_ROW[:, None]
    logn = np.log(np.maximum(n, 0.5))
    # log-density slope: central differences (a wider local fit smooths the cell edge away)
    dlog = np.gradient(logn, axis=1) / width
    x = x_mean + sigma_x**2 * dlog
    t = t_mean.copy()
    nb = np.maximum(n, 1)
    t_err = np.sqrt(var_t / nb)
    # the correction's Poisson noise is not added: a central difference takes each count once
    # with + and once with -, so its contributions cancel along the fitted curve
    x_err = np.sqrt(var_x / nb)
    ok = n >= min_bin
    ok[:, 0] = ok[:, -1] = False
    ok &= np.roll(n, 1, axis=1) >= min_bin
    ok &= np.roll(n, -1, axis=1) >= min_bin
    nan = np.where(ok, 1.0, np.nan)
    return {"t": t * nan, "x": x * nan, "t_err": t_err * nan, "x_err": x_err * nan, "n": n}


class XtAlgorithm(Algorithm):
    """x-t relation per (layer, lr): fifth-order polynomial with a linear tail."""

    name = "cdc_xt"
    payloads = (XT_PAYLOAD,)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        ht, hx = require(data, "cdc_xt_time", "cdc_xt_length", message="no hits")
        pts = xt_points(ht, hx, cfg["drift_length_resolution_cm"], cfg["min_bin_entries"])
        u_lo, u_hi = cfg["u_range"]
        centers = ht.axes[1].centers
        inside = (centers >= u_lo) & (centers <= u_hi)
        for k in ("t", "x", "t_err", "x_err"):
            pts[k] = np.where(inside[None, :], pts[k], np.nan)
        entries = mean_view(ht)[0][:, inside].sum(axis=1)
        fits = fit_xt(
            pts["t"], pts["x"], pts["t_err"], pts["x_err"], max_chi2_ndf=cfg["max_chi2_ndf"]
        )
        # second pass: the mean time of a drift-length bin is t(x) + t''(x) sigma^2 / 2 (the
        # relation's curvature over the drift-length resolution): move the point's x by
        # -x'' sigma^2 / (2 x'^2), with x' and x'' from the first fit
        sigma = cfg["drift_length_resolution_cm"]
        t_pts = np.nan_to_num(pts["t"])
        first = np.where(np.isfinite(fits.params), fits.params, 0.0)
        d1 = xt_slope(first, t_pts)
        d2 = (xt_slope(first, t_pts + 0.5) - xt_slope(first, t_pts - 0.5)) / 1.0
        shift = np.where(d1 > 0, -0.5 * sigma**2 * d2 / np.maximum(d1, 1e-6) ** 2, 0.0)
        pts["x"] = pts["x"] + np.where(fits.status[:, None] == ChannelStatus.OK, shift, 0.0)
        fits = fit_xt(
            pts["t"], pts["x"], pts["t_err"], pts["x_err"], max_chi2_ndf=cfg["max_chi2_ndf"]
        )
        status = fits.status.copy()
        reason = list(fits.reason)
        few = entries < cfg["min_entries"]
        status[few] = ChannelStatus.NOT_ENOUGH_DATA
        for r in np.flatnonzero(few).tolist():
            reason[r] = f"{int(entries[r])} entries < {cfg['min_entries']}"
        params = np.where(status[:, None] == ChannelStatus.OK, fits.params, np.nan)
        previous = data.constants.get(XT_PAYLOAD, *data.runs[0])
        if previous is not None:  # flagged rows keep the previous relation (basf2 behaviour)
            params = np.where(np.isnan(params), xt_rows(previous), params)
        if not np.any(status == ChannelStatus.OK):
            return AlgorithmResult(
                AlgorithmStatus.NOT_ENOUGH_DATA
                if np.all(status == ChannelStatus.NOT_ENOUGH_DATA)
                else AlgorithmStatus.FAILURE,
                message=f"no (layer, lr) row has a valid x-t fit: {reason[0]}",
            )
        errors = np.sqrt(np.einsum("rii->ri", fits.cov))
        layer = np.arange(N_ROWS) // 2
        lr = np.arange(N_ROWS) % 2
        cols = [f"p{i}" for i in range(6)] + ["t_boundary", "tail_slope"]
        values = {c: params[:, i] for i, c in enumerate(cols)}
        errs = {
            c: np.where(status == ChannelStatus.OK, errors[:, i], np.nan)
            for i, c in enumerate(cols[:7])
        }
        payload = Payload(
            XT_PAYLOAD,
            keys={"layer": layer.astype(np.int16), "lr": lr.astype(np.int8)},
            values=values,
            errors=errs,
            status=status,
            metadata={
                "units": {f"p{i}": f"cm/ns^{i}" for i in range(6)}
                | {"t_boundary": "ns", "tail_slope": "cm/ns"},
                "description": "x(t) = p0..p5 polynomial for t < t_boundary, linear with "
                "tail_slope beyond; lr 0 left, 1 right",
                "provenance": {
                    "method": "fifth-order polynomial + linear tail, continuous value and slope",
                    "covariance": [
                        [None if np.isnan(v) else v for v in row]
                        for row in fits.cov.reshape(N_ROWS, -1).tolist()
                    ],
                    "reasons": reason,
                },
            },
        )
        diagnostics = Diagnostics(
            tables={
                "xt_fits": {
                    "row": np.arange(N_ROWS),
                    "chi2": fits.chi2,
                    "ndf": fits.ndf.astype(np.float64),
                    "entries": entries.astype(np.float64),
                    "status": status,
                    **{c: params[:, i] for i, c in enumerate(cols)},
                },
                "xt_points": {
                    "row": np.repeat(np.arange(N_ROWS), len(centers)),
                    "u": np.tile(centers, N_ROWS),
                    **{k: pts[k].ravel() for k in ("t", "x", "t_err", "x_err", "n")},
                },
            }
        )
        n_ok = int(np.sum(status == ChannelStatus.OK))
        return AlgorithmResult(
            AlgorithmStatus.OK, [payload], diagnostics, f"{n_ok}/{N_ROWS} rows fitted"
        )


def xt_covariance(payload: Payload) -> F:
    """The (112, 7, 7) covariance of (p0..p5, t_boundary) stored with a fitted payload."""
    rows = payload.metadata["provenance"]["covariance"]
    return np.array([[np.nan if v is None else v for v in r] for r in rows]).reshape(N_ROWS, 7, 7)


def xt_calibration() -> Calibration:
    """``cdc-xt``: CDCXtRelations per layer and left/right, after ``cdc-t0``."""
    return Calibration(
        name="cdc-xt",
        validation=PayloadComparison(
            columns=("p1",), max_pull=None, max_rel_change=0.1, error_outlier_fraction=0.2
        ),  # the correlated polynomial by its linear term (drift speed)
        expert="cdc-calibration@b2calib.example",
        inputs={"tracks": CollectorInput(xt_collector, TRACK_SKIMS)},
        algorithms=[XtAlgorithm()],
        strategy=SingleIOV(),
        run_type="physics",
        depends_on=("cdc-t0",),
        expert_config={
            "min_entries": 800,
            "min_bin_entries": 10,
            "u_range": [0.04, 1.02],
            "drift_length_resolution_cm": 0.006,
            "max_chi2_ndf": 5.0,
        },
        description="x-t relation per layer and left/right: profile of the drift time in bins "
        "of the track-fit drift length with the T0 of cdc-t0, fifth-order polynomial with a "
        "linear tail; unphysical fits are flagged and keep the previous relation.",
        fit_views={XT_PAYLOAD: fitviews.XT_VIEW},
    )


def __dir__() -> list[str]:
    return __all__
