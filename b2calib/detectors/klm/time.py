"""KLM time calibration (``klm-time``): KLMTimeConstants (propagation delay along the strips,
ns/cm, per type: EKLM scintillator, BKLM scintillator, RPC phi, RPC z) and KLMTimeCableDelay
(per channel), as basf2's ``KLMTimeAlgorithm``.

The time of a crossed strip is ``t = digit time - flight time - event T0`` in the window of its
subsystem (:class:`~b2calib.detectors.klm.collectors.TimeCollector`), and
``t = cable delay + propagation delay x d + resolution`` with ``d`` the distance from the
crossing to the strip's readout end. The algorithm:

1. Preliminary per-channel shift: the Gaussian maximum-likelihood estimate of each channel's
   times (mean and standard deviation, from the per-channel sums).
2. Propagation delay per type from time against distance with each channel's shift removed:

   * RPCs (phi, z): the straight-line least-squares fit of ``t - shift`` against ``d`` with one
     intercept per channel (closed form from the sums), error from the residual scatter;
   * scintillators (EKLM, BKLM): a binned Poisson likelihood (``iminuit.cost.
     ExtendedBinnedNLL``) of the time histogram in four bins of distance along the strip,
     summed over every channel of the type; each channel contributes a Gaussian per distance
     bin centred on ``shift + delay x (its mean distance there - its mean distance)``, of
     width ``sqrt(resolution^2 + delay^2 var(d))``, normalised in the window, and a fraction of
     each distance bin's hits spread evenly over its time bins (noise digits on the crossed
     strip). Free: the delay and the resolution; the fraction is profiled (the likeliest at each
     point). Should Migrad's minimum be invalid at strategy 0, it is sought once more at
     strategy 1.

3. Cable delay per channel: ``mean(t) - delay x mean(d)``, error
   ``sqrt(s^2 / n + mean(d)^2 sigma_delay^2)`` with ``s`` the type's residual scatter.
   Channels with fewer than ``min_hits`` (50) hits take the mean of their nearest calibrated
   strips in the same plane, flagged NOT_ENOUGH_DATA, with the spread of the plane's calibrated
   delays (of the type's, for a plane with fewer than two) x ``sqrt(1 + 1/strips averaged)`` as
   error.

The scintillator likelihood runs on the time histograms in bins of ``fit_bin_width`` (2 ns,
against the 1.3 ns resolution: 2 % wider errors than 1 ns bins, four times faster). Its model
and the model's derivatives come from one compiled pass over the cells (:class:`_DelayModel`):
Minuit minimises with the analytic gradient instead of numerical derivatives. The pass takes the
normal distribution and density from the table of :mod:`b2calib.fit._template_lm` (libm's to
2.3e-16 absolute) where it spans: on the bench's sample, delays within 1.3e-7 of their errors and
errors within 3e-5 of libm's pass, at 0.6-0.7 of its time.

NOT_ENOUGH_DATA when a type's fit has fewer than ``min_hits_per_type`` hits or fewer than
``min_calibrated_fraction`` of the channels are calibrated (when fewer than that have
``min_hits`` hits, the scintillators' likelihood fit is not run: their delays in the
diagnostics are the straight line's); the strategy is
``SequentialRunByRun`` (runs merged until that is reached).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from iminuit import Minuit
from iminuit.cost import ExtendedBinnedNLL

from b2calib.calibration import (
    Algorithm,
    AlgorithmInput,
    AlgorithmResult,
    AlgorithmStatus,
    Calibration,
    CollectorInput,
    Diagnostics,
    PayloadComparison,
    SequentialRunByRun,
)
from b2calib.calibration.fitview import NoChannelFit, ViewContext
from b2calib.calibration.toolkit import (
    NotEnoughData,
    channel_payload,
    guarded,
    require,
    status_counts,
)
from b2calib.conditions import ChannelStatus
from b2calib.detectors.klm.collectors import (
    DISTANCE_BINS,
    MOMENTS,
    REFERENCE_DELAY,
    TIME_WINDOWS,
    TimeCollector,
)
from b2calib.fit._template_lm import SPAN, _normal
from b2calib.geometry import klm

__all__ = [
    "CABLE_DELAY",
    "TIME_CONSTANTS",
    "DelayFit",
    "TimeAlgorithm",
    "channel_sums",
    "fit_rpc_delay",
    "fit_scintillator_delay",
    "time_calibration",
]

F = npt.NDArray[np.float64]
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
B = npt.NDArray[np.bool_]

TIME_CONSTANTS = "KLMTimeConstants"
CABLE_DELAY = "KLMTimeCableDelay"
_NC = klm.N_CHANNELS
_TYPES = tuple(klm.TIME_TYPES)
_SCINT = (klm.EKLM_SCINT, klm.BKLM_SCINT)


def channel_sums(moments: F) -> dict[str, F]:
    """Per-channel sums (``n, t, tt, d, dd, td``) from the per-cell ``moments`` view
    (channel x distance bin, :data:`MOMENTS`)."""
    cells = moments.reshape(_NC, DISTANCE_BINS, len(MOMENTS))
    return {m: cells[:, :, k].sum(axis=1) for k, m in enumerate(MOMENTS)}


def _centred(s: dict[str, F]) -> tuple[F, F, F]:
    """Within-channel sums of squares and products: Sxx (d), Sxy (t, d), Syy (t)."""
    n = np.maximum(s["n"], 1.0)
    sxx = s["dd"] - s["d"] ** 2 / n
    sxy = s["td"] - s["t"] * s["d"] / n
    syy = s["tt"] - s["t"] ** 2 / n
    return sxx, sxy, syy


class DelayFit:
    """A propagation-delay fit: value and error (ns/cm), the residual time scatter ``s`` (ns),
    hits and channels used, validity and a message; ``background``: the fraction of the hits
    the scintillators' likelihood took for noise digits (0 for the straight line)."""

    def __init__(
        self,
        value: float,
        error: float,
        scatter: float,
        hits: int,
        channels: int,
        valid: bool,
        message: str = "",
    ) -> None:
        self.value, self.error, self.scatter = value, error, scatter
        self.hits, self.channels, self.valid, self.message = hits, channels, valid, message
        self.background = 0.0


