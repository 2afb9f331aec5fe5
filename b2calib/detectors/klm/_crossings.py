"""The KLM crossings of :func:`b2calib.detectors.klm.collectors.crossings` in one compiled pass
(numba), one event at a time, from the branches as read (their own dtypes, no flattened or
converted copies).

Per event: the ExtHits of the KLM (detector ``klm_id``), the first of each (track, plane) in
the file's order, with its plane and strip from the channel table, the digits of its event and
plane within ``span`` strips (matched) and the time of the first digit on its strip (NaN if
none), and the track's momentum from the helix (NaN for a track index outside the event's
tracks). Every value is the numpy path's (collectors.py, the reference and the fallback without
numba), with the same floating-point operations: float32 values widened to float64, then
``c / |omega|`` and ``pt x sqrt(1 + tan lambda^2)``.

Two passes: :func:`klm_count` checks the inputs, counts the crossings and marks them (and each
digit's plane); :func:`klm_fill` writes them into arrays the caller allocates with numpy (whose
large allocations are reused from call to call, where numba's are page-faulted anew each time:
on the bench files, as costly as the pass itself). Inputs the numpy path treats specially (a
channel outside the KLM, a track index outside 0..63, a digit address outside the plane table
or a strip outside its plane) make :func:`klm_count` answer ``ok = False``: the caller then
takes the numpy path, which raises or handles them as it always did.

Importing this module imports numba; collectors.py imports it on first use only (through
``b2calib.fit._lm.compiled``).
"""

from __future__ import annotations

import numba
import numpy as np

from b2calib.engine.fill import regular_bin

__all__ = ["klm_count", "klm_efficiency_counts", "klm_fill", "klm_time_fill", "klm_time_hits"]


@numba.njit(cache=True, nogil=True)
def klm_count(  # type: ignore[no-untyped-def,unused-ignore]
    e_off,
    det,
    copy_id,
    track,
    d_off,
    d_sub,
    d_sec,
    d_sect,
    d_lay,
    d_pl,
    d_strip,
    klm_id,
    span,
    channel_plane,
    plane_strips,
    lut,
    first,
    d_plane,
):
    """Whether :func:`klm_fill` applies to events ``0..len(e_off) - 2`` (see the module
    docstring), the number of their crossings (the first KLM ExtHit of each track and plane)
    and the most digits of an event.

    ``e_off`` and ``d_off`` are each event's first ExtHit and digit (and the end of its last)
    in their branches' flat arrays, which may start after index 0 (a chunk of a larger read).
    Marks the crossings in ``first`` (one per ExtHit from ``e_off[0]``, False on entry) and
    writes each digit's plane row to ``d_plane`` (one per digit from ``d_off[0]``).
    """
    n_ev = e_off.shape[0] - 1
    n_ch = channel_plane.shape[0]
    s0, s1, s2, s3, s4 = lut.shape
    ok = span >= 0
    seen = np.full((64, plane_strips.shape[0]), -1, np.int64)  # the last event to keep it
    n = 0
    for ev in range(n_ev if ok else 0):
        for j in range(e_off[ev], e_off[ev + 1]):
            if det[j] != klm_id:
                continue
            if copy_id[j] < 1 or copy_id[j] > n_ch or track[j] < 0 or track[j] >= 64:
                ok = False
                break
            p = channel_plane[copy_id[j] - 1]
            if seen[track[j], p] != ev:
                seen[track[j], p] = ev
                first[j - e_off[0]] = True
                n += 1
        if not ok:
            break
    most = 0
    for ev in range(n_ev if ok else 0):
        most = max(most, d_off[ev + 1] - d_off[ev])
        for i in range(d_off[ev], d_off[ev + 1]):
            if not (
                0 <= d_sub[i] < s0
                and 0 <= d_sec[i] < s1
                and 0 <= d_sect[i] < s2
                and 0 <= d_lay[i] < s3
                and 0 <= d_pl[i] < s4
            ):
                ok = False
                break
            p = lut[d_sub[i], d_sec[i], d_sect[i], d_lay[i], d_pl[i]]
            if p < 0 or d_strip[i] < 1 or d_strip[i] > plane_strips[p]:
                ok = False
                break
            d_plane[i - d_off[0]] = p
        if not ok:
            break
    return ok, n if ok else 0, most


