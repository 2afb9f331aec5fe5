"""KLM collectors: matched digits and extrapolated crossings per strip plane (strip efficiency),
and the digit times of matched crossings with their propagation distances (time calibration).

Both start from :func:`crossings`: the KLM ExtHits of each track (one per strip plane, as basf2's
``KLMStripEfficiencyCollector`` keeps one hit per plane), each with the KLM digit that matches
it, the track's momentum and the crossing point. With numba, neither builds the crossings'
arrays (11 numbers per crossing, ~58 crossings per mu-mu event: their fresh pages were a large
part of the collectors' CPU): :func:`efficiency_counts` and :func:`time_hits` take from one
compiled pass only what they keep (per-plane counts; the hits in the time windows), the crossings
and the numpy code on them the fallback and the reference.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, cast

import awkward as ak
import hist
import numba
import numpy as np
import numpy.typing as npt

from b2calib.engine import Collector
from b2calib.engine.fill import fill_2d
from b2calib.exceptions import BadValueError
from b2calib.fit._lm import compiled
from b2calib.geometry import DETECTOR_ID, klm

__all__ = [
    "DISTANCE_BINS",
    "MOMENTS",
    "REFERENCE_DELAY",
    "TIME_WINDOWS",
    "Crossings",
    "StripEfficiencyCollector",
    "TimeCollector",
    "crossings",
    "efficiency_counts",
    "extrapolation_layer",
    "selected_for_efficiency",
    "strip_length",
    "time_hits",
]

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

_NPL = len(klm.PLANES)
_BFIELD_FACTOR = 0.0029979246  # pt [GeV] = factor * B [T] / |omega| [1/cm]
_B_TESLA = 1.5
_STRIP_KEY = 128  # > the most strips of a plane
#: Per-channel sums filled by :class:`TimeCollector` (time t, propagation distance d).
MOMENTS = ("n", "t", "tt", "d", "dd", "td")
#: Time windows (ns) of ``digit time - flight time - event T0`` per KLMTimeConstants type
#: (EKLM scintillator, BKLM scintillator, RPC phi, RPC z), in the simulation's time frame: the
#: cable delays (a few ns) plus the propagation along the longest strips (EKLM 34 ns, BKLM 16 ns)
#: with margins of several resolutions on either side.
TIME_WINDOWS: tuple[tuple[float, float], ...] = (
    (-20.0, 55.0),
    (-20.0, 40.0),
    (-20.0, 40.0),
    (-20.0, 40.0),
)
#: The propagation delay (ns/cm) taken out of the times of the per-type histograms
#: (``time_<type>`` holds ``t - REFERENCE_DELAY x d``): a nominal value near the true ones, so
#: that the spread of distances within a distance bin hardly widens the time distributions.
REFERENCE_DELAY = 0.06
#: Bins of the propagation distance along each strip (fractions of its longest distance).
DISTANCE_BINS = 4
_DIGIT_BRANCHES = {
    "KLMDigits_m_subdetector": "var * int8",
    "KLMDigits_m_section": "var * int8",
    "KLMDigits_m_sector": "var * int8",
    "KLMDigits_m_layer": "var * int8",
    "KLMDigits_m_plane": "var * int8",
    "KLMDigits_m_strip": "var * int16",
    "KLMDigits_m_time": "var * float32",
}
_EXT_BRANCHES = {
    "ExtHits_m_detectorID": "var * int8",
    "ExtHits_m_copyID": "var * int32",
    "ExtHits_m_trackIndex": "var * int16",
    "ExtHits_m_posX": "var * float32",
    "ExtHits_m_posY": "var * float32",
    "ExtHits_m_posZ": "var * float32",
    "ExtHits_m_tof": "var * float32",
}
_TRACK_BRANCHES = {
    "TrackFitResults_m_omega": "var * float32",
    "TrackFitResults_m_tanLambda": "var * float32",
}
#: Every collector reads the run number: a file without it is broken, not a file without KLM.
_EVENT_BRANCHES = {"EventMetaData_m_run": "int32"}
_BRANCHES = _EVENT_BRANCHES | _DIGIT_BRANCHES | _EXT_BRANCHES | _TRACK_BRANCHES


def _flat(events: ak.Array, branch: str, dtype: Any) -> npt.NDArray[Any]:
    return np.asarray(ak.to_numpy(ak.flatten(events[branch])), dtype=dtype)


def _event_of(events: ak.Array, branch: str) -> I64:
    n = ak.to_numpy(ak.num(events[branch])).astype(np.int64)
    return np.repeat(np.arange(len(n), dtype=np.int64), n)


def extrapolation_layer(ch: npt.ArrayLike) -> I64:
    """basf2's extrapolation layer of channels: BKLM layers 1-15, EKLM layers 16-29."""
    return np.asarray(_PLANE_LAYER[klm.plane_of(ch)])


#: The extrapolation layer of each strip plane (row of ``klm.PLANES``).
_PLANE_LAYER = np.where(klm.PLANES[:, 0] == klm.EKLM, klm.BKLM_LAYERS, 0) + klm.PLANES[:, 3]


