"""ARICH channel masks (``arich-channel-mask``, ARICHChannelMask): dead and hot HAPD channels
from the time windows of the hits, as basf2's ``ARICHChannelMask`` collector and
``ARICHChannelMaskMaker`` algorithm make them.

The hit bitmap of an ARICH digit samples the discriminator in four time windows (bits 0-3);
photons of the Cherenkov rings are in time (windows 1 and 2), noise and beam background fall in
any window. The collector counts, per channel, the digits with exactly one bit set in each
window; the algorithm takes

* signal ``S = n1 + n2 - n0 - n3`` (the in-time hits minus the noise in as many windows),
* signal to noise ``S / (n1 + n2)`` (signal / (signal + noise) in the signal windows),

averages the signal per HAPD ring (7 rings) over the channels that are not hot, and masks a
channel whose signal is below ``min_fraction`` (0.3) x its ring average or whose signal to noise
is below ``min_s2n`` (0.1). NOT_ENOUGH_DATA when the outer ring averages fewer than
``min_outer_ring_hits`` (30) signal hits per channel.

basf2 checks the outer ring only: in the real detector it is the least illuminated one. In the
simulation the inner rings get fewer photons than the outer one (the simulated Bhabhas never
reach rings 0-2), so a ring can average fewer signal hits than the threshold while the outer
ring has enough. Such a starved ring is not masked for lack of statistics: its channels get
NOT_ENOUGH_DATA, except those HOT by their noise alone (see :func:`mask_channels`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, cast

import awkward as ak
import hist
import numpy as np
import numpy.typing as npt
from scipy import stats

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
from b2calib.calibration.fitview import CountingView, ViewContext
from b2calib.calibration.toolkit import NotEnoughData, channel_payload, guarded, require
from b2calib.conditions import ChannelStatus
from b2calib.engine import Collector
from b2calib.engine.fill import fill_1d, fill_2d
from b2calib.exceptions import BadValueError
from b2calib.geometry import arich

__all__ = [
    "CHANNEL_KEYS",
    "CHANNEL_MASK",
    "CHANNEL_RING",
    "N_WINDOWS",
    "SIGNAL_WINDOWS",
    "ChannelMaskAlgorithm",
    "ChannelMaskCollector",
    "ChannelMaskResult",
    "channel_mask_calibration",
    "mask_channels",
]

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

CHANNEL_MASK = "ARICHChannelMask"
_NC = arich.N_CHANNELS
#: Time windows of the hit bitmap, and the two of them in time with the collision.
N_WINDOWS = 4
SIGNAL_WINDOWS = (1, 2)
_NOISE_WINDOWS = (0, 3)
#: The key columns of the payload (channel index = (module - 1) * 144 + channel).
CHANNEL_KEYS = {
    "module": np.repeat(np.arange(1, arich.N_MODULES + 1, dtype=np.int16), 144),
    "channel": np.tile(np.arange(144, dtype=np.int16), arich.N_MODULES),
}
#: The ring of every channel.
CHANNEL_RING = np.repeat(arich.ring_of(np.arange(1, arich.N_MODULES + 1)), 144)
_CH_AXIS = (_NC, -0.5, _NC - 0.5)
_WIN_AXIS = (N_WINDOWS, -0.5, N_WINDOWS - 0.5)
_BITMAP_AXIS = (16, -0.5, 15.5)


def _hist(*axes: tuple[int, float, float], names: tuple[str, ...]) -> hist.Hist:
    return hist.Hist(
        *(
            hist.axis.Regular(n, lo, hi, name=nm)
            for (n, lo, hi), nm in zip(axes, names, strict=True)
        ),
        storage=hist.storage.Int64(),
    )


def _view(h: hist.Hist) -> I64:
    return cast(I64, h.view(flow=True))


@dataclasses.dataclass(frozen=True)
class ChannelMaskCollector(Collector):
    """Digits per channel and time window (``windows``: digits with exactly one bit set, as
    basf2's collector counts them), every digit's bitmap (``bitmap``) and the events
    (``events``)."""

    version: ClassVar[int] = 1

    @property
    def branches(self) -> dict[str, str]:
        return {
            "EventMetaData_m_run": "int32",
            "ARICHDigits_m_modID": "var * int16",
            "ARICHDigits_m_channelID": "var * int16",
            "ARICHDigits_m_bitmap": "var * uint8",
        }

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        def flat(branch: str) -> I64:
            return np.asarray(ak.to_numpy(ak.flatten(events[branch])), dtype=np.int64)

        module, channel = flat("ARICHDigits_m_modID"), flat("ARICHDigits_m_channelID")
        _check_digits(module, channel)  # a channel past 143 would count as the next module's
        bitmap = flat("ARICHDigits_m_bitmap")
        single = (bitmap > 0) & (bitmap & (bitmap - 1) == 0)
        window = np.log2(np.where(single, bitmap, 1)).astype(np.int64)
        windows = _hist(_CH_AXIS, _WIN_AXIS, names=("channel", "window"))
        ch = arich.channel_index(module[single], channel[single])
        fill_2d(_view(windows), ch, window[single], _CH_AXIS, _WIN_AXIS)
        bits = _hist(_BITMAP_AXIS, names=("bitmap",))
        fill_1d(_view(bits), bitmap, _BITMAP_AXIS)
        n = _hist((1, 0.0, 1.0), names=("events",))
        n.view(flow=True)[1] = len(events)
        return {"windows": windows, "bitmap": bits, "events": n}


def _check_digits(module: I64, channel: I64) -> None:
    """Raise :class:`~b2calib.exceptions.BadValueError` for the first digit whose module is not
    1..420 or whose channel is not 0..143 (no sound file holds one)."""
    n_ch = arich.N_CHANNELS_PER_MODULE
    if not len(module) or (
        module.min() >= 1
        and module.max() <= arich.N_MODULES
        and channel.min() >= 0
        and channel.max() < n_ch
    ):
        return
    bad_mod = (module < 1) | (module > arich.N_MODULES)
    bad_ch = (channel < 0) | (channel >= n_ch)
    k = int(np.argmax(bad_mod | bad_ch))
    where = f"digit {k} of the entries read"
    if bad_mod[k]:
        raise BadValueError(
            "ARICHDigits_m_modID", f"{where}: module {module[k]}, ARICH has 1..{arich.N_MODULES}"
        )
    raise BadValueError(
        "ARICHDigits_m_channelID", f"{where}: channel {channel[k]}, a module has 0..{n_ch - 1}"
    )


@dataclasses.dataclass(frozen=True)
class ChannelMaskResult:
    """The per-channel quantities of :func:`mask_channels` (arrays over the 60480 channels,
    per ring: 7 entries)."""

    status: npt.NDArray[np.int8]
    signal: F
    s2n: F
    noise: F
    ring_signal: F
    ring_noise: F
    ring_channels: I64
    left_out: npt.NDArray[np.bool_]
    starved: npt.NDArray[np.bool_]


def mask_channels(
    windows: npt.ArrayLike,
    n_events: float,
    *,
    min_fraction: float = 0.3,
    min_s2n: float = 0.1,
    max_signal_occupancy: float = 0.02,
    hot_p_value: float = 1e-6,
    min_ring_signal: float = 0.0,
) -> ChannelMaskResult:
    """Status (OK, DEAD, HOT, NOT_ENOUGH_DATA) of every channel from its single-bit digits per
    time window.

    Parameters
    ----------
    windows
        (60480, 4) digits per channel and window.
    n_events
        Events read.
    min_fraction, min_s2n
        A channel is masked when its signal is below ``min_fraction`` x its ring's average or
        its signal to noise is below ``min_s2n``.
    max_signal_occupancy
        Channels with more signal hits per event (basf2's anomalous occupancy) are left out of
        the ring averages, as are those below ``min_s2n`` (hot).
    hot_p_value
        A masked channel is HOT when its noise (digits in windows 0 and 3) is above its ring's
        average with a Poisson p-value below this, else DEAD (no signal without excess noise).
    min_ring_signal
        A ring averaging fewer signal hits per channel is starved: the cut at ``min_fraction``
        x its average is then within the Poisson fluctuations of a live channel's signal, so
        its channels are NOT_ENOUGH_DATA, neither DEAD nor HOT, except a channel that is hot
        by both tests that need no signal statistics: its signal to noise below ``min_s2n``
        and its noise above the ring's with a p-value below ``hot_p_value``. Both together
        never call a live channel hot (S/N < 0.1 alone can, when the signal is a few hits).
        A dead channel of a starved ring stays NOT_ENOUGH_DATA too: basf2 calls a channel dead
        by the ring-average cut only, which a starved ring cannot apply.

    Notes
    -----
    The ring average is over the channels kept (basf2 divides the sum over the kept channels
    by all the ring's channels: the same to the per mille when a few are hot). Dead channels
    count in the average, as in basf2.
    """
    w = np.asarray(windows, dtype=np.float64)
    in_time = w[:, list(SIGNAL_WINDOWS)].sum(axis=1)
    noise = w[:, list(_NOISE_WINDOWS)].sum(axis=1)
    signal = in_time - noise
    with np.errstate(invalid="ignore", divide="ignore"):
        s2n = np.where(in_time > 0, signal / np.where(in_time > 0, in_time, 1.0), np.nan)
    noisy = s2n < min_s2n  # NaN (no in-time hit) is not noisy
    left_out = noisy | (signal > max_signal_occupancy * max(n_events, 1.0))
    kept = ~left_out
    ring_channels = np.bincount(CHANNEL_RING[kept], minlength=7)
    per_ring = np.maximum(ring_channels, 1)
    ring_signal = np.bincount(CHANNEL_RING[kept], weights=signal[kept], minlength=7) / per_ring
    ring_noise = np.bincount(CHANNEL_RING[kept], weights=noise[kept], minlength=7) / per_ring
    masked = (signal < min_fraction * ring_signal[CHANNEL_RING]) | noisy
    starved = ring_signal < min_ring_signal
    in_starved = starved[CHANNEL_RING]
    # the noise test of the channels whose status it decides only (a few per cent of them:
    # over all 60480, scipy's Poisson tail was a third of an execution's CPU)
    tested = np.flatnonzero(masked | in_starved)
    excess = np.zeros(_NC, dtype=bool)
    excess[tested] = (
        stats.poisson.sf(noise[tested] - 1.0, ring_noise[CHANNEL_RING[tested]]) < hot_p_value
    )
    status = np.full(_NC, ChannelStatus.OK, dtype=np.int8)
    status[masked] = np.where(excess[masked], ChannelStatus.HOT, ChannelStatus.DEAD)
    status[in_starved] = np.where(
        noisy[in_starved] & excess[in_starved], ChannelStatus.HOT, ChannelStatus.NOT_ENOUGH_DATA
    )
    return ChannelMaskResult(
        status, signal, s2n, noise, ring_signal, ring_noise, ring_channels, left_out, starved
    )


class ChannelMaskAlgorithm(Algorithm):
    """Dead and hot channels from the signal and signal to noise per channel (see
    :func:`mask_channels`); NOT_ENOUGH_DATA when the outer ring averages fewer than
    ``min_outer_ring_hits`` signal hits per channel, and the channels of any other ring
    averaging fewer NOT_ENOUGH_DATA (not masked; hot ones still HOT).

    Hot channels get value = noise hits per event ``-ln(1 - p)``, ``p`` their occupancy in
    noise beyond their ring's (the noise windows 0 and 3 see half of it), with its binomial
    error; dead and good channels value 0 (the truth's layout: status DEAD or HOT, value = noise
    hits per event).
    """

    name = "channel_mask"
    payloads = (CHANNEL_MASK,)

    @guarded
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        windows_h, ev_h = require(data, "windows", "events", message="no ARICH digits")
        windows = windows_h.values().astype(np.float64)
        n_events = float(ev_h.values().sum())
        cfg = data.config
        need = float(cfg["min_outer_ring_hits"])
        res = mask_channels(
            windows,
            n_events,
            min_fraction=float(cfg["min_fraction"]),
            min_s2n=float(cfg["min_s2n"]),
            max_signal_occupancy=float(cfg["max_signal_occupancy"]),
            hot_p_value=float(cfg["hot_p_value"]),
            min_ring_signal=need,
        )
        diag = Diagnostics(
            histograms={k: h for k, h in data.histograms.items() if k in ("windows", "bitmap")},
            tables={
                "channels": {
                    "module": CHANNEL_KEYS["module"],
                    "channel": CHANNEL_KEYS["channel"],
                    "ring": CHANNEL_RING,
                    **{f"window{i}": windows[:, i] for i in range(N_WINDOWS)},
                    "signal": res.signal,
                    "s2n": res.s2n,
                    "ring_signal": res.ring_signal[CHANNEL_RING],
                    "left_out": res.left_out,
                    "status": res.status,
                },
                "rings": {
                    "ring": np.arange(7),
                    "signal_per_channel": res.ring_signal,
                    "noise_per_channel": res.ring_noise,
                    "channels_averaged": res.ring_channels,
                    "starved": res.starved.astype(np.int8),
                },
            },
        )
        outer = float(res.ring_signal[6])
        if not outer >= need:
            raise NotEnoughData(
                f"outer HAPD ring: {outer:.1f} signal hits per channel < {need:g} "
                f"({n_events:.0f} events)",
                diag,
            )
        hot = res.status == ChannelStatus.HOT
        value = np.zeros(_NC)
        error = np.zeros(_NC)
        # the noise windows see half of a channel's noise hits (uniform over the 4 windows)
        excess = np.maximum(res.noise[hot] - res.ring_noise[CHANNEL_RING[hot]], 0.0)
        p = np.clip(2.0 * excess / n_events, 0.0, 1.0 - 1e-9)
        value[hot] = -np.log1p(-p)
        q = res.noise[hot] / n_events  # binomial error of the counts in the noise windows
        error[hot] = 2.0 * np.sqrt(n_events * q * (1.0 - q)) / n_events / (1.0 - p)
        payload = channel_payload(
            CHANNEL_MASK,
            CHANNEL_KEYS,
            value,
            error,
            res.status,
            units="1/event",
            description="channel mask: status DEAD or HOT; value = noise hits per event",
        )
        n_dead = int((res.status == ChannelStatus.DEAD).sum())
        message = (
            f"{n_events:.0f} events, outer ring {outer:.0f} signal hits per channel; "
            f"{n_dead} dead, {int(hot.sum())} hot"
        )
        if res.starved.any():
            starved = np.flatnonzero(res.starved)
            rings = ("ring " if starved.size == 1 else "rings ") + ", ".join(map(str, starved))
            n_low = int((res.status == ChannelStatus.NOT_ENOUGH_DATA).sum())
            message += (
                f"; {starved.size} of 7 HAPD rings below {need:g} signal hits per channel "
                f"({rings}): {n_low} channels NOT_ENOUGH_DATA, not masked"
            )
        return AlgorithmResult(AlgorithmStatus.OK, [payload], diag, message)


def _describe(context: ViewContext, row: int) -> str:
    """The decision on an ARICH channel with its numbers."""
    t = context.table("channels")
    cfg = context.config
    signal, s2n = float(t["signal"][row]), float(t["s2n"][row])
    ring, ring_signal = int(t["ring"][row]), float(t["ring_signal"][row])
    why = {
        "DEAD": f"signal below {cfg.get('min_fraction')} x its ring's",
        "HOT": f"signal to noise below {cfg.get('min_s2n')}",
        "NOT_ENOUGH_DATA": f"its HAPD ring has fewer than {cfg.get('min_outer_ring_hits')} "
        "signal hits per channel: not masked",
    }.get(ChannelStatus(int(t["status"][row])).name, "")
    return (
        f"{context.status}: no per-channel fit: this calibration counts hits in 4 time "
        f"windows; signal {signal:.1f} hits (ring {ring}: {ring_signal:.1f} per channel), "
        f"signal to noise {s2n:.2f}" + (f"; {why}" if why else "")
    )


#: The hits of the channel in the 4 time windows (signal, noise) and the decision.
_VIEW = CountingView(
    "channels", None, _describe, histogram="windows", x_label="time window", y_label="hits"
)


def channel_mask_calibration() -> Calibration:
    """``arich-channel-mask``: ARICHChannelMask from the time windows of the hits."""
    return Calibration(
        name="arich-channel-mask",
        validation=PayloadComparison(
            columns=(), warn_new_flagged_fraction=0.01, error_new_flagged_fraction=0.1
        ),  # a mask: the channels flagged (hit rates follow the luminosity)
        expert="arich-calibration@b2calib.example",
        inputs={
            "digits": CollectorInput(
                ChannelMaskCollector(), ("hlt_bhabha", "hlt_mumu_2trk", "hlt_hadron")
            )
        },
        algorithms=[ChannelMaskAlgorithm()],
        strategy=SequentialRunByRun(),
        input_format="raw",
        stage="raw",
        run_type="physics",
        expert_config={
            "min_fraction": 0.3,
            "min_s2n": 0.1,
            "min_outer_ring_hits": 30.0,
            "max_signal_occupancy": 0.02,
            "hot_p_value": 1e-6,
        },
        open_end=True,
        description="ARICH dead and hot channels (ARICHChannelMask) from the hit bitmap: "
        "signal = hits in the in-time windows 1+2 minus the noise windows 0+3; a channel is "
        "masked below 0.3 x its HAPD ring's average signal or with signal/noise < 0.1; "
        "NOT_ENOUGH_DATA below 30 signal hits per channel in the outer ring; the channels of "
        "any other ring below 30 are NOT_ENOUGH_DATA, not masked (hot ones still HOT).",
        fit_views={CHANNEL_MASK: _VIEW},
    )


def __dir__() -> list[str]:
    return __all__
