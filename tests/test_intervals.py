"""Time intervals of the beam calibrations: the loss parser, atoms, the split and the algorithm
base class (b2calib.calibration.intervals)."""

from __future__ import annotations

import builtins
import itertools
import math
import time
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import hist
import numpy as np
import pytest

from b2calib.calibration import AlgorithmInput, AlgorithmStatus, Constants, Diagnostics
from b2calib.calibration.intervals import (
    ATOM_NS,
    ATOM_SECONDS,
    BEAMSPOT_INNER_LOSS,
    BEAMSPOT_OUTER_LOSS,
    BOOSTVECTOR_OUTER_LOSS,
    ECMS_INNER_LOSS,
    ECMS_OUTER_LOSS,
    Atom,
    IntervalAlgorithm,
    IntervalFit,
    LossExpression,
    OuterInterval,
    SubInterval,
    atom_axis,
    atom_index,
    atom_times_hist,
    atoms_from_counts,
    atoms_from_hist,
    fill_atom_times,
    fill_from_neighbours,
    interval_variables,
    per_atom,
    split,
    sum_atoms,
)
from b2calib.calibration.strategies import SequentialBoundaries
from b2calib.calibration.toolkit import NotEnoughData
from b2calib.conditions.iov import RunKey
from b2calib.conditions.payload import ChannelStatus, Payload
from b2calib.conditions.payloadtypes import check_payload
from b2calib.engine import RunOutput
from b2calib.exceptions import ConfigError

T0 = 1_700_000_000.0  # UNIX s, inside atom 4722222 (starts 80 s before)
H = 3600.0