@dataclasses.dataclass(frozen=True)
class Crossings:
    """The KLM crossings of one chunk of events, one per (track, strip plane).

    Attributes
    ----------
    event, track
        Event index in the chunk and track index in its event.
    channel, plane
        Crossed strip (global channel number) and its row in :data:`klm.PLANES`.
    layer
        Extrapolation layer (:func:`extrapolation_layer`).
    matched
        A digit in the same plane within the allowed strip distance.
    time
        Time of the digit of the crossed strip itself (NaN when that strip has none).
    momentum
        Track momentum (GeV/c; infinite for straight tracks).
    x, y, z, tof
        Crossing point (cm) and flight time (ns) from the ExtHit.
    """

    event: I64
    track: I64
    channel: I64
    plane: I64
    layer: I64
    matched: B
    time: F
    momentum: F
    x: F
    y: F
    z: F
    tof: F


def crossings(
    events: ak.Array, allowed_distance: int, *, compiled_kernel: bool = True
) -> Crossings:
    """The KLM crossings of ``events`` (branches of :data:`_BRANCHES`) matched to digits.

    A crossing is matched when a digit of the same plane is less than ``allowed_distance``
    strips away (basf2 ``AllowedDistance1D``, 8); a track keeps the first of its ExtHits in each
    plane.

    With numba and ``compiled_kernel``, in one compiled pass over the branches as read
    (:mod:`b2calib.detectors.klm._crossings`); else, and for the inputs that pass leaves to it,
    with numpy (:func:`_crossings_numpy`). The two give the same crossings, bit for bit (the
    compiled pass's integer and float fields are the rows of one array each).
    """
    span = int(allowed_distance) - 1
    counted = _counted(events, span) if compiled_kernel else None
    if counted is not None:
        ext, dig, trk, first, d_plane, n, most = counted
        (e_off, (_, copy_id, track, *pos)), (d_off, (*_, d_strip, d_time)) = ext, dig
        ints = np.empty((5, n), np.int64)
        floats = np.empty((6, n))
        matched = np.zeros(n, bool)
        fill = compiled("b2calib.detectors.klm._crossings", "klm_fill")
        assert fill is not None
        fill(
            e_off,
            copy_id,
            track,
            *pos,
            d_off,
            d_strip,
            d_time,
            trk[0],
            *trk[1],
            span,
            _BFIELD_FACTOR * _B_TESLA,
            _CHANNEL_PLANE,
            klm.PLANE_FIRST,
            _PLANE_LAYER,
            first,
            d_plane,
            most,
            ints,
            floats,
            matched,
        )
        event, track, channel, plane, layer = ints
        time, momentum, x, y, z, tof = floats
        return Crossings(
            event=event,
            track=track,
            channel=channel,
            plane=plane,
            layer=layer,
            matched=matched,
            time=time,
            momentum=momentum,
            x=x,
            y=y,
            z=z,
            tof=tof,
        )
    return _crossings_numpy(events, allowed_distance)


def _counted(
    events: ak.Array, span: int
) -> (
    tuple[
        tuple[I64, list[npt.NDArray[Any]]],
        tuple[I64, list[npt.NDArray[Any]]],
        tuple[I64, list[npt.NDArray[Any]]],
        B,
        npt.NDArray[np.int16],
        int,
        int,
    ]
    | None
):
    """The branches of ``events`` as read (:func:`_group`: ExtHits, digits, tracks) and the
    compiled count pass's marks (the first ExtHit of each track and plane, each digit's plane),
    crossings and most digits of an event, for strip window ``span``; None without numba or
    for inputs the numpy path handles (:func:`_crossings_numpy`)."""
    count = compiled("b2calib.detectors.klm._crossings", "klm_count")
    if count is None or span < 0 or klm.EKLM_STRIPS + span >= _STRIP_KEY:
        return None
    ext, dig, trk = (_group(events, b) for b in (_EXT_BRANCHES, _DIGIT_BRANCHES, _TRACK_BRANCHES))
    if ext is None or dig is None or trk is None:
        return None
    (e_off, (det, copy_id, track, *_)), (d_off, (*addr, d_strip, _)) = ext, dig
    first = np.zeros(int(e_off[-1] - e_off[0]), bool)
    d_plane = np.empty(int(d_off[-1] - d_off[0]), np.int16)
    tables = (_CHANNEL_PLANE, _PLANE_STRIPS, _ADDRESS_PLANE)
    ok, n, most = count(
        e_off, det, copy_id, track, d_off, *addr, d_strip, DETECTOR_ID["KLM"], span, *tables,
        first, d_plane,
    )  # fmt: skip
    if not ok:
        return None
    return ext, dig, trk, first, d_plane, int(n), int(most)