@numba.njit(cache=True, nogil=True)
def klm_fill(  # type: ignore[no-untyped-def,unused-ignore]
    e_off,
    copy_id,
    track,
    pos_x,
    pos_y,
    pos_z,
    tof,
    d_off,
    d_strip,
    d_time,
    t_off,
    omega,
    tan_lambda,
    span,
    pt_factor,
    channel_plane,
    plane_first,
    plane_layer,
    first,
    d_plane,
    most,
    ints,
    floats,
    matched,
):
    """Fill the crossings that :func:`klm_count` counted, found applicable and marked in
    ``first`` (with its ``d_plane`` and ``most``):
    rows event, track, channel, plane, layer of ``ints`` (5 x crossings), time, momentum, x,
    y, z, tof of ``floats`` (6 x crossings), and ``matched`` (False on entry). ``t_off`` is
    each event's first track (and the end of the last) in ``omega`` and ``tan_lambda``."""
    n_ev = e_off.shape[0] - 1
    n_pl = plane_first.shape[0]
    # the event's digits of each plane, in file order: head[plane] (if head_event[plane] is
    # the event), then after[digit - the event's first]
    head = np.empty(n_pl, np.int64)
    head_event = np.full(n_pl, -1, np.int64)
    after = np.empty(most, np.int64)
    kept = 0
    for ev in range(n_ev):
        d_first = d_off[ev]
        for i in range(d_off[ev + 1] - 1, d_first - 1, -1):
            p = d_plane[i - d_off[0]]
            after[i - d_first] = head[p] if head_event[p] == ev else -1
            head[p], head_event[p] = i - d_first, ev
        first_track = t_off[ev]
        n_tracks = t_off[ev + 1] - first_track
        for j in range(e_off[ev], e_off[ev + 1]):
            if not first[j - e_off[0]]:
                continue
            k = np.int64(track[j])
            c = np.int64(copy_id[j])
            p = np.int64(channel_plane[c - 1])
            s = c - plane_first[p] + 1
            low, high = max(s - span, 0), s + span
            time = np.nan
            exact = False
            i = head[p] if head_event[p] == ev else -1
            while i >= 0:
                ds = d_strip[d_first + i]
                if low <= ds <= high:
                    matched[kept] = True
                if ds == s and not exact:  # the first digit on the strip
                    time = np.float64(d_time[d_first + i])
                    exact = True
                i = after[i]
            if k < n_tracks:
                w = abs(np.float64(omega[first_track + k]))
                pt = pt_factor / w if w > 0 else np.inf
                tl = np.float64(tan_lambda[first_track + k])
                momentum = pt * np.sqrt(1.0 + tl * tl)
            else:
                momentum = np.nan
            ints[0, kept] = ev
            ints[1, kept] = k
            ints[2, kept] = c
            ints[3, kept] = p
            ints[4, kept] = plane_layer[p]
            floats[0, kept] = time
            floats[1, kept] = momentum
            floats[2, kept] = np.float64(pos_x[j])
            floats[3, kept] = np.float64(pos_y[j])
            floats[4, kept] = np.float64(pos_z[j])
            floats[5, kept] = np.float64(tof[j])
            kept += 1


