"""What a CDC expert looks at after a calibration: stored diagnostics, comparisons, fit plots.

Used by the notebooks ``cdc_tracking`` and ``cdc_dedx``; everything is read back from the
conditions database (the payloads staged and the diagnostics stored with each execution), so
the same views work on any earlier calibration.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from b2calib.calibration import CalibrationReport, Diagnostics, toolkit
from b2calib.calibration.jobs import JobStore
from b2calib.conditions import ChannelStatus, ConditionsDB, Payload
from b2calib.detectors.cdc.tracking import N_ROWS, xt_covariance, xt_rows
from b2calib.fit.xt_relation import xt_gradient, xt_value

__all__ = [
    "compare",
    "final_diagnostics",
    "plot_board_fits",
    "plot_extreme_wires",
    "plot_run_fits",
    "plot_xt_rows",
    "status_counts",
    "xt_difference",
]

F = npt.NDArray[np.float64]


def final_diagnostics(db: ConditionsDB, report: CalibrationReport) -> list[Diagnostics]:
    """The diagnostics of the final execution of each payload of a calibration report."""
    store = JobStore(db)
    job = next(j for j in store.jobs(report.calibration) if j.key == report.job)
    steps = {s.id: s for s in store.steps(job)}
    out = []
    for execution in report.executions:
        data = store.diagnostics(steps[execution.step])
        out.append(Diagnostics() if data is None else Diagnostics.from_bytes(data))
    return out


def status_counts(payload: Payload) -> dict[str, int]:
    """Channels per :class:`ChannelStatus` of a payload (all OK when it has no status)."""
    status = np.zeros(len(payload), np.int8) if payload.status is None else payload.status
    return toolkit.status_counts(status)


def compare(new: Payload, previous: Payload, column: str = "value") -> dict[str, F]:
    """Per-channel difference of two payloads keyed alike: ``diff``, ``pull`` (difference over
    the new payload's quoted uncertainty) and ``ok`` (channels OK in the new payload)."""
    a = np.asarray(new.value(column), dtype=np.float64)
    b = np.asarray(previous.value(column), dtype=np.float64)
    err = np.asarray(new.errors.get(column, np.full(len(a), np.nan)), dtype=np.float64)
    ok = np.ones(len(a), bool) if new.status is None else new.status == ChannelStatus.OK
    diff = a - b
    with np.errstate(invalid="ignore", divide="ignore"):
        pull = diff / err
    return {"diff": diff, "pull": pull, "ok": ok.astype(np.float64)}


def xt_difference(new: Payload, previous: Payload, fractions: F | None = None) -> dict[str, F]:
    """x(t) of the new minus the previous relation at drift times of the previous one (rows x
    drift-time fractions of the boundary), with the new fit's uncertainty."""
    fr = np.array([0.2, 0.5, 0.8, 1.1]) if fractions is None else np.asarray(fractions)
    a, b = xt_rows(new), xt_rows(previous)
    tk = b[:, 6:7] * fr[None, :]
    grad = xt_gradient(np.nan_to_num(a), tk)
    sigma = np.sqrt(np.einsum("rni,rij,rnj->rn", grad, xt_covariance(new), grad))
    return {"t": tk, "diff": xt_value(a, tk) - xt_value(b, tk), "sigma": sigma}


def plot_board_fits(diag: Diagnostics, boards: list[int]) -> Any:
    """Residual histograms of T0 boards with their Gaussian fits (a holoviews layout)."""
    import holoviews as hv

    h = diag.histograms["board_residual"]
    fits = diag.tables["board_fits"]
    edges = h.axes[1].edges
    centers = 0.5 * (edges[1:] + edges[:-1])
    width = np.diff(edges)
    panels = []
    for b in boards:
        n, mu, sigma = fits["n"][b], fits["mu"][b], fits["sigma"][b]
        title = f"board {b}"
        plot = hv.Histogram((edges, h.values()[b]))
        if np.isfinite(mu):
            z = (centers - mu) / sigma
            model = n * width * np.exp(-0.5 * z * z) / (sigma * np.sqrt(2 * np.pi))
            plot = plot * hv.Curve((centers, model))
            title += f": {mu:+.2f} +- {fits['mu_err'][b]:.2f} ns"
        panels.append(plot.opts(title=title, xlabel="t - t_fit - T0 (ns)", width=320))
    return hv.Layout(panels).cols(len(boards))


def plot_xt_rows(diag: Diagnostics, payload: Payload, rows: list[int]) -> Any:
    """Profile points and the fitted x-t relation of (layer, lr) rows (a holoviews layout)."""
    import holoviews as hv

    pts = diag.tables["xt_points"]
    params = xt_rows(payload)
    panels = []
    for r in rows:
        if not 0 <= r < N_ROWS:
            raise ValueError(f"row {r} is not a (layer, lr) row 0..{N_ROWS - 1}")
        sel = (pts["row"] == r) & np.isfinite(pts["t"])
        plot = hv.ErrorBars((pts["t"][sel], pts["x"][sel], pts["x_err"][sel])) * hv.Scatter(
            (pts["t"][sel], pts["x"][sel])
        )
        if sel.any() and np.all(np.isfinite(params[r])):
            t = np.linspace(0, pts["t"][sel].max(), 200)
            plot = plot * hv.Curve((t, xt_value(params[r : r + 1], t)[0]))
            plot = plot * hv.VLine(params[r, 6])
        title = f"layer {r // 2} {'right' if r % 2 else 'left'}"
        panels.append(
            plot.opts(title=title, xlabel="drift time (ns)", ylabel="drift length (cm)", width=320)
        )
    return hv.Layout(panels).cols(len(rows))


def plot_run_fits(diags: list[Diagnostics], labels: list[str]) -> Any:
    """Track truncated-mean histograms of run-gain executions with their Gaussian fits."""
    import holoviews as hv

    panels = []
    for diag, label in zip(diags, labels, strict=True):
        h = diag.histograms["track_truncated_mean"]
        fit = diag.tables["run_fit"]
        edges = h.axes[0].edges
        centers = 0.5 * (edges[1:] + edges[:-1])
        n, mu, sigma = fit["n"][0], fit["mu"][0], fit["sigma"][0]
        z = (centers - mu) / sigma
        model = n * np.diff(edges) * np.exp(-0.5 * z * z) / (sigma * np.sqrt(2 * np.pi))
        plot = hv.Histogram((edges, h.values())) * hv.Curve((centers, model))
        panels.append(
            plot.opts(title=f"{label}: {mu:.4f}", xlabel="truncated mean / cosine", width=320)
        )
    return hv.Layout(panels).cols(len(panels))


def plot_extreme_wires(diag: Diagnostics, payload: Payload, count: int = 3) -> Any:
    """Hit dE/dx spectra of the wires with the most extreme gains, with their truncated-mean
    gain marked."""
    import holoviews as hv

    h = diag.histograms["extreme_wires"]
    wires = diag.tables["extreme_wires"]["wire"]
    edges = h.axes[1].edges
    gains = payload.value()
    order = np.argsort(np.abs(np.nan_to_num(gains[wires], nan=1.0) - 1.0))[::-1][:count]
    panels = []
    for i in order.tolist():
        w = int(wires[i])
        plot = hv.Histogram((edges, h.values()[i])) * hv.VLine(float(gains[w]))
        panels.append(
            plot.opts(title=f"wire {w}: gain {gains[w]:.3f}", xlabel="hit dE/dx", width=320)
        )
    return hv.Layout(panels).cols(len(panels))


def __dir__() -> list[str]:
    return __all__