#: The number of strips of each plane (row of ``klm.PLANES``).
_PLANE_STRIPS = np.ascontiguousarray(klm.PLANES[:, 5])
#: The plane row of each channel (index channel - 1).
_CHANNEL_PLANE = klm.plane_of(np.arange(1, klm.N_CHANNELS + 1))
#: The plane row of each address (subdetector, section, sector, layer, plane); -1 for none.
_ADDRESS_PLANE = np.full(tuple(int(v) + 1 for v in klm.PLANES[:, :5].max(axis=0)), -1, np.int64)
_ADDRESS_PLANE[tuple(klm.PLANES[:, :5].T)] = np.arange(len(klm.PLANES))


def _group(events: ak.Array, branches: dict[str, str]) -> tuple[I64, list[npt.NDArray[Any]]] | None:
    """Each event's first element (and the end of the last) in the flat arrays of a collection's
    ``branches``, and those arrays as read (in the order of ``branches``, without copies); None
    when a branch is not a list of numbers of the declared type (or losslessly converted to it)
    or the branches' lists are not laid out alike: the numpy path then reads them."""
    offsets: I64 | None = None
    arrays = []
    for name, typ in branches.items():
        layout = events[name].layout
        if not isinstance(layout, ak.contents.ListOffsetArray) or not isinstance(
            layout.content, ak.contents.NumpyArray
        ):
            return None
        off = np.asarray(layout.offsets.data)
        if offsets is None:
            offsets = off.astype(np.int64, copy=False)
        elif off is not offsets and not np.array_equal(off, offsets):
            return None
        data = np.ascontiguousarray(layout.content.data)
        want = np.dtype(typ.removeprefix("var * "))
        if data.ndim != 1:
            return None
        if data.dtype != want:
            converted = data.astype(want)
            if not np.array_equal(converted, data, equal_nan=data.dtype.kind == "f"):
                return None
            data = converted
        arrays.append(data)
    assert offsets is not None
    return offsets, arrays


def _crossings_numpy(events: ak.Array, allowed_distance: int) -> Crossings:
    """:func:`crossings` with numpy (and the compiled matching where it applies)."""
    det = _flat(events, "ExtHits_m_detectorID", np.int64)
    keep = det == DETECTOR_ID["KLM"]
    # (every ExtHit in the KLM: the arrays as read, without a copy through the mask)
    some: Any = slice(None) if bool(keep.all()) else keep
    evt = _event_of(events, "ExtHits_m_detectorID")[some]
    trk = _flat(events, "ExtHits_m_trackIndex", np.int64)[some]
    ch = _flat(events, "ExtHits_m_copyID", np.int64)[some]
    x, y, z, tof = (
        _flat(events, f"ExtHits_m_{k}", np.float64)[some] for k in ("posX", "posY", "posZ", "tof")
    )
    if len(ch) and (ch.min() < 1 or ch.max() > klm.N_CHANNELS):
        k = int(np.argmax((ch < 1) | (ch > klm.N_CHANNELS)))
        raise BadValueError(
            "ExtHits_m_copyID",
            f"KLM ExtHit {k} of the entries read: channel {ch[k]}, the KLM has 1..{klm.N_CHANNELS}",
        )
    plane = klm.plane_of(ch)
    strip = ch - klm.PLANE_FIRST[plane] + 1
    # digits, in their order in the file
    cols = [
        _flat(events, f"KLMDigits_m_{k}", np.int64)
        for k in ("subdetector", "section", "sector", "layer", "plane", "strip")
    ]
    d_counts = ak.to_numpy(ak.num(events["KLMDigits_m_strip"])).astype(np.int64)
    d_time = _flat(events, "KLMDigits_m_time", np.float64)
    bad = klm.bad_address(*cols[:5])
    if bad is not None:  # a digit of no strip plane
        field, k, what = bad
        branch = f"KLMDigits_m_{field or '{' + ','.join(klm.ADDRESS_FIELDS) + '}'}"
        raise BadValueError(branch, f"digit {k} of the entries read: {what}")
    d_plane = klm.plane_index_of(*cols[:5]) if len(d_time) else np.zeros(0, np.int64)
    inside = bool(np.all((cols[5] >= 1) & (cols[5] <= klm.PLANES[d_plane, 5])))
    if not inside:  # a digit's strip outside its plane: its channel's plane, as it was
        d_plane = _plane_of_channel(klm.PLANE_FIRST[d_plane] + cols[5] - 1)
    e_counts = np.bincount(evt, minlength=len(d_counts)) if len(evt) else np.zeros(0, np.int64)
    span = int(allowed_distance) - 1
    if inside and _compiled_match_applies(trk, cols[5], span):
        first, matched, time = _match_compiled(
            _offsets(e_counts),
            plane,
            strip,
            trk,
            _offsets(d_counts),
            d_plane,
            cols[5],
            d_time,
            span,
        )
    else:
        first, matched, time = _match_numpy(
            evt, trk, plane, strip, d_counts, d_plane, cols[5], d_time, span
        )
    if len(first) < len(evt):  # (else every hit is the first of its track and plane)
        evt, trk, ch, plane, x, y, z, tof = (a[first] for a in (evt, trk, ch, plane, x, y, z, tof))
    # track momentum from the fit (helix omega and tan lambda)
    omega = _flat(events, "TrackFitResults_m_omega", np.float64)
    tanl = _flat(events, "TrackFitResults_m_tanLambda", np.float64)
    n_trk = ak.to_numpy(ak.num(events["TrackFitResults_m_omega"])).astype(np.int64)
    offset = np.concatenate([[0], np.cumsum(n_trk)[:-1]]).astype(np.int64)
    row = offset[evt] + trk if len(evt) else np.zeros(0, np.int64)
    valid = (trk >= 0) & (trk < n_trk[evt]) if len(evt) else np.zeros(0, bool)
    with np.errstate(divide="ignore"):
        pt = np.where(np.abs(omega) > 0, _BFIELD_FACTOR * _B_TESLA / np.abs(omega), np.inf)
    if bool(valid.all()):  # (the same values, without the masks)
        p = pt[row] * np.sqrt(1.0 + tanl[row] ** 2)
    else:
        p = np.full(len(evt), np.nan)
        p[valid] = pt[row[valid]] * np.sqrt(1.0 + tanl[row[valid]] ** 2)
    return Crossings(
        event=evt,
        track=trk,
        channel=ch,
        plane=plane,
        layer=np.asarray(_PLANE_LAYER[plane]),  # extrapolation_layer(ch), its plane known
        matched=matched,
        time=time,
        momentum=p,
        x=x,
        y=y,
        z=z,
        tof=tof,
    )