def _residual_scatter(s: dict[str, F], use: B, delay: float) -> float:
    sxx, sxy, syy = _centred(s)
    rss = float(np.sum((syy - 2 * delay * sxy + delay**2 * sxx)[use]))
    dof = float(s["n"][use].sum()) - int(use.sum()) - 1
    return math.sqrt(max(rss, 0.0) / max(dof, 1.0))


def fit_rpc_delay(s: dict[str, F], use: B) -> DelayFit:
    """Straight-line least-squares fit of time against distance, one intercept per channel of
    ``use``: the slope ``sum Sxy / sum Sxx`` over the channels, error ``s / sqrt(sum Sxx)``."""
    sxx, sxy, _ = _centred(s)
    hits, nch = int(s["n"][use].sum()), int(use.sum())
    den = float(sxx[use].sum())
    if nch < 2 or den <= 0:
        return DelayFit(math.nan, math.nan, math.nan, hits, nch, False, "no distance lever arm")
    v = float(sxy[use].sum()) / den
    scatter = _residual_scatter(s, use, v)
    return DelayFit(v, scatter / math.sqrt(den), scatter, hits, nch, True)


def fit_scintillator_delay(
    cells: F,
    counts: F,
    edges: F,
    use: B,
    window: tuple[float, float],
    reference: float = REFERENCE_DELAY,
    start: tuple[float, float] | None = None,
) -> DelayFit:
    """Binned Poisson likelihood fit of the delay over the channels ``use`` of one type.

    Parameters
    ----------
    cells
        Per-cell sums (channel x distance bin x :data:`MOMENTS`).
    counts
        The type's histogram of ``t - reference x d`` (bins of ``edges``) x distance bin.
    edges
        Its time bin edges.
    window
        The window of ``t`` the hits were selected in.
    reference
        The delay taken out of the histogrammed times.
    start
        Starting delay and resolution (the straight-line fit's, :func:`fit_rpc_delay`: the
        minimisation then needs few steps); by default ``reference`` and 1 ns.
    use
        Channels entering the model (the others' hits are removed from ``counts``' total by
        leaving them out of the model: pass every channel with hits).
    """
    c = cells[use]
    hits, nch = int(c[:, :, 0].sum()), int(use.sum())
    # the distance bins laid end to end on one axis: bin k's times shifted by k x width
    width = float(edges[-1] - edges[0])
    flat_edges = np.concatenate(
        [[window[0]], *[edges[1:] + k * width for k in range(DISTANCE_BINS)]]
    )
    flat_counts = counts.T.reshape(-1)
    if nch < 2 or hits < 10:
        return DelayFit(math.nan, math.nan, math.nan, hits, nch, False, "too few hits")
    model = _WithBackground(
        _DelayModel(c, edges, window, reference), c[:, :, 0].sum(axis=0), edges, flat_counts
    )
    cost = ExtendedBinnedNLL(flat_counts, flat_edges, model.cdf, grad=model.grad)
    v0, s0 = start if start is not None and all(map(math.isfinite, start)) else (reference, 1.0)
    m = Minuit(cost, delay=v0, sigma=s0)
    m.errors["delay"] = 1e-3
    m.errors["sigma"] = 0.05
    m.limits["delay"] = (0.0, 0.3)
    m.limits["sigma"] = (0.05, 20.0)
    # the model's gradient is analytic: strategy 0 does not check it against a numerical one
    # (18 more evaluations of the model) and Hesse gives the errors after the minimum
    m.strategy = 0
    m.migrad()
    m.hesse()
    if not (m.valid and m.accurate):  # once more from Hesse's covariance, checking the gradient
        m.strategy = 1
        m.migrad()
        m.hesse()
    valid = bool(m.valid and m.accurate)
    v, e = float(m.values["delay"]), float(m.errors["delay"])
    scatter = float(m.values["sigma"])
    msg = "" if valid else f"fit not valid: {_fit_problems(m)}"
    fit = DelayFit(v, e, scatter, hits, nch, valid, msg)
    fit.background = model.fraction(v, scatter)
    return fit


