"""ECL crystal and crate time offsets from Bhabha electrons (basf2 ecl Bhabha time calibration:
eclBhabhaTCollector / eclBhabhaTAlgorithm with alternating crystal and crate steps).

Convention (the truth payloads'): ``t = t_raw - crystal - crate``; ECLCrystalTimeOffset keyed by
cellID, ECLCrateTimeOffset keyed by crate 1-52.

Method
------
For every Bhabha electron with a matched track and an event T0, the time of the crystal with
the most energy, minus the event T0, the flight time from the IP and the offsets being iterated,
is histogrammed per crystal and per crate. Per crystal a Gaussian is fitted (batched,
:func:`b2calib.fit.fit_channels`); the total offset of the crystal is the applied total plus the
fitted mean. Crate and crystal are then split:

* crate step: the crate offset is the mean total offset of the crate's measured crystals;
* crystal step: each crystal keeps its total minus its crate's offset.

Only the sum crystal + crate is measurable; the split is fixed by the convention that the
measured crystals of each crate average to zero (the truth must be re-expressed the same way
to be compared, see :func:`reexpress`; the measured crystals are those of finite value in the
crystal payload, :func:`measured_crystals`). A crate with a single measured crystal has no
crystal offset to measure: the crate offset absorbs that crystal's whole measurement (with its
uncertainty) and the constraint fixes the crystal's offset to 0, a convention, not a
measurement. That crystal is NOT_ENOUGH_DATA with value 0 (the constraint's, which a collector
applies) and no uncertainty: a status OK with an error of 0 would claim an exact measurement.
A crate none of whose crystals has enough entries gets
its offset from the Gaussian fit of all its hits (a crate-level constant, flagged in the
``crate_level`` column; its uncertainty includes the unknown spread of the crystal offsets
around the crate: the fit measures the hit-weighted mean of its crystals, the constant stands
for their plain mean, see :func:`_sampling_spread`); its crystals are NOT_ENOUGH_DATA. The
algorithm asks to ITERATE until the shifts are small: the RMS over crystals and crates of the
shift divided by its uncertainty below ``tolerance`` (a maximum would never settle: re-binning
the shifted residuals moves a binned fit by a fraction of a bin). A new payload starts where a
crate's mean residual steps between runs.
"""

from __future__ import annotations

import dataclasses
import math
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
    SequentialBoundaries,
)
from b2calib.calibration.fitview import ChannelFit, GaussPeak, HistogramFit, ViewContext
from b2calib.calibration.toolkit import NotEnoughData, channel_payload, guarded, require
from b2calib.conditions import ChannelStatus
from b2calib.conditions.iov import RunKey
from b2calib.detectors.ecl._common import (
    CLUSTER_BRANCHES,
    CRATE,
    DIGIT_BRANCHES,
    EVENT_BRANCHES,
    TRACK_BRANCHES,
    F,
    applied_column,
    cell_axis,
    crate_axis,
    crate_step_boundaries,
    dense_column,
    digest,
    offsets_of,
    per_run_sets,
    run_of,
    track_momentum,
)
from b2calib.engine import Collector
from b2calib.fit import fit_channels
from b2calib.geometry import ecl

__all__ = [
    "CRATE_PAYLOAD",
    "CRYSTAL_PAYLOAD",
    "ECLTimeAlgorithm",
    "ECLTimeCollector",
    "measured_crystals",
    "reexpress",
    "split_offsets",
    "time_calibration",
]

CRYSTAL_PAYLOAD = "ECLCrystalTimeOffset"
CRATE_PAYLOAD = "ECLCrateTimeOffset"
C_CM_PER_NS = 29.9792458
#: Residual binning (ns): wide enough for uncalibrated crate + crystal offsets.
RESIDUAL_BINS = (300, -30.0, 30.0)
#: Electron selection (GeV).
_E_MIN_P = 2.0
_EOP_MIN = 0.7
#: Time of flight from the nominal IP to each crystal's front face (ns).
TOF_NS: F = ecl.flight_distance(np.arange(1, ecl.N_CRYSTALS + 1)) / C_CM_PER_NS