@numba.njit(cache=True, nogil=True)
def klm_time_hits(  # type: ignore[no-untyped-def,unused-ignore]
    e_off,
    copy_id,
    pos_x,
    pos_y,
    pos_z,
    tof,
    d_off,
    d_strip,
    d_time,
    t0,
    has_t0,
    channel_plane,
    plane_first,
    channel_type,
    channel_kind,
    window_lo,
    window_hi,
    eklm_half,
    bklm_zsplit,
    first,
    d_plane,
    most,
    channel,
    time,
    distance,
    kind_type,
    z_rows,
    z_x,
    z_y,
    z_z,
):
    """The hits of the time collector among the crossings :func:`klm_count` counted, found
    applicable and marked in ``first`` (strip window 1: ``span`` 0), without the crossings
    themselves: each crossing whose strip has a digit, the first one's time finite, in an event
    with ``has_t0``, with ``t = digit time - flight time - t0`` inside its type's window
    ``[window_lo, window_hi)`` (index type - 1).

    Writes, for the ``m`` hits in crossing order, ``channel``, ``time`` (``t``), ``kind_type``
    (the type) and ``distance``: the propagation distance for the EKLM (``|x|`` or ``|y|``
    plus ``eklm_half``) and BKLM phi strips (``z - bklm_zsplit`` or ``bklm_zsplit - z``), the
    formulas of :func:`b2calib.geometry.klm.propagation_distance` (kinds 0-3 of
    ``channel_kind``); for the BKLM z strips (kind 4, trigonometry: numpy's own functions give
    their values) it leaves ``distance`` unset and writes the hit's row and crossing point to
    ``z_rows``, ``z_x``, ``z_y``, ``z_z``. Returns ``m`` and the number of z-strip hits.
    """
    n_ev = e_off.shape[0] - 1
    n_pl = plane_first.shape[0]
    head = np.empty(n_pl, np.int64)
    head_event = np.full(n_pl, -1, np.int64)
    after = np.empty(most, np.int64)
    kept = 0
    n_z = 0
    for ev in range(n_ev):
        if not has_t0[ev]:
            continue
        d_first = d_off[ev]
        for i in range(d_off[ev + 1] - 1, d_first - 1, -1):
            p = d_plane[i - d_off[0]]
            after[i - d_first] = head[p] if head_event[p] == ev else -1
            head[p], head_event[p] = i - d_first, ev
        for j in range(e_off[ev], e_off[ev + 1]):
            if not first[j - e_off[0]]:
                continue
            c = np.int64(copy_id[j])
            p = np.int64(channel_plane[c - 1])
            s = c - plane_first[p] + 1
            i = head[p] if head_event[p] == ev else -1
            while i >= 0 and d_strip[d_first + i] != s:
                i = after[i]
            if i < 0:
                continue
            digit = np.float64(d_time[d_first + i])  # the first digit on the strip
            if not np.isfinite(digit):
                continue
            t = digit - np.float64(tof[j]) - t0[ev]
            k = channel_type[c - 1]
            if not (t >= window_lo[k - 1] and t < window_hi[k - 1]):
                continue
            kind = channel_kind[c - 1]
            if kind == 0:
                distance[kept] = abs(np.float64(pos_x[j])) + eklm_half
            elif kind == 1:
                distance[kept] = abs(np.float64(pos_y[j])) + eklm_half
            elif kind == 2:
                distance[kept] = np.float64(pos_z[j]) - bklm_zsplit
            elif kind == 3:
                distance[kept] = bklm_zsplit - np.float64(pos_z[j])
            else:
                z_rows[n_z] = kept
                z_x[n_z] = np.float64(pos_x[j])
                z_y[n_z] = np.float64(pos_y[j])
                z_z[n_z] = np.float64(pos_z[j])
                n_z += 1
            channel[kept] = c
            time[kept] = t
            kind_type[kept] = k
            kept += 1
    return kept, n_z


#: Casts of floats to int64 inside this range are exact truncations; outside it, and for NaN,
#: x86 (numpy's ``astype``) gives the least int64.
_INT64_BOUND = 9.223372036854775808e18


@numba.njit(cache=True, nogil=True)
def klm_time_fill(  # type: ignore[no-untyped-def,unused-ignore]
    channel,
    time,
    distance,
    kind_type,
    strip_length,
    n_bins,
    reference,
    moments,
    counts,
    axis_n,
    axis_lo,
    axis_hi,
):
    """The time collector's sums and histograms of the hits of :func:`klm_time_hits`, in their
    order, as its numpy code computes them: the distance bin ``clip(int(d / length x n_bins),
    0, n_bins - 1)`` (NaN and values beyond int64 in bin 0, as numpy's cast on x86 gives the
    least int64), the moments ``(1, t, t^2, d, d^2, t d)`` added to row ``(channel - 1) x
    n_bins + bin`` of ``moments``, and ``t - reference x d`` against the distance bin counted
    in ``counts[type - 1]`` (flow bins included: the time axis of type ``k`` is ``axis_n[k -
    1]`` bins from ``axis_lo`` to ``axis_hi``, binned as
    :func:`b2calib.engine.fill.fill_2d` bins)."""
    for i in range(channel.shape[0]):
        c = channel[i]
        t = time[i]
        d = distance[i]
        q = d / strip_length[c - 1] * n_bins
        b = int(q) if -_INT64_BOUND < q < _INT64_BOUND else 0
        b = min(max(b, 0), n_bins - 1)
        cell = (c - 1) * n_bins + b
        moments[cell, 0] += 1.0
        moments[cell, 1] += t
        moments[cell, 2] += t * t
        moments[cell, 3] += d
        moments[cell, 4] += d * d
        moments[cell, 5] += t * d
        k = kind_type[i] - 1
        shifted = t - reference * d
        row = regular_bin(shifted, axis_lo[k], axis_hi[k], axis_n[k])
        counts[k, row, regular_bin(float(b), -0.5, n_bins - 0.5, n_bins)] += 1