def _plane_of_channel(ch: I64) -> I64:
    """The plane row whose channels' range holds ``ch`` (-1 below the first; the last above)."""
    return np.asarray(np.searchsorted(klm.PLANE_FIRST, ch, side="right") - 1, dtype=np.int64)


def _offsets(counts: I64) -> I64:
    """Start of each group and the end of the last (``len(counts) + 1``)."""
    out = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _compiled_match_applies(trk: I64, d_strip: I64, span: int) -> bool:
    """Whether :func:`_match_compiled` gives :func:`_match_numpy`'s result: the numpy path
    matches by keys ``(event x 64 + track) x planes + plane`` and ``(event x planes + plane) x
    128 + strip``, which tell events, planes and strips apart only for tracks 0..63, digit
    strips 0..127 and a window of strips within 0..127 (more than 50 strips apart: they would
    reach another plane's keys)."""
    ok = (not len(trk) or (int(trk.min()) >= 0 and int(trk.max()) < 64)) and span >= 0
    ok = ok and (not len(d_strip) or (int(d_strip.min()) >= 0 and int(d_strip.max()) < _STRIP_KEY))
    return bool(ok and klm.EKLM_STRIPS + span < _STRIP_KEY)


def _match_numpy(
    evt: I64,
    trk: I64,
    plane: I64,
    strip: I64,
    d_counts: I64,
    d_plane: I64,
    d_strip: I64,
    d_time: F,
    span: int,
) -> tuple[I64, B, F]:
    """The first ExtHit of each (track, plane) and, for it, whether a digit of its event and plane
    is within ``span`` strips, and the time of the first digit on its strip (NaN if none)."""
    key = (evt * 64 + trk) * _NPL + plane
    _, first = np.unique(key, return_index=True)
    first = np.sort(first)
    evt, plane, strip = evt[first], plane[first], strip[first]
    d_evt = np.repeat(np.arange(len(d_counts), dtype=np.int64), d_counts)
    # digits sorted by (event, plane, strip)
    d_key = (d_evt * _NPL + d_plane) * _STRIP_KEY + d_strip
    order = np.argsort(d_key, kind="stable")
    d_key, d_time = d_key[order], d_time[order]
    base = (evt * _NPL + plane) * _STRIP_KEY
    lo = np.searchsorted(d_key, base + np.maximum(strip - span, 0), side="left")
    hi = np.searchsorted(d_key, base + strip + span, side="right")
    matched = hi > lo
    at = np.searchsorted(d_key, base + strip, side="left")
    exact = at < len(d_key)
    exact[exact] = d_key[at[exact]] == (base + strip)[exact]
    time = np.full(len(first), np.nan)
    time[exact] = d_time[at[exact]]
    return first, matched, time