#: The largest background fraction of :class:`_WithBackground`
_MAX_BACKGROUND = 0.5


def _fit_problems(m: Minuit) -> str:
    """What makes Minuit's result invalid, on one line (EDM, call limit, covariance)."""
    f = m.fmin
    if f is None:
        return "not run"
    problems = [
        text
        for bad, text in (
            (f.is_above_max_edm, f"EDM {f.edm:.2g} above {f.edm_goal:.2g}"),
            (f.has_reached_call_limit, "call limit reached"),
            (not f.has_covariance or not f.has_accurate_covar, "covariance not accurate"),
            (f.has_made_posdef_covar, "covariance forced positive-definite"),
            (f.hesse_failed, "Hesse failed"),
        )
        if bad
    ]
    return ", ".join(problems) or "minimum not valid"


class _WithBackground:
    """:class:`_DelayModel` with a fraction of each distance bin's hits spread evenly over its
    time bins: hits of noise digits on the crossed strip (uniform in time). The fraction is
    profiled: at each (delay, resolution) the one that maximises the likelihood of ``counts``
    (:func:`_profiled_fraction`), so Minuit still fits two parameters, and the gradient is the
    model's scaled by one minus the fraction (at the maximum the fraction's own derivative
    does not change the likelihood).

    Without it, the few such hits in a large sample sit where the Gaussians expect 1e-8 hits:
    each adds about 18 to the likelihood and pulls the fit, and the expected counts there are
    differences of cumulative sums of ~10^6 hits, rounded to ~1e-10: the likelihood became
    rough at the 0.01 level and Migrad's minimum invalid (klm-time failed on the bench's sample
    with 4x its events)."""

    def __init__(self, model: _DelayModel, hits: F, edges: F, counts: F) -> None:
        self.model = model
        self.counts = np.asarray(counts, dtype=np.float64)
        nb = len(edges) - 1
        share = (edges[1:] - edges[0]) / (edges[-1] - edges[0])  # of a bin's hits below edge j
        flat = np.zeros(len(hits) * nb + 1)
        below = 0.0
        for k, n in enumerate(hits.tolist()):
            flat[1 + k * nb : 1 + (k + 1) * nb] = below + n * share
            below += n
        self.flat = flat
        self._even = np.diff(flat)
        #: the last point's fraction: Minuit asks for cdf and grad at the same point
        self._last: tuple[float, float, float] | None = None

    def fraction(self, delay: float, sigma: float) -> float:
        """The background fraction that maximises the likelihood at (``delay``, ``sigma``)."""
        last = self._last
        if last is not None and last[0] == delay and last[1] == sigma:
            return last[2]
        gauss = np.diff(self.model.cdf(self.flat, delay, sigma))
        f = _profiled_fraction(gauss, self._even, self.counts)
        self._last = (delay, sigma, f)
        return f

    def cdf(self, x: F, delay: float, sigma: float) -> F:
        """Expected cumulative counts at the edges (``x`` is not used: the edges are fixed)."""
        f = self.fraction(delay, sigma)
        return (1.0 - f) * self.model.cdf(x, delay, sigma) + f * self.flat

    def grad(self, x: F, delay: float, sigma: float) -> F:
        """Derivatives of :meth:`cdf` in the delay (row 0) and the resolution (row 1)."""
        return (1.0 - self.fraction(delay, sigma)) * self.model.grad(x, delay, sigma)


def _profiled_fraction(gauss: F, even: F, counts: F) -> float:
    """The fraction ``f`` in [0, :data:`_MAX_BACKGROUND`] maximising the Poisson likelihood of
    ``counts`` in bins expecting ``(1 - f) gauss + f even``: the root of its derivative (the
    likelihood is concave in ``f``), by Newton's steps kept inside a bracket that bisection
    narrows, to 1e-12 of the fraction."""
    diff = even - gauss
    seen = counts > 0
    n, d, g = counts[seen], diff[seen], gauss[seen]
    total = float(diff.sum())

    def slope(f: float) -> tuple[float, float]:
        mu = g + f * d
        if np.any(mu <= 0.0):  # a hit where nothing is expected: the slope is +inf
            return math.inf, 0.0
        r = n * d / mu
        return float(r.sum()) - total, -float((r * d / mu).sum())

    lo, hi = 0.0, _MAX_BACKGROUND
    if slope(lo)[0] <= 0.0:
        return lo
    if slope(hi)[0] >= 0.0:
        return hi
    f = 1e-6
    for _ in range(100):
        s, curvature = slope(f)
        if s == 0.0:
            return f
        if s > 0.0:
            lo = f
        else:
            hi = f
        step = f - s / curvature if math.isfinite(s) and curvature < 0.0 else math.nan
        new = step if lo < step < hi else 0.5 * (lo + hi)
        if abs(new - f) <= 1e-12 * new or hi - lo <= 1e-12 * hi:
            return new
        f = new
    return f


