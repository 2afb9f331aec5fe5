"""The Levenberg-Marquardt core shared by the batched per-channel fitters.

Every batched fitter (a Gaussian peak, a Novosibirsk peak, a shifted template) minimises the
binned Poisson likelihood ``sum(lambda - n log lambda)`` (the cost of iminuit's
``ExtendedBinnedNLL``) of all channels at once, with Fisher scoring (the expected information
``J^T diag(1/lambda) J``) and a damping per channel. They differ only in the model, its bounds
and which parameters are fixed; :func:`poisson_lm` takes those and does the rest.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import hist
import numpy as np
import numpy.typing as npt

from b2calib.exceptions import ConfigError

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
#: A model of the channels ``idx`` at parameters ``theta`` (len(idx), P): expected counts
#: (len(idx), B) and their Jacobian (len(idx), B, P).
Model = Callable[[F, I64], tuple[F, F]]

_TINY = 1e-12  # expected counts below this are empty bins: no information, no gradient


def nll(counts: F, lam: F) -> F:
    """Poisson negative log-likelihood per channel (up to a constant)."""
    lam = np.maximum(lam, _TINY)
    return np.asarray(np.sum(lam - counts * np.log(lam), axis=1), dtype=np.float64)


def fisher(jac: F, lam: F) -> F:
    """Expected information J^T diag(1/lambda) J, bins with vanishing lambda left out."""
    weight = np.where(lam > _TINY, 1.0 / np.maximum(lam, _TINY), 0.0)
    jt = np.swapaxes(jac, 1, 2)
    return np.asarray(np.matmul(jt, jac * weight[..., None]), dtype=np.float64)  # batched BLAS


def solve(a: F, b: F) -> F:
    """Batched a^-1 b; a stack with a singular matrix falls back to the pseudo-inverse (one
    singular channel must not stop the others)."""
    try:
        out = np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        out = (np.linalg.pinv(a) @ b[..., None])[..., 0]
    return np.asarray(out, dtype=np.float64)


def errors(info: F) -> tuple[npt.NDArray[np.bool_], F]:
    """Which channels have a usable information matrix, and the parameter errors from its
    inverse (NaN elsewhere).

    Usable means not degenerate once the parameters are put on a common scale: the condition
    number of ``D^-1/2 I D^-1/2`` (D the diagonal) below 1e12. The raw condition number would
    call a well-measured peak of a million entries singular merely because its yield and its
    position have information of very different sizes.
    """
    diag = np.einsum("cpp->cp", info)
    ok = np.all(diag > 0, axis=1) & np.all(np.isfinite(info), axis=(1, 2))
    scale = np.where(ok[:, None], 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0)), 1.0)
    scaled = info * scale[:, :, None] * scale[:, None, :]
    good = ok.copy()
    sub = scaled[ok]
    try:
        inv = np.linalg.inv(sub)
        # cond = |A| |A^-1| (2-norms) <= |A|_F |A^-1|_F: well below 1e12 is good for sure;
        # only the others need the singular values (the costly part for thousands of channels)
        with np.errstate(invalid="ignore", over="ignore"):
            bound = np.linalg.norm(sub, axis=(1, 2)) * np.linalg.norm(inv, axis=(1, 2))
        sure = bound < 1e11
    except np.linalg.LinAlgError:
        inv, sure = None, np.zeros(len(sub), dtype=bool)
    cond_ok = sure.copy()
    cond_ok[~sure] = np.linalg.cond(sub[~sure]) < 1e12
    good[ok] = cond_ok
    cov = np.full_like(info, np.nan)
    inv_good = np.linalg.inv(scaled[good]) if inv is None else inv[cond_ok]
    cov[good] = inv_good * scale[good, :, None] * scale[good, None, :]
    return good, np.sqrt(np.abs(np.einsum("cpp->cp", cov)))


@dataclass
class LMResult:
    """Where the iteration ended, per channel: parameters, the model there, convergence."""

    theta: F
    lam: F
    jac: F
    converged: npt.NDArray[np.bool_]
    iterations: I64
    nll: F


def compiled(module: str, name: str) -> Callable[..., Any] | None:
    """The compiled kernel ``name`` of ``module`` (numba), or None without numba; any other
    import error is raised (numba is there, but something the kernel needs is broken)."""
    try:
        return cast(Callable[..., Any], getattr(importlib.import_module(module), name))
    except ImportError as err:
        if err.name != "numba":
            raise
        return None


def over_threads(
    n: int, threads: int, min_per_thread: int, run: Callable[[slice], Sequence[npt.NDArray[Any]]]
) -> list[npt.NDArray[Any]]:
    """``run`` on contiguous slices of ``n`` channels, split over at most ``threads`` threads of
    at least ``min_per_thread`` channels each (the compiled fits release the GIL), and each of
    its returned arrays joined in channel order. Channels are independent: the split changes
    no result."""
    parts = max(1, min(threads, n // min_per_thread))
    bounds = np.linspace(0, n, parts + 1).astype(int).tolist()
    chunks = [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]
    if parts == 1:
        out = [run(chunks[0])]
    else:
        with ThreadPoolExecutor(max_workers=parts) as pool:
            out = list(pool.map(run, chunks))
    return [np.concatenate([o[k] for o in out]) for k in range(len(out[0]))]


def poisson_lm(
    counts: F,
    theta: F,
    model: Model,
    project: Callable[[F], F],
    *,
    max_iter: int,
    tol: float,
    floor_at_zero: Sequence[int] = (),
    frozen: npt.NDArray[np.bool_] | None = None,
) -> LMResult:
    """Minimise the Poisson likelihood of every channel (rows of ``counts``) from ``theta``.

    Parameters
    ----------
    model
        Expected counts and Jacobian of a subset of channels (see :data:`Model`).
    project
        Puts a proposed step back inside the parameter bounds (may work in place).
    floor_at_zero
        Parameters bounded below by 0 (a background): when at the bound with the gradient
        pointing below it, the parameter is held there for that step.
    frozen
        Boolean mask of parameters held at their start values.
    max_iter, tol
        Iteration limit; a channel converges when the EDM 0.5 g^T I^-1 g is below ``tol``.
        A channel whose damping grows beyond 1e8 stops unconverged.
    """
    nch, npar = theta.shape
    frozen = np.zeros(npar, dtype=bool) if frozen is None else frozen
    damping = np.full(nch, 1e-3)
    active = np.ones(nch, dtype=bool)
    converged = np.zeros(nch, dtype=bool)
    iters = np.zeros(nch, dtype=np.int64)
    lam, jac = model(theta, np.arange(nch))
    cur = nll(counts, lam)
    eye = np.eye(npar)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        iters[idx] += 1
        c, th, jac_a = counts[idx], theta[idx], jac[idx]
        resid = 1.0 - c / np.maximum(lam[idx], _TINY)
        grad = np.matmul(np.swapaxes(jac_a, 1, 2), resid[..., None])[..., 0]
        if frozen.any():
            jac_a = jac_a.copy()
            jac_a[..., frozen] = 0.0
            grad[:, frozen] = 0.0
        info = fisher(jac_a, lam[idx])
        if frozen.any():
            info[:, frozen, frozen] = 1.0
        for k in floor_at_zero:
            pinned = (th[:, k] <= 0.0) & (grad[:, k] > 0.0)
            grad[pinned, k] = 0.0
            info[pinned, k, :] = 0.0
            info[pinned, :, k] = 0.0
            info[pinned, k, k] = 1.0
        diag = np.einsum("cpp->cp", info)
        damped = info + damping[idx, None, None] * np.einsum("cp,pq->cpq", diag, eye)
        new = project(th - solve(damped, grad))
        lam_new, jac_new = model(new, idx)
        nll_new = nll(c, lam_new)
        better = nll_new <= cur[idx] + 1e-12 * np.abs(cur[idx])
        # EDM-like distance to the minimum, from the undamped information
        with np.errstate(invalid="ignore"):
            edm = 0.5 * np.einsum("cp,cp->c", grad, solve(info, grad))
        acc = idx[better]
        theta[acc], lam[acc], jac[acc], cur[acc] = (
            new[better],
            lam_new[better],
            jac_new[better],
            nll_new[better],
        )
        damping[acc] = np.maximum(damping[acc] / 10.0, 1e-9)
        damping[idx[~better]] *= 10.0
        done = (edm < tol) | (damping[idx] > 1e8)
        converged[idx] = (edm < tol) & np.isfinite(edm)
        active[idx[done]] = False
    return LMResult(theta, lam, jac, converged, iters, cur)


def channel_table(
    h: hist.Hist, value_range: tuple[float, float] | None, min_bins: int, what: str
) -> tuple[F, F]:
    """Counts (channels, bins) and bin edges of a channels x values histogram, restricted to
    the bins inside ``value_range`` (at least ``min_bins`` of them)."""
    if h.ndim != 2:
        raise ConfigError(f"{what} needs a channels x values histogram")
    edges = h.axes[1].edges
    counts = h.values().astype(np.float64)
    if value_range is not None:
        lo, hi = value_range
        sel = (edges[:-1] >= lo - 1e-12) & (edges[1:] <= hi + 1e-12)
        if sel.sum() < min_bins:
            raise ConfigError(f"value_range {value_range} keeps fewer than {min_bins} bins")
        first = int(np.flatnonzero(sel)[0])
        edges = edges[first : first + int(sel.sum()) + 1]
        counts = counts[:, sel]
    return counts, edges


def minimize(m: Any) -> tuple[F, F, bool, str, float]:
    """Run Migrad (and Hesse when it converged) on a prepared ``iminuit.Minuit``; values,
    errors, whether the minimum is valid and accurate, why not, and the minimum."""
    m.migrad()
    valid = bool(m.valid)
    if valid:
        m.hesse()
        valid = bool(m.valid and m.accurate)
    msg = (
        "OK"
        if valid
        else ("call limit reached" if m.fmin.has_reached_call_limit else "minimum not valid")
    )
    return np.array(m.values), np.array(m.errors), valid, msg, float(m.fval)