@numba.njit(cache=True, nogil=True)
def _match_compiled(
    e_first: I64,
    plane: I64,
    strip: I64,
    trk: I64,
    d_first: I64,
    d_plane: I64,
    d_strip: I64,
    d_time: F,
    span: int,
) -> tuple[I64, B, F]:
    """:func:`_match_numpy` event by event (ExtHits and digits grouped by event, offsets
    ``e_first`` and ``d_first``): a hit's digits are those of its event."""
    n = plane.shape[0]
    first = np.empty(n, np.int64)
    matched = np.zeros(n, np.bool_)
    time = np.full(n, np.nan)
    seen = np.full((64, _NPL), -1, np.int64)  # the event that last kept (track, plane)
    # the event's digits of each plane, in file order: head[plane] (if head_event[plane] is
    # the event), then after[digit]
    head = np.empty(_NPL, np.int64)
    head_event = np.full(_NPL, -1, np.int64)
    after = np.empty(d_plane.shape[0], np.int64)
    kept = 0
    for e in range(e_first.shape[0] - 1):
        for i in range(d_first[e + 1] - 1, d_first[e] - 1, -1):
            p = d_plane[i]
            after[i] = head[p] if head_event[p] == e else -1
            head[p], head_event[p] = i, e
        for j in range(e_first[e], e_first[e + 1]):
            if seen[trk[j], plane[j]] == e:
                continue
            seen[trk[j], plane[j]] = e
            first[kept] = j
            low, high = max(strip[j] - span, 0), strip[j] + span
            exact = False
            i = head[plane[j]] if head_event[plane[j]] == e else -1
            while i >= 0:
                if low <= d_strip[i] <= high:
                    matched[kept] = True
                if d_strip[i] == strip[j] and not exact:  # the first digit on the strip
                    time[kept] = d_time[i]
                    exact = True
                i = after[i]
            kept += 1
    return first[:kept], matched[:kept], time[:kept]


def _load_match() -> None:
    """Load the compiled crossings and matching (forked workers inherit them: see
    ``Collector.prepare``), for the branches' declared types."""
    crossings(_NO_EVENTS, 8)
    none = np.zeros(0, np.int64)
    _match_compiled(
        np.zeros(1, np.int64), none, none, none, np.zeros(1, np.int64), none, none, np.zeros(0), 0
    )


#: One event without ExtHits, digits or tracks, of the declared types of :data:`_BRANCHES`.
_NO_EVENTS = ak.Array(
    {
        name: ak.unflatten(np.zeros(0, typ.removeprefix("var * ")), np.zeros(1, np.int64))
        for name, typ in (_EXT_BRANCHES | _DIGIT_BRANCHES | _TRACK_BRANCHES).items()
    }
)

#: :data:`_NO_EVENTS` with the time collector's event T0 (none).
_NO_TIME_EVENTS = ak.with_field(
    ak.with_field(_NO_EVENTS, np.zeros(1, np.float32), "EventT0_m_eventT0"),
    np.zeros(1, np.int8),
    "EventT0_m_hasEventT0",
)


def _track_rank(key: I64) -> tuple[int, I64]:
    """The number of distinct ``key`` values and each one's rank among them (``np.unique``'s
    count and inverse): from a table of the keys present when they are non-negative and at
    most a few per element (a cumulative count, no sort), else ``np.unique``."""
    if len(key) and int(key.min()) >= 0 and int(key.max()) < 128 * len(key) + 1024:
        present = np.zeros(int(key.max()) + 1, bool)
        present[key] = True
        rank = np.cumsum(present) - 1
        return int(rank[-1]) + 1, rank[key]
    ids, inv = np.unique(key, return_inverse=True)
    return len(ids), np.asarray(inv, dtype=np.int64)


def selected_for_efficiency(
    c: Crossings,
    min_matching_digits: int,
    min_matching_digits_outer: int,
    min_momentum_no_outer: float,
) -> B:
    """The crossings that enter the efficiency, with the cuts of basf2's
    ``KLMStripEfficiencyCollector``: the track has at least ``min_matching_digits`` matched
    crossings, and so do the layers other than the crossing's; fewer than
    ``min_matching_digits_outer`` matched crossings in the outer layers are accepted only when
    the track has fewer crossings than that in the outer layers and a momentum of at least
    ``min_momentum_no_outer`` (it would not be absorbed).
    """
    if not len(c.channel):
        return np.zeros(0, bool)
    n_ids, inv = _track_rank(c.event * 64 + c.track)
    nl = 30  # extrapolation layers 1..29
    cell = inv * nl + c.layer  # (track, layer), row-major
    size = n_ids * nl
    digits = np.bincount(cell, weights=c.matched, minlength=size).reshape(n_ids, nl)
    hits = np.bincount(cell, minlength=size).astype(np.float64).reshape(n_ids, nl)
    total = digits.sum(axis=1)
    other = total[inv] - digits[inv, c.layer]
    outer_digits = np.cumsum(digits[:, ::-1], axis=1)[:, ::-1]  # layers >= l
    outer_hits = np.cumsum(hits[:, ::-1], axis=1)[:, ::-1]
    nxt = np.minimum(c.layer + 1, nl - 1)
    beyond = c.layer + 1 < nl
    m_outer = np.where(beyond, outer_digits[inv, nxt], 0.0)
    h_outer = np.where(beyond, outer_hits[inv, nxt], 0.0)
    ok = (total[inv] >= min_matching_digits) & (other >= min_matching_digits)
    few_outer = m_outer < min_matching_digits_outer
    rescued = (h_outer < min_matching_digits_outer) & (c.momentum >= min_momentum_no_outer)
    return cast(B, ok & (~few_outer | rescued))


