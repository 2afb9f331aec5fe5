"""KLM strip efficiency (``klm-strip-efficiency``, KLMStripEfficiency).

Per strip plane, the efficiency is the number of selected crossings (extrapolated muon tracks,
KLM ExtHits) with a matched digit over the number of selected crossings, with the cuts of
basf2's ``KLMStripEfficiencyCollector`` (:func:`~b2calib.detectors.klm.collectors.
selected_for_efficiency`); every strip of a plane gets its plane's value, as in basf2. The
uncertainty is the half-width of the 68.27 % Jeffreys interval
(:func:`b2calib.calibration.toolkit.binomial_interval`), which
stays positive and inside [0, 1] at 0 and 1 where the normal approximation gives zero.

NOT_ENOUGH_DATA (basf2 ``KLMStripEfficiencyAlgorithm``): a plane with 0 < crossings <
``min_crossings`` (10), or an efficiency error above ``requested_precision`` (0.02). Planes
without crossings are not measured (their strips NOT_ENOUGH_DATA in the payload).

The IoV strategy, :class:`StripEfficiencyRunByRun`, follows basf2's custom KLM strip-efficiency
strategy: run by run; runs without crossings (KLM excluded) are ignored; a run without enough
data is merged into the next good run, else the previous one, when it has no crossings in a
plane that run lacks (it adds no newly measured plane); consecutive runs that cannot be merged
are calibrated together. A change of a plane's efficiency (the simulated high-voltage trip of
BKLM forward sector 3 layer 8) therefore comes out in the payloads of its own runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from b2calib.calibration import (
    Algorithm,
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Calibration,
    CollectorInput,
    Diagnostics,
    PayloadComparison,
)
from b2calib.calibration.fitview import CountingView, ViewContext
from b2calib.calibration.strategies import Execute, Execution, RequestBoundaries, Strategy
from b2calib.calibration.toolkit import (
    NotEnoughData,
    binomial_interval,
    channel_payload,
    guarded,
    require,
)
from b2calib.conditions import ChannelStatus
from b2calib.conditions.iov import IoV, RunKey
from b2calib.detectors.klm.collectors import StripEfficiencyCollector
from b2calib.geometry import klm

__all__ = [
    "STRIP_EFFICIENCY",
    "StripEfficiencyAlgorithm",
    "StripEfficiencyRunByRun",
    "strip_efficiency_calibration",
]

F = npt.NDArray[np.float64]

STRIP_EFFICIENCY = "KLMStripEfficiency"
_NPL = len(klm.PLANES)


class StripEfficiencyAlgorithm(Algorithm):
    """Plane efficiencies, every strip of a plane with its plane's value (see the module
    documentation). The diagnostics table ``planes`` (one row per plane: crossings, matched,
    efficiency, error, status) is what :class:`StripEfficiencyRunByRun` reads."""

    name = "strip_efficiency"
    payloads = (STRIP_EFFICIENCY,)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        hn, hk = require(data, "crossings", "matched", message="no KLM strip crossings")
        n = np.rint(hn.values()).astype(np.int64)
        k = np.rint(hk.values()).astype(np.int64)
        eff = np.divide(k, n, out=np.full(_NPL, np.nan), where=n > 0)
        lo, hi = binomial_interval(k, n, method="jeffreys")
        err = 0.5 * (hi - lo)
        min_n = int(cfg["min_crossings"])
        precision = float(cfg["requested_precision"])
        status = np.full(_NPL, ChannelStatus.OK, np.int8)
        status[n == 0] = ChannelStatus.NOT_ENOUGH_DATA
        few = (n > 0) & (n < min_n)
        imprecise = (n >= min_n) & (err > precision)
        status[few | imprecise] = ChannelStatus.NOT_ENOUGH_DATA
        diag = Diagnostics(
            histograms={"crossings": hn, "matched": hk},
            tables={
                "planes": {
                    "plane": np.arange(_NPL, dtype=np.int32),
                    "crossings": n,
                    "matched": k,
                    "efficiency": eff,
                    "error": err,
                    "interval_low": lo,
                    "interval_high": hi,
                    "status": status,
                }
            },
        )
        if n.sum() == 0:
            raise NotEnoughData("no selected KLM strip crossings (KLM excluded?)", diag)
        if few.any() or imprecise.any():
            worst = float(np.nanmax(np.where(n > 0, err, np.nan)))
            raise NotEnoughData(
                f"{int(few.sum())} plane(s) with 0 < crossings < {min_n}, "
                f"{int(imprecise.sum())} with an efficiency error > {precision} "
                f"(worst {worst:.3f})",
                diag,
            )
        strips = klm.PLANES[:, 5]
        value = np.repeat(eff, strips)
        error = np.repeat(err, strips)
        st = np.repeat(status, strips)
        payload = channel_payload(
            STRIP_EFFICIENCY,
            {"channel": np.arange(1, klm.N_CHANNELS + 1, dtype=np.int32)},
            value,
            error,
            st,
            units="1",
            description="strip efficiency (every strip of a plane with its plane's value)",
            method="matched digits / selected extrapolated crossings per plane, 68.27 % "
            "Jeffreys interval half-width",
        )
        measured = int((n > 0).sum())
        return AlgorithmResult(
            AlgorithmStatus.OK,
            [payload],
            diag,
            f"{measured} planes measured, mean efficiency {np.nanmean(eff):.3f}",
        )


def _planes(result: AlgorithmResult) -> npt.NDArray[np.bool_]:
    """The planes with crossings in an execution (all False without its table)."""
    table = result.diagnostics.tables.get("planes")
    if table is None:
        return np.zeros(_NPL, bool)
    return np.asarray(table["crossings"]) > 0


class StripEfficiencyRunByRun(Strategy):
    """basf2's KLM strip-efficiency strategy (see the module documentation).

    1. Every run alone: OK runs are *good*; runs without crossings are ignored (no payload,
       reported); the others lack data.
    2. A run lacking data is merged into the next good run of its experiment if it has no
       crossings in a plane the good run lacks, else into the previous good run on the same
       condition; the runs left over are calibrated together, range by range.
    3. Each good run (with what was merged into it) is executed again; the payloads are valid
       from their first run to the run before the next payload's first run (the last to its
       last run).
    """

    def run(
        self, runs: Sequence[RunKey], execute: Execute, boundaries: RequestBoundaries
    ) -> list[Execution]:
        out: list[Execution] = []
        for exp in sorted({r[0] for r in runs}):
            out += self._experiment(sorted(r for r in runs if r[0] == exp), execute)
        return [e for e in out if e.ok] + [e for e in out if not e.ok]

    def _experiment(self, runs: list[RunKey], execute: Execute) -> list[Execution]:
        single = {r: execute([r]) for r in runs}
        ignored = [r for r in runs if not _planes(single[r]).any()]
        live = [r for r in runs if _planes(single[r]).any()]
        good = [r for r in live if single[r].status is AlgorithmStatus.OK]
        groups: dict[RunKey, list[RunKey]] = {g: [g] for g in good}
        planes = {r: _planes(single[r]) for r in live}
        left: list[list[RunKey]] = []
        i = 0
        while i < len(live):
            if live[i] in groups:
                i += 1
                continue
            j = i
            while j < len(live) and live[j] not in groups:
                j += 1
            block = live[i:j]
            nxt = live[j] if j < len(live) else None
            prv = live[i - 1] if i > 0 else None
            # from the end of the block into the next good run, then from its start into the
            # previous one, while each adds no plane the good run lacks
            end = len(block)
            while nxt is not None and end > 0 and not (planes[block[end - 1]] & ~planes[nxt]).any():
                groups[nxt].append(block[end - 1])
                end -= 1
            start = 0
            while (
                prv is not None and start < end and not (planes[block[start]] & ~planes[prv]).any()
            ):
                groups[prv].append(block[start])
                start += 1
            if start < end:
                left.append(block[start:end])
            i = j
        executions: list[tuple[list[RunKey], AlgorithmResult]] = []
        for g in good:
            members = sorted(groups[g])
            result = execute(members) if len(members) > 1 else single[g]
            if result.status is not AlgorithmStatus.OK:  # merging never spoils a good run
                members, result = [g], single[g]
            executions.append((members, result))
        failed: list[Execution] = []
        for block in left:
            result = execute(block) if len(block) > 1 else single[block[0]]
            if result.status is AlgorithmStatus.OK:
                executions.append((block, result))
            else:
                failed.append(Execution(block, result, None))
        executions.sort(key=lambda e: e[0][0])
        out: list[Execution] = []
        for n, (members, result) in enumerate(executions):
            if n + 1 < len(executions):
                iov = IoV(*members[0]).close_before(*executions[n + 1][0][0])
            else:
                iov = IoV(*members[0], *runs[-1])
            out.append(Execution(members, result, iov))
        out += failed
        out += [Execution([r], single[r], None) for r in ignored]
        return out


def _plane(context: ViewContext) -> int:
    """The plane (0-based) of a strip."""
    return int(np.searchsorted(klm.PLANE_FIRST, context.channel, side="right") - 1)


def _describe(context: ViewContext, row: int) -> str:
    t = context.table("planes")
    n, k = int(t["crossings"][row]), int(t["matched"][row])
    cfg = context.config
    text = (
        f"{context.status}: no per-channel fit: this calibration counts matched track crossings "
        f"per plane; plane {row}: {k} of {n} matched, efficiency "
        f"{float(t['efficiency'][row]):.3f} [{float(t['interval_low'][row]):.3f}, "
        f"{float(t['interval_high'][row]):.3f}]; every strip of the plane has its value"
    )
    if context.status != "OK":
        text += (
            f" (needs {cfg.get('min_crossings')} crossings and an error below "
            f"{cfg.get('requested_precision')})"
        )
    return text


_VIEW = CountingView(
    "planes",
    "plane",
    _describe,
    channel_map=_plane,
    parameters={"efficiency": ("efficiency", "error"), "crossings": ("crossings", None)},
)


def strip_efficiency_calibration() -> Calibration:
    """``klm-strip-efficiency``: KLMStripEfficiency from tight mu-mu events."""
    return Calibration(
        name="klm-strip-efficiency",
        validation=PayloadComparison(
            max_abs_change=0.1, error_new_flagged_fraction=0.1
        ),  # efficiencies in [0, 1]: absolute
        expert="klm-calibration@b2calib.example",
        inputs={"crossings": CollectorInput(StripEfficiencyCollector(), ("hlt_mumu_2trk",))},
        algorithms=[StripEfficiencyAlgorithm()],
        strategy=StripEfficiencyRunByRun(),
        stage="post-tracking",
        input_format="cdst",
        run_type="physics",
        dq="Good Or Recoverable",
        expert_config={"min_crossings": 10, "requested_precision": 0.02},
        open_end=True,
        description="KLM strip efficiency (KLMStripEfficiency): matched digits / extrapolated "
        "crossings per plane with the basf2 collector cuts (14 matching digits, 4 in outer "
        "layers, 4 GeV/c without outer layers), Jeffreys interval; run by run, runs lacking data "
        "merged into a neighbouring good run when they add no newly measured plane.",
        fit_views={STRIP_EFFICIENCY: _VIEW},
    )


def __dir__() -> list[str]:
    return __all__