DEFAULT_CONFIG: dict[str, Any] = {
    "min_entries": 20,
    "crate_min_entries": 20,
    "crystal_spread": 1.5,
    "tolerance": 0.1,
    "payload_boundaries": [],
    "find_boundaries": True,
    "step_min": 1.0,
    "step_significance": 5.0,
}


@numba.njit(cache=True, nogil=True)
def _centre_digit(dig_off, dig_cell, cl_evt, cl_cell):  # type: ignore[no-untyped-def,unused-ignore]
    out = np.full(cl_evt.shape[0], -1, np.int64)
    for k in range(cl_evt.shape[0]):
        e = cl_evt[k]
        for d in range(dig_off[e], dig_off[e + 1]):
            if dig_cell[d] == cl_cell[k]:
                out[k] = d
                break
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class ECLTimeCollector(Collector):
    """Time residual of the central crystal of Bhabha electrons, per crystal and per crate.

    ``runs`` maps (exp, run) to the index of its applied offsets: ``crystal[i]`` (8736) and
    ``crate[i]`` (52); ``key`` is their digest. Histograms ``time_crystal`` (cell x residual)
    and ``time_crate`` (crate x residual), residual = t - T0 - flight - crystal - crate (ns).
    """

    runs: tuple[tuple[int, int, int], ...] = ()
    crystal: tuple[F, ...] = ()
    crate: tuple[F, ...] = ()
    key: str = ""
    version: ClassVar[int] = 1

    @property
    def branches(self) -> dict[str, str]:
        return (
            EVENT_BRANCHES
            | CLUSTER_BRANCHES
            | TRACK_BRANCHES
            | DIGIT_BRANCHES
            | {
                "ECLCalDigits_m_Time": "var * float32",
                "EventT0_m_eventT0": "float32",
                "EventT0_m_hasEventT0": "int8",
            }
        )

    def _offsets(self, run: RunKey) -> F:
        for exp, r, i in self.runs:
            if (exp, r) == run:
                return np.asarray(self.crystal[i] + self.crate[i][CRATE - 1])
        return np.zeros(ecl.N_CRYSTALS)

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        offsets = self._offsets(run_of(events))
        num = ak.num(events["ECLClusters_m_energy"])
        evt = np.repeat(np.arange(len(events)), ak.to_numpy(num))
        energy = ak.to_numpy(ak.flatten(events["ECLClusters_m_energy"]))
        cell = ak.to_numpy(ak.flatten(events["ECLClusters_m_maxCellId"])).astype(np.int64)
        is_track = ak.to_numpy(ak.flatten(events["ECLClusters_m_isTrack"]))
        ti = ak.to_numpy(ak.flatten(events["ECLClusters_m_trackIndex"])).astype(np.int64)
        p, toff = track_momentum(events)
        ntrk = np.diff(toff)[evt]
        has_t0 = ak.to_numpy(events["EventT0_m_hasEventT0"])[evt] == 1
        sel = (is_track == 1) & (ti >= 0) & (ti < ntrk) & has_t0
        sel &= (cell >= 1) & (cell <= ecl.N_CRYSTALS)
        idx = np.flatnonzero(sel)
        pm = p[toff[evt[idx]] + ti[idx]]
        idx = idx[(pm > _E_MIN_P) & (energy[idx] / np.maximum(pm, 1e-9) > _EOP_MIN)]
        # the digits as read (the largest arrays of the event): only the electrons' central
        # digits are widened, as a widened copy of all would give them
        dig_cell = ak.to_numpy(ak.flatten(events["ECLCalDigits_m_CellId"]))
        dig_time = ak.to_numpy(ak.flatten(events["ECLCalDigits_m_Time"]))
        dig_off = offsets_of(ak.num(events["ECLCalDigits_m_CellId"]))
        d = _centre_digit(dig_off, dig_cell, evt[idx], cell[idx])
        found = d >= 0
        idx, d = idx[found], d[found]
        c = cell[idx]
        t0 = ak.to_numpy(events["EventT0_m_eventT0"])[evt[idx]].astype(np.float64)
        resid = dig_time[d].astype(np.float64) - t0 - TOF_NS[c - 1] - offsets[c - 1]
        axis = hist.axis.Regular(
            *RESIDUAL_BINS, name="residual", label="t - T0 - tof - offsets (ns)"
        )
        h_cell = hist.Hist(cell_axis(), axis, storage=hist.storage.Double())
        h_cell.fill(c, resid)
        h_crate = hist.Hist(crate_axis(), axis, storage=hist.storage.Double())
        h_crate.fill(CRATE[c - 1], resid)
        return {"time_crystal": h_cell, "time_crate": h_crate}