def _hist(*axes: tuple[int, float, float], names: tuple[str, ...], storage: Any) -> hist.Hist:
    return hist.Hist(
        *(
            hist.axis.Regular(n, lo, hi, name=nm)
            for (n, lo, hi), nm in zip(axes, names, strict=True)
        ),
        storage=storage,
    )


_PLANE_AXIS = (_NPL, -0.5, _NPL - 0.5)


@dataclasses.dataclass(frozen=True)
class StripEfficiencyCollector(Collector):
    """Per strip plane: the selected crossings and those with a matched digit (basf2
    ``matchedDigitsInPlane`` and ``allExtHitsInPlane``)."""

    allowed_distance: int = 8
    min_matching_digits: int = 14
    min_matching_digits_outer: int = 4
    min_momentum_no_outer: float = 4.0
    version: ClassVar[int] = 1

    @property
    def branches(self) -> dict[str, str]:
        return dict(_BRANCHES)

    def prepare(self) -> None:
        """Load the compiled crossings and counts (a collect of one empty event)."""
        _load_match()
        self.collect(_NO_EVENTS)

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        cuts = (self.min_matching_digits, self.min_matching_digits_outer)
        counts = efficiency_counts(events, self.allowed_distance, *cuts, self.min_momentum_no_outer)
        out = {}
        for name, values in zip(("crossings", "matched"), counts, strict=True):
            h = _hist(_PLANE_AXIS, names=("plane",), storage=hist.storage.Int64())
            h.view()[...] = values
            out[name] = h
        return out


def efficiency_counts(
    events: ak.Array,
    allowed_distance: int,
    min_matching_digits: int,
    min_matching_digits_outer: int,
    min_momentum_no_outer: float,
    *,
    compiled_kernel: bool = True,
) -> tuple[I64, I64]:
    """Per strip plane, the crossings of ``events`` :func:`selected_for_efficiency` selects
    and those of them matched to a digit (:class:`StripEfficiencyCollector`'s counts).

    With numba and ``compiled_kernel``, in one compiled pass over the branches as read, without
    the crossings (:func:`b2calib.detectors.klm._crossings.klm_efficiency_counts`); else, and
    for the inputs :func:`crossings` leaves to numpy, from the crossings. The two give the same
    counts.
    """
    span = int(allowed_distance) - 1
    counted = _counted(events, span) if compiled_kernel else None
    if counted is not None:
        ext, dig, trk, first, d_plane, _, most = counted
        (e_off, (_, copy_id, track, *_)), (d_off, (*_, d_strip, _)) = ext, dig
        kernel = compiled("b2calib.detectors.klm._crossings", "klm_efficiency_counts")
        assert kernel is not None
        n, k = np.zeros(_NPL, np.int64), np.zeros(_NPL, np.int64)
        kernel(
            e_off, copy_id, track, d_off, d_strip, trk[0], *trk[1], span,
            _BFIELD_FACTOR * _B_TESLA, _CHANNEL_PLANE, klm.PLANE_FIRST, _PLANE_LAYER, first,
            d_plane, most, float(min_matching_digits), float(min_matching_digits_outer),
            float(min_momentum_no_outer), n, k,
        )  # fmt: skip
        return n, k
    c = crossings(events, allowed_distance, compiled_kernel=compiled_kernel)
    sel = selected_for_efficiency(
        c, min_matching_digits, min_matching_digits_outer, min_momentum_no_outer
    )
    n = np.bincount(c.plane[sel], minlength=_NPL)
    k = np.bincount(c.plane[sel & c.matched], minlength=_NPL)
    return n, k


def strip_length() -> F:
    """The longest propagation distance of each channel's strip (cm), index channel - 1."""
    d = klm.decode(np.arange(1, klm.N_CHANNELS + 1))
    r_out = klm.BKLM_R0 + klm.BKLM_DR * (d["layer"] - 1)
    bklm_z = 2 * r_out * np.tan(np.pi / 8)
    bklm_phi = np.where(
        d["section"] == 1, klm.BKLM_ZMAX - klm.BKLM_ZSPLIT, klm.BKLM_ZSPLIT - klm.BKLM_ZMIN
    )
    bklm = np.where(d["plane"] == 0, bklm_z, bklm_phi)
    return np.where(d["subdetector"] == klm.EKLM, 1.5 * klm.EKLM_RMAX, bklm).astype(np.float64)


_STRIP_LENGTH = strip_length()


@numba.njit(cache=True, nogil=True)
def _moments(out: F, cell: I64, t: F, d: F) -> None:
    """Add each hit's :data:`MOMENTS` ``(1, t, t^2, d, d^2, t d)`` to its cell's row of
    ``out`` (cells x 6), in the hits' order: the sums ``np.bincount(cell, weights=w)`` gives
    for each weight, bit for bit, in one pass."""
    for i in range(cell.shape[0]):
        c = cell[i]
        out[c, 0] += 1.0
        out[c, 1] += t[i]
        out[c, 2] += t[i] * t[i]
        out[c, 3] += d[i]
        out[c, 4] += d[i] * d[i]
        out[c, 5] += t[i] * d[i]