class _DelayModel:
    """The model of :func:`fit_scintillator_delay`: the expected cumulative counts at the edges
    of the distance bins' time histograms laid end to end, and their derivatives in the delay
    and the resolution, both from one compiled pass (:func:`_delay_model_pass`).

    Each cell (channel ``i``, distance bin ``k`` with hits) is a Gaussian of the histogrammed
    time ``t - reference x d``, mean ``tbar_i + delay (d_ik - dbar_i) - reference d_ik`` and
    width ``sqrt(sigma^2 + (delay - reference)^2 var_ik)``, scaled to the cell's hits inside the
    window of ``t`` (mean without the reference term, width with ``delay`` for
    ``delay - reference``). Its cumulative sum at an edge is computed only within 6 widths of
    the mean (the largest width of its distance bin): 0 below, the whole weight above; a few
    edges per Gaussian instead of all of them.

    Minuit asks for the value and then the gradient at the same point (and iminuit's cost asks
    for the value again with the gradient), and Hesse for the same points more than once (4 of
    its 13 on the bench's fits): the last :data:`_KEPT` points' values (and gradients, where
    asked for) are kept, the same arrays the kernel gave there.
    """

    #: The points kept (Hesse's repeats are within its last 8).
    _KEPT = 16

    def __init__(self, cells: F, edges: F, window: tuple[float, float], reference: float):
        n_ck = cells[:, :, 0]
        n_c = np.maximum(n_ck.sum(axis=1), 1.0)
        tbar = cells[:, :, 1].sum(axis=1) / n_c
        dbar = cells[:, :, 3].sum(axis=1) / n_c
        # the cells with hits, distance bin by distance bin (channel order within each)
        k, i = np.nonzero(n_ck.T > 0)
        n = n_ck[i, k]
        dck = cells[i, k, 3] / n
        self._args = (
            np.asarray(edges, dtype=np.float64),
            np.searchsorted(k, np.arange(DISTANCE_BINS + 1)).astype(np.int64),
            tbar[i],
            dck - dbar[i],
            dck,
            np.maximum(cells[i, k, 4] / n - dck**2, 0.0),
            n,
            float(window[0]),
            float(window[1]),
            float(reference),
        )
        self._kept: dict[tuple[float, float], tuple[F, F | None]] = {}

    def _evaluate(self, delay: float, sigma: float, grad: bool) -> tuple[F, F | None]:
        at = (float(delay), float(sigma))
        kept = self._kept.get(at)
        if kept is None or (grad and kept[1] is None):
            kept = _delay_model_kernel(*self._args, at[0], at[1], with_grad=grad)
            self._kept.pop(at, None)
            if len(self._kept) >= self._KEPT:  # the oldest point out (dicts keep their order)
                del self._kept[next(iter(self._kept))]
            self._kept[at] = kept
        return kept

    def cdf(self, x: F, delay: float, sigma: float) -> F:
        """Expected cumulative counts at the edges (``x`` is not used: the edges are fixed)."""
        return self._evaluate(delay, sigma, grad=False)[0]

    def grad(self, x: F, delay: float, sigma: float) -> F:
        """Derivatives of :meth:`cdf` in the delay (row 0) and the resolution (row 1)."""
        g = self._evaluate(delay, sigma, grad=True)[1]
        assert g is not None
        return g


#: The least ``Phi(zb)`` from which ``Phi(zb) - Phi(za)`` rounds to ``Phi(zb)`` for any ``za``
#: below the normal table: the doubles below 2^-8 and up are at least 2^-61 (4.3e-19) apart,
#: ``Phi(za) <= Phi(-SPAN)`` is 1.13e-19, less than half that.
_PHI_FLOOR = 2.0**-8


@numba.njit(cache=True, nogil=True, inline="always")
def _normal_at(z: float, density: bool) -> tuple[float, float]:
    """The standard normal distribution and density at ``z``: from the table of
    :func:`b2calib.fit._template_lm.normal_table` within its span (libm's to 2.3e-16 absolute),
    libm's ``erfc`` and (if ``density``, else 0) ``exp`` beyond it (and for NaN)."""
    if -SPAN <= z <= SPAN:
        return _normal(z)
    pdf = math.exp(-0.5 * z * z) / _SQRT2PI if density else 0.0
    if z > SPAN:  # libm's 0.5 erfc(-z / sqrt 2) is 1 there (tested), without its cost
        return 1.0, pdf
    return 0.5 * math.erfc(-z / _SQRT2), pdf