def _applied(constants: Constants, run: RunKey) -> tuple[F, F]:
    crystal = applied_column(constants, CRYSTAL_PAYLOAD, run, 0.0, ecl.N_CRYSTALS)
    crate = applied_column(constants, CRATE_PAYLOAD, run, 0.0, ecl.N_CRATES)
    return crystal, crate


def _time_factory(constants: Constants, runs: Sequence[RunKey]) -> ECLTimeCollector:
    index, sets = per_run_sets({r: _applied(constants, r) for r in runs})
    crystal = tuple(s[0] for s in sets)
    crate = tuple(s[1] for s in sets)
    return ECLTimeCollector(index, crystal, crate, digest(*crystal, *crate) if sets else "")


def split_offsets(total: F, total_err: F, ok: np.ndarray) -> tuple[F, F, F, F, np.ndarray]:
    """Split per-crystal total offsets into crate and crystal parts.

    Crate = mean total of its OK crystals; crystal = total - crate. Uncertainties account for
    the crystal's own share of its crate mean.

    Parameters
    ----------
    total, total_err
        Total offset (crystal + crate, ns) of every crystal and its uncertainty.
    ok
        The crystals measured (their totals enter their crates' means).

    Returns
    -------
    crystal, crystal_err, crate, crate_err, n
        Crystal offsets and uncertainties (NaN where not ``ok``), crate offsets and
        uncertainties (NaN for a crate without an ``ok`` crystal) and the number of ``ok``
        crystals per crate. The only ``ok`` crystal of a crate has offset 0 and uncertainty
        NaN: the constraint fixes it, its measurement is all in the crate's offset.
    """
    k = CRATE - 1
    n = np.bincount(k, weights=ok.astype(float), minlength=ecl.N_CRATES)
    s = np.bincount(k, weights=np.where(ok, total, 0.0), minlength=ecl.N_CRATES)
    v = np.bincount(k, weights=np.where(ok, total_err**2, 0.0), minlength=ecl.N_CRATES)
    with np.errstate(invalid="ignore", divide="ignore"):
        crate = np.where(n > 0, s / n, np.nan)
        crate_err = np.where(n > 0, np.sqrt(v) / n, np.nan)
        nk = n[k]
        var = total_err**2 * (1.0 - 2.0 / nk) + v[k] / nk**2
        crystal = np.where(ok, total - crate[k], np.nan)
        crystal_err = np.where(ok & (nk > 1), np.sqrt(np.maximum(var, 0.0)), np.nan)
    crystal = np.where(ok & (nk == 1), 0.0, crystal)  # exactly, whatever the rounding
    return crystal, crystal_err, crate, crate_err, n