#: The formula of :func:`klm.propagation_distance` of each channel (index channel - 1), as the
#: compiled pass numbers them: 0 EKLM |x|, 1 EKLM |y|, 2 BKLM phi forward, 3 backward, 4 BKLM z.
_DISTANCE_KIND = np.zeros(5, np.int8)
_DISTANCE_KIND[
    [klm._EKLM_X, klm._EKLM_Y, klm._BKLM_PHI_FORWARD, klm._BKLM_PHI_BACKWARD, klm._BKLM_Z]
] = np.arange(5)
_DISTANCE_KIND = _DISTANCE_KIND[klm._DISTANCE_KIND]
#: The KLMTimeConstants type of each channel (index channel - 1).
_CHANNEL_TYPE = klm.strip_type(np.arange(1, klm.N_CHANNELS + 1))


def time_hits(
    events: ak.Array,
    windows: tuple[tuple[float, float], ...] = TIME_WINDOWS,
    *,
    compiled_kernel: bool = True,
) -> tuple[I64, F, F, I64]:
    """The hits of :class:`TimeCollector` in ``events``: channel, time ``t = digit time -
    flight time - event T0``, propagation distance and type of each crossing (strip window 1)
    whose strip has a digit (the first one's time finite), in an event with an event T0, with
    ``t`` inside its type's window, in crossing order.

    With numba and ``compiled_kernel``, in one compiled pass over the branches as read that
    keeps only these hits (:func:`b2calib.detectors.klm._crossings.klm_time_hits`; the BKLM z
    strips' distances, trigonometric, from :func:`klm.propagation_distance` on them); else, and
    for the inputs :func:`crossings` leaves to numpy, from the crossings
    (:func:`_time_hits_numpy`). The two give the same hits, bit for bit.
    """
    one_per_type = len(windows) == len(klm.TIME_TYPES)  # (the kernel's window tables)
    counted = _counted(events, 0) if compiled_kernel and one_per_type else None
    if counted is not None:
        ext, dig, _, first, d_plane, n, most = counted
        (e_off, (_, copy_id, _, *pos)), (d_off, (*_, d_strip, d_time)) = ext, dig
        select = compiled("b2calib.detectors.klm._crossings", "klm_time_hits")
        assert select is not None
        t0 = ak.to_numpy(events["EventT0_m_eventT0"]).astype(np.float64)
        has = ak.to_numpy(events["EventT0_m_hasEventT0"]) > 0
        ch, t, d = np.empty(n, np.int64), np.empty(n), np.empty(n)
        typ, z_rows = np.empty(n, np.int64), np.empty(n, np.int64)
        z_x, z_y, z_z = np.empty(n), np.empty(n), np.empty(n)
        m, n_z = select(
            e_off, copy_id, *pos, d_off, d_strip, d_time, t0, has,
            _CHANNEL_PLANE, klm.PLANE_FIRST, _CHANNEL_TYPE, _DISTANCE_KIND,
            np.array([w[0] for w in windows], np.float64),
            np.array([w[1] for w in windows], np.float64),
            klm.EKLM_RMAX / 2, float(klm.BKLM_ZSPLIT),
            first, d_plane, most, ch, t, d, typ, z_rows, z_x, z_y, z_z,
        )  # fmt: skip
        ch, t, d, typ = ch[:m], t[:m], d[:m], typ[:m]
        rows = z_rows[:n_z]
        # (numpy's elementwise functions on the z strips' contiguous values, as
        # propagation_distance evaluates them on the z strips among all hits)
        d[rows] = klm.propagation_distance(ch[rows], z_x[:n_z], z_y[:n_z], z_z[:n_z])
        return ch, t, d, typ
    return _time_hits_numpy(events, windows)


def _time_hits_numpy(
    events: ak.Array, windows: tuple[tuple[float, float], ...]
) -> tuple[I64, F, F, I64]:
    """:func:`time_hits` from the crossings (:func:`crossings`)."""
    c = crossings(events, 1)
    t0 = ak.to_numpy(events["EventT0_m_eventT0"]).astype(np.float64)
    has = ak.to_numpy(events["EventT0_m_hasEventT0"]) > 0
    ok = np.isfinite(c.time) & has[c.event]
    ch = c.channel[ok]
    t = c.time[ok] - c.tof[ok] - t0[c.event[ok]]
    d = klm.propagation_distance(ch, c.x[ok], c.y[ok], c.z[ok])
    typ = klm.strip_type(ch) if len(ch) else np.zeros(0, np.int64)
    lo = np.array([w[0] for w in windows])[typ - 1]
    hi = np.array([w[1] for w in windows])[typ - 1]
    inside = (t >= lo) & (t < hi)
    return ch[inside], t[inside], d[inside], typ[inside]