@numba.njit(cache=True, nogil=True, inline="always")
def _delay_model_pass(
    edges: F,
    first: npt.NDArray[np.int64],
    tbar: F,
    u: F,
    dck: F,
    vck: F,
    n: F,
    lo: float,
    hi: float,
    reference: float,
    delay: float,
    sigma: float,
    with_grad: bool,
) -> tuple[F, F]:
    """:class:`_DelayModel` at (``delay``, ``sigma``): the expected cumulative counts at the
    flat edges, and (``with_grad``) their derivatives, shape (2, edges). Inlined into
    :func:`_delay_model_value` and :func:`_delay_model_grad` with ``with_grad`` a constant: the
    value alone (most of a fit's evaluations: Minuit's seed and Hesse) then computes no
    density."""
    nb = edges.shape[0] - 1
    bw = edges[1] - edges[0]
    nk = first.shape[0] - 1
    out = np.zeros(nk * nb + 1)
    gout = np.zeros((2, nk * nb + 1))
    cdf = np.empty(nb + 1)
    step = np.empty(nb + 1)
    gcdf = np.empty((2, nb + 1))
    gstep = np.empty((2, nb + 1))
    dm = np.empty(2)
    dsd = np.empty(2)
    dsw = np.empty(2)
    dnorm = np.empty(2)
    total = 0.0
    for k in range(nk):
        cdf[:] = 0.0
        step[:] = 0.0
        gcdf[:, :] = 0.0
        gstep[:, :] = 0.0
        base = 0.0
        gbase0 = 0.0
        gbase1 = 0.0
        sd_max = 0.0
        for j in range(first[k], first[k + 1]):
            sd_max = max(sd_max, math.sqrt(sigma**2 + (delay - reference) ** 2 * vck[j]))
        w = math.ceil(6.0 * sd_max / bw) + 1
        hits = 0.0
        for j in range(first[k], first[k + 1]):
            m = tbar[j] + delay * u[j]
            mr = m - reference * dck[j]
            sd = math.sqrt(sigma**2 + (delay - reference) ** 2 * vck[j])
            sw = math.sqrt(sigma**2 + delay**2 * vck[j])
            za, zb = (lo - m) / sw, (hi - m) / sw
            phib, pb = _normal_at(zb, with_grad)
            if not with_grad and za < -SPAN and phib >= _PHI_FLOOR:
                # phib - Phi(za) rounds to phib (see _PHI_FLOOR): libm's erfc not called
                phia, pa = 0.0, 0.0
            else:
                phia, pa = _normal_at(za, with_grad)
            inside = phib - phia
            norm = n[j] / max(inside, 1e-300)
            hits += n[j]
            c = math.floor((mr - edges[0]) / bw)
            beyond = c + w + 2  # the first edge past the window: the whole weight from there
            z0 = (edges[0] - mr) / sd
            phi0, d0 = _normal_at(z0, with_grad)
            base += norm * phi0
            if with_grad:
                # d/d(delay), d/d(sigma) of the mean, the widths and the normalisation
                dm[0], dm[1] = u[j], 0.0
                dsd[0], dsd[1] = (delay - reference) * vck[j] / sd, sigma / sd
                dsw[0], dsw[1] = delay * vck[j] / sw, sigma / sw
                for p in range(2):
                    dza = (-dm[p] - za * dsw[p]) / sw
                    dzb = (-dm[p] - zb * dsw[p]) / sw
                    dnorm[p] = -norm * (pb * dzb - pa * dza) / max(inside, 1e-300)
                gbase0 += dnorm[0] * phi0 + norm * d0 * (-dm[0] - z0 * dsd[0]) / sd
                gbase1 += dnorm[1] * phi0 + norm * d0 * (-dm[1] - z0 * dsd[1]) / sd
            for at in range(max(c - w, 0), min(c + w + 1, nb) + 1):
                z = (edges[at] - mr) / sd
                phi, dens = _normal_at(z, with_grad)
                cdf[at] += phi * norm
                if with_grad:
                    dens = dens * norm / sd
                    gcdf[0, at] += dnorm[0] * phi + dens * (-dm[0] - z * dsd[0])
                    gcdf[1, at] += dnorm[1] * phi + dens * (-dm[1] - z * dsd[1])
            if beyond <= nb:
                step[max(beyond, 0)] += norm
                if with_grad:
                    gstep[0, max(beyond, 0)] += dnorm[0]
                    gstep[1, max(beyond, 0)] += dnorm[1]
        run = 0.0
        grun0 = 0.0
        grun1 = 0.0
        # bin k's edges: the first is the previous bin's last (all of bin 0's for k = 0)
        skip = 0 if k == 0 else 1
        offset = 0 if k == 0 else k * nb + 1
        for at in range(nb + 1):
            run += step[at]
            if with_grad:
                grun0 += gstep[0, at]
                grun1 += gstep[1, at]
            if at < skip:
                continue
            out[offset + at - skip] = total + cdf[at] + run - base
            if with_grad:
                gout[0, offset + at - skip] = gcdf[0, at] + grun0 - gbase0
                gout[1, offset + at - skip] = gcdf[1, at] + grun1 - gbase1
        total += hits
    return out, gout


@numba.njit(cache=True, nogil=True)
def _delay_model_value(
    edges: F,
    first: npt.NDArray[np.int64],
    tbar: F,
    u: F,
    dck: F,
    vck: F,
    n: F,
    lo: float,
    hi: float,
    reference: float,
    delay: float,
    sigma: float,
) -> F:
    """:func:`_delay_model_pass` without the derivatives: the expected cumulative counts."""
    return _delay_model_pass(
        edges, first, tbar, u, dck, vck, n, lo, hi, reference, delay, sigma, False
    )[0]