def measured_crystals(value: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """The crystals whose totals entered their crates' offsets: those of finite value in an
    ECLCrystalTimeOffset payload (the OK ones and a crate's single measured crystal, which is
    NOT_ENOUGH_DATA with value 0). The mask to re-express true offsets with
    (:func:`reexpress`).

    Parameters
    ----------
    value
        The ``value`` column of the crystal payload (8736, by cellID).

    Returns
    -------
    numpy.ndarray
        Boolean mask over crystals.
    """
    return np.isfinite(np.asarray(value, dtype=np.float64))


def reexpress(crystal: F, crate: F, ok: np.ndarray) -> tuple[F, F]:
    """True offsets in the calibration's convention: the measured crystals of each crate
    average to zero (``ok``: :func:`measured_crystals` of the calibrated payload), the crate
    takes their mean."""
    k = CRATE - 1
    n = np.bincount(k, weights=ok.astype(float), minlength=ecl.N_CRATES)
    s = np.bincount(k, weights=np.where(ok, crystal, 0.0), minlength=ecl.N_CRATES)
    mean = np.where(n > 0, s / np.maximum(n, 1), 0.0)
    return crystal - mean[k], crate + mean


def _sampling_spread(hits: F) -> F:
    """Per crate, how far the hit-weighted mean of its crystals' offsets (what a fit of all its
    hits measures) may lie from their plain mean over the crate (what a crate-level constant
    stands for), in units of the crystal-offset spread: sqrt(sum w_i^2 - 1/N - 1/n) with w_i
    the crystals' shares of the crate's n hits and N its crystals (the 1/n part is in the fit
    error already: the crystals' spread widens the distribution the fit sees)."""
    k = CRATE - 1
    total = np.bincount(k, weights=hits, minlength=ecl.N_CRATES)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = hits / total[k]
        sum_w2 = np.bincount(k, weights=np.nan_to_num(w) ** 2, minlength=ecl.N_CRATES)
    n = np.bincount(k, minlength=ecl.N_CRATES)
    # the fit's own error already holds sigma^2 / hits of it (each hit samples a crystal)
    with np.errstate(divide="ignore"):
        own = np.where(total > 0, 1.0 / total, 0.0)
    return np.sqrt(np.maximum(sum_w2 - 1.0 / n - own, 0.0))


class ECLTimeAlgorithm(Algorithm):
    """Crystal and crate time offsets; ITERATE until the shifts are small."""

    name = "ecl_time"
    payloads = (CRYSTAL_PAYLOAD, CRATE_PAYLOAD)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        # the entries are counts of electrons: fewer than one is none
        h, hc = require(
            data, "time_crystal", "time_crate", min_entries=1, message="no Bhabha electrons"
        )
        a_cryst, a_crate = _applied(data.constants, data.runs[0])
        fits = fit_channels(h, min_entries=cfg["min_entries"])
        ok = fits.status == ChannelStatus.OK
        mu, mu_err = fits.values["mu"], fits.errors["mu"]
        total = a_cryst + a_crate[CRATE - 1] + mu
        crystal, crystal_err, crate, crate_err, n_ok = split_offsets(total, mu_err, ok)
        # crates without a measured crystal: the crate-level fit of all their hits
        crate_fits = fit_channels(hc, min_entries=cfg["crate_min_entries"])
        level = (n_ok == 0) & (crate_fits.status == ChannelStatus.OK)
        spread = cfg["crystal_spread"] * _sampling_spread(h.values().sum(axis=1))
        crate = np.where(level, a_crate + crate_fits.values["mu"], crate)
        crate_err = np.where(level, np.hypot(crate_fits.errors["mu"], spread), crate_err)
        crate_ok = np.isfinite(crate) & np.isfinite(crate_err)
        if not crate_ok.any():
            raise NotEnoughData(f"no crate with {cfg['crate_min_entries']} entries")
        crystal_status = fits.status.copy()
        # alone in its crate: the crate carries its measurement, the constraint its offset (0)
        alone = ok & (n_ok[CRATE - 1] == 1)
        crystal_status[alone] = ChannelStatus.NOT_ENOUGH_DATA
        crate_status = np.where(
            crate_ok,
            ChannelStatus.OK,
            np.where(
                crate_fits.status == ChannelStatus.FAILED,
                ChannelStatus.FAILED,
                ChannelStatus.NOT_ENOUGH_DATA,
            ),
        ).astype(np.int8)
        with np.errstate(invalid="ignore"):
            shift_crystal = np.abs(mu) / mu_err
            shift_crate = np.abs(crate - a_crate) / crate_err
        shifts = np.concatenate([shift_crystal[ok], shift_crate[crate_ok & ~level]])
        max_shift = float(shifts.max()) if shifts.size else 0.0
        rms_shift = float(np.sqrt(np.mean(shifts**2))) if shifts.size else 0.0
        previous = data.constants.get(CRATE_PAYLOAD, *data.runs[0])
        done = previous is not None and rms_shift < cfg["tolerance"]
        diag = Diagnostics(histograms={"time_crystal": h, "time_crate": hc})
        diag.add_fits("crystal_fits", fits, np.arange(1, ecl.N_CRYSTALS + 1))
        diag.add_fits("crate_fits", crate_fits, np.arange(1, ecl.N_CRATES + 1))
        meta: dict[str, Any] = {
            "method": "basf2 eclBhabhaTAlgorithm: crystal Gaussian fits, crate and crystal steps",
            "convention": "t = t_raw - crystal - crate; the measured crystals (finite value) of "
            "each crate average to zero; a crate's only measured crystal is NOT_ENOUGH_DATA with "
            "value 0, its measurement in the crate offset",
            "iteration": data.iteration,
        }
        crystal_payload = channel_payload(
            CRYSTAL_PAYLOAD,
            {"cellID": np.arange(1, ecl.N_CRYSTALS + 1, dtype=np.int32)},
            crystal,
            crystal_err,
            crystal_status,
            units="ns",
            **meta,
        )
        crate_payload = channel_payload(  # a crate not OK has neither value nor error
            CRATE_PAYLOAD,
            {"crate": np.arange(1, ecl.N_CRATES + 1, dtype=np.int16)},
            {"value": crate, "crate_level": level.astype(np.int8)},
            crate_err,
            crate_status,
            units={"value": "ns", "crate_level": "1"},
            flagged=np.nan,
            **meta,
        )
        message = (
            f"{int(ok.sum() - alone.sum())} crystals ({int(alone.sum())} more alone in their "
            f"crate), {int(crate_ok.sum())} crates "
            f"({int(level.sum())} crate-level); max shift {max_shift:.3g} sigma, "
            f"rms {rms_shift:.3g}"
        )
        return AlgorithmResult(
            AlgorithmStatus.OK if done else AlgorithmStatus.ITERATE,
            [crystal_payload, crate_payload],
            diag,
            message,
        )

    def boundaries(self, data: AlgorithmInput) -> list[RunKey]:
        """Runs where a crate's mean residual steps, and where the offsets the collector
        applied change (see :func:`~b2calib.detectors.ecl._common.crate_step_boundaries`)."""

        def applied(run: RunKey) -> F:
            crystal, crate = _applied(data.constants, run)
            return crystal + crate[CRATE - 1]

        return crate_step_boundaries(data, "time_crate", applied)


def _explain_crystal(context: ViewContext, fit: ChannelFit) -> str | None:
    """Why a crystal's payload status differs from its fit's, and what stands for it."""
    crate = int(CRATE[context.channel - 1])
    if fit.ok and context.status != "OK":
        return (
            f"the only measured crystal of crate {crate}: its measurement is in the crate "
            "offset, its own offset is 0 by the convention (a constraint, not a measurement)"
        )
    if not fit.ok:
        return f"the offset of crate {crate} applies to this crystal alone"
    return None


def _explain_crate(context: ViewContext, fit: ChannelFit) -> str | None:
    """Where a crate's offset comes from: its crystals, or its own fit."""
    crate = context.channel
    crystals = context.table("crystal_fits")
    measured = int(np.sum((crystals["status"] == ChannelStatus.OK) & (crate == CRATE)))
    level = int(context.payload.values["crate_level"][context.row])
    if level:
        return (
            f"crate-level constant: none of its crystals has {context.config.get('min_entries')}"
            " entries, the offset is applied + mu of this fit, its error includes the "
            "unknown spread of the crystals around the crate"
        )
    if measured:
        return (
            f"the offset is the mean total offset of its {measured} measured crystals; this "
            "fit of all its hits is used only for a crate without a measured crystal"
        )
    return "no measured crystal and no crate-level fit: no offset"


def _applied_offsets(context: ViewContext) -> tuple[F, F] | None:
    """The crystal and crate offsets the collector applied in this execution: the previous
    iteration's (``None`` for a first iteration, whose offsets came from the tags)."""
    previous = context.previous_payloads()
    if CRYSTAL_PAYLOAD not in previous or CRATE_PAYLOAD not in previous:
        return None
    crystal = dense_column(previous[CRYSTAL_PAYLOAD].value("value"), 0.0)
    crate = dense_column(previous[CRATE_PAYLOAD].value("value"), 0.0)
    return crystal, crate


class _TimeFit(HistogramFit):
    """The residual fit of a crystal or a crate, with the numbers its offset is made of: the
    offsets applied (the previous iteration's), the total (applied + mu) and, for a crystal,
    its crate's offset."""

    def parameters_for(
        self, context: ViewContext, fit: ChannelFit
    ) -> dict[str, tuple[float, float]]:
        p = dict(fit.parameters)
        applied = _applied_offsets(context) if fit.ok else None
        if applied is None:
            return p
        crystal, crate = applied
        mu, mu_err = p["mu"]
        if self.fits == "crystal_fits":
            k = int(CRATE[context.channel - 1]) - 1
            total = float(crystal[context.channel - 1] + crate[k])
            own = context.execution_payloads().get(CRATE_PAYLOAD)
            p["applied"] = (total, math.nan)
            p["total"] = (total + mu, mu_err)
            if own is not None:
                p["crate offset"] = (
                    float(own.value("value")[k]),
                    float(own.errors["value"][k]),
                )
        else:
            a = float(crate[context.channel - 1])
            p["applied"] = (a, math.nan)
            p["total"] = (a + mu, mu_err)
        return p


def _crystal_relation(context: ViewContext, fit: ChannelFit) -> str | None:
    p = fit.parameters
    if not fit.ok or "total" not in p or "crate offset" not in p:
        return None
    a, mu, c = p["applied"][0], p["mu"][0], p["crate offset"][0]
    return f"offset = applied {a:.4f} + mu {mu:.4f} - crate offset {c:.4f} = {a + mu - c:.4f} ns"


def _explain_crystal_all(context: ViewContext, fit: ChannelFit) -> str | None:
    relation = _crystal_relation(context, fit)
    if relation is None and fit.ok:  # a first iteration: the applied offsets came from tags
        relation = (
            "offset = crystal + crate offsets applied + mu, minus the crate's offset (the mean "
            "of its measured crystals)"
        )
    parts = [relation, _explain_crystal(context, fit)]
    return "; ".join(x for x in parts if x) or None


#: The drill-down of the two payloads: the crystal and crate residual histograms with the
#: Gaussian fits the algorithm made (:func:`b2calib.fit.fit_channels`, no background).
FIT_VIEWS = {
    CRYSTAL_PAYLOAD: _TimeFit(
        "time_crystal",
        "crystal_fits",
        GaussPeak(),
        min_entries="min_entries",
        explain=_explain_crystal_all,
    ),
    CRATE_PAYLOAD: _TimeFit(
        "time_crate",
        "crate_fits",
        GaussPeak(),
        min_entries="crate_min_entries",
        explain=_explain_crate,
    ),
}


def time_calibration() -> Calibration:
    """The ``ecl-time`` calibration declaration."""
    return Calibration(
        name="ecl-time",
        validation=PayloadComparison(
            per_payload={
                # crystal time offsets (ns): a few ns is a real move
                "ECLCrystalTimeOffset": PayloadComparison(max_abs_change=2.0),
                # crate offsets (ns): fewer, better measured
                "ECLCrateTimeOffset": PayloadComparison(
                    max_abs_change=1.0, error_outlier_fraction=0.2
                ),
            }
        ),
        expert="ecl-calibration@b2calib.example",
        inputs={"bhabha": CollectorInput(_time_factory, ("hlt_bhabha",))},
        algorithms=[ECLTimeAlgorithm()],
        strategy=SequentialBoundaries(),
        run_type="physics",
        expert_config=dict(DEFAULT_CONFIG),
        max_iterations=5,
        fit_views=FIT_VIEWS,
        description=(
            "ECL crystal and crate time offsets (t = t_raw - crystal - crate) from Bhabha "
            "electrons: per-crystal Gaussian fits, crate and crystal steps, iterated; a new "
            "payload where a crate's timing steps."
        ),
    )


def __dir__() -> list[str]:
    return __all__