# ================================================================================ the parser
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("2 - 3 - 4", -5.0),
        ("8 / 4 / 2", 1.0),
        ("-2 * 3", -6.0),
        ("- -2", 2.0),
        ("+2", 2.0),
        ("-pow(2, 2)", -4.0),
        ("2 * -3", -6.0),
        ("1. + .5 + 2e-1 + 0.000020e0 + 1E1", 11.70002),
        ("sqrt(4) + exp(0) + log(1) + abs(-2)", 5.0),
        ("min(3, 1, 2) + max(3, 1, 2)", 4.0),
        ("pow(rawTime - 2.0, 2) + 10 * pow(maxGap, 2)", 1.0 + 2.5),
        ("pow(0.000020e0*rawTime, 2) +  1./nEv", (2e-5 * 3.0) ** 2 + 0.25),
        ("netTime / rawTime", 2.0 / 3.0),
    ],
)
def test_loss_values_and_precedence(text: str, expected: float) -> None:
    loss = LossExpression(text)
    got = loss(rawTime=3.0, netTime=2.0, maxGap=0.5, nEv=4.0)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_loss_defaults_and_vectorised() -> None:
    loss = LossExpression(BEAMSPOT_OUTER_LOSS)
    assert loss.variables == {"rawTime", "maxGap"}
    raw = np.array([0.0, 2.0, 3.0])
    got = loss(rawTime=raw, maxGap=np.array([0.0, 0.1, 0.0]), netTime=0.0, nEv=1.0)
    assert got == pytest.approx([4.0, 0.1, 1.0])
    for text in (BEAMSPOT_INNER_LOSS, BOOSTVECTOR_OUTER_LOSS, ECMS_OUTER_LOSS, ECMS_INNER_LOSS):
        LossExpression(text)  # the real defaults parse
    # a division by zero is an infinity, not a warning (warnings are errors in the tests)
    assert LossExpression("1 / nEv")(nEv=0.0) == np.inf


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("rawTime + foo", 10, "unknown variable 'foo'"),
        ("__import__(1)", 0, "unknown function '__import__'"),
        ("__import__('os').system('ls')", 11, "unexpected character"),
        ("rawTime.real", 7, "unexpected character '.'"),
        ("rawTime.__class__", 7, "unexpected character '.'"),
        ("nEv()", 0, "unknown function 'nEv'"),
        ("eval(1)", 0, "unknown function 'eval'"),
        ("pow(1, 2, 3)", 0, "pow() takes 2 arguments"),
        ("min(1)", 0, "min() takes at least 2"),
        ("(1 + 2", 6, "expected ')'"),
        ("1 2", 2, "unexpected '2'"),
        ("2 ** 3", 3, "found '*'"),
        ("pow", 0, "a function needs its arguments"),
        ("1 +", 3, "found the end"),
        ("", 0, "empty expression"),
        ("lambda: 1", 6, "unexpected character ':'"),
        ("[1]", 0, "unexpected character '['"),
    ],
)
def test_loss_errors_name_the_position(text: str, position: int, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        LossExpression(text)
    message = str(err.value)
    assert repr(text) in message
    assert f"at position {position}" in message
    assert words in message


def test_loss_never_evaluates_python(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("eval/compile/exec called")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, refuse)
    loss = LossExpression("pow(rawTime - 0.5, 2) + 10 * pow(maxGap, 2)")
    assert float(loss(rawTime=1.0, maxGap=0.0)) == pytest.approx(0.25)
    with pytest.raises(ConfigError):
        LossExpression("__import__(1)")


def test_loss_missing_variable() -> None:
    with pytest.raises(ConfigError, match="no value for"):
        LossExpression("rawTime + nEv")(rawTime=1.0)


# ===================================================================================== atoms
def _times(start: float, hours: float, rate_per_hour: float, rng: np.random.Generator) -> Any:
    n = rng.poisson(rate_per_hour * hours)
    return np.sort(rng.uniform(start, start + hours * H, n))


def _atoms_hist(t_s: Any) -> hist.Hist:
    return fill_atom_times(atom_times_hist(), (np.asarray(t_s) * 1e9).astype(np.int64))


def test_atom_index_and_axis() -> None:
    t = np.array([0, ATOM_NS - 1, ATOM_NS, 5 * ATOM_NS + 7], dtype=np.uint64)
    assert atom_index(t).tolist() == [0, 0, 1, 5]
    assert atom_index(np.array([ATOM_NS * 2.5])).tolist() == [2]
    assert atom_index(int(T0 * 1e9)).item() == math.floor(T0 / ATOM_SECONDS)
    assert isinstance(atom_axis(), hist.axis.IntCategory)


def test_atoms_from_hist_times_counts_and_chunks() -> None:
    rng = np.random.default_rng(3)
    t = _times(T0, 1.0, 600.0, rng)
    # a hole of 20 minutes without events inside the run: atoms with no events, not a gap
    t = t[(t < T0 + 0.3 * H) | (t > T0 + 0.65 * H)]
    whole = _atoms_hist(t)
    chunks = _atoms_hist(t[: len(t) // 3]) + _atoms_hist(t[len(t) // 3 :])
    for h in (whole, chunks):
        atoms = atoms_from_hist(RunOutput({(1, 7): {"atoms": h}}))
        assert [a.key for a in atoms] == [(1, 7)] * len(atoms)
        assert sum(a.n_events for a in atoms) == len(t)
        idx = [a.index for a in atoms]
        assert idx == list(range(idx[0], idx[-1] + 1))  # no missing cell
        assert any(a.n_events == 0 for a in atoms)
        assert abs(atoms[0].t_start - t[0]) <= ATOM_SECONDS / 36
        assert abs(atoms[-1].t_end - t[-1]) <= ATOM_SECONDS / 36
        for a, b in itertools.pairwise(atoms):
            assert a.t_end == b.t_start
        assert all(a.t_end - a.t_start <= ATOM_SECONDS for a in atoms)


def test_atoms_from_hist_axes_by_name() -> None:
    t_ns = (np.array([T0 + 5.0, T0 + 400.0, T0 + 900.0]) * 1e9).astype(np.int64)
    usual = fill_atom_times(atom_times_hist(), t_ns)
    swapped: hist.Hist = hist.Hist(usual.axes[1], usual.axes[0])
    swapped.fill(sub=(t_ns % ATOM_NS) // (ATOM_NS // 36), atom=atom_index(t_ns))
    assert atoms_from_hist({(1, 1): swapped}) == atoms_from_hist({(1, 1): usual})


def test_atoms_from_counts() -> None:
    atoms = atoms_from_counts(1, 2, [12, 10, 10, 13], [3, 1, 1, 0], t_first=10 * 360 + 50)
    assert [(a.index, a.n_events) for a in atoms] == [(10, 2.0), (11, 0.0), (12, 3.0)]
    assert atoms[0].t_start == 10 * 360 + 50
    assert atoms[-1].t_end == 13 * 360
    assert atoms_from_counts(1, 2, [], []) == []
    # the loss variables (hours); no events count as 0.1 (basf2), so that 1./nEv stays finite
    v = interval_variables(atoms, [0, 1, 2])
    assert v["rawTime"] == pytest.approx((13 * 360 - 10 * 360 - 50) / 3600)
    assert v["netTime"] == pytest.approx(v["rawTime"])
    assert v["maxGap"] == 0.0
    assert v["nEv"] == 5.0
    assert interval_variables(atoms, [1])["nEv"] == 0.1


@pytest.mark.parametrize("storage", [hist.storage.Double, hist.storage.Weight, hist.storage.Mean])
def test_sum_atoms(storage: Any) -> None:
    def moments(atoms: list[int], x: list[float]) -> hist.Hist:
        h = hist.Hist(atom_axis(), hist.axis.Regular(2, 0, 2, name="x"), storage=storage())
        if storage is hist.storage.Mean:
            h.fill(atom=atoms, x=x, sample=x)
        else:
            h.fill(atom=atoms, x=x)
        return h

    per_run = {
        (1, 1): {"m": moments([5, 5, 6, 7], [0.5, 1.5, 1.5, 0.5])},
        (1, 2): {"m": moments([7, 8], [0.5, 0.5])},
    }
    atoms = [Atom(1, 1, 5, 0, 1, 2), Atom(1, 1, 6, 1, 2, 1), Atom(1, 2, 7, 0, 1, 1)]
    got = sum_atoms(per_run, "m", atoms)
    assert got is not None
    if storage is hist.storage.Mean:
        view: Any = got.view()
        assert view["count"].tolist() == [2.0, 2.0]
    else:
        assert got.values().tolist() == [2.0, 2.0]
    assert sum_atoms(per_run, "absent", atoms) is None


def _sum_atoms_per_run_histograms(
    per_run: dict[RunKey, dict[str, hist.Hist]], name: str, atoms: list[Atom]
) -> hist.Hist:
    """sum_atoms as it was: a histogram per run (np.take of the atoms), added in run order."""
    by_run: dict[RunKey, list[int]] = {}
    for a in atoms:
        by_run.setdefault(a.key, []).append(a.index)
    total: Any = None
    for key in sorted(by_run):
        h = per_run[key][name]
        where = {int(c): i for i, c in enumerate(h.axes["atom"])}
        pos = sorted({where[a] for a in by_run[key] if a in where})
        dim = [x.name for x in h.axes].index("atom")
        part = hist.Hist(*[x for x in h.axes if x.name != "atom"], storage=h.storage_type())
        picked: Any = np.take(np.asarray(h.view(flow=True)), pos, axis=dim)
        target: Any = part.view(flow=True)
        if h.storage_type is hist.storage.Weight:
            target["value"] = picked["value"].sum(axis=dim)
            target["variance"] = picked["variance"].sum(axis=dim)
        else:
            target[...] = picked.sum(axis=dim)
        total = part if total is None else total + part
    return total


@pytest.mark.parametrize("storage", [hist.storage.Double, hist.storage.Weight, hist.storage.Int64])
@pytest.mark.parametrize("atom_last", [False, True])
def test_sum_atoms_is_the_sum_of_per_run_histograms_bit_for_bit(
    storage: Any, atom_last: bool
) -> None:
    rng = np.random.default_rng(7)
    per_run: dict[RunKey, dict[str, hist.Hist]] = {}
    for run in (1, 2, 3):
        axes = [hist.axis.Regular(3, 0, 3, name="x"), hist.axis.Integer(0, 40, name="k")]
        ordered = [*axes, atom_axis()] if atom_last else [atom_axis(), *axes]
        h = hist.Hist(*ordered, storage=storage())
        n = 20_000
        x, k = rng.uniform(-0.5, 3.5, n), rng.integers(-1, 41, n)
        atom = rng.integers(100, 140, n)
        if storage is hist.storage.Int64:
            h.fill(atom=atom, x=x, k=k)
        else:
            h.fill(atom=atom, x=x, k=k, weight=rng.lognormal(0, 3, n))
        per_run[(1, run)] = {"m": h}
    picks = [
        [(1, i) for i in range(105, 131)],  # consecutive atoms of one run
        [(1, i) for i in range(100, 140, 3)] + [(2, i) for i in range(110, 120)] + [(3, 138)],
        [(2, i) for i in (139, 101, 120, 120)] + [(3, i) for i in range(100, 140)] + [(1, 150)],
    ]
    for pick in picks:
        atoms = [Atom(1, r, i, 0, 1, 1) for r, i in pick]
        got = sum_atoms(per_run, "m", atoms)
        want = _sum_atoms_per_run_histograms(per_run, "m", atoms)
        assert got is not None
        assert got.axes == want.axes
        assert got.storage_type is want.storage_type
        got_view, want_view = np.asarray(got.view(flow=True)), np.asarray(want.view(flow=True))
        assert got_view.dtype == want_view.dtype
        assert got_view.tobytes() == want_view.tobytes()


@pytest.mark.parametrize("groups", [0, 1, 2, 3, 7])
def test_weighted_mean_split_scan_is_the_one_by_one_test_bit_for_bit(groups: int) -> None:
    from b2calib.calibration.toolkit import weighted_mean_split

    rng = np.random.default_rng(groups)
    n = 61
    values = rng.normal(0, 1, (n, groups)) * 10.0 ** rng.uniform(-3, 3, (n, groups))
    values[20:] += 0.8  # a step
    errors = 10.0 ** rng.uniform(-2, 1, (n, groups))
    errors[rng.random((n, groups)) < 0.1] = np.nan  # atoms that tell nothing
    errors[rng.random((n, groups)) < 0.05] = 0.0
    values[rng.random((n, groups)) < 0.05] = np.nan
    errors[30:34] = np.nan  # a stretch without any value
    test = weighted_mean_split(values, errors, min_step=0.05, min_significance=2.0)
    scan: Any = cast(Any, test).scan
    for lo, hi in [(0, n), (0, 2), (5, 40), (28, 36), (20, 21), (59, 61)]:
        scores, accepted = scan(lo, hi)
        one = [test(lo, k, hi) for k in range(lo + 1, hi)]
        assert scores.tobytes() == np.array([s for s, _ in one]).tobytes()
        assert accepted.tolist() == [a for _, a in one]


def _partition_one_end_at_a_time(
    t0: Any, t1: Any, net: Any, nev: Any, inner_gap: Any, loss: LossExpression, group: Any
) -> list[tuple[int, int]]:
    """intervals._partition as it was (the losses of one end at a time)."""
    n = len(t0)
    cum_net = np.concatenate([[0.0], np.cumsum(net)])
    cum_ev = np.concatenate([[0.0], np.cumsum(nev)])
    before = np.concatenate([[0.0], t0[1:] - t1[:-1]])
    best = np.empty(n + 1)
    best[0] = 0.0
    start = np.zeros(n + 1, dtype=np.int64)
    first = np.zeros(n, dtype=np.int64)
    for u in range(1, n):
        first[u] = first[u - 1] if group[u] == group[u - 1] else u
    for e in range(n):
        arr = inner_gap[: e + 1].copy()
        arr[:e] = np.maximum(arr[:e], before[1 : e + 1])
        max_gap = np.maximum.accumulate(arr[::-1])[::-1]
        ev = cum_ev[e + 1] - cum_ev[: e + 1]
        values = loss(
            rawTime=(t1[e] - t0[: e + 1]) / 3600.0,
            netTime=(cum_net[e + 1] - cum_net[: e + 1]) / 3600.0,
            maxGap=np.maximum(max_gap, 0.0) / 3600.0,
            nEv=np.where(ev > 0, ev, 0.1),
        )
        total = best[: e + 1] + np.broadcast_to(values, (e + 1,))
        total = np.where(np.isnan(total), np.inf, total)
        total[: first[e]] = np.inf
        s = int(np.argmin(total))
        best[e + 1] = total[s]
        start[e + 1] = s
    segments = []
    e = n
    while e > 0:
        s = int(start[e])
        segments.append((s, e - 1))
        e = s
    return segments[::-1]


@pytest.mark.parametrize(
    "text",
    [
        BEAMSPOT_OUTER_LOSS,
        BEAMSPOT_INNER_LOSS,
        ECMS_OUTER_LOSS,
        ECMS_INNER_LOSS,
        BOOSTVECTOR_OUTER_LOSS,
        "exp(-nEv / 40) + log(1 + rawTime) + abs(netTime - 1.5) * sqrt(maxGap + 0.2)",
        "max(rawTime, 2 * netTime, 0.5) + min(maxGap, 1) - 3 / nEv",
        "2.5",
    ],
)
def test_partition_is_the_one_end_at_a_time_dynamic_programming(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import b2calib.calibration.intervals as intervals

    loss = LossExpression(text)
    rng = np.random.default_rng(len(text))
    for n, block in [(1, 1 << 16), (2, 1 << 16), (150, 1 << 16), (150, 1000), (37, 37)]:
        monkeypatch.setattr(intervals, "_LOSS_BLOCK", block)
        length = rng.exponential(600.0, n)
        t0 = np.cumsum(length + rng.exponential(300.0, n) * (rng.random(n) < 0.2))
        t1 = t0 + length
        net = length * rng.uniform(0.7, 1.0, n)
        nev = rng.poisson(30.0, n).astype(np.float64) * (rng.random(n) < 0.9)
        gap = rng.exponential(60.0, n)
        group = np.repeat(np.arange(4), -(-n // 4))[:n]
        want = _partition_one_end_at_a_time(t0, t1, net, nev, gap, loss, group)
        got = intervals._partition(t0, t1, net, nev, gap, loss, group)
        assert got == want


# ================================================================================= the split
def _run_atoms(runs: dict[tuple[int, int], Any]) -> list[Atom]:
    return atoms_from_hist({k: {"atoms": _atoms_hist(t)} for k, t in runs.items()})


def _hours(x: SubInterval | OuterInterval) -> float:
    return (x.t_end - x.t_start) / H


def test_long_run_cut_into_half_hours() -> None:
    rng = np.random.default_rng(1)
    atoms = _run_atoms({(1, 1): _times(T0, 8.0, 1000.0, rng)})
    (outer,) = split(atoms, BEAMSPOT_OUTER_LOSS, BEAMSPOT_INNER_LOSS)
    assert outer.runs == ((1, 1),)  # outer intervals are whole runs
    assert 15 <= len(outer.subs) <= 17
    assert all(0.4 <= _hours(s) <= 0.6 for s in outer.subs)
    assert sorted(outer.atoms) == list(range(len(atoms)))  # every atom once, in time order
    assert sum(s.n_events for s in outer.subs) == sum(a.n_events for a in atoms)
    for a, b in zip(outer.subs[:-1], outer.subs[1:], strict=True):
        assert a.t_end == b.t_start
    v = interval_variables(atoms, outer.subs[0].atoms)
    assert outer.subs[0].loss == pytest.approx(float(LossExpression(BEAMSPOT_INNER_LOSS)(**v)))


def test_runs_grouped_into_two_hour_outer_intervals() -> None:
    rng = np.random.default_rng(2)
    runs = {}
    for k in range(12):  # 40-minute runs, 5 minutes apart
        runs[(1, k + 1)] = _times(T0 + k * 45 * 60, 40 / 60, 1500.0, rng)
    atoms = _run_atoms(runs)
    outers = split(atoms, BEAMSPOT_OUTER_LOSS, BEAMSPOT_INNER_LOSS)
    assert [r for o in outers for r in o.runs] == sorted(runs)  # whole runs, each once
    assert 3 <= len(outers) <= 5
    assert all(1.3 <= _hours(o) <= 2.7 for o in outers)
    for o in outers:
        assert all(0.25 <= _hours(s) <= 0.8 for s in o.subs)
        assert sum(len(s.atoms) for s in o.subs) == sum(1 for a in atoms if a.key in o.runs)


def test_outer_intervals_never_span_experiments() -> None:
    rng = np.random.default_rng(4)
    runs = {
        (1, 5): _times(T0, 0.5, 1000.0, rng),
        (2, 1): _times(T0 + 0.55 * H, 0.5, 1000.0, rng),
    }
    outers = split(_run_atoms(runs), BEAMSPOT_OUTER_LOSS, BEAMSPOT_INNER_LOSS)
    assert [o.runs for o in outers] == [((1, 5),), ((2, 1),)]


@pytest.mark.parametrize(("gap_hours", "together"), [(1 / 60, True), (1.0, False)])
def test_gaps_raise_the_loss(gap_hours: float, together: bool) -> None:
    rng = np.random.default_rng(5)
    runs = {
        (1, 1): _times(T0, 1.0, 1000.0, rng),
        (1, 2): _times(T0 + (1.0 + gap_hours) * H, 1.0, 1000.0, rng),
    }
    atoms = _run_atoms(runs)
    outers = split(atoms, BEAMSPOT_OUTER_LOSS, BEAMSPOT_INNER_LOSS)
    assert len(outers) == (1 if together else 2)
    loss = LossExpression(BEAMSPOT_OUTER_LOSS)
    both = interval_variables(atoms, list(range(len(atoms))))
    assert both["maxGap"] == pytest.approx(gap_hours, abs=20 / H)
    if together:
        assert outers[0].loss == pytest.approx(float(loss(**both)))


def test_small_sub_intervals_merge() -> None:
    rng = np.random.default_rng(6)
    # 1 h at 600 events/h, then half an hour at 40 events/h: 20 events on their own
    t = np.concatenate([_times(T0, 1.0, 600.0, rng), _times(T0 + H, 0.5, 40.0, rng)])
    atoms = _run_atoms({(1, 1): t})
    (outer,) = split(atoms, BEAMSPOT_OUTER_LOSS, BEAMSPOT_INNER_LOSS)
    assert all(s.n_events >= 50 for s in outer.subs)
    assert len(outer.subs) == 2
    assert _hours(outer.subs[-1]) == pytest.approx(1.0, abs=0.15)  # 0.5 h + the small one
    (unmerged,) = split(atoms, BEAMSPOT_OUTER_LOSS, BEAMSPOT_INNER_LOSS, min_sub_events=0)
    assert len(unmerged.subs) == 3
    assert unmerged.subs[-1].n_events < 50


@pytest.mark.parametrize(
    ("counts", "breaks", "expected"),
    [
        ([100, 100, 30, 60, 100], [], [100, 100, 90, 100]),  # into the neighbour with fewer
        ([100, 30, 100], [], [130, 100]),  # a tie: into the earlier
        ([30, 100, 100], [], [130, 100]),  # at an end: into the only neighbour
        ([20, 20, 20], [], [60]),  # until none is small (basf2 stops after 10 merges)
        # a neighbour on its side of a step first, across it only when alone
        ([100, 80, 30, 40, 100], [3], [100, 110, 140]),
    ],
)
def test_merging_rule(counts: list[float], breaks: list[int], expected: list[float]) -> None:
    atoms = atoms_from_counts(1, 1, np.arange(100, 100 + len(counts)), counts)
    # an inner loss that makes every atom a sub-interval of its own
    (outer,) = split(atoms, BEAMSPOT_OUTER_LOSS, "pow(rawTime - 0.1, 2)", breaks=breaks)
    assert [s.n_events for s in outer.subs] == expected


def test_short_run_joins_the_nearest_interval() -> None:
    rng = np.random.default_rng(7)
    runs = {
        (1, 1): _times(T0, 2.0, 800.0, rng),
        # 90 s, 10 minutes after run 1 and 3 minutes before run 3
        (1, 2): np.linspace(T0 + 2.0 * H + 600, T0 + 2.0 * H + 690, 40),
        (1, 3): _times(T0 + 2.0 * H + 870, 2.0, 800.0, rng),
    }
    atoms = _run_atoms(runs)
    outers = split(atoms, BEAMSPOT_OUTER_LOSS, BEAMSPOT_INNER_LOSS)
    assert [o.runs for o in outers] == [((1, 1),), ((1, 2), (1, 3))]
    first = outers[1].subs[0]
    assert first.runs == ((1, 2), (1, 3))
    short = [i for i, a in enumerate(atoms) if a.key == (1, 2)]
    assert set(short) <= set(first.atoms)
    assert first.t_start == pytest.approx(T0 + 2.0 * H + 600, abs=10)
    # the short run took no part in the split: the outer loss is that of run 3 alone
    run3 = [i for i, a in enumerate(atoms) if a.key == (1, 3)]
    loss = LossExpression(BEAMSPOT_OUTER_LOSS)
    assert outers[1].loss == pytest.approx(float(loss(**interval_variables(atoms, run3))))


def test_per_atom() -> None:
    h: hist.Hist = hist.Hist(atom_axis(), hist.axis.Integer(0, 2, name="k", flow=False))
    h.fill(atom=[9, 7, 7], k=[0, 1, 1], weight=[1.0, 2.0, 3.0])
    atoms = [Atom(1, 1, 7, 0, 1, 2), Atom(1, 1, 8, 1, 2, 0), Atom(1, 1, 9, 2, 3, 1)]
    atoms.append(Atom(1, 2, 7, 5, 6, 1))  # a run without the histogram
    got = per_atom({(1, 1): {"m": h}, (1, 2): {}}, "m", atoms)
    assert got.tolist() == [[0.0, 5.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]


def test_groups_of_runs_stay_apart() -> None:
    rng = np.random.default_rng(9)
    runs = {(1, k + 1): _times(T0 + k * 0.55 * H, 0.5, 1000.0, rng) for k in range(4)}
    runs[(1, 5)] = np.linspace(T0 + 2.2 * H + 30, T0 + 2.2 * H + 90, 30)  # short, after run 4
    atoms = _run_atoms(runs)
    together = split(atoms, BEAMSPOT_OUTER_LOSS, BEAMSPOT_INNER_LOSS)
    assert [o.runs for o in together] == [tuple(sorted(runs))]
    labels = {(1, 1): "4S", (1, 2): "4S", (1, 3): "off", (1, 4): "off", (1, 5): "4S"}
    apart = split(atoms, BEAMSPOT_OUTER_LOSS, BEAMSPOT_INNER_LOSS, groups=labels)
    assert [o.runs for o in apart] == [((1, 1), (1, 2), (1, 5)), ((1, 3), (1, 4))]
    # alternating labels: no outer interval jumps over a run of the other label
    labels = {(1, 1): "4S", (1, 2): "off", (1, 3): "4S", (1, 4): "4S", (1, 5): "4S"}
    apart = split(atoms, BEAMSPOT_OUTER_LOSS, BEAMSPOT_INNER_LOSS, groups=labels)
    assert [o.runs for o in apart] == [((1, 1),), ((1, 2),), ((1, 3), (1, 4), (1, 5))]


def test_short_runs_stay_in_their_experiment() -> None:
    rng = np.random.default_rng(8)
    runs = {
        (1, 1): _times(T0, 2.0, 800.0, rng),
        (2, 1): np.linspace(T0 + 2.0 * H + 60, T0 + 2.0 * H + 100, 40),  # short, 1 min later
        (3, 1): _times(T0 + 3.0 * H, 2.0, 800.0, rng),
    }
    outers = split(_run_atoms(runs), BEAMSPOT_OUTER_LOSS, BEAMSPOT_INNER_LOSS)
    assert [o.runs for o in outers] == [((1, 1),), ((3, 1),)]  # experiment 2 is left out


@pytest.mark.parametrize("seed", range(5))
def test_dynamic_programming_finds_the_least_loss(seed: int) -> None:
    """Against every partition of 9 atoms with gaps (2^8 of them): the split's summed inner loss
    is the least one."""
    rng = np.random.default_rng(seed)
    cells = np.sort(rng.choice(30, size=9, replace=False)) + 4_722_000  # gaps between some
    counts = rng.integers(0, 200, size=9)  # some atoms without events
    atoms = [
        Atom(1, 1, int(c), c * 360.0, c * 360.0 + 360.0, float(k))
        for c, k in zip(cells, counts, strict=True)
    ]
    loss = LossExpression("pow(rawTime - 0.35, 2) + 10 * pow(maxGap, 2) + 0.01 * netTime")
    n = len(atoms)
    best = math.inf
    for mask in range(2 ** (n - 1)):
        cuts = [0, *(k + 1 for k in range(n - 1) if mask >> k & 1), n]
        total = sum(
            float(loss(**interval_variables(atoms, range(a, b))))
            for a, b in itertools.pairwise(cuts)
        )
        best = min(best, total)
    (outer,) = split(atoms, BEAMSPOT_OUTER_LOSS, loss, min_sub_events=0, min_events=0)
    assert sum(s.loss for s in outer.subs) == pytest.approx(best, rel=1e-9)


def test_too_few_events() -> None:
    atoms = atoms_from_counts(1, 1, [10, 11, 12], [5, 4, 5])
    with pytest.raises(NotEnoughData, match="14 events < 15"):
        split(atoms, BEAMSPOT_OUTER_LOSS, BEAMSPOT_INNER_LOSS)
    assert split(atoms, BEAMSPOT_OUTER_LOSS, BEAMSPOT_INNER_LOSS, min_events=14)
    short = atoms_from_counts(1, 1, [10], [100], t_first=10 * 360 + 100, t_last=10 * 360 + 200)
    with pytest.raises(NotEnoughData, match="every run lasts"):
        split(short, BEAMSPOT_OUTER_LOSS, BEAMSPOT_INNER_LOSS)


def test_loss_that_is_never_finite() -> None:
    atoms = atoms_from_counts(1, 1, [10, 11, 12], [50, 50, 50])
    with pytest.raises(ConfigError, match="not finite"):
        split(atoms, "log(-1)", BEAMSPOT_INNER_LOSS)


def test_fill_from_neighbours() -> None:
    assert fill_from_neighbours([True, False, False, True]).tolist() == [0, 0, 3, 3]
    assert fill_from_neighbours([True, False, True]).tolist() == [0, 0, 2]  # tie: earlier
    assert fill_from_neighbours([False, False, True]).tolist() == [2, 2, 2]
    # by time: interval 1 is nearer to 2 although 0 is as near in index
    got = fill_from_neighbours(
        [True, False, True], t_start=[0.0, 10.0, 21.0], t_end=[5.0, 20.0, 30.0]
    )
    assert got.tolist() == [0, 2, 2]
    with pytest.raises(NotEnoughData):
        fill_from_neighbours([False, False])


def test_split_is_fast_for_a_bucket() -> None:
    """~15 runs of 8 h (~1200 atoms): the split stays well under a second, also when a loss
    makes one outer interval of everything (the inner split then runs over every atom)."""
    atoms: list[Atom] = []
    for k in range(15):
        first = math.floor((T0 + k * 8.5 * H) / ATOM_SECONDS)
        atoms += atoms_from_counts(1, k + 1, np.arange(first, first + 80), np.full(80, 100.0))
    assert len(atoms) == 1200
    start = time.perf_counter()
    outers = split(atoms, BEAMSPOT_OUTER_LOSS, BEAMSPOT_INNER_LOSS)
    default = time.perf_counter() - start
    start = time.perf_counter()
    (one,) = split(atoms, "0 * rawTime", BEAMSPOT_INNER_LOSS)
    worst = time.perf_counter() - start
    assert len(outers) == 15
    assert len(one.subs) >= 200
    assert default < 1.0, default
    assert worst < 2.0, worst


# ================================================================== the algorithm base class
STEP_AT = T0 + 3.3 * H  # inside atom 4722255 (which starts at T0 + 3.2778 h)


def _moments() -> hist.Hist:
    return hist.Hist(atom_axis(), hist.axis.Integer(0, 3, name="moment", flow=False))


def _toy_run(t: Any, mean: Any, rng: np.random.Generator) -> dict[str, hist.Hist]:
    x = rng.normal(mean, 1.0)
    t_ns = (np.asarray(t) * 1e9).astype(np.int64)
    m = _moments()
    a = atom_index(t_ns)
    for k, w in enumerate((np.ones_like(x), x, x * x)):
        m.fill(atom=a, moment=np.full(len(x), k), weight=w)
    return {"atoms": fill_atom_times(atom_times_hist(), t_ns), "moments": m}


class ToyMean(IntervalAlgorithm):
    """The mean of a Gaussian per sub-interval; ``fail_after`` fails the sub-intervals that
    start after a time (to test the copies)."""

    name = "toy-mean"
    payload = "ToyMean"
    payloads = ("ToyMean",)
    units: ClassVar[dict[str, str]] = {"mean": "cm"}

    def __init__(self, *, steps: bool = True, fail_after: float | None = None) -> None:
        self.search = steps
        self.fail_after = fail_after
        self.shared_calls = 0

    def fit_outer(
        self, data: AlgorithmInput, outer: OuterInterval, atoms: Sequence[Atom]
    ) -> IntervalFit | None:
        self.shared_calls += 1
        return IntervalFit({"width": 1.0}, {"width": 0.01})

    def fit_sub(
        self,
        data: AlgorithmInput,
        outer: OuterInterval,
        sub: SubInterval,
        atoms: Sequence[Atom],
        shared: IntervalFit | None,
    ) -> IntervalFit | None:
        if self.fail_after is not None and sub.t_start > self.fail_after:
            return IntervalFit(ok=False, message="toy failure")
        h = sum_atoms(data.per_run, "moments", [atoms[i] for i in sub.atoms])
        assert h is not None
        assert shared is not None
        n, sx, _ = h.values()
        return IntervalFit({"mean": sx / n}, {"mean": 1.0 / math.sqrt(n)})

    def atom_series(self, data: AlgorithmInput, atoms: Sequence[Atom]) -> Any:
        if not self.search:
            return None
        m = per_atom(data.per_run, "moments", atoms)
        n = np.maximum(m[:, 0], 1.0)
        return m[:, 1] / n, np.where(m[:, 0] > 0, 1.0 / np.sqrt(n), np.nan)


def _input(per_run: dict[tuple[int, int], Any], runs: Any = None, **config: Any) -> AlgorithmInput:
    out = RunOutput(per_run)
    keys = sorted(per_run) if runs is None else list(runs)
    return AlgorithmInput(keys, out.merged(keys), out, Constants(None, []), config)


def _step_sample(seed: int = 11) -> dict[tuple[int, int], Any]:
    rng = np.random.default_rng(seed)
    t = _times(T0, 8.0, 3000.0, rng)
    return {(1, 1): _toy_run(t, np.where(t < STEP_AT, 0.0, 0.5), rng)}


@pytest.mark.parametrize("steps", [True, False])
def test_step_found_at_the_right_atom(steps: bool) -> None:
    alg = ToyMean(steps=steps)
    result = alg.run(_input(_step_sample()))
    assert result.status is AlgorithmStatus.OK, result.message
    (p,) = result.payloads
    assert p.metadata["event_dependency"] == "time"
    t0, t1 = p.keys["t_start"], p.keys["t_end"]
    assert t0.dtype == np.int64
    assert np.all(t1[:-1] == t0[1:])  # one run: the rows meet
    assert np.all(t1 > t0)
    assert p.status is not None
    assert np.all(p.status == ChannelStatus.OK)
    assert np.all(p.values["width"] == 1.0)
    assert alg.shared_calls == 1
    nearest = np.min(np.abs(t0[1:] / 1e9 - STEP_AT))
    table = result.diagnostics.tables["intervals"]
    assert table["step"].sum() == (1 if steps else 0)
    if steps:
        assert nearest <= ATOM_SECONDS
        assert abs(t0[table["step"] == 1][0] / 1e9 - STEP_AT) <= ATOM_SECONDS
        # every row that does not hold the step measures its own side's mean
        inside = (t0 / 1e9 < STEP_AT) & (t1 / 1e9 > STEP_AT)
        truth = np.where(t1 / 1e9 <= STEP_AT, 0.0, 0.5)
        pulls = (p.values["mean"] - truth) / p.errors["mean"]
        assert np.all(np.abs(pulls[~inside]) < 4.5)
    else:  # the loss alone places boundaries every half hour, blind to the step
        assert nearest > ATOM_SECONDS


@pytest.mark.parametrize("gap_seconds", [180.0, 1.0])
def test_rows_across_a_gap_between_runs(gap_seconds: float) -> None:
    rng = np.random.default_rng(14)
    t1 = np.concatenate([_times(T0, 1.0, 1500.0, rng), [T0 + H + 2.0]])
    t2 = np.concatenate(
        [[T0 + H + 2.0 + gap_seconds], _times(T0 + H + 10 + gap_seconds, 1.0, 1500.0, rng)]
    )
    per_run = {(1, 1): _toy_run(t1, np.zeros_like(t1), rng)}
    per_run[(1, 2)] = _toy_run(t2, np.zeros_like(t2), rng)

    class RunStart(ToyMean):  # a sub-interval starts with run 2
        def steps(self, data: AlgorithmInput, atoms: Sequence[Atom]) -> list[int]:
            return [min(i for i, a in enumerate(atoms) if a.key == (1, 2))]

    result = RunStart(steps=False).run(_input(per_run))
    (p,) = result.payloads
    check_payload(p)  # sorted, never overlapping, t_end > t_start
    start, end = p.keys["t_start"] / 1e9, p.keys["t_end"] / 1e9
    k = int(np.flatnonzero(start >= T0 + H - 1)[0])  # the first row of run 2
    assert start[k] == pytest.approx(t2[0], abs=10.0)
    if gap_seconds > 10:  # the row before ends with run 1's data, not at run 2's start
        assert end[k - 1] == pytest.approx(t1[-1], abs=10.0)
        assert end[k - 1] < start[k]
    else:  # the same 10 s bin: clipped to the next row's start
        assert end[k - 1] == start[k]


def test_failed_sub_interval_copies_its_neighbour() -> None:
    alg = ToyMean(fail_after=T0 + 7.2 * H)
    result = alg.run(_input(_step_sample()))
    (p,) = result.payloads
    assert p.status is not None
    failed = np.flatnonzero(p.status != ChannelStatus.OK)
    assert len(failed) >= 1
    assert np.all(p.status[failed] == ChannelStatus.FAILED)
    good = failed[0] - 1
    assert p.status[good] == ChannelStatus.OK
    assert np.all(p.values["mean"][failed] == p.values["mean"][good])
    copied = p.metadata["intervals"]["copied"]
    assert [c["row"] for c in copied] == failed.tolist()
    assert {c["from"] for c in copied} == {int(good)}
    assert copied[0]["reason"] == "toy failure"
    check_payload(p)
    assert Payload.from_bytes(p.to_bytes()[0]).same_content(p)
    table = result.diagnostics.tables["intervals"]
    assert table["copied_from"][failed].tolist() == [good] * len(failed)
    Diagnostics.from_bytes(result.diagnostics.to_bytes())  # the partition is stored


def test_algorithm_not_enough_data() -> None:
    rng = np.random.default_rng(12)
    t = _times(T0, 1.0, 10.0, rng)
    result = ToyMean().run(_input({(1, 1): _toy_run(t, np.zeros_like(t), rng)}))
    assert result.status is AlgorithmStatus.NOT_ENOUGH_DATA
    assert "< 15" in result.message
    # every sub-interval failing is not enough data either, never a payload of copies of nothing
    result = ToyMean(fail_after=0.0).run(_input(_step_sample()))
    assert result.status is AlgorithmStatus.NOT_ENOUGH_DATA
    assert "intervals" in result.diagnostics.tables


def test_bad_loss_in_expert_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="position"):
        ToyMean().run(_input(_step_sample(), outerLoss="pow(rawTime,"))


def test_boundaries_drive_sequential_boundaries() -> None:
    rng = np.random.default_rng(13)
    per_run = {}
    for k in range(8):  # 1-hour runs, 6 minutes apart: outer intervals of about 2 runs
        t = _times(T0 + k * 1.1 * H, 1.0, 1500.0, rng)
        per_run[(1, k + 1)] = _toy_run(t, np.full(len(t), 0.1 * k), rng)
    alg = ToyMean(steps=False)
    everything = _input(per_run)
    marks = alg.boundaries(everything)
    _, outers = alg.partition(everything)
    # every outer interval but the first starts a payload (the first starts at the first run)
    assert list(marks) == [o.runs[0] for o in outers[1:]]
    assert len(outers) >= 3
    executions = SequentialBoundaries().run(
        sorted(per_run), lambda runs: alg.run(_input(per_run, runs)), lambda: marks
    )
    assert [tuple(e.runs) for e in executions] == [o.runs for o in outers]
    for e, o in zip(executions, outers, strict=True):
        (p,) = e.result.payloads
        assert len(p.keys["t_start"]) == len(o.subs)  # the segment is one outer interval
        assert e.iov is not None
        assert (e.iov.first_exp, e.iov.first_run) == o.runs[0]


class _Outers(ToyMean):
    """ToyMean with a given partition and run groups (to test :meth:`boundaries` alone)."""

    def __init__(self, outers: list[OuterInterval], groups: dict[RunKey, str] | None) -> None:
        super().__init__(steps=False)
        self.given = outers
        self.groups = groups

    def partition(self, data: AlgorithmInput) -> tuple[list[Atom], list[OuterInterval]]:
        return [], self.given

    def run_groups(self, data: AlgorithmInput) -> dict[RunKey, str] | None:
        return self.groups


def _outer(run: int, n_events: float) -> OuterInterval:
    sub = SubInterval((run,), run * H, (run + 1) * H, n_events, runs=((1, run),))
    return OuterInterval(runs=((1, run),), subs=(sub,))


def test_starved_outer_intervals_join_a_neighbours_payload() -> None:
    """No run is left without a payload: a starved outer interval (< 50 events) starts no
    payload, nor does the outer interval after a starved start; a change of run group always
    starts one (ecms: 4S and off-resonance never share a payload). Fails with a boundary at
    every outer interval, the rule this replaced."""
    data = _input(_step_sample())
    outers = [_outer(1, 10), _outer(2, 500), _outer(3, 20), _outer(4, 500), _outer(5, 500)]
    # run 1 (starved) joins run 2's payload; run 3 (starved) joins run 2's too; 4 and 5 start
    assert list(_Outers(outers, None).boundaries(data)) == [(1, 4), (1, 5)]
    groups = {(1, 1): "4S", (1, 2): "4S", (1, 3): "off", (1, 4): "off", (1, 5): "off"}
    # the group change at run 3 starts a payload even though run 3 is starved; run 4 then
    # joins it (it is the first outer interval of that payload with enough events)
    assert list(_Outers(outers, groups).boundaries(data)) == [(1, 3), (1, 5)]