@numba.njit(cache=True, nogil=True)
def _delay_model_grad(
    edges: F,
    first: npt.NDArray[np.int64],
    tbar: F,
    u: F,
    dck: F,
    vck: F,
    n: F,
    lo: float,
    hi: float,
    reference: float,
    delay: float,
    sigma: float,
) -> tuple[F, F]:
    """:func:`_delay_model_pass` with the derivatives."""
    return _delay_model_pass(
        edges, first, tbar, u, dck, vck, n, lo, hi, reference, delay, sigma, True
    )


def _delay_model_kernel(*args: Any, with_grad: bool) -> tuple[F, F | None]:
    """The model's values and (``with_grad``, else None) derivatives at ``args`` (those of
    :func:`_delay_model_value`)."""
    if with_grad:
        value, grad = _delay_model_grad(*args)
        return value, grad
    return _delay_model_value(*args), None


def _rebinned(h: Any, width: float) -> tuple[F, F]:
    """The counts (time x distance bin) and time edges of ``h`` in bins of about ``width``
    (whole numbers of its bins, the last one possibly narrower)."""
    counts = np.asarray(h.values(), dtype=np.float64)
    edges = np.asarray(h.axes[0].edges, dtype=np.float64)
    step = max(1, round(width / float(edges[1] - edges[0])))
    first = np.arange(0, len(edges) - 1, step)
    return np.add.reduceat(counts, first, axis=0), np.append(edges[first], edges[-1])


#: The plane row (of ``klm.PLANES``) of each channel, index channel - 1 (planes are contiguous).
_CHANNEL_PLANE = np.repeat(np.arange(len(klm.PLANES)), klm.PLANES[:, 5])