def _time_fill_numpy(
    mom: hist.Hist,
    hists: list[hist.Hist],
    axes: list[tuple[int, float, float]],
    ch: I64,
    t: F,
    d: F,
    typ: I64,
) -> None:
    """:class:`TimeCollector`'s sums (``mom``) and histograms of ``t - REFERENCE_DELAY x d``
    per type (``hists``, on ``axes``) with numpy and the engine's fills: the reference of
    :func:`b2calib.detectors.klm._crossings.klm_time_fill`."""
    dbin = np.clip(
        (d / _STRIP_LENGTH[ch - 1] * DISTANCE_BINS).astype(np.int64), 0, DISTANCE_BINS - 1
    )
    cell = (ch - 1) * DISTANCE_BINS + dbin
    _moments(mom.view(), cell, t, d)
    shifted = t - REFERENCE_DELAY * d
    dbin_axis = (DISTANCE_BINS, -0.5, DISTANCE_BINS - 0.5)
    for k, (axis, h) in enumerate(zip(axes, hists, strict=True), start=1):
        s = typ == k
        fill_2d(cast(I64, h.view(flow=True)), shifted[s], dbin[s], axis, dbin_axis)


@dataclasses.dataclass(frozen=True)
class TimeCollector(Collector):
    """Digit times of the crossed strips, ``t = digit time - flight time - event T0``, inside
    the window of the strip's subsystem, with the propagation distance ``d`` to the readout end.

    Fills, per channel and per bin of ``d`` (:data:`DISTANCE_BINS` along the strip), the sums
    :data:`MOMENTS` (``moments``), and per KLMTimeConstants type the histogram of ``t`` against
    the distance bin (``time_<type>``, times less :data:`REFERENCE_DELAY` x ``d``), for the
    likelihood fit of the scintillators and the plots.
    """

    windows: tuple[tuple[float, float], ...] = TIME_WINDOWS
    bin_width: float = 1.0
    version: ClassVar[int] = 1

    @property
    def branches(self) -> dict[str, str]:
        return _BRANCHES | {
            "EventT0_m_eventT0": "float32",
            "EventT0_m_hasEventT0": "int8",
        }

    def prepare(self) -> None:
        """Load the compiled crossings, hits and fills (a collect of one empty event)."""
        _load_match()
        self.collect(_NO_TIME_EVENTS)

    def collect(self, events: ak.Array) -> dict[str, hist.Hist]:
        ch, t, d, typ = time_hits(events, self.windows)
        ncell = klm.N_CHANNELS * DISTANCE_BINS
        mom = hist.Hist(
            hist.axis.Regular(ncell, -0.5, ncell - 0.5, name="cell"),
            hist.axis.Regular(len(MOMENTS), -0.5, len(MOMENTS) - 0.5, name="moment"),
            storage=hist.storage.Double(),
        )
        axes = self.time_axes()
        dbin_axis = (DISTANCE_BINS, -0.5, DISTANCE_BINS - 0.5)
        hists = [
            _hist(axis, dbin_axis, names=("time", "distance_bin"), storage=hist.storage.Int64())
            for axis in axes
        ]
        fill = compiled("b2calib.detectors.klm._crossings", "klm_time_fill")
        if fill is not None and len(axes) == len(klm.TIME_TYPES):
            # one compiled pass for the sums and the four histograms (their flow bins in one
            # array, copied into the histograms)
            n = np.array([a[0] for a in axes], np.int64)
            counts = np.zeros((len(axes), int(n.max()) + 2, DISTANCE_BINS + 2), np.int64)
            lo, hi = (np.array([a[i] for a in axes], np.float64) for i in (1, 2))
            fill(ch, t, d, typ, _STRIP_LENGTH, DISTANCE_BINS, REFERENCE_DELAY, mom.view(), counts,
                 n, lo, hi)  # fmt: skip
            for k, h in enumerate(hists):
                h.view(flow=True)[...] = counts[k, : n[k] + 2]
        else:
            _time_fill_numpy(mom, hists, axes, ch, t, d, typ)
        return {"moments": mom, **{f"time_{k}": h for k, h in enumerate(hists, start=1)}}

    def time_axes(self) -> list[tuple[int, float, float]]:
        """The axis of ``t - REFERENCE_DELAY x d`` per type: the window, extended below by the
        reference propagation time of the longest strip."""
        longest = {
            klm.EKLM_SCINT: 1.5 * klm.EKLM_RMAX,
            klm.BKLM_SCINT: klm.BKLM_ZMAX - klm.BKLM_ZSPLIT,
            klm.RPC_PHI: klm.BKLM_ZMAX - klm.BKLM_ZSPLIT,
            klm.RPC_Z: 2 * (klm.BKLM_R0 + klm.BKLM_DR * klm.BKLM_LAYERS) * np.tan(np.pi / 8),
        }
        axes = []
        for k, (wlo, whi) in enumerate(self.windows, start=1):
            lo = wlo - self.bin_width * np.ceil(REFERENCE_DELAY * longest[k] / self.bin_width)
            axes.append((round((whi - lo) / self.bin_width), float(lo), whi))
        return axes


def __dir__() -> list[str]:
    return __all__