@numba.njit(cache=True, nogil=True)
def klm_efficiency_counts(  # type: ignore[no-untyped-def,unused-ignore]
    e_off,
    copy_id,
    track,
    d_off,
    d_strip,
    t_off,
    omega,
    tan_lambda,
    span,
    pt_factor,
    channel_plane,
    plane_first,
    plane_layer,
    first,
    d_plane,
    most,
    min_digits,
    min_outer,
    min_momentum,
    crossed,
    matched_crossed,
):
    """The strip-efficiency collector's counts of the crossings :func:`klm_count` counted,
    found applicable and marked in ``first``, without the crossings themselves: per plane,
    the selected crossings (``crossed``) and those of them with a matched digit
    (``matched_crossed``), with the cuts of
    :func:`b2calib.detectors.klm.collectors.selected_for_efficiency` (its numpy code is the
    reference), event by event: a track's crossings are those of its event.

    Per track, matched and all crossings per extrapolation layer (``plane_layer``, 1..29);
    a crossing is selected when its track's matched crossings, and those in the other layers,
    are at least ``min_digits``, and its track has at least ``min_outer`` matched crossings in
    the layers beyond its own, or fewer than ``min_outer`` crossings there and a momentum of at
    least ``min_momentum`` (NaN for a track index outside the event's tracks: not)."""
    n_ev = e_off.shape[0] - 1
    n_pl = plane_first.shape[0]
    nl = 30
    head = np.empty(n_pl, np.int64)
    head_event = np.full(n_pl, -1, np.int64)
    after = np.empty(most, np.int64)
    digits = np.zeros((64, nl), np.int64)
    hits = np.zeros((64, nl), np.int64)
    used = np.zeros(64, np.bool_)
    p_of = np.empty(0, np.int64)  # the event's crossings' planes and matches (by ExtHit)
    m_of = np.empty(0, np.bool_)
    for ev in range(n_ev):
        n_hits = e_off[ev + 1] - e_off[ev]
        if p_of.shape[0] < n_hits:
            p_of = np.empty(n_hits, np.int64)
            m_of = np.empty(n_hits, np.bool_)
        d_first = d_off[ev]
        for i in range(d_off[ev + 1] - 1, d_first - 1, -1):
            p = d_plane[i - d_off[0]]
            after[i - d_first] = head[p] if head_event[p] == ev else -1
            head[p], head_event[p] = i - d_first, ev
        # the event's crossings: their planes and matches, counted per track and layer
        for j in range(e_off[ev], e_off[ev + 1]):
            if not first[j - e_off[0]]:
                continue
            k = track[j]
            c = np.int64(copy_id[j])
            p = np.int64(channel_plane[c - 1])
            s = c - plane_first[p] + 1
            low, high = max(s - span, 0), s + span
            hit = False
            i = head[p] if head_event[p] == ev else -1
            while i >= 0 and not hit:
                hit = low <= d_strip[d_first + i] <= high
                i = after[i]
            p_of[j - e_off[ev]] = p
            m_of[j - e_off[ev]] = hit
            used[k] = True
            hits[k, plane_layer[p]] += 1
            if hit:
                digits[k, plane_layer[p]] += 1
        # each track's matched and all crossings from each layer outwards (cumulative sums from
        # the last layer), its total in layer 0's
        for k in range(64):
            if used[k]:
                for layer in range(nl - 2, -1, -1):
                    digits[k, layer] += digits[k, layer + 1]
                    hits[k, layer] += hits[k, layer + 1]
        first_track = t_off[ev]
        n_tracks = t_off[ev + 1] - first_track
        for j in range(e_off[ev], e_off[ev + 1]):
            if not first[j - e_off[0]]:
                continue
            k = track[j]
            p = p_of[j - e_off[ev]]
            layer = plane_layer[p]
            total = digits[k, 0]
            own = digits[k, layer] - (digits[k, layer + 1] if layer + 1 < nl else 0)
            m_outer = digits[k, layer + 1] if layer + 1 < nl else 0
            h_outer = hits[k, layer + 1] if layer + 1 < nl else 0
            if not (total >= min_digits and total - own >= min_digits):
                continue
            if m_outer < min_outer:
                if h_outer >= min_outer:
                    continue
                if k < n_tracks:
                    w = abs(np.float64(omega[first_track + k]))
                    pt = pt_factor / w if w > 0 else np.inf
                    tl = np.float64(tan_lambda[first_track + k])
                    momentum = pt * np.sqrt(1.0 + tl * tl)
                else:
                    momentum = np.nan
                if not momentum >= min_momentum:
                    continue
            crossed[p] += 1
            if m_of[j - e_off[ev]]:
                matched_crossed[p] += 1
        for k in range(64):
            if used[k]:
                used[k] = False
                digits[k, :] = 0
                hits[k, :] = 0
    return crossed, matched_crossed