def _neighbour_values(value: F, ok: B, spread_of_plane: F) -> tuple[F, F, B]:
    """For every channel not ``ok``: the mean of the ``m`` nearest ``ok`` strips of its plane
    (both sides at the smallest distance), with error ``spread x sqrt(1 + 1/m)`` (a strip's own
    delay scatters about its neighbours' by the spread of the plane's ok values); NaN where the
    plane has none.

    The nearest ok strip at or before and at or after each channel come from running maxima and
    minima of the ok channels' indices, kept when in the channel's plane (one pass over all
    channels instead of one distance matrix per plane)."""
    idx = np.arange(_NC)
    left = np.maximum.accumulate(np.where(ok, idx, -1))
    right = np.minimum.accumulate(np.where(ok, idx, _NC)[::-1])[::-1]
    has_l = (left >= 0) & (_CHANNEL_PLANE[np.maximum(left, 0)] == _CHANNEL_PLANE)
    has_r = (right < _NC) & (_CHANNEL_PLANE[np.minimum(right, _NC - 1)] == _CHANNEL_PLANE)
    dl = np.where(has_l, idx - left, _NC)
    dr = np.where(has_r, right - idx, _NC)
    nearest = np.minimum(dl, dr)
    use_l, use_r = has_l & (dl == nearest), has_r & (dr == nearest)
    found = ~ok & (has_l | has_r)
    m = use_l.astype(np.int64) + use_r
    # (the sum of the one or two nearest values, as the sum over the plane's ok strips of the
    # nearest ones' values and zeros was: adding zeros is exact)
    total = np.where(use_l, value[np.maximum(left, 0)], 0.0) + np.where(
        use_r, value[np.minimum(right, _NC - 1)], 0.0
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        out_v = np.where(found, total / m, np.nan)
        out_e = np.where(found, spread_of_plane[_CHANNEL_PLANE] * np.sqrt(1.0 + 1.0 / m), np.nan)
    return out_v, out_e, found


def _plane_spread(value: F, ok: B) -> F:
    """Per plane: ``np.std`` of the ``ok`` channels' values (NaN with fewer than two), computed
    for all planes with the same number of ok channels at once (rows of one matrix: numpy
    reduces each row as it reduces a plane's own array, the same result bit for bit)."""
    good = np.bincount(_CHANNEL_PLANE[ok], minlength=len(klm.PLANES))
    out = np.full(len(klm.PLANES), np.nan)
    order = np.flatnonzero(ok)  # the ok channels, plane by plane in channel order
    start = np.concatenate([[0], np.cumsum(good)[:-1]])
    for size in np.unique(good[good >= 2]):
        planes = np.flatnonzero(good == size)
        rows = value[order[start[planes][:, None] + np.arange(size)]]
        out[planes] = np.std(rows, axis=1)
    return out


class TimeAlgorithm(Algorithm):
    """Propagation delays per type and cable delays per channel (see the module documentation).

    Diagnostics: table ``channels`` (hits, preliminary shift and width, mean distance, cable
    delay, error, status, ``from_neighbours``), table ``types`` (delay, error, scatter, hits,
    channels, valid, the background fraction of the scintillators' fits), the per-type time
    histograms.
    """

    name = "time"
    payloads = (TIME_CONSTANTS, CABLE_DELAY)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        cfg = data.config
        names = ("moments", *(f"time_{k}" for k in _TYPES))
        hists = require(data, *names, message="no KLM digit times (KLM excluded?)")
        cells = np.asarray(hists[0].values(), dtype=np.float64).reshape(
            _NC, DISTANCE_BINS, len(MOMENTS)
        )
        s = {m: cells[:, :, k].sum(axis=1) for k, m in enumerate(MOMENTS)}
        n = s["n"]
        if n.sum() == 0:
            raise NotEnoughData("no KLM digit times in the windows (KLM excluded?)")
        typ = klm.strip_type(np.arange(1, _NC + 1))
        min_hits = int(cfg["min_hits"])
        with np.errstate(invalid="ignore", divide="ignore"):
            shift = s["t"] / n
            width = np.sqrt(np.maximum(s["tt"] / n - shift**2, 0.0))
            dbar = s["d"] / n
        fits: dict[int, DelayFit] = {}
        # too few channels with min_hits to calibrate the fraction asked for: the execution
        # lacks data whatever the delays, so the scintillators keep their straight-line fit
        # (the likelihood would cost nearly all of the execution's time)
        enough = float((n >= min_hits).mean()) >= float(cfg["min_calibrated_fraction"])
        likelihood: dict[int, tuple[Any, ...]] = {}
        for k in _TYPES:
            use = (typ == k) & (n >= 1)
            fits[k] = fit_rpc_delay(s, use)
            if k in _SCINT and not enough:
                fits[k].message = "straight line (too few channels for a likelihood fit)"
            elif k in _SCINT:
                counts, edges = _rebinned(hists[1 + _TYPES.index(k)], float(cfg["fit_bin_width"]))
                start = (fits[k].value, fits[k].scatter)
                likelihood[k] = (
                    cells,
                    counts,
                    edges,
                    use,
                    TIME_WINDOWS[k - 1],
                    REFERENCE_DELAY,
                    start,
                )
        # the two scintillator fits side by side (their model's compiled pass releases the GIL)
        with ThreadPoolExecutor(max(len(likelihood), 1)) as pool:
            done = dict(
                zip(
                    likelihood,
                    pool.map(lambda a: fit_scintillator_delay(*a), likelihood.values()),
                    strict=True,
                )
            )
        for k, fit in done.items():
            fits[k] = fit
            if fit.valid:  # the scatter about the fitted line, for the cable delays
                fit.scatter = _residual_scatter(s, (typ == k) & (n >= 1), fit.value)
        delay = np.array([fits[k].value for k in _TYPES])
        delay_err = np.array([fits[k].error for k in _TYPES])
        type_table = {
            "type": np.array(_TYPES, dtype=np.int8),
            "delay": delay,
            "error": delay_err,
            "scatter": np.array([fits[k].scatter for k in _TYPES]),
            "hits": np.array([fits[k].hits for k in _TYPES], dtype=np.int64),
            "channels": np.array([fits[k].channels for k in _TYPES], dtype=np.int64),
            "valid": np.array([fits[k].valid for k in _TYPES], dtype=np.int8),
            "background": np.array([fits[k].background for k in _TYPES]),
        }
        v_c = delay[typ - 1]
        cable = shift - v_c * dbar
        err = np.sqrt(
            np.array([fits[k].scatter for k in _TYPES])[typ - 1] ** 2 / np.maximum(n, 1)
            + dbar**2 * delay_err[typ - 1] ** 2
        )
        fit_ok = np.array([fits[k].valid for k in _TYPES])[typ - 1]
        ok = (n >= min_hits) & fit_ok & np.isfinite(cable) & np.isfinite(err) & (err > 0)
        status = np.where(ok, ChannelStatus.OK, ChannelStatus.NOT_ENOUGH_DATA).astype(np.int8)
        status[(n >= min_hits) & ~fit_ok] = ChannelStatus.FAILED
        spread = _plane_spread(cable, ok)
        # planes with fewer than two calibrated strips: the spread of their type
        type_spread = np.array(
            [
                np.std(cable[ok & (typ == k)]) if (ok & (typ == k)).sum() >= 2 else np.nan
                for k in _TYPES
            ]
        )
        plane_type = typ[klm.PLANE_FIRST - 1]
        spread = np.where(np.isfinite(spread), spread, type_spread[plane_type - 1])
        nv, ne, found = _neighbour_values(cable, ok, spread)
        found &= np.isfinite(ne)
        borrowed = found & ~ok & fit_ok
        value = np.where(ok, cable, np.where(borrowed, nv, np.nan))
        error = np.where(ok, err, np.where(borrowed, ne, np.nan))
        channel_table = {
            "channel": np.arange(1, _NC + 1, dtype=np.int32),
            "type": typ.astype(np.int8),
            "hits": n,
            "shift": shift,
            "width": width,
            "mean_distance": dbar,
            "cable_delay": value,
            "error": error,
            "status": status,
            "from_neighbours": borrowed.astype(np.int8),
        }
        diag = Diagnostics(
            histograms={f"time_{k}": hists[1 + i] for i, k in enumerate(_TYPES)},
            tables={"channels": channel_table, "types": type_table},
        )
        short = [
            klm.TIME_TYPES[k]
            for k in _TYPES
            if fits[k].hits < int(cfg["min_hits_per_type"]) and fits[k].hits > 0
        ]
        if short:
            raise NotEnoughData(
                f"fewer than {cfg['min_hits_per_type']} hits for {', '.join(short)}", diag
            )
        crossed_types = [k for k in _TYPES if fits[k].hits > 0]
        if not crossed_types:
            raise NotEnoughData("no KLM digit times", diag)
        bad = [
            klm.TIME_TYPES[k] + f" ({fits[k].message})" for k in crossed_types if not fits[k].valid
        ]
        if bad:
            return AlgorithmResult(
                AlgorithmStatus.FAILURE,
                diagnostics=diag,
                message=f"propagation-delay fit failed: {', '.join(bad)}",
            )
        frac = float(ok.mean())
        summary = status_counts(status)
        if frac < float(cfg["min_calibrated_fraction"]):
            raise NotEnoughData(
                f"{frac:.1%} of the channels have >= {min_hits} hits: {summary}", diag
            )
        constants = channel_payload(
            TIME_CONSTANTS,
            {"type": np.array(_TYPES, dtype=np.int8)},
            delay,
            delay_err,
            np.where(np.isfinite(delay), ChannelStatus.OK, ChannelStatus.NOT_ENOUGH_DATA),
            units="ns/cm",
            description="signal propagation delay along the strips per type (1 EKLM "
            "scintillator, 2 BKLM scintillator, 3 RPC phi, 4 RPC z)",
            method="RPC: straight line of time vs distance, one intercept per channel; "
            "scintillators: binned Poisson likelihood over the type's channels",
        )
        payload = channel_payload(
            CABLE_DELAY,
            {"channel": np.arange(1, _NC + 1, dtype=np.int32)},
            value,
            error,
            status,
            units="ns",
            description="strip time offset: t = t_raw - delay",
            method=f"mean time minus propagation; < {min_hits} hits: nearest calibrated "
            "strips of the plane (NOT_ENOUGH_DATA)",
            from_neighbours=int(borrowed.sum()),
        )
        delays = ", ".join(f"{klm.TIME_TYPES[k]} {fits[k].value:.4f}" for k in _TYPES)
        return AlgorithmResult(
            AlgorithmStatus.OK,
            [constants, payload],
            diag,
            f"delays (ns/cm) {delays}; {summary}, {int(borrowed.sum())} from neighbours",
        )


def _channel_detail(context: ViewContext) -> str:
    t = context.table("channels")
    i = int(np.flatnonzero(t["channel"] == context.channel)[0])
    text = (
        f"{float(t['hits'][i]):.0f} hits ({context.config.get('min_hits')} required), mean time "
        f"{float(t['shift'][i]):.3f} ns, width {float(t['width'][i]):.3f} ns, mean distance "
        f"{float(t['mean_distance'][i]):.1f} cm"
    )
    if int(t["from_neighbours"][i]):
        text += "; value taken from its neighbours"
    return text


_CHANNEL_VIEW = NoChannelFit(
    "the cable delay is the channel's mean hit time minus its type's fitted propagation delay "
    "times its mean distance (the per-type time x distance histograms time_1..4 are fitted, not "
    "the channels)",
    _channel_detail,
)
_TYPE_VIEW = NoChannelFit(
    "the propagation delay of each strip type is fitted on its time x distance histogram "
    "(diagnostics time_1..4), a 2-D fit the drill-down does not draw"
)


def time_calibration() -> Calibration:
    """``klm-time``: KLMTimeConstants and KLMTimeCableDelay from mu-mu events."""
    return Calibration(
        name="klm-time",
        validation=PayloadComparison(
            per_payload={
                "KLMTimeConstants": PayloadComparison(
                    max_rel_change=0.1, error_outlier_fraction=0.5
                ),  # 4 propagation speeds (ns/cm)
                "KLMTimeCableDelay": PayloadComparison(max_abs_change=2.0),  # ns per strip
            }
        ),
        expert="klm-calibration@b2calib.example",
        inputs={"times": CollectorInput(TimeCollector(), ("hlt_mumu_2trk",))},
        algorithms=[TimeAlgorithm()],
        strategy=SequentialRunByRun(),
        stage="post-tracking",
        input_format="cdst",
        run_type="physics",
        magnet_on=True,
        expert_config={
            "min_hits": 50,
            "min_hits_per_type": 1000,
            "min_calibrated_fraction": 0.25,
            "fit_bin_width": 2.0,
        },
        open_end=True,
        description="KLM time (KLMTimeConstants, KLMTimeCableDelay): digit time minus flight "
        "time and event T0 in the subsystem windows; per-channel Gaussian shift; propagation "
        "delay per type (straight line for RPCs, binned Poisson likelihood for scintillators); "
        "cable delay per channel, < 50 hits from the neighbouring strips (flagged).",
        fit_views={TIME_CONSTANTS: _TYPE_VIEW, CABLE_DELAY: _CHANNEL_VIEW},
    )


def __dir__() -> list[str]:
    return __all__
