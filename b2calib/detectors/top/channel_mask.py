"""TOP channel masks (``top-channel-mask``, TOPCalChannelMask): dead and hot channels from the
hits per channel in collision events.

A channel is dead if ``hits <= mean / 5`` and hot if ``hits > max(2 mean, mean + 6 rms)``, mean
and rms from 3-sigma clipping over its board stack (128 pixels read by one set of boards).
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
    Constants,
    Diagnostics,
    PayloadComparison,
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
from b2calib.detectors.top import fitviews
from b2calib.detectors.top.collectors import ChannelHitCollector
from b2calib.exceptions import CalibrationError
from b2calib.geometry import top

__all__ = [
    "CHANNEL_KEYS",
    "CHANNEL_MASK",
    "N_BOARDSTACKS",
    "ChannelMaskAlgorithm",
    "boardstack_of",
    "channel_mask_calibration",
    "clipped_mean",
    "dead_channels",
    "mask_channels",
]

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

CHANNEL_MASK = "TOPCalChannelMask"
_NM, _NP, _NC = top.N_MODULES, top.N_PIXELS, top.N_CHANNELS
#: Board stacks per module (each reads 16 columns x 8 rows = 128 pixels).
N_BOARDSTACKS = 4
#: The key columns of a per-channel TOP payload (channel index = (module - 1) * 512 + pixel - 1).
CHANNEL_KEYS = {
    "module": np.repeat(np.arange(1, _NM + 1, dtype=np.int16), _NP),
    "pixel": np.tile(np.arange(1, _NP + 1, dtype=np.int16), _NM),
}


def clipped_mean(values: F, nsigma: float = 3.0, max_iter: int = 20) -> tuple[F, F]:
    """Mean and rms of each row of ``values`` after iterative ``nsigma`` clipping."""
    x = np.asarray(values, dtype=np.float64)
    keep = np.ones_like(x, dtype=bool)
    for _ in range(max_iter):
        n = np.maximum(keep.sum(axis=1), 1)
        mean = np.where(keep, x, 0.0).sum(axis=1) / n
        rms = np.sqrt(np.where(keep, (x - mean[:, None]) ** 2, 0.0).sum(axis=1) / n)
        new = np.abs(x - mean[:, None]) <= nsigma * rms[:, None]
        if np.array_equal(new, keep):
            break
        keep = new
    return mean, rms


def mask_channels(hits: F, groups: I64) -> tuple[npt.NDArray[np.int8], F, F]:
    """Status of every channel (OK, DEAD, HOT) by the basf2 rule within its group: dead if
    ``hits <= mean / 5``, hot if ``hits > max(2 mean, mean + 6 rms)``, mean and rms from
    3-sigma clipping over the group. Returns status, group mean and rms per channel."""
    h = np.asarray(hits, dtype=np.float64)
    ng = int(groups.max()) + 1
    order = np.argsort(groups, kind="stable")
    size = np.bincount(groups, minlength=ng)
    if np.any(size != size[0]):
        raise CalibrationError("channel groups must have equal sizes")
    mean_g, rms_g = clipped_mean(h[order].reshape(ng, size[0]))
    mean, rms = mean_g[groups], rms_g[groups]
    status = np.full(len(h), ChannelStatus.OK, dtype=np.int8)
    status[h <= mean / 5.0] = ChannelStatus.DEAD
    status[h > np.maximum(2.0 * mean, mean + 6.0 * rms)] = ChannelStatus.HOT
    return status, mean, rms


def boardstack_of(channel: npt.ArrayLike) -> I64:
    """Board stack group 0..63 of channel indices 0..8191 (16 columns of a module each)."""
    c = np.asarray(channel, dtype=np.int64)
    col = (c % _NP) % top.N_COLUMNS
    return np.asarray((c // _NP) * N_BOARDSTACKS + col // (top.N_COLUMNS // N_BOARDSTACKS))


def dead_channels(constants: Constants, runs: Sequence[RunKey]) -> npt.NDArray[np.bool_]:
    """Channels masked DEAD for any of ``runs`` (by the TOPCalChannelMask payloads)."""
    dead = np.zeros(_NC, dtype=bool)
    for payload in constants.for_runs(CHANNEL_MASK, runs).values():
        if payload is not None and payload.status is not None:
            dead |= payload.status == ChannelStatus.DEAD
    return dead


class ChannelMaskAlgorithm(Algorithm):
    """Dead and hot channels from the hits per channel (see :func:`mask_channels`).

    Groups are board stacks (128 pixels read by one set of boards): the illumination and the
    electronics noise are similar within one, and 128 channels give a clipped mean to a few
    per cent. Hot channels get value = noise rate per event ``-ln(1 - p)`` from their excess
    occupancy ``p`` over the group mean (a channel records at most one hit per event), with
    its binomial error; dead and good channels value 0.
    """

    name = "channel_mask"
    payloads = (CHANNEL_MASK,)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        hits_h, ev_h = require(data, "hits", "events", message="no TOP digits")
        hits = hits_h.values().astype(np.float64)
        n_events = float(ev_h.values().sum())
        groups = boardstack_of(np.arange(_NC))
        status, mean, rms = mask_channels(hits, groups)
        min_mean = float(data.config["min_mean_hits"])
        starved = mean < min_mean
        diag = Diagnostics(
            histograms={"hits": hits_h},
            tables={
                "channels": {
                    "channel": np.arange(_NC),
                    "hits": hits,
                    "group_mean": mean,
                    "group_rms": rms,
                    "status": status,
                }
            },
        )
        if np.all(starved):
            raise NotEnoughData(f"mean hits per channel {np.median(mean):.1f} < {min_mean}", diag)
        status[starved] = ChannelStatus.NOT_ENOUGH_DATA
        hot = status == ChannelStatus.HOT
        value = np.zeros(_NC)
        error = np.zeros(_NC)
        # excess occupancy p over the group; a channel records at most one hit per event, so
        # the noise rate is lambda = -ln(1 - p) (Poisson pulses, p = 1 - exp(-lambda))
        occupancy = np.clip((hits[hot] - mean[hot]) / n_events, 0.0, 1.0 - 1e-9)
        value[hot] = -np.log1p(-occupancy)
        # binomial error of the channel's hits and the error of the group mean (128 channels)
        var_p = (hits[hot] * (1 - hits[hot] / n_events) + rms[hot] ** 2 / 128.0) / n_events**2
        error[hot] = np.sqrt(var_p) / (1.0 - occupancy)
        payload = channel_payload(
            CHANNEL_MASK,
            CHANNEL_KEYS,
            value,
            error,
            status,
            units="1/event",
            description="channel mask: status DEAD or HOT; value = noise hits per event",
        )
        return AlgorithmResult(
            AlgorithmStatus.OK, [payload], diag, f"{n_events:.0f} events; {status_counts(status)}"
        )


def channel_mask_calibration() -> Calibration:
    """``top-channel-mask``: TOPCalChannelMask from the hits per channel."""
    return Calibration(
        name="top-channel-mask",
        validation=PayloadComparison(
            columns=(), warn_new_flagged_fraction=0.01, error_new_flagged_fraction=0.1
        ),  # a mask: the channels flagged (hit rates follow the luminosity)
        expert="top-calibration@b2calib.example",
        inputs={
            "digits": CollectorInput(
                ChannelHitCollector(), ("hlt_hadron", "hlt_mumu_2trk", "hlt_bhabha")
            )
        },
        algorithms=[ChannelMaskAlgorithm()],
        strategy=SingleIOV(),
        run_type="physics",
        expert_config={"min_mean_hits": 25.0},
        open_end=True,
        description="TOP dead and hot channels (TOPCalChannelMask) from the hits per channel "
        "in collision events: dead if hits <= mean/5, hot if hits > max(2 mean, mean + 6 "
        "rms), mean and rms from 3-sigma clipping per board stack.",
        fit_views={CHANNEL_MASK: fitviews.MASK_VIEW},
    )


def __dir__() -> list[str]:
    return __all__
